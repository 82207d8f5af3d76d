"""Per-machine settings of the kernels, measured on first use and cached beside Numba's cache.

What is faster depends on the machine, so it is measured here, never assumed:
    parallel_from   elements from which the optimiser step runs on Numba's thread pool
                    (kernels/optim.py): serial and parallel Adam timed right after a matrix
                    product, as in training (waking the pool while BLAS's threads still hold
                    the cores is what makes small steps slower in parallel)
    blas_threads    threads numpy's OpenBLAS uses: one against every core on a training-sized
                    product (with the cores busy, many threads can be far slower than one)
The measurement takes about a second. The result is written atomically to
edgeff-tuning.json in the directory Numba caches edgeff's kernels in, with the machine it
was measured on; a file that is not valid JSON, lacks a field, holds a value out of range or
was measured on another machine is measured again and rewritten, never used.
A tuning measured while other processes kept the CPUs busy (others_busy: their share of all
CPU time during the measurement, from /proc/stat) picks what was fastest then, often one BLAS
thread: it is used while the machine stays busy and measured again at the first start that finds
the CPUs quiet (a 0.2 s look), so a first run beside a long job does not halve every later one.
EDGEFF_TUNING=off uses the built-in defaults and no file; EDGEFF_TUNING=remeasure measures
again; EDGEFF_TUNING=keep uses a cached tuning as it stands, even one measured while busy (runs
stay bit for bit alike: the test suite uses it). OPENBLAS_NUM_THREADS or OMP_NUM_THREADS set by
the user wins over blas_threads.
The BLAS thread count changes the last bits of a product's sums, so runs are
reproducible bit for bit on one machine while its tuning file stands.
"""

import json
import os
import time

import numpy as np

from .board import detect_board
from .fileio import atomic_write_text, read_json
from .kernels.blas import blas_threads, cores, set_blas_threads

FILE = "edgeff-tuning.json"
VERSION = 2                 # 2: the serial optimiser step vectorises (kernels/optim.py), so 1's choice is stale
ENV = "EDGEFF_TUNING"
SIZES = [1 << e for e in range(14, 23, 2)]     # optimiser steps timed: 16 Ki to 4 Mi parameters
NEVER = 1 << 62                                 # parallel_from when the parallel step never won
USER_THREADS = {"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"}   # a user's own BLAS thread count wins
BUSY = 0.25         # others' share of the CPUs above which a measurement was taken on a busy machine
QUIET = 0.10        # ... and below which the machine is quiet enough to measure again
LOOK_SECONDS = 0.2  # how long a start looks at the CPUs before measuring a busy tuning again


def numba_cache_dir():
    """Where Numba puts edgeff's compiled kernels (they use cache=True), and why there."""
    import numba
    if numba.config.CACHE_DIR:
        return numba.config.CACHE_DIR, "NUMBA_CACHE_DIR"
    from . import kernels
    in_tree = os.path.join(os.path.dirname(os.path.abspath(kernels.__file__)), "__pycache__")
    if os.access(in_tree if os.path.isdir(in_tree) else os.path.dirname(in_tree), os.W_OK):
        return in_tree, "default: __pycache__ beside the kernels' source"
    from numba.misc.appdirs import AppDirs
    user_dir = AppDirs(appname="numba", appauthor=False).user_cache_dir
    return user_dir, "default: user-wide, because the kernels' directory is read-only"


def tuning_path():
    return os.path.join(numba_cache_dir()[0], FILE)


def machine():
    """What a tuning holds for: the CPU, the cores this process may use, numpy and its BLAS."""
    config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    return dict(cpu_model=detect_board()["cpu_model"], cores=cores(), numpy=np.__version__,
                blas=f"{config.get('name', '?')} {config.get('version', '')}".strip())


def cpu_times(stat="/proc/stat"):
    """(busy, total) seconds of all CPUs since boot from a /proc/stat file; None where there is none
    or it cannot be read as one."""
    try:
        with open(stat) as f:
            fields = f.readline().split()
        if fields[0] != "cpu":
            return None
        ticks = [int(v) for v in fields[1:9]]          # user nice system idle iowait irq softirq steal
    except (OSError, IndexError, ValueError):
        return None
    if len(ticks) < 5 or min(ticks) < 0:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    total = sum(ticks) / hz
    return total - (ticks[3] + ticks[4]) / hz, total


def others_busy(before, after, own_seconds):
    """Other processes' share of all CPU time between two cpu_times() readings, given the CPU
    seconds this process used meanwhile; None without readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return min(1.0, max(0.0, (after[0] - before[0] - own_seconds) / (after[1] - before[1])))


def _own_seconds():
    t = os.times()
    return t.user + t.system


def busy_now(seconds=LOOK_SECONDS):
    """Other processes' share of the CPUs over the next `seconds` (this one sleeps meanwhile)."""
    before, own = cpu_times(), _own_seconds()
    time.sleep(seconds)
    return others_busy(before, cpu_times(), _own_seconds() - own)


