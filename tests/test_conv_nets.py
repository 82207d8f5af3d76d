"""The layer kinds of ResNet and MobileNetV3 (residual, hardswish, squeeze-excite): kernels and
kinds against their NumPy twins, their gradients inside a block against finite differences,
crafted nested specs in a model file; the named nets' shapes; the CLI on them."""

import numpy as np
import pytest

from edgeff import conv_models
from edgeff.conv_models import conv_blocks
from edgeff.convnet import ConvNet
from edgeff.errors import ModelError, UsageError
from edgeff.kernels import mobile
from edgeff.kernels import reference as ref
from edgeff.layers import BLOCK_KINDS
from edgeff.model import read_model_file
from edgeff.sff_train import ConvTrainer
from run_cli import edgeff, ok, one_line_error
from test_conv_cli import rgb  # noqa: F401  (the small RGB data set, a fixture)
import test_conv_ff
from test_conv_ff import close, conv_cfg, rand, tiny_data


# ---- kernels against their twins ----

@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 4), (3, 7, 2, 9)])
def test_mobile_kernels_match_their_twins(shape):
    rng = np.random.default_rng(shape[1])
    x, dy = rand(rng, *shape) * 4, rand(rng, *shape)       # x spans hardswish's three pieces
    x.reshape(-1)[:2] = [-3.5, 3.5][:x.size]
    n, c = shape[:2]
    close(mobile.hardswish(x, np.empty_like(x)), ref.hardswish(x, np.empty(shape)))
    close(mobile.hardswish_grad(x, dy, np.empty_like(x)), ref.hardswish_grad(x, dy, np.empty(shape)))
    close(mobile.channel_mean(x, np.empty((n, c), np.float32)), ref.channel_mean(x, np.empty((n, c))))
    u, ds = rand(rng, n, c) * 4, rand(rng, n, c)
    close(mobile.gate(x, u, np.empty_like(x)), ref.gate(x, u, np.empty(shape)))
    close(mobile.gate_grad(x, dy, u, np.empty((n, c), np.float32)), ref.gate_grad(x, dy, u, np.empty((n, c))))
    close(mobile.gate_input_grad(dy, u, ds, np.empty_like(x)), ref.gate_input_grad(dy, u, ds, np.empty(shape)))


