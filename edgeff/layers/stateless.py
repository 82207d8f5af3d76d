"""What a block-net layer kind without parameters or scratch declares (relu, maxpool, ...):
its module imports these three instead of writing them again."""

from .scratch import NONE


def param_shapes(spec, shape):
    return {}


def init(spec, shape, params, rng):
    pass


def scratch_size(spec, shape, n):
    return NONE
