"""The bundled text corpus and the on-disk embedding cache.

Corpus
------
``load_corpus("wordnet")`` returns the glosses (definitions) and the quoted
example sentences of WordNet 3.0, read from the Debian package ``wordnet-base``
(``/usr/share/wordnet/data.{noun,verb,adj,adv}``). Each gloss ``definition;
"example 1"; "example 2"`` yields up to three texts. Texts are cleaned
(whitespace collapsed, fewer than :data:`MIN_WORDS` words dropped),
de-duplicated, and put in a fixed pseudo-random order: texts are sorted by
``sha256(f"{seed}\\0{text}")``. That order depends on nothing but the texts
and the seed -- not on numpy's or Python's random generators, whose streams may
change between versions -- so ``texts[start:start + n]`` names the same texts on
every machine.

WordNet attribution: "Princeton University, About WordNet. WordNet. Princeton
University. 2010." (https://wordnet.princeton.edu/); the WordNet 3.0 licence
allows use and redistribution with this notice.

Embedding cache
---------------
``embed_corpus`` caches embeddings under ``$REPTRANS_CACHE`` (default
``~/.cache/reptrans``) in ``embeddings/<encoder key>/<sha256>.safetensors``.
The texts are cut into chunks on a fixed grid of :data:`CHUNK_SIZE` positions
(chunk ``j`` holds texts ``[j*C, (j+1)*C)``), and every chunk is stored under
the hash of its own texts, so

* a second call with the same inputs computes nothing;
* an interrupted run resumes after the last completed chunk (each chunk is
  written atomically, temp file then rename, as soon as it is done);
* overlapping slices of a corpus share their full chunks (``[0, 10000)`` then
  ``[5000, 15000)`` recomputes only what the first call did not cover).

Embeddings are cached as the encoder returns them; ``normalize=True`` is
applied after loading, so both variants share one cache.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from align.checkpoint import atomic_write_bytes
from align.encoders import cache_root, length_batches
from align.progress import progress_bar
from align.validation import as_matrix, check_positive_int, check_texts

__all__ = [
    "load_corpus",
    "embed_corpus",
    "CORPORA",
    "WORDNET_DIR",
    "CHUNK_SIZE",
    "MIN_WORDS",
    "cache_root",
    "texts_hash",
]

WORDNET_DIR = Path(os.environ.get("REPTRANS_WORDNET_DIR", "/usr/share/wordnet"))
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
CORPORA = ("wordnet",)
MIN_WORDS = 3  # glosses shorter than this ("a tree", "not bad") carry little sentence meaning
CORPUS_SEED = 0
CHUNK_SIZE = 2048
CACHE_FORMAT = 1  # bump when the chunk layout or keys change

PathLike = Union[str, os.PathLike]
_WS = re.compile(r"\s+")
# examples follow the definition as `; "..."` (sometimes `: "..."` inside the definition)
_SPLIT_EXAMPLES = re.compile(r';\s*(?=")')
_QUOTED = re.compile(r'"([^"]+)"')


def _clean(text: str) -> str:
    return _WS.sub(" ", text).strip()


def _gloss_texts(gloss: str) -> List[str]:
    """Split one WordNet gloss into its definition and its quoted examples."""
    out = []
    for part in _SPLIT_EXAMPLES.split(gloss):
        part = part.strip().rstrip(";").strip()
        if part.startswith('"'):
            # `"ex"`, `"ex" - Author`, `"ex 1", "ex 2"`, `"ex 1" or "ex 2"`: the quoted pieces
            quoted = _QUOTED.findall(part)
            out.extend(quoted if quoted else [part.strip('"')])
        else:
            out.append(part)
    return out


def _wordnet_raw(directory: Path) -> List[str]:
    missing = [f for f in WORDNET_FILES if not (directory / f).is_file()]
    if missing:
        raise ValueError(
            f"corpus 'wordnet' needs the WordNet 3.0 database, but {directory} lacks {', '.join(missing)}; "
            "install it with `sudo apt-get install wordnet-base` (or run `bash scripts/setup.sh`), "
            "or set REPTRANS_WORDNET_DIR to a folder holding data.noun, data.verb, data.adj, data.adv"
        )
    texts = []
    for fname in WORDNET_FILES:
        with open(directory / fname, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  "):  # licence header lines start with two spaces
                    continue
                bar = line.find(" | ")
                if bar < 0:
                    continue
                texts.extend(_gloss_texts(line[bar + 3 :]))
    return texts


def _order(texts: Iterable[str], seed: int) -> List[str]:
    """Clean, drop short, de-duplicate, then sort by a seeded content hash."""
    seen = set()
    for t in texts:
        t = _clean(t)
        if len(t.split(" ")) >= MIN_WORDS:
            seen.add(t)
    prefix = f"{seed}\0".encode()
    return sorted(seen, key=lambda t: (hashlib.sha256(prefix + t.encode()).digest(), t))


@functools.lru_cache(maxsize=4)
def _wordnet(directory: str, seed: int) -> Tuple[str, ...]:
    return tuple(_order(_wordnet_raw(Path(directory)), seed))


def _read_text_file(path: Path) -> List[str]:
    texts = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            text = _clean(line)
            if not text:
                raise ValueError(
                    f"corpus file {str(path)!r} has a blank line at line {lineno}; "
                    "give one non-empty text per line (remove blank lines)"
                )
            texts.append(text)
    if not texts:
        raise ValueError(f"corpus file {str(path)!r} is empty")
    return texts


def _corpus_bounds(name: PathLike, n: Optional[int], start: int) -> Tuple[Sequence[str], int, int, str]:
    """The whole corpus and the validated bounds ``[lo, hi)`` of the slice asked for."""
    start = check_positive_int(start, "start", minimum=0)
    if n is not None:
        n = check_positive_int(n, "n")
    if not isinstance(name, (str, os.PathLike)):
        raise ValueError(f"corpus name must be one of {', '.join(map(repr, CORPORA))} or a text file path, got {name!r}")
    key = os.fspath(name)
    if key in CORPORA:
        texts: Sequence[str] = _wordnet(str(WORDNET_DIR), CORPUS_SEED)
    elif Path(key).is_file():
        texts = _read_text_file(Path(key))
    else:
        raise ValueError(
            f"corpus name {key!r} is neither a known corpus ({', '.join(map(repr, CORPORA))}) nor an existing text file"
        )
    total = len(texts)
    if start >= total:
        raise ValueError(f"start={start} is beyond the corpus {key!r}, which has {total} texts")
    stop = total if n is None else start + n
    if stop > total:
        raise ValueError(
            f"n={n} with start={start} asks for texts up to {stop}, but corpus {key!r} has only {total}; "
            f"use n <= {total - start}"
        )
    return texts, start, stop, key


def load_corpus(name: PathLike = "wordnet", n: Optional[int] = None, start: int = 0) -> List[str]:
    """Texts ``[start, start + n)`` of a corpus.

    Parameters
    ----------
    name : ``"wordnet"`` (WordNet 3.0 glosses and examples, ~180k distinct
        texts in a fixed seeded order, see the module docstring), or a path to
        a UTF-8 text file with one text per line (kept in file order, not
        de-duplicated; whitespace collapsed; a blank line is an error).
    n : how many texts (``None``: all from ``start`` on).
    start : index of the first text.

    Raises ``ValueError`` for an unknown name, a missing WordNet database, a
    text file with blank lines, or a slice beyond the corpus.
    """
    texts, lo, hi, _ = _corpus_bounds(name, n, start)
    return list(texts[lo:hi])


# ---------------------------------------------------------------------------
# embedding cache


def texts_hash(texts: Sequence[str]) -> str:
    """sha256 of a list of texts (length-prefixed, so boundaries are unambiguous)."""
    h = hashlib.sha256()
    h.update(f"{len(texts)}\n".encode())
    for t in texts:
        b = t.encode("utf-8")
        h.update(f"{len(b)}:".encode())
        h.update(b)
    return h.hexdigest()


def _safe_key(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._") or "encoder"


def _load_chunk(path: Path, count: int) -> Optional[np.ndarray]:
    """A cached chunk, or None when it is absent or unreadable (then it is recomputed)."""
    if not path.is_file():
        return None
    from safetensors.numpy import load as st_load

    try:
        arr = st_load(path.read_bytes())["embeddings"]
    except Exception:  # truncated / foreign file: recompute rather than fail
        return None
    if arr.ndim != 2 or arr.shape[0] != count or arr.dtype != np.float32 or not np.isfinite(arr).all():
        return None
    return arr


def _save_chunk(path: Path, arr: np.ndarray, meta: dict) -> None:
    from safetensors.numpy import save as st_save

    atomic_write_bytes(path, st_save({"embeddings": np.ascontiguousarray(arr, dtype=np.float32)}, metadata=meta))


def _encode_chunk(fn: Callable, texts: List[str], batch_size: int, bar) -> np.ndarray:
    """A callable encoder: batches of similar length (less padding), in the caller's order."""
    out: Optional[np.ndarray] = None
    for idx in length_batches([len(t) for t in texts], batch_size):  # by characters: no tokenizer here
        emb = as_matrix(fn([texts[i] for i in idx]), "encoder output", dtype=np.float32)
        if emb.shape[0] != len(idx):
            raise ValueError(f"encoder returned {emb.shape[0]} rows for {len(idx)} texts")
        if out is None:
            out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
        out[idx] = emb
        bar.update(len(idx))
    assert out is not None
    return out


