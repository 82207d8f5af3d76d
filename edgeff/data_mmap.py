"""--data-mmap: a data set as a prepared copy on disk (x as the loader holds it, uint8 where exact),
memory-mapped, so the kernel keeps only the pages in use and can drop them again under a memory limit.

The copy is made once per source (its files' paths, sizes and times name it) under the user cache,
written atomically, and checked before every use: the source unchanged, every array file's sha256
as recorded. A copy that fails a check is made again."""

import hashlib
import json
import os

import numpy as np

from .data import DataError, Dataset, cache_dir, load_dataset, locate, source_files, validate
from .fields import field, is_kind
from .fileio import atomic_write_files, atomic_write_text, read_json, sha256_file, write_error

ARRAYS = ("x_train", "y_train", "x_test", "y_test")
META = "meta.json"


def source_identity(path):
    """What names a source's state: each file's absolute path, size and modification time."""
    return [[os.path.abspath(p), os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in source_files(path)]


def prepared_dir(name, identity):
    key = hashlib.sha256(json.dumps(identity, allow_nan=False).encode()).hexdigest()[:16]
    return os.path.join(cache_dir("prepared"), f"{os.path.basename(name)}-{key}")


def _open(directory, identity):
    """The prepared copy in `directory` as a memory-mapped Dataset, or None if it is missing, stale or damaged."""
    path = os.path.join(directory, META)
    try:
        meta = read_json(path)
        check = lambda key, kind, ok=None: field(path, meta, key, kind, ok, error=DataError)
        sha256 = check("sha256", dict, lambda d: all(isinstance(d.get(k), str) for k in ARRAYS))
        if check("identity", list) != identity or any(sha256_file(os.path.join(directory, f"{k}.npy")) != sha256[k]
                                                      for k in ARRAYS):
            return None
        num_classes = check("num_classes", int, lambda c: c >= 1)
        image_shape = meta.get("image_shape") and check("image_shape", list, lambda s: len(s) in (2, 3) and all(
            is_kind(d, int) and d >= 1 for d in s))
        names = check("label_names", list, lambda n: len(n) == num_classes and all(isinstance(x, str) for x in n))
        x_train, x_test = (np.load(os.path.join(directory, f"{k}.npy"), mmap_mode="c", allow_pickle=False)
                           .view(np.ndarray) for k in ("x_train", "x_test"))    # copy-on-write: writable, as loaded
        y_train, y_test = (np.load(os.path.join(directory, f"{k}.npy"), allow_pickle=False) for k in ("y_train", "y_test"))
        return validate(Dataset(check("name", str), x_train, y_train, x_test, y_test, num_classes,
                                check("scale", float, lambda v: v > 0), tuple(image_shape) if image_shape else None,
                                tuple(names), check("source", str)))
    except (OSError, ValueError):    # missing, unreadable, damaged or crafted (DataError is a ValueError): made again
        return None


def _write(directory, ds, identity):
    """The arrays, then (once they are complete) the record that vouches for them."""
    os.makedirs(directory, exist_ok=True)
    paths = {k: os.path.join(directory, f"{k}.npy") for k in ARRAYS}
    atomic_write_files({paths[k]: (lambda f, a=getattr(ds, k): np.save(f, a, allow_pickle=False)) for k in ARRAYS})
    meta = dict(identity=identity, name=ds.name, num_classes=ds.num_classes, scale=ds.scale,
                image_shape=ds.image_shape, label_names=list(ds.label_names), source=ds.source,
                sha256={k: sha256_file(p) for k, p in paths.items()})
    atomic_write_text(os.path.join(directory, META), json.dumps(meta, indent=1, allow_nan=False) + "\n")


def load_mapped(name_or_path, data_dir=None):
    """load_dataset's data set, memory-mapped from its prepared copy (made first if need be)."""
    name, path = locate(name_or_path, data_dir)
    identity = source_identity(path)
    directory = prepared_dir(name, identity)
    ds = _open(directory, identity)
    if ds is None:
        try:
            _write(directory, load_dataset(name_or_path, data_dir), identity)   # the loaded set is freed here
        except OSError as exc:
            raise write_error(directory, exc, "the data set was not prepared; run without --data-mmap") from None
        ds = _open(directory, identity)
    if ds is None:
        raise DataError(f"{directory}: the prepared copy just written does not read back; check the disk, "
                        "or run without --data-mmap")
    return ds

