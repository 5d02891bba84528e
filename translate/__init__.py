"""reptrans.translate: map one embedding space into another, with or without pairs.

Names are loaded lazily (PEP 562), as in :mod:`align`, except ``evaluate`` (see below).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Translator": "translate.base",
    "load": "translate.base",
    "Procrustes": "translate.paired",
    "Linear": "translate.paired",
    "Isometric": "translate.isometric",
    "Universal": "translate.universal",
    "PairTranslator": "translate.universal",
    "translatability": "translate.translatable",
    "Vec2Vec": "translate.vec2vec",
    "CycleGAN": "translate.vec2vec",
    "evaluate": "translate.evaluate",
    "unpaired_diagnostic": "translate.evaluate",
}

__all__ = sorted(_EXPORTS)

# ``translate.evaluate`` is both a submodule and a function; importing the submodule
# (``from translate.evaluate import ...``) would bind the module over the lazy name.
from .evaluate import evaluate, unpaired_diagnostic  # noqa: E402


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'translate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
