"""The integration engine through ``Model.solve``: orders, tolerances, outputs, failures.

Closed-form references: the linear system ``y' = A y`` of ``linear_model`` (exact
solution ``expm(A t) y0``) and the forced damped oscillator of ``oscillator_model``
(non-autonomous, so wrong nodes ``c`` would show up). SciPy's DOP853 at
``rtol = atol = 1e-12`` is the gold standard where no closed form exists.

Convergence orders are measured as the least-squares slope of ``log(error)`` against
``log(dt)`` over a range of steps chosen in the asymptotic regime and well above
rounding; every slope must lie within ``ORDER_TOL`` of the nominal order. Adaptive
tableaus are run on fixed grids through :func:`fixed_grid` (``Model.solve`` with
``grid=``: fixed steps, no error control).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import sympy as sp

import symode
from symode import IntegrationError, ShapeError, Status
from symode.tableaus import get_tableau

T_SYM = sp.Symbol("t")  # the time symbol of conftest's systems
FIXED = ["euler", "midpoint", "heun", "rk4"]
ADAPTIVE = ["bosh3", "dopri5", "tsit5", "dopri8"]
ALL = FIXED + ADAPTIVE
ORDER_TOL = 0.2

# -- closed-form problems ----------------------------------------------------------------

LIN_P = np.array([-0.1, 1.0, 0.5, -0.3])
LIN_Y0 = np.array([1.0, 0.5, -0.3])


def lin_matrix(p=LIN_P):
    return np.array([[p[0], p[1], 0.0], [-p[1], p[0], p[2]], [0.0, -p[2], p[3]]])


def lin_exact(ts, y0=LIN_Y0, p=LIN_P):
    A = lin_matrix(p)
    return np.array([scipy.linalg.expm(A * t) @ y0 for t in np.atleast_1d(ts)])


OSC_P = np.array([2.0, 0.1, 1.5, 1.3])  # omega, zeta, F, Omega
OSC_Y0 = np.array([1.0, 0.0])


def osc_exact(ts, y0=OSC_Y0, p=OSC_P):
    """x'' + 2ζω x' + ω² x = F cos(Ω t), underdamped: particular + homogeneous parts."""
    w, z, F, Om = p
    ts = np.atleast_1d(np.asarray(ts, dtype=float))
    G = F / (w**2 - Om**2 + 2j * z * w * Om)
    xp = (G * np.exp(1j * Om * ts)).real
    vp = (1j * Om * G * np.exp(1j * Om * ts)).real
    a, wd = z * w, w * np.sqrt(1 - z**2)
    c1 = y0[0] - G.real
    c2 = (y0[1] - (1j * Om * G).real + a * c1) / wd
    e = np.exp(-a * ts)
    xh = e * (c1 * np.cos(wd * ts) + c2 * np.sin(wd * ts))
    vh = -a * xh + e * wd * (-c1 * np.sin(wd * ts) + c2 * np.cos(wd * ts))
    return np.stack([xp + xh, vp + vh], axis=-1)


def osc_rhs(t, u, p=OSC_P):
    w, z, F, Om = p
    return [u[1], -2 * z * w * u[1] - w**2 * u[0] + F * np.cos(Om * t)]


def lorenz_rhs(t, u):
    x, y, z = u
    return [10.0 * (y - x), x * (28.0 - z) - y, x * y - 8.0 / 3.0 * z]


def vdp_rhs(t, u, mu=1.0):
    return [u[1], mu * (1 - u[0] ** 2) * u[1] - u[0]]


def scipy_ref(fun, span, y0, t_eval):
    r = scipy.integrate.solve_ivp(
        fun, span, y0, method="DOP853", rtol=1e-12, atol=1e-12, t_eval=t_eval
    )
    assert r.success
    return r.y.T


# -- extra systems (module scoped: one numba compile each) -------------------------------


@pytest.fixture(scope="module")
def vdp_model(cache_dir):
    x, v, mu = sp.symbols("x v mu")
    system = symode.ODESystem([v, mu * (1 - x**2) * v - x], states=[x, v], params=[mu], t=T_SYM)
    return system.compile(cache_dir=cache_dir)


@pytest.fixture(scope="module")
def singular_model(cache_dir):
    """y' = a y² + b √y: (a, b) = (1, 0) blows up at t = 1 from y0 = 1; (0, -1) reaches
    y = 0 at t = 2, after which √y of a negative overshoot is NaN."""
    y, a, b = sp.symbols("y a b")
    system = symode.ODESystem([a * y**2 + b * sp.sqrt(y)], states=[y], params=[a, b], t=T_SYM)
    return system.compile(cache_dir=cache_dir)


BLOWUP = [1.0, 0.0]
SQRT_DECAY = [0.0, -1.0]

# -- helpers -----------------------------------------------------------------------------


def fixed_grid(model, method, y0, params, grid, t_eval):
    """Run any method on the fixed ``grid`` through ``Model.solve`` (an adaptive method
    given ``grid=`` takes exactly those steps, without error control)."""
    grid = np.asarray(grid, dtype=np.float64)
    sol = model.solve(y0, t_eval, params, method=method, grid=grid, t_span=grid[[0, -1]])
    assert sol.status == Status.SUCCESS
    assert sol.stats["naccept"] == grid.size - 1
    return sol.y


