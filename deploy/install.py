"""Install a bundle on the device: verify, install offline, smoke-test, switch atomically, roll back.

Runs on the device, with the system python3 and nothing but the standard library. It is
always the host's own copy (never one from a bundle): a file:// deploy calls it in process,
ssh:// streams it to `python3 -` on the device, `edgeff agent serial` imports its own
installed edgeff.deploy.install.

    ROOT/incoming/<release>/   files as they arrive (a transfer cut short stays here)
    ROOT/releases/<release>/   installed releases, each with its own venv
    ROOT/current               symlink to releases/<release>, swapped with one rename
    ROOT/history.json          releases in the order they were made current
    ROOT/trusted_key           the ed25519 public key bundles must be signed with, once pinned

    python3 install.py adopt|install|rollback|status --root ROOT [--release ID] [--keep N]
    python3 install.py trust --root ROOT --key PUBLIC_KEY     (on the device: pin a key)

A signed bundle carries manifest.sig: an ed25519 signature over manifest.json's exact bytes.
The first signed install pins its key (unless `trust` pinned one before); from then on every
bundle must be signed by that key. Nothing a deploy sends can replace the pinned key.

prints one JSON object; on failure {"error": "..."} and exit code 1.
"""

import argparse
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import stat
import subprocess
import sys

try:
    from edgeff.errors import DeployError
except ImportError:  # streamed to a device's python3 (ssh://), where edgeff is not installed
    class DeployError(Exception):
        pass

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
TRUSTED_KEY = "trusted_key"
LOCK = "requirements.lock"
INSTALLED = ".installed"
RELEASE_ID = re.compile(r"[0-9a-f]{16}")    # what release_id() makes


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


def _manifest_for(release_dir, release):
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


def read_manifest(bundle_dir):
    try:
        with open(os.path.join(bundle_dir, MANIFEST)) as f:
            manifest = json.load(f)
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


