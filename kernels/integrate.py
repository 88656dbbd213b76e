"""The integration engine: one explicit Runge–Kutta stepper driven by Butcher tableaus.

It never raises: every trajectory writes a status code. The same source serves both
tiers (``dynamics.py``): installed in ``symode.kernels`` it is the generic engine,
compiled once per machine, that takes any system's kernels as first-class functions
and any tableau as data; copied next to one system's generated ``_dynamics`` module
(``compile(specialize=True)``) it is that system's inlined engine.

Two arguments shape the stepper at compile time:

- ``kind``, a literal: the dynamics it integrates (forward, with a running-cost
  quadrature, the backsolve and interpolated adjoints, forward sensitivities; the
  ``KIND_SIZES`` table); ``evaluate`` dispatches on it and numba compiles only that kind;
- ``method``: the tableau, as data (one array, ``symode.tableaus.packed_tableau``) in
  the generic tier, or (specialized tier) the number of a tableau in ``TABLES`` as a literal,
  whose coefficients, stage count and state sizes become constants, so LLVM unrolls
  the stage loops and folds the coefficients in, as in a hand-written stepper.

The step loop keeps its state in a few arrays allocated once per solve and indexes
them in place; helpers take a row index rather than a row view (a view costs an atomic
reference-count round trip, which was half the run time of a small system's step).

References: Hairer, Nørsett & Wanner, *Solving ODEs I*, II.4 (step size control,
initial step) and II.6 (dense output); Chen et al. 2018, Neural ODEs, eq. 4 and
Algorithm 1.
"""

import math
from collections import namedtuple

import numpy as np
from numba import njit, types
from numba.extending import overload

from symode.tableaus import kernel_tables

from .dynamics import (
    SPECIALIZED,
    SYSTEM,
    adjoint_row,
    has_running_cost,
    jvp_row,
    n_params,
    n_states,
    observation,
    observation_grad,
    record,
    rhs_row,
    running,
    running_grad,
)  # fmt: skip
from .local import local_array_intrinsic, packed_views
from .status import BAD_T_EVAL, MAX_STEPS, NONFINITE, STEP_UNDERFLOW, SUCCESS

TABLES, FSAL, ADAPTIVE, ERR_ORDER = kernel_tables()
# a generic tableau (symode.tableaus.packed_tableau): its header row
M_S, M_K, M_NX, M_FSAL, M_ADAPTIVE, M_ERR_ORDER = 0, 1, 2, 3, 4, 5

# LLVM may fuse a multiply and an add into one FMA (rounded once: never less accurate).
# Only "contract": no flag that assumes finite values (NaN detection must keep
# working) or reorders sums. Every engine function uses it, so a step replayed from
# a checkpoint equals the step of the forward pass bit for bit. error_model="numpy":
# x / 0 gives inf or nan (caught as NONFINITE) instead of raising, so the engine has
# no exception paths, which lets LLVM inline it and drop reference counts.
FMA = {"contract"}
# the accessors' options (with reference counting: ``tableau`` returns arrays)
INLINE_OPTIONS = {"fastmath": FMA, "error_model": "numpy"}

# row and offset arguments as int64 values, not literals: numba compiles a callee once
# per literal value it is passed
ZERO = np.int64(0)
ONE = np.int64(1)


# kinds of dynamics (the KIND_SIZES table below says what each integrates)
FORWARD = 0  # z = y
FORWARD_COST = 1  # z = [y, q], q' = g(t, y, p)
BACKSOLVE = 2  # z = [y, λ, μ], integrated backwards in time
ADJOINT = 3  # z = [λ, μ], y from recorded forward steps (aux)
SENSITIVITY = 4  # z = [y, S_0..S_{m-1}, r], m = n_params + n

# what integrate records of the accepted steps
RECORD_NONE = 0
RECORD_STEPS = 1  # every accepted step's start time, size and state (dense output)
RECORD_STAGES = 2  # the same and every step's stages (the backward sweeps)
RECORD_CHECKPOINTS = 3  # at most max_ck snapshots of the step loop (``replay``)

# iopt / fopt layout
I_MAX_STEPS, I_NERR = 0, 1
F_RTOL, F_H0, F_DT_MIN, F_SAFETY, F_FACMIN, F_FACMAX, F_BETA = 0, 1, 2, 3, 4, 5, 6
# stats layout
S_STATUS, S_NFEV, S_NACCEPT, S_NREJECT, S_NOUT = 0, 1, 2, 3, 4
FS_T, FS_H, FS_HNEXT = 0, 1, 2


@njit(cache=True, fastmath=FMA, error_model="numpy")
def runtime(x):
    """x as a plain runtime value. Passing a literal constant straight to a jitted
    function makes numba compile a specialization for that value: wanted for the
    dynamics kind and the method, not for flags such as ``record``."""
    return x + 0


def _method_accessor(doc, literal, data):
    """An accessor of the tableau ``method``: ``literal(k)`` is its constant for method
    number k (specialized tier), ``data`` the function of the tableau record."""

    def accessor(method):
        raise TypeError("tableau accessors run only inside compiled engine code")

    @overload(accessor, inline="always", jit_options=INLINE_OPTIONS)
    def _accessor(method):
        if isinstance(method, types.IntegerLiteral):
            value = literal(method.literal_value)
            return lambda method: value
        return data

    accessor.__doc__ = doc
    return accessor


def _tableau_layout(header):
    """Where (A, b, c, e, P, Ax, cx) lie in a packed tableau (``packed_tableau``):
    (first row, rows or None for one row, columns) of each, from its header row."""
    s, K, nx = header(M_S), header(M_K), header(M_NX)
    S = s + 1 + nx  # rows of P: the stages, f at the step's end, the extra stages
    r = s + 4
    return [
        (1, s, s),
        (s + 1, None, s),
        (s + 2, None, s),
        (s + 3, None, s),
        (r, S, K),
        (r + S, nx, S),
        (r + S + nx, None, nx),
    ]


_unpack = packed_views(_tableau_layout)


tableau = _method_accessor(
    "(A, b, c, e, P, Ax, cx) of the method.", lambda k: TABLES[k], lambda method: _unpack(method)
)
fsal = _method_accessor(
    "Whether the method's last stage is f at the step's end (first same as last).",
    lambda k: FSAL[k],
    lambda method: method[0, M_FSAL] == 1.0,
)
is_adaptive = _method_accessor(
    "Whether the method has an error estimate.",
    lambda k: ADAPTIVE[k],
    lambda method: method[0, M_ADAPTIVE] == 1.0,
)
err_order = _method_accessor(
    "The order of the method's error estimate (the controller's exponent).",
    lambda k: ERR_ORDER[k],
    lambda method: int(method[0, M_ERR_ORDER]),
)


@njit(cache=True, fastmath=FMA, error_model="numpy")
def adaptive_steps(method, grid):
    """Error-controlled steps: an adaptive method without a grid of fixed steps."""
    return is_adaptive(method) and grid.size == 0


# The kinds of dynamics, one row each: a new kind is a row here, its evaluation
# (``_EVALUATE``) and, if the state changes at a stop, its ``_ON_STOP``.
#
# kind          z                         a stage evaluates               at a stop
# FORWARD       y                         f                               (outputs)
# FORWARD_COST  [y, q]                    f, g                            (outputs)
# BACKSOLVE     [y, λ, μ]  (backwards)    f, -λᵀ∂f/∂(y, p) - ∂g/∂(y, p)    y reset, λ jumps
# ADJOINT       [λ, μ]     (backwards)    the same at y(t) from the record  λ jumps
# SENSITIVITY   [y, S, r]                 f, J S + ∂f/∂(p, y0), ∂g S        (outputs)
#
# Sizes as coefficients of (n, q, (q + n)·n, c) for n states, q params and c = 1 when
# the loss has a running cost (else 0): the size of z, and the leading channels of z
# that F reads (the others are quadratures, integrals of the rest, whose stage inputs
# the step loop does not form). FORWARD_COST without a cost is FORWARD: the generic
# tier's forward pass uses it either way (one kind compiled, not two).
KIND_SIZES = np.array(
    [
        # size of z     channels read
        [[1, 0, 0, 0], [1, 0, 0, 0]],  # FORWARD
        [[1, 0, 0, 1], [1, 0, 0, 0]],  # FORWARD_COST: q' = g(t, y, p) reads y
        [[2, 1, 0, 0], [2, 0, 0, 0]],  # BACKSOLVE: μ' = -λᵀ ∂f/∂p reads no μ
        [[1, 1, 0, 0], [1, 0, 0, 0]],  # ADJOINT: λ
        [[2, 1, 1, 0], [1, 0, 1, 0]],  # SENSITIVITY: [y, S] (r not read)
    ],
    np.int64,
)


