"""The linear softmax head trained on the FF layers' normalised activities (neutral label in):
its buffers, declared once. It trains in a phase of its own, where every buffer is live
throughout; it always uses Adam."""

from dataclasses import dataclass

from ..memory import Buffer
from . import dense

F32 = "float32"


@dataclass(frozen=True)
class Head:
    w: Buffer            # (sum of hidden widths, C)
    b: Buffer
    training: dense.Training
    idx: Buffer          # the batch's data rows
    y: Buffer            # their labels
    labels: Buffer       # the label shown to the net: neutral
    xin: Buffer          # the staged input rows
    acts: list           # dense.Activations of each FF layer
    good: Buffer
    loss: Buffer
    feats: Buffer        # the activities the head reads
    logits: Buffer

    def buffers(self):
        out = [self.w, self.b] + self.training.buffers() + [self.idx, self.y, self.labels, self.xin]
        return out + [buf for a in self.acts for buf in a.buffers()] + [self.good, self.loss, self.feats, self.logits]

    def checkpoint_arrays(self):
        return dict(self.training.checkpoint_arrays(), head_w=self.w, head_b=self.b)


def declare(widths, in_width, num_classes, batch, phase):
    def buf(name, shape, kind, dtype=F32, layer=None):
        return Buffer(name, shape, dtype, phase.first, phase.last, kind, layer)
    feat = sum(widths)
    opt = tuple((buf(f"h/opt{s}_w", (feat, num_classes), "head"), buf(f"h/opt{s}_b", (num_classes,), "head"))
                for s in range(2))
    training = dense.Training("head", opt, buf("h/gw", (feat, num_classes), "head"), buf("h/gb", (num_classes,), "head"))
    return Head(buf("head_w", (feat, num_classes), "head"), buf("head_b", (num_classes,), "head"), training,
                buf("h/idx", (batch,), "data", "int64"), buf("h/y", (batch,), "data", "int64"),
                buf("h/labels", (batch,), "data", "int64"), buf("h/xin", (batch, in_width), "data"),
                [dense.activations("h/", k, batch, w, phase) for k, w in enumerate(widths)],
                buf("h/good", (batch,), "activations"), buf("h/loss", (batch,), "activations"),
                buf("h/feats", (batch, feat), "head"), buf("h/logits", (batch, num_classes), "head"))
