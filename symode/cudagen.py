"""Print an ODESystem's derived expressions as CUDA C: ``__host__ __device__`` kernels.

The numba printer's twin (symode/codegen.py): the same derivation objects
(``ODESystem.rhs``, ``adjoint()``, ``jacobian()``/``param_jacobian()`` for the JVP,
``divergence()`` and ``divergence_gradient()``), the same synthetic identifiers
(``y[i]``, ``p[j]``, ``a[i]``, ``v[i]``, ``w[j]``), CSE'd the same way, and the same
rule that user text is never printed as code (names appear in the header comment only,
through ``ascii()``). SymPy's C99 printer prints the expressions; this module adds the
function frame, the naming and three settings: literals as ``real(...)`` so that one
template serves float and double, small integer powers as products (``pow`` is a libm
call on both targets), and no ``M_PI``-style macros (NVRTC has no ``math.h``).

A system is one struct, ``symode_system``, of static function templates over the state
type ``real`` (``float`` or ``double``; ``t`` is always ``double``, as in the numba
kernels), so the engine (kernels/symode_*.cuh) calls ``Sys::rhs(t, y, p, out)`` and the
compiler deduces the precision:

========================================  ============================================
``rhs(t, y, p, out)``                     ``out = f(t, y, p)``
``vjp(t, y, p, a, out_y, out_p)``         ``out_y = aᵀ ∂f/∂y``, ``out_p = aᵀ ∂f/∂p``
``adjoint(t, y, p, a, out)``              ``out = [-aᵀ∂f/∂y, -aᵀ∂f/∂p]`` (the engine's)
``jvp(t, y, p, v, w, out)``               ``out = (∂f/∂y) v + (∂f/∂p) w``
``trace(t, y, p)``                        returns ``tr ∂f/∂y``
``trace_grad(t, y, p, out_y, out_p)``     ``∂tr/∂y``, ``∂tr/∂p``
========================================  ============================================

A derived kernel that cannot be printed (a derivative with no C translation) is left out
and named in ``CudaSource.missing`` (the right-hand side must print). The method is a
second struct, ``symode_method``, printed from :mod:`symode.tableaus` (sizes as
constants, coefficients as 17-significant-digit literals, the very numbers of
``packed_tableau``); :func:`module_source` assembles one translation unit from these,
the engine headers and the entry points.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import dataclass, field

import numpy as np
import sympy as sp
from sympy.printing.c import C99CodePrinter, known_functions_C99

from .codegen import _placeholders, _vector_syms, compilable_nodes, cse_outputs
from .errors import UnsupportedFunctionError
from .kernels import status as _status
from .system import ODESystem, _symbol_name
from .tableaus import METHOD_IDS, get_tableau, kernel_tables

__all__ = ["CudaSource", "generate_cuda_source", "module_source", "ENTRIES", "HEADERS"]

# the engine headers, in the order a translation unit includes them (kernels/*.cuh,
# package data of symode.kernels: found in an installed wheel as in a checkout)
HEADERS = ("symode_prelude.cuh", "symode_stepper.cuh", "symode_adjoint.cuh")

# The math functions printed expressions and the engine may call. On the host (g++, the
# CPU checks) they are <cmath>'s std:: overloads, brought into ``symode_math``; under
# CUDA (nvcc, NVRTC: no standard headers) CUDA's own float and double overloads in the
# global namespace serve, and ``symode_math`` is empty.
_MATH = sorted(
    {v for v in known_functions_C99.values() if isinstance(v, str)}
    | set(C99CodePrinter._prec_funcs)
    | {"abs", "isfinite", "isnan", "nextafter", "pow", "sqrt"}
)


def _math_source() -> str:
    using = "\n".join(f"using std::{f};" for f in _MATH)
    return (
        "#if !defined(__CUDACC__)\n#include <cmath>\n"
        f"namespace symode_math {{\n{using}\n}}\n"
        "#else\nnamespace symode_math {}\n#endif\n"
    )


class _CudaPrinter(C99CodePrinter):
    """C99CodePrinter for one template over ``real``: strict about what it cannot print."""

    def __init__(self):
        super().__init__({"strict": True})
        self.math_macros = {}  # no M_PI, M_LN2, ...: NVRTC has no math.h

    def _real(self, x) -> str:
        return f"real({float(x)!r})"

    def _print_Float(self, expr):
        return self._real(expr)

    def _print_Integer(self, expr):
        # real(k): one type in float and double alike (an int argument of a math
        # function, log(2), would be ambiguous between the two overloads)
        v = int(expr)
        return f"real({v})" if abs(v) < 2**31 else self._real(v)

    def _print_Rational(self, expr):
        p, q = int(expr.p), int(expr.q)
        num = str(p) if abs(p) < 2**31 else repr(float(p))
        den = str(q) if abs(q) < 2**31 else repr(float(q))
        return f"(real({num})/real({den}))"

    def _print_NumberSymbol(self, expr):
        return self._real(expr.evalf(20))

    _print_Pi = _print_Exp1 = _print_GoldenRatio = _print_EulerGamma = _print_Catalan = (
        _print_NumberSymbol
    )

    def _print_Infinity(self, expr):
        raise UnsupportedFunctionError("infinity in an expression cannot be compiled for CUDA")

    _print_NegativeInfinity = _print_ComplexInfinity = _print_NaN = _print_Infinity

    def _print_ImaginaryUnit(self, expr):
        raise UnsupportedFunctionError("complex numbers cannot be compiled for CUDA")

    def _print_Piecewise(self, expr):
        if expr.args[-1].cond is not sp.true:
            raise UnsupportedFunctionError(
                f"Piecewise without an otherwise branch (cond True) cannot be compiled: {expr}"
            )
        return super()._print_Piecewise(expr)

    def _print_Pow(self, expr):
        base, exp = expr.as_base_exp()
        b = self.parenthesize(base, 100)
        if exp.is_Integer and 2 <= int(exp) <= 4:  # as the numba printer: products
            return "(" + "*".join([b] * int(exp)) + ")"
        if exp.is_Integer and -4 <= int(exp) <= -1:
            return "(real(1)/(" + "*".join([b] * -int(exp)) + "))"
        if exp == sp.S.Half:
            return f"sqrt({self._print(base)})"
        if exp == -sp.S.Half:
            return f"(real(1)/sqrt({self._print(base)}))"
        e = self._print(exp) if not exp.is_Integer else self._real(exp)
        return f"pow({self._print(base)}, {e})"


def _check_printable(exprs, printer: _CudaPrinter, back: dict) -> None:
    """Raise UnsupportedFunctionError naming the first node that cannot be printed, in
    the user's own names (``back`` maps the synthetic symbols back)."""
    for node, user in compilable_nodes(exprs, back):
        if isinstance(node, (sp.Function, sp.Number, sp.NumberSymbol)) or node in (
            sp.I,
            sp.oo,
            -sp.oo,
            sp.zoo,
            sp.nan,
        ):
            try:
                printer.doprint(node)
            except UnsupportedFunctionError as err:
                raise UnsupportedFunctionError(f"{err} (in {user})") from None
            except Exception:
                name = getattr(getattr(node, "func", None), "__name__", str(node))
                raise UnsupportedFunctionError(
                    f"function {name!r} (in {user}) has no CUDA C translation"
                ) from None


