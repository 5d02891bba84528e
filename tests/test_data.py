import hashlib
from pathlib import Path

import numpy as np
import pytest

import align.data as data
from align.data import embed_corpus, load_corpus, texts_hash

WORDNET = Path("/usr/share/wordnet/data.noun").is_file()
needs_wordnet = pytest.mark.skipif(not WORDNET, reason="wordnet-base is not installed (bash scripts/setup.sh)")


# --------------------------------------------------------------------------- corpus


def test_gloss_split_definition_and_examples():
    gloss = 'breathe with great difficulty, as when experiencing a strong emotion; "She choked with emotion"; "He choked"  \n'
    assert data._gloss_texts(gloss) == [
        "breathe with great difficulty, as when experiencing a strong emotion",
        "She choked with emotion",
        "He choked",
    ]
    # an attribution after the quote is dropped, quotes inside a definition are kept
    assert data._gloss_texts('a word like "the" used as a determiner; "to be or not to be" - Shakespeare') == [
        'a word like "the" used as a determiner',
        "to be or not to be",
    ]
    assert data._gloss_texts('carry out; "deliver an attack", "deliver a blow"; "just one" or "two more"') == [
        "carry out", "deliver an attack", "deliver a blow", "just one", "two more",
    ]


@pytest.mark.slow
@needs_wordnet
def test_wordnet_size_determinism_and_cleaning():
    texts = load_corpus("wordnet")
    assert len(texts) > 100_000
    assert len(set(texts)) == len(texts)
    assert all(len(t.split()) >= data.MIN_WORDS for t in texts)
    assert all(t == " ".join(t.split()) for t in texts[:5000])
    # the fixed order: this hash pins texts [0, 100) on every machine
    head = hashlib.sha256("\n".join(texts[:100]).encode()).hexdigest()
    assert head == WORDNET_HEAD_SHA256, (head, texts[:3])
    assert len(texts) == WORDNET_SIZE
    # slices are views of the same order
    assert load_corpus("wordnet", n=10, start=5) == texts[5:15]
    assert load_corpus(n=3) == texts[:3]
    assert load_corpus(start=len(texts) - 2) == texts[-2:]


# measured with wordnet-base 3.0 (Debian); see align/data.py for the ordering rule
WORDNET_SIZE = 154951
WORDNET_HEAD_SHA256 = "4b158a14b4f714b74b0d1695bf6803101d34a95aa78daa79659115bf6b0b0cf9"


def test_order_is_seeded_sort_not_input_order():
    a = data._order(["one two three", "four five six", "seven eight nine", "  one   two three "], seed=0)
    b = data._order(["seven eight nine", "one two three", "four five six"], seed=0)
    assert a == b and len(a) == 3
    assert data._order(["a b", "x y z w"], seed=0) == ["x y z w"]  # short text dropped


def test_text_file(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("first  text here\n  second text\nthird\n")
    assert load_corpus(str(f)) == ["first text here", "second text", "third"]
    assert load_corpus(f, n=1, start=1) == ["second text"]


def test_text_file_blank_line(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("first text\n\nthird text\n")
    with pytest.raises(ValueError, match="blank line at line 2"):
        load_corpus(str(f))
    g = tmp_path / "empty.txt"
    g.write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_corpus(str(g))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="no-such-corpus"), "wordnet"),
        (dict(name=3), "corpus name"),
        (dict(name="TEXTFILE", n=0), "n must be >= 1"),
        (dict(name="TEXTFILE", start=-1), "start must be >= 0"),
        (dict(name="TEXTFILE", n=5), "n=5 with start=0"),
        (dict(name="TEXTFILE", start=2), "start=2 is beyond"),
    ],
)
def test_load_corpus_bad_args(tmp_path, kwargs, match):
    f = tmp_path / "t.txt"
    f.write_text("one\ntwo\n")
    if kwargs.get("name") == "TEXTFILE":
        kwargs["name"] = str(f)
    with pytest.raises(ValueError, match=match):
        load_corpus(**kwargs)


def test_missing_wordnet_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "WORDNET_DIR", tmp_path)
    with pytest.raises(ValueError, match="apt-get install wordnet-base"):
        load_corpus("wordnet")


# --------------------------------------------------------------------------- cache


