"""The CUDA backend: ``system.compile(backend="cuda")``, one GPU thread per trajectory.

A :class:`CudaModel` has the numba model's ``solve`` and ``vjp`` and returns the same
:class:`~symode.model.Solution` and :class:`~symode.gradients.Gradient` types, its arrays
CuPy arrays on the GPU (NumPy with ``output="numpy"``); inputs may be NumPy or CuPy.
Per-trajectory status codes (success, step size underflow, max_steps, non-finite state)
and messages are the numba engine's (``symode.errors.Status``).

How it runs. symode/cudagen.py prints the system's kernels as CUDA C and assembles, per
(method, dtype, entry point), one translation unit with the engine headers of
``symode.kernels`` (kernels/symode_*.cuh: the Runge–Kutta stepper, the PI controller,
dense output, the checkpoint and discrete adjoints, ports of kernels/integrate.py and
kernels/adjoint.py); CuPy compiles it with NVRTC at first use (``cupy.RawModule``; CuPy
caches the binary on disk, this module the loaded module per process). The same source
with ``target="host"`` compiles with g++ into a shared library called through ctypes:
the CPU checks in tests/test_cuda.py run exactly the stepper the GPU runs, and compare
it with the numba engine, on machines without a GPU. Both targets take their arguments
from one table (``cudagen.ENTRIES``), packed by :func:`_pack`; the CuPy calls are the
few lines of :class:`_GpuModule`.

What is not here (yet): symbolic losses (``loss=``; raw cotangents only), the backsolve
and forward-sensitivity adjoints, the checkpoint adjoint with fixed steps (the discrete
adjoint serves fixed steps), ``dense=True``, padded per-trajectory ``t_eval`` rows, and
``Gradient.t``. The GPU always runs gradients on bounded per-thread memory: ``checkpoints``
snapshots (default 64, also when None) and a replay buffer of ``segment_steps`` steps.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import logging
import os
import subprocess
import tempfile
import types
import uuid
from pathlib import Path

import numpy as np

from . import __version__, cudagen
from .cache import default_cache_dir, is_writable
from .errors import (
    BAD_T_EVAL_CODE,
    IntegrationError,
    NonFiniteInputError,
    ShapeError,
    Status,
    SymodeError,
    UnsupportedFunctionError,
    t_eval_error,
)
from .gradients import Gradient, _message
from .model import _DTYPES, _SUCCESS_MESSAGE, ModelEngine, Solution, _checked, _messages, _method
from .stiff import IMPLICIT_METHODS
from .system import Loss, ODESystem

__all__ = ["CudaModel", "CudaUnavailableError", "compile_cuda", "gpu_available", "work_size"]

log = logging.getLogger("symode")

# gradients on the GPU: at most this many checkpoints per trajectory (``checkpoints=``)
# and a replay buffer of this many steps (``segment_steps=``) unless asked otherwise
DEFAULT_CHECKPOINTS = 64
DEFAULT_SEGMENT_STEPS = 64
# threads per block, per entry point (the gradients use ~250 registers a thread)
_BLOCK = {"solve": 128, "gradient_discrete": 64, "gradient_checkpoint": 64, "kernels": 128}
_NVRTC_OPTIONS = ("-std=c++17",)
_HOST_FLAGS = ("-std=c++17", "-O2", "-fPIC", "-shared")

_INSTALL = (
    "install CuPy built for your CUDA toolkit: pip install 'symode[cuda]', or "
    "pip install cupy-cuda12x (CUDA 12) / cupy-cuda13x (CUDA 13)"
)


class CudaUnavailableError(SymodeError, RuntimeError):
    """``backend="cuda"`` needs CuPy and an NVIDIA GPU; the message says what is missing."""


def _cupy():
    """CuPy with a usable device, or CudaUnavailableError naming what to install."""
    try:
        import cupy
    except ImportError as err:
        raise CudaUnavailableError(
            f"backend='cuda' needs CuPy and an NVIDIA GPU; CuPy could not be imported "
            f"({err}): {_INSTALL}"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDARuntimeError: no driver, no device
        raise CudaUnavailableError(
            f"backend='cuda' needs an NVIDIA GPU: CuPy found no usable CUDA device ({err})"
        ) from None
    if count == 0:
        raise CudaUnavailableError("backend='cuda' needs an NVIDIA GPU: CuPy found none")
    return cupy


def gpu_available() -> bool:
    """Whether ``backend="cuda"`` can run here (CuPy importable and a CUDA device)."""
    try:
        _cupy()
    except CudaUnavailableError:
        return False
    return True


def work_size(n_states: int, method: str, checkpoints: int, segment_steps: int) -> int:
    """Doubles of per-trajectory workspace a gradient takes (kernels/symode_adjoint.cuh
    ``work_size``): K checkpoints of (step, t, h, errold, z, k0) and a replay buffer of
    L + 1 steps of (t, h, z, every stage)."""
    ns = cudagen.method_sizes(method)["NS"]
    K, L = checkpoints, segment_steps
    return K * (4 + 2 * n_states) + (L + 1) * (2 + n_states + ns * n_states)


# -- arguments: one table for both targets ------------------------------------------------------
_ARRAY_DTYPES = {"double": np.float64, "I64": np.int64}


def _pack(entry: str, values: dict, dtype, xp) -> list:
    """The arguments of entry point ``entry`` in its order (cudagen.ENTRIES), checked:
    scalars as NumPy int64/float64, arrays C-contiguous of the table's dtype ("real": the
    module's) in the target's array module ``xp``. A mismatch is symode's bug: raised."""
    out = []
    for name, ctype in cudagen.ENTRIES[entry][1]:
        v = values[name]
        if ctype == "I64":
            out.append(np.int64(v))
        elif ctype == "double":
            out.append(np.float64(v))
        else:
            base = ctype.replace("const ", "").rstrip("*")
            want = np.dtype(dtype) if base == "real" else np.dtype(_ARRAY_DTYPES[base])
            if not isinstance(v, xp.ndarray) or v.dtype != want or not v.flags.c_contiguous:
                raise TypeError(
                    f"symode internal error: argument {name} of {entry} must be a C-contiguous "
                    f"{xp.__name__} array of {want}, got {type(v).__name__} "
                    f"{getattr(v, 'dtype', '')}; please report this"
                )
            out.append(v)
    return out


