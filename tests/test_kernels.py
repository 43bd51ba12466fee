"""Every CPU kernel against its pure-numpy reference on random inputs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from dropnet._kernels import BlockWeights, backend

cpu, ref = backend("cpu"), backend("reference")
TOL = {np.float64: 1e-10, np.float32: 2e-4}


def random_weights(rng, n, d, h, dtype=np.float64, scale=0.4) -> BlockWeights:
    w = BlockWeights(rng.standard_normal((n, h, d)) * scale / np.sqrt(d),
                     rng.standard_normal((n, h)) * 0.1,
                     rng.standard_normal((n, d, h)) * scale / np.sqrt(h),
                     rng.standard_normal((n, d)) * 0.1, rng.standard_normal(d),
                     rng.standard_normal(1))
    return w.astype(dtype)


shapes = st.tuples(st.integers(1, 6), st.integers(1, 70), st.integers(1, 9), st.integers(1, 13))


def close(a, b, dtype):
    scale = max(1.0, float(np.max(np.abs(b))) if np.size(b) else 1.0)
    np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype] * scale)


@settings(max_examples=25, deadline=None)
@given(shapes, st.integers(0, 2**32 - 1))
def test_pair_statistics_match_reference(shape, seed):
    n, _, d, h = shape
    w = random_weights(np.random.default_rng(seed), n, d, h)
    trace, fro = cpu.pair_trace_and_frobenius(w.w_in, w.w_out)
    want_trace, want_fro = ref.pair_trace_and_frobenius(w.w_in, w.w_out)
    close(trace, want_trace, np.float64)
    # ||W_out W_in||_F^2 = <W_out^T W_out, W_in W_in^T> sums h^2 products as large as
    # ||W_in||_F^2 ||W_out||_F^2: its rounding is relative to that size, not to the result,
    # which can be far smaller (d = 1: the product is a 1x1 sum that may cancel)
    size = np.outer(np.sum(w.w_in**2, axis=(1, 2)), np.sum(w.w_out**2, axis=(1, 2)))
    np.testing.assert_allclose(fro**2, want_fro**2, rtol=0, atol=1e-12 * np.max(size))
    condition = size / np.maximum(want_fro**2, 1e-300)  # relative error of fro^2 per unit
    ratio = cpu.dominance_ratio_matrix(w.w_in, w.w_out)
    want_ratio = ref.dominance_ratio_matrix(w.w_in, w.w_out)
    assert np.all(np.abs(ratio - want_ratio) <= 1e-10 + want_ratio * 1e-12 * condition)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=20, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_forward_kernels_match_reference(dtype, shape, seed):
    n, m, d, h = shape
    rng = np.random.default_rng(seed)
    w = random_weights(rng, n, d, h, dtype)
    x = rng.standard_normal((m, d)).astype(dtype)
    seq_in, seq_out = rng.permutation(n), rng.permutation(n)
    acts = cpu.prefix_activations(x, w, seq_in, seq_out)
    close(acts, ref.prefix_activations(x.astype(np.float64), w.astype(np.float64), seq_in, seq_out), dtype)
    close(cpu.network_output(x, w, seq_in, seq_out),
          ref.network_output(x.astype(np.float64), w.astype(np.float64), seq_in, seq_out), dtype)
    close(cpu.block_forward(x, w, seq_in[0], seq_out[0]),
          ref.block_forward(x.astype(np.float64), w.astype(np.float64), seq_in[0], seq_out[0]), dtype)
    cand_in, cand_out = rng.integers(0, n, 5), rng.integers(0, n, 5)
    close(cpu.residual_norms(x, w, cand_in, cand_out),
          ref.residual_norms(x.astype(np.float64), w.astype(np.float64), cand_in, cand_out), dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=20, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_evaluate_candidates_matches_reference(dtype, shape, seed):
    n, m, d, h = shape
    rng = np.random.default_rng(seed)
    w = random_weights(rng, n, d, h, dtype)
    x = rng.standard_normal((m, d)).astype(dtype)
    target = rng.standard_normal(m)
    base_in, base_out = rng.permutation(n), rng.permutation(n)
    acts = cpu.prefix_activations(x, w, base_in, base_out)
    k = 4
    start = rng.integers(0, n + 1, k)
    seq_in, seq_out = np.tile(base_in, (k, 1)), np.tile(base_out, (k, 1))
    for c in range(k):  # candidates agree with the base sequence before their start
        seq_in[c, start[c]:] = rng.permutation(base_in[start[c]:])
        seq_out[c, start[c]:] = rng.permutation(base_out[start[c]:])
    got = cpu.evaluate_candidates(acts, w, start, seq_in, seq_out, target)
    want = ref.evaluate_candidates(acts.astype(np.float64), w.astype(np.float64), start,
                                   seq_in, seq_out, target)
    close(got, want, dtype)


def test_prefix_cached_evaluation_equals_full_forward_of_swapped_order():
    rng = np.random.default_rng(7)
    n, m, d, h = 9, 37, 6, 10
    w = random_weights(rng, n, d, h)
    x, target = rng.standard_normal((m, d)), rng.standard_normal(m)
    seq_in, seq_out = rng.permutation(n), rng.permutation(n)
    acts = cpu.prefix_activations(x, w, seq_in, seq_out)
    for i in range(n - 1):
        swapped_in, swapped_out = seq_in.copy(), seq_out.copy()
        swapped_in[[i, i + 1]], swapped_out[[i, i + 1]] = seq_in[[i + 1, i]], seq_out[[i + 1, i]]
        cached = cpu.evaluate_candidates(acts, w, np.array([i]), swapped_in[None],
                                         swapped_out[None], target)[0]
        full = np.sum((ref.network_output(x, w, swapped_in, swapped_out) - target) ** 2)
        assert cached == pytest.approx(full, rel=1e-12)


def test_refresh_prefix_matches_rebuild():
    rng = np.random.default_rng(3)
    w = random_weights(rng, 7, 5, 8)
    x = rng.standard_normal((41, 5))
    seq = rng.permutation(7)
    acts = cpu.prefix_activations(x, w, seq, seq)
    new = seq.copy()
    new[[3, 5]] = new[[5, 3]]
    cpu.refresh_prefix(acts, w, new, new, 3)
    np.testing.assert_allclose(acts, ref.prefix_activations(x, w, new, new), rtol=1e-12, atol=1e-12)


def test_mixed_dtypes_are_refused():
    rng = np.random.default_rng(0)
    w = random_weights(rng, 2, 3, 4)
    with pytest.raises(TypeError):
        cpu.network_output(rng.standard_normal((5, 3)).astype(np.float32), w, [0, 1], [0, 1])


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError):
        backend("tpu")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=15, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_adjoint_and_first_order_match_reference(dtype, shape, seed):
    n, m, d, h = shape
    rng = np.random.default_rng(seed)
    w = random_weights(rng, n, d, h, dtype)
    x = rng.standard_normal((m, d)).astype(dtype)
    target = rng.standard_normal(m)
    seq_in, seq_out = rng.permutation(n), rng.permutation(n)
    acts = cpu.prefix_activations(x, w, seq_in, seq_out)
    w64, acts64 = w.astype(np.float64), acts.astype(np.float64)
    grads = cpu.adjoint_gradients(acts, w, seq_in, seq_out, target)
    close(grads, ref.adjoint_gradients(acts64, w64, seq_in, seq_out, target), dtype)
    lo = rng.integers(0, n, 3)
    hi = np.minimum(lo + rng.integers(0, 3, 3), n - 1)
    cand_in, cand_out = np.tile(seq_in, (3, 1)), np.tile(seq_out, (3, 1))
    for c in range(3):
        cand_in[c, lo[c]:hi[c] + 1] = rng.permutation(cand_in[c, lo[c]:hi[c] + 1])
    got = cpu.first_order_deltas(acts, grads, w, lo, hi, cand_in, cand_out)
    want = ref.first_order_deltas(acts64, grads.astype(np.float64), w64, lo, hi, cand_in, cand_out)
    close(got, want, dtype)


def test_adjoint_gradient_matches_finite_differences():
    rng = np.random.default_rng(5)
    w = random_weights(rng, 3, 4, 6)
    x, target = rng.standard_normal((2, 4)), rng.standard_normal(2)
    seq = np.array([2, 0, 1])
    acts = ref.prefix_activations(x, w, seq, seq)
    grads = cpu.adjoint_gradients(acts, w, seq, seq, target)
    for p in range(4):
        for a in range(4):
            bumped = acts.copy()
            bumped[p, 0, a] += 1e-6
            plus = ref.evaluate_candidates(bumped, w, np.array([p]), seq[None], seq[None], target)[0]
            bumped[p, 0, a] -= 2e-6
            minus = ref.evaluate_candidates(bumped, w, np.array([p]), seq[None], seq[None], target)[0]
            assert grads[p, 0, a] == pytest.approx((plus - minus) / 2e-6, rel=1e-5, abs=1e-7)


def soft_problem(rng, n, m, d, h, dtype=np.float64):
    """Weights of N = n + 2 layers, n blocks paired at random, p (n, n) doubly stochastic-ish
    with some entries small enough to be skipped at floor 0.05."""
    w = random_weights(rng, n + 2, d, h, dtype)
    blk_in, blk_out = rng.permutation(n + 2)[:n], rng.permutation(n + 2)[:n]
    p = rng.dirichlet(np.full(n, 0.5), size=n)
    x = rng.standard_normal((m, d)).astype(dtype)
    return w, blk_in, blk_out, p, x, rng.standard_normal(m)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=20, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), floor=st.sampled_from([0.0, 0.05, 2.0]))
def test_soft_loss_and_grad_matches_reference(dtype, shape, seed, floor):
    n, m, d, h = shape
    w, blk_in, blk_out, p, x, target = soft_problem(np.random.default_rng(seed), n, m, d, h, dtype)
    loss, grad = cpu.soft_loss_and_grad(x, target, w, blk_in, blk_out, p, floor)
    want_loss, want_grad = ref.soft_loss_and_grad(x.astype(np.float64), target, w.astype(np.float64),
                                                  blk_in, blk_out, p, floor)
    assert grad.dtype == np.float64 and grad.shape == (n, n)
    close(loss, want_loss, dtype)
    close(grad, want_grad, dtype)
    assert np.all(grad[p < floor] == 0)  # skipped entries get no gradient


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=20, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), floor=st.sampled_from([0.0, 0.05, 2.0]))
@example(shape=(5, 40, 40, 24), seed=0, floor=0.05)  # d over 3 (float32) or 5 (float64) chunks
def test_soft_loss_and_grads_matches_reference(dtype, shape, seed, floor):
    """The output layers' gradients too (the pairing relaxation's step; the CPU kernel sums
    them in chunks of d by lanes), and the first two results are soft_loss_and_grad's."""
    n, m, d, h = shape
    w, blk_in, blk_out, p, x, target = soft_problem(np.random.default_rng(seed), n, m, d, h, dtype)
    got = cpu.soft_loss_and_grads(x, target, w, blk_in, blk_out, p, floor)
    want = ref.soft_loss_and_grads(x.astype(np.float64), target, w.astype(np.float64),
                                   blk_in, blk_out, p, floor)
    assert [a.shape for a in got[1:]] == [(n, n), (n, d, h), (n, d)]
    assert all(a.dtype == np.float64 for a in got[1:])
    for a, b in zip(got, want):
        close(a, b, dtype)
    plain = cpu.soft_loss_and_grad(x, target, w, blk_in, blk_out, p, floor)
    assert plain[0] == got[0] and np.array_equal(plain[1], got[1])  # one compiled pass
    skipped = np.all(p < floor, axis=0)  # a block skipped everywhere: no gradient
    assert np.all(got[2][skipped] == 0) and np.all(got[3][skipped] == 0)


