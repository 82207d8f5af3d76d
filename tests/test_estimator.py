"""FFClassifier, the Python API: scikit-learn's own estimator checks, its tools (Pipeline, cross_val_score,
GridSearchCV), the same net as `edgeff train` for the same options and seed, run directories the CLI
reads, ONNX under onnxruntime, partial_fit, callbacks and one-line errors."""

import dataclasses
import io
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from edgeff import FFClassifier
from edgeff.callbacks import Callback, ProgressBar
from edgeff.cli import build_parser
from edgeff.config import TrainConfig
from edgeff.errors import EdgeFFError
from edgeff.runs import load_run
from run_cli import edgeff, ok

# scikit-learn's checks that cannot apply, and why
NOT_APPLICABLE = {
    "check_dtype_object": "edgeff takes numeric arrays: an object array is refused with one DataError line "
                          "(a ValueError), not converted number by number",
    "check_supervised_y_2d": "a column-vector y is refused with one line (use y.ravel()) rather than accepted "
                             "with scikit-learn's DataConversionWarning: scikit-learn is not a runtime dependency",
}


with warnings.catch_warnings():    # that it does not inherit from scikit-learn's BaseEstimator: on purpose
    warnings.filterwarnings("ignore", "Estimator FFClassifier does not inherit", UserWarning)
    CHECKS = parametrize_with_checks([FFClassifier(epochs=1, head_epochs=1, batch_size=16)],
                                     expected_failed_checks=lambda estimator: NOT_APPLICABLE)


@CHECKS
def test_scikit_learn_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    """load_digits as float32 rows of 64 features in [0, 1], split 1200 / 597."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    return x[:1200], y[:1200], x[1200:], y[1200:]


def images(x):
    return x.reshape(len(x), 8, 8)


SMALL = dict(model="64-64", epochs=60, batch_size=32)


def test_pipeline(digits):
    x, y, xt, yt = digits
    pipe = make_pipeline(MinMaxScaler(), FFClassifier(**SMALL)).fit(x * 16, y)
    assert pipe.score(xt * 16, yt) > 0.8


def test_cross_val_score(digits):
    x, y, _, _ = digits
    scores = cross_val_score(FFClassifier(**SMALL), x, y, cv=3)
    assert len(scores) == 3 and scores.min() > 0.8


def test_grid_search(digits):
    x, y, xt, yt = digits
    search = GridSearchCV(FFClassifier(**SMALL), {"lr": [0.003, 0.01], "negatives": ["hard", "random"]}, cv=2)
    search.fit(x, y)
    assert search.best_params_["lr"] in (0.003, 0.01) and search.best_score_ > 0.7
    assert search.score(xt, yt) > 0.7       # refit on all of x with the best options


def test_options_are_the_cli_options():
    """get_params: TrainConfig's fields but the data set, with `edgeff train`'s defaults, and the API's own."""
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    cli = {a.dest: a.default for a in train._actions}
    params = FFClassifier().get_params()
    fields = set(TrainConfig.__dataclass_fields__) - {"dataset"}
    assert set(params) == fields | {"memory_budget", "callbacks"}
    for name in fields | {"memory_budget"}:
        assert params[name] == cli[name] or (name == "init" and not params[name] and not cli[name]), name


