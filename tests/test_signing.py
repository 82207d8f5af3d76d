"""Signed bundles: ed25519 keys made on the host (cryptography), verified on the device by the
installer's own standard-library verifier, the first signed install pinning its key."""

import json
import os
import random
import shutil
import subprocess
import sys
import tarfile

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bundle_edit import rehash
from edgeff.deploy import ed25519, trust
from edgeff.deploy import signing
from edgeff.errors import DeployError
from images import write_images_npz
from ptyrelay import PtyRelay
from run_cli import edgeff, ok, one_line_error


def _crypto_verify(public, message, signature):
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
        return True
    except (InvalidSignature, ValueError):
        return False


def _flip_bit(data, rng):
    i = rng.randrange(len(data) * 8)
    return data[:i // 8] + bytes([data[i // 8] ^ (1 << i % 8)]) + data[i // 8 + 1:]


def test_ed25519_verify_agrees_with_cryptography():
    rng = random.Random(11)
    for _ in range(100):
        key = Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        message = rng.randbytes(rng.randrange(300))
        signature = key.sign(message)
        assert ed25519.ed25519_verify(public, message, signature)
        for public_, message_, signature_ in [(public, message, _flip_bit(signature, rng)),
                                              (public, _flip_bit(message + b"!", rng), signature),
                                              (_flip_bit(public, rng), message, signature),
                                              (public, message + b"\0", signature)]:
            assert ed25519.ed25519_verify(public_, message_, signature_) == _crypto_verify(public_, message_, signature_)
            assert not ed25519.ed25519_verify(public_, message_, signature_)
        s = int.from_bytes(signature[32:], "little") + ed25519._L       # the same S, not reduced mod L
        if s < 2 ** 256:
            malleated = signature[:32] + s.to_bytes(32, "little")
            assert not ed25519.ed25519_verify(public, message, malleated)
            assert not _crypto_verify(public, message, malleated)
    # RFC 8032, 7.1, test 1
    assert ed25519.ed25519_verify(
        bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"), b"",
        bytes.fromhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e3970"
                      "1cf9b46bd25bf5f0595bbe24655141438e7a100b"))
    assert not ed25519.ed25519_verify(b"\1" * 31, b"", bytes(64)) and not ed25519.ed25519_verify(bytes(32), b"", b"")


def test_keygen_writes_an_owner_only_key_and_never_overwrites(tmp_path):
    r = edgeff("keygen", "-o", tmp_path / "k")
    assert r.returncode == 0, r.stderr
    public = (tmp_path / "k.pub").read_text().strip()
    assert public in r.stdout and len(bytes.fromhex(public)) == 32
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    assert signing.public_hex(signing.load_key(tmp_path / "k")) == public
    before = (tmp_path / "k").read_bytes()
    one_line_error(edgeff("keygen", "-o", tmp_path / "k"), "never overwritten")
    assert (tmp_path / "k").read_bytes() == before
    one_line_error(edgeff("keygen", "-o", tmp_path / "no" / "k"), "cannot write")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("signing")
    data = write_images_npz(d / "images.npz")
    for name, model in (("first", "64-40-30"), ("second", "64-24")):
        ok(edgeff("train", "--dataset", data, "--model", model, "--epochs", "5", "--batch-size", "32",
                  "--out", d / name, "--json"))
    return d / "first", d / "second"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    for name in ("k1", "k2"):
        assert edgeff("keygen", "-o", d / name).returncode == 0
    return d / "k1", d / "k2"


def _public(key):
    return key.with_suffix(".pub").read_text().strip()


def test_bundle_sign_writes_a_signature_the_device_verifies(runs, keys, tmp_path):
    out = tmp_path / "b.tar.gz"
    manifest = ok(edgeff("bundle", runs[0], "--target", "generic-x86_64", "--no-wheels", "--sign", keys[0],
                         "-o", out, "--json"))
    with tarfile.open(out) as tar:
        tar.extractall(tmp_path / "b", filter="data")
    signed = json.loads((tmp_path / "b" / "manifest.sig").read_text())
    assert signed["public_key"] == _public(keys[0])
    assert trust.verify(str(tmp_path / "b"))["release"] == manifest["release"]
    assert trust.authenticate(str(tmp_path / "root"), str(tmp_path / "b")).hex() == _public(keys[0])
    one_line_error(edgeff("bundle", runs[0], "--target", "generic-x86_64", "--no-wheels", "--sign",
                          keys[0].with_suffix(".pub"), "-o", tmp_path / "c"), "not an unencrypted ed25519 private key")
    one_line_error(edgeff("bundle", runs[0], "--target", "generic-x86_64", "--no-wheels", "--sign",
                          tmp_path / "none", "-o", tmp_path / "c"), "--sign")
    one_line_error(edgeff("deploy", out, "--sign", keys[0], "--to", f"file://{tmp_path}/device"),
                   "--sign applies when deploying a run")
    assert not (tmp_path / "c").exists() and not (tmp_path / "device").exists()


