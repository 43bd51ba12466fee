"""The published algorithm written plainly (Python loops, numpy, a full forward pass per
candidate), as the baseline dropnet is timed against in the same run."""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def naive_solve(w_in, b_in, w_out, b_out, w_last, b_last, x, pred, search_rows=1000):
    """Pair by dominance ratio, seed by ascending ||W_out||_F, adjacent-swap hill climbing
    with a full float64 forward pass per candidate on the first ``search_rows`` rows, then
    the MSE on all rows. Returns (order, out_for_in, mse on all rows)."""
    n = len(w_in)
    ratio = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            prod = w_out[j] @ w_in[i]
            ratio[i, j] = abs(np.trace(prod)) / np.linalg.norm(prod)
    rows, cols = linear_sum_assignment(-ratio)
    out_for_in = cols[np.argsort(rows)]

    def mse(order, rows=search_rows):
        h = x[:rows].copy()
        for i in order:
            j = out_for_in[i]
            h = h + np.maximum(h @ w_in[i].T + b_in[i], 0) @ w_out[j].T + b_out[j]
        return float(np.mean((h @ w_last + b_last - pred[:rows]) ** 2))

    order = list(np.argsort([np.linalg.norm(w_out[out_for_in[i]]) for i in range(n)]))
    best = mse(order)
    improved = True
    while improved:
        improved = False
        for i in range(n - 1):
            cand = order.copy()
            cand[i], cand[i + 1] = cand[i + 1], cand[i]
            value = mse(cand)
            if value < best:
                order, best, improved = cand, value, True
    return order, out_for_in, mse(order, len(x))
