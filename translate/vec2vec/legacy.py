"""Resume from a training checkpoint of the earlier vec2vec layout.

Before vec2vec ran on align's training engine, each seed kept its checkpoints
as ``checkpoint_dir/seed_<i>/step_<k>/`` (artefact kind ``Vec2VecCheckpoint``,
Adam moments by parameter index, step counts in the JSON) with a JSON ``LATEST``
pointer ``{"dir": "step_<k>"}``. :func:`restore_legacy_checkpoint` reads such a
checkpoint into a :class:`align.train.Trainer`, after the same checks as then
(seed index, format version, fingerprint of data and hyper-parameters, folder
name against recorded step); the next save writes the engine's layout.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from align.checkpoint import load_artifact

__all__ = ["restore_legacy_checkpoint", "legacy_fingerprint", "LEGACY_KIND"]

LEGACY_KIND = "Vec2VecCheckpoint"
LEGACY_VERSION = 1
STEP_DIR = re.compile(r"^step_(\d{9})$")


def legacy_fingerprint(kind: str, params: Dict[str, Any], X: np.ndarray, Y: np.ndarray, targets: Optional[np.ndarray]) -> str:
    """The digest the earlier layout recorded: class name, JSON parameters (those
    that change training), and the raw training arrays."""
    from align.train.engine import fingerprint_arrays

    header = json.dumps([kind, params], sort_keys=True, default=str).encode()
    return fingerprint_arrays(X, Y, *(() if targets is None else (targets,)), header=header, dtypes=False)


def restore_legacy_checkpoint(trainer: Any, seed_dir: Path, index: int, kind: str, params: Dict[str, Any],
                              X: np.ndarray, Y: np.ndarray, targets: Optional[np.ndarray]) -> bool:
    """Restore ``seed_dir``'s checkpoint of the earlier layout into ``trainer``
    (generators ``net.gen.*``, discriminators ``net.disc.*``, optimisers ``g``
    then ``d``); False when ``seed_dir`` holds none (or holds the engine's layout)."""
    import torch

    pointer = Path(seed_dir) / "LATEST"
    if not pointer.is_file():
        return False
    try:
        text = pointer.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{pointer} is corrupt; delete {seed_dir} to start this seed afresh") from None
    if not text.lstrip().startswith("{"):
        return False  # the engine's layout: LATEST names a ckpt-<n> folder
    try:
        name = json.loads(text)["dir"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{pointer} is corrupt; delete {seed_dir} to start this seed afresh") from None
    if not isinstance(name, str) or not STEP_DIR.match(name):
        raise ValueError(f"{pointer} names {name!r}, not a checkpoint folder")
    where = str(Path(seed_dir) / name)
    meta, tensors, _ = load_artifact(Path(seed_dir) / name, LEGACY_KIND)
    if meta.get("version") != LEGACY_VERSION or meta.get("seed_index") != index:
        raise ValueError(f"{where}: not a checkpoint of seed {index} in this format")
    if meta.get("fingerprint") != legacy_fingerprint(kind, params, X, Y, targets):
        raise ValueError(
            f"{where}: this checkpoint is from a run with other data or hyper-parameters; "
            "use another checkpoint_dir (or delete this one) to start afresh"
        )
    try:
        converted: Dict[str, Any] = {f"net.{k}": v for k, v in tensors.items() if k.startswith(("gen.", "disc."))}
        offset = 0
        for legacy_name, opt_name in (("opt_g", "g"), ("opt_d", "d")):
            for i, st in enumerate(meta["adam_steps"][legacy_name]):
                if st >= 0:
                    converted[f"optim.{offset + i}.step"] = np.array(float(st), dtype=np.float32)
                    converted[f"optim.{offset + i}.exp_avg"] = tensors[f"{legacy_name}.{i}.exp_avg"]
                    converted[f"optim.{offset + i}.exp_avg_sq"] = tensors[f"{legacy_name}.{i}.exp_avg_sq"]
            offset += sum(len(g["params"]) for g in trainer.optimizers[opt_name].param_groups)
        converted["rng.torch"] = torch.get_rng_state()
        step, done = int(meta["step"]), bool(meta["done"])
        state = {
            "epoch": 1 if done else 0,
            "step_in_epoch": 0 if done else step,
            "global_step": step,
            "epoch_loss_sum": 0.0,
            "epoch_loss_count": 0,
            "epoch_extra": {},
            "schedule": meta["rng"],
        }
        config = {
            "fingerprint": trainer.fingerprint,
            "state": state,
            "lr_scale": meta["lr_scale"],
            "history": meta["history"],
            "rollbacks": [],
            "save_seq": 0,
            "extra": {"score": meta["score"]} if done else {},
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: checkpoint does not fit this model ({type(exc).__name__}: {exc})") from None
    trainer.restore(config, converted, where)
    if trainer.global_step != int(STEP_DIR.match(name).group(1)):
        raise ValueError(f"{where}: folder name and recorded step {trainer.global_step} disagree")
    return True
