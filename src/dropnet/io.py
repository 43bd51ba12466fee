"""Read the pieces of a dropped network and its data, without torch and without executing
anything from a file.

Pieces are ``piece_<i>.<ext>`` files holding one linear layer each (``weight`` of shape
(out, in) and ``bias`` of shape (out,)):

* ``.pth``: ``torch.save(linear.state_dict())`` zip archives. The zip is indexed by hand
  (stored or deflated members, CRC-checked) and ``data.pkl`` is run by a small pickle
  machine of its own that knows only the opcodes and the four globals a state dict needs
  (``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and the float storage
  types); nothing is imported and nothing is called on the file's say-so;
* ``.npz``: numpy archives with arrays ``weight`` and ``bias`` (no pickled objects);
* ``.safetensors``: an 8-byte header length, a JSON header and raw little-endian bytes.

Every declared size is checked against the bytes really present before anything is
allocated, and every problem is an :class:`~dropnet.errors.InputError` with a one-line
message that names the file.

The data is a CSV with a header; inputs are every column except ``pred`` and ``true``. It is
parsed by a compiled (numba) scanner that converts plain decimals of up to 18 significant
digits exactly (the correctly rounded double, as ``float()`` gives) and leaves anything else
(NaN, Inf, longer mantissas, subnormals, junk) to numpy's and then Python's parsers, which
name the line and column of a bad cell.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import struct
import warnings
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError

PIECE_PATTERN = re.compile(r"^(?:.*?)(\d+)\.(pth|pt|npz|safetensors)$")
PIECE_SUFFIXES = (".pth", ".pt", ".npz", ".safetensors")
MAX_PICKLE_BYTES = 1 << 16  # a state dict of two tensors pickles to a few hundred bytes
MAX_PIECE_ELEMENTS = 1 << 26  # refuse declared tensors above 64 Mi elements before allocating
MAX_PIECE_BYTES = 1 << 31  # refuse piece files above 2 GiB before reading them
MAX_TENSORS = 16  # a linear layer's state dict holds two
MAX_DATA_BYTES = 1 << 32  # refuse CSV files above 4 GiB before reading them

# torch storage class name -> numpy dtype name ("bfloat16" is widened by hand)
_TORCH_STORAGES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
}
_SAFETENSORS_DTYPES = {"F32": "float32", "F64": "float64", "F16": "float16", "BF16": "bfloat16"}
_ITEMSIZE = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}
_NUMPY_CODE = {"float32": "f4", "float64": "f8", "float16": "f2", "bfloat16": "u2"}


@dataclass(frozen=True)
class Piece:
    """One linear layer: ``weight`` (out, in) and ``bias`` (out,), float64, and its source."""

    index: int
    weight: np.ndarray
    bias: np.ndarray
    path: Path
    source_dtype: str = "float32"


@dataclass(frozen=True)
class Pieces:
    """All pieces of a folder, ``items[i]`` being ``piece_<i>``."""

    items: tuple[Piece, ...]
    folder: Path
    formats: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class Data:
    """Rows of data: inputs ``x`` (m, d), the intact model's ``pred`` (m,) and target ``true``
    (m,), each float64 (``pred``/``true`` None when the CSV has no such column)."""

    x: np.ndarray
    pred: np.ndarray | None
    true: np.ndarray | None
    columns: tuple[str, ...]
    path: Path | None = None

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])

    @property
    def target(self) -> np.ndarray:
        """What the search fits: ``pred`` when present, else ``true``."""
        return self.pred if self.pred is not None else self.true  # type: ignore[return-value]

    @property
    def certifiable(self) -> bool:
        return self.pred is not None


class _Refused(Exception):
    """Internal: a file is malformed or asks for something not allowed (message, no path)."""


def _as_path(path: str | Path) -> Path:
    return path if isinstance(path, Path) else Path(path)


def _read_file(path: Path, limit: int, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > limit:
                raise InputError(f"{path}: {size} bytes is too large for {what}")
            return fh.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


# --------------------------------------------------------------------------- zip


class _Zip:
    """A zip archive held in memory: members located through the central directory,
    read (stored or deflated, nothing else) and CRC-checked on demand."""

    def __init__(self, blob: bytes):
        self.blob = blob
        self.members = self._index(blob)

    @staticmethod
    def _index(blob: bytes) -> dict[str, tuple[int, int, int, int, int]]:
        n = len(blob)
        if n < 22:
            raise _Refused("not a zip archive (too short)")
        eocd = n - 22
        if blob[eocd:eocd + 4] != b"PK\x05\x06":
            eocd = blob.rfind(b"PK\x05\x06", max(0, n - 22 - 65535))
            if eocd < 0:
                raise _Refused("not a zip archive (no end of central directory)")
        (disk, cd_disk, on_disk, total, cd_size, cd_off, _) = struct.unpack_from(
            "<HHHHIIH", blob, eocd + 4)
        if total == 0xFFFF or cd_size == 0xFFFFFFFF or cd_off == 0xFFFFFFFF:
            return _Zip._index_zip64(blob)
        if disk or cd_disk or on_disk != total:
            raise _Refused("multi-volume zip archives are not supported")
        if cd_off + cd_size > eocd:
            raise _Refused("central directory overruns the archive")
        members: dict[str, tuple[int, int, int, int, int]] = {}
        p = cd_off
        for _ in range(total):
            if blob[p:p + 4] != b"PK\x01\x02" or p + 46 > eocd:
                raise _Refused("corrupt central directory")
            (flags, method, crc, csize, usize, nlen, elen, clen, local) = struct.unpack_from(
                "<8xHH4xIIIHHH8xI", blob, p)
            name = blob[p + 46:p + 46 + nlen].decode("utf-8", "replace")
            p += 46 + nlen + elen + clen
            if csize == 0xFFFFFFFF or usize == 0xFFFFFFFF or local == 0xFFFFFFFF:
                return _Zip._index_zip64(blob)
            if flags & 1:
                raise _Refused(f"member {name!r:.60} is encrypted")
            if name in members:
                raise _Refused(f"member {name!r:.60} appears twice")
            members[name] = (local, csize, usize, crc, method)
        if p > eocd:
            raise _Refused("corrupt central directory")
        return members

    @staticmethod
    def _index_zip64(blob: bytes) -> dict[str, tuple[int, int, int, int, int]]:
        """Large (zip64) archives: let the standard library read the directory."""
        try:
            infos = zipfile.ZipFile(io.BytesIO(blob)).infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError,
                struct.error, UnicodeDecodeError, NotImplementedError) as exc:
            raise _Refused(f"not a readable zip archive ({_one_line(exc, 120)})") from None
        members = {}
        for info in infos:
            try:  # the name as the fast path decodes it (it is compared to the local header)
                name = info.orig_filename.encode(
                    "utf-8" if info.flag_bits & 0x800 else "cp437").decode("utf-8", "replace")
            except UnicodeEncodeError:
                name = info.orig_filename
            if info.flag_bits & 1:
                raise _Refused(f"member {name!r:.60} is encrypted")
            if name in members:
                raise _Refused(f"member {name!r:.60} appears twice")
            members[name] = (info.header_offset, info.compress_size, info.file_size, info.CRC,
                             info.compress_type)
        return members

    def size(self, name: str) -> int:
        return self.members[name][2]

    def read(self, name: str, limit: int) -> memoryview:
        """The bytes of member ``name`` (its declared size must not exceed ``limit``)."""
        try:
            local, csize, usize, crc, method = self.members[name]
        except KeyError:
            raise _Refused(f"missing member {name!r:.60}") from None
        if method != 0 and usize > limit:  # stored members are views of the file itself
            raise _Refused(f"member {name!r:.60} declares {usize} bytes, more than allowed")
        blob = self.blob
        if blob[local:local + 4] != b"PK\x03\x04" or local + 30 > len(blob):
            raise _Refused(f"member {name!r:.60}: bad local header")
        nlen, elen = struct.unpack_from("<HH", blob, local + 26)
        if blob[local + 30:local + 30 + nlen].decode("utf-8", "replace") != name:
            raise _Refused(f"member {name!r:.60}: local header names another file")
        start = local + 30 + nlen + elen
        end = start + csize
        if end > len(blob):
            raise _Refused(f"member {name!r:.60} is truncated")
        data = memoryview(blob)[start:end]
        if method == 8:
            if csize > 0 and usize // csize > 2000:
                raise _Refused(f"member {name!r:.60}: implausible compression ratio")
            inflater = zlib.decompressobj(-15)
            try:
                data = memoryview(inflater.decompress(data, usize))
            except zlib.error as exc:
                raise _Refused(f"member {name!r:.60}: bad deflate data ({exc})") from None
        elif method != 0:
            raise _Refused(f"member {name!r:.60} uses unsupported compression {method}")
        if len(data) != usize:
            raise _Refused(f"member {name!r:.60} holds {len(data)} bytes, {usize} declared")
        if zlib.crc32(data) != crc:
            raise _Refused(f"member {name!r:.60} fails its CRC check (corrupt file)")
        return data


# --------------------------------------------------------------------------- .pth


class _Global:
    """A global a state-dict pickle may name: OrderedDict, the tensor rebuilder or a storage
    type (``dtype`` set). Only these markers exist; nothing is ever imported."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: str | None = None):
        self.name, self.dtype = name, dtype