@njit(cache=True, fastmath=FMA, error_model="numpy", inline="always")
def sized(kind, column, n, q, cost):
    """Row ``kind``, column ``column`` of KIND_SIZES for n states, q params and a running
    cost (1) or none (0). Python calls it too (``.py_func``: the stack buffers' shapes)."""
    return (
        KIND_SIZES[kind, column, 0] * n
        + KIND_SIZES[kind, column, 1] * q
        + KIND_SIZES[kind, column, 2] * (q + n) * n
        + KIND_SIZES[kind, column, 3] * cost
    )


@njit(cache=True, fastmath=FMA, error_model="numpy", inline="always")
def kind_size(kind, dyn, column):
    return sized(kind, column, n_states(dyn), n_params(dyn), has_running_cost(dyn))


@njit(cache=True, fastmath=FMA, error_model="numpy", inline="always")
def state_size(kind, dyn):
    """The size of z for a kind of dynamics (``KIND_SIZES``; a constant for a literal
    kind in the specialized tier)."""
    return kind_size(kind, dyn, 0)


@njit(cache=True, fastmath=FMA, error_model="numpy", inline="always")
def read_size(kind, dyn):
    """The leading channels of z that F_kind reads (``KIND_SIZES``)."""
    return kind_size(kind, dyn, 1)


@njit(cache=True, fastmath=FMA, error_model="numpy", inline="always")
def work_size(dyn):
    """Scratch of the evaluations: y(t), ∂g/∂y, ∂g/∂p, a unit vector."""
    return 2 * n_states(dyn) + 2 * n_params(dyn)


def _n_stages(method):
    """Rows of a step's stage buffer: the s stages, f at the step's end, extra stages."""
    A, b, c, e, P, Ax, cx = TABLES[method]
    return A.shape[0] + 1 + Ax.shape[0]


def _local_shape(shape):
    """The shape of a step-loop buffer for a literal kind and method number, known only
    in the specialized tier (the generic tier works in the workspace's heap arrays)."""
    if not SPECIALIZED:
        return lambda kind, method: None
    n, q = SYSTEM.N_STATES, SYSTEM.N_PARAMS
    cost = int(SYSTEM.HAS_RUNNING_COST)
    return lambda kind, method: shape(
        int(sized.py_func(kind, 0, n, q, cost)), _n_stages(method), 2 * n + 2 * q
    )


# the step loop's buffers, in its own stack frame (see local.py)
local_stages = local_array_intrinsic(_local_shape(lambda nz, S, nw: (S, nz)))
local_state = local_array_intrinsic(_local_shape(lambda nz, S, nw: (nz,)))
local_weights = local_array_intrinsic(_local_shape(lambda nz, S, nw: (S,)))
local_work = local_array_intrinsic(_local_shape(lambda nz, S, nw: (nw,)))


# What a kind's evaluation reads beyond the state (``aux``):
# - the recorded forward steps the ADJOINT kind interpolates y(t) from: states zs, stages
#   ks, start times ts and sizes hs, the current step's polynomial cbuf, and the search
#   state iw = (last step j, number of steps, direction, j of cbuf) (``stage_eval``);
Steps = namedtuple("Steps", "zs ks ts hs cbuf iw")
# - the adjoint sweeps' jumps at the observations (``jump_at``): the forward states Zf
#   and the cotangents (or data) there, ∂φ/∂p accumulating into gp, scratch lam_y and
#   wq, ints = (the next observation, whether a compiled loss gives the cotangents) and
#   floats = (Σ φ of the jumps made, the next segment start, where no jump is made);
Jumps = namedtuple("Jumps", "Zf cot data t_obs gp lam_y wq ints floats")
J_NEXT, J_USE_LOSS = 0, 1  # Jumps.ints
J_PHI, J_SEGMENT = 0, 1  # Jumps.floats
# - a sweep's: both.
Sweep = namedtuple("Sweep", "steps jumps")


@njit(cache=True, fastmath=FMA, error_model="numpy")
def empty_aux(dyn, like):
    """``aux`` for the kinds that read none: empty Steps."""
    n = n_states(dyn)
    return Steps(
        np.zeros((1, n), like.dtype),
        np.zeros((1, 1, n), like.dtype),
        np.zeros(2),
        np.ones(1),
        np.zeros((1, n)),
        np.array([0, 1, 1, -1], np.int64),
    )


@njit(cache=True, fastmath=FMA, error_model="numpy")
def find_step(ts, nsteps, t):
    """Index j of the step [ts[j], ts[j+1]] holding t (ts monotone, either direction)."""
    direction = 1.0 if ts[nsteps] >= ts[0] else -1.0
    lo = 0
    hi = nsteps - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if direction * (t - ts[mid]) >= 0:
            lo = mid
        else:
            hi = mid - 1
    return lo


@njit(cache=True, fastmath=FMA, error_model="numpy", _nrt=False)
def load_interpolant(method, dyn, j, zs, ks, hs, cbuf):
    """Recorded step j's continuous extension (HNW II.6) as a polynomial in s = t - t_j:
    y = Σ_q cbuf[q] s^q, cbuf[0] = z_j and cbuf[q + 1] = Σ_i P[i, q] k_ji / h_j^q, so
    that each evaluation is K multiply-adds per component (Horner), not the K·S of
    weighting the stages. Only the first n_states(dyn) components (not a running cost)."""
    P = tableau(method)[4]
    K = P.shape[1]
    rh = 1.0 / hs[j]
    for m in range(n_states(dyn)):
        cbuf[0, m] = zs[j, m]
        scale = 1.0
        for q in range(K):
            acc = 0.0
            for i in range(P.shape[0]):
                acc += P[i, q] * ks[j, i, m]
            cbuf[q + 1, m] = acc * scale
            scale *= rh


def evaluate(kind, method, dyn, t, z, p, aux, work, out, r):
    """out[r] = F_kind(t, z): the dynamics of every kind, written into row r.

    Compiled code only: the overload below picks one function per literal ``kind``, so
    numba types and compiles only the kernels that kind calls (an ``if kind == ...``
    chain is not pruned before typing: every kind's kernels were compiled for every
    kind, which was most of the engine's compile time). The generated kernels read only
    the leading entries of z they need.
    """
    raise TypeError("evaluate runs only inside compiled engine code")


def _evaluate_forward(kind, method, dyn, t, z, p, aux, work, out, r):
    rhs_row(dyn, t, z, p, out, r)


def _evaluate_forward_cost(kind, method, dyn, t, z, p, aux, work, out, r):
    rhs_row(dyn, t, z, p, out, r)
    if has_running_cost(dyn):  # (the generic tier's forward pass without a cost: z = y)
        out[r, n_states(dyn)] = running(dyn, t, z, p)


def _evaluate_backsolve(kind, method, dyn, t, z, p, aux, work, out, r):
    rhs_row(dyn, t, z, p, out, r)
    n = n_states(dyn)
    adjoint_row(dyn, t, z, p, z, n, out, r, n)
    if has_running_cost(dyn):
        running_forcing(dyn, t, z, p, work, out, r, n)


# a call, not inlined: inlined, its code (even untaken) cost the generic tier's
# backsolve ~50 ns per evaluation (P3: 0.098 -> 0.163 ms)
@njit(cache=True, fastmath=FMA, error_model="numpy", _nrt=False)
def running_forcing(dyn, t, y, p, work, out, r, o):
    """The running cost's part of the adjoint, out[r, o:o+n+q] -= [∂g/∂y, ∂g/∂p] at y
    (Chen et al. 2018, eq. 4 with ∫g dt in the loss); scratch work[n:2n+q]."""
    n = n_states(dyn)
    n_p = n_params(dyn)
    wy = work[n : 2 * n]
    wp = work[2 * n : 2 * n + n_p]
    running_grad(dyn, t, y, p, wy, wp)
    for j in range(n):
        out[r, o + j] -= wy[j]
    for q in range(n_p):
        out[r, o + n + q] -= wp[q]


