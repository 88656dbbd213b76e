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

from dataclasses import dataclass

import numpy as np

from .errors import IntegrationError, ShapeError, Status

__all__ = ["Gradient", "compute_gradient", "ADJOINT_MODES"]

ADJOINT_MODES = {"backsolve": 0, "checkpoint": 1, "discrete": 2, "forward": 3}


@dataclass
class Gradient:
    """Gradients of a loss through one solve (or one per trajectory of an ensemble).

    Attributes
    ----------
    y0 : (n,) or (B, n)      ∂L/∂y0
    params : (p,) or (B, p)  ∂L/∂θ
    t : (T,) or (B, T)       ∂L/∂t_eval (raw cotangents only, else None): moving output
                             time i > 0 gives cotᵢ·f(tᵢ, yᵢ); moving t_eval[0] = t0 (the
                             start, y0 held) gives −λ(t0⁺)·f(t0, y0)
    value : float or (B,)    the loss (0 with raw cotangents: the loss is yours)
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


_SHORT = {
    0: "success",
    1: "max_steps reached (increase max_steps or loosen the tolerances)",
    2: "step size underflow (a singularity, or a stiff problem)",
    3: "non-finite state (NaN or inf) in the dynamics",
}


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
    from .model import _method

    if adjoint not in ADJOINT_MODES:
        raise ValueError(f"adjoint must be one of {sorted(ADJOINT_MODES)}, got {adjoint!r}")
    if checkpoints is not None and (
        not isinstance(checkpoints, (int, np.integer)) or checkpoints < 2
    ):
        raise ValueError(
            f"checkpoints must be an int >= 2 (or None: keep every step), got {checkpoints!r}"
        )
    dtype = np.dtype(dtype)
    mode = ADJOINT_MODES[adjoint]
    system = model.system
    n, n_p = system.n_states, system.n_params
    m = _method(method)
    y0, params, batched = model._inputs(y0, params, dtype)
    t_eval, t0, t1 = model._times(t_eval, t_span)
    g = model._grid(m, t0, t1, dt, grid)
    T = t_eval.size
    B = y0.shape[0] if batched else 1
    use_loss = cotangent is None
    if use_loss:
        if model.loss is None:
            raise ValueError("pass cotangent=, or compile the system with loss=symode.Loss(...)")
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
            data_a = np.zeros((T, 0))
        if model.loss.running != 0 and t_eval[-1] != t1:
            raise ValueError("a running cost needs the last output time to be the end of the span")
        cot = np.zeros((B, T, n))
    else:
        cot = np.asarray(cotangent, np.float64)
        if cot.shape not in ((T, n), (B, T, n)) or (cot.ndim == 3 and not batched):
            raise ShapeError(
                f"cotangent must have shape ({T}, {n}) or (B, {T}, {n}); got {cot.shape}"
            )
        data_a = np.zeros((T, 0))
    cot = np.broadcast_to(cot, (B, T, n)).copy()
    data_a = np.broadcast_to(data_a, (B, T, data_a.shape[-1])).copy()
    if not np.all(np.isfinite(cot)) or not np.all(np.isfinite(data_a)):
        raise ValueError("cotangent/data contain NaN or infinity")

    nz_f = n + (1 if model.loss is not None and model.loss.running != 0 else 0)
    if mode == 3:
        nz_f = n + (n_p + n) * n + (n_p + n)
    iopt, fopt, atol_f = model._options(m, nz_f, dtype, rtol, atol, max_steps, 0.0, h0, None, nz_f)
    nz_b = (2 * n + n_p) if mode == 0 else (n + n_p)
    nerr_b = ({0: 2 * n, 1: n}.get(mode, nz_b)) if seminorm else nz_b
    b_rtol = rtol if adjoint_rtol is None else adjoint_rtol
    b_atol = np.min(atol_f[:n]) if adjoint_atol is None else adjoint_atol
    biopt, bfopt, _ = model._options(
        m, nz_b, dtype, b_rtol, b_atol, max_steps, 0.0, None, None, nerr_b
    )
    batol = np.full(nz_b, float(b_atol))
    if mode == 0:
        batol[:n] = atol_f[:n]
    # None: one segment, every step's stages recorded on the forward pass;
    # K: at most K snapshots, the backward pass replaying one segment at a time
    max_ck = 1 if checkpoints is None else int(checkpoints)

    GY0 = np.zeros((B, n))
    GP = np.zeros((B, n_p))
    ST_F = np.zeros((B, 5), np.int64)
    ST_B = np.zeros((B, 5), np.int64)
    VALUE = np.zeros((B, 1))
    Y_OUT = np.full((B, T, n), np.nan, dtype)
    entries = model._module("_entries")
    if batched:
        getattr(entries, f"gradient_ensemble_{m.id}")(
            mode, t0, t1, y0, params, t_eval, cot, data_a, use_loss, iopt, fopt, atol_f, g,
            biopt, bfopt, batol, max_ck, GY0, GP, ST_F, ST_B, VALUE, Y_OUT,
        )  # fmt: skip
    else:
        getattr(entries, f"gradient_{m.id}")(
            mode, t0, t1, y0, params, t_eval, cot[0], data_a[0], use_loss, iopt, fopt, atol_f,
            g, biopt, bfopt.copy(), batol, max_ck, GY0[0], GP[0], ST_F[0], ST_B[0], VALUE[0],
            Y_OUT[0],
        )  # fmt: skip
    codes = np.where(ST_F[:, 0] != 0, ST_F[:, 0], ST_B[:, 0])
    msgs = [
        ("forward pass: " if sf[0] else "backward pass: " if sb[0] else "") + _SHORT[int(code)]
        for code, sf, sb in zip(codes, ST_F, ST_B)
    ]
    failed = tuple(int(i) for i in np.flatnonzero(codes))
    pick = (lambda a: a) if batched else (lambda a: a[0])
    stats = {
        "forward": {
            "nfev": pick(ST_F[:, 1]),
            "naccept": pick(ST_F[:, 2]),
            "nreject": pick(ST_F[:, 3]),
        },
        "backward": {
            "nfev": pick(ST_B[:, 1]),
            "naccept": pick(ST_B[:, 2]),
            "nreject": pick(ST_B[:, 3]),
        },
    }
    stats = {
        k: {kk: (int(vv) if not batched else vv) for kk, vv in v.items()} for k, v in stats.items()
    }
    value = VALUE[:, 0] if batched else float(VALUE[0, 0])
    status = codes if batched else Status(int(codes[0]))

    def time_grad():
        if use_loss:
            return None
        return pick(_time_gradients(model, t_eval, t0, y0, params, cot, GY0, Y_OUT, batched))

    out = Gradient(
        pick(GY0), pick(GP), value, stats, status, msgs if batched else msgs[0], failed,
        pick(Y_OUT), time_grad,
    )  # fmt: skip
    if throw and failed:
        err = IntegrationError(
            f"gradient failed for trajectories {list(failed)[:10]}: {msgs[failed[0]]}", failed
        )
        err.gradient = out
        raise err
    return out
