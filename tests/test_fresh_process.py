"""A saved translator (or aligner) loads in a NEW process.

Issue: "a saved translator could not be loaded in a new process": ``translate.load``
relied on the translator's class having been imported already. ``translate.base.KINDS``
maps each kind to its module and ``load`` imports them. Here each saveable class is
fitted and saved in the test process, then loaded in a fresh interpreter
(``subprocess.run([sys.executable, ...])``) that has not imported that class's module:

- through the API (``translate.load``; ``align.ContrastiveAligner.load``): the outputs
  written to a .npy equal those of the original model, bit for bit;
- through the CLI (``python -m translate.cli eval``): exit 0 and the scores the original
  model gets;
- a tampered or truncated artefact (flipped bytes in weights.safetensors, truncated
  weights, an edited config.json) is refused in the fresh process: a ValueError that
  says what is wrong, and exit 2 with one ``error:`` line from the CLI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import align
import translate
from align.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from synthetic import ISO_FAST, V2V_FAST, clustered_spaces, torch_threads
from translate.base import KINDS

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


#: every saveable translator: (make, paired rows?)
TRANSLATORS = {
    "Procrustes": (lambda: translate.Procrustes(), True),
    "Linear": (lambda: translate.Linear(alpha=0.1), True),
    "Isometric": (lambda: translate.Isometric(seed=1, **ISO_FAST), False),
    "Vec2Vec": (lambda: translate.Vec2Vec(seed=1, **V2V_FAST), False),
    "CycleGAN": (lambda: translate.CycleGAN(seed=1, **V2V_FAST), False),
}

# what the fresh process runs: load, transform, and say which translate modules it had
# imported before loading
LOAD = """
import sys
import numpy as np
import translate
model, x, out = sys.argv[1:4]
before = sorted(m for m in sys.modules if m.startswith("translate."))
t = translate.load(model)
np.save(out, t.transform(np.load(x)))
print(type(t).__name__)
print(" ".join(before))
"""

# load each damaged artefact; one JSON line per artefact: the exception's classes and message
REFUSE = """
import json, sys
import translate
for path in sys.argv[1:]:
    try:
        translate.load(path)
        print(json.dumps({"path": path, "loaded": True}))
    except Exception as exc:
        print(json.dumps({"path": path, "types": [c.__name__ for c in type(exc).__mro__], "message": str(exc)}))
"""


def run_python(code: str, *args, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def reptrans(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "translate.cli", *map(str, args)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each translator fitted and saved here; the held-out arrays and its outputs on them."""
    import warnings

    root = tmp_path_factory.mktemp("fresh")
    data = clustered_spaces(n_test=60)
    np.save(root / "X_test.npy", data["X_test"])
    np.save(root / "Y_test.npy", data["Y_test"])
    models = {}
    for name, (make, paired) in TRANSLATORS.items():
        with warnings.catch_warnings(), torch_threads(1):
            warnings.simplefilter("ignore", RuntimeWarning)  # Isometric on tiny data: restarts disagree
            t = make().fit(data["X"], data["Y_paired" if paired else "Y_unpaired"])
        t.save(root / name)
        models[name] = t.transform(data["X_test"])
    return {"root": root, "outputs": models, **data}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TRANSLATORS))
def test_api_load_in_a_fresh_process(saved, name, tmp_path):
    root = saved["root"]
    r = run_python(LOAD, root / name, root / "X_test.npy", tmp_path / "out.npy")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    kind, before = lines[0], (lines[1] if len(lines) > 1 else "")
    assert kind == name
    module = KINDS[name]
    assert not any(m == module or m.startswith(module + ".") for m in before.split()), \
        f"the fresh process had imported {module} before load: not a test of the fix"
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), saved["outputs"][name])


def test_every_kind_is_registered_by_load_in_a_fresh_process(saved):
    """load imports every kind's module that this version has (KINDS may name one still to come)."""
    present = [kind for kind, module in KINDS.items() if _has_module(module)]
    assert {"Procrustes", "Linear", "Isometric", "Vec2Vec", "CycleGAN"} <= set(present)
    code = ("import sys, translate\nfrom translate.base import REGISTRY\ntranslate.load(sys.argv[1])\n"
            "print(' '.join(sorted(REGISTRY)))")
    r = run_python(code, saved["root"] / "Procrustes")
    assert r.returncode == 0, r.stderr[-3000:]
    assert set(present) <= set(r.stdout.split())


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


# a plain-numpy kind and a torch kind in the quick suite; the rest in the full one (make test)
CLI_CASES = [n if n in ("Procrustes", "Vec2Vec") else pytest.param(n, marks=pytest.mark.slow) for n in TRANSLATORS]


