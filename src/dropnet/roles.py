"""Sort pieces into block input layers, block output layers and the final layer by shape."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._kernels.types import BlockWeights
from .errors import InputError
from .io import Pieces


@dataclass(frozen=True)
class Stack:
    """Typed pieces: ``weights`` stacks the n input layers (w_in (n, h, d), b_in (n, h)) and
    the n output layers (w_out (n, d, h), b_out (n, d)) in piece-index order, float64;
    ``in_ids``/``out_ids`` (n,) are their piece indices, ``last_id`` the final layer's.
    When h = d (``square``), roles cannot be told by shape: both stacks hold all 2n square
    layers and the pairing decides which layer of a pair is the input."""

    weights: BlockWeights
    in_ids: np.ndarray
    out_ids: np.ndarray
    last_id: int
    square: bool = False  # h = d: every layer is d x d and may play either role

    @property
    def blocks(self) -> int:
        n = int(self.in_ids.shape[0])
        return n // 2 if self.square else n

    @property
    def width(self) -> int:
        return int(self.weights.w_in.shape[2])

    @property
    def hidden(self) -> int:
        return int(self.weights.w_in.shape[1])

    def permutation(self, seq_in: np.ndarray, seq_out: np.ndarray) -> list[int]:
        """The answer: 2n+1 piece indices, block k's input then output layer, then the last."""
        perm: list[int] = []
        for i, j in zip(seq_in, seq_out):
            perm += [int(self.in_ids[i]), int(self.out_ids[j])]
        return perm + [int(self.last_id)]


def assign_roles(pieces: Pieces) -> Stack:
    """Type pieces by shape: (1, d) final layer, (h, d) block inputs, (d, h) block outputs."""
    shapes = [p.weight.shape for p in pieces.items]
    finals = [p for p in pieces.items if p.weight.shape[0] == 1]
    if len(finals) != 1:
        raise InputError(f"{pieces.folder}: expected exactly one final layer of shape (1, d), "
                         f"found {len(finals)}")
    d = finals[0].weight.shape[1]
    rest = [p for p in pieces.items if p is not finals[0]]
    inputs = [p for p in rest if p.weight.shape[1] == d and p.weight.shape[0] != d]
    outputs = [p for p in rest if p.weight.shape[0] == d and p.weight.shape[1] != d]
    if any(p.weight.shape == (d, d) for p in rest):
        return _square_stack(pieces, rest, finals[0], d)
    odd = [p for p in rest if p not in inputs and p not in outputs]
    if odd:
        raise InputError(f"{pieces.folder}: piece {odd[0].index} has shape {odd[0].weight.shape}, "
                         f"which fits neither (h, {d}) nor ({d}, h)")
    hidden = {p.weight.shape[0] for p in inputs} | {p.weight.shape[1] for p in outputs}
    if len(hidden) != 1 or len(inputs) != len(outputs) or not inputs:
        raise InputError(f"{pieces.folder}: {len(inputs)} input layers and {len(outputs)} output "
                         f"layers with hidden sizes {sorted(hidden)}; need n and n of one size "
                         f"(shapes seen: {sorted(set(shapes))})")
    weights = BlockWeights(
        np.stack([p.weight for p in inputs]), np.stack([p.bias for p in inputs]),
        np.stack([p.weight for p in outputs]), np.stack([p.bias for p in outputs]),
        finals[0].weight[0].copy(), finals[0].bias.copy())
    return Stack(weights, np.array([p.index for p in inputs]), np.array([p.index for p in outputs]),
                 finals[0].index)


def _square_stack(pieces: Pieces, rest: list, final, d: int) -> Stack:
    """h = d: every block layer is d x d; both roles stack all of them."""
    odd = [p for p in rest if p.weight.shape != (d, d)]
    if odd or len(rest) % 2 or not rest:
        shape = odd[0].weight.shape if odd else None
        raise InputError(f"{pieces.folder}: with ({d}, {d}) pieces every block layer must be "
                         f"({d}, {d}) and their count even; found {len(rest)}"
                         + (f", one of shape {shape}" if shape else ""))
    w = np.stack([p.weight for p in rest])
    b = np.stack([p.bias for p in rest])
    ids = np.array([p.index for p in rest])
    weights = BlockWeights(w, b, w.copy(), b.copy(), final.weight[0].copy(), final.bias.copy())
    return Stack(weights, ids, ids.copy(), final.index, square=True)
