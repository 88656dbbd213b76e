"""The integration engine: one explicit Runge–Kutta stepper driven by Butcher tableaus.

This file is real Python that symode copies next to each system's generated
``_dynamics`` module, so that the generated kernels are module globals here and
numba's on-disk cache can store the compiled engine (DESIGN.md, "Generated code and
its cache"). It never raises: every trajectory writes a status code.

The same stepper integrates every *kind* of dynamics the library needs (forward, with
a running-cost quadrature, the backsolve and interpolated adjoints, forward
sensitivities); ``evaluate`` dispatches on the kind. References: Hairer, Nørsett &
Wanner, *Solving ODEs I*, II.4 (step size control, initial step) and II.6 (dense
output); Chen et al. 2018, Neural ODEs, eq. 4 and Algorithm 1.
"""

import math

import numpy as np
from numba import njit

from ._dynamics import HAS_RUNNING_COST, jvp, rhs, rhs_row, running, running_grad, vjp

# status codes: mirror symode.errors.Status
SUCCESS = 0
MAX_STEPS = 1
STEP_UNDERFLOW = 2
NONFINITE = 3

# kinds of dynamics
FORWARD = 0  # z = y
FORWARD_COST = 1  # z = [y, q], q' = g(t, y, p)
BACKSOLVE = 2  # z = [y, λ, μ], integrated backwards in time
ADJOINT = 3  # z = [λ, μ], y from the forward pass's dense output (aux)
SENSITIVITY = 4  # z = [y, S_0..S_{m-1}, r], m = n_params + n

# iopt / fopt layout
I_FSAL, I_ADAPTIVE, I_ERR_ORDER, I_MAX_STEPS, I_NERR = 0, 1, 2, 3, 4
F_RTOL, F_H0, F_DT_MIN, F_SAFETY, F_FACMIN, F_FACMAX, F_BETA = 0, 1, 2, 3, 4, 5, 6
# stats layout
S_STATUS, S_NFEV, S_NACCEPT, S_NREJECT, S_NOUT = 0, 1, 2, 3, 4
FS_T, FS_H, FS_HNEXT = 0, 1, 2


@njit(cache=True)
def dyn(x):
    """x as a plain runtime value. Passing a literal constant straight to a jitted
    function makes numba compile a specialization for that value: wanted for the
    dynamics kind (dead branches are pruned, which makes the stepper ~10x faster), not
    for flags such as ``record``, which go through ``dyn``."""
    return x + 0


@njit(cache=True)
def dense_weights(theta, P, bth):
    """bth[i] = b_i(θ) = Σ_q P[i, q] θ^(q+1) (Horner)."""
    K = P.shape[1]
    for i in range(P.shape[0]):
        v = P[i, K - 1]
        for q in range(K - 2, -1, -1):
            v = v * theta + P[i, q]
        bth[i] = v * theta


@njit(cache=True)
def dense_eval(theta, h, z, k, P, bth, out):
    """out = z + h Σ_i b_i(θ) k_i: the continuous extension inside one step."""
    dense_weights(theta, P, bth)
    for m in range(out.size):
        acc = 0.0
        for i in range(P.shape[0]):
            acc += bth[i] * k[i, m]
        out[m] = z[m] + h * acc


@njit(cache=True)
def empty_aux(n):
    """A placeholder for ``aux`` (the ADJOINT kind's recorded forward steps)."""
    return (np.zeros((1, n)), np.zeros((1, 1, n)), np.zeros(2), np.ones(1), np.zeros((1, 1)))


@njit(cache=True)
def work_size(n, n_params, s):
    """Scratch: y (n), ∂g/∂y (n), ∂g/∂p (p), unit vector (p), spare (2n), b(θ) (s + 8)."""
    return 4 * n + 2 * n_params + s + 8


@njit(cache=True)
def evaluate(kind, t, z, p, n, aux, work, out):
    """out = F_kind(t, z): the dynamics of every kind, in place.

    ``kind`` reaches here as a compile-time literal, so each specialization keeps only
    its own branch (an untaken branch calling a kernel costs ~100 ns per evaluation).
    """
    if kind == FORWARD:
        rhs(t, z, p, out)
    elif kind == FORWARD_COST:
        rhs(t, z[:n], p, out[:n])
        out[n] = running(t, z[:n], p)
    elif kind == BACKSOLVE:
        rhs(t, z[:n], p, out[:n])
        adjoint_rhs(t, z[:n], z[n : 2 * n], p, n, work, out[n:])
    elif kind == ADJOINT:
        # y(t) from the recorded forward steps: aux = (y_j, stages_j, t_j, h_j, P)
        y = work[:n]
        ys, ks, ts, hs, P = aux
        j = find_step(ts, hs.size, t)
        dense_eval((t - ts[j]) / hs[j], hs[j], ys[j], ks[j], P, work[4 * n + 2 * p.size :], y)
        adjoint_rhs(t, y, z[:n], p, n, work, out)
    else:
        sensitivity_rhs(t, z, p, n, work, out)


