"""A trained conv FF net (Scalable FF): blocks of layers, each block with its class head.

Images come in as stored rows (H*W*C, channels last) and are gathered channels first
(N, C, H, W), times the data set's scale. Block k runs its layers, then its head (a 1x1
conv, one channel per class); class c's goodness is the mean of its squared head
outputs (kernels/sff.py). The block's output, layer-normalised, is block k+1's input.
Every block votes with its class-goodness vector; the class with the highest average
wins ("goodness"), or the last block alone decides ("last"): one forward pass, no pass per label.

With feedback (--algo ffcl --feedback-steps K, layers/feedback.py) the blocks settle for K + 1
steps: at step t > 0 block k's pre-activation also takes block k + 1's normalised output of
step t - 1 through F_k (model file arrays "k.fb.w", meta feedback_steps, format 2); the heads
score the last step.
"""

import json
import math

import numpy as np

from .config import MAX_FEEDBACK_STEPS
from .conv_models import conv_blocks
from .errors import ModelError
from .fields import array, field, is_kind
from .fileio import atomic_write, npz_writer
from .kernels import batch, norm, sff
from .layers import BLOCK_KINDS, feedback
from .layers.blocks import block_layers
from .model import check_input_info

FORMAT_VERSION = 2          # 2: with feedback; a net without is still written as 1
LN_EPS = 1e-5


