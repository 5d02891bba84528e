"""The ``reptrans`` command, run as a subprocess: every bad input is one line on stderr
naming the option, exit status 2, before any long work starts.

The commands run in ONE worker subprocess started for this module (``_Worker``): it
reads a command line, runs ``translate.cli.main`` on it with its own stdout / stderr
captured, and answers with the exit status and both texts, so each command costs its
own work, not a fresh interpreter's imports (~0.5 s each, ~2 s more where torch is
imported). Where the process itself is the subject (Ctrl-C, the console script) the
tests start their own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from translate.cli_support import UsageError, cli_message, read_pairs
from translate.tables import format_column, markdown_table, to_json, write_json

ROOT = Path(__file__).resolve().parents[1]


_WORKER = r"""
import contextlib, io, json, os, sys, traceback
from translate.cli import main
reply = os.fdopen(os.dup(1), "w")  # answers: the real stdout, whatever the command writes
for line in sys.stdin:
    req = json.loads(line)
    os.chdir(req["cwd"])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(req["argv"])
        except SystemExit as exc:  # argparse: --help, --version, bad syntax
            code = exc.code
            if isinstance(code, str):
                print(code, file=sys.stderr)
                code = 1
            code = 0 if code is None else code
        except BaseException:  # as the interpreter would print it
            traceback.print_exc()
            code = 1
    reply.write(json.dumps({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}) + "\n")
    reply.flush()
"""


class _Worker:
    """One ``python -c _WORKER`` process that runs ``reptrans`` command lines in turn."""

    def __init__(self):
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER], env=env, cwd=os.getcwd(), text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def run(self, argv, cwd, timeout):
        import select

        self.proc.stdin.write(json.dumps({"argv": argv, "cwd": str(cwd)}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.close(kill=True)
            raise subprocess.TimeoutExpired(["reptrans", *argv], timeout)
        line = self.proc.stdout.readline()
        if not line:  # the worker died in this command: say so, the next command starts another
            code = self.proc.wait()
            return subprocess.CompletedProcess(["reptrans", *argv], code, "", f"the worker process died ({code})")
        rec = json.loads(line)
        return subprocess.CompletedProcess(["reptrans", *argv], rec["returncode"], rec["stdout"], rec["stderr"])

    def close(self, kill=False):
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_worker = None


@pytest.fixture(scope="module", autouse=True)
def _cli_worker():
    yield
    global _worker
    if _worker is not None:
        _worker.close()
        _worker = None


def reptrans(*args, cwd=None, timeout=300):
    """``reptrans ARGS`` in the module's worker process: a CompletedProcess."""
    global _worker
    if _worker is None or _worker.proc.poll() is not None:
        _worker = _Worker()
    return _worker.run([str(a) for a in args], cwd or os.getcwd(), timeout)


def assert_usage_error(r, *needles):
    """Exit 2, one line ``reptrans <cmd>: error: ...`` holding every needle, no traceback."""
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert len(err.splitlines()) == 1, err  # also: no "fitting ..." line, so no work started
    assert re.match(r"reptrans \w+: error: ", err), err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)
    return err


@pytest.fixture(scope="module")
def spaces(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("spaces")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 12)) * np.linspace(0.5, 3, 12)
    Q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    Y = X @ Q + 0.01 * rng.standard_normal((600, 12))
    paths = {}
    for name, arr in {"A": X[:500], "B": Y[:500], "At": X[500:], "Bt": Y[500:]}.items():
        paths[name] = tmp / f"{name}.npy"
        np.save(paths[name], arr.astype(np.float32))
    paths["model"] = tmp / "model"
    r = reptrans("fit", "--method", "procrustes", "--source", paths["A"], "--target", paths["B"], "-o", paths["model"])
    assert r.returncode == 0, r.stderr
    return paths


# -- round trips ---------------------------------------------------------------


@pytest.mark.slow
def test_fit_eval_round_trip(spaces, tmp_path):
    out_json = tmp_path / "res.json"
    r = reptrans("eval", "--model", spaces["model"], "--source", spaces["At"], "--target", spaces["Bt"],
                 "--json", out_json)
    assert r.returncode == 0, r.stderr
    res = json.loads(out_json.read_text())
    assert res["top1"] == 1.0 and res["pool"] == 100
    assert "| Procrustes |" in r.stdout


@pytest.mark.slow
def test_compare_prints_values_and_chance(spaces, tmp_path):
    out_json = tmp_path / "cmp.json"
    r = reptrans("compare", spaces["A"], spaces["B"], "--metric", "mutual_knn, cka,procrustes", "--json", out_json)
    assert r.returncode == 0, r.stderr
    rows = {row["metric"]: row for row in json.loads(out_json.read_text())}
    assert list(rows) == ["mutual_knn", "cka", "procrustes"]  # spaces after commas are fine
    assert rows["mutual_knn"]["value"] > 0.9 and rows["mutual_knn"]["chance"] < 0.1
    assert rows["cka"]["value"] > 0.99
    assert "| metric | value | chance |" in r.stdout


@pytest.mark.slow
def test_transform_streams_in_chunks_to_each_format(spaces, tmp_path):
    import translate

    t = translate.load(spaces["model"])
    X = np.load(spaces["At"])
    expect = t.transform(X)
    npy = tmp_path / "b_hat.npy"
    r = reptrans("transform", "--model", spaces["model"], "--input", spaces["At"], "-o", npy, "--chunk-rows", 7)
    assert r.returncode == 0, r.stderr
    assert f"wrote {npy} with shape (100, 12)" in r.stdout
    assert np.allclose(np.load(npy), expect, atol=1e-5)
    # safetensors in, FAISS out (IndexFlatIP), FAISS in, safetensors out
    st, fx, st2 = tmp_path / "b.safetensors", tmp_path / "b.faiss", tmp_path / "c.safetensors"
    from safetensors.numpy import load_file, save_file

    save_file({"emb": X, "ids": X[:, :2].copy()}, str(st))
    assert reptrans("transform", "--model", spaces["model"], "--input", st, "--key", "emb", "-o", fx).returncode == 0
    r = reptrans("transform", "--model", spaces["model"], "--input", fx, "-o", st2, "--output-key", "vec")
    assert r.returncode == 0, r.stderr  # d_in == d_out here, so the output can be translated again
    assert np.allclose(load_file(str(st2))["vec"], t.transform(expect), atol=1e-4)
    r = reptrans("transform", "--model", spaces["model"], "--input", st, "-o", tmp_path / "d.npy")
    assert_usage_error(r, "--key", "emb, ids")


def test_transform_checks_width_before_work(spaces, tmp_path):
    bad = tmp_path / "narrow.npy"
    np.save(bad, np.ones((5, 3), dtype=np.float32))
    out = tmp_path / "o.npy"
    assert_usage_error(reptrans("transform", "--model", spaces["model"], "--input", bad, "-o", out),
                       "--input has 3 columns", "12")
    assert not out.exists()


def test_transform_peak_memory_is_about_one_chunk(spaces, tmp_path):
    import tracemalloc

    from translate.cli import main

    big = tmp_path / "big.npy"
    mm = np.lib.format.open_memmap(big, mode="w+", dtype=np.float32, shape=(100_000, 12))  # 4.8 MB
    mm[:] = np.random.default_rng(1).standard_normal(mm.shape, dtype=np.float32)
    del mm
    main(["transform", "--model", str(spaces["model"]), "--input", str(big), "-o", str(tmp_path / "warm.npy"),
          "--chunk-rows", "100"])  # imports, caches
    tracemalloc.start()
    code = main(["transform", "--model", str(spaces["model"]), "--input", str(big), "-o", str(tmp_path / "o.npy"),
                 "--chunk-rows", "1000"])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert code == 0
    assert peak < 1.5e6, peak  # a chunk is 48 kB; the whole input would be 4.8 MB
    assert np.load(tmp_path / "o.npy").shape == (100_000, 12)


# -- one test per bad input --------------------------------------------------


