"""Training on flat weight vectors, without a deep-learning framework: Adam, AdamW and
RMSprop, gradient clipping, learning-rate schedules, checkpoints in one ``.npz``, and
a fit loop with a progress bar, NFE per iteration and early stopping.

Optimizers update their ``params`` array in place: ``opt = Adam(theta, lr=1e-2)``, then
``opt.step(grad)`` per iteration. The updates are PyTorch's (``torch.optim``, with its
defaults): Adam (Kingma & Ba 2015) with bias correction, AdamW's decoupled weight decay
(Loshchilov & Hutter 2019), RMSprop (Tieleman & Hinton 2012) without momentum.
"""

from __future__ import annotations

import math
import os
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "Adam",
    "AdamW",
    "CheckpointError",
    "FitResult",
    "RMSprop",
    "clip_grad_norm",
    "constant",
    "cosine",
    "exponential",
    "fit",
    "load_checkpoint",
    "save_checkpoint",
]


# -- learning-rate schedules: iteration (from 0) -> rate ------------------------------------
def constant(lr: float):
    return lambda it: lr


def exponential(lr: float, gamma: float):
    """lr · gammaⁱᵗ."""
    return lambda it: lr * gamma**it


def cosine(lr: float, total: int, final: float = 0.0, warmup: int = 0):
    """A linear warm-up over ``warmup`` iterations, then cosine decay to ``final`` at
    ``total`` (Loshchilov & Hutter 2017, without restarts)."""

    def schedule(it):
        if it < warmup:
            return lr * (it + 1) / warmup
        frac = min(1.0, (it - warmup) / max(1, total - warmup))
        return final + 0.5 * (lr - final) * (1.0 + math.cos(math.pi * frac))

    return schedule


def clip_grad_norm(grad: np.ndarray, max_norm: float) -> float:
    """Scale ``grad`` in place so that its 2-norm is at most ``max_norm``; returns the
    norm before clipping (as torch.nn.utils.clip_grad_norm_)."""
    norm = float(np.linalg.norm(grad))
    if norm > max_norm:
        grad *= max_norm / (norm + 1e-6)
    return norm


class _Optimizer:
    """The shared part: the params array, the schedule, the step count, the state."""

    name = ""
    _buffers: tuple = ()

    def __init__(self, params: np.ndarray, lr):
        if not (isinstance(params, np.ndarray) and params.ndim == 1):
            raise TypeError("params must be a 1-D numpy array (a flat weight vector)")
        if not params.flags.writeable:
            raise ValueError("params must be writable: the optimizer updates it in place")
        self.params = params
        self.schedule = lr if callable(lr) else constant(float(lr))
        self.t = 0  # steps taken
        for b in self._buffers:
            setattr(self, b, np.zeros_like(params))

    @property
    def lr(self) -> float:
        """The learning rate of the next step."""
        return float(self.schedule(self.t))

    def step(self, grad) -> None:
        grad = np.asarray(grad, self.params.dtype)
        if grad.shape != self.params.shape:
            raise ValueError(f"grad has shape {grad.shape}; params has {self.params.shape}")
        if not np.isfinite(grad).all():
            raise FloatingPointError(
                f"{self.name}: the gradient of step {self.t} is not finite; params unchanged"
            )
        self._update(grad, self.lr)
        self.t += 1

    def state_dict(self) -> dict:
        """The optimizer's state (for ``save_checkpoint``): its name, step count and
        buffers."""
        return {"name": self.name, "t": self.t, **{b: getattr(self, b) for b in self._buffers}}

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") != self.name:
            raise CheckpointError(
                f"the checkpoint's optimizer is {state.get('name')!r}, this one is {self.name!r}"
            )
        for b in self._buffers:
            if np.shape(state[b]) != self.params.shape:
                raise CheckpointError(
                    f"the checkpoint's optimizer buffer {b!r} has shape {np.shape(state[b])}, "
                    f"params has {self.params.shape}"
                )
            getattr(self, b)[:] = state[b]
        self.t = int(state["t"])


