"""How the engine reaches a system's kernels: the dynamics record ``dyn``.

One engine source, two tiers (docs/architecture.md, "Two tiers"):

- **generic** (this module as installed in ``symode.kernels``): the engine is compiled
  once per machine for every system. A system's kernels arrive as first-class
  functions (numba ``FunctionType``), built inside the entry point from an int64 array
  of their addresses (``kernel_addresses`` on the Python side), and the sizes arrive at
  run time: ``dyn = (kernels, sizes)``;
- **specialized** (a copy of the engine next to one system's generated ``_dynamics``
  module, ``compile(specialize=True)``): the same accessors below call that module's
  kernels directly and return its sizes as constants, so numba inlines the kernels and
  unrolls the loops over the state, as in a hand-written solver.

Every engine function calls kernels and reads sizes only through the accessors here
(``rhs_row(dyn, ...)``, ``n_states(dyn)``): a tier is a choice made in this one file.
The kernel signatures (``kernel_signatures``) are the contract between the printer and
the generic engine; docs/architecture.md describes them.
"""

import llvmlite.ir as llir
from numba import types
from numba.core import cgutils
from numba.core.typing import signature
from numba.extending import intrinsic, overload

try:  # present only in a specialized copy, next to one system's kernels
    from . import _dynamics as SYSTEM
except ImportError:
    SYSTEM = None

SPECIALIZED = SYSTEM is not None

# the kernels of the record, in slot order
KERNELS = (
    "rhs_row",
    "adjoint_row",
    "jvp_row",
    "vjp",
    "running",
    "running_grad",
    "observation",
    "observation_grad",
)
SLOT = {name: i for i, name in enumerate(KERNELS)}
# sizes: states, params, data placeholders, whether the loss has a running cost
Z_N, Z_NP, Z_ND, Z_COST = 0, 1, 2, 3
N_SIZES = 4

# (with reference counting: an accessor that returns an array, as ``record`` does, must
# hand its caller a new reference)
INLINE = {"fastmath": {"contract"}, "error_model": "numpy"}


def kernel_signatures(dtype):
    """The numba signature of each kernel for states of ``dtype`` (a numba float type):
    params, times and the adjoint's cotangents are float64."""
    f8, i8, D = types.float64, types.int64, dtype
    v = types.Array(D, 1, "C")
    m = types.Array(D, 2, "C")
    v8 = types.Array(f8, 1, "C")
    return {
        "rhs_row": signature(types.void, f8, v, v8, m, i8),
        "adjoint_row": signature(types.void, f8, v, v8, v, i8, m, i8, i8),
        "jvp_row": signature(types.void, f8, v, v8, v, i8, v, m, i8, i8),
        "vjp": signature(types.void, f8, v, v8, v8, v8, v8),
        "running": signature(f8, f8, v, v8),
        "running_grad": signature(types.void, f8, v, v8, v, v),
        "observation": signature(f8, v, v8, v8),
        "observation_grad": signature(types.void, v, v8, v8, v8, v8),
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


def record(addr, sizes, like):
    """The dynamics record for an entry point: ``(kernels, sizes)`` in the generic
    tier, ``sizes`` (unused) in the specialized one."""
    raise TypeError("record runs only inside compiled engine code")


@overload(record, jit_options=INLINE)
def _record(addr, sizes, like):
    if SPECIALIZED:
        return lambda addr, sizes, like: sizes
    return lambda addr, sizes, like: (_kernels(addr, like), sizes)


def _size(index, constant):
    def accessor(dyn):
        raise TypeError("size accessors run only inside compiled engine code")

    @overload(accessor, inline="always", jit_options=INLINE)
    def _accessor(dyn):
        if SPECIALIZED:
            value = constant()
            return lambda dyn: value
        return lambda dyn: dyn[1][index]

    return accessor


n_states = _size(Z_N, lambda: SYSTEM.N_STATES)
n_params = _size(Z_NP, lambda: SYSTEM.N_PARAMS)
has_running_cost = _size(Z_COST, lambda: SYSTEM.HAS_RUNNING_COST)


def _kernel(name):
    """The accessor ``name(dyn, *args)``: the system's kernel ``name``."""
    slot = SLOT[name]

    def accessor(dyn, *args):
        raise TypeError(f"{name} runs only inside compiled engine code")

    # not inlined in numba's IR (its inliner takes no *args); LLVM inlines the wrapper
    @overload(accessor, jit_options=INLINE)
    def _accessor(dyn, *args):
        if SPECIALIZED:
            kernel = getattr(SYSTEM, name)
            return lambda dyn, *args: kernel(*args)
        return lambda dyn, *args: dyn[0][slot](*args)

    accessor.__name__ = name
    return accessor


rhs_row = _kernel("rhs_row")
adjoint_row = _kernel("adjoint_row")
jvp_row = _kernel("jvp_row")
vjp = _kernel("vjp")
running = _kernel("running")
running_grad = _kernel("running_grad")
observation = _kernel("observation")
observation_grad = _kernel("observation_grad")
