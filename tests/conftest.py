"""Shared compiled models: numba compile time dominates the suite, so each reference
system is compiled once per session into one cache directory (reused across runs
locally; CI starts from an empty one)."""

from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import symode

CACHE = Path(__file__).resolve().parent.parent / ".symode-test-cache"

t = sp.Symbol("t")


def lotka_volterra():
    x, y = sp.symbols("x y")
    a, b, c, d = sp.symbols("a b c d")
    return symode.ODESystem(
        [a * x - b * x * y, c * x * y - d * y], states=[x, y], params=[a, b, c, d], t=t
    )


def lorenz():
    x, y, z = sp.symbols("x y z")
    s, r, b = sp.symbols("sigma rho beta")
    return symode.ODESystem(
        [s * (y - x), x * (r - z) - y, x * y - b * z], states=[x, y, z], params=[s, r, b], t=t
    )


def linear3():
    """y' = A(θ) y with A = [[θ0, θ1, 0], [-θ1, θ0, θ2], [0, -θ2, θ3]]."""
    ys = sp.symbols("y0:3")
    th = sp.symbols("th0:4")
    A = sp.Matrix([[th[0], th[1], 0], [-th[1], th[0], th[2]], [0, -th[2], th[3]]])
    return symode.ODESystem(list(A * sp.Matrix(ys)), states=list(ys), params=list(th), t=t), A


def forced_oscillator():
    """x'' + 2ζω x' + ω² x = F cos(Ω t): non-autonomous."""
    x, v = sp.symbols("x v")
    w, zeta, F, Om = sp.symbols("omega zeta F Omega")
    return symode.ODESystem(
        [v, -2 * zeta * w * v - w**2 * x + F * sp.cos(Om * t)],
        states=[x, v],
        params=[w, zeta, F, Om],
        t=t,
    )


def scalar():
    """y' = k y (decay for k < 0, blow-up tests use y' = y**2 separately)."""
    y, k = sp.symbols("y k")
    return symode.ODESystem([k * y], states=[y], params=[k], t=t)


@pytest.fixture(scope="session")
def cache_dir():
    CACHE.mkdir(exist_ok=True)
    return CACHE


@pytest.fixture(scope="session")
def lv_model(cache_dir):
    return lotka_volterra().compile(cache_dir=cache_dir)


@pytest.fixture(scope="session")
def lorenz_model(cache_dir):
    return lorenz().compile(cache_dir=cache_dir)


@pytest.fixture(scope="session")
def linear_model(cache_dir):
    system, A = linear3()
    model = system.compile(cache_dir=cache_dir)
    model.A_sym = A
    return model


@pytest.fixture(scope="session")
def oscillator_model(cache_dir):
    return forced_oscillator().compile(cache_dir=cache_dir)


@pytest.fixture(scope="session")
def scalar_model(cache_dir):
    return scalar().compile(cache_dir=cache_dir)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# -- the method matrix --------------------------------------------------------------------
# The engine compiles each Runge–Kutta method's tableau in as constants (a separate numba
# specialization per method and kind of dynamics, ~20-50 s of compile each on a cold
# cache). The default run keeps every tableau on the linear closed-form problem (orders,
# dense output) and the core methods everywhere else; the rest of the method matrix is
# marked ``full`` (``python -m pytest -m full``, run before every engine change lands).
CORE_METHODS = {"dopri5", "rk4"}
EVERY_TABLEAU = {
    "test_fixed_step_order_through_solve",
    "test_adaptive_tableau_order_on_fixed_grid",
    "test_dense_output_local_order",
    "test_embedded_solution_order",
}


