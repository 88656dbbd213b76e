"""Subprocess helper of test_cache.py: compile one system in a fresh process, report JSON.

Usage: ``python _cache_worker.py MODE CACHE_DIR [START_AT] [EXTRA]``

MODE
    kernels  compile, then evaluate the small ``rhs`` kernel (no engine compile)
    nogen    as ``kernels``, but generating source is forbidden (must be a cache hit)
    solve    compile and solve (the engine compiles or loads from numba's cache);
             the solve call is timed
    special  as ``solve`` with ``compile(specialize=True)``
    mlp      compile a symode.nn.MLP (2, EXTRA, 2) instead, solve and take a checkpoint
             gradient
START_AT
    a ``time.time()`` to sleep until before compiling (to start two processes
    together), or "-" for none
EXTRA
    a number k: the system gets an extra term k·x² (a system no cache has seen)

The last stdout line is a JSON object: path, rhs, compiles (numba compilations seen in
this process, by where the function lives: "engine" for symode.kernels, "kernels" for
the system's generated module, "spec" for a specialized engine copy), kernel_index (the
numba index files of the system's kernels), and for the solves y and solve_s.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import sympy as sp

import symode
import symode.model
from symode.maintenance import compile_events
from symode.nn import MLP


def worker_system(extra: float = 0.0) -> symode.ODESystem:
    """A damped rotation, used only by this worker: x' = -k x + c v (+ extra x²),
    v' = -c x - k v."""
    x, v = sp.symbols("x_worker v_worker")
    k, c = sp.symbols("k_worker c_worker")
    return symode.ODESystem(
        [-k * x + c * v + sp.Float(extra) * x**2, -c * x - k * v],
        states=[x, v],
        params=[k, c],
    )


Y0, PARAMS, T_EVAL = [1.0, 0.5], [0.5, 2.0], np.linspace(0.0, 2.0, 9)


def main(mode: str, cache_dir: str, start_at: float | None, extra: float) -> dict:
    if mode == "nogen":

        def forbidden(*args, **kwargs):
            raise RuntimeError("generate_numba_source was called: the cache was not reused")

        symode.model.generate_numba_source = forbidden
    if start_at is not None:
        time.sleep(max(0.0, start_at - time.time()))
    counts = compile_events().start()  # to the end of this process
    if mode == "mlp":
        return mlp_worker(cache_dir, int(extra), counts)
    model = worker_system(extra).compile(cache_dir=cache_dir, specialize=mode == "special")
    result = {"path": str(model.path)}
    if mode in ("solve", "special"):
        t0 = time.perf_counter()
        sol = model.solve(Y0, T_EVAL, params=PARAMS, method="dopri5", rtol=1e-10, atol=1e-12)
        result["solve_s"] = time.perf_counter() - t0
        result["y"] = sol.y.tolist()
        entry = model.engine.dispatcher("solve_forward", model.engine.method("dopri5"))
        result["entry_module"] = entry.py_func.__module__
    out = np.full(2, np.nan)
    model.kernels.rhs(0.0, np.array([0.3, -0.2]), np.array(PARAMS), out)
    result["rhs"] = out.tolist()
    result["compiles"] = counts
    where = Path(model.kernels.rhs.stats.cache_path)
    result["kernel_index"] = sorted(p.name for p in where.glob("*.nbi"))
    return result


def mlp_worker(cache_dir: str, width: int, counts: dict) -> dict:
    mlp = MLP((2, width, 2), "tanh", seed=0)
    model = mlp.compile(cache_dir=cache_dir)
    y = model.solve(Y0, T_EVAL, mlp.params).y
    g = model.vjp(Y0, T_EVAL, mlp.params, np.ones_like(y))
    return {"y": y.tolist(), "grad": g.params[:3].tolist(), "compiles": counts}


if __name__ == "__main__":
    start = float(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] != "-" else None
    extra = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    print(json.dumps(main(sys.argv[1], sys.argv[2], start, extra)))
