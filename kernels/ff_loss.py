"""Forward-Forward layer kernels: activation with goodness, the FF logistic loss
and its gradient, and the goodness of every label overlay at once.

Goodness of a row is sum(h**2) ("sum") or mean(h**2) ("mean"); a positive row
should have goodness above the threshold theta, a negative one below:
loss = softplus(-(g - theta)) for positives, softplus(g - theta) for negatives.
"""

import numpy as np
from numba import njit

# Reductions may be reordered (so they vectorise); NaN and Inf keep their IEEE meaning.
FAST = {"reassoc", "contract", "nsz", "arcp"}


@njit(cache=True, fastmath=FAST)
def _ff_activate(z, b, mean, eps, h_next, good):
    # z: (R, D) float32 pre-activation x @ w, in place -> h = relu(z + b)
    # b: (D,) float32
    # h_next: (R, D) float32 <- h / (||h|| + eps), the next layer's input
    # good: (R,) float32 <- goodness of h
    d = z.shape[1]
    for i in range(z.shape[0]):
        s = 0.0
        for j in range(d):
            v = max(z[i, j] + b[j], 0.0)
            z[i, j] = v
            s += v * v
        good[i] = s / d if mean else s
        inv = 1.0 / (np.sqrt(s) + eps)
        for j in range(d):
            h_next[i, j] = z[i, j] * inv


@njit(cache=True)
def _ff_loss_grad(h, good, n_pos, theta, mean, loss):
    # h: (R, D) float32 activities, in place -> dLoss/dz, the loss averaged over R rows
    # good: (R,) float32 goodness of h; rows [0, n_pos) positive, [n_pos, R) negative
    # loss: (R,) float32 <- per-row loss
    r, d = h.shape
    for i in range(r):
        sign = 1.0 if i < n_pos else -1.0
        u = sign * (good[i] - theta)          # want u large
        # softplus(-u) and its derivative -sigmoid(-u), both overflow-free
        if u > 0.0:
            e = np.exp(-u)
            loss[i] = np.log1p(e)
            sig = e / (1.0 + e)
        else:
            e = np.exp(u)
            loss[i] = -u + np.log1p(e)
            sig = 1.0 / (1.0 + e)
        coef = -sign * sig * 2.0 / r           # dLoss/dg * dg/dh (2h), per row mean
        if mean:
            coef /= d
        for j in range(d):
            h[i, j] = coef * h[i, j]           # relu'(z) is folded in: h == 0 where z + b <= 0


@njit(cache=True, fastmath=FAST)
def _label_goodness(z0, wl, inv, b, mean, out):
    # z0: (B, D) float32 x_without_label @ w (label inputs zeroed)
    # wl: (C, D) float32 the label inputs' rows of w, times the overlay value
    # inv: (B,) float32 1 / (||x_overlaid|| + eps), the same for every one-hot label
    # b: (D,) float32; out: (B, C) float32 <- goodness of layer 1 for each label overlay
    bsz, d = z0.shape
    for i in range(bsz):
        for c in range(wl.shape[0]):
            s = 0.0
            for j in range(d):
                v = max(inv[i] * (z0[i, j] + wl[c, j]) + b[j], 0.0)
                s += v * v
            out[i, c] = s / d if mean else s


def _f32(name, a, ndim):
    if a.dtype != np.float32 or a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D float32, got {a.dtype} {a.shape}")


def ff_activate(z, b, h_next, good, mean=False, eps=1e-4):
    """z <- relu(z + b); h_next <- z / (||z|| + eps); good <- goodness per row."""
    _f32("z", z, 2), _f32("b", b, 1), _f32("h_next", h_next, 2), _f32("good", good, 1)
    if b.shape[0] != z.shape[1] or h_next.shape != z.shape or good.shape[0] != z.shape[0]:
        raise ValueError(f"ff_activate: shapes z{z.shape} b{b.shape} h_next{h_next.shape} good{good.shape}")
    _ff_activate(z, b, bool(mean), np.float32(eps), h_next, good)


def ff_loss_grad(h, good, n_pos, theta, loss, mean=False):
    """h <- dLoss/dz (rows < n_pos positive); loss <- per-row FF loss."""
    _f32("h", h, 2), _f32("good", good, 1), _f32("loss", loss, 1)
    if good.shape[0] != h.shape[0] or loss.shape[0] != h.shape[0] or not 0 <= n_pos <= h.shape[0]:
        raise ValueError(f"ff_loss_grad: shapes h{h.shape} good{good.shape} loss{loss.shape} n_pos={n_pos}")
    _ff_loss_grad(h, good, int(n_pos), np.float32(theta), bool(mean), loss)


def label_goodness(z0, wl, inv, b, out, mean=False):
    """out[i, c] <- first-layer goodness of row i overlaid with label c (exact, one matmul for all labels)."""
    _f32("z0", z0, 2), _f32("wl", wl, 2), _f32("inv", inv, 1), _f32("b", b, 1), _f32("out", out, 2)
    if wl.shape[1] != z0.shape[1] or inv.shape[0] != z0.shape[0] or out.shape != (z0.shape[0], wl.shape[0]):
        raise ValueError(f"label_goodness: shapes z0{z0.shape} wl{wl.shape} inv{inv.shape} out{out.shape}")
    _label_goodness(z0, wl, inv, b, bool(mean), out)


@njit(cache=True)
def _hardest_wrong_label(scores, y, out):
    # scores: (B, C) float32 goodness per label; y: (B,) int64 true labels
    # out: (B,) int64 <- argmax over c != y of scores[i, c]
    for i in range(scores.shape[0]):
        best = -1
        for c in range(scores.shape[1]):
            if c != y[i] and (best < 0 or scores[i, c] > scores[i, best]):
                best = c
        out[i] = best


def hardest_wrong_label(scores, y, out):
    """out <- the wrong label with the highest score in each row (the 'hard' negative)."""
    if scores.ndim != 2 or scores.shape[1] < 2 or y.dtype != np.int64 or out.dtype != np.int64:
        raise ValueError("hardest_wrong_label: need scores (B, C>=2), y and out int64 (B,)")
    if y.shape[0] != scores.shape[0] or out.shape[0] != scores.shape[0]:
        raise ValueError(f"hardest_wrong_label: shapes scores{scores.shape} y{y.shape} out{out.shape}")
    _hardest_wrong_label(scores, y, out)


@njit(cache=True)
def _random_wrong_label(y, u, num_classes, out):
    # y: (B,) int64 true labels; u: (B,) float64 uniform in [0, 1)
    # out: (B,) int64 <- a wrong label, uniform over the C - 1 others
    for i in range(y.shape[0]):
        out[i] = (y[i] + 1 + int(u[i] * (num_classes - 1))) % num_classes


def random_wrong_label(y, u, num_classes, out):
    """out <- (y + 1 + floor(u * (C - 1))) mod C: uniform over the wrong labels, no allocation."""
    if y.dtype != np.int64 or out.dtype != np.int64 or u.dtype != np.float64 or not (y.shape == u.shape == out.shape):
        raise ValueError("random_wrong_label: need y, out int64 (B,) and u float64 (B,)")
    _random_wrong_label(y, u, int(num_classes), out)
