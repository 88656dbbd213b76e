"""P3: the Lotka–Volterra gradient (../shared/bench/PROBLEMS.md, P3).

x' = a x − b x y, y' = c x y − d y; (a, b, c, d) = (1.5, 1, 3, 1), y0 = (1, 1);
observations at 0, 0.1, …, 10; L = Σᵢ Σⱼ ½ (yⱼ(tᵢ) − 1)²; gradient w.r.t.
(a, b, c, d, x0, y0); dopri5, rtol = atol = 1e-8, float64.

What is timed (median of repeated calls after a warm-up; first-call time reported
separately as ``compile_s``):

- symode, every adjoint mode (and ``seminorm=False`` for the continuous ones), three
  ways: ``vjp`` alone given the cotangent y(tᵢ) − 1; ``solve + vjp`` (the cotangent
  from a forward solve, then the gradient: what a user with raw cotangents pays); and
  ``value_and_grad`` of the same loss compiled symbolically (``symode.Loss``), one
  call that does the forward and backward passes, the like-for-like figure against
  the peers, which also compute loss and gradient in one call;
- symode's forward solve alone (the "gradient ≤ 3× forward solve" target);
- torchdiffeq: ``odeint_adjoint`` (default norm and ``norm="seminorm"``) and backprop
  through ``odeint``; diffrax (jit): RecursiveCheckpointAdjoint and BacksolveAdjoint;
  scipy: central finite differences, 12 solves of RK45 / DOP853 at 1e-8.

Error: ``rel_err = max_k |g_k − g_ref,k| / max_k |g_ref,k|`` (the ∞-norm of the error
over the ∞-norm of the reference, over the 6 components). The reference is a
Richardson-extrapolated central difference of scipy DOP853 solves at rtol = atol =
1e-13 (steps h, h/2, h/4 with h = 2e-3·max(1, |θ_k|); the two extrapolants agree to
``ref_spread``), cross-checked against symode's forward sensitivities at 1e-12.

``run(quick)`` returns one dict per measurement (``kind`` "timing", "reference" or
"ratio"); ``python benchmarks/bench_gradients.py [--quick]`` prints the tables.
"""

from __future__ import annotations

import sys
import time

import _util  # benchmarks/ is on sys.path (run.py, or running this file directly)
import numpy as np
import problems

TITLE = (
    "P3: Lotka–Volterra gradient, symode specialized tier "
    "(adjoint modes vs torchdiffeq, diffrax, scipy FD)"
)
DESCRIPTION = (
    "dopri5, rtol = atol = 1e-8, float64, 101 observations on [0, 10], L = Σ ½ (y − 1)², "
    "gradient w.r.t. (a, b, c, d, x0, y0). Times: median of repeated calls after a "
    "warm-up (first call separately). rel err = ‖g − g_ref‖∞ / ‖g_ref‖∞ against "
    "Richardson-extrapolated central differences of scipy DOP853 at 1e-13. symode "
    "*vjp* is given the cotangent y(tᵢ) − 1; *solve+vjp* computes it first; "
    "*value_and_grad* compiles the same loss symbolically (one call, like the peers)."
)

PROBLEM = "P3"
T_OBS = np.linspace(0.0, 10.0, 101)
SPARSE_OBS = (2, 11)  # the P3 gradient with fewer observations, for the cost structure
T1 = 10.0
THETA = np.concatenate([problems.LV_PARAMS, problems.LV_Y0])  # (a, b, c, d, x0, y0)
NAMES = ("a", "b", "c", "d", "x0", "y0")
RTOL = ATOL = 1e-8
REF_TOL = 1e-13
TARGETS = {
    "vs_diffrax": 5.0,  # symode gradient >= 5x faster than diffrax's fastest adjoint
    "vs_torch_adjoint": 100.0,  # >= 100x faster than torchdiffeq's odeint_adjoint
    "vs_forward": 3.0,  # gradient cost <= 3x the forward solve
    "rel_err": 1e-6,
}


