"""symode.flows: the O(d) log-determinants against numpy.linalg.slogdet of the dense
Jacobian, the Jacobian and every hand-written gradient against central finite
differences, the invertibility reparametrisations, the ELBO against its exact value and
a quadrature of log Z, and the test energies U1–U4."""

import math

import numpy as np
import pytest

import symode
from symode.flows import ENERGIES, U1, PlanarFlow, RadialFlow, dense_logdet, grad_U1
from symode.nn.train import Adam, cosine

FLOWS = (PlanarFlow, RadialFlow)


def _random_params(flow, seed, scale=1.0):
    """Parameters far from the near-identity initialisation (every layer bends the
    space), so that the log-determinants are not close to 0."""
    return flow.params + np.random.default_rng(seed).normal(0.0, scale, flow.n_params)


def _central(f, x, h):
    """Central differences of f at x along each coordinate of x (1-D), stacked last."""
    cols = []
    for k in range(x.size):
        e = np.zeros_like(x)
        e.flat[k] = h
        cols.append((np.asarray(f(x + e)) - np.asarray(f(x - e))) / (2 * h))
    return np.stack(cols, axis=-1)


def test_parameter_layout_views_and_seeded_init():
    flow = PlanarFlow(3, 4, seed=5)
    assert flow.n_params == 4 * (2 * 3 + 1) == flow.params.size
    layers = flow.layers()
    assert [list(L) for L in layers] == [["u", "w", "b"]] * 4
    layers[2]["b"][0] = 7.0  # a view: writes the vector
    assert flow.params[2 * 7 + 6] == 7.0
    np.testing.assert_array_equal(PlanarFlow(3, 4, seed=5).init(5), PlanarFlow(3, 4).init(5))
    assert not np.array_equal(flow.init(1), flow.init(2))
    radial = RadialFlow(5, 2)
    assert radial.n_params == 2 * (5 + 2)
    assert [list(L) for L in radial.layers()] == [["z0", "alpha", "beta"]] * 2
    assert repr(radial) == "RadialFlow(dim=5, n_layers=2)"


@pytest.mark.parametrize("cls", FLOWS)
def test_forward_shapes_one_point_and_batch(cls):
    flow = cls(3, 2)
    z = np.random.default_rng(0).standard_normal((6, 3))
    x, ld = flow.forward(z)
    assert x.shape == (6, 3) and ld.shape == (6,)
    x0, ld0 = flow.forward(z[0])
    assert x0.shape == (3,) and ld0.shape == ()
    np.testing.assert_array_equal(x0, x[0])
    assert ld0 == ld[0]
    assert flow.jacobian(z[0]).shape == (3, 3)


@pytest.mark.parametrize("cls", FLOWS)
@pytest.mark.parametrize("dim", [1, 2, 5])
def test_jacobian_equals_central_differences_of_forward(cls, dim):
    """h = 1e-5: truncation h²·f'''/6 ~ 1e-10 and rounding ε/h ~ 1e-11 against entries
    of order 1, so 1e-8 absolute."""
    flow = cls(dim, 3)
    theta = _random_params(flow, 1)
    z = np.random.default_rng(2).standard_normal((4, dim))
    J = flow.jacobian(z, theta)
    for i in range(len(z)):
        fd = _central(lambda v: flow.forward(v, theta)[0], z[i], 1e-5)
        np.testing.assert_allclose(J[i], fd, atol=1e-8)


@pytest.mark.parametrize("cls", FLOWS)
@pytest.mark.parametrize("dim", [1, 2, 5, 16])
def test_analytic_logdet_equals_slogdet_of_the_dense_jacobian(cls, dim):
    """Σ_k log|1 + ûᵀψ| (planar) and (d-1) log(1 + β̂h) + log(1 + αβ̂h²) (radial)
    against an LU factorisation of J_K ⋯ J_1: 1e-10 relative (both are a few roundings of
    well-conditioned Jacobians; 6 layers, parameters far from the identity)."""
    flow = cls(dim, 6)
    theta = _random_params(flow, dim)
    z = flow.base.sample(50, seed=dim)
    _, logdet = flow.forward(z, theta)
    ref = dense_logdet(flow.jacobian(z, theta))
    assert np.max(np.abs(ref)) > 0.5  # the flow is far from volume-preserving
    np.testing.assert_allclose(logdet, ref, rtol=1e-10, atol=1e-10 * np.max(np.abs(ref)))


