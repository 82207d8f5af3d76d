"""Input files for `edgeff infer`: arrays and images read into float32 rows a model takes.

.npy, .npz (key x, x_test, or its only array), .pgm/.pnm (binary P5 or text P2, read
here), .png (with Pillow, if installed). uint8 values are pixels: multiplied by the
model's input scale; float values are taken as features already scaled.
"""

import math
import os

import numpy as np

from .errors import DataError
from .fileio import open_regular
from .npzfile import default_limit, load_npy, open_npz

NPZ_KEYS = ("x", "x_test", "images")
MAX_IMAGE_PIXELS = 1 << 22   # 2048 x 2048, far above any model's input; Pillow only warns from 89 M pixels


def read_input(path):
    """The array stored in path, as stored (uint8 pixels or floats)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such input file")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            return load_npy(path)
        if ext == ".npz":
            with open_npz(path) as z:
                keys = [k for k in NPZ_KEYS if k in z.files] or (z.files if len(z.files) == 1 else [])
                if not keys:
                    raise DataError(f"{path}: holds {', '.join(z.files) or 'no arrays'}; name the inputs "
                                    f"{' or '.join(NPZ_KEYS)}")
                return z[keys[0]]
        if ext in (".pgm", ".pnm"):
            return read_pgm(path)
        if ext == ".png":
            return _read_png(path)
    except DataError:
        raise
    except Exception as exc:  # numpy's and zipfile's many ways of saying "not this format"
        raise DataError(f"{path}: not a readable {ext[1:]} file ({type(exc).__name__}: {exc})") from None
    raise DataError(f"{path}: unknown input type {ext or '(no extension)'}; give .npy, .npz, .pgm or .png")


def read_pgm(path):
    """A binary (P5) or text (P2) PGM image as uint8 (H, W), or float32 in [0, 1] if maxval != 255."""
    with open_regular(path) as f:
        data = f.read()
    fields, pos = [], 0
    while len(fields) < 4:           # magic, width, height, maxval; '#' starts a comment
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.find(b"\n", pos) + 1 or len(data)
            continue
        end = pos
        while end < len(data) and not data[end:end + 1].isspace():
            end += 1
        if end == pos:
            raise DataError(f"{path}: truncated PGM header")
        fields.append(data[pos:end])
        pos = end
    magic, (w, h, maxval) = fields[0], (int(v) for v in fields[1:])
    if magic not in (b"P5", b"P2") or not 0 < maxval < 65536:
        raise DataError(f"{path}: not a grayscale PGM (magic {magic!r}, maxval {maxval})")
    if magic == b"P2":
        pixels = np.array(data[pos:].split()[:w * h], np.int64)
    else:
        dtype = np.uint8 if maxval < 256 else np.dtype(">u2")
        pixels = np.frombuffer(data[pos + 1:pos + 1 + w * h * np.dtype(dtype).itemsize], dtype)
    if pixels.size != w * h:
        raise DataError(f"{path}: truncated PGM: {pixels.size} of {w * h} pixels")
    pixels = pixels.reshape(h, w)
    return pixels.astype(np.uint8) if maxval == 255 else (pixels / maxval).astype(np.float32)


def _read_png(path):
    try:
        from PIL import Image
    except ImportError:
        raise DataError(f"{path}: reading PNG needs Pillow ('pip install pillow'); or give the image as "
                        ".pgm or .npy") from None
    with open_regular(path) as f, Image.open(f) as im:
        if im.width * im.height > MAX_IMAGE_PIXELS:       # the header is read; no pixel is decoded yet
            raise DataError(f"{path}: a {im.width}x{im.height} image, more than the {MAX_IMAGE_PIXELS:,} pixels "
                            "edgeff decodes; scale it to the size the model takes")
        return np.asarray(im.convert("L"))


def to_rows(arr, features, scale, path="input"):
    """float32 (N, features) from an array of rows, one image or a stack of images. Shape and size are
    checked before anything is converted: the float32 copy of uint8 pixels is 4x what the file held."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8 and arr.dtype.kind != "f":
        raise DataError(f"{path}: holds {arr.dtype} values; give uint8 pixels or float features")
    if not any(math.prod(arr.shape[arr.ndim - tail:]) == features   # rows, or images (H, W) / (H, W, C)
               for tail in range(1, min(arr.ndim, 3) + 1)):
        raise DataError(f"{path}: shape {arr.shape} does not hold rows of the {features} features the model takes")
    if arr.size == 0:
        raise DataError(f"{path}: holds no rows")
    if arr.size * 4 > default_limit():
        raise DataError(f"{path}: {arr.size // features:,} rows are more than half this machine's memory as "
                        "float32; label them in parts")
    if arr.dtype == np.uint8:
        rows = arr.astype(np.float32) * np.float32(scale)
    else:
        if not (np.isfinite(arr).all() and np.abs(arr).max() <= np.finfo(np.float32).max):
            raise DataError(f"{path}: holds NaN or Inf, or values beyond float32's range")
        rows = arr.astype(np.float32)
    return np.ascontiguousarray(rows.reshape(-1, features))
