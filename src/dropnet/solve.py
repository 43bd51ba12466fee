"""The whole job: pieces + data -> certified permutation (the public entry point)."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import certify
from .errors import InputError
from .io import Data, Pieces, find_data, find_pieces_folder, load_data, load_pieces
from .ordering import SEEDS, seed_order
from .pairing import Pairing, pair_by_dominance
from .roles import Stack, assign_roles
from .search import Climber, SearchLog

DEFAULT_ROWS = 128
Progress = Callable[[str], None]


@dataclass
class Result:
    """A solved network. ``permutation`` (2n+1 piece indices: block k's input layer, its
    output layer, ..., the final layer); ``pairs`` [input piece, output piece] in execution
    order; ``order`` the input piece of each block in execution order; ``mse`` vs the target
    (``pred``, else ``true``) on all rows in float64; ``timings`` in seconds per stage."""

    permutation: list[int]
    pairs: list[list[int]]
    order: list[int]
    mse: float
    mse_true: float | None
    certified: bool
    certifiable: bool
    tolerance: float
    seed: str
    pairing: dict
    search: dict
    timings: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def solve(pieces: str | Path | Pieces, data: str | Path | Data | None = None, *,
          rows: int = DEFAULT_ROWS, seed: str = "auto", kernels: str = "cpu",
          max_rounds: int = 100_000, progress: Progress | None = None) -> Result:
    """Load pieces (a folder, its parent, or :class:`Pieces`) and data (a CSV path,
    :class:`Data`, or None for ``historical_data.csv`` beside the pieces) and solve."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if not isinstance(pieces, Pieces):
        folder = find_pieces_folder(pieces)
        pieces = load_pieces(folder)
    if not isinstance(data, Data):
        data = load_data(data if data is not None else find_data(pieces.folder))
    timings["load"] = time.perf_counter() - t0
    result = solve_loaded(pieces, data, rows=rows, seed=seed, kernels=kernels,
                          max_rounds=max_rounds, progress=progress)
    result.timings = {"load": timings["load"], **result.timings}
    return result


def solve_loaded(pieces: Pieces, data: Data, *, rows: int = DEFAULT_ROWS, seed: str = "auto",
                 kernels: str = "cpu", max_rounds: int = 100_000,
                 progress: Progress | None = None) -> Result:
    """Type, pair, order and certify already loaded pieces and data."""
    say = progress or (lambda message: None)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    stack = assign_roles(pieces)
    if data.x.shape[1] != stack.width:
        raise InputError(f"the data has {data.x.shape[1]} input columns but the pieces have "
                         f"width {stack.width}")
    if seed != "auto" and seed not in SEEDS:
        raise InputError(f"unknown seed order {seed!r}; choose auto or one of {SEEDS}")
    pairing = pair_by_dominance(stack, kernels)
    timings["pair"] = time.perf_counter() - t
    say(f"paired {stack.blocks} blocks: matched ratio >= {pairing.matched_min:.3g}, "
        f"unmatched <= {pairing.unmatched_max:.3g}")
    t = time.perf_counter()
    order, seed_used, log, tol, output = _order(stack, pairing, data, rows, seed, kernels,
                                                max_rounds, say, timings)
    timings["order"] = time.perf_counter() - t - timings.get("certify", 0.0)
    seq_out = pairing.out_for_in[order]
    mse = certify.mse(output, data.target)
    mse_true = certify.mse(output, data.true) if data.true is not None else None
    return Result(
        permutation=stack.permutation(order, seq_out),
        pairs=[[int(stack.in_ids[i]), int(stack.out_ids[j])] for i, j in zip(order, seq_out)],
        order=[int(stack.in_ids[i]) for i in order], mse=mse, mse_true=mse_true,
        certified=bool(data.certifiable and mse <= tol), certifiable=data.certifiable,
        tolerance=tol, seed=seed_used, pairing=pairing.summary(),
        search={"rounds": log.rounds, "candidates": log.candidates,
                "block_evals": log.block_evals, "mse_history": log.mse}, timings=timings)


def _order(stack: Stack, pairing: Pairing, data: Data, rows: int, seed: str, kernels: str,
           max_rounds: int, say: Progress, timings: dict):
    """Seed, climb on a row subset growing x4 until certified; try the next seed if stuck.
    Returns (order, seed name, log, tolerance, float64 model output on all rows)."""
    target = data.target
    tol = certify.tolerance(target, stack.blocks)
    log = SearchLog()
    weights32 = stack.weights.astype(np.float32)
    best = None
    for name in _seed_names(seed):
        order = seed_order(name, weights32, pairing.out_for_in,
                           data.x[: max(rows, 1)].astype(np.float32), kernels)
        m = min(max(rows, 1), data.rows)
        while True:
            climber = Climber(stack.weights, data.x[:m], target[:m], kernels)
            climber.log = log
            state = climber.start(order, pairing.out_for_in[order])
            state = climber.climb(state, max_rounds=max_rounds - log.rounds, good_enough=tol)
            order = state.seq_in
            t = time.perf_counter()
            out = certify.model_output(stack.weights, data.x, order, pairing.out_for_in[order], kernels)
            mse = certify.mse(out, target)
            timings["certify"] = timings.get("certify", 0.0) + time.perf_counter() - t
            say(f"seed {name}: {log.rounds} rounds on {m} rows, MSE {mse:.3g} on all rows")
            if best is None or mse < best[2]:
                best = (order.copy(), name, mse, out)
            if mse <= tol or m >= data.rows or log.rounds >= max_rounds:
                break
            m = min(4 * m, data.rows)
        if best[2] <= tol or log.rounds >= max_rounds:
            break
    order, name, _, output = best
    return order, name, log, tol, output


def _seed_names(seed: str) -> tuple[str, ...]:
    return ("greedy", "delta", "wout") if seed == "auto" else (seed,)
