"""Tests for symode.tableaus: order conditions from rooted trees, dense output, exports.

The order conditions are generated generically: all rooted trees up to order 9
(the order-8 method needs order 9 to show its order is sharp), with elementary
weights Phi(t) and densities gamma(t) as in Hairer-Norsett-Wanner I, II.2.

Rational tableaus are checked exactly with Fractions. Tsit5 and DOP853 have
irrational coefficients that are published as decimals, so their conditions
hold only up to the published digits; they are checked to a relative tolerance
(``tableau.tol``: 1e-15 for tsit5, whose interpolant has only ~17 digits, 1e-25
for dopri8) instead.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from functools import cache

import numpy as np
import pytest

from symode.tableaus import TABLEAUS, ButcherTableau, get_tableau

NAMES = ["euler", "midpoint", "heun", "rk4", "bosh3", "dopri5", "tsit5", "dopri8"]
THETAS = [Fraction(1, 5), Fraction(1, 2), Fraction(3, 4), Fraction(1)]
# A violated condition must be violated by far more than any rounding of the data.
CLEARLY_VIOLATED = Fraction(1, 10**8)

# -- rooted trees ------------------------------------------------------------------------------
# A tree is the sorted tuple of its children's subtrees; the single node is ().


def _grafts(tree: tuple) -> set[tuple]:
    """All trees obtained from ``tree`` by attaching one new leaf to one of its nodes."""
    out = {tuple(sorted((*tree, ())))}
    for i, child in enumerate(tree):
        for g in _grafts(child):
            out.add(tuple(sorted((*tree[:i], g, *tree[i + 1 :]))))
    return out


@cache
def trees_of_order(n: int) -> tuple[tuple, ...]:
    if n == 1:
        return ((),)
    new: set[tuple] = set()
    for t in trees_of_order(n - 1):
        new |= _grafts(t)
    return tuple(sorted(new))


@cache
def tree_order(t: tuple) -> int:
    return 1 + sum(tree_order(u) for u in t)


@cache
def density(t: tuple) -> int:
    return tree_order(t) * math.prod(density(u) for u in t)


def test_tree_counts_and_densities():
    # OEIS A000081: number of rooted trees with n nodes.
    assert [len(trees_of_order(n)) for n in range(1, 10)] == [1, 1, 2, 4, 9, 20, 48, 115, 286]
    # Tall tree of order n has gamma = n!, bushy tree has gamma = n.
    for n in range(1, 9):
        tall = ()
        for _ in range(n - 1):
            tall = (tall,)
        assert density(tall) == math.factorial(n)
        assert density(((),) * (n - 1)) == n
    # The 8 classical conditions of a 4th-order method.
    assert sum(len(trees_of_order(n)) for n in range(1, 5)) == 8


class ElementaryWeights:
    """Phi_i(t) for a tableau ``(A, c)``, memoised over subtrees (sparse A rows)."""

    def __init__(self, a: tuple[tuple[Fraction, ...], ...]):
        self.rows = [[(j, x) for j, x in enumerate(row) if x != 0] for row in a]
        self.s = len(a)
        self.memo: dict[tuple, tuple[Fraction, ...]] = {}
        self.amemo: dict[tuple, tuple[Fraction, ...]] = {}

    def a_phi(self, t: tuple) -> tuple[Fraction, ...]:
        """(A Phi(t))_i = sum_j a_ij Phi_j(t)."""
        if t not in self.amemo:
            phi = self.phi(t)
            self.amemo[t] = tuple(
                sum((x * phi[j] for j, x in row), Fraction(0)) for row in self.rows
            )
        return self.amemo[t]

    def phi(self, t: tuple) -> tuple[Fraction, ...]:
        if t not in self.memo:
            vec = [Fraction(1)] * self.s
            for u in t:
                au = self.a_phi(u)
                vec = [v * w for v, w in zip(vec, au, strict=True)]
            self.memo[t] = tuple(vec)
        return self.memo[t]


@cache
def weights_for(name: str) -> ElementaryWeights:
    return ElementaryWeights(TABLEAUS[name].a)


def extended_a(tab: ButcherTableau) -> tuple[tuple[Fraction, ...], ...]:
    """RK matrix over the dense-output stage vector K = [k_0 .. k_{s-1}, f1, x_0 .. x_{m-1}].

    f1 = f(t0 + h, y1) is a stage with a-row ``b`` (node 1); the extra stage x_j
    has a-row ``extra_a[j]`` (node ``extra_c[j]``), which may use f1 and x_0 .. x_{j-1}.
    """
    n = tab.stages + 1 + tab.extra_stages
    pad = (Fraction(0),) * (n - tab.stages)
    return tuple(row + pad for row in tab.a) + (tab.b + pad,) + tab.extra_a


@cache
def extended_weights_for(name: str) -> ElementaryWeights:
    """Weights of the tableau extended by f1 and the extra dense-output stages."""
    return ElementaryWeights(extended_a(TABLEAUS[name]))


def residual(weights, ew: ElementaryWeights, t: tuple, theta: Fraction = Fraction(1)):
    """Defect of sum_i w_i Phi_i(t) = theta^|t| / gamma(t), relative to 1 / gamma(t).

    At theta = 1 this is the relative defect. For theta < 1 the scale stays
    1 / gamma(t) rather than theta^|t| / gamma(t): a coefficient rounding of size
    delta perturbs the left side by about delta * theta (the interpolant has no
    theta^0 term), which would look large relative to a tiny theta^|t|.
    """
    lhs = sum((w * p for w, p in zip(weights, ew.phi(t), strict=True)), Fraction(0))
    rhs = theta ** tree_order(t) / density(t)
    return abs(lhs - rhs) * density(t)


def max_residual(weights, ew, order, theta=Fraction(1)):
    return max(residual(weights, ew, t, theta) for t in trees_of_order(order))


def assert_order(weights, ew, order, tol, label):
    """Conditions hold for all |t| <= order and some condition of order + 1 clearly fails."""
    for n in range(1, order + 1):
        worst = max_residual(weights, ew, n)
        assert worst <= tol, f"{label}: order-{n} condition violated by {float(worst):.3e}"
    assert any(residual(weights, ew, t) > CLEARLY_VIOLATED for t in trees_of_order(order + 1)), (
        f"{label}: all order-{order + 1} conditions hold, stated order {order} is not sharp"
    )


# -- order conditions --------------------------------------------------------------------------


def test_registry_keys():
    assert list(TABLEAUS) == NAMES
    for name in NAMES:
        assert get_tableau(name) is TABLEAUS[name]
        assert TABLEAUS[name].name == name


@pytest.mark.parametrize("name", NAMES)
def test_order_conditions(name):
    tab = TABLEAUS[name]
    assert_order(tab.b, weights_for(name), tab.order, tab.tol, f"{name} b")


@pytest.mark.parametrize("name", [n for n in NAMES if TABLEAUS[n].adaptive])
def test_embedded_order_conditions(name):
    tab = TABLEAUS[name]
    b_hat = tuple(x - e for x, e in zip(tab.b, tab.b_err, strict=True))
    assert b_hat == tab.b_hat
    assert_order(b_hat, weights_for(name), tab.error_order, tab.tol, f"{name} b_hat")


def test_tableau_exactness_flags():
    rational = ["euler", "midpoint", "heun", "rk4", "bosh3", "dopri5"]
    for name in rational:
        assert TABLEAUS[name].tol == 0, name
    # Decimal transcriptions: tolerant, but only to their rounding level.
    assert TABLEAUS["tsit5"].tol == Fraction(1, 10**15)
    assert TABLEAUS["dopri8"].tol == Fraction(1, 10**25)


def test_known_values_and_sign_conventions():
    # b_err = b - b_hat, with b_hat the lower-order embedded solution.
    assert TABLEAUS["dopri5"].b_err == tuple(
        Fraction(x)
        for x in ("71/57600", "0", "-71/16695", "71/1920", "-17253/339200", "22/525", "-1/40")
    )
    assert TABLEAUS["bosh3"].b_hat == (
        Fraction(7, 24),
        Fraction(1, 4),
        Fraction(1, 3),
        Fraction(1, 8),
    )
    assert TABLEAUS["tsit5"].b_hat[-1] == Fraction(1, 66)  # Tsitouras 2011: b_hat_7 = 1/66
    assert TABLEAUS["tsit5"].b[-1] == 0
    assert TABLEAUS["rk4"].b == (Fraction(1, 6), Fraction(1, 3), Fraction(1, 3), Fraction(1, 6))
    for name in NAMES:
        tab = TABLEAUS[name]
        assert tab.stages == len(tab.c)
        assert tab.adaptive == (name in {"bosh3", "dopri5", "tsit5", "dopri8"})
        assert tab.fsal == (name in {"bosh3", "dopri5", "tsit5"})
        assert tab.extra_stages == (3 if name == "dopri8" else 0)
        assert (tab.dense is None) == (name in {"euler", "midpoint", "heun", "rk4", "bosh3"})
    d8 = TABLEAUS["dopri8"]
    assert d8.stages == 12 and d8.dense_order == 7
    assert d8.extra_c == (
        Fraction(1, 10),
        Fraction(1, 5),
        Fraction("0.777777777777777777777777777778"),
    )
    assert abs(d8.extra_c[2] - Fraction(7, 9)) < d8.tol


def test_against_scipy_coefficients():
    """Independent transcription check against SciPy's float tables."""
    scipy_ivp = pytest.importorskip("scipy.integrate")
    dop853 = scipy_ivp.DOP853
    A, b, c, e, _ = TABLEAUS["dopri8"].arrays()
    np.testing.assert_allclose(A, dop853.A, rtol=1e-15, atol=1e-16)
    np.testing.assert_allclose(b, dop853.B, rtol=1e-15, atol=1e-16)
    np.testing.assert_allclose(c, dop853.C, rtol=1e-15, atol=1e-16)
    np.testing.assert_allclose(e, dop853.E5[:12], rtol=1e-15, atol=1e-16)
    assert dop853.E5[12] == 0
    # The extra dense-output stages 14-16 of DOP853, over [k_0 .. k_11, f1, x_0, x_1, x_2].
    Ax, cx = TABLEAUS["dopri8"].extra_arrays()
    np.testing.assert_allclose(Ax, dop853.A_EXTRA, rtol=1e-15, atol=1e-16)
    np.testing.assert_allclose(cx, dop853.C_EXTRA, rtol=1e-15, atol=1e-16)

    rk45 = scipy_ivp.RK45
    A, b, c, e, P = TABLEAUS["dopri5"].arrays()
    np.testing.assert_allclose(A[:6, :5], rk45.A, rtol=1e-15, atol=1e-16)
    np.testing.assert_allclose(b[:6], rk45.B, rtol=1e-15)
    np.testing.assert_allclose(e, -rk45.E, rtol=1e-15)  # SciPy stores b_hat - b
    # SciPy's P has the FSAL stage f(t0 + h, y1) as its last row, which is our stage 6.
    np.testing.assert_allclose(P[:7], rk45.P, rtol=1e-14, atol=1e-16)
    assert not P[7].any()

    rk23 = scipy_ivp.RK23
    A, b, c, e, P = TABLEAUS["bosh3"].arrays()
    np.testing.assert_allclose(e, -rk23.E, rtol=1e-15)
    np.testing.assert_allclose(P[:4], rk23.P, rtol=1e-15, atol=1e-16)  # same cubic Hermite


