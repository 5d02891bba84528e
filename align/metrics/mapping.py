"""Mapping-based alignment scores (Kapoor, Srivastava & Khosla 2025).

A mapping score fits a map from one representation to the other on training
rows and asks how well it predicts the held-out rows. The four maps form a
ladder of strictness, so on the same data typically

    linear (any affine map)  >=  procrustes (rotation)  >=  permutation (unit to unit)

with soft matching (a transport plan between units) the permutation score's
relaxation to unequal widths.

Shared protocol (every score here):

- k-fold cross-validation over rows (default 5 folds) after a seeded shuffle
  (``seed``); folds differ in size by at most one row and each held-out fold
  needs at least ``_MIN_TEST`` = 3 rows.
- Maps are fitted on the train folds only; centring uses train-fold means.
- Held-out score: the correlation ("pearson", or "spearman" = Pearson on
  within-fold ranks) between mapped and true held-out responses of each unit,
  averaged over units; then averaged over folds.
- Maps that are asymmetric (linear, Procrustes) are fitted and scored in both
  directions, X -> Y and Y -> X, and the two averaged.
- Units that are constant over all rows are refused at the boundary
  (``check_nonconstant_columns``). A unit or a prediction that happens to be
  constant *within one fold* has an undefined correlation there: it counts
  as correlation 0 (no predictive information), not NaN.

References
----------
- Kapoor, Srivastava & Khosla (2025), "Bridging critical gaps in convergent
  learning: how representational alignment evolves across layers, training,
  and distribution shifts", arXiv:2502.18710 (the four scores and protocol).
- Khosla & Williams (2024), "Soft matching distance: a metric on neural
  representations that captures single-neuron tuning", arXiv:2311.09466.
- Schönemann (1966), "A generalized solution of the orthogonal Procrustes
  problem", Psychometrika.
- Golub, Heath & Wahba (1979), "Generalized cross-validation as a method for
  choosing a good ridge parameter", Technometrics.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Iterator, Optional, Tuple

import numpy as np

from align.validation import (
    as_matrix,
    check_choice,
    check_nonconstant_columns,
    check_paired,
    check_positive_int,
)

__all__ = ["linear_score", "procrustes_score", "permutation_score", "soft_match_score"]

_CORRELATIONS = ("pearson", "spearman")
_MIN_TEST = 3  # a Pearson r on 2 points is always +-1
# Ridge penalties tried by generalised cross-validation, as multiples of the
# mean squared singular value of the centred train X (scale-free grid).
_ALPHA_GRID = np.logspace(-6, 4, 21)
# A centred column whose norm is below this fraction of sqrt(n) * max|value|
# is constant up to rounding.
_CONST_RTOL = 1e-12
# Singular values below this fraction of the largest are dropped when they are
# computed from the Gram matrix (its eigenvalues are exact only to ~eps * s_max²).
_GRAM_RCOND = 1e-5


# --------------------------------------------------------------------------- #
# Shared helpers: validation, folds, correlations
# --------------------------------------------------------------------------- #
def _check_inputs(X: Any, Y: Any, folds: Any, correlation: str, seed: Any) -> Tuple[np.ndarray, np.ndarray, int, int]:
    check_choice(correlation, "correlation", _CORRELATIONS)
    X = as_matrix(X, "X", dtype=np.float64)
    Y = as_matrix(Y, "Y", dtype=np.float64)
    check_paired(X, Y)
    folds = check_positive_int(folds, "folds", minimum=2)
    n = X.shape[0]
    if folds * _MIN_TEST > n:
        raise ValueError(
            f"folds={folds} is too many for n={n} rows: each held-out fold needs at least {_MIN_TEST} rows, "
            f"so use folds <= {n // _MIN_TEST}" + ("" if n >= 2 * _MIN_TEST else " (or provide more rows)")
        )
    seed = check_positive_int(seed, "seed", minimum=0)
    check_nonconstant_columns(X, "X")
    check_nonconstant_columns(Y, "Y")
    return X, Y, folds, seed


def _kfold(n: int, folds: int, seed: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """(train, test) row indices of a seeded, shuffled k-fold split."""
    perm = np.random.default_rng(seed).permutation(n)
    for test in np.array_split(perm, folds):
        train = np.ones(n, dtype=bool)
        train[test] = False
        yield np.flatnonzero(train), np.sort(test)


def _standardize(A: np.ndarray, correlation: str) -> np.ndarray:
    """Columns centred and scaled to unit norm, so that Zaᵀ Zb is the Pearson
    (or, after ranking, Spearman) correlation matrix. Columns with no variance
    become all zeros, so their correlation with anything is 0."""
    if correlation == "spearman":
        from scipy.stats import rankdata  # imported on use: scipy.stats costs ~1 s per process

        A = rankdata(A, axis=0)
    Ac = A - A.mean(axis=0)
    norm = np.sqrt(np.einsum("ij,ij->j", Ac, Ac))
    floor = _CONST_RTOL * np.sqrt(A.shape[0]) * np.abs(A).max(axis=0)
    scale = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > floor)
    Ac *= scale
    return Ac


def _unit_corr(pred: np.ndarray, true: np.ndarray, correlation: str) -> float:
    """Mean over units of corr(pred[:, j], true[:, j])."""
    zp = _standardize(pred, correlation)
    zt = _standardize(true, correlation)
    return float(np.einsum("ij,ij->j", zp, zt).mean())


def _cross_corr(A: np.ndarray, B: np.ndarray, correlation: str) -> np.ndarray:
    """(d_a, d_b) matrix of correlations between every unit of A and of B."""
    return _standardize(A, correlation).T @ _standardize(B, correlation)


FoldScore = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str], float]


def _cross_validate(X: Any, Y: Any, folds: Any, correlation: str, seed: Any, fold_score: FoldScore) -> float:
    """Validate once, then average ``fold_score(Xtr, Ytr, Xte, Yte, correlation)`` over folds."""
    X, Y, folds, seed = _check_inputs(X, Y, folds, correlation, seed)
    scores = [
        fold_score(X[tr], Y[tr], X[te], Y[te], correlation) for tr, te in _kfold(X.shape[0], folds, seed)
    ]
    return float(np.mean(scores))


# --------------------------------------------------------------------------- #
# Linear (ridge)
# --------------------------------------------------------------------------- #
def _gcv_alpha(s: np.ndarray, Z: np.ndarray, Yc: np.ndarray) -> float:
    """Ridge penalty minimising generalised cross-validation (Golub, Heath &
    Wahba 1979) over ``_ALPHA_GRID``, vectorised over the grid.

    With Xc = U S Vᵀ and Z = Uᵀ Yc, ridge with an unpenalised intercept has
    hat matrix H = 11ᵀ/n + U diag(s²/(s²+α)) Uᵀ, residual sum of squares per
    unit RSS_j(α) = ||Yc_j||² - ||Z_j||² + Σ_k (α/(s_k²+α))² Z_kj² and
    GCV_j(α) = n RSS_j(α) / (n - tr H)². Units are weighted by 1/||Yc_j||² so
    each counts equally (the score averages per-unit correlations).
    """
    n = Yc.shape[0]
    s2 = s**2
    alphas = _ALPHA_GRID * s2.mean()
    yy = np.einsum("ij,ij->j", Yc, Yc)
    z2 = Z**2
    perp = np.maximum(yy - z2.sum(axis=0), 0.0)
    denom = s2[None, :] + alphas[:, None]  # (A, k)
    rss = perp[None, :] + ((alphas[:, None] / denom) ** 2) @ z2  # (A, d_y)
    dof = 1.0 + (s2[None, :] / denom).sum(axis=1)  # (A,)
    w = np.divide(1.0, yy, out=np.zeros_like(yy), where=yy > 0)
    resid_dof = n - dof
    with np.errstate(divide="ignore", invalid="ignore"):
        gcv = np.where(resid_dof > 0, n * (rss @ w) / resid_dof**2, np.inf)
    return float(alphas[int(np.argmin(gcv))])


def _svd_parts(Xc: np.ndarray, Yc: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Singular values s, right singular vectors V (d, k) of the centred train
    X and Z = Uᵀ Yc, dropping numerically null directions.

    When n > d, V and s² come from the eigendecomposition of the d x d Gram
    matrix Xcᵀ Xc and Z = diag(1/s) Vᵀ Xcᵀ Yc: all BLAS-3, about 10x faster than
    a thin SVD of the n x d matrix at n = 8000, d = 512. Squaring loses
    precision only for s < ``_GRAM_RCOND`` * s_max, and those directions are
    dropped (they would carry rounding noise); otherwise the direct SVD is used.
    """
    n, d = Xc.shape
    if n > d:
        lam, V = np.linalg.eigh(Xc.T @ Xc)
        keep = lam > (lam[-1] * _GRAM_RCOND**2 if lam[-1] > 0 else np.inf)
        s = np.sqrt(lam[keep])
        V = V[:, keep]
        Z = (V.T @ (Xc.T @ Yc)) / s[:, None]
        return s, V, Z
    U, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    keep = s > (s[0] * max(n, d) * np.finfo(np.float64).eps if s[0] > 0 else np.inf)
    return s[keep], Vt[keep].T, U[:, keep].T @ Yc


