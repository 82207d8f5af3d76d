"""A trained model ready to label rows: a run directory (NumPy/Numba forward) or an .onnx
file (onnxruntime). Both give .features, .scale, .label_names and .predict(rows)."""

import os

import numpy as np

from .errors import ExportError, UsageError
from .fields import field
from .fileio import open_regular, parse_json
from .runs import check_classifier, load_run

DEFAULT_SCALE = 1 / 255  # runs saved before the model recorded its input scale held 8-bit pixels
MAX_FIXED_BATCH = 4096   # rows per onnxruntime run (a fixed-batch model's own, padded, at most this)


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
        self.path = path
        try:
            with open_regular(path) as f:
                model = f.read()
        except OSError as exc:
            raise ExportError(f"{path}: cannot read it ({exc.strerror})") from None
        except ValueError as exc:
            raise ExportError(f"{path}: {exc}; give an .onnx file") from None
        _refuse_external_data(path, model)
        import onnxruntime
        self.quiet = onnxruntime.RunOptions()
        self.quiet.log_severity_level = 4     # a failing run raises, shown as one line: no log of it on stderr
        try:
            self.session = session(model, threads)
        except Exception as exc:  # onnxruntime: InvalidProtobuf, InvalidGraph, Fail, ...
            raise ExportError(f"{path}: not a model onnxruntime can load ({_first_line(exc)})") from None
        inputs, outputs = self.session.get_inputs(), [o.name for o in self.session.get_outputs()]
        shape = inputs[0].shape if len(inputs) == 1 else None
        if shape is None or inputs[0].type != "tensor(float)" or len(shape) != 2 or not isinstance(shape[1], int):
            got = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
            raise ExportError(f"{path}: takes {got}; edgeff infer runs models with one float32 input [N, D] "
                              "(as 'edgeff export' writes)")
        self.input_name, self.batch = inputs[0].name, shape[0] if isinstance(shape[0], int) else None
        self.features = shape[1]
        if self.features < 1 or (self.batch is not None and not 1 <= self.batch <= MAX_FIXED_BATCH):
            raise ExportError(f"{path}: takes {shape[0]} rows of {shape[1]} features at a time; edgeff infer runs "
                              f"models of 1 or more features and at most {MAX_FIXED_BATCH} rows fixed (it pads a "
                              "short batch): export with --batch dynamic")
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
        self.classes = len(self.label_names) if self.label_names else classes   # None: the model does not say

    def predict(self, rows):
        step = self.batch or MAX_FIXED_BATCH
        labels = np.empty(len(rows), np.int64)
        for i in range(0, len(rows), step):
            chunk = rows[i:i + step]
            n = len(chunk)
            if self.batch and n < self.batch:   # a fixed-batch model: pad the last chunk
                chunk = np.concatenate([chunk, np.zeros((self.batch - n, rows.shape[1]), np.float32)])
            try:
                out = self.session.run([self.output], {self.input_name: chunk}, self.quiet)[0]
            except Exception as exc:  # onnxruntime's Fail, InvalidArgument, RuntimeException
                raise ExportError(f"{self.path}: onnxruntime failed running it ({_first_line(exc)})") from None
            if out.dtype.kind not in "iu" or out.shape != (len(chunk),):
                raise ExportError(f"{self.path}: its {self.output} output is {out.dtype} {out.shape}, not one class "
                                  f"index per row ({len(chunk)}); export the model with 'edgeff export'")
            labels[i:i + n] = out[:n]
        if len(labels) and (labels.min() < 0 or (self.classes and labels.max() >= self.classes)):
            bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
            raise ExportError(f"{self.path}: gave class {bad} for a row, outside "
                              f"{f'0..{self.classes - 1}' if self.classes else '0 and up'}; export the model with "
                              "'edgeff export'")
        return labels


def _first_line(exc):
    """onnxruntime's message, one line, short (it may carry a whole node dump)."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


def _refuse_external_data(path, model):
    """An ONNX file must hold its own weights: a tensor stored outside it (external data) would be read
    from wherever its location points, relative to the working directory, outside the model."""
    import onnx
    try:
        proto = onnx.load_model_from_string(model)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ExportError(f"{path}: not a model onnxruntime can load ({_first_line(exc)})") from None
    graphs = [proto.graph]
    while graphs:
        g = graphs.pop()
        tensors = list(g.initializer) + [a.t for n in g.node for a in n.attribute if a.HasField("t")]
        tensors += [t for n in g.node for a in n.attribute for t in a.tensors]
        graphs += [a.g for n in g.node for a in n.attribute if a.HasField("g")]
        graphs += [sub for n in g.node for a in n.attribute for sub in a.graphs]
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in tensors):
            raise ExportError(f"{path}: keeps weights in files outside it (external data), which edgeff infer "
                              "does not read; save the model as one file")


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
