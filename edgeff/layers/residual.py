"""residual: y = body(x) + shortcut(x), ResNet's and MobileNetV3's skip connection as one layer.

spec: {"kind": "residual", "body": [layer specs], "shortcut": [] or [one conv2d spec]}
The body is a sequence of layers of the plain kinds ending with a conv2d (ResNet: conv, relu,
conv; MobileNetV3: expand, activation, depthwise, activation, squeeze-excite, project). The
shortcut is the identity (the body must keep x's shape) or one conv2d (ResNet's strided 1x1
projection). A ReLU after the add is a layer of its own, after this one. Its parameters are
named b{i}.{name} (body layer i) and s.{name} (the shortcut).

Memory: between its forward and its backward the layer keeps only its input and output (the
block's buffers). The body's inner activations and their gradients live in its scratch's
activations (its inner layers' workspace in the workspace), which
the block declares to the planner with the block's lifetime (layers/blocks.py): the backward
runs the body forward again from x (one more forward of the body, as gradient checkpointing
does), then back through the body and the shortcut.
"""

import numpy as np

from . import conv2d
from .scratch import NONE, Scratch

FIELDS = {}
LAYER_LISTS = {"body": (1, 16), "shortcut": (0, 1)}    # lists of layer specs and their lengths
IN_PLACE = False


def _layers(spec, shape):
    """[(name prefix, kind, spec, in shape, out shape)]: the body's layers, then the shortcut's."""
    from . import BLOCK_KINDS
    body, out, s = spec["body"], [], tuple(shape)
    if body[-1]["kind"] != "conv2d" or any(hasattr(BLOCK_KINDS[b["kind"]], "LAYER_LISTS") for b in body):
        raise ValueError("residual: its body must end with a conv2d and hold no residual layer")
    for i, b in enumerate(body):
        kind = BLOCK_KINDS[b["kind"]]
        o = kind.out_shape(b, s)
        out.append((f"b{i}", kind, b, s, o))
        s = o
    for b in spec["shortcut"]:
        o = conv2d.out_shape(b, shape) if b["kind"] == "conv2d" else None
        if o != s:
            raise ValueError(f"residual: its shortcut must be a conv2d from {tuple(shape)} to the body's {s}")
        out.append(("s", conv2d, b, tuple(shape), o))
    if not spec["shortcut"] and s != tuple(shape):
        raise ValueError(f"residual: its body turns {tuple(shape)} into {s}, so the identity shortcut does not fit; "
                         "give it a conv2d shortcut")
    return out


def _own(arrays, prefix, kind, spec, shape):
    """The arrays of one inner layer, by its own parameter names."""
    return {n: arrays[f"{prefix}.{n}"] for n in kind.param_shapes(spec, shape)}


def out_shape(spec, shape):
    return _layers(spec, shape)[len(spec["body"]) - 1][4]


def param_shapes(spec, shape):
    return {f"{prefix}.{n}": s for prefix, kind, b, i, _ in _layers(spec, shape)
            for n, s in kind.param_shapes(b, i).items()}


def init(spec, shape, params, rng):
    for prefix, kind, b, i, _ in _layers(spec, shape):
        kind.init(b, i, _own(params, prefix, kind, b, i), rng)


def _sizes(spec, shape, n):
    """Float32 counts of: each inner body output (0 when in place), the shortcut region, and the
    inner kinds' scratch (a Scratch)."""
    layers = _layers(spec, shape)
    body = layers[:len(spec["body"])]
    outputs = [0 if i and kind.IN_PLACE else n * int(np.prod(o)) for i, (_, kind, _, _, o) in enumerate(body[:-1])]
    short = n * int(max(np.prod(shape), np.prod(body[-1][4]))) if len(layers) > len(body) else 0
    inner = NONE
    for _, kind, b, i, _ in layers:
        inner = inner.most(kind.scratch_size(b, i, n))
    return layers, outputs, short, inner


def scratch_size(spec, shape, n):
    _, outputs, short, inner = _sizes(spec, shape, n)
    return Scratch(2 * sum(outputs) + short + inner.activations, inner.workspace)


