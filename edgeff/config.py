"""Training configuration: one dataclass, passed as an argument, serialised into
every run directory (and later into checkpoints and ONNX metadata)."""

import dataclasses
import json
from dataclasses import dataclass

from .errors import UsageError
from .fields import KIND_NAMES, is_kind

SCHEDULES = ("simultaneous", "layerwise")
NEGATIVES = ("hard", "random")
OPTIMIZERS = ("adam", "sgd")
GOODNESS = ("sum", "mean")
CLASSIFIERS = ("linear", "goodness")


def parse_spec(spec):
    """'784-2000-2000' -> (784, 2000, 2000): input width, then each hidden layer's width."""
    parts = str(spec).split("-")
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        raise UsageError(f"bad model spec {spec!r}: expected widths joined by '-', like 784-1000-1000") from None
    if len(sizes) < 2:
        raise UsageError(f"bad model spec {spec!r}: need the input width and at least one layer, like 784-1000")
    if any(s <= 0 for s in sizes):
        raise UsageError(f"bad model spec {spec!r}: every width must be a positive integer")
    return sizes


@dataclass
class TrainConfig:
    dataset: str = "fashion-mnist"
    model: str = "784-1000-1000"
    schedule: str = "simultaneous"
    epochs: int = 10
    batch_size: int = 256
    optimizer: str = "adam"
    lr: float = 0.003
    lr_decay: bool = True
    weight_decay: float = 0.0
    threshold: float = 10.0
    goodness: str = "sum"
    negatives: str = "hard"
    label_value: float = 8.0
    head_epochs: int = 3
    head_lr: float = 0.01
    classifier: str = "linear"
    shift: int = 0             # FF training on images moved by up to this many pixels
    seed: int = 0

    def validate(self):
        parse_spec(self.model)
        for name, allowed in (("schedule", SCHEDULES), ("negatives", NEGATIVES), ("optimizer", OPTIMIZERS),
                              ("goodness", GOODNESS), ("classifier", CLASSIFIERS)):
            if getattr(self, name) not in allowed:
                raise UsageError(f"--{name} {getattr(self, name)!r} is not one of: {', '.join(allowed)}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.shift <= 8:
            raise UsageError(f"--shift must be 0 to 8 pixels, got {self.shift}")
        if self.head_epochs < 0:
            raise UsageError(f"--head-epochs must be 0 or more, got {self.head_epochs}")
        for name in ("lr", "head_lr", "label_value"):
            if not getattr(self, name) > 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.classifier == "linear" and self.head_epochs == 0:
            raise UsageError("--classifier linear needs --head-epochs of 1 or more (or use --classifier goodness)")
        return self

    @property
    def sizes(self):
        return parse_spec(self.model)

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UsageError(f"config has unknown keys {sorted(unknown)}: written by a newer edgeff?")
        for f in dataclasses.fields(cls):
            if f.name in d and not is_kind(d[f.name], f.type):
                raise UsageError(f"config '{f.name}' is {d[f.name]!r}, not {KIND_NAMES[f.type]}")
        return cls(**d).validate()