@njit(cache=True)
def adjoint_rhs(t, y, lam, p, n, work, out):
    """out = [dλ/dt, dμ/dt] = -[λᵀ∂f/∂y + ∂g/∂y, λᵀ∂f/∂p + ∂g/∂p] (Chen et al. 2018, eq. 4)."""
    n_p = p.size
    vjp(t, y, p, lam, out[:n], out[n : n + n_p])
    for m in range(n + n_p):
        out[m] = -out[m]
    if HAS_RUNNING_COST:
        wy = work[n : 2 * n]
        wp = work[2 * n : 2 * n + n_p]
        running_grad(t, y, p, wy, wp)
        for j in range(n):
            out[j] -= wy[j]
        for q in range(n_p):
            out[n + q] -= wp[q]


@njit(cache=True)
def sensitivity_rhs(t, z, p, n, work, out):
    """z = [y, S_0..S_{m-1}, r]: S_k' = J S_k + ∂f/∂p_k (k < n_p, else J S_k), r_k' = dg/dp_k."""
    n_p = p.size
    y = z[:n]
    rhs(t, y, p, out[:n])
    m_cols = n_p + n
    wy = work[n : 2 * n]
    wp = work[2 * n : 2 * n + n_p]
    w = work[2 * n + n_p : 2 * n + 2 * n_p]
    if HAS_RUNNING_COST:
        running_grad(t, y, p, wy, wp)
    for col in range(m_cols):
        for q in range(n_p):
            w[q] = 0.0
        if col < n_p:
            w[col] = 1.0
        lo = n + col * n
        jvp(t, y, p, z[lo : lo + n], w, out[lo : lo + n])
        r = 0.0
        if HAS_RUNNING_COST:
            for j in range(n):
                r += wy[j] * z[lo + j]
            if col < n_p:
                r += wp[col]
        out[n + m_cols * n + col] = r


@njit(cache=True)
def evaluate_row(kind, t, z, p, n, aux, work, k, r):
    """k[r] = F_kind(t, z) without creating a row view for the forward dynamics."""
    if kind == FORWARD:
        rhs_row(t, z, p, k, r)
    else:
        evaluate(kind, t, z, p, n, aux, work, k[r])


@njit(cache=True)
def copy_row(k, dst, src):
    """k[dst] = k[src]."""
    for m in range(k.shape[1]):
        k[dst, m] = k[src, m]


@njit(cache=True)
def rk_stages(kind, t, z, h, p, n, aux, work, A, c, k, ztmp):
    """Stages 1..s-1 of one explicit RK step; k[0] = F(t, z) must be set."""
    s = A.shape[0]
    for i in range(1, s):
        for m in range(z.size):
            acc = 0.0
            for j in range(i):
                acc += A[i, j] * k[j, m]
            ztmp[m] = z[m] + h * acc
        evaluate_row(kind, t + c[i] * h, ztmp, p, n, aux, work, k, i)


@njit(cache=True)
def extra_stages(kind, t, z, h, p, n, aux, work, Ax, cx, k, ztmp):
    """Stages a continuous extension needs beyond the step (DOP853's three), in
    k[s+1:], from the step's stages and f1 = k[s] (see ButcherTableau.extra_a)."""
    s1 = k.shape[0] - Ax.shape[0]
    for j in range(Ax.shape[0]):
        for m in range(z.size):
            acc = 0.0
            for r in range(s1 + j):
                acc += Ax[j, r] * k[r, m]
            ztmp[m] = z[m] + h * acc
        evaluate_row(kind, t + cx[j] * h, ztmp, p, n, aux, work, k, s1 + j)


@njit(cache=True)
def rk_combine(z, h, b, e, k, znew, zerr):
    s = b.size
    for m in range(z.size):
        acc = 0.0
        err = 0.0
        for i in range(s):
            acc += b[i] * k[i, m]
            err += e[i] * k[i, m]
        znew[m] = z[m] + h * acc
        zerr[m] = h * err


