"""The FF trainer: local gradients by finite differences, determinism, learning on a
small separable problem, both schedules, the classifiers, option checks and divergence."""

import warnings

import numpy as np
import pytest

from edgeff.config import TrainConfig
from edgeff.data import Dataset
from edgeff.errors import TrainingDiverged, UsageError
from edgeff.kernels import dense, ff_loss
from edgeff.kernels import reference as ref
from edgeff.model import FFNet
from edgeff.train import Trainer


@pytest.mark.parametrize("mean", [False, True])
def test_local_gradient_matches_finite_differences(mean):
    """dLoss/dw and dLoss/db of one FF layer, from its own input and output only."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 5)).astype(np.float32)
    w = rng.standard_normal((5, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    n_pos, theta = 4, 1.5

    def loss(w64, b64):
        h = np.maximum(x.astype(np.float64) @ w64 + b64, 0.0)
        return ref.ff_loss(h, n_pos, theta, mean).mean()

    z = x @ w
    h_next, good, rows = np.empty_like(z), np.empty(8, np.float32), np.empty(8, np.float32)
    ff_loss.ff_activate(z, b, h_next, good, mean)
    ff_loss.ff_loss_grad(z, good, n_pos, theta, rows, mean)
    gw, gb = np.empty_like(w), np.empty_like(b)
    dense.local_grad(x, z, gw, gb)
    assert rows.mean() == pytest.approx(loss(w, b), rel=1e-5)

    eps = 1e-5
    num_w = np.zeros(w.shape)
    for i, j in np.ndindex(w.shape):
        d = np.zeros(w.shape)
        d[i, j] = eps
        num_w[i, j] = (loss(w + d, b) - loss(w - d, b)) / (2 * eps)
    num_b = np.array([(loss(w, b + e) - loss(w, b - e)) / (2 * eps) for e in np.eye(4) * eps])
    np.testing.assert_allclose(gw, num_w, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(gb, num_b, rtol=1e-3, atol=1e-6)


def blobs(n_train=600, n_test=300, d=24, c=4, seed=0):
    """Gaussian class blobs: a task any working FF net learns in a few epochs."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, (c, d))

    def draw(n):
        y = rng.integers(0, c, n).astype(np.int32)
        x = np.clip(centres[y] + 0.15 * rng.standard_normal((n, d)), 0, 1)
        return (x * 255).astype(np.uint8), y

    (xt, yt), (xv, yv) = draw(n_train), draw(n_test)
    return Dataset(name="blobs", x_train=xt, y_train=yt, x_test=xv, y_test=yv, num_classes=c, scale=1 / 255,
                   image_shape=None, label_names=tuple(str(i) for i in range(c)), source="test")


def train(ds, **kw):
    cfg = TrainConfig(**{"model": f"{ds.x_train.shape[1]}-64-64", "epochs": 30, "batch_size": 32, **kw}).validate()
    t = Trainer(cfg, ds)
    history = t.fit()
    return t.net, history


@pytest.mark.parametrize("schedule", ["simultaneous", "layerwise"])
@pytest.mark.parametrize("negatives", ["hard", "random"])
def test_learns_a_separable_problem(schedule, negatives):
    ds = blobs()
    net, history = train(ds, schedule=schedule, negatives=negatives)
    history = history[:-TrainConfig().head_epochs]       # the FF epochs; the head's come last
    assert np.all(np.isfinite(history))
    for classifier in ("linear", "goodness"):
        err = net.error(ds.x_test, ds.y_test, ds.scale, classifier)
        assert err < 0.1, (classifier, err)
    first, last = np.mean(history[0]), np.mean(history[-1])
    assert last < first


def test_same_seed_same_weights_other_seed_differs():
    ds = blobs()
    a, _ = train(ds, epochs=2, seed=3)
    b, _ = train(ds, epochs=2, seed=3)
    c, _ = train(ds, epochs=2, seed=4)
    for wa, wb in zip(a.weights + [a.head_w], b.weights + [b.head_w]):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.weights[0], c.weights[0])


