"""symode.nn.MLP: the network's kernels against independent references (a numpy forward
pass written apart from them, central finite differences, closed forms, each other),
and neural ODEs on the engine against scipy's solve_ivp and across adjoint modes.

Tolerances: the kernels are exact up to rounding (1e-12 relative against numpy);
central differences with step 1e-6 carry O(h²) ≈ 1e-12 truncation and ~1e-10 rounding
(ε·|f|/h), so 1e-7 relative; adjoint modes agree to their integration tolerances.
"""

import itertools

import numba
import numpy as np
import pytest
import scipy.integrate
import sympy as sp

import symode
from symode.errors import ShapeError
from symode.nn import MLP

# small architectures covering every activation, the input map and the time input
ARCHS = {
    "tanh": dict(sizes=(2, 5, 2), activation="tanh"),
    "cube-time": dict(sizes=(2, 4, 2), activation="softplus", input_map="cube", time_input=True),
    "deep": dict(sizes=(3, 4, 3, 3), activation=("sigmoid", "sin"), input_map="tanh"),
    "relu-out": dict(sizes=(2, 3, 2), activation="relu", output_activation="tanh"),
}


@pytest.fixture(scope="module", params=sorted(ARCHS))
def net(request, cache_dir):
    mlp = MLP(**ARCHS[request.param], seed=3)
    # biases away from zero: every activation's curvature takes part
    theta = mlp.params + 0.3 * np.random.default_rng(1).standard_normal(mlp.n_params)
    return mlp, mlp.compile(cache_dir=cache_dir).kernels, theta


def _point(mlp, seed=0):
    rng = np.random.default_rng(seed)
    return 0.7 * rng.standard_normal(mlp.n_states), 0.37


def _rhs(k, mlp, t, y, p):
    out = np.empty(mlp.n_states)
    k.rhs(t, y, p, out)
    return out


def _fd(f, x, h=1e-6):
    """Central differences of f (vector or scalar valued) w.r.t. every entry of x."""
    cols = []
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h
        cols.append((np.asarray(f(x + e)) - np.asarray(f(x - e))) / (2 * h))
    return np.stack(cols, -1)


def test_rhs_matches_numpy_reference(net):
    mlp, k, theta = net
    for seed in range(3):
        y, t = _point(mlp, seed)
        np.testing.assert_allclose(
            _rhs(k, mlp, t, y, theta), mlp.apply(y, theta, t), rtol=1e-12, atol=1e-14
        )


def test_rhs_float32(net):
    mlp, k, theta = net
    y, t = _point(mlp)
    out = np.empty(mlp.n_states, np.float32)
    k.rhs(t, y.astype(np.float32), theta.astype(np.float32), out)  # float32 weights too
    np.testing.assert_allclose(out, mlp.apply(y.astype(np.float32), theta, t), rtol=1e-5, atol=1e-6)


