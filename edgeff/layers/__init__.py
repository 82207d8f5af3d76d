"""Layer kinds, each one module here plus one line below.

KINDS: the dense FF layers (label overlay family): each module declares its layer's
buffers (parameters, optimiser state, gradients, activations) with their lifetimes,
as objects the planner places and the trainer views (layers/net.py lays a run out).

BLOCK_KINDS: the layers conv nets' blocks are built from (layers/blocks.py lays a run
out). Each module holds, in one place: FIELDS (its spec's whole-number fields and
their ranges), IN_PLACE, out_shape, param_shapes, init, scratch_size, forward and
backward (on the arena's views, Numba kernels), reference (the NumPy twin) and
onnx_node (its ONNX converter).
"""

from . import conv2d, dense, maxpool, relu

KINDS = {
    "dense": dense,
}

BLOCK_KINDS = {
    "conv2d": conv2d,
    "relu": relu,
    "maxpool": maxpool,
}
