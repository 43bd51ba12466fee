"""Order the blocks by a continuous relaxation of the permutation (Sinkhorn), fitted to the data.

A soft network holds, at every position p, a mixture of all n blocks:

    x <- x + sum_k P[p, k] * (W_out[k] relu(W_in[k] x + b_in[k]) + b_out[k])

with P = Sinkhorn(L / tau) doubly stochastic (n, n). The logits L are fitted by Adam to the
MSE against the target on minibatches of rows while tau anneals from tau0 to TAU_END, which
pushes P towards a permutation; every CHECK_EVERY steps the Hungarian assignment of P gives
a hard order, and the hard order of lowest MSE (on up to CHECK_ROWS rows) is kept. A round
starts from a band of width ``band`` positions around a given order (or from uniform logits);
each later round starts from the previous round's order with a narrower band (ROUNDS).

The step (:meth:`SoftNetwork.loss_and_grad`) runs on the kernels' ``soft_loss_and_grad``
(``dropnet._kernels``): on the CPU a fused pass over tiles of rows, each tile's activations
at every position kept for the backward pass, every active block's layers run on the tile
in registers. Blocks whose weight at a position is below ``active_threshold(n)`` are
skipped there (their gradient through Sinkhorn is proportional to that weight). With the
pairing fitted too (:func:`relax_pairs`) the step (:meth:`SoftNetwork.loss_and_grads`)
runs ``soft_loss_and_grads`` on the blocks' mixed output layers, which also sums each
block's output-layer gradient (one more matrix product per active block and tile).
Gradients are written out by hand (no autograd); the tests check them against finite
differences, against the numpy reference and, where torch is installed, against autograd.

Cost: about 8 b d h n^2 flops per step for b rows with every block active (the forward and
backward passes, two matrix products each per position), against 4 b d h n for one hard
forward pass: each step costs about 2 n hard passes, far more than a local move, which is
why the solver runs it only when the local search has stalled and budget remains.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import linear_sum_assignment

from ._kernels import BlockWeights, backend

TAU_END = 0.03  # temperature at the end of every round
ACTIVE = 1e-2  # blocks weighted below this at a position are skipped there (active_threshold)
ACTIVE_UNIFORM = 0.5  # ... or below this share of the uniform weight 1/n, if lower
CHECK_EVERY = 10  # steps between hard orders read off P
CHECK_ROWS = 2048  # rows the hard orders are scored on
SINKHORN_ITERS = 30
MIN_STEPS = 20  # a round fitted to a budget keeps at least this many steps
SHARPENING = 0.68  # rounds took 0.64-0.72 of the fixed-band estimate (48 and 64 blocks)
PAIR_BONUS = 2.0  # relax_pairs: a later round's pair logits favour the pairs found by this much
HOLD = 2.0  # held_prefix: a leading block is held when taking it out multiplies the MSE by this


@dataclass(frozen=True)
class Round:
    """One round: ``band`` (positions, None: uniform logits), ``steps`` of Adam (learning
    rate ``lr``) on ``batch`` rows, temperature from ``tau0`` down to TAU_END."""

    band: float | None
    steps: int
    batch: int
    tau0: float
    lr: float = 0.05


ROUNDS = (Round(8.0, 400, 256, 1.0), Round(3.0, 250, 512, 0.3), Round(2.0, 200, 1024, 0.2))


def temperature(plan: Round, fraction: float | np.ndarray) -> float | np.ndarray:
    """tau at ``fraction`` (0 to 1) of a round: geometric from plan.tau0 to TAU_END."""
    return plan.tau0 * (TAU_END / plan.tau0) ** fraction


def sinkhorn(logits: np.ndarray, iters: int = SINKHORN_ITERS) -> tuple[np.ndarray, list]:
    """(P (n, n) doubly stochastic, the tape for :func:`sinkhorn_backward`): rows, then
    columns, normalised in log space ``iters`` times."""
    tape, z = [], logits.astype(np.float64)
    for _ in range(iters):
        for axis in (1, 0):
            s = _softmax(z, axis)
            tape.append((axis, s))
            z = np.log(np.maximum(s, 1e-300))
    return np.exp(z), tape


def sinkhorn_backward(dp: np.ndarray, p: np.ndarray, tape: list) -> np.ndarray:
    """Gradient (n, n) with respect to the logits, given the gradient ``dp`` with respect
    to P = sinkhorn(logits)[0]. Each step z <- z - logsumexp(z, axis) has the adjoint
    dz <- dz - softmax(z, axis) * sum(dz, axis)."""
    dz = dp * p
    for axis, s in reversed(tape):
        dz = dz - s * dz.sum(axis=axis, keepdims=True)
    return dz


def _softmax(z: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def active_threshold(n: int) -> float:
    """The weight below which a block is skipped at a position of the soft network of n
    blocks: ACTIVE, or ACTIVE_UNIFORM / n if lower (uniform logits keep every block active).
    Its gradient through Sinkhorn is proportional to that weight. On a 48-block network
    (d = 48) the two rounds from a band took 19 s at 1e-2 against 44 s at 1e-5, with
    orders of MSE 0.0022-0.0031 against 0.0020-0.0027 (rank correlation 0.96-0.97 both)."""
    return min(ACTIVE, ACTIVE_UNIFORM / n)


class SoftNetwork:
    """The n blocks (blk_in[k], blk_out[k]) in ``dtype`` for the soft forward pass, on the
    ``kernels`` backend: :meth:`loss_and_grad` (``soft_loss_and_grad``) with the blocks as
    paired; :meth:`loss_and_grads` (``soft_loss_and_grads``) with the output layers mixed
    too (block k then has output layer sum_j Q[k, j] W_out[blk_out[j]], a soft pairing)."""

    def __init__(self, weights: BlockWeights, blk_in: np.ndarray, blk_out: np.ndarray,
                 dtype=np.float32, kernels: str = "cpu"):
        self.n, self.dtype = len(blk_in), dtype
        self.weights, self.kernels = weights.astype(dtype), backend(kernels)
        self.blk_in = np.ascontiguousarray(blk_in, np.int64)
        self.blk_out = np.ascontiguousarray(blk_out, np.int64)
        self.outputs = np.ascontiguousarray(self.weights.w_out[self.blk_out])  # (n, d, h)
        self.outputs_b = np.ascontiguousarray(self.weights.b_out[self.blk_out])  # (n, d)
        self.block_rows = 0  # blocks x rows evaluated so far (forward and backward passes)

    def mixed(self, q: np.ndarray) -> BlockWeights:
        """The weights with block k's output layer sum_j q[k, j] W_out[blk_out[j]] (and its
        bias) at w_out[k], b_out[k]: the blocks are then (blk_in[k], k). q (n, n), the
        identity for the blocks as given."""
        q = np.asarray(q, self.dtype)  # (einsum's own loops: see loss_and_grads)
        return self.weights._replace(w_out=np.einsum("kj,jdh->kdh", q, self.outputs),
                                     b_out=np.einsum("kj,jd->kd", q, self.outputs_b))

    def loss_and_grad(self, p: np.ndarray, x: np.ndarray, target: np.ndarray
                      ) -> tuple[float, np.ndarray]:
        """(MSE of the soft network with weights p (n, n) on rows x (b, d) against target
        (b,), its gradient (n, n) with respect to p), by the backend's fused kernel. Entries
        of p below :func:`active_threshold` are treated as zero and get a zero gradient.
        (48 blocks, d 48, h 96, 256 rows, every block active, 2 cores: 0.20 s against 0.45 s
        for the numpy pass it replaced.)"""
        floor = active_threshold(self.n)
        self.block_rows += 2 * len(x) * int(np.count_nonzero(p >= floor))
        return self.kernels.soft_loss_and_grad(np.ascontiguousarray(x, self.dtype), target,
                                               self.weights, self.blk_in, self.blk_out, p,
                                               floor)

    def loss_and_grads(self, p: np.ndarray, q: np.ndarray, x: np.ndarray, target: np.ndarray
                       ) -> tuple[float, np.ndarray, np.ndarray]:
        """:meth:`loss_and_grad` with the output layers mixed by q (n, n) (:meth:`mixed`):
        (MSE, gradient (n, n) for p, gradient (n, n) for q), by the backend's
        ``soft_loss_and_grads``, whose gradients for each block's (mixed) output layer give
        q's: d/dq[k, j] = <dW_out[k], W_out[blk_out[j]]> + <db_out[k], b_out[blk_out[j]]>.
        The (n, n, d h) products run in einsum's own loops, not the BLAS: OpenBLAS's
        threads spin on the cores for a while after each call and slowed the kernel's
        threads next to them (48 blocks, 256 rows, a band of 8: 90 ms a step, 50 ms with
        OPENBLAS_NUM_THREADS=1 or without the BLAS)."""
        floor = active_threshold(self.n)
        self.block_rows += 2 * len(x) * int(np.count_nonzero(p >= floor))
        loss, grad, d_w, d_b = self.kernels.soft_loss_and_grads(
            np.ascontiguousarray(x, self.dtype), target, self.mixed(q), self.blk_in,
            np.arange(self.n), p, floor)
        grad_q = (np.einsum("kdh,jdh->kj", d_w.astype(self.dtype), self.outputs)
                  + np.einsum("kd,jd->kj", d_b.astype(self.dtype), self.outputs_b))
        return loss, grad, grad_q.astype(np.float64)


class _Adam:
    def __init__(self, shape: tuple, lr: float, betas=(0.9, 0.999), eps=1e-8):
        self.lr, self.betas, self.eps, self.t = lr, betas, eps, 0
        self.m, self.v = np.zeros(shape), np.zeros(shape)

    def step(self, params: np.ndarray, grad: np.ndarray) -> None:
        b1, b2 = self.betas
        self.t += 1
        self.m = b1 * self.m + (1 - b1) * grad
        self.v = b2 * self.v + (1 - b2) * grad**2
        m_hat, v_hat = self.m / (1 - b1**self.t), self.v / (1 - b2**self.t)
        params -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


def band_logits(order: np.ndarray | None, n: int, band: float | None) -> np.ndarray:
    """Initial logits (n positions, n blocks): -(p - pos[k])^2 / (2 band^2), pos[k] the
    position of block k in ``order``; zeros without an order or a band."""
    if order is None or band is None:
        return np.zeros((n, n))
    pos = np.empty(n, np.int64)
    pos[np.asarray(order)] = np.arange(n)
    return -((np.arange(n)[:, None] - pos[None, :]) ** 2) / (2.0 * band**2)


def hard_order(p: np.ndarray) -> np.ndarray:
    """The permutation closest to P: order[q] = the block at position q (Hungarian)."""
    return linear_sum_assignment(-p)[1].astype(np.int64)


def relax_round(net: SoftNetwork, x: np.ndarray, target: np.ndarray, order: np.ndarray | None,
                plan: Round, rng: np.random.Generator, score, deadline: float = np.inf,
                pair_logits: np.ndarray | None = None
                ) -> tuple[np.ndarray | None, np.ndarray | None, float, int]:
    """One round from ``order`` (n,) or uniform logits: returns (the hard order of lowest
    ``score(order, outputs)`` seen, its outputs, that score, the steps done), hard orders
    being read every CHECK_EVERY steps and when the round stops (at its last step, at the
    deadline, or when the fit turns non-finite); (None, None, inf, 0) if no step ran.
    ``x`` (m, d) and ``target`` (m,) are the rows minibatches are drawn from. With
    ``pair_logits`` (n, n) the pairing is fitted too: block k's output layer is mixed by
    Q = Sinkhorn(pair logits / tau) (:meth:`SoftNetwork.mixed`), and ``outputs`` (n,)
    is the Hungarian assignment of Q (None without)."""
    logits = band_logits(order, net.n, plan.band) + 0.01 * rng.standard_normal((net.n, net.n))
    pairs = None
    if pair_logits is not None:
        pairs = pair_logits + 0.01 * rng.standard_normal((net.n, net.n))
        adam_q = _Adam(pairs.shape, plan.lr)
    adam, best, tau = _Adam(logits.shape, plan.lr), (None, None, np.inf), plan.tau0
    done = read = 0  # steps done; steps done when a hard order was last read
    for step in range(plan.steps):
        if time.perf_counter() > deadline:
            break
        tau = temperature(plan, step / max(plan.steps - 1, 1))
        p, tape = sinkhorn(logits / tau)
        rows = rng.integers(0, len(x), size=min(plan.batch, len(x)))
        if pairs is None:
            _, dp = net.loss_and_grad(p, x[rows], target[rows])
        else:
            q, tape_q = sinkhorn(pairs / tau)
            _, dp, dq = net.loss_and_grads(p, q, x[rows], target[rows])
            grad_q = sinkhorn_backward(dq, q, tape_q) / tau
        grad = sinkhorn_backward(dp, p, tape) / tau
        if not (np.all(np.isfinite(grad)) and (pairs is None or np.all(np.isfinite(grad_q)))):
            break  # an overflow in the soft pass: stop here
        adam.step(logits, grad)
        if pairs is not None:
            adam_q.step(pairs, grad_q)
        done += 1
        if done % CHECK_EVERY == 0:
            best, read = _read(logits / tau, pairs, tau, score, best), done
    if done > read:  # the state the round stopped in
        best = _read(logits / tau, pairs, tau, score, best)
    return (*best, done)


def _read(scaled: np.ndarray, pairs: np.ndarray | None, tau: float, score, best: tuple
          ) -> tuple:
    """``best`` or (the hard order of sinkhorn(scaled), the hard outputs of sinkhorn(pairs /
    tau) or None, their score), whichever scores lower."""
    candidate = hard_order(sinkhorn(scaled)[0])
    outputs = None if pairs is None else hard_order(sinkhorn(pairs / tau)[0])
    value = score(candidate, outputs)
    return (candidate, outputs, value) if value < best[2] else best


def relax(weights: BlockWeights, blk_in: np.ndarray, blk_out: np.ndarray, x: np.ndarray,
          target: np.ndarray, order: np.ndarray | None = None, rounds: int = 2,
          random_seed: int = 0, deadline: float = np.inf, budget: float | None = None,
          plan: tuple[Round, ...] = ROUNDS, kernels: str = "cpu", stats: dict | None = None,
          min_share: float = 0.0, max_block_rows: float | None = None
          ) -> tuple[np.ndarray | None, float]:
    """Order the blocks (blk_in[k], blk_out[k]) (n,) by ``rounds`` rounds of ``plan`` (the
    last entry repeats), the first from a band around ``order`` (None: uniform logits).
    ``budget`` (s): when the schedule's estimated time (:func:`_costs`) is over it, the
    steps of every round are scaled down alike (to at least MIN_STEPS) to fit, each round
    refitted to the time left when it starts, with the estimate corrected by how long the
    round before took against its own; if less than ``min_share`` of the schedule fits at
    the start, nothing is run: (None, inf); ``deadline`` (perf_counter) stops it anyway.
    ``max_block_rows`` is a budget of work instead (blocks times rows, as ``block_rows``
    counts it; :func:`schedule_block_rows` estimates the schedule's): the steps are scaled
    alike to fit it, and the run reads no clock, so it is deterministic.
    Returns (order (n,) of block indices, its MSE vs target (m,) on the first CHECK_ROWS
    rows of x (m, d)), the best hard order seen; (None, inf) if the deadline came before
    the first step. ``stats``, if given, receives ``steps`` (done, per round), ``share``
    (of the estimated schedule that fits the budget, at most 1) and ``block_rows`` (blocks
    times rows evaluated: the soft forward and backward passes, and the hard orders'
    scoring)."""
    found, _, mse = _relax(weights, blk_in, blk_out, x, target, order, rounds, random_seed,
                           deadline, budget, plan, kernels, stats, min_share, max_block_rows)
    return found, mse


def held_prefix(weights: BlockWeights, x: np.ndarray, target: np.ndarray, seq_in: np.ndarray,
                seq_out: np.ndarray, factor: float | None = None, kernels: str = "cpu"
                ) -> tuple[int, int]:
    """How many leading blocks of the order (seq_in, seq_out) (n,) each multiply its MSE
    vs ``target`` (m,) on rows x (m, d) by at least ``factor`` when taken out (all n when
    the MSE is 0): the blocks :func:`relax_suffix` holds. Returns (that count, blocks times
    rows evaluated). In a deep network the leading blocks move the output most, so a
    wrong order's errors show there first and a block that matters little is not held."""
    from . import certify

    seq_in, seq_out = np.asarray(seq_in), np.asarray(seq_out)
    n, m, factor = len(seq_in), len(x), HOLD if factor is None else factor
    base = certify.mse(certify.model_output(weights, x, seq_in, seq_out, kernels), target)
    if base == 0.0:
        return n, n * m
    for p in range(n):
        keep = np.arange(n) != p
        out = certify.model_output(weights, x, seq_in[keep], seq_out[keep], kernels)
        if certify.mse(out, target) < factor * base:
            return p, (p + 2) * n * m  # (the order, then p + 1 orders of n - 1 blocks)
    return n, (n + 1) * n * m


def relax_suffix(weights: BlockWeights, seq_in: np.ndarray, seq_out: np.ndarray, x: np.ndarray,
                 target: np.ndarray, held: int, **options) -> tuple[np.ndarray | None, float]:
    """:func:`relax` of the blocks after the first ``held`` of the order (seq_in, seq_out)
    (n,), from uniform logits, on the stream the held blocks make of the rows x (m, d);
    ``options`` as :func:`relax` (``order`` aside). Returns (order (n,) of positions of the
    given order: the first ``held`` in place, MSE), or (None, inf). Cheaper than relaxing
    all n blocks ((n - held)^2 against n^2 per step) and free of the held blocks' pull:
    from a 60 s answer of a 48-block SGD network (MSE 0.0043, 21 blocks in place, 7 held)
    it read an order the local search certified; the narrower repeat of :func:`relax` from
    the same answer ended at 0.0031."""
    seq_in, seq_out = np.asarray(seq_in), np.asarray(seq_out)
    kernels = backend(options.get("kernels", "cpu"))
    stream, weights64 = np.ascontiguousarray(x, np.float64), weights.astype(np.float64)
    for p in range(held):  # the held blocks' stream (block by block: no (held, m, d) cache)
        stream = kernels.block_forward(stream, weights64, int(seq_in[p]), int(seq_out[p]))
    tail, mse = relax(weights, seq_in[held:], seq_out[held:], stream, target, None, **options)
    if tail is None:
        return None, mse
    return np.concatenate([np.arange(held), held + tail]), mse


def relax_pairs(weights: BlockWeights, blk_in: np.ndarray, blk_out: np.ndarray, x: np.ndarray,
                target: np.ndarray, pair_logits: np.ndarray, order: np.ndarray | None = None,
                rounds: int = 2, random_seed: int = 0, deadline: float = np.inf,
                budget: float | None = None, plan: tuple[Round, ...] = ROUNDS,
                kernels: str = "cpu", stats: dict | None = None, min_share: float = 0.0,
                max_block_rows: float | None = None
                ) -> tuple[np.ndarray | None, np.ndarray | None, float]:
    """:func:`relax` with the pairing fitted too: block k keeps input layer blk_in[k], and
    its output layer is a mixture over blk_out by Q = Sinkhorn(logits / tau), the logits
    starting from ``pair_logits`` (n, n) (block k, output j; larger: likelier); each later
    round starts from them plus PAIR_BONUS on the pairs the round before found. Returns
    (order (n,), outputs (n,): block k's output layer is blk_out[outputs[k]], MSE), or
    (None, None, inf). Fitted jointly, the pairing follows the order it is read in: on a
    32-block network trained on 256 rows (d = 32) the joint relaxation from pairs 17 of
    32 right and a seed of rank correlation 0.54 read all 32 pairs right."""
    return _relax(weights, blk_in, blk_out, x, target, order, rounds, random_seed, deadline,
                  budget, plan, kernels, stats, min_share, max_block_rows, pair_logits)


def _relax(weights, blk_in, blk_out, x, target, order, rounds, random_seed, deadline, budget,
           plan, kernels, stats, min_share, max_block_rows, pair_logits=None):
    """:func:`relax` and :func:`relax_pairs`: (order, outputs or None, MSE)."""
    from . import certify

    started = time.perf_counter()
    if started > deadline:
        return None, None, np.inf
    rng = np.random.default_rng(random_seed)
    net = SoftNetwork(weights, blk_in, blk_out, np.float32, kernels=kernels)
    x32 = np.ascontiguousarray(x, np.float32)
    m = min(CHECK_ROWS, len(x))
    weights32 = net.weights  # the same float32 copy the soft steps run on

    def score(candidate: np.ndarray, outputs: np.ndarray | None) -> float:
        net.block_rows += m * net.n
        seq_out = blk_out[candidate] if outputs is None else blk_out[outputs][candidate]
        out = certify.model_output(weights32, x32[:m], blk_in[candidate], seq_out,
                                   kernels, np.float32)
        return certify.mse(out, target[:m])

    plans = [plan[min(r, len(plan) - 1)] for r in range(rounds)]
    if order is None and plans:  # uniform logits for the first round
        plans[0] = replace(plans[0], band=None)
    scale, costs, end = 1.0, [0.0] * len(plans), deadline
    if max_block_rows is not None and plans:  # a budget of work: the steps scaled, no clock read
        work = schedule_block_rows(net.n, len(x), plans)
        scale = min(1.0, max_block_rows / max(work, 1e-12))
        plans = [replace(p, steps=max(MIN_STEPS, int(p.steps * scale))) for p in plans]
    if budget is not None and plans:  # the setup and the timed steps count against the budget
        costs = _costs(net, x32, target, plans, pair_logits is not None)
        end = min(deadline, started + budget)
        scale *= min(1.0, max(end - time.perf_counter(), 0.0) / max(sum(costs), 1e-12))
    if stats is not None:
        stats.update(steps=[], block_rows=net.block_rows, share=scale)
    if scale < min_share:
        return None, None, np.inf
    best, factor, pairs = (None, None, np.inf), 1.0, pair_logits  # factor: measured / estimated
    for r, step_plan in enumerate(plans):
        if budget is not None:  # refitted before every round to the time left, as measured
            left = max(end - time.perf_counter(), 0.0)
            share = min(1.0, left / max(factor * sum(costs[r:]), 1e-12))
            step_plan = replace(step_plan, steps=max(MIN_STEPS, int(step_plan.steps * share)))
        round_start = time.perf_counter()
        found, outputs, value, done = relax_round(net, x32, target, order, step_plan, rng,
                                                  score, deadline, pairs)
        if budget is not None and done:
            factor = (time.perf_counter() - round_start) / (costs[r] * done / plans[r].steps)
        if stats is not None:
            stats["steps"].append(done)
        if found is None:
            break
        order = found
        if outputs is not None:  # the next round starts from the pairs found
            pairs = pair_logits + PAIR_BONUS * np.eye(net.n)[outputs]
        if value < best[2]:
            best = (found, outputs, value)
    if stats is not None:
        stats["block_rows"] = net.block_rows
    return best


def schedule_block_rows(n: int, rows: int, plans: list[Round]) -> float:
    """Estimated work of ``plans`` on n blocks, in blocks times rows (forward and backward
    passes, as :attr:`SoftNetwork.block_rows` counts them; the hard orders' scoring, a few
    per cent more, left out): 2 x batch x n positions x the blocks active at each, per step,
    SHARPENING included (:func:`_costs`). ``rows``: the rows minibatches are drawn from."""
    return sum(SHARPENING * 2 * p.steps * min(p.batch, rows) * n * n * _active_share(n, p)
               for p in plans)


def _costs(net: SoftNetwork, x: np.ndarray, target: np.ndarray, plans: list[Round],
           pairs: bool = False) -> list[float]:
    """Estimated seconds of each round of ``plans``. A step with every block active at every
    position is timed (the faster of two, on the first round's batch); a round's step is
    taken to cost that in proportion to its batch and to the share of P that is active,
    averaged over the round (:func:`_active_share`, which holds the logits at their start),
    times SHARPENING: the fitted logits sharpen, so fewer blocks stay active than at the
    start (measured rounds took 0.64-0.72 of the estimate without that factor). ``pairs``:
    the step of :func:`relax_pairs` is timed."""
    batch = min(plans[0].batch, len(x))
    uniform = np.full((net.n, net.n), 1.0 / net.n)
    times = []
    for _ in range(2):
        t = time.perf_counter()
        if pairs:  # the pairing fitted too (relax_pairs)
            net.loss_and_grads(uniform, uniform, x[:batch], target[:batch])
        else:
            net.loss_and_grad(uniform, x[:batch], target[:batch])
        times.append(time.perf_counter() - t)
    per_row = min(times) / batch
    return [SHARPENING * p.steps * min(p.batch, len(x)) * per_row * _active_share(net.n, p)
            for p in plans]


def _active_share(n: int, plan: Round, samples: int = 8) -> float:
    """Share of the entries of P at :func:`active_threshold` or above over a round,
    estimated as if the logits stayed at their start (the band) while the temperature
    anneals: the mean over ``samples`` temperatures of the schedule."""
    logits = band_logits(np.arange(n), n, plan.band)
    taus = temperature(plan, np.linspace(0.0, 1.0, samples))
    floor = active_threshold(n)
    return float(np.mean([np.mean(sinkhorn(logits / tau)[0] >= floor) for tau in taus]))
