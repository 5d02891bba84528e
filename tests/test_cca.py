"""SVCCA and PWCCA (align.metrics.cca): hand cases, an independent CCA
reference, invariances, the direction convention and bad input."""

import warnings

import numpy as np
import pytest
from scipy.linalg import hadamard, sqrtm

from align.metrics import cca as cmod
from align.metrics.cca import pwcca, svcca


def _reference_cca(X, Y):
    """Textbook CCA by whitening the covariances: canonical correlations and
    unit-norm canonical variates of X (n, min(d_x, d_y))."""
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    Cxx, Cyy, Cxy = Xc.T @ Xc, Yc.T @ Yc, Xc.T @ Yc
    Wx = np.linalg.inv(sqrtm(Cxx).real)
    Wy = np.linalg.inv(sqrtm(Cyy).real)
    U, rho, _ = np.linalg.svd(Wx @ Cxy @ Wy, full_matrices=False)
    H = Xc @ Wx @ U
    return rho, H / np.linalg.norm(H, axis=0)


def test_single_unit_is_abs_pearson():
    x = np.array([[1.0], [2.0], [3.0], [4.0]])
    y = np.array([[1.0], [3.0], [2.0], [4.0]])
    # centred: (-1.5,-.5,.5,1.5)·(-1.5,.5,-.5,1.5) = 4, norms² = 5 -> r = 0.8
    assert svcca(x, y) == pytest.approx(0.8, abs=1e-12)
    assert pwcca(x, y) == pytest.approx(0.8, abs=1e-12)
    assert svcca(x, -y) == pytest.approx(0.8, abs=1e-12)


def _hadamard_case():
    H = hadamard(8).astype(float)[:, 1:]  # centred, mutually orthogonal columns
    X = np.column_stack([3 * H[:, 0], H[:, 1]])  # units: a (norm 3·√8), b (norm √8)
    Y = np.column_stack([H[:, 0], H[:, 2]])  # shares a's direction only
    return X, Y


def test_pwcca_hand_case_and_direction_convention():
    X, Y = _hadamard_case()
    # canonical correlations: 1 (along a) and 0 (b vs c)
    assert svcca(X, Y) == pytest.approx(0.5, abs=1e-12)
    # weights from X's units: |<a_hat, 3a>| = 3√8, |<b_hat, b>| = √8 -> 3/4·1 + 1/4·0
    assert pwcca(X, Y) == pytest.approx(0.75, abs=1e-12)
    # weights from Y's units (equal norms): 1/2·1 + 1/2·0
    assert pwcca(Y, X) == pytest.approx(0.5, abs=1e-12)


def test_matches_textbook_cca():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 6))
    Y = X[:, :4] @ rng.standard_normal((4, 5)) + rng.standard_normal((200, 5))
    rho, H = _reference_cca(X, Y)
    assert svcca(X, Y, keep=1.0) == pytest.approx(rho.mean(), abs=1e-10)
    # Morcos et al. weights: alpha_i ∝ Σ_j |<h_i, x_j>| over X's centred units
    Xc = X - X.mean(0)
    alpha = np.abs(H.T @ Xc).sum(1)
    assert pwcca(X, Y) == pytest.approx((alpha / alpha.sum()) @ rho, abs=1e-10)


def test_invariances():
    rng = np.random.default_rng(1)
    n, d = 300, 12
    X = rng.standard_normal((n, d)) * np.logspace(0, -1, d)
    A = rng.standard_normal((d, d))  # invertible with probability 1
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    b = rng.standard_normal(d)
    assert svcca(X, X @ A, keep=1.0) == pytest.approx(1.0, abs=1e-9)
    assert pwcca(X, X @ A) == pytest.approx(1.0, abs=1e-9)
    # a rotation + scaling + shift keeps the spectrum, so the same subspace is kept at any keep
    assert svcca(X, 2.5 * X @ Q + b) == pytest.approx(1.0, abs=1e-9)
    assert pwcca(X[:, ::-1] * 3.0, X @ A) == pytest.approx(1.0, abs=1e-9)
    Y = rng.standard_normal((n, 7))
    assert svcca(X, Y) == pytest.approx(svcca(Y, X), abs=1e-12)


