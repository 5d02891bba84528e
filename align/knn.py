"""The one k-nearest-neighbour engine of reptrans.

Exact top-k by inner product (or cosine = inner product of L2-normalised rows).
Every neighbour metric and every translation evaluation goes through here.

Backends, chosen at run time (never required):
- ``faiss``: ``IndexFlatIP`` (exact, BLAS inside); ``GpuIndexFlatIP`` through
  ``index_cpu_to_all_gpus`` when faiss-gpu sees GPUs (sharded over several).
- ``torch``: blocked ``torch.mm`` + ``topk``, on CUDA when present.
- the float16-filter engine (:mod:`align.gpuknn`): where CUDA is present ``auto``
  takes it for self-searches and paired searches, and for searches while faiss-gpu
  is absent; float16 tensor-core products filter, float64 decides, as below.
- one pass for both directions (:func:`knn_both`, CPU): the blocks of A Bᵀ read
  along rows for A's neighbours and down columns for B's, settled exactly as below.
- ``symmetric``: for a self-search (no database) on the CPU, the upper block
  triangle of X Xᵀ only, half the product, in bfloat16 where the CPU has fast
  bfloat16 products (AMX / AVX512-BF16) and float32 otherwise, each row's few
  candidates then settled exactly in float64 (:mod:`align.selfknn`). ``auto``
  takes it for self-searches of >= 4096 rows when no GPU is present.

Guarantees, whatever the backend:
- memory O(n·k + block·n) beyond the validated rows (and, for ``symmetric``, one
  copy of them in the filter precision): queries go through in blocks;
- float32 products inside (``symmetric``: bfloat16 or float32 products that only
  filter, float64 decisions); numpy arrays or torch tensors in, numpy out;
- deterministic ties: among equal similarities the lower database index comes
  first (FAISS itself prefers the higher one, so rows whose k-th and (k+1)-th
  candidates tie are re-selected exactly);
- similarities: float32 products for ``faiss`` and ``torch``; the ``symmetric``
  and float16-filter engines return the float64 value (x_i · x_j) of the float32
  unit rows, rounded to float32, so rows that differ by less than float32 rounding
  may be ordered differently from the float32 engines (never for equal rows);
- ``exclude_self`` removes row i from the neighbours of query i *by index*, so
  a duplicate of row i is still a valid neighbour.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Optional, Tuple

import numpy as np

from .device import cuda_available, faiss, faiss_gpu_count, threads, torch_device
from .progress import progress_bar
from .validation import as_matrix, check_choice, check_k, check_nonzero_rows, check_positive_int

__all__ = ["knn", "knn_both", "normalize_rows", "inverse_norms", "unit_rows_f32", "self_neighbors", "paired_search",
           "warm_up"]

_BACKENDS = ("auto", "faiss", "torch", "symmetric")
# FAISS GPU indices return at most this many neighbours per query.
_FAISS_GPU_MAX_K = 2048
# Similarity block (queries x database) kept in memory at once: 2**26 float32 = 256 MiB.
_BLOCK_ELEMS = 1 << 26
# Symmetric engine: block rows (an 8 MiB bfloat16 buffer), and the smallest
# self-search that "auto" gives it. Before the bfloat16 filter, one self-search at
# n = 16000, d = 768 on 2 cores, median of 5 interleaved rounds: blocks of 2048
# 1.49 s, 1024 1.50 s, 4096 1.65 s; IndexFlatIP 2.96 s; one plain n×n×d product
# 2.24 s (scripts/bench.py --cases tune-rr-16k).
_SYM_BLOCK = 2048
_SYM_MIN_ROWS = 4096
# ... and the largest k it takes (its candidate lists hold ~2k + 32 entries per row).
_SYM_MAX_K = 256


def normalize_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as one new array of X's dtype.

    Norms are accumulated in float64 by einsum (no n×d temporary, unlike
    ``np.linalg.norm``), then X is divided into the output in one pass.
    """
    norms = np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64))[:, None]
    out = np.empty(X.shape, dtype=X.dtype)
    np.divide(X, norms, out=out, casting="same_kind")
    return out


def inverse_norms(X: np.ndarray) -> np.ndarray:
    """1 / ||x_i|| in float64 (rows must be non-zero); rows whose squares leave
    float64's normal range (|x| beyond ~1e154 or below ~1e-145) are scaled by their
    largest entry first."""
    sq = np.einsum("ij,ij->i", X, X, dtype=np.float64)
    big = ~np.isfinite(sq) | (sq < 1e-290)
    if big.any():
        B = X[big].astype(np.float64)
        m = np.abs(B).max(axis=1)
        B /= m[:, None]
        out = 1.0 / np.sqrt(sq, where=~big, out=np.ones_like(sq))
        out[big] = 1.0 / (m * np.sqrt(np.einsum("ij,ij->i", B, B)))
        return out
    return 1.0 / np.sqrt(sq)


