"""P1: Lorenz forward solve with adaptive Dormand–Prince 5(4) (shared/bench/PROBLEMS.md).

σ=10, ρ=28, β=8/3; y0 = (1, 1, 1); outputs at linspace(0, 20, 2001); float64;
rtol = atol = 1e-8. Error: max |y − y_ref| at t = 1, 2, 5, y_ref from scipy DOP853 at
rtol = atol = 1e-13. Speed-limit reference: reference_dopri5.py (hand-written @njit,
scipy-RK45 step control, Hairer's dense output).

Fast solvers are timed in interleaved rounds (each round times every fast solver once,
a few calls each), so a change in machine load hits them all alike; the median over
rounds is reported. Slow ones (pure-Python scipy, torchdiffeq) get a few timed calls.
"""

from __future__ import annotations

import random
import statistics
import time

import numpy as np
from _util import bench_cache_dir, log

TITLE = "P1: Lorenz, adaptive Dormand–Prince 5(4), 2001 outputs (symode: specialized tier)"
DESCRIPTION = (
    "Time per solve: median over repeated calls after warm-up (fast solvers: median of "
    "interleaved rounds). *first call*: the compile / JIT / cache-load cost paid once, "
    "reported separately. *vs reference*: time ÷ the hand-written @njit Dormand–Prince "
    "(`reference_dopri5.py`, scipy-RK45 step control) in the same process. *max err*: "
    "max |y − y_ref| over t = 1, 2, 5 and the 3 components, y_ref = scipy DOP853 at "
    "1e-13. nfev / accepted / rejected as each solver counts them (— where it does not "
    "say). symode PI = the default controller (β = 0.04, Hairer's DOPRI5); symode I = "
    "`beta=0.0`, the same controller as scipy's RK45 and the reference."
)

RTOL = ATOL = 1e-8
TS = np.linspace(0.0, 20.0, 2001)
Y0 = np.array([1.0, 1.0, 1.0])
SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0
PARAMS = np.array([SIGMA, RHO, BETA])
ERR_IDX = [100, 200, 500]  # t = 1, 2, 5
TARGET = 1.3
FMA_REFERENCE = "reference + FMA contraction"


def _reference_solution():
    from reference_dopri5 import lorenz_py
    from scipy.integrate import solve_ivp

    t_err = TS[ERR_IDX]
    assert np.array_equal(t_err, [1.0, 2.0, 5.0]), t_err
    sol = solve_ivp(
        lorenz_py(SIGMA, RHO, BETA), (0.0, 5.0), Y0, "DOP853", t_err, rtol=1e-13, atol=1e-13
    )
    return sol.y.T


class Case:
    """One solver: ``solve()`` returns (Y (2001, 3), stats dict or None)."""

    def __init__(self, name, controller, solve, *, fast=True, notes="", first_call=None):
        self.name, self.controller, self.solve = name, controller, solve
        self.fast, self.notes, self.first_call = fast, notes, first_call
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.stats = None
        self.err = None


