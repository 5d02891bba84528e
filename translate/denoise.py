"""A covariance-based (Wiener) input filter for any translator, estimated without pairs.

Model (an isotropic-noise factor model, cf. probabilistic CCA, Bach & Jordan
2005): ``x = s + n_a``, ``y = s W + n_b`` with ``s`` in the r-dimensional row
space of a map ``W`` (the best linear fit of a translator) and independent
isotropic noises of variances ``σ_a², σ_b²``. Then ``E[s | x] = x F`` with the
Wiener filter ``F = Σ_xx^{-1} Σ_s``, ``Σ_s = Σ_xx - σ_a² I``: directions of the
input space that are mostly encoder-specific noise are down-weighted before
translation. :func:`noise_variances` identifies the variances from the unpaired
covariances alone; :func:`shrink_filter` builds ``F``; :func:`apply_filter`
applies it to rows prepared by :func:`unit_rows`. :class:`translate.Vec2Vec`
uses it at transform time (``denoise=True``); ``scripts/vec2vec_study.py``
wraps it around other translators too.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

__all__ = ["unit_rows", "linear_fit", "noise_variances", "shrink_filter", "apply_filter", "input_filters"]


def unit_rows(X: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Centre, then scale rows to unit L2 norm (rows equal to the mean stay 0), float32."""
    Z = X - mean
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    return (Z / np.maximum(norms, 1e-12)).astype(np.float32)


def linear_fit(Xn: np.ndarray, T: np.ndarray, ridge: float = 1e-6) -> Tuple[np.ndarray, np.ndarray]:
    """Least-squares affine fit ``T ≈ Xn W + c`` (float64), a tiny ridge for rank-deficient Xn."""
    Xc = Xn.astype(np.float64)
    Tc = T.astype(np.float64)
    mx, mt = Xc.mean(0), Tc.mean(0)
    A, B = Xc - mx, Tc - mt
    G = A.T @ A
    G[np.diag_indices_from(G)] += ridge * max(np.trace(G), 1e-12) / len(G)
    W = np.linalg.solve(G, A.T @ B)
    return W, mt - mx @ W


def noise_variances(Xn: np.ndarray, Yn: np.ndarray, W: np.ndarray) -> Optional[List[float]]:
    """Encoder-specific noise variances ``[σ_a², σ_b²]`` for a map ``y ≈ x W`` learned without pairs.

    Identified from the unpaired covariances (see the module docstring):

    * variance of A in the null space of ``W`` (directions the map drops) = σ_a²,
      or variance of B outside the image of ``W`` = σ_b²;
    * the signal being carried isometrically (only W's subspaces are used, not
      its scale), ``tr Σ_xx - d_a σ_a² = tr Σ_s = tr Σ_yy - d_b σ_b²``.

    Returns ``[σ_a², σ_b²]``, or None when the model is not identifiable (equal
    widths and a full-rank map) or finds no noise. :func:`shrink_filter` turns
    a variance into the filter.
    Real encoder noise is far from isotropic, so this is a first-order
    correction: on minilm -> mpnet it recovers part of the gap between the
    orthogonal map and the paired least-squares ceiling (docs/vec2vec.md).
    """
    Cx = np.cov(Xn.astype(np.float64), rowvar=False)
    Cy = np.cov(Yn.astype(np.float64), rowvar=False)
    U, sv, Vt = np.linalg.svd(W, full_matrices=True)
    r = int((sv > 1e-6 * sv[0]).sum()) if sv.size and sv[0] > 0 else 0
    if r == 0:
        return None
    null_a, out_b = U[:, r:], Vt[r:]
    ev_x, ev_y = np.linalg.eigvalsh(Cx), np.linalg.eigvalsh(Cy)
    tol = 1e-8 * max(ev_x.max(), ev_y.max(), 1e-30)
    # dimensions that carry no variance at all (e.g. a constant coordinate) are
    # neither signal nor noise: leave them out of the counts
    d_a, d_b = int((ev_x > tol).sum()), int((ev_y > tol).sum())
    var_null_a = np.einsum("ij,ik,kj->j", null_a, Cx, null_a)
    var_out_b = np.einsum("ij,jk,ik->i", out_b, Cy, out_b)
    var_null_a, var_out_b = var_null_a[var_null_a > tol], var_out_b[var_out_b > tol]
    # Only the subspaces of W are used, not its scale: the signal is assumed to be
    # carried isometrically (as by an isometric initialisation), so that
    # tr Σ_xx = tr Σ_s + d_a σ_a² and tr Σ_yy = tr Σ_s + d_b σ_b².
    if var_null_a.size:
        sig_a = var_null_a.mean()
        sig_b = (np.trace(Cy) - np.trace(Cx) + d_a * sig_a) / d_b
    elif var_out_b.size:
        sig_b = var_out_b.mean()
        sig_a = (np.trace(Cx) - np.trace(Cy) + d_b * sig_b) / d_a
    else:
        return None
    if not (np.isfinite(sig_a) and np.isfinite(sig_b)) or max(sig_a, sig_b) <= 0:
        return None
    return [float(max(sig_a, 0.0)), float(max(sig_b, 0.0))]


def shrink_filter(Z: np.ndarray, sigma2: float) -> np.ndarray:
    """Wiener filter ``F = Σ^{-1}(Σ - σ² I)`` of rows ``Z`` (eigenvalues clipped at 0), float32."""
    ev, E = np.linalg.eigh(np.cov(Z.astype(np.float64), rowvar=False))
    f = np.clip(ev - sigma2, 0.0, None) / np.maximum(ev, 1e-12)
    return ((E * f) @ E.T).astype(np.float32)


def apply_filter(Zn: np.ndarray, F: np.ndarray) -> np.ndarray:
    """Apply an input filter to unit rows, then back to unit rows (what a translator trained on unit rows expects)."""
    Z = Zn @ F
    return (Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def input_filters(Xn: np.ndarray, Yn: np.ndarray, W: np.ndarray) -> Tuple[Optional[List[float]], np.ndarray, np.ndarray]:
    """``(noise, F_a, F_b)`` for unit rows ``Xn``, ``Yn`` and a map ``W`` between them:
    the noise variances and both input filters; identities (and None) when the
    noise is not identifiable."""
    noise = noise_variances(Xn, Yn, W)
    if noise is None:
        return None, np.eye(Xn.shape[1], dtype=np.float32), np.eye(Yn.shape[1], dtype=np.float32)
    return noise, shrink_filter(Xn, noise[0]), shrink_filter(Yn, noise[1])
