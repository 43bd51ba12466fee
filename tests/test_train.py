"""The numpy trainer: gradients, initialisation, optimizers, reproducibility."""
from __future__ import annotations

import numpy as np
import pytest

from dropnet.model import forward
from dropnet.train import (History, Optimizer, TrainConfig, from_network, init_params,
                           loss_and_grad, param_count, param_views, predict_float32, to_network,
                           train)

TINY = dict(blocks=2, width=4, hidden=6, rows=64, epochs=3, batch_size=16)


def _random_params(n: int, d: int, h: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return init_params(n, d, h, rng, np.float64)


def test_gradient_matches_finite_differences():
    n, d, h, m = 3, 4, 5, 7
    rng = np.random.default_rng(1)
    p = _random_params(n, d, h)
    p.flat[:] *= 3.0  # larger weights: more ReLUs change sign across blocks
    x, t = rng.standard_normal((m, d)), rng.standard_normal(m)
    grad = param_views(np.zeros_like(p.flat), n, d, h)
    loss_and_grad(p, grad, x, t)
    scratch = param_views(np.zeros_like(p.flat), n, d, h)
    numeric = np.empty_like(p.flat)
    eps = 1e-6
    for i in range(p.flat.size):
        saved = p.flat[i]
        p.flat[i] = saved + eps
        up = loss_and_grad(p, scratch, x, t)
        p.flat[i] = saved - eps
        down = loss_and_grad(p, scratch, x, t)
        p.flat[i] = saved
        numeric[i] = (up - down) / (2 * eps)
    np.testing.assert_allclose(grad.flat, numeric, rtol=1e-5, atol=1e-8)


def test_init_follows_torch_default_bounds():
    n, d, h = 4, 10, 40
    p = init_params(n, d, h, np.random.default_rng(0))
    assert p.flat.dtype == np.float32 and p.flat.size == param_count(n, d, h)
    for view, fan_in in ((p.w_in, d), (p.b_in, d), (p.w_out, h), (p.b_out, h), (p.w_last, d)):
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(view).max() <= bound
        assert np.abs(view).max() > 0.8 * bound  # uniform over the whole interval


def test_forward_matches_model_forward():
    p = _random_params(3, 4, 6)
    x = np.random.default_rng(2).standard_normal((9, 4))
    net = to_network(p)
    y = np.concatenate([forward(net, x[i:i + 1]) for i in range(9)])
    np.testing.assert_allclose(forward(net, x), y, rtol=1e-12)
    round_trip = from_network(net, np.float64)
    np.testing.assert_array_equal(round_trip.flat, p.flat)


@pytest.mark.parametrize("resample", [False, True])
def test_training_is_reproducible_and_seed_dependent(resample):
    config = TrainConfig(**TINY, seed=5, resample=resample)
    net_a, x_a, y_a, hist_a = train(config)
    net_b, x_b, y_b, hist_b = train(config)
    for a, b in zip((net_a.w_in, net_a.w_out, net_a.b_in, x_a, y_a),
                    (net_b.w_in, net_b.w_out, net_b.b_in, x_b, y_b)):
        np.testing.assert_array_equal(a, b)
    assert hist_a.loss == hist_b.loss
    net_c, *_ = train(TrainConfig(**TINY, seed=6, resample=resample))
    assert not np.array_equal(net_a.w_in, net_c.w_in)


def test_resample_keeps_the_first_draw_as_the_data():
    fixed = train(TrainConfig(**TINY, seed=2))
    fresh = train(TrainConfig(**TINY, seed=2, resample=True))
    np.testing.assert_array_equal(fixed[1], fresh[1])
    np.testing.assert_array_equal(fixed[2], fresh[2])
    assert not np.array_equal(fixed[0].w_in, fresh[0].w_in)


@pytest.mark.parametrize("optimizer,lr", [("adam", 3e-3), ("sgd", 0.02)])
def test_training_reduces_the_loss(optimizer, lr):
    config = TrainConfig(blocks=2, width=6, hidden=12, rows=512, epochs=25, optimizer=optimizer,
                         lr=lr, weight_decay=0.01, seed=0)
    net, x, y, history = train(config)
    assert history.epochs == 25 and history.stopped == "budget"
    assert history.loss[-1] < 0.7 * history.loss[0]
    # the network holds float32 values in float64 arrays
    assert net.w_in.dtype == np.float64
    np.testing.assert_array_equal(net.w_in, net.w_in.astype(np.float32))
    assert x.dtype == np.float32 and y.dtype == np.float32 and x.shape == (512, 6)


def test_plateau_stops_early():
    config = TrainConfig(**{**TINY, "epochs": 200}, lr=1e-6, patience=3, tol=0.5)
    history: History = train(config)[3]
    assert history.stopped == "plateau" and history.epochs < 200


def test_progress_called_per_epoch():
    seen = []
    train(TrainConfig(**TINY), progress=lambda e, loss: seen.append((e, loss)))
    assert [e for e, _ in seen] == [1, 2, 3]


@pytest.mark.parametrize("bad", [dict(blocks=0), dict(optimizer="rmsprop"), dict(lr=0.0),
                                 dict(weight_decay=-1.0), dict(dtype="float16")])
def test_bad_config_rejected(bad):
    with pytest.raises(ValueError):
        train(TrainConfig(**{**TINY, **bad}))


def test_divergence_is_reported():
    with pytest.raises(FloatingPointError, match="diverged"):
        train(TrainConfig(**TINY, optimizer="sgd", lr=1e6))


def test_adam_and_sgd_steps_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    start = rng.standard_normal(50)
    grads = [rng.standard_normal(50) for _ in range(5)]
    cases = [("adam", dict(lr=1e-2, weight_decay=0.1), torch.optim.AdamW, dict(
                 lr=1e-2, weight_decay=0.1, betas=(0.9, 0.999), eps=1e-8)),
             ("sgd", dict(lr=1e-2), torch.optim.SGD, dict(lr=1e-2, momentum=0.9))]
    for name, ours, cls, theirs in cases:
        flat = start.copy()
        opt = Optimizer(TrainConfig(optimizer=name, dtype="float64", **ours), flat)
        param = torch.nn.Parameter(torch.tensor(start))
        topt = cls([param], **theirs)
        for g in grads:
            opt.step(flat, g.copy())
            param.grad = torch.tensor(g)
            topt.step()
        np.testing.assert_allclose(flat, param.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_decoupled_weight_decay_for_sgd():
    flat = np.ones(4)
    opt = Optimizer(TrainConfig(optimizer="sgd", lr=0.1, weight_decay=0.5, dtype="float64"), flat)
    opt.step(flat, np.zeros(4))
    np.testing.assert_allclose(flat, 1 - 0.1 * 0.5)


def test_warmup_and_clip():
    config = TrainConfig(optimizer="sgd", lr=1.0, momentum=0.0, warmup=2, clip=1.0,
                         dtype="float64")
    flat = np.zeros(2)
    opt = Optimizer(config, flat, steps_per_epoch=2)  # warm-up over 4 steps
    opt.step(flat, np.array([30.0, 40.0]))  # clipped to norm 1, rate 1/4
    np.testing.assert_allclose(flat, [-0.15, -0.2])


def test_backward_matches_torch_autograd():
    torch = pytest.importorskip("torch")
    n, d, h, m = 3, 5, 7, 11
    p = _random_params(n, d, h, seed=4)
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((m, d)), rng.standard_normal(m)
    grad = param_views(np.zeros_like(p.flat), n, d, h)
    loss = loss_and_grad(p, grad, x, t)
    tp = {k: torch.tensor(getattr(p, k), requires_grad=True)
          for k in ("w_in", "b_in", "w_out", "b_out", "w_last", "b_last")}
    z = torch.tensor(x)
    for k in range(n):
        z = z + torch.relu(z @ tp["w_in"][k].T + tp["b_in"][k]) @ tp["w_out"][k].T + tp["b_out"][k]
    y = z @ tp["w_last"] + tp["b_last"][0]
    torch_loss = ((y - torch.tensor(t)) ** 2).mean()
    torch_loss.backward()
    assert loss == pytest.approx(torch_loss.item(), rel=1e-12)
    for k, v in tp.items():
        np.testing.assert_allclose(getattr(grad, k), v.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_float32_prediction_close_to_torch():
    torch = pytest.importorskip("torch")
    net = to_network(init_params(4, 6, 9, np.random.default_rng(0)))
    x = np.random.default_rng(1).standard_normal((50, 6)).astype(np.float32)
    ours = predict_float32(net, x)
    assert ours.dtype == np.float32
    z = torch.tensor(x)
    for k in range(net.blocks):
        w_in, w_out = torch.tensor(net.w_in[k], dtype=torch.float32), torch.tensor(
            net.w_out[k], dtype=torch.float32)
        z = z + torch.relu(z @ w_in.T + torch.tensor(net.b_in[k], dtype=torch.float32)) @ w_out.T
        z = z + torch.tensor(net.b_out[k], dtype=torch.float32)
    theirs = (z @ torch.tensor(net.w_last, dtype=torch.float32) + float(net.b_last)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
