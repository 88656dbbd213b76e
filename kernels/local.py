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

Also here, as the other intrinsic that builds arrays by hand: ``packed_views``, the views
of a packed 2-D array (the generic engine's tableau) in one step.
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


class _Index:
    """An intp value being built in LLVM IR, with ``+`` for the layouts' arithmetic."""

    def __init__(self, builder, value):
        self.builder, self.value = builder, value

    def __add__(self, other):
        other = other.value if isinstance(other, _Index) else self.value.type(other)
        return _Index(self.builder, self.builder.add(self.value, other))

    __radd__ = __add__


def packed_views(layout):
    """An intrinsic ``views(packed)`` returning views of a C-contiguous 2-D array as one
    tuple. ``layout(header)`` lists one ``(row, rows, cols)`` per view, from the header
    row's entries ``header(col)`` (ints stored as floats): a 2-D block
    ``packed[row : row + rows, :cols]``, or with ``rows`` None the 1-D
    ``packed[row, :cols]``. The views numpy slicing gives, with their reference
    counts, built in one step: the engine's helpers take a generic tableau's views at
    every call, and numba typed and copied the chain of slicings at each inlined call
    site (about a third of the generic engine's compile time)."""

    @intrinsic
    def views(typingctx, packed):
        if not (isinstance(packed, types.Array) and packed.ndim == 2 and packed.layout == "C"):
            return None
        members = [
            types.Array(packed.dtype, 1 if rows is None else 2, "C" if rows is None else "A")
            for _, rows, _ in layout(lambda col: 0)
        ]

        def codegen(context, builder, sig, args):
            arrty = sig.args[0]
            src = make_array(arrty)(context, builder, args[0])
            intp = context.get_value_type(types.intp)
            itemsize = context.get_abi_sizeof(context.get_data_type(arrty.dtype))
            ncols = builder.extract_value(src.shape, 1)
            row_bytes = builder.mul(ncols, intp(itemsize))

            def header(col):
                value = builder.load(builder.gep(src.data, [intp(col)]))
                return _Index(builder, builder.fptosi(value, intp))

            def llvm(v):
                return v.value if isinstance(v, _Index) else intp(v)

            values = []
            for (row, rows, cols), ty in zip(layout(header), sig.return_type):
                ary = make_array(ty)(context, builder)
                shape = [llvm(cols)] if rows is None else [llvm(rows), llvm(cols)]
                strides = [intp(itemsize)] if rows is None else [row_bytes, intp(itemsize)]
                populate_array(
                    ary,
                    data=builder.gep(src.data, [builder.mul(llvm(row), ncols)]),
                    shape=shape,
                    strides=strides,
                    itemsize=intp(itemsize),
                    meminfo=src.meminfo,
                    parent=src.parent,
                )
                values.append(ary._getvalue())
            tup = context.make_tuple(builder, sig.return_type, values)
            return impl_ret_borrowed(context, builder, sig.return_type, tup)

        return types.Tuple(members)(packed), codegen

    return views
