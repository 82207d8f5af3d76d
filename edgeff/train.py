"""The FF trainer: each layer learns from its own input and output only.

Per batch of B examples the staged input holds 2B rows: B positives (true label
overlaid) then B negatives (a wrong label overlaid). A layer's step is
    z = x @ w                      (BLAS)
    h = relu(z + b), goodness      (ff_activate, also writes h/|h| for the next layer)
    dz = dLoss/dz                  (ff_loss_grad, in place over h)
    gw, gb = x.T @ dz, sum(dz)     (local_grad)
    w, b <- optimiser step         (adam / sgd)
Every buffer is a view into one arena laid out by the memory planner before the
first batch (edgeff/memory.py); the loop allocates nothing.
"""

import math
import time

import numpy as np

from .kernels import batch, dense, ff_loss, norm, optim, overlay, softmax
from .budget import layout_for
from .fit_loop import Optimizer, Param, PhasedTrainer
from .layers.net import GRAD_SUM_ROWS
from .model import EPS, FFNet, overlay_inverse_norm

HALF_MAX = 65504.0    # float16's largest finite value


class Trainer(PhasedTrainer):
    """Trains cfg's net on ds inside the arena of `plan`: the memory plan of cfg on ds, as the
    caller made it when it checked the budget (budget.plan_for), made here when not given;
    cache: layerwise, the dtype ("float32" or "float16") the plan keeps the frozen first layer's
    product of every training row in (budget.choose_frozen_input), made once in the first batch of
    the second phase; None: recomputed every batch.
    Every array the loop uses is the arena's view of a buffer its layer kind declared
    (self.layout, edgeff/layers/).
    The step hook and the loop are PhasedTrainer's (edgeff/fit_loop.py)."""

    def __init__(self, cfg, ds, progress=None, plan=None, cache=None):
        _, in_width = FFNet.label_layout(cfg.sizes[0], ds.num_classes, ds.image_shape is not None)
        rows = len(ds.y_train) if cache else 0
        self._lay_out(cfg, ds, progress, layout_for(cfg, in_width, ds.num_classes, cache_rows=rows,
                                                    cache_dtype=cache or "float32"), plan)
        v = self.arena.view
        self.net = FFNet.create(cfg.sizes, ds.num_classes, cfg.label_value, cfg.goodness == "mean", self.rng,
                                image=ds.image_shape is not None,
                                alloc=lambda k: (v(self.layout.params[k].w), v(self.layout.params[k].b)))
        self.order = np.arange(len(ds.y_train), dtype=np.int64)  # data order, shuffled in place
        self.shift_u = np.zeros(2 * cfg.batch_size) if cfg.shift else None  # RNG fills it in place
        self.y_train = ds.y_train.astype(np.int64)               # labels as the kernels take them
        self.cache_pending = True     # the frozen first layer's products are made once, after any resume's restore

    def _bind_phase(self, p):
        """Point the working buffers at phase p's views; fresh optimiser state for its layers."""
        v, ph = self.arena.view, self.layout.phases[p]
        self.phase = p
        self.idx, self.labels = v(ph.idx), v(ph.labels)
        o = ph.overlay
        self.x0, self.inv, self.u0, self.wl = v(o.x0), v(o.inv), v(o.u0), v(o.wl)
        self.gwl = v(o.gwl) if o.gwl is not None else None
        self.zs = [v(a.z) for a in ph.acts]
        self.hs = [v(a.h) for a in ph.acts]
        self.good, self.loss = v(ph.good), v(ph.loss)
        cache = self.layout.cache if p > 0 else None
        self.cache = (v(cache.u0), v(cache.inv), v(cache.rows) if cache.rows else None) if cache else None
        self.sum_w, self.sum_b = (v(ph.grad_sum[0]), v(ph.grad_sum[1])) if ph.grad_sum else (None, None)
        if o.label_scores is not None:
            self.label_scores = v(o.label_scores)
        else:
            self.uniform = np.zeros(self.cfg.batch_size)     # the one buffer numpy's RNG can fill in place
        self.params, self.opts = {}, {}
        for k, training in ph.training.items():
            self.params[k] = self._bind_params(training, self.net.weights[k], self.net.biases[k])
            self.opts[k] = Optimizer(self.cfg.optimizer, self.cfg.lr, self.cfg.weight_decay)

    def _bind_params(self, training, w, b):
        """(weights, bias) as _Params with their gradient and zeroed optimiser state (layers/dense.Training)."""
        v = self.arena.view
        state = [(v(sw), v(sb)) for sw, sb in training.opt]
        for pair in state:
            pair[0][...] = 0.0
            pair[1][...] = 0.0
        (mw, mb), (vw, vb) = state[0], state[1] if len(state) > 1 else (None, None)
        return Param(w, v(training.gw), mw, vw), Param(b, v(training.gb), mb, vb)

    # ---- one batch ----

    def _stage(self, b):
        """For data rows idx[:b]: labels[:b] the true ones, labels[b:2b] the negatives', and
        the first layer's shared part (kernels/overlay.py): x0 (label inputs zeroed), inv =
        1 / (norm of an overlaid row + eps), u0 = x0 @ w0, wl = label value * w0's label rows;
        u0 and inv from the cache when the plan keeps the frozen first layer's (x0 is then not made)."""
        net = self.net
        lo, hi = net.label_offset, net.label_offset + net.num_classes
        idx, inv = self.idx[:b], self.inv[:b]
        y, neg = self.labels[:b], self.labels[b:2 * b]
        np.take(self.y_train, idx, out=y, mode="clip")  # "clip": no hidden copy; idx is always in range
        if self.cache is None:
            self._first_layer_product(idx)
        else:
            u0, inv_all, rows = self.cache
            if rows is None:
                np.take(u0, idx, axis=0, out=self.u0[:b], mode="clip")
            else:                                 # float16: taken as stored, widened exactly, unscaled
                np.take(u0, idx, axis=0, out=rows[:b], mode="clip")
                np.copyto(self.u0[:b], rows[:b])
                if self.cache_scale != 1.0:
                    np.multiply(self.u0[:b], np.float32(1.0 / self.cache_scale), out=self.u0[:b])
            np.take(inv_all, idx, out=inv, mode="clip")
        np.multiply(net.weights[0][lo:hi], net.label_value, out=self.wl)
        if self.cfg.negatives == "hard":
            # the wrong label the first layer finds most positive: its goodness for every label
            # follows from u0 and wl, no product more
            ff_loss.label_goodness(self.u0[:b], self.wl, inv, net.biases[0], self.label_scores[:b], net.mean_goodness)
            ff_loss.hardest_wrong_label(self.label_scores[:b], y, neg)
        else:
            u = self.uniform[:b]
            self.rng.random(out=u)
            ff_loss.random_wrong_label(y, u, net.num_classes, neg)

    def _first_layer_product(self, idx):
        """x0, inv and u0 (see _stage) of data rows idx."""
        net, ds, b = self.net, self.ds, len(idx)
        lo, hi = net.label_offset, net.label_offset + net.num_classes
        x0, inv = self.x0[:b], self.inv[:b]
        if self.cfg.shift:
            u = self.shift_u[:2 * b]
            self.rng.random(out=u)
            batch.gather_shifted(ds.x_train, idx, u, self.cfg.shift, ds.image_shape, ds.scale, x0)
        else:
            batch.gather_scaled(ds.x_train, idx, ds.scale, x0)
        x0[:, lo:hi] = 0.0
        overlay_inverse_norm(x0, net.label_value, inv)
        np.matmul(x0, net.weights[0], out=self.u0[:b])

    def _fill_cache(self):
        """The frozen first layer's u0 and inv of every training row, in batches as _stage makes them.
        A float16 cache holds u0 times a power of two (cache_scale, exact both ways) that keeps every
        product inside float16's range, and rounds each to the nearest float16."""
        u0, inv, half = self.cache
        self.cache_scale = 1.0 if half is None else half_scale(self.ds, self.net)
        rows = np.arange(self.cfg.batch_size, dtype=np.int64)
        for start in range(0, len(u0), len(rows)):
            b = min(len(rows), len(u0) - start)
            self._first_layer_product(rows[:b] + start)
            if self.cache_scale != 1.0:
                np.multiply(self.u0[:b], np.float32(self.cache_scale), out=self.u0[:b])
            np.copyto(u0[start:start + b], self.u0[:b])
            inv[start:start + b] = self.inv[:b]
        self.cache_pending = False

    def _train_layer(self, k, x, rows, n_pos):
        """One FF step of layer k on rows x (first n_pos positive); k == 0 takes the staged
        first-layer parts instead of x."""
        net, z, h = self.net, self.zs[k][:rows], self.hs[k][:rows]
        if k == 0:
            overlay.overlay_pre(self.u0[:n_pos], self.wl, self.inv[:n_pos], self.labels[:rows], z)
        else:
            np.matmul(x, net.weights[k], out=z)
        ff_loss.ff_activate(z, net.biases[k], h, self.good[:rows], net.mean_goodness, EPS)
        if k not in self.params:                 # a frozen layer below the one training
            return 0.0
        ff_loss.ff_loss_grad(z, self.good[:rows], n_pos, self.cfg.threshold, self.loss[:rows], net.mean_goodness)
        pw, pb = self.params[k]
        if k == 0:
            lo = net.label_offset
            overlay.overlay_grad(z, self.inv[:n_pos], self.labels[:rows], net.label_value, self.gwl, pb.g)
            np.matmul(self.x0[:n_pos].T, z[:n_pos], out=pw.g)
            pw.g[lo:lo + net.num_classes] += self.gwl
        else:
            dense.local_grad(x, z, pw.g, pb.g)
        self.opts[k].step(self.params[k])
        return self.loss[:rows].mean()

    def _batch(self, b, layers, losses):
        """Stage batch idx[:b], train `layers` (frozen layers below just forward); losses[i] += loss."""
        rows, hook = 2 * b, self.step_hook
        if self.cache is not None and self.cache_pending:
            self._fill_cache()
        self._stage(b)
        x = None
        for k in range(layers[-1] + 1):
            t0 = time.perf_counter() if hook else 0.0
            loss = self._train_layer(k, x, rows, b)
            if hook:
                hook.layer_done(k, time.perf_counter() - t0)
            if k in self.params:
                losses[layers.index(k)] += loss
            x = self.hs[k][:rows]

    def _batch_in_turn(self, b, layers, losses):
        """_batch with the positives, then the negatives, passing the layers (activations of b rows, not
        2b). Each pass's gradient is ff_loss_grad's mean over b rows, twice that over 2b: the negatives'
        is added to the positives' and the sum halved (exact), then every trained layer steps once."""
        net, hook = self.net, self.step_hook
        self._stage(b)
        for half, labels in enumerate((self.labels[:b], self.labels[b:2 * b])):
            x = None
            for k in range(layers[-1] + 1):
                t0 = time.perf_counter() if hook else 0.0
                z, h, good = self.zs[k][:b], self.hs[k][:b], self.good[:b]
                if k == 0:
                    overlay.overlay_pre(self.u0[:b], self.wl, self.inv[:b], labels, z)
                else:
                    np.matmul(x, net.weights[k], out=z)
                ff_loss.ff_activate(z, net.biases[k], h, good, net.mean_goodness, EPS)
                if k in self.params:
                    ff_loss.ff_loss_grad(z, good, b if half == 0 else 0, self.cfg.threshold, self.loss[:b],
                                         net.mean_goodness)
                    losses[layers.index(k)] += self.loss[:b].mean() / 2
                    self._layer_grad(k, x, z, labels, add=half == 1)
                x = h
                if hook:
                    hook.layer_done(k, time.perf_counter() - t0)    # summed over both passes and the step
        for k in layers:
            t0 = time.perf_counter() if hook else 0.0
            for p in self.params[k]:
                p.g *= 0.5
            self.opts[k].step(self.params[k])
            if hook:
                hook.layer_done(k, time.perf_counter() - t0)

    def _layer_grad(self, k, x, dz, labels, add):
        """Layer k's gradient from one pass (x its input, dz its loss gradient): written, or with add
        added to the one there, a few rows at a time through sum_w and sum_b."""
        net, (pw, pb) = self.net, self.params[k]
        gb = self.sum_b[:pb.g.shape[0]] if add else pb.g
        if k == 0:
            x = self.x0[:len(dz)]
            overlay.overlay_grad(dz, self.inv[:len(dz)], labels, net.label_value, self.gwl, gb)
        else:
            dense.column_sum(dz, gb)
        if add:
            pb.g += gb
            for i in range(0, pw.g.shape[0], GRAD_SUM_ROWS):
                rows = pw.g[i:i + GRAD_SUM_ROWS]
                part = self.sum_w[:rows.size].reshape(rows.shape)
                np.matmul(x[:, i:i + GRAD_SUM_ROWS].T, dz, out=part)
                rows += part
        else:
            np.matmul(x.T, dz, out=pw.g)
        if k == 0:
            lo = net.label_offset
            pw.g[lo:lo + net.num_classes] += self.gwl

    def _head_batch(self, b, losses):
        """One step of the linear head on batch idx[:b]."""
        net, ds, h = self.net, self.ds, self.head
        idx, y = self.idx[:b], h["y"][:b]
        np.take(self.y_train, idx, out=y, mode="clip")
        net.features(ds.x_train, ds.scale, idx, h["labels"], h["xin"], h["zs"], h["hs"], h["good"], h["feats"])
        logits = h["logits"][:b]
        np.matmul(h["feats"][:b], net.head_w, out=logits)
        logits += net.head_b
        softmax.softmax_xent_grad(logits, y, self.loss[:b])
        dense.local_grad(h["feats"][:b], logits, self.params["head"][0].g, self.params["head"][1].g)
        self.opts["head"].step(self.params["head"])
        losses[0] += self.loss[:b].mean()

    def _bind_head(self):
        """Views for training the one-pass linear softmax head on the hidden layers'
        normalised activities (neutral label in); no gradient reaches the FF layers."""
        net, v, top = self.net, self.arena.view, self.layout.head
        self.phase = len(self.layout.phases)
        net.head_w, net.head_b = v(top.w), v(top.b)
        net.head_w[...] = 0.0
        net.head_b[...] = 0.0
        self.params = {"head": self._bind_params(top.training, net.head_w, net.head_b)}
        self.opts = {"head": Optimizer("adam", self.cfg.head_lr, 0.0)}
        self.head = dict(y=v(top.y), labels=v(top.labels), xin=v(top.xin), good=v(top.good), feats=v(top.feats),
                         logits=v(top.logits), zs=[v(a.z) for a in top.acts], hs=[v(a.h) for a in top.acts])
        self.head["labels"][:] = -1                  # the neutral label
        self.idx, self.loss = v(top.idx), v(top.loss)

    def phases(self):
        """Layers trained in each phase; the linear head, when asked for, is one more phase."""
        return [ph.layers for ph in self.layout.phases] + ([["head"]] if self.layout.head else [])

    # ---- what PhasedTrainer asks of a trainer ----

    def _bind(self, p):
        self._bind_head() if p == len(self.layout.phases) else self._bind_phase(p)

    def _phase_label(self, layers):
        n_layers = len(self.net.weights)
        if layers == ["head"]:
            return "head "
        return f"layer {layers[0] + 1}/{n_layers} " if len(layers) == 1 < n_layers else ""

    def _step(self, b, layers, totals):
        if layers == ["head"]:
            self._head_batch(b, totals)
        else:
            (self._batch_in_turn if self.cfg.in_turn else self._batch)(b, layers, totals)

    def _part(self, key):
        return "the linear head" if key == "head" else f"layer {key + 1}/{len(self.net.weights)}"

    def _lr_option(self, key):
        return ("--head-lr", self.cfg.head_lr) if key == "head" else ("--lr", self.cfg.lr)


