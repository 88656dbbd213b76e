"""Print an ODESystem's derived expressions as the Python source of numba kernels.

Every kernel follows one in-place, allocation-free calling convention
(docs/architecture.md, "The dynamics contract"); each ends with ``work``, the caller's
scratch of ``N_WORK`` values (0 here: symbolic kernels keep nothing; an MLP keeps its
activations there), optional when calling from Python:

=========================================  ==============================================
``rhs(t, y, p, out, work)``                ``out = f(t, y, p)``
``rhs_row(t, y, p, out, r, work)``         ``out[r, :] = f(t, y, p)`` (engine-internal)
``adjoint(t, y, p, a, out, work)``         ``out = [-aᵀ∂f/∂y, -aᵀ∂f/∂p]`` (engine)
``vjp(t, y, p, a, out_y, out_p, work)``    ``out_y = aᵀ ∂f/∂y``, ``out_p = aᵀ ∂f/∂p``
``jvp(t, y, p, v, w, out, work)``          ``out = (∂f/∂y) v + (∂f/∂p) w``
``jac(t, y, p, out, work)``                ``out = ∂f/∂y`` (n × n)
``jac_csr(t, y, p, out, work)``            its nonzeros, CSR order (``JAC_INDICES``, ``JAC_INDPTR``)
``dfdt(t, y, p, out, work)``               ``out = ∂f/∂t``
``trace(t, y, p, work)``                   returns ``tr ∂f/∂y``
``trace_grad(t, y, p, out_y, out_p, work)``  ``∂tr/∂y``, ``∂tr/∂p``
``running(t, y, p, work)``                 returns the running cost g (0 without a loss)
``running_grad(t, y, p, out_y, out_p, work)``  ``∂g/∂y``, ``∂g/∂p``
``observation(y, d, p, work)``             returns φ
``observation_grad(y, d, p, out_y, out_p, work)``  ``∂φ/∂y``, ``∂φ/∂p``
=========================================  ==============================================

User symbols are replaced by synthetic names (``y[0]``, ``p[3]``, ``a[1]``) before
printing, so no user text is ever printed as code; names appear only in the header
comment, through ``ascii()`` (one line, no newline can escape the comment).
"""

from __future__ import annotations

import sympy as sp
from sympy.core.function import AppliedUndef
from sympy.printing.pycode import PythonCodePrinter

from .errors import UnsupportedFunctionError
from .system import Loss, ODESystem, _symbol_name

__all__ = ["generate_numba_source"]


class _NumbaPrinter(PythonCodePrinter):
    """PythonCodePrinter restricted to what numba compiles, strict about the rest."""

    def __init__(self):
        super().__init__({"strict": True, "fully_qualified_modules": True})

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Integer(self, expr):
        if abs(int(expr)) >= 2**62:  # beyond int64: numba would reject the literal
            return repr(float(expr))
        return super()._print_Integer(expr)

    def _print_Piecewise(self, expr):
        if expr.args[-1].cond is not sp.true:
            raise UnsupportedFunctionError(
                f"Piecewise without an otherwise branch (cond True) cannot be compiled: {expr}"
            )
        return super()._print_Piecewise(expr)

    def _print_Pow(self, expr, rational=False):
        base, exp = expr.as_base_exp()
        if exp.is_Integer and 2 <= int(exp) <= 4:
            b = self.parenthesize(base, 100)
            return "(" + "*".join([b] * int(exp)) + ")"
        return super()._print_Pow(expr, rational=rational)


def compilable_nodes(exprs, back: dict):
    """Every node of ``exprs`` with its text in the user's own names (``back`` maps the
    synthetic symbols back), after raising UnsupportedFunctionError for what no printer
    compiles: undefined functions and unevaluated derivatives, substitutions and
    integrals. Each printer's own check (``_check_printable`` here and in cudagen) then
    asks its printer about the nodes it cares about."""
    for e in exprs:
        for node in sp.preorder_traversal(e):
            user = node.xreplace(back) if isinstance(node, sp.Basic) else node
            if isinstance(node, AppliedUndef):
                raise UnsupportedFunctionError(
                    f"undefined function {node.func.__name__!r} (in {user}) cannot be compiled: "
                    "define it as an expression of states, params and t"
                )
            if isinstance(node, (sp.Derivative, sp.Subs, sp.Integral)):
                raise UnsupportedFunctionError(
                    f"unevaluated {type(node).__name__} {user} cannot be compiled"
                )
            yield node, user


