"""Signing bundles on the host: ed25519 keys made and used with the `cryptography` library
(pip install 'edgeff[sign]'), imported only when a key is made or used.

    KEYFILE        the private key, PEM (PKCS#8), mode 0600, never overwritten
    KEYFILE.pub    the public key, 64 hex digits: what a device pins (install.py trust --key)
    manifest.sig   beside a bundle's manifest.json: {"algorithm": "ed25519", "public_key": hex,
                   "signature": hex} over manifest.json's exact bytes

The device checks signatures with its own standard-library verifier (deploy/ed25519.py).
"""

import json
import os

from ..errors import DeployError
from ..fileio import atomic_write, atomic_write_text
from . import trust


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise DeployError("signing needs the cryptography library: pip install 'edgeff[sign]'") from None
    return serialization, ed25519


def public_hex(private_key):
    serialization, _ = _crypto()
    return private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def keygen(path):
    """Write a new private key to path (0600) and its public key to path.pub; returns the public key's hex."""
    serialization, ed25519 = _crypto()
    path = os.fspath(path)
    for existing in (path, path + ".pub"):
        if os.path.lexists(existing):
            raise DeployError(f"{existing} already exists; a key is never overwritten, choose another -o")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        atomic_write(path, lambda f: f.write(pem))        # a temp file made 0600, renamed into place
        atomic_write_text(path + ".pub", public_hex(key) + "\n")
    except OSError as exc:
        raise DeployError(f"cannot write {path}: {exc.strerror}; choose a writable place for -o") from None
    return public_hex(key)


def load_key(path):
    """The ed25519 private key in path, refused with one line if it is anything else."""
    serialization, ed25519 = _crypto()
    try:
        with open(path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(1 << 16), password=None)
    except OSError as exc:
        raise DeployError(f"--sign {path}: {exc.strerror}; give the private key 'edgeff keygen' wrote") from None
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise DeployError(f"--sign {path}: not an unencrypted ed25519 private key; make one with 'edgeff keygen -o KEYFILE'")
    return key


def sign_bundle(bundle_dir, key):
    """Write manifest.sig: the key's signature over manifest.json's bytes."""
    with open(os.path.join(bundle_dir, trust.MANIFEST), "rb") as f:
        signature = key.sign(f.read())
    atomic_write_text(os.path.join(bundle_dir, trust.SIGNATURE),
                      json.dumps({"algorithm": "ed25519", "public_key": public_hex(key), "signature": signature.hex()}, allow_nan=False))
