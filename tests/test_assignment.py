"""The compiled Hungarian method against scipy's linear_sum_assignment."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.optimize import linear_sum_assignment

from dropnet.assignment import linear_assignment


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 30), st.integers(0, 2**32 - 1), st.sampled_from([0, 3, 1000]))
def test_matches_scipy_total_cost(n, seed, levels):
    rng = np.random.default_rng(seed)
    cost = rng.standard_normal((n, n)) if levels == 0 else rng.integers(0, levels, (n, n)) * 1.0
    cols = linear_assignment(cost)
    assert sorted(cols.tolist()) == list(range(n))  # a permutation
    rows, ref = linear_sum_assignment(cost)
    assert cost[np.arange(n), cols].sum() == pytest.approx(cost[rows, ref].sum(), abs=1e-9)


def test_unique_optimum_is_found_exactly():
    rng = np.random.default_rng(0)
    perm = rng.permutation(48)
    cost = rng.uniform(0, 1, (48, 48))
    cost[np.arange(48), perm] = -10.0
    assert np.array_equal(linear_assignment(cost), perm)


@pytest.mark.parametrize("bad", [np.ones((2, 3)), np.array([[0.0, np.nan], [1, 2]])])
def test_bad_cost_is_refused(bad):
    with pytest.raises(ValueError):
        linear_assignment(bad)


def test_empty():
    assert linear_assignment(np.empty((0, 0))).shape == (0,)
