"""Editing a bundle the way an attacker would: change files, then make the manifest consistent
again (sha256s and release id), so only a signature can tell."""

import json

from edgeff.deploy import trust as device


def rehash(bundle_dir):
    """Rewrite bundle_dir/manifest.json to list the files as they are now; returns the manifest."""
    m = json.loads((bundle_dir / "manifest.json").read_text())
    m["files"] = [{"path": p.relative_to(bundle_dir).as_posix(), "sha256": device.sha256_file(p), "size": p.stat().st_size}
                  for p in sorted(bundle_dir.rglob("*")) if p.is_file() and p.name not in ("manifest.json", "manifest.sig")]
    m["release"] = device.release_id(m["files"])
    (bundle_dir / "manifest.json").write_text(json.dumps(m))
    return m