def _ridge_predict(Xtr: np.ndarray, Ytr: np.ndarray, Xte: np.ndarray, alpha: Optional[float]) -> np.ndarray:
    """Ridge regression Ytr ~ Xtr (unpenalised intercept) via the SVD of the
    centred train X; predictions for Xte."""
    mx, my = Xtr.mean(axis=0), Ytr.mean(axis=0)
    Xc, Yc = Xtr - mx, Ytr - my
    s, V, Z = _svd_parts(Xc, Yc)
    if s.size == 0:  # X constant on the train fold: predict the train mean
        return np.broadcast_to(my, (Xte.shape[0], Ytr.shape[1])).copy()
    a = _gcv_alpha(s, Z, Yc) if alpha is None else alpha
    coef = V @ ((s / (s**2 + a))[:, None] * Z)
    return (Xte - mx) @ coef + my


def linear_score(
    X: Any,
    Y: Any,
    folds: int = 5,
    correlation: str = "pearson",
    alpha: Optional[float] = None,
    seed: int = 0,
) -> float:
    """Cross-validated ridge-regression (linear predictivity) score.

    For each fold, fit Ŷ = (X - mean_X) B + mean_Y on the train rows with
    B = argmin ||Yc - Xc B||² + α ||B||² (computed from the SVD of the centred
    train X), then score mean_j corr(Ŷ_j, Y_j) on the held-out rows; likewise
    Y -> X; return the mean of both directions over folds.

    alpha : ridge penalty. None (default) chooses it per fold and direction by
        generalised cross-validation on the train rows (efficient
        leave-one-out approximation from the same SVD) over 21 log-spaced
        values 1e-6 ... 1e4 times the mean squared singular value of the
        centred train X. A number is used as is (0 = least squares via the
        pseudo-inverse; with n > d, directions with singular value below
        1e-5 * s_max are dropped, see ``_svd_parts``).

    Invariant to invertible linear (affine) transforms of either side, up to
    the ridge penalty: linear_score(X, X W) ≈ 1 for full-rank W.
    """
    if alpha is not None:
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not np.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be None (chosen by GCV) or a finite number >= 0, got {alpha!r}")
        alpha = float(alpha)

    def fold(Xtr, Ytr, Xte, Yte, corr):
        return 0.5 * (
            _unit_corr(_ridge_predict(Xtr, Ytr, Xte, alpha), Yte, corr)
            + _unit_corr(_ridge_predict(Ytr, Xtr, Yte, alpha), Xte, corr)
        )

    return _cross_validate(X, Y, folds, correlation, seed, fold)


