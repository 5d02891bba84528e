"""Smoke tests of scripts/bench.py: it runs at toy sizes and emits valid JSON.

No assertion on wall time: the benchmark is a script, not a test.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "scripts" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("reptrans_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)


def test_dense_baseline_matches_align_mutual_knn(bench):
    import torch

    import align

    X, Y = bench.paired_data(300, 24, seed=3)
    dense = bench.dense_mutual_knn(torch.from_numpy(X), torch.from_numpy(Y), 5)
    assert dense == pytest.approx(align.mutual_knn(X, Y, k=5), abs=1e-6)  # float32 mean


def test_dense_cknna_baseline_matches_align_cknna(bench):
    import torch

    import align

    X, Y = bench.paired_data(300, 24, seed=4)
    dense = bench.dense_cknna(torch.from_numpy(X), torch.from_numpy(Y), 10)
    assert dense == pytest.approx(align.cknna(X, Y, k=10), abs=1e-4)  # float32 n×n vs float64 sparse


def test_gram_cka_matches_published_value(bench):
    # Kornblith et al. CKA notebook: linear CKA = 0.55761 on this data.
    np.random.seed(1337)
    X = np.random.randn(100, 10)
    Y = np.random.randn(100, 10) + X
    assert bench.gram_linear_cka(X, Y) == pytest.approx(0.55761, abs=1e-4)


def test_case_selection(bench):
    cases = bench.build_cases(quick=True, k=10, seed=0)
    assert {c.name for c in bench.select_cases(cases, ["mknn"])} == {"mknn-1k", "mknn-2k"}
    assert all(c.group != "tune" for c in bench.select_cases(cases, None))
    with pytest.raises(SystemExit, match="unknown"):
        bench.select_cases(cases, ["no-such-case"])


def test_missing_module_is_a_skip(bench):
    with pytest.raises(bench.Skip, match="does not exist yet"):
        bench._module_or_skip("align.no_such_module", "f")


def test_peak_memory_sees_an_allocation(bench):
    with bench.PeakMemory() as pm:
        a = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB, touched
        del a
    assert pm.peak >= 48 << 20, (pm.method, pm.peak)


@pytest.mark.slow
def test_quick_run_emits_valid_json(tmp_path):
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    cmd = [sys.executable, str(BENCH), "--quick", "--cases", "mknn-1k", "isometric",
           "--out", str(out), "--md", str(md), "--timeout", "600"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["machine"]["torch_device"] in ("cpu", "cuda", "cuda:0")
    rows = {r["case"]: r for r in data["cases"]}
    assert set(rows) == {"mknn-1k", "isometric-1.5k"}
    m = rows["mknn-1k"]
    for side in ("reptrans", "baseline", "gemm"):
        assert m[side]["status"] == "ok", m[side]
        assert m[side]["time_s"] > 0 and m[side]["peak_mib"] >= 0
    # reptrans and the dense n×n definition give the same score
    assert m["reptrans"]["value"] == pytest.approx(m["baseline"]["value"], abs=1e-6)
    assert m["speedup"] > 0 and m["knn_over_gemm"] > 0
    iso = rows["isometric-1.5k"]["reptrans"]
    assert iso["status"] in ("ok", "skipped"), iso  # skipped (with a reason) until the module exists
    assert iso["status"] == "ok" or iso["reason"]
    assert "| mknn-1k |" in proc.stdout
    assert md.read_text().startswith("| case |")
