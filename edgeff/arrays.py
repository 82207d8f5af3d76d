"""NumPy arrays given to the Python API (edgeff/estimator.py), checked: rows or images X and labels y
as the trainers take them, or one DataError line (a ValueError too) saying what is wrong and what to do."""

import math

import numpy as np

from .errors import DataError


def rows_of(X, what="X"):
    """(C-contiguous rows (N, features) of X, its image shape or None): uint8 stays uint8, other numbers
    become float32 (as edgeff's data sets hold them); one DataError line for anything else."""
    if hasattr(X, "tocsr"):
        raise DataError(f"{what} is a sparse matrix; edgeff takes dense arrays: pass {what}.toarray()")
    x = np.asarray(X)
    if x.dtype.kind == "c":
        raise DataError(f"{what} holds {x.dtype} numbers: Complex data not supported; give real numbers")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{what} holds {x.dtype} values; give numbers: uint8 pixels or float features")
    if x.ndim not in (2, 3, 4):
        raise DataError(f"{what} has shape {x.shape}; Reshape your data to rows (N, features) or images (N, H, W) "
                        f"or (N, H, W, C){f' (one row: {what}.reshape(1, -1))' if x.ndim == 1 else ''}")
    if len(x) == 0:
        raise DataError(f"{what} has shape {x.shape}: 0 sample(s); give at least one row")
    if math.prod(x.shape[1:]) == 0:
        raise DataError(f"{what} has 0 feature(s) (shape={x.shape}) while a minimum of 1 is required; "
                        "give rows of features")
    with np.errstate(over="ignore"):    # a value beyond float32 becomes Inf, named below
        rows = np.ascontiguousarray(x.reshape(len(x), -1), np.uint8 if x.dtype == np.uint8 else np.float32)
    if rows.dtype == np.float32:
        bad = ~np.isfinite(rows).all(axis=1)
        if bad.any():
            raise DataError(f"{what} holds NaN or Inf (first in row {int(np.argmax(bad))}); clean the data "
                            "(a value beyond float32's range becomes Inf)")
    return rows, tuple(x.shape[1:]) if x.ndim > 2 else None


def labels_of(y, n, what="y"):
    """y as a 1-D array of n labels, or one DataError line."""
    if y is None:
        raise DataError(f"{what} is None: FFClassifier requires y to be passed, but the target y is None; "
                        "give the class labels")
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{what} has shape {y.shape}; give one label per row, shape (N,) (a column? y.ravel(); "
                        "one-hot? y.argmax(axis=1))")
    if n is not None and len(y) != n:
        raise DataError(f"X has {n} rows but {what} has {len(y)} labels")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y))):
        raise DataError(f"{what} holds continuous values: Unknown label type: a classifier needs class labels "
                        "(whole numbers or strings)")
    if y.dtype.kind not in "biufUSO":
        raise DataError(f"{what} holds {y.dtype} values; give class labels (whole numbers or strings)")
    return y


def classes_of(y, n):
    """(sorted distinct labels of y, y as their indices int32), or one DataError line."""
    y = labels_of(y, n)
    try:
        classes, codes = np.unique(y, return_inverse=True)
    except TypeError:
        raise DataError("y mixes labels that do not sort (numbers and strings?); give labels of one kind") from None
    if n is not None and len(classes) < 2:
        raise DataError(f"y holds one class ({classes[0]!r}); a classifier needs at least 2 classes")
    return classes, codes.astype(np.int32)


def codes_of(y, n, classes):
    """y as indices into classes (int32), or one DataError line naming a label not among them."""
    y = labels_of(y, n)
    codes = np.searchsorted(classes, y).clip(0, len(classes) - 1)
    unknown = classes[codes] != y
    if unknown.any():
        raise DataError(f"y holds the label {y[np.argmax(unknown)]!r}, not one of the classes "
                        f"{classes.tolist()}; partial_fit learns the classes its first call names")
    return codes.astype(np.int32)
