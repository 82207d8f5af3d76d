"""The gemm method of kernels/conv.py: im2col / col2im (Numba) around numpy's BLAS.

Samples go in chunks: the patches of a chunk are copied into a column buffer, one
(C_in/G*KH*KW, OH*OW) matrix per sample, and np.matmul multiplies them by the filters
(one BLAS call per sample and group, looped by numpy). A 1x1 stride-1 unpadded conv
needs no columns: the image itself is the matrix. All buffers are views of the
caller's scratch (GemmPlan.size float32).
"""

import numpy as np
from numba import njit

from .ff_loss import FAST

# Column-buffer elements per chunk of samples (1 MiB): big enough that a small conv
# is not one Python-level call per sample, small enough for a device's memory and
# the cache (4 MiB chunks measured 1.4x slower on 32->64 3x3 at 14x14).
CHUNK_ELEMENTS = 1 << 18


@njit(cache=True)
def _pad_into(x, pad, xp):
    # x: (C, H, W) float32 one sample; xp: (C, H + 2 pad, W + 2 pad) float32, border already 0 <- x inside
    c_in, h, w = x.shape
    for c in range(c_in):
        for i in range(h):
            for j in range(w):
                xp[c, pad + i, pad + j] = x[c, i, j]


@njit(cache=True)
def _crop_from(xp, pad, x):
    # xp: (C, H + 2 pad, W + 2 pad) float32; x: (C, H, W) float32 <- the inside of xp
    c_in, h, w = x.shape
    for c in range(c_in):
        for i in range(h):
            for j in range(w):
                x[c, i, j] = xp[c, pad + i, pad + j]


@njit(cache=True)
def _im2col(x, pad, kh, kw, stride, xp, cols):
    # x: (B, C, H, W) float32 a chunk of samples
    # xp: (C, H + 2 pad, W + 2 pad) float32 scratch, border already 0
    # cols: (B, C * KH * KW, OH * OW) float32 <- row (c, i, j) of sample b holds its padded
    #       pixel (c, oh * stride + i, ow * stride + j)
    oh_n = (xp.shape[1] - kh) // stride + 1
    ow_n = (xp.shape[2] - kw) // stride + 1
    for b in range(x.shape[0]):
        _pad_into(x[b], pad, xp)
        for c in range(xp.shape[0]):
            for i in range(kh):
                for j in range(kw):
                    dst = cols[b, (c * kh + i) * kw + j]
                    for oh in range(oh_n):
                        src, d = xp[c, oh * stride + i, j:], dst[oh * ow_n:]
                        if stride == 1:  # a plain copy, which vectorises
                            for ow in range(ow_n):
                                d[ow] = src[ow]
                        else:
                            for ow in range(ow_n):
                                d[ow] = src[ow * stride]


@njit(cache=True)
def _col2im(cols, pad, kh, kw, stride, dxp, dx):
    # cols: (B, C * KH * KW, OH * OW) float32 gradient of a chunk's columns
    # dxp: (C, H + 2 pad, W + 2 pad) float32 scratch
    # dx: (B, C, H, W) float32 <- every column entry summed into the pixel it was copied from
    oh_n = (dxp.shape[1] - kh) // stride + 1
    ow_n = (dxp.shape[2] - kw) // stride + 1
    for b in range(dx.shape[0]):
        dxp[:] = 0.0
        for c in range(dxp.shape[0]):
            for i in range(kh):
                for j in range(kw):
                    src = cols[b, (c * kh + i) * kw + j]
                    for oh in range(oh_n):
                        d, s = dxp[c, oh * stride + i, j:], src[oh * ow_n:]
                        for ow in range(ow_n):
                            d[ow * stride] += s[ow]
        _crop_from(dxp, pad, dx[b])


@njit(cache=True, fastmath=FAST)
def _sum_chunk(per_sample, g):
    # per_sample: (B, C, K) float32; g: (C, K) float32 += the sum over B
    for b in range(per_sample.shape[0]):
        for c in range(g.shape[0]):
            for k in range(g.shape[1]):
                g[c, k] += per_sample[b, c, k]


@njit(cache=True)
def _add_bias(y, b):
    # y: (N, C, P) float32, in place += b[c]; b: (C,) float32
    for n in range(y.shape[0]):
        for c in range(y.shape[1]):
            for p in range(y.shape[2]):
                y[n, c, p] += b[c]


def _is_pointwise(kh, kw, stride, pad):
    """A 1x1 stride-1 unpadded conv: the image itself is the column matrix."""
    return kh == kw == 1 and stride == 1 and pad == 0


