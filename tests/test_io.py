"""Loader unit tests: .pth against torch.load, .npz and .safetensors round trips, piece
indexing, the data CSV parser, and finding the pieces and data in both puzzle layouts."""
from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dropnet.errors import InputError
from dropnet.io import (find_data, find_pieces_folder, load_data, load_pieces, piece_files,
                        read_npz, read_piece, read_pth, read_safetensors)
from helpers_pieces import (pth_archive, pth_bytes, safetensors_bytes, state_dict_pickle,
                            torch_save, write_csv, write_npz, write_pth, write_safetensors)


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def one_line_error(excinfo, path) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message
    return message


def rewrite_zip(blob: bytes, edit, compression: int = zipfile.ZIP_STORED) -> bytes:
    """Copy a zip, passing each member through ``edit(name, data) -> data``."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(blob)) as src, zipfile.ZipFile(out, "w", compression) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, edit(info.filename, src.read(info)))
    return out.getvalue()


def torch_reference(torch, path, **kw) -> dict[str, np.ndarray]:
    state = torch.load(path, map_location="cpu", **kw)
    return {k: v.to(torch.float64).numpy() for k, v in state.items()}


def assert_same_state(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == np.float64
        np.testing.assert_array_equal(got[name], want[name])


# --------------------------------------------------------------------------- .pth vs torch


def test_every_puzzle_piece_matches_torch_load(puzzle, torch):
    files = sorted((puzzle / "pieces").glob("piece_*.pth"))
    assert len(files) == 97
    for path in files:
        assert_same_state(read_pth(path), torch_reference(torch, path))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
def test_torch_written_dtypes_match_torch_load(tmp_path, torch, dtype):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(6, 5, generator=g).to(getattr(torch, dtype))
    b = torch.randn(6, generator=g).to(getattr(torch, dtype))
    path = torch_save(tmp_path / "piece_0.pth", {"weight": w, "bias": b})
    got = read_pth(path)
    assert_same_state(got, torch_reference(torch, path))
    piece = read_piece(path, 0)
    assert piece.weight.shape == (6, 5) and piece.weight.flags.c_contiguous


@pytest.mark.parametrize("view", ["transposed", "sliced", "offset", "strided", "column"])
def test_torch_written_views_match_torch_load(tmp_path, torch, view):
    base = torch.arange(7 * 9, dtype=torch.float32).reshape(7, 9) / 7
    w = {"transposed": base.t(), "sliced": base[1:5, 2:7], "offset": base[3:],
         "strided": base[::2, ::3], "column": base[:, 4:5]}[view]
    b = base[2, 9 - w.shape[0]:]  # a view at an offset too
    assert w.storage_offset() > 0 or not w.is_contiguous()
    path = torch_save(tmp_path / "p.pth", {"weight": w, "bias": b})
    assert_same_state(read_pth(path), torch_reference(torch, path))


def test_cuda_tagged_storages_are_mapped_to_cpu(tmp_path, torch):
    path = torch_save(tmp_path / "p.pth", {"weight": torch.randn(4, 3), "bias": torch.randn(4)})

    def to_cuda(name, data):
        if name.endswith("data.pkl"):
            assert b"X\x03\x00\x00\x00cpu" in data
            data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
        return data

    edited = tmp_path / "cuda.pth"
    edited.write_bytes(rewrite_zip(path.read_bytes(), to_cuda))
    assert b"cuda:0" in edited.read_bytes()
    assert_same_state(read_pth(edited), torch_reference(torch, edited))
    assert_same_state(read_pth(edited), read_pth(path))


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_big_endian_archive_matches_torch_load(tmp_path, torch, dtype):
    tdtype = getattr(torch, dtype)
    path = torch_save(tmp_path / "p.pth", {"weight": torch.randn(5, 3).to(tdtype),
                                           "bias": torch.randn(5).to(tdtype)})
    size = torch.empty(0, dtype=tdtype).element_size()

    def to_big(name, data):
        if name.endswith("/byteorder"):
            return b"big"
        if "/data/" in name:
            return np.frombuffer(data, f"<u{size}").astype(f">u{size}").tobytes()
        return data

    big = tmp_path / "big.pth"
    big.write_bytes(rewrite_zip(path.read_bytes(), to_big))
    assert_same_state(read_pth(big), torch_reference(torch, big))
    assert_same_state(read_pth(big), read_pth(path))


def test_torch_protocol_4_pickle_matches(tmp_path, torch):
    path = tmp_path / "p4.pth"
    torch.save({"weight": torch.randn(3, 2), "bias": torch.randn(3)}, path, pickle_protocol=4)
    # torch's own weights-only unpickler knows no FRAME opcode; the file is ours, so trust it
    assert_same_state(read_pth(path), torch_reference(torch, path, weights_only=False))


def test_torch_free_pth_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64, np.float16):
        w, b = rng.standard_normal((4, 3)).astype(dtype), rng.standard_normal(4).astype(dtype)
        for order in ("little", "big"):
            for location in ("cpu", "cuda:0"):
                path = tmp_path / f"piece_{np.dtype(dtype).name}_{order}.pth"
                path.write_bytes(pth_bytes(w, b, byteorder=order, location=location))
                got = read_pth(path)
                np.testing.assert_array_equal(got["weight"], w.astype(np.float64))
                np.testing.assert_array_equal(got["bias"], b.astype(np.float64))


def test_pth_without_byteorder_record_is_little_endian(tmp_path):
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensors = {"weight": ("FloatStorage", "0", 6, 0, (2, 3), (3, 1)),
               "bias": ("FloatStorage", "1", 2, 0, (2,), (1,))}
    path = tmp_path / "p.pth"
    path.write_bytes(pth_archive(state_dict_pickle(tensors), {"0": w.tobytes(), "1": w[0, :2].tobytes()},
                                 byteorder=None))
    np.testing.assert_array_equal(read_pth(path)["weight"], w)


def test_pth_shared_storage_and_deflated_members(tmp_path):
    raw = np.arange(12, dtype="<f4")
    tensors = {"weight": ("FloatStorage", "0", 12, 0, (3, 3), (3, 1)),
               "bias": ("FloatStorage", "0", 12, 9, (3,), (1,))}
    path = tmp_path / "p.pth"
    path.write_bytes(pth_archive(state_dict_pickle(tensors), {"0": raw.tobytes()},
                                 compression=zipfile.ZIP_DEFLATED))
    got = read_pth(path)
    np.testing.assert_array_equal(got["weight"], raw[:9].reshape(3, 3))
    np.testing.assert_array_equal(got["bias"], raw[9:])


def test_expanded_tensor_is_refused(tmp_path):
    tensors = {"weight": ("FloatStorage", "0", 1, 0, (1000, 1000), (0, 0))}
    path = tmp_path / "p.pth"
    path.write_bytes(pth_archive(state_dict_pickle(tensors), {"0": b"\0" * 4}))
    with pytest.raises(InputError, match="larger than its storage") as excinfo:
        read_pth(path)
    one_line_error(excinfo, path)


def test_zip64_directory_reader_agrees_with_the_fast_one():
    from dropnet.io import _Zip

    blob = pth_bytes(np.ones((3, 2), np.float32), np.zeros(3, np.float32))
    assert _Zip._index_zip64(blob) == _Zip._index(blob)


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_other_compressions_are_refused(tmp_path, method):
    blob = pth_bytes(np.ones((3, 2), np.float32), np.zeros(3, np.float32))
    path = tmp_path / "p.pth"
    path.write_bytes(rewrite_zip(blob, lambda name, data: data, method))
    with pytest.raises(InputError, match="unsupported compression") as excinfo:
        read_pth(path)
    one_line_error(excinfo, path)


# --------------------------------------------------------------------------- npz, safetensors


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    w, b = rng.standard_normal((5, 4)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    piece = read_piece(write_npz(tmp_path / "piece_3.npz", w, b), 3)
    assert piece.index == 3
    np.testing.assert_array_equal(piece.weight, w.astype(np.float64))
    np.testing.assert_array_equal(piece.bias, b.astype(np.float64))


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_float64_fortran_and_integer_arrays(tmp_path, compressed):
    w = np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4) / 3)
    b = np.array([1, -2, 3], dtype=np.int32)
    path = tmp_path / "p.npz"
    with open(path, "wb") as fh:
        (np.savez_compressed if compressed else np.savez)(fh, weight=w, bias=b)
    got = read_npz(path)
    np.testing.assert_array_equal(got["weight"], w)
    np.testing.assert_array_equal(got["bias"], b.astype(np.float64))


def test_npz_object_arrays_are_refused(tmp_path):
    path = tmp_path / "p.npz"
    with open(path, "wb") as fh:
        np.savez(fh, weight=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="dtype object") as excinfo:
        read_npz(path)
    one_line_error(excinfo, path)


@pytest.mark.parametrize("dtype", ["F32", "F64", "F16"])
def test_safetensors_round_trip(tmp_path, dtype):
    rng = np.random.default_rng(2)
    w, b = rng.standard_normal((3, 5)), rng.standard_normal(3)
    cast = {"F32": np.float32, "F64": np.float64, "F16": np.float16}[dtype]
    path = tmp_path / "p.safetensors"
    path.write_bytes(safetensors_bytes({"weight": w, "bias": b}, dtype))
    got = read_safetensors(path)
    np.testing.assert_array_equal(got["weight"], w.astype(cast).astype(np.float64))
    np.testing.assert_array_equal(got["bias"], b.astype(cast).astype(np.float64))


def test_safetensors_bfloat16_and_metadata(tmp_path):
    w = np.array([[1.0, -2.5], [0.15625, 3e38]], dtype=np.float32)
    raw = (w.view(np.uint32) >> 16).astype("<u2").tobytes()
    head = (b'{"__metadata__":{"format":"pt"},"weight":{"dtype":"BF16","shape":[2,2],'
            b'"data_offsets":[0,8]}}')
    path = tmp_path / "p.safetensors"
    path.write_bytes(struct.pack("<Q", len(head)) + head + raw)
    got = read_safetensors(path)["weight"]
    np.testing.assert_array_equal(got, (w.view(np.uint32) & 0xFFFF0000).view(np.float32))


def test_piece_from_torch_safetensors_and_npz_agree(tmp_path):
    rng = np.random.default_rng(3)
    w, b = rng.standard_normal((4, 2)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    pieces = [read_piece(write(tmp_path / f"piece_{i}.{ext}", w, b), i)
              for i, (ext, write) in enumerate([("pth", write_pth), ("npz", write_npz),
                                                ("safetensors", write_safetensors)])]
    for piece in pieces:
        np.testing.assert_array_equal(piece.weight, pieces[0].weight)
        np.testing.assert_array_equal(piece.bias, pieces[0].bias)


def test_piece_shape_and_content_checks(tmp_path):
    cases = {
        "bias_len.npz": ({"weight": np.ones((3, 2)), "bias": np.ones(2)}, "bias has shape"),
        "weight_1d.npz": ({"weight": np.ones(3), "bias": np.ones(3)}, "weight has shape"),
        "no_weight.npz": ({"bias": np.ones(3)}, "expected tensors"),
        "extra.npz": ({"weight": np.ones((3, 2)), "bias": np.ones(3), "x": np.ones(1)}, "expected tensors"),
        "nan.npz": ({"weight": np.full((3, 2), np.nan), "bias": np.ones(3)}, "NaN or Inf"),
        "inf.npz": ({"weight": np.ones((3, 2)), "bias": np.array([1, np.inf, 0])}, "NaN or Inf"),
    }
    for name, (arrays, message) in cases.items():
        path = tmp_path / name
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
        with pytest.raises(InputError, match=message) as excinfo:
            read_piece(path, 0)
        one_line_error(excinfo, path)
    with pytest.raises(InputError, match="unknown piece format"):
        read_piece(tmp_path / "piece_0.txt", 0)


def test_missing_bias_means_zero(tmp_path):
    path = tmp_path / "p.npz"
    with open(path, "wb") as fh:
        np.savez(fh, weight=np.ones((3, 2)))
    np.testing.assert_array_equal(read_piece(path, 0).bias, np.zeros(3))


# --------------------------------------------------------------------------- piece folders


def test_piece_index_comes_from_the_file_name(tmp_path):
    w, b = np.ones((2, 3)), np.zeros(2)
    write_pth(tmp_path / "piece_2.pth", w * 2, b)
    write_npz(tmp_path / "piece_0.npz", w * 0, b)
    write_safetensors(tmp_path / "layer10.safetensors", w * 10, b)
    for i in (1, 3, 4, 5, 6, 7, 8, 9):
        write_pth(tmp_path / f"piece_{i}.pth", w * i, b)
    (tmp_path / "notes.txt").write_text("not a piece 11")
    (tmp_path / "._piece_0.pth").write_bytes(b"macOS resource fork")
    (tmp_path / "piece_11.pth").mkdir()
    files = piece_files(tmp_path)
    assert sorted(files) == list(range(11))
    assert files[10].name == "layer10.safetensors"
    pieces = load_pieces(tmp_path)
    assert [p.index for p in pieces.items] == list(range(11))
    assert [p.weight[0, 0] for p in pieces.items] == list(range(11))
    assert pieces.formats == ("npz", "pth", "safetensors")


def test_gaps_duplicates_and_empty_folders_are_refused(tmp_path):
    w, b = np.ones((2, 3)), np.zeros(2)
    gap = tmp_path / "gap"
    gap.mkdir()
    for i in (0, 1, 3):
        write_npz(gap / f"piece_{i}.npz", w, b)
    with pytest.raises(InputError, match=r"missing \[2\]") as excinfo:
        load_pieces(gap)
    one_line_error(excinfo, gap)
    dup = tmp_path / "dup"
    dup.mkdir()
    write_npz(dup / "piece_0.npz", w, b)
    write_npz(dup / "piece_1.npz", w, b)
    write_pth(dup / "piece_01.pth", w, b)
    with pytest.raises(InputError, match="two files for piece 1"):
        load_pieces(dup)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no piece files"):
        load_pieces(empty)
    with pytest.raises(InputError, match="no such folder"):
        load_pieces(tmp_path / "absent")


def test_bad_piece_in_a_folder_names_the_file(tmp_path):
    w, b = np.ones((2, 3)), np.zeros(2)
    write_pth(tmp_path / "piece_0.pth", w, b)
    (tmp_path / "piece_1.pth").write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(InputError) as excinfo:
        load_pieces(tmp_path)
    assert "piece_1.pth" in one_line_error(excinfo, tmp_path / "piece_1.pth")


# --------------------------------------------------------------------------- data CSV


def write_text(path: Path, text: str, *, encoding: str = "utf-8", newline: str = "\n") -> Path:
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    return path


def test_pred_and_true_may_sit_in_any_column(tmp_path):
    path = write_text(tmp_path / "d.csv", "pred,a,true,b\n1,2,3,4\n5,6,7,8\n")
    data = load_data(path)
    assert data.columns == ("a", "b")
    np.testing.assert_array_equal(data.x, [[2, 4], [6, 8]])
    np.testing.assert_array_equal(data.pred, [1, 5])
    np.testing.assert_array_equal(data.true, [3, 7])
    assert data.certifiable and data.rows == 2 and data.x.flags.c_contiguous


def test_only_true_is_not_certifiable(tmp_path):
    data = load_data(write_text(tmp_path / "d.csv", "a,b,true\n1,2,3\n"))
    assert data.pred is None and not data.certifiable
    np.testing.assert_array_equal(data.target, [3])


def test_only_pred(tmp_path):
    data = load_data(write_text(tmp_path / "d.csv", "a,pred\n1,2\n"))
    assert data.true is None and data.certifiable
    np.testing.assert_array_equal(data.target, [2])


@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("trailing", ["", "\n", "\n\n", "\n  \n"])
def test_bom_line_endings_and_trailing_newlines(tmp_path, bom, newline, trailing):
    text = "a, b ,pred,true\n1.5,-2,3e-2,4\n 5 ,6.25, .5 ,-0" + trailing
    path = write_text(tmp_path / "d.csv", text, encoding="utf-8-sig" if bom else "utf-8",
                      newline=newline)
    data = load_data(path)
    assert data.columns == ("a", "b")
    np.testing.assert_array_equal(data.x, [[1.5, -2], [5, 6.25]])
    np.testing.assert_array_equal(data.pred, [0.03, 0.5])
    np.testing.assert_array_equal(data.true, [4, 0])


def test_blank_lines_are_skipped_and_line_numbers_kept(tmp_path):
    path = write_text(tmp_path / "d.csv", "a,pred\n1,2\n\n3,4\n\n5,x\n")
    with pytest.raises(InputError, match=r"line 6, column 'pred': not a number: 'x'"):
        load_data(path)
    data = load_data(write_text(tmp_path / "ok.csv", "a,pred\n1,2\n\n3,4\n"))
    np.testing.assert_array_equal(data.x[:, 0], [1, 3])


@pytest.mark.parametrize("body, message", [
    ("1,2,3\n4,,6\n", r"line 3: missing value in column 'b'"),
    ("1,2,3\n4,5\n", r"line 3 has 2 fields, the header has 3"),
    ("1,2,3\n4,5,6,7\n", r"line 3 has 4 fields, the header has 3"),
    ("1,2,3\n4,5,6,\n", r"line 3 has 4 fields, the header has 3"),
    ("1,2,3\n4,abc,6\n", r"line 3, column 'b': not a number: 'abc'"),
    ("1,2,3\n4,\"5\",6\n", r"line 3, column 'b': not a number"),
    ("1,2,3\n4,5,nan\n", r"line 3, column 'pred' holds nan"),
    ("1,2,3\n4,5,-inf\n", r"line 3, column 'pred' holds -inf"),
    ("1,2,3\n4,1e999,6\n", r"line 3, column 'b' holds inf"),
    ("1,2,NaN\n", r"line 2, column 'pred' holds nan"),
    ("", "no data rows"),
    ("\n\n", "no data rows"),
])
def test_malformed_rows(tmp_path, body, message):
    path = write_text(tmp_path / "d.csv", "a,b,pred\n" + body)
    with pytest.raises(InputError, match=message) as excinfo:
        load_data(path)
    one_line_error(excinfo, path)


@pytest.mark.parametrize("text, message", [
    ("1,2,3\n4,5,6\n", "no header"),
    ("", "header of column names"),
    ("a,,pred\n1,2,3\n", "header of column names"),
    ("a,a,pred\n1,2,3\n", "duplicate column"),
    ("a,b\n1,2\n", "needs a 'pred' column"),
    ("pred,true\n1,2\n", "no input columns"),
])
def test_malformed_headers(tmp_path, text, message):
    path = write_text(tmp_path / "d.csv", text)
    with pytest.raises(InputError, match=message) as excinfo:
        load_data(path)
    one_line_error(excinfo, path)


def test_unreadable_data_files(tmp_path):
    for path in (tmp_path / "absent.csv", tmp_path):
        with pytest.raises(InputError, match="cannot read") as excinfo:
            load_data(path)
        one_line_error(excinfo, path)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("caf\xe9,pred\n1,2\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        load_data(latin)


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
formats = st.sampled_from(["{!r}", "{:.9g}", "{:.17g}", "{:.3e}", "{:.20f}", "{:.0f}", "{:E}",
                           "{:.25g}", "{:+.6f}"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(finite, formats), min_size=1, max_size=300))
def test_numbers_parse_exactly_like_float(tmp_path_factory, cells):
    texts = [fmt.format(v) for v, fmt in cells]
    texts = [t if np.isfinite(float(t)) else "1e308" for t in texts]  # 1.7975e308 rounds up
    texts += ["0"] * (-len(texts) % 3)
    rows = [texts[i:i + 3] for i in range(0, len(texts), 3)]
    path = tmp_path_factory.mktemp("csv") / "d.csv"
    path.write_text("a,b,pred\n" + "\n".join(",".join(r) for r in rows) + "\n")
    data = load_data(path)
    want = np.array([[float(t) for t in r] for r in rows])
    got = np.column_stack([data.x, data.pred])
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want))


decimals = st.builds(
    lambda sign, digits, point, exp: sign + (digits[:point] + "." + digits[point:]
                                              if point is not None else digits) + exp,
    st.sampled_from(["", "-", "+"]), st.text("0123456789", min_size=1, max_size=25),
    st.one_of(st.none(), st.integers(0, 25)),
    st.one_of(st.just(""), st.integers(-330, 330).map(lambda e: f"e{e}"),
              st.integers(-25, 25).map(lambda e: f"E{e:+03d}")))


@settings(max_examples=40, deadline=None)
@given(st.lists(decimals, min_size=2, max_size=200))
def test_decimal_strings_parse_exactly_like_float(tmp_path_factory, texts):
    texts = [t if np.isfinite(float(t)) else "7" for t in texts]
    texts += ["0"] * (len(texts) % 2)
    path = tmp_path_factory.mktemp("csv") / "d.csv"
    path.write_text("a,pred\n" + "\n".join(f"{a},{b}" for a, b in zip(texts[::2], texts[1::2])))
    data = load_data(path)
    np.testing.assert_array_equal(data.x[:, 0], [float(t) for t in texts[::2]])
    np.testing.assert_array_equal(data.pred, [float(t) for t in texts[1::2]])


def test_random_doubles_and_halfway_cases_parse_exactly(tmp_path):
    """repr() of doubles from random bit patterns (all binades), decimal strings across the
    exponent range, and integers halfway between doubles (ties to even) and their neighbours."""
    rng = np.random.default_rng(7)
    doubles = rng.integers(0, 2 ** 63, 20_000, dtype=np.int64).view(np.float64)
    doubles = doubles[np.isfinite(doubles)] * rng.choice([-1.0, 1.0], np.isfinite(doubles).sum())
    texts = [repr(float(v)) for v in doubles]
    texts += [f"{int(m)}e{int(e)}" for m, e in zip(rng.integers(1, 10 ** 18, 5000, dtype=np.int64),
                                                    rng.integers(-345, 300, 5000))]
    for p in range(54, 60):
        bases = rng.integers(1 << 52, 1 << 53, 500, dtype=np.int64).astype(object)
        for base in bases:
            mid = (int(base) << (p - 53)) + (1 << (p - 54))
            texts += [str(mid - 1), str(mid), str(mid + 1)]
    texts += ["9007199254740993", "9007199254740995", "2.2250738585072014e-308",
              "2.2250738585072011e-308", "4.9e-324", "1.7976931348623157e308", "0e999",
              "-0.0", "000123.4500", "1" + "0" * 17 + "e-40"]
    texts = [t for t in texts if np.isfinite(float(t))]
    path = tmp_path / "d.csv"
    path.write_text("a,pred\n" + "\n".join(f"{t},0" for t in texts) + "\n")
    got = load_data(path).x[:, 0]
    want = np.array([float(t) for t in texts])
    bad = np.flatnonzero((got != want) | (np.signbit(got) != np.signbit(want)))
    assert not len(bad), [(texts[k], got[k], want[k]) for k in bad[:5]]


def test_many_long_mantissas_take_the_bulk_path(tmp_path):
    """4400 cells for float() (more than the scanner's first list holds)."""
    rng = np.random.default_rng(5)
    values = rng.standard_normal((1100, 4)) * 10.0 ** rng.integers(-30, 30, (1100, 4))
    path = tmp_path / "d.csv"
    path.write_text("a,b,c,pred\n" + "\n".join(",".join(map(repr, row)) for row in values.tolist()))
    data = load_data(path)
    np.testing.assert_array_equal(np.column_stack([data.x, data.pred]), values)
    values[123, 2] = 0.0
    text = path.read_text().splitlines()
    text[124] = ",".join([repr(float(v)) for v in values[123, :2]] + ["0.1.2", repr(float(values[123, 3]))])
    path.write_text("\n".join(text))
    with pytest.raises(InputError, match=r"line 125, column 'c': not a number: '0.1.2'"):
        load_data(path)


def test_written_float32_data_round_trips(tmp_path):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((50, 7)).astype(np.float32)
    pred, true = rng.standard_normal(50).astype(np.float32), rng.standard_normal(50).astype(np.float32)
    data = load_data(write_csv(tmp_path / "d.csv", x, pred, true))
    # 9 significant digits pick out the float32 value exactly
    np.testing.assert_array_equal(data.x.astype(np.float32), x)
    np.testing.assert_array_equal(data.pred.astype(np.float32), pred)
    np.testing.assert_array_equal(data.true.astype(np.float32), true)


def test_puzzle_csv_matches_numpy(puzzle):
    path = puzzle / "historical_data.csv"
    data = load_data(path)
    want = np.loadtxt(path, delimiter=",", skiprows=1)
    assert data.x.shape == (10_000, 48) and data.columns[0] == "measurement_0"
    np.testing.assert_array_equal(data.x, want[:, :48])
    np.testing.assert_array_equal(data.pred, want[:, 48])
    np.testing.assert_array_equal(data.true, want[:, 49])


# --------------------------------------------------------------------------- finding things


def make_layout(root: Path, nested: bool) -> tuple[Path, Path]:
    top = root / "historical_data_and_pieces" if nested else root
    (top / "pieces").mkdir(parents=True)
    write_npz(top / "pieces" / "piece_0.npz", np.ones((1, 2)), np.zeros(1))
    csv = write_text(top / "historical_data.csv", "a,b,pred\n1,2,3\n")
    return top / "pieces", csv


def test_find_flat_layout(tmp_path):
    pieces, csv = make_layout(tmp_path, nested=False)
    assert find_pieces_folder(tmp_path) == pieces
    assert find_pieces_folder(pieces) == pieces
    assert find_data(pieces) == csv


def test_find_nested_layout(tmp_path):
    pieces, csv = make_layout(tmp_path, nested=True)
    assert find_pieces_folder(pieces.parent) == pieces
    assert find_pieces_folder(pieces) == pieces
    assert find_pieces_folder(tmp_path) == pieces
    assert find_data(pieces) == csv


def test_find_data_fallbacks_and_errors(tmp_path):
    pieces = tmp_path / "pieces"
    pieces.mkdir()
    with pytest.raises(InputError, match="pass --data"):
        find_data(pieces)
    other = write_text(tmp_path / "rows.csv", "a,pred\n1,2\n")
    assert find_data(pieces) == other
    write_text(tmp_path / "more.csv", "a,pred\n1,2\n")
    with pytest.raises(InputError, match="pass --data"):
        find_data(pieces)


def test_find_pieces_folder_errors(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        find_pieces_folder(tmp_path / "absent")
    with pytest.raises(InputError, match="not a folder"):
        find_pieces_folder(write_text(tmp_path / "f.txt", "x"))
    with pytest.raises(InputError, match="no piece files here"):
        find_pieces_folder(tmp_path)


def test_puzzle_layout_is_found(puzzle):
    assert find_pieces_folder(puzzle) == puzzle / "pieces"
    assert find_data(puzzle / "pieces") == puzzle / "historical_data.csv"
