"""Callbacks: how a fit reports its progress and what it did, instead of printing.

FFClassifier(callbacks=[...]) tells each callback, in order:
    log(message)                one line about the run (its data, its memory plan)
    epoch_begins(desc, total)   an epoch of a phase starts: desc like "layer 1/2 epoch 3/10", total examples
    batch_done(n, loss)         n more examples trained; loss: the epoch's mean loss so far (None on resume)
    epoch_done(desc)            the epoch ended (or training stopped inside it)
Subclass Callback and override what you need; ProgressBar is `edgeff train`'s progress bar.
With no callbacks the trainer makes no per-batch call at all.
"""

from .progress import Progress


class Callback:
    """Does nothing on every event; override the ones you want."""

    def __deepcopy__(self, memo):
        """Itself: copies of an estimator (scikit-learn's clone, in searches) report to the same callbacks."""
        return self

    def log(self, message):
        """One line about the run."""

    def epoch_begins(self, desc, total):
        """An epoch of `total` examples, described by `desc`, starts."""

    def batch_done(self, n, loss):
        """n more examples were trained; loss is the epoch's running mean loss (None when resuming)."""

    def epoch_done(self, desc):
        """The epoch `desc` ended, or training stopped inside it."""


class ProgressBar(Callback):
    """The one-line progress bar of `edgeff train` (edgeff/progress.py), one line per epoch, on stream
    (default: sys.stderr as it is when the epoch starts)."""

    def __init__(self, stream=None):
        self.stream, self.bar = stream, None

    def epoch_begins(self, desc, total):
        """Start the epoch's bar."""
        self.bar = Progress(total, desc, stream=self.stream)

    def batch_done(self, n, loss):
        """Move the bar on by n examples, showing the loss."""
        self.bar.update(n, **({} if loss is None else {"loss": loss}))

    def epoch_done(self, desc):
        """Draw the bar's last state and end its line."""
        self.bar.close()
        self.bar = None


class _Epoch:
    """One epoch as the trainers' progress reporter (update, close), passed on to callbacks."""

    def __init__(self, callbacks, total, desc):
        self.callbacks, self.desc, self.open = callbacks, desc, True
        for cb in callbacks:
            cb.epoch_begins(desc, total)

    def update(self, n, loss=None):
        for cb in self.callbacks:
            cb.batch_done(n, loss)

    def close(self):
        if self.open:
            self.open = False
            for cb in self.callbacks:
                cb.epoch_done(self.desc)


def progress_of(callbacks):
    """The trainers' progress(total, desc) that reports to callbacks; None when there are none."""
    callbacks = list(callbacks or ())
    return (lambda total, desc: _Epoch(callbacks, total, desc)) if callbacks else None