def test_shifted_images_learn_and_are_deterministic():
    """--shift: images moved by random whole pixels each batch; same seed, same weights."""
    rng = np.random.default_rng(1)
    protos = rng.integers(0, 256, (3, 8, 8))

    def draw(n):
        y = rng.integers(0, 3, n).astype(np.int32)
        x = np.clip(protos[y] + rng.normal(0, 30, (n, 8, 8)), 0, 255).astype(np.uint8).reshape(n, 64)
        return x, y
    (xt, yt), (xv, yv) = draw(600), draw(300)
    ds = Dataset(name="images", x_train=xt, y_train=yt, x_test=xv, y_test=yv, num_classes=3, scale=1 / 255,
                 image_shape=(8, 8), label_names=("a", "b", "c"), source="test")
    a, _ = train(ds, shift=1)
    b, _ = train(ds, shift=1)
    plain, _ = train(ds)
    np.testing.assert_array_equal(a.weights[0], b.weights[0])
    assert not np.array_equal(a.weights[0], plain.weights[0])
    assert a.error(ds.x_test, ds.y_test, ds.scale, "linear") < 0.1


def test_inputs_narrower_than_the_label_count_get_appended_label_inputs():
    ds = blobs(d=3, c=5)
    net, _ = train(ds, epochs=40)
    assert net.label_offset == 3 and net.in_width == 8 and net.in_features == 3
    assert net.error(ds.x_test, ds.y_test, ds.scale, "linear") < 0.3


def test_save_load_round_trip(tmp_path):
    ds = blobs()
    net, _ = train(ds, epochs=1)
    net.save(tmp_path / "m.npz", TrainConfig().to_json())
    back, cfg = FFNet.load(tmp_path / "m.npz")
    for c in ("linear", "goodness"):
        np.testing.assert_array_equal(net.predict(ds.x_test, ds.scale, c), back.predict(ds.x_test, ds.scale, c))
    assert cfg["model"] == TrainConfig().model


@pytest.mark.parametrize("option, value, message", [
    ("lr", float("inf"), "--lr must be a number above 0 and at most 3.40282e+38, got inf"),
    ("lr", float("nan"), "--lr must be a number above 0"),
    ("lr", 1e39, "--lr must be a number above 0"),           # Inf once the kernels take it as float32
    ("head_lr", 0.0, "--head-lr must be a number above 0"),
    ("threshold", float("nan"), "--threshold must be a number from -3.40282e+38 to 3.40282e+38, got nan"),
    ("label_value", float("inf"), "--label-value must be a number above 0 and at most 10000, got inf"),
    ("weight_decay", float("nan"), "--weight-decay must be a number from 0 to"),
    ("weight_decay", -0.1, "--weight-decay must be a number from 0 to"),
    ("seed", -1, "--seed must be a whole number from 0 to 4294967295, got -1"),
    ("seed", 2**32, "--seed must be a whole number from 0 to 4294967295"),
    ("epochs", 2.5, "--epochs must be a whole number at least 1, got 2.5"),
    ("lr", "0.1", "--lr must be a number"),                   # a config.json with a string in it
    ("seed", True, "--seed must be a whole number"),
    ("lr_decay", "yes", "lr_decay must be true or false"),
])
def test_numeric_options_are_checked(option, value, message):
    with pytest.raises(UsageError) as info:
        TrainConfig(**{option: value}).validate()
    assert message in str(info.value)


def test_large_finite_learning_rates_are_left_to_divergence_detection():
    TrainConfig(lr=1e30, head_lr=3e38, weight_decay=1e38, threshold=-1e30, seed=2**32 - 1).validate()


