"""Unpaired isometric translation: an orthogonal map learned without pairs.

``Isometric().fit(X, Y)`` learns ``W`` (d_a × d_b, orthogonal, or semi-orthogonal when the widths differ) such that
``p_A(x) W`` lands on ``p_B(y)`` for the rows of two *unpaired* sets: different texts, different row counts. It is
the Wasserstein-Procrustes problem (Grave, Joulin & Berthet 2019, "Unsupervised alignment of embeddings with
Wasserstein Procrustes", AISTATS)

    max_{W orthogonal} max_{matching π}  Σ_i <p_A(x_i) W, p_B(y_π(i))>,

solved by alternating a matching step (π given W) and a Procrustes step (W given π: ``W = U Vᵀ`` from the SVD of
``Σ_i p_A(x_i)ᵀ p_B(y_π(i))``).

Steps
-----
1. Preprocessing per space, in the VecMap order (Artetxe, Labaka & Agirre 2018, ACL): unit rows, centre, unit rows;
   ``transform`` restores B's mean and norm.
2. Held-out rows: ``val_fraction`` of each side (<= 2000), never matched. A map's **criterion** is the mean CSLS
   score (Conneau et al. 2018, ICLR) of each held-out source row's best held-out target: a self-consistent wrong map
   scores near a random rotation, the right one above: ``gain = crit / crit(random W) - 1``.
3. Initialisation: sorted-similarity signatures (Artetxe et al. 2018): the sorted rows of the square root of a
   subsample's Gram matrix (rotation-invariant), at ``n_quantiles`` log-spaced positions, matched by CSLS both ways;
   one Procrustes step gives ``W_0``.
4. Stochastic exploration: per iteration, ``explore_rows`` random fit rows per side, an exact assignment (Hungarian)
   inside random blocks of ``batch_size`` rows, Procrustes on all the matches: the errors of one iteration are not
   those of the next, so wrong maps do not reinforce themselves (VecMap's stochastic dictionary induction).
5. Stopping: every ``eval_every`` iterations the criterion; a restart stops after ``patience`` evaluations without
   gain at ``min_gain`` or above, or twice as many under it (then polished: a start in the right basin can settle
   under it). The search ends when a restart is **confirmed**: another found the same map (mean cosine of their
   held-out translations >= ``agree``; two random starts rarely fall into the same wrong map), or known pairs it
   never saw rank first. Otherwise the low-dimensional restarts follow (step 8); if still none is confirmed, the
   best by the criterion is kept (the two best unpolished restarts polished first) and a ``RuntimeWarning`` says it
   may be wrong.
6. Polishing: rounds of CSLS matching of every fit row, both directions (VecMap's union), and Procrustes on all the
   matches, until fewer than 0.5% of them change.
7. Entropic refinement of the kept map (of two that agree, the better or their mean, by the criterion; Grave et
   al. 2019): steps ``W <- polar(Xᵀ P Y)``, P the Sinkhorn plan (Cuturi 2013) of the similarities under W at
   temperature ε: each row pulled toward a weighted average. ε and the number of steps are chosen by the criterion
   on the fit rows, then run on all rows (one step at least); the other refinements (step 8, the known pairs') keep
   their best step.
8. Low-dimensional restarts, when none is confirmed: in each side's top ``lowdim`` principal directions, lifted,
   polished; in rounds of 8, each round's two best annealed, until one is confirmed or ``lowdim_restarts`` have run.
   ``gromov_restarts`` more join the first round, started from the best entropic Gromov-Wasserstein couplings of
   the principal components (:func:`gromov_starts`; Alvarez-Melis & Jaakkola 2018), ranked by their objective.

Neighbour search: :mod:`align.knn`, in the narrower of the two spaces.

Known pairs (``fit(X, Y, pairs=P)``, P (m, 2): row of X, row of Y): anchors of the start (relative representations,
Moschella et al. 2023), weight ``pair_weight`` in every Procrustes step, then an annealed entropic refinement
checked on held-out rows and pairs; unconfirmed, the search without pairs follows, each of its maps checked on all
the pairs, and replaces that map only when one is confirmed.

``init="anchors"``: k-means centroids matched by a quadratic assignment (Schnaus et al. 2026; Dar 2025,
mini-vec2vec), pooled over runs, as relative-representation anchors.

What each step buys, and where it fails: ``docs/translation.md`` (``scripts/translation_study.py``)."""

from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from align.progress import progress_bar
from align.validation import check_choice, check_positive_int, check_real

from .base import Translator
from .matching import (best_schedule, block_assignment, centroid_anchors, common_space, cross, csls_match, distinct_rows,
                       gromov_starts, mean_map, pairs_found, polar, random_map, relative_targets, signatures, subsample,
                       transport_step, unit_rows)
from .paired import SpacePrep, check_map_state
from .seeds import fit_seed_mean

__all__ = ["Isometric", "INITS"]

