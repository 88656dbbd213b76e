"""Gradients of a loss through an ODE solve: three adjoint modes and forward sensitivities.

The loss is ``L = Σᵢ φᵢ(y(tᵢ)) + ∫ g(t, y, p) dt``: either raw cotangents ``∂L/∂y(tᵢ)``
(``use_loss`` False) or the compiled symbolic loss (``observation``/``running``).

- BACKSOLVE: the augmented state [y, λ, μ] integrated backwards from t1 with the same
  stepper (Chen et al. 2018, Algorithm 1); y is reset to the forward value at each
  observation time; O(1) memory in the number of steps.

Both continuous modes integrate backwards in one sweep of the step loop that stops at
every observation time: λ jumps there by ∂L/∂y(tᵢ), and the step-size controller
carries on across the jump. (Restarting the integration at each observation cost an
initial step and allocations each time, and rejected steps: on P3, 101 observations,
backsolve's backward pass had 43 rejections and now none, and its gradient went from
319 to 264 µs.) The jump is one function (``integrate.make_jump``, the observations'
data in a ``Jumps`` record) wherever it is made: with adaptive steps the step loop makes
it (``integrate.on_stop``) and returns to the sweep only at segment starts; fixed steps
return at each stop (``resume``/``restart``) for the next piece of the grid, and the
sweep makes it. The discrete mode's reverse sweep adds the same jumps' cotangents.
- CHECKPOINT: the forward pass records every step's stages, or keeps at most ``max_ck``
  checkpoints (thinned online) and the backward pass recomputes one segment at a time;
  [λ, μ] is integrated backwards with y from the recorded steps' dense output.
- DISCRETE: the exact reverse sweep through the RK stages of the accepted steps and of
  the dense output at the observation times (step sizes held fixed), equal to finite
  differences of the solver itself.
- FORWARD: forward sensitivities S' = J S + ∂f/∂p, S(t0) = [0 | I].

Continuous modes accept ``nerr`` < full size: the seminorm of Kidger, Chen & Lyons
(2021) that leaves the μ channels out of step-size control.
"""

import numpy as np
from numba import njit, prange

from .dynamics import (
    SPECIALIZED,
    SYSTEM,
    call_single,
    has_running_cost,
    n_params,
    n_states,
    record,
    running_grad,
    vjp,
)
from .integrate import (
    ADJOINT,
    BACKSOLVE,
    C_STATUS,
    C_STEP,
    FMA,
    FORWARD,
    FORWARD_COST,
    I_NERR,
    J_NEXT,
    J_PHI,
    J_SEGMENT,
    ONE,
    RECORD_CHECKPOINTS,
    RECORD_NONE,
    RECORD_STAGES,
    RUNNING,
    S_NACCEPT,
    S_NFEV,
    S_NREJECT,
    S_STATUS,
    SENSITIVITY,
    SUCCESS,
    ZERO,
    Jumps,
    Steps,
    Sweep,
    adaptive_steps,
    begin,
    dense_weights,
    empty_aux,
    finish,
    fsal,
    integrate,
    jump_at,
    make_jump,
    no_record,
    observation_cotangent,
    replay,
    restart,
    resume,
    runtime,
    stage_input,
    tableau,
    workspace,
)  # fmt: skip

# The helpers of the backward loops below allocate nothing (scratch arrays come from
# their callers), so they are compiled without reference counting, like the step loop
# (integrate.advance): no atomic increfs of array arguments and row views per call.
NO_NRT = {"cache": True, "fastmath": FMA, "error_model": "numpy", "_nrt": False}

# an entry point's float outputs ``fout``: the loss, then where the forward and the
# backward pass stopped, each as integrate's fstats (t, the failed step's size, the
# next step's): a failure's message names them, as a solve's does
O_VALUE, O_FORWARD, O_BACKWARD, N_FOUT = 0, 1, 4, 7


@njit(**NO_NRT)
def grid_index(g, t, right):
    """np.searchsorted(g, t, side="right" if right else "left") of an ascending g,
    without numba's reference counting."""
    lo = 0
    hi = g.size
    while lo < hi:
        mid = (lo + hi) // 2
        if g[mid] < t or (right and g[mid] == t):
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(**NO_NRT)
def subgrid_range(grid, ta, tb):
    """The points of the monotone ``grid`` strictly between ta and tb, as a range
    [i0, i1) of the grid in ascending order (reversed if the grid descends): binary
    search, O(log steps) per piece, and points within 1e-9 of a step of either end are
    dropped (no sliver steps at observation times)."""
    lo_t = min(ta, tb)
    hi_t = max(ta, tb)
    m = grid.size
    g = grid if grid[m - 1] >= grid[0] else grid[::-1]
    i0 = grid_index(g, lo_t, True)
    i1 = grid_index(g, hi_t, False)
    tol = 1e-9 * (abs(g[min(i0, m - 1)] - g[max(i0 - 1, 0)]) + abs(hi_t - lo_t) * 1e-3)
    while i0 < i1 and g[i0] - lo_t <= tol:
        i0 += 1
    while i1 > i0 and hi_t - g[i1 - 1] <= tol:
        i1 -= 1
    return i0, i1


@njit(**NO_NRT)
def subgrid(grid, ta, tb, out):
    """ta, the points of ``subgrid_range`` ordered ta → tb, and tb, written to out (room
    for them); returns their number."""
    i0, i1 = subgrid_range(grid, ta, tb)
    g = grid if grid[grid.size - 1] >= grid[0] else grid[::-1]
    count = i1 - i0
    out[0] = ta
    out[count + 1] = tb
    for q in range(count):
        out[q + 1] = g[i0 + q] if tb >= ta else g[i1 - 1 - q]
    return count + 2


