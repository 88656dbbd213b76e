"""symode.DiagonalGaussian against scipy.stats and finite differences; symode.ksd against
a double loop over sympy-derived kernel derivatives, the null distribution of its
U-statistic, and the closed-form population KSD² of a shifted Gaussian."""

import math

import numpy as np
import pytest
import sympy as sp
from scipy import integrate, stats
from scipy.spatial.distance import pdist

import symode
from symode.densities import median_bandwidth

# -- DiagonalGaussian ---------------------------------------------------------------------
CASES = {
    "standard-3d": dict(dim=3),
    "arrays": dict(mean=[0.5, -2.0, 3.0, 0.0], std=[0.1, 1.0, 2.5, 7.0]),
    "scalar-broadcast": dict(mean=1.5, std=0.3, dim=5),
    "mean-array-std-scalar": dict(mean=[1.0, -1.0], std=2.0),
}


def _points(p, n, seed, scale=2.0):
    """Points around the mean, out to a few standard deviations."""
    z = np.random.default_rng(seed).standard_normal((n, p.dim)) * scale
    return p.mean + p.std * z


def _term_size(p, x):
    """|normalising constant| + ½Σzᵢ²: the size of log p's terms, which can cancel to a
    log p near 0, so relative tolerances are taken against this."""
    z = (x - p.mean) / p.std
    return abs(np.sum(np.log(p.std)) + 0.5 * p.dim * math.log(2 * math.pi)) + 0.5 * np.sum(
        z * z, axis=-1
    )


@pytest.mark.parametrize("case", CASES)
def test_log_prob_equals_scipy_multivariate_normal_float64(case):
    """float64: 1e-12 of the terms' size (a few ulps of each term; scipy computes the
    same quantity by another route, an eigendecomposition of the covariance)."""
    p = symode.DiagonalGaussian(**CASES[case])
    x = _points(p, 200, 0)
    ref = stats.multivariate_normal(mean=p.mean, cov=np.diag(p.std**2)).logpdf(x)
    got = p.log_prob(x)
    assert got.dtype == np.float64 and got.shape == (200,)
    assert np.all(np.abs(got - ref) <= 1e-12 * _term_size(p, x))


