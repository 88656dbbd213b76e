"""Symbolic losses: ``symode.Loss`` (running cost ∫ g(t, y, θ) dt plus an observation cost
φ(y(tᵢ), dᵢ, θ) on data placeholders), compiled with the system, and
``Model.value_and_grad``.

One compiled system serves the whole file: Lotka–Volterra with a fifth parameter w that
only the loss uses (w = 0 switches the running cost and the θ-dependent part of φ off,
which is how the fitting test gets a plain least-squares problem from the same model).

Tolerances: the value is compared with an independent scipy computation (DOP853 at
rtol 1e-13 + adaptive quadrature of g along its dense output) at 1e-8 relative; the
gradient of every mode with central finite differences (Richardson) of the value at
1e-7 (solver tol 1e-10, so FD noise ~ tol / h ~ 1e-7·|L| at most, measured far lower);
the discrete adjoint on a fixed grid (dopri5; rk4 and euler with -m full) with finite
differences of that same solver at 1e-9 (a smooth map: rounding only).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import sympy as sp
from conftest import t

import symode
from symode import ShapeError
from symode.testing import check_gradient

MODES = ("checkpoint", "backsolve", "discrete", "forward")
ADAPTIVE_MODES = [
    *MODES[:3],
    "forward",
]
TIGHT = {"method": "dopri5", "rtol": 1e-10, "atol": 1e-10}

x, y = sp.symbols("x y")
a, b, c, d, w = sp.symbols("a b c d w")
dx, dy = sp.symbols("dx dy")
RUNNING = w * ((x - 1) ** 2 + sp.sin(t) * y**2 / 2)
OBSERVATION = ((x - dx) ** 2 + (y - dy) ** 2) / 2 + w * x * dy

Y0 = np.array([1.0, 0.8])
TH = np.array([1.5, 1.0, 3.0, 1.0, 0.7])  # a, b, c, d, w
TS = np.linspace(0.0, 3.0, 7)
DATA = np.random.default_rng(5).uniform(0.2, 2.0, (TS.size, 2))


def lv_with_weight():
    return symode.ODESystem(
        [a * x - b * x * y, c * x * y - d * y], states=[x, y], params=[a, b, c, d, w], t=t
    )


def the_loss():
    return symode.Loss(running=RUNNING, observation=OBSERVATION, data=[dx, dy])


@pytest.fixture(scope="module")
def loss_model(cache_dir):
    model = lv_with_weight().compile(loss=the_loss(), cache_dir=cache_dir)
    model.value_and_grad(Y0, TS, TH, DATA)  # the numba compile, once
    return model


def rel(a_, b_) -> float:
    a_, b_ = np.ravel(a_), np.ravel(b_)
    return float(np.max(np.abs(a_ - b_)) / np.max(np.abs(b_)))


def fd_gradient(fun, x0, h=1e-3) -> np.ndarray:
    """Central differences with Richardson extrapolation (steps h, h/2; relative to
    max(1, |x_i|))."""
    x0 = np.asarray(x0, dtype=np.float64)
    out = np.empty(x0.size)
    for i in range(x0.size):
        hi = h * max(1.0, abs(x0[i]))

        def dq(s, i=i):
            xp, xm = x0.copy(), x0.copy()
            xp[i] += s
            xm[i] -= s
            return (fun(xp) - fun(xm)) / (2 * s)

        out[i] = (4 * dq(hi / 2) - dq(hi)) / 3
    return out


def value_of(model, **solver):
    """[y0, θ] -> the compiled loss value (the forward pass; the mode does not matter)."""

    def f(z):
        v, _ = model.value_and_grad(z[:2], TS, z[2:], DATA, **solver)
        return float(v)

    return f


# -- the derivation --------------------------------------------------------------------------------
def test_loss_derivatives_equal_hand_derivation():
    system = lv_with_weight()
    got = system.loss_derivatives(the_loss())
    expected = {
        "g_y": [2 * w * (x - 1), w * sp.sin(t) * y],
        "g_p": [0, 0, 0, 0, (x - 1) ** 2 + sp.sin(t) * y**2 / 2],
        "phi_y": [x - dx + w * dy, y - dy],
        "phi_p": [0, 0, 0, 0, x * dy],
    }
    assert set(got) == set(expected)
    for key, exp in expected.items():
        assert got[key].shape == (len(exp), 1), key
        for i, e in enumerate(exp):
            assert sp.simplify(got[key][i] - e) == 0, f"{key}[{i}]: {got[key][i]} != {e}"


def test_losses_are_their_own_kernels_not_part_of_the_adjoint(loss_model):
    """The dynamics contract: the adjoint kernel is -[aᵀ∂f/∂y, aᵀ∂f/∂p] whatever the
    loss (the engine adds the running cost's forcing), and running_grad is ∂g/∂(y, θ)."""
    k = loss_model.kernels
    y, a_ = np.array([0.7, 1.3]), np.array([0.4, -1.1])
    out = np.empty(2 + TH.size)
    k.adjoint(0.3, y, TH, a_, out)
    vy, vp = np.empty(2), np.empty(TH.size)
    k.vjp(0.3, y, TH, a_, vy, vp)
    np.testing.assert_array_equal(out, -np.concatenate([vy, vp]))
    gy, gp = np.empty(2), np.empty(TH.size)
    k.running_grad(0.3, y, TH, gy, gp, np.empty(0))  # work may be passed, or left out
    xv, yv, wv = y[0], y[1], TH[4]
    expected_y = [wv * 2 * (xv - 1), wv * np.sin(0.3) * yv]
    expected_p = [0, 0, 0, 0, (xv - 1) ** 2 + np.sin(0.3) * yv**2 / 2]
    np.testing.assert_allclose(gy, expected_y, rtol=1e-14)
    np.testing.assert_allclose(gp, expected_p, rtol=1e-14)


def test_loss_validation():
    system = lv_with_weight()
    z = sp.Symbol("z")
    with pytest.raises(symode.UndeclaredSymbolError, match="z"):
        system.loss_derivatives(symode.Loss(running=z * x))
    with pytest.raises(symode.SystemDefinitionError, match="may not depend on t"):
        system.loss_derivatives(symode.Loss(observation=t * x))
    with pytest.raises(symode.DuplicateSymbolError):
        system.loss_derivatives(symode.Loss(observation=a * x, data=[a]))
    with pytest.raises(symode.InvalidStateError):
        symode.Loss(observation=x, data=["dx"])


# -- the value -------------------------------------------------------------------------------------
def scipy_solution(y0, th, t_span):
    """DOP853 at rtol = atol = 1e-13 with dense output: the independent reference."""
    pa, pb, pc, pd = th[:4]

    def f(_, u):
        return [pa * u[0] - pb * u[0] * u[1], pc * u[0] * u[1] - pd * u[1]]

    return scipy.integrate.solve_ivp(
        f, t_span, y0, method="DOP853", rtol=1e-13, atol=1e-13, dense_output=True
    ).sol


def independent_value(y0, th, ts, data) -> float:
    """scipy: DOP853 with dense output, ∫ g dt by adaptive quadrature along it, plus Σ φ."""
    sol = scipy_solution(y0, th, (ts[0], ts[-1]))
    pw = th[4]
    g = sp.lambdify((t, x, y, w), RUNNING)
    run, _ = scipy.integrate.quad(
        lambda s: g(s, *sol(s), pw), ts[0], ts[-1], epsabs=1e-13, epsrel=1e-13, limit=500
    )
    phi = sp.lambdify((x, y, dx, dy, w), OBSERVATION)
    obs = sum(phi(*sol(ti), *di, pw) for ti, di in zip(ts, data))
    return run + obs


@pytest.mark.parametrize("mode", ADAPTIVE_MODES)
def test_value_matches_independent_computation(loss_model, mode):
    expected = independent_value(Y0, TH, TS, DATA)
    value, grad = loss_model.value_and_grad(Y0, TS, TH, DATA, adjoint=mode, **TIGHT)
    assert isinstance(value, float) and grad.shape == (5,)
    assert abs(value - expected) <= 1e-8 * abs(expected), (mode, value, expected)


def test_running_cost_alone_and_observation_alone(loss_model):
    """w = 0 leaves the least-squares observation cost only; the running cost then follows
    by difference and is linear in w."""
    th0 = np.r_[TH[:4], 0.0]
    v0, _ = loss_model.value_and_grad(Y0, TS, th0, DATA, **TIGHT)
    assert abs(v0 - independent_value(Y0, th0, TS, DATA)) <= 1e-8 * abs(v0)
    v1, _ = loss_model.value_and_grad(Y0, TS, TH, DATA, **TIGHT)
    v2, _ = loss_model.value_and_grad(Y0, TS, np.r_[TH[:4], 2 * TH[4]], DATA, **TIGHT)
    assert abs((v2 - v0) - 2 * (v1 - v0)) <= 1e-8 * abs(v1)


# -- the gradient ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fd_reference(loss_model):
    return fd_gradient(value_of(loss_model, **TIGHT), np.r_[Y0, TH])


@pytest.mark.parametrize("mode", ADAPTIVE_MODES)
def test_gradient_matches_finite_differences_of_the_value(loss_model, fd_reference, mode):
    _, grad = loss_model.value_and_grad(
        Y0, TS, TH, DATA, wrt=("y0", "params"), adjoint=mode, **TIGHT
    )
    err = rel(grad, fd_reference)
    print(f"symbolic loss {mode}: rel err vs FD {err:.2e}")
    assert err <= 1e-7, f"{mode}: rel err {err:.2e} vs finite differences of the value"


@pytest.mark.parametrize(
    "modes, solver",
    [
        (MODES[:3], TIGHT),
        pytest.param(MODES, TIGHT),
        (MODES, {"method": "rk4", "dt": 0.005}),
    ],
    ids=["dopri5-adjoints", "dopri5-all", "rk4-all"],
)
def test_modes_agree_pairwise(loss_model, modes, solver):
    """On the rk4 grid the continuous adjoints differ from the discrete one by the rk4 error
    O(dt⁴) ≈ 1e-9 relative; at tol 1e-10 by a few times the tolerance."""
    grads = {
        m: loss_model.value_and_grad(Y0, TS, TH, DATA, wrt=("y0", "params"), adjoint=m, **solver)[1]
        for m in modes
    }
    for m1, m2 in itertools.combinations(modes, 2):
        err = rel(grads[m1], grads[m2])
        assert err <= 1e-7, f"{m1} vs {m2}: rel diff {err:.2e}"


@pytest.mark.parametrize("method", ["dopri5", "rk4", "euler"])
def test_discrete_equals_finite_differences_of_the_fixed_grid_solver(loss_model, method):
    """The running cost is integrated as an extra state by the same fixed-grid method, and
    the discrete adjoint reverses that too: exact up to rounding. (dopri5 on a grid in the
    default run: its kernels are compiled already; rk4 and euler with -m full.)"""
    solver = {"method": method, "dt": 0.01}
    _, grad = loss_model.value_and_grad(
        Y0, TS, TH, DATA, wrt=("y0", "params"), adjoint="discrete", **solver
    )
    fd = fd_gradient(value_of(loss_model, **solver), np.r_[Y0, TH])
    err = rel(grad, fd)
    assert err <= 1e-9, f"discrete {method}: rel err {err:.2e} vs FD of the same solver"


def test_wrt_selects_and_orders_the_gradients(loss_model):
    v1, gp = loss_model.value_and_grad(Y0, TS, TH, DATA, **TIGHT)
    v2, gy = loss_model.value_and_grad(Y0, TS, TH, DATA, wrt=("y0",), **TIGHT)
    v3, both = loss_model.value_and_grad(Y0, TS, TH, DATA, wrt=("params", "y0"), **TIGHT)
    assert gp.shape == (5,) and gy.shape == (2,) and both.shape == (7,)
    assert v1 == v2 == v3
    np.testing.assert_array_equal(both, np.r_[gp, gy])


def test_initial_condition_map_chain_rule(loss_model):
    """y0 = y0(s) = (s, 2 - s²): dL/ds = (∂y0/∂s)·∂L/∂y0 from wrt=("y0",)."""
    s0 = 0.9

    def value(s):
        return loss_model.value_and_grad([s, 2 - s * s], TS, TH, DATA, **TIGHT)[0]

    _, gy = loss_model.value_and_grad([s0, 2 - s0 * s0], TS, TH, DATA, wrt=("y0",), **TIGHT)
    chain = gy @ np.array([1.0, -2 * s0])
    fd = fd_gradient(lambda z: value(z[0]), [s0])[0]
    assert abs(chain - fd) <= 1e-7 * abs(fd), (chain, fd)


# -- fitting ---------------------------------------------------------------------------------------
def test_lbfgsb_recovers_known_parameters(loss_model):
    """Noise-free LV data from known (a, b, c, d); w = 0 is held by the bounds (0, 0), so
    the loss is plain least squares, minimal (= 0) at the truth."""
    truth = np.array([1.5, 1.0, 3.0, 1.0, 0.0])
    ts = np.linspace(0.0, 4.0, 21)
    data = scipy_solution(Y0, truth, (ts[0], ts[-1]))(ts).T

    def fun(th):
        return loss_model.value_and_grad(Y0, ts, th, data, rtol=1e-10, atol=1e-10)

    x0 = np.array([1.2, 0.8, 3.4, 1.2, 0.0])
    bounds = [(0.1, 10.0)] * 4 + [(0.0, 0.0)]
    res = scipy.optimize.minimize(
        fun, x0, jac=True, method="L-BFGS-B", bounds=bounds,
        options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 500},
    )  # fmt: skip
    err = rel(res.x[:4], truth[:4])
    print(f"L-BFGS-B: {res.nit} iterations, {res.nfev} evaluations, rel err {err:.1e}")
    assert res.success, res.message
    assert err <= 1e-5, f"recovered {res.x[:4]} vs truth {truth[:4]} (rel err {err:.1e})"
    assert res.x[4] == 0.0 and res.fun <= 1e-12


