"""The dense FF layer kind: every buffer it needs, declared once, with its lifetime.

A declaration is a memory.Buffer; the planner places it, the trainer views it through
the same object (Arena.view), a checkpoint names it through checkpoint_arrays(). Lifetimes
are steps of a phase (see layers/net.py): the layer's forward step and its update step.
"""

from dataclasses import dataclass

from ..memory import Buffer

F32 = "float32"


@dataclass(frozen=True)
class Params:
    """Layer k's weights (d_in, width) and bias (width,), live for the whole run."""
    w: Buffer
    b: Buffer

    def buffers(self):
        return [self.w, self.b]

    def checkpoint_arrays(self):
        return {self.w.name: self.w, self.b.name: self.b}


@dataclass(frozen=True)
class Training:
    """What layer k needs only while it trains: optimiser state (one (w, b) pair per slot:
    Adam's two moments or SGD's momentum) and the gradients, made in its update step."""
    key: object          # k, or "head": the name its state has in a checkpoint
    opt: tuple           # ((w state, b state), ...)
    gw: Buffer
    gb: Buffer

    def buffers(self):
        return [buf for pair in self.opt for buf in pair] + [self.gw, self.gb]

    def checkpoint_arrays(self):
        return {f"opt{s}_{p}{self.key}": buf for s, pair in enumerate(self.opt) for p, buf in zip("wb", pair)}


@dataclass(frozen=True)
class Activations:
    """Layer k's pre-activation z (its loss gradient in place after the forward step) and its
    normalised activity h (the next layer's input)."""
    z: Buffer
    h: Buffer

    def buffers(self):
        return [self.z, self.h]


@dataclass(frozen=True)
class Overlay:
    """The first layer sees each data row once (kernels/overlay.py): x0 with its label inputs
    zeroed, inv = 1/norm of an overlaid row, u0 = x0 @ w0, wl = the label rows of w0, and,
    while layer 0 trains, their gradient gwl; with hard negatives every label's goodness."""
    x0: Buffer
    inv: Buffer
    u0: Buffer
    wl: Buffer
    gwl: Buffer | None
    label_scores: Buffer | None

    def buffers(self):
        return [b for b in (self.x0, self.inv, self.u0, self.wl, self.gwl, self.label_scores) if b is not None]


@dataclass(frozen=True)
class FirstLayerCache:
    """Layerwise training from phase 2 on, when the budget has room: layer 1 is frozen, so its
    shared product u0 = x0 @ w0 and inv of every training row are made once and each batch takes
    its rows from here instead of gathering and multiplying again (any negatives: the labels
    enter only after the product). At float16, u0 takes half the bytes, and a batch's rows are
    taken into `rows` as stored, then widened to float32 (exactly)."""
    u0: Buffer
    inv: Buffer
    rows: Buffer | None = None

    def buffers(self):
        return [b for b in (self.u0, self.inv, self.rows) if b is not None]


def first_layer_cache(rows, width, first, last, batch_size, dtype=F32):
    """u0 (float32 or float16) and inv of `rows` training rows, live from step `first` to step `last`."""
    return FirstLayerCache(Buffer("cache/u0", (rows, width), dtype, first, last, "data", 0),
                           Buffer("cache/inv", (rows,), F32, first, last, "data", 0),
                           None if dtype == F32 else Buffer("cache/rows", (batch_size, width), dtype, first, last,
                                                            "data", 0))


def params(k, d_in, width, first, last):
    return Params(Buffer(f"w{k}", (d_in, width), F32, first, last, "weights", k),
                  Buffer(f"b{k}", (width,), F32, first, last, "weights", k))


def training(prefix, k, d_in, width, state_slots, phase):
    """State lives through the phase; the gradients in layer k's update step only."""
    def buf(name, shape, first, last, kind):
        return Buffer(f"{prefix}{name}", shape, F32, first, last, kind, k)
    t = phase.update(k)
    opt = tuple((buf(f"opt{s}_w{k}", (d_in, width), phase.first, phase.last, "optimizer"),
                 buf(f"opt{s}_b{k}", (width,), phase.first, phase.last, "optimizer")) for s in range(state_slots))
    return Training(k, opt, buf(f"gw{k}", (d_in, width), t, t, "gradients"), buf(f"gb{k}", (width,), t, t, "gradients"))


def activations(prefix, k, rows, width, phase):
    """z from layer k's forward step to its update; h until the next layer's update has read it."""
    return Activations(Buffer(f"{prefix}z{k}", (rows, width), F32, phase.forward(k), phase.update(k), "activations", k),
                       Buffer(f"{prefix}h{k}", (rows, width), F32, phase.forward(k),
                              min(phase.update(k + 1), phase.last), "activations", k))


def overlay(prefix, batch, in_width, width, num_classes, phase, trains, hard_negatives):
    """Staged before layer 0's forward step, read until its update."""
    t0, t2 = phase.first, phase.update(0)
    act = lambda name, shape, first, last: Buffer(f"{prefix}{name}", shape, F32, first, last, "activations", 0)
    return Overlay(Buffer(f"{prefix}x0", (batch, in_width), F32, t0, t2, "data"),
                   act("inv", (batch,), t0, t2),
                   act("u0", (batch, width), t0, phase.forward(0)),
                   act("wl", (num_classes, width), t0, phase.forward(0)),
                   Buffer(f"{prefix}gwl", (num_classes, width), F32, t2, t2, "gradients", 0) if trains else None,
                   act("hn_scores", (batch, num_classes), t0, t0) if hard_negatives else None)
