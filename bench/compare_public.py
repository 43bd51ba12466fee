"""dropnet against the fastest public solver (bench/public_torch.py) and the naive baseline
(bench/naive.py), all measured in one run of this script, printed as markdown tables.

Solve after loading, in this process, repeats interleaved so that a busy machine slows
every contender alike; each contender warmed up first (dropnet: one whole solve, so Numba's
compilation or cache loading never counts; the public solver: scipy imported and torch's
first matrix products run; the naive baseline needs none):

- dropnet: ``dropnet.solve_loaded`` on pieces and data loaded once;
- public solver: ``public_torch.solve_loaded`` on its own loaded tensors;
- naive: ``naive.naive_solve`` on dropnet's typed weights.

End to end from the shell (python start to answer): ``dropnet solve PUZZLE -q`` (Numba
cache warmed by one untimed run) and ``python bench/public_torch.py PUZZLE -q``.

Run: nice -n 10 python bench/compare_public.py [--repeats 5] [--public-repeats 2]
     [--naive-repeats 1] [--e2e 5] [--public-e2e 1] [--threads N]
The public solver takes tens of seconds per solve on a 2-core machine, so its repeats
default low; raise them on a quiet machine. Without torch its columns are skipped.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import public_torch
from naive import naive_solve

PUZZLE = BENCH.parents[1] / "shared" / "puzzle"
ANSWER_SHA256 = "093be1cf2d24094db903cbc3e8d33d306ebca49c6accaa264e44b0b675e7d9c4"


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - t, value


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt_s(seconds: float) -> str:
    if math.isnan(seconds):
        return "—"
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def choose_threads(pieces, x, pred) -> tuple[int, dict]:
    """The torch thread count (1 or 2) with the faster float32 forward pass on all rows:
    on a busy 2-core machine torch's two OpenMP threads can run 10x slower than one."""
    import torch

    _, _, _, (w_in, b_in, w_out, b_out, w_last, b_last) = public_torch.typed(pieces, x.shape[1])
    out_for_in = public_torch.pair(w_in, w_out)  # also imports scipy: part of the warm-up
    blocks = public_torch._blocks(w_in, b_in, w_out, b_out, list(range(len(w_in))), out_for_in)
    x32 = x.float()
    rates = {}
    default = torch.get_num_threads()
    for threads in sorted({1, min(2, os.cpu_count() or 1)}):
        torch.set_num_threads(threads)
        with torch.no_grad():
            public_torch.forward(x32, blocks, w_last, b_last)
            rates[threads] = min(timed(public_torch.forward, x32, blocks, w_last, b_last)[0]
                                 for _ in range(2))
    torch.set_num_threads(default)
    return min(rates, key=rates.get), rates


def _openblas():
    """numpy's bundled OpenBLAS (ctypes handle) and its set/get-threads functions, or None."""
    import ctypes
    import glob

    for path in glob.glob(str(Path(np.__file__).parent.parent / "numpy.libs" / "*openblas*")):
        lib = ctypes.CDLL(path)
        for suffix in ("64_", ""):
            for prefix in ("scipy_openblas", "openblas"):
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if setter and getter:
                    return setter, getter
    return None


def set_blas_threads(threads: int) -> int:
    """Set numpy's OpenBLAS thread count (where it can be found); returns the previous one."""
    handle = _openblas()
    if handle is None:
        return 0
    previous = handle[1]()
    handle[0](threads)
    return previous