# Ed25519 verification (RFC 8032, 5.1.7), verify only: points in extended coordinates (X, Y, Z, T)
# with x = X/Z, y = Y/Z, x*y = T/Z on -x^2 + y^2 = 1 + d x^2 y^2 over the integers mod P.
_P = 2 ** 255 - 19
_L = 2 ** 252 + 27742317777372353535851937790883648493      # the order of the base point
_D = -121665 * pow(121666, -1, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _point_add(p, q):
    a, b = (p[1] - p[0]) * (q[1] - q[0]) % _P, (p[1] + p[0]) * (q[1] + q[0]) % _P
    c, d = 2 * p[3] * q[3] * _D % _P, 2 * p[2] * q[2] % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return e * f % _P, g * h % _P, f * g % _P, e * h % _P


def _point_multiply(n, p):
    result = (0, 1, 1, 0)                  # the neutral element
    while n:
        if n & 1:
            result = _point_add(result, p)
        p, n = _point_add(p, p), n >> 1
    return result


def _decode_point(data):
    """The point 32 bytes encode (y, and the low bit of x in the top bit), or None if none does."""
    y, sign = int.from_bytes(data, "little") & ((1 << 255) - 1), data[31] >> 7
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, -1, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P or (x == 0 and sign):
        return None
    x = _P - x if x & 1 != sign else x
    return x, y, 1, x * y % _P


def _encode_point(p):
    z_inverse = pow(p[2], -1, _P)
    x, y = p[0] * z_inverse % _P, p[1] * z_inverse % _P
    return (y | (x & 1) << 255).to_bytes(32, "little")


_BASE = _decode_point((4 * pow(5, -1, _P) % _P).to_bytes(32, "little"))


def ed25519_verify(public_key, message, signature):
    """True if signature (64 bytes: R, S) is public_key's (32 bytes: A) signature of message:
    S < L and [S]B - [k]A encodes to R, with k = SHA-512(R || A || message) mod L."""
    point = _decode_point(public_key) if len(public_key) == 32 else None
    if point is None or len(signature) != 64:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:                            # non-canonical S: refused, as RFC 8032 requires
        return False
    k = int.from_bytes(hashlib.sha512(signature[:32] + public_key + message).digest(), "little") % _L
    minus_a = (_P - point[0], point[1], point[2], _P - point[3])
    return _encode_point(_point_add(_point_multiply(s, _BASE), _point_multiply(k, minus_a))) == signature[:32]


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


def _pin(root, key):
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
        with open(sig_path) as f:
            signed = json.load(f)
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
    _pin(root, key)
    return {"trusted_key": key.hex(), "pinned": "new"}


class _Lock:
    """One install, rollback or adopt at a time per ROOT."""

    def __init__(self, root):
        os.makedirs(root, exist_ok=True)
        self.f = open(os.path.join(root, ".lock"), "w")

    def __enter__(self):
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        self.f.close()


def _history(root):
    """The release ids of ROOT/history.json (anything else in it is ignored)."""
    try:
        with open(os.path.join(root, "history.json")) as f:
            history = json.load(f)
    except (OSError, ValueError):
        return []
    return [r for r in history if isinstance(r, str) and RELEASE_ID.fullmatch(r)] if isinstance(history, list) else []


def _write_history(root, history):
    tmp = os.path.join(root, ".history.json.tmp")
    with open(tmp, "w") as f:
        json.dump(history, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(root, "history.json"))


def current(root):
    link = os.path.join(root, "current")
    return os.path.basename(os.readlink(link)) if os.path.islink(link) else None


def _switch(root, release):
    """Point ROOT/current at releases/<release> with one rename: never a moment without a whole release."""
    tmp = os.path.join(root, ".current.tmp")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.join("releases", release), tmp)
    os.replace(tmp, os.path.join(root, "current"))
    fsync_dir(root)


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def adopt(root, release):
    """Hard-link into incoming/<release>/ every file it needs that an installed release already
    holds with the same sha256 (a new model with an unchanged wheelhouse sends only the model).
    Returns the paths still missing."""
    stage = release_path(root, "incoming", release)
    manifest = _manifest_for(stage, release)
    authenticate(root, stage)           # refused here, before the host sends the rest
    missing, linked = [], 0
    with _Lock(root):
        sources = _link_sources(root)
        for entry in manifest["files"]:
            dest = safe_path(stage, entry["path"])
            if os.path.isfile(dest) and sha256_file(dest) == entry["sha256"]:
                continue
            src = sources.get(entry["sha256"])
            if src and sha256_file(src) == entry["sha256"]:
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                if os.path.lexists(dest):
                    os.unlink(dest)
                os.link(src, dest, follow_symlinks=False)
                linked += 1
            else:
                missing.append(entry["path"])
    return {"release": release, "missing": missing, "linked": linked}


def _manifest_entries(root, tree):
    """(sha256, path) of every file the manifests of ROOT/tree/<release>/ list, each path checked
    by safe_path; a release whose manifest is unreadable or lists an unsafe path is left out."""
    top = os.path.join(root, tree)
    for name in sorted(os.listdir(top)) if os.path.isdir(top) else []:
        try:
            release_dir = release_path(root, tree, name)
            files = read_manifest(release_dir)["files"]
            yield from [(f["sha256"], safe_path(release_dir, f["path"])) for f in files]
        except DeployError:
            continue