def _evaluate_adjoint(kind, method, dyn, t, z, p, aux, work, out, r):
    stage_eval(kind, method, dyn, t, z, p, aux, work, out, r)


def _evaluate_sensitivity(kind, method, dyn, t, z, p, aux, work, out, r):
    sensitivity_row(dyn, t, z, p, work, out, r)


# The evaluations are compiled without reference counting (numba's ``_nrt`` flag): they
# allocate nothing, and their arrays are borrowed from the step loop for the call. With
# it, the ADJOINT kind's evaluation (interpolation inlined) kept ten atomic increfs
# and decrefs of its array arguments per call, which numba's pruning pass could not
# remove: without them the checkpoint gradient of P3 went from 458 to 329 µs.
EVALUATE_OPTIONS = {"fastmath": FMA, "error_model": "numpy", "_nrt": False}

_EVALUATE = {
    FORWARD: _evaluate_forward,
    FORWARD_COST: _evaluate_forward_cost,
    BACKSOLVE: _evaluate_backsolve,
    ADJOINT: _evaluate_adjoint,
    SENSITIVITY: _evaluate_sensitivity,
}


@overload(evaluate, prefer_literal=True, jit_options=EVALUATE_OPTIONS)
def _evaluate_kind(kind, method, dyn, t, z, p, aux, work, out, r):
    if isinstance(kind, types.IntegerLiteral):
        return _EVALUATE[kind.literal_value]
    return None


def stage_eval(kind, method, dyn, t, z, p, aux, work, out, r):
    """``evaluate`` as the step loop calls it, inlined into the loop (numba IR). A call
    passes every array as a handful of scalars, and LLVM did not inline the ADJOINT
    kind's evaluation (interpolation and adjoint): inlined, the checkpoint gradient of
    P3 went from 322 to 260 µs. Only the ADJOINT kind is written out here; the others
    call ``evaluate``, which LLVM inlines."""
    raise TypeError("stage_eval runs only inside compiled engine code")


def _stage_eval_call(kind, method, dyn, t, z, p, aux, work, out, r):
    evaluate(kind, method, dyn, t, z, p, aux, work, out, r)


def _stage_eval_adjoint(kind, method, dyn, t, z, p, aux, work, out, r):
    # y(t) from the recorded forward steps aux.steps = (z_j, k_j, t_j, h_j, cbuf, iw): the
    # method's continuous extension in the step j holding t, its polynomial in cbuf
    # (``load_interpolant``, redone when j changes). The step is found from the last
    # one, iw = (last j, nsteps, direction, j of cbuf): the sweep moves through the
    # steps in order, so this is one or two comparisons, and a binary search only
    # after a jump. Then the adjoint itself.
    zs, ks, ts, hs, cbuf, iw = aux.steps
    K = tableau(method)[4].shape[1]
    j = iw[0]
    nsteps = iw[1]
    d = iw[2]
    if not (j < nsteps and d * (t - ts[j]) >= 0 and (j + 1 >= nsteps or d * (t - ts[j + 1]) < 0)):
        if 0 < j < nsteps and d * (t - ts[j - 1]) >= 0 and d * (t - ts[j]) < 0:
            j -= 1
        else:
            j = find_step(ts, nsteps, t)
        iw[0] = j
    if iw[3] != j:
        load_interpolant(method, dyn, j, zs, ks, hs, cbuf)
        iw[3] = j
    s = t - ts[j]
    for m in range(n_states(dyn)):
        v = cbuf[K, m]
        for q in range(K - 1, -1, -1):
            v = v * s + cbuf[q, m]
        work[m] = v
    adjoint_row(dyn, t, work, p, z, ZERO, out, r, ZERO)
    if has_running_cost(dyn):
        running_forcing(dyn, t, work, p, work, out, r, ZERO)


# the kinds whose evaluation is written into the loop: ADJOINT's (interpolation and
# adjoint), and BACKSOLVE's, whose call LLVM stopped inlining once it had the running
# cost's branch (P3's backsolve gradient, generic tier: 0.098 -> 0.15 ms)
_STAGE_EVAL = {ADJOINT: _stage_eval_adjoint, BACKSOLVE: _evaluate_backsolve}


@overload(stage_eval, prefer_literal=True, inline="always", jit_options=EVALUATE_OPTIONS)
def _stage_eval_kind(kind, method, dyn, t, z, p, aux, work, out, r):
    if isinstance(kind, types.IntegerLiteral):
        return _STAGE_EVAL.get(kind.literal_value, _stage_eval_call)
    return None


@njit(cache=True, fastmath=FMA, error_model="numpy", _nrt=False)
def observation_cotangent(dyn, use_loss, y, cot_i, data_i, p, out_y, gp, wp):
    """out_y = ∂L/∂y(tᵢ); with a symbolic loss also gp += ∂φ/∂p (scratch wp, size p).
    Returns φ."""
    n = n_states(dyn)
    if not use_loss:
        for j in range(n):
            out_y[j] = cot_i[j]
        return 0.0
    observation_grad(dyn, y, data_i, p, out_y, wp)
    for q in range(n_params(dyn)):
        gp[q] += wp[q]
    return observation(dyn, y, data_i, p)


def on_stop(kind, dyn, t, z, p, aux):
    """At a stop reached in ``advance`` (C_TSTOPS): make the change the caller would make
    there and return True, when this kind's aux carries what it takes; False returns
    the loop to its caller (status STOPPED). The continuous adjoints' jumps at the
    observations are made here (``jump_at``): a return per observation and a fresh
    entry (its arguments, the state reloaded) cost ~10% of P3's checkpoint gradient.
    Segment starts (the caller loads the next segment) and the other kinds return."""
    raise TypeError("on_stop runs only inside compiled engine code")


@njit(cache=True, fastmath=FMA, error_model="numpy", _nrt=False, inline="always")
def make_jump(dyn, z, p, jumps, off):
    """The adjoint's jump at the next observation io = jumps.ints[J_NEXT] (``Jumps``): λ =
    z[off : off + n] += ∂L/∂y(t_io), φ(t_io) added to jumps.floats[J_PHI]; for backsolve
    (off = n) y = z[:n] is reset to the forward value first. The one jump of every
    continuous adjoint, made by the step loop (``jump_at``) or by its caller."""
    io = jumps.ints[J_NEXT]
    if off > 0:
        for j in range(n_states(dyn)):
            z[j] = jumps.Zf[io, j]
    jumps.floats[J_PHI] += observation_cotangent(
        dyn, jumps.ints[J_USE_LOSS] == 1, jumps.Zf[io], jumps.cot[io], jumps.data[io], p,
        jumps.lam_y, jumps.gp, jumps.wq,
    )  # fmt: skip
    for j in range(n_states(dyn)):
        z[off + j] += jumps.lam_y[j]
    jumps.ints[J_NEXT] = io - 1


@njit(cache=True, fastmath=FMA, error_model="numpy", _nrt=False, inline="always")
def jump_at(dyn, t, z, p, jumps, off):
    """``make_jump`` if t is the next observation and not a segment start (where the
    caller loads the next segment first); returns whether it was made."""
    io = jumps.ints[J_NEXT]
    if io < 0 or t != jumps.t_obs[io] or t == jumps.floats[J_SEGMENT]:
        return False
    make_jump(dyn, z, p, jumps, off)
    return True


def _on_stop_return(kind, dyn, t, z, p, aux):
    return False


def _on_stop_adjoint(kind, dyn, t, z, p, aux):
    return jump_at(dyn, t, z, p, aux.jumps, ZERO)


def _on_stop_backsolve(kind, dyn, t, z, p, aux):
    return jump_at(dyn, t, z, p, aux.jumps, n_states(dyn))


_ON_STOP = {ADJOINT: _on_stop_adjoint, BACKSOLVE: _on_stop_backsolve}


@overload(on_stop, prefer_literal=True, inline="always", jit_options=EVALUATE_OPTIONS)
def _on_stop_kind(kind, dyn, t, z, p, aux):
    if isinstance(kind, types.IntegerLiteral):
        return _ON_STOP.get(kind.literal_value, _on_stop_return)
    return None