class CountingEncoder:
    """Deterministic fake encoder: each text -> a vector from its hash; counts work done."""

    def __init__(self, dim=6, fail_after_calls=None):
        self.dim = dim
        self.calls = 0
        self.texts = 0
        self.fail_after_calls = fail_after_calls

    @staticmethod
    def vector(text, dim):
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)

    def __call__(self, texts):
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        self.texts += len(texts)
        return np.stack([self.vector(t, self.dim) for t in texts])


TEXTS = [f"text number {i} of the test" for i in range(22)]


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(data, "CHUNK_SIZE", 4)


def _expected(texts, dim=6):
    return np.stack([CountingEncoder.vector(t, dim) for t in texts])


def test_second_call_computes_nothing(tmp_path, small_chunks):
    enc = CountingEncoder()
    a = embed_corpus(enc, texts=TEXTS, cache_dir=tmp_path, cache_key="fake", progress=False)
    assert a.dtype == np.float32 and a.shape == (22, 6)
    np.testing.assert_array_equal(a, _expected(TEXTS))
    assert enc.texts == 22
    enc2 = CountingEncoder()
    b = embed_corpus(enc2, texts=TEXTS, cache_dir=tmp_path, cache_key="fake", progress=False)
    assert enc2.calls == 0
    np.testing.assert_array_equal(a, b)
    # chunks are on disk, one per grid cell of 4 texts
    assert len(list((tmp_path / "embeddings" / "fake").glob("*.safetensors"))) == 6


def test_cached_only_reads_the_cache_and_never_embeds(tmp_path, small_chunks):
    enc = CountingEncoder()
    embed_corpus(enc, texts=TEXTS, n=8, cache_dir=tmp_path, cache_key="fake", progress=False)
    enc2 = CountingEncoder()
    got = embed_corpus(enc2, texts=TEXTS, n=6, start=1, cache_dir=tmp_path, cache_key="fake", progress=False,
                       cached_only=True)
    np.testing.assert_array_equal(got, _expected(TEXTS[1:7]))
    with pytest.raises(ValueError, match=r"cached_only=True but fake embeddings of texts \[8, 10\)"):
        embed_corpus(enc2, texts=TEXTS, n=10, cache_dir=tmp_path, cache_key="fake", progress=False,
                     cached_only=True)
    assert enc2.calls == 0


def test_resume_after_interruption(tmp_path, small_chunks):
    # batch_size >= chunk size: one encoder call per chunk; dies while encoding the 3rd chunk
    enc = CountingEncoder(fail_after_calls=2)
    with pytest.raises(KeyboardInterrupt):
        embed_corpus(enc, texts=TEXTS, cache_dir=tmp_path, cache_key="fake", batch_size=4, progress=False)
    assert enc.texts == 8
    enc2 = CountingEncoder()
    out = embed_corpus(enc2, texts=TEXTS, cache_dir=tmp_path, cache_key="fake", batch_size=4, progress=False)
    assert enc2.texts == 22 - 8  # only the missing chunks
    np.testing.assert_array_equal(out, _expected(TEXTS))
    assert not list((tmp_path / "embeddings" / "fake").glob(".*tmp"))  # no temp leftovers


def test_overlapping_slices_share_chunks(tmp_path, small_chunks):
    f = tmp_path / "corpus.txt"
    f.write_text("\n".join(TEXTS) + "\n")
    enc = CountingEncoder()
    a = embed_corpus(enc, corpus=str(f), n=10, cache_dir=tmp_path, cache_key="fake", progress=False)
    np.testing.assert_array_equal(a, _expected(TEXTS[:10]))
    enc.texts = 0
    b = embed_corpus(enc, corpus=str(f), start=4, n=10, cache_dir=tmp_path, cache_key="fake", progress=False)
    np.testing.assert_array_equal(b, _expected(TEXTS[4:14]))
    # cells [4,8) and [8,12) are full cells; [8,12) was only partly done before ([8,10)), and [12,14) is new
    assert enc.texts == 4 + 2
    enc.texts = 0
    c = embed_corpus(enc, corpus=str(f), start=5, n=2, cache_dir=tmp_path, cache_key="fake", progress=False)
    assert enc.texts == 0  # sliced from the cached full cell [4, 8)
    np.testing.assert_array_equal(c, _expected(TEXTS[5:7]))


