"""CCA-family alignment metrics: SVCCA and PWCCA.

Rows of ``X`` (n, d_x) and ``Y`` (n, d_y) are paired samples; widths may differ.

CCA is computed from orthonormal bases (Björck & Golub 1973): with Q_x, Q_y
orthonormal bases of the column spaces of the centred data, the canonical
correlations are the singular values of Q_xᵀ Q_y (cosines of the principal
angles between the two subspaces). No covariance matrix is inverted, so this is
stable for ill-conditioned data. The bases come from the SVD of the centred
data, which also gives SVCCA's variance truncation; numerically null directions
(singular value <= s_max * max(n, d) * eps) are always dropped. Float64.

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
from typing import Any, Tuple

import numpy as np

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


def _cca(X: Any, Y: Any, keep: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate, centre, reduce, and return (rho, canonical variates of X, Xc, Qy).

    rho: canonical correlations, descending, length min(k_x, k_y).
    H: (n, len(rho)) orthonormal canonical variates of X in sample space.
    """
    keep = _check_keep(keep)
    X = as_matrix(X, "X", dtype=np.float64, min_rows=2)
    Y = as_matrix(Y, "Y", dtype=np.float64, min_rows=2)
    check_paired(X, Y)
    Xc = X - X.mean(axis=0)
    Yc = Y - Y.mean(axis=0)
    Qx = _basis(Xc, keep, "X")
    Qy = _basis(Yc, keep, "Y")
    n = X.shape[0]
    if Qx.shape[1] + Qy.shape[1] > n - 1:
        # Two subspaces of the (n-1)-dim centred sample space whose dimensions
        # sum past n-1 must intersect: some correlations are 1 by construction.
        warnings.warn(
            f"CCA with {Qx.shape[1]} + {Qy.shape[1]} kept directions on only n={n} samples: the subspaces "
            "intersect trivially and canonical correlations are inflated; use more samples or a smaller keep",
            RuntimeWarning,
            stacklevel=3,
        )
    A, rho, _ = np.linalg.svd(Qx.T @ Qy, full_matrices=False)
    rho = np.clip(rho, 0.0, 1.0)  # cosines of principal angles; rounding can exceed 1
    H = Qx @ A[:, : rho.size]
    return rho, H, Xc, Qy


def svcca(X: Any, Y: Any, keep: float = 0.99) -> float:
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
    """
    rho, _, _, _ = _cca(X, Y, keep)
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
    rho, H, Xc, _ = _cca(X, Y, keep)
    alpha = np.abs(H.T @ Xc).sum(axis=1)
    alpha /= alpha.sum()
    return float(alpha @ rho)
