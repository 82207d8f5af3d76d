"""The device CLI end to end, as a user runs it: a real subprocess, real files."""

import json
import os

import numpy as np
import pytest

from run_cli import edgeff


def strict_json(text):
    """json.loads that refuses NaN, Infinity and -Infinity, as strict parsers do."""
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")
    return json.loads(text, parse_constant=refuse)


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
    return out, strict_json(r.stdout.strip().splitlines()[-1])


def test_train_json_and_files(trained):
    out, metrics = trained
    for key in ("test_error", "train_seconds", "ff_seconds", "head_seconds", "train_samples", "compile_seconds",
                "peak_rss_mib"):
        assert key in metrics, key
    assert metrics["ff_seconds"] > 0 and metrics["head_seconds"] > 0     # the head trains 3 epochs by default
    assert abs(metrics["ff_seconds"] + metrics["head_seconds"] - metrics["train_seconds"]) <= 0.002
    assert metrics["train_samples"] == 400
    assert 0 <= metrics["test_error"] < 0.1
    assert metrics["peak_rss_mib"] > 10
    assert sorted(os.listdir(out)) == ["config.json", "metrics.json", "model.npz"]
    assert json.loads((out / "config.json").read_text())["model"] == "20-64-64"


def test_train_writes_strict_json(trained):
    out, _ = trained             # and the --json line, parsed by the fixture
    for name in ("metrics.json", "config.json"):
        strict_json((out / name).read_text())


def test_divergence_exits_3_with_one_line_and_saves_no_model(blobs_npz, tmp_path):
    """The first update throws the weights to +-1e30; the second batch's loss is Inf. Training
    stops there: no model.npz or metrics.json, no --json line, the last checkpoint stays."""
    out = tmp_path / "r"
    r = edgeff("train", "--dataset", blobs_npz, "--model", "20-8", "--epochs", "2", "--batch-size", "32",
               "--lr", "1e30", "--checkpoint-every", "1", "--out", out, "--json")
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert r.stderr.strip().splitlines() == ["edgeff: error: training diverged: layer 1/1's loss became Inf in "
                                             "epoch 1/2 (batch 2); no model saved; try a smaller --lr (now 1e+30)"]
    assert r.stdout == ""
    assert os.listdir(out) == ["checkpoint.npz"]


def test_eval_reproduces_the_trained_error(trained):
    out, metrics = trained
    r = edgeff("eval", out, "--classifier", "all", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["test_error_linear"] == metrics["test_error_linear"]
    assert got["test_error_goodness"] == metrics["test_error_goodness"]
    assert got["test_error_first"] == metrics["test_error_first"]


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
    (["--lr", "-1"], "--lr must be a number above 0"),
    (["--dataset", "no-such-set"], "no-such-set"),
    (["--dataset", "/nonexistent/x.npz"], "x.npz"),
    (["--bogus-flag"], "unrecognized"),
    (["--shift", "1"], "--shift moves images"),
    (["--shift", "9"], "--shift must be a whole number from 0 to 8"),
    (["--lr", "inf"], "--lr must be a number above 0"),
    (["--threshold", "nan"], "--threshold must be a number from"),
    (["--seed", "-1"], "--seed must be a whole number from 0 to 4294967295"),
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
