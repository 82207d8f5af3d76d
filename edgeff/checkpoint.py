"""Crash-safe checkpoints: everything a run needs to continue bit for bit.

One .npz file: the arrays (weights, optimiser state of the layers in training,
data order) plus a JSON `meta` entry (config, schedule position, optimiser step
counts, RNG state, losses so far) and a sha256 over all of it. It is written to a
temp name, fsynced and renamed, so the previous checkpoint stays whole until the
new one is complete.
"""

import hashlib
import json
import os

import numpy as np

from .config import TrainConfig
from .errors import ModelError, UsageError
from .fields import array, field, is_count, is_kind
from .fileio import atomic_write, npz_writer, write_error
from .npzfile import open_npz

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
    meta_bytes = json.dumps(meta, sort_keys=True, allow_nan=False).encode()
    payload = dict(arrays, meta=np.frombuffer(meta_bytes, np.uint8),
                   sha256=np.frombuffer(_digest(arrays, meta_bytes).encode(), np.uint8))
    try:
        atomic_write(path, npz_writer(payload))
    except OSError as exc:
        raise write_error(path, exc, "the previous checkpoint is kept") from None


def load(path):
    """(arrays, meta) of a checkpoint, checked; ModelError for anything unusable."""
    if not os.path.exists(path):
        raise ModelError(f"{path}: no checkpoint here; train with --checkpoint-every N --out DIR to write one")
    arrays, meta = read(path)
    _check_fields(path, arrays, meta)
    return arrays, meta


def read(path):
    """(arrays, meta) of a checkpoint file whose checksum and format hold (what else meta holds is the
    writer's to check); ModelError otherwise."""
    try:
        with open_npz(path) as z:
            arrays = {k: z[k] for k in z.files}
        meta_bytes = arrays.pop("meta").tobytes()
        stored = arrays.pop("sha256").tobytes().decode()
        meta = json.loads(meta_bytes)
    except Exception as exc:
        raise ModelError(f"{path}: truncated or not a checkpoint ({type(exc).__name__}); "
                         "resume from an earlier copy or start again") from None
    if _digest(arrays, meta_bytes) != stored:
        raise ModelError(f"{path}: checksum mismatch, the checkpoint is corrupt; resume from an earlier copy or start again")
    if field(path, meta, "format_version", int) > FORMAT_VERSION:
        raise ModelError(f"{path}: checkpoint format {meta['format_version']} is newer than this edgeff reads "
                         f"({FORMAT_VERSION}); upgrade edgeff")
    return arrays, meta


def _check_fields(path, arrays, meta):
    """Types and ranges of everything a resume reads, before any of it reaches the trainer."""
    try:
        TrainConfig.from_dict(field(path, meta, "config", dict))
    except UsageError as exc:
        raise ModelError(f"{path}: its config is not valid ({exc}); the checkpoint is damaged") from None
    field(path, meta, "position", list, lambda p: len(p) == 3 and all(is_kind(v, int) and v >= 0 for v in p),
          "[phase, epoch, batch], three whole numbers 0 or more")
    field(path, meta, "steps", int, lambda v: v >= 1, "a whole number 1 or more")
    field(path, meta, "epoch_count", int, lambda v: v >= 1, "a whole number 1 or more")
    field(path, meta, "every", int, lambda v: v >= 1, "a whole number 1 or more")
    if meta.get("limit_train") is not None:
        field(path, meta, "limit_train", int, lambda v: v >= 1, "a whole number 1 or more")
    if meta.get("frozen_input") is not None:
        field(path, meta, "frozen_input", str, lambda v: v in ("cache", "cache-float16", "stream"),
              "'cache', 'cache-float16' or 'stream'")
    if meta.get("blas_threads") is not None:   # the BLAS thread count the run's sums were made with
        field(path, meta, "blas_threads", int, lambda v: 1 <= v <= 4096, "a whole number 1 to 4096")
    field(path, meta, "history", list, lambda h: all(isinstance(row, list) and all(is_kind(v, float) for v in row)
                                                     for row in h), "a list of lists of numbers")
    field(path, meta, "opt_t", dict, lambda t: all(is_count(v, 1) for v in t.values()),
          "optimiser step counts 1 to 2**53")
    field(path, meta, "data", dict)
    set_rng(path, meta, np.random.PCG64())
    order = array(path, arrays, "order", np.int64, ndim=1)
    if not np.array_equal(np.sort(order), np.arange(len(order))):
        raise ModelError(f"{path}: 'order' is not a permutation of the {len(order)} training rows; "
                         "the checkpoint is damaged")
    array(path, arrays, "epoch_totals", np.float64, ndim=1)
    for name, a in arrays.items():
        if a.dtype.kind != "f" and name != "order":
            raise ModelError(f"{path}: array '{name}' is {a.dtype}, not a float array; the checkpoint is damaged")
        array(path, arrays, name, a.dtype)      # finite


def set_rng(path, meta, bit_generator):
    """Set bit_generator (a PCG64) to the checkpoint's 'rng' state; ModelError if it is not one."""
    state = field(path, meta, "rng", dict)
    try:
        bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError):     # OverflowError: a number beyond its C type
        raise ModelError(f"{path}: 'rng' is not a PCG64 generator state; the checkpoint is damaged") from None


def check_resume(path, arrays, meta, trainer):
    """The checkpoint's position, counts and data order fit the trainer its config built."""
    phases, n = trainer.phases(), len(trainer.ds.y_train)
    batches = -(-n // trainer.cfg.batch_size)
    p, e, i = meta["position"]
    epochs = [trainer.cfg.head_epochs if layers == ["head"] else trainer.cfg.epochs for layers in phases]
    if p >= len(phases) or e >= epochs[p] or not 1 <= i <= batches or meta["epoch_count"] != i:
        raise ModelError(f"{path}: position {meta['position']} (after {meta['epoch_count']} batches) is outside "
                         f"this run's {len(phases)} phases of {epochs} epochs of {batches} batches; "
                         "the checkpoint is damaged")
    done = sum(epochs[:p]) + e
    if meta["steps"] != done * batches + i or len(meta["history"]) != done:
        raise ModelError(f"{path}: {meta['steps']} steps and {len(meta['history'])} epoch losses do not match "
                         f"position {meta['position']}; the checkpoint is damaged")
    if len(arrays["order"]) != n:
        raise ModelError(f"{path}: its data order has {len(arrays['order'])} rows but the training data has {n}; "
                         "resume with the same --dataset and --limit-train")
    if arrays["epoch_totals"].shape != (len(phases[p]),) or set(meta["opt_t"]) != {str(k) for k in phases[p]}:
        raise ModelError(f"{path}: its loss totals or optimiser step counts are not for the layers of phase {p} "
                         f"({phases[p]}); the checkpoint is damaged")
    if meta["data"] != trainer.data_fingerprint():
        raise ModelError(f"{path}: made on other training data (size, shape or labels differ); resume with the "
                         "same --dataset and --limit-train")
    for name, buf in trainer.layout.checkpoint_arrays(p).items():   # what the trainer will restore
        a = arrays.get(name)
        if a is None or a.dtype != buf.dtype or a.shape != buf.shape:
            got = "missing" if a is None else f"{a.dtype} {a.shape}"
            raise ModelError(f"{path}: checkpoint does not fit this model: {name} is {got}, the model needs "
                             f"{buf.dtype} {buf.shape}")
