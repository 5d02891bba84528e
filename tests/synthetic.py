"""Small synthetic data and settings shared by the contract, fresh-process and README
tests, and :func:`script_module`, which the tests of ``scripts/`` use to import a script.

Not a test module (pytest collects ``test_*.py`` only); the tests import it by name
(pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Dict, Iterator

import numpy as np

#: Isometric at its smallest useful size: few iterations, small clusterings (seconds, not minutes)
ISO_FAST = dict(n_init=2, n_iter=10, polish_iter=1, ot_iter=1, ot_rows=600, anchor_runs=3, qap_restarts=3,
                n_clusters=8, lowdim_restarts=2, progress=False)
#: Vec2Vec / CycleGAN: a few steps of a tiny network (the machinery, not the quality)
V2V_FAST = dict(steps=5, hidden=8, depth=1, batch_size=32, progress=False)


def clustered_spaces(n: int = 600, n_other: int = 640, n_test: int = 50, d: int = 16, k: int = 12,
                     noise: float = 0.0, seed: int = 0) -> Dict[str, np.ndarray]:
    """Two ``d``-wide spaces, B a rotation of A, float32: ``X`` (n rows of A), ``Y_paired``
    (their images in B, plus ``noise``), ``Y_unpaired`` (``n_other`` other rows of B) and
    held-out pairs ``X_test``, ``Y_test``. Rows are drawn around ``k`` centres with
    decaying scales, so the spaces have the structure an unpaired fit can find."""
    rng = np.random.default_rng(seed)
    scales = np.geomspace(1, 0.1, d)
    centres = rng.standard_normal((k, d)) * scales
    R, _ = np.linalg.qr(rng.standard_normal((d, d)))

    def rows(m: int) -> np.ndarray:
        return centres[rng.integers(k, size=m)] + 0.3 * rng.standard_normal((m, d)) * scales

    X, other, X_test = rows(n), rows(n_other), rows(n_test)
    Y = X @ R + noise * rng.standard_normal(X.shape)
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return {"X": f32(X), "Y_paired": f32(Y), "Y_unpaired": f32(other @ R), "X_test": f32(X_test),
            "Y_test": f32(X_test @ R)}


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run torch on ``n`` threads inside the block: tiny models are bit-reproducible, and
    fastest, on one (the machine may be shared)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def script_module(name: str) -> Iterator[ModuleType]:
    """``scripts/<name>.py`` imported as module ``reptrans_<name>``, registered in
    ``sys.modules`` while the block runs (dataclasses look their module up there)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"reptrans_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)
