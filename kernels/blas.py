"""numpy's bundled OpenBLAS: how many threads it uses, read and set through its C API."""

import contextlib
import ctypes
import functools
import glob
import os

import numpy as np


@functools.lru_cache(maxsize=None)
def _openblas():
    """numpy's bundled OpenBLAS as (set_num_threads, get_num_threads), or None when not found."""
    libs = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in glob.glob(os.path.join(libs, "lib*openblas*.so*")):
        lib = ctypes.CDLL(path)          # already loaded by numpy: the same library, not a second copy
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"), ("openblas", "")):
            setter, getter = f"{prefix}_set_num_threads{suffix}", f"{prefix}_get_num_threads{suffix}"
            if hasattr(lib, setter) and hasattr(lib, getter):
                return getattr(lib, setter), getattr(lib, getter)
    return None


def cores():
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def blas_threads():
    """Threads numpy's BLAS uses now (None when it is not an OpenBLAS edgeff can find)."""
    found = _openblas()
    return int(found[1]()) if found else None


def set_blas_threads(n):
    found = _openblas()
    if found:
        found[0](int(n))


@contextlib.contextmanager
def one_blas_thread():
    """BLAS on one thread meanwhile (the caller runs its own threads), then as before."""
    before = blas_threads()
    set_blas_threads(1)
    try:
        yield
    finally:
        if before:
            set_blas_threads(before)
