"""Where edgeff writes: a place it cannot write is refused before any work (one line, exit 2), a
full disk gives one line and leaves no half-made run, bundle or model, and earlier files stay."""

import os
import subprocess

import pytest

from edgeff import cli
from images import write_images_npz
from run_cli import edgeff, one_line_error


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_images_npz(tmp_path_factory.mktemp("data") / "images.npz", n_train=100, n_test=40)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    r = edgeff("train", "--dataset", data, "--model", "64-8", "--epochs", "1", "--head-epochs", "1", "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    return out


def _train(data, out, *extra):
    # no --quiet: training would print its 'data:' and 'kernels ready' lines, so one line means it never began
    return edgeff("train", "--dataset", data, "--model", "64-8", "--epochs", "1", "--head-epochs", "1", "--out", out, *extra)


@pytest.fixture
def tmpfs(tmp_path):
    """mount(options) -> a fresh tmpfs (root only); unmounted after the test."""
    mounted = []

    def mount(options):
        path = tmp_path / f"fs{len(mounted)}"
        path.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path], capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()})")
        mounted.append(path)
        return path
    yield mount
    for path in mounted:
        subprocess.run(["umount", path], check=True)


def _fill(directory):
    """Write into directory until its file system is full to the last byte."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- refused before any work ----

def test_train_out_onto_an_existing_file(data, tmp_path):
    (tmp_path / "f").write_bytes(b"keep")
    one_line_error(_train(data, tmp_path / "f"), "exists and is not a directory")
    assert (tmp_path / "f").read_bytes() == b"keep"


def test_train_out_under_a_file(data, tmp_path):
    (tmp_path / "f").write_bytes(b"keep")
    one_line_error(_train(data, tmp_path / "f" / "run"), "cannot write there")


def test_train_out_under_proc_is_refused_before_training(data):
    one_line_error(_train(data, "/proc/self/edgeff-run"), "/proc/self/edgeff-run", "cannot write there")


def test_train_out_on_a_read_only_file_system(data, tmpfs):
    ro = tmpfs("ro,size=64k")
    one_line_error(_train(data, ro / "a" / "run"), "Read-only file system")


def test_export_o_checks(run, tmp_path):
    (tmp_path / "dir.onnx").mkdir()
    one_line_error(edgeff("export", run, "-o", tmp_path / "dir.onnx"), "is not a regular file")
    one_line_error(edgeff("export", run, "-o", tmp_path / "no" / "x.onnx"), "does not exist")
    one_line_error(edgeff("export", run, "-o", "/proc/self/x.onnx"), "cannot write there")
    os.mkfifo(tmp_path / "fifo.onnx")
    one_line_error(edgeff("export", run, "-o", tmp_path / "fifo.onnx"), "is not a regular file")


def test_bundle_o_checks(run, tmp_path):
    (tmp_path / "f").write_bytes(b"keep")
    one_line_error(edgeff("bundle", run, "--target", "generic-x86_64", "--no-wheels", "-o", tmp_path / "f" / "b"),
                   "exists and is not a directory")
    one_line_error(edgeff("bundle", run, "--target", "generic-x86_64", "--no-wheels", "-o", "/proc/self/b"),
                   "cannot write there")


# ---- a full disk ----

def test_train_on_a_full_disk_leaves_no_run_dir(data, tmpfs):
    full = tmpfs("size=256k")
    _fill(full)
    one_line_error(_train(data, full / "runs" / "new", "--quiet"), "the disk is full", "the run was not saved")
    assert os.listdir(full) == ["filler"]


def test_retrain_with_force_on_a_full_disk_keeps_the_old_run(run, data, tmpfs):
    full = tmpfs("size=512k")
    old = full / "run"
    old.mkdir()
    for p in run.iterdir():
        (old / p.name).write_bytes(p.read_bytes())
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    _fill(full)
    one_line_error(_train(data, old, "--force", "--quiet"), "the disk is full")
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before     # no temp files, the old run whole


def test_export_and_bundle_on_a_full_disk(run, tmpfs):
    full = tmpfs("size=256k")
    _fill(full)
    one_line_error(edgeff("export", run, "-o", full / "m.onnx", "--parity-samples", "5", "--quiet"), "the disk is full")
    one_line_error(edgeff("bundle", run, "--target", "generic-x86_64", "--no-wheels", "-o", full / "b", "--quiet"),
                   "the disk is full")
    one_line_error(edgeff("bundle", run, "--target", "generic-x86_64", "--no-wheels", "-o", full / "b.tar.gz",
                          "--quiet"), "the disk is full")
    assert os.listdir(full) == ["filler"]


# ---- the command line itself ----

def test_no_command_is_usage_on_stderr_and_exit_2():
    r = edgeff()
    one_line_error(r, "no command given", "usage: edgeff")
    assert r.stdout == ""


def test_an_unexpected_exception_is_one_line_asking_for_a_report(monkeypatch, capsys):
    from edgeff.commands import targets

    def broken(args):
        raise RuntimeError("boom")
    monkeypatch.setattr(targets, "run", broken)   # a bug stands in for any command's
    assert cli.main(["targets"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgeff: internal error: RuntimeError: boom") and "please report" in err[0]
