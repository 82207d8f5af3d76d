"""A real aarch64 userland as the deploy target: Debian bookworm arm64 under qemu-user
(tools/emulated-pi), reached over SSH like a Raspberry Pi on the desk.

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

pytestmark = pytest.mark.skipif(os.environ.get("EDGEFF_EMULATED_PI") != "1",
                                reason="slow: set EDGEFF_EMULATED_PI=1 (as root) to deploy into an emulated Pi")

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


def test_bundle_deploy_infer_and_train_on_aarch64(pi, tmp_path):
    url, config = pi
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

    report = json.loads(edgeff("deploy", bundle, "--to", url, "--ssh-config", config, "--json"))
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