ChunkEncoder = Callable[[List[str], int, object], np.ndarray]


def _resolve_encoder(encoder, cache_key: Optional[str], device,
                     precision: str = "fp32") -> Tuple[str, ChunkEncoder]:
    """The cache key and a function embedding one chunk: ``(texts, batch_size, bar) -> rows``."""
    if isinstance(encoder, (str, os.PathLike)):
        from align import encoders

        spec = encoders.get_encoder_spec(encoder)  # ValueError for an unknown name or a bad folder
        encoders.check_precision(precision, spec)
        label = "local-" + Path(spec.folder).name if spec.folder else spec.name
        # float32 keeps the key it always had; another precision's rows are cached apart
        key = cache_key or f"{label}-{spec.version()}" + ("" if precision == "fp32" else f"-{precision}")
        kw = {} if precision == "fp32" else {"precision": precision}

        def encode_chunk(texts: List[str], batch_size: int, bar) -> np.ndarray:
            # the whole chunk in one call: the encoder sorts it by token count and batches it
            emb = as_matrix(encoders.encode(texts, encoder=spec.name, batch_size=batch_size, progress=False,
                                            device=device, on_batch=bar.update, **kw),
                            "encoder output", dtype=np.float32)
            if emb.shape[0] != len(texts):
                raise ValueError(f"encoder returned {emb.shape[0]} rows for {len(texts)} texts")
            return emb

        return key, encode_chunk
    if callable(encoder):
        if precision != "fp32":
            raise ValueError(f"precision={precision!r} applies to named encoders; a callable encoder runs as it is")
        if not cache_key:
            raise ValueError(
                "cache_key: a custom (callable) encoder needs cache_key='a-name-that-changes-with-the-model' "
                "so its cached embeddings are not confused with another model's"
            )
        return cache_key, functools.partial(_encode_chunk, encoder)
    raise ValueError(f"encoder must be an encoder name (see align.ENCODERS) or a callable, got {encoder!r}")