@njit(cache=True)
def error_norm(zerr, z, znew, rtol, atol, nerr):
    """RMS of the scaled error (HNW I, II.4 eq. 4.11), over all components but with only
    the first nerr contributing: the seminorm of Kidger, Chen & Lyons (2021) counts the
    parameter-adjoint channels as error-free, so it never exceeds the full norm."""
    acc = 0.0
    for m in range(nerr):
        sc = atol[m] + rtol * max(abs(z[m]), abs(znew[m]))
        r = zerr[m] / sc
        acc += r * r
    return math.sqrt(acc / z.size)


@njit(cache=True)
def copy(dst, src):
    """dst[:] = src, as a loop (numba compiles slice assignment slowly)."""
    for m in range(dst.size):
        dst[m] = src[m]


@njit(cache=True)
def all_finite(x):
    for m in range(x.size):
        if not np.isfinite(x[m]):
            return False
    return True


@njit(cache=True)
def initial_step(kind, t0, z0, f0, p, n, aux, work, direction, order, rtol, atol, nerr, ztmp, f1):
    """Hairer's starting step size (HNW I, II.4, p. 169); costs one evaluation."""
    d0 = 0.0
    d1 = 0.0
    for m in range(nerr):
        sc = atol[m] + rtol * abs(z0[m])
        d0 += (z0[m] / sc) ** 2
        d1 += (f0[m] / sc) ** 2
    d0 = math.sqrt(d0 / z0.size)
    d1 = math.sqrt(d1 / z0.size)
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
    for m in range(z0.size):
        ztmp[m] = z0[m] + direction * h0 * f0[m]
    evaluate(kind, t0 + direction * h0, ztmp, p, n, aux, work, f1)
    d2 = 0.0
    for m in range(nerr):
        sc = atol[m] + rtol * abs(z0[m])
        d2 += ((f1[m] - f0[m]) / sc) ** 2
    d2 = math.sqrt(d2 / z0.size) / h0
    if not np.isfinite(d2):
        return h0 * 1e-3
    if max(d1, d2) <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (order + 1))
    return min(100.0 * h0, h1)


@njit(cache=True)
def finite_row(k, r):
    for m in range(k.shape[1]):
        if not np.isfinite(k[r, m]):
            return False
    return True


@njit(cache=True)
def grow(a, size):
    """A copy of the 1-D array a in a larger buffer."""
    out = np.empty(size, a.dtype)
    for i in range(a.size):
        out[i] = a[i]
    return out


@njit(cache=True)
def grow_rows(a, size):
    """A copy of the 2-D array a with more rows."""
    out = np.empty((size, a.shape[1]), a.dtype)
    for i in range(a.shape[0]):
        copy(out[i], a[i])
    return out


@njit(cache=True)
def write_outputs(iout, t, tnew, hs, z, znew, k, P, bth, t_out, z_out, direction):
    """Outputs inside the accepted step (t, tnew]: the end state, or the dense output."""
    while iout < t_out.size and direction * (t_out[iout] - tnew) <= 0:
        if t_out[iout] == tnew:
            copy(z_out[iout], znew)
        else:
            dense_eval((t_out[iout] - t) / hs, hs, z, k, P, bth, z_out[iout])
        iout += 1
    return iout


@njit(cache=True)
def record_step(step, t, hs, z, rec_t, rec_h, ck_i, ck_z, n_ck, every, max_ck):
    """Record an accepted step (start time, size) and maybe a checkpoint of its start.

    Checkpoints are kept at steps that are multiples of ``every``; when ``max_ck`` are
    held, every other one is dropped and ``every`` doubles, so between max_ck/2 and
    max_ck checkpoints cover the whole solve, whatever its (unknown) number of steps.
    """
    if step + 1 >= rec_t.size:
        rec_t = grow(rec_t, 2 * rec_t.size)
        rec_h = grow(rec_h, 2 * rec_h.size)
    rec_t[step] = t
    rec_h[step] = hs
    if step % every == 0:
        if n_ck == max_ck:  # thin: keep every other checkpoint
            kept = 0
            for q in range(n_ck):
                if ck_i[q] % (2 * every) == 0:
                    ck_i[kept] = ck_i[q]
                    copy(ck_z[kept], ck_z[q])
                    kept += 1
            n_ck = kept
            every *= 2
        if step % every == 0:
            if n_ck == ck_i.size:
                ck_i = grow(ck_i, min(2 * ck_i.size, max_ck))
                ck_z = grow_rows(ck_z, min(2 * ck_z.shape[0], max_ck))
            ck_i[n_ck] = step
            copy(ck_z[n_ck], z)
            n_ck += 1
    return rec_t, rec_h, ck_i, ck_z, n_ck, every


