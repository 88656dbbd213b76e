"""Tests for symode.system: exact derivations, input forms, validation, and basic solves.

Every derivation is compared with a derivation written out by hand in this file
(never with another call into sympy.diff), equality meaning ``simplify(a - b) == 0``
for every entry. The basic solves compare the RK4 and DOPRI5 engines with closed forms
on the shared session models of conftest.py (compiled once per session).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import sympy as sp
from conftest import forced_oscillator, linear3, lorenz, lotka_volterra, scalar

import symode
from symode import (
    DuplicateSymbolError,
    InvalidStateError,
    NonFiniteInputError,
    ShapeError,
    SymodeError,
    SystemDefinitionError,
    UndeclaredSymbolError,
)

t = sp.Symbol("t")


def assert_sym_equal(actual, expected):
    """Exact equality: ``simplify(a - b) == 0`` entry by entry (shapes must agree)."""
    # an unevaluated Derivative is never a derivation (and simplify() could evaluate it away)
    assert not sp.sympify(actual).has(sp.Derivative), f"unevaluated derivative in {actual}"
    if isinstance(expected, sp.MatrixBase) or isinstance(actual, sp.MatrixBase):
        assert isinstance(actual, sp.MatrixBase), f"expected a Matrix, got {actual!r}"
        expected = sp.Matrix(expected)
        assert actual.shape == expected.shape, (actual.shape, expected.shape)
        for i in range(expected.rows):
            for j in range(expected.cols):
                diff = sp.simplify(actual[i, j] - expected[i, j])
                assert diff == 0, f"entry ({i}, {j}): {actual[i, j]} != {expected[i, j]}"
    else:
        diff = sp.simplify(actual - expected)
        assert diff == 0, f"{actual} != {expected}"


# -- hand derivations ----------------------------------------------------------------------------
# Each case: the system and its derivatives written out by hand. Keys: J = ∂f/∂y (n×n),
# Jp = ∂f/∂θ (n×p), ft = ∂f/∂t, div = tr J, gy/gp = ∂div/∂y, ∂div/∂θ.


def _case_linear():
    system, A = linear3()
    y0, y1, y2 = system.states
    return system, {
        "J": A,
        "Jp": [[y0, y1, 0, 0], [y1, -y0, y2, 0], [0, 0, -y1, y2]],
        "ft": [0, 0, 0],
        "div": 2 * sp.Symbol("th0") + sp.Symbol("th3"),
        "gy": [0, 0, 0],
        "gp": [2, 0, 0, 1],
    }


def _case_lotka_volterra():
    system = lotka_volterra()
    x, y = system.states
    a, b, c, d = system.params
    return system, {
        "J": [[a - b * y, -b * x], [c * y, c * x - d]],
        "Jp": [[x, -x * y, 0, 0], [0, 0, x * y, -y]],
        "ft": [0, 0],
        "div": a - b * y + c * x - d,
        "gy": [c, -b],
        "gp": [1, -y, x, -1],
    }


def _case_lorenz():
    system = lorenz()
    x, y, z = system.states
    s, r, b = system.params
    return system, {
        "J": [[-s, s, 0], [r - z, -1, -x], [y, x, -b]],
        "Jp": [[y - x, 0, 0], [0, x, 0], [0, 0, -z]],
        "ft": [0, 0, 0],
        "div": -s - 1 - b,
        "gy": [0, 0, 0],
        "gp": [-1, 0, -1],
    }


def _case_forced_oscillator():
    system = forced_oscillator()
    x, v = system.states
    w, zeta, F, Om = system.params
    return system, {
        "J": [[0, 1], [-(w**2), -2 * zeta * w]],
        "Jp": [
            [0, 0, 0, 0],
            [-2 * zeta * v - 2 * w * x, -2 * w * v, sp.cos(Om * t), -F * t * sp.sin(Om * t)],
        ],
        "ft": [0, -F * Om * sp.sin(Om * t)],
        "div": -2 * zeta * w,
        "gy": [0, 0],
        "gp": [-2 * zeta, -2 * w, 0, 0],
    }


def piecewise_system():
    """A non-autonomous system with Piecewise branches in y and in θ."""
    x, y = sp.symbols("x y")
    a, b = sp.symbols("a b")
    f = [
        sp.Piecewise((a * x**2, x < 1), (b * sp.sin(x), True)) + y,
        sp.Piecewise((x * y, y > 0), (-y * t, True)),
    ]
    return symode.ODESystem(f, states=[x, y], params=[a, b], t=t)


def _case_piecewise():
    system = piecewise_system()
    x, y = system.states
    a, b = system.params
    j00 = sp.Piecewise((2 * a * x, x < 1), (b * sp.cos(x), True))
    j11 = sp.Piecewise((x, y > 0), (-t, True))
    return system, {
        "J": [[j00, 1], [sp.Piecewise((y, y > 0), (0, True)), j11]],
        "Jp": [
            [sp.Piecewise((x**2, x < 1), (0, True)), sp.Piecewise((0, x < 1), (sp.sin(x), True))],
            [0, 0],
        ],
        "ft": [0, sp.Piecewise((0, y > 0), (-y, True))],
        "div": j00 + j11,
        "gy": [
            sp.Piecewise((2 * a, x < 1), (-b * sp.sin(x), True))
            + sp.Piecewise((1, y > 0), (0, True)),
            0,
        ],
        "gp": [
            sp.Piecewise((2 * x, x < 1), (0, True)),
            sp.Piecewise((0, x < 1), (sp.cos(x), True)),
        ],
    }


CASES = {
    "linear": _case_linear,
    "lotka_volterra": _case_lotka_volterra,
    "lorenz": _case_lorenz,
    "forced_oscillator": _case_forced_oscillator,
    "piecewise": _case_piecewise,
}


@pytest.fixture(params=sorted(CASES), scope="module")
def case(request):
    return CASES[request.param]()


def test_jacobian_matches_hand_derivation(case):
    system, hand = case
    assert_sym_equal(system.jacobian(), sp.Matrix(hand["J"]))


def test_param_jacobian_matches_hand_derivation(case):
    system, hand = case
    assert_sym_equal(system.param_jacobian(), sp.Matrix(hand["Jp"]))


def test_time_derivative_matches_hand_derivation(case):
    system, hand = case
    assert_sym_equal(system.time_derivative(), sp.Matrix(hand["ft"]))
    assert system.autonomous == all(sp.sympify(e) == 0 for e in hand["ft"])


def test_divergence_matches_hand_derivation(case):
    system, hand = case
    assert_sym_equal(system.divergence(), hand["div"])


def test_divergence_gradient_matches_hand_derivation(case):
    system, hand = case
    gy, gp = system.divergence_gradient()
    assert_sym_equal(gy, sp.Matrix(hand["gy"]))
    assert_sym_equal(gp, sp.Matrix(hand["gp"]))


def test_adjoint_matches_hand_derivation(case):
    """lam_rhs = -(∂f/∂y)ᵀ λ and mu_rhs = -(∂f/∂θ)ᵀ λ (Chen et al. 2018, eq. 4)."""
    system, hand = case
    adj = system.adjoint()
    assert len(adj.lam) == system.n_states and len(adj.mu) == system.n_params
    lam = sp.Matrix(adj.lam)
    assert_sym_equal(adj.lam_rhs, -sp.Matrix(hand["J"]).T * lam)
    assert_sym_equal(adj.mu_rhs, -sp.Matrix(hand["Jp"]).T * lam)
    # the multipliers are fresh symbols: none is a state, a parameter or t
    declared = set(system.states) | set(system.params) | {system.t}
    assert not (set(adj.lam) | set(adj.mu)) & declared
    assert len(set(adj.lam) | set(adj.mu)) == system.n_states + system.n_params
    # printable: one "d<name>/dt = ..." line per equation
    assert len(str(adj).splitlines()) == system.n_states + system.n_params


def test_sensitivity_matches_hand_derivation(case):
    """S' = (∂f/∂y) S + ∂f/∂θ with S = ∂y/∂θ an n × p matrix of fresh symbols."""
    system, hand = case
    sens = system.sensitivity()
    S = sens.S
    assert S.shape == (system.n_states, system.n_params)
    assert_sym_equal(sens.rhs, sp.Matrix(hand["J"]) * S + sp.Matrix(hand["Jp"]))
    assert len(set(S)) == S.rows * S.cols
    assert not set(S) & (set(system.states) | set(system.params) | {system.t})


