"""Side by side with platonic-rep (Huh, Cheung, Wang & Isola 2024, "The Platonic
Representation Hypothesis"; github.com/minyoungg/platonic-rep, ``metrics.py`` and
``measure_alignment.py`` at commit dcd76ba).

The ``ref_*`` functions below are small re-implementations of that file's
formulas (torch, float64), written for this comparison; they are not the
library. Each names the function of ``metrics.py`` it follows. Our metrics must
equal them on the same L2-normalised arrays:

- neighbour metrics (mutual_knn, cycle_knn, lcs_knn = theirs / k, edit_distance_knn):
  to <= 1e-16 (identical neighbour lists; only the order of the float64 sums differs);
- CKA (linear, RBF with an absolute bandwidth, biased and unbiased) and CKNNA:
  to <= 1e-14 against the reference without its ``+ 1e-6`` in the
  denominator, and within the bounds in docs/from_platonic_rep.md with it;
- ties: ours are the stable order (lower index first), i.e. platonic-rep's
  ``argsort(descending=True, stable=True)``.

Print the measured differences: ``.venv/bin/python tests/test_platonic_compat.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from align.metrics.cca import svcca
from align.metrics.kernel import cka
from align.metrics.neighbors import cknna, cycle_knn, edit_distance_knn, lcs_knn, mutual_knn
from synthetic import torch_threads


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The torch references here are tiny (n <= 200): on one thread. More threads cost more
    CPU than they save, and several times more on a shared machine; the library's own calls
    set their thread count themselves."""
    with torch_threads(1):
        yield


EPS = 1e-6  # platonic-rep's "+ 1e-6" in the CKA and CKNNA denominators
KS = (5, 10, 20)


# --------------------------------------------------------------------------- reference (platonic-rep formulas)
def ref_nearest_neighbors(feats, topk, stable=False):
    """metrics.compute_nearest_neighbors: raw inner products, diagonal -1e8, argsort descending."""
    S = (feats @ feats.T).fill_diagonal_(-1e8)
    return S.argsort(dim=1, descending=True, stable=stable)[:, :topk]


def ref_mutual_knn(A, B, topk, stable=False, mask_dtype=torch.float64):
    """AlignmentMetrics.mutual_knn (its masks are float32 by default: ``mask_dtype``)."""
    ka, kb = ref_nearest_neighbors(A, topk, stable), ref_nearest_neighbors(B, topk, stable)
    n = ka.shape[0]
    r = torch.arange(n).unsqueeze(1)
    ma = torch.zeros(n, n, dtype=mask_dtype)
    mb = torch.zeros(n, n, dtype=mask_dtype)
    ma[r, ka] = 1.0
    mb[r, kb] = 1.0
    return ((ma * mb).sum(dim=1) / topk).mean().item()


def ref_cycle_knn(A, B, topk, stable=False):
    """AlignmentMetrics.cycle_knn = compute_knn_accuracy(knn_A[knn_B])."""
    ka, kb = ref_nearest_neighbors(A, topk, stable), ref_nearest_neighbors(B, topk, stable)
    knn = ka[kb]
    n = knn.shape[0]
    acc = knn == torch.arange(n).view(-1, 1, 1)
    return acc.double().view(n, -1).max(dim=1).values.mean().item()


def _lcs(x, y):
    m, n = len(x), len(y)
    dp = [[0] * (n + 1) for _ in range(m + 1)]
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            dp[i][j] = dp[i - 1][j - 1] + 1 if x[i - 1] == y[j - 1] else max(dp[i - 1][j], dp[i][j - 1])
    return dp[m][n]


def _levenshtein(x, y):
    """torchaudio.functional.edit_distance: unit-cost insert / delete / substitute."""
    prev = list(range(len(y) + 1))
    for i in range(1, len(x) + 1):
        cur = [i] + [0] * len(y)
        for j in range(1, len(y) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x[i - 1] != y[j - 1]))
        prev = cur
    return prev[-1]


def ref_lcs_knn(A, B, topk, stable=False):
    """AlignmentMetrics.lcs_knn: the mean LCS *length* (not divided by topk)."""
    ka, kb = ref_nearest_neighbors(A, topk, stable).tolist(), ref_nearest_neighbors(B, topk, stable).tolist()
    return float(np.mean([_lcs(a, b) for a, b in zip(ka, kb)]))


