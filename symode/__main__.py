"""``python -m symode``: compile the engine ahead of time, show or clear the caches."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from . import maintenance
from .cache import default_cache_dir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m symode", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    warm = sub.add_parser("warmup", help="compile the generic engine ahead of time")
    warm.add_argument("--dtypes", default="float64,float32", help="comma-separated")
    warm.add_argument("--modes", default=",".join(maintenance.ADJOINT_MODES), help="adjoint modes")
    warm.add_argument("--jobs", type=int, default=1, help="processes compiling at once")
    clear = sub.add_parser("clear-cache", help="remove generated systems and compiled code")
    clear.add_argument("--cache-dir", default=None)
    clear.add_argument("--keep-engine", action="store_true", help="keep the compiled engine")
    sub.add_parser("info", help="where the caches are")
    args = parser.parse_args(argv)

    if args.command == "warmup":
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
        start = time.perf_counter()
        split = [s for s in args.modes.split(",") if s]
        done = maintenance.warmup(args.dtypes.split(","), split, jobs=args.jobs)
        for dtype, what, seconds in sorted(done):
            print(f"{dtype:8} {what:11} {seconds:7.1f} s")
        print(
            f"engine ready in {time.perf_counter() - start:.1f} s: {maintenance.engine_cache_dir()}"
        )
    elif args.command == "clear-cache":
        removed = maintenance.clear_cache(args.cache_dir, engine=not args.keep_engine)
        print(f"removed {len(removed)} cache entries")
    else:
        print(f"generated systems: {default_cache_dir()}")
        print(f"compiled engine:   {maintenance.engine_cache_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
