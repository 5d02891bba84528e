#!/usr/bin/env python
"""The ladder: from an isometric relation to a curved one, which translator wins?

Each *rung* is a pair of spaces A -> B, unpaired: A and B hold different rows
(different texts, or different points of a synthetic cloud), and a held-out pool of
``--pool`` pairs (both sides of the same texts / points) scores every translator with
:func:`translate.evaluate` (top-1, mean cosine, FOSCTTM; pool size beside them).

Rungs
-----
* ``synth-w<s>``: a structured cloud (``--syn-d`` wide, ``--syn-k`` anisotropic clusters,
  as ``tests/synthetic.py``) through a random rotation and then the smooth invertible
  warp :func:`twist_warp` of strength ``s`` (``s = 0``: a pure rotation, the
  isometric rung), plus a little isotropic noise in B.
* ``minilm-mpnetL6``: all-MiniLM-L6-v2's sentence vectors (final layer) -> the mean-pooled
  hidden state after layer 6 of 12 of all-mpnet-base-v2 (:func:`mpnet_layer`).
* ``glove-minilm``: the mean of GloVe 6B 50-d word vectors -> minilm.
  Real rungs: A = source on texts [0, n), B = target on texts [n, 2n), pool = texts
  [``--pool-start``, +pool) embedded by both; with another ``--n`` than 5000 the rung is
  ``<name>@<n>`` in the JSON.

Methods on each rung
--------------------
* Paired ceilings, fitted on the *paired* B-side rows (source and target embeddings of
  the same texts / points): ``procrustes`` (orthogonal), ``ridge`` (linear), ``mlp``
  (a residual MLP started at the ridge map, :func:`paired_mlp`), between the VecMap-
  preprocessed spaces that ``Isometric`` maps, and (``<name>-raw``) between the
  centred spaces; a rung's MLP − Procrustes margin takes the better of the two per family.
* Unpaired: ``isometric`` (:class:`translate.Isometric`), ``v2v-scratch``
  (:class:`translate.Vec2Vec` from a random start) and ``v2v-iso`` (Vec2Vec started
  from the fitted isometric map: the intended use on CPU; ``v2v-iso-end`` the same without
  selection, and ``v2v-iso-issue`` as the issue measured it), each at a fixed number of
  steps; CPU seconds are recorded (the study runs on one thread); a row with selection
  records McNemar's z of the start against the end (``end_z``). ``--v2v-seeds`` repeats the
  ``v2v-iso`` row with further Vec2Vec seeds (the rung's data and isometric map unchanged): the
  seed spread table, each seed's gain over ``Isometric`` against the rung's target.

Usage::

    REPTRANS_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
        .venv/bin/python scripts/ladder_study.py --json out/ladder.json
    .venv/bin/python scripts/ladder_study.py --json out/ladder.json --md docs/ladder.md.tables --plot docs/img/ladder_top1.png

The JSON is written after every fit; a rerun skips what it holds (resumable).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def mpnet_layer_encoder(layer: int) -> Callable[[List[str]], np.ndarray]:
    """``texts -> (n, 768)``: mean over the attention mask of all-mpnet-base-v2's hidden
    state after transformer layer ``layer`` (of 12). A private copy of the model cut after
    that layer (MPNet has no final norm, so its output *is* that hidden state) runs half
    the layers of the full model for layer 6."""
    import copy

    import torch

    from align.encoders import load_encoder

    st = load_encoder("mpnet", device="cpu")
    tok, max_len = st.tokenizer, st.max_seq_length
    model = copy.deepcopy(st[0].auto_model).eval()
    model.encoder.layer = model.encoder.layer[:layer]

    def encode(texts: List[str]) -> np.ndarray:
        batch = tok(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        with torch.inference_mode():
            h = model(**batch).last_hidden_state
        m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
        return ((h * m).sum(1) / m.sum(1).clamp_min(1.0)).float().numpy()

    return encode


def mpnet_layer(layer: int, n: int, start: int, progress: bool = False) -> np.ndarray:
    """Corpus texts ``[start, start + n)`` through :func:`mpnet_layer_encoder`, cached as
    ``mpnet-L<layer>-mean-<mpnet package version>`` (the key convention shared with
    scripts/platonic_study.py)."""
    from align.data import embed_corpus
    from align.encoders import get_encoder_spec

    key = f"mpnet-L{layer}-mean-{get_encoder_spec('mpnet').version()}"
    return embed_corpus(_cached_encoder(layer), n=n, start=start, cache_key=key, progress=progress)


_ENCODERS: dict = {}


def _cached_encoder(layer: int):
    # built lazily: a fully cached slice never loads the model
    def encode(texts):
        if layer not in _ENCODERS:
            _ENCODERS[layer] = mpnet_layer_encoder(layer)
        return _ENCODERS[layer](texts)

    return encode


def twist_warp(ref: np.ndarray, rng: np.random.Generator):
    """A smooth invertible, norm-preserving map of adjustable strength ``s``: one coupling
    layer (the additive coupling of Dinh, Krueger & Bengio 2015, NICE, with rotations in
    place of additions). The coordinates split into a *driving* half ``u`` (the
    higher-variance half of ``ref``'s coordinates), kept as they are, and a *twisted* half
    ``w``, cut into planes (pairs of coordinates); plane ``p`` of ``w`` turns by the angle
    ``s · (π/2) · tanh(u a_p + b_p)``, which varies smoothly with ``u``. It is undone by
    turning back by the same angles (they depend only on ``u``, which the layer leaves
    alone), so any strength gives a bijection, and every row keeps its norm: the identity
    at ``s = 0``, and as ``s`` grows a local rotation that changes from place to place --
    curved, with no linear part for a linear map to capture -- while the dominant
    directions, and so the coarse shape of the cloud, stay as they are. ``ref`` fixes the
    scale of each ``u a_p`` (unit spread over its rows) whatever rows are warped later."""
    d = ref.shape[1]
    order = np.argsort(-ref.var(0))
    u, w = order[: d // 2], order[d // 2 :]
    planes = rng.permutation(w)[: 2 * (len(w) // 2)].reshape(-1, 2)
    a = rng.standard_normal((len(u), len(planes)))
    a /= (ref[:, u] @ a).std(0)
    b = rng.uniform(-1, 1, len(planes))

    def warp(Z: np.ndarray, s: float) -> np.ndarray:
        out = np.array(Z, dtype=np.float64)
        theta = s * (np.pi / 2) * np.tanh(out[:, u] @ a + b)
        c, sn = np.cos(theta), np.sin(theta)
        p, q = out[:, planes[:, 0]].copy(), out[:, planes[:, 1]].copy()
        out[:, planes[:, 0]], out[:, planes[:, 1]] = c * p - sn * q, sn * p + c * q
        return out

    return warp


# -- data ---------------------------------------------------------------------------------
def synthetic_rung(strength: float, n: int, pool: int, d: int, k: int, noise: float, seed: int) -> Dict[str, np.ndarray]:
    """One synthetic rung. The cloud, rotation, warp and noise are drawn from ``seed``
    alone (not from ``strength``), so the rungs differ only by the warp's strength.
    Returns A (n source rows), B (n target rows of *other* points), Ap / Bp (those
    other points on both sides: the paired ceilings' training rows), At / Bt (the pool)."""
    rng = np.random.default_rng(seed)
    scales = np.geomspace(1.0, 0.1, d)  # anisotropic: the unpaired fit needs structure
    centres = rng.standard_normal((k, d)) * scales
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))

    def rows(m: int) -> np.ndarray:  # unit rows, as sentence encoders give
        return _unit(centres[rng.integers(k, size=m)] + 0.3 * rng.standard_normal((m, d)) * scales)

    A, Ap, At = rows(n), rows(n), rows(pool)
    warp = twist_warp(A, rng)

    def to_b(Z: np.ndarray) -> np.ndarray:  # the twist acts in A's coordinates, then the rotation
        return _unit(warp(Z, strength) @ Q + noise / np.sqrt(d) * rng.standard_normal(Z.shape))

    Bp, Bt = to_b(Ap), to_b(At)
    return dict(A=_f32(A), B=_f32(Bp), Ap=_f32(Ap), Bp=_f32(Bp), At=_f32(At), Bt=_f32(Bt))