INITS = ("anchors", "signature", "random")
_MIN_ROWS = 20  # fewer rows per side leave nothing to hold out and nothing to match
_MAX_VAL = 2000  # held-out rows per side are capped: the criterion needs a few thousand at most
_ANCHOR_ROWS = 10000  # rows per side subsampled for each k-means run of init="anchors" (mini-vec2vec uses 10k)
_POLISH_CHANGE = 0.005  # polishing stops when fewer than this share of matched pairs change
_ANNEAL_CYCLES = 4  # annealing cycles per low-dimensional restart, at most (minilm -> e5, 11.5k: 0.81, 0.94, 0.94)
_LOWDIM_ROUND = 8  # low-dimensional restarts per round: the first round is the search as it was with 8
_PAIR_TOP = 0.001  # a held-out known pair is found when its target ranks in this top share of Y
# Gromov-Wasserstein starts: the best of 8 couplings of <= 2000 rows per side, ε 1 -> 0.05 over 60 plans
_GROMOV_POOL, _GROMOV_ROWS, _GROMOV_EPS = 8, 2000, np.geomspace(1.0, 0.05, 60)


def _confirms(res: Dict[str, Any]) -> bool:
    """A restart is confirmed when another found the same map, or when it passed ``min_gain``
    and ranks at least half (and two) of the known pairs it never saw in the top ``_PAIR_TOP``."""
    held = res.get("pairs_held_out") or 0
    return res["agrees_with"] is not None or (res["success"] and held > 0 and res["pairs_found"] >= max(2, held / 2))