@pytest.mark.parametrize("kw, message", [
    # the loss of the second batch is Inf: the first update threw the weights to +-1e30
    (dict(lr=1e30), "training diverged: layer 1/2's loss became Inf in epoch 1/2 (batch 2); no model saved; "
                    "try a smaller --lr (now 1e+30)"),
    (dict(lr=1e30, schedule="layerwise"), "layer 1/2's loss became Inf in epoch 1/2 (batch 2)"),
    # the head's first step throws its weights to +-3e38: its next logits overflow, the loss is NaN
    (dict(head_lr=3e38), "the linear head's loss became NaN in epoch 1/3 (batch 2); no model saved; "
                         "try a smaller --head-lr (now 3e+38)"),
    # one batch per epoch: the only update makes the weights Inf (weight decay 1e38 * w * lr 1000)
    # after the one loss was measured, so only the end-of-epoch weight check can see it
    (dict(optimizer="sgd", lr=1000.0, weight_decay=1e38, batch_size=600, epochs=1),
     "layer 1/2's weights became NaN or Inf in epoch 1/1; no model saved"),
])
def test_divergence_stops_training_naming_the_layer_and_epoch(kw, message):
    ds = blobs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # no RuntimeWarning may come first
        with pytest.raises(TrainingDiverged) as info:
            train(ds, **{"epochs": 2, **kw})
    assert message in str(info.value) and info.value.exit_code == 3


class StepLog:
    """A step_hook that writes down what the trainer tells it."""

    def __init__(self):
        self.events = []

    def batch_begins(self, phase, step):
        self.events.append(("batch", phase, step))

    def layer_done(self, k, seconds):
        assert seconds >= 0
        self.events.append(("layer", k))

    def batch_done(self, seconds):
        assert seconds >= 0
        self.events.append(("done",))


@pytest.mark.parametrize("schedule", ["simultaneous", "layerwise"])
def test_step_hook_is_told_every_step_of_the_real_loop_and_changes_nothing(schedule):
    ds = blobs()       # 600 rows, batches of 32: 19 per epoch
    cfg = TrainConfig(model="24-16-16", epochs=2, head_epochs=2, batch_size=32, schedule=schedule).validate()
    plain, hooked = Trainer(cfg, ds), Trainer(cfg, ds)
    hooked.step_hook = log = StepLog()
    assert plain.fit(steps_per_phase=25) == hooked.fit(steps_per_phase=25)   # 19 batches, then 6 of epoch 2
    for a, b in zip(plain.net.weights + [plain.net.head_w], hooked.net.weights + [hooked.net.head_w]):
        np.testing.assert_array_equal(a, b)
    expected = []
    for p, layers in enumerate(hooked.phases()):
        stepped = [] if layers == ["head"] else [("layer", k) for k in range(layers[-1] + 1)]  # frozen ones too
        for i in range(25):
            expected += [("batch", p, p * 25 + i), *stepped, ("done",)]
    assert log.events == expected


def test_a_phase_ends_with_its_epochs_when_they_hold_fewer_steps():
    ds = blobs()
    cfg = TrainConfig(model="24-16", epochs=1, head_epochs=1, batch_size=32).validate()
    t = Trainer(cfg, ds)
    t.step_hook = log = StepLog()
    t.fit(steps_per_phase=1000)
    assert sum(e[0] == "batch" for e in log.events) == 2 * 19