def _check_printable(exprs, printer: _NumbaPrinter, back: dict) -> None:
    """Raise UnsupportedFunctionError naming the first function the printer cannot print,
    in the user's own names."""
    for node, user in compilable_nodes(exprs, back):
        if isinstance(node, sp.Function):
            try:
                printer.doprint(node)
            except UnsupportedFunctionError:
                raise
            except Exception:
                raise UnsupportedFunctionError(
                    f"function {node.func.__name__!r} (in {user}) has no numba translation"
                ) from None


# error_model="numpy": x / 0 gives inf or nan, which the engine reports as a non-finite
# state, rather than raising ZeroDivisionError inside a compiled loop
_DECORATOR = '@njit(cache=True, error_model="numpy")'


def _vector_syms(name: str, n: int, offset: str = "") -> list[sp.Symbol]:
    return [sp.Symbol(f"{name}[{offset}{i}]") for i in range(n)]


def _placeholders(em: _Emitter, name: str, n: int, offset: str = "") -> list[sp.Dummy]:
    """Dummies for the kernels' extra arguments (a, v, w), printed as name[i] (or
    name[offset + i]): a user symbol that happens to be called "a[0]" can never be
    mistaken for one."""
    dummies = [sp.Dummy(f"{name}{i}") for i in range(n)]
    em.subs.update(zip(dummies, _vector_syms(name, n, offset)))
    return dummies


def cse_outputs(em, name: str, outputs, returns, required: bool, check=None):
    """A kernel's expressions in synthetic names (``em.subs``), checked printable by
    ``em.printer`` and CSE'd: (temporaries, outputs, return value or None); None when the
    kernel cannot be printed and is optional (``em.missing`` then lists it). Shared by
    the numba and CUDA emitters (symode/cudagen.py, with its own ``check``)."""
    exprs = [sp.sympify(e).xreplace(em.subs) for _, e in outputs]
    if returns is not None:
        exprs.append(sp.sympify(returns).xreplace(em.subs))
    back = {v: k for k, v in em.subs.items()}
    try:
        (check or _check_printable)(exprs, em.printer, back)
    except UnsupportedFunctionError:
        if required or em.strict == name:
            raise
        em.missing.append(name)
        return None
    temps, reduced = sp.cse(exprs, symbols=sp.numbered_symbols("c_"), order="none")
    ret = reduced.pop() if returns is not None else None
    return temps, reduced, ret


class _Emitter:
    """Emits the kernels. A kernel whose expressions cannot be printed is left out and
    listed in ``missing`` (a derivative such as gamma's polygamma must not block a solve),
    unless it is ``required`` or named by ``strict`` (then the error is raised)."""

    def __init__(self, system: ODESystem, loss: Loss | None, strict: str | None = None):
        self.system = system
        self.strict = strict
        self.missing: list[str] = []
        self.printer = _NumbaPrinter()
        n, np_ = system.n_states, system.n_params
        self.subs = dict(zip(system.states, _vector_syms("y", n)))
        self.subs.update(zip(system.params, _vector_syms("p", np_)))
        self.subs[system.t] = sp.Symbol("t")
        if loss is not None:
            self.subs.update(zip(loss.data, _vector_syms("d", len(loss.data))))
        self.lines: list[str] = []

    def function(
        self,
        signature: str,
        outputs: list[tuple[str, sp.Expr]],
        returns=None,
        required=False,
        prologue=(),
    ):
        """Emit one @njit function: CSE over all outputs, then assignments; ``prologue``:
        lines of symode's own (never user text) that go first."""
        name = signature.split("(")[0]
        found = cse_outputs(self, name, outputs, returns, required)
        if found is None:
            return
        temps, reduced, ret = found
        body = [f"    {s} = {self.printer.doprint(v)}" for s, v in temps]
        # every value first, then the stores: a store may alias any input array as far
        # as LLVM knows, so an input read after a store would be loaded again
        stores = []
        for i, ((target, _), v) in enumerate(zip(outputs, reduced)):
            if target.endswith("[:]"):  # a fill (jac's zeros) goes before the entries
                body.insert(0, f"    {target} = {self.printer.doprint(v)}")
            else:
                body.append(f"    v_{i} = {self.printer.doprint(v)}")
                stores.append(f"    {target} = v_{i}")
        body += stores
        if ret is not None:
            text = repr(float(ret)) if ret.is_Number else self.printer.doprint(ret)
            body.append(f"    return {text}")
        body = [*prologue, *body]
        if not body:
            body.append("    return")
        self.lines += ["", "", _DECORATOR, f"def {signature}:", *body]


