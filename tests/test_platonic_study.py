"""Tests of scripts/platonic_study.py (issue 20): the pieces that could be wrong --
the CIELAB conversion, the colour-name splitter, the rank-correlation permutation
test, the neighbour-list shortcuts against align's metrics, the WordNet task --
and a tiny synthetic end-to-end run (slow) whose JSON must hold what the docs use.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from synthetic import script_module

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "platonic_study.py"


@pytest.fixture(scope="module")
def ps():
    with script_module("platonic_study") as mod:
        yield mod


# --------------------------------------------------------------------------- CIELAB


@pytest.mark.parametrize("rgb255, lab", [
    ((255, 255, 255), (100.0, 0.0, 0.0)),
    ((0, 0, 0), (0.0, 0.0, 0.0)),
    # published sRGB -> CIELAB (D65) values, e.g. Lindbloom's calculator / colormine
    ((255, 0, 0), (53.2408, 80.0925, 67.2032)),
    ((0, 0, 255), (32.2970, 79.1875, -107.8602)),
    ((0, 128, 0), (46.2274, -51.6985, 49.8968)),
    ((128, 128, 128), (53.5850, 0.0, 0.0)),
])
def test_srgb_to_lab_known_values(ps, rgb255, lab):
    got = ps.srgb_to_lab(np.array(rgb255) / 255.0)
    np.testing.assert_allclose(got, lab, atol=2e-3)


def test_srgb_to_lab_is_vectorised_and_checks_range(ps):
    rgb = np.random.default_rng(0).random((5, 3))
    np.testing.assert_allclose(ps.srgb_to_lab(rgb), np.stack([ps.srgb_to_lab(r) for r in rgb]))
    # the dark end uses the linear segment of f: a very dark grey still has a = b = 0 and L > 0
    dark = ps.srgb_to_lab([0.01, 0.01, 0.01])
    assert 0 < dark[0] < 2 and abs(dark[1]) < 1e-9 and abs(dark[2]) < 1e-9
    with pytest.raises(ValueError):
        ps.srgb_to_lab([1.2, 0, 0])


# --------------------------------------------------------------------------- name splitting


RANK = {"the": 0, "light": 5, "lights": 50, "late": 8, "slate": 900, "blue": 40, "dark": 30, "gray": 60,
        "golden": 300, "rod": 700, "goldenrod": 5000, "burly": 20000, "wood": 400,
        "sky": 200, "skyblue": 250000, "sea": 100, "green": 35, "gains": 700, "boro": 900}


@pytest.mark.parametrize("name, words", [
    ("darkslateblue", "dark slate blue"),
    ("lightslategray", "light slate gray"),  # the modifier first: not "lights late gray"
    ("goldenrod", "goldenrod"),  # a frequent enough compound stays whole
    ("burlywood", "burly wood"),  # a compound missing from the vocabulary splits
    ("skyblue", "sky blue"),  # a rare compound of frequent words splits
    ("darkseagreen", "dark sea green"),
    ("gainsboro", "gainsboro"),  # a proper-noun colour, kept whole
    ("blue", "blue"),
    ("qqqq", "qqqq"),  # nothing known: left as it is
])
def test_split_name(ps, name, words):
    assert ps.split_name(name, RANK) == words


def test_colour_names_cover_css4(ps):
    rank = {w: i for i, w in enumerate(["dark", "slate", "blue", "white", "red"])}
    cols = ps.colour_names(rank)
    assert len(cols) == 148 and len({c["name"] for c in cols}) == 148
    white = next(c for c in cols if c["name"] == "white")
    np.testing.assert_allclose(white["lab"], [100, 0, 0], atol=1e-9)
    assert next(c for c in cols if c["name"] == "darkslateblue")["words"] == "dark slate blue"


# --------------------------------------------------------------------------- statistics


def test_rank_test_hand_case(ps):
    from scipy.stats import spearmanr

    comp = {f"m{i}": float(i) for i in range(7)}
    names = list(comp)
    pairs = [(a, b, min(comp[a], comp[b]) + 0.01 * j) for j, (a, b) in
             enumerate((a, b) for i, a in enumerate(names) for b in names[i + 1:])]
    r = ps.rank_test(comp, pairs, n_perm=2000, seed=0)
    x = [min(comp[a], comp[b]) for a, b, _ in pairs]
    assert r["rho"] == pytest.approx(spearmanr(x, [v for *_, v in pairs]).statistic)
    assert r["rho"] > 0.9 and r["p_perm"] < 0.01 and r["n_pairs"] == 21 and r["n_models"] == 7
    assert abs(r["null_mean"]) < 0.1 and r["null_q95"] < r["rho"]
    # reversed alignment: strongly negative, and the one-sided p is large
    rev = ps.rank_test(comp, [(a, b, -v) for a, b, v in pairs], n_perm=2000, seed=0)
    assert rev["rho"] < -0.9 and rev["p_perm"] > 0.9
    # unrelated alignment: not significant for most seeds of the values
    rng = np.random.default_rng(1)
    ps_ = [ps.rank_test(comp, [(a, b, float(rng.random())) for a, b, _ in pairs], 500, seed=s)["p_perm"]
           for s in range(20)]
    assert np.mean(np.array(ps_) < 0.05) <= 0.2


def test_rank_test_stratified_removes_a_confound(ps):
    """Alignment that follows a group (a network's width) and competence that follows the
    same group: significant when shuffled freely, not when shuffled within the groups."""
    rng = np.random.default_rng(5)
    models = [f"g{g}m{i}" for g in range(3) for i in range(5)]
    group = {m: m[:2] for m in models}
    comp = {m: int(m[1]) + 0.1 * rng.random() for m in models}  # within a group: noise unrelated to alignment
    pairs = [(a, b, min(int(a[1]), int(b[1])) + 0.01 * rng.random())
             for i, a in enumerate(models) for b in models[i + 1:]]
    free = ps.rank_test(comp, pairs, 1000, seed=0)
    strat = ps.rank_test(comp, pairs, 1000, seed=0, strata=group)
    assert free["rho"] == strat["rho"] and free["rho"] > 0.5
    assert free["p_perm"] < 0.01 and strat["p_perm"] > 0.05 and strat["stratified"]
    # the stratified shuffles keep each model's competence inside its group
    assert strat["null_mean"] > 0.5


def test_rank_test_null_is_the_spearman_of_shuffled_competences(ps):
    """The vectorised null equals scipy's Spearman recomputed for each shuffle."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(3)
    comp = {f"m{i}": float(rng.integers(0, 4)) for i in range(6)}  # ties on purpose
    names = list(comp)
    pairs = [(a, b, float(rng.random())) for i, a in enumerate(names) for b in names[i + 1:]]
    r = ps.rank_test(comp, pairs, n_perm=300, seed=7, combine="mean")
    gen = np.random.default_rng(7)
    models = sorted(names)
    null = []
    for _ in range(300):
        p = gen.permutation(len(models))
        c = {m: comp[models[p[i]]] for i, m in enumerate(models)}
        null.append(spearmanr([(c[a] + c[b]) / 2 for a, b, _ in pairs], [v for *_, v in pairs]).statistic)
    null = np.nan_to_num(np.array(null))
    assert r["null_mean"] == pytest.approx(null.mean(), abs=1e-9)
    assert r["p_perm"] == pytest.approx((1 + np.sum(null >= r["rho"] - 1e-12)) / 301)


def test_neighbour_list_shortcuts_match_align(ps):
    import align

    rng = np.random.default_rng(0)
    Z = rng.standard_normal((300, 6))
    X = Z @ rng.standard_normal((6, 20)) + 0.3 * rng.standard_normal((300, 20))
    Y = Z @ rng.standard_normal((6, 12)) + 0.3 * rng.standard_normal((300, 12))
    lx, ly = ps.cosine_lists(X, 10), ps.cosine_lists(Y, 10)
    assert ps.list_overlap(lx, ly) == pytest.approx(align.mutual_knn(X, Y, k=10))
    perm = rng.permutation(300)
    assert ps.list_overlap(lx, ps.shuffled_lists(ly, perm)) == pytest.approx(align.mutual_knn(X, Y[perm], k=10))
    assert align.mutual_knn(X, Y, k=10) > 3 * align.mutual_knn(X, Y[perm], k=10)


def test_euclidean_lists(ps):
    from scipy.spatial.distance import cdist

    P = np.random.default_rng(2).standard_normal((60, 3)) * [50, 20, 5] + [50, 0, 0]
    D = cdist(P, P)
    np.fill_diagonal(D, np.inf)
    want = np.argsort(D, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(ps.euclidean_lists(P, 5), want)


def test_classical_mds_recovers_a_planar_configuration(ps):
    from scipy.spatial.distance import pdist, squareform

    P = np.random.default_rng(4).standard_normal((30, 2)) * [3, 1]
    M = ps.classical_mds(squareform(pdist(P)) ** 2)
    np.testing.assert_allclose(pdist(M), pdist(P), atol=1e-8)
    # and rotate_onto undoes a rotation + reflection + scale
    R = np.array([[0.6, 0.8], [0.8, -0.6]])
    np.testing.assert_allclose(ps.rotate_onto(3 * P @ R, P), P - P.mean(0), atol=1e-8)


# --------------------------------------------------------------------------- WordNet task


def test_parse_wordnet_and_competence_items(ps, tmp_path):
    lines = {
        "data.noun": ["  1 licence line", "00001 03 n 02 dog 0 domestic_dog 0 000 | a domesticated carnivore; \"the dog barked\"",
                      "00002 03 n 01 cat 0 000 | a small feline   kept as a pet", "00003 03 n 01 bank 0 000 | a sloping land",
                      "00004 03 n 01 slope 0 000 | a sloping land"],
        "data.verb": ["00005 29 v 01 run 0 000 | move fast by using one's feet"],
        "data.adj": ["00006 00 s 02 outback(a) 0 remote 0 000 | inaccessible and sparsely populated;"],
        "data.adv": [],
    }
    for f, ls in lines.items():
        (tmp_path / f).write_text("\n".join(ls) + "\n")
    syn = ps.parse_wordnet(tmp_path)
    assert [s["lemmas"] for s in syn] == [["dog", "domestic dog"], ["cat"], ["bank"], ["slope"], ["run"],
                                          ["outback", "remote"]]
    assert syn[0]["definition"] == "a domesticated carnivore" and syn[1]["definition"] == "a small feline kept as a pet"
    assert syn[5]["definition"] == "inaccessible and sparsely populated"
    texts = ["the dog barked", "a sloping land", "a small feline kept as a pet", "a domesticated carnivore",
             "inaccessible and sparsely populated"]
    task = ps.competence_items(texts, syn, max_queries=10, seed=0)
    # "a sloping land" belongs to two synsets: no single answer, not a query; examples are not queries
    assert task["query_rows"] == [2, 3, 4]
    assert task["candidates"] == ["cat", "dog", "outback"]
    assert [task["candidates"][t] for t in task["target"]] == ["cat", "dog", "outback"]
    assert len(ps.competence_items(texts, syn, max_queries=2, seed=0)["query_rows"]) == 2


def test_retrieval_scores_hand_case(ps):
    C = np.eye(3)
    Q = np.array([[1.0, 0.1, 0], [0.2, 0, 1.0], [0, 1.0, 0.5], [0, 0, 0]])
    r = ps.retrieval_scores(Q, C, [0, 1, 1, 2])
    # ranks: 1, 3 (candidates 2 and 0 beat 1), 1, 1 (a zero query ties everywhere: ties count in its favour)
    assert r["top1"] == pytest.approx(0.75) and r["top10"] == 1.0
    assert r["mrr"] == pytest.approx((1 + 1 / 3 + 1 + 1) / 4)


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_quick_end_to_end(ps, tmp_path):
    """The whole pipeline on synthetic encoders (a minute on a loaded 2-core box): the
    JSON holds every field the docs page reads, and the page and figures are written."""
    out = tmp_path / "q.json"
    md = tmp_path / "docs" / "platonic.md"
    ps.main(["--quick", "--json", str(out), "--md", str(md), "--img", str(tmp_path / "docs" / "img")])
    res = json.loads(out.read_text())
    for part in ("language", "vision"):
        t = res[part]["tests"]
        for m in ("mknn", "cknna", "cka"):
            for s in ("all", "cross"):
                for c in ("min", "mean"):
                    assert {"rho", "p_perm", "p_naive", "null_mean", "null_q95", "n_pairs"} <= set(t[f"{m} {s} {c}"])
            assert t[f"{m} cross min stratified"]["stratified"]
        assert set(t["per_model_cross_mknn"]) == set(res[part]["models"])
        for r in res[part]["pairs"].values():
            for m in ("mknn", "cknna", "cka"):
                assert 0 <= r[f"{m}_chance"] <= 1 or m != "mknn"
                assert m in r
    assert len(res["vision"]["models"]) == 4 and all(0 <= a <= 1 for a in res["vision"]["competence"].values())
    assert {"top1", "top10", "mrr"} <= set(next(iter(res["language"]["competence"].values())))
    sc = res["colour"]["scores"]
    assert len(sc) == 12 and all(sc[f"{e} single"]["n"] < sc[f"{e} name"]["n"] for e in ps.SYNTH)
    for r in sc.values():
        assert r["rsa_fast_check"] < 1e-9  # the vectorised shuffled RSA agrees with align.rsa
        for m in ("mknn", "cka", "rsa"):
            assert {m, f"{m}_chance", f"{m}_p", f"{m}_null_q95"} <= set(r)
    assert set(res["colour"]["mds"]) == {f"{e} {f}" for e in ["CIELAB", *ps.SYNTH] for f in ("name", "phrase", "single")}
    text = md.read_text()
    assert "## Verdicts" in text and "## 2. Colour" in text
    for v in ps.verdicts(res).values():
        assert v["verdict"] in ("holds", "partly", "does not hold")
    for f in ("platonic_language.png", "platonic_vision.png", "platonic_colour.png"):
        assert (tmp_path / "docs" / "img" / f).stat().st_size > 10_000
    # a rerun finds everything done and recomputes nothing
    before = out.read_text()
    ps.main(["--quick", "--json", str(out), "--parts", "colour,vision"])
    assert out.read_text() == before


def test_docs_page_is_written_from_the_committed_json(ps, tmp_path):
    """docs/platonic.md is exactly what --md writes from docs/platonic.json."""
    src = ROOT / "docs" / "platonic.json"
    if not src.is_file():
        pytest.skip("docs/platonic.json not committed yet")
    res = json.loads(src.read_text())
    md = tmp_path / "docs" / "platonic.md"
    ps.write_markdown(res, md, tmp_path / "docs" / "img")
    assert md.read_text() == (ROOT / "docs" / "platonic.md").read_text()
