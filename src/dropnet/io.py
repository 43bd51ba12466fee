"""Read the pieces of a dropped network and its data, without torch and without executing
anything from a file.

Pieces are ``piece_<i>.<ext>`` files holding one linear layer each (``weight`` of shape
(out, in) and ``bias`` of shape (out,)):

* ``.pth``: ``torch.save(linear.state_dict())`` zip archives, read by a restricted unpickler
  that admits only an ``OrderedDict`` of tensors on float storages;
* ``.npz``: numpy archives with arrays ``weight`` and ``bias`` (``allow_pickle=False``);
* ``.safetensors``: an 8-byte header length, a JSON header and raw little-endian bytes.

The data is a CSV with a header; inputs are every column except ``pred`` and ``true``.
"""
from __future__ import annotations

import json
import pickle
import re
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError

PIECE_PATTERN = re.compile(r"^(?:.*?)(\d+)\.(pth|pt|npz|safetensors)$")
PIECE_SUFFIXES = (".pth", ".pt", ".npz", ".safetensors")
MAX_PICKLE_BYTES = 1 << 20  # a state dict of two tensors pickles to a few hundred bytes
MAX_PIECE_ELEMENTS = 1 << 28  # refuse declared tensors above 256 Mi elements before allocating

# torch storage class name -> numpy dtype name ("bfloat16" is widened by hand)
_TORCH_STORAGES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
}
_SAFETENSORS_DTYPES = {"F32": "float32", "F64": "float64", "F16": "float16", "BF16": "bfloat16"}


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


