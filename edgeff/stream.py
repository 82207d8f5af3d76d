"""Learning from a stream: a dense supervised FF net updated a few rows at a time, in one arena
planned once (edgeff learn, edgeff/commands/learn.py).

An update trains on a window of rows: the new ones, then as many rows drawn from a bounded replay
buffer (each update mixes old and new); every FF layer takes one step on the window, then the linear
head does. The window, the replay buffer and what drawing from it needs are buffers of the memory
plan like the trainer's own. The FF layers and the head take turns every update, so no buffer may
share bytes with another: the plan places each after the last (memory.plan_linear).
"""

import dataclasses

import numpy as np

from .budget import fit_budget, layout_for
from .data import Dataset
from .errors import TrainingDiverged, UsageError
from .fields import array
from .memory import Buffer, plan_linear
from .model import FFNet
from .train import Trainer

POLICIES = ("reservoir", "balanced")


def learn_config(cfg, net, window):
    """The run's config as the stream trains it: every layer each update (simultaneous), the linear head
    too when the net has one, `window` rows a step, at a constant rate, no shifted images."""
    return dataclasses.replace(cfg, schedule="simultaneous", batch_size=window, epochs=1, in_turn=False, shift=0,
                               head_epochs=1 if net.head_w is not None else 0, lr_decay=False)


def stream_buffers(features, window, replay, end):
    """The stream's own buffers, live from the first step to the last (`end`): the window of rows an update
    trains on (new rows, then replayed ones) and the replay buffer with what drawing from it needs."""
    def buf(name, shape, dtype, kind):
        return Buffer(name, shape, dtype, 0, end, kind)
    out = [buf("stream/x", (window, features), "float32", "data"), buf("stream/y", (window,), "int64", "data")]
    if replay:
        out += [buf("replay/x", (replay, features), "float32", "replay"), buf("replay/y", (replay,), "int64", "replay"),
                buf("replay/draw", (window,), "float64", "replay"), buf("replay/picks", (window,), "int64", "replay")]
    return out


def plan_learning(cfg, in_width, num_classes, features, replay):
    """plan_of(batch size) -> the linear plan of the trainer's layout and the stream's buffers for updates of
    that many new rows (and as many replayed, with a replay buffer)."""
    def plan_of(b):
        layout = layout_for(cfg, in_width, num_classes, window_rows(b, replay))
        end = max(buf.last for buf in layout.buffers)
        return plan_linear(layout.buffers + stream_buffers(features, window_rows(b, replay), replay, end))
    return plan_of


def window_rows(batch_size, replay):
    return 2 * batch_size if replay else batch_size


def input_layout(net):
    """(features per row, image shape or None as the trainer lays labels out, input scale) of a loaded net."""
    info = net.input_info or {}
    image = info.get("image_shape") or (net.in_features,)
    return net.in_features, (tuple(image) if net.label_offset == 0 else None), float(info.get("scale", 1 / 255))


def plan_session(run_dir, net, cfg, batch_size, replay, budget, runtime, held):
    """(learn config, plan) of a learn session, or one UsageError line saying why it cannot learn (a conv,
    unsupervised or ffcl run; a budget too small for runtime + arena + held: a Dataset, the test set)."""
    if cfg.is_conv or cfg.algo != "ff" or not isinstance(net, FFNet):
        raise UsageError(f"{run_dir}: holds a {'conv' if cfg.is_conv else cfg.algo} run; edgeff learn continues "
                         "supervised dense FF runs (edgeff train --algo ff with a dense --model)")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be 1 or more, got {batch_size}")
    if replay < 0:
        raise UsageError(f"--replay must be 0 (none) or more rows, got {replay}")
    features, image_shape, _ = input_layout(net)
    lcfg = learn_config(cfg, net, window_rows(batch_size, replay))
    plan_of = plan_learning(lcfg, net.in_width, net.num_classes, features, replay)
    plan, _ = fit_budget(plan_of, batch_size, held, budget, runtime=runtime)
    return lcfg, plan


