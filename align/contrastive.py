"""CLIP- and SigLIP-style contrastive heads on frozen, paired embeddings.

Two small heads map space A (rows of ``X``) and space B (rows of ``Y``) into a
shared ``dim``-wide space where paired rows are close by cosine and unpaired
rows far apart. The losses follow open_clip's ``loss.py``: each is a small
function (and an ``nn.Module`` holding its learnable temperature), with the
distributed gather beside it.

- CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural
  Language Supervision"): symmetric InfoNCE over the batch, learnable
  temperature.
- SigLIP (Zhai, Mustafa, Kolesnikov & Beyer 2023, "Sigmoid Loss for Language
  Image Pre-Training"): an independent binary (sigmoid) loss on every pair,
  learnable scale and bias.

Distributed training (``torchrun``): when ``torch.distributed`` is initialised
with more than one rank, every rank gathers the embeddings of all ranks (the
gradient flows back to each rank's own shard), so each sees the global batch
of negatives, and the losses return the *global* value — equal to the
single-process loss on the concatenated batch. Each rank's autograd graph
holds only its share of that loss (its own rows as anchors), so the gradient
w.r.t. a rank's inputs is exact, and summing parameter gradients over ranks
(``all_reduce(SUM)``; :class:`ContrastiveAligner` does it) gives the exact
gradient of the global loss. This is open_clip's ``local_loss=True,
gather_with_grad=True`` arrangement, which also costs each rank only
``n_local × N`` logits instead of ``N × N``.

This module also holds the small training engine (:class:`_TrainLoop`) that
:mod:`align.repa` reuses: seeded batches, checkpoint / resume, and rollback on
divergence.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import atomic_write_bytes, load_artifact, save_artifact
from .device import torch_device
from .validation import as_matrix, check_choice, check_paired, check_positive_int

__all__ = [
    "ContrastiveAligner",
    "clip_loss",
    "siglip_loss",
    "gather_with_grad",
    "ClipLoss",
    "SigLipLoss",
    "TrainingDivergedError",
]

PathLike = Union[str, os.PathLike]

# CLIP: temperature initialised at 0.07 and the logit scale clipped at 100 "to
# prevent scaling the logits by more than 100" (Radford et al. 2021, Sec. 2.5).
CLIP_INIT_LOGIT_SCALE = math.log(1 / 0.07)
CLIP_MAX_LOGIT_SCALE = math.log(100.0)
# SigLIP: t' = log 10 and b = -10 at initialisation (Zhai et al. 2023, Sec. 3.2,
# Algorithm 1); the negative bias counters the n-1 negatives per positive.
SIGLIP_INIT_LOGIT_SCALE = math.log(10.0)
SIGLIP_INIT_LOGIT_BIAS = -10.0


class TrainingDivergedError(RuntimeError):
    """Raised when a trainer keeps producing non-finite losses or gradients
    after rolling back and lowering the learning rate."""


# ---------------------------------------------------------------------------
# distributed gather


def _dist_active(distributed: Optional[bool]) -> bool:
    if distributed is False:
        return False
    ok = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed and not ok:
        raise ValueError("distributed=True but torch.distributed is not initialised (init_process_group first)")
    return bool(ok and torch.distributed.get_world_size() > 1)


class _AllGather(torch.autograd.Function):
    """all_gather of rows (shards may differ in size); the backward sums the
    incoming gradient over ranks and returns this rank's slice, like
    ``torch.distributed.nn.all_gather``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: Tuple[int, ...], rank: int) -> torch.Tensor:  # type: ignore[override]
        dist = torch.distributed
        m = max(sizes)
        padded = x.new_zeros((m,) + tuple(x.shape[1:]))
        padded[: x.shape[0]] = x
        bufs = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(bufs, padded.contiguous())
        ctx.sizes, ctx.rank = sizes, rank
        return torch.cat([b[:s] for b, s in zip(bufs, sizes)], dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        grad = grad.contiguous().clone()
        # rank j's share of the loss depends on our rows through its gathered copy
        torch.distributed.all_reduce(grad)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None


def _shard_sizes(n_local: int, device: torch.device) -> Tuple[Tuple[int, ...], int]:
    dist = torch.distributed
    world, rank = dist.get_world_size(), dist.get_rank()
    t = torch.tensor([n_local], dtype=torch.int64, device=device)
    out = [torch.zeros_like(t) for _ in range(world)]
    dist.all_gather(out, t)  # plain tensors: never all_gather_object, which pickles
    return tuple(int(v.item()) for v in out), rank


def _gather(x: torch.Tensor, sizes: Tuple[int, ...], rank: int) -> torch.Tensor:
    return _AllGather.apply(x, sizes, rank)


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (rows) from every rank, in rank order.

    Outside ``torch.distributed`` (or with one rank) returns ``x``. Shards may
    have different row counts. The backward pass sums the gradient over ranks
    and hands each rank the slice of its own rows, so a loss that is summed
    over ranks (each rank contributing its share, as :func:`clip_loss` and
    :func:`siglip_loss` do) gets exact gradients on every shard.
    """
    if not _dist_active(None):
        return x
    sizes, rank = _shard_sizes(x.shape[0], x.device)
    return _gather(x, sizes, rank)


def _global_value(local: torch.Tensor) -> torch.Tensor:
    """A tensor whose value is the sum of ``local`` over ranks and whose
    gradient is that of this rank's ``local`` only."""
    total = local.detach().clone()
    torch.distributed.all_reduce(total)
    return local + (total - local.detach())


def _pairs(a: torch.Tensor, b: torch.Tensor, distributed: Optional[bool]):
    """Normalised local rows, gathered rows of both sides, and the offset of
    this rank's rows in the global batch."""
    if a.ndim != 2 or b.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"a and b must be 2-D with the same shape (paired rows), got {tuple(a.shape)} and {tuple(b.shape)}")
    a = F.normalize(a, dim=1)
    b = F.normalize(b, dim=1)
    if not _dist_active(distributed):
        return a, b, a, b, 0, a.shape[0], False
    sizes, rank = _shard_sizes(a.shape[0], a.device)
    a_all, b_all = _gather(a, sizes, rank), _gather(b, sizes, rank)
    return a, b, a_all, b_all, sum(sizes[:rank]), sum(sizes), True


