#!/usr/bin/env python
"""Does ``translate.translatability`` (two unpaired sets, no map) predict what an
unpaired fit achieves? Validated on every ordered pair of a set of text spaces:
final sentence embeddings (minilm, mpnet, e5), GloVe-average vectors, and
an intermediate layer of mpnet (mean-pooled hidden states).

All spaces embed the same WordNet texts [11500, 21500) (the platonic study's
cache, ``scripts/platonic_study.py --allow-embed`` fills it). Per ordered pair a -> b:

- ``translatability``: the default call (the neighbour-similarity profile) on a's
  texts [11500, 16000) and b's texts [16000, 20500) (disjoint: no pair), and its seconds;
- ``evidence``: the same with ``restarts=3`` (the quick maps' agreement on top);
- ``isometric``: ``Isometric(seed=0, **--isometric).fit`` on those two sets, top-1 over the 1000
  held-out texts [20500, 21500) embedded by both, whether ``fit`` flagged it, seconds;
- ``oracle``: ``Procrustes(normalize=True)`` on the 4500 *paired* texts [16000, 20500):
  the ceiling; ``cka``: linear CKA on the held-out pairs (needs pairs; for reference).

The summary: Spearman correlations of each predictor with the achieved top-1 over all
ordered pairs, and translatability's time as a fraction of the fit's.

Resumable: each record is written to ``--json`` as soon as it is computed; a rerun skips
what is there. ``--md docs/translatability.md`` writes the page from the JSON.

Usage::

    .venv/bin/python scripts/translatability_study.py --json out/translatability.json
    .venv/bin/python scripts/translatability_study.py --json out/translatability.json --md docs/translatability.md
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SPACES = ("minilm", "mpnet", "e5", "glove", "mpnet-L6")
START, N = 11500, 10000
TRAIN_A, TRAIN_B, POOL = (0, 4500), (4500, 9000), (9000, 10000)  # offsets into [START, START + N)
PARTS = ("translatability", "oracle", "cka", "isometric", "evidence")
COMMAND = ".venv/bin/python scripts/translatability_study.py --allow-embed --json out/translatability_v4.json"


@functools.lru_cache(maxsize=None)
def spaces(allow_embed: bool) -> Dict[str, np.ndarray]:
    import platonic_study

    args = argparse.Namespace(quick=False, allow_embed=allow_embed)
    return platonic_study.language_spaces(None, args, n=N, start=START)


def rows(space: str, span: Tuple[int, int], allow_embed: bool) -> np.ndarray:
    return np.ascontiguousarray(spaces(allow_embed)[space][span[0]:span[1]])


def plan(args) -> List[Tuple[str, Callable[[], Dict[str, Any]]]]:
    from translate.evaluate import evaluate

    get = functools.partial(rows, allow_embed=args.allow_embed)
    ordered = [(a, b) for a in args.spaces for b in args.spaces if a != b]

    def trans(a: str, b: str, restarts: int) -> Dict[str, Any]:
        from translate.translatable import translatability

        return translatability(get(a, TRAIN_A), get(b, TRAIN_B), seed=0, restarts=restarts, details=True)

    def oracle(a: str, b: str) -> Dict[str, Any]:
        from translate.paired import Procrustes

        m = Procrustes(normalize=True).fit(get(a, TRAIN_B), get(b, TRAIN_B))
        return {"top1": evaluate(m.transform(get(a, POOL)), get(b, POOL))["top1"]}

    def cka(a: str, b: str) -> Dict[str, Any]:
        import align

        return {"cka": float(align.cka(get(a, POOL), get(b, POOL)))}

    def isometric(a: str, b: str) -> Dict[str, Any]:
        from translate.isometric import Isometric

        t0 = time.perf_counter()
        m = Isometric(**{"progress": False, **json.loads(args.isometric), "seed": 0})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # recorded as "flagged"
            m.fit(get(a, TRAIN_A), get(b, TRAIN_B))
        r = evaluate(m.transform(get(a, POOL)), get(b, POOL))
        return {"top1": r["top1"], "foscttm": r["foscttm"], "seconds": time.perf_counter() - t0,
                "restarts": len(m.restarts_), "params": m.get_params(),
                "flagged": not m.confirmed_}  # exactly when fit warned that the map may be wrong

    jobs: List[Tuple[str, Callable[[], Dict[str, Any]]]] = []
    for part, fn in (("translatability", lambda a, b: trans(a, b, 0)), ("oracle", oracle),
                     ("cka", cka), ("isometric", isometric), ("evidence", lambda a, b: trans(a, b, 3))):
        if part in args.parts:
            jobs += [(f"{part} {a}->{b}", functools.partial(fn, a, b)) for a, b in ordered
                     if part != "cka" or a < b]
    return jobs


def table_rows(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One dict per ordered pair that has a translatability and an Isometric record."""
    out = []
    for key, iso in results.items():
        if not key.startswith("isometric "):
            continue
        pair = key.split(" ", 1)[1]
        a, b = pair.split("->")
        tr = results.get(f"translatability {pair}")
        if tr is None:
            continue
        ev = results.get(f"evidence {pair}")
        orc = results.get(f"oracle {pair}")
        ck = results.get(f"cka {min(a, b)}->{max(a, b)}")
        out.append({"pair": pair, "score": tr["score"], "t_seconds": tr["seconds"],
                    "evidence": ev["evidence"] if ev else None, "score_ev": ev["score"] if ev else None,
                    "ev_seconds": ev["seconds"] if ev else None, "iso": iso["top1"], "flagged": iso["flagged"],
                    "fit_seconds": iso["seconds"], "oracle": orc["top1"] if orc else None,
                    "cka": ck["cka"] if ck else None})
    return out


