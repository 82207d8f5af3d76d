"""`edgeff bundle`: everything a device needs to run and keep training a run, offline.

    model.onnx             the run exported (the head it reports), checked against NumPy
    model-int8.onnx        int8 weights, where the target profile asks for it
    run/                   config.json, model.npz, metrics.json: the device can go on training
    sample.npy             a few test rows; sample_labels.json, the labels the host gives them
    wheels/                edgeff's wheel, and the runtime dependencies for the target's
                           platform and Python (pip download --platform ...), unless --no-wheels;
                           with --extra fed also Flower's (the device can be a SuperNode)
    requirements.lock      name==version of every wheel in the wheelhouse: the versions installed
                           on the host (for another Python than the host's, the newest release
                           up to the host's that has a wheel for it), which the device installs
                           and nothing else
    manifest.json          edgeff version, target, every file with sha256 and size, release id
    manifest.sig           with --sign KEY: the ed25519 signature of manifest.json (deploy/signing.py)

A bundle carries no installer: the device always runs the host's own (deploy/transport.py).

The release id hashes the file list, so the same inputs give the same id and hashes; a
bundle is a directory, or a .tar.gz of one written with fixed metadata.
"""

import gzip
import importlib.metadata
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib

import numpy as np

from .. import __version__
from ..errors import DeployError
from ..fields import field
from ..fileio import CHUNK, atomic_write
from . import signing, trust
from .install import LOCK
from .targets import get as get_target
from .wheel import build_wheel

SAMPLE_ROWS = 16
RUNTIME = ["numpy", "numba", "onnx", "onnxruntime", "pyserial"]
EXTRAS = {"fed": ["flwr"]}     # an extra's distributions, at the host's versions (setup.py pins them)
EXTRA_PYTHON = {"fed": (3, 11)}  # the oldest Python an extra has wheels for (Flower 1.42: 3.11)
# What a bundle's .tar.gz may unpack to. A real one is about 130 MiB, nearly all wheelhouse (llvmlite 60,
# onnxruntime 24, numpy 19, onnx 9 MiB; --extra fed adds about 20), so 1 GiB leaves room for bigger wheels
# and models while a few KiB of gzip claiming more (a bomb, or a sparse file's holes) are refused unwritten.
MAX_UNPACKED = 1 << 30
MAX_ENTRIES = 1 << 12     # files and directories: a bundle has a few dozen (tarfile keeps each header in memory)
MAX_HEADER = 1 << 14      # bytes of a pax or GNU long-name header: a bundle's hold a path (PATH_MAX: 4096)


def _normalized(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def host_versions(packages=RUNTIME):
    """{distribution: version} as installed on this host, for packages (edgeff's runtime dependencies)
    and everything they require in turn."""
    versions, todo = {}, list(packages)
    while todo:
        name = todo.pop()
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            if name in packages:
                raise DeployError(f"{name} is not installed on this host, so the bundle cannot pin its version; "
                                  "pip install edgeff's dependencies first") from None
            continue            # required only on other platforms or Pythons
        if _normalized(dist.metadata["Name"]) not in versions:
            versions[_normalized(dist.metadata["Name"])] = dist.version
            todo += [re.match(r"[A-Za-z0-9._-]+", r).group() for r in dist.requires or [] if "extra ==" not in r]
    return versions


def wheelhouse(target, dest, versions=None, packages=RUNTIME):
    """Download the wheels of packages (the runtime dependencies) and what they require for the target's
    platform and Python into dest, each at the version in versions (default: host_versions(packages));
    for another Python than the host's, where
    that version may have no wheel for it (numpy 2.4 has none for 3.10), the newest release up to it
    that has one. Returns the lock: "name==version" of every wheel."""
    if not target.wheels:
        raise DeployError(f"PyPI has no wheels of edgeff's dependencies for {target.arch} ({target.name}); "
                          "bundle with --no-wheels (the device then installs from its package index)")
    versions = host_versions(packages) if versions is None else versions
    pin = "==" if target.python == "%d.%d" % sys.version_info[:2] else "<="
    constraints = os.path.join(dest, ".constraints.txt")
    with open(constraints, "w") as f:
        f.writelines(f"{name}{pin}{version}\n" for name, version in sorted(versions.items()))
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--only-binary=:all:",
           "--implementation", "cp", "--python-version", target.python, "--abi", target.abi, "-d", dest,
           "-c", constraints]
    for tag in target.platforms:
        cmd += ["--platform", tag]
    r = subprocess.run(cmd + list(packages), capture_output=True, text=True)
    os.unlink(constraints)
    if r.returncode:
        errors = [line for line in r.stderr.splitlines() if "ERROR" in line] or r.stderr.strip().splitlines()[-1:]
        raise DeployError(f"pip download for {target.name} failed: {errors[0] if errors else 'no output'}; "
                          "check the package index is reachable, or bundle with --no-wheels")
    wheels = [name.split("-")[:2] for name in sorted(os.listdir(dest)) if name.endswith(".whl")]
    return "".join(f"{name}=={version}\n" for name, version in wheels if name != "edgeff")


