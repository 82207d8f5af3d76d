"""The direct method of kernels/conv.py: Numba loops over the kernel offsets, the
inner loop along one output row, parallel over samples (forward, input gradient)
or output channels (weight gradient). No scratch.

Each kernel offset (i, j) meets output row oh at input row ih = oh * stride - pad + i;
along the row, outputs [lo, hi) meet inputs start + t * stride (t = ow - lo), all
inside the image: the zero padding is never read, only skipped.
"""

from numba import njit, prange

from .ff_loss import FAST


@njit(cache=True)
def _valid_span(j, stride, pad, size, out_size):
    # the outputs o in [lo, hi) whose input o * stride - pad + j lies inside [0, size)
    lo = max(0, -((j - pad) // stride))
    hi = min(out_size, (size - 1 + pad - j) // stride + 1)
    return lo, max(lo, hi)


@njit(cache=True, parallel=True, fastmath=FAST)
def forward(x, w, b, stride, pad, out):
    # x: (N, C_in, H, W) float32; w: (C_out, C_in/G, KH, KW) float32; b: (C_out,) or (0,) float32
    # out: (N, C_out, OH, OW) float32 <- conv(x, w) + b
    n_b, _, h, wd = x.shape
    c_out, cg_in, kh, kw = w.shape
    oh_n, ow_n = out.shape[2], out.shape[3]
    cg_out = c_out // (x.shape[1] // cg_in)
    for n in prange(n_b):
        for co in range(c_out):
            y = out[n, co]
            y[:] = b[co] if b.shape[0] else 0.0
            for ci in range(cg_in):
                xc = x[n, (co // cg_out) * cg_in + ci]
                for i in range(kh):
                    for j in range(kw):
                        wv = w[co, ci, i, j]
                        lo, hi = _valid_span(j, stride, pad, wd, ow_n)
                        start = lo * stride - pad + j
                        for oh in range(oh_n):
                            ih = oh * stride - pad + i
                            if 0 <= ih < h:
                                src, d = xc[ih, start:], y[oh, lo:]
                                for t in range(hi - lo):
                                    d[t] += wv * src[t * stride]


@njit(cache=True, parallel=True, fastmath=FAST)
def weight_grad(x, dy, stride, pad, gw):
    # x: (N, C_in, H, W) float32; dy: (N, C_out, OH, OW) float32
    # gw: (C_out, C_in/G, KH, KW) float32 <- sum over n, oh, ow of dy * the input pixel under each weight
    n_b, _, h, wd = x.shape
    c_out, cg_in, kh, kw = gw.shape
    oh_n, ow_n = dy.shape[2], dy.shape[3]
    cg_out = c_out // (x.shape[1] // cg_in)
    for co in prange(c_out):
        for ci in range(cg_in):
            c = (co // cg_out) * cg_in + ci
            for i in range(kh):
                for j in range(kw):
                    lo, hi = _valid_span(j, stride, pad, wd, ow_n)
                    start = lo * stride - pad + j
                    s = 0.0
                    for n in range(n_b):
                        for oh in range(oh_n):
                            ih = oh * stride - pad + i
                            if 0 <= ih < h:
                                src, g = x[n, c, ih, start:], dy[n, co, oh, lo:]
                                for t in range(hi - lo):
                                    s += g[t] * src[t * stride]
                    gw[co, ci, i, j] = s


@njit(cache=True, parallel=True, fastmath=FAST)
def input_grad(dy, w, stride, pad, dx):
    # dy: (N, C_out, OH, OW) float32; w: (C_out, C_in/G, KH, KW) float32
    # dx: (N, C_in, H, W) float32 <- each dy times each weight, summed into the pixel it read
    n_b, c_in, h, wd = dx.shape
    c_out, cg_in, kh, kw = w.shape
    oh_n, ow_n = dy.shape[2], dy.shape[3]
    cg_out = c_out // (c_in // cg_in)
    for n in prange(n_b):
        dx[n] = 0.0
        for co in range(c_out):
            for ci in range(cg_in):
                dxc = dx[n, (co // cg_out) * cg_in + ci]
                for i in range(kh):
                    for j in range(kw):
                        wv = w[co, ci, i, j]
                        lo, hi = _valid_span(j, stride, pad, wd, ow_n)
                        start = lo * stride - pad + j
                        for oh in range(oh_n):
                            ih = oh * stride - pad + i
                            if 0 <= ih < h:
                                d, g = dxc[ih, start:], dy[n, co, oh, lo:]
                                for t in range(hi - lo):
                                    d[t * stride] += wv * g[t]
