"""The systems the benchmarks solve, as symode ODESystems (definitions follow
../shared/bench/PROBLEMS.md exactly where a problem is defined there).

Imported by the benchmark modules and by their fresh-process children; it imports
symode and sympy at the top, so a child that times ``import symode`` does so first.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

import symode

t = sp.Symbol("t")

# P1 / P2: Lorenz
LORENZ_PARAMS = np.array([10.0, 28.0, 8.0 / 3.0])
LORENZ_Y0 = np.array([1.0, 1.0, 1.0])

# P3: Lotka–Volterra
LV_PARAMS = np.array([1.5, 1.0, 3.0, 1.0])
LV_Y0 = np.array([1.0, 1.0])

# the 100-state reaction–diffusion chain
RD_N = 100
RD_PARAMS = np.array([0.1, 1.0])  # D, r


def lorenz() -> symode.ODESystem:
    """x' = σ(y − x), y' = x(ρ − z) − y, z' = xy − βz; params (σ, ρ, β)."""
    x, y, z = sp.symbols("x y z")
    s, r, b = sp.symbols("sigma rho beta")
    return symode.ODESystem(
        [s * (y - x), x * (r - z) - y, x * y - b * z], states=[x, y, z], params=[s, r, b], t=t
    )


def lotka_volterra() -> symode.ODESystem:
    """x' = a x − b x y, y' = c x y − d y; params (a, b, c, d)."""
    x, y = sp.symbols("x y")
    a, b, c, d = sp.symbols("a b c d")
    return symode.ODESystem(
        [a * x - b * x * y, c * x * y - d * y], states=[x, y], params=[a, b, c, d], t=t
    )


def reaction_diffusion(n: int = RD_N) -> symode.ODESystem:
    """A 1-D Fisher–KPP chain: u_i' = D(u_{i-1} − 2u_i + u_{i+1}) + r u_i(1 − u_i).

    Zero-flux (Neumann) ends: the ghost values are u_{-1} = u_0 and u_n = u_{n-1}.
    Params (D, r).
    """
    u = sp.symbols(f"u0:{n}")
    D, r = sp.symbols("D r")
    rhs = []
    for i in range(n):
        left = u[i - 1] if i > 0 else u[0]
        right = u[i + 1] if i < n - 1 else u[n - 1]
        rhs.append(D * (left - 2 * u[i] + right) + r * u[i] * (1 - u[i]))
    return symode.ODESystem(rhs, states=list(u), params=[D, r], t=t)


def rd_y0(n: int = RD_N) -> np.ndarray:
    """A front: u = 1 on the left fifth, a small seed elsewhere."""
    x = np.linspace(0.0, 1.0, n)
    return np.where(x < 0.2, 1.0, 0.01)


SYSTEMS = {
    "lotka_volterra": (lotka_volterra, LV_Y0, LV_PARAMS, np.linspace(0.0, 10.0, 101)),
    "lorenz": (lorenz, LORENZ_Y0, LORENZ_PARAMS, np.linspace(0.0, 20.0, 2001)),
    "reaction_diffusion_100": (
        reaction_diffusion,
        rd_y0(),
        RD_PARAMS,
        np.linspace(0.0, 10.0, 101),
    ),
}
