"""edgeff profile on conv nets: a real subprocess on a small RGB .npz; a row per block timed
through the trainer's step hook, FF against backprop (the --hybrid net plan), the report
files, a run directory, sweeps of --hybrid, and the one-line errors of options a net lacks."""

import json

import numpy as np
import pytest

from run_cli import edgeff, ok, one_line_error
from test_profile import SETTING, check_schema

MODEL = "cnn:8p/8s2-8"
BLOCK = {"type": "object", "required": ["block", "layers", "in_shape", "out_shape", "params", "weights_bytes",
                                        "optimizer_bytes", "activations_bytes", "gradients_bytes",
                                        "workspace_bytes", "backprop_activation_bytes", "step_seconds"],
         "properties": {k: {"type": "integer", "minimum": 0} for k in
                        ("weights_bytes", "optimizer_bytes", "activations_bytes", "gradients_bytes",
                         "workspace_bytes")}}
CONV_SETTING = dict(SETTING, required=SETTING["required"] + ["hybrid", "width_mult", "backprop"],
                    properties=dict(SETTING["properties"], layers={"type": "array", "minItems": 1, "items": BLOCK}))


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    """200 + 50 12x12 RGB images of 3 classes."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (250, 12, 12, 3), dtype=np.uint8)
    y = rng.integers(0, 3, 250)
    path = tmp_path_factory.mktemp("rgb") / "rgb.npz"
    np.savez(path, x_train=x[:200], y_train=y[:200], x_test=x[200:], y_test=y[200:])
    return path


@pytest.fixture(scope="module")
def profiled(rgb, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    r = ok(edgeff("profile", "--dataset", rgb, "--model", MODEL, "--batch-size", "32", "--steps", "6",
                  "--target", "rpi-zero2w", "-o", out, "--format", "json,md", "--json"))
    return out, r


def test_a_row_per_block_timed_by_the_trainer(profiled):
    out, r = profiled
    assert json.loads((out / "report.json").read_text()) == r
    check_schema(r, dict(CONV_SETTING, properties=dict(CONV_SETTING["properties"],
                                                       settings={"type": "array", "items": CONV_SETTING})))
    assert r["hybrid"] == "none" and r["schedule"] is None and r["phases"] == ["all blocks"]
    assert [row["block"] for row in r["layers"]] == [1, 2, 3]
    assert [(row["in_shape"], row["out_shape"]) for row in r["layers"]] == [
        ([3, 12, 12], [8, 6, 6]), ([8, 6, 6], [8, 3, 3]), ([8, 3, 3], [8, 3, 3])]
    assert r["layers"][1]["layers"].startswith("conv2d(out=8,k=3,stride=2")
    for row in r["layers"]:
        assert row["step_seconds"] > 0 and min(row[f"{k}_bytes"] for k in ("weights", "optimizer", "activations",
                                                                            "gradients")) > 0
    assert r["weights_bytes"] == sum(row["weights_bytes"] for row in r["layers"])
    assert r["nrt_allocations_in_loop"] == 0 and r["steps"] >= 6
    md = (out / "report.md").read_text()
    assert "### Per block" in md and "| block | layers |" in md and "Hybrid none" in md


def test_ff_against_backprop_is_the_hybrid_net_plan(profiled, rgb):
    _, r = profiled
    plan = ok(edgeff("plan", "--dataset", rgb, "--model", MODEL, "--batch-size", "32", "--json"))
    whole = ok(edgeff("plan", "--dataset", rgb, "--model", MODEL, "--batch-size", "32", "--hybrid", "net", "--json"))
    assert r["backprop_activation_bytes"] == plan["backprop_activation_bytes"] == whole["ff_activation_bytes"]
    assert r["backprop"]["activations"] == r["backprop_activation_bytes"]
    assert r["ff_activation_bytes"] == plan["ff_activation_bytes"] and r["arena_bytes"] == plan["arena_bytes"]
    assert r["backprop"]["total"] == sum(r["backprop"][k] for k in ("weights", "optimizer", "gradients", "activations",
                                                                     "workspace"))
    assert r["workspace_bytes"] == r["ff_by_kind"]["workspace"] == r["backprop"]["workspace"] > 0
    assert max(row["workspace_bytes"] for row in r["layers"]) == r["workspace_bytes"]


def test_a_conv_run_dir_and_a_sweep_of_hybrid(rgb, tmp_path):
    run = tmp_path / "run"
    ok(edgeff("train", "--dataset", rgb, "--model", "cnn:8-8-8-8", "--epochs", "1", "--batch-size", "50",
              "--out", run, "--json"))
    r = ok(edgeff("profile", run, "--steps", "4", "--sweep", "hybrid=none,net", "--format", "json",
                  "-o", tmp_path / "out", "--json"))
    ff, bp = r["settings"]
    assert (ff["setting"], bp["setting"]) == ("hybrid=none", "hybrid=net") and r["run_dir"] == str(run)
    assert ff["batch_size"] == bp["batch_size"] == 50 and len(ff["layers"]) == 4 and len(bp["layers"]) == 1
    assert ff["ff_activation_bytes"] < ff["backprop_activation_bytes"] == bp["ff_activation_bytes"]
    assert bp["phases"] == ["block 1"]


@pytest.mark.parametrize("model, sweep, fragments", [
    (MODEL, "schedule=layerwise", ["--sweep schedule", "conv net", "no --schedule"]),
    (MODEL, "model=432-20", ["--sweep model 432-20", "a conv net"]),
    ("432-20", "hybrid=none,net", ["--sweep hybrid", "dense net"]),
])
def test_options_a_net_lacks_are_one_line(rgb, tmp_path, model, sweep, fragments):
    one_line_error(edgeff("profile", "--dataset", rgb, "--model", model, "--sweep", sweep, "-o", tmp_path / "o"),
                   *fragments)
    assert not (tmp_path / "o").exists()
