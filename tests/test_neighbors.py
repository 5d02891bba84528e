import numpy as np
import pytest
import torch

from align import cknna, cycle_knn, lcs_knn, mutual_knn
from synthetic import torch_threads


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The dense torch definitions here are small: on one thread (more cost more CPU than they
    save, several times more on a shared machine). The library's calls set their own count."""
    with torch_threads(1):
        yield


def _dense_nn(F, k):
    """platonic-rep's compute_nearest_neighbors on normalised rows (dense reference)."""
    F = torch.nn.functional.normalize(torch.as_tensor(F, dtype=torch.float64), dim=1)
    return (F @ F.T).fill_diagonal_(-1e8).argsort(dim=1, descending=True)[:, :k]


def _dense_hsic_unbiased(K, L):
    m = K.shape[0]
    Kt, Lt = K.clone().fill_diagonal_(0), L.clone().fill_diagonal_(0)
    val = (Kt * Lt.T).sum() + Kt.sum() * Lt.sum() / ((m - 1) * (m - 2)) - 2 * (Kt @ Lt).sum() / (m - 2)
    return val / (m * (m - 3))


def _dense_cknna(A, B, k):
    """The platonic-rep cknna definition with n×n masks, in float64 (reference)."""
    A = torch.nn.functional.normalize(torch.as_tensor(A, dtype=torch.float64), dim=1)
    B = torch.nn.functional.normalize(torch.as_tensor(B, dtype=torch.float64), dim=1)
    n = A.shape[0]
    K, L = A @ A.T, B @ B.T

    def sim(K, L):
        tk = torch.topk(K.clone().fill_diagonal_(float("-inf")), k, dim=1).indices
        tl = torch.topk(L.clone().fill_diagonal_(float("-inf")), k, dim=1).indices
        mask = torch.zeros(n, n, dtype=K.dtype).scatter_(1, tk, 1) * torch.zeros(n, n, dtype=K.dtype).scatter_(1, tl, 1)
        return _dense_hsic_unbiased(mask * K, mask * L)

    return float(sim(K, L) / torch.sqrt(sim(K, K) * sim(L, L)))


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 20))
    return X, X + rng.standard_normal((300, 20))


def test_hand_example_k1():
    # Unit vectors at angles [0, .1, .3, .7] vs [0, .1, .5, .6]: nearest neighbours
    # X: 0->1, 1->0, 2->1, 3->2 ; Y: 0->1, 1->0, 2->3, 3->2 -> 3 of 4 agree.
    a, b = np.array([0, 0.1, 0.3, 0.7]), np.array([0, 0.1, 0.5, 0.6])
    X = np.c_[np.cos(a), np.sin(a)]
    Y = np.c_[np.cos(b), np.sin(b)]
    assert mutual_knn(X, Y, k=1) == pytest.approx(0.75)


def test_mutual_knn_matches_dense_definition(pair):
    X, Y = pair
    k = 10
    ka, kb = _dense_nn(X, k), _dense_nn(Y, k)
    n = len(X)
    ma, mb = torch.zeros(n, n, dtype=torch.float64), torch.zeros(n, n, dtype=torch.float64)
    r = torch.arange(n)[:, None]
    ma[r, ka] = 1
    mb[r, kb] = 1
    ref = float(((ma * mb).sum(1) / k).mean())
    assert mutual_knn(X, Y, k=k) == pytest.approx(ref, abs=1e-12)


def test_cycle_knn_matches_dense_definition(pair):
    X, Y = pair
    ka, kb = _dense_nn(X, 10), _dense_nn(Y, 10)
    n = len(X)
    ref = float((ka[kb] == torch.arange(n).view(-1, 1, 1)).double().view(n, -1).max(1).values.mean())
    assert cycle_knn(X, Y, k=10) == pytest.approx(ref, abs=1e-12)


def test_lcs_knn_hand_and_bounds():
    from align.metrics.neighbors import _lcs_lengths

    a = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    b = np.array([[2, 1, 3, 4], [8, 7, 6, 5]])
    # LCS([1,2,3,4],[2,1,3,4]) = 3 ; LCS of a sequence and its reverse (distinct) = 1
    np.testing.assert_array_equal(_lcs_lengths(a, b), [3, 1])
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 8))
    assert lcs_knn(X, X, k=5) == 1.0
    assert 0 <= lcs_knn(X, rng.standard_normal((200, 8)), k=5) <= mutual_knn(X, rng.standard_normal((200, 8)), k=5) + 1


def test_cknna_matches_dense_definition(pair):
    X, Y = pair
    for k in (2, 10, 40):
        assert cknna(X, Y, k=k) == pytest.approx(_dense_cknna(X, Y, k), abs=1e-9)


def test_cknna_kernel_entries_in_chunks_give_the_same_value(pair, monkeypatch):
    import importlib

    mod = importlib.import_module("align.metrics.neighbors")
    X, Y = pair
    whole = cknna(X, Y, k=10)
    monkeypatch.setattr(mod, "_PAIR_CHUNK", 7)  # many chunks, a ragged last one
    assert cknna(X, Y, k=10) == pytest.approx(whole, abs=1e-12)
    assert cknna(X, Y, k=10) == pytest.approx(_dense_cknna(X, Y, 10), abs=1e-9)


def test_invariances():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((400, 16)) * np.linspace(0.2, 3, 16)
    Q, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    Y = 2.5 * X @ Q
    assert mutual_knn(X, X, k=10) == 1.0
    assert mutual_knn(X, Y, k=10) == 1.0
    assert lcs_knn(X, Y, k=10) == 1.0
    assert cknna(X, Y, k=10) == pytest.approx(1.0, abs=1e-9)
    assert cycle_knn(X, Y, k=10) > 0.95


