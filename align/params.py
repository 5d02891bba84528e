"""scikit-learn's estimator contract, in one place, for every estimator of reptrans.

Hyper-parameters are the keyword arguments of ``__init__``, stored unchanged
under their own names; :class:`Params` derives ``get_params`` / ``set_params`` /
``repr`` from the signature (an estimator given as a parameter nests as
``<name>__<key>``, as in scikit-learn), so ``sklearn.base.clone`` works. An estimator used
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
        """Hyper-parameters as passed to ``__init__`` (scikit-learn's contract); with ``deep``,
        a parameter that is itself an estimator adds its own as ``<name>__<key>``."""
        p = {name: getattr(self, name) for name in self._param_names()}
        for name, value in list(p.items()) if deep else ():
            if hasattr(value, "get_params") and not isinstance(value, type):
                p.update({f"{name}__{k}": v for k, v in value.get_params(deep=True).items()})
        return p

    def set_params(self, **params: Any):
        """Set hyper-parameters by name, and ``<name>__<key>`` those of an estimator given as a
        parameter (validated at ``fit``); returns self. An unknown name raises ValueError
        listing the valid ones."""
        valid = self._param_names()
        nested: Dict[str, Dict[str, Any]] = {}
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise ValueError(f"{type(self).__name__} has no parameter {key!r}; valid: {', '.join(valid)}")
            if sub:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():  # after the plain ones: a new estimator first, then its settings
            inner = getattr(self, name)
            if not hasattr(inner, "set_params"):
                raise ValueError(f"{name}__ parameters given, but {name} is {inner!r}, which has no set_params")
            inner.set_params(**sub_params)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params(deep=False).items())
        return f"{type(self).__name__}({args})"