def ref_edit_distance_knn(A, B, topk, stable=False):
    """AlignmentMetrics.edit_distance_knn: 1 - mean(edit distance) / topk."""
    ka, kb = ref_nearest_neighbors(A, topk, stable).tolist(), ref_nearest_neighbors(B, topk, stable).tolist()
    return 1.0 - float(np.mean([_levenshtein(a, b) for a, b in zip(ka, kb)])) / topk


def ref_hsic_unbiased(K, L):
    """metrics.hsic_unbiased (Song et al. 2012, Eq. 5)."""
    m = K.shape[0]
    Kt = K.clone().fill_diagonal_(0)
    Lt = L.clone().fill_diagonal_(0)
    v = (Kt * Lt.T).sum() + Kt.sum() * Lt.sum() / ((m - 1) * (m - 2)) - 2 * (Kt @ Lt).sum() / (m - 2)
    return v / (m * (m - 3))


def ref_hsic_biased(K, L):
    """metrics.hsic_biased: tr(K H L H), no 1/(n-1)^2."""
    H = torch.eye(K.shape[0], dtype=K.dtype) - 1 / K.shape[0]
    return torch.trace(K @ H @ L @ H)


def ref_cka(A, B, kernel_metric="ip", rbf_sigma=1.0, unbiased=False, eps=EPS):
    """AlignmentMetrics.cka."""
    if kernel_metric == "ip":
        K, L = A @ A.T, B @ B.T
    else:
        K = torch.exp(-torch.cdist(A, A) ** 2 / (2 * rbf_sigma**2))
        L = torch.exp(-torch.cdist(B, B) ** 2 / (2 * rbf_sigma**2))
    h = ref_hsic_unbiased if unbiased else ref_hsic_biased
    return (h(K, L) / (torch.sqrt(h(K, K) * h(L, L)) + eps)).item()


def ref_cknna(A, B, topk, eps=EPS, stable=False):
    """AlignmentMetrics.cknna (unbiased=True, distance_agnostic=False, its defaults).

    ``stable=True`` replaces its ``torch.topk`` by a stable descending argsort."""
    n = A.shape[0]
    K, L = A @ A.T, B @ B.T

    def sim(K, L):
        Kh = K.clone().fill_diagonal_(float("-inf"))
        Lh = L.clone().fill_diagonal_(float("-inf"))
        if stable:
            ik = Kh.argsort(dim=1, descending=True, stable=True)[:, :topk]
            il = Lh.argsort(dim=1, descending=True, stable=True)[:, :topk]
        else:
            ik, il = torch.topk(Kh, topk, dim=1)[1], torch.topk(Lh, topk, dim=1)[1]
        mask = torch.zeros(n, n, dtype=K.dtype).scatter_(1, ik, 1) * torch.zeros(n, n, dtype=K.dtype).scatter_(1, il, 1)
        return ref_hsic_unbiased(mask * K, mask * L)

    return sim(K, L).item() / (torch.sqrt(sim(K, K) * sim(L, L)) + eps).item()


def ref_standardise(act):
    """svcca's preprocess_activations: centre, divide by the (unbiased) std + 1e-8."""
    act = act - act.mean(dim=0)
    return act / (act.std(dim=0) + 1e-8)


def ref_svcca_exact(A, B, cca_dim):
    """AlignmentMetrics.svcca with its two approximations made exact: the top cca_dim
    left singular vectors by a full SVD (not torch.svd_lowrank) and the canonical
    correlations of the two bases as the singular values of U1ᵀU2 (not sklearn's
    iterative CCA); the mean of the cca_dim correlations."""
    U1 = torch.linalg.svd(ref_standardise(A), full_matrices=False)[0][:, :cca_dim]
    U2 = torch.linalg.svd(ref_standardise(B), full_matrices=False)[0][:, :cca_dim]
    return torch.linalg.svdvals(U1.T @ U2).mean().item()


