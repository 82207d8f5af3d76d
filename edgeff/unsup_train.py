"""Unsupervised FF (--algo ff-unsup, Hinton 2022 section 3.1): the layers learn to tell real
images (positives) from hybrid images (negatives, kernels/hybrid.py) with FF's goodness loss;
no label is shown to them. Then a softmax probe learns the labels from the normalised
activities of the last three hidden layers, with no gradient into the layers; with
--head-epochs 0 (FFEncoder) there is no probe phase, and no buffer of it in the arena.

Per batch of B images, in an FF phase:
    stage    x[:B] <- the images, x[B:] <- hybrids of them with random partners, every row
             length-normalised
    layer k  z = x @ w; h = relu(z + b), goodness; dLoss/dz in place; gw, gb (zeroed outside
             the units' windows with --fields local, edgeff/receptive.py); optimiser step
             (the supervised kernels: kernels/ff_loss.py, dense.py, optim.py)
The probe's phase reads only the first ceil(probe_labels * N) training rows' labels: batch
rows are the shuffled order taken modulo that count, so it takes as many steps whatever the
share. It learns on standardised features: before its first step, one pass over the first
STATS_ROWS training images (no labels) gives each feature's mean m and variance v, and the
probe sees (f - m) * s with s = 1 / sqrt(v + mean of v) (a unit silent on those images gets
the typical scale, not a huge one). The unit-length activities are otherwise tiny and far
from centred, which left Adam's probe far from converged in a few epochs. When training
ends, s and m are folded into the probe (head_w * s, head_b - m @ that), so the saved model
is a plain linear probe on the activities. Every buffer is a view into one arena
(edgeff/unsup_layout.py); the loop allocates nothing.
"""

import math
import time

import numpy as np

from .errors import UsageError
from .fit_loop import Optimizer, PhasedTrainer
from .kernels import batch, dense, ff_loss, hybrid, norm, softmax
from .kernels import local_fields
from .memory import plan_greedy
from .receptive import layer_fields, widths_problem
from .model import EPS
from .train import Trainer
from .unsup_layout import unsup_layout
from .unsup_model import UnsupNet

STATS_ROWS = 10000   # training images the probe's feature means and variances are taken over


def check_data(cfg, ds):
    """UsageError unless ds holds images hybrids can be made of, and cfg asks for nothing ff-unsup
    does not do."""
    if cfg.shift:
        raise UsageError("--shift moves the images of supervised FF; --algo ff-unsup does not use it: leave it out")
    if ds.image_shape is None or len(ds.image_shape) not in (2, 3):
        raise UsageError(f"--algo ff-unsup mixes images into hybrid negatives; {ds.name} holds "
                         f"{'flat rows' if ds.image_shape is None else ds.image_shape}: use --algo ff")
    problem = widths_problem(ds.image_shape, cfg.sizes[1:]) if cfg.fields == "local" else None
    if problem:
        raise UsageError(problem)


def layout_of(cfg, ds, batch_size=None):
    h, w = ds.image_shape[:2]
    return unsup_layout(list(cfg.sizes[1:]), cfg.sizes[0], h * w, ds.num_classes, batch_size or cfg.batch_size,
                        cfg.schedule, cfg.optimizer, probe=cfg.head_epochs > 0)


def planner(cfg, ds):
    """plan_of(batch size) -> the memory plan of cfg's ff-unsup run on ds."""
    return lambda b: plan_greedy(layout_of(cfg, ds, b).buffers)


def probe_rows(cfg, n_train):
    """How many training rows (the first ones) the probe may read the labels of."""
    return max(1, math.ceil(cfg.probe_labels * n_train))


