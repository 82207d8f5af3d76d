"""Bundles and deploys against real peers: an OpenSSH server on 127.0.0.1, a directory as an SD card,
real offline installs into venvs from a real wheelhouse."""

import glob
import importlib.metadata
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time

import pytest

from edgeff.deploy import trust
from edgeff.deploy.ssh import installer_program
from edgeff.deploy.targets import PROFILES, detect, get
from edgeff.errors import DeployError
from bundle_edit import rehash
from images import write_images_npz
from run_cli import edgeff as run_edgeff, ok, one_line_error
from sshd import Sshd


def edgeff(*args, timeout=900):
    return run_edgeff(*args, timeout=timeout)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_images_npz(tmp_path_factory.mktemp("data") / "images.npz")


def train(data, out, model="64-40-30"):
    ok(edgeff("train", "--dataset", data, "--model", model, "--epochs", "20", "--batch-size", "32", "--out", out,
              "--json"))
    return out


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    return train(data, d / "first"), train(data, d / "second", "64-24")


@pytest.fixture(scope="module")
def bundle(runs, tmp_path_factory):
    """A bundle with a real wheelhouse for this machine's architecture."""
    out = tmp_path_factory.mktemp("bundles") / "x86"
    return out, ok(edgeff("bundle", runs[0], "--target", "generic-x86_64", "-o", out, "--json"))


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = Sshd(str(tmp_path_factory.mktemp("sshd"))).start()
    yield server
    server.stop()


def over_ssh(server, root, *args):
    return edgeff("deploy", *args, "--to", f"ssh://device{root}", "--ssh-config", server.client_config)


