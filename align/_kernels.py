"""Compiled passes (numba) of the exact kNN engine: order-preserving keys of the
filter values, the per-block row / column / rank passes, and the float64 settling of
candidates. Private to :mod:`align.selfknn`, which documents the method.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numba.extending import overload




# --------------------------------------------------------------------------- keys
def _key(v):  # pragma: no cover - replaced by the overload inside compiled code
    raise NotImplementedError


@overload(_key, inline="always")
def _ol_key(v):
    """bfloat16 bits (int16) -> an int16 with the same order as the values
    (negative values have their magnitude bits flipped); float32 -> itself."""
    if isinstance(v, types.Integer):

        def impl(v):
            return np.int16(v ^ ((v >> np.int16(15)) & np.int16(0x7FFF)))

        return impl

    def impl_f(v):
        return v

    return impl_f


def _decode(v):  # pragma: no cover
    raise NotImplementedError


@overload(_decode, inline="always")
def _ol_decode(v):
    """The float64 value of a filter entry (bfloat16 bits or float32)."""
    if isinstance(v, types.Integer):

        def impl(v):
            u = np.int32(v) & 0xFFFF
            e = (u >> 7) & 0xFF
            m = u & 0x7F
            if e == 0:
                val = math.ldexp(float(m), -133)
            elif e == 255:
                val = math.inf if m == 0 else math.nan
            else:
                val = math.ldexp(float(128 + m), e - 134)
            return -val if (u >> 15) else val

        return impl

    def impl_f(v):
        return np.float64(v)

    return impl_f


def _floor_key(L, like):  # pragma: no cover
    raise NotImplementedError


@overload(_floor_key)
def _ol_floor_key(L, like):
    """The key of the largest filter value <= L (``like`` gives the key type)."""
    if isinstance(like, types.Integer):

        def impl(L, like):
            if L != L:
                return np.int16(32767)
            if L > 3.3895313892515355e38:  # above the largest finite bfloat16
                return np.int16(32640) if L == np.inf else np.int16(32639)
            if L < -3.3895313892515355e38:  # floor is -inf
                return np.int16(-32641)
            # below the normal range: step just under zero
            x = -1e-30 if abs(L) < 1e-30 else L
            m, e = math.frexp(abs(x))
            if x > 0:
                return np.int16(((e + 126) << 7) | (int(math.floor(m * 256.0)) - 128))
            q = int(math.ceil(m * 256.0))
            mag = ((e + 127) << 7) if q == 256 else (((e + 126) << 7) | (q - 128))
            return np.int16(-1 - mag)

        return impl

    def impl_f(L, like):
        f = np.float32(L)
        return np.nextafter(f, np.float32(-np.inf)) if np.float64(f) > L else f

    return impl_f


# --------------------------------------------------------------------------- bounds
# A filter value s̃ of an entry whose exact value is s satisfies
# |s̃ - s| <= E + r |s̃| (E per query row, r the relative output rounding).
@numba.njit(inline="always")
def _inv_up(y, r):  # pragma: no cover - compiled
    """The s̃ with s̃ + r|s̃| = y (f(s̃) = s̃ + r|s̃| is increasing)."""
    return y / (1.0 + r) if y >= 0 else y / (1.0 - r)


@numba.njit(inline="always")
def _inv_down(y, r):  # pragma: no cover - compiled
    """The s̃ with s̃ - r|s̃| = y."""
    return y / (1.0 - r) if y >= 0 else y / (1.0 + r)


@numba.njit(inline="always")
def _admit(tau, E, r):  # pragma: no cover - compiled
    """Smallest filter value that may belong to the exact top k when tau is the
    k-th largest filter value: the k-th exact value is >= tau - E - r|tau|, and
    an entry may reach it iff s̃ + E + r|s̃| >= that."""
    return _inv_up(tau - E - r * abs(tau) - E, r)


# --------------------------------------------------------------------------- candidates
@numba.njit(inline="always")
def _accept(g, v, j, topv, lo, tk, E, r, ci, cv, cn, over):  # pragma: no cover - compiled
    """Offer filter value v of database row j to slot g's candidates."""
    if over[g] or v < lo[g]:
        return
    cap = ci.shape[1]
    m = cn[g]
    if m == cap:  # full: drop what the risen threshold no longer admits
        L = lo[g]
        m = 0
        for t in range(cap):
            if cv[g, t] >= L:
                ci[g, m] = ci[g, t]
                cv[g, m] = cv[g, t]
                m += 1
        cn[g] = m
        if m == cap:
            over[g] = 1
            lo[g] = np.inf
            tk[g] = _floor_key(np.inf, tk[g])
            return
    ci[g, m] = j
    cv[g, m] = v
    cn[g] = m + 1
    k = topv.shape[1]
    if v > topv[g, k - 1]:
        p = k - 1
        while p > 0 and topv[g, p - 1] < v:
            topv[g, p] = topv[g, p - 1]
            p -= 1
        topv[g, p] = v
        L = _admit(np.float64(topv[g, k - 1]), E[g], r)
        if L > lo[g]:
            lo[g] = L
            tk[g] = _floor_key(L, tk[g])