class ConvNet:
    def __init__(self, in_shape, blocks, params, num_classes, input_info=None, feedback_steps=0, feedback_w=()):
        self.in_shape = tuple(in_shape)    # (C, H, W)
        self.blocks = blocks               # per block: its layer specs (dicts), the head not included
        self.params = params               # per block: per layer, the head last: {name: float32 array}
        self.num_classes = num_classes
        self.input_info = input_info       # as FFNet.input_info
        self.feedback_steps = feedback_steps
        self.feedback_w = list(feedback_w)  # F_k (C_k, C_{k+1}, 1, 1) for every block but the last, or []
        self.links = feedback.links(list(block_layers(in_shape, blocks, num_classes)), len(blocks)) \
            if feedback_steps else []

    @classmethod
    def create(cls, in_shape, blocks, num_classes, rng, alloc=None, feedback_steps=0):
        """Parameters initialised as torch initialises Conv2d; alloc(name, shape) gives the array to
        fill (the trainer's arena views), where name is "k.j.w" (block k, layer j; "k.head.w"), then
        with feedback every F_k's ("k.fb.w")."""
        alloc = alloc or (lambda name, shape: np.empty(shape, np.float32))
        params = [[] for _ in blocks]
        for lay in block_layers(in_shape, blocks, num_classes):
            kind = BLOCK_KINDS[lay.spec["kind"]]
            p = {n: alloc(f"{lay.name}.{n}", s) for n, s in kind.param_shapes(lay.spec, lay.in_shape).items()}
            kind.init(lay.spec, lay.in_shape, p, rng)
            params[lay.block].append(p)
        net = cls(in_shape, blocks, params, num_classes, feedback_steps=feedback_steps)
        for link in net.links:
            net.feedback_w.append(alloc(f"{link.name}.w", link.weight_shape))
            feedback.init(net.feedback_w[-1], rng)
        return net

    @property
    def in_features(self):
        return math.prod(self.in_shape)

    def layers(self):
        """(layers.blocks.Placed, its parameter arrays) for every layer in order, each block's head
        after its layers."""
        return zip(block_layers(self.in_shape, self.blocks, self.num_classes),
                   (p for block in self.params for p in block))

    # ---- inference (allocates per chunk: not the training hot path) ----

    def block_scores(self, x, scale, chunk=500):
        """(N, blocks, C) class goodness of every block for stored rows x (N, H*W*C)."""
        n = x.shape[0]
        out = np.empty((n, len(self.blocks), self.num_classes), np.float32)
        for start in range(0, n, chunk):
            idx = np.arange(start, min(start + chunk, n), dtype=np.int64)
            image = np.empty((len(idx), *self.in_shape), np.float32)
            batch.gather_images(x, idx, np.zeros(0), 0, scale, image)
            outs = [None] * len(self.blocks)       # every block's normalised output of the step before
            for t in range(self.feedback_steps + 1):
                h = image
                for lay, p in self.layers():
                    k = lay.block
                    if not lay.head:
                        h = _run(lay.spec, p, h)
                        if t and k < len(self.links) and lay.name == f"{k}.0":     # block k's pre-activation
                            link = self.links[k]
                            feedback.add(link, self.feedback_w[k], outs[k + 1],
                                         np.empty((len(h), *link.product_shape), np.float32), h,
                                         link.scratch_size(len(h)).allocate().workspace)
                        continue
                    if t == self.feedback_steps:
                        o = _run(lay.spec, p, h)
                        sff.class_goodness(o.reshape(len(idx), self.num_classes, -1), out[start:start + len(idx), k])
                    outs[k] = h = _layer_normalised(h)
        return out

    @staticmethod
    def votes(block_scores, classifier):
        """(N, C) class scores: "goodness" averages every block's, "last" is the last block's."""
        return block_scores.mean(axis=1) if classifier == "goodness" else block_scores[:, -1]

    def predict(self, x, scale, classifier="goodness"):
        return self.votes(self.block_scores(x, scale), classifier).argmax(axis=1)

    def errors(self, x, y, scale, classifiers=None):
        """{classifier: error rate on rows x with labels y}, one forward pass for all."""
        scores = self.block_scores(x, scale)
        return {c: float((self.votes(scores, c).argmax(axis=1) != y).mean()) for c in classifiers or self.classifiers()}

    def classifiers(self):
        return ["goodness", "last"]

    # ---- persistence ----

    def save(self, path, config_json):
        atomic_write(path, self.npz_writer(config_json))

    def npz_writer(self, config_json):
        """write(fileobj): the model as an .npz with its architecture, metadata and config."""
        arrays = {f"{lay.name}.{n}": a for lay, p in self.layers() for n, a in p.items()}
        arrays.update({f"{link.name}.w": w for link, w in zip(self.links, self.feedback_w)})
        meta = dict(format_version=FORMAT_VERSION if self.feedback_steps else 1, net="conv", in_shape=list(self.in_shape),
                    blocks=self.blocks, num_classes=self.num_classes, config=json.loads(config_json),
                    input=self.input_info)
        if self.feedback_steps:
            meta["feedback_steps"] = self.feedback_steps
        arrays["meta"] = np.frombuffer(json.dumps(meta, allow_nan=False).encode(), np.uint8)
        return npz_writer(arrays)

    @classmethod
    def from_arrays(cls, path, arrays, meta):
        """(net, its stored config as a dict) from a model file's arrays and metadata, every field,
        spec and array checked: a crafted file is a ModelError, never a crash."""
        if field(path, meta, "format_version", int) > FORMAT_VERSION:
            raise ModelError(f"{path}: conv model format {meta['format_version']} is newer than this edgeff reads "
                             f"({FORMAT_VERSION}); upgrade edgeff")
        in_shape = field(path, meta, "in_shape", list, lambda s: len(s) == 3 and all(is_kind(v, int) and 1 <= v <= 4096
                                                                                     for v in s), "(C, H, W)")
        c = field(path, meta, "num_classes", int, lambda c: 1 <= c <= 1000, "a whole number from 1 to 1000")
        blocks = field(path, meta, "blocks", list, lambda b: 1 <= len(b) <= 256 and all(isinstance(s, list) for s in b),
                       "a list of blocks")
        for k, specs in enumerate(blocks):
            for j, spec in enumerate(specs):
                _checked_kind(f"{path}: layer {k}.{j}", spec)
        steps = field(path, meta, "feedback_steps", int, lambda s: 1 <= s <= MAX_FEEDBACK_STEPS,
                      f"a whole number from 1 to {MAX_FEEDBACK_STEPS}") if "feedback_steps" in meta else 0
        params = [[] for _ in blocks]
        try:
            for lay in block_layers(in_shape, blocks, c):
                params[lay.block].append({n: array(path, arrays, f"{lay.name}.{n}", np.float32, s) for n, s in
                                          BLOCK_KINDS[lay.spec["kind"]].param_shapes(lay.spec, lay.in_shape).items()})
            net = cls(in_shape, blocks, params, c, meta.get("input"), steps)
        except ModelError:          # an array missing or of another shape, already named
            raise
        except ValueError as exc:   # a layer that does not fit its input, or blocks feedback cannot link
            raise ModelError(f"{path}: {exc}; it is damaged or not written by edgeff") from None
        net.feedback_w = [array(path, arrays, f"{link.name}.w", np.float32, link.weight_shape) for link in net.links]
        if net.input_info is not None:
            check_input_info(f"{path} input", net.input_info, net.in_features, c)
        return net, field(path, meta, "config", dict)

    def check_config(self, cfg, source="model"):
        """The stored TrainConfig describes these blocks."""
        if conv_blocks(cfg.model, cfg.width_mult, cfg.hybrid) != self.blocks:
            raise ModelError(f"{source}: its config says --model {cfg.model} --width-mult {cfg.width_mult} "
                             f"--hybrid {cfg.hybrid} but its layers differ; it is damaged or not written by edgeff")
        if cfg.feedback_steps != self.feedback_steps:
            raise ModelError(f"{source}: its config says --feedback-steps {cfg.feedback_steps} but its net settles "
                             f"{self.feedback_steps}; it is damaged or not written by edgeff")

    def describe_input(self, ds):
        self.input_info = dict(dataset=ds.name, features=int(ds.x_train.shape[1]), scale=float(ds.scale),
                               dtype=str(ds.x_train.dtype), image_shape=list(ds.image_shape),
                               label_names=[str(n) for n in ds.label_names])


