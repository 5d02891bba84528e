"""Tests for align.train.contrastive and align.train.losses: losses against hand computations, the learnable
temperatures, the ContrastiveAligner estimator, save/load, checkpoint/resume
(also after SIGKILL), divergence rollback, determinism and bad input."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import align
from align.train import contrastive as C
from align.train import losses as L
from align.train import ClipLoss, ContrastiveAligner, SigLipLoss, StopTraining, TrainingDivergedError, clip_loss, siglip_loss

REPO = Path(__file__).resolve().parents[1]


def _logsumexp(M, axis):
    m = M.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(M - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def _np_unit(A):
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def _np_clip(a, b, s):
    S = s * _np_unit(a) @ _np_unit(b).T
    d = np.diag(S)
    return 0.5 * (np.mean(_logsumexp(S, 1) - d) + np.mean(_logsumexp(S, 0) - d))


def _np_siglip(a, b, s, c):
    S = s * _np_unit(a) @ _np_unit(b).T + c
    Z = 2 * np.eye(len(a)) - 1
    return -np.sum(np.log(1 / (1 + np.exp(-Z * S)))) / len(a)


def _t(a):
    return torch.tensor(a, dtype=torch.float64)


def _paired(n=240, da=12, db=10, k=6, noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, k))
    X = Z @ rng.normal(size=(k, da)) + noise * rng.normal(size=(n, da))
    Y = Z @ rng.normal(size=(k, db)) + noise * rng.normal(size=(n, db))
    return X.astype(np.float32), Y.astype(np.float32)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # these models are tiny: thread start-up costs more than it saves, and on a
    # busy 2-core machine two spinning OpenMP threads per process slow down a lot
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SMALL = dict(dim=8, epochs=3, batch_size=32, lr=1e-2, hidden=16, progress=False)


# -- losses ------------------------------------------------------------------


def test_clip_loss_2x2_by_hand():
    # orthonormal pairs, scale 2: logits = 2·I; each row's CE = log(1 + e^-2)
    a = _t([[1.0, 0.0], [0.0, 1.0]])
    loss = clip_loss(a, a.clone(), 2.0)
    assert float(loss) == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-12)


def test_clip_loss_3x3_against_numpy_and_asymmetric_rows():
    a = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0], [3.0, 0.0, 1.0]])
    b = np.array([[1.0, 1.0, 1.0], [0.5, -1.0, 0.0], [2.0, 0.0, 0.0]])
    assert float(clip_loss(_t(a), _t(b), 5.0)) == pytest.approx(_np_clip(a, b, 5.0), abs=1e-10)
    # CLIP is symmetric in its two arguments; scaling rows changes nothing (cosine)
    assert float(clip_loss(_t(b), _t(a), 5.0)) == pytest.approx(_np_clip(a, b, 5.0), abs=1e-10)
    assert float(clip_loss(_t(3 * a), _t(b * np.array([[2.0], [0.5], [7.0]])), 5.0)) == pytest.approx(_np_clip(a, b, 5.0), abs=1e-10)


def test_clip_loss_equal_similarities_is_log_n():
    a = torch.ones(4, 3, dtype=torch.float64)
    assert float(clip_loss(a, a, 14.0)) == pytest.approx(math.log(4), abs=1e-12)


def test_siglip_loss_2x2_by_hand():
    a = _t([[1.0, 0.0], [0.0, 1.0]])
    t, c = 10.0, -10.0
    # positives: logit t + c = 0 -> log σ(0); negatives: logit c, label -1 -> log σ(10)
    want = -(2 * math.log(0.5) + 2 * math.log(1 / (1 + math.exp(-10)))) / 2
    assert float(siglip_loss(a, a.clone(), t, c)) == pytest.approx(want, abs=1e-12)


def test_siglip_loss_3x3_against_numpy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    assert float(siglip_loss(_t(a), _t(b), 7.0, -2.0)) == pytest.approx(_np_siglip(a, b, 7.0, -2.0), abs=1e-10)


@pytest.mark.parametrize("fn", [lambda a, b: clip_loss(a, b, 1.0), lambda a, b: siglip_loss(a, b, 1.0, 0.0)])
def test_losses_refuse_unpaired_shapes(fn):
    with pytest.raises(ValueError, match="a and b"):
        fn(torch.ones(3, 2), torch.ones(4, 2))


def test_loss_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    c = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, s: clip_loss(a, b, s), (a, b, s), fast_mode=True)
    assert torch.autograd.gradcheck(lambda a, b, s, c: siglip_loss(a, b, s, c), (a, b, s, c), fast_mode=True)


# -- temperatures -----------------------------------------------------------------


def test_clip_temperature_init_and_clamp():
    m = ClipLoss()
    assert float(m.logit_scale.detach().exp()) == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        m.logit_scale.fill_(math.log(1000.0))
    m.clamp_()
    assert float(m.logit_scale.detach().exp()) == pytest.approx(100.0, rel=1e-6)
    with torch.no_grad():
        m.logit_scale.fill_(-3.0)
    m.clamp_()
    assert float(m.logit_scale.detach()) == 0.0


def test_siglip_init_values():
    m = SigLipLoss()
    assert float(m.logit_scale.detach().exp()) == pytest.approx(10.0, rel=1e-6)
    assert float(m.logit_bias.detach()) == -10.0


def test_trainer_keeps_clip_scale_at_most_100(monkeypatch):
    # start above the cap (scale 200): the clamp after each optimiser step
    # brings it to 100, and a few small AdamW steps move it only a little
    monkeypatch.setattr(L, "CLIP_INIT_LOGIT_SCALE", math.log(200.0))
    X, Y = _paired(n=64)
    a = ContrastiveAligner(**{**SMALL, "lr": 0.01, "epochs": 2}).fit(X, Y)
    scales = [h["logit_scale"] for h in a.history_]
    assert all(95.0 < s <= 100.0 + 1e-4 for s in scales) and a.logit_scale_ <= 100.0 + 1e-4


# -- the estimator -----------------------------------------------------------------


@pytest.mark.parametrize("loss", ["clip", "siglip"])
@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_fit_learns_retrieval(loss, head):
    X, Y = _paired(n=300)
    a = ContrastiveAligner(head=head, loss=loss, **{**SMALL, "epochs": 8}).fit(X[:200], Y[:200])
    Za, Zb = a.transform_a(X[200:]), a.transform_b(Y[200:])
    assert Za.shape == (100, 8) and Zb.shape == (100, 8) and Za.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(Za, axis=1), 1.0, atol=1e-5)
    ev = a.evaluate(X[200:], Y[200:], ks=(1, 5))
    assert ev["n_candidates"] == 100
    assert ev["a2b_top1"] == ev["a2b_recall@1"] and ev["a2b_top1"] > 0.5  # chance: 0.01
    assert ev["b2a_recall@5"] >= ev["b2a_top1"] > 0.5
    assert ev["mutual_knn_after"] > ev["mutual_knn_before"]
    assert a.history_[-1]["loss"] < a.history_[0]["loss"]
    assert len(a.history_) == 8 and a.rollbacks_ == []


def test_evaluate_retrieval_by_hand():
    # identity-like heads are not available, so check the definition on the
    # transformed spaces directly with align.knn
    X, Y = _paired(n=150)
    a = ContrastiveAligner(**SMALL).fit(X[:100], Y[:100])
    ev = a.evaluate(X[100:], Y[100:], ks=(1, 3))
    Za, Zb = a.transform_a(X[100:]), a.transform_b(Y[100:])
    S = Za @ Zb.T
    rank = (S > np.diag(S)[:, None]).sum(1)  # candidates strictly better than the partner
    assert ev["a2b_recall@3"] == pytest.approx(np.mean(rank < 3))
    assert ev["a2b_top1"] == pytest.approx(np.mean(rank == 0))


def test_save_load_round_trip(tmp_path):
    X, Y = _paired(n=100)
    for loss in ("clip", "siglip"):
        a = ContrastiveAligner(head="mlp", loss=loss, **SMALL).fit(X, Y)
        a.save(tmp_path / loss)
        b = ContrastiveAligner.load(tmp_path / loss)
        np.testing.assert_array_equal(a.transform_a(X), b.transform_a(X))
        np.testing.assert_array_equal(a.transform_b(Y), b.transform_b(Y))
        assert b.logit_scale_ == a.logit_scale_ and b.logit_bias_ == a.logit_bias_
        assert b.history_ == a.history_ and b.get_params()["head"] == "mlp"


def test_load_refuses_foreign_and_pickled_files(tmp_path):
    X, Y = _paired(n=60)
    ContrastiveAligner(**SMALL).fit(X, Y).save(tmp_path / "m")
    cfg = (tmp_path / "m" / "config.json").read_text()
    (tmp_path / "m" / "config.json").write_text(cfg.replace('"ContrastiveAligner"', '"Procrustes"'))
    with pytest.raises(ValueError, match="not a ContrastiveAligner"):
        ContrastiveAligner.load(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(cfg)
    import pickle

    (tmp_path / "m" / "weights.safetensors").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(ValueError, match="never unpickles|not a valid safetensors"):
        ContrastiveAligner.load(tmp_path / "m")


def test_exports():
    assert align.ContrastiveAligner is ContrastiveAligner
    assert align.clip_loss is clip_loss and align.siglip_loss is siglip_loss
    assert align.TrainingDivergedError is TrainingDivergedError and align.StopTraining is StopTraining
    assert align.gather_with_grad is L.gather_with_grad


# -- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"head": "conv"}, "head"),
        ({"loss": "triplet"}, "loss"),
        ({"dim": 0}, "dim"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 1}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"hidden": 2.5}, "hidden"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_params_name_the_argument(kwargs, arg):
    X, Y = _paired(n=20)
    with pytest.raises(ValueError, match=arg):
        ContrastiveAligner(**{**SMALL, **kwargs}).fit(X, Y)


def test_bad_data_name_the_argument():
    X, Y = _paired(n=20)
    with pytest.raises(ValueError, match="same number of rows"):
        ContrastiveAligner(**SMALL).fit(X, Y[:-1])
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(ValueError, match="^X contains"):
        ContrastiveAligner(**SMALL).fit(Xn, Y)
    with pytest.raises(ValueError, match="^Y must be 2-D"):
        ContrastiveAligner(**SMALL).fit(X, Y[:, 0])
    with pytest.raises(ValueError, match="not fitted"):
        ContrastiveAligner(**SMALL).transform_a(X)
    a = ContrastiveAligner(**{**SMALL, "epochs": 1}).fit(X, Y)
    with pytest.raises(ValueError, match="^X has 10 columns"):
        a.transform_a(Y)
    with pytest.raises(ValueError, match="^Y has 12 columns"):
        a.transform_b(X)
    with pytest.raises(ValueError, match="ks"):
        a.evaluate(X[:4], Y[:4], ks=(1, 5))


# -- determinism, resume, divergence --------------------------------------------------


def test_same_seed_same_result_other_seed_differs():
    X, Y = _paired(n=120)
    a = ContrastiveAligner(**SMALL, seed=3).fit(X, Y)
    b = ContrastiveAligner(**SMALL, seed=3).fit(X, Y)
    c = ContrastiveAligner(**SMALL, seed=4).fit(X, Y)
    np.testing.assert_array_equal(a.transform_a(X), b.transform_a(X))
    assert a.history_ == b.history_
    assert not np.allclose(a.transform_a(X), c.transform_a(X))


def test_fit_leaves_global_rng_alone():
    X, Y = _paired(n=40)
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    ContrastiveAligner(**SMALL).fit(X, Y)
    assert torch.equal(torch.rand(3), want)


class _Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted(tmp_path, monkeypatch):
    X, Y = _paired(n=100)
    params = {**SMALL, "epochs": 4, "loss": "siglip", "head": "mlp"}
    ref = ContrastiveAligner(**params).fit(X, Y)

    # 1) stopped between epochs (a callback raising after epoch 1)
    def stop(epoch, _):
        if epoch == 1:
            raise _Interrupt

    stopped = ContrastiveAligner(**params, checkpoint_dir=tmp_path / "a")
    with pytest.raises(_Interrupt):
        stopped.fit(X, Y, callback=stop)
    assert len(stopped.history_) == 1  # epoch 0 completed; epoch 1's record was being made
    with pytest.raises(ValueError, match="not fitted"):  # an interrupted fit is not a fitted model
        stopped.transform_a(X)
    res = ContrastiveAligner(**params, checkpoint_dir=tmp_path / "a").fit(X, Y)
    np.testing.assert_allclose(res.transform_a(X), ref.transform_a(X), atol=1e-6)
    assert [h["loss"] for h in res.history_] == pytest.approx([h["loss"] for h in ref.history_], abs=1e-6)

    # 2) killed mid-epoch (step 6 of 4 x 4 steps), checkpoints every 2 steps
    calls = {"n": 0}
    real = C._loss_step

    def flaky(*a):
        calls["n"] += 1
        if calls["n"] == 7:
            raise _Interrupt
        return real(*a)

    monkeypatch.setattr(C, "_loss_step", flaky)
    with pytest.raises(_Interrupt):
        ContrastiveAligner(**params, checkpoint_dir=tmp_path / "b", checkpoint_every=2).fit(X, Y)
    latest = (tmp_path / "b" / "LATEST").read_text()
    assert latest == "ckpt-000000004" and len(list((tmp_path / "b").glob("ckpt-*"))) == 1  # steps 2, 4, epoch end, 6
    res = ContrastiveAligner(**params, checkpoint_dir=tmp_path / "b", checkpoint_every=2).fit(X, Y)
    np.testing.assert_allclose(res.transform_b(Y), ref.transform_b(Y), atol=1e-6)
    assert [h["loss"] for h in res.history_] == pytest.approx([h["loss"] for h in ref.history_], abs=1e-6)

    # 3) a finished run resumes to the same state; more epochs continue it
    again = ContrastiveAligner(**params, checkpoint_dir=tmp_path / "b").fit(X, Y)
    np.testing.assert_array_equal(again.transform_b(Y), res.transform_b(Y))
    longer = ContrastiveAligner(**{**params, "epochs": 5}, checkpoint_dir=tmp_path / "b").fit(X, Y)
    assert len(longer.history_) == 5 and longer.history_[:4] == res.history_


def test_checkpoint_of_another_run_is_refused(tmp_path):
    X, Y = _paired(n=60)
    ContrastiveAligner(**SMALL, checkpoint_dir=tmp_path).fit(X, Y)
    with pytest.raises(ValueError, match="different run.*data"):
        ContrastiveAligner(**SMALL, checkpoint_dir=tmp_path).fit(X + 1, Y)
    with pytest.raises(ValueError, match="different run.*lr"):
        ContrastiveAligner(**{**SMALL, "lr": 0.5}, checkpoint_dir=tmp_path).fit(X, Y)


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time, numpy as np
    from align.train import ContrastiveAligner
    d = np.load(sys.argv[1])
    def slow(epoch, _):
        time.sleep(0.3)
    ContrastiveAligner(**{params}, checkpoint_dir=sys.argv[2], checkpoint_every=1).fit(d["X"], d["Y"], callback=slow)
    """
)


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path):
    """A training process killed with SIGKILL mid-run resumes from its last
    checkpoint and ends where an uninterrupted run ends."""
    X, Y = _paired(n=100)
    params = {**SMALL, "epochs": 12}
    np.savez(tmp_path / "d.npz", X=X, Y=Y)
    script = tmp_path / "train.py"
    script.write_text(_KILL_SCRIPT.replace("{params}", repr(params)))
    ck = tmp_path / "ck"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "d.npz"), str(ck)], env=env, cwd=REPO)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            latest = ck / "LATEST"
            if latest.is_file() and int(latest.read_text().split("-")[1]) >= 6:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "training finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ref = ContrastiveAligner(**params).fit(X, Y)
    res = ContrastiveAligner(**params, checkpoint_dir=ck, checkpoint_every=1).fit(X, Y)
    assert res.resumed_from_ is not None and 0 < res.resumed_from_ < 12 * 4
    np.testing.assert_allclose(res.transform_a(X), ref.transform_a(X), atol=1e-5)
    assert [h["loss"] for h in res.history_] == pytest.approx([h["loss"] for h in ref.history_], abs=1e-5)


