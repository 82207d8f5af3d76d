"""Conv FF (Scalable FF): the block kernels against their NumPy twins, a block's gradients
against finite differences of a NumPy forward, checkpoints and resume, the model file."""

import dataclasses

import numpy as np
import pytest

from edgeff import checkpoint
from edgeff.budget import layout_for_conv
from edgeff.config import TrainConfig
from edgeff.convnet import ConvNet
from edgeff.data import Dataset
from edgeff.errors import ModelError
from edgeff.kernels import activation, batch, norm, pool, sff
from edgeff.kernels import reference as ref
from edgeff.layers import BLOCK_KINDS
from edgeff.layers.blocks import head_spec
from edgeff.memory import plan_greedy
from edgeff.model import read_model_file
from edgeff.sff_train import MARGIN, ConvTrainer


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def close(a, b, tol=1e-4):
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


# ---- kernels against their twins ----

@pytest.mark.parametrize("n, c, p", [(1, 1, 1), (5, 10, 49), (3, 2, 7)])
def test_class_goodness_and_margin_loss_match_their_twins(n, c, p):
    rng = np.random.default_rng(n * 100 + c)
    o, y = rand(rng, n, c, p), rng.integers(0, c, n).astype(np.int64)
    good, want_good = np.empty((n, c), np.float32), np.empty((n, c))
    close(sff.class_goodness(o, good), ref.class_goodness(o, want_good))
    loss, want_loss = np.empty(n, np.float32), np.empty(n)
    grad, want_grad = o.copy(), o.astype(np.float64)
    sff.margin_loss_grad(grad, y, 0.7, good, loss)
    ref.margin_loss_grad(want_grad, y, 0.7, want_good, want_loss)
    close(loss, want_loss)
    close(grad, want_grad)


def test_margin_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    o, y = rng.standard_normal((3, 4, 5)), np.array([0, 3, 1])
    mean_loss = lambda a: ref.margin_loss(ref.class_goodness(a, np.empty((3, 4))), y, MARGIN).mean()
    grad = o.copy()
    ref.margin_loss_grad(grad, y, MARGIN, ref.class_goodness(o, np.empty((3, 4))), np.empty(3))
    for i in np.ndindex(o.shape):
        d = np.zeros_like(o)
        d[i] = 1e-6
        assert abs((mean_loss(o + d) - mean_loss(o - d)) / 2e-6 - grad[i]) < 1e-6


def test_margin_loss_refuses_labels_out_of_range():
    o, good, loss = np.ones((2, 3, 4), np.float32), np.ones((2, 3), np.float32), np.ones(2, np.float32)
    with pytest.raises(ValueError, match="labels"):
        sff.margin_loss_grad(o, np.array([0, 3]), 1.0, good, loss)


@pytest.mark.parametrize("shape, k", [((2, 3, 4, 4), 2), ((1, 2, 5, 7), 2), ((2, 1, 6, 6), 3)])
def test_maxpool_forward_and_backward_match_their_twins(shape, k):
    rng = np.random.default_rng(2)
    x = rand(rng, *shape)
    x[0, 0, 0, :2] = 1.5          # a tie: the gradient goes to the first maximum
    out_shape = (*shape[:2], shape[2] // k, shape[3] // k)
    out = pool.maxpool_forward(x, k, np.empty(out_shape, np.float32))
    close(out, ref.maxpool_forward(x, k, np.empty(out_shape)))
    dout = rand(rng, *out_shape)
    close(pool.maxpool_backward(x, out, dout, k, np.empty_like(x)), ref.maxpool_backward(x, out, dout, k, np.empty(shape)))


def test_relu_grad_and_layer_norm_match_their_twins():
    rng = np.random.default_rng(3)
    y, dy = np.maximum(rand(rng, 4, 30), 0), rand(rng, 4, 30)
    close(activation.relu_grad(y, dy, np.empty_like(dy)), ref.relu_grad(y, dy, np.empty(dy.shape)))
    x = rand(rng, 5, 40) * 3 + 1
    close(norm.layer_norm(x, np.empty_like(x)), ref.layer_norm(x, np.empty(x.shape)))


@pytest.mark.parametrize("shift", [0, 2])
def test_gather_images_matches_its_twin(shift):
    rng = np.random.default_rng(4)
    src = rng.integers(0, 256, (6, 5 * 4 * 3), dtype=np.uint8)     # 6 images 5x4 RGB, channels last
    idx, u = np.array([4, 0, 2], np.int64), rng.random(6)
    out = np.empty((3, 3, 5, 4), np.float32)
    close(batch.gather_images(src, idx, u, shift, 1 / 255, out) or out,
          ref.gather_images(src, idx, u, shift, 1 / 255, np.empty(out.shape)))


# ---- a block's gradients against finite differences ----

def tiny_data(n=12, h=6, w=6, c=2, classes=3, seed=5):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, h * w * c), dtype=np.uint8)
    y = (np.arange(n) % classes).astype(np.int32)
    return Dataset("tiny", x, y, x[:6].copy(), y[:6].copy(), classes, 1 / 255, (h, w, c),
                   tuple(map(str, range(classes))), "")


