"""The first layer with the label overlay factored out.

A positive row and its negative are the same data row with different one-hot labels,
and every one-hot label has the same norm, so both normalised rows share the factor
inv = 1 / (||row|| + eps) and the product of the row's other features with w:

    z[i] = inv[j] * (u[j] + wl[label[i]])     u = x0 @ w (label inputs of x0 zeroed),
                                              wl = value * w[label rows], j = i % B

One (B, D) @ (D, H) product serves all the rows of a data row instead of one per row,
forward and backward: the weight gradient folds the rows of each data row together
before the product (overlay_grad).
"""

import numpy as np
from numba import njit

from .ff_loss import FAST


@njit(cache=True, fastmath=FAST)
def _overlay_pre(u, wl, inv, labels, z):
    # u: (B, H) float32 x0 @ w; wl: (C, H) float32; inv: (B,) float32
    # labels: (R,) int64, R a multiple of B: row i is data row i % B with label labels[i]
    # z: (R, H) float32 <- inv[j] * (u[j] + wl[labels[i]])
    b, h = u.shape
    for i in range(labels.shape[0]):
        j = i % b
        s = inv[j]
        c = labels[i]
        for k in range(h):
            z[i, k] = s * (u[j, k] + wl[c, k])


@njit(cache=True, fastmath=FAST)
def _overlay_grad(dz, inv, labels, value, gwl, gb):
    # dz: (R, H) float32 dLoss/dz, in place: dz[:B] <- inv[j] * sum of the rows of data row j
    # gwl: (C, H) float32 <- value * sum over rows with label c of inv * dz (the label rows' gradient)
    # gb: (H,) float32 <- sum of all rows of dz (the bias gradient)
    b = inv.shape[0]
    r, h = dz.shape
    gb[:] = 0.0
    gwl[:] = 0.0
    for i in range(r):
        s = value * inv[i % b]
        c = labels[i]
        for k in range(h):
            gb[k] += dz[i, k]
            gwl[c, k] += s * dz[i, k]
    for j in range(b):
        for i in range(j + b, r, b):
            for k in range(h):
                dz[j, k] += dz[i, k]
        for k in range(h):
            dz[j, k] *= inv[j]


def _check(u_or_dz, inv, labels, wl, name):
    for a, nd, n in ((u_or_dz, 2, "rows"), (inv, 1, "inv"), (wl, 2, "label rows")):
        if a.dtype != np.float32 or a.ndim != nd:
            raise ValueError(f"{name}: {n} must be {nd}-D float32, got {a.dtype} {a.shape}")
    if labels.dtype != np.int64 or labels.ndim != 1 or labels.shape[0] % max(inv.shape[0], 1):
        raise ValueError(f"{name}: labels must be int64 (k * B,), got {labels.dtype} {labels.shape} for B={inv.shape[0]}")
    if wl.shape[1] != u_or_dz.shape[1]:
        raise ValueError(f"{name}: label rows {wl.shape} do not match width {u_or_dz.shape[1]}")


def overlay_pre(u, wl, inv, labels, z):
    """z <- the first layer's pre-activations (no bias) of rows overlaid with labels."""
    _check(u, inv, labels, wl, "overlay_pre")
    if u.shape[0] != inv.shape[0] or z.dtype != np.float32 or z.shape != (labels.shape[0], u.shape[1]):
        raise ValueError(f"overlay_pre: u{u.shape} inv{inv.shape} labels{labels.shape} z{z.shape}")
    _overlay_pre(u, wl, inv, labels, z)


def overlay_grad(dz, inv, labels, value, gwl, gb):
    """gb, gwl <- bias and label-row gradients; dz[:B] <- folded rows for x0.T @ dz[:B]."""
    _check(dz, inv, labels, gwl, "overlay_grad")
    if dz.shape[0] != labels.shape[0] or gb.dtype != np.float32 or gb.shape != (dz.shape[1],):
        raise ValueError(f"overlay_grad: dz{dz.shape} labels{labels.shape} gb{gb.shape}")
    _overlay_grad(dz, inv, labels, np.float32(value), gwl, gb)
