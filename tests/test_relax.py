"""The Sinkhorn relaxation (dropnet.relax): its hand-written gradients against finite
differences and torch autograd, the soft network at a permutation against the hard forward
pass, and the orders it returns."""
from __future__ import annotations

import importlib
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_kernels import random_weights

from dropnet import relax
from dropnet._kernels import backend


def _setup(seed: int, n: int = 5, m: int = 40, d: int = 6, h: int = 10):
    rng = np.random.default_rng(seed)
    w = random_weights(rng, n, d, h, scale=1.0)
    x = rng.standard_normal((m, d))
    target = backend("reference").network_output(x, w, np.arange(n), np.arange(n))
    return rng, w, x, target


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    """Every kernel a solve reaches compiled (or loaded) before the tests that solve under a
    time limit of a few seconds: with a cold cache compiling them takes longer than that
    (this file run on its own after an edit to the kernels). A search under an evaluation
    budget, which relaxes too, reads no clock."""
    from dropnet.solve import SearchOptions, solve_loaded

    pieces, noisy, _ = _noisy_planted()
    solve_loaded(pieces, noisy, SearchOptions(time_limit=np.inf, max_evals=30_000,
                                              relax_after=0.2), progress=lambda _: None)
    _, w, x, target = _setup(0)
    net = relax.SoftNetwork(w, np.arange(5), np.arange(5))  # float32, as the solver runs it
    net.loss_and_grads(np.eye(5), np.eye(5), x, target)


def _loss(net, logits, x, target):
    p, tape = relax.sinkhorn(logits)
    loss, dp = net.loss_and_grad(p, x, target)
    return loss, relax.sinkhorn_backward(dp, p, tape)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 9))
def test_sinkhorn_is_doubly_stochastic(seed, n):
    logits = np.random.default_rng(seed).standard_normal((n, n))
    p = relax.sinkhorn(logits, iters=200)[0]
    np.testing.assert_allclose(p.sum(axis=0), 1.0, atol=1e-12)  # the last normalisation
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    assert p.min() >= 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_matches_finite_differences(seed):
    rng, w, x, target = _setup(seed)
    net = relax.SoftNetwork(w, np.arange(5), rng.permutation(5), np.float64)
    logits = rng.standard_normal((5, 5))
    _, grad = _loss(net, logits, x, target)
    numeric = np.zeros_like(logits)
    for i, j in np.ndindex(*logits.shape):
        step = np.zeros_like(logits)
        step[i, j] = 1e-6
        numeric[i, j] = (_loss(net, logits + step, x, target)[0]
                         - _loss(net, logits - step, x, target)[0]) / 2e-6
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-9 * np.abs(numeric).max())


@pytest.mark.parametrize("seed", [0, 3])
def test_pairing_gradient_matches_finite_differences(seed):
    """The output layers mixed by Q = sinkhorn(pair logits): the gradients for both the
    order's and the pairing's logits against central differences."""
    rng, w, x, target = _setup(seed)
    net = relax.SoftNetwork(w, np.arange(5), rng.permutation(5), np.float64)
    order_logits, pair_logits = rng.standard_normal((2, 5, 5))

    def loss(a, b):
        p, tape_p = relax.sinkhorn(a)
        q, tape_q = relax.sinkhorn(b)
        value, dp, dq = net.loss_and_grads(p, q, x, target)
        return value, relax.sinkhorn_backward(dp, p, tape_p), relax.sinkhorn_backward(dq, q, tape_q)

    _, grad_p, grad_q = loss(order_logits, pair_logits)
    for which, grad in ((0, grad_p), (1, grad_q)):
        numeric = np.zeros((5, 5))
        for i, j in np.ndindex(5, 5):
            step = np.zeros((2, 5, 5))
            step[which, i, j] = 1e-6
            up = loss(order_logits + step[0], pair_logits + step[1])[0]
            down = loss(order_logits - step[0], pair_logits - step[1])[0]
            numeric[i, j] = (up - down) / 2e-6
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-9 * np.abs(numeric).max())