def tree(root):
    """{path: bytes, or the target of a symlink} of everything under root."""
    return {p.relative_to(root).as_posix(): os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


# ---------------------------------------------------------------- targets

def test_profiles_cover_the_boards():
    for name in ("rpi5", "rpi4b", "rpi3b", "rpi-zero2w", "rpi5-trixie", "rpi4b-32", "jetson-nano", "jetson-orin-nano",
                 "generic-aarch64", "generic-armv7l", "generic-x86_64"):
        t = PROFILES[name]
        assert t.platforms[-1] == f"linux_{t.arch}" and t.default_budget_bytes < t.ram_bytes
    assert {"manylinux_2_28_aarch64", "manylinux2014_aarch64"} <= set(get("rpi5").platforms)
    assert not get("rpi4b-32").wheels and get("rpi4b-32").arch == "armv7l"
    assert detect("aarch64", "Raspberry Pi 5 Model B Rev 1.0").name == "rpi5"
    assert detect("armv7l", "Raspberry Pi 4 Model B Rev 1.4").name == "rpi4b-32"
    assert detect("aarch64", "NVIDIA Jetson Nano Developer Kit").name == "jetson-nano"
    assert detect("arm64", "").name == "generic-aarch64"
    with pytest.raises(DeployError, match="known: rpi5"):
        get("rpi9")


def test_profiles_carry_the_boards_python():
    boards = ("jetson-orin-nano", "rpi5", "rpi4b", "rpi3b", "rpi-zero2w", "rpi5-trixie")
    assert [(get(name).python, get(name).abi) for name in boards] == \
        [("3.10", "cp310")] + [("3.11", "cp311")] * 4 + [("3.13", "cp313")]
    assert get("rpi5-trixie").platforms[0] == "manylinux_2_41_aarch64"
    assert (get("rpi5").for_python("3.12").abi, get("rpi5").for_python(abi="cp313t").python) == ("cp312", "3.13")


# ---------------------------------------------------------------- bundles

def test_bundle_lists_every_file_and_is_reproducible(runs, tmp_path):
    a = ok(edgeff("bundle", runs[0], "--target", "rpi5", "--no-wheels", "-o", tmp_path / "a", "--json"))
    b = ok(edgeff("bundle", runs[0], "--target", "rpi5", "--no-wheels", "-o", tmp_path / "b.tar.gz", "--json"))
    assert a["release"] == b["release"] and a["files"] == b["files"]
    assert trust.verify(str(tmp_path / "a"))["release"] == a["release"]
    paths = {f["path"] for f in a["files"]}
    assert {"model.onnx", "run/model.npz", "run/config.json", "sample.npy",
            "wheels/edgeff-0.1.0-py3-none-any.whl"} <= paths
    assert "install.py" not in paths          # the device runs the host's installer, never the bundle's
    assert a["arch"] == "aarch64" and not a["wheelhouse"]
    with tarfile.open(tmp_path / "b.tar.gz") as tar:
        assert all(m.isfile() and m.uid == 0 and m.mtime == 0 for m in tar)


def test_wheelhouse_for_a_pi_holds_the_hosts_versions(runs, tmp_path):
    manifest = ok(edgeff("bundle", runs[0], "--target", "rpi5", "-o", tmp_path / "pi", "--json"))
    wheels = [f["path"].split("/")[1] for f in manifest["files"] if f["path"].startswith("wheels/")]
    for dist in ("numpy", "numba", "onnx", "onnxruntime", "llvmlite"):
        found = [w for w in wheels if re.match(rf"{dist}-\d", w)]
        assert len(found) == 1, (dist, wheels)
        assert found[0].split("-")[1] == importlib.metadata.version(dist), found[0]
        assert found[0].endswith(("aarch64.whl", "any.whl")), found[0]
    lock = (tmp_path / "pi" / "requirements.lock").read_text().splitlines()
    assert lock == ["==".join(w.split("-")[:2]) for w in sorted(wheels) if not w.startswith("edgeff-")]


def test_wheelhouse_downloads_exactly_the_pinned_versions(tmp_path):
    """The versions come from the pins, not from whatever the index has today: an older pyserial
    than the host's is what arrives, and every other wheel is the host's version."""
    from edgeff.deploy.bundle import RUNTIME, host_versions, wheelhouse
    pins = dict(host_versions(), pyserial="3.4")
    assert importlib.metadata.version("pyserial") != "3.4"
    lock = wheelhouse(get("generic-x86_64"), str(tmp_path), pins)
    got = {re.sub(r"[-_.]+", "-", w.split("-")[0]).lower(): w.split("-")[1] for w in os.listdir(tmp_path)}
    assert set(RUNTIME + ["llvmlite"]) <= set(got)
    assert all(pins[name] == version for name, version in got.items()), (got, pins)
    assert sorted(lock.splitlines()) == sorted("==".join(w.split("-")[:2]) for w in os.listdir(tmp_path))


def test_wheelhouse_for_a_jetson_is_for_its_python(runs, tmp_path):
    """JetPack 6 ships Python 3.10: every binary wheel is cp310 for aarch64, each at the host's version or,
    where that has no wheel for 3.10 (numpy 2.4, onnxruntime 1.32), the newest earlier release that has one."""
    from packaging.version import Version
    manifest = ok(edgeff("bundle", runs[0], "--target", "jetson-orin-nano", "-o", tmp_path / "jetson", "--json"))
    assert (manifest["python"], manifest["abi"]) == ("3.10", "cp310")
    wheels = [f["path"].split("/")[1] for f in manifest["files"] if f["path"].startswith("wheels/")]
    binary = [w for w in wheels if not w.endswith("-none-any.whl")]
    assert binary and all("-cp310-" in w and w.endswith("aarch64.whl") for w in binary), binary
    for dist in ("numpy", "numba", "onnx", "onnxruntime", "llvmlite"):
        found = [w for w in wheels if re.match(rf"{dist}-\d", w)]
        assert len(found) == 1 and Version(found[0].split("-")[1]) <= Version(importlib.metadata.version(dist)), found
    lock = (tmp_path / "jetson" / "requirements.lock").read_text().splitlines()
    assert lock == ["==".join(w.split("-")[:2]) for w in sorted(wheels) if not w.startswith("edgeff-")]


def test_bundle_for_another_python_than_the_targets(runs, tmp_path):
    for options, python, abi in [([], "3.10", "cp310"), (["--python-version", "3.13"], "3.13", "cp313"),
                                 (["--abi", "cp312"], "3.12", "cp312")]:
        out = tmp_path / f"jetson{len(options)}{python}"
        manifest = ok(edgeff("bundle", runs[0], "--target", "jetson-orin-nano", *options, "--no-wheels", "-o", out,
                             "--json"))
        assert (manifest["target"], manifest["python"], manifest["abi"]) == ("jetson-orin-nano", python, abi)


def pyenv_python(version):
    """pyenv's build of Python X.Y on this machine, or None."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", f"python{version}"))
    return found[0] if found else None


@pytest.mark.skipif(not pyenv_python("3.10"), reason="no pyenv build of Python 3.10 on this machine")
def test_a_bundle_for_python_310_installs_with_it(runs, tmp_path):
    """A device whose python3 is 3.10 (JetPack 6) runs the host's installer as ssh:// streams it: the bundle
    built for 3.10 installs offline into a 3.10 venv and passes the smoke test with its older wheels."""
    manifest = ok(edgeff("bundle", runs[0], "--target", "generic-x86_64", "--python-version", "3.10",
                         "-o", tmp_path / "b", "--json"))
    shutil.copytree(tmp_path / "b", tmp_path / "root" / "incoming" / manifest["release"])
    r = subprocess.run([pyenv_python("3.10"), "-", "install", "--root", tmp_path / "root", "--release",
                        manifest["release"]], input=installer_program(), capture_output=True, timeout=900)
    assert r.returncode == 0, r.stdout
    smoke = json.loads(r.stdout)["smoke"]
    assert smoke["infer_onnx"] == smoke["infer_run"] == "labels agree"
    assert os.listdir(tmp_path / "root" / "current" / "venv" / "lib") == ["python3.10"]


@pytest.mark.parametrize("options,says", [
    (["--python-version", "3.9"], "Python 3.10 and newer, not 3.9"),
    (["--python-version", "3"], "not X.Y"),
    (["--abi", "py3"], "not cp3XY"),
    (["--python-version", "3.12", "--abi", "cp313"], "ABI cp313 is not one of Python 3.12"),
])
def test_bad_python_for_a_bundle_is_one_line(runs, tmp_path, options, says):
    one_line_error(edgeff("bundle", runs[0], "--target", "rpi5", *options, "-o", tmp_path / "b"), says)
    assert not (tmp_path / "b").exists()


def test_no_wheels_on_pypi_for_armv7l(runs, tmp_path):
    one_line_error(edgeff("bundle", runs[0], "--target", "rpi4b-32", "-o", tmp_path / "b"), "--no-wheels")
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------- deploy over SSH

def test_ssh_deploy_redeploy_update_smoke_failure_rollback(sshd, bundle, runs, tmp_path):
    root = tmp_path / "device"
    bundle_dir, manifest = bundle
    first = ok(over_ssh(sshd, root, bundle_dir, "--json"))
    release = manifest["release"]
    assert first["install"]["current"] == release and first["install"]["previous"] is None
    smoke = first["install"]["smoke"]
    assert smoke == {"arch": "x86_64", "board": smoke["board"], "target": "generic-x86_64",
                     "infer_onnx": "labels agree", "infer_run": "labels agree",
                     "compile_seconds": smoke["compile_seconds"]} and smoke["compile_seconds"] > 0
    assert os.readlink(root / "current") == f"releases/{release}"
    assert first["sent_bytes"] == first["bundle_bytes"]

    again = ok(over_ssh(sshd, root, bundle_dir, "--json"))   # nothing changed: nothing sent
    assert again["sent_bytes"] == 0 and again["install"]["installed"] == "already"

    # a bundle whose smoke test fails (the host's expected labels are wrong) never becomes current
    bad = tmp_path / "bad"
    os.system(f"cp -r {bundle_dir} {bad}")
    labels = json.loads((bad / "sample_labels.json").read_text())
    (bad / "sample_labels.json").write_text(json.dumps([(c + 1) % 3 for c in labels]))
    m = rehash(bad)
    one_line_error(over_ssh(sshd, root, bad), "smoke test")
    assert os.readlink(root / "current") == f"releases/{release}"
    assert not (root / "releases" / m["release"]).exists()

    # a new model: the wheelhouse is already on the device, only the model files travel
    update = ok(over_ssh(sshd, root, runs[1], "--target", "generic-x86_64", "--no-smoke", "--json"))
    assert update["linked_files"] >= 12 and update["sent_bytes"] < update["bundle_bytes"] / 10
    assert os.readlink(root / "current") == f"releases/{update['release']}"

    back = ok(over_ssh(sshd, root, "--rollback", "--json"))
    assert back == {"previous": update["release"], "current": release}
    assert os.readlink(root / "current") == f"releases/{release}"
    one_line_error(edgeff("rollback", "--root", root), "no earlier release")


def test_sshd_killed_mid_transfer_then_resumed(tmp_path_factory, bundle, tmp_path):
    server = Sshd(str(tmp_path_factory.mktemp("sshd-kill"))).start()
    root = tmp_path / "device"
    bundle_dir, manifest = bundle
    cmd = [sys.executable, "-m", "edgeff.cli", "deploy", str(bundle_dir), "--to", f"ssh://device{root}",
           "--ssh-config", server.client_config, "--no-smoke"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        part = None
        while part is None and proc.poll() is None:
            parts = [p for p in root.glob("incoming/*/wheels/*.part") if p.stat().st_size > 0]
            part = parts[0] if parts else None
            time.sleep(0.002)
        assert part is not None, "the deploy finished before the server could be killed"
        server.kill()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and len(err.strip().splitlines()) == 1, err
        assert "deploy again" in err or "ssh failed" in err, err
        assert not (root / "current").exists()
        server.start()
        done = ok(subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=900))
        assert 0 < done["sent_bytes"] < done["bundle_bytes"]
        assert os.readlink(root / "current") == f"releases/{manifest['release']}"
        assert trust.verify(str(root / "releases" / manifest["release"]))
    finally:
        proc.kill()
        server.stop()


def test_ssh_errors_are_one_line(tmp_path, bundle):
    r = edgeff("deploy", bundle[0], "--to", "ssh://nobody@127.0.0.1:1/tmp/x", timeout=60)
    one_line_error(r, "ssh failed")


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


# ---------------------------------------------------------------- deploy over a serial line

def test_serial_deploy_redeploy_and_status(bundle, tmp_path):
    from ptyrelay import PtyRelay
    relay, root = PtyRelay(), tmp_path / "device"
    agent = subprocess.Popen([sys.executable, "-m", "edgeff.cli", "agent", "serial", "--port", relay.agent_name,
                              "--root", root], stderr=subprocess.PIPE)
    try:
        bundle_dir, manifest = bundle
        url = f"serial://{relay.host_name}?baud=921600"
        first = ok(edgeff("deploy", bundle_dir, "--to", url, "--no-smoke", "--json"))
        assert first["install"]["current"] == manifest["release"] and first["sent_bytes"] >= first["bundle_bytes"]
        assert trust.verify(str(root / "releases" / manifest["release"]))
        again = ok(edgeff("deploy", bundle_dir, "--to", url, "--json"))
        assert again["sent_bytes"] == 0
        one_line_error(edgeff("deploy", "--rollback", "--to", url), "no earlier release")
        assert os.readlink(root / "current") == f"releases/{manifest['release']}"
    finally:
        agent.kill()
        relay.close()
