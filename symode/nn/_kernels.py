"""The MLP's kernels: forward, VJP, JVP, the exact Jacobian trace and Hutchinson's
estimate with its gradient, by hand, allocation-free.

They are inlined into each architecture's generated ``_dynamics`` module
(``symode.nn.mlp``), which holds the architecture as constants (``Arch``) and wraps
these in the dynamics contract's kernels (docs/architecture.md): the engine calls an
MLP exactly as it calls printed SymPy dynamics. ``y``, ``out`` and ``work`` are the
state's dtype (float32 or float64), ``p`` (the weights) and the parameter-side
outputs float64; all of them may be arrays or raw pointers (the generic engine's
record), indexed the same way.

Layer l maps x_l to z_l = W_l x_l + b_l and x_{l+1} = σ_l(z_l); x_0 = [g(y), t] with the
input map g and the time input when present; the output is x_L. W_l is row-major in
p, then b_l. ``work`` holds every layer's x_l and z_l, their tangents dx_l and dz_l
(JVP, traces) and four backward buffers of the widest layer (``Arch``'s offsets).
"""

from collections import namedtuple

import numpy as np
from numba import njit

# Arch: n states; time (1: t is an input); g, the input map's code; L layers; sizes
# (k_0 = n + time, m_0, ..., m_{L-1} = n); acts (σ_l's codes); pw, pb (W_l's and b_l's
# offsets in p); xo, zo, dxo, dzo (the offsets of x_l, z_l, dx_l, dz_l in work); bo
# (the backward buffers: four of width maxw); eo (a probe of n values, trace_grad's basis
# vectors); nwork (work's length)
Arch = namedtuple("Arch", "n time g L sizes acts pw pb xo zo dxo dzo bo maxw eo nwork")

# element-wise functions by code: the activations, the input maps
IDENTITY, TANH, SOFTPLUS, RELU, SIGMOID, SIN, CUBE = range(7)
CODES = {
    "identity": IDENTITY,
    "tanh": TANH,
    "softplus": SOFTPLUS,
    "relu": RELU,
    "sigmoid": SIGMOID,
    "sin": SIN,
    "cube": CUBE,
}

# Compiled and cached once per machine for each argument type (the architecture's type
# is its number of layers; arrays or pointers; float32 or float64), not per
# architecture: a new network compiles only its module's thin wrappers.
KERNEL = {"cache": True, "error_model": "numpy", "fastmath": {"contract"}}


# A layer's dot products: with reassociation allowed LLVM vectorises the sum (a 64-wide
# row: 0.43 µs against 2.7 µs for the serial sum, benchmarks/bench_cnf.py); the order of
# the additions is then LLVM's, the same in every call of the compiled kernel.
DOT = {**KERNEL, "fastmath": {"contract", "reassoc"}}


@njit(**DOT)
def dot(a, ao, stride, b, bo, n):
    """Σᵢ a[ao + i·stride] · b[bo + i] for i < n (arrays or raw pointers)."""
    acc = 0.0
    for i in range(n):
        acc += a[ao + i * stride] * b[bo + i]
    return acc


@njit(**KERNEL)
def _tanh(x):
    """tanh(x) to 2e-15 relative at a third of libm's cost (5 ns instead of 15 ns here:
    the 50 of a 50-unit layer dominate a small network's evaluation): 1 - 2/(e²ˣ + 1)
    for |x| ≥ 0.1 (absolute error ~1e-16, so ≤ 2e-15 relative), the Taylor series to
    x¹⁵ below (the x¹⁷ term is < 1e-20 there)."""
    a = abs(x)
    if a < 0.1:
        x2 = x * x
        p = -929569.0 / 638512875.0
        p = 21844.0 / 6081075.0 + x2 * p
        p = -1382.0 / 155925.0 + x2 * p
        p = 62.0 / 2835.0 + x2 * p
        p = -17.0 / 315.0 + x2 * p
        p = 2.0 / 15.0 + x2 * p
        p = -1.0 / 3.0 + x2 * p
        return x + x * x2 * p
    if a > 20.0:  # e^(2x) overflows the formula's precision: tanh is ±1 to 1e-17
        return 1.0 if x > 0 else -1.0
    return 1.0 - 2.0 / (np.exp(2.0 * x) + 1.0)


@njit(**KERNEL)
def _sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + np.exp(-x))
    e = np.exp(x)
    return e / (1.0 + e)


