"""The end-to-end demo behind ``reptrans demo``.

Two real encoders embed *disjoint* halves of the WordNet corpus (no text is seen
by both, so there are no pairs); the isometric translator learns A -> B from
those unpaired sets alone. It is then evaluated on held-out texts embedded by
both encoders, beside the paired Procrustes oracle (the ceiling, which does see
pairs) and the identity baseline (zero-padded or truncated to B's width).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from align.data import embed_corpus
from align.validation import check_positive_int

from .evaluate import evaluate
from .isometric import Isometric
from .paired import Procrustes


def _identity(X: np.ndarray, d_out: int) -> np.ndarray:
    out = np.zeros((len(X), d_out), dtype=np.float32)
    w = min(X.shape[1], d_out)
    out[:, :w] = X[:, :w]
    return out


def run_demo(
    n_train: int = 11500,
    n_test: int = 1000,
    seed: int = 0,
    out_dir: Union[str, Path] = "out/demo",
    source: str = "minilm",
    target: str = "mpnet",
    cache_dir: Optional[str] = None,
    progress: bool = True,
) -> List[Dict[str, Any]]:
    """Run the demo, print a table, write ``results.json`` and ``demo.png``.

    Texts [0, n_train) are embedded by ``source`` only, [n_train, 2·n_train) by
    ``target`` only, and [2·n_train, 2·n_train + n_test) by both (held out).
    The oracle is fitted on the held-out-free paired texts [0, n_train), which
    costs one extra embedding pass and is the only place pairs are used.
    """
    from .cli import markdown_table

    n_train = check_positive_int(n_train, "n_train", 10)
    n_test = check_positive_int(n_test, "n_test", 2)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def emb(encoder: str, start: int, n: int) -> np.ndarray:
        return embed_corpus(encoder, corpus="wordnet", n=n, start=start, cache_dir=cache_dir, progress=progress)

    t0 = time.perf_counter()
    A_train = emb(source, 0, n_train)
    B_train = emb(target, n_train, n_train)
    A_test = emb(source, 2 * n_train, n_test)
    B_test = emb(target, 2 * n_train, n_test)
    B_paired = emb(target, 0, n_train)  # for the oracle only
    t_embed = time.perf_counter() - t0

    rows: List[Dict[str, Any]] = []

    def add(name: str, pairs: str, Y_hat: np.ndarray, seconds: float) -> None:
        res = evaluate(Y_hat, B_test)
        rows.append({"method": name, "pairs used": pairs, **res, "fit s": round(seconds, 1)})

    add("identity (zero-pad)", "0", _identity(A_test, B_test.shape[1]), 0.0)
    t0 = time.perf_counter()
    iso = Isometric(seed=seed).fit(A_train, B_train)
    t_iso = time.perf_counter() - t0
    add("isometric (unpaired)", "0", iso.transform(A_test), t_iso)
    iso.save(out / "isometric")
    t0 = time.perf_counter()
    oracle = Procrustes().fit(A_train, B_paired)
    add("procrustes oracle", str(n_train), oracle.transform(A_test), time.perf_counter() - t0)

    cols = ["method", "pairs used", "top1", "top5", "mean_rank", "mean_cos", "foscttm", "mutual_knn", "pool", "fit s"]
    print(
        f"\n{source} -> {target}: {n_train} unpaired WordNet texts per side, "
        f"evaluated on {n_test} held-out pairs (candidate pool = {n_test}); embeddings {t_embed:.0f}s\n"
    )
    print(markdown_table(rows, cols))
    (out / "results.json").write_text(
        json.dumps({"source": source, "target": target, "n_train": n_train, "n_test": n_test, "seed": seed, "rows": rows}, indent=2)
    )
    _plot(rows, iso, out / "demo.png", f"{source} → {target}, pool {n_test}")
    print(f"\nwrote {out / 'results.json'}, {out / 'demo.png'} and the fitted translator in {out / 'isometric'}/")
    return rows


def _plot(rows: List[Dict[str, Any]], iso: Isometric, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = [r["method"] for r in rows]
    x = np.arange(len(rows))
    for off, key in ((-0.2, "top1"), (0.2, "mean_cos")):
        axes[0].bar(x + off, [r[key] for r in rows], width=0.4, label=key)
    axes[0].set_xticks(x, names, rotation=10)
    axes[0].set_ylim(0, 1.05)
    axes[0].set_title(title)
    axes[0].legend()
    hist = getattr(iso, "history_", [])
    keys = [k for k in (hist[0] if hist else {}) if k not in ("iter", "step", "stage") and isinstance(hist[0][k], (int, float))]
    for key in keys[:3]:
        axes[1].plot([h.get(key, np.nan) for h in hist], label=key)
    axes[1].set_xlabel("refinement iteration")
    axes[1].set_title("isometric training objective (unsupervised)")
    if keys:
        axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