def test_soft_outputs_at_a_permutation_are_the_hard_pairing():
    """Q a permutation: the soft network with mixed outputs is the network whose block k
    has output layer blk_out[Q's column for k]."""
    rng, w, x, target = _setup(4)
    net = relax.SoftNetwork(w, np.arange(5), np.arange(5), np.float64)
    outputs = rng.permutation(5)
    loss = net.loss_and_grads(np.eye(5), np.eye(5)[outputs], x, target)[0]
    out = backend("reference").network_output(x, w, np.arange(5), outputs)
    assert loss == pytest.approx(np.mean((out - target) ** 2), rel=1e-10)


def test_gradient_matches_torch_autograd():
    torch = pytest.importorskip("torch")
    rng, w, x, target = _setup(7, n=6)
    net = relax.SoftNetwork(w, rng.permutation(6), rng.permutation(6), np.float64)
    logits = rng.standard_normal((6, 6)) * 2
    loss, grad = _loss(net, logits, x, target)

    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64)
    leaf = t(logits).requires_grad_(True)
    z = leaf
    for _ in range(relax.SINKHORN_ITERS):
        z = z - torch.logsumexp(z, 1, keepdim=True)
        z = z - torch.logsumexp(z, 0, keepdim=True)
    p, xt = z.exp(), t(x)
    p = torch.where(p >= relax.active_threshold(6), p, 0.0)  # skipped blocks, as in the pass
    assert (p == 0).any() and (p > 0).sum() > 6  # both kinds of entry are checked
    for q in range(6):
        hidden = torch.relu(torch.einsum("bd,khd->kbh", xt, t(w.w_in[net.blk_in]))
                            + t(w.b_in[net.blk_in])[:, None])
        res = torch.einsum("kbh,kdh->kbd", hidden, t(net.outputs)) + t(net.outputs_b)[:, None]
        xt = xt + torch.einsum("k,kbd->bd", p[q], res)
    expected = ((xt @ t(w.w_last) + float(w.b_last[0]) - t(target)) ** 2).mean()
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(grad, leaf.grad.numpy(), rtol=1e-9, atol=1e-14)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 7))
def test_soft_network_at_a_permutation_is_the_hard_network(seed, n):
    rng, w, x, target = _setup(seed, n=n)
    blk_in, blk_out, order = rng.permutation(n), rng.permutation(n), rng.permutation(n)
    net = relax.SoftNetwork(w, blk_in, blk_out, np.float64)
    loss, _ = net.loss_and_grad(np.eye(n)[order], x, target)
    out = backend("reference").network_output(x, w, blk_in[order], blk_out[order])
    assert loss == pytest.approx(np.mean((out - target) ** 2), rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("n", [3, 48, 128])
def test_uniform_weights_keep_every_block_active(n):
    """Uniform logits (a fresh relaxation) must not skip anything, however many blocks: a
    flat threshold of 0.01 would skip every block of a 128-block network."""
    _, w, x, target = _setup(1, n=n, m=8, d=4, h=4)
    w = w._replace(w_out=w.w_out * 0.01)  # keep a deep random stack finite
    net = relax.SoftNetwork(w, np.arange(n), np.arange(n), np.float64)
    _, grad = net.loss_and_grad(np.full((n, n), 1.0 / n), x, target)
    assert relax.active_threshold(n) <= relax.ACTIVE and np.all(grad != 0.0)


def test_blocks_weighted_below_active_are_skipped():
    _, w, x, target = _setup(3, n=4)
    net = relax.SoftNetwork(w, np.arange(4), np.arange(4), np.float64)
    p = np.full((4, 4), 0.25)
    p[1, 2] = relax.active_threshold(4) / 10
    loss, grad = net.loss_and_grad(p, x, target)
    assert grad[1, 2] == 0.0 and np.all(grad[p >= relax.active_threshold(4)] != 0.0)
    p_zero = p.copy()
    p_zero[1, 2] = 0.0
    assert net.loss_and_grad(p_zero, x, target)[0] == loss


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.floats(0.5, 10))
def test_band_logits_peak_at_the_order(seed, n, band):
    order = np.random.default_rng(seed).permutation(n)
    logits = relax.band_logits(order, n, band)
    assert np.array_equal(relax.hard_order(logits), order)
    assert not relax.band_logits(None, n, band).any()


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 6))
def test_relax_returns_a_permutation_no_worse_than_it_reports(seed, n):
    rng, w, x, target = _setup(seed, n=n)
    plan = relax.Round(3.0, 12, 16, 0.5)
    order, mse = relax.relax(w, np.arange(n), np.arange(n), x, target, rng.permutation(n),
                             rounds=2, random_seed=seed, plan=(plan, plan))
    assert sorted(order) == list(range(n))
    out = backend("reference").network_output(x, w, order, order)
    assert mse == pytest.approx(np.mean((out - target) ** 2), rel=1e-4, abs=1e-9)