def test_a_training_run_plans_its_memory_once(tmp_path, monkeypatch):
    """The plan that checked the budget is the one the trainer lays its arena out by."""
    from edgeff import budget, cli
    ds = blobs()
    data = tmp_path / "blobs.npz"
    np.savez(data, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test)
    plans = []
    plan_greedy = budget.plan_greedy
    monkeypatch.setattr(budget, "plan_greedy", lambda buffers: plans.append(1) or plan_greedy(buffers))
    assert cli.main(["train", "--dataset", str(data), "--model", "24-16", "--epochs", "1", "--head-epochs", "1",
                     "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert len(plans) == 1


@pytest.mark.parametrize("negatives", ["hard", "random"])
def test_layerwise_cache_trains_as_streaming_does(negatives):
    """Layerwise from the cache of the frozen first layer's product: the same RNG draws and the
    same sums as streaming, so the weights agree to float32 rounding (BLAS rounds a row by the
    rows multiplied beside it, so not bit for bit); the cache is made once, in the second phase."""
    ds = blobs()
    cfg = TrainConfig(model=f"{ds.x_train.shape[1]}-64-64-32", schedule="layerwise", epochs=3, batch_size=32,
                      negatives=negatives).validate()
    nets = []
    for cache in (None, "float32", "float16"):
        t = Trainer(cfg, ds, cache=cache)
        fills = []
        t._fill_cache = lambda fill=t._fill_cache: (fills.append(t.phase), fill())
        t.fit()
        assert fills == ([1] if cache else [])
        assert (t.layout.cache is not None) == (cache is not None)
        nets.append(t.net)
    stream, cached, half = nets
    for a, b in zip(stream.weights + [stream.head_w], cached.weights + [cached.head_w]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    for net in (cached, half):
        np.testing.assert_array_equal(stream.weights[0], net.weights[0])     # phase 1 never reads the cache
    errors = [net.error(ds.x_test, ds.y_test, ds.scale, "goodness") for net in nets]
    assert max(errors) - min(errors) <= 0.01, errors


def first_layer_products(t):
    """u0 of every training row, made in the batches the cache fill makes them in (BLAS rounds a
    row by the rows beside it)."""
    rows, out = np.arange(t.cfg.batch_size, dtype=np.int64), []
    for start in range(0, len(t.ds.y_train), len(rows)):
        b = min(len(rows), len(t.ds.y_train) - start)
        t._first_layer_product(rows[:b] + start)
        out.append(t.u0[:b].copy())
    return np.concatenate(out)


@pytest.mark.parametrize("half_max", [65504.0, 2.0])
def test_a_float16_cache_holds_each_product_rounded_to_float16_and_gives_it_back_exactly(monkeypatch, half_max):
    """The float16 cache holds s * u0 rounded to the nearest float16 (s a power of two keeping every
    product inside float16's range: 1 here unless float16's largest is made 2.0 for the test), and a
    batch is staged as exactly that value widened and divided by s; nothing overflows."""
    from edgeff import train
    monkeypatch.setattr(train, "HALF_MAX", half_max)
    ds = blobs()
    cfg = TrainConfig(model=f"{ds.x_train.shape[1]}-64-32", schedule="layerwise", epochs=1, batch_size=32).validate()
    t = Trainer(cfg, ds, cache="float16")
    t._bind_phase(1)
    want = first_layer_products(t)
    t._fill_cache()
    u0, _, _ = t.cache
    s = t.cache_scale
    assert u0.dtype == np.float16 and np.isfinite(u0).all()
    assert (s == 1.0) == (half_max == 65504.0) and np.log2(s) == round(np.log2(s))
    assert np.abs(want).max() * s <= half_max
    np.testing.assert_array_equal(u0, (want * np.float32(s)).astype(np.float16))
    idx = np.random.default_rng(3).permutation(len(ds.y_train))[:cfg.batch_size]
    t.idx[:] = idx
    t._stage(cfg.batch_size)
    np.testing.assert_array_equal(t.u0[:cfg.batch_size], u0[idx].astype(np.float32) / np.float32(s))


def test_the_float16_scale_bounds_every_product_of_a_large_first_layer():
    """Weights large enough that float16 would overflow: the scale brings the largest product back
    inside its range, and it is the largest power of two that the bound allows."""
    from edgeff.train import HALF_MAX, half_scale
    ds = blobs()
    cfg = TrainConfig(model=f"{ds.x_train.shape[1]}-64-32", schedule="layerwise", epochs=1, batch_size=32).validate()
    t = Trainer(cfg, ds, cache="float16")
    t.net.weights[0][:] = 5000.0
    t._bind_phase(1)
    products = first_layer_products(t)
    s = half_scale(ds, t.net)
    assert np.abs(products).max() > HALF_MAX and np.abs(products).max() * s <= HALF_MAX
    assert np.abs(products).max() * s * 4 > HALF_MAX                   # not smaller than it needs to be
