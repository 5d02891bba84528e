"""Thread settings (align.device): set_threads / threads() / REPTRANS_THREADS, the
automatic choice, and results that do not depend on the thread count.

Behaviour only: no test measures wall time."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

from align import device
from align.device import (THREADS_ENV, available_cores, current_threads, get_threads, parallel_map, row_blocks,
                          set_threads, threads, with_threads)


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    from threadpoolctl import threadpool_limits

    monkeypatch.delenv(THREADS_ENV, raising=False)
    set_threads(None)
    t0, n0 = torch.get_num_threads(), numba.get_num_threads()
    pools = threadpool_limits(limits=None)  # records the BLAS / OpenMP counts: a test's set_threads(n) changes them
    yield
    set_threads(None)
    torch.set_num_threads(t0)
    numba.set_num_threads(n0)
    pools.restore_original_limits()  # later tests in this worker compare results with fresh processes


def _blas_counts():
    return {(i["prefix"], i["filepath"]): i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_set_threads_validates_its_argument(bad):
    with pytest.raises(ValueError, match="n must be a positive integer"):
        set_threads(bad)


@pytest.mark.parametrize("bad", [0, -3, 2.0, "x"])
def test_threads_context_validates_its_argument(bad):
    with pytest.raises(ValueError, match="n must be a positive integer"):
        with threads(bad):
            pass


@pytest.mark.parametrize("raw", ["0", "-2", "two", "1.5"])
def test_env_variable_is_validated_and_named(monkeypatch, raw):
    monkeypatch.setenv(THREADS_ENV, raw)
    with pytest.raises(ValueError, match="REPTRANS_THREADS must be a positive integer or 'auto'"):
        get_threads()
    import align

    X = np.random.default_rng(0).standard_normal((50, 4))
    with pytest.raises(ValueError, match="REPTRANS_THREADS"):
        align.mutual_knn(X, X, k=3)  # every reptrans call reads it


def test_env_variable_sets_the_count(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "1")
    assert get_threads() == 1
    monkeypatch.setenv(THREADS_ENV, "auto")
    assert 1 <= get_threads() <= available_cores()
    monkeypatch.setenv(THREADS_ENV, " 3 ")
    assert get_threads() == 3


def test_set_threads_overrides_env_and_none_goes_back(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "3")
    set_threads(1)
    assert get_threads() == 1
    set_threads(None)
    assert get_threads() == 3


def test_set_threads_applies_to_every_library_at_once():
    import faiss

    set_threads(1)
    assert torch.get_num_threads() == 1
    assert numba.get_num_threads() == 1
    assert faiss.omp_get_max_threads() == 1
    assert set(_blas_counts().values()) == {1}


def test_threads_context_sets_and_restores():
    torch.set_num_threads(2)
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    before_blas = _blas_counts()
    with threads(1) as n:
        assert n == 1
        assert torch.get_num_threads() == 1
        assert numba.get_num_threads() == 1
        assert set(_blas_counts().values()) == {1}
    assert torch.get_num_threads() == 2
    assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
    assert _blas_counts() == before_blas


def test_nested_reptrans_calls_keep_the_outer_count():
    with threads(1):
        with threads() as inner:  # what every reptrans function enters
            assert inner == 1 and torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1


def test_with_threads_decorator_uses_the_setting():
    seen = []

    @with_threads
    def f():
        seen.append(torch.get_num_threads())

    set_threads(1)
    f()
    assert seen == [1]


def test_automatic_choice_is_within_the_cores(monkeypatch):
    n = get_threads()
    assert 1 <= n <= available_cores()
    # another process keeping every core busy: one thread
    monkeypatch.setattr(device, "_busy_elsewhere", lambda: float(available_cores()))
    set_threads(None)  # forget the cached measurement
    assert get_threads() == 1
    monkeypatch.setattr(device, "_busy_elsewhere", lambda: 0.0)
    set_threads(None)
    assert get_threads() == available_cores()
    monkeypatch.setattr(device, "_busy_elsewhere", lambda: None)  # no /proc/stat: all cores
    set_threads(None)
    assert get_threads() == available_cores()


def test_results_do_not_depend_on_the_thread_count():
    import align
    from translate.evaluate import evaluate

    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 32)).astype(np.float32)
    Y = X + rng.standard_normal((600, 32)).astype(np.float32)
    out = []
    for n in (1, 2):
        with threads(n):
            out.append((align.mutual_knn(X, Y, k=5), align.cka(X, Y), align.svcca(X, Y), evaluate(Y, X)))
    assert out[0][:3] == out[1][:3]
    assert out[0][3] == out[1][3]


def test_available_cores_respects_affinity_and_cgroup_quota(monkeypatch):
    monkeypatch.setattr(device, "_affinity", lambda: {0, 1, 2, 3})
    monkeypatch.setattr(device, "_cgroup_cpus", lambda: None)
    assert available_cores() == 4
    monkeypatch.setattr(device, "_cgroup_cpus", lambda: 1.5)  # cpu.max 150000 100000
    assert available_cores() == 2
    monkeypatch.setattr(device, "_affinity", lambda: {3})
    assert available_cores() == 1


def test_busy_elsewhere_reads_proc_stat():
    busy = device._busy_elsewhere()
    assert busy is None or 0.0 <= busy <= len(device._affinity() or range(1)) + 1e-9


def test_cuda_check_without_a_driver_does_not_import_torch():
    """Without an NVIDIA driver node, cuda_available() answers False without importing torch
    (seconds per process: every `reptrans` command asks it)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    if any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/dxg")):
        pytest.skip("an NVIDIA driver is present: the check asks torch")
    code = "import sys; from align.device import cuda_available; print(cuda_available(), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}).stdout.split()
    assert out == ["False", "False"]


