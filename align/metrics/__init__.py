"""Alignment metrics: one module per family, plain functions on paired arrays.

Every metric takes ``X`` (n, d_x) and ``Y`` (n, d_y) whose rows are the same n
samples (numpy arrays or torch tensors) and returns a float. ``METRICS`` maps
a name to each function; :func:`score` dispatches by name and
:func:`chance_level` gives the value of the same metric when the pairing of
rows is destroyed, to print beside every score.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Dict

import numpy as np

from align.metrics.cca import pwcca, svcca
from align.metrics.kernel import cka, rsa
from align.metrics.mapping import linear_score, permutation_score, procrustes_score, soft_match_score
from align.metrics.neighbors import cknna, cycle_knn, edit_distance_knn, lcs_knn, mutual_knn
from align.validation import as_matrix, check_choice, check_positive_int

__all__ = ["METRICS", "score", "chance_level", "edit_distance_knn"]

METRICS: Dict[str, Callable[..., float]] = {
    # neighbourhoods (Huh et al. 2024)
    "mutual_knn": mutual_knn,
    "cycle_knn": cycle_knn,
    "lcs_knn": lcs_knn,
    "edit_distance_knn": edit_distance_knn,
    "cknna": cknna,
    # kernels
    "cka": cka,
    "cka_debiased": partial(cka, debiased=True),
    "cka_rbf": partial(cka, kernel="rbf"),
    "rsa": rsa,
    # CCA
    "svcca": svcca,
    "pwcca": pwcca,
    # mappings (Kapoor, Srivastava & Khosla 2025)
    "linear": linear_score,
    "procrustes": procrustes_score,
    "permutation": permutation_score,
    "soft_match": soft_match_score,
}


def score(X: Any, Y: Any, metric: str = "mutual_knn", **kw: Any) -> float:
    """``METRICS[metric](X, Y, **kw)``: any metric by name.

    Extra keyword arguments go to the metric (e.g. ``k=10`` for the neighbour
    metrics, ``folds=5`` for the mapping scores).
    """
    check_choice(metric, "metric", METRICS)
    return float(METRICS[metric](X, Y, **kw))


def chance_level(X: Any, Y: Any, metric: str, n_shuffles: int = 3, seed: int = 0, **kw: Any) -> float:
    """The metric's value when the pairing of rows is destroyed.

    Mean of ``score(X, Y[perm], metric, **kw)`` over ``n_shuffles`` random row
    permutations drawn from ``numpy.random.default_rng(seed)``. Print it beside
    every score: it is what the metric gives for unrelated representations of
    the same marginal statistics (e.g. ≈ k/(n-1) for mutual kNN, well above 0
    for biased CKA when d is comparable to n).
    """
    check_choice(metric, "metric", METRICS)
    n_shuffles = check_positive_int(n_shuffles, "n_shuffles")
    seed = check_positive_int(seed, "seed", minimum=0)
    Y = as_matrix(Y, "Y")
    rng = np.random.default_rng(seed)
    vals = [score(X, Y[rng.permutation(Y.shape[0])], metric, **kw) for _ in range(n_shuffles)]
    return float(np.mean(vals))
