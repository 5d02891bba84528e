"""Tables and JSON for people and scripts: the one markdown-table formatter of reptrans
(used by the ``reptrans`` command, the demo and ``scripts/bench.py``).

Numbers are formatted per column (:func:`format_column`):

- a column whose name says seconds (``"s"``, ``"fit s"``, ``"time_s"``, ``"seconds"``)
  prints one decimal: ``74.0``;
- a column whose numbers are all whole prints integers: ``1000``;
- otherwise 4 decimals, and values below 0.001 in magnitude keep 3 significant
  digits in exponent form (a FOSCTTM of 6e-6 prints ``6.00e-06``, not ``0.0000``);
- NaN prints ``n/a``; ``None`` prints ``—``; strings print as they are.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["markdown_table", "format_column", "format_number", "json_safe", "to_json", "write_json"]

_SECONDS = re.compile(r"(^|[\s_])(s|sec|secs|seconds|time)$", re.IGNORECASE)
MISSING = "—"


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def format_number(v: float) -> str:
    """One float: 4 decimals, or 3 significant digits below 0.001 in magnitude."""
    v = float(v)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    if abs(v) < 1e-3 or abs(v) >= 1e9:
        return f"{v:.2e}"
    return f"{v:.4f}"


def format_column(values: Sequence[Any], column: str = "") -> List[str]:
    """Format the cells of one column together (see the module docstring)."""
    nums = [float(v) for v in values if _is_number(v) and math.isfinite(float(v))]
    seconds = bool(_SECONDS.search(column.strip()))
    whole = bool(nums) and all(x.is_integer() and abs(x) < 1e15 for x in nums)
    out = []
    for v in values:
        if v is None:
            out.append(MISSING)
        elif not _is_number(v):
            out.append(str(v))
        elif not math.isfinite(float(v)):
            out.append(format_number(v))
        elif seconds:
            out.append(f"{float(v):.1f}")
        elif whole:
            out.append(str(int(v)))
        else:
            out.append(format_number(v))
    return out


def markdown_table(rows: List[Dict[str, Any]], columns: Optional[Sequence[str]] = None,
                   headers: Optional[Sequence[str]] = None) -> str:
    """Rows of dicts as a markdown table.

    ``columns``: the keys to show, in order (default: the first row's keys); ``headers``:
    their titles (default: the keys; titles may repeat where keys cannot). A key missing
    from a row prints an empty cell.
    """
    columns = list(columns if columns is not None else (rows[0].keys() if rows else []))
    headers = list(headers if headers is not None else columns)
    if len(headers) != len(columns):
        raise ValueError(f"headers has {len(headers)} titles for {len(columns)} columns")
    cells = []
    for c in columns:
        present = [r.get(c, "") for r in rows]
        cells.append(format_column(present, c))
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(col[i] for col in cells) + " |" for i in range(len(rows))]
    return "\n".join(lines)


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN / Inf floats as ``None`` and numpy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        v = float(obj)
        return v if math.isfinite(v) else None
    if hasattr(obj, "tolist"):
        return json_safe(obj.tolist())
    return str(obj)


def to_json(obj: Any) -> str:
    """Valid JSON, always: missing or non-finite numbers are ``null``."""
    return json.dumps(json_safe(obj), indent=2, allow_nan=False)


def write_json(path: Any, obj: Any) -> None:
    """:func:`to_json` of ``obj`` to ``path`` atomically (a temporary file, then a rename):
    a study interrupted while writing keeps its previous results file whole."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(to_json(obj))
    os.replace(tmp, path)
