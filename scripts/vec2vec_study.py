#!/usr/bin/env python
"""What does the vec2vec trainer reach on real embeddings within a CPU budget?

Setting (issue 3): all-MiniLM-L6-v2 (A, 384-d) -> all-mpnet-base-v2 (B, 768-d)
on WordNet glosses, *no pairs*: A embeds texts [0, n), B embeds the disjoint
texts [n, 2n); the held-out pool is texts [p0, p0 + pool) embedded by both.
Translators are trained on the unpaired sets and scored with
:func:`translate.evaluate` over the whole pool (top-1, mean cosine, ...).

Rows of the table:

* ``procrustes (paired oracle)`` / ``linear (paired oracle)``: fitted on the
  *paired* texts [0, n) -- the ceilings (needs B's embeddings of [0, n) too).
* ``vec2vec scratch``: :class:`translate.Vec2Vec` from a random initialisation,
  trained for a fixed CPU budget (``--budget-scratch`` CPU seconds, all
  threads counted, evaluation excluded); its curve is printed every
  ``--eval-every`` steps.
* ``vec2vec init=isometric`` (default; or ``init=procrustes-oracle``) and
  ``cyclegan``: initialised from the unpaired :class:`translate.Isometric` map
  fitted on A and B (or from the paired Procrustes map), then adversarial fine-tuning for
  ``--budget-init`` CPU seconds (or ``--steps-init`` steps).

Usage::

    .venv/bin/python scripts/vec2vec_study.py --budget-scratch 300 --budget-init 300 \
        --json /work/notes/vec2vec_study.json

It prints a markdown table and a JSON document (also written to ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from align.train import StopTraining  # noqa: E402
from translate.denoise import apply_filter, input_filters, linear_fit, unit_rows  # noqa: E402
from translate.evaluate import evaluate  # noqa: E402
from translate.vec2vec import CycleGAN, Vec2Vec  # noqa: E402


def load_embeddings(args) -> Dict[str, np.ndarray]:
    from align.data import embed_corpus

    n, p0, pool = args.n_train, args.pool_start, args.pool
    out = dict(
        A=embed_corpus(args.enc_a, n=n, start=0, progress=args.progress),
        B=embed_corpus(args.enc_b, n=n, start=n, progress=args.progress),
        At=embed_corpus(args.enc_a, n=pool, start=p0, progress=args.progress),
        Bt=embed_corpus(args.enc_b, n=pool, start=p0, progress=args.progress),
    )
    if args.oracle:
        out["B_paired"] = embed_corpus(args.enc_b, n=n, start=0, progress=args.progress)
    return out


def metrics(Z: np.ndarray, Bt: np.ndarray) -> Dict[str, float]:
    r = evaluate(Z, Bt)
    return {k: float(r[k]) for k in ("top1", "top5", "mean_rank", "mean_cos", "foscttm") if k in r} | {"pool": int(len(Bt))}


def with_and_without_filter(est, At, Bt) -> Dict[str, Any]:
    """Metrics of a fitted Vec2Vec/CycleGAN, with its denoising input filter
    (``est.transform``) and without it (identity filter)."""
    res = metrics(est.transform(At), Bt)
    saved = est.denoise_a_
    est.denoise_a_ = np.eye(saved.shape[0], dtype=np.float32)
    try:
        raw = metrics(est.transform(At), Bt)
    finally:
        est.denoise_a_ = saved
    res["no_filter"] = {k: raw[k] for k in ("top1", "mean_cos")}
    res["noise"] = est.noise_
    return res


def train_with_budget(est, A, B, At, Bt, budget_cpu_s: float, eval_every: int, label: str) -> Dict[str, Any]:
    """Fit ``est`` until ``est.steps`` or the CPU budget is spent (a training
    callback raises ``StopTraining``: the estimator finishes from the state
    reached, filters included); evaluate the held-out pool every ``eval_every``
    steps (evaluation time is not counted; during training ``est.transform`` is
    the network alone, without the denoising filter, estimated at the end)."""
    state: Dict[str, Any] = dict(eval_cpu=0.0, curve=[], stopped=False)
    cpu0, wall0 = time.process_time(), time.time()

    def spent() -> float:
        return time.process_time() - cpu0 - state["eval_cpu"]

    def on_step(record: Dict[str, Any]) -> None:
        if "event" in record:
            return
        step = record["step"]
        if step % eval_every == 0:
            e0 = time.process_time()
            m = metrics(est.transform(At), Bt)
            state["eval_cpu"] += time.process_time() - e0
            row = dict(step=step, cpu_s=round(spent(), 1), **{k: round(v, 4) for k, v in m.items()})
            row.update({k: round(record[k], 4) for k in ("loss", "disc", "adv", "cycle", "vsp", "anchor") if k in record})
            state["curve"].append(row)
            print(f"[{label}] " + " ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        if spent() > budget_cpu_s:
            state["stopped"] = True
            raise StopTraining

    est.fit(A, B, callbacks=[on_step])
    stopped = state["stopped"]
    train_cpu = spent()
    res = with_and_without_filter(est, At, Bt)
    res.update(
        steps=int(est.steps_done_),
        train_cpu_s=round(train_cpu, 1),
        wall_s=round(time.time() - wall0, 1),
        stopped_by_budget=stopped,
        curve=state["curve"],
    )
    return res


def filtered_translator_metrics(init, A, B, At, Bt) -> Dict[str, Any]:
    """The same denoising input filter (:mod:`translate.denoise`) wrapped around any fitted translator."""
    ma, mb = A.mean(0), B.mean(0)
    Xn, Yn = unit_rows(A, ma), unit_rows(B, mb)
    T = init.transform(A)
    W, _ = linear_fit(Xn, unit_rows(T, T.mean(0)))
    noise, filter_a, _ = input_filters(Xn, Yn, W)
    if noise is None:
        return {"noise": None}
    sx = float(np.linalg.norm(A - ma, axis=1).mean())
    Xf = apply_filter(unit_rows(At, ma), filter_a) * sx + ma
    return metrics(init.transform(Xf), Bt) | {"noise": noise}


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--enc-a", default="minilm")
    ap.add_argument("--enc-b", default="mpnet")
    ap.add_argument("--n-train", type=int, default=11500, help="unpaired texts per side")
    ap.add_argument("--pool-start", type=int, default=23000)
    ap.add_argument("--pool", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--oracle", action="store_true", help="also fit the paired oracles (needs B on texts [0, n))")
    ap.add_argument("--init-from", default="isometric", choices=["isometric", "procrustes-oracle"],
                    help="translator to initialise from: isometric (unpaired, translate.Isometric on A and B) "
                    "or procrustes-oracle (uses pairs)")
    ap.add_argument("--skip", default="", help="comma list of rows to skip: scratch,init,cyclegan")
    ap.add_argument("--budget-scratch", type=float, default=300.0, help="CPU seconds for vec2vec from scratch")
    ap.add_argument("--budget-init", type=float, default=300.0, help="CPU seconds for the isometric-initialised runs")
    ap.add_argument("--steps-scratch", type=int, default=100000)
    ap.add_argument("--steps-init", type=int, default=100000)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr-scratch", type=float, default=2e-4)
    ap.add_argument("--lr-init", type=float, default=5e-5)
    ap.add_argument("--anchor", type=float, default=None, help="anchor weight for the initialised runs")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--json", default=None, help="write the JSON result here")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    t0 = time.time()
    D = load_embeddings(args)
    A, B, At, Bt = D["A"], D["B"], D["At"], D["Bt"]
    print(f"data: A {A.shape} B {B.shape} pool {At.shape}/{Bt.shape} ({time.time() - t0:.0f} s)", flush=True)
    rows: Dict[str, Dict[str, Any]] = {}

    if args.oracle or args.init_from == "procrustes-oracle":
        from translate.paired import Linear, Procrustes

        Bp = D.get("B_paired")
        if Bp is None:
            from align.data import embed_corpus

            Bp = embed_corpus(args.enc_b, n=args.n_train, start=0, progress=args.progress)
        for name, cls in (("procrustes (paired oracle)", Procrustes), ("linear (paired oracle)", Linear)):
            c0 = time.process_time()
            t = cls().fit(A, Bp)
            rows[name] = metrics(t.transform(At), Bt) | {"train_cpu_s": round(time.process_time() - c0, 1)}
            if cls is Procrustes:
                procrustes = t
            print(name, rows[name], flush=True)

    if args.init_from == "isometric":
        from translate.isometric import Isometric

        c0 = time.process_time()
        init, init_name = Isometric(seed=args.seed, progress=args.progress).fit(A, B), "isometric"
        rows["isometric (unpaired)"] = metrics(init.transform(At), Bt) | {"train_cpu_s": round(time.process_time() - c0, 1)}
        print("isometric (unpaired)", rows["isometric (unpaired)"], flush=True)
    else:
        init, init_name = procrustes, "procrustes-oracle"

    rows[f"{init_name} + denoise filter"] = filtered_translator_metrics(init, A, B, At, Bt)
    print(f"{init_name} + denoise filter", rows[f"{init_name} + denoise filter"], flush=True)
    common = dict(hidden=args.hidden, depth=args.depth, batch_size=args.batch_size, seed=args.seed, progress=args.progress)
    weights = None if args.anchor is None else {"anchor": args.anchor}
    c0 = time.process_time()
    est = Vec2Vec(steps=0, init=init, **common).fit(A, B)
    rows[f"vec2vec init={init_name}, 0 steps"] = with_and_without_filter(est, At, Bt) | {
        "steps": 0,
        "train_cpu_s": round(time.process_time() - c0, 1),
    }
    print("0 steps", rows[f"vec2vec init={init_name}, 0 steps"], flush=True)
    for key, cls in (("init", Vec2Vec), ("cyclegan", CycleGAN)):
        if key in skip:
            continue
        est = cls(steps=args.steps_init, lr=args.lr_init, init=init, weights=weights, **common)
        name = f"{cls.__name__.lower()} init={init_name}, fine-tuned"
        rows[name] = train_with_budget(est, A, B, At, Bt, args.budget_init, args.eval_every, name)
    if "scratch" not in skip:
        est = Vec2Vec(steps=args.steps_scratch, lr=args.lr_scratch, **common)
        rows["vec2vec scratch"] = train_with_budget(est, A, B, At, Bt, args.budget_scratch, args.eval_every, "scratch")

    result = dict(
        setting=dict(
            enc_a=args.enc_a,
            enc_b=args.enc_b,
            texts_per_side=args.n_train,
            pool=args.pool,
            pool_texts=[args.pool_start, args.pool_start + args.pool],
            hidden=args.hidden,
            depth=args.depth,
            batch_size=args.batch_size,
            lr_scratch=args.lr_scratch,
            lr_init=args.lr_init,
            threads=torch.get_num_threads(),
            machine=f"{platform.machine()} {os.cpu_count()} CPUs",
            command="python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
        ),
        rows=rows,
    )
    print()
    print(f"minilm -> mpnet, {args.n_train} unpaired texts per side, pool {args.pool} held-out pairs")
    print()
    print("| method | top-1 | top-5 | mean cos | FOSCTTM | without filter: top-1 / mean cos | steps | train CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        if "top1" not in r:
            print(f"| {name} | (not identifiable) |||||||")
            continue
        nf = r.get("no_filter")
        nf = f"{nf['top1']:.3f} / {nf['mean_cos']:.3f}" if nf else ""
        print(
            f"| {name} | {r['top1']:.3f} | {r.get('top5', float('nan')):.3f} | {r['mean_cos']:.3f} | "
            f"{r.get('foscttm', float('nan')):.4f} | {nf} | {r.get('steps', '')} | {r.get('train_cpu_s', '')} |"
        )
    print()
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
