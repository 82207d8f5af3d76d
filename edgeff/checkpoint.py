"""Crash-safe checkpoints: everything a run needs to continue bit for bit.

One .npz file: the arrays (weights, optimiser state of the layers in training,
data order) plus a JSON `meta` entry (config, schedule position, optimiser step
counts, RNG state, losses so far) and a sha256 over all of it. It is written to a
temp name, fsynced and renamed, so the previous checkpoint stays whole until the
new one is complete.
"""

import errno
import hashlib
import io
import json
import os

import numpy as np

from .errors import EdgeFFError, ModelError
from .fileio import atomic_write

FORMAT_VERSION = 1
NAME = "checkpoint.npz"


def _digest(arrays, meta_bytes):
    h = hashlib.sha256(meta_bytes)
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode() + str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save(path, arrays, meta):
    """Write arrays + meta atomically with a checksum. Disk errors become one clear line."""
    meta = dict(meta, format_version=FORMAT_VERSION)
    meta_bytes = json.dumps(meta, sort_keys=True).encode()
    payload = dict(arrays, meta=np.frombuffer(meta_bytes, np.uint8),
                   sha256=np.frombuffer(_digest(arrays, meta_bytes).encode(), np.uint8))

    def write(f):
        buf = io.BytesIO()
        np.savez(buf, **payload)
        f.write(buf.getvalue())
    try:
        atomic_write(path, write)
    except OSError as exc:
        why = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
        raise EdgeFFError(f"could not write checkpoint {path}: {why}; the previous checkpoint is kept") from None


def load(path):
    """(arrays, meta) of a checkpoint, checked; ModelError for anything unusable."""
    if not os.path.exists(path):
        raise ModelError(f"{path}: no checkpoint here; train with --checkpoint-every N --out DIR to write one")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta_bytes = arrays.pop("meta").tobytes()
        stored = arrays.pop("sha256").tobytes().decode()
        meta = json.loads(meta_bytes)
    except Exception as exc:
        raise ModelError(f"{path}: truncated or not a checkpoint ({type(exc).__name__}); "
                         "resume from an earlier copy or start again") from None
    if _digest(arrays, meta_bytes) != stored:
        raise ModelError(f"{path}: checksum mismatch, the checkpoint is corrupt; resume from an earlier copy or start again")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ModelError(f"{path}: checkpoint format {meta['format_version']} is newer than this edgeff reads "
                         f"({FORMAT_VERSION}); upgrade edgeff")
    return arrays, meta
