"""Cold compile, warm load and derivation time, each in a fresh process.

- cold: an EMPTY cache directory; ``system.compile()`` (derivations, printing, writing
  the cache) and the first ``solve`` (numba compiles the kernels and the engine) are
  timed separately. numba's compile events give the per-function compile times.
- warm: the same cache directory, now full, in new processes (median of 3): ``import
  symode``, ``compile()`` and the first ``solve`` timed separately. ../shared/DESIGN.md: warm
  load = compile() + first solve, after ``import symode``.
- derive: ``symode.codegen.generate_numba_source(system)`` in a fresh process (it runs
  every derivation, CSE and printing) for the 100-state system.
- floor: ``import numba`` alone, and numba's first-dispatch initialization (the first
  call of a trivial cached @njit function in a fresh process), which any numba
  library pays; warm load minus this floor is symode's own part.

Run as a module by ``run.py``; ``python bench_compile.py --child ...`` is the
fresh-process side (internal).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

TITLE = "Compile time and warm load (fresh processes)"
DESCRIPTION = (
    "Each number is measured in a new Python process. *cold*: empty cache directory, "
    "run once. *warm*: the cache that the cold run filled, median of 3 processes. "
    "Solves: dopri5, rtol = atol = 1e-8; Lotka–Volterra (P3 setup, 101 outputs on "
    "[0, 10]) and a 100-state 1-D reaction–diffusion chain u_i' = D(u_{i-1} − 2u_i + "
    "u_{i+1}) + r u_i(1 − u_i), zero-flux ends, D = 0.1, r = 1 (101 outputs on "
    "[0, 10]). *numba recompiled* counts numba compile events in that process "
    "(0 = everything came from the cache)."
)

SYSTEM_LABELS = {
    "lotka_volterra": "Lotka–Volterra (2 states)",
    "reaction_diffusion_100": "reaction–diffusion (100 states)",
}
WARM_TARGET_S = 0.5
DERIVE_TARGET_S = 30.0
TRIVIAL_MODULE = """
from numba import njit


@njit(cache=True)
def f(x):
    return x + 1.0
