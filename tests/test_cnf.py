"""Continuous normalizing flows (symode.CNF): log-densities against closed forms and a
brute-force log|det| of the flow map, Hutchinson's estimate unbiased, NLL gradients
against central finite differences in every adjoint mode, transform ∘ inverse = id.

Tolerances: solves at rtol = atol = 1e-10, so log-densities agree with closed forms to
~1e-8; central differences with step 1e-6 of quantities accurate to ~1e-10 carry
~1e-4 absolute rounding noise over 2e-6 ... in practice 1e-7 relative, asserted 1e-5;
the brute-force determinant differentiates the solve itself (step 1e-5: O(h²) = 1e-10
truncation, ~1e-5 noise), asserted to 1e-5.
"""

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import sympy as sp

import symode
from symode.cnf import CNF, augmented_system
from symode.errors import ShapeError, UnsupportedFunctionError
from symode.nn import MLP

TIGHT = {"rtol": 1e-10, "atol": 1e-10}
t = sp.Symbol("t")
X = np.array([[0.3, -0.5], [0.7, 0.2], [-0.4, 0.45]])


def cubic_decay():
    """z_i' = -a_i z_i³: the flow map z(t) = z0 / sqrt(1 + 2 a_i t z0²) is known, so is
    the pushed-forward density."""
    z1, z2 = sp.symbols("z1 z2")
    a, b = sp.symbols("a b", positive=True)
    return symode.ODESystem([-a * z1**3, -b * z2**3], states=[z1, z2], params=[a, b], t=t)


def cubic_log_prob(x, theta, t1):
    """log p(x) for the cubic decay from a standard normal at t = 0: z0 = x / sqrt(1 - 2
    a t1 x²), |dz0/dx| = (1 - 2 a t1 x²)^(-3/2) per component."""
    r = 1.0 - 2.0 * t1 * np.asarray(theta) * x**2
    return scipy.stats.norm.logpdf(x / np.sqrt(r)).sum(-1) - 1.5 * np.log(r).sum(-1)


def linear():
    z1, z2 = sp.symbols("z1 z2")
    a = sp.symbols("a0:4")
    return symode.ODESystem(
        [a[0] * z1 + a[1] * z2, a[2] * z1 + a[3] * z2], states=[z1, z2], params=list(a), t=t
    )


@pytest.fixture(scope="module")
def net():
    """2 → 8 → 8 → 2 tanh with time input (deeper than one layer: the trace by forward
    mode) — the CNF architecture of the paper's 2-D experiments, smaller."""
    return MLP((2, 8, 8, 2), "tanh", time_input=True, seed=0)


@pytest.fixture(scope="module")
def flows(net, cache_dir):
    return {
        "exact": CNF(net, cache_dir=cache_dir, **TIGHT),
        "hutchinson": CNF(net, trace="hutchinson", cache_dir=cache_dir, **TIGHT),
    }


def test_linear_flow_is_the_closed_form(cache_dir):
    """f = A z: z(0) = e^{-A t1} x and log p(x) = log N(z(0)) - t1 tr A."""
    cnf = CNF(linear(), t1=0.8, cache_dir=cache_dir, **TIGHT)
    theta = np.array([-0.3, 0.9, -0.7, 0.2])
    A = theta.reshape(2, 2)
    z0 = X @ scipy.linalg.expm(-0.8 * A).T
    closed = scipy.stats.multivariate_normal(np.zeros(2)).logpdf(z0) - 0.8 * np.trace(A)
    np.testing.assert_allclose(cnf.log_prob(X, theta), closed, rtol=1e-8)
    np.testing.assert_allclose(cnf.inverse(X, theta), z0, rtol=1e-8, atol=1e-10)


def test_nonlinear_flow_is_the_closed_form(cache_dir):
    cnf = CNF(cubic_decay(), t1=0.5, cache_dir=cache_dir, **TIGHT)
    theta = np.array([1.0, 0.5])
    np.testing.assert_allclose(cnf.log_prob(X, theta), cubic_log_prob(X, theta, 0.5), rtol=1e-8)


def _brute_force_log_prob(cnf, x, params):
    """log p_base(z(0)) + log|det ∂z(0)/∂x|, the Jacobian by central differences of the
    inverse solve (no trace involved)."""
    out = []
    for xi in x:
        J = np.empty((2, 2))
        for j in range(2):
            e = np.zeros(2)
            e[j] = 1e-5
            J[:, j] = (cnf.inverse([xi + e], params)[0] - cnf.inverse([xi - e], params)[0]) / 2e-5
        z0 = cnf.inverse([xi], params)[0]
        out.append(scipy.stats.norm.logpdf(z0).sum() + np.linalg.slogdet(J)[1])
    return np.array(out)


def test_network_flow_matches_the_brute_force_determinant(flows, net):
    cnf = flows["exact"]
    np.testing.assert_allclose(
        cnf.log_prob(X), _brute_force_log_prob(cnf, X, net.params), rtol=1e-5
    )


def test_hutchinson_is_unbiased(flows):
    """Each probe's log p is an unbiased estimate of the exact one: over 2000 Rademacher
    probes per point the mean is within 4 standard errors of the exact log p (a false
    alarm has probability ~6e-5 per point)."""
    exact = flows["exact"].log_prob(X)
    reps = 2000
    xs = np.repeat(X, reps, axis=0)
    est = flows["hutchinson"].log_prob(xs, seed=7).reshape(len(X), reps)
    se = est.std(axis=1, ddof=1) / np.sqrt(reps)
    assert (se > 0).all()  # the estimator does vary
    assert (np.abs(est.mean(axis=1) - exact) <= 4 * se).all(), (est.mean(axis=1), exact, se)


