"""Plain functions on arrays for unpaired matching between two embedding spaces:
the building blocks of :class:`translate.isometric.Isometric` and
:class:`translate.universal.Universal` (POT's style: each a formula and its
reference).

Rows are unit vectors throughout; a map ``W`` (d_a, d_b) is orthogonal, or
semi-orthogonal when the widths differ.
"""

from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from align.device import one_blas_thread, parallel_map, row_blocks
from align.knn import knn, knn_both

from .paired import orthogonal_procrustes

__all__ = [
    "unit_rows", "polar", "mean_map", "distinct_rows", "random_map", "cross", "entropic_plan", "plan_cross", "transport_step",
    "best_schedule", "gromov_starts",
    "common_space", "csls_match", "signatures", "subsample", "block_assignment", "qap_swap_search", "match_kernels",
    "centred_kernel", "centroid_anchors", "relative_targets", "pair_ranks", "pairs_found",
]

# Sinkhorn scalings per transport plan: the refinement's top-1 was the same with 10 and 30
# (minilm <-> mpnet, 11.5k rows per side), and lower with none (a plain softmax, unbalanced).
SINKHORN_ITERS = 10


def unit_rows(Z: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(Z, axis=1, keepdims=True)
    return (Z / np.maximum(n, 1e-12)).astype(np.float32, copy=False)


def polar(M: np.ndarray) -> np.ndarray:
    return orthogonal_procrustes(M).astype(np.float32)


def mean_map(*maps: np.ndarray) -> np.ndarray:
    """The (semi-)orthogonal map nearest the mean of several, ``polar(W1 + W2 + ...)`` (summed in float64, in
    order): it maximises ``Σ_k tr(Wᵀ W_k)``, i.e. is nearest them all in Frobenius norm. Of estimates of one map
    from different starts or seeds, it averages their partly independent errors; of two rotations it is the
    rotation halfway between them."""
    if not maps:
        raise ValueError("maps: mean_map needs at least one map")
    M = np.array(maps[0], dtype=np.float64)
    for W in maps[1:]:
        M += W
    return polar(M)


def distinct_rows(Z: np.ndarray, rows: Optional[np.ndarray]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Z without exact repeats of an earlier row (first occurrences, in their order: Z itself when none repeats),
    and ``rows`` (indices into Z) mapped to the kept row holding the same values."""
    _, first, inverse = np.unique(Z, axis=0, return_index=True, return_inverse=True)
    if len(first) == len(Z):
        return Z, rows
    keep = np.sort(first)
    pos = np.empty(len(Z), np.int64)
    pos[keep] = np.arange(len(keep))
    return Z[keep], None if rows is None else pos[first[inverse.reshape(-1)][rows]]


def random_map(d_a: int, d_b: int, rng: np.random.Generator) -> np.ndarray:
    return polar(rng.standard_normal((d_a, d_b)))


def cross(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """``Xᵀ Y`` summed in float32 (float64 would double the time; the polar factor
    of the float32 sum differs by ~1e-7 relative), returned in float64 for the polar factor."""
    return np.asarray(X.T @ Y, dtype=np.float64)


def entropic_plan(A: np.ndarray, B: np.ndarray, eps: float, n_iter: int) -> np.ndarray:
    """Entropic optimal transport plan between the rows of A and B (uniform weights).

    ``P = diag(u) K diag(v)`` with ``K_ij = exp(<a_i, b_j> / eps)`` and Sinkhorn's
    alternate scalings (Cuturi 2013, "Sinkhorn distances", NeurIPS) so that every
    row of P sums to 1/n_a and every column to 1/n_b. Each row of K is shifted by
    its maximum before the exponential (a per-row constant that u absorbs), so
    float32 neither overflows nor loses the largest entries. Returned scaled by
    n_a (rows sum to 1, columns to n_a / n_b): with entries near 1/n² instead of
    1/n, the products with P ran 3-4x slower (OpenBLAS, float32, 11.5k rows).
    Computed in place: one (n_a, n_b) float32 buffer, its element-wise passes
    in cache-sized row blocks on every thread (:func:`align.device.row_blocks`;
    the same values as whole-matrix passes).
    """
    K = A @ B.T
    inv_eps = np.float32(1.0 / eps)
    row_bytes = K.shape[1] * K.itemsize

    def kernel(s: int, e: int) -> None:
        rows = K[s:e]
        rows -= rows.max(axis=1, keepdims=True)
        rows *= inv_eps
        np.exp(rows, out=rows)

    row_blocks(kernel, len(K), row_bytes)
    n_a, n_b = K.shape
    tiny = np.float32(1e-30)  # a row whose every entry underflowed gets no mass rather than a division by 0
    v = np.ones(n_b, np.float32)
    for _ in range(max(1, n_iter)):
        u = np.float32(1.0) / np.maximum(K @ v, tiny)
        v = np.float32(n_a / n_b) / np.maximum(K.T @ u, tiny)

    def scale(s: int, e: int) -> None:
        rows = K[s:e]
        rows *= u[s:e, None]
        rows *= v[None, :]

    row_blocks(scale, n_a, row_bytes)
    return K


def plan_cross(P: np.ndarray, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """``Xᵀ P Y`` (float64) for a plan P between the rows of X and Y, the n × n product on the narrower side."""
    return cross(P.T @ X, Y) if X.shape[1] <= Y.shape[1] else cross(X, P @ Y)


def transport_step(X: np.ndarray, Y: np.ndarray, W: np.ndarray, eps: float,
                   procrustes: Optional[Callable[[np.ndarray, int], np.ndarray]] = None) -> Tuple[np.ndarray, float]:
    """One Wasserstein-Procrustes step (Grave, Joulin & Berthet 2019): ``W <- polar(Xᵀ P Y)``, P the
    entropic plan (:func:`entropic_plan`) of the similarities under W at temperature ``eps``: each row
    of X pulled toward a weighted average of Y's. ``procrustes(M, n_rows)`` replaces the polar factor
    (known pairs add their own term). Returns the map and ``tr(Wᵀ M) / n_a``, the mean similarity the
    plan transports (its rows sum to 1)."""
    M = plan_cross(entropic_plan(*common_space(X, Y, W), eps, SINKHORN_ITERS), X, Y)
    W = polar(M) if procrustes is None else procrustes(M, len(X))
    return W, float(np.sum(W * M)) / len(X)


def best_schedule(step: Callable[[np.ndarray, float, int], np.ndarray], W: np.ndarray,
                  criterion: Callable[[np.ndarray], float], eps_values: Sequence[float], max_steps: int,
                  tol: float, patience: int = 2) -> Tuple[float, int, float]:
    """The temperature and number of steps of an iterated refinement that ``criterion`` (higher is
    better) prefers: from W, for each ε of ``eps_values`` in turn, ``W <- step(W, ε, i)`` for i = 1 ..
    ``max_steps``, ended after ``patience`` steps without a gain of ``tol`` on that ε's best; the scan
    ends after ``patience`` values of ε in a row that do not hold the best so far (W itself counts as
    the first ε's; the criterion along ε need not be unimodal: minilm -> mpnet at 2k rows per side,
    0.05 > 0.1 < 0.2). Returns (ε, steps,
    criterion) of the best map seen; steps 0 when none beat W."""
    best, behind = (eps_values[0], 0, criterion(W)), 0
    for e in eps_values:
        W_e, top, stall = W, -np.inf, 0
        for i in range(1, max_steps + 1):
            W_e = step(W_e, e, i)
            crit = criterion(W_e)
            stall = 0 if crit > top + tol else stall + 1
            top = max(top, crit)
            if crit > best[2]:
                best = (e, i, crit)
            if stall >= patience:
                break
        behind = 0 if best[0] == e else behind + 1
        if behind >= patience:
            break
    return best


def gromov_starts(X: np.ndarray, Y: np.ndarray, n_starts: int, eps: Sequence[float],
                  rng: np.random.Generator) -> List[Tuple[float, np.ndarray]]:
    """Maps from entropic Gromov-Wasserstein couplings of the rows of X and Y (unit rows), best first.

    Inner-product Gromov-Wasserstein with linear kernels ``C_X = X Xᵀ``, ``C_Y = Y Yᵀ`` (Alvarez-Melis &
    Jaakkola 2018, EMNLP: GW aligns embedding spaces without a start map)::

        max_P  tr(C_X P C_Y Pᵀ) = ||Xᵀ P Y||_F²,   P a coupling,

    by the entropic mirror steps of Peyré, Cuturi & Solomon 2016 (ICML): ``P <- plan(C_X P C_Y / ε)``, whose
    gradient ``X M Yᵀ``, ``M = Xᵀ P Y``, costs n²·d instead of n³ (the rank of the kernels; the square loss's
    other terms are row and column constants, absorbed by Sinkhorn). The Frobenius norm, unlike the nuclear
    norm of Wasserstein-Procrustes (``polar``), weighs each shared direction by its variance, so the
    main directions settle first. ε anneals along ``eps`` in units of the gradient's RMS. Each start is a random
    coupling (a permutation); returns ``(||M||_F² / n², polar(M))`` per start, highest first: on one subsample
    the right basin scored highest (minilm -> mpnet, 1k-2k rows per side: ``docs/translation.md``)."""
    Sx, Sy = cross(X, X), cross(Y, Y)
    out = []
    for _ in range(n_starts):
        M = cross(X, Y[rng.permutation(len(Y))[: len(X)]]) if len(Y) >= len(X) else \
            cross(X[rng.permutation(len(X))[: len(Y)]], Y)
        for e in eps:
            rms = math.sqrt(max(float(np.sum((Sx @ M) * (M @ Sy))), 1e-30) / (len(X) * len(Y)))
            M = plan_cross(entropic_plan(X, Y @ (M.T / rms).astype(np.float32), float(e), SINKHORN_ITERS), X, Y)
        out.append((float(np.sum(M * M)) / len(X) ** 2, polar(M)))
    return sorted(out, key=lambda t: -t[0])


def common_space(X: np.ndarray, Y: np.ndarray, W: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(A, B) with ``A @ B.T = cos(X W, Y)`` for unit rows, in min(d_a, d_b) dims.

    d_a <= d_b: W has orthonormal rows, |xW| = |x| = 1, so cos = <x, y Wᵀ>.
    d_a > d_b: W has orthonormal columns, xW is shorter than x: renormalise it.
    """
    if X.shape[1] <= Y.shape[1]:
        return X, np.ascontiguousarray(Y @ W.T)
    return unit_rows(X @ W), Y


def csls_match(A: np.ndarray, B: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSLS best match of each row of A in B and of each row of B in A.

    CSLS(a, b) = 2 cos(a, b) - r_B(a) - r_A(b), r = mean cosine to the k nearest
    rows of the other set (Conneau et al. 2018). The best match is taken among
    the k cosine nearest neighbours. Returns (forward match (na,), its CSLS
    score (na,), backward match (nb,)).
    """
    (sa, ia), (sb, ib) = knn_both(A, B, k, metric="ip")
    ra, rb = sa.mean(axis=1), sb.mean(axis=1)
    cf = 2.0 * sa - ra[:, None] - rb[ia]
    cb = 2.0 * sb - rb[:, None] - ra[ib]
    af, ab = cf.argmax(axis=1), cb.argmax(axis=1)
    rows_a, rows_b = np.arange(len(A)), np.arange(len(B))
    return ia[rows_a, af], cf[rows_a, af], ib[rows_b, ab]


def signatures(Z: np.ndarray, n_quantiles: int) -> np.ndarray:
    """Rotation-invariant row descriptors: sorted rows of sqrt(Z Zᵀ) (VecMap).

    ``Z = U S Vᵀ`` gives ``sqrt(Z Zᵀ) = U S Uᵀ = F Fᵀ`` with ``F = Z V S^{-1/2}``, V and
    S² from the eigendecomposition of the small Gram ``Zᵀ Z`` (d × d): the same matrix
    as from the SVD of Z (5e-15 apart at 4000 × 384), 10x faster under load. Directions
    with no energy (a centred Z has one) add nothing to ``U S Uᵀ`` and are dropped.
    Each row is sorted in decreasing order and read at ``n_quantiles`` log-spaced
    positions (dense at the top, where the nearest neighbours are), then
    unit-centre-unit normalised.
    """
    Z64 = Z.astype(np.float64)
    with one_blas_thread():
        lam, V = np.linalg.eigh(Z64.T @ Z64)
    keep = lam > 1e-12 * max(lam[-1], 0.0)
    F = (Z64 @ (V[:, keep] / lam[keep] ** 0.25)).astype(np.float32)
    # float32 and sorted in place (ascending, read from the end): the n×n Gram is the
    # cost (4x faster at 4000 rows than a float64 sort of its negation); the values read
    # differ from float64's by float32 rounding only; rows sorted in blocks on every thread
    G = F @ F.T
    row_blocks(lambda s, e: G[s:e].sort(axis=1), len(G), G.shape[1] * G.itemsize)
    m = G.shape[1]
    pos = np.arange(m) if n_quantiles >= m else np.unique(np.geomspace(1, m, n_quantiles).astype(np.int64)) - 1
    G = unit_rows(G[:, m - 1 - pos].astype(np.float64))
    G = G - G.mean(axis=0)
    return unit_rows(G)


def subsample(Z: np.ndarray, rows: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``rows`` random rows of Z (all of them, in order, when there are fewer)."""
    if len(Z) <= rows:
        return Z
    return Z[np.sort(rng.permutation(len(Z))[:rows])]


def block_assignment(A: np.ndarray, B: np.ndarray, block: int, rng: np.random.Generator):
    """Random blocks of rows on each side, exact assignment inside each block.

    Returns (rows of A, rows of B, mean cosine of the matched pairs).
    """
    from scipy.optimize import linear_sum_assignment

    n_blocks = max(1, min(len(A), len(B)) // block)
    pa = np.array_split(rng.permutation(len(A)), n_blocks)
    pb = np.array_split(rng.permutation(len(B)), n_blocks)

    def assign(blocks: Tuple[np.ndarray, np.ndarray]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        ca, cb = blocks
        S = A[ca] @ B[cb].T
        r, c = linear_sum_assignment(S, maximize=True)
        return ca[r], cb[c], S[r, c]

    # blocks of a few hundred rows: a BLAS thread pool only adds its spin-waits (4000 rows, blocks of 250, two
    # cores under load: 1.08 s with 2 threads, 0.43 s with 1); the blocks instead run side by side
    # (linear_sum_assignment releases the GIL), each as it would alone
    with one_blas_thread():
        I, J, s = zip(*parallel_map(assign, list(zip(pa, pb))))
    return np.concatenate(I), np.concatenate(J), float(np.concatenate(s).mean())




# ---------------------------------------------------------------------------
# initialisation from cluster centroids matched by a quadratic assignment


def qap_swap_search(A: np.ndarray, B: np.ndarray, perm: np.ndarray, max_passes: int = 1000) -> Tuple[np.ndarray, float]:
    """Local search for the quadratic assignment ``max_p Σ_kl A_kl B_{p(k) p(l)}``
    (A, B symmetric n×n) by best-improving swaps of two assignments (2-opt, as in
    scipy's ``quadratic_assignment(method="2opt")``), from ``perm``.

    Every swap's gain comes from one product ``S = A B_p`` (``B_p = B[p][:, p]``):
    swapping i and j changes the objective by
    ``2[(S_ij + S_ji - S_ii - S_jj) - (A_ii - A_ij)(B_ij - B_ii) - (A_ij - A_jj)(B_jj - B_ij)]
    + (A_ii - A_jj)(B_jj - B_ii)`` (B for B_p), so a pass is O(n³) in one product
    instead of O(n⁴). Returns (permutation, objective).
    """
    p = np.array(perm, dtype=np.int64)
    dA = np.diag(A)
    for _ in range(max_passes):
        Bp = B[p][:, p]
        S = A @ Bp
        dS, dB = np.diag(S), np.diag(Bp)
        gain = 2.0 * ((S + S.T - dS[:, None] - dS[None, :])
                      - (dA[:, None] - A) * (Bp - dB[:, None])
                      - (A - dA[None, :]) * (dB[None, :] - Bp))
        gain += (dA[:, None] - dA[None, :]) * (dB[None, :] - dB[:, None])
        np.fill_diagonal(gain, 0.0)
        i, j = np.unravel_index(int(np.argmax(gain)), gain.shape)
        if gain[i, j] <= 1e-12 * max(1.0, abs(float(np.sum(A * Bp)))):
            break
        p[i], p[j] = p[j], p[i]
    return p, float(np.sum(A * B[p][:, p]))


def match_kernels(A: np.ndarray, B: np.ndarray, restarts: int, rng: np.random.Generator) -> Tuple[np.ndarray, float]:
    """Best of ``restarts`` swap searches (:func:`qap_swap_search`) from random
    permutations: the assignment of the rows of A to the rows of B that best
    aligns the two kernels (Schnaus et al. 2026 and Dar 2025 match k-means
    centroids this way, with many restarts because the QAP is NP-hard)."""
    best_p, best_f = None, -np.inf
    for _ in range(restarts):
        p, f = qap_swap_search(A, B, rng.permutation(len(A)))
        if f > best_f:
            best_p, best_f = p, f
    return best_p, best_f


def centred_kernel(C: np.ndarray) -> np.ndarray:
    """Double-centred Gram matrix ``H C Cᵀ H`` of unit rows (the kernel CKA compares)."""
    K = unit_rows(C).astype(np.float64) @ unit_rows(C).T.astype(np.float64)
    K -= K.mean(axis=0, keepdims=True)
    K -= K.mean(axis=1, keepdims=True)
    return K


def centroid_anchors(X: np.ndarray, Y: np.ndarray, n_clusters: int, n_runs: int, qap_restarts: int,
                     rows: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Pairs of anchors without pairs: ``n_runs`` times, k-means (``n_clusters``)
    on a random subsample of each side, the centroids of the two sides matched by
    the quadratic assignment of their centred kernels (:func:`match_kernels`).
    Returns the (n_runs · n_clusters) matched centroids of each side (unit rows).

    Following mini-vec2vec (Dar 2025, arXiv 2510.02348: 30 runs of k-means(20) on
    10k-row subsamples, 600 anchors) and Schnaus et al. 2026: one run's matching
    is often wrong in places; pooled over runs, consistent anchors dominate.
    """
    from sklearn.cluster import KMeans

    out_a, out_b = [], []
    for _ in range(n_runs):
        Xs, Ys = subsample(X, rows, rng), subsample(Y, rows, rng)
        seeds = rng.integers(0, 2**31 - 1, size=2)
        Ca = KMeans(n_clusters, n_init=1, random_state=int(seeds[0])).fit(Xs).cluster_centers_
        Cb = KMeans(n_clusters, n_init=1, random_state=int(seeds[1])).fit(Ys).cluster_centers_
        perm, _ = match_kernels(centred_kernel(Ca), centred_kernel(Cb), qap_restarts, rng)
        out_a.append(unit_rows(Ca))
        out_b.append(unit_rows(Cb[perm]))
    return np.concatenate(out_a), np.concatenate(out_b)


def relative_targets(X: np.ndarray, Y: np.ndarray, anchors_a: np.ndarray, anchors_b: np.ndarray,
                     k: int) -> np.ndarray:
    """For each row of X, the mean of the ``k`` rows of Y whose relative
    representations are nearest to its own.

    A row's relative representation is its cosine to each anchor of its space
    (Moschella et al. 2023, "Relative representations enable zero-shot latent
    space communication", ICLR); with matched anchors these are comparable across
    spaces. Soft targets (the mean of k) follow mini-vec2vec (k = 50).
    """
    Ra = unit_rows(X @ anchors_a.T)
    Rb = unit_rows(Y @ anchors_b.T)
    Ra -= Ra.mean(axis=0)
    Rb -= Rb.mean(axis=0)
    _, idx = knn(unit_rows(Ra), min(k, len(Y)), database=unit_rows(Rb), metric="ip", exclude_self=False)
    return Y[idx].mean(axis=1)


def pair_ranks(Xk: np.ndarray, Yk: np.ndarray, Y: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Rank (1 = first) of each known target ``Yk[i]`` among the rows of Y, by cosine
    to the translation of ``Xk[i]`` under W; each ``Yk[i]`` is one of Y's rows.

    The retrieval rank of held-out known pairs: a map fitted without them that ranks
    them first has found the relation, where a wrong map ranks them at random (uniform
    on 1..len(Y)).
    """
    A, B = common_space(Xk, Y, W)
    _, Bk = common_space(Xk, Yk, W)
    true = np.sum(A * Bk, axis=1)
    # the tolerance keeps the true row from outranking itself through rounding
    return 1 + np.sum(A @ B.T > true[:, None] + 1e-6, axis=1)


def pairs_found(Xk: np.ndarray, Yk: np.ndarray, Y: np.ndarray, W: np.ndarray, top: float) -> int:
    """How many known pairs rank in the top ``top`` share of Y's rows under W
    (:func:`pair_ranks`; at least rank 1): a map unrelated to them finds each with chance ``top``."""
    return int(np.sum(pair_ranks(Xk, Yk, Y, W) <= max(1.0, top * len(Y))))