def embedded_solution(method: str, A: np.ndarray, y0, grid) -> np.ndarray:
    """y' = A y stepped on ``grid`` with the embedded weights b_hat = b - b_err: a plain
    numpy Runge–Kutta loop, independent of the engine (which never propagates b_hat)."""
    tab = get_tableau(method)
    a = np.array(tab.a, dtype=float)
    b_hat = np.array(tab.b_hat, dtype=float)
    y = np.array(y0, dtype=float)
    for h in np.diff(grid):
        k = np.zeros((tab.stages, y.size))
        for i in range(tab.stages):
            k[i] = A @ (y + h * (a[i, :i] @ k[:i]))
        y = y + h * (b_hat @ k)
    return y


def slope(hs, errs):
    return np.polyfit(np.log(hs), np.log(errs), 1)[0]


def fail_time(message: str) -> float:
    m = re.search(r"t=([-+0-9.eE]+)", message)
    assert m, f"message does not name t: {message!r}"
    return float(m.group(1))


def n_evals(method, naccept, nreject, h0_given=False, dense_steps=0):
    """Evaluations of the engine (read from kernels/integrate.py): one for f(t0), one for
    Hairer's initial step unless h0 is given, s - 1 stages per attempted step, for a
    non-FSAL method one f(t_new, y_new) per accepted step, and the extra dense-output
    stages (DOP853: 3) of each accepted step with an output strictly inside it."""
    tab = get_tableau(method)
    s = tab.stages
    start = 1 if (h0_given or not tab.adaptive) else 2
    extra = tab.extra_stages * dense_steps
    return start + (s - 1) * (naccept + nreject) + (0 if tab.fsal else naccept) + extra


# -- measured convergence order ------------------------------------------------------------

# Step counts over [0, 4] (dt = 4 / N) in the asymptotic regime, above rounding.
ORDER_N = {
    "euler": {"lin": (256, 512, 1024, 2048), "osc": (256, 512, 1024, 2048)},
    "midpoint": {"lin": (32, 64, 128, 256), "osc": (32, 64, 128, 256)},
    "heun": {"lin": (32, 64, 128, 256), "osc": (32, 64, 128, 256)},
    "rk4": {"lin": (16, 32, 64, 128), "osc": (16, 32, 64, 128)},
    "bosh3": {"lin": (16, 32, 64, 128), "osc": (16, 32, 64, 128)},
    "dopri5": {"lin": (16, 32, 64, 128), "osc": (16, 32, 64, 128)},
    "tsit5": {"lin": (64, 96, 128, 192, 256), "osc": (64, 96, 128, 192, 256)},
    # an 8th-order method reaches rounding quickly: large steps only
    "dopri8": {"lin": (4, 6, 8, 12, 16), "osc": (12, 16, 24, 32)},
}
PROBLEMS = {
    "lin": ("linear_model", LIN_Y0, LIN_P, lin_exact),
    "osc": ("oscillator_model", OSC_Y0, OSC_P, osc_exact),
}
T_END = 4.0


def _problem(request, key):
    fixture, y0, p, exact = PROBLEMS[key]
    return request.getfixturevalue(fixture), y0, p, exact


@pytest.mark.parametrize("problem", ["lin", "osc"])
@pytest.mark.parametrize("method", FIXED)
def test_fixed_step_order_through_solve(request, method, problem):
    model, y0, p, exact = _problem(request, problem)
    Ns = np.array(ORDER_N[method][problem])
    ref = exact(T_END, y0, p)[0]
    errs = []
    for N in Ns:
        sol = model.solve(y0, [0.0, T_END], p, method=method, dt=T_END / N)
        assert sol.stats["naccept"] == N
        errs.append(np.abs(sol.y[-1] - ref).max())
    order = slope(T_END / Ns, errs)
    assert abs(order - get_tableau(method).order) < ORDER_TOL, (order, errs)


@pytest.mark.parametrize("problem", ["lin", "osc"])
@pytest.mark.parametrize("method", ADAPTIVE)
def test_adaptive_tableau_order_on_fixed_grid(request, method, problem):
    model, y0, p, exact = _problem(request, problem)
    Ns = np.array(ORDER_N[method][problem])
    ref = exact(T_END, y0, p)[0]
    errs = [
        np.abs(
            fixed_grid(model, method, y0, p, np.linspace(0, T_END, N + 1), [T_END])[-1] - ref
        ).max()
        for N in Ns
    ]
    order = slope(T_END / Ns, errs)
    assert abs(order - get_tableau(method).order) < ORDER_TOL, (order, errs)


def test_adaptive_method_on_a_grid_replays_its_adaptive_steps(linear_model):
    """An adaptive method on a grid is the same stepper: replaying an adaptive solve's
    accepted steps as a grid reproduces it (to rounding of the step times)."""
    ts = np.linspace(0.0, T_END, 9)
    for method in ADAPTIVE:
        sol = linear_model.solve(LIN_Y0, ts, LIN_P, method=method, rtol=1e-7, dense=True)
        replay = fixed_grid(linear_model, method, LIN_Y0, LIN_P, sol.sol.ts, ts)
        np.testing.assert_allclose(replay, sol.y, rtol=0, atol=1e-13)


@pytest.mark.parametrize("method", ADAPTIVE)
def test_embedded_solution_order(linear_model, method):
    """b_hat = b - b_err has order error_order (dopri8: the 5th-order E5 estimator)."""
    tab = get_tableau(method)
    # bosh3's 2nd-order embedded solution needs smaller steps to be asymptotic
    Ns = np.array([64, 96, 128, 192, 256] if method == "bosh3" else [32, 48, 64, 96, 128])
    ref = lin_exact(T_END)[0]
    errs = []
    for N in Ns:
        y = embedded_solution(method, lin_matrix(), LIN_Y0, np.linspace(0, T_END, N + 1))
        errs.append(np.abs(y - ref).max())
    order = slope(T_END / Ns, errs)
    assert abs(order - tab.error_order) < ORDER_TOL, (order, errs)


