"""Translator: the common shape of every map from space A to space B.

scikit-learn conventions: hyper-parameters are ``__init__`` arguments stored
unchanged; ``fit(X, Y)`` learns state in attributes with a trailing underscore;
``transform(X)`` maps new rows of A into B. ``X`` and ``Y`` are *unpaired* for
the unsupervised translators (row counts may differ); the paired oracles need
paired rows.

Saving writes safetensors + JSON through :mod:`align.checkpoint` (never
pickle); :func:`load` rebuilds the right class from the file and verifies it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, ClassVar, Dict, Type, Union

import numpy as np

from align.checkpoint import load_artifact, save_artifact
from align.params import NotFittedError, Params
from align.validation import as_matrix, check_pairs

__all__ = ["Translator", "load", "REGISTRY", "KINDS", "NotFittedError"]

REGISTRY: Dict[str, Type["Translator"]] = {}


#: where each saveable translator class is defined: :func:`load` imports the module
#: of the kind it finds in a file, so a fresh process loads what another one saved
#: (the registry fills only as classes are imported, and ``translate`` imports lazily).
KINDS: Dict[str, str] = {
    "Procrustes": "translate.paired",
    "Linear": "translate.paired",
    "Isometric": "translate.isometric",
    "Vec2Vec": "translate.vec2vec",
    "CycleGAN": "translate.vec2vec",
    "Universal": "translate.universal",
    "PairTranslator": "translate.universal",
}


def _import_kinds() -> None:
    for module in sorted(set(KINDS.values())):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a real missing dependency, not a kind this version lacks
                raise


class Translator(Params):
    """Base class. Subclasses implement ``_fit(X, Y)`` and ``_transform(X)``
    on validated float arrays, and list their learned arrays in ``_state``.

    Attributes after ``fit``
    ------------------------
    d_in_, d_out_ : widths of the source and target spaces.
    history_ : list of dicts, one per step/iteration of the training objective.
    """

    #: names of learned numpy arrays saved to safetensors (trailing underscore).
    _state: ClassVar[tuple] = ()
    #: names of learned JSON-serialisable scalars/lists saved in the config.
    _state_meta: ClassVar[tuple] = ()
    #: whether fit needs paired rows (the oracles) or accepts unpaired sets.
    paired: ClassVar[bool] = False

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        REGISTRY[cls.__name__] = cls

    # -- fit / transform -------------------------------------------------
    #: whether fit accepts ``pairs=`` (known (row of X, row of Y) pairs among unpaired sets)
    accepts_pairs: ClassVar[bool] = False

    def fit(self, X: Any, Y: Any, pairs: Any = None) -> "Translator":
        """Learn the map from the rows of ``X`` (space A) to space B (rows of ``Y``).

        ``pairs``: optional (m, 2) integers, known pairs (row of X, row of Y), for the
        unpaired translators that use them (``accepts_pairs``)."""
        X = as_matrix(X, "X", dtype=np.float32, min_rows=2)
        Y = as_matrix(Y, "Y", dtype=np.float32, min_rows=2)
        if self.paired and X.shape[0] != Y.shape[0]:
            raise ValueError(
                f"{type(self).__name__} is a paired oracle: X and Y need the same rows, got {X.shape[0]} and {Y.shape[0]}"
            )
        if pairs is not None:
            if not self.accepts_pairs:
                raise ValueError(f"pairs: {type(self).__name__} does not use known pairs"
                                 + (" (it is a paired oracle: rows of X and Y are the pairs)" if self.paired else ""))
            pairs = check_pairs(pairs, X.shape[0], Y.shape[0])
        self.d_in_, self.d_out_ = X.shape[1], Y.shape[1]
        self.history_ = []
        if self.accepts_pairs:
            self._fit(X, Y, pairs=pairs)
        else:
            self._fit(X, Y)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Map rows of space A into space B: returns (n, d_out_) float32."""
        self._check_fitted()
        X = as_matrix(X, "X", dtype=np.float32)
        if X.shape[1] != self.d_in_:
            raise ValueError(f"X has {X.shape[1]} columns but this translator was fitted on {self.d_in_}")
        return np.asarray(self._transform(X), dtype=np.float32)

    def fit_transform(self, X: Any, Y: Any) -> np.ndarray:
        return self.fit(X, Y).transform(X)

    def _check_fitted(self) -> None:
        if not hasattr(self, "d_in_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(X, Y) first")

    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _transform(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- persistence ------------------------------------------------------
    def _state_tensors(self) -> Dict[str, np.ndarray]:
        return {name: np.asarray(getattr(self, name)) for name in self._state}

    def _load_state(self, tensors: Dict[str, np.ndarray], meta: Dict[str, Any]) -> None:
        for name in self._state:
            setattr(self, name, tensors[name])
        for name in self._state_meta:
            setattr(self, name, meta[name])

    def save(self, path: Union[str, Path]) -> Path:
        """Write ``config.json`` + ``weights.safetensors`` into the folder ``path``."""
        self._check_fitted()
        meta = {name: getattr(self, name) for name in self._state_meta}
        config = {
            "params": self.get_params(deep=False),
            "d_in": int(self.d_in_),
            "d_out": int(self.d_out_),
            "meta": meta,
            "history": getattr(self, "history_", [])[-1000:],
        }
        return save_artifact(path, type(self).__name__, config, self._state_tensors())

    @classmethod
    def load(cls, path: Union[str, Path]) -> "Translator":
        """Load a translator of this class (any registered class when called on
        :class:`Translator`). A foreign, tampered or truncated artefact raises ValueError."""
        if cls is Translator:
            _import_kinds()
        kinds = list(REGISTRY) if cls is Translator else [cls.__name__]
        config, tensors, kind = load_artifact(path, kinds, expected_config_keys=("params", "d_in", "d_out", "meta", "history"))
        klass = REGISTRY[kind]
        params = config.get("params")
        if not isinstance(params, dict) or set(params) - set(klass._param_names()):
            raise ValueError(f"{path}: parameters {sorted(params or {})} do not fit {kind}")
        meta = config.get("meta")
        if isinstance(meta, dict):
            meta = klass._upgrade_meta(meta)
        if not isinstance(meta, dict) or set(meta) != set(klass._state_meta):
            raise ValueError(f"{path}: learned metadata {sorted(meta or {})} does not fit {kind}")
        if set(tensors) != set(klass._state):
            raise ValueError(f"{path}: tensors {sorted(tensors)} do not fit {kind}, which stores {sorted(klass._state)}")
        obj = klass(**params)
        obj.d_in_, obj.d_out_ = int(config["d_in"]), int(config["d_out"])
        obj.history_ = list(config.get("history") or [])
        obj._load_state(tensors, meta)
        obj._check_state()
        return obj

    def _check_state(self) -> None:
        """Subclasses verify loaded shapes against d_in_/d_out_ (raise ValueError)."""

    @classmethod
    def _upgrade_meta(cls, meta: Dict[str, Any]) -> Dict[str, Any]:
        """Learned metadata of an artefact saved by an earlier version, completed with
        what that version implied for fields added since (identity by default), so a
        saved translator keeps loading."""
        return meta


def load(path: Union[str, Path]) -> Translator:
    """Load any saved translator: ``translate.load("model/")``."""
    return Translator.load(path)
