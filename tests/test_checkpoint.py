"""Checkpoints: a run SIGKILLed at random moments (often inside a checkpoint write)
and resumed ends bit for bit where the uninterrupted run ends; bad checkpoints are
refused with one line and never overwritten; a full disk keeps the previous one."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edgeff import checkpoint
from edgeff.errors import EdgeFFError, ModelError


def edgeff_cmd(*args):
    return [sys.executable, "-m", "edgeff.cli", *map(str, args)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 1, (4, 60))
    y_train, y_test = rng.integers(0, 4, 3000), rng.integers(0, 4, 300)
    x = lambda y: np.clip(centres[y] + 0.2 * rng.standard_normal((len(y), 60)), 0, 1).astype(np.float32)
    path = tmp_path_factory.mktemp("data") / "blobs.npz"
    np.savez(path, x_train=x(y_train), y_train=y_train, x_test=x(y_test), y_test=y_test)
    return path


def train_args(data, out, schedule):
    """layerwise-float16: a wider first layer, and a budget with room for its frozen products'
    cache at float16 only (a quarter of the float32 cache below what that needs)."""
    model, extra = "60-128-128", []
    if schedule == "layerwise-float16":
        schedule, model = "layerwise", "60-1500-128"
        plan = json.loads(subprocess.run(edgeff_cmd("plan", "--dataset", data, "--model", model, "--batch-size", "40",
                                                    "--schedule", schedule, "--json"),
                                         capture_output=True, check=True, timeout=600).stdout)
        assert plan["frozen_input"] == "cache"
        budget = plan["runtime_bytes"] + plan["arena_bytes"] + plan["data_bytes"] - plan["cache_bytes"] // 4
        extra = ["--memory-budget", f"{budget}B"]
    return ["train", "--dataset", data, "--model", model, "--epochs", "3", "--head-epochs", "2",
            "--batch-size", "40", "--schedule", schedule, "--negatives", "random", "--out", out,
            "--checkpoint-every", "2", "--quiet", *extra]


def weights(run_dir):
    with np.load(run_dir / "model.npz") as z:
        return {k: z[k] for k in z.files if k != "meta"}


def _mtime(path):
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None


@pytest.mark.parametrize("schedule", ["simultaneous", "layerwise", "layerwise-float16"])
def test_sigkill_at_random_moments_then_resume_is_bitwise_identical(data, tmp_path, schedule):
    ref = tmp_path / "ref"
    subprocess.run(edgeff_cmd(*train_args(data, ref, schedule)), check=True, capture_output=True, timeout=600)
    want = weights(ref)
    if schedule == "layerwise-float16":
        assert json.loads((ref / "metrics.json").read_text())["frozen_input"] == "cache-float16"

    run = tmp_path / "run"
    rng = np.random.default_rng(7)
    kills = 0
    for attempt in range(8):
        resuming = (run / checkpoint.NAME).exists()
        args = ["train", "--resume", run, "--quiet"] if resuming else train_args(data, run, schedule)
        proc = subprocess.Popen(edgeff_cmd(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if attempt < 4:   # four kills at random moments, each after this attempt wrote a checkpoint
            before = _mtime(run / checkpoint.NAME)
            while proc.poll() is None and _mtime(run / checkpoint.NAME) == before:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.05))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        _, err = proc.communicate(timeout=600)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, err.decode()
        if (run / checkpoint.NAME).exists():
            checkpoint.load(run / checkpoint.NAME)    # whatever moment the kill hit, the checkpoint is whole
    assert proc.returncode == 0 and kills >= 1
    got = weights(run)
    assert sorted(got) == sorted(want)
    for k in want:
        assert np.array_equal(got[k], want[k]), k
    assert not [f for f in os.listdir(run) if f.endswith(".tmp")]


def make_checkpoint(path):
    arrays = {"w0": np.arange(12, dtype=np.float32).reshape(3, 4), "order": np.arange(5)}
    checkpoint.save(path, arrays, {"position": [0, 0, 1]})
    return arrays


def test_truncated_corrupt_and_newer_checkpoints_are_refused(tmp_path, monkeypatch):
    path = tmp_path / checkpoint.NAME
    make_checkpoint(path)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelError, match="truncated or not a checkpoint"):
        checkpoint.load(path)
    path.write_bytes(good)
    with np.load(path) as z:
        saved = {k: z[k] for k in z.files}
    saved["w0"] = saved["w0"] + 1                                   # data changed, old checksum kept
    np.savez(path, **saved)
    with pytest.raises(ModelError, match="checksum mismatch"):
        checkpoint.load(path)
    monkeypatch.setattr(checkpoint, "FORMAT_VERSION", checkpoint.FORMAT_VERSION + 1)  # written by a newer edgeff
    checkpoint.save(path, {"w0": saved["w0"]}, {})
    monkeypatch.undo()
    with pytest.raises(ModelError, match="newer than this edgeff reads"):
        checkpoint.load(path)


def test_cli_refuses_a_bad_checkpoint_and_keeps_it(data, tmp_path):
    run = tmp_path / "run"
    subprocess.run(edgeff_cmd(*train_args(data, run, "simultaneous")), check=True, capture_output=True, timeout=600)
    ck = run / checkpoint.NAME
    data_bytes = ck.read_bytes()
    ck.write_bytes(data_bytes[:1000])
    r = subprocess.run(edgeff_cmd("train", "--resume", run), capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "truncated" in r.stderr
    assert ck.read_bytes() == data_bytes[:1000]                 # never overwritten
    ck.write_bytes(data_bytes)
    arrays, meta = checkpoint.load(ck)
    arrays["w0"] = np.zeros((10, 10), np.float32)               # another model's weights, valid checksum
    checkpoint.save(ck, arrays, meta)
    r = subprocess.run(edgeff_cmd("train", "--resume", run), capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "does not fit this model: w0" in r.stderr, r.stderr
    r = subprocess.run(edgeff_cmd("train", "--resume", tmp_path / "nowhere"), capture_output=True, text=True)
    assert r.returncode == 2 and "no checkpoint here" in r.stderr


def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / checkpoint.NAME
    make_checkpoint(path)
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)                       # the write fails as on a full disk
    with pytest.raises(EdgeFFError, match="the disk is full; the previous checkpoint is kept"):
        checkpoint.save(path, {"w0": np.zeros(3, np.float32)}, {})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [checkpoint.NAME]             # no temp file left behind


def test_a_resumed_run_keeps_the_blas_thread_count_its_sums_were_made_with(data, tmp_path):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: every run uses one BLAS thread")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    untuned = dict(env, EDGEFF_TUNING="off")                 # numpy's default: a thread per core
    fresh = tmp_path / "fresh"
    subprocess.run(edgeff_cmd(*train_args(data, fresh, "simultaneous")), check=True, env=untuned, timeout=600)
    assert json.loads((fresh / "metrics.json").read_text())["blas_threads"] >= 2
    run = tmp_path / "run"
    proc = subprocess.Popen(edgeff_cmd(*train_args(data, run, "simultaneous")), env=dict(untuned, OPENBLAS_NUM_THREADS="1"))
    while proc.poll() is None and not (run / checkpoint.NAME).exists():
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=600)
    if not (run / checkpoint.NAME).exists():
        pytest.fail("the run ended before its first checkpoint")
    subprocess.run(edgeff_cmd("train", "--resume", run, "--quiet"), check=True, env=untuned, timeout=600)
    assert json.loads((run / "metrics.json").read_text())["blas_threads"] == 1
