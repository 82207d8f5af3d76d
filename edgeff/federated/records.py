"""Layers to and from Flower's ArrayRecords, and a client's update checked before it may count.

A layer k (0-based) travels as its arrays, each named by a letter and k + 1: w{k+1} (weights, float32
(D_in, D_out)) and b{k+1} (bias, float32 (D_out,)), and in an FFCL net l{k+1} (its label vectors,
(C, D_out)) and f{k+1} (its feedback weights, (D_{k+2}, D_out)) where the layer has them (the nets'
layer_arrays). Every byte of a reply is hostile until checked (DESIGN.md, trust model): an update
counts only with one ArrayRecord holding exactly the arrays sent, each float32 of the global
layer's shape and finite, and one MetricRecord of a whole positive num-examples and a finite loss
(anything else would also stop Flower's aggregation for every client)."""

import hashlib
import math
import re

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord

from ..errors import ModelError

ARRAYS, METRICS, FROZEN = "arrays", "metrics", "frozen"   # the keys of a message's records
NUM_EXAMPLES, LOSS = "num-examples", "loss"                 # a reply's metrics: FedAvg's weight, the mean loss
LETTERS = "wblf"        # a layer's arrays: weights, bias, FFCL's label vectors and feedback weights


def layers_record(layers):
    """An ArrayRecord of layers {k: {letter: array}}."""
    record = ArrayRecord()
    for k, arrays in layers.items():
        for letter, a in arrays.items():
            record[f"{letter}{k + 1}"] = Array(np.ascontiguousarray(a))
    return record


def record_layers(record):
    """{k: {letter: array}} of an ArrayRecord made by layers_record (arrays as they are: check first);
    a name that is not a letter of LETTERS and a layer number is one ModelError line."""
    layers = {}
    for name, a in record.items():
        if not re.fullmatch(f"[{LETTERS}][1-9][0-9]{{0,5}}", name):
            raise ModelError(f"array {name[:40]!r} is not a layer's ({', '.join(LETTERS)} and the layer's number)")
        layers.setdefault(int(name[1:]) - 1, {})[name[0]] = a.numpy()
    return layers


def digest(record):
    """sha256 of an ArrayRecord's names and bytes: a client checks the frozen layers it holds by it."""
    h = hashlib.sha256()
    for name, a in sorted(record.items()):
        h.update(name.encode())
        h.update(a.data)
    return h.hexdigest()


def update_problem(content, shapes):
    """Why a client's reply content may not count in the aggregate, or None when it may;
    shapes: {array name: shape} of what was sent."""
    record, metrics = content.get(ARRAYS), content.get(METRICS)
    if len(content.array_records) != 1 or not isinstance(record, ArrayRecord):
        return f"it holds {len(content.array_records)} array records, not one named {ARRAYS!r}"
    if len(content.metric_records) != 1 or not isinstance(metrics, MetricRecord) or \
            sorted(metrics) != sorted((NUM_EXAMPLES, LOSS)):
        return f"its metrics are not one record of {NUM_EXAMPLES} and {LOSS}"
    if sorted(record) != sorted(shapes):
        return f"its arrays are {sorted(record)}, not the {sorted(shapes)} sent"
    for name, a in record.items():
        try:
            value = a.numpy()
        except (TypeError, ValueError, OSError, EOFError) as exc:
            return f"{name} is not a NumPy array ({type(exc).__name__})"
        if value.dtype != np.float32 or value.shape != tuple(shapes[name]):
            return f"{name} is {value.dtype} {value.shape}, not float32 {tuple(shapes[name])}"
        if not np.isfinite(value).all():
            return f"{name} holds NaN or Inf"
    examples, loss = metrics[NUM_EXAMPLES], metrics[LOSS]
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 1:
        return f"its {NUM_EXAMPLES} is {examples!r}, not a whole number above 0"
    if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not math.isfinite(loss):
        return f"its {LOSS} is {loss!r}, not a finite number"
    return None
