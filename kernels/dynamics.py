"""How the engine reaches a system's kernels: the dynamics record ``dyn``.

One engine source, two tiers (docs/architecture.md, "Two tiers"):

- **generic** (this module as installed in ``symode.kernels``): the engine is compiled
  once per machine for every system. A system's kernels arrive as first-class
  functions (numba ``FunctionType``) over raw pointers, built inside the entry point
  from an int64 array of their addresses (``ModelEngine.kernel_addresses``), and the sizes
  arrive at run time: ``dyn = (kernels, sizes)``;
- **specialized** (a copy of the engine next to one system's generated ``_dynamics``
  module, ``compile(specialize=True)``): the same accessors below call that module's
  array kernels directly and return its sizes as constants, so numba inlines the
  kernels and unrolls the loops over the state, as in a hand-written solver.

Every engine function calls kernels and reads sizes only through the accessors here
(``rhs_row(dyn, ...)``, ``n_states(dyn)``): a tier is a choice made in this one file.

Why raw pointers: a first-class call passes each array as its whole descriptor
(pointer, shape, strides, owner: seven or more words), and one such call of Lorenz's
right-hand side cost 26 ns against 8.7 ns with three pointers (measured: 10⁷ calls).
The generated kernels index ``y[i]``, ``out[i]``, which numba compiles for arrays and
pointers alike; the accessors pass pointers to the rows and offsets the engine means.
"""

import hashlib

import llvmlite.ir as llir
import numpy as np
from numba import types
from numba.core import cgutils
from numba.core.typing import signature
from numba.extending import intrinsic, overload

try:  # present only in a specialized copy, next to one system's kernels
    from . import _dynamics as SYSTEM
except ImportError:
    SYSTEM = None

SPECIALIZED = SYSTEM is not None

# the generic record's kernels (names in the generated module), in slot order
KERNELS = (
    "rhs",
    "adjoint",
    "jvp",
    "vjp",
    "running",
    "running_grad",
    "observation",
    "observation_grad",
)
SLOT = {name: i for i, name in enumerate(KERNELS)}
# sizes: states, params, data placeholders, whether the loss has a running cost, the
# length of the kernels' scratch ``work``
Z_N, Z_NP, Z_ND, Z_COST, Z_NW = 0, 1, 2, 3, 4
N_SIZES = 5

# (with reference counting: an accessor that returns an array, as ``record`` does, must
# hand its caller a new reference)
INLINE = {"fastmath": {"contract"}, "error_model": "numpy"}


def kernel_signatures(dtype):
    """The numba signature of each kernel of the generic record for states of ``dtype``
    (a numba float type): pointers to the state's dtype for states, params (an MLP's
    weights: float32 end to end when asked), stage values and their scratch; to float64
    for data, the adjoint's cotangents and the parameter gradients. Every
    kernel ends with ``work``, the caller's scratch of ``sizes[Z_NW]`` values (an MLP's
    hidden activations; unused by symbolic systems), one per trajectory."""
    f8 = types.float64
    v = types.CPointer(dtype)
    v8 = types.CPointer(f8)
    void = types.void
    return {
        "rhs": signature(void, f8, v, v, v, v),  # (t, y, p, out, work)
        "adjoint": signature(void, f8, v, v, v, v, v),  # (t, y, p, λ, out, work)
        "jvp": signature(void, f8, v, v, v, v, v, v),  # (t, y, p, v, w, out, work)
        "vjp": signature(void, f8, v, v, v8, v8, v8, v),  # (t, y, p, a, out_y, out_p, work)
        "running": signature(f8, f8, v, v, v),  # (t, y, p, work)
        "running_grad": signature(void, f8, v, v, v, v, v),  # (t, y, p, out_y, out_p, work)
        "observation": signature(f8, v, v8, v, v),  # (y, d, p, work)
        "observation_grad": signature(void, v, v8, v, v8, v8, v),  # (y, d, p, out_y, out_p, work)
    }


