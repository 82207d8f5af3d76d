"""A block net's training run laid out on the planner's timeline (conv FF, edgeff/sff_train.py).

A net is a sequence of blocks; a block a sequence of layers of the kinds in BLOCK_KINDS
(layers/__init__.py), followed by its class head: a 1x1 conv with one output channel per
class, whose class goodness scores every class in one pass (kernels/sff.py). Every block
trains on every batch, in order; within a batch:
    step 0            stage the batch (gather the images channels first, shifted)
    step 1 + 2k       block k forward: its layers, its head, the loss and dLoss/dhead
    step 2 + 2k       block k update: backprop inside the block, the optimiser step
Block k's output, layer-normalised, is block k+1's input; no gradient crosses it. A
layer's output and gradient live through its block's two steps, the normalised output
until the next block's update has read it: the plan keeps one block's activations.
A block's scratch (the largest any of its layers asks for, layers/scratch.py) lives
through its two steps too, as two buffers: "k.scratch" of kind activations (a layer made
of layers, layers/residual.py, keeps its inner activations there) and "k.workspace" of
kind workspace (the conv kernels' columns), so that activations count only activations.
With feedback (--algo ffcl --feedback-steps K, layers/feedback.py) the settling steps run
every block again before its forward step, so the staged batch and every block's normalised
output live through the whole batch, and block k (all but the last) adds its feedback: F_k
"k.fb.w" (with its gradient and optimiser state) and the room of its product "k.fb.t".
"""

from dataclasses import dataclass
from typing import NamedTuple

from ..memory import Buffer
from . import BLOCK_KINDS, feedback
from .scratch import NONE, Scratch

F32 = "float32"


@dataclass(frozen=True)
class LayerBuffers:
    name: str            # "k.j" (block k, layer j) or "k.head": its parameters' prefix in a checkpoint
    spec: dict
    in_shape: tuple      # (C, H, W) per sample
    out_shape: tuple
    params: dict         # parameter name -> Buffer (whole run)
    grads: dict          # parameter name -> Buffer (the block's update step)
    opt: tuple           # per optimiser slot: {parameter name: Buffer}
    y: Buffer            # output (N, *out_shape); an in-place kind's is its input's
    dy: Buffer | None    # its gradient, likewise; None in a frozen block (no backward)

    @property
    def kind(self):
        return BLOCK_KINDS[self.spec["kind"]]

    def buffers(self):
        return list(self.params.values()) + list(self.grads.values()) + [b for s in self.opt for b in s.values()]


@dataclass(frozen=True)
class FeedbackBuffers:
    link: feedback.Link
    w: Buffer            # F_k (C_k, C_{k+1}, 1, 1), whole run
    grad: Buffer         # the block's update step
    opt: tuple           # per optimiser slot
    product: Buffer      # (N, C_k, H_{k+1}, W_{k+1}) the 1x1 conv's output, then the summed dz

    def buffers(self):
        return [self.w, self.grad, *self.opt, self.product]


@dataclass(frozen=True)
class BlockBuffers:
    layers: list         # LayerBuffers, the head last
    good: Buffer         # (N, C) class goodness
    loss: Buffer         # (N,)
    out: Buffer          # (N, *out_shape) the layer-normalised output: the next block's input
    scratch: Scratch     # of Buffers (activations, workspace), None for a part of 0
    feedback: FeedbackBuffers | None = None    # from block k + 1 to this block's pre-activation

    def buffers(self):
        own = [b for lay in self.layers for b in lay.buffers()]
        acts = {b.name: b for lay in self.layers for b in (lay.y, lay.dy) if b}   # in-place kinds share them
        fb = self.feedback.buffers() if self.feedback else []
        return own + list(acts.values()) + [self.good, self.loss, self.out] + [b for b in self.scratch if b] + fb


@dataclass(frozen=True)
class Phase:
    layers: list         # the blocks trained in it: all
    training: dict       # block -> BlockBuffers


@dataclass(frozen=True)
class BlockLayout:
    in_shape: tuple
    x: Buffer            # (N, C, H, W) the staged batch, block 0's input
    shift_u: Buffer      # (2N,) float64 uniforms for the random shifts
    idx: Buffer
    y: Buffer
    blocks: list         # BlockBuffers
    phases: list         # one Phase
    buffers: list
    head = None          # no linear head: the blocks' class goodness votes

    def checkpoint_arrays(self, p):
        """{name in a checkpoint: buffer}: every parameter and its optimiser state."""
        out = {}
        for block in self.blocks:
            for lay in block.layers:
                out.update({f"{lay.name}.{n}": b for n, b in lay.params.items()})
                out.update({f"opt{s}_{lay.name}.{n}": b for s, slot in enumerate(lay.opt) for n, b in slot.items()})
            if block.feedback:
                fb = block.feedback
                out[fb.w.name] = fb.w
                out.update({f"opt{s}_{fb.w.name}": b for s, b in enumerate(fb.opt)})
        return out


def head_spec(num_classes):
    return {"kind": "conv2d", "out": num_classes, "k": 1, "stride": 1, "pad": 0, "groups": 1}


class Placed(NamedTuple):
    block: int
    name: str            # "k.j" (block k, layer j) or "k.head": its parameters' prefix in a model file
    spec: dict
    in_shape: tuple      # (C, H, W) per sample
    out_shape: tuple
    head: bool


