"""The FF trainer: each layer learns from its own input and output only.

Per batch of B examples the staged input holds 2B rows: B positives (true label
overlaid) then B negatives (a wrong label overlaid). A layer's step is
    z = x @ w                      (BLAS)
    h = relu(z + b), goodness      (ff_activate, also writes h/|h| for the next layer)
    dz = dLoss/dz                  (ff_loss_grad, in place over h)
    gw, gb = x.T @ dz, sum(dz)     (local_grad)
    w, b <- optimiser step         (adam / sgd)
All buffers are allocated once before the first batch.
"""

import time
from dataclasses import dataclass

import numpy as np

from .kernels import batch, dense, ff_loss, norm, optim, softmax
from .model import EPS, FFNet


def _zeros(*shape):
    return np.zeros(shape, np.float32)


@dataclass
class _Param:
    """A parameter with its gradient and optimiser state."""
    w: np.ndarray
    g: np.ndarray = None
    m: np.ndarray = None
    v: np.ndarray = None

    def __post_init__(self):
        self.g, self.m, self.v = (np.zeros_like(self.w) for _ in range(3))


@dataclass
class _Optimizer:
    kind: str
    lr: float
    weight_decay: float
    t: int = 0
    scale: float = 1.0   # learning-rate multiplier set by the schedule

    def step(self, params):
        self.t += 1
        lr = self.lr * self.scale
        for p in params:
            if self.kind == "adam":
                optim.adam_step(p.w, p.g, p.m, p.v, self.t, lr, weight_decay=self.weight_decay)
            else:
                optim.sgd_momentum_step(p.w, p.g, p.m, lr, 0.9, self.weight_decay)


def lr_scale(epoch, epochs, decay):
    """Full rate for the first half of training, then linearly down to 2/epochs (Hinton's schedule)."""
    return min(1.0, 2.0 * (1.0 - epoch / epochs)) if decay else 1.0


