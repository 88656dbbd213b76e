"""Tests for symode.codegen: the generated numba kernels against sympy.lambdify.

Every kernel of the calling convention (symode/codegen.py's table) is evaluated at
random points and compared with ``sympy.lambdify(..., "numpy")`` of derivatives taken
here directly with ``Matrix.jacobian`` / ``diff`` (not through ODESystem's methods),
so a wrong derivation, a wrong substitution or a wrong print all show up. Outputs are
pre-filled with NaN so a kernel that forgets an entry fails.

Calling a kernel compiles only that small function (~0.5 s), never the engine; only
the hostile-names test solves (one engine compile, cached in .symode-test-cache).
"""

from __future__ import annotations

import ast
import io
import tokenize
import warnings

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import symode
from symode import UnsupportedFunctionError

t = sp.Symbol("t")

# Rounding differs between the CSE'd kernel and lambdify's expression tree by a few ulps of
# the largest intermediate term; any printing or derivation bug is O(1).
RTOL, ATOL = 1e-10, 1e-10


# -- references ----------------------------------------------------------------------------------


def _no_delta(e):
    return e.replace(sp.DiracDelta, lambda *args: sp.S.Zero)


class Reference:
    """Independent numeric derivatives of a system, by Matrix.jacobian + lambdify(numpy)."""

    def __init__(self, system: symode.ODESystem):
        ys, ps, T = list(system.states), list(system.params), system.t
        n, m = len(ys), len(ps)
        self.n, self.m = n, m
        F = sp.Matrix(system.rhs)
        J = _no_delta(F.jacobian(ys))
        Jp = _no_delta(F.jacobian(ps)) if m else sp.zeros(n, 0)
        # ∂f/∂t with the states held fixed (states may be x(t))
        frozen = {s: sp.Dummy() for s in ys}
        back = {d: s for s, d in frozen.items()}
        ft = F.xreplace(frozen).diff(T).xreplace(back)
        div = sum(J[i, i] for i in range(n))
        gy = [_no_delta(sp.diff(div, s)) for s in ys]
        gp = [_no_delta(sp.diff(div, q)) for q in ps]
        args = [T, *ys, *ps]

        def lam(expr):
            return sp.lambdify(args, expr, modules="numpy", dummify=True)

        self._F, self._J, self._ft, self._div = lam(F), lam(J), lam(ft), lam(div)
        self._Jp = lam(Jp) if m else None
        self._gy, self._gp = lam(sp.Matrix(gy)), (lam(sp.Matrix(gp)) if m else None)

    def __call__(self, tv, y, p):
        args = (tv, *y, *p)
        n, m = self.n, self.m

        def arr(f, shape):
            return np.asarray(f(*args), float).reshape(shape) if f else np.zeros(shape)

        return {
            "f": arr(self._F, n),
            "J": arr(self._J, (n, n)),
            "Jp": arr(self._Jp, (n, m)),
            "ft": arr(self._ft, n),
            "div": float(self._div(*args)),
            "gy": arr(self._gy, n),
            "gp": arr(self._gp, m),
        }


def kernel_values(model, tv, y, p, a, v, w):
    """Call every kernel of ``model.kernels`` once; outputs start as NaN."""
    k = model.kernels
    n, m = y.size, p.size
    out = {}
    f = np.full(n, np.nan)
    k.rhs(tv, y, p, f)
    out["f"] = f
    vy, vp = np.full(n, np.nan), np.full(m, np.nan)
    k.vjp(tv, y, p, a, vy, vp)
    out["vjp_y"], out["vjp_p"] = vy, vp
    jv = np.full(n, np.nan)
    k.jvp(tv, y, p, v, w, jv)
    out["jvp"] = jv
    J = np.full((n, n), np.nan)
    k.jac(tv, y, p, J)
    out["J"] = J
    ft = np.full(n, np.nan)
    k.dfdt(tv, y, p, ft)
    out["ft"] = ft
    out["div"] = k.trace(tv, y, p)
    gy, gp = np.full(n, np.nan), np.full(m, np.nan)
    k.trace_grad(tv, y, p, gy, gp)
    out["gy"], out["gp"] = gy, gp
    return out