def test_zero_byte_npy(spaces, tmp_path):
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    assert_usage_error(reptrans("fit", "--source", empty, "--target", spaces["B"], "-o", tmp_path / "m"),
                       "--source", "empty (0 bytes)")


@pytest.mark.parametrize("case,needles", [
    ("nan", ("A:", "NaN", "row 3")),
    ("one_d", ("B:", "2-D")),
    ("rows", ("A and B", "same number of rows", "100 and 500")),
])
@pytest.mark.slow
def test_compare_bad_inputs_exit_2(spaces, tmp_path, case, needles):
    a, b = spaces["A"], spaces["B"]
    if case == "nan":
        X = np.load(a)
        X[3, 2] = np.nan
        a = tmp_path / "nan.npy"
        np.save(a, X)
    elif case == "one_d":
        b = tmp_path / "one.npy"
        np.save(b, np.load(spaces["B"])[:, 0])
    else:
        a = spaces["At"]
    r = reptrans("compare", a, b)
    assert_usage_error(r, *needles)
    assert r.stdout == ""  # no table of n/a rows


@pytest.mark.parametrize("case", ["exists", "directory", "uncreatable"])
def test_output_paths_checked_up_front(spaces, tmp_path, case):
    existing = tmp_path / "out.npy"
    existing.write_bytes(b"keep")
    target = {"exists": existing, "directory": tmp_path, "uncreatable": existing / "sub" / "o.npy"}[case]
    r = reptrans("transform", "--model", spaces["model"], "--input", spaces["At"], "-o", target)
    assert_usage_error(r, "-o", {"exists": "--overwrite", "directory": "is a folder", "uncreatable": "cannot create"}[case])
    assert existing.read_bytes() == b"keep"
    if case == "exists":
        r = reptrans("transform", "--model", spaces["model"], "--input", spaces["At"], "-o", target, "--overwrite")
        assert r.returncode == 0 and np.load(existing).shape == (100, 12)
        # fit -o: a non-empty model folder, and eval --json
        assert_usage_error(reptrans("fit", "--source", spaces["A"], "--target", spaces["B"], "-o", spaces["model"]),
                           "-o", "not empty", "--overwrite")
        assert_usage_error(reptrans("eval", "--model", spaces["model"], "--source", spaces["At"], "--target",
                                    spaces["Bt"], "--json", existing), "--json", "--overwrite")


@pytest.mark.parametrize("ext", [".csv", ".npz"])
def test_unsupported_input_format(spaces, tmp_path, ext):
    p = tmp_path / f"x{ext}"
    if ext == ".csv":
        np.savetxt(p, np.load(spaces["A"]), delimiter=",")
    else:
        np.savez(p, emb=np.load(spaces["A"]))
    assert_usage_error(reptrans("fit", "--source", p, "--target", spaces["B"], "-o", tmp_path / "m"),
                       "--source", ".npy, .safetensors", "FAISS")


@pytest.mark.slow
def test_compare_json_is_valid_without_chance(spaces, tmp_path):
    out = tmp_path / "c.json"
    r = reptrans("compare", spaces["A"], spaces["B"], "--metric", "cka", "--no-chance", "--json", out)
    assert r.returncode == 0, r.stderr

    def refuse(const):
        raise AssertionError(f"invalid JSON constant {const}")

    rows = json.loads(out.read_text(), parse_constant=refuse)
    assert rows[0]["chance"] is None and rows[0]["value"] > 0.99
    assert to_json({"a": float("nan"), "b": [np.float32(1.5), float("inf")]}) == to_json({"a": None, "b": [1.5, None]})
    write_json(tmp_path / "w.json", {"a": float("nan"), "b": np.float32(1.5)})  # atomic: no temporary left
    assert json.loads((tmp_path / "w.json").read_text()) == {"a": None, "b": 1.5}
    assert sorted(p.name for p in tmp_path.glob("w.json*")) == ["w.json"]


