"""Mapping scores (align.metrics.mapping) and the metric registry
(align.metrics): hand cases, independent reference implementations,
invariances, determinism and bad input."""

import numpy as np
import ot
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.linear_model import Ridge

from align.metrics import METRICS, chance_level, score
from align.metrics import mapping as mmod
from align.metrics.mapping import linear_score, permutation_score, procrustes_score, soft_match_score

SCORES = [linear_score, procrustes_score, permutation_score, soft_match_score]


def _rotation(d, seed=0):
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return Q


def _data(n=120, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * np.linspace(2.0, 0.5, d)


# --------------------------------------------------------------------------- hand cases
def test_hungarian_beats_greedy_on_a_two_unit_case():
    r_train = np.array([[0.9, 0.6], [0.8, 0.1]])
    # greedy would take (0,0)=0.9 then (1,1)=0.1: total 1.0; the swap gives 0.6 + 0.8 = 1.4
    rows, cols = mmod._match_units(r_train)
    assert list(zip(rows, cols)) == [(0, 1), (1, 0)]
    r_test = np.array([[0.5, 0.7], [0.3, 0.2]])
    assert r_test[rows, cols].mean() == pytest.approx((0.7 + 0.3) / 2)


def test_transport_plan_two_by_three_by_hand():
    # X units carry 1/2 each, Y units 1/3 each; cost 1 - r.
    r_train = np.array([[1.0, 0.9, 0.0], [0.0, 0.0, 1.0]])
    # x0 fills y0 (cost 0) and sends its last 1/6 to y1 (cost .1); x1 fills y2 (cost 0)
    # and its last 1/6 must go to y0 or y1 at cost 1: y1, so x0 keeps y0.
    expected = np.array([[1 / 3, 1 / 6, 0.0], [0.0, 1 / 6, 1 / 3]])
    P = mmod._transport_plan(r_train)
    np.testing.assert_allclose(P, expected, atol=1e-12)
    r_test = np.array([[0.5, 0.4, 0.1], [0.0, 0.2, 0.9]])
    # 1/3·.5 + 1/6·.4 + 1/6·.2 + 1/3·.9 = 0.5666...
    assert np.sum(P * r_test) == pytest.approx(17 / 30, abs=1e-12)


def test_two_unit_swap_end_to_end():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 2))
    Y = X[:, ::-1] * [3.0, 0.5] + 7.0  # units swapped, rescaled, shifted
    assert permutation_score(X, Y) == pytest.approx(1.0, abs=1e-12)
    assert soft_match_score(X, Y) == pytest.approx(1.0, abs=1e-12)


def test_constant_prediction_counts_as_zero_correlation():
    rng = np.random.default_rng(2)
    true = rng.standard_normal((6, 2))
    pred = np.column_stack([np.full(6, 0.1), true[:, 1]])  # first unit constant up to rounding
    assert mmod._unit_corr(pred, true, "pearson") == pytest.approx(0.5, abs=1e-12)
    assert mmod._unit_corr(pred, true, "spearman") == pytest.approx(0.5, abs=1e-12)


def test_unit_constant_within_a_fold_is_scored_not_nan():
    X = _data(30, 4)
    Y = X @ _rotation(4)
    Y[:, 0] = 0.0
    Y[5, 0] = 1.0  # a single spike: varies overall, constant in most folds
    for fn in SCORES:
        assert np.isfinite(fn(X, Y))


# --------------------------------------------------------------------------- reference implementations
def _corr(a, b):
    return np.array([np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(a.shape[1])])


def _cross(a, b):
    return np.corrcoef(a.T, b.T)[: a.shape[1], a.shape[1]:]


