"""Progress bars: one place that decides how long work is shown.

On a terminal or in a notebook (a widget) a bar redraws at tqdm's usual rate; in a log
(stderr not a terminal: CI, ``nohup``, a pipe) it writes one line at most every
:data:`LOG_INTERVAL_S` seconds, so a long fit leaves a readable trail instead of
megabytes of carriage-return updates. A disabled bar is a no-op with the same methods,
so callers never branch on ``progress``.
"""
from __future__ import annotations

import sys
from typing import Any, Iterable, Optional

__all__ = ["LOG_INTERVAL_S", "on_terminal", "progress_bar"]

LOG_INTERVAL_S = 30.0


def on_terminal() -> bool:
    """Whether stderr (where bars are drawn) is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def progress_bar(iterable: Optional[Iterable] = None, *, total: Optional[int] = None, desc: str = "",
                 unit: str = "it", enabled: bool = True, initial: int = 0, leave: bool = True) -> Any:
    """A tqdm bar over ``iterable`` or ``total`` units, throttled outside a terminal.

    ``enabled=False`` returns a disabled bar: iterating it yields ``iterable`` and
    ``update`` / ``set_postfix`` / ``close`` do nothing.
    """
    from tqdm.auto import tqdm

    # in Jupyter tqdm.auto is a widget class (tqdm.notebook): no carriage returns to throttle
    live = on_terminal() or any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__)
    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave, disable=not enabled,
                mininterval=0.1 if live else LOG_INTERVAL_S)
