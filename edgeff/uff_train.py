"""Unsupervised Forward-Forward (--algo uff, Seo et al. 2024, arXiv 2404.14664): each layer is
an ordinary unsupervised learner (--learner) trained with an ordinary loss on its input, the
frozen layers' codes of the data (kernels/uff_loss.py has the losses):

    ae           the layer encodes, c = relu(x @ w + b); a linear decoder r = c @ v + d is
                 trained with it on L_mse(r, x)
    dae          the same from the input with masking noise: each element is zeroed with
                 probability --noise-rate (uniforms from the run's seeded generator)
    contrastive  two views of each image (each moved by a random whole-pixel shift of up to
                 VIEW_SHIFT pixels, then masking noise at --noise-rate) pass the frozen layers;
                 a linear projection head p = c @ q + e is trained with the layer on NT-Xent
                 at --temperature

No gradient crosses a layer: its input is the previous layers' output, held fixed. The
encoder is ff-unsup's (edgeff/unsup_model.py: every row and code length-normalised before
the next layer), so the probe, its phase, the export and eval are ff-unsup's; the decoders
and projection heads are planned in the arena while their layer learns and never saved.
Per batch of B rows in a phase:
    stage    x <- the rows (contrastive: both views, 2B rows), length-normalised
    layer k  learning: code, decoder or head forward, loss gradient, both updated;
             below the last learning layer: z = x @ w, the code, normalised (ff_activate)
Every buffer is a view into one arena (edgeff/uff_layout.py); the loop allocates nothing.
"""

import time

import numpy as np

from .errors import UsageError
from .fit_loop import Optimizer
from .kernels import batch, dense, ff_loss, norm, uff_loss
from .memory import plan_greedy
from .model import EPS, FFNet
from .uff_layout import uff_layout
from .unsup_train import UnsupTrainer

VIEW_SHIFT = 2     # contrastive: the views' largest shift, in pixels


def check_data(cfg, ds):
    """UsageError unless ds suits cfg's learner: rows of more features than classes (the
    probe's net takes no label inputs); contrastive: 2-D images, which its views shift."""
    if cfg.shift:
        raise UsageError("--shift moves the images of supervised FF; --algo uff does not use it: leave it out")
    if ds.x_train.shape[1] <= ds.num_classes:
        raise UsageError(f"--algo uff needs rows of more features than classes; {ds.name} has "
                         f"{ds.x_train.shape[1]} features and {ds.num_classes} classes")
    if cfg.learner == "contrastive" and (ds.image_shape is None or len(ds.image_shape) != 2):
        raise UsageError(f"--learner contrastive makes its views by shifting 2-D images; {ds.name} holds "
                         f"{'flat rows' if ds.image_shape is None else ds.image_shape}: use --learner ae or dae")


def layout_of(cfg, ds, batch_size=None):
    return uff_layout(list(cfg.sizes[1:]), cfg.sizes[0], ds.num_classes, batch_size or cfg.batch_size,
                      cfg.schedule, cfg.optimizer, cfg.learner)


def planner(cfg, ds):
    """plan_of(batch size) -> the memory plan of cfg's uff run on ds."""
    return lambda b: plan_greedy(layout_of(cfg, ds, b).buffers)


