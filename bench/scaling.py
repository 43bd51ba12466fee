"""Solve time against blocks and rows on planted networks, with block-evaluation counts.

Planted networks are random residual MLPs whose pairs have a strongly negative diagonal
(W_out = -a_k W_in^T + noise) and whose ||W_out||_F rises with depth, like the published
puzzle; pred is their float32 output. They time the machinery (pairing, seeds, search,
certificate) at sizes no trained corpus here reaches; they are not a test of search power.

Run: python bench/scaling.py [--quick] > bench/scaling.md
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from dropnet.io import Data, Piece, Pieces


def planted(n: int, m: int, d: int = 48, h: int = 96, seed: int = 0) -> tuple[Pieces, Data]:
    """Shuffled pieces and data of a planted network (n blocks, m rows)."""
    rng = np.random.default_rng(seed)
    w_in = rng.standard_normal((n, h, d)) / np.sqrt(d)
    scale = np.linspace(0.1, 0.6, n)[:, None, None] / np.sqrt(n / 48)
    w_out = -scale * np.transpose(w_in, (0, 2, 1)) + 0.02 * rng.standard_normal((n, d, h)) / np.sqrt(h)
    b_in, b_out = 0.1 * rng.standard_normal((n, h)), 0.01 * rng.standard_normal((n, d))
    w_last, b_last = rng.standard_normal(d) / np.sqrt(d), 0.1
    x = rng.standard_normal((m, d))
    a = x.astype(np.float32)
    for k in range(n):
        a = a + (np.maximum(a @ w_in[k].T.astype(np.float32) + b_in[k].astype(np.float32), 0)
                 @ w_out[k].T.astype(np.float32) + b_out[k].astype(np.float32))
    pred = (a @ w_last.astype(np.float32) + np.float32(b_last)).astype(np.float64)
    layers = [(w_in[k], b_in[k]) for k in range(n)] + [(w_out[k], b_out[k]) for k in range(n)]
    layers.append((w_last[None, :], np.array([b_last])))
    shuffle = rng.permutation(len(layers))
    items = [None] * len(layers)
    for k, (w, b) in enumerate(layers):
        items[shuffle[k]] = Piece(int(shuffle[k]), w, b, None)
    return (Pieces(tuple(items), None, ("memory",)),
            Data(x, pred, pred, tuple(f"measurement_{i}" for i in range(d))))


def run(n: int, m: int) -> dict:
    from dropnet.solve import SearchOptions, solve_loaded

    pieces, data = planted(n, m)
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
