"""Plain-NumPy twins of every kernel: the test oracle. Same names, same arguments,
same in-place contract, written for clarity rather than speed (float64 inside)."""

import numpy as np


def _softplus(x):
    return np.logaddexp(0.0, x)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


# kernels/dense.py
def dense_forward(x, w, b, out):
    out[...] = np.maximum(x.astype(np.float64) @ w + b, 0.0)
    return out


def add_bias(z, b):
    z[...] = z + b.astype(np.float64)
    return z


def column_sum(dz, out):
    out[...] = dz.sum(axis=0, dtype=np.float64)
    return out


def local_grad(x, dz, gw, gb):
    gw[...] = x.T.astype(np.float64) @ dz
    gb[...] = dz.sum(axis=0, dtype=np.float64)
    return gw, gb


# kernels/norm.py
def length_normalise(x, out, eps=1e-4):
    x64 = x.astype(np.float64)
    out[...] = x64 / (np.linalg.norm(x64, axis=1, keepdims=True) + eps)
    return out


# kernels/ff_loss.py
def goodness(h, mean=False):
    h = h.astype(np.float64)
    return (h**2).mean(axis=1) if mean else (h**2).sum(axis=1)


def ff_activate(z, b, h_next, good, mean=False, eps=1e-4):
    h = np.maximum(z.astype(np.float64) + b, 0.0)
    z[...] = h
    good[...] = goodness(h, mean)
    length_normalise(h, h_next, eps)


def ff_loss(h, n_pos, theta, mean=False):
    """Per-row FF loss of activities h (rows < n_pos positive)."""
    sign = np.where(np.arange(h.shape[0]) < n_pos, 1.0, -1.0)
    return _softplus(-sign * (goodness(h, mean) - theta))


def ff_loss_grad(h, good, n_pos, theta, loss, mean=False):
    sign = np.where(np.arange(h.shape[0]) < n_pos, 1.0, -1.0)
    u = sign * (good.astype(np.float64) - theta)
    loss[...] = _softplus(-u)
    dgood = -sign * _sigmoid(-u) / h.shape[0]
    dh = dgood[:, None] * 2.0 * h / (h.shape[1] if mean else 1.0)
    h[...] = dh


def label_goodness(z0, wl, inv, b, out, mean=False):
    z = inv[:, None, None] * (z0[:, None, :].astype(np.float64) + wl[None, :, :]) + b
    h = np.maximum(z, 0.0)
    out[...] = (h**2).mean(axis=2) if mean else (h**2).sum(axis=2)


# kernels/overlay.py
def overlay_pre(u, wl, inv, labels, z):
    j = np.arange(len(labels)) % len(inv)
    z[...] = inv[j, None] * (u[j].astype(np.float64) + wl[labels])


def overlay_grad(dz, inv, labels, value, gwl, gb):
    b = len(inv)
    j = np.arange(len(labels)) % b
    d = dz.astype(np.float64)
    gb[...] = d.sum(0)
    gwl[...] = 0.0
    np.add.at(gwl, labels, value * inv[j, None] * d)
    dz[:b] = inv[:, None] * d.reshape(-1, b, d.shape[1]).sum(0)


# kernels/optim.py
def sgd_momentum_step(w, g, vel, lr, momentum=0.9, weight_decay=0.0):
    vel[...] = momentum * vel + g + weight_decay * w
    w -= lr * vel


