"""HSIC, CKA and RSA (align.metrics.kernel): published values, hand cases,
reference formulas, invariances and bad input."""

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from align.metrics import kernel as kmod
from align.metrics.kernel import cka, hsic, rsa


def _golden():
    # Kornblith et al. (2019) CKA colab notebook: this X, Y print
    # "Linear CKA from Examples: 0.55761" and "Debiased ...: 0.51346".
    np.random.seed(1337)
    X = np.random.randn(100, 10)
    Y = np.random.randn(100, 10) + X
    return X, Y


def _rotation(d, seed=0):
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return Q


def _gram_cka(X, Y, debiased):
    """CKA from the public hsic() on explicit linear Gram matrices."""
    K, L = X @ X.T, Y @ Y.T
    return hsic(K, L, debiased) / np.sqrt(hsic(K, K, debiased) * hsic(L, L, debiased))


def _song_hsic(K, L):
    """Song et al. (2012) unbiased HSIC, written out literally."""
    n = K.shape[0]
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0)
    np.fill_diagonal(Lt, 0)
    one = np.ones(n)
    return (
        np.trace(Kt @ Lt)
        + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ Kt @ Lt @ one)
    ) / (n * (n - 3))


# --------------------------------------------------------------------------- golden values
def test_golden_linear_cka():
    X, Y = _golden()
    assert cka(X, Y) == pytest.approx(0.55761, abs=1e-4)
    assert cka(X, Y, debiased=True) == pytest.approx(0.51346, abs=1e-4)


@pytest.mark.parametrize("debiased", [False, True])
def test_feature_form_equals_gram_form(debiased):
    X, Y = _golden()  # n=100 > d=10: cka() takes the d x d feature form
    assert abs(cka(X, Y, debiased=debiased) - _gram_cka(X, Y, debiased)) < 1e-10


@pytest.mark.parametrize("debiased", [False, True])
def test_gram_form_equals_feature_form_when_d_exceeds_n(debiased):
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((30, 50)), rng.standard_normal((30, 40))
    Y[:, :20] += X[:, :20]
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    feature = kmod._cka_ratio(*kmod._linear_feature_terms(Xc, Yc, debiased))
    assert abs(cka(X, Y, debiased=debiased) - feature) < 1e-10


# --------------------------------------------------------------------------- HSIC
def test_hsic_hand_values():
    n = 6
    eye = np.eye(n)
    # H I H = H and tr(H) = n - 1, so HSIC_b(I, I) = (n-1)/(n-1)^2.
    assert hsic(eye, eye) == pytest.approx(1 / (n - 1), abs=1e-15)
    # The unbiased estimator ignores the diagonal: identity kernels carry nothing.
    assert hsic(eye, eye, debiased=True) == pytest.approx(0.0, abs=1e-15)
    ones = np.ones((n, n))
    assert hsic(ones, eye) == pytest.approx(0.0, abs=1e-15)


def test_hsic_matches_reference_formulas():
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((12, 4)), rng.standard_normal((12, 7))
    K, L = A @ A.T, np.exp(-0.1 * ((B[:, None] - B[None]) ** 2).sum(-1))
    n = K.shape[0]
    H = np.eye(n) - 1.0 / n
    assert hsic(K, L) == pytest.approx(np.trace(K @ H @ L @ H) / (n - 1) ** 2, rel=1e-12)
    assert hsic(K, L, debiased=True) == pytest.approx(_song_hsic(K, L), rel=1e-10)


@pytest.mark.parametrize("debiased", [False, True])
def test_hsic_invariant_to_constant_kernel_shift(debiased):
    rng = np.random.default_rng(1)
    A = rng.standard_normal((10, 3))
    K = A @ A.T
    L = K + rng.standard_normal((10, 10)) * 0.1
    L = (L + L.T) / 2
    assert hsic(K + 5.0, L - 2.0, debiased) == pytest.approx(hsic(K, L, debiased), rel=1e-10)


# --------------------------------------------------------------------------- CKA invariances
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("shape", [(60, 8), (20, 40)])  # feature form and gram form
def test_cka_invariances(kernel, debiased, shape):
    rng = np.random.default_rng(2)
    X = rng.standard_normal(shape) * np.linspace(0.2, 3, shape[1])
    Q = _rotation(shape[1])
    b = rng.standard_normal(shape[1])
    assert cka(X, X @ Q, kernel=kernel, debiased=debiased) == pytest.approx(1.0, abs=1e-10)
    assert cka(X, 2.5 * X + b, kernel=kernel, debiased=debiased) == pytest.approx(1.0, abs=1e-10)
    Y = rng.standard_normal((shape[0], 5))
    assert cka(X, Y, kernel=kernel, debiased=debiased) == pytest.approx(
        cka(Y, X, kernel=kernel, debiased=debiased), abs=1e-12
    )


def test_debiased_removes_high_dimensional_bias():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((50, 500)), rng.standard_normal((50, 500))
    assert cka(X, Y) > 0.8  # biased CKA -> 1 as d/n grows even for independent data
    assert abs(cka(X, Y, debiased=True)) < 0.05