class UffTrainer(UnsupTrainer):
    """Trains cfg's encoder layer by layer with cfg.learner, then ff-unsup's probe."""

    layout_of = staticmethod(layout_of)

    def _bind_phase(self, p):
        v, ph = self.arena.view, self.layout.phases[p]
        self.idx, self.x = v(ph.idx), v(ph.x)
        self.shift_u, self.noise = (v(ph.shift_u), v(ph.noise)) if ph.shift_u else (None, None)
        self.zs, self.hs = [v(a.z) for a in ph.acts], [v(a.h) for a in ph.acts]
        self.good, self.loss = v(ph.good), v(ph.loss)
        self.work = {}
        for k, learner in ph.training.items():
            aux_w, aux_b = v(learner.aux.w), v(learner.aux.b)
            FFNet.create(aux_w.shape, 0, 1.0, False, self.rng, alloc=lambda _: (aux_w, aux_b))  # as torch.nn.Linear
            self.params[k] = (self._bind_params(learner.training, self.net.weights[k], self.net.biases[k]) +
                              self._bind_params(learner.aux_training, aux_w, aux_b))
            self.opts[k] = Optimizer(self.cfg.optimizer, self.cfg.lr, self.cfg.weight_decay)
            self.work[k] = {name: v(buf) for name, buf in learner.scratch().items()}

    # ---- one batch ----

    def _stage(self, b):
        """x[:rows] <- the batch's rows (contrastive: view 1, then view 2), length-normalised; returns rows."""
        ds = self.ds
        if self.shift_u is None:
            batch.gather_scaled(ds.x_train, self.idx[:b], ds.scale, self.x[:b])
            rows = b
        else:
            rows = 2 * b
            self.idx[b:rows] = self.idx[:b]
            self.rng.random(out=self.shift_u[:2 * rows])
            batch.gather_shifted(ds.x_train, self.idx[:rows], self.shift_u[:2 * rows], VIEW_SHIFT, ds.image_shape,
                                 ds.scale, self.x[:rows])
            self.rng.random(out=self.noise[:rows], dtype=np.float32)
            uff_loss.mask_noise(self.x[:rows], self.noise[:rows], self.cfg.noise_rate, self.x[:rows])
        norm.length_normalise(self.x[:rows], self.x[:rows], EPS)
        return rows

    def _ff_batch(self, b, keys, totals):
        hook, last = self.step_hook, keys[-1]
        rows = self._stage(b)
        x = self.x[:rows]
        for k in range(last + 1):
            t0 = time.perf_counter() if hook else 0.0
            if k in self.params:
                learn = self._contrast if self.shift_u is not None else self._reconstruct
                totals[keys.index(k)] += learn(k, x, b)
            if k < last:                      # the next layer's input: this one's code of x
                self._encode(k, x, rows)
            if hook:
                hook.layer_done(k, time.perf_counter() - t0)
            x = self.hs[k][:rows]

    def _encode(self, k, x, rows):
        """zs[k] <- the code relu(x @ w + b) of rows x; hs[k] <- it length-normalised."""
        z = self.zs[k][:rows]
        np.matmul(x, self.net.weights[k], out=z)
        ff_loss.ff_activate(z, self.net.biases[k], self.hs[k][:rows], self.good[:rows], False, EPS)
        return z

    def _reconstruct(self, k, x, b):
        """One ae/dae step of layer k on its input rows x (B); returns the batch's L_mse."""
        work, (*_, pv, pd) = self.work[k], self.params[k]
        src = x
        if "noise" in work:                      # dae: encode the corrupted input
            self.rng.random(out=work["noise"][:b], dtype=np.float32)
            src = uff_loss.mask_noise(x, work["noise"][:b], self.cfg.noise_rate, work["inp"][:b])
        c = self._encode(k, src, b)
        r = work["out"][:b]
        np.matmul(c, pv.w, out=r)
        dense.add_bias(r, pd.w)
        uff_loss.mse_grad(r, x, self.loss[:b])
        return self._update(k, src, c, r, b)

    def _contrast(self, k, x, b):
        """One contrastive step of layer k on the 2B rows x (two views of B); returns the batch's NT-Xent."""
        work, rows, (*_, pq, pe) = self.work[k], 2 * b, self.params[k]
        c = self._encode(k, x, rows)
        p, u, du = work["out"][:rows], work["unit"][:rows], work["dunit"][:rows]
        sim = work["sim"][:rows * rows].reshape(rows, rows)
        np.matmul(c, pq.w, out=p)
        dense.add_bias(p, pe.w)
        norm.length_normalise(p, u, EPS)
        np.matmul(u, u.T, out=sim)
        uff_loss.nt_xent_grad(sim, self.cfg.temperature, self.loss[:rows])
        np.matmul(sim, u, out=du)
        uff_loss.unit_rows_backward(p, du, EPS)
        return self._update(k, x, c, du, rows)

    def _update(self, k, src, c, d_out, rows):
        """Gradients of layer k and its decoder or head from d_out (dL/d their output) on code c of
        src; one optimiser step of both; returns the batch's loss."""
        pw, pb, pa, pab = self.params[k]
        dense.local_grad(c, d_out, pa.g, pab.g)
        dc = self.work[k]["dc"][:rows]
        np.matmul(d_out, pa.w.T, out=dc)
        uff_loss.relu_backward(dc, c)
        dense.local_grad(src, dc, pw.g, pb.g)
        self.opts[k].step(self.params[k])
        return self.loss[:rows].mean()


def warm_up_uff():
    """Compile (or load from Numba's cache) the kernels UFF adds; returns seconds."""
    t0 = time.perf_counter()
    a, m = np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32)
    uff_loss.mask_noise(a, m, 0.5, m)
    uff_loss.mse_grad(a.copy(), a, np.zeros(2, np.float32))
    uff_loss.relu_backward(a.copy(), a)
    uff_loss.nt_xent_grad(np.eye(2, dtype=np.float32), 0.5, np.zeros(2, np.float32))
    uff_loss.unit_rows_backward(a, a.copy(), EPS)
    dense.add_bias(a, a[0])
    norm.standardise(a, a[0], a[1])        # the probe's features
    return time.perf_counter() - t0
