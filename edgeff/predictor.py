"""A trained model ready to label rows: a run directory (NumPy/Numba forward) or an .onnx
file (onnxruntime). Both give .features, .scale, .label_names and .predict(rows)."""

import os

import numpy as np

from .errors import ExportError, UsageError
from .fields import field
from .fileio import parse_json
from .runs import check_classifier, load_run

DEFAULT_SCALE = 1 / 255  # runs saved before the model recorded its input scale held 8-bit pixels


class RunPredictor:
    engine = "numpy"

    def __init__(self, path, classifier=None):
        self.net, cfg = load_run(path)
        info = self.net.input_info or {}
        self.features = self.net.in_features
        self.scale = info.get("scale", DEFAULT_SCALE)
        self.label_names = info.get("label_names") or [str(c) for c in range(self.net.num_classes)]
        self.classifier = classifier or cfg.classifier
        check_classifier(path, self.net, self.classifier)

    def predict(self, rows):
        return self.net.predict(rows, 1.0, self.classifier)


class OnnxPredictor:
    engine = "onnxruntime"

    def __init__(self, path, classifier=None, threads=0):
        from .export import session
        try:
            with open(path, "rb") as f:
                self.session = session(f.read(), threads)
        except OSError as exc:
            raise ExportError(f"{path}: cannot read it ({exc.strerror})") from None
        except Exception as exc:  # onnxruntime: InvalidProtobuf, InvalidGraph, Fail, ...
            raise ExportError(f"{path}: not a model onnxruntime can load ({str(exc).splitlines()[0][:200]})") from None
        inputs, outputs = self.session.get_inputs(), [o.name for o in self.session.get_outputs()]
        shape = inputs[0].shape if len(inputs) == 1 else None
        if shape is None or inputs[0].type != "tensor(float)" or len(shape) != 2 or not isinstance(shape[1], int):
            got = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
            raise ExportError(f"{path}: takes {got}; edgeff infer runs models with one float32 input [N, D] "
                              "(as 'edgeff export' writes)")
        self.input_name, self.batch = inputs[0].name, shape[0] if isinstance(shape[0], int) else None
        self.features = shape[1]
        # 'edgeff export' names them: label + probabilities (linear), label or goodness_label + scores
        # a conv net's export holds one vote: its metadata 'head' says which (goodness or last; dense: first)
        props = self.session.get_modelmeta().custom_metadata_map
        if outputs == ["features"]:
            raise UsageError(f"{path}: an encoder's features (FFEncoder's export): it classifies nothing; "
                             "feed its features to a classifier")
        vote = props.get("head") if props.get("head") in ("last", "first") else "goodness"
        linear = "label" if "probabilities" in outputs else None
        goodness = "goodness_label" if "goodness_label" in outputs else None if linear else "label"
        self.classifier = classifier or ("linear" if linear else vote)
        self.output = {"linear": linear, vote: goodness}.get(self.classifier)
        if self.output not in outputs:
            raise UsageError(f"{path}: has no {self.classifier} output (its outputs: {', '.join(outputs)}); "
                             f"export it with --head {self.classifier} or both")
        widths = {o.name: o.shape[1] for o in self.session.get_outputs() if len(o.shape) == 2}
        classes = widths.get("probabilities", widths.get("scores"))
        self.scale, self.label_names = _metadata(path, props, classes)

    def predict(self, rows):
        step = self.batch or 4096
        labels = np.empty(len(rows), np.int64)
        for i in range(0, len(rows), step):
            chunk = rows[i:i + step]
            if self.batch and len(chunk) < self.batch:   # a fixed-batch model: pad the last chunk
                chunk = np.concatenate([chunk, np.zeros((self.batch - len(chunk), rows.shape[1]), np.float32)])
            labels[i:i + step] = self.session.run([self.output], {self.input_name: chunk})[0][:len(rows) - i]
        return labels


def _metadata(path, props, classes):
    """(input scale, label names or None) from an ONNX model's metadata_props, checked; `classes`:
    the width of its scores output, if it has one."""
    def parsed(key, default):
        try:
            return parse_json(props[key]) if key in props else default
        except ValueError:
            raise ExportError(f"{path}: metadata '{key}' is not JSON; re-export the model with 'edgeff export'") from None
    info = parsed("input", {})
    if not isinstance(info, dict):
        raise ExportError(f"{path}: metadata 'input' is not a JSON object; re-export the model with 'edgeff export'")
    scale = DEFAULT_SCALE
    if "scale" in info:
        scale = field(f"{path} metadata 'input'", info, "scale", float, lambda s: s > 0, "a positive number", ExportError)
    names = parsed("label_names", None)
    if names is not None:
        known = isinstance(classes, int)
        field(path, {"label_names": names}, "label_names", list,
              lambda n: all(isinstance(v, str) for v in n) and (not known or len(n) == classes),
              f"a list of {classes} names" if known else "a list of names", ExportError)
    return scale, names


def load_predictor(path, classifier=None):
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such model; give a run directory, its model.npz or an .onnx file")
    if os.path.isfile(path) and path.lower().endswith(".onnx"):
        return OnnxPredictor(path, classifier)
    return RunPredictor(path, classifier)
