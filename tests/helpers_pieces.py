"""Tiny piece files for the loader and CLI tests, written without dropnet.writers.

* :func:`pth_archive`: a torch-style zip (``<prefix>data.pkl``, ``byteorder``, ``data/<key>``)
  around any pickle bytes, for odd and malicious cases;
* :func:`state_dict_pickle`: protocol-2 opcodes of ``OrderedDict(name -> _rebuild_tensor_v2(...))``
  the way torch emits them, with free choice of storage type, location and geometry;
* :func:`write_pth` (torch-free, float32) / :func:`torch_save` (torch, any dtype),
  :func:`write_npz`, :func:`write_safetensors`, :func:`write_csv`;
* :func:`make_network`: a small residual MLP whose pieces pair by a strongly negative
  diagonal of ``W_out W_in``, with a float32 forward pass for ``pred``.
"""
from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np

STORAGE = {np.dtype("float32"): "FloatStorage", np.dtype("float64"): "DoubleStorage",
           np.dtype("float16"): "HalfStorage"}


# --------------------------------------------------------------------------- pickle bytes


def _text(s: str) -> bytes:
    raw = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(raw)) + raw


def _int(v: int) -> bytes:
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if 0 <= v < 65536:
        return b"M" + struct.pack("<H", v)
    if -(2 ** 31) <= v < 2 ** 31:
        return b"J" + struct.pack("<i", v)
    raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _tuple(values) -> bytes:
    return b"(" + b"".join(_int(v) for v in values) + b"t"


def tensor_opcodes(storage_type: str, key: str, numel: int, offset: int, size, stride,
                   location: str = "cpu") -> bytes:
    """``_rebuild_tensor_v2((storage pid), offset, size, stride, False, OrderedDict())``."""
    return (b"ctorch._utils\n_rebuild_tensor_v2\n(("
            + _text("storage") + f"ctorch\n{storage_type}\n".encode() + _text(key)
            + _text(location) + _int(numel) + b"tQ" + _int(offset) + _tuple(size)
            + _tuple(stride) + b"\x89ccollections\nOrderedDict\n)RtR")


def state_dict_pickle(tensors: dict[str, tuple], metadata: bool = True) -> bytes:
    """``tensors``: name -> (storage_type, key, numel, offset, size, stride[, location])."""
    out = b"\x80\x02ccollections\nOrderedDict\n)R("
    for name, spec in tensors.items():
        out += _text(name) + tensor_opcodes(*spec)
    out += b"u"
    if metadata:
        out += (b"}" + _text("_metadata") + b"ccollections\nOrderedDict\n)R" + _text("")
                + b"}" + _text("version") + _int(1) + b"sssb")
    return out + b"."


