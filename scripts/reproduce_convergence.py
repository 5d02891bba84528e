#!/usr/bin/env python
"""Reproduce the convergent-learning findings of Kapoor, Srivastava & Khosla (2025),
"Bridging critical gaps in convergent learning" (arXiv:2502.18710), at toy scale.

Setup (CPU, a few minutes): ``sklearn.datasets.load_digits`` (1797 8x8 images),
split once into 1297 training and 500 held-out images. Four small CNNs are
trained with Adam: three of architecture A (seeds 0, 1, 2) and one of
architecture B (other widths, kernel sizes and depth). Same-architecture
scores are the mean over the three seed pairs (their spread is recorded too). The held-out images are
the "stimuli": each layer's post-ReLU response to them (conv maps reduced to
the centre pixel, as in the paper) is compared between networks with the
paper's three mapping scores -- linear (ridge), orthogonal Procrustes and
permutation (Hungarian unit matching) -- all 5-fold cross-validated,
per-unit Pearson correlation on held-out rows.

Scores are recorded at epoch 0 (untrained), after a quarter epoch, after each
of the first epochs and at the end of training, and, for the trained networks,
on two shifted input sets: additive Gaussian noise and inverted digits.

Outputs (``--out``, default ``out/convergence/``): ``results.json`` (every
number) and PNG figures; the last lines printed are one verdict per claim.

    .venv/bin/python scripts/reproduce_convergence.py            # ~3-5 min on 2 cores
    .venv/bin/python scripts/reproduce_convergence.py --epochs 3 # quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from align.extract import extract_activations  # noqa: E402
from align.layers import compare_layers, rotation_test  # noqa: E402
from align.metrics import chance_level, score  # noqa: E402

METRICS = ("linear", "procrustes", "permutation")
TOL = 0.01  # scores within this are "equal" (fold noise at n = 500 is about this size)


# --------------------------------------------------------------------------- networks


def arch_a() -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 16, 3, padding=1), relu1=nn.ReLU(),
            conv2=nn.Conv2d(16, 32, 3, padding=1), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2),  # 8x8 -> 4x4
            conv3=nn.Conv2d(32, 32, 3, padding=1), relu3=nn.ReLU(), pool3=nn.MaxPool2d(2),  # -> 2x2
            flat=nn.Flatten(), fc1=nn.Linear(32 * 2 * 2, 64), relu4=nn.ReLU(),
            logits=nn.Linear(64, 10),
        )
    )


def arch_b() -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 12, 5, padding=2), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),  # 8x8 -> 4x4
            conv2=nn.Conv2d(12, 24, 3, padding=1), relu2=nn.ReLU(),
            flat=nn.Flatten(), fc1=nn.Linear(24 * 4 * 4, 48), relu3=nn.ReLU(),
            logits=nn.Linear(48, 10),
        )
    )


LAYERS = {"A": ["relu1", "relu2", "relu3", "relu4", "logits"], "B": ["relu1", "relu2", "relu3", "logits"]}


def make(arch: str, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return arch_a() if arch == "A" else arch_b()


# --------------------------------------------------------------------------- data, training


def load_data(seed: int):
    from sklearn.datasets import load_digits

    d = load_digits()
    X = (d.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8) in [0, 1]
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(X))
    test, train = perm[:500], perm[500:]
    rng = np.random.default_rng(seed + 1)
    shifted = {
        "noise": np.clip(X[test] + rng.normal(0, 0.5, X[test].shape), 0, 1).astype(np.float32),
        "inverted": (1.0 - X[test]).astype(np.float32),
    }
    return X[train], y[train], X[test], y[test], shifted


def accuracy(model: nn.Module, X: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(torch.from_numpy(X)).argmax(1).numpy() == y).mean())


def train_steps(model, opt, X, y, steps, rng, batch=32):
    """``steps`` Adam steps on minibatches drawn epoch-wise from a seeded permutation."""
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    state = getattr(model, "_order", None)
    for _ in range(steps):
        if not state:
            state = list(np.array_split(rng.permutation(len(X)), int(np.ceil(len(X) / batch))))
        idx = state.pop(0)
        opt.zero_grad()
        loss = loss_fn(model(torch.from_numpy(X[idx])), torch.from_numpy(y[idx]))
        loss.backward()
        opt.step()
    model._order = state


# --------------------------------------------------------------------------- scoring


def drop_dead(F: np.ndarray) -> np.ndarray:
    """Units that never vary on the stimuli (dead ReLUs) have no defined correlation."""
    return F[:, F.std(axis=0) > 1e-6]


def features(model, X, arch) -> Dict[str, np.ndarray]:
    raw = extract_activations(model, X, LAYERS[arch], conv_pool="center", batch_size=500)
    return {k: drop_dead(v) for k, v in raw.items()}


def pair_scores(fa, fb, la, lb, folds) -> Dict[str, Dict[str, float]]:
    """Scores of corresponding layers (same relative depth)."""
    out = {}
    for i, a in enumerate(la):
        b = lb[int(np.floor(i * (len(lb) - 1) / (len(la) - 1) + 0.5))]
        out[a if a == b else f"{a}~{b}"] = {m: score(fa[a], fb[b], m, folds=folds) for m in METRICS}
    return out


def mean_std(blocks: List[Dict[str, Dict[str, float]]]):
    """Mean and standard deviation over seed pairs of nested {layer: {metric: value}} dicts."""
    mean = {l: {m: float(np.mean([b[l][m] for b in blocks])) for m in blocks[0][l]} for l in blocks[0]}
    std = {l: {m: float(np.std([b[l][m] for b in blocks])) for m in blocks[0][l]} for l in blocks[0]}
    return mean, std


A_NETS = ("A0", "A1", "A2")
A_PAIRS = (("A0", "A1"), ("A0", "A2"), ("A1", "A2"))


def all_scores(feats, folds):
    """A-vs-A scores averaged over the three seed pairs (with their spread), and A0 vs B."""
    pairs = {f"{a}-{b}": pair_scores(feats[a], feats[b], LAYERS["A"], LAYERS["A"], folds) for a, b in A_PAIRS}
    mean, std = mean_std(list(pairs.values()))
    return {"AA": mean, "AA_std": std, "AA_pairs": pairs,
            "AB": pair_scores(feats["A0"], feats["B"], LAYERS["A"], LAYERS["B"], folds)}


# --------------------------------------------------------------------------- figures


def _fig(w, h):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def plot_by_layer(res, path):
    fig = _fig(11, 4)
    for k, (title, block) in enumerate([("A vs A (mean of 3 seed pairs)", res["final"]["AA"]), ("A seed 0 vs B", res["final"]["AB"])]):
        ax = fig.add_subplot(1, 2, k + 1)
        layers = list(block)
        for m in METRICS:
            err = [res["final"]["AA_std"][l][m] for l in layers] if k == 0 else None
            ax.errorbar(range(len(layers)), [block[l][m] for l in layers], yerr=err, marker="o", capsize=3, label=m)
        if k == 0:
            ch = [res["final"]["permutation_chance"][l] for l in layers]
            ax.plot(range(len(layers)), ch, ls="--", color="grey", label="permutation chance")
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels(layers, rotation=30)
        ax.set_ylim(-0.05, 1.02)
        ax.set_title(title)
        ax.set_ylabel("held-out correlation (5-fold)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_training(res, path):
    ckpts = res["training"]
    epochs = [c["epoch"] for c in ckpts]
    layers = list(ckpts[0]["AA"])
    fig = _fig(15, 4)
    for k, m in enumerate(METRICS):
        ax = fig.add_subplot(1, 4, k + 1)
        for l in layers:
            ax.plot(epochs, [c["AA"][l][m] for c in ckpts], marker=".", label=l)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel("epoch")
        ax.set_title(f"{m} (A vs A, mean of 3 pairs)")
        ax.set_ylim(-0.05, 1.02)
        ax.legend(fontsize=7)
    ax = fig.add_subplot(1, 4, 4)
    for name in ("A0", "A1", "A2", "B"):
        ax.plot(epochs, [c["accuracy"][name] for c in ckpts], marker=".", label=name)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("epoch")
    ax.set_title("held-out accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_ood(res, path):
    fig = _fig(12, 4)
    sets = ["in-distribution"] + list(res["ood"])
    layers = list(res["final"]["AA"])
    for k, m in enumerate(METRICS):
        ax = fig.add_subplot(1, 3, k + 1)
        for s in sets:
            block = res["final"]["AA"] if s == "in-distribution" else res["ood"][s]["AA"]
            ax.plot(range(len(layers)), [block[l][m] for l in layers], marker="o", label=s)
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels(layers, rotation=30)
        ax.set_ylim(-0.05, 1.02)
        ax.set_title(f"{m} (A vs A, mean of 3 pairs)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_rotation(res, path):
    rot = res["rotation"]
    layers = list(rot)
    fig = _fig(10, 4)
    for k, m in enumerate(METRICS):
        ax = fig.add_subplot(1, 3, k + 1)
        x = np.arange(len(layers))
        ax.bar(x - 0.2, [rot[l][m]["native"] for l in layers], 0.4, label="native")
        ax.bar(x + 0.2, [rot[l][m]["rotated"] for l in layers], 0.4, label="Y rotated")
        ax.set_xticks(x)
        ax.set_xticklabels(layers, rotation=30)
        ax.set_ylim(0, 1.02)
        ax.set_title(m)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# --------------------------------------------------------------------------- verdicts


def verdicts(res) -> List[str]:
    fin, AA = res["final"], res["final"]["AA"]
    layers = list(AA)
    lines = []

    def say(ok, claim, detail):
        tag = {True: "HOLDS", False: "DOES NOT HOLD", None: "PARTLY"}[ok]
        lines.append(f"[{tag}] {claim}: {detail}")

    # 1. ladder of strictness
    bad = [l for l in layers if not (AA[l]["linear"] >= AA[l]["procrustes"] - TOL >= AA[l]["permutation"] - 2 * TOL)]
    gaps = ", ".join(f"{l} {AA[l]['linear']:.2f}/{AA[l]['procrustes']:.2f}/{AA[l]['permutation']:.2f}" for l in layers)
    say(not bad if len(bad) < len(layers) else False, "Linear >= Procrustes >= Permutation per layer (tol 0.01)",
        f"lin/proc/perm: {gaps}" + (f"; fails at {bad}" if bad else ""))
    if bad and len(bad) < len(layers):
        lines[-1] = lines[-1].replace("[HOLDS]", "[PARTLY]").replace("[DOES NOT HOLD]", "[PARTLY]")

    # 2. permutation above chance
    ch = fin["permutation_chance"]
    above = [l for l in layers if AA[l]["permutation"] > ch[l] + 0.05]
    say(len(above) == len(layers) or (None if above else False), "Permutation scores well above chance (privileged basis)",
        ", ".join(f"{l} {AA[l]['permutation']:.2f} vs {ch[l]:.2f}" for l in layers))

    # 3. alignment falls with depth (first hidden layer vs deepest hidden layer, and the trend)
    hidden = layers[:-1]
    from scipy.stats import spearmanr

    parts, oks = [], []
    for m in METRICS:
        vals = [AA[l][m] for l in hidden]
        rho = spearmanr(range(len(vals)), vals).statistic
        oks.append(vals[0] > vals[-1] + TOL and rho < 0)
        parts.append(f"{m}: {vals[0]:.2f} -> {vals[-1]:.2f} (rho {rho:+.2f})")
    say(all(oks) or (None if any(oks) else False), "Alignment falls with depth (hidden layers)",
        "; ".join(parts) + f"; logits: " + "/".join(f"{AA[layers[-1]][m]:.2f}" for m in METRICS))

    # 4. trained > untrained
    e0 = res["training"][0]["AA"]
    wins = [(l, m) for l in layers for m in METRICS if AA[l][m] > e0[l][m] + TOL]
    losses = [(l, m) for l in layers for m in METRICS if AA[l][m] < e0[l][m] - TOL]
    say(len(wins) == len(layers) * len(METRICS) or (None if wins else False), "Trained > untrained (A vs A)",
        f"{len(wins)}/{len(layers) * len(METRICS)} layer x metric pairs higher after training"
        + (f"; lower: {losses}" if losses else "")
        + "; epoch-0 procrustes: " + ", ".join(f"{l} {e0[l]['procrustes']:.2f}" for l in layers))

    # 5. rotation lowers permutation, not linear / Procrustes
    # Linear / Procrustes are invariant up to the per-unit correlation readout (units of Y Q differ
    # from those of Y), so "not lowered" means: the permutation drop clearly exceeds their change.
    rot = res["rotation"]
    perm_drop = [rot[l]["permutation"]["drop"] for l in layers]
    inv_change = [max(abs(rot[l][m]["drop"]) for m in ("linear", "procrustes")) for l in layers]
    oks = [d > 0.05 and d > 2 * c for d, c in zip(perm_drop, inv_change)]
    say(all(oks) or (None if any(oks) else False),
        "Rotation lowers permutation scores but not linear / Procrustes",
        "per layer, permutation drop vs largest |linear/Procrustes change|: "
        + ", ".join(f"{l} {d:+.2f} vs {c:.2f}" for l, d, c in zip(layers, perm_drop, inv_change)))

    # 6. most alignment early
    ck = res["training"]
    e1 = next(c for c in ck if c["epoch"] == 1)["AA"]
    acc1 = next(c for c in ck if c["epoch"] == 1)["accuracy"]["A0"]
    fr, f_abs = [], []
    for l in layers:
        for m in METRICS:
            gain = AA[l][m] - e0[l][m]
            if abs(gain) > 0.02:
                fr.append((e1[l][m] - e0[l][m]) / gain)
            f_abs.append(e1[l][m] / AA[l][m] if AA[l][m] > 0 else np.nan)
    med = float(np.median(fr)) if fr else float("nan")
    say(bool(fr) and med >= 0.8 or (None if fr and med >= 0.5 else False),
        "Most alignment is reached within the first epoch",
        f"median fraction of the epoch-0 -> final change done after epoch 1: {med:.2f} over {len(fr)} layer x metric "
        f"pairs that changed > 0.02; median score(epoch 1) / score(final): {np.nanmedian(f_abs):.2f}; "
        f"A0 accuracy after epoch 1 ({res['config']['steps_per_epoch']} steps) {acc1:.3f} vs final {ck[-1]['accuracy']['A0']:.3f}")

    # 7. argmax on the diagonal
    diag = res["layer_matrix"]["AA"]
    fracs = {m: diag[m]["diagonal_argmax_fraction"] for m in METRICS}
    say(all(v == 1.0 for v in fracs.values()) or (None if any(v >= 0.6 for v in fracs.values()) else False),
        "Layer x layer argmax on the diagonal (same architecture; fraction of rows, mean of 3 seed pairs)",
        ", ".join(f"{m} {v:.2f}" for m, v in fracs.items())
        + "; A vs B (relative depth) " + ", ".join(
            f"{m} {res['layer_matrix']['AB'][m]['diagonal_argmax_fraction']:.2f}" for m in METRICS))

    # 8. OOD: early layers stay aligned, deep ones diverge
    parts, oks = [], []
    for s, block in res["ood"].items():
        for m in METRICS:
            drops = [AA[l][m] - block["AA"][l][m] for l in hidden]
            oks.append(drops[-1] > drops[0] + TOL)
            parts.append(f"{s}/{m} drop {drops[0]:+.2f} (first) .. {drops[-1]:+.2f} (deepest hidden)")
    say(all(oks) or (None if any(oks) else False), "Out of distribution, early layers stay aligned and deep layers diverge",
        "; ".join(parts))
    return lines


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="out/convergence", help="output folder (default out/convergence)")
    ap.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="data split seed (networks always use seeds 0, 1, 2 for A and 3 for B)")
    args = ap.parse_args(argv)
    if args.epochs < 1:
        ap.error("--epochs must be >= 1")
    t0 = time.time()
    torch.set_num_threads(1)  # tiny convs: one thread is fastest, and no oversubscription on a busy machine
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    Xtr, ytr, Xte, yte, shifted = load_data(args.seed)
    seeds = {"A0": 0, "A1": 1, "A2": 2, "B": 3}
    nets = {k: make(k[0], sd) for k, sd in seeds.items()}
    arch = {k: k[0] for k in nets}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-3) for k, m in nets.items()}
    rngs = {k: np.random.default_rng(100 + sd) for k, sd in seeds.items()}
    steps_per_epoch = int(np.ceil(len(Xtr) / 32))
    # checkpoints (epochs): untrained, a quarter epoch, each of the first epochs, then sparser
    checkpoints = sorted({0, 0.25, 1, 2, 3, 5, 10, args.epochs} & set([0, 0.25] + list(range(1, args.epochs + 1))))
    res: Dict = {
        "config": {**vars(args), "n_train": len(Xtr), "n_stimuli": len(Xte), "metrics": METRICS, "layers": LAYERS,
                   "network_seeds": seeds, "checkpoints": checkpoints, "steps_per_epoch": steps_per_epoch,
                   "conv_pool": "center", "optimizer": "Adam lr 1e-3, batch 32",
                   "AA": "mean over the seed pairs A0-A1, A0-A2, A1-A2 (AA_std: their standard deviation)"},
        "training": [],
    }
    done = 0.0
    for ep in checkpoints:
        for k in nets:
            train_steps(nets[k], opts[k], Xtr, ytr, int(round((ep - done) * steps_per_epoch)), rngs[k])
        done = ep
        feats = {k: features(m, Xte, arch[k]) for k, m in nets.items()}
        ck = {"epoch": ep, "accuracy": {k: accuracy(m, Xte, yte) for k, m in nets.items()}, **all_scores(feats, args.folds)}
        res["training"].append(ck)
        print(f"epoch {ep:>5}: acc " + " ".join(f"{k} {v:.3f}" for k, v in ck["accuracy"].items()) + " | procrustes A-A "
              + " ".join(f"{l}:{v['procrustes']:.2f}" for l, v in ck["AA"].items()) + f"  [{time.time() - t0:.0f}s]",
              flush=True)

    # the trained networks: per-layer scores, chance, layer x layer matrices, rotation test
    final = res["training"][-1]
    res["final"] = {k: final[k] for k in ("epoch", "AA", "AA_std", "AB")}
    res["final"]["permutation_chance"] = {
        l: float(np.mean([chance_level(feats[a][l], feats[b][l], "permutation", n_shuffles=2, seed=0, folds=args.folds)
                          for a, b in A_PAIRS]))
        for l in LAYERS["A"]
    }
    res["layer_matrix"] = {"AA": {}, "AB": {}}
    for m in METRICS:
        fr = []
        for a, b in A_PAIRS:
            lc = compare_layers(feats[a], feats[b], metric=m, progress=False, folds=args.folds)
            res["layer_matrix"][f"{a}-{b}"] = res["layer_matrix"].get(f"{a}-{b}", {})
            res["layer_matrix"][f"{a}-{b}"][m] = lc.to_dict()
            fr.append(lc.diagonal_argmax_fraction)
            if (a, b) == ("A0", "A1"):
                lc.plot(out / f"layers_AA_{m}.png", title=f"{m}: A seed 0 (rows) vs A seed 1 (columns)",
                        label_a="A seed 0", label_b="A seed 1", vmin=0, vmax=1)
        res["layer_matrix"]["AA"][m] = {"diagonal_argmax_fraction": float(np.mean(fr)), "per_pair": fr}
        lc = compare_layers(feats["A0"], feats["B"], metric=m, progress=False, folds=args.folds)
        res["layer_matrix"]["AB"][m] = lc.to_dict()
        lc.plot(out / f"layers_AB_{m}.png", title=f"{m}: A seed 0 (rows) vs B (columns)",
                label_a="A seed 0", label_b="B", vmin=0, vmax=1)
    res["rotation"] = {}
    for l in LAYERS["A"]:
        res["rotation"][l] = {}
        for m in METRICS:
            runs = [rotation_test(feats[a][l], feats[b][l], metric=m, seed=0, folds=args.folds) for a, b in A_PAIRS]
            res["rotation"][l][m] = {k: float(np.mean([r[k] for r in runs])) for k in ("native", "rotated", "drop")}
    res["ood"] = {}
    for s, Xs in shifted.items():
        fs = {k: features(m, Xs, arch[k]) for k, m in nets.items()}
        res["ood"][s] = {"accuracy": {k: accuracy(m, Xs, yte) for k, m in nets.items()}, **all_scores(fs, args.folds)}

    plot_by_layer(res, out / "scores_by_layer.png")
    plot_training(res, out / "training.png")
    plot_ood(res, out / "ood.png")
    plot_rotation(res, out / "rotation.png")
    res["verdicts"] = verdicts(res)
    res["seconds"] = round(time.time() - t0, 1)
    (out / "results.json").write_text(json.dumps(res, indent=1, default=float))
    print(f"\nfinal accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in final["accuracy"].items())
          + " | OOD accuracy A0: " + ", ".join(f"{s} {b['accuracy']['A0']:.3f}" for s, b in res["ood"].items()))
    print(f"figures and results.json in {out}/ ({res['seconds']:.0f} s)\n")
    for line in res["verdicts"]:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
