"""A million Lorenz systems on one GPU: the bifurcation diagram in ρ.

Lorenz's x' = σ(y − x), y' = x(ρ − z) − y, z' = xy − βz (σ = 10, β = 8/3) from
(1, 1, 1), one trajectory per value of ρ ∈ [0, 250] (10⁶ values in the full run),
classic RK4 at dt = 0.005 to t = 40; z sampled every 0.02 over t ∈ [30, 40]. Each
trajectory's local maxima of z there (or, where it has settled, its last z) go into a
ρ × z histogram: the classic bifurcation diagram — the origin for ρ < 1, the fixed
points C± (z = ρ − 1) up to ρ ≈ 24.74, chaos beyond, and the periodic windows
(ρ ≈ 99.6, ≈ 160, > 214) where the maxima collapse to a few values.

The ensemble runs with ``system.compile(backend="cuda")``, one GPU thread per
trajectory, in chunks (the samples of a chunk live on the GPU; the histogram is reduced
there, so only the counts come back). Without CuPy or a GPU it says so and runs the
same sweep on the CPU backend (numba, all cores): the code is the same, only the array
module differs.

Run:  python examples/gpu_parameter_sweep.py            (10⁶ trajectories)
      python examples/gpu_parameter_sweep.py --quick    (400 trajectories, the tests)
      --cpu: the CPU backend even where a GPU is present (the comparison; the full
      run's 8·10⁹ RK4 steps take minutes on a many-core CPU, an hour on two cores)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import sympy as sp

import symode
from symode.cuda import CudaUnavailableError

SIGMA, BETA = 10.0, 8.0 / 3.0
DT, T_END = 0.005, 40.0
T_SAMPLES = np.linspace(30.0, 40.0, 501)  # every 0.02
RHO_MAX = 250.0
Z_BINS = 600


def lorenz_system() -> symode.ODESystem:
    t = sp.Symbol("t")
    x, y, z = sp.symbols("x y z")
    sigma, rho, beta = sp.symbols("sigma rho beta")
    return symode.ODESystem(
        [sigma * (y - x), x * (rho - z) - y, x * y - beta * z],
        states=[x, y, z],
        params=[sigma, rho, beta],
        t=t,
    )


def compile_model(cache_dir=None, cpu: bool = False):
    """The CUDA model, or (no CuPy, no GPU, or ``cpu``) the numba one; and the array
    module its results live in."""
    system = lorenz_system()
    if not cpu:
        try:
            model = system.compile(backend="cuda", cache_dir=cache_dir)
            return model, model.xp, "cuda"
        except CudaUnavailableError as err:
            print(f"no GPU backend here ({err}); running on the CPU backend (numba) instead")
    return system.compile(cache_dir=cache_dir), np, "numba"


def reduce_chunk(xp, Y, rho, z_edges, rho_edges, counts):
    """Per trajectory: z's local maxima over the samples (its last value where it has
    none: a settled trajectory) into the (ρ, z) histogram ``counts``; and z's max and min.
    On the device when xp is CuPy."""
    z = Y[:, :, 2]
    inner = z[:, 1:-1]
    peak = (inner > z[:, :-2]) & (inner >= z[:, 2:])
    settled = ~peak.any(axis=1)
    rows = xp.broadcast_to(rho[:, None], inner.shape)
    r_all = xp.concatenate([rows[peak], rho[settled]])
    z_all = xp.concatenate([inner[peak], z[settled, -1]])
    i = xp.clip(xp.searchsorted(rho_edges, r_all, side="right") - 1, 0, len(rho_edges) - 2)
    j = xp.clip(xp.searchsorted(z_edges, z_all, side="right") - 1, 0, len(z_edges) - 2)
    ok = xp.isfinite(z_all) & (z_all >= z_edges[0]) & (z_all < z_edges[-1])
    flat = i[ok] * (len(z_edges) - 1) + j[ok]
    counts += xp.bincount(flat, minlength=counts.size).reshape(counts.shape)
    return z.max(axis=1), z.min(axis=1)


def main(
    quick: bool = False,
    plot: str | None = "gpu_parameter_sweep.png",
    cache_dir=None,
    progress: bool = True,
    cpu: bool = False,
):
    B = 400 if quick else 1_000_000
    chunk = 400 if quick else 50_000
    rhos = np.linspace(0.0, 30.0 if quick else RHO_MAX, B)
    model, xp, backend = compile_model(cache_dir, cpu)
    where = "GPU" if backend == "cuda" else "CPU"
    print(
        f"backend: {backend} ({where}); {B:,} Lorenz trajectories, ρ ∈ [0, {rhos[-1]:g}], "
        f"classic RK4 dt={DT} to t={T_END}, {T_SAMPLES.size} samples of z over t ∈ [30, 40]"
    )
    rho_edges = np.linspace(0.0, rhos[-1] * (1 + 1e-12), (100 if quick else 1000) + 1)
    z_edges = np.linspace(0.0, 1.7 * rhos[-1] + 20.0, Z_BINS + 1)
    counts = xp.zeros((rho_edges.size - 1, Z_BINS), np.int64)
    z_max = np.empty(B)
    z_min = np.empty(B)
    starts = range(0, B, chunk)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=B, unit="traj", unit_scale=True, desc=f"sweep ({where})")
    t0 = time.perf_counter()
    solve_options = {"method": "rk4", "dt": DT, "t_span": (0.0, T_END), "throw": False}
    if backend == "cuda":
        solve_options["output"] = "cupy"
    for s in starts:
        rho = rhos[s : s + chunk]
        params = np.column_stack([np.full(rho.size, SIGMA), rho, np.full(rho.size, BETA)])
        sol = model.solve([1.0, 1.0, 1.0], T_SAMPLES, params, **solve_options)
        if sol.failed:
            print(f"{len(sol.failed)} trajectories failed, e.g.: {sol.message[sol.failed[0]]}")
        hi, lo = reduce_chunk(
            xp, sol.y, xp.asarray(rho), xp.asarray(z_edges), xp.asarray(rho_edges), counts
        )
        z_max[s : s + rho.size] = hi.get() if hasattr(hi, "get") else hi
        z_min[s : s + rho.size] = lo.get() if hasattr(lo, "get") else lo
        if bar is not None:
            bar.update(rho.size)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    steps = B * T_END / DT
    print(
        f"{seconds:.1f} s ({where}, including the first compile): {B / seconds:,.0f} "
        f"trajectories/s, {steps / seconds / 1e6:,.1f} million RK4 steps/s"
    )
    counts_h = counts.get() if hasattr(counts, "get") else counts
    origin = rhos < 0.5
    print(f"ρ < 0.5: max z over the window {np.abs(z_max[origin]).max():.1e} (the origin)")
    steady = (rhos > 2) & (rhos < 13)
    err = np.abs(z_max[steady] - (rhos[steady] - 1)) / (rhos[steady] - 1)
    print(f"2 < ρ < 13: z settles on ρ − 1 (the fixed points C±) to {err.max():.1e} relative")
    at28 = np.argmin(np.abs(rhos - 28.0))
    print(f"ρ = {rhos[at28]:.2f}: z swings over [{z_min[at28]:.1f}, {z_max[at28]:.1f}] (chaos)")
    if plot:
        _plot(plot, rho_edges, z_edges, counts_h, where)
    return {
        "backend": backend,
        "rho": rhos,
        "z_max": z_max,
        "z_min": z_min,
        "counts": counts_h,
        "seconds": seconds,
    }


def _plot(path, rho_edges, z_edges, counts, where):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 6))
    shown = np.log1p(counts.T.astype(float))
    ax.imshow(
        shown,
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(rho_edges[0], rho_edges[-1], z_edges[0], z_edges[-1]),
    )
    ax.set_xlabel("ρ")
    ax.set_ylabel("local maxima of z, t ∈ [30, 40]")
    ax.set_title(f"Lorenz bifurcation diagram (σ = 10, β = 8/3), {where}")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    print(f"figure: {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="400 trajectories (the tests)")
    parser.add_argument("--cpu", action="store_true", help="the CPU backend even with a GPU")
    parser.add_argument(
        "--plot", default="gpu_parameter_sweep.png", help="figure path ('' for none)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args()
    main(quick=args.quick, plot=args.plot or None, progress=not args.no_progress, cpu=args.cpu)
