"""Peak-rate context for each stage of a dropnet solve of the published puzzle: the FLOPs
each stage needs, its time, and the achieved GFLOP/s against this machine's measured numpy
matrix-multiply rate for the stage's dtype.

1. numpy (OpenBLAS) matrix multiply, float32 and float64: the block-shaped products of a
   forward pass on all rows, (10000 x 48) @ (48 x 96) and (10000 x 96) @ (96 x 48), the same
   on 128 rows (the search's), and a large square one; the best of several repeats.
2. FLOPs per stage, counted by wrapping the CPU kernels during one solve (every call's rows,
   blocks and candidates are known from its arguments), with one block on one row costing
   4dh (the two products) + h + 2d (biases, residual) = 18,624 FLOPs for d = 48, h = 96:
   - pairing: ``pair_trace_and_frobenius``: 2n Gram matrices W_in W_in^T and W_out^T W_out
     (h x h, 2dh^2 each) and, for each of the n^2 (input, output) pairs, the trace of
     W_out W_in (2dh) and <W_out^T W_out, W_in W_in^T> (2h^2) for its Frobenius norm;
   - ordering: seeds (residual norms, greedy construction, seed scoring) and the search
     (prefix refreshes, candidate evaluations, first-order screens, adjoint passes; the
     adjoint counted dense, 6dh + h per row and block, an upper bound: it skips inactive
     units);
   - certification: one float32 forward pass on all rows per certify call (float64 too
     when its MSE falls near the tolerance, never on the puzzle).
   The search's own counter, ``Result.search["block_evals"]``, is shown beside it, converted
   at the search's starting rows (128: see the rows column; the search grows its rows only
   when a descent fits its rows but fails on all of them, which the published puzzle never
   triggers), as a cross-check.
3. Stage times: ``Result.timings`` (load, pair, order, certify) of ``dropnet.solve``,
   medians of several solves after a warm-up solve.

Run: nice -n 10 python bench/peak.py [PUZZLE] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np

PUZZLE = Path(__file__).resolve().parents[2] / "shared" / "puzzle"


# ---------------------------------------------------------------- matrix-multiply rates

def matmul_rate(m: int, k: int, n: int, dtype, repeats: int) -> float:
    """Best GFLOP/s of numpy's (m x k) @ (k x n) over ``repeats`` (2mkn FLOPs each)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    out = np.empty((m, n), dtype)
    np.matmul(a, b, out=out)
    inner = max(1, int(2e8 // (2 * m * k * n)))  # about 0.2 GFLOP per timed sample
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            np.matmul(a, b, out=out)
        best = min(best, (time.perf_counter() - t) / inner)
    return 2 * m * k * n / best / 1e9


def matmul_rates(d: int = 48, h: int = 96, rows: int = 10000, repeats: int = 7) -> dict:
    """{product: {"float32": GFLOP/s, "float64": GFLOP/s}} with numpy's default threads."""
    shapes = {f"({rows} x {d}) @ ({d} x {h})": (rows, d, h),
              f"({rows} x {h}) @ ({h} x {d})": (rows, h, d),
              f"(128 x {d}) @ ({d} x {h})": (128, d, h),
              "(2048 x 2048) @ (2048 x 2048)": (2048, 2048, 2048)}
    return {name: {np.dtype(dt).name: matmul_rate(*shape, dt, repeats if shape[0] < 2048 else 3)
                   for dt in (np.float32, np.float64)} for name, shape in shapes.items()}


def matmul_rates_one_thread(d: int, h: int, rows: int) -> dict:
    """The same with one BLAS thread (a child process: OpenBLAS reads its thread count at
    start). On a 2-core machine another busy process leaves one core, and two BLAS threads
    then wait on each other: small products run far below one thread's rate."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, __file__, "--rates-json", str(d), str(h), str(rows)],
                         env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


# ---------------------------------------------------------------- FLOP counting

class Counts:
    """FLOPs, block-row evaluations and calls per stage; rows seen per stage."""

    def __init__(self):
        self.flops = defaultdict(float)
        self.block_rows = defaultdict(float)
        self.calls = Counter()
        self.rows = defaultdict(Counter)
        self.stage = None  # set while the seeds are built


@contextmanager
def instrument(counts: Counts):
    """Wrap the CPU kernels (and dropnet.solve's seed ranking) to count FLOPs from each
    call's arguments; everything is restored afterwards."""
    import importlib

    from dropnet._kernels import cpu

    # the modules, not the package's re-exported functions of the same names
    certify_mod = importlib.import_module("dropnet.certify")
    solve_mod = importlib.import_module("dropnet.solve")

    saved = {}

    def block(d, h):
        return 4 * d * h + h + 2 * d

    def wrap(name, cost):
        fn = getattr(cpu, name)
        saved[name] = fn

        def wrapped(*args, **kwargs):
            stage, flops, block_rows, rows = cost(*args, **kwargs)
            stage = counts.stage if stage == "order" and counts.stage else stage
            counts.flops[stage] += flops
            counts.block_rows[stage] += block_rows
            counts.calls[(stage, name)] += 1
            counts.rows[stage][rows] += 1
            return fn(*args, **kwargs)

        setattr(cpu, name, wrapped)

    def pair_cost(w_in, w_out):
        (n_in, h, d), n_out = w_in.shape, w_out.shape[0]
        return "pair", (n_in + n_out) * 2 * d * h * h + n_in * n_out * (2 * d * h + 2 * h * h), 0, 0

    def refresh_cost(acts, w, seq_in, seq_out, first):
        (_, m, d), h = acts.shape, w.w_in.shape[1]
        k = len(seq_in) - int(first)
        return "order", k * m * block(d, h), k * m, m

    def candidates_cost(acts, w, start, seq_in, seq_out, target):
        (_, m, d), h = acts.shape, w.w_in.shape[1]
        k = float(np.sum(np.asarray(seq_in).shape[1] - np.asarray(start)))
        return "order", k * m * block(d, h) + len(start) * m * (2 * d + 3), k * m, m

    def adjoint_cost(acts, w, seq_in, seq_out, target):
        (_, m, d), h = acts.shape, w.w_in.shape[1]
        return "order", len(seq_in) * m * (6 * d * h + h) + m * 2 * d, 0, m

    def first_order_cost(acts, grads, w, lo, hi, seq_in, seq_out):
        (_, m, d), h = acts.shape, w.w_in.shape[1]
        k = float(np.sum(np.asarray(hi) - np.asarray(lo) + 1))
        return "order", k * m * block(d, h) + len(lo) * m * 3 * d, k * m, m

    def residual_cost(x, w, cand_in, cand_out):
        (m, d), h = x.shape, w.w_in.shape[1]
        return "order", len(cand_in) * m * (block(d, h) + 3 * d + 1), len(cand_in) * m, m

    def output_cost(x, w, seq_in, seq_out):
        (m, d), h = x.shape, w.w_in.shape[1]
        return "order", len(seq_in) * m * block(d, h) + m * (2 * d + 1), len(seq_in) * m, m

    wrap("pair_trace_and_frobenius", pair_cost)
    wrap("refresh_prefix", refresh_cost)
    wrap("evaluate_candidates", candidates_cost)
    wrap("adjoint_gradients", adjoint_cost)
    wrap("first_order_deltas", first_order_cost)
    wrap("residual_norms", residual_cost)
    wrap("network_output", output_cost)

    def staged(fn, stage):
        """fn, with every kernel call inside it counted under ``stage``."""
        def wrapped(*args, **kwargs):
            counts.stage = stage
            try:
                return fn(*args, **kwargs)
            finally:
                counts.stage = None

        return wrapped

    ranked = getattr(solve_mod, "_ranked_seeds", None)
    if ranked is not None:
        solve_mod._ranked_seeds = staged(ranked, "seeds")
    check = certify_mod.check
    certify_mod.check = staged(check, "certify")  # its forward passes are the certificate's
    try:
        yield counts
    finally:
        for name, fn in saved.items():
            setattr(cpu, name, fn)
        if ranked is not None:
            solve_mod._ranked_seeds = ranked
        certify_mod.check = check


# ---------------------------------------------------------------- report

def main(argv: list[str]) -> int:
    if argv[:1] == ["--rates-json"]:
        print(json.dumps(matmul_rates(*map(int, argv[1:4]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("puzzle", nargs="?", default=str(PUZZLE))
    parser.add_argument("--repeats", type=int, default=5, help="timed solves")
    opts = parser.parse_args(argv)
    puzzle = Path(opts.puzzle)
    if not (puzzle / "pieces").is_dir():
        print(f"peak: skipped (no puzzle at {puzzle})")
        return 0
    from dropnet.solve import DEFAULT_ROWS, solve

    t0 = time.perf_counter()
    counts = Counts()
    with instrument(counts):  # the warm-up solve (JIT / cache load) is the counted one
        counted = solve(puzzle)
    assert counted.certified, "the counted solve did not certify"
    runs = [solve(puzzle) for _ in range(opts.repeats)]
    assert all(r.permutation == counted.permutation for r in runs)
    timing = {k: statistics.median(r.timings.get(k, 0.0) for r in runs)
              for k in ("load", "pair", "order", "certify")}
    solve_s = statistics.median(sum(r.timings.get(k, 0.0) for k in ("pair", "order", "certify"))
                                for r in runs)
    from dropnet.io import load_data, load_pieces
    from dropnet.roles import assign_roles

    stack = assign_roles(load_pieces(puzzle / "pieces"))
    stack_d, stack_h = stack.width, stack.hidden
    rows = load_data(puzzle / "historical_data.csv").rows
    rates = {"default threads": matmul_rates(stack_d, stack_h, rows),
             "1 thread": matmul_rates_one_thread(stack_d, stack_h, rows)}
    dtypes = ("float32", "float64")
    peak = {dt: max(r[dt] for per in rates.values() for r in per.values()) for dt in dtypes}
    elapsed = time.perf_counter() - t0

    print(f"## Peak-rate context (one run, {elapsed:.0f} s; load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())})\n")
    print("numpy (OpenBLAS) matrix multiply, GFLOP/s, best of several repeats, with numpy's "
          "default BLAS threads and with one:\n")
    print("| product | float32 | float32, 1 thread | float64 | float64, 1 thread |")
    print("|---|---|---|---|---|")
    for name in rates["default threads"]:
        cells = [rates[kind][name][dt] for dt in dtypes for kind in rates]
        print(f"| {name} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    print(f"| **peak used below** (best of the above) | **{peak['float32']:.1f}** | | "
          f"**{peak['float64']:.1f}** | |")

    block_flops = 4 * stack_d * stack_h + stack_h + 2 * stack_d
    evals = counted.search["block_evals"]
    order_flops = counts.flops["order"] + counts.flops["seeds"]
    certify_calls = sum(v for (stage, name), v in counts.calls.items() if stage == "certify")
    stages = [  # name, FLOPs, seconds, dtype, note
        ("pairing", counts.flops["pair"], timing["pair"], "float64",
         "2n Gram matrices + n^2 traces and Frobenius inner products"),
        ("ordering (seeds + search)", order_flops, timing["order"], "float32",
         f"seeds {counts.flops['seeds'] / 1e9:.2f} GFLOP, search "
         f"{counts.flops['order'] / 1e9:.2f} GFLOP; rows seen by the search: "
         + ", ".join(f"{m} ({c} calls)" for m, c in sorted(counts.rows['order'].items()))),
        ("certification", counts.flops["certify"], timing["certify"], "float32",
         f"{certify_calls} forward pass(es) on all {rows:,} rows (float32; float64 only "
         "near the tolerance)"),
    ]
    total_flops = sum(s[1] for s in stages)
    print(f"\nStages of `dropnet.solve` on the published puzzle: FLOPs counted in one solve, "
          f"seconds the median of {opts.repeats} solves after it (Result.timings):\n")
    print("| stage | dtype | GFLOP | seconds | achieved GFLOP/s | of measured peak | notes |")
    print("|---|---|---|---|---|---|---|")
    print(f"| load (97 pieces + CSV) | — | — | {timing['load']:.3f} | — | — | not arithmetic |")
    for name, flops, secs, dt, note in stages:
        rate = flops / secs / 1e9 if secs else float("nan")
        print(f"| {name} | {dt} | {flops / 1e9:.3f} | {secs:.3f} | {rate:.1f} | "
              f"{rate / peak[dt]:.0%} | {note} |")
    print(f"| solve after loading | mixed | {total_flops / 1e9:.3f} | {solve_s:.3f} | "
          f"{total_flops / solve_s / 1e9:.1f} | — | pair + order + certify |")
    adjoints = counts.calls[("order", "adjoint_gradients")]
    seen = counts.block_rows["order"] / DEFAULT_ROWS
    print(f"\nCross-check with the search's own counter: Result.search['block_evals'] = "
          f"{evals:,} block evaluations; at {DEFAULT_ROWS} rows each (every search kernel call "
          f"above ran on {DEFAULT_ROWS} rows) and {block_flops:,} FLOPs per block and row "
          f"(4dh + h + 2d) that is {evals * DEFAULT_ROWS * block_flops / 1e9:.3f} GFLOP. The "
          f"wrapped kernels saw {seen:,.0f} forward block evaluations in the search plus "
          f"{adjoints} adjoint passes, which the counter charges 2n = {2 * len(counted.order)} "
          f"block evaluations each: {seen:,.0f} + {adjoints} x {2 * len(counted.order)} = "
          f"{seen + adjoints * 2 * len(counted.order):,.0f}. The counter leaves out the seeds "
          f"({counts.block_rows['seeds'] / DEFAULT_ROWS:,.0f} block evaluations at "
          f"{DEFAULT_ROWS} rows). Search: {counted.search['rounds']} rounds, seed "
          f"{counted.seed}.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
