"""Exact kNN on the CPU from blocks of the similarity matrix: the symmetric
self-search, the paired search of :func:`translate.evaluate`, and the two-way
search of :func:`align.knn.knn_both` (CSLS needs both directions).

Entered only through :mod:`align.knn`, which owns validation and the choice of
engine.

What "exact" means here
-----------------------
The similarity of rows i and j is ``s_ij = Σ_t (x_it inv_i)(x_jt inv_j)``
evaluated in float64 (``inv`` = inverse row norms for cosine, ones for a plain
inner product), one fixed summation order, so equal rows give equal values. Every
returned neighbour list and rank is exact for these values: neighbours sorted
by (similarity desc, index asc), ranks counted with ``>=``. The block products
only *filter*: they decide which few entries per row need an exact value.

The filter
----------
Each block S_IJ = U_I U_Jᵀ is one ``torch.mm`` of rows scaled to unit norm and
rounded to a filter precision: bfloat16 where the CPU multiplies it much faster
than float32 (AMX / AVX512-BF16: 3-8x here), else float32. For a filter value
s̃_ij the error is bounded rigorously, row by row::

    |s̃_ij - s_ij| <= E_i + r |s̃_ij|,
    E_i = a_i (N + b) + N_i b + (gamma + 1e-9) (N_i + a_i)(N + b) + 1e-30

with a_i = ||ũ_i - u_i|| (measured, float64), N_i = ||u_i||, N, b the largest
N_j, a_j of the other side, gamma = 2 (d + 4) 2^-24 (float32 accumulation), and
r the relative rounding of the block's output: 2^-8 / (1 - 2^-8) for bfloat16
(round to nearest even, 8-bit significand), 0 for float32. A row keeps every
entry whose largest possible exact value reaches the smallest possible exact
value of its k-th neighbour so far (which only rises as blocks go by): the exact
top k is always among them. Ranks count entries whose smallest possible exact
value reaches s_ii for certain, and evaluate exactly only the entries that might
go either way. ``tests/test_knn.py`` checks the bound on every entry of block
products of isotropic and strongly anisotropic rows.

A row whose kept entries overflow their buffer (many entries within the bound of
its k-th neighbour: duplicates, or an untranslated query whose true match sits
in the bulk) is redone with a float32 filter (a bound ~1e-4 of bfloat16's) and a
larger buffer, and as a last resort exactly against every row. Results never
depend on which route a row took, on the block size or on the thread count.

Per block, compiled passes (numba) read the block once along its rows (and, for
the symmetric search, once down its columns for the rows of the other block):
the largest of 64 entries (bfloat16 bits as order-preserving integers, one
vectorised reduction) is compared with the row's threshold, and only a chunk
that reaches it is looked at entry by entry. Memory: the database in the filter precision (n·d·2 bytes for
bfloat16), one block × block buffer, and per row a few dozen candidates.
"""

from __future__ import annotations

import functools
import math
import os
import time
from typing import Optional, Tuple

import numba
import numpy as np

from ._kernels import (
    _col_pass,
    _diag,
    _exact_rows,
    _floor_key,
    _inv_down,
    _inv_up,
    _rank_row_pass,
    _refine,
    _row_pass,
    _settle_ranks,
)
from .progress import progress_bar

__all__ = ["self_knn", "cross_knn", "paired_rank_knn", "filter_precision", "filter_error"]

# Candidate buffer per row (level 1) and for rows redone with float32 (level 2).
_CAP1_MIN = 48
_CAP2_MIN = 1024
# Entries within eps of s_ii kept per row for the exact rank (level 1 / level 2).
_AMB1 = 64
_AMB2 = 2048
# Rows redone per float32 block at level 2.
_LEVEL2_ROWS = 2048
_BF16_OUT_ROUND = 2.0**-8  # unit roundoff of an 8-bit significand
_MARGIN = 1e-9

# "auto" | "bf16" | "fp32" (tests force each; REPTRANS_KNN_FILTER overrides auto)
FILTER = "auto"


# --------------------------------------------------------------------------- filter precision
@functools.lru_cache(maxsize=1)
def _bf16_fast() -> bool:
    """Whether a bfloat16 block product is >= 2x faster than float32 here (probed once)."""
    import torch

    try:
        g = torch.Generator().manual_seed(0)
        a = torch.randn(1024, 768, generator=g)
        b = torch.randn(1024, 768, generator=g)
        ab, bb = a.bfloat16(), b.bfloat16()
        best = {"f": math.inf, "b": math.inf}
        with torch.no_grad():
            for _ in range(4):
                for key, (x, y) in (("f", (a, b)), ("b", (ab, bb))):
                    t0 = time.perf_counter()
                    torch.mm(x, y.T)
                    best[key] = min(best[key], time.perf_counter() - t0)
        return best["b"] * 2.0 <= best["f"]
    except Exception:  # pragma: no cover - no bfloat16 kernels
        return False


