"""Arrays in and out of files: the one place reptrans reads and writes embedding files.

Formats (chosen by the file's extension):

- ``.npy`` -- memory-mapped (``np.load(mmap_mode="r", allow_pickle=False)``): opening
  a file reads its header only; rows are paged in as they are used.
- ``.safetensors`` -- one named tensor, memory-mapped at its offset in the file. A file
  holding several tensors needs ``key`` (the error lists the keys).
- ``.faiss`` / ``.index`` -- a FAISS flat index (``IndexFlatIP``, ``IndexFlatL2``,
  ``IndexFlat``), opened with FAISS's memory-mapped reader (``IO_FLAG_MMAP_IFC``); rows
  are reconstructed in chunks (``index.reconstruct_n``). Other index types (IVF, HNSW,
  PQ, ...) do not hold the vectors exactly and are refused.

Every array must be 2-D (rows x features) of a floating-point dtype (float16, float32,
float64; bfloat16 in safetensors). Each problem -- a 0-byte or truncated file, a wrong
extension, a non-flat FAISS index, object or string dtypes, a missing key -- raises a
``ValueError`` whose message starts with the argument's name (``name``), e.g. ``--source``.

Reading never holds a large file in memory twice: :meth:`ArrayFile.read` returns the
memory map itself (npy, safetensors float32/float64), and :meth:`ArrayFile.chunks`
yields bounded blocks of rows for streaming. :class:`ArrayWriter` writes rows as they
come (npy and safetensors after a header written up front, FAISS into an index saved at
the end) to a temporary file renamed into place on success.

Streaming uses plain file reads and writes, not memory maps: every page of a map that
was touched stays mapped, and counted in the process's resident set, until the map is
closed, so a map-backed stream of a 1.5 GB file ends holding 1.5 GB of RSS (the kernel
can drop those pages, but only under memory pressure, and every tool and limit that
reads RSS sees them). Through ``read``/``write`` the data passes through the page cache,
which belongs to no process; the stream itself holds one block at a time.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Tuple, Union

import numpy as np

__all__ = [
    "ArrayFile",
    "ArrayWriter",
    "FORMATS",
    "SUPPORTED",
    "array_format",
    "check_output_path",
    "open_array",
    "read_array",
    "write_array",
]

PathLike = Union[str, "os.PathLike[str]"]

#: extension -> format name
FORMATS = {".npy": "npy", ".safetensors": "safetensors", ".faiss": "faiss", ".index": "faiss"}
SUPPORTED = ".npy, .safetensors, or a FAISS flat index (.faiss / .index)"

#: rows per block when scanning or streaming (a block of 8192 x 1024 float32 is 32 MiB)
CHUNK_ROWS = 8192

# safetensors dtype tags
_ST_DTYPES = {
    "F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "BF16": np.dtype("<u2"),
    "I8": np.dtype("i1"), "I16": np.dtype("<i2"), "I32": np.dtype("<i4"), "I64": np.dtype("<i8"),
    "U8": np.dtype("u1"), "U16": np.dtype("<u2"), "U32": np.dtype("<u4"), "U64": np.dtype("<u8"),
    "BOOL": np.dtype("?"),
}
_ST_TAGS = {np.dtype("<f2"): "F16", np.dtype("<f4"): "F32", np.dtype("<f8"): "F64"}
# FAISS flat index fourcc -> metric ("IxFl" is the generic IndexFlat; its metric is in the header)
_FAISS_FLAT = {b"IxFI": "ip", b"IxF2": "l2", b"IxFl": None}
_HINTS = {
    ".csv": "convert it once: np.save('x.npy', np.loadtxt('x.csv', delimiter=',', dtype=np.float32))",
    ".tsv": "convert it once: np.save('x.npy', np.loadtxt('x.tsv', delimiter='\\t', dtype=np.float32))",
    ".txt": "convert it once: np.save('x.npy', np.loadtxt('x.txt', dtype=np.float32))",
    ".npz": "save the array you mean on its own: np.save('x.npy', np.load('x.npz')['NAME'])",
    ".pt": "save the tensor with safetensors.torch.save_file({'embeddings': t}, 'x.safetensors')",
    ".pth": "save the tensor with safetensors.torch.save_file({'embeddings': t}, 'x.safetensors')",
    ".pkl": "pickles are never loaded; save the array with np.save('x.npy', X)",
}


def array_format(path: PathLike, name: str = "array") -> str:
    """The format of ``path`` from its extension: ``"npy"``, ``"safetensors"`` or ``"faiss"``."""
    suffix = Path(path).suffix.lower()
    if suffix in FORMATS:
        return FORMATS[suffix]
    what = f"extension {suffix!r}" if suffix else "no extension"
    hint = _HINTS.get(suffix)
    raise ValueError(f"{name}: {str(path)!r} has {what}; supported formats: {SUPPORTED}" + (f" ({hint})" if hint else ""))


def _check_dtype(dtype: np.dtype, name: str, path: Path, what: str = "") -> None:
    kind = dtype.kind
    where = f"{name}: {str(path)!r}{what}"
    if kind == "O":
        raise ValueError(f"{where} holds pickled (object) data, which is never loaded; save a numeric array, "
                         "e.g. np.save(path, np.asarray(X, dtype=np.float32))")
    if kind in "USV":
        raise ValueError(f"{where} holds text or raw bytes (dtype {dtype.str}), not numbers; "
                         "save the embeddings as a float array")
    if kind == "b":
        raise ValueError(f"{where} has boolean dtype; embeddings must be floating point")
    if kind in "iu":
        raise ValueError(f"{where} has integer dtype {dtype}; embeddings must be floating point: "
                         "save X.astype(np.float32)")
    if kind == "c":
        raise ValueError(f"{where} is complex; pass real-valued features")
    if kind != "f":
        raise ValueError(f"{where} has unsupported dtype {dtype}; save a float32 or float64 array")


def _check_shape(shape: Tuple[int, ...], name: str, path: Path) -> Tuple[int, int]:
    if len(shape) != 2:
        hint = " (save X.reshape(len(X), -1))" if len(shape) > 2 else " (save a 2-D array: one row per sample)"
        raise ValueError(f"{name}: {str(path)!r} must hold a 2-D array (rows x features), got shape {tuple(shape)}{hint}")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"{name}: {str(path)!r} holds an empty array (shape {tuple(shape)})")
    return int(shape[0]), int(shape[1])


class ArrayFile:
    """A 2-D float array file opened for reading (see :func:`open_array`).

    Attributes: ``path``, ``name`` (the argument, for messages), ``format``, ``key``
    (safetensors), ``shape`` (rows, columns), ``dtype`` (as stored; bfloat16 shows as
    ``"bfloat16"``), ``faiss_metric`` (``"ip"`` / ``"l2"`` / ``None``).
    """

    def __init__(self, path: Path, name: str, fmt: str, shape: Tuple[int, int], dtype: Any,
                 source: Any, key: Optional[str] = None, faiss_metric: Optional[str] = None,
                 offset: Optional[int] = None):
        self.path, self.name, self.format, self.key = path, name, fmt, key
        self.shape, self.dtype, self.faiss_metric = shape, dtype, faiss_metric
        self.source = source  # memory map (npy, safetensors) or FAISS index
        # byte offset of row 0 when the rows lie in the file in C order, one after the
        # other (what :meth:`chunks` reads directly); None: read through ``source``
        self.offset = offset

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ArrayFile({str(self.path)!r}, format={self.format}, shape={self.shape}, dtype={self.dtype})"

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` as a float32 or float64 array (float16 / bfloat16 widened)."""
        if self.format == "faiss":
            return self.source.reconstruct_n(int(start), int(stop - start))
        return self._widen(self.source[start:stop])

    def _widen(self, block: np.ndarray) -> np.ndarray:
        """A block as stored -> float32 / float64 (bfloat16 and float16 widened to float32)."""
        if self.dtype == "bfloat16":
            return (np.asarray(block, dtype=np.uint32) << 16).view(np.float32)
        if block.dtype.itemsize < 4:
            return block.astype(np.float32)
        return block

    def chunks(self, chunk_rows: int = CHUNK_ROWS) -> Iterator[Tuple[int, np.ndarray]]:
        """``(start, rows)`` blocks of at most ``chunk_rows`` rows, in order.

        npy and safetensors blocks are read with plain file reads into a new array each
        (see the module docstring: a memory map would keep every block it passed
        resident); FAISS indexes and Fortran-ordered npy files go through ``source``.
        """
        n = self.shape[0]
        if self.offset is None:
            for start in range(0, n, chunk_rows):
                yield start, self.rows(start, min(start + chunk_rows, n))
            return
        stored = self.source.dtype
        row_bytes = self.shape[1] * stored.itemsize
        with open(self.path, "rb", buffering=0) as fh:
            for start in range(0, n, chunk_rows):
                block = np.empty((min(start + chunk_rows, n) - start, self.shape[1]), dtype=stored)
                fh.seek(self.offset + start * row_bytes)
                view, got = memoryview(block).cast("B"), 0
                while got < len(view):  # a raw read may return fewer bytes than asked
                    r = fh.readinto(view[got:])
                    if not r:
                        raise ValueError(f"{self.name}: {str(self.path)!r} ended at byte "
                                         f"{self.offset + start * row_bytes + got} while reading rows "
                                         f"{start}..{start + len(block)} (truncated while being read?)")
                    got += r
                yield start, self._widen(block)

    def read(self) -> np.ndarray:
        """The whole array: the memory map itself for npy / safetensors float32 and
        float64 (no copy); otherwise one array filled block by block."""
        if self.format != "faiss" and self.dtype != "bfloat16" and self.source.dtype.itemsize >= 4:
            return self.source
        out = np.empty(self.shape, dtype=np.float32)
        for start, block in self.chunks():
            out[start : start + len(block)] = block
        return out

    def check_finite(self, chunk_rows: int = CHUNK_ROWS) -> None:
        """Raise ValueError naming the argument and the first row holding NaN or Inf."""
        for start, block in self.chunks(chunk_rows):
            bad = ~np.isfinite(block)
            if bad.any():
                row = start + int(np.flatnonzero(bad.any(axis=1))[0])
                kind = "NaN" if np.isnan(block).any() else "Inf"
                raise ValueError(f"{self.name}: {str(self.path)!r} contains non-finite values ({kind}), first in "
                                 f"row {row}; remove or impute them first")