def test_cka_accepts_torch_and_float32():
    X, Y = _golden()
    assert cka(torch.from_numpy(X).float(), Y.astype(np.float32)) == pytest.approx(0.55761, abs=1e-4)


def test_rbf_wide_bandwidth_tends_to_linear():
    # exp(-d²/2s²) ≈ 1 - d²/2s², and the centred -d²/2 Gram equals the centred linear Gram.
    X, Y = _golden()
    assert cka(X, Y, kernel="rbf", sigma=1e3) == pytest.approx(cka(X, Y), abs=1e-5)
    assert cka(X, Y, kernel="rbf", sigma=0.5) != pytest.approx(cka(X, Y, kernel="rbf"), abs=1e-3)


def test_rbf_matches_direct_formula():
    X, Y = _golden()

    def gram(A, sigma):  # Kornblith et al. notebook convention: median over all n² entries
        D2 = ((A[:, None] - A[None]) ** 2).sum(-1)
        return np.exp(-D2 / (2 * sigma**2 * np.median(D2)))

    K, L = gram(X, 0.8), gram(Y, 0.8)
    expected = hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))
    assert cka(X, Y, kernel="rbf", sigma=0.8) == pytest.approx(expected, abs=1e-10)


def test_rbf_memory_guard(monkeypatch):
    monkeypatch.setattr(kmod, "DENSE_MAX_N", 50)
    X, Y = _golden()
    with pytest.raises(ValueError, match="kernel='linear'"):
        cka(X, Y, kernel="rbf")
    with pytest.raises(ValueError, match="subsample"):
        rsa(X, Y)
    assert cka(X, Y) == pytest.approx(0.55761, abs=1e-4)  # linear has no n x n matrix


# --------------------------------------------------------------------------- RSA
def test_rsa_hand_case():
    X = np.array([[0.0], [1.0], [3.0]])  # distances (0,1),(0,2),(1,2) = 1, 3, 2
    Y = np.array([[0.0], [2.0], [3.0]])  # distances 2, 3, 1
    # ranks (1,3,2) vs (2,3,1): r = 0.5; the raw distances give the same Pearson r
    assert rsa(X, Y, distance="euclidean") == pytest.approx(0.5, abs=1e-12)
    assert rsa(X, Y, distance="euclidean", compare="pearson") == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("compare", ["spearman", "pearson"])
def test_rsa_rotation_invariant(distance, compare):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((40, 6))
    assert rsa(X, X @ _rotation(6), distance=distance, compare=compare) == pytest.approx(1.0, abs=1e-12)


def test_rsa_correlation_distance_per_row_affine_invariant():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((30, 8))
    Y = X * rng.uniform(0.5, 2, (30, 1)) + rng.standard_normal((30, 1))
    assert rsa(X, Y) == pytest.approx(1.0, abs=1e-12)


def test_rsa_matches_scipy_reference():
    from scipy.spatial.distance import pdist

    rng = np.random.default_rng(6)
    X, Y = rng.standard_normal((25, 5)), rng.standard_normal((25, 9))
    dx, dy = pdist(X, "correlation"), pdist(Y, "correlation")
    assert rsa(X, Y) == pytest.approx(spearmanr(dx, dy)[0], abs=1e-12)
    assert rsa(X, Y, compare="pearson") == pytest.approx(pearsonr(dx, dy)[0], abs=1e-12)


# --------------------------------------------------------------------------- bad input
_G = _golden()
_BAD_CKA = {
    "nan": (lambda X, Y: (np.where(np.arange(10) == 3, np.nan, X), Y), {}, "X"),
    "inf": (lambda X, Y: (X, np.where(np.arange(10) == 3, np.inf, Y)), {}, "Y"),
    "mismatched_rows": (lambda X, Y: (X, Y[:-1]), {}, "same number of rows"),
    "one_d": (lambda X, Y: (X[:, 0], Y), {}, "X must be 2-D"),
    "empty": (lambda X, Y: (X[:0], Y[:0]), {}, "X is empty"),
    "int_dtype": (lambda X, Y: (X.astype(np.int64), Y), {}, "X has integer dtype"),
    "n_lt_4_debiased": (lambda X, Y: (X[:3], Y[:3]), {"debiased": True}, "X has 3 rows"),
    "unknown_kernel": (lambda X, Y: (X, Y), {"kernel": "poly"}, "kernel must be one of"),
    "sigma_with_linear": (lambda X, Y: (X, Y), {"sigma": 1.0}, "sigma"),
    "sigma_negative": (lambda X, Y: (X, Y), {"kernel": "rbf", "sigma": -1.0}, "sigma"),
    "constant_X": (lambda X, Y: (np.ones_like(X), Y), {}, "X has no variance"),
    "rbf_duplicate_rows": (  # most rows coincide: median distance 0
        lambda X, Y: (np.repeat(X[:1], 100, 0) + (np.arange(100) > 80)[:, None], Y),
        {"kernel": "rbf"},
        "X: the median",
    ),
}


