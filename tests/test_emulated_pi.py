"""A real aarch64 userland as the deploy target: Debian bookworm arm64 under qemu-user
(tools/emulated-pi), reached over SSH like a Raspberry Pi on the desk. The 512 MB board: the
784-2000x4 net trains on it inside a 512 MiB memory cgroup (qemu-user runs the emulated process
as a host process, so a cgroup made on the host holds it; its translated code counts too).

Slow (about 10 minutes: emulated pip install, Numba compiling under emulation), so it
runs only when asked, as root:

    EDGEFF_EMULATED_PI=1 python -m pytest -q tests/test_emulated_pi.py
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from edgeff.data import load_dataset
from test_cgroup import MiB, memory_limit_cgroup  # noqa: F401  (a fixture)

pytestmark = pytest.mark.skipif(os.environ.get("EDGEFF_EMULATED_PI") != "1",
                                reason="slow: set EDGEFF_EMULATED_PI=1 (as root) to deploy into an emulated Pi")

# `edgeff train` on the Pi inside the 512 MiB cgroup (tools/emulated-pi's README section shows it by hand)
PI_512_TRAIN = ("--dataset fashion-60k.npz --model 784-2000-2000-2000-2000 --schedule layerwise "
                "--memory-budget 512MiB --limit-train 200 --epochs 1 --head-epochs 1")
TOOL = os.path.join(os.path.dirname(__file__), "..", "tools", "emulated-pi")


def edgeff(*args):
    r = subprocess.run([sys.executable, "-m", "edgeff.cli", *map(str, args)], capture_output=True, text=True,
                       timeout=3600)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def pi():
    out = subprocess.run([TOOL, "start"], capture_output=True, text=True, timeout=3600, check=True).stdout
    url, _, config = out.strip().splitlines()[-1].partition(" --ssh-config ")
    yield url, config

    
def on_pi(pi, command):
    r = subprocess.run(["ssh", "-F", pi[1], "emulated-pi", command], capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def deployed(pi, tmp_path_factory):
    """(bundle dir, deploy report, a tiny .npz): a small run bundled for rpi5 and deployed to the Pi."""
    url, config = pi
    tmp_path = tmp_path_factory.mktemp("deployed")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    x = np.clip(rng.integers(0, 256, (3, 8, 8))[y] + rng.normal(0, 30, (400, 8, 8)), 0, 255).astype(np.uint8)
    data = tmp_path / "tiny.npz"
    np.savez(data, x_train=x[:300], y_train=y[:300], x_test=x[300:], y_test=y[300:])
    run = tmp_path / "run"
    edgeff("train", "--dataset", data, "--model", "64-32-32", "--epochs", "20", "--batch-size", "32", "--out", run,
           "--quiet")
    bundle = tmp_path / "bundle"
    manifest = json.loads(edgeff("bundle", run, "--target", "rpi5", "-o", bundle, "--json"))
    assert any(f["path"].startswith("wheels/numba-") and f["path"].endswith("aarch64.whl") for f in manifest["files"])

    return bundle, json.loads(edgeff("deploy", bundle, "--to", url, "--ssh-config", config, "--json")), data


def test_bundle_deploy_infer_and_train_on_aarch64(pi, deployed):
    config = pi[1]
    bundle, report, data = deployed
    smoke = report["install"]["smoke"]
    assert smoke["arch"] == "aarch64" and smoke["infer_onnx"] == smoke["infer_run"] == "labels agree"

    info = json.loads(on_pi(pi, "edgeff/current/venv/bin/edgeff info --json"))
    assert info["arch"] == "aarch64" and info["target"].endswith("aarch64")
    host = json.loads(edgeff("infer", bundle / "model.onnx", bundle / "sample.npy", "--json"))["labels"]
    device = json.loads(on_pi(pi, "edgeff/current/venv/bin/edgeff infer edgeff/current/model.onnx "
                                  "edgeff/current/sample.npy --json"))["labels"]
    assert device == host

    subprocess.run(["scp", "-F", config, str(data), "emulated-pi:tiny.npz"], check=True, timeout=600)
    trained = json.loads(on_pi(pi, "edgeff/current/venv/bin/edgeff train --dataset tiny.npz --model 64-16 "
                                   "--epochs 2 --batch-size 16 --memory-budget 512MiB --out pi-run --force --json --quiet"))
    assert trained["train_samples"] == 300 and 0.0 <= trained["test_error"] <= 1.0


def test_784_2000x4_trains_inside_a_512_MiB_cgroup_on_aarch64(pi, deployed, memory_limit_cgroup, tmp_path):
    cgroup, limit_file = memory_limit_cgroup
    limit = 512 * MiB
    with open(os.path.join(cgroup, limit_file), "w") as f:
        f.write(str(limit))
    # all 60,000 Fashion-MNIST training images (uint8, as the IDX files load) and the first 100 test images:
    # under emulation (about 0.2 GFLOP/s) a full test pass of this net would take the better part of an hour
    ds = load_dataset("fashion-mnist")
    data = tmp_path / "fashion-60k.npz"
    np.savez(data, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test[:100], y_test=ds.y_test[:100])
    subprocess.run(["scp", "-F", pi[1], str(data), "emulated-pi:fashion-60k.npz"], check=True, timeout=600)
    out = on_pi(pi, f'echo $$ > {cgroup}/cgroup.procs && grep memory /proc/self/cgroup && exec '
                    f'edgeff/current/venv/bin/edgeff train {PI_512_TRAIN} --out pi-512 --force --json --quiet')
    inside, *_, last = out.strip().splitlines()
    assert inside.endswith("/" + os.path.basename(cgroup))                  # the emulated process is in it
    report = json.loads(last)
    assert report["model"] == "784-2000-2000-2000-2000" and 0.0 <= report["test_error"] <= 1.0
    peak_file = os.path.join(cgroup, "memory.max_usage_in_bytes" if limit_file.startswith("memory.limit")
                             else "memory.peak")
    with open(peak_file) as f:
        peak = int(f.read())
    assert peak <= limit
    print(f"\n512 MiB cgroup on the emulated Pi: peak {peak / MiB:.1f} MiB, train {report['train_seconds']:.0f} s,"
          f" test error {report['test_error']:.4f}")