def twisted_rung(src: Callable[[int, int], np.ndarray], strength: float, n: int, pool_start: int, pool: int,
                 seed: int) -> Dict[str, np.ndarray]:
    """A real encoder against a curved copy of itself: B is the encoder's rows of *other* texts through
    :func:`twist_warp` of strength ``strength`` in their principal coordinates (the driving half is the top
    half of the principal directions of the paired rows), the mean restored, then a random rotation, rows
    unit. The relation A -> B is a known smooth, curved bijection on real embeddings' geometry; texts as
    :func:`real_rung`."""
    rng = np.random.default_rng(seed)
    A, Ap, At = src(n, 0), src(n, n).astype(np.float64), src(pool, pool_start)
    mean = Ap.mean(0)
    P = np.linalg.svd(Ap - mean, full_matrices=False)[2].T
    warp = twist_warp((Ap - mean) @ P, rng)
    Q, _ = np.linalg.qr(rng.standard_normal((A.shape[1], A.shape[1])))

    def to_b(Z: np.ndarray) -> np.ndarray:
        return _unit(warp((Z - mean) @ P, strength) @ P.T + mean) @ Q

    Bp = to_b(Ap)
    return dict(A=_f32(A), B=_f32(Bp), Ap=_f32(Ap), Bp=_f32(Bp), At=_f32(At), Bt=_f32(to_b(At)))


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _unit(Z: np.ndarray) -> np.ndarray:
    return Z / np.linalg.norm(Z, axis=1, keepdims=True)