# -- errors ----------------------------------------------------------------------------------------
def test_loss_input_errors(loss_model):
    with pytest.raises(ShapeError, match="data placeholders"):
        loss_model.value_and_grad(Y0, TS, TH)
    with pytest.raises(ShapeError, match=r"data must have shape \(7, 2\)"):
        loss_model.value_and_grad(Y0, TS, TH, DATA[:, :1])
    with pytest.raises(ValueError, match="NaN"):
        loss_model.value_and_grad(Y0, TS, TH, np.full_like(DATA, np.nan))
    with pytest.raises(ValueError, match="running cost needs the last output time"):
        loss_model.value_and_grad(Y0, TS, TH, DATA, t_span=(0.0, 4.0))


def test_value_and_grad_batched_concatenates_per_trajectory(loss_model, monkeypatch):
    """No ensemble compile needed: the batched Gradient is faked, the wrapper is tested."""
    import symode.gradients as gradients

    B = 3
    fake = gradients.Gradient(
        y0=np.ones((B, 2)), params=np.zeros((B, 5)), value=np.zeros(B), stats={},
        status=np.zeros(B, int), message=[""] * B,
    )  # fmt: skip
    monkeypatch.setattr(gradients, "compute_gradient", lambda *a, **k: fake)
    _, g = loss_model.value_and_grad(np.ones((B, 2)), TS, TH, DATA, wrt=("params", "y0"))
    assert g.shape == (B, 7)


