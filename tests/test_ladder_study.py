"""scripts/ladder_study.py: the synthetic rungs are what the docs say (a rotation at
strength 0, a norm-preserving bijection otherwise, the same cloud at every strength),
and the tables and verdicts are computed from the JSON as stated."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import ladder_study as L  # noqa: E402


def test_twist_is_identity_at_zero_norm_preserving_and_invertible():
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((300, 8)) * np.geomspace(1, 0.1, 8)
    warp = L.twist_warp(Z, np.random.default_rng(1))
    np.testing.assert_allclose(warp(Z, 0.0), Z, atol=1e-12)
    W = warp(Z, 1.5)
    np.testing.assert_allclose(np.linalg.norm(W, axis=1), np.linalg.norm(Z, axis=1), rtol=1e-12)
    assert np.abs(W - Z).max() > 0.1  # it does move rows
    # invertible: the driving half is kept, so turning back by its angles restores Z
    np.testing.assert_allclose(warp(W, -1.5), Z, atol=1e-10)


def test_synthetic_rungs_share_the_cloud_and_the_isometric_rung_is_a_rotation():
    a = L.synthetic_rung(0.0, n=200, pool=50, d=8, k=6, noise=0.0, seed=3)
    b = L.synthetic_rung(1.0, n=200, pool=50, d=8, k=6, noise=0.0, seed=3)
    for key in ("A", "Ap", "At"):
        np.testing.assert_array_equal(a[key], b[key])
    Q, *_ = np.linalg.lstsq(a["Ap"], a["Bp"], rcond=None)  # B = A Q exactly at strength 0
    np.testing.assert_allclose(Q @ Q.T, np.eye(8), atol=1e-4)
    assert not np.allclose(a["Bp"], b["Bp"])
    np.testing.assert_allclose(np.linalg.norm(b["Bt"], axis=1), 1.0, atol=1e-5)
    again = L.synthetic_rung(1.0, n=200, pool=50, d=8, k=6, noise=0.0, seed=3)
    np.testing.assert_array_equal(again["Bt"], b["Bt"])


def test_twisted_rung_is_a_rotation_at_strength_zero_and_curved_above():
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((700, 10)) * np.geomspace(1, 0.2, 10) + 0.5

    def enc(n, start):  # a fake encoder: rows [start, start + n) of Z
        return Z[start:start + n].astype(np.float32)

    flat, bent = (L.twisted_rung(enc, s, n=300, pool_start=600, pool=100, seed=1) for s in (0.0, 1.5))
    for D in (flat, bent):
        np.testing.assert_array_equal(D["A"], Z[:300].astype(np.float32))
        np.testing.assert_array_equal(D["B"], D["Bp"])  # B holds the other texts, the paired ceilings' rows
        np.testing.assert_allclose(np.linalg.norm(D["Bt"], axis=1), 1.0, atol=1e-5)
    unit = Z[300:600] / np.linalg.norm(Z[300:600], axis=1, keepdims=True)
    Q, *_ = np.linalg.lstsq(unit, flat["Bp"], rcond=None)  # strength 0: unit rows, then one rotation
    np.testing.assert_allclose(Q @ Q.T, np.eye(10), atol=1e-4)
    R, *_ = np.linalg.lstsq(unit, bent["Bp"], rcond=None)
    assert np.abs(unit @ R - bent["Bp"]).max() > 0.05  # the twist leaves what no linear map explains


def _vecmap_rotation(seed=0, n=400, pool=100, d=12):
    """Pairs related by a rotation between the VecMap-preprocessed spaces only: each row of either side has its own
    norm, and both sides an offset mean, so the centred spaces alone are not a rotation apart."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    Z = rng.standard_normal((n + pool, d)) + 2.0 * rng.standard_normal(d)
    U = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    X = (U * rng.uniform(0.2, 3.0, (len(U), 1))).astype(np.float32)
    Y = ((U @ Q) * rng.uniform(0.2, 3.0, (len(U), 1))).astype(np.float32)
    return dict(Ap=X[:n], Bp=Y[:n], At=X[n:], Bt=Y[n:])


def test_ceilings_are_fitted_between_the_preprocessed_spaces_and_raw_on_request():
    from translate.paired import Procrustes

    D = _vecmap_rotation()
    pre, raw = L.fit_ceiling("procrustes", D, 0)(D["At"]), L.fit_ceiling("procrustes-raw", D, 0)(D["At"])
    np.testing.assert_allclose(pre, Procrustes(normalize=True).fit(D["Ap"], D["Bp"]).transform(D["At"]), rtol=1e-6)
    np.testing.assert_allclose(raw, Procrustes().fit(D["Ap"], D["Bp"]).transform(D["At"]), rtol=1e-6)
    assert L.metrics(pre, D["Bt"])["top1"] == 1.0
    # the MLP ceiling starts at the least-squares map between the preprocessed spaces (exact here) and keeps its
    # best held-out step: translations point at their true rows after the inverse preprocessing
    mlp = L.paired_mlp(D["Ap"], D["Bp"], hidden=16, steps=20, eval_every=10, vecmap=True)(D["At"])
    cos = np.sum(mlp * D["Bt"], 1) / np.linalg.norm(mlp, axis=1) / np.linalg.norm(D["Bt"], axis=1)
    assert mlp.shape == D["Bt"].shape and cos.min() > 0.99


