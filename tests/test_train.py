"""symode.nn.train: optimizers against their closed-form first steps and a hand-computed
second step, schedules, clipping, checkpoints (round trip, refusals) and the fit loop."""

import math

import numpy as np
import pytest

from symode.nn import MLP
from symode.nn.train import (
    Adam,
    AdamW,
    CheckpointError,
    RMSprop,
    clip_grad_norm,
    cosine,
    exponential,
    fit,
    load_checkpoint,
    save_checkpoint,
)


def test_adam_first_step_is_lr_times_sign_and_second_step_by_hand():
    theta = np.array([1.0, -2.0, 0.5])
    opt = Adam(theta, lr=0.1, eps=0.0)
    opt.step(np.array([3.0, -0.01, 1.0]))  # bias-corrected m̂/√v̂ = g/|g|
    np.testing.assert_allclose(theta, [0.9, -1.9, 0.4], rtol=1e-15)
    x = np.array([0.0])
    opt = Adam(x, lr=0.1, eps=0.0)
    opt.step(np.array([1.0]))
    opt.step(np.array([2.0]))
    # m₂ = 0.29, v₂ = 0.004999; m̂ = 0.29/0.19, v̂ = 0.004999/0.001999
    step2 = 0.1 * (0.29 / 0.19) / math.sqrt(0.004999 / 0.001999)
    np.testing.assert_allclose(x, [-0.1 - step2], rtol=1e-14)
    assert opt.t == 2


def test_adamw_decays_the_weights_apart_from_the_gradient():
    a, b = np.array([2.0]), np.array([2.0])
    Adam(a, lr=0.1, eps=0.0).step(np.array([1.0]))
    AdamW(b, lr=0.1, eps=0.0, weight_decay=0.5).step(np.array([1.0]))
    np.testing.assert_allclose(b, 2.0 * (1 - 0.1 * 0.5) - 0.1, rtol=1e-15)
    np.testing.assert_allclose(a, 1.9, rtol=1e-15)
    c = np.array([2.0])  # Adam's L2 penalty enters the gradient instead: g = 1 + 0.5·2
    Adam(c, lr=0.1, eps=0.0, weight_decay=0.5).step(np.array([1.0]))
    np.testing.assert_allclose(c, 1.9, rtol=1e-15)  # (the first step is lr·sign anyway)


def test_rmsprop_first_step():
    x = np.array([1.0, 1.0])
    RMSprop(x, lr=0.01, alpha=0.99, eps=0.0).step(np.array([4.0, -1.0]))
    np.testing.assert_allclose(x, [1 - 0.01 / math.sqrt(0.01), 1 + 0.01 / math.sqrt(0.01)])


@pytest.mark.parametrize("cls, lr", [(Adam, 0.05), (AdamW, 0.05), (RMSprop, 0.01)])
def test_optimizers_minimise_a_quadratic(cls, lr):
    target = np.array([1.0, -3.0, 0.5])
    x = np.zeros(3)
    opt = cls(x, lr=exponential(lr, 0.998))
    for _ in range(3000):
        opt.step(2 * (x - target))
    # AdamW settles where its decay balances the gradient: θ·wd ≈ 2(θ* − θ), 1e-2 here
    np.testing.assert_allclose(x, target, atol=0.02 if cls is AdamW else 1e-9)


def test_schedules_and_clipping():
    s = cosine(1.0, total=100, final=0.1, warmup=10)
    assert s(0) == pytest.approx(0.1) and s(9) == pytest.approx(1.0)
    assert s(10) == pytest.approx(1.0) and s(100) == pytest.approx(0.1)
    assert s(55) == pytest.approx(0.55)
    assert exponential(2.0, 0.5)(3) == 0.25
    g = np.array([3.0, 4.0])
    assert clip_grad_norm(g, 1.0) == 5.0
    np.testing.assert_allclose(np.linalg.norm(g), 1.0, rtol=1e-6)
    g = np.array([0.3, 0.4])
    clip_grad_norm(g, 1.0)
    np.testing.assert_array_equal(g, [0.3, 0.4])


def test_bad_gradients_are_refused_and_params_kept():
    x = np.ones(2)
    opt = Adam(x)
    with pytest.raises(FloatingPointError, match="not finite"):
        opt.step(np.array([1.0, np.nan]))
    np.testing.assert_array_equal(x, 1.0)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        opt.step(np.ones(3))
    with pytest.raises(TypeError, match="1-D numpy array"):
        Adam([1.0, 2.0])


