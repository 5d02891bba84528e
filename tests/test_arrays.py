"""align.arrays: reading and writing .npy, .safetensors and FAISS flat indexes."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from align.arrays import ArrayWriter, check_output_path, open_array, read_array, write_array


@pytest.fixture
def X():
    return np.random.default_rng(0).standard_normal((50, 6)).astype(np.float32)


def _err(excinfo) -> str:
    return str(excinfo.value)


# -- reading -----------------------------------------------------------------


def test_npy_is_memory_mapped(tmp_path, X):
    p = tmp_path / "x.npy"
    np.save(p, X)
    out = read_array(p, "--source")
    assert isinstance(out, np.memmap) and np.array_equal(out, X)
    f = open_array(p, "--source")
    assert f.shape == (50, 6) and f.format == "npy"
    blocks = list(f.chunks(16))
    assert [s for s, _ in blocks] == [0, 16, 32, 48] and np.array_equal(np.concatenate([b for _, b in blocks]), X)


def test_float16_is_widened(tmp_path, X):
    p = tmp_path / "x.npy"
    np.save(p, X.astype(np.float16))
    out = read_array(p)
    assert out.dtype == np.float32 and np.allclose(out, X, atol=1e-2)


def test_safetensors_one_tensor_and_keys(tmp_path, X):
    from safetensors.numpy import save_file

    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    save_file({"emb": X}, str(one))
    save_file({"emb": X, "other": X[:, :3].copy()}, str(two))
    out = read_array(one, "--source")
    assert isinstance(out, np.memmap) and np.array_equal(out, X)
    with pytest.raises(ValueError) as e:
        read_array(two, "--source", key_option="--source-key")
    assert _err(e).startswith("--source:") and "--source-key" in _err(e) and "emb, other" in _err(e)
    assert np.array_equal(read_array(two, "--source", key="other"), X[:, :3])
    with pytest.raises(ValueError, match=r"^--source-key: .*no tensor 'nope' \(keys: emb, other\)"):
        read_array(two, "--source", key="nope", key_option="--source-key")


def test_safetensors_bfloat16(tmp_path, X):
    import torch
    from safetensors.torch import save_file

    p = tmp_path / "b.safetensors"
    save_file({"e": torch.from_numpy(X).to(torch.bfloat16)}, str(p))
    f = open_array(p)
    assert f.dtype == "bfloat16"
    out = f.read()
    assert out.dtype == np.float32 and np.allclose(out, X, atol=2e-2)
    assert np.array_equal(f.rows(10, 20), out[10:20])


@pytest.mark.parametrize("cls,metric", [("IndexFlatIP", "ip"), ("IndexFlatL2", "l2")])
def test_faiss_flat_index(tmp_path, X, cls, metric):
    faiss = pytest.importorskip("faiss")
    index = getattr(faiss, cls)(X.shape[1])
    index.add(X)
    p = tmp_path / "x.faiss"
    faiss.write_index(index, str(p))
    f = open_array(p, "--input")
    assert f.shape == X.shape and f.faiss_metric == metric
    assert np.array_equal(f.read(), X)
    assert np.array_equal(np.concatenate([b for _, b in f.chunks(7)]), X)
    # written back as the same index type
    q = tmp_path / "y.index"
    write_array(q, X * 2, faiss_metric=f.faiss_metric)
    assert type(faiss.read_index(str(q))).__name__ == cls
    assert np.array_equal(read_array(q), X * 2)


def test_non_flat_faiss_index_is_refused(tmp_path, X):
    faiss = pytest.importorskip("faiss")
    index = faiss.IndexHNSWFlat(X.shape[1], 8)
    index.add(X)
    p = tmp_path / "h.faiss"
    faiss.write_index(index, str(p))
    with pytest.raises(ValueError, match=r"^--source: .*not a FAISS flat index"):
        open_array(p, "--source")


def test_truncated_faiss_index(tmp_path, X):
    faiss = pytest.importorskip("faiss")
    index = faiss.IndexFlatIP(X.shape[1])
    index.add(X)
    p = tmp_path / "t.faiss"
    faiss.write_index(index, str(p))
    p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(ValueError, match=r"^--source: .*truncated or corrupt FAISS index"):
        open_array(p, "--source")


@pytest.mark.parametrize("case,expect", [
    ("empty", "is empty (0 bytes)"),
    ("truncated", "is truncated"),
    ("bad_magic", "not a valid .npy"),
    ("object", "pickled (object) data"),
    ("strings", "holds text"),
    ("ints", "integer dtype"),
    ("one_d", "must hold a 2-D array"),
    ("no_rows", "empty array"),
])
def test_bad_npy(tmp_path, X, case, expect):
    p = tmp_path / "bad.npy"
    if case == "empty":
        p.write_bytes(b"")
    elif case == "truncated":
        np.save(p, X)
        p.write_bytes(p.read_bytes()[:300])
    elif case == "bad_magic":
        p.write_bytes(b"not an array at all")
    elif case == "object":
        np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif case == "strings":
        np.save(p, np.array([["a", "b"]]))
    elif case == "ints":
        np.save(p, np.ones((3, 2), dtype=np.int64))
    elif case == "one_d":
        np.save(p, X[:, 0])
    elif case == "no_rows":
        np.save(p, X[:0])
    with pytest.raises(ValueError) as e:
        open_array(p, "--target")
    assert _err(e).startswith("--target:") and expect in _err(e)


@pytest.mark.parametrize("name,expect", [("x.csv", "np.loadtxt"), ("x.npz", "np.load('x.npz')"), ("x", "no extension"),
                                         ("x.pkl", "never loaded")])
def test_wrong_extension(tmp_path, name, expect):
    p = tmp_path / name
    p.write_text("1,2\n3,4\n")
    with pytest.raises(ValueError) as e:
        open_array(p, "--source")
    assert _err(e).startswith("--source:") and ".npy, .safetensors" in _err(e) and expect in _err(e)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ValueError, match=r"^A: no such file"):
        open_array(tmp_path / "none.npy", "A")
    (tmp_path / "d.npy").mkdir()
    with pytest.raises(ValueError, match=r"^A: .*is a folder"):
        open_array(tmp_path / "d.npy", "A")


def test_key_on_npy_is_refused(tmp_path, X):
    p = tmp_path / "x.npy"
    np.save(p, X)
    with pytest.raises(ValueError, match=r"^--key: .*one unnamed array"):
        open_array(p, "--input", key="emb")


@pytest.mark.parametrize("case", ["short", "header", "data"])
def test_bad_safetensors(tmp_path, X, case):
    from safetensors.numpy import save_file

    p = tmp_path / "x.safetensors"
    save_file({"e": X}, str(p))
    raw = p.read_bytes()
    if case == "short":
        p.write_bytes(raw[:5])
    elif case == "header":
        p.write_bytes(struct.pack("<Q", 4) + b"nope" + raw[8:])
    else:
        p.write_bytes(raw[:-100])
    with pytest.raises(ValueError, match=r"^--source: "):
        open_array(p, "--source")


def test_safetensors_string_like_dtype(tmp_path):
    header = json.dumps({"e": {"dtype": "I32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
    p = tmp_path / "i.safetensors"
    p.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    with pytest.raises(ValueError, match=r"^B: .*integer dtype"):
        open_array(p, "B")


def test_check_finite_names_row(tmp_path, X):
    X = X.copy()
    X[37, 1] = np.inf
    p = tmp_path / "x.npy"
    np.save(p, X)
    with pytest.raises(ValueError, match=r"^--source: .*\(Inf\), first in row 37"):
        read_array(p, "--source", check_finite=True)


# -- writing -----------------------------------------------------------------


@pytest.mark.parametrize("ext", [".npy", ".safetensors", ".faiss"])
def test_write_round_trip_exact_path(tmp_path, X, ext):
    p = tmp_path / f"sub/out{ext}"
    assert write_array(p, X, key="emb") == p
    assert sorted(x.name for x in p.parent.iterdir()) == [p.name]  # no temp file left, nothing else
    assert np.array_equal(read_array(p), X)
    if ext == ".safetensors":
        from safetensors.numpy import load_file

        assert np.array_equal(load_file(str(p))["emb"], X)


def test_writer_streams_and_aborts(tmp_path, X):
    p = tmp_path / "o.npy"
    with ArrayWriter(p, 50, 6) as w:
        for s in range(0, 50, 16):
            w.write(X[s : s + 16])
    assert np.array_equal(np.load(p), X)
    q = tmp_path / "q.safetensors"
    with pytest.raises(KeyboardInterrupt):
        with ArrayWriter(q, 50, 6) as w:
            w.write(X[:10])
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == [p]  # nothing half-written
    with pytest.raises(ValueError, match="10 of 50 rows"):
        with ArrayWriter(q, 50, 6) as w:
            w.write(X[:10])
    assert not q.exists()


def test_check_output_path(tmp_path):
    f = tmp_path / "f.npy"
    f.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"^-o: .*exists; pass --overwrite"):
        check_output_path(f, "-o")
    assert check_output_path(f, "-o", overwrite=True) == f
    with pytest.raises(ValueError, match=r"^-o: .*is a folder"):
        check_output_path(tmp_path, "-o")
    with pytest.raises(ValueError, match=r"^-o: cannot create .*is a file"):
        check_output_path(f / "x.npy", "-o")
    with pytest.raises(ValueError, match=r"^-o: .*no extension"):
        check_output_path(tmp_path / "noext", "-o", formats={".npy": "npy"})
    assert check_output_path(tmp_path / "new/deeper/x.npy", "-o") == tmp_path / "new/deeper/x.npy"
    assert not (tmp_path / "new").exists()  # nothing created
    # folders
    (tmp_path / "m").mkdir()
    assert check_output_path(tmp_path / "m", "-o", folder=True)  # empty: fine
    (tmp_path / "m" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"not empty; pass --overwrite"):
        check_output_path(tmp_path / "m", "-o", folder=True)
    with pytest.raises(ValueError, match=r"is a file; the output is a folder"):
        check_output_path(f, "-o", folder=True)


# -- streaming without memory maps ---------------------------------------------
# ArrayWriter writes .npy with a header and plain writes, ArrayFile.chunks reads npy and
# safetensors with plain reads: a memory map would keep every page it passed resident.


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, ">f4"])
def test_streamed_npy_is_np_save_byte_for_byte(tmp_path, X, dtype):
    A = X.astype(dtype)
    ref, out = tmp_path / "ref.npy", tmp_path / "out.npy"
    np.save(ref, A.astype(A.dtype.newbyteorder("<")))  # ArrayWriter stores little-endian
    with ArrayWriter(out, *A.shape, dtype=A.dtype) as w:
        for s in range(0, len(A), 7):
            w.write(A[s : s + 7])
    assert out.read_bytes() == ref.read_bytes()
    assert np.array_equal(np.load(out), A)


def _chunk_cases(tmp_path, X):
    import torch
    from safetensors.numpy import save_file
    from safetensors.torch import save_file as save_torch

    np.save(tmp_path / "c.npy", X)
    np.save(tmp_path / "h.npy", X.astype(np.float16))
    np.save(tmp_path / "b.npy", X.astype(">f8"))
    np.save(tmp_path / "f.npy", np.asfortranarray(X))  # Fortran order: read through the map
    save_file({"a": X[:, :2].copy(), "emb": X}, str(tmp_path / "s.safetensors"))
    save_torch({"e": torch.from_numpy(X).to(torch.bfloat16)}, str(tmp_path / "bf.safetensors"))
    return [(tmp_path / "c.npy", None), (tmp_path / "h.npy", None), (tmp_path / "b.npy", None),
            (tmp_path / "f.npy", None), (tmp_path / "s.safetensors", "emb"), (tmp_path / "bf.safetensors", None)]


def test_chunks_read_from_the_file_equal_the_memory_map(tmp_path, X):
    for path, key in _chunk_cases(tmp_path, X):
        f = open_array(path, key=key)
        assert (f.offset is None) == path.name.startswith("f."), path
        whole = np.asarray(f.rows(0, len(f)))
        for rows in (1, 7, 50, 64):
            blocks = list(f.chunks(rows))
            assert [s for s, _ in blocks] == list(range(0, 50, rows))
            assert all(b.dtype == whole.dtype for _, b in blocks), path  # as stored, or widened alike
            assert np.array_equal(np.concatenate([b for _, b in blocks]), whole), (path, rows)
            if f.offset is not None:
                assert not any(isinstance(b, np.memmap) for _, b in blocks)


def test_chunks_name_a_file_truncated_while_reading(tmp_path, X):
    p = tmp_path / "x.npy"
    np.save(p, X)
    f = open_array(p, "--input")
    with open(p, "r+b") as fh:
        fh.truncate(p.stat().st_size - 100)
    with pytest.raises(ValueError, match=r"^--input: .*ended at byte .*rows 32\.\.48"):
        list(f.chunks(16))
