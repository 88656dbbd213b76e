"""Classify nested rings with an ODE-Net, and see why a plain one needs one more dimension.

An ODE-Net (Chen et al. 2018, section 3) replaces a ResNet's stack of residual blocks by
one ODE: y' = f_θ(y) on t ∈ [0, 1] from y(0) = x, then a linear read-out, logits =
W y(1) + b, trained on the softmax cross-entropy. f_θ is a ``symode.nn.MLP`` (one tanh
hidden layer of 32). The loss's gradient w.r.t. θ comes from symode's adjoint: one
batched ``model.vjp`` with the cotangent ∂L/∂y(1) at t = 1, whose per-point gradients
are summed (θ is shared by the batch); the read-out's gradient is numpy's. Adam
(``symode.nn.train``) updates both.

The data are Dupont et al.'s (2019) nested rings: class 0 in the disk r ≤ 0.5, class 1 in
the annulus 1 ≤ r ≤ 1.5. The flow of an ODE in the plane is a homeomorphism: it cannot
take the disk out of the ring, so the region a line at t = 1 gives to class 0, pulled
back to the input plane, reaches from the disk across the ring to infinity. A plain
ODE-Net can only squeeze a channel through the ring between the training points, and
misclassifies whatever lies in the channel. Augmented Neural ODEs (Dupont et al. 2019)
add zero-initialised dimensions, y(0) = (x, 0): in 3-D the disk can be lifted over the
ring. Printed: both nets' held-out accuracy and forward/backward NFE as training goes
on, and the share of the ring's area each classifies as disk (on a fine grid).

Last, the memory argument: the peak memory of one gradient as the number of steps (the
depth) grows, for the continuous adjoints (backsolve, checkpointed), the discrete
adjoint (every step stored) and a ResNet of the same depth in numpy (the same blocks,
y_{k+1} = y_k + f_θ(y_k)/L, with their activations stored for backprop: the discrete
adjoint of Euler's method, which it equals to rounding). Each is measured in a fresh
process, as benchmarks/bench_p4.py's --memory mode does: the peak resident memory after
the gradient less the peak after a warm-up gradient.

Run:  python examples/odenet_rings.py  (--quick: 100 iterations on 256 points, the tests')
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np

from symode.nn import MLP
from symode.nn.train import Adam, cosine, fit

RADII = (0.5, 1.0, 1.5)  # class 0: r ≤ 0.5; class 1: 1 ≤ r ≤ 1.5 (Dupont et al.'s g(x))
WIDTH = 32
OPTS = dict(method="dopri5", rtol=1e-3, atol=1e-5)  # the adjoint takes the same
SPAN = np.array([0.0, 1.0])
MEMORY_KINDS = {  # row label: how the child computes one gradient (--quick: the first three)
    "numpy ResNet (activations stored)": "resnet",
    "symode discrete adjoint": "discrete",
    "symode backsolve": "backsolve",
    "symode checkpoint (every step)": "checkpoint",
    "symode checkpoint, checkpoints=16": "checkpoint16",
}


def rings(n, rng):
    """n points, alternately class 0 (the disk) and class 1 (the annulus), uniform in
    area: (n, 2) points and (n,) labels."""
    labels = np.arange(n) % 2
    lo = np.where(labels == 0, 0.0, RADII[1])
    hi = np.where(labels == 0, RADII[0], RADII[2])
    r = np.sqrt(rng.uniform(lo**2, hi**2))
    angle = rng.uniform(0.0, 2.0 * np.pi, n)
    return np.stack([r * np.cos(angle), r * np.sin(angle)], -1), labels


class ODENet:
    """y' = f_θ(y) on [0, 1] from y(0) = (x, 0, …, 0) (``extra`` zeros), then
    logits = W y(1) + b. ``w`` is every weight in one vector (θ, W, b: views of it),
    which the optimizer updates in place."""

    def __init__(self, extra: int, cache_dir=None, seed: int = 0):
        self.extra, self.n = extra, 2 + extra
        self.mlp = MLP((self.n, WIDTH, self.n), "tanh", seed=seed)
        self.model = self.mlp.compile(cache_dir=cache_dir)
        P, n = self.mlp.n_params, self.n
        read_out = 0.1 * np.random.default_rng(seed).standard_normal(2 * n)
        self.w = np.concatenate([self.mlp.params, read_out, np.zeros(2)])
        self.theta, self.W, self.b = self.w[:P], self.w[P : P + 2 * n].reshape(2, n), self.w[-2:]

    def y0(self, x):
        return np.concatenate([x, np.zeros((len(x), self.extra))], axis=1)

    def flow(self, x, t=SPAN):
        """y(t) for each point: (B, len(t), n)."""
        return self.model.solve(self.y0(x), t, self.theta, **OPTS).y

    def logits(self, x):
        return self.flow(x)[:, -1] @ self.W.T + self.b

    def accuracy(self, x, labels) -> float:
        return float(np.mean(np.argmax(self.logits(x), axis=1) == labels))

    def loss_and_grad(self, x, labels):
        """Mean cross-entropy of a batch, its gradient w.r.t. ``w`` and the adjoint's stats."""
        B = len(x)
        y0 = self.y0(x)
        y1 = self.model.solve(y0, SPAN, self.theta, **OPTS).y[:, 1]
        logits = y1 @ self.W.T + self.b
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = -np.mean(log_p[np.arange(B), labels])
        d_logits = np.exp(log_p)
        d_logits[np.arange(B), labels] -= 1.0
        d_logits /= B  # ∂L/∂logits
        cot = np.zeros((B, SPAN.size, self.n))
        cot[:, 1] = d_logits @ self.W  # ∂L/∂y(1); the loss does not read y(0)
        g = self.model.vjp(y0, SPAN, self.theta, cot, **OPTS)
        grad = np.concatenate([g.params.sum(axis=0), (d_logits.T @ y1).ravel(), d_logits.sum(0)])
        return loss, grad, g.stats