def test_sensitivity_symbols_are_distinct_for_ambiguous_names():
    x, x_a = sp.symbols("x x_a")
    a_b, b = sp.symbols("a_b b")
    system = symode.ODESystem([a_b * x, b * x_a], states=[x, x_a], params=[a_b, b])
    S = system.sensitivity().S
    assert len(set(S)) == 4, f"S has repeated symbols: {S}"
    # and with the hand formula the (x_a, b) entry depends on S[1, 1] only
    assert_sym_equal(system.sensitivity().rhs[1, 1], b * S[1, 1] + x_a)


def test_adjoint_symbols_distinct_for_states_with_equal_names():
    x1 = sp.Symbol("x")
    x2 = sp.Symbol("x", positive=True)
    k = sp.Symbol("k")
    system = symode.ODESystem([-k * x1, x1 - x2], states=[x1, x2], params=[k])
    adj = system.adjoint()
    assert len(set(adj.lam)) == 2
    lam = sp.Matrix(adj.lam)
    J = sp.Matrix([[-k, 0], [1, -1]])
    assert_sym_equal(adj.lam_rhs, -J.T * lam)


def test_derivations_are_cached_and_dense_jacobian_shapes():
    system = lorenz()
    assert system.jacobian() is system.jacobian()
    assert system.adjoint() is system.adjoint()
    assert system.n_states == 3 and system.n_params == 3
    assert system.param_jacobian().shape == (3, 3)