def check_kernels(model, rng, points=4, low=-1.5, high=1.5, ref=None):
    """Compare all kernels with the reference at ``points`` random (t, y, p, a, v, w).

    Returns the (t, y, p) points used.
    """
    system = model.system
    used = []
    ref = ref or Reference(system)
    n, m = system.n_states, system.n_params
    for _ in range(points):
        tv = float(rng.uniform(-2.0, 2.0))
        y, p = rng.uniform(low, high, n), rng.uniform(low, high, m)
        a, v, w = rng.normal(size=n), rng.normal(size=n), rng.normal(size=m)
        used.append((tv, y, p))
        got = kernel_values(model, tv, y, p, a, v, w)
        r = ref(tv, y, p)
        where = f"at t={tv!r}, y={y!r}, p={p!r}"
        close = np.testing.assert_allclose
        close(got["f"], r["f"], RTOL, ATOL, err_msg=f"rhs {where}")
        close(got["J"], r["J"], RTOL, ATOL, err_msg=f"jac {where}")
        close(got["ft"], r["ft"], RTOL, ATOL, err_msg=f"dfdt {where}")
        close(got["div"], r["div"], RTOL, ATOL, err_msg=f"trace {where}")
        close(got["gy"], r["gy"], RTOL, ATOL, err_msg=f"trace_grad y {where}")
        close(got["gp"], r["gp"], RTOL, ATOL, err_msg=f"trace_grad p {where}")
        # VJP and JVP against the (reference) Jacobians: aᵀJ, aᵀJp, J v + Jp w
        close(got["vjp_y"], a @ r["J"], RTOL, ATOL, err_msg=f"vjp y {where}")
        close(got["vjp_p"], a @ r["Jp"], RTOL, ATOL, err_msg=f"vjp p {where}")
        close(got["jvp"], r["J"] @ v + r["Jp"] @ w, RTOL, ATOL, err_msg=f"jvp {where}")
        # ... and against the generated jac kernel itself
        close(got["vjp_y"], a @ got["J"], RTOL, ATOL, err_msg=f"vjp vs jac kernel {where}")
        close(got["jvp"], got["J"] @ v + r["Jp"] @ w, RTOL, ATOL, err_msg=f"jvp vs jac {where}")
    return used


# -- the shared reference models -----------------------------------------------------------------


@pytest.mark.parametrize(
    "fixture", ["lv_model", "lorenz_model", "linear_model", "oscillator_model", "scalar_model"]
)
def test_reference_model_kernels_match_lambdify(request, fixture, rng):
    check_kernels(request.getfixturevalue(fixture), rng, points=5)


def test_piecewise_system_kernels_match_lambdify(cache_dir, rng):
    x, y = sp.symbols("x_pw y_pw")
    a, b = sp.symbols("a_pw b_pw")
    system = symode.ODESystem(
        [
            sp.Piecewise((a * x**2, x < 0.2), (b * sp.sin(x), True)) + y,
            sp.Piecewise((x * y, y > 0), (-y * t, True)),
        ],
        states=[x, y],
        params=[a, b],
        t=t,
    )
    model = system.compile(cache_dir=cache_dir)
    check_kernels(model, rng, points=12)


# -- property-based: random small polynomial / trig systems --------------------------------------


COEFFS = [sp.Integer(1), sp.Integer(-1), sp.Integer(3), sp.Rational(1, 2), sp.Rational(-3, 2)]
OUTER = {
    "id": lambda e: e,
    "sin": sp.sin,
    "cos": sp.cos,
    "square": lambda e: e**2,
    "cube": lambda e: e**3,
    "fifth": lambda e: e**5,
    "sin_cos": lambda e: sp.sin(e) * sp.cos(2 * e),
}


@st.composite
def _terms(draw, pool):
    """c · (a product of 1-3 symbols) · g(s + d): polynomial and trig, in states/params/t."""
    c = draw(st.sampled_from(COEFFS + [sp.Float(0.75)]))
    factors = draw(st.lists(st.sampled_from(pool), min_size=0, max_size=3))
    outer = OUTER[draw(st.sampled_from(sorted(OUTER)))]
    inner = draw(st.sampled_from(pool)) + draw(st.sampled_from(COEFFS))
    return c * sp.Mul(*factors) * outer(inner)


@st.composite
def random_systems(draw):
    n = draw(st.integers(1, 3))
    m = draw(st.integers(0, 2))
    ys = list(sp.symbols(f"u0:{n}"))
    ps = list(sp.symbols(f"q0:{m}")) if m else []
    pool = ys + ps + ([t] if draw(st.booleans()) else [])
    rhs = [sp.Add(*draw(st.lists(_terms(pool), min_size=1, max_size=3))) for _ in range(n)]
    return symode.ODESystem(rhs, states=ys, params=ps, t=t)


