#!/usr/bin/env python
"""One latent space for three encoders, unpaired: translate.Universal against
Isometric alone and the paired oracle, and translate.translatability against
what the fits achieve.

Encoders: all-MiniLM-L6-v2 (minilm, 384-d), all-mpnet-base-v2 (mpnet, 768-d),
multilingual-e5-small (e5, 384-d), on WordNet texts. Each encoder gets its *own*
``--n-train`` texts (disjoint: minilm [0, n), e5 [n, 2n), mpnet [23000 - n, 23000)),
so no fit sees a pair. Held-out pairs: texts [23000, 23000 + pool) embedded by all
three (the candidate pool of every top-1). Per ordered pair a -> b:

- ``oracle``: translate.Procrustes(normalize=True) fitted on n *paired* texts (mpnet's training
  texts [23000 - n, 23000), embedded by both encoders): the ceiling;
- ``isometric``: translate.Isometric(seed=s).fit(train_a, train_b): each pair alone;
- ``universal``: one translate.Universal(seed=s).fit({minilm, mpnet, e5}) per seed,
  then ``transform(X, source=a, target=b)``;
- ``translatability``: translate.translatability(train_a, train_b, seed=s, restarts=3), and its
  Spearman correlation with the achieved top-1 over all ordered pairs and seeds;
  linear CKA on the held-out pairs (which needs pairs) beside it for reference.

Embeddings come from the on-disk cache (align.data.embed_corpus), loaded exactly as
cached -- minilm and e5 texts [0, 24000), mpnet [11500, 24000) -- then sliced. The
script refuses to embed anything (a missing chunk is an error naming the command
that caches it) unless ``--allow-embed``.

Resumable: every result is written to ``--json`` as soon as it is computed, and a
rerun skips what is there. ``--md docs/universal.md`` writes the documentation page
from the JSON (no computing). ``--synthetic`` runs the whole pipeline on a small
synthetic stand-in (a clustered cloud embedded in 24/48/24 dimensions) to test it.

Usage::

    .venv/bin/python scripts/universal_study.py --json out/universal_study.json
    .venv/bin/python scripts/universal_study.py --json out/universal_study.json --md docs/universal.md
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ENCODERS = ("minilm", "mpnet", "e5")
# what is (or will be) in the cache: each encoder is loaded with exactly these bounds
CACHED = {"minilm": (0, 24000), "e5": (0, 24000), "mpnet": (11500, 24000)}
POOL_START = 23000
SYNTH_WIDTHS = {"minilm": 24, "mpnet": 48, "e5": 24}
PARTS = ("oracle", "cka", "translatability", "isometric", "universal", "misfit")


# --------------------------------------------------------------------------- data


@functools.lru_cache(maxsize=None)
def _cached_rows(encoder: str, allow_embed: bool) -> np.ndarray:
    from align.data import embed_corpus

    lo, hi = CACHED[encoder]
    try:
        return embed_corpus(encoder, corpus="wordnet", n=hi - lo, start=lo, progress=allow_embed,
                            cached_only=not allow_embed)
    except ValueError as exc:
        raise SystemExit(f"{exc}; or rerun with --allow-embed") from None


@functools.lru_cache(maxsize=None)
def _synthetic_rows(encoder: str) -> np.ndarray:
    """Text i -> the i-th point of one clustered cloud (16-d), embedded in the
    encoder's width by a fixed semi-orthogonal map, plus 5 % noise of its own."""
    rng = np.random.default_rng(0)
    scales = np.geomspace(1, 0.05, 16)
    centres = rng.standard_normal((50, 16)) * scales
    lo, hi = CACHED[encoder]
    cloud = centres[rng.integers(50, size=24000)] + 0.2 * rng.standard_normal((24000, 16)) * scales
    r = np.random.default_rng(1 + ENCODERS.index(encoder))
    Q, _ = np.linalg.qr(r.standard_normal((SYNTH_WIDTHS[encoder], 16)))
    Z = cloud[lo:hi] @ Q.T
    return (Z + 0.05 * np.sqrt(np.mean(Z**2)) * r.standard_normal(Z.shape)).astype(np.float32)


def rows(encoder: str, lo: int, hi: int, args) -> np.ndarray:
    """Embeddings of texts [lo, hi)."""
    c0, c1 = CACHED[encoder]
    if not c0 <= lo < hi <= c1:
        raise SystemExit(f"{encoder}: texts [{lo}, {hi}) are outside its cached range [{c0}, {c1})")
    full = _synthetic_rows(encoder) if args.synthetic else _cached_rows(encoder, args.allow_embed)
    return full[lo - c0:hi - c0]


