"""Discrete normalizing flows: planar and radial stacks (Rezende & Mohamed 2015), their
exact log-determinants, dense Jacobians as a reference, and a variational fit of an
unnormalised density with hand-written backprop; with the paper's four 2-D test
energies U1–U4.

A flow maps base samples z ~ N(0, I) through K invertible layers, x = f_K ∘ … ∘ f_1(z),
and tracks log q(x) = log N(z) - Σ_k log|det ∂f_k/∂z|. Each layer's determinant costs
O(d) (the matrix determinant lemma) where a dense Jacobian's costs O(d³):
:func:`dense_logdet` of :meth:`PlanarFlow.jacobian` is the reference the tests hold the
O(d) formulas to, and ``benchmarks/bench_flows.py`` times the difference.

The parameters of a stack are one flat float64 vector, layer by layer, as
``symode.nn.MLP``'s weights: ``flow.layers(params)`` gives named views, and the
optimizers of :mod:`symode.nn.train` update it in place. Everything is vectorised over
samples; the only Python loop is over the layers.

References
----------
Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows", ICML:
eqs. 10–12 (planar), 14 (radial), 15 (the free energy), Appendix A (invertibility),
Table 1 (U1–U4).

U2–U4 depend on z₁ only through bounded terms, so exp(-U) does not decay along z₁ and
cannot be normalised: their ELBOs (and KSDs) rank fits against each other but are not
bounds on a finite log-evidence. U1 confines both coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.special import expit

from .densities import DiagonalGaussian
from .errors import NonFiniteInputError, ShapeError

__all__ = [
    "PlanarFlow",
    "RadialFlow",
    "dense_logdet",
    "U1",
    "U2",
    "U3",
    "U4",
    "grad_U1",
    "grad_U2",
    "grad_U3",
    "grad_U4",
    "ENERGIES",
]


def _softplus(x):
    return np.logaddexp(0.0, x)


def dense_logdet(jacobian) -> np.ndarray:
    """log|det J| of (d, d) or (n, d, d) Jacobians by LU (``numpy.linalg.slogdet``):
    the O(d³) reference for a flow's O(d) log-determinants. A singular Jacobian gives
    -inf."""
    J = np.asarray(jacobian, dtype=np.float64)
    if J.ndim not in (2, 3) or J.shape[-1] != J.shape[-2]:
        raise ShapeError(f"jacobian must have shape (d, d) or (n, d, d), got {J.shape}")
    if not np.isfinite(J).all():
        raise NonFiniteInputError("jacobian contains NaN or infinity")
    return np.linalg.slogdet(J)[1]


class _Flow:
    """A stack of ``n_layers`` layers of one kind on R^dim. Subclasses name their
    per-layer parameters (``_fields``: name -> size as a function of dim) and give one
    layer's forward pass, backward pass and Jacobian."""

    _fields: tuple = ()  # (name, size(dim)) in the order they sit in a layer's block

    def __init__(self, dim: int, n_layers: int, *, seed: int = 0):
        for name, v in (("dim", dim), ("n_layers", n_layers)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.dim, self.n_layers = int(dim), int(n_layers)
        self.layer_size = sum(size(self.dim) for _, size in self._fields)
        self.n_params = self.layer_size * self.n_layers
        self.base = DiagonalGaussian(dim=self.dim)
        self.seed = seed
        self.params = self.init(seed)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, n_layers={self.n_layers})"

    # -- parameters ------------------------------------------------------------------
    def _check_params(self, params) -> np.ndarray:
        theta = self.params if params is None else params
        if not isinstance(theta, np.ndarray) or theta.shape != (self.n_params,):
            raise ShapeError(
                f"params must be a ({self.n_params},) array ({self.n_layers} layers × "
                f"{self.layer_size}), got {_shape(theta)}"
            )
        if not np.isfinite(theta).all():
            raise NonFiniteInputError("params contains NaN or infinity")
        return theta

    def layers(self, params=None) -> list[dict]:
        """Views of a flat parameter vector (default ``self.params``) per layer, e.g.
        ``[{"u": (d,), "w": (d,), "b": (1,)}, …]`` for a planar flow; writing a view
        writes the vector."""
        theta = self._check_params(params)
        out, o = [], 0
        for _ in range(self.n_layers):
            layer = {}
            for name, size in self._fields:
                k = size(self.dim)
                layer[name] = theta[o : o + k]
                o += k
            out.append(layer)
        return out

    def init(self, seed=None) -> np.ndarray:
        """A new flat float64 parameter vector, seeded (``numpy.random.default_rng``)."""
        theta = np.zeros(self.n_params)
        rng = np.random.default_rng(seed)
        for layer in self.layers(theta):
            self._init_layer(layer, rng)
        return theta

    # -- the map ---------------------------------------------------------------------
    def _points(self, z, name="z") -> tuple[np.ndarray, bool]:
        a = np.asarray(z)
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")
        if a.ndim not in (1, 2) or a.shape[-1] != self.dim:
            raise ShapeError(
                f"{name} must have shape (n, {self.dim}) or ({self.dim},) for this "
                f"{self!r}, got {a.shape}"
            )
        a = np.array(a, dtype=np.float64, ndmin=2)
        if not np.isfinite(a).all():
            raise NonFiniteInputError(f"{name} contains NaN or infinity")
        return a, np.ndim(z) == 1

    def forward(self, z, params=None) -> tuple[np.ndarray, np.ndarray]:
        """x = f(z) and log|det ∂x/∂z| for z of shape (n, dim) (giving (n, dim) and
        (n,)) or (dim,) (giving (dim,) and a 0-d array), in float64."""
        a, single = self._points(z)
        x, logdet, _ = self._forward(a, self._check_params(params))
        return (x[0], logdet[0]) if single else (x, logdet)

    def _forward(self, z, theta, keep=False):
        logdet = np.zeros(z.shape[0])
        caches = []
        for layer in self.layers(theta):
            z, ld, cache = self._layer_forward(z, layer)
            logdet += ld
            if keep:
                caches.append(cache)
        return z, logdet, caches

    def jacobian(self, z, params=None) -> np.ndarray:
        """The dense Jacobian ∂x/∂z, (n, dim, dim) (or (dim, dim) for one point): the
        per-layer Jacobians at each layer's input, multiplied J_K ⋯ J_1. O((K-1) d³) per
        sample: a reference (with :func:`dense_logdet`), not for training."""
        a, single = self._points(z)
        J = None
        for layer in self.layers(self._check_params(params)):
            Jk = self._layer_jacobian(a, layer)
            J = Jk if J is None else Jk @ J
            a = self._layer_forward(a, layer)[0]
        return J[0] if single else J

    def sample(self, n: int, params=None, seed=None) -> tuple[np.ndarray, np.ndarray]:
        """n samples x of the flow's density q and their log q(x) = log N(z) -
        log|det ∂x/∂z| (Rezende & Mohamed eq. 7)."""
        z = self.base.sample(n, seed)
        x, logdet, _ = self._forward(z, self._check_params(params))
        return x, self.base.log_prob(z) - logdet

    # -- gradients -------------------------------------------------------------------
    def vjp(self, z, params, x_cotangent, logdet_cotangent) -> tuple[np.ndarray, np.ndarray]:
        """Backprop through the stack by hand: for a scalar
        L = Σᵢ x̄ᵢ·xᵢ + Σᵢ l̄ᵢ log|det ∂xᵢ/∂zᵢ| (x̄ = ``x_cotangent``, (n, dim); l̄ =
        ``logdet_cotangent``, (n,)), returns (∂L/∂params, (n_params,); ∂L/∂z, (n, dim))."""
        a, _ = self._points(z)
        n = a.shape[0]
        theta = self._check_params(params)
        xbar = np.asarray(x_cotangent, dtype=np.float64)
        lbar = np.asarray(logdet_cotangent, dtype=np.float64)
        if xbar.shape != a.shape:
            raise ShapeError(f"x_cotangent must have shape {a.shape} (as z), got {xbar.shape}")
        if lbar.shape != (n,):
            raise ShapeError(f"logdet_cotangent must have shape ({n},), got {lbar.shape}")
        return self._vjp(a, theta, xbar, lbar)

    def _vjp(self, z, theta, xbar, lbar):
        _, _, caches = self._forward(z, theta, keep=True)
        grad = np.zeros(self.n_params)
        gviews = self.layers(grad)
        zbar = xbar.copy()
        for layer, g, cache in zip(
            reversed(self.layers(theta)), reversed(gviews), reversed(caches)
        ):
            zbar = self._layer_backward(layer, cache, zbar, lbar, g)
        return grad, zbar

    def elbo_and_grad(
        self,
        params,
        log_target: Callable[[np.ndarray], np.ndarray],
        grad_log_target: Callable[[np.ndarray], np.ndarray],
        n_samples: int,
        seed=None,
    ) -> tuple[float, np.ndarray]:
        """The evidence lower bound of the flow q for an unnormalised target p̃ and its
        gradient in ``params``, by the reparametrisation trick on ``n_samples`` base
        samples:

            ELBO = E_{z~N(0,I)} [log p̃(f(z)) - log N(z) + log|det ∂f/∂z|]
                 = log Z - KL(q ‖ p),

        the negative of Rezende & Mohamed's free energy (eq. 15); maximise it (minimise
        ``-elbo``) for the reverse-KL fit. The same ``seed`` gives the same base samples,
        so the estimate is a smooth deterministic function of ``params`` (pass a new
        seed each iteration when training: the stochastic gradient is unbiased).

        Parameters
        ----------
        params : (n_params,) array
        log_target : callable
            log p̃(x): an (n, dim) array to (n,), up to a constant (e.g. ``-U1(x)``).
        grad_log_target : callable
            ∇ₓ log p̃(x): (n, dim) to (n, dim).
        n_samples : int
        seed : int, optional

        Returns
        -------
        (elbo, grad) : (float, (n_params,) array)

        Raises
        ------
        ShapeError, NonFiniteInputError
            The target's outputs of the wrong shape or not finite (the message says
            which and at how many samples).
        """
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)):
            raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
        if n_samples < 1:
            raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
        theta = self._check_params(params)
        z = self.base.sample(n_samples, seed)
        x, logdet, _ = self._forward(z, theta)
        lp = _target_output(log_target(x), (n_samples,), "log_target(x)", x)
        glp = _target_output(grad_log_target(x), x.shape, "grad_log_target(x)", x)
        elbo = float(np.mean(lp - self.base.log_prob(z) + logdet))
        grad, _ = self._vjp(z, theta, glp / n_samples, np.full(n_samples, 1.0 / n_samples))
        return elbo, grad


