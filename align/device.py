"""Device choice: the one place that decides CPU vs GPU, for torch and FAISS.

GPU paths are taken when present at run time and are never required.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Iterator, Optional

__all__ = ["torch_device", "faiss", "faiss_gpu_count", "cuda_available", "one_blas_thread"]


def cuda_available() -> bool:
    if os.environ.get("REPTRANS_FORCE_CPU"):
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
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield
