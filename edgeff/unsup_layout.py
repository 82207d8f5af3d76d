"""The buffers of an unsupervised FF run (--algo ff-unsup), on the timeline of layers/net.py.

An FF phase stages 2B rows per batch, B real images then B hybrid images (kernels/hybrid.py),
length-normalised: no label inputs. Its steps are those of a supervised phase (step 0 the
staging, then each layer's forward and update step), and its layers declare the same buffers
(layers/dense.py). The last phase trains the softmax probe on the normalised activities of
the last three hidden layers (all of them when there are fewer) for real images, each
feature centred and scaled by the probe's mean and scale (edgeff/unsup_train.py); every
buffer of it lives throughout, like the linear head's (layers/head.py). The encoder alone
(FFEncoder, or --head-epochs 0) has no probe phase, and none of its buffers is planned.
"""

from dataclasses import dataclass

from .layers import dense
from .layers.net import FFPhase, Layout, WholePhase
from .memory import Buffer

F32 = "float32"
PROBE_LAYERS = 3


def probe_layers(n_layers):
    """The hidden layers the probe reads: the last three, or all when fewer."""
    return list(range(max(0, n_layers - PROBE_LAYERS), n_layers))


@dataclass(frozen=True)
class UnsupPhase:
    layers: list         # the layers trained in this phase
    idx: Buffer          # the batch's data rows
    partner_u: Buffer    # (B,) uniforms choosing each hybrid's second image
    masks: Buffer        # (B, H*W) uniforms, made into the hybrids' masks in place
    x: Buffer            # (2B, D) the staged rows: real, then hybrid
    training: dict       # layer -> dense.Training
    acts: list           # per layer up to the last trained: dense.Activations
    good: Buffer
    loss: Buffer

    def buffers(self):
        out = [buf for k in self.layers for buf in self.training[k].buffers()]
        out += [self.idx, self.partner_u, self.masks, self.x] + [buf for a in self.acts for buf in a.buffers()]
        return out + [self.good, self.loss]


@dataclass(frozen=True)
class Probe:
    w: Buffer            # (sum of the probed widths, C)
    b: Buffer
    training: dense.Training
    idx: Buffer
    y: Buffer
    x: Buffer            # (B, D) the staged real rows
    acts: list           # dense.Activations of every layer
    good: Buffer
    loss: Buffer
    feats: Buffer        # (B, sum of the probed widths)
    logits: Buffer
    mean: Buffer         # (sum of the probed widths,) each feature's mean over the training images
    scale: Buffer        # (sum of the probed widths,) what the probe multiplies each centred feature by

    def buffers(self):
        out = [self.w, self.b] + self.training.buffers() + [self.idx, self.y, self.x]
        return out + [buf for a in self.acts for buf in a.buffers()] + [self.good, self.loss, self.feats, self.logits,
                                                                         self.mean, self.scale]

    def checkpoint_arrays(self):
        return dict(self.training.checkpoint_arrays(), head_w=self.w, head_b=self.b)


def layer_frame(widths, in_width, schedule, optimizer, probe):
    """What the layouts of unsupervised runs (this one, edgeff/uff_layout.py) share: steps per
    phase, the groups of layers trained together, the last step (with the probe's phase after
    the layers' when `probe`), each layer's input width, optimiser slots and the layers' params."""
    n_layers = len(widths)
    steps = 1 + 2 * n_layers
    groups = [list(range(n_layers))] if schedule == "simultaneous" else [[k] for k in range(n_layers)]
    end = (len(groups) + probe) * steps - 1
    d_in = [in_width] + list(widths[:-1])
    params = [dense.params(k, d_in[k], widths[k], 0, end) for k in range(n_layers)]
    return steps, groups, end, d_in, 2 if optimizer == "adam" else 1, params


def unsup_layout(widths, in_width, pixels, num_classes, batch_size, schedule, optimizer, probe=True):
    """Every buffer of an ff-unsup run: layers of these widths on rows of in_width features
    (images of `pixels` pixels), then the probe unless `probe` is False; a layers/net.Layout."""
    rows, b = 2 * batch_size, batch_size
    steps, groups, end, d_in, slots, params = layer_frame(widths, in_width, schedule, optimizer, probe)
    phases = []
    for p, layers in enumerate(groups):
        ph, pre = FFPhase(p * steps, steps), f"p{p}/"
        data = lambda name, shape, last, dtype=F32: Buffer(f"{pre}{name}", shape, dtype, ph.first, last, "data")
        phases.append(UnsupPhase(
            layers, data("idx", (b,), ph.first, "int64"), data("partner_u", (b,), ph.first),
            data("masks", (b, pixels), ph.first), data("x", (rows, in_width), ph.update(0)),
            {k: dense.training(pre, k, d_in[k], widths[k], slots, ph) for k in layers},
            [dense.activations(pre, k, rows, widths[k], ph) for k in range(layers[-1] + 1)],
            Buffer(f"{pre}good", (rows,), F32, ph.forward(0), ph.last, "activations"),
            Buffer(f"{pre}loss", (rows,), F32, ph.forward(0), ph.last, "activations")))
    top = declare_probe(widths, in_width, num_classes, b, WholePhase(len(groups) * steps, end)) if probe else None
    buffers = [buf for prm in params for buf in prm.buffers()] + [buf for ph in phases for buf in ph.buffers()]
    return Layout(params, phases, top, buffers + (top.buffers() if top else []))


def declare_probe(widths, in_width, num_classes, batch, phase):
    """The probe's buffers, every one live through `phase` (its own, the last)."""
    def buf(name, shape, kind, dtype=F32):
        return Buffer(name, shape, dtype, phase.first, phase.last, kind)
    feat = sum(widths[k] for k in probe_layers(len(widths)))
    opt = tuple((buf(f"h/opt{s}_w", (feat, num_classes), "head"), buf(f"h/opt{s}_b", (num_classes,), "head"))
                for s in range(2))
    training = dense.Training("head", opt, buf("h/gw", (feat, num_classes), "head"),
                              buf("h/gb", (num_classes,), "head"))
    return Probe(buf("head_w", (feat, num_classes), "head"), buf("head_b", (num_classes,), "head"), training,
                 buf("h/idx", (batch,), "data", "int64"), buf("h/y", (batch,), "data", "int64"),
                 buf("h/x", (batch, in_width), "data"),
                 [dense.activations("h/", k, batch, w, phase) for k, w in enumerate(widths)],
                 buf("h/good", (batch,), "activations"), buf("h/loss", (batch,), "activations"),
                 buf("h/feats", (batch, feat), "head"), buf("h/logits", (batch, num_classes), "head"),
                 buf("h/mean", (feat,), "head"), buf("h/scale", (feat,), "head"))