def pth_archive(pickle_bytes: bytes, storages: dict[str, bytes] | None = None, *,
                prefix: str = "archive/", byteorder: str | None = "little",
                compression: int = zipfile.ZIP_STORED) -> bytes:
    """Zip bytes laid out like ``torch.save``'s archive around ``pickle_bytes``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        zf.writestr(prefix + "data.pkl", pickle_bytes)
        if byteorder is not None:
            zf.writestr(prefix + "byteorder", byteorder)
        for key, raw in (storages or {}).items():
            zf.writestr(prefix + "data/" + key, raw)
        zf.writestr(prefix + "version", "3\n")
    return buf.getvalue()


def pth_bytes(weight: np.ndarray, bias: np.ndarray, *, location: str = "cpu",
              byteorder: str = "little") -> bytes:
    """A torch-free ``torch.save(linear.state_dict())`` of float32/float64/float16 arrays."""
    weight, bias = np.ascontiguousarray(weight), np.ascontiguousarray(bias)
    order = "<" if byteorder == "little" else ">"
    stype = STORAGE[weight.dtype]
    tensors = {"weight": (stype, "0", weight.size, 0, weight.shape, (weight.shape[1], 1), location),
               "bias": (stype, "1", bias.size, 0, bias.shape, (1,), location)}
    raw = {"0": weight.astype(weight.dtype.newbyteorder(order)).tobytes(),
           "1": bias.astype(bias.dtype.newbyteorder(order)).tobytes()}
    return pth_archive(state_dict_pickle(tensors), raw, byteorder=byteorder)


def write_pth(path: Path, weight: np.ndarray, bias: np.ndarray, **kw) -> Path:
    path.write_bytes(pth_bytes(np.asarray(weight, np.float32), np.asarray(bias, np.float32), **kw))
    return path


def torch_save(path: Path, tensors: dict) -> Path:
    """``torch.save`` of an OrderedDict of torch tensors (the caller imports torch)."""
    import torch
    from collections import OrderedDict

    torch.save(OrderedDict(tensors), path)
    return path


def write_npz(path: Path, weight: np.ndarray, bias: np.ndarray) -> Path:
    with open(path, "wb") as fh:
        np.savez(fh, weight=np.asarray(weight, np.float32), bias=np.asarray(bias, np.float32))
    return path


def safetensors_bytes(tensors: dict[str, np.ndarray], dtype: str = "F32") -> bytes:
    header, body = {}, b""
    np_dtype = {"F32": "<f4", "F64": "<f8", "F16": "<f2"}[dtype]
    for name, arr in tensors.items():
        raw = np.ascontiguousarray(arr, dtype=np_dtype).tobytes()
        header[name] = {"dtype": dtype, "shape": list(np.shape(arr)),
                        "data_offsets": [len(body), len(body) + len(raw)]}
        body += raw
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + body


def write_safetensors(path: Path, weight: np.ndarray, bias: np.ndarray) -> Path:
    path.write_bytes(safetensors_bytes({"weight": weight, "bias": bias}))
    return path


WRITERS = {"pth": write_pth, "npz": write_npz, "safetensors": write_safetensors}


def write_csv(path: Path, x: np.ndarray, pred: np.ndarray | None = None,
              true: np.ndarray | None = None) -> Path:
    names = [f"measurement_{i}" for i in range(x.shape[1])]
    cols = [x[:, i] for i in range(x.shape[1])]
    for name, col in (("pred", pred), ("true", true)):
        if col is not None:
            names.append(name)
            cols.append(col)
    rows = [",".join(f"{v:.9g}" for v in row) for row in zip(*cols)]
    path.write_text(",".join(names) + "\n" + "\n".join(rows) + "\n")
    return path


# --------------------------------------------------------------------------- a network


def make_network(seed: int = 0, blocks: int = 4, d: int = 8, h: int = 16, rows: int = 256,
                 c: float = 0.5):
    """Weights (float32) of a residual MLP ``x + W_out relu(W_in x + b_in) + b_out`` per
    block, then a (1, d) last layer; ``W_out = -c W_in^T + noise`` so that pairing works.
    Returns (layers in execution order [(w_in, b_in), (w_out, b_out), ..., (w_last, b_last)],
    x, pred) with ``pred`` from a float32 forward pass."""
    rng = np.random.default_rng(seed)
    layers = []
    for _ in range(blocks):
        w_in = rng.standard_normal((h, d)) / np.sqrt(d)
        w_out = -c * w_in.T + 0.05 * rng.standard_normal((d, h)) / np.sqrt(h)
        layers += [(w_in, 0.1 * rng.standard_normal(h)), (w_out, 0.05 * rng.standard_normal(d))]
    layers.append((rng.standard_normal((1, d)) / np.sqrt(d), 0.1 * rng.standard_normal(1)))
    layers = [(w.astype(np.float32), b.astype(np.float32)) for w, b in layers]
    x = rng.standard_normal((rows, d)).astype(np.float32)
    act = x.copy()
    for k in range(blocks):
        (w_in, b_in), (w_out, b_out) = layers[2 * k], layers[2 * k + 1]
        act = act + np.maximum(act @ w_in.T + b_in, 0) @ w_out.T + b_out
    pred = (act @ layers[-1][0].T + layers[-1][1])[:, 0]
    return layers, x, pred.astype(np.float32)


def write_network(folder: Path, seed: int = 0, fmt: str = "pth", **kw):
    """Write a shuffled :func:`make_network` into ``folder/pieces`` and
    ``folder/historical_data.csv``; returns the true permutation (piece indices in
    execution order)."""
    layers, x, pred = make_network(seed, **kw)
    rng = np.random.default_rng(seed + 1)
    shuffle = rng.permutation(len(layers))  # shuffle[k] = piece index of layer k
    pieces = folder / "pieces"
    pieces.mkdir(parents=True, exist_ok=True)
    for k, (w, b) in enumerate(layers):
        WRITERS[fmt](pieces / f"piece_{shuffle[k]}.{fmt}", w, b)
    true = pred + 0.1 * rng.standard_normal(pred.shape).astype(np.float32)
    write_csv(folder / "historical_data.csv", x, pred, true)
    return [int(i) for i in shuffle]
