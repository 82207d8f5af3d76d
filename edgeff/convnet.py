"""A trained conv FF net (Scalable FF): blocks of layers, each block with its class head.

Images come in as stored rows (H*W*C, channels last) and are gathered channels first
(N, C, H, W), times the data set's scale. Block k runs its layers, then its head (a 1x1
conv, one channel per class); class c's goodness is the mean of its squared head
outputs (kernels/sff.py). The block's output, layer-normalised, is block k+1's input.
Every block votes with its class-goodness vector; the class with the highest average
wins ("goodness"), or the last block alone decides ("last"): one forward pass, no pass per label.
"""

import json
import math

import numpy as np

from .conv_models import conv_blocks
from .errors import ModelError
from .fields import array, field, is_kind
from .fileio import atomic_write, npz_writer
from .kernels import batch, norm, sff
from .layers import BLOCK_KINDS
from .layers.blocks import block_layers
from .model import check_input_info

FORMAT_VERSION = 1
LN_EPS = 1e-5


class ConvNet:
    def __init__(self, in_shape, blocks, params, num_classes, input_info=None):
        self.in_shape = tuple(in_shape)    # (C, H, W)
        self.blocks = blocks               # per block: its layer specs (dicts), the head not included
        self.params = params               # per block: per layer, the head last: {name: float32 array}
        self.num_classes = num_classes
        self.input_info = input_info       # as FFNet.input_info

    @classmethod
    def create(cls, in_shape, blocks, num_classes, rng, alloc=None):
        """Parameters initialised as torch initialises Conv2d; alloc(name, shape) gives the array to
        fill (the trainer's arena views), where name is "k.j.w" (block k, layer j; "k.head.w")."""
        alloc = alloc or (lambda name, shape: np.empty(shape, np.float32))
        params = [[] for _ in blocks]
        for lay in block_layers(in_shape, blocks, num_classes):
            kind = BLOCK_KINDS[lay.spec["kind"]]
            p = {n: alloc(f"{lay.name}.{n}", s) for n, s in kind.param_shapes(lay.spec, lay.in_shape).items()}
            kind.init(lay.spec, lay.in_shape, p, rng)
            params[lay.block].append(p)
        return cls(in_shape, blocks, params, num_classes)

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
            h = np.empty((len(idx), *self.in_shape), np.float32)
            batch.gather_images(x, idx, np.zeros(0), 0, scale, h)
            for lay, p in self.layers():
                if not lay.head:
                    h = _run(lay.spec, p, h)
                    continue
                o = _run(lay.spec, p, h)
                sff.class_goodness(o.reshape(len(idx), self.num_classes, -1), out[start:start + len(idx), lay.block])
                flat = h.reshape(len(idx), -1)
                norm.layer_norm(flat, flat, LN_EPS)
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
        meta = dict(format_version=FORMAT_VERSION, net="conv", in_shape=list(self.in_shape), blocks=self.blocks,
                    num_classes=self.num_classes, config=json.loads(config_json), input=self.input_info)
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
        params = [[] for _ in blocks]
        try:
            for lay in block_layers(in_shape, blocks, c):
                params[lay.block].append({n: array(path, arrays, f"{lay.name}.{n}", np.float32, s) for n, s in
                                          BLOCK_KINDS[lay.spec["kind"]].param_shapes(lay.spec, lay.in_shape).items()})
        except ModelError:          # an array missing or of another shape, already named
            raise
        except ValueError as exc:   # a layer that does not fit its input
            raise ModelError(f"{path}: {exc}; it is damaged or not written by edgeff") from None
        net = cls(in_shape, blocks, params, c, meta.get("input"))
        if net.input_info is not None:
            check_input_info(f"{path} input", net.input_info, net.in_features, c)
        return net, field(path, meta, "config", dict)

    def check_config(self, cfg, source="model"):
        """The stored TrainConfig describes these blocks."""
        if conv_blocks(cfg.model, cfg.width_mult, cfg.hybrid) != self.blocks:
            raise ModelError(f"{source}: its config says --model {cfg.model} --width-mult {cfg.width_mult} "
                             f"--hybrid {cfg.hybrid} but its layers differ; it is damaged or not written by edgeff")

    def describe_input(self, ds):
        self.input_info = dict(dataset=ds.name, features=int(ds.x_train.shape[1]), scale=float(ds.scale),
                               dtype=str(ds.x_train.dtype), image_shape=list(ds.image_shape),
                               label_names=[str(n) for n in ds.label_names])


def image_chw(image_shape):
    """(C, H, W) of a data set's images: (H, W) is gray, (H, W, C) channels last."""
    if image_shape is None or len(image_shape) not in (2, 3):
        return None
    return (1, *image_shape) if len(image_shape) == 2 else (image_shape[2], image_shape[0], image_shape[1])


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
