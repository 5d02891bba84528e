import json

import numpy as np
import pytest

from translate.cli import main


@pytest.fixture
def spaces(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 12)) * np.linspace(0.5, 3, 12)
    Q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    Y = X @ Q + 0.01 * rng.standard_normal((600, 12))
    paths = {}
    for name, arr in {"A": X[:500], "B": Y[:500], "At": X[500:], "Bt": Y[500:]}.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], arr.astype(np.float32))
    return paths


def test_fit_eval_round_trip(spaces, tmp_path, capsys):
    model = tmp_path / "model"
    assert main(["fit", "--method", "procrustes", "--source", str(spaces["A"]), "--target", str(spaces["B"]), "-o", str(model)]) == 0
    out_json = tmp_path / "res.json"
    assert main(["eval", "--model", str(model), "--source", str(spaces["At"]), "--target", str(spaces["Bt"]), "--json", str(out_json)]) == 0
    res = json.loads(out_json.read_text())
    assert res["top1"] == 1.0 and res["pool"] == 100
    assert "| Procrustes |" in capsys.readouterr().out


def test_compare_prints_values_and_chance(spaces, tmp_path, capsys):
    out_json = tmp_path / "cmp.json"
    code = main(["compare", str(spaces["A"]), str(spaces["B"]), "--metric", "mutual_knn,cka,procrustes", "--json", str(out_json)])
    assert code == 0
    rows = {r["metric"]: r for r in json.loads(out_json.read_text())}
    assert rows["mutual_knn"]["value"] > 0.9 and rows["mutual_knn"]["chance"] < 0.1
    assert rows["cka"]["value"] > 0.99
    assert "| metric | value | chance |" in capsys.readouterr().out


def test_errors_are_one_line_and_exit_2(spaces, tmp_path, capsys):
    assert main(["compare", str(spaces["A"]), str(tmp_path / "missing.npy")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["compare", str(spaces["A"]), str(spaces["Bt"]), "--metric", "cka"]) == 2
    assert "same number of rows" in capsys.readouterr().err
    bad = tmp_path / "obj.npy"
    np.save(bad, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert main(["compare", str(bad), str(spaces["B"])]) == 2
    assert "not a plain .npy" in capsys.readouterr().err
    assert main(["fit", "--source", str(spaces["A"]), "--target", str(spaces["B"]), "-o", str(tmp_path / "m"), "--param", "nope"]) == 2
    assert "key=value" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "nomodel"), "--source", str(spaces["At"]), "--target", str(spaces["Bt"])]) == 2
    assert "not a saved reptrans artefact" in capsys.readouterr().err
