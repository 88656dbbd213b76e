"""The numba mechanism the generic engine rests on (docs/architecture.md, "Two tiers").

numba marks first-class function types experimental. symode builds them inside numba
from kernel addresses (``kernels/dynamics.py``: the FunctionType data model's
``c_addr``/``py_addr``/``jit_addr`` fields) that it reads with numba's
``_get_wrapper_address``/``_get_jit_address``. These tests fail, with a message that
says what changed, if a numba upgrade moves any of it; pyproject.toml bounds numba to
the versions checked here.
"""

import numba
import numpy as np
from numba import njit, types
from numba.core import datamodel
from numba.experimental import function_type
from symode.kernels import dynamics


def test_function_type_data_model_has_the_fields_symode_fills():
    sig = dynamics.kernel_signatures(types.float64)["rhs"]
    model = datamodel.default_manager.lookup(types.FunctionType(sig))
    assert tuple(model._fields) == ("c_addr", "py_addr", "jit_addr")


def test_address_helpers_exist_and_return_addresses():
    @njit
    def twice(t, y, p, out, work):
        out[0] = 2.0 * y[0]

    sig = dynamics.kernel_signatures(types.float64)["rhs"]
    twice.compile(sig.args)
    assert function_type._get_wrapper_address(twice, sig) > 0
    assert function_type._get_jit_address(twice, sig) > 0


@njit
def _call_rhs_row(addr, sizes, y, p, out):
    dyn = dynamics.record(addr, sizes, y)
    dynamics.rhs_row(dyn, 0.0, y, p, out, 1)  # row 1 of out
    return dynamics.n_states(dyn)


def test_a_kernel_called_through_its_addresses(tmp_path):
    """The record built from addresses calls the kernel (native address, raw pointers
    to the row the engine means, the record's scratch) for both dtypes, with run-time
    sizes."""

    @njit
    def affine(t, y, p, out, work):
        work[0] = p[0] * y[0]  # the scratch is the kernel's to use
        out[0] = work[0] + p[1]

    for dtype in (np.float64, np.float32):
        sig = dynamics.kernel_signatures(numba.from_dtype(np.dtype(dtype)))["rhs"]
        affine.compile(sig.args)
        addr = np.zeros(2 * len(dynamics.KERNELS), np.int64)
        slot = dynamics.SLOT["rhs"]
        addr[2 * slot] = function_type._get_wrapper_address(affine, sig)
        addr[2 * slot + 1] = function_type._get_jit_address(affine, sig)
        sizes = np.zeros(dynamics.N_SIZES, np.int64)
        sizes[dynamics.Z_N], sizes[dynamics.Z_NP], sizes[dynamics.Z_NW] = 1, 2, 1
        out = np.zeros((2, 1), dtype)
        # params in the state's dtype (the contract: float32 end to end)
        n = _call_rhs_row(addr, sizes, np.array([3.0], dtype), np.array([2.0, 0.5], dtype), out)
        assert n == 1 and out[1, 0] == 6.5 and out[0, 0] == 0.0
