"""REPA: align a hidden layer of any torch model to a frozen target representation.

Yu, Kwak, Jang, Jeong, Huang, Shin & Xie (2025), "Representation Alignment
for Generation: Training Diffusion Transformers Is Easier Than You Think"
(ICLR). A small MLP projector ``h_φ`` maps the model's hidden states at one
layer to the width of a frozen, pretrained encoder's features ``y``, and the
training loss gains ``λ · L_REPA`` with

    L_REPA = -(1/N) Σ_n (1/T) Σ_t cos( y_{n,t}, h_φ(h_{n,t}) )

(negative cosine, averaged over the T tokens / patches and the N samples; the
paper uses λ = 0.5 and a 3-layer MLP with SiLU, hidden width 2048).

:func:`attach_repa` reads the layer's output with a forward hook, so the
model's code is not edited; :class:`RepaTrainer` (or the one-call
:func:`train_with_repa`) trains task loss + λ · REPA loss on the training
engine (:mod:`align.train.engine`: checkpoint / resume, divergence rollback,
callbacks).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..device import torch_device
from ..extract import resolve_layer
from ..params import Params
from ..validation import check_positive_int, check_real, to_numpy
from .engine import EpochBatches, Trainer, adamw, fingerprint_arrays, fork_rng

__all__ = ["RepaProjector", "attach_repa", "repa_loss", "RepaHandle", "RepaTrainer", "train_with_repa", "as_tokens"]

PathLike = Union[str, os.PathLike]

#: what ``fit`` aligns to (features, or a callable ``x_batch -> features``) and its callbacks
Target = Union[Any, Callable[[torch.Tensor], torch.Tensor], None]
EpochCallback = Optional[Callable[[int, nn.Module], Optional[dict]]]
StepCallbacks = Sequence[Callable[[Dict[str, Any]], Any]]

# Yu et al. 2025, Sec. 4 / Appendix: λ = 0.5, projector MLP hidden width 2048.
REPA_LAMBDA = 0.5
REPA_HIDDEN = 2048


class RepaProjector(nn.Module):
    """Linear → SiLU → Linear → SiLU → Linear, as in REPA (Yu et al. 2025).

    Applies to the last axis, so it maps tokens ``(N, T, in_dim)`` and
    vectors ``(N, in_dim)`` alike to ``target_dim``.
    """

    def __init__(self, in_dim: int, target_dim: int, hidden: int = REPA_HIDDEN) -> None:
        super().__init__()
        in_dim = check_positive_int(in_dim, "in_dim")
        target_dim = check_positive_int(target_dim, "target_dim")
        hidden = check_positive_int(hidden, "hidden")
        self.in_dim, self.target_dim, self.hidden = in_dim, target_dim, hidden
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, target_dim),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.shape[-1] != self.in_dim:
            raise ValueError(f"h has last dimension {h.shape[-1]}, but this projector takes in_dim={self.in_dim}")
        return self.net(h)


def as_tokens(h: torch.Tensor) -> torch.Tensor:
    """A layer's output as tokens: ``(N, C, H, W)`` conv maps become
    ``(N, H·W, C)`` (each pixel a token, channels last); ``(N, T, C)`` and
    ``(N, C)`` are returned as they are."""
    if h.ndim == 4:
        return h.flatten(2).transpose(1, 2)
    if h.ndim in (2, 3):
        return h
    raise ValueError(f"layer output has shape {tuple(h.shape)}; expected (N, C), (N, T, C) or (N, C, H, W)")


def repa_loss(h: torch.Tensor, target: Any) -> torch.Tensor:
    """Mean negative cosine similarity between ``h`` and ``target``.

    ``(N, T, D)`` inputs: cosine per token, averaged over tokens and samples;
    ``(N, D)``: per sample, averaged. Range [-1, 1]; -1 iff every ``h`` row
    points along its target. Invariant to the scale of each row. ``target``
    (an array or tensor; gradients are not taken through it) may be given as
    ``(N, C, H, W)`` maps, read as ``(N, H·W, C)`` tokens (see :func:`as_tokens`).
    """
    if not isinstance(h, torch.Tensor):
        raise ValueError(f"h must be a torch.Tensor (the projected layer output), got {type(h).__name__}")
    if not isinstance(target, torch.Tensor):
        arr = to_numpy(target, "target")
        if arr.dtype.kind != "f":
            raise ValueError(f"target must be floating point, got dtype {arr.dtype}")
        target = torch.from_numpy(np.ascontiguousarray(arr))
    target = target.detach()
    if target.ndim == 4:
        target = as_tokens(target)
    if h.ndim not in (2, 3):
        raise ValueError(f"h must be (N, D) or (N, T, D), got shape {tuple(h.shape)}")
    if tuple(target.shape) != tuple(h.shape):
        raise ValueError(
            f"target has shape {tuple(target.shape)} but h has {tuple(h.shape)}; they must match "
            "(same samples, tokens and width: set the projector's target_dim to the target's width)"
        )
    target = target.to(device=h.device, dtype=h.dtype)
    return -F.cosine_similarity(h, target, dim=-1).mean()


class RepaHandle:
    """What :func:`attach_repa` returns.

    ``output``: the projector applied to the layer's output (as tokens) at the
    latest forward pass, with its autograd graph (``None`` before the first).
    ``features``: the layer's raw output at that pass. ``remove()`` (or leaving
    a ``with`` block, also by an exception) detaches the hook; it is idempotent.
    """

    def __init__(self, model: nn.Module, layer_name: str, projector: nn.Module, pool: Optional[str]) -> None:
        self.model, self.layer_name, self.projector, self.pool = model, layer_name, projector, pool
        self.output: Optional[torch.Tensor] = None
        self.features: Optional[torch.Tensor] = None
        self.enabled = True
        self._hook: Any = None

    def _on_forward(self, module: nn.Module, args: Any, out: Any) -> None:
        if not self.enabled:
            return
        t = out
        while isinstance(t, (tuple, list)) and t:
            t = t[0]  # modules returning (hidden, extras...): the hidden state comes first
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"layer {self.layer_name!r} returned {type(out).__name__}, not a tensor")
        self.features = t
        tokens = as_tokens(t)
        if self.pool == "mean" and tokens.ndim == 3:
            tokens = tokens.mean(dim=1)
        self.output = self.projector(tokens)

    @property
    def attached(self) -> bool:
        return self._hook is not None

    def remove(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self.output = self.features = None

    def __enter__(self) -> "RepaHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()  # exceptions propagate

    def __repr__(self) -> str:
        return f"RepaHandle(layer={self.layer_name!r}, attached={self.attached})"


def attach_repa(model: nn.Module, layer_name: str, projector: nn.Module, pool: Optional[str] = None) -> RepaHandle:
    """Keep ``projector(layer output)`` of ``model.<layer_name>`` for the REPA loss.

    Registers a forward hook on the named submodule (a name from
    ``model.named_modules()``, e.g. ``"blocks.3"``); the model is not edited.
    Conv outputs ``(N, C, H, W)`` are read as ``(N, H·W, C)`` tokens;
    ``pool="mean"`` averages the tokens into one vector per sample instead.

    Returns a :class:`RepaHandle`: after ``model(x)``, ``handle.output`` holds
    the projected hidden states; use ``repa_loss(handle.output, target)``.
    Detach with ``handle.remove()`` or use it as a context manager::

        with attach_repa(model, "blocks.3", proj) as h:
            logits = model(x)
            loss = task_loss(logits, y) + 0.5 * repa_loss(h.output, y_feats)
    """
    layer = resolve_layer(model, layer_name, "layer_name", allow_root=False)
    if not isinstance(projector, nn.Module):
        raise ValueError(f"projector must be a torch.nn.Module (e.g. RepaProjector), got {type(projector).__name__}")
    if pool not in (None, "mean"):
        raise ValueError(f"pool must be None or 'mean', got {pool!r}")
    handle = RepaHandle(model, layer_name, projector, pool)
    handle._hook = layer.register_forward_hook(handle._on_forward)
    return handle


# ---------------------------------------------------------------------------
# training


class _RepaNet(nn.Module):
    def __init__(self, model: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.projector = projector


def _as_batch_array(a: Any, name: str) -> np.ndarray:
    arr = to_numpy(a, name)
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be an array with one row per sample, got shape {arr.shape}")
    if arr.dtype == object:
        raise ValueError(f"{name} has dtype object; pass a numeric array")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return np.ascontiguousarray(arr)


class RepaTrainer(Params):
    """Train a model on ``task_loss(model(x), y) + lam · repa_loss(...)``.

    Estimator-style: the options are ``__init__`` parameters (stored as given,
    validated at :meth:`fit`; ``get_params`` / ``set_params``); the model, the
    projector, the layer and the data are :meth:`fit`'s arguments.

    Parameters
    ----------
    lam : weight λ of the REPA term (Yu et al. 2025 use 0.5); ``lam=0`` trains
        the model alone — the baseline, on the same batches.
    task_loss : ``(output, labels) -> scalar``; default cross-entropy.
    epochs, batch_size, lr, weight_decay, max_grad_norm : AdamW training
        (model and projector together).
    seed : fixes the batch order (epoch e visits rows in the order
        ``default_rng([seed, e]).permutation(N)``) and any torch randomness in
        the loop (dropout); initialise the model yourself, seeded.
    pool : ``None`` (align token by token) or ``"mean"`` (mean over tokens).
    device : torch device (default: CUDA when present, else CPU).
    checkpoint_dir, checkpoint_every, max_retries : as in
        :class:`align.ContrastiveAligner` — resume after interruption, roll
        back and halve lr on a non-finite loss or gradient.
    progress : tqdm bar.

    Attributes after ``fit``: ``history_`` (one dict per epoch with the mean
    total loss ``loss``, the mean task and REPA losses, the lr, and the epoch
    callback's numbers), ``rollbacks_``, ``resumed_from_``. The model and the
    projector are trained in place.
    """

    def __init__(
        self,
        lam: float = REPA_LAMBDA,
        task_loss: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
        epochs: int = 10,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        max_grad_norm: Optional[float] = None,
        seed: int = 0,
        pool: Optional[str] = None,
        device: Optional[str] = None,
        checkpoint_dir: Optional[PathLike] = None,
        checkpoint_every: Optional[int] = None,
        max_retries: int = 5,
        progress: bool = True,
    ) -> None:
        self.lam = lam
        self.task_loss = task_loss
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_grad_norm = max_grad_norm
        self.seed = seed
        self.pool = pool
        self.device = device
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.max_retries = max_retries
        self.progress = progress

    def _check_params(self) -> None:
        check_real(self.lam, "lam", low=0)
        check_real(self.lr, "lr", low=0, open_low=True)
        check_real(self.weight_decay, "weight_decay", low=0)
        if self.max_grad_norm is not None:
            check_real(self.max_grad_norm, "max_grad_norm", low=0, open_low=True)
        check_positive_int(self.epochs, "epochs")
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.seed, "seed", minimum=0)
        check_positive_int(self.max_retries, "max_retries", minimum=0)
        if self.checkpoint_every is not None:
            check_positive_int(self.checkpoint_every, "checkpoint_every")
        if self.pool not in (None, "mean"):
            raise ValueError(f"pool must be None or 'mean', got {self.pool!r}")
        if self.task_loss is not None and not callable(self.task_loss):
            raise ValueError(f"task_loss must be None or a callable (output, labels) -> loss, got {type(self.task_loss).__name__}")

    def fit(
        self,
        model: nn.Module,
        projector: Optional[nn.Module],
        layer: Optional[str],
        inputs: Any,
        labels: Any,
        target: Target = None,
        callback: EpochCallback = None,
        callbacks: StepCallbacks = (),
    ) -> "RepaTrainer":
        """Train ``model`` (and ``projector``) in place.

        model, projector, layer : the model, a projector (e.g.
            :class:`RepaProjector`) and the name of the layer to align. With
            ``lam=0`` (or ``projector=None``) the model is trained alone.
        inputs, labels : arrays (or tensors) with one row per sample; batches of
            rows are fed as ``model(torch.as_tensor(inputs[rows]))``.
        target : the frozen representation to align to: an array with one row per
            sample (``(N, D)``, ``(N, T, D)`` or ``(N, C, H, W)``), or a callable
            ``x_batch -> features`` (e.g. a frozen teacher; run under no_grad). The
            callable receives the batch on the training device (``device``: CUDA
            when present), so a teacher belongs there too; its output may be on any.
        callback : ``callback(epoch, model) -> dict | None``, run after each
            epoch (model in eval mode); its numbers go into that epoch's record.
        callbacks : functions called with a dict per step / rollback / epoch
            (see :mod:`align.train.engine`).
        """
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self._check_params()
        lam, pool = float(self.lam), self.pool
        X = _as_batch_array(inputs, "inputs")
        y = _as_batch_array(labels, "labels")
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"inputs and labels must have the same number of rows, got {X.shape[0]} and {y.shape[0]}")
        use_repa = lam > 0 and projector is not None
        if lam > 0 and projector is None:
            raise ValueError("projector is None but lam > 0: pass a RepaProjector, or lam=0 for the baseline")
        T: Optional[np.ndarray] = None
        target_fn: Optional[Callable] = None
        if use_repa:
            if target is None:
                raise ValueError("target is required when lam > 0 (an array of target features or a callable)")
            if callable(target) and not hasattr(target, "shape"):
                target_fn = target
            else:
                T = _as_batch_array(target, "target")
                if T.shape[0] != X.shape[0]:
                    raise ValueError(f"target must have one row per input: got {T.shape[0]} rows for {X.shape[0]} inputs")
                if T.dtype.kind != "f":
                    raise ValueError(f"target must be floating point, got dtype {T.dtype}")
            resolve_layer(model, layer, "layer", allow_root=False)  # ValueError listing the layers
        task_loss = self.task_loss if self.task_loss is not None else F.cross_entropy

        dev = torch_device(self.device)
        net = _RepaNet(model, projector if use_repa else nn.Identity()).to(dev)
        Xt = torch.from_numpy(X).to(dev)
        yt = torch.from_numpy(y).to(dev)
        Tt = torch.from_numpy(T).to(dev) if T is not None else None
        fingerprint = {
            "data": fingerprint_arrays(*(a for a in (X, y, T) if a is not None)),
            "layer": layer if use_repa else None,
            "lam": lam,
            "batch_size": self.batch_size,
            "lr": float(self.lr),
            "weight_decay": float(self.weight_decay),
            "seed": self.seed,
            "pool": pool,
            "model": type(model).__name__,
            "params": sum(p.numel() for p in net.parameters()),
        }
        with fork_rng(dev):
            torch.manual_seed(self.seed)
            trainer = Trainer(
                net,
                {"main": adamw(net, self.lr, self.weight_decay)},
                EpochBatches(X.shape[0], self.batch_size, self.epochs, self.seed),
                kind="train_with_repa",
                fingerprint=fingerprint,
                checkpoint_dir=self.checkpoint_dir,
                checkpoint_every=self.checkpoint_every,
                max_retries=self.max_retries,
                max_grad_norm=self.max_grad_norm,
                callbacks=callbacks,
                progress=self.progress,
                desc="repa" if use_repa else "train",
            )
            handle = attach_repa(model, layer, projector, pool=pool) if use_repa else None
            try:

                def step(rows: np.ndarray):
                    r = torch.from_numpy(rows).to(dev)
                    xb = Xt[r]
                    lt = task_loss(model(xb), yt[r])
                    if handle is None:
                        return lt, {"task_loss": float(lt.detach())}
                    if Tt is not None:
                        tb = Tt[r]
                    else:
                        with torch.no_grad():
                            tb = target_fn(xb)
                    if pool == "mean" and tb.ndim > 2:
                        tb = as_tokens(tb).mean(dim=1)
                    lr_ = repa_loss(handle.output, tb)
                    return lt + lam * lr_, {"task_loss": float(lt.detach()), "repa_loss": float(lr_.detach())}

                def on_epoch(epoch: int) -> Dict[str, Any]:
                    if callback is None:
                        return {}
                    was = model.training
                    model.eval()
                    if handle is not None:
                        handle.enabled = False  # the callback's forwards are not REPA steps
                    try:
                        with torch.no_grad():
                            return dict(callback(epoch, model) or {})
                    finally:
                        if handle is not None:
                            handle.enabled = True
                        model.train(was)

                trainer.run(step, on_epoch)
            finally:
                if handle is not None:
                    handle.remove()
                self.history_ = trainer.history
                self.rollbacks_ = trainer.rollbacks
                self.resumed_from_ = trainer.resumed_from
        return self


def train_with_repa(model: nn.Module, projector: Optional[nn.Module], layer: Optional[str], inputs: Any, labels: Any,
                    target: Target = None, *, callback: EpochCallback = None, callbacks: StepCallbacks = (),
                    **options: Any) -> List[Dict[str, Any]]:
    """One call: ``RepaTrainer(**options).fit(model, projector, layer, inputs,
    labels, target, callback, callbacks).history_`` (see :class:`RepaTrainer`
    for the options: lam, task_loss, epochs, batch_size, lr, weight_decay,
    max_grad_norm, seed, pool, device, checkpoint_dir, checkpoint_every,
    max_retries, progress). Returns the history, one dict per epoch."""
    valid = RepaTrainer._param_names()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"train_with_repa() got unexpected options {unknown}; RepaTrainer takes {', '.join(valid)}")
    trainer = RepaTrainer(**options)
    return trainer.fit(model, projector, layer, inputs, labels, target, callback=callback, callbacks=callbacks).history_
