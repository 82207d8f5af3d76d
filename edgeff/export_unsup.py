"""ONNX graph of an ff-unsup net (UnsupNet): its encoder and probe, or the encoder alone
(edgeff/export.py builds the model).

Input x: float32 [N, D], rows as stored times the input scale. The graph computes what
UnsupNet.head_logits does:
    h = x / (ReduceL2(x) + eps)                       the input row, length-normalised
    per layer k: z = Relu(h @ w_k + b_k); h = z / (ReduceL2(z) + eps)
    logits = Concat(h of the probed layers) @ head_w + head_b
    probabilities = Softmax(logits), label = ArgMax
the outputs of a supervised net's linear head, so 'edgeff infer' reads it the same way.
The encoder alone (no probe: FFEncoder) outputs the probe's input instead:
    features = Concat(h of the probed layers)         float32 [N, F], FFEncoder.transform's
"""

import numpy as np
from onnx import TensorProto, helper

from .model import EPS


def build_graph(g, net, n_dim):
    """Add net's nodes to g (export.Graph); returns (inputs, outputs, doc string)."""
    eps = g.const("eps", np.array(EPS, np.float32))
    normalised = lambda v: g.op("Div", v, g.op("Add", g.reduce("ReduceL2", v, [-1], 1), eps))
    h, hs = normalised("x"), []
    for k, (w, b) in enumerate(zip(net.weights, net.biases)):
        h = normalised(g.op("Relu", g.op("Add", g.op("MatMul", h, g.const(f"w{k}", w)), g.const(f"b{k}", b))))
        hs.append(h)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n_dim, net.in_features])]
    sizes = "-".join(map(str, [net.in_features] + net.widths))
    probed = ", ".join(str(k + 1) for k in net.probed)
    if net.head_w is None:
        g.op("Concat", *[hs[k] for k in net.probed], axis=1, output="features")
        outputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, [n_dim, net.feature_width])]
        return inputs, outputs, (f"Unsupervised Forward-Forward encoder {sizes}: features are the normalised "
                                 f"activities of layers {probed}; input x: float32 [N, {net.in_features}] features")
    feats = g.op("Concat", *[hs[k] for k in net.probed], axis=1)
    logits = g.op("Add", g.op("MatMul", feats, g.const("head_w", net.head_w)), g.const("head_b", net.head_b))
    g.op("ArgMax", g.op("Softmax", logits, axis=1, output="probabilities"), axis=1, keepdims=0, output="label")
    outputs = [helper.make_tensor_value_info("label", TensorProto.INT64, [n_dim]),
               helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [n_dim, net.num_classes])]
    doc = (f"Unsupervised Forward-Forward net {sizes} with a linear probe on layers {probed}; "
           f"input x: float32 [N, {net.in_features}] features")
    return inputs, outputs, doc