class Adam(_Optimizer):
    name = "Adam"
    _buffers = ("m", "v")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay

    def _decay(self, grad, lr):  # Adam's L2 penalty enters the gradient
        return grad + self.weight_decay * self.params if self.weight_decay else grad

    def _update(self, grad, lr):
        grad = self._decay(grad, lr)
        b1, b2 = self.betas
        self.m *= b1
        self.m += (1 - b1) * grad
        self.v *= b2
        self.v += (1 - b2) * grad * grad
        k = self.t + 1
        m_hat = self.m / (1 - b1**k)
        v_hat = self.v / (1 - b2**k)
        self.params -= lr * m_hat / (np.sqrt(v_hat) + self.eps)


class AdamW(Adam):
    name = "AdamW"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)

    def _decay(self, grad, lr):  # decoupled: the weights shrink, the gradient is kept
        self.params *= 1.0 - lr * self.weight_decay
        return grad


class RMSprop(_Optimizer):
    name = "RMSprop"
    _buffers = ("v",)

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8):
        super().__init__(params, lr)
        self.alpha, self.eps = alpha, eps

    def _update(self, grad, lr):
        self.v *= self.alpha
        self.v += (1 - self.alpha) * grad * grad
        self.params -= lr * grad / (np.sqrt(self.v) + self.eps)


# -- checkpoints -------------------------------------------------------------------------
class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded here: another architecture, or a damaged file."""


def _architecture(mlp) -> dict:
    return {
        "sizes": np.array(mlp.sizes),
        "activations": np.array(mlp.activations),
        "input_map": np.array(mlp.input_map),
        "time_input": np.array(mlp.time_input),
    }


def save_checkpoint(path, mlp, params, optimizer=None, **extra) -> Path:
    """Write architecture, weights, optimizer state and ``extra`` arrays (e.g. the
    iteration, the loss history) to one ``.npz``, atomically: a crash leaves the previous
    file whole."""
    path = Path(path)
    arrays = {f"arch.{k}": v for k, v in _architecture(mlp).items()}
    arrays["params"] = np.asarray(params)
    if optimizer is not None:
        for k, v in optimizer.state_dict().items():
            arrays[f"opt.{k}"] = np.asarray(v)
    for k, v in extra.items():
        arrays[f"extra.{k}"] = np.asarray(v)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path, mlp, optimizer=None) -> tuple[np.ndarray, dict]:
    """(weights, extra) from a checkpoint of ``save_checkpoint``, refused with
    CheckpointError when its architecture is not ``mlp``'s or the file is damaged; the
    optimizer's state is restored into ``optimizer`` when given."""
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable symode checkpoint: {err}") from None
    try:
        theirs = {k[len("arch.") :]: data[k] for k in data if k.startswith("arch.")}
        ours = _architecture(mlp)
        if set(theirs) != set(ours):
            raise KeyError(sorted(set(ours) - set(theirs)))
        for k, v in ours.items():
            if not np.array_equal(theirs[k], v):
                raise CheckpointError(
                    f"{path} holds another architecture: {k} = {theirs[k].tolist()}, this MLP "
                    f"has {v.tolist()}"
                )
        params = data["params"]
        if params.shape != (mlp.n_params,):
            raise CheckpointError(
                f"{path}: weights of shape {params.shape}, expected ({mlp.n_params},)"
            )
        if optimizer is not None:
            optimizer.load_state_dict({k[4:]: data[k] for k in data if k.startswith("opt.")} | {
                "name": str(data.get("opt.name", "")), "t": int(data.get("opt.t", 0))
            })  # fmt: skip
    except KeyError as err:
        raise CheckpointError(f"{path} is missing {err}: not a symode checkpoint") from None
    extra = {k[len("extra.") :]: data[k] for k in data if k.startswith("extra.")}
    return params, extra