def _link_sources(root):
    """{sha256: path} of the files adopt may hard-link: regular files (not symlinks) inside
    ROOT/releases on ROOT's device, every link of which is a manifest entry under ROOT/releases
    or ROOT/incoming. Adopt links release to release, so a file legitimately has one link per
    release (installed or staged) holding it; a link count above that means a tree outside the
    root shares the inode, and the file is sent again rather than linked."""
    releases = os.path.realpath(os.path.join(root, "releases"))
    device = os.stat(root).st_dev
    found, links = [], {}
    for tree in ("releases", "incoming"):
        for sha256, path in _manifest_entries(root, tree):
            try:
                st = os.lstat(path)
            except OSError:
                continue
            real = os.path.realpath(path)
            links.setdefault((st.st_dev, st.st_ino), set()).add(real)
            if tree == "releases" and os.path.commonpath([releases, real]) == releases:
                found.append((sha256, path, st))
    sources = {}
    for sha256, path, st in found:
        if (stat.S_ISREG(st.st_mode) and st.st_dev == device
                and st.st_nlink == len(links[st.st_dev, st.st_ino])):
            sources.setdefault(sha256, path)
    return sources


def _run(argv, what, timeout=1800):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DeployError(f"{what}: {exc}") from None
    if r.returncode:
        tail = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise DeployError(f"{what} failed (exit {r.returncode}): {tail[0][:300]}")
    return r.stdout