def test_mobile_kernels_refuse_mismatched_arrays():
    x = np.zeros((2, 3, 4, 4), np.float32)
    with pytest.raises(ValueError, match="one shape"):
        mobile.hardswish(x, np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(ValueError, match="per-channel"):
        mobile.gate(x, np.zeros((2, 4), np.float32), np.zeros_like(x))
    with pytest.raises(ValueError, match="one shape"):
        mobile.hardswish_grad(x, x.astype(np.float64), x)


# ---- each kind's forward against its twin ----

def conv(out, k=1, stride=1, groups=1):
    return {"kind": "conv2d", "out": out, "k": k, "stride": stride, "pad": k // 2, "groups": groups}


INVERTED = {"kind": "residual", "shortcut": [],
            "body": [conv(8), {"kind": "hardswish"}, conv(8, 3, 1, 8), {"kind": "relu"}, {"kind": "se", "mid": 2}, conv(4)]}
BASIC = {"kind": "residual", "body": [conv(6, 3, 2), {"kind": "relu"}, conv(6, 3)], "shortcut": [conv(6, 1, 2)]}


@pytest.mark.parametrize("spec, shape", [({"kind": "hardswish"}, (4, 5, 5)), ({"kind": "se", "mid": 3}, (4, 5, 5)),
                                         (INVERTED, (4, 6, 6)), (BASIC, (4, 7, 7)), (BASIC, (4, 8, 8))])
def test_each_kind_forward_matches_its_twin(spec, shape):
    kind, rng, n = BLOCK_KINDS[spec["kind"]], np.random.default_rng(7), 3
    params = {name: np.empty(s, np.float32) for name, s in kind.param_shapes(spec, shape).items()}
    kind.init(spec, shape, params, rng)
    x = rand(rng, n, *shape)
    y = np.empty((n, *kind.out_shape(spec, shape)), np.float32)
    scratch = kind.scratch_size(spec, shape, n).allocate()
    for part in scratch:
        if part is not None:
            part[:] = np.nan
    kind.forward(spec, params, x, y, scratch)
    close(y, kind.reference(spec, params, x))


@pytest.mark.parametrize("spec, shape", [({"kind": "hardswish"}, (3, 4, 4)), ({"kind": "se", "mid": 2}, (5, 3, 3)),
                                         (INVERTED, (4, 5, 5)), (BASIC, (4, 5, 5))])
def test_each_kind_backward_matches_finite_differences(spec, shape):
    """dx and every parameter gradient of the loss sum(r * y), against its twin's finite differences."""
    kind, rng, n = BLOCK_KINDS[spec["kind"]], np.random.default_rng(8), 2
    params = {name: np.empty(s, np.float32) for name, s in kind.param_shapes(spec, shape).items()}
    kind.init(spec, shape, params, rng)
    for p in params.values():
        p *= 2                         # the squeeze-excite's gate and its mean path weigh in dx
    x = rand(rng, n, *shape) * 2
    y_shape = (n, *kind.out_shape(spec, shape))
    r, y, scratch = rand(rng, *y_shape), np.empty(y_shape, np.float32), kind.scratch_size(spec, shape, n).allocate()
    kind.forward(spec, params, x, y, scratch)
    dx, grads = np.empty_like(x), {name: np.full_like(p, np.nan) for name, p in params.items()}
    kind.backward(spec, params, x, y, r.copy(), dx, grads, scratch)
    p64 = {name: p.astype(np.float64) for name, p in params.items()}
    loss = lambda p, xs: (kind.reference(spec, p, xs) * r).sum()
    scale = max([np.abs(dx).max()] + [np.abs(g).max() for g in grads.values()])
    for name, analytic in [("x", dx)] + list(grads.items()):
        base = x.astype(np.float64) if name == "x" else p64[name]
        for i in map(tuple, rng.integers(0, analytic.shape, (6, analytic.ndim))):
            def at(step):
                moved = base.copy()
                moved[i] += step
                return loss(p64, moved) if name == "x" else loss(dict(p64, **{name: moved}), x.astype(np.float64))
            numeric = (at(1e-5) - at(-1e-5)) / 2e-5
            assert abs(numeric - analytic[i]) < 1e-4 * scale, (name, i, numeric, analytic[i])


@pytest.mark.parametrize("spec, shape", [({"kind": "hardswish"}, (3, 4, 4)), ({"kind": "se", "mid": 2}, (5, 3, 3)),
                                         (INVERTED, (4, 5, 5)), (BASIC, (4, 5, 5))])
def test_each_kinds_onnx_nodes_match_its_twin_in_onnxruntime(spec, shape):
    onnx, ort = pytest.importorskip("onnx"), pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper
    kind, rng, n = BLOCK_KINDS[spec["kind"]], np.random.default_rng(9), 2
    params = {name: np.empty(s, np.float32) for name, s in kind.param_shapes(spec, shape).items()}
    kind.init(spec, shape, params, rng)
    x, y_shape = rand(rng, n, *shape) * 3, (n, *kind.out_shape(spec, shape))
    made = kind.onnx_node(spec, helper, "L", "x", "y", {name: f"L.{name}" for name in params})
    graph = helper.make_graph(made, "kind",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                              [numpy_helper.from_array(p, f"L.{name}") for name, p in params.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    close(session.run(None, {"x": x})[0], kind.reference(spec, params, x))


def test_residual_refuses_a_body_and_shortcut_that_do_not_fit():
    kind = BLOCK_KINDS["residual"]
    with pytest.raises(ValueError, match="identity shortcut does not fit"):
        kind.out_shape(dict(BASIC, shortcut=[]), (4, 8, 8))
    with pytest.raises(ValueError, match="shortcut must be a conv2d"):
        kind.out_shape(dict(BASIC, shortcut=[conv(6)]), (4, 8, 8))
    with pytest.raises(ValueError, match="end with a conv2d"):
        kind.out_shape(dict(BASIC, body=BASIC["body"][:2]), (4, 8, 8))


# ---- gradients inside blocks against finite differences ----

def tiny_mobile(scale):
    """A stem, an inverted residual block (identity skip), a basic block with a strided projection."""
    return [([[conv(4, 3), {"kind": "hardswish"}]], False),
            ([[conv(8), {"kind": "hardswish"}], [conv(8, 3, 1, 8), {"kind": "relu"}, {"kind": "se", "mid": 2}],
              [conv(4)]], True),
            ([[conv(6, 3, 2), {"kind": "relu"}], [conv(6, 3), {"kind": "relu"}]], True)]


@pytest.mark.parametrize("hybrid", ["block", "net"])
def test_residual_block_gradients_match_finite_differences(monkeypatch, hybrid):
    monkeypatch.setitem(conv_models.NETS, "tiny-mobile", tiny_mobile)
    kinds = [layer["kind"] for block in conv_blocks("tiny-mobile", 1.0, hybrid) for layer in block]
    assert kinds.count("residual") == 2 and "hardswish" in kinds
    monkeypatch.setattr(test_conv_ff, "conv_cfg", lambda **kw: conv_cfg(model="tiny-mobile", **kw))
    test_conv_ff.test_block_gradients_match_finite_differences(hybrid)      # its check, on this net


# ---- the model file ----

def saved(tmp_path, model="tiny-mobile", hybrid="block"):
    ds = tiny_data(h=8, w=8, c=3)
    cfg = conv_cfg(model=model, hybrid=hybrid, epochs=1)
    trainer = ConvTrainer(cfg, ds)
    trainer.fit()
    trainer.net.save(tmp_path / "m.npz", cfg.to_json())
    return trainer.net, ds, read_model_file(tmp_path / "m.npz")


def test_model_file_round_trip_of_residual_blocks(tmp_path, monkeypatch):
    monkeypatch.setitem(conv_models.NETS, "tiny-mobile", tiny_mobile)
    net, ds, (arrays, meta) = saved(tmp_path)
    assert "1.0.b4.w1" in arrays and "2.0.s.w" in arrays          # the squeeze-excite's, the projection's
    back, _ = ConvNet.from_arrays("m.npz", arrays, meta)
    assert back.blocks == net.blocks
    assert np.array_equal(back.block_scores(ds.x_test, ds.scale), net.block_scores(ds.x_test, ds.scale))


def body(m):
    return m["blocks"][1][0]["body"]


@pytest.mark.parametrize("damage, message", [
    (lambda a, m: body(m).append({"kind": "softmax"}), r"body\[6\].*not a layer edgeff knows"),
    (lambda a, m: body(m).__setitem__(0, {"kind": ["conv2d"]}), "not a layer edgeff knows"),
    (lambda a, m: body(m)[2].update(groups=3), "groups=3 must divide"),
    (lambda a, m: body(m)[4].update(mid=0), "'mid' is 0"),
    (lambda a, m: body(m)[1].update(extra=1), "has fields"),
    (lambda a, m: body(m).append(dict(m["blocks"][1][0])), "inside another"),
    (lambda a, m: m["blocks"][1][0].update(body=[]), "a list of 1 to 16 layers"),
    (lambda a, m: m["blocks"][1][0].update(body={"kind": "relu"}), "'body'"),
    (lambda a, m: m["blocks"][1][0].pop("shortcut"), "has fields"),
    (lambda a, m: m["blocks"][1][0].update(shortcut=[conv(4), conv(4)]), "a list of 0 to 1 layers"),
    (lambda a, m: m["blocks"][1][0].update(shortcut=[{"kind": "relu"}]), "shortcut must be a conv2d"),
    (lambda a, m: m["blocks"][2][0].update(shortcut=[]), "identity shortcut does not fit"),
    (lambda a, m: body(m).pop(), "end with a conv2d"),
    (lambda a, m: a.pop("2.0.s.w"), "no array '2.0.s.w'"),
    (lambda a, m: a.update({"1.0.b4.w2": a["1.0.b4.w2"][:1]}), "array '1.0.b4.w2'"),
])
def test_a_crafted_nested_spec_is_a_model_error(tmp_path, monkeypatch, damage, message):
    monkeypatch.setitem(conv_models.NETS, "tiny-mobile", tiny_mobile)
    _, _, (arrays, meta) = saved(tmp_path)
    arrays = {k: v.copy() for k, v in arrays.items()}
    damage(arrays, meta)
    with pytest.raises(ModelError, match=message):
        ConvNet.from_arrays("m.npz", arrays, meta)


# ---- the named nets ----

def shapes(model, in_shape, hybrid, width=0.25):
    """Every block's output shape."""
    out, shape = [], in_shape
    for block in conv_blocks(model, width, hybrid):
        for spec in block:
            shape = BLOCK_KINDS[spec["kind"]].out_shape(spec, shape)
        out.append(shape)
    return out


@pytest.mark.parametrize("in_shape", [(1, 28, 28), (3, 32, 32)])
def test_resnet18_shapes(in_shape):
    side = in_shape[1]
    stages = [(16, side), (32, (side + 1) // 2), (64, (side + 3) // 4), (128, (side + 7) // 8)]
    want = [(16, side, side)] + [(c, s, s) for c, s in stages for _ in range(2)]
    assert shapes("resnet18", in_shape, "block") == want
    assert shapes("resnet18", in_shape, "none")[-1] == shapes("resnet18", in_shape, "net")[-1] == want[-1]
    blocks = conv_blocks("resnet18", 1.0, "block")
    residuals = [b[0] for b in blocks if b[0]["kind"] == "residual"]
    assert len(residuals) == 8 and all(b[1] == {"kind": "relu"} for b in blocks[1:])
    assert [len(r["shortcut"]) for r in residuals] == [0, 0, 1, 0, 1, 0, 1, 0]      # projections where stages start
    assert [r["body"][0]["out"] for r in residuals] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert len(conv_blocks("resnet18", 1.0, "none")) == 17       # the stem and 16 convs, each alone


@pytest.mark.parametrize("in_shape, sides", [((1, 28, 28), [28, 14, 7, 4, 2]), ((3, 32, 32), [32, 16, 8, 4, 2])])
def test_mobilenetv3_small_shapes(in_shape, sides):
    got = shapes("mobilenetv3-small", in_shape, "block")
    assert got[0] == (4, sides[0], sides[0]) and got[-1] == (144, 2, 2)
    assert [s[1] for s in got[1:-1]] == [sides[i] for i in (1, 2, 2, 3, 3, 3, 3, 3, 4, 4, 4)]
    assert [s[0] for s in got[1:-1]] == [4, 6, 6, 10, 10, 10, 12, 12, 24, 24, 24]
    blocks = conv_blocks("mobilenetv3-small", 1.0, "block")
    skips = [i for i, b in enumerate(blocks) if b[0]["kind"] == "residual"]
    assert skips == [3, 5, 6, 8, 10, 11]                  # where the paper's shapes are kept
    kinds = [layer["kind"] for layer in blocks[5][0]["body"]]
    assert kinds == ["conv2d", "hardswish", "conv2d", "hardswish", "se", "conv2d"]
    assert blocks[5][0]["body"][2]["groups"] == 240 and shapes("mobilenetv3-small", in_shape, "none")[-1] == got[-1]


@pytest.mark.parametrize("model, message", [("cnn:r8-8/8", "first block cannot be residual"),
                                            ("cnn:8/r8p-8", "may not pool")])
def test_bad_residual_specs_are_one_line_usage_errors(rgb, tmp_path, model, message):  # noqa: F811
    with pytest.raises(UsageError, match=message):
        conv_blocks(model, 1.0, "none")
    one_line_error(edgeff("train", "--dataset", rgb, "--model", model, "--out", tmp_path / "r"), message)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("model, width", [("resnet18", "0.125"), ("mobilenetv3-small", "0.25")])
@pytest.mark.parametrize("hybrid", ["none", "block"])
def test_named_nets_train_and_eval_from_the_cli(rgb, tmp_path, model, width, hybrid):  # noqa: F811
    out = tmp_path / "run"
    m = ok(edgeff("train", "--dataset", rgb, "--model", model, "--width-mult", width, "--hybrid", hybrid,
                  "--epochs", "6", "--batch-size", "32", "--lr", "0.01", "--out", out, "--json"))
    assert m["model"] == model and m["test_error"] < 0.5, m           # 3 classes: chance is 0.67
    assert ok(edgeff("eval", out, "--json"))["test_error"] == m["test_error"]
