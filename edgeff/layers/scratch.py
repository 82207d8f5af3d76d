"""A block-net layer's scratch, in two parts the planner counts apart: activations the layer
keeps inside itself (a residual body's inner outputs, a squeeze-excite's per-channel vectors)
and kernel workspace (the conv GEMM's columns: no activation, whatever the training method).
A kind's scratch_size returns a Scratch of float32 counts; forward and backward get a Scratch
of float32 arrays at least that long (None for a part of 0)."""

from typing import NamedTuple

import numpy as np


class Scratch(NamedTuple):
    activations: object
    workspace: object

    def most(self, other):
        """Each part the larger of the two (float32 counts): one scratch shared by two layers."""
        return Scratch(max(self.activations, other.activations), max(self.workspace, other.workspace))

    def allocate(self):
        """Arrays of these float32 counts (None for 0)."""
        return Scratch(*(np.empty(n, np.float32) if n else None for n in self))


NONE = Scratch(0, 0)
