"""A compiled system: the generated kernels plus the engine, behind ``solve``.

``ODESystem.compile()`` returns a :class:`Model`. Input checking, shapes and messages
live here, in Python; the numba kernels never raise (they write status codes).
"""

from __future__ import annotations

import functools
import importlib
import math
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np
import sympy as sp
from numba.experimental import function_type as _function_type

from .cache import load_generated
from .codegen import entry_point, generate_numba_source, kernel_error
from .engine import (
    KERNELS_NEEDED,
    FirstCall,
    check_engine_cache,
    engine_compile,
    generic_entry,
)
from .errors import (
    BAD_T_EVAL_CODE,
    IntegrationError,
    NonFiniteInputError,
    ShapeError,
    Status,
    UnsupportedFunctionError,
    t_eval_error,
)
from .gradients import compute_gradient
from .kernels import dynamics as _dynamics_contract
from .stiff import IMPLICIT_METHODS, solve_implicit
from .system import Loss, ODESystem, _symbol_name
from .tableaus import METHOD_IDS, ButcherTableau, get_tableau, packed_tableau

__all__ = ["Model", "Solution", "compile_system"]

_DTYPES = {np.dtype(np.float64), np.dtype(np.float32)}
_NO_ADDRESSES = np.zeros(0, np.int64)  # the specialized engine calls its kernels directly

_NO_GRID = np.empty(0)  # adaptive steps (the engine never writes its inputs)


@dataclass
class Solution:
    """The result of :meth:`Model.solve`.

    Attributes
    ----------
    t : (T,) array
    y : (T, n) array, or (B, T, n) for an ensemble
    stats : dict of nfev, naccept, nreject (ints, or (B,) arrays for an ensemble)
    status : Status, or (B,) int array of Status codes for an ensemble
    message : str, or list of str for an ensemble
    sol : callable ``sol(t) -> y`` when solved with ``dense=True``, else None
    """

    t: np.ndarray
    y: np.ndarray
    stats: dict
    status: object
    message: object
    sol: object = None
    failed: tuple = field(default_factory=tuple)

    @property
    def success(self) -> bool:
        return not self.failed


_SUCCESS_MESSAGE = Status.SUCCESS.describe(0.0, 0.0)


def _messages(stats: np.ndarray, fstats: np.ndarray) -> list[str]:
    return [
        _SUCCESS_MESSAGE if s[0] == 0 else Status(int(s[0])).describe(float(f[0]), float(f[1]))
        for s, f in zip(stats, fstats)
    ]


def _checked(sol: Solution, batched: bool, throw: bool) -> Solution:
    """``sol``; with ``throw``, IntegrationError (the solution attached) when a
    trajectory failed."""
    if throw and sol.failed:
        which = "" if not batched else f" (trajectories {list(sol.failed)[:10]})"
        first = sol.message if not batched else sol.message[sol.failed[0]]
        err = IntegrationError(f"integration failed{which}: {first}", sol.failed)
        err.solution = sol
        raise err
    return sol


class _Method:
    """A tableau as the Python side needs it: its coefficients as the generic engine takes
    them (``data``), the specialized engine's number for it (which compiles the
    coefficients in as constants) and its controller settings."""

    def __init__(self, tab: ButcherTableau):
        self.tableau = tab
        self.id = METHOD_IDS[tab.name]
        self.adaptive = bool(tab.adaptive)
        self.err_order = int(tab.error_order or tab.order)
        self.data = packed_tableau(tab.name)


@functools.cache
def _method(name: str) -> _Method:
    return _Method(get_tableau(name))


def _as_float_array(x, name: str, dtype, copy: bool = True, finite: bool = True) -> np.ndarray:
    """x as a C-contiguous array of dtype (a copy unless ``copy`` is False and x already
    is one: the kernels never write their inputs), checked to be finite unless the
    caller checks that itself."""
    try:
        a = np.array(x, dtype=dtype, order="C", copy=copy or None)
    except (TypeError, ValueError) as err:
        raise ShapeError(f"{name} must be an array of numbers: {err}") from None
    if finite and not all_finite(a):
        raise NonFiniteInputError(f"{name} contains NaN or infinity")
    if not a.flags.writeable:  # (a read-only view): the engine is compiled for writable
        a = a.copy()
    return a


def _from_mapping(values: Mapping, symbols, what: str) -> list:
    """``values`` keyed by symbol or by name, in the order of ``symbols``; each entry a
    number or, for a batch, a sequence. Missing and unknown keys are named."""
    names = [_symbol_name(s) for s in symbols]
    by_name = {}
    for key, value in values.items():
        name = _symbol_name(key) if isinstance(key, sp.Basic) else str(key)
        if name not in names:
            raise ShapeError(f"{what} has an unknown key {name!r}; expected {names}")
        by_name[name] = value
    missing = [name for name in names if name not in by_name]
    if missing:
        raise ShapeError(f"{what} is missing {missing} (expected keys {names})")
    columns = [np.asarray(by_name[name], np.float64) for name in names]
    return np.stack(np.broadcast_arrays(*columns), axis=-1) if columns else []