def _as_scalar(v: Any, like: torch.Tensor) -> torch.Tensor:
    return v if isinstance(v, torch.Tensor) else torch.tensor(float(v), dtype=like.dtype, device=like.device)


def clip_loss(a: torch.Tensor, b: torch.Tensor, logit_scale: Union[float, torch.Tensor], *, distributed: Optional[bool] = None) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP, Radford et al. 2021).

    With rows L2-normalised and ``S = logit_scale · A Bᵀ`` (N × N, positives on
    the diagonal)::

        loss = ½ [ (1/N) Σ_i CE(S_i·, i) + (1/N) Σ_j CE(S_·j, j) ]

    i.e. the mean of the A→B and B→A cross-entropies. ``logit_scale`` is the
    scale itself (1/temperature), not its log. Invariant to the norms of the
    rows; ≥ 0; equals log N when every similarity is equal.

    Under ``torch.distributed`` (``distributed=None`` detects it) the batch is
    the concatenation of every rank's rows; see the module docstring.
    """
    a, b, a_all, b_all, offset, n_total, dist = _pairs(a, b, distributed)
    scale = _as_scalar(logit_scale, a)
    labels = torch.arange(offset, offset + a.shape[0], device=a.device)
    loss_ab = F.cross_entropy(scale * a @ b_all.T, labels, reduction="sum")
    loss_ba = F.cross_entropy(scale * b @ a_all.T, labels, reduction="sum")
    local = (loss_ab + loss_ba) / (2 * n_total)
    return _global_value(local) if dist else local


def siglip_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: Union[float, torch.Tensor],
    logit_bias: Union[float, torch.Tensor],
    *,
    distributed: Optional[bool] = None,
) -> torch.Tensor:
    """Pairwise sigmoid loss (SigLIP, Zhai et al. 2023, Algorithm 1).

    With rows L2-normalised, ``z_ij = +1`` for a pair (i = j) and ``-1``
    otherwise::

        loss = -(1/N) Σ_i Σ_j log σ( z_ij · (logit_scale · a_i·b_j + logit_bias) )

    (normalised by the batch size N, as in the paper). ``logit_scale`` is the
    scale itself, not its log. Under ``torch.distributed`` all N² pairs of the
    global batch are counted (each rank its own rows against all).
    """
    a, b, a_all, b_all, offset, n_total, dist = _pairs(a, b, distributed)
    scale, bias = _as_scalar(logit_scale, a), _as_scalar(logit_bias, a)
    logits = scale * a @ b_all.T + bias
    z = -torch.ones_like(logits)
    rows = torch.arange(a.shape[0], device=a.device)
    z[rows, rows + offset] = 1.0
    local = -F.logsigmoid(z * logits).sum() / n_total
    return _global_value(local) if dist else local


class ClipLoss(nn.Module):
    """:func:`clip_loss` with a learnable log scale, initialised at log(1/0.07)
    and kept in [0, log 100] by :meth:`clamp_` (Radford et al. 2021)."""

    def __init__(self) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(CLIP_INIT_LOGIT_SCALE, dtype=torch.float32))

    def forward(self, a: torch.Tensor, b: torch.Tensor, distributed: Optional[bool] = None) -> torch.Tensor:
        return clip_loss(a, b, self.logit_scale.exp(), distributed=distributed)

    @torch.no_grad()
    def clamp_(self) -> None:
        # open_clip clamps in place after the optimiser step, so the gradient
        # is never cut at the boundary
        self.logit_scale.clamp_(0.0, CLIP_MAX_LOGIT_SCALE)


class SigLipLoss(nn.Module):
    """:func:`siglip_loss` with a learnable log scale (init log 10) and bias
    (init −10), as in Zhai et al. 2023."""

    def __init__(self) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(SIGLIP_INIT_LOGIT_SCALE, dtype=torch.float32))
        self.logit_bias = nn.Parameter(torch.tensor(SIGLIP_INIT_LOGIT_BIAS, dtype=torch.float32))

    def forward(self, a: torch.Tensor, b: torch.Tensor, distributed: Optional[bool] = None) -> torch.Tensor:
        return siglip_loss(a, b, self.logit_scale.exp(), self.logit_bias, distributed=distributed)

    def clamp_(self) -> None:
        """SigLIP does not clip its scale."""


_LOSSES = {"clip": ClipLoss, "siglip": SigLipLoss}
_HEADS = ("linear", "mlp")


# ---------------------------------------------------------------------------
# training engine (shared with align.repa)


def _sha256_arrays(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN / Inf
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return repr(v)


_CKPT_RE = re.compile(r"^ckpt-(\d{9})$")
_LATEST = "LATEST"


def _fork_rng(dev: torch.device):
    """Fork torch's global RNG (CPU, and ``dev`` when it is a GPU) so that
    seeding inside a fit leaves the caller's random stream alone."""
    if dev.type == "cuda":
        return torch.random.fork_rng(devices=[torch.cuda.current_device() if dev.index is None else dev.index])
    return torch.random.fork_rng(devices=[])


