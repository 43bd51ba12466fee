"""The soft network's weights as the backends take them, and its result as they return it.

``soft_loss_and_grad`` (every backend) mixes all blocks at every position with weights p
(n positions, n blocks); only the entries at a floor or above are run. The backends take
them as compressed rows and return one partial gradient per entry, summed here.
"""
from __future__ import annotations

import numpy as np


def active_entries(p: np.ndarray, floor: float, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The entries of p (n, n) at ``floor`` or above, row by row: (offsets (n+1,) int64,
    their columns (e,) int64, their values (e,) in ``dtype``); position q's entries are
    offsets[q] .. offsets[q+1]-1."""
    p = np.asarray(p, np.float64)
    rows, cols = np.nonzero(p >= floor)
    offsets = np.searchsorted(rows, np.arange(p.shape[0] + 1)).astype(np.int64)
    return offsets, cols.astype(np.int64), np.ascontiguousarray(p[rows, cols], dtype)


def soft_result(sse: np.ndarray, grads: np.ndarray, offsets: np.ndarray, active: np.ndarray,
                shape: tuple, m: int) -> tuple[float, np.ndarray]:
    """(MSE over m rows, gradient ``shape`` float64) from partial sums: sse (t,) of squared
    errors and grads (t, e) of the gradient of each active entry, t parts (tasks or rows)."""
    grad = np.zeros(shape)
    rows = np.repeat(np.arange(shape[0]), np.diff(offsets))
    grad[rows, active] = np.asarray(grads, np.float64).sum(axis=0)[: len(active)]
    return float(np.sum(sse) / max(m, 1)), grad
