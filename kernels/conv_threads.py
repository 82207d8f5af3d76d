"""The threads a conv shares its batch among (kernels/conv_gemm.py): edgeff's own, not a pool
that spins.

A conv splits its batch into contiguous shares, one per thread: the first runs on the caller's
thread, the others on threads kept for it here, with BLAS on one thread meanwhile, so the copies
(im2col, col2im) run on every core and no thread pool spins against BLAS's. While a conv net
trains, `spread_over` keeps BLAS on one thread throughout: after a product on several threads,
OpenBLAS's idle threads spin for about 0.1 s, and the conv's threads would share the cores with
them.
"""

import contextlib
import os
import queue
import threading

from .blas import blas_threads, one_blas_thread


def shares(n, workers):
    """Contiguous slices of n samples, one per worker, as even as can be (never an empty one)."""
    chunk = -(-n // workers)
    return [slice(i, min(i + chunk, n)) for i in range(0, n, chunk)]


_spread = None    # set by spread_over: the threads every conv spreads its samples over meanwhile


@contextlib.contextmanager
def spread_over(threads):
    """Meanwhile every conv spreads its samples over `threads` threads and BLAS keeps to one
    thread throughout (how a conv net trains)."""
    global _spread
    before, _spread = _spread, threads
    try:
        with one_blas_thread():
            yield
    finally:
        _spread = before


def count():
    """How many threads a conv shares its batch among now: spread_over's, else BLAS's."""
    return _spread or blas_threads() or 1


class _Threads:
    """Threads that run the jobs put to them, each reporting what its job raised (or None) once it
    has let go of the job, so nothing a job held outlives the call that waits for them."""

    def __init__(self, n):
        self.pid, self.n = os.getpid(), n
        self.todo, self.done = queue.SimpleQueue(), queue.SimpleQueue()
        for _ in range(n):
            threading.Thread(target=self._serve, name="edgeff-conv", daemon=True).start()

    def _serve(self):
        while True:
            job, error = self.todo.get(), None
            if job is None:                       # stop(): these threads are replaced
                return
            try:
                job()
            except BaseException as exc:      # handed to the waiting caller, which raises it
                error = exc
            del job
            self.done.put(error)

    def stop(self):
        for _ in range(self.n):
            self.todo.put(None)


_threads = None     # made on first use, again in a forked child (threads do not survive a fork)


def run(jobs):
    """Call every job, the first on this thread and the others on _threads, with BLAS on one
    thread meanwhile; an error in any is raised once all have finished."""
    if len(jobs) == 1:
        return jobs[0]()
    global _threads
    if _threads is None or _threads.pid != os.getpid() or _threads.n < len(jobs) - 1:
        if _threads is not None and _threads.pid == os.getpid():
            _threads.stop()
        _threads = _Threads(len(jobs) - 1)
    with one_blas_thread():
        for job in jobs[1:]:
            _threads.todo.put(job)
        try:
            jobs[0]()
        finally:
            try:
                errors = [_threads.done.get() for _ in jobs[1:]]
            except BaseException:        # a wait cut short (Ctrl-C): a late reply would answer the next call
                _threads.stop()
                _threads = None
                raise
    for error in errors:
        if error is not None:
            raise error
