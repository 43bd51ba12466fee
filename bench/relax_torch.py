"""Experiment: order the blocks by a continuous relaxation (needs torch; not used by dropnet).

Every position p holds a soft mixture of all blocks, x <- x + sum_k P[p, k] block_k(x),
with P = Sinkhorn(L / tau) doubly stochastic; the logits L are fitted by Adam to the MSE
against ``pred`` on minibatches while tau anneals, and the Hungarian assignment of P gives a
hard order, the one of lowest MSE seen being kept. A first round starts from the drift seed
(a Gaussian band of width 8 positions around each block's seed position, or from uniform
logits with ``--init zeros``); later rounds start from the previous round's order with a
narrower band. The result can be handed to ``dropnet solve --start``.

Rank correlations with depth, 2026-11-29 (docs/how-it-works.md, Limits):

- SGD 48-block network (seed 1, 2,000 rows; the search from every seed had stalled at MSE
  0.007-0.017), ``--rounds 2 --solve 120``: drift seed 0.75, round 1 0.94, round 2 0.97;
  certified exactly. (The prototype this script was cut from, with its own random draws:
  0.96 and 0.98; one 60 s solve from there certified in 58.5 s, another ended at 0.00095.)
- Adam 48-block network (this script, ``--rounds 2 --solve 120``): drift 0.85, round 1
  0.94, round 2 0.95; certified exactly.
- SGD 64-block network (d 32): drift 0.59, round 1 0.62, round 2 0.64; not certified. A poor
  seed is not rescued.
- From uniform logits (``--init zeros``), round 1 reached 0.83 on the SGD 48-block network.
- Puzzle-regime 96-block network (d 32), ``--init zeros``: 0.50, then 0.52; the solve from
  there ended at MSE 0.0025, not certified.

Run: python bench/relax_torch.py FOLDER [--rounds 2] [--out start.json] [--solve 60]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import spearmanr

from dropnet import certify
from dropnet.io import find_data, find_pieces_folder, load_data, load_pieces
from dropnet.ordering import seed_order
from dropnet.pairing import pair_with_data
from dropnet.roles import assign_roles


def sinkhorn(logits: torch.Tensor, iters: int = 30) -> torch.Tensor:
    for _ in range(iters):
        logits = logits - torch.logsumexp(logits, 1, keepdim=True)
        logits = logits - torch.logsumexp(logits, 0, keepdim=True)
    return logits.exp()


class Blocks:
    """The n paired blocks as float32 tensors, block k = (blk_in[k], blk_out[k])."""

    def __init__(self, weights, blk_in, blk_out, x, pred):
        t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)
        self.w_in, self.b_in = t(weights.w_in[blk_in]), t(weights.b_in[blk_in])
        self.w_out, self.b_out = t(weights.w_out[blk_out]), t(weights.b_out[blk_out])
        self.w_last, self.b_last = t(weights.w_last), float(np.ravel(weights.b_last)[0])
        self.x, self.pred, self.n = t(x), t(pred), len(blk_in)
        self.weights, self.blk_in, self.blk_out = weights, np.asarray(blk_in), np.asarray(blk_out)
        self.x32, self.pred64 = np.asarray(x, np.float32), np.asarray(pred, np.float64)

    def hard_mse(self, order) -> float:
        """MSE against pred on all rows of the blocks in ``order``, by dropnet's float32
        forward kernel (the certificate's)."""
        out = certify.model_output(self.weights, self.x32, self.blk_in[order],
                                   self.blk_out[order], dtype=np.float32)
        return certify.mse(out, self.pred64)

    def soft_loss(self, p: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        x = self.x[idx]
        for q in range(self.n):
            h = torch.relu(torch.einsum("bd,khd->kbh", x, self.w_in) + self.b_in[:, None, :])
            r = torch.einsum("kbh,kdh->kbd", h, self.w_out) + self.b_out[:, None, :]
            x = x + torch.einsum("k,kbd->bd", p[q], r)
        return ((x @ self.w_last + self.b_last - self.pred[idx]) ** 2).mean()


def relax(blocks: Blocks, start: np.ndarray | None, band: float, steps: int, batch: int,
          tau0: float, seed: int = 0) -> tuple[np.ndarray, float]:
    """One round: (order of lowest hard MSE seen, its MSE on all rows)."""
    gen = torch.Generator().manual_seed(seed)
    n = blocks.n
    logits = torch.zeros(n, n)
    if start is not None:
        pos = np.empty(n, int)
        pos[start] = np.arange(n)
        logits = -torch.tensor((np.arange(n)[:, None] - pos[None, :]) ** 2 / (2 * band**2),
                               dtype=torch.float32)
    logits = (logits + 0.01 * torch.randn(n, n, generator=gen)).requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=0.05)
    best = (np.inf, start)
    for step in range(steps):
        tau = tau0 * (0.03 / tau0) ** (step / max(steps - 1, 1))
        idx = torch.randint(0, blocks.x.shape[0], (batch,), generator=gen)
        loss = blocks.soft_loss(sinkhorn(logits / tau), idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == steps - 1:
            with torch.no_grad():
                order = linear_sum_assignment(-sinkhorn(logits / tau).numpy())[1]
            mse = blocks.hard_mse(order)
            if mse < best[0]:
                best = (mse, order.copy())
    return best[1], best[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--init", choices=["drift", "zeros"], default="drift")
    parser.add_argument("--out", type=Path, default=None, help="write the order as a start file")
    parser.add_argument("--solve", type=float, default=0.0, help="then solve --start for S s")
    args = parser.parse_args()
    pieces = load_pieces(find_pieces_folder(args.folder))
    data = load_data(find_data(pieces.folder))
    stack = assign_roles(pieces)
    blk_in, blk_out = pair_with_data(stack, data.x, data.target).blocks
    blocks = Blocks(stack.weights, blk_in, blk_out, data.x, data.target)
    answer = args.folder / "answer.json"
    truth = json.loads(answer.read_text())["permutation"] if answer.exists() else None

    def report(name, order, mse):
        line = f"{name}: MSE {mse:.4g}"
        if truth is not None:
            depth = {p: k for k, p in enumerate(truth[0:-1:2])}
            got = [depth.get(int(stack.in_ids[blk_in[b]]), -1) for b in order]
            line += f", rank correlation with depth {spearmanr(got, np.arange(len(got)))[0]:.2f}"
        print(line, flush=True)

    weights32 = stack.weights.astype(np.float32)
    order = None if args.init == "zeros" else seed_order(
        "drift", weights32, blk_in, blk_out, data.x[:128].astype(np.float32))
    if order is not None:
        report("drift seed", order, blocks.hard_mse(order))
    plan = [(8.0, 400, 256, 1.0), (3.0, 250, 512, 0.3), (2.0, 200, 1024, 0.2)]
    for r in range(args.rounds):
        band, steps, batch, tau0 = plan[min(r, len(plan) - 1)]
        t = time.perf_counter()
        order, mse = relax(blocks, order, band, steps, batch, tau0, seed=r)
        report(f"round {r + 1} ({time.perf_counter() - t:.0f} s)", order, mse)
    permutation = stack.permutation(blk_in[order], blk_out[order])
    if args.out is not None:
        args.out.write_text(json.dumps(permutation) + "\n")
    if args.solve > 0:
        import dropnet

        result = dropnet.solve(args.folder, start=tuple(permutation), time_limit=args.solve)
        print(f"solve --start: certified {result.certified}, MSE {result.mse:.3g}, "
              f"exact {truth is not None and result.permutation == truth}")


if __name__ == "__main__":
    main()
