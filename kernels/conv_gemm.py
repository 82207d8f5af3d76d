"""The gemm method of kernels/conv.py: im2col / col2im (Numba) around numpy's BLAS.

Samples go in tiles: the patches of a tile are copied into a column buffer and
np.matmul multiplies them by the filters. A tile holds as many samples as keep their
columns and output inside the L2 cache (its size read from the system, `tile_samples`),
so BLAS reads the columns while they are still cached, and the scratch stays about
one L2 whatever the batch.

- Forward and input gradient: one (C_in/G*KH*KW, OH*OW) column matrix per sample, one
  BLAS call per sample and group (looped by numpy) writing straight into y or the
  column gradient; the bias is added to the tile's output while it is cached. A 1x1
  stride-1 unpadded conv needs no columns: the image itself is the matrix.
- Weight gradient: per-sample products dy[b] @ cols[b].T summed over the tile, or,
  when copying dy is cheaper than that sum (few output pixels, many filter taps: the
  3x3 convs past the first), one product per tile and group: the columns laid out
  channel-major, (C_in*KH*KW, B*OH*OW), times dy copied to (C_out, B*OH*OW).

The batch is shared among threads (kernels/conv_threads.py: as many as BLAS has, or
spread_over's; contiguous shares of samples, each with its own GemmPlan in its own part
of the scratch), each thread running its tiles with BLAS on one thread meanwhile. A
weight gradient is summed per share, then the shares in order, so a run on the same
thread count gives the same bits. Scratch sized for fewer threads than BLAS has runs on one.

All buffers are views of the caller's scratch (scratch_size float32).
"""

import functools
import glob
import os

import numpy as np
from numba import njit

from . import conv_threads
from .ff_loss import FAST

# L2 bytes when the system does not say (no /sys cache entries): half the L2 of the
# smallest boards edgeff targets (512 KiB on a Pi 3 or Zero 2 W), so that a tile never
# overflows a real cache.
FALLBACK_L2_BYTES = 256 * 1024


CACHE_DIR = "/sys/devices/system/cpu/cpu0/cache"


def _l2_entry(cache_dir, name):
    """The text of the first CPU's level-2 cache entry `name` (index*/level is 2), or None."""
    for index in sorted(glob.glob(os.path.join(cache_dir, "index*"))):
        try:
            with open(os.path.join(index, "level")) as f:
                if f.read().strip() != "2":
                    continue
            with open(os.path.join(index, name)) as f:
                return f.read().strip()
        except OSError:
            continue
    return None


@functools.lru_cache(maxsize=None)
def l2_cache_bytes(cache_dir=CACHE_DIR):
    """The first CPU's L2 cache size in bytes, from the kernel's cache entries (size such as
    "1024K"); FALLBACK_L2_BYTES when there are none."""
    size = _l2_entry(cache_dir, "size") or ""
    if size[:-1].isdigit() and size[-1] in "KM":
        return int(size[:-1]) * (1024 if size[-1] == "K" else 1024 * 1024)
    return FALLBACK_L2_BYTES


@functools.lru_cache(maxsize=None)
def l2_sharers(cache_dir=CACHE_DIR):
    """How many CPUs share the first CPU's L2 cache (its shared_cpu_list, like "0-3"); 1 when unknown."""
    try:
        spans = [part.split("-") for part in (_l2_entry(cache_dir, "shared_cpu_list") or "").split(",")]
        return max(1, sum(int(span[-1]) - int(span[0]) + 1 for span in spans))
    except ValueError:
        return 1


