"""The P1 speed-limit reference: a hand-written Dormand–Prince 5(4) for Lorenz.

One @njit function, the Lorenz right-hand side inlined and the state held in scalars,
with step control equivalent to scipy's ``solve_ivp(method="RK45")``:

- error norm: RMS over components of ``err / (atol + rtol * max(|y|, |y_new|))``;
- accepted when the norm is < 1; factor = 0.9 * err**(-1/5) clipped to [0.2, 10],
  and no growth (factor <= 1) on the step that follows a rejection within the same
  step attempt loop; a rejected step shrinks by max(0.2, 0.9 * err**(-1/5));
- the smallest step ``10 * ulp(t)``, the last step clipped to land on t1;
- Hairer's starting step (HNW I, II.4; scipy's ``select_initial_step``), one rhs call;
- Hairer's dense output (DOPRI5 ``CONTD5``: the 4th-order continuous extension with
  coefficients d1..d7) for the output times, computed only in steps that hold one.

So, from the same y0 it takes the same steps as scipy's RK45 (nfev, accepted and
rejected agree exactly), and ``verify()`` checks that against scipy.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Dormand & Prince (1980) 5(4), FSAL
C2, C3, C4, C5 = 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0
A21 = 1.0 / 5.0
A31, A32 = 3.0 / 40.0, 9.0 / 40.0
A41, A42, A43 = 44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0
A51, A52, A53, A54 = 19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0
A61, A62, A63 = 9017.0 / 3168.0, -355.0 / 33.0, 46732.0 / 5247.0
A64, A65 = 49.0 / 176.0, -5103.0 / 18656.0
B1, B3, B4, B5, B6 = 35.0 / 384.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0
# error weights (5th order minus embedded 4th order), scipy's RK45.E up to sign
E1, E3, E4 = 71.0 / 57600.0, -71.0 / 16695.0, 71.0 / 1920.0
E5, E6, E7 = -17253.0 / 339200.0, 22.0 / 525.0, -1.0 / 40.0
# Hairer's dense output (dopri5.f, CONTD5)
D1 = -12715105075.0 / 11282082432.0
D3 = 87487479700.0 / 32700410799.0
D4 = -10690763975.0 / 1880347072.0
D5 = 701980252875.0 / 199316789632.0
D6 = -1453857185.0 / 822651844.0
D7 = 69997945.0 / 29380423.0

SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0


@njit(cache=True, inline="always")
def _lorenz(x, y, z, s, r, b):
    return s * (y - x), x * (r - z) - y, x * y - b * z


@njit(cache=True)
def dopri5_lorenz(y0, t_eval, s, r, b, rtol, atol, max_steps=1_000_000):
    """Integrate Lorenz (σ=s, ρ=r, β=b) from t_eval[0] to t_eval[-1] (forward).

    Returns ``(Y, stats)``: Y is (len(t_eval), 3); stats = [status, nfev, naccept,
    nreject] with status 0 on success, 1 for max_steps, 2 for a too-small step.
    """
    nt = t_eval.size
    out = np.empty((nt, 3))
    stats = np.zeros(4, np.int64)
    t0 = t_eval[0]
    t1 = t_eval[nt - 1]
    x, y, z = y0[0], y0[1], y0[2]
    out[0, 0], out[0, 1], out[0, 2] = x, y, z
    iout = 1
    k1x, k1y, k1z = _lorenz(x, y, z, s, r, b)
    nfev = 1

    # Hairer's initial step (scipy's select_initial_step with order = 4)
    interval = abs(t1 - t0)
    sx = atol + abs(x) * rtol
    sy = atol + abs(y) * rtol
    sz = atol + abs(z) * rtol
    d0 = math.sqrt(((x / sx) ** 2 + (y / sy) ** 2 + (z / sz) ** 2) / 3.0)
    d1 = math.sqrt(((k1x / sx) ** 2 + (k1y / sy) ** 2 + (k1z / sz) ** 2) / 3.0)
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
    h0 = min(h0, interval)
    fx, fy, fz = _lorenz(x + h0 * k1x, y + h0 * k1y, z + h0 * k1z, s, r, b)
    nfev += 1
    d2 = (
        math.sqrt(((fx - k1x) / sx) ** 2 + ((fy - k1y) / sy) ** 2 + ((fz - k1z) / sz) ** 2)
        / math.sqrt(3.0)
        / h0
    )
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / 5.0)
    h_abs = min(100.0 * h0, h1, interval)

    t = t0
    naccept = 0
    nreject = 0
    status = 0
    while t < t1:
        if naccept + nreject >= max_steps:
            status = 1
            break
        min_step = 10.0 * abs(np.nextafter(t, np.inf) - t)
        if h_abs < min_step:
            h_abs = min_step
        rejected = False
        while True:
            if h_abs < min_step:
                status = 2
                break
            t_new = t + h_abs
            if t_new > t1:
                t_new = t1
            h = t_new - t
            h_abs = abs(h)
            # stages 2..6 (k1 is f(t, y), FSAL)
            k2x, k2y, k2z = _lorenz(
                x + h * (A21 * k1x), y + h * (A21 * k1y), z + h * (A21 * k1z), s, r, b
            )
            k3x, k3y, k3z = _lorenz(
                x + h * (A31 * k1x + A32 * k2x),
                y + h * (A31 * k1y + A32 * k2y),
                z + h * (A31 * k1z + A32 * k2z),
                s,
                r,
                b,
            )
            k4x, k4y, k4z = _lorenz(
                x + h * (A41 * k1x + A42 * k2x + A43 * k3x),
                y + h * (A41 * k1y + A42 * k2y + A43 * k3y),
                z + h * (A41 * k1z + A42 * k2z + A43 * k3z),
                s,
                r,
                b,
            )
            k5x, k5y, k5z = _lorenz(
                x + h * (A51 * k1x + A52 * k2x + A53 * k3x + A54 * k4x),
                y + h * (A51 * k1y + A52 * k2y + A53 * k3y + A54 * k4y),
                z + h * (A51 * k1z + A52 * k2z + A53 * k3z + A54 * k4z),
                s,
                r,
                b,
            )
            k6x, k6y, k6z = _lorenz(
                x + h * (A61 * k1x + A62 * k2x + A63 * k3x + A64 * k4x + A65 * k5x),
                y + h * (A61 * k1y + A62 * k2y + A63 * k3y + A64 * k4y + A65 * k5y),
                z + h * (A61 * k1z + A62 * k2z + A63 * k3z + A64 * k4z + A65 * k5z),
                s,
                r,
                b,
            )
            xn = x + h * (B1 * k1x + B3 * k3x + B4 * k4x + B5 * k5x + B6 * k6x)
            yn = y + h * (B1 * k1y + B3 * k3y + B4 * k4y + B5 * k5y + B6 * k6y)
            zn = z + h * (B1 * k1z + B3 * k3z + B4 * k4z + B5 * k5z + B6 * k6z)
            k7x, k7y, k7z = _lorenz(xn, yn, zn, s, r, b)
            nfev += 6
            ex = h * (E1 * k1x + E3 * k3x + E4 * k4x + E5 * k5x + E6 * k6x + E7 * k7x)
            ey = h * (E1 * k1y + E3 * k3y + E4 * k4y + E5 * k5y + E6 * k6y + E7 * k7y)
            ez = h * (E1 * k1z + E3 * k3z + E4 * k4z + E5 * k5z + E6 * k6z + E7 * k7z)
            ex /= atol + max(abs(x), abs(xn)) * rtol
            ey /= atol + max(abs(y), abs(yn)) * rtol
            ez /= atol + max(abs(z), abs(zn)) * rtol
            err = math.sqrt((ex * ex + ey * ey + ez * ez) / 3.0)
            if err < 1.0:
                if err == 0.0:
                    factor = MAX_FACTOR
                else:
                    factor = min(MAX_FACTOR, SAFETY * err**-0.2)
                if rejected:
                    factor = min(1.0, factor)
                h_abs *= factor
                break
            h_abs *= max(MIN_FACTOR, SAFETY * err**-0.2)
            rejected = True
            nreject += 1
        if status != 0:
            break
        naccept += 1
        # dense output at the output times inside (t, t_new]
        if iout < nt and t_eval[iout] <= t_new:
            dx, dy, dz = xn - x, yn - y, zn - z
            bx, by, bz = h * k1x - dx, h * k1y - dy, h * k1z - dz
            cx, cy, cz = dx - h * k7x - bx, dy - h * k7y - by, dz - h * k7z - bz
            qx = h * (D1 * k1x + D3 * k3x + D4 * k4x + D5 * k5x + D6 * k6x + D7 * k7x)
            qy = h * (D1 * k1y + D3 * k3y + D4 * k4y + D5 * k5y + D6 * k6y + D7 * k7y)
            qz = h * (D1 * k1z + D3 * k3z + D4 * k4z + D5 * k5z + D6 * k6z + D7 * k7z)
            while iout < nt and t_eval[iout] <= t_new:
                if t_eval[iout] == t_new:
                    out[iout, 0], out[iout, 1], out[iout, 2] = xn, yn, zn
                else:
                    th = (t_eval[iout] - t) / h
                    th1 = 1.0 - th
                    out[iout, 0] = x + th * (dx + th1 * (bx + th * (cx + th1 * qx)))
                    out[iout, 1] = y + th * (dy + th1 * (by + th * (cy + th1 * qy)))
                    out[iout, 2] = z + th * (dz + th1 * (bz + th * (cz + th1 * qz)))
                iout += 1
        t = t_new
        x, y, z = xn, yn, zn
        k1x, k1y, k1z = k7x, k7y, k7z
    for i in range(iout, nt):
        out[i, 0] = out[i, 1] = out[i, 2] = np.nan
    stats[0] = status
    stats[1] = nfev
    stats[2] = naccept
    stats[3] = nreject
    return out, stats


# The same solver with FMA contraction allowed (LLVM may fuse a multiply and an add),
# the one fast-math flag symode's engine uses: the speed limit for a solver given that
# flag. Not cached: numba's cache index does not tell the two compilations apart.
dopri5_lorenz_fma = njit(fastmath={"contract"})(dopri5_lorenz.py_func)


def scipy_counts(fun, t_span, y0, method, t_eval, rtol, atol):
    """Run scipy's solve_ivp and count its steps: ``(solution, {nfev, naccept, nreject})``.

    scipy does not report rejected steps, so this counts the attempts (calls of
    ``rk_step``, used by RK45 and DOP853 alike) and the accepted steps (a second run
    without t_eval, which takes the same steps). Untimed: for the stats columns only.
    """
    from scipy.integrate import solve_ivp
    from scipy.integrate._ivp import rk

    attempts = [0]
    real_rk_step = rk.rk_step

    def counting_rk_step(*args):
        attempts[0] += 1
        return real_rk_step(*args)

    rk.rk_step = counting_rk_step
    try:
        sol = solve_ivp(fun, t_span, y0, method, t_eval, rtol=rtol, atol=atol)
    finally:
        rk.rk_step = real_rk_step
    steps = solve_ivp(fun, t_span, y0, method, rtol=rtol, atol=atol).t.size - 1
    return sol, {"nfev": int(sol.nfev), "naccept": steps, "nreject": attempts[0] - steps}


def lorenz_py(s, r, b):
    """The Lorenz right-hand side as the plain Python function a scipy user writes."""

    def f(t, u):
        return np.array([s * (u[1] - u[0]), u[0] * (r - u[2]) - u[1], u[0] * u[1] - b * u[2]])

    return f


def verify(rtol=1e-8, atol=1e-8, t_end=20.0, n_out=2001):
    """Compare with scipy's RK45 on P1: the step counts must match exactly.

    Returns a dict with both counts and the max |difference| of the outputs at
    t <= 5 (beyond that chaos amplifies rounding differences).
    """
    y0 = np.array([1.0, 1.0, 1.0])
    ts = np.linspace(0.0, t_end, n_out)
    params = (10.0, 28.0, 8.0 / 3.0)
    Y, st = dopri5_lorenz(y0, ts, *params, rtol, atol)
    span = (ts[0], ts[-1])
    sol, counts = scipy_counts(lorenz_py(*params), span, y0, "RK45", ts, rtol, atol)
    mine = {"nfev": int(st[1]), "naccept": int(st[2]), "nreject": int(st[3])}
    early = ts <= 5.0
    diff = float(np.max(np.abs(Y[early] - sol.y.T[early])))
    return {"reference": mine, "scipy_rk45": counts, "same_steps": mine == counts, "max_diff": diff}


if __name__ == "__main__":
    print(verify())
