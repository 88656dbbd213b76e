"""Ensembles: B independent trajectories, one per thread (numba prange).

Each trajectory runs the very same ``integrate`` as a single solve, with its own
adaptive steps, so one stiff member never slows the others and the results equal
the one-by-one solves bit for bit. Each has its own span and output times (a padded
batch of irregular series: row r of t_out holds its NT[r] times), or all share one row.
"""

import numpy as np
from numba import njit, prange

from .dynamics import record
from .integrate import FMA, FORWARD, RECORD_NONE, empty_aux, integrate, runtime


@njit(cache=True, parallel=True, fastmath=FMA, error_model="numpy")
def solve_ensemble(
    method, addr, sizes, T0, T1, Z0, Pm, iopt, fopt, atol, grid, t_out, NT, Z_out, stats, fstats
):  # fmt: skip
    """Trajectory i from T0[i] to T1[i], with outputs at the first NT[r] times of row r of
    t_out (r = i, or 0 when all share one row: t_out is (1, T))."""
    for i in prange(Z0.shape[0]):
        r = np.int64(i) if t_out.shape[0] > 1 else np.int64(0)  # (prange: i is unsigned)
        m = NT[r]
        # the record is made inside the loop: a tuple of first-class functions cannot
        # be passed into numba's parallel loop body, its addresses can
        dyn = record(addr, sizes, Z0[i])
        integrate(
            FORWARD, method, dyn, T0[i], T1[i], Z0[i], Pm[i], empty_aux(dyn, Z0[i]), iopt, fopt,
            atol, grid, t_out[r, :m], Z_out[i, :m], stats[i], fstats[i], runtime(RECORD_NONE),
            runtime(2),
        )  # fmt: skip