def test_system_without_params_has_empty_param_derivations():
    x = sp.Symbol("x")
    system = symode.ODESystem([-(x**3)], states=[x])
    assert system.param_jacobian().shape == (1, 0)
    # empty θ-vectors (sympy builds Matrix([]) as 0 × 0, so only the length is pinned)
    assert len(system.divergence_gradient()[1]) == 0
    assert len(system.adjoint().mu_rhs) == 0 and system.adjoint().mu == ()
    assert system.sensitivity().rhs.shape == (1, 0)
    assert_sym_equal(system.jacobian(), sp.Matrix([[-3 * x**2]]))


# -- Heaviside: the jacobian's DiracDelta is dropped, loudly ------------------------------------


def test_heaviside_jacobian_drops_dirac_delta_with_warning():
    h, k = sp.symbols("h_heavi k_heavi")
    system = symode.ODESystem([k * sp.Heaviside(h - 1) - h], states=[h], params=[k])
    with pytest.warns(RuntimeWarning, match="DiracDelta"):
        J = system.jacobian()
    assert J == sp.Matrix([[-1]])
    # ∂f/∂θ has no delta: no warning there, Heaviside kept
    assert_sym_equal(system.param_jacobian(), sp.Matrix([[sp.Heaviside(h - 1)]]))


# -- the Eq(Derivative(x(t), t), rhs) input form -------------------------------------------------


def _lv_functions():
    X, Y = sp.Function("x"), sp.Function("y")
    a, b, c, d = sp.symbols("a b c d")
    rhs = [a * X(t) - b * X(t) * Y(t), c * X(t) * Y(t) - d * Y(t)]
    eqs = [sp.Eq(sp.Derivative(X(t), t), rhs[0]), sp.Eq(Y(t).diff(t), rhs[1])]
    return X(t), Y(t), (a, b, c, d), rhs, eqs


def _all_derivations(system):
    """Every derivation but ∂f/∂t (Eq-form ∂f/∂t has its own test below)."""
    adj = system.adjoint()
    gy, gp = system.divergence_gradient()
    return {
        "jacobian": system.jacobian(),
        "param_jacobian": system.param_jacobian(),
        "divergence": system.divergence(),
        "gy": gy,
        "gp": gp,
        "lam_rhs": adj.lam_rhs,
        "mu_rhs": adj.mu_rhs,
        "lam": sp.Matrix(adj.lam),
        "mu": sp.Matrix(adj.mu),
        "S": system.sensitivity().S,
        "sens": system.sensitivity().rhs,
    }


