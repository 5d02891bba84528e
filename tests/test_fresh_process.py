"""A saved translator (or aligner) loads in a NEW process.

Issue: "a saved translator could not be loaded in a new process": ``translate.load``
relied on the translator's class having been imported already. ``translate.base.KINDS``
maps each kind to its module and ``load`` imports them. Here each saveable class is
fitted and saved in the test process, then loaded in a fresh interpreter
(``subprocess.run([sys.executable, ...])``) that has not imported that class's module:

- through the API (``translate.load``; ``align.ContrastiveAligner.load``): the outputs
  written to a .npy equal those of the original model, bit for bit;
- through the CLI (``reptrans eval``, ``translate.cli.main``): exit 0 and the scores the original
  model gets;
- a tampered or truncated artefact (flipped bytes in weights.safetensors, truncated
  weights, an edited config.json) is refused in the fresh process: a ValueError that
  says what is wrong, and exit 2 with one ``error:`` line from the CLI.

Each fresh interpreter costs seconds (most of it importing torch), so the loads share
few of them: ONE fresh process loads the aligner, then records which ``translate``
modules it has imported, then loads every saved translator and every damaged artefact
(``fresh_api``); every ``reptrans eval`` runs through ``translate.cli.main`` in one more
(``fresh_cli``; ``python -m translate.cli`` as a process is run by test_cli.py's Ctrl-C
test). ``translate.load`` imports every kind's module on each call (``_import_kinds``),
so the loads after the first take the same path as the first.
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
    # n_seeds=2: a mean of two seeds' maps saves and loads like one fit's (its parameter in the config)
    "Isometric": (lambda: translate.Isometric(seed=1, n_seeds=2, **ISO_FAST), False),
    "Vec2Vec": (lambda: translate.Vec2Vec(seed=1, **V2V_FAST), False),
    "CycleGAN": (lambda: translate.CycleGAN(seed=1, **V2V_FAST), False),
}

# what the fresh API process runs (argv[1]: a JSON job): the contrastive aligner (intact, then
# damaged), the translate modules imported so far, then every translator loaded, its
# outputs saved, the registry after the first load, and every damaged artefact refused
API = """
import json, sys
import numpy as np
import translate
job = json.loads(sys.argv[1])
out = {}
if job.get("aligner"):
    from align import ContrastiveAligner
    a = job["aligner"]
    m = ContrastiveAligner.load(a["model"])
    np.save(a["out_a"], m.transform_a(np.load(a["x"])))
    np.save(a["out_b"], m.transform_b(np.load(a["y"])))
    out["aligner"] = {"kind": type(m).__name__}
    try:
        ContrastiveAligner.load(a["damaged"])
    except ValueError as exc:
        out["aligner"]["refused"] = str(exc)
out["before"] = sorted(m for m in sys.modules if m.startswith("translate."))
from translate.base import REGISTRY
out["loads"] = {}
for name, (model, x, dst) in job["load"].items():
    t = translate.load(model)
    np.save(dst, t.transform(np.load(x)))
    out["loads"][name] = type(t).__name__
    out.setdefault("registry", sorted(REGISTRY))  # after the first load
out["refused"] = []
for path in job["damaged"]:
    try:
        translate.load(path)
        out["refused"].append({"path": path, "loaded": True})
    except Exception as exc:
        out["refused"].append({"path": path, "types": [c.__name__ for c in type(exc).__mro__], "message": str(exc)})