def unit_rows_f32(X: np.ndarray, block: int = 8192) -> np.ndarray:
    """Rows scaled to unit norm as one float32 array, normalised block by block in
    float64 (so float64 input beyond float32's range is fine, and no float64 copy
    of X is ever made)."""
    out = np.empty(X.shape, dtype=np.float32)
    for s in range(0, X.shape[0], block):
        e = min(X.shape[0], s + block)
        B = X[s:e].astype(np.float64)
        B *= inverse_norms(B)[:, None]
        out[s:e] = B
    return out


def _cpu_engines() -> bool:
    return faiss_gpu_count() == 0 and not cuda_available()


def _gpu_engine() -> bool:
    """Whether the float16-filter engine of :mod:`align.gpuknn` takes self-searches,
    paired searches and (without faiss-gpu) searches: CUDA is present."""
    return cuda_available()


def self_neighbors(X: np.ndarray, k: int, *, min_rows: Optional[int] = None) -> np.ndarray:
    """The (n, k) cosine neighbour lists of the rows of X (validated, non-zero rows,
    any float dtype), self excluded.

    Where CUDA is present the engine of :mod:`align.gpuknn` reads X itself with its
    inverse norms (any n). On the CPU with at least ``min_rows`` rows (default: where
    ``auto`` takes the symmetric engine) the symmetric engine does the same: no
    unit-row copy. Otherwise one float32 unit-row copy goes to :func:`search_prepared`.
    """
    n = X.shape[0]
    min_rows = _SYM_MIN_ROWS if min_rows is None else min_rows
    with threads():
        if _gpu_engine():
            from .gpuknn import filtered_knn

            inv = inverse_norms(X)
            return filtered_knn(X, X, k, True, iq=inv, idd=inv, cosine=True)[1]
        if (_cpu_engines() and n >= min_rows and k < n - 1 and k <= _SYM_MAX_K
                and importlib.util.find_spec("numba") is not None):
            from .selfknn import self_knn

            return self_knn(X, k, inverse_norms(X), _SYM_BLOCK)[1]
        U = unit_rows_f32(X)
        return search_prepared(U, U, k, True)[1]


def paired_search(Q: np.ndarray, D: np.ndarray, k: int, block_size: Optional[int] = None,
                  progress: bool = False):
    """For paired rows q_i, d_i (validated, non-zero, equal shapes), by cosine:

    ``(ranks, cos, near_q, near_d)``: the pessimistic rank of d_i among all rows of D
    as seen from q_i (1 + #{j != i : cos(q_i, d_j) >= cos(q_i, d_i)}), cos(q_i, d_i)
    (float64), and the k nearest rows of D to q_i and to d_i, row i left out of both.

    On the CPU one blocked pass over Q Dᵀ gives the ranks and q's neighbours, the
    symmetric engine on D gives d's, both from one bfloat16 (or float32) copy of D;
    where CUDA is present, :func:`align.gpuknn.filtered_paired` (float16 filter on
    the GPU), same figures up to float64 rounding. Returns None where numba is
    missing or faiss-gpu alone holds the GPU, and the caller takes its torch path.
    """
    if importlib.util.find_spec("numba") is None:
        return None
    if _gpu_engine():
        from .gpuknn import filtered_paired

        return filtered_paired(Q, D, k, iq=inverse_norms(Q), idd=inverse_norms(D), progress=progress)
    if not _cpu_engines():
        return None
    from .selfknn import Rep, filter_precision, paired_rank_knn, self_knn

    block = block_size or _SYM_BLOCK
    with threads():
        iq, idd = inverse_norms(Q), inverse_norms(D)
        rep = Rep(D, idd, filter_precision())
        near_d = self_knn(D, k, idd, block, progress=progress, rep=rep)[1]
        ranks, cos, near_q = paired_rank_knn(Q, D, k, iq, idd, block, progress=progress, rep_d=rep)
    return ranks, cos, near_q, near_d


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
        (symmetric engine: rows per square block, default 2048; the CUDA engine of
        ``auto`` sizes its blocks by the free GPU memory and ignores it).
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
    with threads():
        return search_prepared(Q, D, k, bool(exclude_self), backend=backend, block_size=block_size,
                               progress=progress)


