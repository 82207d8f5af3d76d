"""The FFCL net (--algo ffcl; Karkehabadi, Homayoun, Sasan 2024, "FFCL: Forward-Forward Net
with Cortical Loops"): a feature path that never sees the label, a label path of one label
vector per class and layer, and, with feedback, top-down weights from each layer to the one below.

    x^ = x / (|x| + eps)                                the row, no label overlaid
    u_k^t = h_{k-1}^t @ W_k + [t > 0] h_{k+1}^{t-1} @ F_k   layer k at settling step t = 0..K
                                                        (h_0 = x^; F_k: feedback from layer k + 1)
    early labels: z_k(y) = u_k + L_k[y] + b_k, h_k = relu(z_k) / (|relu(z_k)| + eps): the label
                  rides on the activity, so each candidate label is a pass of its own (C passes)
    late labels:  h_k = relu(u_k + b_k) / (|..| + eps) carries no label; the label meets the
                  features only in the goodness, z_k(y) = u_k^K + L_k[y] + b_k (one pass + C x H per layer)
    goodness  g_k(y) = sum_j relu(z_k(y)_j)^2 (mean with --goodness mean), at the last step K
    score(y) = sum_k g_k(y); the predicted label is its argmax

L_k exists for every layer with --separate-labels, for the first only without (as an overlaid
label's input weights: deeper layers then see the label only through the activity).
Its model.npz holds w0.., b0.., l0.. (labelled layers), f0.. (feedback, layers 0..n-2 when
K > 0) and meta "net": "ffcl" with separate, late and feedback_steps.
"""

import json

import numpy as np

from .errors import ModelError
from .fields import array, field
from .fileio import npz_writer
from .kernels import batch, ff_loss, norm, overlay
from .model import EPS, EVAL_ROWS, FORMAT_VERSION, FFNet, check_input_info, read_dense_layers

NET = "ffcl"


