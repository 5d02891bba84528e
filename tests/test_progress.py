"""align.progress: bars throttled outside a terminal, disabled bars are no-ops."""
import io
import sys

import numpy as np

from align.knn import knn
from align.progress import LOG_INTERVAL_S, on_terminal, progress_bar


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_disabled_bar_yields_the_items_and_writes_nothing(capsys):
    bar = progress_bar(range(5), desc="x", enabled=False)
    assert list(bar) == [0, 1, 2, 3, 4]
    with progress_bar(total=3, enabled=False) as b:
        b.update(2)
        b.set_postfix(gain="1.0")
    assert capsys.readouterr().err == ""


def test_log_output_is_throttled(monkeypatch):
    log = io.StringIO()  # not a terminal, as under nohup or CI
    monkeypatch.setattr(sys, "stderr", log)
    assert not on_terminal()
    with progress_bar(total=10_000, desc="work") as bar:
        assert bar.mininterval == LOG_INTERVAL_S
        for _ in range(10_000):
            bar.update(1)
    # the first draw and the closing one; 10 000 updates in well under 30 s draw nothing between
    assert log.getvalue().count("\r") <= 3, log.getvalue()
    assert "10000/10000" in log.getvalue()


def test_terminal_bar_is_not_throttled(monkeypatch):
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert on_terminal()
    with progress_bar(total=10, desc="work") as bar:
        assert bar.mininterval < 1


def test_closed_stderr_counts_as_no_terminal(monkeypatch):
    class Closed:
        def isatty(self):
            raise ValueError("I/O operation on closed file")

    monkeypatch.setattr(sys, "stderr", Closed())
    assert on_terminal() is False


def test_knn_progress_in_a_log_stays_short(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    X = np.random.default_rng(0).standard_normal((600, 8)).astype(np.float32)
    plain = knn(X, 3, X, block_size=10)
    shown = knn(X, 3, X, block_size=10, progress=True)  # 60 blocks
    np.testing.assert_array_equal(plain[1], shown[1])
    assert 1 <= log.getvalue().count("\r") <= 3 and "60/60" in log.getvalue()
