"""Continuous normalizing flows in the plane: densities from samples, and variational fits.

Two uses of ``symode.CNF`` (Chen et al. 2018, section 4; FFJORD, Grathwohl et al. 2019)
with the dynamics f_θ(t, z) a ``symode.nn.MLP`` 2 → 64 → 64 → 2, tanh, with time input,
carrying the base N(0, I) at t = 0 to the data at t = 1 (dopri5, rtol = atol = 1e-5,
FFJORD's toy setting; the exact trace, by forward mode through the two hidden layers).

**Density estimation from samples.** FFJORD's toy data (``lib/toy_data.py``), drawn
here, seeded: two moons, eight Gaussians and a checkerboard. Adam (lr 1e-3) on the mean
negative log-likelihood of a fresh batch of 512 samples per iteration,
``cnf.nll_and_grad`` (one forward solve from t = 1 to 0 and one checkpointed adjoint).
Held-out NLL on 5000 other samples. All three true densities are known, so each fit is
scored against the best possible held-out NLL, the held-out average of -log p_true
(the cross-entropy of the truth with itself: its entropy, up to sampling error): the
eight Gaussians' mixture in closed form, the checkerboard's log 32 (uniform on eight
2 × 2 squares), the moons' by quadrature along the two arcs. NFE: ``nll_and_grad``
returns no solver counts, so every so often the same gradient is recomputed, untimed, by
the two-pass route (``cnf.model.solve`` back to t = 0, then ``cnf.model.vjp`` with the
NLL's cotangent), which takes the same steps forward and backward.

**Variational fits to known energies** (Rezende & Mohamed 2015, Table 1: U1–U4 from
``symode.flows``): maximise the ELBO E_q[log p̃(x) - log q(x)], p̃ = exp(-U), i.e.
minimise the reverse KL(q ‖ p) up to log Z, by the reparametrisation trick, with three
families: 32 planar layers, 32 radial layers (their ``elbo_and_grad``), and the CNF.
For the CNF, x = z(1) for z ~ N(0, I) solved forward from [z, 0], and log q(x) =
log N(z) + Δ(1), Δ' = -tr ∂f/∂z (``cnf.transform(..., return_log_prob=True)``), so

    -ELBO(θ) = E_z [log N(z) + Δ(1; θ) + U(x(1; θ))],

whose gradient is the adjoint of the forward solve [0, 1] with the cotangent
(∇U(x)/B, 1/B) on the final [x, Δ] (``cnf.model.vjp``): the base term does not depend
on θ. The example checks this gradient against central differences of
``cnf.transform``'s log q before it trains with it. Scored on fresh samples: the ELBO
and the squared kernelized Stein discrepancy (``symode.ksd``, IMQ kernel) of the samples
against the target's score -∇U. U1 is normalisable, so its log Z is computed by
quadrature and KL(q ‖ p) = log Z - ELBO is printed; U2–U4 are not (nothing confines
z₁: the ridges run to infinity), so their ELBOs have no ceiling and compare the
methods only with one another.

Run:  python examples/cnf_2d.py  (--quick: 8 Gaussians for 60 iterations and U1 only,
the tests' run; the full run trains 8 Gaussians for 15 minutes, the other two for 5)
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy.special import logsumexp

from symode import CNF, ksd
from symode.flows import ENERGIES, PlanarFlow, RadialFlow
from symode.nn import MLP
from symode.nn.train import Adam

SIZES = (2, 64, 64, 2)
OPTS = dict(method="dopri5", rtol=1e-5, atol=1e-5)  # FFJORD's toy tolerances
CHECK_OPTS = dict(method="dopri5", rtol=1e-8, atol=1e-8)  # re-scoring the final weights
GRAD_CHECK_OPTS = dict(method="dopri5", rtol=1e-10, atol=1e-10)
LR = 1e-3


# -- FFJORD's toy data, and their true log-densities ---------------------------------------
_UNIT8 = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)], float)
_UNIT8 /= np.linalg.norm(_UNIT8, axis=1, keepdims=True)
G8_CENTERS = 4.0 * _UNIT8 / 1.414  # FFJORD: scale 4, then everything divided by 1.414
G8_STD = 0.5 / 1.414


def eight_gaussians(n, rng):
    """An equal mixture of N(c_k, 0.354² I), the c_k at radius 2.83 on the eight compass
    directions."""
    k = rng.integers(8, size=n)
    return G8_CENTERS[k] + G8_STD * rng.standard_normal((n, 2))


def eight_gaussians_log_prob(x):
    d2 = ((x[:, None, :] - G8_CENTERS[None]) ** 2).sum(-1)
    return logsumexp(-d2 / (2 * G8_STD**2), axis=1) - math.log(8 * 2 * math.pi * G8_STD**2)


MOON_NOISE, MOON_SCALE, MOON_SHIFT = 0.1, 2.0, np.array([-1.0, -0.2])


def _moon_arcs(phi, which):
    """sklearn's make_moons curves: the upper arc (cos φ, sin φ) and the lower one
    (1 - cos φ, 1/2 - sin φ), φ ∈ [0, π]."""
    upper = np.stack([np.cos(phi), np.sin(phi)], -1)
    lower = np.stack([1.0 - np.cos(phi), 0.5 - np.sin(phi)], -1)
    return np.where(np.asarray(which)[..., None] == 0, upper, lower)


def moons(n, rng):
    """FFJORD's moons, make_moons(noise=0.1) · 2 + (-1, -0.2), each point on a random arc
    at a uniform angle (make_moons spaces a batch's angles evenly: the same law)."""
    pts = _moon_arcs(rng.uniform(0.0, math.pi, n), rng.integers(2, size=n))
    return MOON_SCALE * (pts + MOON_NOISE * rng.standard_normal((n, 2))) + MOON_SHIFT


MOON_NODES = 2000  # quadrature nodes per arc: spacing π·2/2000 ≈ 0.003, σ = 0.2


def moons_log_prob(x, nodes=MOON_NODES):
    """log p(x) = log ½ Σ_arcs (1/π) ∫₀^π N(x; s·c(φ) + shift, (s·0.1)² I) dφ, by the
    midpoint rule (the integrand is smooth and the node spacing ≪ σ: the rule's error is
    far below the printed digits; ``nodes`` lets the example check that)."""
    phi = (np.arange(nodes) + 0.5) * math.pi / nodes
    centers = MOON_SCALE * np.concatenate([_moon_arcs(phi, 0), _moon_arcs(phi, 1)]) + MOON_SHIFT
    s = MOON_SCALE * MOON_NOISE
    out = np.empty(len(x))
    for i in range(0, len(x), 512):  # (512, 2·nodes) distances at a time
        d2 = ((x[i : i + 512, None, :] - centers[None]) ** 2).sum(-1)
        out[i : i + 512] = logsumexp(-d2 / (2 * s * s), axis=1)
    return out - math.log(2 * nodes * 2 * math.pi * s * s)


def checkerboard(n, rng):
    """FFJORD's checkerboard: uniform on eight 2 × 2 squares of [-4, 4]²."""
    x1 = rng.uniform(0.0, 1.0, n) * 4 - 2
    x2_ = rng.uniform(0.0, 1.0, n) - rng.integers(0, 2, n) * 2
    x2 = x2_ + np.floor(x1) % 2
    return 2.0 * np.stack([x1, x2], -1)


def checkerboard_log_prob(x):
    """-log 32 on the squares (their area is 32), -inf off them."""
    u = np.floor(x / 2.0)  # the unit square of the unscaled board
    on = (np.abs(x) <= 4.0).all(-1) & ((u[:, 0] + u[:, 1]) % 2 == 0)
    return np.where(on, -math.log(32.0), -np.inf)


DATASETS = {  # name: (sampler, true log-density)
    "8gaussians": (eight_gaussians, eight_gaussians_log_prob),
    "moons": (moons, moons_log_prob),
    "checkerboard": (checkerboard, checkerboard_log_prob),
}


# -- density estimation --------------------------------------------------------------------
def _rows(theta, B):
    """The CNF model's params for B samples with the exact trace: θ on every row."""
    return np.ascontiguousarray(np.broadcast_to(theta, (B, theta.size)))


def nll_counts(cnf, x, theta, opts=OPTS):
    """Forward and backward NFE per sample (batch means) of the NLL gradient on x, by the
    two-pass route: the solve from t1 back to 0, then the adjoint with the NLL's cotangent
    at t = 0, (z(0)/B, 1/B) on [z, Δ] (-∇ log N(z) = z). It takes the steps of
    ``cnf.nll_and_grad``'s one pass (the same forward solve and backward step control)."""
    B = len(x)
    y0, rows, ts = np.hstack([x, np.zeros((B, 1))]), _rows(theta, B), [cnf.t1, 0.0]
    z0 = cnf.model.solve(y0, ts, rows, **opts).y[:, -1, :2]
    cot = np.zeros((B, 2, 3))
    cot[:, 1, :2] = z0 / B
    cot[:, 1, 2] = 1.0 / B
    st = cnf.model.vjp(y0, ts, rows, cot, **opts).stats
    return float(st["forward"]["nfev"].mean()), float(st["backward"]["nfev"].mean())


def _bar(total, unit, show):
    if not show:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit=unit)


