"""A one-file HTML report of a solved network: figures of the pairing signal, the blocks
against recovered depth and the search, plus a short text summary.

:func:`collect` gathers the numbers (no plotting library needed); one function per figure
draws a :class:`matplotlib.figure.Figure` (matplotlib is the optional ``plot`` extra and is
imported inside those functions); :func:`render_html` embeds PNGs as base64 data URIs.
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field

import numpy as np

from .io import Data, Pieces
from .pairing import pair_by_dominance
from .roles import assign_roles
from .verify import answer_sha256, sequences, verify

# name -> (drawing function name, caption); the order of the figures in the report
FIGURES = {
    "pairing": ("ratio_heatmap", "Dominance ratio |tr(W_out W_in)| / ||W_out W_in||_F of every "
                "input layer against every output layer, both ordered by recovered depth: the "
                "answer's pairs sit on the diagonal (white squares)."),
    "ratios": ("ratio_histograms", "Dominance ratios of the answer's pairs against all other "
               "input/output combinations; the gap between the smallest matched and the largest "
               "unmatched ratio is what makes the pairing safe."),
    "blocks": ("block_profile", "Per block, against recovered depth: the output layer's "
               "Frobenius norm and the mean residual norm ||block(x) - x|| on the data, "
               "x being the activations the block sees at its recovered position."),
    "search": ("mse_history", "MSE of the accepted search moves, round by round (on the "
               "search rows), and the final MSE on all rows with the certification tolerance."),
}


@dataclass
class ReportData:
    """Everything the figures and the summary show. Arrays are in recovered depth order:
    ``in_ids``/``out_ids`` (n,) piece indices of block k's input and output layer;
    ``ratio`` (n, n) dominance ratio [input of block r, output of block c] (the answer's
    pairs on the diagonal); ``dominance_col`` (n,) the column the dominance assignment alone
    would pair each row with; ``wout_norm`` and ``residual`` (n,) per block."""

    in_ids: np.ndarray
    out_ids: np.ndarray
    ratio: np.ndarray
    dominance_col: np.ndarray
    wout_norm: np.ndarray
    residual: np.ndarray
    mse: float
    mse_true: float | None
    certified: bool
    certifiable: bool
    tolerance: float
    mse_history: list[float]
    summary: dict[str, str] = field(default_factory=dict)

    @property
    def blocks(self) -> int:
        return int(self.in_ids.shape[0])

    @property
    def matched(self) -> np.ndarray:
        """Ratios of the answer's pairs (the diagonal), (n,)."""
        return np.diag(self.ratio).copy()

    @property
    def unmatched(self) -> np.ndarray:
        """Ratios of every other input/output combination, (n * (n - 1),)."""
        return self.ratio[~np.eye(self.blocks, dtype=bool)]

    @property
    def repaired(self) -> int:
        """Blocks whose output layer differs from what the dominance assignment chose."""
        return int(np.sum(self.dominance_col != np.arange(self.blocks)))