def _shape(x) -> str:
    return str(getattr(x, "shape", type(x).__name__))


def _target_output(v, shape, name, x) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if a.shape != shape:
        raise ShapeError(f"{name} must have shape {shape} for x of shape {x.shape}, got {a.shape}")
    bad = ~np.isfinite(a)
    if bad.any():
        rows = np.flatnonzero(bad if a.ndim == 1 else bad.any(axis=1))
        raise NonFiniteInputError(
            f"{name} is not finite at {rows.size} of {x.shape[0]} samples (first at x = "
            f"{x[rows[0]].tolist()}): the flow put mass where the target has none, or the "
            "target overflows"
        )
    return a


class PlanarFlow(_Flow):
    """Planar layers f(z) = z + û h(wᵀz + b), h = tanh (Rezende & Mohamed eq. 10).

    log|det ∂f/∂z| = log|1 + ûᵀψ(z)|, ψ = h'(wᵀz + b) w (eqs. 11–12): O(d) per layer.

    Each layer stores (u, w, b), 2·dim + 1 numbers. The layer uses
    û = u + [m(wᵀu) - wᵀu] w / ‖w‖², m(s) = -1 + softplus(s) (Appendix A), so
    wᵀû = m(wᵀu) > -1 and the layer is invertible for every parameter vector; then
    1 + ûᵀψ = 1 + (1 - h²) wᵀû > 0 as well. A layer with w = 0 is the identity (û
    is taken as u, which then does nothing: h' w = 0 and the shift is u·tanh(b), a
    translation); initial weights never have w = 0.

    Parameters
    ----------
    dim, n_layers : int
    seed : int
        Seeds ``params``: w ~ N(0, I/dim) (so wᵀz ~ N(0, 1) for base samples),
        u ~ N(0, 0.01·I/dim) (‖u‖ ≈ 0.1: each layer starts near the identity), b = 0.

    Examples
    --------
    >>> import numpy as np
    >>> from symode.flows import PlanarFlow, U1, grad_U1
    >>> flow = PlanarFlow(2, 8)
    >>> elbo, grad = flow.elbo_and_grad(
    ...     flow.params, lambda x: -U1(x), lambda x: -grad_U1(x), n_samples=256, seed=0)
    >>> grad.shape == flow.params.shape
    True
    """

    _fields = (("u", lambda d: d), ("w", lambda d: d), ("b", lambda d: 1))

    def _init_layer(self, layer, rng):
        d = self.dim
        layer["w"][:] = rng.normal(0.0, 1.0 / math.sqrt(d), d)
        layer["u"][:] = rng.normal(0.0, 0.1 / math.sqrt(d), d)

    def u_hat(self, params=None) -> np.ndarray:
        """(n_layers, dim): each layer's û, the u it uses (wᵀû > -1)."""
        return np.array([self._uhat(L)[0] for L in self.layers(params)])

    @staticmethod
    def _uhat(layer):
        """û, and (s = wᵀu, μ = m(s) - s = softplus(-s) - 1, ‖w‖²) for the backward
        pass."""
        u, w = layer["u"], layer["w"]
        s = float(w @ u)
        n2 = float(w @ w)
        mu = float(_softplus(-s)) - 1.0
        if n2 == 0.0:
            return u, (s, 0.0, n2)
        return u + (mu / n2) * w, (s, mu, n2)

    def _layer_forward(self, z, layer):
        uh, extra = self._uhat(layer)
        w = layer["w"]
        h = np.tanh(z @ w + layer["b"][0])
        dh = 1.0 - h * h
        m = float(w @ uh)  # = m(wᵀu) > -1
        g = 1.0 + dh * m  # 1 + ûᵀψ > 0
        return z + h[:, None] * uh, np.log(g), (z, uh, extra, h, dh, m, g)

    def _layer_backward(self, layer, cache, zbar_out, lbar, grad):
        """Cotangents of z' = z + û h(a), a = wᵀz + b, and log g, g = 1 + (1 - h²) m,
        m = wᵀû; then through û(u, w)."""
        z, uh, (s, mu, n2), h, dh, m, g = cache
        w = layer["w"]
        c = lbar / g  # ∂L/∂g
        hbar = zbar_out @ uh - 2.0 * h * m * c  # ∂g/∂h = -2h m
        abar = hbar * dh
        mbar = float(c @ dh)  # ∂g/∂m = 1 - h²
        uh_bar = h @ zbar_out + mbar * w  # through z' and m = wᵀû
        wbar = abar @ z + mbar * uh  # through a and m
        grad["b"][0] = abar.sum()
        if n2 == 0.0:
            grad["u"][:] = uh_bar
        else:
            # û = u + μ(s) w / n2, s = wᵀu, μ' = -σ(-s)
            dmu = -float(expit(-s))
            p = float(uh_bar @ w)
            grad["u"][:] = uh_bar + (dmu * p / n2) * w
            wbar = wbar + (dmu * p / n2) * layer["u"] + (mu / n2) * uh_bar
            wbar = wbar - (2.0 * mu * p / n2**2) * w
        grad["w"][:] = wbar
        return zbar_out + abar[:, None] * w

    def _layer_jacobian(self, z, layer):
        """I + (1 - h²) û wᵀ at each z: (n, d, d)."""
        uh, _ = self._uhat(layer)
        w = layer["w"]
        dh = 1.0 - np.tanh(z @ w + layer["b"][0]) ** 2
        return np.eye(self.dim) + dh[:, None, None] * np.outer(uh, w)