@dataclass
class CudaSource:
    """The CUDA C text of one system's kernels (``text``), the kernels that could not be
    printed (``missing``) and a digest of the text (part of every module's cache key)."""

    text: str
    missing: tuple = ()
    digest: str = field(default="")

    def __post_init__(self):
        self.digest = hashlib.sha256(self.text.encode()).hexdigest()


class _Emitter:
    """Emits the struct's functions; the numba printer's ``_Emitter`` with a C frame."""

    def __init__(self, system: ODESystem, strict: str | None = None):
        self.system = system
        self.strict = strict
        self.missing: list[str] = []
        self.printer = _CudaPrinter()
        n, np_ = system.n_states, system.n_params
        self.subs = dict(zip(system.states, _vector_syms("y", n)))
        self.subs.update(zip(system.params, _vector_syms("p", np_)))
        self.subs[system.t] = sp.Symbol("t")
        self.lines: list[str] = []

    def function(self, name: str, args: str, outputs, returns=None, required=False):
        """One ``template <typename real> __host__ __device__ static`` function: CSE over
        all outputs, every value computed before the first store (a store may alias an
        input as far as the compiler knows)."""
        found = cse_outputs(self, name, outputs, returns, required, _check_printable)
        if found is None:
            return
        temps, reduced, ret = found
        # (one line each: SymPy's C printer breaks a Piecewise's ternary over lines)
        show = lambda e: " ".join(self.printer.doprint(e).split())  # noqa: E731
        body = [f"    const real {s} = {show(v)};" for s, v in temps]
        stores = []
        for i, ((target, _), v) in enumerate(zip(outputs, reduced)):
            body.append(f"    const real v_{i} = {show(v)};")
            stores.append(f"    {target} = v_{i};")
        body += stores
        if ret is not None:
            body.append(f"    return {show(ret)};")
        rtype = "real" if returns is not None else "void"
        self.lines += [
            "",
            "  template <typename real>",
            f"  SYMODE_HD static SYMODE_INLINE {rtype} {name}({args}) {{",
            "    using namespace symode_math;",
            "    (void)t; (void)y; (void)p;",
            *body,
            "  }",
        ]


