"""The GPU checks in one command: the GPU tests and the GPU benchmarks, in under 8 minutes.

    python benchmarks/gpu_check.py             # on a machine with an NVIDIA GPU and CuPy
    python benchmarks/gpu_check.py --dry-run   # anywhere: imports, arguments, the plan,
                                               # the generated CUDA sources; no GPU needed

What it runs, in this order (each stage only if the time budget still has room for it;
a stage that does not fit is recorded as skipped, never silently dropped):

1. the GPU tests: ``pytest -m gpu tests/test_cuda.py`` (the device against the numba
   engine: solves, gradients, statuses, CuPy in and out, the example's GPU run);
2. P2 (../shared/bench/PROBLEMS.md): Lorenz, classic RK4, dt = 0.01, 1000 steps, final
   states, float64, ρ = linspace(0, 28, N), at N = 10⁵ and 10⁶: symode's CUDA backend
   against symode's CPU backend (numba, every core), in trajectory-steps per second;
3. adaptive Dormand–Prince 5(4) ensembles, N = 10⁵ (P1's system and tolerances, ρ as in
   P2, t ∈ [0, 10], 11 outputs): accepted trajectory-steps per second, GPU and CPU;
4. the checkpoint gradient at N = 10⁴ (P3: Lotka–Volterra, 101 observations, dopri5 at
   1e-8, L = Σ ½(y − 1)²): gradients per second, GPU and CPU, and their agreement;
5. the peers on the GPU, each in its own process, where importable: diffrax (JAX,
   ``vmap`` of ``diffeqsolve``; classic RK4 as a custom tableau, Dopri5 with a
   PIDController) and torchdiffeq (one batched ``odeint``; its "rk4" is the 3/8 rule,
   the same four evaluations per step; its batched dopri5 shares one step size across
   the batch, so it solves an easier problem than per-trajectory control).

While the tests run, the numba engine's entry points the tests' references and the CPU
baselines need (solves, the checkpoint and discrete gradients, float64) are compiled in
the background (``python -m symode warmup``), on three of the machine's cores.

Output: a summary table on stdout and a JSON file (``--out``, default
benchmarks/results/gpu_check.json) with every figure, the machine and the versions.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# P2 / P1 / P3 definitions (PROBLEMS.md)
SIGMA, BETA = 10.0, 8.0 / 3.0
P2_DT, P2_STEPS = 0.01, 1000
ADAPTIVE_T1, ADAPTIVE_TOL = 10.0, 1e-8
P3_PARAMS, P3_Y0 = (1.5, 1.0, 3.0, 1.0), (1.0, 1.0)

# (stage, estimated seconds on an H100 box, what): the budget check uses these
PLAN = [
    ("tests", 200, "pytest -m gpu tests/test_cuda.py (NVRTC and the numba references' compiles)"),
    ("p2_gpu", 30, "P2 classic RK4 on the GPU, N = 1e5 and 1e6"),
    ("p2_cpu", 40, "P2 on symode's CPU backend (numba, all cores), N = 1e5 and 1e6"),
    ("dopri5", 50, "adaptive dopri5 ensembles, N = 1e5, GPU and CPU"),
    ("gradient", 50, "P3 checkpoint gradient, N = 1e4, GPU and CPU"),
    ("peers", 100, "diffrax (vmap) and torchdiffeq (batched) on the GPU, where importable"),
]
PEERS = {"diffrax": ("jax", "diffrax"), "torchdiffeq": ("torch", "torchdiffeq")}


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def _sizes(quick: bool) -> dict:
    if quick:
        return {"p2": (10_000, 100_000), "dopri5": 10_000, "gradient": 1_000}
    return {"p2": (100_000, 1_000_000), "dopri5": 100_000, "gradient": 10_000}


# -- the problems -------------------------------------------------------------------------------
def lorenz_system():
    import sympy as sp

    import symode

    t = sp.Symbol("t")
    x, y, z = sp.symbols("x y z")
    s, r, b = sp.symbols("sigma rho beta")
    return symode.ODESystem(
        [s * (y - x), x * (r - z) - y, x * y - b * z], states=[x, y, z], params=[s, r, b], t=t
    )


def lv_system():
    import sympy as sp

    import symode

    t = sp.Symbol("t")
    x, y = sp.symbols("x y")
    a, b, c, d = sp.symbols("a b c d")
    return symode.ODESystem(
        [a * x - b * x * y, c * x * y - d * y], states=[x, y], params=[a, b, c, d], t=t
    )


def lorenz_params(n: int):
    import numpy as np

    return np.column_stack([np.full(n, SIGMA), np.linspace(0.0, 28.0, n), np.full(n, BETA)])


def _median(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


# -- stages -------------------------------------------------------------------------------------
def stage_tests(budget_s: float) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-m", "gpu", "-p", "no:cacheprovider",
           "tests/test_cuda.py"]  # fmt: skip
    t0 = time.perf_counter()
    try:
        run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=budget_s)
    except subprocess.TimeoutExpired:
        return {"ok": False, "summary": f"timed out after {budget_s:.0f} s", "seconds": budget_s}
    tail = run.stdout.strip().splitlines()[-1:] or [run.stderr[-300:]]
    return {
        "ok": run.returncode == 0,
        "summary": tail[0],
        "seconds": time.perf_counter() - t0,
        "output_tail": run.stdout[-3000:],
    }


def stage_p2(backend: str, sizes, cache_dir) -> list[dict]:
    import numpy as np

    system = lorenz_system()
    model = system.compile(backend=backend, cache_dir=cache_dir)
    opts = {"method": "rk4", "dt": P2_DT, "t_span": (0.0, P2_DT * P2_STEPS)}
    if backend == "cuda":
        opts["output"] = "numpy"
    t0 = time.perf_counter()
    model.solve([1.0, 1.0, 1.0], [P2_DT * P2_STEPS], lorenz_params(64), **opts)
    first = time.perf_counter() - t0
    rows = []
    for n in sizes:
        P = lorenz_params(n)
        holder = {}

        def call(P=P, holder=holder):
            holder["sol"] = model.solve([1.0, 1.0, 1.0], [P2_DT * P2_STEPS], P, **opts)

        sec = _median(call, 3 if n <= 100_000 else 1)
        y = holder["sol"].y[:, -1]
        rows.append({
            "problem": "P2", "backend": backend, "N": n, "seconds": sec,
            "trajectory_steps_per_s": n * P2_STEPS / sec, "first_call_s": first,
            "y_end_sample": np.asarray(y[:: max(1, n // 1000)]).tolist(),
        })  # fmt: skip
    return rows


def stage_dopri5(backend: str, n: int, cache_dir) -> dict:
    import numpy as np

    model = lorenz_system().compile(backend=backend, cache_dir=cache_dir)
    ts = np.linspace(0.0, ADAPTIVE_T1, 11)
    opts = {"method": "dopri5", "rtol": ADAPTIVE_TOL, "atol": ADAPTIVE_TOL, "throw": False}
    if backend == "cuda":
        opts["output"] = "numpy"
    t0 = time.perf_counter()
    model.solve([1.0, 1.0, 1.0], ts, lorenz_params(64), **opts)
    first = time.perf_counter() - t0
    P = lorenz_params(n)
    holder = {}

    def call():
        holder["sol"] = model.solve([1.0, 1.0, 1.0], ts, P, **opts)

    sec = _median(call, 3 if backend == "cuda" else 1)
    sol = holder["sol"]
    steps = int(np.asarray(sol.stats["naccept"]).sum())
    return {
        "problem": "dopri5 ensemble", "backend": backend, "N": n, "seconds": sec,
        "accepted_steps": steps, "trajectory_steps_per_s": steps / sec,
        "failed": len(sol.failed), "first_call_s": first,
        "y_end_sample": np.asarray(sol.y[:: max(1, n // 1000), -1]).tolist(),
    }  # fmt: skip


def stage_gradient(backend: str, n: int, cache_dir) -> dict:
    import numpy as np

    model = lv_system().compile(backend=backend, cache_dir=cache_dir)
    ts = np.linspace(0.0, 10.0, 101)
    rng = np.random.default_rng(0)
    P = np.asarray(P3_PARAMS) * rng.uniform(0.95, 1.05, (n, 4))
    Y0 = np.tile(P3_Y0, (n, 1))
    opts = {"adjoint": "checkpoint", "method": "dopri5", "rtol": 1e-8, "atol": 1e-8,
            "checkpoints": 64}  # fmt: skip
    if backend == "cuda":
        opts["output"] = "numpy"
    # L = Σ ½ (y − 1)²: the cotangent at each observation is y − 1 (one forward solve)
    ref = lv_system().compile(cache_dir=cache_dir)
    Y = ref.solve(Y0, ts, P, method="dopri5", rtol=1e-8, atol=1e-8).y
    cot = Y - 1.0
    t0 = time.perf_counter()
    model.vjp(Y0[:8], ts, P[:8], cotangent=cot[:8], **opts)
    first = time.perf_counter() - t0
    holder = {}

    def call():
        holder["g"] = model.vjp(Y0, ts, P, cotangent=cot, **opts)

    sec = _median(call, 3 if backend == "cuda" else 1)
    g = holder["g"]
    grad = np.concatenate([np.asarray(g.params), np.asarray(g.y0)], 1)
    return {
        "problem": "P3 checkpoint gradient", "backend": backend, "N": n, "seconds": sec,
        "gradients_per_s": n / sec, "first_call_s": first, "failed": len(g.failed),
        "grad_sample": grad[:: max(1, n // 100)].tolist(),
    }  # fmt: skip


# -- peers, each in its own process -------------------------------------------------------------
def peer_main(peer: str, problem: str, n: int, device: str) -> dict:
    """One peer on one problem; prints one JSON line. device "gpu" (the check) or "cpu"
    (the dry run's smoke test of this code at tiny sizes)."""
    import numpy as np

    t1 = P2_DT * P2_STEPS if problem == "p2" else ADAPTIVE_T1
    steps = P2_STEPS if device == "gpu" else 10
    if device == "cpu":
        t1 = P2_DT * steps if problem == "p2" else 0.1
    rho = np.linspace(0.0, 28.0, n)
    if peer == "diffrax":
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        import diffrax
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", True)
        if device == "gpu" and not any(d.platform == "gpu" for d in jax.devices()):
            return {"skipped": "JAX has no GPU backend here (install jax[cuda12])"}

        class ClassicRK4(diffrax.AbstractERK):
            """Classic RK4 (1/6, 1/3, 1/3, 1/6) as a diffrax tableau (P2)."""

            tableau = diffrax.ButcherTableau(
                c=np.array([0.5, 0.5, 1.0]),
                b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
                b_error=np.zeros(4),
                a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
            )
            interpolation_cls = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

            def order(self, terms):
                return 4

        def f(t, y, r):
            return jnp.stack(
                [SIGMA * (y[1] - y[0]), y[0] * (r - y[2]) - y[1], y[0] * y[1] - BETA * y[2]]
            )

        term = diffrax.ODETerm(f)
        if problem == "p2":
            solver, ctrl, dt0 = ClassicRK4(), diffrax.ConstantStepSize(), P2_DT
        else:
            solver = diffrax.Dopri5()
            ctrl = diffrax.PIDController(rtol=ADAPTIVE_TOL, atol=ADAPTIVE_TOL)
            dt0 = None

        def one(r):
            sol = diffrax.diffeqsolve(
                term, solver, 0.0, t1, dt0, jnp.ones(3), args=r, saveat=diffrax.SaveAt(t1=True),
                stepsize_controller=ctrl, max_steps=100_000,
            )  # fmt: skip
            return sol.ys[-1], sol.stats["num_accepted_steps"]

        solve = jax.jit(jax.vmap(one))
        r = jnp.asarray(rho)
        t0 = time.perf_counter()
        jax.block_until_ready(solve(r))
        first = time.perf_counter() - t0
        out = {}

        def call():
            out["y"] = jax.block_until_ready(solve(r))

        sec = _median(call, 3)
        accepted = int(np.asarray(out["y"][1]).sum())
        y_end = np.asarray(out["y"][0])
    else:
        import torch
        from torchdiffeq import odeint

        dev = torch.device("cuda" if device == "gpu" else "cpu")
        if device == "gpu" and not torch.cuda.is_available():
            return {"skipped": "torch sees no CUDA device"}
        r = torch.as_tensor(rho, dtype=torch.float64, device=dev)

        def f(t, y):
            x, yy, z = y.unbind(1)
            return torch.stack([SIGMA * (yy - x), x * (r - z) - yy, x * yy - BETA * z], 1)

        y0 = torch.ones(n, 3, dtype=torch.float64, device=dev)
        tt = torch.tensor([0.0, t1], dtype=torch.float64, device=dev)
        if problem == "p2":
            kw = {"method": "rk4", "options": {"step_size": P2_DT}}
        else:
            kw = {"method": "dopri5", "rtol": ADAPTIVE_TOL, "atol": ADAPTIVE_TOL}
        sync = torch.cuda.synchronize if device == "gpu" else (lambda: None)
        out = {}

        def call():
            with torch.no_grad():
                out["y"] = odeint(f, y0, tt, **kw)[-1]
            sync()

        t0 = time.perf_counter()
        call()
        first = time.perf_counter() - t0
        sec = _median(call, 3)
        accepted = None
        y_end = out["y"].cpu().numpy()
    work = n * steps if problem == "p2" else accepted
    return {
        "peer": peer, "problem": problem, "N": n, "seconds": sec, "first_call_s": first,
        "trajectory_steps_per_s": (work / sec) if work else None,
        "y_end_sample": y_end[:: max(1, n // 1000)].tolist(),
    }  # fmt: skip


def run_peer(peer: str, problem: str, n: int, device: str, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__)), "--peer", peer, "--problem", problem,
           "--n", str(n), "--device", device]  # fmt: skip
    try:
        run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"peer": peer, "problem": problem, "N": n, "skipped": f"timed out ({timeout:.0f} s)"}
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("{")]
    if run.returncode or not lines:
        return {"peer": peer, "problem": problem, "N": n, "error": run.stderr[-1500:]}
    return {"peer": peer, "problem": problem, "N": n, **json.loads(lines[-1])}


