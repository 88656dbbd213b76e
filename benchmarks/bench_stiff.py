"""P5 Robertson and a 100-state stiff reaction–diffusion chain through scipy's implicit
solvers: what symode's compiled right-hand side and exact Jacobian gain.

For each of Radau, BDF and LSODA, three ways to run the same scipy solver:

- **symode**: ``model.solve(method=...)``: the compiled rhs and the exact compiled
  Jacobian (sparse CSR for Radau/BDF on the 100-state chain, dense otherwise);
- **scipy, Python rhs**: what a scipy user writes, with scipy's finite-difference
  Jacobian;
- **scipy, compiled rhs**: symode's compiled rhs, scipy's finite-difference Jacobian:
  the difference to *symode* is the exact Jacobian alone.

Medians of repeated solves (times interleaved in rounds), scipy's counts (nfev
includes the finite-difference Jacobian's evaluations), and the error against a tight
reference (P5: scipy Radau at rtol 1e-12, atol 1e-20; the chain: scipy Radau at rtol
1e-10, atol 1e-12).
"""

from __future__ import annotations

import numpy as np
import scipy.integrate as si
from _util import bench_cache_dir, log, round_robin

TITLE = (
    "P5 and a stiff chain: scipy's implicit solvers with symode's compiled rhs and exact Jacobian"
)
DESCRIPTION = __doc__.split("\n\n", 1)[1]
METHODS = ("Radau", "BDF", "LSODA")
ROB_P = (0.04, 3e7, 1e4)
ROB_TS = np.array([0.0, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5])
CHAIN_P = (1000.0, 1.0)  # D, r: diffusion eigenvalues to ~ -4e3: stiff
CHAIN_TS = np.linspace(0.0, 1.0, 11)


def _robertson_py(t, y, k1, k2, k3):
    return np.array([
        -k1 * y[0] + k3 * y[1] * y[2],
        k1 * y[0] - k3 * y[1] * y[2] - k2 * y[1] ** 2,
        k2 * y[1] ** 2,
    ])  # fmt: skip


def _chain_py(t, u, D, r):
    left = np.concatenate([u[:1], u[:-1]])
    right = np.concatenate([u[1:], u[-1:]])
    return D * (left - 2 * u + right) + r * u * (1 - u)


def _problems():
    import problems
    import sympy as sp

    import symode

    y1, y2, y3 = sp.symbols("y1 y2 y3")
    k1, k2, k3 = sp.symbols("k1 k2 k3")
    rob = symode.ODESystem(
        list(_robertson_py(0, [y1, y2, y3], k1, k2, k3)), states=[y1, y2, y3], params=[k1, k2, k3]
    )
    return {
        "P5 Robertson (3 states), rtol 1e-6, atol 1e-10": (
            rob.compile(cache_dir=bench_cache_dir()),
            _robertson_py,
            np.array([1.0, 0.0, 0.0]),
            ROB_P,
            ROB_TS,
            {"rtol": 1e-6, "atol": 1e-10},
            {"rtol": 1e-12, "atol": 1e-20},
        ),
        "reaction–diffusion chain (100 states, D = 1000), rtol 1e-6, atol 1e-9": (
            problems.reaction_diffusion(100).compile(cache_dir=bench_cache_dir()),
            _chain_py,
            problems.rd_y0(100),
            CHAIN_P,
            CHAIN_TS,
            {"rtol": 1e-6, "atol": 1e-9},
            {"rtol": 1e-10, "atol": 1e-12},
        ),
    }


def _calls(model, py, compiled, y0, p, ts, tol, method) -> dict:
    span = (ts[0], ts[-1])
    return {
        "symode (compiled rhs, exact Jacobian)": lambda: model.solve(
            y0, ts, p, method=method, **tol
        ),
        "scipy, Python rhs, FD Jacobian": lambda: si.solve_ivp(
            py, span, y0, method=method, t_eval=ts, args=p, **tol
        ),
        "scipy, compiled rhs, FD Jacobian": lambda: si.solve_ivp(
            compiled, span, y0, method=method, t_eval=ts, **tol
        ),
    }


def _compiled_rhs(model, p):
    rhs, pa = model.kernels.rhs, np.array(p)

    def compiled(t, y):
        out = np.empty(y.shape[0])
        rhs(t, y, pa, out)
        return out

    return compiled


def run(quick: bool) -> list[dict]:
    from symode.stiff import use_sparse

    rows, targets = [], []
    reps = 3 if quick else 7
    budget = 0.0  # exactly ``reps`` rounds
    for label, (model, py, y0, p, ts, tol, ref_tol) in _problems().items():
        log(f"  {label}: reference")
        ref = si.solve_ivp(py, (ts[0], ts[-1]), y0, method="Radau", t_eval=ts, args=p, **ref_tol)
        compiled = _compiled_rhs(model, p)
        for method in METHODS:
            log(f"  {label}: {method}")
            calls = _calls(model, py, compiled, y0, p, ts, tol, method)
            results = {k: fn() for k, fn in calls.items()}
            times = round_robin(calls, budget, max_reps=reps, min_reps=reps)
            base = times["scipy, Python rhs, FD Jacobian"]
            for k, res in results.items():
                if k.startswith("symode"):
                    y, st = res.y, res.stats
                    nfev, njev, nlu = st["nfev"], st["njev"], st["nlu"]
                    jac = "sparse" if use_sparse(model, method) else "dense"
                else:
                    y, nfev, njev, nlu, jac = res.y.T, res.nfev, res.njev, res.nlu, "FD"
                t_med = times[k]
                rows.append(
                    {
                        "table": label,
                        "method": method,
                        "how": k,
                        "Jacobian": jac,
                        "ms/solve": t_med * 1e3,
                        "speed-up vs Python rhs": base / t_med,
                        "nfev": int(nfev),
                        "njev": int(njev),
                        "nlu": int(nlu),
                        "max err vs reference": float(np.max(np.abs(y - ref.y.T))),
                    }
                )
            sym = times["symode (compiled rhs, exact Jacobian)"]
            targets.append(
                {
                    "table": "targets",
                    "what": f"{label.split(',')[0]}, {method}: symode vs scipy with a Python rhs",
                    "measured": f"{base / sym:.1f}x ({sym * 1e3:.1f} vs {base * 1e3:.1f} ms)",
                    "target": "report",
                    "met": None,
                }
            )
    return targets + rows
