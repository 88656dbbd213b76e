"""P2: an ensemble of 10,000 Lorenz trajectories, fixed-step classic RK4 (PROBLEMS.md).

ρ_i = linspace(0, 28, N), σ=10, β=8/3, y0 = (1, 1, 1); classic RK4 (1/6, 1/3, 1/3,
1/6), dt = 0.01, 1000 steps, final states, float64. Work = 10⁷ trajectory-steps.

symode: ``model.solve(y0, [0, 10], params (N, 3), method="rk4", dt=0.01)``, final
state ``y[:, -1]``. Speed-limit reference: a hand-written @njit(parallel=True) prange
over trajectories with the state in scalars; also its single-threaded twin and a
numpy-vectorized loop. The parallel solvers are timed in interleaved rounds.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from _util import bench_cache_dir, log
from numba import njit, prange

TITLE = (
    "P2: Lorenz ensemble, N = 10,000, classic RK4, dt = 0.01, 1000 steps (symode: specialized tier)"
)
DESCRIPTION = (
    "Throughput in trajectory-steps per second (10⁷ trajectory-steps per solve); "
    "median of repeated calls after warm-up (the parallel ones interleaved). "
    "*CPU ÷ wall*: process CPU seconds over wall seconds; a parallel solver on 2 idle "
    "cores shows up to 2, and a value under 1 means the machine was shared (the process "
    "got less than one core on average), so parallel speed-ups cannot show. "
    "*vs hand-written parallel*: throughput ÷ the prange reference's (higher is "
    "better). *max |Δ|* compares final states with the hand-written parallel loop. "
    "symode's fixed grid is t_i = i·dt, so its steps are t_{i+1} − t_i (equal to "
    "dt only to rounding); the 'same steps' check feeds the hand-written loop those "
    "very steps, which must reproduce symode bit for bit or close to it."
)

N = 10_000
DT = 0.01
STEPS = 1000
SIGMA, BETA = 10.0, 8.0 / 3.0
RHOS = np.linspace(0.0, 28.0, N)
Y0 = np.array([1.0, 1.0, 1.0])
B1, B2 = 1.0 / 6.0, 1.0 / 3.0
TARGET = 0.9


@njit(inline="always")
def _f(x, y, z, s, r, b):
    return s * (y - x), x * (r - z) - y, x * y - b * z


@njit(inline="always")
def _rk4_step(x, y, z, h, s, r, b):
    k1x, k1y, k1z = _f(x, y, z, s, r, b)
    k2x, k2y, k2z = _f(x + h * (0.5 * k1x), y + h * (0.5 * k1y), z + h * (0.5 * k1z), s, r, b)
    k3x, k3y, k3z = _f(x + h * (0.5 * k2x), y + h * (0.5 * k2y), z + h * (0.5 * k2z), s, r, b)
    k4x, k4y, k4z = _f(x + h * k3x, y + h * k3y, z + h * k3z, s, r, b)
    return (
        x + h * (B1 * k1x + B2 * k2x + B2 * k3x + B1 * k4x),
        y + h * (B1 * k1y + B2 * k2y + B2 * k3y + B1 * k4y),
        z + h * (B1 * k1z + B2 * k2z + B2 * k3z + B1 * k4z),
    )


@njit(cache=True, parallel=True)
def rk4_parallel(rhos, s, b, y0, dt, steps, out):
    for i in prange(rhos.size):
        r = rhos[i]
        x, y, z = y0[0], y0[1], y0[2]
        for _ in range(steps):
            x, y, z = _rk4_step(x, y, z, dt, s, r, b)
        out[i, 0], out[i, 1], out[i, 2] = x, y, z


@njit(cache=True)
def rk4_serial(rhos, s, b, y0, dt, steps, out):
    for i in range(rhos.size):
        r = rhos[i]
        x, y, z = y0[0], y0[1], y0[2]
        for _ in range(steps):
            x, y, z = _rk4_step(x, y, z, dt, s, r, b)
        out[i, 0], out[i, 1], out[i, 2] = x, y, z


@njit(cache=True, parallel=True)
def rk4_parallel_grid(rhos, s, b, y0, grid, out):
    """The check-only twin: steps h_i = grid[i+1] − grid[i], as symode's fixed grid."""
    for i in prange(rhos.size):
        r = rhos[i]
        x, y, z = y0[0], y0[1], y0[2]
        for j in range(grid.size - 1):
            x, y, z = _rk4_step(x, y, z, grid[j + 1] - grid[j], s, r, b)
        out[i, 0], out[i, 1], out[i, 2] = x, y, z


def rk4_numpy(rhos, s, b, y0, dt, steps):
    """Vectorized over trajectories: one numpy expression per stage."""
    x = np.full(rhos.size, y0[0])
    y = np.full(rhos.size, y0[1])
    z = np.full(rhos.size, y0[2])

    def f(x, y, z):
        return s * (y - x), x * (rhos - z) - y, x * y - b * z

    for _ in range(steps):
        k1x, k1y, k1z = f(x, y, z)
        k2x, k2y, k2z = f(x + dt * (0.5 * k1x), y + dt * (0.5 * k1y), z + dt * (0.5 * k1z))
        k3x, k3y, k3z = f(x + dt * (0.5 * k2x), y + dt * (0.5 * k2y), z + dt * (0.5 * k2z))
        k4x, k4y, k4z = f(x + dt * k3x, y + dt * k3y, z + dt * k3z)
        x = x + dt * (B1 * k1x + B2 * k2x + B2 * k3x + B1 * k4x)
        y = y + dt * (B1 * k1y + B2 * k2y + B2 * k3y + B1 * k4y)
        z = z + dt * (B1 * k1z + B2 * k2z + B2 * k3z + B1 * k4z)
    return np.stack([x, y, z], axis=1)