def layout(n: int, pool: int) -> Dict[str, Any]:
    train = {"minilm": (0, n), "e5": (n, 2 * n), "mpnet": (POOL_START - n, POOL_START)}
    if 2 * n > POOL_START - n or POOL_START - n < CACHED["mpnet"][0] or POOL_START + pool > CACHED["mpnet"][1]:
        raise SystemExit(f"--n-train {n} / --pool {pool} do not fit: need 3 n <= {POOL_START}, "
                         f"n <= {POOL_START - CACHED['mpnet'][0]}, pool <= {CACHED['mpnet'][1] - POOL_START}")
    return {"train": train, "oracle": (POOL_START - n, POOL_START), "test": (POOL_START, POOL_START + pool)}


# --------------------------------------------------------------------------- steps


def _metrics(Y_hat: np.ndarray, Y: np.ndarray) -> Dict[str, Any]:
    from translate.evaluate import evaluate

    r = evaluate(Y_hat, Y)
    return {k: r[k] for k in ("top1", "top5", "mean_rank", "mean_cos", "foscttm", "pool")}


def plan(args, lay) -> List[Tuple[str, Any]]:
    """(record key, function computing the record) in order: cheap steps first."""
    from translate.universal import Universal

    iso = json.loads(args.isometric) if args.isometric else {}
    ordered = [(a, b) for a in ENCODERS for b in ENCODERS if a != b]
    train = lambda e: rows(e, *lay["train"][e], args)  # noqa: E731
    test = lambda e: rows(e, *lay["test"], args)  # noqa: E731
    jobs: List[Tuple[str, Any]] = []

    def oracle(a, b):
        from translate.paired import Procrustes

        t0 = time.perf_counter()
        # VecMap's normalisation (unit, centre, unit), as the unpaired fits preprocess
        m = Procrustes(normalize=True).fit(rows(a, *lay["oracle"], args), rows(b, *lay["oracle"], args))
        return {**_metrics(m.transform(test(a)), test(b)), "seconds": time.perf_counter() - t0}

    def cka(a, b):
        import align

        return {"cka": float(align.cka(test(a), test(b)))}

    def trans(a, b, s):
        from translate.translatable import translatability

        # the quick maps' evidence too (opt-in since the default became the profile alone)
        return translatability(train(a), train(b), seed=s, restarts=3, details=True)

    def isometric(a, b, s):
        from translate.isometric import Isometric

        t0 = time.perf_counter()
        m = Isometric(**{"progress": False, **iso, "seed": s})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            m.fit(train(a), train(b))
        kept = m.restarts_[m.chosen_restart_]
        return {**_metrics(m.transform(test(a)), test(b)), "seconds": time.perf_counter() - t0,
                "gain": kept["gain"], "restarts": len(m.restarts_),
                "confirmed": m.confirmed_}

    def universal(s, spaces=None):
        """One Universal fit (default: the three encoders' training rows); every ordered pair of
        encoders placed in its latent is scored on the pool."""
        spaces = {e: train(e) for e in ENCODERS} if spaces is None else spaces
        t0 = time.perf_counter()
        u = Universal(isometric=iso or None, seed=s, progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            u.fit(spaces)
        out = {"seconds": time.perf_counter() - t0, "stages": u.seconds_, "report": u.report_, "pairs": u.pairs_,
               "excluded": u.excluded_, "ordered": {}}
        for a, b in ordered:
            if a in u.maps_ and b in u.maps_:
                out["ordered"][f"{a}->{b}"] = _metrics(u.transform(test(a), source=a, target=b), test(b))
        return out

    def misfit(gauss: bool, s: int):
        """Universal on minilm + mpnet, alone or with a space that cannot fit: a Gaussian with
        the mean and covariance of e5's training rows (no structure beyond its spectrum)."""
        spaces = {e: train(e) for e in ("minilm", "mpnet")}
        if gauss:
            E = train("e5").astype(np.float64)
            spaces["gaussian"] = np.random.default_rng(s).multivariate_normal(
                E.mean(axis=0), np.cov(E.T), size=len(E)).astype(np.float32)
        return universal(s, spaces)

    if "oracle" in args.parts:
        jobs += [(f"oracle {a}->{b}", functools.partial(oracle, a, b)) for a, b in ordered]
    if "cka" in args.parts:
        jobs += [(f"cka {a},{b}", functools.partial(cka, a, b)) for a, b in ordered if a < b]
    for s in args.seeds:
        if "translatability" in args.parts:
            jobs += [(f"translatability {a}->{b} seed{s}", functools.partial(trans, a, b, s)) for a, b in ordered]
        if "isometric" in args.parts:
            jobs += [(f"isometric {a}->{b} seed{s}", functools.partial(isometric, a, b, s)) for a, b in ordered]
        if "universal" in args.parts:
            jobs.append((f"universal seed{s}", functools.partial(universal, s)))
        if "misfit" in args.parts:
            jobs += [(f"misfit {name} seed{s}", functools.partial(misfit, g, s))
                     for name, g in (("minilm+mpnet", False), ("minilm+mpnet+gaussian", True))]
    return jobs


# --------------------------------------------------------------------------- summary


def spearman(x: List[float], y: List[float]) -> Optional[float]:
    from scipy.stats import spearmanr

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(spearmanr(x, y).statistic)


def summary(results: Dict[str, Any]) -> Dict[str, Any]:
    """Per ordered pair (means over seeds) and the Spearman correlations."""
    rec = results["records"]
    seeds = sorted({int(k.rsplit("seed", 1)[1]) for k in rec if "seed" in k})
    table, points = [], []
    for a in ENCODERS:
        for b in ENCODERS:
            if a == b:
                continue
            row: Dict[str, Any] = {"pair": f"{a} -> {b}", "oracle": rec.get(f"oracle {a}->{b}", {}).get("top1")}
            iso = [rec[k] for s in seeds if (k := f"isometric {a}->{b} seed{s}") in rec]
            uni = [rec[k]["ordered"].get(f"{a}->{b}", {}).get("top1")
                   for s in seeds if (k := f"universal seed{s}") in rec]
            uni = [u for u in uni if u is not None]
            tr = [rec[k] for s in seeds if (k := f"translatability {a}->{b} seed{s}") in rec]
            row["isometric"] = float(np.mean([r["top1"] for r in iso])) if iso else None
            row["isometric min"] = min(r["top1"] for r in iso) if iso else None
            row["isometric s"] = float(np.mean([r["seconds"] for r in iso])) if iso else None
            row["universal"] = float(np.mean(uni)) if uni else None
            row["universal min"] = min(uni) if uni else None
            row["translatability"] = float(np.mean([r["score"] for r in tr])) if tr else None
            row["translatability s"] = float(np.mean([r["seconds"] for r in tr])) if tr else None
            row["cka"] = rec.get(f"cka {min(a, b)},{max(a, b)}", {}).get("cka")
            table.append(row)
            for s in seeds:
                t, i = rec.get(f"translatability {a}->{b} seed{s}"), rec.get(f"isometric {a}->{b} seed{s}")
                u = rec.get(f"universal seed{s}", {}).get("ordered", {}).get(f"{a}->{b}")
                points.append({"t": t, "iso": i and i["top1"], "uni": u and u["top1"], "cka": row["cka"]})
    corr = {}
    for comp in ("score", "profile", "evidence"):
        for target in ("iso", "uni"):
            ps = [p for p in points if p["t"] is not None and p[target] is not None]
            corr[f"translatability.{comp} vs {target} top-1"] = {
                "spearman": spearman([p["t"][comp] for p in ps], [p[target] for p in ps]), "n": len(ps)}
    for target in ("iso", "uni"):
        ps = [p for p in points if p["cka"] is not None and p[target] is not None]
        corr[f"cka (paired) vs {target} top-1"] = {"spearman": spearman([p["cka"] for p in ps],
                                                                         [p[target] for p in ps]), "n": len(ps)}
    return {"seeds": seeds, "table": table, "correlations": corr}


INTRO = """# One latent space for N encoders, and translatability

`translate.Universal` fits one shared latent space for several embedding spaces from
*unpaired* sets, and translates any space into any other through it.
`translate.translatability` guesses, from two unpaired sets and in a few seconds,
whether they will translate at all.

```python
import translate
u = translate.Universal(seed=0).fit({"minilm": A, "mpnet": B, "e5": C})  # unpaired, any row counts
u.transform(X, source="minilm", target="e5")     # any to any
u.to_latent(X, source="mpnet")                   # the shared space (width = the largest width)
t = u.translator("minilm", "e5")                 # an ordinary translator: transform / save / load
u.save("model/"); u = translate.load("model/")   # safetensors + JSON
u.report_                                        # per space: does it sit in the latent? why not?
u.fit(spaces, pairs={("minilm", "e5"): P})       # known pairs, when some exist
translate.translatability(X, Y, seed=0)          # higher = more likely to translate
```

## Method

1. **Pairwise maps.** One `Isometric` fit per unordered pair of spaces (with that pair's
   known pairs, if any). Its confidence: the held-out criterion gain of the restart it
   kept, and whether two restarts found the same map (*confirmed*).
2. **Synchronisation.** The block matrix of confirmed maps weighted by their gains; its
   top D eigenvectors, the polar factor of each block (spectral synchronisation;
   Singer 2011; Marcos-Manchón, Jha & Fuentemilla 2026), then block-coordinate ascent
   `U_i <- polar(Σ_j w_ij W_ij U_j)` (generalised Procrustes). Each map's **cycle
   consistency** is its agreement with the synchronised `U_i U_jᵀ` (mean cosine between
   the two translations of its rows); the least consistent map below 0.5 is dropped and
   the rest resynchronised, so a wrong map is out-voted by the maps that close its cycles.
3. **Spaces that do not fit are reported, not forced.** A space with no confirmed,
   consistent map is first given a second chance: an Isometric fit against the pooled
   latent rows of the other spaces (a hard pair reached through the easy ones). If that
   is not confirmed either, it is left out of the latent and `report_` says why.
4. **Joint refinement** (generalised Wasserstein-Procrustes; Alaux et al. 2019,
   unsupervised hyperalignment): every pair of spaces matched in the latent (CSLS,
   both directions), cross-covariances accumulated per space over all the others, a
   polar factor per space; then entropic (Sinkhorn) rounds, as Isometric's refinement.
5. **Gauge:** the latent is the widest space's preprocessed coordinates.

Each space is preprocessed as Isometric does (unit rows, centre, unit rows), and a
translation returns rows in the target's original coordinates, as Isometric's do.

`translatability` (see `translate/translatable.py`): by default the *profile*, which
compares the two clouds' local geometry without pairs and without a map: the quantiles of
each row's cosine to its 1st and 10th nearest neighbour, `exp(-mean |Δ| / 0.05)`, in about a
second. With `restarts=3` (as here, to measure both parts), `score = profile · (1 + evidence)`;
*evidence*: three quick unpaired maps from random starts (signature start, 10 random-block
assignment / Procrustes iterations, one CSLS polish on ≤ 2000 rows); the best agreement
between two of them whose held-out gains both reach 0.5. On minilm embeddings against a
rotation of other minilm embeddings into 768-d the score was 0.96 (10 % noise), 0.31 (50 %)
and 0.11 (a Gaussian of the same covariance), with evidence ≤ 0.1: at this budget the quick
maps do not find the map on real embeddings, hence the profile alone by default. Whether it
ranks real encoder pairs as their achieved top-1 does is what the table below measures, and
[translatability.md](translatability.md) on more spaces (GloVe averages, an intermediate layer).
"""


def markdown(results: Optional[Dict[str, Any]], command: str) -> str:
    from translate.tables import markdown_table

    out = [INTRO, "## Results: minilm, mpnet, e5 on WordNet, no pairs", ""]
    if not results or not results.get("records"):
        out += ["Not measured yet. Run:", "", "```bash", command, "```", ""]
        return "\n".join(out)
    cfg = results["config"]
    sm = summary(results)
    lay = cfg["layout"]
    rng = lambda r: f"[{r[0]}, {r[1]})"  # noqa: E731
    out += [f"Regenerate: `{command}` (then `--md docs/universal.md`).", "",
            f"{cfg['n_train']} different texts per encoder (minilm {rng(lay['train']['minilm'])}, e5 "
            f"{rng(lay['train']['e5'])}, mpnet {rng(lay['train']['mpnet'])}), seeds {sm['seeds']}; top-1 over the "
            f"{cfg['pool']} held-out texts {rng(lay['test'])} embedded by all three (the candidate pool). Oracle: "
            f"Procrustes(normalize=True) on the {cfg['n_train']} paired texts {rng(lay['oracle'])}."
            + (" **Synthetic stand-in data (`--synthetic`), not the real encoders.**" if cfg.get("synthetic") else ""),
            ""]
    cols = ["pair", "oracle", "isometric", "isometric min", "universal", "universal min", "translatability",
            "cka", "isometric s", "translatability s"]
    heads = ["a -> b", "oracle top-1 (paired)", "Isometric top-1", "min", "Universal top-1", "min",
             "translatability", "CKA (paired)", "Isometric fit s", "translatability s"]
    out += [markdown_table(sm["table"], cols, heads), "",
            "Seconds are wall times on the 2-core development machine (other jobs shared its cores in some runs): "
            "orders of magnitude, not benchmarks.", ""]
    for method in ("universal", "isometric"):
        ratios = [(r[f"{method} min"] / r["oracle"], r["pair"]) for r in sm["table"]
                  if r.get(f"{method} min") is not None and r.get("oracle")]
        if ratios:
            worst = min(ratios)
            out += [f"{method.capitalize()}: top-1 ≥ {worst[0]:.3f} × the paired oracle on each of the "
                    f"{len(ratios)} ordered pairs measured (lowest: {worst[1]}).", ""]
    corr = [{"predictor vs achieved": k, "Spearman": v["spearman"], "n": v["n"]} for k, v in sm["correlations"].items()]
    out += ["Does translatability (no pairs) rank the ordered pairs as their achieved top-1 does? "
            "CKA needs the held-out pairs and is shown for reference. Over six pairs a rank correlation is coarse; "
            "[translatability.md](translatability.md) ranks more spaces.",
            "", markdown_table(corr), ""]
    mis = sorted(k for k in results["records"] if k.startswith("misfit"))
    if mis:
        out += ["### Adding a space that does not fit", "",
                "Universal on minilm + mpnet alone, and with a third space that cannot fit: a Gaussian with the "
                "mean and covariance of e5's training rows (the same spectrum, no structure). Top-1 of the two "
                "real directions, pool as above."
                + "".join(sorted({f" {n[:1].upper()}{n[1:]}." for k in mis if (n := results["records"][k].get("note"))})),
                ""]
        rows_ = [{"spaces": k.split()[1], "seed": k.split()[2],
                  **{p: v["top1"] for p, v in results["records"][k]["ordered"].items()},
                  "excluded": ", ".join(results["records"][k]["excluded"]) or "none",
                  "reason": "; ".join(f"{n}: {v['reason']}" for n, v in results["records"][k]["report"].items()
                                      if v["reason"]), "fit s": results["records"][k]["seconds"]} for k in mis]
        out += [markdown_table(rows_), ""]
    for key in sorted(k for k in results["records"] if k.startswith("universal")):
        r = results["records"][key]
        stages = ", ".join(f"{k} {v:.0f} s" for k, v in r.get("stages", {}).items())
        out += [f"### Universal, {key.split()[1]}: {r['seconds']:.0f} s ({stages})", ""]
        sp = [{"space": n, "included": v["included"], "consistency": v["consistency"], "support": v["support"],
               "latent gain": v["latent_gain"], "reason": v["reason"] or ""} for n, v in r["report"].items()]
        out += [markdown_table(sp), ""]
        pp = [{"pair": " - ".join(p["spaces"]), "gain": p["gain"], "confirmed": str(p["confirmed"]),
               "consistency": p["consistency"], "used": str(p["used"]), "fit s": p["seconds"]} for p in r["pairs"]]
        out += [markdown_table(pp), ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    from translate.tables import write_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default="out/universal_study.json")
    ap.add_argument("--md", default=None, help="write this markdown page from --json and exit")
    ap.add_argument("--n-train", type=int, default=7600, help="texts per encoder (disjoint across encoders)")
    ap.add_argument("--pool", type=int, default=1000, help="held-out texts embedded by all encoders")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    ap.add_argument("--isometric", default="", help="JSON of Isometric parameters for every fit")
    ap.add_argument("--synthetic", action="store_true", help="synthetic stand-in data, to test the pipeline")
    ap.add_argument("--allow-embed", action="store_true", help="embed texts missing from the cache")
    args = ap.parse_args(argv)
    path = Path(args.json)
    command = f".venv/bin/python scripts/universal_study.py --json {args.json}"
    if args.md:
        results = json.loads(path.read_text()) if path.exists() else None
        Path(args.md).write_text(markdown(results, command))
        print(f"wrote {args.md}")
        return 0
    lay = layout(args.n_train, args.pool)
    config = {"n_train": args.n_train, "pool": args.pool, "isometric": json.loads(args.isometric or "{}"),
              "synthetic": args.synthetic, "layout": lay}
    path.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(path.read_text()) if path.exists() else {"config": config, "records": {}}
    if json.loads(json.dumps(results["config"])) != json.loads(json.dumps(config)):
        raise SystemExit(f"{path} holds results for another configuration ({results['config']}); "
                         "use another --json or delete it")
    for key, job in plan(args, lay):
        if key in results["records"]:
            continue
        t0 = time.perf_counter()
        results["records"][key] = job()
        write_json(path, results)
        print(f"{key}: {time.perf_counter() - t0:.1f} s", flush=True)
    sm = summary(results)
    from translate.tables import markdown_table

    print(markdown_table(sm["table"]))
    for k, v in sm["correlations"].items():
        print(f"{k}: Spearman {v['spearman']} (n={v['n']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
