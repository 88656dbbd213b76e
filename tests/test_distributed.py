"""symode.distributed on a LocalCluster of 2 worker processes: chunked solves and
gradients equal the local ensemble bit for bit (same machine, same compiled code, each
trajectory's arithmetic independent of its chunk); reductions run on the workers; a
worker killed while it holds a chunk loses nothing; a model pickled on one machine
rebuilds itself where its cache directory does not exist."""

import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import sympy as sp

import symode
import symode.distributed as sd

distributed = pytest.importorskip("distributed")

t = sp.Symbol("t")
TS = np.linspace(0.0, 5.0, 11)
OPTS = {"rtol": 1e-8, "atol": 1e-8}


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
        env={"NUMBA_NUM_THREADS": "1"},
    )  # fmt: skip
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def sweep(rng_module):
    B = 203  # not a multiple of the chunk size
    return np.column_stack(
        [rng_module.uniform(1, 2, B), np.ones(B), rng_module.uniform(2, 3, B), np.ones(B)]
    )


@pytest.fixture(scope="module")
def rng_module():
    return np.random.default_rng(7)


def test_solve_and_vjp_equal_the_local_ensemble(lv_model, client, sweep):
    sol = sd.solve(lv_model, [1.0, 1.0], TS, sweep, chunks=50, client=client, **OPTS)
    ref = lv_model.solve([1.0, 1.0], TS, sweep, **OPTS)
    np.testing.assert_array_equal(sol.y, ref.y)
    np.testing.assert_array_equal(sol.status, ref.status)
    for k in ("nfev", "naccept", "nreject"):
        np.testing.assert_array_equal(sol.stats[k], ref.stats[k])
    assert sol.failed == () and len(sol.message) == len(sweep)
    cot = np.cos(np.arange(sweep.shape[0] * TS.size * 2)).reshape(-1, TS.size, 2)
    g = sd.vjp(lv_model, [1.0, 1.0], TS, sweep, cot, chunks=50, client=client, **OPTS)
    gr = lv_model.vjp([1.0, 1.0], TS, sweep, cot, **OPTS)
    np.testing.assert_array_equal(g["params"], gr.params)
    np.testing.assert_array_equal(g["y0"], gr.y0)
    np.testing.assert_array_equal(g["y"], gr.y)
    np.testing.assert_array_equal(g["backward_nfev"], gr.stats["backward"]["nfev"])


def test_padded_batches_and_dask_inputs(lv_model, client, sweep):
    """Irregular per-trajectory times (a NaN-padded t_eval) chunk with their rows; y0 as
    a dask array keeps its own chunks; compute=False gives dask arrays."""
    da = pytest.importorskip("dask.array")
    B = sweep.shape[0]
    rows = np.full((B, 6), np.nan)
    for i in range(B):
        m = 2 + i % 5
        rows[i, :m] = np.linspace(0.0, 1.0 + i / B, m)
    ref = lv_model.solve(np.ones((B, 2)), rows, sweep, **OPTS)
    sol = sd.solve(lv_model, da.ones((B, 2), chunks=64), rows, sweep, client=client, **OPTS)
    np.testing.assert_array_equal(sol.y, ref.y)
    lazy = sd.solve(
        lv_model, [1.0, 1.0], TS, sweep, chunks=70, client=client, compute=False, **OPTS
    )
    assert isinstance(lazy.y, da.Array) and lazy.y.chunks[0] == (70, 70, 63)
    np.testing.assert_array_equal(lazy.y.compute(), lv_model.solve([1.0, 1.0], TS, sweep, **OPTS).y)


def test_reduce_runs_on_the_workers(lv_model, client, sweep):
    """reduce= gets each chunk's Solution on its worker: the per-trajectory time averages
    of x equal the local solution's, chunk by chunk."""
    parts = sd.solve(
        lv_model, [1.0, 1.0], TS, sweep, chunks=50, client=client,
        reduce=lambda s: s.y[:, :, 0].mean(axis=1), **OPTS,
    )  # fmt: skip
    assert [len(p) for p in parts] == [50, 50, 50, 50, 3]
    ref = lv_model.solve([1.0, 1.0], TS, sweep, **OPTS).y[:, :, 0].mean(axis=1)
    np.testing.assert_array_equal(np.concatenate(parts), ref)


def test_failures_are_named_by_global_index(cache_dir, client):
    """y' = k y² from y0 = 1 blows up at t = 1/k: the members with k > 1/1.9 fail before
    t = 1.9, the others complete; the failed ones are reported by their index in the
    whole batch, across chunks."""
    y, k = sp.symbols("y k")
    model = symode.ODESystem([k * y**2], states=[y], params=[k], t=t).compile(cache_dir=cache_dir)
    ks = np.linspace(-1.0, 1.0, 41)[:, None]
    sol = sd.solve(model, [1.0], [0.0, 1.9], ks, chunks=8, client=client)
    expected = tuple(int(i) for i in np.flatnonzero(ks[:, 0] > 1 / 1.9))
    assert sol.failed == expected and len(expected) == 10
    assert np.isfinite(sol.y[: expected[0], -1]).all()
    assert "t=" in sol.message[expected[0]]