"""


# --------------------------------------------------------------------------------------
# fresh-process side
# --------------------------------------------------------------------------------------
def _compile_events():
    """Record numba compile events; returns a function giving per-function times."""
    from numba.core import event as ev

    rec = ev.RecordingListener()
    ev.register("numba:compile", rec)

    def summary():
        stack, incl, excl = [], {}, {}
        for stamp, e in rec.buffer:
            disp = e.data["dispatcher"]
            name = f"{disp.py_func.__module__.rsplit('.', 1)[-1]}.{disp.py_func.__name__}"
            if e.is_start:
                stack.append([name, stamp, 0.0])
            else:
                nm, start, children = stack.pop()
                dur = stamp - start
                incl[nm] = incl.get(nm, 0.0) + dur
                excl[nm] = excl.get(nm, 0.0) + dur - children
                if stack:
                    stack[-1][2] += dur
        return {"inclusive": incl, "exclusive": excl, "count": len(rec.buffer) // 2}

    return summary


class _Clock:
    """Wall and CPU (process) seconds since the last ``lap()``."""

    def __init__(self):
        self.w, self.c = time.perf_counter(), time.process_time()

    def lap(self) -> tuple[float, float]:
        w, c = time.perf_counter(), time.process_time()
        out = (w - self.w, c - self.c)
        self.w, self.c = w, c
        return out


def _child_solve(system_name: str, cache_dir: str) -> dict:
    clock = _Clock()
    import symode  # noqa: F401

    t_import = clock.lap()
    import problems

    events = _compile_events()
    make, y0, params, ts = problems.SYSTEMS[system_name]
    clock.lap()
    system = make()
    t_build = clock.lap()
    model = system.compile(cache_dir=cache_dir)
    t_compile = clock.lap()
    sol = model.solve(y0, ts, params, method="dopri5", rtol=1e-8, atol=1e-8)
    t_solve = clock.lap()
    model.solve(y0, ts, params, method="dopri5", rtol=1e-8, atol=1e-8)
    t_solve2 = clock.lap()
    ev = events()
    return {
        "import": t_import[0],
        "build": t_build[0],
        "compile": t_compile[0],
        "first_solve": t_solve[0],
        "second_solve": t_solve2[0],
        "load_cpu": t_compile[1] + t_solve[1],
        "nfev": int(sol.stats["nfev"]),
        "numba_compiles": ev["count"],
        "inclusive": ev["inclusive"],
        "exclusive": ev["exclusive"],
        "cache_path": str(model.path),
    }


def _child_derive(system_name: str, breakdown: bool) -> dict:
    import symode
    import symode.codegen

    clock = _Clock()
    import problems

    system = problems.SYSTEMS[system_name][0]()
    out = {"build": clock.lap()[0]}
    if breakdown:  # derivations one by one (cached on the system), then printing
        from symode.system import Loss

        steps = [
            ("jacobian", system.jacobian),
            ("param_jacobian", system.param_jacobian),
            ("adjoint", system.adjoint),
            ("time_derivative", system.time_derivative),
            ("divergence", system.divergence),
            ("divergence_gradient", system.divergence_gradient),
            ("loss_derivatives", lambda: system.loss_derivatives(Loss())),
        ]
        for name, fn in steps:
            clock.lap()
            fn()
            out[name] = clock.lap()[0]
    clock.lap()
    src = symode.codegen.generate_numba_source(system)
    wall, cpu = clock.lap()
    out["generate" if not breakdown else "printing (after derivations)"] = wall
    out["cpu"] = cpu
    out["source_chars"] = len(src)
    out["symode"] = symode.__version__
    return out


def _child_numba(tmp: str, after: str) -> dict:
    clock = _Clock()
    import numba  # noqa: F401

    if after != "-":
        __import__(after)
    t_import = clock.lap()[0]
    sys.path.insert(0, tmp)
    import trivial_njit

    t_decorate = clock.lap()[0]
    trivial_njit.f(1.0)
    t_first, c_first = clock.lap()
    trivial_njit.f(2.0)
    t_second = clock.lap()[0]
    hits = sum(trivial_njit.f.stats.cache_hits.values())
    return {
        "import": t_import,
        "decorate": t_decorate,
        "first_call": t_first,
        "first_call_cpu": c_first,
        "second_call": t_second,
        "cache_hits": hits,
    }


def _child_import(module: str) -> dict:
    clock = _Clock()
    __import__(module)
    wall, cpu = clock.lap()
    return {"import": wall, "cpu": cpu}


def _child_main(argv: list[str]) -> None:
    mode, *rest = argv
    if mode == "solve":
        res = _child_solve(rest[0], rest[1])
    elif mode == "derive":
        res = _child_derive(rest[0], rest[1] == "1")
    elif mode == "numba":
        res = _child_numba(rest[0], rest[1])
    elif mode == "import":
        res = _child_import(rest[0])
    else:
        raise SystemExit(f"unknown child mode {mode!r}")
    print(json.dumps(res))


# --------------------------------------------------------------------------------------
# driver side
# --------------------------------------------------------------------------------------
def _child(*args: str, timeout: float = 900) -> dict:
    from _util import run_child

    return run_child([str(Path(__file__).resolve()), "--child", *args], timeout=timeout)


def _median_of(runs: list[dict], key: str):
    from _util import median

    return median([r[key] for r in runs])


def _floor_rows(n: int) -> tuple[list[dict], dict]:
    """Import times and numba's first-dispatch floor; returns the rows and the floors."""
    from _util import log

    rows = []
    for module in ("numpy", "numba", "sympy", "scipy.integrate", "symode"):
        k = n if module in ("numba", "symode") else 1
        log(f"  import {module} (fresh process x{k})")
        runs = [_child("import", module) for _ in range(k)]
        rows.append(
            {
                "table": "floor",
                "what": f"`import {module}` alone",
                "wall [s]": _median_of(runs, "import"),
                "CPU [s]": _median_of(runs, "cpu"),
                "notes": f"median of {k} fresh processes" if k > 1 else "1 fresh process",
            }
        )
    tmp = tempfile.mkdtemp(prefix="symode-bench-numba-")
    floors = {}
    try:
        Path(tmp, "trivial_njit.py").write_text(TRIVIAL_MODULE)
        log("  numba first dispatch (populate the cache, then fresh processes)")
        _child("numba", tmp, "-")
        for after, what in (
            ("-", "numba first dispatch: first call of a trivial cached @njit"),
            ("symode", "the same, in a process that imported symode first"),
        ):
            runs = [_child("numba", tmp, after) for _ in range(n)]
            floors[after] = _median_of(runs, "first_call")
            hits = min(r["cache_hits"] for r in runs)
            rows.append(
                {
                    "table": "floor",
                    "what": what,
                    "wall [s]": floors[after],
                    "CPU [s]": _median_of(runs, "first_call_cpu"),
                    "notes": f"median of {n}; loaded from cache: {'yes' if hits else 'NO'}; "
                    f"a second call takes {_median_of(runs, 'second_call') * 1e6:.1f} µs",
                }
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows, floors


def _compile_rows(system_name: str, n_warm: int, floors: dict, diag_rows: list):
    from _util import log

    label = SYSTEM_LABELS[system_name]
    tmp = tempfile.mkdtemp(prefix="symode-bench-cache-")
    try:
        log(f"  {label}: cold (empty cache {tmp})")
        cold = _child("solve", system_name, tmp, timeout=1800)
        log(f"    compile() {cold['compile']:.2f} s, first solve {cold['first_solve']:.2f} s")
        warm = []
        for i in range(n_warm):
            log(f"  {label}: warm {i + 1}/{n_warm}")
            warm.append(_child("solve", system_name, tmp, timeout=1800))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for r in [cold, *warm]:
        r["load"] = r["compile"] + r["first_solve"]

    def row(phase, r):
        return {
            "table": "compile",
            "system": label,
            "phase": phase,
            "import symode [s]": r["import"],
            "build ODESystem [s]": r["build"],
            "compile() [s]": r["compile"],
            "first solve [s]": r["first_solve"],
            "compile() + first solve [s]": r["load"],
            "… CPU [s]": r["load_cpu"],
            "second solve [ms]": r["second_solve"] * 1e3,
            "numba recompiled": r["numba_compiles"],
        }

    keys = ("import", "build", "compile", "first_solve", "second_solve", "load", "load_cpu")
    med = {k: _median_of(warm, k) for k in keys}
    med["numba_compiles"] = max(r["numba_compiles"] for r in warm)
    rows = [row("cold (1 process)", cold), row(f"warm (median of {n_warm})", med)]
    moved = sum(r["cache_path"] != cold["cache_path"] for r in warm)
    if moved:  # the engine sources changed between the runs: a new cache key
        rows[-1]["phase"] += f" — {moved} run(s) used a NEW cache directory"
    # where the cold first solve went: numba's compile events, top functions
    excl = sorted(cold["exclusive"].items(), key=lambda kv: -kv[1])
    total = sum(v for _, v in excl)
    for name, secs in excl[:8]:
        diag_rows.append(
            {
                "table": "cold compile by function",
                "system": label,
                "function (numba compile, self time)": name,
                "self [s]": secs,
                "incl. callees [s]": cold["inclusive"].get(name),
                "share of all compile": f"{100 * secs / total:.0f}%" if total else "—",
            }
        )
    floor = floors.get("symode")
    measured = f"{med['load']:.3f} s wall, {med['load_cpu']:.3f} s CPU"
    if floor is not None:
        measured += f" (numba's own first dispatch {floor:.3f} s of it at most)"
    if med["numba_compiles"]:
        measured += f"; numba RECOMPILED {med['numba_compiles']} functions"
    target = {
        "table": "targets",
        "what": f"warm load, {label}: compile() + first solve",
        "measured": measured,
        "target": f"< {WARM_TARGET_S} s",
        "met": med["load"] < WARM_TARGET_S and med["numba_compiles"] == 0,
        "met on CPU time": med["load_cpu"] < WARM_TARGET_S and med["numba_compiles"] == 0,
    }
    return rows, [target]


def _derive_rows(system_name: str, breakdown: bool) -> tuple[list[dict], list[dict]]:
    from _util import log

    label = SYSTEM_LABELS[system_name]
    log(f"  {label}: generate_numba_source (fresh process)")
    r = _child("derive", system_name, "0", timeout=1800)
    rows = [
        {
            "table": "derive",
            "system": label,
            "step": "`generate_numba_source(system)`: all derivations + CSE + printing",
            "wall [s]": r["generate"],
            "CPU [s]": r["cpu"],
            "notes": f"{r['source_chars']:,} characters of source; building the "
            f"ODESystem took {r['build']:.2f} s more",
        }
    ]
    if breakdown:
        log(f"  {label}: derivations one by one, then printing (fresh process)")
        b = _child("derive", system_name, "1", timeout=1800)
        for k, v in b.items():
            if k in ("build", "source_chars", "symode", "cpu"):
                continue
            rows.append(
                {
                    "table": "derive",
                    "system": label,
                    "step": f"breakdown: {k}",
                    "wall [s]": v,
                    "notes": "a second fresh process",
                }
            )
    target = {
        "table": "targets",
        "what": f"{label}: derived + printed (`generate_numba_source`)",
        "measured": f"{r['generate']:.1f} s wall, {r['cpu']:.1f} s CPU",
        "target": f"< {DERIVE_TARGET_S:.0f} s",
        "met": r["generate"] < DERIVE_TARGET_S,
        "met on CPU time": r["cpu"] < DERIVE_TARGET_S,
    }
    return rows, [target]


def run(quick: bool) -> list[dict]:
    """Quick: floors once each, Lotka–Volterra cold + 3 warm, the 100-state derivation;
    full: floors median of 3, both systems cold + 3 warm, derivation with breakdown."""
    n_floor = 1 if quick else 3
    floor_rows, floors = _floor_rows(n_floor)
    rows, targets, diag = [], [], []
    systems = ["lotka_volterra"] if quick else ["lotka_volterra", "reaction_diffusion_100"]
    for name in systems:
        r, t = _compile_rows(name, 3, floors, diag)
        rows += r
        targets += t
    if quick:
        rows.append(
            {
                "table": "compile",
                "system": SYSTEM_LABELS["reaction_diffusion_100"],
                "phase": "skipped in --quick (its cold compile takes minutes)",
            }
        )
    r, t = _derive_rows("reaction_diffusion_100", breakdown=not quick)
    return targets + t + rows + r + floor_rows + diag


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child_main(sys.argv[2:])
    else:
        from _util import log

        for row in run("--quick" in sys.argv):
            log(row)
