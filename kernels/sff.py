"""The Scalable Forward-Forward (SFF) loss of a conv block (Krutsylo 2025, arXiv 2501.03176).

A block's class head is a 1x1 conv with one output channel per class; o[n, c, p] is
its output at position p of sample n. The goodness of class c is the mean of its
squared activations over the P positions,

    g[n, c] = mean_p o[n, c, p]**2

and the true class y should have the highest. The loss is the log-sum-exp margin
loss over the class goodnesses, with margin m added to every wrong class:

    L[n] = log(1 + sum_{c != y} exp(g[n, c] + m - g[n, y]))
         = logsumexp_c(g[n, c] + m [c != y]) - g[n, y]

(softmax cross-entropy on margin-shifted goodness). Its gradient is

    dL/dg[n, c]    = s[n, c] - [c == y],   s = softmax_c(g[n, c] + m [c != y])
    dL/do[n, c, p] = dL/dg[n, c] * 2 o[n, c, p] / P

averaged over the N samples of the batch.
"""

import numpy as np
from numba import njit

from .ff_loss import FAST


@njit(cache=True, fastmath=FAST)
def _class_goodness(o, good):
    # o: (N, C, P) float32 head output; good: (N, C) float32 <- mean over P of o**2
    p = o.shape[2]
    for n in range(o.shape[0]):
        for c in range(o.shape[1]):
            s = 0.0
            for i in range(p):
                s += o[n, c, i] * o[n, c, i]
            good[n, c] = s / p


@njit(cache=True)
def _margin_loss_grad(o, y, margin, good, loss):
    # o: (N, C, P) float32 head output, in place -> dL/do averaged over N
    # y: (N,) int64 true classes; good: (N, C) float32 class goodness of o
    # loss: (N,) float32 <- L[n]
    n_b, n_c, p = o.shape
    scale = 2.0 / (p * n_b)
    for n in range(n_b):
        top = -np.inf
        for c in range(n_c):
            top = max(top, good[n, c] + (margin if c != y[n] else 0.0))
        total = 0.0
        for c in range(n_c):
            total += np.exp(good[n, c] + (margin if c != y[n] else 0.0) - top)
        lse = top + np.log(total)
        loss[n] = lse - good[n, y[n]]
        for c in range(n_c):
            dg = np.exp(good[n, c] + (margin if c != y[n] else 0.0) - lse) - (1.0 if c == y[n] else 0.0)
            f = dg * scale
            for i in range(p):
                o[n, c, i] *= f


def _check_head(o, good):
    if o.dtype != np.float32 or o.ndim != 3 or good.dtype != np.float32 or good.shape != o.shape[:2]:
        raise ValueError(f"class goodness: need o float32 (N, C, P) and good float32 (N, C), got "
                         f"{o.dtype} {o.shape} and {good.dtype} {good.shape}")


def class_goodness(o, good):
    """good[n, c] <- mean_p o[n, c, p]**2.  o: (N, C, P) float32."""
    _check_head(o, good)
    _class_goodness(o, good)
    return good


def margin_loss_grad(o, y, margin, good, loss):
    """loss[n] <- L[n] (module docstring) from good = class_goodness(o); o <- dL/do in place,
    averaged over the batch.  y: (N,) int64 in 0..C-1."""
    _check_head(o, good)
    if y.dtype != np.int64 or y.shape != o.shape[:1] or loss.dtype != np.float32 or loss.shape != y.shape:
        raise ValueError(f"margin_loss_grad: need y int64 ({o.shape[0]},) and loss float32 ({o.shape[0]},)")
    if y.size and not 0 <= y.min() <= y.max() < o.shape[1]:
        raise ValueError(f"margin_loss_grad: labels must be in 0..{o.shape[1] - 1}")
    _margin_loss_grad(o, y, np.float32(margin), good, loss)
    return loss
