"""The cases tools/bad_inputs.py runs: per category, (name, make) pairs where make() builds the
bad input with the Fixture and returns the edgeff arguments that read it."""

import os
import shutil
import tarfile

import numpy as np

NO_META = object()   # a model_with change returning it drops the meta entry
CATEGORIES = ("model files", "checkpoints", "config.json", "infer inputs", "output paths", "ONNX files",
              "bundles/tars", "CLI options")


def _set(key, value):
    def change(arrays, meta):
        meta[key] = value
    return change


def _del(key):
    def change(arrays, meta):
        meta.pop(key, None)
    return change


def _array(key, value):
    def change(arrays, meta):
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value(arrays[key]) if callable(value) else value
    return change


def _config(key, value):
    def change(arrays, meta):
        meta["config"][key] = value
    return change


def _meta_bytes(data):
    return lambda arrays, meta: data


def model_cases(fx):
    ev = lambda change: ("eval", fx.model_with(change), "--classifier", "all")
    yield "truncated model.npz", lambda: ("eval", _truncated_model(fx))
    yield "model.npz is random bytes", lambda: ("infer", fx.file("model.npz", os.urandom(500)), fx.npy(np.zeros((1, 64), np.float32)))
    yield "meta not JSON", lambda: ev(_meta_bytes(b"{not json"))
    yield "meta not UTF-8", lambda: ev(_meta_bytes(b"\xff\xfe"))
    yield "meta a JSON list", lambda: ev(_meta_bytes(b"[1, 2]"))
    yield "meta missing", lambda: ev(_meta_bytes(NO_META))
    yield "no num_classes", lambda: ev(_del("num_classes"))
    yield "no config", lambda: ev(_del("config"))
    yield "no label_offset", lambda: ev(_del("label_offset"))
    yield "num_classes a string", lambda: ev(_set("num_classes", "3"))
    yield "num_classes 0", lambda: ev(_set("num_classes", 0))
    yield "num_classes 10**12", lambda: ev(_set("num_classes", 10**12))
    yield "num_classes disagrees with the head", lambda: ev(_set("num_classes", 5))
    yield "label_offset -5", lambda: ev(_set("label_offset", -5))
    yield "label_offset 10**12", lambda: ev(_set("label_offset", 10**12))
    yield "label_value NaN", lambda: ev(_set("label_value", float("nan")))
    yield "label_value a list", lambda: ev(_set("label_value", [1]))
    yield "mean_goodness a string", lambda: ev(_set("mean_goodness", "yes"))
    yield "format_version a string", lambda: ev(_set("format_version", "x"))
    yield "format_version 99", lambda: ev(_set("format_version", 99))
    yield "w0 float64", lambda: ev(_array("w0", lambda w: w.astype(np.float64)))
    yield "b0 float64", lambda: ev(_array("b0", lambda b: b.astype(np.float64)))
    yield "b1 wrong shape", lambda: ev(_array("b1", lambda b: b[:-1]))
    yield "w1 missing (w0, w2)", lambda: ev(lambda a, m: a.update(w2=a.pop("w1"), b2=a.pop("b1")))
    yield "no weights at all", lambda: ev(lambda a, m: [a.pop(k) for k in list(a) if k[0] in "wb"] and None)
    yield "w0 3-D", lambda: ev(_array("w0", lambda w: w[None]))
    yield "w1 holds NaN", lambda: ev(_array("w1", lambda w: np.full_like(w, np.nan)))
    yield "head_w wrong shape", lambda: ev(_array("head_w", lambda w: w[:, :2]))
    yield "head_b float64", lambda: ev(_array("head_b", lambda b: b.astype(np.float64)))
    yield "head_w without head_b", lambda: ev(_array("head_b", None))
    yield "w0 an int array", lambda: ev(_array("w0", lambda w: w.astype(np.int32)))
    yield "input info a string", lambda: ev(_set("input", "x"))
    yield "input scale a string", lambda: ("infer", fx.model_with(lambda a, m: m["input"].update(scale="x")),
                                           fx.npy(np.zeros((2, 8, 8), np.uint8)))
    yield "input label_names too short", lambda: ("infer", fx.model_with(lambda a, m: m["input"].update(label_names=["a"])),
                                                  fx.npy(np.zeros((2, 64), np.float32)))