@njit(cache=True)
def integrate(
    kind, t0, t1, z0, p, n, aux, A, b, c, e, P, Ax, cx, iopt, fopt, atol, grid, t_out, z_out,
    stats, fstats, record, max_ck,
):  # fmt: skip
    """Integrate dz/dt = F_kind(t, z) from t0 to t1 with one explicit RK method.

    Adaptive (iopt[I_ADAPTIVE]) with a PI controller, or fixed steps on ``grid``.
    Writes z at each ``t_out`` (monotone in the direction of integration) into
    ``z_out`` through the method's dense output. When ``record`` is set, returns the
    accepted steps' start times and sizes and checkpoints (step index, state at the
    step's start), thinned so that at most ``max_ck`` are kept.
    """
    fsal = iopt[I_FSAL] == 1
    adaptive = iopt[I_ADAPTIVE] == 1
    max_steps = iopt[I_MAX_STEPS]
    nerr = iopt[I_NERR]
    rtol = fopt[F_RTOL]
    safety = fopt[F_SAFETY]
    facmin = fopt[F_FACMIN]
    facmax = fopt[F_FACMAX]
    beta = fopt[F_BETA]
    expo = 1.0 / (iopt[I_ERR_ORDER] + 1) - 0.75 * beta
    s = A.shape[0]
    nz = z0.size
    T = t_out.size
    direction = 1.0 if t1 >= t0 else -1.0

    n_extra = Ax.shape[0]
    k = np.empty((s + 1 + n_extra, nz), z0.dtype)
    z = z0.copy()
    ztmp = np.empty_like(z)
    znew = np.empty_like(z)
    zerr = np.empty_like(z)
    work = np.zeros(work_size(n, p.size, s))
    bth = np.empty(s + 1 + n_extra)

    cap = 64 if record else 1
    rec_t = np.empty(cap)
    rec_h = np.empty(cap)
    ck_i = np.empty(min(cap, max_ck), np.int64)
    ck_z = np.empty((min(cap, max_ck), nz), z0.dtype)
    n_ck = 0
    every = 1

    evaluate(kind, t0, z, p, n, aux, work, k[0])
    nfev = 1
    naccept = 0
    nreject = 0
    iout = 0
    while iout < T and t_out[iout] == t0:
        copy(z_out[iout], z)
        iout += 1
    status = SUCCESS
    t = t0
    h = 0.0
    fail_h = 0.0
    if not all_finite(k[0]) or not all_finite(z):
        status = NONFINITE
    elif adaptive:
        h = fopt[F_H0]
        if h <= 0.0:
            h = initial_step(
                kind, t0, z, k[0], p, n, aux, work, direction, iopt[I_ERR_ORDER],
                rtol, atol, nerr, ztmp, k[1],
            )  # fmt: skip
            nfev += 1
        h = min(h, abs(t1 - t0))
    errold = 1e-4
    rejected = False
    last_nonfinite = False
    step = 0
    while status == SUCCESS and direction * (t1 - t) > 0:
        if adaptive:
            if step >= max_steps:
                status = MAX_STEPS
                fail_h = h
                break
            hmin = max(fopt[F_DT_MIN], 10.0 * abs(np.nextafter(t, t + direction) - t))
            if h < hmin:
                status = NONFINITE if last_nonfinite else STEP_UNDERFLOW
                fail_h = h
                break
            hs = direction * h
            tnew = t + hs
            if direction * (tnew - t1) >= 0:
                tnew = t1
                hs = t1 - t
        else:
            if step >= grid.size - 1:
                break
            tnew = grid[step + 1]
            hs = tnew - t
        rk_stages(kind, t, z, hs, p, n, aux, work, A, c, k, ztmp)
        rk_combine(z, hs, b, e, k, znew, zerr)
        nfev += s - 1
        hnext = h
        if adaptive:
            err = error_norm(zerr, z, znew, rtol, atol, nerr)
            if not (err <= 1e300) or not all_finite(znew):
                h *= facmin
                nreject += 1
                rejected = True
                last_nonfinite = True
                continue
            last_nonfinite = False
            if err > 1.0:
                h *= max(facmin, safety * err ** (-expo))
                nreject += 1
                rejected = True
                continue
            fac = safety * err ** (-expo) * errold**beta if err > 0 else facmax
            fac = min(1.0 if rejected else facmax, max(facmin, fac))
            hnext = h * fac
            errold = max(err, 1e-4)
            rejected = False
        elif not all_finite(znew):
            status = NONFINITE
            fail_h = abs(hs)
            break
        # the step is accepted
        if fsal:
            copy_row(k, s, s - 1)
        else:
            evaluate_row(kind, tnew, znew, p, n, aux, work, k, s)
            nfev += 1
        if iout < T and direction * (t_out[iout] - tnew) <= 0:
            if n_extra > 0 and t_out[iout] != tnew:  # an output inside the step
                extra_stages(kind, t, z, hs, p, n, aux, work, Ax, cx, k, ztmp)
                nfev += n_extra
            iout = write_outputs(iout, t, tnew, hs, z, znew, k, P, bth, t_out, z_out, direction)
        if record:
            rec_t, rec_h, ck_i, ck_z, n_ck, every = record_step(
                step, t, hs, z, rec_t, rec_h, ck_i, ck_z, n_ck, every, max_ck
            )
        t = tnew
        copy(z, znew)
        copy_row(k, 0, s)
        h = hnext
        step += 1
        naccept += 1
        if not adaptive and not finite_row(k, 0):
            status = NONFINITE
            fail_h = abs(hs)
    if record:
        rec_t[step] = t
    stats[S_STATUS] = status
    stats[S_NFEV] += nfev
    stats[S_NACCEPT] += naccept
    stats[S_NREJECT] += nreject
    stats[S_NOUT] = iout
    fstats[FS_T] = t
    fstats[FS_H] = fail_h
    fstats[FS_HNEXT] = h
    return rec_t, rec_h, step, ck_i, ck_z, n_ck


