"""ONNX export: a trained FFNet or ConvNet as one ONNX graph that needs no edgeff to run.
A ConvNet's graph is built in edgeff/export_conv.py (the blocks' voting built in); the
rest of this docstring is about dense nets.

The graph takes `x`, float32 [N, D]: rows of features as the net was trained on them
(stored value * input scale, e.g. pixel / 255; the scale is in the metadata). It
evaluates K label overlays at once on a leading axis: the C candidate labels for the
goodness classifier, the neutral label for the linear head, or both (K = C + 1).
Head "first" is the C candidates through the first layer alone: its goodness is the score.

Overlaying a label changes only the C label inputs, so the first layer never builds
the K overlaid copies of the input. With r the rest of the row, W_r its weight rows
and l_k the k-th label vector (value * one-hot, or value / C everywhere):

    z_k = (r @ W_r + l_k @ W_l) / (sqrt(|r|^2 + |l_k|^2) + eps) + b

-- the same numbers as overlay, length-normalise, multiply, for one product r @ W_r
instead of K. Later layers are batched products [K, N, H] @ [H, H'].

Layer types convert through CONVERTERS; a model holding another type fails with its
name and the supported ones. Conv nets' layer kinds convert through their own modules
(edgeff/layers/*.py onnx_node).
"""

import functools
import json
import logging
import os
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import export_conv, export_ffcl, export_unsup
from .version import __version__
from .convnet import ConvNet
from .errors import ExportError, UsageError
from .model import EPS
from .ffcl_model import FFCLNet
from .unsup_model import UnsupNet

DEFAULT_OPSET = 17
MIN_OPSET = 13
HEADS = ("goodness", "linear", "both", "first", "last")    # first: dense nets, the first layer's goodness;
#                                                           last: conv nets, the last block's vote
SCORE_RTOL, SCORE_ATOL = 1e-4, 1e-5


@functools.cache
def max_opset():
    """The newest opset both the installed onnx and onnxruntime run (asked of onnxruntime)."""
    for opset in range(onnx.defs.onnx_opset_version(), MIN_OPSET, -1):
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        try:
            session(_with_opset(helper.make_model(graph), opset).SerializeToString())
            return opset
        except Exception:  # onnxruntime: "opset N is under development / not supported"
            continue
    return MIN_OPSET


def _with_opset(model, opset):
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", opset))
    model.ir_version = helper.find_min_ir_version_for([model.opset_import[0]])
    return model


class Graph:
    """Collects nodes and initializers."""

    def __init__(self, opset):
        self.opset, self.nodes, self.inits, self._count = opset, [], [], 0

    def const(self, name, array):
        self.inits.append(numpy_helper.from_array(np.array(array, order="C"), name))  # keeps 0-d as 0-d
        return name

    def fresh(self, prefix):
        """A name no other node's output has."""
        self._count += 1
        return f"{prefix}_{self._count}"

    def op(self, op_type, *inputs, output=None, **attrs):
        """Add a node; its output is named `output` (a graph output) or a fresh name."""
        out = output or self.fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def reduce(self, op_type, x, axes, keepdims):
        """ReduceSumSquare/ReduceL2 over axes: an attribute before opset 18, an input from 18."""
        if self.opset >= 18:
            axes_name = self.const(f"axes_{self._count + 1}", np.array(axes, np.int64))
            return self.op(op_type, x, axes_name, keepdims=keepdims)
        return self.op(op_type, x, axes=list(axes), keepdims=keepdims)


class DenseFF:
    """A dense FF layer: z = relu(x_norm @ w + b), goodness of z, next input z / (|z| + eps)."""

    kind = "dense"

    @staticmethod
    def first(g, x, net, w, b, label_vectors):
        """Pre-activations [K, N, H] of the first layer for the K label vectors [K, C]."""
        c, off = net.num_classes, net.label_offset
        rest_cols = (c, w.shape[0]) if off == 0 else (0, off)    # the row's features that stay
        w_rest, w_label = w[rest_cols[0]:rest_cols[1]], w[off:off + c]
        if rest_cols == (0, net.in_features):
            rest = x
        else:
            rest = g.op("Slice", x, g.const("rest_start", np.array([rest_cols[0]], np.int64)),
                        g.const("rest_end", np.array([rest_cols[1]], np.int64)),
                        g.const("rest_axis", np.array([1], np.int64)))
        k = len(label_vectors)
        base = g.op("MatMul", rest, g.const("w0_rest", w_rest))                        # [N, H]
        label_rows = g.const("w0_labels", (label_vectors @ w_label).reshape(k, 1, -1).astype(np.float32))
        label_sq = g.const("label_sq", (label_vectors ** 2).sum(1).reshape(k, 1, 1).astype(np.float32))
        norm = g.op("Add", g.op("Sqrt", g.op("Add", g.reduce("ReduceSumSquare", rest, [1], 1), label_sq)),
                    g.const("eps", np.array(EPS, np.float32)))                          # [K, N, 1]
        return g.op("Add", g.op("Div", g.op("Add", base, label_rows), norm), g.const("b0", b))

    @staticmethod
    def next(g, h, k, w, b):
        return g.op("Add", g.op("MatMul", h, g.const(f"w{k}", w)), g.const(f"b{k}", b))

    @staticmethod
    def activate(g, pre, width, mean_goodness, goodness, normalised):
        """(goodness [K, N], normalised activities [K, N, H]) from pre-activations; only
        what is asked for is computed, the other is None."""
        z = g.op("Relu", pre)
        good = g.reduce("ReduceSumSquare", z, [-1], 0) if goodness else None
        if goodness and mean_goodness:
            good = g.op("Div", good, g.const(f"width_{g._count}", np.array(width, np.float32)))
        h = g.op("Div", z, g.op("Add", g.reduce("ReduceL2", z, [-1], 1), "eps")) if normalised else None
        return good, h