# --------------------------------------------------------------------------- #
# Procrustes (orthogonal)
# --------------------------------------------------------------------------- #
def _procrustes_fold(Xtr, Ytr, Xte, Yte, corr) -> float:
    mx, my = Xtr.mean(axis=0), Ytr.mean(axis=0)
    # Zero-padding the narrower side to the wider width and solving the square
    # orthogonal Procrustes problem gives, on the real coordinates, R = U Vᵀ
    # from the thin SVD of Xcᵀ Yc (d_x, d_y): the padded rows/columns of the
    # square solution only touch padded coordinates, which are never scored.
    U, _, Vt = np.linalg.svd((Xtr - mx).T @ (Ytr - my), full_matrices=False)
    R = U @ Vt  # (d_x, d_y), orthonormal columns or rows
    return 0.5 * (_unit_corr((Xte - mx) @ R, Yte, corr) + _unit_corr((Yte - my) @ R.T, Xte, corr))


def procrustes_score(X: Any, Y: Any, folds: int = 5, correlation: str = "pearson", seed: int = 0) -> float:
    """Cross-validated orthogonal Procrustes score.

    On the train rows, R = argmin_{RᵀR = I} ||Xc R - Yc||_F = U Vᵀ with
    U S Vᵀ = Xcᵀ Yc (Schönemann 1966). When widths differ the narrower side
    is zero-padded to the wider width; only real target units are scored.
    Held-out score: mean_j corr(((X - mean_X) R)_j, Y_j), and the same for
    Y -> X with Rᵀ; both directions averaged, then folds averaged.

    Invariant to orthogonal transforms, isotropic scaling and translation:
    procrustes_score(X, X Q) ≈ 1. Not invariant to general linear maps
    (compare :func:`linear_score`).
    """
    return _cross_validate(X, Y, folds, correlation, seed, _procrustes_fold)


