"""``dropnet report``: one self-contained HTML file with embedded PNG figures and a text
summary, --png files beside it, --perm-file, a one-line error (exit 2) when matplotlib is
missing or the input is bad; the numbers behind the figures."""
from __future__ import annotations

import base64
import re
import sys

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("matplotlib")

from dropnet.cli_report import MISSING_MATPLOTLIB, report  # noqa: E402
from dropnet.verify import answer_sha256, answer_text  # noqa: E402

FIGURE_NAMES = ("pairing", "ratios", "blocks", "search")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(*args):
    return CliRunner().invoke(report, [str(a) for a in args])


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def assert_bad_input(result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_report_embeds_figures_and_summary(small_net, tmp_path):
    folder, perm = small_net
    out = tmp_path / "out" / "r.html"
    out.parent.mkdir()
    result = run(folder, "-o", out)
    assert result.exit_code == 0, (result.output, result.exception)
    page = out.read_text()
    images = embedded_pngs(page)
    assert len(images) == len(FIGURE_NAMES)
    assert all(image.startswith(PNG_MAGIC) and len(image) > 1000 for image in images)
    for name in FIGURE_NAMES:
        assert f'id="{name}"' in page
    for fact in ("pieces", "blocks", "MSE vs pred", "MSE vs true", "certified", "sha256",
                 "pairing margin", "timings", answer_sha256(perm)):
        assert fact in page, fact
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")
    assert answer_sha256(perm) in result.output and str(out) in result.output
    assert not list(out.parent.glob("*.png"))  # no --png: nothing else written


def test_png_writes_each_figure_beside_the_html(small_net, tmp_path):
    folder, _ = small_net
    out = tmp_path / "report.html"
    result = run(folder, "-o", out, "--png")
    assert result.exit_code == 0, result.output
    pngs = sorted(p.name for p in tmp_path.glob("report_*.png"))
    assert pngs == sorted(f"report_{name}.png" for name in FIGURE_NAMES)
    embedded = embedded_pngs(out.read_text())
    assert [(tmp_path / f"report_{n}.png").read_bytes() for n in FIGURE_NAMES] == embedded


def test_perm_file_reports_on_a_given_answer(small_net, tmp_path):
    folder, perm = small_net
    answer = tmp_path / "answer.txt"
    answer.write_text(answer_text(perm) + "\n")
    out = tmp_path / "given.html"
    result = run(folder, "--perm-file", answer, "-o", out)
    assert result.exit_code == 0, result.output
    assert "given" in result.output and answer_sha256(perm) in out.read_text()
    wrong = list(perm)
    wrong[0:2], wrong[2:4] = perm[2:4], perm[0:2]
    answer.write_text(answer_text(wrong))
    result = run(folder, "--perm-file", answer, "-o", out)
    assert result.exit_code == 1 and "NO" in result.output  # written, but not certified
    assert len(embedded_pngs(out.read_text())) == len(FIGURE_NAMES)


def test_missing_matplotlib_is_a_one_line_error(small_net, tmp_path, monkeypatch):
    folder, _ = small_net
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    result = run(folder, "-o", tmp_path / "r.html")
    assert_bad_input(result, MISSING_MATPLOTLIB)
    assert "pip install 'dropnet[plot]'" in result.stderr
    assert not (tmp_path / "r.html").exists()


def test_bad_input_exits_2(small_net, tmp_path):
    folder, perm = small_net
    assert_bad_input(run(tmp_path / "absent", "-o", tmp_path / "r.html"), "absent")
    answer = tmp_path / "short.txt"
    answer.write_text(answer_text(perm[:-1]))
    assert_bad_input(run(folder, "--perm-file", answer, "-o", tmp_path / "r.html"), "entries")
    assert_bad_input(run(folder, "--perm-file", tmp_path / "none.txt", "-o", tmp_path / "r.html"),
                     "cannot read")
    assert_bad_input(run(folder, "-o", tmp_path / "no" / "such" / "r.html"), "cannot write")
    (tmp_path / "dir.html").mkdir()
    assert_bad_input(run(folder, "-o", tmp_path / "dir.html"), "cannot write")
    assert not (tmp_path / "r.html").exists()


def test_collected_numbers_match_the_kernels(small_net):
    from dropnet._kernels import backend
    from dropnet.cli import _load
    from dropnet.pairing import pair_by_dominance
    from dropnet.report import collect
    from dropnet.roles import assign_roles
    from dropnet.verify import sequences

    folder, perm = small_net
    pieces, data = _load(folder, None)
    facts = collect(pieces, data, perm, mse_history=[1e-3, 1e-9])
    stack = assign_roles(pieces)
    seq_in, seq_out = sequences(stack, perm)
    ratio = pair_by_dominance(stack).ratio
    assert np.allclose(facts.matched, ratio[seq_in, seq_out])
    assert facts.unmatched.size == facts.blocks * (facts.blocks - 1)
    assert facts.matched.min() > facts.unmatched.max() and facts.repaired == 0
    assert facts.certified and list(facts.in_ids) == perm[0:-1:2]
    acts = backend("cpu").prefix_activations(data.x, stack.weights, seq_in, seq_out)
    expected = np.linalg.norm(acts[1:] - acts[:-1], axis=2).mean(axis=1)
    assert np.allclose(facts.residual, expected, rtol=1e-9)
    assert np.allclose(facts.wout_norm, np.linalg.norm(stack.weights.w_out[seq_out], axis=(1, 2)))


@pytest.mark.slow
def test_puzzle_report_renders(puzzle):
    """The published puzzle solved and reported: 48 blocks, certified, the known digest."""
    from dropnet.cli import _load
    from dropnet.report import collect, render_figures

    digest = "093be1cf2d24094db903cbc3e8d33d306ebca49c6accaa264e44b0b675e7d9c4"
    pieces, data = _load(puzzle, None)
    from dropnet.solve import SearchOptions, solve_loaded

    result = solve_loaded(pieces, data, SearchOptions())
    facts = collect(pieces, data, result.permutation, mse_history=result.search["mse_history"])
    assert facts.blocks == 48 and facts.certified and facts.summary["sha256"] == digest
    assert all(png.startswith(PNG_MAGIC) for png in render_figures(facts).values())


def test_data_without_pred_is_reported_as_not_certifiable(small_net, tmp_path):
    folder, perm = small_net
    answer = tmp_path / "answer.txt"
    answer.write_text(answer_text(perm))
    rows = (folder / "historical_data.csv").read_text().splitlines()
    drop = rows[0].split(",").index("pred")
    csv = tmp_path / "no_pred.csv"
    csv.write_text("\n".join(",".join(c for k, c in enumerate(r.split(",")) if k != drop)
                             for r in rows) + "\n")
    out = tmp_path / "np.html"
    # the given answer: without pred a search never certifies and would run to its limit
    result = run(folder, "--data", csv, "--perm-file", answer, "-o", out)
    assert result.exit_code == 1, result.output
    assert "MSE vs true" in result.output and "MSE vs pred" not in result.output
    assert "no &#x27;pred&#x27; column" in out.read_text()  # html-escaped quotes