@pytest.mark.slow
@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_eval_in_a_fresh_process(saved, name, tmp_path):
    root = saved["root"]
    r = reptrans("eval", "--model", root / name, "--source", root / "X_test.npy", "--target", root / "Y_test.npy",
                 "--json", tmp_path / "res.json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"| {name} |" in r.stdout
    got = json.loads((tmp_path / "res.json").read_text())
    want = translate.evaluate(saved["outputs"][name], saved["Y_test"])
    assert got.keys() == want.keys()
    assert got == pytest.approx(want)


# -- damaged artefacts --------------------------------------------------------


def _flip_tensor_bytes(path: Path) -> None:
    w = path / WEIGHTS_NAME
    raw = bytearray(w.read_bytes())
    raw[-8:] = bytes(b ^ 0xFF for b in raw[-8:])  # inside the last tensor's data: still valid safetensors
    w.write_bytes(bytes(raw))


def _truncate(path: Path) -> None:
    w = path / WEIGHTS_NAME
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])


def _edit_config(fn):
    def damage(path: Path) -> None:
        meta = json.loads((path / CONFIG_NAME).read_text())
        fn(meta)
        (path / CONFIG_NAME).write_text(json.dumps(meta))

    return damage


DAMAGE = {
    "flipped-bytes": (_flip_tensor_bytes, r"does not match the sha256 digest"),
    "truncated": (_truncate, r"not a valid safetensors file.*truncated"),
    "config-param": (_edit_config(lambda m: m["config"]["params"].update(evil=1)), r"parameters .*do not fit"),
    "config-kind": (_edit_config(lambda m: m.update(kind="Pickle")), r"holds a 'Pickle'"),
    "config-shape": (_edit_config(lambda m: m["tensors"]["W_"].update(shape=[3, 3])), r"config says"),
}


@pytest.fixture(scope="module")
def damaged(saved, tmp_path_factory):
    """Copies of the saved Procrustes and Vec2Vec models, each damaged one way."""
    root = tmp_path_factory.mktemp("damaged")
    out = {}
    for base in ("Procrustes", "Vec2Vec"):
        for case, (damage, _) in DAMAGE.items():
            if case == "config-shape" and base != "Procrustes":
                continue  # W_ is Procrustes' tensor
            path = root / f"{base}-{case}"
            shutil.copytree(saved["root"] / base, path)
            damage(path)
            out[(base, case)] = path
    return out


def test_damaged_artefacts_refused_in_a_fresh_process(damaged):
    r = run_python(REFUSE, *damaged.values())
    assert r.returncode == 0, r.stderr[-3000:]
    results = {Path(rec["path"]).name: rec for rec in map(json.loads, r.stdout.splitlines())}
    assert len(results) == len(damaged)
    for (base, case), path in damaged.items():
        rec = results[path.name]
        assert not rec.get("loaded"), f"{base} {case}: a damaged artefact loaded"
        assert "ValueError" in rec["types"], (base, case, rec)
        assert re.search(DAMAGE[case][1], rec["message"]), (base, case, rec["message"])


@pytest.mark.parametrize("case", ["flipped-bytes", "truncated", "config-param"])
def test_cli_refuses_damaged_artefacts_with_exit_2(saved, damaged, case):
    root = saved["root"]
    r = reptrans("eval", "--model", damaged[("Procrustes", case)], "--source", root / "X_test.npy",
                 "--target", root / "Y_test.npy")
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert len(err.splitlines()) == 1 and re.match(r"reptrans eval: error: ", err), err
    assert re.search(DAMAGE[case][1], err), err
    assert "Traceback" not in r.stderr


# -- the contrastive aligner --------------------------------------------------


ALIGNER = """
import sys
import numpy as np
from align import ContrastiveAligner
model, x, y, out_a, out_b, damaged = sys.argv[1:7]
a = ContrastiveAligner.load(model)
np.save(out_a, a.transform_a(np.load(x)))
np.save(out_b, a.transform_b(np.load(y)))
print(type(a).__name__)
try:
    ContrastiveAligner.load(damaged)
except ValueError as exc:
    print('refused:', exc)
"""


@pytest.mark.slow
def test_contrastive_aligner_loads_in_a_fresh_process(saved, tmp_path):
    pytest.importorskip("torch")
    X_test, Y_test = saved["X_test"], saved["Y_test"]
    a = align.ContrastiveAligner(dim=8, epochs=2, batch_size=64, hidden=16, seed=1, progress=False)
    with torch_threads(1):
        a.fit(saved["X"], saved["Y_paired"])
    a.save(tmp_path / "a")
    # damaged in the fresh process too: a copy with flipped bytes, loaded after the intact one
    shutil.copytree(tmp_path / "a", tmp_path / "damaged")
    _flip_tensor_bytes(tmp_path / "damaged")
    root = saved["root"]
    r = run_python(ALIGNER, tmp_path / "a", root / "X_test.npy", root / "Y_test.npy", tmp_path / "za.npy",
                   tmp_path / "zb.npy", tmp_path / "damaged")
    assert r.returncode == 0, r.stderr[-3000:]
    name, refused = r.stdout.strip().split("\n", 1)
    assert name == "ContrastiveAligner"
    np.testing.assert_array_equal(np.load(tmp_path / "za.npy"), a.transform_a(X_test))
    np.testing.assert_array_equal(np.load(tmp_path / "zb.npy"), a.transform_b(Y_test))
    assert refused.startswith("refused:") and "sha256" in refused, refused
