"""Shatter, reassemble, signal summary, corpus and the generator's CLI commands."""
from __future__ import annotations

import json
import tempfile

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from dropnet.generate import (CORPUS, build_corpus, corpus_name, dominance_ratio, drop,
                              network_layers, reassemble, reassembly_mse, recipe, shatter,
                              signal_summary)
from dropnet.io import load_data, load_pieces
from dropnet.model import Network
from dropnet.train import TrainConfig, init_params, to_network
from dropnet.writers import FORMATS

TINY = dict(blocks=3, width=5, hidden=9, rows=200, epochs=2)


def _random_net(n: int, d: int, h: int, seed: int) -> Network:
    return to_network(init_params(n, d, h, np.random.default_rng(seed)))


def _paired_net(n: int, d: int, h: int, seed: int = 0) -> Network:
    """A net whose W_out is -W_in^T / 4: every true pair has a dominant negative diagonal."""
    net = _random_net(n, d, h, seed)
    return Network(net.w_in, net.b_in, -0.25 * net.w_in.transpose(0, 2, 1), net.b_out,
                   net.w_last, net.b_last)


def test_dominance_ratio_matches_direct_products():
    net = _random_net(4, 5, 7, seed=1)
    ratio = dominance_ratio(net.w_in, net.w_out)
    for i in range(4):
        for j in range(4):
            m = net.w_out[j] @ net.w_in[i]
            assert ratio[i, j] == pytest.approx(abs(np.trace(m)) / np.linalg.norm(m), rel=1e-10)


def test_signal_of_a_perfectly_paired_net():
    sig = signal_summary(_paired_net(6, 5, 11))
    assert sig.perfect and sig.accuracy == 1.0 and sig.blocks == 6
    assert sig.trace_max < 0 and sig.separation > 1
    assert sig.matched_min <= sig.matched_max
    assert set(sig.to_dict()) >= {"trace_min", "separation", "accuracy", "depth_spearman", "perfect"}
    assert "assignment 100%" in sig.describe()


def test_signal_accepts_a_ratio_callable():
    net = _paired_net(4, 3, 6)
    flipped = signal_summary(net, ratio=lambda w_in, w_out: np.ones((4, 4)) - np.eye(4))
    assert flipped.accuracy == 0.0 and flipped.separation == 0.0


def test_network_layers_in_answer_order():
    net = _random_net(2, 3, 4, seed=0)
    layers = network_layers(net)
    assert [w.shape for w, _ in layers] == [(4, 3), (3, 4), (4, 3), (3, 4), (1, 3)]
    assert layers[-1][1].shape == (1,)


@pytest.mark.parametrize("fmt", FORMATS)
def test_shatter_writes_the_puzzle_layout(tmp_path, fmt):
    net = _random_net(3, 4, 6, seed=2)
    x = np.random.default_rng(0).standard_normal((40, 4)).astype(np.float32)
    y = np.random.default_rng(1).standard_normal(40).astype(np.float32)
    perm = shatter(net, x, y, tmp_path, fmt=fmt, seed=3, config={"note": 1})
    assert sorted(perm) == list(range(7))
    names = sorted(p.name for p in (tmp_path / "pieces").iterdir())
    assert names == sorted(f"piece_{i}.{fmt}" for i in range(7))
    answer = json.loads((tmp_path / "answer.json").read_text())
    assert answer["permutation"] == perm and answer["config"] == {"note": 1}
    assert "accuracy" in answer["signal"]
    data = load_data(tmp_path / "historical_data.csv")
    np.testing.assert_array_equal(data.true.astype(np.float32), y)
    assert len(load_pieces(tmp_path / "pieces")) == 7
    assert reassembly_mse(tmp_path) < 1e-12
    wrong = perm[2:4] + perm[0:2] + perm[4:]
    assert reassembly_mse(tmp_path, wrong) > 1e-6
    with pytest.raises(FileExistsError):
        shatter(net, x, y, tmp_path, fmt=fmt)
    shatter(net, x, y, tmp_path, fmt="npz", seed=4, overwrite=True)
    assert len(list((tmp_path / "pieces").iterdir())) == 7


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 5), d=st.integers(1, 6), extra=st.integers(1, 6),
       seed=st.integers(0, 2**31 - 1), fmt=st.sampled_from(FORMATS))
