"""edgeff train/eval/infer/plan on conv nets, as a user runs them (real subprocesses), on a
small RGB data set made here, and the one-line errors of conv options given bad input."""

import json

import numpy as np
import pytest

from images import write_rgb_npz
from run_cli import edgeff, ok, one_line_error


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    """400 + 100 12x12 RGB images of 3 classes: a bright square in one of three places."""
    return write_rgb_npz(tmp_path_factory.mktemp("rgb") / "rgb.npz", 400, 100, 12)


def train(rgb, out, *extra):
    return edgeff("train", "--dataset", rgb, "--model", "cnn:8p/8", "--epochs", "4", "--batch-size", "32",
                  "--lr", "0.01", "--out", out, "--json", *extra)


@pytest.mark.parametrize("hybrid", ["none", "block", "net"])
def test_train_eval_infer_on_a_conv_net(rgb, tmp_path, hybrid):
    out = tmp_path / "run"
    m = ok(train(rgb, out, "--hybrid", hybrid))
    assert m["classifier"] == "last" and m["test_error"] < 0.2, m     # 3 classes: chance is 0.67
    assert m["model"] == "cnn:8p/8"
    again = ok(edgeff("eval", out, "--json"))
    assert again["test_error"] == m["test_error"]
    with np.load(rgb) as z:
        np.save(tmp_path / "x.npy", z["x_test"][:7])
        want = z["y_test"][:7]
    labels = ok(edgeff("infer", out, tmp_path / "x.npy", "--json"))["labels"]
    assert len(labels) == 7 and np.mean(np.array(labels) == want) >= 5 / 7


def test_plan_of_a_conv_net_keeps_less_than_backprop(rgb):
    ff = ok(edgeff("plan", "--dataset", rgb, "--model", "cnn:8p-8-8", "--json"))
    bp = ok(edgeff("plan", "--dataset", rgb, "--model", "cnn:8p-8-8", "--hybrid", "net", "--json"))
    assert ff["ff_activation_bytes"] < ff["backprop_activation_bytes"] == bp["ff_activation_bytes"]
    assert bp["arena_bytes"] > ff["arena_bytes"]


def test_plan_counts_the_conv_columns_as_workspace_not_activations(rgb):
    """The conv kernels' scratch is its own kind, one per block, the same for FF and backprop."""
    for hybrid in ("none", "net"):
        plan = ok(edgeff("plan", "--dataset", rgb, "--model", "cnn:8p-8-8", "--hybrid", hybrid, "--json"))
        spaces = [b for b in plan["buffers"] if b["name"].endswith(".workspace")]
        assert spaces and all(b["kind"] == "workspace" for b in spaces)
        assert plan["workspace_bytes"] == max(b["bytes"] for b in spaces)
        assert not any(b["kind"] == "activations" and "scratch" in b["name"] for b in plan["buffers"])
        if hybrid == "none":
            ff = plan
    assert plan["workspace_bytes"] == ff["workspace_bytes"]
    text = edgeff("plan", "--dataset", rgb, "--model", "cnn:8p-8-8")
    assert text.returncode == 0 and "kernel workspace (conv columns, not activations)" in text.stdout


@pytest.mark.parametrize("args, fragments", [
    (["--model", "cnn:8x"], ["bad conv spec", "'8x'"]),
    (["--model", "cnn:8k4"], ["odd kernel"]),
    (["--model", "conv-small", "--width-mult", "0"], ["--width-mult"]),
    (["--model", "conv-small", "--hybrid", "all"], ["--hybrid"]),
    (["--model", "conv-small", "--classifier", "linear"], ["class goodness"]),
    (["--model", "conv-small", "--classifier", "first"], ["class goodness"]),
    (["--model", "cnn:8p-8p-8p-8p"], ["does not fit"]),
])
def test_bad_conv_options_are_one_line(rgb, tmp_path, args, fragments):
    r = edgeff("train", "--dataset", rgb, "--out", tmp_path / "r", *args)
    one_line_error(r, *fragments) if "--hybrid" not in args else None
    assert r.returncode == 2 and not (tmp_path / "r").exists()
    for f in fragments:
        assert f in r.stderr


def test_a_conv_net_refuses_flat_rows(tmp_path):
    path = tmp_path / "flat.npz"
    rows = np.zeros((10, 20), np.float32)
    np.savez(path, x_train=rows, y_train=np.arange(10) % 2, x_test=rows, y_test=np.arange(10) % 2)
    one_line_error(edgeff("train", "--dataset", path, "--model", "conv-small"), "takes images", "flat rows")


def test_init_and_freeze_from_the_command_line(rgb, tmp_path):
    base = ok(train(rgb, tmp_path / "base"))
    tuned = ok(edgeff("train", "--dataset", rgb, "--init", tmp_path / "base", "--freeze", "1", "--epochs", "1",
                      "--batch-size", "32", "--out", tmp_path / "tuned", "--json"))
    assert tuned["model"] == base["model"] and tuned["test_error"] < 0.2
    stored = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert stored["init"] == str(tmp_path / "base") and stored["freeze"] == 1
    dry = lambda *more: ok(edgeff("train", "--dataset", rgb, "--init", tmp_path / "base", "--batch-size", "32",
                                  "--dry-run", "--json", *more))
    frozen, free = dry("--freeze", "1"), dry()
    assert frozen["arena_bytes"] < free["arena_bytes"]       # no gradients or optimiser state for block 1
    assert not any(b["name"].startswith(("g0.0.", "opt0_0.0.")) for b in frozen["buffers"])
    for args, fragments in [
        (["--freeze", "1"], ["--freeze keeps the blocks of an --init run"]),
        (["--init", tmp_path / "base", "--freeze", "3"], ["--freeze 3", "2 blocks"]),
        (["--init", tmp_path / "base", "--model", "cnn:8p/16"], ["--model cnn:8p/16 differs from --init's"]),
        (["--init", tmp_path / "nowhere"], ["nowhere"]),
    ]:
        r = edgeff("train", "--dataset", rgb, "--epochs", "1", "--out", tmp_path / "bad", *args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert all(f in r.stderr for f in fragments), r.stderr


def test_eval_reports_both_votes_and_refuses_a_dense_classifier(rgb, tmp_path):
    m = ok(train(rgb, tmp_path / "run", "--classifier", "last"))
    assert m["classifier"] == "last" and m["test_error"] == m["test_error_last"]
    both = ok(edgeff("eval", tmp_path / "run", "--classifier", "all", "--json"))
    assert set(both) >= {"test_error_goodness", "test_error_last"} and both["test_error_last"] == m["test_error_last"]
    one_line_error(edgeff("eval", tmp_path / "run", "--classifier", "linear"), "has no linear classifier",
                   "goodness or last")
    one_line_error(edgeff("train", "--dataset", rgb, "--model", "12-4", "--classifier", "last"), "for conv nets")
    one_line_error(edgeff("export", tmp_path / "run", "-o", tmp_path / "m.onnx", "--head", "first"), "for dense nets")
    assert not (tmp_path / "m.onnx").exists()
