"""CNF: a 2-D continuous normalizing flow's training step against torchdiffeq, and the
exact trace against Hutchinson's as the dimension grows.

**Training step.** FFJORD's eight Gaussians, a fresh batch of 512 per iteration (the
same seeded batches for every solver); f_θ(t, z) an MLP 2 → 64 → 64 → 2, tanh, with
time input (the same initial weights: ``symode.nn.MLP``'s Glorot draw, seed 0, copied
into ``torch.nn.Linear`` layers); base N(0, I) at t = 0, data at t = 1; dopri5 at
rtol = atol = 1e-5; the exact trace; the mean NLL; Adam (lr 1e-3, torch's update, which
``symode.nn.train.Adam`` is). float64 throughout (symode's CNF computes in float64; one
torchdiffeq row in float32, its examples' default, for information).

- symode: ``CNF.nll_and_grad`` (one forward solve from t = 1 to 0 and one adjoint: the
  default checkpointed continuous adjoint, and the discrete adjoint);
- torchdiffeq: ``examples/cnf.py``'s model with the MLP above, the trace as that example
  computes it (a loop over the dimensions of ``autograd.grad`` of fᵢ w.r.t. z with
  ``create_graph=True``, keeping the iᵗʰ column), integrated as a tuple (z, Δ) from
  t = 1 to 0; ``odeint`` (backprop through the solver, the example's default) and
  ``odeint_adjoint``.

Each solver trains in its own fresh process, the solvers alternating, three rounds
(``--quick``: one round, fewer iterations). Reported: ms per iteration (the median over
rounds of each round's median after the warm-up iterations), the forward solve's and the rest's
share, NFE per iteration (symode: per sample, batch mean — each sample takes its own
steps; torchdiffeq: calls of the batched dynamics, the batch sharing one step
sequence), and as checks that both compute the same thing, the first iteration's loss
and the largest difference of the first gradients. symode's NFE come from the two-pass
route (``model.solve`` + ``model.vjp``), which takes ``nll_and_grad``'s steps:
``nll_and_grad`` returns no solver counts. Where the time goes: each phase's core time
(ms × threads) per sample and per evaluation, forward and backward, for every solver;
and what vectorising a dot product is worth (one 64 × 64 mat-vec, serial sum against
reassociated).

**Exact vs Hutchinson.** MLP d → 64 → 64 → d (tanh, time input, Glorot seed 0), base
samples as data, d = 2, 8, 32, 128: µs per sample of ``CNF.log_prob`` and
``CNF.nll_and_grad`` with each trace (interleaved medians), NFE per sample, and the RMS
error of a one-probe Hutchinson log p against the exact one.

``python benchmarks/bench_cnf.py [--quick]`` prints the tables.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np
from _util import bench_cache_dir, log, round_robin, run_child

TITLE = "CNF: a 2-D training step against torchdiffeq; exact vs Hutchinson trace as d grows"
DESCRIPTION = (
    "Eight Gaussians (FFJORD), batch 512, MLP 2-64-64-2 tanh with time input, the same "
    "initial weights and batches for every solver, dopri5 at rtol = atol = 1e-5, exact "
    "trace, Adam 1e-3, float64 unless stated. Each solver in a fresh process, alternating, "
    "three rounds (--quick: one). symode's NFE "
    "are per sample (each takes its own steps), torchdiffeq's per batched call. The "
    "trace table: MLP d-64-64-d, `CNF.log_prob` and `CNF.nll_and_grad` per sample."
)
BATCH, HIDDEN, RTOL, ATOL, LR, T1 = 512, 64, 1e-5, 1e-5, 1e-3, 1.0
TARGET = 5.0  # issue 16: symode ≥ 5× faster per iteration than torchdiffeq
SOLVERS = (
    "symode, checkpoint adjoint",
    "symode, discrete adjoint",
    "torchdiffeq odeint (backprop)",
    "torchdiffeq odeint_adjoint",
    "torchdiffeq odeint (backprop), float32",
)
DIMS = (2, 8, 32, 128)


# -- the shared problem --------------------------------------------------------------------
def eight_gaussians(n, rng):
    """FFJORD's toy data: centres 4·(compass unit vectors), N(0, 0.5²) noise, all / 1.414."""
    unit = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)], float)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    k = rng.integers(8, size=n)
    return (4.0 * unit[k] + 0.5 * rng.standard_normal((n, 2))) / 1.414


