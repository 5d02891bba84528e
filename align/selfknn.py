"""Exact self-kNN of one point set on the CPU, from half of the similarity matrix.

A kNN of n points against themselves needs every entry of the symmetric matrix
S = X Xᵀ, but each off-diagonal block S_IJ = X_I X_Jᵀ serves two sets of rows:
the rows of block I (read along its rows) and the rows of block J (read along
its columns). Computing only the upper block triangle halves the n×n×d product,
which is the whole cost of an exact kNN; a FAISS ``IndexFlatIP`` search cannot
use the symmetry because it scans the database once per query block.

Per block: one ``torch.mm`` into a reused buffer (MKL on the CPU), then two
compiled passes (numba) that keep, for every row, its k + 1 best candidates
sorted by (similarity desc, index asc). An entry is looked at only if it beats
the row's current (k+1)-th best, so after the first blocks almost every entry is
rejected by one comparison. Rows are split across threads in the row pass and
column ranges in the column pass, so no two threads write the same list.

Memory: one block × block float32 buffer and the (n, k+1) lists. Only called by
:func:`align.knn.search_prepared`, which owns validation, ties and the choice of
engine.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["self_knn_candidates"]


@numba.njit(cache=True)
def _insert(vals, ids, v, j):  # pragma: no cover - compiled
    """Insert (v, j) into a list sorted by (value desc, index asc); the caller has
    checked that v beats the last entry, which falls off."""
    p = vals.shape[0] - 1
    while p > 0 and (vals[p - 1] < v or (vals[p - 1] == v and ids[p - 1] > j)):
        vals[p] = vals[p - 1]
        ids[p] = ids[p - 1]
        p -= 1
    vals[p] = v
    ids[p] = j


@numba.njit(parallel=True, cache=True)
def _row_pass(S, r0, c0, best_v, best_i, diagonal):  # pragma: no cover - compiled
    """Candidates of S = X[r0:] X[c0:]ᵀ for the rows r0 + i (one thread per row range)."""
    br, bc = S.shape
    last = best_v.shape[1] - 1
    for i in numba.prange(br):
        g = r0 + i
        thr = best_v[g, last]
        for j in range(bc):
            v = S[i, j]
            if v > thr:
                if diagonal and j == i:
                    continue  # a point is not its own neighbour
                _insert(best_v[g], best_i[g], v, c0 + j)
                thr = best_v[g, last]


@numba.njit(parallel=True, cache=True)
def _col_pass(S, r0, c0, best_v, best_i, chunks):  # pragma: no cover - compiled
    """Candidates of S for the rows c0 + j, read down its columns: each thread owns
    a range of columns and walks S row by row (contiguous reads)."""
    br, bc = S.shape
    last = best_v.shape[1] - 1
    for ch in numba.prange(chunks):
        j0 = ch * bc // chunks
        j1 = (ch + 1) * bc // chunks
        thr = best_v[c0 + j0 : c0 + j1, last].copy()
        for i in range(br):
            for j in range(j0, j1):
                v = S[i, j]
                if v > thr[j - j0]:
                    g = c0 + j
                    _insert(best_v[g], best_i[g], v, r0 + i)
                    thr[j - j0] = best_v[g, last]


def self_knn_candidates(X: np.ndarray, kk: int, block: int = 2048, progress: bool = False):
    """For each row of X (float32, C-contiguous, n > kk), its kk largest inner
    products with the *other* rows, sorted by (value desc, index asc).

    Entries equal to a row's kk-th value may be left out; the caller settles a
    tie at the k-th place exactly (kk = k + 1 exposes it).
    """
    import torch

    n = X.shape[0]
    best_v = np.full((n, kk), -np.inf, dtype=np.float32)
    best_i = np.full((n, kk), -1, dtype=np.int64)
    Xt = torch.from_numpy(X)
    flat = torch.empty(block * block, dtype=torch.float32)
    chunks = max(1, numba.get_num_threads())
    starts = list(range(0, n, block))
    rows = starts
    if progress:
        from tqdm.auto import tqdm

        rows = tqdm(starts, desc="knn (symmetric)", unit="block-row")
    with torch.no_grad():
        for a, s in enumerate(rows):
            e = min(n, s + block)
            for t in starts[a:]:
                f = min(n, t + block)
                S = flat[: (e - s) * (f - t)].view(e - s, f - t)
                torch.mm(Xt[s:e], Xt[t:f].T, out=S)
                Sn = S.numpy()
                _row_pass(Sn, s, t, best_v, best_i, t == s)
                if t != s:
                    _col_pass(Sn, s, t, best_v, best_i, chunks)
    return best_v, best_i