@njit(**KERNEL)
def act(code, x):
    """σ(x) for the function of ``code``."""
    if code == TANH:
        return _tanh(x)
    if code == SOFTPLUS:  # log(1 + e^x) without overflow
        return max(x, 0.0) + np.log1p(np.exp(-abs(x)))
    if code == RELU:
        return max(x, 0.0)
    if code == SIGMOID:
        return _sigmoid(x)
    if code == SIN:
        return np.sin(x)
    if code == CUBE:
        return x * x * x
    return x


@njit(**KERNEL)
def dact(code, x):
    """σ'(x) (relu: 0 at 0)."""
    if code == TANH:
        th = _tanh(x)
        return 1.0 - th * th
    if code == SOFTPLUS:
        return _sigmoid(x)
    if code == RELU:
        return 1.0 if x > 0.0 else 0.0
    if code == SIGMOID:
        s = _sigmoid(x)
        return s * (1.0 - s)
    if code == SIN:
        return np.cos(x)
    if code == CUBE:
        return 3.0 * x * x
    return 1.0


@njit(**KERNEL)
def dact_at(code, x, s):
    """σ'(x) given s = σ(x) (a layer's stored output): no second tanh or sigmoid."""
    if code == TANH:
        return 1.0 - s * s
    if code == SIGMOID:
        return s * (1.0 - s)
    if code == IDENTITY:
        return 1.0
    return dact(code, x)


@njit(**KERNEL)
def d2act(code, x):
    """σ''(x) (relu: 0)."""
    if code == TANH:
        th = _tanh(x)
        return -2.0 * th * (1.0 - th * th)
    if code == SOFTPLUS:
        s = _sigmoid(x)
        return s * (1.0 - s)
    if code == SIGMOID:
        s = _sigmoid(x)
        return s * (1.0 - s) * (1.0 - 2.0 * s)
    if code == SIN:
        return -np.sin(x)
    if code == CUBE:
        return 6.0 * x
    return 0.0


@njit(**KERNEL)
def forward(A, t, y, p, work):
    """The primal pass: every x_l and z_l into work."""
    x0 = A.xo[0]
    for i in range(A.n):
        work[x0 + i] = act(A.g, y[i])
    if A.time:
        work[x0 + A.n] = t
    for l in range(A.L):
        k = A.sizes[l]
        m = A.sizes[l + 1]
        W = A.pw[l]
        B = A.pb[l]
        xi = A.xo[l]
        zo = A.zo[l]
        xo = A.xo[l + 1]
        code = A.acts[l]
        for r in range(m):
            acc = p[B + r] + dot(p, W + r * k, 1, work, xi, k)
            work[zo + r] = acc
            work[xo + r] = act(code, acc)


@njit(**KERNEL)
def tangent(A, p, w, has_w, work):
    """The tangent pass after ``forward``, from dx_0 in work (the caller's): dz_l =
    W_l dx_l (+ dW_l x_l + db_l from the weights' tangent w when has_w) and dx_{l+1} =
    σ_l'(z_l) dz_l."""
    for l in range(A.L):
        k = A.sizes[l]
        m = A.sizes[l + 1]
        W = A.pw[l]
        B = A.pb[l]
        xi = A.xo[l]
        dxi = A.dxo[l]
        zo = A.zo[l]
        dzo = A.dzo[l]
        dxo = A.dxo[l + 1]
        xo = A.xo[l + 1]
        code = A.acts[l]
        for r in range(m):
            acc = dot(p, W + r * k, 1, work, dxi, k)
            if has_w:
                acc += w[B + r] + dot(w, W + r * k, 1, work, xi, k)
            work[dzo + r] = acc
            work[dxo + r] = dact_at(code, work[zo + r], work[xo + r]) * acc


@njit(**KERNEL)
def input_tangent(A, y, v, vo, work):
    """dx_0 = [g'(y) ⊙ v[vo:vo+n], 0]."""
    dx0 = A.dxo[0]
    for i in range(A.n):
        work[dx0 + i] = dact(A.g, y[i]) * v[vo + i]
    if A.time:
        work[dx0 + A.n] = 0.0


@njit(**KERNEL)
def output(A, work, out, oo):
    """out[oo:oo+n] = x_L."""
    xL = A.xo[A.L]
    for i in range(A.n):
        out[oo + i] = work[xL + i]


@njit(**KERNEL)
def vjp(A, t, y, p, a, ao, sign, out_y, oy, out_p, op, work):
    """out_y[oy:oy+n] = sign · aᵀ∂f/∂y and out_p[op:op+P] = sign · aᵀ∂f/∂θ for the
    cotangent a[ao:ao+n] (backpropagation after a fresh ``forward``)."""
    forward(A, t, y, p, work)
    vjp_after_forward(A, y, p, a, ao, sign, out_y, oy, out_p, op, work)