def test_dense_logdet_of_two_by_two_is_ad_minus_bc():
    J = np.array([[[2.0, 1.0], [0.5, 3.0]], [[0.0, -2.0], [1.5, 0.0]]])
    np.testing.assert_allclose(dense_logdet(J), np.log([5.5, 3.0]), rtol=1e-15)
    assert dense_logdet(np.eye(3)) == 0.0
    with pytest.raises(symode.ShapeError, match=r"\(d, d\) or \(n, d, d\), got \(2, 3\)"):
        dense_logdet(np.zeros((2, 3)))


def test_planar_reparametrisation_keeps_every_layer_invertible():
    """Appendix A: wᵀû = m(wᵀu) = -1 + softplus(wᵀu) > -1 whatever u is, so
    1 + ûᵀψ = 1 + (1 - h²) wᵀû > 0; here with u chosen to make wᵀu = -40 and +40."""
    flow = PlanarFlow(4, 2)
    theta = flow.params.copy()
    for layer, target in zip(flow.layers(theta), (-40.0, 40.0)):
        w = layer["w"]
        layer["u"][:] = target * w / (w @ w)
    uh = flow.u_hat(theta)
    for layer, u_hat, s in zip(flow.layers(theta), uh, (-40.0, 40.0)):
        wu = layer["w"] @ u_hat
        assert wu > -1.0
        assert wu == pytest.approx(-1.0 + np.logaddexp(0.0, s), rel=1e-12, abs=1e-15)
    z = flow.base.sample(200, seed=0) * 3
    _, logdet = flow.forward(z, theta)
    assert np.isfinite(logdet).all()
    sign, _ = np.linalg.slogdet(flow.jacobian(z, theta))
    assert np.all(sign == 1.0)


def test_radial_reparametrisation_keeps_every_layer_invertible():
    """β̂ = -α + softplus(β̃) > -α and α = softplus(α̃) > 0: the Jacobian's determinant
    stays positive even for β̃ = -30 (β̂ within 1e-13 of -α) and near z₀."""
    flow = RadialFlow(3, 2)
    theta = flow.params.copy()
    for layer in flow.layers(theta):
        layer["alpha"][0] = 0.5
        layer["beta"][0] = -30.0
    z = np.concatenate([flow.base.sample(100, seed=0), flow.layers(theta)[0]["z0"][None] + 1e-6])
    _, logdet = flow.forward(z, theta)
    assert np.isfinite(logdet).all()
    sign, _ = np.linalg.slogdet(flow.jacobian(z, theta))
    assert np.all(sign == 1.0)


def test_identity_layers():
    """A radial layer with β̃ = α̃ has β̂ = 0, and a planar layer with w = 0 only
    translates by u·tanh(b): both have log-determinant 0."""
    radial = RadialFlow(3, 2)
    theta = radial.params.copy()
    for layer in radial.layers(theta):
        layer["beta"][0] = layer["alpha"][0]
    z = radial.base.sample(5, seed=1)
    x, ld = radial.forward(z, theta)
    np.testing.assert_array_equal(x, z)
    np.testing.assert_array_equal(ld, 0.0)
    planar = PlanarFlow(2, 1)
    theta = np.array([1.0, 2.0, 0.0, 0.0, 0.5])
    x, ld = planar.forward(z[:, :2], theta)
    np.testing.assert_allclose(x, z[:, :2] + np.tanh(0.5) * np.array([1.0, 2.0]), rtol=1e-15)
    np.testing.assert_array_equal(ld, 0.0)


@pytest.mark.parametrize("cls", FLOWS)
def test_vjp_equals_central_differences(cls):
    """L = Σ x̄·x + Σ l̄·logdet with random cotangents: ∂L/∂params and ∂L/∂z by hand
    against central differences (h = 1e-5: 1e-7 of the gradient's largest entry)."""
    flow = cls(3, 3)
    theta = _random_params(flow, 3, scale=0.7)
    rng = np.random.default_rng(4)
    z = rng.standard_normal((5, 3))
    xbar, lbar = rng.standard_normal((5, 3)), rng.standard_normal(5)

    def loss(th, zz):
        x, ld = flow.forward(zz, th)
        return np.sum(xbar * x) + lbar @ ld

    g_theta, g_z = flow.vjp(z, theta, xbar, lbar)
    fd_theta = _central(lambda th: loss(th, z), theta, 1e-5)
    fd_z = _central(lambda v: loss(theta, v.reshape(5, 3)), z.ravel(), 1e-5).reshape(5, 3)
    np.testing.assert_allclose(g_theta, fd_theta, atol=1e-7 * np.max(np.abs(fd_theta)))
    np.testing.assert_allclose(g_z, fd_z, atol=1e-7 * np.max(np.abs(fd_z)))