# --------------------------------------------------------------------------- #
# Permutation (hard matching of units)
# --------------------------------------------------------------------------- #
def _match_units(r_train: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """One-to-one unit pairs maximising the summed train correlation
    (Hungarian algorithm); min(d_x, d_y) pairs."""
    from scipy.optimize import linear_sum_assignment

    return linear_sum_assignment(r_train, maximize=True)


def _permutation_fold(Xtr, Ytr, Xte, Yte, corr) -> float:
    rows, cols = _match_units(_cross_corr(Xtr, Ytr, corr))
    return _unit_corr(Xte[:, rows], Yte[:, cols], corr)


def permutation_score(X: Any, Y: Any, folds: int = 5, correlation: str = "pearson", seed: int = 0) -> float:
    """Cross-validated permutation (unit-to-unit matching) score.

    On the train rows, compute the d_x x d_y matrix r_ij = corr(X_i, Y_j) and
    the one-to-one matching π maximising Σ_i r_iπ(i)
    (``scipy.optimize.linear_sum_assignment(r, maximize=True)``). Held-out
    score: mean over matched pairs of corr(X_i, Y_π(i)) on the test rows;
    averaged over folds. Symmetric in X and Y.

    Unequal widths: only min(d_x, d_y) pairs are matched and the wider
    side's unmatched units are ignored; use :func:`soft_match_score`, which
    matches all units of both sides with fractional weights.

    Invariant to permutations of units, per-unit positive scaling and
    translation: permutation_score(X, X[:, π]) ≈ 1. Not invariant to rotations.
    """
    return _cross_validate(X, Y, folds, correlation, seed, _permutation_fold)


# --------------------------------------------------------------------------- #
# Soft matching (optimal transport between units)
# --------------------------------------------------------------------------- #
def _transport_plan(r_train: np.ndarray) -> np.ndarray:
    """Exact OT plan (network simplex, POT ``ot.emd``) between the units of X
    (mass 1/d_x each) and of Y (mass 1/d_y each) for the cost 1 - r_train."""
    import ot  # POT; imported here so that the other scores do not pay for it

    dx, dy = r_train.shape
    a = np.full(dx, 1.0 / dx)
    b = np.full(dy, 1.0 / dy)
    M = np.ascontiguousarray(1.0 - r_train, dtype=np.float64)
    # POT's default cap of 1e5 simplex iterations is too low for ~500 x 500
    # problems; the cap only guards against cycling.
    return ot.emd(a, b, M, numItermax=max(100_000, 200 * dx * dy))


def _soft_match_fold(Xtr, Ytr, Xte, Yte, corr) -> float:
    P = _transport_plan(_cross_corr(Xtr, Ytr, corr))
    return float(np.sum(P * _cross_corr(Xte, Yte, corr)))


def soft_match_score(X: Any, Y: Any, folds: int = 5, correlation: str = "pearson", seed: int = 0) -> float:
    """Cross-validated soft-matching score (Khosla & Williams 2024; Kapoor et al. 2025).

    On the train rows, r_ij = corr(X_i, Y_j) and P is the exact optimal
    transport plan (POT ``ot.emd``) with uniform marginals (1/d_x per unit of
    X, 1/d_y per unit of Y; total mass 1) and cost M_ij = 1 - r_ij. Held-out
    score: Σ_ij P_ij r'_ij with r' the test-row correlations; averaged over
    folds. Widths may differ; with equal widths an optimal P is a permutation
    matrix / d (Birkhoff), so the score then equals :func:`permutation_score`
    whenever the optimal matching is unique.

    Symmetric in X and Y. Invariant to permutations and duplications of units
    (soft_match_score(X, [X, X]) ≈ 1), per-unit positive scaling and translation.
    """
    return _cross_validate(X, Y, folds, correlation, seed, _soft_match_fold)
