"""scipy's stiff methods through the front door (what a new user hit): Radau, BDF and
LSODA with symode's compiled right-hand side and exact Jacobian, dense or sparse;
``symode.solve_ivp`` with a plain Python callable runs scipy unchanged.

Oracles: Robertson (P5) against scipy's own Radau at tight tolerance with a Python
right-hand side and its finite-difference Jacobian; a linear stiff chain against the
matrix exponential; the sparse Jacobian against the dense one."""

import numpy as np
import pytest
import scipy.integrate as si
import scipy.linalg
import sympy as sp

import symode

t = sp.Symbol("t")
IMPLICIT = ("Radau", "BDF", "LSODA")
ROB_P = [0.04, 3e7, 1e4]
ROB_TS = np.array([0.0, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5])


def robertson_py(t, y, k1, k2, k3):
    return [-k1 * y[0] + k3 * y[1] * y[2], k1 * y[0] - k3 * y[1] * y[2] - k2 * y[1] ** 2,
            k2 * y[1] ** 2]  # fmt: skip


@pytest.fixture(scope="module")
def robertson(cache_dir):
    y1, y2, y3 = sp.symbols("y1 y2 y3")
    k1, k2, k3 = sp.symbols("k1 k2 k3")
    system = symode.ODESystem(
        robertson_py(t, [y1, y2, y3], k1, k2, k3), states=[y1, y2, y3], params=[k1, k2, k3]
    )
    return system.compile(cache_dir=cache_dir)


@pytest.fixture(scope="module")
def robertson_ref():
    ref = si.solve_ivp(robertson_py, (0, 1e5), [1.0, 0.0, 0.0], method="Radau",
                       t_eval=ROB_TS, rtol=1e-12, atol=1e-20, args=tuple(ROB_P))  # fmt: skip
    return ref.y.T


@pytest.mark.parametrize("stiff", IMPLICIT)
def test_robertson_matches_a_tight_reference(robertson, robertson_ref, stiff):
    sol = robertson.solve([1.0, 0.0, 0.0], ROB_TS, ROB_P, method=stiff, rtol=1e-6, atol=1e-10)
    assert sol.success and sol.stats["njev"] > 0 and sol.stats["nfev"] > 0
    # rtol 1e-6: the global error is a small multiple of it (y2 ~ 1e-5..1e-8: atol)
    np.testing.assert_allclose(sol.y, robertson_ref, rtol=2e-4, atol=1e-9)
    np.testing.assert_allclose(sol.y.sum(axis=1), 1.0, rtol=1e-6)  # mass is conserved


def test_solve_ivp_front_door(robertson, robertson_ref):
    res = symode.solve_ivp(robertson, (0, 1e5), [1.0, 0.0, 0.0], method="BDF", t_eval=ROB_TS,
                           args=tuple(ROB_P), rtol=1e-6, atol=1e-10)  # fmt: skip
    assert res.success and res.njev > 0 and res.nlu > 0 and res.y.shape == (3, ROB_TS.size)
    np.testing.assert_allclose(res.y.T, robertson_ref, rtol=2e-4, atol=1e-9)


def test_python_callable_runs_through_scipy_unchanged():
    ours = symode.solve_ivp(robertson_py, (0, 100.0), [1.0, 0.0, 0.0], method="LSODA",
                            args=tuple(ROB_P), rtol=1e-8, atol=1e-12)  # fmt: skip
    theirs = si.solve_ivp(robertson_py, (0, 100.0), [1.0, 0.0, 0.0], method="LSODA",
                          args=tuple(ROB_P), rtol=1e-8, atol=1e-12)  # fmt: skip
    np.testing.assert_array_equal(ours.y, theirs.y)
    assert ours.nfev == theirs.nfev


@pytest.fixture(scope="module")
def chain(cache_dir):
    """A linear stiff chain y' = A y, A tridiagonal (diffusion, D = 500) minus a
    decay, 60 states: the sparse path (≥ 50 states, 5% nonzero)."""
    n = 60
    ys = sp.symbols(f"u0:{n}")
    D, k = sp.symbols("D k")
    rhs = [
        D * ((ys[i - 1] if i > 0 else 0) - 2 * ys[i] + (ys[i + 1] if i < n - 1 else 0)) - k * ys[i]
        for i in range(n)
    ]
    return symode.ODESystem(rhs, states=list(ys), params=[D, k]).compile(cache_dir=cache_dir)