def _truncated_model(fx):
    dst = fx.run_copy()
    path = os.path.join(dst, "model.npz")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
    return dst


def config_cases(fx):
    ev = lambda change: ("eval", fx.model_with(change))
    yield "config a list", lambda: ev(_set("config", [1]))
    yield "config with an unknown key", lambda: ev(_config("colour", "red"))
    yield "epochs a string", lambda: ev(_config("epochs", "x"))
    yield "lr a string", lambda: ev(_config("lr", "fast"))
    yield "batch_size a float", lambda: ev(_config("batch_size", 3.5))
    yield "model spec disagrees with the weights", lambda: ev(_config("model", "64-32-16"))
    yield "model spec not a spec", lambda: ev(_config("model", "abc"))
    yield "label_value disagrees with the model's", lambda: ev(_config("label_value", 3.0))
    yield "goodness disagrees with the model's", lambda: ev(_config("goodness", "mean"))
    yield "schedule unknown", lambda: ev(_config("schedule", "sometimes"))
    yield "dataset a number", lambda: ev(_config("dataset", 7))
    yield "lr_decay a string", lambda: ev(_config("lr_decay", "yes"))


def checkpoint_cases(fx):
    def resume(change):   # no --quiet: a refusal must come before the first progress line
        return ("train", "--resume", fx.checkpoint_with(change))
    order = lambda value: resume(_array("order", value))
    yield "order holds 10**12", lambda: order(lambda o: np.where(o == o[0], 10**12, o))
    yield "order holds -1", lambda: order(lambda o: np.where(o == o[0], -1, o))
    yield "order holds n_train", lambda: order(lambda o: np.where(o == o[0], len(o), o))
    yield "order repeats an index", lambda: order(lambda o: np.concatenate([o[:1], o[:-1]]))
    yield "order too short", lambda: order(lambda o: o[:-1])
    yield "order float64", lambda: order(lambda o: o.astype(np.float64))
    yield "order int32", lambda: order(lambda o: o.astype(np.int32))
    yield "order 2-D", lambda: order(lambda o: o[None])
    yield "order missing", lambda: order(None)
    yield "w0 missing", lambda: resume(_array("w0", None))
    yield "w0 float64", lambda: resume(_array("w0", lambda w: w.astype(np.float64)))
    yield "w0 holds NaN", lambda: resume(_array("w0", lambda w: np.full_like(w, np.nan)))
    yield "w1 of another shape", lambda: resume(_array("w1", lambda w: w[:, :4]))
    yield "optimiser state missing", lambda: resume(_array("opt0_b1", None))
    yield "made on other data", lambda: resume(lambda a, m: m["data"].update(n_train=100))
    yield "optimiser state holds Inf", lambda: resume(_array("opt1_w0", lambda w: np.full_like(w, np.inf)))
    yield "optimiser state wrong shape", lambda: resume(_array("opt0_b0", lambda b: b[:-1]))
    yield "epoch_totals missing", lambda: resume(_array("epoch_totals", None))
    yield "epoch_totals wrong shape", lambda: resume(_array("epoch_totals", lambda t: np.zeros(7)))
    yield "position too short", lambda: resume(_set("position", [0]))
    yield "position phase 99", lambda: resume(_set("position", [99, 0, 0]))
    yield "position epoch -1", lambda: resume(_set("position", [0, -1, 0]))
    yield "position batch 10**9", lambda: resume(_set("position", [0, 0, 10**9]))
    yield "position strings", lambda: resume(_set("position", ["a", "b", "c"]))
    yield "steps negative", lambda: resume(_set("steps", -3))
    yield "steps a string", lambda: resume(_set("steps", "many"))
    yield "history a dict", lambda: resume(_set("history", {"a": 1}))
    yield "history rows of strings", lambda: resume(_set("history", [["x"]]))
    yield "epoch_count -1", lambda: resume(_set("epoch_count", -1))
    yield "epoch_count a string", lambda: resume(_set("epoch_count", "x"))
    yield "opt_t missing a layer", lambda: resume(_set("opt_t", {}))
    yield "opt_t negative", lambda: resume(lambda a, m: m.update(opt_t={k: -1 for k in m["opt_t"]}))
    yield "opt_t a list", lambda: resume(_set("opt_t", [1, 2]))
    yield "rng garbage", lambda: resume(_set("rng", {"bit_generator": "PCG64", "state": "x"}))
    yield "rng another generator", lambda: resume(_set("rng", {"bit_generator": "MT19937"}))
    yield "rng missing", lambda: resume(_del("rng"))
    yield "data fingerprint missing", lambda: resume(_del("data"))
    yield "config missing", lambda: resume(_del("config"))
    yield "config a string", lambda: resume(_set("config", "x"))
    yield "config with an unknown key", lambda: resume(_config("out", "/etc"))
    yield "config epochs a string", lambda: resume(_config("epochs", "x"))
    yield "config model disagrees with the weights", lambda: resume(_config("model", "64-8-16"))
    yield "every a string", lambda: resume(_set("every", "x"))
    yield "every negative", lambda: resume(_set("every", -1))
    yield "limit_train a string", lambda: resume(_set("limit_train", "x"))
    yield "limit_train 0", lambda: resume(_set("limit_train", 0))
    yield "checksum mismatch", lambda: ("train", "--resume", _flipped_checkpoint(fx), "--quiet")
    yield "valid checksum, no meta keys", lambda: resume(lambda a, m: {"format_version": 1})


