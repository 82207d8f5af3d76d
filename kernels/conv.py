"""2-D convolution of NCHW float32 tensors: forward, weight gradient, input gradient.

Stride, zero padding and groups (groups == C_in with one filter per channel is
depthwise; a 1x1 kernel is pointwise); no dilation. Shapes:

    x  (N, C_in, H, W)      w  (C_out, C_in/groups, KH, KW)      b  (C_out,) or None
    y  (N, C_out, OH, OW)   OH = (H + 2 pad - KH) // stride + 1, likewise OW

Two methods, chosen per layer shape by `conv2d_method`:

- "gemm" (kernels/conv_gemm.py): the samples go in tiles sized to the L2 cache; a
  tile's patches are copied into a column buffer (im2col, a Numba kernel) and
  multiplied by the filters with numpy's BLAS (np.matmul with out=); a 1x1 stride-1
  unpadded conv uses the image itself.
- "direct" (kernels/conv_direct.py): Numba loops over kernel offsets, the inner
  loop along an output row, parallel over samples or output channels.

Measured on AMD EPYC (lscpu), 2 cores (shared with other jobs), N=128, ms per call,
gemm / direct, best of 10 interleaved (tools/bench.py --conv-methods):
                                 forward          weight grad      input grad
      3x3 1->32 pad 1 at 28x28    1.1 / 7.6        1.9 / 7.8        1.6 / 7.1
      3x3 32->64 pad 1 at 14x14   7.0 / 209        7.2 / 258        8.8 / 206
      depthwise 3x3 64 at 14x14  10.2 / 5.3       11.1 / 6.8       28.3 / 5.4
      1x1 64->128 at 14x14        2.7 / 113        3.1 / 142        2.6 / 109
      3x3 64->64 at 14x14 with 2, 4, 8 channels per group: gemm 2x, 4x, 10x faster
so depthwise convs go direct (2x; 5x for the input gradient) and all others gemm.
The direct loops pay per short output row. With BLAS spreading each product over
the cores and im2col serial, the gemm method spent a quarter of its time in im2col
with one core idle (a Numba parallel loop costs 30-45 us to start here, workqueue
layer, more than a tile's im2col gains); so the batch is shared among the threads
instead, each copying and multiplying its own samples with BLAS on one thread
(conv_gemm.py): 3x3 32->64 forward 0.54 -> 0.71 of the GEMM peak. tools/bench.py
prints GFLOP/s against numpy's GEMM. A conv with one input channel is bound by
writing its output (9 multiply-adds per output value), not by arithmetic.

The gemm method needs scratch: a caller-supplied float32 array of
`conv2d_scratch_size(...)` elements, per thread the columns of a tile of samples (about
one L2 cache whatever the batch), one zero-padded sample and the weight gradients, so
the memory planner can declare it as one workspace buffer shared by the three calls;
the direct method needs none (size 0, scratch may be None). The size follows the L2
cache and the cores of the machine that plans (conv_gemm.l2_cache_bytes,
blas.cores); scratch of at least the one-thread size (workers=1) is accepted and
runs on as many threads as it holds parts for, else on one. Nothing is allocated per
call beyond array views and one small job per thread.
"""

import numpy as np
from numba import njit

from . import blas, conv_direct, conv_gemm
from .ff_loss import FAST

_NO_BIAS = np.zeros(0, np.float32)


@njit(cache=True, fastmath=FAST)
def _channel_sum(dy, gb):
    # dy: (N, C, P) float32; gb: (C,) float32 <- sum over samples and positions
    for c in range(dy.shape[1]):
        s = 0.0
        for n in range(dy.shape[0]):
            for p in range(dy.shape[2]):
                s += dy[n, c, p]
        gb[c] = s


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
    """'direct' for depthwise convs (one input channel per group, several groups), else 'gemm'."""
    return "direct" if groups > 1 and c_in == groups else "gemm"


def conv2d_scratch_size(x_shape, w_shape, stride, pad, groups, workers=None):
    """float32 elements of scratch the three calls need for these shapes (0 when direct) to run on
    `workers` threads (default: this process's cores; with less scratch they run on one)."""
    conv2d_output_size(x_shape[2], x_shape[3], w_shape[2], w_shape[3], stride, pad)  # it fits
    if conv2d_method(x_shape[1], groups) == "direct":
        return 0
    return conv_gemm.scratch_size(x_shape, w_shape, stride, pad, groups, workers or blas.cores())


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


def _check_bias(name, b, c_out):
    """b: (C_out,) float32, or None for no bias."""
    if b is not None:
        _check(name, b, 1)
        if b.shape[0] != c_out:
            raise ValueError(f"conv2d: {name}{b.shape} must have one entry per output channel ({c_out})")


def _integers(stride, pad, groups):
    """stride, pad, groups as Python ints (one compiled variant); ValueError for anything else."""
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (stride, pad, groups)):
        raise ValueError(f"conv2d: stride, pad and groups must be integers, got {stride!r}, {pad!r}, {groups!r}")
    return int(stride), int(pad), int(groups)


def _scratch(scratch, x_shape, w_shape, stride, pad, groups):
    need = conv2d_scratch_size(x_shape, w_shape, stride, pad, groups, workers=1)
    if need == 0:
        return None
    if scratch is None:
        raise ValueError(f"conv2d: this conv needs scratch of {need} float32 (conv2d_scratch_size)")
    _check("scratch", scratch, 1)
    if scratch.shape[0] < need:
        raise ValueError(f"conv2d: scratch has {scratch.shape[0]} float32, this conv needs {need}")
    return scratch


def conv2d_forward(x, w, b, stride, pad, groups, out, scratch=None):
    """out <- conv(x, w) + b.  x: (N, C_in, H, W), w: (C_out, C_in/groups, KH, KW), b: (C_out,) or None,
    out: (N, C_out, OH, OW), scratch: (>= conv2d_scratch_size,) float32 or None when that is 0."""
    stride, pad, groups = _integers(stride, pad, groups)
    _check("x", x, 4), _check("w", w, 4), _check("out", out, 4)
    _check_bias("b", b, w.shape[0])
    _check_conv(x.shape, w.shape, out.shape, stride, pad, groups)
    scratch = _scratch(scratch, x.shape, w.shape, stride, pad, groups)
    if scratch is None:
        conv_direct.forward(x, w, _NO_BIAS if b is None else b, stride, pad, out)
    else:
        conv_gemm.forward(x, w, b, stride, pad, groups, out, scratch)
    return out


def conv2d_weight_grad(x, dy, stride, pad, groups, gw, gb, scratch=None):
    """The local weight gradient: gw <- dLoss/dw, gb <- dLoss/db (gb may be None) from the layer's own
    input x: (N, C_in, H, W) and output gradient dy: (N, C_out, OH, OW); gw: (C_out, C_in/groups, KH, KW)."""
    stride, pad, groups = _integers(stride, pad, groups)
    _check("x", x, 4), _check("dy", dy, 4), _check("gw", gw, 4)
    _check_bias("gb", gb, gw.shape[0])
    _check_conv(x.shape, gw.shape, dy.shape, stride, pad, groups)
    scratch = _scratch(scratch, x.shape, gw.shape, stride, pad, groups)
    if scratch is None:
        conv_direct.weight_grad(x, dy, stride, pad, gw)
    else:
        conv_gemm.weight_grad(x, dy, stride, pad, groups, gw, scratch)
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
        conv_direct.input_grad(dy, w, stride, pad, dx)
    else:
        conv_gemm.input_grad(dy, w, stride, pad, groups, dx, scratch)
    return dx