def tile_samples(n, per_sample_floats, workers=1):
    """Samples per tile: as many of the n as fit per_sample_floats each into a worker's part of
    the L2 cache (all of it, unless workers share it), at least 1."""
    l2 = l2_cache_bytes() // min(workers, l2_sharers())
    return max(1, min(n, l2 // 4 // per_sample_floats))


@njit(cache=True, nogil=True)
def _pad_into(x, pad, xp):
    # x: (C, H, W) float32 one sample; xp: (C, H + 2 pad, W + 2 pad) float32, border already 0 <- x inside
    c_in, h, w = x.shape
    for c in range(c_in):
        for i in range(h):
            for j in range(w):
                xp[c, pad + i, pad + j] = x[c, i, j]


@njit(cache=True, nogil=True)
def _crop_from(xp, pad, x):
    # xp: (C, H + 2 pad, W + 2 pad) float32; x: (C, H, W) float32 <- the inside of xp
    c_in, h, w = x.shape
    for c in range(c_in):
        for i in range(h):
            for j in range(w):
                x[c, i, j] = xp[c, pad + i, pad + j]


@njit(cache=True, nogil=True)
def _im2col(x, pad, kh, kw, stride, xp, cols, sample_stride, row_stride):
    # x: (B, C, H, W) float32 a tile of samples
    # xp: (C, H + 2 pad, W + 2 pad) float32 scratch, border already 0
    # cols: flat float32 <- at b * sample_stride + (c * KH * KW + i * KW + j) * row_stride + oh * OW + ow,
    #       sample b's padded pixel (c, oh * stride + i, ow * stride + j): a (B, C*KH*KW, OH*OW) stack
    #       of per-sample matrices, or one channel-major (C*KH*KW, B*OH*OW) matrix
    oh_n = (xp.shape[1] - kh) // stride + 1
    ow_n = (xp.shape[2] - kw) // stride + 1
    for b in range(x.shape[0]):
        _pad_into(x[b], pad, xp)
        for c in range(xp.shape[0]):
            for i in range(kh):
                for j in range(kw):
                    dst = cols[b * sample_stride + ((c * kh + i) * kw + j) * row_stride:]
                    for oh in range(oh_n):
                        src, d = xp[c, oh * stride + i, j:], dst[oh * ow_n:]
                        if stride == 1:  # a plain copy, which vectorises
                            for ow in range(ow_n):
                                d[ow] = src[ow]
                        else:
                            for ow in range(ow_n):
                                d[ow] = src[ow * stride]


@njit(cache=True, nogil=True)
def _col2im(cols, pad, kh, kw, stride, dxp, dx):
    # cols: (B, C * KH * KW, OH * OW) float32 gradient of a tile's columns
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
                        if stride == 1:  # a plain add, which vectorises
                            for ow in range(ow_n):
                                d[ow] += s[ow]
                        else:
                            for ow in range(ow_n):
                                d[ow * stride] += s[ow]
        _crop_from(dxp, pad, dx[b])


@njit(cache=True, nogil=True, fastmath=FAST)
def _sum_tile(per_sample, g):
    # per_sample: (B, C, K) float32; g: (C, K) float32 += the sum over B
    for b in range(per_sample.shape[0]):
        for c in range(g.shape[0]):
            for k in range(g.shape[1]):
                g[c, k] += per_sample[b, c, k]


@njit(cache=True, nogil=True)
def _to_channel_major(y, t):
    # y: (B, C, P) float32; t: (C, B * P) float32 <- t[c, b * P + q] = y[b, c, q]
    n_b, c_n, p = y.shape
    for b in range(n_b):
        for c in range(c_n):
            src, dst = y[b, c], t[c, b * p:]
            for q in range(p):
                dst[q] = src[q]


@njit(cache=True, nogil=True)
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
    """The shapes of one gemm-method conv over a share of samples and its views of the scratch
    array: [columns of a tile (tile, C_in*KH*KW, OH*OW) | one padded sample (C_in, H+2p, W+2p) |
    per-sample weight grads (tile, C_out, C_in/G*KH*KW), or when channel_major dy (C_out,
    tile*OH*OW) and one tile's weight grad (C_out, C_in/G*KH*KW) | the share's weight grad
    (C_out, C_in/G*KH*KW)]; workers: how many shares run at once (they split the L2 cache if
    they share it)."""

    def __init__(self, x_shape, w_shape, stride, pad, groups, scratch, workers=1):
        self.n, c_in, h, w = x_shape
        self.c_out, cg_in, self.kh, self.kw = w_shape
        self.oh, self.ow = (h + 2 * pad - self.kh) // stride + 1, (w + 2 * pad - self.kw) // stride + 1
        self.stride, self.pad, self.groups = stride, pad, groups
        self.k, self.cg_out = cg_in * self.kh * self.kw, self.c_out // groups  # one group's GEMM sizes
        self.rows, p = c_in * self.kh * self.kw, self.oh * self.ow
        self.pointwise = _is_pointwise(self.kh, self.kw, stride, pad)
        # floats one sample's weight gradient copies: dy (and x when pointwise) channel-major,
        # against writing and summing a per-sample gradient
        self.channel_major = self.c_out * p + (c_in * p if self.pointwise else 0) < 2 * self.c_out * self.k
        self.tile = tile_samples(self.n, (self.rows + self.c_out) * p, workers)
        n_cols = 0 if self.pointwise and not self.channel_major else self.tile * self.rows * p
        n_pad = c_in * (h + 2 * pad) * (w + 2 * pad)
        n_grads = self.c_out * (self.tile * p + self.k if self.channel_major else self.tile * self.k)
        grads_end = n_cols + n_pad + n_grads
        self.size = grads_end + self.c_out * self.k
        if scratch is not None:
            self.cols = scratch[:n_cols]
            self.padded = scratch[n_cols:n_cols + n_pad].reshape(c_in, h + 2 * pad, w + 2 * pad)
            self.grads = scratch[n_cols + n_pad:grads_end]
            self.share_grad = scratch[grads_end:self.size].reshape(self.c_out, self.k)
            self.padded[:] = 0.0  # the border stays 0; _pad_into writes the inside

    def tiles(self):
        """(sample slice, how many) for every tile of the batch."""
        for n0 in range(0, self.n, self.tile):
            yield slice(n0, min(n0 + self.tile, self.n)), min(self.tile, self.n - n0)

    def columns(self, x):
        """A tile x: (B, C_in, H, W) as (B, C_in*KH*KW, OH*OW) matrices the filters multiply."""
        if self.pointwise:
            return x.reshape(x.shape[0], x.shape[1], -1)
        b, p = x.shape[0], self.oh * self.ow
        cols = self.cols[:b * self.rows * p]
        _im2col(x, self.pad, self.kh, self.kw, self.stride, self.padded, cols, self.rows * p, p)
        return cols.reshape(b, self.rows, p)

    def channel_major_columns(self, x):
        """A tile x: (B, C_in, H, W) as one (C_in*KH*KW, B*OH*OW) matrix."""
        columns = x.shape[0] * self.oh * self.ow
        cols = self.cols[:self.rows * columns]
        _im2col(x, self.pad, self.kh, self.kw, self.stride, self.padded, cols, self.oh * self.ow, columns)
        return cols.reshape(self.rows, columns)

    def group(self, g):
        """(output-channel rows, column rows) of group g."""
        return slice(g * self.cg_out, (g + 1) * self.cg_out), slice(g * self.k, (g + 1) * self.k)


def _share_size(x_shape, w_shape, stride, pad, groups, shares):
    """float32 elements of each share's part of the scratch (the first share is the largest)."""
    return GemmPlan((shares[0].stop, *x_shape[1:]), w_shape, stride, pad, groups, None, len(shares)).size


def scratch_size(x_shape, w_shape, stride, pad, groups, workers=1):
    """float32 elements of scratch the three calls need to run on `workers` threads."""
    shares = conv_threads.shares(x_shape[0], workers)
    return len(shares) * _share_size(x_shape, w_shape, stride, pad, groups, shares)


def _plans(x_shape, w_shape, stride, pad, groups, scratch):
    """[(sample slice, its GemmPlan in its own part of scratch)]: one share per thread
    (conv_threads.count()) when the scratch holds that many, else one share."""
    shares = conv_threads.shares(x_shape[0], conv_threads.count())
    size = _share_size(x_shape, w_shape, stride, pad, groups, shares)
    if len(shares) * size > scratch.size:          # planned for fewer threads
        shares = conv_threads.shares(x_shape[0], 1)
        size = _share_size(x_shape, w_shape, stride, pad, groups, shares)
    return [(s, GemmPlan((s.stop - s.start, *x_shape[1:]), w_shape, stride, pad, groups,
                         scratch[i * size:(i + 1) * size], len(shares))) for i, s in enumerate(shares)]


def _forward_share(m, x, w2, b, y):
    for s, _ in m.tiles():
        cols = m.columns(x[s])
        for g in range(m.groups):
            o, k = m.group(g)
            np.matmul(w2[o], cols[:, k], out=y[s, o])  # one BLAS call per sample, made by numpy
        if b is not None:
            _add_bias(y[s], b)


def forward(x, w, b, stride, pad, groups, out, scratch):
    """out <- conv(x, w) + b (b may be None)."""
    n, c_out = x.shape[0], w.shape[0]
    w2, y = w.reshape(c_out, -1), out.reshape(n, c_out, -1)
    conv_threads.run([functools.partial(_forward_share, m, x[s], w2, b, y[s])
                      for s, m in _plans(x.shape, w.shape, stride, pad, groups, scratch)])


def _weight_grad_share(m, x, dy2, g2):
    g2[:] = 0.0
    for s, b in m.tiles():
        if m.channel_major:
            cols, columns = m.channel_major_columns(x[s]), b * m.oh * m.ow
            dy_t = m.grads[:m.c_out * columns].reshape(m.c_out, columns)
            tile_grad = m.grads[-m.c_out * m.k:].reshape(m.c_out, m.k)
            _to_channel_major(dy2[s], dy_t)
            for g in range(m.groups):
                o, k = m.group(g)
                np.matmul(dy_t[o], cols[k].T, out=tile_grad[o])
            np.add(g2, tile_grad, out=g2)
        else:
            cols, per_sample = m.columns(x[s]), m.grads[:b * m.c_out * m.k].reshape(b, m.c_out, m.k)
            for g in range(m.groups):
                o, k = m.group(g)
                np.matmul(dy2[s, o], cols[:, k].transpose(0, 2, 1), out=per_sample[:, o])
            _sum_tile(per_sample, g2)


def weight_grad(x, dy, stride, pad, groups, gw, scratch):
    """gw <- sum over the batch of dy @ columns.T, per group: each share's sum, then the shares in order."""
    n, c_out = x.shape[0], gw.shape[0]
    g2, dy2 = gw.reshape(c_out, -1), dy.reshape(n, c_out, -1)
    plans = _plans(x.shape, gw.shape, stride, pad, groups, scratch)
    sums = [g2] + [m.share_grad for _, m in plans[1:]]
    conv_threads.run([functools.partial(_weight_grad_share, m, x[s], dy2[s], g) for (s, m), g in zip(plans, sums)])
    for g in sums[1:]:
        np.add(g2, g, out=g2)


def _input_grad_share(m, w2, dy2, dx):
    p = m.oh * m.ow
    for s, b in m.tiles():
        dcols = dx[s].reshape(b, dx.shape[1], -1) if m.pointwise else m.cols[:b * m.rows * p].reshape(b, m.rows, p)
        for g in range(m.groups):
            o, k = m.group(g)
            np.matmul(w2[o].T, dy2[s, o], out=dcols[:, k])
        if not m.pointwise:
            _col2im(dcols, m.pad, m.kh, m.kw, m.stride, m.padded, dx[s])


def input_grad(dy, w, stride, pad, groups, dx, scratch):
    """dx <- col2im(w.T @ dy), per group; for a pointwise conv w.T @ dy is dx itself."""
    n, c_out = dx.shape[0], w.shape[0]
    w2, dy2 = w.reshape(c_out, -1), dy.reshape(n, c_out, -1)
    conv_threads.run([functools.partial(_input_grad_share, m, w2, dy2[s], dx[s])
                      for s, m in _plans(dx.shape, w.shape, stride, pad, groups, scratch)])