# -- symode.testing with a symbolic loss -----------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_check_gradient_with_the_symbolic_loss(loss_model, mode):
    """On a fixed dopri5 grid (dt = 0.005): the finite differences are then of a smooth
    map; the continuous adjoints carry the O(dt⁵) error of the grid. (The model's dopri5
    kernels serve fixed grids too: no other method's kernels to compile.)"""
    report = check_gradient(
        loss_model, Y0, TS, TH, data=DATA, adjoint=mode, method="dopri5", dt=0.005
    )
    assert report.passed and report.max_rel_err_fd <= 1e-6
    assert report.value == pytest.approx(independent_value(Y0, TH, TS, DATA), rel=1e-7)
    assert report.names[-1] == "params[w]"


class _WrongLossGradient:
    """Delegates to the model; its value_and_grad gradient w.r.t. y0[y] is 1% off."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        return getattr(self._model, name)

    def value_and_grad(self, *args, wrt=("params",), adjoint="checkpoint", **kw):
        v, g = self._model.value_and_grad(*args, wrt=wrt, adjoint=adjoint, **kw)
        if adjoint == "backsolve" and "y0" in wrt:
            g = g.copy()
            g[list(wrt).index("y0") * 5 + 1] *= 1.01  # wrt=("y0", "params"): y0[y] is index 1
        return v, g


def test_check_gradient_with_the_symbolic_loss_fails_on_a_wrong_gradient(loss_model):
    with pytest.raises(AssertionError, match=r"(?s)failed for y0\[y\].*y0\[y\].*<-- FAIL"):
        check_gradient(
            _WrongLossGradient(loss_model), Y0, TS, TH, data=DATA, adjoint="backsolve",
            method="dopri5", dt=0.005,
        )  # fmt: skip
