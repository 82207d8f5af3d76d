"""Numba kernels (installed as edgeff.kernels); reference.py holds their NumPy twins."""

import os

import numba

# BLAS and Numba share the cores in turn. OpenMP's pool keeps spinning after a parallel
# kernel and slowed the next matrix product by 30 % here; the workqueue pool sleeps
# instead, and needs no OpenMP or TBB on the device. A user's own choice wins.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"
