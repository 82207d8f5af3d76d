"""Training configuration: one dataclass, passed as an argument, serialised into
every run directory (and later into checkpoints and ONNX metadata)."""

import dataclasses
import json
from dataclasses import dataclass

import numpy as np

from .conv_models import HYBRID, conv_blocks, is_conv_model
from .errors import UsageError
from .fields import KIND_NAMES, is_kind

SCHEDULES = ("simultaneous", "layerwise")
NEGATIVES = ("hard", "random")
OPTIMIZERS = ("adam", "sgd")
GOODNESS = ("sum", "mean")
CLASSIFIERS = ("linear", "goodness", "first", "last")   # first: dense nets only; last: conv nets only
ALGOS = ("ff", "ff-unsup", "uff", "ffcl")   # ff-unsup: unsupervised FF + a linear probe (edgeff/unsup_train.py);
#   uff: layerwise unsupervised learners + that probe (edgeff/uff_train.py);
#   ffcl: separate label path, late labels, feedback (edgeff/ffcl_train.py)
UNSUPERVISED = ("ff-unsup", "uff")
LEARNERS = ("ae", "dae", "contrastive")     # uff's layer learners
MAX_TEMPERATURE = 100.0
MAX_FEEDBACK_STEPS = 8
FLOAT32_MAX = float(np.finfo(np.float32).max)   # the kernels compute in float32: a larger value becomes Inf
MAX_SEED = 2**32 - 1
FIELDS = ("full", "local")          # ff-unsup: a unit sees the whole layer below, or a window (edgeff/receptive.py)
MASK_BLURS, MAX_MASK_BLURS = 2, 6   # measured best on MNIST; up to 6 the masks are exact (kernels/hybrid.py)
BLURS_BEFORE_THE_OPTION = 6         # what an ff-unsup run's config that does not name mask_blurs used
MAX_LABEL_VALUE = 1e4      # the label's brightness beside inputs in about [0, 1]; far above, it drowns them
SAMPLES_SEEN = 600_000     # the default length of training, in examples shown
MAX_EPOCHS = 1000
CONV_BATCH_SIZE = 64       # conv nets: more, smaller steps measured better at the same examples seen
# options left unset (None) are settled by the data and the net: epochs by the data set's size,
# the rest by the model (conv nets have their own defaults) or by an --init run's config
SETTLED_LATER = ("model", "epochs", "batch_size", "head_epochs", "head_lr", "classifier", "width_mult", "hybrid")
# defaults that depend on the net: a conv net's, else its --algo's (else TrainConfig's). The unsupervised
# probe reads standardised features: 10 epochs at 0.003 measured best on MNIST and Fashion-MNIST.
KIND_DEFAULTS = {"classifier": {"conv": "last", "ffcl": "goodness"},
                 "head_epochs": {"conv": 0, "ffcl": 0, "ff-unsup": 10, "uff": 10},
                 "head_lr": {"ff-unsup": 0.003, "uff": 0.003}}


def _flag(name):
    return "--" + name.replace("_", "-")


