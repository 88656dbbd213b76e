"""Learn a damped pendulum from irregular, noisy, per-trajectory observations.

The setting of Chen et al. (2018), section 5, without the latent-variable machinery: B
trajectories of a known nonlinear system, each observed at its own random times with
noise, fitted as ONE padded batch (``t_eval`` of shape (B, T), NaN after each
trajectory's last time; the data padded the same way). The truth is the damped pendulum
x' = v, v' = −ω² sin x − γ v (ω = 1.5, γ = 0.15), written in SymPy; both x and v are
observed with noise σ = 0.05 at 8–20 random times in [0, 10] per trajectory.

Three fits, scored against the noise-free truth inside the training window
(interpolation: between each trajectory's first and last observation) and beyond it
(extrapolation: t in (10, 15]):

- a neural ODE, y' = f_θ(y) with f_θ a ``symode.nn.MLP`` (one tanh layer of 32), whose
  weights θ and each trajectory's state at its first observation are trained with Adam
  on ½ Σ ‖y(tᵢ) − dᵢ‖² (a symbolic ``symode.Loss``) through the batched adjoint;
- linear interpolation between each trajectory's observations (interpolation only): the
  baseline a user would try first;
- the true equations with (ω², γ) and the initial states fitted by L-BFGS-B on
  ``model.value_and_grad``: the best case, a scientist who knows the equations.

Run:  python examples/irregular_time_series.py  (--quick: 16 trajectories, 600 iterations)
"""

from __future__ import annotations

import argparse

import numpy as np
import sympy as sp
from scipy.optimize import minimize

import symode
from symode.nn import MLP
from symode.nn.train import Adam, cosine, fit

OMEGA, GAMMA, NOISE = 1.5, 0.15, 0.05
TRAIN_END, EXTRAP_END = 10.0, 15.0
TRUTH_OPTS = dict(rtol=1e-10, atol=1e-12)
FIT_OPTS = dict(rtol=1e-6, atol=1e-8)


def pendulum():
    """The damped pendulum in SymPy, with its fitting loss ½‖(x, v) − (x_obs, v_obs)‖²."""
    x, v = sp.symbols("x v")
    w2, g = sp.symbols("omega2 gamma")
    system = symode.ODESystem([v, -w2 * sp.sin(x) - g * v], states=[x, v], params=[w2, g])
    xd, vd = sp.symbols("x_obs v_obs")
    loss = symode.Loss(observation=((x - xd) ** 2 + (v - vd) ** 2) / 2, data=[xd, vd])
    return system, loss


def observations(truth, n_traj, rng):
    """Each trajectory's true start (at t = 0), its observation times (a (B, T) array, NaN
    after its last) and noisy observations (B, T, 2), NaN-padded the same way."""
    y0 = np.stack([rng.uniform(-2.0, 2.0, n_traj), rng.uniform(-1.0, 1.0, n_traj)], -1)
    counts = rng.integers(8, 21, n_traj)
    T = counts.max()
    times = np.full((n_traj, T), np.nan)
    for i, m in enumerate(counts):
        times[i, :m] = np.sort(rng.uniform(0.0, TRAIN_END, m))
    clean = truth(y0, times)
    data = clean + NOISE * rng.standard_normal(clean.shape)  # NaN stays NaN
    return y0, times, data


def eval_times(times, n=40):
    """Per trajectory: n times between its first and last observation (interpolation),
    then n in (TRAIN_END, EXTRAP_END] (extrapolation): a (B, 2n) array."""
    first, last = times[:, 0], np.nanmax(times, axis=1)
    inside = first[:, None] + (last - first)[:, None] * np.linspace(0.0, 1.0, n)
    beyond = np.broadcast_to(np.linspace(TRAIN_END, EXTRAP_END, n + 1)[1:], inside.shape)
    return np.concatenate([inside, beyond], axis=1)


def rmse(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)))