def half_scale(ds, net):
    """A power of two s such that s * u0 stays inside float16's range for every training row:
    |u0_j| = |x0 . w0[:, j]| <= max |x0| * sum_i |w0_ij| over the inputs that are not labels (x0
    has those zeroed), with room for float32's rounding of the product. 1 when that bound fits."""
    x = ds.x_train
    lo, hi = net.label_offset, net.label_offset + net.num_classes
    columns = np.abs(np.delete(net.weights[0], np.s_[lo:hi], axis=0)).sum(axis=0, dtype=np.float64)
    bound = max(abs(float(x.max())), abs(float(x.min()))) * ds.scale * float(columns.max()) * 1.001
    if not np.isfinite(bound) or bound <= HALF_MAX:
        return 1.0
    return 2.0 ** -math.ceil(math.log2(bound / HALF_MAX))


def warm_up():
    """Compile (or load from Numba's cache) every kernel the trainer uses; returns seconds."""
    t0 = time.perf_counter()
    x8 = np.zeros((2, 3), np.uint8)
    x32 = np.zeros((2, 3), np.float32)
    idx = np.zeros(2, np.int64)
    for src in (x8, x32):
        batch.gather_scaled(src, idx, 1.0, np.zeros((2, 3), np.float32))
        batch.gather_shifted(src, idx, np.zeros(4), 1, (1, 3), 1.0, np.zeros((2, 3), np.float32))
    batch.overlay_labels(x32, idx, 0, 2, 1.0)
    norm.length_normalise(x32, x32)
    z, b, g = np.ones((2, 3), np.float32), np.zeros(3, np.float32), np.zeros(2, np.float32)
    ff_loss.ff_activate(z, b, np.zeros_like(z), g)
    ff_loss.ff_loss_grad(z, g, 1, 1.0, np.zeros(2, np.float32))
    ff_loss.label_goodness(z, z, g, b, np.zeros((2, 2), np.float32))
    overlay.overlay_pre(z, z, g, idx, np.zeros((2, 3), np.float32))
    overlay.overlay_grad(z.copy(), g, idx, 1.0, np.zeros((2, 3), np.float32), b.copy())
    ff_loss.hardest_wrong_label(np.zeros((2, 2), np.float32), idx, np.zeros(2, np.int64))
    ff_loss.random_wrong_label(idx, np.zeros(2), 2, np.zeros(2, np.int64))
    dense.local_grad(z, z, np.zeros((3, 3), np.float32), b)
    optim.warm_up()
    softmax.softmax_xent_grad(z, idx, g)
    return time.perf_counter() - t0