def _write_files(run_dir, target, root, wheels, step, packages):
    from .. import export
    from ..data import load_dataset
    from ..runs import CONFIG, METRICS, MODEL, load_metrics, load_run
    net, cfg = load_run(run_dir)
    ds = load_dataset(cfg.dataset)
    step("exporting model.onnx" + (" and model-int8.onnx" if target.quantize else ""))
    data, int8, report = export.export(net, cfg, load_metrics(run_dir), ds, cfg.classifier,
                                       quant="dynamic" if target.quantize else None)
    with open(os.path.join(root, "model.onnx"), "wb") as f:
        f.write(data)
    if int8:
        with open(os.path.join(root, "model-int8.onnx"), "wb") as f:
            f.write(int8)
    os.makedirs(os.path.join(root, "run"))
    for name in (CONFIG, MODEL, METRICS):
        if os.path.isfile(os.path.join(run_dir, name)):
            shutil.copyfile(os.path.join(run_dir, name), os.path.join(root, "run", name))
    sample = ds.x_test[:SAMPLE_ROWS]
    np.save(os.path.join(root, "sample.npy"), sample)
    labels = net.predict((sample * np.float32(ds.scale)).astype(np.float32), 1.0, cfg.classifier)
    with open(os.path.join(root, "sample_labels.json"), "w") as f:
        json.dump(labels.tolist(), f, allow_nan=False)
    os.makedirs(os.path.join(root, "wheels"))
    wheel = os.path.relpath(build_wheel(os.path.join(root, "wheels")), root)
    if wheels:
        step(f"downloading the wheelhouse for {target.name}, Python {target.python} ({target.abi}, "
             f"{', '.join(target.platforms[:2])}, ...)")
        lock = wheelhouse(target, os.path.join(root, "wheels"), packages=packages)
        with open(os.path.join(root, LOCK), "w") as f:
            f.write(lock)
        host = host_versions(packages)
        older = [f"{name} {version} (host {host[_normalized(name)]})" for name, version
                 in (line.split("==") for line in lock.splitlines()) if host.get(_normalized(name), version) != version]
        if older:
            step(f"no wheels of the host's version for Python {target.python}, so the device gets {', '.join(older)}")
    return wheel, report