class FFCLNet:
    def __init__(self, weights, biases, label_w, feedback_w, late, feedback_steps, mean_goodness=False,
                 input_info=None):
        self.weights, self.biases = weights, biases    # per layer (D_in, H_k), (H_k,) float32
        self.label_w = label_w                         # per labelled layer (C, H_k) float32: L_k
        self.feedback_w = feedback_w                   # per layer but the last (H_{k+1}, H_k) float32: F_k, or []
        self.late = late
        self.feedback_steps = feedback_steps           # K
        self.mean_goodness = mean_goodness
        self.input_info = input_info

    @classmethod
    def create(cls, sizes, num_classes, rng, alloc, separate, late, feedback_steps, mean_goodness):
        """Weights as FFNet.create draws them into alloc(k)'s (w, b), then L_k and F_k (uniform in
        +-1/sqrt(fan_in) too, F_k's fan-in H_{k+1}) into alloc(('l', k)) and alloc(('f', k));
        alloc None: arrays of the net's own."""
        ff = FFNet.create(sizes, 0, 1.0, mean_goodness, rng, alloc=alloc)    # no label inputs: any width of row
        n = len(ff.weights)
        alloc = alloc or (lambda key: np.empty((num_classes if key[0] == "l" else sizes[key[1] + 2], sizes[key[1] + 1]),
                                               np.float32))
        label_w = [alloc(("l", k)) for k in range(n if separate else 1)]
        for k, lw in enumerate(label_w):
            lw[...] = rng.uniform(-1, 1, lw.shape) / np.sqrt(ff.weights[k].shape[0])
        feedback_w = [alloc(("f", k)) for k in range(n - 1)] if feedback_steps else []
        for fw in feedback_w:
            fw[...] = rng.uniform(-1, 1, fw.shape) / np.sqrt(fw.shape[0])
        return cls(ff.weights, ff.biases, label_w, feedback_w, late, feedback_steps, mean_goodness)

    @property
    def in_features(self):
        return self.weights[0].shape[0]

    @property
    def num_classes(self):
        return self.label_w[0].shape[0]

    @property
    def widths(self):
        return [w.shape[1] for w in self.weights]

    @property
    def separate(self):
        return len(self.label_w) == len(self.weights)

    def feeds_back(self, k):
        return k < len(self.feedback_w)

    def layer_arrays(self, k):
        """{name: array} of layer k: weights w, bias b, and its label vectors l and feedback weights f
        where it has them (what it trains, and the federation ships)."""
        arrays = {"w": self.weights[k], "b": self.biases[k]}
        if k < len(self.label_w):
            arrays["l"] = self.label_w[k]
        if self.feeds_back(k):
            arrays["f"] = self.feedback_w[k]
        return arrays

    # ---- the settling forward, shared by training and inference ----

    def settle(self, p, labels, ones, zs, hs, tmps, good, at_last):
        """K + 1 steps of every layer. p: (B, H_0) x^ @ W_0, made once for all steps. labels: (R,)
        the label of each row (early: R = 2B or B rows, row i is data row i % B; late: unused).
        zs[k], hs[k]: (R or B, H_k) pre-activation and normalised activity; tmps[k]: a feedback
        product's room. at_last(k) at step K: late, before z_k = u_k is activated (u_k without
        the bias); early, after (z_k = relu, good = g_k of each row)."""
        n, steps = len(self.weights), self.feedback_steps
        for t in range(steps + 1):
            for k in range(n):
                z = zs[k]
                if self.late:
                    np.copyto(z, p) if k == 0 else np.matmul(hs[k - 1], self.weights[k], out=z)
                elif k == 0:
                    overlay.overlay_pre(p, self.label_w[0], ones[:len(p)], labels, z)
                else:
                    np.matmul(hs[k - 1], self.weights[k], out=z)
                    if k < len(self.label_w):
                        overlay.overlay_pre(z, self.label_w[k], ones[:len(z)], labels, z)
                if t > 0 and self.feeds_back(k):
                    np.matmul(hs[k + 1], self.feedback_w[k], out=tmps[k])
                    np.add(z, tmps[k], out=z)
                if t == steps and self.late:
                    at_last(k)
                ff_loss.ff_activate(z, self.biases[k], hs[k], good[:len(z)], self.mean_goodness, EPS)
                if t == steps and not self.late:
                    at_last(k)

    # ---- inference (allocates per call: not the training hot path) ----

    def goodness_scores(self, x, scale, chunk=EVAL_ROWS):
        """(N, C) score(y) for every row and candidate label (module docstring)."""
        n, c = x.shape[0], self.num_classes
        rows = min(chunk, n)
        scores = np.zeros((n, c), np.float32)
        xn = np.empty((rows, self.in_features), np.float32)
        p = np.empty((rows, self.widths[0]), np.float32)
        ones, good = np.ones(rows, np.float32), np.empty(rows, np.float32)
        zs = [np.empty((rows, w), np.float32) for w in self.widths]
        hs = [np.empty((rows, w), np.float32) for w in self.widths]
        tmps = [np.empty((rows, w), np.float32) for w in self.widths]
        per_label = np.empty((rows, c), np.float32)
        for start in range(0, n, chunk):
            r = min(chunk, n - start)
            out = scores[start:start + r]
            batch.gather_scaled(x, np.arange(start, start + r, dtype=np.int64), scale, xn[:r])
            norm.length_normalise(xn[:r], xn[:r], EPS)
            np.matmul(xn[:r], self.weights[0], out=p[:r])
            sub = ([z[:r] for z in zs], [h[:r] for h in hs], [m[:r] for m in tmps], good)
            if self.late:
                def add_layer(k):
                    ff_loss.label_goodness(sub[0][k], self.label_w[k], ones[:r], self.biases[k], per_label[:r],
                                           self.mean_goodness)
                    out[...] += per_label[:r]
                self.settle(p[:r], None, ones, *sub, add_layer)
                continue
            for label in range(c):
                def add_good(k, label=label):
                    out[:, label] += good[:r]
                self.settle(p[:r], np.full(r, label, np.int64), ones, *sub, add_good)
        return scores

    def classifiers(self):
        return ["goodness"]

    def predict(self, x, scale, classifier="goodness"):
        return self.goodness_scores(x, scale).argmax(axis=1)

    def scores(self, x, scale, classifier="goodness"):
        return self.goodness_scores(x, scale)

    def errors(self, x, y, scale, classifiers=None):
        return {"goodness": float((self.predict(x, scale) != y).mean())}

    def describe_input(self, ds):
        FFNet.describe_input(self, ds)

    # ---- persistence ----

    def npz_writer(self, config_json):
        arrays = {f"w{k}": w for k, w in enumerate(self.weights)}
        arrays.update({f"b{k}": b for k, b in enumerate(self.biases)})
        arrays.update({f"l{k}": lw for k, lw in enumerate(self.label_w)})
        arrays.update({f"f{k}": fw for k, fw in enumerate(self.feedback_w)})
        meta = dict(format_version=FORMAT_VERSION, net=NET, separate=self.separate, late=self.late,
                    feedback_steps=self.feedback_steps, mean_goodness=self.mean_goodness,
                    config=json.loads(config_json), input=self.input_info)
        arrays["meta"] = np.frombuffer(json.dumps(meta, allow_nan=False).encode(), np.uint8)
        return npz_writer(arrays)

    @classmethod
    def from_arrays(cls, path, arrays, meta):
        weights, biases = read_dense_layers(path, arrays, meta)
        n = len(weights)
        separate, late = field(path, meta, "separate", bool), field(path, meta, "late", bool)
        steps = field(path, meta, "feedback_steps", int, lambda s: s >= 0, "0 or more")
        label_w = [array(path, arrays, f"l{k}", np.float32, ndim=2) for k in range(n if separate else 1)]
        feedback_w = [array(path, arrays, f"f{k}", np.float32, ndim=2) for k in range(n - 1)] if steps else []
        net = cls(weights, biases, label_w, feedback_w, late, steps, field(path, meta, "mean_goodness", bool),
                  meta.get("input"))
        net.check(path)
        return net, field(path, meta, "config", dict)

    def check(self, source="model"):
        """Shapes chain; every L_k is (C, H_k) and F_k (H_{k+1}, H_k); late labels need an L_k for every layer."""
        prev, widths, c = self.in_features, self.widths, self.label_w[0].shape[0]
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            if w.shape[0] != prev or b.shape != (w.shape[1],):
                raise ModelError(f"{source}: layer {k}: weight {w.shape} / bias {b.shape} do not chain from width {prev}")
            prev = w.shape[1]
        bad = [f"l{k} {lw.shape}" for k, lw in enumerate(self.label_w) if lw.shape != (c, widths[k]) or c < 2]
        bad += [f"f{k} {fw.shape}" for k, fw in enumerate(self.feedback_w) if fw.shape != (widths[k + 1], widths[k])]
        if bad or (self.late and not self.separate):
            raise ModelError(f"{source}: label or feedback weights {', '.join(bad) or '(late labels without one per layer)'}"
                             f" do not fit layers {widths}; it is damaged or not written by edgeff")
        if self.input_info is not None:
            check_input_info(f"{source} input", self.input_info, self.in_features, self.num_classes)

    def check_config(self, cfg, source="model"):
        sizes = (self.in_features, *self.widths)
        if (cfg.algo != NET or cfg.sizes != sizes or (cfg.goodness == "mean") != self.mean_goodness
                or cfg.separate_labels != self.separate or cfg.late_labels != self.late
                or cfg.feedback_steps != self.feedback_steps):
            raise ModelError(f"{source}: its config (--algo {cfg.algo} --model {cfg.model}) does not describe its "
                             f"{NET} net {'-'.join(map(str, sizes))}; it is damaged or not written by edgeff")