def rel_err(g, ref) -> float:
    """‖g − ref‖∞ / ‖ref‖∞ over the 6 gradient components."""
    g = np.asarray(g, np.float64)
    return float(np.max(np.abs(g - ref)) / np.max(np.abs(ref)))


def _row(impl, variant, timing=None, **extra) -> dict:
    row = {"problem": PROBLEM, "kind": "timing", "impl": impl, "variant": variant}
    if timing is not None:
        row.update(ms=1e3 * timing["median"], ms_min=1e3 * timing["min"], reps=timing["reps"])
    row.update(extra)
    return row


# -- reference ------------------------------------------------------------------------
def scipy_loss(theta, method: str, tol: float):
    """L(θ) from one scipy ``solve_ivp`` with outputs at T_OBS; returns (L, nfev)."""
    from scipy.integrate import solve_ivp

    a, b, c, d, x0, y0 = (float(v) for v in theta)

    def f(t, z):
        x, y = z
        return np.array([a * x - b * x * y, c * x * y - d * y])

    sol = solve_ivp(f, (0.0, T1), [x0, y0], method=method, t_eval=T_OBS, rtol=tol, atol=tol)
    if not sol.success:
        raise RuntimeError(f"scipy {method} failed: {sol.message}")
    return 0.5 * float(np.sum((sol.y - 1.0) ** 2)), sol.nfev


def central_difference(theta, h, method: str, tol: float) -> np.ndarray:
    """Central differences with steps h (one per component): 2·6 = 12 solves."""
    g = np.empty(theta.size)
    for k in range(theta.size):
        e = np.zeros(theta.size)
        e[k] = h[k]
        lp, _ = scipy_loss(theta + e, method, tol)
        lm, _ = scipy_loss(theta - e, method, tol)
        g[k] = (lp - lm) / (2.0 * h[k])
    return g


def reference_gradient():
    """Richardson extrapolation of central differences of DOP853 at 1e-13.

    Returns (g_ref, spread) where spread = ‖R(h) − R(h/2)‖∞ / ‖R(h/2)‖∞ of the two
    extrapolants R(h) = (4 D(h/2) − D(h)) / 3.
    """
    h = 2e-3 * np.maximum(1.0, np.abs(THETA))
    d1, d2, d4 = (central_difference(THETA, h / q, "DOP853", REF_TOL) for q in (1, 2, 4))
    r1 = (4.0 * d2 - d1) / 3.0
    r2 = (4.0 * d4 - d2) / 3.0
    return r2, rel_err(r1, r2)


# -- symode ---------------------------------------------------------------------------
def _entry(impl, variant, fn, **extra) -> dict:
    """A callable to time round-robin with the others, and its row's other fields."""
    return {"impl": impl, "variant": variant, "fn": fn, **extra}


def round_robin(entries: list[dict], budget_s: float, block: int = 5, max_reps: int = 300):
    """Time every entry's ``fn`` in interleaved rounds, so that a change in machine load
    hits all of them alike; adds ``timing`` to each entry. Each round calls each entry
    ``block`` times in a row (every call timed): calling a different library in between
    every call would charge each sub-millisecond call for the caches the previous one
    evicted (measured: a 0.15 ms symode solve reads 0.2–0.46 ms interleaved one by one
    with jitted diffrax calls). Each entry was called once (its first call) before."""
    times: list[list[float]] = [[] for _ in entries]
    start = time.perf_counter()
    while len(times[0]) < max_reps and (
        len(times[0]) < 5 * block or time.perf_counter() - start < budget_s
    ):
        for e, ts in zip(entries, times):
            for _ in range(block):
                t0 = time.perf_counter()
                e["fn"]()
                ts.append(time.perf_counter() - t0)
    for e, ts in zip(entries, times):
        e["timing"] = {"median": float(np.median(ts)), "min": min(ts), "reps": len(ts)}