def test_checkpoint_round_trip_and_refusals(tmp_path):
    mlp = MLP((2, 8, 2), "tanh", seed=0)
    theta = mlp.params.copy()
    opt = Adam(theta, lr=0.01)
    for _ in range(3):
        opt.step(np.sin(theta))
    path = save_checkpoint(tmp_path / "ck.npz", mlp, theta, opt, iteration=3, losses=[3.0, 2.0])
    theta2 = mlp.init(99)
    opt2 = Adam(theta2, lr=0.01)
    params, extra = load_checkpoint(path, mlp, opt2)
    np.testing.assert_array_equal(params, theta)
    assert opt2.t == 3 and np.array_equal(opt2.m, opt.m) and np.array_equal(opt2.v, opt.v)
    assert int(extra["iteration"]) == 3 and list(extra["losses"]) == [3.0, 2.0]
    # the next steps of the restored optimizer are the original's
    theta2[:] = params
    opt.step(np.cos(theta))
    opt2.step(np.cos(theta2))
    np.testing.assert_array_equal(theta, theta2)
    with pytest.raises(CheckpointError, match="another architecture: sizes"):
        load_checkpoint(path, MLP((2, 9, 2), "tanh"))
    with pytest.raises(CheckpointError, match="activations"):
        load_checkpoint(path, MLP((2, 8, 2), "softplus"))
    with pytest.raises(CheckpointError, match="optimizer is 'Adam', this one is 'RMSprop'"):
        load_checkpoint(path, mlp, RMSprop(mlp.init(0)))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable symode checkpoint"):
        load_checkpoint(cut, mlp)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a symode checkpoint"):
        load_checkpoint(other, mlp)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz", "cut.npz", "other.npz"]


def test_fit_records_history_and_stops_early(capsys):
    target = np.array([1.0, 2.0])
    x = np.zeros(2)
    stats = {"forward": {"nfev": 10}, "backward": {"nfev": 20}}

    def step(params, it):
        return float(np.sum((params - target) ** 2)), 2 * (params - target), stats

    def validate(params):  # improves for a while, then gets worse: early stopping
        return abs(np.sum(params) - 1.5)

    res = fit(step, Adam(x, lr=0.05), 2000, validate=validate, validate_every=5, patience=3,
              progress=False, print_every=50)  # fmt: skip
    assert res.stopped_early and len(res.history["loss"]) < 2000
    assert res.history["nfe_forward"][0] == 10 and res.history["nfe_backward"][0] == 20
    best = int(np.argmin(res.history["val_loss"]))
    assert res.best_iteration == res.history["val_iteration"][best]
    assert validate(res.params) == pytest.approx(res.history["val_loss"][best])
    assert "iter     0" in capsys.readouterr().out
    # without validation: the weights of the lowest training loss
    y = np.zeros(2)
    res = fit(step, Adam(y, lr=0.05), 300, progress=False)
    assert res.history["loss"][res.best_iteration] == min(res.history["loss"])
    assert not res.stopped_early


def test_training_is_reproducible_and_resumes_identically(tmp_path, cache_dir):
    """Two seeded runs are identical; a run stopped at iteration 10, saved, loaded into a
    fresh optimizer and continued equals the uninterrupted run bit for bit."""
    mlp = MLP((2, 6, 2), "tanh", seed=0)
    model = mlp.compile(cache_dir=cache_dir)
    t = np.linspace(0.0, 1.0, 5)
    target = np.zeros((t.size, 2))

    def make_step(seed):
        rng = np.random.default_rng(seed)

        def step(params, it):
            y0 = rng.uniform(-1, 1, (3, 2))
            g = model.vjp(y0, t, params, np.broadcast_to(target + 1.0, (3, t.size, 2)))
            return float(it), g.params.sum(axis=0), g.stats

        return step

    def train(n, theta=None, opt_state=None, seed=0, skip=0):
        theta = mlp.params.copy() if theta is None else theta
        opt = Adam(theta, lr=1e-2)
        if opt_state is not None:
            opt_state(opt)
        step = make_step(seed)
        for it in range(skip):  # the data the first part of the run consumed
            step(theta, it)
        fit(step, opt, n, progress=False)
        return theta, opt

    a, _ = train(20)
    b, _ = train(20)
    np.testing.assert_array_equal(a, b)
    half, opt = train(10)
    save_checkpoint(tmp_path / "half.npz", mlp, half, opt)
    theta, _ = load_checkpoint(tmp_path / "half.npz", mlp)
    resumed, _ = train(
        10, theta.copy(), lambda o: load_checkpoint(tmp_path / "half.npz", mlp, o), skip=10
    )
    np.testing.assert_array_equal(resumed, a)
