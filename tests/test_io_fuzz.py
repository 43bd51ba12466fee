"""Fuzz the loaders: whatever the bytes, reading a piece or a data file either gives a
well-formed result or raises InputError with a one-line message. Nothing in a file is ever
run, and declared sizes are checked before anything is allocated."""
from __future__ import annotations

import io
import json
import os
import pickle
import secrets
import struct
import subprocess
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import dropnet.io
from dropnet.errors import InputError
from dropnet.io import load_data, read_piece
from helpers_pieces import (pth_archive, pth_bytes, safetensors_bytes, state_dict_pickle,
                            tensor_opcodes)

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

W = (np.arange(12, dtype=np.float32).reshape(4, 3) - 5.5) / 4
B = np.array([0.5, -1.25, 2.0, 0.0], dtype=np.float32)
VALID_PTH = pth_bytes(W, B)
VALID_NPZ = (lambda buf: (np.savez(buf, weight=W, bias=B), buf.getvalue())[1])(io.BytesIO())
VALID_SAFETENSORS = safetensors_bytes({"weight": W, "bias": B})
VALID = {"pth": VALID_PTH, "npz": VALID_NPZ, "safetensors": VALID_SAFETENSORS}


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory(prefix="dropnet_fuzz_") as folder:
        yield Path(folder)


def load(scratch: Path, blob: bytes, ext: str = "pth"):
    """read_piece on ``blob``; returns the Piece or the InputError (anything else fails)."""
    path = scratch / f"piece_0.{ext}"
    path.write_bytes(blob)
    try:
        piece = read_piece(path, 0)
    except InputError as exc:
        message = str(exc)
        assert "\n" not in message and str(path) in message, message
        return exc
    assert piece.weight.dtype == np.float64 and piece.weight.ndim == 2
    assert piece.bias.shape == (piece.weight.shape[0],)
    assert np.isfinite(piece.weight).all() and np.isfinite(piece.bias).all()
    return piece


def refused(scratch: Path, blob: bytes, ext: str = "pth", match: str | None = None) -> str:
    got = load(scratch, blob, ext)
    assert isinstance(got, InputError), "a malformed file was accepted"
    if match is not None:
        assert match in str(got), str(got)
    return str(got)


def same_as_valid(piece) -> bool:
    return np.array_equal(piece.weight, W) and np.array_equal(piece.bias, B)


def test_valid_fixtures_load(scratch):
    for ext, blob in VALID.items():
        assert same_as_valid(load(scratch, blob, ext))


# --------------------------------------------------------------------------- raw damage


@FUZZ
@given(st.binary(max_size=4096), st.sampled_from(sorted(VALID)))
def test_random_bytes_are_refused(scratch, blob, ext):
    refused(scratch, blob, ext)


@FUZZ
@given(st.data(), st.sampled_from(sorted(VALID)))
def test_truncated_files_are_refused(scratch, data, ext):
    blob = VALID[ext]
    cut = data.draw(st.integers(0, len(blob) - 1))
    refused(scratch, blob[:cut], ext)


