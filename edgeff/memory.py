"""Static memory plan for training, as TensorFlow Lite Micro plans its tensor arena.

Every buffer the training loop touches is declared with its shape, dtype and
lifetime: the first and last step that use it, on one timeline (edgeff/layers/net.py
lays a training run out on it from its layer kinds). The planner knows buffers,
sizes and lifetimes only. It gives each buffer an offset in one arena so that two
buffers share bytes only when their lifetimes do not overlap. The arena is
allocated once; the trainer works on views into it, one per declared buffer.
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
    kind: str           # weights | optimizer | activations | gradients | workspace | data | head
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
    """One allocation; a typed view at the plan's offset for each planned buffer."""

    def __init__(self, plan):
        self.plan = plan
        try:
            raw = np.zeros(plan.arena_bytes + ALIGN, np.uint8)
        except (MemoryError, ValueError):    # ValueError: more bytes than an array can index
            raise UsageError(f"cannot allocate the {fmt_bytes(plan.arena_bytes)} training arena on this machine; "
                             "use a smaller --batch-size or --model") from None
        start = (-raw.ctypes.data) % ALIGN
        self.bytes = raw[start:start + plan.arena_bytes]
        self._planned = {b.name: b for b in plan.buffers}

    def view(self, buffer):
        """The arena's view of `buffer`, a Buffer of the plan."""
        if self._planned.get(buffer.name) != buffer:
            raise ValueError(f"{buffer} is not a buffer of this plan")
        offset = self.plan.offsets[buffer.name]
        return self.bytes[offset:offset + buffer.nbytes].view(buffer.dtype).reshape(buffer.shape)


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