def _setup_venv(release_dir, manifest):
    """A venv under the release with edgeff installed from the bundle's wheelhouse (offline),
    or, for a bundle without one, edgeff's wheel plus its dependencies from the package index."""
    venv = os.path.join(release_dir, "venv")
    _run([sys.executable, "-m", "venv", venv], "python3 -m venv (install python3-venv on the device)")
    pip = [os.path.join(venv, "bin", "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    wheels = os.path.join(release_dir, "wheels")
    edgeff_wheel = safe_path(release_dir, manifest["edgeff_wheel"])
    if manifest.get("wheelhouse"):
        lock = os.path.join(release_dir, LOCK)     # exactly the versions the host pinned
        pins = ["-r", lock] if os.path.isfile(lock) else []
        _run(pip + ["--no-index", "--find-links", wheels, *pins, edgeff_wheel], "offline install from the wheelhouse")
    else:
        _run(pip + [edgeff_wheel], "install of edgeff and its dependencies from the package index")
    return os.path.join(venv, "bin", "edgeff")


def _smoke(release_dir, edgeff, manifest):
    """edgeff info; infer on the shipped sample with the ONNX model and with the run; both must
    give the labels the host got. Then every training kernel is compiled once, so the device's
    Numba cache is warm before the first training run."""
    info = json.loads(_run([edgeff, "info", "--json"], "smoke test: edgeff info"))
    sample = os.path.join(release_dir, "sample.npy")
    with open(os.path.join(release_dir, "sample_labels.json")) as f:
        expected = json.load(f)
    results = {"arch": info.get("arch"), "board": info.get("board"), "target": info.get("target")}
    models = [("run", os.path.join(release_dir, "run"))]
    if manifest.get("onnx_runtime", True) and os.path.isfile(os.path.join(release_dir, "model.onnx")):
        models.insert(0, ("onnx", os.path.join(release_dir, "model.onnx")))
    for name, model in models:
        labels = json.loads(_run([edgeff, "infer", model, sample, "--json"], f"smoke test: edgeff infer ({name})"))["labels"]
        if labels != expected:
            raise DeployError(f"smoke test: {name} inference gives {labels[:8]}... on the shipped sample, the host "
                              f"got {expected[:8]}...; the device's libraries differ from the host's")
        results[f"infer_{name}"] = "labels agree"
    python = os.path.join(os.path.dirname(edgeff), "python")   # the training kernels, into the device's cache
    results["compile_seconds"] = float(_run([python, "-c", "from edgeff.train import warm_up; print(warm_up())"],
                                            "smoke test: compiling the training kernels").strip())
    return results


def install(root, release, keep=3, smoke=True):
    """Make incoming/<release> (or an installed releases/<release>) current. A failure at any
    step leaves the previous release current."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise DeployError(f"keep must be an integer of at least 1, got {keep!r}")
    if not isinstance(smoke, bool):
        raise DeployError(f"smoke must be true or false, got {smoke!r}")
    stage = release_path(root, "incoming", release)
    final = release_path(root, "releases", release)
    with _Lock(root):
        if os.path.isfile(os.path.join(final, INSTALLED)):
            signer = authenticate(root, final)
            report = {"release": release, "installed": "already", "smoke": None}
        else:
            manifest = verify(stage, _manifest_for(stage, release))
            signer = authenticate(root, stage)    # before anything from the bundle runs
            if manifest["arch"] not in ("any", platform.machine()):
                raise DeployError(f"the bundle is for {manifest['arch']} ({manifest['target']}) but this device "
                                  f"is {platform.machine()}; build one with --target for this device")
            os.makedirs(os.path.dirname(final), exist_ok=True)
            if os.path.exists(final):           # a failed earlier attempt
                shutil.rmtree(final)
            os.rename(stage, final)
            try:
                edgeff = _setup_venv(final, manifest)
                report = {"release": release, "installed": "new",
                          "smoke": _smoke(final, edgeff, manifest) if smoke else None}
            except BaseException:
                shutil.rmtree(final, ignore_errors=True)
                raise
            with open(os.path.join(final, INSTALLED), "w") as f:
                f.write(release + "\n")
        if signer and not trusted_key(root):
            _pin(root, signer)                    # the first signed install pins its key
        report["signed_by"] = signer.hex() if signer else None
        previous = current(root)
        _switch(root, release)
        history = [r for r in _history(root) if r != release] + [release]
        _write_history(root, history)
        report.update(previous=previous, current=release, removed=_prune(root, history, keep))
    return report


def _prune(root, history, keep):
    """Keep the newest `keep` releases of the history (never the current one)."""
    keep_set = set(history[-max(keep, 1):])
    removed = []
    releases = os.path.join(root, "releases")
    for name in sorted(os.listdir(releases)):
        if name not in keep_set:
            shutil.rmtree(os.path.join(releases, name), ignore_errors=True)
            removed.append(name)
    _write_history(root, [r for r in history if r in keep_set])
    return removed


def rollback(root):
    """Make the release before the current one current again."""
    with _Lock(root):
        history = [r for r in _history(root)
                   if os.path.isfile(os.path.join(release_path(root, "releases", r), INSTALLED))]
        now = current(root)
        if now in history:
            history.remove(now)
        if not history:
            raise DeployError(f"{root}: no earlier release to roll back to")
        target = history[-1]
        _switch(root, target)
        _write_history(root, history)    # the release left stays installed: deploying it again is instant
    return {"previous": now, "current": target}


def status(root):
    releases = os.path.join(root, "releases")
    names = sorted(os.listdir(releases)) if os.path.isdir(releases) else []
    return {"root": root, "current": current(root), "history": _history(root),
            "releases": [n for n in names if os.path.isfile(os.path.join(releases, n, INSTALLED))],
            "machine": platform.machine()}


def main(argv=None):
    p = argparse.ArgumentParser(prog="install.py", description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("adopt", "install", "rollback", "status", "trust"))
    p.add_argument("--root", required=True)
    p.add_argument("--release")
    p.add_argument("--key", help="trust: the ed25519 public key (64 hex digits, or its .pub file) to pin")
    p.add_argument("--keep", type=int, default=3)
    p.add_argument("--no-smoke", dest="smoke", action="store_false")
    args = p.parse_args(argv)
    try:
        if args.action in ("adopt", "install") and not args.release:
            raise DeployError(f"{args.action} needs --release")
        if args.action == "trust" and not args.key:
            raise DeployError("trust needs --key")
        result = {"trust": lambda: trust(args.root, args.key),
                  "adopt": lambda: adopt(args.root, args.release),
                  "install": lambda: install(args.root, args.release, args.keep, args.smoke),
                  "rollback": lambda: rollback(args.root),
                  "status": lambda: status(args.root)}[args.action]()
    except DeployError as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
