"""se: squeeze-excite (MobileNetV3): each channel scaled by a gate computed from all channels' means,

    s = mean over H x W of x           (N, C)
    a = relu(s w1^T + b1)              (N, mid)    w1: (mid, C, 1, 1), a 1x1 conv
    u = a w2^T + b2                    (N, C)      w2: (C, mid, 1, 1)
    y = x * hardsigmoid(u)             per channel

spec: {"kind": "se", "mid": channels of the squeeze}.  A block-net layer kind (see conv2d.py).
s, a, u and the backward's du, da live in its scratch (a few (N, C) arrays); backward
recomputes them from x rather than keep them between the two steps.
"""

import numpy as np

from ..kernels import activation, mobile
from ..kernels import reference as ref
from . import conv2d
from .scratch import Scratch

FIELDS = {"mid": (1, 1 << 14)}
IN_PLACE = False


def out_shape(spec, shape):
    return tuple(shape)


def param_shapes(spec, shape):
    c, mid = shape[0], spec["mid"]
    return {"w1": (mid, c, 1, 1), "b1": (mid,), "w2": (c, mid, 1, 1), "b2": (c,)}


def init(spec, shape, params, rng):
    """Each 1x1 conv as conv2d initialises it."""
    for w, b in (("w1", "b1"), ("w2", "b2")):
        conv2d.init(None, None, {"w": params[w], "b": params[b]}, rng)


def scratch_size(spec, shape, n):
    """s, a, u, du, da: activations."""
    return Scratch(n * (3 * shape[0] + 2 * spec["mid"]), 0)


def _regions(spec, x, scratch):
    """Views s, a, u, du, da of the scratch for input x."""
    n, c, mid = x.shape[0], x.shape[1], spec["mid"]
    out, at = [], 0
    for width in (c, mid, c, c, mid):
        out.append(scratch.activations[at:at + n * width].reshape(n, width))
        at += n * width
    return out


def _squeeze(spec, params, x, s, a, u):
    """s, a, u of x (module docstring)."""
    c, mid = x.shape[1], spec["mid"]
    mobile.channel_mean(x, s)
    np.matmul(s, params["w1"].reshape(mid, c).T, out=a)
    a += params["b1"]
    np.maximum(a, 0.0, out=a)
    np.matmul(a, params["w2"].reshape(c, mid).T, out=u)
    u += params["b2"]


def forward(spec, params, x, y, scratch):
    s, a, u, _, _ = _regions(spec, x, scratch)
    _squeeze(spec, params, x, s, a, u)
    mobile.gate(x, u, y)


def backward(spec, params, x, y, dy, dx, grads, scratch):
    c, mid = x.shape[1], spec["mid"]
    s, a, u, du, da = _regions(spec, x, scratch)
    _squeeze(spec, params, x, s, a, u)
    mobile.gate_grad(x, dy, u, du)
    np.sum(du, axis=0, out=grads["b2"])
    np.matmul(du.T, a, out=grads["w2"].reshape(c, mid))
    np.matmul(du, params["w2"].reshape(c, mid), out=da)
    activation.relu_grad(a, da, da)
    np.sum(da, axis=0, out=grads["b1"])
    np.matmul(da.T, s, out=grads["w1"].reshape(mid, c))
    if dx is not None:
        np.matmul(da, params["w1"].reshape(mid, c), out=s)     # s <- dLoss/ds
        mobile.gate_input_grad(dy, u, s, dx)


def reference(spec, params, x):
    c, mid = x.shape[1], spec["mid"]
    p = {name: a.astype(np.float64) for name, a in params.items()}
    s = ref.channel_mean(x, np.empty(x.shape[:2]))
    a = np.maximum(s @ p["w1"].reshape(mid, c).T + p["b1"], 0.0)
    return ref.gate(x, a @ p["w2"].reshape(c, mid).T + p["b2"], np.empty(x.shape))


def onnx_node(spec, helper, name, x, y, params):
    """GlobalAveragePool, Conv, Relu, Conv, HardSigmoid, Mul."""
    t = lambda part: f"{name}.{part}"
    return [helper.make_node("GlobalAveragePool", [x], [t("s")], name=t("squeeze")),
            helper.make_node("Conv", [t("s"), params["w1"], params["b1"]], [t("z")], name=t("conv1"), kernel_shape=[1, 1]),
            helper.make_node("Relu", [t("z")], [t("a")], name=t("relu")),
            helper.make_node("Conv", [t("a"), params["w2"], params["b2"]], [t("u")], name=t("conv2"), kernel_shape=[1, 1]),
            helper.make_node("HardSigmoid", [t("u")], [t("g")], name=t("hardsigmoid"), alpha=1 / 6, beta=0.5),
            helper.make_node("Mul", [x, t("g")], [y], name=name)]