def test_vjp_and_jvp_against_finite_differences(net):
    mlp, k, theta = net
    n, P = mlp.n_states, mlp.n_params
    y, t = _point(mlp)
    Jy = _fd(lambda yy: _rhs(k, mlp, t, yy, theta), y)
    Jp = _fd(lambda pp: _rhs(k, mlp, t, y, pp), theta)
    a = np.random.default_rng(5).standard_normal(n)
    gy, gp = np.empty(n), np.empty(P)
    k.vjp(t, y, theta, a, gy, gp)
    np.testing.assert_allclose(gy, a @ Jy, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(gp, a @ Jp, rtol=1e-7, atol=1e-8)
    adj = np.empty(n + P)
    k.adjoint(t, y, theta, a, adj)
    np.testing.assert_array_equal(adj, -np.concatenate([gy, gp]))
    v, w = np.random.default_rng(6).standard_normal(n), np.random.default_rng(7).standard_normal(P)
    out = np.empty(n)
    k.jvp(t, y, theta, v, w, out)
    np.testing.assert_allclose(out, Jy @ v + Jp @ w, rtol=1e-7, atol=1e-8)
    jac = np.empty((n, n))
    k.jac(t, y, theta, jac)
    np.testing.assert_allclose(jac, Jy, rtol=1e-7, atol=1e-8)
    # duality, exact up to rounding: aᵀ(J v + Jp w) = (aᵀJ) v + (aᵀJp) w
    np.testing.assert_allclose(a @ out, gy @ v + gp @ w, rtol=1e-12)
    dfdt = np.empty(n)
    k.dfdt(t, y, theta, dfdt)
    fd_t = (_rhs(k, mlp, t + 1e-6, y, theta) - _rhs(k, mlp, t - 1e-6, y, theta)) / 2e-6
    np.testing.assert_allclose(dfdt, fd_t, rtol=1e-7, atol=1e-8)
    if not mlp.time_input:
        assert not dfdt.any()


def test_trace_hutchinson_and_their_gradients(net):
    mlp, k, theta = net
    n, P = mlp.n_states, mlp.n_params
    y, t = _point(mlp, 1)
    jac = np.empty((n, n))
    k.jac(t, y, theta, jac)
    tr = k.trace(t, y, theta)
    np.testing.assert_allclose(tr, np.trace(jac), rtol=1e-12, atol=1e-14)
    # Hutchinson is unbiased: averaged over every Rademacher probe it is the trace exactly
    probes = [np.array(s, float) for s in itertools.product((-1.0, 1.0), repeat=n)]
    est = [k.hutchinson(t, y, theta, e) for e in probes]
    np.testing.assert_allclose(np.mean(est), tr, rtol=1e-12, atol=1e-14)
    for e, h in zip(probes[:2], est):
        np.testing.assert_allclose(h, e @ jac @ e, rtol=1e-12, atol=1e-14)
    # the gradients of both, against central differences
    eps = probes[1]
    gy, gp = np.empty(n), np.empty(P)
    k.hutchinson_grad(t, y, theta, eps, gy, gp)
    np.testing.assert_allclose(
        gy, _fd(lambda yy: k.hutchinson(t, yy, theta, eps), y), rtol=1e-6, atol=1e-7
    )
    np.testing.assert_allclose(
        gp, _fd(lambda pp: k.hutchinson(t, y, pp, eps), theta), rtol=1e-6, atol=1e-7
    )
    ty, tp = np.empty(n), np.empty(P)
    k.trace_grad(t, y, theta, ty, tp)
    np.testing.assert_allclose(ty, _fd(lambda yy: k.trace(t, yy, theta), y), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(tp, _fd(lambda pp: k.trace(t, y, pp), theta), rtol=1e-6, atol=1e-7)


def test_one_hidden_layer_trace_is_the_closed_form(cache_dir):
    """f(y) = W₂σ(W₁g(y) + b₁) + b₂: tr = Σₖ σ′(zₖ)(W₁ diag(g′(y)) W₂)ₖₖ, written in numpy."""
    mlp = MLP((3, 6, 3), "tanh", input_map="cube", seed=2)
    k = mlp.compile(cache_dir=cache_dir).kernels
    theta = mlp.params + 0.2
    y = np.array([0.3, -0.8, 0.5])
    (l1, l2) = mlp.layers(theta)
    z = l1["W"] @ y**3 + l1["b"]
    closed = np.sum((1 - np.tanh(z) ** 2) * np.diag(l1["W"] @ np.diag(3 * y**2) @ l2["W"]))
    np.testing.assert_allclose(k.trace(0.0, y, theta), closed, rtol=1e-13)


def test_layout_views_and_seeded_inits():
    mlp = MLP((2, 50, 2), "tanh", input_map="cube", init="normal", seed=0)
    assert mlp.n_params == 2 * 50 + 50 + 50 * 2 + 2
    (l1, l2) = mlp.layers()
    assert l1["W"].shape == (50, 2) and l2["W"].shape == (2, 50)
    assert not l1["b"].any() and not l2["b"].any()  # torchdiffeq's demo: zero biases
    assert 0.08 < np.std(l1["W"]) < 0.12  # N(0, 0.1²)
    l2["b"][:] = 7.0  # views write the vector
    assert (mlp.params[-2:] == 7.0).all()
    assert np.array_equal(MLP((2, 50, 2), seed=4).params, MLP((2, 50, 2), seed=4).params)
    assert not np.array_equal(MLP((2, 50, 2), seed=4).params, MLP((2, 50, 2), seed=5).params)
    g = MLP((2, 8, 2), init="glorot", seed=1)
    assert np.abs(g.layers()[0]["W"]).max() <= np.sqrt(6 / 10)
    t = MLP((2, 8, 2), init="torch", seed=1)
    assert t.layers()[0]["b"].any() and np.abs(t.layers()[0]["b"]).max() <= 1 / np.sqrt(2)
    with pytest.raises(ShapeError, match=r"\(252,\)"):
        mlp.layers(np.zeros(3))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sizes=(2, 5, 3)), "sizes\\[0\\] \\(2\\) must equal sizes\\[-1\\] \\(3\\)"),
        (dict(sizes=(2,)), "at least two"),
        (dict(sizes=(2, 0, 2)), "positive"),
        (dict(sizes=(2, 5, 2), activation="gelu"), "unknown activation 'gelu'"),
        (dict(sizes=(2, 5, 5, 2), activation=("tanh",)), "1 given for 2 hidden layers"),
        (dict(sizes=(2, 5, 2), input_map="square"), "unknown input_map 'square'"),
        (dict(sizes=(2, 5, 2), init="xavier"), "unknown init 'xavier'"),
    ],
)
def test_bad_architectures_are_named(kwargs, match):
    with pytest.raises((ShapeError, ValueError), match=match):
        MLP(**kwargs)