# derandomize: the same 10 systems every run, so their kernels are in the numba cache of
# .symode-test-cache after the first run (each fresh system costs ~3-4 s of numba compile).
@settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(system=random_systems())
def test_random_system_kernels_match_lambdify(system, cache_dir):
    model = system.compile(cache_dir=cache_dir)
    check_kernels(model, np.random.default_rng(7), points=3)


# -- the printer ---------------------------------------------------------------------------------


def test_smooth_functions_print_correctly(cache_dir, rng):
    """exp/log/trig/hyperbolic, sqrt, rational, negative and expanded integer powers."""
    x, y, z = sp.symbols("x_sm y_sm z_sm")
    k = sp.Symbol("k_sm")
    rhs = [
        sp.exp(-x) * sp.log(y) + sp.sin(z) * sp.cos(x) - sp.tan(z / 2) + sp.sqrt(x) / sp.sqrt(y)
        + sp.atanh(z / 3),
        sp.sinh(x) - sp.cosh(y) + sp.tanh(k * z) + x ** sp.Rational(1, 3) + y ** sp.Rational(-3, 2),
        sp.asin(z / 3) + sp.acos(x / 2) + sp.atan(k * y) + sp.asinh(x) + sp.acosh(1 + y)
        + (x - y) ** 3 + (x + k) ** 2 + y**4 + z**5 + x ** (-5) + 2**z
        + sp.log(x, 2) + sp.atan2(y, x - 2) + sp.pi * sp.E * k * y ** sp.Float(1.5),
    ]  # fmt: skip
    # (terms whose derivatives divide by a square/cube/4th power, e.g. x**-2 or atanh(z)
    # in the trace, are in test_division_by_expanded_powers: they hit a printer bug)
    system = symode.ODESystem(rhs, states=[x, y, z], params=[k], t=t)
    model = system.compile(cache_dir=cache_dir)  # no warning may be raised here
    source = model.source
    assert "x_sm" not in source.split("# params:")[1]
    assert "math.exp(" in source and "math.asinh(" in source and "math.sqrt(" in source
    # log/sqrt/rational powers need positive arguments: sample the states in [0.3, 1.8]
    check_kernels(model, rng, points=6, low=0.3, high=1.8)


def test_division_by_expanded_powers(cache_dir, rng):
    x, y = sp.symbols("x_dv y_dv")
    k = sp.Symbol("k_dv")
    # -k x/(k + x) is Michaelis-Menten: its ∂/∂x holds k x/(k + x)**2
    rhs = [y / x**2 + 2 / x**3 - k * x / (k + x), sp.sin(x) / x**4 + y / (x + k) ** 2]
    model = symode.ODESystem(rhs, states=[x, y], params=[k]).compile(cache_dir=cache_dir)
    check_kernels(model, rng, points=4, low=0.3, high=1.8)


def test_nonsmooth_functions_print_correctly(cache_dir, rng):
    """Piecewise, Abs, Min/Max, Heaviside, sign: values and (a.e.) derivatives."""
    x, y, z = sp.symbols("x_ns y_ns z_ns", real=True)
    k = sp.Symbol("k_ns", real=True)
    rhs = [
        # (lambdify's numpy.select evaluates every branch: keep them all finite)
        sp.Piecewise((x**2, x < 0), (k * sp.sqrt(2 + x), y > 0.5), (sp.exp(z), True)),
        sp.Abs(y - z) + sp.Min(x, y) + sp.Max(y, z, k) - sp.Min(x, 0.25),
        sp.Heaviside(x - y) * z + k * sp.sign(z) + sp.Max(x, 1),
    ]
    system = symode.ODESystem(rhs, states=[x, y, z], params=[k], t=t)
    with warnings.catch_warnings():
        # derivatives of Min/Max/Heaviside/sign contain DiracDelta, dropped with a warning
        # (tested in test_heaviside_*); only when the cache has no module yet
        warnings.filterwarnings("ignore", message=".*DiracDelta", category=RuntimeWarning)
        model = system.compile(cache_dir=cache_dir)
    used = check_kernels(model, rng, points=24)
    # every Piecewise branch was taken at least once
    branches = {0 if y[0] < 0 else 1 if y[1] > 0.5 else 2 for _, y, _ in used}
    assert branches == {0, 1, 2}