# -- the fit loop ------------------------------------------------------------------------
@dataclass
class FitResult:
    """What ``fit`` did: the best weights (by validation loss when given, else by
    training loss), and per iteration the loss, learning rate, gradient norm, the
    forward/backward function evaluations and the seconds of the step (validation not
    included)."""

    params: np.ndarray
    best_iteration: int
    stopped_early: bool
    history: dict = field(default_factory=dict)


def _progress(total: int, show: bool):
    if not show:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="it")


def fit(
    step,
    optimizer,
    iterations: int,
    *,
    validate=None,
    validate_every: int = 10,
    patience: int | None = None,
    clip: float | None = None,
    progress: bool = True,
    print_every: int = 0,
) -> FitResult:
    """Train ``optimizer.params`` for ``iterations`` steps.

    Parameters
    ----------
    step : callable ``step(params, it) -> (loss, grad, stats)``
        The training loss, its gradient and the solver's counts, e.g. from
        ``model.vjp``'s Gradient: ``stats = g.stats`` (forward/backward nfev are shown).
    validate : callable ``validate(params) -> float``, optional
        The validation loss, evaluated every ``validate_every`` iterations; with
        ``patience``, training stops after that many evaluations without improvement.
    clip : max gradient 2-norm (``clip_grad_norm``)
    progress : a tqdm bar (when tqdm is installed) with loss and NFE
    print_every : print a line every so many iterations instead (0: never)
    """
    keys = ("loss", "lr", "grad_norm", "nfe_forward", "nfe_backward", "seconds")
    history = {k: [] for k in keys}
    history["val_loss"], history["val_iteration"] = [], []
    best = (math.inf, optimizer.params.copy(), -1)
    bad = 0
    stopped = False
    bar = _progress(iterations, progress)
    try:
        for it in range(iterations):
            start = time.perf_counter()
            loss, grad, stats = step(optimizer.params, it)
            grad = np.array(grad, dtype=optimizer.params.dtype)
            norm = clip_grad_norm(grad, clip) if clip else float(np.linalg.norm(grad))
            nfe_f, nfe_b = _nfe(stats)
            history["loss"].append(float(loss))
            history["lr"].append(optimizer.lr)
            history["grad_norm"].append(norm)
            history["nfe_forward"].append(nfe_f)
            history["nfe_backward"].append(nfe_b)
            if validate is None and loss < best[0]:
                best = (float(loss), optimizer.params.copy(), it)
            optimizer.step(grad)
            history["seconds"].append(time.perf_counter() - start)
            if validate is not None and (it + 1) % validate_every == 0:
                val = float(validate(optimizer.params))
                history["val_loss"].append(val)
                history["val_iteration"].append(it + 1)
                if val < best[0]:
                    best, bad = (val, optimizer.params.copy(), it + 1), 0
                else:
                    bad += 1
                    if patience is not None and bad >= patience:
                        stopped = True
            shown = {"loss": f"{loss:.4g}", "nfe": f"{nfe_f}/{nfe_b}"}
            if history["val_loss"]:
                shown["val"] = f"{history['val_loss'][-1]:.4g}"
            if bar is not None:
                bar.set_postfix(shown, refresh=False)
                bar.update()
            elif print_every and (it % print_every == 0 or it == iterations - 1):
                print(f"iter {it:5d}  " + "  ".join(f"{k} {v}" for k, v in shown.items()))
            if stopped:
                break
    finally:
        if bar is not None:
            bar.close()
    if best[2] < 0:  # no improvement seen (validate never ran): the last weights
        best = (math.inf, optimizer.params.copy(), iterations)
    return FitResult(best[1], best[2], stopped, history)


def _nfe(stats) -> tuple[int, int]:
    """Forward and backward function evaluations from a Gradient's stats (summed over
    an ensemble), or (0, 0)."""
    if not stats:
        return 0, 0
    f = stats.get("forward", {}).get("nfev", 0)
    b = stats.get("backward", {}).get("nfev", 0)
    return int(np.sum(f)), int(np.sum(b))
