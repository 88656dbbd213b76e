"""The public verification tools of symode/testing.py (check_gradient,
check_adjoint_equations) and a property test: random quadratic systems, every adjoint
mode agrees. Split from test_gradients.py so that pytest-xdist (one worker per file)
balances the two; tolerances as explained there."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from conftest import MODES, TIGHT, flat, t
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import symode
from symode.testing import GradientReport, check_adjoint_equations, check_gradient


# -- hypothesis: random quadratic systems ----------------------------------------------------------
def generic_quadratic():
    """y' = a + B y + quadratic terms, n = 2, every coefficient a parameter (p = 12)."""
    u, v = sp.symbols("u v")
    a = sp.symbols("a0:2")
    B = sp.symbols("b00 b01 b10 b11")
    C = sp.symbols("c0_uu c0_uv c0_vv c1_uu c1_uv c1_vv")
    mono = (u * u, u * v, v * v)
    rhs = [
        a[i] + B[2 * i] * u + B[2 * i + 1] * v + sum(C[3 * i + j] * mono[j] for j in range(3))
        for i in range(2)
    ]
    return symode.ODESystem(rhs, states=[u, v], params=[*a, *B, *C], t=t)


@pytest.fixture(scope="module")
def quad_model(cache_dir):
    model = generic_quadratic().compile(cache_dir=cache_dir)
    model.vjp([0.1, 0.2], [0.0, 0.5], np.zeros(12), np.ones((2, 2)))  # compile outside hypothesis
    return model


small = st.floats(-0.3, 0.3, allow_nan=False, allow_infinity=False)
unit = st.floats(-1.0, 1.0, allow_nan=False, allow_infinity=False)


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,  # reproducible in CI; no example database written into the checkout
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    coeffs=st.lists(small, min_size=12, max_size=12),
    y0=st.lists(unit, min_size=2, max_size=2),
    cot=st.lists(unit, min_size=8, max_size=8),
)
def test_random_quadratic_systems_all_modes_agree(quad_model, coeffs, y0, cot):
    """|coefficients| ≤ 0.3, |y0| ≤ 1, horizon 0.5: no blow-up (y' ≤ 0.3 + 0.6|y| + 0.9|y|²
    needs t > 0.7 to escape), sensitivities O(1). Every mode at tol 1e-10 agrees with
    checkpoint to 1e-7 relative (components below 1e-3 of the largest judged against that
    floor, since a random cotangent can make the gradient tiny). Tolerance 1e-12: the
    modes differ by O(tol) times the sensitivities' growth, and at 1e-10 the example
    coeffs a1 = c1_vv = 1/4 (v' = ¼ + ¼v²), y0 = 0, one cotangent at t = 0.3 put
    discrete 1.2e-6 from checkpoint against the floor (2.1e-8 at 1e-12).

    Excluded: y ≡ 0 (y0 = 0 and no constant term a). Error control then sees a zero
    state and the steps grow by facmax, so the discrete adjoint — the exact gradient of
    the steps taken — differs from the continuous one by those coarse steps' truncation
    error (7.8e-7 for u' = v' = u/4), which no tolerance bounds."""
    assume(any(y0) or any(coeffs[:2]))
    ts = np.array([0.0, 0.1, 0.3, 0.5])
    cot = np.reshape(cot, (4, 2))
    tight = {**TIGHT, "rtol": 1e-12, "atol": 1e-12}
    grads = {m: flat(quad_model.vjp(y0, ts, coeffs, cot, adjoint=m, **tight)) for m in MODES}
    ref = grads["checkpoint"]
    scale = max(np.max(np.abs(ref)), 1e-6)
    for m in MODES[1:]:
        err = np.max(np.abs(grads[m] - ref) / np.maximum(np.abs(ref), 1e-3 * scale))
        assert err <= 1e-7, f"{m} vs checkpoint: rel diff {err:.2e}"


# -- symode.testing: check_gradient ----------------------------------------------------------------
def test_check_gradient_passes_and_reports(lv_model):
    y0, th, ts = [1.0, 1.0], [1.5, 1.0, 3.0, 1.0], np.linspace(0, 5, 11)
    cot = np.random.default_rng(0).standard_normal((11, 2))
    for mode in MODES:
        report = check_gradient(lv_model, y0, ts, th, cot, adjoint=mode)
        assert isinstance(report, GradientReport) and report.passed
        assert report.max_rel_err_fd <= 1e-6 and report.max_rel_err_reference <= 1e-6
        assert report.reference_mode == ("checkpoint" if mode == "forward" else "forward")
    text = str(report)
    assert "y0[x]" in text and "params[d]" in text and "PASS" in text
    assert report.names == ["y0[x]", "y0[y]", "params[a]", "params[b]", "params[c]", "params[d]"]


def test_check_gradient_discrete_on_a_fixed_grid(lv_model):
    ts = np.linspace(0, 2, 5)
    report = check_gradient(
        lv_model, [1.0, 1.0], ts, [1.5, 1.0, 3.0, 1.0], np.ones((5, 2)),
        adjoint="discrete", method="dopri5", dt=0.01, rtol_check=1e-4,
    )  # fmt: skip
    # dopri5 on a fixed grid (its kernels are compiled already), against FD of that same
    # solver: rounding only (the forward reference differs from it by the grid's error,
    # hence rtol_check 1e-4 for the reference column)
    assert report.max_rel_err_fd <= 1e-9, str(report)