def test_soft_output_layer_gradients_match_finite_differences():
    rng = np.random.default_rng(8)
    w, blk_in, blk_out, p, x, target = soft_problem(rng, 4, 11, 5, 6)
    _, _, d_w, d_b = ref.soft_loss_and_grads(x, target, w, blk_in, blk_out, p, 0.0)
    for k, a, v in [(0, 0, 0), (2, 4, 5), (3, 1, 2)]:  # (blk_out pieces are distinct)
        for field, index, grad in (("w_out", (blk_out[k], a, v), d_w[k, a, v]),
                                   ("b_out", (blk_out[k], a), d_b[k, a])):
            losses = []
            for step in (1e-6, -1e-6):
                bumped = getattr(w, field).copy()
                bumped[index] += step
                losses.append(ref.soft_loss_and_grad(x, target, w._replace(**{field: bumped}),
                                                     blk_in, blk_out, p, 0.0)[0])
            assert grad == pytest.approx((losses[0] - losses[1]) / 2e-6, rel=1e-5, abs=1e-8)


def test_soft_loss_and_grad_matches_finite_differences_and_hard_network():
    rng = np.random.default_rng(7)
    w, blk_in, blk_out, p, x, target = soft_problem(rng, 4, 11, 5, 6)
    _, grad = ref.soft_loss_and_grad(x, target, w, blk_in, blk_out, p, 0.0)
    for q, k in [(0, 0), (1, 3), (3, 2)]:
        bumped = p.copy()
        bumped[q, k] += 1e-6
        plus = ref.soft_loss_and_grad(x, target, w, blk_in, blk_out, bumped, 0.0)[0]
        bumped[q, k] -= 2e-6
        minus = ref.soft_loss_and_grad(x, target, w, blk_in, blk_out, bumped, 0.0)[0]
        assert grad[q, k] == pytest.approx((plus - minus) / 2e-6, rel=1e-5, abs=1e-8)
    order = rng.permutation(4)  # a permutation matrix: the soft network is the hard one
    hard = np.eye(4)[order]
    got = cpu.soft_loss_and_grad(x, target, w, blk_in, blk_out, hard, 0.5)[0]
    out = ref.network_output(x, w, blk_in[order], blk_out[order])
    assert got == pytest.approx(np.mean((out - target) ** 2), rel=1e-10)