def _reference(kind, X, Y, folds, seed, alpha=None):
    out = []
    for tr, te in mmod._kfold(len(X), folds, seed):
        Xtr, Ytr, Xte, Yte = X[tr], Y[tr], X[te], Y[te]
        if kind == "linear":
            fx = Ridge(alpha=alpha).fit(Xtr, Ytr)
            fy = Ridge(alpha=alpha).fit(Ytr, Xtr)
            out.append((_corr(fx.predict(Xte), Yte).mean() + _corr(fy.predict(Yte), Xte).mean()) / 2)
        elif kind == "procrustes":  # literal zero padding to a square problem
            D = max(X.shape[1], Y.shape[1])
            pad = lambda A: np.hstack([A, np.zeros((len(A), D - A.shape[1]))])  # noqa: E731
            mx, my = Xtr.mean(0), Ytr.mean(0)
            U, _, Vt = np.linalg.svd(pad(Xtr - mx).T @ pad(Ytr - my))
            R = U @ Vt
            yhat = (pad(Xte - mx) @ R)[:, : Y.shape[1]]
            xhat = (pad(Yte - my) @ R.T)[:, : X.shape[1]]
            out.append((_corr(yhat, Yte).mean() + _corr(xhat, Xte).mean()) / 2)
        elif kind == "permutation":
            r, c = linear_sum_assignment(_cross(Xtr, Ytr), maximize=True)
            out.append(np.mean([np.corrcoef(Xte[:, i], Yte[:, j])[0, 1] for i, j in zip(r, c)]))
        else:
            a, b = np.full(X.shape[1], 1 / X.shape[1]), np.full(Y.shape[1], 1 / Y.shape[1])
            P = ot.emd(a, b, 1 - _cross(Xtr, Ytr))
            out.append(np.sum(P * _cross(Xte, Yte)))
    return np.mean(out)


@pytest.mark.parametrize("dy", [4, 7])  # equal and unequal widths
@pytest.mark.parametrize("kind", ["procrustes", "permutation", "soft_match"])
def test_matches_reference_implementation(kind, dy):
    rng = np.random.default_rng(3)
    X = _data(60, 4, seed=3)
    Y = np.hstack([X, X[:, :3]])[:, :dy] @ _rotation(dy, 1) * 0.3 + rng.standard_normal((60, dy))
    fn = {"procrustes": procrustes_score, "permutation": permutation_score, "soft_match": soft_match_score}[kind]
    assert fn(X, Y, folds=3, seed=5) == pytest.approx(_reference(kind, X, Y, 3, 5), abs=1e-10)


@pytest.mark.parametrize("n", [60, 12])  # n_train > d (Gram path) and n_train < d (SVD path)
def test_linear_matches_sklearn_ridge_for_fixed_alpha(n):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((n, 9))
    Y = X @ rng.standard_normal((9, 5)) + rng.standard_normal((n, 5))
    assert linear_score(X, Y, folds=3, alpha=2.0) == pytest.approx(_reference("linear", X, Y, 3, 0, 2.0), abs=1e-8)


@pytest.mark.parametrize("n", [80, 10])
def test_gcv_alpha_matches_explicit_hat_matrix(n):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((n, 12)) * np.logspace(0, -1, 12)
    Y = X @ rng.standard_normal((12, 3)) * [1.0, 10.0, 0.1] + rng.standard_normal((n, 3)) * [1.0, 5.0, 0.1]
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    s, V, Z = mmod._svd_parts(Xc, Yc)
    alphas = mmod._ALPHA_GRID * np.mean(s**2)
    gcv = []
    for a in alphas:
        H = np.ones((n, n)) / n + Xc @ np.linalg.solve(Xc.T @ Xc + a * np.eye(12), Xc.T)
        rss = (((np.eye(n) - H) @ Yc) ** 2).sum(0)
        dof = np.trace(H)
        gcv.append(np.sum(n * rss / (Yc**2).sum(0)) / (n - dof) ** 2 if n - dof > 1e-9 else np.inf)
    assert mmod._gcv_alpha(s, Z, Yc) == pytest.approx(alphas[int(np.argmin(gcv))])