# -- dense output ------------------------------------------------------------------------------


def dense_weights(tab: ButcherTableau, theta: Fraction) -> tuple[Fraction, ...]:
    """b_r(theta) for the s stages, f1 and the extra stages, from the exact P matrix."""
    return tuple(
        sum((p * theta ** (k + 1) for k, p in enumerate(row)), Fraction(0))
        for row in tab.dense_matrix()
    )


@pytest.mark.parametrize("name", NAMES)
def test_dense_output_order_conditions(name):
    """sum_r b_r(theta) Phi_r(t) = theta^|t| / gamma(t) for |t| <= dense_order.

    The f1 = f(t0 + h, y1) row of P is a genuine extra stage with a-row ``b`` and
    node 1, and DOP853's extra stages x_j are stages with a-rows ``extra_a[j]``
    and nodes ``extra_c[j]``, so the conditions are evaluated on the tableau
    extended by those stages (:func:`extended_a`). This covers the methods' own
    interpolants (dopri5/tsit5: f1 row zero; dopri8: order 7 through f1 and three
    extra stages) and the cubic Hermite interpolant (which needs f1; for FSAL
    methods it is folded into the last stage, which is the same stage). The
    stated dense order must be sharp at some theta.
    """
    tab = TABLEAUS[name]
    ew = extended_weights_for(name)
    q = tab.dense_order
    sharp = False
    for theta in THETAS:
        w = dense_weights(tab, theta)
        for n in range(1, q + 1):
            for t in trees_of_order(n):
                r = residual(w, ew, t, theta)
                assert r <= tab.tol, f"{name}: theta={theta} tree order {n}: {float(r):.3e}"
        if theta != 1:
            sharp |= any(
                residual(w, ew, t, theta) > CLEARLY_VIOLATED for t in trees_of_order(q + 1)
            )
    assert sharp, f"{name}: dense order {q} is not sharp"


