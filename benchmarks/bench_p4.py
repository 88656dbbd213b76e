"""P4: neural ODE training on torchdiffeq's spiral task (``../shared/bench/PROBLEMS.md``).

Every solver trains the same network from the same initial weights on the same
sequence of windows: f(y) = W₂ tanh(W₁ y³ + b₁) + b₂ (hidden 50, weights N(0, 0.1²),
zero biases, seed s), 20 random windows of 10 consecutive points per iteration, the
mean L1 loss, RMSprop (lr 1e-3, α 0.99, ε 1e-8 outside the square root, as torch's),
dopri5 at rtol 1e-7, atol 1e-9, float32. Reported: ms per iteration (median of
iterations 11–210), forward/backward evaluations per iteration, and the objective over
all 990 windows after 200 and 1000 iterations (mean over seeds).

- symode: ``symode.nn.MLP`` compiled with the L1 objective as a symbolic loss, one
  ``model.gradient`` call per iteration: the discrete adjoint (what diffrax's default
  RecursiveCheckpointAdjoint computes too) in float32 and float64, and the checkpoint
  (continuous) adjoint in float32;
- torchdiffeq: ``odeint`` (backprop through the solver) and ``odeint_adjoint``;
- diffrax + equinox + optax: ``diffeqsolve`` (Dopri5, PIDController, the default
  RecursiveCheckpointAdjoint) vmapped over the windows, the loss and gradient jitted.

And the memory of one gradient of the same network as the horizon grows (fixed-step
RK4, dt = 0.01, fresh processes): symode's adjoint modes against torchdiffeq's.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np
from _util import bench_cache_dir, log, run_child

TITLE = "P4: neural ODE training, torchdiffeq's spiral (ms per iteration, all-window L1)"
DESCRIPTION = (
    "Same network, initial weights and window sequence for every solver; float32, "
    "dopri5 at rtol 1e-7 / atol 1e-9, RMSprop 1e-3. Each (solver, seed) trains in a "
    "fresh process, the solvers alternating within a seed. ms per iteration: median of "
    "iterations 11–210 (the first ones compile). L1: the objective over all 990 windows."
)
A_TRUE = np.array([[-0.1, 2.0], [-2.0, -0.1]])
BATCH, WINDOW, HIDDEN = 20, 10, 50
RTOL, ATOL, LR = 1e-7, 1e-9, 1e-3
TIMED = slice(10, 210)  # iterations 11-210
TARGET_TORCH, TARGET_DIFFRAX = 30.0, 3.0


def problem():
    """The true trajectory (scipy's DOP853 at 1e-12) and the time grid."""
    from scipy.integrate import solve_ivp

    t = np.linspace(0.0, 25.0, 1000)
    sol = solve_ivp(
        lambda _, y: (y**3) @ A_TRUE, (0.0, 25.0), [2.0, 0.0], "DOP853", t_eval=t,
        rtol=1e-12, atol=1e-12,
    )  # fmt: skip
    return t, sol.y.T.copy()


def initial_weights(seed):
    """(W1 (50, 2), b1, W2 (2, 50), b2): N(0, 0.1²) weights, zero biases."""
    rng = np.random.default_rng(seed)
    return (
        rng.normal(0.0, 0.1, (HIDDEN, 2)),
        np.zeros(HIDDEN),
        rng.normal(0.0, 0.1, (2, HIDDEN)),
        np.zeros(2),
    )


def batches(seed, iterations, n_windows):
    rng = np.random.default_rng(1000 + seed)
    return [rng.choice(n_windows, BATCH, replace=False) for _ in range(iterations)]


def windows(true_y, starts):
    idx = np.asarray(starts)[:, None] + np.arange(WINDOW)
    return true_y[starts], true_y[idx]


# -- symode ------------------------------------------------------------------------------
def run_symode(rec, t, true_y, seed, iterations, dtype, adjoint, seminorm=True):
    import sympy as sp

    import symode
    from symode.nn import MLP
    from symode.nn.train import RMSprop

    mlp = MLP((2, HIDDEN, 2), "tanh", input_map="cube")
    # the weights in the run's dtype (float32 end to end for the float32 rows)
    theta = np.concatenate([w.ravel() for w in initial_weights(seed)]).astype(dtype)
    y0s, y1s = mlp.states
    d0, d1 = sp.symbols("d0 d1", real=True)
    n_obs = BATCH * WINDOW * 2
    loss = symode.Loss(observation=(sp.Abs(y0s - d0) + sp.Abs(y1s - d1)) / n_obs, data=(d0, d1))
    model = mlp.compile(loss=loss, cache_dir=bench_cache_dir())
    opts = dict(method="dopri5", rtol=RTOL, atol=ATOL, dtype=dtype)
    t_win = t[:WINDOW]
    opt = RMSprop(theta, lr=LR, alpha=0.99, eps=1e-8)
    times, nfe_f, nfe_b, l1 = rec["times"], rec["nfe_f"], rec["nfe_b"], rec["l1"]
    n_windows = len(t) - WINDOW
    for it, starts in enumerate(batches(seed, iterations, n_windows)):
        yield
        t0 = time.perf_counter()
        y0, obs = windows(true_y, starts)
        g = model.gradient(y0, t_win, theta, obs, adjoint=adjoint, seminorm=seminorm, **opts)
        opt.step(g.params.sum(axis=0))
        times.append(time.perf_counter() - t0)
        nfe_f.append(int(g.stats["forward"]["nfev"].sum()))
        nfe_b.append(int(g.stats["backward"]["nfev"].sum()))
        if it + 1 in (200, 1000):
            y0, obs = windows(true_y, np.arange(n_windows))
            pred = model.solve(y0, t_win, theta, **opts, throw=False).y
            l1[it + 1] = float(np.mean(np.abs(pred.astype(np.float64) - obs)))


# -- torchdiffeq -------------------------------------------------------------------------
def run_torch(rec, t, true_y, seed, iterations, adjoint):
    import torch
    from torchdiffeq import odeint, odeint_adjoint

    torch.manual_seed(seed)
    W1, b1, W2, b2 = initial_weights(seed)
    calls = [0]

    class Func(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(2, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, 2)
            )
            with torch.no_grad():
                self.net[0].weight.copy_(torch.tensor(W1))
                self.net[0].bias.copy_(torch.tensor(b1))
                self.net[2].weight.copy_(torch.tensor(W2))
                self.net[2].bias.copy_(torch.tensor(b2))

        def forward(self, _t, y):
            calls[0] += 1
            return self.net(y**3)

    func = Func()
    solve = odeint_adjoint if adjoint else odeint
    opt = torch.optim.RMSprop(func.parameters(), lr=LR, alpha=0.99, eps=1e-8)
    t_win = torch.tensor(t[:WINDOW], dtype=torch.float32)
    true_t = torch.tensor(true_y, dtype=torch.float32)
    times, nfe, l1 = rec["times"], rec["nfe_f"], rec["l1"]
    n_windows = len(t) - WINDOW
    for it, starts in enumerate(batches(seed, iterations, n_windows)):
        yield
        t0 = time.perf_counter()
        calls[0] = 0
        idx = torch.tensor(np.asarray(starts)[:, None] + np.arange(WINDOW))
        y0, obs = true_t[starts], true_t[idx]  # (B, 2), (B, WINDOW, 2)
        opt.zero_grad()
        pred = solve(func, y0, t_win, rtol=RTOL, atol=ATOL, method="dopri5")  # (T, B, 2)
        loss = torch.mean(torch.abs(pred.transpose(0, 1) - obs))
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
        nfe.append(calls[0])
        if it + 1 in (200, 1000):
            with torch.no_grad():
                y0, obs = windows(true_y, np.arange(n_windows))
                pred = odeint(func, torch.tensor(y0, dtype=torch.float32), t_win, rtol=RTOL,
                              atol=ATOL, method="dopri5")  # fmt: skip
                l1[it + 1] = float(np.mean(np.abs(pred.transpose(0, 1).numpy() - obs)))


# -- diffrax + equinox + optax -----------------------------------------------------------
def run_diffrax(rec, t, true_y, seed, iterations):
    import diffrax
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    W1, b1, W2, b2 = (jnp.asarray(w, jnp.float32) for w in initial_weights(seed))
    params = {"W1": W1, "b1": b1, "W2": W2, "b2": b2}

    def vf(_t, y, p):
        return p["W2"] @ jnp.tanh(p["W1"] @ y**3 + p["b1"]) + p["b2"]

    t_win = jnp.asarray(t[:WINDOW], jnp.float32)

    def solve_one(p, y0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(vf), diffrax.Dopri5(), t0=0.0, t1=t_win[-1], dt0=None, y0=y0,
            args=p, saveat=diffrax.SaveAt(ts=t_win),
            stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL), max_steps=100_000,
        )  # fmt: skip
        return sol.ys, sol.stats["num_steps"]

    def loss_fn(p, y0, obs):
        ys, steps = jax.vmap(solve_one, in_axes=(None, 0))(p, y0)
        return jnp.mean(jnp.abs(ys - obs)), steps

    opt = optax.rmsprop(LR, decay=0.99, eps=1e-8, eps_in_sqrt=False)
    state = opt.init(params)

    @eqx.filter_jit
    def step(p, s, y0, obs):
        (loss, steps), g = jax.value_and_grad(loss_fn, has_aux=True)(p, y0, obs)
        upd, s = opt.update(g, s, p)
        return optax.apply_updates(p, upd), s, loss, steps.sum()

    eval_l1 = eqx.filter_jit(lambda p, y0, obs: loss_fn(p, y0, obs)[0])
    true_j = jnp.asarray(true_y, jnp.float32)
    times, steps_n, l1 = rec["times"], rec["nfe_f"], rec["l1"]
    n_windows = len(t) - WINDOW
    for it, starts in enumerate(batches(seed, iterations, n_windows)):
        yield
        t0 = time.perf_counter()
        idx = np.asarray(starts)[:, None] + np.arange(WINDOW)
        params, state, loss, steps = step(params, state, true_j[starts], true_j[idx])
        loss.block_until_ready()
        times.append(time.perf_counter() - t0)
        steps_n.append(int(steps))
        if it + 1 in (200, 1000):
            y0, obs = windows(true_y, np.arange(n_windows))
            l1[it + 1] = float(
                eval_l1(params, jnp.asarray(y0, jnp.float32), jnp.asarray(obs, jnp.float32))
            )


