"""Array functions behind :class:`translate.universal.Universal`: synchronising
pairwise maps into one map per space, measuring how far they disagree, and the
joint (generalised Wasserstein-Procrustes) refinement of all maps against a
shared latent space.

Notation. Space ``i`` has width ``d_i``; its rows are preprocessed to unit vectors
(:class:`translate.paired.SpacePrep`). Its map into the latent space (width ``D``,
the largest width) is ``U_i`` (d_i, D) with orthonormal rows, so ``x U_i`` keeps
lengths. A pairwise map ``W_ij`` (d_i, d_j) is (semi-)orthogonal, as
:class:`translate.isometric.Isometric` learns it, and the synchronised maps
translate ``i -> j`` by ``U_i U_jᵀ``. Any ``U_i -> U_i R`` (R orthogonal, D×D)
translates identically (the gauge); :func:`fix_gauge` picks one.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .matching import SINKHORN_ITERS, cross, csls_match, entropic_plan, polar, unit_rows

__all__ = ["spectral_sync", "sync_iterate", "fix_gauge", "map_agreement", "pair_space", "joint_refine",
           "latent_criterion"]

Pair = Tuple[int, int]


def spectral_sync(maps: Dict[Pair, np.ndarray], weights: Dict[Pair, float], widths: Sequence[int],
                  dim: int) -> List[np.ndarray]:
    """One map per space from weighted pairwise maps (spectral synchronisation).

    The block matrix ``M`` (Σd_i square) has blocks ``M_ij = w_ij W_ij``,
    ``M_ji = w_ij W_ijᵀ`` and ``M_ii = (Σ_j w_ij) I``. When every ``W_ij = U_i U_jᵀ``
    exactly (and the widths are equal) ``M`` is ``U (Λ_w ⊗ I) Uᵀ`` in a rotated
    basis, whose ``D`` top eigenvectors are ``v_i U_i`` with ``v`` the positive
    Perron vector of the weight graph: the polar factor of each block then gives
    ``U_i`` up to one common rotation (Singer 2011, "Angular synchronization by
    eigenvectors and semidefinite programming"; Marcos-Manchón, Jha & Fuentemilla
    2026 synchronise encoders' pairwise rotations this way). With unequal widths
    it is a start that :func:`sync_iterate` completes.
    """
    offsets = np.concatenate([[0], np.cumsum(widths)]).astype(int)
    M = np.zeros((offsets[-1], offsets[-1]))
    degree = np.zeros(len(widths))
    for (i, j), W in maps.items():
        w = float(weights[(i, j)])
        M[offsets[i]:offsets[i + 1], offsets[j]:offsets[j + 1]] = w * W
        M[offsets[j]:offsets[j + 1], offsets[i]:offsets[i + 1]] = w * W.T
        degree[i] += w
        degree[j] += w
    for i in range(len(widths)):
        M[offsets[i]:offsets[i + 1], offsets[i]:offsets[i + 1]] = degree[i] * np.eye(widths[i])
    lam, V = np.linalg.eigh(M)
    V = V[:, ::-1][:, :dim]
    if V.shape[1] < dim:  # fewer rows than the latent width: pad (polar completes the rows)
        V = np.pad(V, ((0, 0), (0, dim - V.shape[1])))
    return [polar(V[offsets[i]:offsets[i + 1]]) for i in range(len(widths))]


def sync_iterate(U: List[np.ndarray], maps: Dict[Pair, np.ndarray], weights: Dict[Pair, float],
                 n_iter: int = 30, tol: float = 1e-4) -> List[np.ndarray]:
    """Block-coordinate ascent of ``Σ_ij w_ij <W_ij, U_i U_jᵀ>``: in turn each
    ``U_i <- polar(Σ_j w_ij W_ij U_j)`` (generalised Procrustes on the maps, Gower
    1975), until no map moves by more than ``tol`` (Frobenius norm over sqrt(d_i)) or for
    ``n_iter`` rounds. It converges slowly on noisy maps (three maps of widths 384/768/384
    fitted on different noisy data: still moving by 1e-5 after 100 rounds, 34 s), and it
    need not be precise: the joint refinement on the data follows.

    Consistent maps of different widths (each narrower space nested in the wider
    ones, as pairwise isometries imply) are a fixed point: the sum is ``B U_i``
    with ``B`` symmetric positive definite, whose polar factor is ``U_i``.
    """
    U = [u.astype(np.float64) for u in U]
    for _ in range(n_iter):
        moved = 0.0
        for i in range(len(U)):
            M = np.zeros_like(U[i])
            for (a, b), W in maps.items():
                if a == i:
                    M += weights[(a, b)] * (W @ U[b])
                elif b == i:
                    M += weights[(a, b)] * (W.T @ U[a])
            if not M.any():
                continue
            new = polar(M).astype(np.float64)
            moved = max(moved, float(np.linalg.norm(new - U[i]) / np.sqrt(len(new))))
            U[i] = new
        if moved < tol:
            break
    return [u.astype(np.float32) for u in U]


def fix_gauge(U: List[Optional[np.ndarray]], ref: int) -> List[Optional[np.ndarray]]:
    """Rotate the latent so that ``U[ref] = [I 0]``: the latent coordinates are
    then those of space ``ref`` (preprocessed), padded with zeros when it is narrower
    than the latent. The rotation is the orthonormal completion of ``U[ref]``'s rows
    (its full SVD), which does not change any translation ``U_i U_jᵀ``."""
    R = U[ref].astype(np.float64)
    _, _, Vt = np.linalg.svd(R, full_matrices=True)
    Q = np.concatenate([R, Vt[len(R):]])  # (D, D) orthogonal, first rows = U[ref]
    return [None if u is None else (u.astype(np.float64) @ Q.T).astype(np.float32) for u in U]


def pair_space(Xi: np.ndarray, Ui: np.ndarray, Xj: np.ndarray, Uj: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(A, B) with ``A Bᵀ = (X_i U_i)(X_j U_j)ᵀ``, in the narrower of the two widths:
    ``U_i U_iᵀ = I`` gives ``(X_i U_i)(X_j U_j)ᵀ = X_i (X_j U_j U_iᵀ)ᵀ`` -- the
    latent's inner products at a fraction of the cost (half, for 384 against 768)."""
    if Xi.shape[1] <= Xj.shape[1]:
        return Xi, np.ascontiguousarray((Xj @ Uj) @ Ui.T, dtype=np.float32)
    return np.ascontiguousarray((Xi @ Ui) @ Uj.T, dtype=np.float32), Xj


def map_agreement(X: np.ndarray, W1: np.ndarray, W2: np.ndarray) -> float:
    """Mean cosine between two maps' translations of the rows of X (Isometric's
    ``agree`` measure: 1 for the same map; two right maps of real encoders measured
    0.83-0.93, a right and a wrong one at most 0.22)."""
    return float(np.mean(np.sum(unit_rows(X @ W1) * unit_rows(X @ W2), axis=1)))


def latent_criterion(A: np.ndarray, B: np.ndarray, k: int) -> float:
    """Mean CSLS score of each row of A's best match among the rows of B (both unit,
    in the same space): Isometric's criterion."""
    return float(csls_match(A, B, min(k, len(A), len(B)))[1].mean())


def joint_refine(X: List[np.ndarray], U: List[np.ndarray], known: Dict[Pair, np.ndarray], k: int,
                 n_iter: int, ot_iter: int, ot_eps: float, ot_rows: int, pair_weight: float,
                 rng: np.random.Generator, history: list, change: float = 0.005) -> List[np.ndarray]:
    """Generalised Wasserstein-Procrustes: all maps at once against the shared latent.

    Each round maps every space into the latent (``Z_i = X_i U_i``), matches the
    rows of every pair of spaces there -- CSLS best match of each row of either
    side, both directions (Conneau et al. 2018; VecMap's union dictionary) -- and
    accumulates, per space, the cross-covariance of its rows with their matches'
    latent vectors from *all* the other spaces, ``M_i = Σ_j X_iᵀ Z_j[match]``;
    then ``U_i = polar(M_i)`` for every space (the hyperalignment step of Alaux,
    Grave, Cuturi & Joulin 2019, "Unsupervised hyperalignment for multilingual
    word embeddings", ICLR, with CSLS matches in place of their transport plans).
    A pair that is hard alone is held by the others: its rows are matched in a
    latent that the easier pairs have already aligned. Rounds stop when fewer than
    ``change`` of the matches change. ``ot_iter`` entropic rounds follow, as in
    Isometric's refinement (Sinkhorn plans with regularisation ``ot_eps`` on at most
    ``ot_rows`` random rows per space). Known pairs ``known[(i, j)]`` ((m, 2) rows
    of X_i, X_j) weigh ``pair_weight`` times the matched rows, as in Isometric.
    ``X`` holds all rows of each space; matching uses all of them.
    """
    N = len(X)
    pairs = [(i, j) for i in range(N) for j in range(i + 1, N)]

    def add_known(M, i, j, Z, scale):
        P = known.get((i, j))
        if P is not None:
            M[i] += (pair_weight * scale / len(P)) * cross(X[i][P[:, 0]], Z[j][P[:, 1]])
            M[j] += (pair_weight * scale / len(P)) * cross(X[j][P[:, 1]], Z[i][P[:, 0]])

    prev: Dict[Pair, Tuple[np.ndarray, np.ndarray]] = {}
    for step in range(n_iter):
        Z = [x @ u for x, u in zip(X, U)]
        M = [np.zeros(u.shape) for u in U]
        changed, total, score = 0, 0, []
        for i, j in pairs:
            kk = min(k, len(Z[i]), len(Z[j]))
            fwd, s, bwd = csls_match(*pair_space(X[i], U[i], X[j], U[j]), kk)
            M[i] += cross(X[i], Z[j][fwd]) + cross(X[i][bwd], Z[j])
            M[j] += cross(X[j], Z[i][bwd]) + cross(X[j][fwd], Z[i])
            add_known(M, i, j, Z, len(fwd) + len(bwd))
            if (i, j) in prev:
                changed += int(np.sum(prev[(i, j)][0] != fwd) + np.sum(prev[(i, j)][1] != bwd))
            total += len(fwd) + len(bwd)
            prev[(i, j)] = (fwd, bwd)
            score.append(float(s.mean()))
        U = [polar(m) for m in M]
        frac = 1.0 if step == 0 else changed / max(total, 1)
        history.append({"stage": "joint", "iter": step + 1, "objective": float(np.mean(score)), "changed": frac})
        if frac < change:
            break
    for step in range(ot_iter):
        idx = [np.sort(rng.permutation(len(x))[:ot_rows]) for x in X]
        Xs = [x[r] for x, r in zip(X, idx)]
        Z = [x @ u for x, u in zip(Xs, U)]
        Zall = [x @ u for x, u in zip(X, U)] if known else None
        M = [np.zeros(u.shape) for u in U]
        obj = []
        for i, j in pairs:
            P = entropic_plan(*pair_space(Xs[i], U[i], Xs[j], U[j]), ot_eps, SINKHORN_ITERS)  # rows sum to 1
            PZj = P @ Z[j]
            PZi = (P.T @ Z[i]) * np.float32(len(Z[j]) / len(Z[i]))
            del P
            M[i] += cross(Xs[i], PZj)
            M[j] += cross(Xs[j], PZi)
            obj.append(float(np.mean(np.sum(Z[i] * PZj, axis=1))))
            add_known(M, i, j, Zall, len(Xs[i]) + len(Xs[j]))
        U = [polar(m) for m in M]
        history.append({"stage": "transport", "iter": step + 1, "objective": float(np.mean(obj))})
    return U
