"""vec2vec: unpaired translation with adapters, a shared latent space and a GAN.

Model (Jha, Zhang, Shmatikov & Morris 2025, "Harnessing the Universal Geometry
of Embeddings", arXiv:2505.12540, §3; networks in :mod:`translate.vec2vec.networks`)
-------------------------------------------------------------------------
Input adapters ``A_a``, ``A_b``, a shared backbone ``T`` and output adapters
``B_a, B_b`` give translations ``F_ab = B_b∘T∘A_a``, ``F_ba = B_a∘T∘A_b`` and
reconstructions ``R_a = B_a∘T∘A_a``, ``R_b = B_b∘T∘A_b``. Training minimises,
over unpaired minibatches ``x ~ A``, ``y ~ B`` (rows centred and L2-normalised
per space),

``L = w_adv L_adv + w_latent L_lat + w_rec L_rec + w_cycle L_cyc + w_vsp L_vsp (+ w_anchor L_anchor)``

* ``L_adv``: least-squares GAN (Mao et al. 2017) with one discriminator per
  output space: ``D_b`` tells ``y`` from ``F_ab(x)``, ``D_a`` tells ``x`` from
  ``F_ba(y)``. Discriminators minimise ``½E(D(real)-1)² + ½E D(fake)²``,
  generators ``½E(D(fake)-1)²``.
* ``L_lat``: the same on the latent space, both directions: ``D_za`` tells
  ``T A_b(y)`` (real) from ``T A_a(x)`` (fake), ``D_zb`` the converse.
* ``L_rec = E||R_a(x)-x||² + E||R_b(y)-y||²``,
  ``L_cyc = E||F_ba(F_ab(x))-x||² + E||F_ab(F_ba(y))-y||²``,
* ``L_vsp`` (vector-space preservation) ``= mean_{ij} (cos(x_i,x_j) -
  cos(F_ab(x_i),F_ab(x_j)))²`` plus the same for ``y`` and ``F_ba``.
* ``L_anchor = E||F_ab(x) - G(x)||²`` only when initialised from another
  translator ``G`` (see ``init``), its weight decaying linearly to 0 over the first
  ``anchor_decay`` of the steps.
* ``L_match = E||F_ab(x) - t(x)||² + E||F_ba(y) - t(y)||²`` (default only with
  ``init``): ``t`` the barycentric projection of each translation onto the other
  side's minibatch under the entropic OT plan (:func:`networks.sinkhorn_targets`):
  minibatch distribution matching without a discriminator (Genevay, Peyré & Cuturi
  2018), the non-linear counterpart of the Wasserstein-Procrustes refinement of
  :class:`translate.Isometric`. On CPU budgets it is what moves an isometric start
  toward a curved relation; the adversarial terms alone did not (docs/ladder.md).

Default weights rec 1, VSP 1, cycle 10, adversarial 1 are the paper's (§3);
Adam with betas (0.5, 0.999) as there. :class:`CycleGAN` is the same machinery
with ``shared_latent`` off: direct generators ``A -> B`` and ``B -> A``, no
reconstruction and no latent discriminators.

Initialisation from another translator (``init``): its best linear fit ``x W + c``
(exact for a linear map; near for ``Isometric``, which normalises rows: top-1 within
0.012 of it on docs/ladder.md's rungs) sets the linear ends of the A -> B path, and
``W^+`` those of B -> A, so training starts at that map; the anchor term keeps F_ab
near it while the other terms act. Denoising (``denoise``, default on): at transform
time the inputs pass the Wiener filter of :mod:`translate.denoise`, estimated without pairs.
What each part buys on CPU budgets is measured in docs/vec2vec.md (minilm -> mpnet:
the filter raises the mean cosine at unchanged top-1) and docs/ladder.md (curved
relations: the ``match`` term with a decaying anchor moves an isometric start).

The model is a moving average of the generators' weights over the steps (``ema``;
Yazıcı et al. 2019). Model selection is unsupervised, by the nearest-neighbour cycle
rate on a fixed subset of the training rows (:func:`nn_cycle_rate`): several seeds are
trained and the best is kept; with ``init`` the starting map is a candidate too, against
the end (every 100 steps with ``ema=0``; ``select_every``): ``selected_step_``; the average
at the end is kept unless the start is significantly better (McNemar's test).

Training runs on align's engine (:class:`align.train.Trainer`): a non-finite or
exploding (> :data:`EXPLODE_GRAD_NORM`) step rolls back to the last good state, halves
the learning rate and retries (``max_retries`` in a row: :class:`align.TrainingDivergedError`).
With ``checkpoint_dir`` each seed's whole state (networks, Adam moments, position, the
minibatch generator, history) goes to ``checkpoint_dir/seed_<i>/`` every
``checkpoint_every`` steps; ``fit`` resumes from it and ends where an uninterrupted run
ends. A checkpoint from other data or other hyper-parameters is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from align.device import torch_device
from align.validation import as_matrix, check_positive_int, check_real

from ..base import Translator
from ..denoise import apply_filter, input_filters, linear_fit, unit_rows
from .selection import apply_generator, cycle_rate, end_is_kept, nn_cycle_hits

__all__ = ["Vec2Vec", "CycleGAN", "DEFAULT_WEIGHTS"]

#: Loss weights of Jha et al. 2025 (§3): reconstruction 1, VSP 1, cycle 10,
#: adversarial 1. ``latent`` weights the latent-space GAN terms; ``anchor``
#: the pull towards an initial translator (used only with ``init``).
DEFAULT_WEIGHTS: Dict[str, float] = {"rec": 1.0, "vsp": 1.0, "cycle": 10.0, "adv": 1.0, "latent": 1.0, "anchor": 0.0,
                                     "match": 0.0}
#: Sinkhorn settings of the ``match`` term (entropic regularisation on the cosine cost of
#: unit rows, in [0, 2]; rounds): a soft plan averages many rows into a blurred target, and
#: eps 0.003 beat 0.01 and 0.05 on the ladder's curved rung (docs/ladder.md, exploratory).
MATCH_SINKHORN = {"eps": 0.003, "iters": 30}
#: anchor weight used when ``init`` is given and ``weights`` does not set one.
DEFAULT_ANCHOR = 1.0
#: ``match`` weight used when ``init`` is given and ``weights`` does not set one. Off without ``init``: like
#: Wasserstein-Procrustes, matching needs a start near the right map (a random start reinforces its first matches).
DEFAULT_MATCH = 10.0
#: fraction of ``steps`` over which the anchor weight falls linearly to zero (a constant
#: anchor held Vec2Vec at the isometric map's top-1 on the ladder's curved rungs).
DEFAULT_ANCHOR_DECAY = 0.5
#: decay of the moving average of the generators' weights (~100 steps; Yazıcı et al. 2019 use
#: 0.99-0.9999): synth-w2 of docs/ladder.md, top-1 at step 300 0.889-0.894 against 0.861-0.873 raw.
DEFAULT_EMA = 0.99
#: with ``init`` and ``ema=0``: steps between scorings by the unsupervised criterion (and step 0).
DEFAULT_SELECT_EVERY = 100
EXPLODE_GRAD_NORM = 1e4  # a gradient norm above this (before clipping) counts as an explosion
SNAPSHOT_EVERY = 50  # steps between refreshes of the in-memory "last good state" (and at checkpoints)
SELECT_ROWS = 2000  # rows of X and Y used for the unsupervised selection score
# parameters that do not change what is trained (excluded from the run fingerprint)
NON_TRAINING = ("checkpoint_dir", "checkpoint_every", "device", "progress")


class Vec2Vec(Translator):
    """Unpaired translator A -> B: adapters + shared latent MLP + least-squares GAN
    + cycle + VSP losses (Jha et al. 2025). See the module docstring for the losses.

    Parameters (scikit-learn's contract: stored as given, validated at ``fit``;
    ``get_params(deep)`` / ``set_params``, so ``sklearn.base.clone`` works)
    ----------
    latent_dim : width of the shared latent (residual stream); ``None`` = min(d_a, d_b),
        the smallest width that can hold an exact linear initialisation.
    hidden : inner width of the residual MLP blocks (and of the discriminators).
    depth : residual blocks per adapter, per backbone and per discriminator.
    steps : optimisation steps per seed. batch_size : rows of X and of Y per step.
    lr : Adam learning rate (generators and discriminators), betas (0.5, 0.999).
    weights : loss weights, merged over :data:`DEFAULT_WEIGHTS` (keys rec, vsp,
        cycle, adv, latent, anchor, match); with ``init``, anchor defaults to
        :data:`DEFAULT_ANCHOR` and match to :data:`DEFAULT_MATCH`.
    n_seeds : independent runs; the one with the best :func:`nn_cycle_rate` is kept.
    seed : seeds every run (model initialisation and minibatches).
    init : ``None`` (random) or a translator A -> B (fitted, or fitted here on
        ``X, Y`` first when it is an unfitted :class:`translate.Translator`). Its
        best linear fit (exact for a linear map) initialises the A -> B
        path and its pseudo-inverse B -> A; the anchor loss keeps F_ab near that
        initial map while the GAN terms refine it. A saved model records it by
        class name only (``"translator:<Class>"``), which ``fit`` refuses.
    anchor_decay : fraction of ``steps`` over which the anchor weight falls linearly
        from its value to zero (0: constant). The anchor keeps the first steps near
        the initial map, while the discriminators learn; left on, it holds the map
        there for good (see :data:`DEFAULT_ANCHOR_DECAY`).
    select_every : score the generators by :func:`nn_cycle_rate` on the selection rows every this many
        steps, and at step 0, and keep the best state (its step is ``selected_step_``); 0 keeps the last
        step. With the average (``ema`` > 0) the end is kept unless the state kept before is significantly
        better (:func:`selection.end_is_kept`). ``None``, with ``init``: the start against the end with the
        average, else every :data:`DEFAULT_SELECT_EVERY` steps; 0 without ``init``.
    ema : decay of the moving average of the generators' weights (module docstring);
        the average is scored, selected and kept. 0: the raw weights, as before.
    denoise : at transform time, pass inputs through the Wiener filter of
        :mod:`translate.denoise`, estimated without pairs (the network itself is
        trained as usual).
    checkpoint_dir, checkpoint_every : periodic checkpoints; ``fit`` resumes
        from those found in ``checkpoint_dir``.
    max_grad_norm : gradient clipping; max_retries : rollbacks in a row allowed
        before :class:`align.TrainingDivergedError`.
    device : torch device of the networks; default CUDA when present, else CPU. The selection's kNN takes
        CUDA where present whatever ``device`` (same results; ``REPTRANS_FORCE_CPU=1`` keeps it off).
    progress : show a tqdm bar.

    Attributes after fit: ``generator_`` (flat float32 parameters of the
    generators), ``mean_x_``, ``mean_y_``, ``scale_x_``, ``scale_y_``
    (preprocessing), ``noise_`` (noise variances [A, B] estimated for
    ``denoise``, or None), ``denoise_a_``, ``denoise_b_`` (the input filters;
    identities without denoising), ``selected_seed_``, ``seed_scores_``,
    ``selected_step_`` (the step of the kept state), ``steps_done_``, ``history_``.
    """

    _state = ("generator_", "mean_x_", "mean_y_", "denoise_a_", "denoise_b_")
    _state_meta = ("scale_x_", "scale_y_", "latent_dim_", "noise_", "selected_seed_", "seed_scores_", "selected_step_",
                   "steps_done_")
    _shared_latent = True

    @classmethod
    def _upgrade_meta(cls, meta: Dict[str, Any]) -> Dict[str, Any]:
        # saved before the selection over training existed: the last step was kept
        return {"selected_step_": meta.get("steps_done_"), **meta} if "steps_done_" in meta else meta

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
        anchor_decay: float = DEFAULT_ANCHOR_DECAY,
        select_every: Optional[int] = None,
        ema: float = DEFAULT_EMA,
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
        self.anchor_decay = anchor_decay
        self.select_every = select_every
        self.ema = ema
        self.denoise = denoise
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.max_grad_norm = max_grad_norm
        self.max_retries = max_retries
        self.device = device
        self.progress = progress

    # -- parameters --------------------------------------------------------
    def _json_params(self) -> Dict[str, Any]:
        """The parameters as saved (JSON): a translator given as ``init`` is
        recorded by class name (it is not saved with this model)."""
        p = self.get_params(deep=False)
        if p["init"] is not None and not isinstance(p["init"], str):
            p["init"] = f"translator:{type(p['init']).__name__}"
        for k in ("checkpoint_dir", "device"):
            if p[k] is not None:
                p[k] = str(p[k])
        if isinstance(p["weights"], Mapping):
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
        check_real(self.lr, "lr", low=0, open_low=True)
        check_real(self.max_grad_norm, "max_grad_norm", low=0, open_low=True)
        check_real(self.anchor_decay, "anchor_decay", low=0, high=1)
        if self.select_every is not None:
            check_positive_int(self.select_every, "select_every", minimum=0)
        check_real(self.ema, "ema", low=0, high=1, open_high=True)
        if self.weights is not None and not isinstance(self.weights, Mapping):
            raise ValueError(f"weights must be a dict of loss weights, got {type(self.weights).__name__}")
        given = dict(self.weights or {})
        unknown = set(given) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(f"weights has unknown keys {sorted(unknown)}; known: {sorted(DEFAULT_WEIGHTS)}")
        w = dict(DEFAULT_WEIGHTS)
        if self.init is not None:
            w["anchor"], w["match"] = DEFAULT_ANCHOR, DEFAULT_MATCH
        w.update(given)
        w = {k: check_real(v, f"weights[{k!r}]", low=0) for k, v in w.items()}
        if not isinstance(self.denoise, bool):
            raise ValueError(f"denoise must be True or False, got {self.denoise!r}")
        init = self.init
        if isinstance(init, str):
            hint = " (a loaded model records its init translator by name only: pass the translator again)" if init.startswith("translator:") else ""
            raise ValueError(f"init must be None or a translator; got {init!r}{hint}")
        if init is not None and not callable(getattr(init, "transform", None)):
            raise ValueError(f"init must be None or a translator with transform(); got {type(init).__name__}")
        return w

    # -- fit -------------------------------------------------------------------
    def fit(self, X: Any, Y: Any, pairs: Any = None, callbacks: Sequence[Callable[[Dict[str, Any]], Any]] = ()) -> "Vec2Vec":
        """Learn the map from the rows of ``X`` (space A) to space B (rows of ``Y``; unpaired).

        ``callbacks``: functions called with a dict per training step (``step``,
        ``seed``, ``lr``, ``loss``, ``disc``, the loss terms, ``grad_g``,
        ``grad_d``), per rollback (``event="rollback"``) and at each seed's end
        (see :mod:`align.train.engine`). Inside one, ``self.transform`` uses the
        current generators (without the denoising filter, estimated at the end).
        Raising :class:`align.train.StopTraining` ends training there (remaining
        seeds are skipped) and finishes the model from the state reached.
        """
        self._callbacks = list(callbacks)
        try:
            return super().fit(X, Y) if pairs is None else super().fit(X, Y, pairs=pairs)
        finally:
            self._callbacks = []

    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        try:
            self._fit_seeds(X, Y)
        except BaseException:
            for name in ("d_in_", "_gen_module"):  # an interrupted fit is not a fitted model
                self.__dict__.pop(name, None)
            raise

    def _fit_seeds(self, X: np.ndarray, Y: np.ndarray) -> None:
        from align.train.engine import fingerprint_arrays, fork_rng

        weights = self._check_params()
        dev = torch_device(self.device)
        width = self.latent_dim if self.latent_dim is not None else min(X.shape[1], Y.shape[1])
        self.latent_dim_ = int(width)
        self.mean_x_ = X.mean(axis=0).astype(np.float32)
        self.mean_y_ = Y.mean(axis=0).astype(np.float32)
        Xn, Yn = unit_rows(X, self.mean_x_), unit_rows(Y, self.mean_y_)
        # typical norm of a centred row: maps unit-norm outputs back to raw scale
        self.scale_x_ = float(np.linalg.norm(X - self.mean_x_, axis=1).mean())
        self.scale_y_ = float(np.linalg.norm(Y - self.mean_y_, axis=1).mean())
        targets = self._init_targets(X, Y)
        # without averaging, a run trains as before the parameter existed: its checkpoints resume
        params = {k: v for k, v in self._json_params().items() if k not in NON_TRAINING and not (k == "ema" and v == 0)}
        select_every = self.select_every
        if select_every is None:  # with init: the start against the end, or (no average) every DEFAULT_SELECT_EVERY
            select_every = 0 if targets is None else (max(1, self.steps) if self.ema > 0 else DEFAULT_SELECT_EVERY)
        # the earlier layout had neither parameter: runs they do not change resume from it
        legacy_params = {k: v for k, v in params.items()
                         if not (k == "select_every" and select_every == 0) and not (k == "anchor_decay" and targets is None)}
        setting = dict(
            device=dev,
            width=width,
            weights=weights,
            targets=targets,
            linear_init=None if targets is None else _networks().factorise_linear(*linear_fit(Xn, targets), width),
            fingerprint={"kind": type(self).__name__, "data": fingerprint_arrays(X, Y, *(() if targets is None else (targets,))), **params},
            legacy=(type(self).__name__, legacy_params, X, Y, targets),  # what the earlier checkpoint layout recorded
            select_every=int(select_every),
        )
        # held-out-free selection rows: a fixed random subset of the training rows
        sel_rng = np.random.default_rng(self.seed)
        sx = sel_rng.choice(len(Xn), size=min(SELECT_ROWS, len(Xn)), replace=False)
        sy = sel_rng.choice(len(Yn), size=min(SELECT_ROWS, len(Yn)), replace=False)
        # until the end, transform() shows the generators being trained, unfiltered
        self.noise_ = None
        self.denoise_a_ = np.eye(X.shape[1], dtype=np.float32)
        self.denoise_b_ = np.eye(Y.shape[1], dtype=np.float32)
        runs: List[Dict[str, Any]] = []
        with fork_rng(dev):
            for i, ss in enumerate(np.random.SeedSequence(self.seed).spawn(self.n_seeds)):
                runs.append(self._train_seed(i, ss, Xn, Yn, sx, sy, setting))
                if runs[-1]["stopped"]:
                    break
        scores = [r["score"] for r in runs]
        best = int(np.argmax(scores))  # ties -> lowest seed index
        self.selected_seed_ = best
        self.seed_scores_ = [float(s) for s in scores]
        self.steps_done_ = int(runs[best]["steps"])
        self.selected_step_ = int(runs[best]["selected_step"])
        self._gen_module = runs[best]["gen"].eval()
        self.generator_ = _networks().flatten_params(self._gen_module)
        self._fit_denoise(Xn, Yn)
        self.history_ = [dict(e, seed=r["index"]) for r in runs for e in r["history"]]
        self.history_.append({"event": "selected", "seed": best, "nn_cycle_rate": self.seed_scores_,
                              "end_z": [r["end_z"] for r in runs]})

    def _train_seed(self, index: int, seed_seq: np.random.SeedSequence, Xn: np.ndarray, Yn: np.ndarray,
                    sx: np.ndarray, sy: np.ndarray, setting: Dict[str, Any]) -> Dict[str, Any]:
        """Build, train (resuming from this seed's checkpoints) and score one seed."""
        import torch

        from align.train.engine import RandomBatches, Trainer

        from .legacy import restore_legacy_checkpoint

        networks = _networks()
        dev, weights = setting["device"], setting["weights"]
        torch_seed, np_seed = (int(s) for s in seed_seq.generate_state(2, dtype=np.uint32))
        torch.manual_seed(torch_seed)
        gen, disc = networks.build_modules(Xn.shape[1], Yn.shape[1], setting["width"], self.hidden, self.depth, self._shared_latent)
        if setting["linear_init"] is not None:
            networks.apply_linear_init(gen, setting["linear_init"])
        modules = {"gen": gen, "disc": disc}
        select_every = setting["select_every"]
        keeper = networks.BestState(gen) if select_every else None
        averaged = networks.AveragedState(gen, self.ema) if self.ema > 0 else None
        # part of the trained state: checkpointed and rolled back with it
        modules.update({k: m for k, m in (("best", keeper), ("ema", averaged)) if m is not None})
        # the generators scored, selected and kept: the average, when there is one
        kept = gen if averaged is None else averaged.gen
        net = torch.nn.ModuleDict(modules).to(dev)
        betas = (0.5, 0.999)  # Jha et al. 2025; standard for GANs (Radford et al. 2016)
        optimizers = {
            "g": torch.optim.Adam(gen.parameters(), lr=self.lr, betas=betas),
            "d": torch.optim.Adam(disc.parameters(), lr=self.lr, betas=betas),
        }
        rng = np.random.Generator(np.random.PCG64(np_seed))
        seed_dir = None if self.checkpoint_dir is None else Path(self.checkpoint_dir) / f"seed_{index}"
        trainer = Trainer(
            net,
            optimizers,
            RandomBatches((Xn.shape[0], Yn.shape[0]), self.batch_size, self.steps, rng),
            kind=type(self).__name__,
            fingerprint=setting["fingerprint"],
            checkpoint_dir=seed_dir,
            checkpoint_every=self.checkpoint_every,
            max_retries=self.max_retries,
            max_grad_norm=self.max_grad_norm,
            explode_grad_norm=EXPLODE_GRAD_NORM,
            snapshot_every=SNAPSHOT_EVERY,
            log_every=max(1, self.steps // 500),
            epoch_records=False,
            callbacks=self._callbacks,
            post_step=None if keeper is None and averaged is None else lambda: after_step(trainer.global_step + 1),
            tags={"seed": index},
            progress=self.progress,
            desc=f"{type(self).__name__} seed {index + 1}/{self.n_seeds}",
        )
        Xt, Yt = torch.from_numpy(Xn).to(dev), torch.from_numpy(Yn).to(dev)
        targets = setting["targets"]
        anchor = torch.from_numpy(targets).to(dev) if targets is not None and weights["anchor"] > 0 else None
        decay_steps = self.anchor_decay * self.steps

        def step(batch):
            ia, ib = (torch.from_numpy(b).to(dev) for b in batch)
            x, y = Xt[ia], Yt[ib]
            out = gen.all(x, y)
            parts = networks.generator_terms(out, disc, x, y, None if anchor is None else anchor[ia],
                                             MATCH_SINKHORN if weights["match"] > 0 else None)
            # linear decay of the anchor (a function of the step: resumes and rollbacks follow it)
            w = dict(weights, anchor=weights["anchor"] * (max(0.0, 1.0 - trainer.global_step / decay_steps) if decay_steps else 1.0))
            g_loss = sum(w[k] * v for k, v in parts.items())
            d_loss = networks.discriminator_loss(out, disc, x, y)
            numbers = {k: float(v.detach()) for k, v in parts.items()}
            numbers["disc"] = float(d_loss.detach())
            return {"g": g_loss, "d": d_loss}, numbers

        def hits(g) -> Tuple[np.ndarray, np.ndarray]:
            return nn_cycle_hits(lambda A: apply_generator(g.a2b, A), lambda B: apply_generator(g.b2a, B), Xn[sx], Yn[sy])

        def after_step(done: int) -> None:
            if averaged is not None:
                averaged.update(gen)
            if keeper is not None and (done % select_every == 0 or done == self.steps):
                kept.eval()
                h, replace = hits(kept), None
                if averaged is not None and done == self.steps:  # the average at the end: what training estimated
                    replace, trainer.extra["end_z"] = end_is_kept(hits(keeper.gen), h)
                keeper.offer(kept, cycle_rate(h), done, replace=replace)
                kept.train()

        def settle() -> None:
            """The generators to keep: the best state scored, with selection; else the average, if any."""
            if keeper is not None:
                keeper.restore(gen)
                trainer.extra["selected_step"] = int(keeper.step)
            elif averaged is not None:
                averaged.restore(gen)
            trainer.extra["score"] = float(keeper.score) if keeper is not None else cycle_rate(hits(gen))

        def finish(epoch: int) -> None:
            settle()  # saved with the final checkpoint

        self._gen_module = gen
        if keeper is not None:  # the starting map is a candidate (a checkpoint, if any, overrides this)
            gen.eval()
            keeper.offer(gen, cycle_rate(hits(gen)), 0)
        legacy = seed_dir is not None and restore_legacy_checkpoint(trainer, seed_dir, index, *setting["legacy"])
        trainer.run(step, finish, resume=not legacy)
        gen.eval()
        if not (trainer.epoch >= 1 and "score" in trainer.extra):  # stopped early
            settle()
        return dict(
            index=index,
            gen=gen,
            score=float(trainer.extra["score"]),
            selected_step=int(trainer.extra.get("selected_step", trainer.global_step)),
            end_z=trainer.extra.get("end_z"),
            steps=trainer.global_step,
            history=trainer.history,
            stopped=trainer.stopped,
        )

    def _fit_denoise(self, Xn: np.ndarray, Yn: np.ndarray) -> None:
        """Input-side Wiener filters (:func:`translate.denoise.input_filters`), estimated from
        the unpaired covariances and the subspaces of the best linear fit of the trained map."""
        self.noise_ = None
        self.denoise_a_ = np.eye(Xn.shape[1], dtype=np.float32)
        self.denoise_b_ = np.eye(Yn.shape[1], dtype=np.float32)
        if self.denoise:
            W, _ = linear_fit(Xn, apply_generator(self._module().a2b, Xn))
            self.noise_, self.denoise_a_, self.denoise_b_ = input_filters(Xn, Yn, W)

    def _init_targets(self, X: np.ndarray, Y: np.ndarray) -> Optional[np.ndarray]:
        """``init``'s translation of X, centred by its own mean and row-normalised
        (the same preprocessing as the data; its own mean so that translators
        that return centred outputs work too). An unfitted translator is fitted
        on (X, Y) first (a copy: ``init`` itself stays as given)."""
        init = self.init
        if init is None:
            return None
        if isinstance(init, Translator) and not hasattr(init, "d_in_"):
            init = type(init)(**init.get_params(deep=False)).fit(X, Y)
        try:
            T = np.asarray(init.transform(X), dtype=np.float32)
        except Exception as exc:
            raise ValueError(f"init: could not translate X with {type(init).__name__} ({type(exc).__name__}: {exc})") from None
        if T.shape != (X.shape[0], Y.shape[1]) or not np.isfinite(T).all():
            raise ValueError(
                f"init: {type(init).__name__}.transform(X) gave shape {T.shape} (finite: {bool(np.isfinite(T).all())}); "
                f"expected finite ({X.shape[0]}, {Y.shape[1]}): is it fitted from X's space to Y's?"
            )
        return unit_rows(T, T.mean(axis=0))

    def _module(self):
        mod = getattr(self, "_gen_module", None)
        if mod is None:
            mod = self._build_generators()
            _networks().unflatten_params(mod, self.generator_)
            mod.to(self._inference_device()).eval()
            self._gen_module = mod
        return mod

    def _build_generators(self):
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            gen, _ = _networks().build_modules(self.d_in_, self.d_out_, self.latent_dim_, self.hidden, self.depth, self._shared_latent)
        return gen

    def _inference_device(self):
        try:
            return torch_device(self.device)
        except ValueError:  # e.g. trained on CUDA, loaded on a CPU-only machine
            return torch_device(None)

    def _transform(self, X: np.ndarray) -> np.ndarray:
        Z = apply_generator(self._module().a2b, apply_filter(unit_rows(X, self.mean_x_), self.denoise_a_))
        return Z * self.scale_y_ + self.mean_y_

    def inverse_transform(self, Y: Any) -> np.ndarray:
        """Map rows of space B back into space A (the B -> A generator)."""
        self._check_fitted()
        Y = as_matrix(Y, "Y", dtype=np.float32)
        if Y.shape[1] != self.d_out_:
            raise ValueError(f"Y has {Y.shape[1]} columns but this translator was fitted on {self.d_out_}")
        Z = apply_generator(self._module().b2a, apply_filter(unit_rows(Y, self.mean_y_), self.denoise_b_))
        return (Z * self.scale_x_ + self.mean_x_).astype(np.float32)

    # -- persistence -----------------------------------------------------------
    def save(self, path: Union[str, Path]) -> Path:
        """As :meth:`Translator.save`, with the parameters written as JSON
        (``init`` by class name: the translator is not saved with this model)."""
        given = self.get_params(deep=False)
        self.__dict__.update(self._json_params())
        try:
            return super().save(path)
        finally:
            self.__dict__.update(given)

    def _load_state(self, tensors: Dict[str, np.ndarray], meta: Dict[str, Any]) -> None:
        super()._load_state(tensors, meta)
        self._gen_module = None

    def _check_state(self) -> None:
        d_a, d_b = self.d_in_, self.d_out_
        g, mx, my = (np.asarray(getattr(self, k)) for k in ("generator_", "mean_x_", "mean_y_"))
        if mx.shape != (d_a,) or my.shape != (d_b,) or mx.dtype != np.float32 or my.dtype != np.float32:
            raise ValueError(f"saved means have shapes {mx.shape}, {my.shape}; expected ({d_a},), ({d_b},) float32")
        for k in ("scale_x_", "scale_y_"):
            check_real(getattr(self, k), f"saved {k}", low=0, open_low=True)
        noise = self.noise_
        if noise is not None and not (isinstance(noise, list) and len(noise) == 2):
            raise ValueError(f"saved noise_ = {noise!r} is not null or two numbers")
        for v in noise or ():
            check_real(v, "saved noise_")
        for k, d in (("denoise_a_", d_a), ("denoise_b_", d_b)):
            f = np.asarray(getattr(self, k))
            if f.shape != (d, d) or f.dtype != np.float32:
                raise ValueError(f"saved {k} is {f.dtype}{list(f.shape)}; expected float32[{d}, {d}]")
        check_positive_int(self.latent_dim_, "saved latent_dim_")
        check_positive_int(self.hidden, "saved parameter hidden")
        check_positive_int(self.depth, "saved parameter depth", minimum=0)
        mod = self._build_generators()
        n = sum(p.numel() for p in mod.parameters())
        if g.ndim != 1 or g.dtype != np.float32 or g.shape[0] != n:
            raise ValueError(
                f"saved generator_ is {g.dtype}{list(g.shape)}; this architecture needs float32[{n}] "
                f"(d_in={d_a}, d_out={d_b}, latent_dim={self.latent_dim_}, hidden={self.hidden}, depth={self.depth})"
            )
        _networks().unflatten_params(mod, g)
        mod.to(self._inference_device()).eval()
        self._gen_module = mod


class CycleGAN(Vec2Vec):
    """CycleGAN-style translator (Zhu et al. 2017): the :class:`Vec2Vec` machinery
    without the shared latent -- direct generators A -> B and B -> A (residual
    MLP stacks of width ``latent_dim``, ``3 * depth`` blocks), output-space
    least-squares GANs, cycle and VSP losses; no reconstruction, no latent GAN."""

    _shared_latent = False


def _networks():
    """:mod:`translate.vec2vec.networks`, imported on first use (it imports torch,
    which ``import translate`` and loading other translators do not need)."""
    from . import networks

    return networks