def test_param_values_and_keys_are_validated(spaces, tmp_path):
    m = tmp_path / "m"
    assert_usage_error(reptrans("fit", "--source", spaces["A"], "--target", spaces["B"], "-o", m,
                                "--param", "center=maybe"), "--param center", "true or false", "'maybe'")
    err = assert_usage_error(reptrans("fit", "--source", spaces["A"], "--target", spaces["B"], "-o", m,
                                      "--param", "centre=true"), "--param centre")
    assert "valid keys: center, normalize, scale" in err
    assert_usage_error(reptrans("fit", "--source", spaces["A"], "--target", spaces["B"], "-o", m,
                                "--param", "nope"), "KEY=VALUE")
    assert not m.exists()


def test_embed_refuses_missing_extension(tmp_path):
    assert_usage_error(reptrans("embed", "-o", tmp_path / "out_noext", "--n", "2"), "-o", "no extension", ".npy")
    assert not (tmp_path / "out_noext").exists() and not (tmp_path / "out_noext.npy").exists()


@pytest.mark.slow
def test_vec2vec_starts_from_a_named_unpaired_method(tmp_path):
    """``--param init=isometric``: Vec2Vec from the isometric map fitted first on the same rows (the start
    is a selection candidate, so the saved model has a selected step); a paired or unknown method is refused
    by name before any fit; Isometric's own ``init`` (a string choice) is left as it is."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 6)) * np.linspace(0.5, 3, 6)
    Q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    np.save(tmp_path / "a.npy", X.astype(np.float32))
    np.save(tmp_path / "b.npy", (rng.standard_normal((300, 6)) * np.linspace(0.5, 3, 6) @ Q).astype(np.float32))
    small = ["--param", "steps=2", "--param", "hidden=8", "--param", "depth=1", "--param", "batch_size=16"]
    r = reptrans("fit", "--method", "vec2vec", "--source", "a.npy", "--target", "b.npy", "-o", "m",
                 "--param", "init=isometric", "--param", "denoise=false", *small, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "init=Isometric(" in r.stdout
    import translate

    m = translate.load(tmp_path / "m")
    assert m.init == "translator:Isometric" and m.selected_step_ in (0, 2) and m.history_[-1]["end_z"][0] is not None
    for bad in ("procrustes", "nope"):
        r = reptrans("fit", "--method", "vec2vec", "--source", "a.npy", "--target", "b.npy", "-o", "m2",
                     "--param", f"init={bad}", *small, cwd=tmp_path)
        assert r.returncode == 2 and "--param init" in r.stderr and "isometric" in r.stderr and bad in r.stderr
        assert not (tmp_path / "m2").exists()
    r = reptrans("fit", "--method", "isometric", "--source", "a.npy", "--target", "b.npy", "-o", "m3",
                 "--param", "init=random", "--param", "n_init=1", "--param", "n_iter=2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_ctrl_c_exits_130_without_traceback(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", rng.standard_normal((3000, 32)).astype(np.float32))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # A first fit compiles (and caches) the kNN engine's numba kernels: a SIGINT that lands
    # inside a cold compile is not seen until the compile ends, and on a fresh checkout under
    # load that took longer than this test waits.
    warm = reptrans("fit", "--method", "isometric", "--source", "a.npy", "--target", "b.npy", "-o", "w",
                    "--param", "n_init=1", "--param", "n_iter=2", cwd=tmp_path)
    assert warm.returncode == 0, warm.stderr
    proc = subprocess.Popen([sys.executable, "-m", "translate.cli", "fit", "--method", "isometric",
                             "--source", "a.npy", "--target", "b.npy", "-o", "m", "--param", "n_init=1000"],
                            cwd=tmp_path, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            # an ignored SIGINT is inherited (and Python then keeps ignoring it): some
                            # earlier test in the same pytest process leaves it ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stderr.readline()  # "reptrans fit: fitting isometric on ..."
        assert "fitting isometric" in line, line
        # Past the fit's lazy imports first: a SIGINT inside an import (scipy.optimize, for
        # the first assignment, ~1.2 s after that line under load) surfaces as a RuntimeError,
        # not as the KeyboardInterrupt this test is about (exit 1 and a traceback).
        maps, deadline = Path(f"/proc/{proc.pid}/maps"), time.time() + 30
        while maps.exists() and time.time() < deadline and proc.poll() is None:
            try:
                if "scipy/optimize" in maps.read_text():
                    break
            except OSError:  # the process just ended: the assertions below say how
                break
            time.sleep(0.05)
        time.sleep(0.5 if maps.exists() else 1.0)
        err = None
        for _ in range(12):  # pressed again if the first lands before Python's handler is in place
            proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.strip() == "reptrans fit: interrupted"
    assert not (tmp_path / "m").exists()


def test_warnings_are_one_line_with_cli_names(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", rng.standard_normal((200, 6)).astype(np.float32))
    r = reptrans("fit", "--method", "isometric", "--source", "a.npy", "--target", "b.npy", "-o", "m",
                 "--param", "n_init=2", "--param", "n_iter=5", "--param", "min_gain=0.5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    warn = [ln for ln in r.stderr.splitlines() if "warning" in ln]
    assert warn and all(ln.startswith("reptrans fit: warning: ") for ln in warn), r.stderr
    assert "--param n_init=…" in warn[0] and ".py:" not in r.stderr and "warnings.warn" not in r.stderr
    assert "Isometric(" not in r.stderr  # no source line


def test_errors_name_cli_options_not_library_arguments(tmp_path):
    np.save(tmp_path / "small.npy", np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32))
    np.save(tmp_path / "big.npy", np.random.default_rng(1).standard_normal((100, 4)).astype(np.float32))
    r = reptrans("fit", "--method", "isometric", "--source", "small.npy", "--target", "big.npy", "-o", "m",
                 cwd=tmp_path)
    err = r.stderr.strip().splitlines()[-1]  # the library's own check, as fit starts
    assert r.returncode == 2 and err.startswith("reptrans fit: error: --source has 10 rows"), r.stderr
    assert " X " not in err and "Traceback" not in r.stderr
    assert cli_message("X and Y must have the same number of rows", {"X": "--source", "Y": "--target"}) == \
        "--source and --target must have the same number of rows"
    assert cli_message("n_init must be >= 1; seed=3 fails", {}, ["n_init", "seed"]) == \
        "--param n_init must be >= 1; --seed 3 fails"


def test_eval_refuses_k_at_least_pool(spaces):
    assert_usage_error(reptrans("eval", "--model", spaces["model"], "--source", spaces["At"], "--target",
                                spaces["Bt"], "--k", "5000"), "--k 5000", "between 1 and 99")


@pytest.mark.slow
def test_metric_names_are_checked(spaces):
    err = assert_usage_error(reptrans("compare", spaces["A"], spaces["B"], "--metric", "cka, nope"),
                             "--metric", "'nope'")
    assert "valid names: all, mutual_knn" in err and "soft_match" in err


def test_seed_on_a_deterministic_method_is_noted(spaces, tmp_path):
    r = reptrans("fit", "--method", "linear", "--source", spaces["A"], "--target", spaces["B"], "-o", tmp_path / "m",
                 "--seed", "3")
    assert r.returncode == 0, r.stderr
    assert "reptrans fit: note: --seed has no effect: linear is deterministic" in r.stderr


def test_numbers_formatted_per_column():
    assert format_column([6e-6, 0.25], "foscttm") == ["6.00e-06", "0.2500"]
    assert format_column([74.0, 3.25], "fit s") == ["74.0", "3.2"]
    assert format_column([1000, 500.0], "pool") == ["1000", "500"]
    assert format_column([float("nan"), None, "x"], "value") == ["n/a", "—", "x"]
    table = markdown_table([{"method": "a", "fit s": 74.0, "foscttm": 6e-6, "pool": 1000}],
                           headers=["method", "fit s", "FOSCTTM", "pool"])
    assert table.splitlines()[2] == "| a | 74.0 | 6.00e-06 | 1000 |"
    assert table.splitlines()[0] == "| method | fit s | FOSCTTM | pool |"


def test_help_lists_params_metrics_and_version(capsys):
    r = reptrans("fit", "--help")
    assert r.returncode == 0
    for text in ("procrustes (paired rows): center=True, normalize=False, scale=True", "n_init=6", "--pairs"):
        assert text in " ".join(r.stdout.split()), text
    # compare's help in this process: its metric list imports align.metrics (scipy.stats: 1.5 s
    # in a fresh process); the three other help texts above and below run as the command
    from translate.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["compare", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "cka_debiased" in out and "soft_match" in out
    r = reptrans("--version")
    import align

    assert r.returncode == 0 and r.stdout.strip() == f"reptrans {align.__version__}"
    r = reptrans("--help")
    assert all(cmd in r.stdout for cmd in ("embed", "fit", "transform", "eval", "compare", "demo"))


def test_no_progress_bar_when_piped(spaces, tmp_path):
    r = reptrans("transform", "--model", spaces["model"], "--input", spaces["At"], "-o", tmp_path / "o.npy",
                 "--chunk-rows", "10")
    assert r.returncode == 0 and r.stderr == ""


def test_embed_bad_encoder_folder(tmp_path):
    (tmp_path / "enc").mkdir()
    assert_usage_error(reptrans("embed", "--encoder", tmp_path / "enc", "--n", "2", "-o", tmp_path / "e.npy"),
                       "--encoder")


# -- --pairs -------------------------------------------------------------------


class PairsFake:
    """A translator whose fit takes known pairs; records what it was given."""

    seen = {}

    def __init__(self, seed: int = 0, progress: bool = True):
        self.seed, self.progress = seed, progress

    def fit(self, X, Y, pairs=None):
        PairsFake.seen = {"pairs": pairs, "X": X.shape, "Y": Y.shape}
        return self

    def save(self, path):
        Path(path).mkdir(parents=True, exist_ok=True)


@pytest.fixture
def fake_method(monkeypatch):
    import translate.cli as cli

    real = cli.method_class
    monkeypatch.setattr(cli, "method_class", lambda m: PairsFake if m == "isometric" else real(m))
    monkeypatch.setattr(cli, "takes_pairs", lambda cls: cls is PairsFake)
    return cli.main


def test_pairs_are_passed_to_fit(spaces, tmp_path, fake_method, capsys):
    p = tmp_path / "pairs.csv"
    p.write_text("source,target\n0, 5\n3,7\n\n499,0\n")
    code = fake_method(["fit", "--method", "isometric", "--source", str(spaces["A"]), "--target", str(spaces["Bt"]),
                        "-o", str(tmp_path / "m"), "--pairs", str(p)])
    assert code == 0, capsys.readouterr().err
    assert PairsFake.seen["pairs"].tolist() == [[0, 5], [3, 7], [499, 0]]
    assert PairsFake.seen["X"] == (500, 12) and PairsFake.seen["Y"] == (100, 12)
    q = tmp_path / "nohead.tsv"
    q.write_text("1\t2\n")
    assert read_pairs(str(q), 5, 5).tolist() == [[1, 2]]


@pytest.mark.parametrize("content,needle", [("0,5\n3,100\n", "line 2"), ("0,5\n1.5,2\n", "not two integers"),
                                            ("0,1,2\n", "not two integers"), ("", "holds no pairs")])
def test_bad_pairs_file(spaces, tmp_path, fake_method, capsys, content, needle):
    PairsFake.seen = {}
    p = tmp_path / "pairs.csv"
    p.write_text(content)
    code = fake_method(["fit", "--method", "isometric", "--source", str(spaces["A"]), "--target", str(spaces["Bt"]),
                        "-o", str(tmp_path / "m"), "--pairs", str(p)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("reptrans fit: error: --pairs") and needle in err, err
    assert len(err.splitlines()) == 1 and PairsFake.seen == {}


def test_pairs_out_of_range_names_the_side(tmp_path):
    p = tmp_path / "pairs.csv"
    p.write_text("0,5\n3,100\n")
    with pytest.raises(UsageError, match=r"^--pairs: line 2 .*target row 100 is out of range \(--target has 100"):
        read_pairs(str(p), 500, 100)
    with pytest.raises(UsageError, match=r"source row 3 is out of range"):
        read_pairs(str(p), 3, 500)


def test_pairs_refused_by_a_method_without_them(spaces, tmp_path):
    p = tmp_path / "pairs.csv"
    p.write_text("0,1\n")
    assert_usage_error(reptrans("fit", "--method", "procrustes", "--source", spaces["A"], "--target", spaces["B"],
                                "-o", tmp_path / "m", "--pairs", p), "--pairs", "procrustes does not take known pairs")


def test_isometric_pairs_end_to_end(tmp_path):
    import translate
    from translate.cli_support import takes_pairs

    if not takes_pairs(translate.Isometric):
        pytest.skip("Isometric.fit does not take pairs yet")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 6)).astype(np.float32)
    np.save(tmp_path / "a.npy", X)
    np.save(tmp_path / "b.npy", X @ np.linalg.qr(rng.standard_normal((6, 6)))[0].astype(np.float32))
    (tmp_path / "p.csv").write_text("".join(f"{i},{i}\n" for i in range(50)))
    r = reptrans("fit", "--method", "isometric", "--source", "a.npy", "--target", "b.npy", "--pairs", "p.csv",
                 "-o", "m", "--param", "n_init=2", "--param", "n_iter=10", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "with 50 known pairs" in r.stderr


# -- docs/vector_store.md ------------------------------------------------------


def _doc_commands(block: str, tmp_path: Path) -> list:
    """The commands of one bash block as bash parses them (quoting, line continuations),
    without running them: ``python`` and ``reptrans`` are shell functions that print their
    arguments, and PATH is empty, so any other command fails the block."""
    rec = ('python() { printf \'%s\\0\' "$#" python "$@"; }\n'
           'reptrans() { printf \'%s\\0\' "$#" reptrans "$@"; }\n')
    r = subprocess.run(["/bin/bash", "-e", "-o", "pipefail", "-c", rec + block], cwd=tmp_path,
                       env={"PATH": str(tmp_path / "no-such-dir")}, capture_output=True, timeout=60)
    assert r.returncode == 0, (block, r.stderr)
    fields, cmds = r.stdout.decode().split("\0")[:-1], []
    while fields:
        n, name = int(fields[0]), fields[1]
        cmds.append((name, fields[2 : 2 + n]))
        del fields[: 2 + n]
    return cmds


@pytest.mark.slow
def test_vector_store_doc(tmp_path, monkeypatch):
    """Every ```bash block of the guide runs, in order, in an empty folder.

    bash parses each block (the reader's quoting); the first ``reptrans`` command runs as
    the installed console script in a fresh process (the entry point), every other
    command in this process, in order: ``python -c`` code through exec, ``reptrans ...``
    through ``translate.cli.main``, each exit status 0 (a fresh interpreter per command
    cost ~2 s each, most of it importing torch)."""
    import faiss

    import translate
    from translate.cli import main as reptrans_main
    from translate.cli_support import takes_pairs

    doc = (ROOT / "docs" / "vector_store.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", doc, re.S)
    assert len(blocks) >= 7
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
           "PYTHONPATH": str(ROOT)}
    monkeypatch.chdir(tmp_path)
    ran = {"python": 0, "reptrans": 0}
    for block in blocks:
        if "--pairs" in block and not takes_pairs(translate.Isometric):
            continue  # Isometric.fit(pairs=) not in this tree yet
        for name, args in _doc_commands(block, tmp_path):
            if name == "python":
                assert args[0] == "-c" and len(args) == 2, args
                exec(compile(args[1], "<vector_store.md>", "exec"), {"__name__": "__main__"})
            elif ran["reptrans"] == 0:
                r = subprocess.run(["reptrans", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                                   timeout=600)
                assert r.returncode == 0, (args, r.stdout, r.stderr)
            else:
                assert reptrans_main(args) == 0, args
            ran[name] += 1
    assert ran["python"] >= 2 and ran["reptrans"] >= 7, ran
    assert json.loads((tmp_path / "procrustes.json").read_text())["top1"] == 1.0
    assert np.load(tmp_path / "b_hat.npy").shape == (200, 8)
    assert type(faiss.read_index(str(tmp_path / "store_b.faiss"))).__name__ == "IndexFlatIP"
