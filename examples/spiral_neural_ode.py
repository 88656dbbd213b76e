"""Learn a spiral's dynamics with a neural ODE: the task of torchdiffeq's ode_demo.py.

The truth is dy/dt = (y³) A with A = [[-0.1, 2], [-2, -0.1]], y0 = (2, 0), observed at
1000 times in [0, 25]. The model is f(y) = W₂ tanh(W₁ y³ + b₁) + b₂ (50 hidden units,
weights ~ N(0, 0.1²), zero biases): a ``symode.nn.MLP`` compiled onto symode's engine.
Each iteration fits 20 random windows of 10 consecutive points, one batched solve
(float32 dopri5, rtol 1e-7, atol 1e-9) and one batched adjoint, with RMSprop on the L1
loss — no deep-learning framework (../shared/bench/PROBLEMS.md, P4).

Run:  python examples/spiral_neural_ode.py  (--quick: 60 iterations, used by the tests)
"""

from __future__ import annotations

import argparse

import numpy as np
import sympy as sp

import symode
from symode.nn import MLP
from symode.nn.train import RMSprop, fit

A_TRUE = np.array([[-0.1, 2.0], [-2.0, -0.1]])
BATCH, WINDOW = 20, 10
OPTS = dict(method="dopri5", rtol=1e-7, atol=1e-9)


def truth(t, cache_dir=None):
    """The spiral, by symode's own solver on the exact dynamics (SymPy)."""
    x, y = sp.symbols("x y")
    rhs = (sp.Matrix([[x**3, y**3]]) * sp.Matrix(A_TRUE.tolist())).T
    spiral = symode.ODESystem(list(rhs), states=[x, y]).compile(cache_dir=cache_dir)
    return spiral.solve([2.0, 0.0], t, rtol=1e-10, atol=1e-12).y


def windows(true_y, starts):
    """The windows' first states (B, 2) and observations (B, WINDOW, 2)."""
    idx = starts[:, None] + np.arange(WINDOW)
    return true_y[starts], true_y[idx]


def window_loss(model, theta, t_win, true_y, starts, opts):
    """The training objective, mean |pred − true| over the windows."""
    y0, obs = windows(true_y, starts)
    pred = model.solve(y0, t_win, theta, **opts, throw=False).y.astype(np.float64)
    return float(np.mean(np.abs(pred - obs)))