def residual_profile(weights, x: np.ndarray, seq_in: np.ndarray,
                     seq_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per block in execution order: ||W_out||_F and the mean over rows of
    ||block(x_k) - x_k||_2, x_k the float64 activations entering block k, each (n,)."""
    x = np.array(x, dtype=np.float64)
    wout = np.array([np.linalg.norm(weights.w_out[j]) for j in seq_out])
    residual = np.empty(len(seq_in))
    for k, (i, j) in enumerate(zip(seq_in, seq_out)):
        hidden = np.maximum(x @ weights.w_in[i].T + weights.b_in[i], 0.0)
        step = hidden @ weights.w_out[j].T + weights.b_out[j]
        residual[k] = float(np.mean(np.linalg.norm(step, axis=1)))
        x += step
    return wout, residual


def collect(pieces: Pieces, data: Data, permutation: list[int], *,
            mse_history: list[float] | None = None, timings: dict | None = None,
            source: str = "solved") -> ReportData:
    """The report's numbers for the answer ``permutation`` (checked like ``verify``: MSE vs
    pred and true on all rows in float64); ``mse_history`` from the search if there was one,
    ``timings`` (stage -> seconds) for the summary, ``source`` says where the answer came from."""
    check = verify(pieces, data, permutation)  # validates; MSE and certificate as verify
    stack = assign_roles(pieces)
    seq_in, seq_out = sequences(stack, permutation)
    pairing = pair_by_dominance(stack)
    column_of_out = np.empty(stack.blocks, dtype=np.int64)
    column_of_out[seq_out] = np.arange(stack.blocks)
    wout, residual = residual_profile(stack.weights, data.x, seq_in, seq_out)
    report = ReportData(
        in_ids=stack.in_ids[seq_in], out_ids=stack.out_ids[seq_out],
        ratio=pairing.ratio[np.ix_(seq_in, seq_out)],
        dominance_col=column_of_out[pairing.out_for_in[seq_in]], wout_norm=wout,
        residual=residual, mse=check.mse, mse_true=check.mse_true, certified=check.certified,
        certifiable=check.certifiable, tolerance=check.tolerance,
        mse_history=list(mse_history or []))
    report.summary = summary(report, pieces, data, permutation, source, timings or {})
    return report


def summary(report: ReportData, pieces: Pieces, data: Data, permutation: list[int],
            source: str, timings: dict) -> dict[str, str]:
    """The text summary as label -> value strings, in display order."""
    if report.certified:
        state = f"yes (MSE {report.mse:.3g} <= tolerance {report.tolerance:.3g})"
    elif not report.certifiable:
        state = "no: the data has no 'pred' column, so 'true' was fitted"
    else:
        state = f"NO (MSE {report.mse:.3g} > tolerance {report.tolerance:.3g})"
    low, high = float(report.matched.min()), float(report.unmatched.max(initial=0))
    lines = {"pieces": f"{len(pieces)} in {pieces.folder}",
             "blocks": f"{report.blocks} (width {data.x.shape[1]}, {data.rows} data rows)",
             "answer": source}
    if report.certifiable:
        lines["MSE vs pred"] = f"{report.mse:.4g}"
        if report.mse_true is not None:
            lines["MSE vs true"] = f"{report.mse_true:.4g} (the model's own error)"
    else:
        lines["MSE vs true"] = f"{report.mse:.4g}"
    lines["certified"] = state
    lines["sha256"] = answer_sha256(permutation)
    lines["pairing margin"] = (f"x{low / max(high, 1e-300):.3g} (smallest matched ratio "
                               f"{low:.3g}, largest unmatched {high:.3g}); {report.repaired} "
                               "pair(s) differ from the dominance assignment")
    lines["search"] = (f"{len(report.mse_history)} accepted rounds" if report.mse_history
                       else "none (answer given)" if source.startswith("given") else "0 rounds")
    if timings:
        lines["timings"] = ", ".join(f"{k} {v:.2f}s" for k, v in timings.items())
    return lines


def _depth_ticks(n: int) -> np.ndarray:
    """Depth tick positions that stay legible: every block up to 16, else every 5th/10th."""
    return np.arange(0, n, 1 if n <= 16 else 5 if n <= 80 else 10)


def ratio_heatmap(report: ReportData):
    """Heatmap of the dominance ratio, rows = input layers, columns = output layers, both in
    recovered depth order (answer's pairs on the diagonal, outlined; where the dominance
    assignment alone chose differently, an x marks its choice). Left and bottom ticks name
    the pieces, the top axis gives the depth; a square-root colour scale keeps the spread of
    the (small) unmatched ratios visible next to the large matched ones."""
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    n = report.blocks
    size = min(12.0, 6.0 + 0.13 * n)
    fig = Figure(figsize=(size + 1.6, size + 0.4), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(report.ratio, cmap="viridis", interpolation="nearest",
                      norm=PowerNorm(0.5, vmin=0.0, vmax=float(report.ratio.max()) or 1.0))
    for k in range(n):
        ax.add_patch(Rectangle((k - 0.5, k - 0.5), 1, 1, fill=False, edgecolor="white", lw=1.0))
    wrong = np.flatnonzero(report.dominance_col != np.arange(n))
    if wrong.size:
        ax.plot(report.dominance_col[wrong], wrong, "x", color="red", ms=7, mew=1.5,
                label=f"the dominance assignment's own choice ({wrong.size} rows where it "
                      "differs from the answer)")
        fig.legend(loc="outside lower center", fontsize=9)
    fontsize = 8 if n <= 24 else 6.5 if n <= 64 else 5
    ticks = np.arange(n) if n <= 64 else np.arange(0, n, 2)
    ax.set_xticks(ticks, [str(i) for i in report.out_ids[ticks]], rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, [str(i) for i in report.in_ids[ticks]], fontsize=fontsize)
    ax.set_xlabel("output layer (piece index), ordered by recovered depth \u2192")
    ax.set_ylabel("input layer (piece index), ordered by recovered depth \u2192")
    depth = ax.secondary_xaxis("top")
    depth.set_xticks(_depth_ticks(n))
    depth.set_xlabel("recovered depth (block position, 0 = first)")
    ax.set_title(f"Dominance ratio |tr(W_out W_in)| / \u2016W_out W_in\u2016_F, {n} blocks\n"
                 "white squares: the answer's pairs")
    fig.colorbar(image, ax=ax, shrink=0.8, label="dominance ratio (square-root scale)")
    return fig


def ratio_histograms(report: ReportData):
    """Histograms of matched (the answer's pairs) and unmatched dominance ratios on shared
    bins, counts on a log axis, with the gap between them shaded and labelled."""
    from matplotlib.figure import Figure

    matched, unmatched = report.matched, report.unmatched
    fig = Figure(figsize=(9, 4.8), layout="constrained")
    ax = fig.add_subplot()
    top = float(max(matched.max(), unmatched.max(initial=0)))
    bins = np.linspace(0.0, top * 1.02 + 1e-12, 60)
    ax.hist(unmatched, bins=bins, color="tab:gray", alpha=0.7,
            label=f"unmatched ({unmatched.size})")
    ax.hist(matched, bins=bins, color="tab:orange", alpha=0.6, edgecolor="tab:orange",
            linewidth=1.2, label=f"matched: the answer's pairs ({matched.size})")
    ax.set_yscale("log")
    lo, hi = float(unmatched.max(initial=0)), float(matched.min())
    if hi > lo:
        ax.axvspan(lo, hi, color="tab:green", alpha=0.12)
        text = f"gap: x{hi / max(lo, 1e-300):.3g}\n{lo:.3g} \u2192 {hi:.3g}"
    else:
        ax.axvspan(hi, lo, color="tab:red", alpha=0.15)
        text = f"overlap: matched min {hi:.3g}\n< unmatched max {lo:.3g}"
    ax.axvline(lo, color="tab:gray", ls="--", lw=1)
    ax.axvline(hi, color="tab:orange", ls="--", lw=1)
    ax.text((lo + hi) / 2, 0.97, text, transform=ax.get_xaxis_transform(), ha="center",
            va="top", fontsize=9, bbox={"facecolor": "white", "alpha": 0.85, "lw": 0})
    ax.set_xlabel("dominance ratio |tr(W_out W_in)| / \u2016W_out W_in\u2016_F")
    ax.set_ylabel("count of input/output combinations (log)")
    ax.set_ylim(0.5, ax.get_ylim()[1] * 4)  # headroom for the labels above the bars
    ax.set_title("Matched vs unmatched dominance ratios")
    ax.legend(loc="upper right", fontsize=9)
    return fig


def block_profile(report: ReportData):
    """Two panels sharing the depth axis: ||W_out||_F per block and the mean residual norm
    ||block(x) - x|| on the data at the block's recovered position."""
    from matplotlib.figure import Figure

    n = report.blocks
    depth = np.arange(n)
    fig = Figure(figsize=(max(8.0, 0.2 * n + 3), 6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(depth, report.wout_norm, "o-", color="tab:blue", ms=4)
    top.set_ylabel("\u2016W_out\u2016_F")
    top.set_title("Output-layer norm and residual size against recovered depth")
    bottom.plot(depth, report.residual, "o-", color="tab:purple", ms=4)
    bottom.set_ylabel("mean \u2016block(x) \u2212 x\u2016\non the data")
    bottom.set_xlabel("recovered depth (block position, 0 = first)")
    ticks = _depth_ticks(n)
    bottom.set_xticks(ticks)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.set_xlim(-0.5, n - 0.5)
    return fig


def mse_history(report: ReportData):
    """MSE (log scale) of the accepted search moves against round, with the final MSE on all
    rows and the certification tolerance as horizontal lines."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9, 5.2), layout="constrained")
    ax = fig.add_subplot()
    floor = np.finfo(float).tiny
    history = np.maximum(np.asarray(report.mse_history, dtype=float), floor)
    if history.size:
        rounds = np.arange(1, history.size + 1)
        ax.plot(rounds, history, "o-" if history.size <= 60 else "-", color="tab:blue", ms=4,
                label="accepted move (MSE on the search rows)")
        ax.set_xlim(0.5, history.size + 0.5)
    else:
        ax.text(0.5, 0.5, "no search history (answer given)", transform=ax.transAxes,
                ha="center", va="center", color="gray")
        ax.set_xticks([])
    state = "certified" if report.certified else "not certified"
    ax.axhline(max(report.mse, floor), color="tab:green" if report.certified else "tab:red",
               lw=1.5, label=f"final MSE on all rows: {report.mse:.3g} ({state})")
    if report.certifiable:
        ax.axhline(report.tolerance, color="black", ls=":", lw=1,
                   label=f"certification tolerance {report.tolerance:.3g}")
    ax.set_yscale("log")
    ax.set_xlabel("search round (accepted move)")
    ax.set_ylabel("MSE vs " + ("pred" if report.certifiable else "true") + " (log)")
    ax.set_title("Search progress")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, which="major")
    fig.legend(loc="outside lower center", ncols=2, fontsize=9)
    return fig


def figure_png(fig, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (drawn with the Agg canvas, no GUI)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def render_figures(report: ReportData) -> dict[str, bytes]:
    """Every figure of :data:`FIGURES` as PNG bytes, in report order."""
    drawers = {"ratio_heatmap": ratio_heatmap, "ratio_histograms": ratio_histograms,
               "block_profile": block_profile, "mse_history": mse_history}
    return {name: figure_png(drawers[drawer](report)) for name, (drawer, _) in FIGURES.items()}


def render_html(report: ReportData, images: dict[str, bytes], title: str = "dropnet report") -> str:
    """One self-contained HTML page: the summary table, then each PNG as a data URI."""
    rows = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                     for k, v in report.summary.items())
    figures = "\n".join(
        f'<figure id="{name}"><img alt="{name}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode("ascii")}">'
        f"<figcaption>{html.escape(FIGURES[name][1])}</figcaption></figure>"
        for name, png in images.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 1200px; margin: 1em auto; padding: 0 1em; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ text-align: left; padding: 0.2em 0.8em; border-bottom: 1px solid #ddd;
         vertical-align: top; }}
td {{ font-family: monospace; word-break: break-all; }}
figure {{ margin: 0 0 2em 0; }} img {{ max-width: 100%; }}
figcaption {{ color: #444; font-size: 0.9em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<table>
{rows}
</table>
{figures}
</body></html>
"""
