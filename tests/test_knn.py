import numpy as np
import pytest
import torch

from align import knn
from align.device import faiss

BACKENDS = ["torch"] + (["faiss"] if faiss() is not None else [])


def brute(Q, D, k, exclude_self, metric="cosine"):
    """Reference: full similarity matrix, lexicographic (-sim, index) sort."""
    Q = Q.astype(np.float32)
    D = D.astype(np.float32)
    if metric == "cosine":
        Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
        D = D / np.linalg.norm(D, axis=1, keepdims=True)
    S = Q @ D.T
    if exclude_self:
        np.fill_diagonal(S, -np.inf)
    ar = np.broadcast_to(np.arange(D.shape[0]), S.shape)
    order = np.lexsort((ar, -S), axis=1)[:, :k]
    return np.take_along_axis(S, order, 1), order


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("metric", ["cosine", "ip"])
def test_matches_bruteforce_random(backend, metric):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 16))
    s, i = knn(X, 7, metric=metric, backend=backend, block_size=64)
    bs, bi = brute(X, X, 7, True, metric)
    assert i.dtype == np.int64 and s.dtype == np.float32
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_allclose(s, bs, rtol=1e-5, atol=1e-6)
    assert (np.diff(s, axis=1) <= 0).all()  # best first


@pytest.mark.parametrize("backend", BACKENDS)
def test_duplicates_ties_lower_index_first_and_self_by_index(backend):
    rng = np.random.default_rng(2)
    base = rng.standard_normal((12, 5)).astype(np.float32)
    X = base[rng.integers(0, 12, 150)]  # many exact duplicates -> exact ties
    for k in (1, 3, 9, 20):
        s, i = knn(X, k, backend=backend, block_size=17)
        _, bi = brute(X, X, k, True)
        np.testing.assert_array_equal(i, bi)
        assert not (i == np.arange(len(X))[:, None]).any(), "self must be excluded by index"
    # A duplicate of row r is a valid neighbour of r, at similarity 1.
    r = 0
    dup = np.flatnonzero((X == X[r]).all(axis=1))
    dup = dup[dup != r]
    if dup.size:
        s, i = knn(X, 1, backend=backend)
        assert i[r, 0] == dup.min() and s[r, 0] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_database_queries_and_exclude_self_with_database(backend):
    rng = np.random.default_rng(3)
    D = rng.standard_normal((200, 8))
    Q = rng.standard_normal((33, 8))
    _, i = knn(Q, 5, database=D, backend=backend)
    np.testing.assert_array_equal(i, brute(Q, D, 5, False)[1])
    # paired sets with exclude_self: row i never returns database row i
    _, i = knn(D, 4, database=D, exclude_self=True, backend=backend)
    np.testing.assert_array_equal(i, brute(D, D, 4, True)[1])
    # k = n - 1 (largest allowed with self excluded) returns every other row
    _, i = knn(D[:10], 9, backend=backend)
    assert (np.sort(i, axis=1) == np.array([[j for j in range(10) if j != r] for r in range(10)])).all()


