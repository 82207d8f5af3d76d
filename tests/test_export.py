"""ONNX export and inference: every exported graph runs under onnxruntime and matches the NumPy forward."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgeff import export
from edgeff.errors import ExportError
from edgeff.model import FFNet
from images import write_images_npz
from run_cli import edgeff, one_line_error


def random_net(rng, d, image, mean, widths=(24, 17, 9), classes=5):
    net = FFNet.create([d, *widths], classes, 8.0, mean, rng, image=image)
    net.head_w = rng.standard_normal((sum(widths), classes)).astype(np.float32)
    net.head_b = rng.standard_normal(classes).astype(np.float32)
    return net


@pytest.mark.parametrize("opset", [export.MIN_OPSET, export.DEFAULT_OPSET, export.max_opset()])
@pytest.mark.parametrize("head", ["goodness", "linear", "both", "first"])   # a dense net's heads
@pytest.mark.parametrize("d,image,mean", [(30, True, False), (30, True, True), (4, False, False), (12, False, True)])
def test_graph_matches_numpy_forward(opset, head, d, image, mean):
    rng = np.random.default_rng(d + opset)
    net = random_net(rng, d, image, mean)
    model = export.check(export.build(net, head, opset))
    x = rng.random((203, d)).astype(np.float32)
    report = export.parity(export.session(model.SerializeToString()), net, x, head)
    assert report["ok"], report
    assert all(v == 1.0 for k, v in report.items() if k.endswith("_agreement")), report
    assert model.opset_import[0].version == opset
    # the same outputs by hand, independently of parity(): labels from the numpy forward
    got = dict(zip([o.name for o in model.graph.output], export.session(model.SerializeToString()).run(None, {"x": x})))
    if head != "linear":
        # first: the first layer's goodness of C full overlaid passes
        scored = [0] if head == "first" else None
        np.testing.assert_allclose(got["scores"], net.goodness_scores(x, 1.0, scored), rtol=1e-4, atol=1e-5)
    if head in ("linear", "both"):
        np.testing.assert_array_equal(got["label"], net.head_logits(x, 1.0).argmax(1))


def test_first_head_is_the_first_layer_alone():
    net = random_net(np.random.default_rng(2), 30, True, False)
    model = export.build(net, "first")
    assert [n.op_type for n in model.graph.node].count("MatMul") == 1
    assert [o.name for o in model.graph.output] == ["label", "scores"]


def test_first_layer_scores_are_the_first_layers_goodness_of_every_label_pass():
    rng = np.random.default_rng(3)
    for d, image, mean in ((30, True, False), (12, False, True)):
        net = random_net(rng, d, image, mean)
        x = rng.random((70, d)).astype(np.float32)
        want = net.goodness_scores(x, 1.0, score_layers=[0])
        np.testing.assert_allclose(net.first_layer_scores(x, 1.0, chunk=32), want, rtol=1e-4, atol=1e-5)
        assert (net.predict(x, 1.0, "first") == want.argmax(1)).mean() > 0.95


def test_first_layer_is_one_product_whatever_the_number_of_labels():
    net = random_net(np.random.default_rng(1), 30, True, False)
    model = export.build(net, "both")
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    assert len(matmuls) == len(net.weights) + 1          # one per layer and the head's


def test_unknown_layer_type_names_the_supported_ones():
    net = random_net(np.random.default_rng(2), 30, True, False)
    net.kinds[1] = "conv9x9"
    with pytest.raises(ExportError, match="'conv9x9'.*supported: dense"):
        export.build(net, "goodness")


def test_opset_outside_the_supported_range():
    net = random_net(np.random.default_rng(3), 30, True, False)
    with pytest.raises(ExportError, match=r"--opset 12 is outside"):
        export.build(net, "goodness", opset=12)


# ---------------------------------------------------------------- the CLI, end to end

@pytest.fixture(scope="module")
def images_npz(tmp_path_factory):
    """8x8 uint8 images of 3 classes (the label overlay replaces their first 3 pixels)."""
    return write_images_npz(tmp_path_factory.mktemp("data") / "images.npz", label_names=["ring", "bar", "dot"])


@pytest.fixture(scope="module")
def run_dir(images_npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    r = edgeff("train", "--dataset", images_npz, "--model", "64-40-30", "--epochs", "30", "--batch-size", "32",
               "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    r = edgeff("export", run_dir, "-o", path, "--head", "both", "--json")
    assert r.returncode == 0, r.stderr
    return path, json.loads(r.stdout)


def test_export_writes_a_checked_model_with_metadata(exported, run_dir):
    path, report = exported
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert report["parity"]["ok"] and report["parity"]["label_agreement"] == 1.0
    assert report["parity"]["goodness_label_agreement"] == 1.0
    assert model.producer_name == "edgeff" and model.producer_version and model.model_version >= 1
    meta = {p.key: p.value for p in model.metadata_props}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert json.loads(meta["test_error"])["test_error_linear"] == metrics["test_error_linear"]
    assert json.loads(meta["config"])["model"] == "64-40-30"
    assert json.loads(meta["label_names"]) == ["ring", "bar", "dot"]
    info = json.loads(meta["input"])
    assert info["shape"] == ["N", 64] and info["scale"] == pytest.approx(1 / 255) and info["image_shape"] == [8, 8]
    assert [o.name for o in model.graph.output] == ["label", "probabilities", "goodness_label", "scores"]


def infer(model, inp, *extra):
    r = edgeff("infer", model, inp, "--json", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_both_engines_give_the_same_labels(exported, run_dir, images_npz, tmp_path):
    path, _ = exported
    with np.load(images_npz) as z:
        x, y = z["x_test"], z["y_test"]
    np.save(tmp_path / "x.npy", x)
    for classifier in ("linear", "goodness"):
        numpy_run = infer(run_dir, tmp_path / "x.npy", "--classifier", classifier)
        onnx_run = infer(path, tmp_path / "x.npy", "--classifier", classifier)
        assert numpy_run["engine"] == "numpy" and onnx_run["engine"] == "onnxruntime"
        assert numpy_run["labels"] == onnx_run["labels"]
        assert np.mean(np.array(onnx_run["labels"]) != y) < 0.1
        assert onnx_run["names"] == [["ring", "bar", "dot"][c] for c in onnx_run["labels"]]
    assert infer(path, images_npz)["labels"] == infer(path, tmp_path / "x.npy")["labels"]  # .npz: x_test


def test_first_layer_classifier_exports_and_runs_on_both_engines(run_dir, images_npz, tmp_path):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["test_error_first"] < 0.2
    r = edgeff("export", run_dir, "-o", tmp_path / "first.onnx", "--head", "first", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["parity"]["ok"]
    with np.load(images_npz) as z:
        np.save(tmp_path / "x.npy", z["x_test"])
    onnx_run = infer(tmp_path / "first.onnx", tmp_path / "x.npy")
    assert onnx_run["classifier"] == "first"
    assert onnx_run["labels"] == infer(run_dir, tmp_path / "x.npy", "--classifier", "first")["labels"]
    r = edgeff("eval", run_dir, "--classifier", "first", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["test_error"] == metrics["test_error_first"]


def test_one_image_as_pgm(exported, images_npz, tmp_path):
    path, _ = exported
    with np.load(images_npz) as z:
        img = z["x_test"][0]
    pgm = tmp_path / "one.pgm"
    pgm.write_bytes(b"P5\n# an edgeff test\n8 8\n255\n" + img.tobytes())
    np.save(tmp_path / "one.npy", img)
    assert infer(path, pgm)["labels"] == infer(path, tmp_path / "one.npy")["labels"]
    text = tmp_path / "one_text.pgm"
    text.write_text("P2\n8 8\n255\n" + " ".join(map(str, img.ravel())) + "\n")
    assert infer(path, text)["labels"] == infer(path, pgm)["labels"]


def test_fixed_batch_model_pads_the_last_chunk(run_dir, images_npz, tmp_path):
    path = tmp_path / "fixed.onnx"
    r = edgeff("export", run_dir, "-o", path, "--batch", "7", "--quiet")
    assert r.returncode == 0, r.stderr
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [7, 64]
    with np.load(images_npz) as z:
        np.save(tmp_path / "x.npy", z["x_test"][:23])
    assert infer(path, tmp_path / "x.npy")["labels"] == infer(run_dir, tmp_path / "x.npy")["labels"]


@pytest.mark.parametrize("calibration", ["dynamic", "static"])
def test_int8_quantization(run_dir, images_npz, tmp_path, calibration):
    path = tmp_path / "int8.onnx"
    r = edgeff("export", run_dir, "-o", path, "--quantize", "int8", "--calibration", calibration, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["size_ratio"] < 0.7 and report["int8_bytes"] == path.stat().st_size
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeLinear", "QuantizeLinear") for n in model.graph.node)
    with np.load(images_npz) as z:
        np.save(tmp_path / "x.npy", z["x_test"])
        y = z["y_test"]
    labels = np.array(infer(path, tmp_path / "x.npy")["labels"])
    assert np.mean(labels != y) == pytest.approx(report["test_error_int8"])
    assert abs(report["test_error_change_pp"]) < 5


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing lost

def test_not_an_onnx_file(tmp_path, images_npz):
    bad = tmp_path / "junk.onnx"
    bad.write_bytes(b"\x00\x01 not a protobuf at all" * 10)
    one_line_error(edgeff("infer", bad, images_npz), "junk.onnx", "not a model onnxruntime can load")


def test_onnx_with_a_foreign_input_shape(tmp_path, images_npz):
    graph = helper.make_graph([helper.make_node("Relu", ["img"], ["label"])], "foreign",
                              [helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("label", TensorProto.FLOAT, [1, 3, 8, 8])])
    path = tmp_path / "foreign.onnx"
    opset = helper.make_opsetid("", 17)   # opset 17's IR version, as the exporter writes it: onnx's default is
    model = helper.make_model(graph, opset_imports=[opset],   # newer than onnxruntime 1.23 (Python 3.10) loads
                              ir_version=helper.find_min_ir_version_for([opset]))
    onnx.save(model, str(path))
    one_line_error(edgeff("infer", path, images_npz), "one float32 input [N, D]")


@pytest.mark.parametrize("array,message", [
    (np.zeros((4, 50), np.float32), "does not hold rows of the 64 features"),
    (np.zeros((4, 64), np.int64), "int64 values"),
    (np.full((2, 64), np.nan, np.float32), "NaN or Inf"),
])
def test_bad_inputs(exported, run_dir, tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    for model in (exported[0], run_dir):
        one_line_error(edgeff("infer", model, tmp_path / "bad.npy"), message)


def test_failed_export_keeps_the_earlier_file(run_dir, tmp_path, images_npz):
    target = tmp_path / "keep.onnx"
    target.write_bytes(b"the earlier model")
    headless = tmp_path / "headless"
    r = edgeff("train", "--dataset", images_npz, "--model", "64-16", "--epochs", "1", "--head-epochs", "0",
               "--classifier", "goodness", "--out", headless, "--quiet")
    assert r.returncode == 0, r.stderr
    one_line_error(edgeff("export", headless, "-o", target, "--head", "linear"), "no linear head")
    one_line_error(edgeff("export", run_dir, "-o", target, "--opset", "99"), "--opset 99")
    one_line_error(edgeff("export", run_dir, "-o", target, "--batch", "zero"), "--batch")
    assert target.read_bytes() == b"the earlier model"
