"""Contrastive losses with their distributed gather, as in open_clip's ``loss.py``.

- CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural
  Language Supervision"): symmetric InfoNCE over the batch, learnable
  temperature.
- SigLIP (Zhai, Mustafa, Kolesnikov & Beyer 2023, "Sigmoid Loss for Language
  Image Pre-Training"): an independent binary (sigmoid) loss on every pair,
  learnable scale and bias.

Each loss is a plain function, and an ``nn.Module`` holding its learnable
temperature (:class:`ClipLoss`, :class:`SigLipLoss`).

Distributed training (``torchrun``): when ``torch.distributed`` is initialised
with more than one rank, every rank gathers the embeddings of all ranks (the
gradient flows back to each rank's own shard), so each sees the global batch
of negatives, and the losses return the *global* value — equal to the
single-process loss on the concatenated batch. Each rank's autograd graph
holds only its share of that loss (its own rows as anchors), so the gradient
w.r.t. a rank's inputs is exact, and summing parameter gradients over ranks
(``all_reduce(SUM)``; the training engine does it) gives the exact gradient of
the global loss. This is open_clip's ``local_loss=True, gather_with_grad=True``
arrangement, which also costs each rank only ``n_local × N`` logits instead of
``N × N``.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "clip_loss",
    "siglip_loss",
    "gather_with_grad",
    "distributed_active",
    "ClipLoss",
    "SigLipLoss",
    "LOSSES",
    "CLIP_INIT_LOGIT_SCALE",
    "CLIP_MAX_LOGIT_SCALE",
    "SIGLIP_INIT_LOGIT_SCALE",
    "SIGLIP_INIT_LOGIT_BIAS",
]

# CLIP: temperature initialised at 0.07 and the logit scale clipped at 100 "to
# prevent scaling the logits by more than 100" (Radford et al. 2021, Sec. 2.5).
CLIP_INIT_LOGIT_SCALE = math.log(1 / 0.07)
CLIP_MAX_LOGIT_SCALE = math.log(100.0)
# SigLIP: t' = log 10 and b = -10 at initialisation (Zhai et al. 2023, Sec. 3.2,
# Algorithm 1); the negative bias counters the n-1 negatives per positive.
SIGLIP_INIT_LOGIT_SCALE = math.log(10.0)
SIGLIP_INIT_LOGIT_BIAS = -10.0


# ---------------------------------------------------------------------------
# distributed gather


def distributed_active(distributed: Optional[bool] = None) -> bool:
    """Whether the losses gather over ranks: ``torch.distributed`` is initialised
    with more than one rank (``distributed=None``), or never (``False``); ``True``
    insists (ValueError when there is no process group)."""
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
    if not distributed_active(None):
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
    if not distributed_active(distributed):
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


#: loss name -> module with its learnable temperature
LOSSES = {"clip": ClipLoss, "siglip": SigLipLoss}
