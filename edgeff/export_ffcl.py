"""ONNX graph of an FFCL net (FFCLNet; edgeff/export.py builds and checks the model).

Input x: float32 [N, D], rows as stored times the input scale. The graph computes what
FFCLNet.goodness_scores does, its K + 1 settling steps unrolled (edgeff/ffcl_model.py):
    x^ = x / (ReduceL2(x) + eps), p = x^ @ W_0
    late labels:  one feature pass of [N, H] activities; at the last step every layer's goodness
                  for all C labels at once: ReduceSumSquare(Relu(u_k[N, 1, H] + (L_k + b_k)[1, C, H]))
    early labels: the C candidate labels on a leading axis, activities [C, N, H]; at the last step
                  ReduceSumSquare(Relu(z_k)) over H is layer k's goodness [C, N]
    scores [N, C] = the sum over layers, label = ArgMax
the outputs of a dense net's goodness head, so 'edgeff infer' reads it the same way.
"""

import numpy as np
from onnx import TensorProto, helper

from .model import EPS


def build_graph(g, net, n_dim):
    """Add net's nodes to g (export.Graph); returns (inputs, outputs, doc string)."""
    c, n, steps = net.num_classes, len(net.weights), net.feedback_steps
    eps = g.const("eps", np.array(EPS, np.float32))
    normalised = lambda v: g.op("Div", v, g.op("Add", g.reduce("ReduceL2", v, [-1], 1), eps))
    p = g.op("MatMul", normalised("x"), g.const("w0", net.weights[0]))                     # [N, H_0]
    if not net.late:
        p = g.op("Unsqueeze", p, g.const("axis0", np.array([0], np.int64)))                 # [1, N, H_0]
    # L_k as [1, C, H_k] beside late features [N, 1, H_k]; as [C, 1, H_k] on early activities [1 or C, N, H_k]
    labels = [g.const(f"l{k}", lw[None] if net.late else lw[:, None, :]) for k, lw in enumerate(net.label_w)]
    weights = [None] + [g.const(f"w{k}", w) for k, w in enumerate(net.weights) if k]
    feedback = [g.const(f"f{k}", fw) for k, fw in enumerate(net.feedback_w)]
    biases = [g.const(f"b{k}", b) for k, b in enumerate(net.biases)]
    hs, goods = [None] * n, []
    for t in range(steps + 1):
        for k in range(n):
            u = p if k == 0 else g.op("MatMul", hs[k - 1], weights[k])
            if not net.late and k < len(labels):
                u = g.op("Add", u, labels[k])                                              # [C, N, H_k]
            if t > 0 and net.feeds_back(k):
                u = g.op("Add", u, g.op("MatMul", hs[k + 1], feedback[k]))
            if t == steps:
                goods.append(_goodness(g, net, k, u, labels, biases))
            if t < steps or k < n - 1:
                hs[k] = normalised(g.op("Relu", g.op("Add", u, biases[k])))
    total = goods[0]
    for good in goods[1:]:
        total = g.op("Add", total, good)
    scores = g.op("Identity", total, output="scores") if net.late else g.op("Transpose", total, perm=[1, 0],
                                                                             output="scores")
    g.op("ArgMax", scores, axis=1, keepdims=0, output="label")
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n_dim, net.in_features])]
    outputs = [helper.make_tensor_value_info("label", TensorProto.INT64, [n_dim]),
               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [n_dim, c])]
    sizes = "-".join(map(str, [net.in_features] + net.widths))
    doc = (f"FFCL net {sizes} ({'separate' if net.separate else 'first-layer'} labels, "
           f"{'late' if net.late else 'early'} label integration, {steps} feedback steps); "
           f"input x: float32 [N, {net.in_features}] features")
    return inputs, outputs, doc


def _goodness(g, net, k, u, labels, biases):
    """Layer k's goodness at the last step: late [N, C] from u [N, H] and every label; early [C, N]."""
    if net.late:
        u = g.op("Unsqueeze", u, g.const(f"axis1_{k}", np.array([1], np.int64)))             # [N, 1, H]
        pre = g.op("Add", u, g.op("Add", labels[k], biases[k]))                              # [N, C, H]
    else:
        pre = g.op("Add", u, biases[k])                                                      # [C, N, H]
    good = g.reduce("ReduceSumSquare", g.op("Relu", pre), [-1], 0)
    if net.mean_goodness:
        good = g.op("Div", good, g.const(f"width{k}", np.array(net.widths[k], np.float32)))
    return good
