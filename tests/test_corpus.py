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
def test_48_block_corpus_network_is_certified_with_the_relaxation(corpus):
    """The walkers alone stall on this 48-block network (its best seed, drift, has rank
    correlation 0.68 with depth; 300 s of iterated local search end near MSE 0.009). The
    relaxation, run straight after the seeds' descents (relax_after=0), orders it closely
    enough for the walk to certify it: 204 s on the project's 2-core AVX2 machine (119 s of
    them the relaxation's full schedule), 128 s on its 2-core AVX-512 machine. How much of
    the schedule runs depends on a timed step (a busy machine gets less), so only that it
    ran and that the answer descends from it are asserted."""
    folder = next(f for f in corpus if f.name.startswith("b48"))
    result, truth = solve_entry(folder, time_limit=600, relax_after=0.0)
    assert result.certified and result.permutation == truth
    assert result.seed.startswith("relax") and result.search["relax"][0]["mse"] is not None
