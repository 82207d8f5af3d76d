"""A one-line progress bar with no dependency; silent when quiet, in --json mode or off a TTY.

    with Progress(len(x), "epoch 1/10", enabled=progress_enabled(args.quiet, args.json)) as bar:
        for batch in ...:
            bar.update(len(batch), loss=loss)

update() only adds and reads the clock; the line is redrawn at most every REDRAW_SECONDS,
so calling it once per batch in a hot loop costs nothing measurable.
"""

import numbers
import os
import sys
import time

REDRAW_SECONDS = 0.1
BAR_WIDTH = 20


def progress_enabled(quiet, json_mode, stream=None):
    """Draw a bar only for a person watching: not --quiet, not --json, stream is a terminal."""
    stream = stream if stream is not None else sys.stderr
    if quiet or json_mode:
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _fmt_time(seconds):
    seconds = max(0, round(seconds))  # round: perf_counter differences are not exact
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _fmt_rate(rate):
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"


def _fmt_value(value):
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return f"{float(value):.4g}"
    return str(value)


class Progress:
    """desc, percentage, bar, count/total, rate, elapsed<ETA, postfix — on one line redrawn with \\r.

    stream defaults to sys.stderr as it is when the bar is made. When enabled is False
    every method is a no-op that writes nothing.
    """

    def __init__(self, total, desc, unit="samples", enabled=True, stream=None):
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.count, self.postfix = 0, {}
        self.start = self._last_draw = time.perf_counter()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n, **postfix):
        if not self.enabled:
            return
        self.count += n
        if postfix:
            self.postfix.update(postfix)
        now = time.perf_counter()
        if now - self._last_draw >= REDRAW_SECONDS:
            self._draw(now)

    def close(self):
        """Draw the final state and end the line; later calls do nothing."""
        if not self.enabled:
            return
        self._draw(time.perf_counter())
        self.stream.write("\n")
        self.stream.flush()
        self.enabled = False

    def line(self, now):
        """The text of the bar at time `now` (perf_counter seconds)."""
        elapsed = now - self.start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        frac = min(1.0, self.count / self.total) if self.total > 0 else 1.0
        eta = _fmt_time((self.total - self.count) / rate) if rate > 0 else "?"
        bar = "#" * int(frac * BAR_WIDTH)
        text = (f"{self.desc} {frac:4.0%} [{bar:<{BAR_WIDTH}}] {self.count}/{self.total} "
                f"{_fmt_rate(rate)} {self.unit}/s {_fmt_time(elapsed)}<{eta}")
        if self.postfix:
            text += " " + " ".join(f"{k}={_fmt_value(v)}" for k, v in self.postfix.items())
        return text

    def _draw(self, now):
        self._last_draw = now
        text = self.line(now)
        try:  # a line wider than the terminal wraps and \r can no longer redraw it
            text = text[:os.get_terminal_size(self.stream.fileno()).columns - 1]
        except (AttributeError, ValueError, OSError):
            pass  # not a terminal (a file, a StringIO): keep the whole line
        self.stream.write(f"\r{text}\x1b[K")
        self.stream.flush()
