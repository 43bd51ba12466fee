"""``dropnet solve`` through click's CliRunner: bad input exits 2 with one ``error:`` line and
no traceback; a small valid network is solved (exit 0, answer, --json, -o); the published
puzzle end to end when ../shared/puzzle is present."""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dropnet.cli import main
from helpers_pieces import make_network, pth_archive, write_csv, write_network, write_pth

PUZZLE_SHA256 = "093be1cf2d24094db903cbc3e8d33d306ebca49c6accaa264e44b0b675e7d9c4"


def answer_text(permutation) -> str:
    """The answer as the puzzle's checker hashes it: indices joined by commas."""
    return ",".join(str(int(i)) for i in permutation)


def answer_sha256(permutation) -> str:
    return hashlib.sha256(answer_text(permutation).encode()).hexdigest()


def solve(*args):
    return CliRunner().invoke(main, ["solve", "-q", *map(str, args)])


def assert_bad_input(result, *fragments: str) -> str:
    stderr = result.stderr
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit) or result.exception is None
    assert "Traceback" not in result.output and "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert result.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------- bad input


def test_missing_folder(tmp_path):
    assert_bad_input(solve(tmp_path / "absent"), "absent", "no such folder")


def test_empty_folder(tmp_path):
    assert_bad_input(solve(tmp_path), "no piece files")


def test_data_pointing_to_a_missing_file(small_net):
    folder, _ = small_net
    assert_bad_input(solve(folder, "--data", folder / "nope.csv"), "nope.csv", "cannot read")
    assert_bad_input(solve(folder, "--data", folder), "cannot read")


def test_no_data_file_found(small_net):
    folder, _ = small_net
    (folder / "historical_data.csv").unlink()
    assert_bad_input(solve(folder), "pass --data")


def test_extra_input_layer_is_a_wrong_count(small_net):
    folder, perm = small_net
    write_pth(folder / "pieces" / f"piece_{len(perm)}.pth", np.ones((16, 8)), np.zeros(16))
    assert_bad_input(solve(folder), "5 input layers and 4 output layers")


def test_missing_piece_is_a_gap(small_net):
    folder, perm = small_net
    (folder / "pieces" / "piece_3.pth").unlink()
    assert_bad_input(solve(folder), "missing [3]")


def test_piece_of_a_wrong_shape(small_net):
    folder, perm = small_net
    path = folder / "pieces" / f"piece_{perm[0]}.pth"
    write_pth(path, np.ones((16, 7)), np.zeros(16))
    assert_bad_input(solve(folder), "fits neither")


def test_two_final_layers(small_net):
    folder, perm = small_net
    write_pth(folder / "pieces" / f"piece_{len(perm)}.pth", np.ones((1, 8)), np.zeros(1))
    assert_bad_input(solve(folder), "exactly one final layer")


def test_nan_weights(small_net):
    folder, perm = small_net
    w = np.ones((8, 16), np.float32)
    w[3, 3] = np.nan
    write_pth(folder / "pieces" / f"piece_{perm[1]}.pth", w, np.zeros(8))
    assert_bad_input(solve(folder), f"piece_{perm[1]}.pth", "NaN or Inf")


def test_csv_without_pred_or_true(small_net):
    folder, _ = small_net
    _, x, _ = make_network(3)
    write_csv(folder / "historical_data.csv", x)
    assert_bad_input(solve(folder), "historical_data.csv", "needs a 'pred' column")


def test_csv_with_fewer_input_columns_than_the_width(small_net):
    folder, _ = small_net
    _, x, pred = make_network(3)
    write_csv(folder / "historical_data.csv", x[:, :6], pred, pred)
    assert_bad_input(solve(folder), "6 input columns", "width 8")


def test_csv_with_a_line_of_a_different_width(small_net):
    folder, _ = small_net
    csv = folder / "historical_data.csv"
    lines = csv.read_text().splitlines()
    lines[7] = lines[7].rsplit(",", 1)[0]
    csv.write_text("\n".join(lines) + "\n")
    assert_bad_input(solve(folder), "line 8 has 9 fields, the header has 10")


def test_csv_with_a_non_number(small_net):
    folder, _ = small_net
    csv = folder / "historical_data.csv"
    lines = csv.read_text().splitlines()
    lines[2] = "oops" + lines[2][lines[2].index(","):]
    csv.write_text("\n".join(lines))
    assert_bad_input(solve(folder), "line 3, column 'measurement_0': not a number: 'oops'")


def test_pickle_asking_for_os_system_is_refused_and_not_run(small_net):
    folder, perm = small_net
    marker = Path(tempfile.gettempdir()) / f"pwned_{secrets.token_hex(8)}"
    payload = (b"\x80\x02cposix\nsystem\nX" + len(f"touch {marker}").to_bytes(4, "little")
               + f"touch {marker}".encode() + b"\x85R.")
    (folder / "pieces" / f"piece_{perm[4]}.pth").write_bytes(pth_archive(payload))
    try:
        assert_bad_input(solve(folder), f"piece_{perm[4]}.pth", "forbidden global posix.system")
        assert not marker.exists()
    finally:
        if marker.exists():
            marker.unlink()


def test_garbage_piece(small_net):
    folder, perm = small_net
    (folder / "pieces" / f"piece_{perm[2]}.pth").write_bytes(os.urandom(300))
    assert_bad_input(solve(folder), f"piece_{perm[2]}.pth")


# --------------------------------------------------------------------------- a valid network