_Y = "const real* SYMODE_RESTRICT y, const real* SYMODE_RESTRICT p"


def generate_cuda_source(system: ODESystem, strict: str | None = None) -> CudaSource:
    """The ``symode_system`` struct of ``system`` as CUDA C (see the module docstring).

    Raises UnsupportedFunctionError if the right-hand side cannot be printed; a derived
    kernel that cannot is left out and listed in ``CudaSource.missing``, unless
    ``strict`` names it (then its error is raised)."""
    n, np_ = system.n_states, system.n_params
    em = _Emitter(system, strict)
    a = _placeholders(em, "a", n)
    v = _placeholders(em, "v", n)
    w = _placeholders(em, "w", np_)

    em.function(
        "rhs",
        f"double t, {_Y}, real* SYMODE_RESTRICT out",
        [(f"out[{i}]", e) for i, e in enumerate(system.rhs)],
        required=True,
    )
    adj = system.adjoint()
    lam_subs = dict(zip(adj.lam, a))
    em.function(
        "vjp",
        f"double t, {_Y}, const real* SYMODE_RESTRICT a, real* SYMODE_RESTRICT out_y, "
        "real* SYMODE_RESTRICT out_p",
        [(f"out_y[{j}]", -e.xreplace(lam_subs)) for j, e in enumerate(adj.lam_rhs)]
        + [(f"out_p[{k}]", -e.xreplace(lam_subs)) for k, e in enumerate(adj.mu_rhs)],
    )
    # the engine's continuous adjoint: dλ/dt = -λᵀ∂f/∂y, dμ/dt = -λᵀ∂f/∂p (Chen et al.
    # 2018, eq. 4), printed from the same AdjointEquations as the numba ``adjoint``
    em.function(
        "adjoint",
        f"double t, {_Y}, const real* SYMODE_RESTRICT a, real* SYMODE_RESTRICT out",
        [(f"out[{j}]", e.xreplace(lam_subs)) for j, e in enumerate([*adj.lam_rhs, *adj.mu_rhs])],
    )
    J, Jp = system.jacobian(), system.param_jacobian()
    jvp = [
        sp.Add(*[J[i, j] * v[j] for j in range(n)], *[Jp[i, k] * w[k] for k in range(np_)])
        for i in range(n)
    ]
    em.function(
        "jvp",
        f"double t, {_Y}, const real* SYMODE_RESTRICT v, const real* SYMODE_RESTRICT w, "
        "real* SYMODE_RESTRICT out",
        [(f"out[{i}]", e) for i, e in enumerate(jvp)],
    )
    em.function("trace", f"double t, {_Y}", [], returns=system.divergence())
    gy, gp = system.divergence_gradient()
    em.function(
        "trace_grad",
        f"double t, {_Y}, real* SYMODE_RESTRICT out_y, real* SYMODE_RESTRICT out_p",
        [(f"out_y[{j}]", e) for j, e in enumerate(gy)]
        + [(f"out_p[{k}]", e) for k, e in enumerate(gp)],
    )
    have = [k for k in ("vjp", "adjoint", "jvp", "trace", "trace_grad") if k not in em.missing]
    lines = [
        "// Generated by symode: CUDA C kernels of one ODE system. Do not edit.",
        f"// states: {ascii([_symbol_name(s) for s in system.states])}",
        f"// params: {ascii([q.name for q in system.params])}",
        f"// kernels that could not be printed: {ascii(tuple(em.missing))}",
        "struct symode_system {",
        f"  static constexpr int N = {n};  // states",
        f"  static constexpr int P = {np_};  // params",
        *[f"  static constexpr bool HAS_{k.upper()} = {'true' if k in have else 'false'};"
          for k in ("vjp", "adjoint", "jvp", "trace", "trace_grad")],
        *em.lines,
        "};",
    ]  # fmt: skip
    return CudaSource("\n".join(lines) + "\n", tuple(em.missing))


