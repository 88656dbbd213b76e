"""Flows: where the determinant cost comes from.

A planar flow's log-determinant by the matrix determinant lemma, log|1 + ûᵀψ| per
layer, costs O(d) per sample alongside the O(d) map itself; the same number from the
dense Jacobian costs O(d²) to form each layer's Jacobian, O((K - 1) d³) to multiply
them, and O(d³) for the LU factorisation in ``numpy.linalg.slogdet``. This module
times the three as the dimension grows (d = 2 … 512) for a 4-layer ``PlanarFlow``:

- *analytic*: ``flow.forward(z, params)``: the samples and their log-determinants;
- *dense J*: ``flow.jacobian(z, params)``: the K per-layer Jacobians and their
  product J_K ⋯ J_1 (what a flow without a structured determinant must build);
- *slogdet*: ``symode.flows.dense_logdet(J)`` of that product.

Microseconds per sample, medians of round-robin interleaved calls after a warm-up
(``_util.round_robin``), and the ratio (dense J + slogdet) / analytic, with the
largest relative difference between the two log-determinants as a check. The analytic
path runs on 4096 samples; the dense path on as many as keep the Jacobians under
32 MiB (16 at d = 512). BLAS runs on one thread (``OPENBLAS_NUM_THREADS=1`` and
friends, set before numpy is imported unless the environment sets them), so every
column is one core's time. ``python benchmarks/bench_flows.py [--quick]`` prints the
tables.
"""

from __future__ import annotations

import math
import os
import sys

_BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_BLAS_SET_FIRST = "numpy" not in sys.modules  # else the setting below comes too late
for _v in _BLAS_VARS:
    os.environ.setdefault(_v, "1")

import _util  # noqa: E402  benchmarks/ is on sys.path (run.py, or running this file)
import numpy as np  # noqa: E402

from symode.flows import PlanarFlow, dense_logdet  # noqa: E402

TITLE = "Flows: the planar flow's O(d) log-determinant against a dense O(d³) slogdet"
DESCRIPTION = (
    "A 4-layer `symode.flows.PlanarFlow` (seeded parameters, perturbed away from the "
    "identity), z ~ N(0, I_d). *analytic*: `flow.forward` (the map and Σ log|1 + ûᵀψ|, "
    "O(K d) per sample). *dense J*: `flow.jacobian` (each layer's I + (1 − h²) û wᵀ, "
    "multiplied: O((K − 1) d³)). *slogdet*: `dense_logdet` (LU, O(d³)). µs per sample, medians "
    "of interleaved calls after a warm-up; the analytic path on 4096 samples, the dense "
    "one on as many as fit 32 MiB of Jacobians. One BLAS thread. *max rel diff*: the "
    "largest |analytic − slogdet| / |slogdet| over the dense path's samples."
)

DIMS = (2, 8, 32, 128, 512)
N_LAYERS = 4
N_ANALYTIC = 4096
DENSE_BYTES = 32 * 2**20


def _n_dense(d: int) -> int:
    return int(min(1024, max(4, DENSE_BYTES // (8 * d * d))))


def _measure(d: int, budget: float) -> tuple[dict[str, float], int, float]:
    """µs per sample of the three paths at dimension d, the dense path's sample count,
    and the largest relative difference of the two log-determinants."""
    flow = PlanarFlow(d, N_LAYERS, seed=0)
    theta = flow.params + np.random.default_rng(1).normal(0.0, 0.5 / math.sqrt(d), flow.n_params)
    z = flow.base.sample(N_ANALYTIC, seed=2)
    n_dense = _n_dense(d)
    zd = z[:n_dense]
    J = flow.jacobian(zd, theta)
    dense = dense_logdet(J)
    rel = float(np.max(np.abs(flow.forward(zd, theta)[1] - dense)) / np.max(np.abs(dense)))
    med = _util.round_robin(
        {
            "analytic": lambda: flow.forward(z, theta),
            "jacobian": lambda: flow.jacobian(zd, theta),
            "slogdet": lambda: dense_logdet(J),
        },
        budget_s=budget,
        max_reps=100,
    )
    n = {"analytic": N_ANALYTIC, "jacobian": n_dense, "slogdet": n_dense}
    return {k: 1e6 * med[k] / n[k] for k in med}, n_dense, rel


def run(quick: bool = False) -> list[dict]:
    budget = 0.4 if quick else 2.0
    rows: list[dict] = []
    times: dict[int, dict[str, float]] = {}
    for d in DIMS:
        _util.log(f"flows: d = {d}")
        us, n_dense, rel = _measure(d, budget)
        times[d] = us
        rows.append(
            {
                "table": "µs per sample",
                "d": d,
                "analytic (map + log-det) [µs]": us["analytic"],
                "dense J (K layers, product) [µs]": us["jacobian"],
                "slogdet [µs]": us["slogdet"],
                "(dense J + slogdet) / analytic": (us["jacobian"] + us["slogdet"]) / us["analytic"],
                "slogdet / analytic": us["slogdet"] / us["analytic"],
                "samples (analytic / dense)": f"{N_ANALYTIC} / {n_dense}",
                "max rel diff of log-det": rel,
            }
        )
    for a, b in zip(DIMS, DIMS[1:]):
        slope = {k: math.log(times[b][k] / times[a][k]) / math.log(b / a) for k in times[a]}
        rows.append(
            {
                "table": "growth: log-log slope of µs per sample between dimensions",
                "d": f"{a} → {b}",
                "analytic": slope["analytic"],
                "dense J": slope["jacobian"],
                "slogdet": slope["slogdet"],
            }
        )
    rows.append(
        {
            "table": "setup",
            "K (layers)": N_LAYERS,
            "BLAS threads": ", ".join(f"{v}={os.environ.get(v)}" for v in _BLAS_VARS),
            "set before numpy was imported": _BLAS_SET_FIRST,
            "quick": quick,
        }
    )
    return rows


if __name__ == "__main__":
    rows = run(quick="--quick" in sys.argv[1:])
    sys.path.insert(0, str(_util.HERE))
    import run as _run  # the results page's table format

    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["table"], []).append(r)
    for name, grp in groups.items():
        print(f"**{name}**\n\n{_run.table(grp)}\n")