@njit(cache=True, fastmath=FMA, error_model="numpy")
def sensitivity_row(dyn, t, z, p, work, out, r):
    """z = [y, S_0..S_{m-1}, r]: S_k' = J S_k + ∂f/∂p_k (k < n_p, else J S_k), r_k' = dg/dp_k."""
    n = n_states(dyn)
    n_p = n_params(dyn)
    rhs_row(dyn, t, z, p, out, r)
    m_cols = n_p + n
    wy = work[n : 2 * n]
    wp = work[2 * n : 2 * n + n_p]
    w = work[2 * n + n_p : 2 * n + 2 * n_p]
    if has_running_cost(dyn):
        running_grad(dyn, t, z, p, wy, wp)
    for col in range(m_cols):
        for q in range(n_p):
            w[q] = 0.0
        if col < n_p:
            w[col] = 1.0
        lo = n + col * n
        jvp_row(dyn, t, z, p, z, lo, w, out, r, lo)
        acc = 0.0
        if has_running_cost(dyn):
            for j in range(n):
                acc += wy[j] * z[lo + j]
            if col < n_p:
                acc += wp[col]
        out[r, n + m_cols * n + col] = acc


@njit(cache=True, fastmath=FMA, error_model="numpy", _nrt=False)
def stage_input(method, i, z, h, k, out):
    """out = z + h Σ_j A[i, j] k_j: the input of stage i (i < s), or of extra
    dense-output stage i - s - 1 (i > s)."""
    A, b, c, e, P, Ax, cx = tableau(method)
    s = A.shape[0]
    for m in range(out.size):
        acc = 0.0
        if i < s:
            for j in range(i):
                acc += A[i, j] * k[j, m]
        else:
            for j in range(i):
                acc += Ax[i - s - 1, j] * k[j, m]
        out[m] = z[m] + h * acc


@njit(cache=True, fastmath=FMA, error_model="numpy")
def step_stages(kind, method, dyn, t, z, h, p, aux, work, k, ztmp, znew):
    """Stages 1..s-1 of one step (k[0] = F(t, z) must be set) and znew = z + h Σ b_i k_i.
    Returns the number of evaluations."""
    A, b, c, e, P, Ax, cx = tableau(method)
    s = A.shape[0]
    nz = state_size(kind, dyn)
    for i in range(1, s):
        for m in range(nz):
            acc = 0.0
            for j in range(i):
                acc += A[i, j] * k[j, m]
            ztmp[m] = z[m] + h * acc
        evaluate(kind, method, dyn, t + c[i] * h, ztmp, p, aux, work, k, i)
    for m in range(nz):
        acc = 0.0
        for i in range(s):
            acc += b[i] * k[i, m]
        znew[m] = z[m] + h * acc
    return s - 1


@njit(cache=True, fastmath=FMA, error_model="numpy")
def step_end(kind, method, dyn, t, z, h, znew, p, aux, work, k, ztmp):
    """k[s] = F(t + h, znew) (copied for FSAL methods) and the extra dense-output
    stages. Returns the number of evaluations."""
    A, b, c, e, P, Ax, cx = tableau(method)
    s = A.shape[0]
    nz = state_size(kind, dyn)
    nfev = 0
    if fsal(method):
        for m in range(nz):
            k[s, m] = k[s - 1, m]
    else:
        evaluate(kind, method, dyn, t + h, znew, p, aux, work, k, s)
        nfev += 1
    nfev += extra_stages(kind, method, dyn, t, z, h, p, aux, work, k, ztmp)
    return nfev


@njit(cache=True, fastmath=FMA, error_model="numpy", inline="always")
def extra_stages(kind, method, dyn, t, z, h, p, aux, work, k, ztmp):
    """Stages a continuous extension needs beyond the step (DOP853's three), in
    k[s+1:], from the step's stages and f1 = k[s] (see ButcherTableau.extra_a)."""
    A, b, c, e, P, Ax, cx = tableau(method)
    s = A.shape[0]
    nz = state_size(kind, dyn)
    for j in range(Ax.shape[0]):
        for m in range(nz):
            acc = 0.0
            for q in range(s + 1 + j):
                acc += Ax[j, q] * k[q, m]
            ztmp[m] = z[m] + h * acc
        evaluate(kind, method, dyn, t + cx[j] * h, ztmp, p, aux, work, k, s + 1 + j)
    return Ax.shape[0]


@njit(cache=True, fastmath=FMA, error_model="numpy", inline="always")
def dense_weights(method, theta, bth):
    """bth[i] = b_i(θ) = Σ_q P[i, q] θ^(q+1) (Horner)."""
    P = tableau(method)[4]
    K = P.shape[1]
    for i in range(P.shape[0]):
        v = P[i, K - 1]
        for q in range(K - 2, -1, -1):
            v = v * theta + P[i, q]
        bth[i] = v * theta


@njit(cache=True, fastmath=FMA, error_model="numpy")
def dense_out(kind, method, dyn, theta, h, z, k, bth, out, row):
    """out[row] = z + h Σ_i b_i(θ) k_i: the continuous extension inside one step."""
    dense_weights(method, theta, bth)
    for m in range(state_size(kind, dyn)):
        acc = 0.0
        for i in range(tableau(method)[4].shape[0]):
            acc += bth[i] * k[i, m]
        out[row, m] = z[m] + h * acc


@njit(cache=True, fastmath=FMA, error_model="numpy")
def initial_step(kind, method, dyn, t0, z0, p, aux, work, direction, rtol, atol, nerr, ztmp, k):
    """Hairer's starting step size (HNW I, II.4, p. 169), from f0 = k[0]; costs one
    evaluation (into k[1])."""
    nz = state_size(kind, dyn)
    d0 = 0.0
    d1 = 0.0
    for m in range(nerr):
        sc = atol[m] + rtol * abs(z0[m])
        d0 += (z0[m] / sc) ** 2
        d1 += (k[0, m] / sc) ** 2
    d0 = math.sqrt(d0 / nz)
    d1 = math.sqrt(d1 / nz)
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
    for m in range(nz):
        ztmp[m] = z0[m] + direction * h0 * k[0, m]
    evaluate(kind, method, dyn, t0 + direction * h0, ztmp, p, aux, work, k, ONE)
    d2 = 0.0
    for m in range(nerr):
        sc = atol[m] + rtol * abs(z0[m])
        d2 += ((k[1, m] - k[0, m]) / sc) ** 2
    d2 = math.sqrt(d2 / nz) / h0
    if not np.isfinite(d2):
        return h0 * 1e-3
    if max(d1, d2) <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (err_order(method) + 1))
    return min(100.0 * h0, h1)


@njit(cache=True, fastmath=FMA, error_model="numpy")
def ordered(t_out, direction):
    """Whether t_out is strictly monotone in the direction of integration (NaN is not).
    Checked here, in scalar code, rather than with numpy before the call: numpy's wide
    vector instructions on a long t_eval slowed the solve that followed by ~13%
    (measured on P1), the core running at a lower clock for a while after them."""
    for i in range(1, t_out.size):
        if not direction * (t_out[i] - t_out[i - 1]) > 0:
            return False
    return True


@njit(cache=True, fastmath=FMA, error_model="numpy", inline="always")
def finite_row(k, r):
    for m in range(k.shape[1]):
        if not np.isfinite(k[r, m]):
            return False
    return True


@njit(cache=True, fastmath=FMA, error_model="numpy", inline="always")
def finite_start(k, z):
    """Whether z and its derivative k[0] are finite (after the state changed at a stop).
    A loop: np.isfinite(z) would allocate, once per stop."""
    finite = finite_row(k, ZERO)
    for m in range(z.size):
        finite = finite and np.isfinite(z[m])
    return finite


@njit(cache=True, fastmath=FMA, error_model="numpy")
def grow(a, size):
    """A copy of the 1-D array a in a larger buffer."""
    out = np.empty(size, a.dtype)
    for i in range(a.size):
        out[i] = a[i]
    return out


@njit(cache=True, fastmath=FMA, error_model="numpy")
def grow_rows(a, size):
    """A copy of the 2-D array a with more rows."""
    out = np.empty((size, a.shape[1]), a.dtype)
    for i in range(a.shape[0]):
        for m in range(a.shape[1]):
            out[i, m] = a[i, m]
    return out


@njit(cache=True, fastmath=FMA, error_model="numpy")
def grow_3d(a, size):
    """A copy of the 3-D array a with more entries along its first axis."""
    out = np.empty((size, a.shape[1], a.shape[2]), a.dtype)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            for m in range(a.shape[2]):
                out[i, j, m] = a[i, j, m]
    return out