@pytest.mark.parametrize("name", NAMES)
def test_dense_matrix_structure(name):
    tab = TABLEAUS[name]
    P = tab.dense_matrix()
    s, m = tab.stages, tab.extra_stages
    assert len(P) == s + 1 + m
    assert len({len(row) for row in P}) == 1
    for i in range(s):
        assert abs(sum(P[i]) - tab.b[i]) <= tab.tol  # theta = 1 gives y1
    for r in range(s, s + 1 + m):
        assert sum(P[r]) == 0  # f1 and the extra stages: exactly, in every case
    # No constant term by construction; theta^1 coefficients give y'(t0) = f0 = k_0.
    assert abs(P[0][0] - 1) <= tab.tol
    assert all(abs(P[r][0]) <= tab.tol for r in range(1, s + 1 + m))
    if name == "dopri8":
        assert len(P[0]) == 7  # degree 7, using f1 and all three extra stages
        assert all(any(P[r]) for r in range(s, s + 1 + m))
    elif tab.dense is not None or tab.fsal:
        assert not any(P[s])
    else:
        assert P[s] == (0, -1, 1)  # Hermite h11 = -theta^2 + theta^3
    if tab.dense is None:
        assert len(P[0]) == 3


def test_dopri5_dense_matches_shampine_coefficients():
    # Rows of the P matrix of Shampine's interpolant as listed e.g. in SciPy's RK45.
    P = TABLEAUS["dopri5"].dense_matrix()
    F = Fraction
    assert P[0] == (
        1,
        F(-8048581381, 2820520608),
        F(8663915743, 2820520608),
        F(-12715105075, 11282082432),
    )
    assert P[1] == (0, 0, 0, 0)
    assert P[2] == (
        0,
        F(131558114200, 32700410799),
        F(-68118460800, 10900136933),
        F(87487479700, 32700410799),
    )
    assert P[6] == (0, F(40617522, 29380423), F(-110615467, 29380423), F(69997945, 29380423))