CONVERTERS = {DenseFF.kind: DenseFF}


def _converter(kind):
    if kind not in CONVERTERS:
        raise ExportError(f"layer type {kind!r} has no ONNX converter; supported: {', '.join(sorted(CONVERTERS))}")
    return CONVERTERS[kind]


def build(net, head="goodness", opset=DEFAULT_OPSET, batch="dynamic", metadata=None):
    """The ONNX ModelProto of net (an FFNet with the given head(s), or a ConvNet); not yet checked."""
    if head not in HEADS:
        raise ExportError(f"--head must be one of {', '.join(HEADS)}, got {head!r}")
    conv = isinstance(net, ConvNet)
    if conv and head == "first":
        raise UsageError("--head first (the first layer's goodness) is for dense nets; a conv net has goodness "
                         "or last")
    if conv and head not in ConvNet.classifiers(net):
        raise UsageError(f"--head {head}: a conv net has no linear head (its blocks vote with their class "
                         "goodness); leave --head out or use --head goodness or last")
    if isinstance(net, UnsupNet) and head != "linear":
        raise UsageError(f"--head {head}: an ff-unsup net classifies with its linear probe only; use --head linear")
    if isinstance(net, FFCLNet) and head != "goodness":
        raise UsageError(f"--head {head}: an ffcl net classifies by its layers' goodness over all labels; "
                         "use --head goodness")
    if not conv and head == "last":
        raise UsageError("--head last (the last block's vote) is for conv nets; a dense net has goodness, linear, "
                         "both or first")
    if head in ("linear", "both") and net.head_w is None and not isinstance(net, UnsupNet):   # an encoder: features
        raise ExportError("this model has no linear head: export with --head goodness, or train with --head-epochs 1+")
    if not MIN_OPSET <= opset <= max_opset():
        raise ExportError(f"--opset {opset} is outside what edgeff exports and onnxruntime runs "
                          f"({MIN_OPSET}..{max_opset()})")
    g = Graph(opset)
    n_dim = "N" if batch == "dynamic" else int(batch)
    inputs, outputs, doc = (export_conv.build_graph(g, net, n_dim, head) if conv else
                            export_unsup.build_graph(g, net, n_dim) if isinstance(net, UnsupNet) else
                            export_ffcl.build_graph(g, net, n_dim) if isinstance(net, FFCLNet) else
                            _dense_graph(g, net, head, n_dim))
    graph = helper.make_graph(g.nodes, "edgeff_ff", inputs, outputs, g.inits)
    model = helper.make_model(graph, producer_name="edgeff", producer_version=__version__, model_version=1,
                              doc_string=doc)
    _with_opset(model, opset)  # the oldest IR version that carries it: older runtimes load it too
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value if isinstance(value, str) else json.dumps(value, allow_nan=False))
    return model