def _open_npy(path: Path, name: str) -> ArrayFile:
    size = path.stat().st_size
    fmt = np.lib.format
    with open(path, "rb") as fh:
        try:
            version = fmt.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(fh)
            else:
                shape, dtype = None, None
            offset = fh.tell()
        except (ValueError, EOFError, OSError) as exc:
            raise ValueError(f"{name}: {str(path)!r} is not a valid .npy file ({exc})") from None
    if dtype is not None:
        _check_dtype(dtype, name, path)
        _check_shape(shape, name, path)
        need = offset + int(np.prod(shape)) * dtype.itemsize
        if size < need:
            raise ValueError(f"{name}: {str(path)!r} is truncated: {size} bytes, but its header promises "
                             f"{need} (shape {tuple(shape)}, {dtype})")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise ValueError(f"{name}: {str(path)!r} is not a readable .npy array ({exc})") from None
    _check_dtype(arr.dtype, name, path)
    shape2 = _check_shape(arr.shape, name, path)
    offset = int(arr.offset) if isinstance(arr, np.memmap) and arr.flags.c_contiguous else None
    return ArrayFile(path, name, "npy", shape2, arr.dtype, arr, offset=offset)


def _open_safetensors(path: Path, name: str, key: Optional[str], key_option: str) -> ArrayFile:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if n < 2 or 8 + n > size:
            raise ValueError(f"{name}: {str(path)!r} is not a safetensors file, or it is truncated (header of "
                             f"{n} bytes in a file of {size})")
        try:
            header = json.loads(fh.read(n))
        except (ValueError, UnicodeDecodeError):
            raise ValueError(f"{name}: {str(path)!r} is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ValueError(f"{name}: {str(path)!r} is not a safetensors file (its header is not a JSON object)")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if not tensors:
        raise ValueError(f"{name}: {str(path)!r} holds no tensors")
    if key is None:
        if len(tensors) > 1:
            raise ValueError(f"{name}: {str(path)!r} holds {len(tensors)} tensors; choose one with {key_option} "
                             f"(keys: {', '.join(sorted(tensors))})")
        key = next(iter(tensors))
    elif key not in tensors:
        raise ValueError(f"{key_option}: {str(path)!r} has no tensor {key!r} (keys: {', '.join(sorted(tensors))})")
    info = tensors[key]
    try:
        tag, shape, (begin, end) = info["dtype"], [int(s) for s in info["shape"]], info["data_offsets"]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{name}: {str(path)!r} has a malformed header entry for {key!r}") from None
    what = f" (tensor {key!r})"
    if tag not in _ST_DTYPES:
        raise ValueError(f"{name}: {str(path)!r}{what} has unsupported dtype {tag}; save a float32 tensor")
    dtype = _ST_DTYPES[tag]
    if tag != "BF16":
        _check_dtype(dtype, name, path, what)
    shape2 = _check_shape(tuple(shape), name, path)
    start = 8 + n + int(begin)
    if int(end) - int(begin) != shape2[0] * shape2[1] * dtype.itemsize or 8 + n + int(end) > size:
        raise ValueError(f"{name}: {str(path)!r}{what} is truncated or inconsistent: shape {tuple(shape)} {tag} "
                         f"needs {shape2[0] * shape2[1] * dtype.itemsize} bytes at offset {start}, file has {size}")
    arr = np.memmap(path, dtype=dtype, mode="r", offset=start, shape=shape2)
    return ArrayFile(path, name, "safetensors", shape2, "bfloat16" if tag == "BF16" else dtype, arr, key=key,
                     offset=start)


def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss is a dependency
        raise ValueError("reading or writing a FAISS index needs the faiss package (pip install faiss-cpu)") from None
    return faiss


def _open_faiss(path: Path, name: str) -> ArrayFile:
    with open(path, "rb") as fh:
        fourcc = fh.read(4)
    if fourcc not in _FAISS_FLAT:
        raise ValueError(f"{name}: {str(path)!r} is not a FAISS flat index (type code {fourcc!r}); only "
                         "IndexFlatIP / IndexFlatL2 hold the vectors exactly: rebuild one with "
                         "faiss.IndexFlatIP(d).add(X), or export the vectors with index.reconstruct_n")
    faiss = _faiss()
    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else "unreadable"
        raise ValueError(f"{name}: {str(path)!r} is a truncated or corrupt FAISS index ({first})") from None
    metric = _FAISS_FLAT[fourcc] or {faiss.METRIC_INNER_PRODUCT: "ip", faiss.METRIC_L2: "l2"}.get(index.metric_type)
    shape = _check_shape((index.ntotal, index.d), name, path)
    return ArrayFile(path, name, "faiss", shape, np.dtype(np.float32), index, faiss_metric=metric)


def open_array(path: PathLike, name: str = "array", key: Optional[str] = None, key_option: str = "--key") -> ArrayFile:
    """Open a 2-D float array file for reading; only its header is read now.

    ``name`` (e.g. ``"--source"``) starts every error message; ``key`` picks the tensor
    of a safetensors file, and ``key_option`` names the option that sets it.
    """
    p = Path(path)
    fmt = array_format(p, name)
    if not p.exists():
        raise ValueError(f"{name}: no such file {str(path)!r}")
    if p.is_dir():
        raise ValueError(f"{name}: {str(path)!r} is a folder, not an array file ({SUPPORTED})")
    if p.stat().st_size == 0:
        raise ValueError(f"{name}: {str(path)!r} is empty (0 bytes)")
    if key is not None and fmt != "safetensors":
        raise ValueError(f"{key_option}: {str(path)!r} is a {fmt} file, which holds one unnamed array; "
                         "drop the key or pass a .safetensors file")
    if fmt == "npy":
        return _open_npy(p, name)
    if fmt == "safetensors":
        return _open_safetensors(p, name, key, key_option)
    return _open_faiss(p, name)


def read_array(path: PathLike, name: str = "array", key: Optional[str] = None, key_option: str = "--key",
               check_finite: bool = False) -> np.ndarray:
    """Read a whole 2-D float array (memory-mapped where the format allows; see :func:`open_array`).

    ``check_finite`` scans it block by block and names the first row with NaN / Inf.
    """
    f = open_array(path, name, key, key_option)
    if check_finite:
        f.check_finite()
    return f.read()


def check_output_path(path: PathLike, name: str = "-o", overwrite: bool = False, folder: bool = False,
                      formats: Optional[dict] = None) -> Path:
    """Check, before any work, that ``path`` can be written.

    Refused: an existing file (unless ``overwrite``), a folder where a file is wanted (or
    a file where a folder is), a non-empty folder (``folder=True``, unless ``overwrite``),
    a parent that is a file or not writable, and -- when ``formats`` (extension -> format)
    is given -- an extension not in it. Nothing is created.
    """
    p = Path(path)
    if not folder and p.is_dir():
        raise ValueError(f"{name}: {str(path)!r} is a folder; give a file name")
    if formats is not None and p.suffix.lower() not in formats:
        what = f"extension {p.suffix!r}" if p.suffix else "no extension"
        exts = ", ".join(sorted(formats))
        raise ValueError(f"{name}: {str(path)!r} has {what}; write one of {exts}")
    if folder:
        if p.exists() and not p.is_dir():
            raise ValueError(f"{name}: {str(path)!r} is a file; the output is a folder")
        if p.is_dir() and any(p.iterdir()) and not overwrite:
            raise ValueError(f"{name}: folder {str(path)!r} exists and is not empty; pass --overwrite to replace "
                             "what it holds")
    elif p.exists() and not overwrite:
        raise ValueError(f"{name}: {str(path)!r} exists; pass --overwrite to replace it")
    parent = p if folder and p.is_dir() else p.parent
    ancestor = parent
    while not ancestor.exists():
        if ancestor == ancestor.parent:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{name}: cannot create {str(path)!r}: {str(ancestor)!r} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"{name}: cannot create {str(path)!r}: folder {str(ancestor)!r} is not writable")
    return p


