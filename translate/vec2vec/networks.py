"""vec2vec's networks and losses (Jha, Zhang, Shmatikov & Morris 2025, §3).

Every part is a stack of pre-norm residual MLP blocks
``h <- h + W2 SiLU(W1 LayerNorm(h))`` between linear projections:
input adapters ``A_a, A_b``, a shared backbone ``T`` and output adapters
``B_a, B_b`` give the translations ``F_ab = B_b∘T∘A_a``, ``F_ba = B_a∘T∘A_b``
and the reconstructions ``R_a = B_a∘T∘A_a``, ``R_b = B_b∘T∘A_b``. Without the
shared latent (CycleGAN) the generators are direct stacks ``A -> B``, ``B -> A``
of the same depth. One discriminator per output space (and, with the shared
latent, one per latent direction) scores rows.

:func:`generator_terms` and :func:`discriminator_loss` are the losses of one
training step (least-squares GAN, Mao et al. 2017; cycle; VSP; reconstruction;
latent GAN; anchor); the module docstring of :mod:`translate.vec2vec.estimator`
spells them out.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "factorise_linear",
    "Block",
    "Stack",
    "Generators",
    "Discriminator",
    "AveragedState",
    "BestState",
    "copy_params",
    "build_modules",
    "apply_linear_init",
    "generator_terms",
    "discriminator_loss",
    "flatten_params",
    "unflatten_params",
]


class Block(nn.Module):
    """Pre-norm residual MLP block; the output layer starts at zero so that a
    stack of blocks starts as the identity (the ends are linear)."""

    def __init__(self, w: int, h: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(w)
        self.fc1 = nn.Linear(w, h)
        self.fc2 = nn.Linear(h, w)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(F.silu(self.fc1(self.norm(h))))


class Stack(nn.Module):
    """[Linear(d_in, w)] -> n_blocks x Block -> [Linear(w, d_out)]."""

    def __init__(self, w: int, h: int, n_blocks: int, d_in: Optional[int] = None, d_out: Optional[int] = None) -> None:
        super().__init__()
        self.proj_in = nn.Linear(d_in, w) if d_in is not None else None
        self.blocks = nn.Sequential(*[Block(w, h) for _ in range(n_blocks)])
        self.proj_out = nn.Linear(w, d_out) if d_out is not None else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.proj_in is not None:
            h = self.proj_in(h)
        h = self.blocks(h)
        if self.proj_out is not None:
            h = self.proj_out(h)
        return h


class Generators(nn.Module):
    """Both translation directions: adapters + shared backbone (``shared``), or
    direct stacks of ``3 * depth`` blocks (CycleGAN)."""

    def __init__(self, d_a: int, d_b: int, width: int, hidden: int, depth: int, shared: bool) -> None:
        super().__init__()
        self.shared = shared
        if shared:
            self.in_a = Stack(width, hidden, depth, d_in=d_a)
            self.in_b = Stack(width, hidden, depth, d_in=d_b)
            self.backbone = Stack(width, hidden, depth)
            self.out_a = Stack(width, hidden, depth, d_out=d_a)
            self.out_b = Stack(width, hidden, depth, d_out=d_b)
        else:  # CycleGAN: direct maps of the same depth as adapter+backbone+adapter
            self.ab = Stack(width, hidden, 3 * depth, d_in=d_a, d_out=d_b)
            self.ba = Stack(width, hidden, 3 * depth, d_in=d_b, d_out=d_a)

    def linear_ends(self):
        """(into latent from A, out to B, into latent from B, out to A)."""
        if self.shared:
            return self.in_a.proj_in, self.out_b.proj_out, self.in_b.proj_in, self.out_a.proj_out
        return self.ab.proj_in, self.ab.proj_out, self.ba.proj_in, self.ba.proj_out

    def a2b(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_b(self.backbone(self.in_a(x))) if self.shared else self.ab(x)

    def b2a(self, y: torch.Tensor) -> torch.Tensor:
        return self.out_a(self.backbone(self.in_b(y))) if self.shared else self.ba(y)

    def all(self, x: torch.Tensor, y: torch.Tensor) -> Dict[str, Any]:
        """Every output one training step needs (translations, cycles, and with
        the shared latent: latents and reconstructions)."""
        if not self.shared:
            y_hat, x_hat = self.ab(x), self.ba(y)
            return dict(y_hat=y_hat, x_hat=x_hat, x_cyc=self.ba(y_hat), y_cyc=self.ab(x_hat))
        za, zb = self.backbone(self.in_a(x)), self.backbone(self.in_b(y))
        y_hat, x_hat = self.out_b(za), self.out_a(zb)
        return dict(
            za=za,
            zb=zb,
            x_rec=self.out_a(za),
            y_rec=self.out_b(zb),
            y_hat=y_hat,
            x_hat=x_hat,
            x_cyc=self.out_a(self.backbone(self.in_b(y_hat))),
            y_cyc=self.out_b(self.backbone(self.in_a(x_hat))),
        )


class Discriminator(nn.Module):
    """A stack (``hidden`` wide, ``depth`` blocks) -> LayerNorm -> SiLU -> one score per row."""

    def __init__(self, d: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.body = Stack(hidden, hidden, depth, d_in=d)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(F.silu(self.norm(self.body(h)))).squeeze(-1)


class AveragedState(nn.Module):
    """An exponential moving average of the generators' weights, updated after every
    step: ``θ̄ <- decay · θ̄ + (1 - decay) · θ``, started at the initial weights. Averaging
    the generator's iterates damps the oscillation of adversarial training (Yazıcı et al.
    2019, "The Unusual Effectiveness of Averaging in GAN Training", ICLR). A module, so
    that the average is part of the trained state (checkpointed, resumed, rolled back)."""

    def __init__(self, gen: nn.Module, decay: float) -> None:
        super().__init__()
        self.gen = copy.deepcopy(gen)
        self.decay = float(decay)

    def update(self, gen: nn.Module) -> None:
        with torch.no_grad():
            for mine, theirs in zip(self.gen.parameters(), gen.parameters()):
                mine.lerp_(theirs, 1.0 - self.decay)

    def restore(self, gen: nn.Module) -> None:
        """Copy the average into ``gen``."""
        copy_params(self.gen, gen)


def copy_params(src: nn.Module, dst: nn.Module) -> None:
    with torch.no_grad():
        for a, b in zip(src.parameters(), dst.parameters()):
            b.copy_(a)


class BestState(nn.Module):
    """The generators kept so far (the best by score, unless the caller's test decides), with
    their score and step as buffers, so that the kept state is part of the trained state
    (checkpointed, restored on resume, rolled back with the rest)."""

    def __init__(self, gen: nn.Module) -> None:
        super().__init__()
        self.gen = copy.deepcopy(gen)
        self.register_buffer("best_score", torch.tensor(float("-inf"), dtype=torch.float64))
        self.register_buffer("best_step", torch.tensor(-1, dtype=torch.int64))

    @property
    def score(self) -> float:
        return float(self.best_score)

    @property
    def step(self) -> int:
        return int(self.best_step)

    def offer(self, gen: nn.Module, score: float, step: int, replace: Optional[bool] = None) -> None:
        """Keep ``gen``'s state if ``score`` beats the best (ties keep the earlier state), or as
        ``replace`` says when it is given (the caller's own test)."""
        if (score > self.score) if replace is None else replace:
            copy_params(gen, self.gen)
            with torch.no_grad():
                self.best_score.fill_(score)
                self.best_step.fill_(step)

    def restore(self, gen: nn.Module) -> None:
        copy_params(self.gen, gen)


def build_modules(d_a: int, d_b: int, width: int, hidden: int, depth: int, shared: bool):
    """(generators, discriminators) on the CPU, initialised from torch's global RNG
    (discriminators first: the order fixes which random numbers each module gets)."""
    discs = nn.ModuleDict({"a": Discriminator(d_a, hidden, depth), "b": Discriminator(d_b, hidden, depth)})
    if shared:
        discs["za"] = Discriminator(width, hidden, depth)
        discs["zb"] = Discriminator(width, hidden, depth)
    return Generators(d_a, d_b, width, hidden, depth, shared), discs


def apply_linear_init(gen: Generators, lin: Dict[str, np.ndarray]) -> None:
    """Make F_ab = x W + c exactly (W = U S V^T): A in = S^½U^T, B out = V S^½,
    B in = S^-½ V^T (its pseudo-inverse), A out = U S^-½; so F_ba = W^+ and
    reconstructions are projections. Unused latent directions keep a small
    random weight so that they can still learn."""
    U, s, Vt, c = lin["U"], lin["s"], lin["Vt"], lin["c"]
    r = s.shape[0]
    rs = np.sqrt(s)
    a_in, b_out, b_in, a_out = gen.linear_ends()
    with torch.no_grad():
        for lin_mod in (a_in, b_out, b_in, a_out):
            lin_mod.weight.mul_(1e-2)
            lin_mod.bias.zero_()
        a_in.weight[:r] = torch.from_numpy((U * rs).T.copy())
        b_out.weight[:, :r] = torch.from_numpy((Vt.T * rs).copy())
        b_out.bias.copy_(torch.from_numpy(c))
        b_in.weight[:r] = torch.from_numpy((Vt.T / rs).T.copy())
        b_in.bias[:r] = torch.from_numpy(-(c @ Vt.T) / rs)
        a_out.weight[:, :r] = torch.from_numpy((U / rs).copy())


# -- losses -------------------------------------------------------------------
def _msq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).sum(dim=1).mean()


def _cos_matrix(a: torch.Tensor) -> torch.Tensor:
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-8)
    return a @ a.T


