"""The end-to-end demo behind ``reptrans demo`` (``make demo``).

Two real encoders that ship their weights in packages (all-MiniLM-L6-v2, 384-d, and
all-mpnet-base-v2, 768-d) embed the same WordNet texts, offline and cached. The demo

1. measures how aligned the two spaces are with every fast metric of ``align``,
   each beside its chance level (rows shuffled);
2. translates minilm -> mpnet on held-out texts with the paired Procrustes oracle
   (the isometric ceiling, which sees pairs) beside the identity baseline
   (zero-padded to mpnet's width), evaluated over the whole held-out pool.

The unpaired isometric translator is not part of this demo yet (see the README's
status section); this is issue 2's "real metric run on real data".
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

from .evaluate import evaluate
from .paired import Procrustes

#: metrics run by the demo (the quadratic-memory ones, RSA and RBF CKA, are left out)
DEMO_METRICS = ("mutual_knn", "cknna", "cka", "cka_debiased", "linear", "procrustes", "permutation", "soft_match")


def _identity(X: np.ndarray, d_out: int) -> np.ndarray:
    out = np.zeros((len(X), d_out), dtype=np.float32)
    w = min(X.shape[1], d_out)
    out[:, :w] = X[:, :w]
    return out


def run_demo(
    n_pairs: int = 2000,
    n_test: int = 1000,
    seed: int = 0,
    out_dir: Union[str, Path] = "out/demo",
    source: str = "minilm",
    target: str = "mpnet",
    cache_dir: Optional[str] = None,
    progress: bool = True,
) -> Dict[str, Any]:
    """Run the demo, print two tables, write ``results.json`` and ``demo.png``.

    Texts [0, n_pairs) are embedded by both encoders (metrics and the oracle's
    training pairs); texts [n_pairs, n_pairs + n_test) are held out (the pool).
    """
    from .cli import markdown_table

    n_pairs = check_positive_int(n_pairs, "n_pairs", 20)
    n_test = check_positive_int(n_test, "n_test", 2)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    A = embed_corpus(source, corpus="wordnet", n=n_pairs + n_test, cache_dir=cache_dir, progress=progress)
    B = embed_corpus(target, corpus="wordnet", n=n_pairs + n_test, cache_dir=cache_dir, progress=progress)
    t_embed = time.perf_counter() - t0
    A_fit, B_fit, A_test, B_test = A[:n_pairs], B[:n_pairs], A[n_pairs:], B[n_pairs:]

    metric_rows: List[Dict[str, Any]] = []
    for name in DEMO_METRICS:
        kw = {"k": 10} if name in ("mutual_knn", "cknna") else {}
        t = time.perf_counter()
        value = score(A_fit, B_fit, metric=name, **kw)
        chance = chance_level(A_fit, B_fit, name, n_shuffles=1, seed=seed, **kw)
        metric_rows.append({"metric": name, "value": value, "chance": chance, "s": round(time.perf_counter() - t, 1)})

    trans_rows: List[Dict[str, Any]] = []
    trans_rows.append({"method": "identity (zero-pad)", "pairs used": 0, **evaluate(_identity(A_test, B.shape[1]), B_test)})
    oracle = Procrustes().fit(A_fit, B_fit)
    trans_rows.append({"method": "procrustes oracle", "pairs used": n_pairs, **evaluate(oracle.transform(A_test), B_test)})
    oracle.save(out / "procrustes")

    print(f"\n{source} ({A.shape[1]}-d) vs {target} ({B.shape[1]}-d) on WordNet texts [0, {n_pairs}); embeddings {t_embed:.0f}s\n")
    print(markdown_table(metric_rows))
    print(f"\ntranslation {source} -> {target}, held-out texts [{n_pairs}, {n_pairs + n_test}) (candidate pool = {n_test})\n")
    cols = ["method", "pairs used", "top1", "top5", "mean_rank", "mean_cos", "foscttm", "mutual_knn", "pool"]
    print(markdown_table(trans_rows, cols))
    result = {"source": source, "target": target, "n_pairs": n_pairs, "n_test": n_test, "seed": seed,
              "metrics": metric_rows, "translation": trans_rows}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    _plot(metric_rows, trans_rows, out / "demo.png", f"{source} vs {target}, {n_pairs} WordNet texts")
    print(f"\nwrote {out / 'results.json'}, {out / 'demo.png'} and the oracle in {out / 'procrustes'}/")
    return result


def _plot(metric_rows: List[Dict[str, Any]], trans_rows: List[Dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    x = np.arange(len(metric_rows))
    axes[0].bar(x - 0.2, [r["value"] for r in metric_rows], width=0.4, label="score")
    axes[0].bar(x + 0.2, [r["chance"] for r in metric_rows], width=0.4, label="chance (rows shuffled)")
    axes[0].set_xticks(x, [r["metric"] for r in metric_rows], rotation=30, ha="right")
    axes[0].set_ylim(min(0.0, min(r["chance"] for r in metric_rows)), 1.0)
    axes[0].set_title(title)
    axes[0].legend()
    x = np.arange(len(trans_rows))
    for off, key in ((-0.2, "top1"), (0.2, "mean_cos")):
        axes[1].bar(x + off, [r[key] for r in trans_rows], width=0.4, label=key)
    axes[1].set_xticks(x, [r["method"] for r in trans_rows])
    axes[1].set_ylim(0, 1.05)
    axes[1].set_title(f"translation, pool {trans_rows[0]['pool']}")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