def test_independent_data_scores_low():
    rng = np.random.default_rng(2)
    X, Y = rng.standard_normal((2000, 8)), rng.standard_normal((2000, 8))
    assert svcca(X, Y) < 0.1
    assert pwcca(X, Y) < 0.1


def test_keep_truncates_by_variance():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((500, 4)) * np.array([10.0, 3.0, 0.1, 0.01])
    Xc = X - X.mean(0)
    assert cmod._basis(Xc, 0.5, "X").shape[1] == 1
    assert cmod._basis(Xc, 0.99, "X").shape[1] == 2
    assert cmod._basis(Xc, 1.0, "X").shape[1] == 4
    # rank-deficient input: the numerically null direction is never kept
    assert cmod._basis(np.column_stack([Xc, Xc[:, 0] + Xc[:, 1]]), 1.0, "X").shape[1] == 4


def test_truncation_discards_low_variance_noise():
    rng = np.random.default_rng(4)
    S = rng.standard_normal((400, 3))
    X = np.hstack([S * 10, 0.01 * rng.standard_normal((400, 20))])
    Y = np.hstack([S @ rng.standard_normal((3, 3)), 0.01 * rng.standard_normal((400, 20))])
    assert svcca(X, Y, keep=0.99) == pytest.approx(1.0, abs=1e-3)
    assert svcca(X, Y, keep=1.0) < 0.5


