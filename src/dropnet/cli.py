"""The ``dropnet`` command line: parses arguments, calls the Python API, prints.

Exit codes: 0 certified, 1 solved but not certified, 2 bad input or usage.
"""
from __future__ import annotations

import atexit
import json
import os
import sys
import time
from pathlib import Path

import click

from .errors import DropnetError, InputError
from .verify import answer_sha256, answer_text  # noqa: F401  (re-exported for callers)

EXIT_CERTIFIED, EXIT_UNCERTIFIED, EXIT_BAD_INPUT = 0, 1, 2


THIN_MARGIN = 1.2  # matched ratios within this factor of the unmatched ones: warn
data_option = click.option(
    "--data", type=click.Path(path_type=Path), default=None,
    help="CSV with input columns, pred and true [default: historical_data.csv beside the "
         "pieces or in their parent].")


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def _progress(quiet: bool):
    """A stderr printer when stderr is a terminal and not --quiet, else None."""
    if quiet or not sys.stderr.isatty():
        return None
    return lambda message: click.echo(f"  {message}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dropnet")
def main() -> None:
    """Reassemble a dropped residual MLP from its shuffled linear layers."""


def _load(pieces_dir: Path, data: Path | None):
    """Pieces and data from a pieces folder (or its parent) and an optional CSV path."""
    from .io import find_data, find_pieces_folder, load_data, load_pieces

    pieces = load_pieces(find_pieces_folder(pieces_dir))
    return pieces, load_data(data if data is not None else find_data(pieces.folder))


def pairing_warning(summary: dict) -> str | None:
    """A warning when matched and unmatched dominance ratios are not cleanly separated."""
    if summary["matched_min"] >= THIN_MARGIN * summary["unmatched_max"]:
        return None
    return (f"warning: thin pairing margin (smallest matched ratio {summary['matched_min']:.3g} "
            f"vs largest unmatched {summary['unmatched_max']:.3g}); "
            + ("pairings read from the data were searched too; " if summary.get("data_read")
               else "")
            + "the search repairs pairs from the data, but an MSE plateau around 0.03-0.5 "
            "usually means wrong pairs")


@main.command()
@click.argument("pieces_dir", type=click.Path(path_type=Path))
@data_option
@click.option("--rows", type=click.IntRange(min=16), default=128, show_default=True,
              help="Rows the search starts on (grown x4 when it fits them but not all rows).")
@click.option("--seed-order", "seed",
              type=click.Choice(["auto", "greedy", "delta", "wout", "pursuit", "drift"]),
              default="auto", show_default=True,
              help="Seed order: greedy (smallest residual next), delta (residual norm on the "
                   "inputs), wout (ascending ||W_out||_F), pursuit (the block that best fits "
                   "the output next), drift (most moved from PyTorch's initial weight range "
                   "first); auto tries each (all but pursuit also reversed), best first.")
@click.option("--time-limit", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds of search before giving up (best answer reported, exit 1); "
                   "inf: --max-evals is the budget and the run reads no clock (repeatable).")
@click.option("--max-evals", type=click.IntRange(min=1), default=None,
              help="Budget of block evaluations (one block on the search rows); default: none.")
@click.option("--random-seed", type=int, default=0, show_default=True,
              help="Seed of the iterated local search's kicks and the relaxation (a run "
                   "repeats exactly under --time-limit inf with --max-evals).")
@click.option("--pairs", "pairs_file", type=click.Path(path_type=Path), default=None,
              help="JSON list of known [input piece, output piece] pairs (may be partial).")
@click.option("--start", "start_file", type=click.Path(path_type=Path), default=None,
              help="Start from this answer (the -o file, --json output or answer.json of an "
                   "earlier run, or a JSON list of 2n+1 pieces), e.g. to resume a search.")