def test_small_network_is_solved(small_net):
    folder, perm = small_net
    result = solve(folder)
    assert result.exit_code == 0, (result.output, result.exception)
    lines = result.stdout.splitlines()
    assert lines[0] == answer_text(perm)
    assert f"sha256: {answer_sha256(perm)}" in result.stdout


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_small_network_in_other_formats_via_the_pieces_folder(tmp_path, fmt):
    perm = write_network(tmp_path, seed=4, fmt=fmt)
    result = solve(tmp_path / "pieces")
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stdout.splitlines()[0] == answer_text(perm)


def test_json_output(small_net):
    folder, perm = small_net
    result = solve(folder, "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    assert len(result.stdout.strip().splitlines()) == 1
    payload = json.loads(result.stdout)
    assert {"permutation", "pairs", "order", "mse", "certified", "timings", "sha256"} <= set(payload)
    assert payload["permutation"] == perm and payload["certified"] is True
    assert payload["pairs"] == [perm[i:i + 2] for i in range(0, len(perm) - 1, 2)]
    assert payload["order"] == perm[0:-1:2]
    assert payload["sha256"] == answer_sha256(perm) and payload["mse"] < 1e-10


def test_output_file(small_net, tmp_path):
    folder, perm = small_net
    out = tmp_path / "answer.txt"
    result = solve(folder, "-o", out)
    assert result.exit_code == 0, (result.output, result.exception)
    assert out.read_text() == answer_text(perm) + "\n"
    out_json = tmp_path / "answer.json"
    result = solve(folder, "--json", "-o", out_json)
    assert result.exit_code == 0
    assert json.loads(out_json.read_text())["permutation"] == perm


def test_explicit_data_path_and_nested_layout(small_net, tmp_path):
    folder, perm = small_net
    nested = tmp_path / "zip" / "historical_data_and_pieces"
    shutil.copytree(folder / "pieces", nested / "pieces")
    data = tmp_path / "elsewhere.csv"
    shutil.copy(folder / "historical_data.csv", data)
    result = solve(tmp_path / "zip", "--data", data)
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stdout.splitlines()[0] == answer_text(perm)


def test_true_only_data_is_not_certified(small_net):
    folder, perm = small_net
    layers, x, pred = make_network(3)
    write_csv(folder / "historical_data.csv", x, None, pred)
    result = solve(folder, "--time-limit", "2")
    assert result.exit_code == 1, (result.output, result.exception)
    assert "NOT certifiable" in result.stdout


def test_an_uncertified_answer_says_how_to_go_on(small_net):
    """Noise on pred: no order is certified; exit 1, and the last line says what to try."""
    folder = small_net[0]
    x, pred = make_network(3)[1:]
    noisy = pred + np.random.default_rng(0).normal(0.0, 0.1, pred.shape)
    write_csv(folder / "historical_data.csv", x, noisy, pred)
    result = solve(folder, "--time-limit", "1")
    assert result.exit_code == 1, (result.output, result.exception)
    assert "NOT certified" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("not certified within the budget: a larger --time-limit")


# --------------------------------------------------------------------------- the puzzle


def test_published_puzzle_end_to_end(puzzle):
    result = solve(puzzle)
    assert result.exit_code == 0, (result.output, result.exception)
    assert f"sha256: {PUZZLE_SHA256}" in result.stdout
    assert answer_sha256([int(i) for i in result.stdout.splitlines()[0].split(",")]) == PUZZLE_SHA256


def test_weights_whose_products_overflow(tmp_path):
    """Finite float64 weights so large that the pairing evidence overflows: one line, exit 2."""
    write_network(tmp_path, seed=5, fmt="npz")
    for path in sorted((tmp_path / "pieces").glob("*.npz"))[:6]:
        arrays = dict(np.load(path))
        name = next(k for k, v in arrays.items() if v.ndim == 2)
        arrays[name] = arrays[name].astype(np.float64) * 1e160
        np.savez(path, **arrays)
    assert_bad_input(solve(tmp_path), "overflow")


# --------------------------------------------------------------------------- the console command


def _console(*args, cwd=None):
    """``dropnet`` as the installed console script runs it (``dropnet.cli:run``)."""
    import subprocess
    import sys

    code = "import sys; from dropnet.cli import run; sys.argv[0] = 'dropnet'; run()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=600, check=False)


def test_console_command_keeps_output_files_and_exit_codes(small_net, tmp_path):
    """run() leaves through os._exit: stdout, -o and the exit code must all survive it."""
    folder, perm = small_net
    out = tmp_path / "answer.json"
    done = _console("solve", "-q", "--json", "-o", out, folder)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["permutation"] == perm and payload["sha256"] == answer_sha256(perm)
    assert json.loads(out.read_text()) == payload
    bad = _console("solve", "-q", tmp_path / "missing")
    assert bad.returncode == 2 and bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1 and bad.stderr.startswith("error: ")
    _, x, pred = make_network(3)
    write_csv(folder / "historical_data.csv", x, None, pred)  # true only: not certifiable
    assert _console("solve", "-q", "--time-limit", "1", folder).returncode == 1
    usage = _console("solve", "--rows", "3", folder)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    assert _console("--version").returncode == 0


def test_relax_after_defaults_to_the_api_default_and_reaches_the_search(small_net):
    from dropnet.solve import SearchOptions

    option = next(p for p in main.commands["solve"].params if p.name == "relax_after")
    assert option.default == SearchOptions().relax_after
    folder, perm = small_net
    result = solve(folder, "--json", "--relax-after", "0")
    payload = json.loads(result.stdout)
    assert result.exit_code == 0 and payload["permutation"] == perm
    assert payload["search"]["relax"] == []  # certified before the search could stall