def all_finite(a: np.ndarray) -> bool:
    """Whether every entry of a is finite; small arrays in Python, where numpy's
    ``isfinite(a).all()`` costs ~4 µs of call overhead (twice per solve)."""
    if a.size <= 16:
        return all(map(math.isfinite, a.ravel().tolist()))
    return bool(np.isfinite(a).all())


def _build_options(method: _Method, nz, rtol, atol, max_steps, dt_min, h0, beta, nerr, model):
    if not (rtol >= 0 and math.isfinite(rtol)):
        raise ValueError(f"rtol must be a finite number >= 0, got {rtol}")
    if isinstance(atol, (int, float)):
        if not (atol >= 0 and math.isfinite(atol)):
            raise ValueError(f"atol must be finite and >= 0, got {atol}")
        atol_a = np.full(nz, float(atol))
    else:
        atol_a = np.array(atol, dtype=np.float64)
        if atol_a.ndim == 0:
            atol_a = np.full(nz, float(atol_a))
        elif atol_a.shape != (model.system.n_states,):
            raise ShapeError(
                f"atol must be a scalar or have shape ({model.system.n_states},), "
                f"got {atol_a.shape}"
            )
        if (atol_a < 0).any() or not np.isfinite(atol_a).all():
            raise ValueError("atol must be finite and >= 0")
        if atol_a.size < nz:  # augmented states take the smallest state atol
            atol_a = np.concatenate([atol_a, np.full(nz - atol_a.size, atol_a.min())])
    if method.adaptive and rtol == 0 and (atol_a[: nerr or nz] == 0).any():
        raise ValueError("rtol and atol cannot both be zero")
    if not (isinstance(max_steps, (int, np.integer)) and max_steps > 0):
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
    if beta is None:
        beta = 0.2 / (method.err_order + 1)  # Hairer's DOPRI5: 0.04 for a 5(4) pair
    iopt = np.array([max_steps, nerr or nz], np.int64)
    fopt = np.array([rtol, h0 or 0.0, dt_min, 0.9, 0.2, 10.0, beta], np.float64)
    return iopt, fopt, atol_a


@functools.lru_cache(maxsize=256)
def _scalar_options(method: _Method, nz, rtol, atol, max_steps, dt_min, h0, beta, nerr):
    return _build_options(method, nz, rtol, atol, max_steps, dt_min, h0, beta, nerr, None)


# the ensemble entries and the single-trajectory entry each member calls
_ENSEMBLE_SINGLE = {"solve_ensemble": "solve_forward", "gradient_ensemble": "gradient"}


def _fingerprint(a):
    """What numba's type of an argument depends on, cheaply: an array's dtype, dimensions,
    layout and flags; a scalar's Python type."""
    if isinstance(a, np.ndarray):
        f = a.flags
        return (a.dtype.str, a.ndim, f.c_contiguous, f.f_contiguous, f.writeable, f.aligned)
    return type(a)


def _bound(entry) -> functools.partial:
    """The engine function with its leading arguments bound, under an entry's wrappers
    (FirstCall, _EnsembleEntry)."""
    while not isinstance(entry, functools.partial):
        entry = entry.fn
    return entry


class _EnsembleEntry:
    """An ensemble entry point bound to a model: each call passes the engine the address
    of the single-trajectory entry its members call (``ModelEngine.single_address``; in
    the specialized tier the members call their entry directly and it is unused)."""

    def __init__(self, engine, fn, key, name, method, mode, dtype):
        self.fn, self.engine, self.key, self.name = fn, engine, key, name
        self.method, self.mode, self.dtype = method, mode, dtype
        self._single: dict = {}  # argument fingerprints → (address, signature key)
        module = "ensemble" if name == "solve_ensemble" else "adjoint"
        self.row_arguments = importlib.import_module(f"symode.kernels.{module}").row_arguments

    def __call__(self, *args):
        single = np.zeros(3, np.int64)
        if not self.engine.specialized:
            # the members' argument types follow from these arguments' (numba's typeof
            # of every row costs ~20 µs a call: looked up by a cheap fingerprint instead)
            key = tuple(map(_fingerprint, args))
            found = self._single.get(key)
            if found is None:
                bound = _bound(self)  # functools.partial(entry, method, addr, sizes)
                row = self.row_arguments((*bound.args, *args))
                found = self._single[key] = self.engine.single_address(
                    self.name, self.method, self.mode, self.dtype, row
                )
            single[:2] = found
        first = isinstance(self.fn, FirstCall)
        self.fn(*args, single)
        if first:  # compiled: call the entry itself from now on, through this wrapper
            self.fn = self.fn.fn
            self.engine._entries[self.key] = self
        if single[2]:
            raise RuntimeError(
                f"symode internal error: the engine's {self.name} typed its members' call "
                "differently from the Python side; please report this"
            )