def test_log_prob_one_dimensional_equals_scipy_norm():
    p = symode.DiagonalGaussian(mean=0.7, std=1.9, dim=1)
    x = np.linspace(-8.0, 8.0, 101)[:, None]
    np.testing.assert_allclose(p.log_prob(x), stats.norm(0.7, 1.9).logpdf(x[:, 0]), rtol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_log_prob_float32_in_float32_out(case):
    """float32 input computes and returns float32: 1e-5 of the terms' size (d·2⁻²⁴
    ≈ 3e-7 per term, with room for the subtraction and the sum)."""
    p = symode.DiagonalGaussian(**CASES[case])
    x = _points(p, 200, 1).astype(np.float32)
    ref = stats.multivariate_normal(mean=p.mean, cov=np.diag(p.std**2)).logpdf(x.astype(np.float64))
    got = p.log_prob(x)
    assert got.dtype == np.float32
    assert np.all(np.abs(got - ref) <= 1e-5 * _term_size(p, x.astype(np.float64)))
    s = p.score(x)
    assert s.dtype == np.float32
    np.testing.assert_allclose(s, p.score(x.astype(np.float64)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_score_equals_central_differences_of_log_prob(case):
    """log p is quadratic, so central differences have no truncation error: what is
    left is rounding, ε·|log p| / h with h = 1e-4·std, well below 1e-7 relative."""
    p = symode.DiagonalGaussian(**CASES[case])
    x = _points(p, 50, 2)
    fd = np.empty_like(x)
    for k in range(p.dim):
        h = 1e-4 * p.std[k]
        e = np.zeros(p.dim)
        e[k] = h
        fd[:, k] = (p.log_prob(x + e) - p.log_prob(x - e)) / (2 * h)
    got = p.score(x)
    assert got.shape == x.shape
    np.testing.assert_allclose(got, fd, rtol=1e-7, atol=1e-7 * np.max(np.abs(fd)))


def test_one_point_gives_a_scalar_and_integers_give_float64():
    p = symode.DiagonalGaussian(dim=2)
    lp = p.log_prob([0, 0])
    assert lp.shape == () and lp.dtype == np.float64
    assert float(lp) == pytest.approx(-math.log(2 * math.pi), rel=1e-15)
    np.testing.assert_array_equal(p.score(np.array([1, -2])), [-1.0, 2.0])


def test_sample_is_seeded_shaped_and_distributed_as_the_gaussian():
    """n = 20000: each coordinate's sample mean within 5 standard errors (std/√n) and a
    Kolmogorov–Smirnov test against scipy.stats.norm not rejected at 1e-3."""
    p = symode.DiagonalGaussian(mean=[1.0, -3.0, 0.0], std=[0.5, 2.0, 1.0])
    x = p.sample(20_000, seed=7)
    assert x.shape == (20_000, 3) and x.dtype == np.float64
    np.testing.assert_array_equal(x, p.sample(20_000, seed=7))
    assert not np.array_equal(x, p.sample(20_000, seed=8))
    assert np.all(np.abs(x.mean(0) - p.mean) < 5 * p.std / math.sqrt(len(x)))
    for k in range(3):
        assert stats.kstest(x[:, k], stats.norm(p.mean[k], p.std[k]).cdf).pvalue > 1e-3
    x32 = p.sample(10, seed=7, dtype=np.float32)
    assert x32.dtype == np.float32
    np.testing.assert_array_equal(x32, x[:10].astype(np.float32))
    assert p.sample(0).shape == (0, 3)


def test_attributes_are_read_only_and_repr():
    p = symode.DiagonalGaussian(mean=[1.0, 2.0], std=0.5)
    assert p.dim == 2
    np.testing.assert_array_equal(p.std, [0.5, 0.5])
    with pytest.raises(ValueError):
        p.mean[0] = 3.0
    assert repr(p) == "DiagonalGaussian(mean=[1.0, 2.0], std=0.5, dim=2)"


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(), symode.ShapeError, "dimension is unknown"),
        (dict(mean=0.0, std=1.0), symode.ShapeError, "pass dim"),
        (dict(mean=[0.0, 1.0], std=[1.0, 1.0, 1.0]), symode.ShapeError, "mean has 2 .* std has 3"),
        (dict(mean=[0.0, 1.0], dim=3), symode.ShapeError, "mean has 2 entries but dim is 3"),
        (dict(mean=[[0.0]]), symode.ShapeError, r"mean must be a scalar or a 1-D array.*\(1, 1\)"),
        (dict(std=[1.0, 0.0, 2.0]), ValueError, r"std must be positive; std\[1\] = 0.0"),
        (dict(std=-1.0, dim=2), ValueError, r"std\[0\] = -1.0 \(and 1 more\)"),
        (dict(std=[1.0, np.nan]), symode.NonFiniteInputError, "std contains NaN"),
        (dict(dim=0), ValueError, "dim must be a positive int"),
        (dict(mean=["a"]), TypeError, "mean must be real numbers"),
    ],
)
def test_construction_errors_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        symode.DiagonalGaussian(**kwargs)


def test_evaluation_errors_name_the_shape_expected_and_got():
    p = symode.DiagonalGaussian(dim=3)
    msg = r"x must have shape \(n, 3\) or \(3,\) for this 3-dimensional Gaussian, got \(4, 2\)"
    with pytest.raises(symode.ShapeError, match=msg):
        p.log_prob(np.zeros((4, 2)))
    with pytest.raises(symode.ShapeError, match=r"got \(2, 2, 3\)"):
        p.score(np.zeros((2, 2, 3)))
    with pytest.raises(symode.NonFiniteInputError, match="x contains NaN"):
        p.log_prob([0.0, np.inf, 0.0])
    with pytest.raises(TypeError, match="x must be a real numeric array"):
        p.log_prob(np.zeros(3, complex))
    with pytest.raises(ValueError, match="n must be a non-negative int"):
        p.sample(-1)
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        p.sample(3, dtype=np.float16)


# -- the kernelized Stein discrepancy: an independent reference ---------------------------
def _sympy_stein(d, kernel, c=1.0, beta=-0.5, ell=1.0):
    """u_p(x, y) from the definition, s(x)ᵀs(y) k + s(x)ᵀ∇_y k + ∇_x kᵀ s(y) +
    tr ∇_x∇_y k, with k's derivatives taken by SymPy (not the closed forms in
    symode.densities). Returns u(x, y, sx, sy) that broadcasts over leading axes."""
    xs, ys = sp.symbols(f"x0:{d}", real=True), sp.symbols(f"y0:{d}", real=True)
    r2 = sum((a - b) ** 2 for a, b in zip(xs, ys))
    if kernel == "imq":
        k = (sp.Float(c) ** 2 + r2) ** sp.Float(beta)
    else:
        k = sp.exp(-r2 / (2 * sp.Float(ell) ** 2))
    gx = [sp.diff(k, a) for a in xs]
    gy = [sp.diff(k, b) for b in ys]
    tr = sum(sp.diff(k, a, b) for a, b in zip(xs, ys))
    f = sp.lambdify([*xs, *ys], [k, *gx, *gy, tr], "numpy")

    def u(x, y, sx, sy):
        k, *g = f(*np.moveaxis(x, -1, 0), *np.moveaxis(y, -1, 0))
        gx, gy, tr = np.stack(g[:d], -1), np.stack(g[d : 2 * d], -1), g[2 * d]
        return np.sum(sx * sy, -1) * k + np.sum(sx * gy, -1) + np.sum(gx * sy, -1) + tr

    return u


