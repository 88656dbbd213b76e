"""Ensembles: B independent trajectories, one per thread (numba prange).

Each trajectory runs the very same ``integrate`` as a single solve, with its own
adaptive steps, so one stiff member never slows the others and the results equal
the one-by-one solves bit for bit.
"""

from numba import njit, prange

from .dynamics import record
from .integrate import FMA, FORWARD, RECORD_NONE, empty_aux, integrate, runtime


@njit(cache=True, parallel=True, fastmath=FMA, error_model="numpy")
def solve_ensemble(
    method, addr, sizes, t0, t1, Z0, Pm, iopt, fopt, atol, grid, t_out, Z_out, stats, fstats
):  # fmt: skip
    for i in prange(Z0.shape[0]):
        # the record is made inside the loop: a tuple of first-class functions cannot
        # be passed into numba's parallel loop body, its addresses can
        dyn = record(addr, sizes, Z0[i])
        integrate(
            FORWARD, method, dyn, t0, t1, Z0[i], Pm[i], empty_aux(dyn, Z0[i]), iopt, fopt, atol, grid, t_out, Z_out[i],
            stats[i], fstats[i], runtime(RECORD_NONE), runtime(2),
        )  # fmt: skip
