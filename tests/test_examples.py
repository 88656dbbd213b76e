"""Examples are documentation: each runs in its --quick mode here, so none can rot."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_quickstart(cache_dir, capsys):
    out = _load("quickstart").main(quick=True, plot=None, cache_dir=cache_dir)
    printed = capsys.readouterr().out
    assert "Adjoint equations" in printed and "dlambda_x/dt" in printed
    # adjoint and forward sensitivities agree (rtol=atol=1e-8 solves: ~1e-7 expected)
    assert out["rel"] < 1e-6
    assert np.all(np.isfinite(out["y_end"]))


@pytest.mark.slow
def test_fit_lotka_volterra(cache_dir, capsys):
    out = _load("fit_lotka_volterra").main(quick=True, plot=None, cache_dir=cache_dir)
    assert out["result"].success
    # 25 noisy observations (σ = 0.05): parameters recovered to a few percent
    np.testing.assert_allclose(out["fit"], out["true"], rtol=0.05)
    assert "gradient check" in capsys.readouterr().out


def test_spiral_neural_ode(cache_dir, capsys):
    """P4 in quick mode: 60 RMSprop iterations on 20 windows each. With seed 0 the
    objective over all 990 windows falls from 0.0851 to 0.0329; asserted: below 0.035
    (from 0.085 ± 0.001), and NFE recorded for every iteration."""
    # float64: float32 gradients compile the engine once more (~90 s on 2 cores), so
    # they run with -m full (test_nn's float32 test; the example defaults to float32)
    out = _load("spiral_neural_ode").main(
        quick=True, plot=None, cache_dir=cache_dir, progress=False, dtype=np.float64
    )
    assert abs(out["before"] - 0.085) < 1e-3 and out["after"] < 0.035, out
    h = out["history"]
    assert len(h["nfe_forward"]) == 60 and min(h["nfe_forward"]) > 0 and min(h["nfe_backward"]) > 0
    assert "ms per iteration" in capsys.readouterr().out


def test_odenet_rings(cache_dir, capsys):
    """ODE-Nets on Dupont et al.'s nested rings, quick mode: 100 Adam iterations on 256
    points per net. With seed 0, held-out accuracy plain 0.906, augmented 0.976, and
    19.6 % / 4.1 % of the ring's area classified as disk; asserted: the augmented net
    ahead by at least 0.04 and above 0.95, and the plain net's channel through the ring
    at least 3× the augmented net's area. The numpy ResNet equals symode's discrete
    adjoint of Euler's method to rounding (measured 7.9e-16; asserted 1e-12). Memory at
    10⁴ steps, fresh processes (measured over runs: ResNet 2.2–2.4 MiB, discrete adjoint
    0.8–1.1, backsolve 0.1): asserted ResNet > 1, discrete > 0.3, backsolve < 0.5 MiB."""
    out = _load("odenet_rings").main(quick=True, plot=None, cache_dir=cache_dir, progress=False)
    plain, aug = out["plain"], out["augmented"]
    assert aug["test_accuracy"] >= plain["test_accuracy"] + 0.04, (plain, aug)
    assert aug["test_accuracy"] > 0.95 and plain["test_accuracy"] > 0.8
    assert plain["ring_as_disk"] > 3 * aug["ring_as_disk"]
    assert out["resnet_check"] < 1e-12
    for r in (plain, aug):
        assert len(r["nfe_forward"]) == 100 and min(r["nfe_forward"]) > 0
        assert min(r["nfe_backward"]) > 0
    mem = {label.split()[1]: row[-1] for label, row in out["memory"].items()}  # at 10⁴ steps
    assert mem["ResNet"] > 1.0 and mem["discrete"] > 0.3 and mem["backsolve"] < 0.5, mem
    assert "peak memory of one gradient" in capsys.readouterr().out


def test_irregular_time_series(cache_dir, capsys):
    """16 damped-pendulum trajectories at their own random times (one padded batch),
    quick mode: 600 Adam iterations. With seed 0 the interpolation RMSE against the
    noise-free truth is 0.397 for linear interpolation, 0.048 for the neural ODE (8.3×
    lower) and 0.011 for the true equations fitted by value_and_grad; extrapolation to
    t = 15: neural ODE 0.061, true equations 0.0075. Asserted: the neural ODE at least 4×
    below linear interpolation, below 0.1 extrapolating; the true equations below 0.02
    both ways (noise σ = 0.05) with ω² and γ within 2 %."""
    out = _load("irregular_time_series").main(
        quick=True, plot=None, cache_dir=cache_dir, progress=False
    )
    rmse = out["rmse"]
    assert out["ratio"] >= 4.0, rmse
    assert rmse["neural ODE"][1] < 0.1, rmse
    assert max(rmse["true equations, fitted"]) < 0.02, rmse
    np.testing.assert_allclose(out["p_fit"], [1.5**2, 0.15], rtol=0.02)
    assert min(out["nfe_forward"]) > 0 and min(out["nfe_backward"]) > 0
    assert "RMSE against the noise-free truth" in capsys.readouterr().out


def test_cnf_2d(cache_dir, capsys):
    """CNFs in the plane, quick mode: 60 Adam iterations (batches of 256) on FFJORD's eight
    Gaussians, then the U1 variational fits (planar and radial ×32, 500 iterations; the
    CNF, 40). With these seeds: held-out NLL (1000 samples) 6.459 → 3.985 against the
    truth's 2.807 (its population value is 2.831 ± 0.001 by Monte Carlo over 10⁶ samples;
    the held-out mean's standard error is ~0.03); re-scored at 1e-8 it moves by 1e-7; the
    CNF's reverse-KL gradient matches central differences to 6e-9. U1 (log Z = 1.878 by
    quadrature), ELBO / KSD² before → after: planar -25.3 / 2.09 → 1.17 / -0.002 (one of
    the two arcs: KL 0.71 ≈ log 2, which KSD does not see), radial -1.37 / 2.99 → 1.68 /
    0.035, CNF -2.60 / 5.10 → -0.26 / 0.75. Asserted, with margins for other BLAS/CPU
    rounding: held-out NLL below 4.3 and at least 2 nats better; the truth's within 0.1
    of 2.831 (3 standard errors of 1000 samples); the 1e-5 score within 1e-4 of the 1e-8
    one; the gradient check below 1e-6 (its noise floor, ~1e-8 typical); every fit's ELBO
    and KSD² better than its initial flow's; the CNF's ELBO up by at least 1.5 and KSD²
    down by at least half."""
    out = _load("cnf_2d").main(quick=True, plot=None, cache_dir=cache_dir, progress=False)
    r = out["density"]["8gaussians"]
    h = r["history"]
    assert h["held_out"][-1] < 4.3 and h["held_out"][0] - h["held_out"][-1] >= 2.0, h
    assert abs(r["true_ce"] - 2.831) < 0.1, r["true_ce"]
    assert abs(h["held_out"][-1] - h["held_out_tight"]) < 1e-4
    assert len(h["loss"]) == 60 and min(h["nfe_forward"]) > 0 and min(h["nfe_backward"]) > 0
    assert out["grad_check"] < 1e-6
    fits = out["variational"]["U1"]
    assert abs(fits["log_z"] - 1.878) < 1e-3
    for label in ("planar ×32", "radial ×32", "CNF 2-64-64-2"):
        m = fits[label]
        assert m["after"]["elbo"] > m["before"]["elbo"], (label, m["before"], m["after"])
        assert m["after"]["ksd"] < m["before"]["ksd"], (label, m["before"], m["after"])
    cnf = fits["CNF 2-64-64-2"]
    assert cnf["after"]["elbo"] >= cnf["before"]["elbo"] + 1.5
    assert cnf["after"]["ksd"] <= 0.5 * cnf["before"]["ksd"]
    printed = capsys.readouterr().out
    assert "held-out NLL" in printed and "KSD²" in printed