def knn_both(
    A: Any, B: Any, k: int, metric: str = "cosine"
) -> Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]:
    """Exact k nearest rows of B to each row of A, and of A to each row of B.

    What CSLS and mutual-neighbour criteria need (Conneau et al. 2018): both
    directions of one similarity matrix. On the CPU (numba present, no GPU) one
    blocked pass over A Bᵀ yields both (:func:`align.selfknn.cross_knn`: one
    product instead of two FAISS searches, 9-16x faster at 10k-50k rows by
    ``scripts/bench.py --cases knn``); elsewhere, and for k >= min(len(A), len(B)),
    it is two :func:`knn` calls. Same guarantees as :func:`knn` (ties to the lower
    index; similarities of the ``symmetric`` kind on the one-pass route).

    Returns ``((sims, idx) of A's rows in B, (sims, idx) of B's rows in A)``.
    """
    check_choice(metric, "metric", ("cosine", "ip"))
    Qa = as_matrix(A, "A", dtype=np.float32)
    Qb = as_matrix(B, "B", dtype=np.float32)
    if Qa.shape[1] != Qb.shape[1]:
        raise ValueError(f"A and B must have the same width, got {Qa.shape[1]} and {Qb.shape[1]}")
    k = check_k(k, min(Qa.shape[0], Qb.shape[0]), "k", exclude_self=False)
    if metric == "cosine":
        check_nonzero_rows(Qa, "A")
        check_nonzero_rows(Qb, "B")
    one_pass = (_cpu_engines() and k < min(Qa.shape[0], Qb.shape[0]) and k <= _SYM_MAX_K
                and importlib.util.find_spec("numba") is not None)
    with threads():
        if one_pass:
            from .selfknn import cross_knn

            if metric == "cosine":
                return cross_knn(Qa, Qb, k, inverse_norms(Qa), inverse_norms(Qb), _SYM_BLOCK)
            return cross_knn(Qa, Qb, k, block=_SYM_BLOCK)
        if metric == "cosine":
            Qa, Qb = normalize_rows(Qa), normalize_rows(Qb)
        return search_prepared(Qa, Qb, k, False), search_prepared(Qb, Qa, k, False)


def warm_up() -> None:
    """Compile the CPU engines' numba kernels into numba's on-disk cache (``cache=True``).

    Runs the symmetric, paired and two-way searches once each on small random rows, in float32
    and float64 (the input dtypes the kernels are specialised for), so that a later process
    loads the kernels instead of compiling them: a fresh process fitting ``Isometric`` on 5000
    rows per side and evaluating it took 98-104 s without the cache and 79 s with it, 2 cores;
    this call takes ~29 s there (``docs/translation.md``, the demo). ``scripts/setup.sh`` calls
    it once per install. Nothing to do where CUDA takes the searches or numba is missing. Routes
    other than this machine's default (a filter precision forced by ``REPTRANS_KNN_FILTER``, the
    exact last resort for overflowing rows) still compile on first use.
    """
    if not _cpu_engines() or importlib.util.find_spec("numba") is None:
        return
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        X, Y = (rng.standard_normal((_SYM_MIN_ROWS, 16)).astype(dtype) for _ in range(2))
        self_neighbors(X, 10)
        paired_search(X, Y, 10)
    knn_both(X, Y, 10)


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
    if _symmetric_engine(Q, D, exclude_self, backend) and (backend == "symmetric" or k <= _SYM_MAX_K):
        from .selfknn import self_knn

        # exact already: ties settled in float64, lower index first
        return self_knn(Q, k, None, block_size or _SYM_BLOCK, progress=progress)
    if backend == "auto" and _gpu_engine() and faiss_gpu_count() == 0:
        from .gpuknn import filtered_knn

        iq = _scales(Q)
        idd = iq if D is Q else _scales(D)
        return filtered_knn(Q, D, k, exclude_self, iq=iq, idd=idd, progress=progress)
    # One extra candidate to detect a tie at the k-th place, one more for self.
    kk = min(nd, k + 1 + int(exclude_self))
    if block_size is None:
        block_size = int(np.clip(_BLOCK_ELEMS // max(nd, 1), 256, 65536))
    searcher = _make_searcher(D, kk, backend)
    sims = np.empty((nq, k), dtype=np.float32)
    idx = np.empty((nq, k), dtype=np.int64)
    for s in progress_bar(range(0, nq, block_size), desc="knn", unit="block", enabled=progress):
        e = min(nq, s + block_size)
        cs, ci = searcher(Q[s:e])
        sims[s:e], idx[s:e] = _finalize_block(Q[s:e], D, cs, ci, k, s if exclude_self else None)
    return sims, idx


def _scales(X: np.ndarray) -> np.ndarray:
    """Inverse norms, 1 for zero rows (``metric="ip"`` allows them)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = inverse_norms(X)
    inv[~np.isfinite(inv)] = 1.0
    return inv


def _symmetric_engine(Q: np.ndarray, D: np.ndarray, exclude_self: bool, backend: str) -> bool:
    """Whether this search goes to the symmetric engine (refuses it where it cannot)."""
    self_search = Q is D and exclude_self
    if backend == "symmetric":
        if not self_search:
            raise ValueError("backend='symmetric' is for a self-search: Q must be D, with exclude_self=True")
        if importlib.util.find_spec("numba") is None:
            raise ValueError("backend='symmetric' needs numba, which is not installed: pip install numba")
        return True
    if self_search and backend == "auto" and importlib.util.find_spec("numba") is None:
        return False  # auto: FAISS or torch instead
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

    Used only for the (rare) rows with a tie at the k-th place. The products are numpy's own loops (einsum),
    not BLAS: OpenBLAS rounds a product by the row's place in its tiles (on an AMD EPYC with its Haswell
    kernels, 11 of 25 groups of equal rows got unequal float32 values), which would break the very ties
    this settles; FAISS and torch gave equal rows equal values there.
    """
    nd = D.shape[0]
    S = np.einsum("id,jd->ij", Qr, D)
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