# -- neural ODEs on the engine -------------------------------------------------------------


@pytest.fixture(scope="module")
def spiral(cache_dir):
    """torchdiffeq's ode_demo dynamics: y' = W₂ tanh(W₁ y³ + b₁) + b₂ (hidden 16 here)."""
    mlp = MLP((2, 16, 2), "tanh", input_map="cube", init="normal", std=0.3, seed=0)
    return mlp, mlp.compile(cache_dir=cache_dir)


def test_neural_ode_solve_matches_solve_ivp(spiral):
    mlp, model = spiral
    y0 = np.array([2.0, 0.0])
    t = np.linspace(0.0, 2.0, 21)
    sol = model.solve(y0, t, mlp.params, rtol=1e-10, atol=1e-12)
    ref = scipy.integrate.solve_ivp(
        lambda tt, yy: mlp.apply(yy, t=tt), (0, 2), y0, t_eval=t, rtol=1e-12, atol=1e-13
    )
    np.testing.assert_allclose(sol.y, ref.y.T, rtol=1e-8, atol=1e-9)


def test_neural_ode_gradients_agree_across_modes_and_with_finite_differences(spiral):
    mlp, model = spiral
    y0 = np.array([2.0, 0.0])
    t = np.linspace(0.0, 1.0, 6)
    theta = mlp.params
    cot = np.random.default_rng(0).standard_normal((t.size, 2))
    opts = dict(rtol=1e-10, atol=1e-12)
    grads = {
        mode: model.vjp(y0, t, theta, cot, adjoint=mode, **opts)
        for mode in ("checkpoint", "backsolve", "discrete", "forward")
    }
    ref = grads["discrete"]
    for mode, g in grads.items():
        np.testing.assert_allclose(g.params, ref.params, rtol=1e-6, atol=1e-8, err_msg=mode)
        np.testing.assert_allclose(g.y0, ref.y0, rtol=1e-6, atol=1e-8, err_msg=mode)

    # the discrete adjoint is the exact derivative of the solver: on fixed steps (a
    # smooth function of θ) central differences of the solve agree with it to O(h²)
    fixed = dict(method="rk4", dt=0.05)
    g = model.vjp(y0, t, theta, cot, adjoint="discrete", **fixed)

    def loss(p):
        return np.sum(cot * model.solve(y0, t, p, **fixed).y)

    for i in np.random.default_rng(1).choice(mlp.n_params, 6, replace=False):
        e = np.zeros(mlp.n_params)
        e[i] = 1e-5
        fd = (loss(theta + e) - loss(theta - e)) / 2e-5
        np.testing.assert_allclose(g.params[i], fd, rtol=1e-6, atol=1e-10)


