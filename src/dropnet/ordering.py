"""Seed orders for the search: where each block probably sits, from weights or data.

Blocks are given as ``blk_in``/``blk_out`` (n,): block k is input layer ``blk_in[k]`` with
output layer ``blk_out[k]`` (stack indices). A seed is an ``order`` (n,) of block indices in
execution order, giving the sequences ``seq_in = blk_in[order]``, ``seq_out = blk_out[order]``.
"""
from __future__ import annotations

import numpy as np

from ._kernels import BlockWeights, backend

SEEDS = ("greedy", "delta", "wout", "pursuit", "drift")
# --seed-order auto also tries these: the same evidence read the other way round
REVERSED_SEEDS = ("greedy-rev", "greedy-max", "delta-desc", "wout-desc", "drift-asc")


def seed_by_wout_norm(weights: BlockWeights, blk_in: np.ndarray, blk_out: np.ndarray) -> np.ndarray:
    """Ascending ||W_out||_F of each block's output layer (the published seed)."""
    norms = np.linalg.norm(weights.w_out[blk_out].reshape(len(blk_out), -1), axis=1)
    return np.argsort(norms, kind="stable")


def init_drift(weights: BlockWeights, blk_in: np.ndarray, blk_out: np.ndarray) -> np.ndarray:
    """How far training moved each block from its initialisation, (n,) in [0, 2]: the
    fraction of W_in's entries beyond 1/sqrt(fan_in), plus the same for W_out.

    PyTorch's default nn.Linear initialisation draws weights from U(-1/sqrt(fan_in),
    1/sqrt(fan_in)), so an entry beyond the bound was moved there by training; for small
    moves the fraction grows with the mean moved distance. Under another initialisation
    the statistic means little, and the seeds it gives are ones the data ranks low."""
    def beyond(w: np.ndarray) -> np.ndarray:  # (k, rows, fan_in) -> (k,)
        return np.mean(np.abs(w) > 1.0 / np.sqrt(w.shape[2]), axis=(1, 2))
    return beyond(weights.w_in[blk_in]) + beyond(weights.w_out[blk_out])


def seed_by_drift(weights: BlockWeights, blk_in: np.ndarray, blk_out: np.ndarray) -> np.ndarray:
    """Most moved from initialisation first (:func:`init_drift`). The gradient reaching a
    residual block sums the paths through every later block, and on briefly trained
    networks early blocks move furthest: with their true pairs, this order's rank
    correlation with depth was 0.38-0.95 (median 0.76) on 22 generated networks, the other
    seeds' best 0.20-0.93 (median 0.63). Long training can turn it round (the puzzle: -0.98),
    hence ``drift-asc`` (docs/how-it-works.md)."""
    return np.argsort(-init_drift(weights, blk_in, blk_out), kind="stable")


def seed_by_residual_norm(weights: BlockWeights, blk_in: np.ndarray, blk_out: np.ndarray,
                          x: np.ndarray, kernels: str = "cpu") -> np.ndarray:
    """Ascending mean ||block(x) - x|| of each block applied to the inputs x (m, d)."""
    norms = backend(kernels).residual_norms(x, weights, blk_in, blk_out)
    return np.argsort(norms, kind="stable")


def _build(weights: BlockWeights, blk_in: np.ndarray, blk_out: np.ndarray, x: np.ndarray,
           kernels: str, cost) -> np.ndarray:
    """Build an order one block at a time: append the unused block of lowest
    ``cost(k, acts, cand)`` ((len(cand),), k the kernel module, acts (2, m, d) with the current
    activations in acts[0]), then advance the activations through it."""
    k = backend(kernels)
    remaining = list(range(len(blk_in)))
    order = []
    acts = np.empty((2,) + x.shape, dtype=x.dtype)  # acts[1]: room for candidates' kernels
    acts[0] = x
    while remaining:
        cand = np.array(remaining)
        best = int(cand[np.argmin(cost(k, acts, cand))])
        order.append(best)
        remaining.remove(best)
        acts[0] = k.block_forward(acts[0], weights, int(blk_in[best]), int(blk_out[best]))
    return np.array(order, dtype=np.int64)


def seed_greedy(weights: BlockWeights, blk_in: np.ndarray, blk_out: np.ndarray, x: np.ndarray,
                kernels: str = "cpu", largest: bool = False) -> np.ndarray:
    """Build the order one block at a time: append the unused block whose residual on the
    current activations is smallest (or ``largest``: trained networks differ in whether
    residuals grow or shrink with depth), then advance the activations through it."""
    sign = -1.0 if largest else 1.0
    return _build(weights, blk_in, blk_out, x, kernels, lambda k, acts, cand: sign * k.residual_norms(
        acts[0], weights, blk_in[cand], blk_out[cand]))


def seed_pursuit(weights: BlockWeights, blk_in: np.ndarray, blk_out: np.ndarray, x: np.ndarray,
                 target: np.ndarray, kernels: str = "cpu") -> np.ndarray:
    """Matching pursuit on the output: append the unused block after which the final layer,
    read from the current activations, fits ``target`` (m,) best (least squared error), then
    advance the activations through it. Every block adds its term to the residual stream
    that the final layer reads, so this asks the data which block explains the most of what
    is still missing; unlike the residual-norm seeds it assumes no norm profile."""
    target = np.ascontiguousarray(target, dtype=np.float64)
    return _build(weights, blk_in, blk_out, x, kernels, lambda k, acts, cand: k.evaluate_candidates(
        acts, weights, np.zeros(len(cand), np.int64), blk_in[cand][:, None],
        blk_out[cand][:, None], target))


def reverse(order: np.ndarray) -> np.ndarray:
    """The order read backwards: where residuals shrink with depth, the greedy seed picks
    the last blocks first, and its reversal is the better guess."""
    return np.ascontiguousarray(order[::-1])


def seed_order(name: str, weights: BlockWeights, blk_in: np.ndarray, blk_out: np.ndarray,
               x: np.ndarray, kernels: str = "cpu", target: np.ndarray | None = None) -> np.ndarray:
    """The seed called ``name`` (SEEDS or REVERSED_SEEDS): an order (n,) of block indices.
    ``target`` (m,), the output to fit on the rows x, is needed by ``pursuit`` only."""
    if name == "wout":
        return seed_by_wout_norm(weights, blk_in, blk_out)
    if name == "drift":
        return seed_by_drift(weights, blk_in, blk_out)
    if name == "delta":
        return seed_by_residual_norm(weights, blk_in, blk_out, x, kernels)
    if name == "greedy":
        return seed_greedy(weights, blk_in, blk_out, x, kernels)
    if name == "pursuit":
        if target is None:
            raise ValueError("the pursuit seed needs the target output of the rows x")
        return seed_pursuit(weights, blk_in, blk_out, x, target, kernels)
    if name == "greedy-max":
        return seed_greedy(weights, blk_in, blk_out, x, kernels, largest=True)
    if name in ("delta-desc", "wout-desc", "greedy-rev", "drift-asc"):
        base = name.rsplit("-", 1)[0]
        return reverse(seed_order(base, weights, blk_in, blk_out, x, kernels))
    raise ValueError(f"unknown seed {name!r}; choose one of {SEEDS}")