# --------------------------------------------------------------------------- .pth


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` and friends: carries only the dtype name."""

    def __init__(self, dtype: str):
        self.dtype = dtype


def _bfloat16_to_float32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """Mirror of ``torch._utils._rebuild_tensor_v2`` returning a float64 numpy array."""
    if not isinstance(storage, np.ndarray):
        raise pickle.UnpicklingError("tensor without a storage")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise pickle.UnpicklingError(f"bad tensor geometry size={size} stride={stride}")
    offset = int(storage_offset)
    if int(np.prod(size, dtype=np.int64)) > MAX_PIECE_ELEMENTS:
        raise pickle.UnpicklingError(f"tensor of size {size} is too large")
    last = offset + sum((s - 1) * st for s, st in zip(size, stride)) if all(size) else offset - 1
    if offset < 0 or last >= storage.size:
        raise pickle.UnpicklingError(
            f"tensor of size {size} at offset {offset} overruns its storage of {storage.size}")
    if not all(size):
        return np.zeros(size, dtype=np.float64)
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False)
    return np.array(view, dtype=np.float64)


class _RestrictedUnpickler(pickle.Unpickler):
    """Admits an OrderedDict of tensors and nothing else; storages come from the zip."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str):
        super().__init__(file)
        self._archive, self._prefix, self._byteorder = archive, prefix, byteorder

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _TORCH_STORAGES:
            return _StorageType(_TORCH_STORAGES[name])
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError("storage of an unsupported type")
        if not isinstance(numel, int) or not 0 <= numel <= MAX_PIECE_ELEMENTS:
            raise pickle.UnpicklingError(f"storage of {numel!r:.40} elements refused")
        return self._read_storage(str(key), storage_type.dtype, numel)

    def _read_storage(self, key: str, dtype: str, numel: int) -> np.ndarray:
        name = f"{self._prefix}data/{key}"
        try:
            info = self._archive.getinfo(name)
        except KeyError:
            raise pickle.UnpicklingError(f"missing storage {name}") from None
        itemsize = 2 if dtype in ("float16", "bfloat16") else np.dtype(dtype).itemsize
        if info.file_size < numel * itemsize:
            raise pickle.UnpicklingError(
                f"storage {name} holds {info.file_size} bytes, {numel * itemsize} needed")
        raw = self._archive.read(name)[: numel * itemsize]
        order = "<" if self._byteorder == "little" else ">"
        if dtype == "bfloat16":
            return _bfloat16_to_float32(np.frombuffer(raw, dtype=order + "u2"))
        return np.frombuffer(raw, dtype=order + np.dtype(dtype).str[1:])


def read_pth(path: str | Path) -> dict[str, np.ndarray]:
    """Read a ``torch.save``'d state dict of tensors as ``{name: float64 array}``."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if len(pickles) != 1:
                raise InputError(f"{path}: not a torch zip archive (no single data.pkl)")
            prefix = pickles[0][: -len("data.pkl")]
            if archive.getinfo(pickles[0]).file_size > MAX_PICKLE_BYTES:
                raise InputError(f"{path}: data.pkl is too large for a state dict")
            byteorder = "little"
            if prefix + "byteorder" in archive.namelist():
                byteorder = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise InputError(f"{path}: unknown byte order {byteorder!r:.20}")
            with archive.open(pickles[0]) as fh:
                obj = _RestrictedUnpickler(fh, archive, prefix, byteorder).load()
    except InputError:
        raise
    except zipfile.BadZipFile as exc:
        raise InputError(f"{path}: not a readable torch zip archive ({exc})") from None
    except pickle.UnpicklingError as exc:
        raise InputError(f"{path}: refused: {exc}") from None
    except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            struct.error, RecursionError, MemoryError, UnicodeDecodeError, zipfile.LargeZipFile,
            NotImplementedError, OverflowError) as exc:
        raise InputError(f"{path}: corrupt torch archive ({type(exc).__name__}: {exc})"[:300]) from None
    if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise InputError(f"{path}: not a state dict of tensors")
    return dict(obj)


# --------------------------------------------------------------------------- others


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read a ``.npz`` archive of arrays (pickled objects refused) as float64 arrays."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            out = {}
            for name in archive.files:
                arr = archive[name]
                if arr.dtype.kind not in "fiu":
                    raise InputError(f"{path}: array {name!r} has dtype {arr.dtype}")
                out[name] = arr.astype(np.float64)
            return out
    except InputError:
        raise
    except Exception as exc:  # numpy raises many types for corrupt archives
        raise InputError(f"{path}: not a readable .npz archive ({type(exc).__name__}: {exc})"[:300]) from None


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Read a ``.safetensors`` file (JSON header + raw bytes) as float64 arrays."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    if len(blob) < 8:
        raise InputError(f"{path}: truncated safetensors file")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > min(len(blob) - 8, 100_000_000):
        raise InputError(f"{path}: safetensors header of {header_len} bytes overruns the file")
    try:
        header = json.loads(blob[8 : 8 + header_len])
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"{path}: safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise InputError(f"{path}: safetensors header is not a JSON object")
    body = memoryview(blob)[8 + header_len :]
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        out[name] = _safetensors_tensor(path, name, spec, body)
    return out


def _safetensors_tensor(path: Path, name: str, spec, body: memoryview) -> np.ndarray:
    try:
        dtype = _SAFETENSORS_DTYPES[spec["dtype"]]
        shape = tuple(int(s) for s in spec["shape"])
        begin, end = (int(v) for v in spec["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path}: tensor {name!r:.40} has an unsupported or malformed entry") from None
    numel = int(np.prod(shape, dtype=np.int64))
    itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
    if any(s < 0 for s in shape) or numel > MAX_PIECE_ELEMENTS:
        raise InputError(f"{path}: tensor {name!r:.40} has shape {shape}")
    if not 0 <= begin <= end <= len(body) or end - begin != numel * itemsize:
        raise InputError(f"{path}: tensor {name!r:.40} overruns the file or has the wrong size")
    raw = body[begin:end]
    if dtype == "bfloat16":
        arr = _bfloat16_to_float32(np.frombuffer(raw, dtype="<u2"))
    else:
        arr = np.frombuffer(raw, dtype="<" + np.dtype(dtype).str[1:])
    return arr.astype(np.float64).reshape(shape)


_READERS = {".pth": read_pth, ".pt": read_pth, ".npz": read_npz, ".safetensors": read_safetensors}


def read_piece(path: str | Path, index: int) -> Piece:
    """Read one piece file (any supported format) and check it is a linear layer."""
    path = Path(path)
    tensors = _READERS[path.suffix](path)
    extra = sorted(set(tensors) - {"weight", "bias"})
    if "weight" not in tensors or extra:
        raise InputError(f"{path}: expected tensors 'weight' and 'bias', found {sorted(tensors)}")
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
    """Map piece index -> file for every ``*<number>.<pth|pt|npz|safetensors>`` in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    found: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        match = PIECE_PATTERN.match(path.name)
        if not match or not path.is_file():
            continue
        index = int(match.group(1))
        if index in found:
            raise InputError(f"{folder}: two files for piece {index}: {found[index].name}, {path.name}")
        found[index] = path
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


def _parse_body(path: Path, body: str, width: int, header_lines: int) -> np.ndarray:
    """Parse comma-separated numbers into (rows, width); report the first bad line."""
    lines = body.count("\n") + (0 if body.endswith("\n") or not body else 1)
    flat = body.replace("\n", ",").replace("\r", "")
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            values = np.fromstring(flat.rstrip(","), dtype=np.float64, sep=",")
    except (ValueError, DeprecationWarning):
        values = None
    if values is not None and values.size == lines * width:
        return values.reshape(lines, width)
    for number, line in enumerate(body.splitlines(), start=header_lines + 1):
        cells = line.split(",")
        if len(cells) != width:
            raise InputError(f"{path}: line {number} has {len(cells)} fields, the header has {width}")
        for cell in cells:
            try:
                float(cell)
            except ValueError:
                raise InputError(f"{path}: line {number}: not a number: {cell.strip()[:30]!r}") from None
    raise InputError(f"{path}: could not parse the numbers")  # pragma: no cover - defensive


def load_data(path: str | Path) -> Data:
    """Read a CSV with a header: inputs are all columns except ``pred`` and ``true``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the data ({exc})"[:300]) from None
    header, _, body = text.partition("\n")
    columns = tuple(c.strip().strip('"') for c in header.strip("\r").split(","))
    if not header.strip() or any(not c for c in columns):
        raise InputError(f"{path}: the first line must be a header of column names")
    if all(_is_number(c) for c in columns):
        raise InputError(f"{path}: no header line (the first line holds numbers)")
    if len(set(columns)) != len(columns):
        raise InputError(f"{path}: duplicate column names in the header")
    values = _parse_body(path, body.strip("\n\r "), len(columns), 1)
    if values.shape[0] == 0:
        raise InputError(f"{path}: no data rows")
    if not np.isfinite(values).all():
        row = int(np.argwhere(~np.isfinite(values))[0, 0]) + 2
        raise InputError(f"{path}: line {row} holds NaN or Inf")
    index = {c: i for i, c in enumerate(columns)}
    inputs = [i for i, c in enumerate(columns) if c not in ("pred", "true")]
    if not inputs:
        raise InputError(f"{path}: no input columns besides 'pred' and 'true'")
    if "pred" not in index and "true" not in index:
        raise InputError(f"{path}: needs a 'pred' column (the intact model's output) or 'true'")
    pick = lambda name: values[:, index[name]].copy() if name in index else None  # noqa: E731
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
    if any(PIECE_PATTERN.match(p.name) for p in path.iterdir()):
        return path
    for candidate in (path / "pieces", *sorted(path.glob("*/pieces"))):
        if candidate.is_dir():
            return candidate
    raise InputError(f"{path}: no piece files here and no pieces/ folder below")
