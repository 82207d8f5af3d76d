"""Static memory plan for training, as TensorFlow Lite Micro plans its tensor arena.

Every buffer the training loop touches is declared with its shape, dtype and
lifetime: the first and last step that use it, on one timeline that runs through
the phases of training (one phase per layer when layerwise, one for all layers
when simultaneous, then the linear head). Within a phase each batch runs the
same steps:
    step 0            stage the batch (gather, overlay labels, hard negatives)
    step 1 + 2k       layer k forward: z = x @ w, activities, goodness, loss
    step 2 + 2k       layer k update: gradient and optimiser step
A buffer is live from its first to its last step of a phase (or across phases,
for weights). The planner gives each buffer an offset in one arena so that two
buffers share bytes only when their lifetimes do not overlap. The arena is
allocated once; the trainer works on views into it.
"""

import math
from dataclasses import dataclass

import numpy as np

from .errors import UsageError

ALIGN = 64  # bytes: a cache line, and enough for any SIMD load


@dataclass(frozen=True)
class Buffer:
    name: str
    shape: tuple
    dtype: str
    first: int          # first step that uses it
    last: int           # last step that uses it (inclusive)
    kind: str           # weights | optimizer | activations | gradients | data | head
    layer: int | None = None

    @property
    def nbytes(self):
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize   # Python ints: exact at any size

    def overlaps(self, other):
        return self.first <= other.last and other.first <= self.last


