"""Kernel alignment metrics: HSIC, CKA (linear / RBF, biased / debiased) and RSA.

Rows of ``X`` (n, d_x) and ``Y`` (n, d_y) are the same n samples seen by two
representations; widths may differ. Everything is computed in float64.

References
----------
- Gretton, Bousquet, Smola, Schölkopf (2005), "Measuring statistical dependence
  with Hilbert-Schmidt norms" (biased HSIC).
- Song, Smola, Gretton, Bedo, Borgwardt (2012), "Feature selection via
  dependence maximization", JMLR 13 (unbiased HSIC).
- Kornblith, Norouzi, Lee, Hinton (2019), "Similarity of neural network
  representations revisited", ICML (CKA; RBF bandwidth convention).
- Kriegeskorte, Mur, Bandettini (2008), "Representational similarity
  analysis", Front. Syst. Neurosci. (RSA).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from align.device import threads
from align.validation import as_matrix, check_choice, check_nonzero_rows, check_paired

__all__ = ["hsic", "cka", "rsa", "DENSE_MAX_N"]

# Largest n for which an n x n kernel (RBF CKA, gram-form linear CKA) or an
# n(n-1)/2 RDM (RSA) is built. An n x n float64 matrix at n = 10k is 0.8 GB and
# the computation holds about three of them. Raise it at your own risk:
# ``align.metrics.kernel.DENSE_MAX_N = 20_000``.
DENSE_MAX_N = 10_000

_KERNELS = ("linear", "rbf")
_DISTANCES = ("correlation", "euclidean", "cosine")
_COMPARES = ("spearman", "pearson")


# --------------------------------------------------------------------------- #
# Gram-matrix helpers
# --------------------------------------------------------------------------- #
def _center_gram(K: np.ndarray, unbiased: bool) -> np.ndarray:
    """Return a centred copy of the symmetric Gram matrix ``K``.

    biased: H K H with H = I - 11ᵀ/n, so <HKH, HLH>_F = tr(KHLH).
    unbiased ("U-centring"): the diagonal is zeroed first and the means are
    corrected so that <K_u, L_u>_F = n (n - 3) HSIC_u(K, L), the Song et al.
    (2012) unbiased estimator (see :func:`hsic`).
    """
    K = np.array(K, dtype=np.float64, copy=True)
    n = K.shape[0]
    if unbiased:
        np.fill_diagonal(K, 0.0)
        means = K.sum(axis=0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        K -= means[:, None]
        K -= means[None, :]
        np.fill_diagonal(K, 0.0)
    else:
        means = K.mean(axis=0)
        means -= means.mean() / 2
        K -= means[:, None]
        K -= means[None, :]
    return K


def _check_dense(n: int, what: str, fix: str) -> None:
    if n > DENSE_MAX_N:
        gb = n * n * 8 / 1e9
        raise ValueError(
            f"X has n={n} rows: {what} needs dense n x n float64 matrices (~{gb:.1f} GB each, several at once), "
            f"above the limit n <= {DENSE_MAX_N} (align.metrics.kernel.DENSE_MAX_N). {fix}, or subsample rows, "
            f"e.g. idx = np.random.default_rng(0).choice({n}, {DENSE_MAX_N}, replace=False); X[idx], Y[idx]"
        )


def _gram_linear(X: np.ndarray) -> np.ndarray:
    return X @ X.T


def _gram_rbf(X: np.ndarray, sigma: float, name: str) -> np.ndarray:
    """exp(-||x_i - x_j||² / (2 bw²)), bw = sigma * sqrt(median squared distance).

    The median is taken over all n² entries including the zero diagonal, the
    convention of the Kornblith et al. (2019) notebook (its ``threshold`` is our
    ``sigma``), so published RBF-CKA numbers are reproduced.
    """
    sq = np.einsum("ij,ij->i", X, X)
    D2 = sq[:, None] + sq[None, :] - 2.0 * (X @ X.T)
    np.maximum(D2, 0.0, out=D2)  # rounding can give tiny negatives
    np.fill_diagonal(D2, 0.0)
    med = float(np.median(D2))
    if med <= 0:
        raise ValueError(
            f"{name}: the median squared pairwise distance is 0 (more than half of the rows coincide), "
            "so the median-distance RBF bandwidth is undefined; drop duplicate rows or use kernel='linear'"
        )
    D2 *= -1.0 / (2.0 * sigma**2 * med)
    return np.exp(D2, out=D2)


def _check_gram(K: Any, name: str, min_rows: int) -> np.ndarray:
    K = as_matrix(K, name, dtype=np.float64, min_rows=min_rows)
    if K.shape[0] != K.shape[1]:
        raise ValueError(f"{name} must be a square n x n Gram matrix, got shape {K.shape}")
    return K


# --------------------------------------------------------------------------- #
# HSIC
# --------------------------------------------------------------------------- #
def hsic(K: Any, L: Any, debiased: bool = False) -> float:
    """Hilbert-Schmidt independence criterion of two n x n Gram matrices.

    biased (Gretton et al. 2005)::

        HSIC_b(K, L) = tr(K H L H) / (n - 1)²,        H = I - 11ᵀ/n

    debiased (Song et al. 2012, Thm. 2), with K̃, L̃ the Gram matrices with
    their diagonals set to zero::

        HSIC_u(K, L) = [ tr(K̃ L̃) + (1ᵀK̃1)(1ᵀL̃1) / ((n-1)(n-2)) - 2/(n-2) 1ᵀK̃L̃1 ] / (n (n-3))

    HSIC_u is an unbiased estimate of the population HSIC (it can be slightly
    negative); it needs n >= 4. Both forms are invariant to adding a constant
    to every entry of K or L (a constant kernel shift).

    Parameters
    ----------
    K, L : (n, n) symmetric Gram matrices of the same samples.
    debiased : use the unbiased estimator.
    """
    K = _check_gram(K, "K", 4 if debiased else 2)
    L = _check_gram(L, "L", 4 if debiased else 2)
    check_paired(K, L, ("K", "L"))
    return _hsic_gram(K, L, bool(debiased))


def _hsic_gram(K: np.ndarray, L: np.ndarray, debiased: bool) -> float:
    n = K.shape[0]
    dot = float(np.vdot(_center_gram(K, debiased), _center_gram(L, debiased)))
    return dot / (n * (n - 3)) if debiased else dot / (n - 1) ** 2


# --------------------------------------------------------------------------- #
# CKA
# --------------------------------------------------------------------------- #
def _linear_feature_terms(Xc: np.ndarray, Yc: np.ndarray, debiased: bool) -> tuple:
    """Scaled HSIC(X,Y), HSIC(X,X), HSIC(Y,Y) for linear kernels from d x d products.

    With centred features K = Xc Xcᵀ, so tr(KHLH) = ||Xcᵀ Yc||_F² (cost
    O(n d_x d_y), memory d_x d_y). For the debiased form, substituting
    1ᵀK = 0 into Song et al.'s estimator (rows r_i = ||x_i||², R = Σ r_i) gives
        n (n-3) HSIC_u = ||XcᵀYc||² - n/(n-2) rᵀs + R S / ((n-1)(n-2)).
    The common factors 1/(n-1)² or 1/(n(n-3)) cancel in CKA and are omitted.
    """
    n = Xc.shape[0]
    r = np.einsum("ij,ij->i", Xc, Xc) if debiased else None
    s = np.einsum("ij,ij->i", Yc, Yc) if debiased else None
    return _feature_terms(Xc.T @ Yc, Xc.T @ Xc, Yc.T @ Yc, n, r, s)


def _feature_terms(cxy: np.ndarray, cxx: np.ndarray, cyy: np.ndarray, n: int,
                   r: Optional[np.ndarray], s: Optional[np.ndarray]) -> tuple:
    """The three (scaled) HSIC terms from the d x d cross-products of the centred
    features and, for the debiased form, the rows' squared norms r, s."""
    xy = float(np.sum(cxy**2))
    xx = float(np.sum(cxx**2))
    yy = float(np.sum(cyy**2))
    if r is None or s is None:
        return xy, xx, yy
    R, S = float(r.sum()), float(s.sum())

    def corr(t: float, a: np.ndarray, b: np.ndarray, A: float, B: float) -> float:
        return t - n / (n - 2) * float(a @ b) + A * B / ((n - 1) * (n - 2))

    return corr(xy, r, s, R, S), corr(xx, r, r, R, R), corr(yy, s, s, S, S)


