"""The solver recovers the generated corpus exactly and certifies it."""
from __future__ import annotations

import json

import pytest


def solve_entry(folder, **options):
    from dropnet.solve import solve

    truth = json.loads((folder / "answer.json").read_text())["permutation"]
    return solve(folder, **options), truth


@pytest.mark.slow
def test_small_corpus_networks_are_solved_exactly(corpus):
    for folder in [f for f in corpus if not f.name.startswith("b48")]:
        result, truth = solve_entry(folder, time_limit=120)
        assert result.certified, (folder.name, result.mse)
        assert result.permutation == truth, folder.name


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="known limit (issue 7): on this 48-block generated "
                   "network the best seed (drift) has rank correlation 0.68 with depth, the "
                   "search needs about 0.99 and stalls near MSE 0.02")
def test_48_block_corpus_network(corpus):
    folder = next(f for f in corpus if f.name.startswith("b48"))
    result, truth = solve_entry(folder, time_limit=600, max_evals=150_000)
    assert result.certified and result.permutation == truth