class ModelEngine:
    """A compiled model's side of the engine: the interface between :class:`Model` (and
    the drivers beside it, symode/gradients.py) and the compiled entry points. It binds
    the engine's entry points to this system's kernels (compiling on first use, under a
    lock) and checks and converts what they take: y0 and params, output times, fixed-step
    grids, option arrays. ``model.engine``; nothing here integrates."""

    def __init__(self, system, loss, package, path, specialized: bool, verbose: bool):
        self.system = system
        self.loss = loss
        self.package = package
        self.path = path
        self.specialized = specialized
        self.verbose = verbose
        # whether the loss has a running cost (a sympy comparison: computed once)
        self.running_cost = loss is not None and loss.running != 0
        self._modules: dict = {}
        self._entries: dict = {}  # (entry, method id, mode, dtype) → bound entry point
        self._addresses: dict = {}  # (dtype, kernel names) → address array
        # the generic engine's run-time sizes (kernels/dynamics.py Z_*)
        self.sizes = np.zeros(_dynamics_contract.N_SIZES, np.int64)
        self.sizes[_dynamics_contract.Z_N] = system.n_states
        self.sizes[_dynamics_contract.Z_NP] = system.n_params
        self.sizes[_dynamics_contract.Z_ND] = 0 if loss is None else len(loss.data)
        self.sizes[_dynamics_contract.Z_COST] = self.running_cost
        self.sizes[_dynamics_contract.Z_NW] = self.kernels.N_WORK

    method = staticmethod(_method)

    def module(self, name: str):
        mod = self._modules.get(name)
        if mod is None:
            mod = self._modules[name] = importlib.import_module(f"{self.package.__name__}.{name}")
        return mod

    def kernel_addresses(self, dtype, names: tuple) -> np.ndarray:
        """The addresses of the kernels ``names`` compiled for states of ``dtype``, in
        the slots of the generic engine's dynamics record (kernels/dynamics.py): each
        compiles on first use (or loads from the system's cache). The other slots stay
        0: the entry point that gets this record never calls them."""
        key = (dtype, names)
        addr = self._addresses.get(key)
        if addr is None:
            addr = np.zeros(2 * len(_dynamics_contract.KERNELS), np.int64)
            sigs = _dynamics_contract.kernel_signatures(numba.from_dtype(dtype))
            for name in names:
                kernel = getattr(self.kernels, name)
                sig = sigs[name]
                kernel.compile(sig.args)
                slot = _dynamics_contract.SLOT[name]
                addr[2 * slot] = _function_type._get_wrapper_address(kernel, sig)
                addr[2 * slot + 1] = _function_type._get_jit_address(kernel, sig)
            self._addresses[key] = addr
        return addr

    def entry(self, name: str, method: _Method, mode: str | None = None, dtype=np.float64):
        """The engine's compiled entry ``name`` for a method (and adjoint mode) and
        states of ``dtype``, with the method and the system's kernels bound: call it
        with the entry's remaining arguments (codegen.ENTRY_POINTS)."""
        dtype = np.dtype(dtype)  # (np.float64 and np.dtype("float64") hash apart)
        key = (name, method.id, mode, dtype)
        fn = self._entries.get(key)
        if fn is None:
            self.require(KERNELS_NEEDED[mode or name], mode or name)
            if self.specialized:
                module, function = entry_point(name, method.id, mode)
                fn = functools.partial(
                    getattr(self.module(module), function), _NO_ADDRESSES, self.sizes
                )
                lock = f"{Path(self.path).name}.{function}-{dtype}"
            else:
                check_engine_cache()
                group, function = generic_entry(name, mode)
                engine = importlib.import_module(f"symode.kernels.{group}")
                needs = KERNELS_NEEDED[mode or name]
                with engine_compile(f"kernels-{Path(self.path).name}-{dtype}", self.verbose):
                    addr = self.kernel_addresses(dtype, needs)
                fn = functools.partial(getattr(engine, function), method.data, addr, self.sizes)
                lock = f"{group}.{function}-{dtype}"
            fn = FirstCall(fn, self._entries, key, lock, self.verbose)
            if name in _ENSEMBLE_SINGLE:
                fn = _EnsembleEntry(self, fn, key, name, method, mode, dtype)
            self._entries[key] = fn
        return fn

    def single_address(self, name: str, method: _Method, mode, dtype, row: tuple) -> tuple:
        """(address, signature key) of the compiled single-trajectory entry behind the
        ensemble entry ``name``, for the arguments ``row`` an ensemble member passes it
        (kernels/dynamics.py, call_single): compiled on first use, under its lock."""
        single = _ENSEMBLE_SINGLE[name]
        dispatcher = self.dispatcher(single, method, mode, dtype)
        argtypes = tuple(dispatcher.typeof_pyval(a) for a in row)
        key = (single, method.id, mode, np.dtype(dtype), argtypes)
        found = self._addresses.get(key)
        if found is None:
            group, function = generic_entry(single, mode)
            with engine_compile(f"{group}.{function}-{np.dtype(dtype)}", self.verbose):
                dispatcher.compile(argtypes)
            address = _function_type._get_jit_address(
                dispatcher, numba.core.typing.signature(numba.types.none, *argtypes)
            )
            found = self._addresses[key] = (
                address,
                _dynamics_contract.signature_key(argtypes),
            )
        return found

    def require(self, names, what: str) -> None:
        """Raise UnsupportedFunctionError if a kernel that ``what`` needs could not be
        printed for this system (codegen leaves it out), naming it and why."""
        missing = [k for k in names if k in getattr(self.kernels, "MISSING", ())]
        if missing:
            explain = getattr(self.system, "missing_reason", None)
            reason = (
                explain(missing[0]) if explain else kernel_error(self.system, self.loss, missing[0])
            )
            raise UnsupportedFunctionError(
                f"{what} needs the kernel {missing[0]!r}, which cannot be compiled for this "
                f"system: {reason}"
            )

    def dispatcher(self, name: str, method: _Method, mode: str | None = None, dtype=np.float64):
        """The numba dispatcher behind an entry point (for introspection: signatures,
        the module it was compiled in)."""
        return _bound(self.entry(name, method, mode, dtype)).func

    @property
    def kernels(self):
        """The generated ``_dynamics`` module: ``rhs``, ``vjp``, ``jvp``, ``jac``, ...."""
        return self.module("_dynamics")

    # -- what the engine takes, checked and converted ---------------------------------
    def inputs(self, y0, params, dtype, batch: int | None = None):
        n, n_p = self.system.n_states, self.system.n_params
        if isinstance(y0, Mapping):
            y0 = _from_mapping(y0, self.system.states, "y0")
        if isinstance(params, Mapping):
            params = _from_mapping(params, self.system.params, "params")
        y0 = _as_float_array(y0, "y0", dtype, copy=False)
        # params in the states' dtype: float32 end to end when asked (an MLP's weights)
        params = _as_float_array(params if params is not None else [], "params", dtype, copy=False)
        if y0.ndim not in (1, 2) or y0.shape[-1] != n:
            raise ShapeError(f"y0 must have shape ({n},) or (B, {n}); got {y0.shape}")
        if params.ndim not in (1, 2) or params.shape[-1] != n_p:
            if not (n_p == 0 and params.size == 0):
                raise ShapeError(
                    f"params must have shape ({n_p},) or (B, {n_p}); got {params.shape}"
                )
            params = params.reshape(-1, 0) if params.ndim == 2 else np.zeros(0)
        batched = y0.ndim == 2 or params.ndim == 2 or batch is not None
        if batched:
            B = y0.shape[0] if y0.ndim == 2 else params.shape[0] if params.ndim == 2 else batch
            if batch is not None and B != batch:
                raise ShapeError(
                    f"t_eval has {batch} rows (one per trajectory) but the batch of y0/params "
                    f"has {B}"
                )
            if y0.ndim == 2 and params.ndim == 2 and y0.shape[0] != params.shape[0]:
                raise ShapeError(
                    f"batched y0 {y0.shape} and params {params.shape} disagree on the batch size"
                )
            # copies: writable and C-contiguous, so every batch shares one compiled kernel
            y0 = np.broadcast_to(y0, (B, n)).copy()
            params = np.broadcast_to(params, (B, n_p)).copy()
        return y0, params, batched

    @staticmethod
    def times(t_eval, t_span):
        t_eval = _as_float_array(t_eval, "t_eval", np.float64, copy=False, finite=False)
        if t_eval.ndim != 1:
            raise ShapeError(
                f"t_eval must be 1-D (or (B, T) for a batch of irregular series), got shape "
                f"{t_eval.shape}"
            )
        if t_eval.size and not (math.isfinite(t_eval[0]) and math.isfinite(t_eval[-1])):
            raise NonFiniteInputError("t_eval contains NaN or infinity")
        if t_span is None:
            if t_eval.size < 2:
                raise ShapeError("t_eval needs at least two times (or pass t_span=(t0, t1))")
            t0, t1 = float(t_eval[0]), float(t_eval[-1])
        else:
            t0, t1 = (float(v) for v in _as_float_array(t_span, "t_span", np.float64))
        if t0 == t1:
            raise ShapeError("the integration interval is empty (t0 == t1)")
        direction = 1.0 if t1 > t0 else -1.0
        # strict monotonicity (and with it finiteness between the finite ends) is
        # checked by the engine, which reports Status.BAD_T_EVAL: see _t_eval_error
        if t_eval.size and ((t_eval[0] - t0) * direction < 0 or (t_eval[-1] - t1) * direction > 0):
            raise ShapeError(f"t_eval must lie inside t_span [{t0}, {t1}]")
        return t_eval, t0, t1

    def batch_times(self, t_eval, t_span, B: int, method: _Method, dt, grid):
        """An ensemble's spans and output times: a shared 1-D ``t_eval``, or a padded
        (B, T) one, row i holding trajectory i's own strictly monotone times, then NaN.
        Each row is checked as a solve's t_eval is; each trajectory runs from its first
        time (or t_span[0]) to its last (or t_span[1]). Returns (rows: (1, T) or (B, T),
        NT: the rows' lengths, T0, T1: (B,) spans, the fixed-step grid or an empty one)."""
        if np.ndim(t_eval) != 2:
            t_eval, t0, t1 = self.times(t_eval, t_span)
            g = self.grid(method, t0, t1, dt, grid)
            return t_eval[None], np.array([t_eval.size]), np.full(B, t0), np.full(B, t1), g
        rows = _as_float_array(t_eval, "t_eval", np.float64, finite=False)
        if rows.shape[0] != B:
            raise ShapeError(
                f"t_eval of shape {rows.shape} has one row per trajectory: {B} expected"
            )
        if not (method.adaptive and dt is None and grid is None):
            raise ValueError(
                "a padded t_eval (B, T) gives every trajectory its own span: use an adaptive "
                "method without dt=/grid=, or one shared 1-D t_eval"
            )
        nt = np.zeros(B, np.int64)
        T0, T1 = np.empty(B), np.empty(B)
        for i, row in enumerate(rows):
            finite = np.isfinite(row)
            nt[i] = m = int(np.argmin(finite)) if not finite.all() else row.size
            if np.isinf(row[: m + 1]).any() or finite[m:].any():
                raise ShapeError(
                    f"t_eval row {i}: each row holds its times, then NaN padding only "
                    f"(row {i} is {row.tolist()[:8]}…)"
                )
            try:
                _, T0[i], T1[i] = self.times(row[:m], t_span)
            except ShapeError as err:
                raise ShapeError(f"t_eval row {i}: {err}") from None
        return rows, nt, T0, T1, _NO_GRID

    @staticmethod
    def grid(method: _Method, t0, t1, dt, grid):
        """The fixed step times, or an empty grid: adaptive steps. An adaptive method
        given ``dt`` or ``grid`` takes those steps without error control."""
        if method.adaptive and dt is None and grid is None:
            return _NO_GRID
        if grid is not None:
            g = _as_float_array(grid, "grid", np.float64)
            if g.ndim != 1 or g.size < 2 or g[0] != t0 or g[-1] != t1:
                raise ShapeError(f"grid must be 1-D, start at t0={t0} and end at t1={t1}")
            if np.any(np.diff(g) * np.sign(t1 - t0) <= 0):
                raise ShapeError("grid must be strictly monotone in the direction of integration")
            return g
        if dt is None or not dt > 0 or not math.isfinite(dt):
            raise ValueError(
                f"fixed-step method {method.tableau.name!r} needs a positive step dt= (or grid=)"
            )
        steps = max(1, math.ceil(abs(t1 - t0) / dt * (1 - 1e-12)))
        g = t0 + np.sign(t1 - t0) * dt * np.arange(steps + 1)
        g[-1] = t1
        return g

    def options(self, method: _Method, nz, dtype, rtol, atol, max_steps, dt_min, h0, beta, nerr):
        """(iopt, fopt, atol) arrays for the engine, which never writes them: with a
        scalar atol they come from a cache (building and checking them cost a quarter of
        a small solve's time)."""
        if type(atol) in (float, int) and type(rtol) in (float, int):
            return _scalar_options(method, nz, rtol, atol, max_steps, dt_min, h0, beta, nerr)
        return _build_options(method, nz, rtol, atol, max_steps, dt_min, h0, beta, nerr, self)


