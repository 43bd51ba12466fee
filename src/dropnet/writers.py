"""Write pieces and data the way the puzzle ships them, without torch.

* :func:`write_pth` produces the zip archive of ``torch.save(linear.state_dict())``: a folder
  (``archive/`` by default, as the published pieces have) holding ``data.pkl`` (pickle
  protocol 2 of an ``OrderedDict`` of two tensors, with its ``_metadata``), ``.format_version``,
  ``.storage_alignment``, ``byteorder``, ``data/0`` and ``data/1`` (raw little-endian float32
  storages, 64-byte aligned, uncompressed), ``version`` and ``.data/serialization_id``.
  The pickle is emitted opcode by opcode and is byte-identical to torch's for the same
  shapes and storage location.
* :func:`write_npz`: a numpy archive of float32 arrays ``weight`` and ``bias``.
* :func:`write_safetensors`: 8-byte little-endian header length, JSON header (dtype ``F32``,
  shape, data_offsets; padded with spaces to a multiple of 8), then the raw bytes.
* :func:`write_csv`: ``measurement_0..measurement_{d-1},pred,true`` with 9 significant
  digits, which round-trips float32 values exactly.

Weights are rounded to float32 on writing (pass float32-representable values to keep them
exact); ``weight`` is (out, in), ``bias`` (out,).
"""
from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

ALIGNMENT = 64
FORMATS = ("pth", "npz", "safetensors")


def _as_f32(weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check a linear layer's shapes and return little-endian float32 C-contiguous copies."""
    weight, bias = np.asarray(weight), np.asarray(bias)
    if weight.ndim != 2 or bias.shape != (weight.shape[0],):
        raise ValueError(f"expected weight (out, in) and bias (out,), got {weight.shape}, {bias.shape}")
    return (np.ascontiguousarray(weight, dtype="<f4"), np.ascontiguousarray(bias, dtype="<f4"))


# --------------------------------------------------------------------------- pickle opcodes


class _PickleEmitter:
    """Emit protocol-2 opcodes the way ``pickle.Pickler`` orders and memoises them."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")
        self.memo = 0

    def put(self) -> int:
        """Memoise the top of the stack (BINPUT / LONG_BINPUT); returns the memo index."""
        i = self.memo
        self.out += b"q" + bytes([i]) if i < 256 else b"r" + struct.pack("<I", i)
        self.memo += 1
        return i

    def get(self, i: int) -> None:
        self.out += b"h" + bytes([i]) if i < 256 else b"j" + struct.pack("<I", i)

    def glob(self, module: str, name: str) -> int:
        self.out += b"c" + f"{module}\n{name}\n".encode("ascii")
        return self.put()

    def text(self, s: str) -> int:
        raw = s.encode("utf-8")
        self.out += b"X" + struct.pack("<I", len(raw)) + raw
        return self.put()

    def int(self, v: int) -> None:
        if 0 <= v < 256:
            self.out += b"K" + bytes([v])
        elif 0 <= v < 65536:
            self.out += b"M" + struct.pack("<H", v)
        elif -(2 ** 31) <= v < 2 ** 31:
            self.out += b"J" + struct.pack("<i", v)
        else:
            raise ValueError(f"integer {v} too large for a piece")

    def int_tuple(self, values: tuple[int, ...]) -> int:
        if not values:
            self.out += b")"  # pickle does not memoise the empty tuple
            return -1
        if len(values) > 3:
            self.out += b"("
        for v in values:
            self.int(v)
        self.out += {1: b"\x85", 2: b"\x86", 3: b"\x87"}.get(len(values), b"t")
        return self.put()


def state_dict_pickle(shapes: dict[str, tuple[int, ...]], location: str = "cpu") -> bytes:
    """``data.pkl`` of ``torch.save`` for an OrderedDict of contiguous float32 tensors.

    ``shapes`` maps tensor name -> shape in order; tensor k lives in storage key ``str(k)``.
    Torch memoises the location string once when it is the interned ``'cpu'`` and writes it
    anew per tensor otherwise (``'cuda:0'`` is built per call); this mirrors that, so the
    bytes equal torch's in both cases.
    """
    e = _PickleEmitter()
    memo = {"odict": e.glob("collections", "OrderedDict")}
    e.out += b")R"
    e.put()
    e.out += b"("
    for key, (name, shape) in enumerate(shapes.items()):
        e.text(name)
        _emit_tensor(e, memo, str(key), tuple(int(s) for s in shape), location)
    e.out += b"u}"
    e.put()
    e.text("_metadata")
    e.get(memo["odict"])
    e.out += b")R"
    e.put()
    e.text("")
    e.out += b"}"
    e.put()
    e.text("version")
    e.int(1)
    e.out += b"sssb."
    return bytes(e.out)


def _emit_global_once(e: _PickleEmitter, memo: dict, name: str, emit) -> None:
    """BINGET ``memo[name]`` if emitted before, else run ``emit()`` and remember its index."""
    if name in memo:
        e.get(memo[name])
    else:
        memo[name] = emit()


def _emit_tensor(e: _PickleEmitter, memo: dict, key: str, shape: tuple[int, ...],
                 location: str) -> None:
    """``_rebuild_tensor_v2(('storage', FloatStorage, key, location, numel), 0, shape,
    strides, False, OrderedDict())`` with torch's memoisation."""
    _emit_global_once(e, memo, "rebuild", lambda: e.glob("torch._utils", "_rebuild_tensor_v2"))
    e.out += b"(("
    _emit_global_once(e, memo, "storage", lambda: e.text("storage"))
    _emit_global_once(e, memo, "float", lambda: e.glob("torch", "FloatStorage"))
    e.text(key)
    if location == "cpu":
        _emit_global_once(e, memo, "cpu", lambda: e.text(location))
    else:
        e.text(location)
    e.int(int(np.prod(shape, dtype=np.int64)))
    e.out += b"t"
    e.put()
    e.out += b"Q"
    e.int(0)
    e.int_tuple(shape)
    e.int_tuple(_contiguous_strides(shape))
    e.out += b"\x89"  # requires_grad=False
    e.get(memo["odict"])
    e.out += b")R"  # backward_hooks = OrderedDict()
    e.put()
    e.out += b"t"
    e.put()
    e.out += b"R"
    e.put()


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(int(size), 1)
    return tuple(reversed(strides))


# --------------------------------------------------------------------------- zip container


def _zip_stored(entries: list[tuple[str, bytes]], alignment: int = ALIGNMENT) -> bytes:
    """An uncompressed zip of ``entries`` (name, bytes), each payload starting at a multiple
    of ``alignment`` (padding in a local ``FB`` extra field, as torch's writer does)."""
    body, central = bytearray(), bytearray()
    for name, data in entries:
        raw_name, crc, offset = name.encode("utf-8"), zlib.crc32(data), len(body)
        pad = -(offset + 30 + len(raw_name) + 4) % alignment
        extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, crc, len(data),
                            len(data), len(raw_name), len(extra)) + raw_name + extra + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0x21, crc,
                               len(data), len(data), len(raw_name), 0, 0, 0, 0, 0,
                               offset) + raw_name
    if len(body) + len(central) >= 2 ** 32 or len(entries) >= 65536:
        raise ValueError("piece too large for a zip without zip64")
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central),
                      len(body), 0)
    return bytes(body + central + end)


