"""numba.cuda kernels, same names, arguments and results as ``cpu.py`` and ``reference.py``.

Every public function takes and returns numpy arrays on the host, so callers do not know
which backend runs. Each algorithm has three layers, as in ``cpu.py``: per-element math in
``@cuda.jit(device=True)`` functions (one row through one block, a dot product, a block-wide
float64 sum), a kernel that gives each thread one (candidate, row) or one row, and the public
function, which validates, copies and launches.

Layout of the work
    Forward kernels (``prefix``, ``output``): one thread per row, the whole sequence of
    blocks in a loop, the row's ``d`` activations in per-thread local arrays. Scoring kernels
    (``evaluate_candidates``, ``first_order_deltas``, ``residual_norms``): a 1-D grid of
    ``k * tiles`` thread blocks, block ``b`` is candidate ``b // tiles`` on rows
    ``(b % tiles) * THREADS_PER_BLOCK + threadIdx.x``; all threads of a block run the same
    candidate, so every weight load is one broadcast per warp. Each block writes the float64
    sum of its rows into ``partial[c, tile]`` (a shared-memory tree, no atomics), then one
    small kernel sums each candidate's row of ``partial``. ``adjoint_gradients``: one thread
    per row walking the sequence backwards. ``soft_loss_and_grad``: one thread per row, its
    activations at every position in a device array, then back; per-row gradients summed
    on the host. Pair statistics: Gram matrices (one thread per
    entry), then one thread per (input, output) pair; always float64.

    Kernels are compiled lazily, on first use, for each (float dtype, width d, threads per
    block): ``d`` is a compile-time constant so the per-thread arrays have a fixed size.

What is copied when
    - ``BlockWeights`` arrays and the ``target`` vector: uploaded on first use and kept on
      the device, keyed by the host array's identity (a weak reference, so the copy is
      dropped when the host array dies; the least recently used beyond ``MAX_READONLY``
      are dropped too). They are treated as read-only: before reuse a sample of their
      values (about 64 elements, and the first and last) is compared with the sample taken
      at upload, and the array is uploaded again if it differs. Change a cached array in
      place only together with :func:`clear_device_cache`.
    - ``acts`` arrays returned by :func:`prefix_activations` and ``grads`` returned by
      :func:`adjoint_gradients` are *registered*: their device copy stays on the device (at
      most ``MAX_MIRRORS`` of them and ``MAX_MIRROR_BYTES`` together, least recently used
      dropped first) and ``evaluate_candidates``, ``adjoint_gradients``,
      ``first_order_deltas`` and ``refresh_prefix`` use it instead of uploading the host
      array. Before each reuse rows 0, m//2 and m-1 of every position are compared with the
      host; any difference (the caller wrote to the array) re-uploads it whole. Any other
      (n+1, m, d) array is uploaded for the call and not kept.
    - ``refresh_prefix(acts, ...)`` recomputes positions ``first+1 .. n`` on the device and
      copies exactly those back into the caller's host ``acts`` in place, so host and device
      copies stay equal. For an unregistered ``acts`` only ``acts[first:]`` is uploaded.
    - Index arrays (``seq_in``, ``start``, ``lo`` ...) go up as int32 on every call;
      ``x`` arrays of ``block_forward``, ``network_output``, ``residual_norms``,
      ``soft_loss_and_grad`` (and its ``target``) too. Results
      come back on every call: ``(k,)`` float64 sums, ``(m,)`` outputs, whole ``acts``/
      ``grads`` arrays for ``prefix_activations`` / ``adjoint_gradients``.

Without a usable GPU (and without ``NUMBA_ENABLE_CUDASIM=1``) the module still imports;
every kernel raises ``RuntimeError("no usable CUDA GPU: ...")``. The caches are not
thread-safe: use one thread per process, as the search does.
"""
from __future__ import annotations

import functools
import math
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from .soft import active_entries, soft_result
from .types import BlockWeights

try:  # a module global, so the simulator can swap it inside kernels; never fails the import
    from numba import cuda
    _IMPORT_ERROR: Exception | None = None
except Exception as exc:  # numba without its CUDA target, a broken install
    cuda, _IMPORT_ERROR = None, exc

THREADS_PER_BLOCK = 128  # read on every call (host side); a power of two, <= 1024
MAX_READONLY = 32  # weight/target arrays kept on the device
MAX_MIRRORS = 6  # registered acts/grads arrays kept on the device
MAX_MIRROR_BYTES = 8 << 30  # ... and their bytes together

_SAMPLES = 64  # elements compared before a read-only device copy is reused
_READY = False  # a GPU (or the simulator) answered once; checked on every call until then

# Small searches launch small grids on purpose; numba-cuda would warn on each of them.
warnings.filterwarnings("ignore", message=r"Grid size \d+ will likely result in GPU "
                        r"under-utilization")


# --------------------------------------------------------------------------- the device
def _cuda():
    """numba.cuda, or RuntimeError("no usable CUDA GPU: ...") when there is none to use."""
    global _READY
    if _READY:
        return cuda
    if cuda is None:
        raise RuntimeError(f"no usable CUDA GPU: numba.cuda cannot be imported "
                           f"({_IMPORT_ERROR})") from _IMPORT_ERROR
    if not _available(cuda):
        reason = ""
        try:
            err = cuda.cuda_error()
            reason = str(err).strip().splitlines()[0] if err else ""
        except Exception:
            pass
        raise RuntimeError("no usable CUDA GPU: " + (reason or "numba.cuda.is_available() is "
                           "false") + " (NUMBA_ENABLE_CUDASIM=1 runs the simulator instead)")
    _READY = True
    return cuda


