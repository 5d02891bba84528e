"""The one training engine: steps, rollback on divergence, checkpoints, resume, callbacks.

Every trainer in reptrans (:class:`align.ContrastiveAligner`, REPA,
:class:`translate.Vec2Vec` / ``CycleGAN``) hands a :class:`Trainer` its network,
its optimisers, a batch schedule and a *step function* (batch -> losses), and
the engine does the rest the same way for all of them:

- **Steps.** For each optimiser, in order: zero its gradients, back-propagate
  its loss, all-reduce the gradients under ``torch.distributed``, clip them to
  ``max_grad_norm``. Only when every loss, every reported number and every
  gradient norm is finite (and no norm exceeds ``explode_grad_norm``) are the
  optimisers stepped.
- **Rollback.** The engine keeps in memory the last state known to be good (a
  snapshot taken at the start of a step, every ``snapshot_every`` steps and
  after each checkpoint, and kept once that step turned out finite). A
  diverged step restores it (network, optimiser moments, RNG, position,
  history), halves the learning rate and goes on; ``max_retries`` failures in
  a row without getting past the failing step raise
  :class:`TrainingDivergedError`, naming the step and the losses.
- **Checkpoints.** One layout: ``checkpoint_dir/ckpt-<n>/`` (safetensors +
  JSON through :func:`align.checkpoint.save_artifact`; never pickle) and a text
  file ``LATEST`` naming the newest folder, replaced atomically only once that
  folder is complete; older folders are then deleted. A kill at any moment
  leaves ``LATEST`` naming a whole checkpoint. Saved every ``checkpoint_every``
  steps and at the end of every epoch.
- **Resume.** :meth:`Trainer.run` first loads ``LATEST`` when there is one; a
  checkpoint whose ``fingerprint`` (data digest, settings) differs is refused.
  Batches depend only on the schedule's seed and the position (or on a
  checkpointed generator), so a resumed run takes the path of an uninterrupted one.
- **Callbacks.** ``callbacks=[fn, ...]``: each ``fn(record)`` is called with a
  plain dict after every step (``step``, ``epoch``, ``lr``, ``loss``, the
  gradient norms and the step function's numbers), after every rollback
  (``event="rollback"``) and at each epoch's end (``event="epoch"``). A callback
  may raise :class:`StopTraining` to end training early, keeping (and
  checkpointing) the state reached; any other exception propagates, and the
  work up to the last checkpoint is kept.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..checkpoint import atomic_write_bytes, load_artifact, save_artifact
from ..progress import progress_bar

__all__ = [
    "Trainer",
    "TrainingDivergedError",
    "StopTraining",
    "EpochBatches",
    "RandomBatches",
    "adamw",
    "fork_rng",
    "fingerprint_arrays",
    "jsonable",
    "CHECKPOINT_PATTERN",
    "LATEST",
]

PathLike = Union[str, os.PathLike]

#: checkpoint folders inside ``checkpoint_dir``; ``LATEST`` names the newest
CHECKPOINT_PATTERN = re.compile(r"^ckpt-(\d{9})$")
LATEST = "LATEST"
CONFIG_KEYS = ("fingerprint", "state", "lr_scale", "history", "rollbacks", "save_seq", "extra")


class TrainingDivergedError(RuntimeError):
    """Raised when a trainer keeps producing non-finite (or exploding) losses or
    gradients after rolling back and halving the learning rate."""


class StopTraining(Exception):
    """Raise from a callback to end training early: the state reached is kept
    (and checkpointed when ``checkpoint_dir`` is set); ``Trainer.stopped`` is True."""


# ---------------------------------------------------------------------------
# small helpers shared by the trainers


def fork_rng(device: torch.device):
    """Fork torch's global RNG (CPU, and ``device`` when it is a GPU) so that
    seeding inside a fit leaves the caller's random stream alone."""
    if device.type == "cuda":
        return torch.random.fork_rng(devices=[torch.cuda.current_device() if device.index is None else device.index])
    return torch.random.fork_rng(devices=[])


def fingerprint_arrays(*arrays: np.ndarray, header: bytes = b"", dtypes: bool = True) -> str:
    """sha256 of ``header``, then of each array's dtype, shape and bytes: the one
    digest of training data (the data part of a run's fingerprint). ``dtypes=False``
    leaves the dtypes out, as the earlier vec2vec checkpoint layout did."""
    h = hashlib.sha256(header)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype if dtypes else ''}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