class RadialFlow(_Flow):
    """Radial layers f(z) = z + β̂ h(α, r)(z - z₀), h = 1/(α + r), r = ‖z - z₀‖
    (Rezende & Mohamed eq. 14).

    log|det ∂f/∂z| = (d - 1) log(1 + β̂h) + log(1 + β̂h + β̂h'r), which with
    h' = -h² is (d - 1) log(1 + β̂h) + log(1 + α β̂ h²): O(d) per layer.

    Each layer stores (z₀, α̃, β̃), dim + 2 numbers: α = softplus(α̃) > 0 and
    β̂ = -α + softplus(β̃) > -α (Appendix A), so both factors are positive and the layer
    is invertible for every parameter vector.

    Parameters
    ----------
    dim, n_layers : int
    seed : int
        Seeds ``params``: z₀ ~ N(0, I), α̃ = 0 (α = log 2), β̃ ~ N(0, 0.1²) (β̂ ≈ 0.05 β̃:
        each layer starts near the identity; β̃ = α̃ gives exactly the identity).
    """

    _fields = (("z0", lambda d: d), ("alpha", lambda d: 1), ("beta", lambda d: 1))

    def _init_layer(self, layer, rng):
        layer["z0"][:] = rng.normal(0.0, 1.0, self.dim)
        layer["beta"][0] = rng.normal(0.0, 0.1)

    @staticmethod
    def _ab(layer):
        alpha = float(_softplus(layer["alpha"][0]))
        return alpha, -alpha + float(_softplus(layer["beta"][0]))

    def _layer_forward(self, z, layer):
        alpha, bh = self._ab(layer)
        delta = z - layer["z0"]
        r = np.sqrt(np.einsum("ij,ij->i", delta, delta))
        h = 1.0 / (alpha + r)
        A = 1.0 + bh * h
        B = 1.0 + alpha * bh * h * h
        logdet = (self.dim - 1) * np.log(A) + np.log(B)
        return z + (bh * h)[:, None] * delta, logdet, (delta, r, h, A, B, alpha, bh)

    def _layer_backward(self, layer, cache, zbar_out, lbar, grad):
        """Cotangents of z' = z + β̂ h δ, δ = z - z₀, h = 1/(α + r), r = ‖δ‖, and of
        (d - 1) log A + log B, A = 1 + β̂h, B = 1 + αβ̂h²; then through α(α̃), β̂(α̃, β̃)."""
        delta, r, h, A, B, alpha, bh = cache
        zd = np.einsum("ij,ij->i", zbar_out, delta)
        Abar = (self.dim - 1) * lbar / A
        Bbar = lbar / B
        hbar = bh * zd + Abar * bh + Bbar * 2.0 * alpha * bh * h
        bh_bar = float(h @ zd + Abar @ h + Bbar @ (alpha * h * h))
        alpha_bar = float(Bbar @ (bh * h * h)) - float(h * h @ hbar)  # direct, and via h
        rbar = -h * h * hbar
        unit = np.divide(delta, r[:, None], out=np.zeros_like(delta), where=r[:, None] > 0)
        dbar = bh * h[:, None] * zbar_out + rbar[:, None] * unit
        grad["z0"][:] = -dbar.sum(axis=0)
        # β̂ = -α + softplus(β̃), α = softplus(α̃)
        alpha_bar -= bh_bar
        grad["beta"][0] = bh_bar * float(expit(layer["beta"][0]))
        grad["alpha"][0] = alpha_bar * float(expit(layer["alpha"][0]))
        return zbar_out + dbar

    def _layer_jacobian(self, z, layer):
        """(1 + β̂h) I + β̂ h'(r) δδᵀ / r at each z, h' = -h²: (n, d, d)."""
        alpha, bh = self._ab(layer)
        delta = z - layer["z0"]
        r = np.sqrt(np.einsum("ij,ij->i", delta, delta))
        h = 1.0 / (alpha + r)
        rank1 = np.divide(-bh * h * h, r, out=np.zeros_like(r), where=r > 0)[:, None, None] * (
            delta[:, :, None] * delta[:, None, :]
        )
        return (1.0 + bh * h)[:, None, None] * np.eye(self.dim) + rank1


