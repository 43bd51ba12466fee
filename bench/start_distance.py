"""How close to the answer a start must be for the search to certify it.

For a generated network (a folder with pieces/, historical_data.csv and the generator's
answer.json), each run starts the search (``start=``) from the true order with every block's
position perturbed by Gaussian noise of standard deviation sigma and then sorted, the pairs
kept true, and prints a markdown table: sigma, the start's rank correlation with the true
order, certified, MSE on all rows, seconds.

Run: python bench/start_distance.py FOLDER [--sigmas 1,3,6] [--time-limit 40] [--rows 128]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def perturbed(perm: list[int], sigma: float, rng: np.random.Generator) -> tuple[list[int], float]:
    """The answer with its blocks reordered by sorting position + N(0, sigma²); and the
    rank correlation of the new order with the true one."""
    from scipy.stats import spearmanr

    n = (len(perm) - 1) // 2
    order = np.argsort(np.arange(n) + sigma * rng.standard_normal(n), kind="stable")
    start = [p for k in order for p in perm[2 * k: 2 * k + 2]] + [perm[-1]]
    return start, float(spearmanr(order, np.arange(n))[0]) if n > 1 else 1.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--sigmas", default="1,3,6")
    parser.add_argument("--time-limit", type=float, default=40.0)
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--random-seed", type=int, default=0)
    args = parser.parse_args()

    from dropnet import solve
    from dropnet.io import find_data, load_data, load_pieces

    truth = json.loads((args.folder / "answer.json").read_text())["permutation"]
    pieces, data = load_pieces(args.folder / "pieces"), load_data(find_data(args.folder))
    rng = np.random.default_rng(args.random_seed)
    print("| sigma | start's rank correlation | certified | MSE (all rows) | seconds |")
    print("|---|---|---|---|---|")
    for sigma in (float(s) for s in args.sigmas.split(",")):
        start, rho = perturbed(truth, sigma, rng)
        t = time.perf_counter()
        result = solve(pieces, data, start=tuple(start), time_limit=args.time_limit,
                       rows=args.rows, random_seed=args.random_seed)
        print(f"| {sigma:g} | {rho:.2f} | {result.certified} | {result.mse:.3g} | "
              f"{time.perf_counter() - t:.1f} |", flush=True)


if __name__ == "__main__":
    main()
