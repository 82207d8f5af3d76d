"""Unsupervised FF (--algo ff-unsup): the probe's share of labels, bitwise resume in every
phase, ONNX export parity, and the CLI end to end (the hybrid kernel: test_kernels.py)."""

import argparse
import dataclasses

import numpy as np
import pytest

from edgeff import checkpoint, export
from edgeff.config import TrainConfig, config_from_options
from edgeff.data import load_dataset
from edgeff.errors import UsageError
from edgeff.kernels import reference as ref
from edgeff.receptive import layer_fields
from edgeff.unsup_model import UnsupNet
from edgeff.model import EPS
from edgeff.unsup_train import STATS_ROWS, UnsupTrainer
from crash_hook import Crash, CrashAt
from images import write_flat_npz, write_images_npz, write_rgb_npz
from run_cli import edgeff, ok, one_line_error


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images_npz(tmp_path_factory.mktemp("data") / "images.npz", n_train=300, n_test=120)


def small_cfg(images, **kw):
    return TrainConfig(**dict(dict(dataset=str(images), model="64-40-30-20-10", algo="ff-unsup", epochs=2,
                                   head_epochs=2, batch_size=32, schedule="layerwise"), **kw)).validate()


def test_the_probe_reads_only_its_share_of_the_labels(images):
    """Labels past the first ceil(F * N) rows change nothing; the labels within do."""
    ds = load_dataset(str(images))
    cfg = small_cfg(images, probe_labels=0.5)
    n = len(ds.y_train)

    def trained(y_train):
        trainer = UnsupTrainer(cfg, ds.__class__(**dict(ds.__dict__, y_train=y_train)))
        trainer.fit()
        return trainer.net

    base = trained(ds.y_train)
    y = ds.y_train.copy()
    y[n // 2:] = (y[n // 2:] + 1) % 3
    other = trained(y)
    for a, b in zip(base.weights + [base.head_w], other.weights + [other.head_w]):
        np.testing.assert_array_equal(a, b)
    y = ds.y_train.copy()
    y[:n // 2] = (y[:n // 2] + 1) % 3
    assert not np.array_equal(trained(y).head_w, base.head_w)


def test_the_probe_standardises_with_the_features_statistics(images):
    """mean and scale are the probed features' statistics over the first STATS_ROWS images (a
    NumPy twin in float64), and a silent unit gets a finite scale."""
    ds = load_dataset(str(images))
    trainer = UnsupTrainer(small_cfg(images), ds)
    trainer.fit()
    net, mean, scale = trainer.net, trainer.mean, trainer.scale
    rows = ds.x_train[:STATS_ROWS].astype(np.float64) * ds.scale
    h = rows / (np.linalg.norm(rows, axis=1, keepdims=True) + EPS)
    feats = []
    for k, (w, b) in enumerate(zip(net.weights, net.biases)):
        h = np.maximum(h @ w + b, 0)
        h = h / (np.linalg.norm(h, axis=1, keepdims=True) + EPS)
        feats += [h] if k in net.probed else []
    feats = np.concatenate(feats, axis=1)
    var = feats.var(axis=0)
    np.testing.assert_allclose(mean, feats.mean(axis=0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scale, 1 / np.sqrt(var + var.mean()), rtol=1e-3)
    assert np.isfinite(scale).all() and (var == 0).any()       # this tiny net has silent units


def test_folding_the_standardisation_keeps_the_logits():
    """A probe (w, b) on (f - mean) * scale, folded, gives the same logits on f."""
    r = np.random.default_rng(0)
    w, b = r.standard_normal((12, 4)).astype(np.float32), r.standard_normal(4).astype(np.float32)
    mean, scale = r.random(12).astype(np.float32), (r.random(12) * 50 + 1).astype(np.float32)
    feats = r.random((30, 12)).astype(np.float32)
    net = UnsupNet([np.zeros((5, 12), np.float32)], [np.zeros(12, np.float32)], w.copy(), b.copy())
    net.fold_standardisation(mean, scale)
    np.testing.assert_allclose(feats @ net.head_w + net.head_b, ((feats - mean) * scale) @ w + b, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("fields", ["full", "local"])
def test_resume_is_bitwise_in_every_phase(images, tmp_path, fields):
    """A run stopped in each phase (four layers, then the probe) and resumed from its last
    checkpoint ends with the uninterrupted run's weights, bit for bit."""
    ds = load_dataset(str(images))
    cfg = small_cfg(images, probe_labels=0.4, fields=fields, model="64-32-18-20-10")
    whole = UnsupTrainer(cfg, ds)
    whole.fit()
    batches = -(-len(ds.y_train) // cfg.batch_size)
    path = tmp_path / checkpoint.NAME
    for phase in range(5):
        crashing = UnsupTrainer(cfg, ds)
        crashing.step_hook = CrashAt(phase * 2 * batches + batches + 3)     # epoch 2 of the phase, batch 4
        with pytest.raises(Crash):
            crashing.fit(path, 2, run_meta=dict(every=2, limit_train=None))
        resume = checkpoint.load(path)
        assert resume[1]["position"][0] == phase
        resumed = UnsupTrainer(cfg, ds)
        checkpoint.check_resume(path, *resume, resumed)
        resumed.fit(path, 2, resume, run_meta=dict(every=2, limit_train=None))
        for a, b in zip(whole.net.weights + whole.net.biases + [whole.net.head_w, whole.net.head_b],
                        resumed.net.weights + resumed.net.biases + [resumed.net.head_w, resumed.net.head_b]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("widths", [(9,), (12, 7), (16, 11, 9, 6, 5)])    # one, two, and more than three layers
@pytest.mark.parametrize("opset", [export.MIN_OPSET, export.max_opset()])
def test_graph_matches_numpy_forward(widths, opset):
    rng = np.random.default_rng(len(widths) + opset)
    sizes = (30, *widths)
    weights = [rng.standard_normal((a, b)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [rng.standard_normal(b).astype(np.float32) * 0.1 for b in widths]
    feat = sum(widths[-3:])
    net = UnsupNet(weights, biases, rng.standard_normal((feat, 4)).astype(np.float32),
                   rng.standard_normal(4).astype(np.float32))
    net.check()
    model = export.check(export.build(net, "linear", opset))
    x = rng.random((101, 30)).astype(np.float32)
    sess = export.session(model.SerializeToString())
    report = export.parity(sess, net, x, "linear")
    assert report["ok"] and report["label_agreement"] == 1.0, report
    np.testing.assert_array_equal(sess.run(["label"], {"x": x})[0], net.predict(x, 1.0))


def test_cli_train_eval_export_infer(images, tmp_path):
    run, onnx_path = tmp_path / "run", tmp_path / "m.onnx"
    m = ok(edgeff("train", "--dataset", images, "--algo", "ff-unsup", "--model", "64-40-40", "--epochs", "3",
                  "--head-epochs", "4", "--batch-size", "32", "--probe-labels", "0.5", "--out", run, "--json"))
    assert m["algo"] == "ff-unsup" and m["probe_labels"] == 0.5 and m["probe_label_rows"] == 150
    assert m["classifier"] == "linear" and m["test_error"] < 0.2, m      # three well-separated classes
    assert ok(edgeff("eval", run, "--json"))["test_error"] == m["test_error"]
    rep = ok(edgeff("export", run, "-o", onnx_path, "--json"))
    assert rep["parity"]["ok"] and rep["head"] == "linear"
    rows = tmp_path / "rows.npy"
    np.save(rows, load_dataset(str(images)).x_test[:20])
    by_run, by_onnx = ok(edgeff("infer", run, rows, "--json")), ok(edgeff("infer", onnx_path, rows, "--json"))
    assert by_run["labels"] == by_onnx["labels"] and by_onnx["engine"] == "onnxruntime"
    one_line_error(edgeff("export", run, "-o", tmp_path / "g.onnx", "--head", "goodness"), "--head linear")
    assert not (tmp_path / "g.onnx").exists()
    bundle = ok(edgeff("bundle", run, "--target", "rpi5", "-o", tmp_path / "b", "--no-wheels", "--json"))
    assert bundle["export"]["head"] == "linear" and bundle["export"]["parity"]["ok"]


def test_cli_resume_after_a_checkpoint(images, tmp_path):
    args = ["train", "--dataset", images, "--algo", "ff-unsup", "--model", "64-20-20", "--epochs", "2",
            "--head-epochs", "1", "--batch-size", "50", "--quiet", "--json"]
    whole = ok(edgeff(*args, "--out", tmp_path / "whole"))
    ok(edgeff(*args, "--out", tmp_path / "run", "--checkpoint-every", "7"))
    assert (tmp_path / "run" / checkpoint.NAME).exists()
    again = ok(edgeff("train", "--resume", tmp_path / "run", "--json"))     # from step 28 of 30: in the probe
    assert again["test_error"] == whole["test_error"] and again["probe_labels"] == 1.0
    with np.load(tmp_path / "whole" / "model.npz") as a, np.load(tmp_path / "run" / "model.npz") as b:
        for k in a.files:
            if k != "meta":
                np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("args,fragments", [
    (["--probe-labels", "0"], ["--probe-labels must be a number above 0 and at most 1"]),
    (["--probe-labels", "1.5"], ["--probe-labels", "at most 1"]),
    (["--probe-labels", "nan"], ["--probe-labels"]),
    (["--model", "conv-small"], ["--algo ff-unsup trains a dense --model"]),
    (["--head-epochs", "0"], ["--head-epochs 1 or more"]),
    (["--classifier", "goodness"], ["--classifier linear"]),
    (["--shift", "1"], ["--shift", "leave it out"]),
    (["--algo", "ff"], ["--probe-labels is the probe's share", "leave it out"]),    # with --probe-labels 0.5 below
    (["--mask-blurs", "0"], ["--mask-blurs must be a whole number from 1 to 6, got 0"]),
    (["--mask-blurs", "7"], ["--mask-blurs must be a whole number from 1 to 6, got 7"]),
    (["--algo", "uff", "--learner", "ae", "--mask-blurs", "3"], ["--mask-blurs shapes the hybrid images", "leave it out"]),
    (["--fields", "local"], ["layer 1's units on a 4 x 4 grid", "multiple of 16, got 20"]),
    (["--fields", "local", "--model", "64-32-20"], ["layer 2's units on a 3 x 3 grid", "multiple of 9, got 20"]),
    (["--algo", "uff", "--learner", "ae", "--fields", "local"], ["--fields local gives", "leave it out"]),
])
def test_bad_options_are_one_line_errors(images, tmp_path, args, fragments):
    base = ["train", "--dataset", images, "--algo", "ff-unsup", "--model", "64-20", "--epochs", "1",
            "--out", tmp_path / "r"]
    extra = ["--probe-labels", "0.5"] if args[:2] == ["--algo", "ff"] else []
    one_line_error(edgeff(*base, *args, *extra), *fragments)
    assert not (tmp_path / "r").exists()


def test_mask_blurs_shape_the_negatives_and_an_older_run_keeps_its_six(images):
    """--mask-blurs changes what the layers learn; a run's config written before the option existed
    (no mask_blurs) resumes with the 6 blurs it was trained with."""
    ds = load_dataset(str(images))
    weights = []
    for blurs in (1, 3):
        trainer = UnsupTrainer(small_cfg(images, mask_blurs=blurs, head_epochs=0, epochs=1), ds)
        trainer.fit()
        weights.append(trainer.net.weights[0].copy())
    assert not np.array_equal(*weights)
    old = {k: v for k, v in dataclasses.asdict(TrainConfig(algo="ff-unsup", model="64-20")).items() if k != "mask_blurs"}
    assert TrainConfig.from_dict(old).mask_blurs == 6 and TrainConfig().mask_blurs == 2


def test_a_config_naming_unknown_fields_is_refused():
    """A run's config.json (a file from outside) with another fields value is one UsageError line."""
    d = dict(dataclasses.asdict(TrainConfig(algo="ff-unsup", model="64-32")), fields="nearby")
    with pytest.raises(UsageError, match="--fields 'nearby' is not one of: full, local"):
        TrainConfig.from_dict(d)


def test_local_fields_learn_only_inside_their_windows(images, tmp_path):
    """--fields local: every weight outside a unit's window is exactly zero after training, the
    ones inside have learned; export and infer treat the net as the dense net it is."""
    run = tmp_path / "run"
    m = ok(edgeff("train", "--dataset", images, "--algo", "ff-unsup", "--model", "64-32-18-8-10", "--fields", "local",
                  "--epochs", "2", "--head-epochs", "3", "--batch-size", "32", "--out", run, "--json"))
    assert m["test_error"] < 0.3, m
    ds = load_dataset(str(images))
    with np.load(run / "model.npz") as z:
        weights = [z[f"w{k}"] for k in range(4)]
    untrained = UnsupTrainer(small_cfg(images, model="64-32-18-8-10", fields="local"), ds).net.weights
    changed = []
    for w, before, f in zip(weights, untrained, layer_fields(ds.image_shape, [32, 18, 8, 10])):
        inside = ref.field_mask(f, w.shape[0]) if f is not None else np.ones(w.shape, bool)
        assert (w[~inside] == 0).all() and (before[~inside] == 0).all()
        changed.append(w[inside] != before[inside])
        assert changed[-1].any()
    assert np.concatenate(changed).mean() > 0.5        # all but the units that never fired
    assert layer_fields(ds.image_shape, [32, 18, 8, 10])[3] is None
    rows = tmp_path / "rows.npy"
    np.save(rows, ds.x_test[:20])
    ok(edgeff("export", run, "-o", tmp_path / "m.onnx", "--json"))
    assert ok(edgeff("infer", run, rows, "--json"))["labels"] == ok(edgeff("infer", tmp_path / "m.onnx", rows,
                                                                          "--json"))["labels"]


def test_flat_rows_are_refused(tmp_path):
    path = write_flat_npz(tmp_path / "flat.npz")
    one_line_error(edgeff("train", "--dataset", path, "--algo", "ff-unsup", "--model", "12-8", "--out", tmp_path / "r"),
                   "hybrid negatives", "flat rows")


def test_colour_images_train(tmp_path):
    """(H, W, 3) images: one mask per pixel, its channels mixed alike."""
    path = write_rgb_npz(tmp_path / "rgb.npz", 200, 60, 9)
    m = ok(edgeff("train", "--dataset", path, "--algo", "ff-unsup", "--model", "243-30", "--epochs", "1",
                  "--head-epochs", "3", "--batch-size", "20", "--out", tmp_path / "r", "--json"))
    assert 0 <= m["test_error"] <= 1


def test_plan_holds_the_hybrid_buffers_and_the_probe(images):
    report = ok(edgeff("plan", "--dataset", images, "--algo", "ff-unsup", "--model", "64-20-10", "--batch-size", "16",
                       "--json"))
    shapes = {b["name"]: tuple(b["shape"]) for b in report["buffers"]}
    assert shapes["p0/masks"] == (16, 64) and shapes["p0/x"] == (32, 64) and shapes["head_w"] == (30, 3)
    assert report["arena_bytes"] < report["naive_bytes"]         # the FF phases and the probe share bytes


@pytest.mark.parametrize("algo, model, epochs, lr", [("ff-unsup", "784-50", 10, 0.003), ("uff", "784-50", 10, 0.003),
                                                     ("ff", "784-50", 3, 0.01), ("ffcl", "784-50", 0, 0.01),
                                                     ("ff", "conv-small", 0, 0.01)])
def test_the_probe_and_the_head_default_by_algo(algo, model, epochs, lr):
    """Left out, --head-epochs and --head-lr are the algo's (the probe's: 10 at 0.003); given, they are kept."""
    options = argparse.Namespace(model=model, algo=algo, epochs=1, head_epochs=None, head_lr=None, classifier=None,
                                 learner="ae" if algo == "uff" else "", width_mult=None, hybrid=None)
    cfg = config_from_options(options, 16)
    assert (cfg.head_epochs, cfg.head_lr) == (epochs, lr)
    if epochs:
        given = config_from_options(argparse.Namespace(**dict(vars(options), head_epochs=2, head_lr=0.5)), 16)
        assert (given.head_epochs, given.head_lr) == (2, 0.5)
