"""Seed orders: each is a permutation of the blocks, and the data-driven ones match a plain
numpy reading of their definition."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_kernels import random_weights

from dropnet.ordering import REVERSED_SEEDS, SEEDS, seed_order


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
