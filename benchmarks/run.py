"""Run symode's benchmarks and write one markdown results page (plus JSON).

    python benchmarks/run.py [--quick] [--only NAME[,NAME...]] [--name NAME]

Every ``benchmarks/bench_*.py`` is a benchmark module (see README.md for the
convention: ``run(quick: bool) -> list[dict]``). Each runs in its own fresh Python
process, so one module's imports, threads and JIT state never colour another's
numbers, and a crash costs only that module's table. The page goes to stdout and to
``benchmarks/results/<name>.md`` and ``<name>.json``; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata as md
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

from _util import REPO, child_env, log  # noqa: E402

CORE_PACKAGES = ["numpy", "numba", "llvmlite", "scipy", "sympy"]
PEER_PACKAGES = ["numbalsoda", "torch", "torchdiffeq", "jax", "diffrax", "jitcode"]


# --------------------------------------------------------------------------------------
# discovery and the child side
# --------------------------------------------------------------------------------------
def discover() -> dict[str, Path]:
    """name (file stem without ``bench_``) -> path, in file-name order."""
    return {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _child(path: Path, quick: bool, out: Path) -> int:
    """Import one benchmark module, call ``run(quick)``, write its result as JSON."""
    t0 = time.perf_counter()
    result = {"module": path.stem, "rows": [], "error": None}
    try:
        mod = _load(path)
        result["title"] = getattr(mod, "TITLE", path.stem)
        result["description"] = getattr(mod, "DESCRIPTION", "")
        rows = mod.run(quick)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise TypeError(f"{path.name}: run() must return a list of dicts")
        result["rows"] = [_jsonable(r) for r in rows]
    except BaseException:  # noqa: BLE001 - report any failure as this module's result
        result["error"] = traceback.format_exc()
        log(result["error"])
    result["elapsed_s"] = time.perf_counter() - t0
    out.write_text(json.dumps(result, indent=1))
    return 0


def _jsonable(row: dict) -> dict:
    clean = {}
    for k, v in row.items():
        if hasattr(v, "item") and not isinstance(v, (str, bytes)):  # numpy scalars
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            v = str(v)
        elif not isinstance(v, (str, int, float, bool, type(None))):
            v = str(v)
        clean[str(k)] = v
    return clean


def run_module(name: str, path: Path, quick: bool, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="symode-bench-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", str(path), str(out)]
        if quick:
            cmd.append("--quick")
        t0 = time.perf_counter()
        load_before = load_average()
        try:
            # the child's stdout is progress too: send it to our stderr
            proc = subprocess.run(
                cmd, stdout=sys.stderr, timeout=timeout, env=child_env(), cwd=REPO
            )
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        if out.exists():
            res = json.loads(out.read_text())
        else:
            res = {
                "module": path.stem,
                "title": name,
                "description": "",
                "rows": [],
                "error": f"the module's process ended without a result (exit {rc}, "
                f"after {time.perf_counter() - t0:.0f} s, limit {timeout:.0f} s)",
                "elapsed_s": time.perf_counter() - t0,
            }
        res["load_before"], res["load_after"] = load_before, load_average()
        return res


# --------------------------------------------------------------------------------------
# the machine
# --------------------------------------------------------------------------------------
def load_average() -> str:
    """1-, 5- and 15-minute load averages: other work on the machine skews timings."""
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=REPO, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    mem = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    threads = None
    try:
        import numba

        threads = numba.config.NUMBA_NUM_THREADS
    except ImportError:
        pass
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--", "symode", "kernels"))
    info = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable cores": usable,
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "symode": f"{_version('symode')} (git {commit}{', library modified' if dirty else ''})",
        "numba threads": threads,
        "load average at start (1/5/15 min)": load_average(),
    }
    for pkg in CORE_PACKAGES:
        info[pkg] = _version(pkg)
    for pkg in PEER_PACKAGES:
        info[pkg] = _version(pkg) or "not installed"
    blas = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    if blas:
        info["env"] = ", ".join(f"{k}={v}" for k, v in blas.items())
    return info


# --------------------------------------------------------------------------------------
# markdown
# --------------------------------------------------------------------------------------
def fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "**NO**"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if isinstance(v, float):
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 1e5 or a < 1e-3:
            return f"{v:.3g}"
        if a >= 100:
            return f"{v:.0f}"
        return f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def table(rows: list[dict], drop=("table",)) -> str:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in drop and k not in cols:
                cols.append(k)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def render(info: dict, results: list[dict], quick: bool, elapsed: float) -> str:
    out = [
        "# symode benchmarks" + (" (--quick)" if quick else ""),
        "",
        f"`python benchmarks/run.py{' --quick' if quick else ''}` — {info['date']}, "
        f"{elapsed:.0f} s in all. Problems: `shared/bench/PROBLEMS.md`.",
        "",
        "## Machine",
        "",
        table([{"": k, "value": v} for k, v in info.items()]),
    ]
    targets = [
        {"benchmark": res["module"], **{k: v for k, v in r.items() if k != "table"}}
        for res in results
        for r in res["rows"]
        if r.get("table") == "targets"
    ]
    if targets:
        out += ["", "## Targets", "", table(targets)]
    for res in results:
        out += ["", f"## {res.get('title') or res['module']} (`{res['module']}`)", ""]
        if res.get("description"):
            out += [res["description"], ""]
        groups: dict[str, list[dict]] = {}
        for r in res["rows"]:
            if r.get("table") != "targets":
                groups.setdefault(r.get("table", ""), []).append(r)
        for name, rows in groups.items():
            if name:
                out += [f"**{name}**", ""]
            out += [table(rows), ""]
        if res.get("error"):
            out += ["**The module failed:**", "", "```", res["error"].strip()[-3000:], "```", ""]
        out.append(
            f"_{res['module']}: {res.get('elapsed_s', 0):.0f} s; load average before "
            f"{res.get('load_before', 'n/a')}, after {res.get('load_after', 'n/a')}_"
        )
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_child":
        return _child(Path(argv[1]), "--quick" in argv, Path(argv[2]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, smaller cases")
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only these modules (compile, p1, bench_p2, ...); repeat or comma-separate",
    )
    ap.add_argument(
        "--name",
        help="results file stem (default: 'latest', 'latest-quick', or 'only-<names>')",
    )
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per module")
    ap.add_argument("--list", action="store_true", help="list the modules and exit")
    args = ap.parse_args(argv)

    modules = discover()
    if args.list:
        print("\n".join(f"{k}\t{v.relative_to(REPO)}" for k, v in modules.items()))
        return 0
    wanted = [w.strip() for o in args.only for w in o.split(",") if w.strip()]
    wanted = [w.removeprefix("bench_").removesuffix(".py") for w in wanted]
    unknown = [w for w in wanted if w not in modules]
    if unknown:
        ap.error(f"unknown module(s) {unknown}; have {list(modules)}")
    chosen = {k: v for k, v in modules.items() if not wanted or k in wanted}
    name = args.name or (
        f"only-{'-'.join(chosen)}" if wanted else ("latest-quick" if args.quick else "latest")
    )

    t0 = time.perf_counter()
    info = machine_info()
    results = []
    RESULTS.mkdir(exist_ok=True)

    def write() -> str:  # after every module, so a long or interrupted run keeps its tables
        elapsed = time.perf_counter() - t0
        page = render(info, results, args.quick, elapsed)
        (RESULTS / f"{name}.md").write_text(page)
        payload = {"machine": info, "quick": args.quick, "elapsed_s": elapsed, "modules": results}
        (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1))
        return page

    for mod_name, path in chosen.items():
        log(f"== {mod_name} ({path.name}){' --quick' if args.quick else ''}")
        t1 = time.perf_counter()
        results.append(run_module(mod_name, path, args.quick, args.timeout))
        log(f"== {mod_name}: {time.perf_counter() - t1:.0f} s")
        page = write()
    if not results:
        page = write()
    sys.stdout.write(page)
    log(f"wrote {(RESULTS / name).relative_to(REPO)}.md and .json")
    return 1 if any(r.get("error") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
