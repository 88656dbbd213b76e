"""The symbolic front end: a validated ODE system and its exact derivations.

An :class:`ODESystem` holds ``y' = f(t, y, θ)`` as SymPy expressions. Everything the
engine needs is derived from it exactly, by SymPy, and cached on the instance:
Jacobians, the adjoint equations (Chen et al. 2018, eq. 4; Pontryagin), forward
sensitivities, the divergence tr(∂f/∂y) of continuous normalizing flows (Chen et al.
2018, Theorem 1) and its gradients.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sympy as sp
from sympy.core.function import AppliedUndef

from .errors import (
    DuplicateSymbolError,
    InvalidStateError,
    SystemDefinitionError,
    UndeclaredSymbolError,
)

__all__ = ["ODESystem", "AdjointEquations", "SensitivityEquations", "Loss"]


# piecewise-constant functions: SymPy leaves their derivative unevaluated
_STEP_FUNCTIONS = (sp.floor, sp.ceiling)


def _is_step_derivative(node) -> bool:
    return isinstance(node, sp.Derivative) and isinstance(node.expr, _STEP_FUNCTIONS)


def _drop_dirac_delta(expr: sp.Expr, what: str) -> sp.Expr:
    """Replace DiracDelta (from differentiating Heaviside or sign) and the unevaluated
    derivatives of floor and ceiling by their almost-everywhere value 0, with a
    warning."""
    steps = expr.atoms(sp.Derivative) and any(
        _is_step_derivative(d) for d in expr.atoms(sp.Derivative)
    )
    if not expr.has(sp.DiracDelta) and not steps:
        return expr
    warnings.warn(
        f"{what}: the derivative of a discontinuity (DiracDelta from Heaviside or sign; "
        "floor, ceiling) was replaced by its almost-everywhere value 0; gradients across "
        "the jump are not represented.",
        RuntimeWarning,
        stacklevel=4,
    )
    expr = expr.replace(sp.DiracDelta, lambda *args: sp.S.Zero)
    return expr.replace(_is_step_derivative, lambda d: sp.S.Zero)


def _diff(expr: sp.Expr, var: sp.Basic, what: str) -> sp.Expr:
    return _drop_dirac_delta(sp.diff(expr, var), what)


def _symbol_name(s: sp.Basic) -> str:
    return s.func.__name__ if isinstance(s, AppliedUndef) else s.name


def _sympify_expr(e, where: str) -> sp.Expr:
    if isinstance(e, sp.Basic):
        if isinstance(e, sp.Expr) and e.has(sp.I):
            raise SystemDefinitionError(f"{where} is complex ({e}): symode integrates real ODEs")
        if isinstance(e, sp.Expr) and e.has(sp.nan, sp.zoo, sp.oo, -sp.oo):
            raise SystemDefinitionError(
                f"{where} contains a non-finite constant (nan, zoo or oo): {e}"
            )
        if not isinstance(e, sp.Expr):
            raise InvalidStateError(
                f"{where} must be a SymPy expression, got {type(e).__name__}: {e}"
            )
        return e
    if isinstance(e, (int, float)) and not isinstance(e, bool):
        return sp.sympify(e)
    raise InvalidStateError(
        f"{where} must be a SymPy expression (or a number), got {type(e).__name__}: {e!r}"
    )


@dataclass(frozen=True)
class AdjointEquations:
    """The continuous adjoint equations of ``y' = f(t, y, θ)`` (Chen et al. 2018, eq. 4).

    ``dλ/dt = -(∂f/∂y)ᵀ λ`` and ``dμ/dt = -(∂f/∂θ)ᵀ λ``, written as vector–Jacobian
    products: ``lam_rhs[j] = -∂(λ·f)/∂y_j``, ``mu_rhs[k] = -∂(λ·f)/∂θ_k``.
    """

    lam: tuple[sp.Symbol, ...]
    mu: tuple[sp.Symbol, ...]
    lam_rhs: sp.Matrix
    mu_rhs: sp.Matrix

    def equations(self) -> list[sp.Eq]:
        """``Eq(dλ_j/dt, ...)`` and ``Eq(dμ_k/dt, ...)``, for printing."""
        out = [sp.Eq(sp.Symbol(f"d{s.name}/dt"), r) for s, r in zip(self.lam, self.lam_rhs)]
        out += [sp.Eq(sp.Symbol(f"d{s.name}/dt"), r) for s, r in zip(self.mu, self.mu_rhs)]
        return out

    def __str__(self) -> str:
        return "\n".join(f"{e.lhs} = {e.rhs}" for e in self.equations())


@dataclass(frozen=True)
class SensitivityEquations:
    """Forward sensitivity equations ``S' = (∂f/∂y) S + ∂f/∂θ`` with ``S = ∂y/∂θ`` (n × p)."""

    S: sp.Matrix
    rhs: sp.Matrix

    def __str__(self) -> str:
        return "\n".join(
            f"d{self.S[i, k]}/dt = {self.rhs[i, k]}"
            for i in range(self.S.rows)
            for k in range(self.S.cols)
        )