def test_relax_reports_nothing_when_the_deadline_has_passed():
    _, w, x, target = _setup(0)
    assert relax.relax(w, np.arange(5), np.arange(5), x, target, deadline=0.0) == (None, np.inf)


def _planted_blocks(blocks: int, seed: int):
    """(stack, data, seq_in, seq_out): a shuffled planted network and its answer's blocks."""
    from dropnet.generate import planted
    from dropnet.roles import assign_roles
    from dropnet.verify import sequences

    pieces, data, permutation = planted(blocks, 512, width=16, hidden=32, seed=seed,
                                        profile="shuffled")
    stack = assign_roles(pieces)
    return (stack, data, *sequences(stack, list(permutation)))


def _climbed_mse(stack, data, seq_in: np.ndarray, seq_out: np.ndarray) -> tuple[float, float]:
    """(MSE after a climb from the blocks (seq_in, seq_out) on all rows, the tolerance)."""
    from dropnet import certify
    from dropnet.search import Climber

    climber = Climber(stack.weights, data.x, data.target, dtype=np.float64)
    state = climber.climb(climber.start(seq_in, seq_out))
    return state.sse / len(data.x), certify.tolerance(data.target, len(seq_in))


def test_relax_orders_a_shuffled_network_from_uniform_logits():
    """Eight blocks in random order, no start: the relaxation puts them within adjacent
    swaps of the answer (here one), which a climb then certifies."""
    stack, data, seq_in, seq_out = _planted_blocks(8, seed=1)
    shuffle = np.random.default_rng(0).permutation(8)
    order, mse = relax.relax(stack.weights, seq_in[shuffle], seq_out[shuffle], data.x,
                             data.target, None, rounds=2)
    climbed, tol = _climbed_mse(stack, data, seq_in[shuffle][order], seq_out[shuffle][order])
    assert climbed <= tol < mse


def _noisy_planted():
    """(pieces, data with pred + N(0, 1e-3^2) noise, the noise (m,)): a shuffled planted
    10-block network that no order can certify, so every search stalls on it."""
    from dataclasses import replace

    from dropnet.generate import planted

    pieces, data, _ = planted(10, 300, width=16, hidden=32, seed=2, profile="shuffled")
    noise = 1e-3 * np.random.default_rng(0).standard_normal(data.rows)
    return pieces, replace(data, pred=data.pred + noise), noise