def _symode(ref) -> tuple[list[dict], dict]:
    """symode's callables (each called once: its first-call time) and the 1e-12 check."""
    import symode

    entries: list[dict] = []
    info: dict = {}
    cache = _util.bench_cache_dir()
    system = problems.lotka_volterra()
    y0, p = problems.LV_Y0, problems.LV_PARAMS
    opts = {"method": "dopri5", "rtol": RTOL, "atol": ATOL}

    t0 = time.perf_counter()
    model = system.compile(cache_dir=cache, specialize=True)
    t_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    sol = model.solve(y0, T_OBS, p, **opts)
    t_first = time.perf_counter() - t0
    entries.append(
        _entry(
            "symode",
            "forward solve",
            lambda: model.solve(y0, T_OBS, p, **opts),
            compile_s=t_compile + t_first,
            nfe_fwd=sol.stats["nfev"],
            note=f"compile() {t_compile:.2f}s + first solve {t_first:.2f}s "
            f"(cache {cache}); {sol.stats['naccept']} steps, {sol.stats['nreject']} rejected",
        )
    )
    cot = sol.y - 1.0

    def grad_of(g):
        return np.concatenate([g.params, g.y0])

    variants = [
        ("checkpoint", True),
        ("checkpoint", False),
        ("backsolve", True),
        ("backsolve", False),
        ("discrete", True),
        ("forward", True),
    ]
    for mode, semi in variants:
        label = mode + ("" if semi or mode in ("discrete", "forward") else ", seminorm=False")
        kw = dict(opts, adjoint=mode, seminorm=semi)
        t0 = time.perf_counter()
        g = model.vjp(y0, T_OBS, p, cot, **kw)
        t_first = time.perf_counter() - t0

        def full(kw=kw):
            s = model.solve(y0, T_OBS, p, **opts)
            return model.vjp(y0, T_OBS, p, s.y - 1.0, **kw)

        common = {
            "rel_err": rel_err(grad_of(g), ref),
            "nfe_fwd": g.stats["forward"]["nfev"],
            "nfe_bwd": g.stats["backward"]["nfev"],
            "steps_bwd": g.stats["backward"]["naccept"],
            "rejects_bwd": g.stats["backward"]["nreject"],
        }
        vjp = lambda kw=kw: model.vjp(y0, T_OBS, p, cot, **kw)  # noqa: E731
        entries.append(_entry("symode", f"vjp {label}", vjp, compile_s=t_first, **common))
        entries.append(_entry("symode", f"solve+vjp {label}", full, **common))

    # the same loss compiled symbolically: one value_and_grad call per gradient
    xs, ys = system.states
    loss = symode.Loss(observation=((xs - 1) ** 2 + (ys - 1) ** 2) / 2)
    t0 = time.perf_counter()
    lmodel = system.compile(loss=loss, cache_dir=cache, specialize=True)
    t_lc = time.perf_counter() - t0
    wrt = ("params", "y0")
    first = True
    sp_val = float(0.5 * np.sum(cot**2))
    for mode in ("checkpoint", "backsolve", "discrete", "forward"):
        kw = dict(opts, adjoint=mode, wrt=wrt)
        t0 = time.perf_counter()
        val, g = lmodel.value_and_grad(y0, T_OBS, p, **kw)
        t_first = time.perf_counter() - t0 + (t_lc if first else 0.0)
        first = False
        entries.append(
            _entry(
                "symode",
                f"value_and_grad {mode}",
                lambda kw=kw: lmodel.value_and_grad(y0, T_OBS, p, **kw),
                compile_s=t_first,
                rel_err=rel_err(g, ref),
                note=f"L={val:.10g} (from solve: {sp_val:.10g})",
            )
        )

    # the same gradient with fewer observations (a loss on a coarser t_eval): how much of
    # the continuous modes' cost is the backward sweep's stop at every observation
    for nobs in SPARSE_OBS:
        ts_k = np.linspace(0.0, T1, nobs)
        sol_k = model.solve(y0, ts_k, p, **opts)
        entries.append(
            _entry(
                "symode",
                f"{nobs} observations: forward solve",
                lambda ts_k=ts_k: model.solve(y0, ts_k, p, **opts),
                nfe_fwd=sol_k.stats["nfev"],
            )
        )
        for mode in ("checkpoint", "backsolve", "discrete"):
            kw = dict(opts, adjoint=mode, wrt=wrt)
            g_k = lmodel.vjp(y0, ts_k, p, sol_k.y - 1.0, **dict(opts, adjoint=mode))
            entries.append(
                _entry(
                    "symode",
                    f"{nobs} observations: value_and_grad {mode}",
                    lambda kw=kw, ts_k=ts_k: lmodel.value_and_grad(y0, ts_k, p, **kw),
                    nfe_fwd=g_k.stats["forward"]["nfev"],
                    nfe_bwd=g_k.stats["backward"]["nfev"],
                    steps_bwd=g_k.stats["backward"]["naccept"],
                    rejects_bwd=g_k.stats["backward"]["nreject"],
                )
            )

    # cross-check of the reference: forward sensitivities at 1e-12
    tight = {"method": "dopri5", "rtol": 1e-12, "atol": 1e-12}
    s12 = model.solve(y0, T_OBS, p, **tight)
    g12 = model.vjp(y0, T_OBS, p, s12.y - 1.0, adjoint="forward", **tight)
    info["fs12"] = grad_of(g12)
    return entries, info


