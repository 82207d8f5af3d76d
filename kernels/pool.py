"""Max pooling of NCHW float32 tensors over k x k windows with stride k (no padding;
a last partial row or column is dropped, as ONNX MaxPool does without ceil_mode).

Also the two sides of nearest-neighbour upsampling by whole factors (fh, fw), as conv
FFCL's feedback uses them (edgeff/layers/feedback.py):
    upsample_add   dst[n, c, i, j] += src[n, c, i // fh, j // fw]
    window_sum     out[n, c, i, j] = sum of src over the fh x fw window at (i fh, j fw):
                   the adjoint of upsampling (the gradient of a loss through it)."""

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _maxpool_forward(x, k, out):
    # x: (N, C, H, W) float32; out: (N, C, H // k, W // k) float32 <- max of each k x k window
    n_b, n_c, oh_n, ow_n = out.shape
    for n in prange(n_b):
        for c in range(n_c):
            for oh in range(oh_n):
                for ow in range(ow_n):
                    m = x[n, c, oh * k, ow * k]
                    for i in range(k):
                        for j in range(k):
                            m = max(m, x[n, c, oh * k + i, ow * k + j])
                    out[n, c, oh, ow] = m


@njit(cache=True, parallel=True)
def _maxpool_backward(x, out, dout, k, dx):
    # dx: (N, C, H, W) float32 <- dout routed to the first position of each window holding
    # its maximum, 0 elsewhere (and in dropped rows and columns)
    n_b, n_c, oh_n, ow_n = out.shape
    for n in prange(n_b):
        dx[n] = 0.0
        for c in range(n_c):
            for oh in range(oh_n):
                for ow in range(ow_n):
                    m, done = out[n, c, oh, ow], False
                    for i in range(k):
                        for j in range(k):
                            if not done and x[n, c, oh * k + i, ow * k + j] == m:
                                dx[n, c, oh * k + i, ow * k + j] = dout[n, c, oh, ow]
                                done = True


def _check(x, out, k):
    if not (isinstance(k, int) and k >= 1):
        raise ValueError(f"maxpool: window must be a whole number >= 1, got {k!r}")
    want = (*x.shape[:2], x.shape[2] // k, x.shape[3] // k) if x.ndim == 4 else None
    if x.dtype != np.float32 or out.dtype != np.float32 or out.shape != want or min(out.shape, default=0) < 1:
        raise ValueError(f"maxpool: x float32 (N, C, H, W) and out float32 {want} needed, got "
                         f"{x.dtype} {x.shape}, {out.dtype} {out.shape}")


def maxpool_forward(x, k, out):
    """out <- max over each k x k window of x (stride k)."""
    _check(x, out, k)
    _maxpool_forward(x, k, out)
    return out


def maxpool_backward(x, out, dout, k, dx):
    """dx <- gradient of a loss through out = maxpool_forward(x, k) given dout = dLoss/dout."""
    _check(x, out, k)
    if dout.shape != out.shape or dx.shape != x.shape or dout.dtype != np.float32 or dx.dtype != np.float32:
        raise ValueError(f"maxpool_backward: dout{dout.shape} / dx{dx.shape} must match out{out.shape} / x{x.shape}")
    _maxpool_backward(x, out, dout, k, dx)
    return dx


@njit(cache=True, parallel=True)
def _upsample_add(src, fh, fw, dst):
    # src: (N, C, H, W) float32; dst: (N, C, H * fh, W * fw) float32, += src repeated fh x fw
    n_b, n_c, h_n, w_n = src.shape
    for n in prange(n_b):
        for c in range(n_c):
            for i in range(h_n * fh):
                for j in range(w_n * fw):
                    dst[n, c, i, j] += src[n, c, i // fh, j // fw]


@njit(cache=True, parallel=True)
def _window_sum(src, fh, fw, out):
    # src: (N, C, H * fh, W * fw) float32; out: (N, C, H, W) float32 <- sum of each fh x fw window
    n_b, n_c, h_n, w_n = out.shape
    for n in prange(n_b):
        for c in range(n_c):
            for i in range(h_n):
                for j in range(w_n):
                    s = 0.0
                    for a in range(fh):
                        for b in range(fw):
                            s += src[n, c, i * fh + a, j * fw + b]
                    out[n, c, i, j] = s


def _check_factors(name, small, large, fh, fw):
    ok = all(isinstance(f, int) and f >= 1 for f in (fh, fw)) and small.ndim == 4 and \
        large.shape == (*small.shape[:2], small.shape[2] * fh, small.shape[3] * fw)
    if not ok or small.dtype != np.float32 or large.dtype != np.float32:
        raise ValueError(f"{name}: float32 (N, C, H, W) and (N, C, H*{fh}, W*{fw}) needed, got "
                         f"{small.dtype} {small.shape}, {large.dtype} {large.shape}")


def upsample_add(src, fh, fw, dst):
    """dst += src upsampled by (fh, fw), nearest neighbour."""
    _check_factors("upsample_add", src, dst, fh, fw)
    _upsample_add(src, fh, fw, dst)
    return dst


def window_sum(src, fh, fw, out):
    """out <- the sum of src over every fh x fw window (stride fh, fw)."""
    _check_factors("window_sum", out, src, fh, fw)
    _window_sum(src, fh, fw, out)
    return out
