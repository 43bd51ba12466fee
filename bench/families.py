"""Families of generated dropped networks, and how many dropnet certifies.

Trains each family with the generator (`dropnet.generate`), drops it, solves it with the
default options and a time limit, and prints a markdown table: shape, recipe, rows, pairing
signal, certified, exact (equal to answer.json), block evaluations, seconds.

Run: python bench/families.py [--out DIR] [--time-limit S] [--quick] > docs/families.md
With --time-limit inf --max-evals N the budget is block evaluations and every solve repeats
exactly (the table's seconds still depend on the machine).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

FAMILIES = [  # (regime, overrides)
    ("strong", {"blocks": 8, "width": 16, "hidden": 32, "rows": 2000}),
    ("strong", {"blocks": 8, "width": 16, "hidden": 64, "rows": 256}),
    ("strong", {"blocks": 16, "width": 24, "hidden": 48, "rows": 2000}),
    ("strong", {"blocks": 16, "width": 24, "hidden": 48, "rows": 2000, "optimizer": "adam", "lr": 1e-3}),
    ("strong", {"blocks": 16, "width": 24, "hidden": 48, "rows": 2000, "weight_decay": 1e-3}),
    ("strong", {"blocks": 8, "width": 16, "hidden": 16, "rows": 1000}),
    ("strong", {"blocks": 32, "width": 32, "hidden": 64, "rows": 2000}),
    ("strong", {"blocks": 48, "width": 48, "hidden": 96, "rows": 2000}),
    ("weak", {"blocks": 16, "width": 24, "hidden": 48, "rows": 2000, "epochs": 20}),
    ("strong_adam", {"blocks": 48, "width": 48, "hidden": 96, "rows": 2000}),
    ("strong", {"blocks": 64, "width": 32, "hidden": 64, "rows": 2000}),
    ("strong", {"blocks": 96, "width": 32, "hidden": 64, "rows": 2000}),
    ("weak", {"blocks": 8, "width": 16, "hidden": 32, "rows": 2000}),
    ("weak", {"blocks": 12, "width": 16, "hidden": 32, "rows": 2000}),
    ("weak", {"blocks": 16, "width": 24, "hidden": 48, "rows": 2000}),
    ("weak", {"blocks": 48, "width": 48, "hidden": 96, "rows": 2000}),
]
QUICK = FAMILIES[:3]
EXTRA = [  # --extra: shapes, depths and recipes the solver was not tuned on (stop 18)
    ("puzzle", {"blocks": 24, "width": 32, "hidden": 64}),
    ("strong", {"blocks": 16, "width": 64, "hidden": 32}),  # h < d
    ("strong_adam", {"blocks": 24, "width": 32, "hidden": 128}),
    ("strong", {"blocks": 24, "width": 32, "hidden": 64, "rows": 256}),
    ("weak", {"blocks": 32, "width": 32, "hidden": 64, "epochs": 10}),
    ("strong", {"blocks": 32, "width": 32, "hidden": 32}),  # h = d
    ("strong", {"blocks": 4, "width": 8, "hidden": 8}),  # h = d
    ("strong_adam", {"blocks": 24, "width": 32, "hidden": 64, "weight_decay": 1e-2}),
    ("strong", {"blocks": 128, "width": 16, "hidden": 32}),
    ("strong", {"blocks": 1, "width": 8, "hidden": 16}),
    ("strong", {"blocks": 2, "width": 8, "hidden": 16, "rows": 300}),
    ("strong_adam", {"blocks": 32, "width": 16, "hidden": 64, "rows": 500}),
    ("strong_adam", {"blocks": 24, "width": 16, "hidden": 64}),
    ("puzzle", {"blocks": 32, "width": 32, "hidden": 96}),
    ("strong", {"blocks": 24, "width": 64, "hidden": 128}),
    ("strong", {"blocks": 48, "width": 32, "hidden": 64}),
    ("strong_adam", {"blocks": 24, "width": 24, "hidden": 24}),  # h = d
    ("weak", {"blocks": 16, "width": 24, "hidden": 24, "epochs": 5}),  # h = d
    ("strong", {"blocks": 32, "width": 32, "hidden": 64, "rows": 256}),
    ("strong_adam", {"blocks": 32, "width": 32, "hidden": 64, "weight_decay": 0.05}),
    ("strong", {"blocks": 12, "width": 8, "hidden": 32}),
]


def run_family(regime: str, overrides: dict, out: Path, seed: int, time_limit: float,
               max_evals: int | None = None) -> dict:
    from dropnet.generate import drop, recipe
    from dropnet.solve import solve

    config = recipe(regime, seed=seed, **overrides)
    folder = out / f"{regime}_{'_'.join(f'{k}{v}' for k, v in overrides.items())}_s{seed}"
    summary = drop(folder, config, overwrite=True)
    truth = json.loads((folder / "answer.json").read_text())["permutation"]
    t = time.perf_counter()
    budget = {} if max_evals is None else {"max_evals": max_evals}  # None: no limit
    result = solve(folder, time_limit=time_limit, **budget)
    return {"regime": regime, "blocks": config.blocks, "width": config.width,
            "hidden": config.hidden, "rows": config.rows, **overrides, "seed": seed,
            "assignment_accuracy": summary.signal.accuracy,
            "certified": result.certified, "exact": result.permutation == truth,
            "mse": result.mse, "block_evals": result.search["block_evals"],
            "seconds": time.perf_counter() - t}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=None, help="keep the networks here")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds; inf: none")
    parser.add_argument("--max-evals", type=int, default=None, help="block evaluations")
    parser.add_argument("--seeds", type=int, default=1, help="networks per family")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--extra", action="store_true",
                        help="the EXTRA families instead (shapes the solver was not tuned on)")
    parser.add_argument("--families", type=str, default=None,
                        help="comma-separated indices into FAMILIES (or EXTRA; default: all)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="dropnet-families-"))
    pool = EXTRA if args.extra else FAMILIES
    chosen = (QUICK if args.quick else pool if args.families is None
              else [pool[int(i)] for i in args.families.split(",")])
    print("| recipe | blocks | d | h | rows | other | nets | pairing acc. (median) | "
          "certified | exact | MSE (worst) | block evals (median) | solve s (median) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for regime, overrides in chosen:
        runs = [run_family(regime, overrides, out, seed, args.time_limit, args.max_evals)
                for seed in range(args.seeds)]
        other = ", ".join(f"{k}={v}" for k, v in overrides.items()
                          if k not in ("blocks", "width", "hidden", "rows")) or "-"
        med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
        r0 = runs[0]
        print(f"| {regime} | {r0['blocks']} | {r0['width']} | {r0['hidden']} | {r0['rows']} | "
              f"{other} | {len(runs)} | {med('assignment_accuracy'):.2f} | "
              f"{sum(r['certified'] for r in runs)}/{len(runs)} | "
              f"{sum(r['exact'] for r in runs)}/{len(runs)} | "
              f"{max(r['mse'] for r in runs):.3g} | {med('block_evals'):.0f} | "
              f"{med('seconds'):.1f} |", flush=True)


if __name__ == "__main__":
    main()