@pytest.mark.parametrize("relax_after", [0.25, 1.0])
def test_solve_relaxes_when_stalled_and_never_ends_worse(relax_after, monkeypatch):
    """Noise on pred keeps any order from being certified, so the search stalls and, at
    relax_after of the time limit, relaxes (however little of its schedule fits: the
    mechanism is tested here); the answer is still the planted one's MSE or better, and
    relax_after >= 1 never relaxes."""
    solve = importlib.import_module("dropnet.solve")  # the module (dropnet.solve is the function)
    from dropnet.solve import SearchOptions, solve_loaded

    monkeypatch.setattr(solve, "RELAX_MIN", 0.0)
    pieces, noisy, noise = _noisy_planted()
    said = []
    result = solve_loaded(pieces, noisy, SearchOptions(time_limit=3.0, relax_after=relax_after),
                          progress=said.append)
    assert sorted(result.permutation) == list(range(21)) and not result.certified
    assert result.mse <= np.mean(noise**2) * (1 + 1e-6)  # the planted order's MSE
    relaxed = [line for line in said if line.startswith("relaxation:")]
    if relax_after < 1:
        runs = result.search["relax"]
        found = [r for r in runs if r["mse"] is not None]  # the others ran out of time
        assert len(relaxed) == len(found) >= 1 and sum(r["seconds"] for r in runs) <= 3.0
    else:
        assert not relaxed and result.search["relax"] == []


def test_solve_relaxes_again_from_the_best_so_far(monkeypatch):
    """After a relaxation the walkers get RELAX_WALK times its time, then it runs again,
    from the best answer so far (its blocks, in their order, score the MSE announced just
    before it) and with the next random seed, until the time is spent."""
    solve = importlib.import_module("dropnet.solve")
    from dropnet import certify
    from dropnet.solve import SearchOptions, solve_loaded

    monkeypatch.setattr(solve, "RELAX_MIN", 0.0)
    monkeypatch.setattr(solve, "RELAX_WALK", 0.2)
    pieces, noisy, _ = _noisy_planted()
    calls, real = [], relax.relax

    def spy(weights, blk_in, blk_out, *args, **kwargs):
        start = certify.check(weights, noisy.x, blk_in, blk_out, noisy.target, 0.0, "cpu")[0]
        calls.append((kwargs["random_seed"], start))
        return real(weights, blk_in, blk_out, *args, **kwargs)

    monkeypatch.setattr(relax, "relax", spy)
    said = []
    result = solve_loaded(pieces, noisy, SearchOptions(time_limit=4.0, relax_after=0.1,
                                                       random_seed=7), progress=said.append)
    assert len(calls) >= 2 and [c[0] for c in calls] == list(range(7, 7 + len(calls)))
    assert len(result.search["relax"]) == len(calls)
    assert all(r["mse"] is not None for r in result.search["relax"][:-1])
    starts = [line for line in said if line.startswith("uncertified at MSE")]
    best = [float(line.split()[3].rstrip(":")) for line in starts]  # the best so far, each time
    assert len(best) == len(calls)
    np.testing.assert_allclose([c[1] for c in calls], best, rtol=5e-3)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(1e-6, 1.0), max_size=4), st.lists(st.floats(1e-6, 1.0), max_size=2))
def test_walkers_far_behind_a_relaxation_stop(before, after):
    """After a relaxation, the walkers from before it at RELAX_BEHIND times its walkers'
    best MSE or more stop; the rest, and all of its own, go on (all when it gave none)."""
    solve = importlib.import_module("dropnet.solve")
    old = [SimpleNamespace(mse=m) for m in before]
    new = [SimpleNamespace(mse=m) for m in after]
    joined = solve._joined(old, new)
    if not new:
        assert joined == old
        return
    best = min(after)
    assert joined[len(joined) - len(new):] == new
    assert joined[: len(joined) - len(new)] == [w for w in old if w.mse < solve.RELAX_BEHIND * best]
    assert all(w.mse < solve.RELAX_BEHIND * best for w in joined[: len(joined) - len(new)])


