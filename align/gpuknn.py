"""Exact kNN and exact paired ranks on a torch device (CUDA above all), from a
float16 filter product.

Entered only through :mod:`align.knn`, which owns validation and the choice of
engine: where CUDA is present its self-searches, searches and paired searches
(:func:`translate.evaluate`) come here (general searches only while faiss-gpu is
absent).

Same meaning of "exact" as :mod:`align.selfknn`: with ``cosine`` the similarity
of query row i and database row j is s_ij = Σ_t (q_it w_i)(d_jt w'_j), the
inverse norms w, w' applied entry by entry, in float64; otherwise s_ij = Σ_t
q_it d_jt in float64. Neighbours are sorted by (s desc, index asc), ranks count
``>=``. The sums are pairwise, in a fixed order of elementwise additions, so the
value of a pair never depends on the block, the route, the kernel or the device
(equal rows give equal values, and a CUDA run returns the CPU run's values); they
differ from the CPU engine's sequential sums by float64 rounding only.

The filter
----------
Each row of the search ranks t_ij = s_ij τ_i by a positive scale τ_i per query
row (so the order of a row is the order of s): with ``cosine`` the targets are
u_i = q_i w_i and v_j = d_j w'_j and τ = 1; otherwise u_i = q_i w_i, v_j = d_j c
with c = 1 / max_j ||d_j||, and τ_i = w_i c. The targets lie in the unit ball, so
rounding them to float16 neither overflows nor loses more than half a subnormal
step per entry; a_i = ||ũ_i - u_i|| and b_j = ||ṽ_j - v_j|| are measured in
float64. Each block t̃ = ũ ṽᵀ is one float16 matrix product on the tensor cores
with float32 accumulation (reduced-precision reductions switched off for the call)
rounded to float16 on output, so, with the bound of :func:`align.selfknn.filter_error`
(the derivation of the bfloat16 filter),

    |t̃_ij - t_ij| <= E_i + r |t̃_ij| + 2^-25,   r = 2^-11 / (1 - 2^-11),

the last term for float16's subnormal outputs.

*Search*: each row keeps its K largest filter values (``torch.topk``), evaluates
them exactly, and is settled when its k-th exact value is above the largest
possible exact value of every entry it did not keep (the K-th filter value plus
its bound). Rows not settled are searched again with 16 K candidates, and the
rest exactly against every row.

*Ranks*: entry j counts for row i for certain where t̃_ij - G_i >= s_ii, not at all
where t̃_ij + G_i < s_ii (G_i the bound at the largest |t̃| possible), and is
evaluated exactly in between.

Cost: one n_q × n_d × d float16 product per search (at the tensor cores' rate: dense
float16 989 against float32's 67 TFLOP/s on the H100 SXM datasheet) plus O(n_q K d)
float64 work. Measured on one H200 (docs/benchmarks.md, "On a GPU"): mutual kNN of
10⁶ × 768 rows, two such searches, 27.3 s.
Memory on the device: each side's rows and a float16 copy (one for a
self-search), and one block of similarities (<= 4 GiB and an eighth of the free
memory on CUDA).
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Optional, Tuple

import numpy as np

from .device import torch_device
from .progress import progress_bar
from .selfknn import filter_error

__all__ = ["filtered_knn", "filtered_paired", "first_candidates", "last_routes"]

# How many query rows the last search settled on each route (a diagnostic for benches).
last_routes = {"first": 0, "second": 0, "exact": 0}

_FP16_ROUND = 2.0**-11  # unit roundoff of float16's 11-bit significand
_FP16_SUBNORMAL = 2.0**-25  # half of float16's subnormal spacing
# The second pass keeps this many times the first pass's candidates.
_GROWTH = 16
# Bytes of one block of similarities or candidates: on CUDA at most this and an
# eighth of the free memory; elsewhere (torch's CPU device, in tests) the second.
_BUDGET_CUDA = 1 << 32
_BUDGET_OTHER = 1 << 26


def first_candidates(k: int) -> int:
    """Candidates per row on the first pass (the CPU engine's buffer size)."""
    return max(2 * k + 32, 64)


def _budget(dev) -> int:
    if dev.type != "cuda":
        return _BUDGET_OTHER
    import torch

    return int(min(_BUDGET_CUDA, torch.cuda.mem_get_info(dev)[0] // 8))


@contextlib.contextmanager
def _full_fp16_accumulation() -> Iterator[None]:
    """float32 accumulation in float16 products (the bound assumes it); torch
    allows cuBLAS reduced-precision split-K reductions by default."""
    import torch

    m = torch.backends.cuda.matmul
    old = m.allow_fp16_reduced_precision_reduction
    m.allow_fp16_reduced_precision_reduction = False
    try:
        with torch.no_grad():
            yield
    finally:
        m.allow_fp16_reduced_precision_reduction = old


class _Side:
    """One side on the device: its rows X (as given), the per-row scales ``sx``
    inside the exact sums (None: none), the float16 filter rows F of the targets
    X·``target`` (or the given F) with N = ||target row|| and a = ||F - target
    row|| (float64)."""

    def __init__(self, X, target, sx, dev, F=None, block: int = 65536):
        import torch

        self.X = X if isinstance(X, torch.Tensor) else torch.from_numpy(X).to(dev)
        self.sx = sx
        n, d = self.X.shape
        self.F = torch.empty((n, d), dtype=torch.float16, device=dev) if F is None else F
        self.a = torch.empty(n, dtype=torch.float64, device=dev)
        self.N = torch.empty(n, dtype=torch.float64, device=dev)
        for s in range(0, n, block):
            e = min(n, s + block)
            U = self.X[s:e].double() * (target[s:e, None] if target.dim() else target)
            if F is None:
                self.F[s:e] = U.half()
            self.N[s:e] = U.norm(dim=1)
            self.a[s:e] = (self.F[s:e].double() - U).norm(dim=1)
        self.Nmax = float(self.N.max()) if n else 0.0
        self.amax = float(self.a.max()) if n else 0.0

    def rows64(self, i):
        """Rows i in float64, scaled entry by entry where the sums are."""
        R = self.X[i].double()
        return R if self.sx is None else R * self.sx[i].unsqueeze(-1)


class _Pair:
    """Query and database sides, the per-row scale τ of the filter values and the
    bound terms (module docstring)."""

    def __init__(self, q: _Side, d: _Side, tau):
        self.q, self.d, self.tau = q, d, tau
        dim = q.X.shape[1]
        self.E = filter_error(q.a, q.N, d.Nmax, d.amax, dim) + _FP16_SUBNORMAL
        self.r = _FP16_ROUND / (1 - _FP16_ROUND)
        # the largest |t̃| possible: rounded targets, float32 accumulation, float16 output
        self.tmax = (q.Nmax + q.amax) * (d.Nmax + d.amax) * (1 + 2.0 * (dim + 4) * 2.0**-24) * (1 + _FP16_ROUND)
        self.dp = 1 << max(0, (dim - 1).bit_length())

    def exact(self, rq, j):
        """Exact s for query rows rq (B,) against database rows j (B, K): products,
        then a pairwise sum in a fixed order of elementwise additions."""
        import torch

        P = self.d.rows64(j)
        P *= self.q.rows64(rq)[:, None, :]
        h = P.shape[2]
        if h != self.dp:
            P = torch.nn.functional.pad(P, (0, self.dp - h))
        h = self.dp
        while h > 1:
            h //= 2
            P = P[:, :, :h] + P[:, :, h:]
        return P[:, :, 0]

    def block(self, rb, exclude_self):
        """Filter values of query rows rb against every database row (the own
        row of D at -inf with ``exclude_self``)."""
        import torch

        S = self.q.F[rb] @ self.d.F.T
        if exclude_self:
            S[torch.arange(rb.numel(), device=S.device), rb] = -math.inf
        return S


def _make_pair(Q, D, iq, idd, cosine: bool, dev) -> _Pair:
    import torch

    w = torch.from_numpy(iq).to(dev)
    if cosine:
        q = _Side(Q, w, w, dev)
        if D is Q:
            return _Pair(q, q, torch.ones_like(w))
        w2 = torch.from_numpy(idd).to(dev)
        return _Pair(q, _Side(D, w2, w2, dev), torch.ones_like(w))
    c = float(idd.min())
    d = _Side(D, torch.tensor(c, dtype=torch.float64, device=dev), None, dev)
    if D is Q and float(iq.max()) <= c * (1 + 1e-6):
        # a self-search whose row scales hardly differ shares D's float16 copy; the
        # query side's a_i and N_i are measured against its own targets q_i w_i
        q = _Side(d.X, w, None, dev, F=d.F)
    else:
        q = _Side(Q, w, None, dev)
    return _Pair(q, d, w * c)


def filtered_knn(Q: np.ndarray, D: np.ndarray, k: int, exclude_self: bool, *,
                 iq: np.ndarray, idd: np.ndarray, cosine: bool = False,
                 device: Optional[str] = None, progress: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Exact k largest s_ij per query row (module docstring), ties to the lower
    index, row i of D left out of query i's with ``exclude_self``.

    Q, D: validated float arrays, C-contiguous (``Q is D`` for a self-search);
    iq, idd: their inverse row norms (float64, 1 for zero rows).
    Returns (sims float32 (nq, k), idx int64 (nq, k)).
    """
    dev = torch_device(device)
    with _full_fp16_accumulation():
        pair = _make_pair(Q, D, iq, idd, cosine, dev)
        out_v, out_i = _search(pair, k, exclude_self, progress)
    return out_v.astype(np.float32), out_i


def _search(pair: _Pair, k: int, exclude_self: bool, progress: bool):
    import torch

    nq, nd = pair.q.X.shape[0], pair.d.X.shape[0]
    n_eff = nd - int(exclude_self)
    out_v, out_i = np.empty((nq, k)), np.empty((nq, k), dtype=np.int64)
    pending = torch.arange(nq, device=pair.q.X.device)
    K = min(n_eff, first_candidates(k))
    last_routes.update(first=0, second=0, exact=0)
    for route in ("first", "second"):
        if pending.numel() == 0 or K >= n_eff:
            break
        before = pending.numel()
        pending = _filter_pass(pair, pending, k, K, exclude_self, out_v, out_i, progress and route == "first")
        last_routes[route] = before - pending.numel()
        K = min(n_eff, K * _GROWTH)
    last_routes["exact"] = int(pending.numel())
    if pending.numel():
        _exact_pass(pair, pending, k, exclude_self, out_v, out_i)
    return out_v, out_i


def _filter_pass(pair: _Pair, rows, k, K, exclude_self, out_v, out_i, progress):
    """One filtered pass over ``rows`` with K candidates each; writes the settled
    rows' results and returns the rows not settled."""
    import torch

    nd = pair.d.X.shape[0]
    bud = _budget(rows.device)
    B = max(1, min(rows.numel(), bud // (2 * nd), bud // (16 * K * pair.dp)))
    left = []
    for s in progress_bar(range(0, rows.numel(), B), desc="knn (float16 filter)", unit="block", enabled=progress):
        rb = rows[s:s + B]
        S = pair.block(rb, exclude_self)
        v, j = torch.topk(S, K, dim=1)
        del S
        j, _ = torch.sort(j, dim=1)
        sv, o = torch.sort(pair.exact(rb, j), dim=1, descending=True, stable=True)
        sj = torch.gather(j, 1, o)
        # the largest possible exact t of any entry left out (its filter value <= v[:, -1])
        vK = v[:, -1].double()
        up = vK + pair.E[rb] + pair.r * vK.abs()
        ok = sv[:, k - 1] * pair.tau[rb] > up + 1e-12 * up.abs()
        good = rb[ok].cpu().numpy()
        out_v[good] = sv[ok, :k].cpu().numpy()
        out_i[good] = sj[ok, :k].cpu().numpy()
        left.append(rb[~ok])
    return torch.cat(left)


def _exact_pass(pair: _Pair, rows, k, exclude_self, out_v, out_i):
    """Rows settled exactly against every database row (all of them candidates)."""
    import torch

    nd = pair.d.X.shape[0]
    dev = rows.device
    step = max(1, min(nd, _budget(dev) // (16 * pair.dp)))
    B = max(1, min(rows.numel(), _budget(dev) // (16 * pair.dp * step)))
    for s in range(0, rows.numel(), B):
        rb = rows[s:s + B]
        S = torch.cat([pair.exact(rb, torch.arange(t, min(nd, t + step), device=dev).expand(rb.numel(), -1))
                       for t in range(0, nd, step)], dim=1)
        if exclude_self:
            S[torch.arange(rb.numel(), device=dev), rb] = -math.inf
        sv, o = torch.sort(S, dim=1, descending=True, stable=True)
        out_v[rb.cpu().numpy()] = sv[:, :k].cpu().numpy()
        out_i[rb.cpu().numpy()] = o[:, :k].cpu().numpy()


def filtered_paired(Q: np.ndarray, D: np.ndarray, k: int, *, iq: np.ndarray, idd: np.ndarray,
                    device: Optional[str] = None, progress: bool = False):
    """For paired rows q_i, d_i by cosine, what :func:`align.knn.paired_search`
    returns: ``(ranks, cos, near_q, near_d)``, the pessimistic rank of d_i among
    D's rows seen from q_i, cos(q_i, d_i) (float64), and the k nearest rows of D to
    q_i and to d_i, row i left out of both (1 <= k <= n - 1)."""
    import torch

    dev = torch_device(device)
    n = Q.shape[0]
    with _full_fp16_accumulation():
        pq = _make_pair(Q, D, iq, idd, True, dev)
        near_q = _search(pq, k, True, progress)[1]
        near_d = _search(_Pair(pq.d, pq.d, pq.tau), k, True, progress)[1]
        ranks = np.empty(n, dtype=np.int64)
        cos = np.empty(n)
        bud = _budget(dev)
        B = max(1, min(n, bud // (3 * n)))
        for s in progress_bar(range(0, n, B), desc="ranks (float16 filter)", unit="block", enabled=progress):
            rb = torch.arange(s, min(n, s + B), device=dev)
            ranks[s:s + rb.numel()], cos[s:s + rb.numel()] = _ranks(pq, rb, bud)
    return ranks, cos, near_q, near_d


def _ranks(pair: _Pair, rb, bud: int):
    """1 + #{j != i : s_ij >= s_ii} and s_ii for the rows rb (cosine, τ = 1)."""
    import torch

    sii = pair.exact(rb, rb[:, None])[:, 0]
    G = pair.E[rb] + pair.r * pair.tmax
    hi, lo = (sii + G).float(), (sii - G).float()
    # float32 thresholds rounded outwards, so every decision below is safe
    hi = torch.where(hi.double() < sii + G, torch.nextafter(hi, torch.full_like(hi, math.inf)), hi)
    lo = torch.where(lo.double() > sii - G, torch.nextafter(lo, torch.full_like(lo, -math.inf)), lo)
    S = pair.block(rb, True)
    count = (S >= hi[:, None]).sum(dim=1)
    r, j = torch.nonzero((S >= lo[:, None]) & (S < hi[:, None]), as_tuple=True)
    del S
    step = max(1, bud // (16 * pair.dp))
    for t in range(0, r.numel(), step):
        rr, jj = r[t:t + step], j[t:t + step]
        ge = pair.exact(rb[rr], jj[:, None])[:, 0] >= sii[rr]
        count.index_add_(0, rr, ge.long())
    return (1 + count).cpu().numpy(), sii.cpu().numpy()
