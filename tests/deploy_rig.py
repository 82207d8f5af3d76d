"""Test rig for bundles and deploys: the edgeff CLI with a long timeout, two trained runs, a bundle
with a real wheelhouse, an OpenSSH server on 127.0.0.1 (module-scoped fixtures: import them into a
test module), and helpers."""

import os

import pytest

from images import write_images_npz
from run_cli import edgeff as run_edgeff, ok
from sshd import Sshd


def edgeff(*args, timeout=900):
    return run_edgeff(*args, timeout=timeout)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_images_npz(tmp_path_factory.mktemp("data") / "images.npz")


def train(data, out, model="64-40-30"):
    ok(edgeff("train", "--dataset", data, "--model", model, "--epochs", "20", "--batch-size", "32", "--out", out,
              "--json"))
    return out


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    return train(data, d / "first"), train(data, d / "second", "64-24")


@pytest.fixture(scope="module")
def bundle(runs, tmp_path_factory):
    """A bundle with a real wheelhouse for this machine's architecture."""
    out = tmp_path_factory.mktemp("bundles") / "x86"
    return out, ok(edgeff("bundle", runs[0], "--target", "generic-x86_64", "-o", out, "--json"))


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = Sshd(str(tmp_path_factory.mktemp("sshd"))).start()
    yield server
    server.stop()


def over_ssh(server, root, *args):
    return edgeff("deploy", *args, "--to", f"ssh://device{root}", "--ssh-config", server.client_config)


def tree(root):
    """{path: bytes, or the target of a symlink} of everything under root."""
    return {p.relative_to(root).as_posix(): os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}
