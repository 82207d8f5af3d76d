"""Kernels of MobileNetV3's layers on NCHW float32 tensors: hardswish and squeeze-excite.

    hardswish(x)   = x * hardsigmoid(x),   hardsigmoid(u) = min(max(u / 6 + 1/2, 0), 1)
    squeeze-excite y[n, c] = x[n, c] * hardsigmoid(u[n, c]), u from the channel means
                   (edgeff/layers/squeeze_excite.py; its two 1x1 convs are BLAS products)

Each kernel writes into caller-supplied arrays; NumPy twins are in kernels/reference.py.
"""

import numpy as np
from numba import njit, prange

from .ff_loss import FAST


@njit(cache=True, inline="always")
def _hardsigmoid(u):
    return min(max(u / 6.0 + 0.5, 0.0), 1.0)


@njit(cache=True, parallel=True, fastmath=FAST)
def _hardswish(x, y):
    # x, y: (P,) float32; y <- x * hardsigmoid(x)
    for i in prange(x.shape[0]):
        y[i] = x[i] * _hardsigmoid(x[i])


@njit(cache=True, parallel=True, fastmath=FAST)
def _hardswish_grad(x, dy, dx):
    # x, dy, dx: (P,) float32; dx <- dy * d hardswish/dx: 0 below -3, 1 above 3, (2x + 3) / 6 between
    for i in prange(x.shape[0]):
        v = x[i]
        dx[i] = 0.0 if v <= -3.0 else (dy[i] if v >= 3.0 else dy[i] * (2.0 * v + 3.0) / 6.0)


@njit(cache=True, parallel=True, fastmath=FAST)
def _channel_mean(x, out):
    # x: (N, C, P) float32; out: (N, C) float32 <- mean over P
    for n in prange(x.shape[0]):
        for c in range(x.shape[1]):
            s = 0.0
            for p in range(x.shape[2]):
                s += x[n, c, p]
            out[n, c] = s / x.shape[2]


@njit(cache=True, parallel=True, fastmath=FAST)
def _gate(x, u, y):
    # x, y: (N, C, P) float32; u: (N, C) float32; y <- x * hardsigmoid(u) per channel
    for n in prange(x.shape[0]):
        for c in range(x.shape[1]):
            g = _hardsigmoid(u[n, c])
            for p in range(x.shape[2]):
                y[n, c, p] = x[n, c, p] * g


@njit(cache=True, parallel=True, fastmath=FAST)
def _gate_grad(x, dy, u, du):
    # x, dy: (N, C, P) float32; u: (N, C) float32 the gate's input
    # du: (N, C) float32 <- dLoss/du = sum_p dy * x, times hardsigmoid'(u) (1/6 inside (-3, 3), else 0)
    for n in prange(x.shape[0]):
        for c in range(x.shape[1]):
            s = 0.0
            for p in range(x.shape[2]):
                s += dy[n, c, p] * x[n, c, p]
            du[n, c] = s / 6.0 if -3.0 < u[n, c] < 3.0 else 0.0


@njit(cache=True, parallel=True, fastmath=FAST)
def _gate_input_grad(dy, u, ds, dx):
    # dy, dx: (N, C, P) float32; u, ds: (N, C) float32 (ds: dLoss/d channel mean)
    # dx <- dy * hardsigmoid(u) + ds / P
    for n in prange(dy.shape[0]):
        for c in range(dy.shape[1]):
            g, d = _hardsigmoid(u[n, c]), ds[n, c] / dy.shape[2]
            for p in range(dy.shape[2]):
                dx[n, c, p] = dy[n, c, p] * g + d


def _flat(name, *arrays):
    """The arrays as (P,) views; ValueError unless C-contiguous float32 of one shape."""
    if not all(isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous and a.shape == arrays[0].shape
               for a in arrays):
        raise ValueError(f"{name}: need C-contiguous float32 arrays of one shape, got "
                         f"{[(getattr(a, 'dtype', type(a).__name__), getattr(a, 'shape', None)) for a in arrays]}")
    return [a.reshape(-1) for a in arrays]


def _per_channel(name, x, *pairs):
    """x as (N, C, P) and each (N, C) array checked; ValueError otherwise."""
    if x.ndim != 4:
        raise ValueError(f"{name}: x must be (N, C, H, W), got {x.shape}")
    for a in pairs:
        if not (isinstance(a, np.ndarray) and a.dtype == np.float32 and a.shape == x.shape[:2] and a.flags.c_contiguous):
            raise ValueError(f"{name}: need float32 {x.shape[:2]} per-channel arrays, got {getattr(a, 'shape', a)}")
    return x.reshape(x.shape[0], x.shape[1], -1)


def hardswish(x, y):
    """y <- x * hardsigmoid(x) elementwise (y must not be x: the gradient reads x)."""
    _hardswish(*_flat("hardswish", x, y))
    return y


def hardswish_grad(x, dy, dx):
    """dx <- dLoss/dx for y = hardswish(x) given dy = dLoss/dy; dx may be dy."""
    _hardswish_grad(*_flat("hardswish_grad", x, dy, dx))
    return dx


def channel_mean(x, out):
    """out[n, c] <- mean of x[n, c] over its H x W positions.  x: (N, C, H, W), out: (N, C)."""
    _flat("channel_mean", x)
    _channel_mean(_per_channel("channel_mean", x, out), out)
    return out


def gate(x, u, y):
    """y[n, c] <- x[n, c] * hardsigmoid(u[n, c]).  x, y: (N, C, H, W); u: (N, C)."""
    _flat("gate", x, y)
    _gate(_per_channel("gate", x, u), u, y.reshape(_per_channel("gate", y).shape))
    return y


def gate_grad(x, dy, u, du):
    """du <- dLoss/du for y = gate(x, u) given dy = dLoss/dy."""
    _flat("gate_grad", x, dy)
    _gate_grad(_per_channel("gate_grad", x, u, du), dy.reshape(dy.shape[0], dy.shape[1], -1), u, du)
    return du


def gate_input_grad(dy, u, ds, dx):
    """dx <- dy * hardsigmoid(u) + ds / (H W): the gradient through the gate and the channel mean
    that made u, where ds = dLoss/d(channel mean)."""
    _flat("gate_input_grad", dy, dx)
    _gate_input_grad(_per_channel("gate_input_grad", dy, u, ds), u, ds, dx.reshape(dx.shape[0], dx.shape[1], -1))
    return dx