def test_relax_refits_each_round_to_the_time_left(monkeypatch):
    """The budget counts the setup (the timed steps), and a round that ran slower than its
    estimate shrinks the rounds after it, so the last one still does every step it plans
    before the budget ends (instead of being cut at the deadline while warm)."""
    import time

    _, w, x, target = _setup(1)
    per_step = 0.01  # the estimate: 100 steps a round, 1 s (long steps: sleep's jitter is small)
    monkeypatch.setattr(relax, "_costs", lambda *a: time.sleep(0.5) or [1.0, 1.0])
    rounds = []

    def fake_round(net, x, target, order, plan, rng, score, deadline=np.inf, pair_logits=None):
        done = 0
        while done < plan.steps and time.perf_counter() < deadline:
            time.sleep(1.5 * per_step)  # every step 1.5x slower than estimated
            done += 1
        rounds.append((plan.steps, done))
        return np.arange(5), None, 0.0, done

    monkeypatch.setattr(relax, "relax_round", fake_round)
    t = time.perf_counter()
    stats = {}
    relax.relax(w, np.arange(5), np.arange(5), x, target, np.arange(5), deadline=t + 2.0,
                budget=2.0, stats=stats, plan=(relax.Round(3.0, 100, 16, 0.5),) * 2)
    (planned1, done1), (planned2, done2) = rounds
    assert 0.6 * 100 * 1.5 / 2 < planned1 < 100 * 1.5 / 2  # 1.5 s left after the setup
    # refitted: it finishes in time, but for a step of the sleeps' jitter (with 2 ms steps
    # and no slack this failed 1 run in 6); without the refit it would plan as many steps
    # as the first round and be cut well short of them
    assert planned2 < 0.6 * planned1 and planned2 - 1 <= done2 <= planned2
    assert stats["steps"] == [done1, done2]


def test_solve_walks_on_when_the_relaxation_finds_no_order(monkeypatch):
    """A relaxation that returns nothing (out of time before its first step, or skipped for
    lack of room) does not end the search: the walkers use the rest of the time limit."""
    solve = importlib.import_module("dropnet.solve")  # the module (dropnet.solve is the function)
    from dropnet.solve import SearchOptions, solve_loaded

    pieces, noisy, _ = _noisy_planted()
    calls = []
    monkeypatch.setattr(relax, "relax", lambda *a, **k: calls.append(1) or (None, np.inf))
    result = solve_loaded(pieces, noisy, SearchOptions(time_limit=2.0, relax_after=0.25))
    assert calls == [1] and result.search["relax"][0]["mse"] is None
    assert result.timings["order"] + result.timings.get("certify", 0) >= 1.9
    monkeypatch.undo()
    monkeypatch.setattr(solve, "RELAX_MIN", 2.0)  # never enough room: skipped, walk on
    said = []
    result = solve_loaded(pieces, noisy, SearchOptions(time_limit=2.0, relax_after=0.25),
                          progress=said.append)
    assert any(line.startswith("relaxation skipped") for line in said)
    skipped = result.search["relax"]
    assert len(skipped) == 1 and skipped[0]["mse"] is None and skipped[0]["share"] < 2.0
    assert result.timings["order"] + result.timings.get("certify", 0) >= 1.9


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_pairs_pass_with_the_outputs_unmixed_is_the_orders_pass(seed, dtype):
    """loss_and_grad (soft_loss_and_grad on the blocks as paired) and loss_and_grads with
    the identity mixing (soft_loss_and_grads on the mixed output layers) compute one soft
    network."""
    rng, w, x, target = _setup(seed, n=7, m=50)
    net = relax.SoftNetwork(w, rng.permutation(7), rng.permutation(7), dtype)
    p = relax.sinkhorn(rng.standard_normal((7, 7)) * 2)[0]
    assert (p < relax.active_threshold(7)).any()  # some entries are skipped
    loss, grad = net.loss_and_grad(p, x, target)
    want_loss, want_grad, _ = net.loss_and_grads(p, np.eye(7), x, target)
    tol = 1e-10 if dtype == np.float64 else 2e-4
    assert loss == pytest.approx(want_loss, rel=tol)
    np.testing.assert_allclose(grad, want_grad, rtol=tol, atol=tol * np.abs(want_grad).max())


