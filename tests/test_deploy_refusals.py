"""Deploys refused before anything is sent or run: archive entries escaping the bundle, a truncated
bundle, archives unpacking to more than a bundle holds (sparse files, gzip bombs, huge or endless
headers), installers that must never run, the wrong architecture or Python, bad SSH URLs, dry runs."""

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from edgeff.deploy import bundle as bundles, trust
from edgeff.errors import DeployError
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


# ---------------------------------------------------------------- refusals: archives unpacking past what a bundle holds

def _sparse_tar(tmp_path, *options):
    """A .tar.gz (a few hundred bytes) of a 3 GiB file that is all hole, written by GNU tar --sparse."""
    (tmp_path / "sparse").mkdir()
    with open(tmp_path / "sparse" / "model.onnx", "wb") as f:
        f.truncate(3 << 30)
    archive = tmp_path / "sparse.tar.gz"
    subprocess.run(["tar", "--sparse", *options, "-C", tmp_path / "sparse", "-czf", archive, "model.onnx"], check=True)
    shutil.rmtree(tmp_path / "sparse")
    return archive


@pytest.mark.parametrize("options", [["--format=gnu"], ["--format=posix", "--sparse-version=0.1"],
                                     ["--format=posix", "--sparse-version=1.0"]], ids=["gnu", "pax-0.1", "pax-1.0"])
def test_a_sparse_file_is_refused(tmp_path, options):
    one_line_error(edgeff("deploy", _sparse_tar(tmp_path, *options), "--to", f"file://{tmp_path}/device"),
                   "entry 'model.onnx' is a sparse file")


def _zeros_tar(path, members, kind=tarfile.REGTYPE):
    """A .tar.gz whose members ({name: MiB}) hold zeros, a KiB of gzip per MiB: the gzip of one MiB of
    zeros, repeated (a gzip file may hold many gzip members, read as one stream)."""
    mib = gzip.compress(bytes(1 << 20))
    with open(path, "wb") as f:
        for name, size in members.items():
            info = tarfile.TarInfo(name)
            info.type, info.size = kind, size << 20
            f.write(gzip.compress(info.tobuf(tarfile.GNU_FORMAT)) + mib * size)
        f.write(gzip.compress(bytes(1024)))       # the end of the archive
    return path


@pytest.mark.parametrize("members", [{"model.onnx": 1025}, {"model.onnx": 24, "wheels/big.whl": 1001}],
                         ids=["one entry", "in total"])
def test_a_gzip_bomb_is_refused_before_it_is_written(tmp_path, members):
    """Past 1 GiB (a real bundle is ~130 MiB), refused at the header of the entry that goes past it."""
    archive = _zeros_tar(tmp_path / "bomb.tar.gz", members)
    one_line_error(edgeff("deploy", archive, "--to", f"file://{tmp_path}/device"),
                   f"unpacks to more than 1,073,741,824 bytes (at entry '{list(members)[-1]}')")


def test_a_bundle_larger_than_the_free_disk_is_refused_before_it_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(bundles, "MAX_UNPACKED", 1 << 62)     # no cap: the disk's free space is the limit
    claim = shutil.disk_usage(tmp_path).total + 1             # more than the disk has, let alone has free
    archive = tmp_path / "big.tar.gz"
    info = tarfile.TarInfo("model.onnx")
    info.size = claim
    archive.write_bytes(gzip.compress(info.tobuf(tarfile.PAX_FORMAT) + bytes(1 << 20)))   # its first MiB
    (tmp_path / "work").mkdir()
    with pytest.raises(DeployError, match=r"unpacks to more than the [\d,]+ bytes free in .*'model.onnx'.*TMPDIR"):
        bundles.open_bundle(str(archive), str(tmp_path / "work"))
    assert not (tmp_path / "work" / "bundle" / "model.onnx").exists()


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.XGLTYPE],
                         ids=["pax", "gnu-longname", "pax-global"])
def test_an_extended_header_longer_than_a_path_is_refused_before_it_is_read(tmp_path, kind):
    """tarfile would read all 64 MiB it claims into memory before yielding a member."""
    archive = _zeros_tar(tmp_path / "header.tar.gz", {"././@LongHeader": 64}, kind)
    one_line_error(edgeff("deploy", archive, "--to", f"file://{tmp_path}/device"),
                   f"a tar extended header of type '{kind.decode()}' and 67,108,864 bytes")


def test_endless_headers_are_refused(tmp_path):
    """Thousands of pax headers, each for the next: tarfile reads them by recursion."""
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type, pax.size = tarfile.XHDTYPE, 512
    archive = tmp_path / "headers.tar.gz"
    archive.write_bytes(gzip.compress((pax.tobuf(tarfile.GNU_FORMAT) + b"11 a=bcdef\n".ljust(512, b"\0")) * 5000))
    one_line_error(edgeff("deploy", archive, "--to", f"file://{tmp_path}/device"), "not a bundle", "RecursionError")


def test_more_entries_than_a_bundle_has_are_refused(tmp_path):
    archive = tmp_path / "many.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for i in range(4097):
            tar.addfile(tarfile.TarInfo(f"f{i}"))
    one_line_error(edgeff("deploy", archive, "--to", f"file://{tmp_path}/device"), "more than 4096 entries")


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