@njit(**KERNEL)
def vjp_after_forward(A, y, p, a, ao, sign, out_y, oy, out_p, op, work):
    """``vjp`` when work holds a fresh ``forward`` pass (which it leaves there)."""
    bd = A.bo
    bn = A.bo + A.maxw
    last = A.L - 1
    for i in range(A.n):
        s_i = work[A.xo[A.L] + i]
        work[bd + i] = sign * a[ao + i] * dact_at(A.acts[last], work[A.zo[last] + i], s_i)
    for l in range(last, -1, -1):
        k = A.sizes[l]
        m = A.sizes[l + 1]
        W = A.pw[l]
        B = A.pb[l]
        xi = A.xo[l]
        for r in range(m):
            d = work[bd + r]
            out_p[op + B + r] = d
            for c in range(k):
                out_p[op + W + r * k + c] = d * work[xi + c]
        for c in range(k):
            acc = dot(p, W + c, k, work, bd, m)
            if l > 0:
                acc *= dact_at(A.acts[l - 1], work[A.zo[l - 1] + c], work[xi + c])
            work[bn + c] = acc
        bd, bn = bn, bd
    for i in range(A.n):
        out_y[oy + i] = work[bd + i] * dact(A.g, y[i])


@njit(**KERNEL)
def jvp(A, t, y, p, v, vo, w, out, oo, work):
    """out[oo:oo+n] = (∂f/∂y) v[vo:vo+n] + (∂f/∂θ) w."""
    forward(A, t, y, p, work)
    input_tangent(A, y, v, vo, work)
    tangent(A, p, w, True, work)
    xL = A.dxo[A.L]
    for i in range(A.n):
        out[oo + i] = work[xL + i]


@njit(**KERNEL)
def column_tangent(A, y, p, j, work):
    """After ``forward``: the tangent pass along the state's j-th basis vector, so that
    dx_L in work is column j of ∂f/∂y."""
    dx0 = A.dxo[0]
    for i in range(A.n + A.time):
        work[dx0 + i] = 0.0
    work[dx0 + j] = dact(A.g, y[j])
    tangent(A, p, p, False, work)


@njit(**KERNEL)
def jac(A, t, y, p, out, work):
    """out[i, j] = ∂f_i/∂y_j: one tangent pass per column."""
    forward(A, t, y, p, work)
    xL = A.dxo[A.L]
    for j in range(A.n):
        column_tangent(A, y, p, j, work)
        for i in range(A.n):
            out[i, j] = work[xL + i]


@njit(**KERNEL)
def dfdt(A, t, y, p, out, work):
    """out = ∂f/∂t: a tangent pass along the time input (0 without one)."""
    forward(A, t, y, p, work)
    dx0 = A.dxo[0]
    for i in range(A.n):
        work[dx0 + i] = 0.0
    if A.time:
        work[dx0 + A.n] = 1.0
    tangent(A, p, p, False, work)
    xL = A.dxo[A.L]
    for i in range(A.n):
        out[i] = work[xL + i] if A.time else 0.0


@njit(**KERNEL)
def trace(A, t, y, p, work):
    """tr ∂f/∂y, no Jacobian formed. One hidden layer with a linear output, f(y) = W₂σ(W₁
    g(y) + b₁) + b₂: Σₖ σ′(zₖ) Σᵢ W₁[k, i] g′(yᵢ) W₂[i, k]; deeper nets: one tangent pass
    per state, the diagonal entry of each."""
    forward(A, t, y, p, work)
    return trace_after_forward(A, y, p, work)


@njit(**KERNEL)
def trace_after_forward(A, y, p, work):
    """``trace`` when work holds a fresh ``forward`` pass."""
    tr = 0.0
    if A.L == 2 and A.acts[1] == IDENTITY:
        k0 = A.sizes[0]
        m = A.sizes[1]
        W1 = A.pw[0]
        W2 = A.pw[1]
        zo = A.zo[0]
        for r in range(m):
            acc = 0.0
            for i in range(A.n):
                acc += p[W1 + r * k0 + i] * dact(A.g, y[i]) * p[W2 + i * m + r]
            tr += dact_at(A.acts[0], work[zo + r], work[A.xo[1] + r]) * acc
        return tr
    xL = A.dxo[A.L]
    for j in range(A.n):
        column_tangent(A, y, p, j, work)
        tr += work[xL + j]
    return tr


