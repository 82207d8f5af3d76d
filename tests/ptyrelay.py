"""A serial cable on demand: two pty pairs joined by a relay thread that can corrupt
bytes (bit flips, drops), pace them at a line rate, or stop forwarding. Host and agent
each open the slave of their own pair with pyserial. Used by the serial and deploy tests
and tools/bench_serial.py."""

import os
import random
import select
import threading
import time
import tty


class PtyRelay:
    """Two pty pairs joined by a thread: the host opens host_name, the agent agent_name.

    fault_rate: per byte, the chance it is corrupted (half bit flips, half drops), seeded.
    bytes_per_s: pace each direction at this rate (a real line's speed), else as fast as ptys go.
    cut_after: a pulled cable after this many host->agent bytes: nothing passes either way
    until restore() (cut() pulls it at once).
    """

    def __init__(self, fault_rate=0.0, seed=0, bytes_per_s=None, cut_after=None):
        self.fault_rate, self.rng, self.bytes_per_s = fault_rate, random.Random(seed), bytes_per_s
        self.cut_after, self.forwarding = cut_after, True
        self.flips = self.drops = self.forwarded = 0
        self._gap = self._next_gap()
        self._fds = []
        self.host_master, self.host_name = self._pty()
        self.agent_master, self.agent_name = self._pty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _pty(self):
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._fds += [master, slave]       # the slave stays open here: no EIO while nobody has it open
        return master, os.ttyname(slave)

    def cut(self):
        self.forwarding = False

    def restore(self):
        self.forwarding, self.cut_after = True, None

    def close(self):
        self._stop.set()
        self._thread.join()
        for fd in self._fds:
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _next_gap(self):
        return int(self.rng.expovariate(self.fault_rate)) if self.fault_rate else None

    def _corrupt(self, data):
        """data with faults at exponentially spaced positions: a Bernoulli process per byte."""
        if self._gap is None:
            return data
        out, start, pos = bytearray(), 0, self._gap
        while pos < len(data):
            out += data[start:pos]
            if self.rng.random() < 0.5:
                out.append(data[pos] ^ (1 << self.rng.randrange(8)))
                self.flips += 1
            else:
                self.drops += 1
            start = pos + 1
            pos = start + self._next_gap()
        self._gap = pos - len(data)
        return bytes(out + data[start:])

    def _run(self):
        peer = {self.host_master: self.agent_master, self.agent_master: self.host_master}
        pending = {fd: bytearray() for fd in peer}      # bytes waiting to be written to fd
        free_at = {fd: 0.0 for fd in peer}              # when the paced line towards fd is free again
        while not self._stop.is_set():
            now = time.monotonic()
            readable = [fd for fd in peer if len(pending[peer[fd]]) < 1 << 16]
            writable = [fd for fd in peer if pending[fd] and free_at[fd] <= now]
            waits = [free_at[fd] - now for fd in peer if pending[fd] and free_at[fd] > now]
            r, w, _ = select.select(readable, writable, [], min(waits + [0.05]))
            for fd in r:
                try:
                    data = os.read(fd, 4096)
                except (BlockingIOError, OSError):
                    continue
                if not self.forwarding:      # a pulled cable: both directions lose everything
                    continue
                if fd == self.host_master:
                    if self.cut_after is not None and self.forwarded + len(data) >= self.cut_after:
                        data, self.forwarding = data[:self.cut_after - self.forwarded], False
                    self.forwarded += len(data)
                pending[peer[fd]] += self._corrupt(data)
            for fd in w:
                n = len(pending[fd]) if self.bytes_per_s is None else max(1, int(self.bytes_per_s * 0.002))
                try:
                    n = os.write(fd, pending[fd][:n])
                except BlockingIOError:
                    continue
                del pending[fd][:n]
                if self.bytes_per_s:
                    free_at[fd] = max(free_at[fd], time.monotonic()) + n / self.bytes_per_s
