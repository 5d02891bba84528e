"""The end-to-end demo behind ``reptrans demo`` (``make demo``).

Two real encoders that ship their weights in packages (all-MiniLM-L6-v2, 384-d, and
all-mpnet-base-v2, 768-d) embed *disjoint* halves of the WordNet texts, offline and
cached:

    source encoder: texts [0, n)            -- space A, unpaired
    target encoder: texts [n, 2n)           -- space B, unpaired
    both encoders:  texts [2n, 2n + n_test) -- held-out pairs, the candidate pool

The demo

1. fits :class:`translate.Isometric` on A and B with **no pairs** (different texts
   on each side) and translates the held-out source rows into B;
2. evaluates it over the whole held-out pool beside the identity baseline
   (zero-padded to B's width) and the paired Procrustes oracle (the ceiling: fitted
   on the same n target texts, which the source encoder also embeds for it, between the
   spaces the isometric translator maps -- VecMap's preprocessing, ``normalize=True``:
   centred rows alone understate it, minilm -> e5 0.907 against 0.987, docs/ladder.md);
3. measures how aligned the two spaces are with every fast metric of ``align``,
   each beside its chance level (rows shuffled), on ``n_metric`` of those pairs.

It prints two tables and writes ``results.json``, ``demo.png`` and the fitted
translators (``isometric/``, ``procrustes/``) to ``out_dir``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from align.data import embed_corpus
from align.metrics import chance_level, score
from align.validation import check_positive_int

from .evaluate import evaluate, unpaired_diagnostic
from .isometric import Isometric
from .paired import Procrustes
from .tables import markdown_table

#: texts per side by default: minilm -> mpnet translates unflagged at top-1 0.982-0.987 there (the
#: study's two seeds and the demo, docs/translation.md), and a first run embeds 11k + 6k texts, not 24k + 12.5k
DEMO_N_PER_SIDE = 5000

#: metrics run by the demo (the quadratic-memory ones, RSA and RBF CKA, are left out)
DEMO_METRICS = ("mutual_knn", "cknna", "cka", "cka_debiased", "linear", "procrustes", "permutation", "soft_match")


def _identity(X: np.ndarray, d_out: int) -> np.ndarray:
    out = np.zeros((len(X), d_out), dtype=np.float32)
    w = min(X.shape[1], d_out)
    out[:, :w] = X[:, :w]
    return out


def run_demo(
    n_per_side: int = DEMO_N_PER_SIDE,
    n_test: int = 1000,
    n_metric: int = 2000,
    seed: int = 0,
    out_dir: Union[str, Path] = "out/demo",
    source: str = "minilm",
    target: str = "mpnet",
    cache_dir: Optional[str] = None,
    progress: bool = True,
) -> Dict[str, Any]:
    """Run the demo (see the module docstring); returns what ``results.json`` holds."""
    n = check_positive_int(n_per_side, "n_per_side", 20)
    n_test = check_positive_int(n_test, "n_test", 2)
    n_metric = min(check_positive_int(n_metric, "n_metric", 20), n)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def emb(encoder: str, start: int, count: int) -> np.ndarray:
        return embed_corpus(encoder, corpus="wordnet", n=count, start=start, cache_dir=cache_dir, progress=progress)

    t0 = time.perf_counter()
    A = emb(source, 0, n)
    B = emb(target, n, n)
    A_test, B_test = emb(source, 2 * n, n_test), emb(target, 2 * n, n_test)
    A_of_B = emb(source, n, n)  # the oracle's pairs: B's texts through the source encoder
    t_embed = time.perf_counter() - t0

    rows: List[Dict[str, Any]] = []

    def add(method: str, pairs: int, fit_s: float, Y_hat: np.ndarray) -> None:
        diag = unpaired_diagnostic(Y_hat, B)["score"]
        rows.append({"method": method, "pairs used": pairs, "fit s": round(fit_s, 1), **evaluate(Y_hat, B_test),
                     "unpaired diag": diag})

    add("identity (zero-pad)", 0, 0.0, _identity(A_test, B.shape[1]))
    t = time.perf_counter()
    iso = Isometric(seed=seed, progress=progress).fit(A, B)
    add("isometric (unpaired)", 0, time.perf_counter() - t, iso.transform(A_test))
    iso.save(out / "isometric")
    t = time.perf_counter()
    oracle = Procrustes(normalize=True).fit(A_of_B, B)
    add("procrustes oracle", n, time.perf_counter() - t, oracle.transform(A_test))
    oracle.save(out / "procrustes")

    metric_rows: List[Dict[str, Any]] = []
    for name in DEMO_METRICS:
        kw = {"k": 10} if name in ("mutual_knn", "cknna") else {}
        t = time.perf_counter()
        value = score(A_of_B[:n_metric], B[:n_metric], metric=name, **kw)
        chance = chance_level(A_of_B[:n_metric], B[:n_metric], name, n_shuffles=1, seed=seed, **kw)
        metric_rows.append({"metric": name, "value": value, "chance": chance, "s": round(time.perf_counter() - t, 1)})

    print(f"\n{source} ({A.shape[1]}-d) -> {target} ({B.shape[1]}-d): {n} WordNet texts per side, no text in common; "
          f"held-out pairs = texts [{2 * n}, {2 * n + n_test}) (candidate pool {n_test}); embeddings {t_embed:.0f} s\n")
    cols = ["method", "pairs used", "fit s", "top1", "top5", "mean_rank", "mean_cos", "foscttm", "mutual_knn",
            "unpaired diag", "pool"]
    print(markdown_table(rows, cols))
    print(f"\nalignment of the two spaces on {n_metric} paired texts (value vs rows shuffled)\n")
    print(markdown_table(metric_rows))
    result = {"source": source, "target": target, "n_per_side": n, "n_test": n_test, "n_metric": n_metric,
              "seed": seed, "translation": rows, "metrics": metric_rows,
              "isometric": {"restarts": iso.restarts_, "chosen_restart": iso.chosen_restart_,
                            "null_criterion": iso.null_criterion_}}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    _plot(rows, metric_rows, iso.history_, out / "demo.png", f"{source} -> {target}, {n} texts per side, no pairs")
    print(f"\nwrote {out / 'results.json'}, {out / 'demo.png'} and the translators in {out}/isometric, {out}/procrustes")
    return result


def _plot(rows: List[Dict[str, Any]], metric_rows: List[Dict[str, Any]], history: List[Dict[str, Any]],
          path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    x = np.arange(len(rows))
    for off, key in ((-0.2, "top1"), (0.2, "mean_cos")):
        axes[0].bar(x + off, [r[key] for r in rows], width=0.4, label=key)
    axes[0].set_xticks(x, [r["method"] for r in rows], rotation=12)
    axes[0].set_ylim(0, 1.05)
    axes[0].set_title(f"{title}\nheld-out translation, pool {rows[0]['pool']}")
    axes[0].legend()

    explore = [h for h in history if "stage" not in h]  # polishing and transport rounds carry a stage
    for r in sorted({h["restart"] for h in explore}):
        hs = [h for h in explore if h["restart"] == r]
        axes[1].plot([h["iter"] for h in hs], [h["gain"] for h in hs], label=f"restart {r}")
    axes[1].set_xlabel("iteration (random-block matching + Procrustes)")
    axes[1].set_ylabel("held-out CSLS gain over a random map")
    axes[1].set_title("isometric search, no pairs")
    axes[1].legend()

    x = np.arange(len(metric_rows))
    axes[2].bar(x - 0.2, [r["value"] for r in metric_rows], width=0.4, label="score")
    axes[2].bar(x + 0.2, [r["chance"] for r in metric_rows], width=0.4, label="chance (rows shuffled)")
    axes[2].set_xticks(x, [r["metric"] for r in metric_rows], rotation=30, ha="right")
    axes[2].set_ylim(min(0.0, min(r["chance"] for r in metric_rows)), 1.0)
    axes[2].set_title("alignment metrics on paired texts")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
