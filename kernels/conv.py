"""2-D convolution of NCHW float32 tensors: forward, weight gradient, input gradient.

Stride, zero padding and groups (groups == C_in with one filter per channel is
depthwise; a 1x1 kernel is pointwise); no dilation. Shapes:

    x  (N, C_in, H, W)      w  (C_out, C_in/groups, KH, KW)      b  (C_out,) or None
    y  (N, C_out, OH, OW)   OH = (H + 2 pad - KH) // stride + 1, likewise OW

Two methods, chosen per layer shape by `conv2d_method`:

- "gemm": each sample's patches are copied into a column buffer (im2col, a Numba
  kernel) and multiplied by the filters with numpy's BLAS (np.matmul with out=);
  a 1x1 stride-1 unpadded conv needs no columns, the image itself is the matrix.
- "direct": Numba loops over kernel offsets, the inner loop along an output row,
  parallel over samples (forward, input grad) or output channels (weight grad).

Measured on AMD EPYC (2 cores, shared), N=128, seconds per call, gemm / direct:
      1->32 3x3 pad 1 at 28x28      fwd 0.0044 / 0.0046   wgrad 0.0040 / 0.0043
      32->64 3x3 pad 1 at 14x14     fwd 0.016  / 0.052    wgrad 0.016  / 0.048
      64 depthwise 3x3 at 14x14     fwd 0.13   / 0.0011   wgrad 0.19   / 0.0016
      64->128 1x1 at 14x14          fwd 0.0062 / 0.040    wgrad 0.0069 / 0.030
so grouped convs with few channels per group (depthwise) go direct, the rest gemm
(both about equal for 1 input channel). tools/bench.py prints the GFLOP/s.

The gemm method needs scratch: a caller-supplied float32 array of at least
`conv2d_scratch_size(...)` elements (one sample's columns, plus the per-sample
weight-gradient product for conv2d_weight_grad), so the memory planner can declare
it as a buffer; the direct method needs none (size 0, scratch may be None).
"""

import numpy as np
from numba import njit, prange

# Reductions may be reordered (so they vectorise); NaN and Inf keep their IEEE meaning.
FAST = {"reassoc", "contract", "nsz", "arcp"}

# Input channels per group up to which "direct" beats im2col + BLAS (depthwise has 1).
DIRECT_MAX_CHANNELS_PER_GROUP = 4

# Column-buffer elements per chunk of samples (1 MiB): big enough that a small conv
# is not one Python-level call per sample, small enough for a device's memory.
CHUNK_ELEMENTS = 1 << 18

_NO_BIAS = np.zeros(0, np.float32)