# -- torchdiffeq ----------------------------------------------------------------------
def _torch(quick: bool, ref, budget: float) -> list[dict]:
    try:
        import torch
        from torchdiffeq import odeint, odeint_adjoint
    except ImportError as err:
        return [_row("torchdiffeq", "-", note=f"not installed: {err}")]
    torch.set_num_threads(1)

    class LV(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.tensor(problems.LV_PARAMS, dtype=torch.float64))
            self.nfe = 0

        def forward(self, t, z):
            self.nfe += 1
            a, b, c, d = self.p.unbind()
            x, y = z.unbind()
            xy = x * y
            return torch.stack((a * x - b * xy, c * xy - d * y))

    f = LV()
    ts = torch.tensor(T_OBS, dtype=torch.float64)
    nfe: dict = {}

    def grad(adjoint: bool, seminorm: bool = False):
        f.p.grad = None
        f.nfe = 0
        y0 = torch.tensor(problems.LV_Y0, dtype=torch.float64, requires_grad=True)
        kw = {"rtol": RTOL, "atol": ATOL, "method": "dopri5"}
        if adjoint:
            extra = {"adjoint_options": {"norm": "seminorm"}} if seminorm else {}
            ys = odeint_adjoint(f, y0, ts, adjoint_params=(f.p,), **kw, **extra)
        else:
            ys = odeint(f, y0, ts, **kw)
        nf = f.nfe
        loss = 0.5 * ((ys - 1.0) ** 2).sum()
        loss.backward()
        nfe["fwd"], nfe["bwd"] = nf, f.nfe - nf
        return np.concatenate([f.p.grad.numpy(), y0.grad.numpy()])

    rows = []
    y0n = torch.tensor(problems.LV_Y0, dtype=torch.float64)

    def fwd():
        with torch.no_grad():
            return odeint(f, y0n, ts, rtol=RTOL, atol=ATOL, method="dopri5")

    f.nfe = 0
    fwd()
    nf = f.nfe
    rows.append(
        _row(
            "torchdiffeq",
            "forward solve (no_grad)",
            _util.time_calls(fwd, min_reps=1 if quick else 5, budget_s=budget),
            nfe_fwd=nf,
        )
    )
    variants = [
        ("odeint_adjoint", True, False),
        ("odeint_adjoint norm=seminorm", True, True),
        ("backprop through odeint", False, False),
    ]
    for label, adjoint, semi in variants[:1] if quick else variants:
        t0 = time.perf_counter()
        g = grad(adjoint, semi)
        t_first = time.perf_counter() - t0
        counts = dict(nfe)
        tm = _util.time_calls(
            lambda a=adjoint, s=semi: grad(a, s), min_reps=1 if quick else 3, budget_s=budget
        )
        rows.append(
            _row(
                "torchdiffeq",
                label,
                tm,
                compile_s=t_first,
                rel_err=rel_err(g, ref),
                nfe_fwd=counts["fwd"],
                nfe_bwd=counts["bwd"] if adjoint else None,
                note=None if adjoint else "backward through autograd (no rhs calls)",
            )
        )
    return rows