# --------------------------------------------------------------------------- invariances and ordering
def test_invariances():
    X = _data()
    d = X.shape[1]
    pi = np.random.default_rng(0).permutation(d)
    W = np.random.default_rng(1).standard_normal((d, d))
    assert linear_score(X, X @ W) == pytest.approx(1.0, abs=1e-6)
    assert linear_score(X, X @ W, alpha=0.0) == pytest.approx(1.0, abs=1e-10)
    assert procrustes_score(X, X @ _rotation(d)) == pytest.approx(1.0, abs=1e-10)
    assert procrustes_score(X, 2.5 * X @ _rotation(d) + 1.0) == pytest.approx(1.0, abs=1e-10)
    assert permutation_score(X, X[:, pi]) == pytest.approx(1.0, abs=1e-12)
    assert soft_match_score(X, X[:, pi]) == pytest.approx(1.0, abs=1e-12)
    assert soft_match_score(X, np.hstack([X, X])) == pytest.approx(1.0, abs=1e-12)


def test_spearman_is_invariant_to_monotone_transforms():
    X = _data()
    pi = np.random.default_rng(0).permutation(X.shape[1])
    Y = np.exp(X[:, pi])
    assert permutation_score(X, Y, correlation="spearman") == pytest.approx(1.0, abs=1e-12)
    assert soft_match_score(X, Y, correlation="spearman") == pytest.approx(1.0, abs=1e-12)
    assert permutation_score(X, Y) < 0.95


def test_ladder_linear_procrustes_permutation():
    # rotate, then give each unit its own gain, plus noise: only the linear map
    # can undo the gains, only linear and Procrustes can undo the rotation.
    rng = np.random.default_rng(0)
    n, d = 400, 12
    X = rng.standard_normal((n, d)) * np.logspace(0, -1, d)
    Y = (X @ _rotation(d, 1)) * np.logspace(0, -1, d)[rng.permutation(d)] + 0.05 * rng.standard_normal((n, d))
    lin, pro, per = linear_score(X, Y), procrustes_score(X, Y), permutation_score(X, Y)
    assert lin > pro + 0.01
    assert pro > per + 0.2


def test_soft_match_equals_permutation_for_equal_widths():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((90, 5))
    Y = X[:, ::-1] + rng.standard_normal((90, 5))
    assert soft_match_score(X, Y) == pytest.approx(permutation_score(X, Y), abs=1e-12)


def test_independent_data_scores_near_zero():
    rng = np.random.default_rng(7)
    X, Y = rng.standard_normal((300, 5)), rng.standard_normal((300, 5))
    for fn in SCORES:
        assert abs(fn(X, Y)) < 0.15


# --------------------------------------------------------------------------- folds and determinism
def test_kfold_partitions_rows():
    splits = list(mmod._kfold(23, 5, seed=0))
    tests = np.concatenate([te for _, te in splits])
    assert sorted(tests) == list(range(23))
    assert {len(te) for _, te in splits} <= {4, 5}
    for tr, te in splits:
        assert not set(tr) & set(te) and len(tr) + len(te) == 23


@pytest.mark.parametrize("fn", SCORES)
def test_seed_determinism(fn):
    rng = np.random.default_rng(8)
    X = rng.standard_normal((50, 4))
    Y = X @ rng.standard_normal((4, 4)) + rng.standard_normal((50, 4))
    assert fn(X, Y, seed=3) == fn(X, Y, seed=3)
    assert fn(X, Y, seed=3) != fn(X, Y, seed=4)
    a = [te for _, te in mmod._kfold(50, 5, 3)]
    b = [te for _, te in mmod._kfold(50, 5, 4)]
    assert any(not np.array_equal(u, v) for u, v in zip(a, b))