@FUZZ
@given(st.data(), st.sampled_from(sorted(VALID)), st.integers(1, 4))
def test_bit_flips_are_refused_or_harmless(scratch, data, ext, flips):
    """Flips in CRC-protected content are refused; a flip that still loads (a zip time
    stamp, say) must give back exactly the original layer."""
    blob = bytearray(VALID[ext])
    for _ in range(flips):
        bit = data.draw(st.integers(0, 8 * len(blob) - 1))
        blob[bit // 8] ^= 1 << (bit % 8)
    got = load(scratch, bytes(blob), ext)
    if not isinstance(got, InputError) and ext != "safetensors":
        assert same_as_valid(got)


@FUZZ
@given(st.binary(min_size=1, max_size=64), st.integers(0, len(VALID_PTH)))
def test_spliced_bytes_are_refused_or_harmless(scratch, junk, at):
    got = load(scratch, VALID_PTH[:at] + junk + VALID_PTH[at:])
    if not isinstance(got, InputError):
        assert same_as_valid(got)


# --------------------------------------------------------------------------- hostile pickles


class Payload:
    """Pickles as a call of ``func(*args)``: what an attacker would put in data.pkl."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def hostile_payloads(marker: Path):
    touch = f"touch {marker}"
    import builtins

    payloads = {
        "os.system": Payload(os.system, touch),
        "builtins.eval": Payload(builtins.eval, f"open({str(marker)!r}, 'w')"),
        "builtins.exec": Payload(builtins.exec, f"open({str(marker)!r}, 'w')"),
        "subprocess.call": Payload(subprocess.call, ["touch", str(marker)]),
        "subprocess.Popen": Payload(subprocess.Popen, ["touch", str(marker)]),
        "builtins.getattr": Payload(getattr, Payload(__import__, "os"), "system"),
        "numpy array": np.arange(3.0),
        "pathlib": Payload(Path.touch, marker),
    }
    return payloads


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_forbidden_globals_are_refused_and_never_run(scratch, protocol):
    marker = Path(tempfile.gettempdir()) / f"pwned_{secrets.token_hex(8)}"
    try:
        for name, payload in hostile_payloads(marker).items():
            raw = pickle.dumps(payload, protocol=protocol)
            message = refused(scratch, pth_archive(raw), "pth")
            assert "refused" in message or "corrupt" in message, (name, message)
            # the same call hidden as the bias of an otherwise valid state dict
            inner = raw[2:-1] if raw.startswith(b"\x80") else raw[:-1]
            sneaky = (b"\x80\x02ccollections\nOrderedDict\n)R(" + b"X\x04\x00\x00\x00bias"
                      + inner + b"u.")
            refused(scratch, pth_archive(sneaky), "pth")
            assert not marker.exists(), f"{name} ran"
    finally:
        if marker.exists():
            marker.unlink()


@pytest.mark.parametrize("module, name", [
    ("os", "system"), ("posix", "system"), ("builtins", "eval"), ("__builtin__", "eval"),
    ("subprocess", "Popen"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_tensor"), ("torch", "load"), ("torch", "FloatTensor"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("collections", "deque"),
    ("torch", "ByteStorage"), ("torch", "IntStorage"), ("torch", "UntypedStorage"),
])
def test_each_forbidden_global_is_named(scratch, module, name):
    raw = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R."
    assert f"forbidden global {module}.{name}" in refused(scratch, pth_archive(raw))


def test_rebuild_parameter_wrapping_a_tensor_is_refused(scratch):
    tensor = tensor_opcodes("FloatStorage", "0", 12, 0, (4, 3), (3, 1))
    raw = (b"\x80\x02ccollections\nOrderedDict\n)R(X\x06\x00\x00\x00weight"
           b"ctorch._utils\n_rebuild_parameter\n(" + tensor + b"\x89ccollections\nOrderedDict\n)RtRu.")
    refused(scratch, pth_archive(raw, {"0": W.tobytes()}), match="_rebuild_parameter")


ODD_PICKLES = {
    "empty": b"",
    "no stop": b"\x80\x02}",
    "stop on empty stack": b"\x80\x02.",
    "two objects": b"\x80\x02}}.",
    "mark left open": b"\x80\x02(}.",
    "huge memo index": b"\x80\x02}r\xff\xff\xff\xff.",
    "huge memo get": b"\x80\x02j\xff\xff\xff\x7f.",
    "memo get unset": b"\x80\x02h\x05.",
    "long string declared": b"\x80\x02X\xff\xff\xff\xff" + b"a" * 10 + b".",
    "bytes8": b"\x80\x05\x8e" + struct.pack("<Q", 1 << 62) + b".",
    "binbytes8 huge": b"\x80\x04\x8e" + struct.pack("<Q", 2 ** 63 - 1) + b"x.",
    "frame huge": b"\x80\x04\x95" + struct.pack("<Q", 2 ** 63) + b"}.",
    "long4": b"\x80\x02\x8b\xff\xff\xff\x7f\x01.",
    "protocol 9": b"\x80\x09}.",
    "ext1": b"\x80\x02\x82\x01.",
    "inst": b"(ios\nsystem\nS'true'\n.",
    "obj": b"\x80\x02(cos\nsystem\nX\x04\x00\x00\x00trueo.",
    "newobj": b"\x80\x02cos\nsystem\n)\x81.",
    "persid text": b"\x80\x02P0\n.",
    "persid not storage": b"\x80\x02X\x01\x00\x00\x00aQ.",
    "reduce on dict": b"\x80\x02})R.",
    "build on tensor": b"\x80\x02}" + b"}b.",
    "build on storage type": b"\x80\x02ctorch\nFloatStorage\n}b.",
    "setitem on list": b"\x80\x02]K\x01K\x02s.",
    "setitems no target": b"\x80\x02(K\x01K\x02u.",
    "appends no target": b"\x80\x02(K\x01e.",
    "tuple key": b"\x80\x02}(K\x01tK\x02s.",
    "nested tuple key": b"\x80\x02}" + b"(" * 20_000 + b")" + b"t" * 20_000 + b"K\x01s.",
    "deep lists": b"\x80\x02" + b"]" * 10_000 + b"a" * 9_999 + b".",
    "pop empty": b"\x80\x020.",
    "dup empty": b"\x80\x022.",
    "tuple2 short": b"\x80\x02K\x01\x86.",
    "global no newline": b"\x80\x02cos",
    "stack global non-str": b"\x80\x02K\x01K\x02\x93.",
    "ordered dict with args": b"\x80\x02ccollections\nOrderedDict\n(]tR.",
    "dict of ints": b"\x80\x02}X\x06\x00\x00\x00weightK\x01s.",
    "empty state dict": b"\x80\x02ccollections\nOrderedDict\n)R.",
    "unicode error": b"\x80\x02X\x02\x00\x00\x00\xff\xfe.",
}


@pytest.mark.parametrize("name", sorted(ODD_PICKLES))
def test_odd_pickles_are_refused_quickly(scratch, name):
    start = time.perf_counter()
    tracemalloc.start()
    try:
        refused(scratch, pth_archive(ODD_PICKLES[name], {"0": W.tobytes()}))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 5.0  # generous: CI machines are busy
    assert peak < 64 << 20, f"{peak} bytes allocated"


@FUZZ
@given(st.binary(max_size=300))
def test_random_opcodes_are_refused(scratch, body):
    refused(scratch, pth_archive(b"\x80\x02" + body, {"0": W.tobytes(), "1": B.tobytes()}))


# --------------------------------------------------------------------------- geometry


def piece_with(weight_spec, bias_spec=None, storages=None, location="cpu") -> bytes:
    bias_spec = bias_spec or ("FloatStorage", "1", 4, 0, (4,), (1,))
    tensors = {"weight": (*weight_spec, location), "bias": (*bias_spec, location)}
    raw = {"0": W.tobytes(), "1": B.tobytes()} if storages is None else storages
    return pth_archive(state_dict_pickle(tensors), raw)


@pytest.mark.parametrize("spec, match", [
    (("FloatStorage", "0", 12, 0, (4, 4), (4, 1)), "overruns its storage"),
    (("FloatStorage", "0", 12, 1, (4, 3), (3, 1)), "overruns its storage"),
    (("FloatStorage", "0", 12, 0, (4, 3), (4, 1)), "overruns its storage"),
    (("FloatStorage", "0", 99, 0, (4, 3), (3, 1)), "holds 48 bytes, 396 needed"),
    (("DoubleStorage", "0", 12, 0, (4, 3), (3, 1)), "holds 48 bytes, 96 needed"),
    (("FloatStorage", "7", 12, 0, (4, 3), (3, 1)), "missing storage"),
    (("FloatStorage", "0", 12, 0, (4, 3), (3,)), "bad tensor geometry"),
    (("FloatStorage", "0", 12, 0, (4, -3), (3, 1)), "bad tensor geometry"),
    (("FloatStorage", "0", 12, -1, (4, 3), (3, 1)), "overruns its storage"),
    (("FloatStorage", "0", 12, 0, (5, 3), (0, 0)), "larger than its storage"),
    (("FloatStorage", "0", 12, 0, (3, 4), (4, 1)), "bias has shape"),
    (("FloatStorage", "0", 12, 0, (12,), (1,)), "weight has shape"),
    (("FloatStorage", "0", 0, 0, (0, 3), (3, 1)), "weight has shape"),
    (("FloatStorage", "1", 4, 0, (4, 3), (3, 1)), "overruns its storage"),
])
def test_bad_geometry_is_refused(scratch, spec, match):
    refused(scratch, piece_with(spec), match=match)


def test_one_storage_read_with_two_types_is_refused(scratch):
    blob = piece_with(("FloatStorage", "0", 12, 0, (4, 3), (3, 1)),
                      ("HalfStorage", "0", 12, 0, (4,), (1,)))
    refused(scratch, blob, match="two types or sizes")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused(scratch, bad):
    w = W.copy()
    w[2, 1] = bad
    refused(scratch, pth_bytes(w, B), match="NaN or Inf")
    b = B.copy()
    b[0] = bad
    refused(scratch, safetensors_bytes({"weight": W, "bias": b}), "safetensors", match="NaN or Inf")


HUGE = [
    ("pth numel", lambda: piece_with(("FloatStorage", "0", 1 << 40, 0, (1 << 20, 1 << 20),
                                      (1 << 20, 1)))),
    ("pth size", lambda: piece_with(("FloatStorage", "0", 12, 0, (1 << 30, 1 << 30), (1, 1)))),
    ("pth int64 wrap", lambda: piece_with(("FloatStorage", "0", 12, 0, (1 << 32, 1 << 32, 4),
                                           (0, 0, 0)))),
    ("pth numel just allowed", lambda: piece_with(("FloatStorage", "0", 1 << 26, 0, (1 << 13, 1 << 13),
                                                   (1 << 13, 1)))),
    ("pth long int", lambda: piece_with(("FloatStorage", "0", 10 ** 30, 0, (4, 3), (3, 1)))),
    ("pth storage declared huge", lambda: pth_archive(
        state_dict_pickle({"weight": ("FloatStorage", "0", 12, 0, (4, 3), (3, 1))}),
        {"0": W.tobytes()}).replace(struct.pack("<I", 48), struct.pack("<I", 0x7FFFFFF0))),
]


def npz_with_header(shape, dtype="<f8", data=b"") -> bytes:
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("weight.npy", npy)
    return buf.getvalue()


def safetensors_header(header: dict, body: bytes = b"") -> bytes:
    head = json.dumps(header).encode()
    return struct.pack("<Q", len(head)) + head + body


HUGE += [
    ("npz shape", lambda: npz_with_header((10 ** 6, 10 ** 6))),
    ("npz shape just allowed", lambda: npz_with_header((1 << 13, 1 << 13))),
    ("npz object", lambda: npz_with_header((3,), "|O")),
    ("safetensors shape", lambda: safetensors_header(
        {"weight": {"dtype": "F32", "shape": [2 ** 31, 2 ** 31], "data_offsets": [0, 2 ** 64]}})),
    ("safetensors wrap", lambda: safetensors_header(
        {"weight": {"dtype": "F32", "shape": [2 ** 32, 2 ** 32, 4], "data_offsets": [0, 0]}})),
    ("safetensors offsets", lambda: safetensors_header(
        {"weight": {"dtype": "F32", "shape": [4, 3], "data_offsets": [0, 10 ** 30]}})),
    ("safetensors inf", lambda: b"\x40\0\0\0\0\0\0\0" + b'{"weight":{"dtype":"F32","shape":[1e999],'
                                                    b'"data_offsets":[0,4]}}      '),
    ("safetensors header", lambda: struct.pack("<Q", 2 ** 63) + b"{}"),
]


@pytest.mark.parametrize("name, make", HUGE, ids=[h[0] for h in HUGE])
def test_huge_declared_sizes_are_refused_before_allocating(scratch, name, make):
    blob = make()
    ext = name.split()[0]
    start = time.perf_counter()
    tracemalloc.start()
    try:
        refused(scratch, blob, ext)  # an InputError, so no MemoryError either
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 5.0  # generous: CI machines are busy
    assert peak < 16 << 20, f"{peak} bytes allocated"


storage_types = st.sampled_from(["FloatStorage", "DoubleStorage", "HalfStorage",
                                 "BFloat16Storage", "IntStorage"])
small = st.integers(0, 6)
tensor_specs = st.tuples(storage_types, st.sampled_from(["0", "1", "2"]),
                         st.one_of(st.integers(0, 40), st.integers(0, 2 ** 70)),
                         st.one_of(small, st.integers(-3, 2 ** 40)),
                         st.lists(st.one_of(small, st.integers(-2, 2 ** 34)), max_size=3).map(tuple),
                         st.lists(st.one_of(small, st.integers(-2, 2 ** 34)), max_size=3).map(tuple))


@FUZZ
@given(st.dictionaries(st.sampled_from(["weight", "bias", "extra"]), tensor_specs, max_size=3),
       st.dictionaries(st.sampled_from(["0", "1", "3"]), st.binary(max_size=200), max_size=3),
       st.sampled_from(["cpu", "cuda:0", "mps"]))
def test_random_state_dicts_load_or_are_refused(scratch, tensors, storages, location):
    tensors = {k: (*v, location) for k, v in tensors.items()}
    got = load(scratch, pth_archive(state_dict_pickle(tensors), storages))
    if not isinstance(got, InputError):
        assert set(tensors) <= {"weight", "bias"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
entries = st.fixed_dictionaries({
    "dtype": st.sampled_from(["F32", "F64", "F16", "BF16", "I64", "U8", 3]),
    "shape": st.lists(st.integers(-1, 2 ** 40), max_size=3) | json_values,
    "data_offsets": st.lists(st.integers(-1, 2 ** 65), min_size=2, max_size=2) | json_values})


@FUZZ
@given(st.dictionaries(st.sampled_from(["weight", "bias", "__metadata__", "x"]),
                       entries | json_values, max_size=3), st.binary(max_size=128))
def test_random_safetensors_headers_load_or_are_refused(scratch, header, body):
    try:
        head = json.dumps(header).encode()
    except ValueError:
        assume(False)
    load(scratch, struct.pack("<Q", len(head)) + head + body, "safetensors")


def test_deeply_nested_safetensors_header_is_refused(scratch):
    refused(scratch, safetensors_header({}).replace(b"{}", b"[" * 100_000 + b"]" * 100_000),
            "safetensors")


# --------------------------------------------------------------------------- CSV


@FUZZ
@given(st.binary(max_size=2000))
def test_random_csv_bytes_load_or_are_refused(scratch, blob):
    check_csv(scratch, b"a,b,pred\n" + blob)


cells = st.one_of(st.floats(width=32).map(repr), st.integers(-10 ** 20, 10 ** 20).map(str),
                  st.sampled_from(["", " ", "nan", "-inf", "1e", "--1", ".", "1_0", "0x10",
                                   '"1"', "1,2", "\t3 ", "4\r", "é"]))


@FUZZ
@given(st.lists(st.lists(cells, min_size=1, max_size=4), max_size=12),
       st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_random_csv_tables_load_or_are_refused(scratch, rows, newline, bom):
    text = newline.join(["a,b,pred"] + [",".join(r) for r in rows])
    check_csv(scratch, (b"\xef\xbb\xbf" if bom else b"") + text.encode())


def check_csv(scratch: Path, blob: bytes) -> None:
    path = scratch / "data.csv"
    path.write_bytes(blob)
    try:
        data = load_data(path)
    except InputError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        return
    assert data.x.shape == (data.rows, 2) and data.pred.shape == (data.rows,)
    assert np.isfinite(data.x).all() and np.isfinite(data.pred).all()


def test_pickle_module_is_never_used_for_pieces(scratch, monkeypatch):
    """The .pth reader has a pickle machine of its own: even with pickle's loaders broken,
    a valid piece loads."""
    def boom(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(dropnet.io, "_PLANS", {})  # no cached plan: the pickle is run
    monkeypatch.setattr(pickle, "Unpickler", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "load", boom)
    assert same_as_valid(load(scratch, VALID_PTH))
