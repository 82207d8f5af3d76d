"""A one-line progress bar for long work; silent when quiet, in --json mode or off a TTY."""

import sys
import time


def progress_enabled(quiet, json_mode, stream=None):
    stream = stream or sys.stderr
    return not quiet and not json_mode and hasattr(stream, "isatty") and stream.isatty()


def _fmt_time(seconds):
    seconds = int(seconds)
    return f"{seconds // 60:d}:{seconds % 60:02d}"


class Progress:
    def __init__(self, total, desc, unit="samples", enabled=True, stream=None):
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.stream = stream or sys.stderr
        self.count, self.postfix = 0, {}
        self.start = self._last = time.perf_counter()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n, **postfix):
        if not self.enabled:
            return
        self.count += n
        self.postfix.update(postfix)
        now = time.perf_counter()
        if now - self._last >= 0.1 or self.count >= self.total:
            self._last = now
            self._draw(now)

    def _draw(self, now):
        elapsed = now - self.start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        frac = min(1.0, self.count / self.total) if self.total else 1.0
        bar = "#" * int(frac * 20)
        eta = _fmt_time((self.total - self.count) / rate) if rate > 0 else "?"
        post = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.postfix.items())
        self.stream.write(f"\r{self.desc} {frac:4.0%} [{bar:<20}] {self.count}/{self.total} "
                          f"{rate:,.0f} {self.unit}/s {_fmt_time(elapsed)}<{eta} {post}\x1b[K")
        self.stream.flush()

    def close(self):
        if self.enabled:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
            self.enabled = False
