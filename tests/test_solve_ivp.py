"""``symode.solve_ivp``: scipy's calling convention and result over symode's engine."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.integrate
from conftest import lorenz

import symode
from symode import Status

P = (10.0, 28.0, 8.0 / 3.0)
Y0 = [1.0, 1.0, 1.0]
TS = np.linspace(0.0, 5.0, 101)
SCIPY_FIELDS = set("t y sol t_events y_events nfev njev nlu status message success".split())


def lorenz_rhs(t, u):
    x, y, z = u
    return [10.0 * (y - x), x * (28.0 - z) - y, x * y - 8.0 / 3.0 * z]


@pytest.fixture(scope="module")
def ref():
    """SciPy's DOP853 at rtol = atol = 1e-12, with its (7th-order) dense output."""
    r = scipy.integrate.solve_ivp(
        lorenz_rhs, (0.0, 5.0), Y0, method="DOP853", rtol=1e-12, atol=1e-12, dense_output=True
    )
    assert r.success
    return r


def test_result_has_scipy_fields_and_shapes(lorenz_model):
    res = symode.solve_ivp(lorenz_model, (0.0, 5.0), Y0, args=P, t_eval=TS)
    ours = set(res.keys())
    theirs = set(scipy.integrate.solve_ivp(lorenz_rhs, (0.0, 5.0), Y0, t_eval=TS).keys())
    assert SCIPY_FIELDS <= ours and theirs <= ours
    assert res.t.shape == (101,) and np.array_equal(res.t, TS)
    assert res.y.shape == (3, 101)
    assert res.y.flags.c_contiguous
    assert res.success is True and res.status == 0
    assert res.message == "The solver successfully reached the end of the integration interval."
    assert isinstance(res.nfev, int) and res.nfev > 0
    assert res.njev == 0 and res.nlu == 0
    assert res.sol is None and res.t_events is None and res.y_events is None
    # attribute access too, as OptimizeResult gives
    assert res["y"] is res.y


@pytest.mark.parametrize(
    "scipy_name, ours", [("RK45", "dopri5"), ("RK23", "bosh3"), ("DOP853", "dopri8")]
)
def test_method_names_map(lorenz_model, scipy_name, ours):
    kw = {"rtol": 1e-7, "atol": 1e-9}
    res = symode.solve_ivp(lorenz_model, (0.0, 5.0), Y0, method=scipy_name, args=P, t_eval=TS, **kw)
    sol = lorenz_model.solve(Y0, TS, P, method=ours, **kw)
    assert np.array_equal(res.y, sol.y.T)
    assert res.nfev == sol.stats["nfev"]
    # symode's own names pass through unchanged
    res2 = symode.solve_ivp(lorenz_model, (0.0, 5.0), Y0, method=ours, args=P, t_eval=TS, **kw)
    assert np.array_equal(res2.y, res.y)


def test_default_method_and_tolerances_are_scipys(lorenz_model):
    """Default RK45 with rtol=1e-3, atol=1e-6, as scipy."""
    res = symode.solve_ivp(lorenz_model, (0.0, 5.0), Y0, args=P, t_eval=TS)
    sol = lorenz_model.solve(Y0, TS, P, method="dopri5", rtol=1e-3, atol=1e-6)
    assert np.array_equal(res.y, sol.y.T)


@pytest.mark.parametrize("method", ["RK45", "RK23", "DOP853"])
def test_t_eval_none_returns_step_points(lorenz_model, ref, method):
    kw = {"rtol": 1e-6, "atol": 1e-8}
    res = symode.solve_ivp(lorenz_model, (0.0, 5.0), Y0, method=method, args=P, **kw)
    assert res.success
    assert res.t[0] == 0.0 and res.t[-1] == 5.0
    assert np.all(np.diff(res.t) > 0)
    assert res.y.shape == (3, res.t.size)
    # the points are the accepted steps: one more than naccept of the same solve
    name = {"RK45": "dopri5", "RK23": "bosh3", "DOP853": "dopri8"}[method]
    dense = lorenz_model.solve(Y0, [0.0, 5.0], P, method=name, dense=True, **kw)
    assert res.t.size == dense.stats["naccept"] + 1
    assert np.array_equal(res.t, dense.sol.ts)
    # and y there is the solution at the step points (as a solve with t_eval = res.t)
    at_steps = lorenz_model.solve(Y0, res.t, P, method=name, **kw)
    np.testing.assert_allclose(res.y, at_steps.y.T, rtol=1e-13, atol=1e-12)
    # scipy takes a comparable number of steps with the same pair and tolerances
    theirs = scipy.integrate.solve_ivp(lorenz_rhs, (0.0, 5.0), Y0, method=method, **kw)
    if method != "DOP853":  # ours controls only the E5 estimate, much more conservative
        assert 0.7 < res.t.size / theirs.t.size < 1.5


def test_agrees_with_scipy_at_tight_tolerance(lorenz_model, ref):
    res = symode.solve_ivp(
        lorenz_model, (0.0, 5.0), Y0, method="RK45", args=P, t_eval=TS, rtol=1e-11, atol=1e-11
    )
    # Lorenz amplifies errors ~100x by t = 5; |y| <= 50
    np.testing.assert_allclose(res.y, ref.sol(TS), rtol=0, atol=1e-7)