class Loss:
    """A symbolic loss: a running cost ``∫ g(t, y, θ) dt`` plus ``Σᵢ φ(y(tᵢ), dᵢ, θ)``.

    Parameters
    ----------
    running : sympy expression in the system's t, states and params, optional
        The integrand g of the running cost over the whole span.
    observation : sympy expression in the states, params and ``data`` symbols, optional
        The cost φ charged at every output time; ``data`` symbols take the values of the
        matching row of the data array passed to ``value_and_grad``.
    data : sequence of sympy Symbols
        The observation placeholders (one column of the data array each).

    References
    ----------
    G. Strang, Computational Science and Engineering, §8.7, eqs. 14–17.
    """

    def __init__(self, running=None, observation=None, data: Sequence[sp.Symbol] = ()):
        self.running = sp.S.Zero if running is None else _sympify_expr(running, "running cost")
        self.observation = (
            sp.S.Zero if observation is None else _sympify_expr(observation, "observation cost")
        )
        self.data = tuple(data)
        for d in self.data:
            if not isinstance(d, sp.Symbol):
                raise InvalidStateError(f"data placeholders must be Symbols, got {d!r}")
        if len(set(self.data)) != len(self.data):
            raise DuplicateSymbolError("a data placeholder is listed twice")

    def __repr__(self) -> str:
        return f"Loss(running={self.running}, observation={self.observation}, data={self.data})"


