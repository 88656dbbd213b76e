"""P7 and the compile-once engine: time to first result, and what the generic tier costs
at run time beside the specialized one.

- P7 (PROBLEMS.md): a system no cache has seen (Lotka–Volterra + k·x², k random), in a
  fresh process whose engine cache is full: ``compile()`` + the first solve, then the
  first ``value_and_grad`` in each adjoint mode; numba compile events counted by where
  the function lives (the engine must compile nothing). Also from fully empty caches
  (``NUMBA_CACHE_DIR`` and symode's cache both new: the first run on a machine).
- the 100-state reaction–diffusion chain: derive, print, compile, first solve.
- warm load: the same system again in fresh processes (median of 3), beside numba's
  own first-dispatch floor measured in the same run.
- ``examples/quickstart.py`` from empty caches (wall time of the whole script).
- run time, in this process, generic tier vs specialized tier vs the hand-written
  references of P1 (dopri5 Lorenz) and P2 (prange RK4 ensemble), and P3 (each adjoint
  mode's ``value_and_grad`` ÷ the forward solve, per tier).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _util import REPO, bench_cache_dir, child_env, log, median, round_robin, run_child

TITLE = "P7: time to first result; the generic tier's run time (compile once)"
DESCRIPTION = (
    "Fresh processes for the compile figures (seconds of wall time); in-process medians "
    "for the run-time ratios, generic and specialized tier and the hand-written "
    "reference timed in the same rounds. The generic tier (default) compiles its engine "
    "once per machine; `compile(specialize=True)` compiles an inlined engine per system."
)
HERE = Path(__file__).resolve().parent
CHILD = str(HERE / "_p7_child.py")
MODES = ("checkpoint", "backsolve", "discrete", "forward")


def _fresh_k() -> str:
    return f"{np.random.default_rng().uniform(1e-3, 2e-3):.15f}"


def _p7_row(caches: str, result: dict) -> dict:
    return {
        "table": "p7",
        "caches": caches,
        "compile() + first solve [s]": result["compile_and_solve_s"],
        **{f"first {m} [s]": result[f"first_{m}_s"] for m in MODES},
        "engine compiles": result["compiles"]["engine"],
        "kernel compiles": result["compiles"]["kernels"],
        "import symode [s]": result["import_s"],
    }


def _p7_rows(quick: bool) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        log("  P7: warming the engine (a throwaway system)")
        run_child([CHILD, "p7", tmp, _fresh_k()])
        k = _fresh_k()
        new = run_child([CHILD, "p7", tmp, k])
        rows.append(_p7_row("engine cache full", new))
        log("  warm load (same system, fresh processes)")
        warm = [run_child([CHILD, "p7", tmp, k]) for _ in range(3)]
        floors = [run_child([CHILD, "floor", tmp]) for _ in range(3)]
        rows.append(
            {
                "table": "load",
                "what": "warm load: compile() + first solve, same system, fresh process",
                "median [s]": median([w["compile_and_solve_s"] for w in warm]),
                "numba's first-dispatch floor [s]": median([f["first_dispatch_s"] for f in floors]),
                "compiles": str(warm[0]["compiles"]),
            }
        )
        log("  100-state chain")
        chain = run_child([CHILD, "chain", tmp])
        rows.append(
            {
                "table": "load",
                "what": "100-state chain: derive, print, compile, first solve (new system)",
                "median [s]": chain["compile_and_solve_s"],
                "compiles": str(chain["compiles"]),
            }
        )
        special = run_child([CHILD, "special", tmp, k])
        rows.append(
            {
                "table": "load",
                "what": "P7 system with compile(specialize=True): compile() + first solve",
                "median [s]": special["compile_and_solve_s"],
            }
        )
    targets = [
        _target("P7: compile() + first solve, engine cached", new["compile_and_solve_s"], 1.5),
        *(_target(f"P7: first value_and_grad, {m}", new[f"first_{m}_s"], 1.0) for m in MODES),
        _target(
            "100-state chain: derive, print, compile, first solve",
            chain["compile_and_solve_s"],
            10.0,
        ),
        _target("warm load (same system, fresh process)", rows[1]["median [s]"], 0.4),
        {
            "table": "targets",
            "what": "P7: engine functions compiled for a new system",
            "measured": str(new["compiles"]["engine"]),
            "target": "0",
            "met": new["compiles"]["engine"] == 0,
        },
    ]
    if not quick:
        with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as nb:
            log("  P7 from empty caches (the engine compiles: minutes)")
            cold = run_child([CHILD, "p7", tmp, _fresh_k()], env=child_env(NUMBA_CACHE_DIR=nb))
            rows.append(_p7_row("all empty (first run on a machine)", cold))
        rows.append(_quickstart_cold())
    else:
        rows.append({"table": "p7", "caches": "all empty: skipped with --quick"})
    return targets + rows


def _quickstart_cold() -> dict:
    with tempfile.TemporaryDirectory() as xdg, tempfile.TemporaryDirectory() as nb:
        log("  examples/quickstart.py from empty caches")
        env = child_env(XDG_CACHE_HOME=xdg, NUMBA_CACHE_DIR=nb, MPLBACKEND="Agg")
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(REPO / "examples" / "quickstart.py")],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=1800,
        )
        wall = time.perf_counter() - t0
    return {
        "table": "load",
        "what": "examples/quickstart.py, all caches empty (wall time of the script)",
        "median [s]": wall,
        "compiles": "ok" if proc.returncode == 0 else f"failed: {proc.stderr[-300:]}",
    }


def _target(what, value, limit) -> dict:
    return {
        "table": "targets",
        "what": what,
        "measured": f"{value:.2f} s",
        "target": f"≤ {limit} s",
        "met": value <= limit,
    }


def _ratio_target(what, value, target, better) -> dict:
    met = value <= target if better == "<=" else value >= target
    return {
        "table": "targets",
        "what": what,
        "measured": f"{value:.2f}",
        "target": f"{better} {target}",
        "met": met,
    }


def _runtime_rows(quick: bool) -> list[dict]:
    import bench_p2
    import problems
    from reference_dopri5 import dopri5_lorenz

    cache = bench_cache_dir()
    budget = 1.0 if quick else 3.0
    rows, targets = [], []
    gen = problems.lorenz().compile(cache_dir=cache)
    spec = problems.lorenz().compile(cache_dir=cache, specialize=True)
    ts = np.linspace(0.0, 20.0, 2001)
    p1 = {
        "hand-written @njit DP5 (reference)": lambda: dopri5_lorenz(
            problems.LORENZ_Y0, ts, 10.0, 28.0, 8.0 / 3.0, 1e-8, 1e-8
        ),
        "symode generic tier": lambda: gen.solve(
            problems.LORENZ_Y0, ts, problems.LORENZ_PARAMS, rtol=1e-8, atol=1e-8
        ),
        "symode specialized tier": lambda: spec.solve(
            problems.LORENZ_Y0, ts, problems.LORENZ_PARAMS, rtol=1e-8, atol=1e-8
        ),
    }
    log("  P1 per tier")
    t1 = round_robin(p1, budget)
    ref = t1["hand-written @njit DP5 (reference)"]
    for name, t in t1.items():
        rows.append({"table": "p1", "solver": name, "ms/solve": t * 1e3, "÷ reference": t / ref})
    targets.append(
        _ratio_target(
            "P1 generic tier ÷ hand-written DP5", t1["symode generic tier"] / ref, 1.5, "<="
        )
    )
    targets.append(
        _ratio_target(
            "P1 specialized tier ÷ hand-written DP5", t1["symode specialized tier"] / ref, 1.3, "<="
        )
    )

    log("  P2 per tier")
    n, out = bench_p2.N, np.empty((bench_p2.N, 3))
    params = np.column_stack([np.full(n, bench_p2.SIGMA), bench_p2.RHOS, np.full(n, bench_p2.BETA)])
    y0 = bench_p2.Y0

    def ens(model):
        return lambda: model.solve(y0, [0.0, 10.0], params, method="rk4", dt=bench_p2.DT)

    p2 = {
        "hand-written @njit(parallel=True) prange": lambda: bench_p2.rk4_parallel(
            bench_p2.RHOS, bench_p2.SIGMA, bench_p2.BETA, y0, bench_p2.DT, bench_p2.STEPS, out
        ),
        "symode generic tier": ens(gen),
        "symode specialized tier": ens(spec),
    }
    t2 = round_robin(p2, budget, max_reps=7 if quick else 15)
    ref2 = t2["hand-written @njit(parallel=True) prange"]
    work = n * bench_p2.STEPS
    for name, t in t2.items():
        rows.append(
            {
                "table": "p2",
                "solver": name,
                "trajectory-steps/s": work / t,
                "÷ prange (rate)": ref2 / t,
            }
        )
    targets.append(
        _ratio_target(
            "P2 generic tier ÷ prange (rate)", ref2 / t2["symode generic tier"], 0.5, ">="
        )
    )
    targets.append(
        _ratio_target(
            "P2 specialized tier ÷ prange (rate)", ref2 / t2["symode specialized tier"], 0.9, ">="
        )
    )

    log("  P3 per tier")
    import sympy as sp

    import symode

    x, y = sp.symbols("x y")
    loss = symode.Loss(observation=((x - 1) ** 2 + (y - 1) ** 2) / 2)
    ts3 = np.linspace(0.0, 10.0, 101)
    opts = {"rtol": 1e-8, "atol": 1e-8}
    for tier, specialize, limit in (("generic", False, 3.5), ("specialized", True, 3.0)):
        m = problems.lotka_volterra().compile(loss=loss, cache_dir=cache, specialize=specialize)
        calls = {
            "forward solve": lambda m=m: m.solve(problems.LV_Y0, ts3, problems.LV_PARAMS, **opts)
        }
        for mode in MODES[:3]:
            calls[mode] = lambda m=m, mode=mode: m.value_and_grad(
                problems.LV_Y0, ts3, problems.LV_PARAMS, adjoint=mode, **opts
            )
        t3 = round_robin(calls, budget)
        for name, t in t3.items():
            rows.append(
                {
                    "table": "p3",
                    "tier": tier,
                    "call": name,
                    "ms": t * 1e3,
                    "÷ forward": t / t3["forward solve"],
                }
            )
        worst = max(t3[mm] for mm in MODES[:3]) / t3["forward solve"]
        targets.append(
            _ratio_target(f"P3 {tier} tier: slowest adjoint ÷ forward", worst, limit, "<=")
        )
    return targets + rows


def run(quick: bool) -> list[dict]:
    os.environ.setdefault("MPLBACKEND", "Agg")
    rows = _p7_rows(quick)
    rows += _runtime_rows(quick)
    targets = [r for r in rows if r.get("table") == "targets"]
    return targets + [r for r in rows if r.get("table") != "targets"]