def train(net, x, labels, x_test, labels_test, iterations, batch, progress, seed=0):
    """Adam (cosine-decayed from 0.02) on mini-batches; every iterations/5 the held-out
    error rate is recorded (fit's validation, never used to pick weights)."""
    rng = np.random.default_rng(seed)

    def step(w, it):
        idx = rng.choice(len(x), batch, replace=False) if batch < len(x) else slice(None)
        return net.loss_and_grad(x[idx], labels[idx])

    every = max(1, iterations // 5)
    res = fit(step, Adam(net.w, lr=cosine(0.02, iterations)), iterations,
              validate=lambda w: 1.0 - net.accuracy(x_test, labels_test),
              validate_every=every, progress=progress)  # fmt: skip
    return res.history


def ring_area_as_disk(net, n):
    """The share of the annulus's area that the net classifies as disk (class 0), on the
    points of an n × n grid over [-1.5, 1.5]² that lie in the annulus."""
    g = np.linspace(-RADII[2], RADII[2], n)
    pts = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    r = np.hypot(pts[:, 0], pts[:, 1])
    ring = pts[(r >= RADII[1]) & (r <= RADII[2])]
    return float(np.mean(np.argmax(net.logits(ring), axis=1) == 0))


# -- memory of one gradient as the depth grows ------------------------------------------------
def resnet_gradient(mlp, theta, y0, depth):
    """∂(Σ y_L)/∂θ and ∂/∂y0 for y_{k+1} = y_k + h f_θ(y_k), h = 1/depth: ``depth``
    residual blocks sharing the ODE's weights, trained as a ResNet is: each block's input
    and activation stored on the forward pass, then backpropagation."""
    (l1, l2) = mlp.layers(theta)
    h = 1.0 / depth
    Y = np.empty((depth + 1, y0.size))  # the blocks' inputs
    A = np.empty((depth, l1["b"].size))  # their hidden activations
    Y[0] = y0
    for k in range(depth):
        A[k] = np.tanh(l1["W"] @ Y[k] + l1["b"])
        Y[k + 1] = Y[k] + h * (l2["W"] @ A[k] + l2["b"])
    grad = np.zeros_like(theta)
    (g1, g2) = mlp.layers(grad)
    lam = np.ones(y0.size)  # ∂L/∂y_k, from k = depth down
    for k in reversed(range(depth)):
        g2["W"] += h * np.outer(lam, A[k])
        g2["b"] += h * lam
        dz = h * (l2["W"].T @ lam) * (1.0 - A[k] ** 2)
        g1["W"] += np.outer(dz, Y[k])
        g1["b"] += dz
        lam = lam + l1["W"].T @ dz
    return grad, lam


def _symode_gradient(model, theta, y0, depth, kind):
    """The same gradient by symode: Euler steps of 1/depth (the ResNet's blocks)."""
    cot = np.zeros((SPAN.size, y0.size))
    cot[1] = 1.0
    adjoint = "checkpoint" if kind.startswith("checkpoint") else kind
    checkpoints = 16 if kind == "checkpoint16" else None
    return model.vjp(y0, SPAN, theta, cot, adjoint=adjoint, checkpoints=checkpoints,
                     method="euler", dt=1.0 / depth)  # fmt: skip


def _peak_rss_mib() -> float:
    """This process's peak resident memory in MiB: Linux's VmHWM (``ru_maxrss`` would
    start from the parent's peak: Linux carries it across fork and exec), else
    ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB (bytes on macOS)
    return peak / (1024.0**2 if sys.platform == "darwin" else 1024.0)


def memory_child(kind, cache_dir, depths):
    """In a fresh process: peak RSS (MiB) of one gradient at each depth, above the peak
    after a warm-up gradient (everything compiled and loaded); prints JSON."""
    mlp = MLP((3, WIDTH, 3), "tanh", seed=0)
    y0 = np.array([0.3, -0.4, 0.0])
    if kind == "resnet":

        def grad(depth):
            return resnet_gradient(mlp, mlp.params, y0, depth)
    else:
        model = mlp.compile(cache_dir=cache_dir or None, verbose=False)

        def grad(depth):
            return _symode_gradient(model, mlp.params, y0, depth, kind)

    # warm-up at 100 steps, not fewer: symode's checkpointed continuous adjoint with
    # checkpoints=K fails ("t_eval is not strictly monotone") on K or fewer fixed steps
    # (and on 2^k steps over [0, 1]), a bug reported with this example
    grad(100)
    pre = _peak_rss_mib()
    growth = []
    for depth in depths:  # increasing: each peak is its own (memory grows with depth)
        grad(depth)
        growth.append(_peak_rss_mib() - pre)
    print(json.dumps(growth))


def memory_table(depths, cache_dir, kinds=MEMORY_KINDS):
    """{row label: [MiB above warm-up at each depth]}: every kind in its own process, all
    at once (memory is per process; the times are not measured)."""
    cmd = [sys.executable, __file__, "--memory-child", "", str(cache_dir or ""), *map(str, depths)]
    procs = {}
    for label, kind in kinds.items():
        cmd[3] = kind
        procs[label] = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)  # fmt: skip
    table = {}
    for label, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        if proc.returncode:
            raise RuntimeError(f"the memory measurement of {label!r} failed:\n{err}")
        table[label] = json.loads(out.strip().splitlines()[-1])
    return table


def main(
    quick: bool = False,
    plot: str | None = "odenet_rings.png",
    iterations: int | None = None,
    cache_dir=None,
    progress: bool = True,
    memory: bool = True,
):
    iterations = iterations or (100 if quick else 1000)
    n_train, batch = (256, 256) if quick else (1024, 256)
    x, labels = rings(n_train, np.random.default_rng(0))
    x_test, labels_test = rings(1000, np.random.default_rng(1))
    print(f"nested rings: {n_train} training points (batches of {batch}), 1000 held out; "
          f"{iterations} Adam iterations per net")  # fmt: skip
    nets, results = {}, {}
    for name, extra in (("plain", 0), ("augmented", 1)):
        net = nets[name] = ODENet(extra, cache_dir)
        n_read = net.w.size - net.mlp.n_params
        print(f"\n{name} ODE-Net: state R^{net.n}, f = MLP {list(net.mlp.sizes)} "
              f"({net.mlp.n_params} weights) + read-out ({n_read})")  # fmt: skip
        h = train(net, x, labels, x_test, labels_test, iterations, batch, progress)
        nfe_f = np.array(h["nfe_forward"]) / batch  # summed over the batch by fit
        nfe_b = np.array(h["nfe_backward"]) / batch
        print("  iteration   loss    held-out accuracy   NFE per point: forward  backward")
        for it, err in zip(h["val_iteration"], h["val_loss"]):
            i = it - 1
            print(f"  {it:9d}  {h['loss'][i]:7.4f}  {1 - err:12.3f}  "
                  f"{nfe_f[i]:24.1f}  {nfe_b[i]:8.1f}")  # fmt: skip
        results[name] = {
            "test_accuracy": net.accuracy(x_test, labels_test),
            "train_accuracy": net.accuracy(x, labels),
            "ring_as_disk": ring_area_as_disk(net, 150 if quick else 400),
            "loss": h["loss"][-1],
            "nfe_forward": nfe_f,
            "nfe_backward": nfe_b,
            "ms_per_iteration": 1e3 * float(np.median(h["seconds"])),
            "history": h,
        }
        print(f"  {results[name]['ms_per_iteration']:.0f} ms per iteration (median)")

    print("\n                 held-out   training   ring area      NFE per point, last")
    print("                 accuracy   accuracy   taken as disk  iteration: fwd / bwd")
    for name, r in results.items():
        print(f"  {name:13s}  {r['test_accuracy']:8.3f}  {r['train_accuracy']:9.3f}  "
              f"{100 * r['ring_as_disk']:10.2f} %  {r['nfe_forward'][-1]:12.1f} / "
              f"{r['nfe_backward'][-1]:.1f}")  # fmt: skip
    print("  (a plain ODE-Net's class-0 region must cross the ring: its flow is a "
          "homeomorphism of the plane)")  # fmt: skip

    # the ResNet of the memory table is Euler's method on the same f: the same gradient
    aug = nets["augmented"]
    x0 = np.array([0.3, -0.4, 0.0])
    ref, ref_y0 = resnet_gradient(aug.mlp, aug.theta, x0, 50)
    g = _symode_gradient(aug.model, aug.theta, x0, 50, "discrete")
    check = max(np.max(np.abs(g.params - ref)) / np.max(np.abs(ref)),
                np.max(np.abs(g.y0 - ref_y0)) / np.max(np.abs(ref_y0)))  # fmt: skip
    print(f"\nnumpy ResNet (50 blocks) vs symode's discrete adjoint of 50 Euler steps: "
          f"max relative difference {check:.1e}")  # fmt: skip
    table = None
    if memory:
        depths = (10**3, 10**4) if quick else (10**3, 10**4, 10**5)
        kinds = dict(list(MEMORY_KINDS.items())[:3]) if quick else MEMORY_KINDS
        table = memory_table(depths, cache_dir, kinds)
        print("\npeak memory of one gradient (MiB above a warm-up; one point, state R^3, "
              "Euler steps = ResNet blocks):")  # fmt: skip
        print(f"  {'steps / depth':36s}" + "".join(f"{d:>9.0e}" for d in depths))
        for label, row in table.items():
            print(f"  {label:36s}" + "".join(f"{m:9.2f}" for m in row))
    if plot:
        _plot(plot, nets, results, x_test, labels_test)
    return {**results, "resnet_check": check, "memory": table}


def _plot(path, nets, results, x, labels):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return
    fig = plt.figure(figsize=(17, 8))
    g = np.linspace(-2.0, 2.0, 161)
    X, Y = np.meshgrid(g, g)
    grid = np.stack([X.ravel(), Y.ravel()], -1)
    show = slice(0, 300)  # the points whose flow is drawn
    colors = np.where(labels[show] == 0, "C0", "C1")
    ts = np.linspace(0.0, 1.0, 21)
    for row, (name, net) in enumerate(nets.items()):
        r = results[name]
        logits = net.logits(grid)
        p1 = np.exp(logits[:, 1] - np.logaddexp(logits[:, 0], logits[:, 1]))
        ax = fig.add_subplot(2, 4, 4 * row + 1)
        ax.contourf(X, Y, p1.reshape(X.shape), levels=np.linspace(0, 1, 11), cmap="RdBu_r",
                    alpha=0.6)  # fmt: skip
        ax.contour(X, Y, p1.reshape(X.shape), levels=[0.5], colors="k", linewidths=1)
        ax.scatter(x[show, 0], x[show, 1], c=colors, s=5)
        ax.set(title=f"{name}: decision boundary (held-out acc {r['test_accuracy']:.3f})",
               aspect="equal")  # fmt: skip
        flow = net.flow(x[show], ts)  # (B, T, n)
        three_d = net.n > 2
        for col, k in ((1, ts.size // 2), (2, ts.size - 1)):
            ax = fig.add_subplot(2, 4, 4 * row + col + 1, projection="3d" if three_d else None)
            pts = flow[:, k]
            if three_d:
                ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], c=colors, s=4)
            else:
                ax.plot(flow[:, : k + 1, 0].T, flow[:, : k + 1, 1].T, color="0.8", lw=0.4)
                ax.scatter(pts[:, 0], pts[:, 1], c=colors, s=4)
                if k == ts.size - 1:  # the read-out's line: equal logits
                    dw, db = net.W[1] - net.W[0], net.b[1] - net.b[0]
                    xlim, ylim = ax.get_xlim(), ax.get_ylim()
                    ax.plot(xlim, -(db + dw[0] * np.array(xlim)) / dw[1], "k--", lw=1)
                    ax.set(xlim=xlim, ylim=ylim)
            ax.set_title(f"{name}: the data at t = {ts[k]:.1f}")
        ax = fig.add_subplot(2, 4, 4 * row + 4)
        h = r["history"]
        ax.semilogy(h["loss"], "k", lw=0.8, label="loss")
        ax.set(xlabel="iteration", title=f"{name}: loss and NFE per point")
        ax2 = ax.twinx()
        ax2.plot(r["nfe_forward"], "C2", lw=0.8, label="NFE forward")
        ax2.plot(r["nfe_backward"], "C3", lw=0.8, label="NFE backward")
        ax2.plot([], [], "k", lw=0.8, label="loss (left axis)")
        ax2.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"saved {path}")


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--memory-child":
        memory_child(sys.argv[2], sys.argv[3], [int(d) for d in sys.argv[4:]])
        sys.exit()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="100 iterations on 256 points (the tests')")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--plot", default="odenet_rings.png", help="'' for no plot")
    p.add_argument("--no-memory", action="store_true", help="skip the memory table")
    args = p.parse_args()
    main(quick=args.quick, plot=args.plot or None, iterations=args.iterations,
         memory=not args.no_memory)  # fmt: skip
