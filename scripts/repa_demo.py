"""REPA on a small CNN: does aligning a hidden layer to a frozen teacher help?

Data: ``sklearn.datasets.load_digits`` (1797 8x8 digits; a fixed stratified
split, ``--n-test`` held out). A teacher CNN (wider, trained first, then
frozen) provides target features: its last conv layer, a 4x4 map of 64
channels, read as 16 tokens. A student CNN is trained twice from the same
initialisation on the same batches: without REPA (lam = 0), and with REPA,
whose ``align.repa_loss`` pulls ``RepaProjector(student conv2 tokens)`` (``--layer``)
towards the teacher's tokens (token by token, lam = 0.5 as in Yu et al. 2025).

Per epoch, on the held-out digits: accuracy, and the alignment of the
student's conv2 layer (flattened 4x4 maps) to the teacher's layer: linear CKA
(``align.cka``) and cross-validated Procrustes score
(``align.procrustes_score``, on the units that vary on the test set).
Repeated over ``--seeds`` student seeds.

    python scripts/repa_demo.py --out out/repa_demo

Prints markdown tables and writes ``results.json`` and ``repa_demo.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import align  # noqa: E402
from align.train import RepaProjector, attach_repa, train_with_repa  # noqa: E402


def make_cnn(widths, n_classes=10):
    """conv(w0) @8x8 + maxpool ("conv1", out 4x4) -> conv(w1) ("conv2") -> conv(w2) ("conv3") -> mean -> fc."""
    from torch import nn

    w0, w1, w2 = widths
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(1, w0, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(w0, w1, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(w1, w2, 3, padding=1), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(w2, n_classes),
    )


# layer names inside make_cnn's Sequential
LAYERS = {"conv1": "0", "conv2": "1", "conv3": "2"}
STUDENT_WIDTHS = (16, 32, 32)


def layer_output(model, layer: str, X):
    """The named layer's output on X (no grad), read with a REPA hook and an identity projector."""
    import torch
    from torch import nn

    model.eval()
    with torch.no_grad(), attach_repa(model, LAYERS[layer], nn.Identity()) as h:
        logits = model(torch.as_tensor(X))
        return h.features.clone(), logits


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--teacher-epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--lam", type=float, default=0.5)
    ap.add_argument("--layer", default="conv2", choices=("conv1", "conv2", "conv3"),
                    help="student layer to align (each is a 4x4 map: 16 tokens, like the teacher's)")
    ap.add_argument("--hidden", type=int, default=256, help="projector width (paper: 2048 for DiT-size models)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n-test", type=int, default=597)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="out/repa_demo")
    args = ap.parse_args(argv)

    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    digits = load_digits()
    X = (digits.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8) in [0, 1]
    y = digits.target.astype(np.int64)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=args.n_test, random_state=0, stratify=y)

    def accuracy(model):
        _, logits = layer_output(model, "conv3", Xte)
        return float((logits.argmax(1).numpy() == yte).mean())

    # 1) the teacher: wider, trained alone, then frozen
    torch.manual_seed(1000)
    teacher = make_cnn((32, 64, 64))
    t = time.time()
    train_with_repa(teacher, None, None, Xtr, ytr, lam=0.0, epochs=args.teacher_epochs,
                    batch_size=args.batch_size, lr=args.lr, seed=1000, progress=False)
    teacher.eval().requires_grad_(False)
    T_tr, _ = layer_output(teacher, "conv3", Xtr)  # (N, 64, 4, 4): 16 tokens of 64
    T_te, _ = layer_output(teacher, "conv3", Xte)
    T_te_flat = T_te.flatten(1).numpy()
    T_te_live = T_te_flat[:, T_te_flat.std(0) > 0]  # per-unit correlations need units that vary
    teacher_acc = accuracy(teacher)
    print(f"teacher: conv widths (32, 64, 64), {args.teacher_epochs} epochs, held-out accuracy {teacher_acc:.3f} ({time.time() - t:.0f} s)")

    def run(seed: int, lam: float):
        torch.manual_seed(seed)
        student = make_cnn(STUDENT_WIDTHS)
        torch.manual_seed(10_000 + seed)
        proj = RepaProjector(STUDENT_WIDTHS[int(LAYERS[args.layer])], 64, hidden=args.hidden)

        def probe(epoch, model):
            feats, logits = layer_output(model, args.layer, Xte)
            S = feats.flatten(1).numpy()
            return {
                "test_acc": float((logits.argmax(1).numpy() == yte).mean()),
                "cka": float(align.cka(S, T_te_flat)),
                # dead ReLU units (constant on the test set) have no correlation: leave them out
                "procrustes": float(align.procrustes_score(S[:, S.std(0) > 0], T_te_live, folds=5)),
            }

        init = probe(-1, student)  # epoch 0: the initialisation, before any step
        hist = train_with_repa(
            student, proj if lam > 0 else None, LAYERS[args.layer] if lam > 0 else None, Xtr, ytr,
            T_tr.numpy() if lam > 0 else None, lam=lam, epochs=args.epochs, batch_size=args.batch_size,
            lr=args.lr, seed=seed, callback=probe, progress=False,
        )
        return [{"epoch": 0, **init}] + [{**h, "epoch": h["epoch"] + 1} for h in hist]

    runs = {"baseline": [], "repa": []}
    for seed in range(args.seeds):
        for name, lam in (("baseline", 0.0), ("repa", args.lam)):
            t = time.time()
            runs[name].append(run(seed, lam))
            print(f"  seed {seed} {name}: final acc {runs[name][-1][-1]['test_acc']:.3f} ({time.time() - t:.0f} s)", flush=True)

    def mean_curve(name, key):
        return np.mean([[e[key] for e in r] for r in runs[name]], axis=0)

    epochs = list(range(args.epochs + 1))
    print(f"\n### Held-out accuracy and {args.layer} ↔ teacher alignment per epoch (mean over {args.seeds} seeds; "
          f"{len(yte)} test digits; λ = {args.lam})\n")
    print("| epoch | acc base | acc REPA | CKA base | CKA REPA | Procrustes base | Procrustes REPA |")
    print("|---|---|---|---|---|---|---|")
    curves = {f"{k}_{n}": mean_curve(n, k) for k in ("test_acc", "cka", "procrustes") for n in runs}
    for e in epochs:
        print(f"| {e} | {curves['test_acc_baseline'][e]:.3f} | {curves['test_acc_repa'][e]:.3f} | "
              f"{curves['cka_baseline'][e]:.3f} | {curves['cka_repa'][e]:.3f} | "
              f"{curves['procrustes_baseline'][e]:.3f} | {curves['procrustes_repa'][e]:.3f} |")

    def first_epoch(curve, level):
        hit = np.flatnonzero(np.asarray(curve) >= level)
        return int(hit[0]) if hit.size else None

    summary = {}
    print("\n### Convergence (epochs to reach a held-out accuracy, per seed)\n")
    print("| target accuracy | baseline epochs (per seed) | REPA epochs (per seed) |")
    print("|---|---|---|")
    for level in (0.70, 0.80, 0.90):
        b = [first_epoch([e["test_acc"] for e in r], level) for r in runs["baseline"]]
        p = [first_epoch([e["test_acc"] for e in r], level) for r in runs["repa"]]
        summary[f"epochs_to_{level:.2f}"] = {"baseline": b, "repa": p}
        print(f"| {level:.2f} | {b} | {p} |")
    final_b = [r[-1]["test_acc"] for r in runs["baseline"]]
    final_p = [r[-1]["test_acc"] for r in runs["repa"]]
    auc_b = float(np.mean(curves["test_acc_baseline"][1:]))
    auc_p = float(np.mean(curves["test_acc_repa"][1:]))
    summary.update(final_acc={"baseline": final_b, "repa": final_p}, mean_acc_over_epochs={"baseline": auc_b, "repa": auc_p})
    print(f"\nfinal accuracy: baseline {np.mean(final_b):.3f} ± {np.std(final_b):.3f}, REPA {np.mean(final_p):.3f} ± {np.std(final_p):.3f}")
    print(f"mean accuracy over epochs 1..{args.epochs} (area under the curve): baseline {auc_b:.3f}, REPA {auc_p:.3f}")
    print(f"teacher accuracy: {teacher_acc:.3f}; total time {time.time() - t_start:.0f} s")

    result = {
        "args": vars(args),
        "teacher_acc": teacher_acc,
        "n_train": int(len(ytr)),
        "n_test": int(len(yte)),
        "curves_mean": {k: v.tolist() for k, v in curves.items()},
        "runs": runs,
        "summary": summary,
        "seconds": time.time() - t_start,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, key, label in zip(axes, ("test_acc", "cka", "procrustes"), ("held-out accuracy", "linear CKA to teacher", "Procrustes score to teacher")):
        for name, color in (("baseline", "tab:blue"), ("repa", "tab:orange")):
            for r in runs[name]:
                ax.plot(epochs, [e[key] for e in r], color=color, alpha=0.25, lw=1)
            ax.plot(epochs, curves[f"{key}_{name}"], color=color, lw=2, label=f"{name} (mean)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    axes[0].set_ylim(max(0.0, min(curves["test_acc_baseline"][1], curves["test_acc_repa"][1]) - 0.05), 1.0)
    fig.suptitle(f"REPA on load_digits: student {args.layer} aligned to a frozen teacher (λ = {args.lam})")
    fig.tight_layout()
    fig.savefig(out / "repa_demo.png", dpi=120)
    print(f"wrote {out / 'results.json'} and {out / 'repa_demo.png'}")
    return result


if __name__ == "__main__":
    main()