# -- the module ----------------------------------------------------------------------------
def _runner(name, rec, t, true_y, seed, iterations):
    """The training generator of solver ``name``."""
    if name.startswith("symode"):
        dtype = np.float64 if "float64" in name else np.float32
        adjoint = "discrete" if "discrete" in name else "checkpoint"
        return run_symode(
            rec, t, true_y, seed, iterations, dtype, adjoint, "no seminorm" not in name
        )
    if name.startswith("torchdiffeq"):
        return run_torch(rec, t, true_y, seed, iterations, "adjoint" in name)
    return run_diffrax(rec, t, true_y, seed, iterations)


SOLVERS = (
    "symode float32, discrete adjoint",
    "symode float32, checkpoint adjoint",
    # Kidger, Chen & Lyons (2021): μ (252 channels here) out of backward step control
    "symode float32, checkpoint adjoint, no seminorm",
    "symode float64, discrete adjoint",
    "torchdiffeq odeint (backprop)",
    "torchdiffeq odeint_adjoint",
    "diffrax + equinox + optax (jit)",
)


def child(name, seed, iterations):
    """One solver's training in this (fresh) process: prints its record as JSON."""
    t, true_y = problem()
    rec = {"times": [], "nfe_f": [], "nfe_b": [], "l1": {}}
    try:
        for _ in _runner(name, rec, t, true_y, seed, iterations):
            pass
    except ImportError as err:
        rec = {"missing": str(err)}
    print(json.dumps(rec))