# -- diffrax --------------------------------------------------------------------------
def _diffrax(ref) -> tuple[list[dict], list[dict]]:
    """diffrax's jitted callables (each called once: its compile time); failure rows."""
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
        import diffrax
        import jax.numpy as jnp
    except ImportError as err:
        return [], [_row("diffrax", "-", note=f"not installed: {err}")]

    def vf(t, z, args):
        a, b, c, d = args
        x, y = z[0], z[1]
        return jnp.stack([a * x - b * x * y, c * x * y - d * y])

    term = diffrax.ODETerm(vf)
    ts = jnp.asarray(T_OBS)

    def solve(theta, adjoint):
        return diffrax.diffeqsolve(
            term,
            diffrax.Dopri5(),
            t0=0.0,
            t1=T1,
            dt0=None,
            y0=theta[4:],
            args=theta[:4],
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL),
            adjoint=adjoint,
        )

    def loss(theta, adjoint):
        return 0.5 * jnp.sum((solve(theta, adjoint).ys - 1.0) ** 2)

    theta = jnp.asarray(THETA)
    entries, rows = [], []
    fwd = jax.jit(lambda th: solve(th, diffrax.RecursiveCheckpointAdjoint()))
    t0 = time.perf_counter()
    sol = jax.block_until_ready(fwd(theta))
    t_first = time.perf_counter() - t0
    st = {k: int(v) for k, v in sol.stats.items() if k.startswith("num_")}
    entries.append(
        _entry(
            "diffrax",
            "forward solve (jit)",
            lambda: jax.block_until_ready(fwd(theta)),
            compile_s=t_first,
            note=f"{st.get('num_accepted_steps')} steps, {st.get('num_rejected_steps')} rejected",
        )
    )
    for name in ("RecursiveCheckpointAdjoint", "BacksolveAdjoint"):
        adj = getattr(diffrax, name)()
        gfn = jax.jit(jax.grad(lambda th, adj=adj: loss(th, adj)))
        t0 = time.perf_counter()
        try:
            g = np.asarray(jax.block_until_ready(gfn(theta)))
        except Exception as err:  # report the peer's failure, keep the run going
            rows.append(_row("diffrax", name, note=f"failed: {type(err).__name__}: {err}"[:300]))
            continue
        t_first = time.perf_counter() - t0
        fn = lambda gfn=gfn: jax.block_until_ready(gfn(theta))  # noqa: E731
        entries.append(_entry("diffrax", name, fn, compile_s=t_first, rel_err=rel_err(g, ref)))
    return entries, rows


# -- scipy ----------------------------------------------------------------------------
def _scipy(quick: bool, ref, budget: float) -> list[dict]:
    rows = []
    h = (1e-8) ** (1.0 / 3.0) * np.maximum(1.0, np.abs(THETA))
    for method in ("RK45", "DOP853"):
        _, nfev = scipy_loss(THETA, method, RTOL)
        tf = _util.time_calls(lambda m=method: scipy_loss(THETA, m, RTOL), budget_s=budget)
        rows.append(_row("scipy", f"forward solve {method}", tf, nfe_fwd=nfev))
        g = central_difference(THETA, h, method, RTOL)
        tm = _util.time_calls(
            lambda m=method: central_difference(THETA, h, m, RTOL), min_reps=3, budget_s=budget
        )
        rows.append(
            _row(
                "scipy",
                f"central FD {method} (12 solves)",
                tm,
                rel_err=rel_err(g, ref),
                note=f"h = 1e-8^(1/3)·max(1,|θ|) = {h[0]:.2g}·max(1,|θ|)",
            )
        )
    return rows