def real_rung(src: Callable[[int, int], np.ndarray], tgt: Callable[[int, int], np.ndarray], n: int, pool_start: int,
              pool: int) -> Dict[str, np.ndarray]:
    """A real rung: ``src(n, start)`` / ``tgt(n, start)`` embed corpus texts [start, start + n)."""
    return dict(A=src(n, 0), B=tgt(n, n), Ap=src(n, n), Bp=tgt(n, n), At=src(pool, pool_start), Bt=tgt(pool, pool_start))


def _encoder(name: str) -> Callable[[int, int], np.ndarray]:
    if name.startswith("mpnetL"):
        return lambda n, start: mpnet_layer(int(name[len("mpnetL"):]), n, start)
    from align.data import embed_corpus

    return lambda n, start: embed_corpus(name, n=n, start=start, progress=False)


# -- paired ceilings ----------------------------------------------------------------------
def paired_mlp(X: np.ndarray, Y: np.ndarray, seed: int = 0, hidden: int = 512, steps: int = 3000, lr: float = 1e-3,
               batch_size: int = 256, val_fraction: float = 0.1, eval_every: int = 100,
               vecmap: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """The paired non-linear ceiling: ``y ≈ x W + c + g(x)`` on centred rows (each space
    divided by its mean centred row norm, so that the norm of a row is kept as information),
    ``W, c`` started at the least-squares fit, ``g`` a one-hidden-layer SiLU MLP whose
    output layer starts at zero (so training starts at the linear ceiling). Adam on the
    squared error, ``val_fraction`` of the pairs held out, the step with the lowest
    held-out error kept (early stopping). Returns ``transform(X_new)`` in B's coordinates
    (its mean and scale restored, so that cosines against B rows are meaningful).
    ``vecmap=True`` fits it between the VecMap-preprocessed spaces (unit rows, centre, unit
    rows: :class:`translate.paired.SpacePrep`), the spaces ``Isometric`` maps."""
    import torch
    from torch import nn

    from translate.denoise import linear_fit
    from translate.paired import SpacePrep

    if vecmap:
        prep = SpacePrep(center=True, normalize=True)
        (mean_a, _, Xu), (mean_b, stats_b, Yu) = prep.fit(X), prep.fit(Y)
        f_u = paired_mlp(Xu, Yu, seed, hidden, steps, lr, batch_size, val_fraction, eval_every)
        return lambda Z: prep.inverse(f_u(prep.apply(Z, mean_a)), mean_b, stats_b)
    mx, my = X.mean(0), Y.mean(0)
    sx, sy = (float(np.linalg.norm(Z - m, axis=1).mean()) for Z, m in ((X, mx), (Y, my)))
    Xn, Yn = ((X - mx) / sx).astype(np.float32), ((Y - my) / sy).astype(np.float32)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(Xn))
    n_val = max(1, int(val_fraction * len(Xn)))
    va, tr = order[:n_val], order[n_val:]
    W, c = linear_fit(Xn[tr], Yn[tr])
    torch.manual_seed(seed)
    lin = nn.Linear(X.shape[1], Y.shape[1])
    g = nn.Sequential(nn.Linear(X.shape[1], hidden), nn.SiLU(), nn.Linear(hidden, Y.shape[1]))
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(W.T.astype(np.float32)))
        lin.bias.copy_(torch.from_numpy(c.astype(np.float32)))
        nn.init.zeros_(g[2].weight)
        nn.init.zeros_(g[2].bias)
    model = nn.ModuleDict({"lin": lin, "g": g})
    f = lambda Z: model["lin"](Z) + model["g"](Z)  # noqa: E731
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    Xt, Yt = torch.from_numpy(Xn), torch.from_numpy(Yn)
    best = (float("inf"), {k: v.clone() for k, v in model.state_dict().items()})
    for step in range(steps + 1):
        if step % eval_every == 0:
            with torch.no_grad():
                err = float(((f(Xt[va]) - Yt[va]) ** 2).sum(1).mean())
            if err < best[0]:
                best = (err, {k: v.clone() for k, v in model.state_dict().items()})
        if step == steps:
            break
        idx = torch.from_numpy(rng.choice(tr, size=batch_size))
        loss = ((f(Xt[idx]) - Yt[idx]) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.load_state_dict(best[1])

    def transform(Z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return f(torch.from_numpy(((Z - mx) / sx).astype(np.float32))).numpy() * sy + my

    return transform


# -- methods ------------------------------------------------------------------------------
#: Vec2Vec rows of the table: name -> (start from the isometric map?, parameters beyond the
#: shared ones). ``v2v-iso-issue`` is the configuration the issue measured (adversarial
#: fine-tuning under a constant anchor, the last step's raw weights kept); ``v2v-iso`` the
#: defaults with ``init`` now (decaying anchor, the Sinkhorn matching term, the weights'
#: moving average, selection by the unpaired criterion, step 0 included); ``v2v-iso-end`` the same
#: without selection (the average at the end, whatever the criterion says).
V2V_ROWS: Dict[str, Any] = {
    "v2v-iso": (True, {}),
    "v2v-iso-end": (True, {"select_every": 0}),
    "v2v-iso-issue": (True, {"anchor_decay": 0.0, "select_every": 0, "ema": 0.0, "weights": {"match": 0.0}}),
    "v2v-scratch": (False, {}),
}
#: Paired ceilings. Each is fitted between the VecMap-preprocessed spaces, those ``Isometric`` maps (an orthogonal
#: map there is the family it searches), and, as ``<name>-raw``, between the centred spaces alone (the ladder's
#: ceilings before 2026-12-03; on minilm -> e5 they put paired Procrustes at 0.907 against 0.987 preprocessed). A
#: rung's margin compares the better of the two per family (:func:`ceiling`).
CEILINGS = ("procrustes", "ridge", "mlp", "procrustes-raw", "ridge-raw", "mlp-raw")
DEFAULT_N = 5000  # texts per side of a real rung
SEEDS_KEY = "v2v-iso-seeds"  # rung -> {Vec2Vec seed: the v2v-iso row with that seed} (``--v2v-seeds``)


def metrics(Y_hat: np.ndarray, Bt: np.ndarray) -> Dict[str, float]:
    from translate.evaluate import evaluate

    r = evaluate(np.asarray(Y_hat, dtype=np.float32), Bt)
    return {k: round(float(r[k]), 4) for k in ("top1", "top5", "mean_cos", "foscttm")} | {"pool": int(len(Bt))}


def fit_ceiling(name: str, D: Dict[str, np.ndarray], seed: int) -> Callable[[np.ndarray], np.ndarray]:
    from translate.paired import Linear, Procrustes

    family, vecmap = name.removesuffix("-raw"), not name.endswith("-raw")
    if family == "mlp":
        return paired_mlp(D["Ap"], D["Bp"], seed=seed, vecmap=vecmap)
    return {"procrustes": Procrustes, "ridge": Linear}[family](normalize=vecmap).fit(D["Ap"], D["Bp"]).transform


def ceiling(R: Dict[str, Any], family: str) -> float:
    """A rung's paired ceiling of one family (``procrustes``, ``ridge``, ``mlp``): the better top-1 of its
    preprocessed and raw fits (a JSON written before the raw rows existed holds one)."""
    return max(R[k]["top1"] for k in (family, f"{family}-raw") if k in R)


def margin(R: Dict[str, Any]) -> float:
    """A rung's paired MLP − Procrustes margin (top-1), each the better of its fits (:func:`ceiling`)."""
    return ceiling(R, "mlp") - ceiling(R, "procrustes")


def isometric(D: Dict[str, np.ndarray], path: Path, seed: int):
    """The unpaired isometric map of the rung, fitted once and saved (a rerun of the study
    starts its Vec2Vec rows from the same map)."""
    import translate

    if (path / "config.json").is_file():
        return translate.load(path), None
    c0 = time.process_time()
    m = translate.Isometric(seed=seed, progress=False).fit(D["A"], D["B"])
    cpu = time.process_time() - c0
    m.save(path)
    return m, cpu


def fit_v2v(name: str, D: Dict[str, np.ndarray], iso, args, seed: Optional[int] = None) -> Dict[str, Any]:
    """One Vec2Vec row; ``seed`` (default ``--seed``) seeds Vec2Vec only, the data and the isometric map
    keep ``--seed``."""
    from translate.vec2vec import Vec2Vec

    from_iso, extra = V2V_ROWS[name]
    params = dict(hidden=args.hidden, depth=args.depth, batch_size=args.batch_size, steps=args.steps,
                  lr=args.lr_init if from_iso else args.lr_scratch, seed=args.seed if seed is None else seed,
                  progress=False, denoise=False)
    params.update(extra)
    c0 = time.process_time()
    est = Vec2Vec(init=iso if from_iso else None, **params).fit(D["A"], D["B"])
    cpu = time.process_time() - c0
    out = metrics(est.transform(D["At"]), D["Bt"]) | {"cpu_s": round(cpu, 1), "steps": int(est.steps_done_),
                                                     "batch_size": params["batch_size"]}
    for k in ("selected_step_", "selected_seed_"):
        if hasattr(est, k):
            out[k.rstrip("_")] = getattr(est, k)
    end_z = est.history_[-1].get("end_z", [None])[est.selected_seed_]
    if end_z is not None:  # McNemar's z of the state kept before the end against the end's average
        out["end_z"] = round(float(end_z), 2)
    return out


def rung_data(rung: str, args) -> Dict[str, np.ndarray]:
    if rung.startswith("synth-w"):
        return synthetic_rung(float(rung[len("synth-w"):]), args.syn_n, args.pool, args.syn_d, args.syn_k,
                              args.syn_noise, args.seed)
    src, tgt = rung.split("-")
    if tgt.startswith("twist"):
        return twisted_rung(_encoder(src), float(tgt[len("twist"):]), args.n, args.pool_start, args.pool, args.seed)
    return real_rung(_encoder(src), _encoder(tgt), args.n, args.pool_start, args.pool)


def rung_key(rung: str, args) -> str:
    """The rung's key in the JSON (and its folder of models): a real rung at another ``--n`` than the
    default is its own rung, ``<rung>@<n>``."""
    return rung if rung.startswith("synth-w") or args.n == DEFAULT_N else f"{rung}@{args.n}"


def run(args) -> Dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    path = Path(args.json)
    result = json.loads(path.read_text()) if path.is_file() else {}
    result["setting"] = dict(
        {k: v for k, v in vars(args).items() if k not in ("json", "md", "plot", "only", "merge", "rungs")},
        machine=f"{platform.machine()} {os.cpu_count()} CPUs", torch_threads=torch.get_num_threads())
    rungs = result.setdefault("rungs", {})
    only = set(filter(None, args.only.split(",")))

    def save():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))

    for rung in args.rungs.split(","):
        key = rung_key(rung, args)
        done = rungs.get(key, {})
        todo = [m for m in (*CEILINGS, "isometric", *V2V_ROWS) if (not only or m in only) and m not in done]
        # the seed spread of the v2v-iso row: its other Vec2Vec seeds, the rung's data and isometric map unchanged
        seeds_todo = [s for s in args.v2v_seeds if s != args.seed and str(s) not in done.get(SEEDS_KEY, {})]
        if not todo and not seeds_todo:
            continue
        D = rung_data(rung, args)
        R = rungs.setdefault(key, {})
        R["_shape"] = {k: list(v.shape) for k, v in D.items()}
        iso = None
        for m in todo:
            t0 = time.process_time()
            if m in CEILINGS:
                R[m] = metrics(fit_ceiling(m, D, args.seed)(D["At"]), D["Bt"]) | {"cpu_s": round(time.process_time() - t0, 1)}
            elif m == "isometric" or iso is None:
                iso, cpu = isometric(D, Path(args.models) / key / "isometric", args.seed)
                if m == "isometric":  # a row not asked for (--only) is not written: a merge would replace its CPU time
                    R["isometric"] = metrics(iso.transform(D["At"]), D["Bt"]) | {"cpu_s": None if cpu is None else round(cpu, 1)}
            if m in V2V_ROWS:
                R[m] = fit_v2v(m, D, iso, args)
            print(rung, m, R.get(m), flush=True)
            save()
        if seeds_todo and iso is None:
            iso, _ = isometric(D, Path(args.models) / key / "isometric", args.seed)
        for s in seeds_todo:
            R.setdefault(SEEDS_KEY, {})[str(s)] = fit_v2v("v2v-iso", D, iso, args, seed=s)
            print(rung, "v2v-iso seed", s, R[SEEDS_KEY][str(s)], flush=True)
            save()
    return result