# gradient tests compile four kinds of dynamics per method: dopri5 alone by default, and
# float32 gradients (every kind again in single precision) in the full run
GRADIENT_FILES = {"test_gradients.py", "test_gradient_tools.py", "test_losses.py"}
FULL_ONLY = {"test_float32_gradients", "test_neural_ode_float32_gradients_near_float64"}
# rk4 variants of gradient tests (each compiles rk4's forward and adjoint kernels for
# one more system): one system stays in the default run, the rest run with -m full
FULL_ONLY_IDS = {
    "test_modes_agree_pairwise[rk4-all]",
    # the default run checks the discrete adjoint of fixed-grid dopri5 against finite
    # differences of that solver on Lotka–Volterra (test_gradient_tools.py) and on the
    # symbolic loss (test_losses.py)
    "test_nonlinear_discrete_rk4_equals_fd_of_rk4[lotka_volterra]",
    "test_nonlinear_discrete_rk4_equals_fd_of_rk4[lorenz]",
    "test_nonlinear_discrete_rk4_equals_fd_of_rk4[oscillator]",
    # Lorenz's backsolve and forward-sensitivity kernels (≈ 45 s of compile on 2 cores):
    # the default run checks its checkpoint and discrete gradients against finite
    # differences, and every mode on Lotka–Volterra and the oscillator
    "test_nonlinear_modes_match_finite_differences[lorenz-backsolve]",
    "test_nonlinear_modes_match_finite_differences[lorenz-forward]",
    "test_nonlinear_modes_agree_pairwise[lorenz]",
    # the oscillator's forward sensitivities (≈ 25 s): the default run checks them on
    # Lotka–Volterra, the linear closed form, the random systems and the losses
    "test_nonlinear_modes_match_finite_differences[oscillator-forward]",
    # the fixed-step ensemble on Lotka–Volterra (≈ 35 s: rk4's solve and ensemble
    # kernels for one more system); test_system's batched-shapes test checks an rk4
    # ensemble against one-by-one solves bit for bit on the scalar model
    "test_batched_y0_and_params_equal_one_by_one[rk4]",
}


# The files whose first tests compile the most, in the order pytest-xdist hands them out
# (pyproject: --dist loadfile, no reordering): the two workers start on engine entries
# that do not overlap (generic gradients; forward solves, then the specialized tier)
# instead of one waiting on the other's compile lock. From empty caches on 2 cores this
# took the default run from 5 min 15 s (xdist's own order, largest file first) to
# 3 min 57 s.
FIRST_FILES = (
    "test_gradients.py",
    "test_integrate.py",
    "test_codegen.py",
    "test_tiers.py",
    "test_losses.py",
    "test_system.py",
    "test_ensemble.py",
    # then the rest of the long files, longest first (worker seconds in cold runs on
    # 2026-12-07: nn ~50, examples ~45, cache ~40, cuda ~40, cnf ~18, distributed ~15,
    # densities and stiff ~11), so that the run ends on short files on both workers
    # instead of one worker finishing a 50 s file alone (a 28 s imbalance before)
    "test_nn.py",
    "test_examples.py",
    "test_cache.py",
    "test_cuda.py",
    "test_cnf.py",
    "test_distributed.py",
    "test_densities.py",
    "test_stiff.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(FIRST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST_FILES)))  # stable
    for item in items:
        if item.originalname in FULL_ONLY or item.name in FULL_ONLY_IDS:
            item.add_marker(pytest.mark.full)
            continue
        params = getattr(getattr(item, "callspec", None), "params", {})
        method = params.get("method")
        if item.path.name in GRADIENT_FILES and method == "rk4":
            item.add_marker(pytest.mark.full)
            continue
        if not isinstance(method, str) or method in CORE_METHODS:
            continue
        if item.originalname in EVERY_TABLEAU and params.get("problem", "lin") == "lin":
            continue
        item.add_marker(pytest.mark.full)


# -- shared by the gradient test files ----------------------------------------------------------
MODES = ("checkpoint", "backsolve", "discrete", "forward")
TIGHT = {"method": "dopri5", "rtol": 1e-10, "atol": 1e-10}


def rel(a, b) -> float:
    """Norm-wise relative difference max_i |a_i - b_i| / max_i |b_i|."""
    a, b = np.ravel(a), np.ravel(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def flat(g) -> np.ndarray:
    """[dL/dy0, dL/dθ] of a Gradient, flattened."""
    return np.concatenate([np.ravel(g.y0), np.ravel(g.params)])
