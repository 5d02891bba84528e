"""One shared latent space for N embedding spaces, learned without pairs.

``Universal().fit({"minilm": A, "mpnet": B, "e5": C})`` learns, for each space
``i``, a map ``U_i`` (d_i × D, orthonormal rows; D = the largest width) into one
latent space, from *unpaired* sets (different texts, any row counts). Any space
then translates into any other through the latent: ``x -> p_i(x) U_i U_jᵀ``,
mapped back through j's preprocessing. Translating two spaces at a time gives
maps that disagree around cycles (A->B->C is not A->C); one latent makes them
agree by construction, and lets an easy pair hold a hard one.

Steps
-----
1. Preprocessing per space as :class:`translate.isometric.Isometric` does
   (:class:`translate.paired.SpacePrep`: unit rows, centre, unit rows), so a
   translation ``i -> j`` returns rows in j's original coordinates, as Isometric's.
2. Pairwise maps: one :class:`Isometric` fit per unordered pair of spaces (with
   the known pairs of that pair, if any). Its confidence is the held-out criterion
   gain of the kept restart; a map is *confirmed* when two restarts found it, or known
   pairs it never saw (Isometric's ``confirmed_``). Unconfirmed maps get weight 0.
3. Synchronisation (:func:`translate.sync.spectral_sync`, then
   :func:`translate.sync.sync_iterate`): the weighted pairwise maps become one map
   per space. Cycle consistency of each confirmed map is its agreement (mean
   cosine between translations of its rows) with the synchronised ``U_i U_jᵀ``; the
   least consistent map below ``min_consistency`` is dropped and the rest
   resynchronised, until all agree -- with three spaces one wrong map is out-voted
   by the two that close the cycle.
4. Spaces that do not fit are reported, not forced. A space with no confirmed,
   consistent map to the others (or not connected to the largest group of spaces
   by such maps) gets a second chance (``rescue``): one Isometric fit against the
   pooled latent rows of the spaces already placed -- a hard pair reached through
   the easy ones, with more rows to match. If that map is not confirmed either,
   the space is excluded from the latent and ``report_`` says why.
5. Joint refinement of all included maps against the latent
   (:func:`translate.sync.joint_refine`: CSLS matching of every pair in the latent,
   cross-covariances accumulated per space, polar factor; then entropic rounds).
6. Gauge: the latent is rotated so that the widest included space's map is
   ``[I 0]``: latent coordinates are that space's preprocessed coordinates.

Cost: the N(N-1)/2 pairwise Isometric fits dominate (plus one per rescued space).
The rest, for three real 4000-row spaces of widths 384/768/384 (minilm and two
rotated copies), took 55 s on one thread of two shared cores: 36 s joint
refinement (matching in the narrower space of each pair,
:func:`translate.sync.pair_space`), 14 s synchronisation; ``seconds_`` has the split.

``translator(i, j)`` gives a :class:`PairTranslator`, an ordinary translator
(transform / save / load). ``save`` / :func:`translate.load` write safetensors +
JSON through :mod:`align.checkpoint`, like every translator.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from align.progress import progress_bar
from align.validation import as_matrix, check_pairs, check_positive_int, check_real

from .base import NotFittedError, Translator
from .matching import random_map
from .paired import SpacePrep, check_map_state, check_stats
from .sync import (fix_gauge, joint_refine, latent_criterion, map_agreement, pair_space, spectral_sync,
                   sync_iterate)

__all__ = ["Universal", "PairTranslator"]

_MIN_ROWS = 20
# rows per space used for the consistency and latent-fit diagnostics
_DIAG_ROWS = 1000


def _prep() -> SpacePrep:
    return SpacePrep(center=True, normalize=True)


class Universal(Translator):
    """A shared latent space for N embedding spaces, fitted on unpaired sets.

    Parameters
    ----------
    isometric : keyword arguments for every pairwise :class:`Isometric` fit (its
        ``seed`` is drawn from ``seed``; ``progress`` defaults to False).
    min_consistency : a confirmed pairwise map must agree at least this much (mean
        cosine between its and the synchronised translations of its rows) with the
        synchronised maps, or it is dropped (Isometric calls two maps the same at 0.7;
        right and wrong maps measured 0.83-0.93 and <= 0.22 on real encoders).
    sync_iter : at most this many rounds of :func:`translate.sync.sync_iterate`.
    refine_iter : at most this many joint CSLS rounds (0: none).
    ot_iter, ot_eps, ot_rows : joint entropic rounds, their regularisation, rows per
        space in each plan (memory: one ``ot_rows²`` float32 plan at a time).
    csls_k : neighbours for CSLS.
    pair_weight : weight of known pairs against the matched rows (as in Isometric).
    rescue : fit a space left out against the pooled latent rows of the others, and
        include it when two restarts confirm that map.
    seed : seeds every random choice; the same seed gives the same result.
    progress : a progress bar over the pairwise fits.

    Attributes after fit
    --------------------
    spaces_ : the space names, in the order given. widths_ : name -> width.
    latent_dim_ : D, the largest width.
    maps_ : name -> (d, D) float32 map into the latent (included spaces only).
    means_, stats_ : name -> preprocessing statistics (every space).
    excluded_ : names of the spaces left out of the latent.
    report_ : name -> {"included", "reason", "width", "rows", "support" (consistent
        pairwise maps that placed it), "consistency" (their mean agreement with the
        synchronised maps), "latent_gain" (criterion gain of its rows against the
        other included spaces in the final latent, over random maps; None when
        excluded), "pairwise_gain" (best gain of its pairwise fits), "rescue" (None, or
        the fit against the pooled latent: gain, confirmed, restarts, seconds)}.
    pairs_ : per unordered pair {"spaces", "gain", "confirmed", "restarts", "weight",
        "consistency", "used", "known_pairs", "seconds", "final_agreement"}.
    pairwise_ : (name_i, name_j) -> the fitted Isometric (not saved).
    seconds_ : wall time per stage (pairwise, sync, rescue, joint, diagnostics).
    """

    _state = ("maps_", "means_")
    _state_meta = ("spaces_", "widths_", "stats_", "latent_dim_", "excluded_", "report_", "pairs_", "seconds_")

    def __init__(self, isometric: Optional[dict] = None, min_consistency: float = 0.5, sync_iter: int = 30,
                 refine_iter: int = 5, ot_iter: int = 2, ot_eps: float = 0.05, ot_rows: int = 12000,
                 csls_k: int = 10, pair_weight: float = 1.0, rescue: bool = True, seed: int = 0,
                 progress: bool = True):
        self.isometric = isometric
        self.min_consistency = min_consistency
        self.sync_iter = sync_iter
        self.refine_iter = refine_iter
        self.ot_iter = ot_iter
        self.ot_eps = ot_eps
        self.ot_rows = ot_rows
        self.csls_k = csls_k
        self.pair_weight = pair_weight
        self.rescue = rescue
        self.seed = seed
        self.progress = progress

    def _check_params(self) -> None:
        if self.isometric is not None and not isinstance(self.isometric, dict):
            raise ValueError(f"isometric must be a dict of Isometric parameters or None, got {self.isometric!r}")
        from .isometric import Isometric

        if not isinstance(self.rescue, bool):
            raise ValueError(f"rescue must be True or False, got {self.rescue!r}")
        bad = set(self.isometric or {}) - set(Isometric._param_names())
        if bad:
            raise ValueError(f"isometric: Isometric has no parameter(s) {sorted(bad)}")
        check_real(self.min_consistency, "min_consistency", -1, 1)
        check_positive_int(self.sync_iter, "sync_iter")
        check_positive_int(self.refine_iter, "refine_iter", minimum=0)
        check_positive_int(self.ot_iter, "ot_iter", minimum=0)
        check_real(self.ot_eps, "ot_eps", 0, open_low=True)
        check_positive_int(self.ot_rows, "ot_rows", minimum=2)
        check_positive_int(self.csls_k, "csls_k")
        check_real(self.pair_weight, "pair_weight", 0, open_low=True)
        check_positive_int(self.seed, "seed", minimum=0)

    # -- input ------------------------------------------------------------
    @staticmethod
    def _check_spaces(spaces: Any) -> Dict[str, np.ndarray]:
        if not isinstance(spaces, dict):
            raise ValueError(f"spaces must be a dict name -> (n, d) array, e.g. {{'minilm': A, 'mpnet': B}}; "
                             f"got {type(spaces).__name__}")
        if len(spaces) < 2:
            raise ValueError(f"spaces: Universal needs at least 2 spaces, got {len(spaces)}")
        out = {}
        for name, Z in spaces.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"spaces: every name must be a non-empty string, got {name!r}")
            out[name] = as_matrix(Z, f"spaces[{name!r}]", dtype=np.float32, min_rows=_MIN_ROWS)
        return out

    @staticmethod
    def _check_known(pairs: Any, spaces: Dict[str, np.ndarray]) -> Dict[Tuple[int, int], np.ndarray]:
        """Known pairs {(name_a, name_b): (m, 2) rows} -> {(i, j) with i < j: rows of i, rows of j}."""
        if pairs is None:
            return {}
        if not isinstance(pairs, dict):
            raise ValueError("pairs must be a dict {(space_a, space_b): (m, 2) array of (row of a, row of b)}")
        names = list(spaces)
        out: Dict[Tuple[int, int], np.ndarray] = {}
        for key, P in pairs.items():
            if not (isinstance(key, tuple) and len(key) == 2 and all(k in spaces for k in key) and key[0] != key[1]):
                raise ValueError(f"pairs: key {key!r} must be a tuple of two different space names among {names}")
            a, b = key
            P = check_pairs(P, len(spaces[a]), len(spaces[b]), name=f"pairs[{key!r}]")
            i, j = names.index(a), names.index(b)
            if i > j:
                i, j, P = j, i, P[:, ::-1].copy()
            if (i, j) in out:
                raise ValueError(f"pairs: the spaces {key!r} are given twice (in both orders)")
            out[(i, j)] = P
        return out

    def _space(self, name: Any, arg: str, included: bool = True) -> str:
        self._check_fitted()
        if not isinstance(name, str) or name not in self.spaces_:
            raise ValueError(f"{arg}={name!r} is not a space of this Universal; spaces: {', '.join(self.spaces_)}")
        if included and name not in self.maps_:
            raise ValueError(f"{arg}={name!r} was excluded from the latent ({self.report_[name]['reason']}); "
                             "see report_")
        return name

    # -- fitting ----------------------------------------------------------
    def fit(self, spaces: Any, pairs: Any = None) -> "Universal":  # type: ignore[override]
        """Fit on a dict ``name -> (n_i, d_i)`` of unpaired sets; ``pairs`` optionally
        maps ``(name_a, name_b)`` to (m, 2) known pairs (row of a, row of b)."""
        self._check_params()
        self.__dict__.pop("maps_", None)  # a failed refit leaves an unfitted Universal, not a mixed one
        spaces = self._check_spaces(spaces)
        known = self._check_known(pairs, spaces)
        names = list(spaces)
        N = len(names)
        self.spaces_ = names
        self.widths_ = {n: int(spaces[n].shape[1]) for n in names}
        D = max(self.widths_.values())
        self.latent_dim_ = self.d_in_ = self.d_out_ = D
        self.history_ = []
        rng = np.random.default_rng(self.seed)
        X, self.means_, self.stats_ = [], {}, {}
        for n in names:
            self.means_[n], self.stats_[n], Xp = _prep().fit(spaces[n])
            X.append(Xp)
        diag = [x[np.sort(rng.permutation(len(x))[:_DIAG_ROWS])] for x in X]
        clock = [time.perf_counter()]
        seconds: Dict[str, float] = {}

        def lap(stage: str) -> None:
            now = time.perf_counter()
            seconds[stage] = round(seconds.get(stage, 0.0) + now - clock[0], 3)
            clock[0] = now

        # 2. pairwise maps
        pair_list = [(i, j) for i in range(N) for j in range(i + 1, N)]
        seeds = rng.integers(0, 2**31 - 1, size=len(pair_list) + N)
        maps, info, self.pairwise_ = {}, {}, {}
        with progress_bar(total=len(pair_list), desc="universal: pairwise maps", unit="pair",
                          enabled=self.progress) as bar:
            for (i, j), s in zip(pair_list, seeds):
                iso, info[(i, j)] = self._isometric(spaces[names[i]], spaces[names[j]], known.get((i, j)), s)
                info[(i, j)]["spaces"] = [names[i], names[j]]
                maps[(i, j)] = iso.W_.astype(np.float64)
                self.pairwise_[(names[i], names[j])] = iso
                bar.update(1)

        lap("pairwise")

        # 3. synchronisation, dropping inconsistent maps
        weights = {p: max(info[p]["gain"], 1e-3) if info[p]["confirmed"] else 0.0 for p in pair_list}
        if not any(weights.values()):  # nothing confirmed: use every map by its gain, and say so
            warnings.warn("Universal: no pairwise map was confirmed by two Isometric restarts; the latent may be "
                          "wrong (give more rows per space or more restarts)", RuntimeWarning, stacklevel=2)
            weights = {p: max(info[p]["gain"], 1e-3) for p in pair_list}
        used = {p for p in pair_list if weights[p] > 0}
        for p in pair_list:
            info[p].update(weight=float(weights[p]), consistency=None, used=False)
        while True:
            members = self._component(used, N, weights)
            active = {p: maps[p] for p in used if p[0] in members and p[1] in members}
            U = self._synchronise(active, weights, members, D)
            cons = {}
            for (i, j) in active:
                S = U[i].astype(np.float64) @ U[j].T
                cons[(i, j)] = 0.5 * (map_agreement(diag[i], maps[(i, j)], S)
                                      + map_agreement(diag[j], maps[(i, j)].T, S.T))
            worst = min(cons, key=cons.get) if cons else None
            if worst is None or cons[worst] >= self.min_consistency or len(active) == 1:
                break  # (one map is consistent with itself whatever min_consistency says)
            info[worst]["consistency"] = float(cons[worst])
            used.discard(worst)
        for p in active:
            info[p].update(consistency=float(cons[p]), used=True)

        report = {}
        for i, n in enumerate(names):
            mine = [p for p in pair_list if i in p]
            sup = [p for p in active if i in p]
            reason = None
            if i not in members:
                if all(weights[p] == 0 for p in mine):
                    reason = "none of its pairwise maps was confirmed by two Isometric restarts"
                elif not any(p in used for p in mine):
                    reason = "its confirmed pairwise maps disagree with the others around cycles"
                else:
                    reason = "not connected to the largest group of spaces by consistent maps"
            report[n] = {"included": i in members, "reason": reason, "width": self.widths_[n], "rows": len(X[i]),
                         "support": len(sup), "consistency": float(np.mean([cons[p] for p in sup])) if sup else None,
                         "pairwise_gain": max(info[p]["gain"] for p in mine), "rescue": None, "latent_gain": None}

        lap("sync")

        # 4. a space left out is given a second chance against the pooled latent rows of the others
        core = sorted(members)
        if self.rescue and len(members) < N:
            pool = np.concatenate([X[j] @ U[j] for j in core])
            offset = dict(zip(core, np.cumsum([0] + [len(X[j]) for j in core[:-1]])))
            for i in range(N):
                if i in members:
                    continue
                kp = self._pooled_pairs(known, i, core, offset)
                iso, res = self._isometric(spaces[names[i]], pool, kp, seeds[len(pair_list) + i])
                report[names[i]]["rescue"] = res
                if res["confirmed"]:
                    U[i] = iso.W_
                    members.add(i)
                    report[names[i]].update(included=True, reason=None)
                else:
                    report[names[i]]["reason"] += "; nor was its map to the others' pooled latent rows"

        lap("rescue")

        # 5. joint refinement of the included maps
        inc = sorted(members)
        if len(inc) < 2:  # cannot happen: a single map is always consistent with itself
            raise ValueError("spaces: no two spaces could be aligned")
        if self.refine_iter or self.ot_iter:
            kn = {(inc.index(i), inc.index(j)): P for (i, j), P in known.items() if i in members and j in members}
            Ur = joint_refine([X[i] for i in inc], [U[i] for i in inc], kn, self.csls_k, self.refine_iter,
                              self.ot_iter, self.ot_eps, self.ot_rows, self.pair_weight, rng, self.history_)
            for i, u in zip(inc, Ur):
                U[i] = u
        lap("joint")
        # 6. gauge: the widest included space (first among equals) is the latent's coordinates
        ref = max(inc, key=lambda i: (self.widths_[names[i]], -i))
        U = fix_gauge([U[i] if i in members else None for i in range(N)], ref)
        self.maps_ = {names[i]: U[i] for i in inc}
        self.excluded_ = [n for i, n in enumerate(names) if i not in members]

        # diagnostics in the final latent
        for i in inc:
            gains = []
            for j in inc:
                if j != i:
                    null = latent_criterion(*pair_space(diag[i], random_map(len(U[i]), D, rng), diag[j], U[j]),
                                            self.csls_k)
                    crit = latent_criterion(*pair_space(diag[i], U[i], diag[j], U[j]), self.csls_k)
                    gains.append((crit - null) / max(abs(null), 1e-6))
            report[names[i]]["latent_gain"] = float(np.mean(gains))
        for (i, j) in pair_list:
            fin = U[i].astype(np.float64) @ U[j].T if i in members and j in members else None
            info[(i, j)]["final_agreement"] = None if fin is None else map_agreement(diag[i], maps[(i, j)], fin)
        lap("diagnostics")
        self.report_ = report
        self.pairs_ = [info[p] for p in pair_list]
        self.seconds_ = seconds
        if self.excluded_:
            warnings.warn(f"Universal: space(s) {self.excluded_} do not fit the latent and were excluded; "
                          "see report_", RuntimeWarning, stacklevel=2)
        return self

    def _isometric(self, X: np.ndarray, Y: np.ndarray, pairs, seed) -> Tuple[Any, Dict[str, Any]]:
        """One Isometric fit and its confidence: the kept restart's gain, and whether
        two restarts found the same map."""
        from .isometric import Isometric

        t0 = time.perf_counter()
        iso = Isometric(**{"progress": False, **(self.isometric or {}), "seed": int(seed)})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # unconfirmed maps are reported instead
            iso.fit(X, Y, pairs=pairs)
        return iso, {"gain": float(iso.restarts_[iso.chosen_restart_]["gain"]),
                     "confirmed": iso.confirmed_,
                     "restarts": len(iso.restarts_), "known_pairs": 0 if pairs is None else int(len(pairs)),
                     "seconds": round(time.perf_counter() - t0, 3)}

    @staticmethod
    def _pooled_pairs(known, i: int, core: List[int], offset: Dict[int, int]) -> Optional[np.ndarray]:
        """Known pairs of space i with the core spaces, as rows of the pooled latent
        (each row of i once: the first pair given for it)."""
        rows = []
        for j in core:
            P = known.get((i, j)) if (i, j) in known else (known[(j, i)][:, ::-1] if (j, i) in known else None)
            if P is not None:
                rows.append(P + np.array([0, offset[j]]))
        if not rows:
            return None
        P = np.concatenate(rows)
        return P[np.sort(np.unique(P[:, 0], return_index=True)[1])]

    @staticmethod
    def _component(used, N: int, weights) -> set:
        """The connected group of spaces (by the used maps) with the largest total weight."""
        parent = list(range(N))

        def root(a):
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for i, j in used:
            parent[root(i)] = root(j)
        groups: Dict[int, set] = {}
        for i in range(N):
            groups.setdefault(root(i), set()).add(i)
        score = {r: (len(g), sum(weights[p] for p in used if p[0] in g), -min(g)) for r, g in groups.items()}
        return groups[max(score, key=score.get)] if used else set()

    def _synchronise(self, active, weights, members, D) -> List[Optional[np.ndarray]]:
        order = sorted(members)
        if not order:
            return []
        widths = [self.widths_[self.spaces_[i]] for i in order]
        loc = {i: k for k, i in enumerate(order)}
        m = {(loc[i], loc[j]): W for (i, j), W in active.items()}
        w = {(loc[i], loc[j]): weights[(i, j)] for (i, j) in active}
        Us = sync_iterate(spectral_sync(m, w, widths, D), m, w, n_iter=self.sync_iter)
        out: List[Optional[np.ndarray]] = [None] * len(self.spaces_)
        for i, u in zip(order, Us):
            out[i] = u
        return out

    # -- use --------------------------------------------------------------
    def to_latent(self, X: Any, source: str) -> np.ndarray:
        """Rows of space ``source`` in the shared latent space: (n, D) unit rows."""
        source = self._space(source, "source")
        X = self._check_X(X, source)
        return _prep().apply(X, self.means_[source]) @ self.maps_[source]

    def from_latent(self, Z: Any, target: str) -> np.ndarray:
        """Latent rows (n, D) to space ``target``'s original coordinates."""
        target = self._space(target, "target")
        Z = as_matrix(Z, "Z", dtype=np.float32)
        if Z.shape[1] != self.latent_dim_:
            raise ValueError(f"Z has {Z.shape[1]} columns but the latent has {self.latent_dim_}")
        return _prep().inverse(Z @ self.maps_[target].T, self.means_[target], self.stats_[target]).astype(np.float32)

    def transform(self, X: Any, source: str = None, target: str = None) -> np.ndarray:  # type: ignore[override]
        """Translate rows of space ``source`` into space ``target`` (original coordinates)."""
        self._check_fitted()
        if source is None or target is None:
            raise ValueError("Universal.transform needs source= and target= (space names); "
                             f"spaces: {', '.join(self.spaces_)}")
        self._space(target, "target")
        return self.from_latent(self.to_latent(X, source), target)

    def fit_transform(self, *args, **kw):  # type: ignore[override]
        raise ValueError("Universal: call fit(spaces) then transform(X, source=..., target=...)")

    def translator(self, source: str, target: str) -> "PairTranslator":
        """The fitted map ``source -> target`` as an ordinary translator."""
        source, target = self._space(source, "source"), self._space(target, "target")
        t = PairTranslator(source=source, target=target, universal=self.get_params(deep=False))
        t.W_ = (self.maps_[source].astype(np.float64) @ self.maps_[target].T).astype(np.float32)
        t.mean_a_, t.mean_b_ = self.means_[source], self.means_[target]
        t.stats_b_ = dict(self.stats_[target])
        t.d_in_, t.d_out_ = self.widths_[source], self.widths_[target]
        t.history_ = []
        return t

    def _check_X(self, X: Any, source: str) -> np.ndarray:
        X = as_matrix(X, "X", dtype=np.float32)
        if X.shape[1] != self.widths_[source]:
            raise ValueError(f"X has {X.shape[1]} columns but space source={source!r} has {self.widths_[source]}")
        return X

    def _check_fitted(self) -> None:
        if not hasattr(self, "maps_"):
            raise NotFittedError("this Universal is not fitted yet: call fit({name: array, ...}) first")

    # -- persistence -------------------------------------------------------
    def _state_tensors(self) -> Dict[str, np.ndarray]:
        d = max(self.widths_.values())
        maps = np.zeros((len(self.spaces_), d, self.latent_dim_), np.float32)
        means = np.zeros((len(self.spaces_), d), np.float32)
        for k, n in enumerate(self.spaces_):
            w = self.widths_[n]
            means[k, :w] = self.means_[n]
            if n in self.maps_:
                maps[k, :w] = self.maps_[n]
        return {"maps_": maps, "means_": means}

    def _load_state(self, tensors: Dict[str, np.ndarray], meta: Dict[str, Any]) -> None:
        for name in self._state_meta:
            setattr(self, name, meta[name])
        names, widths = self.spaces_, self.widths_
        if (not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names)
                or not isinstance(widths, dict) or set(widths) != set(names)
                or not all(isinstance(w, int) and 0 < w <= self.latent_dim_ for w in widths.values())):
            raise ValueError("Universal: saved spaces_/widths_ are malformed")
        d = max(widths.values())
        for key, shape in (("maps_", (len(names), d, self.latent_dim_)), ("means_", (len(names), d))):
            if tuple(tensors[key].shape) != shape:
                raise ValueError(f"Universal: saved {key} has shape {tuple(tensors[key].shape)}, expected {shape}")
        if not isinstance(self.excluded_, list) or set(self.excluded_) - set(names):
            raise ValueError("Universal: saved excluded_ is malformed")
        self.means_ = {n: np.ascontiguousarray(tensors["means_"][k, :widths[n]]) for k, n in enumerate(names)}
        self.maps_ = {n: np.ascontiguousarray(tensors["maps_"][k, :widths[n]])
                      for k, n in enumerate(names) if n not in self.excluded_}

    def _check_state(self) -> None:
        if self.d_in_ != self.latent_dim_ or self.d_out_ != self.latent_dim_:
            raise ValueError("Universal: saved d_in/d_out must equal latent_dim_")
        if not isinstance(self.stats_, dict) or set(self.stats_) != set(self.spaces_):
            raise ValueError("Universal: saved stats_ must hold one entry per space")
        for n, s in self.stats_.items():
            check_stats(s, f"Universal: saved stats_[{n!r}]")
        if not isinstance(self.report_, dict) or set(self.report_) != set(self.spaces_):
            raise ValueError("Universal: saved report_ must hold one entry per space")


