"""The two tiers of one engine: generic (compiled once per machine, kernels as first-class
functions, tableaus as data) and specialized (``compile(specialize=True)``: the same
engine source with one system's kernels inlined and its sizes and tableau as
constants) give the same solutions and gradients.

Both run the same operations in the same order; only what LLVM may do with constants
differs (folding a coefficient of 1 or 0, contracting a multiply-add into an FMA), so
results agree bit for bit where those do not change rounding, and to ≤ 1e-12
relative in any case, the bound asserted here. Lotka–Volterra runs in the default
suite, Lorenz (t ≤ 2, chaotic: any rounding difference grows) with ``-m full``;
dopri5 adaptive and on a fixed grid (``dt=``), every gradient mode.
"""

import numpy as np
import pytest
from conftest import lorenz, lotka_volterra

MODES = ("checkpoint", "backsolve", "discrete", "forward")

CASES = {
    "lv": (
        lotka_volterra,
        np.array([1.0, 1.0]),
        np.array([1.5, 1.0, 3.0, 1.0]),
        np.linspace(0.0, 2.0, 21),
    ),
    "lorenz": (
        lorenz,
        np.array([1.0, 1.0, 1.0]),
        np.array([10.0, 28.0, 8.0 / 3.0]),
        np.linspace(0.0, 2.0, 21),
    ),
}
STEPS = {"adaptive": {"rtol": 1e-9, "atol": 1e-9}, "fixed": {"dt": 1e-3}}


@pytest.fixture(
    scope="module",
    params=["lv", pytest.param("lorenz", marks=pytest.mark.full)],
)
def tiers(request, cache_dir):
    build, y0, p, ts = CASES[request.param]
    system = build()
    generic = system.compile(cache_dir=cache_dir)
    special = system.compile(cache_dir=cache_dir, specialize=True)
    assert not generic.specialized and special.specialized
    return generic, special, y0, p, ts


def assert_same(a, b):
    """Equal to 1e-12 relative (of the largest magnitude), NaN nowhere."""
    a, b = np.asarray(a), np.asarray(b)
    assert np.isfinite(a).all() and np.isfinite(b).all()
    scale = max(np.abs(a).max(), np.abs(b).max(), 1e-300)
    assert np.abs(a - b).max() <= 1e-12 * scale, np.abs(a - b).max() / scale


@pytest.mark.parametrize("steps", STEPS)
def test_solve_agrees(tiers, steps):
    generic, special, y0, p, ts = tiers
    g = generic.solve(y0, ts, p, **STEPS[steps])
    s = special.solve(y0, ts, p, **STEPS[steps])
    assert g.stats == s.stats  # the same steps
    assert_same(g.y, s.y)
    # the specialized entry really is the copy next to the system
    module = special.engine.dispatcher(
        "solve_forward", special.engine.method("dopri5")
    ).py_func.__module__
    assert module.startswith("_symode_spec_") and "._entries_integrate_" in module
    assert generic.engine.dispatcher(
        "solve_forward", generic.engine.method("dopri5")
    ).py_func.__module__ == ("symode.kernels.integrate")


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("mode", MODES)
def test_gradients_agree(tiers, mode, steps):
    generic, special, y0, p, ts = tiers
    cot = np.cos(np.arange(ts.size * y0.size)).reshape(ts.size, y0.size)
    opts = {**STEPS[steps], "adjoint": mode}
    g = generic.vjp(y0, ts, p, cot, **opts)
    s = special.vjp(y0, ts, p, cot, **opts)
    assert g.stats == s.stats
    assert_same(g.params, s.params)
    assert_same(g.y0, s.y0)


@pytest.mark.full
def test_network_tiers_agree(cache_dir):
    """A learned vector field in both tiers: the MLP's generated module specialized
    (its kernels inlined into the engine's copy) solves and takes the discrete gradient
    as the generic tier does, to the same 1e-12."""
    from symode.nn import MLP

    mlp = MLP((2, 8, 2), "tanh", input_map="cube", seed=0)
    generic = mlp.compile(cache_dir=cache_dir)
    special = mlp.compile(cache_dir=cache_dir, specialize=True)
    assert special.specialized and not generic.specialized
    y0, ts = np.array([1.0, -0.5]), np.linspace(0.0, 2.0, 11)
    g = generic.solve(y0, ts, mlp.params, rtol=1e-9, atol=1e-9)
    s = special.solve(y0, ts, mlp.params, rtol=1e-9, atol=1e-9)
    assert g.stats == s.stats
    assert_same(g.y, s.y)
    cot = np.cos(np.arange(ts.size * 2)).reshape(ts.size, 2)
    gg = generic.vjp(y0, ts, mlp.params, cot, adjoint="discrete", rtol=1e-9, atol=1e-9)
    gs = special.vjp(y0, ts, mlp.params, cot, adjoint="discrete", rtol=1e-9, atol=1e-9)
    assert_same(gg.params, gs.params)
    assert_same(gg.y0, gs.y0)
