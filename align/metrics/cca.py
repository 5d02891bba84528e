"""CCA-family alignment metrics: SVCCA and PWCCA.

Rows of ``X`` (n, d_x) and ``Y`` (n, d_y) are paired samples; widths may differ.

CCA is computed from orthonormal bases (Björck & Golub 1973): with Q_x, Q_y
orthonormal bases of the column spaces of the centred data, the canonical
correlations are the singular values of Q_xᵀ Q_y (cosines of the principal
angles between the two subspaces). No covariance matrix is inverted, so this is
stable for ill-conditioned data. The bases come from the SVD of the centred
data, which also gives SVCCA's variance truncation; numerically null directions
(singular value <= s_max * max(n, d) * eps) are always dropped. Float64.

Two exact routes to the same numbers. With more samples than units (n >= d),
the SVD X_c = U S Vᵀ is read off the d×d Gram matrix X_cᵀX_c = V S² Vᵀ (one
symmetric eigendecomposition), and Q_xᵀQ_y = S_x⁻¹ V_xᵀ (X_cᵀY_c) V_y S_y⁻¹
needs only d×d products: O(n d²) in BLAS-3, no n×d basis is formed. Squaring
the data squares its condition number, so this route is taken only when every
kept direction has s >= 1e-4 s_max (eigenvector error ~ 1e-16 (s_max/s)², far
below 1e-6) and no variance fraction lies within 1e-9 of ``keep``; otherwise
(rank-deficient or ill-conditioned data, n < d) the SVD of the data itself is
used. n = 3000, d = 768: 0.3-0.5 s instead of 2-3 s on one core. ``svcca(dims=k)``
takes the same route with only the top k eigenpairs of each Gram (dims = 10: ~0.5 s
instead of ~2.5-2.9 s on one loaded core).

Where the time of ``svcca(keep=0.99)`` goes at n = 3000, d = 768 (one core): two Grams
and X_cᵀY_c (in float64: the inputs' exactness) ~1/3, the two eigendecompositions
~0.45, the final d×d products and eigvalsh ~0.2. Computing only the dropped directions'
eigenvectors (tridiagonal reduction + MRRR on an index range) and whitening with a
Cholesky factor was measured too: the same values, but the triangular solves cost what
the eigenvectors saved (0.86 s vs 0.88 s), so it is not used.

References
----------
- Raghu, Gilmer, Yosinski, Sohl-Dickstein (2017), "SVCCA: Singular vector
  canonical correlation analysis for deep learning dynamics and
  interpretability", NeurIPS.
- Morcos, Raghu, Bengio (2018), "Insights on representational similarity in
  neural networks with canonical correlation", NeurIPS (PWCCA).
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any, Optional, Tuple

import numpy as np

from align.device import threads
from align.validation import as_matrix, check_paired

__all__ = ["svcca", "pwcca"]


def _check_keep(keep: Any) -> float:
    if isinstance(keep, bool) or not isinstance(keep, numbers.Real) or not (0 < keep <= 1):
        raise ValueError(f"keep must be a fraction of variance in (0, 1], got {keep!r}")
    return float(keep)


def _basis(Xc: np.ndarray, keep: float, name: str) -> np.ndarray:
    """Orthonormal basis (n, k) of the top singular directions of centred ``Xc``
    that together explain at least ``keep`` of its variance."""
    U, s, _ = np.linalg.svd(Xc, full_matrices=False)
    tol = (s[0] if s.size else 0.0) * max(Xc.shape) * np.finfo(np.float64).eps
    rank = int(np.count_nonzero(s > tol))
    if rank == 0:
        raise ValueError(f"{name} has no variance (all rows are identical); CCA is undefined")
    var = s[:rank] ** 2
    frac = np.cumsum(var) / var.sum()
    # smallest k with frac[k-1] >= keep; the slack absorbs rounding at keep=1
    k = min(int(np.searchsorted(frac, keep - 1e-12)) + 1, rank)
    return U[:, :k]


# Gram route: smallest kept eigenvalue relative to the largest (s >= 1e-4 s_max),
# and the closest a variance fraction may come to ``keep``.
_GRAM_MIN_EIG = 1e-8
_GRAM_KEEP_MARGIN = 1e-9
# SVCCA with at least this many canonical correlations takes them from eigvalsh(MᵀM).
_EIGVALS_MIN = 128
# svcca(dims=...): eigenvectors of the top dims only while dims <= d / this (measured at
# d = 768: dsyevr's subset costs 0.07 s for 10, 0.22 s for 200, 0.92 s for 700; eigh 0.2 s)
_SUBSET_EIG_FRACTION = 4


def _gram_basis(G: np.ndarray, keep: float, name: str) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(V_k, s_k) of the kept directions from the Gram matrix G = X_cᵀX_c, or None
    when the SVD of the data must decide (see the module docstring)."""
    lam, V = np.linalg.eigh(G)
    lam, V = lam[::-1], V[:, ::-1]
    if not lam[0] > 0:
        raise ValueError(f"{name} has no variance (all rows are identical); CCA is undefined")
    var = np.clip(lam, 0.0, None)
    frac = np.cumsum(var) / var.sum()
    k = min(int(np.searchsorted(frac, keep - 1e-12)) + 1, lam.size)
    if lam[k - 1] < _GRAM_MIN_EIG * lam[0]:
        return None
    # the cut is fragile when a cumulative fraction next to it lies within the margin
    # of the threshold (the two routes' fractions differ by ~1e-13); the last one is
    # 1 in both routes
    near = np.abs(frac[max(0, k - 2) : k] - (keep - 1e-12)) < _GRAM_KEEP_MARGIN
    if near.any() and not (k == lam.size and near.sum() == 1 and near[-1]):
        return None
    return np.ascontiguousarray(V[:, :k]), np.sqrt(lam[:k])


