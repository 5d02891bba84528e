"""Neighbourhood alignment metrics: mutual kNN, cycle kNN, LCS kNN, CKNNA.

All follow Huh, Cheung, Wang & Isola (2024), "The Platonic Representation
Hypothesis" (ICML), and its reference code (platonic-rep): rows are paired
samples, rows are L2-normalised, neighbours are by cosine with self excluded.
Unlike the reference code, nothing here builds an n×n matrix: neighbour lists
come from :mod:`align.knn` and overlaps are computed from the (n, k) index
lists, so memory is O(n·k) beyond the search itself (on the CPU from 4096 rows:
one bfloat16 copy of one space at a time, n·d·2 bytes; below that, or on a GPU,
one float32 unit-row copy). Inputs are read in their own precision, never copied
to float64.
"""

from __future__ import annotations

from typing import Any, Tuple

import numpy as np

from ..device import threads
from ..knn import inverse_norms, self_neighbors
from ..validation import as_matrix, check_k, check_nonzero_rows, check_paired

__all__ = ["mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn", "cknna", "neighbor_lists"]

# Row pairs whose kernel entries are computed at once (2 × 4096 × d float64 gathered).
_PAIR_CHUNK = 4096


def _validated(X: Any, Y: Any, k: int, min_k: int = 1) -> Tuple[np.ndarray, np.ndarray, int]:
    """X and Y validated in their own float precision (no copy), and k."""
    X = as_matrix(X, "X", min_rows=2)
    Y = as_matrix(Y, "Y", min_rows=2)
    check_paired(X, Y)
    k = check_k(k, X.shape[0], "k")
    if k < min_k:
        raise ValueError(f"k must be >= {min_k} for this metric, got {k}")
    check_nonzero_rows(X, "X")
    check_nonzero_rows(Y, "Y")
    return X, Y, k


def neighbor_lists(X: Any, Y: Any, k: int = 10) -> Tuple[np.ndarray, np.ndarray]:
    """The (n, k) cosine neighbour index lists of X and of Y (self excluded).

    One space at a time (see the module docstring for the memory), never n×n.
    """
    X, Y, k = _validated(X, Y, k)
    with threads():
        return self_neighbors(X, k), self_neighbors(Y, k)


def _row_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a_i ∩ b_i| per row for index lists without repeats, in O(n·k log k)."""
    both = np.sort(np.concatenate([a, b], axis=1), axis=1)
    return (both[:, 1:] == both[:, :-1]).sum(axis=1)


def mutual_knn(X: Any, Y: Any, k: int = 10) -> float:
    """Mutual k-nearest-neighbour alignment.

    score = (1/n) Σ_i |N_X(i) ∩ N_Y(i)| / k, where N_X(i) are the k cosine
    nearest neighbours of row i of X, self excluded (Huh et al. 2024, Eq. 11).

    Range [0, 1]; 1 iff every neighbourhood agrees. Invariant to rotation and
    scaling of either space (cosine). Chance for independent X, Y: k / (n - 1).
    """
    ix, iy = neighbor_lists(X, Y, k)
    return float(_row_overlap(ix, iy).mean() / ix.shape[1])


def cycle_knn(X: Any, Y: Any, k: int = 10) -> float:
    """Cycle kNN: fraction of samples i that are among the X-neighbours of one
    of their own Y-neighbours, i ∈ N_X(N_Y(i)) (platonic-rep ``cycle_knn``).

    Range [0, 1]; invariant to rotation and scaling of either space.
    """
    ix, iy = neighbor_lists(X, Y, k)
    n = ix.shape[0]
    # (n, k, k): the X-neighbours of each Y-neighbour of i; O(n·k²) memory.
    hit = (ix[iy] == np.arange(n)[:, None, None]).any(axis=(1, 2))
    return float(hit.mean())


def _lcs_lengths(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Longest common subsequence length of each pair of rows, vectorised over rows."""
    n, k = a.shape
    prev = np.zeros((n, k + 1), dtype=np.int32)
    for i in range(k):
        cur = np.zeros_like(prev)
        eq = a[:, i : i + 1] == b  # (n, k)
        for j in range(k):
            cur[:, j + 1] = np.where(eq[:, j], prev[:, j] + 1, np.maximum(prev[:, j + 1], cur[:, j]))
        prev = cur
    return prev[:, k]


def lcs_knn(X: Any, Y: Any, k: int = 10) -> float:
    """Longest-common-subsequence kNN: mean over i of LCS(N_X(i), N_Y(i)) / k,
    with neighbour lists ordered nearest first.

    Unlike mutual kNN it rewards agreeing *order*. platonic-rep's ``lcs_knn``
    reports the unnormalised mean length, i.e. k times this value.
    """
    ix, iy = neighbor_lists(X, Y, k)
    return float(_lcs_lengths(ix, iy).mean() / ix.shape[1])