def adam_step(w, g, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    g = g + weight_decay * w
    m[...] = beta1 * m + (1 - beta1) * g
    v[...] = beta2 * v + (1 - beta2) * g * g
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    w -= lr * m_hat / (np.sqrt(v_hat) + eps)


# kernels/batch.py
def gather_scaled(src, idx, scale, out):
    out[:, : src.shape[1]] = src[idx].astype(np.float64) * scale


def gather_shifted(src, idx, u, shift, image_shape, scale, out):
    h, w = image_shape
    for i, row in enumerate(idx):
        dy, dx = (np.floor(u[2 * i:2 * i + 2] * (2 * shift + 1)) - shift).astype(int)
        img = np.zeros((h + 2 * shift, w + 2 * shift), np.float64)   # padded, then cut out moved
        img[shift:shift + h, shift:shift + w] = src[row].reshape(h, w) * np.float32(scale)
        out[i, :h * w] = img[shift - dy:shift - dy + h, shift - dx:shift - dx + w].ravel()


def overlay_labels(x, labels, offset, num_classes, value):
    cols = np.where(labels[:, None] < 0, value / num_classes,
                    value * (labels[:, None] == np.arange(num_classes)))
    x[:, offset : offset + num_classes] = cols


# kernels/softmax.py
def softmax_xent_grad(logits, y, loss):
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss[...] = -logp[np.arange(len(y)), y]
    onehot = np.eye(logits.shape[1])[y]
    logits[...] = (np.exp(logp) - onehot) / logits.shape[0]


def hardest_wrong_label(scores, y, out):
    masked = scores.astype(np.float64).copy()
    masked[np.arange(len(y)), y] = -np.inf
    out[...] = masked.argmax(axis=1)


def random_wrong_label(y, u, num_classes, out):
    out[...] = (y + 1 + np.floor(u * (num_classes - 1)).astype(np.int64)) % num_classes


# kernels/conv.py: loops over the kernel offsets (i, j); each offset is one strided slice of
# the zero-padded input, times that offset's weights. scratch is accepted and unused.
def _conv_offsets(x_shape, w_shape, stride, pad, groups):
    """(output channels, i, j, padded-input window) for every group and kernel offset."""
    c_in, c_out, (kh, kw) = x_shape[1], w_shape[0], w_shape[2:]
    oh = (x_shape[2] + 2 * pad - kh) // stride + 1
    ow = (x_shape[3] + 2 * pad - kw) // stride + 1
    cg_in, cg_out = c_in // groups, c_out // groups
    for g in range(groups):
        ci, co = slice(g * cg_in, (g + 1) * cg_in), slice(g * cg_out, (g + 1) * cg_out)
        for i in range(kh):
            for j in range(kw):
                window = (slice(None), ci, slice(i, i + stride * (oh - 1) + 1, stride),
                          slice(j, j + stride * (ow - 1) + 1, stride))
                yield co, i, j, window


def _padded(x, pad):
    return np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))


def conv2d_forward(x, w, b, stride, pad, groups, out, scratch=None):
    xp, y = _padded(x, pad), np.zeros(out.shape)
    for co, i, j, window in _conv_offsets(x.shape, w.shape, stride, pad, groups):
        y[:, co] += np.einsum("nchw,oc->nohw", xp[window], w[co, :, i, j].astype(np.float64))
    out[...] = y if b is None else y + b.astype(np.float64)[None, :, None, None]
    return out


def conv2d_weight_grad(x, dy, stride, pad, groups, gw, gb, scratch=None):
    xp, dy64 = _padded(x, pad), dy.astype(np.float64)
    for co, i, j, window in _conv_offsets(x.shape, gw.shape, stride, pad, groups):
        gw[co, :, i, j] = np.einsum("nohw,nchw->oc", dy64[:, co], xp[window])
    if gb is not None:
        gb[...] = dy64.sum(axis=(0, 2, 3))
    return gw, gb


def conv2d_input_grad(dy, w, stride, pad, groups, dx, scratch=None):
    dxp, dy64 = _padded(np.zeros(dx.shape), pad), dy.astype(np.float64)
    for co, i, j, window in _conv_offsets(dx.shape, w.shape, stride, pad, groups):
        dxp[window] += np.einsum("nohw,oc->nchw", dy64[:, co], w[co, :, i, j].astype(np.float64))
    dx[...] = dxp[:, :, pad:pad + dx.shape[2], pad:pad + dx.shape[3]]
    return dx