@pytest.fixture(scope="module")
def digits_npz(digits, tmp_path_factory):
    """The digits as the CLI takes them: flat rows, and 8x8 images."""
    x, y, xt, yt = digits
    where = tmp_path_factory.mktemp("data")
    np.savez(where / "rows.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    np.savez(where / "images.npz", x_train=images(x), y_train=y, x_test=images(xt), y_test=yt)
    return where / "rows.npz"


@pytest.mark.parametrize("options", [dict(model="64-48-48", epochs=3, seed=7),
                                     dict(model="64-32", epochs=2, schedule="layerwise", negatives="random", seed=3),
                                     dict(model="cnn:4p-8", epochs=2, batch_size=32, seed=5)])
def test_same_net_and_test_error_as_the_cli(digits, digits_npz, tmp_path, options):
    x, y, xt, yt = digits
    if options["model"].startswith("cnn"):
        x, xt, digits_npz = images(x), images(xt), digits_npz.with_name("images.npz")
    flags = [a for k, v in options.items() for a in (f"--{k.replace('_', '-')}", v)]
    cli = ok(edgeff("train", "--dataset", digits_npz, "--out", tmp_path / "run", "--json", *flags))
    clf = FFClassifier(**options).fit(x, y)
    assert float((clf.predict(xt) != yt).mean()) == cli["test_error"]
    assert clf.history_ == cli["epoch_losses"]
    cli_net, cli_cfg = load_run(tmp_path / "run")
    assert clf.config_ == dataclasses.replace(cli_cfg, dataset=clf.config_.dataset)
    mine, theirs = (_weights(net) for net in (clf.net_, cli_net))
    assert mine.keys() == theirs.keys() and all(mine[k].tobytes() == theirs[k].tobytes() for k in mine)


def _weights(net):
    """{name: array} of every weight of net, as its model file holds them."""
    buf = io.BytesIO()
    net.npz_writer("{}")(buf)
    with np.load(io.BytesIO(buf.getvalue())) as z:
        return {k: z[k] for k in z.files if k != "meta"}


def test_save_load_and_the_cli_on_the_run(digits, tmp_path):
    x, y, xt, yt = digits
    labels = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    clf = FFClassifier(**SMALL).fit(x, labels[y])
    run = tmp_path / "run"
    clf.save(run, xt, labels[yt])
    back = FFClassifier.load(run)
    assert back.get_params() == {**clf.get_params(), "head_epochs": 3, "head_lr": 0.01,
                                 "classifier": "linear", "width_mult": 1.0, "hybrid": "none"}
    assert np.array_equal(back.predict(xt), clf.predict(xt)) and back.predict(xt)[0] in labels
    measured = ok(edgeff("eval", run, "--json"))
    assert measured["test_error"] == float((clf.predict(xt) != labels[yt]).mean())
    exported = ok(edgeff("export", run, "-o", tmp_path / "m.onnx", "--json"))
    assert exported["parity"]["ok"]
    with pytest.raises(EdgeFFError, match="already holds a model"):
        clf.save(run)


def test_load_a_cli_run(digits, digits_npz, tmp_path):
    _, _, xt, yt = digits
    cli = ok(edgeff("train", "--dataset", digits_npz, "--out", tmp_path / "run", "--json", "--model", "64-32",
                    "--epochs", "2"))
    clf = FFClassifier.load(tmp_path / "run")
    assert list(clf.classes_) == list(range(10))
    assert float((clf.predict(xt) != yt).mean()) == cli["test_error"]


@pytest.mark.parametrize("options", [SMALL, dict(model="cnn:4p-8", epochs=2)])
def test_to_onnx_runs_in_onnxruntime(digits, tmp_path, options):
    import onnxruntime
    x, y, xt, _ = digits
    if options["model"].startswith("cnn"):
        x, xt = images(x), images(xt)
    clf = FFClassifier(**options).fit(x, y)
    report = clf.to_onnx(tmp_path / "m.onnx", xt)
    assert report["parity"]["ok"]
    sess = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    label = sess.run(["label"], {"x": xt.reshape(len(xt), -1)})[0]
    assert (clf.classes_[label] == clf.predict(xt)).mean() > 0.99     # float32 near-ties may differ


def test_partial_fit_learns_a_stream(digits):
    x, y, xt, yt = digits
    clf = FFClassifier(model="64-64", batch_size=32)
    with pytest.raises(EdgeFFError, match="needs classes="):
        clf.partial_fit(x[:100], y[:100])
    for epoch in range(20):
        for i in range(0, len(x), 400):
            clf.partial_fit(x[i:i + 400], y[i:i + 400], classes=np.arange(10))
    assert clf.partial_fits_ == 60 and clf.score(xt, yt) > 0.8
    with pytest.raises(EdgeFFError, match="not one of the classes"):
        clf.partial_fit(x[:10], np.full(10, 11))
    with pytest.raises(ValueError, match="X has 10 features, but FFClassifier is expecting 64"):
        clf.partial_fit(np.zeros((3, 10)), y[:3])


def test_callbacks_see_every_epoch_and_batch(digits):
    x, y, _, _ = digits

    class Record(Callback):
        def __init__(self):
            self.events, self.lines = [], []

        def log(self, message):
            self.lines.append(message)

        def epoch_begins(self, desc, total):
            self.events.append([desc, total, 0])

        def batch_done(self, n, loss):
            self.events[-1][2] += n

        def epoch_done(self, desc):
            assert desc == self.events[-1][0]

    record, stream = Record(), io.StringIO()
    clf = FFClassifier(model="64-32", epochs=2, head_epochs=1, callbacks=[record, ProgressBar(stream)])
    clone(clf).fit(x, y)                     # a clone (as in a search) reports to the same callbacks
    assert [e[0] for e in record.events] == ["epoch 1/2", "epoch 2/2", "head epoch 1/1"]
    assert all(total == seen == len(x) for _, total, seen in record.events)
    assert record.lines[0] == "data: 1200 rows, 64 features, 10 classes"
    assert stream.getvalue().count("\n") == 3 and "head epoch 1/1" in stream.getvalue()


@pytest.mark.parametrize("fit, message", [
    (lambda c, x, y: c.fit(x[:, 0], y), "Reshape your data"),
    (lambda c, x, y: c.fit(np.where(np.arange(len(x))[:, None] == 3, np.nan, x), y), "X holds NaN or Inf (first in row 3)"),
    (lambda c, x, y: c.fit(x, y[:-1]), "X has 1200 rows but y has 1199 labels"),
    (lambda c, x, y: c.fit(x, y + 0.5), "Unknown label type"),
    (lambda c, x, y: c.fit(x, np.zeros_like(y)), "one class"),
    (lambda c, x, y: c.predict(x), "not fitted yet"),
    (lambda c, x, y: c.set_params(epochs=0).fit(x, y), "--epochs must be a whole number at least 1, got 0"),
    (lambda c, x, y: c.set_params(model="10-5").fit(x, y), "start the spec with 64"),
    (lambda c, x, y: c.set_params(model="conv-small").fit(x, y), "use a dense --model"),
    (lambda c, x, y: c.set_params(memory_budget="1KiB").fit(x, y), "--memory-budget is 1.0 KiB"),
    (lambda c, x, y: c.set_params(nonsense=1), "no option 'nonsense'"),
])
def test_bad_input_is_one_line(digits, fit, message):
    x, y, _, _ = digits
    with pytest.raises(EdgeFFError) as caught:
        fit(FFClassifier(model="64-16", epochs=1), x, y)
    assert isinstance(caught.value, ValueError) and message in str(caught.value) and "\n" not in str(caught.value)