class Model:
    """An :class:`ODESystem` compiled to numba kernels plus the integration engine.

    Use :meth:`ODESystem.compile` to make one. ``model.source`` is the generated
    module's text; ``model.path`` the cache directory it lives in.
    """

    def __init__(
        self,
        system: ODESystem,
        source: str,
        package,
        path,
        loss: Loss | None,
        specialized: bool = False,
        verbose: bool = True,
    ):
        self.system = system
        self.verbose = verbose
        self.source = source
        self.path = path
        self.loss = loss
        self.specialized = specialized
        self.engine = ModelEngine(system, loss, package, path, specialized, verbose)

    def __repr__(self) -> str:
        tier = ", specialize=True" if self.specialized else ""
        return f"Model({self.system!r}, backend='numba'{tier}, path='{self.path}')"

    # -- pickling: a model travels as its definition and cache key ------------------------
    _recipe: tuple | None = None  # (builder, args) that made it: set by the compilers

    def __reduce__(self):
        """A model pickles as its cache key and the pickled recipe that made it (the
        symbolic definition, loss and options), not its compiled code: unpickled in
        another process (a Dask worker) it is loaded from that machine's cache, or
        generated and compiled there, once per process (``rebuild_model``)."""
        if self._recipe is None:
            raise TypeError("this Model was not made by a symode compiler and cannot be pickled")
        return rebuild_model, (Path(self.path).name, pickle.dumps(self._recipe))

    @property
    def kernels(self):
        """The generated ``_dynamics`` module: ``rhs``, ``vjp``, ``jvp``, ``jac``, ...."""
        return self.engine.kernels

    # -- solving ------------------------------------------------------------------------
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
    ) -> Solution:
        """Integrate from ``t_eval[0]`` (or ``t_span[0]``) and report y at ``t_eval``.

        Parameters
        ----------
        y0 : (n,) or (B, n) array
            Initial state; a batch solves B independent trajectories in parallel.
        t_eval : (T,) array, or (B, T) for a batch of irregular series
            Output times, strictly monotone; integration runs from the first to the
            last unless ``t_span`` is given. Backward in time when decreasing. A padded
            (B, T) array gives trajectory i its own times: row i, then NaN after its
            last (adaptive methods; ``y`` is NaN-padded the same way).
        params : (p,) or (B, p) array
        method : str
            "euler", "midpoint", "heun", "rk4" (fixed step: give ``dt`` or ``grid``),
            "bosh3", "dopri5", "tsit5", "dopri8" (adaptive: ``rtol``, ``atol``; given
            ``dt`` or ``grid`` they take those fixed steps, without error control).
        rtol, atol : float, atol may be per component (n,)
            Error per step ≤ atol + rtol·|y| in the RMS norm (HNW I, II.4).
        dt, grid : fixed-step size, or the exact step times
        dense : bool
            Also return ``Solution.sol``, a callable interpolant over the whole span.
        max_steps, dt_min, h0, beta :
            Step limit, smallest step, first step (default: Hairer's estimate), and
            the PI controller's β (0 gives the I controller of scipy's RK45).
        throw : bool
            Raise :class:`IntegrationError` when a trajectory fails (the partial
            :class:`Solution` is attached as ``err.solution``); otherwise report the
            failure in ``status``/``message``.
        dtype : float64 (default) or float32

        Returns
        -------
        Solution
            ``y`` is (T, n), or (B, T, n) for a batch; unreached outputs of a failed
            trajectory are NaN and its status says where it stopped.

        Examples
        --------
        >>> sol = model.solve([1.0, 1.0], np.linspace(0, 10, 101), [1.5, 1, 3, 1])  # doctest: +SKIP
        """
        dtype = np.dtype(dtype)
        if dtype not in _DTYPES:
            raise TypeError(f"dtype must be float64 or float32, got {dtype}")
        if method in IMPLICIT_METHODS:
            return self._solve_implicit(
                y0, t_eval, params, method, rtol, atol, t_span, dense, max_steps, h0, throw,
                dtype, dt, grid,
            )  # fmt: skip
        m = _method(method)
        padded = np.ndim(t_eval) == 2
        y0, params, batched = self.engine.inputs(
            y0, params, dtype, np.shape(t_eval)[0] if padded else None
        )
        if batched:
            rows, NT, T0, T1, g = self.engine.batch_times(t_eval, t_span, y0.shape[0], m, dt, grid)
            t_eval = rows if padded else rows[0]
        else:
            t_eval, t0, t1 = self.engine.times(t_eval, t_span)
            g = self.engine.grid(m, t0, t1, dt, grid)
        n = self.system.n_states
        iopt, fopt, atol_a = self.engine.options(
            m, n, dtype, rtol, atol, max_steps, dt_min, h0, beta, n
        )
        T = t_eval.shape[-1]
        if batched:
            if dense:
                raise ValueError("dense=True is available for single trajectories only")
            B = y0.shape[0]
            Y = np.full((B, T, n), np.nan, dtype)
            stats = np.zeros((B, 5), np.int64)
            fstats = np.zeros((B, 3))
            self.engine.entry("solve_ensemble", m, None, dtype)(
                T0, T1, y0, params, iopt, fopt, atol_a, g, rows, NT, Y, stats, fstats
            )
            codes = stats[:, 0].copy()
            if (codes == BAD_T_EVAL_CODE).any():
                bad = int(np.flatnonzero(codes == BAD_T_EVAL_CODE)[0])
                raise t_eval_error(rows[bad if padded else 0, : NT[bad if padded else 0]])
            msgs = _messages(stats, fstats)
            failed = tuple(int(i) for i in np.flatnonzero(codes))
            st = {"nfev": stats[:, 1], "naccept": stats[:, 2], "nreject": stats[:, 3]}
            sol = Solution(t_eval.copy(), Y, st, codes, msgs, None, failed)
        else:
            Y = np.empty((T, n), dtype)
            stats = np.zeros(5, np.int64)
            fstats = np.zeros(3)
            kernel = self.engine.entry("solve_dense" if dense else "solve_forward", m, None, dtype)
            rec = kernel(t0, t1, y0, params, iopt, fopt, atol_a, g, t_eval, Y, stats, fstats)
            code, nfev, naccept, nreject, nout = stats.tolist()
            if code == BAD_T_EVAL_CODE:
                raise t_eval_error(t_eval)
            if nout < T:
                Y[nout:] = np.nan  # the outputs a failed solve did not reach
            code = Status(code)
            msg = _SUCCESS_MESSAGE if not code else code.describe(fstats[0], fstats[1])
            st = {"nfev": nfev, "naccept": naccept, "nreject": nreject}
            interp = None
            if dense:
                interp = DenseSolution(self, m, params, rec, t0, t1)
            sol = Solution(t_eval.copy(), Y, st, code, msg, interp, (0,) if code else ())
        return _checked(sol, batched, throw)

    def _solve_implicit(
        self, y0, t_eval, params, method, rtol, atol, t_span, dense, max_steps, h0, throw,
        dtype, dt, grid,
    ):  # fmt: skip
        """``solve`` through scipy's Radau, BDF or LSODA (symode/stiff.py)."""
        if dtype != np.float64:
            raise TypeError(
                f"method={method!r} runs scipy's solver, in float64 only: pass dtype=float64"
            )
        if dt is not None or grid is not None:
            raise ValueError(f"method={method!r} chooses its own steps: drop dt= and grid=")
        if not (isinstance(max_steps, (int, np.integer)) and max_steps > 0):
            raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
        y0, params, batched = self.engine.inputs(y0, params, np.float64)
        t_eval, t0, t1 = self.engine.times(t_eval, t_span)
        if t_eval.size > 1 and np.any(np.diff(t_eval) * np.sign(t1 - t0) <= 0):
            raise t_eval_error(t_eval)
        n = self.system.n_states
        atol_a = np.broadcast_to(np.asarray(atol, np.float64), (n,)).copy()
        if batched and dense:
            raise ValueError("dense=True is available for single trajectories only")
        Y0 = y0 if batched else y0[None]
        P = params if batched else params[None]
        results = [
            solve_implicit(
                self, method, Y0[i], t_eval, t0, t1, P[i], rtol, atol_a, max_steps, h0, dense
            )
            for i in range(Y0.shape[0])
        ]  # one trajectory after another: scipy's solvers are sequential
        msgs = [
            _SUCCESS_MESSAGE if not code else code.describe(t, h) for _, _, code, t, h, _ in results
        ]
        if batched:
            codes = np.array([int(r[2]) for r in results])
            keys = results[0][1].keys()
            st = {k: np.array([r[1][k] for r in results]) for k in keys}
            failed = tuple(int(i) for i in np.flatnonzero(codes))
            sol = Solution(
                t_eval.copy(), np.stack([r[0] for r in results]), st, codes, msgs, None, failed
            )
        else:
            Y, st, code, _, _, interp = results[0]
            sol = Solution(t_eval.copy(), Y, st, code, msgs[0], interp, (0,) if code else ())
        return _checked(sol, batched, throw)

    def vjp(self, y0, t_eval, params=None, cotangent=None, *, adjoint="checkpoint", **options):
        """Gradients of ``L`` w.r.t. y0 and params, given ``cotangent[i] = ∂L/∂y(t_eval[i])``.

        Parameters
        ----------
        y0, t_eval, params : as in :meth:`solve` (batches give one gradient each)
        cotangent : (T, n) or (B, T, n) array
        adjoint : {"checkpoint", "backsolve", "discrete", "forward"}
            See :mod:`symode.gradients`. "checkpoint" (default) is the safe choice;
            "backsolve" (Chen et al. 2018) is O(1) in memory but unstable on
            dissipative problems; "discrete" is the exact gradient of the computed
            solution (equal to finite differences of the solver); "forward" uses
            forward sensitivities (cheap when n + p is small).
        options : method, rtol, atol, dt, grid, t_span, max_steps, h0, dtype, throw,
            adjoint_rtol, adjoint_atol (default: the forward ones), seminorm (default
            True: the μ channels are left out of backward step control, Kidger et al.
            2021), checkpoints (default None: the forward pass records every step's
            stages, memory O(steps); an int K ≥ 2 keeps at most K snapshots of the step
            loop and replays one segment at a time, memory O(K + steps/K)).

        Returns
        -------
        Gradient
            ``.y0``, ``.params`` and forward/backward ``.stats``.
        """
        if cotangent is None:
            raise ValueError("vjp needs cotangent= (∂L/∂y at each output time)")
        return compute_gradient(self, y0, t_eval, params, cotangent, adjoint=adjoint, **options)

    def gradient(self, y0, t_eval, params=None, data=None, *, adjoint="checkpoint", **options):
        """The compiled symbolic loss, its gradients and the solver's counts, as one
        :class:`~symode.gradients.Gradient` (``.value``, ``.params``, ``.y0``, ``.y``,
        ``.stats``): :meth:`value_and_grad` without the shaping for scipy. Arguments as
        there."""
        return compute_gradient(self, y0, t_eval, params, None, data, adjoint=adjoint, **options)

    def value_and_grad(
        self,
        y0,
        t_eval,
        params=None,
        data=None,
        *,
        wrt=("params",),
        adjoint="checkpoint",
        **options,
    ):
        """The compiled symbolic loss and its gradient, shaped for scipy.optimize.

        ``model = system.compile(loss=symode.Loss(...))``; then
        ``scipy.optimize.minimize(lambda th: model.value_and_grad(y0, ts, th, data), th0,
        jac=True)``.

        Parameters
        ----------
        data : (T, d) array of the loss's data placeholders at each output time
        wrt : tuple of "params" and/or "y0": which gradients, concatenated in order

        Returns
        -------
        (value, gradient) : (float, 1-D array)
        """
        for w in wrt:
            if w not in ("params", "y0"):
                raise ValueError(f"wrt entries must be 'params' or 'y0', got {w!r}")
        g = compute_gradient(self, y0, t_eval, params, None, data, adjoint=adjoint, **options)
        if len(wrt) == 1:
            return g.value, g.params if wrt[0] == "params" else g.y0
        base = g.params.base
        if tuple(wrt) == ("params", "y0") and base is not None and base is g.y0.base:
            # one trajectory: compute_gradient laid them out [∂L/∂θ, ∂L/∂y0, L]
            return g.value, base[: g.params.size + g.y0.size]
        return g.value, np.concatenate([g.params if w == "params" else g.y0 for w in wrt], -1)