@intrinsic
def _kernels(typingctx, addr, like):
    """The tuple of first-class kernels whose (C wrapper, native) addresses are
    addr[2i], addr[2i + 1], typed for states like ``like``; calls go through the native
    address (numba's own calling convention, no Python)."""
    if not isinstance(like, types.Array):
        return None
    sigs = kernel_signatures(like.dtype)
    fntys = [types.FunctionType(sigs[name]) for name in KERNELS]
    tup = types.Tuple(fntys)

    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        vp = context.get_value_type(types.voidptr)
        vals = []
        for i, fnty in enumerate(fntys):
            s = cgutils.create_struct_proxy(fnty)(context, builder)
            c_addr = builder.load(builder.gep(arr.data, [llir.Constant(llir.IntType(64), 2 * i)]))
            j_addr = builder.load(
                builder.gep(arr.data, [llir.Constant(llir.IntType(64), 2 * i + 1)])
            )
            s.c_addr = builder.inttoptr(c_addr, vp)
            s.py_addr = llir.Constant(vp, None)
            s.jit_addr = builder.inttoptr(j_addr, vp)
            vals.append(s._getvalue())
        return context.make_tuple(builder, tup, vals)

    return tup(addr, like), codegen


@intrinsic
def ptr(typingctx, arr, offset):
    """&arr[offset] of a C-contiguous 1-D array, as a raw pointer (no bounds check)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C"):
        return None

    def codegen(context, builder, sig, args):
        a = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.gep(a.data, [args[1]])

    return types.CPointer(arr.dtype)(arr, types.intp), codegen


@intrinsic
def row_ptr(typingctx, arr, r, o):
    """&arr[r, o] of a C-contiguous 2-D array, as a raw pointer (no bounds check)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2 and arr.layout == "C"):
        return None

    def codegen(context, builder, sig, args):
        a = context.make_array(sig.args[0])(context, builder, args[0])
        ncols = cgutils.unpack_tuple(builder, a.shape, 2)[1]
        index = builder.add(builder.mul(args[1], ncols), args[2])
        return builder.gep(a.data, [index])

    return types.CPointer(arr.dtype)(arr, types.intp, types.intp), codegen


def record(addr, sizes, like):
    """The dynamics record for an entry point: ``(kernels, sizes, work)`` in the generic
    tier, ``(sizes, work)`` in the specialized one, where ``work`` is the kernels'
    scratch (dtype of ``like``). Built per trajectory (an ensemble builds one per
    member, in its thread), so that no two calls share a scratch array."""
    raise TypeError("record runs only inside compiled engine code")


@overload(record, jit_options=INLINE)
def _record(addr, sizes, like):
    if SPECIALIZED:
        nw = max(SYSTEM.N_WORK, 1)
        return lambda addr, sizes, like: (sizes, np.empty(nw, like.dtype))
    return lambda addr, sizes, like: (
        _kernels(addr, like),
        sizes,
        np.empty(max(sizes[Z_NW], 1), like.dtype),
    )


def _size(index, constant):
    def accessor(dyn):
        raise TypeError("size accessors run only inside compiled engine code")

    # a call, not inlined in numba's IR: LLVM inlines it all the same (P1-P3 unchanged),
    # and numba no longer copies and types its body at each of the engine's call sites
    @overload(accessor, jit_options=INLINE)
    def _accessor(dyn):
        if SPECIALIZED:
            value = constant()
            return lambda dyn: value
        return lambda dyn: dyn[1][index]

    return accessor


n_states = _size(Z_N, lambda: SYSTEM.N_STATES)
n_params = _size(Z_NP, lambda: SYSTEM.N_PARAMS)
has_running_cost = _size(Z_COST, lambda: SYSTEM.HAS_RUNNING_COST)


def _accessor(name, doc, generic, specialized):
    """An engine-side kernel call ``name(dyn, *args)``: in a specialized copy
    ``specialized(dyn, *args)``, which calls the system's array kernel of that name; in
    the generic tier ``generic(dyn, *args)``, which calls the record's pointer kernel.
    Both pass the record's scratch as the kernel's last argument."""

    def accessor(dyn, *args):
        raise TypeError(f"{name} runs only inside compiled engine code")

    # not inlined in numba's IR (its inliner takes no *args); LLVM inlines the wrapper
    @overload(accessor, jit_options=INLINE)
    def _impl(dyn, *args):
        return specialized(getattr(SYSTEM, name)) if SPECIALIZED else generic

    accessor.__name__ = name
    accessor.__doc__ = doc
    return accessor


