"""maxpool: the maximum of each k x k window, stride k (kernels/pool.py).

spec: {"kind": "maxpool", "k": window}.  A block-net layer kind (see conv2d.py)."""

import numpy as np

from ..kernels import pool
from ..kernels import reference as ref
from .stateless import init, param_shapes, scratch_size  # noqa: F401 (the kind's interface)

FIELDS = {"k": (1, 8)}
IN_PLACE = False


def out_shape(spec, shape):
    c, h, w = shape
    k = spec["k"]
    if h < k or w < k:
        raise ValueError(f"maxpool: a {k}x{k} window does not fit a {h}x{w} image")
    return (c, h // k, w // k)


def forward(spec, params, x, y, scratch):
    pool.maxpool_forward(x, spec["k"], y)


def backward(spec, params, x, y, dy, dx, grads, scratch):
    if dx is not None:
        pool.maxpool_backward(x, y, dy, spec["k"], dx)


def reference(spec, params, x):
    return ref.maxpool_forward(x, spec["k"], np.empty((x.shape[0], *out_shape(spec, x.shape[1:]))))


def onnx_node(spec, helper, name, x, y, params):
    k = spec["k"]
    return [helper.make_node("MaxPool", [x], [y], name=name, kernel_shape=[k, k], strides=[k, k])]