def summary(results: Dict[str, Any]) -> Dict[str, Any]:
    from universal_study import spearman

    rs = table_rows(results)
    iso = [r["iso"] for r in rs]
    out: Dict[str, Any] = {"n": len(rs), "spearman": {}}
    for name in ("score", "score_ev", "evidence", "cka", "oracle"):
        sel = [(r[name], r["iso"]) for r in rs if r[name] is not None]
        out["spearman"][name] = {"rho": spearman([s for s, _ in sel], [i for _, i in sel]), "n": len(sel)}
    if rs:
        frac = [r["t_seconds"] / r["fit_seconds"] for r in rs]
        out["time_fraction_max"] = max(frac)
        out["time_fraction_median"] = float(np.median(frac))
        ev = [r["ev_seconds"] / r["fit_seconds"] for r in rs if r["ev_seconds"] is not None]
        out["evidence_time_fraction_median"] = float(np.median(ev)) if ev else None
    out["found"] = sum(i >= 0.5 for i in iso)
    # does the score put every pair that was found above every pair that was not? (ROC AUC)
    found = [r["iso"] >= 0.5 for r in rs]
    out["auc_found"] = None
    if 0 < sum(found) < len(found):
        from sklearn.metrics import roc_auc_score

        out["auc_found"] = float(roc_auc_score(found, [r["score"] for r in rs]))
    return out


def _fit_params(results: Dict[str, Any]) -> str:
    """How the Isometric fits were parameterised, from their records."""
    from translate.isometric import Isometric

    default = Isometric().get_params()
    changed: Dict[str, List[str]] = {}
    for key, r in results.items():
        if key.startswith("isometric "):
            diff = {k: v for k, v in r["params"].items() if default.get(k) != v and k != "progress"}
            changed.setdefault(json.dumps(diff, sort_keys=True), []).append(key.split(" ", 1)[1])
    if list(changed) == ["{}"]:
        return "Every fit uses `Isometric`'s default parameters (seed 0)."
    return "The fits' parameters other than the defaults (seed 0): " + "; ".join(
        f"{p} ({len(pairs)} fits)" for p, pairs in sorted(changed.items())) + "."


