"""Artefacts on disk: safetensors for tensors, JSON for everything else. Never pickle.

A saved artefact is a folder holding ``config.json`` and ``weights.safetensors``.
The JSON carries a format version and the artefact's class; loading checks both,
and checks every tensor's name, shape and dtype against what the caller expects,
so a truncated, foreign or tampered file is refused with a clear ``ValueError``.
Writes are atomic (temp file, then rename): an interrupted save never leaves a
half-written artefact in place of a good one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple, Union

import numpy as np

FORMAT_VERSION = 2  # 2: sha256 of the weights file
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "weights.safetensors"

PathLike = Union[str, os.PathLike]

__all__ = ["save_artifact", "load_artifact", "atomic_write_bytes", "FORMAT_VERSION"]


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared cache must stay readable
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _to_numpy_dict(tensors: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    out = {}
    for k, v in tensors.items():
        if type(v).__module__.startswith("torch"):
            v = v.detach().cpu().numpy()
        # ascontiguousarray promotes 0-d arrays to 1-d; keep scalars scalars.
        out[k] = np.ascontiguousarray(v).reshape(np.shape(v))
    return out


def save_artifact(path: PathLike, kind: str, config: Mapping[str, Any], tensors: Mapping[str, Any]) -> Path:
    """Save ``tensors`` (numpy arrays or torch tensors) and a JSON ``config``.

    ``kind`` names the class that wrote the artefact; :func:`load_artifact`
    refuses an artefact of another kind.
    """
    from safetensors.numpy import save as st_save

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    arrays = _to_numpy_dict(tensors)
    weights = st_save(arrays)
    meta = {
        "format": "reptrans",
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": dict(config),
        "tensors": {k: {"shape": list(a.shape), "dtype": str(a.dtype)} for k, a in arrays.items()},
        # flipped bytes inside tensor data keep a valid safetensors file: only a digest sees them
        "sha256": hashlib.sha256(weights).hexdigest(),
    }
    atomic_write_bytes(path / WEIGHTS_NAME, weights)
    atomic_write_bytes(path / CONFIG_NAME, json.dumps(meta, indent=2, sort_keys=True, default=_json_scalar).encode())
    return path


def _json_scalar(obj: Any) -> Any:
    # numpy scalars pass the parameter checks (np.int64(5) is an Integral) and must save as numbers
    if isinstance(obj, np.generic) and obj.ndim == 0 and obj.dtype.kind in "biuf":
        return obj.item()
    raise TypeError(f"config value of type {type(obj).__name__} is not JSON-serialisable")


def load_artifact(
    path: PathLike,
    kind: Union[str, Iterable[str]],
    expected_config_keys: Optional[Iterable[str]] = None,
) -> Tuple[Dict[str, Any], Dict[str, np.ndarray], str]:
    """Load and verify an artefact written by :func:`save_artifact`.

    Returns ``(config, tensors, kind)``. Raises ``ValueError`` naming the file
    and the problem for: a missing file, a non-JSON or foreign config, another
    format version, another kind, unexpected config keys, a file that is not
    safetensors (a pickle, say), a truncated file, or tensors whose names,
    shapes or dtypes differ from those the config records, or weights whose
    sha256 digest is not the one the config records (flipped bytes in tensor data).
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    path = Path(path)
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    cfg_file, w_file = path / CONFIG_NAME, path / WEIGHTS_NAME
    if not path.is_dir():
        raise ValueError(f"path {str(path)!r} is not a saved reptrans artefact folder")
    for f in (cfg_file, w_file):
        if not f.is_file():
            raise ValueError(f"path {str(path)!r} is missing {f.name}; not a complete reptrans artefact")
    try:
        meta = json.loads(cfg_file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{cfg_file} is not valid JSON ({exc}); the artefact is corrupt") from None
    if not isinstance(meta, dict) or meta.get("format") != "reptrans":
        raise ValueError(f"{cfg_file} is not a reptrans artefact config")
    allowed_top = {"format", "format_version", "kind", "config", "tensors", "sha256"}
    extra = set(meta) - allowed_top
    if extra:
        raise ValueError(f"{cfg_file} has unexpected keys {sorted(extra)}; refusing a tampered artefact")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{cfg_file} has format_version {meta.get('format_version')!r}; this reptrans reads version {FORMAT_VERSION}"
        )
    if meta.get("kind") not in kinds:
        raise ValueError(f"{path} holds a {meta.get('kind')!r}, not a {' or '.join(kinds)}")
    config = meta.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{cfg_file}: 'config' must be an object")
    if expected_config_keys is not None:
        extra = set(config) - set(expected_config_keys)
        if extra:
            raise ValueError(f"{cfg_file}: unexpected config keys {sorted(extra)}")
    raw = w_file.read_bytes()
    try:
        tensors = st_load(raw)
    except (SafetensorError, Exception) as exc:  # safetensors raises several types on garbage
        raise ValueError(
            f"{w_file} is not a valid safetensors file ({type(exc).__name__}: {exc}); "
            "it may be truncated, or a pickle — reptrans never unpickles"
        ) from None
    if meta.get("sha256") != hashlib.sha256(raw).hexdigest():
        raise ValueError(f"{w_file} does not match the sha256 digest in {cfg_file.name}; the artefact is corrupt or was altered")
    declared = meta.get("tensors")
    if not isinstance(declared, dict) or set(declared) != set(tensors):
        raise ValueError(f"{w_file}: tensor names {sorted(tensors)} do not match the config's {sorted(declared or {})}")
    for name, arr in tensors.items():
        spec = declared[name]
        if list(arr.shape) != list(spec.get("shape", [])) or str(arr.dtype) != spec.get("dtype"):
            raise ValueError(
                f"{w_file}: tensor {name!r} is {arr.dtype}{list(arr.shape)}, config says {spec.get('dtype')}{spec.get('shape')}"
            )
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ValueError(f"{w_file}: tensor {name!r} contains NaN or Inf")
    return config, tensors, meta["kind"]
