"""P6: memory of the P3 gradient as the horizon grows (../shared/bench/PROBLEMS.md, P6).

P3's Lotka–Volterra system, parameters and loss L = Σᵢ Σⱼ ½ (yⱼ(tᵢ) − 1)², with
observations every 0.1 on [0, t1], t1 = 10, 100, 1000 (1e3, 1e4, 1e5 steps); fixed-step
classic RK4, dt = 0.01; gradient w.r.t. (a, b, c, d, x0, y0).

Every (implementation, mode, horizon) runs in a FRESH process (``_p6_child.py``): import,
compile/load, a tiny warm-up gradient at t1 = 1 so every jitted kernel is loaded, then
``pre`` = peak RSS so far, then the one gradient, then ``peak`` = peak RSS
(VmHWM of /proc/self/status; not ru_maxrss, which Linux carries from the parent over
fork and exec). growth = peak − pre of the same process. The baseline rows are
processes that stop after the warm-up (import + compile + load).

symode's on-disk cache (``benchmarks/.cache``) is filled ONCE by a first child that
runs every mode at t1 = 1; the per-configuration children then load from it (a child
that had to compile again is flagged: that happens only if the library changed under
a running benchmark). Peers: torchdiffeq ``odeint`` (backprop through the solver) and
``odeint_adjoint``, ``method="rk4"``, ``step_size=0.01`` (torchdiffeq's "rk4" is the
3/8-rule variant: same 4 stages per step, so the same memory per step). torchdiffeq
at t1 = 1000 takes many minutes on a 2-core machine: backprop runs with a time cap and
its peak then is a lower bound (read from ``/proc/<pid>/status`` VmHWM while it runs);
odeint_adjoint at t1 = 1000 is skipped unless ``SYMODE_BENCH_P6_TORCH_FULL=1``.
Children run two at a time (memory is per process; the times are not a speed result).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import _util  # benchmarks/ is on sys.path (run.py, or running this file directly)

TITLE = "P6: memory of the Lotka–Volterra gradient vs horizon (fresh process per config)"
DESCRIPTION = (
    "P3's system and loss, observations every 0.1 on [0, t1], classic RK4 dt = 0.01 "
    "(t1 = 10, 100, 1000: 1e3, 1e4, 1e5 steps). Each configuration is a fresh process: "
    "import + compile/load + a tiny warm-up gradient, then *pre* = peak RSS, then one "
    "gradient, then *peak* = peak RSS (VmHWM); *growth* = peak − pre. Baseline = a "
    "process that only imported, compiled and warmed up. symode loads from a cache "
    "warmed once. torchdiffeq's 'rk4' is the 3/8 rule (same stages per step). A "
    "torchdiffeq run cut at its time cap reports a lower bound (≥)."
)

HORIZONS = (10, 100, 1000)
CHILD = _util.HERE / "_p6_child.py"
MIB = 1024.0  # VmHWM is in KiB
# (lib, mode, checkpoints, expectation)
CONFIGS = [
    ("symode", "backsolve", None, "flat"),
    ("symode", "checkpoint", None, "linear (the default keeps every step)"),
    ("symode", "checkpoint", 16, "O(K + steps/K), K = 16"),
    ("symode", "discrete", None, "linear"),
    ("symode", "discrete", 16, "O(K + steps/K), K = 16"),
    ("torch", "odeint", None, "linear"),
    ("torch", "odeint_adjoint", None, "flat"),
]
# "flat" allows this much growth from t1 = 10 to 1000: the 10,001 observations alone
# are 156 KiB per (T, 2) float64 array, and a gradient call holds several (t_eval, the
# solution, the cotangent and its copy, the forward outputs, ∂L/∂t_eval).
FLAT_MIB = 2.5
TORCH_CAP_S = 120.0  # torchdiffeq at t1 = 1000 (backprop): stop here, report a lower bound


def _label(lib: str, mode: str, ck) -> str:
    name = "symode" if lib == "symode" else "torchdiffeq"
    mode = {"odeint": "backprop through odeint"}.get(mode, mode)
    return f"{name} {mode}" + (f", checkpoints={ck}" if ck else "")


def _hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run_child(cfg: dict, cap_s: float | None = None, timeout: float = 900.0) -> dict:
    """One fresh process; polls its peak RSS so that a capped run still reports one."""
    cmd = [sys.executable, str(CHILD), json.dumps(cfg)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_util.child_env(),
        cwd=_util.REPO,
    )
    out: dict = {}
    reader = threading.Thread(target=lambda: out.update(io=proc.communicate()), daemon=True)
    reader.start()
    hwm = 0
    limit = min(timeout, cap_s) if cap_s else timeout
    while reader.is_alive():
        hwm = max(hwm, _hwm_kib(proc.pid) or 0)
        if time.perf_counter() - t0 > limit:
            proc.kill()  # our own child, by its handle
            reader.join()
            return {"capped_s": limit, "peak_kib": hwm, "wall_s": time.perf_counter() - t0}
        reader.join(0.2)
    stdout, stderr = out["io"]
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        return {"error": (stderr or stdout)[-1500:], "wall_s": time.perf_counter() - t0}
    res = json.loads(lines[-1])
    res["wall_s"] = time.perf_counter() - t0
    return res


def _growth_verdict(
    expect: str, g: dict[int, float], lower: dict[int, bool], every_step: dict | None = None
) -> tuple:
    """(verdict, met) from the growth in MiB at each horizon.

    flat: less than FLAT_MIB more from the shortest to the longest horizon; linear: not
    flat, and at least ×4 per 10× horizon between the two longest exactly measured
    horizons. O(K + steps/K): ``checkpoints=K`` keeps K snapshots and replays one
    segment of at most 2·steps/K steps (thinning keeps between K/2 and K) into buffers
    like those of the every-step record, so the growth may be FLAT_MIB plus 2/K of the
    same mode's every-step growth (``every_step``) at the longest horizon.
    """
    hs = sorted(g)
    if len(hs) < 2:
        return "one horizon only", None
    delta = g[hs[-1]] - g[hs[0]]
    flat = delta < FLAT_MIB
    pairs = [(a, b) for a, b in zip(hs, hs[1:]) if g[a] > 0.25]
    ratios = [g[b] / g[a] for a, b in pairs]
    ge = "≥" if lower.get(hs[-1]) else ""
    if flat:
        verdict = f"flat (+{delta:.2f} MiB from t1={hs[0]} to {hs[-1]})"
    else:
        verdict = f"grows {ge}+{delta:.1f} MiB from t1={hs[0]} to {hs[-1]}"
        if ratios:
            verdict += (
                " ("
                + ", ".join(
                    f"{ge if b == hs[-1] else ''}×{r:.1f}" for (a, b), r in zip(pairs, ratios)
                )
                + " per 10× t1)"
            )
    if expect.startswith("O(K"):
        K = int(expect.rsplit("=", 1)[1])
        allowance = FLAT_MIB + 2.0 / K * (every_step or {}).get(hs[-1], float("inf"))
        return verdict + f"; allowance {allowance:.1f} MiB", delta < allowance
    if expect.startswith(("flat", "bounded")):
        return verdict, flat
    # linear: at least ×4 per 10× horizon at the longest exactly measured horizon (the
    # shorter one may sit at the page-granularity floor); a capped lower bound beyond it
    # must not contradict growth
    exact = [h for h in hs if not lower.get(h)]
    if flat or len(exact) < 2:
        return verdict, False if flat else None
    top, prev = exact[-1], exact[-2]
    ok = g[top] - g[hs[0]] >= FLAT_MIB and g[top] >= 4.0 * g[prev]
    if lower.get(hs[-1]):
        ok = ok and g[hs[-1]] >= g[top]
    return verdict, ok


def _stale(r: dict, warm: dict) -> bool:
    return r.get("key") != warm.get("key") or (r.get("load_s") or 0) > 20


def run(quick: bool = False) -> list[dict]:
    cache = str(_util.bench_cache_dir())
    full_torch = os.environ.get("SYMODE_BENCH_P6_TORCH_FULL") == "1"

    _util.log("P6: warming symode's on-disk cache (one process, every mode at t1 = 1) ...")
    warm = run_child({"lib": "symode", "mode": "warm", "cache": cache}, timeout=1200)
    if "error" in warm:
        raise RuntimeError(f"P6 warm-up child failed:\n{warm['error']}")

    jobs = [({"lib": lib, "mode": "none", "cache": cache}, None) for lib in ("symode", "torch")]
    for lib, mode, ck, _ in CONFIGS:
        for t1 in HORIZONS:
            cap = None
            if lib == "torch" and t1 == 1000:
                if quick or (mode == "odeint_adjoint" and not full_torch):
                    continue
                cap = None if full_torch else TORCH_CAP_S
            if quick and lib == "torch" and t1 > 10:
                continue
            cfg = {"lib": lib, "mode": mode, "t1": t1, "checkpoints": ck, "cache": cache}
            jobs.append((cfg, cap))
    # longest first, two at a time
    jobs.sort(key=lambda j: -(j[0].get("t1", 0) * (50 if j[0]["lib"] == "torch" else 1)))

    def go(job):
        cfg, cap = job
        ck = cfg.get("checkpoints")
        _util.log(f"P6:   {cfg['lib']} {cfg['mode']} t1={cfg.get('t1')} checkpoints={ck}")
        return cfg, cap, run_child(cfg, cap_s=cap)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(go, jobs))
    # a child that found another cache key compiled from scratch (the library changed
    # while we ran): its baseline holds the compiler's memory. Warm the new key, redo once.
    for c, _, r in results:
        r["stale"] = c["lib"] == "symode" and _stale(r, warm)
    stale = [i for i, (_, _, r) in enumerate(results) if r["stale"]]
    if stale:
        _util.log(f"P6: {len(stale)} symode children compiled afresh: re-warming, rerunning")
        warm = run_child({"lib": "symode", "mode": "warm", "cache": cache}, timeout=1200)
        with ThreadPoolExecutor(max_workers=2) as pool:
            redo = list(pool.map(go, [results[i][:2] for i in stale]))
        for i, res in zip(stale, redo):
            res[2]["stale"] = _stale(res[2], warm)
            res[2]["older_build"] = False
            results[i] = res
        for i, (_, _, r) in enumerate(results):
            if i not in stale and not r["stale"] and r.get("key") and r["key"] != warm.get("key"):
                r["older_build"] = True  # loaded fine, from the build before the change

    base = {}
    for cfg, _, r in results:
        if cfg["mode"] == "none":
            base[cfg["lib"]] = r
    rows: list[dict] = []
    warm_note = f"cache warm-up process: {warm['wall_s']:.1f} s"
    for lib in ("symode", "torch"):
        b = base.get(lib, {})
        rows.append(
            {
                "table": "baseline (import + compile + warm-up, no gradient)",
                "impl": "symode" if lib == "symode" else "torchdiffeq",
                "peak RSS [MiB]": b.get("peak_kib", 0) / MIB if "peak_kib" in b else None,
                "import [s]": b.get("import_s"),
                "compile/load + warm-up [s]": b.get("load_s"),
                "notes": b.get("error")
                or (warm_note if lib == "symode" else "")
                + (" RECOMPILED: library changed" if b.get("stale") else ""),
            }
        )

    grads: dict = {}
    for cfg, _, r in results:
        if cfg["mode"] != "none" and "grad" in r:
            grads[(cfg["lib"], cfg["mode"], cfg["checkpoints"], cfg["t1"])] = r["grad"]

    def rel_to_discrete(cfg, g):
        ref = grads.get(("symode", "discrete", None, cfg["t1"]))
        if ref is None or g is None:
            return None
        return max(abs(x - y) for x, y in zip(g, ref)) / max(abs(y) for y in ref)

    growth: dict = {}
    for lib, mode, ck, _ in CONFIGS:
        for t1 in HORIZONS:
            hit = [
                (cfg, cap, r)
                for cfg, cap, r in results
                if cfg["lib"] == lib and cfg["mode"] == mode and cfg.get("t1") == t1
                and cfg.get("checkpoints") == ck
            ]  # fmt: skip
            if not hit:
                continue
            cfg, cap, r = hit[0]
            label = _label(lib, mode, ck)
            notes = []
            pre = r.get("pre_kib")
            peak = r.get("peak_kib")
            if "error" in r:
                notes.append("failed: " + r["error"].strip().splitlines()[-1][:200])
            if "capped_s" in r:
                notes.append(f"stopped at the {r['capped_s']:.0f} s cap: peak is a lower bound")
                pre = base.get(lib, {}).get("pre_kib")
            if r.get("stale"):
                notes.append(f"RECOMPILED in this process ({r['load_s']:.0f} s): library changed")
            if r.get("older_build"):
                notes.append("library changed during the run: measured on the previous build")
            g = None if pre is None or peak is None else (peak - pre) / MIB
            if g is not None:
                growth.setdefault(label, {})[t1] = (g, "capped_s" in r)
            rows.append(
                {
                    "table": "peak RSS per configuration",
                    "config": label,
                    "t1": t1,
                    "steps": int(round(t1 / 0.01)),
                    "peak [MiB]": None if peak is None else peak / MIB,
                    "pre [MiB]": None if pre is None else pre / MIB,
                    "growth [MiB]": g,
                    "gradient [s]": r.get("run_s"),
                    "NFE fwd/bwd": f"{r['nfe_fwd']}/{r['nfe_bwd']}" if "nfe_fwd" in r else None,
                    "rel diff vs symode discrete": rel_to_discrete(cfg, r.get("grad")),
                    "notes": "; ".join(notes),
                }
            )

    for lib, mode, ck, expect in CONFIGS:
        label = _label(lib, mode, ck)
        gmap = growth.get(label, {})
        g = {h: v[0] for h, v in gmap.items()}
        lower = {h: v[1] for h, v in gmap.items()}
        every = growth.get(_label(lib, mode, None), {}) if ck else {}
        verdict, met = _growth_verdict(expect, g, lower, {h: v[0] for h, v in every.items()})
        row = {"table": "growth [MiB] by horizon", "config": label}
        for h in HORIZONS:
            row[f"t1={h}"] = (
                None if h not in g else (f"≥{g[h]:.2f}" if lower.get(h) else round(g[h], 2))
            )
        top = max(g, default=None)
        per_step = None if top is None else g[top] * 2**20 / (top / 0.01)
        if per_step is not None:
            row["bytes/step at max t1"] = f"≥{per_step:.0f}" if lower.get(top) else round(per_step)
        row.update(expectation=expect, measured=verdict, met=met)
        rows.append(row)
        rows.append(
            {
                "table": "targets",
                "what": f"P6 {label}: memory {expect}",
                "measured": verdict,
                "target": expect,
                "met": met,
            }
        )
    targets = [r for r in rows if r["table"] == "targets"]
    return targets + [r for r in rows if r["table"] != "targets"]


def format_rows(rows: list[dict]) -> str:
    """Plain-text tables, one per ``table`` key, columns aligned."""

    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "yes" if v else "NO"
        if isinstance(v, float):
            return f"{v:.3g}" if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e5) else f"{v:.4g}"
        return str(v)

    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r.get("table", ""), []).append(r)
    out = []
    for name, grp in groups.items():
        cols = [k for k in dict.fromkeys(k for r in grp for k in r) if k != "table"]
        cells = [[fmt(r.get(c)) for c in cols] for r in grp]
        width = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        out += [f"== P6 {name}", "  ".join(c.ljust(w) for c, w in zip(cols, width))]
        out += ["  ".join(v.ljust(w) for v, w in zip(row, width)) for row in cells]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(format_rows(run(quick="--quick" in sys.argv[1:])))
