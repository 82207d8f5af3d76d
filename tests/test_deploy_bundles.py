"""Targets and bundles: the board profiles, bundles listing every file reproducibly, wheelhouses
for each board's Python and architecture, real offline installs from them."""

import glob
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import tarfile

import pytest

from edgeff.deploy import trust
from edgeff.deploy.ssh import installer_program
from edgeff.deploy.targets import PROFILES, detect, get
from edgeff.errors import DeployError
from run_cli import ok, one_line_error
from deploy_rig import data, edgeff, runs  # noqa: F401 (data: the fixture runs needs)


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


def test_a_bundle_with_the_fed_extra_carries_flowers_wheels_for_the_pi(runs, tmp_path):
    """--extra fed: Flower and what it requires, for the Pi's platform, at the host's versions, in the
    lock the device installs from (so flower-supernode lands in the release's venv)."""
    manifest = ok(edgeff("bundle", runs[0], "--target", "rpi5", "--extra", "fed", "-o", tmp_path / "pi", "--json"))
    assert manifest["extras"] == ["fed"]
    wheels = [f["path"].split("/")[1] for f in manifest["files"] if f["path"].startswith("wheels/")]
    for dist in ("flwr", "grpcio", "protobuf", "numpy", "numba"):
        found = [w for w in wheels if re.match(rf"{dist}-\d", w)]
        assert len(found) == 1 and found[0].split("-")[1] == importlib.metadata.version(dist), (dist, wheels)
        assert found[0].endswith(("aarch64.whl", "any.whl")), found[0]
    lock = (tmp_path / "pi" / "requirements.lock").read_text().splitlines()
    assert f"flwr=={importlib.metadata.version('flwr')}" in lock
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


def _installs_on_cp310(wheel):
    """A wheel for CPython 3.10: cp310, or the stable ABI (abi3) of an earlier CPython (protobuf's wheels)."""
    python, abi = wheel.removesuffix(".whl").split("-")[-3:-1]
    return python == "cp310" or (abi == "abi3" and python.startswith("cp3") and int(python[3:]) <= 10)


def test_wheelhouse_for_a_jetson_is_for_its_python(runs, tmp_path):
    """JetPack 6 ships Python 3.10: every binary wheel is for cp310 (or abi3) on aarch64, each at the host's version or,
    where that has no wheel for 3.10 (numpy 2.4, onnxruntime 1.32), the newest earlier release that has one."""
    from packaging.version import Version
    manifest = ok(edgeff("bundle", runs[0], "--target", "jetson-orin-nano", "-o", tmp_path / "jetson", "--json"))
    assert (manifest["python"], manifest["abi"]) == ("3.10", "cp310")
    wheels = [f["path"].split("/")[1] for f in manifest["files"] if f["path"].startswith("wheels/")]
    binary = [w for w in wheels if not w.endswith("-none-any.whl")]
    assert binary and all(_installs_on_cp310(w) and w.endswith("aarch64.whl") for w in binary), binary
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
    (["--extra", "fed", "--no-wheels"], "--extra fed ships wheels"),
    (["--extra", "fed", "--python-version", "3.10"], "--extra fed needs Python 3.11 or newer on the device"),
])
def test_bad_python_for_a_bundle_is_one_line(runs, tmp_path, options, says):
    one_line_error(edgeff("bundle", runs[0], "--target", "rpi5", *options, "-o", tmp_path / "b"), says)
    assert not (tmp_path / "b").exists()


def test_no_wheels_on_pypi_for_armv7l(runs, tmp_path):
    one_line_error(edgeff("bundle", runs[0], "--target", "rpi4b-32", "-o", tmp_path / "b"), "--no-wheels")
    assert not (tmp_path / "b").exists()