def _gauss_target(mean):
    return (lambda x: -0.5 * np.sum((x - mean) ** 2, axis=-1)), (lambda x: mean - x)


@pytest.mark.parametrize("cls", FLOWS)
@pytest.mark.parametrize("target", ["gauss", "U1", "U2", "U3", "U4"])
def test_elbo_gradient_equals_central_differences(cls, target):
    """The same seed gives the same base samples, so the ELBO estimate is a smooth
    function of params: its hand-written gradient against central differences,
    h = 1e-5, to 1e-6 of the gradient's largest entry."""
    dim = 2
    if target == "gauss":
        log_p, grad_log_p = _gauss_target(np.array([1.0, -0.5]))
    else:
        U, gU = ENERGIES[target]
        log_p, grad_log_p = (lambda x: -U(x)), (lambda x: -gU(x))
    flow = cls(dim, 4)
    theta = _random_params(flow, 5, scale=0.5)
    elbo, grad = flow.elbo_and_grad(theta, log_p, grad_log_p, 64, seed=11)
    fd = _central(lambda th: flow.elbo_and_grad(th, log_p, grad_log_p, 64, seed=11)[0], theta, 1e-5)
    assert np.isfinite(elbo) and grad.shape == theta.shape
    np.testing.assert_allclose(grad, fd, atol=1e-6 * np.max(np.abs(fd)))


def test_elbo_of_the_identity_flow_is_log_z_exactly():
    """Target p̃(x) = exp(-‖x‖²/2), Z = (2π)^(d/2); a radial flow with β̃ = α̃ is the
    identity, so q = p and every sample's log p̃ - log q is log Z: the ELBO equals it to
    rounding, and its gradient in z₀ vanishes (it does not move the identity)."""
    flow = RadialFlow(3, 2)
    theta = flow.params.copy()
    for layer in flow.layers(theta):
        layer["beta"][0] = layer["alpha"][0]
    log_p, grad_log_p = _gauss_target(np.zeros(3))
    elbo, grad = flow.elbo_and_grad(theta, log_p, grad_log_p, 100, seed=0)
    assert elbo == pytest.approx(1.5 * math.log(2 * math.pi), rel=1e-14)
    for g in flow.layers(grad):
        np.testing.assert_allclose(g["z0"], 0.0, atol=1e-15)


def test_sample_log_q_is_base_density_minus_dense_logdet():
    flow = PlanarFlow(3, 3)
    theta = _random_params(flow, 6)
    x, log_q = flow.sample(40, theta, seed=2)
    z = flow.base.sample(40, seed=2)
    np.testing.assert_array_equal(x, flow.forward(z, theta)[0])
    ref = flow.base.log_prob(z) - dense_logdet(flow.jacobian(z, theta))
    np.testing.assert_allclose(log_q, ref, rtol=1e-10)


# log Z of exp(-U1) by the midpoint rule on [-6, 6]² (outside it exp(-U1) < e⁻³⁰): 1.877502
# with h = 0.02 and with h = 0.01 (equal to 1e-13)
LOG_Z_U1 = 1.8775016261


def test_fitting_u1_approaches_log_z_and_drives_the_ksd_to_zero():
    """A 16-layer planar flow fitted to exp(-U1) by Adam on the ELBO (1000 iterations of
    128 fresh samples, about a second). U1's two arcs are mirror images and reverse KL
    is mode-seeking: a fit that covers one arc has KL = log 2 and one that covers both
    less, so the ELBO (4000 samples) must end within log 2 + 0.1 of log Z, from 20 below,
    and not above it (beyond 0.05: its Monte Carlo error). The IMQ KSD² of 500 samples
    must fall from above 1 to below 0.02 (the null spread at n = 500 is about 0.003)."""
    log_p, grad_log_p = (lambda x: -U1(x)), (lambda x: -grad_U1(x))
    flow = PlanarFlow(2, 16, seed=0)
    theta = flow.params.copy()
    before = symode.ksd(flow.sample(500, theta, seed=99)[0], grad_log_p)
    elbo0 = flow.elbo_and_grad(theta, log_p, grad_log_p, 4000, seed=123)[0]
    opt = Adam(theta, lr=cosine(2e-2, 1000))
    for it in range(1000):
        opt.step(-flow.elbo_and_grad(theta, log_p, grad_log_p, 128, seed=it)[1])
    elbo = flow.elbo_and_grad(theta, log_p, grad_log_p, 4000, seed=123)[0]
    after = symode.ksd(flow.sample(500, theta, seed=99)[0], grad_log_p)
    assert elbo0 < LOG_Z_U1 - 10
    assert LOG_Z_U1 - math.log(2) - 0.1 < elbo < LOG_Z_U1 + 0.05
    assert before > 1.0 and abs(after) < 0.02