def _available(cuda) -> bool:
    try:
        return bool(cuda.is_available())
    except Exception:
        return False


def is_available() -> bool:
    """True when kernels can run here (a CUDA GPU numba can drive, or the simulator)."""
    try:
        _cuda()
    except RuntimeError:
        return False
    return True


def simulated() -> bool:
    """True when numba.cuda is the simulator (``NUMBA_ENABLE_CUDASIM=1``)."""
    from numba.core import config

    return bool(config.ENABLE_CUDASIM)


def _tpb() -> int:
    tpb = int(THREADS_PER_BLOCK)
    if tpb < 1 or tpb > 1024 or tpb & (tpb - 1):
        raise ValueError(f"THREADS_PER_BLOCK must be a power of two in 1..1024, got {tpb}")
    return tpb


# --------------------------------------------------------------------------- kernels
@functools.lru_cache(maxsize=None)
def _kernels(dtype_name: str, width: int, tpb: int) -> SimpleNamespace:
    """The kernels for activations of one float dtype and width, ``tpb`` threads a block.

    ``D``, ``TPB``, ``ZERO``, ``ONE`` and ``FT`` are closure constants frozen at compile time."""
    import numba
    _cuda()
    FT = numba.float32 if dtype_name == "float32" else numba.float64
    ZERO, ONE = np.dtype(dtype_name).type(0), np.dtype(dtype_name).type(1)
    D, TPB = width, tpb
    F64 = numba.float64

    # ---- per-element math -----------------------------------------------------------
    @cuda.jit(device=True)
    def load_row(src, p, r, x):
        """x (D,) <- src[p, r, :]."""
        for a in range(D):
            x[a] = src[p, r, a]

    @cuda.jit(device=True)
    def store_row(dst, p, r, x):
        for a in range(D):
            dst[p, r, a] = x[a]

    @cuda.jit(device=True)
    def block_row(x, acc, w_in, b_in, w_out, b_out, i, j):
        """In place on one row x (D,): x <- x + W_out[j] relu(W_in[i] x + b_in[i]) + b_out[j];
        acc (D,) is scratch. The hidden units are produced and consumed one at a time."""
        h = w_in.shape[1]
        for a in range(D):
            acc[a] = b_out[j, a]
        for k in range(h):
            s = b_in[i, k]
            for a in range(D):
                s += w_in[i, k, a] * x[a]
            if not (s <= ZERO):  # relu, letting NaN through as np.maximum does
                for a in range(D):
                    acc[a] += w_out[j, a, k] * s
        for a in range(D):
            x[a] += acc[a]

    @cuda.jit(device=True)
    def block_adjoint(acts, p, r, g, new, w_in, b_in, w_out, i, j, scale):
        """new (D,) += scale W_in[i]^T (mask * (W_out[j]^T g)) for row r, the gradient g (D,)
        at the block's output carried back to its input acts[p, r] (mask: pre-activation
        > 0); returns the sum over units of relu(pre) * (W_out[j]^T g), in the
        activations' dtype (one multiply-add per active unit: the adjoint ignores it)."""
        total = ZERO
        for k in range(w_in.shape[1]):
            pre = b_in[i, k]
            for a in range(D):
                pre += w_in[i, k, a] * acts[p, r, a]
            if pre > ZERO:
                u = ZERO
                for a in range(D):
                    u += w_out[j, a, k] * g[a]
                total += pre * u
                u *= scale
                for a in range(D):
                    new[a] += w_in[i, k, a] * u
        return total

    @cuda.jit(device=True)
    def output_grads(acts, p, r, g, w_in, b_in, i, k, scale, d_w, d_b):
        """d_w[k] (D, h) += scale g relu(pre)^T and d_b[k] (D,) += scale g for row r, atomically:
        the gradient g (D,) at the block's output, pre its input layer i on acts[p, r]."""
        for v in range(w_in.shape[1]):
            pre = b_in[i, v]
            for a in range(D):
                pre += w_in[i, v, a] * acts[p, r, a]
            if pre > ZERO:
                for a in range(D):
                    cuda.atomic.add(d_w, (k, a, v), scale * g[a] * pre)
        for a in range(D):
            cuda.atomic.add(d_b, (k, a), scale * g[a])

    @cuda.jit(device=True)
    def run_blocks(x, acc, w_in, b_in, w_out, b_out, seq_in, seq_out, c, first, last):
        """Blocks seq_in[c, p], seq_out[c, p] for p = first .. last - 1 on one row."""
        for p in range(first, last):
            block_row(x, acc, w_in, b_in, w_out, b_out, seq_in[c, p], seq_out[c, p])

    @cuda.jit(device=True)
    def final_layer(x, w_last, b_last):
        """w_last . x + b_last in the activations' dtype."""
        s = ZERO
        for a in range(D):
            s += w_last[a] * x[a]
        return s + b_last[0]

    @cuda.jit(device=True)
    def block_sum(buf, value):
        """Float64 sum of ``value`` over the thread block; every thread must call it."""
        t = cuda.threadIdx.x
        buf[t] = value
        cuda.syncthreads()
        step = TPB // 2
        while step > 0:
            if t < step:
                buf[t] += buf[t + step]
            cuda.syncthreads()
            step //= 2
        return buf[0]

    # ---- kernels ----------------------------------------------------------------------
    @cuda.jit
    def prefix(acts, w_in, b_in, w_out, b_out, seq_in, seq_out, first):
        """acts[p + 1, r] for p >= first from acts[first, r]; one thread per row.
        seq_in, seq_out (1, n)."""
        r = cuda.grid(1)
        if r < acts.shape[1]:
            x = cuda.local.array(D, FT)
            acc = cuda.local.array(D, FT)
            load_row(acts, first, r, x)
            for p in range(first, acts.shape[0] - 1):
                block_row(x, acc, w_in, b_in, w_out, b_out, seq_in[0, p], seq_out[0, p])
                store_row(acts, p + 1, r, x)

    @cuda.jit
    def output(xs, w_in, b_in, w_out, b_out, w_last, b_last, seq_in, seq_out, n, y):
        """y[r] = network output (n blocks) of row r of xs (1, m, D); one thread per row."""
        r = cuda.grid(1)
        if r < xs.shape[1]:
            x = cuda.local.array(D, FT)
            acc = cuda.local.array(D, FT)
            load_row(xs, 0, r, x)
            run_blocks(x, acc, w_in, b_in, w_out, b_out, seq_in, seq_out, 0, 0, n)
            y[r] = final_layer(x, w_last, b_last)

    @cuda.jit
    def candidates(acts, w_in, b_in, w_out, b_out, w_last, b_last, start, seq_in, seq_out,
                   target, partial):
        """partial[c, tile]: squared error of candidate c on the tile's rows."""
        buf = cuda.shared.array(TPB, F64)
        tiles = partial.shape[1]
        c = cuda.blockIdx.x // tiles
        tile = cuda.blockIdx.x - c * tiles
        r = tile * TPB + cuda.threadIdx.x
        value = 0.0
        if r < acts.shape[1]:
            x = cuda.local.array(D, FT)
            acc = cuda.local.array(D, FT)
            load_row(acts, start[c], r, x)
            run_blocks(x, acc, w_in, b_in, w_out, b_out, seq_in, seq_out, c, start[c],
                       acts.shape[0] - 1)
            err = float(final_layer(x, w_last, b_last)) - target[r]
            value = err * err
        total = block_sum(buf, value)
        if cuda.threadIdx.x == 0:
            partial[c, tile] = total

    @cuda.jit
    def residual(xs, w_in, b_in, w_out, b_out, cand_in, cand_out, partial):
        """partial[c, tile]: sum over the tile's rows of ||block_c(x) - x||_2."""
        buf = cuda.shared.array(TPB, F64)
        tiles = partial.shape[1]
        c = cuda.blockIdx.x // tiles
        tile = cuda.blockIdx.x - c * tiles
        r = tile * TPB + cuda.threadIdx.x
        value = 0.0
        if r < xs.shape[1]:
            x = cuda.local.array(D, FT)
            acc = cuda.local.array(D, FT)
            load_row(xs, 0, r, x)
            block_row(x, acc, w_in, b_in, w_out, b_out, cand_in[c], cand_out[c])
            sq = 0.0
            for a in range(D):
                diff = float(x[a] - xs[0, r, a])
                sq += diff * diff
            value = math.sqrt(sq)
        total = block_sum(buf, value)
        if cuda.threadIdx.x == 0:
            partial[c, tile] = total

    @cuda.jit
    def adjoint(acts, w_in, b_in, w_out, b_out, w_last, b_last, seq_in, seq_out, target, grads):
        """grads[p, r] = d(sum of squared errors)/d acts[p, r]; one thread per row."""
        r = cuda.grid(1)
        n = acts.shape[0] - 1
        if r < acts.shape[1]:
            x = cuda.local.array(D, FT)
            g = cuda.local.array(D, FT)
            new = cuda.local.array(D, FT)
            load_row(acts, n, r, x)
            err = float(final_layer(x, w_last, b_last)) - target[r]
            for a in range(D):
                g[a] = 2.0 * err * w_last[a]
            store_row(grads, n, r, g)
            for p in range(n - 1, -1, -1):
                for a in range(D):
                    new[a] = g[a]
                block_adjoint(acts, p, r, g, new, w_in, b_in, w_out, seq_in[0, p], seq_out[0, p], ONE)
                for a in range(D):
                    g[a] = new[a]
                store_row(grads, p, r, g)

    @cuda.jit
    def first_order(acts, grads, w_in, b_in, w_out, b_out, lo, hi, seq_in, seq_out, partial):
        """partial[c, tile]: <grads[hi+1], rerun(lo..hi) - acts[hi+1]> over the tile's rows."""
        buf = cuda.shared.array(TPB, F64)
        tiles = partial.shape[1]
        c = cuda.blockIdx.x // tiles
        tile = cuda.blockIdx.x - c * tiles
        r = tile * TPB + cuda.threadIdx.x
        value = 0.0
        if r < acts.shape[1]:
            x = cuda.local.array(D, FT)
            acc = cuda.local.array(D, FT)
            load_row(acts, lo[c], r, x)
            run_blocks(x, acc, w_in, b_in, w_out, b_out, seq_in, seq_out, c, lo[c], hi[c] + 1)
            q = hi[c] + 1
            for a in range(D):
                value += float(grads[q, r, a]) * float(x[a] - acts[q, r, a])
        total = block_sum(buf, value)
        if cuda.threadIdx.x == 0:
            partial[c, tile] = total

    @cuda.jit
    def row_sums(partial, out):
        """out[c] = sum of partial[c, :]; one thread block per row of partial."""
        buf = cuda.shared.array(TPB, F64)
        c = cuda.blockIdx.x
        value = 0.0
        for t in range(cuda.threadIdx.x, partial.shape[1], TPB):
            value += partial[c, t]
        total = block_sum(buf, value)
        if cuda.threadIdx.x == 0:
            out[c] = total

    @cuda.jit
    def soft(x, acts, w_in, b_in, w_out, b_out, w_last, b_last, blk_in, blk_out, offsets,
             active, weight, target, sse, grads, outputs, d_w, d_b):
        """The soft network on row r (one thread per row): acts[q, r] for every position,
        sse[r] its squared error, then back through it: grads[r, e] = d (squared error of
        row r / m) / d weight[e] for every active entry e (soft_loss_and_grad); with
        ``outputs`` (1), the gradients for block k's output layer are added to d_w[k] (D, h)
        and d_b[k] (D,) atomically (soft_loss_and_grads)."""
        r = cuda.grid(1)
        m, n, h = x.shape[0], offsets.shape[0] - 1, w_in.shape[1]
        if r < m:
            xq = cuda.local.array(D, FT)
            g = cuda.local.array(D, FT)
            new = cuda.local.array(D, FT)
            for a in range(D):
                new[a] = x[r, a]
            store_row(acts, 0, r, new)
            for q in range(n):
                load_row(acts, q, r, xq)
                for e in range(offsets[q], offsets[q + 1]):
                    i, j, pk = blk_in[active[e]], blk_out[active[e]], weight[e]
                    for v in range(h):
                        s = b_in[i, v]
                        for a in range(D):
                            s += w_in[i, v, a] * xq[a]
                        if s > ZERO:
                            for a in range(D):
                                new[a] += pk * w_out[j, a, v] * s
                    for a in range(D):
                        new[a] += pk * b_out[j, a]
                store_row(acts, q + 1, r, new)
            err = float(final_layer(new, w_last, b_last)) - target[r]
            sse[r] = err * err
            for a in range(D):
                g[a] = 2.0 * err * w_last[a] / m
            for q in range(n - 1, -1, -1):
                for a in range(D):
                    new[a] = g[a]
                for e in range(offsets[q], offsets[q + 1]):
                    i, j = blk_in[active[e]], blk_out[active[e]]
                    total = block_adjoint(acts, q, r, g, new, w_in, b_in, w_out, i, j, weight[e])
                    for a in range(D):
                        total += b_out[j, a] * g[a]
                    grads[r, e] = total
                    if outputs:
                        output_grads(acts, q, r, g, w_in, b_in, i, active[e], weight[e], d_w, d_b)
                for a in range(D):
                    g[a] = new[a]

    return SimpleNamespace(prefix=prefix, output=output, candidates=candidates,
                           residual=residual, adjoint=adjoint, first_order=first_order,
                           row_sums=row_sums, soft=soft)