def test_abs_of_plain_symbol_compiles(tmp_path, rng):
    x, k = sp.symbols("x_abs k_abs")
    system = symode.ODESystem([k * sp.Abs(x) - x], states=[x], params=[k])
    assert system.jacobian() == sp.Matrix([[k * sp.sign(x) - 1]])
    # ∂tr/∂x = 2k·DiracDelta(x): the a.e. value 0, announced
    with pytest.warns(RuntimeWarning, match="DiracDelta"):
        model = system.compile(cache_dir=tmp_path)
    kern = model.kernels
    # the reference derivative is real: d|x|/dx = sign(x) (lambdify of SymPy's own
    # derivative of |x| for a plain symbol would be the complex modulus' one)
    for xv, kv in [(-1.5, 2.0), (0.7, -3.0)]:
        jac = np.full((1, 1), np.nan)
        kern.jac(0.0, np.array([xv]), np.array([kv]), jac)
        assert jac[0, 0] == kv * np.sign(xv) - 1
        out = np.full(1, np.nan)
        kern.rhs(0.0, np.array([xv]), np.array([kv]), out)
        assert out[0] == kv * abs(xv) - xv


def test_heaviside_compiles_with_dirac_delta_warning(tmp_path):
    h, k = sp.symbols("h_hv k_hv")
    system = symode.ODESystem([sp.Heaviside(h - 1) * k - h], states=[h], params=[k])
    with pytest.warns(RuntimeWarning, match="DiracDelta.*replaced by its almost-everywhere"):
        model = system.compile(cache_dir=tmp_path)
    kern = model.kernels
    for hv, expected in [(0.5, -0.5), (1.0, 2.0 * 0.5 - 1.0), (1.5, 2.0 - 1.5)]:
        out = np.full(1, np.nan)
        kern.rhs(0.0, np.array([hv]), np.array([2.0]), out)
        assert out[0] == expected, (hv, out)
        J = np.full((1, 1), np.nan)
        kern.jac(0.0, np.array([hv]), np.array([2.0]), J)
        assert J[0, 0] == -1.0  # the delta is gone: ∂f/∂h = -1 a.e.


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda x: sp.Function("f")(x), "'f'"),
        (lambda x: sp.besselj(0, x), "'besselj'"),
        (lambda x: sp.Piecewise((x, x > 0)), "otherwise"),
    ],
    ids=["undefined_function", "besselj", "piecewise_without_otherwise"],
)
def test_unsupported_functions_raise_at_compile(tmp_path, make, name):
    x = sp.Symbol("x_unsup")
    system = symode.ODESystem([make(x)], states=[x])  # a valid system ...
    with pytest.raises(UnsupportedFunctionError, match=name) as info:
        system.compile(cache_dir=tmp_path)  # ... that cannot be printed
    assert isinstance(info.value, TypeError) and isinstance(info.value, symode.SymodeError)
    assert not list((tmp_path / "numba").glob("sys_*")), "a failed compile left a module"


def test_big_integer_coefficient(tmp_path):
    x = sp.Symbol("x_big")
    model = symode.ODESystem([sp.Integer(10) ** 20 * x], states=[x]).compile(cache_dir=tmp_path)
    out = np.full(1, np.nan)
    model.kernels.rhs(0.0, np.array([0.5]), np.zeros(0), out)
    assert out[0] == 5e19


def test_complex_rhs_is_rejected_at_compile(tmp_path):
    x = sp.Symbol("x_cplx")
    with pytest.raises(symode.SystemDefinitionError, match="complex"):
        symode.ODESystem([sp.I * x], states=[x])


# -- generated source: header and hostile names --------------------------------------------------

EVIL = "__import__('os').system('x')"
NEWLINE = 'say "hi"\nimport os; os.system("x")'
STATE_NAMES = ["lambda", "def", EVIL, NEWLINE, "c_0", "y"]
PARAM_NAMES = ["class", "import", EVIL, "it's\r\n# evil", "p", "math"]


def hostile_system():
    states = [sp.Symbol(s) for s in STATE_NAMES]
    # the same text as a state and as a parameter: distinct symbols (assumptions differ)
    params = [sp.Symbol(s, positive=True) if s == EVIL else sp.Symbol(s) for s in PARAM_NAMES]
    time = sp.Symbol("out")
    rhs = [-params[0] * states[0] + sp.cos(time)] + [-k * s for s, k in zip(states[1:], params[1:])]
    return symode.ODESystem(rhs, states=states, params=params, t=time)


@pytest.fixture(scope="module")
def hostile_model(cache_dir):
    return hostile_system().compile(cache_dir=cache_dir)