# -- the command --------------------------------------------------------------------------------
def environment() -> dict:
    import numpy as np

    import symode

    env = {
        "python": sys.version.split()[0], "numpy": np.__version__, "symode": symode.__version__,
        "machine": platform.machine(), "cpus": os.cpu_count(),
    }  # fmt: skip
    try:
        import cupy

        env["cupy"] = cupy.__version__
        env["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        props = cupy.cuda.runtime.getDeviceProperties(0)
        env["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    except Exception as err:  # reported, not fatal here: main() decides
        env["cupy_error"] = repr(err)
    return env


def dry_run(args) -> int:
    """Everything that needs no GPU: imports, the CUDA sources of every benchmark module
    (printed and assembled exactly as the GPU run's), the GPU test selection, the plan."""
    import numpy as np

    import symode
    from symode import cuda, cudagen

    py = sys.version.split()[0]
    print(f"dry run: symode {symode.__version__}, numpy {np.__version__}, python {py}")
    sizes = _sizes(args.quick)
    for name, system, method, entry in (
        ("P2", lorenz_system(), "rk4", "solve"),
        ("dopri5", lorenz_system(), "dopri5", "solve"),
        ("gradient checkpoint", lv_system(), "dopri5", "gradient_checkpoint"),
    ):
        src = cudagen.module_source(
            cudagen.generate_cuda_source(system), method, np.float64, (entry,)
        )
        print(f"  module {name:20s} {method:7s} {entry:20s} {len(src):7,d} characters of CUDA C")
    work = cuda.work_size(2, "dopri5", cuda.DEFAULT_CHECKPOINTS, cuda.DEFAULT_SEGMENT_STEPS)
    mib = work * 8 * sizes["gradient"] / 2**20
    n_grad = sizes["gradient"]
    print(f"  gradient workspace: {work} doubles a trajectory, {mib:.0f} MiB at N = {n_grad:,}")
    for peer, mods in PEERS.items():
        have = all(importlib.util.find_spec(m) is not None for m in mods)
        print(f"  peer {peer:12s} {'importable' if have else 'not installed: skipped'}")
    print(f"  cupy: {'importable' if importlib.util.find_spec('cupy') else 'not installed'}; "
          f"GPU here: {cuda.gpu_available()}")  # fmt: skip
    collect = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-n", "0", "-m", "gpu",
         "-p", "no:cacheprovider", "tests/test_cuda.py"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    selected = [ln for ln in collect.stdout.splitlines() if "::" in ln]
    print(f"  GPU tests selected: {len(selected)}")
    if collect.returncode not in (0, 5) or not selected:
        print(collect.stdout[-2000:], collect.stderr[-2000:])
        return 1
    total = 0
    print(f"  plan (budget {args.budget:.0f} s):")
    for stage, est, what in PLAN:
        total += est
        print(f"    {stage:9s} ~{est:4d} s  {what}")
    print(
        f"  P2 sizes {sizes['p2']}, dopri5 N = {sizes['dopri5']}, gradient N = {sizes['gradient']}"
    )
    print(f"  estimated {total} s; stages past the budget are skipped and recorded")
    if args.with_peers:
        for peer, mods in PEERS.items():
            if not all(importlib.util.find_spec(m) is not None for m in mods):
                continue
            for problem in ("p2", "dopri5"):
                r = run_peer(peer, problem, 8, "cpu", 300)
                ok = "error" not in r and "skipped" not in r
                print(f"  peer smoke test {peer} {problem}: {'ok' if ok else r}")
                if not ok:
                    return 1
    print("dry run: ok")
    return 0


def table(results: dict) -> str:
    lines = ["| stage | backend | N | seconds | throughput | vs CPU |", "|---|---|---|---|---|---|"]
    cpu = {(r["problem"], r["N"]): r for r in results["rows"] if r.get("backend") == "numba"}
    for r in results["rows"]:
        if "skipped" in r or "error" in r:
            what = r.get("skipped") or "error (see JSON)"
            name, who = r.get("problem", r.get("stage")), r.get("peer", r.get("backend", ""))
            lines.append(f"| {name} | {who} | {r.get('N', '')} | | {what} | |")
            continue
        thr = r.get("trajectory_steps_per_s") or r.get("gradients_per_s")
        unit = "gradients/s" if "gradients_per_s" in r else "traj-steps/s"
        shown = f"{thr:.3g} {unit}" if thr else "(no per-trajectory step count)"
        base = cpu.get((r["problem"], r["N"]))
        base_thr = base and (base.get("trajectory_steps_per_s") or base.get("gradients_per_s"))
        ratio = f"{thr / base_thr:.1f}x" if base_thr and thr and r.get("backend") != "numba" else ""
        who = r.get("peer") or r.get("backend")
        lines.append(
            f"| {r['problem']} | {who} | {r['N']:,} | {r['seconds']:.3f} | {shown} | {ratio} |"
        )
    return "\n".join(lines)


def agreement(rows) -> dict:
    """Max relative difference between the GPU's and the CPU backend's sampled results
    of each problem and size (final states, gradients). The same engine, differing in
    rounding (FMA, CUDA's libm): Lorenz grows a difference by up to e^{0.9·10} ≈ 10⁴ by
    t = 10, so ~1e-12 is expected for P2 and the dopri5 ensembles (more where a step is
    accepted on one and rejected on the other), ~1e-12 for the gradients."""
    import numpy as np

    out = {}
    by = {(r.get("problem"), r.get("N"), r.get("backend")): r for r in rows if "backend" in r}
    for (problem, n, backend), r in by.items():
        other = by.get((problem, n, "numba"))
        if backend != "cuda" or other is None:
            continue
        key = "grad_sample" if "grad_sample" in r else "y_end_sample"
        a, b = np.asarray(r.get(key, []), float), np.asarray(other.get(key, []), float)
        if a.shape == b.shape and a.size:
            out[f"{problem} N={n}"] = float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dry-run", action="store_true", help="check everything a GPU is not needed for"
    )
    parser.add_argument(
        "--with-peers", action="store_true", help="(dry run) smoke-test the peers on the CPU"
    )
    parser.add_argument("--quick", action="store_true", help="10x smaller sizes")
    parser.add_argument(
        "--budget", type=float, default=460.0, help="seconds for all stages (default 460)"
    )
    parser.add_argument("--out", default=str(HERE / "results" / "gpu_check.json"))
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--cache-dir", default=None, help="symode's cache (default: its own)")
    parser.add_argument("--peer", choices=sorted(PEERS), help=argparse.SUPPRESS)
    parser.add_argument("--problem", choices=("p2", "dopri5"), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.budget <= 0:
        parser.error(f"--budget must be positive, got {args.budget}")
    if args.peer:
        print(json.dumps(peer_main(args.peer, args.problem, args.n, args.device)))
        return 0
    if args.dry_run:
        return dry_run(args)

    start = time.perf_counter()
    left = lambda: args.budget - (time.perf_counter() - start)  # noqa: E731
    env = environment()
    if "gpu" not in env:
        print(f"no GPU through CuPy: {env.get('cupy_error')}; nothing to check (try --dry-run)")
        return 2
    sizes = _sizes(args.quick)
    results = {"environment": env, "rows": [], "tests": None, "skipped": []}
    est = dict((s, e) for s, e, _ in PLAN)
    warm = subprocess.Popen(
        [sys.executable, "-m", "symode", "warmup", "--dtypes", "float64", "--modes",
         "checkpoint,discrete", "--jobs", "3"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        if not args.skip_tests:
            log("gpu_check: the GPU tests")
            results["tests"] = stage_tests(min(est["tests"] * 1.5, max(left() - 200, 60)))
            log(f"  {results['tests']['summary']}")
        stages = [
            ("p2_gpu", lambda: stage_p2("cuda", sizes["p2"], args.cache_dir)),
            ("dopri5", lambda: [stage_dopri5("cuda", sizes["dopri5"], args.cache_dir)]),
            ("gradient", lambda: [stage_gradient("cuda", sizes["gradient"], args.cache_dir)]),
        ]
        for name, fn in stages:
            if left() < est[name]:
                results["skipped"].append(f"{name}: over budget")
                continue
            log(f"gpu_check: {name}")
            try:
                results["rows"] += fn()
            except Exception as err:
                results["rows"].append({"stage": name, "error": repr(err)})
        warm.wait(timeout=max(left() - 150, 1))
        cpu = [
            ("p2_cpu", lambda: stage_p2("numba", sizes["p2"], args.cache_dir)),
            ("dopri5", lambda: [stage_dopri5("numba", sizes["dopri5"], args.cache_dir)]),
            ("gradient", lambda: [stage_gradient("numba", sizes["gradient"], args.cache_dir)]),
        ]
        for name, fn in cpu:
            if left() < est[name] / 2:
                results["skipped"].append(f"{name} (CPU): over budget")
                continue
            log(f"gpu_check: {name} on the CPU")
            try:
                results["rows"] += fn()
            except Exception as err:
                results["rows"].append({"stage": name + " cpu", "error": repr(err)})
        if not args.skip_peers:
            try:
                import cupy

                cupy.get_default_memory_pool().free_all_blocks()
            except Exception:
                pass
            for peer, mods in PEERS.items():
                if not all(importlib.util.find_spec(m) is not None for m in mods):
                    results["skipped"].append(f"{peer}: not installed")
                    continue
                for problem, n in (
                    ("p2", sizes["p2"][0]),
                    ("p2", sizes["p2"][1]),
                    ("dopri5", sizes["dopri5"]),
                ):
                    if left() < 30:
                        results["skipped"].append(f"{peer} {problem} N={n}: over budget")
                        continue
                    log(f"gpu_check: {peer} {problem} N={n}")
                    row = run_peer(peer, problem, n, "gpu", min(120, left() - 10))
                    row["problem"] = "P2" if problem == "p2" else "dopri5 ensemble"
                    results["rows"].append(row)
    finally:
        if warm.poll() is None:
            warm.kill()
    results["agreement"] = agreement(results["rows"])
    results["seconds"] = time.perf_counter() - start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"GPU: {env.get('gpu')}, CuPy {env.get('cupy')}; {results['seconds']:.0f} s")
    if results["tests"]:
        print(f"GPU tests: {results['tests']['summary']}")
    print(table(results))
    for what, diff in results["agreement"].items():
        print(f"GPU vs CPU, {what}: max relative difference {diff:.1e}")
    for s in results["skipped"]:
        print(f"skipped: {s}")
    print(f"results: {out}")
    ok = (results["tests"] is None or results["tests"]["ok"]) and not any(
        "error" in r for r in results["rows"] if "peer" not in r
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
