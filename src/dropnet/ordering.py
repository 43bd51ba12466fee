"""Seed orders for the search: where each block probably sits, from weights or data.

A seed is an array ``order`` (n,) of input-layer indices in execution order; with a pairing
``out_for_in`` it gives the sequences ``seq_in = order`` and ``seq_out = out_for_in[order]``.
"""
from __future__ import annotations

import numpy as np

from ._kernels import BlockWeights, backend

SEEDS = ("wout", "delta", "greedy")


def seed_by_wout_norm(weights: BlockWeights, out_for_in: np.ndarray) -> np.ndarray:
    """Ascending ||W_out||_F of each block's output layer (the published seed)."""
    norms = np.linalg.norm(weights.w_out[out_for_in].reshape(len(out_for_in), -1), axis=1)
    return np.argsort(norms, kind="stable")


def seed_by_residual_norm(weights: BlockWeights, out_for_in: np.ndarray, x: np.ndarray,
                          kernels: str = "cpu") -> np.ndarray:
    """Ascending mean ||block(x) - x|| of each block applied to the inputs x (m, d)."""
    blocks = np.arange(len(out_for_in))
    norms = backend(kernels).residual_norms(x, weights, blocks, out_for_in)
    return np.argsort(norms, kind="stable")


def seed_greedy(weights: BlockWeights, out_for_in: np.ndarray, x: np.ndarray,
                kernels: str = "cpu") -> np.ndarray:
    """Build the order one block at a time: append the unused block whose residual on the
    current activations is smallest, then advance the activations through it."""
    k = backend(kernels)
    remaining = list(range(len(out_for_in)))
    order = []
    acts = np.array(x, copy=True)
    while remaining:
        cand = np.array(remaining)
        best = int(cand[np.argmin(k.residual_norms(acts, weights, cand, out_for_in[cand]))])
        order.append(best)
        remaining.remove(best)
        acts = k.block_forward(acts, weights, best, int(out_for_in[best]))
    return np.array(order, dtype=np.int64)


def seed_order(name: str, weights: BlockWeights, out_for_in: np.ndarray, x: np.ndarray,
               kernels: str = "cpu") -> np.ndarray:
    """The seed called ``name`` (one of SEEDS)."""
    if name == "wout":
        return seed_by_wout_norm(weights, out_for_in)
    if name == "delta":
        return seed_by_residual_norm(weights, out_for_in, x, kernels)
    if name == "greedy":
        return seed_greedy(weights, out_for_in, x, kernels)
    raise ValueError(f"unknown seed {name!r}; choose one of {SEEDS}")
