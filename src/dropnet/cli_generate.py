"""Command-line front ends of the generator: ``drop`` (train and shatter a network) and
``demo`` (drop a small one, solve it, compare with the truth).

Both are plain :class:`click.Command` objects that :mod:`dropnet.cli` registers on its
group. Errors are reported as one line on stderr with exit status 2.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import click

from .errors import DropnetError

# Choices spelled out so that `dropnet --help` and `dropnet solve` never import the trainer
# (scipy.stats and friends cost about a second); tests/test_generate.py checks they match
# dropnet.generate.RECIPES, dropnet.train.OPTIMIZERS and dropnet.writers.FORMATS.
REGIMES = ("strong", "puzzle", "weak", "strong_adam")
OPTIMIZERS = ("adam", "sgd")
FORMATS = ("pth", "npz", "safetensors")
# as on the main group, so that the commands show the same help when invoked on their own
# (click caches a command's help option the first time it is built)
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}

EXIT_BAD_INPUT = 2
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.03}
_RUNTIME_ERRORS = (DropnetError, ValueError, OSError, FloatingPointError)


def _fail(message: str) -> None:
    """Print a one-line error and exit with status 2."""
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)


class _EpochBar:
    """A stderr progress bar over epochs (``update(epoch, loss)``), or nothing when quiet."""

    def __init__(self, epochs: int, quiet: bool):
        self.bar = None
        if not quiet and sys.stderr.isatty():
            self.bar = click.progressbar(length=epochs, label="training", file=sys.stderr,
                                         show_pos=True, item_show_func=lambda s: s)
            self.bar.__enter__()
        self.done = 0

    def update(self, epoch: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(epoch - self.done, f"loss {loss:.4g}")
            self.done = epoch

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _train_and_drop(out_dir: Path, config, fmt: str, seed: int, quiet: bool,
                    overwrite: bool):
    """Run :func:`dropnet.generate.drop` with a progress bar; one-line errors."""
    from .generate import drop as drop_network

    bar = _EpochBar(config.epochs, quiet)
    try:
        return drop_network(out_dir, config, fmt=fmt, seed=seed, progress=bar.update,
                            overwrite=overwrite)
    except FileExistsError as exc:
        raise click.UsageError(f"{exc} (use --overwrite)") from None
    except _RUNTIME_ERRORS as exc:
        _fail(str(exc))
    finally:
        bar.close()
    raise AssertionError("unreachable")  # pragma: no cover


def summary_lines(s) -> list[str]:
    """Human-readable lines describing a dropped network."""
    h = s.history
    n = s.signal.blocks
    return [
        f"dropped {2 * n + 1} pieces into {s.out_dir / 'pieces'}  "
        f"(answer: {s.out_dir / 'answer.json'})",
        f"training: {h.epochs} epochs in {h.seconds:.1f}s ({h.stopped}), final loss "
        f"{h.loss[-1]:.4g}; MSE(pred, true) {s.pred_mse:.4g}",
        f"signal: {s.signal.describe()}",
        f"reassembly with the true permutation: MSE vs pred {s.reassembly_mse:.3g}",
    ]


@click.command("drop", context_settings=CONTEXT_SETTINGS)
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--blocks", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--width", type=click.IntRange(min=1), default=24, show_default=True,
              help="Input width d.")
@click.option("--hidden", type=click.IntRange(min=1), default=48, show_default=True,
              help="Hidden size h (h = d gives square pieces whose roles the solver must infer).")
@click.option("--rows", type=click.IntRange(min=1), default=None,
              help="Rows of data [default: 10000 for --regime puzzle, else 2000].")
@click.option("--regime", type=click.Choice(REGIMES), default="strong",
              show_default=True,
              help="Recipe filling the options not given: strong (SGD on fresh rows, 40 "
                   "epochs: pairs by dominance ratio), strong_adam (Adam, 100 epochs), puzzle (150 epochs of 10k rows: traces "
                   "like the published puzzle's; minutes), weak (3 epochs of Adam: no signal).")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Learning rate [default: the recipe's; 1e-3 for adam, 0.03 for sgd].")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=None,
              help="Decoupled (AdamW-style) weight decay.")
@click.option("--epochs", type=click.IntRange(min=1), default=None)
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the data, the initialisation, the batches and the shuffle.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="pth", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace piece files already in OUT_DIR/pieces.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar on stderr.")
def drop(out_dir: Path, blocks: int, width: int, hidden: int, rows: int | None, regime: str,
         optimizer: str | None, lr: float | None, weight_decay: float | None,
         epochs: int | None, batch_size: int | None, seed: int, fmt: str, overwrite: bool,
         quiet: bool) -> None:
    """Train a residual MLP and drop it into OUT_DIR: shuffled pieces/, historical_data.csv
    and answer.json (the true permutation, kept outside pieces/)."""
    from .generate import RECIPES, recipe

    if optimizer is not None and lr is None and optimizer != RECIPES[regime]["optimizer"]:
        lr = DEFAULT_LR[optimizer]  # the recipe's rate belongs to its own optimizer
    given = {"rows": rows, "optimizer": optimizer, "lr": lr, "weight_decay": weight_decay,
             "epochs": epochs, "batch_size": batch_size}
    chosen = {"rows": RECIPES[regime].get("rows", 2000),
              **{k: v for k, v in given.items() if v is not None}}
    config = recipe(regime, blocks=blocks, width=width, hidden=hidden, seed=seed, **chosen)
    summary = _train_and_drop(out_dir, config, fmt, seed, quiet, overwrite)
    for line in summary_lines(summary):
        click.echo(line)


def _load_solver() -> Callable:
    try:
        from .solve import solve
    except ImportError as exc:
        _fail(f"the solver is not available ({exc})")
    return solve


@click.command("demo", context_settings=CONTEXT_SETTINGS)
@click.option("--blocks", type=click.IntRange(min=2), default=16, show_default=True)
@click.option("--width", type=click.IntRange(min=1), default=24, show_default=True)
@click.option("--hidden", type=click.IntRange(min=1), default=48, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Drop into this folder and keep it (default: a temporary folder).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar on stderr.")
def demo(blocks: int, width: int, hidden: int, seed: int, keep: Path | None,
         quiet: bool) -> None:
    """Train a small network, drop it, solve it and compare the answer with the truth."""
    from ._kernels import precompile
    from .generate import recipe

    solve = _load_solver()
    config = recipe("strong", blocks=blocks, width=width, hidden=hidden, rows=2000, seed=seed)
    # on an empty Numba cache, the solver's late kernels compile in a helper during training
    with precompile.in_background(), tempfile.TemporaryDirectory(prefix="dropnet-demo-") as tmp:
        out_dir = keep if keep is not None else Path(tmp)
        summary = _train_and_drop(out_dir, config, "pth", seed, quiet, keep is not None)
        for line in summary_lines(summary):
            click.echo(line)
        started = time.perf_counter()
        try:
            result = solve(out_dir / "pieces", out_dir / "historical_data.csv")
        except _RUNTIME_ERRORS as exc:
            _fail(f"solver failed: {exc}")
        seconds = time.perf_counter() - started
    truth = summary.permutation
    click.echo(f"answer: {','.join(map(str, result.permutation))}")
    click.echo(f"truth:  {','.join(map(str, truth))}")
    verdict = "MATCH" if list(result.permutation) == list(truth) else "MISMATCH"
    click.echo(f"{verdict}: solved in {seconds:.2f}s, MSE vs pred {result.mse:.3g}, "
               f"certified {result.certified}")
    if verdict != "MATCH":
        sys.exit(1)