class _TrainLoop:
    """Seeded mini-batch training with checkpoint / resume and divergence rollback.

    - Batches: epoch ``e`` visits the rows in the order
      ``np.random.default_rng([seed, e]).permutation(n)``, cut into batches of
      ``batch_size``; the order depends only on (seed, epoch), so a resumed run
      sees exactly the batches the uninterrupted run would have seen. Under
      ``torch.distributed`` each global batch is split into contiguous,
      near-equal parts, one per rank, and parameter gradients are summed over
      ranks.
    - Checkpoints (``checkpoint_dir``): every ``checkpoint_every`` steps and at
      each epoch's end, the whole state (parameters, optimiser moments, torch
      RNG, position, running loss, history, learning-rate factor) goes into a
      new folder ``ckpt-<n>`` (safetensors + JSON); then the file ``LATEST``
      is atomically replaced to name it, then older folders are deleted. A
      kill at any moment leaves ``LATEST`` naming a complete checkpoint.
      A new run with the same ``checkpoint_dir`` resumes from it; one whose
      data or settings differ (the ``fingerprint``) is refused.
    - Divergence: before each optimiser step the pre-step state is kept in
      memory. A non-finite loss or gradient norm restores the last such state
      (the step whose update led here is replayed), halves the learning rate
      and goes on; ``max_retries`` consecutive failures without getting past
      the failing step raise :class:`TrainingDivergedError` with the step and
      the recent losses.
    """

    def __init__(
        self,
        *,
        net: nn.Module,
        kind: str,
        n: int,
        batch_size: int,
        epochs: int,
        lr: float,
        weight_decay: float,
        seed: int,
        fingerprint: Dict[str, Any],
        checkpoint_dir: Optional[PathLike] = None,
        checkpoint_every: Optional[int] = None,
        max_retries: int = 5,
        max_grad_norm: Optional[float] = None,
        progress: bool = True,
        desc: str = "train",
        post_step: Optional[Callable[[], None]] = None,
        distributed: bool = False,
        min_batch: int = 1,
    ) -> None:
        self.net, self.kind = net, kind
        self.n, self.batch_size, self.epochs = n, batch_size, epochs
        self.lr, self.seed = float(lr), int(seed)
        self.fingerprint = _jsonable(fingerprint)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpoint_every = checkpoint_every
        self.max_retries, self.max_grad_norm = max_retries, max_grad_norm
        self.progress, self.desc, self.post_step = progress, desc, post_step
        self.distributed = distributed
        self.world = torch.distributed.get_world_size() if distributed else 1
        self.rank = torch.distributed.get_rank() if distributed else 0
        self.min_batch = max(min_batch, self.world)
        self.steps_per_epoch = max(1, math.ceil(n / batch_size))
        decay = [p for p in net.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in net.parameters() if p.requires_grad and p.ndim < 2]
        # no weight decay on biases, gains and temperatures (as open_clip)
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)
        # position and bookkeeping (all part of the saved state)
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.epoch_loss_sum = 0.0
        self.epoch_loss_count = 0
        self.epoch_extra: Dict[str, float] = {}  # sums of the step function's extra numbers
        self.lr_scale = 1.0
        self.history: List[Dict[str, Any]] = []
        self.rollbacks: List[Dict[str, Any]] = []
        self.resumed_from: Optional[int] = None
        self.save_seq = 0  # checkpoint folders are numbered by this, never reused

    # -- state ------------------------------------------------------------
    def _pack(self) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
        tensors = {f"net.{k}": v.detach().clone() for k, v in self.net.state_dict().items()}
        for idx, st in self.optimizer.state_dict()["state"].items():
            for key, val in st.items():
                t = val if isinstance(val, torch.Tensor) else torch.tensor(val)
                tensors[f"optim.{idx}.{key}"] = t.detach().clone()
        tensors["rng.torch"] = torch.get_rng_state().clone()
        meta = {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_loss_count": self.epoch_loss_count,
            "epoch_extra": dict(self.epoch_extra),
        }
        return tensors, meta

    def _unpack(self, tensors: Dict[str, Any], meta: Dict[str, Any], source: str) -> None:
        sd = self.net.state_dict()
        want = {f"net.{k}" for k in sd}
        have = {k for k in tensors if k.startswith("net.")}
        if want != have:
            raise ValueError(
                f"{source}: parameters {sorted(have ^ want)[:5]} differ from this model's; "
                "it was written for another architecture"
            )
        new_sd = {}
        for k, v in sd.items():
            t = torch.as_tensor(tensors[f"net.{k}"])
            if tuple(t.shape) != tuple(v.shape):
                raise ValueError(f"{source}: tensor {k!r} has shape {tuple(t.shape)}, the model has {tuple(v.shape)}")
            new_sd[k] = t.to(dtype=v.dtype)
        self.net.load_state_dict(new_sd)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        state: Dict[int, Dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, idx, key = k.split(".", 2)
                i = int(idx)
                if i >= len(params):
                    raise ValueError(f"{source}: optimiser state does not fit this model")
                t = torch.as_tensor(v).clone()
                state.setdefault(i, {})[key] = t
        groups = self.optimizer.state_dict()["param_groups"]
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
        torch.set_rng_state(torch.as_tensor(tensors["rng.torch"]).to(torch.uint8).clone())
        self.epoch = int(meta["epoch"])
        self.step_in_epoch = int(meta["step_in_epoch"])
        self.global_step = int(meta["global_step"])
        self.epoch_loss_sum = float(meta["epoch_loss_sum"])
        self.epoch_loss_count = int(meta["epoch_loss_count"])
        self.epoch_extra = {str(k): float(v) for k, v in dict(meta.get("epoch_extra") or {}).items()}

    def _set_lr(self) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr * self.lr_scale

    # -- checkpoints --------------------------------------------------------
    def _save_checkpoint(self) -> None:
        if self.checkpoint_dir is None:
            return
        if self.rank == 0:
            tensors, meta = self._pack()
            config = {
                "fingerprint": self.fingerprint,
                "state": meta,
                "lr_scale": self.lr_scale,
                "history": _jsonable(self.history),
                "rollbacks": _jsonable(self.rollbacks),
                "save_seq": self.save_seq + 1,
            }
            d = self.checkpoint_dir
            self.save_seq += 1
            name = f"ckpt-{self.save_seq:09d}"
            if (d / name).exists():  # debris of a save killed before LATEST named it
                shutil.rmtree(d / name)
            save_artifact(d / name, f"{self.kind}-checkpoint", config, tensors)
            atomic_write_bytes(d / _LATEST, name.encode())
            for old in d.iterdir():
                if old.is_dir() and _CKPT_RE.match(old.name) and old.name != name:
                    shutil.rmtree(old, ignore_errors=True)
        if self.distributed:
            torch.distributed.barrier()

    def _load_checkpoint(self) -> bool:
        if self.checkpoint_dir is None:
            return False
        latest = self.checkpoint_dir / _LATEST
        if not latest.is_file():
            return False
        name = latest.read_text().strip()
        if not _CKPT_RE.match(name):
            raise ValueError(f"checkpoint_dir: {latest} names {name!r}, not a checkpoint folder")
        path = self.checkpoint_dir / name
        config, tensors, _ = load_artifact(
            path, f"{self.kind}-checkpoint", expected_config_keys=("fingerprint", "state", "lr_scale", "history", "rollbacks", "save_seq")
        )
        if config.get("fingerprint") != self.fingerprint:
            old, new = config.get("fingerprint") or {}, self.fingerprint
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ValueError(
                f"checkpoint_dir {str(self.checkpoint_dir)!r} holds a checkpoint of a different run "
                f"(differs in: {', '.join(diff)}); use another checkpoint_dir or delete this one"
            )
        self._unpack(tensors, config["state"], str(path))
        self.lr_scale = float(config["lr_scale"])
        self.history = list(config["history"])
        self.rollbacks = list(config["rollbacks"])
        self.save_seq = int(config["save_seq"])
        self.resumed_from = self.global_step
        return True

    # -- the loop -------------------------------------------------------------
    def _batch(self, perm: np.ndarray, s: int) -> np.ndarray:
        idx = perm[s * self.batch_size : (s + 1) * self.batch_size]
        if self.world > 1:
            idx = np.array_split(idx, self.world)[self.rank]
        return idx

    def _grad_norm(self) -> float:
        grads = [p.grad for p in self.net.parameters() if p.grad is not None]
        if not grads:
            return 0.0
        if self.distributed:
            for g in grads:
                torch.distributed.all_reduce(g)
        max_norm = self.max_grad_norm if self.max_grad_norm is not None else float("inf")
        return float(torch.nn.utils.clip_grad_norm_([p for p in self.net.parameters() if p.grad is not None], max_norm))

    def run(
        self,
        step_fn: Callable[[np.ndarray], Union[torch.Tensor, Tuple[torch.Tensor, Dict[str, float]]]],
        epoch_fn: Optional[Callable[[int], Dict[str, Any]]] = None,
    ) -> "_TrainLoop":
        """Train. ``step_fn(rows)`` returns the loss (a scalar tensor) of the
        batch ``rows``, or ``(loss, {name: float})``: those numbers are
        averaged over the epoch's steps into its record; ``epoch_fn(epoch)`` returns extra numbers for that
        epoch's history record (it may raise to stop training: the state at
        the last checkpoint is kept)."""
        from tqdm.auto import tqdm

        self._load_checkpoint()
        self._set_lr()
        snapshot = self._pack()
        fails, fail_step = 0, -1
        recent: List[float] = []
        perm_epoch, perm = -1, np.arange(0)
        total = self.epochs * self.steps_per_epoch
        bar = tqdm(
            total=total,
            initial=min(self.global_step, total),
            desc=self.desc,
            unit="step",
            disable=not self.progress or self.rank != 0,
        )
        try:
            while self.epoch < self.epochs:
                if perm_epoch != self.epoch:
                    perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
                    perm_epoch = self.epoch
                if self.step_in_epoch < self.steps_per_epoch:
                    idx = self._batch(perm, self.step_in_epoch)
                    full = len(perm[self.step_in_epoch * self.batch_size : (self.step_in_epoch + 1) * self.batch_size])
                    if full < self.min_batch:  # a last batch too small to hold a negative
                        self.step_in_epoch += 1
                        continue
                    self.net.train()
                    loss = step_fn(idx)
                    extra: Dict[str, float] = {}
                    if isinstance(loss, tuple):
                        loss, extra = loss
                    lval = float(loss.detach())
                    gnorm = float("nan")
                    ok = math.isfinite(lval)
                    if ok:
                        self.optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        gnorm = self._grad_norm()
                        ok = math.isfinite(gnorm)
                    recent = (recent + [lval])[-10:]
                    if not ok:
                        fails += 1
                        fail_step = max(fail_step, self.global_step)
                        self.rollbacks.append(
                            {"step": self.global_step, "loss": lval, "grad_norm": gnorm, "lr": self.lr * self.lr_scale}
                        )
                        if fails > self.max_retries:
                            raise TrainingDivergedError(
                                f"training diverged at step {fail_step} (epoch {self.epoch}): loss {lval}, "
                                f"gradient norm {gnorm}, still non-finite after {self.max_retries} rollbacks "
                                f"with the learning rate halved each time (now {self.lr * self.lr_scale:g}); "
                                f"recent losses: {[round(x, 6) if math.isfinite(x) else x for x in recent]}. "
                                "Check the inputs' scale, or lower lr."
                            )
                        self.optimizer.zero_grad(set_to_none=True)
                        self._unpack(*snapshot, source="in-memory snapshot")
                        self.lr_scale *= 0.5
                        self._set_lr()
                        bar.n = self.global_step
                        bar.refresh()
                        continue
                    if self.global_step > fail_step:
                        fails = 0
                    snapshot = self._pack()  # the last state whose loss and gradient were finite
                    self.optimizer.step()
                    if self.post_step is not None:
                        self.post_step()
                    self.epoch_loss_sum += lval
                    self.epoch_loss_count += 1
                    for k, v in extra.items():
                        self.epoch_extra[k] = self.epoch_extra.get(k, 0.0) + float(v)
                    self.step_in_epoch += 1
                    self.global_step += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{lval:.4f}")
                    if self.checkpoint_every and self.global_step % self.checkpoint_every == 0:
                        self._save_checkpoint()
                    continue
                # end of epoch
                record: Dict[str, Any] = {
                    "epoch": self.epoch,
                    "step": self.global_step,
                    "loss": self.epoch_loss_sum / max(self.epoch_loss_count, 1),
                    "lr": self.lr * self.lr_scale,
                }
                for k, v in self.epoch_extra.items():
                    record[k] = v / max(self.epoch_loss_count, 1)
                if epoch_fn is not None:
                    record.update(epoch_fn(self.epoch) or {})
                self.history.append(_jsonable(record))
                self.epoch += 1
                self.step_in_epoch = 0
                self.epoch_loss_sum, self.epoch_loss_count, self.epoch_extra = 0.0, 0, {}
                self._save_checkpoint()
        finally:
            bar.close()
        return self


# ---------------------------------------------------------------------------
# the estimator


def _make_head(kind: str, d_in: int, dim: int, hidden: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(d_in, dim)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, dim))