class Isometric(Translator):
    """Unpaired orthogonal (semi-orthogonal when d_a != d_b) translator.

    Parameters
    ----------
    n_init : maximum number of restarts; they stop when one is confirmed (module docstring).
    n_iter : maximum exploration iterations per restart.
    batch_size : rows per random block in the exploration's assignments.
    explore_rows : rows per side drawn at random for each exploration iteration (all fit rows when there are fewer).
    csls_k : neighbours for CSLS (Conneau et al. 2018 use 10).
    init : ``"signature"`` (sorted-similarity signatures) or ``"random"`` (a random orthogonal map; for ablations).
    init_size, n_quantiles : rows per side subsampled for the signatures, and the length of each signature.
    val_fraction : share of each side held out for the criterion (<= 2000 rows).
    eval_every, patience : iterations between evaluations of the criterion; evaluations without improvement
        before a restart that passed ``min_gain`` stops (twice as many end one under it, after a polished probe).
    min_gain : the criterion's gain over a random map needed to stop and to count as a success (right maps on real
        encoder pairs: 0.7-3.1; wrong ones on hard data pass it too).
    agree : two maps are "the same" when the mean cosine between their translations of the held-out source rows is
        at least this (two right maps 0.48-0.93, a right and a wrong one <= 0.22, two wrong ones on synthetic
        mixtures up to 0.57: ``docs/translation.md``).
    polish_iter : most rounds of full CSLS matching (both ways) + Procrustes on a restart that passed or settled.
    ot_iter : most entropic-transport steps per temperature of the final refinement (0: none).
    ot_eps, ot_scan : its temperatures, ``ot_eps · 2^j`` for j < ``ot_scan``, on cosine similarities.
    ot_rows : rows per side (a random subsample beyond it) in each entropic plan; memory is one ``ot_rows²`` float32
        buffer (576 MB at 12000).
    fit_rows : fit rows per side the search matches at most: beyond it, one random subsample, drawn once per fit
        after the held-out rows (the known pairs' rows always kept); the final refinement's plans still draw
        ``ot_rows`` from all rows. Each polishing round matches every fit row (n² · d), which rules large inputs.
    n_clusters, anchor_runs, qap_restarts : ``init="anchors"``: k-means clusters per run, runs pooled,
        quadratic-assignment starts per run (mini-vec2vec's 20 / 30 / 30).
    soft_k : rows of B averaged into each target of a relative-representation start (50).
    pair_weight : the known pairs' total weight in each Procrustes step, against the matches.
    anneal_iter, anneal_eps_start, anneal_eps_end : with known pairs and after low-dimensional restarts, the number
        of entropic plans and their temperatures (geometric from start to end).
    lowdim, lowdim_restarts : principal directions per side, and the most restarts (in rounds of 8, until one is
        confirmed) of the low-dimensional search that follows (0: none).
    gromov_restarts : low-dimensional restarts from Gromov-Wasserstein couplings added to the first round (0: none).
    seed : seeds every random choice. The same seed gives the same map bit for bit in one process, in fresh
        processes whatever ``REPTRANS_THREADS``, on a misaligned copy of the input and through ``reptrans fit`` --
        at one thread count of numpy's BLAS, whose float32 sums depend on it (the search amplifies that rounding
        into another path of the same quality, ``docs/translation.md``): pin ``OPENBLAS_NUM_THREADS`` to compare
        machines.
    progress : show a tqdm bar.
    n_seeds : fits with seeds ``seed``, ``seed + 1``, ...; the map nearest the mean of the confirmed ones' maps
        (:mod:`translate.seeds`; minilm <-> mpnet at 2k texts per side: 0.954 / 0.957 median of three, one 0.943 / 0.939).

    Attributes after fit
    --------------------
    W_ : (d_a, d_b) float32 map between preprocessed spaces.
    mean_a_, mean_b_ : means removed by the preprocessing.
    restarts_ : per restart, ``{"iters", "criterion", "gain", "success", "polished", "agreement", "agrees_with",
        "lowdim"}`` (``agrees_with``: the other restart that found the same map, or None; ``polished``: its map went
        through polishing, kept only where that raised the criterion; ``lowdim``: a restart of the low-dimensional
        search). With known pairs the first is their map's, and each has ``"pairs_held_out"`` (pairs its map never
        saw: half of them for the first, all for the search's) and ``"pairs_found"`` (of those, how many rank in the
        top 0.1 % of Y's rows; None when fewer than 4 pairs leave none to hold out).
    chosen_restart_ : index of the restart kept.
    confirmed_ : whether the kept map was confirmed (two restarts found it, or known pairs it never saw); False
        exactly when ``fit`` warned that the map may be wrong.
    null_criterion_ : the criterion of random orthogonal maps (mean of 3).
    history_ : one dict per exploration iteration (restart, iter, objective = mean cosine of the block assignment,
        criterion and gain = last held-out evaluation), one per polishing round (stage = "polish", restart, iter,
        objective = mean CSLS score, changed = share of matches that changed), one per lifted low-dimensional
        restart (stage = "lowdim", restart, iter, criterion, gain, start = "gromov" or ``init``), one for the mean of
        two agreeing maps (stage = "mean", criterion, kept), one per refinement round (stage = "transport", iter, eps,
        objective). With ``n_seeds`` > 1, those of the first seed kept, then stage = "seed mean" (seeds, confirmed,
        gain, kept: the seeds' indices whose maps were averaged); ``restarts_`` etc. are that seed's too.
    """

    _state = ("W_", "mean_a_", "mean_b_")
    _state_meta = ("stats_b_", "restarts_", "chosen_restart_", "null_criterion_", "confirmed_")

    @classmethod
    def _upgrade_meta(cls, meta: Dict[str, Any]) -> Dict[str, Any]:
        # saved before confirmed_ existed: two agreeing restarts, or the known pairs' own checks
        rs = [r for r in meta.get("restarts_") or [] if isinstance(r, dict)]
        by_pairs = bool(rs and "pairs_found" in rs[0] and meta.get("chosen_restart_") == 0 and rs[0].get("success"))
        return {"confirmed_": any(r.get("agrees_with") is not None for r in rs) or by_pairs, **meta}

    def __init__(
        self,
        n_init: int = 6, n_iter: int = 300, batch_size: int = 250, explore_rows: int = 4000, csls_k: int = 10,
        init: str = "signature", init_size: int = 4000, n_quantiles: int = 256,
        val_fraction: float = 0.15, eval_every: int = 5, patience: int = 3, min_gain: float = 0.5, agree: float = 0.7,
        polish_iter: int = 5, ot_iter: int = 20, ot_eps: float = 0.05, ot_scan: int = 4, ot_rows: int = 12000,
        fit_rows: int = 20000,
        n_clusters: int = 20, anchor_runs: int = 30, qap_restarts: int = 30, soft_k: int = 50,
        pair_weight: float = 1.0, anneal_iter: int = 30, anneal_eps_start: float = 0.1, anneal_eps_end: float = 0.03,
        lowdim: int = 64, lowdim_restarts: int = 24, gromov_restarts: int = 2,
        seed: int = 0, progress: bool = True, n_seeds: int = 1,
    ):
        self.n_init = n_init
        self.n_iter = n_iter
        self.batch_size = batch_size
        self.explore_rows = explore_rows
        self.csls_k = csls_k
        self.init = init
        self.init_size = init_size
        self.n_quantiles = n_quantiles
        self.val_fraction = val_fraction
        self.eval_every = eval_every
        self.patience = patience
        self.min_gain = min_gain
        self.agree = agree
        self.polish_iter = polish_iter
        self.ot_iter = ot_iter
        self.ot_eps = ot_eps
        self.ot_scan = ot_scan
        self.ot_rows = ot_rows
        self.fit_rows = fit_rows
        self.n_clusters = n_clusters
        self.anchor_runs = anchor_runs
        self.qap_restarts = qap_restarts
        self.soft_k = soft_k
        self.pair_weight = pair_weight
        self.anneal_iter = anneal_iter
        self.anneal_eps_start = anneal_eps_start
        self.anneal_eps_end = anneal_eps_end
        self.lowdim = lowdim
        self.lowdim_restarts = lowdim_restarts
        self.gromov_restarts = gromov_restarts
        self.seed = seed
        self.progress = progress
        self.n_seeds = n_seeds

    # -- parameters -------------------------------------------------------
    def _check_params(self) -> None:
        for name in ("n_init", "n_iter", "batch_size", "explore_rows", "csls_k", "init_size", "eval_every", "patience",
                     "anchor_runs", "qap_restarts", "soft_k", "anneal_iter", "ot_scan", "n_seeds"):
            check_positive_int(getattr(self, name), name)
        for name in ("polish_iter", "ot_iter", "lowdim", "lowdim_restarts", "gromov_restarts", "seed"):
            check_positive_int(getattr(self, name), name, minimum=0)
        check_positive_int(self.n_quantiles, "n_quantiles", minimum=2)
        check_positive_int(self.ot_rows, "ot_rows", minimum=2)
        check_positive_int(self.fit_rows, "fit_rows", minimum=_MIN_ROWS)
        check_choice(self.init, "init", INITS)
        check_real(self.val_fraction, "val_fraction", 0, 0.5, open_low=True, open_high=True)
        check_real(self.agree, "agree", 0, 1, open_low=True, open_high=True)
        for name in ("ot_eps", "pair_weight", "anneal_eps_start", "anneal_eps_end"):
            check_real(getattr(self, name), name, 0, open_low=True)
        check_real(self.min_gain, "min_gain", 0)
        check_positive_int(self.n_clusters, "n_clusters", minimum=3)

    # -- fitting ----------------------------------------------------------
    accepts_pairs = True

    def _fit(self, X: np.ndarray, Y: np.ndarray, pairs: Optional[np.ndarray] = None) -> None:
        self._check_params()
        if self.n_seeds > 1:
            return fit_seed_mean(self, X, Y, pairs)
        # a repeated row adds nothing to an unpaired fit but a second claim on one-to-one matches and plans
        # (minilm -> mpnet, 3000 distinct texts per side plus 1000 repeats: 0.952 against 0.973 without them)
        given = {"X": len(X), "Y": len(Y)}
        (X, ia), (Y, ib) = distinct_rows(X, None if pairs is None else pairs[:, 0]), \
            distinct_rows(Y, None if pairs is None else pairs[:, 1])
        pairs = None if pairs is None else np.stack([ia, ib], axis=1)
        for name, Z in (("X", X), ("Y", Y)):
            if Z.shape[0] < _MIN_ROWS:
                raise ValueError(f"{name} has {given[name]} rows" + (f", {len(Z)} distinct" if len(Z) < given[name] else "")
                                 + f"; Isometric needs at least {_MIN_ROWS} distinct rows per side")
        prep = SpacePrep(center=True, normalize=True)
        self.mean_a_, _, Xp = prep.fit(X)
        self.mean_b_, self.stats_b_, Yp = prep.fit(Y)
        rng = np.random.default_rng(self.seed)

        # held-out rows for the criterion (never a row of a known pair)
        def split(n: int, keep: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
            n_val = int(min(max(round(self.val_fraction * n), 10), _MAX_VAL))
            perm = rng.permutation(n)
            kept = np.isin(perm, keep)
            perm = np.concatenate([perm[~kept], perm[kept]])
            first = max(n_val, n - max(self.fit_rows, int(kept.sum())))  # the known pairs' rows come last
            return np.sort(perm[first:]), np.sort(perm[:n_val])

        rows = np.zeros((0, 2), np.int64) if pairs is None else pairs
        (fa, va), (fb, vb) = split(len(Xp), rows[:, 0]), split(len(Yp), rows[:, 1])
        Xf, Yf, Xv, Yv = Xp[fa], Yp[fb], Xp[va], Yp[vb]
        self._known = (Xp[rows[:, 0]], Yp[rows[:, 1]]) if len(rows) else None
        k_val = min(self.csls_k, len(Xv), len(Yv))

        def criterion(W: np.ndarray) -> float:
            return float(csls_match(*common_space(Xv, Yv, W), k_val)[1].mean())

        d_a, d_b = Xp.shape[1], Yp.shape[1]
        null = float(np.mean([criterion(random_map(d_a, d_b, rng)) for _ in range(3)]))
        scale = max(abs(null), 1e-6)  # CSLS can be negative: gains are measured against the null's magnitude
        self.null_criterion_ = null

        def agreement(W1: np.ndarray, W2: np.ndarray) -> float:  # mean cosine of their held-out translations
            return float(np.mean(np.sum(unit_rows(Xv @ W1) * unit_rows(Xv @ W2), axis=1)))

        results, maps = [], []  # type: List[Dict[str, Any]], List[np.ndarray]
        pairs_note, known = None, self._known
        if known is not None:
            pairs_note = self._fit_from_pairs(Xf, Yf, rng, criterion, null, scale, agreement)
            if pairs_note is None:
                self.confirmed_ = True
                del self._known
                return
            # unconfirmed: the search without pairs follows; the pairs' map is its restart 0
            results, maps, self._known = [self.restarts_[0]], [self.W_], None

        def polish(W: np.ndarray, res: Dict[str, Any], r: int) -> np.ndarray:
            W, crit = self._probe(Xf, Yf, W, r, criterion)
            res.update(criterion=crit, gain=(crit - null) / scale, polished=True)
            return W

        def record(W: np.ndarray, res: Dict[str, Any], replace: Optional[int] = None) -> bool:
            """Keep a restart (in place of restart ``replace``); True when it confirms another."""
            if res["success"]:
                others = [(agreement(W, maps[i]), i) for i, e in enumerate(results) if e["success"] and i != replace]
                if others:
                    res["agreement"], j = max(others)
                    if res["agreement"] >= self.agree:
                        res["agrees_with"] = j
            if known is not None:  # the known pairs, which the search never saw, judge its map
                res["pairs_held_out"], res["pairs_found"] = len(known[0]), pairs_found(*known, Yf, W, _PAIR_TOP)
            if replace is None:
                results.append(res)
                maps.append(W)
            else:
                results[replace], maps[replace] = res, W
            return _confirms(res)

        with progress_bar(total=self.n_init * self.n_iter, desc="isometric", enabled=self.progress) as bar:
            for r in range(self.n_init):
                W0 = self._initial_map(Xf, Yf, rng, r)
                W, best, iters, ok, polished = self._explore(Xf, Yf, W0, rng, criterion, null, scale, r, bar,
                                                             lambda W, r=r: self._probe(Xf, Yf, W, r, criterion))
                res: Dict[str, Any] = {"iters": iters, "criterion": best, "gain": (best - null) / scale,
                                       "success": ok, "polished": ok or polished, "agreement": None,
                                       "agrees_with": None, "lowdim": False}
                if ok and not polished:
                    # Polishing on the fit rows takes every right start to one fixed point,
                    # while wrong maps from different starts stay apart.
                    W = polish(W, res, r)
                bar.update(self.n_iter - iters)  # a restart that stopped early
                if record(W, res):
                    break
        if not any(_confirms(res) for res in results):
            passed = [(res["criterion"], i, res["iters"], maps[i]) for i, res in enumerate(results) if res["success"]]
            self._lowdim_search(Xf, Yf, Xv, Yv, rng, criterion, null, scale, record, passed)
        confirmed = [i for i, res in enumerate(results) if _confirms(res)]
        self.confirmed_ = bool(confirmed)
        if confirmed:  # the map two restarts found (the better of the pair, or their mean), or the pairs confirm
            i, j = confirmed[0], results[confirmed[0]]["agrees_with"]
            chosen = i if j is None or results[i]["criterion"] >= results[j]["criterion"] else j
            if j is not None:  # their mean where the criterion prefers it: maps from other starts err partly apart
                W_m = mean_map(maps[i], maps[j])
                crit_m = criterion(W_m)
                kept = crit_m > results[chosen]["criterion"]
                self.history_.append({"stage": "mean", "criterion": crit_m, "kept": kept})
                maps[chosen] = W_m if kept else maps[chosen]
        else:  # polishing can lift a restart in the basin past others: the two best unpolished are polished first;
            # an unconfirmed search does not overrule the known pairs (500 per side: 0.000, theirs 0.180)
            todo = [] if pairs_note else sorted((i for i, res in enumerate(results) if not res["polished"]),
                                                key=lambda i: -results[i]["criterion"])[:2]
            for i in todo:
                maps[i] = polish(maps[i], results[i], i)
            chosen = 0 if pairs_note else int(np.argmax([res["criterion"] for res in results]))
            n_ok, hint = sum(r["success"] for r in results), "more" if pairs_note else "a few (pairs=, --pairs)"
            warnings.warn(
                f"Isometric: no two of {len(results)} restarts found the same map ({n_ok} passed min_gain="
                f"{self.min_gain}; kept gain {results[chosen]['gain']:.2f}); the map may be wrong. Give more rows (either "
                f"side helps), {hint} known pairs, more restarts (n_init) or iterations (n_iter)."
                + (f" {pairs_note}" if pairs_note else ""), RuntimeWarning, stacklevel=3)
        self.restarts_, self.chosen_restart_ = results, chosen
        self.W_ = maps[0] if pairs_note and chosen == 0 else self._final_refine(Xf, Yf, Xp, Yp, maps[chosen], rng,
                                                                                 criterion, 1e-3 * scale)
        del self._known

    def _fit_from_pairs(self, Xf, Yf, rng, criterion, null, scale, agreement) -> Optional[str]:
        """Known pairs: one start from their relative representations, then an annealed entropic refinement on the fit
        rows, where hard CSLS matching pulls such a start away (``docs/translation.md``); the held-out rows judge the
        result. Confirmed when the same refinement on each half of the fit rows agrees (``agree``) or, with at least
        4 pairs, when one fitted on half of them finds at least half (and two) of the others (:func:`_confirms`;
        right maps on 2.5k-5.7k rows per half agreed only 0.40-0.69). Returns None when confirmed, else what the
        warning says of it (the search without pairs follows)."""
        W0 = self._initial_map(Xf, Yf, rng, 0)
        eps = np.geomspace(self.anneal_eps_start, self.anneal_eps_end, self.anneal_iter)
        halves = [self._refine(Xf[rng.permutation(len(Xf))[: len(Xf) // 2]], Yf[rng.permutation(len(Yf))[: len(Yf) // 2]],
                               W0, rng, criterion, eps)[0] for _ in range(2)]
        W, crit = self._refine(Xf, Yf, W0, rng, criterion, eps)
        gain = (crit - null) / scale
        agree = agreement(*halves)
        Kx, Ky = self._known
        h, found = (len(Kx) // 2 if len(Kx) >= 4 else 0), None
        if h:  # the other half's targets, ranked by a map fitted on the first half alone
            held = rng.permutation(len(Kx))[:h]
            self._known = (np.delete(Kx, held, axis=0), np.delete(Ky, held, axis=0))
            W_h = self._refine(Xf, Yf, self._initial_map(Xf, Yf, rng, 0), rng, criterion, eps)[0]
            self._known = (Kx, Ky)
            found = pairs_found(Kx[held], Ky[held], Yf, W_h, _PAIR_TOP)
        ok = gain >= self.min_gain and (agree >= self.agree or (h > 0 and found >= max(2, h / 2)))
        self.restarts_ = [{"iters": 0, "criterion": crit, "gain": gain, "success": ok, "polished": False,
                           "agreement": agree, "agrees_with": None, "start_criterion": criterion(W0),
                           "pairs_held_out": h, "pairs_found": found}]
        self.chosen_restart_ = 0
        self.W_ = W
        if ok:
            return None
        held_msg = "" if found is None else f"; a map from half the pairs found {found} of the other {h}"
        return (f"The map from {len(Kx)} known pairs may be wrong too (held-out gain {gain:.2f}; maps from the two "
                f"halves of the rows agree {agree:.2f}, agree={self.agree}{held_msg}): give more pairs.")

    def _procrustes(self, M: np.ndarray, n_matched: int) -> np.ndarray:
        """``polar(M)``, with the known pairs added to the cross-covariance ``M`` of ``n_matched`` matched rows:
        together they weigh ``pair_weight`` times as much as those rows (each pair ``pair_weight · n_matched / m``),
        so a few pairs hold the map where the matching is unsure (Schnaus et al. 2026 add known pairs as linear
        terms to the matching and Procrustes objectives likewise)."""
        if self._known is not None:
            Kx, Ky = self._known
            M = M + (self.pair_weight * n_matched / len(Kx)) * cross(Kx, Ky)
        return polar(M)

    def _initial_map(self, Xf: np.ndarray, Yf: np.ndarray, rng: np.random.Generator, restart: int) -> np.ndarray:
        d_a, d_b = Xf.shape[1], Yf.shape[1]
        if self.init == "random":
            return random_map(d_a, d_b, rng) if self._known is None else self._procrustes(np.zeros((d_a, d_b)), 1)
        if self._known is not None or self.init == "anchors":
            if self._known is not None:  # known pairs are anchors that need no matching
                Aa, Ab = self._known
            else:
                Aa, Ab = centroid_anchors(Xf, Yf, self.n_clusters, self.anchor_runs, self.qap_restarts, _ANCHOR_ROWS, rng)
            T = relative_targets(Xf, Yf, Aa, Ab, self.soft_k)
            return self._procrustes(cross(Xf, T), len(Xf))
        m = min(self.init_size, int(0.8 * len(Xf)), int(0.8 * len(Yf)))  # at most 80%: each restart another subsample
        ia = np.sort(rng.choice(len(Xf), m, replace=False))
        ib = np.sort(rng.choice(len(Yf), m, replace=False))
        return self._dictionary_map(Xf[ia], Yf[ib], signatures(Xf[ia], self.n_quantiles),
                                    signatures(Yf[ib], self.n_quantiles))

    def _dictionary_map(self, Xs: np.ndarray, Ys: np.ndarray, Da: np.ndarray, Db: np.ndarray) -> np.ndarray:
        """Procrustes on VecMap's dictionary: each row of either side with its CSLS-best row of the other (the
        union of both directions), matched on descriptors Da, Db of the rows of Xs, Ys."""
        fwd, _, bwd = csls_match(Da, Db, min(self.csls_k, len(Da), len(Db)))
        i = np.concatenate([np.arange(len(Da)), bwd])
        j = np.concatenate([fwd, np.arange(len(Db))])
        return self._procrustes(cross(Xs[i], Ys[j]), len(i))

    def _lowdim_search(self, Xf, Yf, Xv, Yv, rng, criterion, null, scale, record, passed) -> None:
        """Restarts in each side's top ``lowdim`` principal directions, when no full restart was confirmed
        (Hoshen & Wolf 2018, EMNLP: many cheap restarts after PCA to ~50 d), where starts land near the right
        map far more often; each is lifted by Procrustes on its CSLS dictionary of the fit rows and polished. In
        rounds of ``_LOWDIM_ROUND``, the round's two best get cycles of the annealed refinement (its best step, or
        that polished) while the criterion rises, and join the restarts (``"lowdim": True``) until one is confirmed.
        Full restarts that passed ``min_gain`` (``passed``: criterion, index, iterations, map) compete for the first
        round's places, annealed in place: maps from different starts agree only after the same treatment."""
        if not self.lowdim_restarts or not 0 < (k := self.lowdim) < min(Xf.shape[1], Yf.shape[1]):
            return
        Va, Vb = (np.linalg.svd(Z, full_matrices=False)[2][:k].T for Z in (Xf, Yf))
        Xl, Yl, Xvl, Yvl = (unit_rows(Z @ V) for Z, V in ((Xf, Va), (Yf, Vb), (Xv, Va), (Yv, Vb)))
        k_val = min(self.csls_k, len(Xvl), len(Yvl))

        def crit_low(W: np.ndarray) -> float:
            return float(csls_match(*common_space(Xvl, Yvl, W), k_val)[1].mean())

        null_low = float(np.mean([crit_low(random_map(k, k, rng)) for _ in range(3)]))
        eps = np.geomspace(self.anneal_eps_start, self.anneal_eps_end, self.anneal_iter)
        # the Gromov-Wasserstein restarts' own stream keeps the others those of gromov_restarts=0; one pool, so
        # that its scores compare couplings of the same rows
        n_g, rng_g = self.gromov_restarts, np.random.default_rng([self.seed, 1])
        gw = gromov_starts(subsample(Xl, _GROMOV_ROWS, rng_g), subsample(Yl, _GROMOV_ROWS, rng_g),
                           max(_GROMOV_POOL, n_g), _GROMOV_EPS, rng_g) if n_g else []
        ends = [*range(self.n_init + n_g + _LOWDIM_ROUND, self.n_init + n_g + self.lowdim_restarts, _LOWDIM_ROUND),
                self.n_init + n_g + self.lowdim_restarts]
        rounds = list(zip([self.n_init, *ends[:-1]], ends))
        with progress_bar(total=n_g + self.lowdim_restarts + 2 * _ANNEAL_CYCLES * len(rounds),
                          desc=f"isometric ({k}-d restarts)", enabled=self.progress) as bar:
            for first, last in rounds:
                lifted = []
                for r in range(first, last):
                    g = r - self.n_init  # the first n_g start from the pool
                    W0, r_rng = (gw[g][1], rng_g) if g < n_g else (self._initial_map(Xl, Yl, rng, r), rng)
                    W, _, iters, _, _ = self._explore(
                        Xl, Yl, W0, r_rng, crit_low, null_low, max(abs(null_low), 1e-6), r, None,
                        lambda W, r=r: self._probe(Xl, Yl, W, r, crit_low))
                    W = self._polish(Xf, Yf, self._dictionary_map(Xf, Yf, *common_space(Xl, Yl, W)), r)
                    crit = criterion(W)
                    lifted.append((crit, r, iters, W, False))
                    start = "gromov" if g < n_g else self.init
                    self.history_.append({"stage": "lowdim", "restart": r, "iter": iters, "criterion": crit,
                                          "gain": (crit - null) / scale, "start": start})
                    bar.update(1)
                pool = lifted + ([(*t, True) for t in passed] if first == self.n_init else [])
                for crit, r, iters, W, full in sorted(pool, key=lambda t: -t[0])[:2]:
                    for _ in range(_ANNEAL_CYCLES):  # each cycle: the schedule's best map, or its polish
                        bar.update(1)
                        W_n, crit_n = self._refine(Xf, Yf, W, rng, criterion, eps)
                        W_p = self._polish(Xf, Yf, W_n, r)
                        crit_n, W_n = max((crit_n, W_n), (criterion(W_p), W_p), key=lambda t: t[0])
                        if crit_n <= crit + 1e-3 * scale:
                            break
                        W, crit = W_n, crit_n
                    gain = (crit - null) / scale
                    if record(W, {"iters": iters, "criterion": crit, "gain": gain, "success": gain >= self.min_gain,
                                  "polished": True, "agreement": None, "agrees_with": None, "lowdim": not full},
                              r if full else None):
                        return

    def _explore(self, Xf, Yf, W, rng, criterion, null, scale, restart, bar, probe):
        """One restart: (map, its criterion, iterations, passed min_gain, polished). A restart under ``min_gain``
        that has settled (module docstring, step 5) is polished by ``probe`` and ends (``docs/translation.md``)."""
        block = min(self.batch_size, max(_MIN_ROWS // 2, min(len(Xf), len(Yf)) // 2))
        best, best_W, stall = -np.inf, W, 0
        crit = criterion(W)
        for it in range(1, self.n_iter + 1):
            Xs, Ys = subsample(Xf, self.explore_rows, rng), subsample(Yf, self.explore_rows, rng)
            A, B = common_space(Xs, Ys, W)
            i, j, obj = block_assignment(A, B, block, rng)
            W = self._procrustes(cross(Xs[i], Ys[j]), len(i))
            if it % self.eval_every == 0 or it == self.n_iter:
                crit = criterion(W)
                if crit > best + 1e-3 * scale:
                    stall = 0
                else:
                    stall += 1
                if crit > best:
                    best, best_W = crit, W
            gain = (crit - null) / scale
            self.history_.append({"restart": restart, "iter": it, "objective": obj, "criterion": crit, "gain": gain})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(restart=restart, gain=f"{gain:.2f}")
            # Cannot fire on a degenerate map: its held-out gain stays near 0.
            if stall >= self.patience and (best - null) / scale >= self.min_gain:
                return best_W, best, it, True, False
            if stall >= 2 * self.patience:
                W_p, crit_p = probe(best_W)
                if crit_p < best:  # polishing a wrong map can lower the criterion
                    return best_W, best, it, False, True
                return W_p, crit_p, it, (crit_p - null) / scale >= self.min_gain, True
        return best_W, best, it, (best - null) / scale >= self.min_gain, False

    def _probe(self, Xp, Yp, W, restart, criterion) -> Tuple[np.ndarray, float]:  # the polished map, its criterion
        W = self._polish(Xp, Yp, W, restart)
        return W, criterion(W)

    def _polish(self, Xp: np.ndarray, Yp: np.ndarray, W: np.ndarray, restart: int) -> np.ndarray:
        """CSLS matches of every row, both directions (VecMap's union dictionary),
        then Procrustes on all of them; until fewer than 0.5% of matches change."""
        k, prev = min(self.csls_k, len(Xp), len(Yp)), None
        for step in range(self.polish_iter):
            A, B = common_space(Xp, Yp, W)
            fwd, score, bwd = csls_match(A, B, k)
            W = self._procrustes(cross(Xp, Yp[fwd]) + cross(Xp[bwd], Yp), len(fwd) + len(bwd))
            changed = 1.0 if prev is None else float(np.mean(np.concatenate([prev[0] != fwd, prev[1] != bwd])))
            self.history_.append({"stage": "polish", "restart": restart, "iter": step + 1,
                                  "objective": float(score.mean()), "changed": changed})
            prev = (fwd, bwd)
            if changed < _POLISH_CHANGE:
                break
        return W

    def _refine(self, Xp: np.ndarray, Yp: np.ndarray, W: np.ndarray, rng: np.random.Generator, criterion,
                eps: Sequence[float]) -> Tuple[np.ndarray, float]:
        """Entropic Wasserstein-Procrustes steps (:func:`transport_step`), one per value of ``eps``, on one random
        subsample of at most ``ot_rows`` rows per side. Returns the best map by ``criterion`` along the way (the start
        included) and its criterion: a few soft steps lift a map, many drift to the plan's own fixed point, lower with
        few rows or on hard pairs (``docs/translation.md``)."""
        Xs, Ys = subsample(Xp, self.ot_rows, rng), subsample(Yp, self.ot_rows, rng)
        best = (criterion(W), W)
        for step, e in enumerate(eps):
            W = self._transport(Xs, Ys, W, e, step + 1)
            best = max(best, (criterion(W), W), key=lambda t: t[0])
        return best[1], best[0]

    def _final_refine(self, Xf, Yf, Xp, Yp, W, rng, criterion, tol) -> np.ndarray:
        """Entropic steps on the kept map at the temperature and for the number of steps the criterion prefers
        (:func:`best_schedule` on the fit rows: ``ot_eps · 2^j``, up to ``ot_iter`` steps), then run on all rows (at
        most ``ot_rows``). Few rows per side need a warmer plan, averaging over more of them, and more steps; many
        rows a cooler one (minilm -> mpnet: best ε 0.2 at 2k rows per side, 0.1 at 5k, 0.05 at 11.5k). A map no step
        improved on the fit rows still takes one step at ``ot_eps`` on all rows, where the held-out rows join the
        plan (4.5k per side, e5 -> mpnet-L6: 0.861 -> 0.886; never lower in 8 measured, ``docs/translation.md``)."""
        # on all fit rows: the best temperature falls as rows grow, so a subsample's would not carry over
        # (11.5k rows per side, mpnet -> minilm, seed 0: scanned on 5000 of them, top-1 0.984; on all, 0.990)
        Xs, Ys = subsample(Xf, self.ot_rows, rng), subsample(Yf, self.ot_rows, rng)
        e, steps, _ = best_schedule(lambda W, e, i: self._transport(Xs, Ys, W, e, i), W, criterion,
                                    [self.ot_eps * 2 ** j for j in range(self.ot_scan)], self.ot_iter, tol)
        Xs, Ys = subsample(Xp, self.ot_rows, rng), subsample(Yp, self.ot_rows, rng)
        for i in range(1, (max(steps, 1) if self.ot_iter else 0) + 1):  # steps 0: e is ot_eps
            W = self._transport(Xs, Ys, W, e, i)
        return W

    def _transport(self, Xs: np.ndarray, Ys: np.ndarray, W: np.ndarray, eps: float, step: int) -> np.ndarray:
        W, objective = transport_step(Xs, Ys, W, eps, self._procrustes)
        self.history_.append({"stage": "transport", "iter": step, "eps": eps, "objective": objective})
        return W

    # -- transform / persistence -----------------------------------------
    def _transform(self, X: np.ndarray) -> np.ndarray:
        prep = SpacePrep(center=True, normalize=True)
        return prep.inverse(prep.apply(X, self.mean_a_) @ self.W_, self.mean_b_, self.stats_b_)

    def _check_state(self) -> None:
        check_map_state(self)
        rs, k = self.restarts_, self.chosen_restart_
        if not isinstance(rs, list) or not isinstance(k, int) or not 0 <= k < len(rs):
            raise ValueError(f"Isometric: saved chosen_restart_={k!r} is not the index of one of the saved restarts_")
        if not isinstance(self.confirmed_, bool):
            raise ValueError(f"Isometric: saved confirmed_ must be true or false, got {self.confirmed_!r}")
        c = self.null_criterion_
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
            raise ValueError(f"Isometric: saved null_criterion_ must be a finite number, got {c!r}")