# -- ratios and targets ---------------------------------------------------------------
def _ratio(what, value, target, better, notes="", table="ratios") -> dict:
    met = None if value is None else bool(value >= target if better == ">=" else value <= target)
    return {
        "table": table,
        "what": what,
        "measured": value,
        "target": f"{better} {target:g}",
        "met": met,
        "notes": notes,
    }


def _min_ratio(num: dict, den: dict) -> str:
    """The same ratio from the fastest calls: on a busy machine the median of a call
    longer than a scheduler slice is inflated by preemption, the minimum much less."""
    return f"from minima {num['ms_min'] / den['ms_min']:.3g}"


def _ratios(rows: list[dict]) -> list[dict]:
    by = {(r["impl"], r["variant"]): r for r in rows if r.get("ms") is not None}
    out = []
    fwd = by.get(("symode", "forward solve"))
    diffrax_best = min(
        (r for (impl, _), r in by.items() if impl == "diffrax" and "Adjoint" in r["variant"]),
        key=lambda r: r["ms"],
        default=None,
    )
    torch_adj = by.get(("torchdiffeq", "odeint_adjoint"))
    for mode in ("checkpoint", "backsolve", "discrete", "forward"):
        for how in ("value_and_grad", "solve+vjp", "vjp"):
            r = by.get(("symode", f"{how} {mode}"))
            if r is None:
                continue
            tag = f"{how} {mode}"
            if fwd is not None:
                note = f"{r['ms']:.3f} ms / {fwd['ms']:.3f} ms; " + _min_ratio(r, fwd)
                out.append(
                    _ratio(
                        f"{tag}: gradient / forward solve",
                        r["ms"] / fwd["ms"],
                        TARGETS["vs_forward"],
                        "<=",
                        note,
                    )
                )
            if how == "vjp":
                continue
            if diffrax_best is not None:
                note = (
                    f"{diffrax_best['variant']}: {diffrax_best['ms']:.3f} ms / {r['ms']:.3f} ms; "
                    + _min_ratio(diffrax_best, r)
                )
                out.append(
                    _ratio(
                        f"{tag}: diffrax fastest adjoint / symode",
                        diffrax_best["ms"] / r["ms"],
                        TARGETS["vs_diffrax"],
                        ">=",
                        note,
                    )
                )
            if torch_adj is not None:
                note = f"{torch_adj['ms']:.1f} ms / {r['ms']:.3f} ms; " + _min_ratio(torch_adj, r)
                out.append(
                    _ratio(
                        f"{tag}: torchdiffeq odeint_adjoint / symode",
                        torch_adj["ms"] / r["ms"],
                        TARGETS["vs_torch_adjoint"],
                        ">=",
                        note,
                    )
                )
    for r in rows:
        if (
            r["impl"] == "symode"
            and r.get("rel_err") is not None
            and "solve+vjp" not in r["variant"]
        ):
            out.append(
                _ratio(f"{r['variant']}: rel. error", r["rel_err"], TARGETS["rel_err"], "<=")
            )
    for mode in ("checkpoint", "backsolve"):
        a = by.get(("symode", f"vjp {mode}"))
        b = by.get(("symode", f"vjp {mode}, seminorm=False"))
        if a and b and b.get("nfe_bwd"):
            note = f"backward NFE {a['nfe_bwd']} vs {b['nfe_bwd']} without (issue expects ~40%)"
            out.append(
                _ratio(
                    f"vjp {mode}: backward NFE saved by the seminorm",
                    1.0 - a["nfe_bwd"] / b["nfe_bwd"],
                    0.40,
                    ">=",
                    note,
                )
            )
    for nobs in SPARSE_OBS:
        fk = by.get(("symode", f"{nobs} observations: forward solve"))
        for mode in ("checkpoint", "backsolve", "discrete"):
            r = by.get(("symode", f"{nobs} observations: value_and_grad {mode}"))
            if fk is None or r is None:
                continue
            row = _ratio(
                f"{nobs} observations, value_and_grad {mode}: gradient / forward solve",
                r["ms"] / fk["ms"],
                TARGETS["vs_forward"],
                "<=",
                f"P3 with {nobs} observations, for the cost structure (the target is for "
                f"101); backward NFE {r.get('nfe_bwd')}; " + _min_ratio(r, fk),
            )
            row["met"] = None
            out.append(row)
    ta = by.get(("torchdiffeq", "odeint_adjoint"))
    tb = by.get(("torchdiffeq", "odeint_adjoint norm=seminorm"))
    if ta and tb and ta.get("nfe_bwd"):
        row = _ratio(
            "torchdiffeq odeint_adjoint: backward NFE saved by the seminorm",
            1.0 - tb["nfe_bwd"] / ta["nfe_bwd"],
            0.40,
            ">=",
            f"peer, for comparison: {tb['nfe_bwd']} vs {ta['nfe_bwd']} without",
        )
        row["met"] = None
        out.append(row)
    return out