ROW_LABELS = {
    "procrustes": "Procrustes, paired (ceiling)",
    "ridge": "ridge, paired (ceiling)",
    "mlp": "MLP, paired (ceiling)",
    "procrustes-raw": "Procrustes, paired, centred rows only",
    "ridge-raw": "ridge, paired, centred rows only",
    "mlp-raw": "MLP, paired, centred rows only",
    "isometric": "`Isometric`, unpaired",
    "v2v-scratch": "`Vec2Vec` from scratch",
    "v2v-iso-issue": "`Vec2Vec` from the isometric map, as in the issue (GAN, constant anchor)",
    "v2v-iso": "`Vec2Vec` from the isometric map, now (matching term, anchor decay, weight average, selection)",
    "v2v-iso-end": "`Vec2Vec` from the isometric map, now, without selection (the average at the end)",
    "v2v-iso-b512-600steps": "`Vec2Vec` from the isometric map, now, batch 512 (an earlier run)",
}


def rung_target(R: Dict[str, Any]) -> Optional[float]:
    """The issue's target on one rung for Vec2Vec-from-isometric − Isometric: half the paired MLP − Procrustes
    margin where it is 0.05 or more (curved), −0.005 where the margin is under 0.01 (isometric), else none."""
    gap = margin(R)
    return gap / 2 if gap >= 0.05 else (-0.005 if abs(gap) < 0.01 else None)