class UnsupTrainer(PhasedTrainer):
    """Trains cfg's encoder on ds's images, then the probe (none with cfg.head_epochs 0), inside the
    arena of `plan`. A subclass (edgeff/uff_train.py) replaces layout_of, _bind_phase and _ff_batch:
    how the layers learn; the probe, its phase and the net stay these."""

    layout_of = staticmethod(layout_of)

    def __init__(self, cfg, ds, progress=None, plan=None):
        self._lay_out(cfg, ds, progress, self.layout_of(cfg, ds), plan)
        v, lay = self.arena.view, self.layout

        def alloc(k):
            if k != "head":
                return v(lay.params[k].w), v(lay.params[k].b)
            return (v(lay.head.w), v(lay.head.b)) if lay.head else (None, None)

        self.net = UnsupNet.create(cfg.sizes, self.rng, alloc, cfg.goodness == "mean")
        self.order = np.arange(len(ds.y_train), dtype=np.int64)
        self.y_train = ds.y_train.astype(np.int64)
        self.labelled = probe_rows(cfg, len(ds.y_train))
        self.fields = self._local_fields() if cfg.fields == "local" else [None] * len(self.net.weights)

    def _local_fields(self):
        """Each layer's Fields (None: fully connected); the weights outside them zeroed and those
        inside scaled to +-1/sqrt(the unit's fan-in), as a dense layer of that fan-in is drawn."""
        fields = layer_fields(self.ds.image_shape, self.net.widths)
        for w, f in zip(self.net.weights, fields):
            if f is not None:
                local_fields.keep_fields(w, f)
                w *= np.float32(math.sqrt(w.shape[0] / f.fan_in))
        return fields

    def phases(self):
        return [ph.layers for ph in self.layout.phases] + ([["head"]] if self.layout.head else [])

    def _bind(self, p):
        self.phase, self.params, self.opts = p, {}, {}
        self._bind_probe() if p == len(self.layout.phases) else self._bind_phase(p)

    def _bind_probe(self):
        v, top = self.arena.view, self.layout.head
        self.net.head_w[...] = 0.0
        self.net.head_b[...] = 0.0
        self.params["head"] = self._bind_params(top.training, self.net.head_w, self.net.head_b)
        self.opts["head"] = Optimizer("adam", self.cfg.head_lr, 0.0)
        self.idx, self.y, self.x, self.good, self.loss = v(top.idx), v(top.y), v(top.x), v(top.good), v(top.loss)
        self.feats, self.logits = v(top.feats), v(top.logits)
        self.zs, self.hs = [v(a.z) for a in top.acts], [v(a.h) for a in top.acts]
        self.mean, self.scale = v(top.mean), v(top.scale)
        self._feature_stats()

    def _bind_phase(self, p):
        v, ph = self.arena.view, self.layout.phases[p]
        self.idx, self.partner_u, self.masks, self.x = v(ph.idx), v(ph.partner_u), v(ph.masks), v(ph.x)
        self.zs, self.hs = [v(a.z) for a in ph.acts], [v(a.h) for a in ph.acts]
        self.good, self.loss = v(ph.good), v(ph.loss)
        for k, training in ph.training.items():
            self.params[k] = self._bind_params(training, self.net.weights[k], self.net.biases[k])
            self.opts[k] = Optimizer(self.cfg.optimizer, self.cfg.lr, self.cfg.weight_decay)

    _bind_params = Trainer._bind_params    # (weights, bias) Params on this arena: the supervised trainer's

    def _phase_label(self, keys):
        return "probe " if keys == ["head"] else Trainer._phase_label(self, keys)

    def _part(self, key):
        return "the probe" if key == "head" else f"layer {key + 1}/{len(self.net.weights)}"

    def _lr_option(self, key):
        return ("--head-lr", self.cfg.head_lr) if key == "head" else ("--lr", self.cfg.lr)

    def fit(self, *args, **kwargs):
        history = super().fit(*args, **kwargs)
        if self.layout.head:                 # the encoder alone has no probe
            self.net.fold_standardisation(self.mean, self.scale)
        return history

    def _restore(self, arrays, meta):
        position = super()._restore(arrays, meta)
        if self.phase == len(self.layout.phases):
            self._feature_stats()    # of the checkpoint's layers, restored only now
        return position

    def _feature_stats(self):
        """mean, scale <- the probed features' means and 1 / sqrt(variance + mean variance) over the
        first STATS_ROWS training images (sums in float64, chunks of the batch size)."""
        n, bsz = min(STATS_ROWS, len(self.ds.y_train)), self.cfg.batch_size
        sums, squares = np.zeros(self.feats.shape[1]), np.zeros(self.feats.shape[1])
        for start in range(0, n, bsz):
            idx = self.idx[:min(bsz, n - start)]
            idx[:] = np.arange(start, start + len(idx))
            self.net.features(self.ds.x_train, self.ds.scale, idx, self.x, self.zs, self.hs, self.good, self.feats)
            feats = self.feats[:len(idx)]
            sums += feats.sum(axis=0, dtype=np.float64)
            squares += np.square(feats, dtype=np.float64).sum(axis=0)
        mean = sums / n
        var = np.maximum(squares / n - mean * mean, 0.0)
        self.mean[...] = mean
        self.scale[...] = 1.0 / np.sqrt(var + var.mean())

    # ---- one batch ----

    def _step(self, b, keys, totals):
        self._probe_batch(b, totals) if keys == ["head"] else self._ff_batch(b, keys, totals)

    def _stage(self, b):
        """x[:b] <- images idx[:b], x[b:2b] <- their hybrids, every row length-normalised."""
        ds, x = self.ds, self.x[:2 * b]
        batch.gather_scaled(ds.x_train, self.idx[:b], ds.scale, x[:b])
        self.rng.random(out=self.partner_u[:b], dtype=np.float32)
        self.rng.random(out=self.masks[:b], dtype=np.float32)
        hybrid.hybrid_images(ds.x_train, self.idx[:b], self.partner_u[:b], self.masks[:b], ds.image_shape, ds.scale,
                             x[b:], self.cfg.mask_blurs)
        norm.length_normalise(x, x, EPS)

    def _ff_batch(self, b, keys, totals):
        rows, hook, net = 2 * b, self.step_hook, self.net
        self._stage(b)
        x = self.x[:rows]
        for k in range(keys[-1] + 1):
            t0 = time.perf_counter() if hook else 0.0
            z, good = self.zs[k][:rows], self.good[:rows]
            np.matmul(x, net.weights[k], out=z)
            ff_loss.ff_activate(z, net.biases[k], self.hs[k][:rows], good, net.mean_goodness, EPS)
            if k in self.params:
                ff_loss.ff_loss_grad(z, good, b, self.cfg.threshold, self.loss[:rows], net.mean_goodness)
                pw, pb = self.params[k]
                dense.local_grad(x, z, pw.g, pb.g)
                if self.fields[k] is not None:
                    local_fields.keep_fields(pw.g, self.fields[k])
                self.opts[k].step(self.params[k])
                totals[keys.index(k)] += self.loss[:rows].mean()
            if hook:
                hook.layer_done(k, time.perf_counter() - t0)
            x = self.hs[k][:rows]

    def _probe_batch(self, b, totals):
        """One probe step on the labelled rows idx[:b] mod the labelled count."""
        idx, y, logits = self.idx[:b], self.y[:b], self.logits[:b]
        np.remainder(idx, self.labelled, out=idx)
        np.take(self.y_train, idx, out=y, mode="clip")
        self.net.features(self.ds.x_train, self.ds.scale, idx, self.x, self.zs, self.hs, self.good, self.feats)
        feats = norm.standardise(self.feats[:b], self.mean, self.scale)
        np.matmul(feats, self.net.head_w, out=logits)
        logits += self.net.head_b
        softmax.softmax_xent_grad(logits, y, self.loss[:b])
        pw, pb = self.params["head"]
        dense.local_grad(feats, logits, pw.g, pb.g)
        self.opts["head"].step(self.params["head"])
        totals[0] += self.loss[:b].mean()


def warm_up_unsup():
    """Compile (or load from Numba's cache) the kernels unsupervised FF adds; returns seconds."""
    t0 = time.perf_counter()
    for src in (np.zeros((2, 12), np.uint8), np.zeros((2, 12), np.float32)):
        hybrid.hybrid_images(src, np.zeros(2, np.int64), np.zeros(2, np.float32), np.zeros((2, 4), np.float32),
                             (2, 2), 1.0, np.zeros((2, 12), np.float32), 1)
    norm.standardise(np.zeros((2, 3), np.float32), np.zeros(3, np.float32), np.ones(3, np.float32))
    local_fields.keep_fields(np.zeros((64, 16), np.float32), layer_fields((8, 8), [16])[0])
    return time.perf_counter() - t0
