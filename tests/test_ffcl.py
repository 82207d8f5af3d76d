"""FFCL (--algo ffcl): the scores against a plain float64 rewrite of the formulas in
edgeff/ffcl_model.py, every layer's gradient against finite differences of its own loss,
bitwise resume, ONNX export parity for every combination of the three switches, and the
CLI end to end (train, eval, infer, export; bad combinations of flags)."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeff import checkpoint, export
from edgeff.config import TrainConfig
from edgeff.data import Dataset, load_dataset
from edgeff.ffcl_model import FFCLNet
from edgeff.ffcl_train import FFCLTrainer
from images import write_images_npz
from run_cli import edgeff, ok, one_line_error
from crash_hook import Crash, CrashAt

# (separate labels, late labels, feedback steps): every combination the config allows
SWITCHES = [(s, late, k) for s, late, k in itertools.product((False, True), (False, True), (0, 2)) if s or not late]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images_npz(tmp_path_factory.mktemp("data") / "images.npz", n_train=300, n_test=120)


def ffcl_cfg(images, **kw):
    if kw.get("feedback_steps") and not kw.get("late_labels"):
        kw.setdefault("negatives", "random")        # early labels with feedback refuse hard negatives
    return TrainConfig(**dict(dataset=str(images), algo="ffcl", classifier="goodness", head_epochs=0, **kw)).validate()


def random_net(rng, sizes, c, separate, late, steps, mean=False):
    f32 = lambda shape, scale: (rng.standard_normal(shape) * scale).astype(np.float32)
    w = [f32((a, b), a ** -0.5) for a, b in zip(sizes[:-1], sizes[1:])]
    b = [f32(h, 0.1) for h in sizes[1:]]
    lw = [f32((c, h), 0.3) for h in sizes[1:len(sizes) if separate else 2]]
    fw = [f32((hi, lo), hi ** -0.5) for lo, hi in zip(sizes[1:-1], sizes[2:])]
    net = FFCLNet(w, b, lw, fw if steps else [], late, steps, mean)
    net.check()
    return net


def settled(net, x, labels, params=None):
    """float64 rewrite of the settling forward: per layer (its input below, the one fed back, u = its
    pre-activation without label and bias) at the last step; labels: one per row (early) or None (late)."""
    w, b, lw, fw = params or (net.weights, net.biases, net.label_w, net.feedback_w)
    n, eps = len(w), 1e-4
    unit = lambda a: a / (np.linalg.norm(a, axis=1, keepdims=True) + eps)
    h, last = [None] * n, [None] * n
    for t in range(net.feedback_steps + 1):
        for k in range(n):
            below = unit(x.astype(np.float64)) if k == 0 else h[k - 1]
            above = h[k + 1] if t > 0 and k < len(fw) else None
            u = below @ w[k] + (above @ fw[k] if above is not None else 0.0)
            label = lw[k][labels] if labels is not None and k < len(lw) else 0.0
            last[k] = (below, above, u)
            h[k] = unit(np.maximum(u + label + b[k], 0.0))
    return last


def goodness(pre, mean):
    a = np.maximum(pre, 0.0) ** 2
    return a.mean(-1) if mean else a.sum(-1)


def reference_scores(net, x):
    c = net.num_classes
    if net.late:
        return sum(goodness(u[:, None, :] + net.label_w[k][None] + net.biases[k], net.mean_goodness)
                   for k, (_, _, u) in enumerate(settled(net, x, None)))
    scores = np.zeros((len(x), c))
    for label in range(c):
        labels = np.full(len(x), label)
        for k, (_, _, u) in enumerate(settled(net, x, labels)):
            extra = net.label_w[k][labels] if k < len(net.label_w) else 0.0
            scores[:, label] += goodness(u + extra + net.biases[k], net.mean_goodness)
    return scores


@pytest.mark.parametrize("separate,late,steps", SWITCHES)
@pytest.mark.parametrize("mean", [False, True])
def test_scores_follow_the_formulas(separate, late, steps, mean):
    rng = np.random.default_rng(steps + 2 * late + 4 * separate)
    net = random_net(rng, (20, 9, 7, 5), 4, separate, late, steps, mean)
    x = rng.random((300, 20)).astype(np.float32)      # more than one chunk of rows
    got = net.goodness_scores(x, 1.0, chunk=128)
    np.testing.assert_allclose(got, reference_scores(net, x), rtol=2e-4, atol=1e-5)


def layer_inputs(net, k, x, y, neg, params):
    """(from below, fed back from above) of layer k at the last step, for its 2B goodness rows."""
    labels = np.concatenate([y, neg])
    if not net.late:
        return settled(net, np.concatenate([x, x]), labels, params)[k][:2]
    below, above, _ = settled(net, x, None, params)[k]
    return np.concatenate([below, below]), None if above is None else np.concatenate([above, above])


def layer_loss(net, k, below, above, labels, theta, params):
    """Layer k's FF loss (positives first) with its inputs held fixed."""
    w, b, lw, fw = params
    u = below @ w[k] + (above @ fw[k] if above is not None else 0.0)
    g = goodness(u + (lw[k][labels] if k < len(lw) else 0.0) + b[k], net.mean_goodness)
    s = np.where(np.arange(len(labels)) < len(labels) // 2, 1.0, -1.0) * (g - theta)
    return np.mean(np.logaddexp(0.0, -s))


@pytest.mark.parametrize("separate,late,steps", SWITCHES)
def test_each_layer_steps_down_its_own_loss_gradient(images, separate, late, steps):
    """The gradient a layer applies is that of its own loss with its inputs fixed (finite differences
    in float64 on a few entries of every parameter): training is local, nothing crosses the loop."""
    ds = load_dataset(str(images))
    cfg = ffcl_cfg(images, model="64-12-10-8", batch_size=16, optimizer="sgd", threshold=1.0,
                   separate_labels=separate, late_labels=late, feedback_steps=steps)
    t = FFCLTrainer(cfg, ds)
    t._bind(0)
    net = t.net
    params = tuple([a.astype(np.float64) for a in group] for group in
                   (net.weights, net.biases, net.label_w, net.feedback_w))
    b = 16
    t.idx[:b] = t.order[:b]
    t._step(b, t.phases()[0], np.zeros(3))
    x = ds.x_train[:b] * np.float32(ds.scale)
    y, neg = t.work["labels"][:b].copy(), t.work["labels"][b:2 * b].copy()
    rng = np.random.default_rng(0)
    for k in range(3):
        below, above = layer_inputs(net, k, x, y, neg, params)
        loss = lambda: layer_loss(net, k, below, above, np.concatenate([y, neg]), 1.0, params)
        for name, group in zip("wblf", range(4)):
            if name not in t.grads[k]:
                continue
            grad, p = t.grads[k][name], params[group][k]
            for _ in range(3):
                i = tuple(rng.integers(0, s) for s in p.shape)
                old = p[i]
                p[i] = old + 1e-5
                up = loss()
                p[i] = old - 1e-5
                down = loss()
                p[i] = old
                fd = (up - down) / 2e-5
                assert abs(fd - grad[i]) <= 1e-3 * abs(fd) + 1e-7, (k, name, i, fd, grad[i])


def test_rows_of_fewer_features_than_classes_train_and_export():
    """No label inputs: a row of 3 features with 5 classes is a 3-wide input (plain FF would append 5)."""
    rng = np.random.default_rng(1)
    x = rng.random((96, 3)).astype(np.float32)
    y = (x[:, 0] * 5).astype(np.int32)
    ds = Dataset("flat", x, y, x[:20], y[:20], 5, 1.0, None, tuple("abcde"), "flat")
    t = FFCLTrainer(TrainConfig(dataset="flat", model="3-8-6", algo="ffcl", classifier="goodness", head_epochs=0,
                                batch_size=32, epochs=2, separate_labels=True, late_labels=True).validate(), ds)
    t.fit()
    assert t.net.weights[0].shape == (3, 8) and t.net.num_classes == 5
    sess = export.session(export.check(export.build(t.net)).SerializeToString())
    assert export.parity(sess, t.net, x, "goodness")["ok"]


@pytest.mark.parametrize("separate,late,steps", [(True, True, 2), (False, False, 1)])
def test_resume_is_bitwise(images, tmp_path, separate, late, steps):
    ds = load_dataset(str(images))
    cfg = ffcl_cfg(images, model="64-20-16-12", epochs=3, batch_size=32, separate_labels=separate, late_labels=late,
                   feedback_steps=steps)
    whole = FFCLTrainer(cfg, ds)
    whole.fit()
    path = tmp_path / checkpoint.NAME
    crashing = FFCLTrainer(cfg, ds)
    crashing.step_hook = CrashAt(14)                 # epoch 2, batch 5
    with pytest.raises(Crash):
        crashing.fit(path, 3, run_meta=dict(every=3, limit_train=None))
    resume = checkpoint.load(path)
    resumed = FFCLTrainer(cfg, ds)
    checkpoint.check_resume(path, *resume, resumed)
    resumed.fit(path, 3, resume, run_meta=dict(every=3, limit_train=None))
    a, b = whole.net, resumed.net
    for x, y in zip(a.weights + a.biases + a.label_w + a.feedback_w, b.weights + b.biases + b.label_w + b.feedback_w):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("separate,late,steps", SWITCHES)
@pytest.mark.parametrize("opset", [export.MIN_OPSET, export.max_opset()])
def test_graph_matches_numpy_forward(separate, late, steps, opset):
    rng = np.random.default_rng(opset + steps)
    net = random_net(rng, (30, 16, 11, 9), 5, separate, late, steps, mean=opset == export.MIN_OPSET)
    model = export.check(export.build(net, "goodness", opset))
    x = rng.random((101, 30)).astype(np.float32)
    sess = export.session(model.SerializeToString())
    report = export.parity(sess, net, x, "goodness")
    assert report["ok"] and report["label_agreement"] == 1.0, report
    np.testing.assert_array_equal(sess.run(["label"], {"x": x})[0], net.predict(x, 1.0))


def test_cli_trains_evaluates_infers_and_exports(images, tmp_path):
    out = tmp_path / "run"
    m = ok(edgeff("train", "--dataset", images, "--algo", "ffcl", "--separate-labels", "--late-labels",
                  "--feedback-steps", "1", "--model", "64-24-16", "--epochs", "2", "--batch-size", "32",
                  "--out", out, "--json"))
    assert m["algo"] == "ffcl" and m["late_labels"] and m["feedback_steps"] == 1 and m["classifier"] == "goodness"
    ev = ok(edgeff("eval", out, "--json"))
    assert ev["test_error"] == pytest.approx(m["test_error"])
    assert ok(edgeff("export", out, "--output", tmp_path / "m.onnx", "--json"))["parity"]["ok"]
    x = np.load(images)["x_test"][:7]
    np.save(tmp_path / "x.npy", x)
    run_labels = edgeff("infer", out, tmp_path / "x.npy").stdout
    assert run_labels == edgeff("infer", tmp_path / "m.onnx", tmp_path / "x.npy").stdout
    assert len(run_labels.splitlines()) == 7
    one_line_error(edgeff("export", out, "--head", "first", "--output", tmp_path / "f.onnx"),
                   "an ffcl net classifies by its layers' goodness")


def test_bench_infer_times_an_ffcl_run_beside_plain_ff(images, tmp_path):
    runs = [tmp_path / "ff", tmp_path / "ffcl"]
    trained = [ok(edgeff("train", "--dataset", images, "--model", "64-16-16", "--epochs", "1", "--classifier",
                         "goodness", "--head-epochs", "0", "--out", runs[0], "--json")),
               ok(edgeff("train", "--dataset", images, "--algo", "ffcl", "--separate-labels", "--late-labels",
                         "--model", "64-16-16", "--epochs", "1", "--out", runs[1], "--json"))]
    tool = Path(__file__).resolve().parent.parent / "tools" / "bench_infer.py"
    r = subprocess.run([sys.executable, str(tool), *map(str, runs), "--seconds", "0.05", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    ffcl = [row for row in rows if row["algo"] == "ffcl"]
    assert [(row["head"], row["batch"]) for row in ffcl] == [("goodness", 1), ("goodness", 256)]
    assert all(row["over_first_goodness"]["numpy"] > 0 and row["onnxruntime"] > 0 for row in ffcl)
    first = [row for row in rows if row["algo"] == "ff" and row["head"] == "goodness"]
    assert all(row["over_first_goodness"] == {"numpy": 1.0, "onnxruntime": 1.0} for row in first)
    # each row beside its head's test error from training, so classifiers compare at the same error
    assert {row["test_error"] for row in first} == {trained[0]["test_error_goodness"]}
    assert {row["test_error"] for row in ffcl} == {trained[1]["test_error_goodness"]}
    (runs[1] / "metrics.json").write_text("[1]")            # damaged: one line, no traceback
    r = subprocess.run([sys.executable, str(tool), *map(str, runs), "--seconds", "0.05"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "metrics.json: a JSON list" in r.stderr, r.stderr


@pytest.mark.parametrize("args,message", [
    (["--feedback-steps", "1"], "--feedback-steps is an FFCL option: add --algo ffcl"),
    (["--separate-labels"], "--separate-labels is an FFCL option"),
    (["--algo", "ffcl", "--late-labels"], "--late-labels needs --separate-labels"),
    (["--algo", "ffcl", "--classifier", "linear"], "use --classifier goodness and --head-epochs 0"),
    (["--algo", "ffcl", "--head-epochs", "2"], "use --classifier goodness and --head-epochs 0"),
    (["--algo", "ffcl", "--schedule", "layerwise"], "all layers at once"),
    (["--algo", "ffcl", "--feedback-steps", "9"], "--feedback-steps must be a whole number from 0 to 8"),
    (["--algo", "ffcl", "--feedback-steps", "1", "--model", "64-10"], "has one layer"),
    (["--algo", "ffcl", "--feedback-steps", "1"], "add --separate-labels --late-labels, or --negatives random"),
])
def test_bad_combinations_are_one_line_errors(images, tmp_path, args, message):
    argv = ["train", "--dataset", images, "--model", "64-10-10", "--epochs", "1", "--out", tmp_path / "r", *args]
    one_line_error(edgeff(*argv), message)
    assert not (tmp_path / "r").exists()
