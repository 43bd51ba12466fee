"""Pairing by the data when the dominance ratio is ambiguous: the data evidence against a
plain reading of its definition, the standardisation, and which pairings are offered."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dropnet._kernels import BlockWeights
from dropnet.generate import planted
from dropnet.pairing import (
    data_evidence,
    pair_by_dominance,
    pair_with_data,
    standardise,
)
from dropnet.roles import Stack, assign_roles


def random_stack(rng, n, d, h, paired=0.0) -> Stack:
    """n blocks; ``paired`` > 0 makes W_out[k] = -paired W_in[k]^T + noise (a clean ratio)."""
    w_in = rng.standard_normal((n, h, d)) / np.sqrt(d)
    w_out = rng.standard_normal((n, d, h)) / np.sqrt(h) - paired * w_in.transpose(0, 2, 1)
    weights = BlockWeights(w_in, 0.1 * rng.standard_normal((n, h)), w_out,
                           0.1 * rng.standard_normal((n, d)), rng.standard_normal(d),
                           rng.standard_normal(1))
    ids = np.arange(n)
    return Stack(weights, ids, ids + n, 2 * n)


def naive_evidence(w: BlockWeights, x, target):
    n = w.w_in.shape[0]
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            added = [w.w_last @ w.w_out[j] @ np.maximum(w.w_in[i] @ row + w.b_in[i], 0)
                     for row in x]
            rest = target - x @ w.w_last  # what the blocks add: the skip path taken out
            out[i, j] = np.corrcoef(added, rest)[0, 1] if np.std(added) > 0 else 0.0
    return out


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 5), st.integers(3, 30), st.integers(1, 6), st.integers(1, 7),
       st.integers(0, 2**32 - 1))
def test_data_evidence_matches_its_definition(n, m, d, h, seed):
    rng = np.random.default_rng(seed)
    w = random_stack(rng, n, d, h).weights
    x, target = rng.standard_normal((m, d)), rng.standard_normal(m)
    np.testing.assert_allclose(data_evidence(w, x, target), naive_evidence(w, x, target),
                               atol=1e-9)


def test_data_evidence_reads_only_its_rows():
    rng = np.random.default_rng(1)
    w = random_stack(rng, 3, 4, 5).weights
    x, target = rng.standard_normal((40, 4)), rng.standard_normal(40)
    x2, target2 = x.copy(), target.copy()
    x2[10:], target2[10:] = 9.0, -9.0
    np.testing.assert_array_equal(data_evidence(w, x, target, rows=10),
                                  data_evidence(w, x2, target2, rows=10))


def test_standardise_centres_columns_and_scales_rows():
    z = standardise(np.random.default_rng(2).standard_normal((6, 6)) * 5 + 3)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=0), 1, atol=1e-9)


def test_clean_ratio_reads_no_data():
    rng = np.random.default_rng(3)
    stack = random_stack(rng, 6, 8, 16, paired=2.0)
    assert pair_by_dominance(stack).margin > 1
    pairing = pair_with_data(stack, rng.standard_normal((50, 8)), rng.standard_normal(50))
    assert pairing.data is None and [c[0] for c in pairing.candidates()] == ["ratio"]
    np.testing.assert_array_equal(pairing.out_for_in, np.arange(6))


def test_ambiguous_ratio_offers_the_datas_pairing():
    """Unpaired weights, and a target made by the blocks (k, perm[k]): the data evidence
    finds perm, the ratio does not, and every candidate is a permutation."""
    rng = np.random.default_rng(0)
    n, d, h, m = 6, 16, 128, 400
    stack = random_stack(rng, n, d, h)
    w, perm = stack.weights, rng.permutation(n)
    x = rng.standard_normal((m, d))
    target = x @ w.w_last + sum(np.maximum(x @ w.w_in[k].T + w.b_in[k], 0)
                                @ w.w_out[perm[k]].T @ w.w_last for k in range(n))
    pairing = pair_with_data(stack, x, target)
    assert pairing.data is not None and pairing.summary()["data_read"]
    found = {name: out for name, _, out in pairing.candidates()}
    assert not np.array_equal(found["ratio"], perm)
    np.testing.assert_array_equal(found["data"], perm)
    for out in found.values():
        assert sorted(out.tolist()) == list(range(n))


@pytest.mark.parametrize("fixed", [{0: 3}, {1: 1, 4: 0}])
def test_known_pairs_hold_in_every_candidate(fixed):
    rng = np.random.default_rng(5)
    stack = random_stack(rng, 6, 8, 16)
    pairing = pair_with_data(stack, rng.standard_normal((80, 8)), rng.standard_normal(80),
                             fixed=fixed)
    for _, _, out in pairing.candidates():
        assert all(out[i] == j for i, j in fixed.items())


def test_square_pieces_are_matched_and_oriented_by_the_data():
    """h = d: every layer may be an input or an output. A target made by n blocks of 2n
    random d x d layers: the data's candidate finds every pair in its orientation."""
    rng = np.random.default_rng(7)
    n, d, m = 4, 24, 600
    w = rng.standard_normal((2 * n, d, d)) / np.sqrt(d)
    b = 0.1 * rng.standard_normal((2 * n, d))
    w_last = rng.standard_normal(d)
    weights = BlockWeights(w, b, w.copy(), b.copy(), w_last, rng.standard_normal(1))
    ids = np.arange(2 * n)
    stack = Stack(weights, ids, ids.copy(), 2 * n, square=True)
    layers = rng.permutation(2 * n).reshape(n, 2)  # (input, output) of each true block
    x = rng.standard_normal((m, d))
    target = x @ w_last + sum(np.maximum(x @ w[i].T + b[i], 0) @ w[j].T @ w_last
                              for i, j in layers)
    pairing = pair_with_data(stack, x, target)
    assert pairing.data is not None and pairing.data.shape == (2 * n, 2 * n)
    found = {name: (ins, outs) for name, ins, outs in pairing.candidates()}
    ins, outs = found["data"]
    assert sorted(zip(ins.tolist(), outs.tolist())) == sorted(map(tuple, layers.tolist()))