def conv_cfg(**kw):
    base = dict(model="cnn:3-2p/4", classifier="goodness", head_epochs=0, epochs=2, batch_size=4, lr=0.01)
    return TrainConfig(**(base | kw)).validate()


def reference_block_loss(specs, params, x, y, num_classes):
    """The mean SFF loss of one block in float64 NumPy (the kinds' twins)."""
    h = x
    for spec, p in zip(specs, params):
        h = BLOCK_KINDS[spec["kind"]].reference(spec, p, h)
    o = BLOCK_KINDS["conv2d"].reference(head_spec(num_classes), params[-1], h)
    good = ref.class_goodness(o.reshape(o.shape[0], num_classes, -1), np.empty((o.shape[0], num_classes)))
    return ref.margin_loss(good, y, MARGIN).mean()


@pytest.mark.parametrize("hybrid", ["none", "net"])
def test_block_gradients_match_finite_differences(hybrid):
    ds = tiny_data()
    trainer = ConvTrainer(conv_cfg(hybrid=hybrid), ds)
    trainer._bind(0)
    b = 4
    trainer.idx[:b] = np.arange(b)
    y = ds.y_train[:b].astype(np.int64)
    x = trainer.x[:b]
    batch.gather_images(ds.x_train, trainer.idx[:b], trainer.shift_u, 0, ds.scale, x)
    rng = np.random.default_rng(6)
    for k, specs in enumerate(trainer.net.blocks):
        x64 = x.astype(np.float64)
        trainer.block_gradients(k, x, y)
        params = [{n: a.astype(np.float64) for n, a in p.items()} for p in trainer.net.params[k]]
        layers = trainer.views[k][0]
        for j, (lay, _, grads, _, _) in enumerate(layers):
            for name, g in grads.items():
                for i in map(tuple, rng.integers(0, g.shape, (3, g.ndim))):
                    plus = [dict(p) for p in params]
                    minus = [dict(p) for p in params]
                    plus[j][name] = params[j][name].copy()
                    minus[j][name] = params[j][name].copy()
                    plus[j][name][i] += 1e-5
                    minus[j][name][i] -= 1e-5
                    numeric = (reference_block_loss(specs, plus, x64, y, ds.num_classes) -
                               reference_block_loss(specs, minus, x64, y, ds.num_classes)) / 2e-5
                    assert abs(numeric - g[i]) < 2e-3 * max(1.0, abs(numeric)), (k, lay.name, name, i, numeric, g[i])
        features = layers[-2][3][:b].reshape(b, -1)      # the block's output: its head's input
        x = trainer.views[k][3][:b]                        # normalised: the next block's input
        close(x.reshape(b, -1), ref.layer_norm(features, np.empty(features.shape)))


# ---- training, resume, the model file ----

def test_training_lowers_every_blocks_loss():
    ds = tiny_data(n=48)
    history = ConvTrainer(conv_cfg(epochs=6, hybrid="none"), ds).fit()
    first, last = np.array(history[0]), np.array(history[-1])
    assert first.shape == (3,) and (last < first).all(), history


def test_resume_from_a_checkpoint_is_bitwise_identical(tmp_path):
    ds, cfg = tiny_data(n=20), conv_cfg(epochs=3, shift=1)
    whole = ConvTrainer(cfg, ds)
    path = tmp_path / checkpoint.NAME
    whole.fit(path, every=4, run_meta=dict(every=4, limit_train=None))   # 15 steps: the last checkpoint is after step 12
    resumed = ConvTrainer(cfg, ds)
    arrays, meta = checkpoint.load(path)
    assert meta["steps"] == 12
    checkpoint.check_resume(path, arrays, meta, resumed)
    resumed.fit(resume=(arrays, meta))
    for a, b in zip(whole.net.params, resumed.net.params):
        for pa, pb in zip(a, b):
            for name in pa:
                assert np.array_equal(pa[name], pb[name]), name


