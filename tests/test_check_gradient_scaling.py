"""symode.testing.check_gradient at its defaults: no false alarm on badly scaled
problems (what a new user hit with SIR), and still catching a gradient off by 1e-4
relative in a single component. Its helpers' frames stay out of pytest tracebacks."""

import numpy as np
import pytest
import sympy as sp

import symode
from symode.testing import check_gradient

t = sp.Symbol("t")


@pytest.fixture(scope="module")
def sir(cache_dir):
    """SIR with a slow waning term ω R (ω = 1e-4: a parameter of size 1e-4)."""
    S, I, R = sp.symbols("S I R")
    beta, gamma, omega = sp.symbols("beta gamma omega")
    system = symode.ODESystem(
        [-beta * S * I + omega * R, beta * S * I - gamma * I, gamma * I - omega * R],
        states=[S, I, R],
        params=[beta, gamma, omega],
        t=t,
    )
    return system.compile(cache_dir=cache_dir)


SIR_Y0 = [0.99, 0.01, 0.0]  # a small initial value and a zero one
SIR_P = [0.3, 0.1, 1e-4]
SIR_TS = np.linspace(0.0, 160.0, 17)
SIR_COT = np.tile([0.0, 1.0, 0.5], (SIR_TS.size, 1))


@pytest.fixture(scope="module")
def scaled(cache_dir):
    """States from 1e-6 to 1e6 and a zero, params from 1e-6 to 1e6 and a zero."""
    x, y, z = sp.symbols("x y z")
    k1, k2, s, k3 = sp.symbols("k1 k2 s k3")
    system = symode.ODESystem(
        [-k1 * x, -k2 * y + s, 1e-6 * x * y - z + k3 * y],
        states=[x, y, z],
        params=[k1, k2, s, k3],
        t=t,
    )
    return system.compile(cache_dir=cache_dir)


SCALED_Y0 = [1e-6, 1e6, 0.0]
SCALED_P = [0.5, 1e-6, 1e6, 0.0]
SCALED_TS = np.linspace(0.0, 2.0, 5)
SCALED_COT = np.tile([1e6, 1e-6, 1.0], (SCALED_TS.size, 1))


class _Perturbed:
    """The model, with one component of one mode's gradient off by ``rel``."""

    def __init__(self, model, mode, index, rel):
        self.model, self.mode, self.index, self.rel = model, mode, index, rel
        self.system, self.loss = model.system, model.loss

    def solve(self, *args, **kwargs):
        return self.model.solve(*args, **kwargs)

    def vjp(self, *args, adjoint, **kwargs):
        g = self.model.vjp(*args, adjoint=adjoint, **kwargs)
        if adjoint == self.mode:
            n = g.y0.size
            target = g.y0 if self.index < n else g.params
            target[self.index % n if self.index < n else self.index - n] *= 1 + self.rel
        return g


@pytest.mark.parametrize("mode", ["checkpoint", "discrete"])
def test_sir_passes_at_the_defaults(sir, mode):
    report = check_gradient(sir, SIR_Y0, SIR_TS, SIR_P, cotangent=SIR_COT, adjoint=mode)
    assert report.passed
    # each step follows its own component: I0 = 0.01 moves by 1e-2 of itself, ω = 1e-4
    # by 1e-2 of itself, the zero R0 by 1e-2 of the largest initial value
    np.testing.assert_allclose(report.steps, 1e-2 * np.array([0.99, 0.01, 0.99, 0.3, 0.1, 1e-4]))


def test_badly_scaled_system_passes(scaled):
    report = check_gradient(scaled, SCALED_Y0, SCALED_TS, SCALED_P, cotangent=SCALED_COT)
    assert report.passed


@pytest.mark.parametrize("index", [1, 5])  # y0[I] and params[omega]
def test_sir_catches_a_gradient_off_by_1e_4(sir, index):
    wrong = _Perturbed(sir, "checkpoint", index, 1e-4)
    with pytest.raises(AssertionError, match="gradient check failed for") as err:
        check_gradient(wrong, SIR_Y0, SIR_TS, SIR_P, cotangent=SIR_COT)
    name = ["y0[S]", "y0[I]", "y0[R]", "params[beta]", "params[gamma]", "params[omega]"][index]
    assert f"failed for {name}" in str(err.value)


# y0[x] (a value of 1e-6) and params[k3] (a value of 0). Components whose gradient is
# below rel_floor (1e-3) of the largest (here y0[z]: 2.3 beside 5e6) are judged against
# that floor, as documented: finite differences cannot resolve them better.
@pytest.mark.parametrize("index", [0, 6])
def test_badly_scaled_catches_a_gradient_off_by_1e_4(scaled, index):
    wrong = _Perturbed(scaled, "checkpoint", index, 1e-4)
    with pytest.raises(AssertionError, match="gradient check failed"):
        check_gradient(wrong, SCALED_Y0, SCALED_TS, SCALED_P, cotangent=SCALED_COT)


def test_helper_frames_are_hidden_from_pytest_tracebacks():
    import symode.testing as testing

    for fn in (testing.check_gradient, testing.check_adjoint_equations):
        assert "__tracebackhide__" in fn.__code__.co_varnames