@pytest.mark.parametrize("method", ALL)
def test_dense_output_local_order(linear_model, method):
    """One step of size h from the exact state, read at θ = 0.3: the interpolant's local
    error is O(h^(dense_order + 1)) (Hermite: dense_order = min(3, order))."""
    tab = get_tableau(method)
    # an 8th-order interpolant reaches rounding quickly: larger steps for dopri8
    hs = np.array([0.8, 0.4, 0.2, 0.1] if tab.dense_order > 5 else [0.1, 0.05, 0.025, 0.0125])
    t0, theta = 0.3, 0.3
    y0 = lin_exact(t0)[0]
    errs = []
    for h in hs:
        y = fixed_grid(linear_model, method, y0, LIN_P, [t0, t0 + h], [t0 + theta * h])
        errs.append(np.abs(y[0] - lin_exact(t0 + theta * h)[0]).max())
    order = slope(hs, errs)
    assert abs(order - (tab.dense_order + 1)) < ORDER_TOL, (order, errs)


@pytest.mark.parametrize("method", ALL)
def test_dense_output_global_order_at_midpoints(oscillator_model, method):
    """Mid-step outputs carry the global error O(h^order) plus the interpolant's local
    O(h^(dense_order + 1)): their order is the smaller of the two."""
    tab = get_tableau(method)
    Ns = np.array([16, 24, 32] if tab.dense_order > 5 else [128, 256, 512])
    errs = []
    for N in Ns:
        g = np.linspace(0, T_END, N + 1)
        mids = 0.5 * (g[1:] + g[:-1])
        y = fixed_grid(oscillator_model, method, OSC_Y0, OSC_P, g, mids)
        errs.append(np.abs(y - osc_exact(mids)).max())
    order = slope(T_END / Ns, errs)
    expected = min(tab.order, tab.dense_order + 1)
    assert abs(order - expected) < ORDER_TOL, (order, errs)


# -- adaptive solves meet their tolerance -------------------------------------------------

RTOLS = [10.0**-k for k in range(3, 11)]
TOL_C = 100  # global error <= TOL_C * rtol (rtol = atol) on these smooth problems


def _tolerance_errors(request, problem, method, t_eval):
    model, y0, p, exact = _problem(request, problem)
    fine = np.linspace(0, 10, 997)
    ref, ref_fine = exact(t_eval, y0, p), exact(fine, y0, p)
    out, dense = [], []
    for rtol in RTOLS:
        sol = model.solve(y0, t_eval, p, method=method, rtol=rtol, atol=rtol, dense=True)
        assert sol.status == Status.SUCCESS
        out.append(np.abs(sol.y - ref).max())
        dense.append(np.abs(sol.sol(fine) - ref_fine).max())
    return np.array(out), np.array(dense)


@pytest.mark.parametrize("problem", ["lin", "osc"])
@pytest.mark.parametrize("method", ["bosh3", "dopri5", "tsit5"])
def test_adaptive_meets_tolerance(request, method, problem):
    errs, dense = _tolerance_errors(request, problem, method, np.linspace(0, 10, 41))
    rtols = np.array(RTOLS)
    assert np.all(errs <= TOL_C * rtols), errs / rtols
    assert np.all(np.diff(errs) < 0), errs
    # the dense output between outputs is as good (its order >= the error estimator's)
    assert np.all(dense <= TOL_C * rtols), dense / rtols
    assert np.all(np.diff(dense) < 0), dense


@pytest.mark.parametrize("problem", ["lin", "osc"])
def test_dopri8_meets_tolerance_at_step_points(request, problem):
    """t_eval = [t0, t1]: the output is a step point, no interpolation involved."""
    errs, _ = _tolerance_errors(request, problem, "dopri8", np.array([0.0, 10.0]))
    rtols = np.array(RTOLS)
    assert np.all(errs <= TOL_C * rtols), errs / rtols
    assert np.all(np.diff(errs) < 0), errs


@pytest.mark.parametrize("problem", ["lin", "osc"])
def test_dopri8_meets_tolerance_between_steps(request, problem):
    errs, dense = _tolerance_errors(request, problem, "dopri8", np.linspace(0, 10, 41))
    rtols = np.array(RTOLS)
    assert np.all(errs <= TOL_C * rtols), errs / rtols
    assert np.all(dense <= TOL_C * rtols), dense / rtols


# -- agreement with SciPy's DOP853 at rtol = atol = 1e-12 ----------------------------------

LORENZ_P = [10.0, 28.0, 8.0 / 3.0]
LORENZ_TS = np.linspace(0.0, 5.0, 101)


@pytest.fixture(scope="module")
def lorenz_ref():
    return scipy_ref(lorenz_rhs, (0.0, 5.0), [1.0, 1.0, 1.0], LORENZ_TS)


