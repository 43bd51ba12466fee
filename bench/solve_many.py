"""Solve generated networks already on disk, one run each, and print a markdown table.

For comparing two versions of the search on the same networks (the test bed of
docs/families.md): each FOLDER holds pieces/, historical_data.csv and the generator's
answer.json; the answer is compared with it.

Run: python bench/solve_many.py [--time-limit S] [--random-seed K] [--relax-after F] FOLDER...
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--random-seed", type=int, default=0)
    parser.add_argument("--relax-after", type=float, default=None,
                        help="share of the time limit before the relaxation (default: solve's)")
    args = parser.parse_args()

    from dropnet import solve

    print("| network | certified | exact | MSE vs pred (all rows) | seconds | relaxation |")
    print("|---|---|---|---|---|---|")
    for folder in args.folders:
        truth = json.loads((folder / "answer.json").read_text())["permutation"]
        started = time.perf_counter()
        extra = {} if args.relax_after is None else {"relax_after": args.relax_after}
        result = solve(folder, time_limit=args.time_limit, random_seed=args.random_seed, **extra)
        relaxed = "; ".join(f"{r['seconds']:.0f} s, " + ("no order" if r["mse"] is None
                                                         else f"MSE {r['mse']:.3g}")
                            for r in result.search["relax"]) or "-"
        print(f"| {folder.name} | {result.certified} | {list(result.permutation) == truth} | "
              f"{result.mse:.3g} | {time.perf_counter() - started:.1f} | {relaxed} |", flush=True)


if __name__ == "__main__":
    main()