class _HostModule:
    """A module compiled by g++ as host code, called through ctypes: the CPU checks."""

    xp = np

    def __init__(self, source: str, directory: Path):
        digest = hashlib.sha256(source.encode()).hexdigest()[:24]
        lib = directory / f"host-{digest}.so"
        if not lib.exists():
            directory.mkdir(parents=True, exist_ok=True)
            src = directory / f"host-{digest}-{uuid.uuid4().hex}.cpp"
            tmp = directory / f".host-{digest}-{uuid.uuid4().hex}.so"
            src.write_text(source)
            try:
                run = subprocess.run(
                    ["g++", *_HOST_FLAGS, "-o", str(tmp), "-x", "c++", str(src)],
                    capture_output=True,
                    text=True,
                )
                if run.returncode:
                    raise RuntimeError(f"g++ failed on the CUDA module's host build:\n{run.stderr}")
                os.replace(tmp, lib)
            finally:
                src.unlink(missing_ok=True)
                tmp.unlink(missing_ok=True)
        self.lib = ctypes.CDLL(str(lib))
        self.path = lib

    def call(self, entry: str, args: list) -> None:
        fn = getattr(self.lib, f"symode_{entry}")
        c_args = []
        for a in args:
            if isinstance(a, np.ndarray):
                c_args.append(ctypes.c_void_p(a.ctypes.data))
            elif isinstance(a, np.int64):
                c_args.append(ctypes.c_longlong(int(a)))
            else:
                c_args.append(ctypes.c_double(float(a)))
        fn.restype = None
        fn(*c_args)