@pytest.mark.parametrize(
    "method, options, tol",
    [
        ("dopri5", {"rtol": 1e-10, "atol": 1e-10}, 1e-6),
        ("tsit5", {"rtol": 1e-10, "atol": 1e-10}, 1e-6),
        ("bosh3", {"rtol": 1e-9, "atol": 1e-9}, 1e-4),
        ("rk4", {"dt": 1e-3}, 1e-6),
    ],
)
def test_lorenz_agrees_with_scipy(lorenz_model, lorenz_ref, method, options, tol):
    # chaotic: an error grows ~e^(0.9 t), about 100x by t = 5 (|y| <= 50)
    sol = lorenz_model.solve([1.0, 1.0, 1.0], LORENZ_TS, LORENZ_P, method=method, **options)
    np.testing.assert_allclose(sol.y, lorenz_ref, rtol=0, atol=tol)


def test_lorenz_dopri8_agrees_with_scipy_at_step_points(lorenz_model, lorenz_ref):
    sol = lorenz_model.solve([1.0, 1.0, 1.0], [0.0, 5.0], LORENZ_P, method="dopri8", rtol=1e-12)
    np.testing.assert_allclose(sol.y[-1], lorenz_ref[-1], rtol=0, atol=1e-9)


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "dopri8"])
def test_van_der_pol_agrees_with_scipy(vdp_model, method):
    ts = np.linspace(0.0, 10.0, 51)
    ref = scipy_ref(vdp_rhs, (0.0, 10.0), [2.0, 0.0], ts)
    sol = vdp_model.solve([2.0, 0.0], ts, [1.0], method=method, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(sol.y, ref, atol=1e-8)


@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_forced_oscillator_agrees_with_scipy(oscillator_model, method):
    ts = np.linspace(0.0, 10.0, 51)
    ref = scipy_ref(osc_rhs, (0.0, 10.0), OSC_Y0, ts)
    np.testing.assert_allclose(ref, osc_exact(ts), atol=1e-11)  # the reference itself
    sol = oscillator_model.solve(OSC_Y0, ts, OSC_P, method=method, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(sol.y, ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "rk4"])
def test_backward_in_time_agrees_with_scipy(oscillator_model, vdp_model, method):
    opts = {"dt": 1e-3} if method == "rk4" else {"rtol": 1e-11, "atol": 1e-11}
    ts = np.linspace(6.0, 0.0, 31)  # decreasing: integrate from t = 6 down to 0
    y6 = osc_exact(6.0)[0]
    sol = oscillator_model.solve(y6, ts, OSC_P, method=method, **opts)
    ref = scipy_ref(osc_rhs, (6.0, 0.0), y6, ts)
    np.testing.assert_allclose(sol.y, ref, atol=1e-9)
    np.testing.assert_allclose(sol.y, osc_exact(ts), atol=1e-9)
    if method == "rk4":
        return  # fixed steps backwards: the oscillator; Van der Pol is compiled for dopri5
    ts = np.linspace(3.0, 0.0, 16)
    sol = vdp_model.solve([1.0, -0.5], ts, [1.0], method=method, **opts)
    np.testing.assert_allclose(sol.y, scipy_ref(vdp_rhs, (3.0, 0.0), [1.0, -0.5], ts), atol=1e-8)


# -- outputs --------------------------------------------------------------------------------


def test_t_eval_anywhere_in_the_span(linear_model):
    inside = np.array([2.5, 3.3, 7.7])
    sol = linear_model.solve(LIN_Y0, inside, LIN_P, t_span=(0.0, 10.0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(sol.y, lin_exact(inside), atol=1e-8)
    # outputs never steer the steps: the whole span is integrated, with the same steps
    full = linear_model.solve(LIN_Y0, [0.0, 10.0], LIN_P, rtol=1e-10, atol=1e-10)
    assert sol.stats == full.stats
    # and a value at a time does not depend on which other outputs were asked for
    many = np.unique(np.concatenate([inside, np.linspace(0.0, 10.0, 37)]))
    sol_many = linear_model.solve(LIN_Y0, many, LIN_P, rtol=1e-10, atol=1e-10)
    assert np.array_equal(sol_many.y[np.searchsorted(many, inside)], sol.y)
    assert np.array_equal(sol_many.y[-1], full.y[-1])
    # a single output time needs t_span
    one = linear_model.solve(LIN_Y0, [4.0], LIN_P, t_span=(0.0, 10.0), rtol=1e-10, atol=1e-10)
    assert one.y.shape == (1, 3)
    with pytest.raises(ShapeError):
        linear_model.solve(LIN_Y0, [4.0], LIN_P)
    with pytest.raises(ShapeError):
        linear_model.solve(LIN_Y0, [4.0, 12.0], LIN_P, t_span=(0.0, 10.0))


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "rk4"])
def test_backward_integration_retraces_forward(linear_model, method):
    opts = {"dt": 0.005} if method == "rk4" else {"rtol": 1e-10, "atol": 1e-10}
    ts = np.linspace(0.0, 5.0, 21)
    y5 = lin_exact(5.0)[0]
    back = linear_model.solve(y5, ts[::-1], LIN_P, method=method, **opts)
    np.testing.assert_allclose(back.y, lin_exact(ts[::-1]), atol=1e-7)
    assert back.stats["naccept"] > 0
    with pytest.raises(ShapeError):  # not monotone in the direction of integration
        linear_model.solve(y5, [5.0, 4.0, 4.5, 0.0], LIN_P)


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("backward", [False, True])
def test_dense_solution_callable(oscillator_model, method, backward):
    ts = np.linspace(0.0, 6.0, 13)
    opts = {"dt": 0.01} if method in FIXED else {"rtol": 1e-9, "atol": 1e-9}
    y0 = OSC_Y0
    if backward:
        ts, y0 = ts[::-1], osc_exact(6.0)[0]
    sol = oscillator_model.solve(y0, ts, OSC_P, method=method, dense=True, **opts)
    f = sol.sol
    assert callable(f)
    # the same interpolant as the t_eval outputs
    np.testing.assert_allclose(f(ts), sol.y, rtol=0, atol=1e-13)
    # and a reference in between, to the accuracy of the method
    tq = np.linspace(0.0, 6.0, 601)
    tab = get_tableau(method)
    tol = {"euler": 0.1, "midpoint": 1e-3, "heun": 1e-3}.get(method, 1e-6)
    assert tab.dense_order >= min(tab.order, 4) or not tab.adaptive
    np.testing.assert_allclose(f(tq), osc_exact(tq), rtol=0, atol=tol)
    # shapes follow the query
    assert f(1.5).shape == (2,)
    assert f(np.ones((4, 5))).shape == (4, 5, 2)
    # the step points are recorded in the direction of integration, span ends included
    steps = f.ts
    assert steps[0] == ts[0] and steps[-1] == ts[-1]
    assert np.all(np.diff(steps) * (ts[-1] - ts[0]) > 0)
    assert steps.size == sol.stats["naccept"] + 1
    with pytest.raises(ValueError):
        f(6.5)
    with pytest.raises(ValueError):
        f(np.nan)


def test_dense_solution_of_a_failed_solve_does_not_extrapolate(linear_model):
    ts = np.linspace(0.0, 10.0, 11)
    sol = linear_model.solve(LIN_Y0, ts, LIN_P, rtol=1e-10, max_steps=10, dense=True, throw=False)
    assert sol.status == Status.MAX_STEPS
    t_fail = fail_time(sol.message)
    assert sol.sol.ts[-1] == pytest.approx(t_fail)
    np.testing.assert_allclose(sol.sol(0.5 * t_fail), lin_exact(0.5 * t_fail)[0], atol=1e-8)
    try:
        beyond = sol.sol(10.0)
    except ValueError:
        return  # refusing is fine
    assert np.all(np.isnan(beyond))  # so is NaN; a finite extrapolation is not


def test_fixed_steps_on_dt_or_user_grid(oscillator_model):
    ts = np.linspace(0.0, 4.0, 9)
    by_dt = oscillator_model.solve(OSC_Y0, ts, OSC_P, method="rk4", dt=0.05)
    grid = np.linspace(0.0, 4.0, 81)
    by_grid = oscillator_model.solve(OSC_Y0, ts, OSC_P, method="rk4", grid=grid)
    np.testing.assert_allclose(by_grid.y, by_dt.y, rtol=0, atol=1e-14)
    assert by_grid.stats == by_dt.stats == {"nfev": 4 * 80 + 1, "naccept": 80, "nreject": 0}
    # dt that does not divide the span: ceil(span / dt) steps, the last one shorter
    sol = oscillator_model.solve(OSC_Y0, ts, OSC_P, method="rk4", dt=0.3)
    assert sol.stats["naccept"] == 14
    # a non-uniform grid (fine where it starts) converges at the method's order too
    errs = []
    for N in (32, 64, 128):
        g = 4.0 * np.linspace(0.0, 1.0, N + 1) ** 1.5
        sol = oscillator_model.solve(OSC_Y0, ts, OSC_P, method="rk4", grid=g)
        assert sol.stats["naccept"] == N
        errs.append(np.abs(sol.y - osc_exact(ts)).max())
    assert abs(slope(1.0 / np.array([32, 64, 128]), errs) - 4) < ORDER_TOL, errs
    # a backward grid
    g = np.linspace(4.0, 0.0, 101)
    back = oscillator_model.solve(osc_exact(4.0)[0], ts[::-1], OSC_P, method="rk4", grid=g)
    np.testing.assert_allclose(back.y, osc_exact(ts[::-1]), atol=1e-5)
    # misuse
    with pytest.raises(ValueError):
        oscillator_model.solve(OSC_Y0, ts, OSC_P, method="rk4")
    # an adaptive method given dt or grid takes exactly those steps (no error control)
    fixed = oscillator_model.solve(OSC_Y0, ts, OSC_P, method="dopri5", dt=0.05)
    assert fixed.stats == {"nfev": 6 * 80 + 1, "naccept": 80, "nreject": 0}
    on_grid = oscillator_model.solve(OSC_Y0, ts, OSC_P, method="dopri5", grid=grid)
    np.testing.assert_allclose(on_grid.y, fixed.y, rtol=0, atol=1e-14)
    np.testing.assert_allclose(fixed.y, osc_exact(ts), atol=1e-8)
    with pytest.raises(ShapeError):
        oscillator_model.solve(OSC_Y0, ts, OSC_P, method="rk4", grid=grid[:-1])
    with pytest.raises(ShapeError):
        oscillator_model.solve(OSC_Y0, ts, OSC_P, method="rk4", grid=grid[[0, 2, 1, -1]])


@pytest.mark.parametrize("method", ALL)
def test_stats_count_every_evaluation(lorenz_model, method):
    opts = {"dt": 0.01} if method in FIXED else {"rtol": 1e-6, "atol": 1e-6}
    ends = LORENZ_TS[[0, -1]]  # no output inside a step: no extra dense-output stages
    sol = lorenz_model.solve([1.0, 1.0, 1.0], ends, LORENZ_P, method=method, **opts)
    st = sol.stats
    assert all(isinstance(v, int) for v in st.values())
    if method in FIXED:
        assert st["naccept"] == 500 and st["nreject"] == 0
    assert st["nfev"] == n_evals(method, st["naccept"], st["nreject"])
    if method in ADAPTIVE:  # with h0 given, Hairer's initial-step evaluation is skipped
        sol = lorenz_model.solve([1.0, 1.0, 1.0], ends, LORENZ_P, method=method, h0=1e-3, **opts)
        st = sol.stats
        assert st["nfev"] == n_evals(method, st["naccept"], st["nreject"], h0_given=True)
    # outputs never change the steps; only methods with extra dense stages pay for them
    dense = lorenz_model.solve([1.0, 1.0, 1.0], LORENZ_TS, LORENZ_P, method=method, **opts)
    sd = dense.stats
    first = lorenz_model.solve([1.0, 1.0, 1.0], ends, LORENZ_P, method=method, **opts).stats
    assert (sd["naccept"], sd["nreject"]) == (first["naccept"], first["nreject"])
    extra = sd["nfev"] - first["nfev"]
    m = get_tableau(method).extra_stages
    if m == 0:
        assert extra == 0
    else:
        assert extra % m == 0 and 0 < extra // m <= sd["naccept"]


def test_stats_with_rejections(linear_model):
    """Rejected steps cost s - 1 evaluations each and are counted in nreject, for every
    adaptive tableau (FSAL or not). The linear model: its solves are compiled for every
    tableau already (the order tests)."""
    for method in ADAPTIVE:
        rejected = 0
        for rtol in (1e-3, 1e-7):
            sol = linear_model.solve(
                LIN_Y0, [0.0, 10.0], LIN_P, method=method, rtol=rtol, atol=rtol, h0=5.0
            )
            st = sol.stats
            assert st["nfev"] == n_evals(method, st["naccept"], st["nreject"], h0_given=True)
            rejected += st["nreject"]
        assert rejected > 0, method  # a first step of 5 is too long at both tolerances


def test_input_validation(linear_model):
    ts = np.linspace(0.0, 1.0, 5)
    cases = [
        (ShapeError, dict(y0=["a", "b", "c"])),
        (symode.NonFiniteInputError, dict(y0=[np.nan, 0.0, 0.0])),
        (symode.NonFiniteInputError, dict(params=[0.0, np.inf, 0.0, 0.0])),
        (symode.NonFiniteInputError, dict(t_eval=[0.0, np.nan])),
        (ShapeError, dict(y0=[1.0, 2.0])),
        (ShapeError, dict(t_eval=ts[None, None])),  # 2-D is a padded batch; 3-D is not
        (ShapeError, dict(t_eval=[1.0], t_span=(1.0, 1.0))),
        (ValueError, dict(rtol=-1e-6)),
        (ValueError, dict(rtol=np.inf)),
        (ValueError, dict(atol=np.nan)),
        (ValueError, dict(method="rk45")),
    ]
    for exc, kw in cases:
        args = {"y0": LIN_Y0, "t_eval": ts, "params": LIN_P, **kw}
        with pytest.raises(exc):
            linear_model.solve(args.pop("y0"), args.pop("t_eval"), args.pop("params"), **args)


# -- step control and failures ----------------------------------------------------------


def test_per_component_atol(lv_model):
    """Rescaling x and y by powers of two (and the parameters to match) is exact in
    floating point; with atol rescaled per component the solver must take the very same
    steps and return the rescaled solution bit for bit."""
    sx, sy = 2.0**10, 2.0**-12
    p = np.array([1.5, 1.0, 3.0, 1.0])
    ps = np.array([p[0], p[1] / sy, p[2] / sx, p[3]])
    ts = np.linspace(0.0, 10.0, 21)
    ref = lv_model.solve([1.0, 1.0], ts, p, rtol=1e-7, atol=1e-7)
    scaled = lv_model.solve([sx, sy], ts, ps, rtol=1e-7, atol=[1e-7 * sx, 1e-7 * sy])
    assert scaled.stats == ref.stats
    assert np.array_equal(scaled.y, ref.y * [sx, sy])
    # the same problem with one scalar atol is controlled differently
    plain = lv_model.solve([sx, sy], ts, ps, rtol=1e-7, atol=1e-7)
    assert plain.stats != ref.stats
    # a vector of equal entries is the scalar
    vec = lv_model.solve([1.0, 1.0], ts, p, rtol=1e-7, atol=[1e-7, 1e-7])
    assert np.array_equal(vec.y, ref.y) and vec.stats == ref.stats
    with pytest.raises(ShapeError):
        lv_model.solve([1.0, 1.0], ts, p, atol=[1e-7, 1e-7, 1e-7])
    with pytest.raises(ValueError):
        lv_model.solve([1.0, 1.0], ts, p, atol=[1e-7, -1.0])
    with pytest.raises(ValueError):
        lv_model.solve([1.0, 1.0], ts, p, rtol=0.0, atol=[1e-7, 0.0])


def _check_partial(sol, full, ts, direction=1.0):
    """Outputs up to the failure time are the full solve's, bit for bit; after it, NaN."""
    t_fail = fail_time(sol.message)
    reached = (ts - t_fail) * direction <= 0
    assert 0 < reached.sum() < ts.size
    assert np.array_equal(sol.y[reached], full.y[reached])
    assert np.all(np.isnan(sol.y[~reached]))
    return t_fail


def test_max_steps_reported_without_throw(linear_model):
    ts = np.linspace(0.0, 10.0, 41)
    full = linear_model.solve(LIN_Y0, ts, LIN_P, rtol=1e-10, atol=1e-10)
    sol = linear_model.solve(LIN_Y0, ts, LIN_P, rtol=1e-10, atol=1e-10, max_steps=40, throw=False)
    assert sol.status == Status.MAX_STEPS and isinstance(sol.status, Status)
    assert not sol.success and sol.failed == (0,)
    assert "max_steps" in sol.message
    assert sol.stats["naccept"] == 40
    t_fail = _check_partial(sol, full, ts)
    assert 0 < t_fail < 10
    # backward in time too
    back = linear_model.solve(full.y[-1], ts[::-1], LIN_P, rtol=1e-10, max_steps=40, throw=False)
    assert back.status == Status.MAX_STEPS
    assert 0 < fail_time(back.message) < 10
    assert np.all(np.isnan(back.y[-1])) and np.array_equal(back.y[0], full.y[-1])


def test_max_steps_raises_with_partial_solution(linear_model):
    ts = np.linspace(0.0, 10.0, 41)
    full = linear_model.solve(LIN_Y0, ts, LIN_P, rtol=1e-10, atol=1e-10)
    with pytest.raises(IntegrationError, match=r"max_steps reached at t=") as info:
        linear_model.solve(LIN_Y0, ts, LIN_P, rtol=1e-10, atol=1e-10, max_steps=40)
    err = info.value
    assert isinstance(err, RuntimeError) and isinstance(err, symode.SymodeError)
    assert err.failed == (0,)
    assert err.solution.status == Status.MAX_STEPS
    _check_partial(err.solution, full, ts)
    with pytest.raises(ValueError):
        linear_model.solve(LIN_Y0, ts, LIN_P, max_steps=0)


def test_step_underflow_below_dt_min(singular_model):
    ts = np.linspace(0.0, 2.0, 21)
    sol = singular_model.solve([1.0], ts, BLOWUP, dt_min=1e-3, throw=False)
    assert sol.status == Status.STEP_UNDERFLOW
    assert "underflow" in sol.message.lower()
    t_fail = fail_time(sol.message)
    assert 0.9 < t_fail < 1.0
    assert np.all(np.isnan(sol.y[ts > t_fail]))
    np.testing.assert_allclose(sol.y[ts < 0.9, 0], 1 / (1 - ts[ts < 0.9]), rtol=1e-4)
    with pytest.raises(IntegrationError, match="underflow"):
        singular_model.solve([1.0], ts, BLOWUP, dt_min=1e-3)


@pytest.mark.parametrize("method", ADAPTIVE)
@pytest.mark.parametrize("rtol", [1e-3, 1e-6, 1e-10])
def test_finite_time_blow_up_is_located(singular_model, method, rtol):
    """y' = y², y(0) = 1: y = 1 / (1 - t) is singular at t = 1."""
    ts = np.linspace(0.0, 2.0, 41)
    sol = singular_model.solve([1.0], ts, BLOWUP, method=method, rtol=rtol, throw=False)
    assert sol.status in (Status.STEP_UNDERFLOW, Status.NONFINITE)
    t_fail = fail_time(sol.message)
    # a relative error δ in y near the pole moves it by about δ (1 - t): 1e-3 from
    # rtol = 1e-6 on, and within a few rtol at rtol = 1e-3
    assert abs(t_fail - 1.0) < max(1e-3, 10 * rtol)
    assert np.all(np.isnan(sol.y[ts > 1.0]))
    before = ts < 0.9
    tol = 1e3 * rtol
    np.testing.assert_allclose(sol.y[before, 0], 1 / (1 - ts[before]), rtol=tol)


def test_blow_up_with_default_settings(singular_model):
    """The issue's example: y' = y², y0 = 1, to t = 2 with the defaults."""
    sol = singular_model.solve([1.0], [0.0, 2.0], BLOWUP, throw=False)
    assert sol.status != Status.SUCCESS
    assert abs(fail_time(sol.message) - 1.0) < 1e-3
    assert np.isnan(sol.y[-1, 0])
    with pytest.raises(IntegrationError, match=r"t=1\.00|t=0\.99"):
        singular_model.solve([1.0], [0.0, 2.0], BLOWUP)


def test_blow_up_with_fixed_steps_is_nonfinite(singular_model):
    ts = np.linspace(0.0, 2.0, 9)
    sol = singular_model.solve([1.0], ts, BLOWUP, method="rk4", dt=0.01, throw=False)
    assert sol.status == Status.NONFINITE
    t_fail = fail_time(sol.message)
    assert 1.0 <= t_fail < 1.1
    assert np.all(np.isnan(sol.y[ts > t_fail]))
    assert np.all(np.isfinite(sol.y[ts < 1.0]))


def test_division_by_zero_in_a_kernel_is_inf_not_an_exception(singular_model):
    """The kernels compile with error_model="numpy": x / 0 is inf (which the engine then
    reports as a non-finite state), never a ZeroDivisionError from compiled code."""
    out = np.zeros((1, 1))
    # ∂(b √y)/∂y = b / (2 √y) at y = 0
    singular_model.kernels.jac(0.0, np.array([0.0]), np.array([0.0, -1.0]), out)
    assert out[0, 0] == -np.inf


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3", "dopri8"])
def test_domain_error_is_never_a_silent_nan(singular_model, method):
    """y' = -√y, y(0) = 1: y = (1 - t/2)² reaches 0 at t = 2; any overshoot below 0 makes
    √y NaN. The solver must stop there with a non-success status."""
    ts = np.linspace(0.0, 4.0, 17)
    sol = singular_model.solve([1.0], ts, SQRT_DECAY, method=method, throw=False)
    assert sol.status in (Status.NONFINITE, Status.STEP_UNDERFLOW)
    t_fail = fail_time(sol.message)
    assert 1.9 < t_fail < 2.1
    assert np.all(np.isnan(sol.y[ts > t_fail]))
    early = ts < 1.9
    np.testing.assert_allclose(sol.y[early, 0], (1 - ts[early] / 2) ** 2, atol=1e-5)
    with pytest.raises(IntegrationError):
        singular_model.solve([1.0], ts, SQRT_DECAY, method=method)


@pytest.mark.parametrize("method", FIXED)
def test_domain_error_with_fixed_steps(singular_model, method):
    ts = np.linspace(0.0, 4.0, 9)
    sol = singular_model.solve([1.0], ts, SQRT_DECAY, method=method, dt=0.5, throw=False)
    assert sol.status == Status.NONFINITE
    assert "Non-finite" in sol.message
    t_fail = fail_time(sol.message)
    assert np.all(np.isnan(sol.y[ts > t_fail]))
    assert t_fail < 4.0


def test_no_silent_nan_anywhere(singular_model, linear_model):
    """Across success and every failure mode: NaN in y implies a non-success status."""
    ts = np.linspace(0.0, 4.0, 17)
    cases = [
        (singular_model, [1.0], ts, BLOWUP, {}),
        (singular_model, [1.0], ts, SQRT_DECAY, {}),
        # fixed steps with the methods this file compiles for the model anyway: rk4
        # overshoots y = 0 (√ of a negative stage), dopri5 on a grid runs into the pole
        (singular_model, [1.0], ts, SQRT_DECAY, {"method": "rk4", "dt": 1.5}),
        (singular_model, [1.0], ts, BLOWUP, {"method": "dopri5", "dt": 0.1}),
        (singular_model, [1.0], ts, [-1.0, 0.0], {}),
        (linear_model, LIN_Y0, ts, LIN_P, {"max_steps": 3}),
        (linear_model, LIN_Y0, ts, LIN_P, {}),
    ]
    for model, y0, t_eval, p, opts in cases:
        sol = model.solve(y0, t_eval, p, throw=False, **opts)
        if np.isnan(sol.y).any():
            assert sol.status != Status.SUCCESS and not sol.success, opts
        else:
            assert sol.status == Status.SUCCESS, opts


# -- precision ------------------------------------------------------------------------------


def test_float64_is_the_default(linear_model):
    sol = linear_model.solve(LIN_Y0, [0.0, 1.0], LIN_P)
    assert sol.y.dtype == np.float64
    with pytest.raises(TypeError):
        linear_model.solve(LIN_Y0, [0.0, 1.0], LIN_P, dtype=np.float16)


def test_float32(linear_model):
    """float32 states (tableaus stay float64): accuracy consistent with rtol ~ 1e-5."""
    ts = np.linspace(0.0, 5.0, 11)
    for method, opts in [("dopri5", {"rtol": 1e-5, "atol": 1e-5}), ("rk4", {"dt": 0.01})]:
        sol = linear_model.solve(LIN_Y0, ts, LIN_P, method=method, dtype=np.float32, **opts)
        assert sol.y.dtype == np.float32
        assert sol.status == Status.SUCCESS
        np.testing.assert_allclose(sol.y, lin_exact(ts), rtol=0, atol=1e-4)
        ref = linear_model.solve(LIN_Y0, ts, LIN_P, method=method, **opts)
        np.testing.assert_allclose(sol.y, ref.y, rtol=0, atol=1e-4)


def test_large_state_uses_heap_buffers_and_is_exact(cache_dir):
    """A 72-state linear chain: the step loop's stage buffer (8 × 72 float64 = 4.5 KiB)
    exceeds kernels/local.py's 4 KiB stack limit, so this exercises the heap path of the
    local buffers (small systems take the stack path everywhere else). Oracle: expm, at
    rtol = 1e-10 (the global error is a small multiple of rtol for this decay)."""
    from symode.kernels.local import MAX_LOCAL_BYTES

    n = 72
    assert 8 * n * 8 > MAX_LOCAL_BYTES  # dopri5: 7 stages + f at the step's end
    us = sp.symbols(f"u0:{n}")
    k = sp.Symbol("k")
    # u_i' = -(1 + i/n) u_i + k u_{i-1}: a lower-triangular A with distinct rates
    rhs = [-(1 + sp.Rational(i, n)) * us[i] + (k * us[i - 1] if i else 0) for i in range(n)]
    model = symode.ODESystem(rhs, states=list(us), params=[k], t=sp.Symbol("t")).compile(
        cache_dir=cache_dir
    )
    A = np.diag([-(1 + i / n) for i in range(n)]) + 0.5 * np.eye(n, k=-1)
    y0 = np.linspace(1.0, 2.0, n)
    ts = np.linspace(0.0, 2.0, 5)
    sol = model.solve(y0, ts, [0.5], rtol=1e-10, atol=1e-12)
    exact = np.array([scipy.linalg.expm(A * t) @ y0 for t in ts])
    np.testing.assert_allclose(sol.y, exact, rtol=1e-8, atol=1e-10)