Z = 0  # offset 0


def _rhs(dyn, *args):
    t, y, p, out, r = args
    dyn[0][0](t, ptr(y, Z), ptr(p, Z), row_ptr(out, r, Z), ptr(dyn[2], Z))


def _adjoint(dyn, *args):
    t, y, p, z, zo, out, r, o = args
    dyn[0][1](t, ptr(y, Z), ptr(p, Z), ptr(z, zo), row_ptr(out, r, o), ptr(dyn[2], Z))


def _jvp(dyn, *args):
    t, y, p, z, vo, w, out, r, o = args
    dyn[0][2](t, ptr(y, Z), ptr(p, Z), ptr(z, vo), ptr(w, Z), row_ptr(out, r, o), ptr(dyn[2], Z))


def _vjp(dyn, *args):
    t, y, p, a, out_y, out_p = args
    dyn[0][3](t, ptr(y, Z), ptr(p, Z), ptr(a, Z), ptr(out_y, Z), ptr(out_p, Z), ptr(dyn[2], Z))


def _running(dyn, *args):
    t, y, p = args
    return dyn[0][4](t, ptr(y, Z), ptr(p, Z), ptr(dyn[2], Z))


def _running_grad(dyn, *args):
    t, y, p, out_y, out_p = args
    dyn[0][5](t, ptr(y, Z), ptr(p, Z), ptr(out_y, Z), ptr(out_p, Z), ptr(dyn[2], Z))


def _observation(dyn, *args):
    y, d, p = args
    return dyn[0][6](ptr(y, Z), ptr(d, Z), ptr(p, Z), ptr(dyn[2], Z))


def _observation_grad(dyn, *args):
    y, d, p, out_y, out_p = args
    dyn[0][7](ptr(y, Z), ptr(d, Z), ptr(p, Z), ptr(out_y, Z), ptr(out_p, Z), ptr(dyn[2], Z))


# the specialized tier's calls: the system's array kernel, the record's scratch last
def _spec_rhs(k):
    def call(dyn, *args):
        t, y, p, out, r = args
        k(t, y, p, out, r, dyn[1])

    return call


def _spec_adjoint(k):
    def call(dyn, *args):
        t, y, p, z, zo, out, r, o = args
        k(t, y, p, z, zo, out, r, o, dyn[1])

    return call


def _spec_jvp(k):
    def call(dyn, *args):
        t, y, p, z, vo, w, out, r, o = args
        k(t, y, p, z, vo, w, out, r, o, dyn[1])

    return call


def _spec_vjp(k):
    def call(dyn, *args):
        t, y, p, a, out_y, out_p = args
        k(t, y, p, a, out_y, out_p, dyn[1])

    return call


def _spec_running(k):
    def call(dyn, *args):
        t, y, p = args
        return k(t, y, p, dyn[1])

    return call


def _spec_running_grad(k):
    def call(dyn, *args):
        t, y, p, out_y, out_p = args
        k(t, y, p, out_y, out_p, dyn[1])

    return call


def _spec_observation(k):
    def call(dyn, *args):
        y, d, p = args
        return k(y, d, p, dyn[1])

    return call


def _spec_observation_grad(k):
    def call(dyn, *args):
        y, d, p, out_y, out_p = args
        k(y, d, p, out_y, out_p, dyn[1])

    return call