# -- numerical checks with a reference stepper built only from arrays() -------------------------


def rk_step(f, t0, y0, h, A, b, c, e, P, Ax=None, cx=None):
    """One step; returns y1, the error estimate and the dense output theta -> y.

    ``Ax, cx`` (from ``extra_arrays()``) are the extra dense-output stages, if any.
    """
    s = len(c)
    m = 0 if cx is None else len(cx)
    K = np.zeros((s + 1 + m, np.size(y0)), dtype=A.dtype)  # [k_0 .. k_{s-1}, f1, x_0 ..]
    for i in range(s):
        K[i] = f(t0 + c[i] * h, y0 + h * (A[i, :i] @ K[:i]))
    y1 = y0 + h * (b @ K[:s])
    K[s] = f(t0 + h, y1)
    for j in range(m):
        r = s + 1 + j
        assert not Ax[j, r:].any()
        K[r] = f(t0 + cx[j] * h, y0 + h * (Ax[j, :r] @ K[:r]))
    assert P.shape[0] == s + 1 + m

    def dense(theta):
        powers = theta ** np.arange(1, P.shape[1] + 1)
        return y0 + h * ((P @ powers) @ K)

    return y1, h * (e @ K[:s]), dense


def tableau_step(name, f, t0, y0, h):
    tab = TABLEAUS[name]
    return rk_step(f, t0, y0, h, *tab.arrays(), *tab.extra_arrays())


def _rhs(t, y):
    # y' = cos(t) * y, y(t) = exp(sin t); non-autonomous so the nodes c matter.
    return np.cos(t) * y


def _exact(t):
    return np.exp(np.sin(t))


def _observed_order(name, quantity, hs):
    errs = []
    for h in hs:
        y1, err, dense = tableau_step(name, _rhs, 0.3, _exact(np.array([0.3])), h)
        y1_hat = y1 - err
        value = {
            "step": abs(y1 - _exact(0.3 + h))[0],
            "embedded": abs(y1_hat - _exact(0.3 + h))[0],
            "dense": abs(dense(0.5) - _exact(0.3 + 0.5 * h))[0],
        }[quantity]
        errs.append(value)
    return math.log2(errs[0] / errs[1]), errs


@pytest.mark.parametrize(
    "name,hs",
    [
        ("euler", (0.02, 0.01)),
        ("midpoint", (0.02, 0.01)),
        ("heun", (0.02, 0.01)),
        ("rk4", (0.04, 0.02)),
        ("bosh3", (0.04, 0.02)),
        ("dopri5", (0.1, 0.05)),
        ("tsit5", (0.1, 0.05)),
        ("dopri8", (0.3, 0.15)),
    ],
)
def test_local_error_orders_numerically(name, hs):
    """Local errors scale like h^(p+1): one step, then halve h (float64 arrays only).

    The observed order may exceed p + 1 (this linear problem does not excite
    every elementary differential) but must not fall clearly below it; a slack of
    0.5 still separates order p from order p - 1.
    """
    tab = TABLEAUS[name]
    checks = [("step", tab.order), ("dense", tab.dense_order)]
    if tab.adaptive:
        checks.append(("embedded", tab.error_order))
    for quantity, p in checks:
        observed, errs = _observed_order(name, quantity, hs)
        assert observed > p + 1 - 0.5, (name, quantity, observed, errs)


