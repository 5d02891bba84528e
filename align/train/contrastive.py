"""CLIP- and SigLIP-style contrastive heads on frozen, paired embeddings.

Two small heads map space A (rows of ``X``) and space B (rows of ``Y``) into a
shared ``dim``-wide space where paired rows are close by cosine and unpaired
rows far apart; the losses are those of :mod:`align.train.losses`, the
training is :class:`align.train.engine.Trainer` (seeded batches, checkpoint /
resume, rollback on divergence, callbacks).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import load_artifact, save_artifact
from ..device import torch_device
from ..params import NotFittedError, Params
from ..validation import as_matrix, check_choice, check_paired, check_positive_int, check_real
from .engine import EpochBatches, Trainer, adamw, fingerprint_arrays, fork_rng, jsonable
from .losses import LOSSES, distributed_active

__all__ = ["ContrastiveAligner", "AlignerNet", "HEADS"]

PathLike = Union[str, os.PathLike]
HEADS = ("linear", "mlp")


def _make_head(kind: str, d_in: int, dim: int, hidden: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(d_in, dim)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, dim))


class AlignerNet(nn.Module):
    """The two heads and the loss module (with its learnable temperature)."""

    def __init__(self, head: str, d_a: int, d_b: int, dim: int, hidden: int, loss: str) -> None:
        super().__init__()
        self.head_a = _make_head(head, d_a, dim, hidden)
        self.head_b = _make_head(head, d_b, dim, hidden)
        self.loss = LOSSES[loss]()


def _loss_step(net: AlignerNet, za: torch.Tensor, zb: torch.Tensor, distributed: bool) -> torch.Tensor:
    """One batch's loss (a module-level name, so tests can inject a divergence)."""
    return net.loss(za, zb, distributed=distributed)


