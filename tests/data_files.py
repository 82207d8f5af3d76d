"""Test helpers for data sets: a tiny IDX writer, a generated IDX set, an autouse fixture keeping every
test away from the real user cache and $EDGEFF_DATA (import it into a test module), and .npy/.npz files
whose headers lie about their size."""

import gzip
import io
import os
import zipfile

import numpy as np
import pytest

from edgeff.data import IDX_FILES


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


def lying_npy(shape=(1 << 40,), dtype="<f4", data=b"\0" * 16):
    """The bytes of an .npy whose header claims `shape` of `dtype` but which holds only `data`."""
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": dtype, "fortran_order": False, "shape": shape})
    return f.getvalue() + data


def write_lying_npz(path, names=("x", "y")):
    """An .npz (deflated: a few hundred bytes) whose members' headers each claim 4 TiB of float32."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            zf.writestr(f"{name}.npy", lying_npy())
    return path
