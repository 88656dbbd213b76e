"""Subprocess helper of test_cache.py: compile one system in a fresh process, report JSON.

Usage: ``python _cache_worker.py MODE CACHE_DIR [START_AT]``

MODE
    kernels  compile, then evaluate the small ``rhs`` kernel (no engine compile)
    nogen    as ``kernels``, but generating source is forbidden (must be a cache hit)
    solve    compile and solve (the engine compiles or loads from numba's cache);
             the solve call is timed
START_AT
    a ``time.time()`` to sleep until before compiling (to start two processes together)

The last stdout line is a JSON object: path, rhs, and for ``solve`` y and solve_s.
"""

import json
import sys
import time

import numpy as np
import sympy as sp

import symode
import symode.model


def worker_system() -> symode.ODESystem:
    """A damped rotation, used only by this worker: x' = -k x + c v, v' = -c x - k v."""
    x, v = sp.symbols("x_worker v_worker")
    k, c = sp.symbols("k_worker c_worker")
    return symode.ODESystem([-k * x + c * v, -c * x - k * v], states=[x, v], params=[k, c])


Y0, PARAMS, T_EVAL = [1.0, 0.5], [0.5, 2.0], np.linspace(0.0, 2.0, 9)


def main(mode: str, cache_dir: str, start_at: float | None) -> dict:
    if mode == "nogen":

        def forbidden(*args, **kwargs):
            raise RuntimeError("generate_numba_source was called: the cache was not reused")

        symode.model.generate_numba_source = forbidden
    if start_at is not None:
        time.sleep(max(0.0, start_at - time.time()))
    model = worker_system().compile(cache_dir=cache_dir)
    result = {"path": str(model.path)}
    if mode == "solve":
        t0 = time.perf_counter()
        sol = model.solve(Y0, T_EVAL, params=PARAMS, method="dopri5", rtol=1e-10, atol=1e-12)
        result["solve_s"] = time.perf_counter() - t0
        result["y"] = sol.y.tolist()
    out = np.full(2, np.nan)
    model.kernels.rhs(0.0, np.array([0.3, -0.2]), np.array(PARAMS), out)
    result["rhs"] = out.tolist()
    return result


if __name__ == "__main__":
    start = float(sys.argv[3]) if len(sys.argv) > 3 else None
    print(json.dumps(main(sys.argv[1], sys.argv[2], start)))
