"""reptrans.align: measure how alike two representations are, and train them to align.

Names are loaded lazily (PEP 562) so that ``import align`` stays cheap and a
metric does not pay for torch or sentence-transformers unless it uses them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Bound eagerly: the submodule align.knn shares the function's name, and the
# import system would otherwise set the package attribute to the module the
# first time anything imports align.knn. Importing it here costs only numpy.
from .knn import knn  # noqa: E402

# public name -> module that defines it
_EXPORTS = {
    "mutual_knn": "align.metrics.neighbors",
    "cycle_knn": "align.metrics.neighbors",
    "lcs_knn": "align.metrics.neighbors",
    "edit_distance_knn": "align.metrics.neighbors",
    "cknna": "align.metrics.neighbors",
    "cka": "align.metrics.kernel",
    "hsic": "align.metrics.kernel",
    "rsa": "align.metrics.kernel",
    "svcca": "align.metrics.cca",
    "pwcca": "align.metrics.cca",
    "linear_score": "align.metrics.mapping",
    "procrustes_score": "align.metrics.mapping",
    "permutation_score": "align.metrics.mapping",
    "soft_match_score": "align.metrics.mapping",
    "score": "align.metrics",
    "METRICS": "align.metrics",
    "chance_level": "align.metrics",
    "compare_layers": "align.layers",
    "LayerComparison": "align.layers",
    "rotation_test": "align.layers",
    "random_rotation": "align.layers",
    "extract_activations": "align.extract",
    "encode": "align.encoders",
    "ENCODERS": "align.encoders",
    "get_encoder_spec": "align.encoders",
    "load_corpus": "align.data",
    "embed_corpus": "align.data",
    "ContrastiveAligner": "align.train.contrastive",
    "clip_loss": "align.train.losses",
    "siglip_loss": "align.train.losses",
    "RepaProjector": "align.train.repa",
    "attach_repa": "align.train.repa",
    "repa_loss": "align.train.repa",
    "train_with_repa": "align.train.repa",
    "RepaTrainer": "align.train.repa",
    "gather_with_grad": "align.train.losses",
    "TrainingDivergedError": "align.train.engine",
    "StopTraining": "align.train.engine",
}

__all__ = sorted([*_EXPORTS, "knn"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'align' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