# The record of the accepted steps (``integrate``'s ``record``): RECORD_STEPS and
# RECORD_STAGES keep every step's start time t, size h and state ck_z (and stages ck_k);
# RECORD_CHECKPOINTS keeps snapshots (step number ck_i, state ck_z, first stage
# ck_k[:, 0], (t, h, errold) ck_f) for ``replay``.
Record = namedtuple("Record", "t h ck_i ck_z ck_k ck_f")


@njit(cache=True, fastmath=FMA, error_model="numpy", inline="always")
def record_step(r, t, hs, z, k, record, rec):
    """Record accepted step r (of this run): start time, size and state, and with
    RECORD_STAGES its stages. The buffers have room (``has_room``)."""
    rec.t[r] = t
    rec.h[r] = hs
    for m in range(z.size):
        rec.ck_z[r, m] = z[m]
    if record == RECORD_STAGES:
        for i in range(k.shape[0]):
            for m in range(z.size):
                rec.ck_k[r, i, m] = k[i, m]


@njit(cache=True, fastmath=FMA, error_model="numpy", inline="always")
def snapshot(step, t, h, errold, z, k, rec, n_ck, every, max_ck):
    """A checkpoint of the step loop as it starts step ``step``: everything ``replay``
    needs to take the same steps again (t, the next step size, the controller's memory,
    z and k[0]). Kept at steps that are multiples of ``every``; when ``max_ck`` are
    held, every other one is dropped and ``every`` doubles, so between max_ck/2 and
    max_ck checkpoints cover the whole solve, whatever its (unknown) number of steps.
    Returns (n_ck, every)."""
    if step % every != 0:
        return n_ck, every
    # one by one: unpacking them as a tuple (ck_i, ... = rec.ck_i, ...) in this inlined
    # function lost the last store (numba 0.68: ck_f was never written)
    ck_i = rec.ck_i
    ck_z = rec.ck_z
    ck_k = rec.ck_k
    ck_f = rec.ck_f
    nz = z.size
    if n_ck == max_ck:  # thin: keep every other checkpoint
        kept = 0
        for q in range(n_ck):
            if ck_i[q] % (2 * every) == 0:
                ck_i[kept] = ck_i[q]
                for m in range(nz):
                    ck_z[kept, m] = ck_z[q, m]
                    ck_k[kept, 0, m] = ck_k[q, 0, m]
                for j in range(3):
                    ck_f[kept, j] = ck_f[q, j]
                kept += 1
        n_ck = kept
        every *= 2
        if step % every != 0:
            return n_ck, every
    ck_i[n_ck] = step
    for m in range(nz):
        ck_z[n_ck, m] = z[m]
        ck_k[n_ck, 0, m] = k[0, m]
    ck_f[n_ck, 0] = t
    ck_f[n_ck, 1] = h
    ck_f[n_ck, 2] = errold
    return n_ck + 1, every


@njit(cache=True, fastmath=FMA, error_model="numpy")
def has_room(record, r, n_ck, max_ck, rec):
    """Whether the record buffers can take one more accepted step (r of this run)."""
    if record == RECORD_NONE:
        return True
    if record == RECORD_CHECKPOINTS:
        return n_ck < rec.ck_i.size or n_ck >= max_ck
    return r + 2 <= rec.t.size


# The step loop's arrays (``workspace``): the stages k (rows: the s stages, f at the
# step's end, the extra dense-output stages), the state z and two scratch states, the
# evaluations' scratch work (``work_size``), the dense-output weights bth, and the
# loop's scalar state between calls of ``advance`` (float and int parts, V_* and C_*).
Workspace = namedtuple("Workspace", "k z ztmp znew work bth fv iv")
# the step loop's scalar state between calls of ``advance`` (float and int parts)
V_T, V_H, V_ERROLD, V_FAIL_H = 0, 1, 2, 3
C_STEP, C_IOUT, C_NFEV, C_NACCEPT, C_NREJECT, C_STATUS = 0, 1, 2, 3, 4, 5
C_NCK, C_EVERY, C_REJECTED, C_LAST_NONFINITE, C_STEP0, C_STOP = 6, 7, 8, 9, 10, 11
C_TSTOPS = 12  # 1: t_out are stops (see ``advance``), not outputs
N_IV = 13
RUNNING = -1  # status while the loop continues (advance returned for buffer space)
STOPPED = -2  # status after a step that ended on a stop (C_TSTOPS)
# A stop (C_TSTOPS) within STOP_STRETCH × the proposed step is reached in one step,
# stretched, unless the last attempt was rejected. A sweep stops at every observation:
# on P3 (stops every 0.1, steps of ~0.08-0.1) clipping alone took two steps, one of
# them a sliver, in most intervals; 1.25 cut the backward evaluations from 1385 to
# 1211 (1.15: 1271, 1.5: 1187 but twice the rejections). The error estimate still
# judges the stretched step.
STOP_STRETCH = 1.25
ERR_MIN = 1e-4  # the PI controller's floor of the previous error (HNW's DOPRI5)
LOG_ERR_MIN = math.log(ERR_MIN)


# The step loop's named state. Namedtuples of scalars are values to numba (no heap, no
# reference counts): a piece takes one and returns the next, and LLVM keeps them in
# registers as it kept the loop's plain locals.
# - the options, read once per call of ``advance`` from the iopt / fopt arrays that the
#   Python side fills (``ModelEngine.options``);
Options = namedtuple("Options", "max_steps nerr rtol safety facmin facmax beta expo dt_min")
# - the PI controller's memory: the proposed step size, the last accepted step's error
#   (and its log: err**-expo * errold**beta as one exp, not two calls of libm's pow per
#   step, ~20 ns each, 12% of P3's gradient), whether the last attempt was rejected and
#   whether for a non-finite state (a step size underflow after that is NONFINITE).
Controller = namedtuple("Controller", "h errold log_errold rejected nonfinite")


@njit(cache=True, fastmath=FMA, error_model="numpy", _nrt=False, inline="always")
def read_options(method, iopt, fopt):
    beta = fopt[F_BETA]
    return Options(
        iopt[I_MAX_STEPS], iopt[I_NERR], fopt[F_RTOL], fopt[F_SAFETY], fopt[F_FACMIN],
        fopt[F_FACMAX], beta, 1.0 / (err_order(method) + 1) - 0.75 * beta, fopt[F_DT_MIN],
    )  # fmt: skip


@njit(cache=True, fastmath=FMA, error_model="numpy", _nrt=False, inline="always")
def step_failure(opt, ctl, step, t, direction):
    """Why an adaptive loop cannot take another step (MAX_STEPS, STEP_UNDERFLOW or, after
    non-finite states, NONFINITE), or SUCCESS."""
    if step >= opt.max_steps:
        return MAX_STEPS
    hmin = max(opt.dt_min, 10.0 * abs(np.nextafter(t, t + direction) - t))
    if ctl.h < hmin:
        return NONFINITE if ctl.nonfinite else STEP_UNDERFLOW
    return SUCCESS


@njit(cache=True, fastmath=FMA, error_model="numpy", _nrt=False, inline="always")
def next_time(adaptive, ctl, t, t1, direction, grid, step, t_out, iout, tstops):
    """The end of the next step: t + h clipped to t1 and, when t_out are stops, to the
    next stop (reached in one step within ``STOP_STRETCH`` × h); the next grid point for
    fixed steps. Returns (tnew, tnew - t)."""
    if not adaptive:
        return grid[step + 1], grid[step + 1] - t
    hs = direction * ctl.h
    tnew = t + hs
    if direction * (tnew - t1) >= 0:
        tnew = t1
        hs = t1 - t
    if tstops and iout < t_out.size:
        reach = ctl.h * (1.0 if ctl.rejected else STOP_STRETCH)
        if direction * (t_out[iout] - t) <= reach:
            tnew = t_out[iout]
            hs = tnew - t
    return tnew, hs