@pytest.mark.parametrize("name", ["rk4", "bosh3"])
def test_hermite_reproduces_cubic(name):
    """For y' = 3 t^2 (y = t^3) an order >= 3 method is exact, and so is cubic Hermite."""

    def f(t, y):
        return np.array([3.0 * t * t])

    t0, h = 0.7, 0.9
    y1, _, dense = tableau_step(name, f, t0, np.array([t0**3]), h)
    assert y1[0] == pytest.approx((t0 + h) ** 3, rel=1e-14)
    for theta in (0.1, 0.37, 0.5, 0.81):
        assert dense(theta)[0] == pytest.approx((t0 + theta * h) ** 3, rel=1e-14)


def dense_condition(tab: ButcherTableau, theta: float) -> float:
    """sum_r sum_q |P[r, q]| theta^(q+1): the rounding amplification of the monomial form.

    The interpolant y0 + h sum_r b_r(theta) K_r, evaluated in floating point from
    P, has an error of about this times eps * h * max|K| (dopri8's P has entries
    up to ~545 of alternating sign: ~60 at theta = 0.3, ~2000 at 0.7, ~11400 at 1).
    """
    P = np.abs(tab.arrays()[4])
    return float(P.sum(axis=0) @ theta ** np.arange(1, P.shape[1] + 1))


def test_dopri8_dense_reproduces_degree_7():
    """y' = 7 (t - 1)^6 (y = (t - 1)^7): the 7th-order interpolant is exact, up to rounding."""

    def f(t, y):
        return np.array([7.0 * (t - 1.0) ** 6])

    t0, h = 0.7, 0.9
    tab = TABLEAUS["dopri8"]
    y1, _, dense = tableau_step("dopri8", f, t0, np.array([(t0 - 1) ** 7]), h)
    assert y1[0] == pytest.approx((t0 + h - 1) ** 7, rel=1e-14)
    fmax = 7.0 * max(abs(t0 - 1), abs(t0 + h - 1)) ** 6
    for theta in (0.1, 0.25, 0.37, 0.5, 0.81, 1.0):
        bound = dense_condition(tab, theta) * np.finfo(float).eps * h * fmax
        assert abs(dense(theta)[0] - (t0 + theta * h - 1) ** 7) <= bound, theta


def test_dopri8_dense_matches_scipy():
    """Same step, same stages as SciPy's DOP853 => the same 7th-order interpolant.

    SciPy evaluates Hairer's nested ``contd8`` form; here P (monomials) is used.
    The two agree exactly in exact arithmetic: evaluating our P with Fractions on
    SciPy's float stages reproduces SciPy's output to ~1e-16. In float64 our form
    loses ``dense_condition`` * eps * h * max|K| (~1e-14 at theta = 0.7).
    """
    DOP853 = pytest.importorskip("scipy.integrate").DOP853
    tab = TABLEAUS["dopri8"]
    t0, h = 0.25, 0.25  # exact binary numbers, so SciPy's h_previous is exactly h
    y0 = _exact(np.array([t0]))
    solver = DOP853(_rhs, t0, y0, 10.0, first_step=h, rtol=1e-3, atol=1e-3)
    solver.step()
    assert solver.t == t0 + h and solver.status == "running"
    scipy_dense = solver.dense_output()  # evaluates the three extra stages

    y1, _, dense = tableau_step("dopri8", _rhs, t0, y0, h)
    assert y1[0] == pytest.approx(solver.y[0], rel=2e-16)
    A, b, c, e, P = tab.arrays()
    Ax, cx = tab.extra_arrays()
    K = solver.K_extended
    assert K.shape == (16, 1)
    # Our stages, computed from our arrays, are SciPy's (same correctly rounded floats).
    K_ours = np.zeros_like(K)
    for i in range(12):
        K_ours[i] = _rhs(t0 + c[i] * h, y0 + h * (A[i, :i] @ K_ours[:i]))
    K_ours[12] = _rhs(t0 + h, y1)
    for j in range(3):
        K_ours[13 + j] = _rhs(t0 + cx[j] * h, y0 + h * (Ax[j, : 13 + j] @ K_ours[: 13 + j]))
    np.testing.assert_allclose(K_ours, K, rtol=1e-15, atol=0)

    exact_P = tab.dense_matrix()
    for theta in (0.3, 0.7):
        ref = scipy_dense(t0 + theta * h)[0]
        th = Fraction(theta)
        exact = Fraction(y0[0]) + Fraction(h) * sum(
            sum((p * th ** (q + 1) for q, p in enumerate(row)), Fraction(0)) * Fraction(K[r, 0])
            for r, row in enumerate(exact_P)
        )
        assert abs(float(exact) - ref) <= 4 * np.finfo(float).eps * abs(ref), theta
        bound = dense_condition(tab, theta) * np.finfo(float).eps * h * np.abs(K).max()
        assert abs(dense(theta)[0] - ref) <= bound, (theta, dense(theta)[0] - ref, bound)
        # and both are 7th-order accurate: far better than cubic Hermite on this step
        assert abs(ref - _exact(t0 + theta * h)) < 1e-9