@njit(cache=True, fastmath=FMA, error_model="numpy")
def sweep_stops(t_obs, io, t_end, direction, bounds, nb):
    """The stops of a backward sweep that ends at t_end, in its order: the observation
    times t_obs[io], t_obs[io - 1], … (λ jumps there) merged with bounds[:nb] (segment
    starts, already in sweep order), without t_end and a time twice."""
    out = np.empty(io + 1 + nb)
    n = 0
    q = 0
    while True:
        t_o = t_obs[io] if io >= 0 else t_end
        t_b = bounds[q] if q < nb else t_end
        t = t_o if direction * (t_o - t_b) >= 0 else t_b
        if direction * (t - t_end) <= 0:
            break
        out[n] = t
        n += 1
        if t == t_o:
            io -= 1
        if t == t_b:
            q += 1
    return out[:n]


@njit(**NO_NRT)
def piece_grid(method, grid, stops, i, t_start, t_end, ws, gbuf):
    """The fixed steps of the sweep's piece from stop i (i = -1: from t_start) to the
    next stop (or t_end), see ``subgrid``, written to gbuf (``piece_room`` long): returns
    their number, and the step loop's grid index restarts. One piece at a time, so that
    a backsolve sweep stays O(1) in memory for regularly spaced stops. Adaptive steps
    need no grid: returns -1, and the (empty) grid is the sweep's grid."""
    if adaptive_steps(method, grid):
        return -1
    ws.iv[C_STEP] = 0
    ta = t_start if i < 0 else stops[i]
    tb = stops[i + 1] if i + 1 < stops.size else t_end
    return subgrid(grid, ta, tb, gbuf)


@njit(cache=True, fastmath=FMA, error_model="numpy")
def piece_room(method, grid, stops, t_start, t_end):
    """The length of the longest of the sweep's ``piece_grid`` pieces (0 for adaptive
    steps)."""
    if adaptive_steps(method, grid):
        return 0
    room = 0
    for i in range(-1, stops.size):
        ta = t_start if i < 0 else stops[i]
        tb = stops[i + 1] if i + 1 < stops.size else t_end
        i0, i1 = subgrid_range(grid, ta, tb)
        room = max(room, i1 - i0 + 2)
    return room


@njit(cache=True, fastmath=FMA, error_model="numpy")
def add_stats(dst, src):
    """Add the counts of the stats src to dst, and src's failure if dst has none (not
    the number of outputs: dst keeps its own)."""
    dst[S_NFEV] += src[S_NFEV]
    dst[S_NACCEPT] += src[S_NACCEPT]
    dst[S_NREJECT] += src[S_NREJECT]
    if src[S_STATUS] != SUCCESS and dst[S_STATUS] == SUCCESS:
        dst[S_STATUS] = src[S_STATUS]


@njit(cache=True, fastmath=FMA, error_model="numpy")
def start_sweep(kind, method, dyn, t_start, t_end, z0, p, aux, biopt, bfopt, batol, grid, stops):
    """A backward sweep of the step loop from t_start to t_end, stopping at ``stops``
    (``begin`` with tstops): returns its workspace, the buffer of the grid pieces and
    the (empty) record buffers that ``resume`` takes."""
    ws = workspace(kind, method, dyn, z0)
    gbuf = np.empty(piece_room(method, grid, stops, t_start, t_end))
    rec_b = no_record(z0)
    begin(
        kind, method, dyn, t_start, t_end, z0, p, aux, biopt, bfopt, batol, grid, stops,
        rec_b[3], ws, ONE,
    )  # fmt: skip
    return ws, gbuf, rec_b


@njit(cache=True, fastmath=FMA, error_model="numpy")
def end_sweep(st_b, fs_b, ws, z_out):
    """Add a finished sweep's counts (workspace ws) to the stats st_b, where it stopped
    to fs_b; z_out = its z."""
    st = np.zeros(5, np.int64)
    finish(ws, st, fs_b)
    add_stats(st_b, st)
    for m in range(z_out.size):
        z_out[m] = ws.z[m]


@njit(cache=True, fastmath=FMA, error_model="numpy")
def observation_jumps(Zf, cot, data, t_obs, gp, use_loss, n_p):
    """The jumps' record (``Jumps``) of a backward pass over the observations t_obs (the
    last one next): forward states Zf, cotangents or data, ∂φ/∂p into gp; no segments."""
    n = Zf.shape[1]
    ints = np.array([t_obs.size - 1, 1 if use_loss else 0])
    floats = np.array([0.0, np.nan])
    return Jumps(Zf, cot, data, t_obs, gp, np.zeros(n), np.empty(n_p), ints, floats)


@njit(**NO_NRT)
def jumps_at(dyn, t, direction, z, p, jumps, off):
    """``make_jump`` at every observation not before t in the backward pass's direction
    (``direction`` is the forward pass's): those at a sweep's start, and all that remain
    at t0."""
    while jumps.ints[J_NEXT] >= 0 and direction * (jumps.t_obs[jumps.ints[J_NEXT]] - t) >= 0:
        make_jump(dyn, z, p, jumps, off)


# inlined: as a call (LLVM stopped inlining it when the record grew a scratch array)
# the discrete gradient of P3 took 0.119 ms instead of 0.099
@njit(**NO_NRT, inline="always")
def vjp_kind(kind, dyn, t, z, p, zbar, out_z, out_p, wy, wp):
    """(out_z, out_p) = zbarᵀ ∂F/∂(z, p) for the forward kinds (with the cost channel)."""
    n = n_states(dyn)
    vjp(dyn, t, z, p, zbar, out_z, out_p)
    if kind == FORWARD_COST and has_running_cost(dyn):
        out_z[n] = 0.0
        running_grad(dyn, t, z, p, wy, wp)
        for j in range(n):
            out_z[j] += zbar[n] * wy[j]
        for q in range(n_params(dyn)):
            out_p[q] += zbar[n] * wp[q]


