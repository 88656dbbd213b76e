"""Verification tools for your own tests: gradient checks and adjoint-equation checks.

Both raise :class:`AssertionError` with a readable, pytest-friendly message when the
check fails, so they drop straight into a test function::

    from symode.testing import check_gradient, check_adjoint_equations

    def test_my_model_gradient():
        check_gradient(model, y0, ts, params, cotangent=np.ones((len(ts), n)))

:func:`check_gradient`
    Compares one adjoint mode against central finite differences of the solve (with
    Richardson extrapolation) and against a second, independent gradient mode, one
    component at a time.
:func:`check_adjoint_equations`
    Compares the adjoint equations symode derives for a system with your hand
    derivation, exactly (``sympy.simplify(derived - expected) == 0``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import sympy as sp

from .gradients import ADJOINT_MODES

__all__ = ["GradientReport", "check_gradient", "check_adjoint_equations"]

# keyword options of Model.vjp / value_and_grad that Model.solve accepts as well: the
# finite differences of a raw-cotangent loss re-run the same forward solve
_SOLVE_OPTIONS = ("dt", "grid", "t_span", "max_steps", "h0", "dtype")


@dataclass
class GradientReport:
    """The outcome of :func:`check_gradient`, one row per gradient component.

    Attributes
    ----------
    adjoint : str
        The adjoint mode under test.
    reference_mode : str
        The second gradient mode it was compared with ("forward", or "checkpoint"
        when the mode under test is "forward").
    names : list of str
        Component labels, ``y0[<state>]`` then ``params[<param>]``.
    gradient : (n + p,) array
        ∂L/∂(y0, params) from the mode under test.
    finite_difference : (n + p,) array
        Central differences with Richardson extrapolation, ``(4 D(h/2) - D(h)) / 3``.
    fd_spread : (n + p,) array
        ``|D(h/2) - D(h)| / 3``, the size of the Richardson correction: a rough bound
        on the finite differences' own error. When it is comparable to the gradient,
        the finite differences are not trustworthy (choose ``fd_step``).
    reference : (n + p,) array
        The gradient from ``reference_mode``.
    rel_err_fd, rel_err_reference : (n + p,) arrays
        ``|gradient - other| / max(|other_i|, rel_floor * max|other|)``.
    steps : (n + p,) array
        The finite-difference step h of each component.
    value : float
        The loss at the unperturbed inputs.
    rtol_check : float
        The tolerance every relative error must meet.
    """

    adjoint: str
    reference_mode: str
    names: list
    gradient: np.ndarray
    finite_difference: np.ndarray
    fd_spread: np.ndarray
    reference: np.ndarray
    rel_err_fd: np.ndarray
    rel_err_reference: np.ndarray
    steps: np.ndarray
    value: float
    rtol_check: float

    @property
    def max_rel_err_fd(self) -> float:
        """The largest relative error against finite differences."""
        return float(np.max(self.rel_err_fd, initial=0.0))

    @property
    def max_rel_err_reference(self) -> float:
        """The largest relative error against the reference mode."""
        return float(np.max(self.rel_err_reference, initial=0.0))

    @property
    def failures(self) -> list:
        """Names of the components whose error exceeds ``rtol_check``."""
        bad = (self.rel_err_fd > self.rtol_check) | (self.rel_err_reference > self.rtol_check)
        bad |= ~np.isfinite(self.gradient)
        return [nm for nm, b in zip(self.names, bad) if b]

    @property
    def passed(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        ref = self.reference_mode
        head = (
            f"gradient check of adjoint={self.adjoint!r} against central finite differences "
            f"(Richardson) and adjoint={ref!r}; rtol_check={self.rtol_check:.1e}, "
            f"loss={self.value:.10g}"
        )
        w = max([9] + [len(nm) for nm in self.names])
        cols = (
            f"{'component':<{w}}  {self.adjoint:>17}  {'finite diff':>17}  {'rel err':>8}  "
            f"{ref:>17}  {'rel err':>8}  {'fd spread':>9}"
        )
        lines = [head, cols, "-" * len(cols)]
        failing = set(self.failures)
        for i, nm in enumerate(self.names):
            flag = "  <-- FAIL" if nm in failing else ""
            lines.append(
                f"{nm:<{w}}  {self.gradient[i]:>17.10e}  {self.finite_difference[i]:>17.10e}  "
                f"{self.rel_err_fd[i]:>8.1e}  {self.reference[i]:>17.10e}  "
                f"{self.rel_err_reference[i]:>8.1e}  {self.fd_spread[i]:>9.1e}{flag}"
            )
        verdict = "PASS" if self.passed else f"FAIL ({len(failing)} of {len(self.names)})"
        lines.append(
            f"max rel err: {self.max_rel_err_fd:.2e} vs finite differences, "
            f"{self.max_rel_err_reference:.2e} vs {ref!r}: {verdict}"
        )
        return "\n".join(lines)


def _fd_steps(y0: np.ndarray, params: np.ndarray, fd_step, tol: float) -> np.ndarray:
    """Each component's finite-difference step: ``fd_step`` times its own magnitude, or
    for a zero component the largest magnitude of its group (y0 or params), or 1."""
    if fd_step is None:
        fd_step = min(1e-2, max(1e-4, tol**0.2))
    scales = []
    for group in (y0, params):
        mags = np.abs(group)
        floor = mags.max(initial=0.0) or 1.0
        scales.append(np.where(mags > 0, mags, floor))
    x_scale = np.concatenate(scales)
    return np.asarray(np.broadcast_to(fd_step, x_scale.shape), np.float64) * x_scale


def _rel_err(a: np.ndarray, b: np.ndarray, floor: float) -> np.ndarray:
    scale = np.maximum(np.abs(b), floor * np.max(np.abs(b), initial=0.0))
    scale = np.where(scale > 0, scale, 1.0)  # both exactly zero: the absolute error
    err = np.abs(a - b) / scale
    return np.where(np.isfinite(a) & np.isfinite(b), err, np.inf)


def check_gradient(
    model,
    y0,
    t_eval,
    params,
    cotangent=None,
    data=None,
    *,
    adjoint: str = "checkpoint",
    rtol_check: float = 1e-6,
    method: str = "dopri5",
    solver_rtol: float = 1e-10,
    solver_atol: float = 1e-10,
    fd_step=None,
    rel_floor: float = 1e-3,
    **options,
) -> GradientReport:
    """Check one adjoint mode's gradient against finite differences and a second mode.

    The loss is ``L = Σᵢ cotangent[i] · y(t_eval[i])`` when ``cotangent`` is given (the
    linearization that :meth:`Model.vjp` differentiates), else the model's compiled
    symbolic loss (``system.compile(loss=symode.Loss(...))``) evaluated on ``data``.
    Its gradient with respect to ``y0`` and ``params`` from ``adjoint`` is compared with

    (a) central finite differences of ``L`` itself, with steps ``h`` and ``h/2``
        combined by Richardson extrapolation, ``D = (4 D(h/2) - D(h)) / 3``
        (truncation error O(h⁴)); every evaluation is a full solve with the same
        method and tolerances;
    (b) the gradient of a second mode: forward sensitivities (``adjoint="forward"``),
        or the checkpointed adjoint when ``adjoint="forward"`` is the one under test.

    The relative error of component ``i`` is ``|g_i - r_i| / max(|r_i|, rel_floor *
    max_j |r_j|)``: components much smaller than the largest are judged against that
    floor, since finite differences cannot resolve them better.

    Parameters
    ----------
    model : Model
        A compiled system (``ODESystem.compile``).
    y0 : (n,) array
    t_eval : (T,) array
    params : (p,) array
        One trajectory (no batches).
    cotangent : (T, n) array, optional
        ``∂L/∂y(t_eval[i])``; omit to check the model's symbolic loss.
    data : (T, d) array, optional
        The symbolic loss's data placeholders.
    adjoint : {"checkpoint", "backsolve", "discrete", "forward"}
        The mode under test.
    rtol_check : float
        Largest relative error allowed for any component (against (a) and (b)).
    method, solver_rtol, solver_atol :
        Solver used for every solve. The finite differences of an adaptive solver are
        noisy at the level of its tolerance divided by h, hence the tight defaults.
        For fixed-step methods pass ``dt=`` (or ``grid=``): the finite differences are
        then of a smooth map, and ``adjoint="discrete"`` matches them to rounding.
    fd_step : float or (n + p,) array, optional
        Relative finite-difference step. Component i moves by ``h_i = fd_step_i *
        |x_i|``, its own magnitude (an initial value of 0.01 is not moved by 1e-3, a
        parameter of 1e-4 not by more than itself); a component that is exactly 0 uses
        the largest magnitude among the y0 (or params) entries instead, or 1 if they are
        all 0. Default ``tol ** (1/5)`` clipped to [1e-4, 1e-2], tol = max(solver_rtol,
        solver_atol): with Richardson extrapolation the truncation error is O(h⁴) while
        the adaptive solver's noise in the loss (~ tol) becomes tol / h in the
        difference quotient, and h ~ tol^(1/5) balances the two (1e-2 at 1e-10). On
        fixed steps (``dt=`` or ``grid=``) the loss is smooth in the inputs, its noise
        is rounding, and the default is 1e-3.
    rel_floor : float
        See above (default 1e-3).
    **options :
        More options of :meth:`Model.vjp` (``dt``, ``grid``, ``t_span``,
        ``max_steps``, ``h0``, ``checkpoints``, ``seminorm``, ``adjoint_rtol``,
        ``adjoint_atol``, ...). ``dt``, ``grid``, ``t_span``, ``max_steps`` and ``h0``
        also apply to the finite-difference solves.

    Returns
    -------
    GradientReport
        Per-component values and errors; ``str(report)`` is a table.

    Raises
    ------
    AssertionError
        When any component's relative error exceeds ``rtol_check`` (the message is the
        report's table with the failing rows marked).
    ValueError
        For an unknown adjoint mode or batched inputs.

    Examples
    --------
    >>> from symode.testing import check_gradient
    >>> ts = np.linspace(0, 5, 11)
    >>> report = check_gradient(model, [1.0, 1.0], ts, [1.5, 1.0, 3.0, 1.0],
    ...                         cotangent=np.ones((11, 2)), adjoint="backsolve")
    ...                                                      # doctest: +SKIP
    >>> report.max_rel_err_fd < 1e-6                         # doctest: +SKIP
    True
    >>> check_gradient(model, [1.0, 1.0], ts, [1.5, 1.0, 3.0, 1.0], cotangent=cot,
    ...                method="rk4", dt=0.01, adjoint="discrete",
    ...                rtol_check=1e-9)                      # doctest: +SKIP
    """
    __tracebackhide__ = True  # pytest shows the caller's line and the report, not ours
    if adjoint not in ADJOINT_MODES:
        raise ValueError(f"adjoint must be one of {sorted(ADJOINT_MODES)}, got {adjoint!r}")
    system = model.system
    n, n_p = system.n_states, system.n_params
    y0 = np.array(y0, dtype=np.float64)
    params = np.zeros(0) if params is None else np.array(params, dtype=np.float64)
    if y0.shape != (n,) or params.shape != (n_p,):
        raise ValueError(
            f"check_gradient checks one trajectory: y0 must have shape ({n},) and params "
            f"({n_p},); got {y0.shape} and {params.shape}"
        )
    if cotangent is None and getattr(model, "loss", None) is None:
        raise ValueError("pass cotangent=, or check a model compiled with loss=symode.Loss(...)")
    if cotangent is not None:
        cotangent = np.asarray(cotangent, dtype=np.float64)
    options = dict(options, method=method, rtol=solver_rtol, atol=solver_atol)
    solve_opts = {k: v for k, v in options.items() if k in _SOLVE_OPTIONS + ("method",)}
    solve_opts.update(rtol=solver_rtol, atol=solver_atol)

    def gradient(mode):
        if cotangent is not None:
            g = model.vjp(y0, t_eval, params, cotangent, adjoint=mode, **options)
            return np.concatenate([np.ravel(g.y0), np.ravel(g.params)])
        _, g = model.value_and_grad(
            y0, t_eval, params, data, wrt=("y0", "params"), adjoint=mode, **options
        )
        return np.asarray(g, dtype=np.float64)

    def loss(x):
        yy, pp = x[:n], x[n:]
        if cotangent is not None:
            sol = model.solve(yy, t_eval, pp, **solve_opts)
            return float(np.sum(cotangent * sol.y))
        value, _ = model.value_and_grad(yy, t_eval, pp, data, adjoint="checkpoint", **options)
        return float(value)

    x0 = np.concatenate([y0, params])
    # the loss's noise: the adaptive solver's tolerance, or rounding on fixed steps
    fixed = options.get("dt") is not None or options.get("grid") is not None
    steps = _fd_steps(y0, params, fd_step, 1e-15 if fixed else max(solver_rtol, solver_atol))
    fd = np.empty(x0.size)
    spread = np.empty(x0.size)
    for i in range(x0.size):

        def central(h, i=i):
            xp, xm = x0.copy(), x0.copy()
            xp[i] += h
            xm[i] -= h
            return (loss(xp) - loss(xm)) / (2.0 * h)

        d_h, d_h2 = central(steps[i]), central(steps[i] / 2)
        fd[i] = (4.0 * d_h2 - d_h) / 3.0
        spread[i] = abs(d_h2 - d_h) / 3.0

    ref_mode = "forward" if adjoint != "forward" else "checkpoint"
    g = gradient(adjoint)
    ref = gradient(ref_mode)
    names = [f"y0[{s}]" for s in system.states] + [f"params[{q}]" for q in system.params]
    report = GradientReport(
        adjoint=adjoint,
        reference_mode=ref_mode,
        names=names,
        gradient=g,
        finite_difference=fd,
        fd_spread=spread,
        reference=ref,
        rel_err_fd=_rel_err(g, fd, rel_floor),
        rel_err_reference=_rel_err(g, ref, rel_floor),
        steps=steps,
        value=loss(x0),
        rtol_check=float(rtol_check),
    )
    if not report.passed:
        raise AssertionError(f"gradient check failed for {', '.join(report.failures)}\n{report}")
    return report


def _as_exprs(items, what: str) -> list:
    if isinstance(items, sp.MatrixBase):
        items = list(items)
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise ValueError(f"{what} must be a sequence of SymPy expressions, got {items!r}")
    try:
        return [sp.sympify(e) for e in items]
    except (sp.SympifyError, TypeError) as err:
        raise ValueError(f"{what} holds something that is not an expression: {err}") from None


def check_adjoint_equations(system, expected):
    """Assert that ``system.adjoint()`` equals a hand derivation, exactly.

    The derived adjoint equations are ``dλ/dt = -(∂f/∂y)ᵀ λ`` and ``dμ/dt =
    -(∂f/∂θ)ᵀ λ``; each right-hand side must satisfy ``sympy.simplify(derived -
    expected) == 0``.

    Parameters
    ----------
    system : ODESystem
    expected : dict or sequence
        ``{"lam": [...], "mu": [...]}`` — the right-hand sides of dλ_j/dt (one per
        state) and dμ_k/dt (one per parameter) — or one sequence, λ's then μ's. Write
        them in the system's own symbols and its adjoint symbols, which you get from
        ``system.adjoint().lam`` and ``system.adjoint().mu``.

    Returns
    -------
    AdjointEquations
        ``system.adjoint()``, when every equation matches.

    Raises
    ------
    AssertionError
        Listing every equation that differs: its name, the derived and the expected
        right-hand side, and their simplified difference.
    ValueError
        When ``expected`` has the wrong keys or the wrong number of expressions.

    Examples
    --------
    >>> import sympy as sp, symode
    >>> from symode.testing import check_adjoint_equations
    >>> x, k = sp.symbols("x k")
    >>> decay = symode.ODESystem([-k * x], states=[x], params=[k])
    >>> (lam_x,), (mu_k,) = decay.adjoint().lam, decay.adjoint().mu
    >>> _ = check_adjoint_equations(decay, {"lam": [k * lam_x], "mu": [x * lam_x]})
    """
    __tracebackhide__ = True
    adj = system.adjoint()
    n, n_p = len(adj.lam), len(adj.mu)
    if isinstance(expected, Mapping):
        unknown = set(expected) - {"lam", "mu"}
        if unknown:
            raise ValueError(f"expected has unknown keys {sorted(unknown)}; use 'lam' and 'mu'")
        if "lam" not in expected or ("mu" not in expected and n_p):
            raise ValueError("expected needs both 'lam' (one per state) and 'mu' (one per param)")
        lam = _as_exprs(expected["lam"], "expected['lam']")
        mu = _as_exprs(expected.get("mu", []), "expected['mu']")
    else:
        both = _as_exprs(expected, "expected")
        if len(both) != n + n_p:
            raise ValueError(
                f"expected has {len(both)} expressions; the system has {n} adjoint states λ "
                f"and {n_p} parameter adjoints μ ({n + n_p} in all, λ's first)"
            )
        lam, mu = both[:n], both[n:]
    if len(lam) != n or len(mu) != n_p:
        raise ValueError(
            f"expected has {len(lam)} λ and {len(mu)} μ right-hand sides; the system has "
            f"{n} states and {n_p} parameters"
        )
    known = set(system.states) | set(system.params) | {system.t} | set(adj.lam) | set(adj.mu)
    rows = [(f"d{s.name}/dt", d, e) for s, d, e in zip(adj.lam, adj.lam_rhs, lam)]
    rows += [(f"d{s.name}/dt", d, e) for s, d, e in zip(adj.mu, adj.mu_rhs, mu)]
    problems = []
    for name, derived, exp in rows:
        diff = sp.simplify(derived - exp)
        if diff != 0:
            problems.append(
                f"  {name}:\n    derived:    {derived}\n    expected:   {exp}\n"
                f"    difference: {diff}"
            )
    if problems:
        foreign = set().union(*(e.free_symbols for _, _, e in rows)) - known
        hint = ""
        if foreign:
            names = ", ".join(sorted(map(str, foreign)))
            hint = (
                f"\n  note: the expectation uses symbols that are not the system's ({names}); "
                f"the adjoint symbols are λ = {list(adj.lam)}, μ = {list(adj.mu)} "
                "(system.adjoint().lam / .mu)"
            )
        raise AssertionError(
            f"{len(problems)} of {len(rows)} adjoint equations differ from the expectation:\n"
            + "\n".join(problems)
            + hint
        )
    return adj
