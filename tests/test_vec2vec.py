"""Vec2Vec / CycleGAN: shapes, persistence, resume after interruption (also after
SIGKILL, and from a checkpoint of the earlier layout), divergence rollback,
callbacks, determinism, scikit-learn's contract, bad input, tampered checkpoints.

Models here are tiny (widths 6-16, tens of steps): these tests check the
machinery, not translation quality (scripts/vec2vec_study.py measures that).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import translate  # noqa: E402
from align.checkpoint import load_artifact, save_artifact  # noqa: E402
from align.train import StopTraining, TrainingDivergedError  # noqa: E402
from translate.denoise import noise_variances, shrink_filter  # noqa: E402
from translate.vec2vec import CycleGAN, Vec2Vec, networks, nn_cycle_rate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LEGACY = Path(__file__).resolve().parent / "data" / "vec2vec_legacy_checkpoint"
SMALL = dict(hidden=8, depth=1, batch_size=16, progress=False)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest, and bit-reproducibly, on one thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def make_data(n=120, d_a=6, d_b=7, seed=0):
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(n, d_a)) * np.linspace(0.5, 2.0, d_a)).astype(np.float32)
    Q, _ = np.linalg.qr(rng.normal(size=(d_b, d_a)))  # semi-orthogonal d_b x d_a
    Y = (rng.normal(size=(n + 10, d_a)) * np.linspace(0.5, 2.0, d_a)) @ Q.T
    return X, Y.astype(np.float32), Q


class Hook:
    """A training callback that follows the step about to run, sleeps, or
    interrupts after ``raise_at`` steps; with :meth:`inject`, the cycle loss is
    NaN at the steps ``nan_at`` (at most ``nan_times`` times)."""

    def __init__(self, nan_at=(), nan_times=1, raise_at=None, sleep=0.0):
        self.nan_at, self.nan_times, self.raise_at, self.sleep = set(nan_at), nan_times, raise_at, sleep
        self.injected = 0
        self.next_step = 0

    def __call__(self, record):
        if record.get("event") == "rollback":
            self.next_step = record["to_step"]
        if "event" in record:
            return
        self.next_step = record["step"]
        if self.sleep:
            time.sleep(self.sleep)
        if self.raise_at is not None and record["step"] == self.raise_at:
            raise KeyboardInterrupt("simulated interruption")

    def inject(self, monkeypatch):
        real = networks.generator_terms

        def terms(*args, **kwargs):
            parts = real(*args, **kwargs)
            if self.next_step in self.nan_at and self.injected < self.nan_times:
                self.injected += 1
                parts["cycle"] = parts["cycle"] * float("nan")
            return parts

        monkeypatch.setattr(networks, "generator_terms", terms)
        return self


def latest(seed_dir):
    """(folder LATEST names, the step its checkpoint holds)."""
    name = (Path(seed_dir) / "LATEST").read_text()
    config, _, _ = load_artifact(Path(seed_dir) / name, ["Vec2Vec-checkpoint", "CycleGAN-checkpoint"])
    return name, config["state"]["global_step"]


def no_training(record):
    raise AssertionError(f"trained again: {record}")


# ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [Vec2Vec, CycleGAN])
def test_shapes_save_load_identical(cls, tmp_path):
    X, Y, _ = make_data()
    m = cls(steps=12, n_seeds=2, seed=3, **SMALL).fit(X, Y)
    Z = m.transform(X[:17])
    assert Z.shape == (17, Y.shape[1]) and Z.dtype == np.float32 and np.isfinite(Z).all()
    assert m.inverse_transform(Y[:5]).shape == (5, X.shape[1])
    assert m.steps_done_ == 12 and m.selected_seed_ in (0, 1) and len(m.seed_scores_) == 2
    assert any(e.get("step") == 12 for e in m.history_)
    m.save(tmp_path / "m")
    m2 = translate.load(tmp_path / "m")
    assert type(m2) is cls
    np.testing.assert_array_equal(m2.transform(X[:17]), Z)
    np.testing.assert_array_equal(m2.inverse_transform(Y[:5]), m.inverse_transform(Y[:5]))
    with pytest.raises(ValueError, match="columns"):
        m2.transform(np.ones((3, X.shape[1] + 1), np.float32))


def test_model_saved_before_selected_step_still_loads(tmp_path):
    """An artefact from before the selection over training (no selected_step_ in its
    metadata) loads, as the last step kept, and translates as before."""
    import json

    X, Y, _ = make_data()
    m = Vec2Vec(steps=6, seed=1, **SMALL).fit(X, Y)
    m.save(tmp_path / "m")
    cfg_file = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    del cfg["config"]["meta"]["selected_step_"]
    cfg_file.write_text(json.dumps(cfg))
    m2 = translate.load(tmp_path / "m")
    assert m2.selected_step_ == m2.steps_done_ == 6
    np.testing.assert_array_equal(m2.transform(X[:9]), m.transform(X[:9]))
    cfg["config"]["meta"]["bogus_"] = 1
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="learned metadata"):
        translate.load(tmp_path / "m")


def test_cyclegan_has_no_latent_parts():
    X, Y, _ = make_data()
    v = Vec2Vec(steps=3, **SMALL).fit(X, Y)
    c = CycleGAN(steps=3, **SMALL).fit(X, Y)
    assert "rec" in v.history_[0] and "latent" in v.history_[0]
    assert "rec" not in c.history_[0] and "latent" not in c.history_[0]


def test_same_seed_same_result_other_seed_differs():
    X, Y, _ = make_data()
    a = Vec2Vec(steps=15, seed=1, **SMALL).fit(X, Y)
    b = Vec2Vec(steps=15, seed=1, **SMALL).fit(X, Y)
    c = Vec2Vec(steps=15, seed=2, **SMALL).fit(X, Y)
    np.testing.assert_array_equal(a.generator_, b.generator_)
    assert a.history_ == b.history_
    assert not np.allclose(a.generator_, c.generator_)


# ---------------------------------------------------------------------------
def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    X, Y, _ = make_data()
    params = dict(steps=30, checkpoint_every=10, seed=5, **SMALL)
    ref = Vec2Vec(**params).fit(X, Y)  # no checkpoint_dir: checkpointing must not change the run
    m = Vec2Vec(checkpoint_dir=tmp_path / "ck", **params)
    with pytest.raises(KeyboardInterrupt):
        m.fit(X, Y, callbacks=[Hook(raise_at=25)])
    with pytest.raises(ValueError, match="not fitted"):  # an interrupted fit is not a fitted model
        m.transform(X)
    assert latest(tmp_path / "ck" / "seed_0") == ("ckpt-000000002", 20)  # saved at steps 10 and 20
    assert sorted(p.name for p in (tmp_path / "ck" / "seed_0").iterdir()) == ["LATEST", "ckpt-000000002"]
    r = Vec2Vec(checkpoint_dir=tmp_path / "ck", **params).fit(X, Y)
    assert r.steps_done_ == ref.steps_done_ == 30
    np.testing.assert_allclose(r.generator_, ref.generator_, rtol=0, atol=1e-5)
    assert [e["step"] for e in r.history_[:-1]] == [e["step"] for e in ref.history_[:-1]]
    # a finished run in the folder is loaded, not retrained
    again = Vec2Vec(checkpoint_dir=tmp_path / "ck", **params).fit(X, Y, callbacks=[no_training])
    np.testing.assert_array_equal(again.generator_, r.generator_)
    assert again.seed_scores_ == r.seed_scores_


def test_resume_from_checkpoint_of_the_earlier_layout(tmp_path):
    """A run interrupted at step 15 under the earlier layout (seed_0/step_000000010/,
    JSON LATEST; written by the trainer before it moved onto align's engine)
    resumes, and ends where an uninterrupted run ends; without weight averaging, which that
    layout did not have (with it, the checkpoint is refused: it trained otherwise)."""
    X, Y, _ = make_data()
    params = dict(steps=20, checkpoint_every=10, seed=5, ema=0, **SMALL)
    shutil.copytree(LEGACY, tmp_path / "ck")
    r = Vec2Vec(checkpoint_dir=tmp_path / "ck", **params).fit(X, Y)
    ref = Vec2Vec(**params).fit(X, Y)
    np.testing.assert_allclose(r.generator_, ref.generator_, rtol=0, atol=1e-5)
    assert [e["step"] for e in r.history_[:-1]] == [e["step"] for e in ref.history_[:-1]]
    assert latest(tmp_path / "ck" / "seed_0") == ("ckpt-000000001", 20)  # the next save is in the engine's layout
    with pytest.raises(ValueError, match="other data or hyper-parameters"):
        shutil.rmtree(tmp_path / "ck")
        shutil.copytree(LEGACY, tmp_path / "ck")
        Vec2Vec(checkpoint_dir=tmp_path / "ck", **{**params, "lr": 1e-3}).fit(X, Y)
    with pytest.raises(ValueError, match="other data or hyper-parameters"):
        shutil.rmtree(tmp_path / "ck")
        shutil.copytree(LEGACY, tmp_path / "ck")
        Vec2Vec(checkpoint_dir=tmp_path / "ck", **{**params, "ema": 0.99}).fit(X, Y)


def test_checkpoint_from_other_data_or_params_is_refused(tmp_path):
    X, Y, _ = make_data()
    Vec2Vec(steps=10, checkpoint_every=5, checkpoint_dir=tmp_path, **SMALL).fit(X, Y)
    with pytest.raises(ValueError, match="other data or hyper-parameters"):
        Vec2Vec(steps=10, checkpoint_every=5, checkpoint_dir=tmp_path, **SMALL).fit(X + 1, Y)
    with pytest.raises(ValueError, match="other data or hyper-parameters"):
        Vec2Vec(steps=10, lr=1e-3, checkpoint_every=5, checkpoint_dir=tmp_path, **SMALL).fit(X, Y)


@pytest.mark.parametrize("damage", ["truncate", "pickle", "pointer", "shape", "step", "lr_scale"])
def test_tampered_checkpoint_is_refused(tmp_path, damage):
    X, Y, _ = make_data()
    params = dict(steps=20, checkpoint_every=10, checkpoint_dir=tmp_path, **SMALL)
    with pytest.raises(KeyboardInterrupt):
        Vec2Vec(**params).fit(X, Y, callbacks=[Hook(raise_at=15)])
    name, step = latest(tmp_path / "seed_0")
    assert step == 10
    ck = tmp_path / "seed_0" / name
    w = ck / "weights.safetensors"
    if damage == "truncate":
        w.write_bytes(w.read_bytes()[:100])
    elif damage == "pickle":
        import pickle

        w.write_bytes(pickle.dumps({"gen.x": 1}))
    elif damage == "pointer":
        (tmp_path / "seed_0" / "LATEST").write_text("../../etc")
    elif damage == "shape":  # a consistent artefact whose tensors do not fit the model
        config, tensors, _ = load_artifact(ck, "Vec2Vec-checkpoint")
        name = next(k for k in tensors if k.startswith("net.gen."))
        tensors[name] = np.zeros((3, 3), np.float32)
        save_artifact(ck, "Vec2Vec-checkpoint", config, tensors)
    elif damage in ("step", "lr_scale"):  # consistent artefacts recording an impossible state
        config, tensors, _ = load_artifact(ck, "Vec2Vec-checkpoint")
        if damage == "step":
            config["state"]["step_in_epoch"] = 21
        else:
            config["lr_scale"] = 2.0
        save_artifact(ck, "Vec2Vec-checkpoint", config, tensors)
    with pytest.raises(ValueError):
        Vec2Vec(**params).fit(X, Y)


_CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from test_vec2vec import make_data, SMALL, Hook
    from translate.vec2vec import Vec2Vec
    X, Y, _ = make_data()
    m = Vec2Vec(checkpoint_dir=sys.argv[1], **{params!r}, **SMALL)
    m.fit(X, Y, callbacks=[Hook(sleep=0.05)])
    print("finished")
    """
)


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    X, Y, _ = make_data()
    params = dict(steps=60, checkpoint_every=5, seed=7)
    code = _CHILD.format(tests=str(REPO / "tests"), params=params)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    ck = tmp_path / "ck"
    proc = subprocess.Popen([sys.executable, "-c", code, str(ck)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pointer = ck / "seed_0" / "LATEST"
    deadline = time.time() + 180
    killed_at = None
    try:
        while time.time() < deadline and proc.poll() is None:
            if pointer.exists():
                try:
                    step = latest(ck / "seed_0")[1]
                except (ValueError, OSError):  # LATEST moved on; the folder it named went, even mid-read: look again
                    continue
                if step >= 15:
                    proc.send_signal(signal.SIGKILL)
                    killed_at = step
                    break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        out, err = proc.communicate(timeout=60)
    assert killed_at is not None, f"child ended before it could be killed: {out!r} {err[-2000:]!r}"
    assert proc.returncode == -signal.SIGKILL
    done = latest(ck / "seed_0")[1]
    assert 15 <= done < 60  # completed work survived the kill
    resumed = Vec2Vec(checkpoint_dir=ck, **params, **SMALL).fit(X, Y)
    ref = Vec2Vec(**params, **SMALL).fit(X, Y)
    assert resumed.steps_done_ == ref.steps_done_ == 60
    np.testing.assert_allclose(resumed.generator_, ref.generator_, rtol=0, atol=1e-5)
    np.testing.assert_allclose(resumed.transform(X), ref.transform(X), rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------
def test_nan_loss_rolls_back_and_lowers_lr(monkeypatch):
    import translate.vec2vec.estimator as est

    # snapshots every 10 steps instead of 50: the same rollback in 20 steps, not 70
    monkeypatch.setattr(est, "SNAPSHOT_EVERY", 10)
    X, Y, _ = make_data()
    m = Vec2Vec(steps=20, lr=1e-3, **SMALL)
    hook = Hook(nan_at={12}).inject(monkeypatch)
    m.fit(X, Y, callbacks=[hook])
    events = [e for e in m.history_ if e.get("event") == "rollback"]
    assert len(events) == 1
    ev = events[0]
    assert ev["step"] == 12 and ev["to_step"] == 10 and ev["lr"] == pytest.approx(5e-4)
    assert ev["losses"]["cycle"] == "nan"
    assert m.steps_done_ == 20 and np.isfinite(m.transform(X)).all()
    assert m.history_[-2]["lr"] == pytest.approx(5e-4)


def test_repeated_divergence_raises_with_step_and_losses(monkeypatch):
    X, Y, _ = make_data()
    m = Vec2Vec(steps=30, max_retries=2, **SMALL)
    hook = Hook(nan_at={12}, nan_times=10**6).inject(monkeypatch)
    with pytest.raises(TrainingDivergedError, match=r"diverged at step 12.*cycle=nan.*after 2 rollbacks"):
        m.fit(X, Y, callbacks=[hook])
    assert hook.injected == 3  # the first failure and two retries


def test_huge_learning_rate_is_caught():
    """A real blow-up (no injection): either rolled back and recovered, or a clear error."""
    X, Y, _ = make_data()
    m = Vec2Vec(steps=40, lr=1e8, max_grad_norm=1e30, **SMALL)
    try:
        m.fit(X, Y)
    except TrainingDivergedError as exc:
        assert "diverged at step" in str(exc)
    else:
        assert any(e.get("event") == "rollback" for e in m.history_)
        assert np.isfinite(m.transform(X)).all()


# ---------------------------------------------------------------------------
class _Linear:
    """A fitted 'translator' known in closed form: x -> x Q^T + b."""

    def __init__(self, Q, b):
        self.Q, self.b = Q, b

    def transform(self, X):
        return np.asarray(X) @ self.Q.T + self.b


@pytest.mark.parametrize("cls", [Vec2Vec, CycleGAN])
def test_init_from_translator_reproduces_it(cls, tmp_path):
    X, Y, Q = make_data(n=200)
    init = _Linear(Q, Y.mean(0))
    m = cls(steps=0, init=init, denoise=False, **SMALL).fit(X, Y)  # initialisation only
    A, B = m.transform(X), init.transform(X)
    A, B = A - A.mean(0), B - B.mean(0)
    cos = (A * B).sum(1) / np.linalg.norm(A, axis=1) / np.linalg.norm(B, axis=1)
    assert cos.min() > 0.999
    # and the inverse direction is its pseudo-inverse
    Yc = (X - m.mean_x_) @ Q.T + m.mean_y_  # B-space rows centred as the model centres them
    back, Xc = m.inverse_transform(Yc) - m.mean_x_, X - m.mean_x_
    cos = (back * Xc).sum(1) / np.linalg.norm(back, axis=1) / np.linalg.norm(Xc, axis=1)
    assert cos.min() > 0.99
    # a short adversarial fine-tuning keeps the anchored translation
    m2 = cls(steps=20, init=init, denoise=False, **SMALL).fit(X, Y)
    A = m2.transform(X) - m2.transform(X).mean(0)
    cos = (A * B).sum(1) / np.linalg.norm(A, axis=1) / np.linalg.norm(B, axis=1)
    assert cos.mean() > 0.9
    assert m2.get_params()["init"] is init  # the parameter as given (scikit-learn's contract)
    m2.save(tmp_path / "m2")  # the file records the translator by class name only
    loaded = translate.load(tmp_path / "m2")
    assert loaded.get_params()["init"] == "translator:_Linear"
    np.testing.assert_array_equal(loaded.transform(X), m2.transform(X))
    with pytest.raises(ValueError, match="by name only"):
        loaded.fit(X, Y)


def test_wiener_filter_identifies_noise_and_denoises():
    """x = s + σ_a n, y = s W + σ_b n' (W 6 -> 9, orthonormal rows): the noise
    variances are recovered from unpaired samples, in both directions, and the
    filtered map is closer (cosine) to the noise-free targets."""
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(9, 6)))
    W, scales = Q.T, np.linspace(0.3, 2.0, 6)
    X = rng.normal(size=(20000, 6)) * scales + 0.3 * rng.normal(size=(20000, 6))
    Y = (rng.normal(size=(20000, 6)) * scales) @ W + 0.2 * rng.normal(size=(20000, 9))
    noise = noise_variances(X, Y, W)
    np.testing.assert_allclose(noise, [0.09, 0.04], rtol=0.1)
    np.testing.assert_allclose(noise_variances(Y, X, W.T), [0.04, 0.09], rtol=0.1)  # A's null space identifies σ
    F = shrink_filter(X, noise[0])
    S = rng.normal(size=(2000, 6)) * scales
    Xt, Yt = S + 0.3 * rng.normal(size=S.shape), S @ W

    def cos(a, b):
        return float(np.mean((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))

    assert cos(Xt @ F @ W, Yt) > cos(Xt @ W, Yt) + 0.002
    # not identifiable: equal widths and a full-rank map
    assert noise_variances(X, X, np.eye(6)) is None


def test_denoise_filters_are_state():
    X, Y, _ = make_data()
    off = Vec2Vec(steps=3, denoise=False, **SMALL).fit(X, Y)
    assert off.noise_ is None
    np.testing.assert_array_equal(off.denoise_a_, np.eye(X.shape[1], dtype=np.float32))
    on = Vec2Vec(steps=3, **SMALL).fit(X, Y)
    np.testing.assert_array_equal(on.generator_, off.generator_)  # training is the same
    assert on.noise_ is None or len(on.noise_) == 2


def test_nn_cycle_rate_bijection_and_collapse():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 5)).astype(np.float32)
    P = rng.permutation(5)
    Y = X[:, P]
    inv = np.argsort(P)
    assert nn_cycle_rate(lambda A: A[:, P], lambda B: B[:, inv], X, Y) == 1.0
    const = lambda A: np.tile(np.linspace(1, 2, 5, dtype=np.float32), (len(A), 1))  # noqa: E731
    assert nn_cycle_rate(const, const, X, Y) <= 0.05


# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(steps=-1), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(lr=0.0), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(batch_size=1), "batch_size"),
        (dict(hidden=0), "hidden"),
        (dict(latent_dim=0), "latent_dim"),
        (dict(n_seeds=0), "n_seeds"),
        (dict(weights={"cycles": 1.0}), "weights"),
        (dict(weights={"adv": -1.0}), "weights"),
        (dict(weights=[1, 2]), "weights"),
        (dict(init="procrustes"), "init"),
        (dict(init=object()), "init"),
        (dict(init=_Linear(np.eye(3), 0.0)), "init"),  # wrong widths for the data
        (dict(checkpoint_every=0), "checkpoint_every"),
        (dict(denoise=1), "denoise"),
    ],
)
def test_bad_parameters(kw, match):
    X, Y, _ = make_data()
    params = dict(SMALL, steps=2)
    params.update(kw)
    with pytest.raises(ValueError, match=match):
        Vec2Vec(**params).fit(X, Y)


@pytest.mark.parametrize(
    "X, Y, match",
    [
        (np.full((10, 3), np.nan, np.float32), np.ones((10, 3), np.float32), "X"),
        (np.ones((10, 3), np.float32), np.ones((10,), np.float32), "Y"),
        (np.ones((1, 3), np.float32), np.ones((10, 3), np.float32), "X"),
        (np.ones((10, 3), np.int64), np.ones((10, 3), np.float32), "X"),
        ("abc", np.ones((10, 3), np.float32), "X"),
    ],
)
def test_bad_data(X, Y, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Vec2Vec(steps=2, **SMALL).fit(X, Y)


def test_unfitted_and_tampered_model(tmp_path):
    with pytest.raises(ValueError, match="not fitted"):
        Vec2Vec().transform(np.ones((2, 3), np.float32))
    X, Y, _ = make_data()
    m = Vec2Vec(steps=2, **SMALL).fit(X, Y)
    m.save(tmp_path / "m")
    meta, tensors, _ = load_artifact(tmp_path / "m", "Vec2Vec")
    tensors["generator_"] = tensors["generator_"][:-1]  # consistent file, wrong architecture
    save_artifact(tmp_path / "bad", "Vec2Vec", meta, tensors)
    with pytest.raises(ValueError, match="generator_"):
        translate.load(tmp_path / "bad")
    with pytest.raises(ValueError):
        translate.CycleGAN.load(tmp_path / "m")  # a Vec2Vec is not a CycleGAN


# ---------------------------------------------------------------------------
def test_sklearn_contract_clone_and_nested_params():
    from sklearn.base import clone

    for cls in (Vec2Vec, CycleGAN):
        m = cls(steps=7, seed=3, weights={"cycle": 5.0}, checkpoint_dir=Path("ck"))
        c = clone(m)
        assert type(c) is cls and c is not m and repr(c.get_params()) == repr(m.get_params())
    iso = translate.Isometric(seed=4)
    m = Vec2Vec(init=iso)
    p = m.get_params()
    assert p["init"] is iso and p["init__seed"] == 4 and "init__seed" not in m.get_params(deep=False)
    m.set_params(init__seed=9, steps=11)
    assert iso.seed == 9 and m.steps == 11
    c = clone(m)
    assert c.init is not iso and c.init.seed == 9  # an unfitted copy, as scikit-learn clones do
    with pytest.raises(ValueError, match="no parameter"):
        m.set_params(stepz=1)
    with pytest.raises(ValueError, match="init__ parameters given, but init is None"):
        Vec2Vec().set_params(init__seed=1)
    assert "init=Isometric(" in repr(m) and "init__" not in repr(m)  # repr shows the top-level parameters


def test_unfitted_init_translator_is_fitted_first():
    X, Y, Q = make_data(n=200)
    init = translate.Procrustes()  # paired oracle: here X and Y rows are not pairs, but it fits and gives a linear map
    m = Vec2Vec(steps=0, init=init, denoise=False, **SMALL).fit(X, Y[:200])
    assert not hasattr(init, "d_in_")  # the parameter stays as given; a copy was fitted
    ref = translate.Procrustes().fit(X, Y[:200])
    A, B = m.transform(X), ref.transform(X)
    A, B = A - A.mean(0), B - B.mean(0)
    cos = (A * B).sum(1) / np.linalg.norm(A, axis=1) / np.linalg.norm(B, axis=1)
    assert cos.min() > 0.999


@pytest.mark.slow
def test_callbacks_see_every_step_and_can_stop_training(tmp_path):
    X, Y, _ = make_data()
    seen = []

    def cb(record):
        seen.append(record)
        if record.get("step") == 7 and "event" not in record:
            Z = m.transform(X[:4])  # the generators being trained, usable inside
            assert Z.shape == (4, Y.shape[1]) and np.isfinite(Z).all()
            raise StopTraining

    m = Vec2Vec(steps=30, n_seeds=2, checkpoint_dir=tmp_path, checkpoint_every=5, **SMALL)
    m.fit(X, Y, callbacks=[cb])
    steps = [r["step"] for r in seen]
    assert steps == list(range(1, 8)) and all(r["seed"] == 0 for r in seen)
    assert {"loss", "disc", "adv", "cycle", "vsp", "rec", "latent", "grad_g", "grad_d", "lr"} <= set(seen[0])
    assert m.steps_done_ == 7 and len(m.seed_scores_) == 1  # the second seed was skipped
    assert np.isfinite(m.transform(X)).all()
    assert latest(tmp_path / "seed_0")[1] == 7  # the state reached is checkpointed
    done = Vec2Vec(steps=30, n_seeds=2, checkpoint_dir=tmp_path, checkpoint_every=5, **SMALL).fit(X, Y)  # trains on from it
    ref = Vec2Vec(steps=30, n_seeds=2, **SMALL).fit(X, Y)
    np.testing.assert_allclose(done.generator_, ref.generator_, rtol=0, atol=1e-5)


# -- issue 21: selection over training, the Sinkhorn matching term -------------------------
def test_sinkhorn_targets_recover_a_permutation():
    """Between a batch and a shuffled, slightly noisy copy of it, the sharp entropic plan is
    the permutation: every row's barycentric target is its own copy."""
    g = torch.Generator().manual_seed(0)
    src = torch.randn(64, 8, generator=g)
    perm = torch.randperm(64, generator=g)
    tgt = src[perm] + 0.01 * torch.randn(64, 8, generator=g)
    t = networks.sinkhorn_targets(src, tgt, eps=0.003, iters=50)
    np.testing.assert_allclose(t.numpy(), tgt[torch.argsort(perm)].numpy(), atol=1e-3)
    assert not t.requires_grad


@pytest.mark.parametrize("ema", [0.0, 0.5])
def test_selection_keeps_the_initial_map_when_training_spoils_it(ema):
    """Started from the exact map, adversarial training at a huge rate spoils it; selection by
    the unpaired criterion (step 0 included) keeps the start, and says so (with the average: the
    start's cycle hits significantly more than the end's); without selection the last step is kept."""
    from translate.vec2vec.selection import SELECT_Z

    X, Y, Q = make_data(n=200)
    init = _Linear(Q, Y.mean(0))
    spoil = dict(steps=20, init=init, denoise=False, lr=5e-2, weights={"adv": 50.0, "anchor": 0.0, "match": 0.0},
                 ema=ema, **SMALL)
    start = Vec2Vec(**{**spoil, "steps": 0}).fit(X, Y)
    kept = Vec2Vec(select_every=5, **spoil).fit(X, Y)
    last = Vec2Vec(select_every=0, **spoil).fit(X, Y)
    assert last.selected_step_ == 20 and last.seed_scores_[0] < start.seed_scores_[0]
    assert kept.selected_step_ == 0 and kept.seed_scores_ == start.seed_scores_
    end_z = kept.history_[-1]["end_z"][0]
    assert end_z is None if ema == 0 else end_z >= SELECT_Z
    np.testing.assert_allclose(kept.transform(X), start.transform(X), atol=1e-5)
    assert Vec2Vec(steps=3, **SMALL).fit(X, Y).selected_step_ == 3  # without init: no selection by default


def test_the_average_at_the_end_is_kept_unless_significantly_worse():
    """With the average (default ``ema``) the end is kept although its cycle rate is lower than the
    start's, the difference being within chance (McNemar's z under SELECT_Z); without the average the
    same selection keeps the higher rate (the start)."""
    from translate.vec2vec.selection import SELECT_Z

    X, Y, Q = make_data(n=200)
    init = _Linear(Q, Y.mean(0))
    run = dict(steps=20, init=init, denoise=False, lr=5e-2, weights={"adv": 50.0, "anchor": 0.0, "match": 0.0},
               select_every=5, **SMALL)
    start = Vec2Vec(**{**run, "steps": 0}).fit(X, Y)
    end = Vec2Vec(**run).fit(X, Y)
    end_z = end.history_[-1]["end_z"][0]
    assert end.selected_step_ == 20 and end.seed_scores_[0] < start.seed_scores_[0] and 0 < end_z < SELECT_Z
    assert Vec2Vec(**{**run, "ema": 0}).fit(X, Y).selected_step_ == 0


def test_mcnemar_z_by_hand():
    """b = 5 rows only the reference hits, c = 1 only the new state: z = (5 - 1) / sqrt(6)."""
    from translate.vec2vec.selection import mcnemar_z

    ref = np.array([1, 1, 1, 1, 1, 0, 1, 1, 0, 0], bool)
    new = np.array([0, 0, 0, 0, 0, 1, 1, 1, 0, 0], bool)
    assert mcnemar_z(ref, new) == pytest.approx(4 / np.sqrt(6), rel=1e-12)
    assert mcnemar_z(new, ref) == pytest.approx(-4 / np.sqrt(6), rel=1e-12)
    assert mcnemar_z(ref, ref) == 0.0
    with pytest.raises(ValueError, match="hits_new"):
        mcnemar_z(ref, new[:5])


def test_default_selection_with_the_average_is_start_against_end(monkeypatch):
    """With ``init`` and the weight average the default selection scores the starting map and the
    last step only (the average replaces a choice along the way); with ``ema=0``, every
    DEFAULT_SELECT_EVERY steps, as before the average existed."""
    from translate.vec2vec import estimator

    X, Y, Q = make_data(n=200)
    init = _Linear(Q, Y.mean(0))
    offered = []
    real = networks.BestState.offer

    def offer(self, gen, score, step, **kw):
        offered.append(step)
        return real(self, gen, score, step, **kw)

    monkeypatch.setattr(networks.BestState, "offer", offer)
    monkeypatch.setattr(estimator, "DEFAULT_SELECT_EVERY", 4)
    Vec2Vec(steps=10, init=init, denoise=False, **SMALL).fit(X, Y)
    assert offered == [0, 10]
    offered.clear()
    Vec2Vec(steps=10, init=init, denoise=False, ema=0, **SMALL).fit(X, Y)
    assert offered == [0, 4, 8, 10]


def test_resume_with_selection_equals_uninterrupted(tmp_path):
    """The kept state and its score are checkpointed with the run: an interrupted fit with
    selection and the matching term resumes to the same model and the same selected step."""
    X, Y, Q = make_data(n=200)
    init = _Linear(Q, Y.mean(0))
    params = dict(steps=24, init=init, denoise=False, select_every=4, checkpoint_every=10, seed=2, **SMALL)
    ref = Vec2Vec(**params).fit(X, Y)
    m = Vec2Vec(**{**params, "checkpoint_dir": tmp_path / "ck"})
    with pytest.raises(KeyboardInterrupt):
        m.fit(X, Y, callbacks=[Hook(raise_at=15)])
    r = Vec2Vec(**{**params, "checkpoint_dir": tmp_path / "ck"}).fit(X, Y)
    assert "match" in ref.history_[0] and r.selected_step_ == ref.selected_step_
    np.testing.assert_allclose(r.generator_, ref.generator_, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kw, match", [(dict(anchor_decay=1.5), "anchor_decay"), (dict(anchor_decay=-0.1), "anchor_decay"),
                                       (dict(select_every=-1), "select_every"), (dict(select_every=2.5), "select_every"),
                                       (dict(ema=1.0), "ema"), (dict(ema=-0.1), "ema"), (dict(ema=True), "ema")])