@njit(cache=True, fastmath=FMA, error_model="numpy")
def clear_gradient(gy0, gp):
    for j in range(gy0.size):
        gy0[j] = 0.0
    for q in range(gp.size):
        gp[q] = 0.0


@njit(cache=True, fastmath=FMA, error_model="numpy", inline="always")
def forward_gradient(
    method, dyn, t0, t1, y0, p, t_obs, cot, data, use_loss, iopt, fopt, atol, grid, biopt,
    bfopt, batol, max_ck, gy0, gp, st_f, st_b, fout, y_out,
):  # fmt: skip
    """Forward sensitivities: z = [y, S, r] integrated with the state."""
    n = n_states(dyn)
    n_p = n_params(dyn)
    T = t_obs.size
    clear_gradient(gy0, gp)
    lam_y = np.zeros(n)
    wq = np.empty(n_params(dyn))  # scratch of observation_cotangent
    total = 0.0
    m_cols = n_p + n
    zsz = n + m_cols * n + m_cols
    z0 = np.zeros(zsz, y0.dtype)
    for j in range(n):
        z0[j] = y0[j]
        z0[n + (n_p + j) * n + j] = 1.0
    Z = np.empty((T, zsz), y0.dtype)
    integrate(
        SENSITIVITY, method, dyn, t0, t1, z0, p, empty_aux(dyn, y0), iopt, fopt, atol, grid, t_obs, Z,
        st_f, fout[O_FORWARD : O_FORWARD + 3], runtime(RECORD_NONE), runtime(2),
    )  # fmt: skip
    for i in range(T):
        for j in range(n):
            y_out[i, j] = Z[i, j]
    if st_f[S_STATUS] != SUCCESS:
        return
    for i in range(T):
        total += observation_cotangent(dyn, use_loss, Z[i], cot[i], data[i], p, lam_y, gp, wq)
        for col in range(m_cols):
            acc = 0.0
            for j in range(n):
                acc += lam_y[j] * Z[i, n + col * n + j]
            if col < n_p:
                gp[col] += acc
            else:
                gy0[col - n_p] += acc
    if has_running_cost(dyn):
        for col in range(m_cols):
            r = Z[T - 1, n + m_cols * n + col]
            if col < n_p:
                gp[col] += r
            else:
                gy0[col - n_p] += r
        total += running_integral(method, dyn, t0, t1, y0, p, iopt, fopt, atol, grid, st_f)
    fout[O_VALUE] = total


# The forward pass's kind of dynamics (a literal): in the specialized tier FORWARD_COST
# with a running cost, else FORWARD (the system's, one kind compiled); in the generic
# tier FORWARD_COST, which is FORWARD when the loss has no running cost (KIND_SIZES).
if SPECIALIZED:
    FORWARD_PASS = FORWARD_COST if SYSTEM.HAS_RUNNING_COST else FORWARD
else:
    FORWARD_PASS = FORWARD_COST


@njit(cache=True, fastmath=FMA, error_model="numpy")
def forward_pass(
    method, dyn, t0, t1, y0, p, t_obs, iopt, fopt, atol, grid, st_f, fs_f, y_out, gy0, gp, max_ck
):
    """The forward solve of the adjoint modes (z = [y] or [y, q] with a running cost),
    after zeroing the gradients. ``max_ck``: 0 records nothing (backsolve), 1 every
    step's stages, K > 1 at most K checkpoints. Writes y at t_obs into y_out; returns the
    solution at t_obs, ``integrate``'s record tuple, and the running cost's integral (0
    without one; t_obs[-1] == t1 is required for a running cost)."""
    clear_gradient(gy0, gp)
    n = n_states(dyn)
    nz = n + 1 if has_running_cost(dyn) else n
    T = t_obs.size
    if max_ck == 0:
        what = RECORD_NONE
    elif max_ck == 1:
        what = RECORD_STAGES
    else:
        what = RECORD_CHECKPOINTS
    z0 = np.zeros(nz, y0.dtype)
    for j in range(n):
        z0[j] = y0[j]
    Zf = np.empty((T, nz), y0.dtype)
    rec = integrate(
        FORWARD_PASS, method, dyn, t0, t1, z0, p, empty_aux(dyn, y0), iopt, fopt, atol, grid, t_obs, Zf, st_f,
        fs_f, what, max_ck,
    )  # fmt: skip
    for i in range(T):
        for j in range(n):
            y_out[i, j] = Zf[i, j]
    return Zf, rec, Zf[T - 1, n] if has_running_cost(dyn) else 0.0


# The sweeps' loops run once per stop (observation or segment start), so they are
# compiled without reference counting too: with it, unpacking the workspace and the
# record tuples at each stop cost ~60 atomic increfs and decrefs, 30% of P3's
# continuous-adjoint gradient. Their arrays come from the callers.
@njit(**NO_NRT)
def backsolve_sweep(
    method, dyn, t_start, t0, p, aux, biopt, bfopt, batol, grid, stops, ws, gbuf, rec_b
):
    """Backsolve's sweep from t_start (``start_sweep``) to t0: at each stop (an
    observation) y is reset to the forward value and λ jumps (``make_jump``, the data in
    aux.jumps). Adaptive steps make the jumps in the step loop (``on_stop``) and run
    through; fixed steps return here at every stop for the next grid piece, and the same
    jump is made here."""
    m = piece_grid(method, grid, stops, -1, t_start, t0, ws, gbuf)
    g = grid if m < 0 else gbuf[:m]
    while ws.iv[C_STATUS] == RUNNING:
        i = resume(BACKSOLVE, method, dyn, t0, p, aux, biopt, bfopt, batol, g, stops, ws, rec_b)
        if i < 0:
            break
        if jump_at(dyn, stops[i], ws.z, p, aux.jumps, n_states(dyn)):
            restart(BACKSOLVE, method, dyn, p, aux, ws)
        m = piece_grid(method, grid, stops, i, t_start, t0, ws, gbuf)
        g = grid if m < 0 else gbuf[:m]