def embed_corpus(
    encoder: Union[str, Callable[[List[str]], np.ndarray]] = "minilm",
    texts: Optional[Sequence[str]] = None,
    corpus: PathLike = "wordnet",
    n: Optional[int] = None,
    start: int = 0,
    cache_dir: Optional[PathLike] = None,
    batch_size: int = 64,
    progress: bool = True,
    normalize: bool = False,
    cache_key: Optional[str] = None,
    device: Optional[str] = None,
    cached_only: bool = False,
    precision: str = "fp32",
) -> np.ndarray:
    """Embed texts with a sentence encoder, cached on disk in resumable chunks.

    Parameters
    ----------
    encoder : a name from ``align.ENCODERS`` (``"minilm"``, ``"mpnet"``, ``"e5"``), the
        path of a local sentence-transformers model folder, or a callable ``list[str] -> (len, d) array`` (then ``cache_key`` is required).
    texts : the texts to embed (a list of non-empty strings); if ``None``,
        the texts of ``corpus`` (see :func:`load_corpus`).
    corpus : corpus name or text-file path, used when ``texts`` is ``None``.
    n, start : embed only items ``[start, start + n)`` of ``texts`` / the corpus
        (``n=None``: to the end). Chunks sit on a grid over the whole list, so
        disjoint or overlapping slices share the cache.
    cache_dir : cache folder (default ``$REPTRANS_CACHE`` or ``~/.cache/reptrans``).
    batch_size : texts per encoder call (a named encoder takes a whole chunk, sorts it by
        token count and embeds batches of at most ``batch_size`` texts, see
        :func:`align.encoders.encode`).
    progress : show a tqdm bar (cached texts count as done).
    normalize : L2-normalise rows of the result (the cache holds raw outputs).
    cache_key : names a custom encoder in the cache; overrides the default
        ``"<name>-<package version>"`` key of a named one.
    device : torch device for a named encoder (default: CUDA when present).
    cached_only : never embed: a ``ValueError`` names the first texts missing from the
        cache instead (studies that must not start an hour of encoding by accident).
    precision : ``"fp32"`` (default) or ``"bf16"`` (opt-in, minilm / mpnet / local folders:
        bfloat16 autocast, faster on CPUs with AMX or AVX512-BF16, rows close to but not
        equal to float32's; cached under ``<key>-bf16``), see :func:`align.encoders.encode`.

    Returns a float32 array of shape (number of texts selected, d).
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    key, fn = _resolve_encoder(encoder, cache_key, device, precision)
    if texts is None:
        all_texts, lo, hi, label = _corpus_bounds(corpus, n, start)
    else:
        all_texts, label = check_texts(texts), "texts"
        start = check_positive_int(start, "start", minimum=0)
        lo, hi = start, len(all_texts) if n is None else start + check_positive_int(n, "n")
        if lo >= len(all_texts) or hi > len(all_texts):
            raise ValueError(f"start={start}, n={n} select texts [{lo}, {hi}) but texts has only {len(all_texts)}")

    folder = cache_root(cache_dir) / "embeddings" / _safe_key(key)
    meta = {"encoder": key, "format": str(CACHE_FORMAT)}
    # grid cells overlapping [lo, hi): the full cell is shared by every slice that covers it
    pieces = []
    for c0 in range((lo // CHUNK_SIZE) * CHUNK_SIZE, hi, CHUNK_SIZE):
        c1 = min(c0 + CHUNK_SIZE, len(all_texts))
        a, b = max(c0, lo), min(c1, hi)
        pieces.append((c0, c1, a, b))

    results: List[Optional[np.ndarray]] = [None] * len(pieces)
    todo = []
    for i, (c0, c1, a, b) in enumerate(pieces):
        full = folder / f"{texts_hash(all_texts[c0:c1])}.safetensors"
        arr = _load_chunk(full, c1 - c0)
        if arr is not None:
            results[i] = arr[a - c0 : b - c0]
            continue
        if (a, b) != (c0, c1):
            part = folder / f"{texts_hash(all_texts[a:b])}.safetensors"
            arr = _load_chunk(part, b - a)
            if arr is not None:
                results[i] = arr
                continue
        todo.append(i)

    if todo and cached_only:
        _, _, a, b = pieces[todo[0]]
        raise ValueError(f"cached_only=True but {key} embeddings of {label} [{a}, {b}) are not in {folder} "
                         f"({len(todo)} of {len(pieces)} chunks missing); embed them first")
    cached = sum(r.shape[0] for r in results if r is not None)
    total = hi - lo
    with progress_bar(total=total, initial=cached, desc=f"embed {key} ({label})", unit="text",
                      enabled=progress) as bar:
        for i in todo:
            _, _, a, b = pieces[i]
            chunk = list(all_texts[a:b])
            arr = fn(chunk, batch_size, bar)
            _save_chunk(folder / f"{texts_hash(chunk)}.safetensors", arr, {**meta, "count": str(len(chunk))})
            results[i] = arr

    dims = {r.shape[1] for r in results if r is not None}
    if len(dims) != 1:
        raise ValueError(
            f"cached chunks under {folder} have different widths {sorted(dims)}; "
            "the encoder changed without a new cache_key: delete that folder or pass another cache_key"
        )
    out = np.concatenate(results, axis=0) if len(results) > 1 else np.array(results[0], dtype=np.float32)
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = out / np.where(norms > 0, norms, 1.0)
    return out.astype(np.float32, copy=False)
