"""Errors in the user's own names (what a new user hit): the printer names the user's
symbols, an unprintable derivative blocks only the calls that need it, the derivative
of floor/ceiling is 0 almost everywhere (with a warning), non-finite constants are
refused at ODESystem(...) naming the entry."""

import warnings

import numpy as np
import pytest
import sympy as sp

import symode

TS = np.array([0.0, 0.5])


def test_unsupported_function_is_named_with_the_users_symbols(cache_dir):
    x = sp.Symbol("x")
    with pytest.raises(symode.UnsupportedFunctionError, match=r"besselj\(0, x\)"):
        symode.ODESystem([sp.besselj(0, x)], states=[x]).compile(cache_dir=cache_dir)


def test_gamma_solves_and_its_gradient_names_the_derivative(cache_dir):
    """gamma prints; its derivative polygamma does not: the solve works, a gradient
    raises naming the kernel and polygamma."""
    x, k = sp.symbols("x k")
    model = symode.ODESystem([-k * sp.gamma(x)], states=[x], params=[k]).compile(
        cache_dir=cache_dir
    )
    sol = model.solve([1.5], TS, [0.1], rtol=1e-10, atol=1e-12)
    # y' = -k Γ(y): one explicit Euler step of 1e-6 agrees to first order, and the
    # solution decreases from 1.5 (Γ(1.5) ≈ 0.886 > 0)
    assert 1.4 < sol.y[-1, 0] < 1.5
    assert "adjoint" in model.kernels.MISSING
    with pytest.raises(symode.UnsupportedFunctionError, match=r"polygamma\(0, x\)"):
        model.vjp([1.5], TS, [0.1], cotangent=np.ones((2, 1)))


def test_floor_differentiates_to_zero_with_a_warning(cache_dir):
    x, k = sp.symbols("x k")
    system = symode.ODESystem([-sp.floor(k) * x], states=[x], params=[k])
    with pytest.warns(RuntimeWarning, match="almost-everywhere value 0"):
        assert system.param_jacobian()[0, 0] == 0
    with warnings.catch_warnings():
        # generating the kernels warns again, unless they come from the cache
        warnings.simplefilter("ignore", RuntimeWarning)
        model = system.compile(cache_dir=cache_dir)
    g = model.vjp([1.0], TS, [2.5], cotangent=np.array([[0.0], [1.0]]), rtol=1e-10, atol=1e-12)
    # y = e^{-2 t}: ∂y(0.5)/∂y0 = e^{-1}; ∂/∂k = 0 (floor is flat a.e.)
    np.testing.assert_allclose(g.y0, [np.exp(-1.0)], rtol=1e-8)
    assert g.params[0] == 0.0


@pytest.mark.parametrize("bad", [sp.nan, sp.zoo, sp.oo, -sp.oo])
def test_non_finite_constants_are_refused_naming_the_entry(bad):
    x, y = sp.symbols("x y")
    with pytest.raises(symode.SystemDefinitionError, match=r"rhs\[1\].*non-finite"):
        symode.ODESystem([-x, x * bad + y], states=[x, y])
