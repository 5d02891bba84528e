#!/bin/bash
# The GPU check, run as one command on a machine with CUDA (no setup: it uses that
# machine's python3 with torch, numba, scipy, scikit-learn): the CUDA tests of the
# kNN engines and neighbour metrics, the GPU bench rows (docs/benchmarks.md, "On a
# GPU"), and which route settled the rows of a self-search. Files go to $OUT
# (default out/gpu). Override TESTS, CASES, PYTEST_S, BENCH_S to run less or more.
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
T0=$(date +%s)
nvidia-smi -L; nproc; free -g | head -2
python3 -c "import torch, numba, numpy, scipy, sklearn; print('torch', torch.__version__, torch.cuda.is_available(), 'numba', numba.__version__, 'numpy', numpy.__version__)"
python3 -c "import faiss" 2>&1 | tail -1
echo "== pytest $(( $(date +%s) - T0 )) s"
timeout ${PYTEST_S:-150} python3 -m pytest -q -p no:cacheprovider -o addopts= ${TESTS:-tests/test_knn.py tests/test_neighbors.py} -rs 2>&1 | tee $OUT/pytest.log | tail -25
echo "== bench $(( $(date +%s) - T0 )) s"
timeout ${BENCH_S:-200} python3 scripts/bench.py --cases ${CASES:-mknn-1m translate-100k} --out $OUT/bench_gpu.json --md $OUT/bench_gpu.md 2>&1 | tee $OUT/bench.log | tail -20
echo "== routes $(( $(date +%s) - T0 )) s"
timeout 60 python3 - <<'PY' 2>&1 | tee $OUT/routes.log
import sys, time
sys.path.insert(0, "scripts")
import numpy as np, torch
from bench import paired_data
import align.gpuknn as g
from align.knn import knn, self_neighbors
for n in (100000,):
    X, _ = paired_data(n, 768, 0)
    for rep in range(2):
        torch.cuda.synchronize(); t = time.perf_counter()
        i = self_neighbors(X, 10)
        torch.cuda.synchronize()
        print(n, "self_neighbors", round(time.perf_counter() - t, 2), "s", dict(g.last_routes), flush=True)
PY
echo "== done $(( $(date +%s) - T0 )) s"