def test_backends_identical_and_torch_input():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((257, 12)).astype(np.float32)
    X[100] = X[3]
    ref = knn(X, 6, backend="torch")
    if faiss() is not None:
        got = knn(X, 6, backend="faiss")
        np.testing.assert_array_equal(ref[1], got[1])
    t = knn(torch.from_numpy(X), 6, backend="torch")
    np.testing.assert_array_equal(ref[1], t[1])
    # float64 and non-contiguous input give the same neighbours
    Xf = np.asfortranarray(X.astype(np.float64))
    np.testing.assert_array_equal(ref[1], knn(Xf, 6, backend="torch")[1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(queries=np.ones((5, 3)), k=5), "k=5"),
        (dict(queries=np.ones((5, 3)), k=0), "k must be >= 1"),
        (dict(queries=np.random.rand(5, 3), k=2.5), "k must be an integer"),
        (dict(queries=np.random.rand(5, 3), k=2, metric="l2"), "metric"),
        (dict(queries=np.random.rand(5, 3), k=2, backend="annoy"), "backend"),
        (dict(queries=np.random.rand(5, 3), k=2, database=np.random.rand(5, 4)), "same width"),
        (dict(queries=np.random.rand(5, 3), k=2, database=np.random.rand(6, 3), exclude_self=True), "exclude_self"),
        (dict(queries=np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]), k=1), "all-zero row"),
        (dict(queries=np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 1.0]]), k=1), "non-finite"),
        (dict(queries=np.zeros((0, 3)), k=1), "empty"),
        (dict(queries=np.arange(12).reshape(4, 3), k=1), "integer dtype"),
        (dict(queries=np.random.rand(6), k=1), "2-D"),
        (dict(queries=np.random.rand(9, 3), k=2, block_size=0), "block_size"),
        (dict(queries=np.random.rand(9, 3), k=2, block_size=-3, backend="symmetric"), "block_size"),
        (dict(queries=np.random.rand(9, 3), k=2, block_size=2.5), "block_size"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        knn(**kwargs)


def test_torch_fallback_when_faiss_missing(monkeypatch):
    import importlib

    # align.knn (the function) shadows the submodule of the same name
    mod = importlib.import_module("align.knn")

    monkeypatch.setattr(mod, "faiss", lambda: None)
    rng = np.random.default_rng(5)
    X = rng.standard_normal((120, 6))
    _, i = knn(X, 3)  # backend="auto" must fall back to torch
    np.testing.assert_array_equal(i, brute(X, X, 3, True)[1])
    with pytest.raises(ValueError, match="faiss is not installed"):
        knn(X, 3, backend="faiss")


# ---------------------------------------------------------------------------
# The symmetric engine (align.selfknn): half of X Xᵀ, each block read both ways.
# Small blocks make every case cross many block boundaries, with a ragged last block.


@pytest.mark.parametrize("n, block", [(300, 64), (257, 50), (130, 200)])
@pytest.mark.parametrize("metric", ["cosine", "ip"])
def test_symmetric_matches_bruteforce(n, block, metric):
    rng = np.random.default_rng(n)
    X = rng.standard_normal((n, 16)) * np.geomspace(1, 0.1, 16)
    s, i = knn(X, 7, metric=metric, backend="symmetric", block_size=block)
    bs, bi = brute(X, X, 7, True, metric)
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_allclose(s, bs, rtol=1e-5, atol=1e-6)
    assert (np.diff(s, axis=1) <= 0).all()


def test_symmetric_ties_lower_index_first_and_self_by_index():
    """Exact duplicates tie exactly; the symmetric engine settles them by index,
    as FAISS and torch do, and excludes self by index, not by value."""
    rng = np.random.default_rng(2)
    base = rng.standard_normal((12, 5)).astype(np.float32)
    X = base[rng.integers(0, 12, 150)]
    for k in (1, 3, 9, 20, 148):
        _, i = knn(X, k, backend="symmetric", block_size=17)
        np.testing.assert_array_equal(i, brute(X, X, k, True)[1])
        assert not (i == np.arange(len(X))[:, None]).any()


def test_symmetric_largest_k_and_agreement_with_faiss_engine():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((40, 6)).astype(np.float32)
    _, i = knn(X, 39, backend="symmetric", block_size=8)  # k = n - 1: every other row
    assert (np.sort(i, axis=1) == np.array([[j for j in range(40) if j != r] for r in range(40)])).all()
    Y = rng.standard_normal((700, 24)).astype(np.float32)
    other = "faiss" if faiss() is not None else "torch"
    np.testing.assert_array_equal(knn(Y, 10, backend="symmetric", block_size=128)[1], knn(Y, 10, backend=other)[1])


def test_symmetric_is_for_self_search_only():
    X = np.random.default_rng(0).standard_normal((20, 4))
    with pytest.raises(ValueError, match="backend='symmetric'"):
        knn(X, 3, database=X, backend="symmetric")
    with pytest.raises(ValueError, match="backend='symmetric'"):
        knn(X, 3, exclude_self=False, backend="symmetric")


def test_auto_takes_the_symmetric_engine_for_large_self_search(monkeypatch):
    import importlib

    mod = importlib.import_module("align.knn")
    sel = importlib.import_module("align.selfknn")
    monkeypatch.setattr(mod, "cuda_available", lambda: False)  # the CPU's choice
    calls = []
    real = sel.self_knn
    monkeypatch.setattr(sel, "self_knn", lambda *a, **kw: calls.append(a[0].shape) or real(*a, **kw))
    monkeypatch.setattr(mod, "_SYM_MIN_ROWS", 100)
    X = np.random.default_rng(1).standard_normal((150, 8))
    _, i = knn(X, 5)
    np.testing.assert_array_equal(i, brute(X, X, 5, True)[1])
    assert calls == [(150, 8)]
    knn(X, 5, database=X)  # not a self-search: the general engine
    knn(X[:99], 5)  # below the threshold
    assert len(calls) == 1


@pytest.mark.parametrize("n", [700, 258])  # ragged last block; a last block of 2 rows < k
def test_symmetric_equals_torch_engine_with_duplicates_and_ties(n):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((n, 16)).astype(np.float32)
    X[5] = X[9]  # a duplicate row: still a valid neighbour of its twin
    X[200:210] = X[3]  # many exact ties
    s, i = knn(X, 7, backend="symmetric", block_size=128)
    ref_s, ref_i = knn(X, 7, backend="torch")
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(s, ref_s, atol=1e-5)
    assert i[9, 0] == 5 and i[5, 0] == 9


# ---------------------------------------------------------------------------
# The exact engines of align.selfknn: a bfloat16 or float32 filter, every decision
# on float64 values. Each filter precision must give the float64 reference's
# neighbours and ranks exactly, and both must equal the reference paths.

from align import selfknn  # noqa: E402
from align import _kernels  # noqa: E402
from align.knn import inverse_norms, normalize_rows, paired_search, self_neighbors  # noqa: E402

PRECISIONS = ["bf16", "fp32"]


def exact_reference(X, k, Q=None, unit32=False):
    """Top-k by (float64 cosine desc, index asc), self excluded; cosines rounded to
    12 digits so equal rows tie exactly whatever the BLAS summation order.

    unit32: the rows as knn() sees them (normalised to float32 unit rows first),
    else the float64 cosine of the input rows (as the metrics and evaluate see them)."""
    if unit32:
        from align.knn import normalize_rows

        D = normalize_rows(np.asarray(X, dtype=np.float32)).astype(np.float64)
    else:
        D = X.astype(np.float64)
        D = D / np.linalg.norm(D, axis=1, keepdims=True)
    Qn = D if Q is None else Q.astype(np.float64) / np.linalg.norm(Q.astype(np.float64), axis=1, keepdims=True)
    S = np.round(Qn @ D.T, 12)
    np.fill_diagonal(S, -np.inf)
    ar = np.broadcast_to(np.arange(len(D)), S.shape)
    order = np.lexsort((ar, -S), axis=1)[:, :k]
    return np.take_along_axis(S, order, 1), order


@pytest.fixture(params=PRECISIONS)
def precision(request, monkeypatch):
    """The CPU engines (also where CUDA would take over), in each filter precision."""
    import importlib

    monkeypatch.setattr(importlib.import_module("align.knn"), "cuda_available", lambda: False)
    monkeypatch.setattr(selfknn, "FILTER", request.param)
    return request.param


@pytest.mark.parametrize("n, d, k, block", [(300, 16, 7, 64), (257, 48, 10, 50), (40, 8, 39, 16), (130, 5, 1, 200)])
def test_exact_self_search_equals_float64_reference(precision, n, d, k, block):
    rng = np.random.default_rng(n + d)
    X = (rng.standard_normal((n, d)) * np.geomspace(1, 0.05, d)).astype(np.float32)
    s, i = knn(X, k, backend="symmetric", block_size=block)
    rs, ri = exact_reference(X, k, unit32=True)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_allclose(s, rs, atol=1e-6)


def test_exact_self_search_ties_and_duplicates(precision):
    rng = np.random.default_rng(2)
    base = rng.standard_normal((12, 5)).astype(np.float32)
    X = base[rng.integers(0, 12, 150)]  # each row has ~12 exact duplicates
    for k in (1, 9, 20, 149):
        _, i = knn(X, k, backend="symmetric", block_size=17)
        np.testing.assert_array_equal(i, exact_reference(X, k, unit32=True)[1])
        assert not (i == np.arange(len(X))[:, None]).any()


def test_exact_self_search_float64_input_beyond_float32_range(precision):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 12)) * 1e300  # only float64 holds these
    idx = self_neighbors(X, 6, min_rows=1)
    np.testing.assert_array_equal(idx, exact_reference(X / 1e300, 6)[1])