def jsonable(v: Any) -> Any:
    """``v`` with numpy / torch scalars as numbers and NaN / Inf as strings (JSON has none)."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return repr(v)


def adamw(net: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW without weight decay on biases, gains and temperatures (as open_clip)."""
    decay = [p for p in net.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in net.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def _tensor(v: Any) -> torch.Tensor:
    return v if isinstance(v, torch.Tensor) else torch.from_numpy(np.array(v))


# ---------------------------------------------------------------------------
# batch schedules


class EpochBatches:
    """Epoch ``e`` visits the rows in the order
    ``np.random.default_rng([seed, e]).permutation(n)``, cut into batches of
    ``batch_size``: the order depends only on (seed, epoch). A batch smaller
    than ``min_batch`` (a last batch too small to hold a negative) is skipped.
    Under ``torch.distributed`` each global batch is split into contiguous,
    near-equal parts, one per rank."""

    def __init__(self, n: int, batch_size: int, epochs: int, seed: int, min_batch: int = 1, distributed: bool = False) -> None:
        self.n, self.batch_size, self.epochs, self.seed = n, batch_size, epochs, int(seed)
        self.world = torch.distributed.get_world_size() if distributed else 1
        self.rank = torch.distributed.get_rank() if distributed else 0
        self.min_batch = max(min_batch, self.world)
        self.steps_per_epoch = max(1, math.ceil(n / batch_size))
        self._perm: Tuple[int, np.ndarray] = (-1, np.arange(0))

    def rows(self, epoch: int, step: int) -> Optional[np.ndarray]:
        if self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n))
        idx = self._perm[1][step * self.batch_size : (step + 1) * self.batch_size]
        if len(idx) < self.min_batch:
            return None
        return np.array_split(idx, self.world)[self.rank] if self.world > 1 else idx

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


class RandomBatches:
    """``steps`` steps, each drawing ``batch_size`` rows with replacement from
    each of several sets (``sizes``), from a numpy generator whose state is
    checkpointed (one epoch of ``steps`` steps)."""

    def __init__(self, sizes: Sequence[int], batch_size: int, steps: int, rng: np.random.Generator) -> None:
        self.sizes, self.batch_size, self.rng = tuple(int(s) for s in sizes), batch_size, rng
        self.epochs, self.steps_per_epoch = 1, steps

    def rows(self, epoch: int, step: int) -> Tuple[np.ndarray, ...]:
        return tuple(self.rng.integers(0, n, size=self.batch_size) for n in self.sizes)

    def state_dict(self) -> Dict[str, Any]:
        return copy.deepcopy(self.rng.bit_generator.state)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = copy.deepcopy(dict(state))


# ---------------------------------------------------------------------------
# the engine

StepOutput = Union[torch.Tensor, Mapping[str, torch.Tensor], Tuple[Any, Mapping[str, float]]]


