"""hardswish: x * hardsigmoid(x) (MobileNetV3's activation; kernels/mobile.py). Not in place:
its gradient reads x, which its output does not give back.

spec: {"kind": "hardswish"}.  A block-net layer kind (see conv2d.py)."""

import numpy as np

from ..kernels import mobile
from ..kernels import reference as ref
from .stateless import init, param_shapes, scratch_size  # noqa: F401 (the kind's interface)

FIELDS = {}
IN_PLACE = False


def out_shape(spec, shape):
    return tuple(shape)


def forward(spec, params, x, y, scratch):
    mobile.hardswish(x, y)


def backward(spec, params, x, y, dy, dx, grads, scratch):
    if dx is not None:
        mobile.hardswish_grad(x, dy, dx)


def reference(spec, params, x):
    return ref.hardswish(x, np.empty(x.shape))


def onnx_node(spec, helper, name, x, y, params):
    """HardSigmoid then Mul (HardSwish itself needs opset 14; edgeff exports from 13)."""
    gate = f"{name}.gate"
    return [helper.make_node("HardSigmoid", [x], [gate], name=f"{name}.hardsigmoid", alpha=1 / 6, beta=0.5),
            helper.make_node("Mul", [x, gate], [y], name=name)]