def kernel_error(system: ODESystem, name: str) -> str:
    """Why kernel ``name`` could not be printed (generation again, raising its error)."""
    try:
        generate_cuda_source(system, strict=name)
    except UnsupportedFunctionError as err:
        return str(err)
    return "unknown reason"


# -- the method ---------------------------------------------------------------------------------
def _c_array(name: str, values: np.ndarray) -> str:
    """``A(i, j)``-style accessor of a constant table: a local array the compiler folds
    into immediates once the engine's loops over stages are unrolled (indices constant),
    and indexes in memory otherwise. 17 significant digits: the float64 values exactly."""
    shape = values.shape
    args = ", ".join(f"int i{d}" for d in range(len(shape)))
    if values.size == 0:
        return (
            f"  SYMODE_HD static SYMODE_INLINE double {name}({args}) {{ "
            + " ".join(f"(void)i{d};" for d in range(len(shape)))
            + " return 0.0; }"
        )
    flat = ", ".join(repr(float(x)) for x in values.ravel())
    index = "i0"
    for d in range(1, len(shape)):
        index = f"({index}) * {shape[d]} + i{d}"
    return (
        f"  SYMODE_HD static SYMODE_INLINE double {name}({args}) {{\n"
        f"    const double v[{values.size}] = {{{flat}}};\n"
        f"    return v[{index}];\n  }}"
    )


def method_sizes(name: str) -> dict:
    """The sizes of method ``name`` as the engine headers see them: S stages, K columns
    of the dense-output matrix, NX extra stages, NS = S + 1 + NX rows of a step's stages."""
    tables = kernel_tables()[0]
    A, b, c, e, P, Ax, cx = tables[METHOD_IDS[get_tableau(name).name]]
    s, K, nx = A.shape[0], P.shape[1], Ax.shape[0]
    return {"S": s, "K": K, "NX": nx, "NS": s + 1 + nx}


def method_source(name: str) -> str:
    """The ``symode_method`` struct of Runge–Kutta method ``name``: the arrays of
    ``symode.tableaus.kernel_tables`` (the numba engine's data: A, b, c, e, P, Ax, cx)."""
    tab = get_tableau(name)  # (an unknown name: the error lists the valid ones)
    tables, fsal, adaptive, err_order = kernel_tables()
    k = METHOD_IDS[tab.name]
    A, b, c, e, P, Ax, cx = tables[k]
    s, K, nx = A.shape[0], P.shape[1], Ax.shape[0]
    lines = [
        f"// Runge-Kutta method {name!r} ({tab.stages} stages), from symode.tableaus",
        "struct symode_method {",
        f"  static constexpr int S = {s};  // stages",
        f"  static constexpr int K = {K};  // columns of the dense-output matrix P",
        f"  static constexpr int NX = {nx};  // extra dense-output stages",
        "  static constexpr int NS = S + 1 + NX;  // rows of a step's stage buffer",
        f"  static constexpr bool FSAL = {'true' if fsal[k] else 'false'};",
        f"  static constexpr bool ADAPTIVE = {'true' if adaptive[k] else 'false'};",
        f"  static constexpr int ERR_ORDER = {err_order[k]};",
        _c_array("A", A),
        _c_array("b", b),
        _c_array("c", c),
        _c_array("e", e),
        _c_array("P", P),
        _c_array("Ax", Ax),
        _c_array("cx", cx),
        "};",
    ]
    return "\n".join(lines) + "\n"


