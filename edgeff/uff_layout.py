"""The buffers of a UFF run (--algo uff, edgeff/uff_train.py), on the timeline of layers/net.py.

A phase stages its rows at step 0: B length-normalised data rows (ae, dae), or two views
of each (contrastive: 2B rows, view 1 then view 2). Layer k's steps are those of a
supervised phase (forward, then update). A layer that learns in the phase has, besides
its optimiser state and gradients (layers/dense.py), a training-only linear decoder (ae,
dae) or projection head (contrastive) with its own optimiser state, and the scratch of its
loss; they live only while that phase runs and are never exported. The probe's phase is
ff-unsup's (edgeff/unsup_layout.py).
"""

from dataclasses import dataclass, fields, replace

from .layers import dense
from .layers.net import FFPhase, Layout, WholePhase
from .memory import Buffer
from .unsup_layout import declare_probe, layer_frame

F32 = "float32"
PROJECTION = 128     # contrastive: the projection head's width


@dataclass(frozen=True)
class Learner:
    """Layer k while it learns. Scratch (None where the learner has no use for it):
    noise  dae: (B, D_in) uniforms of its input's masking noise
    inp    dae: (B, D_in) the corrupted input
    out    ae, dae: (B, D_in) the reconstruction, then dL/dr; contrastive: (2B, P) the projection p
    unit   contrastive: (2B, P) u = p / |p|
    dunit  contrastive: (2B, P) dL/du, then dL/dp
    sim    contrastive: (2B * 2B,) the cosines u u^T, then dL/dsim
    dc     (rows, width) dL/dcode, then dL/dz"""
    training: dense.Training        # the layer's optimiser state and gradients
    aux: dense.Params               # decoder (width, D_in) or projection head (width, P)
    aux_training: dense.Training
    noise: Buffer | None
    inp: Buffer | None
    out: Buffer
    unit: Buffer | None
    dunit: Buffer | None
    sim: Buffer | None
    dc: Buffer

    def scratch(self):
        """{field name: buffer} of the scratch buffers this learner has."""
        return {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), Buffer)}

    def buffers(self):
        parts = self.training.buffers() + self.aux.buffers() + self.aux_training.buffers()
        return parts + list(self.scratch().values())

    def checkpoint_arrays(self):
        return dict(self.training.checkpoint_arrays(), **self.aux.checkpoint_arrays(),
                    **self.aux_training.checkpoint_arrays())


@dataclass(frozen=True)
class UffPhase:
    layers: list         # the layers learning in this phase
    idx: Buffer          # (B,), contrastive (2B,): the batch's data rows (twice: once per view)
    shift_u: Buffer | None   # contrastive: (4B,) float64 uniforms of the views' shifts
    noise: Buffer | None     # contrastive: (2B, D) uniforms of the views' masking noise
    x: Buffer            # (rows, D) the staged rows
    training: dict       # layer -> Learner
    acts: list           # per layer up to the last learning: dense.Activations (z holds the code)
    good: Buffer
    loss: Buffer

    def buffers(self):
        out = [buf for k in self.layers for buf in self.training[k].buffers()]
        out += [b for b in (self.idx, self.shift_u, self.noise, self.x) if b is not None]
        return out + [buf for a in self.acts for buf in a.buffers()] + [self.good, self.loss]


def _learner(pre, k, learner, b, d_in, width, slots, ph):
    live = lambda name, shape, dtype=F32: Buffer(f"{pre}{name}{k}", shape, dtype, ph.forward(k), ph.update(k),
                                                 "activations", k)
    contrastive = learner == "contrastive"
    rows, out = (2 * b, PROJECTION) if contrastive else (b, d_in)
    aux = dense.Params(Buffer(f"aux_w{k}", (width, out), F32, ph.first, ph.last, "weights", k),
                       Buffer(f"aux_b{k}", (out,), F32, ph.first, ph.last, "weights", k))
    aux_training = replace(dense.training(f"{pre}aux_", k, width, out, slots, ph), key=f"aux{k}")
    dae = learner == "dae"
    return Learner(dense.training(pre, k, d_in, width, slots, ph), aux, aux_training,
                   live("noise", (b, d_in)) if dae else None, live("inp", (b, d_in)) if dae else None,
                   live("out", (rows, out)), live("unit", (rows, out)) if contrastive else None,
                   live("dunit", (rows, out)) if contrastive else None,
                   live("sim", (rows * rows,)) if contrastive else None, live("dc", (rows, width)))


def uff_layout(widths, in_width, num_classes, batch_size, schedule, optimizer, learner):
    """Every buffer of a UFF run: layers of these widths on rows of in_width features, each
    learning as `learner` (config.LEARNERS), then the probe; a layers/net.Layout."""
    b = batch_size
    rows = 2 * b if learner == "contrastive" else b
    steps, groups, end, d_in, slots, params = layer_frame(widths, in_width, schedule, optimizer, True)
    phases = []
    for p, layers in enumerate(groups):
        ph, pre = FFPhase(p * steps, steps), f"p{p}/"
        data = lambda name, shape, last, dtype=F32: Buffer(f"{pre}{name}", shape, dtype, ph.first, last, "data")
        views = learner == "contrastive"
        phases.append(UffPhase(
            layers, data("idx", (rows,), ph.first, "int64"),
            data("shift_u", (2 * rows,), ph.first, "float64") if views else None,
            data("noise", (rows, in_width), ph.first) if views else None,
            data("x", (rows, in_width), ph.update(0)),
            {k: _learner(pre, k, learner, b, d_in[k], widths[k], slots, ph) for k in layers},
            [dense.activations(pre, k, rows, widths[k], ph) for k in range(layers[-1] + 1)],
            Buffer(f"{pre}good", (rows,), F32, ph.forward(0), ph.last, "activations"),
            Buffer(f"{pre}loss", (rows,), F32, ph.forward(0), ph.last, "activations")))
    probe = declare_probe(widths, in_width, num_classes, b, WholePhase(len(groups) * steps, end))
    buffers = [buf for prm in params for buf in prm.buffers()] + [buf for ph in phases for buf in ph.buffers()]
    return Layout(params, phases, probe, buffers + probe.buffers())
