"""FFEncoder, unsupervised FF in the Python API: scikit-learn's checks and tools, no probe in the memory
plan, the same encoder and features as `edgeff train --algo ff-unsup`, ONNX under onnxruntime, run
directories, and one-line errors."""

import dataclasses
import json
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import (check_get_feature_names_out_error,
                                            check_transformer_get_feature_names_out, parametrize_with_checks)

from edgeff import FFClassifier, FFEncoder
from edgeff.callbacks import Callback
from edgeff.config import TrainConfig
from edgeff.data import load_dataset
from edgeff.encoder import NOT_ENCODER_OPTIONS
from edgeff.errors import EdgeFFError
from edgeff.memory import fmt_bytes
from edgeff.runs import load_run
from edgeff.unsup_train import UnsupTrainer, planner
from run_cli import edgeff, ok, one_line_error


class RowsAsImages(FFEncoder):
    """FFEncoder taking scikit-learn's test rows (N, D) as one-row images (N, 1, D): FFEncoder refuses
    flat rows, and scikit-learn's checks only give them; what the checks test is FFEncoder's own code."""

    def fit(self, X, y=None):
        return super().fit(_as_images(X), y)

    def transform(self, X):
        return super().transform(_as_images(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags


def _as_images(X):
    if hasattr(X, "tocsr"):
        return X                 # refused by FFEncoder itself, as sparse
    x = np.asarray(X)
    return x.reshape(len(x), 1, -1) if x.ndim == 2 and x.shape[1] else x


# scikit-learn's checks that cannot apply, and why
NOT_APPLICABLE = {
    "check_dtype_object": "edgeff takes numeric arrays: an object array is refused with one DataError line "
                          "(a ValueError), not converted number by number",
    "check_methods_sample_order_invariance": "float32 features: a row's matrix product may differ in its last bit "
                                             "with the row's place in BLAS's tiles (1.5e-8 here); the check's rtol "
                                             "1e-7 is below float32's resolution (1.2e-7)",
}

with warnings.catch_warnings():    # that it does not inherit from scikit-learn's BaseEstimator: on purpose
    warnings.filterwarnings("ignore", "Estimator .* does not inherit", UserWarning)
    warnings.filterwarnings("ignore", "Can't test estimator FFEncoder")     # images only: said below
    # FFEncoder itself declares images only, as scikit-learn's PatchExtractor does: scikit-learn then runs
    # no check that needs data; every check runs on RowsAsImages
    CHECKS = parametrize_with_checks([FFEncoder(epochs=1, batch_size=16), RowsAsImages(epochs=1, batch_size=16)],
                                     expected_failed_checks=lambda estimator: NOT_APPLICABLE)


@CHECKS
def test_scikit_learn_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("check", [check_transformer_get_feature_names_out, check_get_feature_names_out_error])
def test_feature_names_out(check):
    """Two of scikit-learn's checks it runs only on its own estimators."""
    check("RowsAsImages", RowsAsImages(epochs=1, batch_size=16))


@pytest.fixture(scope="module")
def digits():
    """load_digits as float32 8x8 images in [0, 1], split 1200 / 597."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32).reshape(-1, 8, 8)
    return x[:1200], y[:1200], x[1200:], y[1200:]


SMALL = dict(model="64-48-40-32", epochs=2, batch_size=32, seed=3)


@pytest.fixture(scope="module")
def fitted(digits):
    return FFEncoder(**SMALL).fit(digits[0])


def test_pipeline_to_logistic_regression(digits):
    """Features for a classifier that never saw the encoder's training: 5-fold cross-validation on the digits."""
    x, y, xt, yt = digits
    pipe = make_pipeline(FFEncoder(model="64-100-100-100", epochs=5, batch_size=32), StandardScaler(),
                         LogisticRegression(max_iter=1000))
    scores = cross_val_score(pipe, np.concatenate([x, xt]), np.concatenate([y, yt]), cv=5)
    assert len(scores) == 5 and scores.mean() > 0.85


def test_options_are_the_classifiers_less_the_probe_and_supervised_ones():
    params, theirs = FFEncoder().get_params(), FFClassifier().get_params()
    assert set(params) == set(theirs) - set(NOT_ENCODER_OPTIONS)
    assert all(params[k] == theirs[k] for k in params)
    assert repr(FFEncoder(epochs=3, lr=0.01)) == "FFEncoder(epochs=3, lr=0.01)"


def test_no_probe_is_planned_or_trained(digits, tmp_path):
    """The encoder's memory plan holds no buffer of the probe; no probe phase runs."""
    x, y, _, _ = digits

    class Record(Callback):
        def __init__(self):
            self.lines, self.epochs = [], []

        def log(self, message):
            self.lines.append(message)

        def epoch_begins(self, desc, total):
            self.epochs.append(desc)

    record = Record()
    enc = FFEncoder(model="64-20-20", epochs=2, batch_size=16, schedule="layerwise", callbacks=[record]).fit(x)
    assert record.epochs == ["layer 1/2 epoch 1/2", "layer 1/2 epoch 2/2", "layer 2/2 epoch 1/2", "layer 2/2 epoch 2/2"]
    ds = load_dataset(str(_npz(x, y, tmp_path / "digits.npz")))
    with_probe, without = (planner(TrainConfig(model="64-20-20", algo="ff-unsup", head_epochs=h, batch_size=16,
                                               schedule="layerwise").validate(), ds)(16) for h in (3, 0))
    names, probe = {b.name for b in without.buffers}, {b.name for b in with_probe.buffers}
    assert names < probe and all(n.startswith(("h/", "head_")) for n in probe - names)
    assert not any(n.startswith(("h/", "head_")) for n in names)
    # the probe's phase reuses the FF phases' bytes: the arena is no larger with it, only the sum of buffers
    assert without.arena_bytes <= with_probe.arena_bytes and without.naive_bytes < with_probe.naive_bytes
    assert record.lines[1] == f"memory: arena {fmt_bytes(without.arena_bytes)}, batch size 16"
    assert enc.net_.head_w is None and enc.config_.head_epochs == 0


def _npz(x, y, path):
    np.savez(path, x_train=x, y_train=y, x_test=x[:10], y_test=y[:10])
    return path


@pytest.mark.parametrize("options", [SMALL, dict(model="64-30-20", epochs=3, batch_size=64, schedule="layerwise",
                                                 goodness="mean", seed=9)])
def test_same_encoder_and_features_as_the_cli(digits, tmp_path, options):
    """Same options and seed: the CLI's ff-unsup run and FFEncoder train the same encoder bit for bit, and
    the CLI's probe, reading transform's features, makes exactly the CLI's test error."""
    x, y, xt, yt = digits
    np.savez(tmp_path / "digits.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    flags = [a for k, v in options.items() for a in (f"--{k.replace('_', '-')}", v)]
    cli = ok(edgeff("train", "--dataset", tmp_path / "digits.npz", "--algo", "ff-unsup", "--head-epochs", "2",
                    "--out", tmp_path / "run", "--json", *flags))
    enc = FFEncoder(**options).fit(x)
    cli_net, cli_cfg = load_run(tmp_path / "run")
    for mine, theirs in zip(enc.net_.weights + enc.net_.biases, cli_net.weights + cli_net.biases):
        assert mine.tobytes() == theirs.tobytes()
    assert enc.history_ == cli["epoch_losses"][:-2]          # its FF epochs; the probe's 2 follow
    features, rows = enc.transform(xt), xt.reshape(len(xt), -1)
    assert features.tobytes() == cli_net.feature_rows(rows, 1.0).tobytes()
    logits = features @ cli_net.head_w + cli_net.head_b
    assert logits.tobytes() == cli_net.head_logits(rows, 1.0).tobytes()
    assert float((logits.argmax(axis=1) != yt).mean()) == cli["test_error"]


def test_the_probe_reads_transforms_features(digits, fitted, tmp_path):
    """In the probe's phase, a batch's features (the trainer's own buffers) are transform's, bit for bit."""
    x, y, _, _ = digits
    ds = load_dataset(str(_npz(x, y, tmp_path / "digits.npz")))
    cfg = TrainConfig(dataset=ds.name, algo="ff-unsup", head_epochs=1,
                      **{k: v for k, v in SMALL.items()}).validate()
    trainer = UnsupTrainer(cfg, ds)
    trainer.fit()                                   # ends bound to the probe's phase and buffers
    idx = np.arange(100, 132, dtype=np.int64)
    trainer.net.features(ds.x_train, ds.scale, idx, trainer.x, trainer.zs, trainer.hs, trainer.good, trainer.feats)
    assert trainer.feats[:32].tobytes() == fitted.transform(x[idx]).tobytes()


@pytest.mark.parametrize("pixels", ["float (N, H, W)", "uint8 (N, H, W, C)"])
def test_to_onnx_gives_transforms_features(digits, tmp_path, pixels):
    import onnxruntime
    x, _, xt, _ = digits
    if pixels.startswith("uint8"):
        x, xt = (np.repeat((a * 255).astype(np.uint8)[..., None], 3, axis=3) for a in (x, xt))
    enc = FFEncoder(model=f"{x[0].size}-40-30", epochs=2, batch_size=32).fit(x)
    report = enc.to_onnx(tmp_path / "enc.onnx", xt)
    assert report["parity"]["ok"] and report["parity"]["features_within_tolerance"]
    sess = onnxruntime.InferenceSession(str(tmp_path / "enc.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["features"]
    scale = 1 / 255 if xt.dtype == np.uint8 else 1.0
    got = sess.run(["features"], {"x": (xt.reshape(len(xt), -1) * np.float32(scale)).astype(np.float32)})[0]
    np.testing.assert_allclose(got, enc.transform(xt), rtol=1e-4, atol=1e-5)


def test_save_load_and_the_cli_on_the_run(digits, fitted, tmp_path):
    _, _, xt, _ = digits
    run = tmp_path / "run"
    fitted.save(run, xt)
    back = FFEncoder.load(run)
    assert back.get_params() == fitted.get_params()
    assert back.config_ == dataclasses.replace(fitted.config_, dataset=str(run / "data.npz"))   # the data written
    assert back.transform(xt).tobytes() == fitted.transform(xt).tobytes()
    exported = ok(edgeff("export", run, "-o", tmp_path / "m.onnx", "--json"))
    assert exported["parity"]["ok"] and exported["parity"]["samples"] == len(xt) and exported["head"] == "features"
    one_line_error(edgeff("eval", run), "an encoder without a probe")
    np.save(tmp_path / "rows.npy", xt[:3].reshape(3, -1))
    one_line_error(edgeff("infer", run, tmp_path / "rows.npy"), "an encoder without a probe")
    one_line_error(edgeff("infer", tmp_path / "m.onnx", tmp_path / "rows.npy"), "an encoder's features")
    with pytest.raises(EdgeFFError, match="already holds a model"):
        fitted.save(run)
    with pytest.raises(EdgeFFError, match="FFEncoder.load"):
        FFClassifier.load(run)


@pytest.mark.parametrize("damage, message", [
    (lambda model, config: model.update(head_b=np.zeros(10, np.float32)), "has no array 'head_w'"),   # half a probe
    (lambda model, config: config.update(head_epochs=3), "does not describe"),     # a probe the file does not hold
])
def test_a_damaged_encoder_run_is_one_line(digits, fitted, tmp_path, damage, message):
    run = fitted.save(tmp_path / "run")
    with np.load(run / "model.npz") as z:
        model = {k: z[k] for k in z.files}
    meta = json.loads(model["meta"].tobytes())
    damage(model, meta["config"])
    model["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(run / "model.npz", **model)
    with pytest.raises(EdgeFFError, match=message):
        FFEncoder.load(run)


def test_load_refuses_a_classifiers_run(digits, tmp_path):
    x, y, _, _ = digits
    FFClassifier(model="64-16", epochs=1).fit(x, y).save(tmp_path / "clf")
    with pytest.raises(EdgeFFError, match="holds no encoder"):
        FFEncoder.load(tmp_path / "clf")


@pytest.mark.parametrize("call, message", [
    (lambda enc, x: enc.fit(x.reshape(len(x), -1)), "X holds flat rows (1200, 64); FFEncoder mixes images"),
    (lambda enc, x: enc.fit(x[:, 0, 0]), "Reshape your data"),
    (lambda enc, x: enc.fit(np.where(np.arange(len(x))[:, None, None] == 3, np.nan, x)),
     "X holds NaN or Inf (first in row 3)"),
    (lambda enc, x: enc.fit(x.astype(str)), "give numbers"),
    (lambda enc, x: enc.transform(x), "not fitted yet; call fit(X)"),
    (lambda enc, x: enc.set_params(epochs=0).fit(x), "--epochs must be a whole number at least 1, got 0"),
    (lambda enc, x: enc.set_params(model="10-5").fit(x), "start the spec with 64"),
    (lambda enc, x: enc.set_params(model="conv-small").fit(x), "--algo ff-unsup trains a dense --model"),
    (lambda enc, x: enc.set_params(memory_budget="1KiB").fit(x), "--memory-budget is 1.0 KiB"),
    (lambda enc, x: enc.set_params(negatives="hard"), "FFEncoder has no option 'negatives'"),
])
def test_bad_input_is_one_line(digits, call, message):
    _check_one_line(lambda: call(FFEncoder(model="64-16", epochs=1), digits[0]), message)


@pytest.mark.parametrize("call, message", [
    (lambda enc, x: enc.transform(x.reshape(len(x), -1)), "X holds flat rows"),
    (lambda enc, x: enc.transform(x.reshape(len(x), 4, 16)), "X holds (4, 16) images but FFEncoder was fitted on (8, 8)"),
    (lambda enc, x: enc.transform(x[:, :7, :7]), "X has 49 features, but FFEncoder is expecting 64"),
    (lambda enc, x: enc.to_onnx("enc.txt", x), "name the file *.onnx"),
])
def test_bad_input_to_a_fitted_encoder_is_one_line(digits, fitted, call, message):
    _check_one_line(lambda: call(fitted, digits[2]), message)


def _check_one_line(call, message):
    with pytest.raises(EdgeFFError) as caught:
        call()
    assert isinstance(caught.value, ValueError) and message in str(caught.value) and "\n" not in str(caught.value)
