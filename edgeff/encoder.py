"""FFEncoder: unsupervised Forward-Forward (Hinton 2022, section 3.1) as a scikit-learn transformer.

    from edgeff import FFEncoder
    enc = FFEncoder(model="64-200-200-200", epochs=20).fit(images)       # no labels
    features = enc.transform(images)        # what `edgeff train --algo ff-unsup`'s probe reads
    enc.save("runs/encoder")                # a run directory; FFEncoder.load reads it back
    enc.to_onnx("encoder.onnx", images)     # x -> features

fit trains the encoder as `edgeff train --algo ff-unsup` does (the same config, checks, memory plan
and trainer: edgeff/training.py, edgeff/unsup_train.py), without the probe phase: the probe's
buffers are not even planned. transform gives the probe's input, the normalised activities of the
last three hidden layers side by side (UnsupNet.feature_rows), for any classifier to read.
"""

import numpy as np

from .arrays import rows_of
from .callbacks import progress_of
from .data import Dataset, validate
from .errors import DataError, ModelError
from .estimator_base import ARRAYS, PARAMS, FFEstimator, init_signature, own_arrays
from .memory import fmt_bytes
from .training import make_trainer, plan_run
from .unsup_model import UnsupNet

ALGO = "ff-unsup"
NO_LABELS = ("", "")     # the encoder reads no label, but a data set has 2 classes or more
# the options of supervised FF, of its linear head or the probe, and of conv nets, which the
# encoder alone does not take (every other option is FFClassifier's, with its default)
NOT_ENCODER_OPTIONS = ("negatives", "label_value", "head_epochs", "head_lr", "classifier", "shift", "width_mult",
                       "hybrid", "init", "freeze", "in_turn", "algo", "probe_labels")
ENCODER_PARAMS = {name: default for name, default in PARAMS.items() if name not in NOT_ENCODER_OPTIONS}