def block_layers(in_shape, blocks, num_classes):
    """Every layer of a block net in order, each block's class head after its layers, as Placed;
    a layer that does not fit its input is a ValueError naming it. Specs must be checked first."""
    shape = tuple(in_shape)
    for k, specs in enumerate(blocks):
        for j, spec in enumerate([*specs, head_spec(num_classes)]):
            head = j == len(specs)
            name = f"{k}.head" if head else f"{k}.{j}"
            try:
                out = BLOCK_KINDS[spec["kind"]].out_shape(spec, shape)
            except ValueError as exc:
                raise ValueError(f"layer {name}: {exc}") from None
            yield Placed(k, name, spec, shape, out, head)
            if not head:
                shape = out


def block_layout(in_shape, blocks, num_classes, batch_size, optimizer, frozen=0, feedback_steps=0):
    """Every buffer of training `blocks` (lists of layer specs) on (C, H, W) images, with lifetimes.
    The first `frozen` blocks train their heads only: their other layers get no gradient or
    optimiser buffers (empty dicts, dy None). feedback_steps > 0: with feedback (module docstring;
    a ValueError when the blocks do not allow it)."""
    n, slots = batch_size, 2 if optimizer == "adam" else 1
    end = 2 * len(blocks)
    placed = list(block_layers(in_shape, blocks, num_classes))
    links = feedback.links(placed, len(blocks)) if feedback_steps else []
    x = Buffer("x", (n, *in_shape), F32, 0, end if links else 2, "data")
    out, layers, scratch = [], [], NONE
    y, dy = x, None              # the input of the next layer, and where its gradient goes
    for lay in placed:
        k, name, spec, shape, o_shape = lay.block, lay.name, lay.spec, lay.in_shape, lay.out_shape
        kind = BLOCK_KINDS[spec["kind"]]
        t_fwd, t_upd = 1 + 2 * k, 2 + 2 * k
        pshapes = kind.param_shapes(spec, shape)
        buf = lambda label, s, first, last, what: Buffer(label, s, F32, first, last, what, k)
        params = {p: buf(f"{name}.{p}", s, 0, end, "weights") for p, s in pshapes.items()}
        trains = lay.head or k >= frozen
        trained = pshapes if trains else {}
        grads = {p: buf(f"g{name}.{p}", s, t_upd, t_upd, "gradients") for p, s in trained.items()}
        opt = tuple({p: buf(f"opt{i}_{name}.{p}", s, 0, end, "optimizer") for p, s in trained.items()}
                    for i in range(slots))
        if lay.head:               # the loss gradient overwrites the head's output in place
            y_buf = buf(f"{name}.y", (n, *o_shape), t_fwd, t_upd, "activations")
            dy_buf = y_buf
        elif kind.IN_PLACE and layers:
            y_buf, dy_buf = y, dy
        else:
            y_buf = buf(f"{name}.y", (n, *o_shape), t_fwd, t_upd, "activations")
            dy_buf = buf(f"{name}.dy", (n, *o_shape), t_upd, t_upd, "gradients") if trains else None
        layers.append(LayerBuffers(name, dict(spec), shape, o_shape, params, grads, opt, y_buf, dy_buf))
        scratch = scratch.most(kind.scratch_size(spec, shape, n))
        if not lay.head:
            y, dy = y_buf, dy_buf
            continue
        act = lambda label, s, last, what="activations": Buffer(f"{k}.{label}", s, F32, t_fwd, last, what, k)
        y, dy = Buffer(f"{k}.out", (n, *shape), F32, 0 if links else t_fwd, end if links else min(t_upd + 2, end),
                       "activations", k), None
        fb = None
        if k < len(links):
            link = links[k]
            fb = FeedbackBuffers(link, buf(f"{link.name}.w", link.weight_shape, 0, end, "weights"),
                                 buf(f"g{link.name}.w", link.weight_shape, t_upd, t_upd, "gradients"),
                                 tuple(buf(f"opt{i}_{link.name}.w", link.weight_shape, 0, end, "optimizer")
                                       for i in range(slots)),
                                 buf(f"{link.name}.t", (n, *link.product_shape), t_fwd, t_upd, "activations"))
            scratch = scratch.most(link.scratch_size(n))
        out.append(BlockBuffers(layers, act("good", (n, num_classes), t_upd), act("loss", (n,), t_upd), y,
                                Scratch(act("scratch", (scratch.activations,), t_upd) if scratch.activations else None,
                                        act("workspace", (scratch.workspace,), t_upd, "workspace")
                                        if scratch.workspace else None), fb))
        layers, scratch = [], NONE
    idx = Buffer("idx", (n,), "int64", 0, 0, "data")
    labels = Buffer("labels", (n,), "int64", 0, end, "data")
    shift_u = Buffer("shift_u", (2 * n,), "float64", 0, 0, "data")
    buffers = [x, shift_u, idx, labels] + [b for blk in out for b in blk.buffers()]
    return BlockLayout(tuple(in_shape), x, shift_u, idx, labels, out,
                       [Phase(list(range(len(blocks))), {k: blk for k, blk in enumerate(out)})], buffers)
