"""The training loop every trainer shares: phases of epochs of batches, learning-rate
schedule, progress, divergence checks, checkpoints and bitwise resume, the step hook.

A trainer (edgeff/train.py for dense FF, edgeff/sff_train.py for conv blocks) subclasses
PhasedTrainer and supplies what differs:
    phases()               the keys (layers, blocks or "head") trained in each phase
    _bind(p)               point the working buffers at phase p's views; set self.params
                           {key: (Param, ...)} and self.opts {key: Optimizer}
    _phase_epochs(keys)    epochs of a phase (default: head_epochs for ["head"], else epochs)
    _phase_label(keys)     what the progress bar calls it ("layer 1/2 ", "")
    _step(b, keys, totals) train one batch of the rows in self.idx[:b]; totals[i] += keys[i]'s loss
    _part(key)             a key's name in a message; _lr_option(key): (flag, value) of its rate
and these attributes: cfg, ds, rng, order, idx, layout, arena, progress, step_hook
(_lay_out sets the first six but order and idx).
After fit(), phase_seconds[p] holds the seconds phase p's batches took in this process.
"""

import hashlib
import math
import time
from dataclasses import dataclass

import numpy as np

from . import checkpoint
from .errors import ModelError, TrainingDiverged
from .kernels import optim
from .memory import Arena, plan_greedy


@dataclass
class Param:
    """A parameter with its gradient and optimiser state (views into the arena)."""
    w: np.ndarray
    g: np.ndarray
    m: np.ndarray
    v: np.ndarray | None


@dataclass
class Optimizer:
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