def test_a_killed_worker_loses_nothing(lv_model, client, sweep):
    """Kill a worker process after it has started a chunk (SIGKILL: no goodbye): Dask
    reschedules its chunks and the result equals the local ensemble."""
    big = np.repeat(sweep, 2, axis=0)
    ts = np.linspace(0.0, 60.0, 7)
    opts = {"rtol": 1e-11, "atol": 1e-11}
    result = {}

    def run():
        result["sol"] = sd.solve(lv_model, [1.0, 1.0], ts, big, chunks=20, client=client, **opts)

    th = threading.Thread(target=run)
    th.start()
    victim = None
    deadline = time.time() + 60
    while victim is None and time.time() < deadline:
        busy = [w for w, tasks in client.processing().items() if tasks]
        if busy:
            victim = busy[0]
        else:
            time.sleep(0.01)
    assert victim is not None, "no worker started a chunk"
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)
    th.join(timeout=300)
    assert "sol" in result
    ref = lv_model.solve([1.0, 1.0], ts, big, **opts)
    np.testing.assert_array_equal(result["sol"].y, ref.y)


def test_model_pickles_to_a_machine_without_its_cache(tmp_path):
    """The pickle holds the definition and cache key, not code: unpickled in a fresh
    process whose cache directory does not exist (a worker with no shared filesystem),
    the model regenerates its kernels there and solves as the original does."""
    x, y = sp.symbols("x y")
    a = sp.Symbol("a")
    system = symode.ODESystem([a * y, -a * x], states=[x, y], params=[a], t=t)
    where = tmp_path / "gone"
    model = system.compile(cache_dir=where)
    ref = model.solve([1.0, 0.0], TS, [1.3], **OPTS).y
    blob = tmp_path / "model.pkl"
    blob.write_bytes(pickle.dumps(model))
    shutil.rmtree(where)
    code = (
        "import pickle, sys, numpy as np\n"
        f"m = pickle.loads(open({str(blob)!r}, 'rb').read())\n"
        f"y = m.solve([1.0, 0.0], np.linspace(0.0, 5.0, 11), [1.3], rtol=1e-8, atol=1e-8).y\n"
        "np.save(sys.argv[1], y)\n"
    )
    out = tmp_path / "y.npy"
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, timeout=300)
    np.testing.assert_array_equal(np.load(out), ref)
    assert where.exists()  # regenerated where the recipe said


def test_default_client_is_a_session_local_cluster(tmp_path):
    """With no client and no default one, symode starts a LocalCluster for the session
    (one single-threaded worker process per core), reuses it, and closes it at exit."""
    code = (
        "import numpy as np, sympy as sp, symode, symode.distributed as sd\n"
        "t = sp.Symbol('t'); y, k = sp.symbols('y k')\n"
        "m = symode.ODESystem([k*y], states=[y], params=[k], t=t)"
        f".compile(cache_dir={str(tmp_path)!r})\n"
        "ks = np.linspace(-1, 0, 10)[:, None]\n"
        "s = sd.solve(m, [1.0], [0.0, 1.0], ks, chunks=3)\n"
        "c = sd.default_client()\n"
        "assert c is sd.default_client()\n"
        "info = c.scheduler_info()['workers']\n"
        "import os\n"
        "assert len(info) == (os.cpu_count() or 1), info\n"
        "assert all(w['nthreads'] == 1 for w in info.values())\n"
        "np.testing.assert_allclose(s.y[:, -1, 0], np.exp(ks[:, 0]), rtol=1e-5)\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert out.stdout.strip().endswith("ok")


def test_parameter_sweep_example(cache_dir, client, capsys):
    """examples/dask_parameter_sweep.py --quick (a 50 × 40 (ρ, σ) grid of Lorenz systems
    to t = 20): the statistics reduced on the workers equal those of local solves, the
    ρ < 1 trajectories sit at the origin and the settled ones with ρ > 1.5 at the fixed
    points C± (z = ρ − 1; measured 3e-3 off on average, asserted 0.05), and the classic
    ρ = 28, σ = 10 cell is chaotic (std of z > 1)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "dask_parameter_sweep.py"
    spec = importlib.util.spec_from_file_location("_example_dask_sweep", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = example.main(quick=True, plot=None, cache_dir=cache_dir, progress=False, client=client)
    assert "million RK4 steps/s" in capsys.readouterr().out
    rhos, sigmas, mean_z, std_z = out["rhos"], out["sigmas"], out["mean_z"], out["std_z"]
    local = out["model"].solve(
        [1.0, 1.0, 1.0], example.T_STATS, out["params"][:120], method="rk4", dt=example.DT,
        t_span=(0.0, example.T_END),
    )  # fmt: skip
    np.testing.assert_array_equal(
        example.z_statistics(local), np.stack([mean_z, std_z], -1).reshape(-1, 2)[:120]
    )
    assert np.abs(mean_z[rhos < 1.0]).max() < 1e-2
    steady = (rhos[:, None] > 1.5) & (std_z < 1.0)
    assert np.abs(mean_z - (rhos[:, None] - 1.0))[steady].mean() < 0.05
    i, j = np.argmin(np.abs(rhos - 28.0)), np.argmin(np.abs(sigmas - 10.0))
    assert std_z[i, j] > 1.0
