"""vec2vec: unpaired translation with adapters, a shared latent space and a GAN
(Jha, Zhang, Shmatikov & Morris 2025), and its CycleGAN-style variant.

- :mod:`translate.vec2vec.networks`: the residual MLP generators, discriminators and losses.
- :mod:`translate.vec2vec.estimator`: :class:`Vec2Vec` and :class:`CycleGAN`, trained on
  align's training engine (:mod:`align.train.engine`).
- :mod:`translate.vec2vec.selection`: the unsupervised nearest-neighbour cycle rate that
  picks seeds and training steps.
- :mod:`translate.vec2vec.legacy`: resume from checkpoints of the earlier layout.

The Wiener input filter they apply at transform time is :mod:`translate.denoise`.
"""

from __future__ import annotations

from .estimator import DEFAULT_WEIGHTS, CycleGAN, Vec2Vec
from .selection import nn_cycle_rate

__all__ = ["Vec2Vec", "CycleGAN", "DEFAULT_WEIGHTS", "nn_cycle_rate"]
