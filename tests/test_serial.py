"""The serial transport against a real agent over real ptys (no mocks, no loop://).

Host and agent each open the slave of their own pty pair with pyserial; a relay thread
copies bytes between the two masters and can corrupt them (bit flips, dropped bytes),
pace them at a line rate, or stop forwarding: a cable that misbehaves on demand.
"""

import hashlib
import os
import random
import subprocess
import sys

import pytest

from edgeff.deploy.serial_link import SerialTransport
from edgeff.errors import DeployError
from ptyrelay import PtyRelay
from serial_rig import make_rig  # noqa: F401  (a fixture)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def make_files(directory, sizes, seed=0):
    """{rel_path: local path} of random files of the given sizes."""
    rng = random.Random(seed)
    directory.mkdir(exist_ok=True)
    files = {}
    for i, size in enumerate(sizes):
        path = directory / f"f{i}-{size}.bin"
        path.write_bytes(rng.randbytes(size))
        files[f"d{i % 2}/sub/{path.name}"] = path
    return files


def put_all(transport, files):
    return {rel: transport.put(path, rel, sha256(path)) for rel, path in files.items()}


def assert_arrived(root, files):
    for rel, path in files.items():
        assert sha256(os.path.join(root, rel)) == sha256(path), rel
        assert not os.path.exists(os.path.join(root, rel + ".part"))


MiB = 1 << 20


def test_files_arrive_identical(make_rig, tmp_path):
    rig = make_rig()
    files = make_files(tmp_path / "src", [0, 1, 5000, MiB])
    seen = []
    with rig.transport() as t:
        sent = put_all(t, {k: v for k, v in files.items() if "1048576" not in k})
        big = next(k for k in files if "1048576" in k)
        sent[big] = t.put(files[big], big, sha256(files[big]), progress=seen.append)
        assert t.hashes(files) == {rel: sha256(path) for rel, path in files.items()}
    assert_arrived(rig.root, files)
    assert all(sent[rel] >= os.path.getsize(path) for rel, path in files.items())
    assert seen[0] == 0 and sum(seen) == MiB and min(seen) >= 0   # increments, as Progress.update takes



def test_hashes_of_present_and_absent_files(make_rig):
    rig = make_rig()
    os.makedirs(os.path.join(rig.root, "a"))
    with open(os.path.join(rig.root, "a", "x"), "wb") as f:
        f.write(b"hello")
    rels = ["a/x", "a/missing", "nowhere/y", "a"] + [f"n{i}" for i in range(40)]   # > one batch of paths
    with rig.transport() as t:
        got = t.hashes(rels)
    assert got["a/x"] == hashlib.sha256(b"hello").hexdigest()
    assert set(got) == set(rels) and all(got[rel] is None for rel in rels[1:])


def test_noisy_line_still_delivers_identical_files(make_rig, tmp_path):
    rig = make_rig(fault_rate=1e-4, seed=6)
    files = make_files(tmp_path / "src", [0, 1, 3000, MiB, 300_000], seed=1)
    with rig.transport(timeout=1.0) as t:
        sent = put_all(t, files)
        assert t.hashes(files) == {rel: sha256(path) for rel, path in files.items()}
    assert_arrived(rig.root, files)
    assert rig.relay.flips > 10 and rig.relay.drops > 10        # the line really was noisy
    assert sum(sent.values()) > sum(os.path.getsize(p) for p in files.values())   # and chunks were resent


def test_interrupted_transfer_resumes_from_the_last_acknowledged_offset(make_rig, tmp_path):
    size = MiB
    rig = make_rig(cut_after=700_000)
    (path,) = make_files(tmp_path / "src", [size], seed=2).values()
    with rig.transport(timeout=0.2) as t:
        with pytest.raises(DeployError, match="no answer from the agent"):
            t.put(path, "model.bin", sha256(path))
    part = os.path.join(rig.root, "model.bin.part")
    assert 0 < os.path.getsize(part) <= 700_000 and not os.path.exists(os.path.join(rig.root, "model.bin"))

    rig.relay.restore()                   # the cable is back; a new host process resumes
    seen = []
    with rig.transport() as t:
        sent = t.put(path, "model.bin", sha256(path), progress=seen.append)
    assert sent < size - 600_000 and seen[0] > 600_000
    assert sha256(os.path.join(rig.root, "model.bin")) == sha256(path) and not os.path.exists(part)