def filter_precision(precision: Optional[str] = None) -> str:
    """'bf16' or 'fp32': the block products' precision (results do not depend on it)."""
    p = precision or os.environ.get("REPTRANS_KNN_FILTER") or FILTER
    if p not in ("auto", "bf16", "fp32"):
        raise ValueError(f"filter precision must be 'auto', 'bf16' or 'fp32', got {p!r} (REPTRANS_KNN_FILTER)")
    if p == "auto":
        return "bf16" if _bf16_fast() else "fp32"
    return p


def _gamma(d: int) -> float:
    return 2.0 * (d + 4) * 2.0**-24


def filter_error(a, N, Nb: float, b: float, d: int):
    """E_i of the module docstring's bound, elementwise (numpy arrays or torch
    tensors): rows with norms N and rounding errors a against any row of another
    side whose largest norm and error are Nb and b, products of width d
    accumulated in float32. Add the output rounding r |s̃| on top."""
    return a * (Nb + b) + N * b + (_gamma(d) + _MARGIN) * (N + a) * (Nb + b) + 1e-30


@numba.njit(inline="always")
def _unit_row(X, inv, i, f):  # pragma: no cover - compiled
    """f = float32(u), u = X[i] inv[i] in float64; returns ||u||."""
    sn = 0.0
    for t in range(f.shape[0]):
        u = np.float64(X[i, t]) * inv[i]
        sn += u * u
        f[t] = np.float32(u)
    return math.sqrt(sn)


@numba.njit(inline="always")
def _row_error(X, inv, i, f):  # pragma: no cover - compiled
    sa = 0.0
    for t in range(f.shape[0]):
        e = np.float64(f[t]) - np.float64(X[i, t]) * inv[i]
        sa += e * e
    return math.sqrt(sa)


@numba.njit(parallel=True, cache=True)
def _round_rows_bf16(X, inv, rows, out, a, N):  # pragma: no cover - compiled
    """out[g] = bfloat16 bits (as int16) of u = X[rows[g]] inv[rows[g]] (float64 ->
    float32 -> bfloat16, each to nearest even); a[g] = ||ũ - u||, N[g] = ||u||."""
    m, d = out.shape
    for g in numba.prange(m):
        i = rows[g]
        f = np.empty(d, dtype=np.float32)
        ub = f.view(np.uint32)
        N[g] = _unit_row(X, inv, i, f)
        for t in range(d):
            b = ub[t]
            b = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
            out[g, t] = np.int16(np.uint16(b))
            ub[t] = b << np.uint32(16)
        a[g] = _row_error(X, inv, i, f)


@numba.njit(parallel=True, cache=True)
def _round_rows_f32(X, inv, rows, out, a, N):  # pragma: no cover - compiled
    """:func:`_round_rows_bf16` for a float32 filter."""
    m, d = out.shape
    for g in numba.prange(m):
        i = rows[g]
        N[g] = _unit_row(X, inv, i, out[g])
        a[g] = _row_error(X, inv, i, out[g])