def test_the_first_signed_install_pins_its_key_and_only_that_key_is_accepted_after(runs, keys, tmp_path):
    root = tmp_path / "device"
    first = ok(edgeff("deploy", runs[0], "--target", "generic-x86_64", "--sign", keys[0], "--no-smoke",
                      "--to", f"file://{root}", "--json", timeout=900))
    assert first["install"]["signed_by"] == _public(keys[0])
    assert (root / "trusted_key").read_text().strip() == _public(keys[0])
    current = os.readlink(root / "current")

    unsigned = tmp_path / "unsigned"
    ok(edgeff("bundle", runs[1], "--target", "generic-x86_64", "--no-wheels", "-o", unsigned, "--json"))
    other_key, tampered, garbled = tmp_path / "other-key", tmp_path / "tampered", tmp_path / "garbled"
    for copy in (other_key, tampered, garbled):
        shutil.copytree(unsigned, copy)
    signing.sign_bundle(other_key, signing.load_key(keys[1]))
    signing.sign_bundle(tampered, signing.load_key(keys[0]))
    (tampered / "sample_labels.json").write_text("[0]")     # changed after signing, manifest made consistent
    rehash(tampered)
    signing.sign_bundle(garbled, signing.load_key(keys[0]))
    (garbled / "manifest.sig").write_text('{"algorithm": "ed25519", "public_key": 7}')

    for bundle, says in [(unsigned, "not signed"), (other_key, f"signed by key {_public(keys[1])[:16]}"),
                         (tampered, "was changed after it was signed"), (garbled, "not an ed25519 signature file")]:
        one_line_error(edgeff("deploy", bundle, "--to", f"file://{root}"), says)
        release = json.loads((bundle / "manifest.json").read_text())["release"]
        assert not (root / "incoming" / release / "run").exists()      # refused before the files were sent
    assert (root / "trusted_key").read_text().strip() == _public(keys[0])
    assert os.readlink(root / "current") == current


def test_a_key_pinned_on_the_device_cannot_be_replaced_over_the_serial_line(keys, tmp_path):
    from edgeff.deploy.serial_link import SerialTransport
    root = tmp_path / "device"
    pin_cmd = [sys.executable, "-m", "edgeff.deploy.install", "trust", "--root", str(root), "--key"]
    pinned = json.loads(subprocess.run(pin_cmd + [str(keys[0].with_suffix(".pub"))], capture_output=True,
                                       text=True, check=True).stdout)
    assert pinned == {"trusted_key": _public(keys[0]), "pinned": "new"}
    again = subprocess.run(pin_cmd + [_public(keys[1])], capture_output=True, text=True)
    assert again.returncode == 1 and "already pins a key" in json.loads(again.stdout)["error"]

    relay = PtyRelay()
    agent = subprocess.Popen([sys.executable, "-m", "edgeff.cli", "agent", "serial", "--port", relay.agent_name,
                              "--root", root], stderr=subprocess.PIPE)
    try:
        hostile = keys[1].with_suffix(".pub")
        with SerialTransport(relay.host_name) as t:
            with pytest.raises(DeployError, match="trusted key is changed only on the device"):
                t.put(str(hostile), "trusted_key", trust.sha256_file(hostile))
            with pytest.raises(DeployError, match="trust"):
                t.call("trust", key_text=_public(keys[1]))
            assert t.call("status")["root"] == str(root)           # the agent is still serving
    finally:
        agent.kill()
        relay.close()
    assert (root / "trusted_key").read_text().strip() == _public(keys[0])


@pytest.mark.parametrize("name", ["manifest.json", "manifest.sig"])
@pytest.mark.parametrize("content", ["[" * 200000 + "]" * 200000, "\xff\xfe", " " * ((1 << 24) + 1)])
def test_a_crafted_manifest_or_signature_file_is_one_deploy_error(tmp_path, name, content):
    """Nested past the parser's depth, not UTF-8, or too long: refused as a DeployError, never a
    RecursionError or MemoryError escaping to the installer's caller."""
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "manifest.json").write_text('{"files": [], "release": "%s"}' % trust.release_id([]))
    (bundle / name).write_bytes(content.encode("latin-1"))
    with pytest.raises(DeployError, match=name):
        trust.verify(str(bundle))
        trust.authenticate(str(tmp_path / "root"), str(bundle))