class _PerturbedModel:
    """A model whose ``mode`` gradient w.r.t. params[index] is off by a relative delta."""

    def __init__(self, model, mode, index, delta):
        self._model, self._mode, self._index, self._delta = model, mode, index, delta

    def __getattr__(self, name):
        return getattr(self._model, name)

    def vjp(self, *args, adjoint="checkpoint", **kw):
        g = self._model.vjp(*args, adjoint=adjoint, **kw)
        if adjoint == self._mode:
            g.params = g.params.copy()
            g.params[self._index] *= 1 + self._delta
        return g


@pytest.mark.parametrize("mode", ["checkpoint", "forward"])
def test_check_gradient_fails_on_a_wrong_gradient(lv_model, mode):
    fake = _PerturbedModel(lv_model, mode, index=1, delta=1e-4)
    ts = np.linspace(0, 5, 11)
    with pytest.raises(AssertionError) as exc:
        check_gradient(fake, [1.0, 1.0], ts, [1.5, 1.0, 3.0, 1.0], np.ones((11, 2)), adjoint=mode)
    msg = str(exc.value)
    assert "gradient check failed for params[b]" in msg
    (row,) = [line for line in msg.splitlines() if line.startswith("params[b]")]
    assert row.endswith("<-- FAIL")
    assert msg.count("<-- FAIL") == 1 and "FAIL (1 of 6)" in msg
    # the same perturbation passes a check loose enough for it
    report = check_gradient(
        fake, [1.0, 1.0], ts, [1.5, 1.0, 3.0, 1.0], np.ones((11, 2)), adjoint=mode,
        rtol_check=1e-3,
    )  # fmt: skip
    assert 5e-5 < report.max_rel_err_fd < 2e-4


def test_check_gradient_argument_errors(lv_model):
    ts = np.linspace(0, 1, 3)
    with pytest.raises(ValueError, match="adjoint must be one of"):
        check_gradient(lv_model, [1.0, 1.0], ts, [1.5, 1, 3, 1], np.ones((3, 2)), adjoint="x")
    with pytest.raises(ValueError, match="one trajectory"):
        check_gradient(lv_model, np.ones((2, 2)), ts, [1.5, 1, 3, 1], np.ones((3, 2)))
    with pytest.raises(ValueError, match="cotangent"):
        check_gradient(lv_model, [1.0, 1.0], ts, [1.5, 1, 3, 1])


# -- symode.testing: check_adjoint_equations -------------------------------------------------------
def lv_adjoint_by_hand(system):
    """f = (a x - b x y, c x y - d y); λ' = -(∂f/∂y)ᵀ λ, μ' = -(∂f/∂θ)ᵀ λ, by hand."""
    x, y = system.states
    a, b, c, d = system.params
    lx, ly = system.adjoint().lam
    lam = [-(lx * (a - b * y) + ly * c * y), -(-lx * b * x + ly * (c * x - d))]
    mu = [-lx * x, lx * x * y, -ly * x * y, ly * y]
    return lam, mu


def test_check_adjoint_equations_accepts_a_correct_derivation(lv_model):
    system = lv_model.system
    lam, mu = lv_adjoint_by_hand(system)
    adj = check_adjoint_equations(system, {"lam": lam, "mu": mu})
    assert adj is system.adjoint()
    check_adjoint_equations(system, [*lam, *mu])  # one sequence, λ's then μ's
    check_adjoint_equations(system, {"lam": sp.Matrix(lam), "mu": mu})


def test_check_adjoint_equations_rejects_a_wrong_derivation(lv_model):
    system = lv_model.system
    lam, mu = lv_adjoint_by_hand(system)
    lx = system.adjoint().lam[0]
    x, y = system.states
    wrong_mu = [*mu[:3], -mu[3]]  # sign error in dμ_d/dt
    with pytest.raises(AssertionError) as exc:
        check_adjoint_equations(system, {"lam": lam, "mu": wrong_mu})
    msg = str(exc.value)
    assert "1 of 6 adjoint equations differ" in msg and "dmu_d/dt" in msg
    assert "derived:" in msg and "expected:" in msg and "difference:" in msg
    assert "dlambda_x/dt" not in msg
    # two mistakes: both listed
    with pytest.raises(AssertionError, match=r"(?s)2 of 6.*dlambda_y/dt.*dmu_d/dt"):
        check_adjoint_equations(system, [lam[0], lam[1] + lx * x * y, *wrong_mu])


def test_check_adjoint_equations_hints_at_foreign_symbols(lv_model):
    system = lv_model.system
    lam, mu = lv_adjoint_by_hand(system)
    lx = system.adjoint().lam[0]
    lam_wrong = [e.subs(lx, sp.Symbol("lam_x")) for e in lam]
    with pytest.raises(AssertionError, match=r"lam_x.*system.adjoint\(\).lam"):
        check_adjoint_equations(system, {"lam": lam_wrong, "mu": mu})


def test_check_adjoint_equations_malformed_expectation(lv_model):
    system = lv_model.system
    lam, mu = lv_adjoint_by_hand(system)
    with pytest.raises(ValueError, match="6 in all"):
        check_adjoint_equations(system, [*lam, *mu[:3]])
    with pytest.raises(ValueError, match="unknown keys"):
        check_adjoint_equations(system, {"lambda": lam, "mu": mu})
    with pytest.raises(ValueError, match="'mu'"):
        check_adjoint_equations(system, {"lam": lam})
    with pytest.raises(ValueError, match="2 states"):
        check_adjoint_equations(system, {"lam": lam[:1], "mu": mu})
    with pytest.raises(ValueError, match="must be a sequence"):
        check_adjoint_equations(system, "lambda_x")
    with pytest.raises(ValueError, match="not an expression"):
        check_adjoint_equations(system, {"lam": [object(), lam[1]], "mu": mu})
