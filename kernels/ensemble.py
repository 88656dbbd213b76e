"""Ensembles: B independent trajectories, one per thread (numba prange).

Each trajectory runs the very same ``integrate`` as a single solve, with its own
adaptive steps, so one stiff member never slows the others and the results equal
the one-by-one solves bit for bit. Each has its own span and output times (a padded
batch of irregular series: row r of t_out holds its NT[r] times), or all share one row.
"""

import numpy as np
from numba import njit, prange

from .dynamics import call_single
from .integrate import FMA, solve_forward


@njit(cache=True, parallel=True, fastmath=FMA, error_model="numpy")
def solve_ensemble(
    method, addr, sizes, T0, T1, Z0, Pm, iopt, fopt, atol, grid, t_out, NT, Z_out, stats, fstats,
    single,
):  # fmt: skip
    """Trajectory i from T0[i] to T1[i], with outputs at the first NT[r] times of row r of
    t_out (r = i, or 0 when all share one row: t_out is (1, T)): a call of the single
    solve's entry ``solve_forward`` (through its address ``single``: dynamics.call_single;
    ``row_arguments`` is the same call in Python)."""
    for i in prange(Z0.shape[0]):
        r = np.int64(i) if t_out.shape[0] > 1 else np.int64(0)  # (prange: i is unsigned)
        m = NT[r]
        call_single(
            solve_forward,
            single,
            (
                method, addr, sizes, T0[i], T1[i], Z0[i], Pm[i], iopt, fopt, atol, grid,
                t_out[r, :m], Z_out[i, :m], stats[i], fstats[i],
            ),
        )  # fmt: skip


def row_arguments(args, i=0):
    """The arguments ``solve_ensemble(*args, single)`` passes to ``solve_forward`` for
    member i (the Python side types them to find that entry's compiled code)."""
    method, addr, sizes, T0, T1, Z0, Pm, iopt, fopt, atol, grid, t_out, NT, Z_out, st, fst = args
    r = i if t_out.shape[0] > 1 else 0
    m = NT[r]
    return (
        method, addr, sizes, T0[i], T1[i], Z0[i], Pm[i], iopt, fopt, atol, grid, t_out[r, :m],
        Z_out[i, :m], st[i], fst[i],
    )  # fmt: skip
