"""Conv nets: named ones and a spec syntax, as blocks of layer specs (layers/BLOCK_KINDS).

A net is a list of units: a unit is what pure FF trains as one block (a conv and what
follows it up to the next conv: its activation, a max pool, a squeeze-excite). The net
groups its units into blocks; a residual block adds its input (or a strided 1x1 conv of
it, when the block changes the shape) to the output of its units' last conv, before that
unit's activation (layers/residual.py). --hybrid says what is trained as one block, by
backprop inside it against its own class-goodness loss:
    none    every unit is a block: pure FF, no gradient crosses a unit's output; a
            residual block's skip connection is dropped (it would cross blocks)
    block   the net's own blocks, backprop inside each
    net     the whole net is one block: plain backprop end to end (the baseline)
--width-mult scales every conv's channels (at least 1).

Spec syntax, for nets of your own: "cnn:" then units joined by "-" within a block and
"/" between blocks. A unit is OUT[kK][sS][p]: a KxK conv (default 3, padded to keep the
size) with OUT channels and stride S (default 1), a ReLU, and with "p" a 2x2 max pool.
A block written rUNIT-UNIT... is residual (its units may not pool; not the first block).
    cnn:32p/64p-128     = conv-small: blocks [32 pooled] and [64 pooled, 128]
    cnn:16/r16-16/r32s2-32    a stem, a residual block, a residual block that halves the
                              size (its shortcut a 1x1 conv of stride 2 to 32 channels)

Named nets, sized for 28x28 and 32x32 images (their first conv keeps the size, where the
224-pixel originals halve it):
    conv-small          3x3 convs of 32, 64, 128 channels, two 2x2 pools
    resnet18            ResNet18 as on CIFAR: a 3x3 stem conv, 4 stages of 2 basic blocks
                        (conv-relu-conv plus a skip, then relu) of 64, 128, 256, 512
                        channels, each stage after the first halving the size (28 -> 4)
    mobilenetv3-small   MobileNetV3-small (Howard et al. 2019, table 2): a 3x3 stem, 11
                        inverted residual blocks (1x1 expand, depthwise kxk, squeeze-excite
                        where the paper has it, 1x1 project; a skip where the shape is kept),
                        a last 1x1 conv of 576; hardswish and ReLU as in the paper, no batch
                        norm (layer norm sits between blocks). 28 -> 2
"""

import math
import re

from .errors import UsageError

HYBRID = ("none", "block", "net")
RESNET18 = "cnn:64/r64-64/r64-64/r128s2-128/r128-128/r256s2-256/r256-256/r512s2-512/r512-512"
# MobileNetV3-small's bottlenecks: kernel, expansion, out channels, squeeze-excite, activation, stride
MOBILENETV3_SMALL = [
    (3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2), (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hardswish", 2), (5, 240, 40, True, "hardswish", 1), (5, 240, 40, True, "hardswish", 1),
    (5, 120, 48, True, "hardswish", 1), (5, 144, 48, True, "hardswish", 1), (5, 288, 96, True, "hardswish", 2),
    (5, 576, 96, True, "hardswish", 1), (5, 576, 96, True, "hardswish", 1),
]
_UNIT = re.compile(r"([0-9]{1,5})(?:k([0-9]{1,2}))?(?:s([0-9]))?(p?)")


def _conv(out, k=1, stride=1, groups=1):
    return {"kind": "conv2d", "out": out, "k": k, "stride": stride, "pad": k // 2, "groups": groups}


def _mobilenetv3_small(scale):
    """The net as (units, residual) blocks."""
    c = scale(16)
    net = [([[_conv(c, 3), {"kind": "hardswish"}]], False)]
    for k, exp, out, se, act, stride in MOBILENETV3_SMALL:
        e, o = scale(exp), scale(out)
        expand = [[_conv(e), {"kind": act}]] if e != c else []
        depthwise = [_conv(e, k, stride, groups=e), {"kind": act}] + ([{"kind": "se", "mid": max(1, e // 4)}] if se else [])
        net.append((expand + [depthwise, [_conv(o)]], stride == 1 and c == o))
        c = o
    return net + [([[_conv(scale(576)), {"kind": "hardswish"}]], False)]


NETS = {
    "conv-small": "cnn:32p/64p-128",   # 28x28 -> 14 -> 7: 3x3 convs of 32, 64, 128 channels
    "resnet18": RESNET18,
    "mobilenetv3-small": _mobilenetv3_small,
}


def is_conv_model(model):
    return model in NETS or str(model).startswith("cnn:")


def _unit(text, scale, model):
    m = _UNIT.fullmatch(text)
    if not m:
        raise UsageError(f"bad conv spec {model!r}: unit {text!r} is not OUT[kK][sS][p], like 32 or 64k5p")
    out, k, stride = int(m[1]), int(m[2] or 3), int(m[3] or 1)
    if not (1 <= out <= 4096 and k % 2 == 1 and 1 <= k <= 15 and 1 <= stride <= 8):
        raise UsageError(f"bad conv spec {model!r}: unit {text!r} needs 1..4096 channels, an odd kernel 1..15 "
                         "and a stride 1..8")
    layers = [_conv(scale(out), k, stride), {"kind": "relu"}]
    return layers + ([{"kind": "maxpool", "k": 2}] if m[4] else [])


def _parse(spec, scale, model):
    """A cnn: spec as (units, residual) blocks."""
    net = []
    for text in spec[4:].split("/"):
        residual = text.startswith("r")
        units = [_unit(u, scale, model) for u in text[residual:].split("-")]
        if residual and any(layer["kind"] == "maxpool" for unit in units for layer in unit):
            raise UsageError(f"bad conv spec {model!r}: residual block {text!r} may not pool; pool in the block before")
        net.append((units, residual))
    return net


def _residual(layers, c_in):
    """A residual block's layers: its layers up to the last conv as one residual layer, then the rest."""
    last = max(i for i, layer in enumerate(layers) if layer["kind"] == "conv2d")
    body = layers[:last + 1]
    stride, c_out = math.prod(layer["stride"] for layer in body if layer["kind"] == "conv2d"), body[-1]["out"]
    shortcut = [] if stride == 1 and c_in == c_out else [_conv(c_out, stride=stride)]
    return [{"kind": "residual", "body": body, "shortcut": shortcut}] + layers[last + 1:]


def conv_blocks(model, width_mult, hybrid):
    """The blocks (lists of layer specs) of conv net `model` (a name or a spec) trained in mode `hybrid`."""
    if hybrid not in HYBRID:
        raise UsageError(f"--hybrid {hybrid!r} is not one of: {', '.join(HYBRID)}")
    if not is_conv_model(model):
        raise UsageError(f"--model {model!r} is not a conv net: use {', '.join(NETS)} or a spec like cnn:32p/64p-128")
    spec = NETS.get(model, model)
    scale = lambda n: max(1, round(n * width_mult))
    net = spec(scale) if callable(spec) else _parse(spec, scale, model)
    blocks, c_in = [], None
    for units, residual in net:
        layers = [layer for unit in units for layer in unit]
        if residual and c_in is None:
            raise UsageError(f"bad conv spec {model!r}: the first block cannot be residual (start with a plain conv)")
        blocks.append(_residual(layers, c_in) if residual else layers)
        c_in = [layer["out"] for layer in layers if layer["kind"] == "conv2d"][-1]
    if hybrid == "none":
        return [unit for units, _ in net for unit in units]
    return [[layer for block in blocks for layer in block]] if hybrid == "net" else blocks
