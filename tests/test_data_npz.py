"""Data sets from .npz files and validate() on Dataset objects: shapes, dtypes, labels, values, and
the one-line errors of bad ones."""

import warnings
from dataclasses import replace

import numpy as np
import pytest

from edgeff.data import DataError, Dataset, load_dataset, validate
from run_cli import edgeff, one_line_error

from data_files import isolated  # noqa: F401 (autouse)


# ---------------------------------------------------------------- .npz files

def save_npz(path, **over):
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.random((20, 6, 6)).astype(np.float32), y_train=np.arange(20) % 3,
                  x_test=rng.random((5, 6, 6)).astype(np.float32), y_test=np.arange(5) % 3)
    arrays.update(over)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return str(path)


def test_npz_images_vectors_and_dtypes(tmp_path):
    ds = load_dataset(save_npz(tmp_path / "a.npz"))
    assert ds.x_train.shape == (20, 36) and ds.x_train.dtype == np.float32 and ds.image_shape == (6, 6)
    assert ds.num_classes == 3 and ds.scale == 1.0 and ds.y_train.dtype == np.int32 and ds.name == "a.npz"
    u8 = np.arange(140, dtype=np.uint8).reshape(20, 7)
    ds = load_dataset(save_npz(tmp_path / "b.npz", x_train=u8, x_test=u8[:5]))
    assert ds.x_train.dtype == np.uint8 and ds.scale == 1 / 255 and ds.image_shape is None
    np.testing.assert_array_equal(ds.x_train, u8)
    rgb = np.zeros((20, 4, 4, 3), np.uint8)
    ds = load_dataset(save_npz(tmp_path / "c.npz", x_train=rgb, x_test=rgb[:5]))
    assert ds.x_train.shape == (20, 48) and ds.image_shape == (4, 4, 3)
    f64 = np.random.default_rng(1).random((20, 3))
    u64 = np.arange(20, dtype=np.uint64) % 2
    ds = load_dataset(save_npz(tmp_path / "d.npz", x_train=f64, x_test=f64[:5], y_train=u64))
    assert ds.x_train.dtype == np.float32 and np.allclose(ds.x_train, f64) and ds.num_classes == 3
    ds = load_dataset(save_npz(tmp_path / "e.npz", label_names=np.array(["cat", "dog", "cow", "hen"])))
    assert ds.num_classes == 4 and ds.label_names == ("cat", "dog", "cow", "hen")


@pytest.mark.parametrize("over, message", [
    (dict(x_test=None), "missing arrays \\['x_test'\\]"),
    (dict(x_train=np.zeros(20, np.float32)), "x_train has shape \\(20,\\); need \\(N, features\\)"),
    (dict(x_test=np.zeros((5, 7, 6), np.float32)), "x_train has 36 features per row but x_test has 42"),
    (dict(y_train=np.zeros(19, int)), "x_train has 20 rows but y_train has 19 labels"),
    (dict(y_train=np.full(20, 0.5)), "y_train has dtype float64; need integer labels"),
    (dict(y_test=np.array([0, 1, 2, -1, 0])), "y_test has labels -1..2, outside 0..2"),
    (dict(x_test=np.zeros((0, 6, 6), np.float32), y_test=np.zeros(0, int)), "the test set is empty"),
    (dict(x_train=np.full((20, 6, 6), np.nan, np.float32)), "x_train holds NaN or Inf \\(first in row 0\\)"),
    (dict(x_train=np.array([["a"] * 6] * 20)), "x_train has dtype <U1; need numbers"),
    (dict(y_train=np.zeros(20, int), y_test=np.zeros(5, int)), "needs at least 2 classes, found 1"),
    (dict(y_train=np.zeros((20, 3))), "y_train has shape \\(20, 3\\); need \\(N,\\) class indices"),
    (dict(y_test=np.array([0, 1, 2, 1, 1 << 40])), "a label is 1099511627776"),
    (dict(label_names=np.array(["a", "b"])), "y_train has labels 0..2, outside 0..1"),
    # mixed scales: uint8 is read as 0..255 pixels, float32 as it is
    (dict(x_train=np.zeros((20, 6, 6), np.uint8)), "x_train is uint8 but x_test is float32, so they would be scaled"),
    (dict(x_test=np.zeros((5, 6, 6), np.int64)), "x_train is float32 but x_test is int64"),
    (dict(x_test=np.full((5, 6, 6), 1e30, np.float32)), "x_test holds a value of size 1e\\+30; rows are normalised, "
                                                        "and with 36 features values above 7.69e\\+17 overflow"),
])
def test_npz_errors(tmp_path, over, message):
    with pytest.raises(DataError, match=f"(^|/)bad\\.npz: {message}"):
        load_dataset(save_npz(tmp_path / "bad.npz", **over))