def test_bad_selection_and_anchor_parameters(kw, match):
    X, Y, _ = make_data()
    with pytest.raises(ValueError, match=match):
        Vec2Vec(steps=2, **kw, **SMALL).fit(X, Y)


def test_weight_average_is_the_moving_average_of_the_steps():
    """``ema=d`` keeps θ̄_N, with θ̄_0 the initial weights and θ̄_t = d·θ̄_{t-1} + (1 - d)·θ_t (Yazıcı et al.
    2019); the average does not change training (the raw trajectory is that of ``ema=0``, which keeps θ_N)."""
    X, Y, _ = make_data()
    seen = []

    def follow(record):  # called after each optimiser step: the raw weights θ_t
        if "event" not in record:
            seen.append(networks.flatten_params(est._gen_module).astype(np.float64))

    est = Vec2Vec(steps=12, ema=0.8, seed=3, **SMALL)
    est.fit(X, Y, callbacks=[follow])
    avg = Vec2Vec(steps=0, ema=0.8, seed=3, **SMALL).fit(X, Y).generator_.astype(np.float64)  # θ_0
    for theta in seen:
        avg = 0.8 * avg + 0.2 * theta
    assert len(seen) == 12
    np.testing.assert_allclose(est.generator_, avg, rtol=0, atol=1e-5)
    raw = Vec2Vec(steps=12, ema=0, seed=3, **SMALL).fit(X, Y)
    np.testing.assert_array_equal(raw.generator_, seen[-1].astype(np.float32))
    assert np.abs(est.generator_ - raw.generator_).max() > 1e-3