def _meets(gain: float, need: float) -> bool:
    return gain >= need - 1e-9


def verdict(R: Dict[str, Any]) -> str:
    """The issue's targets on one rung, from its numbers."""
    if "v2v-iso" not in R:
        return ""
    gap = margin(R)
    gain = R["v2v-iso"]["top1"] - R["isometric"]["top1"]
    need = rung_target(R)
    if gap >= 0.05:
        return (f"curved (MLP − Procrustes = {gap:+.3f}): Vec2Vec-from-isometric − Isometric = {gain:+.3f}, "
                f"target ≥ {need:+.3f}: **{'met' if _meets(gain, need) else 'not met'}**")
    return f"MLP − Procrustes = {gap:+.3f} (< 0.05): Vec2Vec-from-isometric − Isometric = {gain:+.3f}" + (
        f", target ≥ −0.005: **{'met' if _meets(gain, need) else 'not met'}**" if need is not None else "")


def _rung_order(item):
    """Synthetic rungs by strength, then the real ones."""
    name = item[0]
    return (0, float(name[len("synth-w"):]), "") if name.startswith("synth-w") else (1, 0.0, name)


def summary(result: Dict[str, Any]) -> str:
    """One line per rung: the ceilings, Isometric, Vec2Vec from it (now), and the targets."""
    out = ["| rung | Procrustes (paired) | MLP (paired) | MLP − Procrustes | `Isometric` | `Vec2Vec` from it | gain | target | met |",
           "|---|---|---|---|---|---|---|---|---|"]
    for rung, R in sorted(result["rungs"].items(), key=_rung_order):
        if "v2v-iso" not in R:
            continue
        gap = margin(R)
        gain = R["v2v-iso"]["top1"] - R["isometric"]["top1"]
        need = rung_target(R)
        target = "(gap < 0.05: none)" if need is None else f"≥ {need:+.3f}".replace("-", "−")
        met = None if need is None else _meets(gain, need)
        out.append(f"| `{rung}` | {ceiling(R, 'procrustes'):.3f} | {ceiling(R, 'mlp'):.3f} | {gap:+.3f} | "
                   f"{R['isometric']['top1']:.3f} | {R['v2v-iso']['top1']:.3f} | {gain:+.3f} | {target} | "
                   f"{'' if met is None else ('**yes**' if met else '**no**')} |")
    return "\n".join(out)


