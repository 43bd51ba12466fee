"""``dropnet report``: solve (or take a given answer) and write a one-file HTML report.

A plain :class:`click.Command` that :mod:`dropnet.cli` registers on its group. matplotlib is
the optional ``plot`` extra: it is imported when the command runs, and its absence is a
one-line error with exit status 2. Exit codes as ``solve``: 0 certified, 1 not, 2 bad input.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from .errors import DropnetError

EXIT_CERTIFIED, EXIT_UNCERTIFIED, EXIT_BAD_INPUT = 0, 1, 2
MISSING_MATPLOTLIB = "the report needs matplotlib: pip install 'dropnet[plot]'"


def _fail(message: str) -> None:
    """Print a one-line error and exit with status 2."""
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def _use_agg() -> None:
    """Import matplotlib with the non-interactive Agg backend, or fail (exit 2)."""
    try:
        import matplotlib
    except ImportError:
        _fail(MISSING_MATPLOTLIB)
    matplotlib.use("Agg")


def _read_answer(path: Path) -> list[int]:
    """An answer from a file: text '3,1,...', a JSON list, or solve's --json output."""
    from .verify import parse_permutation

    try:
        text = path.read_text()
    except OSError as exc:
        _fail(f"{path}: cannot read ({exc.strerror})")
    except UnicodeDecodeError:
        _fail(f"{path}: not a text file")
    return parse_permutation(text)


def _write(path: Path, payload: str | bytes) -> None:
    try:
        if isinstance(payload, bytes):
            path.write_bytes(payload)
        else:
            path.write_text(payload, encoding="utf-8")
    except OSError as exc:
        _fail(f"{path}: cannot write ({exc.strerror})")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("pieces_dir", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="CSV with input columns, pred and true [default: historical_data.csv beside "
                   "the pieces or in their parent].")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              default=Path("report.html"), show_default=True, help="The HTML file to write.")
@click.option("--png", is_flag=True,
              help="Also write each figure as <output stem>_<figure>.png beside the HTML.")
@click.option("--perm-file", type=click.Path(path_type=Path), default=None,
              help="Report on this answer (text, a JSON list, or solve's --json output) "
                   "instead of solving.")
@click.option("--time-limit", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds of search before giving up (when solving).")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def report(pieces_dir: Path, data: Path | None, output: Path, png: bool,
           perm_file: Path | None, time_limit: float, quiet: bool) -> None:
    """Solve PIECES_DIR (or report on --perm-file) and write an HTML report with figures:
    the dominance-ratio matrix, matched vs unmatched ratios, per-block norms against depth
    and the search's MSE, plus a text summary (MSE, certified, SHA-256, margin, timings)."""
    _use_agg()
    if output.is_dir() or not output.parent.is_dir():
        _fail(f"{output}: cannot write the report there (a folder, or no such folder)")
    from . import report as rep
    from .cli import _load, _progress

    started = time.perf_counter()
    try:
        pieces, loaded = _load(pieces_dir, data)
        timings = {"load": time.perf_counter() - started}
        if perm_file is not None:
            permutation, history, source = _read_answer(perm_file), [], f"given ({perm_file})"
        else:
            from .solve import SearchOptions, solve_loaded

            result = solve_loaded(pieces, loaded, SearchOptions(time_limit=time_limit),
                                  progress=_progress(quiet))
            timings.update(result.timings)
            permutation, history = result.permutation, result.search["mse_history"]
            source = f"solved (seed {result.seed}, {result.search['rounds']} search rounds)"
        t = time.perf_counter()
        facts = rep.collect(pieces, loaded, permutation, mse_history=history, source=source)
        images = rep.render_figures(facts)
        timings["report"] = time.perf_counter() - t
        facts.summary = rep.summary(facts, pieces, loaded, permutation, source, timings)
    except DropnetError as exc:
        _fail(str(exc))
    _write(output, rep.render_html(facts, images, title=f"dropnet report: {pieces.folder}"))
    written = [output]
    if png:
        for name, image in images.items():
            written.append(output.with_name(f"{output.stem}_{name}.png"))
            _write(written[-1], image)
    for label, value in facts.summary.items():
        click.echo(f"{label}: {value}")
    click.echo("wrote " + ", ".join(str(p) for p in written))
    sys.exit(EXIT_CERTIFIED if facts.certified else EXIT_UNCERTIFIED)
