"""vec2vec: unpaired translation with adapters, a shared latent space and a GAN.

Model (Jha, Zhang, Shmatikov & Morris 2025, "Harnessing the Universal Geometry
of Embeddings", arXiv:2505.12540, §3)
-------------------------------------------------------------------------
Input adapters ``A_a: R^{d_a} -> R^{m}``, ``A_b: R^{d_b} -> R^{m}``, a shared
backbone ``T: R^m -> R^m`` and output adapters ``B_a, B_b`` give

* translations ``F_ab = B_b∘T∘A_a`` and ``F_ba = B_a∘T∘A_b``,
* reconstructions ``R_a = B_a∘T∘A_a`` and ``R_b = B_b∘T∘A_b``.

Every part is a stack of pre-norm residual MLP blocks
``h <- h + W2 SiLU(W1 LayerNorm(h))`` between linear projections. Training
minimises, over unpaired minibatches ``x ~ A``, ``y ~ B`` (rows centred and
L2-normalised per space),

``L = w_adv L_adv + w_latent L_lat + w_rec L_rec + w_cycle L_cyc + w_vsp L_vsp (+ w_anchor L_anchor)``

* ``L_adv``: least-squares GAN (Mao et al. 2017) with one discriminator per
  output space: ``D_b`` tells ``y`` from ``F_ab(x)``, ``D_a`` tells ``x`` from
  ``F_ba(y)``. Discriminators minimise ``½E(D(real)-1)² + ½E D(fake)²``,
  generators ``½E(D(fake)-1)²``.
* ``L_lat``: the same on the latent space, both directions: ``D_za`` tells
  ``T A_b(y)`` (real) from ``T A_a(x)`` (fake), ``D_zb`` the converse, so both
  encoders are pushed onto one latent distribution.
* ``L_rec = E||R_a(x)-x||² + E||R_b(y)-y||²``,
* ``L_cyc = E||F_ba(F_ab(x))-x||² + E||F_ab(F_ba(y))-y||²``,
* ``L_vsp`` (vector-space preservation) ``= mean_{ij} (cos(x_i,x_j) -
  cos(F_ab(x_i),F_ab(x_j)))²`` plus the same for ``y`` and ``F_ba``: the
  within-batch similarity structure survives translation.
* ``L_anchor = E||F_ab(x) - G(x)||²`` only when initialised from another
  translator ``G`` (see ``init``).

Default weights rec 1, VSP 1, cycle 10, adversarial 1 are the paper's (§3);
Adam with betas (0.5, 0.999) as there. :class:`CycleGAN` is the same machinery
with ``shared_latent`` off: direct generators ``A -> B`` and ``B -> A`` (a
stack of the same depth), no reconstruction and no latent discriminators.

Initialisation from another translator (``init``): its best linear fit
``x W + c`` (exact for a linear translator such as the isometric one) sets the
linear ends of the A -> B path, and ``W^+`` those of B -> A, so training starts
*at* that translator; the anchor term keeps F_ab near it while the other terms
act. Denoising (``denoise``, default on): at transform time the inputs pass a
Wiener filter estimated without pairs (:func:`noise_variances`).
Measured on minilm -> mpnet (``scripts/vec2vec_study.py``; CPU budgets of a few
minutes): the filter raises the mean cosine at unchanged top-1 -- around any
translator, the isometric one included -- while adversarial fine-tuning from
the isometric start neither helps nor (with the anchor) hurts much, and
training from scratch stays near chance within such budgets.

Several seeds are trained and one is kept by an *unsupervised* criterion, the
nearest-neighbour cycle rate on held training rows: for ``x_i``, take the
nearest ``y`` to ``F_ab(x_i)``, then the nearest ``x`` to ``F_ba(y)``; the rate
at which this returns to ``i`` (averaged with the same from ``B``). A collapsed
or scrambled translator scores near chance (1/n); a consistent bijection near 1.

Robustness
----------
* Divergence: a non-finite loss or gradient norm, or a gradient norm above
  :data:`EXPLODE_GRAD_NORM`, rolls training back to the last good in-memory
  state (taken every :data:`SNAPSHOT_EVERY` steps), halves the learning rate
  and retries; after ``max_retries`` failures a ``RuntimeError`` names the step
  and the losses.
* Interruption: with ``checkpoint_dir``, every ``checkpoint_every`` steps the
  full state (generators, discriminators, Adam moments, step, learning-rate
  scale, the minibatch generator's state, history) is written as safetensors +
  JSON into a fresh folder, then a ``LATEST`` pointer is replaced atomically;
  a killed run therefore always leaves a complete checkpoint. ``fit`` resumes
  from it, and -- minibatch indices being drawn from the checkpointed numpy
  generator, and nothing else being random after initialisation -- the resumed
  run ends in the same state as an uninterrupted one (CPU, to float rounding).
  A checkpoint from other data or other hyper-parameters is refused.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from align.checkpoint import atomic_write_bytes, load_artifact, save_artifact
from align.device import torch_device
from align.knn import knn
from align.validation import check_positive_int

from .base import Translator

__all__ = ["Vec2Vec", "CycleGAN", "DEFAULT_WEIGHTS", "nn_cycle_rate", "noise_variances"]

#: Loss weights of Jha et al. 2025 (§3): reconstruction 1, VSP 1, cycle 10,
#: adversarial 1. ``latent`` weights the latent-space GAN terms; ``anchor``
#: the pull towards an initial translator (used only with ``init``).
DEFAULT_WEIGHTS: Dict[str, float] = {"rec": 1.0, "vsp": 1.0, "cycle": 10.0, "adv": 1.0, "latent": 1.0, "anchor": 0.0}
#: anchor weight used when ``init`` is given and ``weights`` does not set one.
DEFAULT_ANCHOR = 1.0
#: a gradient norm above this (before clipping) counts as an explosion.
EXPLODE_GRAD_NORM = 1e4
#: the in-memory "last good state" is refreshed this often (and at checkpoints).
SNAPSHOT_EVERY = 50
#: rows of X and Y used for the unsupervised seed-selection score.
SELECT_ROWS = 2000
_CKPT_KIND = "Vec2VecCheckpoint"
_CKPT_VERSION = 1
_STEP_DIR = re.compile(r"^step_(\d{9})$")
# parameters that do not change what is trained (excluded from the run fingerprint)
_NON_TRAINING = ("checkpoint_dir", "checkpoint_every", "device", "progress")


# --------------------------------------------------------------------------
# networks
# --------------------------------------------------------------------------
def _torch():
    import torch

    return torch


def _build_modules(d_a: int, d_b: int, width: int, hidden: int, depth: int, shared: bool):
    """(generators, discriminators) as torch modules on the CPU."""
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional

    class Block(nn.Module):
        """Pre-norm residual MLP block; the output layer starts at zero so
        that a stack of blocks starts as the identity (the ends are linear)."""

        def __init__(self, w: int, h: int):
            super().__init__()
            self.norm = nn.LayerNorm(w)
            self.fc1 = nn.Linear(w, h)
            self.fc2 = nn.Linear(h, w)
            nn.init.zeros_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)

        def forward(self, h):
            return h + self.fc2(F.silu(self.fc1(self.norm(h))))

    class Stack(nn.Module):
        """[Linear(d_in, w)] -> n_blocks x Block -> [Linear(w, d_out)]."""

        def __init__(self, w: int, h: int, n_blocks: int, d_in: Optional[int] = None, d_out: Optional[int] = None):
            super().__init__()
            self.proj_in = nn.Linear(d_in, w) if d_in is not None else None
            self.blocks = nn.Sequential(*[Block(w, h) for _ in range(n_blocks)])
            self.proj_out = nn.Linear(w, d_out) if d_out is not None else None

        def forward(self, h):
            if self.proj_in is not None:
                h = self.proj_in(h)
            h = self.blocks(h)
            if self.proj_out is not None:
                h = self.proj_out(h)
            return h

    class Generators(nn.Module):
        def __init__(self):
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

        def a2b(self, x):
            return self.out_b(self.backbone(self.in_a(x))) if self.shared else self.ab(x)

        def b2a(self, y):
            return self.out_a(self.backbone(self.in_b(y))) if self.shared else self.ba(y)

        def all(self, x, y) -> Dict[str, Any]:
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

    class Disc(nn.Module):
        def __init__(self, d: int):
            super().__init__()
            self.body = Stack(hidden, hidden, depth, d_in=d)
            self.norm = nn.LayerNorm(hidden)
            self.head = nn.Linear(hidden, 1)

        def forward(self, h):
            return self.head(F.silu(self.norm(self.body(h)))).squeeze(-1)

    discs = nn.ModuleDict({"a": Disc(d_a), "b": Disc(d_b)})
    if shared:
        discs["za"] = Disc(width)
        discs["zb"] = Disc(width)
    return Generators(), discs


def _flatten(module) -> np.ndarray:
    return np.concatenate([p.detach().cpu().numpy().ravel() for p in module.parameters()]).astype(np.float32)


def _unflatten(module, flat: np.ndarray) -> None:
    torch = _torch()
    off = 0
    with torch.no_grad():
        for p in module.parameters():
            n = p.numel()
            p.copy_(torch.from_numpy(np.ascontiguousarray(flat[off : off + n])).view_as(p))
            off += n


def _prep(X: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Centre, then scale rows to unit L2 norm (rows equal to the mean stay 0)."""
    Z = X - mean
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    return (Z / np.maximum(norms, 1e-12)).astype(np.float32)


