"""`edgeff deploy`: bundle (if given a run), pre-flight, send what the device lacks, install, report.

Order on the device, so nothing from the bundle runs before it is verified:
  1. probe: architecture and Python; a run is bundled for both, a bundle for another architecture
     or (with a wheelhouse) another Python is refused here
  2. manifest.json (and manifest.sig, if signed) are sent to ROOT/incoming/<release>/ (each
     checked by sha256 on the device) -- or nothing at all if that release is already installed
  3. adopt: the signature is checked against the device's pinned key; files an installed
     release already holds are hard-linked, not sent
  4. the missing files are sent, each resumable and checked by sha256
  5. install: verifies every file against the manifest and the manifest's signature, installs
     offline into a venv, smoke-tests, and only then swaps ROOT/current
Steps 3 and 5 run the host's own installer (deploy/install.py), never one from the bundle.
"""

import os
import tempfile

from ..errors import DeployError
from . import answers, trust
from .bundle import build, open_bundle
from .targets import detect
from .transport import open_transport

FIRST = (trust.MANIFEST, trust.SIGNATURE)


def _is_run(path):
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "model.npz"))


def push(source, url, target=None, keep=3, smoke=True, dry_run=False, ssh_config=None,
         step=lambda msg: None, bar=lambda total, desc: None, sign=None):
    """Deploy source (a run dir, a bundle dir or a bundle .tar.gz) to url; returns a report dict.
    A run is bundled and, with sign (a private key file), signed on the way.
    bar(total_bytes, desc) returns a progress object with update(n) and close(), or None."""
    if sign and not _is_run(source):
        raise DeployError("--sign applies when deploying a run directory; sign a bundle as it is built "
                          "(edgeff bundle --sign KEY)")
    with tempfile.TemporaryDirectory(prefix="edgeff-deploy-") as work, \
            open_transport(url, ssh_config=ssh_config) as t:
        step(f"probing {t.url}")
        probe = answers.probe(t.url, t.probe())
        python = probe["python"]                      # the device's own (None: it has no python3)
        if _is_run(source):
            name = target or detect(probe["machine"], probe["model"]).name
            step(f"bundling {source} for {name}" + (f", Python {python}" if python else ""))
            bundle_dir = os.path.join(work, "bundle")
            manifest = build(source, name, bundle_dir, step=step, sign=sign, python=python)
        else:
            if target:
                raise DeployError("--target applies when deploying a run directory; this bundle was built for "
                                  "its own target")
            bundle_dir, manifest = open_bundle(source, work)
        if manifest["arch"] not in ("any", probe["machine"]):
            raise DeployError(f"the bundle is for {manifest['arch']} ({manifest['target']}) but {t.url} is "
                              f"{probe['machine']}; bundle the run with --target for that device")
        if python not in (manifest["python"], None) and manifest.get("wheelhouse"):
            raise DeployError(f"{t.url} runs Python {python} but the bundle's wheelhouse is for Python "
                              f"{manifest['python']}; bundle with --python-version {python}, or deploy "
                              "the run directory (it is bundled for the device's Python)")
        release = manifest["release"]
        stage = f"incoming/{release}"
        files = {f["path"]: f for f in manifest["files"]}
        for p in FIRST:
            if os.path.isfile(os.path.join(bundle_dir, p)):
                files[p] = {"path": p, "size": os.path.getsize(os.path.join(bundle_dir, p)),
                            "sha256": trust.sha256_file(os.path.join(bundle_dir, p))}
        installed = t.hashes([f"releases/{release}/{trust.INSTALLED}"])[f"releases/{release}/{trust.INSTALLED}"]
        report = {"release": release, "target": manifest["target"], "device": probe, "sent_bytes": 0,
                  "sent_files": 0, "linked_files": 0, "bundle_bytes": sum(f["size"] for f in files.values())}
        if installed:
            missing = []
        else:
            have = t.hashes([f"{stage}/{p}" for p in files])
            missing = [p for p in files if have[f"{stage}/{p}"] != files[p]["sha256"]]
        if dry_run:
            report.update(dry_run=True, would_send=sorted(missing),
                          would_send_bytes=sum(files[p]["size"] for p in missing),
                          would_run=["install.py adopt", f"install.py install --keep {keep}" +
                                     ("" if smoke else " --no-smoke")])
            return report
        if not installed:
            for p in [p for p in FIRST if p in missing]:
                report["sent_bytes"] += t.put(os.path.join(bundle_dir, p), f"{stage}/{p}", files[p]["sha256"])
                report["sent_files"] += 1
            report["linked_files"], missing = answers.adopted(t.url, t.call("adopt", release=release), files)
            total = sum(files[p]["size"] for p in missing)
            progress = bar(total, f"sending {len(missing)} files") if missing else None
            for p in missing:
                report["sent_bytes"] += t.put(os.path.join(bundle_dir, p), f"{stage}/{p}", files[p]["sha256"],
                                              progress.update if progress else None)
                report["sent_files"] += 1
            if progress:
                progress.close()
        step(f"installing release {release} on the device" + (" (venv, smoke test)" if not installed else ""))
        report["install"] = answers.installed(t.url, t.call("install", release=release, keep=keep, smoke=smoke),
                                              release)
        return report


def rollback(url, ssh_config=None):
    with open_transport(url, ssh_config=ssh_config) as t:
        return answers.rolled_back(t.url, t.call("rollback"))