def test_relax_is_skipped_when_too_little_of_its_schedule_fits():
    _, w, x, target = _setup(1)
    stats = {}
    found = relax.relax(w, np.arange(5), np.arange(5), x, target, np.arange(5), budget=1e-9,
                        min_share=0.5, stats=stats)
    assert found == (None, np.inf) and stats["share"] < 0.5
    stats = {}
    order, _ = relax.relax(w, np.arange(5), np.arange(5), x, target, np.arange(5), budget=60.0,
                           min_share=0.5, stats=stats, plan=(relax.Round(3.0, 20, 16, 0.5),))
    assert stats["share"] == 1.0 and sorted(order) == list(range(5))


def test_an_evaluation_budget_makes_the_search_deterministic(monkeypatch):
    """With an infinite time limit the budget is max_evals and no decision reads the clock:
    the relaxation runs once relax_after of the evaluations are spent, sized in evaluations,
    and again after the walkers' turn; two runs take the same path to the same answer."""
    from dropnet.solve import SearchOptions, solve_loaded

    monkeypatch.setattr(importlib.import_module("dropnet.solve"), "RELAX_WALK", 0.2)

    pieces, noisy, _ = _noisy_planted()
    budget = 300_000
    options = SearchOptions(time_limit=float("inf"), max_evals=budget, relax_after=0.1,
                            random_seed=3)
    first, second = (solve_loaded(pieces, noisy, options) for _ in range(2))

    def path(result):
        return [{k: v for k, v in run.items() if k != "seconds"} for run in result.search["relax"]]

    assert first.permutation == second.permutation and first.mse == second.mse
    assert first.search["block_evals"] == second.search["block_evals"] >= budget
    assert path(first) == path(second)
    assert len(path(first)) >= 2 and path(first)[0]["mse"] is not None


@pytest.mark.parametrize("budget", [{"time_limit": 0.0}, {"time_limit": float("inf"), "max_evals": 1}])
def test_an_empty_budget_still_answers(budget):
    """No time, or a single block evaluation: the best seed is reported, uncertified."""
    from dropnet.solve import SearchOptions, solve_loaded

    pieces, noisy, _ = _noisy_planted()
    result = solve_loaded(pieces, noisy, SearchOptions(relax_after=0.1, **budget))
    assert not result.certified and sorted(result.permutation) == list(range(21))
    assert result.search["relax"] == []


def test_relax_pairs_uncrosses_two_output_layers():
    """Two blocks' output layers crossed: fitting the pairing with the order (from the
    right order, no preference among the pairs) gives each block its own output layer."""
    rng, w, x, target = _setup(11, m=200)
    blk_out = np.arange(5)
    blk_out[[1, 3]] = blk_out[[3, 1]]
    order, outputs, mse = relax.relax_pairs(
        w, np.arange(5), blk_out, x, target, np.zeros((5, 5)), np.arange(5),
        plan=(relax.Round(1.0, 200, 64, 0.5),), rounds=1)
    assert np.array_equal(order, np.arange(5))
    assert np.array_equal(blk_out[outputs], np.arange(5)) and mse < 1e-10


def _naive_held(w, x, target, order, factor):
    """held_prefix written out: the first position whose block, taken out, does not
    multiply the MSE by ``factor`` (reference kernels)."""
    ref = backend("reference")
    base = np.mean((ref.network_output(x, w, order, order) - target) ** 2)
    for p in range(len(order) if base > 0 else 0):
        rest = np.delete(order, p)
        if np.mean((ref.network_output(x, w, rest, rest) - target) ** 2) < factor * base:
            return p
    return len(order)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 7), st.sampled_from([1.0, 2.0, 5.0]))
