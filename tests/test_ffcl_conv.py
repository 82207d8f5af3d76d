"""FFCL on conv blocks (--algo ffcl --feedback-steps K, --hybrid none): the upsampling kernels
against their twins, the settled forward against a NumPy twin, every block gradient (dF_k too)
against finite differences, K = 0 bit for bit plain conv FF, resume, the model file, the plan,
and the CLI end to end (train, eval, infer, export under onnxruntime, bundle; refusals)."""

import dataclasses

import numpy as np
import pytest

from edgeff import checkpoint, export
from edgeff.config import TrainConfig
from edgeff.conv_models import conv_blocks
from edgeff.convnet import ConvNet
from edgeff.data import Dataset
from edgeff.errors import ModelError
from edgeff.kernels import batch, pool
from edgeff.kernels import reference as ref
from edgeff.layers import BLOCK_KINDS, feedback
from edgeff.layers.blocks import head_spec
from edgeff.model import read_model_file
from edgeff.sff_train import MARGIN, ConvTrainer
from images import write_images_npz
from run_cli import edgeff, ok, one_line_error

MODEL = "cnn:3-2p/4"     # on 6x6: blocks 3x6x6, 2x3x3 (pooled), 4x3x3; feedback upsampled by 2 twice


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("shape, fh, fw", [((1, 1, 1, 1), 1, 1), ((2, 3, 2, 3), 2, 4), ((3, 2, 5, 1), 3, 2)])
def test_upsample_add_and_window_sum_match_their_twins(shape, fh, fw):
    rng = np.random.default_rng(sum(shape))
    small, large = rand(rng, *shape), rand(rng, shape[0], shape[1], shape[2] * fh, shape[3] * fw)
    want = ref.upsample_add(small, fh, fw, large.astype(np.float64))
    np.testing.assert_allclose(pool.upsample_add(small, fh, fw, large.copy()), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(pool.window_sum(large, fh, fw, np.empty_like(small)),
                               ref.window_sum(large, fh, fw, np.empty(shape)), rtol=1e-5, atol=1e-5)
    # the two are adjoint: <up(s), l> = <s, window_sum(l)>
    up = pool.upsample_add(small, fh, fw, np.zeros_like(large))
    assert np.isclose((up * large).sum(), (small * pool.window_sum(large, fh, fw, np.empty_like(small))).sum(),
                      rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="upsample_add"):
        pool.upsample_add(small, fh + 1, fw, large)


def tiny_data(n=12, seed=5):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 6 * 6 * 2), dtype=np.uint8)
    y = (np.arange(n) % 3).astype(np.int32)
    return Dataset("tiny", x, y, x[:6].copy(), y[:6].copy(), 3, 1 / 255, (6, 6, 2), ("0", "1", "2"), "")


def cfg(**kw):
    base = dict(model=MODEL, algo="ffcl", feedback_steps=1, classifier="goodness", head_epochs=0, epochs=2,
                batch_size=4, lr=0.01)
    return TrainConfig(**(base | kw)).validate()


def twin_block(specs, params, x, num_classes, fed=None):
    """One block in float64 NumPy (the kinds' twins): (its output before normalising, class goodness);
    fed: the feedback term added to its first layer's output."""
    h = x
    for j, (spec, p) in enumerate(zip(specs, params)):
        h = BLOCK_KINDS[spec["kind"]].reference(spec, p, h)
        if j == 0 and fed is not None:
            h = h + fed
    o = BLOCK_KINDS["conv2d"].reference(head_spec(num_classes), params[-1], h)
    return h, ref.class_goodness(o.reshape(len(o), num_classes, -1), np.empty((len(o), num_classes)))


def twin_scores(net, images):
    """ConvNet.block_scores in float64 NumPy: K + 1 settling steps, feedback from the step before."""
    outs = [None] * len(net.blocks)
    for t in range(net.feedback_steps + 1):
        h = images.astype(np.float64)
        goods = []
        for k, specs in enumerate(net.blocks):
            fed = feedback.reference(net.links[k], net.feedback_w[k], outs[k + 1]) \
                if t and k < len(net.links) else None
            feats, good = twin_block(specs, net.params[k], h, net.num_classes, fed)
            goods.append(good)
            flat = feats.reshape(len(feats), -1)
            outs[k] = h = ref.layer_norm(flat, np.empty(flat.shape)).reshape(feats.shape)
    return np.stack(goods, axis=1)


