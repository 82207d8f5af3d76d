""".npy and .npz files from outside (a data set, an input, a model, a checkpoint, a learned sample) opened
only after their headers are checked: an .npy header must promise no more bytes than the file (or zip
member) holds, no object arrays, and an .npz's members together at most `limit` bytes, so a few
compressed bytes cannot make numpy allocate gigabytes. Callers turn NpzError into their own one line."""

import io
import math
import os
import zipfile

import numpy as np

from .cgroup import machine_memory
from .fileio import open_regular


class NpzError(ValueError):
    """The file's headers promise what it does not hold; the message says what, in a few words."""


def default_limit():
    """Half this machine's memory (1 GiB where the OS does not tell): more cannot be loaded sensibly."""
    return (machine_memory() or 2 << 30) // 2


def _check_header(f, size, what):
    """f at the start of an .npy of `size` bytes: its header asks for no objects and at most `size` bytes."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(f)
    if dtype.hasobject:
        raise NpzError(f"{what} holds Python objects, which edgeff never loads")
    if math.prod(shape) * dtype.itemsize > size:
        raise NpzError(f"{what}'s header claims more than it holds")


def load_npy(path):
    """np.load of an .npy file (a regular one: fileio.open_regular) whose header passes the checks above."""
    with _open(path) as f:
        _check_header(f, os.fstat(f.fileno()).st_size, os.path.basename(path))
        f.seek(0)
        return np.load(f, allow_pickle=False)


def _open(path):
    try:
        return open_regular(path)
    except ValueError as exc:
        raise NpzError(str(exc)) from None


def open_npz(source, limit=None):
    """np.load(source) (a path to a regular file, or bytes) of an .npz whose members all pass the checks
    above and hold at most `limit` bytes together (default: default_limit()); use it as np.load's
    result, in a with."""
    limit = default_limit() if limit is None else limit
    f = io.BytesIO(source) if isinstance(source, bytes) else _open(source)
    try:
        total = 0
        with zipfile.ZipFile(f) as zf:
            for info in zf.infolist():
                total += info.file_size
                if total > limit:
                    raise NpzError(f"its arrays hold more than {limit} bytes")
                with zf.open(info) as member:
                    _check_header(member, info.file_size, info.filename)
        f.seek(0)
        npz = np.load(f, allow_pickle=False)
    except BaseException:
        f.close()
        raise
    npz.fid = f          # closed with the NpzFile (np.load leaves a file it was given open)
    return npz
