"""Shared fixtures: where the published puzzle lives (tests skip without it) and a small
solvable network written to a temporary folder."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # tests import helpers_pieces as a plain module

PUZZLE = TESTS.parents[1] / "shared" / "puzzle"


@pytest.fixture(scope="session")
def puzzle() -> Path:
    """The published puzzle folder (``../shared/puzzle``); skips the test when absent."""
    if not (PUZZLE / "pieces").is_dir() or not (PUZZLE / "historical_data.csv").is_file():
        pytest.skip("no ../shared/puzzle")
    return PUZZLE


@pytest.fixture
def small_net(tmp_path):
    """(folder with pieces/ and historical_data.csv, true permutation) of a 4-block d=8 h=16
    network, pieces shuffled."""
    from helpers_pieces import write_network

    return tmp_path, write_network(tmp_path, seed=3)


@pytest.fixture(scope="session")
def corpus(request, tmp_path_factory):
    """The generator's default corpus (dropnet.generate.CORPUS), built once and cached on
    disk in pytest's cache folder (about 25 s the first time), reused by later sessions."""
    from dropnet.generate import build_corpus

    cache = getattr(request.config, "cache", None)
    folder = cache.mkdir("dropnet-corpus") if cache is not None else tmp_path_factory.mktemp("corpus")
    return build_corpus(folder)
