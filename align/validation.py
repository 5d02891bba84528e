"""Input validation: the one place where arrays entering reptrans are checked.

Every public function validates its inputs here, once, at the boundary, and
works on plain contiguous numpy arrays from then on. Each error is a
``ValueError`` (or ``TypeError`` for a non-array) whose message names the
argument and says how to fix it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Optional, Sequence

import numpy as np

__all__ = [
    "as_matrix",
    "check_paired",
    "check_k",
    "check_positive_int",
    "check_real",
    "check_choice",
    "check_nonconstant_columns",
    "check_nonzero_rows",
    "check_texts",
    "check_pairs",
    "to_numpy",
]


def to_numpy(X: Any, name: str = "X") -> np.ndarray:
    """Return ``X`` as a numpy array without validating its contents.

    Accepts numpy arrays, torch tensors (any device; moved to the CPU and
    detached) and nested sequences.
    """
    if isinstance(X, np.ndarray):
        return X
    mod = type(X).__module__
    if mod.startswith("torch"):
        return X.detach().cpu().numpy()
    if isinstance(X, (str, bytes)) or X is None or isinstance(X, numbers.Number):
        raise TypeError(f"{name} must be a 2-D array or tensor, got {type(X).__name__}")
    try:
        return np.asarray(X)
    except (ValueError, TypeError) as exc:  # ragged lists
        raise ValueError(f"{name} could not be read as a rectangular array: {exc}") from None


def as_matrix(
    X: Any,
    name: str = "X",
    *,
    dtype: Optional[type] = None,
    min_rows: int = 1,
    min_cols: int = 1,
) -> np.ndarray:
    """Validate ``X`` as a finite 2-D floating-point matrix.

    Parameters
    ----------
    X : array-like or torch.Tensor of shape (n, d)
    name : the argument's name, used in error messages.
    dtype : np.float32 or np.float64 to convert to; ``None`` keeps float32 and
        float64 and widens float16 / bfloat16 to float32.
    min_rows, min_cols : smallest accepted shape.

    Returns a C-contiguous array (a copy only when needed).
    """
    if type(X).__module__.startswith("torch") and str(getattr(X, "dtype", "")) == "torch.bfloat16":
        X = X.float()  # numpy has no bfloat16
    A = to_numpy(X, name)
    if A.dtype == object:
        raise ValueError(f"{name} has dtype object; pass a numeric array, e.g. np.asarray({name}, dtype=np.float32)")
    if A.dtype.kind == "b":
        raise ValueError(f"{name} has boolean dtype; convert it explicitly, e.g. {name}.astype(np.float32)")
    if A.dtype.kind in "iu":
        raise ValueError(
            f"{name} has integer dtype {A.dtype}; embeddings must be floating point: pass {name}.astype(np.float32)"
        )
    if A.dtype.kind == "c":
        raise ValueError(f"{name} is complex; pass real-valued features")
    if A.dtype.kind != "f":
        raise ValueError(f"{name} has unsupported dtype {A.dtype}; pass a float32 or float64 array")
    if A.ndim != 2:
        hint = f" (use {name}.reshape(len({name}), -1) to flatten)" if A.ndim > 2 else " (use a 2-D array: rows are samples)"
        raise ValueError(f"{name} must be 2-D (samples x features), got shape {A.shape}{hint}")
    n, d = A.shape
    if n == 0 or d == 0:
        raise ValueError(f"{name} is empty (shape {A.shape})")
    if n < min_rows:
        raise ValueError(f"{name} has {n} rows; this needs at least {min_rows}")
    if d < min_cols:
        raise ValueError(f"{name} has {d} columns; this needs at least {min_cols}")
    target = dtype if dtype is not None else (A.dtype if A.dtype.itemsize >= 4 else np.float32)
    A = np.ascontiguousarray(A, dtype=target)
    if not np.isfinite(A).all():
        bad = ~np.isfinite(A)
        rows = np.flatnonzero(bad.any(axis=1))
        kind = "NaN" if np.isnan(A).any() else "Inf"
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite values ({kind}), first in row {int(rows[0])}; "
            "remove or impute them first"
        )
    return A


def check_paired(X: np.ndarray, Y: np.ndarray, names: Sequence[str] = ("X", "Y")) -> None:
    """Rows of X and Y must be the same samples: equal row counts."""
    if X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same number of rows (paired samples), "
            f"got {X.shape[0]} and {Y.shape[0]}"
        )


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """An integer >= ``minimum`` (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_real(value: Any, name: str, low: Optional[float] = None, high: Optional[float] = None,
               open_low: bool = False, open_high: bool = False) -> float:
    """A finite real number within the bounds given (bools are refused).

    ``low`` / ``high`` are inclusive unless ``open_low`` / ``open_high``.
    """
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if open_low else '>='} {low}")
    if high is not None:
        bounds.append(f"{'<' if open_high else '<='} {high}")
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if open_low else value >= low
    if ok and high is not None:
        ok = value < high if open_high else value <= high
    if not ok:
        raise ValueError(f"{name} must be a finite number{' ' if bounds else ''}{' and '.join(bounds)}, got {value!r}")
    return float(value)


