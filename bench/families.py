"""Families of generated dropped networks, and how many dropnet certifies.

Trains each family with the generator (`dropnet.generate`), drops it, solves it with the
default options and a time limit, and prints a markdown table: shape, recipe, rows, pairing
signal, certified, exact (equal to answer.json), block evaluations, seconds.

Run: python bench/families.py [--out DIR] [--time-limit S] [--quick] > docs/families.md
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

FAMILIES = [  # (regime, overrides)
    ("strong", dict(blocks=8, width=16, hidden=32, rows=2000)),
    ("strong", dict(blocks=8, width=16, hidden=64, rows=256)),
    ("strong", dict(blocks=16, width=24, hidden=48, rows=2000)),
    ("strong", dict(blocks=16, width=24, hidden=48, rows=2000, optimizer="adam", lr=1e-3)),
    ("strong", dict(blocks=16, width=24, hidden=48, rows=2000, weight_decay=1e-3)),
    ("strong", dict(blocks=8, width=16, hidden=16, rows=1000)),
    ("strong", dict(blocks=32, width=32, hidden=64, rows=2000)),
    ("weak", dict(blocks=16, width=24, hidden=48, rows=2000, epochs=20)),
]
QUICK = FAMILIES[:3]


def run_family(regime: str, overrides: dict, out: Path, seed: int, time_limit: float) -> dict:
    from dropnet.generate import drop, recipe
    from dropnet.solve import solve

    config = recipe(regime, seed=seed, **overrides)
    folder = out / f"{regime}_{'_'.join(f'{k}{v}' for k, v in overrides.items())}_s{seed}"
    summary = drop(folder, config, overwrite=True)
    truth = json.loads((folder / "answer.json").read_text())["permutation"]
    t = time.perf_counter()
    result = solve(folder, time_limit=time_limit)
    return {"regime": regime, **overrides, "seed": seed,
            "assignment_accuracy": summary.signal.accuracy,
            "certified": result.certified, "exact": result.permutation == truth,
            "mse": result.mse, "block_evals": result.search["block_evals"],
            "seconds": time.perf_counter() - t}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=None, help="keep the networks here")
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--seeds", type=int, default=1, help="networks per family")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="dropnet-families-"))
    print("| recipe | blocks | d | h | rows | other | pairing acc. | certified | exact | "
          "MSE | block evals | solve s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for regime, overrides in (QUICK if args.quick else FAMILIES):
        for seed in range(args.seeds):
            r = run_family(regime, overrides, out, seed, args.time_limit)
            other = ", ".join(f"{k}={v}" for k, v in overrides.items()
                              if k not in ("blocks", "width", "hidden", "rows")) or "-"
            print(f"| {regime} | {r['blocks']} | {r['width']} | {r['hidden']} | {r['rows']} | "
                  f"{other} | {r['assignment_accuracy']:.2f} | {r['certified']} | {r['exact']} | "
                  f"{r['mse']:.3g} | {r['block_evals']} | {r['seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
