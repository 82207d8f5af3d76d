"""Hybrid images, the negative data of unsupervised FF (Hinton 2022, section 3.1).

Each negative mixes two real images through a mask of large regions of ones and zeros:
start from random bits, blur them `passes` times with the filter [1/4, 1/2, 1/4] along
the rows and then along the columns (an edge pixel counts itself for its missing
neighbour), and threshold at 0.5:

    m0[r, c] = 1 if u[r, c] < 0.5 else 0          u uniform in [0, 1)
    m <- blur_cols(blur_rows(m)), passes times     blur: 1/4 left + 1/2 self + 1/4 right
    mask = 1 if m > 0.5 else 0
    negative = mask * image_a + (1 - mask) * image_b   (every channel of a pixel alike)

The mask is made in place in the uniforms' own buffer: nothing is allocated per batch.
"""

import numpy as np
from numba import njit


@njit(cache=True)
def _blur_line(m, start, step, n):
    # m: (P,) float32 one mask, in place: its n values start, start + step, ... <- [1/4, 1/2, 1/4] blur
    prev = m[start]
    for j in range(n):
        at = start + j * step
        cur = m[at]
        nxt = m[at + step] if j + 1 < n else cur
        m[at] = 0.25 * prev + 0.5 * cur + 0.25 * nxt
        prev = cur


@njit(cache=True)
def _hybrid_images(src, idx, partner_u, u, passes, height, width, scale, out):
    # src: (N, H*W*C) stored images, channels last; idx: (B,) int64 the first image of each row
    # partner_u: (B,) float32 uniform in [0, 1): the second image is row int(partner_u[i] * N)
    # u: (B, H*W) float32 uniform in [0, 1), in place -> the 0/1 masks
    # out: (B, H*W*C) float32 <- mask * src[idx] * scale + (1 - mask) * src[partner] * scale
    n_rows = src.shape[0]
    channels = src.shape[1] // (height * width)
    for i in range(idx.shape[0]):
        m = u[i]
        for p in range(height * width):
            m[p] = 1.0 if m[p] < 0.5 else 0.0
        for _ in range(passes):
            for r in range(height):
                _blur_line(m, r * width, 1, width)
            for c in range(width):
                _blur_line(m, c, width, height)
        a, b = idx[i], min(int(partner_u[i] * n_rows), n_rows - 1)
        for p in range(height * width):
            m[p] = 1.0 if m[p] > 0.5 else 0.0
            for ch in range(channels):
                j = p * channels + ch
                out[i, j] = (m[p] * src[a, j] + (1.0 - m[p]) * src[b, j]) * scale


def hybrid_images(src, idx, partner_u, u, image_shape, scale, out, passes):
    """out <- hybrid images of src[idx] and random partners (module docstring); u <- their masks."""
    height, width = image_shape[:2]
    b = idx.shape[0]
    if src.ndim != 2 or src.shape[1] % (height * width) or idx.dtype != np.int64:
        raise ValueError(f"hybrid_images: need src (N, {height}*{width}*C) and idx int64 (B,); got {src.shape}")
    for name, a, shape in (("partner_u", partner_u, (b,)), ("u", u, (b, height * width)),
                           ("out", out, (b, src.shape[1]))):
        if a.dtype != np.float32 or a.shape != shape or not a.flags.c_contiguous:
            raise ValueError(f"hybrid_images: {name} must be C-contiguous float32 {shape}, got {a.dtype} {a.shape}")
    _hybrid_images(src, idx, partner_u, u, int(passes), int(height), int(width), np.float32(scale), out)
