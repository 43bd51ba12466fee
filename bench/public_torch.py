"""The fastest public solver of the puzzle, reimplemented in torch (CPU) as a yardstick.

The algorithm, as published:

1. pairing: the diagonal dominance ratio |tr(W_out W_in)| / ||W_out W_in||_F of every
   (input layer, output layer) product, then scipy's linear_sum_assignment maximising it;
2. seed order: blocks in ascending entrywise L1 norm ||W_out||_1 of their output layer;
3. hill climbing over adjacent swaps: one forward pass with autograd on all rows and one
   backward pass give the gradient of the MSE (vs ``pred``) with respect to every block's
   input activation; the first-order change of swapping the blocks at positions i, i+1 is
   <grad at position i+2, (activation after the swapped pair) - (activation after the
   original pair)>; the swaps are evaluated exactly, best-ranked first, each by a full
   forward pass on all rows, and the first that lowers the MSE is accepted; repeat until no
   adjacent swap lowers it (every swap was evaluated exactly in the last round).

The search runs in float32; the answer is checked once in float64 on all rows against the
same rounding-level tolerance dropnet certifies with, (10 (n+1) eps32 rms(pred))^2.

Run: python bench/public_torch.py [PUZZLE] [--e2e N] [--json]
(PUZZLE defaults to ../shared/puzzle beside the repository). ``--e2e N`` also times N whole
runs of this script from the shell (python start to answer) and prints their median.
Torch is not a dropnet dependency: without it the script prints one line and exits 0.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

try:
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

PUZZLE = Path(__file__).resolve().parents[2] / "shared" / "puzzle"
EPS32 = float(np.finfo(np.float32).eps)


# ---------------------------------------------------------------- loading

def load(puzzle: str | Path = PUZZLE):
    """Pieces and data: ({index: (weight, bias)} float32 tensors, x (m, d), pred (m,))."""
    puzzle = Path(puzzle)
    folder = puzzle / "pieces" if (puzzle / "pieces").is_dir() else puzzle
    pieces = {}
    for path in folder.glob("piece_*.pth"):
        state = torch.load(path, map_location="cpu", weights_only=True)
        pieces[int(path.stem.split("_")[1])] = (state["weight"].float(), state["bias"].float())
    csv = puzzle / "historical_data.csv"
    with open(csv) as f:
        header = f.readline().strip().split(",")
    table = np.loadtxt(csv, delimiter=",", skiprows=1, dtype=np.float64)
    cols = [k for k, name in enumerate(header) if name.startswith("measurement")]
    x = torch.from_numpy(np.ascontiguousarray(table[:, cols]))
    pred = torch.from_numpy(np.ascontiguousarray(table[:, header.index("pred")]))
    return pieces, x, pred


# ---------------------------------------------------------------- the model

def _blocks(w_in, b_in, w_out, b_out, order, out_for_in):
    """Per-position weights (n, ...) of the blocks in execution ``order``."""
    order = torch.as_tensor(order)
    outs = torch.as_tensor(out_for_in)[order]
    return w_in[order], b_in[order], w_out[outs], b_out[outs]


def forward(x, blocks, w_last, b_last, keep=False):
    """Output (m,) of x (m, d) through ``blocks``; with ``keep`` also every block's input."""
    wi, bi, wo, bo = blocks
    h, acts = x, [x]
    for p in range(wi.shape[0]):
        hid = torch.addmm(bi[p], h, wi[p].T).relu_()
        h = torch.addmm(h, hid, wo[p].T).add_(bo[p])
        acts.append(h)
    y = h @ w_last + b_last
    return (y, acts) if keep else y


def sq_error(y, pred) -> float:
    """Mean squared error, the difference taken in the search dtype, summed in float64."""
    return float(torch.mean(torch.square((y - pred).double())))


# ---------------------------------------------------------------- the solver

