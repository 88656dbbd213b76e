"""Ensembles: B independent trajectories, one per thread (numba prange).

Each trajectory runs the very same ``integrate`` as a single solve, with its own
adaptive steps, so one stiff member never slows the others and the results equal
the one-by-one solves bit for bit.
"""

from numba import njit, prange

from .integrate import FMA, FORWARD, RECORD_NONE, dyn, empty_aux, integrate


@njit(cache=True, parallel=True, fastmath=FMA, error_model="numpy")
def solve_ensemble(
    method, t0, t1, Z0, Pm, iopt, fopt, atol, grid, t_out, Z_out, stats, fstats
):  # fmt: skip
    aux = empty_aux(Z0[0])
    for i in prange(Z0.shape[0]):
        integrate(
            FORWARD, method, t0, t1, Z0[i], Pm[i], aux, iopt, fopt, atol, grid, t_out, Z_out[i],
            stats[i], fstats[i], dyn(RECORD_NONE), dyn(2),
        )  # fmt: skip