class DenseSolution:
    """The continuous solution of one trajectory: ``sol(t)`` for any t in the span.

    It keeps the state at the start of every accepted step and recomputes that step's
    stages on demand, so its memory is O(steps · n).
    """

    def __init__(self, model: Model, method: _Method, params, rec, t0, t1):
        self._model, self._method, self._params = model, method, params
        self.ts, self._h, self._z = rec
        # the span actually covered: a failed solve's interpolant never extrapolates
        self.t0, self.t1 = t0, float(self.ts[-1])

    def __call__(self, t):
        t = np.asarray(t, dtype=np.float64)
        flat = np.atleast_1d(t).ravel()
        lo, hi = min(self.t0, self.t1), max(self.t0, self.t1)
        if self._h.size == 0 or ((flat < lo) | (flat > hi)).any() or not np.isfinite(flat).all():
            covered = "no step" if self._h.size == 0 else f"[{lo}, {hi}] only"
            raise ValueError(f"the dense solution covers {covered}")
        out = np.empty((flat.size, self._z.shape[1]), self._z.dtype)
        self._model.engine.entry("dense_query", self._method, None, self._z.dtype)(
            flat, self.ts, self._h, self._z, self._params, out
        )
        return out.reshape(t.shape + (out.shape[1],))


# models rebuilt from a pickle in this process, by cache key (a worker's tasks share one)
_REBUILT: dict = {}