def check_k(k: Any, n: int, name: str = "k", exclude_self: bool = True) -> int:
    """Neighbour count: 1 <= k <= n - 1 with self excluded, k <= n otherwise."""
    k = check_positive_int(k, name)
    limit = n - 1 if exclude_self else n
    if k > limit:
        raise ValueError(
            f"{name}={k} is too large for {n} samples: need {name} <= {limit}"
            + (" (self is excluded)" if exclude_self else "")
        )
    return k


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_nonconstant_columns(X: np.ndarray, name: str = "X") -> None:
    """Per-unit correlations are undefined for a column that never varies."""
    const = np.flatnonzero(np.ptp(X, axis=0) == 0)
    if const.size:
        raise ValueError(
            f"{name} has {const.size} constant column(s) (first: {int(const[0])}); "
            "their correlation is undefined: drop them, e.g. "
            f"{name}[:, {name}.std(0) > 0]"
        )


def check_nonzero_rows(X: np.ndarray, name: str = "X") -> None:
    """Cosine similarity is undefined for an all-zero row."""
    zero = np.flatnonzero(~X.any(axis=1))
    if zero.size:
        raise ValueError(
            f"{name} has {zero.size} all-zero row(s) (first: {int(zero[0])}); cosine similarity "
            "is undefined for them: drop them or use metric='ip'"
        )


def check_texts(texts: Any, name: str = "texts") -> list:
    """A non-empty list of non-blank strings (a 1-D numpy array of strings is accepted)."""
    if isinstance(texts, np.ndarray) and texts.ndim == 1:
        texts = texts.tolist()
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise ValueError(f"{name} must be a list of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError(f"{name} is empty; pass at least one text")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ValueError(
            f"{name}[{bad[0]}] is empty or not a string ({len(bad)} such entries); every text must be non-empty"
        )
    return list(texts)


def check_pairs(pairs: Any, n_x: int, n_y: int, name: str = "pairs") -> np.ndarray:
    """Known pairs: an (m, 2) integer array of (row of X, row of Y), m >= 1, every
    index in range, no row of X or of Y used twice. Returns int64 (m, 2)."""
    P = to_numpy(pairs, name)
    if P.dtype == object or P.dtype.kind not in "iuf" or P.dtype.kind == "b":
        raise ValueError(f"{name} must be an (m, 2) array of integers (row of X, row of Y), got dtype {P.dtype}")
    if P.ndim != 2 or P.shape[1] != 2 or P.shape[0] == 0:
        raise ValueError(f"{name} must have shape (m, 2) with m >= 1 (row of X, row of Y), got shape {P.shape}")
    if P.dtype.kind == "f":
        if not np.isfinite(P).all() or (P != np.round(P)).any():
            raise ValueError(f"{name} must hold whole numbers (row indices), got non-integer values")
    P = P.astype(np.int64)
    for col, n, side in ((0, n_x, "X"), (1, n_y, "Y")):
        bad = np.flatnonzero((P[:, col] < 0) | (P[:, col] >= n))
        if bad.size:
            raise ValueError(f"{name}[{int(bad[0])}, {col}] = {int(P[bad[0], col])} is not a row of {side} "
                             f"(which has {n} rows); {bad.size} such entries")
        vals, counts = np.unique(P[:, col], return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"{name}: row {int(vals[counts > 1][0])} of {side} appears in {int(counts.max())} pairs; "
                             "each row may be paired once")
    return P