@click.option("--relax-after", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="Once the seeds' descents are done and this share of the budget has "
                   "passed uncertified, reorder the best answer by a continuous (Sinkhorn) "
                   "relaxation fitted to the data, with up to 2/3 of the budget left "
                   "(skipped if under half its schedule fits), and search on from it too; "
                   "repeated, narrower, after as much of the budget again (while pairs read "
                   "from the data are in play it fits the pairs too and runs first, from "
                   "uniform order logits); 1 or more: never.")
@click.option("--no-data", is_flag=True,
              help="Order by the weights alone (no CSV): an uncertified guess, exit 1.")
@click.option("--cuda", "use_cuda", is_flag=True,
              help="Run the kernels on an NVIDIA GPU (numba.cuda); exit 2 without one.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default=None,
              help="Kernel backend; auto uses the GPU when one is usable, else the CPU.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Also write the answer (or the JSON object with --json) to this file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def solve(pieces_dir: Path, data: Path | None, rows: int, seed: str, time_limit: float,
          max_evals: int | None, random_seed: int, pairs_file: Path | None,
          start_file: Path | None, relax_after: float, no_data: bool,
          use_cuda: bool, device: str | None, as_json: bool, output: Path | None,
          quiet: bool) -> None:
    """Solve the pieces in PIECES_DIR (or its parent) and print the permutation."""
    from ._kernels import precompile
    from .io import find_pieces_folder, load_pieces
    from .solve import SearchOptions, guess_without_data, solve_loaded

    try:
        started = time.perf_counter()
        options = SearchOptions(rows=rows, seed=seed, time_limit=time_limit,
                                random_seed=random_seed,
                                known_pairs=_read_pairs(pairs_file),
                                start=_read_start(start_file), relax_after=relax_after,
                                kernels=_kernel_backend(use_cuda, device),
                                **({} if max_evals is None else {"max_evals": max_evals}))
        if no_data:
            result = guess_without_data(load_pieces(find_pieces_folder(pieces_dir)), options)
            load_seconds = time.perf_counter() - started - sum(result.timings.values())
        else:
            with precompile.in_background(options.kernels == "cpu"):  # empty cache: 2 compilers
                pieces, loaded = _load(pieces_dir, data)
                load_seconds = time.perf_counter() - started
                result = solve_loaded(pieces, loaded, options, progress=_progress(quiet))
    except DropnetError as exc:
        _fail(str(exc))
    except RuntimeError as exc:
        if "no usable CUDA GPU" not in str(exc):
            raise
        _fail(str(exc).splitlines()[0])
    result.timings = {"load": load_seconds, **result.timings}
    warning = pairing_warning(result.pairing)
    if warning and not quiet:
        click.echo(warning, err=True)
    payload = result.to_json()
    payload["sha256"] = answer_sha256(result.permutation)
    text = json.dumps(payload) if as_json else _solve_text(result, payload["sha256"])
    click.echo(text)
    if output is not None:
        try:
            output.write_text((text if as_json else answer_text(result.permutation)) + "\n")
        except OSError as exc:
            _fail(f"{output}: cannot write ({exc.strerror})")
    sys.exit(EXIT_CERTIFIED if result.certified else EXIT_UNCERTIFIED)


def _kernel_backend(use_cuda: bool, device: str | None) -> str:
    """cpu, or cuda for --cuda / --device cuda (refused without a GPU: no silent fallback),
    or whichever is usable for --device auto."""
    if use_cuda and device not in (None, "cuda"):
        raise InputError("--cuda contradicts --device " + str(device))
    choice = "cuda" if use_cuda else (device or "cpu")
    if choice == "cpu":
        return "cpu"
    from ._kernels import backend

    cuda = backend("cuda")
    if cuda.is_available():
        return "cuda"
    if choice == "auto":
        return "cpu"
    raise InputError("--cuda: no usable CUDA GPU (numba.cuda found none); "
                     "use --device auto to fall back to the CPU")