def image_chw(image_shape):
    """(C, H, W) of a data set's images: (H, W) is gray, (H, W, C) channels last."""
    if image_shape is None or len(image_shape) not in (2, 3):
        return None
    return (1, *image_shape) if len(image_shape) == 2 else (image_shape[2], image_shape[0], image_shape[1])


def _layer_normalised(h):
    out = np.empty_like(h)
    norm.layer_norm(h.reshape(len(h), -1), out.reshape(len(h), -1), LN_EPS)
    return out


def _run(spec, params, x):
    kind = BLOCK_KINDS[spec["kind"]]
    shape = x.shape[1:]
    y = np.empty((x.shape[0], *kind.out_shape(spec, shape)), np.float32)
    kind.forward(spec, params, x, y, kind.scratch_size(spec, shape, x.shape[0]).allocate())
    return y


def _checked_kind(source, spec, nested=True):
    """The kind module of a layer spec read from a file, its fields checked against the kind's FIELDS,
    and the layers its LAYER_LISTS hold likewise (those may not hold layers in turn)."""
    kind = BLOCK_KINDS.get(spec.get("kind")) if isinstance(spec, dict) and isinstance(spec.get("kind"), str) else None
    if kind is None:
        raise ModelError(f"{source}: {str(spec)[:60]} is not a layer edgeff knows ({', '.join(BLOCK_KINDS)}); "
                         "it is damaged or written by a newer edgeff")
    lists = getattr(kind, "LAYER_LISTS", {})
    if lists and not nested:
        raise ModelError(f"{source}: a {spec['kind']} layer inside another; it is damaged or not written by edgeff")
    if set(spec) != {"kind", *kind.FIELDS, *lists}:
        raise ModelError(f"{source}: a {spec['kind']} layer has fields {sorted(spec)}, not "
                         f"{sorted(['kind', *kind.FIELDS, *lists])}; it is damaged or not written by edgeff")
    for name, (low, high) in kind.FIELDS.items():
        field(source, spec, name, int, lambda v: low <= v <= high, f"a whole number from {low} to {high}")
    for name, (low, high) in lists.items():
        inner = field(source, spec, name, list, lambda v: low <= len(v) <= high, f"a list of {low} to {high} layers")
        for i, layer in enumerate(inner):
            _checked_kind(f"{source} {name}[{i}]", layer, nested=False)
    return kind