def test_dop853_agrees_with_scipy_at_step_points(lorenz_model, ref):
    res = symode.solve_ivp(
        lorenz_model, (0.0, 5.0), Y0, method="DOP853", args=P, rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(res.y, ref.sol(res.t), rtol=0, atol=1e-8)


def test_dop853_agrees_with_scipy_at_t_eval(lorenz_model, ref):
    res = symode.solve_ivp(
        lorenz_model, (0.0, 5.0), Y0, method="DOP853", args=P, t_eval=TS, rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(res.y, ref.sol(TS), rtol=0, atol=1e-8)


def test_dense_output(lorenz_model, ref):
    res = symode.solve_ivp(
        lorenz_model, (0.0, 5.0), Y0, args=P, t_eval=TS, dense_output=True, rtol=1e-11, atol=1e-11
    )
    assert callable(res.sol)
    np.testing.assert_allclose(res.sol(TS), res.y.T, rtol=0, atol=1e-13)
    tq = np.linspace(0.0, 5.0, 333)
    np.testing.assert_allclose(res.sol(tq), ref.sol(tq).T, rtol=0, atol=1e-7)


def test_backward_t_span(oscillator_model):
    p = (2.0, 0.1, 1.5, 1.3)

    def f(t, u):
        return [u[1], -2 * p[1] * p[0] * u[1] - p[0] ** 2 * u[0] + p[2] * np.cos(p[3] * t)]

    t_eval = np.linspace(6.0, 0.0, 25)
    kw = {"rtol": 1e-11, "atol": 1e-11}
    res = symode.solve_ivp(oscillator_model, (6.0, 0.0), [0.3, -0.2], args=p, t_eval=t_eval, **kw)
    theirs = scipy.integrate.solve_ivp(
        f, (6.0, 0.0), [0.3, -0.2], t_eval=t_eval, method="DOP853", **kw
    )
    assert res.success and np.array_equal(res.t, t_eval)
    np.testing.assert_allclose(res.y, theirs.y, rtol=0, atol=1e-8)
    steps = symode.solve_ivp(oscillator_model, (6.0, 0.0), [0.3, -0.2], args=p, **kw)
    assert steps.t[0] == 6.0 and steps.t[-1] == 0.0 and np.all(np.diff(steps.t) < 0)


def test_t_eval_inside_t_span(lorenz_model, ref):
    t_eval = np.array([0.5, 1.7, 3.2])
    res = symode.solve_ivp(
        lorenz_model, (0.0, 5.0), Y0, args=P, t_eval=t_eval, rtol=1e-11, atol=1e-11
    )
    full = symode.solve_ivp(lorenz_model, (0.0, 5.0), Y0, args=P, t_eval=TS, rtol=1e-11, atol=1e-11)
    assert res.nfev == full.nfev  # the whole span is integrated
    np.testing.assert_allclose(res.y, ref.sol(t_eval), atol=1e-8)


def test_failure_is_reported_like_scipy(lorenz_model):
    res = symode.solve_ivp(
        lorenz_model, (0.0, 5.0), Y0, args=P, t_eval=TS, rtol=1e-10, max_steps=50
    )
    assert res.status == -1 and res.success is False
    t_fail = float(re.search(r"t=([-+0-9.eE]+)", res.message).group(1))
    assert 0.0 < t_fail < 5.0
    assert np.all(np.isnan(res.y[:, TS > t_fail]))
    assert np.all(np.isfinite(res.y[:, TS <= t_fail]))
    # without t_eval: the steps taken before the failure, all finite
    res = symode.solve_ivp(lorenz_model, (0.0, 5.0), Y0, args=P, rtol=1e-10, max_steps=50)
    assert res.status == -1 and res.t.size == 51 and np.all(np.isfinite(res.y))
    assert res.t[-1] == pytest.approx(t_fail)
    assert Status.MAX_STEPS.describe(0, 0)[:20] in res.message


def test_fixed_step_method_through_options(lorenz_model):
    res = symode.solve_ivp(lorenz_model, (0.0, 5.0), Y0, method="rk4", args=P, t_eval=TS, dt=1e-3)
    sol = lorenz_model.solve(Y0, TS, P, method="rk4", dt=1e-3)
    assert np.array_equal(res.y, sol.y.T)
    assert res.nfev == 4 * 5000 + 1


def test_first_step_and_options_pass_through(lorenz_model):
    kw = {"rtol": 1e-8, "atol": 1e-8}
    res = symode.solve_ivp(lorenz_model, (0.0, 5.0), Y0, args=P, t_eval=TS, first_step=1e-4, **kw)
    sol = lorenz_model.solve(Y0, TS, P, h0=1e-4, **kw)
    assert np.array_equal(res.y, sol.y.T)
    atol = [1e-8, 1e-6, 1e-8]
    res = symode.solve_ivp(lorenz_model, (0.0, 5.0), Y0, args=P, t_eval=TS, rtol=1e-8, atol=atol)
    sol = lorenz_model.solve(Y0, TS, P, rtol=1e-8, atol=atol)
    assert np.array_equal(res.y, sol.y.T)


def test_accepts_an_odesystem(lorenz_model, monkeypatch, tmp_path):
    """An ODESystem is compiled on first use (here into a temporary cache directory; the
    kernels already loaded in this process for the same system are reused)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    res = symode.solve_ivp(lorenz(), (0.0, 5.0), Y0, args=P, t_eval=TS)
    direct = symode.solve_ivp(lorenz_model, (0.0, 5.0), Y0, args=P, t_eval=TS)
    assert np.array_equal(res.y, direct.y)
    assert (tmp_path / "symode").is_dir()
