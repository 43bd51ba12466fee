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

    def sequences(self, permutation) -> tuple[np.ndarray, np.ndarray]:
        """The inverse of :meth:`permutation`: an answer (2n+1 piece indices) -> (seq_in,
        seq_out) (n,) stack indices; InputError unless it uses every piece once, block
        inputs and outputs in their places (either role for h = d) and the final layer last."""
        perm = list(permutation)
        n = self.blocks
        if len(perm) != 2 * n + 1 or not all(isinstance(p, (int, np.integer)) for p in perm):
            raise InputError(f"a starting answer needs {2 * n + 1} piece indices; got "
                             f"{len(perm)} items")
        if len({int(p) for p in perm}) != len(perm) or int(perm[-1]) != self.last_id:
            raise InputError("a starting answer must use every piece once and end with the "
                             f"final layer (piece {self.last_id})")
        where_in = {int(p): i for i, p in enumerate(self.in_ids)}
        where_out = {int(p): j for j, p in enumerate(self.out_ids)}
        bad = [int(p) for p in perm[0:-1:2] if int(p) not in where_in]
        bad += [int(p) for p in perm[1:-1:2] if int(p) not in where_out]
        if bad:
            raise InputError(f"a starting answer puts piece {bad[0]} where its shape does not fit "
                             "(expected block input, block output, ..., final layer)")
        return (np.array([where_in[int(p)] for p in perm[0:-1:2]], np.int64),
                np.array([where_out[int(p)] for p in perm[1:-1:2]], np.int64))


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