def test_equation_form_infers_states_and_time():
    x, y, params, rhs, eqs = _lv_functions()
    system = symode.ODESystem(eqs, params=params)
    assert system.states == (x, y)
    assert system.t == t
    assert system.rhs == sp.Matrix(rhs)


def test_equation_form_derivations_identical_to_plain_form():
    x, y, params, rhs, eqs = _lv_functions()
    from_eqs = _all_derivations(symode.ODESystem(eqs, params=params))
    plain = _all_derivations(symode.ODESystem(rhs, states=[x, y], params=params, t=t))
    assert from_eqs.keys() == plain.keys()
    for key in plain:
        assert from_eqs[key] == plain[key], key
    # and the same as the Symbol-state system after x(t) -> x, y(t) -> y
    xs, ys = sp.symbols("x y")
    symbolic = _all_derivations(lotka_volterra())
    back = {x: xs, y: ys}
    for key in symbolic:
        assert_sym_equal(sp.sympify(from_eqs[key]).xreplace(back), symbolic[key])


def test_equation_form_with_reordered_states():
    x, y, params, rhs, eqs = _lv_functions()
    system = symode.ODESystem(eqs, states=[y, x], params=params)
    assert system.states == (y, x)
    assert system.rhs == sp.Matrix([rhs[1], rhs[0]])
    reference = symode.ODESystem([rhs[1], rhs[0]], states=[y, x], params=params, t=t)
    for key, value in _all_derivations(reference).items():
        assert _all_derivations(system)[key] == value, key
    a, b, c, d = params
    assert_sym_equal(system.jacobian(), sp.Matrix([[c * x - d, c * y], [-b * x, a - b * y]]))


def _oscillator_equations():
    X, V = sp.Function("x"), sp.Function("v")
    w, zeta, F, Om = sp.symbols("omega zeta F Omega")
    x, v = X(t), V(t)
    eqs = [
        sp.Eq(x.diff(t), v),
        sp.Eq(v.diff(t), -2 * zeta * w * v - w**2 * x + F * sp.cos(Om * t)),
    ]
    return symode.ODESystem(eqs, params=[w, zeta, F, Om]), (x, v), (w, zeta, F, Om)


def test_equation_form_non_autonomous():
    system, (x, v), _ = _oscillator_equations()
    assert system.t == t
    assert t in system.rhs[1].free_symbols
    xs, vs = sp.symbols("x v")
    back = {x: xs, v: vs}
    reference = _all_derivations(forced_oscillator())
    for key, value in _all_derivations(system).items():
        assert_sym_equal(sp.sympify(value).xreplace(back), reference[key])


def test_equation_form_time_derivative_is_partial():
    system, _, (w, zeta, F, Om) = _oscillator_equations()
    assert_sym_equal(system.time_derivative(), sp.Matrix([0, -F * Om * sp.sin(Om * t)]))
    x, y, params, rhs, eqs = _lv_functions()
    lv = symode.ODESystem(eqs, params=params)
    assert lv.autonomous
    assert lv.time_derivative() == sp.zeros(2, 1)


def test_plain_form_non_autonomous_rhs():
    u, k = sp.symbols("u k")
    system = symode.ODESystem([-k * u + sp.exp(-t)], states=[u], params=[k], t=t)
    assert not system.autonomous
    assert_sym_equal(system.time_derivative(), sp.Matrix([-sp.exp(-t)]))


def test_equation_form_errors():
    X, Y = sp.Function("x"), sp.Function("y")
    s = sp.Symbol("s")
    with pytest.raises(SystemDefinitionError, match="Eq"):
        symode.ODESystem([sp.Eq(X(t).diff(t, 2), X(t))])
    with pytest.raises(SystemDefinitionError, match="mixes"):
        symode.ODESystem([sp.Eq(X(t).diff(t), X(t)), X(t)], states=[X(t), Y(t)], t=t)
    with pytest.raises(SystemDefinitionError, match="differentiates"):
        symode.ODESystem([sp.Eq(X(t).diff(t), X(t)), sp.Eq(Y(s).diff(s), Y(s))])
    with pytest.raises(SystemDefinitionError, match="no equation"):
        symode.ODESystem([sp.Eq(X(t).diff(t), X(t))], states=[Y(t)])


