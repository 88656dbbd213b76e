"""Step-loop buffers that live in the stack frame of the loop that uses them.

The step loop's arrays (the stages k, the state z and the stage inputs) are small and
their sizes are compile-time constants for a literal kind and method. Allocated on the
heap, every store to one of them may alias every other array as far as LLVM knows, so
the loop reloads its inputs from memory after each store. Allocated with ``alloca`` in
the loop's own function (and indexed by constants once the stage loops unroll), LLVM
promotes them to registers, as in a hand-written stepper whose state is in scalars:
on Lorenz with RK4 this took the engine from 1.4x to 1.1x the hand-written loop.

Buffers over ``MAX_LOCAL_BYTES`` (large systems, sensitivities) are the caller's heap
arrays instead (the stack of a worker thread is small): the loop then works in them
directly. The loop itself allocates nothing, so it can be compiled without reference
counting.
"""

import llvmlite.ir as llir
from numba.core import cgutils, types
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

MAX_LOCAL_BYTES = 4096


def _local_array(context, builder, arrty, dims, fallback):
    """An array of type ``arrty`` and constant shape ``dims``: on the stack when small,
    else the caller's ``fallback`` array (borrowed)."""
    size = 1
    for d in dims:
        size *= d
    ll = context.get_data_type(arrty.dtype)
    itemsize = context.get_abi_sizeof(ll)
    if size * itemsize > MAX_LOCAL_BYTES:
        return impl_ret_borrowed(context, builder, arrty, fallback)
    buf = cgutils.alloca_once(builder, llir.ArrayType(ll, max(size, 1)))
    ary = make_array(arrty)(context, builder)
    strides = []
    acc = itemsize
    for d in reversed(dims):
        strides.insert(0, context.get_constant(types.intp, acc))
        acc *= d
    populate_array(
        ary,
        data=builder.bitcast(buf, ll.as_pointer()),
        shape=[context.get_constant(types.intp, d) for d in dims],
        strides=strides,
        itemsize=context.get_constant(types.intp, itemsize),
        meminfo=None,
    )
    return ary._getvalue()


def local_array_intrinsic(shape_of):
    """An intrinsic ``f(kind, method, fallback)`` returning an array of shape
    ``shape_of(kind, method)`` (kind and method literal ints) and fallback's type,
    allocated in the caller's stack frame when small; otherwise (too large, or the
    shape not known at compile time: ``shape_of`` returns None, as in the generic
    engine) ``fallback`` itself, a C-contiguous array of that shape (or larger) that
    the caller owns. Only for functions that keep the array to themselves (a stack
    array dies with their frame)."""

    @intrinsic(prefer_literal=True)
    def local(typingctx, kind, method, fallback):
        if not (isinstance(fallback, types.Array) and fallback.layout == "C"):
            return None
        dims = None
        if isinstance(kind, types.IntegerLiteral) and isinstance(method, types.IntegerLiteral):
            dims = shape_of(kind.literal_value, method.literal_value)
        if dims is not None:
            dims = tuple(int(d) for d in dims)
            if len(dims) != fallback.ndim:
                return None

        def codegen(context, builder, sig, args):
            if dims is None:
                return impl_ret_borrowed(context, builder, fallback, args[2])
            return _local_array(context, builder, fallback, dims, args[2])

        return fallback(kind, method, fallback), codegen

    return local