def test_npz_value_beyond_float32_is_one_error_and_no_warning(tmp_path):
    x = np.random.default_rng(0).random((20, 6))
    x[3, 2] = 1e300                                  # a float64 that becomes Inf as float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match="x_train holds NaN or Inf \\(first in row 3\\)"):
            load_dataset(save_npz(tmp_path / "big.npz", x_train=x, x_test=x[:5]))


def test_npz_errors_leave_no_traceback_or_run(tmp_path):
    """Through the CLI: one line, exit 2, nothing written."""
    path = save_npz(tmp_path / "mixed.npz", x_train=np.zeros((20, 6, 6), np.uint8))
    one_line_error(edgeff("train", "--dataset", path, "--model", "36-8", "--out", tmp_path / "r"),
                   "x_train is uint8 but x_test is float32")
    assert not (tmp_path / "r").exists()


def test_npz_missing_or_not_npz(tmp_path):
    with pytest.raises(DataError, match="none.npz: no such file"):
        load_dataset(str(tmp_path / "none.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="junk.npz: not a readable .npz"):
        load_dataset(str(tmp_path / "junk.npz"))
    np.savez(tmp_path / "obj.npz", x_train=np.array([None, 1], dtype=object), y_train=[0], x_test=[0], y_test=[0])
    with pytest.raises(DataError, match="obj.npz: not a readable .npz"):
        load_dataset(str(tmp_path / "obj.npz"))


# ---------------------------------------------------------------- validate() on Dataset objects

def good_dataset():
    x = np.arange(24, dtype=np.float32).reshape(6, 4) / 24
    return Dataset("t", x, np.array([0, 1, 2, 0, 1, 2], np.int32), x[:3].copy(), np.array([0, 1, 2], np.int32),
                   3, 1.0, None, ("0", "1", "2"), "memory")


X = good_dataset().x_train


@pytest.mark.parametrize("change, message", [
    (dict(x_train=X.reshape(6, 2, 2)), "x_train has shape \\(6, 2, 2\\)"),
    (dict(x_test=X[:3, :3].copy()), "x_train has 4 features per row but x_test has 3"),
    (dict(y_train=np.zeros(5, np.int32)), "x_train has 6 rows but y_train has 5 labels"),
    (dict(x_test=X[:0], y_test=np.zeros(0, np.int32)), "the test set is empty"),
    (dict(y_train=np.zeros(6, np.float32)), "y_train has dtype float32; need integer labels"),
    (dict(y_test=np.array([0, -1, 2], np.int32)), "y_test has labels -1..2, outside 0..2"),
    (dict(y_test=np.array([0, 3, 2], np.int32)), "y_test has labels 0..3, outside 0..2"),
    (dict(x_train=np.where(np.arange(24).reshape(6, 4) == 13, np.inf, X).astype(np.float32)),
     "x_train holds NaN or Inf \\(first in row 3\\)"),
    (dict(x_test=np.full((3, 4), np.nan, np.float32)), "x_test holds NaN or Inf"),
    (dict(x_test=np.full((3, 4), -1e30, np.float32)), "x_test holds a value of size 1e\\+30"),
    (dict(x_train=np.full((6, 4), "a")), "x_train has dtype <U1; need numbers"),
    (dict(x_train=np.zeros((6, 4), object)), "x_train has dtype object; need numbers"),
    (dict(x_train=X.astype(np.float64)), "x_train must be C-contiguous uint8 or float32, got float64"),
    (dict(x_train=np.asfortranarray(X)), "x_train must be C-contiguous"),
    (dict(x_test=(X[:3] * 10).astype(np.uint8)), "x_train is float32 but x_test is uint8"),
    (dict(num_classes=1, label_names=("0",), y_train=np.zeros(6, np.int32), y_test=np.zeros(3, np.int32)),
     "needs at least 2 classes, found 1"),
    (dict(label_names=("a", "b")), "2 label names for 3 classes"),
])
def test_validate_errors(change, message):
    assert validate(good_dataset()) is not None
    with pytest.raises(DataError, match=f"^t: {message}"):
        validate(replace(good_dataset(), **change))