# -- the energies -------------------------------------------------------------------------
def _naive(name, z):
    """Table 1 transcribed directly (log of a sum of exponentials, no log-sum-exp)."""
    z1, z2 = z[:, 0], z[:, 1]
    w1 = np.sin(2 * np.pi * z1 / 4)
    w2 = 3 * np.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
    w3 = 3 / (1 + np.exp(-(z1 - 1) / 0.3))
    if name == "U1":
        return 0.5 * ((np.linalg.norm(z, axis=1) - 2) / 0.4) ** 2 - np.log(
            np.exp(-0.5 * ((z1 - 2) / 0.6) ** 2) + np.exp(-0.5 * ((z1 + 2) / 0.6) ** 2)
        )
    if name == "U2":
        return 0.5 * ((z2 - w1) / 0.4) ** 2
    if name == "U3":
        return -np.log(
            np.exp(-0.5 * ((z2 - w1) / 0.35) ** 2) + np.exp(-0.5 * ((z2 - w1 + w2) / 0.35) ** 2)
        )
    return -np.log(
        np.exp(-0.5 * ((z2 - w1) / 0.4) ** 2) + np.exp(-0.5 * ((z2 - w1 + w3) / 0.35) ** 2)
    )


@pytest.mark.parametrize("name", ENERGIES)
def test_energies_equal_table_1_and_their_gradients_central_differences(name):
    """Values against the direct transcription to 1e-12 relative on [-4, 4]² (where the
    paper plots them: the exponentials do not underflow there); gradients against
    central differences, h = 1e-6: 1e-6 relative."""
    U, gU = ENERGIES[name]
    z = np.random.default_rng(7).uniform(-4, 4, (300, 2))
    np.testing.assert_allclose(U(z), _naive(name, z), rtol=1e-12, atol=1e-12)
    g = gU(z)
    assert g.shape == z.shape
    for i in range(0, 300, 10):
        fd = _central(U, z[i], 1e-6)
        np.testing.assert_allclose(g[i], fd, rtol=1e-6, atol=1e-6 * np.max(np.abs(fd)))
    assert np.shape(U(z[0])) == () and gU(z[0]).shape == (2,)


def test_grad_u1_at_the_origin_is_zero_not_nan():
    np.testing.assert_array_equal(grad_U1(np.zeros(2)), [0.0, 0.0])


def test_errors_name_the_argument_and_shapes():
    flow = PlanarFlow(3, 2)
    with pytest.raises(symode.ShapeError, match=r"params must be a \(14,\) array .*got \(13,\)"):
        flow.forward(np.zeros(3), np.zeros(13))
    with pytest.raises(symode.ShapeError, match=r"z must have shape \(n, 3\) or \(3,\).*\(4, 2\)"):
        flow.forward(np.zeros((4, 2)))
    with pytest.raises(symode.NonFiniteInputError, match="params contains NaN"):
        flow.forward(np.zeros(3), np.full(14, np.nan))
    with pytest.raises(ValueError, match="n_layers must be a positive int"):
        PlanarFlow(2, 0)
    with pytest.raises(symode.ShapeError, match=r"x_cotangent must have shape \(2, 3\)"):
        flow.vjp(np.zeros((2, 3)), flow.params, np.zeros((2, 2)), np.zeros(2))
    log_p, grad_log_p = _gauss_target(np.zeros(3))
    with pytest.raises(symode.ShapeError, match=r"log_target\(x\) must have shape \(8,\)"):
        flow.elbo_and_grad(flow.params, lambda x: x, grad_log_p, 8, seed=0)
    with pytest.raises(symode.NonFiniteInputError, match=r"log_target\(x\) is not finite at 8 of"):
        flow.elbo_and_grad(flow.params, lambda x: np.full(len(x), -np.inf), grad_log_p, 8)
    with pytest.raises(ValueError, match="n_samples must be a positive int"):
        flow.elbo_and_grad(flow.params, log_p, grad_log_p, 0)
    with pytest.raises(symode.ShapeError, match=r"z must have shape \(n, 2\) or \(2,\)"):
        U1(np.zeros((5, 3)))
