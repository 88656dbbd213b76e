"""Tests for symode.cache: keys, reuse across processes, corruption, races, fallback,
and the compile-once engine (a new system compiles no engine function).

Cross-process behaviour is checked with fresh ``python`` processes running
tests/_cache_worker.py on a temporary cache directory (its system is used nowhere
else); the workers count numba's compile events (a load from numba's cache is none).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import symode
from symode.cache import default_cache_dir

WORKER = Path(__file__).with_name("_cache_worker.py")
TIMEOUT = 180  # seconds per worker process: a cold engine compile is ~10-15 s


def worker_command(mode: str, cache_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(WORKER), mode, str(cache_dir), *extra]


def run_worker(mode: str, cache_dir: Path, *extra: str) -> dict:
    proc = subprocess.run(
        worker_command(mode, cache_dir, *extra), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == 0, f"worker {mode} failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def worker_exact():
    """The closed form of the worker's damped rotation at its output times."""
    k, c = 0.5, 2.0
    x0, v0 = 1.0, 0.5
    ts = np.linspace(0.0, 2.0, 9)
    decay = np.exp(-k * ts)
    x = decay * (x0 * np.cos(c * ts) + v0 * np.sin(c * ts))
    v = decay * (v0 * np.cos(c * ts) - x0 * np.sin(c * ts))
    return np.stack([x, v], axis=1)


WORKER_RHS = [-0.5 * 0.3 + 2.0 * -0.2, -2.0 * 0.3 - 0.5 * -0.2]


def module_dirs(cache: Path, prefix: str = "sys_") -> list[Path]:
    return sorted((cache / "numba").glob(prefix + "*"))


def leftovers(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "numba").iterdir() if p.name.startswith((".tmp-", ".trash-")))