# -- arrays() ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_arrays_shapes_and_values(name, dtype):
    tab = TABLEAUS[name]
    s, m = tab.stages, tab.extra_stages
    A, b, c, e, P = tab.arrays(dtype)
    Ax, cx = tab.extra_arrays(dtype)
    K = len(tab.dense_matrix()[0])
    assert A.shape == (s, s) and b.shape == (s,) and c.shape == (s,) and e.shape == (s,)
    assert P.shape == (s + 1 + m, K)
    assert Ax.shape == (m, s + 1 + m) and cx.shape == (m,)
    for arr in (A, b, c, e, P, Ax, cx):
        assert arr.dtype == np.dtype(dtype)
    assert not np.triu(A).any()
    assert not np.triu(Ax, k=s + 1).any()  # extra stage j uses K_r, r < s + 1 + j, only
    if not tab.adaptive:
        assert not e.any()
    eps = np.finfo(dtype).eps
    # P's entries reach ~545 for dopri8: the row sums carry that much more rounding.
    scale = max(1.0, float(np.abs(P).max()))
    np.testing.assert_allclose(
        P[:s].sum(axis=1, dtype=np.float64), b, rtol=0, atol=200 * eps * scale
    )
    np.testing.assert_allclose(P[s:].sum(axis=1, dtype=np.float64), 0, atol=10 * eps * scale)
    if tab.fsal or (tab.dense is not None and m == 0):
        assert not P[s].any()
    np.testing.assert_allclose(A.sum(axis=1, dtype=np.float64), c, rtol=0, atol=200 * eps)
    np.testing.assert_allclose(Ax.sum(axis=1, dtype=np.float64), cx, rtol=0, atol=200 * eps)


@pytest.mark.parametrize("name", ["dopri5", "tsit5", "dopri8"])
def test_arrays_correctly_rounded(name):
    """Every float32/float64 value is the exact coefficient rounded to nearest."""
    tab = TABLEAUS[name]
    exact = [
        [x for row in tab.a for x in row],
        list(tab.b),
        list(tab.c),
        list(tab.b_err),
        [x for row in tab.dense_matrix() for x in row],
        [x for row in tab.extra_a for x in row],
        list(tab.extra_c),
    ]
    for dtype in (np.float64, np.float32):
        arrays = (*tab.arrays(dtype), *tab.extra_arrays(dtype))
        for arr, values in zip(arrays, exact, strict=True):
            for v, x in zip(arr.ravel(), values, strict=True):
                err = abs(Fraction(float(v)) - x)
                for nb in (np.nextafter(v, dtype(np.inf)), np.nextafter(v, dtype(-np.inf))):
                    assert err <= abs(Fraction(float(nb)) - x), (name, dtype, x, v)
    A64 = tab.arrays(np.float64)[0]
    A32 = tab.arrays(np.float32)[0]
    assert np.allclose(A32, A64, rtol=1e-7, atol=0)


def test_float32_avoids_double_rounding():
    # 1 + 2^-24 + 2^-60 is just above the float32 midpoint between 1 and 1 + 2^-23,
    # but rounds to exactly that midpoint in float64; float32(float64) would give 1.
    x = 1 + Fraction(1, 2**24) + Fraction(1, 2**60)
    tab = ButcherTableau("t", (0, 1), ((0, 0), (1, 0)), (1 - x, x), None, 1, None, False, None, 1)
    _, b, _, _, _ = tab.arrays(np.float32)
    assert np.float32(float(x)) == np.float32(1.0)  # the naive conversion is wrong
    assert b[1] == np.nextafter(np.float32(1), np.float32(2))