def _fd_nll(cnf, x, params, i, eps=None, h=1e-6):
    e = np.zeros_like(params)
    e[i] = h
    return (
        -cnf.log_prob(x, params + e, eps=eps).mean() + cnf.log_prob(x, params - e, eps=eps).mean()
    ) / (2 * h)


@pytest.mark.parametrize("mode", ["checkpoint", "backsolve", "discrete"])
@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_network_nll_gradient_matches_finite_differences(flows, net, trace, mode):
    """Exact trace, and Hutchinson with the probes held fixed (the same ε in the
    differences): the NLL's gradient in every adjoint mode."""
    cnf = flows[trace]
    eps = np.array([[1.0, -1.0], [-1.0, -1.0], [1.0, 1.0]]) if trace == "hutchinson" else None
    value, grad = cnf.nll_and_grad(X, eps=eps, adjoint=mode)
    assert value == pytest.approx(-cnf.log_prob(X, eps=eps).mean(), rel=1e-12)
    for i in np.random.default_rng(2).choice(net.n_params, 6, replace=False):
        fd = _fd_nll(cnf, X, net.params, i, eps)
        assert grad[i] == pytest.approx(fd, rel=1e-5, abs=1e-8), (i, grad[i], fd)


@pytest.mark.parametrize("mode", ["checkpoint", "backsolve", "discrete", "forward"])
def test_symbolic_nll_gradient_matches_the_closed_form(cache_dir, mode):
    """SymPy derives the trace and its gradients: the NLL's gradient in every mode
    against central differences of the closed-form log-density."""
    cnf = CNF(cubic_decay(), t1=0.5, cache_dir=cache_dir, **TIGHT)
    theta = np.array([1.0, 0.5])
    value, grad = cnf.nll_and_grad(X, theta, adjoint=mode)
    assert value == pytest.approx(-cubic_log_prob(X, theta, 0.5).mean(), rel=1e-8)
    for i in range(2):
        e = np.eye(2)[i] * 1e-6
        fd = -cubic_log_prob(X, theta + e, 0.5).mean() + cubic_log_prob(X, theta - e, 0.5).mean()
        np.testing.assert_allclose(grad[i], fd / 2e-6, rtol=1e-6)


def test_symbolic_hutchinson_system_holds_the_probes_as_params():
    aug = augmented_system(cubic_decay(), "hutchinson")
    assert aug.n_states == 3 and aug.n_params == 4
    z1, z2, _ = aug.states
    e0, e1 = aug.params[2:]
    a, b = aug.params[:2]
    # εᵀJε for the diagonal Jacobian diag(-3a z1², -3b z2²)
    assert sp.simplify(aug.rhs[2] - (3 * a * z1**2 * e0**2 + 3 * b * z2**2 * e1**2)) == 0


def test_transform_then_inverse_is_the_identity(flows):
    cnf = flows["exact"]
    z = np.random.default_rng(0).standard_normal((5, 2))
    x, logp = cnf.transform(z, return_log_prob=True)
    np.testing.assert_allclose(cnf.inverse(x), z, rtol=1e-8, atol=1e-9)
    # the forward solve's log-density is the one log_prob computes backwards
    np.testing.assert_allclose(logp, cnf.log_prob(x), rtol=1e-8)
    s = cnf.sample(4, seed=1)
    assert s.shape == (4, 2) and np.isfinite(s).all()
    np.testing.assert_array_equal(s, cnf.sample(4, seed=1))


def test_errors_name_the_argument(flows, net, cache_dir):
    cnf = flows["exact"]
    with pytest.raises(ShapeError, match=r"x must have shape \(B, 2\)"):
        cnf.log_prob(np.zeros(2))
    with pytest.raises(ShapeError, match="params must have shape"):
        cnf.log_prob(X, np.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        cnf.log_prob(np.array([[np.nan, 0.0]]))
    with pytest.raises(ShapeError, match="eps must have shape"):
        flows["hutchinson"].log_prob(X, eps=np.ones((2, 2)))
    with pytest.raises(ValueError, match="trace must be one of"):
        CNF(net, trace="stochastic")
    with pytest.raises(UnsupportedFunctionError, match="no 'jvp' kernel"):
        cnf.nll_and_grad(X, adjoint="forward")
    with pytest.raises(ValueError, match="parameter values are required"):
        CNF(cubic_decay(), cache_dir=cache_dir).log_prob(X)


class _StandardNormal:
    """A base known only by its methods (not a DiagonalGaussian): nll_and_grad takes the
    two-pass route (a solve, then the adjoint with the cotangent from the score)."""

    def log_prob(self, z):
        return scipy.stats.norm.logpdf(z).sum(-1)

    def score(self, z):
        return -z

    def sample(self, n, seed=None):
        return np.random.default_rng(seed).standard_normal((n, 2))


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_one_pass_and_two_pass_nll_agree(flows, net, cache_dir, trace):
    """With a DiagonalGaussian base the NLL is a compiled loss (one pass); any other base
    goes through a solve and a cotangent: the same value and gradient (1e-9: the two
    adjoints take the same steps but sum the cost's contributions differently)."""
    eps = np.array([[1.0, -1.0], [-1.0, -1.0], [1.0, 1.0]]) if trace == "hutchinson" else None
    other = CNF(net, base=_StandardNormal(), trace=trace, cache_dir=cache_dir, **TIGHT)
    assert other.model.loss is None and flows[trace].model.loss is not None
    for mode in ("checkpoint", "discrete"):
        v1, g1 = flows[trace].nll_and_grad(X, eps=eps, adjoint=mode)
        v2, g2 = other.nll_and_grad(X, eps=eps, adjoint=mode)
        assert v1 == pytest.approx(v2, rel=1e-10)
        np.testing.assert_allclose(g1, g2, rtol=1e-9, atol=1e-12 * np.abs(g2).max())