def _check_whole(name, value, low, high=None):
    """A whole-number option in low..high (no upper end when high is None)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        allowed = f"at least {low}" if high is None else f"from {low} to {high}"
        raise UsageError(f"{_flag(name)} must be a whole number {allowed}, got {value!r}")


def _check_real(name, value, low=-FLOAT32_MAX, high=FLOAT32_MAX, above_low=False):
    """A real option: a number in low..high (above low when `above_low`); NaN and Inf fail the comparisons."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not (low < value if above_low else low <= value) or not value <= high:
        allowed = f"above {low:g} and at most {high:g}" if above_low else f"from {low:g} to {high:g}"
        raise UsageError(f"{_flag(name)} must be a number {allowed}, got {value!r}")


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
    width_mult: float = 1.0    # conv nets: channel count multiplier
    hybrid: str = "none"       # conv nets: what a block is (conv_models.py)
    init: str = ""             # conv nets: the run whose blocks this one started from
    freeze: int = 0            # conv nets: blocks (from the first) whose layers --init's weights keep
    in_turn: bool = False      # dense FF: positives, then negatives, through the layers (B rows, not 2B)
    algo: str = "ff"           # ff, ffcl; or ff-unsup or uff: the layers see no label, a probe learns them
                               # (ff-unsup with head_epochs 0: the encoder alone, no probe)
    probe_labels: float = 1.0  # ff-unsup, uff: share of the training labels the probe reads
    mask_blurs: int = MASK_BLURS   # ff-unsup: blurs of the hybrid masks' random bits (kernels/hybrid.py)
    fields: str = "full"       # ff-unsup: full, or local receptive fields (edgeff/receptive.py)
    learner: str = ""          # uff: what each layer is (LEARNERS)
    noise_rate: float = 0.25   # uff dae: share of a layer's inputs masked; contrastive: of a view's pixels
    temperature: float = 0.1   # uff contrastive: NT-Xent's temperature
    separate_labels: bool = False  # ffcl: a label vector per class at every layer, not the first only
    late_labels: bool = False      # ffcl: the activity passed on carries no label; it meets it in the goodness
    feedback_steps: int = 0        # ffcl: settling steps with each layer's activity fed back to the one below

    def validate(self):
        if not self.is_conv:
            parse_spec(self.model)
        for name, allowed in (("schedule", SCHEDULES), ("negatives", NEGATIVES), ("optimizer", OPTIMIZERS),
                              ("goodness", GOODNESS), ("classifier", CLASSIFIERS), ("hybrid", HYBRID),
                              ("algo", ALGOS), ("fields", FIELDS)):
            if getattr(self, name) not in allowed:
                raise UsageError(f"--{name} {getattr(self, name)!r} is not one of: {', '.join(allowed)}")
        for name, low, high in (("epochs", 1, None), ("batch_size", 1, None), ("head_epochs", 0, None),
                                ("shift", 0, 8), ("seed", 0, MAX_SEED)):
            _check_whole(name, getattr(self, name), low, high)
        _check_real("lr", self.lr, low=0, above_low=True)
        _check_real("head_lr", self.head_lr, low=0, above_low=True)
        _check_real("weight_decay", self.weight_decay, low=0)
        _check_real("threshold", self.threshold)
        _check_real("label_value", self.label_value, low=0, high=MAX_LABEL_VALUE, above_low=True)
        for name in ("lr_decay", "in_turn", "separate_labels", "late_labels"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.in_turn and self.is_conv:
            raise UsageError("--in-turn is for dense nets: conv blocks already pass one batch of B rows")
        _check_real("width_mult", self.width_mult, low=0, high=16, above_low=True)
        _check_whole("freeze", self.freeze, 0)
        if self.is_conv:
            n_blocks = len(conv_blocks(self.model, self.width_mult, self.hybrid))     # a bad spec is named here
            if self.freeze > n_blocks:
                raise UsageError(f"--freeze {self.freeze}: {self.model} trained with --hybrid {self.hybrid} has "
                                 f"{n_blocks} blocks")
        if self.freeze and not self.init:
            raise UsageError("--freeze keeps the blocks of an --init run: give --init RUN_DIR")
        if self.is_conv and (self.classifier in ("linear", "first") or self.head_epochs):
            raise UsageError(f"{self.model} classifies by its blocks' class goodness: use --classifier goodness "
                             "or last, and --head-epochs 0 (the defaults for conv nets)")
        if not self.is_conv and self.classifier == "last":
            raise UsageError("--classifier last (the last block's class goodness) is for conv nets; "
                             "dense nets have linear, goodness and first")
        _check_real("probe_labels", self.probe_labels, low=0, high=1, above_low=True)
        if self.algo in UNSUPERVISED and (self.is_conv or self.classifier != "linear"):
            raise UsageError(f"--algo {self.algo} trains a dense --model and classifies with its linear probe: "
                             "use a dense --model and --classifier linear")
        if self.algo not in UNSUPERVISED and self.probe_labels != 1.0:
            raise UsageError("--probe-labels is the probe's share of labels in --algo ff-unsup or uff; leave it out")
        _check_whole("mask_blurs", self.mask_blurs, 1, MAX_MASK_BLURS)
        if self.algo != "ff-unsup" and self.mask_blurs != MASK_BLURS:
            raise UsageError("--mask-blurs shapes the hybrid images of --algo ff-unsup; leave it out")
        if self.algo != "ff-unsup" and self.fields != "full":
            raise UsageError("--fields local gives the layers of --algo ff-unsup local receptive fields; leave it out")
        self._check_learner()
        _check_whole("feedback_steps", self.feedback_steps, 0, MAX_FEEDBACK_STEPS)
        self._check_ffcl()
        if self.algo != "ff-unsup" and self.classifier == "linear" and self.head_epochs == 0:   # ff-unsup: encoder
            raise UsageError("--classifier linear needs --head-epochs 1 or more (or use --classifier goodness)")
        return self

    def _check_learner(self):
        """--learner goes with --algo uff alone; --noise-rate and --temperature only with the learners using them."""
        if self.algo == "uff" and self.learner not in LEARNERS:
            raise UsageError(f"--algo uff needs --learner, one of: {', '.join(LEARNERS)}" if not self.learner else
                             f"--learner {self.learner!r} is not one of: {', '.join(LEARNERS)}")
        if self.algo != "uff" and self.learner:
            raise UsageError(f"--learner is the layer learner of --algo uff (not {self.algo}): add --algo uff or "
                             "leave it out")
        _check_real("noise_rate", self.noise_rate, low=0, high=1)
        if self.noise_rate >= 1:
            raise UsageError(f"--noise-rate must be below 1 (it would mask every input), got {self.noise_rate!r}")
        _check_real("temperature", self.temperature, low=0, high=MAX_TEMPERATURE, above_low=True)
        defaults = TrainConfig()
        if self.noise_rate != defaults.noise_rate and self.learner not in ("dae", "contrastive"):
            raise UsageError("--noise-rate is the masking noise of --algo uff --learner dae or contrastive; "
                             "leave it out")
        if self.temperature != defaults.temperature and self.learner != "contrastive":
            raise UsageError("--temperature is NT-Xent's, of --algo uff --learner contrastive; leave it out")

    def _check_ffcl(self):
        """--algo ffcl's options go with it, and it with what it does (edgeff/ffcl_train.py)."""
        if self.algo != "ffcl":
            given = [f for f, on in (("--separate-labels", self.separate_labels), ("--late-labels", self.late_labels),
                                     ("--feedback-steps", self.feedback_steps)) if on]
            if given:
                raise UsageError(f"{given[0]} is an FFCL option: add --algo ffcl")
            return
        if self.is_conv:
            return self._check_conv_ffcl()
        if self.schedule != "simultaneous" or self.in_turn or self.shift or self.init:
            raise UsageError("--algo ffcl trains all layers at once from fresh weights: leave out --schedule "
                             "layerwise, --in-turn, --shift (dense nets) and --init")
        if self.classifier != "goodness" or self.head_epochs:
            raise UsageError("--algo ffcl classifies by its layers' goodness over all labels: use --classifier "
                             "goodness and --head-epochs 0 (its defaults)")
        if self.late_labels and not self.separate_labels:
            raise UsageError("--late-labels needs --separate-labels: without a label vector at every layer, the "
                             "layers past the first see the label only through the activity it would no longer carry")
        if self.feedback_steps and len(self.sizes) < 3:
            raise UsageError(f"--feedback-steps feeds a layer's activity back to the one below: --model {self.model} "
                             "has one layer; give it two or more")
        if self.feedback_steps and not self.late_labels and self.negatives == "hard":
            raise UsageError("--feedback-steps with early labels picks hard negatives before the feedback settles, "
                             "and the net learns the wrong ones (58.8 % test error measured): add --separate-labels "
                             "--late-labels, or --negatives random")

    def _check_conv_ffcl(self):
        """A conv net's blocks already keep the label out of the features and score every class in one pass
        (their class heads): --algo ffcl adds the feedback, over blocks of one conv each."""
        if self.separate_labels or self.late_labels:
            raise UsageError("--separate-labels and --late-labels are how a conv net already works (no label in the "
                             "image, one class head per block scoring every class): leave them out")
        if self.schedule != "simultaneous" or self.init:
            raise UsageError("--algo ffcl trains all blocks at once from fresh weights: leave out --schedule "
                             "layerwise and --init")
        if self.feedback_steps and self.hybrid != "none":
            raise UsageError(f"--feedback-steps feeds each block's output back to the one conv of the block below: "
                             f"use --hybrid none, not {self.hybrid}")
        if self.feedback_steps and len(conv_blocks(self.model, self.width_mult, self.hybrid)) < 2:
            raise UsageError(f"--feedback-steps feeds a block's output back to the block below: --model {self.model} "
                             "has one block; give it two or more")

    @property
    def is_conv(self):
        return is_conv_model(self.model)

    @property
    def sizes(self):
        return parse_spec(self.model)

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UsageError(f"config has unknown keys {sorted(unknown)}: written by a newer edgeff?")
        for f in dataclasses.fields(cls):
            if f.name in d and not is_kind(d[f.name], f.type):
                raise UsageError(f"config '{f.name}' is {d[f.name]!r}, not {KIND_NAMES[f.type]}")
        if d.get("algo") == "ff-unsup" and "mask_blurs" not in d:      # a run from before --mask-blurs
            d = {**d, "mask_blurs": BLURS_BEFORE_THE_OPTION}
        return cls(**d).validate()


def default_epochs(n_train):
    """Epochs that show the net SAMPLES_SEEN examples, from the default to MAX_EPOCHS: a small
    data set gets as many updates as a large one, not a 60,000-row set's 10 epochs' worth."""
    return max(TrainConfig.epochs, min(MAX_EPOCHS, -(-SAMPLES_SEEN // max(1, n_train))))


def default_batch_size(model):
    """The batch size of a net left without one: CONV_BATCH_SIZE for conv nets, TrainConfig's for dense."""
    return CONV_BATCH_SIZE if is_conv_model(model) else TrainConfig.batch_size


def config_from_options(options, batch_size, init_cfg=None, n_train=None):
    """The TrainConfig of these options (an object with TrainConfig's field names as attributes: the
    parsed command line, or FFClassifier). Net options left None come from init_cfg (--init's run),
    else the defaults; epochs left None are default_epochs(n_train) (the default's when n_train is None)."""
    defaults = TrainConfig()
    values = {k: getattr(options, k) for k in TrainConfig.__dataclass_fields__ if hasattr(options, k)}
    values["batch_size"] = batch_size
    values["init"] = values.get("init") or ""
    for name in ("model", "width_mult", "hybrid"):
        given, inherited = values[name], getattr(init_cfg, name, None)
        if init_cfg is not None and given is not None and given != inherited:
            raise UsageError(f"{_flag(name)} {given} differs from --init's {inherited}: the blocks must "
                             "be the same; leave it out")
        values[name] = given if given is not None else inherited if inherited is not None else getattr(defaults, name)
    if values["epochs"] is None:
        values["epochs"] = defaults.epochs if n_train is None else default_epochs(n_train)
    kind = "conv" if is_conv_model(values["model"]) else values.get("algo", defaults.algo)
    for name, per_kind in KIND_DEFAULTS.items():
        if values.get(name) is None:
            values[name] = per_kind.get(kind, getattr(defaults, name))
    return TrainConfig(**values).validate()
