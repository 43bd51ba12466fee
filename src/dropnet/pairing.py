"""Pair block input layers with output layers by the diagonal dominance ratio.

Training leaves W_out W_in of a true pair with a strongly negative diagonal, so the ratio
|tr(W_out W_in)| / ||W_out W_in||_F is large for true pairs and small for the rest; a linear
assignment maximising the summed ratio picks the pairs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ._kernels import backend
from .roles import Stack


@dataclass(frozen=True)
class Pairing:
    """``out_for_in[i]`` is the output layer paired with input layer i (stack indices);
    ``ratio`` and ``trace`` are (n, n), [input, output]."""

    out_for_in: np.ndarray
    ratio: np.ndarray
    trace: np.ndarray

    @property
    def matched(self) -> np.ndarray:
        """Ratios of the chosen pairs, (n,)."""
        return self.ratio[np.arange(len(self.out_for_in)), self.out_for_in]

    @property
    def unmatched_max(self) -> float:
        mask = np.ones_like(self.ratio, dtype=bool)
        mask[np.arange(len(self.out_for_in)), self.out_for_in] = False
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
                "matched_trace_range": [float(self.trace[np.arange(len(self.out_for_in)),
                                                         self.out_for_in].min()),
                                        float(self.trace[np.arange(len(self.out_for_in)),
                                                         self.out_for_in].max())]}


def pair_by_dominance(stack: Stack, kernels: str = "cpu") -> Pairing:
    """Assign each input layer the output layer maximising the total dominance ratio."""
    k = backend(kernels)
    trace, fro = k.pair_trace_and_frobenius(stack.weights.w_in, stack.weights.w_out)
    ratio = np.abs(trace) / np.maximum(fro, np.finfo(np.float64).tiny)
    rows, cols = linear_sum_assignment(-ratio)
    out_for_in = np.empty(stack.blocks, dtype=np.int64)
    out_for_in[rows] = cols
    return Pairing(out_for_in, ratio, trace)
