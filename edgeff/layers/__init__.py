"""Layer kinds, each one module here plus one line below.

KINDS: the dense FF layers (label overlay family): each module declares its layer's
buffers (parameters, optimiser state, gradients, activations) with their lifetimes,
as objects the planner places and the trainer views (layers/net.py lays a run out).

BLOCK_KINDS: the layers conv nets' blocks are built from (layers/blocks.py lays a run
out). Each module holds, in one place: FIELDS (its spec's whole-number fields and
their ranges), IN_PLACE, out_shape, param_shapes, init, scratch_size (activations and
kernel workspace, layers/scratch.py), forward and backward (on the arena's views, Numba
kernels), reference (the NumPy twin) and
onnx_node (its ONNX converter: one node, or a list of nodes for a kind made of several).
A kind made of other layers (residual) also declares LAYER_LISTS: its spec's fields that
hold lists of layer specs, and their lengths; those layers are of the other kinds.
"""

from . import conv2d, dense, hardswish, maxpool, relu, residual, squeeze_excite

KINDS = {
    "dense": dense,
}

BLOCK_KINDS = {
    "conv2d": conv2d,
    "relu": relu,
    "maxpool": maxpool,
    "hardswish": hardswish,
    "se": squeeze_excite,
    "residual": residual,
}