def rebuild_model(key: str, recipe: bytes) -> Model:
    """The model of cache key ``key`` in this process: made once from its pickled recipe
    (``Model.__reduce__``), then reused by every later unpickling."""
    model = _REBUILT.get(key)
    if model is None:
        builder, args = pickle.loads(recipe)
        model = _REBUILT[key] = builder(*args)
    return model


def compile_system(
    system: ODESystem,
    backend="numba",
    loss: Loss | None = None,
    cache_dir=None,
    specialize: bool = False,
    verbose: bool = True,
):
    """Generate, cache and load the kernels of ``system`` (see :meth:`ODESystem.compile`)."""
    if backend == "cuda":
        from .cuda import compile_cuda

        return compile_cuda(system, loss, cache_dir, specialize, verbose)
    if backend != "numba":
        raise ValueError(f"backend must be 'numba' or 'cuda', got {backend!r}")
    canonical = system._canonical() + ("" if loss is None else sp.srepr(loss.__dict__))
    pkg, path, source = load_generated(
        lambda: generate_numba_source(system, loss), canonical, backend, cache_dir, specialize
    )
    model = Model(system, source, pkg, path, loss, specialize, verbose)
    model._recipe = (compile_system, (system, backend, loss, cache_dir, specialize, verbose))
    return model