class Trainer:
    """Train ``net`` with ``optimizers`` on the batches of ``batches``.

    Parameters
    ----------
    net : the module holding every trained parameter (its state_dict is what
        checkpoints and snapshots store, with the optimisers' state).
    optimizers : name -> optimiser, in the order their losses are back-propagated.
    batches : :class:`EpochBatches`, :class:`RandomBatches`, or any object with
        ``epochs``, ``steps_per_epoch``, ``rows(epoch, step)`` (None: skip) and
        ``state_dict`` / ``load_state_dict``.
    kind : names the checkpoints (artefact kind ``"<kind>-checkpoint"``).
    fingerprint : a JSON-able dict (data digest, settings): a checkpoint from a
        run with another fingerprint is refused.
    checkpoint_dir, checkpoint_every : see the module docstring (None: no
        checkpoints / only at the end of each epoch).
    max_retries : rollbacks in a row (each halving the learning rate) before
        :class:`TrainingDivergedError`.
    max_grad_norm : gradient clipping per optimiser (None: none).
    explode_grad_norm : a gradient norm above this (before clipping) counts as
        a divergence (None: only non-finite ones do).
    snapshot_every : steps between in-memory snapshots for rollback (1: a
        failure replays the step whose update led to it).
    log_every : append a step record to ``history`` every this many steps and
        at the last one (None: none). ``epoch_records``: append one record per
        epoch (mean loss, mean of the step function's numbers, lr).
    callbacks : functions called with a dict per step / rollback / epoch.
    tags : constant entries added to every callback record (e.g. ``seed``).
    post_step : called after every optimiser step (e.g. clamping a temperature).
    distributed : sum gradients over ranks; rank 0 writes the checkpoints.

    After :meth:`run`: ``history``, ``rollbacks`` (one dict per divergence),
    ``global_step``, ``lr_scale``, ``resumed_from`` (the step a checkpoint
    restored, or None), ``stopped`` (a callback raised :class:`StopTraining`)
    and ``extra`` (a JSON dict the caller may fill; saved with the checkpoints).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizers: Mapping[str, torch.optim.Optimizer],
        batches: Any,
        *,
        kind: str,
        fingerprint: Mapping[str, Any],
        checkpoint_dir: Optional[PathLike] = None,
        checkpoint_every: Optional[int] = None,
        max_retries: int = 5,
        max_grad_norm: Optional[float] = None,
        explode_grad_norm: Optional[float] = None,
        snapshot_every: int = 1,
        log_every: Optional[int] = None,
        epoch_records: bool = True,
        callbacks: Sequence[Callable[[Dict[str, Any]], Any]] = (),
        tags: Optional[Mapping[str, Any]] = None,
        post_step: Optional[Callable[[], None]] = None,
        distributed: bool = False,
        progress: bool = True,
        desc: str = "train",
    ) -> None:
        if not optimizers:
            raise ValueError("optimizers: give at least one")
        self.net, self.optimizers, self.batches, self.kind = net, dict(optimizers), batches, kind
        self.fingerprint = jsonable(dict(fingerprint))
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpoint_every, self.max_retries = checkpoint_every, max_retries
        self.max_grad_norm, self.explode_grad_norm = max_grad_norm, explode_grad_norm
        self.snapshot_every, self.log_every, self.epoch_records = max(1, snapshot_every), log_every, epoch_records
        self.callbacks, self.tags, self.post_step = list(callbacks), dict(tags or {}), post_step
        self.distributed = distributed
        self.rank = torch.distributed.get_rank() if distributed else 0
        self.progress, self.desc = progress, desc
        self.base_lrs = [[g["lr"] for g in opt.param_groups] for opt in self.optimizers.values()]
        self.total_steps = batches.epochs * batches.steps_per_epoch
        # position and bookkeeping (all part of the saved state)
        self.epoch = self.step_in_epoch = self.global_step = 0
        self.epoch_loss_sum, self.epoch_loss_count = 0.0, 0
        self.epoch_extra: Dict[str, float] = {}  # sums of the step function's numbers
        self.lr_scale = 1.0
        self.history: List[Dict[str, Any]] = []
        self.rollbacks: List[Dict[str, Any]] = []
        self.extra: Dict[str, Any] = {}
        self.resumed_from: Optional[int] = None
        self.stopped = False
        self.save_seq = 0  # checkpoint folders are numbered by this, never reused

    @property
    def lr(self) -> float:
        """The current learning rate (of the first parameter group)."""
        return self.base_lrs[0][0] * self.lr_scale

    # -- state ------------------------------------------------------------
    def state(self) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
        """(tensors, JSON dict): network, optimiser moments, torch RNG, position."""
        tensors = {f"net.{k}": v.detach().clone() for k, v in self.net.state_dict().items()}
        offset = 0  # optimiser state is indexed over the parameters of all optimisers in turn
        for opt in self.optimizers.values():
            sd = opt.state_dict()
            for idx, st in sd["state"].items():
                for key, val in st.items():
                    tensors[f"optim.{offset + idx}.{key}"] = _tensor(val).detach().clone()
            offset += sum(len(g["params"]) for g in sd["param_groups"])
        tensors["rng.torch"] = torch.get_rng_state().clone()
        meta = {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_loss_count": self.epoch_loss_count,
            "epoch_extra": dict(self.epoch_extra),
            "schedule": self.batches.state_dict(),
            "n_history": len(self.history),
        }
        return tensors, meta

    def load_state(self, tensors: Mapping[str, Any], meta: Mapping[str, Any], source: str) -> None:
        """Restore what :meth:`state` returned; ValueError naming ``source`` when it does not fit."""
        sd = self.net.state_dict()
        want, have = {f"net.{k}" for k in sd}, {k for k in tensors if k.startswith("net.")}
        if want != have:
            raise ValueError(
                f"{source}: parameters {sorted(have ^ want)[:5]} differ from this model's; it was written for another architecture"
            )
        new_sd = {}
        for k, v in sd.items():
            t = _tensor(tensors[f"net.{k}"])
            if tuple(t.shape) != tuple(v.shape):
                raise ValueError(f"{source}: tensor {k!r} has shape {tuple(t.shape)}, the model has {tuple(v.shape)}")
            new_sd[k] = t.to(dtype=v.dtype)
        per_opt: List[Dict[int, Dict[str, torch.Tensor]]] = [{} for _ in self.optimizers]
        sizes = [sum(len(g["params"]) for g in opt.param_groups) for opt in self.optimizers.values()]
        for k, v in tensors.items():
            if not k.startswith("optim."):
                continue
            _, idx, key = k.split(".", 2)
            i, j = int(idx), 0
            while j < len(sizes) and i >= sizes[j]:
                i, j = i - sizes[j], j + 1
            if j == len(sizes):
                raise ValueError(f"{source}: optimiser state does not fit this model")
            per_opt[j].setdefault(i, {})[key] = _tensor(v).clone()
        try:
            self.net.load_state_dict(new_sd)
            for opt, state in zip(self.optimizers.values(), per_opt):
                opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
            torch.set_rng_state(_tensor(tensors["rng.torch"]).to(torch.uint8).clone())
            self.batches.load_state_dict(meta.get("schedule") or {})
            pos = {k: int(meta[k]) for k in ("epoch", "step_in_epoch", "global_step", "epoch_loss_count")}
            self.epoch_loss_sum = float(meta["epoch_loss_sum"])
            self.epoch_extra = {str(k): float(v) for k, v in dict(meta.get("epoch_extra") or {}).items()}
        except (AttributeError, KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{source}: checkpoint does not fit this run ({type(exc).__name__}: {exc})") from None
        if min(pos.values()) < 0 or pos["step_in_epoch"] > self.batches.steps_per_epoch:
            raise ValueError(f"{source}: position {pos} is out of range")
        self.epoch, self.step_in_epoch, self.global_step = pos["epoch"], pos["step_in_epoch"], pos["global_step"]
        self.epoch_loss_count = pos["epoch_loss_count"]
        if "n_history" in meta:
            del self.history[int(meta["n_history"]) :]

    def _set_lr(self) -> None:
        for opt, bases in zip(self.optimizers.values(), self.base_lrs):
            for g, base in zip(opt.param_groups, bases):
                g["lr"] = base * self.lr_scale

    # -- checkpoints --------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Write the whole state into a new ``ckpt-<n>`` folder, then point ``LATEST`` at it."""
        if self.checkpoint_dir is None:
            return
        if self.rank == 0:
            tensors, meta = self.state()
            self.save_seq += 1
            config = {
                "fingerprint": self.fingerprint,
                "state": meta,
                "lr_scale": self.lr_scale,
                "history": jsonable(self.history),
                "rollbacks": jsonable(self.rollbacks),
                "save_seq": self.save_seq,
                "extra": jsonable(self.extra),
            }
            d, name = self.checkpoint_dir, f"ckpt-{self.save_seq:09d}"
            if (d / name).exists():  # debris of a save killed before LATEST named it
                shutil.rmtree(d / name)
            save_artifact(d / name, f"{self.kind}-checkpoint", config, tensors)
            atomic_write_bytes(d / LATEST, name.encode())
            for old in d.iterdir():
                if old.is_dir() and CHECKPOINT_PATTERN.match(old.name) and old.name != name:
                    shutil.rmtree(old, ignore_errors=True)
        if self.distributed:
            torch.distributed.barrier()

    def load_checkpoint(self) -> bool:
        """Restore the checkpoint ``LATEST`` names; False when there is none."""
        if self.checkpoint_dir is None:
            return False
        latest = self.checkpoint_dir / LATEST
        if not latest.is_file():
            return False
        try:
            name = latest.read_text().strip()
        except UnicodeDecodeError:
            name = "?"
        if not CHECKPOINT_PATTERN.match(name):
            raise ValueError(f"checkpoint_dir: {latest} names {name!r}, not a checkpoint folder; delete it to start afresh")
        path = self.checkpoint_dir / name
        config, tensors, _ = load_artifact(path, f"{self.kind}-checkpoint", expected_config_keys=CONFIG_KEYS)
        self.restore(config, tensors, str(path))
        return True

    def restore(self, config: Mapping[str, Any], tensors: Mapping[str, Any], source: str) -> None:
        """Restore a checkpoint's (config, tensors), checking its fingerprint first."""
        if config.get("fingerprint") != self.fingerprint:
            old, new = config.get("fingerprint") or {}, self.fingerprint
            old = old if isinstance(old, dict) else {"fingerprint": old}
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ValueError(
                f"checkpoint_dir {str(self.checkpoint_dir)!r} holds a checkpoint of a different run, with other data "
                f"or hyper-parameters (differs in: {', '.join(diff)}); use another checkpoint_dir or delete this one"
            )
        try:
            self.load_state(tensors, config["state"], source)
            self.lr_scale = float(config["lr_scale"])
            self.history = list(config["history"])
            self.rollbacks = list(config["rollbacks"])
            self.save_seq = int(config["save_seq"])
            self.extra = dict(config.get("extra") or {})
        except (AttributeError, KeyError, TypeError) as exc:
            raise ValueError(f"{source}: checkpoint does not fit this run ({type(exc).__name__}: {exc})") from None
        if not 0 < self.lr_scale <= 1:
            raise ValueError(f"{source}: learning-rate scale {self.lr_scale} is out of range (0, 1]")
        self.resumed_from = self.global_step

    # -- the loop -------------------------------------------------------------
    def _backward(self, losses: Mapping[str, torch.Tensor]) -> Dict[str, float]:
        norms = {}
        for name, opt in self.optimizers.items():
            params = [p for g in opt.param_groups for p in g["params"]]
            opt.zero_grad(set_to_none=True)
            losses[name].backward()
            grads = [p for p in params if p.grad is not None]
            if self.distributed:
                for p in grads:
                    torch.distributed.all_reduce(p.grad)
            limit = self.max_grad_norm if self.max_grad_norm is not None else float("inf")
            norms[name] = float(torch.nn.utils.clip_grad_norm_(grads, limit)) if grads else 0.0
        return norms

    def _notify(self, record: Dict[str, Any]) -> None:
        for fn in self.callbacks:
            fn({**record, **self.tags})

    def run(
        self,
        step_fn: Callable[[Any], StepOutput],
        epoch_fn: Optional[Callable[[int], Optional[Dict[str, Any]]]] = None,
        resume: bool = True,
    ) -> "Trainer":
        """Train to the end of the schedule (resuming from ``checkpoint_dir`` first
        when ``resume``).

        ``step_fn(batch)`` returns the loss (one optimiser), or a dict optimiser
        name -> loss, or either with a dict of extra numbers: ``(losses, {name:
        float})``; those numbers are averaged over the epoch into its record.
        The first optimiser's loss is the records' ``loss`` (the others' appear
        only as the step function reports them); ``epoch_fn(epoch)``
        returns extra numbers for that epoch's record (it may raise to stop
        training: the state at the last checkpoint is kept).
        """
        if resume:
            self.load_checkpoint()
        self._set_lr()
        names = list(self.optimizers)
        good = self.state()  # the last state known to be good
        candidate: Optional[Tuple[Dict[str, torch.Tensor], Dict[str, Any]]] = None
        snap_due = False
        fails, fail_step = 0, -1
        recent: List[float] = []
        bar = progress_bar(total=self.total_steps, initial=min(self.global_step, self.total_steps), desc=self.desc,
                           unit="step", leave=False, enabled=self.progress and self.rank == 0)
        try:
            while self.epoch < self.batches.epochs:
                if self.step_in_epoch >= self.batches.steps_per_epoch:
                    self._end_epoch(epoch_fn)
                    continue
                if (snap_due or self.global_step % self.snapshot_every == 0) and good[1]["global_step"] != self.global_step:
                    candidate = self.state()
                snap_due = False
                batch = self.batches.rows(self.epoch, self.step_in_epoch)
                if batch is None:
                    self.step_in_epoch += 1
                    continue
                self.net.train()
                out = step_fn(batch)
                losses, numbers = out if isinstance(out, tuple) else (out, {})
                if isinstance(losses, torch.Tensor):
                    losses = {names[0]: losses}
                values = {name: float(losses[name].detach()) for name in names}
                norms = {name: float("nan") for name in names}
                ok = all(math.isfinite(v) for v in values.values())
                if ok:
                    norms = self._backward(losses)
                record = {"loss": values[names[0]], **{k: float(v) for k, v in numbers.items()}}
                record.update({"grad_norm": norms[names[0]]} if len(names) == 1 else {f"grad_{k}": v for k, v in norms.items()})
                limit = self.explode_grad_norm if self.explode_grad_norm is not None else float("inf")
                ok = all(math.isfinite(v) for v in record.values()) and max(norms.values()) <= limit
                recent = (recent + [values[names[0]]])[-10:]
                if not ok:
                    fails += 1
                    fail_step = max(fail_step, self.global_step)
                    if fails > self.max_retries:
                        shown = ", ".join(f"{k}={v:.4g}" for k, v in record.items())
                        raise TrainingDivergedError(
                            f"{self.desc}: training diverged at step {fail_step} (epoch {self.epoch}): {shown}; still "
                            f"non-finite or exploding after {self.max_retries} rollbacks with the learning rate halved "
                            f"each time (now {self.lr:g}); recent losses: "
                            f"{[round(x, 6) if math.isfinite(x) else x for x in recent]}. Check the inputs' scale, or lower lr."
                        )
                    for opt in self.optimizers.values():
                        opt.zero_grad(set_to_none=True)
                    failed_at = self.global_step
                    self.load_state(*good, source="in-memory snapshot")
                    candidate = None
                    self.lr_scale *= 0.5
                    self._set_lr()
                    event = {"step": failed_at, "to_step": self.global_step, "lr": self.lr, "losses": jsonable(record)}
                    self.rollbacks.append(event)
                    if self.log_every:  # step-logging runs keep the event in their history, where it happened
                        self.history.append({"event": "rollback", **event})
                    self._notify({"event": "rollback", **event})
                    bar.n = self.global_step
                    bar.refresh()
                    continue
                if self.global_step > fail_step:
                    fails = 0
                if candidate is not None:
                    good, candidate = candidate, None
                for opt in self.optimizers.values():
                    opt.step()
                if self.post_step is not None:
                    self.post_step()
                self.epoch_loss_sum += values[names[0]]
                self.epoch_loss_count += 1
                for k, v in numbers.items():
                    self.epoch_extra[k] = self.epoch_extra.get(k, 0.0) + float(v)
                self.step_in_epoch += 1
                self.global_step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{values[names[0]]:.4f}", refresh=False)
                step_record = {"step": self.global_step, "lr": self.lr, **record}
                if self.log_every and (self.global_step % self.log_every == 0 or self.global_step == self.total_steps):
                    self.history.append(jsonable(step_record))
                if self.checkpoint_every and self.global_step % self.checkpoint_every == 0 and self.global_step < self.total_steps:
                    self.save_checkpoint()
                    snap_due = True
                self._notify({**step_record, "epoch": self.epoch})
        except StopTraining:
            self.stopped = True
            self.save_checkpoint()
        finally:
            bar.close()
        return self

    def _end_epoch(self, epoch_fn: Optional[Callable[[int], Optional[Dict[str, Any]]]]) -> None:
        count = max(self.epoch_loss_count, 1)
        record: Dict[str, Any] = {
            "epoch": self.epoch,
            "step": self.global_step,
            "loss": self.epoch_loss_sum / count,
            "lr": self.lr,
        }
        record.update({k: v / count for k, v in self.epoch_extra.items()})
        if epoch_fn is not None:
            record.update(epoch_fn(self.epoch) or {})
        if self.epoch_records:
            self.history.append(jsonable(record))
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_loss_sum, self.epoch_loss_count, self.epoch_extra = 0.0, 0, {}
        self.save_checkpoint()
        self._notify({"event": "epoch", **record})