# --------------------------------------------------------------------------- bad input
def _bad_cases():
    X = _data(30, 3)
    Y = _data(30, 3, seed=1)
    const = X.copy()
    const[:, 1] = 2.0
    return {
        "nan": ((np.where(np.arange(3) == 0, np.nan, X), Y), {}, "X contains"),
        "inf": ((X, np.where(np.arange(3) == 2, np.inf, Y)), {}, "Y contains"),
        "mismatched_rows": ((X, Y[:-1]), {}, "same number of rows"),
        "one_d": ((X[:, 0], Y), {}, "X must be 2-D"),
        "empty": ((X[:0], Y[:0]), {}, "X is empty"),
        "int_dtype": ((X.astype(np.int64), Y), {}, "X has integer dtype"),
        "constant_column_X": ((const, Y), {}, "X has 1 constant column"),
        "constant_column_Y": ((X, const), {}, "Y has 1 constant column"),
        "folds_gt_n": ((X, Y), {"folds": 31}, "folds=31"),
        "folds_too_many_for_min_test": ((X, Y), {"folds": 11}, "folds <= 10"),
        "folds_lt_2": ((X, Y), {"folds": 1}, "folds must be >= 2"),
        "folds_float": ((X, Y), {"folds": 2.5}, "folds must be an integer"),
        "unknown_correlation": ((X, Y), {"correlation": "kendall"}, "correlation must be one of"),
        "negative_seed": ((X, Y), {"seed": -1}, "seed must be >= 0"),
    }


_BAD = _bad_cases()


@pytest.mark.parametrize("fn", SCORES)
@pytest.mark.parametrize("case", sorted(_BAD))
def test_bad_input(fn, case):
    args, kw, match = _BAD[case]
    with pytest.raises(ValueError, match=match):
        fn(*args, **kw)


@pytest.mark.parametrize("alpha", [-1.0, np.inf, "auto", True])
def test_linear_bad_alpha(alpha):
    X = _data(30, 3)
    with pytest.raises(ValueError, match="alpha must be"):
        linear_score(X, X, alpha=alpha)


# --------------------------------------------------------------------------- registry
EXPECTED = {
    "mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn", "cknna", "cka", "cka_debiased", "cka_rbf", "rsa",
    "svcca", "pwcca", "linear", "procrustes", "permutation", "soft_match",
}


def test_registry_names_and_dispatch():
    assert set(METRICS) == EXPECTED
    rng = np.random.default_rng(9)
    X = rng.standard_normal((60, 5))
    Y = X + rng.standard_normal((60, 5))
    from align.metrics.kernel import cka

    assert score(X, Y, "cka") == cka(X, Y)
    assert score(X, Y, "cka_debiased") == cka(X, Y, debiased=True)
    assert score(X, Y, "cka_rbf") == cka(X, Y, kernel="rbf")
    assert score(X, Y, "procrustes", folds=3) == procrustes_score(X, Y, folds=3)
    for name in sorted(EXPECTED):
        assert np.isfinite(score(X, Y, name))


def test_unknown_metric_lists_names():
    X = _data(20, 3)
    with pytest.raises(ValueError, match="metric must be one of.*'soft_match'"):
        score(X, X, "cca")
    with pytest.raises(ValueError, match="metric must be one of"):
        chance_level(X, X, "cca")


def test_chance_level():
    rng = np.random.default_rng(10)
    X = rng.standard_normal((80, 4))
    Y = X + 0.1 * rng.standard_normal((80, 4))
    perm_rng = np.random.default_rng(0)
    manual = np.mean([score(X, Y[perm_rng.permutation(80)], "cka") for _ in range(3)])
    assert chance_level(X, Y, "cka") == pytest.approx(manual, abs=1e-15)
    assert score(X, Y, "procrustes") > 0.9
    assert abs(chance_level(X, Y, "procrustes", folds=4)) < 0.2
    assert chance_level(X, Y, "cka", seed=1) != chance_level(X, Y, "cka", seed=2)
    with pytest.raises(ValueError, match="n_shuffles must be >= 1"):
        chance_level(X, Y, "cka", n_shuffles=0)