@njit(**NO_NRT)
def checkpoint_sweep(
    method, dyn, t_start, t0, p, aux, biopt, bfopt, batol, grid, stops, ws, gbuf, rec_b, q,
    bounds, iopt, fopt, atol, t1, max_ck, rec, st_b,
):  # fmt: skip
    """The checkpoint mode's sweep of [λ, μ] from t_start (``start_sweep``) to t0: λ
    jumps at the observations (``make_jump``, the data in aux.jumps) and segment q - 1 is
    loaded at segment q's start. Adaptive steps make the jumps in the step loop
    (``on_stop``) and return here only at segment starts; fixed steps return at every
    stop (the next grid piece). Where the loop returned, the jump is made here, after the
    segment is loaded."""
    n_seg = bounds.size
    seg_z, seg_k, seg_t, seg_h, cbuf, iw = aux.steps
    floats = aux.jumps.floats
    floats[J_SEGMENT] = bounds[n_seg - 1 - q] if q > 0 else np.nan
    m = piece_grid(method, grid, stops, -1, t_start, t0, ws, gbuf)
    g = grid if m < 0 else gbuf[:m]
    while ws.iv[C_STATUS] == RUNNING:
        i = resume(ADJOINT, method, dyn, t0, p, aux, biopt, bfopt, batol, g, stops, ws, rec_b)
        if i < 0:
            break
        if q > 0 and stops[i] == bounds[n_seg - 1 - q]:
            q -= 1
            load_segment(
                method, dyn, q, p, iopt, fopt, atol, grid, t1, max_ck, rec, seg_t, seg_h, seg_z,
                seg_k, iw, st_b,
            )  # fmt: skip
            floats[J_SEGMENT] = bounds[n_seg - 1 - q] if q > 0 else np.nan
        if jump_at(dyn, stops[i], ws.z, p, aux.jumps, ZERO):
            restart(ADJOINT, method, dyn, p, aux, ws)
        m = piece_grid(method, grid, stops, i, t_start, t0, ws, gbuf)
        g = grid if m < 0 else gbuf[:m]


@njit(cache=True, fastmath=FMA, error_model="numpy", inline="always")
def backsolve_gradient(
    method, dyn, t0, t1, y0, p, t_obs, cot, data, use_loss, iopt, fopt, atol, grid, biopt,
    bfopt, batol, max_ck, gy0, gp, st_f, st_b, fout, y_out,
):  # fmt: skip
    """Chen et al. 2018, Algorithm 1: [y, λ, μ] backwards in one sweep that stops at
    each observation, where y is reset to the forward value and λ jumps."""
    n = n_states(dyn)
    n_p = n_params(dyn)
    T = t_obs.size
    Zf, rec, total = forward_pass(
        method,
        dyn,
        t0,
        t1,
        y0,
        p,
        t_obs,
        iopt,
        fopt,
        atol,
        grid,
        st_f,
        fout[O_FORWARD : O_FORWARD + 3],
        y_out,
        gy0,
        gp,
        runtime(0),
    )
    if st_f[S_STATUS] != SUCCESS:
        return
    direction = 1.0 if t1 >= t0 else -1.0
    jumps = observation_jumps(Zf, cot, data, t_obs, gp, use_loss, n_p)
    aux = Sweep(empty_aux(dyn, y0), jumps)
    za = np.zeros(2 * n + n_p, y0.dtype)
    # λ = 0 after the last observation (no running cost there): start at it
    t_start = t_obs[T - 1]
    make_jump(dyn, za, p, jumps, n)
    if t_start != t0:
        stops = sweep_stops(t_obs, jumps.ints[J_NEXT], t0, direction, np.empty(0), 0)
        ws, gbuf, rec_b = start_sweep(
            BACKSOLVE, method, dyn, t_start, t0, za, p, aux, biopt, bfopt, batol, grid, stops
        )
        backsolve_sweep(
            method, dyn, t_start, t0, p, aux, biopt, bfopt, batol, grid, stops, ws, gbuf, rec_b
        )
        end_sweep(st_b, fout[O_BACKWARD : O_BACKWARD + 3], ws, za)
    jumps_at(dyn, t0, direction, za, p, jumps, n)
    for j in range(n):
        gy0[j] = za[n + j]
    for q in range(n_p):
        gp[q] += za[2 * n + q]
    fout[O_VALUE] = total + jumps.floats[J_PHI]


@njit(cache=True, fastmath=FMA, error_model="numpy")
def segments(method, max_ck, rec, like):
    """The recorded forward pass as segments to sweep backwards: (n_seg, seg_t, seg_h,
    seg_z, seg_k). With every step's stages recorded (max_ck == 1) the record itself is
    the one segment; with checkpoints, buffers for the longest segment (``load_segment``
    replays into them)."""
    rec_t, rec_h, nsteps, ck_i, ck_z, n_ck, ck_k, ck_f = rec
    if max_ck == 1:
        return 1, rec_t, rec_h, ck_z, ck_k
    A = tableau(method)[0]
    S = A.shape[0] + 1 + tableau(method)[5].shape[0]
    nz = ck_z.shape[1]
    max_seg = 1
    for q in range(n_ck):
        end = ck_i[q + 1] if q + 1 < n_ck else nsteps
        max_seg = max(max_seg, end - ck_i[q])
    # a checkpoint taken after the last step (its number a multiple of the spacing)
    # starts no segment: sweeping it would stop twice at t1
    n_seg = n_ck - 1 if n_ck > 1 and ck_i[n_ck - 1] >= nsteps else n_ck
    return (
        n_seg,
        np.empty(max_seg + 1),
        np.empty(max_seg + 1),
        np.empty((max_seg + 1, nz), like.dtype),
        np.empty((max_seg + 1, S, nz), like.dtype),
    )


