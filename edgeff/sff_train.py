"""The conv FF trainer (Scalable Forward-Forward): every block learns from its own class-goodness
loss only, block by block on every batch (edgeff/layers/blocks.py lays the run out).

Per batch of B images, for each block k in turn:
    forward   its layers (kernels of each kind), its head o = conv1x1(y), class goodness
              g = mean(o**2) and the margin loss with dLoss/do in place (kernels/sff.py)
    update    backprop inside the block only: the head, then its layers in reverse (the
              first layer's input gradient is never made: the input is detached); the
              optimiser step on the block's parameters and its head's
    pass on   the block's output, layer-normalised, is block k+1's input
With feedback (--algo ffcl --feedback-steps K, edgeff/layers/feedback.py) K settling steps run
first: every block forward only, each block's pre-activation at step t > 0 taking block k + 1's
normalised output of step t - 1 through F_k. The step above is then the last settling step
(feedback added too), and dF_k, from the block's own dz and the constant fed-back input, is
stepped with the block's parameters: no gradient crosses a block or a step.
Every buffer is a view into one arena laid out by the memory planner; the loop allocates nothing.
"""

import time

import numpy as np

from .budget import layout_for_conv
from .config import TrainConfig
from .conv_models import conv_blocks
from .convnet import LN_EPS, ConvNet
from .data import Dataset
from .fit_loop import Optimizer, Param, PhasedTrainer
from .kernels import batch, blas, conv_threads, norm, optim, sff
from .layers import feedback
from .layers.scratch import Scratch

MARGIN = 1.0   # added to every wrong class's goodness in the loss (kernels/sff.py)