def _write_npy_header(fh: Any, dtype: np.dtype, shape: Tuple[int, int]) -> None:
    """The .npy header ``np.save`` writes for a C-ordered array of ``dtype`` and ``shape``:
    format 1.0, or 2.0 when the header does not fit 1.0 (numpy's own choice)."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    try:
        np.lib.format.write_array_header_1_0(fh, header)
    except ValueError:  # header longer than 65535 bytes
        np.lib.format.write_array_header_2_0(fh, header)


class ArrayWriter:
    """Write an (n_rows, n_cols) float array to ``path`` block by block.

    The format follows the extension (``.npy``, ``.safetensors`` with tensor ``key``,
    ``.faiss`` / ``.index`` as ``IndexFlatIP`` or ``IndexFlatL2`` per ``faiss_metric``).
    Rows go to a temporary file next to ``path``; :meth:`close` checks that every row
    was written and renames it into place, :meth:`abort` removes it. As a context
    manager it closes on success and aborts on any exception (Ctrl-C included).

    npy and safetensors files are written with plain file writes after their header
    (an npy file is byte for byte what ``np.save`` writes), so the writer holds no more
    than the block it is given (see the module docstring).
    """

    def __init__(self, path: PathLike, n_rows: int, n_cols: int, name: str = "-o", key: str = "embeddings",
                 faiss_metric: Optional[str] = "ip", dtype: Any = np.float32):
        self.path, self.name = Path(path), name
        self.format = array_format(self.path, name)
        self.shape = (int(n_rows), int(n_cols))
        self.dtype = np.dtype(dtype).newbyteorder("<") if np.dtype(dtype).itemsize > 1 else np.dtype(dtype)
        self.written = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        os.close(fd)
        self.tmp = Path(tmp)
        self._fh = self._index = None
        try:
            self._start(key, faiss_metric)
        except BaseException:
            self.abort()
            raise

    def _start(self, key: str, faiss_metric: Optional[str]) -> None:
        name = self.name
        if self.format == "npy":
            self._fh = open(self.tmp, "wb")
            _write_npy_header(self._fh, self.dtype, self.shape)
        elif self.format == "safetensors":
            tag = _ST_TAGS.get(self.dtype)
            if tag is None:
                raise ValueError(f"{name}: cannot write dtype {self.dtype} to safetensors")
            nbytes = self.shape[0] * self.shape[1] * self.dtype.itemsize
            header = json.dumps({key: {"dtype": tag, "shape": list(self.shape), "data_offsets": [0, nbytes]},
                                 "__metadata__": {"format": "np"}}, separators=(",", ":")).encode()
            header += b" " * (-len(header) % 8)
            self._fh = open(self.tmp, "wb")
            self._fh.write(struct.pack("<Q", len(header)) + header)
        else:
            faiss = _faiss()
            self._index = faiss.IndexFlatL2(self.shape[1]) if faiss_metric == "l2" else faiss.IndexFlatIP(self.shape[1])

    def write(self, rows: Any) -> None:
        """Append the next block of rows."""
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != self.shape[1] or self.written + len(rows) > self.shape[0]:
            raise ValueError(f"{self.name}: block of shape {rows.shape} does not fit the remaining "
                             f"{self.shape[0] - self.written} rows x {self.shape[1]} columns")
        if self._fh is not None:
            # through a memoryview: tobytes() would copy the block once more
            self._fh.write(memoryview(np.ascontiguousarray(rows, dtype=self.dtype)).cast("B"))
        else:
            self._index.add(np.ascontiguousarray(rows, dtype=np.float32))
        self.written += len(rows)

    def close(self) -> Path:
        """Finish the file and move it to ``path``; returns ``path``."""
        if self.written != self.shape[0]:
            self.abort()
            raise ValueError(f"{self.name}: {self.written} of {self.shape[0]} rows were written; nothing saved")
        try:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
            else:
                _faiss().write_index(self._index, str(self.tmp))
                self._index = None
            os.chmod(self.tmp, 0o644)
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Drop what was written; ``path`` is left as it was."""
        self._index = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.tmp.exists():
            self.tmp.unlink()

    def __enter__(self) -> "ArrayWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_array(path: PathLike, X: Any, name: str = "-o", key: str = "embeddings",
                faiss_metric: Optional[str] = "ip") -> Path:
    """Write the 2-D float array ``X`` to ``path`` (format from the extension), in blocks.

    Returns exactly the path written. float16 / float32 / float64 are kept (FAISS stores float32).
    """
    X = np.asarray(X)
    _check_dtype(X.dtype, name, Path(path))
    _check_shape(X.shape, name, Path(path))
    with ArrayWriter(path, X.shape[0], X.shape[1], name, key, faiss_metric, dtype=X.dtype) as w:
        for start in range(0, X.shape[0], CHUNK_ROWS):
            w.write(X[start : start + CHUNK_ROWS])
    return Path(path)
