"""The dense FF network: weights, label overlay, forward pass, both classifiers, save/load.

Input layout. A data row has D features (pixels scaled to [0, 1]). The label is
shown to the net as C extra-bright inputs, value `label_value` at the label's
position and 0 elsewhere (a neutral label is value/C everywhere):
  - "replace" (Hinton's way, used for images with more than C pixels): the
    first C pixels are overwritten; they are border pixels, almost always 0.
  - "append" (used for flat feature vectors, where every feature may matter,
    and for inputs of C features or fewer): the C label inputs are added after
    the D features, so the first layer has D + C inputs.
Each layer's input is length-normalised, so only the direction of the previous
layer's activity vector is passed on, not its goodness.
"""

import json
import math
import re

import numpy as np

from .errors import ModelError
from .fields import array, field, is_kind
from .fileio import atomic_write, npz_writer
from .npzfile import open_npz
from .kernels import batch, ff_loss, norm

FORMAT_VERSION = 1
EPS = 1e-4
EVAL_ROWS = 256   # rows per chunk when scoring a set: its buffers stay the size of a training batch's


class FFNet:
    def __init__(self, weights, biases, num_classes, label_offset, label_value, mean_goodness,
                 head_w=None, head_b=None, input_info=None):
        self.weights = weights            # list of (D_in, D_out) float32
        self.kinds = ["dense"] * len(weights)  # layer types, as export's converter table names them
        self.biases = biases              # list of (D_out,) float32
        self.num_classes = num_classes
        self.label_offset = label_offset  # first label column of the input row
        self.label_value = label_value
        self.mean_goodness = mean_goodness
        self.head_w = head_w              # (sum of hidden widths, C) float32 or None
        self.head_b = head_b              # (C,) float32 or None
        # what a row is, for running the model without the data set: dataset name, scale (stored
        # value * scale = feature), image_shape, label_names. Runs saved before it existed: None.
        self.input_info = input_info

    @staticmethod
    def label_layout(d, num_classes, image):
        """(label_offset, first layer's input width) for rows of d features."""
        return (0, d) if image and d > num_classes else (d, d + num_classes)

    @classmethod
    def create(cls, sizes, num_classes, label_value, mean_goodness, rng, image=True, alloc=None):
        """A net with weights uniform in +-1/sqrt(fan_in), as torch.nn.Linear. alloc(k) gives
        layer k's float32 (weights, bias) to fill (the trainer's arena views); the values are
        drawn a few rows at a time, so no full-size temporary is ever made."""
        label_offset, in_width = cls.label_layout(sizes[0], num_classes, image)
        widths = [in_width] + list(sizes[1:])
        alloc = alloc or (lambda k: (np.empty((widths[k], widths[k + 1]), np.float32), np.empty(widths[k + 1], np.float32)))
        weights, biases = [], []
        for k, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            bound = 1.0 / np.sqrt(fan_in)
            w, b = alloc(k)
            for i in range(0, fan_in, 64):       # the same stream as one draw of the whole matrix
                w[i:i + 64] = rng.uniform(-bound, bound, (min(64, fan_in - i), fan_out))
            b[...] = rng.uniform(-bound, bound, fan_out)
            weights.append(w)
            biases.append(b)
        return cls(weights, biases, num_classes, label_offset, label_value, mean_goodness)

    def layer_arrays(self, k):
        """{name: array} of FF layer k: its weights w and bias b (FFCLNet's adds l and f)."""
        return {"w": self.weights[k], "b": self.biases[k]}

    def copy_layers_from(self, other):
        """Set every FF layer's weights and bias to those of `other`, a net of the same shape (in place:
        a trainer's arena views stay its own)."""
        for mine, theirs in zip(self.weights + self.biases, other.weights + other.biases):
            mine[...] = theirs

    @property
    def in_features(self):
        """Features per data row (D)."""
        return self.label_offset if self.label_offset else self.in_width

    @property
    def in_width(self):
        return self.weights[0].shape[0]

    @property
    def widths(self):
        return [w.shape[1] for w in self.weights]

    def stage(self, x, idx, scale, labels, out):
        """out <- normalised input rows x[idx] overlaid with labels (-1: neutral).  out: (B, in_width)."""
        batch.gather_scaled(x, idx, scale, out)
        batch.overlay_labels(out, labels, self.label_offset, self.num_classes, self.label_value)
        norm.length_normalise(out, out, EPS)

    def forward(self, x_norm, zs, hs, good, first=0, last=None, on_layer=None):
        """Run layers first..last-1 on normalised rows x_norm: zs[k] <- relu activities,
        hs[k] <- their normalised copy (next layer's input), on_layer(k, z, good) after each."""
        last = len(self.weights) if last is None else last
        inp = x_norm
        for k in range(first, last):
            z = zs[k]
            np.matmul(inp, self.weights[k], out=z)
            ff_loss.ff_activate(z, self.biases[k], hs[k], good, self.mean_goodness, EPS)
            if on_layer is not None:
                on_layer(k, z, good)
            inp = hs[k]
        return inp

    # ---- inference (allocates per chunk: not the training hot path) ----

    def _buffers(self, rows):
        zs = [np.empty((rows, w), np.float32) for w in self.widths]
        hs = [np.empty((rows, w), np.float32) for w in self.widths]
        return np.empty((rows, self.in_width), np.float32), zs, hs, np.empty(rows, np.float32)

    def goodness_scores(self, x, scale, score_layers=None, chunk=EVAL_ROWS):
        """(N, C) goodness summed over score_layers (default: every layer) for every candidate
        label; argmax is Hinton's goodness classifier. (Hinton leaves the first layer out of
        a 4-layer net; on our 2- and 4-layer nets counting every layer measured better.)"""
        layers = range(len(self.weights)) if score_layers is None else score_layers
        n, c = x.shape[0], self.num_classes
        scores = np.zeros((n, c), np.float32)
        xin, zs, hs, good = self._buffers(min(chunk, n))
        for start in range(0, n, chunk):
            idx = np.arange(start, min(start + chunk, n), dtype=np.int64)
            r = len(idx)
            for label in range(c):
                self.stage(x, idx, scale, np.full(r, label, np.int64), xin[:r])

                def add(k, z, g, label=label):
                    if k in layers:
                        scores[start:start + r, label] += g[:r]
                self.forward(xin[:r], [z[:r] for z in zs], [h[:r] for h in hs], good[:r], on_layer=add)
        return scores

    def first_layer_scores(self, x, scale, chunk=EVAL_ROWS):
        """(N, C) the first layer's goodness for every candidate label, from one product:
        the label enters as a per-label term (kernels/overlay.py), so all C labels cost about
        one first-layer pass, not C passes of the net. Its argmax is the "first" classifier."""
        n, c, lo = x.shape[0], self.num_classes, self.label_offset
        rows = min(chunk, n)
        scores = np.empty((n, c), np.float32)
        x0, inv = np.empty((rows, self.in_width), np.float32), np.empty(rows, np.float32)
        u0 = np.empty((rows, self.widths[0]), np.float32)
        wl = np.multiply(self.weights[0][lo:lo + c], self.label_value, dtype=np.float32)
        for start in range(0, n, chunk):
            idx = np.arange(start, min(start + chunk, n), dtype=np.int64)
            r = len(idx)
            batch.gather_scaled(x, idx, scale, x0[:r])
            x0[:r, lo:lo + c] = 0.0
            overlay_inverse_norm(x0[:r], self.label_value, inv[:r])
            np.matmul(x0[:r], self.weights[0], out=u0[:r])
            ff_loss.label_goodness(u0[:r], wl, inv[:r], self.biases[0], scores[start:start + r], self.mean_goodness)
        return scores

    def features(self, x, scale, idx, labels, xin, zs, hs, good, feats):
        """feats <- normalised activities of every hidden layer for rows x[idx] overlaid
        with `labels` (-1: the neutral label the linear head reads)."""
        r = len(idx)
        self.stage(x, idx, scale, labels[:r], xin[:r])
        self.forward(xin[:r], [z[:r] for z in zs], [h[:r] for h in hs], good[:r])
        col = 0
        for h in hs:
            feats[:r, col:col + h.shape[1]] = h[:r]
            col += h.shape[1]

    def head_logits(self, x, scale, chunk=EVAL_ROWS):
        if self.head_w is None:
            raise ModelError("this model has no linear head: train with --head-epochs 1 or more, or use --classifier goodness")
        n = x.shape[0]
        logits = np.empty((n, self.num_classes), np.float32)
        xin, zs, hs, good = self._buffers(min(chunk, n))
        feats = np.empty((min(chunk, n), self.head_w.shape[0]), np.float32)
        neutral = np.full(min(chunk, n), -1, np.int64)
        for start in range(0, n, chunk):
            idx = np.arange(start, min(start + chunk, n), dtype=np.int64)
            self.features(x, scale, idx, neutral, xin, zs, hs, good, feats)
            np.matmul(feats[:len(idx)], self.head_w, out=logits[start:start + len(idx)])
            logits[start:start + len(idx)] += self.head_b
        return logits

    def scores(self, x, scale, classifier):
        """(N, C) scores of classifier (linear, goodness or first) whose argmax is its prediction."""
        if classifier == "linear":
            return self.head_logits(x, scale)
        return self.first_layer_scores(x, scale) if classifier == "first" else self.goodness_scores(x, scale)

    def predict(self, x, scale, classifier):
        return self.scores(x, scale, classifier).argmax(axis=1)

    # ---- persistence ----

    def save(self, path, config_json):
        atomic_write(path, self.npz_writer(config_json))

    def npz_writer(self, config_json):
        """write(fileobj): the model as an .npz with its metadata and config."""
        arrays = {f"w{k}": w for k, w in enumerate(self.weights)}
        arrays.update({f"b{k}": b for k, b in enumerate(self.biases)})
        if self.head_w is not None:
            arrays.update(head_w=self.head_w, head_b=self.head_b)
        meta = dict(format_version=FORMAT_VERSION, num_classes=self.num_classes, label_offset=self.label_offset,
                    label_value=self.label_value, mean_goodness=self.mean_goodness, config=json.loads(config_json),
                    input=self.input_info)
        arrays["meta"] = np.frombuffer(json.dumps(meta, allow_nan=False).encode(), np.uint8)
        return npz_writer(arrays)

    @classmethod
    def load(cls, path):
        """(net, its stored config as a dict) from a model.npz; every field and array checked."""
        return cls.from_arrays(path, *read_model_file(path))

    @classmethod
    def from_arrays(cls, path, arrays, meta):
        weights, biases = read_dense_layers(path, arrays, meta)
        head = (None, None)
        if "head_w" in arrays or "head_b" in arrays:
            head = (array(path, arrays, "head_w", np.float32, ndim=2), array(path, arrays, "head_b", np.float32, ndim=1))
        net = cls(weights, biases, field(path, meta, "num_classes", int, lambda c: c >= 1, "a positive whole number"),
                  field(path, meta, "label_offset", int), field(path, meta, "label_value", float, lambda v: v > 0,
                                                                "a positive number"),
                  field(path, meta, "mean_goodness", bool), *head, input_info=meta.get("input"))
        net.check(path)
        return net, field(path, meta, "config", dict)

    def check(self, source="model"):
        """Shapes chain from layer to layer, the label columns fit the input, the head fits the
        hidden widths, every array is finite float32; ModelError naming `source` if not."""
        prev = self.in_width
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            if w.dtype != np.float32 or b.dtype != np.float32 or w.ndim != 2 or w.shape[0] != prev or b.shape != (w.shape[1],):
                raise ModelError(f"{source}: layer {k}: weight {w.dtype} {w.shape} / bias {b.dtype} {b.shape} do not "
                                 f"chain from width {prev}")
            if not (np.isfinite(w).all() and np.isfinite(b).all()):
                raise ModelError(f"{source}: layer {k} holds NaN or Inf: the run diverged; retrain with a lower --lr")
            prev = w.shape[1]
        c = self.num_classes
        if not (1 <= c < self.in_width and self.label_offset in (0, self.in_width - c)):
            raise ModelError(f"{source}: {c} classes with labels at column {self.label_offset} do not fit the "
                             f"{self.in_width} inputs of layer 0; it is damaged or not written by edgeff")
        if self.head_w is not None:
            if self.head_w.shape != (sum(self.widths), c) or self.head_b.shape != (c,) or \
                    self.head_w.dtype != np.float32 or self.head_b.dtype != np.float32:
                raise ModelError(f"{source}: linear head {self.head_w.dtype} {self.head_w.shape} + "
                                 f"{self.head_b.dtype} {self.head_b.shape} does not match hidden widths "
                                 f"{self.widths} and {c} classes")
            if not (np.isfinite(self.head_w).all() and np.isfinite(self.head_b).all()):
                raise ModelError(f"{source}: the linear head holds NaN or Inf: the run diverged; retrain with a lower --head-lr")
        if self.input_info is not None:
            check_input_info(f"{source} input", self.input_info, self.in_features, self.num_classes)

    def check_config(self, cfg, source="model"):
        """The stored TrainConfig describes these weights (widths, label value, goodness, classifier)."""
        sizes = (self.in_features, *self.widths)
        if cfg.sizes != sizes:
            raise ModelError(f"{source}: its config says --model {cfg.model} but its weights are "
                             f"{'-'.join(map(str, sizes))}; it is damaged or not written by edgeff")
        if cfg.label_value != self.label_value or (cfg.goodness == "mean") != self.mean_goodness:
            raise ModelError(f"{source}: its config (label value {cfg.label_value}, {cfg.goodness} goodness) "
                             f"disagrees with its weights' (label value {self.label_value}, "
                             f"{'mean' if self.mean_goodness else 'sum'} goodness); it is damaged")
        if cfg.classifier not in self.classifiers():
            raise ModelError(f"{source}: its config reports the {cfg.classifier} classifier but it has no linear "
                             "head; it is damaged or not written by edgeff")

    def describe_input(self, ds):
        """Record what the rows of data set ds are, so the saved model can run without it."""
        self.input_info = dict(dataset=ds.name, features=int(ds.x_train.shape[1]), scale=float(ds.scale),
                               dtype=str(ds.x_train.dtype),
                               image_shape=list(ds.image_shape) if ds.image_shape else None,
                               label_names=[str(n) for n in ds.label_names])

    def classifiers(self):
        return (["linear"] if self.head_w is not None else []) + ["goodness", "first"]

    def error(self, x, y, scale, classifier):
        return float((self.predict(x, scale, classifier) != y).mean())

    def errors(self, x, y, scale, classifiers=None):
        """{classifier: error rate on rows x with labels y}."""
        return {c: self.error(x, y, scale, c) for c in classifiers or self.classifiers()}


