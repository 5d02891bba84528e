"""scikit-learn's estimator contract, in one place, for every estimator of reptrans.

Hyper-parameters are the keyword arguments of ``__init__``, stored unchanged
under their own names; :class:`Params` derives ``get_params`` / ``set_params`` /
``repr`` from the signature, so ``sklearn.base.clone`` works. An estimator used
before ``fit`` raises :class:`NotFittedError`. Used by :class:`translate.Translator`,
:class:`align.ContrastiveAligner` and :class:`align.RepaTrainer`.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List

__all__ = ["Params", "NotFittedError"]


class NotFittedError(ValueError, AttributeError):
    """An estimator used before ``fit`` (scikit-learn's NotFittedError is also a
    ValueError and an AttributeError)."""


class Params:
    """Mixin: ``get_params(deep)``, ``set_params(**params)`` and ``repr`` from ``__init__``'s signature."""

    @classmethod
    def _param_names(cls) -> List[str]:
        params = inspect.signature(cls.__init__).parameters.values()
        return [p.name for p in params if p.name != "self" and p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]

    def get_params(self, deep: bool = True) -> Dict[str, Any]:
        """Hyper-parameters as passed to ``__init__`` (scikit-learn's contract;
        ``deep`` is accepted for ``sklearn.base.clone``: no parameter is an estimator)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any):
        """Set hyper-parameters by name (validated at ``fit``); returns self. An
        unknown name raises ValueError listing the valid ones."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"{type(self).__name__} has no parameter {name!r}; valid: {', '.join(valid)}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"