# -- validation errors ---------------------------------------------------------------------------


def test_undeclared_symbol_is_named():
    x, k, mystery = sp.symbols("x k mystery")
    with pytest.raises(UndeclaredSymbolError, match="mystery") as info:
        symode.ODESystem([-k * x + mystery], states=[x], params=[k], t=t)
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, SymodeError)
    assert isinstance(err, SystemDefinitionError)
    assert "k" not in str(err).split("symbol(s)")[1].split(":")[0]


def test_undeclared_time_symbol_hints_at_t():
    x = sp.Symbol("x")
    with pytest.raises(UndeclaredSymbolError, match=r"symbol\(s\) t\b.*pass t="):
        symode.ODESystem([sp.sin(t) * x], states=[x])


@pytest.mark.parametrize(
    "bad_state",
    [
        sp.Symbol("x") ** 2,
        sp.Integer(1),
        sp.Function("f")(sp.Symbol("s")),  # a function of something other than t
        sp.Function("f")(t, sp.Symbol("s")),
        sp.sin(t),
    ],
    ids=["power", "number", "function_of_s", "function_of_two", "defined_function"],
)
def test_invalid_state_is_type_error(bad_state):
    with pytest.raises(InvalidStateError, match="state") as info:
        symode.ODESystem([sp.Integer(0)], states=[bad_state], t=t)
    assert isinstance(info.value, TypeError) and isinstance(info.value, SymodeError)


def test_invalid_param_is_type_error():
    x, k = sp.symbols("x k")
    with pytest.raises(InvalidStateError, match="parameter"):
        symode.ODESystem([-x], states=[x], params=[k**2])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rhs": "x"},
        {"rhs": ["-x"]},
        {"rhs": [sp.true]},
        {"rhs": [True]},
        {"states": ["x"], "rhs": [sp.Integer(1)]},
        {"params": ["k"]},
        {"t": "t"},
    ],
    ids=["rhs_str", "rhs_item_str", "rhs_boolean", "rhs_bool", "state_str", "param_str", "t_str"],
)
def test_non_sympy_input_is_invalid_state_error(kwargs):
    x = sp.Symbol("x")
    args = {"rhs": [-x], "states": [x], "params": (), "t": None} | kwargs
    with pytest.raises(InvalidStateError) as info:
        symode.ODESystem(args["rhs"], states=args["states"], params=args["params"], t=args["t"])
    assert isinstance(info.value, TypeError)


def test_numbers_are_accepted_as_rhs():
    x, y = sp.symbols("x y")
    system = symode.ODESystem([1, 2.5], states=[x, y])
    assert system.rhs == sp.Matrix([1, 2.5])


@pytest.mark.parametrize(
    "states, params, time, match",
    [
        ("xx", "", t, "state x is declared twice"),
        ("x", "kk", t, "parameter k is declared twice"),
        ("x", "x", t, "both as state and parameter"),
        ("x", "k", sp.Symbol("x"), "time symbol x"),
        ("x", "t", t, "time symbol t"),
    ],
)
def test_duplicate_symbols(states, params, time, match):
    sts = [sp.Symbol(c) for c in states]
    ps = [sp.Symbol(c) for c in params]
    with pytest.raises(DuplicateSymbolError, match=match) as info:
        symode.ODESystem([sp.Integer(0)] * len(sts), states=sts, params=ps, t=time)
    assert isinstance(info.value, ValueError)


def test_wrong_rhs_length():
    x, y = sp.symbols("x y")
    with pytest.raises(SystemDefinitionError, match="1 right-hand side expressions for 2 states"):
        symode.ODESystem([-x], states=[x, y])
    with pytest.raises(SystemDefinitionError, match="at least one state"):
        symode.ODESystem([], states=[])
    with pytest.raises(SystemDefinitionError, match="states= is required"):
        symode.ODESystem([-x])


# -- basic solves vs closed forms ----------------------------------------------------------------