def test_current_threads_is_the_innermost_block_count(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "2")  # the process setting, without applying it to the loaded libraries
    assert current_threads() == 2
    with threads(1):
        assert current_threads() == 1
        with threads():
            assert current_threads() == 1
    assert current_threads() == 2


@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("n_rows,row_bytes,block_bytes", [(0, 8, 64), (1, 8, 64), (37, 8, 64), (37, 100, 64)])
def test_row_blocks_cover_every_row_once(n_threads, n_rows, row_bytes, block_bytes):
    seen = np.zeros(n_rows, int)

    def fn(s, e):
        assert 0 <= s < e <= n_rows and e - s <= max(1, block_bytes // row_bytes)
        seen[s:e] += 1

    with threads(n_threads):
        row_blocks(fn, n_rows, row_bytes, block_bytes)
    assert (seen == 1).all()


@pytest.mark.parametrize("kw,name", [(dict(n_rows=-1), "n_rows"), (dict(n_rows=2.0), "n_rows"),
                                     (dict(row_bytes=0), "row_bytes"), (dict(block_bytes=0), "block_bytes"),
                                     (dict(block_bytes=True), "block_bytes")])
def test_row_blocks_refuse_bad_sizes(kw, name):
    args = {"n_rows": 10, "row_bytes": 8, "block_bytes": 64, **kw}
    with pytest.raises(ValueError, match=name):
        row_blocks(lambda s, e: None, **args)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_row_blocks_raise_what_a_block_raises(n_threads):
    def fn(s, e):
        if s <= 20 < e:
            raise KeyError("block 20")

    with threads(n_threads), pytest.raises(KeyError, match="block 20"):
        row_blocks(fn, 40, 4, 16)


def test_entropic_plan_is_the_whole_matrix_computation_on_any_thread_count():
    """Blocked and threaded passes give exactly the plan of the same passes over the whole matrix."""
    from translate.matching import entropic_plan

    rng = np.random.default_rng(0)
    A = rng.standard_normal((700, 16)).astype(np.float32)
    B = rng.standard_normal((900, 16)).astype(np.float32)
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    B /= np.linalg.norm(B, axis=1, keepdims=True)

    def whole(A, B, eps, n_iter):  # the same passes, each over the whole matrix
        K = A @ B.T
        K -= K.max(axis=1, keepdims=True)
        K *= np.float32(1 / eps)
        np.exp(K, out=K)
        v = np.ones(len(B), np.float32)
        for _ in range(n_iter):
            u = np.float32(1) / np.maximum(K @ v, np.float32(1e-30))
            v = np.float32(len(A) / len(B)) / np.maximum(K.T @ u, np.float32(1e-30))
        return K * u[:, None] * v[None, :]

    for n in (1, 2, 3):
        with threads(n):  # the BLAS products too follow the count
            assert np.array_equal(entropic_plan(A, B, 0.05, 10), whole(A, B, 0.05, 10))


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_parallel_map_keeps_the_order_and_raises(n_threads):
    with threads(n_threads):
        assert parallel_map(lambda x: x * x, list(range(50))) == [x * x for x in range(50)]
        assert parallel_map(abs, []) == []
        with pytest.raises(ZeroDivisionError):
            parallel_map(lambda x: 1 // (x - 7), list(range(20)))


def test_block_assignment_is_the_same_on_any_thread_count():
    from translate.matching import block_assignment

    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((1000, 24)).astype(np.float32), rng.standard_normal((900, 24)).astype(np.float32)
    out = []
    for n in (1, 2, 3):
        with threads(n):
            out.append(block_assignment(A, B, 100, np.random.default_rng(5)))
    for i, j, obj in out[1:]:
        assert np.array_equal(i, out[0][0]) and np.array_equal(j, out[0][1]) and obj == out[0][2]
    assert len(out[0][0]) == 900 and len(set(out[0][0])) == 900 and len(set(out[0][1])) == 900