@njit(cache=True, fastmath=FMA, error_model="numpy")
def load_segment(
    method, dyn, q, p, iopt, fopt, atol, grid, t1, max_ck, rec, seg_t, seg_h, seg_z, seg_k, iw,
    st_b,
):  # fmt: skip
    """Make segment q's steps available in the seg_ buffers (replaying them from
    checkpoint q unless every step was recorded); returns its number of steps. With
    Resets the interpolant's search state iw (see ``stage_eval``) to the segment's
    last step."""
    rec_t, rec_h, nsteps, ck_i, ck_z, n_ck, ck_k, ck_f = rec
    if max_ck == 1:
        nseg = nsteps
    else:
        stop = ck_i[q + 1] if q + 1 < n_ck else nsteps
        st_b[S_NFEV] += replay(
            FORWARD_PASS, method, dyn, t1, p, empty_aux(dyn, seg_z[0]), iopt, fopt, atol, grid, ck_i, ck_z,
            ck_k, ck_f, q, stop, seg_t, seg_h, seg_z, seg_k,
        )  # fmt: skip
        nseg = stop - ck_i[q]
    iw[0] = nseg - 1
    iw[1] = nseg
    iw[3] = -1
    return nseg


@njit(cache=True, fastmath=FMA, error_model="numpy", inline="always")
def checkpoint_gradient(
    method, dyn, t0, t1, y0, p, t_obs, cot, data, use_loss, iopt, fopt, atol, grid, biopt,
    bfopt, batol, max_ck, gy0, gp, st_f, st_b, fout, y_out,
):  # fmt: skip
    """[λ, μ] backwards in one sweep, y from the recorded steps' dense output; the sweep
    stops at each observation (λ jumps) and at each segment's start (the next segment
    is loaded)."""
    n = n_states(dyn)
    n_p = n_params(dyn)
    Zf, rec, total = forward_pass(
        method,
        dyn,
        t0,
        t1,
        y0,
        p,
        t_obs,
        iopt,
        fopt,
        atol,
        grid,
        st_f,
        fout[O_FORWARD : O_FORWARD + 3],
        y_out,
        gy0,
        gp,
        max_ck,
    )
    if st_f[S_STATUS] != SUCCESS:
        return
    direction = 1.0 if t1 >= t0 else -1.0
    ck_f = rec[7]
    n_seg, seg_t, seg_h, seg_z, seg_k = segments(method, max_ck, rec, y0)
    K = tableau(method)[4].shape[1]
    iw = np.array([0, 1, 1 if t1 >= t0 else -1, -1], np.int64)
    jumps = observation_jumps(Zf, cot, data, t_obs, gp, use_loss, n_p)
    aux = Sweep(Steps(seg_z, seg_k, seg_t, seg_h, np.empty((K + 1, n)), iw), jumps)
    q = n_seg - 1
    bounds = np.empty(n_seg)  # the segments' start times, in the sweep's order
    for r in range(n_seg - 1):
        bounds[r] = ck_f[n_seg - 1 - r, 0]
    nseg = load_segment(
        method, dyn, q, p, iopt, fopt, atol, grid, t1, max_ck, rec, seg_t, seg_h, seg_z, seg_k,
        iw, st_b,
    )  # fmt: skip
    t_start = seg_t[nseg]
    za = np.zeros(n + n_p, y0.dtype)
    jumps_at(dyn, t_start, direction, za, p, jumps, ZERO)
    if t_start != t0:
        stops = sweep_stops(t_obs, jumps.ints[J_NEXT], t0, direction, bounds, n_seg - 1)
        ws, gbuf, rec_b = start_sweep(
            ADJOINT, method, dyn, t_start, t0, za, p, aux, biopt, bfopt, batol, grid, stops
        )
        checkpoint_sweep(
            method, dyn, t_start, t0, p, aux, biopt, bfopt, batol, grid, stops, ws, gbuf, rec_b,
            q, bounds, iopt, fopt, atol, t1, max_ck, rec, st_b,
        )  # fmt: skip
        end_sweep(st_b, fout[O_BACKWARD : O_BACKWARD + 3], ws, za)
    jumps_at(dyn, t0, direction, za, p, jumps, ZERO)
    for j in range(n):
        gy0[j] = za[j]
    for q in range(n_p):
        gp[q] += za[n + q]
    fout[O_VALUE] = total + jumps.floats[J_PHI]