def write_pth(path: str | Path, weight: np.ndarray, bias: np.ndarray,
              archive_name: str | None = "archive", location: str = "cpu") -> Path:
    """Write ``{'weight': weight (out, in), 'bias': bias (out,)}`` as torch.save would.

    ``archive_name`` is the archive's top folder (None: the file's stem, as older torch
    versions did); ``location`` the storage device tag (the puzzle's pieces say 'cuda:0').
    """
    path = Path(path)
    weight, bias = _as_f32(weight, bias)
    prefix = (path.stem if archive_name is None else archive_name) + "/"
    pickled = state_dict_pickle({"weight": weight.shape, "bias": bias.shape}, location)
    payload = weight.tobytes() + bias.tobytes()
    serial = int(hashlib.sha256(pickled + payload).hexdigest(), 16) % 10 ** 40
    entries = [("data.pkl", pickled), (".format_version", b"1"), (".storage_alignment", b"64"),
               ("byteorder", b"little"), ("data/0", weight.tobytes()), ("data/1", bias.tobytes()),
               ("version", b"3\n"), (".data/serialization_id", f"{serial:040d}".encode())]
    path.write_bytes(_zip_stored([(prefix + name, data) for name, data in entries]))
    return path


# --------------------------------------------------------------------------- other formats


def write_npz(path: str | Path, weight: np.ndarray, bias: np.ndarray) -> Path:
    """Write float32 arrays ``weight`` (out, in) and ``bias`` (out,) to an uncompressed .npz."""
    path = Path(path)
    weight, bias = _as_f32(weight, bias)
    with open(path, "wb") as fh:
        np.savez(fh, weight=weight, bias=bias)
    return path


def write_safetensors(path: str | Path, weight: np.ndarray, bias: np.ndarray) -> Path:
    """Write ``weight`` (out, in) and ``bias`` (out,) as F32 tensors in safetensors layout."""
    path = Path(path)
    weight, bias = _as_f32(weight, bias)
    header, blobs, offset = {}, [], 0
    for name, arr in (("bias", bias), ("weight", weight)):
        raw = arr.tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return path


PIECE_WRITERS: dict[str, Callable[[str | Path, np.ndarray, np.ndarray], Path]] = {
    "pth": write_pth, "npz": write_npz, "safetensors": write_safetensors}


def write_piece(path: str | Path, weight: np.ndarray, bias: np.ndarray, fmt: str = "pth") -> Path:
    """Write one linear layer in format ``fmt`` ('pth', 'npz' or 'safetensors')."""
    if fmt not in PIECE_WRITERS:
        raise ValueError(f"unknown piece format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return PIECE_WRITERS[fmt](path, weight, bias)


def write_csv(path: str | Path, x: np.ndarray, pred: np.ndarray, true: np.ndarray) -> Path:
    """Write x (m, d), pred (m,) and true (m,) under the header
    ``measurement_0..measurement_{d-1},pred,true``, 9 significant digits per value."""
    path = Path(path)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or np.shape(pred) != (x.shape[0],) or np.shape(true) != (x.shape[0],):
        raise ValueError(f"expected x (m, d), pred (m,), true (m,); got {x.shape}, "
                         f"{np.shape(pred)}, {np.shape(true)}")
    table = np.column_stack([x, np.asarray(pred, np.float64), np.asarray(true, np.float64)])
    header = ",".join([f"measurement_{i}" for i in range(x.shape[1])] + ["pred", "true"])
    np.savetxt(path, table, fmt="%.9g", delimiter=",", header=header, comments="")
    return path
