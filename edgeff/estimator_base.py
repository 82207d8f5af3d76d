"""What edgeff's estimators (FFClassifier: edgeff/estimator.py, FFEncoder: edgeff/encoder.py) share:
their options (one table: `edgeff train`'s, with its defaults), get_params/set_params, the config
of a fit, checks of the arrays they are given, and the plumbing of run directories and ONNX files."""

import dataclasses
import functools
import inspect
import os
import sys
from types import SimpleNamespace

import numpy as np

from .arrays import rows_of
from .config import SETTLED_LATER, TrainConfig, config_from_options, default_batch_size
from .convnet import ConvNet
from .data import Dataset
from .errors import DataError, ModelError, UsageError
from .fileio import atomic_write, check_output_file, make_output_dir, npz_writer, remove_made_dirs, write_error
from .memory import parse_bytes
from .runs import MODEL, load_run, save_run

DATA_FILE = "data.npz"   # the rows save() was given: what edgeff eval and export measure on
ARRAYS = "X"             # the data set's name in messages, and in the config of a run trained on arrays
# the options: TrainConfig's fields as `edgeff train` takes them (the data comes to fit), the ones
# the data and the net settle left None, as the command line leaves them; then the API's own
OPTIONS = {f.name: None if f.name in SETTLED_LATER else f.default for f in dataclasses.fields(TrainConfig)
           if f.name != "dataset"}
PARAMS = {**OPTIONS, "memory_budget": None, "callbacks": None}


def init_signature(params):
    """The signature of an estimator's __init__ taking `params` (keyword-only, with their defaults):
    what scikit-learn reads to know an estimator's options."""
    return inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)] +
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=d) for name, d in params.items()])


