"""scripts/translation_study.py: the known-pairs table says what each fit kept and what
confirmed it, from the JSON records alone."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import translation_study as T  # noqa: E402


def _record(restarts, agreed, chosen, found=None, n=500):
    return {"part": "pairs", "key": {"source": "a", "target": "b", "n": n, "pairs": 5, "oracle": 0.8},
            "top1": 0.4, "foscttm": 0.01, "wall_s": 12.3, "restarts": restarts, "agreed": agreed,
            "chosen": chosen, "agreement": [0.31] + [None] * (restarts - 1), "pairs_found": found}


def test_pairs_table_kept_and_confirmed():
    rows = T.pairs_table([
        _record(1, True, 0),                          # the pairs' map, confirmed by its checks
        _record(4, False, 0, [None, 0, 1, 0]),        # unconfirmed: the pairs' map kept, flagged
        _record(4, True, 3, [None, 0, 1, 4]),         # the search's map, confirmed by the pairs
        {**_record(3, True, 2), "key": {"source": "c", "target": "d", "n": 9, "pairs": 5, "oracle": 0.8}},
        {**_record(1, True, 0), "agreement": [0.75]},  # the row halves agree: no held-out pairs needed
    ]).splitlines()
    assert "| yes (row halves 0.75) | pairs' map |" in rows[6]
    assert len(rows) == 7 and rows[0].startswith("| source → target |")
    assert "| yes (row halves 0.31; held-out pairs) | pairs' map |" in rows[2]
    assert "| no (row halves 0.31) | pairs' map |" in rows[3]
    assert "| yes (search: 4 of 5 pairs found) | search |" in rows[4]
    assert "| yes (search) | search |" in rows[5] and rows[5].startswith("| c → d | 9 | 5 | 0.400 | 0.50 |")


def test_basin_probe_on_a_known_rotation(monkeypatch, tmp_path):
    """The ``basin`` part on Y = X' Q: the oracle's map is Q (top-1 1.0), a start mixed from it and a random
    rotation is a little right along every principal direction alike, and each start reports its trajectories."""
    import numpy as np

    rng = np.random.default_rng(0)
    n, d = 300, 64
    Z = rng.standard_normal((2 * n + 200, d)) * np.geomspace(1.0, 0.2, d)
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    A, Zb, At = Z[:n], Z[n:2 * n], Z[2 * n:]
    monkeypatch.setattr(T, "pairs_data", lambda s, t, n_, m: (A, Zb @ Q, At, At @ Q, np.zeros((0, 2), int)))
    monkeypatch.setattr(T, "_emb", lambda enc, start, n_: Zb)  # the source's view of the target rows
    out = T.basin("a", "b", n)
    assert out["oracle"] == 1.0
    assert sum(k.startswith("gromov") for k in out) == 2
    for name, (low, high) in (("t=0.3", (0.15, 0.35)), ("t=0.1", (0.03, 0.15))):
        rec = out[name]
        assert len(rec["csls"]) == 10 and len(rec["entropic"]) == 8
        start = rec["cos_by_16_directions"]["start"]
        assert len(start) == d // 16 and low < min(start) and max(start) < high
    assert all(a > b for a, b in zip(out["t=0.3"]["cos_by_16_directions"]["start"],
                                     out["t=0.1"]["cos_by_16_directions"]["start"]))
    T.plot_basin([{"part": "basin", "key": {"source": "a", "target": "b", "n": n}, **out}], tmp_path / "basin.png")
    assert (tmp_path / "basin.png").read_bytes()[:4] == b"\x89PNG"


def test_seed_mean_reports_every_subset(monkeypatch):
    """The ``seedmean`` part: one top-1 per fit, per pair and for all three maps, each a valid top-1."""
    import numpy as np

    rng = np.random.default_rng(1)
    n, d = 400, 16
    Z = rng.standard_normal((2 * n + 200, d)) * np.geomspace(1.0, 0.1, d)
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    A, Zb, At = Z[:n], Z[n:2 * n], Z[2 * n:]
    monkeypatch.setattr(T, "real_data", lambda s, t, n_: (A, Zb @ Q, At, At @ Q))
    out = T.seed_mean("a", "b", n, seeds=(0, 1, 2))
    assert out["seeds"] == [0, 1, 2] and len(out["top1"]) == len(out["confirmed"]) == len(out["wall_s"]) == 3
    assert len(out["mean of 2"]) == 3 and len(out["mean of 3"]) == 1
    assert all(0.0 <= t <= 1.0 for t in out["top1"] + out["mean of 2"] + out["mean of 3"])


def test_shifted_rows_draw_each_side_from_its_topic_mix(monkeypatch):
    """The ``shift`` layout: the source favours topic group 1 by the imbalance, the target group 2; "disjoint"
    keeps each side to its own group; rows are distinct, sorted, inside their half, and fixed by the seed."""
    import numpy as np

    half = 2000
    group1 = np.arange(2 * half) % 2 == 0  # every other text is in group 1
    monkeypatch.setattr(T, "HALF", half)
    monkeypatch.setattr(T, "_topic_group", lambda: group1)
    # drawn without replacement, the favoured group's share falls a little under r / (r + 1) (0.73-0.77 at r = 4)
    for imbalance, lo, hi in ((1, 0.42, 0.58), (4, 0.68, 0.8)):
        ia, ib = T.shifted_rows(800, imbalance, seed=3)
        assert len(set(ia)) == len(set(ib)) == 800 and np.all(np.diff(ia) > 0) and np.all(np.diff(ib) > 0)
        assert ia.max() < half and ib.max() < half
        assert lo < group1[ia].mean() < hi and lo < 1 - group1[half + ib].mean() < hi
    ia, ib = T.shifted_rows(800, "disjoint", seed=3)
    assert group1[ia].all() and not group1[half + ib].any()
    assert all(np.array_equal(a, b) for a, b in zip(T.shifted_rows(800, 2, seed=5), T.shifted_rows(800, 2, seed=5)))


def test_word_corpus_is_one_fixed_list_written_once(monkeypatch, tmp_path):
    """The ``words`` part's corpus: 40000 distinct alphabetic words of 3+ letters from GloVe's vocabulary, the same
    list on every machine (its sha256 pinned), written once into the cache folder and reused."""
    import hashlib

    monkeypatch.setenv("REPTRANS_CACHE", str(tmp_path))
    path = T.word_corpus()
    assert path.parent.parent == tmp_path
    words = path.read_text().splitlines()
    assert len(words) == len(set(words)) == T.WORDS
    assert all(w.isascii() and w.isalpha() and len(w) >= 3 for w in words)
    assert "the" not in words and "and" not in words  # the 200 most frequent tokens are left out
    assert hashlib.sha256(path.read_bytes()).hexdigest() == \
        "f1eac4843be605b96d0807e6f61b61c3a6ad2a941966d09d8493cc6de0efdb70"
    stamp = path.stat().st_mtime_ns
    assert T.word_corpus() == path and path.stat().st_mtime_ns == stamp