@njit(cache=True, fastmath=FMA, error_model="numpy", _nrt=False, inline="always")
def control(opt, ctl, err, finite, hs):
    """The PI controller (HNW's DOPRI5, Gustafsson's β) on a step of size |hs| with
    error err: returns (accepted, the next step's size, the controller's new memory).
    A step shortened to end on t1 or a stop speaks for its own size (HNW's DOPRI5
    shrinks from it) and may shrink the proposal h but not grow it (the error of a short
    step is small, and mostly rounding for a sliver; growing from it made the next full
    step fail), and the controller keeps no memory of it."""
    h = abs(hs)
    if not (err <= 1e300) or not finite:
        h *= opt.facmin
        return False, h, Controller(h, ctl.errold, ctl.log_errold, True, True)
    log_err = math.log(err) if err > 0.0 else LOG_ERR_MIN
    if err > 1.0:
        h *= max(opt.facmin, opt.safety * math.exp(-opt.expo * log_err))
        return False, h, Controller(h, ctl.errold, ctl.log_errold, True, False)
    if err == 0.0:
        fac = opt.facmax
    else:
        fac = opt.safety * math.exp(opt.beta * ctl.log_errold - opt.expo * log_err)
    fac = min(1.0 if ctl.rejected else opt.facmax, max(opt.facmin, fac))
    if h < ctl.h:
        hnext = min(ctl.h, h * fac)
        return True, hnext, Controller(hnext, ctl.errold, ctl.log_errold, False, False)
    hnext = h * fac
    return (
        True,
        hnext,
        Controller(hnext, max(err, ERR_MIN), max(log_err, LOG_ERR_MIN), False, False),
    )


@njit(cache=True, fastmath=FMA, error_model="numpy", _nrt=False, inline="always")
def write_outputs(method, tab, t, tnew, hs, z, znew, k, bth, t_out, z_out, iout, tstops, direction):
    """The outputs inside (t, tnew]: the end state, or the dense output (HNW II.6);
    with stops, none: the stop is reached. Returns (the next output, whether a stop was
    reached)."""
    P = tab[4]
    hit = False
    while iout < t_out.size and direction * (t_out[iout] - tnew) <= 0:
        if tstops:
            hit = True
        elif t_out[iout] == tnew:
            for m in range(znew.size):
                z_out[iout, m] = znew[m]
        else:
            dense_weights(method, (t_out[iout] - t) / hs, bth)
            for m in range(znew.size):
                acc = 0.0
                for i in range(P.shape[0]):
                    acc += bth[i] * k[i, m]
                z_out[iout, m] = z[m] + hs * acc
        iout += 1
    return iout, hit


@njit(cache=True, fastmath=FMA, error_model="numpy", _nrt=False)
def advance(
    kind, method, dyn, t1, p, aux, iopt, fopt, atol, grid, t_out, z_out, ws, record, max_ck, rec
):
    """The step loop of ``integrate``: steps from the state in the workspace ws
    (z, k[0], fv, iv) until t1, step number iv[C_STOP], a failure, or full record
    buffers rec (status RUNNING; ``integrate`` grows them and calls again), then writes
    the state back. A step: why none can be taken (``step_failure``), its end
    (``next_time``), its stages, end state and error estimate (written here: as an
    inlined piece of their own, LLVM stopped inlining the kernels' calls in some kinds,
    P3's backsolve gradient 0.10 -> 0.18 ms), the controller's verdict (``control``),
    then for an accepted step its last stage, the outputs (``write_outputs``) and the
    record (``record_step``, ``snapshot``); the loop's state in between is named
    (``Options``, ``Controller``, ``Workspace``, ``Record``).

    With iv[C_TSTOPS] == 1 the times t_out are stops instead of outputs: adaptive steps
    are shortened (or stretched, ``STOP_STRETCH``) to end on the next one (a fixed grid
    must contain them), nothing is written to z_out, and at a stop the kind's change is
    made (``on_stop``: the adjoint's jumps at the observation times) or, where the caller
    makes it, the loop returns with status STOPPED (``resume`` goes on); the controller
    keeps its state.

    It allocates no heap arrays, so it is compiled without reference counting (numba's
    ``_nrt`` flag): with it, each call paid ~20 atomic increfs and decrefs of its array
    arguments, felt by the adjoint's sweep, which calls it once per observation. Its
    working buffers live in its own stack frame (``local.py``; the workspace's own
    arrays when too large) and the pieces are inlined, so LLVM keeps small states in
    registers."""
    fv = ws.fv
    iv = ws.iv
    z = local_state(kind, method, ws.z)
    ztmp = local_state(kind, method, ws.ztmp)
    znew = local_state(kind, method, ws.znew)
    k = local_stages(kind, method, ws.k)
    work = local_work(kind, method, ws.work)
    bth = local_weights(kind, method, ws.bth)
    for m in range(work.size):
        work[m] = 0.0
    for m in range(z.size):
        z[m] = ws.z[m]
        k[0, m] = ws.k[0, m]
    # the tableau's arrays, unpacked once (in the generic tier each unpacking slices the
    # packed array: once per piece and step, that cost P3's gradients 10-30%)
    tab = tableau(method)
    A, b, c, e, P, Ax, cx = tab
    s = A.shape[0]
    n_extra = Ax.shape[0]
    n_read = read_size(kind, dyn)
    is_fsal = fsal(method)
    adaptive = adaptive_steps(method, grid)
    nz = state_size(kind, dyn)
    opt = read_options(method, iopt, fopt)
    T = t_out.size
    t = fv[V_T]
    direction = 1.0 if t1 >= t else -1.0
    ctl = Controller(
        fv[V_H], fv[V_ERROLD], math.log(fv[V_ERROLD]), iv[C_REJECTED] == 1,
        iv[C_LAST_NONFINITE] == 1,
    )  # fmt: skip
    fail_h = fv[V_FAIL_H]
    step = iv[C_STEP]
    iout = iv[C_IOUT]
    nfev = iv[C_NFEV]
    naccept = iv[C_NACCEPT]
    nreject = iv[C_NREJECT]
    n_ck = iv[C_NCK]
    every = iv[C_EVERY]
    step0 = iv[C_STEP0]
    stop = iv[C_STOP]
    tstops = iv[C_TSTOPS] == 1
    status = SUCCESS
    if record == RECORD_CHECKPOINTS and step == 0 and n_ck == 0:
        n_ck, every = snapshot(0, t, ctl.h, ctl.errold, z, k, rec, 0, 1, max_ck)
    while direction * (t1 - t) > 0 and step < stop:
        if not has_room(record, step - step0, n_ck, max_ck, rec):
            status = RUNNING
            break
        if adaptive:
            status = step_failure(opt, ctl, step, t, direction)
            if status != SUCCESS:
                fail_h = ctl.h
                break
        elif step >= grid.size - 1:
            break
        tnew, hs = next_time(adaptive, ctl, t, t1, direction, grid, step, t_out, iout, tstops)
        # the step: stages 1..s-1 (k[0] = F(t, z) is set), then znew = z + hs Σ b_i k_i
        for i in range(1, s):
            for m in range(n_read):
                acc = 0.0
                for j in range(i):
                    acc += A[i, j] * k[j, m]
                ztmp[m] = z[m] + hs * acc
            stage_eval(kind, method, dyn, t + c[i] * hs, ztmp, p, aux, work, k, i)
        # and, adaptive, the RMS of the scaled error estimate hs Σ e_i k_i (HNW I, II.4
        # eq. 4.11) with only the first nerr components contributing: the seminorm of
        # Kidger, Chen & Lyons (2021), which therefore never exceeds the full norm
        finite = True
        err = 0.0
        for m in range(nz):
            acc = 0.0
            erm = 0.0
            for i in range(s):
                acc += b[i] * k[i, m]
                if adaptive:
                    erm += e[i] * k[i, m]
            zn = z[m] + hs * acc
            znew[m] = zn
            finite = finite and np.isfinite(zn)
            if adaptive and m < opt.nerr:
                r = hs * erm / (atol[m] + opt.rtol * max(abs(z[m]), abs(zn)))
                err += r * r
        nfev += s - 1
        hnext = ctl.h
        if adaptive:
            accepted, hnext, ctl = control(opt, ctl, math.sqrt(err / nz), finite, hs)
            if not accepted:
                nreject += 1
                continue
        elif not finite:
            status = NONFINITE
            fail_h = abs(hs)
            break
        # the step is accepted: its last stage k[s] = F(tnew, znew), and the extra
        # stages of the dense output where it is needed
        if is_fsal:
            for m in range(nz):
                k[s, m] = k[s - 1, m]
        else:
            evaluate(kind, method, dyn, tnew, znew, p, aux, work, k, s)
            nfev += 1
        if n_extra > 0 and (
            record == RECORD_STAGES
            or (iout < T and direction * (t_out[iout] - tnew) <= 0 and t_out[iout] != tnew)
        ):
            nfev += extra_stages(kind, method, dyn, t, z, hs, p, aux, work, k, ztmp)
        iout, hit = write_outputs(
            method, tab, t, tnew, hs, z, znew, k, bth, t_out, z_out, iout, tstops, direction
        )
        if record == RECORD_STEPS or record == RECORD_STAGES:
            record_step(step - step0, t, hs, z, k, record, rec)
        t = tnew
        for m in range(nz):
            z[m] = znew[m]
            k[0, m] = k[s, m]
        ctl = Controller(hnext, ctl.errold, ctl.log_errold, ctl.rejected, ctl.nonfinite)
        step += 1
        naccept += 1
        if record == RECORD_CHECKPOINTS:
            n_ck, every = snapshot(step, t, ctl.h, ctl.errold, z, k, rec, n_ck, every, max_ck)
        if not adaptive and not finite_row(k, ZERO):
            status = NONFINITE
            fail_h = abs(hs)
            break
        if hit:
            if not (adaptive and on_stop(kind, dyn, t, z, p, aux)):
                status = STOPPED
                break
            # z changed at t: F(t, z) again (``restart``), the controller goes on. A
            # call: a second inlined stage_eval trips numba's IR scope check
            evaluate(kind, method, dyn, t, z, p, aux, work, k, ZERO)
            nfev += 1
            if not finite_start(k, z):
                status = NONFINITE
                fail_h = ctl.h
                break
    for m in range(nz):
        ws.z[m] = z[m]
        ws.k[0, m] = k[0, m]
    fv[V_T] = t
    fv[V_H] = ctl.h
    fv[V_ERROLD] = ctl.errold
    fv[V_FAIL_H] = fail_h
    iv[C_STEP] = step
    iv[C_IOUT] = iout
    iv[C_NFEV] = nfev
    iv[C_NACCEPT] = naccept
    iv[C_NREJECT] = nreject
    iv[C_STATUS] = status
    iv[C_NCK] = n_ck
    iv[C_EVERY] = every
    iv[C_REJECTED] = 1 if ctl.rejected else 0
    iv[C_LAST_NONFINITE] = 1 if ctl.nonfinite else 0