def _timed(fn, reps, cpu=None):
    """Wall seconds of ``reps`` calls; process CPU seconds appended to ``cpu``."""
    out = []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        out.append(time.perf_counter() - t0)
        if cpu is not None:
            cpu.append(time.process_time() - c0)
    return out


def run(quick: bool) -> list[dict]:
    import numba
    import problems

    params = np.column_stack([np.full(N, SIGMA), RHOS, np.full(N, BETA)])
    log("  P2: symode compile + first ensemble solve")
    t0 = time.perf_counter()
    model = problems.lorenz().compile(cache_dir=bench_cache_dir(), specialize=True)

    def symode_solve():
        sol = model.solve(Y0, [0.0, 10.0], params, method="rk4", dt=DT)
        return sol.y[:, -1]

    y_sym = symode_solve()
    first = {"symode ensemble `model.solve`": time.perf_counter() - t0}
    out = np.empty((N, 3))
    solvers = {
        "symode ensemble `model.solve`": symode_solve,
        "hand-written @njit(parallel=True) prange": lambda: rk4_parallel(
            RHOS, SIGMA, BETA, Y0, DT, STEPS, out
        ),
        "hand-written @njit, single thread": lambda: rk4_serial(
            RHOS, SIGMA, BETA, Y0, DT, STEPS, out
        ),
        "numpy, vectorized over trajectories": lambda: rk4_numpy(RHOS, SIGMA, BETA, Y0, DT, STEPS),
    }
    log("  P2: compile / first call of the others")
    finals = {"symode ensemble `model.solve`": y_sym}
    for name, fn in solvers.items():
        if name in finals:
            continue
        t0 = time.perf_counter()
        res = fn()
        first[name] = time.perf_counter() - t0
        finals[name] = (res if res is not None else out).copy()
    grid = DT * np.arange(STEPS + 1)
    grid[-1] = 10.0
    same_steps = np.empty((N, 3))
    rk4_parallel_grid(RHOS, SIGMA, BETA, Y0, grid, same_steps)

    # symode's ensemble kernel alone: its captured arguments, called directly
    from _util import capture_kernel_calls

    kernel_name = None
    try:
        calls = capture_kernel_calls(model, symode_solve)
        if len(calls) == 1:
            kernel_name, real, args = calls[0]
            solvers[f"symode kernel only (`{kernel_name}` called directly)"] = lambda: real(*args)
    except Exception as err:  # noqa: BLE001 - diagnostics use symode internals
        log(f"  P2: kernel-only timing failed: {err!r}")

    # timing: the parallel ones interleaved, then the slow ones
    rounds = 2 if quick else 5
    par = [k for k in solvers if "single thread" not in k and not k.startswith("numpy")]
    times = {k: [] for k in solvers}
    cpu = {k: [] for k in solvers}
    log(f"  P2: timing {len(par)} parallel solvers, {rounds} interleaved rounds")
    for _ in range(rounds):
        for k in par:
            times[k] += _timed(solvers[k], 1, cpu[k])
    for k in solvers:
        if k not in par:
            reps = 2 if quick else 3
            log(f"  P2: timing {k} x{reps}")
            times[k] = _timed(solvers[k], reps, cpu[k])
    for k in solvers:
        if k not in finals:  # the kernel-only run wrote symode's own output array
            finals[k] = y_sym

    ref_name = "hand-written @njit(parallel=True) prange"
    ref = finals[ref_name]
    t_ref = statistics.median(times[ref_name])
    work = N * STEPS
    rows = []
    chaotic = RHOS > 24.74  # the Lorenz attractor's onset (ρ_H ≈ 24.74)
    for name in solvers:
        med = statistics.median(times[name])
        d = np.abs(finals[name] - ref)
        rows.append(
            {
                "table": "P2",
                "solver": name,
                "time/solve [s]": med,
                "min [s]": min(times[name]),
                "timed calls": len(times[name]),
                "trajectory-steps/s": work / med,
                "vs hand-written parallel": t_ref / med,
                "CPU ÷ wall (busy threads)": sum(cpu[name]) / sum(times[name]),
                "max |Δ| vs hand-written parallel": float(d.max()),
                "… for ρ < 24.74 (not chaotic)": float(d[~chaotic].max()),
                "first call [s]": first.get(name),
            }
        )
    d_same = np.abs(y_sym - same_steps)
    rows.append(
        {
            "table": "P2",
            "solver": "check: hand-written parallel fed symode's grid steps",
            "max |Δ| vs hand-written parallel": float(np.abs(same_steps - ref).max()),
            "… for ρ < 24.74 (not chaotic)": float(np.abs(same_steps - ref)[~chaotic].max()),
            "notes": f"max |Δ| vs symode: {d_same.max():.3g} "
            f"({int((d_same == 0).all(axis=1).sum())} of {N} trajectories bit-identical)",
        }
    )
    t_sym = statistics.median(times["symode ensemble `model.solve`"])
    ratio = t_ref / t_sym
    targets = [
        {
            "table": "targets",
            "what": "P2 throughput, symode ÷ hand-written prange "
            f"({numba.config.NUMBA_NUM_THREADS} threads)",
            "measured": f"{ratio:.2f} ({work / t_sym:.3g} vs {work / t_ref:.3g} steps/s)",
            "target": f"≥ {TARGET}",
            "met": ratio >= TARGET,
        }
    ]
    return targets + rows
