"""Activation gradients for layers trained by backprop inside a block."""

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _relu_grad(y, dy, dx):
    # y, dy, dx: (P,) float32; dx <- dy where y > 0, else 0 (dx may be dy)
    for i in prange(y.shape[0]):
        dx[i] = dy[i] if y[i] > 0.0 else 0.0


def relu_grad(y, dy, dx):
    """dx <- dy * (y > 0) for y = relu(x); dx may be dy (in place)."""
    if not (y.dtype == dy.dtype == dx.dtype == np.float32 and y.shape == dy.shape == dx.shape) or \
            not all(a.flags.c_contiguous for a in (y, dy, dx)):
        raise ValueError(f"relu_grad: need three C-contiguous float32 arrays of one shape, got {y.shape} {dy.shape} {dx.shape}")
    _relu_grad(y.reshape(-1), dy.reshape(-1), dx.reshape(-1))
    return dx