def snapshot(directory: Path) -> dict:
    """(inode, mtime_ns) of the directory and each of its files, plus file hashes."""
    out = {".": (directory.stat().st_ino, directory.stat().st_mtime_ns)}
    for p in sorted(directory.iterdir()):
        if p.is_file():
            st = p.stat()
            out[p.name] = (st.st_ino, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def assert_meta_consistent(directory: Path):
    """A system directory holds its kernels only; a specialized one an engine copy too."""
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["symode"] == symode.__version__ and meta["backend"] == "numba"
    files = set(meta["files"])
    if directory.name.startswith("spec_"):
        assert {"__init__.py", "_dynamics.py", "integrate.py", "dynamics.py"} <= files
    else:
        assert files == {"__init__.py", "_dynamics.py"}
    for name, digest in meta["files"].items():
        assert hashlib.sha256((directory / name).read_bytes()).hexdigest() == digest, name


# -- in-process: keys and layout (no numba compile) ----------------------------------------------


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "symode"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path(os.path.expanduser("~")) / ".cache" / "symode"


def test_key_depends_on_expressions_only(tmp_path):
    x, k = sp.symbols("x_key k_key")
    a = symode.ODESystem([-k * x], states=[x], params=[k]).compile(cache_dir=tmp_path)
    again = symode.ODESystem([-k * x], states=[x], params=[k]).compile(cache_dir=tmp_path)
    assert again.path == a.path and again.source == a.source
    other = symode.ODESystem([-k * x + 1], states=[x], params=[k]).compile(cache_dir=tmp_path)
    xp = sp.Symbol("x_key", positive=True)  # same name, different symbol
    assumed = symode.ODESystem([-k * xp], states=[xp], params=[k]).compile(cache_dir=tmp_path)
    assert len({a.path, other.path, assumed.path}) == 3
    assert len(module_dirs(tmp_path)) == 3 and not leftovers(tmp_path)
    assert (Path(a.path) / "_dynamics.py").read_text() == a.source
    assert_meta_consistent(Path(a.path))
    meta = json.loads((Path(a.path) / "meta.json").read_text())
    assert meta["canonical"] == a.system._canonical()
    # user names never reach file or directory names
    assert "x_key" not in Path(a.path).name


def test_same_system_in_two_cache_dirs(tmp_path):
    x, k = sp.symbols("x_twodirs k_twodirs")
    system = symode.ODESystem([-k * x + 1], states=[x], params=[k])
    system.compile(cache_dir=tmp_path / "first")
    shutil.rmtree(tmp_path / "first")
    model = symode.ODESystem([-k * x + 1], states=[x], params=[k]).compile(
        cache_dir=tmp_path / "second"
    )
    out = np.full(1, np.nan)
    model.kernels.rhs(0.0, np.array([2.0]), np.array([3.0]), out)
    assert out[0] == -5.0


# -- across processes ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def primed(tmp_path_factory):
    """A cache filled by one process that compiled and solved the worker's system."""
    cache = tmp_path_factory.mktemp("primed-cache")
    result = run_worker("solve", cache)
    (directory,) = module_dirs(cache)
    return cache, directory, result, snapshot(directory)


@pytest.mark.slow
def test_first_process_writes_module_and_numba_index(primed):
    """The system's directory holds its kernels and their numba index (wherever numba
    keeps it: ``__pycache__``, or ``NUMBA_CACHE_DIR`` when set); no engine there."""
    cache, directory, result, _ = primed
    assert Path(result["path"]) == directory
    assert not leftovers(cache)
    assert_meta_consistent(directory)
    index = result["kernel_index"]
    assert any(name.startswith("_dynamics.rhs-") for name in index), index
    assert not any(name.startswith(("integrate.", "adjoint.")) for name in index), index
    # rtol 1e-10: the global error of dopri5 is a small multiple of rtol here
    np.testing.assert_allclose(result["y"], worker_exact(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(result["rhs"], WORKER_RHS, rtol=1e-15)


@pytest.mark.slow
def test_second_process_reuses_module_without_regenerating(primed):
    cache, directory, first, before = primed
    second = run_worker("nogen", cache)  # generating source would raise in the worker
    assert second["path"] == first["path"]
    assert second["rhs"] == first["rhs"]
    after = snapshot(directory)
    assert after["."] == before["."], "module directory was replaced"
    for name in ("_dynamics.py", "meta.json", "__init__.py"):
        assert after[name] == before[name], f"{name} was rewritten"
    assert module_dirs(cache) == [directory] and not leftovers(cache)


@pytest.mark.slow
def test_second_process_solve_loads_from_numba_cache(primed):
    """The same system in a fresh process: kernels and engine load from numba's cache,
    not one compile."""
    cache, directory, first, before = primed
    second = run_worker("solve", cache)
    np.testing.assert_array_equal(second["y"], first["y"])
    assert snapshot(directory)["_dynamics.py"] == before["_dynamics.py"]
    assert second["compiles"] == {"engine": 0, "kernels": 0, "spec": 0, "nn": 0}, second["compiles"]


@pytest.mark.slow
def test_new_system_compiles_no_engine_function(primed, tmp_path):
    """Compile once: a system no cache has seen, in a fresh process, compiles its own
    kernels (the positive control: the counter sees those compiles) and not one engine
    function; run again, it compiles nothing at all."""
    cache = tmp_path / "cache"
    shutil.copytree(primed[0], cache, symlinks=True)
    extra = f"{np.random.default_rng().uniform(0.01, 0.02):.12f}"
    new = run_worker("solve", cache, "-", extra)
    assert new["compiles"]["engine"] == 0, new["compiles"]
    assert new["compiles"]["kernels"] >= 2, new["compiles"]  # rhs_row, rhs
    assert new["entry_module"] == "symode.kernels.integrate"
    again = run_worker("solve", cache, "-", extra)
    assert again["compiles"] == {"engine": 0, "kernels": 0, "spec": 0, "nn": 0}, again["compiles"]
    np.testing.assert_array_equal(again["y"], new["y"])
    # the extra term changes the solution: it is a different system
    assert not np.array_equal(new["y"], primed[2]["y"])


@pytest.mark.slow
def test_specialized_engine_really_runs_and_matches(primed, tmp_path):
    """compile(specialize=True) runs the engine copy next to the system (its entry
    point's module is in that directory), compiled there, and equals the generic
    engine's solve to rounding."""
    cache = tmp_path / "cache"
    shutil.copytree(primed[0], cache, symlinks=True)
    first = primed[2]
    spec = run_worker("special", cache)
    assert spec["entry_module"].startswith("_symode_spec_"), spec["entry_module"]
    assert Path(spec["path"]).name.startswith("spec_")
    assert_meta_consistent(Path(spec["path"]))
    assert spec["compiles"]["spec"] > 0 and spec["compiles"]["engine"] == 0, spec["compiles"]
    np.testing.assert_allclose(spec["y"], first["y"], rtol=1e-12, atol=0)


def _truncate(directory: Path):
    path = directory / "_dynamics.py"
    path.write_text(path.read_text()[:200])


def _garbage(directory: Path):
    with open(directory / "_dynamics.py", "a") as f:
        f.write("\n)(*&^ not python\n")


def _valid_python_edit(directory: Path):
    with open(directory / "_dynamics.py", "a") as f:
        f.write("\nN_STATES = 99\n")


def _meta(directory: Path):
    (directory / "meta.json").write_text("{ not json")


def _init(directory: Path):
    with open(directory / "__init__.py", "a") as f:
        f.write("\nSUCCESS = 1\n")


@pytest.mark.slow
@pytest.mark.parametrize(
    "corrupt, mode",
    [
        (_truncate, "solve"),  # the one full solve on a regenerated module
        (_garbage, "kernels"),
        (_valid_python_edit, "kernels"),
        (_meta, "kernels"),
        (_init, "kernels"),
    ],
    ids=["truncated", "garbage", "edited", "bad_meta", "edited_init"],
)
def test_corrupted_module_is_regenerated(primed, tmp_path, corrupt, mode):
    cache, directory, first, before = primed
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy, symlinks=True)
    target = copy / "numba" / directory.name
    corrupt(target)
    result = run_worker(mode, copy)
    assert Path(result["path"]) == target
    assert_meta_consistent(target)
    after = snapshot(target)
    for name in ("_dynamics.py", "__init__.py"):
        assert after[name][2] == before[name][2], f"{name} not restored"
    assert result["rhs"] == first["rhs"]
    if mode == "solve":
        np.testing.assert_array_equal(result["y"], first["y"])
        np.testing.assert_allclose(result["y"], worker_exact(), rtol=0, atol=1e-9)
    assert module_dirs(copy) == [target] and not leftovers(copy)


@pytest.mark.slow
def test_concurrent_compiles_of_the_same_system(tmp_path):
    cache = tmp_path / "shared"
    start_at = f"{time.time() + 6.0:.3f}"  # after both have imported sympy/numba/symode
    procs = [
        subprocess.Popen(
            worker_command("kernels", cache, start_at),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, stderr[-4000:]
        outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    # the same module and results (one of them compiled the kernel, the other may
    # have loaded it: the compile counts may differ)
    for key in ("path", "rhs"):
        assert outputs[0][key] == outputs[1][key]
    np.testing.assert_allclose(outputs[0]["rhs"], WORKER_RHS, rtol=1e-15)
    (directory,) = module_dirs(cache)
    assert Path(outputs[0]["path"]) == directory
    assert not leftovers(cache)
    assert_meta_consistent(directory)


# -- an unwritable cache directory ---------------------------------------------------------------


@pytest.fixture
def fallback_root(monkeypatch, cache_dir):
    """Point tempfile at a directory of the test cache, so the fallback is isolated but
    persistent across runs (its numba cache makes reruns fast)."""
    tmp = cache_dir / "fallback-tmp"
    tmp.mkdir(exist_ok=True)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp / f"symode-cache-{os.getuid()}"


def test_unwritable_cache_dir_falls_back_to_temp(tmp_path, fallback_root):
    blocker = tmp_path / "afile"
    blocker.write_text("a regular file: nothing can be created below it")
    unwritable = blocker / "cache"
    x, k = sp.symbols("x_fallback k_fallback")
    system = symode.ODESystem([-k * x + sp.Rational(1, 4)], states=[x], params=[k])
    with pytest.warns(RuntimeWarning, match="not writable") as record:
        model = system.compile(cache_dir=unwritable)
    assert str(unwritable) in str(record[0].message)
    assert str(fallback_root) in str(record[0].message)
    assert Path(model.path).parent == fallback_root / "numba"
    assert (Path(model.path) / "_dynamics.py").read_text() == model.source
    assert blocker.is_file() and not unwritable.exists()
    ts = np.linspace(0.0, 1.0, 5)
    sol = model.solve([1.0], ts, params=[2.0], method="rk4", dt=1e-3)
    # y' = -k y + 1/4  =>  y = 1/8 + (1 - 1/8) e^{-2t}; rk4 at dt = 1e-3: error ~1e-13
    np.testing.assert_allclose(sol.y[:, 0], 0.125 + 0.875 * np.exp(-2.0 * ts), atol=1e-11)


def test_readonly_cache_dir_falls_back_to_temp(tmp_path, fallback_root):
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o555)
    try:
        probe = readonly / "probe"
        try:
            probe.write_text("")
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip(
                "chmod 0o555 does not stop this user (root) from writing; the unwritable "
                "case is covered by test_unwritable_cache_dir_falls_back_to_temp"
            )
        x, k = sp.symbols("x_readonly k_readonly")
        system = symode.ODESystem([-k * x], states=[x], params=[k])
        with pytest.warns(RuntimeWarning, match="not writable"):
            model = system.compile(cache_dir=readonly)
        assert Path(model.path).parent == fallback_root / "numba"
        assert list(readonly.iterdir()) == []
    finally:
        readonly.chmod(0o755)


def test_key_ignores_sources_that_do_not_shape_the_generated_text(monkeypatch):
    """A system's key follows the generator (system.py derives, codegen.py prints), not
    every symode source: an edited docstring in testing.py recompiles nothing."""
    from symode import cache

    digest = cache._generator_digest.__wrapped__
    before = digest()
    real = Path.read_bytes

    def edited(name):
        def read_bytes(self):
            data = real(self)
            return data + b"\n# edited\n" if self.name == name else data

        return read_bytes

    monkeypatch.setattr(Path, "read_bytes", edited("testing.py"))
    assert digest() == before
    monkeypatch.setattr(Path, "read_bytes", edited("codegen.py"))
    assert digest() != before


def test_engine_cache_is_cleared_when_the_engine_sources_change(tmp_path, monkeypatch):
    """numba invalidates a cached function when its own file changes, not when a file
    it calls into does: symode stamps the engine's cache with a digest of all its
    sources and clears the engine's cache files on a mismatch (other files stay)."""
    from symode import cache

    engine_file = tmp_path / "integrate.solve_forward-400.py311.nbi"
    other_file = tmp_path / "elsewhere.f-1.py311.nbi"
    for path in (engine_file, other_file):
        path.write_text("")
    assert cache.ensure_engine_cache(tmp_path)  # no stamp yet: cleared
    assert not engine_file.exists() and other_file.exists()
    assert (tmp_path / cache.ENGINE_STAMP).read_text() == cache.engine_digest()
    engine_file.write_text("")
    assert not cache.ensure_engine_cache(tmp_path)  # same sources: kept
    assert engine_file.exists()
    monkeypatch.setattr(cache, "engine_digest", lambda: "an edited engine")
    assert cache.ensure_engine_cache(tmp_path)
    assert not engine_file.exists() and other_file.exists()