def test_generated_header_is_one_comment_line_each(hostile_model):
    lines = hostile_model.source.splitlines()
    assert lines[0].startswith('"""Generated by symode') and lines[0].endswith('"""')
    assert lines[1] == f"# states: {ascii(STATE_NAMES)}"
    assert lines[2] == f"# params: {ascii(PARAM_NAMES)}"
    assert lines[3].startswith("# running cost:")
    assert sum(line.startswith("# states:") for line in lines) == 1


def test_hostile_names_never_appear_as_code(hostile_model):
    source = hostile_model.source
    tree = ast.parse(source)  # valid Python
    compile(source, "_dynamics.py", "exec")
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for bad in ("__import__", "os", "system", "exec", "eval", "say", "hi", "evil"):
        assert bad not in names and bad not in attrs, bad
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        func = call.func
        if isinstance(func, ast.Name):
            assert func.id in {"njit", "abs", "min", "max"}, ast.unparse(call)
        else:
            assert isinstance(func, ast.Attribute) and ast.unparse(func.value) == "math", (
                ast.unparse(call)
            )
    # string constants: only the fixed module docstring and the decorators' fixed
    # error_model="numpy"
    decorators = {
        ast.unparse(d) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
        for d in f.decorator_list
    }  # fmt: skip
    assert decorators == {"njit(cache=True, error_model='numpy')"}, decorators
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)]
    strings = [s for s in strings if isinstance(s, str) and s != "numpy"]
    assert strings == ["Generated by symode: dynamics kernels of one ODE system. Do not edit."]
    # the user's text occurs only in the two header comments (as escaped ascii)
    docstring = '"""Generated by symode: dynamics kernels of one ODE system. Do not edit."""'
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.STRING and tok.start == (1, 0) and tok.string == docstring:
            continue
        for fragment in ("__import__", "system", "say", "it's", "evil", "lambda"):
            if fragment in tok.string:
                assert tok.type == tokenize.COMMENT, (fragment, tok)
                assert tok.string.startswith(("# states:", "# params:")), tok.string


def test_hostile_names_compile_and_solve(hostile_model, rng):
    check_kernels(hostile_model, rng, points=3)
    k = np.array([0.5, 1.0, 1.5, 0.2, 0.8, 1.2])
    y0 = np.array([1.0, -1.0, 2.0, 0.5, -0.3, 1.1])
    ts = np.linspace(0.0, 3.0, 16)
    sol = hostile_model.solve(y0, ts, params=k, method="dopri5", rtol=1e-10, atol=1e-12)
    exact = y0 * np.exp(-np.outer(ts, k))
    # state 0: y' = -k y + cos t  =>  y = (y0 - k/(k²+1)) e^{-kt} + (k cos t + sin t)/(k²+1)
    c = k[0] ** 2 + 1
    exact[:, 0] = (y0[0] - k[0] / c) * np.exp(-k[0] * ts) + (k[0] * np.cos(ts) + np.sin(ts)) / c
    np.testing.assert_allclose(sol.y, exact, atol=1e-9, rtol=0)


def test_names_like_generated_placeholders(cache_dir, rng):
    x = sp.Symbol("a[0]")
    q, w = sp.Symbol("v[0]"), sp.Symbol("w[0]")
    system = symode.ODESystem([q * x**2 + w], states=[x], params=[q, w])
    check_kernels(system.compile(cache_dir=cache_dir), rng, points=3)


def test_names_like_generated_identifiers(cache_dir, rng):
    """States/params named like the kernels' own identifiers are still just names."""
    names = ["t", "y[0]", "p[0]", "out", "out_y", "c_1", "N_STATES", "math.pi"]
    ys = [sp.Symbol(s) for s in names[:4]]
    ps = [sp.Symbol(s) for s in names[4:]]
    time = sp.Symbol("tau")
    rhs = [ps[0] * ys[1] * time, ys[0] * ys[2] - ps[1], sp.sin(ys[3]) * ps[2], ps[3] * ys[0]]
    model = symode.ODESystem(rhs, states=ys, params=ps, t=time).compile(cache_dir=cache_dir)
    check_kernels(model, rng, points=3)


def test_equation_form_system_compiles(cache_dir, rng):
    X, V = sp.Function("x"), sp.Function("v")
    w, F = sp.symbols("omega_eq F_eq")
    x, v = X(t), V(t)
    eqs = [sp.Eq(x.diff(t), v), sp.Eq(v.diff(t), -(w**2) * x + F * sp.cos(t))]
    model = symode.ODESystem(eqs, params=[w, F]).compile(cache_dir=cache_dir)
    check_kernels(model, rng, points=3)