def test_slice_of_given_texts(tmp_path, small_chunks):
    enc = CountingEncoder()
    out = embed_corpus(enc, texts=TEXTS, start=3, n=6, cache_dir=tmp_path, cache_key="fake", progress=False)
    np.testing.assert_array_equal(out, _expected(TEXTS[3:9]))
    with pytest.raises(ValueError, match="texts has only 22"):
        embed_corpus(enc, texts=TEXTS, start=20, n=6, cache_dir=tmp_path, cache_key="fake", progress=False)


def test_cache_keyed_by_encoder_and_texts(tmp_path, small_chunks):
    enc = CountingEncoder()
    embed_corpus(enc, texts=TEXTS[:4], cache_dir=tmp_path, cache_key="fake", progress=False)
    embed_corpus(enc, texts=TEXTS[:4], cache_dir=tmp_path, cache_key="other", progress=False)
    assert enc.texts == 8  # another encoder key recomputes
    embed_corpus(enc, texts=TEXTS[1:5], cache_dir=tmp_path, cache_key="fake", progress=False)
    assert enc.texts == 12  # other texts recompute


def test_corrupt_chunk_is_recomputed(tmp_path, small_chunks):
    enc = CountingEncoder()
    embed_corpus(enc, texts=TEXTS[:8], cache_dir=tmp_path, cache_key="fake", progress=False)
    chunk = tmp_path / "embeddings" / "fake" / f"{texts_hash(TEXTS[:4])}.safetensors"
    chunk.write_bytes(chunk.read_bytes()[:20])
    enc.texts = 0
    out = embed_corpus(enc, texts=TEXTS[:8], cache_dir=tmp_path, cache_key="fake", progress=False)
    assert enc.texts == 4
    np.testing.assert_array_equal(out, _expected(TEXTS[:8]))


def test_normalize_and_env_cache_dir(tmp_path, monkeypatch, small_chunks):
    monkeypatch.setenv("REPTRANS_CACHE", str(tmp_path / "envcache"))
    out = embed_corpus(CountingEncoder(), texts=TEXTS[:5], cache_key="fake", normalize=True, progress=False)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
    assert (tmp_path / "envcache" / "embeddings" / "fake").is_dir()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(encoder="no-such-encoder", texts=["a b c"]), "encoder must be one of"),
        (dict(encoder=CountingEncoder(), texts=["a b c"]), "cache_key"),
        (dict(encoder=CountingEncoder(), cache_key="f", texts=[]), "texts is empty"),
        (dict(encoder=CountingEncoder(), cache_key="f", texts=["ok text", "  "]), r"texts\[1\]"),
        (dict(encoder=CountingEncoder(), cache_key="f", texts="a single string"), "texts must be a list"),
        (dict(encoder=CountingEncoder(), cache_key="f", texts=["a b c"], batch_size=0), "batch_size"),
        (dict(encoder=42, texts=["a b c"]), "encoder must be"),
        (dict(encoder=CountingEncoder(), cache_key="f", corpus="nope"), "wordnet"),
    ],
)
def test_embed_corpus_bad_args(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        embed_corpus(cache_dir=tmp_path, progress=False, **kwargs)


def test_encoder_with_wrong_row_count(tmp_path):
    with pytest.raises(ValueError, match="rows"):
        embed_corpus(lambda t: np.zeros((1, 3), np.float32) + 1, texts=["a b", "c d"], cache_key="bad",
                     cache_dir=tmp_path, progress=False)


@needs_wordnet
@pytest.mark.slow
def test_named_encoder_on_wordnet_is_cached(tmp_path, monkeypatch):
    import align.encoders as encoders

    calls = []
    real = encoders.encode

    def counting(texts, **kw):
        calls.append(len(texts))
        return real(texts, **kw)

    monkeypatch.setattr(encoders, "encode", counting)
    a = embed_corpus("minilm", corpus="wordnet", n=24, start=100, cache_dir=tmp_path, batch_size=8, progress=False)
    assert a.shape == (24, 384) and sum(calls) == 24
    b = embed_corpus("minilm", corpus="wordnet", n=24, start=100, cache_dir=tmp_path, progress=False)
    assert sum(calls) == 24  # nothing computed the second time
    np.testing.assert_array_equal(a, b)
    direct = real(load_corpus("wordnet", n=24, start=100), encoder="minilm", progress=False)
    np.testing.assert_allclose(a, direct, atol=1e-5)