def _zero_fill(target: str) -> tuple[str, sp.Expr]:
    return (f"{target}[:]", sp.S.Zero)


def generate_numba_source(
    system: ODESystem, loss: Loss | None = None, strict: str | None = None
) -> str:
    """The text of the ``_dynamics`` module for ``system`` (and ``loss``).

    The right-hand side must print (else UnsupportedFunctionError); a derived kernel
    that cannot (a derivative with no numba translation) is left out and named in the
    module's ``MISSING`` tuple; ``strict`` names one kernel whose error to raise instead
    (``kernel_error``)."""
    n, np_ = system.n_states, system.n_params
    em = _Emitter(system, loss, strict)
    a = _placeholders(em, "a", n)
    v = _placeholders(em, "v", n)
    w = _placeholders(em, "w", np_)

    em.function(
        "rhs(t, y, p, out, work=None)",
        [(f"out[{i}]", e) for i, e in enumerate(system.rhs)],
        required=True,
    )
    # the same, writing row r of a 2-D array: the engine's stages (a row view costs a
    # reference-count round trip per call, a measurable share of a small system's step)
    em.function(
        "rhs_row(t, y, p, out, r, work=None)",
        [(f"out[r, {i}]", e) for i, e in enumerate(system.rhs)],
        required=True,
    )

    adj = system.adjoint()
    lam_subs = dict(zip(adj.lam, a))
    em.function(
        "vjp(t, y, p, a, out_y, out_p, work=None)",
        [(f"out_y[{j}]", -e.xreplace(lam_subs)) for j, e in enumerate(adj.lam_rhs)]
        + [(f"out_p[{k}]", -e.xreplace(lam_subs)) for k, e in enumerate(adj.mu_rhs)],
    )

    # the engine's adjoint dynamics, reading λ at z[zo:] and writing row r of out from
    # column o on (no views: see rhs_row): dλ/dt = -λᵀ∂f/∂y, dμ/dt = -λᵀ∂f/∂p (Chen et
    # al. 2018, eq. 4); a running cost's -∂g/∂y, -∂g/∂p the engine adds (running_grad)
    loss_ = loss if loss is not None else Loss()
    ld = system.loss_derivatives(loss_)
    lz = _placeholders(em, "z", n, "zo + ")
    lz_subs = dict(zip(adj.lam, lz))
    lam_dot = [e.xreplace(lz_subs) for e in adj.lam_rhs]
    mu_dot = [e.xreplace(lz_subs) for e in adj.mu_rhs]
    em.function(
        "adjoint_row(t, y, p, z, zo, out, r, o, work=None)",
        [(f"out[r, o + {j}]", e) for j, e in enumerate(lam_dot + mu_dot)],
    )
    # the same on flat buffers, λ = a[:n] and out = [λ', μ'] (the generic engine calls
    # its kernels through raw pointers, kernels/dynamics.py)
    back = {z: lam for lam, z in lz_subs.items()}
    em.function(
        "adjoint(t, y, p, a, out, work=None)",
        [
            (f"out[{j}]", e.xreplace(back).xreplace(lam_subs))
            for j, e in enumerate(lam_dot + mu_dot)
        ],
    )

    J, Jp = system.jacobian(), system.param_jacobian()
    vz = _placeholders(em, "z", n, "vo + ")
    jvp_z = [
        sp.Add(*[J[i, j] * vz[j] for j in range(n)], *[Jp[i, k] * w[k] for k in range(np_)])
        for i in range(n)
    ]
    em.function(
        "jvp_row(t, y, p, z, vo, w, out, r, o, work=None)",
        [(f"out[r, o + {i}]", e) for i, e in enumerate(jvp_z)],
    )
    jvp = [
        sp.Add(*[J[i, j] * v[j] for j in range(n)], *[Jp[i, k] * w[k] for k in range(np_)])
        for i in range(n)
    ]
    em.function("jvp(t, y, p, v, w, out, work=None)", [(f"out[{i}]", e) for i, e in enumerate(jvp)])

    jac_out = [_zero_fill("out")] + [
        (f"out[{i}, {j}]", J[i, j]) for i in range(n) for j in range(n) if J[i, j] != 0
    ]
    em.function("jac(t, y, p, out, work=None)", jac_out)
    # the structurally nonzero entries in CSR order (scipy's sparse Radau/BDF, stiff.py)
    pattern = [(i, j) for i in range(n) for j in range(n) if J[i, j] != 0]
    em.function(
        "jac_csr(t, y, p, out, work=None)",
        [(f"out[{k}]", J[i, j]) for k, (i, j) in enumerate(pattern)],
    )
    indptr = [0] * (n + 1)
    for i, _ in pattern:
        indptr[i + 1] += 1
    for i in range(n):
        indptr[i + 1] += indptr[i]
    em.function(
        "dfdt(t, y, p, out, work=None)",
        [(f"out[{i}]", e) for i, e in enumerate(system.time_derivative())],
    )
    em.function("trace(t, y, p, work=None)", [], returns=system.divergence())
    gy, gp = system.divergence_gradient()
    em.function(
        "trace_grad(t, y, p, out_y, out_p, work=None)",
        [(f"out_y[{j}]", e) for j, e in enumerate(gy)]
        + [(f"out_p[{k}]", e) for k, e in enumerate(gp)],
    )

    _emit_loss(em, loss_, ld)

    header = [
        '"""Generated by symode: dynamics kernels of one ODE system. Do not edit."""',
        f"# states: {ascii([_symbol_name(s) for s in system.states])}",
        f"# params: {ascii([q.name for q in system.params])}",
        f"# running cost: {'yes' if loss is not None and loss_.running != 0 else 'no'}; "
        f"observation cost: {'yes' if loss is not None and loss_.observation != 0 else 'no'}",
        "import math  # noqa: F401",
        "",
        "from numba import njit",
        "",
        f"N_STATES = {n}",
        f"N_PARAMS = {np_}",
        f"N_DATA = {0 if loss is None else len(loss.data)}",
        "N_WORK = 0  # the kernels' scratch ``work``: none (an MLP keeps activations there)",
        "HAS_RUNNING_COST = " + str(loss is not None and loss_.running != 0),
        f"MISSING = {tuple(em.missing)!r}  # kernels that could not be printed",
        f"JAC_INDICES = {tuple(j for _, j in pattern)!r}  # jac_csr's sparsity pattern",
        f"JAC_INDPTR = {tuple(indptr)!r}",
    ]
    return "\n".join(header + em.lines) + "\n"


