"""The one k-nearest-neighbour engine of reptrans.

Exact top-k by inner product (or cosine = inner product of L2-normalised rows).
Every neighbour metric and every translation evaluation goes through here.

Backends, chosen at run time (never required):
- ``faiss``: ``IndexFlatIP`` (exact, BLAS inside); ``GpuIndexFlatIP`` through
  ``index_cpu_to_all_gpus`` when faiss-gpu sees GPUs (sharded over several).
- ``torch``: blocked ``torch.mm`` + ``topk``, on CUDA when present.
- ``symmetric``: for a self-search (no database) on the CPU, the upper block
  triangle of X Xᵀ only, half the product (:mod:`align.selfknn`). ``auto``
  takes it for self-searches of >= 4096 rows when no GPU is present.

Guarantees, whatever the backend:
- memory O(n·k + block·n): queries go through in blocks;
- float32 inside; numpy arrays or torch tensors in, numpy out;
- deterministic ties: among equal similarities the lower database index comes
  first (FAISS itself prefers the higher one, so rows whose k-th and (k+1)-th
  candidates tie are re-selected exactly);
- ``exclude_self`` removes row i from the neighbours of query i *by index*, so
  a duplicate of row i is still a valid neighbour.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from .device import cuda_available, faiss, faiss_gpu_count, torch_device
from .validation import as_matrix, check_choice, check_k, check_nonzero_rows, check_positive_int

__all__ = ["knn", "normalize_rows"]

_BACKENDS = ("auto", "faiss", "torch", "symmetric")
# FAISS GPU indices return at most this many neighbours per query.
_FAISS_GPU_MAX_K = 2048
# Similarity block (queries x database) kept in memory at once: 2**26 float32 = 256 MiB.
_BLOCK_ELEMS = 1 << 26
# Symmetric engine: block rows (a 16 MiB buffer), and the smallest self-search that
# "auto" gives it. One self-search at n = 16000, d = 768 on 2 cores, median of 5
# interleaved rounds: blocks of 2048 1.49 s, 1024 1.50 s, 4096 1.65 s; IndexFlatIP
# 2.96 s; one plain n×n×d product 2.24 s (scripts/bench.py --cases tune-rr-16k).
_SYM_BLOCK = 2048
_SYM_MIN_ROWS = 4096


def normalize_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as one new array of X's dtype.

    Norms are accumulated in float64 by einsum (no n×d temporary, unlike
    ``np.linalg.norm``), then X is divided into the output in one pass.
    """
    norms = np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64))[:, None]
    out = np.empty(X.shape, dtype=X.dtype)
    np.divide(X, norms, out=out, casting="same_kind")
    return out


