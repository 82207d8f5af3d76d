"""The losses of UFF's layer learners (--algo uff, edgeff/uff_train.py) and their input noise.

Auto-encoder (ae, dae): a layer's code c = relu(x~ @ w + b) of its input x (x~ = x, or x
with masking noise for dae) is decoded by a linear decoder, r = c @ v + d, judged by

    L_mse = 1/(B D) sum_i sum_j (r_ij - x_ij)^2             dL/dr = 2 (r - x) / (B D)

Contrastive: the codes of two views of each of B rows are projected, p = c @ q + e, made
unit length, u = p / (|p| + eps), and compared, s = u u^T / tau (2B x 2B). Row i's positive
is its other view j(i) = i + B (mod 2B):

    L_ntxent = 1/(2B) sum_i [ log sum_{k != i} exp(s_ik) - s_i,j(i) ]
    G_ik = dL/ds_ik = (softmax_{k != i}(s_i)_k - [k == j(i)]) / (2B),  dL/du = (G + G^T) u / tau

Masking noise: x~_ij = x_ij if m_ij >= rate else 0, m uniform in [0, 1), one per element.
"""

import numpy as np
from numba import njit


@njit(cache=True)
def _mask_noise(x, m, rate, out):
    # x: (R, D) float32; m: (R, D) float32 uniform in [0, 1)
    # out: (R, D) float32 (may be x) <- x where m >= rate, else 0
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = x[i, j] if m[i, j] >= rate else 0.0


@njit(cache=True)
def _mse_grad(r, x, loss):
    # r: (B, D) float32 reconstruction, in place -> dL_mse/dr; x: (B, D) float32 the target
    # loss: (B,) float32 <- each row's mean squared error (their mean is L_mse)
    b, d = r.shape
    coef = 2.0 / (b * d)
    for i in range(b):
        s = 0.0
        for j in range(d):
            e = r[i, j] - x[i, j]
            s += e * e
            r[i, j] = coef * e
        loss[i] = s / d


@njit(cache=True)
def _relu_backward(dc, c):
    # dc: (R, D) float32 dL/dcode, in place -> dL/dz; c: (R, D) float32 the code relu(z)
    for i in range(dc.shape[0]):
        for j in range(dc.shape[1]):
            if c[i, j] <= 0.0:
                dc[i, j] = 0.0


@njit(cache=True)
def _nt_xent_grad(sim, tau, loss):
    # sim: (R, R) float32 cosines u u^T of R = 2B unit rows, in place -> (G + G^T) / tau
    # loss: (R,) float32 <- each row's NT-Xent term (their mean is L_ntxent)
    r = sim.shape[0]
    half = r // 2
    for i in range(r):
        pos = (i + half) % r
        top = -np.inf
        for k in range(r):
            if k != i:
                top = max(top, sim[i, k] / tau)
        total = 0.0
        for k in range(r):
            if k != i:
                total += np.exp(sim[i, k] / tau - top)
        lse = top + np.log(total)
        loss[i] = lse - sim[i, pos] / tau
        for k in range(r):
            sim[i, k] = 0.0 if k == i else (np.exp(sim[i, k] / tau - lse) - (1.0 if k == pos else 0.0)) / r
    for i in range(r):
        for k in range(i, r):
            g = (sim[i, k] + sim[k, i]) / tau
            sim[i, k] = g
            sim[k, i] = g


@njit(cache=True)
def _unit_rows_backward(p, du, eps):
    # p: (R, P) float32 the projections; du: (R, P) float32 dL/du of u = p / (|p| + eps),
    # in place -> dL/dp = (du - u (u . du) (|p| + eps) / |p|) / (|p| + eps)
    for i in range(p.shape[0]):
        n = 0.0
        for j in range(p.shape[1]):
            n += p[i, j] * p[i, j]
        n = np.sqrt(n)
        inv = 1.0 / (n + eps)
        dot = 0.0
        for j in range(p.shape[1]):
            dot += p[i, j] * inv * du[i, j]
        along = dot / n if n > 0.0 else 0.0         # u (u . du) (|p| + eps) / |p| = p along
        for j in range(p.shape[1]):
            du[i, j] = (du[i, j] - p[i, j] * along) * inv


def _f32(name, a, shape):
    if a.dtype != np.float32 or a.shape != shape or not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous float32 {shape}, got {a.dtype} {a.shape}")


def mask_noise(x, m, rate, out):
    """out <- x with the elements whose uniform m is below rate set to 0 (out may be x)."""
    for name, a in (("x", x), ("m", m), ("out", out)):
        _f32(name, a, x.shape)
    _mask_noise(x, m, np.float32(rate), out)
    return out


def mse_grad(r, x, loss):
    """r (reconstruction) in place -> dL_mse/dr against target x; loss <- per-row errors."""
    _f32("r", r, r.shape), _f32("x", x, r.shape), _f32("loss", loss, r.shape[:1])
    _mse_grad(r, x, loss)
    return r


def relu_backward(dc, c):
    """dc in place -> dc where the code c is positive, else 0."""
    _f32("dc", dc, dc.shape), _f32("c", c, dc.shape)
    _relu_backward(dc, c)
    return dc


def nt_xent_grad(sim, tau, loss):
    """sim (cosines of 2B unit rows, views i and i + B paired) in place -> dL_ntxent/dsim made
    symmetric over (G + G^T) / tau; loss <- per-row terms."""
    r = sim.shape[0]
    _f32("sim", sim, (r, r)), _f32("loss", loss, (r,))
    if r < 2 or r % 2:
        raise ValueError(f"nt_xent_grad: need an even number of rows (two views each), got {r}")
    _nt_xent_grad(sim, np.float32(tau), loss)
    return sim


def unit_rows_backward(p, du, eps):
    """du (dL/du of u = p / (|p| + eps)) in place -> dL/dp."""
    _f32("p", p, p.shape), _f32("du", du, p.shape)
    _unit_rows_backward(p, du, np.float32(eps))
    return du