# -- entry points -------------------------------------------------------------------------------
# Every entry point's arguments, one table for both targets: the C signature of the
# __global__ kernel (GPU) and of the host function (the CPU checks) is printed from it,
# and symode/cuda.py packs the arguments by these names and types for CuPy or ctypes.
# Types: "I64" a long long; "f64" a double; "*T" a C-contiguous array of T ("real": the
# module's state dtype, "double", "I64"), "const" when the kernel only reads it.
_SOLVE = (
    ("B", "I64"),  # trajectories
    ("T0", "const double*"),  # (B,) spans
    ("T1", "const double*"),
    ("Y0", "const real*"),  # (B, n)
    ("P", "const real*"),  # (B, p)
    ("iopt", "const I64*"),  # integrate.py's iopt / fopt layout
    ("fopt", "const double*"),
    ("atol", "const double*"),  # (nz,)
    ("grid", "const double*"),  # fixed steps (G,), or G = 0: adaptive
    ("G", "I64"),
    ("t_out", "const double*"),  # (T,) output times, shared
    ("T", "I64"),
    ("Y", "real*"),  # (B, T, n) outputs
    ("stats", "I64*"),  # (B, 5): status, nfev, naccept, nreject, nout
    ("fstats", "double*"),  # (B, 3): t, failed step size, next step size
)
_GRADIENT = (
    ("B", "I64"),
    ("T0", "const double*"),
    ("T1", "const double*"),
    ("Y0", "const real*"),
    ("P", "const real*"),
    ("t_obs", "const double*"),  # (T,) observation times, shared
    ("T", "I64"),
    ("cot", "const double*"),  # (B, T, n) ∂L/∂y(t_i)
    ("iopt", "const I64*"),
    ("fopt", "const double*"),
    ("atol", "const double*"),
    ("grid", "const double*"),
    ("G", "I64"),
    ("biopt", "const I64*"),  # the backward pass's options
    ("bfopt", "const double*"),
    ("batol", "const double*"),
    ("K", "I64"),  # checkpoints kept by the forward pass (at most)
    ("L", "I64"),  # steps of a replayed piece held at once
    ("work", "double*"),  # (W, B): the checkpoints and the piece, thread i in column i
    ("GY0", "double*"),  # (B, n) ∂L/∂y0
    ("GP", "double*"),  # (B, p) ∂L/∂θ
    ("ST_F", "I64*"),  # (B, 5) forward / backward stats
    ("ST_B", "I64*"),
    ("FOUT", "double*"),  # (B, 7): value, forward (t, h, hnext), backward (t, h, hnext)
    ("Y_OUT", "real*"),  # (B, T, n) the forward solution at t_obs
)
# every printed kernel at B points (the checks of the printer on both targets)
_KERNELS = (
    ("B", "I64"),
    ("t", "double"),
    ("X", "const real*"),  # (B, 3n + 2p): y, p, a, v, w
    ("OUT", "real*"),  # (B, 5n + 3p + 1): rhs, vjp, adjoint, jvp, trace, trace_grad
)
# entry name → (engine function, arguments)
ENTRIES = {
    "solve": ("symode::solve_trajectory", _SOLVE),
    "gradient_discrete": ("symode::discrete_gradient", _GRADIENT),
    "gradient_checkpoint": ("symode::checkpoint_gradient", _GRADIENT),
    "kernels": ("symode_kernels", _KERNELS),
}
KERNEL_NAMES = ("rhs", "vjp", "adjoint", "jvp", "trace", "trace_grad")


def _kernels_source(cuda: CudaSource) -> str:
    """``symode_kernels``: every printed kernel of the system at point i (row i of X into
    row i of OUT, NaN where a kernel could not be printed), so that each is instantiated
    (compiled, not only parsed) and checked against the numba kernels."""
    body = [
        "template <typename real, class Sys, class Tab>",
        "SYMODE_HD void symode_kernels(long long i, long long B, double t, const real* X, "
        "real* OUT) {",
        "  (void)B;",
        "  constexpr int N = Sys::N, P = Sys::P;",
        "  const real* y = X + i * (3 * N + 2 * P);",
        "  const real* p = y + N;",
        "  const real* a = p + P;",
        "  const real* v = a + N;",
        "  const real* w = v + N;",
        "  real* out = OUT + i * (5 * N + 3 * P + 1);",
        "  for (int m = 0; m < 5 * N + 3 * P + 1; ++m) out[m] = real(0) / real(0);",
        "  Sys::rhs(t, y, p, out);",
    ]
    calls = {
        "vjp": "Sys::vjp(t, y, p, a, out + N, out + 2 * N);",
        "adjoint": "Sys::adjoint(t, y, p, a, out + 2 * N + P);",
        "jvp": "Sys::jvp(t, y, p, v, w, out + 3 * N + 2 * P);",
        "trace": "out[4 * N + 2 * P] = Sys::trace(t, y, p);",
        "trace_grad": "Sys::trace_grad(t, y, p, out + 4 * N + 2 * P + 1, out + 5 * N + 2 * P + 1);",
    }
    body += [f"  {call}" for name, call in calls.items() if name not in cuda.missing]
    return "\n".join(body) + "\n}\n"