class PhasedTrainer:
    """The shared loop (module docstring); subclasses supply the phase and batch steps.

    step_hook: None, or an object told of each step while fit() runs, for measuring it (edgeff/profile.py):
        step_hook.batch_begins(phase, step)   before each batch (step: batches so far in this fit)
        step_hook.layer_done(k, seconds)      after each layer's or block's forward + update
        step_hook.batch_done(seconds)         after each batch
    Unset it costs one test per batch and layer; set, it is passed ints and floats only, never an array."""

    step_hook = None

    def _lay_out(self, cfg, ds, progress, layout, plan):
        """Set cfg, ds, progress (a do-nothing reporter when None), the seeded rng, the layout and
        the arena of `plan`: the caller's memory plan of this layout (with, maybe, buffers of the
        caller's own: a learn session's stream, edgeff/stream.py), made here when None."""
        self.cfg, self.ds = cfg, ds
        self.progress = progress or (lambda total, desc: None)
        self.rng = np.random.default_rng(cfg.seed)
        self.layout = layout
        self.plan = plan or plan_greedy(layout.buffers)
        if not set(layout.buffers) <= set(self.plan.buffers):
            raise ValueError("the plan given is not the plan of this config and data set")
        self.arena = Arena(self.plan)

    def _phase_epochs(self, keys):
        return self.cfg.head_epochs if keys == ["head"] else self.cfg.epochs

    def fit(self, checkpoint=None, every=0, resume=None, run_meta=None, steps_per_phase=None):
        """Train every phase; with `every`, write a checkpoint to `checkpoint` each `every` steps
        (run_meta: what else the caller needs back on resume). `resume` is (arrays, meta)
        from checkpoint.load: continue exactly where it stopped. steps_per_phase: end each phase
        after that many batches, or with its epochs if sooner (a short measured run). Raises
        TrainingDiverged as soon as a loss, or at the latest by the end of an epoch a weight, is NaN or Inf."""
        with np.errstate(all="ignore"):   # a NaN or Inf is caught and named below, not warned about
            return self._fit(checkpoint, every, resume, run_meta, steps_per_phase or math.inf)

    def _fit(self, checkpoint, every, resume, run_meta, steps_per_phase):
        self.run_meta = run_meta or {}
        cfg, n, bsz, hook = self.cfg, len(self.ds.y_train), self.cfg.batch_size, self.step_hook
        batches = -(-n // bsz)
        phases, history, steps = self.phases(), [], 0
        start = (0, 0, 0)
        self.phase_seconds = [0.0] * len(phases)
        if resume:
            start, history, steps = tuple(resume[1]["position"]), resume[1]["history"], resume[1]["steps"]
        for p in range(start[0], len(phases)):
            layers = phases[p]
            phase_start = time.perf_counter()
            self._bind(p)
            epochs = self._phase_epochs(layers)
            first_epoch = start[1] if p == start[0] else 0
            phase_steps = 0
            for e in range(first_epoch, epochs):
                if phase_steps == steps_per_phase:
                    break
                for opt in self.opts.values():
                    opt.scale = lr_scale(e, epochs, cfg.lr_decay)
                totals, count = np.zeros(len(layers)), 0
                first_batch = 0
                if resume and (p, e) == start[:2]:
                    first_batch, totals, count = self._restore(*resume)
                else:
                    self.rng.shuffle(self.order)
                where = self._phase_label(layers)
                when = f"epoch {e + 1}/{epochs}"
                stop = min(batches, first_batch + steps_per_phase - phase_steps)
                bar = self.progress(min(n, stop * bsz), f"{where}{when}")
                if bar and first_batch:
                    bar.update(min(first_batch * bsz, n))
                for i in range(first_batch, stop):
                    b = min(bsz, n - i * bsz)
                    if hook:
                        hook.batch_begins(p, steps)
                        t0 = time.perf_counter()
                    self.idx[:b] = self.order[i * bsz:i * bsz + b]
                    self._step(b, layers, totals)
                    if hook:
                        hook.batch_done(time.perf_counter() - t0)
                    if not math.isfinite(totals.sum()):     # one scalar per batch: NaN and Inf stick in a sum
                        bad = int(np.argmin(np.isfinite(totals)))
                        value = "NaN" if math.isnan(totals[bad]) else "Inf"
                        raise self._diverged(bar, f"{self._part(layers[bad])}'s loss became {value} in {when} "
                                                  f"(batch {i + 1})", layers[bad])
                    count += 1
                    steps += 1
                    phase_steps += 1
                    if bar:
                        bar.update(b, loss=float(totals.mean() / count))
                    if every and steps % every == 0:
                        self._check_weights(bar, when)
                        self._save(checkpoint, (p, e, i + 1), steps, history, totals, count)
                self._check_weights(bar, when)
                if bar:
                    bar.close()
                history.append((totals / count).tolist())
            self.phase_seconds[p] = time.perf_counter() - phase_start
        return history

    # ---- divergence ----

    def _check_weights(self, bar, when):
        """Raise TrainingDiverged if a weight or bias being trained is NaN or Inf: an update can
        make one without a loss showing it yet. min and max carry any NaN or Inf, with no temporary."""
        for key, params in self.params.items():
            if not all(math.isfinite(p.w.min()) and math.isfinite(p.w.max()) for p in params):
                raise self._diverged(bar, f"{self._part(key)}'s weights became NaN or Inf in {when}", key)

    def _diverged(self, bar, what, key):
        if bar:
            bar.close()          # end the progress line: the error gets a line of its own
        flag, lr = self._lr_option(key)
        return TrainingDiverged(f"training diverged: {what}; no model saved; try a smaller {flag} (now {lr:g})")

    # ---- checkpoints ----

    def _state_arrays(self):
        """The arrays a checkpoint holds: parameters, optimiser state in use (the views of the
        bound phase's buffers, as layout.checkpoint_arrays names them), data order."""
        arrays = {name: self.arena.view(buf) for name, buf in self.layout.checkpoint_arrays(self.phase).items()}
        arrays["order"] = self.order
        return arrays

    def _save(self, path, position, steps, history, totals, count):
        meta = dict(self.run_meta, config=self.cfg.__dict__, position=list(position), steps=steps, history=history,
                    epoch_count=count, opt_t={str(k): o.t for k, o in self.opts.items()},
                    rng=self.rng.bit_generator.state, data=self.data_fingerprint())
        checkpoint.save(path, dict(self._state_arrays(), epoch_totals=totals), meta)

    def data_fingerprint(self):
        y = np.ascontiguousarray(self.ds.y_train, np.int32)
        return dict(n_train=int(len(y)), features=int(self.ds.x_train.shape[1]), num_classes=int(self.ds.num_classes),
                    labels_sha256=hashlib.sha256(y.tobytes()).hexdigest())

    def _restore(self, arrays, meta):
        """Load a checkpoint's state into the bound views; returns (next batch, epoch totals, count)."""
        if meta["data"] != self.data_fingerprint():
            raise ModelError("the checkpoint was made on other training data (size, shape or labels differ); "
                             "resume with the same --dataset and --limit-train")
        for name, view in self._state_arrays().items():
            saved = arrays.get(name)
            if saved is None or saved.shape != view.shape or saved.dtype != view.dtype:
                got = "missing" if saved is None else f"{saved.dtype} {saved.shape}"
                raise ModelError(f"checkpoint does not fit this model: {name} is {got}, the model needs "
                                 f"{view.dtype} {view.shape}")
            view[...] = saved
        for k, t in meta["opt_t"].items():
            self.opts[k if k == "head" else int(k)].t = t
        self.rng.bit_generator.state = meta["rng"]
        return meta["position"][2], arrays["epoch_totals"].copy(), meta["epoch_count"]
