"""Ahead-of-time compilation and cache housekeeping (``python -m symode``).

The generic engine (``symode.kernels``) compiles once per machine, on first use of each
entry point (solve, dense output, ensemble, each adjoint mode, single and batched) and
each state dtype, into numba's on-disk cache. :func:`warmup` does all of that ahead of
time, for CI images and cluster nodes; :func:`clear_cache` removes symode's generated
systems and the engine's compiled code.
"""

from __future__ import annotations

import concurrent.futures
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from .cache import ENGINE_STAMP, default_cache_dir, kernels_dir

__all__ = ["warmup", "clear_cache", "engine_cache_dir", "compile_events"]

log = logging.getLogger("symode")

ADJOINT_MODES = ("checkpoint", "backsolve", "discrete", "forward")
DTYPES = ("float64", "float32")


def _warm_system():
    """A small system that reaches every entry of the generic engine: a loss with a
    running cost, an observation cost and data."""
    import sympy as sp

    from .system import Loss, ODESystem

    t = sp.Symbol("t")
    x, y, a, d = sp.symbols("x y a d")
    system = ODESystem([a * y, -x], states=[x, y], params=[a], t=t)
    loss = Loss(running=x**2 / 2, observation=(y - d) ** 2 / 2, data=[d])
    return system, loss


def _warm_one(task: tuple[str, str], cache_dir) -> tuple[str, str, float]:
    """Compile (or load) the entry points of one (dtype, what) in this process."""
    dtype, what = task
    system, loss = _warm_system()
    model = system.compile(loss=loss, cache_dir=cache_dir, verbose=False)
    ts = np.linspace(0.0, 1.0, 3)
    data = np.zeros((3, 1))
    start = time.perf_counter()
    opts = {"dtype": dtype, "rtol": 1e-6, "atol": 1e-6}
    if what == "solve":
        model.solve([1.0, 0.0], ts, [1.0], **opts)
        model.solve([1.0, 0.0], ts, [1.0], dense=True, **opts).sol(0.5)
        model.solve([[1.0, 0.0]] * 2, ts, [1.0], **opts)
    else:
        model.value_and_grad([1.0, 0.0], ts, [1.0], data, adjoint=what, **opts)
        model.value_and_grad([[1.0, 0.0]] * 2, ts, [1.0], data, adjoint=what, **opts)
    return dtype, what, time.perf_counter() - start


# the warm-up tasks in decreasing compile cost, so that parallel jobs finish together
_COST_ORDER = ("checkpoint", "backsolve", "forward", "discrete", "solve")


def warmup(dtypes=DTYPES, modes=ADJOINT_MODES, jobs: int = 1, cache_dir=None, tasks=None) -> list:
    """Compile the generic engine's entry points ahead of time.

    Parameters
    ----------
    dtypes : state dtypes to compile for ("float64", "float32")
    modes : adjoint modes to compile ("checkpoint", "backsolve", "discrete",
        "forward"); solves, dense output and ensembles are always compiled
    jobs : processes compiling at once (each entry point compiles in one process)
    cache_dir : where the small warm-up system's kernels go (default: symode's cache)
    tasks : explicit (dtype, what) pairs instead of dtypes × modes, what being
        "solve" or an adjoint mode

    Returns
    -------
    list of (dtype, what, seconds), in completion order. Entry points already in
    numba's cache load in milliseconds.
    """
    if tasks is None:
        tasks = [(dt, what) for dt in dtypes for what in ("solve", *modes)]
    tasks = sorted(tasks, key=lambda task: _COST_ORDER.index(task[1]))
    done = []
    if jobs <= 1 or len(tasks) <= 1:
        for task in tasks:
            done.append(_warm_one(task, cache_dir))
            log.info("symode warmup: %s %s in %.1f s", *done[-1])
        return done
    with concurrent.futures.ProcessPoolExecutor(min(jobs, len(tasks))) as pool:
        futures = [pool.submit(_warm_one, task, cache_dir) for task in tasks]
        for future in concurrent.futures.as_completed(futures):
            done.append(future.result())
            log.info("symode warmup: %s %s in %.1f s", *done[-1])
    return done


def engine_cache_dir() -> Path:
    """Where numba caches the generic engine: the package's ``__pycache__``, or numba's
    user-wide cache directory when the package directory is read-only (or
    ``NUMBA_CACHE_DIR`` when set)."""
    from .kernels import integrate

    return Path(integrate.solve_forward.stats.cache_path)


def clear_cache(cache_dir=None, engine: bool = True) -> list[Path]:
    """Remove symode's generated systems (``cache_dir``, default ``~/.cache/symode``)
    and, with ``engine``, the generic engine's compiled code. Returns what was removed.
    Processes that already loaded a system keep working; the next process compiles
    again."""
    removed = []
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    for sub in ("numba", "locks"):
        path = root / sub
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if engine:
        where = engine_cache_dir()
        stems = {p.stem for p in kernels_dir().glob("*.py")}
        for path in sorted(where.glob("*.nb[ic]")) if where.exists() else []:
            if path.name.split(".")[0] in stems:
                path.unlink(missing_ok=True)
                removed.append(path)
        (where / ENGINE_STAMP).unlink(missing_ok=True)
    return removed


def _compiled_where(module: str) -> str | None:
    """Where a compiled function lives: "engine" (symode.kernels), "spec" (a
    specialized engine copy), "kernels" (a system's generated module), "nn" (the MLP
    kernels every architecture shares, symode.nn._kernels), else None."""
    if module.startswith("symode.kernels"):
        return "engine"
    if module == "symode.nn._kernels":
        return "nn"
    if module.endswith("._dynamics"):
        return "kernels"
    if module.startswith("_symode_spec_"):
        return "spec"
    return None


class compile_events:  # noqa: N801 (used as a function: ``with compile_events() as seen``)
    """Count numba's compilations while active, by where the function lives:
    ``{"engine": n, "spec": m, "kernels": k, "nn": q}`` (symode.kernels, a specialized
    engine copy, a system's generated kernels, the MLP kernels of symode.nn). A load from
    numba's on-disk cache is no compilation, so all zeros means everything came from the
    caches. A context manager, or ``start()`` (returns the counts) and ``stop()``.

    Examples
    --------
    >>> with compile_events() as seen:  # doctest: +SKIP
    ...     model.solve(y0, ts, p)
    >>> seen  # doctest: +SKIP
    {'engine': 0, 'spec': 0, 'kernels': 1, 'nn': 0}
    """

    def __init__(self):
        from numba.core import event

        self.counts = {"engine": 0, "spec": 0, "kernels": 0, "nn": 0}
        counts = self.counts

        class _Listener(event.Listener):
            def on_start(self, ev):
                where = _compiled_where(ev.data["dispatcher"].py_func.__module__)
                if where is not None:
                    counts[where] += 1

            def on_end(self, ev):
                pass

        self._listener = _Listener()

    def start(self) -> dict:
        from numba.core import event

        event.register("numba:compile", self._listener)
        return self.counts

    def stop(self) -> None:
        from numba.core import event

        event.unregister("numba:compile", self._listener)

    def __enter__(self) -> dict:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