def train_density(name, cnf, mlp, *, seconds=None, iterations=None, batch=512, n_test=5000,
                  evaluations=15, nfe_every=25, seed=0, progress=True):  # fmt: skip
    """Adam on the NLL of fresh batches until ``iterations`` or ``seconds`` of training
    time (the gradient steps only: the held-out scoring and the NFE counts are not
    counted). Held-out NLL ``evaluations`` times along the way, equally spaced in
    iterations or in training time."""
    sample, true_log_prob = DATASETS[name]
    rng = np.random.default_rng(seed)
    x_test = sample(n_test, np.random.default_rng(seed + 1000))
    theta = mlp.params.copy()
    opt = Adam(theta, lr=LR)

    def held_out(th, opts=None):
        lp = cnf.log_prob(x_test, th) if opts is None else _log_prob(cnf, x_test, th, opts)
        return float(-lp.mean())

    true_ce = float(-true_log_prob(x_test).mean())
    h = {"iteration": [0], "time": [0.0], "held_out": [held_out(theta)], "loss": [],
         "seconds": [], "nfe_iteration": [], "nfe_forward": [], "nfe_backward": []}  # fmt: skip
    bar = _bar(iterations if iterations else round(seconds), "it" if iterations else "s",
               progress)  # fmt: skip
    if bar is None:
        print(f"  {'iteration':>9s} {'train s':>8s} {'held-out NLL':>12s} {'NFE fwd/bwd':>12s}")
        print(f"  {0:9d} {0.0:8.1f} {h['held_out'][0]:12.4f}")
    clock, it, shown = 0.0, 0, 0
    while (iterations is None or it < iterations) and (seconds is None or clock < seconds):
        x = sample(batch, rng)
        it += 1
        if it == 1 or it % nfe_every == 0:  # untimed: this iteration's solver counts
            f, b = nll_counts(cnf, x, theta)
            h["nfe_iteration"].append(it)
            h["nfe_forward"].append(f)
            h["nfe_backward"].append(b)
        t0 = time.perf_counter()
        loss, grad = cnf.nll_and_grad(x, theta)
        opt.step(grad)
        dt = time.perf_counter() - t0
        clock += dt
        h["loss"].append(loss)
        h["seconds"].append(dt)
        due = (it * evaluations // iterations if iterations else
               int(clock * evaluations // seconds))  # fmt: skip
        done = (iterations is not None and it >= iterations) or (
            seconds is not None and clock >= seconds)  # fmt: skip
        if due > len(h["time"]) - 1 or done:
            h["iteration"].append(it)
            h["time"].append(clock)
            h["held_out"].append(held_out(theta))
            if bar is None:
                print(f"  {it:9d} {clock:8.1f} {h['held_out'][-1]:12.4f} "
                      f"{h['nfe_forward'][-1]:6.1f}/{h['nfe_backward'][-1]:.1f}")  # fmt: skip
        if bar is not None:
            bar.set_postfix({"nll": f"{loss:.3f}", "held-out": f"{h['held_out'][-1]:.3f}",
                             "nfe": f"{h['nfe_forward'][-1]:.0f}/{h['nfe_backward'][-1]:.0f}"},
                            refresh=False)  # fmt: skip
            step = 1 if iterations else int(clock) - shown
            bar.update(step)
            shown += step
    if bar is not None:
        bar.close()
    h["held_out_tight"] = held_out(theta, CHECK_OPTS)
    return {"theta": theta, "history": h, "true_ce": true_ce, "x_test": x_test,
            "iterations": it, "clock": clock}  # fmt: skip


def _log_prob(cnf, x, theta, opts):
    """log p(x) under other solver options than the CNF's (the held-out re-scoring)."""
    B = len(x)
    sol = cnf.model.solve(np.hstack([x, np.zeros((B, 1))]), [cnf.t1, 0.0], _rows(theta, B),
                          **opts)  # fmt: skip
    end = sol.y[:, -1]
    return cnf.base.log_prob(end[:, :2]) - end[:, 2]


def _first_within(h, target):
    """The training time at which the held-out NLL first reached ``target`` (or None)."""
    for t, v in zip(h["time"], h["held_out"]):
        if v <= target:
            return t
    return None


def run_density(names, cnf, mlp, quick, minutes, progress):
    results = {}
    for name in names:
        if quick:
            budget = dict(iterations=60, batch=256, n_test=1000, evaluations=3, nfe_every=10)
            what = "60 iterations, batches of 256, 1000 held out"
        else:
            m = minutes[name]
            budget = dict(seconds=60.0 * m, evaluations=30)
            what = f"{m:g} minutes of training, batches of 512, 5000 held out"
        print(f"\n{name}: {what}; Adam lr {LR:g}")
        r = results[name] = train_density(name, cnf, mlp, progress=progress, **budget)
        h = r["history"]
        steady = h["seconds"][min(5, len(h["seconds"]) - 1) :]
        r["ms_per_iteration"] = 1e3 * float(np.median(steady))
        r["gap"] = h["held_out"][-1] - r["true_ce"]
        r["within_0.2_at"] = _first_within(h, r["true_ce"] + 0.2)
        print(f"  held-out NLL {h['held_out'][0]:.4f} → {h['held_out'][-1]:.4f} after "
              f"{r['iterations']} iterations ({r['clock']:.0f} s of training); true density's "
              f"cross-entropy {r['true_ce']:.4f}: gap {r['gap']:.4f} nats")  # fmt: skip
        print(f"  re-scored at rtol = atol = 1e-8: {h['held_out_tight']:.4f} (solver error of "
              f"the 1e-5 score: {h['held_out'][-1] - h['held_out_tight']:+.1e})")  # fmt: skip
        print(f"  {r['ms_per_iteration']:.0f} ms per iteration (median from iteration 6); NFE "
              f"per sample forward/backward {h['nfe_forward'][0]:.0f}/{h['nfe_backward'][0]:.0f}"
              f" at iteration 1, {h['nfe_forward'][-1]:.0f}/{h['nfe_backward'][-1]:.0f} at "
              f"{h['nfe_iteration'][-1]}")  # fmt: skip
        if r["within_0.2_at"] is not None:
            print(f"  within 0.2 nats of the truth after {r['within_0.2_at']:.0f} s of training")
    print("\ndensity estimation (held-out NLL, nats; the truth's: -mean log p_true on the "
          "same held-out samples)")  # fmt: skip
    print(
        f"  {'dataset':13s} {'initial':>8s} {'trained':>8s} {'truth':>8s} {'gap':>7s} "
        f"{'iterations':>10s} {'train s':>8s} {'ms/it':>6s} {'NFE f/b (last)':>15s}"
    )
    for name, r in results.items():
        h = r["history"]
        print(f"  {name:13s} {h['held_out'][0]:8.3f} {h['held_out'][-1]:8.3f} "
              f"{r['true_ce']:8.3f} {r['gap']:7.3f} {r['iterations']:10d} {r['clock']:8.0f} "
              f"{r['ms_per_iteration']:6.0f} "
              f"{h['nfe_forward'][-1]:9.0f}/{h['nfe_backward'][-1]:.0f}")  # fmt: skip
    return results


# -- variational fits ----------------------------------------------------------------------
def cnf_neg_elbo_and_grad(cnf, theta, z, U, grad_U, opts=OPTS):
    """-ELBO on base samples z, E[log N(z) + Δ(1) + U(x(1))], its gradient w.r.t. θ (the
    adjoint of the forward solve with the cotangent (∇U(x)/B, 1/B) on [x, Δ] at t = 1)
    and the adjoint's solver counts."""
    B = len(z)
    y0, rows, ts = np.hstack([z, np.zeros((B, 1))]), _rows(theta, B), [0.0, cnf.t1]
    end = cnf.model.solve(y0, ts, rows, **opts).y[:, -1]
    x, delta = end[:, :2], end[:, 2]
    cot = np.zeros((B, 2, 3))
    cot[:, 1, :2] = grad_U(x) / B
    cot[:, 1, 2] = 1.0 / B
    g = cnf.model.vjp(y0, ts, rows, cot, **opts)
    value = float(np.mean(cnf.base.log_prob(z) + delta + U(x)))
    return value, g.params.sum(axis=0), g.stats


def check_cnf_elbo_gradient(mlp, cache_dir, n=16, coords=6, h=1e-6):
    """The largest relative difference between the adjoint's -ELBO gradient and central
    differences of -ELBO computed from ``cnf.transform``'s log q, on ``coords`` random
    weights, at rtol = atol = 1e-10 (differences of quantities accurate to ~1e-10 over
    2h = 2e-6: ~1e-4 absolute noise at worst, typically ~1e-8 relative)."""
    U, grad_U = ENERGIES["U1"]
    tight = CNF(mlp, cache_dir=cache_dir, verbose=False, **GRAD_CHECK_OPTS)
    rng = np.random.default_rng(5)
    z = rng.standard_normal((n, 2))
    theta = mlp.params + 0.1 * rng.standard_normal(mlp.n_params)  # not the initial point

    def neg_elbo(th):
        x, log_q = tight.transform(z, th, return_log_prob=True)
        return float(np.mean(log_q + U(x)))

    value, grad, _ = cnf_neg_elbo_and_grad(tight, theta, z, U, grad_U, GRAD_CHECK_OPTS)
    worst = abs(value - neg_elbo(theta)) / abs(neg_elbo(theta))
    for i in rng.choice(mlp.n_params, coords, replace=False):
        e = np.zeros_like(theta)
        e[i] = h
        fd = (neg_elbo(theta + e) - neg_elbo(theta - e)) / (2 * h)
        worst = max(worst, abs(grad[i] - fd) / max(abs(fd), 1e-12))
    return worst


def log_normaliser(U, lim=6.0, n=1201):
    """log ∫ exp(-U) over [-lim, lim]² by the trapezoid rule (for U1: its mass lies within
    radius 2 ± 5·0.4 ≪ 6)."""
    g = np.linspace(-lim, lim, n)
    X, Y = np.meshgrid(g, g)
    logp = -U(np.stack([X.ravel(), Y.ravel()], -1)).reshape(X.shape)
    w = np.full(n, g[1] - g[0])
    w[[0, -1]] /= 2
    return float(logsumexp(logp + np.log(w)[:, None] + np.log(w)[None, :]))


def _score(x, log_q, U, grad_U, n_ksd):
    return {"elbo": float(np.mean(-U(x) - log_q)), "ksd": ksd(x[:n_ksd], -grad_U(x[:n_ksd]))}


def fit_energy(name, cnf, mlp, cfg, progress):
    """Planar, radial and CNF fits of exp(-U): {method: scores before and after, time,
    samples}."""
    U, grad_U = ENERGIES[name]
    out = {}
    log_target, grad_log_target = (lambda x: -U(x)), (lambda x: -grad_U(x))
    for label, cls in (("planar ×32", PlanarFlow), ("radial ×32", RadialFlow)):
        flow = cls(2, 32, seed=0)
        theta = flow.params.copy()
        before = _score(*flow.sample(cfg["n_eval"], theta, seed=99), U, grad_U, cfg["n_ksd"])
        opt = Adam(theta, lr=cfg["flow_lr"])
        t0 = time.perf_counter()
        for it in range(cfg["flow_iterations"]):
            _, grad = flow.elbo_and_grad(theta, log_target, grad_log_target, cfg["batch"],
                                         seed=it)  # fmt: skip
            opt.step(-grad)
        seconds = time.perf_counter() - t0
        x, log_q = flow.sample(cfg["n_eval"], theta, seed=99)
        out[label] = {"before": before, "after": _score(x, log_q, U, grad_U, cfg["n_ksd"]),
                      "seconds": seconds, "iterations": cfg["flow_iterations"],
                      "n_params": flow.n_params, "samples": x}  # fmt: skip
    theta = mlp.params.copy()
    z = cnf.base.sample(cfg["n_eval"], seed=99)
    before = _score(*cnf.transform(z, theta, return_log_prob=True), U, grad_U, cfg["n_ksd"])
    opt = Adam(theta, lr=LR)
    rng = np.random.default_rng(0)
    nfe = []
    bar = _bar(cfg["cnf_iterations"], "it", progress)
    t0 = time.perf_counter()
    for _ in range(cfg["cnf_iterations"]):
        value, grad, stats = cnf_neg_elbo_and_grad(
            cnf, theta, rng.standard_normal((cfg["batch"], 2)), U, grad_U
        )
        opt.step(grad)
        nfe.append((stats["forward"]["nfev"].mean(), stats["backward"]["nfev"].mean()))
        if bar is not None:
            bar.set_postfix({"elbo": f"{-value:.3f}", "nfe": "{:.0f}/{:.0f}".format(*nfe[-1])},
                            refresh=False)  # fmt: skip
            bar.update()
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    x, log_q = cnf.transform(z, theta, return_log_prob=True)
    out["CNF 2-64-64-2"] = {"before": before, "after": _score(x, log_q, U, grad_U, cfg["n_ksd"]),
                            "seconds": seconds, "iterations": cfg["cnf_iterations"],
                            "n_params": mlp.n_params, "samples": x, "theta": theta,
                            "nfe": nfe[-1]}  # fmt: skip
    return out


def run_variational(names, cnf, mlp, quick, cache_dir, progress):
    worst = check_cnf_elbo_gradient(mlp, cache_dir)
    print(f"\nCNF reverse-KL gradient (adjoint of the forward solve) vs central differences "
          f"of cnf.transform's ELBO, 6 weights, 16 samples, rtol = atol = 1e-10: max relative "
          f"difference {worst:.1e}")  # fmt: skip
    cfg = dict(flow_iterations=500 if quick else 5000, cnf_iterations=40 if quick else 500,
               batch=128 if quick else 256, flow_lr=5e-3, n_eval=1000 if quick else 4000,
               n_ksd=500 if quick else 2000)  # fmt: skip
    print(f"variational fits: Adam, {cfg['batch']} samples per iteration; planar and radial "
          f"{cfg['flow_iterations']} iterations (lr {cfg['flow_lr']:g}), the CNF "
          f"{cfg['cnf_iterations']} (lr {LR:g}); scored on {cfg['n_eval']} fresh samples "
          f"(ELBO) and the first {cfg['n_ksd']} of them (KSD², IMQ)")  # fmt: skip
    results = {}
    for name in names:
        print(f"\n{name}:")
        results[name] = r = fit_energy(name, cnf, mlp, cfg, progress)
        log_z = log_normaliser(ENERGIES[name][0]) if name == "U1" else None
        if log_z is not None:
            print(f"  log Z = {log_z:.4f} (quadrature): KL(q ‖ p) = log Z - ELBO")
        print(
            f"  {'method':15s} {'params':>6s} {'ELBO init':>10s} {'ELBO':>8s} "
            f"{'KSD² init':>10s} {'KSD²':>8s}{'  KL':>8s}  {'iterations':>10s} {'time s':>7s}"
        )
        for label, m in r.items():
            kl = f"{log_z - m['after']['elbo']:8.3f}" if log_z is not None else " " * 8
            print(f"  {label:15s} {m['n_params']:6d} {m['before']['elbo']:10.3f} "
                  f"{m['after']['elbo']:8.3f} {m['before']['ksd']:10.4f} {m['after']['ksd']:8.4f}"
                  f"{kl}  {m['iterations']:10d} {m['seconds']:7.1f}")  # fmt: skip
        print(
            f"  (the CNF's last iteration: NFE per sample forward/backward "
            f"{r['CNF 2-64-64-2']['nfe'][0]:.0f}/{r['CNF 2-64-64-2']['nfe'][1]:.0f})"
        )
        r["log_z"] = log_z
    return results, worst


def main(
    quick: bool = False,
    plot: str | None = "cnf_2d",
    cache_dir=None,
    progress: bool = True,
    minutes: dict | None = None,
    datasets=None,
    energies=None,
):
    """Returns {"density": {dataset: ...}, "variational": {energy: ...}, "grad_check": ...}.
    ``plot``: the prefix of the saved figures (``<plot>_density.png``, ``_curve.png``,
    ``_variational.png``); None: no plots."""
    if datasets is None:
        datasets = ["8gaussians"] if quick else list(DATASETS)
    if energies is None:
        energies = ["U1"] if quick else list(ENERGIES)
    minutes = {"8gaussians": 15.0, "moons": 5.0, "checkerboard": 5.0} | (minutes or {})
    mlp = MLP(SIZES, "tanh", time_input=True, seed=0)
    cnf = CNF(mlp, cache_dir=cache_dir, **OPTS)
    print(f"CNF: MLP {list(SIZES)}, tanh, time input ({mlp.n_params} weights), base N(0, I) "
          f"at t = 0, data at t = 1; {OPTS['method']} rtol = atol = {OPTS['rtol']:g}, exact "
          f"trace, checkpoint adjoint")  # fmt: skip
    if "moons" in datasets:
        x = moons(200, np.random.default_rng(7))
        d = np.max(np.abs(moons_log_prob(x) - moons_log_prob(x, 2 * MOON_NODES)))
        print(f"moons' true log-density: {MOON_NODES} vs {2 * MOON_NODES} quadrature nodes "
              f"per arc differ by at most {d:.1e}")  # fmt: skip
    density = run_density(datasets, cnf, mlp, quick, minutes, progress) if datasets else {}
    variational, check = ({}, None)
    if energies:
        variational, check = run_variational(energies, cnf, mlp, quick, cache_dir, progress)
    if plot:
        _plot(plot, cnf, density, variational, 40 if quick else 120)
    return {"density": density, "variational": variational, "grad_check": check}


# -- figures -------------------------------------------------------------------------------
def _plot(prefix, cnf, density, variational, n_grid):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plots)")
        return
    lim = 4.5
    g = np.linspace(-lim, lim, n_grid)
    X, Y = np.meshgrid(g, g)
    grid = np.stack([X.ravel(), Y.ravel()], -1)
    extent = dict(range=[[-lim, lim], [-lim, lim]], bins=80, cmap="viridis")
    if density:
        fig, axes = plt.subplots(len(density), 3, figsize=(12, 4 * len(density)), squeeze=False)
        for ax, (name, r) in zip(axes, density.items()):
            ax[0].hist2d(*r["x_test"].T, **extent)
            ax[0].set_title(f"{name}: held-out data")
            p = np.exp(cnf.log_prob(grid, r["theta"])).reshape(X.shape)
            ax[1].pcolormesh(X, Y, p, cmap="viridis", shading="auto")
            ax[1].set_title(f"CNF density (held-out NLL {r['history']['held_out'][-1]:.3f})")
            ax[2].hist2d(*cnf.sample(len(r["x_test"]), r["theta"], seed=3).T, **extent)
            ax[2].set_title("CNF samples")
            for a in ax:
                a.set_aspect("equal")
        fig.tight_layout()
        fig.savefig(f"{prefix}_density.png", dpi=100)
        plt.close(fig)
        print(f"saved {prefix}_density.png")
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for k, (name, r) in enumerate(density.items()):
            h = r["history"]
            ax.plot(h["time"], h["held_out"], "o-", color=f"C{k}", ms=3, label=name)
            ax.axhline(r["true_ce"], color=f"C{k}", ls="--", lw=0.8)
            if name == "8gaussians":
                ax.axhspan(r["true_ce"], r["true_ce"] + 0.2, color=f"C{k}", alpha=0.1,
                           label="8gaussians: within 0.2 nats of the truth")  # fmt: skip
        ax.set(xlabel="training time [s] (2 cores)", ylabel="held-out NLL [nats]",
               title="held-out NLL vs training time (dashed: the true density's)")  # fmt: skip
        top = max(max(r["history"]["held_out"][1:] or [r["true_ce"] + 1]) for r in density.values())
        ax.set_ylim(min(r["true_ce"] for r in density.values()) - 0.2, top + 0.2)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(f"{prefix}_curve.png", dpi=110)
        plt.close(fig)
        print(f"saved {prefix}_curve.png")
    if variational:
        fig, axes = plt.subplots(len(variational), 4, figsize=(16, 4 * len(variational)),
                                 squeeze=False)  # fmt: skip
        for ax, (name, r) in zip(axes, variational.items()):
            U = ENERGIES[name][0]
            ax[0].pcolormesh(X, Y, np.exp(-U(grid)).reshape(X.shape), cmap="viridis",
                             shading="auto")  # fmt: skip
            ax[0].set_title(f"{name}: exp(-U)")
            for a, label in zip(ax[1:], ("planar ×32", "radial ×32", "CNF 2-64-64-2")):
                m = r[label]
                a.hist2d(*m["samples"].T, **extent)
                a.set_title(f"{label}: ELBO {m['after']['elbo']:.2f}, KSD² {m['after']['ksd']:.3f}")
            for a in ax:
                a.set_aspect("equal")
        fig.tight_layout()
        fig.savefig(f"{prefix}_variational.png", dpi=100)
        plt.close(fig)
        print(f"saved {prefix}_variational.png")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="8 Gaussians for 60 iterations and U1 only (the tests' run)")  # fmt: skip
    p.add_argument("--plot", default="cnf_2d", help="figure file prefix; '' for no plots")
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="training time per dataset (default: 15 for 8gaussians, 5 others)",
    )
    p.add_argument("--datasets", default=None, help=f"comma-separated, of {list(DATASETS)}")
    p.add_argument("--energies", default=None,
                   help=f"comma-separated, of {list(ENERGIES)}; '' for none")  # fmt: skip
    args = p.parse_args()
    split = lambda s: None if s is None else [v for v in s.split(",") if v]  # noqa: E731
    main(quick=args.quick, plot=args.plot or None,
         minutes=None if args.minutes is None else dict.fromkeys(DATASETS, args.minutes),
         datasets=split(args.datasets), energies=split(args.energies))  # fmt: skip
