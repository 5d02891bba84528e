"""README.md's "Python API" section runs as written, on small synthetic data.

The ```python blocks of that section are executed statement by statement in a
namespace that already holds the arrays the snippet names (X, Y, Q, D, feats_a,
feats_b, A, B, P, A_test, B_test), in a temporary working folder (the snippet saves
to "model/"). Two patches, both for time only: ``translate.Isometric`` and
``translate.Vec2Vec`` get small settings (their defaults fit for a minute or more,
Vec2Vec's 5000 steps for several) through ``functools.partial``; the classes, and
every line of the snippet, are the README's own.
"""

from __future__ import annotations

import ast
import functools
import re
import warnings
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest

import translate
from synthetic import ISO_FAST, V2V_FAST, clustered_spaces, torch_threads

README = Path(__file__).resolve().parents[1] / "README.md"


def python_api_code() -> str:
    text = README.read_text()
    section = re.search(r"^## Python API[ \t]*\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, "README.md has no '## Python API' section"
    blocks = re.findall(r"^```python[ \t]*\n(.*?)^```", section.group(1), re.S | re.M)
    assert blocks, "the Python API section has no ```python block"
    return "\n".join(blocks)


def _namespace() -> Dict[str, Any]:
    """Small arrays under the names the snippet uses."""
    rng = np.random.default_rng(0)
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    # paired rows of two spaces, for the metrics and the contrastive aligner
    X = rng.standard_normal((200, 16))
    Y = np.tanh(X @ rng.standard_normal((16, 12))) + 0.1 * rng.standard_normal((200, 12))
    # two spaces for translation: clustered 16-d rows, B a rotation of A plus noise
    spaces = clustered_spaces(n=600, n_other=0, n_test=100, noise=0.01, seed=1)
    return {
        "X": f32(X), "Y": f32(Y),
        "Q": f32(rng.standard_normal((20, 16))), "D": f32(rng.standard_normal((300, 16))),
        "feats_a": {"layer1": f32(X), "layer2": f32(np.tanh(X @ rng.standard_normal((16, 16))))},
        "feats_b": {"block1": f32(Y), "block2": f32(Y ** 2)},
        # rows of A and B are the same items here (the snippet's paired Procrustes needs that;
        # the unpaired fits are not told), P names 50 of those pairs
        "A": spaces["X"], "B": spaces["Y_paired"], "P": np.stack([np.arange(50), np.arange(50)], axis=1),
        "A_test": spaces["X_test"], "B_test": spaces["Y_test"],
        # the README's paired oracle line: row i of each is the same item
        "A_pairs": spaces["X"], "B_pairs": spaces["Y_paired"],
    }


def run_statements(code: str, ns: Dict[str, Any]) -> List[Tuple[str, Any]]:
    """Execute ``code`` one top-level statement at a time; returns (source, value) of
    each expression statement, as an interactive session would show it."""
    shown = []
    for node in ast.parse(code).body:
        src = ast.get_source_segment(code, node)
        if isinstance(node, ast.Expr):
            shown.append((src, eval(compile(ast.Expression(node.value), "README.md", "eval"), ns)))
        else:
            exec(compile(ast.Module([node], type_ignores=[]), "README.md", "exec"), ns)
    return shown


@pytest.fixture(autouse=True)
def one_thread():
    pytest.importorskip("torch")
    with torch_threads(1):
        yield


@pytest.fixture
def fast_translators(monkeypatch):
    monkeypatch.setattr(translate, "Isometric", functools.partial(translate.Isometric, **ISO_FAST))
    monkeypatch.setattr(translate, "Vec2Vec", functools.partial(translate.Vec2Vec, **V2V_FAST))


def test_python_api_section_runs(tmp_path, monkeypatch, fast_translators):
    monkeypatch.chdir(tmp_path)
    code = python_api_code()
    ns = _namespace()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # Isometric on tiny data: restarts disagree
        shown = dict(run_statements(code, ns))

    # what the snippet says it computes
    scores = [v for src, v in shown.items() if src.startswith("translate.evaluate(")]
    assert len(scores) == 1, list(shown)
    line = next(ln for ln in code.splitlines() if ln.startswith("translate.evaluate("))
    promised = re.findall(r"\w+", line.split("#", 1)[1])
    assert promised and set(promised) <= set(scores[0]), (promised, sorted(scores[0]))
    assert scores[0]["pool"] == len(ns["A_test"])
    assert scores[0]["top1"] > 0.9  # the Procrustes oracle on paired rows
    assert 0 <= shown["align.mutual_knn(X, Y, k=10)"] <= 1
    assert isinstance(shown['align.score(X, Y, metric="soft_match")'], float)

    # the objects the snippet leaves behind
    assert isinstance(ns["a"], __import__("align").ContrastiveAligner) and hasattr(ns["a"], "net_")
    assert ns["sims"].shape == ns["idx"].shape == (20, 10)
    t = ns["t"]
    assert type(t) is translate.paired.Procrustes and (tmp_path / "model" / "config.json").is_file()
    np.testing.assert_array_equal(t.transform(ns["A_test"]), translate.load(tmp_path / "model").transform(ns["A_test"]))