def test_held_prefix_matches_a_naive_count(seed, n, factor):
    rng, w, x, target = _setup(seed, n=n)
    right = rng.integers(0, n + 1)  # the target's first blocks in place, the rest shuffled
    order = np.concatenate([np.arange(right), right + rng.permutation(n - right)])
    held, block_rows = relax.held_prefix(w, x, target, order, order, factor)
    assert held == _naive_held(w, x, target, order, factor)
    assert 0 <= held <= n and block_rows >= len(x) * n


def test_held_prefix_holds_every_block_of_the_answer():
    _, w, x, target = _setup(4, n=6)
    assert relax.held_prefix(w, x, target, np.arange(6), np.arange(6))[0] == 6


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(3, 7), st.integers(0, 3))
def test_relax_suffix_keeps_the_held_blocks_and_reports_its_order(seed, n, held):
    held = min(held, n - 2)
    rng, w, x, target = _setup(seed, n=n)
    start = rng.permutation(n)
    plan = relax.Round(None, 12, 16, 0.5)
    order, mse = relax.relax_suffix(w, start, start, x, target, held, rounds=1, plan=(plan,),
                                    random_seed=seed)
    assert sorted(order) == list(range(n)) and np.array_equal(order[:held], np.arange(held))
    found = start[order]
    out = backend("reference").network_output(x, w, found, found)
    assert mse == pytest.approx(np.mean((out - target) ** 2), rel=1e-4, abs=1e-9)


def test_relax_suffix_orders_the_blocks_after_a_right_prefix():
    """Twelve planted blocks, the first four right and the last eight shuffled: holding the
    four and relaxing the rest from uniform logits puts them within a climb of the answer,
    which certifies it."""
    stack, data, seq_in, seq_out = _planted_blocks(12, seed=3)
    shuffle = np.concatenate([np.arange(4), 4 + np.random.default_rng(1).permutation(8)])
    order, mse = relax.relax_suffix(stack.weights, seq_in[shuffle], seq_out[shuffle], data.x,
                                    data.target, 4)
    assert np.array_equal(order[:4], np.arange(4))
    climbed, tol = _climbed_mse(stack, data, seq_in[shuffle][order], seq_out[shuffle][order])
    assert climbed <= tol < mse


def test_solve_repeats_the_relaxation_on_the_blocks_after_the_held_prefix(monkeypatch):
    """Every other repeated relaxation (pairs as they are: the second, fourth, ...) asks
    held_prefix about the best answer so far and relaxes only the blocks after the ones it
    holds (here 3 of 10: 7 relaxed); the others relax all 10."""
    solve = importlib.import_module("dropnet.solve")
    from dropnet import certify
    from dropnet.solve import SearchOptions, solve_loaded

    monkeypatch.setattr(solve, "RELAX_MIN", 0.0)
    monkeypatch.setattr(solve, "RELAX_WALK", 0.2)
    pieces, noisy, _ = _noisy_planted()
    calls, asked, real_relax, real_held = [], [], relax.relax, relax.held_prefix

    def spy(weights, blk_in, blk_out, *args, **kwargs):
        calls.append(len(blk_in))
        return real_relax(weights, blk_in, blk_out, *args, **kwargs)

    def held(weights, x, target, seq_in, seq_out, *args, **kwargs):
        asked.append(certify.mse(certify.model_output(weights, x, seq_in, seq_out), target))
        return 3, real_held(weights, x, target, seq_in, seq_out, *args, **kwargs)[1]

    monkeypatch.setattr(relax, "relax", spy)
    monkeypatch.setattr(relax, "held_prefix", held)
    said = []
    result = solve_loaded(pieces, noisy, SearchOptions(time_limit=6.0, relax_after=0.1),
                          progress=said.append)
    starts = [float(line.split()[3].rstrip(":")) for line in said
              if line.startswith("uncertified at MSE")]
    runs = result.search["relax"]
    assert len(calls) >= 3 and calls == [10 if k % 2 == 0 else 7 for k in range(len(calls))]
    assert [r["held"] for r in runs] == [0 if k % 2 == 0 else 3 for k in range(len(runs))]
    assert len(asked) == len(calls) // 2 and said.count("holding the first 3 blocks") == len(asked)
    np.testing.assert_allclose(asked, starts[1::2], rtol=5e-3)  # the best answer so far


