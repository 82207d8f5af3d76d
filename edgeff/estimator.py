"""edgeff as a library: FFClassifier, a Forward-Forward classifier with scikit-learn's interface.

    from edgeff import FFClassifier
    clf = FFClassifier(model="64-200", epochs=20).fit(X_train, y_train)
    clf.score(X_test, y_test)
    clf.save("runs/digits", X_test, y_test)      # a run directory: edgeff eval/export/deploy take it
    clf.to_onnx("digits.onnx", X_test)

It trains as `edgeff train` does (the same config, checks, memory plan and trainer: edgeff/training.py),
so the same options, seed and data give the same net, bit for bit. scikit-learn is not needed to use it,
only to put it in scikit-learn's pipelines and searches.
"""

import copy
import dataclasses

import numpy as np

from .arrays import classes_of, codes_of, rows_of
from .callbacks import progress_of
from .config import MAX_SEED, is_conv_model
from .convnet import ConvNet
from .data import Dataset, validate
from .errors import ModelError, UsageError
from .estimator_base import ARRAYS, PARAMS, FFEstimator, init_signature, own_arrays
from .memory import fmt_bytes
from .model import FFNet
from .runs import load_metrics
from .stream import Stream, plan_session
from .training import load_init, make_trainer, plan_run


class FFClassifier(FFEstimator):
    """A Forward-Forward net as a scikit-learn classifier: fit, predict, predict_proba, score,
    partial_fit, get_params/set_params, save/load (run directories), to_onnx.

    Options: the options of `edgeff train`, with the same names (underscores for dashes) and defaults;
    see `edgeff train --help`. model: a dense spec (input width first, like "64-500-500"; default: the
    data's width, then TrainConfig's hidden widths) or a conv net ("conv-small", "cnn:32p/64p-128")
    for images. epochs, batch_size, head_epochs, classifier, width_mult, hybrid left None are settled
    as the command line settles them (epochs by the number of training rows, the rest by the net's
    kind or init's run). batch_size may be "auto": the largest that fits memory_budget.
    memory_budget: bytes, or text like "48MiB": training must fit it (checked before it starts).
    callbacks: edgeff.callbacks.Callback objects told of the progress (ProgressBar draws a bar).

    X: uint8 pixels (scaled by 1/255) or other numbers (taken as they are) as rows (N, features) or
    images (N, H, W) or (N, H, W, C). y: class labels of any kind numpy sorts (classes_).
    A bad value is one line in an edgeff.errors.EdgeFFError, which is also a ValueError.

    Fitted attributes: net_ (the FFNet or ConvNet), config_ (its TrainConfig), classes_,
    n_features_in_, history_ (mean losses per epoch)."""

    _params, _fit_call = PARAMS, "fit(X, y)"

    def __init__(self, **params):
        super().__init__(**params)

    __init__.__signature__ = init_signature(PARAMS)

    def __sklearn_tags__(self):
        """scikit-learn's description of this estimator (called by scikit-learn only, so it is there)."""
        from sklearn.utils import ClassifierTags, Tags, TargetTags
        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags())

    # ---- training ----

    def fit(self, X, y):
        """Train a new net on rows or images X with labels y, as `edgeff train` would; returns self."""
        rows, image_shape = rows_of(X)
        classes, codes = classes_of(y, len(rows))
        return self._fit(rows, image_shape, codes, classes, partial=False)

    def partial_fit(self, X, y, classes=None):
        """Train on one more chunk of a stream. A dense net learns it as `edgeff learn` does (edgeff/stream.py):
        X's rows in order, batch_size at a time, each batch one step of every FF layer and of the linear head;
        the stream is planned once, at the first call after fit (or the first of all), and its optimiser state
        carries over from call to call. A conv net: one epoch over X, y for every phase (its blocks, then
        their heads), starting from the net so far, with fresh optimiser state. The first call makes the net
        and needs `classes`, every label the stream will hold. Returns self."""
        rows, image_shape = rows_of(X)
        if self.__sklearn_is_fitted__():
            self._check_features(rows, image_shape)
            if classes is not None and not np.array_equal(classes_of(classes, None)[0], self.classes_):
                raise UsageError(f"classes {np.unique(classes).tolist()} differ from the first partial_fit's "
                                 f"{self.classes_.tolist()}; give the same, or leave classes out")
            classes = self.classes_
        elif classes is None:
            raise UsageError("the first partial_fit needs classes=: every label the data will hold")
        else:
            classes = classes_of(classes, None)[0]
        return self._fit(rows, image_shape, codes_of(y, len(rows), classes), classes, partial=True)

    def _fit(self, rows, image_shape, codes, classes, partial):
        """Train on the rows (a new net, or with partial one epoch more of the net so far); returns self."""
        ds = validate(Dataset(ARRAYS, rows, codes, rows[:1], codes[:1], len(classes),   # x_test: never used
                              1 / 255 if rows.dtype == np.uint8 else 1.0, image_shape,
                              tuple(str(c) for c in classes), ""))
        if partial and self._streams():
            return self._learn_chunk(ds, classes)
        self._stream = None
        start = self.net_ if partial and self.__sklearn_is_fitted__() else None
        if start is None:
            run, init_net = self._plan(ds, partial)
            cfg, trainer = run.cfg, make_trainer(run, ds, progress_of(self.callbacks), init_net)
        else:
            cfg = dataclasses.replace(self.config_, seed=(self.config_.seed + self.partial_fits_) % (MAX_SEED + 1))
            run = plan_run(cfg, ds, self._budget())
            cfg, trainer = run.cfg, _continued_trainer(run, ds, progress_of(self.callbacks), start)
        self._log(f"data: {len(codes)} rows, {rows.shape[1]} features, {len(classes)} classes")
        self._log(f"memory: arena {fmt_bytes(trainer.plan.arena_bytes)}, batch size {cfg.batch_size}")
        history = trainer.fit()
        self.net_ = own_arrays(trainer.net)
        self.net_.describe_input(ds)
        self.classes_, self.n_features_in_ = classes, rows.shape[1]
        if start is None:
            self.config_, self.history_, self.partial_fits_ = cfg, history, int(partial)
        else:
            self.history_, self.partial_fits_ = self.history_ + history, self.partial_fits_ + 1
        return self

    def _streams(self):
        """Does partial_fit learn through the stream (a dense net, or none yet with a dense model)?"""
        if self.__sklearn_is_fitted__():
            return not isinstance(self.net_, ConvNet)
        return not (self.init or (self.model and is_conv_model(self.model)))     # --init starts conv nets only

    def _learn_chunk(self, ds, classes):
        """partial_fit of a dense net: ds's rows through the stream, planned at the first call after fit."""
        if getattr(self, "_stream", None) is None:
            if self.__sklearn_is_fitted__():
                start, cfg = self.net_, self.config_
            else:
                run, _ = self._plan(ds, partial=True)      # every check edgeff train makes
                cfg, start = run.cfg, FFNet.create(run.cfg.sizes, ds.num_classes, run.cfg.label_value,
                                                   run.cfg.goodness == "mean", np.random.default_rng(run.cfg.seed),
                                                   image=ds.image_shape is not None)
                if cfg.head_epochs:
                    start.head_w = np.zeros((sum(start.widths), ds.num_classes), np.float32)
                    start.head_b = np.zeros(ds.num_classes, np.float32)
                start.describe_input(ds)
                self.config_, self.history_, self.partial_fits_ = cfg, [], 0
            lcfg, plan = plan_session("FFClassifier", start, cfg, cfg.batch_size, 0, self._budget(), 0, ds)
            self._stream = Stream(lcfg, plan, start, cfg.batch_size)
            self._log(f"memory: arena {fmt_bytes(plan.arena_bytes)}, batch size {cfg.batch_size} (planned once "
                      "for the stream of partial_fit calls)")
        rows = ds.x_train.astype(np.float32)
        rows *= np.float32(ds.scale)
        trainer = self._stream.trainer
        self._stream.learn(rows, ds.y_train.astype(np.int64))
        self.history_ = self.history_ + [(trainer.loss_sum / trainer.loss_updates).tolist()]
        trainer.loss_sum[...], trainer.loss_updates = 0.0, 0
        self.net_ = own_arrays(copy.copy(trainer.net))
        self.classes_, self.n_features_in_ = classes, rows.shape[1]
        self.partial_fits_ += 1
        return self

    def __getstate__(self):
        """What pickle keeps: not the stream of partial_fit, whose arrays are views of its arena (the next
        partial_fit plans a new one, starting from net_)."""
        return {k: v for k, v in self.__dict__.items() if k != "_stream"}

    def _plan(self, ds, partial):
        """(training.RunPlan, init's net) of a new net's fit on ds, every check made as
        `edgeff train` makes them; a partial fit is one epoch per phase."""
        if self.algo != "ff":
            raise UsageError(f"FFClassifier trains supervised FF (algo='ff'); algo={self.algo!r} has no "
                             f"classifier estimator: use edgeff train --algo {self.algo}, or FFEncoder")
        init_net = init_cfg = None
        if self.init:
            init_net, init_cfg = load_init(self.init)
        cfg, auto = self._config(ds, init_cfg)
        if partial:
            cfg = dataclasses.replace(cfg, epochs=1, head_epochs=min(1, cfg.head_epochs))
        return plan_run(cfg, ds, self._budget(), auto, init_net), init_net

    # ---- using the net ----

    def _scores(self, X):
        """(N, classes) scores of the configured classifier, whose argmax is the prediction."""
        rows, scale = self._input(X)
        net, classifier = self.net_, self.config_.classifier
        if isinstance(net, ConvNet):
            return net.votes(net.block_scores(rows, scale), classifier)
        return net.scores(rows, scale, classifier)

    def predict(self, X):
        """The predicted class of every row or image of X (one of classes_)."""
        best = self._scores(X).argmax(axis=1)
        return self.classes_[best]

    def predict_proba(self, X):
        """(N, classes) probabilities: the softmax of the classifier's scores (the linear head's logits,
        or the class goodness), columns in the order of classes_."""
        scores = self._scores(X).astype(np.float64)
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def score(self, X, y, sample_weight=None):
        """Mean accuracy of predict(X) against y (weighted by sample_weight when given)."""
        right = self.predict(X) == np.asarray(y)
        return float(np.average(right, weights=sample_weight))

    # ---- files ----

    def save(self, run_dir, X=None, y=None, overwrite=False):
        """Write the fitted net as a run directory (model.npz, config.json, metrics.json), as `edgeff train
        --out` does; with X, y (labelled rows, e.g. a held-out test set) also write them to run_dir/data.npz,
        name that file as the run's data set and record the test error on them, so `edgeff eval RUN_DIR`
        and `edgeff export RUN_DIR` work on the run. Returns run_dir."""
        self._fitted()
        metrics = {"classes": self.classes_.tolist(), "classifier": self.config_.classifier}
        return self._write_run(run_dir, overwrite, metrics, None if X is None else lambda: self._save_data(run_dir, X, y))

    def _save_data(self, run_dir, X, y):
        """Write X, y to run_dir/data.npz; returns (config naming it, its test errors as metrics)."""
        rows, scale = self._input(X)
        codes = codes_of(y, len(rows), self.classes_)
        cfg = self._write_data(run_dir, rows, codes, [str(c) for c in self.classes_])
        errors = self.net_.errors(rows, codes, scale)
        return cfg, dict(test_error=errors[cfg.classifier], **{f"test_error_{c}": e for c, e in errors.items()})

    @classmethod
    def load(cls, run_dir):
        """The FFClassifier of a run directory (written by save or by `edgeff train`), ready to predict;
        its options are the run's config. A run trained by the command line has classes 0..C-1."""
        clf, net = cls._from_run(run_dir)
        if clf.config_.algo != "ff":
            raise ModelError(f"{run_dir}: holds an {clf.config_.algo} run; FFClassifier loads supervised FF runs "
                             "(an encoder alone: FFEncoder.load)")
        classes = load_metrics(run_dir).get("classes", list(range(net.num_classes)))
        if not (isinstance(classes, list) and len(classes) == net.num_classes and
                all(isinstance(c, (str, int, float)) and not isinstance(c, bool) for c in classes)):
            raise ModelError(f"{run_dir}: its metrics' classes are not a list of {net.num_classes} labels; "
                             "it is damaged or not written by edgeff")
        clf.classes_, clf.partial_fits_ = np.asarray(classes), 0
        return clf

    def to_onnx(self, path, X, head=None, opset=None):
        """Export the net to an ONNX file, checked with onnx's checker and compared with the NumPy forward
        under onnxruntime on rows X (as `edgeff export` does with its data set); head: as `edgeff export
        --head` (default: the classifier the net was fitted with). Returns the export report (parity)."""
        self._fitted()
        return self._to_onnx(path, X, head or self.config_.classifier, opset, [str(c) for c in self.classes_])


def _continued_trainer(run, ds, progress, start):
    """The trainer of a conv RunPlan on ds whose net starts from the ConvNet `start` (every weight, heads too)."""
    trainer = make_trainer(run, ds, progress)
    for mine, theirs in zip(trainer.net.params, start.params):
        for p_mine, p_theirs in zip(mine, theirs):
            for name, a in p_mine.items():
                a[...] = p_theirs[name]
    return trainer