def batches(iterations):
    rng = np.random.default_rng(0)
    return [eight_gaussians(BATCH, rng) for _ in range(iterations)]


def network(dim=2):
    from symode.nn import MLP

    return MLP((dim, HIDDEN, HIDDEN, dim), "tanh", time_input=True, seed=0)


# -- symode --------------------------------------------------------------------------------
def _rows(theta, B):
    return np.ascontiguousarray(np.broadcast_to(theta, (B, theta.size)))


def run_symode(iterations, adjoint):
    from symode import CNF
    from symode.nn.train import Adam

    mlp = network()
    cnf = CNF(mlp, cache_dir=bench_cache_dir(), verbose=False, method="dopri5", rtol=RTOL,
              atol=ATOL)  # fmt: skip
    opts = dict(method="dopri5", rtol=RTOL, atol=ATOL)
    theta = mlp.params.copy()
    opt = Adam(theta, lr=LR)
    rec = {"times": [], "forward": [], "nfe_f": [], "nfe_b": [], "loss": []}
    for it, x in enumerate(batches(iterations)):
        used = theta.copy()  # this iteration's weights (the step updates theta in place)
        t0 = time.perf_counter()
        loss, grad = cnf.nll_and_grad(x, theta, adjoint=adjoint)
        opt.step(grad)
        rec["times"].append(time.perf_counter() - t0)
        rec["loss"].append(loss)
        if it == 0:
            rec["grad0"] = grad.tolist()
        # untimed in the iteration's time: the forward solve alone (the same steps as
        # nll_and_grad's), then the solver counts by the two-pass route, model.vjp with
        # the NLL's cotangent at t = 0, (z(0)/B, 1/B) on [z, Δ] (the same steps again)
        y0, rows, ts = np.hstack([x, np.zeros((BATCH, 1))]), _rows(used, BATCH), [T1, 0.0]
        t0 = time.perf_counter()
        sol = cnf.model.solve(y0, ts, rows, **opts)
        rec["forward"].append(time.perf_counter() - t0)
        cot = np.zeros((BATCH, 2, 3))
        cot[:, 1, :2] = sol.y[:, -1, :2] / BATCH
        cot[:, 1, 2] = 1.0 / BATCH
        st = cnf.model.vjp(y0, ts, rows, cot, adjoint=adjoint, **opts).stats
        rec["nfe_f"].append(float(st["forward"]["nfev"].mean()))
        rec["nfe_b"].append(float(st["backward"]["nfev"].mean()))
    rec["kernels"] = dot_costs()
    rec["threads"] = _numba_threads()
    return rec


def _numba_threads():
    import numba

    return numba.get_num_threads()


def dot_costs():
    """µs per call, one thread, of a 64 × 64 matrix-vector product written as symode's
    MLP kernels wrote theirs before 91704fc (a serial dot product per row, fastmath
    'contract' only: LLVM may not reassociate the sum and cannot vectorise it) and with
    'reassoc' allowed (what the kernels' dot() now compiles with)."""
    from numba import njit

    res = {}

    def matvec(fastmath):
        @njit(fastmath=fastmath, cache=False)
        def mv(W, v, z, reps):
            for _ in range(reps):
                for r in range(64):
                    acc = 0.0
                    for c in range(64):
                        acc += W[r * 64 + c] * v[c]
                    z[r] = acc
                v[0] = 1e-3 * z[0]  # a dependency between repetitions
            return z[0]

        return mv

    rng = np.random.default_rng(0)
    W, v, z = rng.standard_normal(4096), rng.standard_normal(64), np.zeros(64)
    for label, fm in (
        ("matvec_contract", {"contract"}),
        ("matvec_reassoc", {"contract", "reassoc"}),
    ):
        mv = matvec(fm)
        mv(W, v, z, 10)
        best = []
        for _ in range(5):
            t0 = time.perf_counter()
            mv(W, v, z, 5000)
            best.append((time.perf_counter() - t0) / 5000)
        res[label] = 1e6 * min(best)
    return res


