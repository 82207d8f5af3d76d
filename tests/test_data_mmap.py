"""--data-mmap: training reads a memory-mapped prepared copy of the data set, made once, checked on
every use, and gets bit for bit the weights of a run on the data in RAM."""

import json
import os

import numpy as np

from edgeff.budget import data_bytes, is_mapped
from edgeff.data_mmap import load_mapped, prepared_dir, source_identity
from edgeff.data import load_dataset
from run_cli import edgeff, ok


def digits(path, seed=0):
    rng = np.random.default_rng(seed)
    np.savez(path, x_train=rng.integers(0, 256, (400, 64), np.uint8), y_train=rng.integers(0, 4, 400),
             x_test=rng.integers(0, 256, (100, 64), np.uint8), y_test=rng.integers(0, 4, 100))
    return path


def test_training_on_the_mapped_copy_gives_the_same_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = digits(tmp_path / "d.npz")
    run = ["train", "--dataset", data, "--model", "64-32-32", "--epochs", "2", "--quiet", "--json"]
    in_ram = ok(edgeff(*run, "--out", tmp_path / "ram"))
    mapped = ok(edgeff(*run, "--data-mmap", "--out", tmp_path / "mapped"))
    again = ok(edgeff(*run, "--data-mmap", "--out", tmp_path / "again"))       # the copy made above, reused
    assert in_ram["test_error"] == mapped["test_error"] == again["test_error"]
    with np.load(tmp_path / "ram" / "model.npz") as a, np.load(tmp_path / "mapped" / "model.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files if k != "meta")
    plan = json.loads(edgeff("plan", "--dataset", data, "--model", "64-32-32", "--data-mmap", "--json").stdout)
    assert plan["data_bytes"] == 500 * 4                                      # the labels; the pixels are mapped


def test_the_copy_is_checked_and_remade_when_damaged_or_stale(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = str(digits(tmp_path / "d.npz"))
    ds = load_mapped(data)
    assert is_mapped(ds.x_train) and is_mapped(ds.x_test) and data_bytes(ds) == 500 * 4
    assert np.array_equal(ds.x_train, load_dataset(data).x_train) and ds.scale == 1 / 255
    copy = os.path.join(prepared_dir("d.npz", source_identity(data)), "x_train.npy")
    with open(copy, "r+b") as f:                                              # one pixel changed on disk
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    assert np.array_equal(load_mapped(data).x_train, load_dataset(data).x_train)   # refused, made again
    digits(data, seed=1)                                                      # the source changed
    os.utime(data, ns=(1, 1))
    assert np.array_equal(load_mapped(data).x_train, load_dataset(data).x_train)
    assert len(os.listdir(tmp_path / "cache" / "edgeff" / "prepared")) == 2


def test_a_crafted_record_of_the_copy_is_remade_not_trusted(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = str(digits(tmp_path / "d.npz"))
    load_mapped(data)
    record = os.path.join(prepared_dir("d.npz", source_identity(data)), "meta.json")
    with open(record) as f:
        good = json.load(f)
    for key, bad in (("num_classes", "4"), ("num_classes", 1), ("scale", None), ("scale", -1.0),
                     ("image_shape", 5), ("label_names", 3), ("name", 7), ("sha256", [1]), ("identity", {})):
        with open(record, "w") as f:
            json.dump(dict(good, **{key: bad}), f)
        ds = load_mapped(data)                                              # no traceback: made again
        assert (ds.num_classes, ds.scale, ds.label_names) == (4, 1 / 255, tuple(good["label_names"])), key
        with open(record) as f:
            assert json.load(f) == good, key
    for text in ("[" * 200_000, json.dumps(good).replace('"scale": ', '"scale": NaN, "was": ')):
        with open(record, "w") as f:                                        # too deep (a RecursionError once), NaN
            f.write(text)
        assert load_mapped(data).num_classes == 4
        with open(record) as f:
            assert json.load(f) == good