def _flipped_checkpoint(fx):
    dst = fx.run_copy(with_checkpoint=True)
    path = os.path.join(dst, "checkpoint.npz")
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    return dst


def infer_cases(fx):
    infer = lambda path: ("infer", fx.run, path)
    yield "missing input file", lambda: infer(os.path.join(fx.root, "nope.npy"))
    yield "input is a directory", lambda: infer(fx.root)
    yield "unknown extension", lambda: infer(fx.file("x.txt", b"1 2 3"))
    yield "npy of random bytes", lambda: infer(fx.file("x.npy", os.urandom(100)))
    yield "npy of objects (pickle)", lambda: infer(fx.npy(np.array([{"a": 1}], dtype=object)))
    yield "npy float64 1e300", lambda: infer(fx.npy(np.full((1, 64), 1e300)))
    yield "npy holding NaN", lambda: infer(fx.npy(np.full((1, 64), np.nan, np.float32)))
    yield "npy int64", lambda: infer(fx.npy(np.zeros((1, 64), np.int64)))
    yield "npy complex", lambda: infer(fx.npy(np.zeros((1, 64), np.complex64)))
    yield "npy wrong width", lambda: infer(fx.npy(np.zeros((2, 63), np.float32)))
    yield "npy no rows", lambda: infer(fx.npy(np.zeros((0, 64), np.float32)))
    yield "npy 0-d", lambda: infer(fx.npy(np.float32(1)))
    yield "npz without x", lambda: infer(_npz(fx, a=np.zeros(3), b=np.zeros(3)))
    yield "pgm bad header", lambda: infer(fx.file("x.pgm", b"P5 8 eight 255\n" + bytes(64)))
    yield "pgm truncated", lambda: infer(fx.file("x.pgm", b"P5 8 8 255\n" + bytes(10)))
    yield "pgm 10**9 wide", lambda: infer(fx.file("x.pgm", b"P2 1000000000 1000000000 255\n1 2 3"))
    yield "pgm maxval 0", lambda: infer(fx.file("x.pgm", b"P5 8 8 0\n" + bytes(64)))
    yield "png that is not a png", lambda: infer(fx.file("x.png", b"\x89PNG garbage"))


def _npz(fx, **arrays):
    dst = fx.path("x.npz")
    np.savez(dst, **arrays)
    return dst