@pytest.mark.parametrize("stiff", IMPLICIT)
def test_stiff_chain_matches_the_matrix_exponential(chain, stiff):
    from symode.stiff import use_sparse

    n = chain.system.n_states
    D, k = 500.0, 1.0
    A = D * (np.diag(-2.0 * np.ones(n)) + np.diag(np.ones(n - 1), 1) + np.diag(np.ones(n - 1), -1))
    A -= k * np.eye(n)
    y0 = np.sin(np.linspace(0.0, np.pi, n)) + 0.1
    ts = np.array([0.0, 1e-3, 1e-2, 0.1])
    sol = chain.solve(y0, ts, [D, k], method=stiff, rtol=1e-8, atol=1e-10)
    exact = np.array([scipy.linalg.expm(A * tt) @ y0 for tt in ts])
    np.testing.assert_allclose(sol.y, exact, rtol=0, atol=1e-6)
    assert use_sparse(chain, stiff) == (stiff != "LSODA")


def test_sparse_jacobian_equals_the_dense_one(chain):
    import scipy.sparse as sps

    k = chain.kernels
    n = chain.system.n_states
    y, p = np.linspace(0.1, 1.0, n), np.array([500.0, 1.0])
    dense = np.empty((n, n))
    k.jac(0.0, y, p, dense)
    values = np.empty(len(k.JAC_INDICES))
    k.jac_csr(0.0, y, p, values)
    csr = sps.csr_matrix((values, np.array(k.JAC_INDICES), np.array(k.JAC_INDPTR)), (n, n))
    np.testing.assert_array_equal(csr.toarray(), dense)
    assert csr.nnz == 3 * n - 2


def test_batches_statuses_and_refusals(robertson):
    Y0 = [[1.0, 0.0, 0.0], [0.5, 0.0, 0.5]]
    sol = robertson.solve(Y0, ROB_TS, ROB_P, method="Radau", rtol=1e-6, atol=1e-10)
    assert sol.y.shape == (2, ROB_TS.size, 3) and sol.success
    one = robertson.solve(Y0[1], ROB_TS, ROB_P, method="Radau", rtol=1e-6, atol=1e-10)
    np.testing.assert_array_equal(sol.y[1], one.y)  # each trajectory as alone
    with pytest.raises(symode.IntegrationError, match="max_steps reached"):
        robertson.solve(Y0[0], ROB_TS, ROB_P, method="BDF", max_steps=5)
    failed = robertson.solve(Y0[0], ROB_TS, ROB_P, method="BDF", max_steps=5, throw=False)
    assert failed.status == symode.Status.MAX_STEPS and np.isnan(failed.y[-1]).all()
    with pytest.raises(TypeError, match="float64"):
        robertson.solve(Y0[0], ROB_TS, ROB_P, method="Radau", dtype=np.float32)
    with pytest.raises(ValueError, match="gradients are not available.*dopri5"):
        robertson.vjp(Y0[0], ROB_TS, ROB_P, cotangent=np.ones((ROB_TS.size, 3)), method="LSODA")


def test_explicit_step_limit_suggests_the_stiff_methods(robertson):
    with pytest.raises(symode.IntegrationError, match="method='Radau', 'BDF' or 'LSODA'"):
        robertson.solve([1.0, 0.0, 0.0], ROB_TS, ROB_P, rtol=1e-6, atol=1e-10, max_steps=200)


def test_dense_output_of_an_implicit_solve(robertson):
    sol = robertson.solve([1.0, 0.0, 0.0], ROB_TS, ROB_P, method="Radau", rtol=1e-6,
                          atol=1e-10, dense=True)  # fmt: skip
    np.testing.assert_allclose(sol.sol(ROB_TS[1:]), sol.y[1:], rtol=1e-9, atol=1e-15)
    assert sol.sol(np.array([5.0, 50.0])).shape == (2, 3)
