"""Ensembles: batched y0 (B, n) and/or params (B, p) through ``Model.solve``.

Each member runs the very same ``integrate`` as a single solve (kernels/ensemble.py,
one prange iteration per trajectory), so every member must equal its one-by-one solve
bit for bit, with its own steps, stats and status. All tests use ``lv_model``
(Lotka-Volterra, params a, b, c, d), so the parallel engine compiles once.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from symode import IntegrationError, NonFiniteInputError, ShapeError, Status

P0 = np.array([1.5, 1.0, 3.0, 1.0])
TS = np.linspace(0.0, 10.0, 51)
OPTIONS = {
    "dopri5": {"rtol": 1e-8, "atol": 1e-8},
    "tsit5": {"rtol": 1e-7, "atol": 1e-9},
    "dopri8": {"rtol": 1e-9, "atol": 1e-9},
    "bosh3": {"rtol": 1e-5, "atol": 1e-7},
    "rk4": {"dt": 0.01},
    "euler": {"grid": np.linspace(0.0, 10.0, 2001)},
}


@pytest.fixture
def batch(rng):
    B = 12
    Y0 = rng.uniform(0.5, 2.0, (B, 2))
    Pm = P0 * rng.uniform(0.8, 1.2, (B, 4))
    return Y0, Pm


def one_by_one(model, Y0, Pm, **kw):
    B = Y0.shape[0] if Y0.ndim == 2 else Pm.shape[0]
    Y0 = np.broadcast_to(Y0, (B, Y0.shape[-1]))
    Pm = np.broadcast_to(Pm, (B, Pm.shape[-1]))
    return [model.solve(Y0[i], TS, Pm[i], throw=False, **kw) for i in range(B)]


def assert_members_equal(ens, singles, members=None):
    members = range(len(singles)) if members is None else members
    for i in members:
        s = singles[i]
        assert np.array_equal(ens.y[i], s.y, equal_nan=True), i
        for key in ("nfev", "naccept", "nreject"):
            assert ens.stats[key][i] == s.stats[key], (i, key)
        assert ens.status[i] == s.status
        assert ens.message[i] == s.message


@pytest.mark.parametrize("method", list(OPTIONS))
def test_batched_y0_and_params_equal_one_by_one(lv_model, batch, method):
    Y0, Pm = batch
    ens = lv_model.solve(Y0, TS, Pm, method=method, **OPTIONS[method])
    assert ens.y.shape == (Y0.shape[0], TS.size, 2)
    assert ens.t is not None and np.array_equal(ens.t, TS)
    assert ens.success and ens.failed == ()
    assert ens.status.shape == (Y0.shape[0],)
    assert np.all(ens.status == Status.SUCCESS)
    assert all(ens.stats[k].shape == (Y0.shape[0],) for k in ("nfev", "naccept", "nreject"))
    assert len(ens.message) == Y0.shape[0]
    assert_members_equal(ens, one_by_one(lv_model, Y0, Pm, method=method, **OPTIONS[method]))
    # the members really differ: per-trajectory adaptive steps, not one shared grid
    if method in ("dopri5", "tsit5", "dopri8", "bosh3"):
        assert len(set(ens.stats["naccept"].tolist())) > 1


def test_broadcast_batched_y0_with_shared_params(lv_model, batch):
    Y0, _ = batch
    ens = lv_model.solve(Y0, TS, P0, rtol=1e-8, atol=1e-8)
    assert ens.y.shape == (Y0.shape[0], TS.size, 2)
    assert_members_equal(ens, one_by_one(lv_model, Y0, P0, rtol=1e-8, atol=1e-8))


def test_broadcast_shared_y0_with_batched_params(lv_model, batch):
    _, Pm = batch
    y0 = np.array([1.0, 0.7])
    ens = lv_model.solve(y0, TS, Pm, rtol=1e-8, atol=1e-8)
    assert ens.y.shape == (Pm.shape[0], TS.size, 2)
    assert_members_equal(ens, one_by_one(lv_model, y0, Pm, rtol=1e-8, atol=1e-8))


def test_batch_of_one_is_the_single_solve(lv_model):
    single = lv_model.solve([1.0, 1.0], TS, P0, rtol=1e-8, atol=1e-8)
    ens = lv_model.solve([[1.0, 1.0]], TS, P0, rtol=1e-8, atol=1e-8)
    assert ens.y.shape == (1, TS.size, 2)
    assert np.array_equal(ens.y[0], single.y)
    assert ens.stats["nfev"][0] == single.stats["nfev"]


def test_many_members_across_threads(lv_model, rng):
    """Enough members for every thread to take several: still bit for bit."""
    B = 200
    Y0 = rng.uniform(0.2, 3.0, (B, 2))
    Pm = P0 * rng.uniform(0.5, 1.5, (B, 4))
    ens = lv_model.solve(Y0, TS, Pm, rtol=1e-7, atol=1e-9)
    singles = [lv_model.solve(Y0[i], TS, Pm[i], rtol=1e-7, atol=1e-9) for i in range(B)]
    assert np.array_equal(ens.y, np.stack([s.y for s in singles]))
    assert np.array_equal(ens.stats["nfev"], [s.stats["nfev"] for s in singles])


def test_backward_ensemble(lv_model, batch):
    Y0, Pm = batch
    ts = TS[::-1]
    ens = lv_model.solve(Y0, ts, Pm, rtol=1e-8, atol=1e-8)
    for i in range(Y0.shape[0]):
        s = lv_model.solve(Y0[i], ts, Pm[i], rtol=1e-8, atol=1e-8)
        assert np.array_equal(ens.y[i], s.y)


def test_one_failing_member_is_reported_others_complete(lv_model, batch):
    Y0, Pm = batch
    bad = 3
    Pf = Pm.copy()
    Pf[bad, 0] = 1e4  # prey growth 1e4: thousands of steps per unit time
    opts = {"rtol": 1e-8, "atol": 1e-8, "max_steps": 3000}
    clean = lv_model.solve(Y0, TS, Pm, **opts)
    ens = lv_model.solve(Y0, TS, Pf, throw=False, **opts)
    assert ens.failed == (bad,) and not ens.success
    assert ens.status[bad] == Status.MAX_STEPS
    assert np.all(np.delete(ens.status, bad) == Status.SUCCESS)
    msg = ens.message[bad]
    assert "max_steps" in msg
    t_fail = float(re.search(r"t=([-+0-9.eE]+)", msg).group(1))
    assert 0.0 < t_fail < TS[-1]
    assert ens.stats["naccept"][bad] == 3000
    # the failed member: finite up to where it stopped, NaN after
    assert np.all(np.isnan(ens.y[bad][TS > t_fail]))
    assert np.all(np.isfinite(ens.y[bad][TS <= t_fail]))
    # the others are untouched, bit for bit
    others = [i for i in range(Y0.shape[0]) if i != bad]
    assert np.array_equal(ens.y[others], clean.y[others])
    for key in ("nfev", "naccept", "nreject"):
        assert np.array_equal(ens.stats[key][others], clean.stats[key][others])
    # and the failed one equals its own single solve, partial outputs and message included
    assert_members_equal(ens, one_by_one(lv_model, Y0, Pf, **opts), members=[bad])


def test_failing_member_raises_with_throw(lv_model, batch):
    Y0, Pm = batch
    Pf = Pm.copy()
    Pf[[2, 7], 0] = 1e4
    with pytest.raises(IntegrationError, match=r"trajectories \[2, 7\].*max_steps") as info:
        lv_model.solve(Y0, TS, Pf, rtol=1e-8, max_steps=3000)
    err = info.value
    assert err.failed == (2, 7)
    sol = err.solution
    assert sol.y.shape == (Y0.shape[0], TS.size, 2)
    assert list(np.flatnonzero(sol.status)) == [2, 7]
    assert np.all(np.isfinite(np.delete(sol.y, [2, 7], axis=0)))


def test_one_stiff_member_does_not_slow_the_others(lv_model, batch):
    Y0, Pm = batch
    stiff = 5
    Ps = Pm.copy()
    Ps[stiff] *= 30.0  # 30x faster dynamics: far more steps, still solvable
    clean = lv_model.solve(Y0, TS, Pm, rtol=1e-8, atol=1e-8)
    ens = lv_model.solve(Y0, TS, Ps, rtol=1e-8, atol=1e-8)
    assert ens.success
    assert ens.stats["naccept"][stiff] > 5 * clean.stats["naccept"][stiff]
    for key in ("nfev", "naccept", "nreject"):
        assert np.array_equal(np.delete(ens.stats[key], stiff), np.delete(clean.stats[key], stiff))
    assert np.array_equal(np.delete(ens.y, stiff, axis=0), np.delete(clean.y, stiff, axis=0))


def test_shape_errors(lv_model, batch):
    Y0, Pm = batch
    with pytest.raises(ShapeError, match="batch"):
        lv_model.solve(Y0, TS, Pm[:5])
    with pytest.raises(ShapeError):
        lv_model.solve(Y0[:, :1], TS, Pm)  # wrong n
    with pytest.raises(ShapeError):
        lv_model.solve(Y0, TS, Pm[:, :3])  # wrong p
    with pytest.raises(ShapeError):
        lv_model.solve(Y0[None], TS, Pm)  # (1, B, n)
    with pytest.raises(ValueError, match="dense"):
        lv_model.solve(Y0, TS, Pm, dense=True)
    # t_eval's order is checked by the engine (Status.BAD_T_EVAL), for every trajectory
    with pytest.raises(ShapeError, match="monotone"):
        lv_model.solve(Y0, [0.0, 2.0, 1.0], Pm, throw=False)
    with pytest.raises(NonFiniteInputError, match="t_eval"):
        lv_model.solve(Y0, [0.0, np.nan, 1.0], Pm)


def test_float32_ensemble(lv_model, batch):
    Y0, Pm = batch
    ens = lv_model.solve(Y0, TS, Pm, rtol=1e-5, atol=1e-6, dtype=np.float32)
    assert ens.y.dtype == np.float32
    ref = lv_model.solve(Y0, TS, Pm, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ens.y, ref.y, rtol=1e-3, atol=1e-4)


def test_batched_inputs_share_one_compiled_kernel(lv_model, batch):
    Y0, Pm = batch
    for y0, p in [(Y0, Pm), (Y0, P0), (Y0[0], Pm)]:
        lv_model.solve(y0, TS, p)
    kernel = lv_model.engine.dispatcher("solve_ensemble", lv_model.engine.method("dopri5"))
    float64_sigs = [sig for sig in kernel.signatures if "float32" not in str(sig)]
    assert len(float64_sigs) == 1, [str(s[2:4]) for s in float64_sigs]


def _irregular_rows(rng, B, T):
    """A padded (B, T) t_eval: row i has its own count of sorted random times from its own
    start, then NaN."""
    rows = np.full((B, T), np.nan)
    for i in range(B):
        m = int(rng.integers(2, T + 1))
        start = rng.uniform(0.0, 1.0)
        rows[i, :m] = np.sort(np.concatenate([[start], rng.uniform(start, 6.0, m - 1)]))
    return rows


def test_padded_irregular_batch_equals_one_by_one(lv_model, batch, rng):
    """Each trajectory with its own irregular times (t_eval (B, T), NaN after its last):
    solve and every adjoint mode equal the one-by-one calls bit for bit."""
    Y0, Pm = batch
    rows = _irregular_rows(rng, Y0.shape[0], 9)
    opts = {"rtol": 1e-8, "atol": 1e-8}
    sol = lv_model.solve(Y0, rows, Pm, **opts)
    assert sol.y.shape == (Y0.shape[0], 9, 2) and sol.t.shape == rows.shape
    cot = rng.standard_normal((Y0.shape[0], 9, 2))
    cot[np.isnan(rows)] = np.nan  # padded the same way: never read
    grads = {
        mode: lv_model.vjp(Y0, rows, Pm, cot, adjoint=mode, **opts)
        for mode in ("checkpoint", "backsolve", "discrete", "forward")
    }
    for i in range(Y0.shape[0]):
        m = int(np.isfinite(rows[i]).sum())
        single = lv_model.solve(Y0[i], rows[i, :m], Pm[i], **opts)
        np.testing.assert_array_equal(sol.y[i, :m], single.y)
        assert np.isnan(sol.y[i, m:]).all()
        for mode, g in grads.items():
            one = lv_model.vjp(Y0[i], rows[i, :m], Pm[i], cot[i, :m], adjoint=mode, **opts)
            np.testing.assert_array_equal(g.params[i], one.params, err_msg=mode)
            np.testing.assert_array_equal(g.y0[i], one.y0, err_msg=mode)
            np.testing.assert_array_equal(g.y[i, :m], one.y, err_msg=mode)


def test_padded_batch_errors_name_the_row(lv_model, batch):
    Y0, Pm = batch
    rows = np.tile(np.linspace(0.0, 1.0, 4), (Y0.shape[0], 1))
    bad = rows.copy()
    bad[3, 1] = np.nan  # a number after the padding
    with pytest.raises(ShapeError, match="t_eval row 3: each row holds its times, then NaN"):
        lv_model.solve(Y0, bad, Pm)
    bad = rows.copy()
    bad[5, 1:] = np.nan  # one time, no t_span
    with pytest.raises(ShapeError, match="t_eval row 5: t_eval needs at least two times"):
        lv_model.solve(Y0, bad, Pm)
    with pytest.raises(ShapeError, match="t_eval has 3 rows .* the batch of y0/params has 12"):
        lv_model.solve(Y0, rows[:3], Pm)
    with pytest.raises(ValueError, match="adaptive method"):
        lv_model.solve(Y0, rows, Pm, method="rk4", dt=0.1)
    bad = rows.copy()
    bad[2, 2] = bad[2, 1]  # not strictly monotone: the engine finds it
    with pytest.raises(ShapeError, match="strictly monotone"):
        lv_model.solve(Y0, bad, Pm)


def test_members_call_the_single_entry_through_its_address(lv_model, batch, monkeypatch):
    """An ensemble's members call the compiled single-trajectory entry through its address
    (kernels/dynamics.py, call_single), with the single call's results; a signature key
    that does not match the members' argument types makes the engine call nothing and the
    Python side raise, instead of running code compiled for other types."""
    Y0, Pm = batch
    ts = np.linspace(0.0, 2.0, 5)
    cot = np.ones((Y0.shape[0], ts.size, 2))
    one = lv_model.vjp(Y0[0], ts, Pm[0], cot[0], adjoint="discrete")
    both = lv_model.vjp(Y0, ts, Pm, cot, adjoint="discrete")
    np.testing.assert_array_equal(both.params[0], one.params)
    engine = lv_model.engine
    real = engine.single_address
    members = engine.entry("solve_ensemble", engine.method("dopri5"))
    members._single.clear()  # the (address, key) it remembers per argument fingerprint

    def wrong_key(*args):
        address, key = real(*args)
        return address, key + 1

    monkeypatch.setattr(engine, "single_address", wrong_key)
    with pytest.raises(RuntimeError, match="typed its members' call differently"):
        lv_model.solve(Y0, ts, Pm)
    monkeypatch.undo()
    members._single.clear()
    np.testing.assert_array_equal(
        lv_model.solve(Y0, ts, Pm).y[0], lv_model.solve(Y0[0], ts, Pm[0]).y
    )
