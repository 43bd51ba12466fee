"""The whole job: pieces + data -> certified permutation (the public entry point)."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from . import certify
from ._kernels import backend
from .errors import InputError
from .io import Data, Pieces, find_data, find_pieces_folder, load_data, load_pieces
from .ordering import REVERSED_SEEDS, SEEDS, reverse, seed_order
from .pairing import Pairing, known_pairs, pair_by_dominance, pair_with_data
from .roles import Stack, assign_roles
from .search import (Climber, SearchLog, adjacent_swaps, descend, kick, local_moves,
                     orientation_flips, output_exchanges)
from .verify import sequences

DEFAULT_ROWS = 128
ILS_LIMIT = 32  # moves evaluated exactly per step inside iterated local search
ILS_ROWS_FACTOR = 2  # iterated local search runs on this many times the search rows
WALKERS = 3  # starts of iterated local search run side by side (the worst dropped each round)
ROUND_KICKS = 6  # kicks each walker gets per round
BEHIND = 10.0  # a walker whose MSE is this many times the best walker's is dropped at once
RELAX_BEHIND = 2.0  # ... or this many times the best of a relaxation's walkers, after one
LAZY_SEEDS = ("greedy-max", "pursuit")  # auto builds these only when the first descent fails
KEPT_PATIENCE = 40  # pairs read from the data: the best seed first walks with its pairs kept
KEPT_SHARE = 0.1  # until this many kicks in a row fail, within this share of the budget
KEPT_WALKER = 1000  # its walker's index (the random stream of its kicks)
RELAX_WALKER = 2000  # the relaxations' walkers' indices start here
WIDE_LIMIT = 256  # the widest neighbourhood is screened, not exhausted (too costly to prove)
OVERFIT = 100.0  # search MSE within this factor of the tolerance: grow the rows instead
PLAUSIBLE = 1.5  # an alternative output layer is tried when its ratio is within this factor
PAIR_CURRENT = 1.0  # relaxed pairing: the current pairs' bonus over the standardised evidence
DATA_ALTERNATIVES = 6  # ambiguous pairing: each input's likeliest outputs by the data, tried
PAIRING_SPREAD = 1.5  # a candidate pairing whose best seed's MSE is this many times the best's
RELAX_AFTER = 0.05  # share of the budget the walkers get before the relaxation runs
RELAX_SHARE = 2 / 3  # share of the budget then left that the relaxation may take
NO_EVAL_LIMIT = 10**9  # max_evals by default: no limit
RELAX_MIN = 0.5  # the relaxation is skipped when less than this share of its schedule fits
SUFFIX_MIN = 4  # a repeat holds a prefix (relax_suffix) only when this many blocks are left
RELAX_WALK = 1.0  # after a relaxation the walkers get this many times its time, then it runs again
RELAX_STALL = 0.5  # ... or, past this share of their turn, as soon as none has improved for
STALL_SPAN = 0.25  # this share of it
Progress = Callable[[str], None]


@dataclass(frozen=True)
class SearchOptions:
    """rows: search rows to start with; seed: auto|greedy|delta|wout|pursuit|drift; kernels: cpu|cuda;
    budgets: max_rounds (accepted moves), max_evals (block evaluations), time_limit (s; inf:
    max_evals is the budget and no decision reads the clock, so a search repeats exactly for
    its random_seed); random_seed seeds the kicks and the relaxation; start (an answer) is
    descended from first and then competes with the seeds; relax_after: once this share of
    the budget has passed uncertified (and the seeds' descents are done), the Sinkhorn
    relaxation (:mod:`dropnet.relax`) reorders the best answer so far and the search goes on
    from its result too, relaxing again after each turn of the walkers (while pairs read
    from the data are in play it fits the pairing too and first runs right after the best
    seed's pairs-kept walk; >= 1: never)."""

    rows: int = DEFAULT_ROWS
    seed: str = "auto"
    kernels: str = "cpu"
    max_rounds: int = 100_000
    max_evals: int = NO_EVAL_LIMIT
    time_limit: float = 60.0
    random_seed: int = 0
    known_pairs: tuple = ()  # [input piece, output piece] pairs fixed in advance
    start: tuple = ()  # an answer (2n+1 piece indices) to start from, e.g. an earlier best
    relax_after: float = RELAX_AFTER


@dataclass
class Result:
    """A solved network. ``permutation`` (2n+1 piece indices: block k's input layer, its
    output layer, ..., the final layer); ``pairs`` [input piece, output piece] in execution
    order; ``order`` the input piece of each block in execution order; ``mse`` vs the target
    (``pred``, else ``true``) on all rows (``certify.check``: a float32 forward pass, float64
    near the tolerance); ``timings`` in seconds per stage."""

    permutation: list[int]
    pairs: list[list[int]]
    order: list[int]
    mse: float | None
    mse_true: float | None
    certified: bool
    certifiable: bool
    tolerance: float | None
    seed: str
    pairing: dict
    search: dict
    timings: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def solve(pieces: str | Path | Pieces, data: str | Path | Data | None = None, *,
          progress: Progress | None = None, **options) -> Result:
    """Load pieces (a folder, its parent, or :class:`Pieces`) and data (a CSV path,
    :class:`Data`, or None for ``historical_data.csv`` beside the pieces) and solve;
    ``options`` are the fields of :class:`SearchOptions`."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if not isinstance(pieces, Pieces):
        folder = find_pieces_folder(pieces)
        pieces = load_pieces(folder)
    if not isinstance(data, Data):
        data = load_data(data if data is not None else find_data(pieces.folder))
    timings["load"] = time.perf_counter() - t0
    result = solve_loaded(pieces, data, SearchOptions(**options), progress=progress)
    result.timings = {"load": timings["load"], **result.timings}
    return result


def solve_loaded(pieces: Pieces, data: Data, options: SearchOptions = SearchOptions(),
                 progress: Progress | None = None) -> Result:
    """Type, pair, order and certify already loaded pieces and data."""
    say = progress or (lambda message: None)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    stack = assign_roles(pieces)
    if data.x.shape[1] != stack.width:
        raise InputError(f"the data has {data.x.shape[1]} input columns but the pieces have "
                         f"width {stack.width}")
    if options.seed != "auto" and options.seed not in SEEDS:
        raise InputError(f"unknown seed order {options.seed!r}; choose auto or one of {SEEDS}")
    start = sequences(stack, list(options.start)) if len(options.start) else None  # checked first
    pairing = pair_with_data(stack, data.x, data.target, options.kernels,
                             known_pairs(stack, list(options.known_pairs)))
    timings["pair"] = time.perf_counter() - t
    say(f"paired {stack.blocks} blocks: matched ratio >= {pairing.matched_min:.3g}, "
        f"unmatched <= {pairing.unmatched_max:.3g}"
        + ("; ambiguous, the data's pairings are searched too" if pairing.data is not None
           else ""))
    t = time.perf_counter()
    best, log, tol = _order(stack, pairing, data, options, say, timings, start)
    timings["order"] = time.perf_counter() - t - timings.get("certify", 0.0)
    order, seq_out, mse = best.seq_in, best.seq_out, best.mse
    mse_true = certify.mse(best.output, data.true) if data.true is not None else None
    return _result(stack, pairing, order, seq_out, mse=mse, mse_true=mse_true,
                   certified=bool(data.certifiable and mse <= tol),
                   certifiable=data.certifiable, tolerance=tol, seed=best.seed,
                   search={"rounds": log.rounds, "candidates": log.candidates,
                           "repaired_pairs": _repaired(pairing, order, seq_out),
                           "block_evals": log.block_evals, "mse_history": log.mse,
                           "relax": log.relax},
                   timings=timings)


def _pair(stack: Stack, options: SearchOptions) -> Pairing:
    return pair_by_dominance(stack, options.kernels, known_pairs(stack, list(options.known_pairs)))


def _result(stack: Stack, pairing: Pairing, seq_in: np.ndarray, seq_out: np.ndarray,
            **fields) -> Result:
    """A Result for blocks (seq_in[p], seq_out[p]) in execution order."""
    return Result(
        permutation=stack.permutation(seq_in, seq_out),
        pairs=[[int(stack.in_ids[i]), int(stack.out_ids[j])] for i, j in zip(seq_in, seq_out)],
        order=[int(stack.in_ids[i]) for i in seq_in], pairing=pairing.summary(), **fields)


def guess_without_data(pieces: Pieces, options: SearchOptions = SearchOptions()) -> Result:
    """An uncertified guess from the weights alone: dominance pairing, then blocks in
    ascending ||W_out||_F. Without data nothing can be checked: mse is None."""
    t = time.perf_counter()
    stack = assign_roles(pieces)
    pairing = _pair(stack, options)
    blk_in, blk_out = pairing.blocks
    chosen = seed_order("wout", stack.weights, blk_in, blk_out, np.empty((0, stack.width)))
    return _result(stack, pairing, blk_in[chosen], blk_out[chosen], mse=None, mse_true=None,
                   certified=False, certifiable=False, tolerance=None, seed="wout (no data)",
                   search={"rounds": 0, "candidates": 0, "block_evals": 0, "mse_history": [],
                           "relax": None},
                   timings={"pair+order": time.perf_counter() - t})


@dataclass
class _Best:
    seq_in: np.ndarray
    seq_out: np.ndarray
    seed: str
    mse: float
    output: np.ndarray


def _cheap_moves(square: bool) -> list:
    """Adjacent swaps, and for h = d role flips: the seeds' quick trials and every descent's
    first order moves."""
    return [adjacent_swaps, orientation_flips] if square else [adjacent_swaps]


def _neighbourhoods(exchanges: Callable, n: int, square: bool, clean: bool = False) -> list:
    """Cheapest first: adjacent swaps (and, for h = d, role flips); short insertions, swaps
    and rotations; pairing repair (``exchanges``: towards each input's next-likeliest
    outputs); longer insertions and swaps. With a ``clean`` pairing (no data evidence in
    play) the repair comes first: it then holds only the moves that give a block back a
    plausible output layer without taking one from the other block (from the pairing's own
    pairs, only exchanges between near-tied pairs), and order moves tried
    before it would bend the order around a wrong pair (a start with two pairs crossed at 192
    blocks ended at MSE 1e-5, 30 blocks misplaced, instead of the answer)."""
    first = _cheap_moves(square)
    if clean:
        return [exchanges] + first + [local_moves(4), local_moves(min(n, 16))]
    return first + [local_moves(4), exchanges, local_moves(min(n, 16))]


def _plausible(pairing: Pairing) -> np.ndarray:
    """(n_in, n_out) bool: pairs whose evidence is within a factor PLAUSIBLE of the evidence
    of the pair the weights chose for that input (for h = d, for that layer)."""
    evidence = pairing.evidence
    blk_in, blk_out = pairing.blocks
    chosen = np.full(evidence.shape[0], np.inf)
    chosen[blk_in] = evidence[blk_in, blk_out]
    if pairing.square:  # symmetric evidence: either layer of a pair may end up the input
        chosen[blk_out] = chosen[blk_in]
    return evidence * PLAUSIBLE >= chosen[:, None]


def _plausible_alternatives(pairing: Pairing, n: int, plausible: np.ndarray,
                            width: int = 4) -> np.ndarray:
    """For each input layer, up to ``width`` other output layers whose evidence is within a
    factor PLAUSIBLE of the chosen pair's (``plausible``, :func:`_plausible`; -1 elsewhere):
    where the weights separate pairs cleanly the search does not trade them for a lower MSE
    at a wrong order. When the data evidence was read (ambiguous ratios), its
    DATA_ALTERNATIVES likeliest outputs too."""
    ranked = np.argsort(-pairing.evidence, axis=1)[:, : min(width, n)]
    alternatives = np.where(np.take_along_axis(plausible, ranked, axis=1), ranked, -1)
    if pairing.data is None:
        return alternatives
    by_data = np.argsort(-pairing.data, axis=1)[:, : min(DATA_ALTERNATIVES, n)]
    return np.concatenate([by_data, alternatives], axis=1)  # the neighbourhood drops repeats


def _order(stack: Stack, pairing: Pairing, data: Data, options: SearchOptions, say: Progress,
           timings: dict, start: tuple[np.ndarray, np.ndarray] | None = None
           ) -> tuple[_Best, SearchLog, float]:
    """The best seed (by MSE on the search rows) gets a descent; if that does not certify,
    every seed gets a quick trial descent (adjacent swaps); the WALKERS best trials get a
    full descent, and iterated local search runs side by side from them: a round of kicks
    each, then the walker with the highest MSE on the search rows is dropped, and so is any
    walker BEHIND times the best one's MSE or more (it is skipped within a round too); the
    last one walks on until certified or out of budget. A ``start`` (seq_in, seq_out) is
    checked on all rows first and descended from before the best seed, which is descended
    from next (a poor start does not keep a good seed waiting behind every trial). Once
    ``relax_after`` of the budget has passed, the walk stops for the relaxation
    (:meth:`_Run.relax`), whose order is scored, descended from and joins the walkers (those
    RELAX_BEHIND times its walkers' best MSE or more stop); it runs again each time the
    walkers have had RELAX_WALK times the budget it took, or sooner once they stall
    (:meth:`_Run.turn`)."""
    started = time.perf_counter()  # the budget counts the seeds' construction too
    names = _seed_names(options.seed)
    lazy = [n for n in names if n in LAZY_SEEDS and len(names) > 1]  # built only if needed
    seeds, pairings = _ranked_seeds(stack, pairing.candidates(), data, options,
                                    [n for n in names if n not in lazy])
    if pairing.data is not None and [p[0] for p in pairings] == ["ratio"]:
        say("the data's pairings start far worse than the ratio's: searching the ratio's only")
        pairing = replace(pairing, data=None)
    run = _Run(stack, pairing, data, options, say, timings, started)
    if start is not None:  # the user's start: kept unless the search does better, descended first
        seeds.insert(0, ("start", *start))
        run.certify(*start, "start")
        if run.finished():
            return run.best, run.log, run.tol
    cap = 1 / (2 * WALKERS)  # no descent takes more than a sixth of the budget
    eager, walkers = [n for n in names if n not in lazy], []
    if run.exchanges is not None:  # pairs read from the data
        if _pairs_kept_first(run, *seeds[0], cap):
            return run.best, run.log, run.tol
        if run.pause < np.inf:  # the relaxation fits them with the order, first
            walkers += _relaxed(run, eager, cap, fresh=True)
    descended = {}
    for name, seq_in, seq_out in seeds[: 2 if start is not None else 1]:  # and the best seed
        descended[name] = run.descend_growing(name, seq_in, seq_out, cap)[:2]
        if run.finished():
            return run.best, run.log, run.tol
    if lazy:
        seeds += _ranked_seeds(stack, pairings, data, options, lazy)[0]
    trials = _trials(run, seeds)
    say("seeds after a quick descent: " + ", ".join(
        f"{name} {sse / min(options.rows, data.rows):.3g}" for _, _, sse, name in trials))
    for i, (seq_in, seq_out, _, name) in enumerate(trials[:WALKERS]):
        if name not in descended and not run.finished():
            descended[name] = run.descend_growing(name, seq_in, seq_out, cap)[:2]
        walkers.append(_Walker(run, *descended.get(name, (seq_in, seq_out)), name, i))
    walkers = _walk(run, walkers)
    while run.paused() and not run.finished():  # stalled: relax, then walk on, and again
        walkers = _walk(run, _joined(walkers, _relaxed(run, eager, cap)))
    return run.best, run.log, run.tol


def _relaxed(run: _Run, names: list[str], cap: float, fresh: bool = False) -> list[_Walker]:
    """Relax the best answer so far (:meth:`_Run.relax`; ``fresh``: its pairs only, the
    order from uniform logits): its order is certified (it may beat what a descent on few
    rows makes of it), descended and walked from; when it changed pairs, a walker from the
    seeds ``names`` built for them (:func:`_reseeded`) too. The walkers then get as much
    budget as it took (x RELAX_WALK; less when they stall, :meth:`_Run.turn`). Returns the
    new walkers."""
    k = len(run.log.relax)
    relaxed = run.relax(fresh)
    if relaxed is None:
        return []
    name, walkers = "relax" if k == 0 else f"relax{k + 1}", []
    run.certify(*relaxed, name)
    if not run.finished():
        seq_in, seq_out, _ = run.descend_growing(name, *relaxed, cap)
        walkers.append(_Walker(run, seq_in, seq_out, name, RELAX_WALKER + 2 * k))
    if run.log.relax[-1]["pairs_changed"] and not run.finished():
        walkers.append(_reseeded(run, relaxed, names, name, cap, RELAX_WALKER + 2 * k + 1))
    run.turn(RELAX_WALK * run.log.relax[-1]["budget_share"])
    return walkers


def _joined(walkers: list, relaxed: list) -> list:
    """The walkers that go on once a relaxation's walkers ``relaxed`` join them: those
    ``walkers`` under RELAX_BEHIND times the best MSE of ``relaxed`` (all of them when the
    relaxation gave none), then ``relaxed``. On the 48-block SGD networks the walkers from
    the seeds trailed the first relaxation's by 3-9x and took about half the time after it."""
    if not relaxed:
        return walkers
    best = min(w.mse for w in relaxed)
    return [w for w in walkers if w.mse < RELAX_BEHIND * best] + relaxed


def _pairs_kept_first(run: _Run, name: str, seq_in: np.ndarray, seq_out: np.ndarray,
                      cap: float) -> bool:
    """While pairs read from the data are in play: the best seed's descent and
    iterated local search with its pairs kept, before any exchange, until KEPT_PATIENCE
    kicks in a row fail or KEPT_SHARE of the budget is spent.
    Exchanges bend a wrong order's pairs to fit it: on a 32-block Adam network (d = 16) the
    joint pairing had every pair right, the search from it ended at MSE 0.0023 with two
    exchanged, and the same seed with its pairs kept is certified in seconds. True when
    that finished the search."""
    pause, run.pause = run.pause, min(run.pause, run.used() + KEPT_SHARE)
    kept = run.descend_growing(name + "+kept", seq_in, seq_out, cap, keep_pairs=True)
    if not run.finished():
        _Walker(run, *kept[:2], name + "+kept", KEPT_WALKER,
                keep_pairs=True).walk(patience=KEPT_PATIENCE)
    run.pause = pause
    return run.finished()


def _reseeded(run: _Run, relaxed: tuple[np.ndarray, np.ndarray], names: list[str],
              relax_name: str, cap: float, index: int) -> _Walker:
    """A walker from the seeds ``names`` built anew for the pairs a relaxation fitted
    (``relaxed``: (seq_in, seq_out)), the best after a quick descent, descended: with the
    pairs right, a seed can be far closer than the relaxation's own order (a 32-block
    network trained on 256 rows: its 32 pairs found, the relaxation's order at rank
    correlation 0.66, while the drift seed with those pairs is certified in seconds)."""
    seeds = _ranked_seeds(run.stack, [(relax_name, *relaxed)], run.data, run.options, names)[0]
    seq_in, seq_out, _, name = _trials(run, seeds)[0]
    seq_in, seq_out, _ = run.descend_growing(name, seq_in, seq_out, cap)
    return _Walker(run, seq_in, seq_out, name, index)


def _trials(run: _Run, seeds: list) -> list[tuple]:
    """Every seed (name, seq_in, seq_out) after its quick trial descent
    (:meth:`_Run.trial`), as (seq_in, seq_out, squared error, name), the lowest first."""
    return sorted((run.trial(seq_in, seq_out) + (name,) for name, seq_in, seq_out in seeds),
                  key=lambda item: item[2])


def _walk(run: _Run, walkers: list[_Walker]) -> list[_Walker]:
    """Iterated local search side by side: rounds of kicks, the worst walker dropped after
    each, then the last one walks on; until certified, out of budget or paused. Returns the
    walkers left."""
    run.gained = max(run.gained, run.used())  # a stall counts from here, not from descents
    while len(walkers) > 1 and not run.done():  # a round of kicks each, then drop the worst
        for walker in sorted(walkers, key=lambda w: w.mse):  # the likeliest first
            if walker.mse <= BEHIND * min(w.mse for w in walkers):
                walker.walk(ROUND_KICKS)
        if run.done():  # a round cut short drops no one
            break
        best = min(w.mse for w in walkers)
        walkers = [w for w in walkers if w.mse <= BEHIND * best]
        if len(walkers) > 1:
            walkers.remove(max(walkers, key=lambda w: w.mse))
    walkers[0].walk()
    return walkers


class _Run:
    """One ordering search: its budget, its log, and the best answer certified so far."""

    def __init__(self, stack: Stack, pairing: Pairing, data: Data, options: SearchOptions,
                 say: Progress, timings: dict, started: float | None = None):
        """``started``: the perf_counter time the budget counts from (default: now)."""
        self.stack, self.data, self.options, self.say, self.timings = (
            stack, data, options, say, timings)
        self.pairing = pairing
        self.tol, self.log = certify.tolerance(data.target, stack.blocks), SearchLog()
        self.started = time.perf_counter() if started is None else started
        self.deadline = self.started + options.time_limit
        self.timed = bool(np.isfinite(options.time_limit))  # else the budget is max_evals
        self.counted = options.max_evals < NO_EVAL_LIMIT  # max_evals is a budget too
        after = options.relax_after  # (pairs read from the data: relaxed early, see _order)
        # share of the budget (used()) after which to relax, and again after each run
        self.pause = after if after < 1 and (self.timed or self.counted) else np.inf
        self.stall = (np.inf, np.inf)  # (share from which a stall pauses too, its span)
        self.gained = 0.0  # share of the budget spent when a walker last improved
        clean, plausible = pairing.data is None, _plausible(pairing)
        exchanges = output_exchanges(_plausible_alternatives(pairing, stack.blocks, plausible),
                                     pairing.frozen, plausible if clean else None)
        self.hoods = _neighbourhoods(exchanges, stack.blocks, stack.square,
                                     clean=clean)
        self.order_hoods = [h for h in self.hoods if h is not exchanges]  # pairs kept
        # the kicks exchange outputs too while a pairing read from the data is in play
        self.exchanges = exchanges if pairing.data is not None else None
        self.best: _Best | None = None

    def climber(self, rows: int) -> Climber:
        m = min(rows, self.data.rows)
        climber = Climber(self.stack.weights, self.data.x[:m], self.data.target[:m],
                          self.options.kernels)
        climber.log = self.log
        return climber

    def spent(self) -> bool:
        return _spent(self.log, self.options, self.deadline)

    def finished(self) -> bool:
        """Certified or out of budget."""
        return self.best.mse <= self.tol or self.spent()

    def used(self) -> float:
        """Share of the budget spent: of the time limit, or of max_evals when that is further
        on (or the time limit infinite: then no decision reads the clock, and a search is
        deterministic for its random seed)."""
        if self.spent():  # (and no division by a zero budget)
            return 1.0
        share = self.log.block_evals / self.options.max_evals
        if self.timed:
            share = max(share, (time.perf_counter() - self.started) / self.options.time_limit)
        return share

    def paused(self) -> bool:
        """Time for a relaxation (the first, or the next after the walkers' turn, which ends
        early when they have stalled: see :meth:`turn`)."""
        used = self.used()
        return used >= self.pause or (used >= self.stall[0] and used - self.gained >= self.stall[1])

    def turn(self, share: float) -> None:
        """Give the walkers ``share`` of the budget before the next relaxation; past
        RELAX_STALL of it, a span of STALL_SPAN of it without a walker improving ends it
        (counted from the later of the last improvement and the start of the walk: seeds
        descended within the turn are not the walkers' time).
        On five 48-block networks at 120 s, a fixed turn certified four (72-103 s), a
        halved one all five but lost two 32-block networks whose walkers need the whole
        turn after cheap relaxations; this rule certified the five (64-90 s) and the two."""
        used = self.gained = self.used()
        self.pause = used + share
        self.stall = (used + RELAX_STALL * share, STALL_SPAN * share)

    def done(self) -> bool:
        """Stop the local search: finished, or paused for the relaxation."""
        return self.finished() or self.paused()

    def relax(self, fresh: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
        """Reorder the best answer so far by the relaxation (:func:`dropnet.relax.relax`,
        its blocks as they are paired, random seed ``random_seed`` plus the number of
        earlier runs), with RELAX_SHARE of the budget left (seconds; block evaluations when
        the time limit is infinite): (seq_in, seq_out) of the best hard order it saw, or
        None. A repeat is not started when its budget is under RELAX_MIN times what the last
        run took (its setup alone would eat into the walkers' end). While pairs read from
        the data are in play the pairing is fitted too (:func:`dropnet.relax.relax_pairs`);
        otherwise every other repeat (the first, third, ...) holds the leading blocks
        :meth:`_held` holds and relaxes the rest from uniform logits
        (:func:`dropnet.relax.relax_suffix`), and falls back to the narrower rounds when
        none is held or that does not fit (from the stuck answers of four 48-block SGD
        networks, one repeat each within 120 s: each kind certified three, not the same
        three);
        ``fresh``: the order starts from uniform logits, not from the best answer's (a
        32-block network with a weak pairing, from a seed at rank correlation -0.54: 23 of
        32 pairs and an order at 0.0; from uniform logits: 32 of 32 and 0.71-0.74)."""
        from .relax import CHECK_ROWS, ROUNDS  # scipy: when needed

        self.pause, self.stall, used = np.inf, (np.inf, np.inf), self.used()
        t, rows = time.perf_counter(), min(self.options.rows, self.data.rows)
        share = RELAX_SHARE * (1.0 - used)  # of the whole budget
        if self.log.relax and share < RELAX_MIN * self.log.relax[-1]["budget_share"]:
            self.say(f"no room for another relaxation in {self._budget_words(share)}")
            return None
        self.say(f"uncertified at MSE {self.best.mse:.3g}: relaxation of the order for up to "
                 f"{self._budget_words(share)}")
        stats: dict = {}
        sized: dict = {}  # the relaxation's share of each budget that is finite
        if self.timed:
            sized.update(deadline=t + share * self.options.time_limit,
                         budget=share * self.options.time_limit)
        if self.counted:
            sized.update(max_block_rows=share * self.options.max_evals * rows)
        seq_in, seq_out, n = self.best.seq_in, self.best.seq_out, len(self.best.seq_in)
        common = dict(random_seed=self.options.random_seed + len(self.log.relax),
                      plan=ROUNDS if not self.log.relax else ROUNDS[1:],
                      kernels=self.options.kernels, stats=stats, min_share=RELAX_MIN, **sized)
        order, outputs, mse, held = self._relaxed(seq_in, seq_out, common, fresh)
        # counted as block evaluations on the search rows, as the local search counts them
        self.log.block_evals += stats.get("block_rows", 0) // rows
        seconds = time.perf_counter() - t
        self.log.relax.append({"seconds": seconds, "budget_share": self.used() - used,
                               "mse": mse if order is not None else None,  # JSON has no inf
                               "steps": stats.get("steps", []), "share": stats.get("share"),
                               "pairs_changed": int(np.sum(outputs != np.arange(n)))
                               if order is not None else 0,
                               "held": held})
        if stats.get("share", 1.0) < RELAX_MIN:
            self.say(f"relaxation skipped: {stats['share']:.0%} of its schedule fits in "
                     f"{self._budget_words(share)}" + (
                         f" (a larger {'--time-limit' if self.timed else '--max-evals'} gives "
                         "it room)" if len(self.log.relax) == 1 else ""))
        if order is None:
            return None
        self.say(f"relaxation: MSE {mse:.3g} on {min(CHECK_ROWS, self.data.rows)} rows "
                 f"in {seconds:.0f} s")
        return seq_in[order], seq_out[outputs][order]

    def _relaxed(self, seq_in: np.ndarray, seq_out: np.ndarray, common: dict, fresh: bool
                 ) -> tuple[np.ndarray | None, np.ndarray, float, int]:
        """The relaxation :meth:`relax` runs on the answer (seq_in, seq_out) (n,), with the
        options ``common`` (its ``stats`` dict among them): (order (n,) of its positions or None,
        outputs (n,): block k's output layer is seq_out[outputs[k]], MSE, leading blocks
        held)."""
        from .relax import ROUNDS, relax, relax_pairs, relax_suffix

        n = len(seq_in)
        if self.exchanges is not None:  # pairs read from the data: fitted with the order
            # (the data's and the ratio's evidence, and the pairs as they are, as the
            # pairing's starting logits)
            logits = self.pairing.joint[np.ix_(seq_in, seq_out)] + PAIR_CURRENT * np.eye(n)
            if self.pairing.frozen is not None:  # known pairs stay
                known = np.flatnonzero(self.pairing.frozen[seq_in])
                logits[known, :], logits[:, known] = -1e3, -1e3
                logits[known, known] = 1e3
            order, outputs, mse = relax_pairs(self.stack.weights, seq_in, seq_out, self.data.x,
                                              self.data.target, logits,
                                              None if fresh else np.arange(n), **common)
            return order, outputs, mse, 0
        held = self._held() if len(self.log.relax) % 2 == 1 else 0  # every other repeat
        if held:  # the leading blocks held, the rest relaxed from uniform logits
            self.say(f"holding the first {held} blocks")
            order, mse = relax_suffix(self.stack.weights, seq_in, seq_out, self.data.x,
                                      self.data.target, held, **{**common, "plan": ROUNDS})
            if order is not None or common["stats"].get("share", 1.0) >= RELAX_MIN:
                return order, np.arange(n), mse, held
            self.say(f"no room to relax the last {n - held} blocks from uniform logits")
        order, mse = relax(self.stack.weights, seq_in, seq_out, self.data.x,  # the pairs as
                           self.data.target, np.arange(n), **common)  # they are, all blocks
        return order, np.arange(n), mse, 0

    def _held(self) -> int:
        """The leading blocks of the best answer a repeated relaxation holds
        (:func:`dropnet.relax.held_prefix` on up to CHECK_ROWS rows), 0 when fewer than
        SUFFIX_MIN would be left to relax; its work is counted as block evaluations."""
        from .relax import CHECK_ROWS, held_prefix

        m = min(CHECK_ROWS, self.data.rows)
        held, block_rows = held_prefix(self.stack.weights, self.data.x[:m], self.data.target[:m],
                                       self.best.seq_in, self.best.seq_out,
                                       kernels=self.options.kernels)
        self.log.block_evals += block_rows // min(self.options.rows, self.data.rows)
        return held if len(self.best.seq_in) - held >= SUFFIX_MIN else 0

    def _budget_words(self, share: float) -> str:
        """A share of the budget, in its unit: '12 s' or '3400000 block evaluations'."""
        if self.timed:
            return f"{share * self.options.time_limit:.0f} s"
        return f"{share * self.options.max_evals:.0f} block evaluations"

    def certify(self, seq_in: np.ndarray, seq_out: np.ndarray, name: str) -> float:
        """MSE of a sequence on all rows (``certify.check``); the best so far is kept."""
        t = time.perf_counter()
        mse, out = certify.check(self.stack.weights, self.data.x, seq_in, seq_out,
                                 self.data.target, self.tol, self.options.kernels)
        self.timings["certify"] = self.timings.get("certify", 0.0) + time.perf_counter() - t
        if self.best is None or mse < self.best.mse:
            self.best = _Best(seq_in.copy(), seq_out.copy(), name, mse, out)
        return mse

    def trial(self, seq_in: np.ndarray, seq_out: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """A quick descent (adjacent swaps, and role flips for h = d) on the search rows:
        (seq_in, seq_out, squared error), which ranks the seeds."""
        climber = self.climber(self.options.rows)
        state = descend(climber, climber.start(seq_in, seq_out), _cheap_moves(self.stack.square),
                        self.options.max_rounds, self.deadline, self.tol)
        return state.seq_in, state.seq_out, state.sse

    def descend_growing(self, name: str, seq_in: np.ndarray, seq_out: np.ndarray,
                        cap: float = np.inf, keep_pairs: bool = False
                        ) -> tuple[np.ndarray, np.ndarray, float]:
        """Descent on the search rows, grown x4 while the search fits the rows it sees to
        rounding level but not all of them, for at most ``cap`` (a share) of the budget
        (order moves only with ``keep_pairs``); returns seq_in, seq_out and their MSE on
        all rows."""
        hoods = self.order_hoods if keep_pairs else self.hoods
        m = min(self.options.rows, self.data.rows)
        deadline = min(self.deadline, time.perf_counter() + cap * self.options.time_limit)
        max_evals = self.log.block_evals + cap * self.options.max_evals if self.counted else np.inf
        while True:
            climber = self.climber(m)
            state = descend(climber, climber.start(seq_in, seq_out), hoods,
                            self.options.max_rounds, deadline, self.tol,
                            limit=[None] * (len(hoods) - 1) + [WIDE_LIMIT],
                            max_evals=max_evals)
            seq_in, seq_out = state.seq_in, state.seq_out
            mse = self.certify(seq_in, seq_out, name)
            self.say(f"seed {name}: {self.log.rounds} rounds on {m} rows, MSE {mse:.3g} on all rows")
            overfit = state.sse / m <= OVERFIT * self.tol
            capped = time.perf_counter() > deadline or self.log.block_evals >= max_evals
            if mse <= self.tol or m >= self.data.rows or not overfit or self.spent() or capped:
                return seq_in, seq_out, mse
            m = min(4 * m, self.data.rows)


class _Walker:
    """Iterated local search from one start: kick the incumbent (take 2-4 blocks out, put
    each back where it fits best), descend without the widest neighbourhood (capped steps),
    keep the result if it is better on the search rows (certified on all rows when it is).
    Rows grow x4 when the search rows are fitted to rounding level but all rows are not."""

    def __init__(self, run: _Run, seq_in: np.ndarray, seq_out: np.ndarray, name: str, index: int,
                 keep_pairs: bool = False):
        self.run, self.name, self.kicks = run, name, 0
        self.hoods = run.order_hoods if keep_pairs else run.hoods
        self.exchanges = None if keep_pairs else run.exchanges
        self.rng = np.random.default_rng([run.options.random_seed, index])
        self.rows = ILS_ROWS_FACTOR * run.options.rows
        self.climber = run.climber(self.rows)
        self.incumbent = self.climber.start(seq_in, seq_out)

    @property
    def mse(self) -> float:
        """Of the incumbent, on the search rows."""
        return self.incumbent.sse / self.climber.rows

    def walk(self, kicks: int | None = None, patience: int | None = None) -> None:
        """``kicks`` kicks (None: until certified or the budget is spent), or until
        ``patience`` kicks in a row have not improved the incumbent."""
        run, done, idle = self.run, 0, 0
        while not run.done() and (kicks is None or done < kicks) and idle != patience:
            self.kicks, done, idle = self.kicks + 1, done + 1, idle + 1
            kicked = kick(self.climber, self.incumbent.seq_in, self.incumbent.seq_out, self.rng,
                          self.exchanges, run.stack.square)
            state = descend(self.climber, self.climber.start(*kicked), self.hoods[:-1],
                            run.options.max_rounds, run.deadline, run.tol, limit=ILS_LIMIT)
            if state.sse >= self.incumbent.sse:
                continue
            self.incumbent, idle, run.gained = state, 0, run.used()
            mse = run.certify(state.seq_in, state.seq_out, self.name + "+ils")
            run.say(f"iterated local search from {self.name}, kick {self.kicks}: MSE {mse:.3g} "
                    "on all rows")
            if self.mse <= OVERFIT * run.tol < mse and self.climber.rows < run.data.rows:
                self.rows *= 4
                self.climber = run.climber(self.rows)
                self.incumbent = self.climber.start(state.seq_in, state.seq_out)


def _spent(log: SearchLog, options: SearchOptions, deadline: float) -> bool:
    return (time.perf_counter() > deadline or log.rounds >= options.max_rounds
            or log.block_evals >= options.max_evals)


def _repaired(pairing: Pairing, seq_in: np.ndarray, seq_out: np.ndarray) -> int:
    """How many blocks of the answer differ from the dominance pairing's blocks."""
    chosen = set(zip(*(a.tolist() for a in pairing.blocks)))
    return sum((int(i), int(j)) not in chosen for i, j in zip(seq_in, seq_out))


def _ranked_seeds(stack: Stack, pairings: list[tuple[str, np.ndarray, np.ndarray]], data: Data,
                  options: SearchOptions, names: list[str]) -> tuple[list, list]:
    """The seeds called ``names`` as (name, seq_in, seq_out), the lowest MSE on the search
    rows first. For auto, each seed is also read the other way round: norm and residual
    profiles run either way with depth. Each candidate pairing (name, blk_in, blk_out) (n,),
    block k being layers (blk_in[k], blk_out[k]), gets every seed, named seed/pairing for
    pairings other than the ratio's; a pairing whose best seed's MSE is over PAIRING_SPREAD
    times the best one's is dropped. Returns (seeds, pairings kept)."""
    m = min(options.rows, data.rows)
    x = np.ascontiguousarray(data.x[:m], dtype=np.float32)
    weights32 = stack.weights.astype(np.float32)
    seeds, owner = [], []
    for k, (pname, blk_in, blk_out) in enumerate(pairings):
        built: dict[str, np.ndarray] = {}
        for name in names:
            base = name.rsplit("-", 1)[0]  # a reversed seed reuses its base when built
            built[name] = (reverse(built[base]) if name.endswith("-rev") and base in built
                           else seed_order(name, weights32, blk_in, blk_out, x,
                                           options.kernels, data.target[:m]))
        suffix = f"/{pname}" if pname != "ratio" else ""
        seeds += [(name + suffix, blk_in[order], blk_out[order]) for name, order in built.items()]
        owner += [k] * len(built)
    scores = backend(options.kernels).evaluate_candidates(  # every seed from the inputs
        x[None], weights32, np.zeros(len(seeds), np.int64), np.stack([s[1] for s in seeds]),
        np.stack([s[2] for s in seeds]), data.target[:m])
    owner = np.array(owner)
    best = np.array([scores[owner == k].min() for k in range(len(pairings))])
    kept = np.flatnonzero(best <= PAIRING_SPREAD * best.min())
    ranked = [i for i in np.argsort(scores, kind="stable") if owner[i] in kept]
    return [seeds[i] for i in ranked], [pairings[k] for k in kept]


def _seed_names(seed: str) -> tuple[str, ...]:
    return SEEDS + REVERSED_SEEDS if seed == "auto" else (seed,)