class _Net(nn.Module):
    def __init__(self, head: str, d_a: int, d_b: int, dim: int, hidden: int, loss: str) -> None:
        super().__init__()
        self.head_a = _make_head(head, d_a, dim, hidden)
        self.head_b = _make_head(head, d_b, dim, hidden)
        self.loss = _LOSSES[loss]()


class ContrastiveAligner:
    """Heads mapping two paired embedding spaces into one, trained contrastively.

    ``head_a`` maps rows of ``X`` (space A), ``head_b`` rows of ``Y`` (space
    B) into a ``dim``-wide space; outputs are L2-normalised, so paired rows
    end up with high cosine. Training minimises :func:`clip_loss` (learnable
    temperature, init 0.07, scale ≤ 100; Radford et al. 2021) or
    :func:`siglip_loss` (learnable scale init 10 and bias init −10; Zhai et al.
    2023) with AdamW on mini-batches of paired rows. Under ``torchrun`` every
    rank passes the same ``X, Y``; each takes its part of every global batch
    and the result equals the single-process run (see the module docstring);
    ``batch_size`` is the global batch::

        # train.py, launched with: torchrun --nproc_per_node=2 train.py
        torch.distributed.init_process_group("gloo")  # "nccl" on GPUs
        a = align.ContrastiveAligner(loss="siglip", batch_size=1024).fit(X, Y)  # same X, Y on every rank

    Parameters
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
        :class:`TrainingDivergedError`.
    progress : tqdm bar.

    Attributes after ``fit``
    ------------------------
    d_a_, d_b_ : input widths. history_ : one dict per epoch (loss, lr,
    logit_scale, logit_bias). rollbacks_ : divergence events (step, loss, lr).
    logit_scale_, logit_bias_ : learned scale (not its log) and bias (SigLIP).
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
    _RUNTIME_PARAMS = ("device", "checkpoint_dir", "checkpoint_every", "progress")

    def get_params(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in self._SAVED_PARAMS + self._RUNTIME_PARAMS}

    def __repr__(self) -> str:
        return f"ContrastiveAligner({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    def _check_params(self) -> None:
        check_choice(self.head, "head", _HEADS)
        check_choice(self.loss, "loss", tuple(_LOSSES))
        check_positive_int(self.dim, "dim")
        check_positive_int(self.epochs, "epochs")
        check_positive_int(self.batch_size, "batch_size", minimum=2)
        check_positive_int(self.hidden, "hidden")
        check_positive_int(self.seed, "seed", minimum=0)
        check_positive_int(self.max_retries, "max_retries", minimum=0)
        if self.checkpoint_every is not None:
            check_positive_int(self.checkpoint_every, "checkpoint_every")
        for name in ("lr", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (name == "lr" and v == 0):
                raise ValueError(f"{name} must be a finite number {'> 0' if name == 'lr' else '>= 0'}, got {v!r}")

    # -- fit --------------------------------------------------------------
    def fit(self, X: Any, Y: Any, callback: Optional[Callable[[int, "ContrastiveAligner"], Optional[dict]]] = None) -> "ContrastiveAligner":
        """Train the heads on paired rows ``X[i] <-> Y[i]``.

        ``callback(epoch, self)``, if given, runs after each epoch (the
        aligner is usable: ``self.transform_a``...) and may return a dict of
        extra numbers for ``history_``; raising in it stops training (work up
        to the last checkpoint is kept).
        """
        self._check_params()
        X = as_matrix(X, "X", dtype=np.float32, min_rows=2)
        Y = as_matrix(Y, "Y", dtype=np.float32, min_rows=2)
        check_paired(X, Y)
        dev = torch_device(self.device)
        distributed = _dist_active(None)
        with _fork_rng(dev):
            torch.manual_seed(self.seed)
            net = _Net(self.head, X.shape[1], Y.shape[1], self.dim, self.hidden, self.loss).to(dev)
            self.d_a_, self.d_b_ = X.shape[1], Y.shape[1]
            self._net = net
            Xt, Yt = torch.from_numpy(X).to(dev), torch.from_numpy(Y).to(dev)
            fingerprint = {
                "data": _sha256_arrays(X, Y),
                "world_size": torch.distributed.get_world_size() if distributed else 1,
                # epochs may grow between runs (train on); the rest must match
                **{k: getattr(self, k) for k in self._SAVED_PARAMS if k not in ("epochs", "max_retries")},
            }
            loop = _TrainLoop(
                net=net,
                kind="ContrastiveAligner",
                n=X.shape[0],
                batch_size=self.batch_size,
                epochs=self.epochs,
                lr=self.lr,
                weight_decay=self.weight_decay,
                seed=self.seed,
                fingerprint=fingerprint,
                checkpoint_dir=self.checkpoint_dir,
                checkpoint_every=self.checkpoint_every,
                max_retries=self.max_retries,
                progress=self.progress,
                desc=f"{self.loss} {self.head}",
                post_step=net.loss.clamp_,
                distributed=distributed,
                min_batch=2,
            )
            self._loop = loop

            def step(rows: np.ndarray) -> torch.Tensor:
                r = torch.from_numpy(rows).to(dev)
                return _loss_step(net, net.head_a(Xt[r]), net.head_b(Yt[r]))

            def on_epoch(epoch: int) -> Dict[str, Any]:
                rec = self._temperatures()
                if callback is not None:
                    rec.update(callback(epoch, self) or {})
                return rec

            try:
                loop.run(step, on_epoch)
            except BaseException:
                # an interrupted fit leaves the aligner unfitted (its work is in
                # checkpoint_dir, if set); history_ / rollbacks_ stay for diagnosis
                del self._net
                raise
            finally:
                self.history_ = loop.history
                self.rollbacks_ = loop.rollbacks
        self._set_learned()
        return self

    def _temperatures(self) -> Dict[str, Any]:
        loss = self._net.loss
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
        if not hasattr(self, "_net"):
            raise ValueError("this ContrastiveAligner is not fitted yet: call fit(X, Y) first")

    def _apply(self, side: str, Z: Any, name: str, batch: int = 8192) -> np.ndarray:
        self._check_fitted()
        head = getattr(self._net, f"head_{side}")
        width = getattr(self, f"d_{side}_")
        Z = as_matrix(Z, name, dtype=np.float32)
        if Z.shape[1] != width:
            raise ValueError(f"{name} has {Z.shape[1]} columns but this aligner was fitted on {width}-wide {name}")
        dev = next(self._net.parameters()).device
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
        from .knn import knn
        from .metrics.neighbors import mutual_knn

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
        try:
            from .metrics.kernel import cka
        except ImportError:  # pragma: no cover - kernel metrics ship with align
            return out
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
            "history": _jsonable(self.history_),
        }
        tensors = {k: v.detach().cpu() for k, v in self._net.state_dict().items()}
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
        net = _Net(obj.head, d_a, d_b, obj.dim, obj.hidden, obj.loss)
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
        obj._net = net.to(torch_device(device))
        obj.d_a_, obj.d_b_ = d_a, d_b
        obj.history_ = list(config.get("history") or [])
        obj.rollbacks_ = []
        obj._set_learned()
        return obj


def _loss_step(net: _Net, za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
    """One batch's loss (a module-level name, so tests can inject a divergence)."""
    return net.loss(za, zb)