def test_neural_ode_symbolic_loss_and_ensemble(spiral, cache_dir):
    mlp, _ = spiral
    y0s, y1s = mlp.states
    d0, d1 = sp.symbols("d0 d1", real=True)
    loss = symode.Loss(observation=(y0s - d0) ** 2 + (y1s - d1) ** 2, data=(d0, d1))
    model = mlp.compile(loss=loss, cache_dir=cache_dir)
    t = np.linspace(0.0, 1.0, 5)
    y0 = np.array([2.0, 0.0])
    data = np.random.default_rng(2).standard_normal((t.size, 2))
    value, grad = model.value_and_grad(y0, t, mlp.params, data, rtol=1e-10, atol=1e-12)
    y = model.solve(y0, t, mlp.params, rtol=1e-10, atol=1e-12).y
    np.testing.assert_allclose(value, np.sum((y - data) ** 2), rtol=1e-10)
    g = model.vjp(y0, t, mlp.params, 2 * (y - data), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad, g.params, rtol=1e-8, atol=1e-12)
    # an ensemble: each trajectory its own solve
    Y0 = np.array([[2.0, 0.0], [0.5, -1.0], [-1.0, 0.3]])
    ens = model.solve(Y0, t, mlp.params)
    for i in range(3):
        np.testing.assert_allclose(ens.y[i], model.solve(Y0[i], t, mlp.params).y, rtol=1e-13)


def test_a_new_architecture_compiles_only_its_own_wrappers(tmp_path, cache_dir):
    """The MLP kernels are compiled once per machine for all architectures of a depth;
    a new width in a fresh process compiles its module's thin wrappers only (and no
    engine function), and its gradient matches this process's."""
    from test_cache import run_worker

    from symode.maintenance import compile_events
    from symode.nn import _kernels

    run_worker("mlp", tmp_path, "-", "9")  # the shared kernels are in numba's cache now
    width = int(np.random.default_rng().integers(10, 1000))  # no cache has seen it
    new = run_worker("mlp", tmp_path, "-", str(width))
    assert new["compiles"]["nn"] == 0 and new["compiles"]["engine"] == 0, new["compiles"]
    assert new["compiles"]["kernels"] > 0, new["compiles"]  # the wrappers: it sees compiles
    with compile_events() as seen:  # and the "nn" counter sees the shared kernels' compiles
        numba.njit(_kernels.act.py_func)(0, 1.0)
    assert seen["nn"] == 1
    mlp = MLP((2, width, 2), "tanh", seed=0)
    model = mlp.compile(cache_dir=cache_dir)
    t = np.linspace(0.0, 2.0, 9)
    y = model.solve([1.0, 0.5], t, mlp.params).y
    np.testing.assert_allclose(new["y"], y, rtol=1e-13)
    g = model.vjp([1.0, 0.5], t, mlp.params, np.ones_like(y))
    np.testing.assert_allclose(new["grad"], g.params[:3], rtol=1e-12)


def test_neural_ode_float32_gradients_near_float64(spiral):
    """float32 end to end (states and weights), a batch of two: the checkpoint gradient
    within 1e-3 relative of float64's at rtol 1e-5 — float32 rounding (6e-8) grown
    through ~100 steps and the looser tolerance stay far below it. (A batch: the same
    compiled float32 entry as the spiral example's.)"""
    mlp, model = spiral
    y0 = np.array([[2.0, 0.0], [0.5, -1.0]])
    t = np.linspace(0.0, 1.0, 6)
    cot = np.random.default_rng(0).standard_normal((2, t.size, 2))
    g64 = model.vjp(y0, t, mlp.params, cot, rtol=1e-5, atol=1e-7)
    g32 = model.vjp(y0, t, mlp.params, cot, rtol=1e-5, atol=1e-7, dtype=np.float32)
    assert g32.y.dtype == np.float32
    scale = np.abs(g64.params).max()
    np.testing.assert_allclose(g32.params, g64.params, rtol=1e-3, atol=1e-3 * scale)
    np.testing.assert_allclose(g32.y0, g64.y0, rtol=1e-3, atol=1e-3 * scale)