def _read_start(path: Path | None) -> tuple:
    """An answer to start from, read as ``verify`` reads one (:func:`parse_permutation`:
    JSON list or object, or indices separated by commas or spaces); of a text answer only
    the first line, so what ``solve`` prints works as well as what ``-o`` writes."""
    from .verify import parse_permutation

    if path is None:
        return ()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    if not text.lstrip().startswith(("[", "{")):
        text = next(iter(text.strip().splitlines()), "")
    try:
        start = tuple(parse_permutation(text))
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    if not start:
        raise InputError(f"{path}: no answer in it (piece indices, or JSON with a permutation)")
    return start


def _read_pairs(path: Path | None) -> tuple:
    """Known pairs from a JSON file: [[input piece, output piece], ...]."""
    if path is None:
        return ()
    try:
        pairs = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    except ValueError:
        raise InputError(f"{path}: not JSON") from None
    if not isinstance(pairs, list):
        raise InputError(f"{path}: expected a JSON list of [input piece, output piece] pairs")
    return tuple(tuple(p) if isinstance(p, list) else p for p in pairs)


def _solve_text(result, digest: str) -> str:
    if result.mse is None:
        status = "NOT certified: ordered from the weights alone (--no-data), a guess"
        return "\n".join([answer_text(result.permutation), f"sha256: {digest}", status])
    if result.certified:
        status = f"certified (tolerance {result.tolerance:.2g})"
    elif not result.certifiable:
        status = "NOT certifiable: the data has no 'pred' column, so 'true' was fitted"
    else:
        status = f"NOT certified (tolerance {result.tolerance:.2g})"
    target = "pred" if result.certifiable else "true"
    lines = [answer_text(result.permutation), f"sha256: {digest}",
             f"MSE vs {target}: {result.mse:.4g}  {status}"]
    if result.mse_true is not None and result.certifiable:
        lines.append(f"MSE vs true: {result.mse_true:.4g}  (sanity: the model's own error)")
    p = result.pairing
    lines.append(f"pairing: matched ratio >= {p['matched_min']:.3g}, unmatched <= "
                 f"{p['unmatched_max']:.3g}; seed {result.seed}, {result.search['rounds']} "
                 f"search rounds")
    lines.append("timings: " + ", ".join(f"{k} {v:.3f}s" for k, v in result.timings.items()))
    if result.certifiable and not result.certified:
        lines.append("not certified within the budget: a larger --time-limit (or --max-evals) "
                     "may certify it; --start FILE goes on from this answer (saved with -o FILE)")
    return "\n".join(lines)


@main.command()
@click.argument("pieces_dir", type=click.Path(path_type=Path))
@data_option
@click.option("--perm", default=None, help="The answer: comma-separated piece indices.")
@click.option("--perm-file", type=click.Path(path_type=Path), default=None,
              help="A file holding the answer (text, a JSON list, or solve's --json output).")
@click.option("--expect-sha256", default=None, help="Compare the answer's digest with this.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def verify(pieces_dir: Path, data: Path | None, perm: str | None, perm_file: Path | None,
           expect_sha256: str | None, as_json: bool) -> None:
    """Check an answer: valid permutation, MSE vs pred and true, certified, SHA-256.

    The digest is SHA-256 of the answer written as comma-separated indices without spaces
    (what the puzzle's checker compares). Exit 0 certified (and digest matching when
    --expect-sha256 is given), 1 otherwise, 2 bad input."""
    from .verify import parse_permutation, verify as run_verify

    if (perm is None) == (perm_file is None):
        _fail("give exactly one of --perm and --perm-file")
    try:
        if perm_file is not None:
            try:
                perm = perm_file.read_text()
            except OSError as exc:
                _fail(f"{perm_file}: cannot read ({exc.strerror})")
        pieces, loaded = _load(pieces_dir, data)
        check = run_verify(pieces, loaded, parse_permutation(perm))
    except DropnetError as exc:
        _fail(str(exc))
    payload = check.to_json()
    matches = None if expect_sha256 is None else check.sha256 == expect_sha256.strip().lower()
    payload["sha256_matches"] = matches
    if as_json:
        click.echo(json.dumps(payload))
    else:
        target = "pred" if check.certifiable else "true"
        state = "certified" if check.certified else "NOT certified"
        click.echo(f"valid permutation of {len(check.permutation)} pieces")
        click.echo(f"MSE vs {target}: {check.mse:.4g}  {state} (tolerance {check.tolerance:.2g})")
        if check.mse_true is not None and check.certifiable:
            click.echo(f"MSE vs true: {check.mse_true:.4g}  (sanity: the model's own error)")
        click.echo(f"sha256: {check.sha256}")
        if matches is not None:
            click.echo("sha256 matches the expected digest" if matches
                       else "sha256 does NOT match the expected digest")
    ok = check.certified and matches is not False
    sys.exit(EXIT_CERTIFIED if ok else EXIT_UNCERTIFIED)


