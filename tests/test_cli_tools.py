"""verify, inspect, --pairs and --no-data through click's CliRunner."""
from __future__ import annotations

import json

from click.testing import CliRunner

from dropnet.cli import main
from dropnet.verify import answer_sha256, answer_text

DIGEST = "093be1cf2d24094db903cbc3e8d33d306ebca49c6accaa264e44b0b675e7d9c4"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def swapped_blocks(perm):
    wrong = list(perm)
    wrong[0:2], wrong[2:4] = perm[2:4], perm[0:2]
    return wrong


def test_verify_accepts_the_truth_and_reports_digest(small_net):
    folder, perm = small_net
    result = run("verify", folder, "--perm", answer_text(perm), "--expect-sha256",
                 answer_sha256(perm))
    assert result.exit_code == 0, result.output
    assert "certified" in result.output and answer_sha256(perm) in result.output
    assert "matches" in result.output and "NOT" not in result.output


def test_verify_rejects_a_wrong_order_and_a_wrong_digest(small_net):
    folder, perm = small_net
    assert run("verify", folder, "--perm", answer_text(swapped_blocks(perm))).exit_code == 1
    result = run("verify", folder, "--perm", answer_text(perm), "--expect-sha256", "0" * 64)
    assert result.exit_code == 1 and "does NOT match" in result.output


def test_verify_reads_json_answer_files(small_net, tmp_path):
    folder, perm = small_net
    path = tmp_path / "answer.json"
    path.write_text(json.dumps({"permutation": perm}))
    result = run("verify", folder, "--perm-file", path, "--json")
    assert result.exit_code == 0
    payload = json.loads(result.output)
    assert payload["certified"] and payload["sha256"] == answer_sha256(perm)


def test_verify_bad_answers_exit_2(small_net):
    folder, perm = small_net
    for bad in (answer_text(perm[:-1]), answer_text(perm[:-1] + [perm[0]]), "1,x,3",
                answer_text([perm[1], perm[0]] + perm[2:])):
        result = run("verify", folder, "--perm", bad)
        assert result.exit_code == 2, bad
        assert result.output.startswith("error:") and "Traceback" not in result.output
    assert run("verify", folder).exit_code == 2


def test_inspect_reports_without_solving(small_net):
    folder, perm = small_net
    result = run("inspect", folder, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["pieces"] == len(perm) and info["blocks"] == (len(perm) - 1) // 2
    assert info["has_pred"] and info["pairing"]["margin"] > 1
    assert run("inspect", folder / "pieces").exit_code == 0


def test_known_pairs_are_kept_and_bad_ones_refused(small_net, tmp_path):
    folder, perm = small_net
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps([perm[0:2]]))
    result = run("solve", folder, "--pairs", pairs, "--json", "-q")
    assert result.exit_code == 0
    assert json.loads(result.output)["permutation"] == perm
    pairs.write_text(json.dumps([[perm[1], perm[0]]]))
    result = run("solve", folder, "--pairs", pairs)
    assert result.exit_code == 2 and result.output.startswith("error:")
    pairs.write_text("not json")
    assert run("solve", folder, "--pairs", pairs).exit_code == 2


def test_no_data_is_an_uncertified_guess(small_net):
    folder, perm = small_net
    result = run("solve", folder, "--no-data", "--json")
    assert result.exit_code == 1
    payload = json.loads(result.output)
    assert sorted(payload["permutation"]) == sorted(perm)
    assert payload["certified"] is False and payload["mse"] is None


def test_verify_the_published_answer(puzzle, tmp_path):
    result = run("solve", puzzle, "-q", "-o", tmp_path / "answer.txt")
    assert result.exit_code == 0 and DIGEST in result.output
    result = run("verify", puzzle, "--perm-file", tmp_path / "answer.txt", "--expect-sha256", DIGEST)
    assert result.exit_code == 0 and "MSE vs true: 0.106" in result.output


def test_start_from_an_earlier_answer_in_each_form(small_net, tmp_path):
    """The -o text, the --json output and a bare JSON list all start the search; a start
    that is already the answer is certified from the start, before any seed is built."""
    folder, perm = small_net
    first = run("solve", folder, "-q", "-o", tmp_path / "answer.txt", "--json")
    assert first.exit_code == 0
    (tmp_path / "result.json").write_text(first.output)
    (tmp_path / "list.json").write_text(json.dumps(perm))
    (tmp_path / "printed.txt").write_text(run("solve", folder, "-q").output)  # solve's own text
    for name in ("answer.txt", "result.json", "list.json", "printed.txt"):
        result = run("solve", folder, "--start", tmp_path / name, "--json", "-q")
        assert result.exit_code == 0, (name, result.output)
        payload = json.loads(result.output)
        assert payload["permutation"] == perm and payload["seed"] == "start", name


def test_bad_starts_are_refused_in_one_line(small_net, tmp_path):
    folder, perm = small_net
    start = tmp_path / "start.json"
    for text in (json.dumps(perm[:-2]), json.dumps(perm[:-1] + [perm[0]]),
                 json.dumps(swapped_roles(perm)), json.dumps(perm[:-1] + [1.5]), "a,b", "{}",
                 "", "[]", "1,\u00b2,3", json.dumps(perm[:-1] + [True])):
        start.write_text(text)
        result = run("solve", folder, "--start", start)
        assert result.exit_code == 2, text
        assert result.output.startswith("error:") and result.output.count("\n") == 1, result.output
    assert run("solve", folder, "--start", tmp_path / "missing").exit_code == 2


def swapped_roles(perm):
    """The first block's input and output layers exchanged: each in the other's place."""
    return [perm[1], perm[0]] + list(perm[2:])
