"""Tests for align.train.repa: the projector's shape, the loss against hand
computations, the forward hook (attach / detach, also after an exception),
and the training helper (learning, resume, rollback, determinism, bad input)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import align
from align.train import RepaHandle, RepaProjector, RepaTrainer, TrainingDivergedError, as_tokens, attach_repa, repa_loss, train_with_repa


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads cost more than they save
    yield
    torch.set_num_threads(n)


class TinyCNN(nn.Module):
    def __init__(self, c: int = 4, n_out: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, c, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, n_out)

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        h = self.block(h)
        return self.fc(self.pool(h).flatten(1))


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return TinyCNN(**kw)


def _data(n=48, seed=0, d_t=5):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 1, 4, 4)).astype(np.float32)
    y = (X.reshape(n, -1)[:, :3].argmax(1)).astype(np.int64)
    T = rng.normal(size=(n, 16, d_t)).astype(np.float32)  # one target per pixel token
    return X, y, T


# -- projector and loss ------------------------------------------------------------


def test_projector_architecture_and_shapes():
    p = RepaProjector(6, 5)
    kinds = [type(m) for m in p.net]
    assert kinds == [nn.Linear, nn.SiLU, nn.Linear, nn.SiLU, nn.Linear]
    assert p.net[0].out_features == 2048 and p.net[2].in_features == 2048  # paper's hidden width
    assert p(torch.zeros(3, 6)).shape == (3, 5)
    assert p(torch.zeros(3, 7, 6)).shape == (3, 7, 5)
    with pytest.raises(ValueError, match="in_dim=6"):
        p(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="target_dim"):
        RepaProjector(3, 0)


def test_repa_loss_per_sample_by_hand():
    h = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    t = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    # cosines 1 and 1/sqrt(2); row norms do not matter
    assert float(repa_loss(h, t)) == pytest.approx(-(1 + 1 / math.sqrt(2)) / 2, abs=1e-7)


def test_repa_loss_per_token_by_hand():
    h = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [3.0, 4.0]]])
    t = np.array([[[1.0, 0.0], [0.0, -1.0]], [[0.0, 1.0], [3.0, 4.0]]], dtype=np.float32)
    # cosines: sample 0: 1, -1; sample 1: 0, 1 -> mean 0.25
    assert float(repa_loss(h, t)) == pytest.approx(-0.25, abs=1e-7)


def test_repa_loss_reads_conv_maps_as_tokens_and_no_grad_through_target():
    h = torch.randn(2, 6, 3, requires_grad=True)  # (N, T=H*W, C)
    t4 = torch.randn(2, 3, 2, 3, requires_grad=True)  # (N, C, H, W)
    loss = repa_loss(h, t4)
    assert float(loss.detach()) == pytest.approx(float(repa_loss(h, as_tokens(t4)).detach()))
    loss.backward()
    assert h.grad is not None and t4.grad is None


@pytest.mark.parametrize(
    "h, t, match",
    [
        (torch.zeros(3, 4), torch.zeros(3, 5), "target has shape"),
        (torch.zeros(3, 4), torch.zeros(2, 4), "target has shape"),
        (np.zeros((3, 4)), torch.zeros(3, 4), "^h must be a torch.Tensor"),
        (torch.zeros(3, 4), np.zeros((3, 4), dtype=np.int64), "^target must be floating"),
        (torch.zeros(3), torch.zeros(3), "^h must be"),
    ],
)
def test_repa_loss_bad_input(h, t, match):
    with pytest.raises(ValueError, match=match):
        repa_loss(h, t)


def test_exports():
    assert align.RepaProjector is RepaProjector and align.attach_repa is attach_repa and align.repa_loss is repa_loss
    assert align.RepaTrainer is RepaTrainer and align.train_with_repa is train_with_repa


# -- the hook -------------------------------------------------------------------


def test_attach_keeps_projected_layer_output_and_detaches():
    m = _model()
    keys = set(m.state_dict())
    p = RepaProjector(4, 5, hidden=8)
    x = torch.randn(2, 1, 4, 4)
    h = attach_repa(m, "block", p)
    assert isinstance(h, RepaHandle) and h.output is None and h.attached
    out = m(x)
    want = p(as_tokens(m.block(torch.relu(m.conv1(x)))))
    assert h.output.shape == (2, 16, 5) and torch.allclose(h.output, want)
    assert h.features.shape == (2, 4, 4, 4)
    assert h.output.requires_grad  # usable in the loss
    assert set(m.state_dict()) == keys  # the model is not edited
    h.remove()
    h.remove()  # idempotent
    assert not h.attached and len(m.block._forward_hooks) == 0
    m(x)
    assert h.output is None
    torch.testing.assert_close(m(x), out)


def test_attach_pool_mean():
    m = _model()
    with attach_repa(m, "conv1", RepaProjector(4, 3, hidden=8), pool="mean") as h:
        m(torch.randn(5, 1, 4, 4))
        assert h.output.shape == (5, 3)


def test_hook_removed_after_exception_in_with_block():
    m = _model()
    with pytest.raises(RuntimeError, match="boom"):
        with attach_repa(m, "block.0", RepaProjector(4, 3, hidden=8)) as h:
            m(torch.randn(1, 1, 4, 4))
            assert h.output is not None
            raise RuntimeError("boom")
    assert len(m.block[0]._forward_hooks) == 0 and not h.attached


def test_unknown_layer_lists_the_names():
    with pytest.raises(ValueError, match=r"layer_name: 'blocks\.3' is not a module.*'conv1'.*'block\.0'.*'fc'"):
        attach_repa(_model(), "blocks.3", RepaProjector(4, 3, hidden=8))
    with pytest.raises(ValueError, match="layer_name"):
        attach_repa(_model(), "", RepaProjector(4, 3, hidden=8))
    with pytest.raises(ValueError, match="projector"):
        attach_repa(_model(), "fc", "not a module")
    with pytest.raises(ValueError, match="pool"):
        attach_repa(_model(), "fc", RepaProjector(3, 3, hidden=8), pool="max")


# -- the training helper ------------------------------------------------------------


def _train(seed=0, lam=0.5, epochs=3, **kw):
    X, y, T = _data()
    m = _model(seed)
    torch.manual_seed(100 + seed)
    p = RepaProjector(4, 5, hidden=16)
    hist = train_with_repa(m, p, "block", X, y, T, lam=lam, epochs=epochs, batch_size=16, lr=1e-2, seed=seed, progress=False, **kw)
    return m, p, hist


def test_train_with_repa_lowers_the_repa_loss_and_records_history():
    calls = []
    m, p, hist = _train(epochs=6, callback=lambda e, model: calls.append((e, model.training)) or {"probe": float(e)})
    assert [h["epoch"] for h in hist] == list(range(6))
    assert hist[-1]["repa_loss"] < hist[0]["repa_loss"]
    for h in hist:  # the total is task + λ · REPA, averaged over the same steps
        assert h["loss"] == pytest.approx(h["task_loss"] + 0.5 * h["repa_loss"], rel=1e-5)
    assert calls == [(e, False) for e in range(6)] and hist[2]["probe"] == 2.0
    assert all(len(mod._forward_hooks) == 0 for mod in m.modules())  # hook gone after training


def test_baseline_lam_zero_ignores_projector_and_target():
    X, y, _ = _data()
    m = _model()
    hist = train_with_repa(m, None, None, X, y, lam=0.0, epochs=2, batch_size=16, progress=False)
    assert "repa_loss" not in hist[0] and hist[0]["loss"] == pytest.approx(hist[0]["task_loss"])


def test_target_may_be_a_frozen_teacher():
    from align.device import torch_device

    X, y, _ = _data()
    teacher = _model(7).to(torch_device())  # batches arrive on the training device (CUDA where present)

    def target_fn(xb):
        with attach_repa(teacher, "block", nn.Identity()) as h:
            teacher(xb)
            return h.output  # (N, 16, 4) teacher tokens

    m = _model()
    torch.manual_seed(1)
    hist = train_with_repa(m, RepaProjector(4, 4, hidden=16), "block", X, y, target_fn, epochs=2, batch_size=16, progress=False)
    assert np.isfinite(hist[-1]["repa_loss"])
    assert all(len(mod._forward_hooks) == 0 for mod in teacher.modules())


def test_same_seed_same_training():
    m1, p1, h1 = _train(seed=3)
    m2, p2, h2 = _train(seed=3)
    assert h1 == h2
    for a, b in zip(list(m1.parameters()) + list(p1.parameters()), list(m2.parameters()) + list(p2.parameters())):
        assert torch.equal(a, b)


class _Stop(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted(tmp_path):
    ref_m, ref_p, ref_h = _train(epochs=4)
    calls = {"n": 0}

    def task_loss(out, yb):
        calls["n"] += 1
        if calls["n"] == 8:  # mid-epoch 2 (3 steps per epoch)
            raise _Stop
        return nn.functional.cross_entropy(out, yb)

    with pytest.raises(_Stop):
        _train(epochs=4, task_loss=task_loss, checkpoint_dir=tmp_path, checkpoint_every=2)
    # a fresh model and projector (as after a crash): the checkpoint restores both
    m, p, hist = _train(epochs=4, checkpoint_dir=tmp_path, checkpoint_every=2)
    assert [h["loss"] for h in hist] == pytest.approx([h["loss"] for h in ref_h], abs=1e-6)
    assert [h["repa_loss"] for h in hist] == pytest.approx([h["repa_loss"] for h in ref_h], abs=1e-6)
    for a, b in zip(list(m.parameters()) + list(p.parameters()), list(ref_m.parameters()) + list(ref_p.parameters())):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_divergence_rollback_and_error():
    calls = {"n": 0}

    def flaky(out, yb):
        calls["n"] += 1
        loss = nn.functional.cross_entropy(out, yb)
        return loss * float("inf") if calls["n"] == 4 else loss

    _, _, hist = _train(epochs=2, task_loss=flaky)
    assert hist[-1]["lr"] == pytest.approx(5e-3) and np.isfinite(hist[-1]["loss"])

    def broken(out, yb):
        return nn.functional.cross_entropy(out, yb) * float("nan")

    with pytest.raises(TrainingDivergedError, match=r"step 0.*recent losses"):
        _train(epochs=2, task_loss=broken, max_retries=1)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"lam": -1.0}, "^lam"),
        ({"epochs": 0}, "^epochs"),
        ({"lr": 0.0}, "^lr"),
        ({"labels": np.zeros(5, dtype=np.int64)}, "same number of rows"),
        ({"target": np.zeros((7, 16, 5), dtype=np.float32)}, "^target must have one row per input"),
        ({"target": None}, "^target is required"),
        ({"projector": None}, "^projector is None"),
        ({"layer": "nope"}, "^layer: 'nope' is not a module"),
        ({"inputs": np.full((48, 1, 4, 4), np.nan, dtype=np.float32)}, "^inputs contains NaN"),
        ({"model": "cnn"}, "^model must be"),
    ],
)
def test_train_with_repa_bad_input(change, match):
    X, y, T = _data()
    args = dict(model=_model(), projector=RepaProjector(4, 5, hidden=8), layer="block", inputs=X, labels=y, target=T)
    opts = dict(lam=0.5, epochs=1, lr=1e-3, progress=False)
    for k, v in change.items():
        (opts if k in opts else args)[k] = v
    with pytest.raises(ValueError, match=match):
        train_with_repa(**args, **opts)


def test_repa_trainer_is_the_function_with_options_grouped():
    from sklearn.base import clone

    X, y, T = _data()
    runs = []
    for use_class in (True, False):
        m = _model(0)
        torch.manual_seed(100)
        p = RepaProjector(4, 5, hidden=16)
        opts = dict(lam=0.5, epochs=2, batch_size=16, lr=1e-2, seed=0, progress=False)
        if use_class:
            t = RepaTrainer(**opts)
            assert clone(t).get_params() == t.get_params()
            runs.append(t.fit(m, p, "block", X, y, T).history_)
        else:
            runs.append(train_with_repa(m, p, "block", X, y, T, **opts))
    assert runs[0] == runs[1]
    with pytest.raises(TypeError, match="unexpected options.*'lamda'"):
        train_with_repa(_model(), None, None, X, y, lamda=0.0)
    with pytest.raises(ValueError, match="^pool"):
        RepaTrainer(pool="max").fit(_model(), RepaProjector(4, 5, hidden=8), "block", X, y, T)


def test_step_callbacks_see_task_and_repa_losses():
    seen = []
    _train(epochs=1, callbacks=[seen.append])
    steps = [r for r in seen if "event" not in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all({"loss", "task_loss", "repa_loss", "grad_norm", "lr", "epoch"} <= set(r) for r in steps)
    assert seen[-1]["event"] == "epoch" and seen[-1]["repa_loss"] == pytest.approx(np.mean([r["repa_loss"] for r in steps]))