@settings(max_examples=50, deadline=None)
@given(st.floats(0.0, 0.9), st.floats(1e-3, 0.5), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_the_walkers_turn_ends_early_only_when_they_stall(start, share, when, last_gain):
    """After a relaxation the walkers get ``share`` of the budget (RELAX_WALK times what it
    took); past RELAX_STALL of it, a span of STALL_SPAN of it in which no walker improved
    ends the turn too; before that, and while they improve, it does not."""
    solve = importlib.import_module("dropnet.solve")
    run = object.__new__(solve._Run)  # the turn's bookkeeping alone, on a fake clock
    run.used = lambda: start
    run.turn(share)
    assert not run.paused()
    now = start + when * 1.2 * share  # up to past the turn's end
    gained = start + last_gain * (now - start)  # a walker last improved then
    run.used, run.gained = (lambda: now), gained
    stalled = now - gained >= solve.STALL_SPAN * share
    early = now >= start + solve.RELAX_STALL * share
    assert run.paused() == (now >= start + share or (early and stalled))


def test_the_walkers_turn_in_numbers(monkeypatch):
    """RELAX_STALL 0.5, STALL_SPAN 0.25 of a turn of 0.2 from 0.1: no gain ends it at 0.2
    (half of it passed, a quarter without a gain); a gain at 0.22 holds it to 0.27; a walk
    that starts at 0.25 (seeds descended first) holds it to 0.3; it always ends at 0.3."""
    solve = importlib.import_module("dropnet.solve")
    monkeypatch.setattr(solve, "RELAX_STALL", 0.5)
    monkeypatch.setattr(solve, "STALL_SPAN", 0.25)
    run, clock = object.__new__(solve._Run), [0.1]
    run.used = lambda: clock[0]
    run.turn(0.2)

    def paused_at(now: float) -> bool:
        clock[0] = now
        return run.paused()

    assert not paused_at(0.19) and paused_at(0.2 + 1e-9)
    run.gained = 0.22
    assert not paused_at(0.26) and paused_at(0.27 + 1e-9)
    clock[0], run.log = 0.25, solve.SearchLog()
    solve._walk(run, [SimpleNamespace(walk=lambda: None, mse=1.0)])  # the walk starts at 0.25
    assert run.gained == 0.25 and not paused_at(0.29) and paused_at(0.3 + 1e-9)
    run.gained = 0.3
    assert paused_at(0.3 + 1e-9)  # the turn's end, gains or not


def test_the_time_limit_counts_the_seeds_construction(monkeypatch):
    """The budget's clock starts before the seeds are built: with an empty Numba cache their
    kernels compile there, and a search whose clock started after them overran its limit
    by their time (2.8 s at --time-limit 20 and 60 on a 48-block network)."""
    import time

    solve = importlib.import_module("dropnet.solve")
    from dropnet.solve import SearchOptions, solve_loaded

    real, calls = solve._ranked_seeds, []

    def slow(*args, **kwargs):  # the first construction takes a second, as a compile would
        if not calls:
            time.sleep(1.0)
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(solve, "_ranked_seeds", slow)
    pieces, noisy, _ = _noisy_planted()
    result = solve_loaded(pieces, noisy, SearchOptions(time_limit=2.0, relax_after=1.0))
    assert not result.certified
    assert 2.0 <= result.timings["order"] + result.timings.get("certify", 0.0) < 2.5