class FFEstimator:
    """The base of edgeff's estimators. A subclass sets `_params` ({option: default}, a part of PARAMS)
    and `_fit_call` (how its fit is called, for the not-fitted message), and gives its __init__
    init_signature(params)."""

    _params = PARAMS
    _fit_call = "fit(X)"

    def __init__(self, **params):
        name = type(self).__name__
        unknown = sorted(set(params) - set(self._params))
        if unknown:
            raise UsageError(f"{name} has no option {unknown[0]!r}; its options: {', '.join(self._params)}")
        for option, default in self._params.items():
            setattr(self, option, params.get(option, default))

    def get_params(self, deep=True):
        """{option: value} of every option (deep: no option is an estimator, so the same)."""
        return {name: getattr(self, name) for name in self._params}

    def set_params(self, **params):
        """Set options by name; returns self. Checked when fit runs, as scikit-learn asks."""
        for name, value in params.items():
            if name not in self._params:
                raise UsageError(f"{type(self).__name__} has no option {name!r}; its options: "
                                 f"{', '.join(self._params)}")
            setattr(self, name, value)
        return self

    def __repr__(self):
        changed = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()
                            if v is not self._params[k] and v != self._params[k])
        return f"{type(self).__name__}({changed})"

    def __sklearn_is_fitted__(self):
        """True once fit (or partial_fit) or load has given it a net."""
        return hasattr(self, "net_")

    # ---- a fit ----

    def _config(self, ds, init_cfg=None, **fixed):
        """(TrainConfig of a fit on ds, batch size 'auto'?): the options as `edgeff train` settles them
        (options this estimator does not take keep their defaults; `fixed` ones are set)."""
        model = self.model or getattr(init_cfg, "model", None) or \
            "-".join([str(ds.x_train.shape[1]), *TrainConfig.model.split("-")[1:]])
        auto = self.batch_size == "auto"
        batch_size = 1 if auto else default_batch_size(model) if self.batch_size is None else self.batch_size
        options = SimpleNamespace(**{**OPTIONS, **self.get_params(), **fixed, "model": model, "dataset": ds.name})
        return config_from_options(options, batch_size, init_cfg, n_train=len(ds.y_train)), auto

    def _budget(self):
        return None if self.memory_budget is None else parse_bytes(self.memory_budget)

    def _log(self, message):
        for cb in self.callbacks or ():
            cb.log(message)

    # ---- the arrays given ----

    def _fitted(self):
        if not self.__sklearn_is_fitted__():
            raise not_fitted(f"this {type(self).__name__} is not fitted yet; call {self._fit_call} or "
                             "load(run_dir) first")
        return self.net_

    def _check_features(self, rows, image_shape=None):
        net = self._fitted()
        if rows.shape[1] != net.in_features:
            raise DataError(f"X has {rows.shape[1]} features, but {type(self).__name__} is expecting "
                            f"{net.in_features} features as input; give rows like the ones it was fitted on")
        fitted = (net.input_info or {}).get("image_shape")
        if isinstance(net, ConvNet) and image_shape is not None and fitted and list(image_shape) != list(fitted):
            raise DataError(f"X holds {image_shape} images but the net was fitted on {tuple(fitted)} images")

    def _input(self, X):
        """(stored rows of X, their scale): uint8 pixels at the fitted data's scale, other numbers as they are."""
        self._fitted()
        rows, image_shape = rows_of(X)
        self._check_features(rows, image_shape)
        scale = (self.net_.input_info or {}).get("scale", 1 / 255) if rows.dtype == np.uint8 else 1.0
        return rows, scale

    # ---- files ----

    def _write_run(self, run_dir, overwrite, metrics, with_data=None):
        """Write the fitted net as a run directory; with_data(): (config, more metrics), called first,
        may write the run's data file. Nothing is left of a run directory this made when it fails."""
        net = self._fitted()
        if os.path.exists(os.path.join(run_dir, MODEL)) and not overwrite:
            raise UsageError(f"{run_dir} already holds a model; choose another directory or pass overwrite=True")
        made = make_output_dir(run_dir, "save")
        try:
            cfg, more = with_data() if with_data else (self.config_, {})
            save_run(run_dir, cfg, net, dict(metrics, **more, model=cfg.model, out=os.fspath(run_dir),
                                              dataset=cfg.dataset, epoch_losses=self.history_))
        except BaseException:
            remove_made_dirs(made)
            raise
        return run_dir

    def _write_data(self, run_dir, rows, codes, label_names):
        """Write rows (as the fitted images) with labels codes named label_names to run_dir/data.npz, both
        splits: the file edgeff eval and export load; returns the config naming it as the run's data set."""
        shape = (self.net_.input_info or {}).get("image_shape")
        path = os.path.abspath(os.path.join(run_dir, DATA_FILE))
        images = rows.reshape(len(rows), *shape) if shape else rows
        arrays = dict(x_train=images, y_train=codes, x_test=images, y_test=codes, label_names=np.array(label_names))
        try:
            atomic_write(path, npz_writer(arrays))
        except OSError as exc:
            raise write_error(path, exc) from None
        return dataclasses.replace(self.config_, dataset=path)

    @classmethod
    def _from_run(cls, run_dir):
        """(an estimator of this class with the run's net and config, its options the config's, the net)."""
        net, cfg = load_run(run_dir)
        est = cls(**{name: getattr(cfg, name) for name in cls._params if name in OPTIONS})
        est.net_, est.config_, est.n_features_in_, est.history_ = net, cfg, net.in_features, []
        return est, net

    def _to_onnx(self, path, X, head, opset, label_names):
        """Export the fitted net to path, compared with the NumPy forward under onnxruntime on X's rows."""
        from . import export
        net = self._fitted()
        if not os.fspath(path).lower().endswith(".onnx"):
            raise UsageError(f"to_onnx {path}: name the file *.onnx")
        check_output_file(path, "to_onnx")
        rows, scale = self._input(X)
        labels, shape = np.zeros(len(rows), np.int32), (net.input_info or {}).get("image_shape")
        ds = Dataset(ARRAYS, rows, labels, rows, labels, len(label_names), scale,
                     tuple(shape) if shape else None, tuple(label_names), "")
        data, _, report = export.export(net, self.config_, {}, ds, head, opset or export.DEFAULT_OPSET,
                                        parity_samples=len(rows))
        try:
            atomic_write(path, lambda f: f.write(data))
        except OSError as exc:
            raise write_error(path, exc) from None
        return report


def own_arrays(net):
    """net with its arrays copied out of the trainer's arena (which is then freed with the trainer)."""
    if isinstance(net, ConvNet):
        net.params = [[{n: a.copy() for n, a in p.items()} for p in block] for block in net.params]
    else:
        net.weights, net.biases = [w.copy() for w in net.weights], [b.copy() for b in net.biases]
        if net.head_w is not None:
            net.head_w, net.head_b = net.head_w.copy(), net.head_b.copy()
    return net


@functools.cache
def _not_fitted_class(sklearn_exceptions):
    """ModelError, and also scikit-learn's NotFittedError when scikit-learn is in use (its tools expect one)."""
    if sklearn_exceptions is None:
        return ModelError
    return type("NotFittedError", (ModelError, sklearn_exceptions.NotFittedError), {"__module__": __name__})


def not_fitted(message):
    return _not_fitted_class(sys.modules.get("sklearn.exceptions"))(message)
