"""Fresh-process side of bench_compile_once.py: time to first result for one system.

Usage: ``python _p7_child.py WHAT CACHE_DIR [K]``

WHAT
    p7       P7's system (Lotka–Volterra + k·x², k given), the P3 observation loss:
             import, compile(), first solve, then the first value_and_grad per mode
    chain    the 100-state reaction–diffusion chain: derive + print + compile + first
             solve
    floor    numba's own first dispatch: a trivial cached @njit function's first call
    special  P7's system with compile(specialize=True): compile() + first solve

Prints one JSON line: seconds per phase and numba compile events seen (engine: in
symode.kernels; kernels: the system's module).
"""

import json
import sys
import time

T_START = time.perf_counter()


def _counter() -> dict:
    """numba's compilations from here to the end of the process, by where they live
    (symode.maintenance.compile_events)."""
    from symode.maintenance import compile_events

    return compile_events().start()


def p7(cache_dir: str, k: float, specialize: bool = False) -> dict:
    import numpy as np
    import sympy as sp

    out = {}
    t0 = time.perf_counter()
    import symode

    out["import_s"] = time.perf_counter() - t0
    counts = _counter()
    t = sp.Symbol("t")
    x, y = sp.symbols("x y")
    a, b, c, d = sp.symbols("a b c d")
    system = symode.ODESystem(
        [a * x - b * x * y + sp.Float(k) * x**2, c * x * y - d * y],
        states=[x, y],
        params=[a, b, c, d],
        t=t,
    )
    loss = symode.Loss(observation=((x - 1) ** 2 + (y - 1) ** 2) / 2)
    ts = np.linspace(0.0, 10.0, 101)
    p, y0 = np.array([1.5, 1.0, 3.0, 1.0]), np.array([1.0, 1.0])
    opts = {"rtol": 1e-8, "atol": 1e-8}
    t0 = time.perf_counter()
    model = system.compile(loss=loss, cache_dir=cache_dir, specialize=specialize)
    out["compile_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.solve(y0, ts, p, **opts)
    out["first_solve_s"] = time.perf_counter() - t0
    out["compile_and_solve_s"] = out["compile_s"] + out["first_solve_s"]
    if not specialize:
        for mode in ("checkpoint", "backsolve", "discrete", "forward"):
            t0 = time.perf_counter()
            model.value_and_grad(y0, ts, p, adjoint=mode, **opts)
            out[f"first_{mode}_s"] = time.perf_counter() - t0
    out["compiles"] = counts
    out["process_s"] = time.perf_counter() - T_START
    return out


def chain(cache_dir: str) -> dict:
    import numpy as np

    t0 = time.perf_counter()
    import problems

    import symode  # noqa: F401

    t_import = time.perf_counter() - t0
    counts = _counter()
    t0 = time.perf_counter()
    model = problems.reaction_diffusion().compile(cache_dir=cache_dir)
    t_compile = time.perf_counter() - t0
    t1 = time.perf_counter()
    model.solve(problems.rd_y0(), np.linspace(0.0, 10.0, 101), problems.RD_PARAMS, rtol=1e-8,
                atol=1e-8)  # fmt: skip
    t_solve = time.perf_counter() - t1
    return {
        "import_s": t_import,
        "compile_s": t_compile,
        "first_solve_s": t_solve,
        "compile_and_solve_s": t_compile + t_solve,
        "compiles": counts,
    }


def floor(cache_dir: str) -> dict:
    """numba's first dispatch of a cached trivial function, in a fresh process."""
    import importlib.util
    import pathlib

    path = pathlib.Path(cache_dir) / "trivial_floor.py"
    path.write_text(
        "from numba import njit\n\n\n@njit(cache=True)\ndef f(x):\n    return x + 1.0\n"
    )
    spec = importlib.util.spec_from_file_location("trivial_floor", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["trivial_floor"] = module
    spec.loader.exec_module(module)
    t0 = time.perf_counter()
    module.f(1.0)
    return {"first_dispatch_s": time.perf_counter() - t0}


if __name__ == "__main__":
    what, cache = sys.argv[1], sys.argv[2]
    if what in ("p7", "special"):
        result = p7(cache, float(sys.argv[3]), specialize=what == "special")
    elif what == "chain":
        result = chain(cache)
    else:
        result = floor(cache)
    print(json.dumps(result))
