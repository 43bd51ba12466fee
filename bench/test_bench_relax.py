"""The relaxation's step at the puzzle's shape (48 blocks, d 48, h 96, 256 rows): the fused
kernel for the order alone (``SoftNetwork.loss_and_grad``, ``soft_loss_and_grad``) and with
the pairing fitted too (``loss_and_grads``, ``soft_loss_and_grads`` on the mixed output
layers, which also sums each block's output-layer gradient), with every block active and
with the share of P a band of 8 leaves at the end of its annealing (about a fifth). Random
weights: the cost does not depend on the values.

Run: python -m pytest bench/test_bench_relax.py --benchmark-enable --benchmark-columns=median,min,max
"""
from __future__ import annotations

import numpy as np
import pytest

from dropnet import relax
from dropnet._kernels import BlockWeights

N, D, H, ROWS = 48, 48, 96, 256


@pytest.fixture(scope="module")
def net():
    rng = np.random.default_rng(0)
    weights = BlockWeights(rng.standard_normal((N, H, D)) / np.sqrt(D), rng.standard_normal((N, H)) * 0.1,
                           rng.standard_normal((N, D, H)) * 0.1 / np.sqrt(H), rng.standard_normal((N, D)) * 0.1,
                           rng.standard_normal(D), rng.standard_normal(1))
    x = rng.standard_normal((ROWS, D)).astype(np.float32)
    target = rng.standard_normal(ROWS)
    soft = relax.SoftNetwork(weights, np.arange(N), np.arange(N))
    soft.loss_and_grad(np.full((N, N), 1.0 / N), x, target)  # compiled or loaded before timing
    return soft, x, target


def _p(kind: str) -> np.ndarray:
    if kind == "uniform":
        return np.full((N, N), 1.0 / N)
    return relax.sinkhorn(relax.band_logits(np.arange(N), N, 8.0) / 0.1)[0]


@pytest.mark.parametrize("kind", ["uniform", "band8"])
def test_kernel_step(benchmark, net, kind):
    soft, x, target = net
    loss, grad = benchmark(soft.loss_and_grad, _p(kind), x, target)
    assert np.isfinite(loss) and grad.shape == (N, N)


@pytest.mark.parametrize("kind", ["uniform", "band8"])
def test_pairs_step(benchmark, net, kind):
    soft, x, target = net
    q = relax.sinkhorn(np.random.default_rng(1).standard_normal((N, N)))[0]  # a soft pairing
    loss, grad, grad_q = benchmark(soft.loss_and_grads, _p(kind), q, x, target)
    assert np.isfinite(loss) and grad.shape == grad_q.shape == (N, N)