@njit(cache=True, fastmath=FMA, error_model="numpy", inline="always")
def discrete_gradient(
    method, dyn, t0, t1, y0, p, t_obs, cot, data, use_loss, iopt, fopt, atol, grid, biopt,
    bfopt, batol, max_ck, gy0, gp, st_f, st_b, fout, y_out,
):  # fmt: skip
    """The reverse sweep through the RK stages of the accepted steps and of the dense
    output at the observation times, step sizes held fixed."""
    n = n_states(dyn)
    n_p = n_params(dyn)
    Zf, rec, total = forward_pass(
        method,
        dyn,
        t0,
        t1,
        y0,
        p,
        t_obs,
        iopt,
        fopt,
        atol,
        grid,
        st_f,
        fout[O_FORWARD : O_FORWARD + 3],
        y_out,
        gy0,
        gp,
        max_ck,
    )
    if st_f[S_STATUS] != SUCCESS:
        return
    nz = n + 1 if has_running_cost(dyn) else n
    direction = 1.0 if t1 >= t0 else -1.0
    A = tableau(method)[0]
    S = A.shape[0] + 1 + tableau(method)[5].shape[0]  # stages, f1, extra dense stages
    n_seg, seg_t, seg_h, seg_z, seg_k = segments(method, max_ck, rec, y0)
    jumps = observation_jumps(Zf, cot, data, t_obs, gp, use_loss, n_p)
    wy = np.zeros(n, y0.dtype)  # ∂g/∂y, ∂g/∂p (the kernel writes the state's dtype)
    wp = np.zeros(n_p, y0.dtype)
    bth = np.empty(S)
    zbar = np.zeros(nz)
    if has_running_cost(dyn):
        zbar[n] = 1.0
    zbar_new = np.zeros(nz)
    kbar = np.zeros((S, nz))
    oz = np.zeros(nz)
    op = np.zeros(n_p)
    Y = np.empty(nz, y0.dtype)
    z_end = np.empty(nz, y0.dtype)
    iw = np.zeros(4, np.int64)  # (no interpolant: the sweep is discrete)
    for q in range(n_seg - 1, -1, -1):
        nseg = load_segment(
            method, dyn, q, p, iopt, fopt, atol, grid, t1, max_ck, rec, seg_t, seg_h, seg_z, seg_k,
            iw, st_b,
        )  # fmt: skip
        reverse_steps(
            method, dyn, nseg, seg_t, seg_h, seg_z, seg_k, jumps, p, gp, st_b, direction, zbar,
            zbar_new, kbar, oz, op, wy, wp, bth, Y, z_end,
        )  # fmt: skip
    jumps_at(dyn, t0, direction, zbar, p, jumps, ZERO)
    for j in range(n):
        gy0[j] = zbar[j]
    fout[O_VALUE] = total + jumps.floats[J_PHI]


@njit(**NO_NRT)
def reverse_steps(
    method, dyn, nseg, seg_t, seg_h, seg_z, seg_k, jumps, p, gp, st_b, direction, zbar, zbar_new,
    kbar, oz, op, wy, wp, bth, Y, z_end,
):  # fmt: skip
    """The discrete adjoint's reverse sweep over the nseg steps of one segment, last to
    first: the observations inside each step (end state or dense output), then its
    stages in reverse. The observations' cotangents are the continuous modes' jumps
    (``make_jump``), into zbar at a step's end and, for dense output, into the step's
    start and the stages that made it. Scratch arrays from the caller."""
    n = n_states(dyn)
    n_p = n_params(dyn)
    kind_f = FORWARD_COST if has_running_cost(dyn) else FORWARD
    nz = n + 1 if has_running_cost(dyn) else n
    A, b, c, e, P, Ax, cx = tableau(method)
    s = A.shape[0]
    n_extra = Ax.shape[0]
    S = s + 1 + n_extra  # stages, f1, extra dense-output stages
    for r in range(nseg - 1, -1, -1):
        ta = seg_t[r]
        tb = seg_t[r + 1]
        h = seg_h[r]
        # outputs inside (ta, tb]: at tb it is the step's end state, else dense output
        for m in range(nz):
            for st in range(S):
                kbar[st, m] = 0.0
        io = jumps.ints[J_NEXT]
        while io >= 0 and direction * (jumps.t_obs[io] - ta) > 0:
            if jumps.t_obs[io] == tb:
                make_jump(dyn, zbar, p, jumps, ZERO)
            else:
                make_jump(dyn, zbar_new, p, jumps, ZERO)  # held until the step's start
                dense_weights(method, (jumps.t_obs[io] - ta) / h, bth)
                for j in range(n):
                    for st in range(S):
                        kbar[st, j] += h * bth[st] * jumps.lam_y[j]
            io = jumps.ints[J_NEXT]
        # extra dense-output stages x_j = F(ta + cx_j h, X_j), in reverse
        for jx in range(n_extra - 1, -1, -1):
            stage_input(method, s + 1 + jx, seg_z[r], h, seg_k[r], Y)
            vjp_kind(kind_f, dyn, ta + cx[jx] * h, Y, p, kbar[s + 1 + jx], oz, op, wy, wp)
            st_b[S_NFEV] += 1
            for qq in range(n_p):
                gp[qq] += op[qq]
            for m in range(nz):
                zbar_new[m] += oz[m]
                for l in range(s + 1 + jx):
                    kbar[l, m] += h * Ax[jx, l] * oz[m]
        # f1 = F(tb, z_{i+1}) feeds the Hermite rows of non-FSAL methods (and the
        # extra stages); for FSAL methods f1 is the last stage itself
        if fsal(method):
            for m in range(nz):
                kbar[s - 1, m] += kbar[s, m]
        else:
            if r + 1 < nseg:
                z_next = seg_z[r + 1]
            else:
                seg_end(seg_z, seg_k, r, h, method, z_end)
                z_next = z_end
            vjp_kind(kind_f, dyn, tb, z_next, p, kbar[s], oz, op, wy, wp)
            st_b[S_NFEV] += 1
            for m in range(nz):
                zbar[m] += oz[m]
            for qq in range(n_p):
                gp[qq] += op[qq]
        for m in range(nz):
            for st in range(s):
                kbar[st, m] += h * b[st] * zbar[m]
        for st in range(s - 1, -1, -1):
            stage_input(method, st, seg_z[r], h, seg_k[r], Y)
            vjp_kind(kind_f, dyn, ta + c[st] * h, Y, p, kbar[st], oz, op, wy, wp)
            st_b[S_NFEV] += 1
            for qq in range(n_p):
                gp[qq] += op[qq]
            for m in range(nz):
                for l in range(st):
                    kbar[l, m] += h * A[st, l] * oz[m]
            for m in range(nz):
                zbar_new[m] += oz[m]
        for m in range(nz):
            zbar[m] += zbar_new[m]
            zbar_new[m] = 0.0


