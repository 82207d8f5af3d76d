"""Files from disk are hostile: crafted checkpoints (with a valid checksum), tampered model.npz
metadata, ONNX metadata and bundles each get one line and exit 2, never a signal or a traceback,
and the files refused stay as they were."""

import io
import json
import os
import shutil
import tarfile

import numpy as np
import onnx
import pytest

from edgeff import checkpoint
from edgeff.deploy import trust
from edgeff.npzfile import NpzError, load_npy, open_npz
from data_files import lying_npy, write_lying_npz
from images import write_images_npz
from run_cli import edgeff, one_line_error


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny trained run whose checkpoint is mid-way through the FF phase (step 13 of 14)."""
    root = tmp_path_factory.mktemp("crafted")
    data = write_images_npz(root / "images.npz", n_train=200, n_test=60)
    out = root / "run"
    r = edgeff("train", "--dataset", data, "--model", "64-16-16", "--epochs", "2", "--batch-size", "32",
               "--head-epochs", "1", "--checkpoint-every", "13", "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    return out


def _copy(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


# ---- checkpoints: a recomputed checksum is no proof the contents are sane ----

def _first(o, value):
    o = o.copy()
    o[0] = value
    return o


CHECKPOINTS = [
    # (what, change(arrays, meta), fragment of the one line)
    ("order holds 10**12", lambda a, m: a.update(order=_first(a["order"], 10**12)), "not a permutation"),
    ("order holds -1", lambda a, m: a.update(order=_first(a["order"], -1)), "not a permutation"),
    ("order holds n_train", lambda a, m: a.update(order=_first(a["order"], len(a["order"]))), "not a permutation"),
    ("order repeats an index", lambda a, m: a.update(order=_first(a["order"], a["order"][1])), "not a permutation"),
    ("order one row short", lambda a, m: a.update(order=np.arange(len(a["order"]) - 1)), "has 199 rows"),
    ("order float64", lambda a, m: a.update(order=a["order"].astype(np.float64)), "'order' is float64"),
    ("order missing", lambda a, m: a.pop("order"), "no array 'order'"),
    ("epoch_totals missing", lambda a, m: a.pop("epoch_totals"), "no array 'epoch_totals'"),
    ("epoch_totals wrong length", lambda a, m: a.update(epoch_totals=np.zeros(5)), "loss totals"),
    ("optimiser state Inf", lambda a, m: a.update(opt1_w0=np.full_like(a["opt1_w0"], np.inf)), "NaN or Inf"),
    ("weights float64", lambda a, m: a.update(w0=a["w0"].astype(np.float64)), "does not fit this model: w0 is float64"),
    ("weights of another shape", lambda a, m: a.update(w1=a["w1"][:, :4]), "w1 is float32 (16, 4), the model needs float32 (16, 16)"),
    ("optimiser state missing", lambda a, m: a.pop("opt0_b1"), "opt0_b1 is missing"),
    ("other training data", lambda a, m: m["data"].update(n_train=100), "other training data"),
    ("position past the last phase", lambda a, m: m.update(position=[9, 0, 1]), "outside this run"),
    ("position past the last batch", lambda a, m: m.update(position=[0, 1, 10**9], epoch_count=10**9), "outside"),
    ("position not numbers", lambda a, m: m.update(position=["a", 0, 1]), "'position'"),
    ("steps disagree with position", lambda a, m: m.update(steps=1), "do not match"),
    ("epoch_count a string", lambda a, m: m.update(epoch_count="x"), "'epoch_count'"),
    ("history a dict", lambda a, m: m.update(history={"a": 1}), "'history'"),
    ("opt_t missing a layer", lambda a, m: m.update(opt_t={"0": 13}), "optimiser step counts"),
    ("opt_t zero", lambda a, m: m.update(opt_t={k: 0 for k in m["opt_t"]}), "'opt_t'"),
    ("rng not a generator state", lambda a, m: m.update(rng={"bit_generator": "PCG64", "state": "x"}), "'rng'"),
    ("rng missing", lambda a, m: m.pop("rng"), "no 'rng'"),
    ("rng state beyond 128 bits", lambda a, m: m["rng"]["state"].update(state=2**200), "'rng' is not a PCG64"),
    ("rng increment negative", lambda a, m: m["rng"]["state"].update(inc=-1), "'rng' is not a PCG64"),
    ("rng uinteger beyond 32 bits", lambda a, m: m["rng"].update(uinteger=2**70), "'rng' is not a PCG64"),
    ("rng has_uint32 beyond 64 bits", lambda a, m: m["rng"].update(has_uint32=2**70), "'rng' is not a PCG64"),
    ("opt_t beyond a float", lambda a, m: m.update(opt_t={k: 10**400 for k in m["opt_t"]}), "'opt_t'"),
    ("config missing", lambda a, m: m.pop("config"), "no 'config'"),
    ("config with an unknown key", lambda a, m: m["config"].update(out="/etc"), "unknown keys"),
    ("config epochs a string", lambda a, m: m["config"].update(epochs="x"), "'epochs'"),
    ("config widths not the weights'", lambda a, m: m["config"].update(model="64-8-16"), "w0 is float32 (64, 16), the model needs float32 (64, 8)"),
    ("every negative", lambda a, m: m.update(every=-1), "'every'"),
    ("limit_train a string", lambda a, m: m.update(limit_train="x"), "'limit_train'"),
    ("no data fingerprint", lambda a, m: m.pop("data"), "no 'data'"),
]


@pytest.mark.parametrize("what, change, fragment", CHECKPOINTS, ids=[c[0] for c in CHECKPOINTS])
def test_crafted_checkpoint_with_a_valid_checksum_is_refused(run, tmp_path, what, change, fragment):
    d = _copy(run, tmp_path)
    path = d / checkpoint.NAME
    arrays, meta = checkpoint.load(path)
    change(arrays, meta)
    checkpoint.save(path, arrays, meta)      # a valid checksum over the crafted contents
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    r = edgeff("train", "--resume", d)        # not --quiet: refused before the first progress line
    one_line_error(r, fragment)               # exit 2: never SIGSEGV (-11 / 139), never a traceback
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before


def test_the_untouched_checkpoint_still_resumes(run, tmp_path):
    d = _copy(run, tmp_path)
    arrays, meta = checkpoint.load(d / checkpoint.NAME)
    checkpoint.save(d / checkpoint.NAME, arrays, meta)    # load and save change nothing a resume needs
    r = edgeff("train", "--resume", d, "--quiet")
    assert r.returncode == 0, r.stderr


# ---- model.npz: every field typed, every array float32 of the right shape, config agrees ----

def _tamper_model(run_dir, change):
    path = run_dir / "model.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    change(arrays, meta)
    np.savez(path, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)


MODELS = [
    ("no num_classes", lambda a, m: m.pop("num_classes"), "no 'num_classes'"),
    ("no config", lambda a, m: m.pop("config"), "no 'config'"),
    ("num_classes a string", lambda a, m: m.update(num_classes="3"), "'num_classes' is '3'"),
    ("num_classes beyond the head", lambda a, m: m.update(num_classes=5), "linear head"),
    ("label_offset out of range", lambda a, m: m.update(label_offset=10**12), "do not fit"),
    ("label_value a list", lambda a, m: m.update(label_value=[1]), "'label_value'"),
    ("mean_goodness a string", lambda a, m: m.update(mean_goodness="yes"), "'mean_goodness'"),
    ("format_version a string", lambda a, m: m.update(format_version="x"), "'format_version'"),
    ("float64 bias", lambda a, m: a.update(b0=a["b0"].astype(np.float64)), "'b0' is float64"),
    ("float64 head bias", lambda a, m: a.update(head_b=a["head_b"].astype(np.float64)), "'head_b' is float64"),
    ("head of the wrong shape", lambda a, m: a.update(head_w=a["head_w"][:, :2]), "linear head"),
    ("head_w without head_b", lambda a, m: a.pop("head_b"), "no array 'head_b'"),
    ("a layer missing", lambda a, m: a.update(w2=a.pop("w1"), b2=a.pop("b1")), "no array 'w1'"),
    ("input scale a string", lambda a, m: m["input"].update(scale="x"), "'scale'"),
    ("label_names too few", lambda a, m: m["input"].update(label_names=["a"]), "a list of 3 names"),
    ("config widths not the weights'", lambda a, m: m["config"].update(model="64-32-16"), "--model 64-32-16"),
    ("config label value not the model's", lambda a, m: m["config"].update(label_value=3.0), "label value"),
    ("config goodness not the model's", lambda a, m: m["config"].update(goodness="mean"), "goodness"),
    ("config lr a string", lambda a, m: m["config"].update(lr="fast"), "'lr'"),
]


@pytest.mark.parametrize("what, change, fragment", MODELS, ids=[c[0] for c in MODELS])
def test_tampered_model_metadata_is_one_line(run, tmp_path, what, change, fragment):
    d = _copy(run, tmp_path)
    _tamper_model(d, change)
    one_line_error(edgeff("eval", d, "--classifier", "all"), "model.npz", fragment)


@pytest.mark.parametrize("content, fragment", [
    (b"{garbage", "not strict JSON"),
    (b"[1, 2]", "a JSON list, not an object"),
    (b'"x"', "a JSON str, not an object"),
    (b'{"test_error": NaN}', "NaN is not a JSON number"),
    (b"\xff\xfe{}", "not strict JSON"),
    (b"[" * 200_000, "nested deeper than the parser goes"),
    (b" " * (16 << 20) + b"{}", "longer than 16,777,216 bytes"),
], ids=["not JSON", "a list", "a string", "NaN", "not UTF-8", "nested deep", "too long"])
def test_a_damaged_metrics_json_is_one_line_and_nothing_is_written(run, tmp_path, content, fragment):
    """metrics.json is read as untrusted by every command that reads it (export, bundle, FFClassifier.load,
    federate); `edgeff export` stands for them."""
    d = _copy(run, tmp_path)
    (d / "metrics.json").write_bytes(content)
    out = tmp_path / "m.onnx"
    one_line_error(edgeff("export", d, "-o", out, "--parity-samples", "10"), "metrics.json", fragment,
                   "restore it or train the run again")
    assert not out.exists() and (d / "metrics.json").read_bytes() == content


# ---- ONNX metadata and infer inputs ----

@pytest.fixture(scope="module")
def onnx_model(run, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    r = edgeff("export", run, "-o", path, "--parity-samples", "10", "--quiet")
    assert r.returncode == 0, r.stderr
    return path


@pytest.mark.parametrize("key, value, fragment", [
    ("input", "{garbage", "metadata 'input' is not JSON"),
    ("input", "[1, 2]", "not a JSON object"),
    ("input", '{"scale": "x"}', "'scale'"),
    ("label_names", "[garbage", "metadata 'label_names' is not JSON"),
    ("label_names", '{"a": 1}', "'label_names'"),
    ("label_names", '["a"]', "a list of 3 names"),
    ("input", "[" * 200_000, "metadata 'input' is not JSON"),
    ("label_names", '["a", NaN, "c"]', "metadata 'label_names' is not JSON"),
])
def test_onnx_metadata_that_is_not_what_export_writes(onnx_model, tmp_path, key, value, fragment):
    model = onnx.load(onnx_model)
    [prop] = [p for p in model.metadata_props if p.key == key]
    prop.value = value
    onnx.save(model, tmp_path / "bad.onnx")
    np.save(tmp_path / "x.npy", np.zeros((2, 64), np.float32))
    one_line_error(edgeff("infer", tmp_path / "bad.onnx", tmp_path / "x.npy"), fragment)


def test_infer_input_beyond_float32_is_one_line_without_a_warning(run, tmp_path):
    np.save(tmp_path / "x.npy", np.full((1, 64), 1e300))
    one_line_error(edgeff("infer", run, tmp_path / "x.npy"), "beyond float32")   # no RuntimeWarning line first


# ---- bundles ----

@pytest.fixture(scope="module")
def bundle(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "b"
    r = edgeff("bundle", run, "--target", "generic-x86_64", "--no-wheels", "-o", out, "--quiet")
    assert r.returncode == 0, r.stderr
    return out


def _tar(directory, path, mode):
    with tarfile.open(path, mode) as tar:
        for name in sorted(os.listdir(directory)):
            tar.add(directory / name, name)
    return path


def test_a_tar_that_is_not_gzip_is_refused(bundle, tmp_path):
    r = edgeff("deploy", _tar(bundle, tmp_path / "b.tar.gz", "w"), "--to", f"file://{tmp_path / 'dev'}", "--quiet")
    one_line_error(r, "not a bundle directory or a gzip-compressed tar")
    assert not (tmp_path / "dev" / "current").exists()


def test_random_bytes_as_a_bundle_are_one_line(tmp_path):
    (tmp_path / "b.tar.gz").write_bytes(os.urandom(1000))
    one_line_error(edgeff("deploy", tmp_path / "b.tar.gz", "--to", f"file://{tmp_path / 'dev'}"), "gzip-compressed tar")


@pytest.mark.parametrize("key", ["arch", "target", "python"])
def test_a_manifest_without_a_field_deploy_reads_is_refused(bundle, tmp_path, key):
    d = tmp_path / "b"
    shutil.copytree(bundle, d)
    manifest = json.loads((d / trust.MANIFEST).read_text())
    del manifest[key]
    manifest["release"] = trust.release_id(manifest["files"])   # consistent with its file list
    (d / trust.MANIFEST).write_text(json.dumps(manifest))
    one_line_error(edgeff("deploy", d, "--to", f"file://{tmp_path / 'dev'}", "--quiet"), f"no '{key}'")


# ---- .npy and .npz headers that claim more than the file holds (a few hundred bytes claiming 4 TiB) ----

def test_npz_headers_are_checked_before_numpy_reads_them(tmp_path):
    good = io.BytesIO()
    np.savez(good, x=np.arange(6, dtype=np.float32), y=np.arange(3))
    with open_npz(good.getvalue()) as z:
        assert z["x"].tolist() == list(range(6)) and z["y"].tolist() == [0, 1, 2]
    with pytest.raises(NpzError, match="more than 40 bytes"):
        open_npz(good.getvalue(), limit=40)
    with pytest.raises(NpzError, match="x.npy's header claims more than it holds"):
        open_npz(write_lying_npz(tmp_path / "lie.npz"))
    objects = io.BytesIO()
    np.savez(objects, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(NpzError, match="Python objects"):
        open_npz(objects.getvalue())
    (tmp_path / "lie.npy").write_bytes(lying_npy())
    with pytest.raises(NpzError, match="lie.npy's header claims"):
        load_npy(tmp_path / "lie.npy")


def test_every_reader_refuses_a_lying_header_in_one_line_and_keeps_the_files(run, tmp_path):
    run = _copy(run, tmp_path)
    kept = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    (tmp_path / "x.npy").write_bytes(lying_npy())
    one_line_error(edgeff("infer", run, tmp_path / "x.npy"), "x.npy's header claims more than it holds")
    one_line_error(edgeff("infer", run, write_lying_npz(tmp_path / "x.npz", ["x"])), "header claims more")
    one_line_error(edgeff("train", "--dataset", write_lying_npz(tmp_path / "d.npz", ["x_train", "y_train", "x_test",
                                                                                    "y_test"]),
                          "--out", tmp_path / "new"), "header claims more")
    assert not (tmp_path / "new").exists()
    for name, fragment in (("checkpoint.npz", "not a checkpoint"), ("model.npz", "not a readable edgeff model")):
        write_lying_npz(run / name, ["meta", "w0"])
        r = edgeff("train", "--resume", run, "--quiet") if name == "checkpoint.npz" else edgeff("eval", run)
        one_line_error(r, fragment)
        (run / name).write_bytes(kept[name])
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == kept