@pytest.mark.parametrize("case", sorted(_BAD_CKA))
def test_cka_bad_input(case):
    make, kw, match = _BAD_CKA[case]
    X, Y = make(*_G)
    with pytest.raises(ValueError, match=match):
        cka(X, Y, **kw)


def test_cka_debiased_undefined_at_tiny_n_raises():
    # four rows, X's two non-mean directions degenerate: the unbiased self-HSIC can be <= 0
    X = np.array([[0.0], [0.0], [0.0], [1.0]])
    Y = np.array([[0.0], [1.0], [2.0], [3.0]])
    with pytest.raises(ValueError, match="debiased HSIC of X"):
        cka(X, Y, debiased=True)


_BAD_HSIC = {
    "not_square": ((np.ones((4, 3)), np.eye(4)), {}, "K must be a square"),
    "mismatched": ((np.eye(4), np.eye(5)), {}, "same number of rows"),
    "nan": ((np.full((4, 4), np.nan), np.eye(4)), {}, "K contains"),
    "n_lt_4_debiased": ((np.eye(3), np.eye(3)), {"debiased": True}, "K has 3 rows"),
}


@pytest.mark.parametrize("case", sorted(_BAD_HSIC))
def test_hsic_bad_input(case):
    (K, L), kw, match = _BAD_HSIC[case]
    with pytest.raises(ValueError, match=match):
        hsic(K, L, **kw)


_BAD_RSA = {
    "unknown_distance": ({"distance": "manhattan"}, None, "distance must be one of"),
    "unknown_compare": ({"compare": "kendall"}, None, "compare must be one of"),
    "too_few_rows": ({}, lambda X: X[:2], "X has 2 rows"),
    "constant_row_correlation": ({}, lambda X: np.vstack([np.ones((1, X.shape[1])), X[1:]]), "constant across features"),
    "zero_row_cosine": ({"distance": "cosine"}, lambda X: np.vstack([np.zeros((1, X.shape[1])), X[1:]]), "all-zero row"),
    "constant_rdm": ({"distance": "euclidean"}, lambda X: np.eye(X.shape[1])[:3], "RDM is constant"),
    "nan": ({}, lambda X: np.where(np.arange(10) == 0, np.nan, X), "X contains"),
}


@pytest.mark.parametrize("case", sorted(_BAD_RSA))
def test_rsa_bad_input(case):
    kw, make, match = _BAD_RSA[case]
    X, Y = _G
    if make is not None:
        X = make(X)
        Y = Y[: len(X)]
    with pytest.raises(ValueError, match=match):
        rsa(X, Y, **kw)


# --------------------------------------------------------------------------- blocked feature form
# The linear feature form accumulates the d x d products over blocks of rows in
# float64, never holding a centred float64 copy of either input: it must equal
# the one-shot reference on the centred float64 data.


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocked_feature_form_equals_one_shot_reference(monkeypatch, debiased, dtype):
    rng = np.random.default_rng(11)
    Z = rng.standard_normal((1000, 4))
    X = (Z @ rng.standard_normal((4, 30)) + rng.standard_normal((1000, 30)) + 50.0).astype(dtype)  # far from 0
    Y = (Z @ rng.standard_normal((4, 20)) + 2 * rng.standard_normal((1000, 20))).astype(dtype)
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    ref = kmod._cka_ratio(*kmod._linear_feature_terms(X64 - X64.mean(0), Y64 - Y64.mean(0), debiased))
    monkeypatch.setattr(kmod, "_FEATURE_BLOCK_ELEMS", 7 * 30)  # blocks of 7 rows, a ragged last one
    assert cka(X, Y, debiased=debiased) == pytest.approx(ref, abs=1e-12)
    monkeypatch.setattr(kmod, "_FEATURE_BLOCK_ELEMS", 1 << 22)  # one block
    assert cka(X, Y, debiased=debiased) == pytest.approx(ref, abs=1e-12)
    assert cka(torch.from_numpy(X), torch.from_numpy(Y), debiased=debiased) == pytest.approx(ref, abs=1e-12)


def test_feature_form_reads_float32_without_a_float64_copy(monkeypatch):
    """The inputs reach the blocked accumulation as given (no n x d conversion)."""
    seen = []
    real = kmod._linear_feature_terms_blocked
    monkeypatch.setattr(kmod, "_linear_feature_terms_blocked", lambda X, Y, d: seen.append((X, Y)) or real(X, Y, d))
    X = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32)
    Y = X[:, :5] + 0.1
    cka(X, Y)
    assert seen[0][0] is X and seen[0][1].dtype == np.float32


def test_blocked_feature_form_no_variance_is_refused(monkeypatch):
    monkeypatch.setattr(kmod, "_FEATURE_BLOCK_ELEMS", 9)
    X = np.ones((50, 3))
    with pytest.raises(ValueError, match="X has no variance"):
        cka(X, np.random.default_rng(0).standard_normal((50, 3)))