def test_chance_level_independent_data():
    rng = np.random.default_rng(3)
    n, k = 3000, 10
    vals = [mutual_knn(rng.standard_normal((n, 32)), rng.standard_normal((n, 32)), k=k) for _ in range(3)]
    chance = k / (n - 1)
    # mean overlap of two independent k-subsets of n-1: k/(n-1); sd of the mean is tiny
    assert abs(np.mean(vals) - chance) < 0.5 * chance
    assert cknna(rng.standard_normal((n, 32)), rng.standard_normal((n, 32)), k=k) < 0.05


@pytest.mark.parametrize("fn", [mutual_knn, cycle_knn, lcs_knn, cknna])
@pytest.mark.parametrize(
    "X, Y, k, match",
    [
        (np.random.rand(10, 3), np.random.rand(11, 3), 2, "same number of rows"),
        (np.random.rand(10, 3), np.random.rand(10, 3), 10, "k=10"),
        (np.random.rand(10, 3), np.random.rand(10, 3), 0, "k must be >= 1"),
        (np.full((10, 3), np.inf), np.random.rand(10, 3), 2, "X contains"),
        (np.random.rand(10, 3), np.random.rand(10, 3).astype(int), 2, "Y has integer dtype"),
        (np.zeros((10, 3)), np.random.rand(10, 3), 2, "all-zero"),
        (np.random.rand(10), np.random.rand(10, 3), 2, "X must be 2-D"),
    ],
)
def test_bad_input(fn, X, Y, k, match):
    with pytest.raises(ValueError, match=match):
        fn(X, Y, k=k)


def test_cknna_needs_k2():
    X = np.random.default_rng(0).standard_normal((20, 3))
    with pytest.raises(ValueError, match="k must be >= 2"):
        cknna(X, X, k=1)


def test_float64_beyond_float32_range_is_accepted():
    """Rows are normalised in their own precision before the float32 search
    (1e100 overflows float32, not float64 or its squares)."""
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((60, 5)), rng.standard_normal((60, 5))
    assert mutual_knn(X * 1e100, Y * 1e-100, k=4) == mutual_knn(X, Y, k=4)
    assert cknna(X * 1e100, Y, k=4) == pytest.approx(cknna(X, Y, k=4), abs=1e-12)


# --------------------------------------------------------------------------- the CPU engine
# From align.knn._SYM_MIN_ROWS rows on the CPU, neighbour lists come from the exact
# symmetric engine (a bfloat16 or float32 filter, decisions on float64 cosines of the
# input rows, no unit-row copy): both filter precisions must give the dense
# definitions' values.


@pytest.fixture(params=["bf16", "fp32"])
def engine(request, monkeypatch):
    import importlib

    monkeypatch.setattr(importlib.import_module("align.knn"), "_SYM_MIN_ROWS", 50)
    monkeypatch.setattr(importlib.import_module("align.selfknn"), "FILTER", request.param)
    return request.param


def _dense_mutual(X, Y, k):
    ka, kb = _dense_nn(X, k), _dense_nn(Y, k)
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ka, kb)]) / k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_engine_path_equals_dense_definitions(engine, pair, dtype):
    X, Y = (A.astype(dtype) for A in pair)
    for k in (1, 10):
        assert mutual_knn(X, Y, k=k) == pytest.approx(_dense_mutual(X, Y, k), abs=1e-12)
    assert cknna(X, Y, k=10) == pytest.approx(_dense_cknna(X, Y, 10), abs=1e-9)
    ix, iy = _dense_nn(X, 5), _dense_nn(Y, 5)
    n = len(X)
    cyc = float(np.mean([(ix[iy[i]] == i).any().item() for i in range(n)]))
    assert cycle_knn(X, Y, k=5) == pytest.approx(cyc, abs=1e-12)


def _exact_nn(F, k):
    """Neighbour lists with ties to the lower index (float64 cosines rounded to 12
    digits, so equal rows tie whatever the summation order)."""
    F = np.asarray(F, dtype=np.float64)
    F = F / np.linalg.norm(F, axis=1, keepdims=True)
    S = np.round(F @ F.T, 12)
    np.fill_diagonal(S, -np.inf)
    return np.lexsort((np.broadcast_to(np.arange(len(F)), S.shape), -S), axis=1)[:, :k]


def test_engine_path_with_duplicate_rows(engine, monkeypatch):
    import importlib

    from align.metrics.neighbors import neighbor_lists

    rng = np.random.default_rng(7)
    base = rng.standard_normal((40, 8))
    X = base[rng.integers(0, 40, 300)]
    Y = X + 0.1 * rng.standard_normal(X.shape)
    ix, iy = neighbor_lists(X, Y, k=10)
    np.testing.assert_array_equal(ix, _exact_nn(X, 10))  # exact ties: lower index first
    np.testing.assert_array_equal(iy, _exact_nn(Y, 10))
    on_engine = (mutual_knn(X, Y, k=10), cknna(X, Y, k=10))
    monkeypatch.setattr(importlib.import_module("align.knn"), "_SYM_MIN_ROWS", 10**9)  # FAISS / torch path
    assert on_engine == pytest.approx((mutual_knn(X, Y, k=10), cknna(X, Y, k=10)), abs=1e-12)


def test_engine_path_float64_beyond_float32_range(engine):
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((200, 6)), rng.standard_normal((200, 6))
    assert mutual_knn(X * 1e200, Y * 1e-200, k=4) == mutual_knn(X, Y, k=4)
    assert cknna(X * 1e200, Y, k=4) == pytest.approx(cknna(X, Y, k=4), abs=1e-12)