def ref_svcca_sklearn(A, B, cca_dim, lowrank=True, seed=0):
    """AlignmentMetrics.svcca as it runs: torch.svd_lowrank (randomised, torch seed
    ``seed``) or, with ``lowrank=False``, a full SVD; then sklearn's CCA (without its
    1e-10 noise on the canonical variates)."""
    import warnings

    from sklearn.cross_decomposition import CCA

    torch.manual_seed(seed)
    if lowrank:
        U1 = torch.svd_lowrank(ref_standardise(A), q=cca_dim)[0].numpy()
        U2 = torch.svd_lowrank(ref_standardise(B), q=cca_dim)[0].numpy()
    else:
        U1 = torch.linalg.svd(ref_standardise(A), full_matrices=False)[0][:, :cca_dim].numpy()
        U2 = torch.linalg.svd(ref_standardise(B), full_matrices=False)[0][:, :cca_dim].numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's NIPALS often stops at max_iter
        c = CCA(n_components=cca_dim).fit(U1, U2)
    a, b = c.transform(U1, U2)
    return float(np.mean([np.corrcoef(a[:, i], b[:, i])[0, 1] for i in range(cca_dim)]))


def ref_remove_outliers(feats, q, exact=False):
    """metrics.remove_outliers (measure_alignment.prepare_features uses q=0.95)."""
    if exact:
        q_val = feats.view(-1).abs().sort().values[int(q * feats.numel())]
    else:
        q_val = torch.quantile(feats.abs().flatten(start_dim=1), q, dim=1).mean()
    return feats.clamp(-q_val, q_val)