def seed_spread(result: Dict[str, Any]) -> str:
    """Per rung with ``--v2v-seeds`` rows: the gain of Vec2Vec-from-isometric over ``Isometric`` for each
    Vec2Vec seed (the ``v2v-iso`` row's seed first), their mean, and how many meet the rung's target."""
    out = ["| rung | target | gain per Vec2Vec seed | mean | seeds meeting it |", "|---|---|---|---|---|"]
    for rung, R in sorted(result["rungs"].items(), key=_rung_order):
        if SEEDS_KEY not in R or "v2v-iso" not in R:
            continue
        rows = [R["v2v-iso"], *(R[SEEDS_KEY][k] for k in sorted(R[SEEDS_KEY], key=int))]
        gains = [r["top1"] - R["isometric"]["top1"] for r in rows]
        need = rung_target(R)
        target = "(none)" if need is None else f"≥ {need:+.3f}".replace("-", "−")
        met = "" if need is None else f"{sum(_meets(g, need) for g in gains)} of {len(gains)}"
        out.append(f"| `{rung}` | {target} | {' '.join(f'{g:+.3f}' for g in gains)} | {np.mean(gains):+.3f} | {met} |")
    return "\n".join(out) if len(out) > 2 else ""


def selection_table(result: Dict[str, Any]) -> str:
    """Per rung with both ``v2v-iso`` and ``v2v-iso-end``: the start (``Isometric``), the average at the end
    (no selection), McNemar's z of the start's cycle hits against the end's, and what the selection kept."""
    out = ["| rung | `Isometric` (the start) | the end, no selection | end − start | McNemar z | kept | kept top-1 |",
           "|---|---|---|---|---|---|---|"]
    for rung, R in sorted(result["rungs"].items(), key=_rung_order):
        r, e = R.get("v2v-iso", {}), R.get("v2v-iso-end")
        if e is None or "end_z" not in r:
            continue
        start, end = R["isometric"]["top1"], e["top1"]
        kept = "start" if r.get("selected_step") == 0 else "end"
        out.append(f"| `{rung}` | {start:.3f} | {end:.3f} | {end - start:+.3f} | {r['end_z']:.2f} | {kept} | {r['top1']:.3f} |")
    return "\n".join(out) if len(out) > 2 else ""