class ContrastiveAligner(Params):
    """Heads mapping two paired embedding spaces into one, trained contrastively.

    ``head_a`` maps rows of ``X`` (space A), ``head_b`` rows of ``Y`` (space
    B) into a ``dim``-wide space; outputs are L2-normalised, so paired rows
    end up with high cosine. Training minimises :func:`align.clip_loss`
    (learnable temperature, init 0.07, scale ≤ 100; Radford et al. 2021) or
    :func:`align.siglip_loss` (learnable scale init 10 and bias init −10; Zhai
    et al. 2023) with AdamW on mini-batches of paired rows. Under ``torchrun``
    every rank passes the same ``X, Y``; each takes its part of every global
    batch and the result equals the single-process run (see
    :mod:`align.train.losses`); ``batch_size`` is the global batch::

        # train.py, launched with: torchrun --nproc_per_node=2 train.py
        torch.distributed.init_process_group("gloo")  # "nccl" on GPUs
        a = align.ContrastiveAligner(loss="siglip", batch_size=1024).fit(X, Y)  # same X, Y on every rank

    Parameters (scikit-learn's contract: stored as given, validated at ``fit``;
    ``get_params`` / ``set_params``, so ``sklearn.base.clone`` works)
    ----------
    head : ``"linear"`` (one affine map per side) or ``"mlp"``
        (Linear → GELU → Linear, ``hidden`` wide).
    dim : width of the shared space.
    loss : ``"clip"`` or ``"siglip"``.
    epochs, batch_size, lr, weight_decay : optimisation (AdamW; the batch
        is the pool of negatives: larger is harder and usually better).
    hidden : hidden width of the ``"mlp"`` head.
    seed : fixes the initialisation and the batch order (deterministic on CPU).
    device : torch device (default: CUDA when present, else CPU).
    checkpoint_dir : if set, training state is saved there at every epoch's end
        (and every ``checkpoint_every`` steps), and a later ``fit`` with the
        same data and settings resumes from it (raise ``epochs`` to train on).
    checkpoint_every : steps between extra checkpoints (None: epochs only).
    max_retries : rollbacks (each halving lr) allowed in a row before
        :class:`align.TrainingDivergedError`.
    progress : tqdm bar.

    Attributes after ``fit``
    ------------------------
    net_ : the trained heads and loss module. d_a_, d_b_ : input widths.
    history_ : one dict per epoch (loss, lr, logit_scale, logit_bias).
    rollbacks_ : divergence events (step, to_step, lr, losses).
    logit_scale_, logit_bias_ : learned scale (not its log) and bias (SigLIP).
    resumed_from_ : the step a checkpoint restored, or None.
    """

    def __init__(
        self,
        head: str = "linear",
        dim: int = 256,
        loss: str = "clip",
        epochs: int = 20,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        hidden: int = 1024,
        seed: int = 0,
        device: Optional[str] = None,
        checkpoint_dir: Optional[PathLike] = None,
        checkpoint_every: Optional[int] = None,
        max_retries: int = 5,
        progress: bool = True,
    ) -> None:
        self.head = head
        self.dim = dim
        self.loss = loss
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.hidden = hidden
        self.seed = seed
        self.device = device
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.max_retries = max_retries
        self.progress = progress

    # saved with the model; the rest (device, checkpointing, progress) are run-time choices
    _SAVED_PARAMS = ("head", "dim", "loss", "epochs", "batch_size", "lr", "weight_decay", "hidden", "seed", "max_retries")

    def _check_params(self) -> None:
        check_choice(self.head, "head", HEADS)
        check_choice(self.loss, "loss", tuple(LOSSES))
        check_positive_int(self.dim, "dim")
        check_positive_int(self.epochs, "epochs")
        check_positive_int(self.batch_size, "batch_size", minimum=2)
        check_positive_int(self.hidden, "hidden")
        check_positive_int(self.seed, "seed", minimum=0)
        check_positive_int(self.max_retries, "max_retries", minimum=0)
        if self.checkpoint_every is not None:
            check_positive_int(self.checkpoint_every, "checkpoint_every")
        check_real(self.lr, "lr", low=0, open_low=True)
        check_real(self.weight_decay, "weight_decay", low=0)

    # -- fit --------------------------------------------------------------
    def fit(
        self,
        X: Any,
        Y: Any,
        callback: Optional[Callable[[int, "ContrastiveAligner"], Optional[dict]]] = None,
        callbacks: Sequence[Callable[[Dict[str, Any]], Any]] = (),
    ) -> "ContrastiveAligner":
        """Train the heads on paired rows ``X[i] <-> Y[i]``.

        ``callback(epoch, self)``, if given, runs after each epoch (the
        aligner is usable: ``self.transform_a``...) and may return a dict of
        extra numbers for ``history_``; raising in it stops training (work up
        to the last checkpoint is kept). ``callbacks``: functions called with
        a dict per step (``step``, ``epoch``, ``lr``, ``loss``, ``grad_norm``),
        per rollback and per epoch (see :mod:`align.train.engine`); one may
        raise :class:`align.train.StopTraining` to end training early, fitted.
        """
        self._check_params()
        X = as_matrix(X, "X", dtype=np.float32, min_rows=2)
        Y = as_matrix(Y, "Y", dtype=np.float32, min_rows=2)
        check_paired(X, Y)
        dev = torch_device(self.device)
        distributed = distributed_active(None)
        with fork_rng(dev):
            torch.manual_seed(self.seed)
            net = AlignerNet(self.head, X.shape[1], Y.shape[1], self.dim, self.hidden, self.loss).to(dev)
            self.d_a_, self.d_b_ = X.shape[1], Y.shape[1]
            self.net_ = net
            Xt, Yt = torch.from_numpy(X).to(dev), torch.from_numpy(Y).to(dev)
            fingerprint = {
                "data": fingerprint_arrays(X, Y),
                "world_size": torch.distributed.get_world_size() if distributed else 1,
                # epochs may grow between runs (train on); the rest must match
                **{k: getattr(self, k) for k in self._SAVED_PARAMS if k not in ("epochs", "max_retries")},
            }
            trainer = Trainer(
                net,
                {"main": adamw(net, self.lr, self.weight_decay)},
                EpochBatches(X.shape[0], self.batch_size, self.epochs, self.seed, min_batch=2, distributed=distributed),
                kind="ContrastiveAligner",
                fingerprint=fingerprint,
                checkpoint_dir=self.checkpoint_dir,
                checkpoint_every=self.checkpoint_every,
                max_retries=self.max_retries,
                callbacks=callbacks,
                post_step=net.loss.clamp_,
                distributed=distributed,
                progress=self.progress,
                desc=f"{self.loss} {self.head}",
            )

            def step(rows: np.ndarray) -> torch.Tensor:
                r = torch.from_numpy(rows).to(dev)
                return _loss_step(net, net.head_a(Xt[r]), net.head_b(Yt[r]), distributed)

            def on_epoch(epoch: int) -> Dict[str, Any]:
                rec = self._temperatures()
                if callback is not None:
                    rec.update(callback(epoch, self) or {})
                return rec

            try:
                trainer.run(step, on_epoch)
            except BaseException:
                # an interrupted fit leaves the aligner unfitted (its work is in
                # checkpoint_dir, if set); history_ / rollbacks_ stay for diagnosis
                del self.net_
                raise
            finally:
                self.history_ = trainer.history
                self.rollbacks_ = trainer.rollbacks
                self.resumed_from_ = trainer.resumed_from
        self._set_learned()
        return self

    def _temperatures(self) -> Dict[str, Any]:
        loss = self.net_.loss
        out = {"logit_scale": float(loss.logit_scale.detach().exp())}
        if hasattr(loss, "logit_bias"):
            out["logit_bias"] = float(loss.logit_bias.detach())
        return out

    def _set_learned(self) -> None:
        t = self._temperatures()
        self.logit_scale_ = t["logit_scale"]
        self.logit_bias_ = t.get("logit_bias")

    # -- transform ----------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "net_"):
            raise NotFittedError("this ContrastiveAligner is not fitted yet: call fit(X, Y) first")

    def _apply(self, side: str, Z: Any, name: str, batch: int = 8192) -> np.ndarray:
        self._check_fitted()
        head = getattr(self.net_, f"head_{side}")
        width = getattr(self, f"d_{side}_")
        Z = as_matrix(Z, name, dtype=np.float32)
        if Z.shape[1] != width:
            raise ValueError(f"{name} has {Z.shape[1]} columns but this aligner was fitted on {width}-wide {name}")
        dev = next(self.net_.parameters()).device
        head.eval()
        out = np.empty((Z.shape[0], self.dim), dtype=np.float32)
        with torch.no_grad():
            for s in range(0, Z.shape[0], batch):
                z = head(torch.from_numpy(Z[s : s + batch]).to(dev))
                out[s : s + batch] = F.normalize(z, dim=1).cpu().numpy()
        return out

    def transform_a(self, X: Any) -> np.ndarray:
        """Rows of space A in the shared space: (n, dim) float32, unit rows."""
        return self._apply("a", X, "X")

    def transform_b(self, Y: Any) -> np.ndarray:
        """Rows of space B in the shared space: (n, dim) float32, unit rows."""
        return self._apply("b", Y, "Y")

    # -- evaluation -----------------------------------------------------------
    def evaluate(self, X: Any, Y: Any, ks: Sequence[int] = (1, 5, 10), k_neighbors: int = 10) -> Dict[str, Any]:
        """Retrieval on held-out pairs ``X[i] <-> Y[i]``, both ways, and the
        alignment of the two spaces before vs after the heads.

        ``a2b_recall@k`` is the fraction of rows i whose partner ``Y[i]`` is
        among the k cosine-nearest of all ``n`` candidates to ``X[i]`` (in the
        shared space); ``a2b_top1`` is recall@1 (ties go to the lower index,
        as in :func:`align.knn`); ``b2a_*`` the other way. ``n_candidates``
        is the pool size; chance top-1 is 1/n. ``mutual_knn_before`` /
        ``_after`` (Huh et al. 2024, k = ``k_neighbors``) and ``cka_before`` /
        ``_after`` (linear CKA) compare ``X`` with ``Y`` and their images.
        """
        from ..knn import knn
        from ..metrics.kernel import cka
        from ..metrics.neighbors import mutual_knn

        self._check_fitted()
        Xv = as_matrix(X, "X", dtype=np.float32, min_rows=2)
        Yv = as_matrix(Y, "Y", dtype=np.float32, min_rows=2)
        check_paired(Xv, Yv)
        n = Xv.shape[0]
        ks = [check_positive_int(k, "ks") for k in ks]
        if max(ks) > n:
            raise ValueError(f"ks: recall@{max(ks)} needs at least {max(ks)} held-out pairs, got {n}")
        Za, Zb = self.transform_a(Xv), self.transform_b(Yv)
        truth = np.arange(n)[:, None]
        out: Dict[str, Any] = {"n_candidates": n}
        for name, Q, D in (("a2b", Za, Zb), ("b2a", Zb, Za)):
            _, idx = knn(Q, max(ks), database=D, metric="cosine")
            hit = idx == truth
            out[f"{name}_top1"] = float(hit[:, 0].mean())
            for k in ks:
                out[f"{name}_recall@{k}"] = float(hit[:, :k].any(axis=1).mean())
        kk = min(k_neighbors, n - 1)
        out["mutual_knn_before"] = mutual_knn(Xv, Yv, k=kk)
        out["mutual_knn_after"] = mutual_knn(Za, Zb, k=kk)
        out["cka_before"] = float(cka(Xv, Yv))
        out["cka_after"] = float(cka(Za, Zb))
        return out

    # -- persistence --------------------------------------------------------------
    def save(self, path: PathLike) -> Path:
        """Write ``config.json`` + ``weights.safetensors`` into the folder ``path``
        (through :func:`align.checkpoint.save_artifact`; never pickle)."""
        self._check_fitted()
        config = {
            "params": {k: getattr(self, k) for k in self._SAVED_PARAMS},
            "d_a": int(self.d_a_),
            "d_b": int(self.d_b_),
            "history": jsonable(self.history_),
        }
        tensors = {k: v.detach().cpu() for k, v in self.net_.state_dict().items()}
        return save_artifact(path, "ContrastiveAligner", config, tensors)

    @classmethod
    def load(cls, path: PathLike, device: Optional[str] = None) -> "ContrastiveAligner":
        """Load a saved aligner; a foreign, tampered or truncated file raises ValueError."""
        config, tensors, _ = load_artifact(path, "ContrastiveAligner", expected_config_keys=("params", "d_a", "d_b", "history"))
        params = config.get("params")
        if not isinstance(params, dict) or set(params) != set(cls._SAVED_PARAMS):
            raise ValueError(f"{path}: parameters {sorted(params or {})} do not fit ContrastiveAligner")
        obj = cls(**params, device=device)
        obj._check_params()
        d_a, d_b = config.get("d_a"), config.get("d_b")
        for name, v in (("d_a", d_a), ("d_b", d_b)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{path}: {name} must be a positive integer, got {v!r}")
        net = AlignerNet(obj.head, d_a, d_b, obj.dim, obj.hidden, obj.loss)
        sd = net.state_dict()
        if set(sd) != set(tensors):
            raise ValueError(f"{path}: tensors {sorted(tensors)} do not fit a {obj.head} {obj.loss} aligner ({sorted(sd)})")
        loaded = {}
        for k, v in sd.items():
            t = torch.from_numpy(np.array(tensors[k]))
            if tuple(t.shape) != tuple(v.shape) or t.dtype != torch.float32:
                raise ValueError(f"{path}: tensor {k!r} is {tensors[k].dtype}{list(tensors[k].shape)}, expected float32{list(v.shape)}")
            loaded[k] = t
        net.load_state_dict(loaded)
        obj.net_ = net.to(torch_device(device))
        obj.d_a_, obj.d_b_ = d_a, d_b
        obj.history_ = list(config.get("history") or [])
        obj.rollbacks_ = []
        obj.resumed_from_ = None
        obj._set_learned()
        return obj
