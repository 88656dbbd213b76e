"""Gradients through a solve: ``Model.vjp`` and ``Model.value_and_grad``.

Four ways to the same gradient (kernels/adjoint.py):

=============  =====================================================  ===================
``adjoint``    what it computes                                       memory
=============  =====================================================  ===================
"checkpoint"   continuous adjoint, y from checkpoints + dense output  O(steps), or
                                                                      O(K + steps/K)
"backsolve"    continuous adjoint, y re-solved backwards (Chen 2018)  O(1) in steps
"discrete"     exact gradient of the discrete solver (RK stages)      O(steps), or
                                                                      O(K + steps/K)
"forward"      forward sensitivities S' = J S + ∂f/∂θ                 O(n (n + p))
=============  =====================================================  ===================

Backsolve is cheapest in memory but is *not recommended* on dissipative problems:
integrating a contracting system backwards amplifies error (see the tests).

``checkpoints=None`` (default): the forward pass records every accepted step's state and
stages, O(steps · stages · n) memory and no recomputation. ``checkpoints=K``: the forward
pass keeps at most K snapshots of the step loop (state, first stage, t, step size and
the controller's memory), thinned as it goes; the backward pass replays one segment at
a time, bit for bit the forward steps, so memory is O(K + steps/K) and the cost is one
more forward pass.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from . import codegen
from .errors import BAD_T_EVAL_CODE, IntegrationError, ShapeError, Status, t_eval_error
from .stiff import IMPLICIT_METHODS

__all__ = ["Gradient", "compute_gradient", "ADJOINT_MODES"]

# the adjoint modes (kernels/adjoint.py: one entry point gradient_<mode> each)
ADJOINT_MODES = codegen.ADJOINT_MODES


@dataclass
class Gradient:
    """Gradients of a loss through one solve (or one per trajectory of an ensemble).

    Attributes
    ----------
    y0 : (n,) or (B, n)      ∂L/∂y0
    params : (p,) or (B, p)  ∂L/∂θ
    t : (T,) or (B, T)       ∂L/∂t_eval (raw cotangents, shared t_eval; else None): moving output
                             time i > 0 gives cotᵢ·f(tᵢ, yᵢ); moving t_eval[0] = t0 (the
                             start, y0 held) gives −λ(t0⁺)·f(t0, y0)
    value : float or (B,)    the loss: the compiled symbolic loss's value, or None with
                             raw cotangents (the loss is yours)
    y : (T, n) or (B, T, n)  the forward solution at t_eval
    stats : dict             forward and backward nfev / naccept / nreject
    status, message          as in :class:`Solution`
    """

    y0: np.ndarray
    params: np.ndarray
    value: object
    stats: dict
    status: object
    message: object
    failed: tuple = ()
    y: np.ndarray | None = None
    _time_grad: object = None  # computed on first access of .t (T evaluations of f)

    @property
    def t(self) -> np.ndarray | None:
        if callable(self._time_grad):
            self._time_grad = self._time_grad()
        return self._time_grad

    @property
    def success(self) -> bool:
        return not self.failed


# an entry point's float outputs (kernels/adjoint.py, O_*): the loss, then where the
# forward and the backward pass stopped (t, the failed step's size, the next one's)
O_VALUE, O_FORWARD, O_BACKWARD, N_FOUT = 0, 1, 4, 7


@functools.lru_cache(maxsize=64)
def _filled(size: int, value: float) -> np.ndarray:
    """A constant array the engine only reads (the backward atol), made once."""
    return np.full(size, value)


@functools.lru_cache(maxsize=64)
def _zeros(shape: tuple) -> np.ndarray:
    """Zeros the engine only reads (the cotangents and data it does not use when a
    compiled loss gives them), made once per shape. Not flagged read-only: numba would
    type (and compile) the entry again for a read-only array."""
    return np.zeros(shape)


_STATUS = {int(s): s for s in Status}


def _message(code: int, forward_code: int, fout) -> str:
    """A gradient's status message: a solve's (``Status.describe``, naming t and the
    step size), and which pass failed."""
    if not code:
        return "success"
    where = O_FORWARD if forward_code else O_BACKWARD
    text = Status(code).describe(float(fout[where]), float(fout[where + 1]))
    return ("forward pass: " if forward_code else "backward pass: ") + text


def _time_gradients(model, t_eval, t0, y0, params, cot, GY0, Y_OUT, batched):
    """∂L/∂t_eval for raw cotangents (see Gradient.t), from the forward outputs."""
    rhs = model.kernels.rhs
    B, T, n = Y_OUT.shape
    P = params if batched else params[None]
    Y0 = y0 if batched else y0[None]
    GT = np.zeros((B, T))
    f = np.empty(n)
    for bi in range(B):
        for i in range(T):
            if i == 0 and t_eval[0] == t0:
                rhs(t0, Y0[bi].astype(np.float64), P[bi], f)
                GT[bi, 0] = -np.dot(GY0[bi] - cot[bi, 0], f)
            else:
                rhs(t_eval[i], Y_OUT[bi, i].astype(np.float64), P[bi], f)
                GT[bi, i] = np.dot(cot[bi, i], f)
    return GT


def compute_gradient(
    model,
    y0,
    t_eval,
    params,
    cotangent=None,
    data=None,
    *,
    adjoint: str = "checkpoint",
    method: str = "dopri5",
    rtol: float = 1e-6,
    atol=1e-9,
    adjoint_rtol: float | None = None,
    adjoint_atol: float | None = None,
    seminorm: bool = True,
    checkpoints: int | None = None,
    dt: float | None = None,
    grid=None,
    t_span=None,
    max_steps: int = 100_000,
    h0: float | None = None,
    dtype=np.float64,
    throw: bool = True,
) -> Gradient:
    """Shared implementation of :meth:`Model.vjp` and :meth:`Model.value_and_grad`."""
    if adjoint not in ADJOINT_MODES:
        raise ValueError(f"adjoint must be one of {sorted(ADJOINT_MODES)}, got {adjoint!r}")
    if checkpoints is not None and (
        not isinstance(checkpoints, (int, np.integer)) or checkpoints < 2
    ):
        raise ValueError(
            f"checkpoints must be an int >= 2 (or None: keep every step), got {checkpoints!r}"
        )
    if method in IMPLICIT_METHODS:
        from .tableaus import TABLEAUS

        raise ValueError(
            f"gradients are not available with method={method!r} (scipy's implicit solver, "
            f"solve only); use one of symode's methods: {', '.join(TABLEAUS)}"
        )
    dtype = np.dtype(dtype)
    system = model.system
    n, n_p = system.n_states, system.n_params
    m = model.engine.method(method)
    padded = np.ndim(t_eval) == 2
    y0, params, batched = model.engine.inputs(
        y0, params, dtype, np.shape(t_eval)[0] if padded else None
    )
    if batched:
        rows, NT, T0, T1, g = model.engine.batch_times(t_eval, t_span, y0.shape[0], m, dt, grid)
        t_eval, t0, t1 = (rows, None, None) if padded else (rows[0], T0[0], T1[0])
    else:
        t_eval, t0, t1 = model.engine.times(t_eval, t_span)
        g = model.engine.grid(m, t0, t1, dt, grid)
    T = t_eval.shape[-1]
    B = y0.shape[0] if batched else 1
    # a padded batch: where each trajectory's times end (its cotangent and data after
    # that are padding, never read)
    valid = (np.arange(T) < NT[:, None]) if padded else None
    use_loss = cotangent is None
    lead = (B,) if batched else ()  # the engine takes (T, ·) for one trajectory
    if use_loss:
        if model.loss is None:
            raise ValueError(
                "value_and_grad needs a symbolic loss: compile the system with "
                "loss=symode.Loss(...), or call model.vjp(y0, t_eval, params, cotangent=...) "
                "with ∂L/∂y at each output time"
            )
        nd = len(model.loss.data)
        if nd:
            if data is None:
                raise ShapeError(
                    f"the loss has {nd} data placeholders: pass data of shape ({T}, {nd})"
                )
            data_a = np.asarray(data, np.float64)
            if data_a.shape not in ((T, nd), (B, T, nd)) or (data_a.ndim == 3 and not batched):
                raise ShapeError(
                    f"data must have shape ({T}, {nd}) or (B, {T}, {nd}); got {data_a.shape}"
                )
        else:
            data_a = _zeros((T, 0))
        if model.engine.running_cost and not padded and t_eval[-1] != t1:
            raise ValueError("a running cost needs the last output time to be the end of the span")
        cot = _zeros(lead + (T, n))  # not read: the loss gives the cotangents
    else:
        cot = np.asarray(cotangent, np.float64)
        if cot.shape not in ((T, n), (B, T, n)) or (cot.ndim == 3 and not batched):
            raise ShapeError(
                f"cotangent must have shape ({T}, {n}) or (B, {T}, {n}); got {cot.shape}"
            )
        data_a = _zeros((T, 0))
    if batched:
        cot = np.broadcast_to(cot, (B, T, n)).copy()
        data_a = np.broadcast_to(data_a, (B, T, data_a.shape[-1])).copy()
    else:
        cot = np.ascontiguousarray(cot)
        data_a = np.ascontiguousarray(data_a)
    # the engine is compiled for writable arrays (it never writes these)
    cot = cot if cot.flags.writeable else cot.copy()
    data_a = data_a if data_a.flags.writeable else data_a.copy()
    if padded:  # NaN padding in the caller's arrays: zeros for the engine (never read)
        cot = np.where(valid[:, :, None], cot, 0.0)
        data_a = np.where(valid[:, :, None], data_a, 0.0)
    # the caller's arrays only (the zeros above need no check: it costs µs)
    if (not use_loss and not np.isfinite(cot).all()) or (
        data_a.size and not np.isfinite(data_a).all()
    ):
        raise ValueError("cotangent/data contain NaN or infinity")

    nz_f = n + (1 if model.engine.running_cost else 0)
    if adjoint == "forward":  # z = [y, S, r]
        nz_f = n + (n_p + n) * n + (n_p + n)
    iopt, fopt, atol_f = model.engine.options(
        m, nz_f, dtype, rtol, atol, max_steps, 0.0, h0, None, nz_f
    )
    nz_b = (2 * n + n_p) if adjoint == "backsolve" else (n + n_p)  # [y, λ, μ] or [λ, μ]
    # the seminorm (Kidger, Chen & Lyons 2021): the μ channels out of step-size control
    nerr_b = ({"backsolve": 2 * n, "checkpoint": n}.get(adjoint, nz_b)) if seminorm else nz_b
    b_rtol = rtol if adjoint_rtol is None else adjoint_rtol
    if adjoint_atol is not None:
        b_atol = adjoint_atol
    elif type(atol) in (float, int):
        b_atol = atol
    else:
        b_atol = float(atol_f[:n].min())
    biopt, bfopt, _ = model.engine.options(
        m, nz_b, dtype, b_rtol, b_atol, max_steps, 0.0, None, None, nerr_b
    )
    if adjoint == "backsolve":  # backsolve's y channels keep the forward atol
        batol = np.full(nz_b, float(b_atol))
        batol[:n] = atol_f[:n]
    else:
        batol = _filled(nz_b, float(b_atol))
    # None: one segment, every step's stages recorded on the forward pass;
    # K: at most K snapshots, the backward pass replaying one segment at a time
    max_ck = 1 if checkpoints is None else int(checkpoints)

    if batched:
        GY0 = np.zeros((B, n))
        GP = np.zeros((B, n_p))
        ST_F = np.zeros((B, 5), np.int64)
        ST_B = np.zeros((B, 5), np.int64)
        FOUT = np.zeros((B, N_FOUT))
    else:  # one allocation each for the floats and the counts (µs per call); the
        # gradients in value_and_grad's default order, [∂L/∂θ, ∂L/∂y0]: ``Gradient.flat``
        F = np.zeros(n_p + n + N_FOUT)
        GP, GY0, FOUT = F[:n_p], F[n_p : n_p + n], F[n_p + n :]
        ST = np.zeros(10, np.int64)
        ST_F, ST_B = ST[:5], ST[5:]
    # the engine reads the option arrays only (the cached ones stay intact)
    if batched:
        Y_OUT = np.full((B, T, n), np.nan, dtype)
        model.engine.entry("gradient_ensemble", m, adjoint, dtype)(
            T0, T1, y0, params, rows, NT, cot, data_a, use_loss, iopt, fopt, atol_f, g, biopt,
            bfopt, batol, max_ck, GY0, GP, ST_F, ST_B, FOUT, Y_OUT,
        )  # fmt: skip
    else:
        Y_OUT = np.empty((T, n), dtype)
        model.engine.entry("gradient", m, adjoint, dtype)(
            t0, t1, y0, params, t_eval, cot, data_a, use_loss, iopt, fopt, atol_f, g, biopt,
            bfopt, batol, max_ck, GY0, GP, ST_F, ST_B, FOUT, Y_OUT,
        )  # fmt: skip
    if batched:
        if (ST_F[:, 0] == BAD_T_EVAL_CODE).any():
            bad = int(np.flatnonzero(ST_F[:, 0] == BAD_T_EVAL_CODE)[0]) if padded else 0
            raise t_eval_error(rows[bad, : NT[bad]])
        ends = NT if padded else np.full(B, T)
        for bi in np.flatnonzero(ST_F[:, 4] < ends):
            Y_OUT[bi, ST_F[bi, 4] :] = np.nan  # outputs a failed forward pass did not reach
        codes = np.where(ST_F[:, 0] != 0, ST_F[:, 0], ST_B[:, 0])
        failed = tuple(int(i) for i in np.flatnonzero(codes))
        msgs = ["success"] * B  # a message of its own for each failed trajectory
        for i in failed:
            msgs[i] = _message(int(codes[i]), ST_F[i, 0], FOUT[i])
        stats = {
            "forward": {"nfev": ST_F[:, 1], "naccept": ST_F[:, 2], "nreject": ST_F[:, 3]},
            "backward": {"nfev": ST_B[:, 1], "naccept": ST_B[:, 2], "nreject": ST_B[:, 3]},
        }
        value, status, message = (FOUT[:, O_VALUE] if use_loss else None), codes, msgs
    else:
        st = ST.tolist()
        sf, sb = st[:5], st[5:]
        if sf[0] == BAD_T_EVAL_CODE:
            raise t_eval_error(t_eval)
        if sf[4] < T:
            Y_OUT[sf[4] :] = np.nan
        code = sf[0] or sb[0]
        failed = (0,) if code else ()
        stats = {
            "forward": {"nfev": sf[1], "naccept": sf[2], "nreject": sf[3]},
            "backward": {"nfev": sb[1], "naccept": sb[2], "nreject": sb[3]},
        }
        value = float(FOUT[O_VALUE]) if use_loss else None
        status, message = _STATUS[code], _message(code, sf[0], FOUT)

    def time_grad():
        if use_loss or padded:
            return None
        if batched:
            return _time_gradients(model, t_eval, t0, y0, params, cot, GY0, Y_OUT, True)
        return _time_gradients(
            model, t_eval, t0, y0, params, cot[None], GY0[None], Y_OUT[None], False
        )[0]

    out = Gradient(GY0, GP, value, stats, status, message, failed, Y_OUT, time_grad)
    if throw and failed:
        first = msgs[failed[0]] if batched else message
        err = IntegrationError(
            f"gradient failed for trajectories {list(failed)[:10]}: {first}", failed
        )
        err.gradient = out
        raise err
    return out