def _aligned(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class Plan:
    buffers: list
    offsets: dict       # name -> byte offset in the arena
    arena_bytes: int

    @property
    def naive_bytes(self):
        """What the buffers would take with no sharing at all."""
        return sum(_aligned(b.nbytes) for b in self.buffers)

    def largest(self, n=3):
        return sorted(self.buffers, key=lambda b: -b.nbytes)[:n]

    def by_kind(self):
        """{(layer, kind): bytes}, every buffer counted once."""
        out = {}
        for b in self.buffers:
            out[(b.layer, b.kind)] = out.get((b.layer, b.kind), 0) + b.nbytes
        return out


def plan_linear(buffers):
    """The reference planner: every buffer after the previous one, nothing shared."""
    offsets, end = {}, 0
    for b in buffers:
        offsets[b.name] = end
        end += _aligned(b.nbytes)
    return Plan(list(buffers), offsets, end)


def plan_greedy(buffers):
    """Greedy by size: largest buffer first, each at the lowest offset where it
    collides with no already placed buffer whose lifetime overlaps its own."""
    offsets, placed, end = {}, [], 0
    for b in sorted(buffers, key=lambda b: (-b.nbytes, b.first, b.name)):
        size = _aligned(b.nbytes)
        busy = sorted((offsets[p.name], offsets[p.name] + _aligned(p.nbytes)) for p in placed if p.overlaps(b))
        offset = 0
        for lo, hi in busy:
            if offset + size <= lo:
                break
            offset = max(offset, hi)
        offsets[b.name] = offset
        placed.append(b)
        end = max(end, offset + size)
    return Plan(list(buffers), offsets, end)


class Arena:
    """One allocation; named, typed views at the plan's offsets."""

    def __init__(self, plan):
        self.plan = plan
        try:
            raw = np.zeros(plan.arena_bytes + ALIGN, np.uint8)
        except (MemoryError, ValueError):    # ValueError: more bytes than an array can index
            raise UsageError(f"cannot allocate the {fmt_bytes(plan.arena_bytes)} training arena on this machine; "
                             "use a smaller --batch-size or --model") from None
        start = (-raw.ctypes.data) % ALIGN
        self.bytes = raw[start:start + plan.arena_bytes]
        self._by_name = {b.name: b for b in plan.buffers}

    def view(self, name):
        b = self._by_name[name]
        offset = self.plan.offsets[name]
        return self.bytes[offset:offset + b.nbytes].view(b.dtype).reshape(b.shape)


def training_buffers(widths, in_width, num_classes, batch_size, schedule, hard_negatives, head, optimizer):
    """Every buffer of a training run, with lifetimes on one timeline.

    widths: hidden layer widths; in_width: first layer's input width (with label inputs)."""
    n_layers = len(widths)
    rows, b = 2 * batch_size, batch_size
    steps = 1 + 2 * n_layers                     # per batch, see the module docstring
    phases = [list(range(n_layers))] if schedule == "simultaneous" else [[k] for k in range(n_layers)]
    n_phases = len(phases) + (1 if head else 0)
    end = n_phases * steps - 1
    f32, buffers = "float32", []
    add = lambda *a, **kw: buffers.append(Buffer(*a, **kw))
    d_in = [in_width] + list(widths[:-1])
    state = 2 if optimizer == "adam" else 1
    for k, w in enumerate(widths):               # parameters live from start to end
        add(f"w{k}", (d_in[k], w), f32, 0, end, "weights", k)
        add(f"b{k}", (w,), f32, 0, end, "weights", k)
    for p, layers in enumerate(phases):
        t0 = p * steps
        last_layer = layers[-1]
        for k in layers:                          # optimiser state lives while its layer trains
            for s in range(state):
                add(f"p{p}/opt{s}_w{k}", (d_in[k], widths[k]), f32, t0, t0 + steps - 1, "optimizer", k)
                add(f"p{p}/opt{s}_b{k}", (widths[k],), f32, t0, t0 + steps - 1, "optimizer", k)
            add(f"p{p}/gw{k}", (d_in[k], widths[k]), f32, t0 + 2 + 2 * k, t0 + 2 + 2 * k, "gradients", k)
            add(f"p{p}/gb{k}", (widths[k],), f32, t0 + 2 + 2 * k, t0 + 2 + 2 * k, "gradients", k)
        add(f"p{p}/idx", (b,), "int64", t0, t0, "data")
        add(f"p{p}/labels", (rows,), "int64", t0, t0 + 2, "data")
        # the first layer sees each data row once (kernels/overlay.py): x0 with its label
        # inputs zeroed, 1/norm, x0 @ w0, and the label rows of w0 (and their gradient)
        add(f"p{p}/x0", (b, in_width), f32, t0, t0 + 2, "data")
        add(f"p{p}/inv", (b,), f32, t0, t0 + 2, "activations", 0)
        add(f"p{p}/u0", (b, widths[0]), f32, t0, t0 + 1, "activations", 0)
        add(f"p{p}/wl", (num_classes, widths[0]), f32, t0, t0 + 1, "activations", 0)
        if 0 in layers:
            add(f"p{p}/gwl", (num_classes, widths[0]), f32, t0 + 2, t0 + 2, "gradients", 0)
        if hard_negatives:
            add(f"p{p}/hn_scores", (b, num_classes), f32, t0, t0, "activations", 0)
        for k in range(last_layer + 1):           # frozen layers below still run forward
            add(f"p{p}/z{k}", (rows, widths[k]), f32, t0 + 1 + 2 * k, t0 + 2 + 2 * k, "activations", k)
            add(f"p{p}/h{k}", (rows, widths[k]), f32, t0 + 1 + 2 * k, t0 + min(4 + 2 * k, steps - 1), "activations", k)
        add(f"p{p}/good", (rows,), f32, t0 + 1, t0 + steps - 1, "activations")
        add(f"p{p}/loss", (rows,), f32, t0 + 1, t0 + steps - 1, "activations")
    if head:
        t0 = len(phases) * steps
        feat = sum(widths)
        add("head_w", (feat, num_classes), f32, t0, end, "head")
        add("head_b", (num_classes,), f32, t0, end, "head")
        for s in range(2):                        # the head always uses Adam
            add(f"h/opt{s}_w", (feat, num_classes), f32, t0, end, "head")
            add(f"h/opt{s}_b", (num_classes,), f32, t0, end, "head")
        add("h/gw", (feat, num_classes), f32, t0, end, "head")
        add("h/gb", (num_classes,), f32, t0, end, "head")
        add("h/idx", (b,), "int64", t0, end, "data")
        add("h/y", (b,), "int64", t0, end, "data")
        add("h/labels", (b,), "int64", t0, end, "data")
        add("h/xin", (b, in_width), f32, t0, end, "data")
        for k, w in enumerate(widths):
            add(f"h/z{k}", (b, w), f32, t0, end, "activations", k)
            add(f"h/h{k}", (b, w), f32, t0, end, "activations", k)
        add("h/good", (b,), f32, t0, end, "activations")
        add("h/loss", (b,), f32, t0, end, "activations")
        add("h/feats", (b, feat), f32, t0, end, "head")
        add("h/logits", (b, num_classes), f32, t0, end, "head")
    return buffers


def backprop_activation_bytes(widths, in_width, batch_size):
    """Activations a backprop-trained net of the same shape keeps for its backward pass:
    every layer's input and pre-activation, for the whole net at once (one pass, B rows)."""
    sizes = [in_width] + list(widths)
    return 4 * batch_size * (sizes[0] + 2 * sum(sizes[1:]))


def parse_bytes(text):
    """'48MiB' -> 50331648. Units: B, KB/MB/GB (powers of 1000), KiB/MiB/GiB (powers of 1024)."""
    units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
    s = str(text).strip().lower().replace(" ", "")
    num = s.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = s[len(num):]
    try:
        value = float(num)
    except ValueError:
        value = -1
    if unit not in units or value <= 0:
        raise UsageError(f"bad memory size {text!r}: use a number with B, KiB, MiB, GiB, KB, MB or GB, like 48MiB")
    return int(value * units[unit])


def fmt_bytes(n):
    for unit, size in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def peak_live_bytes(buffers, kinds):
    """The most bytes of the given kinds live at any one step."""
    chosen = [b for b in buffers if b.kind in kinds]
    steps = {b.first for b in chosen}
    return max((sum(b.nbytes for b in chosen if b.first <= t <= b.last) for t in steps), default=0)