def test_a_rung_margin_takes_the_better_ceiling_of_each_family():
    R = {"procrustes": _row(0.90), "procrustes-raw": _row(0.80), "mlp": _row(0.95), "mlp-raw": _row(0.97)}
    assert L.ceiling(R, "procrustes") == 0.90 and L.ceiling(R, "mlp") == 0.97
    assert abs(L.rung_target(R) - 0.035) < 1e-9  # half of 0.97 - 0.90
    assert L.ceiling({"mlp": _row(0.95)}, "mlp") == 0.95  # a JSON from before the raw rows
    R |= {"ridge": _row(0.93), "ridge-raw": _row(0.92)}
    assert "| `minilm-e5` | 0.800 / 0.900 | 0.920 / 0.930 | 0.970 / 0.950 | +0.170 | +0.070 |" in L.markdown({"rungs": {"minilm-e5": R}})


def _row(top1):
    return dict(top1=top1, top5=1.0, mean_cos=0.9, foscttm=0.0, pool=1000, cpu_s=1.0)


@pytest.mark.parametrize("v2v, met", [(0.93, "**yes**"), (0.90, "**no**")])
def test_summary_applies_the_issue_targets(v2v, met):
    R = {"procrustes": _row(0.87), "ridge": _row(0.92), "mlp": _row(0.97), "isometric": _row(0.87),
         "v2v-iso": dict(_row(v2v), steps=300, selected_step=100)}
    md = L.markdown({"rungs": {"synth-w1.5": R, "synth-w0": {k: _row(0.998) for k in R}}})
    line = next(x for x in md.splitlines() if x.startswith("| `synth-w1.5`"))
    assert "+0.100" in line and "≥ +0.050" in line and line.rstrip(" |").endswith(met)
    iso_line = next(x for x in md.splitlines() if x.startswith("| `synth-w0`"))
    assert "≥ −0.005" in iso_line and "**yes**" in iso_line
    assert md.index("synth-w0`  (") < md.index("synth-w1.5`  (")  # rungs by strength


def test_seed_spread_counts_the_vec2vec_seeds_that_meet_the_rung_target():
    R = {"procrustes": _row(0.87), "mlp": _row(0.97), "isometric": _row(0.87), "v2v-iso": _row(0.93),
         L.SEEDS_KEY: {"2": _row(0.90), "1": _row(0.92)}}
    md = L.markdown({"rungs": {"synth-w1.5": R}})
    line = next(x for x in md.splitlines() if x.startswith("| `synth-w1.5` | ≥ +0.050"))
    # the v2v-iso row's seed first, then the others in seed order; their mean; 2 of 3 at +0.050 or more
    assert "| +0.060 +0.050 +0.030 | +0.047 | 2 of 3 |" in line
    assert L.seed_spread({"rungs": {"synth-w1.5": {k: v for k, v in R.items() if k != L.SEEDS_KEY}}}) == ""


def test_selection_table_shows_the_start_the_end_and_the_choice():
    R = {"procrustes": _row(0.87), "mlp": _row(0.97), "isometric": _row(0.92),
         "v2v-iso": dict(_row(0.92), steps=600, selected_step=0, end_z=11.89), "v2v-iso-end": dict(_row(0.868), steps=600)}
    W = {"procrustes": _row(0.94), "mlp": _row(0.99), "isometric": _row(0.93),
         "v2v-iso": dict(_row(0.967), steps=300, selected_step=300, end_z=0.46), "v2v-iso-end": dict(_row(0.967), steps=300)}
    md = L.markdown({"rungs": {"minilm-mpnetL6": R, "synth-w1": W}})
    assert "| `minilm-mpnetL6` | 0.920 | 0.868 | -0.052 | 11.89 | start | 0.920 |" in md
    assert "| `synth-w1` | 0.930 | 0.967 | +0.037 | 0.46 | end | 0.967 |" in md
    assert "600 (0), batch 512, z 11.9" in md  # the rung's own table
    assert L.selection_table({"rungs": {"synth-w1": {k: v for k, v in W.items() if k != "v2v-iso-end"}}}) == ""


def test_merge_replaces_rows_not_rungs_and_a_real_rung_at_another_size_is_its_own(tmp_path):
    base = {"rungs": {"synth-w1.5": {"procrustes": _row(0.87), "mlp": _row(0.97), "isometric": _row(0.80)}}}
    later = {"rungs": {"synth-w1.5": {"isometric": _row(0.87), "v2v-iso": _row(0.93)}}}
    (tmp_path / "a.json").write_text(json.dumps(base))
    (tmp_path / "b.json").write_text(json.dumps(later))
    out = tmp_path / "merged.json"
    L.main(["--json", str(tmp_path / "a.json"), "--merge", str(tmp_path / "b.json"), "--md", str(tmp_path / "t.md"),
            "--save-merged", str(out)])
    rows = json.loads(out.read_text())["rungs"]["synth-w1.5"]
    assert rows["procrustes"]["top1"] == 0.87 and rows["isometric"]["top1"] == 0.87 and "v2v-iso" in rows
    args = argparse.Namespace(n=11500)
    assert L.rung_key("glove-minilm", args) == "glove-minilm@11500" and L.rung_key("synth-w2", args) == "synth-w2"
    assert L.rung_key("glove-minilm", argparse.Namespace(n=L.DEFAULT_N)) == "glove-minilm"


@pytest.mark.parametrize("bad", ["a,b", "1,-2"])
def test_v2v_seeds_must_be_a_list_of_seeds(bad, capsys):
    with pytest.raises(SystemExit):
        L.main(["--v2v-seeds", bad])
    assert "--v2v-seeds" in capsys.readouterr().err