# -- Rezende & Mohamed's 2-D test energies (Table 1): p(z) ∝ exp(-U(z)) ----------------
def _z2(z, name="z"):
    a = np.asarray(z, dtype=np.float64)
    if a.ndim not in (1, 2) or a.shape[-1] != 2:
        raise ShapeError(f"{name} must have shape (n, 2) or (2,) (the energies are 2-D), got "
                         f"{a.shape}")  # fmt: skip
    return a[..., 0], a[..., 1]


def _w1(z1):
    return np.sin(0.5 * np.pi * z1), 0.5 * np.pi * np.cos(0.5 * np.pi * z1)


def _w2(z1):
    w = 3.0 * np.exp(-0.5 * ((z1 - 1.0) / 0.6) ** 2)
    return w, -w * (z1 - 1.0) / 0.36


def _w3(z1):
    sg = expit((z1 - 1.0) / 0.3)
    return 3.0 * sg, 3.0 * sg * (1.0 - sg) / 0.3


def _two_wells(e1, s1, e2, s2):
    """-log(exp(-½(e1/s1)²) + exp(-½(e2/s2)²)) and its derivatives in e1 and e2 (the
    two terms' softmax weights times e/s²)."""
    a1, a2 = -0.5 * (e1 / s1) ** 2, -0.5 * (e2 / s2) ** 2
    lse = np.logaddexp(a1, a2)
    p1, p2 = np.exp(a1 - lse), np.exp(a2 - lse)
    return -lse, p1 * e1 / s1**2, p2 * e2 / s2**2


