"""The progress line: what it shows, that it is throttled, that disabled means silent."""

import io
import os
import time

import numpy as np
import pytest

from edgeff.progress import Progress, progress_enabled


def test_draws_desc_count_rate_and_postfix():
    out = io.StringIO()
    with Progress(100, "epoch 1/2", unit="images", enabled=True, stream=out) as bar:
        bar.update(60, loss=0.123456)
        bar.update(40, loss=np.float32(0.1), step=7)
    text = out.getvalue()
    assert text.startswith("\r") and text.endswith("\n")
    last = text.rstrip("\n").split("\r")[-1]
    assert "epoch 1/2" in last and "100%" in last and "100/100" in last and "images/s" in last
    assert "loss=0.1 " in last and "step=7" in last  # np.float32(0.1) shown as 0.1, not 0.100000001


def test_line_at_a_given_time():
    bar = Progress(100, "train", enabled=True, stream=io.StringIO())
    bar.update(50, loss=0.123456, acc=0.98765)
    line = bar.line(bar.start + 2.0)
    assert "train  50%" in line and "[##########          ]" in line and "50/100" in line
    assert "25 samples/s" in line and "0:02<0:02" in line  # rate, elapsed < ETA
    assert line.endswith("loss=0.1235 acc=0.9877")  # floats to 4 significant digits
    assert "1:01:40<" in bar.line(bar.start + 3700.0)


def test_throttled_in_a_hot_loop():
    out = io.StringIO()
    with Progress(100_000, "fast", stream=out) as bar:
        for _ in range(100_000):
            bar.update(1, loss=0.5)
    assert 1 <= out.getvalue().count("\r") < 20  # ~10 redraws a second, not one per update


def test_redraws_once_the_interval_has_passed():
    out = io.StringIO()
    bar = Progress(10, "slow", stream=out)
    bar.update(1)
    assert out.getvalue() == ""  # too soon after the start
    time.sleep(0.15)
    bar.update(1)
    assert "2/10" in out.getvalue()
    bar.close()
    bar.close()  # a second close adds nothing
    text = out.getvalue()
    assert text.count("\n") == 1 and "2/10" in text.rstrip("\n").split("\r")[-1]


def test_disabled_writes_nothing():
    out = io.StringIO()
    with Progress(100, "x", enabled=False, stream=out) as bar:
        bar.update(50, loss=1.0)
        time.sleep(0.12)
        bar.update(50, loss=1.0)
    bar.close()
    assert out.getvalue() == ""


@pytest.fixture
def terminal():
    leader, follower = os.openpty()
    with open(follower, "w") as tty:
        yield tty
    os.close(leader)


def test_progress_enabled(terminal):
    assert progress_enabled(False, False, terminal)  # a person is watching
    assert not progress_enabled(True, False, terminal)  # --quiet
    assert not progress_enabled(False, True, terminal)  # --json
    assert not progress_enabled(False, False, io.StringIO())  # not a TTY
    with open(os.devnull, "w") as devnull:
        assert not progress_enabled(False, False, devnull)