def _best(fn, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure():
    """Time the choices on this machine (about a second); returns a tuning dict. The adam steps
    run with the BLAS thread count chosen; the count found is restored after."""
    from .kernels import optim
    start, own = cpu_times(), _own_seconds()
    rng = np.random.default_rng(0)
    a, b = rng.random((512, 784), np.float32), rng.random((784, 1000), np.float32)
    out = np.empty((512, 1000), np.float32)
    threads, most = {}, cores()
    before = blas_threads()
    if before is not None:
        for n in sorted({1, most}):
            set_blas_threads(n)
            np.matmul(a, b, out=out)
            threads[n] = _best(lambda: np.matmul(a, b, out=out), 5)
        chosen = min(threads, key=threads.get)
    else:
        chosen = None
    set_blas_threads(chosen or before or most)
    step_seconds = {}
    for n in SIZES:
        w, g, m, v = (np.zeros(n, np.float32) for _ in range(4))
        for parallel in (False, True):
            kernel = optim._ADAM[parallel]
            step = lambda: (np.matmul(a, b, out=out), kernel(w, g, m, v, *np.ones(5, np.float32)))
            step()                                           # compile, or load from Numba's cache
            step_seconds[(n, parallel)] = _best(step)
    if before is not None:
        set_blas_threads(before)                             # measuring changes nothing: apply() does
    wins = [n for n in SIZES if step_seconds[(n, True)] < step_seconds[(n, False)]]
    first = next((n for n in SIZES if all(k in wins for k in SIZES if k >= n)), NEVER)
    busy = others_busy(start, cpu_times(), _own_seconds() - own)
    return dict(version=VERSION, machine=machine(), parallel_from=first, blas_threads=chosen,
                others_busy=None if busy is None else round(busy, 3),
                measured=dict(blas_ms={str(k): round(1e3 * s, 3) for k, s in threads.items()},
                              matmul_then_adam_ms={f"{n} {'parallel' if p else 'serial'}": round(1e3 * s, 3)
                                       for (n, p), s in step_seconds.items()}))


def valid(tuning):
    """The tuning if it was measured by this version on this machine with every field in range, else None."""
    if not isinstance(tuning, dict) or tuning.get("version") != VERSION or tuning.get("machine") != machine():
        return None
    parallel_from, threads = tuning.get("parallel_from"), tuning.get("blas_threads")
    whole = lambda v: isinstance(v, int) and not isinstance(v, bool)
    if not whole(parallel_from) or not 1 <= parallel_from <= NEVER:
        return None
    if threads is not None and (not whole(threads) or not 1 <= threads <= cores()):
        return None
    busy = tuning.get("others_busy")        # absent in files written before it was measured: quiet
    if busy is not None and (not isinstance(busy, (int, float)) or isinstance(busy, bool) or not 0 <= busy <= 1):
        return None
    return tuning


def load(path):
    try:
        return valid(read_json(path))
    except (OSError, ValueError):      # absent, unreadable, not strict JSON, too long or too deep
        return None


def save(path, tuning):
    """Write atomically; False when the directory cannot be written (the tuning still applies)."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_text(path, json.dumps(tuning, indent=1, sort_keys=True, allow_nan=False))
    except OSError:
        return False
    return True


def tuned():
    """(tuning or None when off, where it lives, how it was got: cached, measured, off)."""
    import numba
    path, mode = tuning_path(), os.environ.get(ENV, "")
    if mode == "off":
        return None, path, "off"
    if numba.config.DISABLE_JIT:      # the kernels run as Python: nothing worth measuring
        return None, path, "off (Numba JIT disabled)"
    tuning = None if mode == "remeasure" else load(path)
    if tuning is not None and (mode == "keep" or (tuning.get("others_busy") or 0) <= BUSY):
        return tuning, path, "cached"
    if tuning is not None:                 # measured on a busy machine: again once it is quiet
        now = busy_now()
        if now is None or now > QUIET:
            return tuning, path, "cached (measured while the CPUs were busy; still busy)"
    tuning = measure()
    return tuning, path, "measured now" if save(path, tuning) else "measured now (not saved: directory not writable)"


def apply(tuning, blas_threads=None):
    """Use a tuning in this process (None: keep the built-in defaults). blas_threads: a count that
    wins over the tuning's (a resumed run's own: its sums round as before); the user's wins over both."""
    if tuning is not None:
        from .kernels import optim
        optim.PARALLEL_FROM = tuning["parallel_from"]
    threads = blas_threads or (tuning or {}).get("blas_threads")
    if threads is not None and not USER_THREADS & os.environ.keys():
        set_blas_threads(threads)