# -- memory of one neural ODE gradient as the horizon grows --------------------------------
MEM_DT = 0.01  # fixed-step RK4, as P6: 100 steps per unit of time
MEM_CONFIGS = (  # (library, mode, checkpoints)
    ("symode", "backsolve", None),
    ("symode", "checkpoint", 16),
    ("symode", "checkpoint", None),
    ("symode", "discrete", None),
    ("torchdiffeq", "odeint (backprop)", None),
    ("torchdiffeq", "odeint_adjoint", None),
)


def memory_child(lib, mode, checkpoints, t1):
    """Peak RSS (KiB) of one gradient of the spiral network over [0, t1] (observations
    every 0.25, loss Σ y), after a warm-up gradient at t1 = 0.5: prints JSON."""
    from _util import peak_rss_kib as peak  # not ru_maxrss: it starts at the parent's peak

    ts = np.linspace(0.0, t1, int(round(t1 / 0.25)) + 1)
    if lib == "symode":
        from symode.nn import MLP

        mlp = MLP((2, HIDDEN, 2), "tanh", input_map="cube")
        theta = np.concatenate([w.ravel() for w in initial_weights(0)])
        model = mlp.compile(cache_dir=bench_cache_dir())
        ck = None if checkpoints == "None" else int(checkpoints)

        def grad(times):
            cot = np.ones((times.size, 2))
            return model.vjp([2.0, 0.0], times, theta, cot, adjoint=mode, checkpoints=ck,
                             method="rk4", dt=MEM_DT).params  # fmt: skip
    else:
        import torch
        from torchdiffeq import odeint, odeint_adjoint

        W1, b1, W2, b2 = (torch.tensor(w, dtype=torch.float64) for w in initial_weights(0))
        params = [w.requires_grad_() for w in (W1, b1, W2, b2)]

        class Func(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.p = torch.nn.ParameterList(params)

            def forward(self, _t, y):
                W1, b1, W2, b2 = self.p
                return W2 @ torch.tanh(W1 @ y**3 + b1) + b2

        func = Func()
        solve = odeint_adjoint if "adjoint" in mode else odeint

        def grad(times):
            y = solve(func, torch.tensor([2.0, 0.0], dtype=torch.float64),
                      torch.tensor(times), method="rk4", options={"step_size": MEM_DT})  # fmt: skip
            y.sum().backward()
            return [p.grad for p in func.p]

    grad(np.linspace(0.0, 0.5, 3))
    pre = peak()
    grad(ts)
    print(json.dumps({"pre_kib": pre, "peak_kib": peak()}))


def run_memory(quick):
    horizons = (10, 100) if quick else (10, 100, 1000)
    rows = []
    for lib, mode, ck in MEM_CONFIGS:
        row = {"table": "memory", "solver": f"{lib} {mode}" + (f", checkpoints={ck}" if ck else "")}
        for t1 in horizons:
            if lib == "torchdiffeq" and t1 == 1000 and mode.startswith("odeint ("):
                row[f"t1 = {t1} [MiB]"] = "skipped (~10⁵ graph nodes: minutes)"
                continue
            log(f"  P4 memory: {row['solver']}, t1 = {t1}")
            try:
                out = run_child([__file__, "--memory", lib, mode, str(ck), str(t1)], timeout=1200)
            except RuntimeError as err:
                row[f"t1 = {t1} [MiB]"] = f"failed: {str(err).splitlines()[-1][:80]}"
                continue
            row[f"t1 = {t1} [MiB]"] = (out["peak_kib"] - out["pre_kib"]) / 1024
        rows.append(row)
    return rows


def run(quick: bool) -> list[dict]:
    t, true_y = problem()
    seeds = [0] if quick else [0, 1, 2]
    iterations = 210 if quick else 1000
    # each (solver, seed) in a fresh process, the solvers alternating within a seed: no
    # framework's threads (torch's and numba's OpenMP pools, XLA's) spin beside another's
    # work, and a drift in machine load is spread over all of them
    results = {name: [] for name in SOLVERS}
    missing = {}
    for s in seeds:
        for name in SOLVERS:
            if name in missing:
                continue
            log(f"  P4: {name}, seed {s}, {iterations} iterations (fresh process)")
            out = run_child([__file__, "--child", name, str(s), str(iterations)])
            if "missing" in out:
                missing[name] = out["missing"]
            else:
                results[name].append(out)
    rows, ms = [], {}
    for name, per_seed in results.items():
        if name in missing:
            rows.append({"table": "P4", "solver": name, "note": f"not installed: {missing[name]}"})
            continue
        ms[name] = statistics.median([statistics.median(r["times"][TIMED]) * 1e3 for r in per_seed])
        row = {
            "table": "P4",
            "solver": name,
            "ms/iteration (11–210)": ms[name],
            "first iteration [s]": statistics.median([r["times"][0] for r in per_seed]),
        }
        nfe_f = np.mean([np.mean(r["nfe_f"][TIMED]) for r in per_seed])
        if name.startswith("symode"):
            nfe_b = np.mean([np.mean(r["nfe_b"][TIMED]) for r in per_seed])
            row["NFE forward/backward per iteration"] = f"{nfe_f:.0f} / {nfe_b:.0f}"
        elif name.startswith("torch"):
            row["NFE per iteration (forward + backward calls)"] = f"{nfe_f:.0f}"
        else:
            row["accepted+rejected steps per iteration (all windows)"] = f"{nfe_f:.0f}"
        for k in sorted(per_seed[0]["l1"], key=int):
            row[f"all-window L1 after {k} (mean of {len(per_seed)} seeds)"] = float(
                np.mean([r["l1"][k] for r in per_seed])
            )
        rows.append(row)
    # the targets against each peer's faster variant (torchdiffeq: backprop or adjoint)
    targets = []
    sym = ms.get("symode float32, discrete adjoint")
    peers = {
        "torchdiffeq (faster of odeint, odeint_adjoint)": (
            min([ms[k] for k in ms if k.startswith("torchdiffeq")], default=None),
            TARGET_TORCH,
        ),
        "diffrax + equinox + optax (jit)": (
            ms.get("diffrax + equinox + optax (jit)"),
            TARGET_DIFFRAX,
        ),
    }
    for peer, (their, target) in peers.items():
        if sym and their:
            targets.append({
                "table": "targets",
                "what": f"P4 ms/iteration: {peer} ÷ symode float32",
                "measured": f"{their / sym:.1f} ({their:.2f} / {sym:.2f} ms)",
                "target": f"≥ {target:g}",
                "met": their / sym >= target,
            })  # fmt: skip
    if quick:
        rows.append({"table": "P4", "solver": "(quick: seed 0 only, 210 iterations)"})
    return targets + rows + run_memory(quick)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) == 6 and sys.argv[1] == "--memory":
        memory_child(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