def _resnet(mlp, theta, x, hs, c):
    """A weight-tied residual network in plain numpy, x_{i+1} = x_i + h_i f(x_i) with
    f(x) = W₂ tanh(W₁ x³ + b₁) + b₂, and hand-written backprop of L = c·x_N: returns
    (x_N, ∂L/∂θ in the MLP's flat layout, ∂L/∂x_0)."""
    (l1, l2) = mlp.layers(theta)
    saved = []
    for h in hs:
        u = x**3
        a = np.tanh(l1["W"] @ u + l1["b"])
        saved.append((x, u, a, h))
        x = x + h * (l2["W"] @ a + l2["b"])
    grad = np.zeros_like(theta)
    g1, g2 = mlp.layers(grad)
    lam = c.copy()
    for x_i, u, a, h in reversed(saved):
        g2["W"] += h * np.outer(lam, a)
        g2["b"] += h * lam
        dz = h * (l2["W"].T @ lam) * (1.0 - a**2)
        g1["W"] += np.outer(dz, u)
        g1["b"] += dz
        lam = lam + (l1["W"].T @ dz) * 3.0 * x_i**2
    return x, grad, lam


def test_resnet_is_euler(spiral):
    """The curriculum's week 3: N explicit Euler steps of the neural ODE are an N-block
    weight-tied ResNet. symode's euler solve and its discrete adjoint (the exact
    derivative of those steps) equal the numpy ResNet's forward pass and backprop to
    rounding (1e-12 relative: 16 blocks of O(1) arithmetic)."""
    mlp, model = spiral
    theta = mlp.params + 0.2 * np.random.default_rng(4).standard_normal(mlp.n_params)
    y0 = np.array([1.2, -0.4])
    c = np.array([0.7, -1.3])
    dt, N = 0.0625, 16  # the grid t_i = i·dt ends on 1.0 exactly
    x_N, grad, lam = _resnet(mlp, theta, y0.copy(), np.diff(np.arange(N + 1) * dt), c)
    opts = dict(method="euler", dt=dt)
    sol = model.solve(y0, [0.0, 1.0], theta, **opts)
    np.testing.assert_allclose(sol.y[-1], x_N, rtol=1e-12)
    g = model.vjp(y0, [0.0, 1.0], theta, np.array([[0.0, 0.0], c]), adjoint="discrete", **opts)
    np.testing.assert_allclose(g.params, grad, rtol=1e-12, atol=1e-14 * np.abs(grad).max())
    np.testing.assert_allclose(g.y0, lam, rtol=1e-12)


def test_float32_solves_use_float32_weights(spiral):
    """A float32 solve uses the weights in single precision (the kernels' params are
    the state's dtype): float64 weights give bit for bit the float32 solve of the same
    weights rounded (mlp.init(dtype=np.float32)), and a change below float32's
    resolution changes nothing, while it does change the float64 solve."""
    mlp, model = spiral
    theta = mlp.init(seed=3)
    theta32 = mlp.init(seed=3, dtype=np.float32)
    assert theta32.dtype == np.float32 and np.array_equal(theta32, theta.astype(np.float32))
    t = np.linspace(0.0, 1.0, 6)
    y0 = [2.0, 0.0]
    y32 = model.solve(y0, t, theta32, dtype=np.float32).y
    np.testing.assert_array_equal(model.solve(y0, t, theta, dtype=np.float32).y, y32)
    nudged = theta + 1e-3 * np.spacing(theta.astype(np.float32))  # rounds back to theta32
    np.testing.assert_array_equal(model.solve(y0, t, nudged, dtype=np.float32).y, y32)
    assert not np.array_equal(model.solve(y0, t, nudged).y, model.solve(y0, t, theta).y)
    with pytest.raises(ValueError, match="float32 or float64"):
        mlp.init(dtype=np.float16)


def test_fast_tanh_is_accurate():
    """The kernels' tanh (1 - 2/(e²ˣ + 1), a Taylor series below 0.1) against numpy's on
    a dense grid, tiny arguments and the switch points: within 2e-15 relative."""
    from symode.nn._kernels import _tanh

    xs = np.concatenate(
        [np.linspace(-30, 30, 20001), np.geomspace(1e-300, 1, 500), -np.geomspace(1e-300, 1, 500),
         [0.0, np.nextafter(0.1, 0), 0.1, 20.0, np.nextafter(20.0, 21), 1e300]]
    )  # fmt: skip
    got = np.array([_tanh(x) for x in xs])
    ref = np.tanh(xs)
    assert np.all(np.abs(got - ref) <= 2e-15 * np.abs(ref)), np.max(
        np.abs(got - ref) / np.abs(ref + 1e-300)
    )
    assert _tanh(0.0) == 0.0 and _tanh(-1e300) == -1.0