class GemmPlan:
    """The shapes of one gemm-method conv and its views of the scratch array. Samples go in
    chunks of `chunk`, so that small convs make few calls: [columns (chunk, C_in*KH*KW, OH*OW),
    none when pointwise | one padded sample (C_in, H+2p, W+2p) | per-sample weight grads
    (chunk, C_out, C_in/G*KH*KW)]."""

    def __init__(self, x_shape, w_shape, stride, pad, groups, scratch):
        self.n, c_in, h, w = x_shape
        self.c_out, cg_in, self.kh, self.kw = w_shape
        self.oh, self.ow = (h + 2 * pad - self.kh) // stride + 1, (w + 2 * pad - self.kw) // stride + 1
        self.stride, self.pad, self.groups = stride, pad, groups
        self.k, self.cg_out = cg_in * self.kh * self.kw, self.c_out // groups  # one group's GEMM sizes
        one_cols = c_in * self.kh * self.kw * self.oh * self.ow
        self.chunk = max(1, min(self.n, CHUNK_ELEMENTS // one_cols))
        n_cols = 0 if _is_pointwise(self.kh, self.kw, stride, pad) else self.chunk * one_cols
        n_pad = c_in * (h + 2 * pad) * (w + 2 * pad)
        self.size = n_cols + n_pad + self.chunk * self.c_out * self.k
        if scratch is not None:
            self.cols = scratch[:n_cols].reshape(-1, c_in * self.kh * self.kw, self.oh * self.ow)
            self.padded = scratch[n_cols:n_cols + n_pad].reshape(c_in, h + 2 * pad, w + 2 * pad)
            self.grads = scratch[n_cols + n_pad:self.size].reshape(self.chunk, self.c_out, self.k)
            self.padded[:] = 0.0  # the border stays 0; _pad_into writes the inside

    def chunks(self):
        """(sample slice, how many) for every chunk of the batch."""
        for n0 in range(0, self.n, self.chunk):
            yield slice(n0, min(n0 + self.chunk, self.n)), min(self.chunk, self.n - n0)

    def columns(self, x):
        """A chunk x: (B, C_in, H, W) as (B, C_in*KH*KW, OH*OW) matrices the filters multiply."""
        if _is_pointwise(self.kh, self.kw, self.stride, self.pad):
            return x.reshape(x.shape[0], x.shape[1], -1)
        cols = self.cols[:x.shape[0]]
        _im2col(x, self.pad, self.kh, self.kw, self.stride, self.padded, cols)
        return cols

    def group(self, g):
        """(output-channel rows, column rows) of group g."""
        return slice(g * self.cg_out, (g + 1) * self.cg_out), slice(g * self.k, (g + 1) * self.k)


def forward(x, w, b, stride, pad, groups, out, scratch):
    """out <- conv(x, w) + b (b may be None)."""
    m = GemmPlan(x.shape, w.shape, stride, pad, groups, scratch)
    w2, y = w.reshape(m.c_out, m.k), out.reshape(m.n, m.c_out, m.oh * m.ow)
    for s, _ in m.chunks():
        cols = m.columns(x[s])
        for g in range(groups):
            o, k = m.group(g)
            np.matmul(w2[o], cols[:, k], out=y[s, o])  # one BLAS call per sample, made by numpy
    if b is not None:
        _add_bias(y, b)


def weight_grad(x, dy, stride, pad, groups, gw, scratch):
    """gw <- sum over the batch of dy @ columns.T, per group."""
    m = GemmPlan(x.shape, gw.shape, stride, pad, groups, scratch)
    g2, dy2 = gw.reshape(m.c_out, m.k), dy.reshape(m.n, m.c_out, m.oh * m.ow)
    g2[:] = 0.0
    for s, b in m.chunks():
        cols = m.columns(x[s])
        for g in range(groups):
            o, k = m.group(g)
            np.matmul(dy2[s, o], cols[:, k].transpose(0, 2, 1), out=m.grads[:b, o])
        _sum_chunk(m.grads[:b], g2)


def input_grad(dy, w, stride, pad, groups, dx, scratch):
    """dx <- col2im(w.T @ dy), per group; for a pointwise conv w.T @ dy is dx itself."""
    m = GemmPlan(dx.shape, w.shape, stride, pad, groups, scratch)
    w2, dy2 = w.reshape(m.c_out, m.k), dy.reshape(m.n, m.c_out, m.oh * m.ow)
    pointwise = _is_pointwise(m.kh, m.kw, stride, pad)
    for s, b in m.chunks():
        dcols = dx[s].reshape(b, dx.shape[1], -1) if pointwise else m.cols[:b]
        for g in range(groups):
            o, k = m.group(g)
            np.matmul(w2[o].T, dy2[s, o], out=dcols[:, k])
        if not pointwise:
            _col2im(dcols, pad, m.kh, m.kw, stride, m.padded, dx[s])