def _cca(X: Any, Y: Any, keep: float, weights: bool = False) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Validate, centre, reduce; return (rho, alpha_raw).

    rho: canonical correlations, descending, length min(k_x, k_y).
    alpha_raw (``weights=True``): Σ_j |<h_i, x_j>| over X's centred units for the
    orthonormal canonical variates h_i of X in sample space (PWCCA's weights).
    """
    keep = _check_keep(keep)
    X = as_matrix(X, "X", dtype=np.float64, min_rows=2)
    Y = as_matrix(Y, "Y", dtype=np.float64, min_rows=2)
    check_paired(X, Y)
    with threads():
        Xc = X - X.mean(axis=0)
        Yc = Y - Y.mean(axis=0)
        n = X.shape[0]
        fast = None
        if n >= max(X.shape[1], Y.shape[1]):
            for A, name in ((Xc, "X"), (Yc, "Y")):
                if not A.any():
                    raise ValueError(f"{name} has no variance (all rows are identical); CCA is undefined")
            Gx = Xc.T @ Xc
            bx = _gram_basis(Gx, keep, "X")
            by = _gram_basis(Yc.T @ Yc, keep, "Y") if bx is not None else None
            if bx is not None and by is not None:
                fast = bx, by
        if fast is not None:
            (Vx, sx), (Vy, sy) = fast
            kx, ky = sx.size, sy.size
            M = (Vx.T @ (Xc.T @ Yc) @ Vy) / sx[:, None] / sy[None, :]
        else:
            Qx = _basis(Xc, keep, "X")
            Qy = _basis(Yc, keep, "Y")
            kx, ky = Qx.shape[1], Qy.shape[1]
            M = Qx.T @ Qy
        if kx + ky > n - 1:
            # Two subspaces of the (n-1)-dim centred sample space whose dimensions
            # sum past n-1 must intersect: some correlations are 1 by construction.
            warnings.warn(
                f"CCA with {kx} + {ky} kept directions on only n={n} samples: the subspaces "
                "intersect trivially and canonical correlations are inflated; use more samples or a smaller keep",
                RuntimeWarning,
                stacklevel=3,
            )
        if not weights:
            if min(M.shape) >= _EIGVALS_MIN:
                # singular values as square roots of the eigenvalues of the smaller
                # Gram: 3x faster; |error| <= ~3e-8 for correlations near 0, ~1e-16 near 1
                W = M.T @ M if M.shape[1] <= M.shape[0] else M @ M.T
                rho = np.sqrt(np.clip(np.linalg.eigvalsh(W)[::-1], 0.0, None))
            else:
                rho = np.linalg.svd(M, compute_uv=False)
            return np.clip(rho, 0.0, 1.0), None  # cosines of principal angles; rounding can exceed 1
        A, rho, _ = np.linalg.svd(M, full_matrices=False)
        rho = np.clip(rho, 0.0, 1.0)
        A = A[:, : rho.size]
        if fast is not None:
            # h_i = X_c V_x S_x⁻¹ a_i, so Hᵀ X_c = Aᵀ S_x⁻¹ V_xᵀ G_x (d×d, no n×k basis)
            HtX = A.T @ ((Vx.T @ Gx) / sx[:, None])
        else:
            HtX = (Qx @ A).T @ Xc
        return rho, np.abs(HtX).sum(axis=1)


def _fixed_basis(Xc: np.ndarray, dims: int, name: str) -> np.ndarray:
    """Orthonormal basis (n, dims) of the top ``dims`` singular directions of centred ``Xc``."""
    U, s, _ = np.linalg.svd(Xc, full_matrices=False)
    tol = (s[0] if s.size else 0.0) * max(Xc.shape) * np.finfo(np.float64).eps
    rank = int(np.count_nonzero(s > tol))
    if rank == 0:
        raise ValueError(f"{name} has no variance (all rows are identical); CCA is undefined")
    if dims > rank:
        raise ValueError(f"dims={dims} exceeds the rank of the centred {name} ({rank}); use dims <= {rank}")
    return U[:, :dims]


def _gram_top(Xc: np.ndarray, dims: int) -> Optional[np.ndarray]:
    """Orthonormal basis (n, dims) of the top ``dims`` singular directions of centred
    ``Xc`` from the top ``dims`` eigenpairs of its Gram matrix (n >= d), or None when
    the SVD of the data must decide (a kept direction below the Gram route's
    conditioning bound, which includes a ``dims`` past the rank).

    Only ``dims`` eigenvectors are computed (LAPACK dsyevr on an index range; all of
    them when dims > d / 4, where that is faster), and the basis is X_c V S⁻¹: with
    dims = 10 at n = 3000, d = 768 this is ~5x faster than the thin SVD of the data
    (0.5 s instead of 2.4-2.8 s on one loaded core), to the same rounding (see the module
    docstring)."""
    from scipy.linalg import eigh

    d = Xc.shape[1]
    if Xc.shape[0] < d or dims > d:
        return None
    G = Xc.T @ Xc
    if dims * _SUBSET_EIG_FRACTION <= d:
        lam, V = eigh(G, subset_by_index=[d - dims, d - 1], check_finite=False)
    else:  # many directions: the full eigendecomposition is faster than dsyevr's subset
        lam, V = np.linalg.eigh(G)
        lam, V = lam[d - dims :], V[:, d - dims :]
    lam, V = lam[::-1], V[:, ::-1]  # lam[0] is the largest eigenvalue
    if not lam[0] > 0 or lam[-1] < _GRAM_MIN_EIG * lam[0]:
        return None
    return (Xc @ V) / np.sqrt(lam)


def _svcca_fixed(X: Any, Y: Any, dims: Any) -> float:
    if isinstance(dims, bool) or not isinstance(dims, numbers.Integral) or dims < 1:
        raise ValueError(f"dims must be a positive integer (directions kept per side), got {dims!r}")
    dims = int(dims)
    X = as_matrix(X, "X", dtype=np.float64, min_rows=2)
    Y = as_matrix(Y, "Y", dtype=np.float64, min_rows=2)
    check_paired(X, Y)
    with threads():
        Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
        Qx = _gram_top(Xc, dims)
        Qy = _gram_top(Yc, dims) if Qx is not None else None
        if Qx is None or Qy is None:
            Qx = _fixed_basis(Xc, dims, "X")
            Qy = _fixed_basis(Yc, dims, "Y")
        n = X.shape[0]
        if 2 * dims > n - 1:
            warnings.warn(
                f"CCA with {dims} + {dims} kept directions on only n={n} samples: the subspaces "
                "intersect trivially and canonical correlations are inflated; use more samples or a smaller dims",
                RuntimeWarning,
                stacklevel=3,
            )
        rho = np.clip(np.linalg.svd(Qx.T @ Qy, compute_uv=False), 0.0, 1.0)
    return float(rho.mean())


def svcca(X: Any, Y: Any, keep: float = 0.99, dims: Optional[int] = None) -> float:
    """Singular vector CCA (Raghu et al. 2017).

    1. centre each representation's columns;
    2. SVD; keep the top k directions whose squared singular values explain
       at least ``keep`` of the variance (separately for X and Y);
    3. CCA between the two reduced representations;
    4. return the mean of the min(k_x, k_y) canonical correlations.

    Invariant to invertible linear transforms of either side when keep=1
    (svcca(X, X A) = 1), and to orthogonal transforms and isotropic scaling
    for any keep. Symmetric in X and Y. Canonical correlations are biased
    upward when k_x + k_y approaches n (a warning is raised past n - 1).

    dims : keep exactly this many top singular directions on each side instead
        of a variance fraction (``keep`` is then ignored); the score is the mean
        of the ``dims`` canonical correlations. This is platonic-rep's
        ``svcca(cca_dim=dims)`` computed exactly (it standardises each column
        first and uses a randomised SVD and an iterative CCA; see
        docs/from_platonic_rep.md). Must not exceed either side's rank.
    """
    if dims is not None:
        return _svcca_fixed(X, Y, dims)
    rho, _ = _cca(X, Y, keep)
    return float(rho.mean())


def pwcca(X: Any, Y: Any, keep: float = 1.0) -> float:
    """Projection-weighted CCA (Morcos et al. 2018).

    ::

        PWCCA(X, Y) = Σ_i α_i ρ_i,   α_i ∝ Σ_j |⟨h_i, x_j⟩|,   Σ_i α_i = 1

    where ρ_i are the canonical correlations of X and Y, h_i the unit-norm
    canonical variates of X (sample space) and x_j the centred units (columns)
    of X. Canonical directions that account for much of X's units weigh more
    than those that account for little (e.g. noise directions).

    Direction convention: the weights always come from the first argument X,
    so pwcca(X, Y) != pwcca(Y, X) in general. (The authors' reference code
    takes the weights from whichever side has fewer units; to reproduce it,
    pass the narrower representation first.)

    keep : fraction of variance kept per side by an SVD before CCA, as in
        :func:`svcca`; the default 1.0 keeps every non-null direction (plain
        CCA on the activations, as in the paper). The weights are always
        computed against X's original units.

    Invariant to invertible linear transforms of Y (keep=1), and to
    permutations, sign flips and isotropic scaling of X's units, but not to
    rotations of X (the weights depend on X's basis). pwcca(X, X A) = 1 for
    invertible A.
    """
    rho, alpha = _cca(X, Y, keep, weights=True)
    alpha = alpha / alpha.sum()
    return float(alpha @ rho)
