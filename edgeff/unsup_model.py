"""The net unsupervised FF trains (--algo ff-unsup): a dense encoder that sees no label, and
the softmax probe on the normalised activities of its last three hidden layers.

    x_norm = x / (|x| + eps)                        the input row, length-normalised
    h_k    = relu(h_{k-1} @ w_k + b_k), normalised   each layer, as in supervised FF
    logits = [h_k for the probed layers] @ head_w + head_b

Its model.npz holds w0.., b0.., head_w, head_b and meta "net": "ff-unsup", also for a net
trained by --algo uff (edgeff/uff_train.py), whose encoder is this one. The forward
runs the kernels of the supervised net (FFNet.forward); it is labelled only by the probe.
The encoder alone (FFEncoder, trained with head_epochs 0) has no probe: no head_w, head_b;
its output is the probe's input, feature_rows.
"""

import json

import numpy as np

from .config import UNSUPERVISED
from .errors import ModelError
from .fields import array, field
from .fileio import npz_writer
from .kernels import batch, norm
from .model import EPS, FORMAT_VERSION, FFNet, check_input_info, read_dense_layers
from .unsup_layout import probe_layers

NET = "ff-unsup"


class UnsupNet:
    def __init__(self, weights, biases, head_w, head_b, input_info=None, mean_goodness=False):
        self.weights, self.biases = weights, biases    # per layer (D_in, D_out), (D_out,) float32
        self.head_w, self.head_b = head_w, head_b      # the probe: (sum of probed widths, C), (C,); or None
        self.mean_goodness = mean_goodness              # what the layers were trained on (FFNet.forward reads it)
        self.input_info = input_info                    # as FFNet's: what a row is

    @classmethod
    def create(cls, sizes, rng, alloc, mean_goodness):
        """Weights as FFNet.create draws them (uniform in +-1/sqrt(fan_in)) into alloc(k)'s arrays
        (the trainer's arena views); the probe in alloc('head')'s. No label inputs: FFNet's layout of
        images with no class to overlay."""
        ff = FFNet.create(sizes, 0, 1.0, mean_goodness, rng, image=True, alloc=alloc)
        head_w, head_b = alloc("head")
        return cls(ff.weights, ff.biases, head_w, head_b, mean_goodness=mean_goodness)

    @property
    def in_features(self):
        return self.weights[0].shape[0]

    @property
    def num_classes(self):
        return 0 if self.head_w is None else self.head_w.shape[1]

    @property
    def widths(self):
        return [w.shape[1] for w in self.weights]

    @property
    def probed(self):
        return probe_layers(len(self.weights))

    @property
    def feature_width(self):
        """Width of the probe's input: the probed layers' widths summed."""
        return sum(self.widths[k] for k in self.probed)

    def forward(self, x_norm, zs, hs, good):
        return FFNet.forward(self, x_norm, zs, hs, good)

    def features(self, x, scale, idx, xin, zs, hs, good, feats):
        """feats[:r] <- the probed layers' normalised activities for rows x[idx] (r of them)."""
        r = len(idx)
        batch.gather_scaled(x, idx, scale, xin[:r])
        norm.length_normalise(xin[:r], xin[:r], EPS)
        self.forward(xin[:r], [z[:r] for z in zs], [h[:r] for h in hs], good[:r])
        col = 0
        for k in self.probed:
            feats[:r, col:col + hs[k].shape[1]] = hs[k][:r]
            col += hs[k].shape[1]

    def fold_standardisation(self, mean, scale):
        """A probe trained on (feature - mean) * scale becomes the same probe on the features."""
        self.head_w *= scale[:, None]
        self.head_b -= mean @ self.head_w

    def feature_chunks(self, x, scale, chunk=1000):
        """(start, feats) for each chunk of rows x (stored value * scale = feature): feats, (r, feature_width)
        float32, is what the probe reads for rows start..start+r-1, in a buffer the next chunk reuses."""
        n, rows = x.shape[0], min(chunk, x.shape[0])
        xin = np.empty((rows, self.in_features), np.float32)
        zs = [np.empty((rows, w), np.float32) for w in self.widths]
        hs = [np.empty((rows, w), np.float32) for w in self.widths]
        good, feats = np.empty(rows, np.float32), np.empty((rows, self.feature_width), np.float32)
        for start in range(0, n, chunk):
            idx = np.arange(start, min(start + chunk, n), dtype=np.int64)
            self.features(x, scale, idx, xin, zs, hs, good, feats)
            yield start, feats[:len(idx)]

    def feature_rows(self, x, scale):
        """(N, feature_width) float32: the probe's input for every row of x (FFEncoder.transform)."""
        out = np.empty((x.shape[0], self.feature_width), np.float32)
        for start, feats in self.feature_chunks(x, scale):
            out[start:start + len(feats)] = feats
        return out

    def head_logits(self, x, scale):
        """(N, C) probe logits of rows x (stored value * scale = feature)."""
        logits = np.empty((x.shape[0], self.num_classes), np.float32)
        for start, feats in self.feature_chunks(x, scale):
            np.matmul(feats, self.head_w, out=logits[start:start + len(feats)])
            logits[start:start + len(feats)] += self.head_b
        return logits

    def classifiers(self):
        return [] if self.head_w is None else ["linear"]

    def predict(self, x, scale, classifier="linear"):
        return self.head_logits(x, scale).argmax(axis=1)

    def errors(self, x, y, scale, classifiers=None):
        return {"linear": float((self.predict(x, scale) != y).mean())}

    def describe_input(self, ds):
        FFNet.describe_input(self, ds)
        if self.head_w is None:       # the encoder alone names no label
            self.input_info["label_names"] = []

    # ---- persistence ----

    def npz_writer(self, config_json):
        arrays = {f"w{k}": w for k, w in enumerate(self.weights)}
        arrays.update({f"b{k}": b for k, b in enumerate(self.biases)})
        if self.head_w is not None:
            arrays.update(head_w=self.head_w, head_b=self.head_b)
        meta = dict(format_version=FORMAT_VERSION, net=NET, mean_goodness=self.mean_goodness,
                    config=json.loads(config_json), input=self.input_info)
        arrays["meta"] = np.frombuffer(json.dumps(meta, allow_nan=False).encode(), np.uint8)
        return npz_writer(arrays)

    @classmethod
    def from_arrays(cls, path, arrays, meta):
        probe = "head_w" in arrays or "head_b" in arrays     # both, or neither (the encoder alone)
        net = cls(*read_dense_layers(path, arrays, meta),
                  array(path, arrays, "head_w", np.float32, ndim=2) if probe else None,
                  array(path, arrays, "head_b", np.float32, ndim=1) if probe else None,
                  meta.get("input"), field(path, meta, "mean_goodness", bool))
        net.check(path)
        return net, field(path, meta, "config", dict)

    def check(self, source="model"):
        """Shapes chain and the probe fits the probed widths (array() has checked dtypes and finiteness)."""
        prev = self.in_features
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            if w.shape[0] != prev or b.shape != (w.shape[1],):
                raise ModelError(f"{source}: layer {k}: weight {w.shape} / bias {b.shape} do not chain from "
                                 f"width {prev}")
            prev = w.shape[1]
        feat = self.feature_width
        if self.head_w is not None and (self.head_w.shape[0] != feat or self.head_w.shape[1] < 1 or
                                        self.head_b.shape != (self.head_w.shape[1],)):
            raise ModelError(f"{source}: probe {self.head_w.shape} + {self.head_b.shape} does not fit the {feat} "
                             f"activities of layers {[k + 1 for k in self.probed]}; it is damaged")
        if self.input_info is not None:
            check_input_info(f"{source} input", self.input_info, self.in_features, self.num_classes)

    def check_config(self, cfg, source="model"):
        sizes = (self.in_features, *self.widths)
        if cfg.algo not in UNSUPERVISED or cfg.sizes != sizes or (cfg.goodness == "mean") != self.mean_goodness or \
                (cfg.head_epochs > 0) != (self.head_w is not None):
            raise ModelError(f"{source}: its config (--algo {cfg.algo} --model {cfg.model}) does not describe its "
                             f"{NET} net {'-'.join(map(str, sizes))}; it is damaged or not written by edgeff")
