"""The fresh-process side of bench_memory.py (P6): one gradient configuration per process.

    python benchmarks/_p6_child.py '{"lib": "symode", "mode": "backsolve", "t1": 100}'

Imports the library, compiles/loads the system (symode: from the warm on-disk cache
given as ``cache``), runs one tiny warm-up gradient at t1 = 1 (so every jitted kernel
is loaded), records the peak RSS so far (``pre_kib``), then runs the configuration's
gradient once and records the peak again (``peak_kib``). ``mode`` "none" stops after
the warm-up: that is the baseline process; "warm" (symode) only fills the on-disk cache
by running every mode once at t1 = 1. Prints one JSON object on its last line.

P6: P3's Lotka–Volterra system, parameters and loss (L = Σᵢ Σⱼ ½ (yⱼ(tᵢ) − 1)²) with
observations every 0.1 on [0, t1]; fixed-step classic RK4, dt = 0.01.
"""

from __future__ import annotations

import json
import sys
import time

DT = 0.01


def peak_kib() -> int:
    """Peak resident set size of this process so far, in KiB: VmHWM, not ru_maxrss
    (which Linux carries over fork and exec: a child's starts at its parent's peak)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def t_obs(t1: float):
    import numpy as np

    return np.linspace(0.0, t1, int(round(t1 / 0.1)) + 1)


def symode_gradient(model, mode: str, t1: float, checkpoints):
    import numpy as np
    import problems

    ts = t_obs(t1)
    y0, p = problems.LV_Y0, problems.LV_PARAMS
    opts = {"method": "rk4", "dt": DT}
    sol = model.solve(y0, ts, p, **opts)
    g = model.vjp(y0, ts, p, sol.y - 1.0, adjoint=mode, checkpoints=checkpoints, **opts)
    return np.concatenate([g.params, g.y0]), g.stats


def run_symode(cfg: dict) -> dict:
    t0 = time.perf_counter()
    import problems  # imports symode and sympy

    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = problems.lotka_volterra().compile(cache_dir=cfg["cache"])
    mode = cfg["mode"]
    if mode == "warm":  # fill the on-disk cache: every mode once, tiny horizon
        for m in ("backsolve", "checkpoint", "discrete"):
            for ck in (None, 16):
                symode_gradient(model, m, 1.0, ck)
        return {"import_s": t_import, "load_s": time.perf_counter() - t0, "key": str(model.path)}
    warm = "checkpoint" if mode == "none" else mode
    symode_gradient(model, warm, 1.0, cfg.get("checkpoints"))
    t_load = time.perf_counter() - t0
    out = {"import_s": t_import, "load_s": t_load, "pre_kib": peak_kib(), "pre_rss_kib": rss_kib()}
    out["key"] = str(model.path)  # the cache directory: differs if the library changed
    if mode == "none":
        return out
    t0 = time.perf_counter()
    g, stats = symode_gradient(model, mode, cfg["t1"], cfg.get("checkpoints"))
    out["run_s"] = time.perf_counter() - t0
    out["grad"] = g.tolist()
    out["nfe_fwd"] = stats["forward"]["nfev"]
    out["nfe_bwd"] = stats["backward"]["nfev"]
    return out


def run_torch(cfg: dict) -> dict:
    t0 = time.perf_counter()
    import numpy as np
    import problems
    import torch
    from torchdiffeq import odeint, odeint_adjoint

    torch.set_num_threads(1)
    t_import = time.perf_counter() - t0

    class LV(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.tensor(problems.LV_PARAMS, dtype=torch.float64))

        def forward(self, t, z):
            a, b, c, d = self.p.unbind()
            x, y = z.unbind()
            xy = x * y
            return torch.stack((a * x - b * xy, c * xy - d * y))

    f = LV()
    mode = cfg["mode"]

    def gradient(t1: float, how: str):
        f.p.grad = None
        ts = torch.tensor(t_obs(t1), dtype=torch.float64)
        y0 = torch.tensor(problems.LV_Y0, dtype=torch.float64, requires_grad=True)
        kw = {"method": "rk4", "options": {"step_size": DT}}
        if how == "odeint_adjoint":
            ys = odeint_adjoint(f, y0, ts, adjoint_params=(f.p,), **kw)
        else:
            ys = odeint(f, y0, ts, **kw)
        loss = 0.5 * ((ys - 1.0) ** 2).sum()
        loss.backward()
        return np.concatenate([f.p.grad.numpy(), y0.grad.numpy()])

    t0 = time.perf_counter()
    gradient(1.0, "odeint" if mode == "none" else mode)
    out = {
        "import_s": t_import,
        "load_s": time.perf_counter() - t0,
        "pre_kib": peak_kib(),
        "pre_rss_kib": rss_kib(),
    }
    if mode == "none":
        return out
    t0 = time.perf_counter()
    g = gradient(cfg["t1"], mode)
    out["run_s"] = time.perf_counter() - t0
    out["grad"] = g.tolist()
    return out


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[0])
    out = run_symode(cfg) if cfg["lib"] == "symode" else run_torch(cfg)
    out["peak_kib"] = peak_kib()
    out["rss_kib"] = rss_kib()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
