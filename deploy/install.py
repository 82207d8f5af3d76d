"""Install a bundle on the device: verify, install offline, smoke-test, switch atomically, roll back.

Runs on the device, with the system python3 and nothing but the standard library. It is
always the host's own copy (never one from a bundle): a file:// deploy calls it in process,
ssh:// streams it with trust.py and ed25519.py to `python3 -` on the device (ssh.py),
`edgeff agent serial` imports its own installed edgeff.deploy.install.

    ROOT/incoming/<release>/   files as they arrive (a transfer cut short stays here)
    ROOT/releases/<release>/   installed releases, each with its own venv
    ROOT/current               symlink to releases/<release>, swapped with one rename
    ROOT/history.json          releases in the order they were made current
    ROOT/trusted_key           the ed25519 public key bundles must be signed with (trust.py)

    python3 install.py adopt|install|rollback|status --root ROOT [--release ID] [--keep N]
    python3 install.py trust --root ROOT --key PUBLIC_KEY     (on the device: pin a key)

prints one JSON object; on failure {"error": "..."} and exit code 1.
"""

import argparse
import fcntl
import json
import os
import platform
import shutil
import stat
import subprocess
import sys

from .trust import (INSTALLED, RELEASE_ID, DeployError, authenticate, fsync_dir, pin_key, read_manifest,
                    read_json, release_manifest, release_path, safe_path, sha256_file, trust, trusted_key, verify)

LOCK = "requirements.lock"


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
        history = read_json(os.path.join(root, "history.json"))
    except (OSError, ValueError):
        return []
    return [r for r in history if isinstance(r, str) and RELEASE_ID.fullmatch(r)] if isinstance(history, list) else []


def _write_history(root, history):
    tmp = os.path.join(root, ".history.json.tmp")
    with open(tmp, "w") as f:
        json.dump(history, f, allow_nan=False)
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


def adopt(root, release):
    """Hard-link into incoming/<release>/ every file it needs that an installed release already
    holds with the same sha256 (a new model with an unchanged wheelhouse sends only the model).
    Returns the paths still missing."""
    stage = release_path(root, "incoming", release)
    manifest = release_manifest(stage, release)
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
    # -I: not the working directory's edgeff/ (a checkout's) but the venv's
    results["compile_seconds"] = float(_run([python, "-I", "-c", "from edgeff.train import warm_up; print(warm_up())"],
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
            manifest = verify(stage, release_manifest(stage, release))
            signer = authenticate(root, stage)    # before anything from the bundle runs
            if manifest["arch"] not in ("any", platform.machine()):
                raise DeployError(f"the bundle is for {manifest['arch']} ({manifest['target']}) but this device "
                                  f"is {platform.machine()}; build one with --target for this device")
            python = "%d.%d" % sys.version_info[:2]     # the venv's, with the wheelhouse installed into it
            if manifest.get("wheelhouse") and manifest.get("python") != python:
                raise DeployError(f"the bundle's wheelhouse is for Python {manifest.get('python')} but this device "
                                  f"runs Python {python}; build one with --python-version {python}")
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
            pin_key(root, signer)                    # the first signed install pins its key
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
        print(json.dumps({"error": str(exc)}, allow_nan=False))
        return 1
    print(json.dumps(result, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
