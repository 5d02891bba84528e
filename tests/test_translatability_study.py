"""scripts/translatability_study.py end to end on synthetic spaces (the real ones need the
embedding cache): records, resume, the summary's correlations and time fractions, the page."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synthetic import script_module

ISO = {"batch_size": 100, "n_init": 2, "n_iter": 30}  # the study's records, not the fits' quality


def _spaces() -> dict:
    """Three 16-d spaces over the same 1000 'texts': b is a rotation of a (translatable),
    c a Gaussian with a's covariance (no structure to match)."""
    rng = np.random.default_rng(0)
    d, k = 16, 30
    scales = np.geomspace(1, 0.1, d)
    centres = rng.standard_normal((k, d)) * scales
    a = centres[rng.integers(k, size=1000)] + 0.3 * rng.standard_normal((1000, d)) * scales
    R, _ = np.linalg.qr(rng.standard_normal((d, d)))
    c = rng.multivariate_normal(a.mean(0), np.cov(a.T), size=1000)
    return {n: z.astype(np.float32) for n, z in {"a": a, "b": a @ R, "c": c}.items()}


@pytest.mark.slow
def test_translatability_study_records_resumes_and_writes_the_page(tmp_path, capsys, monkeypatch):
    data = _spaces()
    path = tmp_path / "t.json"
    iso = json.dumps(ISO)
    with script_module("translatability_study") as study:
        monkeypatch.setattr(study, "spaces", lambda allow_embed: data)
        # 400 rows per side and a pool of 200 instead of 4500 / 1000: seconds, not minutes
        # (the records and the page, not the fits' quality; 800 / 300 took twice as long)
        monkeypatch.setattr(study, "TRAIN_A", (0, 400))
        monkeypatch.setattr(study, "TRAIN_B", (400, 800))
        monkeypatch.setattr(study, "POOL", (800, 1000))
        args = ["--json", str(path), "--spaces", "a", "b", "c", "--isometric", iso]
        assert study.main(args + ["--parts", "translatability", "oracle", "cka"]) == 0
        res = json.loads(path.read_text())
        assert len([k for k in res if k.startswith("translatability ")]) == 6
        assert len([k for k in res if k.startswith("cka ")]) == 3  # one per unordered pair
        assert res["oracle a->b"]["top1"] == 1.0
        # the default score is the profile alone; a rotation scores above a structureless Gaussian
        assert res["translatability a->b"]["evidence"] == 0
        assert res["translatability a->b"]["score"] > 2 * res["translatability a->c"]["score"]
        capsys.readouterr()
        assert study.main(args + ["--parts", "translatability", "isometric", "evidence"]) == 0
        out = capsys.readouterr().out
        assert "translatability a->b" not in out and "isometric a->b" in out  # resumed
        res = json.loads(path.read_text())
        iso = {k.split(" ", 1)[1]: v for k, v in res.items() if k.startswith("isometric ")}
        assert len(iso) == 6 and all(0 <= r["top1"] <= 1 and 1 <= r["restarts"] <= 2 for r in iso.values())
        assert iso["a->b"]["params"]["n_iter"] == ISO["n_iter"]
        assert all(res[f"evidence {p}"]["evidence"] >= 0 and len(res[f"evidence {p}"]["gains"]) == 3 for p in iso)
        s = study.summary(res)
        found = sum(r["top1"] >= 0.5 for r in iso.values())
        assert s["n"] == 6 and s["found"] == found and s["spearman"]["score"]["n"] == 6
        frac = [res[f"translatability {p}"]["seconds"] / r["seconds"] for p, r in iso.items()]
        assert s["time_fraction_max"] == max(frac)
        assert s["auc_found"] is None if found in (0, 6) else 0 <= s["auc_found"] <= 1
        assert study.main(["--json", str(path), "--md", str(tmp_path / "t.md")]) == 0
    md = (tmp_path / "t.md").read_text()
    assert "| a -> b |" in md and "translatability (default)" in md and f"Found (top-1 ≥ 0.5): {found} of 6" in md
    # the page says how the fits differ from Isometric's defaults (here: the toy budget)
    assert '{"batch_size": 100, "n_init": 2, "n_iter": 30}' in md
