"""relu: max(x, 0), in place (its output is its input's buffer, its gradient too).

spec: {"kind": "relu"}.  A block-net layer kind (see conv2d.py)."""

import numpy as np

from ..kernels import activation
from .stateless import init, param_shapes, scratch_size  # noqa: F401 (the kind's interface)

FIELDS = {}
IN_PLACE = True


def out_shape(spec, shape):
    return tuple(shape)


def forward(spec, params, x, y, scratch):
    np.maximum(x, 0.0, out=y)


def backward(spec, params, x, y, dy, dx, grads, scratch):
    if dx is not None:
        activation.relu_grad(y, dy, dx)


def reference(spec, params, x):
    return np.maximum(x, 0.0)


def onnx_node(spec, helper, name, x, y, params):
    return [helper.make_node("Relu", [x], [y], name=name)]
