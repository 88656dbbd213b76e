"""``symode.solve_ivp``: scipy's front door over symode's compiled engine.

Existing ``scipy.integrate.solve_ivp`` users switch by changing one import; the
result has scipy's field names and shapes (``y`` is (n, T)). A plain Python callable
runs through scipy itself, unchanged; a symode system runs symode's explicit methods,
or scipy's implicit ones ("Radau", "BDF", "LSODA") with symode's compiled right-hand
side and exact Jacobian (symode/stiff.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .errors import IntegrationError
from .model import Model
from .stiff import IMPLICIT_METHODS
from .system import ODESystem
from .tableaus import get_tableau

if TYPE_CHECKING:  # scipy.integrate and scipy.optimize load on first call (~0.4 s)
    from scipy.optimize import OptimizeResult

__all__ = ["solve_ivp"]

_SCIPY_NAMES = {"RK45": "dopri5", "RK23": "bosh3", "DOP853": "dopri8"}


def solve_ivp(
    fun,
    t_span,
    y0,
    method: str = "RK45",
    t_eval=None,
    dense_output: bool = False,
    args=None,
    rtol: float = 1e-3,
    atol=1e-6,
    first_step: float | None = None,
    **options,
) -> OptimizeResult:
    """Solve an initial value problem with scipy's calling convention.

    Parameters
    ----------
    fun : ODESystem, Model, or a Python callable ``fun(t, y, *args)``
        The dynamics (an ODESystem is compiled, and cached, on first use). A Python
        callable is passed to ``scipy.integrate.solve_ivp`` with every argument
        unchanged (scipy's methods, events, vectorized, ...): nothing is compiled.
    t_span : (t0, t1)
    y0 : (n,) array
    method : "RK45" (= "dopri5"), "RK23" (= "bosh3"), "DOP853" (= "dopri8"), any
        symode method name (fixed-step methods need ``dt=`` in ``options``), or
        "Radau", "BDF", "LSODA": scipy's implicit solvers with the compiled right-hand
        side and the exact compiled Jacobian, for stiff problems.
    t_eval : array, optional
        Output times; without it, the accepted step points are returned, as scipy does.
    args : tuple, optional
        The parameter values, in the order of the system's ``params``.
    rtol, atol, first_step, options : as scipy; ``options`` go to ``Model.solve``
        (``max_steps``, ``dt``, ``dtype``, ...).

    Returns
    -------
    OptimizeResult with t, y (n, T), sol, nfev, njev, nlu (0 for the explicit
    methods), status (0 success, -1 failure), message, success, t_events=None,
    y_events=None.

    Examples
    --------
    >>> res = symode.solve_ivp(lorenz, (0, 5), [1, 1, 1], args=(10, 28, 8 / 3))  # doctest: +SKIP
    """
    if not isinstance(fun, (ODESystem, Model)):
        if not callable(fun):
            raise TypeError(f"fun must be an ODESystem, a Model or a callable, got {fun!r}")
        import scipy.integrate

        return scipy.integrate.solve_ivp(
            fun, t_span, y0, method=method, t_eval=t_eval, dense_output=dense_output,
            args=args, rtol=rtol, atol=atol, first_step=first_step, **options,
        )  # fmt: skip
    model = fun.compile() if isinstance(fun, ODESystem) else fun
    implicit = method in IMPLICIT_METHODS
    method = _SCIPY_NAMES.get(method, method)
    params = np.asarray(args if args is not None else (), dtype=np.float64).ravel()
    t0, t1 = (float(v) for v in t_span)
    want_steps = t_eval is None
    times = np.array([t0, t1]) if want_steps else np.asarray(t_eval, dtype=np.float64)
    kwargs = dict(rtol=rtol, atol=atol, h0=first_step, t_span=(t0, t1), throw=False)
    kwargs.update(options)
    if not implicit and not get_tableau(method).adaptive:
        for key in ("rtol", "atol", "h0"):
            kwargs.pop(key)
    try:
        sol = model.solve(y0, times, params, method, dense=dense_output or want_steps, **kwargs)
    except IntegrationError as err:  # pragma: no cover - throw=False never raises
        sol = err.solution
    t_out, y_out = sol.t, sol.y
    if want_steps and sol.sol is not None:
        t_out = sol.sol.ts
        y_out = sol.sol(t_out)
    from scipy.optimize import OptimizeResult

    return OptimizeResult(
        t=t_out,
        y=np.ascontiguousarray(y_out.T),
        sol=sol.sol if dense_output else None,
        t_events=None,
        y_events=None,
        nfev=sol.stats["nfev"],
        njev=sol.stats.get("njev", 0),  # the implicit methods' Jacobians and LU
        nlu=sol.stats.get("nlu", 0),  # decompositions; none for the explicit ones
        status=0 if sol.success else -1,
        message=sol.message,
        success=sol.success,
    )
