"""Layer x layer comparison and the rotation (privileged-basis) test.

Following Kapoor, Srivastava & Khosla (2025), "Bridging critical gaps in
convergent learning": every layer of network A is scored against every layer of
network B with one alignment metric, giving a matrix whose row-wise argmax says
which layer of B matches each layer of A (their Fig. 2). For two networks of the
same architecture the argmax should lie on the diagonal.

The rotation test (their Table 1) asks whether a metric depends on the basis:
``Y`` is multiplied by a Haar-random rotation ``Q``. Rotation-invariant scores
(linear / ridge, Procrustes, CKA) do not change; the permutation score, which
matches units one-to-one, falls when the units of ``Y`` are mixed.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import numpy as np

from align.progress import progress_bar
from align.validation import as_matrix, check_paired, check_positive_int

__all__ = ["LayerComparison", "compare_layers", "rotation_test", "random_rotation"]

MetricLike = Union[str, Callable[..., float]]


def _resolve_metric(metric: MetricLike) -> tuple:
    """(name, function) for a metric name in ``align.METRICS`` or a callable ``f(X, Y, **kw) -> float``."""
    if callable(metric):
        return getattr(metric, "__name__", "custom"), metric
    if not isinstance(metric, str):
        raise ValueError(f"metric must be a metric name or a callable f(X, Y) -> float, got {metric!r}")
    from align.metrics import METRICS

    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(map(repr, METRICS))} or a callable; got {metric!r}")
    return metric, METRICS[metric]


def _validate_feats(feats: Any, name: str) -> Dict[str, np.ndarray]:
    if not isinstance(feats, Mapping):
        raise ValueError(f"{name} must be a dict layer name -> (n, d) array, got {type(feats).__name__}")
    if not feats:
        raise ValueError(f"{name} is empty; pass at least one layer")
    out = {}
    for layer, X in feats.items():
        out[str(layer)] = as_matrix(X, f"{name}[{layer!r}]")
    return out


@dataclasses.dataclass
class LayerComparison:
    """Scores of every layer of A against every layer of B.

    ``matrix[i, j]`` is ``metric(feats_a[layers_a[i]], feats_b[layers_b[j]])``.
    """

    matrix: np.ndarray
    layers_a: List[str]
    layers_b: List[str]
    metric: str = "custom"

    @property
    def best_match(self) -> Dict[str, str]:
        """Layer of A -> the layer of B that scores highest with it (first on ties)."""
        return {a: self.layers_b[int(np.argmax(row))] for a, row in zip(self.layers_a, self.matrix)}

    @property
    def best_score(self) -> Dict[str, float]:
        """Layer of A -> its highest score over the layers of B ("max over layers")."""
        return {a: float(np.max(row)) for a, row in zip(self.layers_a, self.matrix)}

    @property
    def diagonal(self) -> np.ndarray:
        """Scores of corresponding layers: ``matrix[i, j(i)]``, see :attr:`expected_match`."""
        return np.array([self.matrix[i, j] for i, j in enumerate(self.expected_match)])

    @property
    def expected_match(self) -> List[int]:
        """For each row, the column at the same relative depth: ``i`` itself when
        both networks have as many layers, else ``i (n_b - 1) / (n_a - 1)`` rounded half up."""
        na, nb = self.matrix.shape
        if na == nb:
            return list(range(na))
        if na == 1:
            return [0]
        return [int(np.floor(i * (nb - 1) / (na - 1) + 0.5)) for i in range(na)]  # round half up

    @property
    def diagonal_argmax_fraction(self) -> float:
        """Fraction of layers of A whose best match in B is the corresponding layer
        (same relative depth); 1.0 means the argmax lies on the diagonal everywhere."""
        hits = [int(np.argmax(row)) == j for row, j in zip(self.matrix, self.expected_match)]
        return float(np.mean(hits))

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-serialisable summary."""
        return {
            "metric": self.metric,
            "layers_a": list(self.layers_a),
            "layers_b": list(self.layers_b),
            "matrix": self.matrix.tolist(),
            "best_match": self.best_match,
            "diagonal_argmax_fraction": self.diagonal_argmax_fraction,
        }

    def plot(
        self,
        path: Union[str, os.PathLike],
        title: Optional[str] = None,
        label_a: str = "network A",
        label_b: str = "network B",
        annotate: Optional[bool] = None,
        vmin: Optional[float] = None,
        vmax: Optional[float] = None,
    ) -> str:
        """Save a heatmap of :attr:`matrix` (rows: layers of A, columns: layers of
        B; the best match of each row boxed), as in Kapoor et al. (2025) Fig. 2.
        Uses the Agg backend without touching pyplot's global state. Returns the path."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle

        na, nb = self.matrix.shape
        fig = Figure(figsize=(1.2 + 0.55 * nb + 1.5, 1.0 + 0.5 * na + 1.0))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(111)
        im = ax.imshow(self.matrix, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        fig.colorbar(im, ax=ax, label=self.metric)
        ax.set_xticks(range(nb))
        ax.set_xticklabels(self.layers_b, rotation=45, ha="right")
        ax.set_yticks(range(na))
        ax.set_yticklabels(self.layers_a)
        ax.set_xlabel(label_b)
        ax.set_ylabel(label_a)
        for i, row in enumerate(self.matrix):
            j = int(np.argmax(row))
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
        if annotate if annotate is not None else na * nb <= 100:
            mid = (im.norm.vmin + im.norm.vmax) / 2  # dark text on the bright half of viridis
            for i in range(na):
                for j in range(nb):
                    v = self.matrix[i, j]
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="black" if v > mid else "white")
        ax.set_title(title or f"{self.metric}: layer x layer (red: best match per row)")
        fig.tight_layout()
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, dpi=120)
        return path


def compare_layers(
    feats_a: Mapping[str, Any],
    feats_b: Mapping[str, Any],
    metric: MetricLike = "cka",
    progress: bool = True,
    **kw: Any,
) -> LayerComparison:
    """Score every layer of A against every layer of B.

    Parameters
    ----------
    feats_a, feats_b : dicts layer name -> (n, d) array (e.g. from
        :func:`align.extract_activations`), all with the same n paired rows;
        widths may differ. Layer order is the dicts' order.
    metric : a name in ``align.METRICS`` (default ``"cka"``, linear CKA) or a
        callable ``f(X, Y, **kw) -> float``.
    progress : tqdm bar over the ``len(A) * len(B)`` pairs.
    **kw : passed to the metric (e.g. ``k=10``, ``folds=5``).

    Returns a :class:`LayerComparison`.
    """
    name, fn = _resolve_metric(metric)
    A = _validate_feats(feats_a, "feats_a")
    B = _validate_feats(feats_b, "feats_b")
    first = next(iter(A.values()))
    for label, feats in (("feats_a", A), ("feats_b", B)):
        for layer, X in feats.items():
            check_paired(first, X, (f"feats_a[{next(iter(A))!r}]", f"{label}[{layer!r}]"))
    la, lb = list(A), list(B)
    M = np.empty((len(la), len(lb)), dtype=np.float64)
    with progress_bar(total=M.size, desc=f"compare_layers ({name})", unit="pair", enabled=progress) as bar:
        for i, a in enumerate(la):
            for j, b in enumerate(lb):
                M[i, j] = float(fn(A[a], B[b], **kw))
                bar.update(1)
    return LayerComparison(matrix=M, layers_a=la, layers_b=lb, metric=name)


def random_rotation(d: int, seed: int = 0) -> np.ndarray:
    """A Haar-distributed rotation in SO(d), float64 (d, d).

    QR of a standard Gaussian matrix, with the columns' signs fixed by
    ``sign(diag(R))`` so that Q is Haar on O(d) (Mezzadri 2007, "How to generate
    random matrices from the classical compact groups"); one column is then
    flipped if ``det Q < 0``, which keeps the Haar measure on SO(d).
    """
    d = check_positive_int(d, "d")
    rng = np.random.default_rng(seed)
    Q, R = np.linalg.qr(rng.standard_normal((d, d)))
    Q = Q * np.where(np.diag(R) < 0, -1.0, 1.0)[None, :]
    if np.linalg.det(Q) < 0:
        Q[:, 0] = -Q[:, 0]
    return Q


def rotation_test(
    X: Any,
    Y: Any,
    metric: MetricLike = "permutation",
    seed: int = 0,
    **kw: Any,
) -> Dict[str, Any]:
    """Score ``(X, Y)`` and ``(X, Y Q)`` with ``Q`` a Haar-random rotation.

    Kapoor et al. (2025), Table 1: a basis-dependent metric (permutation score,
    unit-to-unit matching) drops when ``Y``'s units are rotated; rotation-invariant
    ones (linear, Procrustes, CKA) do not. Returns ``dict(native=..., rotated=...,
    drop=native - rotated, metric=name, seed=seed)``.
    """
    name, fn = _resolve_metric(metric)
    X = as_matrix(X, "X")
    Y = as_matrix(Y, "Y")
    check_paired(X, Y)
    Q = random_rotation(Y.shape[1], seed=seed)
    Yr = (Y.astype(np.float64) @ Q).astype(Y.dtype)
    native = float(fn(X, Y, **kw))
    rotated = float(fn(X, Yr, **kw))
    return {"metric": name, "seed": seed, "native": native, "rotated": rotated, "drop": native - rotated}
