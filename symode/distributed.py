"""Ensembles, sweeps and batched gradients beyond one machine, on Dask (dask.distributed).

``solve`` and ``vjp`` split a batch of trajectories into chunks along the batch axis;
each chunk is one compiled CPU ensemble (``Model.solve`` / ``Model.vjp`` with batched
inputs) on a worker. The model travels as its definition and cache key
(``Model.__reduce__``): a worker loads it from its own cache, or generates and compiles
it there, once per worker process, so no shared filesystem is needed (the engine itself
compiles once per machine, numba's cache). Results have the local ensemble's shapes,
per-trajectory status and messages, with failed trajectories named by their global
index; ``reduce=`` runs on the workers, so a sweep's full solutions never travel.

With no ``client`` the current default Dask client is used if there is one; otherwise a
LocalCluster is started for this Python session (worker processes, one thread each, the
numba threads per worker set so that workers × threads = cores) and reused by later
calls, closed at exit. Needs the ``distributed`` extra: ``pip install symode[distributed]``.
"""

from __future__ import annotations

import atexit
import os
import threading

import numpy as np

from .model import Model, Solution

__all__ = ["solve", "vjp", "default_client", "close"]

_LOCAL = {"cluster": None, "client": None}
_LOCK = threading.Lock()


def _dask():
    try:
        import dask
        import dask.array as da
        import distributed
    except ImportError as err:  # pragma: no cover - the test extra installs it
        raise ImportError(
            "symode.distributed needs Dask: pip install 'symode[distributed]' (dask[distributed])"
        ) from err
    return dask, da, distributed


