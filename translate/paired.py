"""Paired oracles: maps fitted on *paired* rows (x_i, y_i). They set the ceiling
that the unpaired translators (:mod:`translate.isometric`, :mod:`translate.vec2vec`)
are measured against.

- :class:`Procrustes` -- orthogonal Procrustes (Schönemann 1966): with centred
  rows, ``W = U Vᵀ`` where ``U Σ Vᵀ = Xᵀ Y`` (thin SVD), the maximiser of
  ``tr(Wᵀ XᵀY)`` over (semi-)orthogonal W. When d_a <= d_b (orthonormal rows,
  ``W Wᵀ = I``, an isometric embedding of A into B) ``||XW||`` does not depend on
  W and this is also ``argmin ||X W - Y||_F``. When d_a > d_b (orthonormal
  columns, ``WᵀW = I``: a projection followed by a rotation) it is not: the
  least-squares projection would also depend on how much of X each direction
  keeps, which an unpaired isometry cannot know either, so both use the polar factor.
  Optionally the least-squares isotropic scale ``s = tr Σ / ||X||²_F`` (the
  "extended" Procrustes of Schönemann & Carroll 1970).
- :class:`Linear` -- ridge regression ``W = (XᵀX + α I)⁻¹ XᵀY`` on centred rows.

Both centre each space (the means are learned state, saved with the model) and
return vectors in B's original coordinates: ``transform(x) = s·(p_A(x)) W`` mapped
back through B's preprocessing, so the cosine between a translated row and a true
B row is meaningful.

The preprocessing helper :class:`SpacePrep` is shared with
:class:`translate.isometric.Isometric`: optional row normalisation in the VecMap
order (Artetxe et al. 2018, "A robust self-learning method for fully unsupervised
cross-lingual mappings of word embeddings", ACL): unit length, centre, unit length.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

from align.device import one_blas_thread

from .base import Translator

__all__ = ["Procrustes", "Linear", "orthogonal_procrustes", "SpacePrep", "check_map_state", "check_stats"]

_EPS = 1e-12
# Gram eigenvalues below this fraction of the largest count as zero (see orthogonal_procrustes).
_POLAR_COND = 1e-10


def _unit_rows(Z: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(Z, axis=1, keepdims=True)
    return Z / np.maximum(n, _EPS)


def _unit_rows_inplace(Z: np.ndarray) -> None:
    n = np.linalg.norm(Z, axis=1, keepdims=True)
    Z /= np.maximum(n, _EPS)


def orthogonal_procrustes(M: np.ndarray) -> np.ndarray:
    """Polar factor ``U Vᵀ`` of the cross-covariance ``M = Xᵀ Y`` (d_a, d_b).

    It maximises ``tr(Wᵀ M)`` over (semi-)orthogonal ``W`` of shape (d_a, d_b):
    orthonormal columns when d_a >= d_b, orthonormal rows otherwise.
    Computed in float64 (a float32 cross-covariance loses orthogonality) as
    ``(M Mᵀ)^{-1/2} M`` from the eigendecomposition of the smaller Gram matrix,
    3x faster than the SVD at 384 x 768. Directions where the Gram has
    (relatively) no energy -- a centred space has at least one -- do not change
    ``tr(Wᵀ M)``; they are sent to an orthonormal basis of what the others leave
    free, so W stays (semi-)orthogonal, as the SVD would make it.
    """
    M = np.asarray(M, dtype=np.float64)
    if M.shape[0] > M.shape[1]:
        return orthogonal_procrustes(M.T).T
    with one_blas_thread():
        lam, U = np.linalg.eigh(M @ M.T)
        # eigh of the Gram squares M's condition number: below this ratio an
        # eigenvalue is rounding error, and so would its inverse square root be
        keep = lam > _POLAR_COND * max(lam[-1], 0.0)
        Ur = U[:, keep]
        R = (Ur / np.sqrt(lam[keep])).T @ M  # orthonormal rows spanning M's row space
        W = Ur @ R
        n_free = int(np.sum(~keep))
        if n_free:
            W += U[:, ~keep] @ _complement(R, n_free).T
        return W


def _complement(R: np.ndarray, n: int) -> np.ndarray:
    """``n`` orthonormal columns orthogonal to the orthonormal rows of R (r, d).

    Fixed pseudo-random vectors with R's row space projected out (twice, for
    rounding), then a thin QR: O(d r n), where the complete QR of Rᵀ cost O(d² r)
    and half the time of the polar factor (0.08 of 0.16 s at 381 x 768).
    """
    G = np.random.default_rng(0).standard_normal((R.shape[1], n))
    for _ in range(2):
        G -= R.T @ (R @ G)
    Q, _ = np.linalg.qr(G)
    return Q


class SpacePrep:
    """Per-space preprocessing ``p(z)``: [unit rows], centre, [unit rows].

    The statistics it learns (mean of the normalised rows; typical norms used to
    undo the preprocessing on B's side) are saved with the translator:

    - ``mean`` : (d,) float32, the mean subtracted (zeros when ``center=False``);
    - ``norm_in`` : median row norm of the raw rows (restores B's scale);
    - ``norm_mid`` : median row norm after centring (restores the relative size of
      the mean and the centred part when ``normalize=True``).

    ``inverse`` maps a centred(-and-normalised) direction back to raw coordinates:
    ``z = norm_in · (norm_mid · u + mean)`` with ``normalize=True``, ``u + mean``
    otherwise. Cosines against true rows are then meaningful because the mean is
    restored in the same proportion as in real rows.
    """

    def __init__(self, center: bool, normalize: bool):
        self.center, self.normalize = bool(center), bool(normalize)

    def fit(self, Z: np.ndarray) -> Tuple[np.ndarray, Dict[str, float], np.ndarray]:
        Z64 = Z.astype(np.float64)
        norm_in = float(np.median(np.linalg.norm(Z64, axis=1)))
        if self.normalize:
            Z64 = _unit_rows(Z64)
        mean = Z64.mean(axis=0) if self.center else np.zeros(Z.shape[1])
        Zc = Z64 - mean
        norm_mid = float(np.median(np.linalg.norm(Zc, axis=1)))
        if self.normalize:
            Zc = _unit_rows(Zc)
        return mean.astype(np.float32), {"norm_in": norm_in, "norm_mid": norm_mid}, Zc.astype(np.float32)

    # apply and inverse make one new array and work in it: `reptrans transform` streams
    # chunks through them, and each temporary would be one more chunk held in memory.
    def apply(self, Z: np.ndarray, mean: np.ndarray) -> np.ndarray:
        Z = np.array(Z, dtype=np.float32)
        if self.normalize:
            _unit_rows_inplace(Z)
        Z -= mean
        if self.normalize:
            _unit_rows_inplace(Z)
        return Z

    def inverse(self, U: np.ndarray, mean: np.ndarray, stats: Dict[str, float]) -> np.ndarray:
        if not self.normalize:
            return U + mean
        Z = _unit_rows(U)
        Z *= stats["norm_mid"]
        Z += mean
        Z *= stats["norm_in"]
        return Z


def check_map_state(t: Translator) -> None:
    """A loaded linear translator's ``W_`` (d_in, d_out), ``mean_a_``, ``mean_b_`` and
    ``stats_b_`` (:class:`SpacePrep`'s norms) must fit its widths; ValueError otherwise."""
    name = type(t).__name__
    expect = {"W_": (t.d_in_, t.d_out_), "mean_a_": (t.d_in_,), "mean_b_": (t.d_out_,)}
    for attr, shape in expect.items():
        arr = getattr(t, attr)
        if tuple(arr.shape) != shape:
            raise ValueError(f"{name}: saved {attr} has shape {tuple(arr.shape)}, expected {shape}")
    check_stats(t.stats_b_, f"{name}: saved stats_b_")


def check_stats(stats: Any, where: str) -> None:
    """:class:`SpacePrep`'s saved norms: a dict of positive finite ``norm_in``, ``norm_mid``."""
    if not isinstance(stats, dict) or set(stats) != {"norm_in", "norm_mid"}:
        raise ValueError(f"{where} must hold norm_in and norm_mid, got {stats!r}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0
               for v in stats.values()):
        raise ValueError(f"{where} must be positive finite numbers, got {stats!r}")


class _PairedBase(Translator):
    """Shared plumbing: preprocessing per space, a linear map ``W_`` and the inverse on B."""

    paired = True
    _state = ("W_", "mean_a_", "mean_b_")
    _state_meta = ("scale_", "stats_b_")

    center: bool
    normalize: bool

    def _prep(self) -> SpacePrep:
        return SpacePrep(self.center, self.normalize)

    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        prep = self._prep()
        self.mean_a_, _, Xp = prep.fit(X)
        self.mean_b_, self.stats_b_, Yp = prep.fit(Y)
        W, s = self._solve(Xp.astype(np.float64), Yp.astype(np.float64))
        self.W_ = W.astype(np.float32)
        self.scale_ = float(s)
        resid = Xp.astype(np.float64) @ W * s - Yp
        self.history_.append({"step": 0, "mse": float(np.mean(resid**2))})

    def _solve(self, X: np.ndarray, Y: np.ndarray) -> Tuple[np.ndarray, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _transform(self, X: np.ndarray) -> np.ndarray:
        prep = self._prep()
        U = (prep.apply(X, self.mean_a_) @ self.W_) * np.float32(self.scale_)
        return prep.inverse(U, self.mean_b_, self.stats_b_)

    def _check_state(self) -> None:
        check_map_state(self)
        if not isinstance(self.scale_, (int, float)) or not np.isfinite(self.scale_):
            raise ValueError(f"{type(self).__name__}: saved scale_ must be a finite number, got {self.scale_!r}")


class Procrustes(_PairedBase):
    """Orthogonal (semi-orthogonal when widths differ) map fitted on paired rows.

    Parameters
    ----------
    center : subtract each space's mean before fitting (learned, saved).
    normalize : VecMap preprocessing -- unit rows, centre, unit rows -- in both spaces: the spaces
        :class:`translate.Isometric` maps, and the stronger oracle for cosine retrieval between sentence
        encoders (minilm -> e5, 5k pairs: top-1 0.987 against 0.907 centred only; docs/ladder.md).
    scale : also fit the least-squares isotropic scale ``s = tr Σ / ||X||²_F``
        (does not change cosines between translated rows; it matters only for
        the relative size of the restored B mean and for squared errors).

    ``fit(X, Y)``: rows of X and Y are paired samples. ``transform(X)`` returns
    (n, d_b) rows in B's original coordinates.

    Invariances: the fitted map is equivariant to any orthogonal transform of A or
    of B (``fit(XR, YS).W_ = Rᵀ W S``), and ``Y = XQ + c`` is recovered exactly.
    """

    def __init__(self, center: bool = True, normalize: bool = False, scale: bool = True):
        self.center = center
        self.normalize = normalize
        self.scale = scale

    def _solve(self, X: np.ndarray, Y: np.ndarray) -> Tuple[np.ndarray, float]:
        M = X.T @ Y
        W = orthogonal_procrustes(M)
        s = 1.0
        if self.scale:
            # tr(Wᵀ M) = sum of singular values of M; the least-squares scale.
            s = float(np.trace(W.T @ M) / max(float((X * X).sum()), _EPS))
        return W, s


class Linear(_PairedBase):
    """Ridge regression from A to B on paired rows: ``W = (XᵀX + α I)⁻¹ XᵀY``.

    Parameters
    ----------
    alpha : ridge penalty (>= 0) on the centred (and optionally normalised) rows.
    center : subtract each space's mean first (learned, saved).
    normalize : VecMap preprocessing -- unit rows, centre, unit rows -- in both spaces.

    The least-squares ceiling among linear maps; unlike :class:`Procrustes` it can
    shrink and shear directions, so it is not an isometry.
    """

    def __init__(self, alpha: float = 1.0, center: bool = True, normalize: bool = False):
        self.alpha = alpha
        self.center = center
        self.normalize = normalize

    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not np.isfinite(self.alpha) or self.alpha < 0:
            raise ValueError(f"alpha must be a finite number >= 0, got {self.alpha!r}")
        super()._fit(X, Y)

    def _solve(self, X: np.ndarray, Y: np.ndarray) -> Tuple[np.ndarray, float]:
        G = X.T @ X
        G[np.diag_indices_from(G)] += float(self.alpha)
        # lstsq also copes with a singular G at alpha = 0 (n < d): minimum-norm solution.
        W = np.linalg.lstsq(G, X.T @ Y, rcond=None)[0]
        return W, 1.0