def test_shatter_then_reassemble_reproduces_pred(n, d, extra, seed, fmt):
    h = d + extra
    rng = np.random.default_rng(seed)
    net = to_network(init_params(n, d, h, rng))
    scale = rng.uniform(0.5, 3.0)
    w_in = (net.w_in * scale).astype(np.float32).astype(np.float64)  # float32 values
    net = Network(w_in, net.b_in, net.w_out, net.b_out, net.w_last, net.b_last)
    x = rng.standard_normal((64, d)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        perm = shatter(net, x, rng.standard_normal(64), tmp, fmt=fmt, seed=seed)
        assert sorted(perm) == list(range(2 * n + 1))
        rebuilt = reassemble(tmp)
        np.testing.assert_array_equal(rebuilt.w_in, net.w_in)
        np.testing.assert_array_equal(rebuilt.w_out, net.w_out)
        assert reassembly_mse(tmp) < 1e-12


def test_drop_trains_and_reports(tmp_path):
    summary = drop(tmp_path / "net", TrainConfig(**TINY), fmt="safetensors", seed=1)
    assert summary.reassembly_mse < 1e-12
    assert summary.history.epochs == 2 and summary.signal.blocks == 3
    answer = json.loads((tmp_path / "net" / "answer.json").read_text())
    assert answer["config"]["blocks"] == 3 and answer["config"]["format"] == "safetensors"
    assert answer["permutation"] == summary.permutation


def test_recipes():
    strong, weak = recipe("strong", blocks=4), recipe("weak", blocks=4)
    assert strong.optimizer == "sgd" and weak.optimizer == "adam" and strong.blocks == 4
    assert recipe("strong", lr=0.5).lr == 0.5
    with pytest.raises(ValueError):
        recipe("medium")


def test_build_corpus_is_idempotent(tmp_path):
    configs = (TrainConfig(**TINY), TrainConfig(**{**TINY, "hidden": 7, "optimizer": "sgd",
                                                   "lr": 0.01}))
    folders = build_corpus(tmp_path, configs)
    assert [f.name for f in folders] == [corpus_name(c) for c in configs]
    stamps = [(f / "answer.json").stat().st_mtime_ns for f in folders]
    assert build_corpus(tmp_path, configs) == folders
    assert [(f / "answer.json").stat().st_mtime_ns for f in folders] == stamps
    assert all(reassembly_mse(f) < 1e-12 for f in folders)


@pytest.mark.slow
def test_default_corpus_is_strongly_paired(tmp_path):
    folders = build_corpus(tmp_path)
    assert len(folders) == len(CORPUS)
    for folder in folders:
        answer = json.loads((folder / "answer.json").read_text())
        assert answer["signal"]["perfect"], folder.name
        assert reassembly_mse(folder) < 1e-12


# --------------------------------------------------------------------------- CLI


def test_cli_drop(tmp_path):
    from dropnet.cli_generate import drop as drop_cmd

    out = tmp_path / "out"
    args = [str(out), "--blocks", "2", "--width", "3", "--hidden", "5", "--rows", "100",
            "--epochs", "2", "--format", "npz", "--quiet"]
    result = CliRunner().invoke(drop_cmd, args)
    assert result.exit_code == 0, result.output
    assert "signal:" in result.output and "reassembly" in result.output
    assert len(list((out / "pieces").glob("piece_*.npz"))) == 5
    again = CliRunner().invoke(drop_cmd, args)
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert CliRunner().invoke(drop_cmd, args + ["--overwrite"]).exit_code == 0


def test_cli_drop_square_pieces(tmp_path):
    """h = d is allowed: every block layer is d x d and the solver infers the roles."""
    from dropnet.cli_generate import drop as drop_cmd
    from dropnet.io import load_pieces

    out = tmp_path / "sq"
    args = [str(out), "--blocks", "2", "--width", "4", "--hidden", "4", "--rows", "100",
            "--epochs", "2", "--quiet"]
    assert CliRunner().invoke(drop_cmd, args).exit_code == 0
    shapes = sorted(p.weight.shape for p in load_pieces(out / "pieces").items)
    assert shapes == [(1, 4)] + [(4, 4)] * 4


@pytest.mark.parametrize("args", [["--format", "onnx"],
                                  ["--optimizer", "rmsprop"], ["--blocks", "0"]])
def test_cli_drop_bad_input(tmp_path, args):
    from dropnet.cli_generate import drop as drop_cmd

    result = CliRunner().invoke(drop_cmd, [str(tmp_path / "o"), "--quiet", *args])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_cli_drop_divergence_is_one_line(tmp_path):
    from dropnet.cli_generate import drop as drop_cmd

    result = CliRunner().invoke(drop_cmd, [str(tmp_path / "o"), "--blocks", "2", "--width", "3",
                                           "--hidden", "5", "--rows", "50", "--epochs", "3",
                                           "--lr", "1e6", "--quiet"])
    assert result.exit_code == 2 and "diverged" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_cli_demo_matches_truth():
    pytest.importorskip("dropnet.solve")
    from dropnet.cli_generate import demo

    result = CliRunner().invoke(demo, ["--quiet"])
    assert result.exit_code == 0, result.output
    assert "MATCH" in result.output


def test_cli_choices_match_the_generator():
    """cli_generate spells its choices out (to keep `dropnet solve` start-up light)."""
    from dropnet import cli_generate, generate, train, writers

    assert set(cli_generate.REGIMES) == set(generate.RECIPES)
    assert set(cli_generate.OPTIMIZERS) == set(train.OPTIMIZERS)
    assert set(cli_generate.FORMATS) == set(writers.FORMATS)


def test_solve_does_not_import_the_trainer():
    import subprocess
    import sys

    code = ("import sys, dropnet.cli; "
            "print(any(m in sys.modules for m in ('dropnet.train', 'dropnet.generate', 'scipy.stats')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("profile", ["rising", "shuffled"])
def test_planted_network_is_its_answer_and_order_matters(profile):
    """The returned permutation reproduces pred to rounding; one adjacent swap in the middle
    raises the MSE far above the certificate's tolerance (the stream neither dies nor
    explodes, so the certificate means something); true pairs stand out by the ratio."""
    from dropnet import certify
    from dropnet.generate import planted
    from dropnet.roles import assign_roles
    from dropnet.verify import sequences

    n = 24
    pieces, data, perm = planted(n, 300, width=12, hidden=24, seed=2, profile=profile)
    assert sorted(perm) == list(range(2 * n + 1))
    stack = assign_roles(pieces)
    seq_in, seq_out = sequences(stack, perm)
    w = stack.weights
    tol = certify.tolerance(data.pred, n)
    out = certify.model_output(w, data.x, seq_in, seq_out)
    assert certify.mse(out, data.pred) < tol and data.pred.var() > 0.01
    swapped = np.arange(n)
    swapped[[11, 12]] = [12, 11]
    out = certify.model_output(w, data.x, seq_in[swapped], seq_out[swapped])
    assert certify.mse(out, data.pred) > 100 * tol
    ratio = dominance_ratio(w.w_in[seq_in], w.w_out[seq_out])
    assert np.diag(ratio).min() > 1.2 * ratio[~np.eye(n, dtype=bool)].max()
    norms = np.linalg.norm(w.w_out[seq_out], axis=(1, 2))
    assert (np.all(np.diff(norms) >= 0)) == (profile == "rising")


def test_planted_network_refuses_an_unknown_profile():
    from dropnet.generate import planted

    with pytest.raises(ValueError, match="profile"):
        planted(4, 10, profile="falling")