def test_warns_when_subspaces_must_intersect():
    rng = np.random.default_rng(5)
    X, Y = rng.standard_normal((10, 6)), rng.standard_normal((10, 6))
    with pytest.warns(RuntimeWarning, match="intersect"):
        svcca(X, Y, keep=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        svcca(rng.standard_normal((100, 6)), rng.standard_normal((100, 6)))


_rng = np.random.default_rng(9)
_X, _Y = _rng.standard_normal((20, 3)), _rng.standard_normal((20, 4))
_BAD = {
    "nan": (np.where(np.arange(3) == 1, np.nan, _X), _Y, {}, "X contains"),
    "inf": (_X, np.where(np.arange(4) == 0, -np.inf, _Y), {}, "Y contains"),
    "mismatched_rows": (_X, _Y[:-1], {}, "same number of rows"),
    "one_d": (_X[:, 0], _Y, {}, "X must be 2-D"),
    "empty": (_X[:0], _Y[:0], {}, "X is empty"),
    "int_dtype": (_X, _Y.astype(np.int32), {}, "Y has integer dtype"),
    "keep_zero": (_X, _Y, {"keep": 0.0}, "keep must be"),
    "keep_above_one": (_X, _Y, {"keep": 1.5}, "keep must be"),
    "keep_string": (_X, _Y, {"keep": "all"}, "keep must be"),
    "constant_X": (np.ones_like(_X), _Y, {}, "X has no variance"),
    "one_row": (_X[:1], _Y[:1], {}, "X has 1 rows"),
}


@pytest.mark.parametrize("fn", [svcca, pwcca])
@pytest.mark.parametrize("case", sorted(_BAD))
def test_bad_input(fn, case):
    X, Y, kw, match = _BAD[case]
    with pytest.raises(ValueError, match=match):
        fn(X, Y, **kw)


# --------------------------------------------------------------------------- the Gram route
# With n >= d, the SVD is read off the d x d Gram matrices (one eigh each) when every
# kept direction is well conditioned; otherwise the SVD of the data decides. Both
# routes must give the same values.


def _svd_route(monkeypatch):
    monkeypatch.setattr(cmod, "_GRAM_MIN_EIG", np.inf)  # every call falls back to the SVD


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99, 1.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gram_route_equals_svd_route(monkeypatch, keep, dtype):
    rng = np.random.default_rng(12)
    Z = rng.standard_normal((600, 8))
    X = (Z @ rng.standard_normal((8, 40)) + rng.standard_normal((600, 40)) * np.geomspace(1, 0.05, 40)).astype(dtype)
    Y = (Z @ rng.standard_normal((8, 30)) + 0.5 * rng.standard_normal((600, 30))).astype(dtype)
    fast = (svcca(X, Y, keep=keep), pwcca(X, Y, keep=keep), pwcca(Y, X, keep=keep))
    _svd_route(monkeypatch)
    slow = (svcca(X, Y, keep=keep), pwcca(X, Y, keep=keep), pwcca(Y, X, keep=keep))
    assert fast == pytest.approx(slow, abs=1e-9)


def test_many_correlations_from_eigvalsh_equal_the_svd(monkeypatch):
    rng = np.random.default_rng(13)
    X = rng.standard_normal((900, 200))
    Y = X[:, :150] @ rng.standard_normal((150, 180)) + rng.standard_normal((900, 180))
    many = svcca(X, Y, keep=0.999)
    monkeypatch.setattr(cmod, "_EIGVALS_MIN", 10**9)  # singular values by the SVD
    assert many == pytest.approx(svcca(X, Y, keep=0.999), abs=1e-7)


def test_rank_deficient_and_ill_conditioned_data_take_the_svd_route(monkeypatch):
    rng = np.random.default_rng(14)
    X = rng.standard_normal((300, 10))
    X = np.hstack([X, X[:, :3] @ rng.standard_normal((3, 4))])  # rank 10 of 14 columns
    Y = X[:, :6] + 0.1 * rng.standard_normal((300, 6))
    calls = []
    real = cmod._basis
    monkeypatch.setattr(cmod, "_basis", lambda *a: calls.append(a[2]) or real(*a))
    v = pwcca(X, Y)  # keep = 1: every non-null direction, which the Gram cannot resolve
    assert calls  # fell back to the SVD
    _svd_route(monkeypatch)
    assert v == pytest.approx(pwcca(X, Y), abs=1e-12)


# svcca(dims=...): the top ``dims`` eigenpairs of the Gram (a subset when dims <= d / 4)
# instead of the SVD of the data, under the same conditioning bound


@pytest.mark.parametrize("dims", [1, 3, 10, 30, 40])
def test_fixed_dims_gram_route_equals_svd_route(monkeypatch, dims):
    rng = np.random.default_rng(15)
    Z = rng.standard_normal((500, 6))
    X = Z @ rng.standard_normal((6, 40)) + rng.standard_normal((500, 40)) * np.geomspace(1, 0.1, 40)
    Y = Z @ rng.standard_normal((6, 48)) + 0.5 * rng.standard_normal((500, 48))
    calls = []
    real = cmod._fixed_basis
    monkeypatch.setattr(cmod, "_fixed_basis", lambda *a: calls.append(a[2]) or real(*a))
    fast = svcca(X, Y, dims=dims)
    assert not calls  # the Gram route answered
    _svd_route(monkeypatch)
    assert fast == pytest.approx(svcca(X, Y, dims=dims), abs=1e-12)
    assert calls


def test_fixed_dims_past_the_rank_or_wider_than_rows_take_the_svd_route():
    rng = np.random.default_rng(16)
    X = rng.standard_normal((200, 5))
    X = np.hstack([X, X[:, :2] @ rng.standard_normal((2, 3))])  # rank 5 of 8 columns
    Y = rng.standard_normal((200, 8))
    assert cmod._gram_top(X - X.mean(0), 6) is None  # below the conditioning bound
    with pytest.raises(ValueError, match=r"dims=6 exceeds the rank of the centred X \(5\)"):
        svcca(X, Y, dims=6)
    W = rng.standard_normal((20, 30))  # n < d: no Gram route
    assert cmod._gram_top(W - W.mean(0), 3) is None
    assert 0.0 <= svcca(W, rng.standard_normal((20, 30)), dims=3) <= 1.0