def fit_neural_ode(times, data, iterations, cache_dir, progress):
    """θ and the B starting states by Adam on the mean squared error, one batched
    adjoint per iteration. Returns the MLP, its model, θ, the states and fit's history."""
    mlp = MLP((2, 32, 2), "tanh", seed=0)
    y, d = mlp.states, sp.symbols("d0 d1")
    loss = symode.Loss(observation=((y[0] - d[0]) ** 2 + (y[1] - d[1]) ** 2) / 2, data=d)
    model = mlp.compile(loss=loss, cache_dir=cache_dir)
    B, P = len(times), mlp.n_params
    n_obs = np.isfinite(times).sum()
    w = np.concatenate([mlp.params, data[:, 0].ravel()])  # start: the first observations
    theta, y0 = w[:P], w[P:].reshape(B, 2)

    def step(w, it):
        g = model.gradient(y0, times, theta, data, **FIT_OPTS)
        grad = np.concatenate([g.params.sum(axis=0), g.y0.ravel()]) / n_obs
        return float(g.value.sum()) / n_obs, grad, g.stats

    opt = Adam(w, lr=cosine(0.02, iterations, final=1e-4))
    res = fit(step, opt, iterations, progress=progress, print_every=0 if progress else 200)
    return mlp, model, theta, y0, res.history