@njit(cache=True, fastmath=FMA, error_model="numpy")
def workspace(kind, method, dyn, like):
    """The step loop's arrays for one kind and method (dtype of ``like``): the state
    between calls of ``advance`` (z, k[0], fv, iv) and its buffers where they are too
    large for its stack frame."""
    A, b, c, e, P, Ax, cx = tableau(method)
    S = A.shape[0] + 1 + Ax.shape[0]
    nz = state_size(kind, dyn)
    return Workspace(
        np.empty((S, nz), like.dtype),
        np.empty(nz, like.dtype),
        np.empty(nz, like.dtype),
        np.empty(nz, like.dtype),
        np.zeros(work_size(dyn), like.dtype),
        np.empty(S),
        np.zeros(4),
        np.zeros(N_IV, np.int64),
    )


# integrate, integrate_ws and the adjoints' forward_pass are calls, not inlined in
# numba's IR: once per solve, a call costs nothing measurable, and numba types each once
# per signature for every entry point that shares it (the solve and the gradients)
# instead of again inside each: the generic engine's solve and three gradients compiled
# in 108 s instead of 163 s (two interleaved runs, Lotka–Volterra, 2 cores).
@njit(cache=True, fastmath=FMA, error_model="numpy")
def integrate(
    kind, method, dyn, t0, t1, z0, p, aux, iopt, fopt, atol, grid, t_out, z_out, stats, fstats,
    record, max_ck,
):  # fmt: skip
    """``integrate_ws`` with a fresh workspace."""
    return integrate_ws(
        kind, method, dyn, t0, t1, z0, p, aux, iopt, fopt, atol, grid, t_out, z_out, stats, fstats,
        record, max_ck, workspace(kind, method, dyn, z0),
    )  # fmt: skip


@njit(cache=True, fastmath=FMA, error_model="numpy")
def integrate_ws(
    kind, method, dyn, t0, t1, z0, p, aux, iopt, fopt, atol, grid, t_out, z_out, stats, fstats,
    record, max_ck, ws,
):  # fmt: skip
    """Integrate dz/dt = F_kind(t, z) from t0 to t1 with one explicit RK method.

    Adaptive methods use a PI controller; fixed-step methods step on ``grid``. Writes
    z at each ``t_out`` (monotone in the direction of integration) into ``z_out``
    through the method's dense output. Returns what ``record`` (RECORD_*) asked for:
    ``(rec_t, rec_h, nsteps, ck_i, ck_z, n_ck, ck_k, ck_f)``: for RECORD_STEPS and
    RECORD_STAGES every accepted step's start time, size and state (ck_z) and stages
    (ck_k); for RECORD_CHECKPOINTS n_ck <= max_ck snapshots (step number ck_i, state
    ck_z, first stage ck_k[:, 0], (t, h, errold) ck_f) for ``replay``.
    """
    A, b, c, e, P, Ax, cx = tableau(method)
    S = A.shape[0] + 1 + Ax.shape[0]
    nz = state_size(kind, dyn)
    k, z, ztmp, znew, work, bth, fv, iv = ws
    begin(kind, method, dyn, t0, t1, z0, p, aux, iopt, fopt, atol, grid, t_out, z_out, ws, ZERO)

    steps = record == RECORD_STEPS or record == RECORD_STAGES
    # room for 2 steps per output before the first regrowth (P3: 101 outputs, 117 steps)
    cap = max(64, 2 * t_out.size) if steps else 1
    rec_t = np.empty(cap)
    rec_h = np.empty(cap)
    ck_cap = min(16, max_ck) if record == RECORD_CHECKPOINTS else cap
    ck_i = np.empty(ck_cap, np.int64)
    ck_z = np.empty((ck_cap, nz), z0.dtype)
    if record == RECORD_STAGES:
        ck_k = np.empty((cap, S, nz), z0.dtype)
    else:
        ck_k = np.empty((ck_cap, 1, nz), z0.dtype)
    ck_f = np.empty((ck_cap, 3))
    if iv[C_STATUS] == RUNNING:
        while True:
            advance(
                kind, method, dyn, t1, p, aux, iopt, fopt, atol, grid, t_out, z_out, ws, record,
                max_ck, Record(rec_t, rec_h, ck_i, ck_z, ck_k, ck_f),
            )  # fmt: skip
            if iv[C_STATUS] != RUNNING:
                break
            # grow the full record buffers, then go on
            if steps:
                size = 2 * rec_t.size
                rec_t = grow(rec_t, size)
                rec_h = grow(rec_h, size)
                ck_z = grow_rows(ck_z, size)
                if record == RECORD_STAGES:
                    ck_k = grow_3d(ck_k, size)
            else:
                size = min(2 * ck_i.size, max_ck)
                ck_i = grow(ck_i, size)
                ck_z = grow_rows(ck_z, size)
                ck_k = grow_3d(ck_k, size)
                ck_f = grow_rows(ck_f, size)
    step = iv[C_STEP]
    if steps:
        rec_t[step] = fv[V_T]
    finish(ws, stats, fstats)
    return rec_t, rec_h, step, ck_i, ck_z, iv[C_NCK], ck_k, ck_f


@njit(cache=True, fastmath=FMA, error_model="numpy", inline="always")
def begin(kind, method, dyn, t0, t1, z0, p, aux, iopt, fopt, atol, grid, t_out, z_out, ws, tstops):
    """Set up the step loop in the workspace ws: z = z0, k[0] = F(t0, z0), the outputs
    at t0 (none when ``tstops``: then t_out are stops after t0, see ``advance``) and the
    first step size. Leaves status RUNNING, or the reason not to start (BAD_T_EVAL,
    NONFINITE)."""
    nz = state_size(kind, dyn)
    T = t_out.size
    direction = 1.0 if t1 >= t0 else -1.0
    k, z, ztmp, znew, work, bth, fv, iv = ws
    for m in range(nz):
        z[m] = z0[m]
    fv[:] = 0.0
    iv[:] = 0
    fv[V_T] = t0
    fv[V_ERROLD] = ERR_MIN
    iv[C_EVERY] = 1
    iv[C_STOP] = 1 << 62
    iv[C_TSTOPS] = tstops
    iv[C_STATUS] = RUNNING
    evaluate(kind, method, dyn, t0, z, p, aux, work, k, ZERO)
    iv[C_NFEV] = 1
    iout = 0
    while tstops == 0 and iout < T and t_out[iout] == t0:
        for m in range(nz):
            z_out[iout, m] = z[m]
        iout += 1
    iv[C_IOUT] = iout
    if not ordered(t_out, direction) or (tstops == 1 and T > 0 and t_out[0] == t0):
        iv[C_STATUS] = BAD_T_EVAL
    elif not finite_row(k, ZERO) or not np.all(np.isfinite(z)):
        iv[C_STATUS] = NONFINITE
    elif adaptive_steps(method, grid):
        h = fopt[F_H0]
        if h <= 0.0:
            h = initial_step(
                kind, method, dyn, t0, z, p, aux, work, direction, fopt[F_RTOL], atol,
                iopt[I_NERR], ztmp, k,
            )  # fmt: skip
            iv[C_NFEV] += 1
        fv[V_H] = min(h, abs(t1 - t0))


