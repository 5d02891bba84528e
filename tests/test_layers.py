import copy

import numpy as np
import pytest
import torch
from torch import nn

from align.extract import extract_activations
from align.layers import LayerComparison, compare_layers, random_rotation, rotation_test
from align.metrics.kernel import cka


def _mlp(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 8))


LAYERS = ["0", "2", "4"]


@pytest.fixture(scope="module")
def inputs():
    return np.random.default_rng(0).standard_normal((120, 10)).astype(np.float32)


def test_two_copies_of_one_network(inputs):
    net = _mlp(0)
    fa = extract_activations(net, inputs, LAYERS)
    fb = extract_activations(copy.deepcopy(net), inputs, LAYERS)
    for metric in ("cka", cka):
        res = compare_layers(fa, fb, metric=metric, progress=False)
        assert isinstance(res, LayerComparison)
        assert res.matrix.shape == (3, 3) and res.layers_a == LAYERS and res.layers_b == LAYERS
        np.testing.assert_allclose(np.diag(res.matrix), 1.0, atol=1e-6)
        assert res.best_match == {"0": "0", "2": "2", "4": "4"}
        assert res.diagonal_argmax_fraction == 1.0
        np.testing.assert_allclose(res.diagonal, 1.0, atol=1e-6)
    assert compare_layers(fa, fb, metric="cka", progress=False).metric == "cka"


def test_matrix_entries_are_metric_values(inputs):
    fa = extract_activations(_mlp(0), inputs, LAYERS)
    fb = extract_activations(_mlp(1), inputs, ["0", "4"])
    calls = []

    def metric(X, Y, scale=1.0):
        calls.append((X.shape[1], Y.shape[1]))
        return scale * (X.shape[1] + Y.shape[1] / 100)

    res = compare_layers(fa, fb, metric=metric, progress=False, scale=2.0)
    assert res.matrix.shape == (3, 2) and res.layers_b == ["0", "4"]
    np.testing.assert_allclose(res.matrix, 2.0 * np.array([[16.16, 16.08], [12.16, 12.08], [8.16, 8.08]]))
    assert len(calls) == 6
    # unequal depths: the expected match is the same relative depth
    assert res.expected_match == [0, 1, 1]
    assert res.metric == "metric"


def test_real_metric_by_name_and_kwargs(inputs):
    fa = extract_activations(_mlp(0), inputs, LAYERS)
    fb = extract_activations(_mlp(1), inputs, LAYERS)
    res = compare_layers(fa, fb, metric="mutual_knn", k=5, progress=False)
    assert np.all((res.matrix >= 0) & (res.matrix <= 1))
    res = compare_layers(fa, fa, metric="linear", folds=3, progress=False)
    assert np.all(np.diag(res.matrix) > 0.99)


def test_plot_and_to_dict(tmp_path, inputs):
    fa = extract_activations(_mlp(0), inputs, LAYERS)
    res = compare_layers(fa, fa, metric=cka, progress=False)
    path = res.plot(tmp_path / "sub" / "heat.png", title="copies")
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    d = res.to_dict()
    assert d["best_match"] == {"0": "0", "2": "2", "4": "4"} and len(d["matrix"]) == 3


@pytest.mark.parametrize(
    "a, b, kwargs, match",
    [
        ({}, {"x": np.ones((5, 2))}, {}, "feats_a is empty"),
        ({"x": np.ones((5, 2))}, [np.ones((5, 2))], {}, "feats_b must be a dict"),
        ({"x": np.ones((5, 2))}, {"y": np.ones((6, 2))}, {}, "same number of rows"),
        ({"x": np.ones((5, 2))}, {"y": np.full((5, 2), np.nan)}, {}, r"feats_b\['y'\]"),
        ({"x": np.ones((5, 2))}, {"y": np.ones((5, 2))}, {"metric": "nope"}, "metric must be one of"),
        ({"x": np.ones((5, 2))}, {"y": np.ones((5, 2))}, {"metric": 3}, "metric must be"),
    ],
)
def test_compare_layers_bad_args(a, b, kwargs, match):
    with pytest.raises(ValueError, match=match):
        compare_layers(a, b, progress=False, **kwargs)


