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


@cache
def extended_weights_for(name: str) -> ElementaryWeights:
    """Weights of the tableau extended by the stage f1 = f(t0 + h, y1) (row b, node 1)."""
    tab = TABLEAUS[name]
    a = tuple(row + (Fraction(0),) for row in tab.a) + (tab.b + (Fraction(0),),)
    return ElementaryWeights(a)


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
    assert TABLEAUS["dopri8"].stages == 12


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
    """b_i(theta) for the s stages and the f1 pseudo-stage, from the exact P matrix."""
    return tuple(
        sum((p * theta ** (k + 1) for k, p in enumerate(row)), Fraction(0))
        for row in tab.dense_matrix()
    )


@pytest.mark.parametrize("name", NAMES)
def test_dense_output_order_conditions(name):
    """sum_i b_i(theta) Phi_i(t) = theta^|t| / gamma(t) for |t| <= dense_order.

    The f1 = f(t0 + h, y1) row of P is a genuine extra stage with a-row ``b`` and
    node 1, so the conditions are evaluated on the tableau extended by that
    stage. This covers both the methods' own interpolants (f1 row zero) and the
    cubic Hermite interpolant (which needs f1; for FSAL methods it is folded into
    the last stage, which is the same stage). The stated dense order must be
    sharp at some theta.
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
    s = tab.stages
    assert len(P) == s + 1
    assert len({len(row) for row in P}) == 1
    for i in range(s):
        assert abs(sum(P[i]) - tab.b[i]) <= tab.tol  # theta = 1 gives y1
    assert sum(P[s]) == 0
    # No constant term by construction; theta^1 coefficients give y'(t0) = f0 = k_0.
    assert abs(P[0][0] - 1) <= tab.tol
    assert all(abs(P[i][0]) <= tab.tol for i in range(1, s + 1))
    if tab.dense is not None or tab.fsal:
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


def rk_step(f, t0, y0, h, A, b, c, e, P):
    s = len(c)
    k = np.zeros((s, np.size(y0)), dtype=A.dtype)
    for i in range(s):
        k[i] = f(t0 + c[i] * h, y0 + h * (A[i, :i] @ k[:i]))
    y1 = y0 + h * (b @ k)
    f1 = f(t0 + h, y1)
    ks = np.vstack([k, f1[None, :]])  # s + 1 rows, the last one f1

    def dense(theta):
        powers = theta ** np.arange(1, P.shape[1] + 1)
        return y0 + h * ((P @ powers) @ ks)

    return y1, h * (e @ k), dense


def _rhs(t, y):
    # y' = cos(t) * y, y(t) = exp(sin t); non-autonomous so the nodes c matter.
    return np.cos(t) * y


def _exact(t):
    return np.exp(np.sin(t))


def _observed_order(name, quantity, hs):
    A, b, c, e, P = TABLEAUS[name].arrays()
    errs = []
    for h in hs:
        y1, err, dense = rk_step(_rhs, 0.3, _exact(np.array([0.3])), h, A, b, c, e, P)
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


@pytest.mark.parametrize("name", ["rk4", "bosh3", "dopri8"])
def test_hermite_reproduces_cubic(name):
    """For y' = 3 t^2 (y = t^3) an order >= 3 method is exact, and so is cubic Hermite."""
    A, b, c, e, P = TABLEAUS[name].arrays()

    def f(t, y):
        return np.array([3.0 * t * t])

    t0, h = 0.7, 0.9
    y1, _, dense = rk_step(f, t0, np.array([t0**3]), h, A, b, c, e, P)
    assert y1[0] == pytest.approx((t0 + h) ** 3, rel=1e-14)
    for theta in (0.1, 0.37, 0.5, 0.81):
        assert dense(theta)[0] == pytest.approx((t0 + theta * h) ** 3, rel=1e-14)


# -- arrays() ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_arrays_shapes_and_values(name, dtype):
    tab = TABLEAUS[name]
    s = tab.stages
    A, b, c, e, P = tab.arrays(dtype)
    K = len(tab.dense_matrix()[0])
    assert A.shape == (s, s) and b.shape == (s,) and c.shape == (s,) and e.shape == (s,)
    assert P.shape == (s + 1, K)
    for arr in (A, b, c, e, P):
        assert arr.dtype == np.dtype(dtype)
    assert not np.triu(A).any()
    if not tab.adaptive:
        assert not e.any()
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(P[:s].sum(axis=1, dtype=np.float64), b, rtol=0, atol=200 * eps)
    assert abs(P[s].sum(dtype=np.float64)) <= 10 * eps
    if tab.fsal or tab.dense is not None:
        assert not P[s].any()
    np.testing.assert_allclose(A.sum(axis=1, dtype=np.float64), c, rtol=0, atol=200 * eps)


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
    ]
    for dtype in (np.float64, np.float32):
        for arr, values in zip(tab.arrays(dtype), exact, strict=True):
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