def _edit_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Levenshtein distance (unit-cost insertion, deletion, substitution) of each
    pair of rows, vectorised over rows: O(n·k²) time, O(n·k) memory."""
    n, k = a.shape
    prev = np.broadcast_to(np.arange(k + 1, dtype=np.int32), (n, k + 1)).copy()
    for i in range(k):
        cur = np.empty_like(prev)
        cur[:, 0] = i + 1
        sub = (a[:, i : i + 1] != b).astype(np.int32)  # (n, k)
        for j in range(k):
            cur[:, j + 1] = np.minimum(np.minimum(prev[:, j + 1], cur[:, j]) + 1, prev[:, j] + sub[:, j])
        prev = cur
    return prev[:, k]


def edit_distance_knn(X: Any, Y: Any, k: int = 10) -> float:
    """Edit-distance kNN: 1 - mean over i of Lev(N_X(i), N_Y(i)) / k, with
    neighbour lists ordered nearest first and Lev the Levenshtein distance
    (unit costs) between the two index sequences (platonic-rep
    ``edit_distance_knn``, which uses ``torchaudio.functional.edit_distance``).

    Range [0, 1]; 1 iff every neighbour list agrees in content and order.
    Like :func:`lcs_knn` it rewards agreeing order; invariant to rotation and
    scaling of either space (cosine).
    """
    ix, iy = neighbor_lists(X, Y, k)
    return float(1.0 - _edit_distances(ix, iy).mean() / ix.shape[1])


def _masked_kernel(X: np.ndarray, inv: np.ndarray, rows: np.ndarray, cols: np.ndarray, n: int):
    """Sparse matrix with the cosines (x_i · x_j) inv_i inv_j at the given positions,
    in float64, read from X in its own precision."""
    from scipy.sparse import csr_matrix

    vals = np.empty(rows.size, dtype=np.float64)
    # In chunks: gathering all n·k row pairs at once would hold two (n·k, d)
    # float64 copies (4 GiB at n = 32k, k = 10, d = 768).
    for s in range(0, rows.size, _PAIR_CHUNK):
        e = min(rows.size, s + _PAIR_CHUNK)
        r, c = rows[s:e], cols[s:e]
        # unit rows first (float64 rows beyond float32's range cannot overflow)
        vals[s:e] = np.einsum("ij,ij->i", X[r] * inv[r, None], X[c] * inv[c, None])
    return csr_matrix((vals, (rows, cols)), shape=(n, n))


def _hsic_unbiased_sparse(K, L) -> float:
    """Unbiased HSIC (Song et al. 2012, Eq. 5) of two sparse kernels with zero diagonal.

    HSIC = [tr(K L) + 1ᵀK1 · 1ᵀL1 / ((n-1)(n-2)) - 2/(n-2) · 1ᵀ K L 1] / (n (n-3)),
    where 1ᵀ K L 1 = (Kᵀ1)·(L1); all terms cost O(nnz).
    """
    n = K.shape[0]
    tr_kl = K.multiply(L.T).sum()
    sum_k, sum_l = K.sum(), L.sum()
    kl_ones = float(np.asarray(K.sum(axis=0)).ravel() @ np.asarray(L.sum(axis=1)).ravel())
    return float((tr_kl + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 * kl_ones / (n - 2)) / (n * (n - 3)))


def cknna(X: Any, Y: Any, k: int = 10) -> float:
    """Centred kernel nearest-neighbour alignment (Huh et al. 2024, Eq. 13-14).

    CKA restricted to pairs (i, j) that are mutual neighbours: with cosine
    kernels K, L and α(i, j) = 1[j ∈ N_K(i) ∧ j ∈ N_L(i)] (self excluded),

        CKNNA = HSIC_u(α⊙K, α⊙L) / sqrt(HSIC_u(α_K⊙K, α_K⊙K) · HSIC_u(α_L⊙L, α_L⊙L)),

    with the unbiased HSIC estimator. Matches platonic-rep ``cknna`` (unbiased,
    not distance-agnostic; its 1e-6 in the denominator is omitted) but never
    forms the n×n kernels: kernel entries are computed in float64 only where α
    is non-zero, read from the inputs in chunks, so memory is O(n·k) beyond the
    neighbour search. Needs k >= 2 and n >= 4.
    """
    X, Y, k = _validated(X, Y, k, min_k=2)
    n = X.shape[0]
    if n < 4:
        raise ValueError(f"cknna needs at least 4 samples (unbiased HSIC), got {n}")
    with threads():
        return _cknna(X, Y, k)


def _cknna(X: np.ndarray, Y: np.ndarray, k: int) -> float:
    n = X.shape[0]
    ix, iy = self_neighbors(X, k), self_neighbors(Y, k)
    inv_x, inv_y = inverse_norms(X), inverse_norms(Y)
    rows = np.repeat(np.arange(n), k)
    # α: neighbour pairs common to both lists; a pair (i, j) is in both iff it
    # appears twice in the concatenation of the two (unique-per-row) lists.
    keys = np.concatenate([rows * n + ix.ravel(), rows * n + iy.ravel()])
    uniq, counts = np.unique(keys, return_counts=True)
    both = uniq[counts == 2]
    r_b, c_b = both // n, both % n
    c_x, c_y = ix.ravel(), iy.ravel()
    kl = _hsic_unbiased_sparse(_masked_kernel(X, inv_x, r_b, c_b, n), _masked_kernel(Y, inv_y, r_b, c_b, n))
    Kx = _masked_kernel(X, inv_x, rows, c_x, n)
    Ly = _masked_kernel(Y, inv_y, rows, c_y, n)
    kk = _hsic_unbiased_sparse(Kx, Kx)
    ll = _hsic_unbiased_sparse(Ly, Ly)
    denom = np.sqrt(kk * ll) if kk > 0 and ll > 0 else 0.0
    if denom == 0.0:
        raise ValueError("cknna is undefined here: a neighbourhood kernel has zero unbiased HSIC with itself")
    return float(kl / denom)