def overlay_inverse_norm(x0, label_value, out):
    """out <- 1 / (norm of each row of x0 with a one-hot label of label_value overlaid + eps);
    x0's label inputs are zero. Every one-hot label has the same norm, so it serves them all."""
    np.einsum("ij,ij->i", x0, x0, out=out)
    np.add(out, label_value ** 2, out=out)
    np.sqrt(out, out=out)
    np.add(out, EPS, out=out)
    np.reciprocal(out, out=out)


def check_input_info(source, info, d, c):
    """A model's record of its input rows (describe_input) fits its d features and c classes."""
    field(source, info, "scale", float, lambda s: s > 0, "a positive number")
    field(source, info, "features", int, lambda f: f == d, f"{d}, the model's input width")
    field(source, info, "dataset", str)
    field(source, info, "dtype", str)
    field(source, info, "label_names", list, lambda names: len(names) == c and all(isinstance(n, str) for n in names),
          f"a list of {c} names")
    if info.get("image_shape") is not None:
        field(source, info, "image_shape", list,
              lambda s: all(is_kind(v, int) and v > 0 for v in s) and math.prod(s) == d,
              f"image dimensions holding {d} pixels")


def read_model_file(path):
    """(arrays, metadata dict) of a model .npz; ModelError if it is missing or unreadable."""
    try:
        with open_npz(path) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except FileNotFoundError:
        raise ModelError(f"{path}: no such model file: train one with 'edgeff train --out DIR'") from None
    except Exception as exc:
        raise ModelError(f"{path}: not a readable edgeff model ({type(exc).__name__}: {exc}); retrain or restore it") from None
    field(path, {"meta": meta}, "meta", dict)
    return arrays, meta


def read_dense_layers(path, arrays, meta):
    """(weights, biases) of a dense model file's layers w0, b0, w1, ..., each checked as float32;
    a file of a newer format is refused with one line."""
    if field(path, meta, "format_version", int) > FORMAT_VERSION:
        raise ModelError(f"{path}: model format {meta['format_version']} is newer than this edgeff reads "
                         f"({FORMAT_VERSION}); upgrade edgeff")
    n = max(1, sum(1 for k in arrays if re.fullmatch(r"w[0-9]+", k)))
    return ([array(path, arrays, f"w{k}", np.float32, ndim=2) for k in range(n)],
            [array(path, arrays, f"b{k}", np.float32, ndim=1) for k in range(n)])
