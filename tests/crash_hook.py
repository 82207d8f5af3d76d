"""A training step hook that raises before a chosen step: a crash that loses the work since the last checkpoint."""


class Crash(Exception):
    pass


class CrashAt:
    """A step hook that stops training before step `at` (a crash that loses the work since the last checkpoint)."""

    def __init__(self, at):
        self.at = at

    def batch_begins(self, phase, step):
        if step == self.at:
            raise Crash

    def layer_done(self, k, seconds):
        pass

    def batch_done(self, seconds):
        pass
