"""Checked reads of values taken from files: model.npz, checkpoints, metrics.json, ONNX metadata.

A checksum in the same file proves integrity, not origin, so every field is checked
for type and range, and every array for dtype, shape and finiteness, before a kernel
sees it. A failed check raises `error` (ModelError by default) naming the file and the
field, in one line.
"""

import math

import numpy as np

from .errors import ModelError

KIND_NAMES = {int: "a whole number", float: "a finite number", bool: "true or false", str: "a string",
              dict: "a JSON object", list: "a JSON list"}
MAX_COUNT = 2**53     # a count read from a file (steps, samples, bytes): exact as a float, int64 sums far from overflow


def is_kind(value, kind):
    """isinstance for values parsed from JSON: bool is not an int, an int is a float, floats are finite."""
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return is_kind(value, int) or (isinstance(value, float) and math.isfinite(value))
    return isinstance(value, kind)


def is_count(value, low=0):
    """A whole number low..MAX_COUNT: a count a file may hold."""
    return is_kind(value, int) and low <= value <= MAX_COUNT


def field(source, d, key, kind, ok=None, want="", error=ModelError):
    """d[key], checked to be a `kind` for which ok(value) holds (`want` says what ok means)."""
    if not isinstance(d, dict):
        raise error(f"{source}: holds {type(d).__name__} where a JSON object is needed; it is damaged or not "
                    "written by edgeff")
    if key not in d:
        raise error(f"{source}: has no '{key}'; it is damaged or not written by edgeff")
    value = d[key]
    if not is_kind(value, kind) or (ok is not None and not ok(value)):
        wanted = want or KIND_NAMES[kind]
        raise error(f"{source}: '{key}' is {_show(value)}, not {wanted}; it is damaged or not written by edgeff")
    return float(value) if kind is float else value


def count(source, d, key):
    """d[key], checked to be a count 0 or more (is_count)."""
    return field(source, d, key, int, is_count, "a whole number 0 to 2**53")


def array(source, arrays, name, dtype, shape=None, ndim=None):
    """arrays[name], checked to be a finite `dtype` array of exactly `shape` (or of `ndim` dimensions)."""
    a = arrays.get(name)
    if a is None:
        raise ModelError(f"{source}: has no array '{name}'; it is damaged or not written by edgeff")
    if a.dtype != dtype or (shape is not None and a.shape != tuple(shape)) or (ndim is not None and a.ndim != ndim):
        want = _dims(shape) if shape is not None else f"{ndim}-D"
        raise ModelError(f"{source}: array '{name}' is {a.dtype} {_dims(a.shape)}, not {np.dtype(dtype)} {want}; "
                         "it is damaged or not written by edgeff")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ModelError(f"{source}: array '{name}' holds NaN or Inf; it is damaged, or the run diverged")
    return a


def _dims(shape):
    return "x".join(map(str, shape)) if shape else "scalar"


def _show(value):
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
