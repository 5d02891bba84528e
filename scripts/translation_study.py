#!/usr/bin/env python
"""Unpaired isometric translation, measured: the numbers behind issue 3's targets.

Parts (``--parts``, default all):

* ``synthetic``: Y = X' Q + noise for *other* rows X' of the same anisotropic
  Gaussian as X (per-dimension scales geometric from 1 to 0.05), Q orthogonal or
  semi-orthogonal, zero pairs; noise σ relative to the typical row norm.
  Held-out pairs (X_t, X_t Q + noise): top-1 over a pool of 1000.
* ``real``: all-MiniLM-L6-v2 (384-d) <-> all-mpnet-base-v2 (768-d), both
  directions, ``--n`` disjoint WordNet texts per side (A: texts [0, n), B: texts
  [n, 2n)), held-out pool texts [23000, 24000) embedded by both; one fit per seed.
* ``curve``: minilm -> mpnet with 1k, 2k, 3k, 5k, 11.5k texts per side (the
  first texts of each half), several seeds: top-1 and how often a seed fails
  (no restart passes the held-out criterion, or top-1 < 0.5).
* ``ablation``: what each step of :class:`translate.Isometric` buys on the real
  pair (11.5k per side), changing one parameter at a time.

Every fit is one ``Isometric(seed=s, **params).fit(A, B)`` on 2 CPU cores; its wall
time is reported. Results are appended to ``--json`` as they come, and a rerun
skips the fits already there (delete the file to measure again).

Usage::

    .venv/bin/python scripts/translation_study.py --json out/translation_study.json
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from translate.evaluate import evaluate  # noqa: E402
from translate.isometric import Isometric  # noqa: E402

ENC = {"minilm": "minilm", "mpnet": "mpnet"}
POOL_START, POOL = 23000, 1000
HALF = 11500

Data = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@functools.lru_cache(maxsize=None)
def _emb(encoder: str, start: int, n: int) -> np.ndarray:
    from align.data import embed_corpus

    return embed_corpus(encoder, corpus="wordnet", n=n, start=start, progress=False)


def real_data(source: str, target: str, n: int) -> Data:
    """Source texts [0, n), target texts [HALF, HALF + n): disjoint for n <= HALF."""
    A, B = _emb(source, 0, HALF)[:n], _emb(target, HALF, HALF)[:n]
    return A, B, _emb(source, POOL_START, POOL), _emb(target, POOL_START, POOL)


def synthetic_data(n: int, d_a: int, d_b: int, sigma: float, seed: int) -> Data:
    rng = np.random.default_rng(1000 + seed)
    scales = np.geomspace(1.0, 0.05, d_a)
    Z = rng.standard_normal((2 * n + POOL, d_a)) * scales
    Q, _ = np.linalg.qr(rng.standard_normal((max(d_a, d_b), max(d_a, d_b))))
    Q = Q[:d_a, :d_b]  # orthonormal rows (d_a <= d_b) or columns (d_a > d_b)
    noise = sigma * np.linalg.norm(Z @ Q, axis=1).mean() / np.sqrt(d_b)
    Y = Z @ Q + noise * rng.standard_normal((len(Z), d_b))
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return f32(Z[:n]), f32(Y[n : 2 * n]), f32(Z[2 * n :]), f32(Y[2 * n :])


def fit_one(data: Data, seed: int, params: Dict[str, Any]) -> Dict[str, Any]:
    A, B, At, Bt = data
    t0 = time.perf_counter()
    m = Isometric(seed=seed, progress=False, **params).fit(A, B)
    wall = time.perf_counter() - t0
    r = evaluate(m.transform(At), Bt)
    chosen = m.restarts_[m.chosen_restart_]
    return {
        "seed": seed, "wall_s": round(wall, 1), "top1": r["top1"], "top5": r["top5"], "mean_rank": r["mean_rank"],
        "mean_cos": r["mean_cos"], "foscttm": r["foscttm"], "pool": r["pool"],
        "restarts": len(m.restarts_), "success": bool(chosen["success"]), "gain": round(chosen["gain"], 3),
        "iters": sum(x["iters"] for x in m.restarts_),
    }


def plan(args) -> List[Tuple[str, Dict[str, Any], Callable[[], Data], int, Dict[str, Any]]]:
    """(part, key fields, data loader, seed, Isometric params) for every fit."""
    seeds = list(range(args.seeds))
    jobs = []
    if "synthetic" in args.parts:
        for d_a, d_b in ((768, 768), (384, 768), (768, 384)):
            for sigma in (0.0, 0.05, 0.1):
                key = {"d_a": d_a, "d_b": d_b, "sigma": sigma, "n": 2000}
                jobs.append(("synthetic", key, functools.partial(synthetic_data, 2000, d_a, d_b, sigma, 0), 0, {}))
    if "real" in args.parts:
        for src, tgt in (("minilm", "mpnet"), ("mpnet", "minilm")):
            for s in seeds:
                key = {"source": src, "target": tgt, "n": args.n}
                jobs.append(("real", key, functools.partial(real_data, src, tgt, args.n), s, {}))
    if "curve" in args.parts:
        for n in (1000, 2000, 3000, 5000, 11500):
            for s in seeds[: args.curve_seeds]:
                key = {"source": "minilm", "target": "mpnet", "n": n}
                jobs.append(("curve", key, functools.partial(real_data, "minilm", "mpnet", n), s, {}))
    if "ablation" in args.parts:
        variants = {
            "default": {},
            "random init": {"init": "random"},
            "no polishing": {"polish_iter": 0},
            "one restart": {"n_init": 1},
            "blocks of 100 rows": {"batch_size": 100},
            "blocks of 2000 rows": {"batch_size": 2000},
        }
        for name, params in variants.items():
            key = {"variant": name, "source": "minilm", "target": "mpnet", "n": HALF}
            jobs.append(("ablation", key, functools.partial(real_data, "minilm", "mpnet", HALF), 0, params))
    return jobs


def summarise(results: List[Dict[str, Any]]) -> str:
    out: List[str] = []
    for part in ("synthetic", "real", "curve", "ablation"):
        rows = [r for r in results if r["part"] == part]
        if not rows:
            continue
        groups: Dict[str, List[Dict[str, Any]]] = {}
        for r in rows:
            groups.setdefault(json.dumps(r["key"]), []).append(r)
        out += [f"\n### {part}\n", "| setting | seeds | top-1 (each seed) | fails | mean cos | wall s (median) |",
                "|---|---|---|---|---|---|"]
        for key, rs in groups.items():
            k = json.loads(key)
            label = ", ".join(f"{a}={b}" for a, b in k.items())
            fails = sum((not r["success"]) or r["top1"] < 0.5 for r in rs)
            tops = " ".join(f"{r['top1']:.3f}" for r in rs)
            out.append(
                f"| {label} | {len(rs)} | {tops} | {fails} | "
                f"{np.mean([r['mean_cos'] for r in rs]):.3f} | {np.median([r['wall_s'] for r in rs]):.0f} |"
            )
    return "\n".join(out)


def plot_curve(results: List[Dict[str, Any]], path: Path) -> None:
    rows = [r for r in results if r["part"] == "curve"]
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted({r["key"]["n"] for r in rows})
    fig, ax = plt.subplots(figsize=(6, 4))
    for n in ns:
        t = [r["top1"] for r in rows if r["key"]["n"] == n]
        ax.scatter([n] * len(t), t, color="C0", alpha=0.6)
    ax.plot(ns, [np.median([r["top1"] for r in rows if r["key"]["n"] == n]) for n in ns], color="C0", label="median")
    ax.set_xscale("log")
    ax.set_xlabel("texts per side (no pairs)")
    ax.set_ylabel("held-out top-1 (pool 1000)")
    ax.set_title("Isometric, minilm -> mpnet, WordNet")
    ax.set_ylim(0, 1.02)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", nargs="+", default=["synthetic", "real", "curve", "ablation"],
                    choices=["synthetic", "real", "curve", "ablation"])
    ap.add_argument("--n", type=int, default=HALF, help="texts per side for the 'real' part")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--curve-seeds", type=int, default=3)
    ap.add_argument("--json", default="out/translation_study.json")
    args = ap.parse_args(argv)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    results: List[Dict[str, Any]] = json.loads(path.read_text()) if path.exists() else []
    done = {(r["part"], json.dumps(r["key"]), r["seed"], json.dumps(r["params"])) for r in results}
    for part, key, load, seed, params in plan(args):
        ident = (part, json.dumps(key), seed, json.dumps(params))
        if ident in done:
            continue
        r = {"part": part, "key": key, "params": params, **fit_one(load(), seed, params)}
        results.append(r)
        path.write_text(json.dumps(results, indent=1))
        print(f"{part} {key} seed {seed}: top1 {r['top1']:.3f}, {r['wall_s']} s, restarts {r['restarts']}, "
              f"gain {r['gain']}", flush=True)
    print(summarise(results))
    plot_curve(results, path.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
