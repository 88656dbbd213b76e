"""Ensembles: B independent trajectories, one per thread (numba prange).

Each trajectory runs the very same ``integrate`` as a single solve, with its own
adaptive steps, so one stiff member never slows the others and the results equal
the one-by-one solves bit for bit.
"""

from numba import njit, prange

from .integrate import FORWARD, dyn, integrate


@njit(cache=True, parallel=True)
def solve_ensemble(
    t0, t1, Z0, Pm, aux, A, b, c, e, P, Ax, cx, iopt, fopt, atol, grid, t_out, Z_out, stats, fstats
):
    n = Z0.shape[1]
    for i in prange(Z0.shape[0]):
        integrate(
            FORWARD, t0, t1, Z0[i], Pm[i], n, aux, A, b, c, e, P, Ax, cx, iopt, fopt, atol, grid,
            t_out, Z_out[i], stats[i], fstats[i], dyn(0), dyn(2),
        )  # fmt: skip
