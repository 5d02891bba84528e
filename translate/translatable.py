"""Will two embedding spaces translate without pairs? A score from the two
unpaired sets alone, at a small fraction of the cost of a fit.

CKA predicts unpaired translation success across encoder pairs (Schnaus et al.
2026: R² ≈ 0.69) but needs paired rows. :func:`translatability` needs none. It
combines two rotation-invariant views of the two unpaired sets:

- **profile**: do the two clouds have the same local geometry? For equal-sized
  random subsamples of each (rows preprocessed as Isometric does: unit, centre,
  unit), the quantiles (5 %, 10 %, ..., 95 %) of each row's cosine similarity to
  its 1st and to its 10th nearest neighbour; ``profile_distance`` is the mean
  absolute difference of those quantiles (cosine units) and ``profile =
  exp(-profile_distance / 0.05)`` in (0, 1]. No rotation changes it; noise (which
  loosens neighbourhoods) and a structureless cloud (a Gaussian with the same
  covariance has the same spectrum but no clusters) do.
- **evidence**: does a quick unpaired map exist that two independent starts agree
  on? ``restarts`` short, cheap versions of :class:`translate.isometric.Isometric`'s
  search (its signature start, ``iters`` random-block assignment / Procrustes
  iterations and one CSLS polishing round on at most ``rows`` rows per side); each
  map's held-out criterion gain over random maps (Isometric's criterion, on
  ``val_rows`` held-out rows per side); ``evidence`` = the largest agreement (mean
  cosine between two maps' translations of the held-out rows, clipped to [0, 1])
  among pairs of restarts whose gains both reach 0.5 (Isometric's ``min_gain``).

``score = profile · (1 + evidence)``: the geometry must match, and a map that two
starts find again doubles the score at most. Measured with ``restarts=3``
(``details=True`` returns every component, so each can be checked against outcomes on
its own):

- synthetic, 32-d clustered cloud, 1000 rows (``tests/test_universal.py``): a rotated
  copy with 10 % noise scored 0.78-1.20 over 6 seeds, a slightly rotated copy with 30 %
  noise 0.32-0.49, a Gaussian of the first copy's covariance 0.05-0.07 -- the right order
  every time; the evidence alone did not rank them (the right pair's quick maps agreed
  0.06-0.34, the noisier pair's up to 0.38);
- real: minilm (texts [0, 7600)) against a rotation into 768-d of minilm embeddings of
  texts [7600, 15200): 0.96 with 10 % noise, 0.31 with 50 %, 0.11 for a Gaussian of the
  same covariance, in 5-7 s each (one thread, 2 shared cores; an Isometric fit of minilm
  -> mpnet on 11.5k texts per side takes 67-118 s, README). The evidence was <= 0.1 there: at this budget the
  quick maps do not find even an exact rotation of real embeddings, so on real encoders
  the score is mostly the profile. Calibration against achieved top-1 on real encoder
  pairs: ``scripts/universal_study.py`` (``docs/universal.md``).

Default: the profile alone (``restarts=0``), in about a second whatever the
sizes of the sets (at most 1.5 %, median 0.3 %, of an Isometric fit's time on the 20
ordered pairs of ``docs/translatability.md``). There the score's Spearman with the achieved
top-1 is 0.84 (ROC AUC 1.0 for the 12 pairs found against the 8 not): it puts the pairs of
final layers and the intermediate layer far above the GloVe averages. It reads the geometry,
not how hard the search will be: at 4500 texts per side it rates the e5 pairs (0.67-0.69)
above mpnet-L6 pairs that translate better (0.42-0.62; top-1 0.95-0.96 against 0.76-0.79).
The evidence is opt-in (``restarts=3``): there it cost 2-11 s per pair (median 3 % of a fit),
was 0-0.30, ranked the pairs no better alone (Spearman -0.16) and left the score's at 0.84.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Tuple, Union

import numpy as np

from align.knn import knn
from align.validation import as_matrix, check_positive_int

from .matching import block_assignment, common_space, cross, csls_match, polar, random_map, signatures
from .paired import SpacePrep
from .sync import map_agreement

__all__ = ["translatability", "profile_distance"]

_MIN_ROWS = 40
_QUANTILES = np.linspace(0.05, 0.95, 19)
# profile distances (cosine units) map to exp(-distance / this) in (0, 1]
_PROFILE_SCALE = 0.05
# a quick map counts as evidence only when its held-out gain reaches Isometric's default min_gain
_MIN_GAIN = 0.5


def translatability(X: Any, Y: Any, seed: int = 0, rows: int = 2000, restarts: int = 0, iters: int = 10,
                    init_rows: int = 1000, val_rows: int = 500, profile_rows: int = 1000, csls_k: int = 10,
                    details: bool = False) -> Union[float, Dict[str, Any]]:
    """Score (higher = more likely to translate) from two unpaired sets X (n_a, d_a), Y (n_b, d_b).

    Parameters
    ----------
    seed : seeds every random choice (same seed, same score).
    rows : rows per side used to fit the quick maps (a random subsample beyond it).
    restarts : quick maps from independent random starts (0, the default, or 1: no evidence,
        the profile alone).
    iters : block-assignment / Procrustes iterations per restart.
    init_rows : rows per side for the sorted-similarity signatures of the start.
    val_rows : held-out rows per side (at most a fifth of each set).
    profile_rows : rows per side (equal on both) for the neighbour-similarity profile.
    csls_k : neighbours for CSLS.
    details : return a dict instead of the score: ``score``, ``profile``,
        ``profile_distance``, ``evidence``, ``gains`` (per restart), ``agreements``
        ({"r,s": value}), ``null_criterion``, ``seconds``.
    """
    t0 = time.perf_counter()
    X = as_matrix(X, "X", dtype=np.float32, min_rows=_MIN_ROWS)
    Y = as_matrix(Y, "Y", dtype=np.float32, min_rows=_MIN_ROWS)
    check_positive_int(seed, "seed", minimum=0)
    rows = check_positive_int(rows, "rows", minimum=_MIN_ROWS)
    restarts = check_positive_int(restarts, "restarts", minimum=0)
    profile_rows = check_positive_int(profile_rows, "profile_rows", minimum=20)
    iters = check_positive_int(iters, "iters", minimum=0)
    init_rows = check_positive_int(init_rows, "init_rows", minimum=10)
    val_rows = check_positive_int(val_rows, "val_rows", minimum=10)
    csls_k = check_positive_int(csls_k, "csls_k")
    rng = np.random.default_rng(seed)

    def split(Z: np.ndarray):
        n_val = min(val_rows, len(Z) // 5)
        perm = rng.permutation(len(Z))
        Zs = Z[np.sort(perm[: n_val + rows])]
        _, _, Zp = SpacePrep(center=True, normalize=True).fit(Zs)
        cut = rng.permutation(len(Zp))
        return Zp[np.sort(cut[n_val:])], Zp[np.sort(cut[:n_val])]

    Xf, Xv = split(X)
    Yf, Yv = split(Y)
    k = min(csls_k, len(Xv), len(Yv))

    def criterion(W: np.ndarray) -> float:
        return float(csls_match(*common_space(Xv, Yv, W), k)[1].mean())

    d_a, d_b = X.shape[1], Y.shape[1]
    null = float(np.mean([criterion(random_map(d_a, d_b, rng)) for _ in range(3)]))
    scale = max(abs(null), 1e-6)
    block = max(10, min(250, len(Xf) // 2, len(Yf) // 2))
    kf = min(csls_k, len(Xf), len(Yf))
    maps, gains = [], []
    for _ in range(restarts):
        # Isometric's start: signatures of random subsamples matched by CSLS (both directions)
        m = min(init_rows, int(0.8 * len(Xf)), int(0.8 * len(Yf)))
        ia, ib = np.sort(rng.choice(len(Xf), m, replace=False)), np.sort(rng.choice(len(Yf), m, replace=False))
        fwd, _, bwd = csls_match(signatures(Xf[ia], 256), signatures(Yf[ib], 256), min(csls_k, m))
        W = polar(cross(Xf[ia][np.concatenate([np.arange(m), bwd])], Yf[ib][np.concatenate([fwd, np.arange(m)])]))
        for _ in range(iters):  # random-block assignments, Procrustes
            i, j, _ = block_assignment(*common_space(Xf, Yf, W), block, rng)
            W = polar(cross(Xf[i], Yf[j]))
        fwd, _, bwd = csls_match(*common_space(Xf, Yf, W), kf)  # one polishing round
        W = polar(cross(Xf, Yf[fwd]) + cross(Xf[bwd], Yf))
        maps.append(W)
        gains.append((criterion(W) - null) / scale)
    agreements, evidence = {}, 0.0
    for r in range(restarts):
        for s in range(r + 1, restarts):
            a = map_agreement(Xv, maps[r], maps[s])
            agreements[f"{r},{s}"] = a
            if min(gains[r], gains[s]) >= _MIN_GAIN:  # both generalise, as Isometric's min_gain asks
                evidence = max(evidence, min(max(a, 0.0), 1.0))
    dist = profile_distance(Xf, Yf, profile_rows, np.random.default_rng([seed, 1]))  # its own stream
    profile = float(np.exp(-dist / _PROFILE_SCALE))
    score = profile * (1.0 + evidence)
    if not details:
        return float(score)
    return {"score": float(score), "profile": profile, "profile_distance": dist, "evidence": float(evidence),
            "gains": [float(g) for g in gains], "agreements": agreements, "null_criterion": null,
            "seconds": time.perf_counter() - t0}


def _neighbour_quantiles(Z: np.ndarray, ks: Tuple[int, ...]) -> np.ndarray:
    sims, _ = knn(Z, max(ks), metric="ip")
    return np.stack([np.quantile(sims[:, k - 1], _QUANTILES) for k in ks])


def profile_distance(X: np.ndarray, Y: np.ndarray, rows: int, rng: np.random.Generator) -> float:
    """Mean absolute difference between the quantiles of the 1st- and 10th-neighbour
    cosine similarities of equal-sized random subsamples of X and Y (unit rows):
    a rotation-invariant comparison of the two clouds' local geometry."""
    m = min(rows, len(X), len(Y))
    ks = tuple(k for k in (1, 10) if k < m) or (1,)
    qx = _neighbour_quantiles(X[np.sort(rng.permutation(len(X))[:m])], ks)
    qy = _neighbour_quantiles(Y[np.sort(rng.permutation(len(Y))[:m])], ks)
    return float(np.mean(np.abs(qx - qy)))
