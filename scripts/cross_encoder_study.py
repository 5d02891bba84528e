"""minilm vs mpnet on WordNet texts [0, N): every metric beside its chance level (issue 7, part 5).

Usage: python scripts/cross_encoder_study.py [N=6144]   (writes out/cross_encoder/study_N.json)
"""
import json, sys, time
import numpy as np
from align.data import embed_corpus
from align.metrics import METRICS, chance_level, score

N = int(sys.argv[1]) if len(sys.argv) > 1 else 6144
X = embed_corpus("minilm", corpus="wordnet", n=N, progress=False)
Y = embed_corpus("mpnet", corpus="wordnet", n=N, progress=False)
print(f"minilm {X.shape} vs mpnet {Y.shape}, WordNet texts [0, {N})", flush=True)
kw = {"mutual_knn": {"k": 10}, "cycle_knn": {"k": 10}, "lcs_knn": {"k": 10}, "edit_distance_knn": {"k": 10},
      "cknna": {"k": 10}, "linear": {"folds": 5}, "procrustes": {"folds": 5}, "permutation": {"folds": 5}, "soft_match": {"folds": 5}}
rows = {}
for m in METRICS:
    t = time.time()
    try:
        s = score(X, Y, m, **kw.get(m, {}))
        c = chance_level(X, Y, m, n_shuffles=1 if m in ("soft_match", "rsa", "cka_rbf", "pwcca") else 3, seed=0, **kw.get(m, {}))
        rows[m] = {"score": s, "chance": c, "seconds": round(time.time() - t, 1), **kw.get(m, {})}
        print(f"{m:12s} {s:7.3f}   chance {c:7.3f}   ({time.time() - t:.0f}s)", flush=True)
    except Exception as e:
        rows[m] = {"error": f"{type(e).__name__}: {e}"}
        print(f"{m:12s} ERROR {type(e).__name__}: {str(e)[:150]}", flush=True)
from pathlib import Path
out = Path("out/cross_encoder"); out.mkdir(parents=True, exist_ok=True)
(out / f"study_{N}.json").write_text(json.dumps(rows, indent=1))
print(f"wrote {out}/study_{N}.json")