@njit(**NO_NRT)
def seg_end(seg_z, seg_k, r, h, method, out):
    """out = the end state of step r of a segment, z_r + h Σ b_i k_i (as the stepper
    made it)."""
    A, b, c, e, P, Ax, cx = tableau(method)
    for m in range(out.size):
        acc = 0.0
        for i in range(A.shape[0]):
            acc += b[i] * seg_k[r, i, m]
        out[m] = seg_z[r, m] + h * acc
    return out


@njit(cache=True, fastmath=FMA, error_model="numpy")
def running_integral(method, dyn, t0, t1, y0, p, iopt, fopt, atol, grid, st):
    """∫ g dt along the trajectory (forward-sensitivity mode's loss value)."""
    n = n_states(dyn)
    z0 = np.zeros(n + 1, y0.dtype)
    for j in range(n):
        z0[j] = y0[j]
    Z = np.empty((1, n + 1), y0.dtype)
    fst = np.zeros(3)
    # the options were sized for the sensitivity system: error-control [y, q] only
    io = iopt.copy()
    io[I_NERR] = n + 1
    st_q = np.zeros(5, np.int64)
    integrate(
        FORWARD_COST, method, dyn, t0, t1, z0, p, empty_aux(dyn, y0), io, fopt, atol, grid,
        np.array([t1]), Z, st_q, fst, runtime(RECORD_NONE), runtime(2),
    )  # fmt: skip
    add_stats(st, st_q)
    return Z[0, n]


# The entry points, one per adjoint mode (each compiles only its mode); the method is
# data in the generic tier, a literal in the specialized one (symode.codegen's
# generated ``gradient_<mode>_<k>`` call these with the method's number). The kernels
# arrive as their addresses (``dynamics.record``). Each writes the gradient of L w.r.t.
# y0 (gy0) and p (gp) for one trajectory, L into fout[O_VALUE], where each pass stopped
# into fout[O_FORWARD:], fout[O_BACKWARD:] (t, the failed step's size, the next), the forward solution at
# t_obs into y_out (T, n), and the passes' statistics into st_f, st_b. ``max_ck`` = 1
# records every step's stages on the forward pass (one segment, no recomputation);
# K > 1 keeps at most K checkpoints of the step loop and replays one segment at a time:
# memory O(K + steps/K).
#
# Each is one function down to the sweeps: numba links every callee's code into its
# caller and optimizes the whole again, so a chain of thin wrappers (entry, mode
# dispatch, forward-pass kind) re-optimized the step loops once per link; inlining
# them (and integrate_ws, forward_pass) took the checkpoint gradient's first compile
# from 57 to 48 s (2-core machine, numba 0.68).
ENTRY = {"cache": True, "fastmath": FMA, "error_model": "numpy"}
ENSEMBLE = {**ENTRY, "parallel": True}


@njit(**ENTRY)
def gradient_backsolve(
    method, addr, sizes, t0, t1, y0, p, t_obs, cot, data, use_loss, iopt, fopt, atol, grid,
    biopt, bfopt, batol, max_ck, gy0, gp, st_f, st_b, fout, y_out,
):  # fmt: skip
    backsolve_gradient(
        method, record(addr, sizes, y0), t0, t1, y0, p, t_obs, cot, data, use_loss, iopt,
        fopt, atol, grid, biopt, bfopt, batol, max_ck, gy0, gp, st_f, st_b, fout, y_out,
    )  # fmt: skip


@njit(**ENSEMBLE)
def gradient_ensemble_backsolve(
    method, addr, sizes, T0, T1, Y0, Pm, t_obs, NT, cot, data, use_loss, iopt, fopt, atol,
    grid, biopt, bfopt, batol, max_ck, GY0, GP, ST_F, ST_B, FOUT, Y_OUT, single,
):  # fmt: skip
    # each trajectory calls the single-trajectory entry (dynamics.call_single), on its
    # own span and the first NT[r] times of its row r of t_obs (a padded batch; r = 0 for
    # all when they share one row); ``row_arguments`` is the same call in Python
    for i in prange(Y0.shape[0]):
        r = np.int64(i) if t_obs.shape[0] > 1 else np.int64(0)  # (prange: i is unsigned)
        m = NT[r]
        call_single(
            gradient_backsolve,
            single,
            (
                method, addr, sizes, T0[i], T1[i], Y0[i], Pm[i], t_obs[r, :m], cot[i, :m],
                data[i, :m], use_loss, iopt, fopt, atol, grid, biopt, bfopt, batol, max_ck,
                GY0[i], GP[i], ST_F[i], ST_B[i], FOUT[i], Y_OUT[i, :m],
            ),
        )  # fmt: skip


@njit(**ENTRY)
def gradient_checkpoint(
    method, addr, sizes, t0, t1, y0, p, t_obs, cot, data, use_loss, iopt, fopt, atol, grid,
    biopt, bfopt, batol, max_ck, gy0, gp, st_f, st_b, fout, y_out,
):  # fmt: skip
    checkpoint_gradient(
        method, record(addr, sizes, y0), t0, t1, y0, p, t_obs, cot, data, use_loss, iopt,
        fopt, atol, grid, biopt, bfopt, batol, max_ck, gy0, gp, st_f, st_b, fout, y_out,
    )  # fmt: skip