def U1(z) -> np.ndarray:
    """½((‖z‖ - 2)/0.4)² - log(exp(-½((z₁ - 2)/0.6)²) + exp(-½((z₁ + 2)/0.6)²)): a ring
    cut into two arcs. z: (n, 2) or (2,)."""
    z1, z2 = _z2(z)
    r = np.hypot(z1, z2)
    return 0.5 * ((r - 2.0) / 0.4) ** 2 + _two_wells(z1 - 2.0, 0.6, z1 + 2.0, 0.6)[0]


def grad_U1(z) -> np.ndarray:
    """∇U1, the shape of z. At z = 0, where ‖z‖ has no gradient, the ring term's is
    taken as 0 (the midpoint of its one-sided limits)."""
    z1, z2 = _z2(z)
    r = np.hypot(z1, z2)
    radial = np.divide((r - 2.0) / 0.16, r, out=np.zeros_like(r), where=r > 0)
    _, d1, d2 = _two_wells(z1 - 2.0, 0.6, z1 + 2.0, 0.6)
    return np.stack([radial * z1 + d1 + d2, radial * z2], axis=-1)


def U2(z) -> np.ndarray:
    """½((z₂ - w₁(z))/0.4)², w₁ = sin(2πz₁/4): a sine-shaped ridge."""
    z1, z2 = _z2(z)
    return 0.5 * ((z2 - _w1(z1)[0]) / 0.4) ** 2


