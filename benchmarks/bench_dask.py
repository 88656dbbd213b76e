"""P2 scaled out: 10⁶ Lorenz trajectories (RK4, dt = 0.01, 1000 steps, final states) on
a Dask LocalCluster of 2 worker processes × 1 thread against the local prange ensemble
of the same compiled model (symode's specialized tier), both on this machine.

The cluster's start-up is timed apart (it is paid once per session). Each Dask row
solves the whole batch with ``symode.distributed.solve`` at one chunk size, the final
states reduced on the workers (``reduce=``: only (chunk, 3) arrays travel). From the
rows: the overhead ratio (local throughput ÷ Dask's — what the scheduler, the transfers
and the one-thread workers cost), the per-chunk cost and the scheduler's per-task
overhead, and from them the scale-out on paper.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
from _util import bench_cache_dir, log

TITLE = "Dask: P2 scaled to 10⁶ Lorenz trajectories, LocalCluster (2 × 1 thread) vs local"
DESCRIPTION = (
    "Throughput in trajectory-steps per second (1000 RK4 steps per trajectory), one timed "
    "solve per row after a warm-up of every worker; the local ensemble is numba's prange "
    "over both cores in this process. *÷ local*: Dask's throughput over the local one "
    "(target ≥ 0.8). The cluster's start-up (processes, imports) is reported apart."
)
TARGET = 0.8
DT, STEPS = 0.01, 1000


def _model():
    import sympy as sp

    import symode

    t = sp.Symbol("t")
    x, y, z = sp.symbols("x y z")
    s, r = sp.symbols("sigma rho")
    system = symode.ODESystem(
        [s * (y - x), x * (r - z) - y, x * y - sp.Rational(8, 3) * z],
        states=[x, y, z],
        params=[s, r],
        t=t,
    )
    return system.compile(cache_dir=bench_cache_dir(), specialize=True, verbose=False)


def _fresh_machine_first_task() -> float:
    """A worker on a machine with nothing cached: its numba cache empty and the model's
    cache directory absent (the model pickles as its recipe and cache key), so its first
    task generates the kernels and compiles them and the engine's entries."""
    import shutil
    import tempfile

    import distributed
    import sympy as sp

    import symode
    import symode.distributed as sd

    tmp = tempfile.mkdtemp(prefix="symode-fresh-")
    t = sp.Symbol("t")
    x, y, z = sp.symbols("x y z")
    s, r = sp.symbols("sigma rho")
    model = symode.ODESystem(
        [s * (y - x), x * (r - z) - y, x * y - sp.Rational(8, 3) * z],
        states=[x, y, z], params=[s, r], t=t,
    ).compile(cache_dir=os.path.join(tmp, "symode"), verbose=False)  # fmt: skip
    shutil.rmtree(os.path.join(tmp, "symode"))
    env = {"NUMBA_CACHE_DIR": os.path.join(tmp, "numba"), "XDG_CACHE_HOME": tmp,
           "NUMBA_NUM_THREADS": "1"}  # fmt: skip
    log("  Dask: a worker with empty caches (its first task compiles)")
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None, env=env
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        t0 = time.perf_counter()
        sd.solve(model, [1.0, 1.0, 1.0], [0.0, 1.0], np.tile([10.0, 28.0], (4, 1)),
                 chunks=4, client=client, method="rk4", dt=DT)  # fmt: skip
        seconds = time.perf_counter() - t0
    shutil.rmtree(tmp, ignore_errors=True)
    return seconds


def final_states(sol):
    return sol.y[:, -1]