def choose_blas_threads(w, x) -> tuple[int, dict]:
    """numpy's BLAS thread count (1 or 2) with the faster forward pass of the naive baseline
    (48 blocks on 1,000 rows): a busy 2-core machine slows two OpenBLAS threads on these
    small products far more than one."""
    if _openblas() is None:
        return 0, {}

    def forward():
        h = x[:1000].copy()
        for i in range(len(w.w_in)):
            h = h + np.maximum(h @ w.w_in[i].T + w.b_in[i], 0) @ w.w_out[i].T + w.b_out[i]

    times, default = {}, set_blas_threads(1)
    for threads in sorted({1, min(2, os.cpu_count() or 1)}):
        set_blas_threads(threads)
        forward()
        times[threads] = min(timed(forward)[0] for _ in range(3))
    set_blas_threads(default)
    return min(times, key=times.get), times


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("puzzle", nargs="?", default=str(PUZZLE))
    parser.add_argument("--repeats", type=int, default=5, help="dropnet solves after loading")
    parser.add_argument("--public-repeats", type=int, default=2)
    parser.add_argument("--naive-repeats", type=int, default=1)
    parser.add_argument("--e2e", type=int, default=5, help="`dropnet solve` runs from the shell")
    parser.add_argument("--public-e2e", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for the public solver (default: the faster of "
                             "1 and 2 on a forward pass, probed now)")
    parser.add_argument("--blas-threads", type=int, default=0,
                        help="numpy BLAS threads for the naive baseline (default: the faster "
                             "of 1 and 2 on its forward pass, probed now)")
    opts = parser.parse_args(argv)
    puzzle = Path(opts.puzzle)
    if not (puzzle / "pieces").is_dir():
        print(f"compare_public: skipped (no puzzle at {puzzle})")
        return 0
    t_start = time.perf_counter()

    from dropnet.io import load_data, load_pieces
    from dropnet.roles import assign_roles
    from dropnet.solve import solve_loaded
    from dropnet.verify import answer_sha256

    pieces, data = load_pieces(puzzle / "pieces"), load_data(puzzle / "historical_data.csv")
    t_load_dn = median([timed(load_pieces, puzzle / "pieces")[0] for _ in range(3)])
    t_csv_dn = median([timed(load_data, puzzle / "historical_data.csv")[0] for _ in range(3)])
    from peak import Counts, instrument

    counts = Counts()
    with instrument(counts):  # JIT compile / cache load: never timed; its FLOPs counted
        warm = solve_loaded(pieces, data)
    dn_flops = sum(counts.flops.values())
    dn_sha = answer_sha256(warm.permutation)
    w = assign_roles(pieces).weights
    naive_args = (w.w_in, w.b_in, w.w_out, w.b_out, w.w_last, w.b_last[0], data.x, data.pred)
    blas_threads, blas_probe = ((opts.blas_threads, {}) if opts.blas_threads
                                else choose_blas_threads(w, data.x))

    have_torch = public_torch.torch is not None
    if have_torch:
        import torch

        pt_pieces, pt_x, pt_pred = public_torch.load(puzzle)
        t_load_pt = median([timed(public_torch.load, puzzle)[0] for _ in range(3)])
        threads, probe = (opts.threads, {}) if opts.threads else choose_threads(pt_pieces, pt_x,
                                                                                 pt_pred)
        torch.set_num_threads(threads)
    else:
        print("compare_public: torch is not installed; the public solver is skipped")

    dn_t, dn_stage, pt_t, pt_stage, pt_res, nv_t, nv_mse = [], [], [], [], None, [], []
    rounds = max(opts.repeats, opts.public_repeats if have_torch else 0, opts.naive_repeats)
    for r in range(rounds):  # interleaved: a busy machine slows every contender alike
        if r < opts.repeats:
            seconds, res = timed(solve_loaded, pieces, data)
            dn_t.append(seconds)
            dn_stage.append(res.timings)
            assert answer_sha256(res.permutation) == dn_sha
        if have_torch and r < opts.public_repeats:
            seconds, pt_res = timed(public_torch.solve_loaded, pt_pieces, pt_x, pt_pred)
            pt_t.append(seconds)
            pt_stage.append(pt_res["timings"])
        if r < opts.naive_repeats:
            default = set_blas_threads(blas_threads) if blas_threads else 0
            seconds, (_, _, mse) = timed(naive_solve, *naive_args)
            if default:
                set_blas_threads(default)
            nv_t.append(seconds)
            nv_mse.append(mse)

    env = dict(os.environ)
    dropnet_cmd = ([shutil.which("dropnet")] if shutil.which("dropnet")
                   else [sys.executable, "-m", "dropnet.cli"]) + ["solve", str(puzzle), "-q"]
    public_cmd = [sys.executable, str(BENCH / "public_torch.py"), str(puzzle), "-q"]
    if have_torch:
        public_cmd += ["--threads", str(threads)]
    subprocess.run(dropnet_cmd, env=env, check=True, capture_output=True)  # warm Numba cache
    dn_e2e, pt_e2e, e2e_answers = [], [], set()
    for r in range(max(opts.e2e, opts.public_e2e if have_torch else 0)):
        for cmd, out, runs in ((dropnet_cmd, dn_e2e, opts.e2e), (public_cmd, pt_e2e,
                                                                   opts.public_e2e)):
            if r >= runs or (cmd is public_cmd and not have_torch):
                continue
            seconds, proc = timed(subprocess.run, cmd, env=env, check=True, capture_output=True,
                                  text=True)
            out.append(seconds)
            e2e_answers.add((cmd is public_cmd, proc.stdout.strip().splitlines()[0]))

    # ------------------------------------------------------------ report
    dn, pt, nv = median(dn_t), median(pt_t), median(nv_t)
    dn_e, pt_e = median(dn_e2e), median(pt_e2e)
    def ratio(a: float, b: float) -> str:
        return "—" if math.isnan(a) or math.isnan(b) else f"{a / b:,.0f}×"

    print(f"## dropnet vs the public solver vs the naive baseline (one run, "
          f"{time.perf_counter() - t_start:.0f} s in all)\n")
    if have_torch:
        print(f"Public solver on torch {torch.__version__} with {threads} thread(s)"
              + (" (forward pass on all rows: "
                 + ", ".join(f"{k} thread(s) {v:.2f} s" for k, v in probe.items()) + ")"
                 if probe else "") + f"; load average at the end "
              f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}.")
    if blas_threads:
        print(f"Naive baseline with {blas_threads} OpenBLAS thread(s)" + (
            " (its forward pass on 1,000 rows: " + ", ".join(
                f"{k} thread(s) {v * 1000:.0f} ms" for k, v in blas_probe.items()) + ")"
            if blas_probe else "") + ".")
    print()
    print("| median (runs) | dropnet | public solver (torch) | naive (numpy) |")
    print("|---|---|---|---|")
    print(f"| solve after loading | {fmt_s(dn)} ({len(dn_t)}) | {fmt_s(pt)} ({len(pt_t)}) | "
          f"{fmt_s(nv)} ({len(nv_t)}) |")
    print(f"| × dropnet | 1× | {ratio(pt, dn)} | {ratio(nv, dn)} |")
    print(f"| end to end from the shell | {fmt_s(dn_e)} ({len(dn_e2e)}) | {fmt_s(pt_e)} "
          f"({len(pt_e2e)}) | — |")
    print(f"| × dropnet | 1× | {ratio(pt_e, dn_e)} | — |")
    pt_flops = sum(pt_res["flops"].values()) if pt_res else None
    print(f"| arithmetic of a solve (GFLOP) | {dn_flops / 1e9:,.1f} | "
          f"{f'{pt_flops / 1e9:,.0f}' if pt_flops else '—'} | — |")
    print(f"| achieved GFLOP/s in the solve | {dn_flops / dn / 1e9:,.0f} | "
          f"{f'{pt_flops / pt / 1e9:,.0f}' if pt_flops else '—'} | — |")
    print(f"| loading (pieces + CSV), warm, median of 3 | {fmt_s(t_load_dn + t_csv_dn)} | "
          f"{fmt_s(t_load_pt) if have_torch else '—'} | (dropnet's) |")
    same = pt_res is not None and pt_res["permutation"] == warm.permutation
    print(f"| answer | sha256 {'ok' if dn_sha == ANSWER_SHA256 else 'WRONG'}, "
          f"MSE {warm.mse:.2g} | "
          + (f"{'same permutation' if same else 'DIFFERENT permutation'}, sha256 "
             f"{'ok' if pt_res['sha256'] == ANSWER_SHA256 else 'WRONG'}, MSE "
             f"{pt_res['mse64']:.2g} | " if pt_res else "— | ")
          + (f"MSE {median(nv_mse):.2g} |" if nv_mse else "— |"))
    distinct = {text for _, text in e2e_answers}
    print(f"\nShell answers: {len(distinct)} distinct permutation(s)"
          + (" (all equal to dropnet's in-process answer)"
             if distinct == {",".join(map(str, warm.permutation))} else " — MISMATCH"))

    print("\n| stage, median | dropnet | public solver (torch) |")
    print("|---|---|---|")
    def stage(runs: list[dict], key: str) -> float:
        return median([t.get(key, 0.0) for t in runs])

    print(f"| pairing | {fmt_s(stage(dn_stage, 'pair'))} | {fmt_s(stage(pt_stage, 'pair'))} |")
    print(f"| ordering search | {fmt_s(stage(dn_stage, 'order'))} | "
          f"{fmt_s(stage(pt_stage, 'climb'))} |")
    print(f"| check on all rows (dropnet float32, float64 near the tolerance; public float64) | {fmt_s(stage(dn_stage, 'certify'))} | "
          f"{fmt_s(stage(pt_stage, 'check'))} |")
    if pt_res:
        print(f"\nPublic solver: {pt_res['rounds']} accepted adjacent swaps, "
              f"{pt_res['exact_evals']} exact forward passes on all rows (plus one forward + "
              f"backward pass and one first-order screen per round). dropnet: "
              f"{warm.search['rounds']} rounds, {warm.search['block_evals']} block evaluations, "
              f"seed {warm.seed}.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