def markdown(results: Dict[str, Any]) -> str:
    from translate.tables import markdown_table

    s = summary(results)
    rs = sorted(table_rows(results), key=lambda r: -r["score"])
    lines = [
        "# Translatability: will two unpaired sets translate?",
        "",
        "`translate.translatability(X, Y)` scores two *unpaired* sets before any fit (see",
        "`translate/translatable.py` for the definition). Here it is checked against what",
        "`Isometric` then achieves, on the ordered pairs of text spaces below: of minilm, mpnet, e5",
        "(final sentence embeddings), glove (mean GloVe 6B 50-d word vectors) and mpnet-L6 (the",
        "mean-pooled hidden states of mpnet's 6th of 12 layers), those measured: "
        + ", ".join(sorted({p for r in rs for p in r["pair"].split("->")})) + ". "
        + _fit_params(results),
        "",
        f"Regenerate: `{COMMAND}` (resumable: a rerun skips the records in the JSON; then",
        "`--md docs/translatability.md`). Every record of this page comes from that one run, at one commit.",
        "",
        "All spaces embed WordNet texts [11500, 21500): the source side's texts [11500, 16000), the target's",
        "[16000, 20500) (4500 per side, no pair), top-1 over the 1000 held-out texts [20500, 21500).",
        "*score*: the default call (the neighbour-similarity profile alone); *+ evidence*: `restarts=3`",
        "(the quick maps' agreement on top); oracle: `Procrustes(normalize=True)` on 4500 paired texts;",
        "CKA on the held-out pairs. Seconds are walls on the shared 2-core development machine.",
        "",
    ]
    for r in rs:
        r["flag"] = "yes" if r["flagged"] else "no"
    columns = ["pair", "score", "t_seconds", "score_ev", "ev_seconds", "iso", "flag", "fit_seconds", "oracle", "cka"]
    headers = ["a -> b", "score", "score s", "+ evidence", "evidence s", "Isometric top-1", "flagged", "fit s",
               "oracle top-1", "CKA (paired)"]
    lines += [markdown_table(rs, columns, headers), ""]
    sp = s["spearman"]
    lines += ["| predictor vs Isometric top-1 | Spearman | n |", "|---|---|---|"]
    for name, label in (("score", "translatability (default)"), ("score_ev", "translatability, restarts=3"),
                        ("evidence", "its evidence alone"), ("cka", "CKA (needs pairs)"),
                        ("oracle", "paired oracle top-1 (needs pairs)")):
        rho = sp[name]["rho"]
        lines.append(f"| {label} | {'—' if rho is None else f'{rho:.3f}'} | {sp[name]['n']} |")
    if s["n"]:
        auc = "—" if s["auc_found"] is None else f"{s['auc_found']:.3f}"
        lines += ["", f"Found (top-1 ≥ 0.5): {s['found']} of {s['n']} ordered pairs; the default score's ROC AUC "
                  f"for found against not found: {auc} (1 = every found pair scored above every other). "
                  "The default score took "
                  f"{100 * s['time_fraction_median']:.1f} % of its pair's fit time (median; at most "
                  f"{100 * s['time_fraction_max']:.1f} %)"
                  + (f"; with `restarts=3`, {100 * s['evidence_time_fraction_median']:.0f} % (median)."
                     if s["evidence_time_fraction_median"] is not None else ".")]
        e5 = [r for r in rs if "e5" in r["pair"].split("->") and "glove" not in r["pair"]]
        if e5:
            lines += ["", f"With 4500 texts per side the search finds e5 in {sum(r['iso'] >= 0.5 for r in e5)} of "
                      f"{len(e5)} pairs with another encoder (top-1 {min(r['iso'] for r in e5):.3f}-"
                      f"{max(r['iso'] for r in e5):.3f}; with 11.5k per side 0.889-0.935 over five seeds, [translation.md](translation.md)); "
                      "before the low-dimensional rounds it missed all four with minilm and mpnet (0.008-0.329)."]
        missed = [r for r in rs if r["oracle"] is not None and r["oracle"] >= 0.9 and r["iso"] < 0.5]
        if missed:
            lines += ["", "Pairs a paired orthogonal map translates (oracle top-1 ≥ 0.9) but the unpaired fit did not "
                      "find (these are failures of the search, not of the isometry): "
                      + ", ".join(f"{r['pair']} (oracle {r['oracle']:.3f}, unpaired {r['iso']:.3f}, "
                                  f"score {r['score']:.3f})" for r in missed) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from translate.tables import write_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default="out/translatability.json")
    ap.add_argument("--md", default=None, help="write this markdown page from --json and exit")
    ap.add_argument("--spaces", nargs="+", default=list(SPACES))
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    ap.add_argument("--isometric", default="{}", help="JSON of Isometric parameters for every fit")
    ap.add_argument("--allow-embed", action="store_true", help="embed texts missing from the cache")
    args = ap.parse_args(argv)
    path = Path(args.json)
    results: Dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if args.md:
        Path(args.md).write_text(markdown(results))
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    for key, fn in plan(args):
        if key in results:
            continue
        t0 = time.perf_counter()
        results[key] = fn()
        write_json(path, results)
        print(f"{key}: {time.perf_counter() - t0:.1f} s", flush=True)
    print(json.dumps(summary(results), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
