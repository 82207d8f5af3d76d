"""Deploys that install: over SSH to a real OpenSSH server on 127.0.0.1 (deploy, redeploy, update,
smoke test, failure, rollback, a transfer resumed after sshd is killed) and over a serial line."""

import json
import os
import subprocess
import sys
import time


from edgeff.deploy import trust
from bundle_edit import rehash
from run_cli import ok, one_line_error
from sshd import Sshd
from deploy_rig import bundle, data, edgeff, over_ssh, runs, sshd  # noqa: F401 (fixtures)


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
