"""Search invariants: valid permutations, monotone accepted MSE, planted answers found."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from dropnet._kernels import BlockWeights, backend
from dropnet.search import (MAX_BATCH, Climber, adjacent_swaps, descend, local_moves,
                            output_exchanges, reinsert)

from test_kernels import random_weights


def planted(seed: int, n: int, m: int = 200, d: int = 6, h: int = 12):
    """Random weights and the target of the identity order (blocks i, i)."""
    rng = np.random.default_rng(seed)
    w = random_weights(rng, n, d, h, scale=1.0)
    x = rng.standard_normal((m, d))
    order = np.arange(n)
    target = backend("reference").network_output(x, w, order, order)
    return rng, w, x, target


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 8))
def test_climb_returns_permutation_and_never_increases_mse(seed, n):
    rng, w, x, target = planted(seed, n)
    start = rng.permutation(n)
    climber = Climber(w, x, target)
    state = climber.start(start, start)
    first = state.sse / climber.rows
    state = climber.climb(state)
    assert sorted(state.seq_in) == list(range(n))
    assert np.array_equal(state.seq_in, state.seq_out)  # pairs travel together
    history = [first] + climber.log.mse
    assert all(b <= a for a, b in zip(history, history[1:]))
    assert climber.log.rounds == len(climber.log.mse)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_cache_stays_consistent_after_accepted_moves(seed):
    rng, w, x, target = planted(seed, 6)
    start = rng.permutation(6)
    climber = Climber(w, x, target, dtype=np.float64)
    state = climber.climb(climber.start(start, start))
    fresh = backend("cpu").prefix_activations(climber.x, climber.weights, state.seq_in, state.seq_out)
    np.testing.assert_allclose(state.acts, fresh, rtol=1e-12, atol=1e-12)
    out = backend("cpu").network_output(climber.x, climber.weights, state.seq_in, state.seq_out)
    assert np.sum((out - target) ** 2) == np.float64(state.sse).item() or \
        abs(np.sum((out - target) ** 2) - state.sse) <= 1e-9 * max(1.0, state.sse)


def test_adjacent_swaps_touch_only_their_span():
    seq = np.arange(5)
    moves = adjacent_swaps(seq, seq + 10)
    assert len(moves) == 4
    for c in range(4):
        changed = np.flatnonzero(moves.seq_in[c] != seq)
        assert list(changed) == [moves.lo[c], moves.hi[c]]
        assert sorted(moves.seq_out[c]) == list(range(10, 15))


def exchanged(moves, seq_in, seq_out) -> set:
    """The new (input, output) pairs of each move, as frozensets."""
    before = set(zip(seq_in.tolist(), seq_out.tolist()))
    return {frozenset(set(zip(moves.seq_in[c].tolist(), moves.seq_out[c].tolist())) - before)
            for c in range(len(moves))}


def test_exchanges_keep_plausible_pairs_and_still_undo_a_crossed_cycle():
    """Input 0's near-tied alternative is output 1, but output 0 is implausible for input 1:
    the exchange is offered without ``plausible`` and withheld with it. From a 3-cycle of
    crossed pairs (no pair plausible) the exchanges that mend one pair stay on offer."""
    seq = np.arange(3)
    alternatives = np.array([[1], [-1], [-1]])
    plausible = np.eye(3, dtype=bool)
    plausible[0, 1] = True
    assert exchanged(output_exchanges(alternatives)(seq, seq), seq, seq) == {frozenset({(0, 1), (1, 0)})}
    assert len(output_exchanges(alternatives, plausible=plausible)(seq, seq)) == 0
    cycled = np.array([1, 2, 0])  # input 0 holds output 1, 1 holds 2, 2 holds 0
    own = np.arange(3)[:, None]
    moves = output_exchanges(own, plausible=np.eye(3, dtype=bool))(seq, cycled)
    assert exchanged(moves, seq, cycled) == {
        frozenset({(0, 0), (2, 1)}), frozenset({(0, 2), (1, 1)}), frozenset({(1, 0), (2, 2)})}


def test_a_step_stops_between_batches_at_the_deadline():
    """At the answer no move improves: without a deadline every move is evaluated exactly
    (in batches of at most MAX_BATCH); with a deadline already past, only the first batch."""
    _, w, x, target = planted(5, 24)
    seq = np.arange(24)
    moves = local_moves(24)(seq, seq)
    assert len(moves) > MAX_BATCH
    counts = []
    for deadline in (np.inf, 0.0):
        climber = Climber(w, x, target, dtype=np.float64)
        state = climber.start(seq, seq)
        before = climber.log.candidates
        assert not climber.step(state, moves, deadline=deadline)
        counts.append(climber.log.candidates - before)
    assert counts == [len(moves), climber.screen]


def test_a_step_evaluates_in_batches_growing_to_max_batch(monkeypatch):
    """The screened moves are evaluated exactly 8, 32, 128, then MAX_BATCH at a time."""
    _, w, x, target = planted(5, 24)
    seq = np.arange(24)
    moves = local_moves(24)(seq, seq)
    climber = Climber(w, x, target, dtype=np.float64)
    state = climber.start(seq, seq)
    sizes, real = [], Climber._try
    monkeypatch.setattr(Climber, "_try", lambda self, st, mv, subset: sizes.append(len(subset))
                        or real(self, st, mv, subset))
    assert not climber.step(state, moves)
    full = [8, 32, 128] + [MAX_BATCH] * ((len(moves) - 168) // MAX_BATCH)
    assert sizes[: len(full)] == full and sum(sizes) == len(moves)
    assert all(size <= MAX_BATCH for size in sizes)


def test_one_swap_away_is_repaired():
    _, w, x, target = planted(11, 7)
    seq = np.arange(7)
    seq[[2, 3]] = seq[[3, 2]]
    climber = Climber(w, x, target, dtype=np.float64)
    state = climber.climb(climber.start(seq, seq))
    assert list(state.seq_in) == list(range(7))
    assert state.sse / climber.rows < 1e-20


def test_first_order_ranking_uses_the_screening_rows_only():
    """With screen_rows < rows the ranking is the first-order change on the first screen_rows
    rows (acts and adjoint of those rows only); exact evaluation still uses every row."""
    rng, w, x, target = planted(5, 6, m=64)
    climber = Climber(w, x, target, screen_rows=16)
    state = climber.start(rng.permutation(6), np.arange(6))
    moves = adjacent_swaps(state.seq_in, state.seq_out)
    ranked = climber._first_order(state, moves)
    cpu = backend("cpu")
    acts = np.ascontiguousarray(state.acts[:, :16])
    grads = cpu.adjoint_gradients(acts, climber.weights, state.seq_in, state.seq_out, target[:16])
    expect = cpu.first_order_deltas(acts, grads, climber.weights, moves.lo, moves.hi,
                                    moves.seq_in, moves.seq_out)
    np.testing.assert_allclose(ranked, expect, rtol=1e-6)
    assert state.grads.shape == (7, 16, 6) and state.acts.shape == (7, 64, 6)


def test_descend_stops_at_its_evaluation_budget():
    """A descent from a reversed order, unbounded and then with max_evals a tenth of what
    it used: the bounded one stops at the first step past its budget, higher up."""
    _, w, x, target = planted(9, 10)
    seq = np.arange(10)[::-1].copy()
    hoods = [adjacent_swaps, local_moves(4)]
    full = Climber(w, x, target, dtype=np.float64)
    free = descend(full, full.start(seq, seq), hoods)
    cap = full.log.block_evals // 10
    bounded = Climber(w, x, target, dtype=np.float64)
    state = descend(bounded, bounded.start(seq, seq), hoods, max_evals=cap)
    assert cap <= bounded.log.block_evals < full.log.block_evals
    assert state.sse > free.sse


def test_reinsertion_with_flips_puts_a_block_back_the_right_way_round():
    """h = d: a block whose two layers play the wrong roles, taken out and put back with
    ``flips``, returns in its true orientation; without, its roles are kept."""
    rng = np.random.default_rng(3)
    n, d, m = 5, 6, 120
    layers = rng.standard_normal((2 * n, d, d)) / np.sqrt(d)
    bias = 0.1 * rng.standard_normal((2 * n, d))
    w = BlockWeights(layers, bias, layers.copy(), bias.copy(), rng.standard_normal(d),
                     np.zeros(1))
    seq_in, seq_out = np.arange(0, 2 * n, 2), np.arange(1, 2 * n, 2)
    x = rng.standard_normal((m, d))
    target = backend("reference").network_output(x, w, seq_in, seq_out)
    wrong_in, wrong_out = seq_in.copy(), seq_out.copy()
    wrong_in[2], wrong_out[2] = seq_out[2], seq_in[2]
    climber = Climber(w, x, target, dtype=np.float64)
    fixed = reinsert(climber, wrong_in, wrong_out, np.array([2]), flips=True)
    assert np.array_equal(fixed[0], seq_in) and np.array_equal(fixed[1], seq_out)
    kept = reinsert(climber, wrong_in, wrong_out, np.array([2]))
    assert {(int(a), int(b)) for a, b in zip(*kept)} == set(zip(wrong_in.tolist(),
                                                                wrong_out.tolist()))