def _c_type(ctype: str) -> str:
    return ctype.replace("real", "symode_real").replace("I64", "long long")


def _entry_source(entry: str, target: str) -> str:
    """The extern "C" entry ``symode_<entry>``: on the GPU a __global__ kernel, thread i
    running trajectory i; on the host (the CPU checks) a loop over the trajectories. Both
    call the same per-trajectory function of the engine headers."""
    function, args = ENTRIES[entry]
    params = ", ".join(f"{_c_type(t)} {a}" for a, t in args)
    names = ", ".join(a for a, _ in args[1:])
    call = f"{function}<symode_real, symode_system, symode_method>(i, B, {names});"
    if target == "gpu":
        return (
            f'extern "C" __global__ void symode_{entry}({params}) {{\n'
            "  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
            f"  if (i < B) {call}\n}}\n"
        )
    return (
        f'extern "C" void symode_{entry}({params}) {{\n'
        f"  for (long long i = 0; i < B; ++i) {call}\n}}\n"
    )


def _host_extras() -> str:
    """Host-only helpers the tests read: the workspace size (checked against the
    Python side's formula) and the method's coefficients as compiled."""
    return (
        'extern "C" long long symode_work_size(long long K, long long L) {\n'
        "  return symode::work_size<symode_system, symode_method>(K, L);\n}\n"
        'extern "C" void symode_tableau(double* out) {\n'
        "  symode::dump_tableau<symode_method>(out);\n}\n"
    )


def header_text(name: str) -> str:
    """The text of engine header ``name`` (importlib.resources on symode.kernels: the
    installed package's data, or kernels/ in a checkout)."""
    return importlib.resources.files("symode.kernels").joinpath(name).read_text()


def _status_source() -> str:
    codes = {k: v for k, v in vars(_status).items() if k.isupper() and isinstance(v, int)}
    body = "\n".join(f"constexpr int {k} = {v};" for k, v in codes.items())
    return (
        f"// result codes, from symode/kernels/status.py\nnamespace symode_status {{\n{body}\n}}\n"
    )


def module_source(
    cuda: CudaSource, method: str, dtype, entries, target: str = "gpu", system_name: str = ""
) -> str:
    """One self-contained translation unit: the status codes, the engine headers, the
    system's kernels, the method and the entry points ``entries`` (names of ``ENTRIES``)
    for states of ``dtype``; ``target`` "gpu" (NVRTC or nvcc: __global__ kernels) or
    "host" (g++: plain functions, for the CPU checks). The headers are inlined, not
    included: the text is the whole module (what NVRTC compiles and CuPy's cache keys
    on), with ``#line`` markers so that compiler messages name the header."""
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise TypeError(f"dtype must be float64 or float32, got {dtype}")
    if target not in ("gpu", "host"):
        raise ValueError(f"target must be 'gpu' or 'host', got {target!r}")
    real = "double" if dtype == np.float64 else "float"
    parts = [
        f"// symode CUDA module: system {system_name or '(unnamed)'}, method {method!r}, "
        f"{real}, target {target}, entries {', '.join(entries)}",
        _status_source(),
        _math_source(),
    ]
    for h in HEADERS[:1]:
        parts += [f'#line 1 "{h}"', header_text(h)]
    parts += ['#line 1 "symode_system (generated)"', cuda.text, method_source(method)]
    for h in HEADERS[1:]:
        parts += [f'#line 1 "{h}"', header_text(h)]
    parts += ['#line 1 "symode entries (generated)"', f"typedef {real} symode_real;"]
    if "kernels" in entries:
        parts.append(_kernels_source(cuda))
    parts += [_entry_source(e, target) for e in entries]
    if target == "host":
        parts.append(_host_extras())
    return "\n".join(parts)
