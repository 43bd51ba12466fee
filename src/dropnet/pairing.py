"""Pair block input layers with output layers by the diagonal dominance ratio.

Training leaves W_out W_in of a true pair with a strongly negative diagonal, so the ratio
|tr(W_out W_in)| / ||W_out W_in||_F is large for true pairs and small for the rest; a linear
assignment maximising the summed ratio picks the pairs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ._kernels import backend
from .assignment import linear_assignment
from .errors import InputError
from .roles import Stack


@dataclass(frozen=True)
class Pairing:
    """``out_for_in[k]`` is the output layer of block k, whose input layer is ``blk_in[k]``
    (default: k) (stack indices);
    ``ratio`` (|tr| / ||.||_F, the dominance ratio) and ``trace`` are (n, n), [input, output]."""

    out_for_in: np.ndarray
    ratio: np.ndarray
    trace: np.ndarray
    frozen: np.ndarray | None = None  # (n_in,) bool: inputs whose pair was given, never repaired
    blk_in: np.ndarray | None = None  # input layer of each block when not simply 0..n-1

    @property
    def blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """(blk_in, blk_out) (n,): block k is input layer blk_in[k], output blk_out[k]."""
        ins = np.arange(len(self.out_for_in)) if self.blk_in is None else self.blk_in
        return ins, self.out_for_in

    @property
    def evidence(self) -> np.ndarray:
        """Pairing evidence (n, n), large for likely pairs: the dominance ratio."""
        return self.ratio

    @property
    def matched(self) -> np.ndarray:
        """Ratios of the chosen pairs, (n,)."""
        return self.ratio[self.blocks]

    @property
    def unmatched_max(self) -> float:
        mask = np.ones_like(self.ratio, dtype=bool)
        mask[self.blocks] = False
        if self.blk_in is not None:  # square pieces: a layer is never paired with itself
            np.fill_diagonal(mask, False)
        return float(self.ratio[mask].max()) if mask.any() else 0.0

    @property
    def matched_min(self) -> float:
        return float(self.matched.min())

    @property
    def margin(self) -> float:
        """Smallest matched ratio over largest unmatched one (> 1: cleanly separated)."""
        return self.matched_min / max(self.unmatched_max, np.finfo(float).tiny)

    def summary(self) -> dict:
        return {"matched_min": self.matched_min, "unmatched_max": self.unmatched_max,
                "margin": self.margin,
                "matched_trace_range": [float(self.trace[self.blocks].min()),
                                        float(self.trace[self.blocks].max())]}


def pair_by_dominance(stack: Stack, kernels: str = "cpu",
                      fixed: dict[int, int] | None = None) -> Pairing:
    """Assign each input layer an output layer, maximising the summed dominance ratio
    |tr(W_out W_in)| / ||W_out W_in||_F. (Not the signed ratio: true pairs usually have a
    negative trace, but a trained network can leave one pair strongly positive — block 0 of
    a generated 48-block network had +19.7 — and the sign would then pair it wrongly.)
    ``fixed`` maps input -> output (stack indices) pairs known in advance; they are kept
    and their layers are not offered to anyone else."""
    if stack.square:
        return pair_square(stack, kernels, fixed)
    k = backend(kernels)
    trace, fro = k.pair_trace_and_frobenius(stack.weights.w_in, stack.weights.w_out)
    fro = np.maximum(fro, np.finfo(np.float64).tiny)
    cost = -np.abs(trace) / fro
    big = 1e6
    for i, j in (fixed or {}).items():
        cost[i, :], cost[:, j] = big, big
        cost[i, j] = -big
    out_for_in = linear_assignment(_finite(cost))
    frozen = np.zeros(stack.blocks, dtype=bool)
    frozen[list((fixed or {}).keys())] = True
    return Pairing(out_for_in, np.abs(trace) / fro, trace, frozen)


def pair_square(stack: Stack, kernels: str = "cpu", fixed: dict[int, int] | None = None) -> Pairing:
    """h = d: match the 2n layers into n pairs by the symmetric evidence
    |tr(A B)| / sqrt(||A B||_F ||B A||_F), then orient each pair by the larger dominance ratio
    (the search flips orientations the data disagrees with)."""
    trace, fro = backend(kernels).pair_trace_and_frobenius(stack.weights.w_in, stack.weights.w_out)
    fro = np.maximum(fro, np.finfo(np.float64).tiny)
    evidence = np.abs(trace) / fro
    sym = np.abs(trace) / np.sqrt(fro * fro.T)
    big = 1e6
    np.fill_diagonal(sym, -big)
    blocks = dict(fixed or {})
    taken = set(blocks) | set(blocks.values())

    def add(a: int, b: int) -> None:  # orient by the larger dominance ratio
        i, j = (a, b) if evidence[a, b] >= evidence[b, a] else (b, a)
        blocks[i] = j
        taken.update((a, b))

    cols = linear_assignment(_finite(-sym))
    for a, b in enumerate(cols):  # mutual choices of the assignment are pairs
        if a < b and cols[b] == a and a not in taken and b not in taken:
            add(int(a), int(b))
    free = [a for a in range(len(sym)) if a not in taken]
    while free:  # the rest greedily by the symmetric evidence
        sub = sym[np.ix_(free, free)]
        a, b = np.unravel_index(np.argmax(sub), sub.shape)
        add(free[a], free[b])
        free = [c for c in free if c not in taken]
    blk_in = np.array(sorted(blocks), dtype=np.int64)
    frozen = np.zeros(len(sym), dtype=bool)
    frozen[list((fixed or {}).keys())] = True
    return Pairing(np.array([blocks[i] for i in blk_in], dtype=np.int64), np.abs(trace) / fro,
                   trace, frozen, blk_in)


def _finite(cost: np.ndarray) -> np.ndarray:
    """The assignment's cost matrix, refused with a one-line error when the products of the
    layers overflow (weights finite but too large for their products)."""
    if not np.all(np.isfinite(cost)):
        raise InputError("the layer products overflow: the pairing evidence is not finite "
                         "(are the weights of a plausible size?)")
    return cost


def known_pairs(stack: Stack, pairs: list) -> dict[int, int]:
    """Known [input piece, output piece] pairs (piece indices) -> {input: output} stack
    indices; refuses pieces of the wrong role or used twice."""
    where_in = {int(p): i for i, p in enumerate(stack.in_ids)}
    where_out = {int(p): j for j, p in enumerate(stack.out_ids)}
    fixed: dict[int, int] = {}
    for pair in pairs:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2
                and all(isinstance(p, int) for p in pair)):
            raise InputError(f"known pairs must be [input piece, output piece]; got {pair!r:.40}")
        if pair[0] not in where_in or pair[1] not in where_out:
            raise InputError(f"known pair {pair}: piece {pair[0]} must be a block input layer "
                             f"and piece {pair[1]} a block output layer")
        i, j = where_in[pair[0]], where_out[pair[1]]
        if i in fixed or j in fixed.values():
            raise InputError(f"known pair {pair}: a piece appears in two pairs")
        fixed[i] = j
    return fixed
