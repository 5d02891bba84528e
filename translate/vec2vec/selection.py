"""Unsupervised model selection for vec2vec: the nearest-neighbour cycle rate of a
pair of generators, computed on rows in batches, and McNemar's test between the
cycle outcomes of two states on the same rows."""

from __future__ import annotations

from typing import Callable, Tuple

import numpy as np

from align.knn import knn

__all__ = ["nn_cycle_rate", "nn_cycle_hits", "cycle_rate", "mcnemar_z", "end_is_kept", "SELECT_Z", "apply_generator"]

#: McNemar's z at which the state kept before the end of training displaces the end
#: (:func:`end_is_kept`): the two-sided 5 % level.
SELECT_Z = 1.96


def nn_cycle_hits(a2b: Callable, b2a: Callable, X: np.ndarray, Y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per-row outcomes of the nearest-neighbour cycle (no pairs needed): for each ``x_i``,
    ``j`` = nearest row of ``Y`` (cosine) to ``a2b(x_i)``, then ``i'`` = nearest row of ``X``
    to ``b2a(y_j)``; ``hits_x[i] = (i' == i)``; ``hits_y`` the same started from ``Y``."""
    hits = []
    for P, Q, f, g in ((X, Y, a2b, b2a), (Y, X, b2a, a2b)):
        _, j = knn(f(P), 1, database=Q)
        _, i = knn(g(Q[j[:, 0]]), 1, database=P)
        hits.append(i[:, 0] == np.arange(len(P)))
    return hits[0], hits[1]


def nn_cycle_rate(a2b: Callable, b2a: Callable, X: np.ndarray, Y: np.ndarray) -> float:
    """Unsupervised translation score in [0, 1] (no pairs needed): the rate of
    :func:`nn_cycle_hits` from ``X``, averaged with the rate from ``Y``. Collapsed maps
    (many rows onto one hub) and scrambled maps score near ``1/n``."""
    return cycle_rate(nn_cycle_hits(a2b, b2a, X, Y))


def cycle_rate(hits: Tuple[np.ndarray, np.ndarray]) -> float:
    """The cycle rate of :func:`nn_cycle_hits`' outcomes: the mean of the two directions' rates."""
    return float(np.mean([np.mean(h) for h in hits]))


def mcnemar_z(hits_ref: np.ndarray, hits_new: np.ndarray) -> float:
    """McNemar's statistic (McNemar 1947, Psychometrika 12) for paired binary outcomes on
    the same rows: ``z = (b - c) / sqrt(b + c)``, b the rows the reference hits and the new
    state misses, c the reverse; 0 when none differ. Positive: the reference does better.
    ``z >= 1.96`` rejects "equally good" at the two-sided 5 % level (normal approximation)."""
    ref, new = np.asarray(hits_ref, bool), np.asarray(hits_new, bool)
    if ref.shape != new.shape:
        raise ValueError(f"hits_new has shape {new.shape}; hits_ref has {ref.shape}: outcomes must be on the same rows")
    b, c = int(np.sum(ref & ~new)), int(np.sum(~ref & new))
    return 0.0 if b + c == 0 else (b - c) / float(np.sqrt(b + c))


def end_is_kept(hits_kept: Tuple[np.ndarray, np.ndarray], hits_end: Tuple[np.ndarray, np.ndarray]) -> Tuple[bool, float]:
    """Whether the end of training (its weight average, what training estimated) replaces the state
    kept before it, and McNemar's z of the kept state's cycle outcomes against the end's (both
    directions pooled). The cycle criterion favours a linear start, which its pseudo-inverse undoes
    exactly, by a little: the end is kept unless the kept state is significantly better,
    ``z < SELECT_Z`` (docs/ladder.md: on curved synthetic pairs the end gains with z from -3.3 to
    0.5; on real pairs where it loses, z 3.0-11.9)."""
    z = mcnemar_z(np.concatenate(hits_kept), np.concatenate(hits_end))
    return z < SELECT_Z, z


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