class _InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


@pytest.mark.parametrize("failure", ["nan_loss", "inf_grad"])
def test_divergence_rolls_back_and_halves_lr(monkeypatch, failure):
    X, Y = _paired(n=64)
    calls = {"n": 0}
    real = C._loss_step

    def flaky(*a):
        calls["n"] += 1
        loss = real(*a)
        if calls["n"] in (5, 6):  # two failures in a row at the same step
            return loss * float("nan") if failure == "nan_loss" else _InfGrad.apply(loss)
        return loss

    monkeypatch.setattr(C, "_loss_step", flaky)
    a = ContrastiveAligner(**{**SMALL, "epochs": 3}).fit(X, Y)
    assert [r["step"] for r in a.rollbacks_] == [4, 3]  # then the replayed step 3 fails too
    assert a.history_[-1]["lr"] == pytest.approx(SMALL["lr"] / 4)
    assert a.history_[-1]["step"] == 6 and np.isfinite(a.transform_a(X)).all()


def test_persistent_divergence_raises_with_step_and_losses(monkeypatch):
    X, Y = _paired(n=64)
    calls = {"n": 0}
    real = C._loss_step

    def broken(*a):
        calls["n"] += 1
        loss = real(*a)
        return loss * float("nan") if calls["n"] >= 3 else loss

    monkeypatch.setattr(C, "_loss_step", broken)
    with pytest.raises(TrainingDivergedError, match=r"diverged at step 2.*after 2 rollbacks.*recent losses"):
        ContrastiveAligner(**{**SMALL, "max_retries": 2}).fit(X, Y)