def main(
    quick: bool = False,
    plot: str | None = "spiral_neural_ode.png",
    iterations: int | None = None,
    cache_dir=None,
    progress: bool = True,
    adjoint: str = "checkpoint",
    dtype=np.float32,
):
    iterations = iterations or (60 if quick else 1000)
    opts = dict(OPTS, dtype=dtype)
    t = np.linspace(0.0, 25.0, 1000)
    true_y = truth(t, cache_dir)
    t_win = t[:WINDOW]  # autonomous dynamics: every window starts at 0
    mlp = MLP((2, 50, 2), "tanh", input_map="cube", init="normal", std=0.1, seed=0)
    theta = mlp.params.astype(dtype)  # float32 end to end by default: weights too
    rng = np.random.default_rng(0)
    all_starts = np.arange(len(t) - WINDOW)

    # the L1 objective as a symbolic loss: one forward and one backward pass per
    # iteration (∂|u|/∂u = sign(u), derived by SymPy)
    y0s, y1s = mlp.states
    d0, d1 = sp.symbols("d0 d1", real=True)
    n_obs = BATCH * WINDOW * 2
    loss = symode.Loss(observation=(sp.Abs(y0s - d0) + sp.Abs(y1s - d1)) / n_obs, data=(d0, d1))
    model = mlp.compile(loss=loss, cache_dir=cache_dir)

    def step(params, it):
        starts = rng.choice(all_starts, BATCH, replace=False)
        y0, obs = windows(true_y, starts)
        g = model.gradient(y0, t_win, params, obs, adjoint=adjoint, **opts)
        return float(g.value.sum()), g.params.sum(axis=0), g.stats

    before = window_loss(model, theta, t_win, true_y, all_starts, opts)
    print(f"P4 spiral: MLP {list(mlp.sizes)} ({mlp.n_params} weights), {iterations} iterations")
    print(f"objective on all {len(all_starts)} windows before training: {before:.4f}")
    res = fit(step, RMSprop(theta, lr=1e-3, alpha=0.99, eps=1e-8), iterations,
              progress=progress, print_every=0 if progress else 20)  # fmt: skip
    h = res.history
    after = window_loss(model, theta, t_win, true_y, all_starts, opts)
    steady = slice(min(10, iterations - 1), None)  # P4 times iterations 11 on (compiles)
    print(f"objective on all windows after {iterations} iterations: {after:.4f}")
    nfe_f, nfe_b = np.mean(h["nfe_forward"][steady]), np.mean(h["nfe_backward"][steady])
    print(
        f"{1e3 * np.median(h['seconds'][steady]):.1f} ms per iteration (median from iteration "
        f"{steady.start + 1}); NFE per iteration forward "
        f"{nfe_f:.0f}, backward {nfe_b:.0f} (summed over the {BATCH} windows)"
        f" (first {h['nfe_forward'][0]}/{h['nfe_backward'][0]}, last "
        f"{h['nfe_forward'][-1]}/{h['nfe_backward'][-1]})"
    )
    rollout = model.solve(true_y[0], t, theta, **opts, throw=False)
    rollout_err = float(np.mean(np.abs(rollout.y - true_y)))
    print(f"full 25-unit rollout from y0: mean |pred − true| = {rollout_err:.4f}")
    if plot:
        _plot(plot, mlp, theta, model, t, true_y, rollout, h, opts)
    return {"before": before, "after": after, "history": h, "theta": theta, "rollout": rollout_err}


def _plot(path, mlp, theta, model, t, true_y, rollout, history, opts):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return
    fig, ax = plt.subplots(1, 4, figsize=(17, 4))
    ax[0].plot(t, true_y[:, 0], "C0", label="x true")
    ax[0].plot(t, true_y[:, 1], "C1", label="y true")
    ax[0].plot(t, rollout.y[:, 0], "C0--", label="x learned")
    ax[0].plot(t, rollout.y[:, 1], "C1--", label="y learned")
    ax[0].set(title="trajectories", xlabel="t")
    ax[0].legend(fontsize=7)
    ax[1].plot(true_y[:, 0], true_y[:, 1], "k", label="true")
    ax[1].plot(rollout.y[:, 0], rollout.y[:, 1], "C3--", label="learned")
    ax[1].set(title="phase portrait", xlabel="x", ylabel="y")
    ax[1].legend(fontsize=7)
    g = np.linspace(-2, 2, 21)
    X, Y = np.meshgrid(g, g)
    pts = np.stack([X.ravel(), Y.ravel()], -1)
    F = mlp.apply(pts, theta)
    ax[2].quiver(X, Y, F[:, 0].reshape(X.shape), F[:, 1].reshape(X.shape), color="C3")
    ax[2].set(title="learned vector field", xlabel="x", ylabel="y")
    # extrapolation: beyond the training span [0, 25]
    t_ext = np.linspace(0.0, 50.0, 2000)
    ext = model.solve(true_y[0], t_ext, theta, **opts, throw=False).y
    ax[3].plot(t_ext, truth(t_ext)[:, 0], "k", label="x true")
    ax[3].plot(t_ext, ext[:, 0], "C3--", label="x learned")
    ax[3].axvline(25.0, color="grey", lw=0.8)
    ax[3].set(title="extrapolation past t = 25", xlabel="t")
    ax[3].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"saved {path}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="60 iterations (the tests' run)")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--plot", default="spiral_neural_ode.png", help="'' for no plot")
    p.add_argument("--adjoint", default="checkpoint", help="checkpoint, backsolve or discrete")
    args = p.parse_args()
    main(quick=args.quick, plot=args.plot or None, iterations=args.iterations,
         adjoint=args.adjoint)  # fmt: skip