def _msq(a, b):
    return ((a - b) ** 2).sum(dim=1).mean()


def _cos_matrix(a):
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-8)
    return a @ a.T


def _vsp(src, out):
    return ((_cos_matrix(src) - _cos_matrix(out)) ** 2).mean()


def _lsgan_d(real, fake):
    return 0.5 * (((real - 1) ** 2).mean() + (fake**2).mean())


def _lsgan_g(fake):
    return 0.5 * ((fake - 1) ** 2).mean()


def nn_cycle_rate(a2b: Callable, b2a: Callable, X: np.ndarray, Y: np.ndarray) -> float:
    """Unsupervised translation score in [0, 1] (no pairs needed).

    For each ``x_i``: ``j`` = nearest row of ``Y`` (cosine) to ``a2b(x_i)``,
    then ``i'`` = nearest row of ``X`` to ``b2a(y_j)``; the score is the rate
    of ``i' == i``, averaged with the same started from ``Y``. Collapsed maps
    (many rows onto one hub) and scrambled maps score near ``1/n``.
    """
    scores = []
    for P, Q, f, g in ((X, Y, a2b, b2a), (Y, X, b2a, a2b)):
        _, j = knn(f(P), 1, database=Q)
        _, i = knn(g(Q[j[:, 0]]), 1, database=P)
        scores.append(float(np.mean(i[:, 0] == np.arange(len(P)))))
    return float(np.mean(scores))


# --------------------------------------------------------------------------
# the trainer of one seed
# --------------------------------------------------------------------------
class _Diverged(Exception):
    pass


