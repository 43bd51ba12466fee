"""End to end on the published puzzle (skipped when ../shared/puzzle is absent)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

PUZZLE = Path(__file__).resolve().parents[2] / "shared" / "puzzle"
DIGEST = "093be1cf2d24094db903cbc3e8d33d306ebca49c6accaa264e44b0b675e7d9c4"

pytestmark = pytest.mark.skipif(not (PUZZLE / "pieces").is_dir(), reason="no ../shared/puzzle")


@pytest.fixture(scope="module")
def loaded():
    from dropnet.io import load_data, load_pieces

    return load_pieces(PUZZLE / "pieces"), load_data(PUZZLE / "historical_data.csv")


@pytest.fixture(scope="module")
def result(loaded):
    from dropnet.solve import solve

    return solve(*loaded)


def test_puzzle_is_solved_exactly_and_certified(result):
    text = ",".join(map(str, result.permutation))
    assert hashlib.sha256(text.encode()).hexdigest() == DIGEST
    assert result.certified and result.mse < 1e-12
    assert sorted(result.permutation) == list(range(97))
    assert result.mse_true == pytest.approx(0.1065, abs=5e-4)


def test_dominance_pairing_alone_gets_every_pair(loaded, result):
    from dropnet.pairing import pair_by_dominance
    from dropnet.roles import assign_roles

    stack = assign_roles(loaded[0])
    pairing = pair_by_dominance(stack)
    dominance_pairs = {(int(stack.in_ids[i]), int(stack.out_ids[j]))
                       for i, j in enumerate(pairing.out_for_in)}
    assert dominance_pairs == {tuple(p) for p in result.pairs}
    assert pairing.matched_min > 1.7 and pairing.unmatched_max < 0.6


def test_every_seed_reaches_the_certificate(loaded):
    from dropnet.solve import solve

    for seed in ("greedy", "delta", "wout"):
        assert solve(*loaded, seed=seed).certified, seed


def test_tolerance_separates_the_answer_from_its_nearest_neighbours(loaded, result):
    """No adjacent swap of the answer falls inside the certificate's tolerance."""
    from dropnet import certify
    from dropnet.roles import assign_roles
    from dropnet.pairing import pair_by_dominance

    stack = assign_roles(loaded[0])
    pairing = pair_by_dominance(stack)
    index = {int(p): i for i, p in enumerate(stack.in_ids)}
    order = np.array([index[p] for p in result.order])
    for i in range(len(order) - 1):
        swapped = order.copy()
        swapped[[i, i + 1]] = swapped[[i + 1, i]]
        out = certify.model_output(stack.weights, loaded[1].x, swapped, pairing.out_for_in[swapped])
        assert certify.mse(out, loaded[1].pred) > 100 * result.tolerance