def output_cases(fx):
    readonly, full = fx.mount("readonly", "ro,size=64k") or _readonly_dir(fx), fx.mount("full", "size=256k")
    if full:
        _fill(full)
    a_file = fx.file("a-file", b"x")
    train = lambda out: ("train", "--dataset", fx.data, "--model", "64-8", "--epochs", "1", "--head-epochs", "1",
                         "--limit-train", "50", "--quiet", "--out", out)
    export = lambda out: ("export", fx.run, "-o", out, "--parity-samples", "5", "--quiet")
    bundle = lambda out: ("bundle", fx.run, "--target", "generic-x86_64", "--no-wheels", "--quiet", "-o", out)
    for name, make, suffix in (("train --out", train, ""), ("export -o", export, ".onnx"), ("bundle -o", bundle, "")):
        yield f"{name} under a file", lambda make=make, s=suffix: make(os.path.join(a_file, "x" + s))
        yield f"{name} in a read-only directory", lambda make=make, s=suffix: make(os.path.join(readonly, os.path.basename(fx.path("x" + s))))
        yield f"{name} under /proc", lambda make=make, s=suffix: make("/proc/self/x" + s)
        yield f"{name} onto a FIFO", lambda make=make, s=suffix: make(_fifo(fx, "fifo" + s))
        if full:
            yield f"{name} onto a full disk", lambda make=make, s=suffix: make(os.path.join(full, os.path.basename(fx.path("x" + s))))
    yield "train --out onto an existing file", lambda: train(fx.file("exists", b"x"))
    yield "train --out onto /dev/full", lambda: train("/dev/full")
    yield "bundle -o onto an existing file", lambda: bundle(fx.file("exists", b"x"))
    yield "export -o onto a directory", lambda: export(_mkdir(fx, "dir.onnx"))
    yield "export -o in a missing directory", lambda: export(os.path.join(fx.path("no"), "such", "x.onnx"))


def _readonly_dir(fx):
    """Without mount: a directory without write permission (which root ignores)."""
    path = _mkdir(fx, "readonly")
    os.chmod(path, 0o555)
    return path


