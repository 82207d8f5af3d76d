"""Softmax cross-entropy for the linear head, loss and gradient fused."""

import numpy as np
from numba import njit


@njit(cache=True)
def _softmax_xent_grad(logits, y, loss):
    # logits: (B, C) float32, in place -> dLoss/dlogits = (softmax - one_hot(y)) / B
    # y: (B,) int64 labels; loss: (B,) float32 <- -log softmax[y]
    bsz, c = logits.shape
    for i in range(bsz):
        mx = logits[i, 0]
        for k in range(1, c):
            mx = max(mx, logits[i, k])
        ly = logits[i, y[i]] - mx
        s = 0.0
        for k in range(c):
            e = np.exp(logits[i, k] - mx)
            logits[i, k] = e
            s += e
        loss[i] = np.log(s) - ly
        for k in range(c):
            logits[i, k] = (logits[i, k] / s - (1.0 if k == y[i] else 0.0)) / bsz


def softmax_xent_grad(logits, y, loss):
    """logits <- d(mean cross-entropy)/dlogits in place; loss <- per-row cross-entropy."""
    if logits.dtype != np.float32 or logits.ndim != 2 or y.dtype != np.int64 or loss.dtype != np.float32:
        raise ValueError("softmax_xent_grad: need logits float32 (B, C), y int64 (B,), loss float32 (B,)")
    if y.shape[0] != logits.shape[0] or loss.shape[0] != logits.shape[0]:
        raise ValueError(f"softmax_xent_grad: shapes logits{logits.shape} y{y.shape} loss{loss.shape}")
    _softmax_xent_grad(logits, y, loss)
