"""Cortical feedback between conv blocks (--algo ffcl --feedback-steps K on a conv net, --hybrid none).

At settling step t > 0, block k's pre-activation (its first layer's output, a conv's, before its
activation) also takes block k + 1's layer-normalised output of step t - 1, through a learned
1x1 conv F_k (C_{k+1} -> C_k, no bias) and nearest-neighbour upsampling by whole factors (fh, fw)
to the pre-activation's size. The two commute, so F_k runs at block k + 1's (smaller) size:
    forward   t = conv1x1(h_{k+1}, F_k)            (N, C_k, H_{k+1}, W_{k+1})
              z_k += upsample(t, fh, fw)            kernels/pool.upsample_add
    gradient  dF_k = pointwise weight gradient of (h_{k+1}, window_sum(dz_k, fh, fw)): the
              upsampling's adjoint sums dz over each fh x fw window (kernels/pool.window_sum)
h_{k+1} is a constant to block k: no gradient reaches block k + 1.
"""

from typing import NamedTuple

import numpy as np

from ..kernels import conv, pool
from ..kernels import reference as ref
from .scratch import Scratch


class Link(NamedTuple):
    block: int           # k: the block fed back to
    weight_shape: tuple  # F_k: (C_k, C_{k+1}, 1, 1)
    above_shape: tuple   # (C_{k+1}, H_{k+1}, W_{k+1}) block k + 1's output, the feedback's input
    pre_shape: tuple     # (C_k, H, W) block k's pre-activation
    fh: int
    fw: int

    @property
    def name(self):
        return f"{self.block}.fb"

    @property
    def product_shape(self):
        """t = conv1x1(h_{k+1}, F_k): (C_k, H_{k+1}, W_{k+1})."""
        return (self.pre_shape[0], *self.above_shape[1:])

    def scratch_size(self, n):
        """The pointwise conv's workspace (its forward and weight gradient) on n samples."""
        return Scratch(0, conv.conv2d_scratch_size((n, *self.above_shape), self.weight_shape, 1, 0, 1))


def links(placed, n_blocks):
    """The Link of every block but the last, from block_layers' Placed layers (a list). A ValueError
    names a block that does not start with a conv or whose size is no whole multiple of the next's output."""
    first, out_shape = {}, {}
    for lay in placed:
        if not lay.head:
            first.setdefault(lay.block, lay)
            out_shape[lay.block] = lay.out_shape
    found = []
    for k in range(n_blocks - 1):
        pre, above = first[k], out_shape[k + 1]
        if pre.spec["kind"] != "conv2d":
            raise ValueError(f"feedback: block {k + 1} starts with {pre.spec['kind']}, not a conv")
        (c, h, w), (c_up, h_up, w_up) = pre.out_shape, above
        if h % h_up or w % w_up:
            raise ValueError(f"feedback: block {k + 2}'s output {c_up}x{h_up}x{w_up} does not upsample to block "
                             f"{k + 1}'s pre-activation {c}x{h}x{w} by a whole factor; use images whose size "
                             "the pools divide")
        found.append(Link(k, (c, c_up, 1, 1), above, pre.out_shape, h // h_up, w // w_up))
    return found


def init(weight, rng):
    """Uniform in +-1/sqrt(C_{k+1}), as a 1x1 conv's weights."""
    weight[...] = rng.uniform(-1, 1, weight.shape) / np.sqrt(weight.shape[1])


def add(link, weight, above, product, pre, workspace):
    """pre += upsample(conv1x1(above, weight)); product: (N, *link.product_shape) room for the conv."""
    conv.conv2d_forward(above, weight, None, 1, 0, 1, product, workspace)
    pool.upsample_add(product, link.fh, link.fw, pre)


def weight_grad(link, above, dpre, product, grad, workspace):
    """grad <- dLoss/dF_k from the feedback's input `above` and dLoss/dpre; product: room as in add."""
    pool.window_sum(dpre, link.fh, link.fw, product)
    conv.conv2d_weight_grad(above, product, 1, 0, 1, grad, None, workspace)


def reference(link, weight, above):
    """The NumPy twin: the term added to block k's pre-activation, float64 (N, *link.pre_shape)."""
    t = ref.conv2d_forward(above, weight, None, 1, 0, 1, np.empty((len(above), *link.product_shape)))
    return np.repeat(np.repeat(t, link.fh, axis=2), link.fw, axis=3)


def onnx_nodes(g, link, weight_name, scales_name, above, pre):
    """pre + Resize(Conv(above, F_k), scales), nearest, as ONNX nodes on graph g (export.Graph; scales_name:
    an initializer of scales_of(link)); returns its output's name."""
    t = g.op("Conv", above, weight_name, kernel_shape=[1, 1])
    up = g.op("Resize", t, "", scales_name, mode="nearest", coordinate_transformation_mode="asymmetric",
              nearest_mode="floor")
    return g.op("Add", pre, up)


def scales_of(link):
    """Resize's scales: (1, 1, fh, fw)."""
    return np.array([1, 1, link.fh, link.fw], np.float32)