@njit(cache=True, fastmath=FMA, error_model="numpy", inline="always")
def finish(ws, stats, fstats):
    """Add the step loop's counts in ws to stats; its status and last times to fstats."""
    fv = ws.fv
    iv = ws.iv
    stats[S_STATUS] = iv[C_STATUS]
    stats[S_NFEV] += iv[C_NFEV]
    stats[S_NACCEPT] += iv[C_NACCEPT]
    stats[S_NREJECT] += iv[C_NREJECT]
    stats[S_NOUT] = iv[C_IOUT]
    fstats[FS_T] = fv[V_T]
    fstats[FS_H] = fv[V_FAIL_H]
    fstats[FS_HNEXT] = fv[V_H]


@njit(cache=True, fastmath=FMA, error_model="numpy")
def no_record(like):
    """An empty Record for ``advance`` with RECORD_NONE."""
    nz = like.size
    return Record(
        np.empty(1),
        np.empty(1),
        np.empty(1, np.int64),
        np.empty((1, nz), like.dtype),
        np.empty((1, 1, nz), like.dtype),
        np.empty((1, 3)),
    )


@njit(cache=True, fastmath=FMA, error_model="numpy", inline="always")
def resume(kind, method, dyn, t1, p, aux, iopt, fopt, atol, grid, stops, ws, rec):
    """Step on from the state in ws (``begin`` with tstops, then this) until the next
    stop or t1. Returns the index of the stop reached, or -1 at t1 or on a failure
    (status in ws)."""
    iv = ws.iv
    advance(
        kind, method, dyn, t1, p, aux, iopt, fopt, atol, grid, stops, rec.ck_z, ws,
        runtime(RECORD_NONE), runtime(2), rec,
    )  # fmt: skip
    if iv[C_STATUS] == STOPPED:
        iv[C_STATUS] = RUNNING
        return iv[C_IOUT] - 1
    return -1


@njit(cache=True, fastmath=FMA, error_model="numpy", inline="always")
def restart(kind, method, dyn, p, aux, ws):
    """After the caller changed z at a stop: k[0] = F(t, z) again (one evaluation)."""
    k, z, ztmp, znew, work, bth, fv, iv = ws
    evaluate(kind, method, dyn, fv[V_T], z, p, aux, work, k, ZERO)
    iv[C_NFEV] += 1
    if not finite_start(k, z):
        iv[C_STATUS] = NONFINITE


@njit(cache=True, fastmath=FMA, error_model="numpy")
def replay(
    kind, method, dyn, t1, p, aux, iopt, fopt, atol, grid, ck_i, ck_z, ck_k, ck_f, q, stop,
    seg_t, seg_h, seg_z, seg_k,
):  # fmt: skip
    """Take the accepted steps ck_i[q] .. stop-1 again from checkpoint q, recording each
    step's start time, size, state and stages in the seg_ buffers (room for them).
    The step loop restarts in exactly the state it had, so the steps (and the rejected
    attempts between them) are those of the forward pass, bit for bit. Returns nfev."""
    nz = state_size(kind, dyn)
    ws = workspace(kind, method, dyn, seg_z)
    k, z, ztmp, znew, work, bth, fv, iv = ws
    for m in range(nz):
        z[m] = ck_z[q, m]
        k[0, m] = ck_k[q, 0, m]
    fv[V_T] = ck_f[q, 0]
    fv[V_H] = ck_f[q, 1]
    fv[V_ERROLD] = ck_f[q, 2]
    iv[C_STEP] = ck_i[q]
    iv[C_STEP0] = ck_i[q]
    iv[C_STOP] = stop
    iv[C_EVERY] = 1
    advance(
        kind, method, dyn, t1, p, aux, iopt, fopt, atol, grid, np.empty(0),
        np.empty((0, nz), seg_z.dtype), ws, runtime(RECORD_STAGES), runtime(2),
        Record(seg_t, seg_h, ck_i, seg_z, seg_k, ck_f),
    )  # fmt: skip
    seg_t[stop - ck_i[q]] = fv[V_T]
    return iv[C_NFEV]


@njit(cache=True, fastmath=FMA, error_model="numpy", inline="always")
def solve_forward(
    method, addr, sizes, t0, t1, z0, p, iopt, fopt, atol, grid, t_out, z_out, stats, fstats
):  # fmt: skip
    """The plain forward solve: ``integrate`` specialized for FORWARD dynamics. An entry
    point: the system's kernels arrive as their addresses (``dynamics.record``)."""
    dyn = record(addr, sizes, z0)
    integrate(
        FORWARD, method, dyn, t0, t1, z0, p, empty_aux(dyn, z0), iopt, fopt, atol, grid, t_out, z_out,
        stats, fstats, runtime(RECORD_NONE), runtime(2),
    )  # fmt: skip


@njit(cache=True, fastmath=FMA, error_model="numpy", inline="always")
def solve_dense(
    method, addr, sizes, t0, t1, z0, p, iopt, fopt, atol, grid, t_out, z_out, stats, fstats
):  # fmt: skip
    """The forward solve keeping every step's start (time, size, state) for dense output."""
    dyn = record(addr, sizes, z0)
    rec_t, rec_h, nsteps, ck_i, ck_z, n_ck, ck_k, ck_f = integrate(
        FORWARD, method, dyn, t0, t1, z0, p, empty_aux(dyn, z0), iopt, fopt, atol, grid, t_out, z_out,
        stats, fstats, runtime(RECORD_STEPS), runtime(2),
    )  # fmt: skip
    return rec_t[: nsteps + 1].copy(), rec_h[:nsteps].copy(), ck_z[:nsteps].copy()


@njit(cache=True, fastmath=FMA, error_model="numpy")
def step_data(kind, method, dyn, t, z, h, p, aux, work, k, ztmp, znew):
    """Recompute one step's stages k[0..s] (k[s] = F at the step's end) and any extra
    dense-output stages from the step's start. Returns the number of evaluations."""
    evaluate(kind, method, dyn, t, z, p, aux, work, k, ZERO)
    nfev = 1 + step_stages(kind, method, dyn, t, z, h, p, aux, work, k, ztmp, znew)
    return nfev + step_end(kind, method, dyn, t, z, h, znew, p, aux, work, k, ztmp)


@njit(cache=True, fastmath=FMA, error_model="numpy")
def dense_query(method, addr, sizes, tq, ts, hs, zs, p, out):
    """Evaluate the dense output of a recorded forward solve at the times tq."""
    dyn = record(addr, sizes, zs)
    A = tableau(method)[0]
    S = A.shape[0] + 1 + tableau(method)[5].shape[0]
    nsteps = hs.size
    nz = zs.shape[1]
    k = np.empty((S, nz), zs.dtype)
    ztmp = np.empty(nz, zs.dtype)
    znew = np.empty(nz, zs.dtype)
    work = np.zeros(work_size(dyn), zs.dtype)
    bth = np.empty(S)
    aux = empty_aux(dyn, zs)
    last = -1
    for q in range(tq.size):
        j = find_step(ts, nsteps, tq[q])
        if j != last:
            step_data(FORWARD, method, dyn, ts[j], zs[j], hs[j], p, aux, work, k, ztmp, znew)
            last = j
        dense_out(FORWARD, method, dyn, (tq[q] - ts[j]) / hs[j], hs[j], zs[j], k, bth, out, q)
