"""A million Lorenz systems on Dask: where in the (ρ, σ) plane is the attractor chaotic?

Lorenz's x' = σ(y − x), y' = x(ρ − z) − y, z' = xy − βz (β = 8/3) from (1, 1, 1), one
trajectory per point of a ρ × σ grid (1000 × 1000 in the full run), classic RK4 at
dt = 0.01 to t = 20. Each chunk of the grid is one compiled ensemble on a Dask worker
(``symode.distributed.solve``), and ``reduce=`` turns each chunk's trajectories into
two numbers per trajectory on the worker — the mean and the standard deviation of z
over t ∈ [10, 20] — so 10⁶ trajectories × 101 outputs never travel to this process.

For ρ < 1 every trajectory falls to the origin (z → 0); for 1 < ρ below the chaotic
threshold (≈ 24.74 at σ = 10) to one of the two fixed points C± (z → ρ − 1, std 0);
beyond it, on the strange attractor, z keeps oscillating (std of a few units).

Run:  python examples/dask_parameter_sweep.py        (a LocalCluster on this machine)
      python examples/dask_parameter_sweep.py --scheduler tcp://host:8786   (a cluster)
      --quick: a 50 × 40 grid to t = 20 (the tests)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import sympy as sp

import symode
import symode.distributed as sd

T_END, DT = 20.0, 0.01
T_STATS = np.linspace(10.0, 20.0, 101)  # the window the statistics are taken over


def lorenz(cache_dir=None):
    t = sp.Symbol("t")
    x, y, z = sp.symbols("x y z")
    sigma, rho = sp.symbols("sigma rho")
    beta = sp.Rational(8, 3)
    system = symode.ODESystem(
        [sigma * (y - x), x * (rho - z) - y, x * y - beta * z],
        states=[x, y, z],
        params=[sigma, rho],
        t=t,
    )
    return system.compile(cache_dir=cache_dir)


def z_statistics(sol):
    """On the worker: per trajectory, the mean and standard deviation of z over the
    window (non-finite where a trajectory failed)."""
    z = sol.y[:, :, 2]
    return np.stack([z.mean(axis=1), z.std(axis=1)], axis=1)


def main(
    quick: bool = False,
    plot: str | None = "dask_parameter_sweep.png",
    scheduler: str | None = None,
    cache_dir=None,
    progress: bool = True,
    client=None,
):
    n_rho, n_sigma = (50, 40) if quick else (1000, 1000)
    rhos = np.linspace(0.0, 40.0, n_rho)
    sigmas = np.linspace(1.0, 20.0, n_sigma)
    R, S = np.meshgrid(rhos, sigmas, indexing="ij")
    params = np.column_stack([S.ravel(), R.ravel()])  # (σ, ρ) per trajectory
    B = params.shape[0]
    chunks = 500 if quick else 20_000
    model = lorenz(cache_dir)

    t0 = time.perf_counter()
    if client is None and scheduler is not None:
        import distributed

        client = distributed.Client(scheduler)
    client = client or sd.default_client()
    workers = client.scheduler_info()["workers"]
    print(
        f"Dask: {len(workers)} workers × "
        f"{sum(w['nthreads'] for w in workers.values()) // max(len(workers), 1)} thread(s) "
        f"({client.scheduler.address}); ready in {time.perf_counter() - t0:.1f} s"
    )
    print(f"sweep: {n_rho} ρ × {n_sigma} σ = {B:,} Lorenz trajectories, RK4 dt={DT} to t={T_END}")
    t0 = time.perf_counter()
    parts = sd.solve(
        model, [1.0, 1.0, 1.0], T_STATS, params, method="rk4", dt=DT, t_span=(0.0, T_END),
        chunks=chunks, client=client, reduce=z_statistics, progress=progress,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    stats = np.concatenate(parts).reshape(n_rho, n_sigma, 2)
    steps = B * T_END / DT
    print(
        f"{seconds:.1f} s: {B / seconds:,.0f} trajectories/s, "
        f"{steps / seconds / 1e6:.1f} million RK4 steps/s; {len(parts)} chunks of {chunks:,}"
    )
    mean_z, std_z = stats[..., 0], stats[..., 1]
    chaotic = std_z > 1.0
    print(
        f"not settled (std of z over t ∈ [10, 20] > 1): {chaotic.mean():.1%} of the grid — "
        "the strange attractor, or below ρ ≈ 24.06 a transient chaos that outlasts t = 20"
    )
    at10 = np.argmin(np.abs(sigmas - 10.0))
    onset = rhos[np.argmax(chaotic[:, at10])] if chaotic[:, at10].any() else float("nan")
    print(f"at σ ≈ {sigmas[at10]:.2f}: chaos from ρ ≈ {onset:.1f} (theory at σ = 10: 24.74)")
    below1 = rhos < 1.0
    print(
        f"ρ < 1: mean |z| = {np.abs(mean_z[below1]).mean():.2e} (the origin); "
        f"1 < ρ, steady: mean z − (ρ − 1) = "
        f"{np.nanmean((mean_z - (rhos[:, None] - 1))[(rhos[:, None] > 1.5) & ~chaotic]):.2e} "
        "(the fixed points C±)"
    )
    if plot:
        _plot(plot, rhos, sigmas, mean_z, std_z)
    return {
        "rhos": rhos,
        "sigmas": sigmas,
        "mean_z": mean_z,
        "std_z": std_z,
        "seconds": seconds,
        "chaotic_fraction": float(chaotic.mean()),
        "onset_at_sigma_10": float(onset),
        "params": params,
        "model": model,
    }


def _plot(path, rhos, sigmas, mean_z, std_z):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    extent = [sigmas[0], sigmas[-1], rhos[0], rhos[-1]]
    for a, data, title in zip(ax, (mean_z, std_z), ("mean of z, t ∈ [10, 20]", "std of z")):
        im = a.imshow(data, origin="lower", aspect="auto", extent=extent, cmap="viridis")
        a.set(title=title, xlabel="σ", ylabel="ρ")
        fig.colorbar(im, ax=a)
    fig.suptitle("Lorenz (β = 8/3) from (1, 1, 1): fixed points and the strange attractor")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot saved to {path}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a 50 × 40 grid (the tests)")
    ap.add_argument("--scheduler", help="a Dask scheduler's address (default: a LocalCluster)")
    ap.add_argument("--plot", default="dask_parameter_sweep.png")
    args = ap.parse_args()
    main(quick=args.quick, plot=args.plot, scheduler=args.scheduler)
