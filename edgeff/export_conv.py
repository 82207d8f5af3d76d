"""ONNX graph of a conv FF net (ConvNet), the blocks' voting built in (edgeff/export.py builds the model).

Input x: float32 [N, H*W*C], rows as stored (channels last) times the input scale. The graph
reshapes them to (N, H, W, C) and transposes them to NCHW, then for each block k:
    its layers          each through its kind's onnx_node (edgeff/layers/*.py)
    its head            the 1x1 conv, one channel per class: o [N, classes, H', W']
    class goodness      g_k = ReduceMean over H', W' of o * o               [N, classes]
    pass on             the block's output layer-normalised over C*H*W (no affine, eps
                        convnet.LN_EPS): LayerNormalization from opset 17, before it
                        the same sums in ReduceMean, Sub, Mul, Add, Sqrt, Div
scores = Mean(g_0, ..., g_{K-1}) (head "goodness"), or g_{K-1} alone (head "last": the
earlier blocks' heads are then left out of the graph), label = ArgMax(scores): what
ConvNet.votes and predict compute.
"""

import numpy as np
from onnx import TensorProto, helper

from .convnet import LN_EPS
from .layers import BLOCK_KINDS

LAYER_NORM_OPSET = 17


def layer(g, spec, name, x, params):
    """The output of layer `name` (spec, its parameter arrays) on x, via its kind's onnx_node."""
    inits = {p: g.const(f"{name}.{p}", a) for p, a in params.items()}
    y = g.fresh(f"{spec['kind']}_{name}")
    g.nodes.extend(BLOCK_KINDS[spec["kind"]].onnx_node(spec, helper, name, x, y, inits))
    return y


def layer_norm(g, h, shape, k):
    """h [N, C, H, W] normalised over C, H, W together; shape: (C, H, W)."""
    eps = np.array(LN_EPS, np.float32)
    if g.opset >= LAYER_NORM_OPSET:
        ones = g.const(f"ln{k}.scale", np.ones(shape, np.float32))
        return g.op("LayerNormalization", h, ones, axis=1, epsilon=float(eps))
    centred = g.op("Sub", h, g.reduce("ReduceMean", h, [1, 2, 3], 1))
    var = g.reduce("ReduceMean", g.op("Mul", centred, centred), [1, 2, 3], 1)
    return g.op("Div", centred, g.op("Sqrt", g.op("Add", var, g.const(f"ln{k}.eps", eps))))


def build_graph(g, net, n_dim, head="goodness"):
    """Add net's nodes to g (export.Graph); returns (inputs, outputs, doc string)."""
    c, h, w = net.in_shape
    image = g.const("image_shape", np.array([-1, h, w, c], np.int64))
    x = g.op("Transpose", g.op("Reshape", "x", image), perm=[0, 3, 1, 2])          # NHWC -> NCHW
    goods = []
    for lay, params in net.layers():
        if not lay.head:
            x = layer(g, lay.spec, lay.name, x, params)
            continue
        last = lay.block == len(net.blocks) - 1
        if head == "goodness" or last:
            o = layer(g, lay.spec, lay.name, x, params)
            goods.append(g.reduce("ReduceMean", g.op("Mul", o, o), [2, 3], 0))
        if not last:
            x = layer_norm(g, x, lay.in_shape, lay.block)
    scores = g.op("Mean", *goods, output="scores")
    g.op("ArgMax", scores, axis=1, keepdims=0, output="label")
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n_dim, net.in_features])]
    outputs = [helper.make_tensor_value_info("label", TensorProto.INT64, [n_dim]),
               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [n_dim, net.num_classes])]
    layers = "/".join("-".join(s["kind"] for s in specs) for specs in net.blocks)
    doc = (f"Conv Forward-Forward net on {c}x{h}x{w} images ({layers}), {len(net.blocks)} blocks, "
           f"{'voting with their class goodness' if head == 'goodness' else 'the last block deciding by its class goodness'}; input x: float32 [N, {net.in_features}] rows stored channels last (H, W, C)")
    return inputs, outputs, doc
