"""``MLP``: a small multilayer perceptron as ODE dynamics, y' = f_θ(t, y).

The network's kernels follow the same contract as printed SymPy dynamics
(docs/architecture.md, "The dynamics contract"), so ``mlp.compile()`` gives a
:class:`symode.model.Model`: every solver, adjoint mode and ensemble of the engine works
for it unchanged. θ, the weights and only the weights, is the flat ``params`` vector
of ``solve``/``vjp``/``value_and_grad``; the architecture (layer sizes, activations,
input map, time input) is compiled into the kernels as constants, one generated module
per architecture (cached like a system's).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import sympy as sp

from ..errors import ShapeError
from . import _kernels

__all__ = ["MLP"]

ACTIVATIONS = ("identity", "tanh", "softplus", "relu", "sigmoid", "sin")
INPUT_MAPS = ("identity", "cube", "tanh", "softplus", "relu", "sigmoid", "sin")
INITS = ("glorot", "he", "normal", "torch")


def _np_act(name, x):
    """σ(x) in numpy (``MLP.apply``: a reference written apart from the kernels)."""
    if name == "tanh":
        return np.tanh(x)
    if name == "softplus":
        return np.logaddexp(0.0, x)
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * x))
    if name == "sin":
        return np.sin(x)
    if name == "cube":
        return x**3
    return x


class MLP:
    """Dense layers ``x ↦ σ(W x + b)`` as the right-hand side of an ODE.

    Parameters
    ----------
    sizes : sequence of int
        (n, h₁, …, h_k, n): the state size, the hidden widths, the state size again.
    activation : str or sequence of str
        The hidden layers' activation, one of ``ACTIVATIONS`` (or one per hidden layer).
    output_activation : str
        The last layer's (default "identity").
    time_input : bool
        Feed t to the first layer as one more input (non-autonomous dynamics).
    input_map : str, optional
        An element-wise map g applied to y before the first layer: "cube" (the y³ of
        torchdiffeq's spiral demo) or any activation name.
    init : {"glorot", "he", "normal", "torch"}
        The initial weights ``mlp.params``: Glorot-uniform weights (Glorot & Bengio
        2010), He-normal (He et al. 2015), N(0, std²) weights (``std``, default 0.1:
        torchdiffeq's ``ode_demo.py``), each with zero biases; or PyTorch's ``nn.Linear``
        default, U(±1/√fan_in) for weights and biases.
    std : float, for init="normal"
    seed : int
        Seeds the initial weights (numpy's default_rng).

    Attributes
    ----------
    params : (n_params,) float64 array
        Initial weights, laid out layer by layer, W (row-major, out × in) then b;
        ``mlp.layers(theta)`` gives named views of any such vector.
    states : tuple of Symbols
        y0, y1, …: the names a symbolic :class:`symode.Loss` uses for the state.
    """

    def __init__(
        self,
        sizes,
        activation="tanh",
        *,
        output_activation: str = "identity",
        time_input: bool = False,
        input_map: str | None = None,
        init: str = "glorot",
        std: float | None = None,
        seed: int = 0,
    ):
        sizes = tuple(sizes)
        if len(sizes) < 2 or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in sizes
        ):
            raise ShapeError(f"sizes must be at least two positive ints, got {sizes!r}")
        if sizes[0] != sizes[-1]:
            raise ShapeError(
                f"an ODE's dynamics map the state to its derivative: sizes[0] ({sizes[0]}) "
                f"must equal sizes[-1] ({sizes[-1]})"
            )
        self.sizes = tuple(int(s) for s in sizes)
        n_hidden = len(sizes) - 2
        acts = (activation,) * n_hidden if isinstance(activation, str) else tuple(activation)
        if len(acts) != n_hidden:
            raise ShapeError(
                f"activation: {len(acts)} given for {n_hidden} hidden layers (sizes {sizes})"
            )
        for name in (*acts, output_activation):
            if name not in ACTIVATIONS:
                raise ValueError(f"unknown activation {name!r}; choose from {ACTIVATIONS}")
        self.activations = acts + (output_activation,)
        self.input_map = "identity" if input_map is None else input_map
        if self.input_map not in INPUT_MAPS:
            raise ValueError(f"unknown input_map {input_map!r}; choose from {INPUT_MAPS}")
        self.time_input = bool(time_input)
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose from {INITS}")
        self.n_states = self.sizes[0]
        self.states = sp.symbols(f"y0:{self.n_states}", real=True)
        self.t = sp.Symbol("t", real=True)
        # layer l: W_l (m × k) at offset pw[l], then b_l (m) at pb[l]
        self.shapes = []
        k = self.n_states + self.time_input
        for m in self.sizes[1:]:
            self.shapes.append((m, k))
            k = m
        self.n_params = sum(m * k + m for m, k in self.shapes)
        self.init_scheme, self.std, self.seed = init, std, seed
        self.params = self.init(seed)

    # -- weights ---------------------------------------------------------------------
    def layers(self, params=None) -> list[dict]:
        """Views of a flat weight vector (default ``self.params``) per layer:
        ``[{"W": (m, k) array, "b": (m,) array}, …]``; writing a view writes the vector."""
        theta = self.params if params is None else params
        if not isinstance(theta, np.ndarray) or theta.shape != (self.n_params,):
            raise ShapeError(
                f"params must be a ({self.n_params},) array (this MLP's weights), got "
                f"{getattr(theta, 'shape', type(theta).__name__)}"
            )
        out, o = [], 0
        for m, k in self.shapes:
            out.append(
                {"W": theta[o : o + m * k].reshape(m, k), "b": theta[o + m * k : o + m * k + m]}
            )
            o += m * k + m
        return out

    def init(
        self, seed=None, scheme: str | None = None, std: float | None = None, dtype=np.float64
    ) -> np.ndarray:
        """A new flat weight vector, seeded; ``scheme`` and ``std`` default to the
        constructor's. ``dtype=np.float32`` rounds the same draws to single precision
        (the weights of a float32 model: solve(..., dtype=np.float32) uses them as
        float32 either way)."""
        if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
        scheme = scheme or self.init_scheme
        if scheme not in INITS:
            raise ValueError(f"unknown init {scheme!r}; choose from {INITS}")
        std = self.std if std is None else std
        rng = np.random.default_rng(seed)
        theta = np.zeros(self.n_params)
        for layer, (m, k) in zip(self.layers(theta), self.shapes):
            if scheme == "glorot":
                r = np.sqrt(6.0 / (k + m))
                layer["W"][:] = rng.uniform(-r, r, (m, k))
            elif scheme == "he":
                layer["W"][:] = rng.normal(0.0, np.sqrt(2.0 / k), (m, k))
            elif scheme == "normal":
                layer["W"][:] = rng.normal(0.0, 0.1 if std is None else std, (m, k))
            else:  # torch.nn.Linear's reset_parameters
                r = 1.0 / np.sqrt(k)
                layer["W"][:] = rng.uniform(-r, r, (m, k))
                layer["b"][:] = rng.uniform(-r, r, m)
        return theta.astype(dtype, copy=False)

    def apply(self, y, params=None, t=0.0) -> np.ndarray:
        """f_θ(t, y) in numpy for y of shape (n,) or (B, n): a reference written apart
        from the compiled kernels (and handy for plotting a vector field)."""
        y = np.asarray(y, np.float64)
        x = _np_act(self.input_map, y)
        if self.time_input:
            x = np.concatenate([x, np.broadcast_to(np.float64(t), x.shape[:-1] + (1,))], -1)
        for layer, name in zip(
            self.layers(self.params if params is None else params), self.activations
        ):
            x = _np_act(name, x @ layer["W"].T + layer["b"])
        return x

    # -- compiling -------------------------------------------------------------------
    def arch(self) -> _kernels.Arch:
        """The architecture as the kernels read it: sizes, codes and offsets (params and
        work)."""
        n, L = self.n_states, len(self.shapes)
        pw, pb = [], []
        o = 0
        for m, k in self.shapes:
            pw.append(o)
            pb.append(o + m * k)
            o += m * k + m
        widths = [n + self.time_input] + [m for m, _ in self.shapes]
        maxw = max(widths)
        # work: x_0..x_L, z_0..z_{L-1}, dx_0..dx_L, dz_0..dz_{L-1}, 4 backward buffers, probe
        o = 0

        def place(ws):  # consecutive blocks of widths ws from o: their offsets
            nonlocal o
            offsets = []
            for w in ws:
                offsets.append(o)
                o += w
            return offsets

        xo, zo, dxo, dzo = place(widths), place(widths[1:]), place(widths), place(widths[1:])
        bo = o
        o += 4 * maxw
        eo = o
        o += n
        codes = _kernels.CODES
        return _kernels.Arch(
            n, int(self.time_input), codes[self.input_map], L, tuple(widths),
            tuple(codes[a] for a in self.activations), tuple(pw), tuple(pb), tuple(xo),
            tuple(zo), tuple(dxo), tuple(dzo), bo, maxw, eo, o,
        )  # fmt: skip

    def __repr__(self) -> str:
        extra = ""
        if self.time_input:
            extra += ", time_input=True"
        if self.input_map != "identity":
            extra += f", input_map={self.input_map!r}"
        return f"MLP({list(self.sizes)}, activation={list(self.activations[:-1])}{extra})"

    def _canonical(self) -> str:
        """The cache key's text: the architecture, and the sources that decide the
        generated module's text (load_generated adds symode's generator, codegen)."""
        here = Path(__file__).parent  # the kernels, this file and the module's printer
        src = b"".join((here / f).read_bytes() for f in ("_kernels.py", "mlp.py", "source.py"))
        return repr(("MLP", self.arch(), hashlib.sha256(src).hexdigest()))

    def compile(self, *, loss=None, cache_dir=None, specialize: bool = False, verbose: bool = True):
        """The neural ODE y' = f_θ(t, y) as a compiled :class:`~symode.model.Model`, with
        the same ``solve``, ``vjp``, ``value_and_grad`` and ensembles as a compiled
        :class:`~symode.ODESystem`; ``params`` is the flat weight vector. ``loss``: a
        :class:`symode.Loss` in ``self.states`` (y0, y1, …), t and data symbols."""
        from .source import compile_network

        return compile_network(self, loss, cache_dir, specialize, verbose)
