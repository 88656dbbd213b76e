"""How the Python side reaches the compiled engine: which kernels each entry point
needs, which engine function serves it, and the first call of each (an inter-process
lock, numba's one experimental-feature warning silenced, an announcement when a compile
takes more than a moment). See docs/architecture.md, "Two tiers"."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import tempfile
import threading
import warnings
from pathlib import Path

from numba.core.errors import NumbaWarning

from .cache import default_cache_dir, ensure_engine_cache, is_writable

__all__ = ["KERNELS_NEEDED", "FirstCall", "engine_compile", "generic_entry", "check_engine_cache"]

# The kernels each entry point (or adjoint mode) of the generic engine may call
# (kernels/dynamics.py): only these are compiled for it. The loss kernels are the
# zero functions when the system has no loss.
_FORWARD_KERNELS = ("rhs",)
_LOSS_KERNELS = ("running", "observation", "observation_grad")
KERNELS_NEEDED = {
    "solve_forward": _FORWARD_KERNELS,
    "solve_dense": _FORWARD_KERNELS,
    "dense_query": _FORWARD_KERNELS,
    "solve_ensemble": _FORWARD_KERNELS,
    "backsolve": ("rhs", "adjoint", "running_grad", *_LOSS_KERNELS),
    "checkpoint": ("rhs", "adjoint", "running_grad", *_LOSS_KERNELS),
    "discrete": ("rhs", "vjp", "running_grad", *_LOSS_KERNELS),
    "forward": ("rhs", "jvp", "running_grad", *_LOSS_KERNELS),
}


def generic_entry(name: str, mode: str | None) -> tuple[str, str]:
    """(engine module, function) of the generic tier's entry ``name``: per adjoint mode
    for the gradients (kernels/adjoint.py's gradient_<mode>)."""
    if name in ("solve_forward", "solve_dense", "dense_query"):
        return "integrate", name
    if name == "solve_ensemble":
        return "ensemble", name
    return "adjoint", f"{name}_{mode}"


class FirstCall:
    """An entry point's first call: numba compiles (or loads from its cache) the
    specialization it needs, under a lock shared by the processes of this machine (two
    pytest or Dask workers compile an engine function once, the second loads it), with
    numba's one warning about first-class functions silenced (symode relies on them on
    purpose: docs/architecture.md). A call that takes more than a moment says so on the
    ``symode`` logger. Then the entry replaces itself in ``entries``."""

    def __init__(self, fn, entries: dict, key, what: str, verbose: bool):
        self.fn, self.entries, self.key, self.what = fn, entries, key, what
        self.verbose = verbose

    def __call__(self, *args):
        with engine_compile(self.what, self.verbose):
            result = self.fn(*args)
        self.entries[self.key] = self.fn
        return result


# a compile (or first load) longer than this is announced on the ``symode`` logger
ANNOUNCE_AFTER_S = 1.0
log = logging.getLogger("symode")


@contextlib.contextmanager
def engine_compile(what: str, verbose: bool = False):
    """Compile (or load) ``what`` under an inter-process lock of that name in symode's
    cache root; with ``verbose``, say so if it takes longer than ``ANNOUNCE_AFTER_S``."""
    lock_path = _lock_dir() / f"{what}.lock"
    timer = None
    if verbose:
        message = (
            f"symode: compiling {_describe(what)} with numba (first use on this machine; "
            "cached for later runs)"
        )
        timer = threading.Timer(ANNOUNCE_AFTER_S, log.info, (message,))
        timer.daemon = True
        timer.start()
    try:
        with open(lock_path, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX)
            except OSError:  # a filesystem without locks: compile without one
                pass
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", ".*First-class function type", NumbaWarning)
                yield
    finally:
        if timer is not None:
            timer.cancel()


def _describe(what: str) -> str:
    """A lock name as words: "adjoint.gradient_checkpoint-float64" → "the engine's
    adjoint.gradient_checkpoint (float64)"."""
    name, _, dtype = what.rpartition("-")
    if name.startswith("kernels-"):
        return f"this system's kernels ({dtype})"
    return f"the engine's {name} ({dtype})"


@functools.cache
def check_engine_cache() -> None:
    """Once per process, before the generic engine's first use: its numba cache must
    match its sources (cache.ensure_engine_cache)."""
    from .kernels import integrate

    with engine_compile("engine-stamp"):
        ensure_engine_cache(Path(integrate.solve_forward.stats.cache_path))


@functools.cache
def _lock_dir() -> Path:
    """Where the compile locks live: symode's cache root, or (read-only) a per-user
    temporary directory, silently: a lock is no user data."""
    for root in (default_cache_dir(), Path(tempfile.gettempdir()) / f"symode-locks-{os.getuid()}"):
        if is_writable(root / "locks"):
            return root / "locks"
    return Path(tempfile.mkdtemp(prefix="symode-locks-"))