class _SeedRun:
    """Training state of one seed: modules, optimisers, minibatch generator."""

    def __init__(self, est: "Vec2Vec", index: int, seed_seq: np.random.SeedSequence, data: Dict[str, Any]):
        torch = _torch()
        self.est, self.index, self.data = est, index, data
        self.dev = data["device"]
        torch_seed, np_seed = (int(s) for s in seed_seq.generate_state(2, dtype=np.uint32))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed)
            self.gen, self.disc = _build_modules(
                data["d_a"], data["d_b"], data["width"], est.hidden, est.depth, est._shared_latent
            )
            if data["linear_init"] is not None:
                self._apply_linear_init(data["linear_init"])
        self.gen.to(self.dev)
        self.disc.to(self.dev)
        betas = (0.5, 0.999)  # Jha et al. 2025; standard for GANs (Radford et al. 2016)
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=est.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=est.lr, betas=betas)
        self.rng = np.random.Generator(np.random.PCG64(np_seed))
        self.step = 0
        self.lr_scale = 1.0
        self.failures = 0
        self.history: List[Dict[str, Any]] = []
        self.done = False
        self.score: Optional[float] = None
        self._snap: Optional[Dict[str, Any]] = None

    # -- initialisation from a linear map -----------------------------------
    def _apply_linear_init(self, lin: Dict[str, np.ndarray]) -> None:
        """Make F_ab = x W + c exactly (W = U S V^T): A in = S^½U^T, B out = V S^½,
        B in = S^-½ V^T (its pseudo-inverse), A out = U S^-½; so F_ba = W^+ and
        reconstructions are projections. Unused latent directions keep a small
        random weight so that they can still learn."""
        torch = _torch()
        U, s, Vt, c = lin["U"], lin["s"], lin["Vt"], lin["c"]
        r = s.shape[0]
        rs = np.sqrt(s)
        a_in, b_out, b_in, a_out = self.gen.linear_ends()
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

    # -- one optimisation step ----------------------------------------------
    def _set_lr(self) -> None:
        for opt in (self.opt_g, self.opt_d):
            for g in opt.param_groups:
                g["lr"] = self.est.lr * self.lr_scale

    def train_step(self) -> Dict[str, float]:
        torch = _torch()
        est, d = self.est, self.data
        w = d["weights"]
        bs = est.batch_size
        ia = self.rng.integers(0, d["X"].shape[0], size=bs)
        ib = self.rng.integers(0, d["Y"].shape[0], size=bs)
        x = d["X"][torch.from_numpy(ia).to(self.dev)]
        y = d["Y"][torch.from_numpy(ib).to(self.dev)]
        out = self.gen.all(x, y)
        D = self.disc
        parts: Dict[str, Any] = {}
        parts["adv"] = _lsgan_g(D["b"](out["y_hat"])) + _lsgan_g(D["a"](out["x_hat"]))
        parts["cycle"] = _msq(out["x_cyc"], x) + _msq(out["y_cyc"], y)
        parts["vsp"] = _vsp(x, out["y_hat"]) + _vsp(y, out["x_hat"])
        if self.gen.shared:
            parts["rec"] = _msq(out["x_rec"], x) + _msq(out["y_rec"], y)
            parts["latent"] = _lsgan_g(D["za"](out["za"])) + _lsgan_g(D["zb"](out["zb"]))
        if d["targets"] is not None and w["anchor"] > 0:
            parts["anchor"] = _msq(out["y_hat"], d["targets"][torch.from_numpy(ia).to(self.dev)])
        g_loss = sum(w[k] * v for k, v in parts.items())
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        g_norm = torch.nn.utils.clip_grad_norm_(self.gen.parameters(), est.max_grad_norm)

        d_loss = _lsgan_d(D["b"](y), D["b"](out["y_hat"].detach())) + _lsgan_d(D["a"](x), D["a"](out["x_hat"].detach()))
        if self.gen.shared:
            za, zb = out["za"].detach(), out["zb"].detach()
            d_loss = d_loss + _lsgan_d(D["za"](zb), D["za"](za)) + _lsgan_d(D["zb"](za), D["zb"](zb))
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        d_norm = torch.nn.utils.clip_grad_norm_(self.disc.parameters(), est.max_grad_norm)

        losses = {k: float(v.detach()) for k, v in parts.items()}
        losses.update(loss=float(g_loss.detach()), disc=float(d_loss.detach()), grad_g=float(g_norm), grad_d=float(d_norm))
        hook = getattr(est, "_step_hook", None)
        if hook is not None:  # test hook: may alter the reported losses, or raise
            losses = hook(self.index, self.step, dict(losses)) or losses
        bad = [k for k, v in losses.items() if not math.isfinite(v)]
        if bad or max(losses["grad_g"], losses["grad_d"]) > EXPLODE_GRAD_NORM:
            raise _Diverged(losses)
        self.opt_g.step()
        self.opt_d.step()
        self.step += 1
        return losses

    # -- in-memory snapshots (divergence rollback) ---------------------------
    def snapshot(self) -> None:
        self._snap = dict(
            gen=copy.deepcopy(self.gen.state_dict()),
            disc=copy.deepcopy(self.disc.state_dict()),
            opt_g=copy.deepcopy(self.opt_g.state_dict()),
            opt_d=copy.deepcopy(self.opt_d.state_dict()),
            rng=copy.deepcopy(self.rng.bit_generator.state),
            step=self.step,
            n_hist=len(self.history),
        )

    def rollback(self) -> int:
        s = self._snap
        self.gen.load_state_dict(s["gen"])
        self.disc.load_state_dict(s["disc"])
        self.opt_g.load_state_dict(s["opt_g"])
        self.opt_d.load_state_dict(s["opt_d"])
        self.rng.bit_generator.state = copy.deepcopy(s["rng"])
        self.step = s["step"]
        del self.history[s["n_hist"] :]
        return self.step

    # -- checkpoints (safetensors + JSON) -------------------------------------
    def _opt_tensors(self, opt, prefix: str) -> Tuple[Dict[str, np.ndarray], List[float]]:
        tensors, steps = {}, []
        for i, p in enumerate(opt.param_groups[0]["params"]):
            st = opt.state.get(p, {})
            if "exp_avg" in st:
                tensors[f"{prefix}.{i}.exp_avg"] = st["exp_avg"].detach().cpu().numpy()
                tensors[f"{prefix}.{i}.exp_avg_sq"] = st["exp_avg_sq"].detach().cpu().numpy()
                steps.append(float(st["step"]))
            else:
                steps.append(-1.0)
        return tensors, steps

    def state_for_checkpoint(self) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
        tensors = {f"gen.{k}": v.detach().cpu().numpy() for k, v in self.gen.state_dict().items()}
        tensors.update({f"disc.{k}": v.detach().cpu().numpy() for k, v in self.disc.state_dict().items()})
        tg, sg = self._opt_tensors(self.opt_g, "opt_g")
        td, sd = self._opt_tensors(self.opt_d, "opt_d")
        tensors.update(tg)
        tensors.update(td)
        meta = dict(
            version=_CKPT_VERSION,
            fingerprint=self.data["fingerprint"],
            seed_index=self.index,
            step=self.step,
            lr_scale=self.lr_scale,
            failures=self.failures,
            rng=self.rng.bit_generator.state,
            adam_steps={"opt_g": sg, "opt_d": sd},
            history=self.history,
            done=self.done,
            score=self.score,
        )
        return meta, tensors

    def load_checkpoint(self, meta: Dict[str, Any], tensors: Dict[str, np.ndarray], where: str) -> None:
        torch = _torch()
        if meta.get("version") != _CKPT_VERSION or meta.get("seed_index") != self.index:
            raise ValueError(f"{where}: not a checkpoint of seed {self.index} in this format")
        if meta.get("fingerprint") != self.data["fingerprint"]:
            raise ValueError(
                f"{where}: this checkpoint is from a run with other data or hyper-parameters; "
                "use another checkpoint_dir (or delete this one) to start afresh"
            )
        try:
            for prefix, mod in (("gen.", self.gen), ("disc.", self.disc)):
                sd = {k[len(prefix) :]: torch.from_numpy(v.copy()) for k, v in tensors.items() if k.startswith(prefix)}
                mod.load_state_dict(sd, strict=True)
            for name, opt in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
                steps = meta["adam_steps"][name]
                params = opt.param_groups[0]["params"]
                if len(steps) != len(params):
                    raise ValueError(f"{name} has {len(steps)} entries, expected {len(params)}")
                opt.state.clear()
                for i, (p, st) in enumerate(zip(params, steps)):
                    if st < 0:
                        continue
                    m, v = tensors[f"{name}.{i}.exp_avg"], tensors[f"{name}.{i}.exp_avg_sq"]
                    if m.shape != tuple(p.shape) or v.shape != tuple(p.shape):
                        raise ValueError(f"{name}.{i} has shape {m.shape}, expected {tuple(p.shape)}")
                    opt.state[p] = {
                        "step": torch.tensor(float(st), dtype=torch.float32),
                        "exp_avg": torch.from_numpy(m.copy()).to(self.dev),
                        "exp_avg_sq": torch.from_numpy(v.copy()).to(self.dev),
                    }
            self.rng.bit_generator.state = meta["rng"]
            self.step = int(meta["step"])
            self.lr_scale = float(meta["lr_scale"])
            self.failures = int(meta["failures"])
            self.history = list(meta["history"])
            self.done = bool(meta["done"])
            self.score = None if meta["score"] is None else float(meta["score"])
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise ValueError(f"{where}: checkpoint does not fit this model ({type(exc).__name__}: {exc})") from None
        if not (0 <= self.step <= self.est.steps) or not (0 < self.lr_scale <= 1):
            raise ValueError(f"{where}: checkpoint has step {self.step} / lr scale {self.lr_scale} out of range")
        self._set_lr()