def test_arrays_rejects_non_float_dtype():
    with pytest.raises(ValueError, match="dtype"):
        TABLEAUS["rk4"].arrays(np.int64)
    with pytest.raises(ValueError, match="dtype"):
        TABLEAUS["dopri8"].extra_arrays(np.int64)


def test_extra_arrays_without_extra_stages():
    for name in NAMES[:-1]:
        tab = TABLEAUS[name]
        assert tab.extra_c == () and tab.extra_a == ()
        Ax, cx = tab.extra_arrays(np.float32)
        assert Ax.shape == (0, tab.stages + 1) and cx.shape == (0,)
        assert Ax.dtype == cx.dtype == np.float32


def _toy_with_extra_stage(**changes):
    """Euler plus one extra stage x_0 = f(t0 + h/2, y0 + h (k_0 + f1) / 4), with the
    linear dense output y0 + h theta k_0 (zero rows for f1 and x_0): only the data
    layout matters here."""
    half = Fraction(1, 2)
    fields = dict(
        name="toy",
        c=(0,),
        a=((0,),),
        b=(1,),
        b_err=None,
        order=1,
        error_order=None,
        fsal=False,
        dense=((1, 0), (0, 0), (0, 0)),
        dense_order=1,
        extra_c=(half,),
        extra_a=((Fraction(1, 4), Fraction(1, 4)),),  # ragged: length s + 1 + j = 2
    )
    fields.update(changes)
    return ButcherTableau(**fields)


def test_hermite_with_extra_stages_ignores_them():
    """dense=None on a tableau with extra stages: cubic Hermite, zero weight for x_j."""
    d8 = TABLEAUS["dopri8"]
    herm = dataclasses.replace(d8, name="d8-hermite", dense=None, dense_order=3)
    P = herm.dense_matrix()
    assert len(P) == 16 and len(P[0]) == 3
    assert P[12] == (0, -1, 1)  # h11 on f1 (not FSAL)
    assert all(not any(row) for row in P[13:])
    assert herm.extra_arrays()[0].shape == (3, 16)


def test_extra_stage_rows_are_padded():
    toy = _toy_with_extra_stage()
    quarter = Fraction(1, 4)
    assert toy.extra_a == ((quarter, quarter, 0),)  # padded to s + 1 + m = 3
    assert toy.extra_stages == 1
    assert toy == _toy_with_extra_stage(extra_a=((quarter, quarter, 0),))
    Ax, cx = toy.extra_arrays()
    np.testing.assert_array_equal(Ax, [[0.25, 0.25, 0.0]])
    np.testing.assert_array_equal(cx, [0.5])
    assert toy.dense_matrix() == toy.dense
    assert toy.arrays()[4].shape == (3, 2)
    # The s-row dense form (f1 weight zero) is only accepted without extra stages.
    with pytest.raises(ValueError, match="shape check failed"):
        _toy_with_extra_stage(dense=((1,),))
    assert _toy_with_extra_stage(dense=((1,),), extra_c=(), extra_a=()).dense_matrix() == (
        (1,),
        (0,),
    )


# -- construction self-checks ------------------------------------------------------------------


def _with_row(rows, i, j, value):
    rows = [list(r) for r in rows]
    rows[i][j] = value
    return tuple(tuple(r) for r in rows)