def grad_U2(z) -> np.ndarray:
    """∇U2, the shape of z."""
    z1, z2 = _z2(z)
    w1, dw1 = _w1(z1)
    e = (z2 - w1) / 0.16
    return np.stack([-e * dw1, e], axis=-1)


def U3(z) -> np.ndarray:
    """-log(exp(-½((z₂ - w₁)/0.35)²) + exp(-½((z₂ - w₁ + w₂)/0.35)²)),
    w₂ = 3 exp(-½((z₁ - 1)/0.6)²): two ridges that split apart near z₁ = 1."""
    z1, z2 = _z2(z)
    w1, w2 = _w1(z1)[0], _w2(z1)[0]
    return _two_wells(z2 - w1, 0.35, z2 - w1 + w2, 0.35)[0]


def grad_U3(z) -> np.ndarray:
    """∇U3, the shape of z."""
    z1, z2 = _z2(z)
    (w1, dw1), (w2, dw2) = _w1(z1), _w2(z1)
    _, d1, d2 = _two_wells(z2 - w1, 0.35, z2 - w1 + w2, 0.35)
    return np.stack([-dw1 * d1 + (dw2 - dw1) * d2, d1 + d2], axis=-1)


def U4(z) -> np.ndarray:
    """-log(exp(-½((z₂ - w₁)/0.4)²) + exp(-½((z₂ - w₁ + w₃)/0.35)²)),
    w₃ = 3σ((z₁ - 1)/0.3): two ridges, one shifted by a smooth step."""
    z1, z2 = _z2(z)
    w1, w3 = _w1(z1)[0], _w3(z1)[0]
    return _two_wells(z2 - w1, 0.4, z2 - w1 + w3, 0.35)[0]


def grad_U4(z) -> np.ndarray:
    """∇U4, the shape of z."""
    z1, z2 = _z2(z)
    (w1, dw1), (w3, dw3) = _w1(z1), _w3(z1)
    _, d1, d2 = _two_wells(z2 - w1, 0.4, z2 - w1 + w3, 0.35)
    return np.stack([-dw1 * d1 + (dw3 - dw1) * d2, d1 + d2], axis=-1)


ENERGIES = {"U1": (U1, grad_U1), "U2": (U2, grad_U2), "U3": (U3, grad_U3), "U4": (U4, grad_U4)}
"""name -> (U, ∇U) for Rezende & Mohamed's Table 1."""