def test_resume_from_checkpoint_written_before_the_engine_moved(tmp_path):
    """A checkpoint written by the trainer before it moved to align.train (same
    layout; stopped after step 3 of 3 x 2 steps) resumes to the uninterrupted result."""
    import shutil

    X, Y = _paired(n=60)
    params = {**SMALL, "epochs": 3}
    shutil.copytree(Path(__file__).resolve().parent / "data" / "contrastive_legacy_checkpoint", tmp_path / "ck")
    res = ContrastiveAligner(**params, checkpoint_dir=tmp_path / "ck", checkpoint_every=3).fit(X, Y)
    ref = ContrastiveAligner(**params).fit(X, Y)
    assert res.resumed_from_ == 3
    np.testing.assert_allclose(res.transform_a(X), ref.transform_a(X), atol=1e-6)
    assert [h["loss"] for h in res.history_] == pytest.approx([h["loss"] for h in ref.history_], abs=1e-6)


# -- estimator contract and callbacks ---------------------------------------------------


def test_sklearn_contract():
    from sklearn.base import clone

    a = ContrastiveAligner(head="mlp", dim=16, seed=3, checkpoint_dir=Path("ck"))
    b = clone(a)
    assert b is not a and repr(b.get_params()) == repr(a.get_params()) and b.get_params(deep=False) == a.get_params()
    assert b.set_params(dim=8, lr=0.5) is b and (b.dim, b.lr, a.dim) == (8, 0.5, 16)
    with pytest.raises(ValueError, match="no parameter 'dims'"):
        b.set_params(dims=3)
    X, Y = _paired(n=20)
    bad = ContrastiveAligner(**{**SMALL, "weight_decay": float("inf")})  # stored as given, refused at fit
    with pytest.raises(ValueError, match="weight_decay"):
        bad.fit(X, Y)


def test_step_callbacks_and_stop_training(tmp_path):
    X, Y = _paired(n=64)  # 2 steps per epoch
    seen = []

    def cb(record):
        seen.append(record)
        if record.get("step") == 5 and "event" not in record:
            raise StopTraining

    a = ContrastiveAligner(**SMALL, checkpoint_dir=tmp_path).fit(X, Y, callbacks=[cb])
    steps = [(r.get("event"), r["step"]) for r in seen]
    assert steps == [(None, 1), (None, 2), ("epoch", 2), (None, 3), (None, 4), ("epoch", 4), (None, 5)]
    assert all(np.isfinite([r["loss"], r["lr"]]).all() for r in seen) and "grad_norm" in seen[0]
    assert len(a.history_) == 2 and np.isfinite(a.transform_a(X)).all()  # stopped early, but fitted
    done = ContrastiveAligner(**SMALL, checkpoint_dir=tmp_path).fit(X, Y)  # trains on from step 5
    ref = ContrastiveAligner(**SMALL).fit(X, Y)
    assert done.resumed_from_ == 5
    np.testing.assert_allclose(done.transform_a(X), ref.transform_a(X), atol=1e-6)
