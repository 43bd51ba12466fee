"""The ``dropnet`` command line: parses arguments, calls the Python API, prints.

Exit codes: 0 certified, 1 solved but not certified, 2 bad input or usage.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import click

from .errors import DropnetError

EXIT_CERTIFIED, EXIT_UNCERTIFIED, EXIT_BAD_INPUT = 0, 1, 2


def answer_text(permutation: list[int]) -> str:
    """The answer as the puzzle's checker hashes it: indices joined by commas, no spaces."""
    return ",".join(str(int(i)) for i in permutation)


def answer_sha256(permutation: list[int]) -> str:
    """SHA-256 hex digest of :func:`answer_text`."""
    return hashlib.sha256(answer_text(permutation).encode("ascii")).hexdigest()


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


@main.command()
@click.argument("pieces_dir", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="CSV with input columns, pred and true [default: historical_data.csv beside "
                   "the pieces or in their parent].")
@click.option("--rows", type=click.IntRange(min=16), default=128, show_default=True,
              help="Rows the search starts on (grown x4 while not certified).")
@click.option("--seed-order", "seed", type=click.Choice(["auto", "greedy", "delta", "wout"]),
              default="auto", show_default=True,
              help="Seed order: greedy (smallest residual next), delta (residual norm on the "
                   "inputs), wout (ascending ||W_out||_F); auto tries them in that order.")
@click.option("--time-limit", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds of search before giving up (best answer reported, exit 1).")
@click.option("--max-evals", type=click.IntRange(min=1), default=10**9,
              help="Budget of block evaluations (one block on the search rows).")
@click.option("--random-seed", type=int, default=0, show_default=True,
              help="Seed of the iterated local search's kicks (results are deterministic).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Also write the answer (or the JSON object with --json) to this file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def solve(pieces_dir: Path, data: Path | None, rows: int, seed: str, time_limit: float,
          max_evals: int, random_seed: int, as_json: bool, output: Path | None,
          quiet: bool) -> None:
    """Solve the pieces in PIECES_DIR (or its parent) and print the permutation."""
    from .solve import solve as run_solve

    try:
        result = run_solve(pieces_dir, data, rows=rows, seed=seed, time_limit=time_limit,
                           max_evals=max_evals, random_seed=random_seed,
                           progress=_progress(quiet))
    except DropnetError as exc:
        _fail(str(exc))
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


def _solve_text(result, digest: str) -> str:
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
    return "\n".join(lines)


def _register_optional_commands() -> None:
    try:
        from .cli_generate import demo, drop
    except ImportError:  # pragma: no cover - generator not present
        return
    main.add_command(drop)
    main.add_command(demo)


_register_optional_commands()


if __name__ == "__main__":  # pragma: no cover
    main()
