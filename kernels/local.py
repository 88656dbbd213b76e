"""Step-loop buffers that live in the stack frame of the loop that uses them.

The step loop's arrays (the stages k, the state z and the stage inputs) are small and
their sizes are compile-time constants for a literal kind and method. Allocated on the
heap, every store to one of them may alias every other array as far as LLVM knows, so
the loop reloads its inputs from memory after each store. Allocated with ``alloca`` in
the loop's own function (and indexed by constants once the stage loops unroll), LLVM
promotes them to registers, as in a hand-written stepper whose state is in scalars:
on Lorenz with RK4 this took the engine from 1.4x to 1.1x the hand-written loop.

Buffers over ``MAX_LOCAL_BYTES`` (large systems, sensitivities) come from the heap,
as ``np.empty`` would give them: the stack of a worker thread is small.
"""

import llvmlite.ir as llir
from numba.core import cgutils, types
from numba.extending import intrinsic
from numba.np.arrayobj import _empty_nd_impl, make_array, populate_array

MAX_LOCAL_BYTES = 4096


def _local_array(context, builder, arrty, dims):
    """An array of type ``arrty`` and constant shape ``dims``: on the stack when small."""
    size = 1
    for d in dims:
        size *= d
    ll = context.get_data_type(arrty.dtype)
    itemsize = context.get_abi_sizeof(ll)
    if size * itemsize > MAX_LOCAL_BYTES:
        shapes = [context.get_constant(types.intp, d) for d in dims]
        return _empty_nd_impl(context, builder, arrty, shapes)._getvalue()
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
    """An intrinsic ``f(kind, method, like)`` returning an empty array of like's dtype
    and shape ``shape_of(kind, method)`` (kind and method literal ints), allocated in
    the caller's stack frame when small. Only for functions that keep the array to
    themselves (it dies with their frame)."""

    @intrinsic(prefer_literal=True)
    def local(typingctx, kind, method, like):
        if not (
            isinstance(kind, types.IntegerLiteral)
            and isinstance(method, types.IntegerLiteral)
            and isinstance(like, types.Array)
        ):
            return None
        dims = tuple(int(d) for d in shape_of(kind.literal_value, method.literal_value))
        arrty = types.Array(like.dtype, len(dims), "C")

        def codegen(context, builder, sig, args):
            return _local_array(context, builder, arrty, dims)

        return arrty(kind, method, like), codegen

    return local