def fit_true_model(model, times, data, p_guess):
    """(ω², γ) and the B starting states by L-BFGS-B on the batched ``value_and_grad``:
    the parameters' gradients are summed over the trajectories, the states' are each
    their own."""
    B = len(times)

    def fun(x):
        p, y0 = x[:2], x[2:].reshape(B, 2)
        value, grad = model.value_and_grad(y0, times, p, data, wrt=("params", "y0"), **FIT_OPTS)
        return float(value.sum()), np.concatenate([grad[:, :2].sum(axis=0), grad[:, 2:].ravel()])

    x0 = np.concatenate([p_guess, data[:, 0].ravel()])
    res = minimize(fun, x0, jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return res.x[:2], res.x[2:].reshape(B, 2), res


def main(
    quick: bool = False,
    plot: str | None = "irregular_time_series.png",
    iterations: int | None = None,
    cache_dir=None,
    progress: bool = True,
):
    n_traj = 16 if quick else 32
    iterations = iterations or (600 if quick else 2000)
    system, loss = pendulum()
    pend = system.compile(loss=loss, cache_dir=cache_dir)
    p_true = np.array([OMEGA**2, GAMMA])

    def truth(y0, rows):  # the noise-free pendulum at padded per-trajectory times from 0
        start = np.zeros((len(rows), 1))
        return pend.solve(y0, np.concatenate([start, rows], 1), p_true, **TRUTH_OPTS).y[:, 1:]

    rng = np.random.default_rng(0)
    y0_true, times, data = observations(truth, n_traj, rng)
    counts = np.isfinite(times).sum(axis=1)
    print(f"damped pendulum, ω = {OMEGA}, γ = {GAMMA}: {n_traj} trajectories, "
          f"{counts.min()}–{counts.max()} observations each ({counts.sum()} in all) at "
          f"random times in [0, {TRAIN_END:g}], noise σ = {NOISE}; one padded batch "
          f"t_eval {times.shape}")  # fmt: skip

    t_ev = eval_times(times)
    n_in = t_ev.shape[1] // 2
    clean = truth(y0_true, t_ev)

    # linear interpolation between each trajectory's noisy observations
    lin = np.stack([
        np.stack([np.interp(t_ev[i, :n_in], times[i, :m], data[i, :m, j]) for j in (0, 1)], -1)
        for i, m in enumerate(counts)
    ])  # fmt: skip

    print(f"\nneural ODE: MLP [2, 32, 2], {iterations} Adam iterations")
    mlp, node, theta, y0_node, h = fit_neural_ode(times, data, iterations, cache_dir, progress)
    pred_node = node.solve(y0_node, t_ev, theta, **FIT_OPTS).y  # t_ev[:, 0]: the starts
    nfe_f = np.array(h["nfe_forward"]) / n_traj
    nfe_b = np.array(h["nfe_backward"]) / n_traj
    steady = slice(min(10, iterations - 1), None)
    print(f"  loss (mean ½‖y − d‖² per observation) {h['loss'][0]:.4f} → {h['loss'][-1]:.5f} "
          f"(noise alone: {NOISE**2:.5f}); {1e3 * np.median(h['seconds'][steady]):.1f} ms per "
          f"iteration; NFE per trajectory per iteration forward {nfe_f[steady].mean():.0f}, "
          f"backward {nfe_b[steady].mean():.0f}")  # fmt: skip

    p_guess = p_true * np.array([0.8, 2.0])
    p_fit, y0_fit, res = fit_true_model(pend, times, data, p_guess)
    pred_true = pend.solve(y0_fit, t_ev, p_fit, **FIT_OPTS).y
    print(f"\ntrue equations, L-BFGS-B from ω² = {p_guess[0]:.2f}, γ = {p_guess[1]:.2f}: "
          f"ω² = {p_fit[0]:.4f} (true {p_true[0]:.4f}), γ = {p_fit[1]:.4f} (true {GAMMA}); "
          f"{res.nit} iterations, {res.nfev} value_and_grad calls")  # fmt: skip

    scores = {
        "linear interpolation": (rmse(lin, clean[:, :n_in]), None),
        "neural ODE": (rmse(pred_node[:, :n_in], clean[:, :n_in]),
                       rmse(pred_node[:, n_in:], clean[:, n_in:])),
        "true equations, fitted": (rmse(pred_true[:, :n_in], clean[:, :n_in]),
                                   rmse(pred_true[:, n_in:], clean[:, n_in:])),
    }  # fmt: skip
    print(f"\nRMSE against the noise-free truth (noise σ = {NOISE}):")
    print(f"  {'':24s} interpolation   extrapolation t ∈ ({TRAIN_END:g}, {EXTRAP_END:g}]")
    for name, (inside, beyond) in scores.items():
        beyond = "—" if beyond is None else f"{beyond:.4f}"
        print(f"  {name:24s} {inside:13.4f}   {beyond:>13s}")
    ratio = scores["linear interpolation"][0] / scores["neural ODE"][0]
    print(f"  interpolation RMSE, linear interpolation ÷ neural ODE: {ratio:.1f}")
    if plot:
        _plot(plot, pend, p_true, y0_true, times, data, node, theta, y0_node, p_fit, y0_fit,
              mlp, h)  # fmt: skip
    return {"rmse": scores, "ratio": ratio, "p_fit": p_fit, "history": h,
            "nfe_forward": nfe_f, "nfe_backward": nfe_b}  # fmt: skip


def _plot(path, pend, p_true, y0_true, times, data, node, theta, y0_node, p_fit, y0_fit, mlp, h):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return
    fig, axes = plt.subplots(2, 3, figsize=(16, 8))
    fine = np.linspace(0.0, EXTRAP_END, 400)
    for i, ax in enumerate((axes[0, 0], axes[0, 1], axes[1, 0], axes[1, 1])):
        m = np.isfinite(times[i]).sum()
        start = times[i, 0]
        after = fine[fine > start]
        true = pend.solve(y0_true[i], fine, p_true, **TRUTH_OPTS).y
        nn = node.solve(y0_node[i], np.concatenate([[start], after]), theta, **FIT_OPTS).y[1:]
        eq = pend.solve(y0_fit[i], np.concatenate([[start], after]), p_fit, **FIT_OPTS).y[1:]
        ax.plot(fine, true[:, 0], "k", lw=1, label="truth x")
        ax.plot(after, nn[:, 0], "C3--", label="neural ODE")
        ax.plot(after, eq[:, 0], "C2:", label="true equations, fitted")
        ax.plot(times[i, :m], data[i, :m, 0], color="0.6", lw=0.8, label="linear interpolation")
        ax.plot(times[i, :m], data[i, :m, 0], "ko", ms=3, label="observations")
        ax.axvspan(TRAIN_END, EXTRAP_END, color="0.93")
        ax.set(title=f"trajectory {i}: x(t), {m} observations", xlabel="t")
    axes[0, 0].legend(fontsize=7)
    ax = axes[0, 2]
    g = np.linspace(-2.5, 2.5, 17)
    X, V = np.meshgrid(g, g)
    pts = np.stack([X.ravel(), V.ravel()], -1)
    F = mlp.apply(pts, theta)
    ax.quiver(X, V, V, -p_true[0] * np.sin(X) - p_true[1] * V, color="0.6", label="true")
    ax.quiver(X, V, F[:, 0].reshape(X.shape), F[:, 1].reshape(X.shape), color="C3",
              label="learned")  # fmt: skip
    ax.set(title="vector field: true and learned", xlabel="x", ylabel="v")
    ax.legend(fontsize=7)
    ax = axes[1, 2]
    ax.semilogy(h["loss"], "k", lw=0.8)
    ax.axhline(NOISE**2, color="0.6", ls="--", label="noise level σ²")
    ax.set(title="neural ODE: loss per observation", xlabel="iteration")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"saved {path}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="16 trajectories, 600 iterations (tests)")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--plot", default="irregular_time_series.png", help="'' for no plot")
    args = p.parse_args()
    main(quick=args.quick, plot=args.plot or None, iterations=args.iterations)
