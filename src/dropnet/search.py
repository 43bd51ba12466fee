"""Hill climbing over block orders with a prefix-cached forward pass.

The cache holds the activations before every position, ``acts[p]`` (n+1, m, d). A move
changes the sequence from its first touched position ``lo`` onward, so it is evaluated by
rerunning blocks ``lo..n-1`` from ``acts[lo]`` only; many moves are evaluated in one kernel
call. An accepted move refreshes the cache from ``lo``. The accepted squared error never
increases: a move is taken only when it lowers it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ._kernels import BlockWeights, backend

IMPROVEMENT = 1e-6  # a move must lower the squared error by this fraction to be accepted
DEFAULT_SCREEN = 8  # moves evaluated exactly first, ranked by first-order change (0: all)
SCREEN_ROWS = 64  # the first-order ranking is computed on (at most) this many rows
MAX_BATCH = 512  # screened moves evaluated exactly at once, at most (the deadline is read between)


@dataclass(frozen=True)
class Moves:
    """k candidate sequences: ``seq_in``/``seq_out`` (k, n), each differing from the current
    one only at positions ``lo[c]..hi[c]`` (inclusive)."""

    seq_in: np.ndarray
    seq_out: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    def __len__(self) -> int:
        return int(self.lo.shape[0])


def adjacent_swaps(seq_in: np.ndarray, seq_out: np.ndarray) -> Moves:
    """Every swap of the blocks at positions i and i+1, i = 0..n-2."""
    n = len(seq_in)
    lo = np.arange(n - 1)
    cand_in, cand_out = np.tile(seq_in, (n - 1, 1)), np.tile(seq_out, (n - 1, 1))
    cand_in[lo, lo], cand_in[lo, lo + 1] = seq_in[lo + 1], seq_in[lo]
    cand_out[lo, lo], cand_out[lo, lo + 1] = seq_out[lo + 1], seq_out[lo]
    return Moves(cand_in, cand_out, lo, lo + 1)


def _moves(seq_in: np.ndarray, seq_out: np.ndarray,
           rearrangements: list[tuple[np.ndarray, np.ndarray]]) -> Moves:
    """Moves from (new position -> old position) index arrays for inputs and outputs."""
    n = len(seq_in)
    if not rearrangements:
        empty = np.empty((0, n), np.int64)
        return Moves(empty, empty, np.empty(0, np.int64), np.empty(0, np.int64))
    idx_in = np.array([r[0] for r in rearrangements])
    idx_out = np.array([r[1] for r in rearrangements])
    moved = (idx_in != np.arange(n)) | (idx_out != np.arange(n))
    lo = np.argmax(moved, axis=1)
    hi = n - 1 - np.argmax(moved[:, ::-1], axis=1)
    return Moves(seq_in[idx_in], seq_out[idx_out], lo, hi)


def _segment_moves(n: int, window: int) -> list[np.ndarray]:
    """Index arrays of insertions (block i moved to j) and swaps of i and j, |i - j| <= window,
    and rotations of three adjacent blocks; each moves a block together with its pair."""
    out = []
    for i in range(n):
        for j in range(max(0, i - window), min(n, i + window + 1)):
            if j == i:
                continue
            order = list(range(n))
            order.insert(j, order.pop(i))
            out.append(np.array(order))
            if j > i + 1:
                swap = np.arange(n)
                swap[[i, j]] = swap[[j, i]]
                out.append(swap)
    return out


def local_moves(window: int = 4) -> Callable[[np.ndarray, np.ndarray], Moves]:
    """Insertions and swaps within ``window`` positions (rotations of three are insertions
    at distance 2), blocks keeping their output layers."""
    def neighbourhood(seq_in: np.ndarray, seq_out: np.ndarray) -> Moves:
        return _moves(seq_in, seq_out, [(r, r) for r in _segment_moves(len(seq_in), window)])
    return neighbourhood


def output_exchanges(alternatives: np.ndarray | None = None, frozen: np.ndarray | None = None,
                     plausible: np.ndarray | None = None
                     ) -> Callable[[np.ndarray, np.ndarray], Moves]:
    """Pairing repair: exchange the output layers of the blocks at positions p < q. With
    ``alternatives`` (n_in, a) — for each input layer, its likeliest other output layers —
    only exchanges that give some input one of its alternatives; else every pair. Blocks
    whose input layer is ``frozen`` (n_in,) bool keep their output layer. With ``plausible``
    (n_in, n_out) bool, an exchange must not lower how many of its two blocks hold a
    plausible pair: giving one input a near-tied alternative may not leave the other with an
    output its weights rule out (a 3-cycle of crossed pairs is still undone in two moves)."""
    def keeps(seq_in: np.ndarray, seq_out: np.ndarray, p: int, q: int) -> bool:
        if plausible is None:
            return True
        a, b, oa, ob = seq_in[p], seq_in[q], seq_out[p], seq_out[q]
        after = int(plausible[a, ob]) + int(plausible[b, oa])
        return after >= int(plausible[a, oa]) + int(plausible[b, ob])

    def neighbourhood(seq_in: np.ndarray, seq_out: np.ndarray) -> Moves:
        n = len(seq_in)
        free = np.ones(n, bool) if frozen is None else ~frozen[seq_in]
        if alternatives is None:
            pairs = {(p, q) for p in range(n) for q in range(p + 1, n) if free[p] and free[q]}
        else:
            where = {int(o): p for p, o in enumerate(seq_out)}
            pairs = {tuple(sorted((p, where[int(o)]))) for p in range(n) if free[p]
                     for o in alternatives[seq_in[p]]
                     if int(o) in where and where[int(o)] != p and free[where[int(o)]]}
        ident, out = np.arange(n), []
        for p, q in sorted(pairs):
            if keeps(seq_in, seq_out, p, q):
                idx = ident.copy()
                idx[[p, q]] = idx[[q, p]]
                out.append((ident, idx))
        return _moves(seq_in, seq_out, out)
    return neighbourhood


def orientation_flips(seq_in: np.ndarray, seq_out: np.ndarray) -> Moves:
    """h = d only: swap the roles of the two layers of the block at each position."""
    n = len(seq_in)
    pos = np.arange(n)
    cand_in, cand_out = np.tile(seq_in, (n, 1)), np.tile(seq_out, (n, 1))
    cand_in[pos, pos], cand_out[pos, pos] = seq_out, seq_in
    return Moves(cand_in, cand_out, pos, pos.copy())


@dataclass
class SearchLog:
    """What a search did: accepted MSE after each round, candidate and block evaluations
    (one block evaluation = one block on all search rows), and wall time in seconds."""

    mse: list[float] = field(default_factory=list)
    candidates: int = 0
    block_evals: int = 0
    rounds: int = 0
    seconds: float = 0.0
    relax: list[dict] = field(default_factory=list)  # each relaxation run: seconds, MSE, ...


@dataclass
class SearchState:
    """The current sequence, its prefix cache (n+1, m, d) and its squared error."""

    seq_in: np.ndarray
    seq_out: np.ndarray
    acts: np.ndarray
    sse: float
    grads: np.ndarray | None = None  # adjoint of acts on the screening rows, when first needed
    screen_acts: np.ndarray | None = None  # acts on the screening rows (a copy), with grads


class Climber:
    """Hill climbing on squared error vs ``target`` (m,) over rows x (m, d)."""

    def __init__(self, weights: BlockWeights, x: np.ndarray, target: np.ndarray,
                 kernels: str = "cpu", dtype=np.float32, screen: int = DEFAULT_SCREEN,
                 screen_rows: int = SCREEN_ROWS):
        self.k = backend(kernels)
        self.screen, self.screen_rows = screen, screen_rows
        self.weights = weights.astype(dtype)
        self.x = np.ascontiguousarray(x, dtype=dtype)
        self.target = np.ascontiguousarray(target, dtype=np.float64)
        self.log = SearchLog()

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])

    def start(self, seq_in: np.ndarray, seq_out: np.ndarray) -> SearchState:
        """Build the prefix cache of a sequence and score it."""
        seq_in, seq_out = np.asarray(seq_in, np.int64), np.asarray(seq_out, np.int64)
        acts = self.k.prefix_activations(self.x, self.weights, seq_in, seq_out)
        n = len(seq_in)
        sse = self._evaluate(acts, np.array([n]), seq_in[None], seq_out[None])[0]
        self.log.block_evals += n
        return SearchState(seq_in, seq_out, acts, float(sse))

    def _evaluate(self, acts, start, seq_in, seq_out) -> np.ndarray:
        self.log.candidates += len(start)
        self.log.block_evals += int(np.sum(seq_in.shape[1] - start))
        return self.k.evaluate_candidates(acts, self.weights, start, seq_in, seq_out, self.target)

    def _accept(self, state: SearchState, seq_in, seq_out, lo: int, sse: float) -> None:
        state.seq_in, state.seq_out, state.sse = seq_in.copy(), seq_out.copy(), float(sse)
        state.grads = None
        self._refresh(state, lo)

    def _refresh(self, state: SearchState, lo: int) -> None:
        acts, n = state.acts, len(state.seq_in)
        if hasattr(self.k, "refresh_prefix"):
            self.k.refresh_prefix(acts, self.weights, state.seq_in, state.seq_out, lo)
        else:
            acts[lo:] = self.k.prefix_activations(acts[lo], self.weights, state.seq_in[lo:],
                                                  state.seq_out[lo:])
        self.log.block_evals += n - lo

    def step(self, state: SearchState, moves: Moves, limit: int | None = None,
             deadline: float = np.inf, max_evals: float = np.inf) -> bool:
        """Take an improving move if there is one; returns False when none improves.

        With screening on, a backward pass ranks the moves by their first-order change and
        they are evaluated exactly in batches of growing size (``screen``, then 4x more, up
        to MAX_BATCH) best-ranked first; every move is evaluated before giving up, so a
        False answer is exact — unless ``limit`` caps the moves evaluated exactly (a
        cheaper, inexact step for iterated local search) or, between two batches, the
        ``deadline`` (perf_counter) has passed or the log holds ``max_evals`` block
        evaluations."""
        if len(moves) == 0:
            return False
        if not self.screen or len(moves) <= self.screen:
            return self._try(state, moves, np.arange(len(moves)))
        ranked = np.argsort(self._first_order(state, moves), kind="stable")[:limit]
        lo, size = 0, self.screen
        while lo < len(ranked):  # exact evaluation in growing batches, best-ranked first
            if self._try(state, moves, ranked[lo : lo + size]):
                return True
            if time.perf_counter() > deadline or self.log.block_evals >= max_evals:
                return False
            lo, size = lo + size, min(4 * size, MAX_BATCH)
        return False

    def _first_order(self, state: SearchState, moves: Moves) -> np.ndarray:
        """First-order change of each move's squared error on the first ``screen_rows`` rows
        (a ranking only: it is cheaper on fewer rows, and every accepted move is exact)."""
        share = min(1.0, self.screen_rows / self.rows)
        if state.grads is None:  # one backward pass per state, shared by every neighbourhood
            m = min(self.rows, self.screen_rows)
            state.screen_acts = (state.acts if m == self.rows
                                 else np.ascontiguousarray(state.acts[:, :m]))
            state.grads = self.k.adjoint_gradients(state.screen_acts, self.weights, state.seq_in,
                                                   state.seq_out, self.target[:m])
            self.log.block_evals += int(np.ceil(2 * len(state.seq_in) * share))  # ~1.5 passes
        self.log.block_evals += int(np.ceil(np.sum(moves.hi - moves.lo + 1) * share))
        return self.k.first_order_deltas(state.screen_acts, state.grads, self.weights, moves.lo,
                                         moves.hi, moves.seq_in, moves.seq_out)

    def _try(self, state: SearchState, moves: Moves, subset: np.ndarray) -> bool:
        """Evaluate moves[subset] exactly; accept the best, or the best disjoint combination
        of improving ones when that is better still."""
        sse = self._evaluate(state.acts, moves.lo[subset], moves.seq_in[subset],
                             moves.seq_out[subset])
        keep = np.flatnonzero(sse < state.sse * (1 - IMPROVEMENT))
        if keep.size == 0:
            return False
        keep = keep[np.argsort(sse[keep], kind="stable")]
        best, best_sse = int(subset[keep[0]]), float(sse[keep[0]])
        chosen = _disjoint(moves, subset[keep])
        if len(chosen) > 1:
            comb_in, comb_out = state.seq_in.copy(), state.seq_out.copy()
            for c in chosen:
                span = slice(moves.lo[c], moves.hi[c] + 1)
                comb_in[span], comb_out[span] = moves.seq_in[c, span], moves.seq_out[c, span]
            lo = int(moves.lo[chosen].min())
            comb = self._evaluate(state.acts, np.array([lo]), comb_in[None], comb_out[None])[0]
            if comb < best_sse:
                self._accept(state, comb_in, comb_out, lo, comb)
                return True
        self._accept(state, moves.seq_in[best], moves.seq_out[best], int(moves.lo[best]), best_sse)
        return True

    def climb(self, state: SearchState, neighbourhood: Callable[[np.ndarray, np.ndarray], Moves]
              = adjacent_swaps, max_rounds: int = 100_000, deadline: float = np.inf,
              good_enough: float = 0.0) -> SearchState:
        """Repeat :meth:`step` until no move improves, the MSE is at most ``good_enough``
        (rounding level: nothing left to gain), ``max_rounds`` or the deadline."""
        t0 = time.perf_counter()
        for _ in range(max_rounds):
            if time.perf_counter() > deadline or state.sse <= good_enough * self.rows:
                break
            if not self.step(state, neighbourhood(state.seq_in, state.seq_out), None, deadline):
                break
            self.log.rounds += 1
            self.log.mse.append(state.sse / self.rows)
        self.log.seconds += time.perf_counter() - t0
        return state


def descend(climber: "Climber", state: SearchState,
            neighbourhoods: list[Callable[[np.ndarray, np.ndarray], Moves]],
            max_rounds: int = 100_000, deadline: float = np.inf,
            good_enough: float = 0.0, limit=None, max_evals: float = np.inf) -> SearchState:
    """Variable neighbourhood descent: step in the first neighbourhood that improves, going
    back to the first (cheapest) after every success; stop when none improves, or at
    ``max_rounds`` (the climber's log), ``deadline`` (perf_counter), ``good_enough`` (MSE)
    or ``max_evals`` (block evaluations in the climber's log). ``limit`` caps the moves
    evaluated exactly per step (see :meth:`Climber.step`): one cap for all neighbourhoods,
    or a list with one cap (or None) per neighbourhood."""
    limits = list(limit) if isinstance(limit, (list, tuple)) else [limit] * len(neighbourhoods)
    t0 = time.perf_counter()
    level = 0
    while level < len(neighbourhoods) and climber.log.rounds < max_rounds:
        if (time.perf_counter() > deadline or state.sse <= good_enough * climber.rows
                or climber.log.block_evals >= max_evals):
            break
        if climber.step(state, neighbourhoods[level](state.seq_in, state.seq_out), limits[level],
                        deadline, max_evals):
            climber.log.rounds += 1
            climber.log.mse.append(state.sse / climber.rows)
            level = 0
        else:
            level += 1
    climber.log.seconds += time.perf_counter() - t0
    return state


def perturb(seq_in: np.ndarray, seq_out: np.ndarray, rng: np.random.Generator,
            strength: int) -> tuple[np.ndarray, np.ndarray]:
    """A kick for iterated local search: ``strength`` random block moves (pairs kept), each
    an insertion, a swap, or the reversal of a segment."""
    n = len(seq_in)
    order = np.arange(n)
    for _ in range(strength):
        i, j = sorted(int(v) for v in rng.choice(n, 2, replace=False)) if n > 1 else (0, 0)
        kind = rng.integers(0, 3)
        if kind == 0:
            order = np.insert(np.delete(order, i), j, order[i])
        elif kind == 1:
            order[[i, j]] = order[[j, i]]
        else:
            order[i : j + 1] = order[i : j + 1][::-1]
    return seq_in[order], seq_out[order]


def reinsert(climber: Climber, seq_in: np.ndarray, seq_out: np.ndarray, removed: np.ndarray,
             flips: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Destroy and rebuild (the kick of iterated greedy): take the blocks at positions
    ``removed`` out, then put each back in turn, pairs kept, where the squared error of the
    sequence built so far is lowest on the climber's rows (every position evaluated exactly
    from the prefix cache, one kernel call per block). ``flips`` (h = d): each block is
    tried in both orientations at every position too."""
    keep = np.setdiff1d(np.arange(len(seq_in)), removed)
    cur_in, cur_out = seq_in[keep], seq_out[keep]
    for p in removed:
        slots = np.arange(len(cur_in) + 1)
        ways = [(seq_in[p], seq_out[p])] + ([(seq_out[p], seq_in[p])] if flips else [])
        cand_in = np.stack([np.insert(cur_in, j, a) for a, _ in ways for j in slots])
        cand_out = np.stack([np.insert(cur_out, j, b) for _, b in ways for j in slots])
        # the cache of a candidate with the block appended is every candidate's prefix cache
        last = len(slots) - 1
        acts = climber.k.prefix_activations(climber.x, climber.weights, cand_in[last],
                                            cand_out[last])
        climber.log.block_evals += len(cand_in)
        starts = np.tile(slots, len(ways))
        best = int(np.argmin(climber._evaluate(acts, starts, cand_in, cand_out)))
        cur_in, cur_out = cand_in[best], cand_out[best]
    return cur_in, cur_out


def kick(climber: Climber, seq_in: np.ndarray, seq_out: np.ndarray, rng: np.random.Generator,
         exchanges: Callable[[np.ndarray, np.ndarray], Moves] | None = None,
         flips: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The iterated local search's kick: 2-4 blocks taken out, anywhere or (half the time)
    within 13 neighbouring positions, where coupled misplacements sit, and put back by
    :func:`reinsert` (in either orientation with ``flips``, for h = d). On generated 32-block
    networks stuck at MSE 2e-3 it certified in 3-26 s where random moves (:func:`perturb`)
    had not in 60 s. With ``exchanges`` (a pairing-repair neighbourhood, for ambiguous
    pairings), half the kicks first exchange the output layers of one random move of it, and
    those two blocks are among those taken out."""
    n = len(seq_in)
    forced = np.empty(0, np.int64)
    if exchanges is not None and rng.integers(0, 2):
        moves = exchanges(seq_in, seq_out)
        if len(moves):
            c = int(rng.integers(0, len(moves)))
            seq_in, seq_out = moves.seq_in[c], moves.seq_out[c]
            forced = np.array([moves.lo[c], moves.hi[c]])
    if rng.integers(0, 2):
        pool = np.arange(n)
    else:
        centre = int(rng.integers(0, n))
        pool = np.arange(max(0, centre - 6), min(n, centre + 7))
    pool = np.setdiff1d(pool, forced)
    count = min(len(pool), max(0, int(rng.integers(2, 5)) - len(forced)))
    removed = np.concatenate([forced, rng.choice(pool, count, replace=False)]).astype(np.int64)
    return reinsert(climber, seq_in, seq_out, removed, flips)


def _disjoint(moves: Moves, ranked: np.ndarray) -> list[int]:
    """Greedy pick, best first, of moves whose touched spans do not overlap."""
    taken = np.zeros(moves.seq_in.shape[1], dtype=bool)
    chosen = []
    for c in ranked:
        span = slice(moves.lo[c], moves.hi[c] + 1)
        if not taken[span].any():
            taken[span] = True
            chosen.append(int(c))
    return chosen