@njit(cache=True)
def solve_forward(
    t0,
    t1,
    z0,
    p,
    n,
    aux,
    A,
    b,
    c,
    e,
    P,
    Ax,
    cx,
    iopt,
    fopt,
    atol,
    grid,
    t_out,
    z_out,
    stats,
    fstats,
    record,
    max_ck,
):
    """The plain forward solve: ``integrate`` specialized for FORWARD dynamics."""
    return integrate(
        FORWARD, t0, t1, z0, p, n, aux, A, b, c, e, P, Ax, cx, iopt, fopt, atol, grid, t_out, z_out,
        stats, fstats, record, max_ck,
    )  # fmt: skip


@njit(cache=True)
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


@njit(cache=True)
def step_data(kind, t, z, h, p, n, aux, work, A, b, c, Ax, cx, fsal, k, ztmp, znew):
    """Recompute one step's stages k[0..s] (k[s] = F at the step's end) and any extra
    dense-output stages from the step's start."""
    s = A.shape[0]
    evaluate(kind, t, z, p, n, aux, work, k[0])
    rk_stages(kind, t, z, h, p, n, aux, work, A, c, k, ztmp)
    rk_combine(z, h, b, b, k, znew, ztmp)
    if fsal:
        copy_row(k, s, s - 1)
    else:
        evaluate_row(kind, t + h, znew, p, n, aux, work, k, s)
    extra_stages(kind, t, z, h, p, n, aux, work, Ax, cx, k, ztmp)


@njit(cache=True)
def dense_query(tq, ts, hs, zs, p, n, A, b, c, P, Ax, cx, fsal, out):
    """Evaluate the dense output of a recorded forward solve at the times tq."""
    s = A.shape[0]
    nsteps = hs.size
    nz = zs.shape[1]
    k = np.empty((s + 1 + Ax.shape[0], nz), zs.dtype)
    ztmp = np.empty(nz, zs.dtype)
    znew = np.empty(nz, zs.dtype)
    work = np.zeros(work_size(n, p.size, s))
    bth = np.empty(k.shape[0])
    aux = empty_aux(n)
    last = -1
    for q in range(tq.size):
        j = find_step(ts, nsteps, tq[q])
        if j != last:
            step_data(
                FORWARD, ts[j], zs[j], hs[j], p, n, aux, work, A, b, c, Ax, cx, fsal, k, ztmp, znew
            )
            last = j
        dense_eval((tq[q] - ts[j]) / hs[j], hs[j], zs[j], k, P, bth, out[q])