def test_model_file_round_trip_gives_the_same_votes(tmp_path):
    ds = tiny_data()
    trainer = ConvTrainer(conv_cfg(), ds)
    trainer.fit()
    net = trainer.net
    net.describe_input(ds)
    net.save(tmp_path / "m.npz", conv_cfg().to_json())
    back, stored = ConvNet.from_arrays(tmp_path / "m.npz", *read_model_file(tmp_path / "m.npz"))
    assert stored == dataclasses.asdict(conv_cfg())
    assert np.array_equal(back.block_scores(ds.x_test, ds.scale), net.block_scores(ds.x_test, ds.scale))


def _saved_conv_model(tmp_path):
    trainer = ConvTrainer(conv_cfg(), tiny_data())
    trainer.net.save(tmp_path / "m.npz", conv_cfg().to_json())
    return read_model_file(tmp_path / "m.npz")


@pytest.mark.parametrize("damage, message", [
    (lambda a, m: m["blocks"][0].append({"kind": "softmax"}), "not a layer edgeff knows"),
    (lambda a, m: m["blocks"][0][0].update(k=99), "'k' is 99"),
    (lambda a, m: m["blocks"][0][0].update(groups=5), "groups=5 must divide"),
    (lambda a, m: m["blocks"][0][0].update(extra=1), "has fields"),
    (lambda a, m: m["blocks"].append([{"kind": "maxpool", "k": 8}]), "does not fit"),
    (lambda a, m: m.update(in_shape=[2, 6]), "'in_shape'"),
    (lambda a, m: m.update(num_classes=0), "'num_classes'"),
    (lambda a, m: a.pop("0.head.w"), "no array '0.head.w'"),
    (lambda a, m: a.update({"1.0.w": a["1.0.w"][:1]}), "array '1.0.w'"),
    (lambda a, m: a["0.0.b"].__setitem__(0, np.nan), "NaN or Inf"),
])
def test_a_crafted_conv_model_is_a_model_error(tmp_path, damage, message):
    arrays, meta = _saved_conv_model(tmp_path)
    arrays = {k: v.copy() for k, v in arrays.items()}
    damage(arrays, meta)
    with pytest.raises(ModelError, match=message):
        ConvNet.from_arrays("m.npz", arrays, meta)


def test_init_copies_the_layers_and_freeze_keeps_them():
    ds = tiny_data(n=24)
    source = ConvTrainer(conv_cfg(epochs=2), ds)
    source.fit()
    cfg = conv_cfg(epochs=2, init="elsewhere", freeze=1)
    trainer = ConvTrainer(cfg, ds, init=source.net)
    start_heads = [{n: a.copy() for n, a in block[-1].items()} for block in trainer.net.params]
    trainer.fit()
    frozen, trained = trainer.net.params[0], trainer.net.params[1]
    for mine, theirs in zip(frozen[:-1], source.net.params[0][:-1]):
        assert all(np.array_equal(mine[n], theirs[n]) for n in mine)          # the frozen block's layers
    assert not np.array_equal(frozen[-1]["w"], start_heads[0]["w"])          # its head learned
    assert not np.array_equal(trained[0]["w"], source.net.params[1][0]["w"])  # the next block learned


def test_frozen_blocks_plan_no_gradients_or_optimiser_state():
    """--freeze 1: block 1's layers get no gradient, dy or optimiser buffer (its head keeps them),
    the arena shrinks, and the frozen run still trains (its blocks' losses fall)."""
    ds = tiny_data(n=24)
    free, frozen = (layout_for_conv(conv_cfg(optimizer="adam", **kw), ds) for kw in ({}, dict(init="x", freeze=1)))
    for lay in frozen.blocks[0].layers[:-1]:
        assert lay.grads == {} and lay.opt == ({}, {}) and lay.dy is None
    for mine, theirs in zip(frozen.blocks[0].layers[-1:] + frozen.blocks[1].layers, free.blocks[0].layers[-1:] + free.blocks[1].layers):
        assert mine == theirs                                            # the head and block 2 as before
    names = lambda layout: {b.name for b in layout.buffers}
    gone = names(free) - names(frozen)
    assert gone and all(n.startswith(("g0.", "opt0_0.", "opt1_0.", "0.")) and ".head" not in n for n in gone), gone
    assert plan_greedy(frozen.buffers).arena_bytes < plan_greedy(free.buffers).arena_bytes
    source = ConvTrainer(conv_cfg(epochs=1, optimizer="adam"), ds)
    source.fit()
    history = ConvTrainer(conv_cfg(epochs=6, optimizer="adam", init="x", freeze=1), ds, init=source.net).fit()
    assert (np.array(history[-1]) < np.array(history[0])).all(), history


def test_default_epochs_follow_the_examples_seen():
    from edgeff.commands.train import default_epochs
    assert default_epochs(60000) == 10 and default_epochs(120000) == 10
    assert default_epochs(4000) == 150 and default_epochs(7) == 1000