print(json.dumps(out))
"""

# the CLI, in-process in a fresh interpreter: one JSON line per command (argv[1]: a JSON list of argvs)
CLI_MANY = """
import contextlib, io, json, sys, traceback
from translate.cli import main
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            traceback.print_exc()
            code = None
    print(json.dumps({"argv": argv, "returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}))
"""


def run_python(code: str, *args, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=REPO, env=ENV,
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


@pytest.fixture(scope="module")
def aligner(saved, tmp_path_factory):
    """A small ContrastiveAligner fitted and saved here, and a copy with flipped bytes."""
    tmp = tmp_path_factory.mktemp("aligner")
    a = align.ContrastiveAligner(dim=8, epochs=2, batch_size=64, hidden=16, seed=1, progress=False)
    with torch_threads(1):
        a.fit(saved["X"], saved["Y_paired"])
    a.save(tmp / "a")
    # damaged in the fresh process too: a copy with flipped bytes, loaded after the intact one
    shutil.copytree(tmp / "a", tmp / "damaged")
    _flip_tensor_bytes(tmp / "damaged")
    return {"model": a, "dir": tmp}


@pytest.fixture(scope="module")
def fresh_api(saved, damaged, aligner, tmp_path_factory):
    """The API process (``API``): what it printed, and the folder of its outputs."""
    root, out = saved["root"], tmp_path_factory.mktemp("fresh_api")
    tmp = aligner["dir"]
    job = {"aligner": {"model": str(tmp / "a"), "x": str(root / "X_test.npy"), "y": str(root / "Y_test.npy"),
                       "out_a": str(out / "za.npy"), "out_b": str(out / "zb.npy"), "damaged": str(tmp / "damaged")},
           "load": {name: [str(root / name), str(root / "X_test.npy"), str(out / f"{name}.npy")] for name in TRANSLATORS},
           "damaged": [str(p) for p in damaged.values()]}
    r = run_python(API, json.dumps(job))
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1]), out


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TRANSLATORS))
def test_api_load_in_a_fresh_process(saved, fresh_api, name):
    res, out = fresh_api
    assert res["loads"][name] == name
    module = KINDS[name]
    assert not any(m == module or m.startswith(module + ".") for m in res["before"]), \
        f"the fresh process had imported {module} before load: not a test of the fix"
    np.testing.assert_array_equal(np.load(out / f"{name}.npy"), saved["outputs"][name])


def test_every_kind_is_registered_by_load_in_a_fresh_process(fresh_api):
    """load imports every kind's module that this version has (KINDS may name one still to come)."""
    present = [kind for kind, module in KINDS.items() if _has_module(module)]
    assert {"Procrustes", "Linear", "Isometric", "Vec2Vec", "CycleGAN"} <= set(present)
    res, _ = fresh_api
    assert next(iter(res["loads"])) == "Procrustes"  # the registry as the first load left it
    assert set(present) <= set(res["registry"])


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


@pytest.fixture(scope="module")
def fresh_cli(saved, damaged, tmp_path_factory):
    """``reptrans eval`` of every saved translator and of the damaged Procrustes copies,
    through ``translate.cli.main`` in one fresh process (``CLI_MANY``), the first command
    before anything else there: ({key: CompletedProcess}, folder of the --json files)."""
    root, out = saved["root"], tmp_path_factory.mktemp("fresh_cli")

    def argv(model, json_name=None):
        a = ["eval", "--model", str(model), "--source", str(root / "X_test.npy"), "--target", str(root / "Y_test.npy")]
        return a + (["--json", str(out / json_name)] if json_name else [])

    jobs = {name: argv(root / name, f"{name}.json") for name in TRANSLATORS}
    jobs.update({case: argv(damaged[("Procrustes", case)]) for case in CLI_REFUSED})
    results = {}
    r = run_python(CLI_MANY, json.dumps(list(jobs.values())))
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [rec["argv"] for rec in lines] == list(jobs.values())
    for key, rec in zip(jobs, lines):
        results[key] = subprocess.CompletedProcess(rec["argv"], rec["returncode"], rec["stdout"], rec["stderr"])
    return results, out


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TRANSLATORS))
def test_cli_eval_in_a_fresh_process(saved, fresh_cli, name):
    results, out = fresh_cli
    r = results[name]
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"| {name} |" in r.stdout
    got = json.loads((out / f"{name}.json").read_text())
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


def test_damaged_artefacts_refused_in_a_fresh_process(damaged, fresh_api):
    results = {Path(rec["path"]).name: rec for rec in fresh_api[0]["refused"]}
    assert len(results) == len(damaged)
    for (base, case), path in damaged.items():
        rec = results[path.name]
        assert not rec.get("loaded"), f"{base} {case}: a damaged artefact loaded"
        assert "ValueError" in rec["types"], (base, case, rec)
        assert re.search(DAMAGE[case][1], rec["message"]), (base, case, rec["message"])


CLI_REFUSED = ["flipped-bytes", "truncated", "config-param"]


@pytest.mark.parametrize("case", CLI_REFUSED)
def test_cli_refuses_damaged_artefacts_with_exit_2(fresh_cli, case):
    r = fresh_cli[0][case]
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert len(err.splitlines()) == 1 and re.match(r"reptrans eval: error: ", err), err
    assert re.search(DAMAGE[case][1], err), err
    assert "Traceback" not in r.stderr


# -- the contrastive aligner --------------------------------------------------


@pytest.mark.slow
def test_contrastive_aligner_loads_in_a_fresh_process(saved, aligner, fresh_api):
    pytest.importorskip("torch")
    X_test, Y_test = saved["X_test"], saved["Y_test"]
    a = aligner["model"]
    res, out = fresh_api
    assert res["aligner"]["kind"] == "ContrastiveAligner"
    np.testing.assert_array_equal(np.load(out / "za.npy"), a.transform_a(X_test))
    np.testing.assert_array_equal(np.load(out / "zb.npy"), a.transform_b(Y_test))
    refused = "refused: " + res["aligner"].get("refused", "")
    assert res["aligner"].get("refused") and "sha256" in refused, refused
