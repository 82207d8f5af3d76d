"""The device CLI end to end, as a user runs it: a real subprocess, real files."""

import json
import os

import numpy as np
import pytest

from run_cli import edgeff


@pytest.fixture(scope="module")
def blobs_npz(tmp_path_factory):
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 1, (3, 20))
    path = tmp_path_factory.mktemp("data") / "blobs.npz"
    y_train, y_test = rng.integers(0, 3, 400), rng.integers(0, 3, 200)
    x = lambda y: np.clip(centres[y] + 0.1 * rng.standard_normal((len(y), 20)), 0, 1).astype(np.float32)
    np.savez(path, x_train=x(y_train), y_train=y_train, x_test=x(y_test), y_test=y_test)
    return path


@pytest.fixture(scope="module")
def trained(blobs_npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    r = edgeff("train", "--dataset", blobs_npz, "--model", "20-64-64", "--epochs", "30", "--batch-size", "32",
               "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout.strip().splitlines()[-1])


def test_train_json_and_files(trained):
    out, metrics = trained
    for key in ("test_error", "train_seconds", "train_samples", "compile_seconds", "peak_rss_mib"):
        assert key in metrics, key
    assert metrics["train_samples"] == 400
    assert 0 <= metrics["test_error"] < 0.1
    assert metrics["peak_rss_mib"] > 10
    assert sorted(os.listdir(out)) == ["config.json", "metrics.json", "model.npz"]
    assert json.loads((out / "config.json").read_text())["model"] == "20-64-64"


def test_eval_reproduces_the_trained_error(trained):
    out, metrics = trained
    r = edgeff("eval", out, "--classifier", "all", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["test_error_linear"] == metrics["test_error_linear"]
    assert got["test_error_goodness"] == metrics["test_error_goodness"]


def test_refuses_to_overwrite_a_run_without_force(trained, blobs_npz):
    out, _ = trained
    before = (out / "model.npz").read_bytes()
    r = edgeff("train", "--dataset", blobs_npz, "--model", "20-8", "--epochs", "1", "--out", out, "--quiet")
    assert r.returncode == 2 and "--force" in r.stderr
    assert (out / "model.npz").read_bytes() == before


@pytest.mark.parametrize("args, message", [
    (["--model", "20-0-10"], "positive integer"),
    (["--model", "20-abc"], "bad model spec"),
    (["--model", "30-16"], "takes 30 inputs"),
    (["--schedule", "sideways"], "invalid choice"),
    (["--epochs", "0"], "at least 1"),
    (["--lr", "-1"], "positive"),
    (["--dataset", "no-such-set"], "no-such-set"),
    (["--dataset", "/nonexistent/x.npz"], "x.npz"),
    (["--bogus-flag"], "unrecognized"),
    (["--shift", "1"], "--shift moves 2-D images"),
    (["--shift", "9"], "0 to 8 pixels"),
])
def test_user_mistakes_get_one_line_and_exit_2(args, message, blobs_npz, tmp_path):
    base = ["train", "--dataset", blobs_npz, "--model", "20-8", "--epochs", "1", "--out", tmp_path / "r"]
    r = edgeff(*base, *args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "r" / "model.npz").exists()


def test_eval_of_a_missing_or_corrupt_run(tmp_path, trained):
    r = edgeff("eval", tmp_path / "nothing")
    assert r.returncode == 2 and "no model.npz" in r.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    data = (trained[0] / "model.npz").read_bytes()
    (bad / "model.npz").write_bytes(data[: len(data) // 2])
    r = edgeff("eval", bad)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "not a readable edgeff model" in r.stderr


def test_bad_data_is_refused_before_training(tmp_path):
    path = tmp_path / "nan.npz"
    x = np.zeros((10, 4), np.float32)
    x[3, 2] = np.nan
    np.savez(path, x_train=x, y_train=np.zeros(10, int), x_test=x, y_test=np.zeros(10, int))
    r = edgeff("train", "--dataset", path, "--model", "4-8", "--out", tmp_path / "r")
    assert r.returncode == 2 and "NaN" in r.stderr
    assert not (tmp_path / "r").exists()