@functools.lru_cache(maxsize=None)
def _pair_kernels(tpb: int) -> SimpleNamespace:
    """float64 kernels of the pair statistics (no width constant needed)."""
    _cuda()

    @cuda.jit
    def gram_in(w_in, g):
        """g[i, a, b] = (W_in[i] W_in[i]^T)[a, b], W_in[i] (h, d); one thread per entry."""
        t = cuda.grid(1)
        n, h, d = w_in.shape
        if t < n * h * h:
            i = t // (h * h)
            a = (t // h) % h
            b = t % h
            s = 0.0
            for e in range(d):
                s += w_in[i, a, e] * w_in[i, b, e]
            g[i, a, b] = s

    @cuda.jit
    def gram_out(w_out, g):
        """g[j, a, b] = (W_out[j]^T W_out[j])[a, b], W_out[j] (d, h)."""
        t = cuda.grid(1)
        n, d, h = w_out.shape
        if t < n * h * h:
            j = t // (h * h)
            a = (t // h) % h
            b = t % h
            s = 0.0
            for e in range(d):
                s += w_out[j, e, a] * w_out[j, e, b]
            g[j, a, b] = s

    @cuda.jit
    def pairs(w_in, w_out, g_in, g_out, trace, fro):
        """trace[i, j] = tr(W_out[j] W_in[i]), fro[i, j] = sqrt(<G_in[i], G_out[j]>)."""
        t = cuda.grid(1)
        n_in, h, d = w_in.shape
        n_out = w_out.shape[0]
        if t < n_in * n_out:
            i = t // n_out
            j = t - i * n_out
            tr = 0.0
            for a in range(d):
                for k in range(h):
                    tr += w_out[j, a, k] * w_in[i, k, a]
            f = 0.0
            for a in range(h):
                for b in range(h):
                    f += g_in[i, a, b] * g_out[j, a, b]
            trace[i, j] = tr
            fro[i, j] = math.sqrt(max(f, 0.0))

    return SimpleNamespace(gram_in=gram_in, gram_out=gram_out, pairs=pairs)


# --------------------------------------------------------------------------- device copies
def _stamp(a: np.ndarray) -> bytes:
    """A cheap fingerprint of a host array's values: rows 0, m//2 and m-1 of every position
    of an (n+1, m, d) array; else about _SAMPLES evenly spaced elements and the last."""
    if a.size == 0:
        return b""
    if a.ndim == 3:
        m = a.shape[1]
        return a[:, [0, m // 2, m - 1], :].tobytes()
    flat = a.reshape(-1)
    return flat[:: max(1, flat.size // _SAMPLES)].tobytes() + flat[-1:].tobytes()


@dataclass
class _Entry:
    ref: weakref.ref
    device: object
    stamp: bytes
    nbytes: int


class DeviceCache:
    """Device copies of host arrays, keyed by the host array's identity.

    ``readonly(a)``: a device copy of ``a`` (weights, targets), kept and reused while a
    sample of its values is unchanged. ``mirror(a)``: the kept device copy of a registered
    (n+1, m, d) array, or None; ``register(a, dev)`` records that ``dev`` equals ``a`` now.
    Entries die with their host array (weak references) and least recently used first.
    """

    def __init__(self):
        self._readonly: OrderedDict[int, _Entry] = OrderedDict()
        self._mirrors: OrderedDict[int, _Entry] = OrderedDict()
        self.uploads = 0  # host -> device copies of whole cached arrays, for tests/benchmarks

    def clear(self) -> None:
        self._readonly.clear()
        self._mirrors.clear()

    def info(self) -> dict:
        return {"readonly": len(self._readonly), "mirrors": len(self._mirrors),
                "mirror_bytes": sum(e.nbytes for e in self._mirrors.values()),
                "uploads": self.uploads}

    def _entry(self, table: OrderedDict, a: np.ndarray, device) -> _Entry:
        key = id(a)

        def forget(ref, key=key, table=table):
            entry = table.get(key)
            if entry is not None and entry.ref is ref:
                del table[key]

        return _Entry(weakref.ref(a, forget), device, _stamp(a), a.nbytes)

    def _live(self, table: OrderedDict, a: np.ndarray) -> _Entry | None:
        entry = table.get(id(a))
        if entry is None or entry.ref() is not a:
            return None
        table.move_to_end(id(a))
        return entry

    def readonly(self, a: np.ndarray):
        _cuda()
        entry = self._live(self._readonly, a)
        if entry is not None and entry.stamp == _stamp(a):
            return entry.device
        device = cuda.to_device(_upload_ready(a))
        self.uploads += 1
        self._readonly[id(a)] = self._entry(self._readonly, a, device)
        self._readonly.move_to_end(id(a))
        while len(self._readonly) > MAX_READONLY:
            self._readonly.popitem(last=False)
        return device

    def mirror(self, a: np.ndarray):
        """The device copy of registered ``a`` if the host still matches it, else None (and
        a stale copy is uploaded afresh, so a registered array stays registered)."""
        entry = self._live(self._mirrors, a)
        if entry is None:
            return None
        if entry.stamp != _stamp(a):
            entry.device.copy_to_device(_upload_ready(a))
            entry.stamp = _stamp(a)
            self.uploads += 1
        return entry.device

    def register(self, a: np.ndarray, device) -> None:
        """Record that ``device`` holds the same values as host ``a`` from now on."""
        self._mirrors[id(a)] = self._entry(self._mirrors, a, device)
        self._mirrors.move_to_end(id(a))
        while len(self._mirrors) > 1 and (
                len(self._mirrors) > MAX_MIRRORS
                or sum(e.nbytes for e in self._mirrors.values()) > MAX_MIRROR_BYTES):
            self._mirrors.popitem(last=False)

    def touched(self, a: np.ndarray) -> None:
        """Host ``a`` was written by this module: restamp its mirror and drop mirrors of
        other host arrays that may share its memory (views, bases)."""
        for key, entry in list(self._mirrors.items()):
            host = entry.ref()
            if host is a:
                entry.stamp = _stamp(a)
            elif host is None or np.may_share_memory(host, a):
                self._mirrors.pop(key, None)


CACHE = DeviceCache()


def clear_device_cache() -> None:
    """Drop every kept device copy (after changing a cached host array in place)."""
    CACHE.clear()


def device_cache_info() -> dict:
    """How many arrays are kept on the device, their bytes, and whole-array uploads so far."""
    return CACHE.info()


def _upload_ready(a: np.ndarray) -> np.ndarray:
    """A C-contiguous array with no zero-length axis (the device copy is never read there)."""
    a = np.ascontiguousarray(a)
    if a.size == 0:
        a = np.zeros(tuple(max(1, s) for s in a.shape), a.dtype)
    return a


def _to_device(a: np.ndarray):
    return cuda.to_device(_upload_ready(a))


def _index(a, rows: int | None = None, limit: int | None = None):
    """Index arrays go up as int32 (1-D ones as (rows, n) when ``rows`` is given), checked
    against ``0 <= a < limit`` first: the device does no bounds checking."""
    a = np.asarray(a, dtype=np.int64)
    if rows is not None:
        a = a.reshape(rows, -1)
    top = np.iinfo(np.int32).max if limit is None else limit
    if a.size and (a.min() < 0 or a.max() >= top):
        raise IndexError(f"indices must be in 0 .. {top - 1}; got {a.min()} .. {a.max()}")
    return _to_device(a.astype(np.int32))


def _sequence(weights: BlockWeights, seq_in, seq_out, rows: int, n: int) -> tuple:
    """Device (rows, n) int32 copies of seq_in, seq_out, checked against the weights."""
    seq_in, seq_out = np.asarray(seq_in), np.asarray(seq_out)
    if seq_in.size != rows * n or seq_out.size != rows * n:
        raise ValueError(f"sequences of shape {seq_in.shape}, {seq_out.shape}; expected "
                         f"{rows} of {n} blocks")
    return (_index(seq_in, rows, weights.w_in.shape[0]),
            _index(seq_out, rows, weights.w_out.shape[0]))


def _weights(weights: BlockWeights) -> tuple:
    return tuple(CACHE.readonly(a) for a in weights)


def _check(x: np.ndarray, weights: BlockWeights) -> None:
    """Activations and every weight array must share one float dtype (no silent upcasts),
    and the weights' shapes must fit x's width (the device does no bounds checking)."""
    bad = [a.dtype for a in weights if a.dtype != x.dtype]
    if x.dtype not in (np.float32, np.float64) or bad:
        raise TypeError(f"kernels need x and weights of one dtype, float32 or float64; got "
                        f"x {x.dtype}, weights {sorted({str(b) for b in bad})}")
    w_in, b_in, w_out, b_out, w_last, b_last = weights
    d = x.shape[-1]
    if not (w_in.ndim == 3 and w_out.ndim == 3 and w_in.shape[2] == d
            and b_in.shape == w_in.shape[:2] and w_out.shape[1:] == (d, w_in.shape[1])
            and b_out.shape == w_out.shape[:2] and w_last.shape == (d,) and b_last.size >= 1):
        raise ValueError(f"weights do not fit width {d}: " + ", ".join(
            f"{name} {a.shape}" for name, a in zip(BlockWeights._fields, weights)))


def _kernels_for(x: np.ndarray) -> SimpleNamespace:
    return _kernels(x.dtype.name, int(x.shape[-1]), _tpb())


def _blocks(count: int) -> int:
    return (count + _tpb() - 1) // _tpb()


def _target(target, m: int):
    """The kept device copy of target (m,) as float64."""
    target = np.ascontiguousarray(target, np.float64)
    if target.shape != (m,):
        raise ValueError(f"target of shape {target.shape} for {m} rows")
    return CACHE.readonly(target)


def _acts_on_device(acts: np.ndarray):
    """The registered device copy of ``acts``, else a fresh upload (not kept)."""
    dev = CACHE.mirror(acts)
    return dev if dev is not None else _to_device(acts)


def _sums(kern, partial, k: int) -> np.ndarray:
    """(k,) float64 row sums of the device array partial (k, tiles)."""
    out = cuda.device_array(k, np.float64)
    kern.row_sums[k, _tpb()](partial, out)
    return out.copy_to_host()


# --------------------------------------------------------------------------- public kernels
def pair_trace_and_frobenius(w_in: np.ndarray, w_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """trace[i, j] = tr(W_out[j] W_in[i]), fro[i, j] = ||W_out[j] W_in[i]||_F, each (N_in, N_out)
    float64, without forming the products: ||W_out W_in||_F^2 = <W_out^T W_out, W_in W_in^T>."""
    _cuda()
    w_in = np.ascontiguousarray(w_in, dtype=np.float64)
    w_out = np.ascontiguousarray(w_out, dtype=np.float64)
    n_in, h, _ = w_in.shape
    n_out = w_out.shape[0]
    if n_in * n_out * h == 0:
        return np.zeros((n_in, n_out)), np.zeros((n_in, n_out))
    tpb, kern = _tpb(), _pair_kernels(_tpb())
    d_in, d_out = _to_device(w_in), _to_device(w_out)
    g_in = cuda.device_array((n_in, h, h), np.float64)
    g_out = cuda.device_array((n_out, h, h), np.float64)
    kern.gram_in[_blocks(n_in * h * h), tpb](d_in, g_in)
    kern.gram_out[_blocks(n_out * h * h), tpb](d_out, g_out)
    trace = cuda.device_array((n_in, n_out), np.float64)
    fro = cuda.device_array((n_in, n_out), np.float64)
    kern.pairs[_blocks(n_in * n_out), tpb](d_in, d_out, g_in, g_out, trace, fro)
    return trace.copy_to_host(), fro.copy_to_host()


def dominance_ratio_matrix(w_in: np.ndarray, w_out: np.ndarray) -> np.ndarray:
    """ratio[i, j] = |tr(W_out[j] W_in[i])| / ||W_out[j] W_in[i]||_F, (N_in, N_out) float64."""
    trace, fro = pair_trace_and_frobenius(w_in, w_out)
    return np.abs(trace) / np.maximum(fro, np.finfo(np.float64).tiny)


def _run_prefix(dev_acts, weights: BlockWeights, seq_in, seq_out, first: int, like: np.ndarray):
    """Launch the prefix kernel on device acts (n+1, m, d) from position ``first``."""
    n1, m = dev_acts.shape[0], dev_acts.shape[1]
    if m == 0 or first >= n1 - 1:
        return
    kern = _kernels_for(like)
    w = _weights(weights)
    kern.prefix[_blocks(m), _tpb()](dev_acts, w[0], w[1], w[2], w[3],
                                    *_sequence(weights, seq_in, seq_out, 1, n1 - 1),
                                    int(first))


def refresh_prefix(acts: np.ndarray, weights: BlockWeights, seq_in: np.ndarray,
                   seq_out: np.ndarray, first: int) -> None:
    """In place: recompute acts[p+1] for p >= first from acts[first]; acts (n+1, m, d).
    The caller's host array is updated (positions first+1 .. n are copied back)."""
    _cuda()
    _check(acts, weights)
    first = int(first)
    n1 = acts.shape[0]
    if first >= n1 - 1 or acts.shape[1] == 0:
        return
    dev = CACHE.mirror(acts)
    if dev is not None:
        _run_prefix(dev, weights, seq_in, seq_out, first, acts)
        dev[first + 1:].copy_to_host(acts[first + 1:])
    else:  # not ours to keep: upload the slab from acts[first] only
        seq_in, seq_out = np.asarray(seq_in), np.asarray(seq_out)
        slab = _to_device(acts[first:])
        _run_prefix(slab, weights, seq_in[first:], seq_out[first:], 0, acts)
        slab[1:].copy_to_host(acts[first + 1:])
    CACHE.touched(acts)


def _prefix(x: np.ndarray, weights: BlockWeights, seq_in, seq_out, keep: bool) -> np.ndarray:
    _cuda()
    _check(x, weights)
    n = len(seq_in)
    acts = np.empty((n + 1,) + x.shape, dtype=x.dtype)
    if acts.size == 0:
        return acts
    dev = cuda.device_array(acts.shape, acts.dtype)
    dev[0:1].copy_to_device(_upload_ready(x[None]))
    _run_prefix(dev, weights, seq_in, seq_out, 0, x)
    dev.copy_to_host(acts)
    if keep:
        CACHE.register(acts, dev)
    return acts


def prefix_activations(x: np.ndarray, weights: BlockWeights, seq_in: np.ndarray,
                       seq_out: np.ndarray) -> np.ndarray:
    """acts (n+1, m, d) in x's dtype: acts[0] = x, acts[p+1] = block p applied to acts[p].
    The result is registered: its device copy is kept for the calls that take ``acts``."""
    return _prefix(x, weights, seq_in, seq_out, keep=True)


def block_forward(x: np.ndarray, weights: BlockWeights, layer_in: int, layer_out: int) -> np.ndarray:
    """One block (input layer ``layer_in``, output layer ``layer_out``) on x (m, d) -> (m, d)."""
    return _prefix(x, weights, np.array([layer_in]), np.array([layer_out]), keep=False)[1]


def network_output(x: np.ndarray, weights: BlockWeights, seq_in: np.ndarray,
                   seq_out: np.ndarray) -> np.ndarray:
    """Output (m,) in x's dtype of blocks (seq_in[p], seq_out[p]) then the final layer."""
    _cuda()
    _check(x, weights)
    m = x.shape[0]
    if m == 0:
        return np.empty(0, dtype=x.dtype)
    kern, w = _kernels_for(x), _weights(weights)
    y = cuda.device_array(m, x.dtype)
    n = len(seq_in)
    kern.output[_blocks(m), _tpb()](_to_device(x[None]), *w,
                                    *_sequence(weights, seq_in, seq_out, 1, n), n, y)
    return y.copy_to_host()


def evaluate_candidates(acts: np.ndarray, weights: BlockWeights, start: np.ndarray,
                        seq_in: np.ndarray, seq_out: np.ndarray, target: np.ndarray) -> np.ndarray:
    """sse (k,) float64: squared error vs target (m,) of each candidate sequence, reusing the
    cached acts[start[c]] (acts (n+1, m, d)) and recomputing blocks p >= start[c] only."""
    _cuda()
    _check(acts, weights)
    k, m = len(start), acts.shape[1]
    if k == 0 or m == 0:
        return np.zeros(k)
    kern, w = _kernels_for(acts), _weights(weights)
    tiles = _blocks(m)
    partial = cuda.device_array((k, tiles), np.float64)
    target = _target(target, m)
    n = acts.shape[0] - 1
    kern.candidates[k * tiles, _tpb()](_acts_on_device(acts), *w, _index(start, limit=n + 1),
                                       *_sequence(weights, seq_in, seq_out, k, n), target,
                                       partial)
    return _sums(kern, partial, k)


def residual_norms(x: np.ndarray, weights: BlockWeights, cand_in: np.ndarray,
                   cand_out: np.ndarray) -> np.ndarray:
    """Mean over rows of ||block(x) - x||_2 for each candidate block (k,) float64, x (m, d)."""
    _cuda()
    _check(x, weights)
    k, m = len(cand_in), x.shape[0]
    if k == 0:
        return np.zeros(0)
    if m == 0:
        return np.full(k, np.nan)
    kern, w = _kernels_for(x), _weights(weights)
    tiles = _blocks(m)
    partial = cuda.device_array((k, tiles), np.float64)
    kern.residual[k * tiles, _tpb()](_to_device(x[None]), w[0], w[1], w[2], w[3],
                                     _index(cand_in, limit=weights.w_in.shape[0]),
                                     _index(cand_out, limit=weights.w_out.shape[0]), partial)
    return _sums(kern, partial, k) / m


def adjoint_gradients(acts: np.ndarray, weights: BlockWeights, seq_in: np.ndarray,
                      seq_out: np.ndarray, target: np.ndarray) -> np.ndarray:
    """grads (n+1, m, d) in acts' dtype: d(sum of squared errors vs target (m,))/d acts[p].
    The result is registered like prefix_activations' (first_order_deltas reuses it)."""
    _cuda()
    _check(acts, weights)
    grads = np.empty_like(acts)
    m = acts.shape[1]
    if grads.size == 0:
        return grads
    kern, w = _kernels_for(acts), _weights(weights)
    dev = cuda.device_array(acts.shape, acts.dtype)
    target = _target(target, m)
    kern.adjoint[_blocks(m), _tpb()](_acts_on_device(acts), *w,
                                     *_sequence(weights, seq_in, seq_out, 1, acts.shape[0] - 1),
                                     target, dev)
    dev.copy_to_host(grads)
    CACHE.register(grads, dev)
    return grads


def first_order_deltas(acts: np.ndarray, grads: np.ndarray, weights: BlockWeights,
                       lo: np.ndarray, hi: np.ndarray, seq_in: np.ndarray,
                       seq_out: np.ndarray) -> np.ndarray:
    """Predicted change (k,) float64 of the squared error of each candidate, to first order:
    rerun its blocks lo[c]..hi[c] from acts[lo[c]] and take <grads[hi+1], new - acts[hi+1]>."""
    _cuda()
    _check(acts, weights)
    if grads.dtype != acts.dtype or grads.shape != acts.shape:
        raise TypeError(f"grads must match acts: got {grads.dtype} {grads.shape}, "
                        f"acts {acts.dtype} {acts.shape}")
    k, m, n = len(lo), acts.shape[1], acts.shape[0] - 1
    if k == 0 or m == 0:
        return np.zeros(k)
    kern, w = _kernels_for(acts), _weights(weights)
    tiles = _blocks(m)
    partial = cuda.device_array((k, tiles), np.float64)
    kern.first_order[k * tiles, _tpb()](_acts_on_device(acts), _acts_on_device(grads),
                                        w[0], w[1], w[2], w[3], _index(lo, limit=n),
                                        _index(hi, limit=n),
                                        *_sequence(weights, seq_in, seq_out, k, n), partial)
    return _sums(kern, partial, k)


def soft_loss_and_grad(x: np.ndarray, target: np.ndarray, weights: BlockWeights,
                       blk_in: np.ndarray, blk_out: np.ndarray, p: np.ndarray,
                       floor: float) -> tuple[float, np.ndarray]:
    """The soft network of n blocks (blk_in[k], blk_out[k]) whose position q adds
    sum_k p[q, k] block_k(x) - x to the stream, on rows x (m, d) against target (m,):
    (its MSE, the gradient (n, n) float64 of the MSE with respect to p). Entries of p below
    ``floor`` are taken as zero and get a zero gradient. One thread per row; the
    per-row gradients (m, entries) are summed on the host."""
    return _soft(x, target, weights, blk_in, blk_out, p, floor, False)


def soft_loss_and_grads(x: np.ndarray, target: np.ndarray, weights: BlockWeights,
                        blk_in: np.ndarray, blk_out: np.ndarray, p: np.ndarray, floor: float
                        ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`soft_loss_and_grad` and the gradients with respect to block k's output layer
    as it is used, weights.w_out[blk_out[k]] (n, d, h) and weights.b_out[blk_out[k]] (n, d),
    float64 (summed atomically in the activations' dtype on the device)."""
    return _soft(x, target, weights, blk_in, blk_out, p, floor, True)


def _soft(x, target, weights, blk_in, blk_out, p, floor, outputs: bool) -> tuple:
    """soft_loss_and_grad(s) on the device."""
    _cuda()
    _check(x, weights)
    offsets, active, weight = active_entries(p, floor, x.dtype)
    (m, d), (n, h) = x.shape, (len(blk_in), weights.w_in.shape[1])
    d_w, d_b = np.zeros((max(n, 1), d, h), x.dtype), np.zeros((max(n, 1), d), x.dtype)
    if m == 0:
        sse, grads = np.zeros(1), np.zeros((1, len(active)))
    else:
        kern = _kernels_for(x)
        acts = cuda.device_array((n + 1, m, d), x.dtype)
        sse = cuda.device_array(m, np.float64)
        grads = cuda.device_array((m, max(len(active), 1)), np.float64)
        # without outputs: one unused block each (no zero-size device arrays)
        d_w_dev = cuda.to_device(d_w) if outputs else cuda.device_array((1, d, h), x.dtype)
        d_b_dev = cuda.to_device(d_b) if outputs else cuda.device_array((1, d), x.dtype)
        kern.soft[_blocks(m), _tpb()](
            _to_device(x), acts, *_weights(weights),
            _index(blk_in, None, weights.w_in.shape[0]),
            _index(blk_out, None, weights.w_out.shape[0]), _index(offsets),
            _index(active, None, max(n, 1)), _to_device(weight),
            _to_device(np.ascontiguousarray(target, np.float64)), sse, grads, int(outputs),
            d_w_dev, d_b_dev)
        sse, grads = sse.copy_to_host(), grads.copy_to_host()
        if outputs:
            d_w, d_b = d_w_dev.copy_to_host(), d_b_dev.copy_to_host()
    mse, grad = soft_result(sse, grads, offsets, active, p.shape, m)
    if not outputs:
        return mse, grad
    return mse, grad, d_w[:n].astype(np.float64), d_b[:n].astype(np.float64)
