"""How good is a translation? Paired evaluation on held-out pairs, and an
unpaired diagnostic for when no pairs exist.

:func:`evaluate` follows the vec2vec protocol (Jha, Zhang, Shmatikov & Morris
2025, "Harnessing the Universal Geometry of Embeddings"): for held-out pairs
(x_i, y_i), with ŷ_i = F(x_i) and cosine similarity s_ij = cos(ŷ_i, y_j),

- ``rank_i = 1 + #{j ≠ i : s_ij >= s_ii}``: the position of the true match y_i
  among *all* candidates of the pool, best = 1. Ties count against the
  translation (pessimistic), so a constant output gets rank n, never 1.
- ``top1 = mean(rank_i == 1)``, ``top5 = mean(rank_i <= 5)``, ``mean_rank``,
  ``median_rank``.
- ``mean_cos = mean_i s_ii``.
- ``foscttm = mean_i (rank_i - 1) / (n - 1)``: the fraction of candidates closer
  to ŷ_i than its true match (Liu et al. 2019, "Jointly embedding multiple
  single-cell omics measurements"; here one-sided, translated -> true, as in
  vec2vec). 0 is perfect, 0.5 is chance.
- ``mutual_knn``: for each i, the k nearest pool rows of ŷ_i and the k nearest
  pool rows of y_i, both searched among the target pool Y with y_i itself left out
  of both lists; the score is the mean overlap divided by k (the mutual-kNN idea
  of Huh et al. 2024, applied to the translation). It moves with the map: a
  wrong rotation sends ŷ_i into another neighbourhood and scores at chance,
  ``mutual_knn_chance = k / (n - 1)``. (Comparing the kNN graph of Ŷ with that of
  Y instead would measure the two spaces, not the map: an isometry leaves the
  graph of Ŷ unchanged; that number is :func:`align.mutual_knn` on paired rows.)
- ``pool``: n, the number of candidates. Always report it beside the figures:
  top-1 over 1000 candidates and over 100000 are different numbers.

How it is computed (CPU): one blocked pass over the products Ŷ Yᵀ gives, from
each block, both the rank of every true match and ŷ_i's nearest pool rows, and
the symmetric self-search of :mod:`align.knn` gives y_i's (half of Y Yᵀ); both
read one bfloat16 copy of Y where the CPU multiplies bfloat16 fast, float32
otherwise. The block products only filter: every comparison that decides a rank
or a neighbour is made on the float64 cosine of the input rows (see
:mod:`align.selfknn`), so the figures are exact and do not depend on the block
size, the threads or the filter precision. Memory: that copy of Y (n·d·2 bytes)
plus O(block · d + n · 100) bytes, never an n×n matrix or an argsort. Where CUDA
is present the same figures come from :mod:`align.gpuknn` (float16 filter, float64
decisions; equal to the CPU's up to float64 rounding). Where numba is missing,
the torch path (:func:`true_match_ranks`, :func:`translation_mutual_knn`, float32
products) runs instead; they are also the reference the tests compare the other
paths with.

:func:`unpaired_diagnostic` needs no pairs: see its docstring.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from align.device import threads, torch_device
from align.knn import knn, knn_both, normalize_rows, paired_search
from align.validation import as_matrix, check_nonzero_rows, check_paired, check_positive_int

__all__ = ["evaluate", "unpaired_diagnostic", "true_match_ranks", "translation_mutual_knn"]

# Similarities held in memory at once while ranking: 2**24 float32 = 64 MiB.
_BLOCK_ELEMS = 1 << 24


def _check_same_width(A: np.ndarray, B: np.ndarray, names=("Y_hat", "Y_true")) -> None:
    if A.shape[1] != B.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must live in the same space (same width), got {A.shape[1]} and {B.shape[1]} columns"
        )


def true_match_ranks(Yh: np.ndarray, Yt: np.ndarray, block_size: Optional[int] = None):
    """Pessimistic ranks of the true matches and their cosines, blockwise.

    ``Yh``, ``Yt``: validated, L2-normalised float32 (n, d) arrays, row i of each
    a pair. Returns ``(ranks int64 (n,), cos float64 (n,))`` with
    ``rank_i = 1 + #{j ≠ i : <ŷ_i, y_j> >= <ŷ_i, y_i>}``.

    The diagonal entry is read from the same block product as the row it is
    compared with, so rounding cannot make a row beat itself.
    """
    import torch

    n = Yh.shape[0]
    if block_size is None:
        block_size = int(np.clip(_BLOCK_ELEMS // max(n, 1), 64, 16384))
    dev = torch_device()
    T = torch.from_numpy(np.ascontiguousarray(Yt)).to(dev)
    ranks = np.empty(n, dtype=np.int64)
    cos = np.empty(n, dtype=np.float64)
    with torch.no_grad():
        for s in range(0, n, block_size):
            e = min(n, s + block_size)
            S = torch.from_numpy(np.ascontiguousarray(Yh[s:e])).to(dev) @ T.T
            rows = torch.arange(e - s, device=dev)
            d = S[rows, rows + s]
            # >= counts the true match itself once; the rest are ties or better ones.
            ranks[s:e] = (S >= d[:, None]).sum(dim=1).cpu().numpy()
            cos[s:e] = d.double().cpu().numpy()
    return ranks, cos


def translation_mutual_knn(Yh: np.ndarray, Yt: np.ndarray, k: int) -> float:
    """Mean overlap / k of the k nearest pool rows of ŷ_i and of y_i (y_i excluded
    from both), searched among the rows of ``Yt``. Unit float32 rows, 1 <= k <= n - 1."""
    n = Yt.shape[0]
    _, near_true = knn(Yt, k, metric="ip")  # self excluded
    _, near_hat = knn(Yh, k + 1, database=Yt, metric="ip", exclude_self=False)
    # drop y_i from ŷ_i's list; where it is absent, drop the (k+1)-th instead
    own = near_hat == np.arange(n)[:, None]
    own[~own.any(axis=1), k] = True
    near_hat = near_hat[~own].reshape(n, k)
    return _list_overlap(near_hat, near_true) / (n * k)


def _list_overlap(a: np.ndarray, b: np.ndarray) -> int:
    """Σ_i |a_i ∩ b_i| for (n, k) index lists without repeats within a row."""
    overlap = 0
    for s in range(0, a.shape[0], 8192):  # (block, k, k) comparisons
        x, y = a[s : s + 8192], b[s : s + 8192]
        overlap += int((x[:, :, None] == y[:, None, :]).sum())
    return overlap


def evaluate(Y_hat: Any, Y_true: Any, k: int = 10, block_size: Optional[int] = None) -> Dict[str, float]:
    """Translation quality over the whole held-out pool of paired rows.

    Parameters
    ----------
    Y_hat : (n, d) translated rows F(x_i).
    Y_true : (n, d) true rows y_i in the target space (row i pairs with row i).
    k : neighbours for ``mutual_knn`` (clipped to n - 1 for tiny pools).
    block_size : rows per block of the similarity product on the CPU (default
        2048); the CUDA engine sizes its blocks by the free memory instead.

    Returns
    -------
    dict with ``top1``, ``top5``, ``mean_rank``, ``median_rank``, ``mean_cos``,
    ``foscttm``, ``mutual_knn``, ``mutual_knn_chance``, ``pool`` (= n) and ``k``; see the module docstring
    for the formulas. Cosine throughout, so any positive rescaling of rows leaves
    every figure unchanged.
    """
    # float32 and float64 kept as given (no copy): the exact values are float64
    Yh = as_matrix(Y_hat, "Y_hat", min_rows=2)
    Yt = as_matrix(Y_true, "Y_true", min_rows=2)
    check_paired(Yh, Yt, ("Y_hat", "Y_true"))
    _check_same_width(Yh, Yt)
    k = check_positive_int(k, "k")
    if block_size is not None:
        block_size = check_positive_int(block_size, "block_size")
    check_nonzero_rows(Yh, "Y_hat")
    check_nonzero_rows(Yt, "Y_true")
    n = Yh.shape[0]
    k_eff = min(k, n - 1)
    with threads():
        found = paired_search(Yh, Yt, k_eff, block_size)
        if found is not None:
            ranks, cos, near_hat, near_true = found
            mknn = _list_overlap(near_hat, near_true) / (n * k_eff)
        else:  # the torch path (see align.knn.paired_search)
            Yh_n = normalize_rows(Yh.astype(np.float32, copy=False))
            Yt_n = normalize_rows(Yt.astype(np.float32, copy=False))
            ranks, cos = true_match_ranks(Yh_n, Yt_n, block_size)
            mknn = translation_mutual_knn(Yh_n, Yt_n, k_eff)
    return {
        "top1": float(np.mean(ranks == 1)),
        "top5": float(np.mean(ranks <= 5)),
        "mean_rank": float(ranks.mean()),
        "median_rank": float(np.median(ranks)),
        "mean_cos": float(cos.mean()),
        "foscttm": float(np.mean((ranks - 1) / (n - 1))),
        "mutual_knn": mknn,
        "mutual_knn_chance": k_eff / (n - 1),
        "pool": int(n),
        "k": int(k_eff),
    }


def unpaired_diagnostic(Y_hat: Any, Y: Any, k: int = 10) -> Dict[str, float]:
    """How well do translated rows sit in the target set, with no pairs at all?

    ``Y_hat`` are translations F(x) of source rows, ``Y`` are rows of the target
    space -- *other* samples, row counts may differ. A good translation lands in
    the target's data manifold at the target's own density; a wrong one (or a
    collapsed one) lands in empty regions or piles onto a few hubs.

    With cosine similarity, r_Y(ŷ) = mean similarity of ŷ to its k nearest rows
    of Y, and r_Ŷ(y) likewise towards Ŷ (Conneau et al. 2018, "Word translation
    without parallel data", CSLS):

    - ``score`` (the headline) = ``mean_i [2 cos(ŷ_i, y_nn(i)) - r_Y(ŷ_i) - r_Ŷ(y_nn(i))]``
      + ``mean_i r_Y(ŷ_i)``, i.e. ``mean_csls + nn_density``; higher is better.
      It rewards both landing close to target rows and landing on rows that are
      not hubs (the CSLS penalty), which is what separates a correct isometry
      from a rotated-away or collapsed one.
    - ``mean_csls``: the mean CSLS score of each translated row's best match.
    - ``nn_density``: ``mean_i r_Y(ŷ_i)``, compare with ``self_density`` =
      mean over y of its k nearest *other* rows of Y (the target's own density).
    - ``mutual_nn``: fraction of translated rows whose nearest target row has
      them as its nearest translated row.
    - ``coverage``: fraction of target rows that are the nearest neighbour of at
      least one translated row (low = hubness or collapse).
    - ``k``: the neighbours used, ``k`` clipped to the smaller of the two sets (both
      directions come from one pass, :func:`align.knn.knn_both`).

    Shown in ``tests/test_translate.py`` to rise with top-1 across translations of
    varying quality. It is a diagnostic, not a guarantee: it can compare
    translators of the same pair of spaces, not different pairs of spaces.
    """
    Yh = as_matrix(Y_hat, "Y_hat", dtype=np.float32, min_rows=2)
    Yt = as_matrix(Y, "Y", dtype=np.float32, min_rows=2)
    _check_same_width(Yh, Yt, ("Y_hat", "Y"))
    k = check_positive_int(k, "k")
    check_nonzero_rows(Yh, "Y_hat")
    check_nonzero_rows(Yt, "Y")
    Yh_n, Yt_n = normalize_rows(Yh), normalize_rows(Yt)
    k_h = min(k, Yt.shape[0], Yh.shape[0])  # neighbours each way, clipped to the smaller set
    (s_hy, i_hy), (s_yh, i_yh) = knn_both(Yh_n, Yt_n, k_h, metric="ip")
    r_h = s_hy.mean(axis=1).astype(np.float64)
    r_y = s_yh.mean(axis=1).astype(np.float64)
    nn = i_hy[:, 0]
    csls = 2.0 * s_hy[:, 0] - r_h - r_y[nn]
    mutual = i_yh[nn, 0] == np.arange(Yh.shape[0])
    k_self = min(k, Yt.shape[0] - 1)
    self_density = float(knn(Yt_n, k_self)[0].mean()) if k_self >= 1 else float("nan")
    return {
        "score": float(csls.mean() + r_h.mean()),
        "mean_csls": float(csls.mean()),
        "nn_density": float(r_h.mean()),
        "self_density": self_density,
        "mutual_nn": float(mutual.mean()),
        "coverage": float(np.unique(nn).size / Yt.shape[0]),
        "k": int(k_h),
    }