def _double_loop_ksd(x, s, u):
    """The U-statistic as written: 1/(n(n-1)) Σ_{i≠j} u(xᵢ, xⱼ), one pair at a time."""
    n = len(x)
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                total += float(u(x[i], x[j], s[i], s[j]))
    return total / (n * (n - 1))


def _stein_matrix(x, s, u):
    """All u(xᵢ, xⱼ) at once (the same SymPy reference, broadcast), diagonal zeroed."""
    m = u(x[:, None, :], x[None, :, :], s[:, None, :], s[None, :, :])
    np.fill_diagonal(m, 0.0)
    return m


@pytest.mark.parametrize(
    "kernel, d, options",
    [
        ("imq", 1, {}),
        ("imq", 3, {}),
        ("imq", 2, dict(c=0.7, beta=-0.3)),
        ("rbf", 1, {}),
        ("rbf", 3, {}),
        ("rbf", 2, dict(bandwidth=0.8)),
    ],
)
def test_ksd_equals_a_double_loop_over_sympy_derivatives(kernel, d, options):
    """A 25-point sample from a skewed distribution scored against a standard normal
    (a clearly non-zero KSD): the numba U-statistic to 1e-12 relative of the double loop
    (a sum of 600 terms of either sign, rounded in another order)."""
    rng = np.random.default_rng(d)
    x = rng.gamma(2.0, 1.0, (25, d)) - 1.0
    p = symode.DiagonalGaussian(dim=d)
    ell = options.get("bandwidth") or (median_bandwidth(x) if kernel == "rbf" else 1.0)
    u = _sympy_stein(d, kernel, options.get("c", 1.0), options.get("beta", -0.5), ell)
    ref = _double_loop_ksd(x, p.score(x), u)
    assert abs(ref) > 1e-3
    got = symode.ksd(x, p.score, kernel, **options)
    assert got == pytest.approx(ref, rel=1e-12)
    # the score as values at the samples, and float32 samples (computed in float64)
    assert symode.ksd(x, p.score(x), kernel, **options) == got
    x32 = x.astype(np.float32)
    assert symode.ksd(x32, p.score, kernel, **options) == pytest.approx(
        symode.ksd(x32.astype(np.float64), p.score, kernel, **options), rel=1e-12
    )


N_NULL = 1000


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("seed", range(5))
def test_ksd_of_samples_from_the_target_is_within_its_null_spread(kernel, seed):
    """q = p = N(0, I₂), n = 1000. With the exact score E_y u_p(x, y) = 0 for every x,
    so the U-statistic is degenerate: mean 0 and variance exactly 2E[u²]/(n(n-1)).
    E[u²] is estimated from the sample's own pairs; |KSD²_U| must stay within 6 of
    those standard deviations (≈ 0.01 here), checked for 5 seeds and both kernels."""
    p = symode.DiagonalGaussian(dim=2)
    x = p.sample(N_NULL, seed=seed)
    ell = median_bandwidth(x)
    u = _sympy_stein(2, kernel, ell=ell)
    m = _stein_matrix(x, p.score(x), u)
    n = N_NULL
    sd = math.sqrt(2.0 * np.sum(m * m) / (n * (n - 1)) / (n * (n - 1)))
    got = symode.ksd(x, p.score, kernel)
    assert abs(got) < 6 * sd
    assert sd < 3e-3  # the threshold is meaningful: well below the shifted values below
    assert got == pytest.approx(np.sum(m) / (n * (n - 1)), rel=1e-10, abs=1e-14)


SHIFTS = (0.0, 0.25, 0.5, 1.0, 2.0)


