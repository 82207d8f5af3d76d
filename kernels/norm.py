"""Length normalisation of each row: x / (||x|| + eps), as Hinton's FF does between layers;
layer norm of each row; standardisation of each column by given statistics."""

import numpy as np
from numba import njit


@njit(cache=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
def _length_normalise(x, out, eps):
    # x: (B, D) float32; out: (B, D) float32 (may be x itself)
    for i in range(x.shape[0]):
        s = 0.0
        for j in range(x.shape[1]):
            s += x[i, j] * x[i, j]
        inv = 1.0 / (np.sqrt(s) + eps)
        for j in range(x.shape[1]):
            out[i, j] = x[i, j] * inv


def length_normalise(x, out, eps=1e-4):
    """out <- x / (||x||_2 + eps) row by row. out may be x (in place)."""
    if x.dtype != np.float32 or out.dtype != np.float32 or x.shape != out.shape or x.ndim != 2:
        raise ValueError(f"length_normalise: need two float32 (B, D) arrays of one shape, got {x.shape} {out.shape}")
    _length_normalise(x, out, np.float32(eps))
    return out


@njit(cache=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
def _layer_norm(x, out, eps):
    # x: (B, D) float32; out: (B, D) float32 (may be x itself) <- (x - mean) / sqrt(var + eps) per row
    d = x.shape[1]
    for i in range(x.shape[0]):
        s = 0.0
        for j in range(d):
            s += x[i, j]
        mean = s / d
        v = 0.0
        for j in range(d):
            v += (x[i, j] - mean) * (x[i, j] - mean)
        inv = 1.0 / np.sqrt(v / d + eps)
        for j in range(d):
            out[i, j] = (x[i, j] - mean) * inv


def layer_norm(x, out, eps=1e-5):
    """out <- each row of x minus its mean, over its standard deviation (no learned scale or
    shift): what a conv block passes on (every sample's C*H*W values as one row)."""
    if x.dtype != np.float32 or out.dtype != np.float32 or x.shape != out.shape or x.ndim != 2:
        raise ValueError(f"layer_norm: need two float32 (B, D) arrays of one shape, got {x.shape} {out.shape}")
    _layer_norm(x, out, np.float32(eps))
    return out


@njit(cache=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
def _standardise(x, mean, scale):
    # x: (B, D) float32 <- (x - mean) * scale column by column, in place; mean, scale: (D,) float32
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            x[i, j] = (x[i, j] - mean[j]) * scale[j]


def standardise(x, mean, scale):
    """x <- (x - mean) * scale, each column by its own mean and scale, in place (NumPy's
    broadcast ufuncs would take a 32 KiB buffer a call)."""
    if x.dtype != np.float32 or x.ndim != 2 or any(a.dtype != np.float32 or a.shape != (x.shape[1],)
                                                   for a in (mean, scale)):
        raise ValueError(f"standardise: need float32 (B, D), (D,), (D,) arrays, got {x.shape} {mean.shape} "
                         f"{scale.shape}")
    _standardise(x, mean, scale)
    return x