@njit(**KERNEL)
def hutchinson(A, t, y, p, eps, work):
    """Hutchinson's estimate εᵀ(∂f/∂y)ε of the trace for the probe ε (one tangent pass)."""
    forward(A, t, y, p, work)
    return hutchinson_after_forward(A, y, p, eps, 0, work)


@njit(**KERNEL)
def hutchinson_after_forward(A, y, p, eps, eo, work):
    """``hutchinson`` for ε = eps[eo:eo+n] when work holds a fresh ``forward`` pass; the
    tangent J ε stays in work at A.dxo[A.L]."""
    input_tangent(A, y, eps, eo, work)
    tangent(A, p, p, False, work)
    xL = A.dxo[A.L]
    s = 0.0
    for i in range(A.n):
        s += eps[eo + i] * work[xL + i]
    return s


@njit(**KERNEL)
def hutchinson_grad_add(A, t, y, p, eps, eo, scale, out_y, oy, out_p, op, work):
    """out_y[oy:oy+n] += scale · ∂/∂y and out_p[op:op+P] += scale · ∂/∂θ of εᵀ(∂f/∂y)ε
    (ε = eps[eo:eo+n]): the VJP of the tangent pass (reverse over forward), after a
    fresh forward and tangent pass."""
    forward(A, t, y, p, work)
    hutchinson_grad_after_forward(A, y, p, eps, eo, scale, out_y, oy, out_p, op, work)


@njit(**KERNEL)
def hutchinson_grad_after_forward(A, y, p, eps, eo, scale, out_y, oy, out_p, op, work):
    """``hutchinson_grad_add`` when work holds a fresh ``forward`` pass (which it leaves
    there: the tangent and backward passes write other parts of work)."""
    input_tangent(A, y, eps, eo, work)
    tangent(A, p, p, False, work)
    xb = A.bo  # x̄_{l+1}, then x̄_l
    dxb = A.bo + A.maxw  # d̄x_{l+1}, then d̄x_l
    zb = A.bo + 2 * A.maxw
    dzb = A.bo + 3 * A.maxw
    for i in range(A.n):
        work[xb + i] = 0.0  # s depends on the output's tangent only
        work[dxb + i] = eps[eo + i]
    for l in range(A.L - 1, -1, -1):
        k = A.sizes[l]
        m = A.sizes[l + 1]
        W = A.pw[l]
        B = A.pb[l]
        xi = A.xo[l]
        dxi = A.dxo[l]
        zo = A.zo[l]
        dzo = A.dzo[l]
        code = A.acts[l]
        for r in range(m):
            z = work[zo + r]
            s1 = dact_at(code, z, work[A.xo[l + 1] + r])
            work[dzb + r] = s1 * work[dxb + r]
            work[zb + r] = s1 * work[xb + r] + d2act(code, z) * work[dzo + r] * work[dxb + r]
        for r in range(m):
            zr = work[zb + r]
            dzr = work[dzb + r]
            out_p[op + B + r] += scale * zr
            for c in range(k):
                out_p[op + W + r * k + c] += scale * (zr * work[xi + c] + dzr * work[dxi + c])
        for c in range(k):
            ax = dot(p, W + c, k, work, zb, m)
            adx = dot(p, W + c, k, work, dzb, m)
            work[xb + c] = ax
            work[dxb + c] = adx
    for i in range(A.n):
        yi = y[i]
        out_y[oy + i] += scale * (
            dact(A.g, yi) * work[xb + i] + d2act(A.g, yi) * eps[eo + i] * work[dxb + i]
        )


@njit(**KERNEL)
def hutchinson_grad(A, t, y, p, eps, out_y, out_p, work):
    """out_y, out_p = ∂/∂y, ∂/∂θ of εᵀ(∂f/∂y)ε."""
    for i in range(A.n):
        out_y[i] = 0.0
    for q in range(A.pb[A.L - 1] + A.n):
        out_p[q] = 0.0
    hutchinson_grad_add(A, t, y, p, eps, 0, 1.0, out_y, 0, out_p, 0, work)


@njit(**KERNEL)
def trace_grad(A, t, y, p, out_y, out_p, work):
    """∂tr/∂y and ∂tr/∂θ: Σⱼ of Hutchinson's gradient at the basis vectors eⱼ (held in
    work at A.eo)."""
    for i in range(A.n):
        out_y[i] = 0.0
    for q in range(A.pb[A.L - 1] + A.n):
        out_p[q] = 0.0
    trace_grad_add(A, t, y, p, 1.0, out_y, 0, out_p, 0, work)