def test_random_rotation():
    Q = random_rotation(7, seed=3)
    np.testing.assert_allclose(Q.T @ Q, np.eye(7), atol=1e-12)
    assert np.linalg.det(Q) == pytest.approx(1.0)
    np.testing.assert_array_equal(Q, random_rotation(7, seed=3))
    assert not np.allclose(Q, random_rotation(7, seed=4))
    # Haar: the mean of Q over draws is ~0 (a QR without the sign fix is biased to +diag)
    mean = np.mean([random_rotation(3, seed=s) for s in range(2000)], axis=0)
    assert np.abs(mean).max() < 0.06


def _unit_corr(X, Y):
    """Stand-in basis-dependent metric: mean correlation of unit j of X with unit j of Y."""
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    return float(np.mean((Xc * Yc).sum(0) / np.sqrt((Xc**2).sum(0) * (Yc**2).sum(0))))


def test_rotation_test_basis_dependence():
    X = np.random.default_rng(0).standard_normal((200, 12))
    r = rotation_test(X, X, metric=_unit_corr, seed=0)
    assert r["native"] == pytest.approx(1.0) and r["rotated"] < 0.6 and r["drop"] > 0.4
    r = rotation_test(X, X, metric=cka, seed=0)
    assert r["native"] == pytest.approx(1.0) and r["rotated"] == pytest.approx(1.0)
    assert rotation_test(X, X, metric=_unit_corr, seed=0) == rotation_test(X, X, metric=_unit_corr, seed=0)


def test_rotation_test_paper_table1_pattern():
    """Kapoor et al. 2025, Table 1: rotation lowers permutation, not linear / Procrustes."""
    rng = np.random.default_rng(1)
    Z = rng.standard_normal((150, 6))
    X = np.tanh(Z @ rng.standard_normal((6, 10)))
    Y = X[:, rng.permutation(10)] * rng.uniform(0.5, 2, 10) + 0.05 * rng.standard_normal((150, 10))
    perm = rotation_test(X, Y, metric="permutation", folds=3)
    assert perm["native"] > 0.9 and perm["rotated"] < perm["native"] - 0.2
    for name in ("linear", "procrustes"):
        res = rotation_test(X, X, metric=name, folds=3)
        assert res["rotated"] == pytest.approx(res["native"], abs=1e-6)


@pytest.mark.parametrize(
    "X, Y, kwargs, match",
    [
        (np.ones((5, 2)), np.ones((6, 2)), {}, "same number of rows"),
        (np.ones((5, 2)), np.ones((5, 2)), {"metric": "nope"}, "metric must be one of"),
        ("x", np.ones((5, 2)), {}, "X must be"),
    ],
)
def test_rotation_test_bad_args(X, Y, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        rotation_test(X, Y, **kwargs)


@pytest.mark.slow
def test_reproduce_convergence_script_smoke(tmp_path, monkeypatch):
    """The reproduction script runs end to end (1 epoch, 3 folds) and writes its outputs;
    on 400 training digits and 150 stimuli instead of 1297 / 500 (the pipeline, not the
    figures: scoring 500 stimuli took most of its time)."""
    import json

    from synthetic import script_module

    from align.device import threads

    with script_module("reproduce_convergence") as mod:
        real = mod.load_data

        def small(seed):
            Xtr, ytr, Xte, yte, shifted = real(seed)
            return Xtr[:400], ytr[:400], Xte[:150], yte[:150], {k: v[:150] for k, v in shifted.items()}

        monkeypatch.setattr(mod, "load_data", small)
        # one thread, as the script runs its tiny convs: its thousands of small decompositions
        # (<= 64 x 64) gain nothing from more, and lose much when the cores are shared
        with threads(1):
            assert mod.main(["--epochs", "1", "--folds", "3", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["config"]["n_train"] == 400 and res["config"]["n_stimuli"] == 150
    assert [c["epoch"] for c in res["training"]] == [0, 0.25, 1]
    assert len(res["verdicts"]) == 8
    for name in ("scores_by_layer", "training", "ood", "rotation", "layers_AA_procrustes", "layers_AB_linear"):
        assert (tmp_path / f"{name}.png").is_file()