def _emit_loss(em: _Emitter, loss: Loss, ld: dict, clear_p: str | None = None) -> None:
    """The loss's kernels (running cost, observation cost and their gradients);
    ``clear_p``: the number of params (a name in the module) whose ∂/∂p the gradients
    zero first, for dynamics whose params the loss cannot name (an MLP's weights)."""
    zero = () if clear_p is None else (f"    for k in range({clear_p}):", "        out_p[k] = 0.0")
    em.function("running(t, y, p, work=None)", [], returns=loss.running)
    em.function(
        "running_grad(t, y, p, out_y, out_p, work=None)",
        [(f"out_y[{j}]", e) for j, e in enumerate(ld["g_y"])]
        + [(f"out_p[{k}]", e) for k, e in enumerate(ld["g_p"])],
        prologue=zero,
    )
    em.function("observation(y, d, p, work=None)", [], returns=loss.observation)
    em.function(
        "observation_grad(y, d, p, out_y, out_p, work=None)",
        [(f"out_y[{j}]", e) for j, e in enumerate(ld["phi_y"])]
        + [(f"out_p[{k}]", e) for k, e in enumerate(ld["phi_p"])],
        prologue=zero,
    )


def generate_loss_source(states, t, loss: Loss | None, n_params: str) -> str:
    """The loss kernels alone, for dynamics that are not printed from SymPy (an MLP's):
    the loss may name the states, t and its data symbols; its ∂/∂p is zero (``n_params``
    params, a name in the module). Returns the functions' text (no header)."""
    system = ODESystem([0] * len(states), states=list(states), t=t)
    loss_ = loss if loss is not None else Loss()
    em = _Emitter(system, loss)
    _emit_loss(em, loss_, system.loss_derivatives(loss_), clear_p=n_params)
    return "\n".join(em.lines) + "\n"