class Replay:
    """A bounded replay buffer (arena views x (N, D), y (N,)). reservoir: a uniform sample of every row offered
    so far. balanced: the classes as even as they can be: a row of a class held less than the most held one
    takes the place of a random row of that one; a row of the most held class replaces a random row of its
    own class as a reservoir would (so each class's rows are a uniform sample of that class)."""

    def __init__(self, x, y, draw, picks, policy, num_classes, rng):
        self.x, self.y, self.draw, self.picks, self.policy, self.rng = x, y, draw, picks, policy, rng
        self.counts = np.zeros(num_classes, np.int64)    # rows held per class
        self.seen = np.zeros(num_classes, np.int64)      # rows offered per class
        self.filled = 0

    def restore(self, filled, seen):
        self.filled = filled
        self.seen[...] = seen
        self.counts[...] = np.bincount(self.y[:filled], minlength=len(self.counts))

    def offer(self, row, label):
        """Keep row (scaled features) with its label, or not, by the policy."""
        self.seen[label] += 1
        if self.filled < len(self.y):
            slot = self.filled
            self.filled += 1
        else:
            slot = self._victim(label)
            if slot is None:
                return
            self.counts[self.y[slot]] -= 1
        self.x[slot] = row
        self.y[slot] = label
        self.counts[label] += 1

    def _victim(self, label):
        """The slot a row of class `label` replaces in a full buffer, or None: not kept."""
        if self.policy == "reservoir":
            slot = int(self.rng.integers(int(self.seen.sum())))
            return slot if slot < len(self.y) else None
        most = int(self.counts.argmax())
        if self.counts[label] >= self.counts[most]:       # label's class is the most held: a reservoir of it
            if int(self.rng.integers(int(self.seen[label]))) >= self.counts[label]:
                return None
            most = label
        slot = int(self.rng.integers(len(self.y)))
        while self.y[slot] != most:                         # a random row of that class: about C draws at most
            slot = int(self.rng.integers(len(self.y)))
        return slot

    def draw_into(self, x, y):
        """Fill x (k, D) and y (k,) with rows drawn uniformly (with replacement) from what is held."""
        k = len(y)
        u, picks = self.draw[:k], self.picks[:k]
        self.rng.random(out=u)
        u *= self.filled
        np.copyto(picks, u, casting="unsafe")                 # floor: 0..filled-1
        np.take(self.x, picks, axis=0, out=x, mode="clip")
        np.take(self.y, picks, out=y, mode="clip")