@njit(cache=True)
def _valid_span(j, stride, pad, size, out_size):
    # the outputs o in [lo, hi) whose input o * stride - pad + j lies inside [0, size)
    lo = max(0, -((j - pad) // stride))
    hi = min(out_size, (size - 1 + pad - j) // stride + 1)
    return lo, max(lo, hi)


# ---- the gemm method: im2col / col2im around np.matmul ----

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


@njit(cache=True, fastmath=FAST)
def _channel_sum(dy, gb):
    # dy: (N, C, P) float32; gb: (C,) float32 <- sum over samples and positions
    for c in range(dy.shape[1]):
        s = 0.0
        for n in range(dy.shape[0]):
            for p in range(dy.shape[2]):
                s += dy[n, c, p]
        gb[c] = s


def _is_pointwise(kh, kw, stride, pad):
    """A 1x1 stride-1 unpadded conv: the image itself is the column matrix."""
    return kh == kw == 1 and stride == 1 and pad == 0


class _Gemm:
    """The shapes of one gemm-method conv and its views of the scratch array. Samples go in
    chunks of `chunk`, so that small convs make few calls: [columns (chunk, C_in*KH*KW, OH*OW)
    | one padded sample (C_in, H+2p, W+2p) | per-sample weight grads (chunk, C_out, C_in/G*KH*KW)]."""

    def __init__(self, x_shape, w_shape, stride, pad, groups, scratch):
        self.n, c_in, h, w = x_shape
        self.c_out, cg_in, self.kh, self.kw = w_shape
        self.oh, self.ow = conv2d_output_size(h, w, self.kh, self.kw, stride, pad)
        self.stride, self.pad, self.groups = stride, pad, groups
        self.k, self.cg_out = cg_in * self.kh * self.kw, self.c_out // groups  # one group's GEMM sizes
        one_cols = c_in * self.kh * self.kw * self.oh * self.ow
        self.chunk = max(1, min(self.n, CHUNK_ELEMENTS // one_cols))
        n_cols, n_pad = self.chunk * one_cols, c_in * (h + 2 * pad) * (w + 2 * pad)
        self.size = n_cols + n_pad + self.chunk * self.c_out * self.k
        if scratch is not None:
            self.cols = scratch[:n_cols].reshape(self.chunk, c_in * self.kh * self.kw, self.oh * self.ow)
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


def _gemm_forward(x, w, stride, pad, groups, out, scratch):
    m = _Gemm(x.shape, w.shape, stride, pad, groups, scratch)
    w2, y = w.reshape(m.c_out, m.k), out.reshape(m.n, m.c_out, m.oh * m.ow)
    for s, _ in m.chunks():
        cols = m.columns(x[s])
        for g in range(groups):
            o, k = m.group(g)
            np.matmul(w2[o], cols[:, k], out=y[s, o])  # one BLAS call per sample, made by numpy


def _gemm_weight_grad(x, dy, stride, pad, groups, gw, scratch):
    m = _Gemm(x.shape, gw.shape, stride, pad, groups, scratch)
    g2, dy2 = gw.reshape(m.c_out, m.k), dy.reshape(m.n, m.c_out, m.oh * m.ow)
    g2[:] = 0.0
    for s, b in m.chunks():
        cols = m.columns(x[s])
        for g in range(groups):
            o, k = m.group(g)
            np.matmul(dy2[s, o], cols[:, k].transpose(0, 2, 1), out=m.grads[:b, o])
        _sum_chunk(m.grads[:b], g2)


def _gemm_input_grad(dy, w, stride, pad, groups, dx, scratch):
    m = _Gemm(dx.shape, w.shape, stride, pad, groups, scratch)
    w2, dy2 = w.reshape(m.c_out, m.k), dy.reshape(m.n, m.c_out, m.oh * m.ow)
    pointwise = _is_pointwise(m.kh, m.kw, stride, pad)
    for s, b in m.chunks():
        dcols = dx[s].reshape(b, dx.shape[1], -1) if pointwise else m.cols[:b]
        for g in range(groups):
            o, k = m.group(g)
            np.matmul(w2[o].T, dy2[s, o], out=dcols[:, k])
        if not pointwise:
            _col2im(dcols, pad, m.kh, m.kw, stride, m.padded, dx[s])


# ---- the direct method: loops over kernel offsets ----

@njit(cache=True, parallel=True, fastmath=FAST)
def _direct_forward(x, w, b, stride, pad, out):
    # x: (N, C_in, H, W) float32; w: (C_out, C_in/G, KH, KW) float32; b: (C_out,) or (0,) float32
    # out: (N, C_out, OH, OW) float32 <- conv(x, w) + b
    n_b, _, h, wd = x.shape
    c_out, cg_in, kh, kw = w.shape
    oh_n, ow_n = out.shape[2], out.shape[3]
    cg_out = c_out // (x.shape[1] // cg_in)
    for n in prange(n_b):
        for co in range(c_out):
            out[n, co] = b[co] if b.shape[0] else 0.0
            for ci in range(cg_in):
                c = (co // cg_out) * cg_in + ci
                for i in range(kh):
                    for j in range(kw):
                        wv = w[co, ci, i, j]
                        lo, hi = _valid_span(j, stride, pad, wd, ow_n)
                        for oh in range(oh_n):
                            ih = oh * stride - pad + i
                            if 0 <= ih < h:
                                for ow in range(lo, hi):
                                    out[n, co, oh, ow] += wv * x[n, c, ih, ow * stride - pad + j]


@njit(cache=True, parallel=True, fastmath=FAST)
def _direct_weight_grad(x, dy, stride, pad, gw):
    # x: (N, C_in, H, W) float32; dy: (N, C_out, OH, OW) float32
    # gw: (C_out, C_in/G, KH, KW) float32 <- sum over n, oh, ow of dy * the input pixel under each weight
    n_b, _, h, wd = x.shape
    c_out, cg_in, kh, kw = gw.shape
    oh_n, ow_n = dy.shape[2], dy.shape[3]
    cg_out = c_out // (x.shape[1] // cg_in)
    for co in prange(c_out):
        for ci in range(cg_in):
            c = (co // cg_out) * cg_in + ci
            for i in range(kh):
                for j in range(kw):
                    lo, hi = _valid_span(j, stride, pad, wd, ow_n)
                    s = 0.0
                    for n in range(n_b):
                        for oh in range(oh_n):
                            ih = oh * stride - pad + i
                            if 0 <= ih < h:
                                for ow in range(lo, hi):
                                    s += dy[n, co, oh, ow] * x[n, c, ih, ow * stride - pad + j]
                    gw[co, ci, i, j] = s


@njit(cache=True, parallel=True, fastmath=FAST)
def _direct_input_grad(dy, w, stride, pad, dx):
    # dy: (N, C_out, OH, OW) float32; w: (C_out, C_in/G, KH, KW) float32
    # dx: (N, C_in, H, W) float32 <- each dy times each weight, summed into the pixel it read
    n_b, c_in, h, wd = dx.shape
    c_out, cg_in, kh, kw = w.shape
    oh_n, ow_n = dy.shape[2], dy.shape[3]
    cg_out = c_out // (c_in // cg_in)
    for n in prange(n_b):
        dx[n] = 0.0
        for co in range(c_out):
            for ci in range(cg_in):
                c = (co // cg_out) * cg_in + ci
                for i in range(kh):
                    for j in range(kw):
                        wv = w[co, ci, i, j]
                        lo, hi = _valid_span(j, stride, pad, wd, ow_n)
                        for oh in range(oh_n):
                            ih = oh * stride - pad + i
                            if 0 <= ih < h:
                                for ow in range(lo, hi):
                                    dx[n, c, ih, ow * stride - pad + j] += wv * dy[n, co, oh, ow]


# ---- public wrappers: check once, then run ----

def conv2d_output_size(h, w, kh, kw, stride, pad):
    """(OH, OW) of a conv over an H x W image; ValueError if the kernel does not fit."""
    if stride < 1 or pad < 0 or min(h, w, kh, kw) < 1:
        raise ValueError(f"conv2d: stride {stride}, pad {pad}, image {h}x{w}, kernel {kh}x{kw}: "
                         "need stride >= 1, pad >= 0 and sizes >= 1")
    oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"conv2d: a {kh}x{kw} kernel with stride {stride}, pad {pad} "
                         f"does not fit a {h}x{w} image; use a smaller kernel or more padding")
    return oh, ow


def conv2d_method(c_in, groups):
    """'direct' for grouped convs with few channels per group (depthwise), else 'gemm'."""
    return "direct" if c_in // groups <= DIRECT_MAX_CHANNELS_PER_GROUP and groups > 1 else "gemm"


def conv2d_scratch_size(x_shape, w_shape, stride, pad, groups):
    """float32 elements of scratch the three calls need for these shapes (0 when direct)."""
    c_in, h, wd = x_shape[1:]
    c_out, cg_in, kh, kw = w_shape
    if conv2d_method(c_in, groups) == "direct":
        return 0
    return _Gemm(x_shape, w_shape, stride, pad, groups, None).size


def _check(name, a, ndim):
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.ndim != ndim or not a.flags.c_contiguous:
        got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
        raise ValueError(f"conv2d: {name} must be a C-contiguous {ndim}-D float32 array, got {got}")


def _check_conv(x_shape, w_shape, y_shape, stride, pad, groups):
    """The shapes of one conv chain: x (N, C_in, H, W), w (C_out, C_in/G, KH, KW), y (N, C_out, OH, OW)."""
    n, c_in, h, wd = x_shape
    c_out, cg_in, kh, kw = w_shape
    if min(n, c_in, c_out, cg_in) < 1:
        raise ValueError(f"conv2d: shapes x{tuple(x_shape)} w{tuple(w_shape)} have an empty dimension")
    if groups < 1 or c_in % groups or c_out % groups:
        raise ValueError(f"conv2d: groups={groups} must divide C_in={c_in} and C_out={c_out}")
    oh, ow = conv2d_output_size(h, wd, kh, kw, stride, pad)
    if cg_in != c_in // groups or tuple(y_shape) != (n, c_out, oh, ow):
        raise ValueError(f"conv2d: shapes x{tuple(x_shape)} w{tuple(w_shape)} y{tuple(y_shape)} do not chain "
                         f"(stride {stride}, pad {pad}, groups {groups}: want w (C_out, {c_in // groups}, KH, KW), "
                         f"y ({n}, C_out, {oh}, {ow}))")


def _integers(stride, pad, groups):
    """stride, pad, groups as Python ints (one compiled variant); ValueError for anything else."""
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (stride, pad, groups)):
        raise ValueError(f"conv2d: stride, pad and groups must be integers, got {stride!r}, {pad!r}, {groups!r}")
    return int(stride), int(pad), int(groups)


def _scratch(scratch, x_shape, w_shape, stride, pad, groups):
    need = conv2d_scratch_size(x_shape, w_shape, stride, pad, groups)
    if need == 0:
        return None
    if scratch is None:
        raise ValueError(f"conv2d: this conv needs scratch of {need} float32 (conv2d_scratch_size)")
    _check("scratch", scratch, 1)
    if scratch.shape[0] < need:
        raise ValueError(f"conv2d: scratch has {scratch.shape[0]} float32, this conv needs {need}")
    return scratch[:need]


def conv2d_forward(x, w, b, stride, pad, groups, out, scratch=None):
    """out <- conv(x, w) + b.  x: (N, C_in, H, W), w: (C_out, C_in/groups, KH, KW), b: (C_out,) or None,
    out: (N, C_out, OH, OW), scratch: (>= conv2d_scratch_size,) float32 or None when that is 0."""
    stride, pad, groups = _integers(stride, pad, groups)
    _check("x", x, 4), _check("w", w, 4), _check("out", out, 4)
    if b is not None:
        _check("b", b, 1)
        if b.shape[0] != w.shape[0]:
            raise ValueError(f"conv2d: b{b.shape} must have one entry per output channel ({w.shape[0]})")
    _check_conv(x.shape, w.shape, out.shape, stride, pad, groups)
    scratch = _scratch(scratch, x.shape, w.shape, stride, pad, groups)
    if scratch is None:
        _direct_forward(x, w, _NO_BIAS if b is None else b, stride, pad, out)
        return out
    _gemm_forward(x, w, stride, pad, groups, out, scratch)
    if b is not None:
        _add_bias(out.reshape(out.shape[0], out.shape[1], -1), b)
    return out


def conv2d_weight_grad(x, dy, stride, pad, groups, gw, gb, scratch=None):
    """The local weight gradient: gw <- dLoss/dw, gb <- dLoss/db (gb may be None) from the layer's own
    input x: (N, C_in, H, W) and output gradient dy: (N, C_out, OH, OW); gw: (C_out, C_in/groups, KH, KW)."""
    stride, pad, groups = _integers(stride, pad, groups)
    _check("x", x, 4), _check("dy", dy, 4), _check("gw", gw, 4)
    if gb is not None:
        _check("gb", gb, 1)
        if gb.shape[0] != gw.shape[0]:
            raise ValueError(f"conv2d: gb{gb.shape} must have one entry per output channel ({gw.shape[0]})")
    _check_conv(x.shape, gw.shape, dy.shape, stride, pad, groups)
    scratch = _scratch(scratch, x.shape, gw.shape, stride, pad, groups)
    if scratch is None:
        _direct_weight_grad(x, dy, stride, pad, gw)
    else:
        _gemm_weight_grad(x, dy, stride, pad, groups, gw, scratch)
    if gb is not None:
        _channel_sum(dy.reshape(dy.shape[0], dy.shape[1], -1), gb)
    return gw, gb


def conv2d_input_grad(dy, w, stride, pad, groups, dx, scratch=None):
    """dx <- dLoss/dx, for backprop inside a block.  dy: (N, C_out, OH, OW), w: (C_out, C_in/groups, KH, KW),
    dx: (N, C_in, H, W)."""
    stride, pad, groups = _integers(stride, pad, groups)
    _check("dy", dy, 4), _check("w", w, 4), _check("dx", dx, 4)
    _check_conv(dx.shape, w.shape, dy.shape, stride, pad, groups)
    scratch = _scratch(scratch, dx.shape, w.shape, stride, pad, groups)
    if scratch is None:
        _direct_input_grad(dy, w, stride, pad, dx)
    else:
        _gemm_input_grad(dy, w, stride, pad, groups, dx, scratch)
    return dx
