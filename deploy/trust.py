"""What the device checks before it trusts anything a host sends: paths, release ids, the
manifest and every file's sha256, and the bundle's signature against the pinned key.

Standard library only: it runs with the device's system python3 (see install.py).

    ROOT/trusted_key     the ed25519 public key bundles must be signed with, once pinned
    manifest.sig         beside manifest.json: {"algorithm": "ed25519", "public_key": hex,
                         "signature": hex} over manifest.json's exact bytes

The first signed install pins its key (unless `install.py trust` pinned one before); from then
on every bundle must be signed by that key. Nothing a deploy sends can replace the pinned key.
"""

import hashlib
import json
import os
import re

from .ed25519 import ed25519_verify

try:
    from edgeff.errors import DeployError
except ImportError:  # streamed to a device's python3 (ssh://), where edgeff is not installed
    class DeployError(Exception):
        pass

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
TRUSTED_KEY = "trusted_key"
INSTALLED = ".installed"
RELEASE_ID = re.compile(r"[0-9a-f]{16}")    # what release_id() makes
MAX_JSON = 1 << 24     # bytes: a manifest of many thousand files fits; anything longer is not a bundle's


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def release_id(files):
    """The release name: a hash of the bundle's file list (path, sha256), so equal bundles share it."""
    listing = "".join(f"{f['path']}\0{f['sha256']}\n" for f in sorted(files, key=lambda f: f["path"]))
    return hashlib.sha256(listing.encode()).hexdigest()[:16]


def safe_path(root, rel):
    """root/rel, refused if rel is not a plain relative path ('..', '.', empty parts, absolute)
    or resolves through a symlink to somewhere outside root."""
    parts = rel.split("/") if isinstance(rel, str) else [""]
    if not isinstance(rel, str) or rel.startswith("/") or "\\" in rel or "\0" in rel or any(p in ("", ".", "..") for p in parts):
        raise DeployError(f"refused path {rel!r}: paths must be relative, with no '..', '.' or empty parts")
    path = os.path.join(root, *parts)
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
        raise DeployError(f"refused path {rel!r}: it leads outside {root} through a symlink")
    return path


def release_path(root, tree, release):
    """ROOT/tree/release ("incoming" or "releases"), refused unless release is a release id."""
    if not isinstance(release, str) or not RELEASE_ID.fullmatch(release):
        raise DeployError(f"refused release {release!r}: a release id is 16 lowercase hex digits "
                          "(the 'release' of the bundle's manifest)")
    return safe_path(root, f"{tree}/{release}")


def release_manifest(release_dir, release):
    """The manifest in release_dir, refused unless it is the one of `release`."""
    manifest = read_manifest(release_dir)
    if manifest["release"] != release:
        raise DeployError(f"{release_dir}: its {MANIFEST} is the one of release {manifest['release']}; deploy again")
    return manifest


def upload_path(root, rel):
    """root/rel for a file a host sends: what safe_path allows, except the pinned key, which
    nothing a host sends may replace."""
    path = safe_path(root, rel)
    if os.path.realpath(path) == os.path.realpath(os.path.join(root, TRUSTED_KEY)):
        raise DeployError(f"refused path {rel!r}: the trusted key is changed only on the device itself")
    return path


def read_json(path):
    """The JSON value in path, read as untrusted: ValueError for a file that is longer than
    MAX_JSON bytes, not UTF-8, not JSON, or nested deeper than the parser goes."""
    with open(path, "rb") as f:
        data = f.read(MAX_JSON + 1)
    if len(data) > MAX_JSON:
        raise ValueError(f"{path} is longer than {MAX_JSON} bytes")
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError(f"{path} is nested too deeply") from None


def read_manifest(bundle_dir):
    try:
        manifest = read_json(os.path.join(bundle_dir, MANIFEST))
        files = manifest["files"]
        assert all(isinstance(f["path"], str) and isinstance(f["sha256"], str) for f in files)
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as exc:
        raise DeployError(f"{bundle_dir}: no readable {MANIFEST} ({type(exc).__name__}); rebuild the bundle") from None
    if manifest.get("release") != release_id(files):
        raise DeployError(f"{bundle_dir}: {MANIFEST} does not match its own file list; rebuild the bundle")
    return manifest