# Entries compared with a threshold at once (one vectorised OR); a chunk with a
# hit is then read entry by entry. Tiles are passed flat and indexed with
# unsigned integers, which lets the compiler vectorise (no negative-index wrap).
_CH = 64


@numba.njit(inline="always")
def _u(x):  # pragma: no cover - compiled
    return np.uint64(x)


@numba.njit(inline="always")
def _chunk_max(S, b0, w):  # pragma: no cover - compiled
    """Largest key among S[b0 : b0 + w] (one vectorised reduction for w = _CH)."""
    mx = _key(S[b0])
    if w == _CH:
        for jj in range(1, _CH):
            mx = max(mx, _key(S[b0 + _u(jj)]))
    else:
        for jj in range(1, w):
            mx = max(mx, _key(S[b0 + _u(jj)]))
    return mx


@numba.njit(parallel=True, cache=True)
def _row_pass(S, br, bc, q0, c0, excl, topv, lo, tk, E, r, ci, cv, cn, over):  # pragma: no cover
    """Candidates of slots q0 + i from row i of the (br, bc) block S (flat;
    database rows c0 + j); database row excl[slot] is skipped."""
    for i in numba.prange(br):
        g = q0 + i
        if over[g]:
            continue
        t = tk[g]
        ex = excl[g] - c0
        base = _u(i * bc)
        for j0 in range(0, bc, _CH):
            w = min(bc - j0, _CH)
            if _chunk_max(S, base + _u(j0), w) < t:
                continue
            for j in range(j0, j0 + w):
                x = S[base + _u(j)]
                if _key(x) >= t and j != ex:
                    _accept(g, _decode(x), c0 + j, topv, lo, tk, E, r, ci, cv, cn, over)
                    t = tk[g]


@numba.njit(parallel=True, cache=True)
def _col_pass(S, br, bc, r0, c0, chunks, topv, lo, tk, E, r, ci, cv, cn, over):  # pragma: no cover
    """Candidates of rows c0 + j from column j of the flat (br, bc) block
    S = U_r U_cᵀ (symmetric search, off the diagonal): each thread owns a range of
    columns and reads it row by row. A chunk of columns is looked at entry by entry
    only when its largest entry reaches the smallest of its columns' thresholds
    (taken at the start: thresholds only rise, so it stays a safe bound)."""
    nch = (bc + _CH - 1) // _CH
    cmin = np.empty(nch, dtype=tk.dtype)
    for c in range(nch):
        m = tk[c0 + c * _CH]
        for j in range(c * _CH, min(bc, (c + 1) * _CH)):
            m = min(m, tk[c0 + j])
        cmin[c] = m
    per = (nch + chunks - 1) // chunks
    for ch in numba.prange(chunks):
        for i in range(br):
            base = _u(i * bc)
            for c in range(ch * per, min(nch, (ch + 1) * per)):
                j0 = c * _CH
                w = min(bc - j0, _CH)
                if _chunk_max(S, base + _u(j0), w) < cmin[c]:
                    continue
                for j in range(j0, j0 + w):
                    x = S[base + _u(j)]
                    if _key(x) >= tk[c0 + j]:
                        _accept(c0 + j, _decode(x), r0 + i, topv, lo, tk, E, r, ci, cv, cn, over)