# --------------------------------------------------------------------------- data
def _pair(n=200, dx=16, dy=32, seed=0):
    """Two related representations, rows L2-normalised as measure_alignment.compute_score does."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dx))
    Y = X @ rng.standard_normal((dx, dy)) + 0.7 * rng.standard_normal((n, dy))
    return F.normalize(torch.from_numpy(X), dim=-1), F.normalize(torch.from_numpy(Y), dim=-1)


def _tied(n=200, d=16, seed=1):
    """Rows in {±1/4}^16: unit norm and inner products in multiples of 1/16, exact in any
    order of summation, so the neighbour lists have many exact ties at the k-th place."""
    rng = np.random.default_rng(seed)
    X = 0.25 * rng.choice([-1.0, 1.0], size=(n, d))
    Y = X.copy()
    flip = rng.random((n, d)) < 0.2
    Y[flip] *= -1
    return torch.from_numpy(X), torch.from_numpy(Y)


# --------------------------------------------------------------------------- measurement
def measure():
    """{name: max |ours - theirs|} over KS and the pairs of _pair(); used by the tests."""
    out = {}

    def upd(key, v):
        out[key] = max(out.get(key, 0.0), float(v))

    for seed in (0, 1):
        A, B = _pair(seed=seed)
        a, b = A.numpy(), B.numpy()
        for k in KS:
            upd("mutual_knn", abs(mutual_knn(a, b, k) - ref_mutual_knn(A, B, k)))
            upd("mutual_knn vs its float32 masks", abs(mutual_knn(a, b, k) - ref_mutual_knn(A, B, k, mask_dtype=torch.float32)))
            upd("cycle_knn", abs(cycle_knn(a, b, k) - ref_cycle_knn(A, B, k)))
            upd("lcs_knn", abs(lcs_knn(a, b, k) - ref_lcs_knn(A, B, k) / k))
            upd("edit_distance_knn", abs(edit_distance_knn(a, b, k) - ref_edit_distance_knn(A, B, k)))
            ours = cknna(a, b, k)
            upd("cknna (no 1e-6)", abs(ours - ref_cknna(A, B, k, eps=0.0)))
            upd("cknna (with 1e-6)", abs(ours - ref_cknna(A, B, k)))
        for deb in (False, True):
            tag = "unbiased" if deb else "biased"
            ours = cka(a, b, debiased=deb)
            upd(f"cka linear {tag} (no 1e-6)", abs(ours - ref_cka(A, B, unbiased=deb, eps=0.0)))
            upd(f"cka linear {tag} (with 1e-6)", abs(ours - ref_cka(A, B, unbiased=deb)))
            for bw in (0.5, 1.0):
                ours = cka(a, b, kernel="rbf", bandwidth=bw, debiased=deb)
                upd(f"cka rbf {tag} (no 1e-6)", abs(ours - ref_cka(A, B, "rbf", bw, deb, eps=0.0)))
                upd(f"cka rbf {tag} (with 1e-6)", abs(ours - ref_cka(A, B, "rbf", bw, deb)))
        for dim in (5, 10):
            sa, sb = ref_standardise(A).numpy(), ref_standardise(B).numpy()
            upd("svcca(dims) vs exact reference", abs(svcca(sa, sb, dims=dim) - ref_svcca_exact(A, B, dim)))
            ours = svcca(sa, sb, dims=dim)
            if seed:
                continue  # sklearn's CCA is the slow part: one pair is enough
            upd("svcca(dims) vs full SVD + sklearn CCA", abs(ours - ref_svcca_sklearn(A, B, dim, lowrank=False)))
            upd("svcca(dims) vs as shipped (svd_lowrank)", abs(ours - ref_svcca_sklearn(A, B, dim)))
    return out


@pytest.fixture(scope="module")
def diffs():
    return measure()


EXACT = ("mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn")


@pytest.mark.parametrize("name", EXACT)
def test_neighbour_metrics_equal(diffs, name):
    assert diffs[name] <= 1e-16, diffs


@pytest.mark.parametrize("name", ["cknna (no 1e-6)", "cka linear biased (no 1e-6)", "cka linear unbiased (no 1e-6)",
                                  "cka rbf biased (no 1e-6)", "cka rbf unbiased (no 1e-6)"])
def test_without_eps(diffs, name):
    assert diffs[name] <= 1e-14, diffs


def test_with_eps(diffs):
    # their + 1e-6 is absolute: negligible for biased CKA (HSIC ~ n²), not for the
    # unbiased estimators (HSIC_u ~ 1e-2 and below): see the docs page.
    assert diffs["cka linear biased (with 1e-6)"] <= 1e-7, diffs
    assert diffs["cka rbf biased (with 1e-6)"] <= 1e-7, diffs
    assert diffs["mutual_knn vs its float32 masks"] <= 1e-7, diffs


def test_svcca_dims(diffs):
    assert diffs["svcca(dims) vs exact reference"] <= 1e-12, diffs
    # sklearn's iterative CCA stops at its tol / max_iter
    assert diffs["svcca(dims) vs full SVD + sklearn CCA"] <= 1e-5, diffs
    # the randomised svd_lowrank (niter=2) is what separates the shipped number
    # from the exact one; on this flat spectrum by up to ~0.16 (reported, not bounded)
    assert diffs["svcca(dims) vs as shipped (svd_lowrank)"] < 1.0, diffs


def platonic_cknna(X, Y, k):
    """docs/from_platonic_rep.md: their CKNNA, + 1e-6 included, from ours (X, Y with unit rows)."""
    from align.metrics.neighbors import neighbor_lists

    def hsic_u(K):  # Song et al. Eq. 5 of K with itself (K not symmetric here)
        m = len(K)
        K = K - np.diag(np.diag(K))
        v = (K * K.T).sum() + K.sum() ** 2 / ((m - 1) * (m - 2)) - 2 * (K @ K).sum() / (m - 2)
        return v / (m * (m - 3))

    ix, iy = neighbor_lists(X, Y, k)
    rows = np.arange(len(X))[:, None]
    MX = np.zeros((len(X), len(X)))
    MY = np.zeros((len(X), len(X)))
    MX[rows, ix] = 1.0
    MY[rows, iy] = 1.0
    s = np.sqrt(hsic_u(MX * (X @ X.T)) * hsic_u(MY * (Y @ Y.T)))
    return cknna(X, Y, k) * s / (s + 1e-6)


@pytest.mark.parametrize("k", KS)
def test_cknna_eps_snippet(k):
    A, B = _pair()
    assert abs(platonic_cknna(A.numpy(), B.numpy(), k) - ref_cknna(A, B, k)) <= 1e-14


def test_eps_formula_reproduces_theirs():
    """Their value = ours · s / (s + 1e-6), s = sqrt(HSIC(K,K) HSIC(L,L)) in their scale."""
    from align.metrics.kernel import hsic

    A, B = _pair()
    a, b = A.numpy(), B.numpy()
    n = a.shape[0]
    for deb in (False, True):
        scale = 1.0 if deb else (n - 1) ** 2  # our biased hsic divides by (n-1)², theirs does not
        s = np.sqrt(hsic(a @ a.T, a @ a.T, deb) * hsic(b @ b.T, b @ b.T, deb)) * scale
        theirs = cka(a, b, debiased=deb) * s / (s + EPS)
        assert abs(theirs - ref_cka(A, B, unbiased=deb)) <= 1e-14


@pytest.mark.parametrize("k", KS)
def test_ties_are_stable(k):
    """Exact ties: ours equal platonic-rep with a stable argsort (lower index first)."""
    A, B = _tied()
    a, b = A.numpy(), B.numpy()
    ka = ref_nearest_neighbors(A, k, stable=True).numpy()
    S = a @ a.T
    # the data really has ties at the k-th place
    assert sum(S[i, ka[i, k - 1]] == np.delete(S[i], [i] + list(ka[i])).max() for i in range(len(a))) > 10
    from align.metrics.neighbors import neighbor_lists

    ix, iy = neighbor_lists(a, b, k)
    np.testing.assert_array_equal(ix, ka)
    np.testing.assert_array_equal(iy, ref_nearest_neighbors(B, k, stable=True).numpy())
    # identical lists; the means differ only by the order of the float64 sums
    assert abs(mutual_knn(a, b, k) - ref_mutual_knn(A, B, k, stable=True)) <= 1e-16
    assert abs(cycle_knn(a, b, k) - ref_cycle_knn(A, B, k, stable=True)) <= 1e-16
    assert abs(lcs_knn(a, b, k) - ref_lcs_knn(A, B, k, stable=True) / k) <= 1e-16
    assert abs(edit_distance_knn(a, b, k) - ref_edit_distance_knn(A, B, k, stable=True)) <= 1e-16
    assert abs(cknna(a, b, k) - ref_cknna(A, B, k, eps=0.0, stable=True)) <= 1e-14


def test_outlier_clamp_snippet():
    """The numpy clamp of docs/from_platonic_rep.md equals metrics.remove_outliers."""
    rng = np.random.default_rng(3)
    feats = rng.standard_t(3, size=(100, 24))  # heavy tails
    T = torch.from_numpy(feats)
    # exact=True (platonic.Alignment.score): the int(q·numel)-th smallest |value|
    q_val = np.sort(np.abs(feats), axis=None)[int(0.95 * feats.size)]
    np.testing.assert_array_equal(np.clip(feats, -q_val, q_val), ref_remove_outliers(T, 0.95, exact=True).numpy())
    # exact=False (measure_alignment.py without --precise): mean of per-row quantiles
    q_val = np.quantile(np.abs(feats), 0.95, axis=1).mean()
    np.testing.assert_allclose(np.clip(feats, -q_val, q_val), ref_remove_outliers(T, 0.95).numpy(), rtol=0, atol=1e-15)


def test_edit_distance_knn_basics():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((50, 8))
    assert edit_distance_knn(X, X, 5) == 1.0
    assert edit_distance_knn(X, 3.0 * X, 5) == 1.0
    Y = rng.standard_normal((50, 8))
    assert 0.0 <= edit_distance_knn(X, Y, 5) < 0.5
    with pytest.raises(ValueError, match="k"):
        edit_distance_knn(X, Y, 0)


def test_new_options_validated():
    rng = np.random.default_rng(5)
    X, Y = rng.standard_normal((40, 6)), rng.standard_normal((40, 6))
    with pytest.raises(ValueError, match="bandwidth"):
        cka(X, Y, bandwidth=1.0)  # linear kernel
    with pytest.raises(ValueError, match="bandwidth"):
        cka(X, Y, kernel="rbf", bandwidth=1.0, sigma=1.0)
    for bad in (0.0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="bandwidth"):
            cka(X, Y, kernel="rbf", bandwidth=bad)
    with pytest.raises(ValueError, match="X has no variance"):
        cka(np.ones((40, 6)), Y, kernel="rbf", bandwidth=1.0)
    with pytest.raises(ValueError, match="overflow"):
        cka(X * 1e160, Y, kernel="rbf", bandwidth=1.0)
    for bad in (0, -2, 2.5, True, 7):
        with pytest.raises(ValueError, match="dims"):
            svcca(X, Y, dims=bad)
    assert svcca(X, X, dims=6) == pytest.approx(1.0, abs=1e-12)
    # unchanged defaults
    assert svcca(X, Y) == svcca(X, Y, keep=0.99)
    assert cka(X, Y, kernel="rbf") == cka(X, Y, kernel="rbf", sigma=1.0)


if __name__ == "__main__":
    for name, v in measure().items():
        print(f"{name:40s} {v:.3g}")
