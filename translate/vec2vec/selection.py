"""Unsupervised model selection for vec2vec: the nearest-neighbour cycle rate of a
pair of generators, computed on rows in batches."""

from __future__ import annotations

from typing import Callable

import numpy as np

from align.knn import knn

__all__ = ["nn_cycle_rate", "apply_generator"]


def nn_cycle_rate(a2b: Callable, b2a: Callable, X: np.ndarray, Y: np.ndarray) -> float:
    """Unsupervised translation score in [0, 1] (no pairs needed).

    For each ``x_i``: ``j`` = nearest row of ``Y`` (cosine) to ``a2b(x_i)``,
    then ``i'`` = nearest row of ``X`` to ``b2a(y_j)``; the score is the rate
    of ``i' == i``, averaged with the same started from ``Y``. Collapsed maps
    (many rows onto one hub) and scrambled maps score near ``1/n``.
    """
    scores = []
    for P, Q, f, g in ((X, Y, a2b, b2a), (Y, X, b2a, a2b)):
        _, j = knn(f(P), 1, database=Q)
        _, i = knn(g(Q[j[:, 0]]), 1, database=P)
        scores.append(float(np.mean(i[:, 0] == np.arange(len(P)))))
    return float(np.mean(scores))


def apply_generator(fn: Callable, A: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Run a generator method (``gen.a2b`` / ``gen.b2a``) on rows, in batches, without
    gradients; float32 rows back on the CPU."""
    import torch

    dev = next(fn.__self__.parameters()).device
    outs = []
    with torch.no_grad():
        for i in range(0, len(A), batch):
            outs.append(fn(torch.from_numpy(A[i : i + batch]).to(dev)).float().cpu().numpy())
    return np.concatenate(outs)