@njit(**KERNEL)
def trace_grad_add(A, t, y, p, scale, out_y, oy, out_p, op, work):
    """out_y[oy:oy+n] += scale · ∂tr/∂y and out_p[op:op+P] += scale · ∂tr/∂θ."""
    forward(A, t, y, p, work)
    trace_grad_after_forward(A, y, p, scale, out_y, oy, out_p, op, work)


@njit(**KERNEL)
def trace_grad_after_forward(A, y, p, scale, out_y, oy, out_p, op, work):
    """``trace_grad_add`` when work holds a fresh ``forward`` pass: one tangent and one
    backward pass per state, sharing that forward pass."""
    for i in range(A.n):
        work[A.eo + i] = 0.0
    for j in range(A.n):
        work[A.eo + j] = 1.0
        hutchinson_grad_after_forward(A, y, p, work, A.eo, scale, out_y, oy, out_p, op, work)
        work[A.eo + j] = 0.0


@njit(**KERNEL)
def input_vjp_add(A, y, p, a, ao, scale, out, oo, work):
    """out[oo:oo+n] += scale · aᵀ∂f/∂y for the cotangent a[ao:ao+n], after a fresh
    ``forward`` (backpropagation to the input only: no weight gradients)."""
    bd = A.bo
    bn = A.bo + A.maxw
    last = A.L - 1
    for i in range(A.n):
        s_i = work[A.xo[A.L] + i]
        work[bd + i] = a[ao + i] * dact_at(A.acts[last], work[A.zo[last] + i], s_i)
    for l in range(last, -1, -1):
        k = A.sizes[l]
        m = A.sizes[l + 1]
        W = A.pw[l]
        xi = A.xo[l]
        for c in range(k):
            acc = dot(p, W + c, k, work, bd, m)
            if l > 0:
                acc *= dact_at(A.acts[l - 1], work[A.zo[l - 1] + c], work[xi + c])
            work[bn + c] = acc
        bd, bn = bn, bd
    for i in range(A.n):
        out[oo + i] += scale * work[bd + i] * dact(A.g, y[i])


# -- continuous normalizing flows: the augmented state [z, Δ], Δ' = -tr(∂f/∂z) -------------
# (symode.cnf). The flat params are [θ, ε]: the weights, then (Hutchinson's estimator,
# ``hutch``) the probe ε of this trajectory, held fixed through the solve; ε's offset is
# A.pb[A.L - 1] + n, the end of θ.


@njit(**KERNEL)
def cnf_rhs(A, t, y, p, hutch, out, oo, work):
    """out[oo:oo+n] = f(t, z) and out[oo+n] = -tr(∂f/∂z), or -εᵀ(∂f/∂z)ε with ``hutch``."""
    forward(A, t, y, p, work)
    output(A, work, out, oo)
    if hutch:
        out[oo + A.n] = -hutchinson_after_forward(A, y, p, p, A.pb[A.L - 1] + A.n, work)
    else:
        out[oo + A.n] = -trace_after_forward(A, y, p, work)


@njit(**KERNEL)
def cnf_vjp(A, t, y, p, a, ao, sign, out_y, oy, out_p, op, hutch, work):
    """out_y[oy:oy+n+1] = sign · aᵀ∂F/∂[z, Δ] and out_p[op:op+P] = sign · aᵀ∂F/∂[θ, ε] for
    F = [f, -tr] (or [f, -εᵀJε]) and the cotangent a[ao:ao+n+1]: backpropagation of f,
    then the trace's gradients (reverse over forward) scaled by -a_Δ; with ``hutch`` ε's
    gradient -a_Δ (J + Jᵀ)ε as well (exact: the probes are params like any other)."""
    forward(A, t, y, p, work)  # once: every pass below reads it
    vjp_after_forward(A, y, p, a, ao, sign, out_y, oy, out_p, op, work)
    n = A.n
    out_y[oy + n] = 0.0
    scale = -sign * a[ao + n]
    pe = A.pb[A.L - 1] + n  # ε's offset in p: the end of θ
    if not hutch:
        trace_grad_after_forward(A, y, p, scale, out_y, oy, out_p, op, work)
        return
    hutchinson_grad_after_forward(A, y, p, p, pe, scale, out_y, oy, out_p, op, work)
    # ∂(εᵀJε)/∂ε = Jε + Jᵀε: the tangent J ε left in work, then a backward pass of ε
    xL = A.dxo[A.L]
    for i in range(n):
        out_p[op + pe + i] = scale * work[xL + i]
    input_vjp_add(A, y, p, p, pe, scale, out_p, op + pe, work)  # forward values still in work
