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
    calls = []
    real = sel.self_knn_candidates
    monkeypatch.setattr(sel, "self_knn_candidates", lambda *a, **kw: calls.append(a[0].shape) or real(*a, **kw))
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
