"""symode in one minute: Lotka–Volterra from SymPy to a compiled solver and its gradient.

Run:  python examples/quickstart.py          (add --quick for the fast mode tests use)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np
import sympy as sp

import symode
from symode.maintenance import compile_events

_WARM = """
import time, sympy as sp, symode
t = sp.Symbol("t"); x, y = sp.symbols("x y"); a, b, c, d = sp.symbols("a b c d")
lv = symode.ODESystem([a*x - b*x*y, c*x*y - d*y], states=[x, y], params=[a, b, c, d], t=t)
t0 = time.perf_counter()
model = lv.compile(cache_dir={cache_dir!r})
model.solve([1.0, 1.0], [0.0, 10.0], [1.5, 1.0, 3.0, 1.0], rtol=1e-8, atol=1e-8)
print(time.perf_counter() - t0)
"""


def _warm_load(cache_dir) -> float:
    """compile() + first solve in a fresh Python process (after `import symode`)."""
    code = _WARM.format(cache_dir=None if cache_dir is None else str(cache_dir))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def main(quick: bool = False, plot: str | None = "quickstart.png", cache_dir=None) -> dict:
    t = sp.Symbol("t")
    x, y = sp.symbols("x y")
    a, b, c, d = sp.symbols("a b c d")
    lv = symode.ODESystem(
        [a * x - b * x * y, c * x * y - d * y], states=[x, y], params=[a, b, c, d], t=t
    )
    print("Lotka–Volterra:  x' =", lv.rhs[0], "   y' =", lv.rhs[1])
    print("\nJacobian ∂f/∂y (derived by SymPy):")
    sp.pprint(lv.jacobian())
    print("\nAdjoint equations (Chen et al. 2018, eq. 4), as vector–Jacobian products:")
    print(lv.adjoint())

    t0 = time.perf_counter()
    ts = np.linspace(0, 10, 101 if not quick else 21)
    theta = [1.5, 1.0, 3.0, 1.0]
    with compile_events() as compiled:
        model = lv.compile(cache_dir=cache_dir)
        sol = model.solve([1.0, 1.0], ts, theta, method="dopri5", rtol=1e-8, atol=1e-8)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    reps = 20 if not quick else 3
    for _ in range(reps):
        sol = model.solve([1.0, 1.0], ts, theta, method="dopri5", rtol=1e-8, atol=1e-8)
    t_solve = (time.perf_counter() - t0) / reps
    if not any(compiled.values()):
        kind = "everything loaded from the caches"
    else:
        kind = (
            f"numba compiled {compiled['kernels']} kernel(s) of this system and "
            f"{compiled['engine'] + compiled['spec']} engine function(s); cached for later "
            "processes"
        )
    print(f"\ncompile() + first solve: {t_first:.2f} s ({kind})")
    print(f"warm load in a fresh process (compile() + first solve): {_warm_load(cache_dir):.2f} s")
    print(f"solve (dopri5, rtol=atol=1e-8): {t_solve * 1e3:.3f} ms, stats {sol.stats}")
    print("y(10) =", sol.y[-1])

    cot = sol.y - 1.0  # L = Σ ½ (y(tᵢ) − 1)²
    grad = model.vjp([1.0, 1.0], ts, theta, cot, adjoint="checkpoint", rtol=1e-8, atol=1e-8)
    fwd = model.vjp([1.0, 1.0], ts, theta, cot, adjoint="forward", rtol=1e-8, atol=1e-8)
    print("\ndL/dθ  (checkpointed adjoint):   ", grad.params)
    print("dL/dθ  (forward sensitivities):  ", fwd.params)
    rel = np.max(np.abs(grad.params - fwd.params)) / np.max(np.abs(fwd.params))
    print(f"agreement: {rel:.1e} relative")

    if plot:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("(matplotlib not installed: no plot)")
        else:
            fig, ax = plt.subplots(figsize=(6, 3))
            ax.plot(sol.t, sol.y[:, 0], label="prey x")
            ax.plot(sol.t, sol.y[:, 1], label="predator y")
            ax.set_xlabel("t")
            ax.legend()
            fig.tight_layout()
            fig.savefig(plot, dpi=100)
            print(f"plot saved to {plot}")
    return {"y_end": sol.y[-1], "grad": grad.params, "rel": rel}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small, fast run (used by tests)")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args()
    main(quick=args.quick, plot=None if args.no_plot else "quickstart.png")