def default_client():
    """The Dask client symode uses when none is given: the current default client, or a
    LocalCluster started for this session (reused, closed at exit)."""
    _, _, distributed = _dask()
    try:
        return distributed.get_client()
    except ValueError:
        pass
    with _LOCK:
        if _LOCAL["client"] is None:
            cores = os.cpu_count() or 1
            workers = max(1, cores)
            env = {"NUMBA_NUM_THREADS": str(max(1, cores // workers)), "OMP_NUM_THREADS": "1"}
            cluster = distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                env=env,
            )
            _LOCAL["cluster"], _LOCAL["client"] = cluster, distributed.Client(cluster)
            atexit.register(close)
        return _LOCAL["client"]


def close() -> None:
    """Close the LocalCluster symode started (if any)."""
    with _LOCK:
        client, cluster = _LOCAL["client"], _LOCAL["cluster"]
        _LOCAL["client"] = _LOCAL["cluster"] = None
    if client is not None:
        client.close()
    if cluster is not None:
        cluster.close()


# -- what runs on a worker ------------------------------------------------------------------
def _solve_chunk(model, y0, t_eval, params, options, reduce):
    sol = model.solve(y0, t_eval, params, throw=False, **options)
    if reduce is not None:
        return reduce(sol)
    return {
        "y": sol.y,
        "status": np.asarray(sol.status, np.int64),
        "message": list(sol.message),
        **{k: np.asarray(v) for k, v in sol.stats.items()},
    }


def _vjp_chunk(model, y0, t_eval, params, cotangent, options):
    g = model.vjp(y0, t_eval, params, cotangent, throw=False, **options)
    out = {
        "y0": g.y0,
        "params": g.params,
        "y": g.y,
        "status": np.asarray(g.status, np.int64),
        "message": list(g.message),
    }
    for phase, counts in g.stats.items():
        for k, v in counts.items():
            out[f"{phase}_{k}"] = np.asarray(v)
    return out


# -- the client side ------------------------------------------------------------------------
def _batch(model: Model, y0, params, t_eval, extra=None):
    """The batch's size and its per-trajectory arrays (numpy or dask), y0 and params
    broadcast to (B, n), (B, p); a padded (B, T) t_eval counts as batched."""
    n, p = model.system.n_states, model.system.n_params
    sizes = [a.shape[0] for a in (y0, params) if a is not None and np.ndim(a) == 2]
    if np.ndim(t_eval) == 2:
        sizes.append(np.shape(t_eval)[0])
    if extra is not None:
        sizes.append(extra.shape[0])
    if not sizes:
        raise ValueError(
            "symode.distributed needs a batch: y0 (B, n), params (B, p) or a padded t_eval (B, T)"
        )
    B = sizes[0]
    if any(s != B for s in sizes):
        raise ValueError(f"the batched inputs disagree on the batch size: {sizes}")
    y0 = _rows(y0, B, n, "y0")
    params = _rows(params if params is not None else np.zeros(p), B, p, "params")
    return B, y0, params


def _rows(a, B, width, name):
    if hasattr(a, "dask"):
        return a
    a = np.asarray(a, np.float64)
    if a.ndim == 1:
        if a.shape[0] != width:
            raise ValueError(f"{name} must have shape ({width},) or (B, {width}); got {a.shape}")
        return np.broadcast_to(a, (B, width))
    return a


def _chunk_bounds(B: int, chunks) -> list[tuple[int, int]]:
    if isinstance(chunks, int):
        if chunks < 1:
            raise ValueError(f"chunks must be a positive number of trajectories, got {chunks}")
        edges = list(range(0, B, chunks)) + [B]
    else:  # a tuple of chunk sizes, as dask writes them
        edges = list(np.concatenate([[0], np.cumsum(chunks)]))
        if edges[-1] != B:
            raise ValueError(f"chunks {tuple(chunks)} do not add up to the batch size {B}")
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _slice(a, lo, hi):
    if a is None:
        return None
    if np.ndim(a) >= 1 and not np.isscalar(a) and getattr(a, "shape", (0,))[0] >= hi:
        return a[lo:hi]
    return a


def _run(client, tasks, progress: bool):
    """Submit the chunks' tasks (pure: a lost worker's chunks are recomputed) and gather
    their results in order, with a progress bar over chunks."""
    _, _, distributed = _dask()
    futures = client.compute(tasks)
    if progress:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover
            tqdm = None
        if tqdm is not None:
            with tqdm(total=len(futures), desc="symode chunks", unit="chunk") as bar:
                for _ in distributed.as_completed(futures):
                    bar.update(1)
    return client.gather(futures)


def _global_failed(status: np.ndarray) -> tuple:
    return tuple(int(i) for i in np.flatnonzero(status))


def solve(
    model: Model,
    y0,
    t_eval,
    params=None,
    *,
    chunks=10_000,
    client=None,
    reduce=None,
    compute: bool = True,
    progress: bool = False,
    **options,
):
    """``model.solve`` of a batch on Dask, ``chunks`` trajectories per task.

    Returns a :class:`~symode.model.Solution` with the local ensemble's shapes (y (B, T,
    n), status and stats per trajectory; ``failed`` holds global indices) — NumPy, or
    with ``compute=False`` dask arrays (messages then None). With ``reduce``, the list of
    ``reduce(chunk_solution)`` in chunk order (each chunk a Solution of its trajectories,
    ``chunks`` of them), computed on the workers; with ``compute=False`` the delayed
    values. Solver options (method, rtol, atol, dt, ...) as for ``Model.solve``; the
    solution never raises for failed trajectories (check ``status``)."""
    dask, da, _ = _dask()
    options.pop("throw", None)
    B, Y0, P = _batch(model, y0, params, t_eval)
    bounds = _chunk_bounds(B, chunks if not hasattr(Y0, "chunks") else Y0.chunks[0])
    t_eval = np.asarray(t_eval, np.float64)
    padded = t_eval.ndim == 2
    run = dask.delayed(_solve_chunk, pure=True)
    tasks = [
        run(model, _slice(Y0, lo, hi), t_eval[lo:hi] if padded else t_eval, _slice(P, lo, hi),
            options, reduce)
        for lo, hi in bounds
    ]  # fmt: skip
    if reduce is not None:
        if not compute:
            return tasks
        return _run(client or default_client(), tasks, progress)
    if not compute:
        T = t_eval.shape[-1]
        n = model.system.n_states
        ys = [
            da.from_delayed(task["y"], (hi - lo, T, n), dtype=options.get("dtype", np.float64))
            for task, (lo, hi) in zip(tasks, bounds)
        ]
        status = [
            da.from_delayed(task["status"], (hi - lo,), dtype=np.int64)
            for task, (lo, hi) in zip(tasks, bounds)
        ]
        stats = {
            k: da.concatenate(
                [
                    da.from_delayed(task[k], (hi - lo,), np.int64)
                    for task, (lo, hi) in zip(tasks, bounds)
                ]
            )
            for k in ("nfev", "naccept", "nreject")
        }
        st = da.concatenate(status)
        return Solution(t_eval, da.concatenate(ys), stats, st, None, None, None)
    parts = _run(client or default_client(), tasks, progress)
    status = np.concatenate([r["status"] for r in parts])
    stats = {k: np.concatenate([r[k] for r in parts]) for k in ("nfev", "naccept", "nreject")}
    messages = [m for r in parts for m in r["message"]]
    y = np.concatenate([r["y"] for r in parts])
    return Solution(t_eval.copy(), y, stats, status, messages, None, _global_failed(status))


def vjp(
    model: Model,
    y0,
    t_eval,
    params,
    cotangent,
    *,
    chunks=10_000,
    client=None,
    compute: bool = True,
    progress: bool = False,
    **options,
):
    """``model.vjp`` of a batch on Dask, ``chunks`` trajectories per task: a dict with
    the per-trajectory gradients ``y0`` (B, n) and ``params`` (B, p), the forward
    solution ``y`` (B, T, n), ``status`` and ``message`` per trajectory, ``failed``
    (global indices) and the solver counts ``forward_nfev``, ``backward_nfev``, ...
    NumPy, or with ``compute=False`` dask arrays (no messages). ``cotangent`` is (B, T,
    n) (NumPy or dask). Options as for ``Model.vjp``; it never raises for failed
    trajectories (check ``status``)."""
    dask, da, _ = _dask()
    options.pop("throw", None)
    cot = cotangent if hasattr(cotangent, "dask") else np.asarray(cotangent, np.float64)
    if cot.ndim != 3:
        raise ValueError(f"cotangent must have shape (B, T, n), got {cot.shape}")
    B, Y0, P = _batch(model, y0, params, t_eval, extra=cot)
    bounds = _chunk_bounds(B, chunks if not hasattr(Y0, "chunks") else Y0.chunks[0])
    t_eval = np.asarray(t_eval, np.float64)
    padded = t_eval.ndim == 2
    run = dask.delayed(_vjp_chunk, pure=True)
    tasks = [
        run(model, _slice(Y0, lo, hi), t_eval[lo:hi] if padded else t_eval, _slice(P, lo, hi),
            cot[lo:hi], options)
        for lo, hi in bounds
    ]  # fmt: skip
    n, p = model.system.n_states, model.system.n_params
    T = t_eval.shape[-1]
    if not compute:

        def cat(key, shape, dtype):
            return da.concatenate(
                [
                    da.from_delayed(t[key], (hi - lo, *shape), dtype)
                    for t, (lo, hi) in zip(tasks, bounds)
                ]
            )

        dtype = options.get("dtype", np.float64)
        return {
            "y0": cat("y0", (n,), np.float64),
            "params": cat("params", (p,), np.float64),
            "y": cat("y", (T, n), dtype),
            "status": cat("status", (), np.int64),
        }
    parts = _run(client or default_client(), tasks, progress)
    out = {k: np.concatenate([r[k] for r in parts]) for k in parts[0] if k != "message"}
    out["message"] = [m for r in parts for m in r["message"]]
    out["failed"] = _global_failed(out["status"])
    return out