def ceiling_table(result: Dict[str, Any]) -> str:
    """Per rung with both fits of every ceiling: each family's top-1 between the centred spaces (raw) and the
    preprocessed ones, and the MLP − Procrustes margin from the raw fits alone against the one the targets use."""
    fams = ("procrustes", "ridge", "mlp")
    out = ["| rung | Procrustes raw / preprocessed | ridge raw / preprocessed | MLP raw / preprocessed | "
           "MLP − Procrustes, raw fits | MLP − Procrustes, better fits |", "|---|---|---|---|---|---|"]
    for rung, R in sorted(result["rungs"].items(), key=_rung_order):
        if not all(k in R for f in fams for k in (f, f"{f}-raw")):
            continue
        cells = " | ".join(f"{R[f + '-raw']['top1']:.3f} / {R[f]['top1']:.3f}" for f in fams)
        raw_gap = R["mlp-raw"]["top1"] - R["procrustes-raw"]["top1"]
        out.append(f"| `{rung}` | {cells} | {raw_gap:+.3f} | {margin(R):+.3f} |")
    return "\n".join(out) if len(out) > 2 else ""


def markdown(result: Dict[str, Any]) -> str:
    """The summary (and the seed spread, where measured), the selection's choices, the ceilings' two fits, then
    one table per rung (the rows of :data:`ROW_LABELS`) and the verdict under it."""
    spread, chosen, ceilings = seed_spread(result), selection_table(result), ceiling_table(result)
    out = [summary(result), "", *([spread, ""] if spread else []), *([chosen, ""] if chosen else []),
           *([ceilings, ""] if ceilings else [])]
    for rung, R in sorted(result["rungs"].items(), key=_rung_order):
        shape = R.get("_shape", {})
        out.append(f"### `{rung}`  ({shape.get('A', ['?'])[0]} rows per side, pool {shape.get('At', ['?'])[0]})\n")
        out.append("| method | top-1 | top-5 | mean cos | FOSCTTM | steps (kept step), z | CPU s |")
        out.append("|---|---|---|---|---|---|---|")
        for key, label in ROW_LABELS.items():
            r = R.get(key)
            if r is None:
                continue
            steps = f"{r['steps']} ({r.get('selected_step', r['steps'])}), batch {r.get('batch_size', 512)}" if "steps" in r else ""
            steps += f", z {r['end_z']:.1f}" if "end_z" in r else ""
            cpu = "" if r.get("cpu_s") is None else f"{r['cpu_s']:.0f}"
            out.append(f"| {label} | {r['top1']:.3f} | {r['top5']:.3f} | {r['mean_cos']:.3f} | {r['foscttm']:.4f} | {steps} | {cpu} |")
        v = verdict(R)
        out.append(f"\n{v}\n" if v else "")
    return "\n".join(out)