_ORDERED_DICT = _Global("collections.OrderedDict")
_REBUILD_V2 = _Global("torch._utils._rebuild_tensor_v2")
_GLOBALS = {("collections", "OrderedDict"): _ORDERED_DICT,
            ("torch._utils", "_rebuild_tensor_v2"): _REBUILD_V2}
_GLOBALS.update({("torch", name): _Global(f"torch.{name}", dtype)
                 for name, dtype in _TORCH_STORAGES.items()})


class _StorageRef:
    """A storage as the pickle declares it (type, key, element count); read later."""

    __slots__ = ("dtype", "key", "numel")

    def __init__(self, dtype: str, key: str, numel: int):
        self.dtype, self.key, self.numel = dtype, key, numel


class _TensorRef:
    """A tensor as the pickle declares it: a validated view of a declared storage."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: _StorageRef, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


_CONTAINERS = (dict, OrderedDict)


def _key(key):
    """Dict keys in a state dict are names; anything else (e.g. a deeply nested tuple whose
    hash would recurse in C) is refused before it is hashed."""
    if type(key) is not str:
        raise _Refused("a dict key that is not a string")
    return key


# A plan: the state dict a pickle declares, as (name, dtype, storage key, storage numel,
# offset, size, stride) per tensor. It depends on the pickle bytes alone (the machine never
# looks at storage contents), so pieces with identical pickles share one plan.
_Plan = tuple
_PLANS: dict[bytes, _Plan] = {}


class _PickleMachine:
    """Runs ``data.pkl`` on a pickle machine that knows only what a state dict of tensors
    needs (protocols 2 to 5): no import, no call other than OrderedDict() and the tensor
    rebuilder, memo and stack bounded by the (bounded) pickle size. Storages and tensors
    stay symbolic: geometry is checked against the declared storage sizes here, the bytes
    are read and checked against the archive when the plan is carried out."""

    def __init__(self):
        self.storages: dict[str, _StorageRef] = {}
        self.tensors = 0

    def storage(self, pid) -> _StorageRef:
        if not (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage"):
            raise _Refused("unsupported persistent id (not a tensor storage)")
        _, kind, key, location, numel = pid
        if not isinstance(kind, _Global) or kind.dtype is None:
            raise _Refused("storage of an unsupported type")
        if type(key) is not str or type(location) is not str:
            raise _Refused("malformed storage key or location")
        if type(numel) is not int or not 0 <= numel <= MAX_PIECE_ELEMENTS:
            raise _Refused(f"storage of {numel if type(numel) is int else '?'} elements refused")
        seen = self.storages.get(key)
        if seen is not None:
            if seen.numel != numel or seen.dtype != kind.dtype:
                raise _Refused(f"storage {key!r:.40} used with two types or sizes")
            return seen
        if len(self.storages) >= MAX_TENSORS:
            raise _Refused("too many storages for a state dict")
        ref = self.storages[key] = _StorageRef(kind.dtype, key, numel)
        return ref

    def rebuild(self, args) -> _TensorRef:
        """``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
        backward_hooks[, metadata])``, checked against the declared storage."""
        if type(args) is not tuple or not 4 <= len(args) <= 7:
            raise _Refused("malformed tensor arguments")
        storage, offset, size, stride = args[:4]
        if type(storage) is not _StorageRef:
            raise _Refused("tensor without a storage")
        self.tensors += 1
        if self.tensors > MAX_TENSORS:
            raise _Refused("too many tensors for a state dict")
        if (type(size) is not tuple or type(stride) is not tuple or type(offset) is not int
                or len(size) != len(stride) or len(size) > 8
                or not all(type(s) is int and s >= 0 for s in size + stride)):
            raise _Refused("bad tensor geometry")
        numel, have = math.prod(size), storage.numel
        if numel > MAX_PIECE_ELEMENTS:
            raise _Refused(f"tensor of size {size} is too large")
        if numel == 0:
            if not 0 <= offset <= have:
                raise _Refused(f"tensor offset {offset} beyond its storage of {have}")
        else:
            last = offset + sum((s - 1) * st for s, st in zip(size, stride))
            if offset < 0 or last >= have:
                raise _Refused(f"tensor of size {size} at offset {offset} overruns its "
                               f"storage of {have}")
            if numel > have:
                raise _Refused(f"tensor of size {size} is larger than its storage of {have} "
                               "(expanded tensors are not supported)")
        return _TensorRef(storage, offset, size, stride)

    def run(self, data: bytes):
        """Interpret the pickle; returns the object STOP leaves."""
        n = len(data)
        unpack = struct.unpack_from
        stack: list = []
        marks: list[int] = []
        memo: dict[int, object] = {}
        i = 0
        while i < n:
            op = data[i]
            i += 1
            if op == 0x71:  # q BINPUT
                memo[data[i]] = stack[-1]
                i += 1
            elif op == 0x68:  # h BINGET
                stack.append(memo[data[i]])
                i += 1
            elif op == 0x58:  # X BINUNICODE
                (length,) = unpack("<I", data, i)
                i += 4
                if i + length > n:
                    raise _Refused("truncated string")
                stack.append(data[i:i + length].decode("utf-8"))
                i += length
            elif op == 0x8C:  # SHORT_BINUNICODE
                length = data[i]
                i += 1
                if i + length > n:
                    raise _Refused("truncated string")
                stack.append(data[i:i + length].decode("utf-8"))
                i += length
            elif op == 0x4B:  # K BININT1
                stack.append(data[i])
                i += 1
            elif op == 0x4D:  # M BININT2
                stack.append(unpack("<H", data, i)[0])
                i += 2
            elif op == 0x4A:  # J BININT
                stack.append(unpack("<i", data, i)[0])
                i += 4
            elif op == 0x8A:  # LONG1
                length = data[i]
                i += 1
                if length > 8 or i + length > n:
                    raise _Refused("integer too long")
                stack.append(int.from_bytes(data[i:i + length], "little", signed=True))
                i += length
            elif op == 0x28:  # ( MARK
                marks.append(len(stack))
            elif op == 0x74:  # t TUPLE
                k = marks.pop()
                items = tuple(stack[k:])
                del stack[k:]
                stack.append(items)
            elif op == 0x29:  # ) EMPTY_TUPLE
                stack.append(())
            elif op == 0x85:  # TUPLE1
                stack[-1] = (stack[-1],)
            elif op == 0x86:  # TUPLE2
                stack[-2:] = [(stack[-2], stack[-1])]
            elif op == 0x87:  # TUPLE3
                stack[-3:] = [(stack[-3], stack[-2], stack[-1])]
            elif op == 0x89:  # NEWFALSE
                stack.append(False)
            elif op == 0x88:  # NEWTRUE
                stack.append(True)
            elif op == 0x4E:  # N NONE
                stack.append(None)
            elif op == 0x51:  # Q BINPERSID
                stack[-1] = self.storage(stack[-1])
            elif op == 0x52:  # R REDUCE
                args = stack.pop()
                func = stack[-1]
                if func is _REBUILD_V2:
                    stack[-1] = self.rebuild(args)
                elif func is _ORDERED_DICT and type(args) is tuple and not args:
                    stack[-1] = OrderedDict()
                else:
                    raise _Refused("call of something other than OrderedDict() or a tensor rebuild")
            elif op == 0x63:  # c GLOBAL
                end1 = data.find(b"\n", i, i + 256)
                end2 = data.find(b"\n", end1 + 1, end1 + 257) if end1 >= 0 else -1
                if end2 < 0:
                    raise _Refused("malformed GLOBAL")
                module = data[i:end1].decode("utf-8", "replace")
                name = data[end1 + 1:end2].decode("utf-8", "replace")
                i = end2 + 1
                stack.append(self.find_global(module, name))
            elif op == 0x93:  # STACK_GLOBAL
                name = stack.pop()
                module = stack.pop()
                if type(module) is not str or type(name) is not str:
                    raise _Refused("malformed STACK_GLOBAL")
                stack.append(self.find_global(module, name))
            elif op == 0x7D:  # } EMPTY_DICT
                stack.append({})
            elif op == 0x5D:  # ] EMPTY_LIST
                stack.append([])
            elif op == 0x75:  # u SETITEMS
                k = marks.pop()
                target = stack[k - 1] if k else None
                if type(target) not in _CONTAINERS or (len(stack) - k) % 2:
                    raise _Refused("SETITEMS on something other than a dict")
                for j in range(k, len(stack), 2):
                    target[_key(stack[j])] = stack[j + 1]
                del stack[k:]
            elif op == 0x73:  # s SETITEM
                value = stack.pop()
                key = stack.pop()
                if type(stack[-1]) not in _CONTAINERS:
                    raise _Refused("SETITEM on something other than a dict")
                stack[-1][_key(key)] = value
            elif op == 0x64:  # d DICT
                k = marks.pop()
                items = stack[k:]
                del stack[k:]
                if len(items) % 2:
                    raise _Refused("odd DICT")
                stack.append({_key(k): v for k, v in zip(items[::2], items[1::2])})
            elif op == 0x61:  # a APPEND
                value = stack.pop()
                if type(stack[-1]) is not list:
                    raise _Refused("APPEND to something other than a list")
                stack[-1].append(value)
            elif op == 0x65:  # e APPENDS
                k = marks.pop()
                if not k or type(stack[k - 1]) is not list:
                    raise _Refused("APPENDS to something other than a list")
                stack[k - 1].extend(stack[k:])
                del stack[k:]
            elif op == 0x6C:  # l LIST
                k = marks.pop()
                items = stack[k:]
                del stack[k:]
                stack.append(items)
            elif op == 0x62:  # b BUILD (the state dict's _metadata: checked, then dropped)
                state = stack.pop()
                if type(stack[-1]) is not OrderedDict or not (
                        type(state) is dict or (type(state) is tuple and len(state) == 2
                                                and all(s is None or type(s) is dict for s in state))):
                    raise _Refused("BUILD of something other than a state dict")
            elif op == 0x72:  # r LONG_BINPUT
                (k,) = unpack("<I", data, i)
                i += 4
                memo[k] = stack[-1]
            elif op == 0x6A:  # j LONG_BINGET
                (k,) = unpack("<I", data, i)
                i += 4
                stack.append(memo[k])
            elif op == 0x94:  # MEMOIZE
                memo[len(memo)] = stack[-1]
            elif op == 0x80:  # PROTO
                if data[i] > 5:
                    raise _Refused(f"unsupported pickle protocol {data[i]}")
                i += 1
            elif op == 0x95:  # FRAME (frames are inline; the length is advisory)
                i += 8
            elif op == 0x47:  # G BINFLOAT
                stack.append(unpack(">d", data, i)[0])
                i += 8
            elif op == 0x30:  # 0 POP
                if len(stack) > (marks[-1] if marks else 0):
                    stack.pop()
                else:
                    marks.pop()
            elif op == 0x31:  # 1 POP_MARK
                del stack[marks.pop():]
            elif op == 0x32:  # 2 DUP
                stack.append(stack[-1])
            elif op == 0x2E:  # . STOP
                if len(stack) != 1 or marks:
                    raise _Refused("malformed pickle (stack not empty at STOP)")
                return stack[0]
            else:
                raise _Refused(f"unsupported pickle opcode 0x{op:02x} at byte {i - 1}")
        raise _Refused("pickle ends without STOP")

    @staticmethod
    def find_global(module: str, name: str) -> _Global:
        found = _GLOBALS.get((module, name))
        if found is None:
            raise _Refused(f"forbidden global {module[:60]}.{name[:60]}")
        return found


def _plan(data: bytes) -> _Plan:
    """The state dict ``data.pkl`` declares (cached by its bytes)."""
    plan = _PLANS.get(data)
    if plan is None:
        obj = _PickleMachine().run(data)
        if type(obj) not in _CONTAINERS or not obj or not all(
                type(v) is _TensorRef for v in obj.values()):
            raise _Refused("not a state dict of tensors")
        plan = tuple((name, t.storage.dtype, t.storage.key, t.storage.numel, t.offset, t.size,
                      t.stride) for name, t in obj.items())
        if len(_PLANS) >= 256:
            _PLANS.clear()
        _PLANS[data] = plan
    return plan


def _carry_out(plan: _Plan, archive: _Zip, prefix: str, order: str) -> dict[str, np.ndarray]:
    """Read the storages a plan names from the archive and cut its tensors (float64 copies)."""
    storages: dict[str, np.ndarray] = {}
    out = {}
    for name, dtype, key, numel, offset, size, stride in plan:
        array = storages.get(key)
        if array is None:
            member = f"{prefix}data/{key}"
            if member not in archive.members:
                raise _Refused(f"missing storage {member!r:.60}")
            need = numel * _ITEMSIZE[dtype]
            declared = archive.size(member)
            if declared < need:
                raise _Refused(f"storage {member!r:.60} holds {declared} bytes, {need} needed")
            raw = archive.read(member, need + 4096)
            array = np.frombuffer(raw, dtype=order + _NUMPY_CODE[dtype], count=numel)
            if dtype == "bfloat16":
                array = (array.astype(np.uint32) << 16).view(np.float32)
            storages[key] = array
        numel = math.prod(size)
        contiguous, step = True, 1
        for s, st in zip(reversed(size), reversed(stride)):
            if s != 1 and st != step:
                contiguous = False
                break
            step *= s
        if numel == 0:
            out[name] = np.zeros(size, dtype=np.float64)
        elif contiguous:
            out[name] = array[offset:offset + numel].astype(np.float64).reshape(size)
        else:
            item = array.itemsize
            view = np.lib.stride_tricks.as_strided(
                array[offset:], shape=size, strides=tuple(s * item for s in stride),
                writeable=False)
            out[name] = np.array(view, dtype=np.float64)
    return out


def read_pth(path: str | Path) -> dict[str, np.ndarray]:
    """Read a ``torch.save``'d state dict of tensors as ``{name: float64 array}``."""
    path = _as_path(path)
    blob = _read_file(path, MAX_PIECE_BYTES, "a piece")
    try:
        archive = _Zip(blob)
        pickles = [n for n in archive.members if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise _Refused("not a torch zip archive (no single data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in archive.members:
            byteorder = bytes(archive.read(prefix + "byteorder", 16)).decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise _Refused(f"unknown byte order {byteorder!r:.20}")
        if archive.size(pickles[0]) > MAX_PICKLE_BYTES:
            raise _Refused(f"data.pkl of {archive.size(pickles[0])} bytes is too large for a "
                           "state dict")
        plan = _plan(bytes(archive.read(pickles[0], MAX_PICKLE_BYTES)))
        return _carry_out(plan, archive, prefix, "<" if byteorder == "little" else ">")
    except _Refused as exc:
        raise InputError(f"{path}: refused: {_one_line(exc)}") from None
    except InputError:
        raise
    except Exception as exc:  # any slip of a malformed pickle: stack underflow, bad memo ...
        raise InputError(f"{path}: corrupt torch archive ({type(exc).__name__}: "
                         f"{_one_line(exc, 200)})") from None


# --------------------------------------------------------------------------- others


def _npy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One ``.npy`` member: header checked (dtype, size against the member's size) before
    any data is read."""
    with zf.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise _Refused(f"{info.filename!r:.40}: unsupported .npy version {version}")
        if dtype.kind not in "fiu" or dtype.hasobject or dtype.fields is not None:
            raise _Refused(f"array {info.filename!r:.40} has dtype {dtype}")
        if not all(type(s) is int and s >= 0 for s in shape):
            raise _Refused(f"array {info.filename!r:.40} has shape {shape}")
        numel = math.prod(shape)
        if numel > MAX_PIECE_ELEMENTS:
            raise _Refused(f"array {info.filename!r:.40} of shape {shape} is too large")
        nbytes = numel * dtype.itemsize
        if fh.tell() + nbytes != info.file_size:
            raise _Refused(f"array {info.filename!r:.40} of shape {shape} does not match its "
                           f"{info.file_size} bytes")
        raw = fh.read(nbytes)
        if len(raw) != nbytes:
            raise _Refused(f"array {info.filename!r:.40} is truncated")
        arr = np.frombuffer(raw, dtype=dtype, count=numel)
        return arr.reshape(shape, order="F" if fortran else "C").astype(np.float64)


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read a ``.npz`` archive of numeric arrays (pickled objects refused) as float64."""
    path = Path(path)
    blob = _read_file(path, MAX_PIECE_BYTES, "a piece")
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_TENSORS:
                raise _Refused(f"{len(infos)} arrays, too many for a linear layer")
            out = {}
            for info in infos:
                if not info.filename.endswith(".npy"):
                    raise _Refused(f"member {info.filename!r:.40} is not a .npy array")
                out[info.filename[:-4]] = _npy_member(zf, info)
            return out
    except _Refused as exc:
        raise InputError(f"{path}: refused: {_one_line(exc)}") from None
    except Exception as exc:  # zipfile and numpy raise many types for corrupt archives
        raise InputError(f"{path}: not a readable .npz archive ({type(exc).__name__}: "
                         f"{_one_line(exc, 200)})") from None


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Read a ``.safetensors`` file (JSON header + raw bytes) as float64 arrays."""
    path = Path(path)
    blob = _read_file(path, MAX_PIECE_BYTES, "a piece")
    if len(blob) < 8:
        raise InputError(f"{path}: truncated safetensors file")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > min(len(blob) - 8, 100_000_000):
        raise InputError(f"{path}: safetensors header of {header_len} bytes overruns the file")
    try:
        header = json.loads(blob[8: 8 + header_len])
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InputError(f"{path}: safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise InputError(f"{path}: safetensors header is not a JSON object")
    if len(header) > MAX_TENSORS + 1:
        raise InputError(f"{path}: {len(header)} tensors, too many for a linear layer")
    body = memoryview(blob)[8 + header_len:]
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        out[name] = _safetensors_tensor(path, name, spec, body)
    return out


def _safetensors_tensor(path: Path, name: str, spec, body: memoryview) -> np.ndarray:
    try:
        dtype = _SAFETENSORS_DTYPES[spec["dtype"]]
        shape = tuple(spec["shape"])
        begin, end = spec["data_offsets"]
        if not all(type(v) is int for v in (*shape, begin, end)):
            raise TypeError
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path}: tensor {name!r:.40} has an unsupported or malformed entry") from None
    if len(shape) > 8 or any(s < 0 for s in shape) or math.prod(shape) > MAX_PIECE_ELEMENTS:
        raise InputError(f"{path}: tensor {name!r:.40} has shape {str(shape)[:60]}")
    numel, itemsize = math.prod(shape), _ITEMSIZE[dtype]
    if not 0 <= begin <= end <= len(body) or end - begin != numel * itemsize:
        raise InputError(f"{path}: tensor {name!r:.40} overruns the file or has the wrong size")
    arr = np.frombuffer(body[begin:end], dtype="<" + _NUMPY_CODE[dtype], count=numel)
    if dtype == "bfloat16":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(np.float64).reshape(shape)


_READERS = {".pth": read_pth, ".pt": read_pth, ".npz": read_npz, ".safetensors": read_safetensors}


def read_piece(path: str | Path, index: int) -> Piece:
    """Read one piece file (any supported format) and check it is a linear layer."""
    path = _as_path(path)
    reader = _READERS.get(path.suffix)
    if reader is None:
        raise InputError(f"{path}: unknown piece format (expected {', '.join(PIECE_SUFFIXES)})")
    tensors = reader(path)
    names = [str(k) for k in tensors]
    if "weight" not in tensors or set(names) - {"weight", "bias"}:
        raise InputError(f"{path}: expected tensors 'weight' and 'bias', found "
                         f"{_one_line(sorted(names), 120)}")
    weight = tensors["weight"]
    if weight.ndim != 2 or min(weight.shape) == 0:
        raise InputError(f"{path}: weight has shape {weight.shape}, expected (out, in)")
    bias = tensors.get("bias", np.zeros(weight.shape[0]))
    if bias.shape != (weight.shape[0],):
        raise InputError(f"{path}: bias has shape {bias.shape}, expected ({weight.shape[0]},)")
    if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
        raise InputError(f"{path}: weights contain NaN or Inf")
    return Piece(index, np.ascontiguousarray(weight), np.ascontiguousarray(bias), path)


def piece_files(folder: str | Path) -> dict[int, Path]:
    """Map piece index -> file for every ``*<number>.<pth|pt|npz|safetensors>`` in ``folder``
    (hidden files such as macOS ``._piece_0.pth`` are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    found: dict[int, Path] = {}
    try:
        with os.scandir(folder) as listing:
            entries = sorted(((e.name, e) for e in listing if not e.name.startswith(".")),
                             key=lambda pair: pair[0])
        for name, entry in entries:
            match = PIECE_PATTERN.match(name)
            if not match or not entry.is_file():
                continue
            index = int(match.group(1))
            if index in found:
                raise InputError(f"{folder}: two files for piece {index}: {found[index].name}, {name}")
            found[index] = folder / name
    except OSError as exc:
        raise InputError(f"{folder}: cannot list ({exc.strerror or type(exc).__name__})") from None
    if not found:
        raise InputError(f"{folder}: no piece files (piece_<i>.pth, .npz or .safetensors)")
    missing = sorted(set(range(len(found))) - set(found))
    if missing:
        raise InputError(f"{folder}: piece indices must be 0..{len(found) - 1} without gaps; "
                         f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    return found


def load_pieces(folder: str | Path) -> Pieces:
    """Read every piece in ``folder``; ``Pieces.items[i]`` is ``piece_<i>``."""
    files = piece_files(folder)
    items = tuple(read_piece(files[i], i) for i in range(len(files)))
    formats = tuple(sorted({p.suffix.lstrip(".") for p in files.values()}))
    return Pieces(items, Path(folder), formats)


# --------------------------------------------------------------------------- CSV

_POW10 = np.array([float(10 ** k) for k in range(23)])  # exactly representable doubles
_U32 = np.uint64(0xFFFFFFFF)
_U1FF = np.uint64(0x1FF)
_U1 = np.uint64(1)
_U32S = np.uint64(32)
_HIDDEN = np.uint64(1 << 52)
_NORMALISED = tuple(np.uint64(1 << b) for b in (32, 48, 56, 60, 62, 63))


def _pow5_table() -> tuple[np.ndarray, np.ndarray]:
    """128-bit approximations of 5**q, q = -342..308, as (high, low) 64-bit words: the
    truncated leading 128 bits for q >= 0, a rounded-up reciprocal for q < 0 (the table of
    Lemire's "Number parsing at a gigabyte per second", used by fast_float)."""
    hi = np.empty(651, dtype=np.uint64)
    lo = np.empty(651, dtype=np.uint64)
    for q in range(-342, 309):
        if q < 0:
            power5 = 5 ** -q
            z = power5.bit_length()
            c = (1 << (z + 127 if q >= -27 else 2 * z + 128)) // power5 + 1
            c >>= max(c.bit_length() - 128, 0)
        else:
            power5 = 5 ** q
            bits = power5.bit_length()
            c = power5 << (128 - bits) if bits <= 128 else power5 >> (bits - 128)
        hi[q + 342], lo[q + 342] = c >> 64, c & ((1 << 64) - 1)
    return hi, lo


_POW5: tuple[np.ndarray, np.ndarray] | None = None


def _csv_scan(buf, i, width, out, row_line, slow, text, pow10, pow5_hi, pow5_lo):  # pragma: no cover
    """Parse comma-separated rows of ``width`` numbers from ``buf[i:]`` into ``out`` (flat).

    Plain decimals with at most 18 significant digits are converted exactly, to the double
    ``float()`` gives: an integer below 2**53 scaled by 10**k, |k| <= 22, by one correctly
    rounded multiply or divide (Clinger's fast path); the rest by the Eisel-Lemire algorithm
    (a 128-bit product with a table of powers of five) when the result is a normal double.
    Any other cell (NaN, Inf, long mantissas, junk) is listed in ``slow`` as
    (flat index, start, end) and copied to ``text``, comma-separated, for a correctly
    rounding parser. Blank lines are skipped. Returns (rows, error, line, a, number of slow
    cells, bytes of text): error 1 = line ``line`` has ``a`` fields; 2 = line
    ``line`` column ``a`` empty; 3 = ``slow`` is full (call again with a larger one).
    """
    n = buf.size
    row = 0
    line = 1
    nslow = 0
    tlen = 0
    while i < n:
        line += 1
        j = i
        while j < n and (buf[j] == 32 or buf[j] == 9 or buf[j] == 13):
            j += 1
        if j == n:
            break
        if buf[j] == 10:
            i = j + 1
            continue
        base = row * width
        col = 0
        while True:
            k = i
            while k < n and (buf[k] == 32 or buf[k] == 9):
                k += 1
            neg = False
            if k < n and (buf[k] == 45 or buf[k] == 43):
                neg = buf[k] == 45
                k += 1
            m = 0
            nd = 0
            e10 = 0
            digits = 0
            exact = True
            while k < n and buf[k] >= 48 and buf[k] <= 57:
                d = np.int64(buf[k]) - 48
                if nd < 18:
                    m = m * 10 + d
                    if m > 0:
                        nd += 1
                else:
                    e10 += 1
                    if d != 0:
                        exact = False
                digits += 1
                k += 1
            if k < n and buf[k] == 46:
                k += 1
                while k < n and buf[k] >= 48 and buf[k] <= 57:
                    d = np.int64(buf[k]) - 48
                    if nd < 18:
                        m = m * 10 + d
                        e10 -= 1
                        if m > 0:
                            nd += 1
                    elif d != 0:
                        exact = False
                    digits += 1
                    k += 1
            ok = digits > 0
            if ok and k < n and (buf[k] == 101 or buf[k] == 69):
                k += 1
                eneg = False
                if k < n and (buf[k] == 45 or buf[k] == 43):
                    eneg = buf[k] == 45
                    k += 1
                ed = 0
                ev = 0
                while k < n and buf[k] >= 48 and buf[k] <= 57:
                    if ev < 100000:
                        ev = ev * 10 + (np.int64(buf[k]) - 48)
                    ed += 1
                    k += 1
                if ed == 0:
                    ok = False
                e10 += -ev if eneg else ev
            while k < n and (buf[k] == 32 or buf[k] == 9):
                k += 1
            if k < n and buf[k] == 13 and (k + 1 == n or buf[k + 1] == 10):
                k += 1
            at_end = k == n or buf[k] == 44 or buf[k] == 10
            fast = ok and at_end and exact
            v = 0.0
            if fast and m == 0:
                v = 0.0
            elif fast and m <= 9007199254740992 and -22 <= e10 <= 22:
                v = float(m)
                if e10 >= 0:
                    v = v * pow10[e10]
                else:
                    v = v / pow10[-e10]
            elif fast and -342 <= e10 <= 308:
                # Eisel-Lemire: w normalised to 64 bits times the 128-bit 5**e10
                w = np.uint64(m)
                lz = 0
                if w < _NORMALISED[0]:
                    w <<= np.uint64(32)
                    lz += 32
                if w < _NORMALISED[1]:
                    w <<= np.uint64(16)
                    lz += 16
                if w < _NORMALISED[2]:
                    w <<= np.uint64(8)
                    lz += 8
                if w < _NORMALISED[3]:
                    w <<= np.uint64(4)
                    lz += 4
                if w < _NORMALISED[4]:
                    w <<= np.uint64(2)
                    lz += 2
                if w < _NORMALISED[5]:
                    w <<= np.uint64(1)
                    lz += 1
                idx = e10 + 342
                w_lo, w_hi = w & _U32, w >> _U32S
                f = pow5_hi[idx]
                f_lo, f_hi = f & _U32, f >> _U32S
                p0, p1, p2 = w_lo * f_lo, w_lo * f_hi, w_hi * f_lo
                mid = (p0 >> _U32S) + (p1 & _U32) + (p2 & _U32)
                lo = (p0 & _U32) | (mid << _U32S)
                hi = w_hi * f_hi + (p1 >> _U32S) + (p2 >> _U32S) + (mid >> _U32S)
                if hi & _U1FF == _U1FF:
                    f = pow5_lo[idx]
                    f_lo, f_hi = f & _U32, f >> _U32S
                    p0, p1, p2 = w_lo * f_lo, w_lo * f_hi, w_hi * f_lo
                    mid = (p0 >> _U32S) + (p1 & _U32) + (p2 & _U32)
                    hi2 = w_hi * f_hi + (p1 >> _U32S) + (p2 >> _U32S) + (mid >> _U32S)
                    lo = lo + hi2
                    if hi2 > lo:
                        hi = hi + _U1
                upper = hi >> np.uint64(63)
                shift = upper + np.uint64(9)
                mantissa = hi >> shift
                power2 = ((217706 * e10) >> 16) + 63 + np.int64(upper) - lz + 1023
                if (lo <= _U1 and -4 <= e10 <= 23 and mantissa & np.uint64(3) == _U1
                        and (mantissa << shift) == hi):
                    mantissa = mantissa ^ _U1  # exactly halfway: round to even, i.e. down
                mantissa = (mantissa + (mantissa & _U1)) >> _U1
                if mantissa >= _HIDDEN << _U1:
                    mantissa = _HIDDEN
                    power2 += 1
                if power2 <= 0 or power2 >= 2047:
                    fast = False  # subnormal or overflow: left to the slow parser
                else:
                    v = math.ldexp(float(mantissa), int(power2) - 1075)
            else:
                fast = False
            if fast:
                out[base + col] = -v if neg else v
            else:
                while k < n and buf[k] != 44 and buf[k] != 10:
                    k += 1
                e = k
                if e > i and buf[e - 1] == 13 and (k == n or buf[k] == 10):
                    e -= 1
                s = i
                while s < e and (buf[s] == 32 or buf[s] == 9):
                    s += 1
                if s == e:
                    return row, 2, line, col, nslow, tlen
                if nslow == slow.shape[0]:
                    return row, 3, line, col, nslow, tlen
                slow[nslow, 0] = base + col
                slow[nslow, 1] = i
                slow[nslow, 2] = e
                nslow += 1
                for j in range(i, e):
                    text[tlen] = buf[j]
                    tlen += 1
                text[tlen] = 44
                tlen += 1
            col += 1
            if k < n and buf[k] == 44:
                if col == width:
                    fields = col + 1
                    k += 1
                    while k < n and buf[k] != 10:
                        if buf[k] == 44:
                            fields += 1
                        k += 1
                    return row, 1, line, fields, nslow, tlen
                i = k + 1
                continue
            if col != width:
                return row, 1, line, col, nslow, tlen
            row_line[row] = line
            row += 1
            i = k + 1
            break
    return row, 0, 0, 0, nslow, tlen


_CSV_KERNEL = None


def _csv_kernel():
    global _CSV_KERNEL, _POW5
    if _POW5 is None:
        _POW5 = _pow5_table()
    if _CSV_KERNEL is None:
        import numba

        from . import _numba_start  # noqa: F401  (before the first kernel loads)

        try:
            _CSV_KERNEL = numba.njit(cache=True, nogil=True)(_csv_scan)
        except RuntimeError:  # no writable cache location: compile in memory
            _CSV_KERNEL = numba.njit(nogil=True)(_csv_scan)
    return _CSV_KERNEL, _POW5


def _parse_rows(path: Path, raw: bytes, start: int, columns: tuple[str, ...]):
    """Rows of numbers after the header: (values (rows, width) float64, file line of each row)."""
    width = len(columns)
    # a row takes at least 2 * width bytes (a digit and a comma or newline per cell); the
    # buffers are only touched as far as rows are found
    capacity = (len(raw) - start) // (2 * width) + 1
    buf = np.frombuffer(raw, dtype=np.uint8)
    out = np.empty(capacity * width, dtype=np.float64)
    row_line = np.empty(capacity, dtype=np.int64)
    slow = np.empty((min(capacity * width, 4096), 3), dtype=np.int64)
    text = np.empty(len(raw) - start + slow.shape[0] + 1, dtype=np.uint8)
    kernel, pow5 = _csv_kernel()
    rows, error, line, a, nslow, tlen = kernel(buf, start, width, out, row_line, slow, text,
                                               _POW10, *pow5)
    if error == 3:  # many cells left to the slow parser: room for every cell, and again
        slow = np.empty((capacity * width, 3), dtype=np.int64)
        text = np.empty(len(raw) - start + slow.shape[0] + 1, dtype=np.uint8)
        rows, error, line, a, nslow, tlen = kernel(buf, start, width, out, row_line, slow, text,
                                                   _POW10, *pow5)
    if error == 1:
        raise InputError(f"{path}: line {line} has {a} fields, the header has {width}")
    if error == 2:
        raise InputError(f"{path}: line {line}: missing value in column {columns[a]!r:.60}")
    if nslow:
        _convert_slow(path, raw, slow[:nslow], text[:max(tlen - 1, 0)], out, row_line, columns)
    return out[: rows * width].reshape(rows, width), row_line[:rows]


def _convert_slow(path: Path, raw: bytes, slow: np.ndarray, text: np.ndarray, out: np.ndarray,
                  row_line: np.ndarray, columns: tuple[str, ...]) -> None:
    """Cells the compiled scanner left over (NaN, Inf, long mantissas, junk): numpy's
    correctly rounding parser on all of them at once, ``float()`` one by one when that does
    not take them all (it then names the first bad cell)."""
    values = None
    if len(slow) > 64:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                values = np.fromstring(text.tobytes().decode("latin-1"), dtype=np.float64, sep=",")
            except (ValueError, DeprecationWarning):
                values = None
        if values is not None and values.size != len(slow):
            values = None
    if values is None:
        values = np.empty(len(slow))
        width = len(columns)
        for k, (start, end) in enumerate(slow[:, 1:].tolist()):
            cell = raw[start:end]
            try:
                values[k] = float(cell)
            except ValueError:
                flat = int(slow[k, 0])
                text = cell.decode("utf-8", "replace").strip()
                raise InputError(f"{path}: line {int(row_line[flat // width])}, column "
                                 f"{columns[flat % width]!r:.60}: not a number: {text[:30]!r}") from None
    out[slow[:, 0]] = values


def load_data(path: str | Path) -> Data:
    """Read a CSV with a header: inputs are all columns except ``pred`` and ``true``."""
    path = Path(path)
    raw = _read_file(path, MAX_DATA_BYTES, "a data file")
    start = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    end = raw.find(b"\n", start)
    end = len(raw) if end < 0 else end
    try:
        header = raw[start:end].decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        raise InputError(f"{path}: the header is not UTF-8 text") from None
    columns = tuple(c.strip().strip('"').strip() for c in header.split(","))
    if not header.strip() or any(not c for c in columns):
        raise InputError(f"{path}: the first line must be a header of column names")
    if all(_is_number(c) for c in columns):
        raise InputError(f"{path}: no header line (the first line holds numbers)")
    if len(set(columns)) != len(columns):
        raise InputError(f"{path}: duplicate column names in the header")
    values, row_line = _parse_rows(path, raw, min(end + 1, len(raw)), columns)
    if values.shape[0] == 0:
        raise InputError(f"{path}: no data rows")
    finite = np.isfinite(values)
    if not finite.all():
        r, c = (int(v) for v in np.argwhere(~finite)[0])
        raise InputError(f"{path}: line {int(row_line[r])}, column {columns[c]!r:.60} holds "
                         f"{values[r, c]} (NaN or Inf)")
    index = {c: i for i, c in enumerate(columns)}
    inputs = [i for i, c in enumerate(columns) if c not in ("pred", "true")]
    if not inputs:
        raise InputError(f"{path}: no input columns besides 'pred' and 'true'")
    if "pred" not in index and "true" not in index:
        raise InputError(f"{path}: needs a 'pred' column (the intact model's output) or 'true'")
    pick = lambda name: values[:, index[name]].copy() if name in index else None  # noqa: E731
    if inputs == list(range(len(inputs))):
        x = np.ascontiguousarray(values[:, : len(inputs)])
    else:
        x = np.ascontiguousarray(values[:, inputs])
    return Data(x, pick("pred"), pick("true"), tuple(columns[i] for i in inputs), path)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def find_data(pieces_folder: str | Path, name: str = "historical_data.csv") -> Path:
    """The default data file: ``name`` in the pieces folder or its parent."""
    folder = Path(pieces_folder)
    for candidate in (folder / name, folder.parent / name):
        if candidate.is_file():
            return candidate
    csvs = sorted(folder.glob("*.csv")) or sorted(folder.parent.glob("*.csv"))
    if len(csvs) == 1:
        return csvs[0]
    raise InputError(f"{folder}: no {name} here or in the parent folder; pass --data")


def find_pieces_folder(path: str | Path) -> Path:
    """Accept the pieces folder itself or a parent holding ``pieces/`` (one level or two)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such folder")
    if not path.is_dir():
        raise InputError(f"{path}: not a folder")
    try:
        if any(PIECE_PATTERN.match(p.name) for p in path.iterdir()):
            return path
    except OSError as exc:
        raise InputError(f"{path}: cannot list ({exc.strerror or type(exc).__name__})") from None
    for candidate in (path / "pieces", *sorted(path.glob("*/pieces"))):
        if candidate.is_dir():
            return candidate
    raise InputError(f"{path}: no piece files here and no pieces/ folder below")
