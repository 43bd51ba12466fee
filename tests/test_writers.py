"""Writers: pieces in torch zip / npz / safetensors and the CSV, read back by dropnet.io
(and by torch.load when torch is installed)."""
from __future__ import annotations

import json
import struct
import zipfile

import numpy as np
import pytest

from dropnet.io import load_data, read_npz, read_piece, read_pth, read_safetensors
from dropnet.writers import (FORMATS, state_dict_pickle, write_csv, write_npz, write_piece,
                             write_pth, write_safetensors)

READERS = {"pth": read_pth, "npz": read_npz, "safetensors": read_safetensors}
SHAPES = [(96, 48), (48, 96), (1, 48), (3, 1), (300, 257)]


def _layer(shape, seed=0):
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal(shape).astype(np.float32)
    weight.flat[0] = -0.0
    return weight, rng.standard_normal(shape[0]).astype(np.float32)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip_through_dropnet_io(tmp_path, fmt, shape):
    weight, bias = _layer(shape)
    path = write_piece(tmp_path / f"piece_7.{fmt}", weight, bias, fmt)
    tensors = READERS[fmt](path)
    assert sorted(tensors) == ["bias", "weight"]
    np.testing.assert_array_equal(tensors["weight"], weight)
    np.testing.assert_array_equal(tensors["bias"], bias)
    piece = read_piece(path, 7)
    assert piece.weight.shape == shape and piece.weight.dtype == np.float64


def test_float64_input_is_rounded_to_float32(tmp_path):
    weight = np.full((2, 3), 0.1)
    tensors = read_pth(write_pth(tmp_path / "p.pth", weight, np.zeros(2)))
    np.testing.assert_array_equal(tensors["weight"], np.float32(0.1))


def test_pth_layout_matches_torch_save(tmp_path):
    weight, bias = _layer((96, 48))
    path = write_pth(tmp_path / "piece_3.pth", weight, bias)
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        assert names == [f"archive/{n}" for n in (
            "data.pkl", ".format_version", ".storage_alignment", "byteorder", "data/0", "data/1",
            "version", ".data/serialization_id")]
        infos = archive.infolist()
        assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)
        assert archive.read("archive/byteorder") == b"little"
        assert archive.read("archive/.storage_alignment") == b"64"
    blob = path.read_bytes()
    for info in infos:  # every payload starts on a 64-byte boundary
        name_len, extra_len = struct.unpack("<HH", blob[info.header_offset + 26:info.header_offset + 30])
        assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0
    stem = write_pth(tmp_path / "piece_4.pth", weight, bias, archive_name=None)
    assert zipfile.ZipFile(stem).namelist()[0] == "piece_4/data.pkl"
    np.testing.assert_array_equal(read_pth(stem)["weight"], weight)


def test_pickle_is_byte_identical_to_the_published_pieces(puzzle):
    with zipfile.ZipFile(puzzle / "pieces" / "piece_0.pth") as archive:
        published = archive.read("archive/data.pkl")
        shape = tuple(int(s) for s in read_pth(puzzle / "pieces" / "piece_0.pth")["weight"].shape)
    assert state_dict_pickle({"weight": shape, "bias": shape[:1]}, "cuda:0") == published


def test_pth_readable_by_torch_load(tmp_path):
    torch = pytest.importorskip("torch")
    for shape in SHAPES:
        weight, bias = _layer(shape, seed=1)
        path = write_pth(tmp_path / f"p_{shape[0]}_{shape[1]}.pth", weight, bias)
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert list(state) == ["weight", "bias"]
        assert state["weight"].dtype == torch.float32
        np.testing.assert_array_equal(state["weight"].numpy(), weight)
        np.testing.assert_array_equal(state["bias"].numpy(), bias)
        linear = torch.nn.Linear(shape[1], shape[0])
        linear.load_state_dict(state)


def test_pickle_is_byte_identical_to_torch_save(tmp_path):
    torch = pytest.importorskip("torch")
    for out, inp in SHAPES:
        torch.save(torch.nn.Linear(inp, out).state_dict(), tmp_path / "t.pth")
        with zipfile.ZipFile(tmp_path / "t.pth") as archive:
            theirs = archive.read("t/data.pkl")
        assert state_dict_pickle({"weight": (out, inp), "bias": (out,)}) == theirs


def test_safetensors_header(tmp_path):
    weight, bias = _layer((5, 3))
    blob = write_safetensors(tmp_path / "p.safetensors", weight, bias).read_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    assert length % 8 == 0
    header = json.loads(blob[8:8 + length])
    assert header["weight"] == {"dtype": "F32", "shape": [5, 3], "data_offsets": [20, 80]}
    assert header["bias"] == {"dtype": "F32", "shape": [5], "data_offsets": [0, 20]}
    assert len(blob) == 8 + length + 80


def test_npz_holds_float32_arrays(tmp_path):
    weight, bias = _layer((4, 2))
    with np.load(write_npz(tmp_path / "p.npz", weight, bias)) as archive:
        assert sorted(archive.files) == ["bias", "weight"]
        assert archive["weight"].dtype == np.float32


def test_csv_round_trips_float32(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((50, 3)) * 10.0 ** rng.integers(-8, 8, (50, 3))).astype(np.float32)
    pred, true = rng.standard_normal(50).astype(np.float32), rng.standard_normal(50).astype(np.float32)
    data = load_data(write_csv(tmp_path / "d.csv", x, pred, true))
    assert data.columns == ("measurement_0", "measurement_1", "measurement_2")
    # 9 significant digits: the parsed float64 rounds back to the very same float32
    np.testing.assert_array_equal(data.x.astype(np.float32), x)
    np.testing.assert_array_equal(data.pred.astype(np.float32), pred)
    np.testing.assert_array_equal(data.true.astype(np.float32), true)
    header = (tmp_path / "d.csv").read_text().splitlines()[0]
    assert header == "measurement_0,measurement_1,measurement_2,pred,true"


@pytest.mark.parametrize("bad", [(np.zeros(3), np.zeros(3)), (np.zeros((2, 3)), np.zeros(3))])
def test_bad_shapes_rejected(tmp_path, bad):
    with pytest.raises(ValueError):
        write_pth(tmp_path / "p.pth", *bad)


def test_unknown_format_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown piece format"):
        write_piece(tmp_path / "p.onnx", np.zeros((2, 2)), np.zeros(2), "onnx")