def _population_ksd2(kernel, d, shift, ell):
    """KSD²(N(μ, I), N(0, I)) = ‖μ‖² E[k(x - y)], x - y ~ N(0, 2I): with
    s_p = s_q - μ, the terms of u_p in s_q integrate to zero (Stein's identity for q),
    and what is left is μᵀμ k. ‖x - y‖² = 2χ²_d. IMQ: a 1-D integral; RBF with a fixed ℓ:
    (1 + 2/ℓ²)^(-d/2)."""
    if kernel == "imq":
        Ek = integrate.quad(lambda t: (1 + 2 * t) ** -0.5 * stats.chi2.pdf(t, d), 0, np.inf)[0]
    else:
        Ek = (1 + 2 / ell**2) ** (-d / 2)
    return shift**2 * Ek


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("seed", range(3))
def test_ksd_grows_with_a_mean_shift_as_the_closed_form(kernel, seed):
    """Samples N(μe, I₂), e = (1, 1)/√2, scored against N(0, I₂), n = 1000, the same base
    draws for every μ in (0, ¼, ½, 1, 2). KSD²_U increases strictly with μ, and each
    value is within 5 standard deviations of the population value ‖μ‖² E[k] (the
    U-statistic is unbiased for a fixed kernel, so the RBF bandwidth is fixed here at
    the population median distance √(2·median χ²₂)). The standard deviation is
    Hoeffding's, √(4(n-2)/(n(n-1)) ζ₁ + 2/(n(n-1)) ζ₂), ζ₁ = Var E_y u, ζ₂ = Var u,
    both estimated from the sample's Stein matrix."""
    d, n = 2, N_NULL
    p = symode.DiagonalGaussian(dim=d)
    z = p.sample(n, seed=100 + seed)
    e = np.ones(d) / math.sqrt(d)
    ell = math.sqrt(2 * stats.chi2.median(d))
    u = _sympy_stein(d, kernel, ell=ell)
    options = {"bandwidth": ell} if kernel == "rbf" else {}
    values = []
    for mu in SHIFTS:
        x = z + mu * e
        got = symode.ksd(x, p.score, kernel, **options)
        m = _stein_matrix(x, p.score(x), u)
        rows = m.sum(1) / (n - 1)
        zeta1 = np.var(rows)
        zeta2 = np.sum((m - got) ** 2) / (n * (n - 1))
        sd = math.sqrt(4 * (n - 2) / (n * (n - 1)) * zeta1 + 2 / (n * (n - 1)) * zeta2)
        assert abs(got - _population_ksd2(kernel, d, mu, ell)) < 5 * sd, (mu, got, sd)
        values.append(got)
    assert np.all(np.diff(values) > 0), values
    assert values[-1] > 1.5  # μ = 2: ‖μ‖² E[k] ≈ 2.2 (IMQ), 2.3 (RBF)


def test_median_bandwidth_is_scipys_median_pairwise_distance():
    x = np.random.default_rng(3).standard_normal((300, 4))
    assert median_bandwidth(x) == pytest.approx(np.median(pdist(x)), rel=1e-14)
    big = np.random.default_rng(4).standard_normal((2500, 2))  # > 1000: every 3rd sample
    assert median_bandwidth(big) == pytest.approx(np.median(pdist(big[::3])), rel=1e-14)
    p = symode.DiagonalGaussian(dim=4)
    assert symode.ksd(x, p.score, "rbf") == symode.ksd(
        x, p.score, "rbf", bandwidth=median_bandwidth(x)
    )


def test_ksd_errors_name_the_argument_and_shapes():
    p = symode.DiagonalGaussian(dim=2)
    x = p.sample(10, seed=0)
    with pytest.raises(symode.ShapeError, match=r"samples must have shape \(n, d\) with n >= 2"):
        symode.ksd(x[:1], p.score)
    with pytest.raises(symode.ShapeError, match=r"got \(10,\)"):
        symode.ksd(x[:, 0], p.score)
    with pytest.raises(symode.ShapeError, match=r"score must have shape \(10, 2\).*got \(10, 3\)"):
        symode.ksd(x, np.zeros((10, 3)))
    with pytest.raises(symode.ShapeError, match=r"score\(samples\) .*got \(10,\)"):
        symode.ksd(x, lambda y: y[:, 0])
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(symode.NonFiniteInputError, match="samples contains NaN"):
        symode.ksd(bad, p.score)
    with pytest.raises(symode.NonFiniteInputError, match="first at sample 3"):
        symode.ksd(x, lambda y: np.where(np.isnan(bad), np.inf, -y))
    with pytest.raises(ValueError, match="unknown kernel 'gauss'"):
        symode.ksd(x, p.score, "gauss")
    with pytest.raises(ValueError, match="c must be positive"):
        symode.ksd(x, p.score, c=0.0)
    with pytest.raises(ValueError, match="beta must be negative"):
        symode.ksd(x, p.score, beta=0.5)
    with pytest.raises(ValueError, match="bandwidth must be positive"):
        symode.ksd(x, p.score, "rbf", bandwidth=-1.0)
    with pytest.raises(ValueError, match="median heuristic gives bandwidth 0"):
        symode.ksd(np.zeros((5, 2)), p.score, "rbf")
