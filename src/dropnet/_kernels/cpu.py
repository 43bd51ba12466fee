"""Numba CPU kernels, parallel over rows (or pairs), same names and arguments as
``reference.py`` and ``cuda.py``.

Each algorithm has three layers: serial ``@njit`` helpers for a tile of rows held
transposed, one row per SIMD lane (``_layer``, ``_block_rows``, ``_run_blocks``; the vector
operations are in ``simd.py``), a ``nogil`` task kernel (``_*_tasks(..., t0, dt)``) that does tasks t0,
t0+dt, ... and writes each task's own slice of the output (no atomics, reduced afterwards),
and the public function, which validates, converts and runs the task kernel on ``_threads()``
threads at once. (Numba's ``parallel=True`` did the same job but compiled 3-4x slower: the
first run with an empty cache took about 50 s instead of about 15 s.) Activations and weights share
one float dtype (float32 for the search and the certificate, float64 where the certificate
cannot decide in float32 and for ``dropnet verify``); sums of squared errors are accumulated
in float64.
"""
from __future__ import annotations

import numpy as np
import os
from concurrent.futures import ThreadPoolExecutor

import numba
from numba import njit

from .. import _numba_start  # noqa: F401  (before the first kernel loads)

from .simd import lanes, lanes_of, vadd, vfma, vload, vrelu, vsplat, vstore
from .soft import active_entries, soft_result
from .types import BlockWeights

# Reassociation lets LLVM vectorise the dot products; no nnan/ninf so NaN checks still work.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
ROWS_PER_TASK = 32  # rows one thread handles between scheduling points (a multiple of lanes)
OUTPUT_ROWS_PER_TASK = 128  # the same for network_output, which runs on all rows
PAIR_TILE = 8  # (input, output) pairs per side of one pairing task
DOT_CHUNK = 1024  # columns of a pairing tile's rows summed per pass (kept in cache)
TILE = 6  # outputs of a layer accumulated at once by the micro-kernel (by lanes rows)
STORE, RELU, ADD = 0, 1, 2  # what _layer does with its result


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def _layer(out, w, b, src, mode):
    """out (o, L) <- w (o, i) @ src (i, L) + b (o,), stored as it is (mode STORE), through
    the ReLU (RELU) or added to out (ADD). A tile of TILE outputs by L lanes stays in
    registers while the reduction runs; each weight is read once and broadcast to every lane
    (row). TILE = 6 keeps 12 of AVX2's 16 registers busy (float32 on one thread, 48 blocks:
    4 outputs 67 GFLOP/s, 6 outputs 82-85, 8 outputs 45, spilling)."""
    o, i = w.shape
    k = 0
    while k + TILE <= o:
        a0, a1, a2 = vsplat(b[k]), vsplat(b[k + 1]), vsplat(b[k + 2])
        a3, a4, a5 = vsplat(b[k + 3]), vsplat(b[k + 4]), vsplat(b[k + 5])
        for a in range(i):
            v = vload(src, a, 0)
            a0, a1 = vfma(a0, w[k, a], v), vfma(a1, w[k + 1, a], v)
            a2, a3 = vfma(a2, w[k + 2, a], v), vfma(a3, w[k + 3, a], v)
            a4, a5 = vfma(a4, w[k + 4, a], v), vfma(a5, w[k + 5, a], v)
        _put(out, k, a0, mode)
        _put(out, k + 1, a1, mode)
        _put(out, k + 2, a2, mode)
        _put(out, k + 3, a3, mode)
        _put(out, k + 4, a4, mode)
        _put(out, k + 5, a5, mode)
        k += TILE
    while k < o:
        acc = vsplat(b[k])
        for a in range(i):
            acc = vfma(acc, w[k, a], vload(src, a, 0))
        _put(out, k, acc, mode)
        k += 1


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def _put(out, k, acc, mode):
    if mode == RELU:
        vstore(out, k, 0, vrelu(acc))
    elif mode == ADD:
        vstore(out, k, 0, vadd(vload(out, k, 0), acc))
    else:
        vstore(out, k, 0, acc)


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def _block_rows(x, w_in, b_in, w_out, b_out, hid):
    """In place on a tile of L = lanes(x) rows held transposed, x (d, L), one row per lane:
    x <- x + W_out relu(W_in x + b_in) + b_out; scratch hid (h, L)."""
    _layer(hid, w_in, b_in, x, RELU)
    _layer(x, w_out, b_out, hid, ADD)


@njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def _run_blocks(xs, tiles, w_in, b_in, w_out, b_out, seq_in, seq_out, first, hid):
    """In place on tiles xs[:tiles] (G, d, L): blocks seq_in[p], seq_out[p] for p = first ..
    n-1, each block on every tile before the next block, so that a block's weights are read
    from memory once per chunk of rows rather than once per tile (deep or wide networks
    whose weights exceed the caches)."""
    for p in range(first, seq_in.shape[0]):
        i, j = seq_in[p], seq_out[p]
        for g in range(tiles):
            _block_rows(xs[g], w_in[i], b_in[i], w_out[j], b_out[j], hid)


@njit(cache=True, nogil=True, inline="always")
def _tile(src, d):
    """Scratch for a tile of rows of src's dtype, transposed: (d, lanes)."""
    return np.empty((d, lanes(src)), src.dtype)


@njit(cache=True, nogil=True, inline="always")
def _tiles(src, d, rows):
    """Scratch for the tiles of a chunk of ``rows`` rows: (ceil(rows / lanes), d, lanes)."""
    return np.empty(((rows + lanes(src) - 1) // lanes(src), d, lanes(src)), src.dtype)


@njit(cache=True, nogil=True, inline="always")
def _load_tile(src, r0, r1, x):
    """x (d, L) <- rows r0..r1-1 of src (m, d), transposed, padding with row r1-1. (Element
    loops, not slice assignment, here and below: a slice assignment compiles Numba's
    shape-mismatch error path, about a second of the first run's compile each.)"""
    for lane in range(x.shape[1]):
        r = min(r0 + lane, r1 - 1)
        for a in range(x.shape[0]):
            x[a, lane] = src[r, a]


@njit(cache=True, nogil=True, inline="always")
def _load_tiles(src, r0, r1, xs):
    """Rows r0..r1-1 of src (m, d) into the first tiles of xs (G, d, L); returns how many."""
    L = xs.shape[2]
    tiles = (r1 - r0 + L - 1) // L
    for g in range(tiles):
        _load_tile(src, r0 + g * L, min(r0 + (g + 1) * L, r1), xs[g])
    return tiles


@njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def _readout(w_last, b_last, x, lane):
    """w_last . x[:, lane] + b_last, the final layer on one row of a tile."""
    s = b_last[0]
    for a in range(x.shape[0]):
        s += w_last[a] * x[a, lane]
    return s


_POOL: ThreadPoolExecutor | None = None


def _threads() -> int:
    """Worker threads: NUMBA_NUM_THREADS if set, else the CPUs this process may use."""
    env = os.environ.get("NUMBA_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _run(kernel, tasks: int, *args) -> None:
    """Run ``kernel(*args, t0, dt)`` (a ``nogil`` kernel doing tasks t0, t0+dt, ...) on
    ``_threads()`` threads; interleaved tasks balance candidates of unequal cost."""
    global _POOL
    workers = min(_threads(), tasks)
    if workers <= 1:
        kernel(*args, 0, 1)
        return
    if _POOL is None or _POOL._max_workers < workers:
        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dropnet")
    futures = [_POOL.submit(kernel, *args, w, workers) for w in range(1, workers)]
    kernel(*args, 0, workers)
    for future in futures:
        future.result()


def _row_tasks(rows: int, per_task: int = ROWS_PER_TASK) -> int:
    return (rows + per_task - 1) // per_task


def _check(x: np.ndarray, weights: BlockWeights) -> None:
    """Activations and every weight array must share one float dtype (no silent upcasts)."""
    bad = [a.dtype for a in weights if a.dtype != x.dtype]
    if x.dtype not in (np.float32, np.float64) or bad:
        raise TypeError(f"kernels need x and weights of one dtype, float32 or float64; got "
                        f"x {x.dtype}, weights {sorted({str(b) for b in bad})}")


@njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def _dot(a, b):
    """Sum of a * b over two (k,) arrays."""
    s = 0.0
    for t in range(a.shape[0]):
        s += a[t] * b[t]
    return s


@njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def _gram(w, out):
    """out (h, h) <- w w^T for w (h, r): dot products of contiguous rows."""
    for a in range(w.shape[0]):
        for b in range(a + 1):
            out[a, b] = out[b, a] = _dot(w[a], w[b])


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def _gram_tasks(w_in, w_out_t, g_in, g_out, t0, dt):
    """Gram matrices W_in W_in^T and W_out^T W_out (h, h) of every layer (w_out_t holds
    each W_out^T (h, d))."""
    n_in = w_in.shape[0]
    for i in range(t0, n_in + w_out_t.shape[0], dt):
        if i < n_in:
            _gram(w_in[i], g_in[i])
        else:
            _gram(w_out_t[i - n_in], g_out[i - n_in])


@njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def _tile_dots(a, b, out, i0, i1, j0, j1):
    """out[i, j] = a[i] . b[j] for i in i0..i1-1, j in j0..j1-1 (rows of a, b (N, k)), a
    chunk of DOT_CHUNK columns at a time, so that the tile's rows are read from memory once
    per chunk instead of once per pair."""
    for i in range(i0, i1):
        for j in range(j0, j1):
            out[i, j] = 0.0
    for c0 in range(0, a.shape[1], DOT_CHUNK):
        c1 = min(c0 + DOT_CHUNK, a.shape[1])
        for i in range(i0, i1):
            for j in range(j0, j1):
                out[i, j] += _dot(a[i, c0:c1], b[j, c0:c1])


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def _pair_tasks(w_in_t, w_out, g_in, g_out, trace, fro, t0, dt):
    """Rows flattened: w_in_t (N_in, d*h) each W_in^T, w_out (N_out, d*h), g_* (N, h*h);
    task t is a tile of PAIR_TILE x PAIR_TILE (input, output) pairs."""
    n_in, n_out = w_in_t.shape[0], w_out.shape[0]
    tiles_out = (n_out + PAIR_TILE - 1) // PAIR_TILE
    tiles = ((n_in + PAIR_TILE - 1) // PAIR_TILE) * tiles_out
    for t in range(t0, tiles, dt):
        i0, j0 = (t // tiles_out) * PAIR_TILE, (t % tiles_out) * PAIR_TILE
        i1, j1 = min(i0 + PAIR_TILE, n_in), min(j0 + PAIR_TILE, n_out)
        _tile_dots(w_in_t, w_out, trace, i0, i1, j0, j1)  # sum_ak W_out[a, k] W_in[k, a]
        _tile_dots(g_in, g_out, fro, i0, i1, j0, j1)
        for i in range(i0, i1):
            for j in range(j0, j1):
                fro[i, j] = np.sqrt(max(fro[i, j], 0.0))


def pair_trace_and_frobenius(w_in: np.ndarray, w_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """trace[i, j] = tr(W_out[j] W_in[i]), fro[i, j] = ||W_out[j] W_in[i]||_F, each (N_in, N_out)
    float64, without forming the products: ||W_out W_in||_F^2 = <W_out^T W_out, W_in W_in^T>."""
    w_in = np.ascontiguousarray(w_in, dtype=np.float64)
    w_out = np.ascontiguousarray(w_out, dtype=np.float64)
    (n_in, h, _), n_out = w_in.shape, w_out.shape[0]
    trace, fro = np.empty((n_in, n_out)), np.empty((n_in, n_out))
    g_in, g_out = np.empty((n_in, h, h)), np.empty((n_out, h, h))
    _run(_gram_tasks, n_in + n_out, w_in, np.ascontiguousarray(w_out.transpose(0, 2, 1)),
         g_in, g_out)
    tiles = -(-n_in // PAIR_TILE) * -(-n_out // PAIR_TILE)
    _run(_pair_tasks, tiles, np.ascontiguousarray(w_in.transpose(0, 2, 1)).reshape(n_in, -1),
         w_out.reshape(n_out, -1), g_in.reshape(n_in, -1), g_out.reshape(n_out, -1), trace, fro)
    return trace, fro


def dominance_ratio_matrix(w_in: np.ndarray, w_out: np.ndarray) -> np.ndarray:
    """ratio[i, j] = |tr(W_out[j] W_in[i])| / ||W_out[j] W_in[i]||_F, (N_in, N_out) float64."""
    trace, fro = pair_trace_and_frobenius(w_in, w_out)
    return np.abs(trace) / np.maximum(fro, np.finfo(np.float64).tiny)


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def _prefix_tasks(acts, w_in, b_in, w_out, b_out, seq_in, seq_out, first, t0, dt):
    n1, m, d = acts.shape
    h = w_in.shape[1]
    tasks = (m + ROWS_PER_TASK - 1) // ROWS_PER_TASK
    for t in range(t0, tasks, dt):
        xs, hid = _tiles(acts, d, ROWS_PER_TASK), _tile(acts, h)
        r0, r1 = t * ROWS_PER_TASK, min(m, (t + 1) * ROWS_PER_TASK)
        tiles = _load_tiles(acts[first], r0, r1, xs)
        L = xs.shape[2]
        for p in range(first, n1 - 1):
            _run_blocks(xs, tiles, w_in, b_in, w_out, b_out, seq_in[: p + 1], seq_out[: p + 1], p, hid)
            for r in range(r0, r1):
                g, lane = (r - r0) // L, (r - r0) % L
                for a in range(d):
                    acts[p + 1, r, a] = xs[g, a, lane]


def refresh_prefix(acts: np.ndarray, weights: BlockWeights, seq_in: np.ndarray,
                   seq_out: np.ndarray, first: int) -> None:
    """In place: recompute acts[p+1] for p >= first from acts[first]; acts (n+1, m, d)."""
    _check(acts, weights)
    _run(_prefix_tasks, _row_tasks(acts.shape[1]), acts, weights.w_in, weights.b_in, weights.w_out, weights.b_out,
                np.ascontiguousarray(seq_in, np.int64), np.ascontiguousarray(seq_out, np.int64),
                int(first))


def prefix_activations(x: np.ndarray, weights: BlockWeights, seq_in: np.ndarray,
                       seq_out: np.ndarray) -> np.ndarray:
    """acts (n+1, m, d) in x's dtype: acts[0] = x, acts[p+1] = block p applied to acts[p]."""
    acts = np.empty((len(seq_in) + 1,) + x.shape, dtype=x.dtype)
    acts[0] = x
    refresh_prefix(acts, weights, seq_in, seq_out, 0)
    return acts


def block_forward(x: np.ndarray, weights: BlockWeights, layer_in: int, layer_out: int) -> np.ndarray:
    """One block (input layer ``layer_in``, output layer ``layer_out``) on x (m, d) -> (m, d)."""
    acts = prefix_activations(x, weights, np.array([layer_in]), np.array([layer_out]))
    return acts[1]


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def _output_tasks(x, w_in, b_in, w_out, b_out, w_last, b_last, seq_in, seq_out, y, t0, dt):
    m, d = x.shape
    h = w_in.shape[1]
    tasks = (m + OUTPUT_ROWS_PER_TASK - 1) // OUTPUT_ROWS_PER_TASK
    for t in range(t0, tasks, dt):
        xs, hid = _tiles(x, d, OUTPUT_ROWS_PER_TASK), _tile(x, h)
        r0, r1 = t * OUTPUT_ROWS_PER_TASK, min(m, (t + 1) * OUTPUT_ROWS_PER_TASK)
        tiles = _load_tiles(x, r0, r1, xs)
        _run_blocks(xs, tiles, w_in, b_in, w_out, b_out, seq_in, seq_out, 0, hid)
        L = xs.shape[2]
        for r in range(r0, r1):
            y[r] = _readout(w_last, b_last, xs[(r - r0) // L], (r - r0) % L)


def network_output(x: np.ndarray, weights: BlockWeights, seq_in: np.ndarray,
                   seq_out: np.ndarray) -> np.ndarray:
    """Output (m,) in x's dtype of blocks (seq_in[p], seq_out[p]) then the final layer."""
    _check(x, weights)
    y = np.empty(x.shape[0], dtype=x.dtype)
    _run(_output_tasks, _row_tasks(x.shape[0], OUTPUT_ROWS_PER_TASK), x, weights.w_in, weights.b_in, weights.w_out, weights.b_out, weights.w_last,
                weights.b_last, np.ascontiguousarray(seq_in, np.int64),
                np.ascontiguousarray(seq_out, np.int64), y)
    return y


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def _candidates_tasks(acts, w_in, b_in, w_out, b_out, w_last, b_last, start, seq_in, seq_out,
                    target, partial, t0, dt):
    m, d = acts.shape[1], acts.shape[2]
    h = w_in.shape[1]
    k = start.shape[0]
    tasks = (m + ROWS_PER_TASK - 1) // ROWS_PER_TASK
    for t in range(t0, k * tasks, dt):
        c, chunk = t // tasks, t % tasks
        xs, hid = _tiles(acts, d, ROWS_PER_TASK), _tile(acts, h)
        total = 0.0
        r0, r1 = chunk * ROWS_PER_TASK, min(m, (chunk + 1) * ROWS_PER_TASK)
        tiles = _load_tiles(acts[start[c]], r0, r1, xs)
        _run_blocks(xs, tiles, w_in, b_in, w_out, b_out, seq_in[c], seq_out[c], start[c], hid)
        L = xs.shape[2]
        for r in range(r0, r1):
            err = np.float64(_readout(w_last, b_last, xs[(r - r0) // L], (r - r0) % L)) - target[r]
            total += err * err
        partial[c, chunk] = total


def evaluate_candidates(acts: np.ndarray, weights: BlockWeights, start: np.ndarray,
                        seq_in: np.ndarray, seq_out: np.ndarray, target: np.ndarray) -> np.ndarray:
    """sse (k,) float64: squared error vs target (m,) of each candidate sequence, reusing the
    cached acts[start[c]] (acts (n+1, m, d)) and recomputing blocks p >= start[c] only."""
    _check(acts, weights)
    k, m = len(start), acts.shape[1]
    partial = np.empty((k, (m + ROWS_PER_TASK - 1) // ROWS_PER_TASK))
    _run(_candidates_tasks, partial.size, acts, weights.w_in, weights.b_in, weights.w_out, weights.b_out,
                    weights.w_last, weights.b_last, np.ascontiguousarray(start, np.int64),
                    np.ascontiguousarray(seq_in, np.int64), np.ascontiguousarray(seq_out, np.int64),
                    np.ascontiguousarray(target, np.float64), partial)
    return partial.sum(axis=1)


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def _residual_tasks(x, w_in, b_in, w_out, b_out, cand_in, cand_out, partial, t0, dt):
    m, d = x.shape
    h = w_in.shape[1]
    k = cand_in.shape[0]
    tasks = (m + ROWS_PER_TASK - 1) // ROWS_PER_TASK
    for t in range(t0, k * tasks, dt):
        c, chunk = t // tasks, t % tasks
        y, hid = _tile(x, d), _tile(x, h)
        i, j = cand_in[c], cand_out[c]
        total = 0.0
        end = min(m, (chunk + 1) * ROWS_PER_TASK)
        for r0 in range(chunk * ROWS_PER_TASK, end, y.shape[1]):
            r1 = min(r0 + y.shape[1], end)
            _load_tile(x, r0, r1, y)
            _block_rows(y, w_in[i], b_in[i], w_out[j], b_out[j], hid)
            for r in range(r0, r1):
                sq = 0.0
                for a in range(d):
                    diff = np.float64(y[a, r - r0] - x[r, a])
                    sq += diff * diff
                total += np.sqrt(sq)
        partial[c, chunk] = total


def residual_norms(x: np.ndarray, weights: BlockWeights, cand_in: np.ndarray,
                   cand_out: np.ndarray) -> np.ndarray:
    """Mean over rows of ||block(x) - x||_2 for each candidate block (k,) float64, x (m, d)."""
    _check(x, weights)
    k, m = len(cand_in), x.shape[0]
    partial = np.empty((k, (m + ROWS_PER_TASK - 1) // ROWS_PER_TASK))
    _run(_residual_tasks, partial.size, x, weights.w_in, weights.b_in, weights.w_out, weights.b_out,
                  np.ascontiguousarray(cand_in, np.int64), np.ascontiguousarray(cand_out, np.int64),
                  partial)
    return partial.sum(axis=1) / m


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def _adjoint_rows(x, g, w_in, b_in, w_out_t, w_in_t, pre, u, zeros):
    """In place on a tile of L rows held transposed: g (d, L) <- g + W_in^T (mask * (W_out^T
    g)), the gradient carried back through the block at its input x (d, L) (mask:
    pre-activation > 0); w_out_t (h, d) and w_in_t (d, h) are the transposed layers; scratch
    pre and u (h, L); ``zeros`` (h,) or longer, zero biases in the weights' dtype."""
    _layer(pre, w_in, b_in, x, STORE)
    _layer(u, w_out_t, zeros, g, STORE)
    for k in range(u.shape[0]):
        for lane in range(u.shape[1]):
            if not pre[k, lane] > 0:
                u[k, lane] = 0
    _layer(g, w_in_t, zeros, u, ADD)


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def _adjoint_tasks(acts, w_in, b_in, w_out_t, w_in_t, w_last, b_last, seq_in, seq_out, target, grads,
                   zeros, t0, dt):
    n1, m, d = acts.shape
    n = n1 - 1
    h = w_in.shape[1]
    tasks = (m + ROWS_PER_TASK - 1) // ROWS_PER_TASK
    for t in range(t0, tasks, dt):
        x, g, pre, u = _tile(acts, d), _tile(acts, d), _tile(acts, h), _tile(acts, h)
        end = min(m, (t + 1) * ROWS_PER_TASK)
        for r0 in range(t * ROWS_PER_TASK, end, x.shape[1]):
            r1 = min(r0 + x.shape[1], end)
            _load_tile(acts[n], r0, r1, x)
            for lane in range(x.shape[1]):
                r = min(r0 + lane, r1 - 1)
                err = np.float64(_readout(w_last, b_last, x, lane)) - target[r]
                for a in range(d):
                    g[a, lane] = 2.0 * err * w_last[a]
            for p in range(n, -1, -1):
                if p < n:
                    _load_tile(acts[p], r0, r1, x)
                    i, j = seq_in[p], seq_out[p]
                    _adjoint_rows(x, g, w_in[i], b_in[i], w_out_t[j], w_in_t[i], pre, u, zeros)
                for r in range(r0, r1):
                    for a in range(d):
                        grads[p, r, a] = g[a, r - r0]


def adjoint_gradients(acts: np.ndarray, weights: BlockWeights, seq_in: np.ndarray,
                      seq_out: np.ndarray, target: np.ndarray) -> np.ndarray:
    """grads (n+1, m, d) in acts' dtype: d(sum of squared errors vs target (m,))/d acts[p]."""
    _check(acts, weights)
    grads = np.empty_like(acts)
    w_out_t = np.ascontiguousarray(weights.w_out.transpose(0, 2, 1))  # (N_out, h, d)
    w_in_t = np.ascontiguousarray(weights.w_in.transpose(0, 2, 1))  # (N_in, d, h)
    _run(_adjoint_tasks, _row_tasks(acts.shape[1]), acts, weights.w_in, weights.b_in, w_out_t, w_in_t, weights.w_last,
                 weights.b_last, np.ascontiguousarray(seq_in, np.int64),
                 np.ascontiguousarray(seq_out, np.int64), np.ascontiguousarray(target, np.float64),
                 grads, np.zeros(max(acts.shape[2], weights.w_in.shape[1]), acts.dtype))
    return grads


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def _first_order_tasks(acts, grads, w_in, b_in, w_out, b_out, lo, hi, seq_in, seq_out, partial, t0, dt):
    m, d = acts.shape[1], acts.shape[2]
    h = w_in.shape[1]
    k = lo.shape[0]
    tasks = (m + ROWS_PER_TASK - 1) // ROWS_PER_TASK
    for t in range(t0, k * tasks, dt):
        c, chunk = t // tasks, t % tasks
        xs, hid = _tiles(acts, d, ROWS_PER_TASK), _tile(acts, h)
        total = 0.0
        r0, r1 = chunk * ROWS_PER_TASK, min(m, (chunk + 1) * ROWS_PER_TASK)
        tiles = _load_tiles(acts[lo[c]], r0, r1, xs)
        _run_blocks(xs, tiles, w_in, b_in, w_out, b_out, seq_in[c, : hi[c] + 1],
                    seq_out[c, : hi[c] + 1], lo[c], hid)
        L = xs.shape[2]
        for r in range(r0, r1):
            g, lane = (r - r0) // L, (r - r0) % L
            for a in range(d):
                total += np.float64(grads[hi[c] + 1, r, a]) * (xs[g, a, lane] - acts[hi[c] + 1, r, a])
        partial[c, chunk] = total


def first_order_deltas(acts: np.ndarray, grads: np.ndarray, weights: BlockWeights,
                       lo: np.ndarray, hi: np.ndarray, seq_in: np.ndarray,
                       seq_out: np.ndarray) -> np.ndarray:
    """Predicted change (k,) float64 of the squared error of each candidate, to first order:
    rerun its blocks lo[c]..hi[c] from acts[lo[c]] and take <grads[hi+1], new - acts[hi+1]>."""
    _check(acts, weights)
    k, m = len(lo), acts.shape[1]
    partial = np.empty((k, (m + ROWS_PER_TASK - 1) // ROWS_PER_TASK))
    _run(_first_order_tasks, partial.size, acts, grads, weights.w_in, weights.b_in, weights.w_out, weights.b_out,
                     np.ascontiguousarray(lo, np.int64), np.ascontiguousarray(hi, np.int64),
                     np.ascontiguousarray(seq_in, np.int64), np.ascontiguousarray(seq_out, np.int64),
                     partial)
    return partial.sum(axis=1)


@njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def _copy_tile(src, dst):
    for a in range(src.shape[0]):
        for lane in range(src.shape[1]):
            dst[a, lane] = src[a, lane]


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def _soft_forward(acts, w_in, b_in, w_out, b_out, blk_in, blk_out, offsets, active, weight,
                  hid, bias):
    """In place on one tile's activations acts (n+1, d, L): acts[q+1] = acts[q] + the sum
    over the active entries e of position q (offsets[q] .. offsets[q+1]-1) of weight[e] x
    block active[e] on acts[q]; scratch hid (h, L), bias (d,)."""
    for q in range(acts.shape[0] - 1):
        _copy_tile(acts[q], acts[q + 1])
        for e in range(offsets[q], offsets[q + 1]):
            k, pk = active[e], weight[e]
            i, j = blk_in[k], blk_out[k]
            _layer(hid, w_in[i], b_in[i], acts[q], RELU)
            for u in range(hid.shape[0]):
                for lane in range(hid.shape[1]):
                    hid[u, lane] *= pk
            for a in range(bias.shape[0]):
                bias[a] = pk * b_out[j, a]
            _layer(acts[q + 1], w_out[j], bias, hid, ADD)


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def _soft_backward(acts, g, w_in, b_in, b_out, w_out_t, w_in_t, blk_in, blk_out, offsets,
                   active, weight, grad, pre, u, carried, gsum, zeros, d_w, d_b, g_t):
    """Back through the soft positions of one tile, g (d, L) = d loss / d acts[n] on entry:
    adds d loss / d weight[e] to grad[e] for every active entry e, and, when d_w holds
    blocks, d loss / d (block k's output layer) to d_w[k] (C, h, L: its transpose, rows
    c L .. c L + L-1 of the (d, h) matrix in d_w[k, c]) and d_b[k] (d,); scratch pre, u
    (h, L), carried (d, L), gsum (d,), g_t (C, L, L)."""
    outputs = d_w.shape[0] > 0
    for q in range(acts.shape[0] - 2, -1, -1):
        _copy_tile(g, carried)
        for a in range(g.shape[0]):
            s = 0.0
            for lane in range(g.shape[1]):
                s += g[a, lane]
            gsum[a] = s
        if outputs:
            _transpose_tile(g, g_t)
        for e in range(offsets[q], offsets[q + 1]):
            k, pk = active[e], weight[e]
            i, j = blk_in[k], blk_out[k]
            _layer(pre, w_in[i], b_in[i], acts[q], STORE)
            _layer(u, w_out_t[j], zeros, g, STORE)
            total = 0.0
            for v in range(pre.shape[0]):
                for lane in range(pre.shape[1]):
                    if pre[v, lane] > 0:
                        total += pre[v, lane] * u[v, lane]
                        u[v, lane] *= pk
                    else:
                        u[v, lane] = 0
            for a in range(gsum.shape[0]):
                total += b_out[j, a] * gsum[a]
            grad[e] += total
            _layer(carried, w_in_t[i], zeros, u, ADD)
            if outputs:
                _output_grads(pre, pk, g_t, zeros, gsum, d_w[k], d_b[k])
        _copy_tile(carried, g)


@njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def _transpose_tile(g, g_t):
    """g_t[c, lane, col] = g[c L + col, lane] for g (d, L); columns past d are left as they
    are (zero)."""
    L = g.shape[1]
    for a in range(g.shape[0]):
        c, col = a // L, a % L
        for lane in range(L):
            g_t[c, lane, col] = g[a, lane]


@njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def _output_grads(pre, pk, g_t, zeros, gsum, d_w_k, d_b_k):
    """d_w_k (C, h, L) += (pk relu(pre)) g^T, chunk by chunk of L rows of the (d, h)
    gradient, and d_b_k (d,) += pk gsum; pre (h, L) is overwritten."""
    for v in range(pre.shape[0]):
        for lane in range(pre.shape[1]):
            value = pre[v, lane]
            pre[v, lane] = pk * value if value > 0 else 0
    for c in range(d_w_k.shape[0]):
        _layer(d_w_k[c], pre, zeros, g_t[c], ADD)
    for a in range(gsum.shape[0]):
        d_b_k[a] += pk * gsum[a]


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def _soft_tasks(x, target, w_in, b_in, w_out, b_out, w_out_t, w_in_t, w_last, b_last, blk_in,
                blk_out, offsets, active, weight, zeros, sse, grads, d_w, d_b, t0, dt):
    """Tasks t0, t0 + dt, ... of ROWS_PER_TASK rows: sse[t], grads[t] (entries), and the
    output layers' gradients summed into this thread's d_w[t0], d_b[t0] when they hold
    blocks (soft_loss_and_grads)."""
    m, d = x.shape
    n, h = offsets.shape[0] - 1, w_in.shape[1]
    tasks = (m + ROWS_PER_TASK - 1) // ROWS_PER_TASK
    for t in range(t0, tasks, dt):
        L = lanes(x)
        acts = np.empty((n + 1, d, L), x.dtype)
        g, carried, pre, u = _tile(x, d), _tile(x, d), _tile(x, h), _tile(x, h)
        bias, gsum = np.empty(d, x.dtype), np.empty(d, x.dtype)
        g_t = np.zeros((d_w.shape[2], L, L), x.dtype)  # columns past d stay zero
        end = min(m, (t + 1) * ROWS_PER_TASK)
        for r0 in range(t * ROWS_PER_TASK, end, L):
            r1 = min(r0 + L, end)
            _load_tile(x, r0, r1, acts[0])
            _soft_forward(acts, w_in, b_in, w_out, b_out, blk_in, blk_out, offsets, active,
                          weight, pre, bias)
            for lane in range(L):
                coef = 0.0
                if r0 + lane < r1:
                    err = np.float64(_readout(w_last, b_last, acts[n], lane)) - target[r0 + lane]
                    sse[t] += err * err
                    coef = 2.0 * err / m
                for a in range(d):
                    g[a, lane] = coef * w_last[a]
            _soft_backward(acts, g, w_in, b_in, b_out, w_out_t, w_in_t, blk_in, blk_out,
                           offsets, active, weight, grads[t], pre, u, carried, gsum, zeros,
                           d_w[t0], d_b[t0], g_t)


def soft_loss_and_grad(x: np.ndarray, target: np.ndarray, weights: BlockWeights,
                       blk_in: np.ndarray, blk_out: np.ndarray, p: np.ndarray,
                       floor: float) -> tuple[float, np.ndarray]:
    """The soft network of n blocks (blk_in[k], blk_out[k]) whose position q adds
    sum_k p[q, k] block_k(x) - x to the stream, on rows x (m, d) against target (m,):
    (its MSE, the gradient (n, n) float64 of the MSE with respect to p). Entries of p below
    ``floor`` are taken as zero and get a zero gradient."""
    return _soft(x, target, weights, blk_in, blk_out, p, floor, False)


def soft_loss_and_grads(x: np.ndarray, target: np.ndarray, weights: BlockWeights,
                        blk_in: np.ndarray, blk_out: np.ndarray, p: np.ndarray, floor: float
                        ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`soft_loss_and_grad` and the gradients with respect to block k's output layer
    as it is used, weights.w_out[blk_out[k]] (n, d, h) and weights.b_out[blk_out[k]] (n, d),
    float64 (summed in the activations' dtype)."""
    return _soft(x, target, weights, blk_in, blk_out, p, floor, True)


def _soft(x, target, weights, blk_in, blk_out, p, floor, outputs: bool) -> tuple:
    """soft_loss_and_grad(s): with ``outputs`` each thread sums the output layers'
    gradients in its own (n, C, h, L) array, the (d, h) matrix's rows in C chunks of L
    lanes (the last zero-padded), transposed."""
    _check(x, weights)
    offsets, active, weight = active_entries(p, floor, x.dtype)
    (m, d), (n, h) = x.shape, (len(blk_in), weights.w_in.shape[1])
    tasks, L = max(_row_tasks(m), 1), lanes_of(numba.from_dtype(x.dtype))
    sse, grads = np.zeros(tasks), np.zeros((tasks, len(active)))
    threads = min(_threads(), tasks)
    d_w = np.zeros((threads, n if outputs else 0, (d + L - 1) // L, h, L), x.dtype)
    d_b = np.zeros((threads, n if outputs else 0, d), x.dtype)
    w_out_t = np.ascontiguousarray(weights.w_out.transpose(0, 2, 1))
    w_in_t = np.ascontiguousarray(weights.w_in.transpose(0, 2, 1))
    if m:
        _run(_soft_tasks, tasks, x, np.ascontiguousarray(target, np.float64), weights.w_in,
             weights.b_in, weights.w_out, weights.b_out, w_out_t, w_in_t, weights.w_last,
             weights.b_last, np.ascontiguousarray(blk_in, np.int64),
             np.ascontiguousarray(blk_out, np.int64), offsets, active, weight,
             np.zeros(max(d, h), x.dtype), sse, grads, d_w, d_b)
    mse, grad = soft_result(sse, grads, offsets, active, p.shape, m)
    if not outputs:
        return mse, grad
    rows = d_w.shape[2] * L  # d padded to whole chunks
    d_w = d_w.sum(axis=0, dtype=np.float64).transpose(0, 1, 3, 2).reshape(n, rows, h)
    return mse, grad, np.ascontiguousarray(d_w[:, :d]), d_b.sum(axis=0, dtype=np.float64)
