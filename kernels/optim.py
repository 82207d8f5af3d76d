"""In-place optimiser updates on flat parameter views (one pass, no temporaries).

Each kernel body is compiled twice, serial and parallel over the cores; which one a step
uses is measured per machine (edgeff/tuning.py sets PARALLEL_FROM).
Both use NumPy's error model: a division by zero gives inf or nan instead of raising. Python's
model checks every division, and that check alone kept the serial Adam loop from vectorising
(500 K parameters: 1.48 ms scalar, 0.22 ms vectorised, bit for bit the same on an AMD EPYC);
the parallel variant's loop body already ran under NumPy's model.
"""

import types

import numpy as np
from numba import njit, prange

# Elements from which the parallel variant runs (edgeff/tuning.py measures it per machine). The
# default is never: the vectorised serial step is bound by memory bandwidth on one core, and
# waking Numba's pool right after a BLAS call (OpenBLAS's threads still hold the cores) costs
# more than a second core gives (AMD EPYC, 4 Mi parameters after a product: 2.2 ms either way).
PARALLEL_FROM = 1 << 62


def _serial_and_parallel(fn):
    """(serial, parallel) compiled variants of one kernel body. The parallel one is
    compiled from a renamed copy: Numba's on-disk cache is keyed by the function's
    name and line, and one shared entry would hand the serial code to both."""
    twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_parallel")
    twin.__qualname__ = fn.__qualname__ + "_parallel"
    return (njit(cache=True, error_model="numpy")(fn),
            njit(cache=True, error_model="numpy", parallel=True)(twin))


def _sgd_momentum(w, g, vel, lr, momentum, weight_decay):
    # w, g, vel: (P,) float32; w and vel updated in place
    for i in prange(w.shape[0]):
        v = momentum * vel[i] + g[i] + weight_decay * w[i]
        vel[i] = v
        w[i] -= lr * v


def _adam(w, g, m, v, lr_t, beta1, beta2, eps_t, weight_decay):
    # w, g, m, v: (P,) float32; w, m, v updated in place
    # lr_t = lr * sqrt(1 - beta2**t) / (1 - beta1**t); eps_t = eps * sqrt(1 - beta2**t)
    for i in prange(w.shape[0]):
        gi = g[i] + weight_decay * w[i]
        mi = beta1 * m[i] + (1.0 - beta1) * gi
        vi = beta2 * v[i] + (1.0 - beta2) * gi * gi
        m[i] = mi
        v[i] = vi
        w[i] -= lr_t * mi / (np.sqrt(vi) + eps_t)


_SGD = _serial_and_parallel(_sgd_momentum)
_ADAM = _serial_and_parallel(_adam)


def _flat(*arrays):
    ref = arrays[0]
    for a in arrays:
        if a.dtype != np.float32 or a.shape != ref.shape or not a.flags.c_contiguous:
            raise ValueError(f"optimiser arrays must be C-contiguous float32 of one shape, got {a.dtype} {a.shape}")
    return [a.reshape(-1) for a in arrays]


def sgd_momentum_step(w, g, vel, lr, momentum=0.9, weight_decay=0.0):
    """vel <- momentum*vel + g + wd*w; w <- w - lr*vel."""
    w1, g1, v1 = _flat(w, g, vel)
    _SGD[w1.size >= PARALLEL_FROM](w1, g1, v1, np.float32(lr), np.float32(momentum), np.float32(weight_decay))


def adam_step(w, g, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    """Adam (Kingma & Ba) step number t >= 1, bias-corrected, as torch.optim.Adam."""
    if t < 1:
        raise ValueError("adam_step: t counts steps from 1")
    w1, g1, m1, v1 = _flat(w, g, m, v)
    c2 = np.sqrt(1.0 - beta2**t)
    lr_t = lr * c2 / (1.0 - beta1**t)
    _ADAM[w1.size >= PARALLEL_FROM](w1, g1, m1, v1, np.float32(lr_t), np.float32(beta1), np.float32(beta2),
                                    np.float32(eps * c2), np.float32(weight_decay))


def warm_up():
    """Compile (or load from Numba's cache) both variants, serial and parallel, of every step:
    a trainer whose parameters are all small still may hold one large enough for the parallel one."""
    p = np.zeros(3, np.float32)
    one = np.float32(1.0)
    for variant in (False, True):
        _ADAM[variant](p, p, p.copy(), p.copy(), one, one, one, one, one)
        _SGD[variant](p, p, p.copy(), one, one, one)
