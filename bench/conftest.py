"""Shared fixtures of the benchmarks: the published puzzle (skipped when absent)."""
from __future__ import annotations

from pathlib import Path

import pytest

PUZZLE = Path(__file__).resolve().parents[2] / "shared" / "puzzle"


@pytest.fixture(scope="session")
def puzzle():
    if not (PUZZLE / "pieces").is_dir():
        pytest.skip("no ../shared/puzzle")
    from dropnet.io import load_data, load_pieces

    return load_pieces(PUZZLE / "pieces"), load_data(PUZZLE / "historical_data.csv")


@pytest.fixture(scope="session")
def warm(puzzle):
    """Run one solve first so JIT compilation and cache loading never count as solve time."""
    from dropnet.solve import solve

    solve(*puzzle)
    return puzzle
