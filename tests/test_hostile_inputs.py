"""Inputs crafted to exhaust or stall the process rather than to be misread: a device or a pipe where a
file belongs, headers claiming gigabytes, decompression bombs, ONNX models that load and then misbehave.
Each is one error line (exit 2) in bounded time and memory, and the files around it stay as they were."""

import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeff.cgroup import machine_memory
from images import write_images_npz
from run_cli import edgeff, ok, one_line_error

FEATURES = 64


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data set, a tiny run with a checkpoint, its ONNX export, an input file) made once."""
    root = tmp_path_factory.mktemp("hostile")
    data = write_images_npz(root / "images.npz", n_train=200, n_test=60)
    run = root / "run"
    ok(edgeff("train", "--dataset", data, "--model", "64-16", "--epochs", "2", "--batch-size", "32", "--head-epochs",
              "1", "--checkpoint-every", "5", "--out", run, "--quiet", "--json"))
    ok(edgeff("export", run, "-o", root / "m.onnx", "--json"))
    np.save(root / "x.npy", np.zeros((3, FEATURES), np.float32))
    return root


def hostile(path, kind):
    """Put a FIFO, a symlink to /dev/zero or a directory where the file `path` was."""
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "/dev/zero":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()


# (file replaced, command given the copied root, fragment of the one line)
READERS = {
    "model.npz": (lambda r: ["eval", r / "run"], "not a regular file"),
    "checkpoint.npz": (lambda r: ["train", "--resume", r / "run"], "checkpoint"),
    "metrics.json": (lambda r: ["export", r / "run", "-o", r / "out.onnx"], "not a regular file"),
    "x.npy": (lambda r: ["infer", r / "run", r / "x.npy"], "x.npy"),
    "m.onnx": (lambda r: ["infer", r / "m.onnx", r / "x.npy"], "m.onnx"),
}


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "directory"])
@pytest.mark.parametrize("name", READERS)
def test_a_device_pipe_or_directory_in_place_of_a_file_is_one_line(trained, tmp_path, name, kind):
    """A FIFO would block the old readers forever and /dev/zero fill the memory: timeout 60 s."""
    root = tmp_path / "copy"
    shutil.copytree(trained, root, symlinks=True)
    target = next(p for p in [root / name, root / "run" / name] if p.exists())
    hostile(target, kind)
    command, fragment = READERS[name]
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    one_line_error(edgeff(*command(root), timeout=60), fragment)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before      # nothing written


def test_a_data_set_without_features_is_one_line(trained, tmp_path):
    z = np.zeros
    np.savez(tmp_path / "empty.npz", x_train=z((10, 0), np.float32), y_train=np.arange(10) % 2,
             x_test=z((4, 0), np.float32), y_test=np.arange(4) % 2)
    one_line_error(edgeff("eval", trained / "run", "--dataset", tmp_path / "empty.npz"), "x_train has shape (10, 0)",
                   "at least one feature")


def write_idx(path, dims, payload):
    path.write_bytes(bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + payload)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_an_idx_header_claiming_more_than_the_file_holds_is_refused_before_allocating(trained, tmp_path, gz):
    import gzip
    d = tmp_path / "idx"
    d.mkdir()
    # raw: 60 GB claimed by a 100-byte file (an allocation of 55.9 GiB before: MemoryError, exit 1); gzip: all
    # this machine's memory, more than half of it (allocated before: on a device, the same MemoryError)
    claim = [60000, 1000, 1000] if not gz else [machine_memory() >> 20, 1024, 1024]
    write_idx(d / "train-images-idx3-ubyte", claim, bytes(100))
    if gz:
        with open(d / "train-images-idx3-ubyte", "rb") as f, gzip.open(d / "train-images-idx3-ubyte.gz", "wb") as g:
            g.write(f.read())
        (d / "train-images-idx3-ubyte").unlink()
    write_idx(d / "train-labels-idx1-ubyte", [10], bytes(10))
    write_idx(d / "t10k-images-idx3-ubyte", [10, 8, 8], bytes(640))
    write_idx(d / "t10k-labels-idx1-ubyte", [10], bytes(10))
    one_line_error(edgeff("eval", trained / "run", "--dataset", d), "IDX header claims", "re-download it")


# ---- ONNX models that load, then misbehave when run ----

def one_node_model(path, node, out_type, out_shape, in_shape=("N", FEATURES), initializers=()):
    graph = helper.make_graph([node], "hostile", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("label", out_type, out_shape)], list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _shape(values):
    return numpy_helper.from_array(np.array(values, np.int64), "shape")


ONNX = {
    "fails when run": (lambda p: one_node_model(p, helper.make_node("Reshape", ["x", "shape"], ["label"]),
                                                TensorProto.FLOAT, None, initializers=[_shape([7, 1000])]),
                       "onnxruntime failed running it"),
    "float labels": (lambda p: one_node_model(p, helper.make_node("Identity", ["x"], ["label"]),
                                              TensorProto.FLOAT, ["N", FEATURES]), "not one class index per row"),
    "labels not one per row": (lambda p: one_node_model(
        p, helper.make_node("ArgMax", ["x"], ["label"], axis=0, keepdims=0), TensorProto.INT64, [FEATURES]),
        "not one class index per row"),
    "no features": (lambda p: one_node_model(p, helper.make_node("ArgMax", ["x"], ["label"], axis=1, keepdims=0),
                                             TensorProto.INT64, ["N"], in_shape=("N", 0)), "takes N rows of 0"),
    "a fixed batch of 10**7": (lambda p: one_node_model(
        p, helper.make_node("ArgMax", ["x"], ["label"], axis=1, keepdims=0), TensorProto.INT64, [10**7],
        in_shape=(10**7, FEATURES)), "at most 4096 rows fixed"),
}


def _negative_labels(path):
    """ArgMax minus 2**40: int64 labels below zero."""
    nodes = [helper.make_node("ArgMax", ["x"], ["a"], axis=1, keepdims=0), helper.make_node("Sub", ["a", "big"], ["label"])]
    graph = helper.make_graph(nodes, "hostile", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", FEATURES])],
                              [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"])],
                              [numpy_helper.from_array(np.array(1 << 40, np.int64), "big")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


ONNX["negative labels"] = (_negative_labels, "gave class -1099511627")


@pytest.mark.parametrize("case", ONNX)
def test_an_onnx_model_that_misbehaves_when_run_is_one_line(trained, tmp_path, case):
    make, fragment = ONNX[case]
    r = edgeff("infer", make(tmp_path / "m.onnx"), trained / "x.npy")
    one_line_error(r, fragment)
    assert "\x1b" not in r.stderr                    # onnxruntime's own coloured log stays quiet


def test_an_onnx_model_reading_weights_from_outside_itself_is_refused(trained, tmp_path):
    """External data resolves against the working directory (onnxruntime refuses only paths that climb out of
    it): a model could pull in a file it does not hold, here one beside its directory."""
    np.ones((FEATURES, 3), np.float32).tofile(tmp_path / "weights.bin")
    w = numpy_helper.from_array(np.zeros((FEATURES, 3), np.float32), "w")
    onnx.external_data_helper.set_external_data(w, "outside/weights.bin")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    nodes = [helper.make_node("MatMul", ["x", "w"], ["s"]), helper.make_node("ArgMax", ["s"], ["label"], axis=1,
                                                                              keepdims=0)]
    graph = helper.make_graph(nodes, "outside", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", FEATURES])],
                              [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"])], [w])
    (tmp_path / "models").mkdir()
    (tmp_path / "outside").mkdir()
    shutil.move(tmp_path / "weights.bin", tmp_path / "outside" / "weights.bin")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "models" / "m.onnx")
    r = edgeff("infer", tmp_path / "models" / "m.onnx", trained / "x.npy", cwd=tmp_path)
    one_line_error(r, "external data")


# ---- inputs whose float32 rows would be far larger than the file ----

PEAK = ("import sys\nfrom edgeff.cli import main\nfrom edgeff.process_memory import peak_rss_mib\n"
        "try:\n    code = main(sys.argv[1:])\nexcept SystemExit as exc:\n    code = exc.code\n"
        "print(f'peak {peak_rss_mib():.0f}', file=sys.stderr)\nsys.exit(code)\n")


def test_uint8_input_of_the_wrong_shape_is_refused_before_it_is_made_float32(trained, tmp_path):
    """256 MiB of pixels in a 256 KiB file: the old reader made them 1 GiB of float32 before checking the shape."""
    np.savez_compressed(tmp_path / "big.npz", x=np.zeros(1 << 28, np.uint8))
    r = subprocess.run([sys.executable, "-c", PEAK, "infer", str(trained / "run"), str(tmp_path / "big.npz")],
                       capture_output=True, text=True, timeout=300)
    *lines, peak = r.stderr.strip().splitlines()
    one_line_error(subprocess.CompletedProcess(r.args, r.returncode, r.stdout, "\n".join(lines)),
                   "does not hold rows of the 64 features")
    assert float(peak.split()[1]) < 256 + 512, peak    # the pixels and the runtime, no float32 copy (1024 MiB)


def test_a_png_too_large_to_be_an_input_is_refused_before_it_is_decoded(trained, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    Image.new("L", (3000, 3000)).save(tmp_path / "big.png")           # 9 M pixels in 9 KB
    one_line_error(edgeff("infer", trained / "run", tmp_path / "big.png"), "3000x3000", "4,194,304 pixels")


def test_a_learn_sample_too_large_as_float32_is_rejected_whole(trained, tmp_path):
    """16 MiB of uint8 pixels pass the 64 MiB sample cap as stored, but are 64 MiB + as float32 rows."""
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    (tmp_path / "src").mkdir()
    rows = (64 << 20) // (4 * FEATURES) + 1
    np.savez(tmp_path / "src" / "big.npz", x=np.zeros((rows, FEATURES), np.uint8), y=np.zeros(rows, np.int64))
    r = edgeff("learn", run, "--from", tmp_path / "src", "--once", "--json")
    assert ok(r)["rejected"] == 1 and ok(r)["samples"] == 0
    assert "big.npz" in r.stderr and "more than 64 MiB as float32" in r.stderr, r.stderr
