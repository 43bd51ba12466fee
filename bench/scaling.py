"""Solve time against blocks and rows on planted networks, with block-evaluation counts.

Planted networks (``dropnet.generate.planted``) are random residual MLPs whose pairs have a
strongly negative diagonal (W_out = -a_k W_in^T + noise) and whose ||W_out||_F rises with
depth, like the published puzzle; pred is their float32 output. They time the machinery (pairing, seeds, search,
certificate) at sizes no trained corpus here reaches; they are not a test of search power.

Run: python bench/scaling.py [--quick] > bench/scaling.md
"""
from __future__ import annotations

import argparse
import time

from dropnet.generate import planted


def run(n: int, m: int) -> dict:
    from dropnet.solve import SearchOptions, solve_loaded

    pieces, data, _ = planted(n, m)
    t = time.perf_counter()
    result = solve_loaded(pieces, data, SearchOptions(time_limit=120))
    return {"blocks": n, "rows": m, "seconds": time.perf_counter() - t,
            "certified": result.certified, "block_evals": result.search["block_evals"],
            **{k: v for k, v in result.timings.items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    args = parser.parse_args()
    run(8, 256)  # warm-up: JIT and cache loading never count
    sizes = ([(48, 1000), (96, 1000)] if args.quick else
             [(48, 10_000), (96, 10_000), (192, 10_000), (384, 10_000),
              (48, 256), (48, 1_000), (48, 100_000)])
    print("| blocks | rows | solve s | pair s | order s | certify s | block evals | certified |")
    print("|---|---|---|---|---|---|---|---|")
    for n, m in sizes:
        r = run(n, m)
        print(f"| {n} | {m} | {r['seconds']:.3f} | {r['pair']:.3f} | {r['order']:.3f} | "
              f"{r.get('certify', 0):.3f} | {r['block_evals']} | {r['certified']} |", flush=True)


if __name__ == "__main__":
    main()