@main.command()
@click.argument("pieces_dir", type=click.Path(path_type=Path))
@data_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def inspect(pieces_dir: Path, data: Path | None, as_json: bool) -> None:
    """What was found (pieces, shapes, formats, data) and the pairing signal, without solving."""
    from collections import Counter

    from .pairing import pair_by_dominance
    from .roles import assign_roles

    try:
        pieces, loaded = _load(pieces_dir, data)
        stack = assign_roles(pieces)
    except DropnetError as exc:
        _fail(str(exc))
    summary = pair_by_dominance(stack).summary()
    shapes = Counter(p.weight.shape for p in pieces.items)
    info = {
        "pieces_folder": str(pieces.folder), "pieces": len(pieces), "formats": list(pieces.formats),
        "shapes": {f"{a}x{b}": c for (a, b), c in sorted(shapes.items())},
        "blocks": stack.blocks, "width": stack.width, "hidden": stack.hidden,
        "data": str(loaded.path), "rows": loaded.rows, "input_columns": len(loaded.columns),
        "has_pred": loaded.pred is not None, "has_true": loaded.true is not None,
        "pairing": summary, "warnings": [w for w in [pairing_warning(summary)] if w],
    }
    if loaded.pred is None:
        info["warnings"].append("no 'pred' column: answers can be fitted to 'true' but not certified")
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"{info['pieces']} pieces in {info['pieces_folder']} ({', '.join(info['formats'])}): "
               + ", ".join(f"{c} of {s}" for s, c in info["shapes"].items()))
    click.echo(f"{stack.blocks} blocks, width {stack.width}, hidden {stack.hidden}")
    click.echo(f"data {info['data']}: {loaded.rows} rows, {len(loaded.columns)} input columns, "
               f"pred {'yes' if info['has_pred'] else 'NO'}, true {'yes' if info['has_true'] else 'no'}")
    click.echo(f"pairing: matched ratio {summary['matched_min']:.3g}.., unmatched ..{summary['unmatched_max']:.3g}"
               f" (margin x{summary['margin']:.2f}), matched traces {summary['matched_trace_range'][0]:.3g}"
               f" to {summary['matched_trace_range'][1]:.3g}")
    for warning in info["warnings"]:
        click.echo(warning)


def _register_commands() -> None:
    """Commands that live in their own modules (each imports its heavy parts lazily)."""
    from .cli_generate import demo, drop
    from .cli_report import report

    for command in (drop, demo, report):
        main.add_command(command)


_register_commands()


def run() -> None:
    """The ``dropnet`` console command: :func:`main`, then a fast exit.

    Once a command has written its output and chosen its exit code nothing is left to do, but
    the interpreter's teardown (freeing Numba's compiled modules and LLVM objects) would still
    take about 0.5 s of every ``dropnet solve`` on the project's machine. So this flushes the
    streams, runs the ``atexit`` handlers and leaves with ``os._exit``. Errors keep their
    traceback; embedders and tests call :func:`main`, which exits normally."""
    try:
        main()
        code: int = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            click.echo(exc.code, err=True)
            code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (``| head``): nothing more to say
            pass
    atexit._run_exitfuncs()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