def verify(bundle_dir, manifest=None):
    """Every file the manifest lists is there with its sha256; nothing else but the manifest and its signature."""
    manifest = manifest or read_manifest(bundle_dir)
    listed = {MANIFEST, SIGNATURE}
    for entry in manifest["files"]:
        path = safe_path(bundle_dir, entry["path"])
        if os.path.islink(path) or not os.path.isfile(path):
            raise DeployError(f"{entry['path']}: missing from the bundle (or not a regular file); deploy again")
        if sha256_file(path) != entry["sha256"]:
            raise DeployError(f"{entry['path']}: sha256 differs from the manifest: the file is corrupt or was "
                              "changed; deploy again")
        listed.add(entry["path"])
    for dirpath, dirnames, filenames in os.walk(bundle_dir):
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), bundle_dir).replace(os.sep, "/")
            if rel not in listed and not rel.startswith(("venv/", INSTALLED)):
                raise DeployError(f"{rel}: in the bundle but not in its manifest; rebuild the bundle")
    return manifest


def parse_public_key(text, where):
    """An ed25519 public key from its 64 hex digits (the form `edgeff keygen` prints)."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise DeployError(f"{where}: not an ed25519 public key (64 hex digits, as 'edgeff keygen' prints)")
    return key


def trusted_key(root):
    """The key pinned in ROOT/trusted_key, or None if this device has none yet."""
    path = os.path.join(root, TRUSTED_KEY)
    try:
        with open(path) as f:
            text = f.read(200)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise DeployError(f"{path}: unreadable ({type(exc).__name__}); fix or remove it on the device") from None
    return parse_public_key(text, path)


def pin_key(root, key):
    """Write ROOT/trusted_key, refusing to replace one that exists (os.link never overwrites)."""
    path = os.path.join(root, TRUSTED_KEY)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(key.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise DeployError(f"{path} already pins a key; remove it on the device to trust another one") from None
    finally:
        os.unlink(tmp)
    fsync_dir(root)


def authenticate(root, bundle_dir):
    """Refuse a bundle the device must not install: once a key is pinned, every bundle must carry
    a valid signature by it. Returns the key that signed the bundle, or None if unsigned."""
    pinned = trusted_key(root)
    sig_path = os.path.join(bundle_dir, SIGNATURE)
    if not os.path.lexists(sig_path):
        if pinned:
            raise DeployError(f"the bundle is not signed and this device accepts only bundles signed by key "
                              f"{pinned.hex()[:16]}...; build it with --sign KEY")
        return None
    try:
        signed = read_json(sig_path)
        key = parse_public_key(signed["public_key"], SIGNATURE)
        signature = bytes.fromhex(signed["signature"])
        if signed["algorithm"] != "ed25519":
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError, AttributeError, DeployError):
        raise DeployError(f"{SIGNATURE}: not an ed25519 signature file; sign the bundle again") from None
    if pinned and key != pinned:
        raise DeployError(f"the bundle is signed by key {key.hex()[:16]}... but this device accepts only "
                          f"{pinned.hex()[:16]}...; sign it with that key")
    with open(os.path.join(bundle_dir, MANIFEST), "rb") as f:
        if not ed25519_verify(key, f.read(), signature):
            raise DeployError(f"{SIGNATURE}: the signature does not match {MANIFEST}: the bundle was changed "
                              "after it was signed; build and sign it again")
    return key


def trust(root, key_text):
    """Pin a public key on the device (run there by its owner, before or instead of the first signed install)."""
    if os.path.isfile(key_text):
        with open(key_text) as f:
            key_text = f.read(200)
    key = parse_public_key(key_text, "--key")
    if trusted_key(root) == key:
        return {"trusted_key": key.hex(), "pinned": "already"}
    os.makedirs(root, exist_ok=True)
    pin_key(root, key)
    return {"trusted_key": key.hex(), "pinned": "new"}


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
