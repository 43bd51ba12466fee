"""The published puzzle, stage by stage, after warm-up; the naive baseline in the same run.

Run: python -m pytest bench/test_bench_puzzle.py --benchmark-enable --benchmark-columns=median,min,max
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from conftest import PUZZLE


def test_load_pieces(benchmark, warm):
    from dropnet.io import load_pieces

    benchmark(load_pieces, PUZZLE / "pieces")


def test_load_data(benchmark, warm):
    from dropnet.io import load_data

    benchmark(load_data, PUZZLE / "historical_data.csv")


def test_pair(benchmark, warm):
    from dropnet.pairing import pair_by_dominance
    from dropnet.roles import assign_roles

    stack = assign_roles(warm[0])
    benchmark(pair_by_dominance, stack)


@pytest.mark.parametrize("precision", ["check", "float64"])
def test_certify(benchmark, warm, precision):
    """The certificate as a solve runs it (``check``: float32, float64 only near the
    tolerance) and the float64 forward pass alone, for comparison."""
    from dropnet import certify
    from dropnet.pairing import pair_by_dominance
    from dropnet.roles import assign_roles
    from dropnet.solve import solve

    stack = assign_roles(warm[0])
    pairing = pair_by_dominance(stack)
    result = solve(*warm)
    index = {int(p): i for i, p in enumerate(stack.in_ids)}
    order = np.array([index[p] for p in result.order])
    args = (stack.weights, warm[1].x, order, pairing.out_for_in[order])
    if precision == "float64":
        benchmark(certify.model_output, *args)
    else:
        tol = certify.tolerance(warm[1].target, stack.blocks)
        err, _ = benchmark(certify.check, *args, warm[1].target, tol)
        assert err <= tol


def test_solve_after_loading(benchmark, warm):
    """Pairing + ordering + certification on all 10,000 rows (the issue's 'solve time')."""
    from dropnet.solve import solve_loaded

    result = benchmark(solve_loaded, *warm)
    assert result.certified
    benchmark.extra_info.update({k: round(v, 4) for k, v in result.timings.items()})
    benchmark.extra_info["block_evals"] = result.search["block_evals"]


def test_naive_baseline(benchmark, warm):
    """The published algorithm, plainly written (one round: it takes seconds)."""
    from naive import naive_solve
    from dropnet.roles import assign_roles

    w = assign_roles(warm[0]).weights
    args = (w.w_in, w.b_in, w.w_out, w.b_out, w.w_last, w.b_last[0], warm[1].x, warm[1].pred)
    order, _, mse = benchmark.pedantic(naive_solve, args=args, rounds=1, iterations=1)
    benchmark.extra_info["mse"] = mse
    assert mse < 1e-12


@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_cli_end_to_end(benchmark, puzzle, cache):
    """`dropnet solve` from the shell: Python start, imports, loading, solving. 'cold' uses
    an empty Numba cache directory (every kernel compiles); 'warm' reuses one."""
    cache_dir = tempfile.mkdtemp(prefix="dropnet-numba-")
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    command = [sys.executable, "-m", "dropnet.cli", "solve", str(PUZZLE), "-q"]
    if cache == "warm":
        subprocess.run(command, env=env, check=True, capture_output=True)

    def run():
        if cache == "cold":
            for path in os.listdir(cache_dir):
                subprocess.run(["rm", "-rf", os.path.join(cache_dir, path)], check=True)
        t = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        return time.perf_counter() - t

    rounds = 1 if cache == "cold" else 5
    benchmark.pedantic(run, rounds=rounds, iterations=1)


def test_numba_floor(benchmark, tmp_path):
    """What any Numba program pays from the shell on this machine: Python start, ``import
    numba`` and one trivial kernel loaded from a warm cache, leaving as ``dropnet`` does
    (``os._exit``, no interpreter teardown). The warm CLI figure less this one is what
    dropnet itself spends."""
    (tmp_path / "floor_kernel.py").write_text(
        "from numba import njit\n\n\n@njit(cache=True)\ndef one(x):\n    return x + 1\n")
    command = [sys.executable, "-c", "import os, floor_kernel; floor_kernel.one(1); os._exit(0)"]
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    subprocess.run(command, cwd=tmp_path, env=env, check=True)

    def run():
        t = time.perf_counter()
        subprocess.run(command, cwd=tmp_path, env=env, check=True)
        return time.perf_counter() - t

    benchmark.pedantic(run, rounds=5, iterations=1)
