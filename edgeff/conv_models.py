"""Conv nets: named ones and a spec syntax, as blocks of layer specs (layers/BLOCK_KINDS).

A net is a list of units: a unit is what pure FF trains as one block (a conv, its ReLU
and, when asked, a 2x2 max pool). --hybrid groups units into bigger blocks, each trained
by backprop inside it against its own class-goodness loss:
    none    every unit is a block: pure FF, no gradient crosses a conv layer's output
    block   the net's own blocks, backprop inside each
    net     the whole net is one block: plain backprop end to end (the baseline)
--width-mult scales every conv's channels (at least 1).

Spec syntax, for nets of your own: "cnn:" then units joined by "-" within a block and
"/" between blocks. A unit is OUT[kK][sS][p]: a KxK conv (default 3, padded to keep the
size) with OUT channels and stride S (default 1), a ReLU, and with "p" a 2x2 max pool.
    cnn:32p/64p-128     = conv-small: blocks [32 pooled] and [64 pooled, 128]
"""

import re

from .errors import UsageError

HYBRID = ("none", "block", "net")
NETS = {
    "conv-small": "cnn:32p/64p-128",   # 28x28 -> 14 -> 7: 3x3 convs of 32, 64, 128 channels
}
_UNIT = re.compile(r"([0-9]{1,5})(?:k([0-9]{1,2}))?(?:s([0-9]))?(p?)")


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
    layers = [{"kind": "conv2d", "out": scale(out), "k": k, "stride": stride, "pad": k // 2, "groups": 1},
              {"kind": "relu"}]
    return layers + ([{"kind": "maxpool", "k": 2}] if m[4] else [])


def conv_blocks(model, width_mult, hybrid):
    """The blocks (lists of layer specs) of conv net `model` (a name or a spec) trained in mode `hybrid`."""
    if hybrid not in HYBRID:
        raise UsageError(f"--hybrid {hybrid!r} is not one of: {', '.join(HYBRID)}")
    spec = NETS.get(model, model)
    if not is_conv_model(spec):
        raise UsageError(f"--model {model!r} is not a conv net: use {', '.join(NETS)} or a spec like cnn:32p/64p-128")
    scale = lambda n: max(1, round(n * width_mult))
    groups = [[_unit(u, scale, model) for u in block.split("-")] for block in spec[4:].split("/")]
    if hybrid == "none":
        groups = [[unit] for block in groups for unit in block]
    elif hybrid == "net":
        groups = [[unit for block in groups for unit in block]]
    return [[layer for unit in block for layer in unit] for block in groups]
