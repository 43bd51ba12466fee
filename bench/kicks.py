"""Iterated local search from one seed with one kind of kick, on a generated network: how
fast remove-and-reinsert kicks (`dropnet.search.kick`) and random moves
(`dropnet.search.perturb`) finish a descended seed.

The seed is descended first (adjacent swaps, insertions and swaps within 4 and within 16
positions, on 128 rows); then each kick is followed by a capped descent (adjacent swaps and
insertions within 4) on ``--rows`` rows and kept when it lowers the squared error there.
Prints each improvement (seconds, kick, MSE on the search rows and on all rows) and the
final order as true positions (the folder's answer.json).

Run: python bench/kicks.py FOLDER [--seed-order greedy-rev] [--kicks reinsert|random]
     [--rows 256] [--seconds 60] [--random-seed 0]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from dropnet import certify
from dropnet.io import find_data, load_data, load_pieces
from dropnet.ordering import REVERSED_SEEDS, SEEDS, seed_order
from dropnet.pairing import pair_by_dominance
from dropnet.roles import assign_roles
from dropnet.search import Climber, adjacent_swaps, descend, kick, local_moves, perturb


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seed-order", default="greedy-rev", choices=SEEDS + REVERSED_SEEDS)
    parser.add_argument("--kicks", default="reinsert", choices=["reinsert", "random"])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--random-seed", type=int, default=0)
    args = parser.parse_args()

    stack = assign_roles(load_pieces(args.folder / "pieces"))
    data = load_data(find_data(args.folder))
    blk_in, blk_out = pair_by_dominance(stack).blocks
    tol = certify.tolerance(data.target, stack.blocks)
    x = np.ascontiguousarray(data.x[:128], np.float32)
    order = seed_order(args.seed_order, stack.weights.astype(np.float32), blk_in, blk_out, x)
    climber = Climber(stack.weights, data.x[:128], data.target[:128])
    hoods = [adjacent_swaps, local_moves(4), local_moves(16)]
    state = descend(climber, climber.start(blk_in[order], blk_out[order]), hoods,
                    good_enough=tol, limit=[None, None, 256])

    def all_rows(s) -> float:
        out = certify.model_output(stack.weights, data.x, s.seq_in, s.seq_out, "cpu")
        return certify.mse(out, data.target)

    rng = np.random.default_rng(args.random_seed)
    climber = Climber(stack.weights, data.x[: args.rows], data.target[: args.rows])
    incumbent = climber.start(state.seq_in, state.seq_out)
    print(f"descended {args.seed_order}: MSE {all_rows(incumbent):.3g} on all rows", flush=True)
    t0, kicks = time.perf_counter(), 0
    while time.perf_counter() - t0 < args.seconds:
        kicks += 1
        if args.kicks == "reinsert":
            kicked = kick(climber, incumbent.seq_in, incumbent.seq_out, rng)
        else:
            kicked = perturb(incumbent.seq_in, incumbent.seq_out, rng, int(rng.integers(1, 5)))
        trial = descend(climber, climber.start(*kicked), hoods[:2], good_enough=tol, limit=32)
        if trial.sse < incumbent.sse:
            incumbent, mse = trial, all_rows(trial)
            print(f"{time.perf_counter() - t0:6.1f} s kick {kicks}: MSE {incumbent.sse / climber.rows:.3g}"
                  f" on the search rows, {mse:.3g} on all rows", flush=True)
            if mse <= tol:
                break
    perm = json.loads((args.folder / "answer.json").read_text())["permutation"]
    where = {p: k for k, p in enumerate(perm[0:-1:2])}
    print(f"{kicks} kicks; true positions of the final order:",
          [where[int(stack.in_ids[i])] for i in incumbent.seq_in])


if __name__ == "__main__":
    main()