class Trainer:
    def __init__(self, cfg, ds, progress=None):
        self.cfg, self.ds = cfg, ds
        self.progress = progress or (lambda total, desc: None)
        self.rng = np.random.default_rng(cfg.seed)
        self.net = FFNet.create(cfg.sizes, ds.num_classes, cfg.label_value, cfg.goodness == "mean", self.rng,
                                 image=ds.image_shape is not None)
        net, bsz = self.net, cfg.batch_size
        rows = 2 * bsz
        self.xin = _zeros(rows, net.in_width)           # staged, normalised input rows
        self.zs = [_zeros(rows, w) for w in net.widths]  # activities, then dLoss/dz
        self.hs = [_zeros(rows, w) for w in net.widths]  # normalised activities (next input)
        self.good = _zeros(rows)
        self.loss = _zeros(rows)
        self.labels = np.zeros(rows, np.int64)
        self.idx = np.zeros(bsz, np.int64)
        self.params = [(_Param(w), _Param(b)) for w, b in zip(net.weights, net.biases)]
        self.opts = [_Optimizer(cfg.optimizer, cfg.lr, cfg.weight_decay) for _ in net.weights]
        # hard negatives: first-layer goodness of every label overlay, from one matmul
        self.z0 = _zeros(bsz, net.widths[0])
        self.inv = _zeros(bsz)
        self.label_scores = _zeros(bsz, ds.num_classes)
        self.wl = _zeros(ds.num_classes, net.widths[0])

    # ---- one batch ----

    def _stage(self, idx):
        """xin[:2b] <- normalised positives then negatives for data rows idx."""
        net, ds, b = self.net, self.ds, len(idx)
        y = self.labels[:b]
        y[:] = ds.y_train[idx]
        neg = self.labels[b:2 * b]
        if self.cfg.negatives == "hard":
            self._hard_negatives(idx, y, neg)
        else:
            neg[:] = (y + self.rng.integers(1, ds.num_classes, b)) % ds.num_classes
        net.stage(ds.x_train, np.concatenate([idx, idx]), ds.scale, self.labels[:2 * b], self.xin[:2 * b])

    def _hard_negatives(self, idx, y, out):
        """out <- the wrong label whose overlay the first layer currently finds most positive.

        Exact and cheap: the overlay changes only the C label inputs, and the
        row norm is the same for every one-hot label, so z_c = inv * (x0 @ w + value * w[label c])."""
        net, b = self.net, len(idx)
        x0 = self.xin[:b]
        batch.gather_scaled(self.ds.x_train, idx, self.ds.scale, x0)
        x0[:, net.label_offset:net.label_offset + net.num_classes] = 0.0
        np.einsum("ij,ij->i", x0, x0, out=self.inv[:b])
        self.inv[:b] = 1.0 / (np.sqrt(self.inv[:b] + net.label_value ** 2) + EPS)
        w = net.weights[0]
        np.matmul(x0, w, out=self.z0[:b])
        np.multiply(w[net.label_offset:net.label_offset + net.num_classes], net.label_value, out=self.wl)
        ff_loss.label_goodness(self.z0[:b], self.wl, self.inv[:b], net.biases[0], self.label_scores[:b],
                               net.mean_goodness)
        ff_loss.hardest_wrong_label(self.label_scores[:b], y, out)

    def _train_layer(self, k, x, rows, n_pos):
        """One FF step of layer k on normalised input rows x (first n_pos positive)."""
        net, z, h = self.net, self.zs[k][:rows], self.hs[k][:rows]
        np.matmul(x, net.weights[k], out=z)
        ff_loss.ff_activate(z, net.biases[k], h, self.good[:rows], net.mean_goodness, EPS)
        ff_loss.ff_loss_grad(z, self.good[:rows], n_pos, self.cfg.threshold, self.loss[:rows], net.mean_goodness)
        pw, pb = self.params[k]
        dense.local_grad(x, z, pw.g, pb.g)
        self.opts[k].step(self.params[k])
        return float(self.loss[:rows].mean())

    def _batch(self, idx, layers):
        """Stage one batch and train `layers` (frozen layers below them just forward)."""
        b = len(idx)
        rows = 2 * b
        self._stage(idx)
        x = self.xin[:rows]
        losses = []
        for k in range(layers[-1] + 1):
            if k in layers:
                losses.append(self._train_layer(k, x, rows, b))
            else:
                self.net.forward(x, [z[:rows] for z in self.zs], [h[:rows] for h in self.hs], self.good[:rows],
                                 first=k, last=k + 1)
            x = self.hs[k][:rows]
        return losses

    def _epoch(self, layers, epoch, epochs, desc):
        n, bsz = len(self.ds.y_train), self.cfg.batch_size
        for k in layers:
            self.opts[k].scale = lr_scale(epoch, epochs, self.cfg.lr_decay)
        order = self.rng.permutation(n)
        bar = self.progress(n, desc)
        total = np.zeros(len(layers))
        count = 0
        for start in range(0, n, bsz):
            idx = self.idx[:min(bsz, n - start)]
            idx[:] = order[start:start + bsz]
            total += self._batch(idx, layers)
            count += 1
            if bar:
                bar.update(len(idx), loss=float(total.mean() / count))
        if bar:
            bar.close()
        return (total / count).tolist()

    def fit(self):
        cfg, n_layers = self.cfg, len(self.net.weights)
        history = []
        if cfg.schedule == "simultaneous":
            for e in range(cfg.epochs):
                history.append(self._epoch(list(range(n_layers)), e, cfg.epochs, f"epoch {e + 1}/{cfg.epochs}"))
        else:
            for k in range(n_layers):
                for e in range(cfg.epochs):
                    history.append(self._epoch([k], e, cfg.epochs, f"layer {k + 1}/{n_layers} epoch {e + 1}/{cfg.epochs}"))
        if cfg.head_epochs:
            self.fit_head()
        return history

    def fit_head(self):
        """Train the one-pass linear softmax head on the hidden layers' normalised activities
        (neutral label in); no gradient reaches the FF layers."""
        cfg, net, ds = self.cfg, self.net, self.ds
        bsz, n, c = cfg.batch_size, len(ds.y_train), ds.num_classes
        feat_dim = sum(net.widths)
        net.head_w, net.head_b = _zeros(feat_dim, c), _zeros(c)
        head = (_Param(net.head_w), _Param(net.head_b))
        opt = _Optimizer("adam", cfg.head_lr, 0.0)
        feats, logits, y = _zeros(bsz, feat_dim), _zeros(bsz, c), np.zeros(bsz, np.int64)
        for e in range(cfg.head_epochs):
            opt.scale = lr_scale(e, cfg.head_epochs, cfg.lr_decay)
            order = self.rng.permutation(n)
            bar = self.progress(n, f"head epoch {e + 1}/{cfg.head_epochs}")
            for start in range(0, n, bsz):
                b = min(bsz, n - start)
                idx = self.idx[:b]
                idx[:] = order[start:start + bsz]
                y[:b] = ds.y_train[idx]
                net.features(ds.x_train, ds.scale, idx, self.xin, self.zs, self.hs, self.good, feats)
                np.matmul(feats[:b], net.head_w, out=logits[:b])
                logits[:b] += net.head_b
                softmax.softmax_xent_grad(logits[:b], y[:b], self.loss[:b])
                dense.local_grad(feats[:b], logits[:b], head[0].g, head[1].g)
                opt.step(head)
                if bar:
                    bar.update(b, loss=float(self.loss[:b].mean()))
            if bar:
                bar.close()


def warm_up():
    """Compile (or load from Numba's cache) every kernel the trainer uses; returns seconds."""
    t0 = time.perf_counter()
    x8 = np.zeros((2, 3), np.uint8)
    x32 = np.zeros((2, 3), np.float32)
    idx = np.zeros(2, np.int64)
    for src in (x8, x32):
        batch.gather_scaled(src, idx, 1.0, np.zeros((2, 3), np.float32))
    batch.overlay_labels(x32, idx, 0, 2, 1.0)
    norm.length_normalise(x32, x32)
    z, b, g = np.ones((2, 3), np.float32), np.zeros(3, np.float32), np.zeros(2, np.float32)
    ff_loss.ff_activate(z, b, np.zeros_like(z), g)
    ff_loss.ff_loss_grad(z, g, 1, 1.0, np.zeros(2, np.float32))
    ff_loss.label_goodness(z, z, g, b, np.zeros((2, 2), np.float32))
    ff_loss.hardest_wrong_label(np.zeros((2, 2), np.float32), idx, np.zeros(2, np.int64))
    dense.local_grad(z, z, np.zeros((3, 3), np.float32), b)
    for n in (3, optim.PARALLEL_FROM):  # serial and parallel variants
        p = np.zeros(n, np.float32)
        optim.adam_step(p, p, p.copy(), p.copy(), 1, 0.0)
        optim.sgd_momentum_step(p, p, p.copy(), 0.0)
    softmax.softmax_xent_grad(z, idx, g)
    return time.perf_counter() - t0
