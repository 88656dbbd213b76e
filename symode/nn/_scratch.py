"""``scratch(work, like, size)`` for the MLP modules' kernels: the caller's ``work``, or
a new array when a Python call gave none. A numba overload, so its two cases are
chosen by type at compile time (an ``if work is None`` in the kernel cannot be: numba
types both branches when work is a pointer). numba compiles it per process and
signature in microseconds; it lives apart from ``_kernels`` so that
``compile_events``' "nn" count is the shared kernels' compiles alone."""

import numpy as np
from numba import types
from numba.extending import overload


def scratch(work, like, size):
    raise TypeError("scratch runs only inside compiled kernels")


@overload(scratch, inline="always")
def _scratch(work, like, size):
    if work is None or isinstance(work, (types.NoneType, types.Omitted)):
        return lambda work, like, size: np.empty(size, like.dtype)
    return lambda work, like, size: work