def typed(pieces, d: int):
    """Pieces sorted by shape: input layer ids, output layer ids, the final layer's id, and
    the stacked weights (w_in (n, h, d), b_in, w_out (n, d, h), b_out, w_last (d,), b_last)."""
    last = next(k for k, (w, _) in pieces.items() if w.shape[0] == 1)
    ins = sorted(k for k, (w, _) in pieces.items() if w.shape[1] == d and k != last)
    outs = sorted(k for k, (w, _) in pieces.items() if w.shape[0] == d)
    def stack(ids, part):
        return torch.stack([pieces[k][part] for k in ids])

    return ins, outs, last, (stack(ins, 0), stack(ins, 1), stack(outs, 0), stack(outs, 1),
                             pieces[last][0][0], pieces[last][1][0])


def pair(w_in, w_out):
    """out_for_in (n,): the output layer of each input layer, by the dominance ratio."""
    from scipy.optimize import linear_sum_assignment

    prod = torch.matmul(w_out[None, :], w_in[:, None])  # (n_in, n_out, d, d): W_out[j] W_in[i]
    trace = torch.diagonal(prod, dim1=-2, dim2=-1).sum(-1)
    ratio = trace.abs() / torch.linalg.matrix_norm(prod)
    rows, cols = linear_sum_assignment(-ratio.double().numpy())
    out_for_in = np.empty(len(rows), dtype=np.int64)
    out_for_in[rows] = cols
    return out_for_in


def first_order(acts, grads, blocks):
    """(n-1,) first-order change of the MSE for swapping positions i and i+1:
    <grads[i+2], block_i(block_{i+1}(acts[i])) - acts[i+2]>."""
    wi, bi, wo, bo = blocks

    def run(h, p):  # the block at position p applied to h
        hid = torch.addmm(bi[p], h, wi[p].T).relu_()
        return torch.addmm(h, hid, wo[p].T).add_(bo[p])

    n = wi.shape[0]
    delta = torch.empty(n - 1, dtype=torch.float64)
    for i in range(n - 1):
        swapped = run(run(acts[i], i + 1), i)
        delta[i] = torch.vdot(grads[i + 2].flatten(), (swapped - acts[i + 2]).flatten())
    return delta


def solve_loaded(pieces, x, pred, verbose=False) -> dict:
    """Pair, seed, climb (float32) and check (float64) already loaded pieces and data."""
    t0 = time.perf_counter()
    ins, outs, last, (w_in, b_in, w_out, b_out, w_last, b_last) = typed(pieces, x.shape[1])
    n = len(ins)

    out_for_in = pair(w_in, w_out)
    t_pair = time.perf_counter()
    order = list(np.argsort(w_out[out_for_in].abs().sum((1, 2)).numpy(), kind="stable"))

    x32, pred32 = x.float(), pred.float()
    rounds = exact = 0
    with torch.no_grad():
        best = sq_error(forward(x32, _blocks(w_in, b_in, w_out, b_out, order, out_for_in),
                                w_last, b_last), pred32)
    while True:
        blocks = _blocks(w_in, b_in, w_out, b_out, order, out_for_in)
        x_in = x32.clone().requires_grad_(True)
        y, acts = forward(x_in, blocks, w_last, b_last, keep=True)
        grads = torch.autograd.grad(torch.mean(torch.square(y - pred32)), acts)
        with torch.no_grad():
            acts = [a.detach() for a in acts]
            ranked = torch.argsort(first_order(acts, grads, blocks), stable=True).tolist()
            accepted = False
            for i in ranked:  # exact, best-ranked first; the first improvement is taken
                cand = order.copy()
                cand[i], cand[i + 1] = cand[i + 1], cand[i]
                exact += 1
                value = sq_error(forward(x32, _blocks(w_in, b_in, w_out, b_out, cand, out_for_in),
                                         w_last, b_last), pred32)
                if value < best:
                    order, best, accepted = cand, value, True
                    break
        if not accepted:
            break
        rounds += 1
        if verbose:
            print(f"round {rounds}: swap at {i}, MSE {best:.3g} ({exact} exact evaluations)",
                  file=sys.stderr)
    t_climb = time.perf_counter()

    with torch.no_grad():  # the float64 check on all rows
        blocks64 = [b.double() for b in _blocks(w_in, b_in, w_out, b_out, order, out_for_in)]
        y64 = forward(x.double(), blocks64, w_last.double(), b_last.double())
        mse64 = sq_error(y64, pred.double())
    tolerance = (10.0 * (n + 1) * EPS32 * float(torch.sqrt(torch.mean(pred ** 2)))) ** 2
    permutation = [v for p in order for v in (ins[p], outs[out_for_in[p]])] + [last]
    text = ",".join(map(str, permutation))
    t_end = time.perf_counter()
    return {"permutation": permutation, "sha256": hashlib.sha256(text.encode()).hexdigest(),
            "mse32": best, "mse64": mse64, "tolerance": tolerance,
            "certified": mse64 <= tolerance, "rounds": rounds, "exact_evals": exact,
            "flops": flops(n, *w_in.shape[1:], x.shape[0], rounds, exact),
            "timings": {"pair": t_pair - t0, "climb": t_climb - t_pair,
                        "check": t_end - t_climb, "solve": t_end - t0}}


