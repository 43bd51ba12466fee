"""Every CUDA kernel against its numpy reference: run by ``test_cuda_kernels.py`` in a
subprocess, under the simulator (``NUMBA_ENABLE_CUDASIM=1``, ``DROPNET_CUDA_CASES=sim``: tiny
shapes, 8 threads a block) or on a real GPU (``DROPNET_CUDA_CASES=gpu``: also larger shapes,
the default threads a block). Not collected by a plain ``pytest`` run (no ``test_`` prefix):
numba reads NUMBA_ENABLE_CUDASIM once, when it is first imported.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from dropnet._kernels import backend
from test_kernels import close, random_weights

cu, ref, cpu = backend("cuda"), backend("reference"), backend("cpu")
MODE = os.environ.get("DROPNET_CUDA_CASES", "sim")
DTYPES = [np.float64, np.float32]

# (n blocks, m rows, d, h): m > threads a block somewhere, m not a multiple of it, n = 1.
# Kernels compile once per (dtype, d): the simulator compiles nothing, so it gets odd
# widths; a real GPU gets d = 6 (every fixed-shape test below) and the puzzle's 48.
if MODE == "sim":
    SHAPES = [(1, 1, 1, 1), (3, 24, 6, 8), (4, 13, 5, 7), (2, 9, 1, 3)]
else:
    SHAPES = [(1, 1, 6, 1), (3, 24, 6, 8), (4, 300, 6, 7), (12, 1000, 48, 96), (5, 4099, 48, 33)]

pytestmark = [
    pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaPerformanceWarning"),
    pytest.mark.skipif(not cu.is_available(), reason="no CUDA GPU and no simulator"),
]


@pytest.fixture(autouse=True)
def threads_per_block():
    """Small blocks under the simulator (it runs every thread as a Python thread)."""
    old = cu.THREADS_PER_BLOCK
    cu.THREADS_PER_BLOCK = 8 if MODE == "sim" else old
    yield cu.THREADS_PER_BLOCK
    cu.THREADS_PER_BLOCK = old
    cu.clear_device_cache()


def problem(shape, dtype, seed=0):
    n, m, d, h = shape
    rng = np.random.default_rng(seed)
    w = random_weights(rng, n, d, h, dtype)
    x = rng.standard_normal((m, d)).astype(dtype)
    target = rng.standard_normal(m)
    return rng, w, x, target, rng.permutation(n), rng.permutation(n)


def candidates(rng, base_in, base_out, k):
    """k candidates agreeing with the base sequence before start[c]; start may be n."""
    n = len(base_in)
    start = rng.integers(0, n + 1, k)
    start[0], start[-1] = 0, n
    seq_in, seq_out = np.tile(base_in, (k, 1)), np.tile(base_out, (k, 1))
    for c in range(k):
        seq_in[c, start[c]:] = rng.permutation(base_in[start[c]:])
        seq_out[c, start[c]:] = rng.permutation(base_out[start[c]:])
    return start, seq_in, seq_out


def test_reports_its_mode():
    assert cu.simulated() == (MODE == "sim")


@pytest.mark.parametrize("shape", SHAPES)
def test_pair_statistics(shape):
    n, _, d, h = shape
    w = random_weights(np.random.default_rng(1), n + 1, d, h)
    w_in, w_out = w.w_in, w.w_out[: max(1, n - 1)]  # N_in != N_out
    for got, want in zip(cu.pair_trace_and_frobenius(w_in, w_out),
                         ref.pair_trace_and_frobenius(w_in, w_out)):
        assert got.dtype == np.float64 and got.shape == (w_in.shape[0], w_out.shape[0])
        close(got, want, np.float64)
    close(cu.dominance_ratio_matrix(w_in.astype(np.float32), w_out),
          ref.dominance_ratio_matrix(w_in.astype(np.float32), w_out), np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_kernels(shape, dtype):
    rng, w, x, _, seq_in, seq_out = problem(shape, dtype)
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    acts = cu.prefix_activations(x, w, seq_in, seq_out)
    assert acts.dtype == dtype and acts.shape == (len(seq_in) + 1,) + x.shape
    close(acts, ref.prefix_activations(x64, w64, seq_in, seq_out), dtype)
    y = cu.network_output(x, w, seq_in, seq_out)
    assert y.dtype == dtype and y.shape == (x.shape[0],)
    close(y, ref.network_output(x64, w64, seq_in, seq_out), dtype)
    out = cu.block_forward(x, w, seq_in[-1], seq_out[0])
    assert out.dtype == dtype and out.shape == x.shape
    close(out, ref.block_forward(x64, w64, seq_in[-1], seq_out[0]), dtype)
    cand_in, cand_out = rng.integers(0, len(seq_in), 5), rng.integers(0, len(seq_in), 5)
    norms = cu.residual_norms(x, w, cand_in, cand_out)
    assert norms.dtype == np.float64 and norms.shape == (5,)
    close(norms, ref.residual_norms(x64, w64, cand_in, cand_out), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_evaluate_candidates(shape, dtype):
    rng, w, x, target, base_in, base_out = problem(shape, dtype, seed=2)
    acts = cu.prefix_activations(x, w, base_in, base_out)
    start, seq_in, seq_out = candidates(rng, base_in, base_out, 4)
    got = cu.evaluate_candidates(acts, w, start, seq_in, seq_out, target)
    assert got.dtype == np.float64 and got.shape == (4,)
    want = ref.evaluate_candidates(acts.astype(np.float64), w.astype(np.float64), start, seq_in,
                                   seq_out, target)
    close(got, want, dtype)
    # the same on an acts array the cuda module did not make (uploaded, not kept)
    close(cu.evaluate_candidates(acts.copy(), w, start, seq_in, seq_out, target), want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_adjoint_and_first_order(shape, dtype):
    rng, w, x, target, seq_in, seq_out = problem(shape, dtype, seed=3)
    n = len(seq_in)
    acts = cu.prefix_activations(x, w, seq_in, seq_out)
    w64, acts64 = w.astype(np.float64), acts.astype(np.float64)
    grads = cu.adjoint_gradients(acts, w, seq_in, seq_out, target)
    assert grads.dtype == dtype and grads.shape == acts.shape
    close(grads, ref.adjoint_gradients(acts64, w64, seq_in, seq_out, target), dtype)
    lo = rng.integers(0, n, 3)
    hi = np.minimum(lo + rng.integers(0, 3, 3), n - 1)
    cand_in, cand_out = np.tile(seq_in, (3, 1)), np.tile(seq_out, (3, 1))
    for c in range(3):
        cand_in[c, lo[c]:hi[c] + 1] = rng.permutation(cand_in[c, lo[c]:hi[c] + 1])
    got = cu.first_order_deltas(acts, grads, w, lo, hi, cand_in, cand_out)
    assert got.dtype == np.float64 and got.shape == (3,)
    want = ref.first_order_deltas(acts64, grads.astype(np.float64), w64, lo, hi, cand_in, cand_out)
    close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_soft_loss_and_grad(shape, dtype):
    from test_kernels import soft_problem

    n, m, d, h = shape
    w, blk_in, blk_out, p, x, target = soft_problem(np.random.default_rng(5), n, m, d, h, dtype)
    for floor in (0.0, 0.05):
        loss, grad = cu.soft_loss_and_grad(x, target, w, blk_in, blk_out, p, floor)
        want_loss, want_grad = ref.soft_loss_and_grad(x.astype(np.float64), target,
                                                      w.astype(np.float64), blk_in, blk_out, p, floor)
        assert grad.dtype == np.float64 and grad.shape == (n, n)
        close(loss, want_loss, dtype)
        close(grad, want_grad, dtype)
    got = cu.soft_loss_and_grads(x, target, w, blk_in, blk_out, p, 0.05)
    want = ref.soft_loss_and_grads(x.astype(np.float64), target, w.astype(np.float64),
                                   blk_in, blk_out, p, 0.05)
    assert [a.shape for a in got[1:]] == [(n, n), (n, d, h), (n, d)]
    for a, b in zip(got, want):
        close(a, b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kept", [True, False], ids=["kept", "foreign"])
def test_refresh_prefix_updates_host_in_place(dtype, kept):
    rng, w, x, target, seq_in, seq_out = problem((4, 21, 6, 5), dtype, seed=4)
    acts = (cu.prefix_activations(x, w, seq_in, seq_out) if kept
            else cpu.prefix_activations(x, w, seq_in, seq_out))
    before = acts.copy()
    new_in, new_out = seq_in.copy(), seq_out.copy()
    new_in[[1, 3]], new_out[[1, 3]] = seq_in[[3, 1]], seq_out[[3, 1]]
    same = acts
    assert cu.refresh_prefix(acts, w, new_in, new_out, 1) is None
    assert acts is same
    np.testing.assert_array_equal(acts[:2], before[:2])  # positions <= first untouched
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    close(acts, ref.prefix_activations(x64, w64, new_in, new_out), dtype)
    # the kept device copy followed: scoring the new order from any start matches
    n = len(new_in)
    start = np.arange(n + 1)
    got = cu.evaluate_candidates(acts, w, start, np.tile(new_in, (n + 1, 1)),
                                 np.tile(new_out, (n + 1, 1)), target)
    want = np.sum((ref.network_output(x64, w64, new_in, new_out) - target) ** 2)
    close(got, np.full(n + 1, want), dtype)


def test_device_copies_are_reused_and_host_writes_noticed():
    rng, w, x, target, seq_in, seq_out = problem((3, 24, 6, 8), np.float64, seed=5)
    acts = cu.prefix_activations(x, w, seq_in, seq_out)
    start, cand_in, cand_out = candidates(rng, seq_in, seq_out, 3)
    first = cu.evaluate_candidates(acts, w, start, cand_in, cand_out, target)
    uploads = cu.device_cache_info()["uploads"]
    again = cu.evaluate_candidates(acts, w, start, cand_in, cand_out, target)
    np.testing.assert_array_equal(again, first)
    assert cu.device_cache_info()["uploads"] == uploads  # weights, target, acts all kept
    assert cu.device_cache_info()["mirrors"] >= 1
    # a write by the caller (whole positions, as a search fallback would do) is noticed
    acts[1:] = cpu.prefix_activations(acts[1], w, cand_in[1, 1:], cand_out[1, 1:])
    got = cu.evaluate_candidates(acts, w, start, cand_in, cand_out, target)
    close(got, ref.evaluate_candidates(acts, w, start, cand_in, cand_out, target), np.float64)
    assert cu.device_cache_info()["uploads"] == uploads + 1
    # so is a change of the (small) weights in place
    w.b_last[0] += 1.0
    got = cu.evaluate_candidates(acts, w, start, cand_in, cand_out, target)
    close(got, ref.evaluate_candidates(acts, w, start, cand_in, cand_out, target), np.float64)


def test_empty_and_degenerate_inputs():
    _, w, x, target, seq_in, seq_out = problem((3, 10, 6, 5), np.float64, seed=6)
    none = np.empty(0, np.int64)
    acts = cu.prefix_activations(x, w, none, none)
    np.testing.assert_array_equal(acts, x[None])
    close(cu.network_output(x, w, none, none), ref.network_output(x, w, none, none), np.float64)
    got = cu.evaluate_candidates(acts, w, np.array([0]), np.empty((1, 0), np.int64),
                                 np.empty((1, 0), np.int64), target)
    close(got, [np.sum((x @ w.w_last + w.b_last[0] - target) ** 2)], np.float64)
    full = cu.prefix_activations(x, w, seq_in, seq_out)
    assert cu.evaluate_candidates(full, w, none, np.empty((0, 3), np.int64),
                                  np.empty((0, 3), np.int64), target).shape == (0,)
    assert cu.residual_norms(x, w, none, none).shape == (0,)
    before = full.copy()
    cu.refresh_prefix(full, w, seq_in, seq_out, 3)  # nothing after the last position
    np.testing.assert_array_equal(full, before)
    x_nan = x.copy()
    x_nan[2, 1] = np.nan
    y = cu.network_output(x_nan, w, seq_in, seq_out)
    assert np.isnan(y[2]) and np.all(np.isfinite(np.delete(y, 2)))


def test_bad_arguments_are_refused():
    _, w, x, target, seq_in, seq_out = problem((3, 10, 6, 5), np.float64, seed=7)
    with pytest.raises(TypeError):
        cu.network_output(x.astype(np.float32), w, seq_in, seq_out)
    with pytest.raises(IndexError):
        cu.network_output(x, w, seq_in + 1, seq_out)
    with pytest.raises(ValueError):
        cu.network_output(x[:, :3], w, seq_in, seq_out)
    acts = cu.prefix_activations(x, w, seq_in, seq_out)
    with pytest.raises(IndexError):
        cu.evaluate_candidates(acts, w, np.array([4]), seq_in[None], seq_out[None], target)
    with pytest.raises(ValueError):
        cu.evaluate_candidates(acts, w, np.array([0]), seq_in[None], seq_out[None], target[:-1])


def search_problem(n: int, seed: int):
    """(weights, x (m, d), target of the identity order, a shuffled start) for the search
    comparisons: n blocks in the simulator, a larger network on a real GPU."""
    n, m, d, h = (n, 24, 6, 5) if MODE == "sim" else (2 * n + 2, 500, 48, 32)
    rng = np.random.default_rng(seed)
    w = random_weights(rng, n, d, h, scale=1.0)
    x = rng.standard_normal((m, d))
    order = np.arange(n)
    return w, x, ref.network_output(x, w, order, order), rng.permutation(n)


def test_search_on_cuda_matches_cpu():
    """The climber, unchanged, takes the same moves with either backend."""
    from dropnet.search import Climber, adjacent_swaps, local_moves

    w, x, target, start = search_problem(4, seed=8)
    m = x.shape[0]
    results = []
    for kernels in ("cpu", "cuda"):
        climber = Climber(w, x, target, kernels, screen=2)
        state = climber.start(start, start)
        for hood in (adjacent_swaps, local_moves(2)):
            state = climber.climb(state, hood)
        results.append((state.seq_in.tolist(), state.sse, climber.log.rounds, state.acts))
    (cpu_seq, cpu_sse, cpu_rounds, _), (cu_seq, cu_sse, cu_rounds, cu_acts) = results
    assert cu_seq == cpu_seq and cu_rounds == cpu_rounds
    assert cu_sse == pytest.approx(cpu_sse, rel=1e-3, abs=1e-6 * m)
    close(cu_acts, ref.prefix_activations(x, w, np.array(cu_seq), np.array(cu_seq)), np.float32)


def test_kicks_on_cuda_match_cpu():
    """Remove-and-reinsert kicks evaluate sequences one block longer than the cache they
    start from; both backends must take the same kicks."""
    from dropnet.search import Climber, kick

    w, x, target, start = search_problem(5, seed=9)
    kicked = []
    for kernels in ("cpu", "cuda"):
        climber = Climber(w, x, target, kernels, dtype=np.float64)
        kick_rng = np.random.default_rng(1)
        kicked.append([kick(climber, start, start, kick_rng)[0].tolist() for _ in range(4)])
    assert kicked[0] == kicked[1]


def test_pursuit_seed_on_cuda_matches_cpu():
    """The pursuit seed evaluates one-block candidates from a two-position cache."""
    from dropnet.ordering import seed_order

    w, x, target, _ = search_problem(6, seed=4)
    blocks = np.arange(w.w_in.shape[0])
    orders = [seed_order("pursuit", w, blocks, blocks, x, kernels, target).tolist()
              for kernels in ("cpu", "cuda")]
    assert orders[0] == orders[1]