def _dense_graph(g, net, head, n_dim):
    """Add an FFNet's nodes to g; returns (inputs, outputs, doc string)."""
    c = net.num_classes
    candidates = [] if head == "linear" else [net.label_value * np.eye(c, dtype=np.float32)]
    neutral = [] if head in ("goodness", "first") else [np.full((1, c), net.label_value / c, np.float32)]
    label_vectors = np.concatenate(candidates + neutral).astype(np.float32)   # [K, C]
    x = "x"
    goods, hs = [], []
    layers = 1 if head == "first" else len(net.weights)    # first: the first layer's goodness alone
    for k, (w, b) in enumerate(zip(net.weights[:layers], net.biases[:layers])):
        conv = _converter(net.kinds[k])
        pre = conv.first(g, x, net, w, b, label_vectors) if k == 0 else conv.next(g, hs[-1], k, w, b)
        last = k == layers - 1
        good, h = conv.activate(g, pre, w.shape[1], net.mean_goodness, goodness=head != "linear",
                                normalised=not last or head in ("linear", "both"))
        goods.append(good)
        hs.append(h)
    outputs = []
    if head != "linear":
        total = goods[0]
        for good in goods[1:]:
            total = g.op("Add", total, good)                                           # [K, N]
        if head == "both":
            total = g.op("Slice", total, g.const("cand_start", np.array([0], np.int64)),
                         g.const("cand_end", np.array([c], np.int64)), g.const("cand_axis", np.array([0], np.int64)))
        scores = g.op("Transpose", total, perm=[1, 0], output="scores")
        goodness_label = "goodness_label" if head == "both" else "label"
        g.op("ArgMax", scores, axis=1, keepdims=0, output=goodness_label)
        outputs += [helper.make_tensor_value_info(goodness_label, TensorProto.INT64, [n_dim]),
                    helper.make_tensor_value_info("scores", TensorProto.FLOAT, [n_dim, c])]
    if head in ("linear", "both"):
        index = g.const("neutral_index", np.array(len(label_vectors) - 1, np.int64))
        feats = g.op("Concat", *[g.op("Gather", h, index, axis=0) for h in hs], axis=1)  # [N, sum H]
        logits = g.op("Add", g.op("MatMul", feats, g.const("head_w", net.head_w)), g.const("head_b", net.head_b))
        probs = g.op("Softmax", logits, axis=1, output="probabilities")
        g.op("ArgMax", probs, axis=1, keepdims=0, output="label")
        outputs = [helper.make_tensor_value_info("label", TensorProto.INT64, [n_dim]),
                   helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [n_dim, c])] + outputs
    inputs = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n_dim, net.in_features])]
    return inputs, outputs, (f"Forward-Forward net {'-'.join(map(str, [net.in_features] + net.widths))}, "
                             f"head: {head}; input x: float32 [N, {net.in_features}] features")


def check(model):
    """onnx's full checker and shape inference; returns the inferred model."""
    try:
        onnx.checker.check_model(model, full_check=True)
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the exported graph failed onnx's checker ({str(exc).splitlines()[0]}); "
                          "this is an edgeff bug, please report it") from None


def session(model_bytes, threads=0):
    import onnxruntime
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return onnxruntime.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def numpy_outputs(net, x, head):
    """What the ONNX graph must give, from the NumPy/Numba forward: {output name: array}."""
    out = {}
    if head != "linear":
        conv = isinstance(net, ConvNet)
        if conv:
            scores = net.votes(net.block_scores(x, 1.0), head)
        else:
            scores = net.scores(x, 1.0, "first" if head == "first" else "goodness")
        out["scores"] = scores
        out["goodness_label" if head == "both" else "label"] = scores.argmax(1)
    if isinstance(net, UnsupNet) and net.head_w is None:
        out["features"] = net.feature_rows(x, 1.0)
    elif head in ("linear", "both"):
        logits = net.head_logits(x, 1.0)
        e = np.exp(logits - logits.max(1, keepdims=True))
        out["probabilities"] = e / e.sum(1, keepdims=True)
        out["label"] = logits.argmax(1)
    return out


def parity(sess, net, x, head):
    """Compare onnxruntime's outputs with the NumPy forward on float32 rows x.

    Labels must agree wherever NumPy's best two scores differ by more than the score
    tolerance; a closer call (a tie to float32 precision) is counted but not a failure."""
    ref = numpy_outputs(net, x, head)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x})))
    report = {"samples": int(len(x))}
    for name in ("scores", "probabilities", "features"):
        if name in ref:
            diff = np.abs(got[name] - ref[name])
            report[f"{name}_max_abs_diff"] = float(diff.max())
            report[f"{name}_within_tolerance"] = bool(np.allclose(got[name], ref[name], rtol=SCORE_RTOL, atol=SCORE_ATOL))
    for name, score_name in (("label", None), ("goodness_label", "scores")):
        if name not in ref:
            continue
        score_name = score_name or ("probabilities" if head in ("linear", "both") else "scores")
        s = np.sort(ref[score_name], axis=1)
        margin = s[:, -1] - s[:, -2]
        differ = got[name] != ref[name]
        real = differ & (margin > SCORE_ATOL + SCORE_RTOL * np.abs(s[:, -1]))
        report[f"{name}_agreement"] = float(1.0 - differ.mean())
        report[f"{name}_mismatches"] = int(real.sum())
        report[f"{name}_near_ties"] = int((differ & ~real).sum())
    report["ok"] = all(v for k, v in report.items() if k.endswith("_within_tolerance")) and \
        not any(v for k, v in report.items() if k.endswith("_mismatches"))
    return report