def _targets(rows: list[dict]) -> list[dict]:
    """The headline rows for run.py's summary: the default mode and the fastest one."""
    by = {(r["impl"], r["variant"]): r for r in rows if r.get("ms") is not None}
    fwd = by.get(("symode", "forward solve"))
    vg = {k[1]: r for k, r in by.items() if k[0] == "symode" and k[1].startswith("value_and_grad")}
    if not vg or fwd is None:
        return []
    best = min(vg.values(), key=lambda r: r["ms"])
    picks = [vg.get("value_and_grad checkpoint", best)]
    if best is not picks[0]:
        picks.append(best)
    diffrax_best = min(
        (r for (impl, _), r in by.items() if impl == "diffrax" and "Adjoint" in r["variant"]),
        key=lambda r: r["ms"],
        default=None,
    )
    torch_adj = by.get(("torchdiffeq", "odeint_adjoint"))
    out = []
    for r in picks:
        tag = f"P3 {r['variant']} ({r['ms']:.3f} ms)"
        out.append(
            _ratio(
                f"{tag}: gradient / forward solve ({fwd['ms']:.3f} ms)",
                r["ms"] / fwd["ms"],
                TARGETS["vs_forward"],
                "<=",
                _min_ratio(r, fwd),
                table="targets",
            )
        )
        if diffrax_best is not None:
            out.append(
                _ratio(
                    f"{tag}: diffrax {diffrax_best['variant']} "
                    f"({diffrax_best['ms']:.3f} ms) / symode",
                    diffrax_best["ms"] / r["ms"],
                    TARGETS["vs_diffrax"],
                    ">=",
                    _min_ratio(diffrax_best, r),
                    table="targets",
                )
            )
        if torch_adj is not None:
            out.append(
                _ratio(
                    f"{tag}: torchdiffeq odeint_adjoint ({torch_adj['ms']:.1f} ms) / symode",
                    torch_adj["ms"] / r["ms"],
                    TARGETS["vs_torch_adjoint"],
                    ">=",
                    _min_ratio(torch_adj, r),
                    table="targets",
                )
            )
    errs = [r["rel_err"] for r in rows if r["impl"] == "symode" and r.get("rel_err") is not None]
    if errs:
        out.append(
            _ratio(
                "P3 symode rel. error, worst mode",
                max(errs),
                TARGETS["rel_err"],
                "<=",
                table="targets",
            )
        )
    for mode in ("checkpoint", "backsolve"):
        a = by.get(("symode", f"vjp {mode}"))
        b = by.get(("symode", f"vjp {mode}, seminorm=False"))
        if a and b and b.get("nfe_bwd"):
            out.append(
                _ratio(
                    f"P3 {mode}: backward NFE saved by the seminorm "
                    f"({a['nfe_bwd']} vs {b['nfe_bwd']})",
                    1.0 - a["nfe_bwd"] / b["nfe_bwd"],
                    0.40,
                    ">=",
                    table="targets",
                )
            )
    return out