class StreamTrainer(Trainer):
    """The dense trainer of a learn session: its net starts from `start` (every weight, the head too), its
    data set is the window (the arena's stream/x and stream/y), and update(n) trains the window's first n
    rows: one step of every FF layer, then one of the linear head. Optimiser state lives for the session."""

    def __init__(self, cfg, plan, start):
        features, image_shape, _ = input_layout(start)
        rows = cfg.batch_size
        placeholder = Dataset("stream", np.zeros((rows, features), np.float32), np.zeros(rows, np.int32),
                              np.zeros((1, features), np.float32), np.zeros(1, np.int32), start.num_classes, 1.0,
                              image_shape, tuple((start.input_info or {}).get("label_names") or ()), "")
        super().__init__(cfg, placeholder, None, plan=plan)
        self.window_x, self.y_train = self.stream_view("stream/x"), self.stream_view("stream/y")
        self.ds = dataclasses.replace(placeholder, x_train=self.window_x)
        self.net.input_info = start.input_info
        self.net.copy_layers_from(start)
        self.layers = self.layout.phases[0].layers
        self._bind_phase(0)
        self.idx[:] = np.arange(len(self.idx))   # the window's rows, in order: an update trains rows 0..n-1
        self.ff = self._bound()
        self.head_part = None
        if self.layout.head:
            self._bind_head()
            self.net.head_w[...] = start.head_w
            self.net.head_b[...] = start.head_b
            self.idx[:] = np.arange(len(self.idx))
            self.head_part = self._bound()
        self.losses = np.zeros(len(self.layers) + 1)       # the last update's: every FF layer's, the head's
        self.loss_sum, self.loss_updates = np.zeros_like(self.losses), 0   # summed since the caller last reset them

    def stream_view(self, name):
        """The arena's view of the stream buffer called `name` (stream_buffers)."""
        return self.arena.view(next(b for b in self.plan.buffers if b.name == name))

    def _bound(self):
        return self.params, self.opts, self.idx, self.loss

    def _use(self, part):
        self.params, self.opts, self.idx, self.loss = part

    def update(self, n):
        """Train on window rows 0..n-1; TrainingDiverged if a loss became NaN or Inf."""
        losses = self.losses
        losses[...] = 0.0
        self._use(self.ff)
        self._batch(n, self.layers, losses)
        if self.head_part:
            self._use(self.head_part)
            self._head_batch(n, losses[len(self.layers):])
        self.loss_sum += losses
        self.loss_updates += 1
        if not np.isfinite(losses.sum()):
            raise TrainingDiverged("learning diverged: a loss became NaN or Inf; the last checkpoint and model are "
                                   f"kept; try a smaller --lr (now {self.cfg.lr:g})")

    def state_arrays(self):
        """{name: arena view} of everything a learn checkpoint holds: parameters and optimiser state."""
        out = self.layout.checkpoint_arrays(0)
        if self.layout.head:
            out.update(self.layout.checkpoint_arrays(len(self.layout.phases)))
        return {name: self.arena.view(buf) for name, buf in out.items()}

    def optimiser_steps(self):
        return {str(k): o.t for part in (self.ff, self.head_part) if part for k, o in part[1].items()}

    def restore(self, arrays, steps, path):
        """Parameters and optimiser state from a learn checkpoint's arrays, each checked (fields.array)."""
        for name, view in self.state_arrays().items():
            view[...] = array(path, arrays, name, view.dtype, view.shape)
        for part in (self.ff, self.head_part):
            for k, opt in (part[1].items() if part else ()):
                opt.t = int(steps.get(str(k), 0))


class Stream:
    """The streaming core edgeff learn and FFClassifier.partial_fit share: rows fed in batches of `batch`
    new rows, each mixed with as many drawn from the replay buffer (policy; none when the plan has no
    replay buffer), one StreamTrainer update per batch, the batch's rows offered to the buffer after it.
    after_update(n): called after each update of n new rows (a learn session's checkpoints and exports)."""

    def __init__(self, lcfg, plan, start, batch, policy="reservoir", after_update=None):
        self.trainer = StreamTrainer(lcfg, plan, start)
        self.batch, self.after_update = batch, after_update
        self.replay = None
        if any(b.name == "replay/x" for b in plan.buffers):
            views = (self.trainer.stream_view(f"replay/{n}") for n in ("x", "y", "draw", "picks"))
            self.replay = Replay(*views, policy, start.num_classes, self.trainer.rng)
        self.counts = dict(updates=0, samples=0, rejected=0, replayed=0)
        self.pending = 0

    def learn(self, rows, labels, start=0):
        """Learn rows[start:] (checked float32 rows, int64 labels) batch by batch; a last short batch is
        learned too, so a call ends with its last update."""
        wx, wy, b = self.trainer.window_x, self.trainer.y_train, self.batch
        i = start
        while i < len(rows):
            k = min(b - self.pending, len(rows) - i)
            wx[self.pending:self.pending + k] = rows[i:i + k]
            wy[self.pending:self.pending + k] = labels[i:i + k]
            self.pending += k
            i += k
            if self.pending == b or i == len(rows):
                self._update()

    def _update(self):
        n, r = self.pending, 0
        wx, wy = self.trainer.window_x, self.trainer.y_train
        if self.replay is not None and self.replay.filled:
            r = n
            self.replay.draw_into(wx[n:n + r], wy[n:n + r])
        self.trainer.update(n + r)
        if self.replay is not None:
            for j in range(n):      # offered after the update: a row is not replayed in its own update
                self.replay.offer(wx[j], wy[j])
        self.pending = 0
        c = self.counts
        c["updates"] += 1
        c["samples"] += n
        c["replayed"] += r
        if self.after_update:
            self.after_update(n)