class FFEncoder(FFEstimator):
    """An unsupervised Forward-Forward encoder as a scikit-learn transformer: fit, transform,
    fit_transform, get_feature_names_out, get_params/set_params, save/load (run directories), to_onnx.

    The layers learn to tell real images from hybrid images (two real images mixed through a blurred
    random mask); no label is used. transform(X) returns, per image, the normalised activities of the
    last three hidden layers (all of them when there are fewer), concatenated: float32 (N, features).

    Options: those of `edgeff train --algo ff-unsup` for the encoder, with the same names (underscores
    for dashes) and defaults: model (a dense spec, pixels first, like "784-2000-2000-2000"; default: the
    images' pixels, then TrainConfig's hidden widths), schedule, epochs (None: settled by the number of
    images, as the command line does), batch_size (or "auto": the largest that fits memory_budget),
    optimizer, lr, lr_decay, weight_decay, threshold, goodness, mask_blurs, fields, seed; then memory_budget (bytes,
    or text like "48MiB") and callbacks (edgeff.callbacks.Callback objects told of the progress).

    X: images (N, H, W) or (N, H, W, C) of uint8 pixels (scaled by 1/255) or other numbers (taken as
    they are); flat rows are refused (hybrid images need the image's shape). A bad value is one line in
    an edgeff.errors.EdgeFFError, which is also a ValueError.

    Fitted attributes: net_ (the UnsupNet, no probe), config_ (its TrainConfig), n_features_in_ (pixels
    per image), history_ (mean losses per epoch)."""

    _params = ENCODER_PARAMS

    def __init__(self, **params):
        super().__init__(**params)

    __init__.__signature__ = init_signature(ENCODER_PARAMS)

    def __sklearn_tags__(self):
        """scikit-learn's description of this estimator: a transformer of images (as scikit-learn's own
        PatchExtractor: not of 2-D rows) to float32 features, with no target."""
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags
        return Tags(estimator_type=None, target_tags=TargetTags(required=False),
                    transformer_tags=TransformerTags(preserves_dtype=["float32"]),
                    input_tags=InputTags(two_d_array=False, three_d_array=True))

    def fit(self, X, y=None):
        """Train a new encoder on images X, as `edgeff train --algo ff-unsup` would without the probe;
        y is ignored (scikit-learn passes it in pipelines). Returns self."""
        rows, image_shape = self._images(X)
        labels = np.zeros(len(rows), np.int32)
        ds = validate(Dataset(ARRAYS, rows, labels, rows[:1], labels[:1], len(NO_LABELS),   # x_test: never used
                              1 / 255 if rows.dtype == np.uint8 else 1.0, image_shape, NO_LABELS, ""))
        cfg, auto = self._config(ds, algo=ALGO, head_epochs=0)
        run = plan_run(cfg, ds, self._budget(), auto)
        trainer = make_trainer(run, ds, progress_of(self.callbacks))
        self._log(f"data: {len(rows)} images of {image_shape}")
        self._log(f"memory: arena {fmt_bytes(trainer.plan.arena_bytes)}, batch size {run.cfg.batch_size}")
        self.history_ = trainer.fit()
        self.net_ = own_arrays(trainer.net)
        self.net_.describe_input(ds)
        self.config_, self.n_features_in_ = run.cfg, rows.shape[1]
        return self

    def transform(self, X):
        """(N, features) float32: the features of every image of X, the input `edgeff train --algo ff-unsup`'s
        probe reads (the normalised activities of the last three hidden layers, concatenated)."""
        rows, scale = self._input(X)
        return self.net_.feature_rows(rows, scale)

    def fit_transform(self, X, y=None):
        """fit(X), then transform(X)."""
        return self.fit(X, y).transform(X)

    def get_feature_names_out(self, input_features=None):
        """The names of transform's columns, as scikit-learn names a transformer's: ffencoder0, ffencoder1, ...
        (input_features, the pixels' names, are only checked: every column mixes every pixel)."""
        net = self._fitted()
        if input_features is not None and len(input_features) != self.n_features_in_:
            raise DataError(f"input_features should have length equal to n_features_in_ ({self.n_features_in_}), "
                            f"got {len(input_features)}; give one name per pixel, or None")
        return np.array([f"ffencoder{i}" for i in range(net.feature_width)], dtype=object)

    def _images(self, X):
        """(rows of X, its image shape), or one DataError line when X holds flat rows."""
        rows, image_shape = rows_of(X)
        if image_shape is None:
            raise _flat_rows(rows)
        return rows, image_shape

    def _check_features(self, rows, image_shape=None):
        super()._check_features(rows, image_shape)
        fitted = tuple(self.net_.input_info["image_shape"])
        if image_shape is None:
            raise _flat_rows(rows)
        if image_shape != fitted:
            raise DataError(f"X holds {image_shape} images but FFEncoder was fitted on {fitted} images")

    def save(self, run_dir, X=None, overwrite=False):
        """Write the fitted encoder as a run directory (model.npz, config.json, metrics.json), as `edgeff
        train --out` writes its runs; with images X, also write them to run_dir/data.npz and name that
        file as the run's data set, so `edgeff export RUN_DIR` (features out) works on the run. Returns run_dir."""
        return self._write_run(run_dir, overwrite, {"algo": ALGO},
                               None if X is None else lambda: (self._save_images(run_dir, X), {}))

    def _save_images(self, run_dir, X):
        rows, _ = self._input(X)
        return self._write_data(run_dir, rows, np.zeros(len(rows), np.int32), NO_LABELS)

    @classmethod
    def load(cls, run_dir):
        """The FFEncoder of a run directory written by save, ready to transform; its options are the run's."""
        enc, net = cls._from_run(run_dir)
        if not isinstance(net, UnsupNet) or net.head_w is not None or not (net.input_info or {}).get("image_shape"):
            raise ModelError(f"{run_dir}: holds no encoder of images without a probe (FFEncoder.save writes "
                             "one); a classifier's run loads with FFClassifier.load")
        return enc

    def to_onnx(self, path, X, opset=None):
        """Export the encoder to an ONNX file (input x: float32 [N, pixels], the images as rows times their
        scale; output features: float32 [N, features]), checked with onnx's checker and compared with
        transform under onnxruntime on images X. Returns the export report (parity)."""
        self._fitted()
        return self._to_onnx(path, X, "linear", opset, NO_LABELS)


def _flat_rows(rows):
    return DataError(f"X holds flat rows {rows.shape}; FFEncoder mixes images into hybrid negatives: give images "
                     "(N, H, W) or (N, H, W, C), e.g. X.reshape(len(X), H, W)")