rhs_row = _accessor("rhs_row", "(dyn, t, y, p, out, r): out[r, :n] = f(t, y, p).", _rhs, _spec_rhs)
adjoint_row = _accessor(
    "adjoint_row",
    "(dyn, t, y, p, z, zo, out, r, o): out[r, o:o+n+q] = the adjoint's right-hand side "
    "for λ = z[zo:zo+n], -λᵀ∂f/∂(y, p) (the running cost is the caller's: running_grad).",
    _adjoint,
    _spec_adjoint,
)
jvp_row = _accessor(
    "jvp_row",
    "(dyn, t, y, p, z, vo, w, out, r, o): out[r, o:o+n] = (∂f/∂y) z[vo:vo+n] + (∂f/∂p) w.",
    _jvp,
    _spec_jvp,
)
vjp = _accessor("vjp", "(dyn, t, y, p, a, out_y, out_p): aᵀ∂f/∂y, aᵀ∂f/∂p.", _vjp, _spec_vjp)
running = _accessor("running", "(dyn, t, y, p): the running cost g.", _running, _spec_running)
running_grad = _accessor(
    "running_grad",
    "(dyn, t, y, p, out_y, out_p): ∂g/∂y, ∂g/∂p.",
    _running_grad,
    _spec_running_grad,
)
observation = _accessor(
    "observation", "(dyn, y, d, p): the observation cost φ.", _observation, _spec_observation
)
observation_grad = _accessor(
    "observation_grad",
    "(dyn, y, d, p, out_y, out_p): ∂φ/∂y, ∂φ/∂p.",
    _observation_grad,
    _spec_observation_grad,
)


# -- an ensemble member as a call of the single-trajectory entry ----------------------------
# An ensemble entry's parallel loop calls the single-trajectory entry once per member. A
# direct call links that entry's code into the ensemble's module, and LLVM optimizes it all
# again: the checkpoint gradient's ensemble took 17.7 s to compile after its single entry
# had taken 60 s (2 cores, numba 0.68). In the generic tier the loop instead calls the
# single entry's compiled code through its address (``ModelEngine``: ``single`` =
# [address, signature key, mismatch flag]), as first-class kernels are called: one compile
# of each mode serves both. The specialized tier calls it directly (its own copy).


def signature_key(argtypes) -> int:
    """A stable int64 fingerprint of a tuple of numba types: the Python side and the
    compiled loop each compute it for the single entry's arguments, and the loop calls
    through the address only when they agree (a mismatch would call code compiled for
    other types)."""
    digest = hashlib.blake2b(repr(tuple(argtypes)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


@intrinsic
def _call_native(typingctx, address, key, args):
    """Call the numba-compiled function at ``address`` (numba's calling convention, no
    return value) with the tuple ``args``, if ``key`` is their types' signature_key;
    returns whether it did. An exception raised there propagates as from a direct call."""
    if not isinstance(args, types.BaseTuple):
        return None
    argtypes = tuple(args.types)
    want = signature_key(argtypes)

    def codegen(context, builder, sig, llargs):
        addr, k, tup = llargs
        ok = builder.icmp_signed("==", k, llir.Constant(k.type, want))
        with builder.if_then(ok, likely=True):
            values = [builder.extract_value(tup, i) for i in range(len(argtypes))]
            fnty = context.call_conv.get_function_type(types.none, argtypes)
            fn = builder.inttoptr(addr, fnty.as_pointer())
            status, _ = context.call_conv.call_function(builder, fn, types.none, argtypes, values)
            with cgutils.if_unlikely(builder, status.is_error):
                context.call_conv.return_status_propagate(builder, status)
        return ok

    return types.boolean(address, key, args), codegen


def call_single(entry, single, args):
    """``entry(*args)`` for one ensemble member: through ``single``'s address in the
    generic tier (setting single[2] = 1 if the types disagree, and calling nothing),
    directly in a specialized copy."""
    raise TypeError("call_single runs only inside compiled engine code")


# inlined in numba's IR: a dispatcher passed to a compiled call becomes a first-class
# function value holding this process's addresses, which numba refuses to cache
@overload(call_single, inline="always", jit_options=INLINE)
def _call_single(entry, single, args):
    if SPECIALIZED:

        def direct(entry, single, args):
            entry(*args)

        return direct

    def through_address(entry, single, args):
        if not _call_native(single[0], single[1], args):
            single[2] = 1

    return through_address
