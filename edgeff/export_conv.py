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
With feedback (ConvNet.feedback_steps S > 0) the S + 1 settling steps are unrolled: at step
t > 0 block k's first conv's output adds Resize(Conv(block k + 1's normalised output of step
t - 1, F_k)), nearest (layers/feedback.py); the heads score the last step. Every weight is one
initializer however many steps read it.
"""

import numpy as np
from onnx import TensorProto, helper

from .convnet import LN_EPS
from .layers import BLOCK_KINDS, feedback

LAYER_NORM_OPSET = 17


def const_once(g, name, array):
    """The initializer `name`, added on first use: a settled net reads each weight at every step."""
    return name if any(t.name == name for t in g.inits) else g.const(name, array)


def layer(g, spec, name, x, params, node_name=None):
    """The output of layer `name` (spec, its parameter arrays) on x, via its kind's onnx_node; node_name
    (default name) names its nodes, one per settling step."""
    inits = {p: const_once(g, f"{name}.{p}", a) for p, a in params.items()}
    y = g.fresh(f"{spec['kind']}_{node_name or name}")
    g.nodes.extend(BLOCK_KINDS[spec["kind"]].onnx_node(spec, helper, node_name or name, x, y, inits))
    return y


def layer_norm(g, h, shape, k):
    """h [N, C, H, W] normalised over C, H, W together; shape: (C, H, W)."""
    eps = np.array(LN_EPS, np.float32)
    if g.opset >= LAYER_NORM_OPSET:
        ones = const_once(g, f"ln{k}.scale", np.ones(shape, np.float32))
        return g.op("LayerNormalization", h, ones, axis=1, epsilon=float(eps))
    centred = g.op("Sub", h, g.reduce("ReduceMean", h, [1, 2, 3], 1))
    var = g.reduce("ReduceMean", g.op("Mul", centred, centred), [1, 2, 3], 1)
    return g.op("Div", centred, g.op("Sqrt", g.op("Add", var, const_once(g, f"ln{k}.eps", eps))))


def build_graph(g, net, n_dim, head="goodness"):
    """Add net's nodes to g (export.Graph); returns (inputs, outputs, doc string)."""
    c, h, w = net.in_shape
    image = g.const("image_shape", np.array([-1, h, w, c], np.int64))
    image = g.op("Transpose", g.op("Reshape", "x", image), perm=[0, 3, 1, 2])      # NHWC -> NCHW
    goods, steps, outs = [], net.feedback_steps, [None] * len(net.blocks)
    for t in range(steps + 1):
        x = image
        for lay, params in net.layers():
            k, node_name = lay.block, lay.name if t == steps else f"{lay.name}@{t}"
            if not lay.head:
                x = layer(g, lay.spec, lay.name, x, params, node_name)
                if t and k < len(net.links) and lay.name == f"{k}.0":      # block k's pre-activation
                    link = net.links[k]
                    weight = const_once(g, f"{link.name}.w", net.feedback_w[k])
                    scales = const_once(g, f"{link.name}.scales", feedback.scales_of(link))
                    x = feedback.onnx_nodes(g, link, weight, scales, outs[k + 1], x)
                continue
            last = k == len(net.blocks) - 1
            if t == steps and (head == "goodness" or last):
                o = layer(g, lay.spec, lay.name, x, params)
                goods.append(g.reduce("ReduceMean", g.op("Mul", o, o), [2, 3], 0))
            if not last or t < steps:        # the next block's input, or fed back at the next step
                outs[k] = x = layer_norm(g, x, lay.in_shape, k)
    scores = g.op("Mean", *goods, output="scores")
    g.op("ArgMax", scores, axis=1, keepdims=0, output="label")
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n_dim, net.in_features])]
    outputs = [helper.make_tensor_value_info("label", TensorProto.INT64, [n_dim]),
               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [n_dim, net.num_classes])]
    layers = "/".join("-".join(s["kind"] for s in specs) for specs in net.blocks)
    settled = f", settling {steps + 1} steps with feedback" if steps else ""
    doc = (f"Conv Forward-Forward net on {c}x{h}x{w} images ({layers}), {len(net.blocks)} blocks{settled}, "
           f"{'voting with their class goodness' if head == 'goodness' else 'the last block deciding by its class goodness'}; input x: float32 [N, {net.in_features}] rows stored channels last (H, W, C)")
    return inputs, outputs, doc