def plot(result: Dict[str, Any], path: Path) -> None:
    """Top-1 against the warp strength on the synthetic rungs, one line per method (Agg
    canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    syn = sorted((float(k[len("synth-w"):]), R) for k, R in result["rungs"].items() if k.startswith("synth-w"))
    fig = Figure(figsize=(7.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    styles = {"procrustes": ":", "ridge": ":", "mlp": ":", "v2v-iso-end": "--"}
    for key, label in ROW_LABELS.items():
        pts = [(s, R[key]["top1"]) for s, R in syn if key in R and not key.endswith("-raw")]  # preprocessed fits only
        if pts:
            ax.plot(*zip(*pts), styles.get(key, "-"), marker="o", label=label.replace("`", ""))
    ax.set_xlabel("warp strength s (0: a rotation)")
    ax.set_ylabel(f"top-1 (pool {next(iter(result['rungs'].values()))['procrustes']['pool']})")
    ax.set_title("synthetic ladder: rotation, then a smooth twist of strength s")
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _seed_list(text: str) -> List[int]:
    """``--v2v-seeds``: a comma list of non-negative integers."""
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not all(t.isdigit() for t in parts):
        raise argparse.ArgumentTypeError(f"a comma list of non-negative integer seeds, got {text!r}")
    return [int(t) for t in parts]


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rungs", default="synth-w0,synth-w1,synth-w1.5,synth-w2,minilm-mpnetL6,glove-minilm")
    ap.add_argument("--only", default="", help="comma list of methods to run (default: all)")
    ap.add_argument("--n", type=int, default=DEFAULT_N, help="texts per side on the real rungs (another than the "
                    "default: rung <name>@<n>)")
    ap.add_argument("--pool-start", type=int, default=22000)
    ap.add_argument("--pool", type=int, default=1000)
    ap.add_argument("--syn-n", type=int, default=5000, help="rows per side on the synthetic rungs")
    ap.add_argument("--syn-d", type=int, default=32)
    ap.add_argument("--syn-k", type=int, default=64)
    ap.add_argument("--syn-noise", type=float, default=0.2, help="B's noise, relative to its row norm")
    ap.add_argument("--steps", type=int, default=300, help="Vec2Vec steps")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--lr-scratch", type=float, default=2e-4)
    ap.add_argument("--lr-init", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--v2v-seeds", type=_seed_list, default=[], help="comma list of further Vec2Vec seeds for the "
                    "v2v-iso row (same data and isometric map): its seed spread")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="out/ladder.json")
    ap.add_argument("--models", default="out/ladder_models", help="where the fitted isometric maps are kept")
    ap.add_argument("--md", default=None, help="write the docs tables (markdown) from the JSON here, and stop")
    ap.add_argument("--plot", default=None, help="write the ladder figure (PNG) from the JSON here, and stop")
    ap.add_argument("--merge", default="", help="comma list of further JSON files whose rows join --json's, "
                    "replacing rows of the same rung and name (with --md / --plot)")
    ap.add_argument("--save-merged", default=None, help="write the merged JSON here (with --md / --plot)")
    args = ap.parse_args(argv)
    if args.md or args.plot:
        result = json.loads(Path(args.json).read_text())
        for extra in filter(None, args.merge.split(",")):  # row by row: a later file's rows replace earlier ones
            for rung, rows in json.loads(Path(extra).read_text())["rungs"].items():
                result["rungs"].setdefault(rung, {}).update(rows)
        if args.save_merged:
            Path(args.save_merged).write_text(json.dumps(result, indent=1) + "\n")
        if args.md:
            Path(args.md).write_text(markdown(result) + "\n")
        if args.plot:
            plot(result, Path(args.plot))
        return result
    return run(args)


if __name__ == "__main__":
    main()