def kernel_error(system: ODESystem, loss: Loss | None, name: str) -> str:
    """Why kernel ``name`` of the system could not be printed (generation again, raising
    that kernel's error): for the message when a call needs it."""
    try:
        generate_numba_source(system, loss, strict=name)
    except UnsupportedFunctionError as err:
        return str(err)
    return "unknown reason"


# The engine's entry points and their arguments after the method. In the specialized
# tier (``compile(specialize=True)``) the generated ``_entries_*`` modules have one
# jitted wrapper per (entry, method) that passes
# the method's number as a literal: numba then compiles the stepper with that tableau's
# coefficients and sizes as constants (the loops over stages unroll), and only for the
# methods a program actually uses. Entries that take a ``mode`` are one engine function
# per adjoint mode (``gradient_checkpoint``), and one wrapper per mode and method
# (``gradient_checkpoint_5``), so that using one mode compiles only that mode.
ADJOINT_MODES = ("backsolve", "checkpoint", "discrete", "forward")  # kernels/adjoint gradient_*
ENTRY_POINTS = {
    "integrate": {
        "solve_forward": "addr, sizes, t0, t1, z0, p, iopt, fopt, atol, grid, t_out, z_out, stats, "
        "fstats",
        "solve_dense": "addr, sizes, t0, t1, z0, p, iopt, fopt, atol, grid, t_out, z_out, stats, "
        "fstats",
        "dense_query": "addr, sizes, tq, ts, hs, zs, p, out",
    },
    "ensemble": {
        "solve_ensemble": "addr, sizes, T0, T1, Z0, Pm, iopt, fopt, atol, grid, t_out, NT, Z_out, "
        "stats, fstats, single",
    },
    "adjoint": {
        "gradient": "mode, addr, sizes, t0, t1, y0, p, t_obs, cot, data, use_loss, iopt, fopt, "
        "atol, grid, biopt, bfopt, batol, max_ck, gy0, gp, st_f, st_b, fout, y_out",
        "gradient_ensemble": "mode, addr, sizes, T0, T1, Y0, Pm, t_obs, NT, cot, data, use_loss, "
        "iopt, fopt, atol, grid, biopt, bfopt, batol, max_ck, GY0, GP, ST_F, ST_B, FOUT, Y_OUT, "
        "single",
    },
}


def generate_entries_sources(n_methods: int) -> dict[str, str]:
    """The generated entry modules, one per (engine module, method number k): in
    ``_entries_<module>_<k>``, ``<entry>_<k>(...)`` calls ``<entry>(k, ...)``, and for
    entries taking an adjoint mode ``<entry>_<mode>_<k>`` calls ``<entry>_<mode>(k,
    ...)``. A solve imports only its own module (and numba creates only its
    wrappers): the first call in a fresh process stays short."""
    files = {}
    for group, entries in ENTRY_POINTS.items():
        for k in range(n_methods):
            names = []
            for name, args in entries.items():
                modes = ADJOINT_MODES if args.startswith("mode, ") else (None,)
                names += [name if mode is None else f"{name}_{mode}" for mode in modes]
            lines = [
                '"""Generated by symode: entry points of the engine module'
                f' {group!r} for Runge-Kutta method {k}. Do not edit."""',
                "from numba import njit",
                "",
                f"from .{group} import {', '.join(sorted(names))}",
            ]
            for name, args in entries.items():
                if args.startswith("mode, "):
                    rest = args[len("mode, ") :]
                    for mode in ADJOINT_MODES:
                        lines += ["", "", _DECORATOR, f"def {name}_{mode}_{k}({rest}):"]
                        lines += [f"    return {name}_{mode}({k}, {rest})"]
                else:
                    lines += ["", "", _DECORATOR, f"def {name}_{k}({args}):"]
                    lines += [f"    return {name}({k}, {args})"]
            files[f"_entries_{group}_{k}.py"] = "\n".join(lines) + "\n"
    return files


def entry_point(name: str, method_id: int, mode: str | None = None) -> tuple[str, str]:
    """(module, function) of the generated entry ``name`` for a method (and mode)."""
    group = next(g for g, entries in ENTRY_POINTS.items() if name in entries)
    function = f"{name}_{mode}_{method_id}" if mode is not None else f"{name}_{method_id}"
    return f"_entries_{group}_{method_id}", function