class Rep:
    """Rows scaled to unit norm (x_i inv_i), rounded to the filter precision, with
    their norms N (float64) and rounding errors a = ||ũ - u|| (float64)."""

    def __init__(self, X: np.ndarray, inv: np.ndarray, prec: str, rows: Optional[np.ndarray] = None):
        import torch

        self.prec = prec
        rows = np.arange(X.shape[0], dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        m = rows.size
        # torch's allocation (64-byte aligned): block products on numpy's memory
        # measured 1.4x slower here (24 vs 17 ms per 2048² bfloat16 block)
        t = torch.empty((m, X.shape[1]), dtype=torch.int16 if prec == "bf16" else torch.float32)
        self.a = np.empty(m)
        self.N = np.empty(m)
        if m:
            (_round_rows_bf16 if prec == "bf16" else _round_rows_f32)(X, inv, rows, t.numpy(), self.a, self.N)
        self.T = t.view(torch.bfloat16) if prec == "bf16" else t
        self.Nmax = float(self.N.max()) if m else 0.0
        self.amax = float(self.a.max()) if m else 0.0

    @property
    def r(self) -> float:
        """Relative rounding of a block product's output (bfloat16: to nearest even)."""
        return _BF16_OUT_ROUND / (1 - _BF16_OUT_ROUND) if self.prec == "bf16" else 0.0

    def eps(self, sl, other) -> np.ndarray:
        """E_i for this side's rows ``sl`` against any row of ``other``: with the
        output rounding r, |s̃_ij - s_ij| <= E_i + r |s̃_ij|."""
        return filter_error(self.a[sl], self.N[sl], other.Nmax, other.amax, self.T.shape[1])


class _State:
    """Per-slot candidate lists (and, with ``amb``, rank bookkeeping)."""

    def __init__(self, m: int, k: int, cap: int, prec: str, eps: np.ndarray, r: float, amb: int = 0):
        self.topv = np.full((m, k), -np.inf, dtype=np.float32)
        self.lo = np.full(m, -np.inf)
        self.tk = np.full(m, -32768, dtype=np.int16) if prec == "bf16" else np.full(m, -np.inf, dtype=np.float32)
        self.E = eps
        self.r = float(r)
        self.ci = np.empty((m, cap), dtype=np.int64)
        self.cv = np.empty((m, cap), dtype=np.float32)
        self.cn = np.zeros(m, dtype=np.int64)
        self.over = np.zeros(m, dtype=np.uint8)
        if amb:
            self.cnt = np.zeros(m, dtype=np.int64)
            self.ai = np.empty((m, amb), dtype=np.int64)
            self.an = np.zeros(m, dtype=np.int64)

    def knn_args(self):
        return self.topv, self.lo, self.tk, self.E, self.r, self.ci, self.cv, self.cn, self.over


def _band_keys(sii: np.ndarray, E: np.ndarray, r: float, prec: str) -> Tuple[np.ndarray, np.ndarray]:
    """Keys of floor(U) and floor(L): s̃ > floor(U) means exact >= s_ii for certain,
    s̃ < L means exact < s_ii for certain (see _admit for the bound)."""
    dt = np.int16 if prec == "bf16" else np.float32
    ku = np.empty(sii.shape[0], dtype=dt)
    kl = np.empty(sii.shape[0], dtype=dt)
    _band_keys_nb(sii, E, r, ku, kl)
    return ku, kl


@numba.njit(cache=True)
def _band_keys_nb(sii, E, r, ku, kl):  # pragma: no cover - compiled
    for g in range(sii.shape[0]):
        ku[g] = _floor_key(_inv_down(sii[g] + E[g], r), ku[g])
        kl[g] = _floor_key(_inv_up(sii[g] - E[g], r), kl[g])


def _capacity(k: int, nd: int, base: int) -> int:
    return int(min(nd, max(base, 2 * k + 32)))


def _tile(buf, A, B):
    """One block product A Bᵀ into the reused buffer; a numpy view of it (int16
    bits for bfloat16)."""
    import torch

    flat = buf[: A.shape[0] * B.shape[0]]
    torch.mm(A, B.T, out=flat.view(A.shape[0], B.shape[0]))
    return flat.view(torch.int16).numpy() if flat.dtype == torch.bfloat16 else flat.numpy()


# --------------------------------------------------------------------------- engines
def self_knn(X: np.ndarray, k: int, inv: Optional[np.ndarray] = None, block: int = 2048,
             precision: Optional[str] = None, progress: bool = False,
             rep: Optional[Rep] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Exact k nearest *other* rows of each row of X (n > k), by
    s_ij = (x_i · x_j) inv_i inv_j, ties to the lower index.

    Computes only the upper block triangle of the filter product. Returns
    (sims float32 (n, k), idx int64 (n, k)).
    """
    import torch

    n, d = X.shape
    inv = np.ones(n) if inv is None else inv
    prec = rep.prec if rep is not None else filter_precision(precision)
    rep = rep if rep is not None else Rep(X, inv, prec)
    st = _State(n, k, _capacity(k, n - 1, _CAP1_MIN), prec, rep.eps(slice(None), rep), rep.r)
    excl = np.arange(n, dtype=np.int64)
    buf = torch.empty(block * block, dtype=rep.T.dtype)
    chunks = max(1, 4 * numba.get_num_threads())
    starts = list(range(0, n, block))
    with torch.no_grad():
        for a in progress_bar(range(len(starts)), desc="knn (symmetric)", unit="block-row", enabled=progress):
            s = starts[a]
            e = min(n, s + block)
            for t in starts[a:]:
                f = min(n, t + block)
                S = _tile(buf, rep.T[s:e], rep.T[t:f])
                _row_pass(S, e - s, f - t, s, t, excl, *st.knn_args())
                if t != s:
                    _col_pass(S, e - s, f - t, s, t, chunks, *st.knn_args())
    del buf
    out_v = np.empty((n, k))
    out_i = np.empty((n, k), dtype=np.int64)
    rows = np.arange(n, dtype=np.int64)
    _refine(X, inv, X, inv, rows, st.lo, st.ci, st.cv, st.cn, st.over, out_v, out_i)
    redo = np.flatnonzero(st.over)
    del st
    if redo.size:
        _redo(X, inv, X, inv, redo, redo, k, None, out_v, out_i, None, block)
    return out_v.astype(np.float32), out_i


def cross_knn(A: np.ndarray, B: np.ndarray, k: int, ia: Optional[np.ndarray] = None,
              ib: Optional[np.ndarray] = None, block: int = 2048, precision: Optional[str] = None,
              progress: bool = False) -> Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]:
    """Exact k nearest rows of B to each row of A *and* of A to each row of B
    (k < len(A), k < len(B)), by s_ij = (a_i · b_j) ia_i ib_j, ties to the lower index.

    One pass over the blocks of the filter product A Bᵀ: each block is read along
    its rows for A's candidates and down its columns for B's, so both directions
    cost one product instead of two searches. Returns ((sims, idx) of A in B,
    (sims, idx) of B in A), sims float32, idx int64.
    """
    import torch

    na, nb = A.shape[0], B.shape[0]
    ia = np.ones(na) if ia is None else ia
    ib = np.ones(nb) if ib is None else ib
    prec = filter_precision(precision)
    ra, rb = Rep(A, ia, prec), Rep(B, ib, prec)
    sta = _State(na, k, _capacity(k, nb, _CAP1_MIN), prec, ra.eps(slice(None), rb), ra.r)
    stb = _State(nb, k, _capacity(k, na, _CAP1_MIN), prec, rb.eps(slice(None), ra), rb.r)
    no_self = np.full(na, -1, dtype=np.int64)  # no database row is the query's own
    buf = torch.empty(block * block, dtype=ra.T.dtype)
    chunks = max(1, 4 * numba.get_num_threads())
    with torch.no_grad():
        for s in progress_bar(range(0, na, block), desc="knn (both ways)", unit="block-row", enabled=progress):
            e = min(na, s + block)
            for t in range(0, nb, block):
                f = min(nb, t + block)
                S = _tile(buf, ra.T[s:e], rb.T[t:f])
                _row_pass(S, e - s, f - t, s, t, no_self, *sta.knn_args())
                _col_pass(S, e - s, f - t, s, t, chunks, *stb.knn_args())
    del buf
    out = []
    for X, ix, Y, iy, st in ((A, ia, B, ib, sta), (B, ib, A, ia, stb)):
        n = X.shape[0]
        v = np.empty((n, k))
        i = np.empty((n, k), dtype=np.int64)
        _refine(X, ix, Y, iy, np.arange(n, dtype=np.int64), st.lo, st.ci, st.cv, st.cn, st.over, v, i)
        redo = np.flatnonzero(st.over)
        if redo.size:
            _redo(X, ix, Y, iy, redo, np.full(redo.size, -1, dtype=np.int64), k, None, v, i, None, block)
        out.append((v.astype(np.float32), i))
    return out[0], out[1]


def paired_rank_knn(Xq: np.ndarray, Xd: np.ndarray, k: int, iq: np.ndarray, idd: np.ndarray,
                    block: int = 2048, precision: Optional[str] = None, progress: bool = False,
                    rep_d: Optional[Rep] = None):
    """For paired rows (query i pairs with database row i):

    - ``ranks``: 1 + #{j != i : s_ij >= s_ii}, s_ij = (q_i · x_j) iq_i idd_j;
    - ``sii``: s_ii (float64);
    - ``idx``: the exact k nearest database rows of each query, row i left out.

    One pass over the blocks of the filter product Q Xᵀ gives both.
    """
    import torch

    n, d = Xq.shape
    prec = rep_d.prec if rep_d is not None else filter_precision(precision)
    rep_d = rep_d if rep_d is not None else Rep(Xd, idd, prec)
    sii = np.empty(n)
    _diag(Xq, iq, Xd, idd, sii)
    ranks = np.empty(n, dtype=np.int64)
    out_v = np.empty((n, k))
    out_i = np.empty((n, k), dtype=np.int64)
    cap = _capacity(k, n - 1, _CAP1_MIN)
    buf = torch.empty(block * block, dtype=rep_d.T.dtype)
    redo = []
    with torch.no_grad():
        for s in progress_bar(range(0, n, block), desc="evaluate", unit="block-row", enabled=progress):
            e = min(n, s + block)
            rq = Rep(Xq[s:e], iq[s:e], prec)
            eps = rq.eps(slice(None), rep_d)
            st = _State(e - s, k, cap, prec, eps, rq.r, amb=_AMB1)
            ku, kl = _band_keys(sii[s:e], eps, rq.r, prec)
            excl = np.arange(s, e, dtype=np.int64)
            for t in range(0, n, block):
                f = min(n, t + block)
                S = _tile(buf, rq.T, rep_d.T[t:f])
                _rank_row_pass(S, e - s, f - t, 0, t, excl, ku, kl, st.cnt, st.ai, st.an, *st.knn_args())
            qrow = np.arange(s, e, dtype=np.int64)
            _settle_ranks(Xq, iq, Xd, idd, qrow, sii, st.cnt, st.ai, st.an, st.over, ranks)
            bv, bi = out_v[s:e], out_i[s:e]
            _refine(Xq, iq, Xd, idd, qrow, st.lo, st.ci, st.cv, st.cn, st.over, bv, bi)
            redo.append(s + np.flatnonzero(st.over))
    del buf
    redo = np.concatenate(redo)
    if redo.size:
        _redo(Xq, iq, Xd, idd, redo, redo, k, sii, out_v, out_i, ranks, block)
    return ranks, sii, out_i


def _redo(Xq, iq, Xd, idd, rows, excl, k, sii, out_v, out_i, ranks, block):
    """Rows that overflowed: again with a float32 filter and larger buffers, then
    (rows that overflow even so) exactly against every database row."""
    import torch

    nd = Xd.shape[0]
    do_rank = sii is not None
    rep_all = None
    last = []
    cap = _capacity(k, nd - 1, _CAP2_MIN)
    buf = torch.empty(block * max(block, _LEVEL2_ROWS), dtype=torch.float32)
    for s in range(0, rows.size, _LEVEL2_ROWS):
        r = rows[s : s + _LEVEL2_ROWS]
        ex = excl[s : s + _LEVEL2_ROWS].astype(np.int64)
        rq = Rep(Xq, iq, "fp32", rows=r)
        if rep_all is None:  # bounds of the database side; its blocks are rounded on the fly
            rep_all = _DbBound(Xd, idd)
        eps = rq.eps(slice(None), rep_all)
        st = _State(r.size, k, cap, "fp32", eps, 0.0, amb=_AMB2 if do_rank else 0)
        if do_rank:
            ku, kl = _band_keys(sii[r], eps, 0.0, "fp32")
        with torch.no_grad():
            for t in range(0, nd, block):
                f = min(nd, t + block)
                D = torch.from_numpy((Xd[t:f].astype(np.float64) * idd[t:f, None]).astype(np.float32))
                S = _tile(buf, rq.T, D)
                if do_rank:
                    _rank_row_pass(S, r.size, f - t, 0, t, ex, ku, kl, st.cnt, st.ai, st.an, *st.knn_args())
                else:
                    _row_pass(S, r.size, f - t, 0, t, ex, *st.knn_args())
        bv = np.empty((r.size, k))
        bi = np.empty((r.size, k), dtype=np.int64)
        _refine(Xq, iq, Xd, idd, r, st.lo, st.ci, st.cv, st.cn, st.over, bv, bi)
        if do_rank:
            _settle_ranks(Xq, iq, Xd, idd, r, sii, st.cnt, st.ai, st.an, st.over, ranks)
        ok = st.over == 0
        out_v[r[ok]], out_i[r[ok]] = bv[ok], bi[ok]
        last.append(np.flatnonzero(~ok) + s)
    last = np.concatenate(last) if last else np.empty(0, dtype=np.int64)
    if last.size:
        r = rows[last]
        bv = np.empty((r.size, k))
        bi = np.empty((r.size, k), dtype=np.int64)
        dummy = np.empty(0) if sii is None else sii
        rk = ranks if ranks is not None else np.empty(0, dtype=np.int64)
        _exact_rows(Xq, iq, Xd, idd, r, excl[last].astype(np.int64), dummy, do_rank, bv, bi, rk)
        out_v[r], out_i[r] = bv, bi


class _DbBound:
    """Norm and float32-rounding bounds of a database rounded block by block:
    ||fl32(u) - u|| <= 2^-24 ||u||."""

    def __init__(self, X: np.ndarray, inv: np.ndarray, block: int = 8192):
        nmax = 0.0
        for s in range(0, X.shape[0], block):
            U = X[s : s + block].astype(np.float64) * inv[s : s + block, None]
            nmax = max(nmax, float(np.sqrt(np.einsum("ij,ij->i", U, U)).max()))
        self.Nmax = nmax * (1 + 1e-12)
        self.amax = self.Nmax * 2.0**-24 * 1.01