@pytest.mark.parametrize(
    "method, options, tol",
    [
        # rk4, dt = 1e-3 on [0, 2] with |k| = 0.7: global error ~ T|k|^5 dt^4 / 120 ~ 1e-15,
        # so what remains is rounding over 2000 steps (~1e-14): 1e-13 leaves headroom.
        ("rk4", {"dt": 1e-3}, 1e-13),
        # dopri5 at rtol 1e-10: the global error is a small multiple of rtol (measured 7e-12).
        ("dopri5", {"rtol": 1e-10, "atol": 1e-12}, 1e-10),
    ],
)
def test_exponential_decay(scalar_model, method, options, tol):
    ts = np.linspace(0.0, 2.0, 21)
    sol = scalar_model.solve([1.3], ts, params=[-0.7], method=method, **options)
    exact = 1.3 * np.exp(-0.7 * ts)
    assert sol.y.shape == (21, 1)
    np.testing.assert_allclose(sol.y[:, 0], exact, rtol=tol, atol=0)
    assert sol.success and sol.status == symode.Status.SUCCESS
    np.testing.assert_array_equal(sol.t, ts)


@pytest.mark.parametrize(
    "method, options, tol",
    [
        # rk4, dt = 1e-3 over 10 time units (~2.7 periods at ω = 1.7): C dt^4 with
        # C ~ T ω^5 / 120 ~ 1.2 gives ~1e-12 (measured 1e-12); tolerance 1e-11.
        ("rk4", {"dt": 1e-3}, 1e-11),
        # dopri5 at rtol 1e-10 on an oscillator: error grows ~linearly in the number of
        # periods; measured 1.2e-10, tolerance 1e-9 (a 5th-order method with a bug is >1e-6).
        ("dopri5", {"rtol": 1e-10, "atol": 1e-12}, 1e-9),
    ],
)
def test_harmonic_oscillator(oscillator_model, method, options, tol):
    w, x0, v0 = 1.7, 0.8, -0.3
    ts = np.linspace(0.0, 10.0, 51)
    sol = oscillator_model.solve([x0, v0], ts, params=[w, 0.0, 0.0, 1.0], method=method, **options)
    x = x0 * np.cos(w * ts) + v0 / w * np.sin(w * ts)
    v = -x0 * w * np.sin(w * ts) + v0 * np.cos(w * ts)
    assert sol.y.shape == (51, 2)
    np.testing.assert_allclose(sol.y[:, 0], x, atol=tol, rtol=0)
    np.testing.assert_allclose(sol.y[:, 1], v, atol=tol * w, rtol=0)


def test_rk4_error_shrinks_like_dt4(oscillator_model):
    """Halving dt divides rk4's global error by ~16 (a 3rd-order bug would give ~8)."""
    w, ts = 1.7, np.linspace(0.0, 10.0, 11)
    exact = 0.8 * np.cos(w * ts)
    errs = []
    for dt in (0.1, 0.05):
        sol = oscillator_model.solve([0.8, 0.0], ts, [w, 0.0, 0.0, 1.0], "rk4", dt=dt)
        errs.append(np.max(np.abs(sol.y[:, 0] - exact)))
    assert 13 < errs[0] / errs[1] < 19, errs


@pytest.mark.parametrize(
    "method, options, tol",
    [
        # rk4, dt = 1e-3 on [0, 1]: ‖A‖ ≲ 1.5, error ~ ‖A‖^5 dt^4 / 120 ~ 1e-13.
        ("rk4", {"dt": 1e-3}, 1e-12),
        ("dopri5", {"rtol": 1e-10, "atol": 1e-12}, 1e-9),
    ],
)
def test_linear_system_matches_expm(linear_model, method, options, tol):
    theta = [-0.3, 1.1, 0.6, -0.8]
    y0 = np.array([1.0, -0.5, 0.25])
    ts = np.linspace(0.0, 1.0, 11)
    A = np.array(linear_model.A_sym.subs(dict(zip(linear_model.system.params, theta))), float)
    exact = np.array([scipy.linalg.expm(A * s) @ y0 for s in ts])
    sol = linear_model.solve(y0, ts, params=theta, method=method, **options)
    assert sol.y.shape == (11, 3)
    np.testing.assert_allclose(sol.y, exact, atol=tol, rtol=0)