def _timed_first(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


# ---------------------------------------------------------------------------- cases
def _symode_cases(cases: list, diag: dict):
    import problems

    import symode  # noqa: F401

    t0 = time.perf_counter()
    model = problems.lorenz().compile(cache_dir=bench_cache_dir(), specialize=True)
    t_compile = time.perf_counter() - t0
    diag["model"] = model
    for label, beta in (("PI (default, β=0.04)", None), ("I (beta=0.0)", 0.0)):

        def solve(beta=beta):
            sol = model.solve(Y0, TS, PARAMS, method="dopri5", rtol=RTOL, atol=ATOL, beta=beta)
            return sol.y, sol.stats

        _, first = _timed_first(solve)
        note = "first call = compile() + first solve in this process" if beta is None else ""
        cases.append(
            Case(
                "symode `model.solve`",
                label,
                solve,
                first_call=first + (t_compile if beta is None else 0.0),
                notes=note,
            )
        )


def _reference_case(cases: list):
    from reference_dopri5 import dopri5_lorenz, verify

    def solve():
        Y, st = dopri5_lorenz(Y0, TS, SIGMA, RHO, BETA, RTOL, ATOL)
        return Y, {"nfev": int(st[1]), "naccept": int(st[2]), "nreject": int(st[3])}

    _, first = _timed_first(solve)
    v = verify()
    note = (
        f"verified: same nfev/accepted/rejected as scipy RK45: {v['same_steps']}; "
        f"max |Δy| vs scipy RK45 for t ≤ 5: {v['max_diff']:.1e}"
    )
    name = "reference (hand-written @njit)"
    cases.append(Case(name, "I (scipy RK45)", solve, first_call=first, notes=note))

    from reference_dopri5 import dopri5_lorenz_fma

    def solve_fma():
        Y, st = dopri5_lorenz_fma(Y0, TS, SIGMA, RHO, BETA, RTOL, ATOL)
        return Y, {"nfev": int(st[1]), "naccept": int(st[2]), "nreject": int(st[3])}

    _, first = _timed_first(solve_fma)
    note = "the reference with fastmath={'contract'} (FMA), the one flag symode's engine uses"
    cases.append(Case(FMA_REFERENCE, "I (scipy RK45)", solve_fma, first_call=first, notes=note))
    return v


def _scipy_cases(cases: list):
    from reference_dopri5 import lorenz_py, scipy_counts
    from scipy.integrate import solve_ivp

    f = lorenz_py(SIGMA, RHO, BETA)
    for method in ("RK45", "DOP853"):

        def solve(method=method):
            sol = solve_ivp(f, (0.0, 20.0), Y0, method, TS, rtol=RTOL, atol=ATOL)
            return sol.y.T, None

        c = Case(f"scipy solve_ivp {method}", "I", solve, fast=False, notes="Python rhs")
        c.stats = scipy_counts(f, (0.0, 20.0), Y0, method, TS, RTOL, ATOL)[1]
        if method == "DOP853":
            c.notes += "; nfev includes the 3 extra evaluations per step of its dense output"
        cases.append(c)


def _numbalsoda_case(cases: list):
    try:
        from numba import cfunc
        from numbalsoda import dop853, lsoda_sig
    except ImportError as err:
        cases.append(Case("numbalsoda dop853", "—", None, notes=f"not importable: {err}"))
        return

    def make(count):
        @cfunc(lsoda_sig)
        def rhs(t, u, du, p):
            du[0] = p[0] * (u[1] - u[0])
            du[1] = u[0] * (p[1] - u[2]) - u[1]
            du[2] = u[0] * u[1] - p[2] * u[2]
            if count:
                p[3] += 1.0

        return rhs.address

    t0 = time.perf_counter()
    fast_ptr, count_ptr = make(False), make(True)
    t_cfunc = time.perf_counter() - t0
    data = np.array([SIGMA, RHO, BETA, 0.0])

    def solve():
        usol, ok = dop853(fast_ptr, Y0, TS, data=data, rtol=RTOL, atol=ATOL)
        assert ok
        return usol, None

    _, first = _timed_first(solve)
    c = Case(
        "numbalsoda dop853",
        "Hairer DOP853",
        solve,
        first_call=first + t_cfunc,
        notes="8th order (DOP853) with a numba cfunc rhs; nfev from a counting rhs",
    )
    data[3] = 0.0
    dop853(count_ptr, Y0, TS, data=data, rtol=RTOL, atol=ATOL)
    c.stats = {"nfev": int(data[3]), "naccept": None, "nreject": None}
    data[3] = 0.0
    cases.append(c)


def _torchdiffeq_case(cases: list, quick: bool):
    try:
        import torch
        from torchdiffeq import odeint
    except ImportError as err:
        cases.append(Case("torchdiffeq dopri5", "—", None, notes=f"not importable: {err}"))
        return
    count = [0]
    s, r, b = SIGMA, RHO, BETA

    class Lorenz(torch.nn.Module):
        def forward(self, t, u):
            count[0] += 1
            x, y, z = u.unbind(-1)
            return torch.stack([s * (y - x), x * (r - z) - y, x * y - b * z], -1)

    f = Lorenz()
    y0 = torch.tensor(Y0, dtype=torch.float64)
    tt = torch.tensor(TS, dtype=torch.float64)

    def solve():
        count[0] = 0
        with torch.no_grad():
            ys = odeint(f, y0, tt, rtol=RTOL, atol=ATOL, method="dopri5")
        return ys.numpy(), {"nfev": count[0], "naccept": None, "nreject": None}

    _, first = _timed_first(solve)
    c = Case(
        "torchdiffeq dopri5",
        "I (its own)",
        solve,
        fast=False,
        first_call=first,
        notes=f"torch {torch.__version__}, float64, no_grad, {torch.get_num_threads()} threads",
    )
    cases.append(c)


def _diffrax_case(cases: list):
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
        import diffrax
        import jax.numpy as jnp
    except Exception as err:  # noqa: BLE001 - any import failure means "not available"
        cases.append(Case("diffrax Dopri5", "—", None, notes=f"not importable: {err}"))
        return

    def f(t, u, args):
        s, r, b = args
        x, y, z = u[0], u[1], u[2]
        return jnp.stack([s * (y - x), x * (r - z) - y, x * y - b * z])

    term = diffrax.ODETerm(f)
    saveat = diffrax.SaveAt(ts=jnp.asarray(TS))
    ctrl = diffrax.PIDController(rtol=RTOL, atol=ATOL)
    args = (SIGMA, RHO, BETA)

    @jax.jit
    def _solve(y0):
        return diffrax.diffeqsolve(
            term,
            diffrax.Dopri5(),
            t0=0.0,
            t1=20.0,
            dt0=None,
            y0=y0,
            args=args,
            saveat=saveat,
            stepsize_controller=ctrl,
            max_steps=100_000,
        )

    y0 = jnp.asarray(Y0)

    def solve():
        sol = _solve(y0)
        ys = np.asarray(sol.ys.block_until_ready())
        st = sol.stats
        acc, rej = int(st["num_accepted_steps"]), int(st["num_rejected_steps"])
        return ys, {"nfev": None, "naccept": acc, "nreject": rej}

    _, first = _timed_first(solve)
    cases.append(
        Case(
            "diffrax Dopri5",
            "PID (I here)",
            solve,
            first_call=first,
            notes=f"jax {jax.__version__} jit, CPU, x64",
        )
    )


# ---------------------------------------------------------------------------- timing
def _time_fast(cases: list, rounds: int):
    """Interleaved rounds: each round times every fast case (in a shuffled order) for
    about 20 ms of calls; a case's sample is that round's time per call."""
    rng = random.Random(0)
    per_call = {}
    for c in cases:
        probes = []
        for _ in range(3):
            t0 = time.perf_counter()
            c.solve()
            probes.append(time.perf_counter() - t0)
        per_call[c] = statistics.median(probes)
    order = list(cases)
    for _ in range(rounds):
        rng.shuffle(order)
        for c in order:
            k = max(1, int(0.02 / max(per_call[c], 1e-7)))
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(k):
                c.solve()
            c.times.append((time.perf_counter() - t0) / k)
            c.cpu.append((time.process_time() - c0) / k)


def _time_slow(c: Case, reps: int):
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        c.solve()
        c.times.append(time.perf_counter() - t0)
        c.cpu.append(time.process_time() - c0)


# ---------------------------------------------------------------------------- diagnostics
def _diagnostics(model, ref_solve, rounds) -> list[dict]:
    """Where symode's time goes beyond the reference: Python around the kernel, dense
    output, and the kernel itself (its captured arguments, the kernel called directly)."""
    from _util import capture_kernel_calls

    tiny_l = "tiny: t ∈ [0, 1e-3], 2 outputs"
    variants = {
        tiny_l: np.array([0.0, 1e-3]),
        "P1, outputs only at t = 0, 20": np.array([0.0, 20.0]),
        "P1, 2001 outputs": TS,
    }
    fns = {}
    for label, ts in variants.items():

        def solve(ts=ts):
            return model.solve(Y0, ts, PARAMS, method="dopri5", rtol=RTOL, atol=ATOL)

        solve()  # warm-up: nothing may compile while the kernels are wrapped
        calls = capture_kernel_calls(model, solve)
        fns[("symode Model.solve", label)] = solve
        if len(calls) == 1:
            name, real, args = calls[0]
            fns[(f"symode kernel only (`{name}` called directly)", label)] = (
                lambda real=real, args=args: real(*args)
            )
        fns[("reference", label)] = lambda ts=ts: ref_solve(ts)
    times = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(rounds):
        for k, f in fns.items():
            n = 30
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            times[k].append((time.perf_counter() - t0) / n)
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = {label: med[("reference", label)] for label in variants}
    rows = [
        {
            "table": "where symode's time goes",
            "what": who,
            "problem": label,
            "time per call [µs]": v * 1e6,
            "vs reference": v / ref[label],
        }
        for (who, label), v in sorted(med.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]
    kernel = [k for k in med if k[0].startswith("symode kernel") and k[1] == tiny_l]
    if kernel:
        rows.append(
            {
                "table": "where symode's time goes",
                "what": "⇒ Python-side overhead of Model.solve per call",
                "problem": tiny_l,
                "time per call [µs]": (med[("symode Model.solve", tiny_l)] - med[kernel[0]]) * 1e6,
            }
        )
    return rows + _profile_rows(model, variants[tiny_l])


def _profile_rows(model, tiny) -> list[dict]:
    """cProfile of Model.solve on the tiny problem: the Python functions that cost most."""
    import cProfile
    import pstats

    n = 2000
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        model.solve(Y0, tiny, PARAMS, method="dopri5", rtol=RTOL, atol=ATOL)
    prof.disable()
    st = pstats.Stats(prof)
    entries = []
    for (file, line, func), (_cc, ncalls, tottime, _ct, _callers) in st.stats.items():
        short = file.rsplit("/", 2)
        where = "/".join(short[-2:]) if len(short) > 1 else file
        entries.append((tottime, ncalls, f"{where}:{line}({func})"))
    entries.sort(reverse=True)
    total = sum(e[0] for e in entries)
    rows = []
    for tottime, ncalls, name in entries[:10]:
        rows.append(
            {
                "table": "Model.solve profile (tiny problem, cProfile self time)",
                "function": name,
                "calls per solve": ncalls / n,
                "self time per solve [µs]": tottime / n * 1e6,
                "share": f"{100 * tottime / total:.0f}%",
            }
        )
    return rows


# ---------------------------------------------------------------------------- run
def run(quick: bool) -> list[dict]:
    log("  P1: y_ref (scipy DOP853 at 1e-13)")
    y_ref = _reference_solution()
    cases: list[Case] = []
    diag: dict = {}
    log("  P1: symode (compile + first solve)")
    _symode_cases(cases, diag)
    log("  P1: reference (and its check against scipy RK45)")
    _reference_case(cases)
    log("  P1: numbalsoda, scipy, torchdiffeq, diffrax")
    _numbalsoda_case(cases)
    _scipy_cases(cases)
    _torchdiffeq_case(cases, quick)
    _diffrax_case(cases)

    for c in cases:
        if c.solve is None:
            continue
        Y, st = c.solve()
        if st is not None:
            c.stats = st
        c.err = float(np.max(np.abs(np.asarray(Y)[ERR_IDX] - y_ref)))
        # a slow solver stays out of the interleaved rounds
        if c.fast:
            t0 = time.perf_counter()
            c.solve()
            c.fast = time.perf_counter() - t0 < 0.2

    fast = [c for c in cases if c.solve is not None and c.fast]
    slow = [c for c in cases if c.solve is not None and not c.fast]
    rounds = 15 if quick else 60
    log(f"  P1: timing {len(fast)} fast solvers, {rounds} interleaved rounds")
    _time_fast(fast, rounds)
    for c in slow:
        reps = (1 if quick else 3) if c.name.startswith("torch") else (2 if quick else 5)
        log(f"  P1: timing {c.name} x{reps}")
        _time_slow(c, reps)

    ref = next(c for c in cases if c.name.startswith("reference"))
    t_ref = statistics.median(ref.times)
    c_ref = statistics.median(ref.cpu)
    rows = []
    for c in cases:
        med = statistics.median(c.times) if c.times else None
        cpu = statistics.median(c.cpu) if c.cpu else None
        st = c.stats or {}
        rows.append(
            {
                "table": "P1",
                "solver": c.name,
                "controller": c.controller,
                "time/solve [ms]": med * 1e3 if med else None,
                "min [ms]": min(c.times) * 1e3 if c.times else None,
                "timed calls": len(c.times) if c.fast is not True else f"{len(c.times)} rounds",
                "vs reference": med / t_ref if med else None,
                "CPU/solve [ms]": cpu * 1e3 if cpu else None,
                "vs reference (CPU)": cpu / c_ref if cpu else None,
                "nfev": st.get("nfev"),
                "accepted": st.get("naccept"),
                "rejected": st.get("nreject"),
                "max err t=1,2,5": c.err,
                "first call [s]": c.first_call,
                "notes": c.notes,
            }
        )
    sym = [c for c in cases if c.name.startswith("symode")]
    fma = next((c for c in cases if c.name == FMA_REFERENCE and c.times), None)
    targets = []
    for c in sym:
        ratio = statistics.median(c.times) / t_ref
        ratio_cpu = statistics.median(c.cpu) / c_ref
        vs_fma = ""
        if fma:
            r_fma = statistics.median(c.times) / statistics.median(fma.times)
            vs_fma = f"; ÷ the reference with FMA {r_fma:.2f}"
        targets.append(
            {
                "table": "targets",
                "what": f"P1 time per solve, symode {c.controller} ÷ reference",
                "measured": f"{ratio:.2f} ({statistics.median(c.times) * 1e3:.2f} ms vs "
                f"{t_ref * 1e3:.2f} ms); on CPU time {ratio_cpu:.2f}{vs_fma}",
                "target": f"≤ {TARGET}",
                "met": ratio <= TARGET,
            }
        )
    log("  P1: diagnostics")
    from reference_dopri5 import dopri5_lorenz

    def ref_solve(ts):
        return dopri5_lorenz(Y0, ts, SIGMA, RHO, BETA, RTOL, ATOL)

    try:
        diag_rows = _diagnostics(diag["model"], ref_solve, 5 if quick else 15)
    except Exception as err:  # noqa: BLE001 - diagnostics use symode internals
        diag_rows = [{"table": "where symode's time goes", "what": f"failed: {err!r}"}]
    return targets + rows + diag_rows