def _corruptions():
    dp = TABLEAUS["dopri5"]
    rk4 = TABLEAUS["rk4"]
    bs = TABLEAUS["bosh3"]
    ts = TABLEAUS["tsit5"]
    d8 = TABLEAUS["dopri8"]
    F = Fraction
    return [
        ("row sum", dp, {"a": _with_row(dp.a, 3, 1, dp.a[3][1] + F(1, 10**9))}),
        ("row sum", dp, {"c": (0, F(1, 5), F(3, 10), F(4, 5), F(8, 9), 1, F(99, 100))}),
        ("row sum", ts, {"a": _with_row(ts.a, 4, 2, ts.a[4][2] + F(1, 10**13))}),
        ("strictly lower triangular", rk4, {"a": _with_row(rk4.a, 1, 1, F(1, 2))}),
        ("weight sum", rk4, {"b": (F(1, 6), F(1, 3), F(1, 3), F(1, 5))}),
        ("error weight sum", bs, {"b_err": (F(1, 72),) + bs.b_err[1:]}),
        ("FSAL", rk4, {"fsal": True}),
        ("FSAL", bs, {"a": bs.a[:3] + ((F(2, 9), F(4, 9), F(1, 3), 0),)}),
        ("dense output", dp, {"dense": _with_row(dp.dense, 2, 3, dp.dense[2][3] + 1)}),
        ("shape", rk4, {"b": (F(1, 2), F(1, 2))}),
        ("shape", rk4, {"a": rk4.a[:3]}),
        ("shape", dp, {"dense": dp.dense[:6]}),
        ("embedded method", dp, {"error_order": None}),
        ("order", dp, {"error_order": 5}),
        ("dense order", rk4, {"dense_order": 4}),
        ("dense order", dp, {"dense_order": 6}),
        ("dense order", d8, {"dense_order": 9}),
        # the extra dense-output stages of DOP853
        ("extra stages", d8, {"extra_a": _with_row(d8.extra_a, 0, 13, F(1, 10))}),
        ("extra stages", d8, {"extra_a": _with_row(d8.extra_a, 1, 14, F(1, 10))}),
        ("extra stages", d8, {"extra_a": _with_row(d8.extra_a, 2, 14, d8.extra_a[2][14] + 1)}),
        ("extra stages", d8, {"extra_c": (F(1, 10), F(1, 5), F(7, 10))}),
        ("shape", d8, {"extra_a": d8.extra_a[:2]}),
        ("shape", d8, {"extra_a": (d8.extra_a[0] + (0,),) + d8.extra_a[1:]}),
        ("shape", d8, {"dense": d8.dense[:12]}),
        ("shape", d8, {"dense": d8.dense[:13]}),
        ("dense output", d8, {"dense": _with_row(d8.dense, 12, 6, d8.dense[12][6] + F(1, 10**9))}),
        ("dense output", d8, {"dense": _with_row(d8.dense, 15, 0, F(1, 10**9))}),
    ]


@pytest.mark.parametrize("check,tab,changes", _corruptions())
def test_corrupted_tableau_raises(check, tab, changes):
    with pytest.raises(ValueError) as info:
        dataclasses.replace(tab, name="corrupt", **changes)
    message = str(info.value)
    assert "'corrupt'" in message
    assert f"{check} check failed" in message


def test_unmodified_copy_is_valid_and_equal():
    for tab in TABLEAUS.values():
        copy = dataclasses.replace(tab)
        assert copy == tab and hash(copy) == hash(tab)


def test_entries_are_normalised_and_floats_refused():
    half = Fraction(1, 2)
    from_strings = ButcherTableau(
        "m", ("0", "1/2"), ((0, 0), ("0.5", 0)), (0, 1), None, 2, None, False, None, 2
    )
    from_fractions = ButcherTableau(
        "m", (0, half), ((0, 0), (half, 0)), (0, 1), None, 2, None, False, None, 2
    )
    assert from_strings == from_fractions
    assert all(isinstance(x, Fraction) for x in from_strings.c + from_strings.a[1])
    with pytest.raises(TypeError, match="float"):
        ButcherTableau("f", (0, 0.5), ((0, 0), (0.5, 0)), (0, 1), None, 2, None, False, None, 2)


# -- registry ----------------------------------------------------------------------------------


def test_get_tableau_unknown_name():
    with pytest.raises(ValueError) as info:
        get_tableau("rk45")
    message = str(info.value)
    assert "'rk45'" in message
    for name in NAMES:
        assert repr(name) in message


@pytest.mark.parametrize("name", sorted(TABLEAUS))
def test_generic_engine_views_equal_numpy_slicing_of_the_packed_tableau(name):
    """The generic engine reads a packed tableau through views built in one intrinsic
    (kernels/local.py ``packed_views``): each must be numpy's slice of the packed array,
    with the same values, shape and dtype, sharing its memory."""
    from numba import njit
    from symode.kernels.integrate import M_K, M_NX, M_S, _unpack

    from symode.tableaus import packed_tableau

    views = njit(lambda m: _unpack(m))
    m = packed_tableau(name)
    s, K, nx = int(m[0, M_S]), int(m[0, M_K]), int(m[0, M_NX])
    S, r = s + 1 + nx, 4 + s
    expected = (
        m[1 : 1 + s, :s], m[1 + s, :s], m[2 + s, :s], m[3 + s, :s],
        m[r : r + S, :K], m[r + S : r + S + nx, :S], m[r + S + nx, :nx] if nx else m[0, :0],
    )  # fmt: skip
    got = views(m)
    assert len(got) == 7
    for v, w in zip(got, expected):
        assert v.shape == w.shape and v.dtype == w.dtype
        np.testing.assert_array_equal(v, w)
        assert v.size == 0 or np.shares_memory(v, m)