def knn(
    queries: Any,
    k: int,
    database: Any = None,
    metric: str = "cosine",
    exclude_self: Optional[bool] = None,
    *,
    backend: str = "auto",
    block_size: Optional[int] = None,
    progress: bool = False,
) -> Tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of each query row.

    Parameters
    ----------
    queries : (nq, d) array or tensor.
    k : neighbours per query.
    database : (nd, d) array or tensor; defaults to ``queries`` (then self is excluded).
    metric : ``"cosine"`` (rows L2-normalised first) or ``"ip"`` (raw inner product).
    exclude_self : drop database row i from the neighbours of query i. Defaults to
        True when ``database`` is None; with a database given it needs nq == nd.
    backend : ``"auto"`` (the symmetric engine for a large self-search on the CPU,
        else FAISS when installed, else torch), ``"faiss"``, ``"torch"`` or
        ``"symmetric"`` (self-search only: ``database`` must be None).
    block_size : queries per block; default keeps a block's similarities <= 256 MiB
        (symmetric engine: rows per square block, default 2048).
    progress : show a tqdm bar over blocks.

    Returns
    -------
    sims : (nq, k) float32, best first.
    idx : (nq, k) int64 database indices; ties broken by lower index.
    """
    check_choice(metric, "metric", ("cosine", "ip"))
    check_choice(backend, "backend", _BACKENDS)
    if block_size is not None:
        block_size = check_positive_int(block_size, "block_size")
    Q = as_matrix(queries, "queries", dtype=np.float32)
    self_mode = database is None
    D = Q if self_mode else as_matrix(database, "database", dtype=np.float32)
    if D.shape[1] != Q.shape[1]:
        raise ValueError(
            f"queries and database must have the same width, got {Q.shape[1]} and {D.shape[1]}"
        )
    if exclude_self is None:
        exclude_self = self_mode
    if backend == "symmetric" and not (self_mode and exclude_self):
        raise ValueError("backend='symmetric' is for a self-search: pass no database and keep exclude_self=True")
    if exclude_self and Q.shape[0] != D.shape[0]:
        raise ValueError(
            f"exclude_self=True needs as many queries as database rows, got {Q.shape[0]} and {D.shape[0]}"
        )
    k = check_k(k, D.shape[0], "k", exclude_self=bool(exclude_self))
    if metric == "cosine":
        check_nonzero_rows(Q, "queries")
        Q = normalize_rows(Q)
        if self_mode:
            D = Q
        else:
            check_nonzero_rows(D, "database")
            D = normalize_rows(D)
    return search_prepared(Q, D, k, bool(exclude_self), backend=backend, block_size=block_size, progress=progress)


def search_prepared(
    Q: np.ndarray,
    D: np.ndarray,
    k: int,
    exclude_self: bool,
    *,
    backend: str = "auto",
    block_size: Optional[int] = None,
    progress: bool = False,
) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`knn` on already validated float32 C-contiguous arrays (inner product).

    For callers inside reptrans that validated and normalised at their own
    boundary; everyone else calls :func:`knn`.
    """
    nq, nd = Q.shape[0], D.shape[0]
    # (k = n - 1 leaves no room for the tie-revealing candidate: the plain search.)
    if _symmetric_engine(Q, D, exclude_self, backend) and nq >= k + 2:
        from .selfknn import self_knn_candidates

        # k + 1 candidates other than self expose a tie at the k-th place.
        cs, ci = self_knn_candidates(Q, k + 1, block_size or _SYM_BLOCK, progress)
        return _finalize_block(Q, Q, cs, ci, k, 0)
    # One extra candidate to detect a tie at the k-th place, one more for self.
    kk = min(nd, k + 1 + int(exclude_self))
    if block_size is None:
        block_size = int(np.clip(_BLOCK_ELEMS // max(nd, 1), 256, 65536))
    searcher = _make_searcher(D, kk, backend)
    sims = np.empty((nq, k), dtype=np.float32)
    idx = np.empty((nq, k), dtype=np.int64)
    starts = range(0, nq, block_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="knn", unit="block", total=len(starts))
    for s in starts:
        e = min(nq, s + block_size)
        cs, ci = searcher(Q[s:e])
        sims[s:e], idx[s:e] = _finalize_block(Q[s:e], D, cs, ci, k, s if exclude_self else None)
    return sims, idx


def _symmetric_engine(Q: np.ndarray, D: np.ndarray, exclude_self: bool, backend: str) -> bool:
    """Whether this search goes to the symmetric engine (refuses it where it cannot)."""
    self_search = Q is D and exclude_self
    if backend == "symmetric":
        if not self_search:
            raise ValueError("backend='symmetric' is for a self-search: Q must be D, with exclude_self=True")
        return True
    return (self_search and backend == "auto" and Q.shape[0] >= _SYM_MIN_ROWS
            and faiss_gpu_count() == 0 and not cuda_available())


def _make_searcher(D: np.ndarray, kk: int, backend: str):
    f = faiss() if backend in ("auto", "faiss") else None
    if backend == "faiss" and f is None:
        raise ValueError("backend='faiss' but faiss is not installed: pip install faiss-cpu (or faiss-gpu)")
    if f is not None:
        index = f.IndexFlatIP(D.shape[1])
        if faiss_gpu_count() > 0 and kk <= _FAISS_GPU_MAX_K:
            co = f.GpuMultipleClonerOptions()
            co.shard = True  # split the database across GPUs rather than replicating it
            index = f.index_cpu_to_all_gpus(index, co)
        index.add(D)

        def search(Qb: np.ndarray):
            return index.search(Qb, kk)

        return search

    import torch

    dev = torch_device()
    Dt = torch.from_numpy(D).to(dev)

    def search(Qb: np.ndarray):
        with torch.no_grad():
            S = torch.from_numpy(Qb).to(dev) @ Dt.T
            v, i = torch.topk(S, kk, dim=1)
        return v.cpu().numpy(), i.cpu().numpy()

    return search


def _finalize_block(
    Qb: np.ndarray,
    D: np.ndarray,
    cand_sims: np.ndarray,
    cand_idx: np.ndarray,
    k: int,
    self_offset: Optional[int],
) -> Tuple[np.ndarray, np.ndarray]:
    """Turn kk >= k candidates into the exact, deterministically ordered top k."""
    cand_sims = np.array(cand_sims, dtype=np.float32, copy=True)
    cand_idx = np.asarray(cand_idx, dtype=np.int64)
    b, kk = cand_idx.shape
    nd = D.shape[0]
    if self_offset is not None:
        rows = np.arange(self_offset, self_offset + b)[:, None]
        cand_sims[cand_idx == rows] = -np.inf
    # Sort candidates by (similarity desc, index asc).
    order = np.lexsort((cand_idx, -cand_sims), axis=1)
    cand_sims = np.take_along_axis(cand_sims, order, axis=1)
    cand_idx = np.take_along_axis(cand_idx, order, axis=1)
    out_s, out_i = cand_sims[:, :k].copy(), cand_idx[:, :k].copy()
    if kk >= nd:
        return out_s, out_i  # every database row was a candidate: the sort is exact
    # Some rows were never returned, so a tied lower index may be missing if the
    # k-th and (k+1)-th candidates tie. kk leaves >= k+1 valid candidates even
    # after self (now -inf, sorted last) is dropped.
    tied = cand_sims[:, k - 1] == cand_sims[:, k]
    if tied.any():
        rows = np.flatnonzero(tied)
        ts, ti = _exact_select(Qb[rows], D, k, None if self_offset is None else self_offset + rows)
        out_s[rows], out_i[rows] = ts, ti
    return out_s, out_i


def _exact_select(Qr: np.ndarray, D: np.ndarray, k: int, self_rows: Optional[np.ndarray]):
    """Exact top-k with lower-index-first ties, by a full row of similarities.

    Used only for the (rare) rows with a tie at the k-th place.
    """
    nd = D.shape[0]
    S = Qr @ D.T
    if self_rows is not None:
        S[np.arange(len(Qr)), self_rows] = -np.inf
    kth = -np.partition(-S, k - 1, axis=1)[:, k - 1 : k]
    ar = np.arange(nd, dtype=np.int64)
    # Strictly better first (any order), then tied ones by index, then the rest.
    key = np.where(S > kth, ar, np.where(S == kth, nd + ar, 2 * nd + ar))
    sel = np.partition(key, k - 1, axis=1)[:, :k] % nd
    vals = np.take_along_axis(S, sel, axis=1)
    order = np.lexsort((sel, -vals), axis=1)
    return np.take_along_axis(vals, order, axis=1), np.take_along_axis(sel, order, axis=1)
