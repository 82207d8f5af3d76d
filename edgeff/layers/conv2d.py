"""conv2d: a 2-D convolution with bias (groups == channels: depthwise; a 1x1 kernel: pointwise).

spec: {"kind": "conv2d", "out": C_out, "k": kernel size, "stride": s, "pad": p, "groups": g}
A block-net layer kind: the shapes it declares to the planner, its kernels (kernels/conv.py)
and their NumPy twins (kernels/reference.py), its ONNX node.
"""

import numpy as np

from ..kernels import conv
from ..kernels import reference as ref
from .scratch import Scratch

FIELDS = {"out": (1, 1 << 14), "k": (1, 15), "stride": (1, 8), "pad": (0, 7), "groups": (1, 1 << 14)}
IN_PLACE = False


def out_shape(spec, shape):
    c, h, w = shape
    if c % spec["groups"] or spec["out"] % spec["groups"]:
        raise ValueError(f"conv2d: groups={spec['groups']} must divide {c} input and {spec['out']} output channels")
    return (spec["out"], *conv.conv2d_output_size(h, w, spec["k"], spec["k"], spec["stride"], spec["pad"]))


def param_shapes(spec, shape):
    k = spec["k"]
    return {"w": (spec["out"], shape[0] // spec["groups"], k, k), "b": (spec["out"],)}


def init(spec, shape, params, rng):
    """Uniform in +-1/sqrt(fan_in), as torch.nn.Conv2d."""
    bound = 1.0 / np.sqrt(params["w"][0].size)
    params["w"][...] = rng.uniform(-bound, bound, params["w"].shape)
    params["b"][...] = rng.uniform(-bound, bound, params["b"].shape)


def scratch_size(spec, shape, n):
    """The gemm method's columns: workspace."""
    return Scratch(0, conv.conv2d_scratch_size((n, *shape), param_shapes(spec, shape)["w"], spec["stride"],
                                               spec["pad"], spec["groups"]))


def forward(spec, params, x, y, scratch):
    conv.conv2d_forward(x, params["w"], params["b"], spec["stride"], spec["pad"], spec["groups"], y, scratch.workspace)


def backward(spec, params, x, y, dy, dx, grads, scratch):
    """grads <- dLoss/dparams from x and dy; dx <- dLoss/dx unless dx is None."""
    s, p, g = spec["stride"], spec["pad"], spec["groups"]
    conv.conv2d_weight_grad(x, dy, s, p, g, grads["w"], grads["b"], scratch.workspace)
    if dx is not None:
        conv.conv2d_input_grad(dy, params["w"], s, p, g, dx, scratch.workspace)


def reference(spec, params, x):
    n = x.shape[0]
    y = np.empty((n, *out_shape(spec, x.shape[1:])), np.float64)
    return ref.conv2d_forward(x, params["w"], params["b"], spec["stride"], spec["pad"], spec["groups"], y)


def onnx_node(spec, helper, name, x, y, params):
    """The ONNX nodes computing y from x (params: {name: initializer name}): a list, as every kind's."""
    k, p = spec["k"], spec["pad"]
    return [helper.make_node("Conv", [x, params["w"], params["b"]], [y], name=name, kernel_shape=[k, k],
                            strides=[spec["stride"]] * 2, pads=[p, p, p, p], group=spec["groups"])]