def _vsp(src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return ((_cos_matrix(src) - _cos_matrix(out)) ** 2).mean()


def sinkhorn_targets(src: torch.Tensor, tgt: torch.Tensor, eps: float, iters: int) -> torch.Tensor:
    """Barycentric projection of the rows of ``src`` onto ``tgt`` under the entropic
    optimal-transport plan (Cuturi 2013) between the two batches, uniform marginals, on
    the cosine cost ``1 - cos``: row i's target is ``sum_j P_ij tgt_j / sum_j P_ij``.
    Sinkhorn's scaling iterations (``iters`` rounds, regularisation ``eps``) in float64 on
    the kernel with each row's largest entry scaled to 1 (a per-row factor the scalings
    absorb), which keeps every row of it away from underflow; no gradient flows through
    the plan. Pulling ``src`` toward these targets is a step of minibatch OT
    distribution matching (Genevay, Peyré & Cuturi 2018), the non-linear analogue of the
    Wasserstein-Procrustes refinement of :class:`translate.Isometric` (Grave et al. 2019)."""
    with torch.no_grad():
        a = src / src.norm(dim=1, keepdim=True).clamp_min(1e-8)
        b = tgt / tgt.norm(dim=1, keepdim=True).clamp_min(1e-8)
        sim = (a @ b.T).double()
        K = torch.exp((sim - sim.max(dim=1, keepdim=True).values) / eps)
        v = torch.ones(K.shape[1], dtype=K.dtype, device=K.device)
        for _ in range(iters):  # uniform marginals: u = 1 / (K v), v = 1 / (K^T u), up to constants
            u = 1.0 / (K @ v).clamp_min(1e-300)
            v = 1.0 / (K.T @ u).clamp_min(1e-300)
        plan = K * v  # each row's u_i cancels in the row-normalised barycentre
        plan = plan / plan.sum(dim=1, keepdim=True)
        return plan.to(tgt.dtype) @ tgt


def _lsgan_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (((real - 1) ** 2).mean() + (fake**2).mean())


def _lsgan_g(fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((fake - 1) ** 2).mean()


def generator_terms(out: Dict[str, Any], disc: nn.ModuleDict, x: torch.Tensor, y: torch.Tensor,
                    anchor_targets: Optional[torch.Tensor], match: Optional[Dict[str, float]] = None) -> Dict[str, torch.Tensor]:
    """The generators' loss terms of one step (unweighted): ``adv``, ``cycle``,
    ``vsp``, with the shared latent ``rec`` and ``latent``, ``anchor`` when
    ``anchor_targets`` (the initial translator's image of ``x``) are given, and ``match``
    when ``match`` gives the Sinkhorn settings (``eps``, ``iters``): the squared distance
    of each translation to its :func:`sinkhorn_targets` in the other batch, both directions."""
    parts: Dict[str, torch.Tensor] = {}
    parts["adv"] = _lsgan_g(disc["b"](out["y_hat"])) + _lsgan_g(disc["a"](out["x_hat"]))
    parts["cycle"] = _msq(out["x_cyc"], x) + _msq(out["y_cyc"], y)
    parts["vsp"] = _vsp(x, out["y_hat"]) + _vsp(y, out["x_hat"])
    if "za" in out:
        parts["rec"] = _msq(out["x_rec"], x) + _msq(out["y_rec"], y)
        parts["latent"] = _lsgan_g(disc["za"](out["za"])) + _lsgan_g(disc["zb"](out["zb"]))
    if anchor_targets is not None:
        parts["anchor"] = _msq(out["y_hat"], anchor_targets)
    if match is not None:
        parts["match"] = sum(_msq(out[k], sinkhorn_targets(out[k], real, match["eps"], match["iters"]))
                             for k, real in (("y_hat", y), ("x_hat", x)))
    return parts


def discriminator_loss(out: Dict[str, Any], disc: nn.ModuleDict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Least-squares GAN loss of the discriminators (generator outputs detached):
    ``D_b`` tells ``y`` from ``F_ab(x)``, ``D_a`` ``x`` from ``F_ba(y)``, and with
    the shared latent ``D_za`` tells ``T A_b(y)`` from ``T A_a(x)``, ``D_zb`` the converse."""
    d_loss = _lsgan_d(disc["b"](y), disc["b"](out["y_hat"].detach())) + _lsgan_d(disc["a"](x), disc["a"](out["x_hat"].detach()))
    if "za" in out:
        za, zb = out["za"].detach(), out["zb"].detach()
        d_loss = d_loss + _lsgan_d(disc["za"](zb), disc["za"](za)) + _lsgan_d(disc["zb"](za), disc["zb"](zb))
    return d_loss


# -- flat parameter vectors (how a fitted translator stores its generators) ----
def flatten_params(module: nn.Module) -> np.ndarray:
    return np.concatenate([p.detach().cpu().numpy().ravel() for p in module.parameters()]).astype(np.float32)


def unflatten_params(module: nn.Module, flat: np.ndarray) -> None:
    off = 0
    with torch.no_grad():
        for p in module.parameters():
            n = p.numel()
            p.copy_(torch.from_numpy(np.ascontiguousarray(flat[off : off + n])).view_as(p))
            off += n


def factorise_linear(W: np.ndarray, c: np.ndarray, width: int) -> Dict[str, np.ndarray]:
    """``W = U S V^T``, truncated to ``width`` directions (and to singular values
    above 1e-6 of the largest), for :func:`networks.apply_linear_init`."""
    U, s, Vt = np.linalg.svd(W, full_matrices=False)
    keep = min(width, int((s > 1e-6 * s[0]).sum())) if s.size and s[0] > 0 else 0
    keep = max(keep, 1)
    return dict(
        U=U[:, :keep].astype(np.float32),
        s=np.maximum(s[:keep], 1e-12).astype(np.float32),
        Vt=Vt[:keep].astype(np.float32),
        c=c.astype(np.float32),
    )
