"""A training run's buffers, gathered from its layer kinds onto one timeline.

The timeline runs through the phases of training (one per layer when layerwise, one for
all layers when simultaneous, then the linear head). Within an FF phase each batch runs
the same steps:
    step 0            stage the batch (gather, overlay labels, hard negatives)
    step 1 + 2k       layer k forward: z = x @ w, activities, goodness, loss
    step 2 + 2k       layer k update: gradient and optimiser step
In the head's phase every buffer is live throughout. The planner (edgeff/memory.py) sees
only layout.buffers; the trainer and checkpoints reach each buffer through the objects here.
"""

from dataclasses import dataclass, fields, replace

from ..memory import Buffer
from . import KINDS, head as head_kind


@dataclass(frozen=True)
class FFPhase:
    first: int
    steps: int

    @property
    def last(self):
        return self.first + self.steps - 1

    def forward(self, k):
        return self.first + 1 + 2 * k

    def update(self, k):
        return self.first + 2 + 2 * k


@dataclass(frozen=True)
class WholePhase:
    """A phase whose buffers all live from its first step to its last."""
    first: int
    last: int

    def forward(self, k):
        return self.first

    def update(self, k):
        return self.last


@dataclass(frozen=True)
class PhaseBuffers:
    layers: list         # the layers trained in this phase
    idx: Buffer          # the batch's data rows
    labels: Buffer       # true labels, then the negatives'
    overlay: object      # the first layer's input stage (dense.Overlay)
    training: dict       # layer -> its kind's Training
    acts: list          # per layer up to the last trained: its kind's Activations
    good: Buffer
    loss: Buffer
    grad_sum: list = ()  # in turn: (a few rows of a gradient, a bias gradient) to add the negatives' through

    def buffers(self):
        out = [buf for k in self.layers for buf in self.training[k].buffers()]
        out += [self.idx, self.labels] + self.overlay.buffers() + [buf for a in self.acts for buf in a.buffers()]
        return out + [self.good, self.loss] + list(self.grad_sum)


@dataclass(frozen=True)
class Layout:
    params: list         # per layer: its kind's Params
    phases: list         # PhaseBuffers of each FF phase
    head: head_kind.Head | None
    buffers: list        # every buffer, for the planner
    cache: object = None  # layerwise: the frozen first layer's product of every row (dense.FirstLayerCache)

    def checkpoint_arrays(self, p):
        """{name in a checkpoint: buffer} of what a checkpoint taken in phase p holds: every
        layer's parameters, and those of the layers in training with their optimiser state."""
        out = {}
        for params in self.params:
            out.update(params.checkpoint_arrays())
        in_phase = self.phases[p].training.values() if p < len(self.phases) else [self.head]
        for part in in_phase:
            out.update(part.checkpoint_arrays())
        return out


GRAD_SUM_ROWS = 64   # in turn: rows of a gradient added at a time


def training_layout(kinds, widths, in_width, num_classes, batch_size, schedule, hard_negatives, head, optimizer,
                    in_turn=False, cache_rows=0, cache_dtype="float32"):
    """Every buffer of a training run of layers of these kinds and widths, with lifetimes.

    in_width: the first layer's input width (with label inputs). in_turn: positives, then negatives,
    pass the layers (activations of B rows, not 2B; the negatives' gradients are added through grad_sum).
    cache_rows: layerwise with more than one layer, keep the frozen first layer's product of that
    many training rows from the second phase to the last FF phase (layers/dense.FirstLayerCache), as
    cache_dtype ("float32" or "float16")."""
    n_layers = len(widths)
    kinds = [KINDS[k] for k in kinds]
    rows, b = (batch_size if in_turn else 2 * batch_size), batch_size
    steps = 1 + 2 * n_layers
    groups = [list(range(n_layers))] if schedule == "simultaneous" else [[k] for k in range(n_layers)]
    end = (len(groups) + (1 if head else 0)) * steps - 1
    d_in = [in_width] + list(widths[:-1])
    slots = 2 if optimizer == "adam" else 1
    params = [kind.params(k, d_in[k], widths[k], 0, end) for k, kind in enumerate(kinds)]
    phases = []
    for p, layers in enumerate(groups):
        ph, pre = FFPhase(p * steps, steps), f"p{p}/"
        # in turn, the negatives pass after the positives: what both passes read, or what the first leaves
        # for the second (the staged batch, the gradients), lives through the phase
        kept = (lambda part: _through(part, ph)) if in_turn else (lambda part: part)
        phases.append(PhaseBuffers(
            layers,
            Buffer(f"{pre}idx", (b,), "int64", ph.first, ph.first, "data"),
            Buffer(f"{pre}labels", (2 * b,), "int64", ph.first, ph.last if in_turn else ph.update(0), "data"),
            kept(kinds[0].overlay(pre, b, in_width, widths[0], num_classes, ph, 0 in layers, hard_negatives)),
            {k: kept(kinds[k].training(pre, k, d_in[k], widths[k], slots, ph)) for k in layers},
            [kinds[k].activations(pre, k, rows, widths[k], ph) for k in range(layers[-1] + 1)],
            Buffer(f"{pre}good", (rows,), "float32", ph.forward(0), ph.last, "activations"),
            Buffer(f"{pre}loss", (rows,), "float32", ph.forward(0), ph.last, "activations"),
            [Buffer(f"{pre}sum_w", (GRAD_SUM_ROWS * max(widths[k] for k in layers),), "float32", ph.first, ph.last,
                    "gradients"),
             Buffer(f"{pre}sum_b", (max(widths[k] for k in layers),), "float32", ph.first, ph.last,
                    "gradients")] if in_turn else ()))
    top = head_kind.declare(widths, in_width, num_classes, b, WholePhase(len(groups) * steps, end)) if head else None
    buffers = [buf for prm in params for buf in prm.buffers()] + [buf for ph in phases for buf in ph.buffers()]
    buffers += top.buffers() if top else []
    cache = None
    if cache_rows and len(groups) > 1:
        cache = kinds[0].first_layer_cache(cache_rows, widths[0], phases[1].overlay.x0.first, len(groups) * steps - 1,
                                           b, cache_dtype)
        buffers += cache.buffers()
    return Layout(params, phases, top, buffers, cache)


def _through(part, phase):
    """A layer kind's declaration (Overlay, Training) with each of its buffers living through the phase."""
    def widen(v):
        if isinstance(v, Buffer):
            return replace(v, first=phase.first, last=phase.last)
        return tuple(widen(x) for x in v) if isinstance(v, tuple) else v
    return replace(part, **{f.name: widen(getattr(part, f.name)) for f in fields(part)})
