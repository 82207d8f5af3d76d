"""Dense layer kernels: bias + ReLU in place, bias add, bias gradient.

The matrix products themselves go to numpy's BLAS (np.matmul with out=); what
surrounds them is fused here so no temporaries are made.
"""

import numpy as np
from numba import njit


@njit(cache=True)
def _bias_relu(z, b):
    # z: (B, D) float32, in place -> relu(z + b)
    # b: (D,) float32
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            v = z[i, j] + b[j]
            z[i, j] = v if v > 0.0 else 0.0


@njit(cache=True)
def _add_bias(z, b):
    # z: (B, D) float32, in place -> z + b; b: (D,) float32
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            z[i, j] += b[j]


@njit(cache=True)
def _column_sum(dz, out):
    # dz: (B, D) float32; out: (D,) float32 <- sum over rows
    out[:] = 0.0
    for i in range(dz.shape[0]):
        for j in range(dz.shape[1]):
            out[j] += dz[i, j]


def _check(name, a, ndim):
    if a.dtype != np.float32 or a.ndim != ndim or not a.flags.c_contiguous:
        raise ValueError(f"{name} must be a C-contiguous {ndim}-D float32 array, got {a.dtype} {a.shape}")


def dense_forward(x, w, b, out):
    """out <- relu(x @ w + b).  x: (B, Din), w: (Din, Dout), b: (Dout,), out: (B, Dout)."""
    _check("x", x, 2), _check("w", w, 2), _check("b", b, 1), _check("out", out, 2)
    if x.shape[1] != w.shape[0] or out.shape != (x.shape[0], w.shape[1]) or b.shape[0] != w.shape[1]:
        raise ValueError(f"dense_forward: shapes x{x.shape} w{w.shape} b{b.shape} out{out.shape} do not chain")
    np.matmul(x, w, out=out)
    _bias_relu(out, b)
    return out


def add_bias(z, b):
    """z: (B, D) in place <- z + b (D,): a linear layer's output with no temporary (numpy's
    broadcast add allocates a buffer)."""
    _check("z", z, 2), _check("b", b, 1)
    if b.shape[0] != z.shape[1]:
        raise ValueError(f"add_bias: shapes z{z.shape} b{b.shape} do not chain")
    _add_bias(z, b)
    return z


def column_sum(dz, out):
    """out: (Dout,) <- dz: (B, Dout) summed over its rows (local_grad's bias gradient)."""
    _check("dz", dz, 2), _check("out", out, 1)
    if out.shape[0] != dz.shape[1]:
        raise ValueError(f"column_sum: shapes dz{dz.shape} out{out.shape} do not chain")
    _column_sum(dz, out)


def local_grad(x, dz, gw, gb):
    """One layer's weight/bias gradient from its own input and output grad.

    x: (B, Din) layer input, dz: (B, Dout) dLoss/dpre-activation,
    gw: (Din, Dout) <- x.T @ dz, gb: (Dout,) <- dz summed over the batch.
    """
    _check("x", x, 2), _check("dz", dz, 2), _check("gw", gw, 2), _check("gb", gb, 1)
    if x.shape[0] != dz.shape[0] or gw.shape != (x.shape[1], dz.shape[1]) or gb.shape[0] != dz.shape[1]:
        raise ValueError(f"local_grad: shapes x{x.shape} dz{dz.shape} gw{gw.shape} gb{gb.shape} do not chain")
    np.matmul(x.T, dz, out=gw)
    _column_sum(dz, gb)
    return gw, gb
