"""ONNX export of conv FF nets: every layer kind under onnxruntime against ConvNet.block_scores,
gray and RGB, old and new opsets; the CLI (export, infer, int8) on a small trained RGB run."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgeff import export
from edgeff.convnet import ConvNet
from images import write_rgb_npz
from run_cli import edgeff, ok, one_line_error


def conv(out, k=3, stride=1, groups=1):
    return {"kind": "conv2d", "out": out, "k": k, "stride": stride, "pad": k // 2, "groups": groups}


RELU, POOL = {"kind": "relu"}, {"kind": "maxpool", "k": 2}
# every kind: a plain 3x3 conv, max pool, a depthwise stride-2 conv, a pointwise conv, a grouped conv
BLOCKS = [[conv(6), RELU, POOL], [conv(6, stride=2, groups=6), RELU], [conv(8, k=1), RELU, conv(8, groups=2), RELU]]


@pytest.mark.parametrize("opset", [export.MIN_OPSET, 16, 17, export.max_opset()])
@pytest.mark.parametrize("in_shape", [(1, 12, 12), (3, 12, 10)])
def test_graph_matches_block_scores(opset, in_shape):
    rng = np.random.default_rng(opset + in_shape[0])
    net = ConvNet.create(in_shape, BLOCKS, 5, rng)
    model = export.check(export.build(net, "goodness", opset))
    x = rng.random((61, net.in_features)).astype(np.float32)
    sess = export.session(model.SerializeToString())
    report = export.parity(sess, net, x, "goodness")
    assert report["ok"] and report["label_agreement"] == 1.0, report
    ops = {n.op_type for n in model.graph.node}
    assert {"Conv", "Relu", "MaxPool", "Mean"} <= ops
    assert ("LayerNormalization" in ops) == (opset >= 17)
    labels, scores = sess.run(["label", "scores"], {"x": x})
    want = net.block_scores(x, 1.0).mean(axis=1)                  # independently of parity()
    np.testing.assert_allclose(scores, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(labels, net.predict(x, 1.0))


def test_a_fixed_batch_graph_of_one_block():
    rng = np.random.default_rng(5)
    net = ConvNet.create((3, 8, 8), [[conv(4), RELU, POOL, conv(4, stride=2), RELU]], 3, rng)   # --hybrid net
    model = export.check(export.build(net, "goodness", batch="7"))
    x = rng.random((7, net.in_features)).astype(np.float32)
    assert export.parity(export.session(model.SerializeToString()), net, x, "goodness")["ok"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 7


# ---------------------------------------------------------------- the CLI on a trained RGB run

@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    """300 + 90 10x10 RGB images of 3 classes: a bright square in one of three places."""
    return write_rgb_npz(tmp_path_factory.mktemp("rgb") / "rgb.npz", 300, 90, 10, ["top", "middle", "bottom"])


@pytest.fixture(scope="module")
def run_dir(rgb, tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "run"
    ok(edgeff("train", "--dataset", rgb, "--model", "cnn:6p/8s2-8", "--epochs", "2", "--batch-size", "32",
              "--lr", "0.01", "--out", out, "--json"))
    return out


@pytest.mark.parametrize("head", ["goodness", "last"])
def test_export_and_infer_give_the_runs_labels(run_dir, rgb, tmp_path, head):
    path = tmp_path / "conv.onnx"
    report = ok(edgeff("export", run_dir, "-o", path, "--head", head, "--json"))
    assert report["parity"]["ok"] and report["parity"]["samples"] == 90, report
    assert report["parity"]["scores_max_abs_diff"] < 1e-4
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["input"])["scale"] == pytest.approx(1 / 255)
    assert json.loads(meta["input"])["image_shape"] == [10, 10, 3]
    assert json.loads(meta["label_names"]) == ["top", "middle", "bottom"] and meta["head"] == head
    heads = [n for n in model.graph.node if n.op_type == "Conv" and n.name.endswith(".head")]
    assert len(heads) == (3 if head == "goodness" else 1)       # 3 blocks; the last vote needs the last head only
    with np.load(rgb) as z:
        np.save(tmp_path / "x.npy", z["x_test"])
    by_onnx = ok(edgeff("infer", path, tmp_path / "x.npy", "--json"))
    by_run = ok(edgeff("infer", run_dir, tmp_path / "x.npy", "--classifier", head, "--json"))
    assert by_onnx["engine"] == "onnxruntime" and by_run["engine"] == "numpy" and by_onnx["classifier"] == head
    assert by_onnx["labels"] == by_run["labels"] and by_onnx["names"] == by_run["names"]
    other = "last" if head == "goodness" else "goodness"
    one_line_error(edgeff("infer", path, tmp_path / "x.npy", "--classifier", other), f"has no {other} output")


@pytest.mark.parametrize("calibration", ["dynamic", "static"])
def test_int8_conv_export(run_dir, tmp_path, calibration):
    path = tmp_path / "int8.onnx"
    report = ok(edgeff("export", run_dir, "-o", path, "--quantize", "int8", "--calibration", calibration, "--json"))
    assert report["int8_bytes"] == path.stat().st_size
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ops & {"ConvInteger", "QuantizeLinear"}, ops
    assert abs(report["test_error_change_pp"]) < 10, report


@pytest.mark.parametrize("head", ["linear", "both"])
def test_a_linear_head_is_one_line_and_writes_nothing(run_dir, tmp_path, head):
    path = tmp_path / "m.onnx"
    one_line_error(edgeff("export", run_dir, "-o", path, "--head", head), f"--head {head}", "conv net")
    assert not path.exists()


def test_bench_infer_runs_on_a_conv_run(run_dir):
    tool = Path(__file__).resolve().parent.parent / "tools" / "bench_infer.py"
    r = subprocess.run([sys.executable, str(tool), str(run_dir), "--seconds", "0.05", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    assert [(row["head"], row["batch"]) for row in rows] == [("goodness", 1), ("goodness", 256), ("last", 1), ("last", 256)]
    assert all(row[e] > 0 for row in rows for e in ("numpy", "onnxruntime", "onnxruntime-int8"))