# kernels/pool.py
def maxpool_forward(x, k, out):
    n, c, oh, ow = out.shape
    windows = x[:, :, :oh * k, :ow * k].reshape(n, c, oh, k, ow, k)
    out[...] = windows.max(axis=(3, 5))
    return out


def maxpool_backward(x, out, dout, k, dx):
    n, c, oh, ow = out.shape
    dx[...] = 0.0
    for i in range(oh):
        for j in range(ow):
            window = x[:, :, i * k:(i + 1) * k, j * k:(j + 1) * k].reshape(n, c, k * k)
            first = (window == out[:, :, i, j][:, :, None]).argmax(axis=2)   # the first maximum
            for a in range(n):
                for b in range(c):
                    dx[a, b, i * k + first[a, b] // k, j * k + first[a, b] % k] = dout[a, b, i, j]
    return dx


def upsample_add(src, fh, fw, dst):
    dst[...] += np.repeat(np.repeat(src.astype(np.float64), fh, axis=2), fw, axis=3)
    return dst


def window_sum(src, fh, fw, out):
    n, c, h, w = out.shape
    out[...] = src.astype(np.float64).reshape(n, c, h, fh, w, fw).sum(axis=(3, 5))
    return out


# kernels/activation.py
def relu_grad(y, dy, dx):
    dx[...] = np.where(y > 0, dy, 0.0)
    return dx


# kernels/norm.py
def layer_norm(x, out, eps=1e-5):
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=1, keepdims=True)
    out[...] = (x64 - mean) / np.sqrt(x64.var(axis=1, keepdims=True) + eps)
    return out


def standardise(x, mean, scale):
    return (x.astype(np.float64) - mean) * scale


# kernels/sff.py
def class_goodness(o, good):
    good[...] = (o.astype(np.float64) ** 2).mean(axis=2)
    return good


def margin_loss(good, y, margin):
    """Per-sample loss: logsumexp_c(good + margin * [c != y]) - good[y]."""
    shifted = good.astype(np.float64) + margin * (np.arange(good.shape[1]) != y[:, None])
    top = shifted.max(axis=1, keepdims=True)
    return (top[:, 0] + np.log(np.exp(shifted - top).sum(axis=1))) - good[np.arange(len(y)), y]


def margin_loss_grad(o, y, margin, good, loss):
    shifted = good.astype(np.float64) + margin * (np.arange(good.shape[1]) != y[:, None])
    s = np.exp(shifted - shifted.max(axis=1, keepdims=True))
    s /= s.sum(axis=1, keepdims=True)
    s[np.arange(len(y)), y] -= 1.0
    loss[...] = margin_loss(good, y, margin)
    o[...] = s[:, :, None] * 2.0 * o / (o.shape[2] * o.shape[0])
    return loss