def _views(spec, x, scratch):
    """The inner layers, then views of the scratch's activations: their outputs and gradients
    (an in-place layer's are its input's), the shortcut region (flat: its output, then x's
    gradient), and the inner kinds' scratch (the rest of the activations, the workspace)."""
    n = x.shape[0]
    layers, outputs, short, inner = _sizes(spec, x.shape[1:], n)
    acts, ys, dys, at = scratch.activations, [], [], 0
    for (_, _, _, _, o), size in zip(layers, outputs):
        if size == 0:
            ys.append(ys[-1]), dys.append(dys[-1])
            continue
        ys.append(acts[at:at + size].reshape(n, *o))
        dys.append(acts[at + size:at + 2 * size].reshape(n, *o))
        at += 2 * size
    short_view = acts[at:at + short] if short else None
    inner_acts = acts[at + short:at + short + inner.activations] if inner.activations else None
    return layers, ys, dys, short_view, Scratch(inner_acts, scratch.workspace)


def forward(spec, params, x, y, scratch):
    layers, ys, _, short, inner = _views(spec, x, scratch)
    last, h = len(spec["body"]) - 1, x
    for j, (prefix, kind, b, i, _) in enumerate(layers[:last + 1]):
        out = y if j == last else ys[j]
        kind.forward(b, _own(params, prefix, kind, b, i), h, out, inner)
        h = out
    if short is None:
        np.add(y, x, out=y)
    else:
        prefix, kind, b, i, o = layers[-1]
        sy = short[:y.size].reshape(y.shape)
        kind.forward(b, _own(params, prefix, kind, b, i), x, sy, inner)
        np.add(y, sy, out=y)


def backward(spec, params, x, y, dy, dx, grads, scratch):
    layers, ys, dys, short, inner = _views(spec, x, scratch)
    last, h, inputs = len(spec["body"]) - 1, x, []
    for j, (prefix, kind, b, i, _) in enumerate(layers[:last]):       # the body's forward again
        inputs.append(h)
        kind.forward(b, _own(params, prefix, kind, b, i), h, ys[j], inner)
        h = ys[j]
    inputs.append(h)
    if short is not None:              # the shortcut's gradients, its input gradient in `short`
        prefix, kind, b, i, _ = layers[-1]
        short = None if dx is None else short[:x.size].reshape(x.shape)
        kind.backward(b, _own(params, prefix, kind, b, i), x, y, dy, short, _own(grads, prefix, kind, b, i), inner)
    for j in range(last, -1, -1):      # the last conv2d reads x and dy only, not its output
        prefix, kind, b, i, _ = layers[j]
        dx_j = dys[j - 1] if j else dx
        kind.backward(b, _own(params, prefix, kind, b, i), inputs[j], y if j == last else ys[j],
                      dy if j == last else dys[j], dx_j, _own(grads, prefix, kind, b, i), inner)
    if dx is not None:
        np.add(dx, dy if len(layers) == len(spec["body"]) else short, out=dx)


def reference(spec, params, x):
    layers, h = _layers(spec, x.shape[1:]), x.astype(np.float64)
    for prefix, kind, b, i, _ in layers[:len(spec["body"])]:
        h = kind.reference(b, _own(params, prefix, kind, b, i), h)
    if len(layers) == len(spec["body"]):
        return h + x
    prefix, kind, b, i, _ = layers[-1]
    return h + kind.reference(b, _own(params, prefix, kind, b, i), x)


def onnx_node(spec, helper, name, x, y, params):
    """The body's nodes (each kind's converter), the shortcut's, and an Add."""
    from . import BLOCK_KINDS
    own = lambda prefix: {n[len(prefix):]: p for n, p in params.items() if n.startswith(prefix)}
    nodes, h = [], x
    for j, b in enumerate(spec["body"]):
        out = f"{name}.b{j}"
        nodes += BLOCK_KINDS[b["kind"]].onnx_node(b, helper, out, h, out, own(f"b{j}."))
        h = out
    skip = x
    for b in spec["shortcut"]:
        skip = f"{name}.s"
        nodes += conv2d.onnx_node(b, helper, skip, x, skip, own("s."))
    return nodes + [helper.make_node("Add", [h, skip], [y], name=name)]