@njit(**ENSEMBLE)
def gradient_ensemble_checkpoint(
    method, addr, sizes, T0, T1, Y0, Pm, t_obs, NT, cot, data, use_loss, iopt, fopt, atol,
    grid, biopt, bfopt, batol, max_ck, GY0, GP, ST_F, ST_B, FOUT, Y_OUT, single,
):  # fmt: skip
    # each trajectory calls the single-trajectory entry (dynamics.call_single), on its
    # own span and the first NT[r] times of its row r of t_obs (a padded batch; r = 0 for
    # all when they share one row); ``row_arguments`` is the same call in Python
    for i in prange(Y0.shape[0]):
        r = np.int64(i) if t_obs.shape[0] > 1 else np.int64(0)  # (prange: i is unsigned)
        m = NT[r]
        call_single(
            gradient_checkpoint,
            single,
            (
                method, addr, sizes, T0[i], T1[i], Y0[i], Pm[i], t_obs[r, :m], cot[i, :m],
                data[i, :m], use_loss, iopt, fopt, atol, grid, biopt, bfopt, batol, max_ck,
                GY0[i], GP[i], ST_F[i], ST_B[i], FOUT[i], Y_OUT[i, :m],
            ),
        )  # fmt: skip


@njit(**ENTRY)
def gradient_discrete(
    method, addr, sizes, t0, t1, y0, p, t_obs, cot, data, use_loss, iopt, fopt, atol, grid,
    biopt, bfopt, batol, max_ck, gy0, gp, st_f, st_b, fout, y_out,
):  # fmt: skip
    discrete_gradient(
        method, record(addr, sizes, y0), t0, t1, y0, p, t_obs, cot, data, use_loss, iopt,
        fopt, atol, grid, biopt, bfopt, batol, max_ck, gy0, gp, st_f, st_b, fout, y_out,
    )  # fmt: skip


@njit(**ENSEMBLE)
def gradient_ensemble_discrete(
    method, addr, sizes, T0, T1, Y0, Pm, t_obs, NT, cot, data, use_loss, iopt, fopt, atol,
    grid, biopt, bfopt, batol, max_ck, GY0, GP, ST_F, ST_B, FOUT, Y_OUT, single,
):  # fmt: skip
    # each trajectory calls the single-trajectory entry (dynamics.call_single), on its
    # own span and the first NT[r] times of its row r of t_obs (a padded batch; r = 0 for
    # all when they share one row); ``row_arguments`` is the same call in Python
    for i in prange(Y0.shape[0]):
        r = np.int64(i) if t_obs.shape[0] > 1 else np.int64(0)  # (prange: i is unsigned)
        m = NT[r]
        call_single(
            gradient_discrete,
            single,
            (
                method, addr, sizes, T0[i], T1[i], Y0[i], Pm[i], t_obs[r, :m], cot[i, :m],
                data[i, :m], use_loss, iopt, fopt, atol, grid, biopt, bfopt, batol, max_ck,
                GY0[i], GP[i], ST_F[i], ST_B[i], FOUT[i], Y_OUT[i, :m],
            ),
        )  # fmt: skip


@njit(**ENTRY)
def gradient_forward(
    method, addr, sizes, t0, t1, y0, p, t_obs, cot, data, use_loss, iopt, fopt, atol, grid,
    biopt, bfopt, batol, max_ck, gy0, gp, st_f, st_b, fout, y_out,
):  # fmt: skip
    forward_gradient(
        method, record(addr, sizes, y0), t0, t1, y0, p, t_obs, cot, data, use_loss, iopt,
        fopt, atol, grid, biopt, bfopt, batol, max_ck, gy0, gp, st_f, st_b, fout, y_out,
    )  # fmt: skip


@njit(**ENSEMBLE)
def gradient_ensemble_forward(
    method, addr, sizes, T0, T1, Y0, Pm, t_obs, NT, cot, data, use_loss, iopt, fopt, atol,
    grid, biopt, bfopt, batol, max_ck, GY0, GP, ST_F, ST_B, FOUT, Y_OUT, single,
):  # fmt: skip
    # each trajectory calls the single-trajectory entry (dynamics.call_single), on its
    # own span and the first NT[r] times of its row r of t_obs (a padded batch; r = 0 for
    # all when they share one row); ``row_arguments`` is the same call in Python
    for i in prange(Y0.shape[0]):
        r = np.int64(i) if t_obs.shape[0] > 1 else np.int64(0)  # (prange: i is unsigned)
        m = NT[r]
        call_single(
            gradient_forward,
            single,
            (
                method, addr, sizes, T0[i], T1[i], Y0[i], Pm[i], t_obs[r, :m], cot[i, :m],
                data[i, :m], use_loss, iopt, fopt, atol, grid, biopt, bfopt, batol, max_ck,
                GY0[i], GP[i], ST_F[i], ST_B[i], FOUT[i], Y_OUT[i, :m],
            ),
        )  # fmt: skip


def row_arguments(args, i=0):
    """The arguments ``gradient_ensemble_<mode>(*args, single)`` passes to
    ``gradient_<mode>`` for member i (the Python side types them to find that entry's
    compiled code)."""
    (method, addr, sizes, T0, T1, Y0, Pm, t_obs, NT, cot, data, use_loss, iopt, fopt, atol,
     grid, biopt, bfopt, batol, max_ck, GY0, GP, ST_F, ST_B, FOUT, Y_OUT) = args  # fmt: skip
    r = i if t_obs.shape[0] > 1 else 0
    m = NT[r]
    return (
        method, addr, sizes, T0[i], T1[i], Y0[i], Pm[i], t_obs[r, :m], cot[i, :m], data[i, :m],
        use_loss, iopt, fopt, atol, grid, biopt, bfopt, batol, max_ck, GY0[i], GP[i], ST_F[i],
        ST_B[i], FOUT[i], Y_OUT[i, :m],
    )  # fmt: skip