class ODESystem:
    """An ODE ``y' = f(t, y, θ)`` written in SymPy, validated and differentiated exactly.

    Parameters
    ----------
    rhs : sequence or Matrix of expressions, or sequence of ``Eq(Derivative(x(t), t), expr)``
        The right-hand side, one expression per state, or SymPy ODE equations (then
        ``states`` and ``t`` are read from the left-hand sides when not given).
    states : sequence of Symbols or applied undefined functions ``x(t)``
    params : sequence of Symbols
    t : Symbol, optional
        Time. Without it the system must be autonomous.

    Raises
    ------
    UndeclaredSymbolError
        A free symbol of the rhs is neither a state, a parameter nor t.
    InvalidStateError
        A state is not a Symbol/applied function, or an input is not SymPy.
    DuplicateSymbolError
        A symbol is declared twice or as both state and parameter.
    SystemDefinitionError
        The number of right-hand sides differs from the number of states.

    Examples
    --------
    >>> import sympy as sp, symode
    >>> x, k = sp.symbols("x k")
    >>> decay = symode.ODESystem([-k * x], states=[x], params=[k])
    >>> decay.jacobian()
    Matrix([[-k]])
    """

    def __init__(self, rhs, states=None, params: Iterable = (), t: sp.Symbol | None = None):
        if isinstance(rhs, (sp.Basic,)) and not isinstance(rhs, sp.MatrixBase):
            rhs = [rhs]
        if isinstance(rhs, sp.MatrixBase):
            rhs = list(rhs)
        if not isinstance(rhs, (list, tuple)):
            raise InvalidStateError(
                f"rhs must be a list/tuple/Matrix of SymPy expressions or equations, "
                f"got {type(rhs).__name__}"
            )
        if rhs and all(isinstance(e, sp.Eq) for e in rhs):
            rhs, states, t = self._from_equations(rhs, states, t)
        elif any(isinstance(e, sp.Eq) for e in rhs):
            raise SystemDefinitionError("rhs mixes equations and plain expressions")
        if states is None:
            raise SystemDefinitionError("states= is required unless rhs is given as equations")
        if isinstance(states, sp.MatrixBase):
            states = list(states)
        states = tuple(states)
        params = tuple(params)
        if t is not None and not isinstance(t, sp.Symbol):
            raise InvalidStateError(f"t must be a SymPy Symbol, got {type(t).__name__}: {t!r}")
        self.t = t if t is not None else sp.Dummy("t")
        self._t_given = t is not None
        for s in states:
            ok = isinstance(s, sp.Symbol) or (isinstance(s, AppliedUndef) and s.args == (self.t,))
            if not ok:
                raise InvalidStateError(
                    f"state {s!r} is not a Symbol or an undefined function of t "
                    f"(got {type(s).__name__})"
                )
        for q in params:
            if not isinstance(q, sp.Symbol):
                raise InvalidStateError(f"parameter {q!r} is not a Symbol ({type(q).__name__})")
        self._check_duplicates(states, params)
        if len(rhs) != len(states):
            raise SystemDefinitionError(
                f"{len(rhs)} right-hand side expressions for {len(states)} states"
            )
        if not states:
            raise SystemDefinitionError("an ODE system needs at least one state")
        self.states = states
        self.params = params
        self.rhs = sp.Matrix([_sympify_expr(e, f"rhs[{i}]") for i, e in enumerate(rhs)])
        self._check_free_symbols(self.rhs, "the right-hand side")
        # Derivations run on real-valued stand-ins of every state, parameter and t: the
        # dynamics are real (d|x|/dx = sign(x), not the complex modulus' derivative),
        # and a state x(t) becomes a plain variable (∂f/∂t is partial, not total).
        self._canonical_text = None
        self._real = {s: sp.Dummy(_symbol_name(s), real=True) for s in (*states, *params, self.t)}
        self._unreal = {v: k for k, v in self._real.items()}

    def _d(self, expr, var, what: str, extra: dict | None = None) -> sp.Expr:
        """∂expr/∂var, exact, on the real stand-ins (see __init__)."""
        fwd = self._real if extra is None else {**self._real, **extra}
        back = {v: k for k, v in fwd.items()}
        return _diff(expr.xreplace(fwd), fwd.get(var, var), what).xreplace(back)

    # -- construction helpers -------------------------------------------------------
    @staticmethod
    def _from_equations(eqs, states, t):
        lhs_states, rhs = [], []
        for e in eqs:
            d = e.lhs
            if not (isinstance(d, sp.Derivative) and len(d.variables) == 1):
                raise SystemDefinitionError(
                    f"equation {e} must have the form Eq(Derivative(x(t), t), rhs)"
                )
            var = d.variables[0]
            if t is None:
                t = var
            elif var != t:
                raise SystemDefinitionError(f"equation {e} differentiates w.r.t. {var}, not {t}")
            lhs_states.append(d.expr)
            rhs.append(e.rhs)
        if states is None:
            states = lhs_states
        elif tuple(states) != tuple(lhs_states):
            order = {s: i for i, s in enumerate(lhs_states)}
            try:
                rhs = [rhs[order[s]] for s in states]
            except KeyError as err:
                raise SystemDefinitionError(f"state {err.args[0]} has no equation") from None
        return rhs, states, t

    def _check_duplicates(self, states, params):
        seen: dict[sp.Basic, str] = {}
        for kind, group in (("state", states), ("parameter", params)):
            for s in group:
                if s in seen:
                    if seen[s] == kind:
                        raise DuplicateSymbolError(f"{kind} {s} is declared twice")
                    raise DuplicateSymbolError(
                        f"symbol {s} is declared both as state and parameter"
                    )
                seen[s] = kind
        if self.t in seen:
            raise DuplicateSymbolError(f"time symbol {self.t} is also declared as a {seen[self.t]}")

    def _check_free_symbols(self, exprs, where: str, extra: Sequence[sp.Symbol] = ()):
        placeholders = {s: sp.Dummy() for s in self.states}
        allowed = set(self.params) | {self.t} | set(extra)
        for i, e in enumerate(exprs):
            free = e.xreplace(placeholders).free_symbols - set(placeholders.values()) - allowed
            if free:
                names = ", ".join(sorted(str(s) for s in free))
                hint = "" if self._t_given else " (pass t=... for a non-autonomous system)"
                raise UndeclaredSymbolError(
                    f"{where} (entry {i}) contains undeclared symbol(s) {names}: declare each "
                    f"as a state or a parameter{hint}"
                )

    # -- sizes and identity ---------------------------------------------------------
    @property
    def n_states(self) -> int:
        return len(self.states)

    @property
    def n_params(self) -> int:
        return len(self.params)

    @property
    def autonomous(self) -> bool:
        return self._real[self.t] not in self.rhs.xreplace(self._real).free_symbols

    def __repr__(self) -> str:
        return (
            f"ODESystem(n_states={self.n_states}, n_params={self.n_params}, "
            f"states={list(self.states)}, params={list(self.params)})"
        )

    def __eq__(self, other) -> bool:
        return isinstance(other, ODESystem) and self._canonical() == other._canonical()

    def __hash__(self) -> int:
        return hash(self._canonical())

    def _canonical(self) -> str:
        """A canonical text of the system (srepr), the basis of the cache key."""
        if self._canonical_text is None:  # immutable: computed once (derivations hash self)
            self._canonical_text = sp.srepr(
                (self.states, self.params, self.t if self._t_given else None, self.rhs)
            )
        return self._canonical_text

    # -- exact derivations ---------------------------------------------------------
    @functools.cached_property
    def _rhs_real(self) -> sp.Matrix:
        return self.rhs.xreplace(self._real)

    def _sparse_jacobian(self, exprs, wrt, what: str) -> sp.Matrix:
        """∂exprs/∂wrt, differentiating only where a variable occurs (sparse systems:
        a 100-state chain needs ~300 derivatives, not 10,000)."""
        real = [self._real[v] for v in wrt]
        J = sp.zeros(len(exprs), len(wrt))
        for i, e in enumerate(exprs):
            free = e.free_symbols
            for j, v in enumerate(real):
                if v in free:
                    J[i, j] = _diff(e, v, what)
        return J.xreplace(self._unreal)

    @functools.cache  # noqa: B019  (systems are immutable and few)
    def jacobian(self) -> sp.Matrix:
        """∂f/∂y, the n × n Jacobian."""
        return self._sparse_jacobian(self._rhs_real, self.states, "jacobian")

    @functools.cache  # noqa: B019
    def param_jacobian(self) -> sp.Matrix:
        """∂f/∂θ, the n × p parameter Jacobian."""
        return self._sparse_jacobian(self._rhs_real, self.params, "param_jacobian")

    @functools.cache  # noqa: B019
    def time_derivative(self) -> sp.Matrix:
        """∂f/∂t, the explicit time derivative (zero for autonomous systems)."""
        return self._sparse_jacobian(self._rhs_real, [self.t], "time_derivative")

    @functools.cache  # noqa: B019
    def divergence(self) -> sp.Expr:
        """tr(∂f/∂y), the instantaneous change of log-density (Chen et al. 2018, Thm. 1)."""
        J = self.jacobian()
        return sp.Add(*[J[i, i] for i in range(self.n_states)])

    @functools.cache  # noqa: B019
    def divergence_gradient(self) -> tuple[sp.Matrix, sp.Matrix]:
        """(∂tr/∂y, ∂tr/∂θ) as column vectors: the CNF adjoint needs both."""
        div = [self.divergence().xreplace(self._real)]
        gy = self._sparse_jacobian(div, self.states, "divergence_gradient").T
        gp = self._sparse_jacobian(div, self.params, "divergence_gradient").T
        return gy, gp

    def _adjoint_symbols(self, prefix: str, of) -> tuple[sp.Symbol, ...]:
        taken = {str(s) for s in self.rhs.free_symbols} | {_symbol_name(s) for s in self.states}
        out = []
        for s in of:
            name = f"{prefix}_{_symbol_name(s)}"
            while name in taken:
                name += "_"
            taken.add(name)
            out.append(sp.Symbol(name))
        return tuple(out)

    @functools.cache  # noqa: B019
    def adjoint(self) -> AdjointEquations:
        """The adjoint equations λ' = -(∂f/∂y)ᵀλ, μ' = -(∂f/∂θ)ᵀλ as vector–Jacobian products."""
        lam = self._adjoint_symbols("lambda", self.states)
        mu = self._adjoint_symbols("mu", self.params)
        # -∂(λ·f)/∂y_j = -Σ_i λ_i ∂f_i/∂y_j: the vector–Jacobian product, from the
        # (sparse) Jacobian entries, never as a dense matrix product
        J, Jp = self.jacobian(), self.param_jacobian()
        n = self.n_states
        lam_rhs = sp.Matrix(
            [-sp.Add(*[lam[i] * J[i, j] for i in range(n) if J[i, j] != 0]) for j in range(n)]
        )
        mu_rhs = sp.Matrix(
            [
                -sp.Add(*[lam[i] * Jp[i, k] for i in range(n) if Jp[i, k] != 0])
                for k in range(self.n_params)
            ]
        )
        return AdjointEquations(lam, mu, lam_rhs, mu_rhs)

    @functools.cache  # noqa: B019
    def sensitivity(self) -> SensitivityEquations:
        """Forward sensitivity equations S' = (∂f/∂y) S + ∂f/∂θ, S = ∂y/∂θ."""
        taken = {str(q) for q in self.rhs.free_symbols}
        names = []
        for i in range(self.n_states):
            for k in range(self.n_params):
                name = f"S[{_symbol_name(self.states[i])},{self.params[k].name}]"
                while name in taken:
                    name += "'"
                taken.add(name)
                names.append(sp.Symbol(name))
        S = sp.Matrix(self.n_states, self.n_params, names)
        return SensitivityEquations(S, self.jacobian() * S + self.param_jacobian())

    def loss_derivatives(self, loss: Loss) -> dict[str, sp.Matrix]:
        """∂g/∂y, ∂g/∂θ, ∂φ/∂y, ∂φ/∂θ of a :class:`Loss` (exact, SymPy)."""
        self._check_free_symbols([loss.running], "the running cost")
        self._check_free_symbols([loss.observation], "the observation cost", extra=loss.data)
        if self.t in loss.observation.free_symbols:
            raise SystemDefinitionError(
                "the observation cost may not depend on t; put time-dependent weights in data"
            )
        for d in loss.data:
            if d in self.states or d in self.params or d == self.t:
                raise DuplicateSymbolError(f"data placeholder {d} is also a state/param/t")

        data = {d: sp.Dummy(d.name, real=True) for d in loss.data}

        def grad(e, wrt):
            if not wrt:
                return sp.zeros(0, 1)
            return sp.Matrix([self._d(e, v, "loss", data) for v in wrt])

        return {
            "g_y": grad(loss.running, self.states),
            "g_p": grad(loss.running, self.params),
            "phi_y": grad(loss.observation, self.states),
            "phi_p": grad(loss.observation, self.params),
        }

    # -- compilation -----------------------------------------------------------------
    def compile(
        self,
        backend: str = "numba",
        *,
        loss: Loss | None = None,
        cache_dir=None,
        specialize: bool = False,
        verbose: bool = True,
    ):
        """Print the derived expressions as compiled kernels and return a :class:`Model`.

        Parameters
        ----------
        backend : {"numba", "cuda"}
            "numba" (default): the CPU engine. "cuda": a :class:`symode.cuda.CudaModel`,
            one GPU thread per trajectory (``solve``; ``vjp`` with the checkpoint and
            discrete adjoints), compiled at first use by CuPy's NVRTC; needs CuPy and an
            NVIDIA GPU (``pip install 'symode[cuda]'``), else raises
            ``symode.cuda.CudaUnavailableError`` naming what to install. No ``loss=`` or
            ``specialize=`` there yet.
        loss : Loss, optional
            A symbolic loss whose derivatives are compiled too (for ``value_and_grad``).
        cache_dir : path, optional
            Where generated modules live; default ``$XDG_CACHE_HOME/symode``.
        specialize : bool
            False (default): the generic engine, compiled once per machine for every
            system, calls this system's kernels as first-class functions; a new system
            compiles only its kernels (about a second). True: a copy of the engine with
            this system's kernels inlined and its sizes and each method's tableau as
            constants (the fastest runs: for long production solves), compiled per
            method and adjoint mode on first use (tens of seconds each, then cached).
            See docs/architecture.md, "Two tiers".
        verbose : bool
            Say on the ``symode`` logger (stderr by default) when a first call compiles
            for more than a moment. ``logging.getLogger("symode").setLevel("WARNING")``
            silences it everywhere.
        """
        from .model import compile_system

        return compile_system(
            self,
            backend=backend,
            loss=loss,
            cache_dir=cache_dir,
            specialize=specialize,
            verbose=verbose,
        )
