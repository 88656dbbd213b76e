"""Stiff problems through scipy's implicit solvers, with symode's compiled right-hand side
and its exact compiled Jacobian: ``model.solve(method="Radau" | "BDF" | "LSODA")``.

The bridge until symode has its own stiff solvers. scipy's Radau (Hairer–Wanner
RADAU IIA, order 5), BDF (variable order 1–5, NDF) and LSODA (switching Adams/BDF)
step in Python; each step calls symode's numba kernels: the right-hand side ``rhs``
and the Jacobian ∂f/∂y derived by SymPy — dense (``jac``) for LSODA and small systems,
sparse CSR from the symbolic sparsity pattern (``jac_csr``) for Radau and BDF on large
sparse systems, so their Newton iterations factorize a sparse matrix. scipy's finite
differences would cost n evaluations of f per Jacobian (or a coloured few with
``jac_sparsity``) and approximate it.

Batches run one trajectory after another (scipy's solvers are sequential); float32 is
refused (scipy's solvers run in float64). Gradients are not available through this
bridge: ``vjp`` names the methods that have them.

References: Hairer & Wanner, *Solving ODEs II* (Radau IIA, IV.8); Shampine & Reichelt,
"The MATLAB ODE suite" (NDF/BDF); Petzold, LSODA (1983).
"""

from __future__ import annotations

import numpy as np

from .errors import Status

__all__ = ["IMPLICIT_METHODS", "solve_implicit"]

# scipy.integrate's solver classes of these names (imported on first use: scipy.integrate
# is ~0.4 s of `import symode` otherwise)
IMPLICIT_METHODS = ("Radau", "BDF", "LSODA")
# Radau and BDF take a sparse Jacobian from this many states on when at most this
# share of its entries is structurally nonzero
SPARSE_FROM_STATES = 50
SPARSE_MAX_DENSITY = 0.25


class _Kernels:
    """The right-hand side and Jacobian of one trajectory as scipy calls them."""

    def __init__(self, model, params, sparse: bool):
        k = model.kernels
        self._rhs, self._p = k.rhs, params
        n = model.system.n_states
        self.nfev = self.njev = 0
        if sparse:
            self._values = np.empty(len(k.JAC_INDICES))
            self._jac_csr = k.jac_csr
            self._pattern = (np.array(k.JAC_INDICES), np.array(k.JAC_INDPTR))
            self.jac = self._sparse
        else:
            self._dense = np.empty((n, n))
            self._jac = k.jac
            self.jac = self._full

    def fun(self, t, y):
        out = np.empty(y.shape[0])
        self._rhs(t, y, self._p, out)
        self.nfev += 1
        return out

    def _full(self, t, y):
        out = np.empty_like(self._dense)
        self._jac(t, y, self._p, out)
        self.njev += 1
        return out

    def _sparse(self, t, y):
        values = np.empty_like(self._values)
        self._jac_csr(t, y, self._p, values)
        self.njev += 1
        n = y.shape[0]
        import scipy.sparse as sps

        return sps.csr_matrix((values, *self._pattern), shape=(n, n))


def use_sparse(model, method: str) -> bool:
    """Whether ``method`` gets the sparse Jacobian for this model (see module doc)."""
    n = model.system.n_states
    nnz = len(getattr(model.kernels, "JAC_INDICES", ()))
    return method != "LSODA" and n >= SPARSE_FROM_STATES and nnz <= SPARSE_MAX_DENSITY * n * n


def solve_implicit(model, method, y0, t_eval, t0, t1, params, rtol, atol, max_steps, h0, dense):
    """Integrate one trajectory with scipy's ``method``; returns (y (T, n) with NaN
    after a failure, stats dict, Status, t and h where it stopped, dense interpolant or
    None)."""
    sparse = use_sparse(model, method)
    kernels = _Kernels(model, params, sparse)
    options = {"rtol": rtol, "atol": atol}
    if h0:
        options["first_step"] = h0
    import scipy.integrate as si

    solver = getattr(si, method)(
        kernels.fun, t0, np.array(y0, np.float64), t1, jac=kernels.jac, **options
    )
    n, T = y0.shape[0], t_eval.size
    Y = np.full((T, n), np.nan)
    direction = 1.0 if t1 > t0 else -1.0
    iout = 0
    while iout < T and t_eval[iout] == t0:
        Y[iout] = y0
        iout += 1
    steps, status = 0, Status.SUCCESS
    ts, interpolants = [t0], []
    while solver.status == "running":
        if steps >= max_steps:
            status = Status.MAX_STEPS
            break
        solver.step()
        steps += 1
        if solver.status == "failed":
            status = Status.STEP_UNDERFLOW
            break
        if not np.isfinite(solver.y).all():
            status = Status.NONFINITE
            break
        stop = iout
        while stop < T and direction * (t_eval[stop] - solver.t) <= 0:
            stop += 1
        if stop > iout or dense:
            step_sol = solver.dense_output()
            if stop > iout:
                Y[iout:stop] = step_sol(t_eval[iout:stop]).T
                if t_eval[stop - 1] == solver.t:
                    Y[stop - 1] = solver.y
                iout = stop
            if dense:
                ts.append(solver.t)
                interpolants.append(step_sol)
    stats = {
        "nfev": kernels.nfev,
        "njev": kernels.njev,
        "nlu": int(solver.nlu),
        "naccept": steps,
        "nreject": 0,  # scipy's solvers do not report rejected steps
    }
    h = getattr(solver, "h_abs", None) or getattr(solver, "step_size", None) or 0.0
    sol = _DenseScipy(si.OdeSolution(ts, interpolants)) if dense and interpolants else None
    return Y, stats, status, float(solver.t), float(h or 0.0), sol


class _DenseScipy:
    """scipy's OdeSolution with symode's shape convention: ``sol(t)`` is (..., n)."""

    def __init__(self, ode_solution):
        self._s = ode_solution
        self.ts = np.asarray(ode_solution.ts)
        self.t0, self.t1 = float(self.ts[0]), float(self.ts[-1])

    def __call__(self, t):
        t = np.asarray(t, dtype=np.float64)
        return np.moveaxis(np.asarray(self._s(t)), 0, -1)
