"""Minimum-cost perfect assignment on a square cost matrix: the Hungarian method (shortest
augmenting paths with row and column potentials, O(n^3)), compiled with Numba.

It is the pairing's only need from ``scipy.optimize``, whose import alone took about 0.3 s
of every ``dropnet solve``; tests check it against ``scipy.optimize.linear_sum_assignment``.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import _numba_start  # noqa: F401  (before the first kernel loads)


def linear_assignment(cost: np.ndarray) -> np.ndarray:
    """cols (n,) int64: row i gets column cols[i], minimising sum_i cost[i, cols[i]];
    ``cost`` (n, n) of finite floats (units are the caller's)."""
    cost = np.ascontiguousarray(cost, dtype=np.float64)
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
        raise ValueError(f"the cost matrix must be square, got shape {cost.shape}")
    if not np.all(np.isfinite(cost)):
        raise ValueError("the cost matrix must be finite")
    if cost.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    return _hungarian(cost)


@njit(cache=True)
def _hungarian(cost: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """Rows are added one at a time; each is matched along a shortest augmenting path
    (Dijkstra on reduced costs); indices are 1-based inside, 0 is the virtual start."""
    n = cost.shape[0]
    # two allocations, filled by loops: every distinct np.zeros / np.full call compiles its
    # own overload, about 0.3 s each on the first run
    reals = np.empty((3, n + 1))
    ints = np.empty((4, n + 1), np.int64)
    u, v, minv = reals[0], reals[1], reals[2]
    row_of, way, used, cols = ints[0], ints[1], ints[2], ints[3]  # row_of: 0 for none
    for j in range(n + 1):
        u[j] = v[j] = 0.0
        row_of[j] = way[j] = 0
    for i in range(1, n + 1):
        row_of[0] = i
        j0 = 0
        for j in range(n + 1):
            minv[j] = np.inf
            used[j] = 0
        while True:
            used[j0] = 1
            i0, delta, j1 = row_of[j0], np.inf, 0
            for j in range(1, n + 1):
                if not used[j]:
                    reduced = cost[i0 - 1, j - 1] - u[i0] - v[j]
                    if reduced < minv[j]:
                        minv[j], way[j] = reduced, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(n + 1):
                if used[j]:
                    u[row_of[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if row_of[j0] == 0:
                break
        while j0 != 0:  # flip the augmenting path
            j1 = way[j0]
            row_of[j0] = row_of[j1]
            j0 = j1
    for j in range(1, n + 1):
        cols[row_of[j] - 1] = j - 1
    return cols[:n]