# kernels/batch.py
def gather_images(src, idx, u, shift, scale, out):
    b, c, h, w = out.shape
    images = src[idx].reshape(b, h, w, c).transpose(0, 3, 1, 2).astype(np.float64) * scale
    out[...] = 0.0
    for i in range(b):
        dy = int(u[2 * i] * (2 * shift + 1)) - shift if shift else 0
        dx = int(u[2 * i + 1] * (2 * shift + 1)) - shift if shift else 0
        rows, cols = slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0))
        out[i, :, rows, cols] = images[i, :, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


# kernels/mobile.py
def hardsigmoid(u):
    return np.clip(u.astype(np.float64) / 6.0 + 0.5, 0.0, 1.0)


def hardswish(x, y):
    y[...] = x.astype(np.float64) * hardsigmoid(x)
    return y


def hardswish_grad(x, dy, dx):
    x64 = x.astype(np.float64)
    dx[...] = dy * np.where(x64 <= -3.0, 0.0, np.where(x64 >= 3.0, 1.0, (2.0 * x64 + 3.0) / 6.0))
    return dx


def channel_mean(x, out):
    out[...] = x.astype(np.float64).mean(axis=(2, 3))
    return out


def gate(x, u, y):
    y[...] = x.astype(np.float64) * hardsigmoid(u)[:, :, None, None]
    return y


def gate_grad(x, dy, u, du):
    s = (dy.astype(np.float64) * x).sum(axis=(2, 3))
    du[...] = np.where(np.abs(u) < 3.0, s / 6.0, 0.0)
    return du


def gate_input_grad(dy, u, ds, dx):
    dx[...] = dy * hardsigmoid(u)[:, :, None, None] + ds[:, :, None, None] / (dy.shape[2] * dy.shape[3])
    return dx


def hybrid_images(src, idx, partner_u, u, image_shape, scale, out, passes):
    height, width = image_shape[:2]
    m = (u < 0.5).astype(np.float64).reshape(-1, height, width)
    for _ in range(passes):
        for axis in (2, 1):        # rows, then columns; an edge pixel stands in for its missing neighbour
            pad = [(0, 0)] * 3
            pad[axis] = (1, 1)
            e = np.pad(m, pad, mode="edge")
            lo, mid, hi = (np.take(e, np.arange(s, s + m.shape[axis]), axis=axis) for s in (0, 1, 2))
            m = 0.25 * lo + 0.5 * mid + 0.25 * hi
    mask = (m > 0.5).reshape(len(idx), -1)
    u[...] = mask
    partner = np.minimum((partner_u * len(src)).astype(np.int64), len(src) - 1)
    channels = src.shape[1] // (height * width)
    mask = np.repeat(mask, channels, axis=1)
    out[...] = np.where(mask, src[idx].astype(np.float64), src[partner].astype(np.float64)) * np.float32(scale)
    return out


# kernels/uff_loss.py
def mask_noise(x, m, rate, out):
    out[...] = np.where(m >= np.float32(rate), x, 0.0)
    return out


def mse_grad(r, x, loss):
    e = r.astype(np.float64) - x
    loss[...] = (e * e).mean(axis=1)
    r[...] = 2.0 * e / e.size
    return r


def relu_backward(dc, c):
    dc[...] = np.where(c > 0, dc, 0.0)
    return dc


def nt_xent_grad(sim, tau, loss):
    r = sim.shape[0]
    s = sim.astype(np.float64) / tau
    np.fill_diagonal(s, -np.inf)
    lse = np.logaddexp.reduce(s, axis=1)
    pos = (np.arange(r) + r // 2) % r
    loss[...] = lse - s[np.arange(r), pos]
    g = np.exp(s - lse[:, None])
    g[np.arange(r), pos] -= 1.0
    g /= r
    sim[...] = (g + g.T) / tau
    return sim


def unit_rows_backward(p, du, eps):
    p64 = p.astype(np.float64)
    n = np.sqrt((p64 * p64).sum(axis=1, keepdims=True))
    u = p64 / (n + eps)
    along = np.divide((u * du).sum(axis=1, keepdims=True) * (n + eps), n, out=np.zeros_like(n), where=n > 0)
    du[...] = (du - u * along) / (n + eps)
    return du


# kernels/local_fields.py
def field_mask(fields, d_in):
    """(d_in, D_out) bool: True where unit j's window holds input i."""
    cell = np.arange(d_in) // fields.per_in
    row, col = cell // fields.in_cols, cell % fields.in_cols
    unit_cell = np.arange(fields.grid ** 2 * fields.per_out) // fields.per_out
    top = unit_cell // fields.grid * fields.stride[0]
    left = unit_cell % fields.grid * fields.stride[1]
    return ((row[:, None] >= top) & (row[:, None] < top + fields.field[0])
            & (col[:, None] >= left) & (col[:, None] < left + fields.field[1]))


def keep_fields(g, fields):
    g[...] = np.where(field_mask(fields, g.shape[0]), g, 0.0)
    return g
