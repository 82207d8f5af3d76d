"""Layer kinds: each module declares its layer's buffers (parameters, optimiser state,
gradients, activations) with their lifetimes, as objects the planner places and the trainer
views. A kind is one module here plus one line below."""

from . import dense

KINDS = {
    "dense": dense,
}
