import json
import pickle

import numpy as np
import pytest
import torch

from align.checkpoint import CONFIG_NAME, WEIGHTS_NAME, atomic_write_bytes, load_artifact, save_artifact


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "art"
    save_artifact(path, "Thing", {"alpha": 1.5, "names": ["a"]}, {"W": np.eye(3, dtype=np.float32), "b": torch.ones(2)})
    return path


def test_round_trip(saved):
    config, tensors, kind = load_artifact(saved, "Thing")
    assert kind == "Thing" and config == {"alpha": 1.5, "names": ["a"]}
    np.testing.assert_array_equal(tensors["W"], np.eye(3, dtype=np.float32))
    assert tensors["b"].dtype == np.float32 and tensors["b"].tolist() == [1.0, 1.0]


def test_scalars_keep_their_shape(tmp_path):
    save_artifact(tmp_path / "s", "Thing", {}, {"scale": np.float32(2.5), "t": torch.tensor(1.0)})
    _, tensors, _ = load_artifact(tmp_path / "s", "Thing")
    assert tensors["scale"].shape == () and tensors["t"].shape == () and float(tensors["scale"]) == 2.5


def test_numpy_scalars_in_config_save_as_numbers(tmp_path):
    # parameter checks accept numpy scalars (np.int64 is an Integral), so a config can hold them
    cfg = {"n": np.int64(5), "eps": np.float32(0.25), "flag": np.bool_(True)}
    save_artifact(tmp_path / "c", "Thing", cfg, {"W": np.eye(2, dtype=np.float32)})
    config, _, _ = load_artifact(tmp_path / "c", "Thing")
    assert config == {"n": 5, "eps": 0.25, "flag": True}
    assert type(config["n"]) is int and type(config["eps"]) is float
    with pytest.raises(TypeError, match="config value of type object is not JSON-serialisable"):
        save_artifact(tmp_path / "d", "Thing", {"x": object()}, {"W": np.eye(2, dtype=np.float32)})


def test_other_kind_refused(saved):
    with pytest.raises(ValueError, match="holds a 'Thing', not a Other"):
        load_artifact(saved, "Other")


def test_pickle_in_place_of_weights_is_refused_and_never_unpickled(saved, monkeypatch):
    (saved / WEIGHTS_NAME).write_bytes(pickle.dumps({"W": np.eye(3)}))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_artifact(saved, "Thing")


def test_truncated_weights_refused(saved):
    raw = (saved / WEIGHTS_NAME).read_bytes()
    (saved / WEIGHTS_NAME).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_artifact(saved, "Thing")


def test_flipped_bytes_in_tensor_data_refused(saved):
    raw = bytearray((saved / WEIGHTS_NAME).read_bytes())
    raw[-3] ^= 0x01  # inside the last tensor's data: still a valid safetensors file
    (saved / WEIGHTS_NAME).write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="sha256"):
        load_artifact(saved, "Thing")


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda m: m.update(evil="x"), "unexpected keys"),
        (lambda m: m.update(format_version=99), "format_version"),
        (lambda m: m.update(format="other"), "not a reptrans artefact"),
        (lambda m: m["tensors"]["W"].update(shape=[4, 4]), "config says"),
        (lambda m: m["tensors"].pop("b"), "do not match"),
        (lambda m: m.update(config=[1, 2]), "'config' must be an object"),
    ],
)
def test_tampered_config_refused(saved, mutate, match):
    meta = json.loads((saved / CONFIG_NAME).read_text())
    mutate(meta)
    (saved / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=match):
        load_artifact(saved, "Thing")


def test_unexpected_config_keys_and_missing_files(saved, tmp_path):
    with pytest.raises(ValueError, match="unexpected config keys"):
        load_artifact(saved, "Thing", expected_config_keys=["alpha"])
    (saved / CONFIG_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_artifact(saved, "Thing")
    with pytest.raises(ValueError, match="not a saved reptrans artefact"):
        load_artifact(tmp_path / "nowhere", "Thing")
    (tmp_path / "half").mkdir()
    with pytest.raises(ValueError, match="missing config.json"):
        load_artifact(tmp_path / "half", "Thing")


def test_nan_weights_refused(tmp_path):
    save_artifact(tmp_path / "n", "Thing", {}, {"W": np.array([np.nan], dtype=np.float32)})
    with pytest.raises(ValueError, match="NaN or Inf"):
        load_artifact(tmp_path / "n", "Thing")


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")
    import os

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temp file left behind