@pytest.mark.parametrize("steps", [1, 3])
def test_the_settled_forward_matches_its_numpy_twin(steps):
    ds = tiny_data()
    net = ConvNet.create((2, 6, 6), conv_blocks(MODEL, 1.0, "none"), 3, np.random.default_rng(1), feedback_steps=steps)
    assert [(link.fh, link.fw, link.weight_shape) for link in net.links] == [(2, 2, (3, 2, 1, 1)), (2, 2, (2, 4, 1, 1))]
    images = np.empty((len(ds.x_test), 2, 6, 6), np.float32)
    batch.gather_images(ds.x_test, np.arange(len(ds.x_test)), np.zeros(0), 0, ds.scale, images)
    np.testing.assert_allclose(net.block_scores(ds.x_test, ds.scale), twin_scores(net, images), rtol=1e-4, atol=1e-5)
    # the feedback changes the scores: it is not a no-op
    plain = ConvNet(net.in_shape, net.blocks, net.params, 3)
    assert not np.allclose(plain.block_scores(ds.x_test, ds.scale)[:, :2], net.block_scores(ds.x_test, ds.scale)[:, :2])


@pytest.mark.parametrize("head", ["goodness", "last"])
@pytest.mark.parametrize("opset", [export.MIN_OPSET, export.max_opset()])
def test_the_onnx_graph_unrolls_the_steps_and_matches_block_scores(head, opset):
    rng = np.random.default_rng(opset)
    net = ConvNet.create((3, 12, 12), conv_blocks("cnn:4p/6s2-6", 1.0, "none"), 5, rng, feedback_steps=2)
    model = export.check(export.build(net, head, opset))
    x = rng.random((33, net.in_features)).astype(np.float32)
    sess = export.session(model.SerializeToString())
    report = export.parity(sess, net, x, head)
    assert report["ok"] and report["label_agreement"] == 1.0, report
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Resize") == 2 * len(net.links)          # two steps with feedback
    assert len({i.name for i in model.graph.initializer}) == len(model.graph.initializer)
    np.testing.assert_allclose(sess.run(["scores"], {"x": x})[0], net.votes(net.block_scores(x, 1.0), head),
                               rtol=1e-4, atol=1e-6)


def test_block_gradients_and_dF_match_finite_differences():
    """At the last step, each block's loss with its input and the output fed back held constant:
    the trainer's gradients (its layers', its head's and F_k's) against central differences of the twin."""
    ds = tiny_data()
    trainer = ConvTrainer(cfg(), ds)
    trainer._bind(0)
    b, rng = 4, np.random.default_rng(6)
    y = ds.y_train[:b].astype(np.int64)
    x = trainer.x[:b]
    batch.gather_images(ds.x_train, np.arange(b), trainer.shift_u, 0, ds.scale, x)
    net = trainer.net
    for k, specs in enumerate(net.blocks):
        above = None
        if k < len(net.links):            # block k + 1's output of the step before: any constant
            above = trainer.views[k + 1][3][:b]
            above[...] = rand(rng, *above.shape)
        x64 = x.astype(np.float64)
        trainer.block_gradients(k, x, y)
        params = [{n: a.astype(np.float64) for n, a in p.items()} for p in net.params[k]]
        f64 = net.feedback_w[k].astype(np.float64) if above is not None else None

        def loss(params, f):
            fed = None if f is None else feedback.reference(net.links[k], f, above)
            return ref.margin_loss(twin_block(specs, params, x64, 3, fed)[1], y, MARGIN).mean()
        checks = [(j, name, g) for j, (_, _, grads, _, _) in enumerate(trainer.views[k][0]) for name, g in grads.items()]
        if above is not None:
            checks.append(("fb", "w", trainer.feedback[k][2]))
        for j, name, g in checks:
            for i in map(tuple, rng.integers(0, g.shape, (3, g.ndim))):
                sides = []
                for step in (1e-5, -1e-5):
                    p = [dict(q) for q in params]
                    f = None if f64 is None else f64.copy()
                    if j == "fb":
                        f[i] += step
                    else:
                        p[j][name] = params[j][name].copy()
                        p[j][name][i] += step
                    sides.append(loss(p, f))
                numeric = (sides[0] - sides[1]) / 2e-5
                assert abs(numeric - g[i]) < 2e-3 * max(1.0, abs(numeric)), (k, j, name, i, numeric, g[i])
        x = trainer.views[k][3][:b]


def test_zero_steps_is_plain_conv_ff_bit_for_bit():
    ds = tiny_data(n=20)
    plain = ConvTrainer(cfg(algo="ff", feedback_steps=0, shift=1), ds)
    ffcl = ConvTrainer(cfg(feedback_steps=0, shift=1), ds)
    assert plain.plan.arena_bytes == ffcl.plan.arena_bytes and not ffcl.net.feedback_w
    assert plain.fit() == ffcl.fit()
    for a, b in zip(plain.net.params, ffcl.net.params):
        for pa, pb in zip(a, b):
            assert all(np.array_equal(pa[n], pb[n]) for n in pa)


def test_training_with_feedback_lowers_every_blocks_loss():
    history = ConvTrainer(cfg(epochs=6), tiny_data(n=48)).fit()
    assert (np.array(history[-1]) < np.array(history[0])).all(), history