def test_batched_y0_and_params_shapes(scalar_model):
    ts = np.linspace(0.0, 1.0, 6)
    y0 = np.array([[1.0], [0.5], [-2.0]])
    sol = scalar_model.solve(y0, ts, params=[-0.7], method="rk4", dt=1e-2)
    assert sol.y.shape == (3, 6, 1)
    assert sol.status.shape == (3,) and not sol.failed
    for i in range(3):
        single = scalar_model.solve(y0[i], ts, params=[-0.7], method="rk4", dt=1e-2)
        assert single.y.shape == (6, 1)
        np.testing.assert_array_equal(sol.y[i], single.y)  # "bit for bit" (ensemble.py)
    ks = np.array([[-0.7], [0.1], [0.3]])
    sol_p = scalar_model.solve([1.0], ts, params=ks, method="rk4", dt=1e-2)
    assert sol_p.y.shape == (3, 6, 1)
    np.testing.assert_allclose(sol_p.y[:, :, 0], np.exp(ks * ts), rtol=1e-9)
    both = scalar_model.solve(y0, ts, params=ks, method="rk4", dt=1e-2)
    np.testing.assert_allclose(both.y[:, :, 0], y0 * np.exp(ks * ts), rtol=1e-9)


# -- bad solve inputs (checked in Python, before any engine is compiled) -------------------------


@pytest.mark.parametrize(
    "y0, params, error, match",
    [
        ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], ShapeError, r"y0 .*\(3,\)"),
        (np.ones((2, 2, 2)), [1.0, 1.0, 1.0, 1.0], ShapeError, r"y0 .*\(2, 2, 2\)"),
        ([1.0], [1.0, 1.0, 1.0, 1.0], ShapeError, r"y0 .*\(1,\)"),
        ([1.0, 1.0], [1.0, 1.0, 1.0], ShapeError, r"params .*\(3,\)"),
        ([1.0, 1.0], np.ones((2, 3)), ShapeError, r"params .*\(2, 3\)"),
        (np.ones((3, 2)), np.ones((2, 4)), ShapeError, r"\(3, 2\).*\(2, 4\)"),
        ([np.nan, 1.0], [1.0, 1.0, 1.0, 1.0], NonFiniteInputError, "y0"),
        ([1.0, np.inf], [1.0, 1.0, 1.0, 1.0], NonFiniteInputError, "y0"),
        ([1.0, 1.0], [1.0, np.nan, 1.0, 1.0], NonFiniteInputError, "params"),
        (["a", "b"], [1.0, 1.0, 1.0, 1.0], ShapeError, "y0"),
    ],
)
def test_bad_solve_inputs(lv_model, y0, params, error, match):
    with pytest.raises(error, match=match) as info:
        lv_model.solve(y0, np.linspace(0, 1, 5), params=params, method="rk4", dt=0.1)
    assert isinstance(info.value, ValueError) and isinstance(info.value, SymodeError)


def test_bad_solve_times(lv_model):
    p = [1.5, 1.0, 3.0, 1.0]
    with pytest.raises(NonFiniteInputError, match="t_eval"):
        lv_model.solve([1.0, 1.0], [0.0, np.nan, 1.0], p)
    with pytest.raises(ShapeError, match="monotone"):
        lv_model.solve([1.0, 1.0], [0.0, 2.0, 1.0], p)
    with pytest.raises(ShapeError, match="t_eval must be 1-D"):
        lv_model.solve([1.0, 1.0], np.zeros((2, 2, 1)), p)
    # 2-D is a padded batch (one row per trajectory): its rows are checked as t_eval is
    with pytest.raises(ShapeError, match=r"t_eval row 0: the integration interval is empty"):
        lv_model.solve([1.0, 1.0], np.zeros((2, 2)), p)
    # the engine checks the order (Status.BAD_T_EVAL; ensembles and gradients: their
    # test files); it is an input error whatever throw says
    with pytest.raises(ShapeError, match="monotone"):
        lv_model.solve([1.0, 1.0], [0.0, 2.0, 1.0], p, throw=False)


def test_reference_systems_are_distinct_and_hashable():
    systems = [lotka_volterra(), lorenz(), linear3()[0], forced_oscillator(), scalar()]
    assert len(set(systems)) == 5
    assert lotka_volterra() == lotka_volterra()
    assert hash(lorenz()) == hash(lorenz())