# Rows per block of the feature-form accumulation: two (block, d) float64 copies,
# 2 x 4096 x 768 x 8 B = 48 MiB at d = 768.
_FEATURE_BLOCK_ELEMS = 1 << 22


def _linear_feature_terms_blocked(X: np.ndarray, Y: np.ndarray, debiased: bool) -> tuple:
    """:func:`_linear_feature_terms` on the raw (uncentred, any float dtype) inputs,
    without a centred float64 copy of either: the column means are summed in
    float64 first, then the d x d products XcᵀYc, XcᵀXc, YcᵀYc are accumulated in
    float64 over blocks of rows, each block converted and centred on its own.
    Memory: three d x d float64 accumulators, one block of each input in float64,
    and (debiased) two length-n float64 vectors; never n x d beyond the inputs.
    """
    n, dx = X.shape
    dy = Y.shape[1]
    mx = X.sum(axis=0, dtype=np.float64) / n
    my = Y.sum(axis=0, dtype=np.float64) / n
    cxy = np.zeros((dx, dy))
    cxx = np.zeros((dx, dx))
    cyy = np.zeros((dy, dy))
    r = np.empty(n) if debiased else None
    s = np.empty(n) if debiased else None
    var_x = var_y = False
    block = max(1, _FEATURE_BLOCK_ELEMS // max(dx, dy))
    for a in range(0, n, block):
        b = min(n, a + block)
        Xb = np.subtract(X[a:b], mx, dtype=np.float64)
        Yb = np.subtract(Y[a:b], my, dtype=np.float64)
        var_x = var_x or bool(Xb.any())
        var_y = var_y or bool(Yb.any())
        cxy += Xb.T @ Yb
        cxx += Xb.T @ Xb
        cyy += Yb.T @ Yb
        if debiased:
            r[a:b] = np.einsum("ij,ij->i", Xb, Xb)
            s[a:b] = np.einsum("ij,ij->i", Yb, Yb)
    for ok, name in ((var_x, "X"), (var_y, "Y")):
        if not ok:
            raise ValueError(f"{name} has no variance (all rows are identical); CKA is undefined")
    return _feature_terms(cxy, cxx, cyy, n, r, s)


def _cka_ratio(xy: float, xx: float, yy: float) -> float:
    for self_hsic, name in ((xx, "X"), (yy, "Y")):
        if not self_hsic > 0:
            # Only the debiased estimator can get here (rows with variance give
            # a positive biased HSIC): it is unbiased, hence can be <= 0 at tiny n.
            raise ValueError(
                f"the debiased HSIC of {name} with itself is {self_hsic:.3g} <= 0 (too few samples for the "
                f"unbiased estimator), so debiased CKA is undefined: use more rows or debiased=False"
            )
    return xy / np.sqrt(xx * yy)


def cka(
    X: Any,
    Y: Any,
    kernel: str = "linear",
    debiased: bool = False,
    sigma: Optional[float] = None,
    bandwidth: Optional[float] = None,
) -> float:
    """Centred kernel alignment (Kornblith et al. 2019).

    ::

        CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))

    with K, L the Gram matrices of the rows of X and Y, HSIC biased or debiased
    (see :func:`hsic`).

    Kernels
    -------
    linear : K = X Xᵀ. When n > max(d_x, d_y) the d x d feature-space form
        ||XcᵀYc||²_F / (||XcᵀXc||_F ||YcᵀYc||_F) is used (O(n d²) time, no n x n
        matrix), and its debiased analogue; it equals the Gram form to rounding.
        Invariant to orthogonal transforms and isotropic scaling of either side
        and to translation: CKA(X, X Q) = CKA(X, 2.5 X + b) = 1.
    rbf : K_ij = exp(-||x_i - x_j||² / (2 bw²)) with bw = ``sigma`` * sqrt(median
        squared pairwise distance), the median over all n² entries (zero
        diagonal included) as in the Kornblith et al. notebook. ``sigma`` is
        therefore a *relative* bandwidth (their ``threshold``), default 1.0; a
        relative bandwidth keeps RBF-CKA invariant to isotropic scaling, and to
        orthogonal transforms and translation. Needs n x n matrices:
        refused above ``DENSE_MAX_N`` rows.

    Parameters
    ----------
    X : (n, d_x), Y : (n, d_y) paired samples (numpy or torch).
    kernel : "linear" or "rbf".
    debiased : use the Song et al. (2012) unbiased HSIC (n >= 4). Removes the
        positive bias of CKA for independent high-dimensional data (biased CKA
        -> 1 as d / n grows even for independent X, Y).
    sigma : RBF bandwidth as a multiple of the median distance (rbf only).
    bandwidth : *absolute* RBF bandwidth (rbf only, exclusive with ``sigma``):
        K_ij = exp(-||x_i - x_j||² / (2 bandwidth²)), no median, as
        platonic-rep's ``cka(kernel_metric='rbf', rbf_sigma=bandwidth)``. Not
        invariant to scaling of either side.

    Returns a float in [0, 1] (debiased: can be slightly negative).
    """
    check_choice(kernel, "kernel", _KERNELS)
    debiased = bool(debiased)
    min_rows = 4 if debiased else 2
    # Validated in their own precision (float32 stays float32, no copy): the
    # feature form converts block by block, the n x n forms convert below.
    X = as_matrix(X, "X", min_rows=min_rows)
    Y = as_matrix(Y, "Y", min_rows=min_rows)
    check_paired(X, Y)
    if sigma is not None:
        if kernel != "rbf":
            raise ValueError("sigma is the RBF bandwidth multiplier; it applies only with kernel='rbf'")
        if isinstance(sigma, bool) or not np.isscalar(sigma) or not np.isfinite(sigma) or sigma <= 0:
            raise ValueError(f"sigma must be a positive finite number (bandwidth / median distance), got {sigma!r}")
    if bandwidth is not None:
        if kernel != "rbf":
            raise ValueError("bandwidth is the absolute RBF bandwidth; it applies only with kernel='rbf'")
        if sigma is not None:
            raise ValueError("give either sigma (relative RBF bandwidth) or bandwidth (absolute), not both")
        if (isinstance(bandwidth, bool) or not np.isscalar(bandwidth) or not np.isfinite(bandwidth)
                or bandwidth <= 0):
            raise ValueError(f"bandwidth must be a positive finite number (absolute RBF bandwidth), got {bandwidth!r}")
        with threads():
            return _cka_rbf_absolute(X.astype(np.float64, copy=False), Y.astype(np.float64, copy=False),
                                     float(bandwidth), debiased)
    n = X.shape[0]
    if kernel == "linear" and n > max(X.shape[1], Y.shape[1]):
        with threads():
            return float(_cka_ratio(*_linear_feature_terms_blocked(X, Y, debiased)))
    with threads():
        return _cka_dense(X.astype(np.float64, copy=False), Y.astype(np.float64, copy=False), kernel, debiased, sigma)


def _cka_dense(X: np.ndarray, Y: np.ndarray, kernel: str, debiased: bool, sigma: Optional[float]) -> float:
    """CKA from n x n Gram matrices (linear when d >= n, and RBF), float64."""
    Xc = X - X.mean(axis=0)
    Yc = Y - Y.mean(axis=0)
    for A, name in ((Xc, "X"), (Yc, "Y")):
        if not A.any():
            raise ValueError(f"{name} has no variance (all rows are identical); CKA is undefined")
    n = X.shape[0]
    if kernel == "linear":
        K, L = _gram_linear(Xc), _gram_linear(Yc)
    else:
        _check_dense(n, "RBF CKA", "Use kernel='linear' (feature-space form, O(n d²), no n x n matrix)")
        bw = 1.0 if sigma is None else float(sigma)
        K = _gram_rbf(Xc, bw, "X")
        L = _gram_rbf(Yc, bw, "Y")
    Kc = _center_gram(K, debiased)
    del K
    Lc = _center_gram(L, debiased)
    del L
    return float(_cka_ratio(float(np.vdot(Kc, Lc)), float(np.vdot(Kc, Kc)), float(np.vdot(Lc, Lc))))


def _cka_rbf_absolute(X: np.ndarray, Y: np.ndarray, bandwidth: float, debiased: bool) -> float:
    """RBF CKA with an absolute bandwidth: K_ij = exp(-||x_i - x_j||² / (2 bandwidth²)), float64."""
    n = X.shape[0]
    _check_dense(n, "RBF CKA", "Use kernel='linear' (feature-space form, O(n d²), no n x n matrix)")
    grams = []
    for A, name in ((X, "X"), (Y, "Y")):
        A = A - A.mean(axis=0)  # distances are unchanged; smaller rounding in the expansion below
        if not A.any():
            raise ValueError(f"{name} has no variance (all rows are identical); CKA is undefined")
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below
            sq = np.einsum("ij,ij->i", A, A)
            D2 = sq[:, None] + sq[None, :] - 2.0 * (A @ A.T)
        if not np.isfinite(D2).all():
            raise ValueError(f"{name}'s squared pairwise distances overflow float64; rescale {name} "
                             "(and the bandwidth with it)")
        np.maximum(D2, 0.0, out=D2)
        np.fill_diagonal(D2, 0.0)
        D2 *= -1.0 / (2.0 * bandwidth**2)
        grams.append(np.exp(D2, out=D2))
    Kc = _center_gram(grams[0], debiased)
    Lc = _center_gram(grams[1], debiased)
    return float(_cka_ratio(float(np.vdot(Kc, Lc)), float(np.vdot(Kc, Kc)), float(np.vdot(Lc, Lc))))


# --------------------------------------------------------------------------- #
# RSA
# --------------------------------------------------------------------------- #
def _rdm(X: np.ndarray, distance: str, name: str) -> np.ndarray:
    if distance == "cosine":
        check_nonzero_rows(X, name)
    elif distance == "correlation":
        flat = np.flatnonzero(np.ptp(X, axis=1) == 0)
        if flat.size:
            raise ValueError(
                f"{name} has {flat.size} row(s) constant across features (first: {int(flat[0])}); the correlation "
                "distance is undefined for them: drop them or use distance='euclidean'"
            )
    from scipy.spatial.distance import pdist  # imported here: scipy.spatial and .stats cost ~2 s per process

    d = pdist(X, metric=distance)
    if np.ptp(d) == 0:
        raise ValueError(
            f"{name}'s RDM is constant (all pairwise {distance} distances are equal), so its rank/linear "
            "correlation with another RDM is undefined"
        )
    return d


def rsa(X: Any, Y: Any, distance: str = "correlation", compare: str = "spearman") -> float:
    """Representational similarity analysis (Kriegeskorte et al. 2008).

    Build each representation's representational dissimilarity matrix (RDM)
    D_ij = dist(x_i, x_j) over all pairs i < j (``scipy.spatial.distance.pdist``)
    and return the correlation of the two upper triangles::

        RSA(X, Y) = corr( triu(D_X), triu(D_Y) )

    distance : "correlation" (1 - Pearson r between rows; invariant to
        per-row shift and scale), "euclidean" (invariant to orthogonal
        transforms and translation), "cosine" (invariant to orthogonal
        transforms and per-row scale).
    compare : "spearman" (rank correlation, invariant to any monotone change of
        either RDM, the usual choice) or "pearson".

    So rsa(X, X Q) = 1 for orthogonal Q with distance "euclidean" or "cosine".
    Needs n >= 3 and builds n(n-1)/2-long RDMs: refused above ``DENSE_MAX_N`` rows.
    """
    check_choice(distance, "distance", _DISTANCES)
    check_choice(compare, "compare", _COMPARES)
    X = as_matrix(X, "X", dtype=np.float64, min_rows=3)
    Y = as_matrix(Y, "Y", dtype=np.float64, min_rows=3)
    check_paired(X, Y)
    _check_dense(X.shape[0], "RSA", "Use cka(X, Y) (linear, feature-space form)")
    dx = _rdm(X, distance, "X")
    dy = _rdm(Y, distance, "Y")
    from scipy.stats import pearsonr, spearmanr

    if compare == "spearman":
        return float(spearmanr(dx, dy).statistic)
    return float(pearsonr(dx, dy).statistic)