def quantize(model_bytes, mode, calibration=None, static_ops=("MatMul",)):
    """int8 weights with onnxruntime's quantizer: 'dynamic', or 'static' calibrated on float32 rows
    (quantizing the nodes of static_ops: MatMul for dense nets, Conv for conv nets)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    class Rows(CalibrationDataReader):
        def __init__(self, x, chunk=100):
            self.batches = iter([{"x": x[i:i + chunk]} for i in range(0, len(x), chunk)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="edgeff-quant-") as tmp:
        src, dst = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "int8.onnx")
        with open(src, "wb") as f:
            f.write(model_bytes)
        logging.disable(logging.WARNING)  # its advice to pre-process: our graph has nothing to fold
        try:
            if mode == "dynamic":
                quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
            else:
                quantize_static(src, dst, Rows(calibration), quant_format=QuantFormat.QDQ,
                                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                op_types_to_quantize=list(static_ops))
        finally:
            logging.disable(logging.NOTSET)
        with open(dst, "rb") as f:
            return f.read()


def error_of(sess, x, y, chunk=1000):
    wrong = 0
    for i in range(0, len(x), chunk):
        wrong += int((sess.run(["label"], {"x": x[i:i + chunk]})[0] != y[i:i + chunk]).sum())
    return wrong / len(x)


def onnx_metadata(net, cfg, metrics, head):
    """The metadata an exported model carries: what its input is, its head, config, classes, test errors."""
    info, conv = net.input_info, isinstance(net, ConvNet)
    inside = ("reshapes each row to its (H, W, C) image" if conv else
              "adds each layer's label vectors and length-normalises each layer's input" if isinstance(net, FFCLNet)
              else "overlays the labels and length-normalises each layer's input")
    return {
        "edgeff_version": __version__,
        "head": head,
        "config": cfg.to_json(),
        "dataset": info["dataset"],
        "test_error": {k: v for k, v in metrics.items() if k.startswith("test_error")},
        "input": {"name": "x", "shape": ["N", net.in_features], "dtype": "float32",
                  "scale": info["scale"], "stored_dtype": info["dtype"], "image_shape": info["image_shape"],
                  "normalisation": f"x = stored value * scale (pixel / 255 for 8-bit images); the graph {inside} itself"},
        "label_names": info["label_names"],
    }


def export(net, cfg, metrics, ds, head, opset=DEFAULT_OPSET, batch="dynamic", quant=None,
           parity_samples=1000, step=lambda msg: None):
    """(float onnx bytes, int8 onnx bytes or None, report) for a trained net: built, checked,
    parity-tested against NumPy and, with quant ('dynamic' or 'static'), also quantized to int8
    with both test errors measured."""
    t0 = time.perf_counter()
    if net.input_info is None:   # a run saved before models described their input
        net.describe_input(ds)
    conv = isinstance(net, ConvNet)
    shown = "features" if isinstance(net, UnsupNet) and net.head_w is None else head   # an encoder: no classifier
    metadata = onnx_metadata(net, cfg, metrics, shown)
    step("building the graph")
    model = build(net, head, opset, batch, metadata)
    step("checking it (onnx checker, shape inference)")
    check(model)
    data = model.SerializeToString()
    step(f"parity against the NumPy forward on {min(parity_samples, len(ds.x_test))} test rows")
    x = (ds.x_test[:parity_samples] * np.float32(ds.scale)).astype(np.float32)
    if batch != "dynamic":
        x = x[:int(batch)]
    sess = session(data)
    report = {"head": shown, "opset": opset, "batch": batch, "parity": parity(sess, net, x, head)}
    if not report["parity"]["ok"]:
        raise ExportError(f"onnxruntime's outputs differ from the NumPy forward ({json.dumps(report['parity'])}); "
                          "the model was not written; please report this")
    report["float_bytes"] = len(data)
    qdata = None
    if quant:
        step(f"quantizing to int8 ({quant}) and measuring test error on {len(ds.y_test)} rows")
        if batch != "dynamic":
            raise ExportError("--quantize needs --batch dynamic (it measures the test error in chunks)")
        calib = (ds.x_train[:500] * np.float32(ds.scale)).astype(np.float32) if quant == "static" else None
        qdata = quantize(data, quant, calib, ["Conv"] if conv else ["MatMul"])
        qmodel = onnx.load_from_string(qdata)
        check(qmodel)
        x_all = (ds.x_test * np.float32(ds.scale)).astype(np.float32)
        before, after = error_of(sess, x_all, ds.y_test), error_of(session(qdata), x_all, ds.y_test)
        report.update(quantize=quant, int8_bytes=len(qdata), size_ratio=len(qdata) / len(data),
                      test_error_float=before, test_error_int8=after, test_error_change_pp=100 * (after - before))
    report["bytes"] = len(qdata or data)
    report["export_seconds"] = time.perf_counter() - t0
    return data, qdata, report
