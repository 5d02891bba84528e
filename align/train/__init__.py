"""align.train: train representations to align, on one training engine.

- :mod:`align.train.engine`: the engine every trainer runs on (steps with
  optimisers, rollback with learning-rate halving and
  :class:`TrainingDivergedError`, one checkpoint layout, resume, callbacks).
- :mod:`align.train.losses`: CLIP and SigLIP losses with their distributed gather.
- :mod:`align.train.contrastive`: :class:`ContrastiveAligner`, heads trained contrastively.
- :mod:`align.train.repa`: REPA (projector, forward hook, loss, :class:`RepaTrainer`).

``translate.Vec2Vec`` and ``translate.CycleGAN`` run on the same engine.
"""

from __future__ import annotations

from .contrastive import ContrastiveAligner
from .engine import EpochBatches, RandomBatches, StopTraining, Trainer, TrainingDivergedError
from .losses import ClipLoss, SigLipLoss, clip_loss, gather_with_grad, siglip_loss
from .repa import RepaHandle, RepaProjector, RepaTrainer, as_tokens, attach_repa, repa_loss, train_with_repa

__all__ = [
    "Trainer",
    "TrainingDivergedError",
    "StopTraining",
    "EpochBatches",
    "RandomBatches",
    "clip_loss",
    "siglip_loss",
    "gather_with_grad",
    "ClipLoss",
    "SigLipLoss",
    "ContrastiveAligner",
    "RepaProjector",
    "RepaHandle",
    "RepaTrainer",
    "attach_repa",
    "repa_loss",
    "train_with_repa",
    "as_tokens",
]
