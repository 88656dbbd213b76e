"""Continuous normalizing flows (Chen et al. 2018, section 4; FFJORD, Grathwohl et al. 2019).

A flow dz/dt = f(t, z) from a base density at t = 0 to the data at t = t1 changes the
log-density by the instantaneous change of variables, d log p(z(t))/dt = -tr ∂f/∂z, so

    log p(x) = log p_base(z(0)) - Δ(0),   Δ(0) = ∫₀^{t1} tr ∂f/∂z(t, z(t)) dt,

where z(t) is the solve from z(t1) = x back to t = 0. symode integrates the augmented
state [z, Δ] with Δ' = -tr ∂f/∂z, Δ(t1) = 0, as one more system: a symbolic one whose
trace SymPy derives exactly (and with it the adjoint's ∂tr/∂z, ∂tr/∂θ), or an MLP's
augmented kernels (symode.nn._kernels: the exact trace in closed form for one hidden
layer, by forward mode for deeper nets, and its gradients reverse over forward). With
``trace="hutchinson"`` the trace is Hutchinson's unbiased εᵀ(∂f/∂z)ε, one probe ε per
sample held fixed through the solve (FFJORD; a probe redrawn inside the solve makes the
dynamics random and the adaptive steps blow up): the probes are the last n params of
the augmented system, so a batch of samples with their probes is an ensemble and every
sample runs in parallel with its own steps.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from .errors import NonFiniteInputError, ShapeError
from .model import Model
from .system import Loss, ODESystem

__all__ = ["CNF", "augmented_system"]

TRACES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


def augmented_system(system: ODESystem, trace: str = "exact") -> ODESystem:
    """The ODESystem of [z, Δ]' = [f, -tr ∂f/∂z] (``trace="hutchinson"``: -εᵀ(∂f/∂z)ε with
    the probe's components ε as params after the system's own)."""
    if trace not in TRACES:
        raise ValueError(f"trace must be one of {TRACES}, got {trace!r}")
    taken = {s.name for s in system.rhs.free_symbols} | {
        s.name for s in (*system.states, *system.params, system.t)
    }
    delta = sp.Symbol(_fresh("delta_logp", taken), real=True)
    if trace == "exact":
        div = system.divergence()
        probes = []
    else:
        probes = [sp.Symbol(_fresh(f"eps_{i}", taken), real=True) for i in range(system.n_states)]
        e = sp.Matrix(probes)
        div = (e.T * system.jacobian() * e)[0, 0]
    return ODESystem(
        [*system.rhs, -div],
        states=[*system.states, delta],
        params=[*system.params, *probes],
        t=system.t,
    )


def _fresh(name: str, taken: set) -> str:
    while name in taken:
        name += "_"
    return name


class CNF:
    """A continuous normalizing flow: ``dynamics`` (an :class:`ODESystem`, a compiled
    :class:`Model` of one, or a :class:`symode.nn.MLP`) carries ``base`` samples at
    t = 0 to the data at t = ``t1``.

    - ``log_prob(x, params)``: log-density of data (a solve from t1 back to 0);
    - ``nll_and_grad(x, params)``: the mean negative log-likelihood and its gradient
      w.r.t. the dynamics' params, through the adjoint (``adjoint=``);
    - ``transform(z, params)`` (base → data), ``inverse(x, params)``, ``sample(n,
      params, seed)``.

    ``trace="exact"`` or ``"hutchinson"`` (``probes="rademacher"`` or ``"gaussian"``, one
    per sample and call, from the call's ``seed``; or pass ``eps`` (B, n) yourself).
    ``params`` are the dynamics' own: the MLP's flat weights (default: its ``params``) or
    the symbolic system's parameter values. Solver options (``method``, ``rtol``,
    ``atol``, ...) apply to every solve; the base distribution is fixed (default: the
    standard normal)."""

    def __init__(
        self,
        dynamics,
        base=None,
        t1: float = 1.0,
        trace: str = "exact",
        probes: str = "rademacher",
        *,
        adjoint: str = "checkpoint",
        cache_dir=None,
        verbose: bool = True,
        **solver_options,
    ):
        from .nn.mlp import MLP

        if trace not in TRACES:
            raise ValueError(f"trace must be one of {TRACES}, got {trace!r}")
        if probes not in PROBES:
            raise ValueError(f"probes must be one of {PROBES}, got {probes!r}")
        if not (np.isfinite(t1) and t1 > 0):
            raise ValueError(f"t1 must be a positive time, got {t1!r}")
        if isinstance(dynamics, Model):
            if not isinstance(dynamics.system, ODESystem):
                raise TypeError(
                    "a CNF of a compiled network: pass the symode.nn.MLP itself, not its model"
                )
            dynamics = dynamics.system
        from .densities import DiagonalGaussian

        if isinstance(dynamics, MLP):
            n = dynamics.n_states
        elif isinstance(dynamics, ODESystem):
            n = dynamics.n_states
        else:
            raise TypeError(
                "dynamics must be a symode.ODESystem, a compiled Model of one or a "
                f"symode.nn.MLP, got {type(dynamics).__name__}"
            )
        if base is None:
            base = DiagonalGaussian(dim=n)
        self.base = base
        # a Gaussian base: the NLL as a compiled loss, so that nll_and_grad is one pass
        self._weight = sp.Symbol("w_nll", real=True)
        gaussian = isinstance(base, DiagonalGaussian) and base.dim == n
        if isinstance(dynamics, MLP):
            from .nn.source import DELTA, compile_network

            self.mlp, self.system = dynamics, None
            self.n, self.n_params = n, dynamics.n_params
            loss = self._nll_loss([*dynamics.states, DELTA]) if gaussian else None
            self.model = compile_network(dynamics, loss, cache_dir, False, verbose, cnf=trace)
        else:
            self.mlp, self.system = None, dynamics
            self.n, self.n_params = n, dynamics.n_params
            aug = augmented_system(dynamics, trace)
            loss = self._nll_loss(aug.states) if gaussian else None
            self.model = aug.compile(loss=loss, cache_dir=cache_dir, verbose=verbose)
        self.t1 = float(t1)
        self.trace = trace
        self.probes = probes
        self.adjoint = adjoint
        self.options = solver_options

    def __repr__(self) -> str:
        what = self.mlp if self.mlp is not None else self.system
        return f"CNF({what!r}, t1={self.t1}, trace={self.trace!r})"

    def _nll_loss(self, states) -> Loss:
        """w · (-log p_base(z) + Δ) at each output time, w a data placeholder (1/B at
        t = 0, 0 at t1): the batch's mean NLL as a symbolic loss of the augmented state."""
        *z, delta = states
        mean, std = self.base.mean, self.base.std
        neg_log_base = sum(
            (zi - sp.Float(m, 17)) ** 2 / (2 * sp.Float(sd, 17) ** 2)
            + sp.log(sp.Float(sd, 17))
            + sp.log(2 * sp.pi) / 2
            for zi, m, sd in zip(z, mean, std)
        )
        return Loss(observation=self._weight * (neg_log_base + delta), data=(self._weight,))

    # -- inputs -----------------------------------------------------------------------
    def _params(self, params) -> np.ndarray:
        if params is None:
            if self.mlp is None:
                raise ValueError("params: the symbolic system's parameter values are required")
            params = self.mlp.params
        theta = np.asarray(params, np.float64)
        if theta.shape != (self.n_params,):
            raise ShapeError(
                f"params must have shape ({self.n_params},) (the dynamics' params), got "
                f"{theta.shape}"
            )
        return theta

    def _points(self, x, name: str) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if x.ndim != 2 or x.shape[1] != self.n:
            raise ShapeError(f"{name} must have shape (B, {self.n}), got {x.shape}")
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        if bad.size:
            raise NonFiniteInputError(f"{name} has non-finite entries (rows {bad[:5].tolist()})")
        return x

    def _rows(self, theta, B, seed, eps) -> np.ndarray:
        """The augmented system's params for B samples: θ, then (Hutchinson) each
        sample's probe."""
        rows = np.broadcast_to(theta, (B, theta.size))
        if self.trace == "exact":
            if eps is not None:
                raise ValueError("eps (probes) is for trace='hutchinson' only")
            return np.ascontiguousarray(rows)
        if eps is None:
            rng = np.random.default_rng(seed)
            if self.probes == "rademacher":
                eps = rng.choice([-1.0, 1.0], size=(B, self.n))
            else:
                eps = rng.standard_normal((B, self.n))
        eps = np.asarray(eps, np.float64)
        if eps.shape != (B, self.n):
            raise ShapeError(
                f"eps must have shape ({B}, {self.n}) (one probe per sample), got {eps.shape}"
            )
        return np.hstack([rows, eps])

    def _y0(self, x) -> np.ndarray:
        return np.hstack([x, np.zeros((x.shape[0], 1))])

    # -- the flow ---------------------------------------------------------------------
    def inverse(self, x, params=None, *, seed=None, eps=None, return_delta=False):
        """z(0) for data x (B, n): the solve from t1 back to 0 (and Δ(0), the integral of
        the trace along it, with ``return_delta``)."""
        x = self._points(x, "x")
        rows = self._rows(self._params(params), x.shape[0], seed, eps)
        sol = self.model.solve(self._y0(x), [self.t1, 0.0], rows, **self.options)
        end = sol.y[:, -1]
        return (end[:, : self.n], end[:, self.n]) if return_delta else end[:, : self.n]

    def transform(self, z, params=None, *, seed=None, eps=None, return_log_prob=False):
        """x = z(t1) for base points z (B, n) (with ``return_log_prob`` also log p(x) =
        log p_base(z) - ∫₀^{t1} tr)."""
        z = self._points(z, "z")
        rows = self._rows(self._params(params), z.shape[0], seed, eps)
        sol = self.model.solve(self._y0(z), [0.0, self.t1], rows, **self.options)
        end = sol.y[:, -1]
        x = end[:, : self.n]
        if not return_log_prob:
            return x
        # Δ' = -tr along the forward solve: Δ(t1) = -∫₀^{t1} tr
        return x, self.base.log_prob(z) + end[:, self.n]

    def log_prob(self, x, params=None, *, seed=None, eps=None) -> np.ndarray:
        """log p(x) for data x (B, n): log p_base(z(0)) - Δ(0)."""
        z0, delta = self.inverse(x, params, seed=seed, eps=eps, return_delta=True)
        return self.base.log_prob(z0) - delta

    def sample(self, n: int, params=None, *, seed=None) -> np.ndarray:
        """n samples of the flow: base samples carried to t1."""
        rng = np.random.default_rng(seed)
        z = self.base.sample(int(n), seed=int(rng.integers(2**63)))
        return self.transform(z, params, seed=int(rng.integers(2**63)))

    def nll_and_grad(self, x, params=None, *, seed=None, eps=None, adjoint=None):
        """(mean over the batch of -log p(x), its gradient w.r.t. ``params``) through the
        adjoint (``adjoint``, default the CNF's). With a DiagonalGaussian base the NLL =
        -log p_base(z(0)) + Δ(0) is a compiled loss of the augmented state and this is one
        forward and one backward pass; another base: a solve back to t = 0, then the
        adjoint with the cotangent of the NLL from the base's score."""
        x = self._points(x, "x")
        theta = self._params(params)
        B = x.shape[0]
        rows = self._rows(theta, B, seed, eps)
        ts = [self.t1, 0.0]
        y0 = self._y0(x)
        adjoint = adjoint or self.adjoint
        if self.model.loss is not None:  # one pass: the compiled NLL (a Gaussian base)
            weights = np.zeros((B, 2, 1))
            weights[:, 1, 0] = 1.0 / B
            g = self.model.gradient(y0, ts, rows, weights, adjoint=adjoint, **self.options)
            return float(g.value.sum()), g.params[:, : self.n_params].sum(axis=0)
        sol = self.model.solve(y0, ts, rows, **self.options)
        z0, delta = sol.y[:, -1, : self.n], sol.y[:, -1, self.n]
        nll = -(self.base.log_prob(z0) - delta)
        cot = np.zeros((B, 2, self.n + 1))
        cot[:, 1, : self.n] = -self.base.score(z0) / B
        cot[:, 1, self.n] = 1.0 / B
        g = self.model.vjp(y0, ts, rows, cot, adjoint=adjoint, **self.options)
        return float(nll.mean()), g.params[:, : self.n_params].sum(axis=0)
