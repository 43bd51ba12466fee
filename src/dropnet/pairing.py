"""Pair block input layers with output layers by the diagonal dominance ratio, and by the
data when the ratio is ambiguous.

Training leaves W_out W_in of a true pair with a strongly negative diagonal, so the ratio
|tr(W_out W_in)| / ||W_out W_in||_F is large for true pairs and small for the rest; a linear
assignment maximising the summed ratio picks the pairs. Briefly trained networks have no such
diagonal yet; their blocks' contributions already point at the target, which the data shows
(:func:`data_evidence`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ._kernels import backend
from ._kernels.types import BlockWeights
from .assignment import linear_assignment
from .errors import InputError
from .roles import Stack

DATA_ROWS = 2000  # rows the data evidence reads


@dataclass(frozen=True)
class Pairing:
    """``out_for_in[k]`` is the output layer of block k, whose input layer is ``blk_in[k]``
    (default: k) (stack indices);
    ``ratio`` (|tr| / ||.||_F, the dominance ratio) and ``trace`` are (n, n), [input, output]
    ((2n, 2n) for h = d), and so is ``data`` (:func:`data_evidence`) when it was read."""

    out_for_in: np.ndarray
    ratio: np.ndarray
    trace: np.ndarray
    frozen: np.ndarray | None = None  # (n_in,) bool: inputs whose pair was given, never repaired
    blk_in: np.ndarray | None = None  # input layer of each block when not simply 0..n-1
    data: np.ndarray | None = None  # data evidence, read when the ratio is ambiguous

    @property
    def blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """(blk_in, blk_out) (n,): block k is input layer blk_in[k], output blk_out[k]."""
        ins = np.arange(len(self.out_for_in)) if self.blk_in is None else self.blk_in
        return ins, self.out_for_in

    @property
    def fixed(self) -> dict[int, int]:
        """The pairs known in advance, input -> output (stack indices): the frozen blocks."""
        if self.frozen is None:
            return {}
        return {int(i): int(j) for i, j in zip(*self.blocks) if self.frozen[i]}

    @property
    def square(self) -> bool:
        """h = d: every layer may be either role (``ratio`` is (2n, 2n))."""
        return self.blk_in is not None

    @property
    def evidence(self) -> np.ndarray:
        """Pairing evidence (n, n), large for likely pairs: the dominance ratio. For h = d
        the symmetric score sqrt(ratio[a, b] ratio[b, a]) = |tr(AB)| / sqrt(||AB|| ||BA||)
        (2n, 2n), which pairs the layers whatever the orientation."""
        return np.sqrt(self.ratio * self.ratio.T) if self.square else self.ratio

    @property
    def matched(self) -> np.ndarray:
        """Evidence of the chosen pairs, (n,)."""
        return self.evidence[self.blocks]

    @property
    def unmatched_max(self) -> float:
        """Largest evidence of a pair not chosen (for h = d: in neither orientation)."""
        mask = np.ones_like(self.ratio, dtype=bool)
        mask[self.blocks] = False
        if self.square:  # a layer is never paired with itself, and a pair is one either way
            mask[self.blocks[::-1]] = False
            np.fill_diagonal(mask, False)
        return float(self.evidence[mask].max()) if mask.any() else 0.0

    @property
    def matched_min(self) -> float:
        return float(self.matched.min())

    @property
    def margin(self) -> float:
        """Smallest matched evidence over the largest unmatched (> 1: cleanly separated)."""
        return self.matched_min / max(self.unmatched_max, np.finfo(float).tiny)

    def candidates(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """Complete pairings worth searching from, as (name, blk_in, blk_out) (n,) each: the
        ratio's ("ratio") and, when the data was read, the data evidence's ("data"; on
        generated weak nets raw correlations paired better than standardised ones) and the
        standardised sum of the data evidence and the signed ratio -tr/||.||_F ("joint": 27
        of 48 pairs on a weak 48-block net where the ratio got 14, the data 11, and the
        data plus the unsigned ratio 16); duplicates dropped."""
        found = [("ratio", *self.blocks)]
        if self.data is not None:
            for name, score in (("data", self.data), ("joint", self.joint)):
                if not self.square:
                    ins, outs = np.arange(len(score)), _assign(-score, self.fixed)
                else:  # square pieces: match the 2n layers, orient by the score
                    ins, outs = _match_square(np.maximum(score, score.T), score, self.fixed)
                if not any(np.array_equal(ins, i) and np.array_equal(outs, o)
                           for _, i, o in found):
                    found.append((name, ins, outs))
        return found

    @property
    def joint(self) -> np.ndarray | None:
        """The standardised sum of the data evidence and the signed ratio -tr/||.||_F
        (:func:`standardise`), [input, output]; None when the data was not read."""
        if self.data is None:
            return None
        return standardise(self.data) + standardise(-np.sign(self.trace) * self.ratio)

    def summary(self) -> dict:
        return {"matched_min": self.matched_min, "unmatched_max": self.unmatched_max,
                "margin": self.margin, "data_read": self.data is not None,
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
    out_for_in = _assign(_finite(-np.abs(trace) / fro), fixed)
    return Pairing(out_for_in, np.abs(trace) / fro, trace, _frozen(stack.blocks, fixed))


def pair_with_data(stack: Stack, x: np.ndarray, target: np.ndarray, kernels: str = "cpu",
                   fixed: dict[int, int] | None = None) -> Pairing:
    """:func:`pair_by_dominance`; when its pairs do not separate cleanly (margin <= 1) the
    data evidence is read too ((2n, 2n) over every layer in both roles for h = d), so that
    the search can start from its pairings as well (:meth:`Pairing.candidates`). For h = d
    the data evidence also orients the pairs (:func:`orient_by_data`), clean or not.
    x (m, d), target (m,)."""
    pairing = pair_by_dominance(stack, kernels, fixed)
    clean = pairing.margin > 1
    if len(target) < 2 or (clean and not stack.square):
        return pairing
    evidence = data_evidence(stack.weights, x, target)
    if stack.square:
        pairing = orient_by_data(pairing, evidence)
    return pairing if clean else replace(pairing, data=evidence)


def orient_by_data(pairing: Pairing, data: np.ndarray) -> Pairing:
    """h = d: each pair (a, b) not given in advance, turned to the orientation whose
    contribution at depth 0 correlates better with the target: b after a when
    data[a, b] >= data[b, a] (:func:`data_evidence`, (2n, 2n)). On eight generated h = d
    networks (16-48 blocks, SGD and Adam) this oriented 155 of 184 pairs rightly, the larger
    dominance ratio 92 (chance: on some networks it was mostly wrong)."""
    ins, outs = pairing.blocks
    given = pairing.frozen[ins] if pairing.frozen is not None else np.zeros(len(ins), bool)
    flip = (data[outs, ins] > data[ins, outs]) & ~given
    new_in, new_out = np.where(flip, outs, ins), np.where(flip, ins, outs)
    rank = np.argsort(new_in, kind="stable")
    return replace(pairing, blk_in=new_in[rank], out_for_in=new_out[rank])


def data_evidence(weights: BlockWeights, x: np.ndarray, target: np.ndarray,
                  rows: int = DATA_ROWS) -> np.ndarray:
    """(n_in, n_out): the correlation over the first ``rows`` rows between what the blocks
    add to the output, target - w_last . x (the skip path's known share taken out), and what
    block (input i, output j) would add at depth 0, w_last . W_out_j ReLU(W_in_i x + b_in_i).
    Training turns every block's contribution towards the target, and only a true pair's
    hidden units line up with their own output weights. On generated weak nets (3 epochs of
    Adam) its assignment recovered 75-100% of 16 blocks' pairs and 23% of 48 blocks', where
    the dominance ratio found 0-31%; without the skip path taken out, 44-69% and 6%."""
    m = min(rows, len(target))
    x64 = np.asarray(x[:m], dtype=np.float64)
    w_last = np.asarray(weights.w_last, np.float64).ravel()
    y = np.asarray(target[:m], dtype=np.float64) - x64 @ w_last
    y = y - y.mean()
    v = np.einsum("d,jdh->hj", w_last, np.asarray(weights.w_out, np.float64))  # (h, n_out)
    score = np.zeros((weights.w_in.shape[0], weights.w_out.shape[0]))
    for i in range(weights.w_in.shape[0]):
        hidden = np.maximum(x64 @ weights.w_in[i].T.astype(np.float64) + weights.b_in[i], 0.0)
        added = hidden @ v
        added -= added.mean(axis=0)
        norms = np.linalg.norm(added, axis=0) * max(np.linalg.norm(y), np.finfo(float).tiny)
        score[i] = (y @ added) / np.maximum(norms, np.finfo(float).tiny)
    return _finite(score)


def standardise(score: np.ndarray) -> np.ndarray:
    """Entries as z-scores within their row, then within their column (n, n): evidence of
    different units made comparable."""
    z = (score - score.mean(axis=1, keepdims=True)) / (score.std(axis=1, keepdims=True) + 1e-12)
    return (z - z.mean(axis=0, keepdims=True)) / (z.std(axis=0, keepdims=True) + 1e-12)


def _assign(cost: np.ndarray, fixed: dict[int, int] | None) -> np.ndarray:
    """Linear assignment minimising ``cost`` (n, n), with the ``fixed`` pairs kept."""
    cost = cost.copy()
    big = 1e6
    for i, j in (fixed or {}).items():
        cost[i, :], cost[:, j] = big, big
        cost[i, j] = -big
    return linear_assignment(cost)


def pair_square(stack: Stack, kernels: str = "cpu", fixed: dict[int, int] | None = None) -> Pairing:
    """h = d: match the 2n layers into n pairs by the symmetric evidence
    |tr(A B)| / sqrt(||A B||_F ||B A||_F), then orient each pair by the larger dominance ratio
    (the search flips orientations the data disagrees with)."""
    trace, fro = backend(kernels).pair_trace_and_frobenius(stack.weights.w_in, stack.weights.w_out)
    fro = np.maximum(fro, np.finfo(np.float64).tiny)
    blk_in, out_for_in = _match_square(np.abs(trace) / np.sqrt(fro * fro.T), np.abs(trace) / fro,
                                       fixed)
    return Pairing(out_for_in, np.abs(trace) / fro, trace, _frozen(len(trace), fixed), blk_in)


def _frozen(n_in: int, fixed: dict[int, int] | None) -> np.ndarray:
    """(n_in,) bool: the input layers whose pair was given in advance."""
    frozen = np.zeros(n_in, dtype=bool)
    frozen[list((fixed or {}).keys())] = True
    return frozen


def _match_square(sym: np.ndarray, evidence: np.ndarray, fixed: dict[int, int] | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of 2n layers from a symmetric score (2n, 2n), larger for likelier pairs: the
    ``fixed`` ones, then mutual choices of a linear assignment, then greedily; each oriented
    by the larger ``evidence[input, output]``. Returns (blk_in, out_for_in) (n,)."""
    sym = sym.copy()
    np.fill_diagonal(sym, -1e6)
    blocks = dict(fixed or {})
    taken = set(blocks) | set(blocks.values())

    def add(a: int, b: int) -> None:
        i, j = (a, b) if evidence[a, b] >= evidence[b, a] else (b, a)
        blocks[i] = j
        taken.update((a, b))

    cols = linear_assignment(_finite(-sym))
    for a, b in enumerate(cols):  # mutual choices of the assignment are pairs
        if a < b and cols[b] == a and a not in taken and b not in taken:
            add(int(a), int(b))
    free = [a for a in range(len(sym)) if a not in taken]
    while free:  # the rest greedily by the symmetric score
        sub = sym[np.ix_(free, free)]
        a, b = np.unravel_index(np.argmax(sub), sub.shape)
        add(free[a], free[b])
        free = [c for c in free if c not in taken]
    blk_in = np.array(sorted(blocks), dtype=np.int64)
    return blk_in, np.array([blocks[i] for i in blk_in], dtype=np.int64)


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