def test_square_pairs_are_separated_either_way_and_oriented_by_the_data():
    """h = d: the margin compares pairs whatever their orientation (before, the reverse
    reading of a chosen pair counted as an unmatched pair, so every h = d network looked
    ambiguous), and the data orients the pairs where the larger ratio gets 3 of 8."""
    pieces, data, perm = planted(8, 600, width=16, hidden=16, seed=2, profile="shuffled")
    stack = assign_roles(pieces)
    truth = {(perm[2 * k], perm[2 * k + 1]) for k in range(8)}

    def pairs(pairing):
        return {(int(stack.in_ids[a]), int(stack.in_ids[b])) for a, b in zip(*pairing.blocks)}
    by_ratio, paired = pair_by_dominance(stack), pair_with_data(stack, data.x, data.pred)
    assert stack.square and paired.margin > 1 and paired.data is None
    assert len(pairs(by_ratio) & truth) == 3 and pairs(paired) == truth
    assert np.array_equal(paired.evidence, paired.evidence.T)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 7), st.booleans(), st.integers(0, 2**32 - 1))
def test_every_candidate_uses_each_layer_once(n, square, seed):
    """Whatever the weights and data, each candidate pairing is n blocks that use every
    layer exactly once (for h = d: all 2n layers, each in one role)."""
    rng = np.random.default_rng(seed)
    d = 6
    if square:
        w = rng.standard_normal((2 * n, d, d))
        b = rng.standard_normal((2 * n, d))
        weights = BlockWeights(w, b, w.copy(), b.copy(), rng.standard_normal(d),
                               rng.standard_normal(1))
        stack = Stack(weights, np.arange(2 * n), np.arange(2 * n), 2 * n, square=True)
    else:
        stack = random_stack(rng, n, d, 9)
    pairing = pair_with_data(stack, rng.standard_normal((30, d)), rng.standard_normal(30))
    for name, ins, outs in pairing.candidates():
        assert len(ins) == len(outs) == n, name
        used = np.concatenate([ins, outs]) if square else ins
        assert sorted(used.tolist()) == list(range(len(used))), name
        assert sorted(outs.tolist()) == sorted(set(outs.tolist())), name