class _GpuModule:
    """A module compiled by NVRTC through CuPy: each entry a __global__ kernel, thread i
    running trajectory i."""

    def __init__(self, source: str, cupy):
        self.xp = cupy
        self.module = cupy.RawModule(code=source, options=_NVRTC_OPTIONS)
        self.module.compile()  # NVRTC now (or CuPy's disk cache), not in the first call

    def call(self, entry: str, args: list) -> None:
        B = int(args[0])
        block = _BLOCK[entry]
        kernel = self.module.get_function(f"symode_{entry}")
        kernel(((B + block - 1) // block,), (block,), tuple(args))


# -- the generated source's cache ---------------------------------------------------------------
@functools.cache
def _generator_digest() -> str:
    h = hashlib.sha256(__version__.encode())
    here = Path(__file__).resolve().parent
    for name in ("system.py", "codegen.py", "cudagen.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()


def _cached_source(system: ODESystem, cache_dir) -> cudagen.CudaSource:
    """The system's CUDA C, from ``<cache>/cuda/`` when generated before (SymPy's
    derivations and CSE take a while on large systems), else generated and stored
    (atomic rename; a read-only or foreign file is ignored)."""
    key = hashlib.sha256((_generator_digest() + system._canonical()).encode()).hexdigest()[:32]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / "cuda" / f"sys_{key}.json"
    try:
        meta = json.loads(path.read_text())
        if meta.get("key") == key:
            return cudagen.CudaSource(meta["text"], tuple(meta["missing"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    src = cudagen.generate_cuda_source(system)
    if is_writable(path.parent):
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}"
        tmp.write_text(json.dumps({"key": key, "text": src.text, "missing": list(src.missing)}))
        os.replace(tmp, path)
    return src


def _module_dir(cache_dir) -> Path:
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    d = root / "cuda"
    return d if is_writable(d) else Path(tempfile.gettempdir()) / f"symode-cuda-{os.getuid()}"


# -- the model ----------------------------------------------------------------------------------
class CudaModel:
    """An :class:`~symode.ODESystem` compiled for the GPU: ``solve`` and ``vjp`` as on the
    numba :class:`~symode.model.Model`, one GPU thread per trajectory.

    Make one with ``system.compile(backend="cuda")``. ``target="host"`` (a keyword of
    the constructor, not of ``compile``) runs the very same CUDA C compiled by g++ on the
    CPU, one trajectory after another: the checks of the GPU engine that need no GPU,
    and a debugging aid; it is not a fast CPU backend (use ``backend="numba"``).

    Attributes
    ----------
    source : str
        The system's kernels as CUDA C (the ``symode_system`` struct).
    missing : tuple of str
        Derived kernels that could not be printed (their modes raise when used).
    """

    def __init__(
        self,
        system: ODESystem,
        loss: Loss | None = None,
        cache_dir=None,
        verbose: bool = True,
        target: str = "gpu",
    ):
        if loss is not None:
            raise ValueError(
                "symbolic losses (loss=) are not available on the cuda backend yet: compile "
                "without loss= and call model.vjp(..., cotangent=dL/dy), or use backend='numba'"
            )
        if target not in ("gpu", "host"):
            raise ValueError(f"target must be 'gpu' or 'host', got {target!r}")
        self.system = system
        self.loss = None
        self.verbose = verbose
        self.target = target
        self.cache_dir = cache_dir
        self._xp_gpu = _cupy() if target == "gpu" else None
        self.kernels = _cached_source(system, cache_dir)
        self.source = self.kernels.text
        self.missing = self.kernels.missing
        self._modules: dict = {}
        # ModelEngine's checks and conversions (inputs, times, grids, options) need only
        # .system of their object: the numba model's messages, word for word
        self._checks = types.SimpleNamespace(system=system)

    def __repr__(self) -> str:
        return f"CudaModel({self.system!r}, target={self.target!r})"

    @property
    def xp(self):
        """The array module of this model's outputs: CuPy (GPU) or NumPy (host)."""
        return self._xp_gpu if self._xp_gpu is not None else np

    def module_source(self, method: str, dtype=np.float64, entries=("solve",)) -> str:
        """The whole translation unit NVRTC (or g++, for the host target) compiles for
        ``method``, ``dtype`` and the entry points ``entries`` (cudagen.ENTRIES)."""
        return cudagen.module_source(
            self.kernels, method, dtype, tuple(entries), self.target, repr(self.system)
        )

    def module(self, method: str, dtype, entry: str):
        """The loaded module of one entry point (compiled on first use)."""
        key = (method, np.dtype(dtype), entry)
        mod = self._modules.get(key)
        if mod is None:
            source = self.module_source(method, dtype, (entry,))
            if self.target == "gpu":
                if self.verbose:
                    log.info("symode: compiling %s (%s, %s) with NVRTC", entry, method, dtype)
                mod = _GpuModule(source, self._xp_gpu)
            else:
                mod = _HostModule(source, _module_dir(self.cache_dir))
            self._modules[key] = mod
        return mod

    def _call(self, entry: str, method: str, dtype, values: dict) -> None:
        if values["B"] == 0:  # an empty batch: nothing to launch
            return
        mod = self.module(method, dtype, entry)
        mod.call(entry, _pack(entry, values, dtype, mod.xp))

    def _require(self, kernel: str, what: str) -> None:
        if kernel in self.missing:
            raise UnsupportedFunctionError(
                f"{what} needs the kernel {kernel!r}, which cannot be compiled for this "
                f"system: {cudagen.kernel_error(self.system, kernel)}"
            )

    def evaluate_kernels(self, t: float, X, dtype=np.float64):
        """Every printed kernel at the B points of X (B, 3n + 2p) = [y, p, a, v, w]:
        returns (B, 5n + 3p + 1) = [f, aᵀ∂f/∂y, aᵀ∂f/∂p, the adjoint's -aᵀ∂f/∂(y, p),
        (∂f/∂y) v + (∂f/∂p) w, tr ∂f/∂y, ∂tr/∂y, ∂tr/∂p], NaN where a kernel could not be
        printed. For checks of the printer (tests/test_cuda.py), on either target."""
        n, n_p = self.system.n_states, self.system.n_params
        xp = self.xp
        X = xp.ascontiguousarray(xp.asarray(X, dtype=dtype))
        if X.ndim != 2 or X.shape[1] != 3 * n + 2 * n_p:
            raise ShapeError(f"X must have shape (B, {3 * n + 2 * n_p}); got {X.shape}")
        OUT = xp.empty((X.shape[0], 5 * n + 3 * n_p + 1), dtype)
        # (a module is per method; this entry uses none: the smallest tableau's)
        self._call("kernels", "euler", dtype, {"B": X.shape[0], "t": t, "X": X, "OUT": OUT})
        return OUT

    # -- inputs -----------------------------------------------------------------------------
    def _inputs(self, y0, params, dtype):
        """(Y0 (B, n), P (B, p), batched) in the target's array module, checked as the
        numba model checks them (NumPy inputs through ModelEngine.inputs; CuPy inputs on
        the device, with the same messages)."""
        xp = self.xp
        if xp is np or not (isinstance(y0, xp.ndarray) or isinstance(params, xp.ndarray)):
            if xp is not np:
                y0 = y0.get() if hasattr(y0, "get") else y0
                params = params.get() if hasattr(params, "get") else params
            y0, params, batched = ModelEngine.inputs(self._checks, y0, params, dtype)
            Y0 = y0 if batched else y0[None]
            P = params if batched else params[None]
            return (
                xp.ascontiguousarray(xp.asarray(Y0)),
                xp.ascontiguousarray(xp.asarray(P)),
                batched,
            )
        n, n_p = self.system.n_states, self.system.n_params
        y0 = xp.asarray(y0, dtype=dtype)
        params = xp.asarray(params if params is not None else np.zeros(0), dtype=dtype)
        for name, a, k in (("y0", y0, n), ("params", params, n_p)):
            if a.ndim not in (1, 2) or a.shape[-1] != k:
                raise ShapeError(f"{name} must have shape ({k},) or (B, {k}); got {a.shape}")
            if not bool(xp.isfinite(a).all()):
                raise NonFiniteInputError(f"{name} contains NaN or infinity")
        batched = y0.ndim == 2 or params.ndim == 2
        if y0.ndim == 2 and params.ndim == 2 and y0.shape[0] != params.shape[0]:
            raise ShapeError(
                f"batched y0 {y0.shape} and params {params.shape} disagree on the batch size"
            )
        B = y0.shape[0] if y0.ndim == 2 else params.shape[0] if params.ndim == 2 else 1
        Y0 = xp.ascontiguousarray(xp.broadcast_to(y0, (B, n)))
        P = xp.ascontiguousarray(xp.broadcast_to(params, (B, n_p)))
        return Y0, P, batched

    def _common(self, method, dtype, t_eval, t_span, dt, grid):
        dtype = np.dtype(dtype)
        if dtype not in _DTYPES:
            raise TypeError(f"dtype must be float64 or float32, got {dtype}")
        if method in IMPLICIT_METHODS:
            raise ValueError(
                f"method={method!r} is scipy's implicit solver, not available on the cuda "
                "backend: use one of symode's explicit methods, or backend='numba'"
            )
        if np.ndim(t_eval) == 2:
            raise ValueError(
                "a padded t_eval (B, T) is not available on the cuda backend yet: pass one "
                "shared 1-D t_eval, or use backend='numba'"
            )
        m = _method(method)
        if hasattr(t_eval, "get"):
            t_eval = t_eval.get()
        t_eval, t0, t1 = ModelEngine.times(t_eval, t_span)
        g = ModelEngine.grid(m, t0, t1, dt, grid)
        return dtype, m, t_eval, t0, t1, g

    def _out(self, a, output: str):
        if output == "numpy" and self.xp is not np:
            return a.get()
        return a

    # -- solving ---------------------------------------------------------------------------
    def solve(
        self,
        y0,
        t_eval,
        params=None,
        method: str = "dopri5",
        *,
        rtol: float = 1e-6,
        atol=1e-9,
        dt: float | None = None,
        grid=None,
        t_span=None,
        dense: bool = False,
        max_steps: int = 100_000,
        dt_min: float = 0.0,
        h0: float | None = None,
        beta: float | None = None,
        throw: bool = True,
        dtype=np.float64,
        output: str = "cupy",
    ) -> Solution:
        """Integrate every trajectory on the GPU, one thread each; the arguments and the
        :class:`~symode.model.Solution` are :meth:`symode.model.Model.solve`'s.

        Parameters
        ----------
        output : {"cupy", "numpy"}
            The array type of ``Solution.y`` (and of the stats arrays of a batch): CuPy
            arrays on the device (default), or NumPy arrays on the host. Status codes and
            messages are always on the host (NumPy).

        Not available here: ``dense=True``, a padded (B, T) ``t_eval``, the implicit
        methods. Each trajectory's steps, outputs and status are those of the numba
        engine to rounding (the same stepper, ported: tests/test_cuda.py).

        Examples
        --------
        >>> model = system.compile(backend="cuda")  # doctest: +SKIP
        >>> sol = model.solve([1.0, 1, 1], ts, params_grid, method="rk4", dt=0.01)  # doctest: +SKIP
        """
        if output not in ("cupy", "numpy"):
            raise ValueError(f"output must be 'cupy' or 'numpy', got {output!r}")
        if dense:
            raise ValueError("dense=True is not available on the cuda backend: pass t_eval")
        dtype, m, t_eval, t0, t1, g = self._common(method, dtype, t_eval, t_span, dt, grid)
        n = self.system.n_states
        iopt, fopt, atol_a = ModelEngine.options(
            self._checks, m, n, dtype, rtol, atol, max_steps, dt_min, h0, beta, n
        )
        Y0, P, batched = self._inputs(y0, params, dtype)
        xp = self.xp
        B, T = Y0.shape[0], t_eval.size
        Y = xp.full((B, T, n), np.nan, dtype)
        stats = xp.zeros((B, 5), np.int64)
        fstats = xp.zeros((B, 3))
        values = {
            "B": B, "T0": xp.full(B, t0), "T1": xp.full(B, t1), "Y0": Y0, "P": P,
            "iopt": xp.asarray(iopt), "fopt": xp.asarray(fopt), "atol": xp.asarray(atol_a),
            "grid": xp.asarray(g), "G": g.size, "t_out": xp.asarray(t_eval), "T": T,
            "Y": Y, "stats": stats, "fstats": fstats,
        }  # fmt: skip
        self._call("solve", method, dtype, values)
        st = stats.get() if xp is not np else stats
        fst = fstats.get() if xp is not np else fstats
        codes = st[:, 0].copy()
        if (codes == BAD_T_EVAL_CODE).any():
            raise t_eval_error(t_eval)
        msgs = _messages(st, fst)
        failed = tuple(int(i) for i in np.flatnonzero(codes))
        Y = self._out(Y, output)
        if batched:
            stats_out = self._out(stats, output)
            counts = {
                "nfev": stats_out[:, 1],
                "naccept": stats_out[:, 2],
                "nreject": stats_out[:, 3],
            }
            sol = Solution(t_eval.copy(), Y, counts, codes, msgs, None, failed)
        else:
            code = Status(int(codes[0]))
            counts = {"nfev": int(st[0, 1]), "naccept": int(st[0, 2]), "nreject": int(st[0, 3])}
            msg = _SUCCESS_MESSAGE if not code else msgs[0]
            sol = Solution(t_eval.copy(), Y[0], counts, code, msg, None, failed)
        return _checked(sol, batched, throw)

    # -- gradients -------------------------------------------------------------------------
    def vjp(
        self,
        y0,
        t_eval,
        params=None,
        cotangent=None,
        *,
        adjoint: str = "checkpoint",
        method: str = "dopri5",
        rtol: float = 1e-6,
        atol=1e-9,
        adjoint_rtol: float | None = None,
        adjoint_atol: float | None = None,
        seminorm: bool = True,
        checkpoints: int | None = None,
        segment_steps: int | None = None,
        dt: float | None = None,
        grid=None,
        t_span=None,
        max_steps: int = 100_000,
        h0: float | None = None,
        dtype=np.float64,
        throw: bool = True,
        output: str = "cupy",
    ) -> Gradient:
        """Gradients w.r.t. y0 and params given ``cotangent[i] = ∂L/∂y(t_eval[i])``, one
        GPU thread per trajectory; :meth:`symode.model.Model.vjp`'s arguments and
        :class:`~symode.gradients.Gradient`.

        Parameters
        ----------
        adjoint : {"checkpoint", "discrete"}
            "checkpoint": the continuous adjoint, y from replayed checkpoints (adaptive
            steps only); "discrete": the exact gradient of the computed solution (any
            method, fixed or adaptive steps). "backsolve" and "forward" are not available
            on the GPU yet.
        checkpoints : int >= 2, optional
            Snapshots kept per trajectory (default 64; None also means 64 here: a GPU
            thread cannot grow its buffers, so the numba engine's "record every step"
            has no GPU counterpart).
        segment_steps : int >= 1, optional
            Steps of a replayed segment held at once (default 64). Memory per trajectory
            is :func:`work_size` doubles; a segment longer than this is replayed in
            pieces (more forward steps, the same discrete gradient; the checkpoint mode's
            backward steps also stop at each piece's start).
        output : {"cupy", "numpy"}

        Returns
        -------
        Gradient
            ``.y0``, ``.params``, ``.y`` (the forward solution), ``.stats``, ``.status``;
            ``.value`` is None (raw cotangents) and ``.t`` None (not computed here).
        """
        if output not in ("cupy", "numpy"):
            raise ValueError(f"output must be 'cupy' or 'numpy', got {output!r}")
        if cotangent is None:
            raise ValueError("vjp needs cotangent= (∂L/∂y at each output time)")
        modes = ("checkpoint", "discrete")
        if adjoint not in modes:
            raise ValueError(
                f"adjoint={adjoint!r} is not available on the cuda backend; use one of "
                f"{list(modes)} (or backend='numba' for 'backsolve' and 'forward')"
            )
        for name, v, lo in (("checkpoints", checkpoints, 2), ("segment_steps", segment_steps, 1)):
            if v is not None and (not isinstance(v, (int, np.integer)) or v < lo):
                raise ValueError(f"{name} must be an int >= {lo} (or None: the default), got {v!r}")
        K = DEFAULT_CHECKPOINTS if checkpoints is None else int(checkpoints)
        L = DEFAULT_SEGMENT_STEPS if segment_steps is None else int(segment_steps)
        dtype, m, t_eval, t0, t1, g = self._common(method, dtype, t_eval, t_span, dt, grid)
        if adjoint == "checkpoint" and g.size:
            raise ValueError(
                "adjoint='checkpoint' with fixed steps (a fixed-step method, or dt=/grid=) is "
                "not available on the cuda backend yet: use adjoint='discrete', the exact "
                "gradient of the fixed-step solver"
            )
        self._require("adjoint" if adjoint == "checkpoint" else "vjp", f"adjoint={adjoint!r}")
        n, n_p = self.system.n_states, self.system.n_params
        xp = self.xp
        Y0, P, batched = self._inputs(y0, params, dtype)
        B, T = Y0.shape[0], t_eval.size
        cot = xp.asarray(cotangent, dtype=np.float64)
        if cot.shape not in ((T, n), (B, T, n)) or (cot.ndim == 3 and not batched):
            raise ShapeError(
                f"cotangent must have shape ({T}, {n}) or (B, {T}, {n}); got {cot.shape}"
            )
        if not bool(xp.isfinite(cot).all()):
            raise ValueError("cotangent contains NaN or infinity")
        cot = xp.ascontiguousarray(xp.broadcast_to(cot, (B, T, n)))
        # the options exactly as compute_gradient builds them (raw cotangents, no cost)
        iopt, fopt, atol_f = ModelEngine.options(
            self._checks, m, n, dtype, rtol, atol, max_steps, 0.0, h0, None, n
        )
        nz_b = n + n_p
        nerr_b = n if (seminorm and adjoint == "checkpoint") else nz_b
        b_rtol = rtol if adjoint_rtol is None else adjoint_rtol
        if adjoint_atol is not None:
            b_atol = adjoint_atol
        elif type(atol) in (float, int):
            b_atol = atol
        else:
            b_atol = float(atol_f[:n].min())
        biopt, bfopt, _ = ModelEngine.options(
            self._checks, m, nz_b, dtype, b_rtol, b_atol, max_steps, 0.0, None, None, nerr_b
        )
        batol = np.full(nz_b, float(b_atol))
        W = work_size(n, method, K, L)
        GY0 = xp.zeros((B, n))
        GP = xp.zeros((B, n_p))
        ST_F = xp.zeros((B, 5), np.int64)
        ST_B = xp.zeros((B, 5), np.int64)
        FOUT = xp.zeros((B, 7))
        Y_OUT = xp.full((B, T, n), np.nan, dtype)
        values = {
            "B": B, "T0": xp.full(B, t0), "T1": xp.full(B, t1), "Y0": Y0, "P": P,
            "t_obs": xp.asarray(t_eval), "T": T, "cot": cot, "iopt": xp.asarray(iopt),
            "fopt": xp.asarray(fopt), "atol": xp.asarray(atol_f), "grid": xp.asarray(g),
            "G": g.size, "biopt": xp.asarray(biopt), "bfopt": xp.asarray(bfopt),
            "batol": xp.asarray(batol), "K": K, "L": L, "work": xp.empty((W, B)),
            "GY0": GY0, "GP": GP, "ST_F": ST_F, "ST_B": ST_B, "FOUT": FOUT, "Y_OUT": Y_OUT,
        }  # fmt: skip
        self._call(f"gradient_{adjoint}", method, dtype, values)
        sf = ST_F.get() if xp is not np else ST_F
        sb = ST_B.get() if xp is not np else ST_B
        fo = FOUT.get() if xp is not np else FOUT
        if (sf[:, 0] == BAD_T_EVAL_CODE).any():
            raise t_eval_error(t_eval)
        codes = np.where(sf[:, 0] != 0, sf[:, 0], sb[:, 0])
        failed = tuple(int(i) for i in np.flatnonzero(codes))
        msgs = ["success"] * B
        for i in failed:
            msgs[i] = _message(int(codes[i]), sf[i, 0], fo[i])
        GY0, GP, Y_OUT = (self._out(a, output) for a in (GY0, GP, Y_OUT))
        if batched:
            stats = {
                "forward": {"nfev": sf[:, 1], "naccept": sf[:, 2], "nreject": sf[:, 3]},
                "backward": {"nfev": sb[:, 1], "naccept": sb[:, 2], "nreject": sb[:, 3]},
            }
            out = Gradient(GY0, GP, None, stats, codes, msgs, failed, Y_OUT, None)
        else:
            counts = ("nfev", "naccept", "nreject")
            stats = {
                "forward": {k: int(sf[0, 1 + j]) for j, k in enumerate(counts)},
                "backward": {k: int(sb[0, 1 + j]) for j, k in enumerate(counts)},
            }
            code = Status(int(codes[0]))
            out = Gradient(GY0[0], GP[0], None, stats, code, msgs[0], failed, Y_OUT[0], None)
        if throw and failed:
            err = IntegrationError(
                f"gradient failed for trajectories {list(failed)[:10]}: {msgs[failed[0]]}", failed
            )
            err.gradient = out
            raise err
        return out


def compile_cuda(
    system: ODESystem,
    loss: Loss | None = None,
    cache_dir=None,
    specialize: bool = False,
    verbose: bool = True,
) -> CudaModel:
    """``system.compile(backend="cuda")``: a :class:`CudaModel` on the GPU. Raises
    :class:`CudaUnavailableError` naming what to install when CuPy or a GPU is missing."""
    if specialize:
        raise ValueError(
            "specialize=True is a numba option; CUDA modules are always specialized (the "
            "system's kernels and the method's tableau compiled in as constants)"
        )
    return CudaModel(system, loss=loss, cache_dir=cache_dir, verbose=verbose, target="gpu")