def test_resume_with_feedback_is_bit_for_bit(tmp_path):
    ds, c = tiny_data(n=20), cfg(epochs=3, feedback_steps=2)
    whole = ConvTrainer(c, ds)
    path = tmp_path / checkpoint.NAME
    whole.fit(path, every=4, run_meta=dict(every=4, limit_train=None))
    arrays, meta = checkpoint.load(path)
    assert "0.fb.w" in arrays and "opt1_1.fb.w" in arrays and meta["steps"] == 12
    resumed = ConvTrainer(c, ds)
    checkpoint.check_resume(path, arrays, meta, resumed)
    resumed.fit(resume=(arrays, meta))
    assert all(np.array_equal(a, b) for a, b in zip(whole.net.feedback_w, resumed.net.feedback_w))
    for a, b in zip(whole.net.params, resumed.net.params):
        for pa, pb in zip(a, b):
            assert all(np.array_equal(pa[n], pb[n]) for n in pa)


def _saved(tmp_path):
    trainer = ConvTrainer(cfg(), tiny_data())
    trainer.fit()
    trainer.net.save(tmp_path / "m.npz", cfg().to_json())
    return trainer.net, tmp_path / "m.npz"


def test_model_file_round_trip_and_crafted_files(tmp_path):
    net, path = _saved(tmp_path)
    arrays, meta = read_model_file(path)
    assert meta["feedback_steps"] == 1 and meta["format_version"] == 2
    back, stored = ConvNet.from_arrays(path, arrays, meta)
    back.check_config(TrainConfig.from_dict(stored))
    x = tiny_data().x_test
    assert np.array_equal(back.block_scores(x, 1 / 255), net.block_scores(x, 1 / 255))
    for damage, message in [(lambda a, m: a.pop("1.fb.w"), "no array '1.fb.w'"),
                            (lambda a, m: a.update({"0.fb.w": a["0.fb.w"][:1]}), "array '0.fb.w'"),
                            (lambda a, m: m.update(feedback_steps=9), "'feedback_steps'"),
                            (lambda a, m: m.update(in_shape=[2, 5, 5]), "whole factor")]:
        a, m = {k: v.copy() for k, v in arrays.items()}, dict(meta)
        damage(a, m)
        with pytest.raises(ModelError, match=message):
            ConvNet.from_arrays("m.npz", a, m)
    with pytest.raises(ModelError, match="--feedback-steps 2 but its net settles 1"):
        back.check_config(dataclasses.replace(cfg(), feedback_steps=2))


# ---------------------------------------------------------------- the CLI

@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images_npz(tmp_path_factory.mktemp("img") / "img.npz", n_train=200, n_test=60)


def test_cli_trains_evaluates_infers_exports_and_bundles(images, tmp_path):
    out = tmp_path / "run"
    m = ok(edgeff("train", "--dataset", images, "--model", "cnn:4p/8p-8", "--algo", "ffcl", "--feedback-steps", "2",
                  "--epochs", "2", "--out", out, "--json"))
    assert m["algo"] == "ffcl" and m["feedback_steps"] == 2 and m["classifier"] == "last" and "late_labels" not in m
    assert ok(edgeff("eval", out, "--json"))["test_error"] == pytest.approx(m["test_error"])
    r = ok(edgeff("export", out, "--output", tmp_path / "last.onnx", "--json"))
    assert r["parity"]["ok"] and r["parity"]["label_agreement"] == 1.0
    np.save(tmp_path / "x.npy", np.load(images)["x_test"][:9])
    run_labels = edgeff("infer", out, tmp_path / "x.npy").stdout
    assert run_labels == edgeff("infer", tmp_path / "last.onnx", tmp_path / "x.npy").stdout
    assert len(run_labels.splitlines()) == 9
    ok(edgeff("bundle", out, "--target", "generic-x86_64", "--no-wheels", "-o", tmp_path / "b", "--json"))
    plan = ok(edgeff("plan", "--dataset", images, "--model", "cnn:4p/8p-8", "--algo", "ffcl", "--feedback-steps", "1",
                     "--json"))
    names = {b["name"]: b for b in plan["buffers"]}
    assert {"0.fb.w", "g0.fb.w", "opt0_0.fb.w", "0.fb.t", "1.fb.w"} <= set(names) and "2.fb.w" not in names
    assert names["x"]["last"] == names["0.out"]["last"] == max(b["last"] for b in plan["buffers"])


@pytest.mark.parametrize("args, message", [
    (["--hybrid", "block", "--feedback-steps", "1"], "use --hybrid none, not block"),
    (["--model", "cnn:4", "--feedback-steps", "1"], "has one block"),
    (["--model", "cnn:4/4s3", "--feedback-steps", "1"], "by a whole factor"),
    (["--separate-labels"], "how a conv net already works"),
    (["--schedule", "layerwise"], "leave out --schedule layerwise and --init"),
])
def test_bad_combinations_are_one_line_errors(images, tmp_path, args, message):
    argv = ["train", "--dataset", images, "--model", "cnn:4p/8p-8", "--algo", "ffcl", "--epochs", "1",
            "--out", tmp_path / "r", *args]
    one_line_error(edgeff(*argv), message)
    assert not (tmp_path / "r").exists()
