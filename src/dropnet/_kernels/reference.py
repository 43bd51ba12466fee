"""Slow, obviously right numpy versions of every kernel, for tests.

Each function has the same name, arguments and result as its twin in ``cpu.py`` and
``cuda.py``. Shapes: ``n`` blocks in a sequence, ``N`` stacked layers to index into,
``m`` rows, width ``d``, hidden size ``h``, ``k`` candidates.
"""
from __future__ import annotations

import numpy as np

from .types import BlockWeights


def pair_trace_and_frobenius(w_in: np.ndarray, w_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """trace[i, j] = tr(W_out[j] W_in[i]), fro[i, j] = ||W_out[j] W_in[i]||_F, each (N_in, N_out)."""
    n_in, n_out = w_in.shape[0], w_out.shape[0]
    trace, fro = np.zeros((n_in, n_out)), np.zeros((n_in, n_out))
    for i in range(n_in):
        for j in range(n_out):
            product = w_out[j].astype(np.float64) @ w_in[i].astype(np.float64)
            trace[i, j], fro[i, j] = np.trace(product), np.linalg.norm(product)
    return trace, fro


def dominance_ratio_matrix(w_in: np.ndarray, w_out: np.ndarray) -> np.ndarray:
    """ratio[i, j] = |tr(W_out[j] W_in[i])| / ||W_out[j] W_in[i]||_F, (N_in, N_out)."""
    trace, fro = pair_trace_and_frobenius(w_in, w_out)
    return np.abs(trace) / np.maximum(fro, np.finfo(np.float64).tiny)


def _block(x: np.ndarray, w: BlockWeights, i: int, j: int) -> np.ndarray:
    return x + np.maximum(x @ w.w_in[i].T + w.b_in[i], 0) @ w.w_out[j].T + w.b_out[j]


def block_forward(x: np.ndarray, weights: BlockWeights, layer_in: int, layer_out: int) -> np.ndarray:
    """One block (input layer ``layer_in``, output layer ``layer_out``) on x (m, d) -> (m, d)."""
    return _block(x, weights, layer_in, layer_out)


def prefix_activations(x: np.ndarray, weights: BlockWeights, seq_in: np.ndarray,
                       seq_out: np.ndarray) -> np.ndarray:
    """acts (n+1, m, d): acts[0] = x, acts[p+1] = block p applied to acts[p]."""
    acts = [x]
    for i, j in zip(seq_in, seq_out):
        acts.append(_block(acts[-1], weights, i, j))
    return np.stack(acts)


def network_output(x: np.ndarray, weights: BlockWeights, seq_in: np.ndarray,
                   seq_out: np.ndarray) -> np.ndarray:
    """Output (m,) of blocks (seq_in[p], seq_out[p]) then the final layer, on x (m, d)."""
    acts = prefix_activations(x, weights, seq_in, seq_out)
    return acts[-1] @ weights.w_last + weights.b_last[0]


def evaluate_candidates(acts: np.ndarray, weights: BlockWeights, start: np.ndarray,
                        seq_in: np.ndarray, seq_out: np.ndarray, target: np.ndarray) -> np.ndarray:
    """sse (k,): sum of squared errors vs target (m,) of candidate c, which reuses acts[start[c]]
    and runs blocks seq_in[c, p], seq_out[c, p] for p >= start[c], then the final layer."""
    sse = np.zeros(len(start))
    for c in range(len(start)):
        x = acts[start[c]].astype(np.float64)
        for p in range(start[c], seq_in.shape[1]):
            x = _block(x, weights, seq_in[c, p], seq_out[c, p])
        y = x @ weights.w_last + weights.b_last[0]
        sse[c] = np.sum((y - target) ** 2)
    return sse


def residual_norms(x: np.ndarray, weights: BlockWeights, cand_in: np.ndarray,
                   cand_out: np.ndarray) -> np.ndarray:
    """Mean over rows of ||block(x) - x||_2 for each candidate block (k,), x (m, d)."""
    out = np.empty(len(cand_in))
    for c, (i, j) in enumerate(zip(cand_in, cand_out)):
        out[c] = np.linalg.norm(_block(x, weights, i, j) - x, axis=1).mean()
    return out


def adjoint_gradients(acts: np.ndarray, weights: BlockWeights, seq_in: np.ndarray,
                      seq_out: np.ndarray, target: np.ndarray) -> np.ndarray:
    """grads (n+1, m, d): d(sum of squared errors vs target)/d acts[p] for every position p."""
    n = len(seq_in)
    grads = np.empty(acts.shape)
    err = acts[n] @ weights.w_last + weights.b_last[0] - target
    grads[n] = 2 * err[:, None] * weights.w_last[None, :]
    for p in range(n - 1, -1, -1):
        i, j = seq_in[p], seq_out[p]
        mask = (acts[p] @ weights.w_in[i].T + weights.b_in[i]) > 0
        grads[p] = grads[p + 1] + (mask * (grads[p + 1] @ weights.w_out[j])) @ weights.w_in[i]
    return grads


def first_order_deltas(acts: np.ndarray, grads: np.ndarray, weights: BlockWeights,
                       lo: np.ndarray, hi: np.ndarray, seq_in: np.ndarray,
                       seq_out: np.ndarray) -> np.ndarray:
    """Predicted change (k,) of the squared error for each candidate: run its blocks lo..hi
    from acts[lo], and take <grads[hi+1], new - acts[hi+1]> summed over rows."""
    out = np.empty(len(lo))
    for c in range(len(lo)):
        x = acts[lo[c]].astype(np.float64)
        for p in range(lo[c], hi[c] + 1):
            x = _block(x, weights, seq_in[c, p], seq_out[c, p])
        out[c] = np.sum(grads[hi[c] + 1] * (x - acts[hi[c] + 1]))
    return out


def soft_loss_and_grad(x: np.ndarray, target: np.ndarray, weights: BlockWeights,
                       blk_in: np.ndarray, blk_out: np.ndarray, p: np.ndarray,
                       floor: float) -> tuple[float, np.ndarray]:
    """(MSE vs target (m,), gradient (n, n) with respect to p) of the soft network whose
    position q adds sum_k p[q, k] (block_k(x) - x), on rows x (m, d); block k is
    (blk_in[k], blk_out[k]); entries of p below ``floor`` count as zero, gradient zero."""
    return soft_loss_and_grads(x, target, weights, blk_in, blk_out, p, floor)[:2]


def soft_loss_and_grads(x: np.ndarray, target: np.ndarray, weights: BlockWeights,
                        blk_in: np.ndarray, blk_out: np.ndarray, p: np.ndarray, floor: float
                        ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`soft_loss_and_grad` and the gradients with respect to block k's output layer
    as it is used, weights.w_out[blk_out[k]] (n, d, h) and weights.b_out[blk_out[k]] (n, d),
    all float64."""
    w = weights.astype(np.float64)
    n, m = len(blk_in), len(x)
    keep = np.where(p >= floor, p, 0.0)
    acts = [np.asarray(x, np.float64)]
    for q in range(n):
        acts.append(acts[q] + sum(keep[q, k] * (_block(acts[q], w, blk_in[k], blk_out[k]) - acts[q])
                                  for k in np.flatnonzero(keep[q])))
    err = acts[n] @ w.w_last + w.b_last[0] - target
    g, grad = 2 * err[:, None] * w.w_last[None, :] / max(m, 1), np.zeros((n, n))
    d_w, d_b = np.zeros((n,) + w.w_out.shape[1:]), np.zeros((n, w.w_out.shape[1]))
    for q in range(n - 1, -1, -1):
        carried = g.copy()
        for k in np.flatnonzero(keep[q]):
            i, j = blk_in[k], blk_out[k]
            pre = acts[q] @ w.w_in[i].T + w.b_in[i]
            u = g @ w.w_out[j]  # d loss / d hidden unit, per unit weight
            grad[q, k] = np.sum(np.maximum(pre, 0) * u) + w.b_out[j] @ g.sum(axis=0)
            d_w[k] += keep[q, k] * g.T @ np.maximum(pre, 0)
            d_b[k] += keep[q, k] * g.sum(axis=0)
            carried += keep[q, k] * ((pre > 0) * u) @ w.w_in[i]
        g = carried
    return float(np.mean(err**2)) if m else 0.0, grad, d_w, d_b