def _display(r: dict) -> dict:
    """A timing row with run.py's table columns."""
    bwd = r.get("steps_bwd")
    return {
        "table": "timings",
        "impl": r["impl"],
        "variant": r["variant"],
        "ms (median)": r.get("ms"),
        "ms (min)": r.get("ms_min"),
        "reps": r.get("reps"),
        "first call [s]": r.get("compile_s"),
        "rel err": r.get("rel_err"),
        "NFE fwd": r.get("nfe_fwd"),
        "NFE bwd": r.get("nfe_bwd"),
        "bwd steps (rejected)": None if bwd is None else f"{bwd} ({r.get('rejects_bwd')})",
        "notes": r.get("note"),
    }


def run(quick: bool = False) -> list[dict]:
    """All P3 measurements. ``quick``: shorter timing loops, and of torchdiffeq only
    odeint_adjoint, timed once (a row says so)."""
    budget = 3.0 if quick else 20.0
    _util.log("P3: reference gradient (Richardson, DOP853 at 1e-13) ...")
    t0 = time.perf_counter()
    ref, spread = reference_gradient()
    t_ref = time.perf_counter() - t0
    _util.log("P3: symode (first calls) ...")
    entries, info = _symode(ref)
    _util.log("P3: diffrax (jit compiles) ...")
    d_entries, rows = _diffrax(ref)
    entries += d_entries
    _util.log(f"P3: timing symode and diffrax round-robin ({budget:.0f} s) ...")
    round_robin(entries, budget)
    timed = [
        _row(e["impl"], e["variant"], e["timing"], **{k: v for k, v in e.items() if k not in (
            "impl", "variant", "fn", "timing")})
        for e in entries
    ]  # fmt: skip
    rows = timed + rows
    for name, fn in (("torchdiffeq", _torch), ("scipy", _scipy)):
        _util.log(f"P3: {name} ...")
        rows += fn(quick, ref, 0.3 if quick else 1.5)
    reference = {
        "table": "reference gradient",
        **{f"∂L/∂{n}": float(v) for n, v in zip(NAMES, ref)},
        "extrapolant spread": spread,
        "symode forward sens. 1e-12 vs ref": rel_err(info["fs12"], ref),
        "time [s]": t_ref,
    }
    out = _targets(rows) + [reference] + [_display(r) for r in rows] + _ratios(rows)
    if quick:
        out.append(
            {
                "table": "timings",
                "impl": "torchdiffeq",
                "variant": "--quick: only odeint_adjoint, one timed call; symode and "
                "diffrax timed for 3 s instead of 20 s",
            }
        )
    return out


# -- printing (python bench_gradients.py) -----------------------------------------------
def _fmt(v, spec="") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float) and not spec:
        return f"{v:.3g}" if (abs(v) < 1e-2 or abs(v) >= 1e5) and v != 0 else f"{v:.4g}"
    return format(v, spec)


def format_rows(rows: list[dict]) -> str:
    """Plain-text tables, one per ``table`` key, columns aligned."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r.get("table", ""), []).append(r)
    out = []
    for name, grp in groups.items():
        cols = [k for k in dict.fromkeys(k for r in grp for k in r) if k != "table"]
        cells = [[_fmt(r.get(c)) for c in cols] for r in grp]
        width = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        out += [f"== P3 {name}", "  ".join(c.ljust(w) for c, w in zip(cols, width))]
        out += ["  ".join(v.ljust(w) for v, w in zip(row, width)) for row in cells]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(format_rows(run(quick="--quick" in sys.argv[1:])))
