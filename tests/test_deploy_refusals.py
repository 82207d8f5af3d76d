"""Deploys refused before anything is sent or run: archive entries escaping the bundle, a truncated
bundle, installers that must never run, the wrong architecture or Python, bad SSH URLs, dry runs."""

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from edgeff.deploy import trust
from bundle_edit import rehash
from run_cli import edgeff as run_edgeff, ok, one_line_error
from deploy_rig import bundle, data, edgeff, over_ssh, runs, sshd, tree  # noqa: F401 (fixtures)


# ---------------------------------------------------------------- refusals: nothing sent, nothing run

def _tar_with(tmp_path, name, member, data=b"x"):
    path = tmp_path / name
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_archive_entries_escaping_the_bundle(tmp_path, kind):
    member = tarfile.TarInfo({"dotdot": "../evil.py", "absolute": "/tmp/evil.py", "symlink": "link"}[kind])
    if kind == "symlink":
        member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
    else:
        member.size = 1
    archive = _tar_with(tmp_path, f"{kind}.tar.gz", member)
    one_line_error(edgeff("deploy", archive, "--to", f"file://{tmp_path}/device"), "evil.py" if kind != "symlink" else "link")
    assert not (tmp_path / "device").exists() or not any((tmp_path / "device").rglob("*.py"))
    assert not (tmp_path / "evil.py").exists()


def test_truncated_bundle(tmp_path, bundle):
    bundle_dir, _ = bundle
    archive = tmp_path / "b.tar.gz"
    subprocess.run(["tar", "-czf", archive, "-C", bundle_dir, "."], check=True)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    one_line_error(edgeff("deploy", archive, "--to", f"file://{tmp_path}/device"), "truncated or corrupt")


def test_an_installer_in_the_bundle_or_on_the_device_never_runs(tmp_path, bundle, sshd):
    """A bundle carrying its own install.py, with a consistent manifest, installs over file:// and
    ssh://, yet that file never runs: the host's installer does. --rollback never runs the
    install.py a target directory holds either."""
    marker = tmp_path / "pwned"
    hostile = f"open({str(marker)!r}, 'w').close()\n"
    bad = tmp_path / "bad"
    os.system(f"cp -r {bundle[0]} {bad}")
    (bad / "install.py").write_text(hostile)
    m = rehash(bad)
    done = ok(edgeff("deploy", bad, "--to", f"file://{tmp_path}/device", "--no-smoke", "--json"))
    assert done["install"]["current"] == m["release"]
    done = ok(over_ssh(sshd, tmp_path / "ssh-device", bad, "--no-smoke", "--json"))
    assert done["install"]["current"] == m["release"]
    for root in ("dir", "ssh-dir"):
        os.makedirs(tmp_path / root / "releases" / "r1")
        (tmp_path / root / "releases" / "r1" / "install.py").write_text(hostile)
        os.symlink("releases/r1", tmp_path / root / "current")
    one_line_error(edgeff("deploy", "--rollback", "--to", f"file://{tmp_path}/dir"), "no earlier release")
    one_line_error(over_ssh(sshd, tmp_path / "ssh-dir", "--rollback"), "no earlier release")
    assert not marker.exists()


def test_bundle_for_another_architecture_is_refused(runs, tmp_path):
    pi = tmp_path / "pi"
    ok(edgeff("bundle", runs[0], "--target", "rpi5", "--no-wheels", "-o", pi, "--json"))
    one_line_error(edgeff("deploy", pi, "--to", f"file://{tmp_path}/device"), "aarch64", "x86_64")
    assert not (tmp_path / "device" / "incoming").exists()


def test_bundle_for_another_python_is_refused(bundle, tmp_path):
    """Before anything is sent, and by the device's installer itself: one line naming both Pythons."""
    here = "%d.%d" % sys.version_info[:2]
    other = "3.12" if here == "3.10" else "3.10"
    wrong = tmp_path / "wrong"
    shutil.copytree(bundle[0], wrong)
    (wrong / trust.MANIFEST).write_text(json.dumps(dict(bundle[1], python=other)))
    release = rehash(wrong)["release"]
    one_line_error(edgeff("deploy", wrong, "--to", f"file://{tmp_path}/device"), f"Python {here}", f"Python {other}")
    assert not (tmp_path / "device" / "incoming").exists()
    shutil.copytree(wrong, tmp_path / "root" / "incoming" / release)        # as a host would have staged it
    r = subprocess.run([sys.executable, "-m", "edgeff.deploy.install", "install", "--root", tmp_path / "root",
                        "--release", release], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and json.loads(r.stdout)["error"] == (
        f"the bundle's wheelhouse is for Python {other} but this device runs Python {here}; "
        f"build one with --python-version {here}")
    assert not (tmp_path / "root" / "releases").exists() and not (tmp_path / "root" / "current").exists()


def test_ssh_dry_run_changes_nothing_on_the_device(tmp_path, bundle, sshd):
    missing = tmp_path / "not-there"
    report = ok(over_ssh(sshd, missing, bundle[0], "--dry-run", "--json"))
    assert report["dry_run"] and report["would_send_bytes"] == report["bundle_bytes"]
    assert not missing.exists()
    existing = tmp_path / "device"
    (existing / "incoming" / "0123").mkdir(parents=True)
    (existing / "incoming" / "0123" / "manifest.json").write_text("{}")
    (existing / "notes.txt").write_bytes(b"kept as it is")
    os.symlink("incoming/0123", existing / "current")
    before = tree(existing)
    ok(over_ssh(sshd, existing, bundle[0], "--dry-run", "--json"))
    assert tree(existing) == before


@pytest.mark.parametrize("url, says", [
    ("ssh://-oProxyCommand=touch${IFS}pwned@127.0.0.1/x", "beginning with '-'"),
    ("ssh://-oProxyCommand=touch${IFS}pwned/x", "beginning with '-'"),
    ("ssh://device:0/x", "outside 1..65535"),
    ("ssh://device:65536/x", "not a valid URL"),
    ("ssh://device:http/x", "not a valid URL"),
    ("ssh:///x", "no host"),
    ("ssh://[::1/x", "not a valid URL"),
])
def test_ssh_urls_are_checked_before_ssh_runs(tmp_path, bundle, url, says):
    one_line_error(run_edgeff("deploy", bundle[0], "--to", url, cwd=tmp_path, timeout=60), says)
    assert not list(tmp_path.glob("pwned*"))       # ssh never ran a ProxyCommand from the URL


def test_ssh_gets_the_destination_after_double_dash():
    from edgeff.deploy.ssh import SshTransport
    from edgeff.deploy.transport import parse_url
    t = SshTransport(parse_url("ssh://pi@device:2222/srv/edgeff"))
    argv = t._argv("-O", "exit")
    t.close()
    assert argv[-2:] == ["--", "pi@device"] and argv.count("--") == 1


def test_dry_run_changes_nothing(tmp_path, bundle):
    r = edgeff("deploy", bundle[0], "--to", f"file://{tmp_path}/device", "--dry-run", "--json")
    report = ok(r)
    assert report["dry_run"] and report["would_send_bytes"] == report["bundle_bytes"]
    assert "manifest.json" in report["would_send"]
    assert not (tmp_path / "device" / "incoming").exists() and not (tmp_path / "device" / "current").exists()