# --------------------------------------------------------------------------
# checkpoint folder layout: <dir>/seed_<i>/step_<k>/ + <dir>/seed_<i>/LATEST
# --------------------------------------------------------------------------
def _seed_dir(root: Path, index: int) -> Path:
    return root / f"seed_{index}"


def _write_checkpoint(run: _SeedRun, root: Path) -> None:
    sdir = _seed_dir(root, run.index)
    name = f"step_{run.step:09d}"
    meta, tensors = run.state_for_checkpoint()
    save_artifact(sdir / name, _CKPT_KIND, meta, tensors)
    # The pointer flips only once the new folder is complete: a kill at any
    # moment leaves LATEST naming a whole checkpoint.
    atomic_write_bytes(sdir / "LATEST", json.dumps({"dir": name}).encode())
    for old in sdir.iterdir():
        if old.is_dir() and _STEP_DIR.match(old.name) and old.name != name:
            shutil.rmtree(old, ignore_errors=True)


def _read_checkpoint(run: _SeedRun, root: Path) -> bool:
    """Load the latest checkpoint of this seed into ``run``; False when none."""
    sdir = _seed_dir(root, run.index)
    pointer = sdir / "LATEST"
    if not pointer.exists():
        return False
    try:
        name = json.loads(pointer.read_text())["dir"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ValueError(f"{pointer} is corrupt; delete {sdir} to start this seed afresh") from None
    if not isinstance(name, str) or not _STEP_DIR.match(name):
        raise ValueError(f"{pointer} names {name!r}, not a checkpoint folder")
    meta, tensors, _ = load_artifact(sdir / name, _CKPT_KIND)
    run.load_checkpoint(meta, tensors, str(sdir / name))
    if run.step != int(_STEP_DIR.match(name).group(1)):
        raise ValueError(f"{sdir / name}: folder name and recorded step {run.step} disagree")
    return True


# --------------------------------------------------------------------------
# the estimator
# --------------------------------------------------------------------------
class Vec2Vec(Translator):
    """Unpaired translator A -> B: adapters + shared latent MLP + least-squares GAN
    + cycle + VSP losses (Jha et al. 2025). See the module docstring for the losses.

    Parameters
    ----------
    latent_dim : width of the shared latent (residual stream); ``None`` = min(d_a, d_b),
        the smallest width that can hold an exact linear initialisation.
    hidden : inner width of the residual MLP blocks (and of the discriminators).
    depth : residual blocks per adapter, per backbone and per discriminator.
    steps : optimisation steps per seed. batch_size : rows of X and of Y per step.
    lr : Adam learning rate (generators and discriminators), betas (0.5, 0.999).
    weights : loss weights, merged over :data:`DEFAULT_WEIGHTS` (keys rec, vsp,
        cycle, adv, latent, anchor); anchor defaults to 1 when ``init`` is given.
    n_seeds : independent runs; the one with the best :func:`nn_cycle_rate` is kept.
    seed : seeds every run (model initialisation and minibatches).
    init : ``None`` (random) or any fitted translator A -> B. Its
        best linear fit (exact for a linear translator) initialises the A -> B
        path and its pseudo-inverse B -> A; the anchor loss keeps F_ab near that
        initial map while the GAN terms refine it.
    denoise : at transform time, pass inputs through the Wiener filter of an
        isotropic-noise factor model estimated without pairs (see
        :func:`noise_variances`): directions of the input space that are mostly
        encoder-specific noise are down-weighted before translation, which raises
        the cosine to the true targets (the network itself is trained as usual).
    checkpoint_dir, checkpoint_every : periodic checkpoints; ``fit`` resumes
        from those found in ``checkpoint_dir``.
    max_grad_norm : gradient clipping; max_retries : rollbacks allowed per seed
        before a divergence is an error.
    device : torch device; default CUDA when present, else CPU.
    progress : show a tqdm bar.

    Attributes after fit: ``generator_`` (flat float32 parameters of the
    generators), ``mean_x_``, ``mean_y_``, ``scale_x_``, ``scale_y_``
    (preprocessing), ``noise_`` (noise variances [A, B] estimated for
    ``denoise``, or None), ``denoise_a_``, ``denoise_b_`` (the input filters;
    identities without denoising), ``selected_seed_``, ``seed_scores_``, ``steps_done_``,
    ``history_``.
    """

    _state = ("generator_", "mean_x_", "mean_y_", "denoise_a_", "denoise_b_")
    _state_meta = ("scale_x_", "scale_y_", "latent_dim_", "noise_", "selected_seed_", "seed_scores_", "steps_done_")
    _shared_latent = True

    def __init__(
        self,
        latent_dim: Optional[int] = None,
        hidden: int = 512,
        depth: int = 2,
        steps: int = 5000,
        batch_size: int = 256,
        lr: float = 2e-4,
        weights: Optional[Mapping[str, float]] = None,
        n_seeds: int = 1,
        seed: int = 0,
        init: Union[None, str, Translator] = None,
        denoise: bool = True,
        checkpoint_dir: Union[None, str, Path] = None,
        checkpoint_every: int = 500,
        max_grad_norm: float = 10.0,
        max_retries: int = 3,
        device: Optional[str] = None,
        progress: bool = True,
    ):
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.depth = depth
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.weights = weights
        self.n_seeds = n_seeds
        self.seed = seed
        self.init = init
        self.denoise = denoise
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.max_grad_norm = max_grad_norm
        self.max_retries = max_retries
        self.device = device
        self.progress = progress

    # -- parameters --------------------------------------------------------
    def get_params(self) -> Dict[str, Any]:
        """As scikit-learn, but JSON-ready: a translator passed as ``init`` is
        recorded by class name (it is not saved with this model)."""
        p = super().get_params()
        if p["init"] is not None and not isinstance(p["init"], str):
            p["init"] = f"translator:{type(p['init']).__name__}"
        if p["checkpoint_dir"] is not None:
            p["checkpoint_dir"] = str(p["checkpoint_dir"])
        if p["device"] is not None:
            p["device"] = str(p["device"])
        if p["weights"] is not None:
            p["weights"] = dict(p["weights"])
        return p

    def _check_params(self) -> Dict[str, float]:
        if self.latent_dim is not None:
            check_positive_int(self.latent_dim, "latent_dim")
        check_positive_int(self.hidden, "hidden")
        check_positive_int(self.depth, "depth", minimum=0)
        check_positive_int(self.steps, "steps", minimum=0)
        check_positive_int(self.batch_size, "batch_size", minimum=2)  # VSP needs pairs of rows
        check_positive_int(self.n_seeds, "n_seeds")
        check_positive_int(self.seed, "seed", minimum=0)
        check_positive_int(self.checkpoint_every, "checkpoint_every")
        check_positive_int(self.max_retries, "max_retries", minimum=0)
        for name in ("lr", "max_grad_norm"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {v!r}")
        if self.weights is not None and not isinstance(self.weights, Mapping):
            raise ValueError(f"weights must be a dict of loss weights, got {type(self.weights).__name__}")
        given = dict(self.weights or {})
        unknown = set(given) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(f"weights has unknown keys {sorted(unknown)}; known: {sorted(DEFAULT_WEIGHTS)}")
        w = dict(DEFAULT_WEIGHTS)
        if self.init is not None:
            w["anchor"] = DEFAULT_ANCHOR
        w.update(given)
        for k, v in w.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"weights[{k!r}] must be a finite number >= 0, got {v!r}")
        if not isinstance(self.denoise, bool):
            raise ValueError(f"denoise must be True or False, got {self.denoise!r}")
        init = self.init
        if isinstance(init, str):
            hint = " (a loaded model records its init translator by name only: pass the translator again)" if init.startswith("translator:") else ""
            raise ValueError(f"init must be None or a fitted translator; got {init!r}{hint}")
        if init is not None and not callable(getattr(init, "transform", None)):
            raise ValueError(f"init must be None or a fitted translator with transform(); got {type(init).__name__}")
        return {k: float(v) for k, v in w.items()}

    # -- fit -------------------------------------------------------------------
    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        torch = _torch()
        weights = self._check_params()
        dev = torch_device(self.device)
        d_a, d_b = X.shape[1], Y.shape[1]
        width = self.latent_dim if self.latent_dim is not None else min(d_a, d_b)
        self.latent_dim_ = int(width)
        self.mean_x_ = X.mean(axis=0).astype(np.float32)
        self.mean_y_ = Y.mean(axis=0).astype(np.float32)
        Xn, Yn = _prep(X, self.mean_x_), _prep(Y, self.mean_y_)
        # typical norm of a centred row: maps unit-norm outputs back to raw scale
        self.scale_x_ = float(np.linalg.norm(X - self.mean_x_, axis=1).mean())
        self.scale_y_ = float(np.linalg.norm(Y - self.mean_y_, axis=1).mean())
        targets = self._init_targets(X, Y)
        linear_init = None
        if targets is not None:
            W, c = _linear_fit(Xn, targets)
            linear_init = _factorise(W, c, width)

        h = hashlib.sha256()
        params = {k: v for k, v in self.get_params().items() if k not in _NON_TRAINING}
        h.update(json.dumps([type(self).__name__, params], sort_keys=True, default=str).encode())
        for arr in (X, Y) + ((targets,) if targets is not None else ()):
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        data = dict(
            device=dev,
            d_a=d_a,
            d_b=d_b,
            width=width,
            weights=weights,
            X=torch.from_numpy(Xn).to(dev),
            Y=torch.from_numpy(Yn).to(dev),
            targets=None if targets is None else torch.from_numpy(targets).to(dev),
            linear_init=linear_init,
            fingerprint=h.hexdigest(),
        )
        # held-out-free selection rows: a fixed random subset of the training rows
        sel_rng = np.random.default_rng(self.seed)
        sx = sel_rng.choice(len(Xn), size=min(SELECT_ROWS, len(Xn)), replace=False)
        sy = sel_rng.choice(len(Yn), size=min(SELECT_ROWS, len(Yn)), replace=False)
        root = Path(self.checkpoint_dir) if self.checkpoint_dir is not None else None

        runs = []
        for i, ss in enumerate(np.random.SeedSequence(self.seed).spawn(self.n_seeds)):
            run = _SeedRun(self, i, ss, data)
            if root is not None:
                _read_checkpoint(run, root)
            if not run.done:
                self._train(run, root)
                run.score = nn_cycle_rate(
                    lambda A, r=run: self._apply(r.gen.a2b, A),
                    lambda B, r=run: self._apply(r.gen.b2a, B),
                    Xn[sx],
                    Yn[sy],
                )
                run.done = True
                if root is not None:
                    _write_checkpoint(run, root)
            runs.append(run)
        scores = [r.score for r in runs]
        best = int(np.argmax(scores))  # ties -> lowest seed index
        self.selected_seed_ = best
        self.seed_scores_ = [float(s) for s in scores]
        self.steps_done_ = int(runs[best].step)
        self.generator_ = _flatten(runs[best].gen)
        self._gen_module = runs[best].gen.eval()
        self._fit_denoise(Xn, Yn)
        self.history_ = [dict(e, seed=r.index) for r in runs for e in r.history]
        self.history_.append({"event": "selected", "seed": best, "nn_cycle_rate": self.seed_scores_})

    def _fit_denoise(self, Xn: np.ndarray, Yn: np.ndarray) -> None:
        """Input-side Wiener filters (see :func:`noise_variances`), estimated from the
        unpaired covariances and the subspaces of the best linear fit of the trained map."""
        self.noise_ = None
        self.denoise_a_ = np.eye(Xn.shape[1], dtype=np.float32)
        self.denoise_b_ = np.eye(Yn.shape[1], dtype=np.float32)
        if not self.denoise:
            return
        W, _ = _linear_fit(Xn, self._apply(self._module().a2b, Xn))
        noise = noise_variances(Xn, Yn, W)
        if noise is None:
            return
        self.noise_ = noise
        self.denoise_a_ = _shrink_filter(Xn, noise[0])
        self.denoise_b_ = _shrink_filter(Yn, noise[1])

    def _init_targets(self, X: np.ndarray, Y: np.ndarray) -> Optional[np.ndarray]:
        """``init``'s translation of X, centred by its own mean and row-normalised
        (the same preprocessing as the data; its own mean so that translators
        that return centred outputs work too)."""
        init = self.init
        if init is None:
            return None
        try:
            T = np.asarray(init.transform(X), dtype=np.float32)
        except Exception as exc:
            raise ValueError(f"init: could not translate X with {type(init).__name__} ({type(exc).__name__}: {exc})") from None
        if T.shape != (X.shape[0], Y.shape[1]) or not np.isfinite(T).all():
            raise ValueError(
                f"init: {type(init).__name__}.transform(X) gave shape {T.shape} (finite: {bool(np.isfinite(T).all())}); "
                f"expected finite ({X.shape[0]}, {Y.shape[1]}): is it fitted from X's space to Y's?"
            )
        return _prep(T, T.mean(axis=0))

    def _train(self, run: _SeedRun, root: Optional[Path]) -> None:
        from tqdm.auto import tqdm

        run._set_lr()
        self._current_run = run  # private: lets a step hook (studies, tests) look at the model
        run.gen.train()
        run.disc.train()
        run.snapshot()
        log_every = max(1, self.steps // 500)
        bar = tqdm(
            total=self.steps,
            initial=run.step,
            disable=not self.progress,
            desc=f"{type(self).__name__} seed {run.index + 1}/{self.n_seeds}",
            leave=False,
        )
        try:
            while run.step < self.steps:
                try:
                    losses = run.train_step()
                except _Diverged as exc:
                    losses = exc.args[0]
                    failed_at = run.step
                    run.failures += 1
                    shown = ", ".join(f"{k}={v:.4g}" for k, v in losses.items())
                    if run.failures > self.max_retries:
                        raise RuntimeError(
                            f"{type(self).__name__} training diverged at step {failed_at} (seed {run.index}) "
                            f"after {self.max_retries} rollbacks with learning-rate cuts (lr now "
                            f"{self.lr * run.lr_scale:.3g}); losses: {shown}. Try a lower lr."
                        ) from None
                    back_to = run.rollback()
                    run.lr_scale *= 0.5
                    run._set_lr()
                    run.history.append(
                        {
                            "event": "rollback",
                            "step": failed_at,
                            "to_step": back_to,
                            "lr": self.lr * run.lr_scale,
                            "losses": {k: (v if math.isfinite(v) else str(v)) for k, v in losses.items()},
                        }
                    )
                    bar.n = run.step
                    bar.refresh()
                    continue
                if run.step % log_every == 0 or run.step == self.steps:
                    run.history.append({"step": run.step, "lr": self.lr * run.lr_scale, **losses})
                    bar.set_postfix(loss=f"{losses['loss']:.3f}", disc=f"{losses['disc']:.3f}", refresh=False)
                bar.update(1)
                at_ckpt = root is not None and run.step % self.checkpoint_every == 0 and run.step < self.steps
                if at_ckpt:
                    _write_checkpoint(run, root)
                if at_ckpt or run.step % SNAPSHOT_EVERY == 0:
                    run.snapshot()
        finally:
            bar.close()
            self._current_run = None
        run.gen.eval()

    # -- transform ---------------------------------------------------------------
    @staticmethod
    def _apply(fn: Callable, A: np.ndarray, batch: int = 4096) -> np.ndarray:
        """Run a generator method (``gen.a2b`` / ``gen.b2a``) on rows, in batches."""
        torch = _torch()
        dev = next(fn.__self__.parameters()).device
        outs = []
        with torch.no_grad():
            for i in range(0, len(A), batch):
                outs.append(fn(torch.from_numpy(A[i : i + batch]).to(dev)).float().cpu().numpy())
        return np.concatenate(outs)

    def _module(self):
        mod = getattr(self, "_gen_module", None)
        if mod is None:
            torch = _torch()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                mod, _ = _build_modules(self.d_in_, self.d_out_, self.latent_dim_, self.hidden, self.depth, self._shared_latent)
            _unflatten(mod, self.generator_)
            mod.to(self._inference_device()).eval()
            self._gen_module = mod
        return mod

    def _inference_device(self):
        try:
            return torch_device(self.device)
        except ValueError:  # e.g. trained on CUDA, loaded on a CPU-only machine
            return torch_device(None)

    def _transform(self, X: np.ndarray) -> np.ndarray:
        Z = self._apply(self._module().a2b, _filter(_prep(X, self.mean_x_), self.denoise_a_))
        return Z * self.scale_y_ + self.mean_y_

    def inverse_transform(self, Y: Any) -> np.ndarray:
        """Map rows of space B back into space A (the B -> A generator)."""
        from align.validation import as_matrix

        self._check_fitted()
        Y = as_matrix(Y, "Y", dtype=np.float32)
        if Y.shape[1] != self.d_out_:
            raise ValueError(f"Y has {Y.shape[1]} columns but this translator was fitted on {self.d_out_}")
        Z = self._apply(self._module().b2a, _filter(_prep(Y, self.mean_y_), self.denoise_b_))
        return (Z * self.scale_x_ + self.mean_x_).astype(np.float32)

    # -- persistence -----------------------------------------------------------
    def _load_state(self, tensors: Dict[str, np.ndarray], meta: Dict[str, Any]) -> None:
        super()._load_state(tensors, meta)
        self._gen_module = None

    def _check_state(self) -> None:
        d_a, d_b = self.d_in_, self.d_out_
        g, mx, my = (np.asarray(getattr(self, k)) for k in ("generator_", "mean_x_", "mean_y_"))
        if mx.shape != (d_a,) or my.shape != (d_b,) or mx.dtype != np.float32 or my.dtype != np.float32:
            raise ValueError(f"saved means have shapes {mx.shape}, {my.shape}; expected ({d_a},), ({d_b},) float32")
        for k in ("scale_x_", "scale_y_"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"saved {k} = {v!r} is not a positive number")
        noise = self.noise_
        if noise is not None and not (
            isinstance(noise, list) and len(noise) == 2 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in noise)
        ):
            raise ValueError(f"saved noise_ = {noise!r} is not null or two numbers")
        for k, d in (("denoise_a_", d_a), ("denoise_b_", d_b)):
            f = np.asarray(getattr(self, k))
            if f.shape != (d, d) or f.dtype != np.float32:
                raise ValueError(f"saved {k} is {f.dtype}{list(f.shape)}; expected float32[{d}, {d}]")
        if not isinstance(self.latent_dim_, int) or self.latent_dim_ < 1:
            raise ValueError(f"saved latent_dim_ = {self.latent_dim_!r} is not a positive integer")
        for k in ("hidden", "depth"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if k == "depth" else 1):
                raise ValueError(f"saved parameter {k} = {v!r} is invalid")
        torch = _torch()
        with torch.random.fork_rng(devices=[]):
            mod, _ = _build_modules(d_a, d_b, self.latent_dim_, self.hidden, self.depth, self._shared_latent)
        n = sum(p.numel() for p in mod.parameters())
        if g.ndim != 1 or g.dtype != np.float32 or g.shape[0] != n:
            raise ValueError(
                f"saved generator_ is {g.dtype}{list(g.shape)}; this architecture needs float32[{n}] "
                f"(d_in={d_a}, d_out={d_b}, latent_dim={self.latent_dim_}, hidden={self.hidden}, depth={self.depth})"
            )
        _unflatten(mod, g)
        mod.to(self._inference_device()).eval()
        self._gen_module = mod


class CycleGAN(Vec2Vec):
    """CycleGAN-style translator (Zhu et al. 2017): the :class:`Vec2Vec` machinery
    without the shared latent -- direct generators A -> B and B -> A (residual
    MLP stacks of width ``latent_dim``, ``3 * depth`` blocks), output-space
    least-squares GANs, cycle and VSP losses; no reconstruction, no latent GAN."""

    _shared_latent = False


def _linear_fit(Xn: np.ndarray, T: np.ndarray, ridge: float = 1e-6) -> Tuple[np.ndarray, np.ndarray]:
    """Least-squares affine fit ``T ≈ Xn W + c`` (float64), a tiny ridge for rank-deficient Xn."""
    Xc = Xn.astype(np.float64)
    Tc = T.astype(np.float64)
    mx, mt = Xc.mean(0), Tc.mean(0)
    A, B = Xc - mx, Tc - mt
    G = A.T @ A
    G[np.diag_indices_from(G)] += ridge * max(np.trace(G), 1e-12) / len(G)
    W = np.linalg.solve(G, A.T @ B)
    return W, mt - mx @ W


def _factorise(W: np.ndarray, c: np.ndarray, width: int) -> Dict[str, np.ndarray]:
    """``W = U S V^T``, truncated to ``width`` directions (and to singular values
    above 1e-6 of the largest), for :meth:`_SeedRun._apply_linear_init`."""
    U, s, Vt = np.linalg.svd(W, full_matrices=False)
    keep = min(width, int((s > 1e-6 * s[0]).sum())) if s.size and s[0] > 0 else 0
    keep = max(keep, 1)
    return dict(
        U=U[:, :keep].astype(np.float32),
        s=np.maximum(s[:keep], 1e-12).astype(np.float32),
        Vt=Vt[:keep].astype(np.float32),
        c=c.astype(np.float32),
    )


def noise_variances(Xn: np.ndarray, Yn: np.ndarray, W: np.ndarray) -> Optional[List[float]]:
    """Encoder-specific noise variances ``[σ_a², σ_b²]`` for a map ``y ≈ x W`` learned without pairs.

    Model (an isotropic-noise factor model, cf. probabilistic CCA, Bach & Jordan
    2005): ``x = s + n_a``, ``y = s W + n_b`` with ``s`` in the r-dimensional row
    space of ``W`` and independent isotropic noises of variances ``σ_a², σ_b²``.
    Then ``E[s | x] = x F`` with the Wiener filter ``F = Σ_xx^{-1} Σ_s`` and
    ``Σ_s = Σ_xx - σ_a² I`` (eigenvalues clipped at 0). The variances are
    identified from the unpaired covariances alone:

    * variance of A in the null space of ``W`` (directions the map drops) = σ_a²,
      or variance of B outside the image of ``W`` = σ_b²;
    * the signal being carried isometrically (only W's subspaces are used, not
      its scale), ``tr Σ_xx - d_a σ_a² = tr Σ_s = tr Σ_yy - d_b σ_b²``.

    Returns ``[σ_a², σ_b²]``, or None when the model is not identifiable (equal
    widths and a full-rank map) or finds no noise. :func:`_shrink_filter` turns
    a variance into the filter.
    Real encoder noise is far from isotropic, so this is a first-order
    correction: on minilm -> mpnet it recovers part of the gap between the
    orthogonal map and the paired least-squares ceiling (see the module notes).
    """
    Cx = np.cov(Xn.astype(np.float64), rowvar=False)
    Cy = np.cov(Yn.astype(np.float64), rowvar=False)
    U, sv, Vt = np.linalg.svd(W, full_matrices=True)
    r = int((sv > 1e-6 * sv[0]).sum()) if sv.size and sv[0] > 0 else 0
    if r == 0:
        return None
    null_a, out_b = U[:, r:], Vt[r:]
    ev_x, ev_y = np.linalg.eigvalsh(Cx), np.linalg.eigvalsh(Cy)
    tol = 1e-8 * max(ev_x.max(), ev_y.max(), 1e-30)
    # dimensions that carry no variance at all (e.g. a constant coordinate) are
    # neither signal nor noise: leave them out of the counts
    d_a, d_b = int((ev_x > tol).sum()), int((ev_y > tol).sum())
    var_null_a = np.einsum("ij,ik,kj->j", null_a, Cx, null_a)
    var_out_b = np.einsum("ij,jk,ik->i", out_b, Cy, out_b)
    var_null_a, var_out_b = var_null_a[var_null_a > tol], var_out_b[var_out_b > tol]
    # Only the subspaces of W are used, not its scale: the signal is assumed to be
    # carried isometrically (as by an isometric initialisation), so that
    # tr Σ_xx = tr Σ_s + d_a σ_a² and tr Σ_yy = tr Σ_s + d_b σ_b².
    if var_null_a.size:
        sig_a = var_null_a.mean()
        sig_b = (np.trace(Cy) - np.trace(Cx) + d_a * sig_a) / d_b
    elif var_out_b.size:
        sig_b = var_out_b.mean()
        sig_a = (np.trace(Cx) - np.trace(Cy) + d_b * sig_b) / d_a
    else:
        return None
    if not (np.isfinite(sig_a) and np.isfinite(sig_b)) or max(sig_a, sig_b) <= 0:
        return None
    return [float(max(sig_a, 0.0)), float(max(sig_b, 0.0))]


def _shrink_filter(Z: np.ndarray, sigma2: float) -> np.ndarray:
    """Wiener filter ``F = Σ^{-1}(Σ - σ² I)`` of rows ``Z`` (eigenvalues clipped at 0), float32."""
    ev, E = np.linalg.eigh(np.cov(Z.astype(np.float64), rowvar=False))
    f = np.clip(ev - sigma2, 0.0, None) / np.maximum(ev, 1e-12)
    return ((E * f) @ E.T).astype(np.float32)


def _filter(Zn: np.ndarray, F: np.ndarray) -> np.ndarray:
    """Apply an input filter, then back to unit rows (the network saw unit rows)."""
    Z = Zn @ F
    return (Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)).astype(np.float32)