def build(run_dir, target_name, out, wheels=True, step=lambda msg: None, sign=None, python=None, abi=None,
          extras=()):
    """Build the bundle of run_dir for a target into out (a directory, or a .tar.gz), signed with the
    private key file `sign` if given, its wheelhouse for the target's Python or the python (X.Y) and
    abi (cpXY) given, holding the extras' wheels too (EXTRAS); returns the manifest."""
    target = get_target(target_name).for_python(python, abi)
    extras = sorted(set(extras))
    for extra in extras:
        if not wheels:
            raise DeployError(f"--extra {extra} ships wheels: leave out --no-wheels")
        oldest = EXTRA_PYTHON[extra]
        if tuple(int(v) for v in target.python.split(".")) < oldest:
            raise DeployError(f"--extra {extra} needs Python {'.'.join(map(str, oldest))} or newer on the device; "
                              f"{target.name} has {target.python}: give --python-version of a newer Python there")
    packages = RUNTIME + [name for extra in extras for name in EXTRAS[extra]]
    key = signing.load_key(sign) if sign else None
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise DeployError(f"{out} already exists; remove it or choose another -o")
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edgeff-bundle-", dir=parent) as tmp:
        root = os.path.join(tmp, "bundle")
        os.makedirs(root)
        wheel, report = _write_files(run_dir, target, root, wheels, step, packages)
        files = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                files.append({"path": os.path.relpath(path, root).replace(os.sep, "/"),
                              "sha256": trust.sha256_file(path), "size": os.path.getsize(path)})
        manifest = {"format": 1, "edgeff_version": __version__, "target": target.name, "arch": target.arch,
                    "python": target.python, "abi": target.abi,
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "source_run": os.path.abspath(run_dir), "edgeff_wheel": wheel, "wheelhouse": bool(wheels), "extras": extras,
                    "onnx_runtime": target.arch != "armv7l", "export": report,
                    "files": files, "release": trust.release_id(files)}
        with open(os.path.join(root, trust.MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True, allow_nan=False)
        if key:
            step("signing manifest.json")
            signing.sign_bundle(root, key)
        step(f"writing {out}")
        if out.endswith((".tar.gz", ".tgz")):
            _write_tarball(root, out)
        else:
            if os.path.isdir(out):
                os.rmdir(out)
            os.rename(root, out)
    return manifest


def _write_tarball(root, out):
    """A .tar.gz with sorted entries, no owners and fixed times: same files, same bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                info = tar.gettarinfo(path, os.path.relpath(path, root).replace(os.sep, "/"))
                info.uid = info.gid = info.mtime = 0
                info.uname = info.gname = ""
                info.mode = 0o644
                with open(path, "rb") as f:
                    tar.addfile(info, f)

    def write(raw):
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
            gz.write(buf.getvalue())
    atomic_write(out, write)


class _Header(tarfile.TarInfo):
    """A tar header that keeps tarfile from reading more than a bundle holds before open_bundle sees the
    member: tarfile reads a pax or GNU long-name header whole into memory, however long it claims to
    be, and a sparse file's map however long the archive makes it. A bundle has short path headers
    only, no global ones, no sparse files. (_proc_member is tarfile's hook for subclasses;
    _proc_gnusparse_10 is where it reads a pax sparse map.)"""

    def _proc_member(self, tar):
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _not_regular(tar.name, self.name, "sparse file")
        if self.type in (tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE) or (
                self.type in (tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
                and self.size > MAX_HEADER):
            raise DeployError(f"{tar.name}: a tar extended header of type {self.type.decode()!r} and {self.size:,} "
                              f"bytes; a bundle has only path headers ('x', 'L') of up to {MAX_HEADER:,} bytes: "
                              "give what 'edgeff bundle' wrote")
        return super()._proc_member(tar)

    def _proc_gnusparse_10(self, next, pax_headers, tar):
        raise _not_regular(tar.name, pax_headers.get("GNU.sparse.name", next.name), "sparse file")


def _not_regular(source, entry, kind):
    return DeployError(f"{source}: entry {entry!r} is a {kind}; a bundle holds regular files only")


def open_bundle(source, workdir):
    """A verified bundle directory from a directory or a .tar.gz (unpacked into workdir, every
    entry checked: regular files only (no links, special or sparse files), no absolute paths, no
    '..', at most MAX_ENTRIES of them, their sizes adding up to at most MAX_UNPACKED and what the
    disk has free, each checked before it is written); returns (dir, manifest)."""
    if os.path.isdir(source):
        return source, _checked(source, trust.verify(source))
    try:
        # gzip only, as build writes it; no other compressor runs on it
        tar = tarfile.open(source, "r:gz", tarinfo=_Header)
    except OSError as exc:
        raise DeployError(f"{source}: cannot read it ({exc.strerror}); give a bundle directory or .tar.gz") from None
    except (tarfile.TarError, EOFError, zlib.error, RecursionError) as exc:   # RecursionError: chained headers
        raise DeployError(f"{source}: not a bundle directory or a gzip-compressed tar ({type(exc).__name__}); "
                          "give what 'edgeff bundle' wrote") from None
    dest = os.path.join(workdir, "bundle")
    os.makedirs(dest)
    free, unpacked = shutil.disk_usage(dest).free, 0
    with tar:
        try:
            for count, member in enumerate(tar, 1):
                if count > MAX_ENTRIES:
                    raise DeployError(f"{source}: more than {MAX_ENTRIES} entries, and a bundle has a few dozen; "
                                      "give what 'edgeff bundle' wrote")
                name = member.name.removeprefix("./").rstrip("/")   # tar -C dir . writes ./x
                if member.isdir():
                    if name not in (".", ""):
                        os.makedirs(trust.safe_path(dest, name), exist_ok=True)
                    continue
                if member.issparse() or member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                    kind = ("sparse file" if member.issparse() else "link" if member.issym() or member.islnk()
                            else "special file")
                    raise _not_regular(source, member.name, kind)
                # The header's size, checked before a byte is written; the copy below holds the member to it.
                unpacked += member.size
                if unpacked > MAX_UNPACKED:
                    raise DeployError(f"{source}: unpacks to more than {MAX_UNPACKED:,} bytes (at entry "
                                      f"{member.name!r}), far more than a bundle holds; give what 'edgeff bundle' "
                                      "wrote")
                if unpacked > free:
                    raise DeployError(f"{source}: unpacks to more than the {free:,} bytes free in {workdir} (at entry "
                                      f"{member.name!r}); free some space there, or set TMPDIR to a disk with more")
                path = trust.safe_path(dest, name)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with tar.extractfile(member) as src, open(path, "wb") as f:
                    copied = 0      # reading one byte past the header's size, to see that there is none
                    while copied <= member.size and (block := src.read(min(CHUNK, member.size + 1 - copied))):
                        f.write(block)
                        copied += len(block)
                if copied != member.size:
                    raise DeployError(f"{source}: entry {member.name!r} does not hold the {member.size:,} bytes its "
                                      "header says; build it again")
        except (OSError, tarfile.TarError, EOFError, zlib.error, RecursionError) as exc:
            raise DeployError(f"{source}: truncated or corrupt bundle ({type(exc).__name__}); build it again") from None
    return dest, _checked(source, trust.verify(dest))


def _checked(source, manifest):
    """The manifest with the fields deploy reads checked for type (verify has checked its files' paths
    and hashes)."""
    for key in ("arch", "target", "python", "release"):
        field(f"{source} manifest", manifest, key, str, error=DeployError)
    for entry in manifest["files"]:
        field(f"{source} manifest entry {entry.get('path')!r}", entry, "size", int, lambda n: n >= 0,
              "a size in bytes", DeployError)
    return manifest