def run(quick: bool) -> list[dict]:
    import distributed

    import symode.distributed as sd

    N = 100_000 if quick else 1_000_000
    params = np.column_stack([np.full(N, 10.0), np.linspace(0.0, 28.0, N)])
    model = _model()
    opts = dict(method="rk4", dt=DT)
    ts = [0.0, DT * STEPS]
    y0 = [1.0, 1.0, 1.0]
    log("  Dask: local warm-up")
    model.solve(y0, ts, params[:1000], **opts)
    t0 = time.perf_counter()
    local = model.solve(y0, ts, params, **opts).y[:, -1]
    t_local = time.perf_counter() - t0
    work = N * STEPS
    rows = [{
        "table": "throughput", "solver": "local prange ensemble (this process, 2 cores)",
        "chunk": "—", "tasks": 1, "seconds": t_local, "trajectory-steps/s": work / t_local,
        "÷ local": 1.0,
    }]  # fmt: skip
    log("  Dask: starting a LocalCluster of 2 workers × 1 thread")
    t0 = time.perf_counter()
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
        env={"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    client = distributed.Client(cluster)
    t_start = time.perf_counter() - t0
    try:
        log("  Dask: warm-up (each worker loads the model)")
        t0 = time.perf_counter()
        sd.solve(model, y0, ts, params[:200], chunks=100, client=client, **opts)
        t_load = time.perf_counter() - t0
        best = None
        for chunk in [10_000, 50_000] if quick else [20_000, 100_000, 250_000]:
            log(f"  Dask: chunks of {chunk:,}")
            t0 = time.perf_counter()
            parts = sd.solve(
                model, y0, ts, params, chunks=chunk, client=client, reduce=final_states, **opts
            )
            seconds = time.perf_counter() - t0
            same = bool(np.array_equal(np.concatenate(parts), local))
            row = {
                "table": "throughput", "solver": "symode.distributed, LocalCluster 2 × 1",
                "chunk": chunk, "tasks": len(parts), "seconds": seconds,
                "trajectory-steps/s": work / seconds, "÷ local": t_local / seconds,
                "equal to local": same,
            }  # fmt: skip
            rows.append(row)
            if best is None or seconds < best["seconds"]:
                best = row
        # per-task overhead: many tiny chunks of the cheapest work
        small = params[:2000]
        t0 = time.perf_counter()
        sd.solve(model, y0, [0.0, DT], small, chunks=10, client=client, method="rk4", dt=DT,
                 reduce=final_states)  # fmt: skip
        per_task = (time.perf_counter() - t0) / (len(small) / 10) * 2  # 2 workers in parallel
    finally:
        client.close()
        cluster.close()
    t_fresh = _fresh_machine_first_task()
    per_traj = best["seconds"] * 2 / N  # one worker's seconds per trajectory
    rows.append({"table": "setup", "what": "LocalCluster start (2 worker processes)",
                 "seconds": t_start})  # fmt: skip
    rows.append({"table": "setup", "what": "first solve: each worker loads the model",
                 "seconds": t_load})  # fmt: skip
    rows.append({"table": "setup", "what": "first task on a machine with empty caches "
                 "(generic tier: the engine's solve entries and the kernels compile)",
                 "seconds": t_fresh})  # fmt: skip
    rows.append({"table": "setup", "what": "scheduler + transfer overhead per task (tiny tasks)",
                 "seconds": per_task})  # fmt: skip
    rows.append({"table": "setup", "what": "one worker's time per trajectory (best chunking)",
                 "seconds": per_traj})  # fmt: skip
    # 10⁶ trajectories on W one-thread workers: chunks no larger than the best measured
    # and small enough to give every worker work; each wave of W tasks costs one chunk's
    # solve plus the per-task overhead
    total = 1_000_000
    for workers in (2, 16, 128):
        chunk = min(best["chunk"], math.ceil(total / workers))
        waves = math.ceil(math.ceil(total / chunk) / workers)
        seconds = waves * (chunk * per_traj + per_task)
        rows.append({
            "table": "scale-out on paper", "workers (1 thread each)": workers,
            "chunk": chunk, "seconds for 10⁶ trajectories": seconds,
            "trajectory-steps/s": total * STEPS / seconds,
        })  # fmt: skip
    return [{
        "table": "targets", "what": "Dask LocalCluster 2 × 1 throughput ÷ local prange",
        "measured": f"{best['÷ local']:.2f} (chunks of {best['chunk']:,})",
        "target": f"≥ {TARGET}", "met": best["÷ local"] >= TARGET,
    }] + rows  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    for r in run(quick=True):
        print(r)
