"""The relaxation's cost estimate against its measured rounds, the check behind
``relax.SHARPENING``.

For each network folder: a walkers-only solve (``relax_after=1``) of ``--start-seconds``
gives a start order; ``relax.relax`` then runs its default schedule from it with no budget,
every soft step timed and its active share of P recorded. Printed per round: the estimate
without the sharpening factor (what ``relax._costs`` gives divided by SHARPENING), the
measured seconds and their ratio, and the mean active share against the start band's.

Run: python bench/relax_cost.py [--start-seconds 15] DIR...
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def measure(folder: Path, start_seconds: float) -> list[dict]:
    from dropnet import relax
    from dropnet.io import find_data, find_pieces_folder, load_data, load_pieces
    from dropnet.roles import assign_roles
    from dropnet.solve import solve
    from dropnet.verify import sequences

    pieces = load_pieces(find_pieces_folder(folder))
    data = load_data(find_data(pieces.folder))
    stack = assign_roles(pieces)
    start = solve(pieces, data, time_limit=start_seconds, relax_after=1.0)
    seq_in, seq_out = sequences(stack, start.permutation)
    net = relax.SoftNetwork(stack.weights, seq_in, seq_out)
    x32 = np.ascontiguousarray(data.x, np.float32)
    plans = list(relax.ROUNDS[:2])
    estimates = [c / relax.SHARPENING for c in relax._costs(net, x32, data.target, plans)]
    steps, real = [], relax.SoftNetwork.loss_and_grad  # (rows, active share, seconds) per step

    def timed(self, p, x, target):
        t = time.perf_counter()
        out = real(self, p, x, target)
        active = float(np.mean(p >= relax.active_threshold(len(p))))
        steps.append((len(x), active, time.perf_counter() - t))
        return out

    relax.SoftNetwork.loss_and_grad = timed
    try:
        relax.relax(stack.weights, seq_in, seq_out, data.x, data.target, np.arange(len(seq_in)))
    finally:
        relax.SoftNetwork.loss_and_grad = real
    rows, first = [], 0
    for plan, estimate in zip(plans, estimates):  # no budget: every round does all its steps
        mine, first = steps[first: first + plan.steps], first + plan.steps
        seconds = sum(s[2] for s in mine)
        rows.append({"network": folder.name, "blocks": stack.blocks, "round": plan,
                     "estimate": estimate, "seconds": seconds,
                     "share": np.mean([s[1] for s in mine]),
                     "band_share": relax._active_share(stack.blocks, plan)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--start-seconds", type=float, default=15.0)
    args = parser.parse_args()
    print("| network | blocks | round (band, steps, batch) | estimate s (no sharpening) | "
          "soft steps s | ratio | active share | start band's share |")
    print("|---|---|---|---|---|---|---|---|")
    for folder in args.folders:
        for r in measure(folder, args.start_seconds):
            plan = r["round"]
            print(f"| {r['network']} | {r['blocks']} | {plan.band:g}, {plan.steps}, {plan.batch} | "
                  f"{r['estimate']:.1f} | {r['seconds']:.1f} | {r['seconds'] / r['estimate']:.2f} | "
                  f"{r['share']:.3f} | {r['band_share']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
