"""Batch staging: gather rows of the stored data set as float32, overlay labels."""

import numpy as np
from numba import njit


@njit(cache=True)
def _gather_scaled(src, idx, scale, out):
    # src: (N, D) uint8 or float32 stored data set
    # idx: (B,) int64 rows to take
    # out: (B, W) float32, W >= D; out[:, :D] <- src[idx] * scale, other columns untouched
    for i in range(idx.shape[0]):
        r = idx[i]
        for j in range(src.shape[1]):
            out[i, j] = src[r, j] * scale


@njit(cache=True)
def _gather_shifted(src, idx, u, shift, height, width, scale, out):
    # src: (N, H*W) stored images, row-major; idx: (B,) int64; u: (2B,) float64 uniform in [0, 1)
    # row i moves by dy = floor(u[2i] * (2 shift + 1)) - shift rows and dx (from u[2i+1]) columns:
    # out[i, r*W + c] <- src[idx[i], (r - dy)*W + (c - dx)] * scale, 0 where that is off the image
    n = 2 * shift + 1
    for i in range(idx.shape[0]):
        dy = int(u[2 * i] * n) - shift
        dx = int(u[2 * i + 1] * n) - shift
        row = idx[i]
        for r in range(height):
            rs = r - dy
            for c in range(width):
                cs = c - dx
                if 0 <= rs < height and 0 <= cs < width:
                    out[i, r * width + c] = src[row, rs * width + cs] * scale
                else:
                    out[i, r * width + c] = 0.0


@njit(cache=True)
def _overlay_labels(x, labels, offset, num_classes, value):
    # x: (B, W) float32, in place: columns [offset, offset + C) <- value * one_hot(label)
    # labels: (B,) int64; label -1 means neutral: every label column value / C
    for i in range(x.shape[0]):
        lab = labels[i]
        for c in range(num_classes):
            if lab < 0:
                x[i, offset + c] = value / num_classes
            else:
                x[i, offset + c] = value if c == lab else 0.0


def gather_scaled(src, idx, scale, out):
    """out[:, :D] <- src[idx] * scale as float32 (src uint8 or float32, idx int64)."""
    if src.ndim != 2 or out.ndim != 2 or out.dtype != np.float32 or idx.dtype != np.int64:
        raise ValueError("gather_scaled: need src (N, D), idx int64 (B,), out float32 (B, W)")
    if out.shape[0] != idx.shape[0] or out.shape[1] < src.shape[1]:
        raise ValueError(f"gather_scaled: out{out.shape} cannot hold {idx.shape[0]} rows of {src.shape[1]}")
    _gather_scaled(src, idx, np.float32(scale), out)


def gather_shifted(src, idx, u, shift, image_shape, scale, out):
    """out[:, :H*W] <- src[idx] * scale, each image moved by a random whole-pixel shift in
    [-shift, shift] rows and columns drawn from u (2B uniforms); pixels moved in are 0."""
    height, width = image_shape
    if src.ndim != 2 or src.shape[1] != height * width or u.dtype != np.float64 or u.shape[0] < 2 * idx.shape[0]:
        raise ValueError(f"gather_shifted: need src (N, {height}*{width}), u float64 (2B,); got {src.shape}, {u.shape}")
    if out.dtype != np.float32 or out.shape[0] != idx.shape[0] or out.shape[1] < src.shape[1] or idx.dtype != np.int64:
        raise ValueError(f"gather_shifted: out{out.shape} cannot hold {idx.shape[0]} rows of {src.shape[1]}")
    _gather_shifted(src, idx, u, int(shift), int(height), int(width), np.float32(scale), out)


def overlay_labels(x, labels, offset, num_classes, value):
    """x[:, offset:offset+C] <- value * one_hot(labels) (label -1: neutral, value/C everywhere)."""
    if x.dtype != np.float32 or labels.dtype != np.int64 or labels.shape[0] != x.shape[0]:
        raise ValueError("overlay_labels: need x float32 (B, W) and labels int64 (B,)")
    if offset < 0 or offset + num_classes > x.shape[1]:
        raise ValueError(f"overlay_labels: label columns [{offset}, {offset + num_classes}) outside width {x.shape[1]}")
    _overlay_labels(x, labels, int(offset), int(num_classes), np.float32(value))


@njit(cache=True)
def _gather_images(src, idx, u, shift, scale, out):
    # src: (N, H*W*C) stored images, each row (H, W, C) in C order (channels last)
    # idx: (B,) int64; u: (2B,) float64 uniform in [0, 1) (read only when shift > 0)
    # out: (B, C, H, W) float32 <- the images channels first, times scale, each moved by
    #      dy rows and dx columns as in _gather_shifted (0 where that is off the image)
    n_c, height, width = out.shape[1], out.shape[2], out.shape[3]
    n = 2 * shift + 1
    for i in range(idx.shape[0]):
        dy = int(u[2 * i] * n) - shift if shift else 0
        dx = int(u[2 * i + 1] * n) - shift if shift else 0
        row = idx[i]
        for r in range(height):
            rs = r - dy
            for c in range(width):
                cs = c - dx
                inside = 0 <= rs < height and 0 <= cs < width
                for ch in range(n_c):
                    out[i, ch, r, c] = src[row, (rs * width + cs) * n_c + ch] * scale if inside else 0.0


def gather_images(src, idx, u, shift, scale, out):
    """out (B, C, H, W) <- images src[idx] (stored channels last) * scale, channels first; with
    shift > 0 each moved by a random whole-pixel shift in [-shift, shift] drawn from u (2B uniforms)."""
    if src.ndim != 2 or out.ndim != 4 or out.dtype != np.float32 or idx.dtype != np.int64 or \
            src.shape[1] != out.shape[1] * out.shape[2] * out.shape[3] or out.shape[0] != idx.shape[0]:
        raise ValueError(f"gather_images: need src (N, H*W*C), idx int64 (B,), out float32 (B, C, H, W); "
                         f"got {src.shape}, {idx.shape}, {out.shape}")
    if shift and (u.dtype != np.float64 or u.shape[0] < 2 * idx.shape[0]):
        raise ValueError(f"gather_images: need u float64 ({2 * idx.shape[0]},) to shift")
    _gather_images(src, idx, u, int(shift), np.float32(scale), out)