@numba.njit(parallel=True, cache=True)
def _rank_row_pass(S, br, bc, q0, c0, excl, ku, kl, cnt, ai, an, topv, lo, tk, E, r, ci, cv, cn,
                   over):  # pragma: no cover
    """:func:`_row_pass` plus the rank of each slot's own row excl[slot]: entries
    with key > ku[slot] count for certain, keys in [kl, ku] are kept (ai, an) to be
    settled exactly. A slot whose kept entries overflow is marked in ``over``."""
    cap_a = ai.shape[1]
    for i in numba.prange(br):
        g = q0 + i
        if over[g]:
            continue
        t = tk[g]
        u = ku[g]
        lw = kl[g]
        low = min(t, lw)
        ex = excl[g] - c0
        base = _u(i * bc)
        c = 0
        for j0 in range(0, bc, _CH):
            w = min(bc - j0, _CH)
            if _chunk_max(S, base + _u(j0), w) < low:
                continue
            for j in range(j0, j0 + w):
                x = S[base + _u(j)]
                kx = _key(x)
                if kx > u:
                    c += 1
                elif kx >= lw and j != ex:
                    m = an[g]
                    if m == cap_a:
                        over[g] = 1
                        break
                    ai[g, m] = c0 + j
                    an[g] = m + 1
                if kx >= t and j != ex:
                    _accept(g, _decode(x), c0 + j, topv, lo, tk, E, r, ci, cv, cn, over)
                    t = tk[g]
                    low = min(t, lw)
            if over[g]:
                break
        cnt[g] += c


# --------------------------------------------------------------------------- exact values
@numba.njit(inline="always")
def _sim(Xq, iq, q, Xd, idd, j):  # pragma: no cover - compiled
    """The exact similarity: Σ_t (x_qt iq_q)(x_jt idd_j) in float64, one fixed order
    (scaled term by term, so float64 rows beyond float32's range cannot overflow)."""
    a = iq[q]
    b = idd[j]
    acc = 0.0
    for t in range(Xq.shape[1]):
        acc += (np.float64(Xq[q, t]) * a) * (np.float64(Xd[j, t]) * b)
    return acc


@numba.njit(inline="always")
def _insert(vals, ids, v, j):  # pragma: no cover - compiled
    """Insert (v, j) into lists sorted by (value desc, index asc), if it belongs."""
    p = vals.shape[0] - 1
    if v < vals[p] or (v == vals[p] and j >= ids[p]):
        return
    while p > 0 and (vals[p - 1] < v or (vals[p - 1] == v and ids[p - 1] > j)):
        vals[p] = vals[p - 1]
        ids[p] = ids[p - 1]
        p -= 1
    vals[p] = v
    ids[p] = j


@numba.njit(parallel=True, cache=True)
def _refine(Xq, iq, Xd, idd, qrow, lo, ci, cv, cn, over, out_v, out_i):  # pragma: no cover
    """Exact top k of each slot (not overflowed) among its kept candidates."""
    for g in numba.prange(qrow.shape[0]):
        if over[g]:
            continue
        q = qrow[g]
        for t in range(out_v.shape[1]):
            out_v[g, t] = -np.inf
            out_i[g, t] = np.iinfo(np.int64).max
        L = lo[g]
        for t in range(cn[g]):
            if cv[g, t] >= L:
                j = ci[g, t]
                _insert(out_v[g], out_i[g], _sim(Xq, iq, q, Xd, idd, j), j)


@numba.njit(parallel=True, cache=True)
def _diag(Xq, iq, Xd, idd, out):  # pragma: no cover
    for g in numba.prange(out.shape[0]):
        out[g] = _sim(Xq, iq, g, Xd, idd, g)


@numba.njit(parallel=True, cache=True)
def _settle_ranks(Xq, iq, Xd, idd, qrow, sii, cnt, ai, an, over, ranks):  # pragma: no cover
    for g in numba.prange(qrow.shape[0]):
        if over[g]:
            continue
        q = qrow[g]
        r = 1 + cnt[g]
        for t in range(an[g]):
            j = ai[g, t]
            if _sim(Xq, iq, q, Xd, idd, j) >= sii[q]:
                r += 1
        ranks[q] = r


@numba.njit(parallel=True, cache=True)
def _exact_rows(Xq, iq, Xd, idd, qrow, excl, sii, do_rank, out_v, out_i, ranks):  # pragma: no cover
    """Last resort: every database row's exact value for the given query rows."""
    nd = Xd.shape[0]
    for g in numba.prange(qrow.shape[0]):
        q = qrow[g]
        for t in range(out_v.shape[1]):
            out_v[g, t] = -np.inf
            out_i[g, t] = np.iinfo(np.int64).max
        r = 1
        for j in range(nd):
            if j == excl[g]:
                continue
            v = _sim(Xq, iq, q, Xd, idd, j)
            if do_rank and v >= sii[q]:
                r += 1
            _insert(out_v[g], out_i[g], v, j)
        if do_rank:
            ranks[q] = r