# -- torchdiffeq ---------------------------------------------------------------------------
def run_torch(iterations, adjoint, dtype_name):
    import torch
    from torchdiffeq import odeint, odeint_adjoint

    dtype = torch.float64 if dtype_name == "float64" else torch.float32
    layers = network().layers()
    calls = [0]

    def trace_df_dz(f, z):
        """torchdiffeq examples/cnf.py's exact trace: Σᵢ ∂fᵢ/∂zᵢ by autograd, per dimension."""
        sum_diag = 0.0
        for i in range(z.shape[1]):
            sum_diag += torch.autograd.grad(f[:, i].sum(), z, create_graph=True)[0][:, i]
        return sum_diag

    class CNFFunc(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.ModuleList([
                torch.nn.Linear(3, HIDDEN), torch.nn.Linear(HIDDEN, HIDDEN),
                torch.nn.Linear(HIDDEN, 2),
            ])  # fmt: skip
            with torch.no_grad():  # symode's initial weights: W (out × in), b
                for lin, layer in zip(self.net, layers):
                    lin.weight.copy_(torch.tensor(layer["W"]))
                    lin.bias.copy_(torch.tensor(layer["b"]))

        def forward(self, t, states):
            calls[0] += 1
            z = states[0]
            with torch.set_grad_enabled(True):
                z.requires_grad_(True)
                h = torch.cat([z, t.expand(z.shape[0], 1)], 1)  # the time input, last
                h = torch.tanh(self.net[0](h))
                h = torch.tanh(self.net[1](h))
                dz_dt = self.net[2](h)
                dlogp_z_dt = -trace_df_dz(dz_dt, z).view(z.shape[0], 1)
            return dz_dt, dlogp_z_dt

    func = CNFFunc().to(dtype)
    solve = odeint_adjoint if adjoint else odeint
    opt = torch.optim.Adam(func.parameters(), lr=LR)
    ts = torch.tensor([T1, 0.0], dtype=dtype)
    half_log_2pi = 0.5 * np.log(2.0 * np.pi)
    rec = {"times": [], "forward": [], "nfe_f": [], "nfe_b": [], "loss": []}
    for it, xb in enumerate(batches(iterations)):
        x = torch.tensor(xb, dtype=dtype)
        t0 = time.perf_counter()
        calls[0] = 0
        opt.zero_grad()
        z_t, logp_diff_t = solve(func, (x, torch.zeros(BATCH, 1, dtype=dtype)), ts,
                                 rtol=RTOL, atol=ATOL, method="dopri5")  # fmt: skip
        t_fwd = time.perf_counter() - t0
        nfe_f = calls[0]
        z0, logp_diff_0 = z_t[-1], logp_diff_t[-1]
        logp_x = (-0.5 * (z0**2).sum(1) - 2 * half_log_2pi) - logp_diff_0.view(-1)
        loss = -logp_x.mean()
        loss.backward()
        if it == 0:
            rec["grad0"] = np.concatenate(
                [np.concatenate([lin.weight.grad.double().numpy().ravel(),
                                 lin.bias.grad.double().numpy()]) for lin in func.net]
            ).tolist()  # fmt: skip
        opt.step()
        rec["times"].append(time.perf_counter() - t0)
        rec["forward"].append(t_fwd)
        rec["nfe_f"].append(nfe_f)
        rec["nfe_b"].append(calls[0] - nfe_f)
        rec["loss"].append(float(loss.detach()))
    rec["threads"] = torch.get_num_threads()
    return rec


def child(name, iterations):
    try:
        if name.startswith("symode"):
            rec = run_symode(iterations, "discrete" if "discrete" in name else "checkpoint")
        else:
            rec = run_torch(iterations, "adjoint" in name, "float32" if "32" in name else "float64")
    except ImportError as err:
        rec = {"missing": str(err)}
    print(json.dumps(rec))


# -- exact vs Hutchinson as the dimension grows --------------------------------------------
def _batch_for(d):
    """Samples per call: the exact trace costs d tangent passes per evaluation (and its
    gradient d reverse passes), so fewer samples at large d keep a call near a second."""
    return {2: 256, 8: 256, 32: 64, 128: 16}.get(d, 16)


def _trace_calls(cnfs, x, theta, eps):
    exact, hutch = cnfs["exact"], cnfs["hutchinson"]
    return {
        ("log_prob", "exact"): lambda: exact.log_prob(x, theta),
        ("log_prob", "hutchinson"): lambda: hutch.log_prob(x, theta, eps=eps),
        ("nll_and_grad", "exact"): lambda: exact.nll_and_grad(x, theta),
        ("nll_and_grad", "hutchinson"): lambda: hutch.nll_and_grad(x, theta, eps=eps),
    }


def trace_child(quick):
    """In a fresh process: for each d, µs per sample of log_prob and nll_and_grad with the
    exact and the Hutchinson trace, NFE per sample, Hutchinson's log p error."""
    from symode import CNF

    out = []
    budget = 1.5 if quick else 5.0
    for d in DIMS:
        mlp = network(d)
        B = _batch_for(d)
        opts = dict(method="dopri5", rtol=RTOL, atol=ATOL)
        cnfs = {tr: CNF(mlp, trace=tr, cache_dir=bench_cache_dir(), verbose=False, **opts)
                for tr in ("exact", "hutchinson")}  # fmt: skip
        x = cnfs["exact"].base.sample(B, seed=1)
        eps = np.random.default_rng(2).choice([-1.0, 1.0], size=(B, d))
        theta = mlp.params
        lp_exact = cnfs["exact"].log_prob(x, theta)
        lp_hutch = cnfs["hutchinson"].log_prob(x, theta, eps=eps)
        y0 = np.hstack([x, np.zeros((B, 1))])
        nfe = {}
        for tr, rows in (("exact", _rows(theta, B)),
                         ("hutchinson", np.hstack([_rows(theta, B), eps]))):  # fmt: skip
            sol = cnfs[tr].model.solve(y0, [T1, 0.0], rows, **opts)
            nfe[tr] = float(sol.stats["nfev"].mean())
        log(f"  CNF traces: d = {d}, {B} samples")
        calls = _trace_calls(cnfs, x, theta, eps)
        med = round_robin({f"{k[0]}|{k[1]}": fn for k, fn in calls.items()}, budget_s=budget,
                          max_reps=50)  # fmt: skip
        out.append({
            "d": d, "batch": B, "n_params": mlp.n_params,
            "us": {k: 1e6 * v / B for k, v in med.items()}, "nfe": nfe,
            "hutch_rms_error": float(np.sqrt(np.mean((lp_hutch - lp_exact) ** 2))),
            "log_p_spread": float(np.std(lp_exact)),
        })  # fmt: skip
    print(json.dumps(out))


# -- the module ----------------------------------------------------------------------------
def _median_ms(times, warm):
    return 1e3 * statistics.median(times[warm:])


def run_training(quick):
    """Each solver in a fresh process, ``rounds`` times, the solvers alternating within a
    round (a drift in machine load is spread over all of them); per solver the median over
    rounds of each round's median iteration."""
    iterations, warm, rounds = (25, 5, 1) if quick else (50, 10, 3)
    results, missing, rows = {name: [] for name in SOLVERS}, {}, []
    for k in range(rounds):
        for name in SOLVERS:
            if name in missing:
                continue
            log(f"  CNF: {name}, {iterations} iterations, round {k + 1} (fresh process)")
            out = run_child([__file__, "--child", name, str(iterations)], timeout=1800)
            if "missing" in out:
                missing[name] = out["missing"]
            else:
                results[name].append(out)
    first = {name: recs[0] for name, recs in results.items() if recs}
    ref = first.get("symode, checkpoint adjoint")
    g_ref = np.array(ref["grad0"]) if ref else None
    ms, fwd_ms = {}, {}
    for name in SOLVERS:
        if name in missing:
            rows.append(
                {"table": "step", "solver": name, "note": f"not installed: {missing[name]}"}
            )
            continue
        recs = results[name]
        per_round = [_median_ms(r["times"], warm) for r in recs]
        ms[name] = statistics.median(per_round)
        fwd = fwd_ms[name] = statistics.median([_median_ms(r["forward"], warm) for r in recs])
        nfe_f = float(np.mean([np.mean(r["nfe_f"][warm:]) for r in recs]))
        nfe_b = float(np.mean([np.mean(r["nfe_b"][warm:]) for r in recs]))
        r = recs[0]
        row = {
            "table": "step",
            "solver": name,
            f"ms/iteration (median of {warm + 1}–{iterations})": ms[name],
            f"rounds' medians ({len(recs)})": " / ".join(f"{v:.0f}" for v in per_round),
            "forward solve [ms]": fwd,
            "rest: backward + update [ms]": ms[name] - fwd,
            "NFE forward / backward": f"{nfe_f:.1f} / {nfe_b:.1f}",
            "forward ms per NFE": fwd / nfe_f,
            "threads": r["threads"],
            "loss, iteration 1": r["loss"][0],
            f"loss, iteration {iterations}": r["loss"][-1],
        }
        if g_ref is not None:
            g = np.array(r["grad0"])
            row["first gradient vs symode checkpoint (max abs diff ÷ max abs)"] = float(
                np.max(np.abs(g - g_ref)) / np.max(np.abs(g_ref))
            )
        rows.append(row)
    targets = []
    sym = ms.get("symode, checkpoint adjoint")
    torch64 = [ms[k] for k in ms if k.startswith("torchdiffeq") and "float32" not in k]
    if sym and torch64:
        best = min(torch64)
        targets.append({
            "table": "targets",
            "what": "2-D CNF ms/iteration: torchdiffeq (faster float64 variant) ÷ symode "
                    "(checkpoint adjoint)",
            "measured": f"{best / sym:.2f} ({best:.1f} / {sym:.1f} ms)",
            "target": f"≥ {TARGET:g}",
            "met": best / sym >= TARGET,
        })  # fmt: skip
    core_us = 1e3 / BATCH  # ms of a phase, × threads ÷ NFE → core µs per sample-evaluation
    for name in ms:
        recs, r = results[name], first[name]
        nfe_f = float(np.mean([np.mean(q["nfe_f"][warm:]) for q in recs]))
        nfe_b = float(np.mean([np.mean(q["nfe_b"][warm:]) for q in recs]))
        rest = ms[name] - fwd_ms[name]
        backprop = nfe_b == 0  # the graph of every forward evaluation, replayed
        rows.append({
            "table": "where",
            "solver": name,
            "forward: core µs per sample-evaluation": fwd_ms[name] * r["threads"] * core_us
            / nfe_f,
            "backward: core µs per sample-evaluation": rest * r["threads"] * core_us
            / (nfe_f if backprop else nfe_b),
            "backward counted per": "forward evaluation (backprop)" if backprop
            else "backward evaluation",
        })  # fmt: skip
    if ref:
        recs = results["symode, checkpoint adjoint"]
        k = {key: statistics.median([r["kernels"][key] for r in recs]) for key in ref["kernels"]}
        rows += [
            {"table": "dot", "64 × 64 mat-vec, one thread": "serial dot products (fastmath "
             "'contract': symode's MLP kernels before 91704fc)", "µs/call": k["matvec_contract"]},
            {"table": "dot", "64 × 64 mat-vec, one thread": "'reassoc' allowed (LLVM "
             "vectorises the sum: the kernels' dot() since 91704fc)",
             "µs/call": k["matvec_reassoc"]},
        ]  # fmt: skip
    if quick:
        rows.append({"table": "step", "solver": f"(quick: {iterations} iterations, one round)"})
    return targets + rows


def run_traces(quick):
    out = run_child([__file__, "--traces", "quick" if quick else "full"], timeout=1800)
    rows = []
    cross = {}
    for r in out:
        us = r["us"]
        row = {"table": "traces", "d": r["d"], "weights": r["n_params"], "samples": r["batch"]}
        for what in ("log_prob", "nll_and_grad"):
            e, h = us[f"{what}|exact"], us[f"{what}|hutchinson"]
            row[f"{what} exact [µs/sample]"] = e
            row[f"{what} Hutchinson [µs/sample]"] = h
            row[f"{what} exact ÷ Hutchinson"] = e / h
            if e > h and what not in cross:
                cross[what] = r["d"]
        row["NFE/sample exact / Hutchinson"] = (
            f"{r['nfe']['exact']:.0f} / {r['nfe']['hutchinson']:.0f}"
        )
        row["Hutchinson log p error, RMS [nats]"] = r["hutch_rms_error"]
        rows.append(row)
    for what in ("log_prob", "nll_and_grad"):
        rows.append({"table": "traces", "d": f"{what}: Hutchinson cheaper from d = "
                     f"{cross.get(what, f'> {DIMS[-1]}')}"})  # fmt: skip
    return rows


def run(quick: bool) -> list[dict]:
    return run_training(quick) + run_traces(quick)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 3 and sys.argv[1] == "--traces":
        trace_child(sys.argv[2] == "quick")
    else:
        quick = "--quick" in sys.argv
        for row in run(quick):
            print(row)