def flops(n: int, h: int, d: int, m: int, rounds: int, exact: int) -> dict:
    """Arithmetic of a solve, by stage (FLOPs): one block on one row costs 4dh + h + 2d;
    the products of every (input, output) pair 2dhd each; the backward pass (gradients of
    the activations only, the weights need none) about one forward pass; each of the
    rounds + 1 rounds (the last finds nothing) does a forward + backward pass and the
    first-order screen (2 blocks per swap), each exact evaluation one forward pass."""
    block = 4 * d * h + h + 2 * d
    forward = n * m * block + m * (2 * d + 1)
    screen = 2 * (n - 1) * m * block + (n - 1) * m * 2 * d
    return {"pair": n * n * (2 * d * h * d + 3 * d * d),
            "climb": (rounds + 1) * (2 * forward + screen) + exact * forward,
            "check": forward}


def end_to_end(puzzle: str | Path, repeats: int, threads: int = 0) -> list[float]:
    """Seconds of ``repeats`` whole runs of this script (python start to answer)."""
    command = [sys.executable, __file__, str(puzzle), "-q"]
    if threads:
        command += ["--threads", str(threads)]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return times


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("puzzle", nargs="?", default=str(PUZZLE))
    parser.add_argument("--e2e", type=int, default=0, metavar="N",
                        help="also time N whole runs of this script from the shell")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the answer")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (default: torch's own choice)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every round")
    opts = parser.parse_args(argv)
    if torch is None:
        print("public_torch: skipped (torch is not installed)")
        return 0
    puzzle, e2e = Path(opts.puzzle), opts.e2e
    if opts.threads:
        torch.set_num_threads(opts.threads)
    if not (puzzle / "pieces").is_dir() and not list(puzzle.glob("piece_*.pth")):
        print(f"public_torch: skipped (no puzzle at {puzzle})")
        return 0
    t = time.perf_counter()
    pieces, x, pred = load(puzzle)
    t_load = time.perf_counter() - t
    result = solve_loaded(pieces, x, pred, verbose=opts.verbose)
    result["timings"] = {"load": t_load, **result["timings"]}
    if opts.quiet:
        print(",".join(map(str, result["permutation"])))
        return 0
    if e2e:
        result["end_to_end"] = end_to_end(puzzle, e2e, opts.threads)
    if opts.json:
        print(json.dumps(result))
        return 0
    print(",".join(map(str, result["permutation"])))
    print(f"sha256: {result['sha256']}")
    print(f"MSE vs pred: float32 search {result['mse32']:.3g}, float64 {result['mse64']:.3g} "
          f"({'certified' if result['certified'] else 'NOT certified'}, tolerance "
          f"{result['tolerance']:.2g})")
    print(f"{result['rounds']} accepted swaps, {result['exact_evals']} exact forward passes, "
          f"about {sum(result['flops'].values()) / 1e9:,.0f} GFLOP")
    print("timings: " + ", ".join(f"{k} {v:.3f}s" for k, v in result["timings"].items()))
    if e2e:
        print(f"end to end (python start to answer), {e2e} runs: median "
              f"{np.median(result['end_to_end']):.3f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