class PairTranslator(Translator):
    """The map between two spaces of a :class:`Universal`, as an ordinary translator:
    ``transform(X)`` = ``Universal.transform(X, source, target)``; ``save`` / ``load``.
    Made by ``Universal.translator(source, target)``; ``fit(X, Y)`` fits a two-space
    Universal (parameters ``universal``) and keeps its map.

    Attributes: ``W_`` (d_a, d_b) = ``U_source U_targetᵀ``, ``mean_a_``, ``mean_b_``, ``stats_b_``.
    """

    _state = ("W_", "mean_a_", "mean_b_")
    _state_meta = ("stats_b_",)
    accepts_pairs = True

    def __init__(self, source: str = "source", target: str = "target", universal: Optional[dict] = None):
        self.source = source
        self.target = target
        self.universal = universal

    def _fit(self, X: np.ndarray, Y: np.ndarray, pairs: Optional[np.ndarray] = None) -> None:
        if not isinstance(self.source, str) or not isinstance(self.target, str) or self.source == self.target:
            raise ValueError(f"source and target must be two different names, got {self.source!r}, {self.target!r}")
        if self.universal is not None and not isinstance(self.universal, dict):
            raise ValueError(f"universal must be a dict of Universal parameters or None, got {self.universal!r}")
        u = Universal(**(self.universal or {}))
        known = None if pairs is None else {(self.source, self.target): pairs}
        u.fit({self.source: X, self.target: Y}, pairs=known)
        t = u.translator(self.source, self.target)
        self.W_, self.mean_a_, self.mean_b_, self.stats_b_ = t.W_, t.mean_a_, t.mean_b_, t.stats_b_
        self.history_ = u.history_

    def _transform(self, X: np.ndarray) -> np.ndarray:
        return _prep().inverse(_prep().apply(X, self.mean_a_) @ self.W_, self.mean_b_, self.stats_b_)

    def _check_state(self) -> None:
        check_map_state(self)
