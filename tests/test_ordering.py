"""Seed orders: each is a permutation of the blocks, and the data-driven ones match a plain
numpy reading of their definition."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_kernels import random_weights

from dropnet._kernels import BlockWeights
from dropnet.ordering import REVERSED_SEEDS, SEEDS, init_drift, seed_order


def block(w, i, j, x):
    return x + np.maximum(x @ w.w_in[i].T + w.b_in[i], 0) @ w.w_out[j].T + w.b_out[j]


def pursuit_reference(w, blk_in, blk_out, x, target):
    """Append the block after which the final layer fits target best, one at a time."""
    left, order = list(range(len(blk_in))), []
    while left:
        sse = [np.sum((block(w, blk_in[k], blk_out[k], x) @ w.w_last + w.b_last[0] - target) ** 2)
               for k in left]
        best = left.pop(int(np.argmin(sse)))
        order.append(best)
        x = block(w, blk_in[best], blk_out[best], x)
    return order


def problem(seed, n, m=40, d=5, h=9):
    rng = np.random.default_rng(seed)
    w = random_weights(rng, n, d, h, scale=1.0)
    blk_in, blk_out = rng.permutation(n), rng.permutation(n)
    x = rng.standard_normal((m, d))
    truth = rng.permutation(n)
    y = x
    for k in truth:
        y = block(w, blk_in[k], blk_out[k], y)
    return w, blk_in, blk_out, x, y @ w.w_last + w.b_last[0]


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 7))
def test_pursuit_matches_its_definition(seed, n):
    w, blk_in, blk_out, x, target = problem(seed, n)
    got = seed_order("pursuit", w, blk_in, blk_out, x, target=target)
    assert list(got) == pursuit_reference(w, blk_in, blk_out, x, target)


@pytest.mark.parametrize("name", SEEDS + REVERSED_SEEDS)
def test_every_seed_is_a_permutation(name):
    w, blk_in, blk_out, x, target = problem(1, 6)
    order = seed_order(name, w.astype(np.float32), blk_in, blk_out, x.astype(np.float32),
                       target=target)
    assert sorted(order.tolist()) == list(range(6))


def test_pursuit_needs_the_target():
    w, blk_in, blk_out, x, _ = problem(2, 3)
    with pytest.raises(ValueError, match="target"):
        seed_order("pursuit", w, blk_in, blk_out, x)


def drift_reference(w, blk_in, blk_out):
    """Share of each block's W_in and W_out entries beyond 1/sqrt(fan_in), summed."""
    return np.array([np.mean(np.abs(w.w_in[i]) > w.w_in.shape[2] ** -0.5)
                     + np.mean(np.abs(w.w_out[j]) > w.w_out.shape[2] ** -0.5)
                     for i, j in zip(blk_in, blk_out)])


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 7))
def test_drift_matches_its_definition(seed, n):
    w, blk_in, blk_out, _, _ = problem(seed, n)
    np.testing.assert_allclose(init_drift(w, blk_in, blk_out), drift_reference(w, blk_in, blk_out))
    order = seed_order("drift", w, blk_in, blk_out, np.empty((0, 5)))
    assert np.all(np.diff(drift_reference(w, blk_in, blk_out)[order]) <= 0)  # most moved first


def test_drift_seed_puts_the_most_trained_block_first():
    """Blocks drawn from PyTorch's initial distribution, one of them then moved by a
    'training' step of growing size: the seed lists them by how far they moved."""
    rng = np.random.default_rng(0)
    n, d, h = 5, 8, 16
    w_in = rng.uniform(-1, 1, (n, h, d)) / np.sqrt(d)
    w_out = rng.uniform(-1, 1, (n, d, h)) / np.sqrt(h)
    for k, size in enumerate([0.0, 0.3, 0.1, 0.6, 0.2]):
        w_in[k] += size * rng.standard_normal((h, d)) / np.sqrt(d)
        w_out[k] += size * rng.standard_normal((d, h)) / np.sqrt(h)
    w = BlockWeights(w_in, np.zeros((n, h)), w_out, np.zeros((n, d)), np.ones(d), np.zeros(1))
    blk = np.arange(n)
    assert init_drift(w, blk, blk)[0] == 0.0  # never moved: nothing beyond the bound
    assert seed_order("drift", w, blk, blk, np.empty((0, d))).tolist() == [3, 1, 4, 2, 0]
    assert seed_order("drift-asc", w, blk, blk, np.empty((0, d))).tolist() == [0, 2, 4, 1, 3]
