"""A learn session on a run directory: samples in, updates made, and what survives a crash.

    learn-checkpoint.npz   weights, optimiser state, replay buffer, RNG, counters and where in its
                           source the last update ended; written atomically every --checkpoint-every
                           updates (and at the start and the end)
    learn-journal.jsonl    the files learned (or rejected) and the update each ended at: a line
                           appended (and fsynced) as each one ends, rewritten whole (atomically) at a resume
    model.npz, model.onnx  re-exported together every --export-every updates, each swapped in whole
A start finding a checkpoint resumes from it: journal entries newer than it are dropped (their updates
were lost with the crash, so their files are learned again) and the file it stopped in is continued.
"""

import os

import numpy as np

from . import checkpoint, export
from .errors import ModelError, TrainingDiverged
from .fields import array, count, field, is_count
from .fileio import atomic_write_files, write_error
from .learn_source import SampleCheck, append_journal, read_journal, write_journal
from .runs import MODEL
from .stream import Stream, input_layout

CHECKPOINT = "learn-checkpoint.npz"
ONNX = "model.onnx"


class LearnSession:
    """The stream trainer of a run with its replay buffer, counters, checkpoints and exports.
    options: {batch_size, replay, policy} (a checkpoint made with others is refused)."""

    def __init__(self, run_dir, cfg, lcfg, plan, net, options, checkpoint_every, export_every, log):
        self.run_dir, self.cfg, self.options, self.log = run_dir, cfg, options, log
        self.every, self.export_every = checkpoint_every, export_every
        self.stream = Stream(lcfg, plan, net, options["batch_size"], options["policy"], self._updated)
        self.trainer, self.replay, self.counts = self.stream.trainer, self.stream.replay, self.stream.counts
        self.check = SampleCheck(net.in_features, net.num_classes, input_layout(net)[2])
        self.label_names = [str(n) for n in (net.input_info or {}).get("label_names") or []]   # per-label folders
        self.position = {"source": "", "rows": 0}
        self.journal = read_journal(run_dir)
        self.exported_at = 0

    @property
    def net(self):
        return self.trainer.net

    # ---- samples in ----

    def learn(self, name, rows, labels, start=0):
        """Learn rows[start:] of source `name` (Stream.learn), its position kept for a checkpoint."""
        self.position = {"source": name, "rows": start}
        self.stream.learn(rows, labels, start)

    def _updated(self, n):
        self.position["rows"] += n
        updates = self.counts["updates"]
        if self.every and updates % self.every == 0:
            self.save_checkpoint()
        if self.export_every and updates % self.export_every == 0:
            self.export()

    def done(self, name, rows, rejected, why=None):
        """Record source file `name` as learned (rows learned, rows rejected; why: a whole file rejected)."""
        self.counts["rejected"] += rejected
        self.journal[name] = dict(rows=rows, rejected=rejected, update=self.counts["updates"],
                                  **({"rejected_why": why} if why else {}))
        append_journal(self.run_dir, name, self.journal[name])

    def reject(self, rows):
        """Count rows of a record (not a file: nothing to journal) rejected."""
        self.counts["rejected"] += rows

    # ---- what survives a crash ----

    def _arrays(self):
        arrays = self.trainer.state_arrays()
        if self.replay is not None:
            arrays.update(replay_x=self.replay.x, replay_y=self.replay.y)
        return arrays

    def save_checkpoint(self):
        arrays = self._arrays()
        if not all(np.isfinite(a).all() for a in arrays.values()):
            raise TrainingDiverged("learning diverged: a weight became NaN or Inf; the last checkpoint and model are "
                                   f"kept; try a smaller --lr (now {self.cfg.lr:g})")
        learn = dict(self.counts, position=self.position, options=self.options,
                     opt_t=self.trainer.optimiser_steps(),
                     replay_filled=self.replay.filled if self.replay else 0,
                     replay_seen=self.replay.seen.tolist() if self.replay else [])
        checkpoint.save(os.path.join(self.run_dir, CHECKPOINT), arrays,
                        dict(learn=learn, rng=self.trainer.rng.bit_generator.state))

    def resume(self):
        """Continue from the run's learn checkpoint if it has one (True), dropping newer journal entries."""
        path = os.path.join(self.run_dir, CHECKPOINT)
        if not os.path.exists(path):
            return False
        arrays, meta = checkpoint.read(path)
        learn = field(path, meta, "learn", dict)
        if learn.get("options") != self.options:
            raise ModelError(f"{path}: was made with {_options(learn.get('options'))}, not {_options(self.options)}; "
                             "give those options, or remove it (and learn-journal.jsonl) to start learning afresh")
        for key in self.counts:
            self.counts[key] = count(path, learn, key)
        position = field(path, learn, "position", dict)
        self.position = {"source": field(path, position, "source", str), "rows": count(path, position, "rows")}
        steps = field(path, learn, "opt_t", dict, lambda t: all(is_count(v) for v in t.values()),
                      "optimiser step counts 0 to 2**53")
        self.trainer.restore(arrays, steps, path)
        if self.replay is not None:
            self._restore_replay(path, arrays, learn)
        checkpoint.set_rng(path, meta, self.trainer.rng.bit_generator)
        for name in [name for name, entry in self.journal.items() if entry["update"] > self.counts["updates"]]:
            del self.journal[name]
        write_journal(self.run_dir, self.journal)       # without the dropped entries, or a line a crash cut short
        self.exported_at = self.counts["updates"]
        return True

    def _restore_replay(self, path, arrays, learn):
        """The replay buffer from a learn checkpoint, checked: its counts, and rows and labels within a sample's
        bounds (SampleCheck)."""
        n, classes = len(self.replay.y), self.net.num_classes
        filled = field(path, learn, "replay_filled", int, lambda v: 0 <= v <= n, f"0 to {n}")
        seen = field(path, learn, "replay_seen", list, lambda s: len(s) == classes and all(is_count(v) for v in s)
                     and is_count(sum(s)), f"{classes} counts, one per class, 2**53 at most in all")
        x = array(path, arrays, "replay_x", np.float32, self.replay.x.shape)
        y = array(path, arrays, "replay_y", np.int64, self.replay.y.shape)
        if (np.abs(x) > self.check.largest).any() or ((y[:filled] < 0) | (y[:filled] >= classes)).any():
            raise ModelError(f"{path}: its replay buffer holds a value beyond {self.check.largest:.3g} or a label "
                             f"outside the run's classes 0..{classes - 1}; the checkpoint is damaged: remove it "
                             "(and learn-journal.jsonl) to start learning afresh")
        self.replay.x[...] = x
        self.replay.y[...] = y
        self.replay.restore(filled, seen)

    def export(self):
        """model.npz and model.onnx of the net as it is now, both written then swapped in (atomic_write_files)."""
        net, cfg = self.net, self.cfg
        head = cfg.classifier
        model = export.build(net, head, export.DEFAULT_OPSET, "dynamic",
                             export.onnx_metadata(net, cfg, {}, head))
        export.check(model)
        onnx_bytes = model.SerializeToString()
        try:
            atomic_write_files({os.path.join(self.run_dir, MODEL): net.npz_writer(cfg.to_json()),
                                os.path.join(self.run_dir, ONNX): lambda f: f.write(onnx_bytes)})
        except OSError as exc:
            raise write_error(self.run_dir, exc, "the previous model is kept") from None
        self.exported_at = self.counts["updates"]

    def finish(self):
        """Checkpoint, and export what is newer than the last export."""
        self.save_checkpoint()
        if self.exported_at != self.counts["updates"]:
            self.export()


def _options(options):
    if not isinstance(options, dict):
        return "other options"
    return (f"--batch-size {options.get('batch_size')} --replay {options.get('replay')} "
            f"--replay-policy {options.get('policy')}")