class ConvTrainer(PhasedTrainer):
    """Trains cfg's conv net on ds inside the arena of `plan` (made here when not given).

    init: a ConvNet of the same blocks (--init) whose layers' weights the net starts from; its
    class heads are not taken (they belong to its data set's classes). The first cfg.freeze
    blocks keep those layers: they only run forward, and only their heads learn."""

    def __init__(self, cfg, ds, progress=None, plan=None, init=None):
        self._lay_out(cfg, ds, progress, layout_for_conv(cfg, ds), plan)
        v, params = self.arena.view, self.layout.checkpoint_arrays(0)
        self.net = ConvNet.create(self.layout.in_shape, conv_blocks(cfg.model, cfg.width_mult, cfg.hybrid),
                                  ds.num_classes, self.rng, alloc=lambda name, shape: v(params[name]),
                                  feedback_steps=cfg.feedback_steps)
        if init is not None:
            if init.blocks != self.net.blocks or init.in_shape != self.net.in_shape:
                raise ValueError("--init's net has other blocks or input shape than this run's")
            for mine, theirs in zip(self.net.params, init.params):
                for p_mine, p_theirs in zip(mine[:-1], theirs[:-1]):      # every layer but the head
                    for name, a in p_mine.items():
                        a[...] = p_theirs[name]
        self.order = np.arange(len(ds.y_train), dtype=np.int64)
        self.y_train = ds.y_train.astype(np.int64)
        self.idx, self.labels, self.x = v(self.layout.idx), v(self.layout.y), v(self.layout.x)
        self.shift_u = v(self.layout.shift_u)

    def fit(self, *args, **kwargs):
        """PhasedTrainer.fit, every conv spreading its batch over BLAS's threads while BLAS keeps to one
        (kernels/conv_threads.spread_over): the same thread count gives the same sums, bit for bit."""
        with conv_threads.spread_over(blas.blas_threads() or 1):
            return super().fit(*args, **kwargs)

    # ---- what PhasedTrainer asks of a trainer ----

    def phases(self):
        return [ph.layers for ph in self.layout.phases]

    def _bind(self, p):
        """Views of every block's buffers; fresh optimiser state."""
        v = self.arena.view
        self.phase, self.params, self.opts, self.views, self.feedback = p, {}, {}, [], []
        for k, block in enumerate(self.layout.blocks):
            layers = []
            for lay, p_arrays in zip(block.layers, self.net.params[k]):
                state = [{n: v(b) for n, b in slot.items()} for slot in lay.opt]
                for slot in state:
                    for a in slot.values():
                        a[...] = 0.0
                grads = {n: v(b) for n, b in lay.grads.items()}
                layers.append((lay, p_arrays, grads, v(lay.y), v(lay.dy) if lay.dy else None))
                if k >= self.cfg.freeze or lay is block.layers[-1]:     # a frozen block's head still learns
                    self.params[k] = self.params.get(k, ()) + tuple(
                        Param(p_arrays[n], grads[n], state[0][n], state[1][n] if len(state) > 1 else None)
                        for n in p_arrays)
            self.opts[k] = Optimizer(self.cfg.optimizer, self.cfg.lr, self.cfg.weight_decay)
            self.views.append((layers, v(block.good), v(block.loss), v(block.out),
                               Scratch(*(v(b) if b else None for b in block.scratch))))
            self.feedback.append(self._bind_feedback(k, block.feedback))

    def _bind_feedback(self, k, fb):
        """(link, F_k, its gradient, the product's room) of block k's feedback, None without; F_k joins
        the block's parameters, its optimiser state zeroed."""
        if fb is None:
            return None
        v = self.arena.view
        w, grad, state = v(fb.w), v(fb.grad), [v(b) for b in fb.opt]
        for a in state:
            a[...] = 0.0
        self.params[k] += (Param(w, grad, state[0], state[1] if len(state) > 1 else None),)
        return fb.link, w, grad, v(fb.product)

    def _phase_label(self, blocks):
        return ""

    def _part(self, key):
        return f"block {key + 1}/{len(self.layout.blocks)}"

    def _lr_option(self, key):
        return "--lr", self.cfg.lr

    # ---- one batch ----

    def _step(self, b, blocks, totals):
        """Stage images idx[:b], then train every block on them in order."""
        ds, hook, shift = self.ds, self.step_hook, self.cfg.shift
        y = self.labels[:b]
        np.take(self.y_train, self.idx[:b], out=y, mode="clip")
        if shift:
            self.rng.random(out=self.shift_u[:2 * b])
        batch.gather_images(ds.x_train, self.idx[:b], self.shift_u, shift, ds.scale, self.x[:b])
        for t in range(self.cfg.feedback_steps):     # the settling steps before the last: forward only
            x = self.x[:b]
            for k in blocks:
                norm.layer_norm(self._forward(k, x, t, []).reshape(b, -1), self.views[k][3][:b].reshape(b, -1), LN_EPS)
                x = self.views[k][3][:b]
        x = self.x[:b]
        for k in blocks:
            t0 = time.perf_counter() if hook else 0.0
            totals[k] += self._train_block(k, x, y)
            if hook:
                hook.layer_done(k, time.perf_counter() - t0)
            x = self.views[k][3][:b]

    def _train_block(self, k, x, y):
        """One step of block k on input x; leaves its layer-normalised output in the block's out
        buffer. Returns the mean loss."""
        loss = self.block_gradients(k, x, y)
        self.opts[k].step(self.params[k])
        return loss

    def block_gradients(self, k, x, y):
        """Forward, loss and backprop inside block k on input x (b rows) with labels y: every
        parameter's gradient in its grads view. Returns the mean loss."""
        b = x.shape[0]
        layers, good, loss, out, scratch = self.views[k]
        good, loss, out = good[:b], loss[:b], out[:b]
        inputs = []
        feats = self._forward(k, x, self.cfg.feedback_steps, inputs)    # the block's output, the head's input
        inputs.append(feats)
        head, p, _, yv, _ = layers[-1]
        head.kind.forward(head.spec, p, feats, yv[:b], scratch)
        o = yv[:b].reshape(b, self.net.num_classes, -1)     # the head's output
        norm.layer_norm(feats.reshape(b, -1), out.reshape(b, -1), LN_EPS)
        sff.class_goodness(o, good)
        sff.margin_loss_grad(o, y, MARGIN, good, loss)
        first = len(layers) - 1 if k < self.cfg.freeze else 0      # a frozen block: the head only
        for j in range(len(layers) - 1, first - 1, -1):
            lay, p, grads, yv, dyv = layers[j]
            dx = layers[j - 1][4][:b] if j > first else None
            lay.kind.backward(lay.spec, p, inputs[j], yv[:b], dyv[:b], dx, grads, scratch)
        if self.cfg.feedback_steps and self.feedback[k]:     # dF_k from dz of the pre-activation (layer 0's dy)
            link, _, grad, product = self.feedback[k]
            feedback.weight_grad(link, self.views[k + 1][3][:b], layers[0][4][:b], product[:b], grad, scratch.workspace)
        return loss.mean()

    def _forward(self, k, x, t, inputs):
        """Block k's layers but its head on x (b rows) at settling step t, each layer's input appended
        to inputs; at t > 0 its pre-activation takes block k + 1's output fed back. Returns the last output."""
        b, layers, scratch, h = x.shape[0], self.views[k][0], self.views[k][4], x
        for j, (lay, p, _, yv, _) in enumerate(layers[:-1]):
            inputs.append(h)
            lay.kind.forward(lay.spec, p, h, yv[:b], scratch)
            h = yv[:b]
            if j == 0 and t and self.feedback[k]:
                link, w, _, product = self.feedback[k]
                feedback.add(link, w, self.views[k + 1][3][:b], product[:b], h, scratch.workspace)
        return h


def warm_up_conv():
    """Compile (or load from Numba's cache) every kernel the conv trainer and ConvNet use: tiny runs
    of nets holding every layer kind, in every mode that calls another kernel; returns seconds."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    for model, hybrid, h, c in (("cnn:2p-2-2k1", "none", 4, 2), ("cnn:2p-2-2k1", "net", 4, 2),   # net: input grads
                                ("cnn:2/r4s2-4", "block", 4, 2), ("mobilenetv3-small", "block", 16, 1),
                                ("cnn:2p-2-2k1", "feedback", 4, 2)):
        x = rng.integers(0, 255, (2, h * h * c), dtype=np.uint8)
        y = np.arange(2, dtype=np.int32)
        ds = Dataset("warm-up", x, y, x, y, 2, 1 / 255, (h, h, c), ("0", "1"), "")
        steps = dict(algo="ffcl", feedback_steps=1) if hybrid == "feedback" else {}
        cfg = TrainConfig(model=model, hybrid="none" if steps else hybrid, width_mult=0.05, classifier="last",
                          head_epochs=0, epochs=1, batch_size=2, shift=1, **steps).validate()
        trainer = ConvTrainer(cfg, ds)
        trainer.fit()
        for rows, scale in ((ds.x_test, ds.scale), (ds.x_test.astype(np.float32), 1.0)):   # data set, edgeff infer
            trainer.net.errors(rows, ds.y_test, scale)
    optim.warm_up()      # the nets above are too small for the parallel step a full-size net takes
    return time.perf_counter() - t0
