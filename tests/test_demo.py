"""The demo's flow (`reptrans demo`), with the encoders replaced by a fake one.

The fake gives text i a fixed clustered 24-d vector (the "source encoder") or that
vector mapped into 32-d by a fixed semi-orthogonal Q (the "target encoder"), so the
unpaired isometric translator has a right answer to find and the test needs no model.
"""

import json

import numpy as np
import pytest

import translate
from translate import demo

N, N_TEST = 1500, 300


@pytest.fixture
def fake_encoders(monkeypatch):
    rng = np.random.default_rng(0)
    scales = np.geomspace(1, 0.05, 24)
    centres = rng.standard_normal((100, 24)) * scales
    total = 2 * N + N_TEST
    Z = centres[rng.integers(100, size=total)] + 0.3 * rng.standard_normal((total, 24)) * scales
    Q, _ = np.linalg.qr(rng.standard_normal((32, 24)))
    spaces = {"minilm": Z.astype(np.float32), "mpnet": (Z @ Q.T).astype(np.float32)}
    calls = []

    def embed_corpus(encoder, corpus, n, start, cache_dir=None, progress=True):
        calls.append((encoder, start, n))
        return spaces[encoder][start : start + n]

    monkeypatch.setattr(demo, "embed_corpus", embed_corpus)
    return calls


@pytest.mark.slow
def test_demo_translates_without_pairs(fake_encoders, tmp_path, capsys):
    res = demo.run_demo(n_per_side=N, n_test=N_TEST, n_metric=300, out_dir=tmp_path, progress=False)
    # unpaired halves: the source encoder never sees B's texts except for the oracle's pairs
    assert ("minilm", 0, N) in fake_encoders and ("mpnet", N, N) in fake_encoders
    assert ("mpnet", 0, N) not in fake_encoders
    rows = {r["method"]: r for r in res["translation"]}
    assert rows["isometric (unpaired)"]["pairs used"] == 0
    assert rows["isometric (unpaired)"]["top1"] >= 0.99
    assert rows["procrustes oracle"]["top1"] >= 0.99
    assert rows["identity (zero-pad)"]["top1"] < 0.1
    assert all(r["pool"] == N_TEST for r in rows.values())
    # the diagnostic needs no pairs and ranks the right map above the identity
    assert rows["isometric (unpaired)"]["unpaired diag"] > rows["identity (zero-pad)"]["unpaired diag"]
    assert {m["metric"] for m in res["metrics"]} == set(demo.DEMO_METRICS)
    out = capsys.readouterr().out
    assert "| isometric (unpaired) | 0 |" in out and "candidate pool 300" in out
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["translation"][1]["top1"] == rows["isometric (unpaired)"]["top1"]
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    t = translate.load(tmp_path / "isometric")
    assert type(t).__name__ == "Isometric" and t.W_.shape == (24, 32)


def test_demo_rejects_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="n_per_side"):
        demo.run_demo(n_per_side=5, out_dir=tmp_path)
    with pytest.raises(ValueError, match="n_test"):
        demo.run_demo(n_test=1, out_dir=tmp_path)