def test_partial_of_another_file_is_not_resumed(make_rig, tmp_path):
    rig = make_rig(cut_after=300_000)
    old, new = make_files(tmp_path / "src", [600_000, 600_000], seed=3).values()
    with rig.transport(timeout=0.2) as t:
        with pytest.raises(DeployError):
            t.put(old, "w.bin", sha256(old))
    rig.relay.restore()
    seen = []
    with rig.transport() as t:
        t.put(new, "w.bin", sha256(new), progress=seen.append)
    assert seen[0] == 0                                          # other sha256: from the start
    assert sha256(os.path.join(rig.root, "w.bin")) == sha256(new)


def test_wrong_sha256_is_refused_and_the_partial_deleted(make_rig, tmp_path):
    rig = make_rig()
    (path,) = make_files(tmp_path / "src", [10_000], seed=4).values()
    with rig.transport() as t:
        with pytest.raises(DeployError, match="expected sha256 0{64}; the partial file was deleted"):
            t.put(path, "m.bin", "0" * 64)
        assert t.hashes(["m.bin"]) == {"m.bin": None}
    assert os.listdir(rig.root) == []


def test_paths_outside_the_root_are_refused(make_rig, tmp_path):
    rig = make_rig()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"keep me")
    os.symlink(outside, os.path.join(rig.root, "link"))
    os.symlink(outside / "secret", os.path.join(rig.root, "evil"))
    (src,) = make_files(tmp_path / "src", [100], seed=5).values()
    before = sorted(os.listdir(tmp_path)), sorted(os.listdir(outside))
    bad = ["../x", "/etc/x", f"{outside}/x", "a/../../x", "link/x", "evil", "", "a//b", "./x"]
    with rig.transport() as t:
        for rel in bad:
            with pytest.raises(DeployError, match="refused path"):
                t.put(src, rel, sha256(src))
        for rel in ("link/secret", "../outside/secret", "/etc/passwd"):
            with pytest.raises(DeployError, match="refused path"):
                t.hashes([rel])
        assert t.call("ping")["root"] == rig.root         # still serving
    assert (sorted(os.listdir(tmp_path)), sorted(os.listdir(outside))) == before
    assert (outside / "secret").read_bytes() == b"keep me" and not os.path.exists("/etc/x")
    assert sorted(os.listdir(rig.root)) == ["evil", "link"]


def test_no_agent_is_one_line_error_in_bounded_time(tmp_path):
    with PtyRelay() as relay, SerialTransport(relay.host_name, timeout=0.1) as t:
        with pytest.raises(DeployError) as info:
            t.call("ping")
    message = str(info.value)
    assert "\n" not in message and f"serial://{relay.host_name}: no answer from the agent after" in message
    assert "is 'edgeff agent serial' running on the device at 115200 baud?" in message
    with pytest.raises(DeployError, match="cannot open serial port"):
        SerialTransport(str(tmp_path / "no-such-tty"))


def test_actions_are_forwarded_and_nothing_else_runs(make_rig):
    rig = make_rig()
    with rig.transport() as t:
        ping = t.call("ping")
        assert {"edgeff_version", "machine", "root"} <= set(ping) and ping["root"] == rig.root
        assert set(t.probe()) == {"machine", "model", "python"}
        assert t.call("status")["current"] is None
        with pytest.raises(DeployError, match="no earlier release to roll back to"):
            t.call("rollback")                     # the installer's own error, forwarded in one line
        with pytest.raises(DeployError, match="unknown agent action"):
            t.call("reboot")
        with pytest.raises(DeployError, match="the agent does not run 'reboot'"):
            t._request({"op": "call", "action": "reboot", "kwargs": {}})   # a host that skips the check
    with rig.transport(root_hint="/somewhere/else") as t:
        with pytest.raises(DeployError, match="the agent serves .*, not /somewhere/else"):
            t.hashes(["x"])
    with rig.transport(root_hint=rig.root) as t:
        assert t.hashes(["x"]) == {"x": None}


def test_cli_agent_serves(tmp_path):
    root = tmp_path / "device"
    with PtyRelay() as relay:
        agent = subprocess.Popen([sys.executable, "-m", "edgeff.cli", "agent", "serial", "--port", relay.agent_name,
                                  "--root", str(root)], stderr=subprocess.PIPE, text=True)
        try:
            first = agent.stderr.readline()
            assert "edgeff agent: serving" in first, first + (agent.stderr.read() if agent.poll() is not None else "")
            (src,) = make_files(tmp_path / "src", [20_000], seed=7).values()
            with SerialTransport(relay.host_name, timeout=1.0) as t:
                assert t.call("ping")["root"] == str(root)
                t.put(src, "bundle/model.onnx", sha256(src))
            assert sha256(root / "bundle" / "model.onnx") == sha256(src)
        finally:
            agent.terminate()
            agent.wait(timeout=30)
            agent.stderr.close()