def test_self_neighbors_reads_the_input_as_is(precision):
    """The symmetric path (no unit-row copy) and the float32 unit-row path agree."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((500, 24)) * rng.uniform(0.1, 10, (500, 1))
    np.testing.assert_array_equal(self_neighbors(X, 8, min_rows=1), exact_reference(X, 8)[1])
    np.testing.assert_array_equal(self_neighbors(X.astype(np.float32), 8, min_rows=10**9),
                                  exact_reference(X.astype(np.float32), 8)[1])


def _force_overflow(monkeypatch, level):
    """Buffers so small that rows overflow: redone with float32 (level 2), or also
    overflowing there and settled against every row (level 3)."""
    if level == 2:
        monkeypatch.setattr(selfknn, "_capacity", lambda k, nd, base: min(nd, k + 1 if base == selfknn._CAP1_MIN else 4096))
    else:
        monkeypatch.setattr(selfknn, "_capacity", lambda k, nd, base: min(nd, k + 1))
    monkeypatch.setattr(selfknn, "_AMB1", 1)
    monkeypatch.setattr(selfknn, "_AMB2", 4096 if level == 2 else 1)


@pytest.mark.parametrize("level", [2, 3])
def test_rows_that_overflow_are_redone_exactly(precision, monkeypatch, level):
    rng = np.random.default_rng(5)
    base = rng.standard_normal((30, 6)).astype(np.float32)
    X = base[rng.integers(0, 30, 400)] + 1e-3 * rng.standard_normal((400, 6)).astype(np.float32)
    X[::7] = X[3]
    ref = exact_reference(X, 5, unit32=True)[1]
    calls = []
    real = selfknn._redo
    monkeypatch.setattr(selfknn, "_redo", lambda *a, **kw: calls.append(len(a[4])) or real(*a, **kw))
    _force_overflow(monkeypatch, level)
    _, i = knn(X, 5, backend="symmetric", block_size=64)
    np.testing.assert_array_equal(i, ref)
    assert calls and calls[0] > 0  # the overflow path did run


@pytest.mark.parametrize("d", [3, 64, 768])
def test_filter_error_stays_within_its_bound(precision, d):
    """|s̃ - s| <= E_i + r |s̃| for every entry of a block product (the bound every
    decision relies on), on isotropic and on strongly anisotropic rows."""
    rng = np.random.default_rng(d)
    for shift in (0.0, 3.0):
        X = (rng.standard_normal((400, d)) + shift * rng.standard_normal(d)).astype(np.float32)
        inv = inverse_norms(X)
        rep = selfknn.Rep(X, inv, precision)
        E = rep.eps(slice(None), rep)
        approx = (rep.T @ rep.T.T).double().numpy()
        U = X.astype(np.float64) * inv[:, None]
        err = np.abs(approx - U @ U.T)
        assert (err <= E[:, None] + rep.r * np.abs(approx)).all()


def test_bfloat16_keys_order_like_values_and_floor_keys_are_exact():
    """Every bfloat16 bit pattern: keys sort like the values, decoding is exact, and
    the floor key of a float is the key of the largest bfloat16 <= it (below 1e-30
    in magnitude it may be smaller: more candidates, never fewer)."""
    import numba

    @numba.njit
    def keys(bits):
        out = np.empty(bits.size, dtype=np.int16)
        val = np.empty(bits.size)
        for t in range(bits.size):
            out[t] = _kernels._key(bits[t])
            val[t] = _kernels._decode(bits[t])
        return out, val

    @numba.njit
    def floors(L):
        out = np.empty(L.size, dtype=np.int16)
        for t in range(L.size):
            out[t] = _kernels._floor_key(L[t], np.int16(0))
        return out

    bits = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
    vals_ref = torch.from_numpy(bits.copy()).view(torch.bfloat16).double().numpy()
    k, vals = keys(bits)
    finite = ~np.isnan(vals_ref)
    np.testing.assert_array_equal(vals[finite], vals_ref[finite])
    order = np.argsort(k[finite], kind="stable")
    assert (np.diff(vals_ref[finite][order]) >= 0).all()  # keys sort like values
    rng = np.random.default_rng(0)
    L = np.concatenate([rng.standard_normal(3000), vals_ref[finite][::97], 1e-3 * rng.standard_normal(300),
                        [0.0, -0.0, 1e-31, -1e-31, 3.3e38, 3.4e38, -3.4e38, np.inf, -np.inf]])
    fk = floors(L)
    kf, vf = k[finite], vals_ref[finite]
    for x, f in zip(L, fk):
        below = vf <= x
        if abs(x) > 1e-30:
            assert f == kf[below].max()
        if below.any():
            assert f <= kf[below].max()  # never above the true floor: no candidate lost


def test_symmetric_backend_needs_numba(monkeypatch):
    import importlib.util

    mod = importlib.import_module("align.knn")
    real = importlib.util.find_spec
    monkeypatch.setattr(mod.importlib.util, "find_spec", lambda name, *a: None if name == "numba" else real(name, *a))
    X = np.random.default_rng(0).standard_normal((50, 4))
    with pytest.raises(ValueError, match="pip install numba"):
        knn(X, 3, backend="symmetric")
    # auto falls back to FAISS / torch, and evaluate to its torch path
    np.testing.assert_array_equal(knn(X, 3)[1], brute(X, X, 3, True)[1])
    assert paired_search(X, X, 3) is None


# ---------------------------------------------------------------------------
# translate.evaluate: the CPU path (one blocked pass over Ŷ Yᵀ + the symmetric
# search of Y) equals the reference path (true_match_ranks + translation_mutual_knn).


def _reference_evaluate(Yh, Y, k):
    from translate.evaluate import translation_mutual_knn, true_match_ranks

    Yh_n = np.ascontiguousarray(Yh / np.linalg.norm(Yh.astype(np.float64), axis=1, keepdims=True), dtype=np.float32)
    Y_n = np.ascontiguousarray(Y / np.linalg.norm(Y.astype(np.float64), axis=1, keepdims=True), dtype=np.float32)
    ranks, cos = true_match_ranks(Yh_n, Y_n)
    return ranks, cos, translation_mutual_knn(Yh_n, Y_n, k)


def _pairs(kind, rng, n=400, d=24):
    Y = rng.standard_normal((n, d)).astype(np.float32)
    if kind == "noisy":
        return Y + 0.8 * rng.standard_normal((n, d)).astype(np.float32), Y
    if kind == "chance":  # unrelated: every true match sits in the bulk
        return rng.standard_normal((n, d)).astype(np.float32), Y
    if kind == "ties":  # duplicate pool rows; some translations exact
        base = rng.standard_normal((25, d)).astype(np.float32)
        Y = base[rng.integers(0, 25, n)]
        Yh = Y + 0.3 * rng.standard_normal((n, d)).astype(np.float32)
        Yh[::3] = Y[::3]
        return Yh, Y
    Yh, Y = _pairs("noisy", rng, n, d)  # float64 input
    return Yh.astype(np.float64), Y.astype(np.float64)


@pytest.mark.parametrize("kind", ["noisy", "chance", "ties", "float64"])
@pytest.mark.parametrize("block", [None, 37])
def test_paired_search_equals_reference_path(precision, kind, block):
    k = 6
    Yh, Y = _pairs(kind, np.random.default_rng(len(kind)))
    ranks, cos, near_hat, near_true = paired_search(Yh, Y, k, block)
    r_ranks, r_cos, r_mknn = _reference_evaluate(Yh, Y, k)
    np.testing.assert_array_equal(ranks, r_ranks)
    np.testing.assert_allclose(cos, r_cos, atol=1e-6)
    from translate.evaluate import _list_overlap

    assert _list_overlap(near_hat, near_true) / (len(Y) * k) == pytest.approx(r_mknn, abs=1e-6)
    # the neighbour lists themselves: exact, y_i left out of both
    np.testing.assert_array_equal(near_true, exact_reference(Y, k)[1])
    ref_hat = exact_reference(Y, k, Q=Yh)[1]  # diagonal (y_i for ŷ_i) excluded
    np.testing.assert_array_equal(near_hat, ref_hat)


@pytest.mark.parametrize("level", [2, 3])
def test_evaluate_rows_that_overflow_are_redone_exactly(precision, monkeypatch, level):
    from translate.evaluate import evaluate

    rng = np.random.default_rng(9)
    for kind in ("ties", "chance"):
        Yh, Y = _pairs(kind, rng, n=300)
        ref = evaluate(Yh, Y, k=5)
        with monkeypatch.context() as m:
            _force_overflow(m, level)
            got = evaluate(Yh, Y, k=5, block_size=64)
        assert got == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("n", [2, 3, 11])
def test_evaluate_tiny_pools(precision, n):
    from translate.evaluate import evaluate

    Yh, Y = _pairs("noisy", np.random.default_rng(n), n=n, d=5)
    got = evaluate(Yh, Y, k=10)
    r_ranks, r_cos, r_mknn = _reference_evaluate(Yh, Y, min(10, n - 1))
    assert got["mean_rank"] == pytest.approx(r_ranks.mean(), abs=1e-12)
    assert got["mean_cos"] == pytest.approx(r_cos.mean(), abs=1e-6)
    assert got["mutual_knn"] == pytest.approx(r_mknn, abs=1e-6)


# --------------------------------------------------------------------------- both ways
def cross_reference(A, B, k, metric):
    """Top-k of each row of A among B's rows by (float64 similarity desc, index asc),
    similarities rounded to 12 digits so equal rows tie exactly."""
    A64, B64 = A.astype(np.float64), B.astype(np.float64)
    if metric == "cosine":
        A64 = A64 / np.linalg.norm(A64, axis=1, keepdims=True)
        B64 = B64 / np.linalg.norm(B64, axis=1, keepdims=True)
    S = np.round(A64 @ B64.T, 12)
    order = np.lexsort((np.broadcast_to(np.arange(len(B)), S.shape), -S), axis=1)[:, :k]
    return np.take_along_axis(S, order, 1), order


def _tied_sets(rng, na, nb, d):
    """Rows drawn from a small base with duplicates on both sides (exact ties)."""
    base = rng.standard_normal((25, d)).astype(np.float32)
    A = base[rng.integers(0, 25, na)]
    B = np.concatenate([base[rng.integers(0, 25, nb // 2)],
                        rng.standard_normal((nb - nb // 2, d)).astype(np.float32)])
    return A, B


@pytest.mark.parametrize("metric", ["cosine", "ip"])
@pytest.mark.parametrize("na, nb, d, k", [(300, 170, 12, 7), (90, 400, 40, 10), (129, 131, 5, 1)])
def test_knn_both_equals_float64_reference(precision, monkeypatch, metric, na, nb, d, k):
    import importlib

    knn_module = importlib.import_module("align.knn")  # align.knn is also the function's name
    monkeypatch.setattr(knn_module, "_SYM_BLOCK", 64)  # several blocks each way
    A, B = _tied_sets(np.random.default_rng(na + nb), na, nb, d)
    (sa, ia), (sb, ib) = knn_module.knn_both(A, B, k, metric=metric)
    for (s, i), (Q, D) in (((sa, ia), (A, B)), ((sb, ib), (B, A))):
        rs, ri = cross_reference(Q, D, k, metric)
        np.testing.assert_array_equal(i, ri)
        np.testing.assert_allclose(s, rs, rtol=1e-6, atol=1e-6)
        assert s.dtype == np.float32 and i.dtype == np.int64


def test_knn_both_one_pass_equals_two_searches(precision):
    """The one-pass engine and two knn() calls (the route for k = the smaller side,
    and where a GPU is present) give the same lists."""
    from align.knn import knn_both

    A, B = _tied_sets(np.random.default_rng(7), 200, 150, 16)
    for k in (5, 150):
        (_, ia), (_, ib) = knn_both(A, B, k)
        np.testing.assert_array_equal(ia, knn(A, k, database=B, exclude_self=False)[1])
        np.testing.assert_array_equal(ib, knn(B, k, database=A, exclude_self=False)[1][:, :k])


@pytest.mark.parametrize("level", [2, 3])
def test_knn_both_rows_that_overflow_are_redone_exactly(precision, monkeypatch, level):
    from align.knn import knn_both

    A, B = _tied_sets(np.random.default_rng(8), 260, 240, 6)
    B[::5] = B[1]
    _force_overflow(monkeypatch, level)
    (_, ia), (_, ib) = knn_both(A, B, 5)
    np.testing.assert_array_equal(ia, cross_reference(A, B, 5, "cosine")[1])
    np.testing.assert_array_equal(ib, cross_reference(B, A, 5, "cosine")[1])


@pytest.mark.parametrize("kwargs, match", [
    ({"B": np.ones((10, 3), np.float32)}, "same width"),
    ({"k": 11}, "k=11 is too large"),
    ({"k": 0}, "k"),
    ({"metric": "l2"}, "metric"),
    ({"A": np.zeros((10, 4), np.float32)}, "A"),
])
def test_knn_both_bad_input(kwargs, match):
    from align.knn import knn_both

    args = {"A": np.ones((12, 4), np.float32), "B": np.ones((10, 4), np.float32), "k": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        knn_both(**args)


# -- the float16-filter engine (CUDA's "auto"; run here on torch's CPU device)
def _filtered(Q, D, k, exclude_self, device="cpu", cosine=False):
    from align.gpuknn import filtered_knn

    Q = np.ascontiguousarray(Q, dtype=Q.dtype if cosine else np.float32)
    D = Q if D is None else np.ascontiguousarray(D, dtype=D.dtype if cosine else np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):  # zero rows: scale 1
        iq, idd = (np.nan_to_num(inverse_norms(A), posinf=1.0, nan=1.0) for A in (Q, D))
    return filtered_knn(Q, D, k, exclude_self, iq=iq, idd=idd, device=device, cosine=cosine)


def _f64_reference(Q, D, k, exclude_self):
    S = Q.astype(np.float64) @ D.astype(np.float64).T
    if exclude_self:
        np.fill_diagonal(S, -np.inf)
    ar = np.broadcast_to(np.arange(len(D)), S.shape)
    order = np.lexsort((ar, -S), axis=1)[:, :k]
    return np.take_along_axis(S, order, 1), order


@pytest.mark.parametrize("route", ["first", "second", "exact"])
def test_filtered_engine_equals_float64_reference(monkeypatch, route):
    """Self-search of unit rows with duplicates, and an inner-product search of rows
    with norms over two decades; each route forced in turn (the first pass keeps
    k + 1 candidates for 'second', and the second too for 'exact')."""
    import align.gpuknn as g

    if route != "first":
        monkeypatch.setattr(g, "first_candidates", lambda k: k + 1)
    if route == "exact":
        monkeypatch.setattr(g, "_GROWTH", 1)
    rng = np.random.default_rng(11)
    Z = rng.standard_normal((600, 8))
    X = (Z @ rng.standard_normal((8, 40)) + 0.3 * rng.standard_normal((600, 40))).astype(np.float32)
    X[::9] = X[4]
    U = normalize_rows(X)
    for Q, D, excl in ((U, None, True), (X[:150] * rng.uniform(0.1, 10, (150, 1)), X * rng.uniform(0.1, 10, (600, 1)), False)):
        Q = Q.astype(np.float32)
        Dr = Q if D is None else D.astype(np.float32)
        s, i = _filtered(Q, D, 7, excl)
        rs, ri = _f64_reference(Q, Dr, 7, excl)
        np.testing.assert_array_equal(i, ri)
        np.testing.assert_allclose(s, rs, rtol=1e-6, atol=1e-7)
        assert g.last_routes[route] > 0, g.last_routes


def test_filtered_engine_tiny_pools_and_zero_rows():
    rng = np.random.default_rng(12)
    X = rng.standard_normal((9, 4)).astype(np.float32)
    for k in (1, 8):
        np.testing.assert_array_equal(_filtered(normalize_rows(X), None, k, True)[1],
                                      _f64_reference(normalize_rows(X), normalize_rows(X), k, True)[1])
    D = X.copy()
    D[2] = 0.0  # "ip" allows zero rows
    np.testing.assert_array_equal(_filtered(X, D, 9, False)[1], _f64_reference(X, D, 9, False)[1])


def test_filtered_engine_agrees_with_symmetric_engine():
    rng = np.random.default_rng(13)
    X = (rng.standard_normal((700, 32)) * np.geomspace(1, 0.05, 32)).astype(np.float32)
    U = normalize_rows(X)
    s, i = _filtered(U, None, 10, True)
    s2, i2 = knn(X, 10, backend="symmetric")
    np.testing.assert_array_equal(i, i2)
    np.testing.assert_array_equal(s, s2)  # both: the float64 value of the float32 unit rows, rounded


def test_filtered_engine_cosine_reads_the_input_as_is():
    """cosine=True on raw rows (float64 beyond float32's range too) equals the CPU
    symmetric engine, which scales the same way inside its float64 sums."""
    rng = np.random.default_rng(15)
    X = rng.standard_normal((400, 24)) * rng.uniform(0.1, 10, (400, 1))
    X[::13] = X[2]
    for A in (X, X * 1e300, X.astype(np.float32)):
        _, i = _filtered(A, None, 8, True, cosine=True)
        np.testing.assert_array_equal(i, self_neighbors(A, 8, min_rows=1))


@pytest.mark.parametrize("kind", ["noisy", "chance", "ties", "float64"])
def test_filtered_paired_equals_the_cpu_paired_search(kind, monkeypatch):
    """Ranks, cosines and both neighbour lists of the GPU's paired search (here on
    torch's CPU device) against the CPU engine's; the rows of the 'chance' pairs
    send many entries through the exact evaluation of the ranks."""
    from align.gpuknn import filtered_paired

    Yh, Y = _pairs(kind, np.random.default_rng(len(kind) + 1))
    got = filtered_paired(Yh, Y, 6, iq=inverse_norms(Yh), idd=inverse_norms(Y), device="cpu")
    ref = paired_search(Yh, Y, 6)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_allclose(got[1], ref[1], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(got[2], ref[2])
    np.testing.assert_array_equal(got[3], ref[3])


@pytest.mark.parametrize("d", [3, 64, 768])
def test_float16_filter_error_stays_within_its_bound(d):
    """|t̃ - t| <= E_i + r |t̃| + 2^-25 on every entry of a float16 product, rows
    scaled per query and by one constant for the database, isotropic and
    strongly anisotropic, norms over three decades."""
    import torch
    import align.gpuknn as g
    from align.selfknn import filter_error

    rng = np.random.default_rng(d)
    for shift in (0.0, 3.0):
        X = ((rng.standard_normal((300, d)) + shift * rng.standard_normal(d))
             * rng.uniform(0.03, 30, (300, 1))).astype(np.float32)
        w = torch.from_numpy(inverse_norms(X))
        c = torch.tensor(float(w.min()), dtype=torch.float64)
        q, db = g._Side(X, w, None, torch.device("cpu")), g._Side(X, c, None, torch.device("cpu"))
        E = filter_error(q.a, q.N, db.Nmax, db.amax, d).numpy()[:, None] + g._FP16_SUBNORMAL
        approx = (q.F @ db.F.T).double().numpy()
        X64 = X.astype(np.float64)
        exact = (X64 * w.numpy()[:, None]) @ (X64 * float(c)).T
        r = g._FP16_ROUND / (1 - g._FP16_ROUND)
        assert (np.abs(approx - exact) <= E + r * np.abs(approx)).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_filtered_engine_on_cuda_equals_cpu_bit_for_bit():
    """The exact values are sums in a fixed order of elementwise operations, so the
    CUDA run returns the CPU run's values and indices exactly; and knn's "auto"
    (this engine on CUDA) equals the CPU symmetric engine."""
    rng = np.random.default_rng(14)
    X = (rng.standard_normal((5000, 64)) @ rng.standard_normal((64, 256))).astype(np.float32)
    X[::11] = X[5]
    U = normalize_rows(X)
    a, b = _filtered(U, None, 10, True, "cuda"), _filtered(U, None, 10, True, "cpu")
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(knn(X, 10)[1], knn(X, 10, backend="symmetric")[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_metrics_and_evaluate_equal_the_cpu_engines(monkeypatch):
    """mutual kNN, CKNNA and every figure of evaluate through the CUDA engine equal
    the CPU engines' (ranks exactly, cosines to float64 rounding)."""
    import importlib

    from align.metrics.neighbors import cknna, mutual_knn
    from translate.evaluate import evaluate

    rng = np.random.default_rng(16)
    for kind in ("noisy", "chance", "ties"):
        Yh, Y = _pairs(kind, rng, n=5000, d=48)  # >= 4096: the CPU takes its exact engines too
        gpu = (evaluate(Yh, Y, k=7), mutual_knn(Yh, Y, k=7), cknna(Yh, Y, k=7))
        with monkeypatch.context() as m:
            m.setattr(importlib.import_module("align.knn"), "cuda_available", lambda: False)
            cpu = (evaluate(Yh, Y, k=7), mutual_knn(Yh, Y, k=7), cknna(Yh, Y, k=7))
        assert gpu[0] == pytest.approx(cpu[0], rel=0, abs=1e-12)
        assert gpu[1] == cpu[1]
        assert gpu[2] == pytest.approx(cpu[2], abs=1e-9)


def test_warm_up_runs_every_cpu_engine_in_both_dtypes(monkeypatch):
    """warm_up drives the symmetric, paired and two-way engines with float32 and float64 rows, the
    specialisations numba compiles (and caches) for them; the calls go through the public routes."""
    import sys

    knn_mod = sys.modules["align.knn"]  # the package binds the name align.knn to the function
    if not knn_mod._cpu_engines():
        pytest.skip("CUDA takes the searches here: nothing to compile")
    seen = set()
    real = {name: getattr(selfknn, name) for name in ("self_knn", "paired_rank_knn", "cross_knn")}

    def spy(name):
        def call(X, *args, **kwargs):
            seen.add((name, np.dtype(X.dtype).name))
            return real[name](X, *args, **kwargs)
        return call

    for name in real:
        monkeypatch.setattr(selfknn, name, spy(name))
    knn_mod.warm_up()
    assert seen == {("self_knn", "float32"), ("self_knn", "float64"), ("paired_rank_knn", "float32"),
                    ("paired_rank_knn", "float64"), ("cross_knn", "float32")}