def _fill(directory):
    """Fill the file system holding directory to the last byte."""
    fd = os.open(os.path.join(directory, "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError:
        pass
    finally:
        os.close(fd)


def _fifo(fx, name):
    path = fx.path(name)
    os.mkfifo(path)
    return path


def _mkdir(fx, name):
    path = fx.path(name)
    os.makedirs(path)
    return path


def onnx_cases(fx):
    infer = lambda path: ("infer", path, fx.npy(np.zeros((2, 64), np.float32)))
    yield "random bytes", lambda: infer(fx.file("x.onnx", os.urandom(300)))
    yield "empty file", lambda: infer(fx.file("x.onnx", b""))
    yield "metadata 'input' not JSON", lambda: infer(fx.onnx_with(input="{garbage"))
    yield "metadata 'input' a JSON list", lambda: infer(fx.onnx_with(input="[1, 2]"))
    yield "metadata 'input' scale a string", lambda: infer(fx.onnx_with(input='{"scale": "x"}'))
    yield "metadata 'label_names' not JSON", lambda: infer(fx.onnx_with(label_names="[garbage"))
    yield "metadata 'label_names' a dict", lambda: infer(fx.onnx_with(label_names='{"a": 1}'))
    yield "metadata 'label_names' too short", lambda: infer(fx.onnx_with(label_names='["a"]'))
    yield "directory named x.onnx", lambda: infer(_mkdir(fx, "x.onnx"))


def bundle_cases(fx):
    deploy = lambda source: ("deploy", source, "--to", "file://" + fx.path("device"), "--no-smoke", "--quiet")
    yield "tar that is not gzip", lambda: deploy(fx.tar_of(fx.bundle, "w", "b.tar.gz"))
    yield "bzip2 tar", lambda: deploy(fx.tar_of(fx.bundle, "w:bz2", "b.tar.gz"))
    yield "random bytes .tar.gz", lambda: deploy(fx.file("b.tar.gz", os.urandom(1000)))
    yield "truncated .tar.gz", lambda: deploy(_truncated(fx, fx.tar_of(fx.bundle, "w:gz", "b.tar.gz")))
    yield "tar with ../ entry", lambda: deploy(fx.tar_of(fx.bundle, "w:gz", "b.tar.gz", [_member("../evil", 1)]))
    yield "tar with absolute entry", lambda: deploy(fx.tar_of(fx.bundle, "w:gz", "b.tar.gz", [_member("/tmp/evil", 1)]))
    yield "tar with a symlink", lambda: deploy(fx.tar_of(fx.bundle, "w:gz", "b.tar.gz", [_member("link", 0, tarfile.SYMTYPE)]))
    yield "manifest without arch", lambda: deploy(fx.bundle_with_manifest(lambda m: m.pop("arch")))
    yield "manifest arch a number", lambda: deploy(fx.bundle_with_manifest(lambda m: m.update(arch=7)))
    yield "manifest without target", lambda: deploy(fx.bundle_with_manifest(lambda m: m.pop("target")))
    yield "manifest without python", lambda: deploy(fx.bundle_with_manifest(lambda m: m.pop("python")))
    yield "manifest file size a string", lambda: deploy(fx.bundle_with_manifest(lambda m: m["files"][0].update(size="x")))
    yield "manifest not JSON", lambda: deploy(_bundle_file(fx, "manifest.json", b"{nope"))
    yield "bundle file changed", lambda: deploy(_bundle_file(fx, "sample.npy", b"x"))
    yield "bundle dir without manifest", lambda: deploy(_mkdir(fx, "empty-bundle"))


def _member(name, size, kind=tarfile.REGTYPE):
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    if kind == tarfile.SYMTYPE:
        info.linkname, info.size = "/etc/passwd", 0
    return info, b"x" * info.size


def _truncated(fx, path):
    with open(path, "rb") as f:
        data = f.read()
    return fx.file("t.tar.gz", data[:len(data) // 2])


def _bundle_file(fx, name, data):
    dst = fx.path("bundle")
    shutil.copytree(fx.bundle, dst)
    with open(os.path.join(dst, name), "wb") as f:
        f.write(data)
    return dst


def option_cases(fx):
    yield "no command", lambda: ()
    yield "unknown command", lambda: ("frobnicate",)
    yield "unknown option", lambda: ("train", "--bogus")
    yield "--epochs not a number", lambda: ("train", "--epochs", "x")
    yield "--limit-train 0", lambda: ("train", "--dataset", fx.data, "--model", "64-8", "--limit-train", "0", "--out", fx.path("r"))
    yield "--checkpoint-every -1", lambda: ("train", "--dataset", fx.data, "--model", "64-8", "--checkpoint-every", "-1", "--out", fx.path("r"))
    yield "--resume a directory without a checkpoint", lambda: ("train", "--resume", fx.run_copy())
    yield "--resume with another --out", lambda: ("train", "--resume", fx.run_copy(True), "--out", fx.path("r"))
    yield "eval of a missing directory", lambda: ("eval", os.path.join(fx.root, "nope"))
    yield "infer of a missing model", lambda: ("infer", os.path.join(fx.root, "nope"), fx.data)
    yield "export without .onnx", lambda: ("export", fx.run, "-o", fx.path("x.bin"))
    yield "export --opset 999", lambda: ("export", fx.run, "-o", fx.path("x.onnx"), "--opset", "999")
    yield "export --batch 0", lambda: ("export", fx.run, "-o", fx.path("x.onnx"), "--batch", "0")
    yield "bundle --target unknown", lambda: ("bundle", fx.run, "--target", "toaster", "-o", fx.path("b"))
    yield "bundle --python-version 3.9", lambda: ("bundle", fx.run, "--target", "rpi5", "--python-version", "3.9",
                                                 "-o", fx.path("b"))
    yield "bundle --abi of another Python", lambda: ("bundle", fx.run, "--target", "rpi5", "--python-version", "3.12",
                                                    "--abi", "cp313", "-o", fx.path("b"))
    yield "deploy to a bad URL", lambda: ("deploy", fx.bundle, "--to", "gopher://x")
    yield "deploy --keep 0", lambda: ("deploy", fx.bundle, "--to", "file://" + fx.path("d"), "--keep", "0")
    yield "plan --model nonsense", lambda: ("plan", "--model", "x-y")
    yield "profile --target unknown", lambda: ("profile", "--target", "toaster")
    yield "eval --dataset missing", lambda: ("eval", fx.run, "--dataset", os.path.join(fx.root, "nope.npz"))


SOURCES = {"model files": model_cases, "checkpoints": checkpoint_cases, "config.json": config_cases,
           "infer inputs": infer_cases, "output paths": output_cases, "ONNX files": onnx_cases,
           "bundles/tars": bundle_cases, "CLI options": option_cases}
