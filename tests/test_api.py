"""The API says what it returns (what a new user hit): the advice of value_and_grad's
error works, vjp's value is None for raw cotangents, Gradient is exported, params and
y0 accept dicts by symbol or name, symode.testing is there after import symode."""

import subprocess
import sys

import numpy as np
import pytest
import sympy as sp

import symode

TS = np.linspace(0.0, 2.0, 11)
P = [1.5, 1.0, 3.0, 1.0]


def test_value_and_grad_without_a_loss_gives_advice_that_works(lv_model):
    with pytest.raises(ValueError, match=r"loss=symode\.Loss") as err:
        lv_model.value_and_grad([1.0, 1.0], TS, P)
    assert "vjp" in str(err.value) and "cotangent=" in str(err.value)
    g = lv_model.vjp([1.0, 1.0], TS, P, cotangent=np.ones((TS.size, 2)))
    assert isinstance(g, symode.Gradient)
    assert g.value is None  # raw cotangents: the loss is the caller's
    assert np.isfinite(g.params).all()


def test_vjp_of_a_batch_has_no_value(lv_model):
    g = lv_model.vjp([[1.0, 1.0]] * 2, TS, P, cotangent=np.ones((TS.size, 2)))
    assert g.value is None and g.params.shape == (2, 4)


def test_params_and_y0_as_dicts_by_symbol_or_name(lv_model):
    a, b, c, d = lv_model.system.params
    x, y = lv_model.system.states
    ref = lv_model.solve([1.0, 0.5], TS, P)
    by_symbol = lv_model.solve({x: 1.0, y: 0.5}, TS, {a: 1.5, b: 1.0, c: 3.0, d: 1.0})
    by_name = lv_model.solve({"x": 1.0, "y": 0.5}, TS, {"a": 1.5, "b": 1.0, "c": 3.0, "d": 1.0})
    np.testing.assert_array_equal(by_symbol.y, ref.y)
    np.testing.assert_array_equal(by_name.y, ref.y)
    batch = lv_model.solve({"x": [1.0, 2.0], "y": 0.5}, TS, P)  # a batch of two y0
    np.testing.assert_array_equal(batch.y[0], ref.y)
    with pytest.raises(symode.ShapeError, match=r"missing \['d'\]"):
        lv_model.solve([1.0, 0.5], TS, {"a": 1.5, "b": 1.0, "c": 3.0})
    with pytest.raises(symode.ShapeError, match=r"unknown key 'e'"):
        lv_model.solve([1.0, 0.5], TS, {"a": 1.5, "b": 1.0, "c": 3.0, "d": 1.0, "e": 2.0})


def test_testing_is_an_attribute_after_import_symode():
    code = "import symode; print(symode.testing.check_gradient.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "check_gradient"
    assert "Gradient" in symode.__all__


def test_eq_derivative_form_compiles_and_solves(cache_dir):
    t = sp.Symbol("t")
    X = sp.Function("X")
    k = sp.Symbol("k")
    system = symode.ODESystem([sp.Eq(sp.Derivative(X(t), t), -k * X(t))], params=[k], t=t)
    sol = system.compile(cache_dir=cache_dir).solve([1.0], TS, [0.5], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sol.y[:, 0], np.exp(-0.5 * TS), rtol=1e-8)


class _Lines:
    def __init__(self):
        import logging

        self.lines = []
        self.handler = logging.Handler()
        self.handler.emit = lambda record: self.lines.append(record.getMessage())


def test_a_compile_says_so_on_the_symode_logger(monkeypatch, tmp_path):
    """A first call that compiles for more than a moment says what and that it is
    cached (here the threshold is 0 s, so the kernels' short compile is announced);
    verbose=False stays quiet."""
    import logging

    import symode.engine

    monkeypatch.setattr(symode.engine, "ANNOUNCE_AFTER_S", 0.0)
    seen = _Lines()
    logger = logging.getLogger("symode")
    logger.addHandler(seen.handler)
    try:
        x, k = sp.symbols("x_announce k_announce")
        system = symode.ODESystem([-k * x + 0.125], states=[x], params=[k])
        model = system.compile(cache_dir=tmp_path)
        model.solve([1.0], TS, [2.0])
        import time

        time.sleep(0.05)  # the announcement comes from a timer thread
        assert any("compiling" in line and "cached" in line for line in seen.lines), seen.lines
        seen.lines.clear()
        quiet = system.compile(cache_dir=tmp_path / "other", verbose=False)
        quiet.solve([1.0], TS, [2.0])
        time.sleep(0.05)
        assert seen.lines == []
    finally:
        logger.removeHandler(seen.handler)


def test_status_codes_are_the_engines():
    """symode.Status names every code the engine writes (kernels/status.py, which the
    engine's step loop imports), each with a message."""
    from symode.kernels import integrate, status

    codes = {k: v for k, v in vars(status).items() if k.isupper()}
    assert {s.name: s.value for s in symode.Status} == codes
    for name, value in codes.items():
        assert getattr(integrate, name) == value  # the step loop writes these very codes
        assert symode.Status(value).describe(1.0, 0.1)
