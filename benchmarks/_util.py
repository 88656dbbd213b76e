"""Helpers shared by the benchmark modules. Standard library only at import time, so
that a fresh-process child can import this before it times ``import symode``."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def log(*args) -> None:
    """Progress lines go to stderr: stdout of ``run.py`` is the results table."""
    print(*args, file=sys.stderr, flush=True)


def bench_cache_dir() -> Path:
    """The symode cache the in-process benchmarks compile into (kept across runs).

    ``$SYMODE_BENCH_CACHE`` overrides it; fresh-process compile benchmarks use their
    own temporary directories instead.
    """
    d = Path(os.environ.get("SYMODE_BENCH_CACHE", HERE / ".cache"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def time_calls(fn, *, min_reps: int = 5, max_reps: int = 200, budget_s: float = 2.0):
    """Median (and min, count) of repeated timed calls of ``fn()``; warm it up first.

    The number of calls is chosen from one probe call to fill about ``budget_s``,
    within [min_reps, max_reps].
    """
    t0 = time.perf_counter()
    fn()
    probe = time.perf_counter() - t0
    reps = int(min(max_reps, max(min_reps, budget_s / max(probe, 1e-9))))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "min": min(times), "reps": reps}


def round_robin(calls: dict, budget_s: float, max_reps: int = 200, min_reps: int = 3) -> dict:
    """Median seconds per call of each ``calls[name]()``, the calls interleaved in rounds
    (so a change in machine load hits all of them), after one warm-up call each; the
    number of rounds fills about ``budget_s``."""
    for fn in calls.values():
        fn()
    probe = {
        k: time_calls(fn, min_reps=1, max_reps=3, budget_s=0.05)["median"]
        for k, fn in calls.items()
    }
    reps = int(max(min_reps, min(max_reps, budget_s / max(sum(probe.values()), 1e-9))))
    times = {k: [] for k in calls}
    for _ in range(reps):
        for k, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def child_env(**extra) -> dict:
    env = dict(os.environ)
    env.update({k: str(v) for k, v in extra.items()})
    # the children find benchmarks/ (problems.py) first, and symode as installed
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(HERE), env.get("PYTHONPATH", "")] if p)
    return env


def run_child(args: list[str], *, timeout: float = 900, env: dict | None = None) -> dict:
    """Run ``python ARGS`` in a fresh process; it prints one JSON object as its last
    stdout line, which is returned. Raises RuntimeError with its stderr on failure."""
    cmd = [sys.executable, *args]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env or child_env(), cwd=REPO
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-2000:]
        raise RuntimeError(f"child {' '.join(args)} failed (rc={proc.returncode}):\n{tail}")
    return json.loads(lines[-1])


def peak_rss_kib() -> int:
    """This process's own peak resident set size (KiB): /proc/self/status VmHWM. Not
    getrusage's ru_maxrss, which Linux carries over fork and exec: a child's reading
    starts at its parent's peak."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def capture_kernel_calls(model, fn) -> list[tuple[str, object, tuple]]:
    """The Python-level calls ``fn()`` makes into the numba kernels of ``model``.

    Every numba dispatcher in the model's generated package (engine and dynamics
    modules) is swapped for a recording wrapper while ``fn()`` runs, then restored.
    Returns ``[(qualified name, real dispatcher, args), ...]``, so a benchmark can
    time the kernel alone, without ``Model.solve``'s Python around it. Run ``fn()``
    once before (warm-up): a numba compile while the wrappers are in place would see
    them as globals.
    """
    from numba.core.dispatcher import Dispatcher

    prefix = model.engine.package.__name__ + "."
    calls, saved = [], []
    for name, mod in list(sys.modules.items()):
        if not name.startswith(prefix) or mod is None:
            continue
        for attr, obj in list(vars(mod).items()):
            if isinstance(obj, Dispatcher):
                qual = f"{name.rsplit('.', 1)[-1]}.{attr}"

                def spy(*args, _real=obj, _name=qual):
                    calls.append((_name, _real, args))
                    return _real(*args)

                saved.append((mod, attr, obj))
                setattr(mod, attr, spy)
    try:
        fn()
    finally:
        for mod, attr, obj in saved:
            setattr(mod, attr, obj)
    return calls
