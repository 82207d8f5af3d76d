"""A hostile host against a real agent over real ptys: it must refuse, keep serving, and never
touch anything outside its root. Each test replays an attack that worked on the agent before."""

import hashlib
import json
import os

import pytest

from edgeff.deploy import install as device
from edgeff.deploy.trust import release_id
from edgeff.deploy.serial_link import DATA, OFFSET, REPLY, REQUEST
from edgeff.errors import DeployError
from serial_rig import make_rig  # noqa: F401  (a fixture)


def request(t, message):
    """Send any JSON as a REQUEST (a host that skips every check of its own); the result or DeployError."""
    return t._result(t._exchange(REQUEST, lambda attempt: json.dumps(message).encode(), "request"))


def put_bytes(t, tmp_path, rel, data):
    """Send `data` to ROOT/rel through the transport, as a host would."""
    local = tmp_path / "to-send"
    local.write_bytes(data)
    t.put(local, rel, hashlib.sha256(data).hexdigest())


def put_manifest(t, tmp_path, rel, files, **fields):
    manifest = {"files": files, "release": release_id(files), "arch": "any", **fields}
    put_bytes(t, tmp_path, rel, json.dumps(manifest).encode())
    return manifest["release"]


def fingerprint(path):
    """What must not change of a file the host must not reach: its inode and its content."""
    with open(path, "rb") as f:
        return os.fstat(f.fileno()).st_ino, f.read()


def test_adopt_cannot_link_a_file_outside_the_root_to_write_through_it(make_rig, tmp_path):
    rig = make_rig()
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious data outside the root")
    before = fingerprint(victim)
    victim_sha = hashlib.sha256(victim.read_bytes()).hexdigest()
    with rig.transport() as t:
        fake = [{"path": "../../../victim", "sha256": victim_sha}]     # ROOT/releases/X/../../../victim
        put_manifest(t, tmp_path, f"releases/{release_id(fake)}/manifest.json", fake)
        wanted = [{"path": "x.part", "sha256": victim_sha}]
        release = put_manifest(t, tmp_path, f"incoming/{release_id(wanted)}/manifest.json", wanted)
        adopted = t.call("adopt", release=release)
        put_bytes(t, tmp_path, f"incoming/{release}/x", b"overwritten by the host")
    assert fingerprint(victim) == before
    assert adopted == {"release": release, "missing": ["x.part"], "linked": 0}


def test_a_hard_linked_part_is_replaced_not_written_through(make_rig, tmp_path):
    """Whatever way a .part came to share its inode, a put never truncates or writes into it."""
    rig = make_rig()
    kept = os.path.join(rig.root, "kept.bin")
    with open(kept, "wb") as f:
        f.write(b"an installed file")
    os.link(kept, os.path.join(rig.root, "x.part"))
    data = b"new contents"
    sha = hashlib.sha256(data).hexdigest()
    with open(os.path.join(rig.root, "x.part.sha256"), "w") as f:
        f.write(f"{sha} {len(data)}\n")                 # a note that asks for the .part to be resumed
    os.symlink("kept.bin", os.path.join(rig.root, "y.part"))     # a symlink, even one inside the root
    with open(os.path.join(rig.root, "y.part.sha256"), "w") as f:
        f.write(f"{sha} {len(data)}\n")
    before = fingerprint(kept)
    with rig.transport() as t:
        put_bytes(t, tmp_path, "x", data)
        put_bytes(t, tmp_path, "y", data)
    assert fingerprint(kept) == before and os.stat(kept).st_nlink == 1
    for name in ("x", "y"):
        with open(os.path.join(rig.root, name), "rb") as f:
            assert f.read() == data


def test_install_release_outside_the_root_is_refused_not_removed(make_rig, tmp_path):
    rig = make_rig()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "manifest.json").write_text(json.dumps({"files": [], "release": release_id([]), "arch": "any"}))
    with rig.transport() as t:
        with pytest.raises(DeployError, match="refused release '/.*outside': a release id is 16 lowercase hex"):
            t.call("install", release=str(outside))
        assert t.call("ping")["root"] == rig.root
    assert os.listdir(outside) == ["manifest.json"]


def test_install_cannot_point_current_outside_the_root(make_rig, tmp_path):
    rig = make_rig()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".installed").write_text("elsewhere\n")
    os.makedirs(os.path.join(rig.root, "releases"))     # ROOT/releases/../../elsewhere resolves
    with rig.transport() as t:
        with pytest.raises(DeployError, match="refused release '../../elsewhere'"):
            t.call("install", release="../../elsewhere")
        put_bytes(t, tmp_path, "history.json", json.dumps(["../../elsewhere", "0123456789abcdef"]).encode())
        with pytest.raises(DeployError, match="no earlier release to roll back to"):
            t.call("rollback")
    assert not os.path.lexists(os.path.join(rig.root, "current"))


def test_adopt_cannot_read_a_manifest_outside_the_root(make_rig, tmp_path):
    rig = make_rig()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    files = [{"path": "secret-name", "sha256": "0" * 64}]
    (elsewhere / "manifest.json").write_text(json.dumps({"files": files, "release": release_id(files)}))
    with rig.transport() as t:
        for release in ("../../elsewhere", str(elsewhere), "ABCDEF0123456789", "0123456789abcde", 12, None):
            with pytest.raises(DeployError, match=f"refused release {release!r}"):
                t.call("adopt", release=release)


@pytest.mark.parametrize("kwargs, error", [
    ({"keep": 0}, "keep must be an integer of at least 1, got 0"),
    ({"keep": "3"}, "keep must be an integer of at least 1, got '3'"),
    ({"keep": True}, "keep must be an integer of at least 1, got True"),
    ({"smoke": "no"}, "smoke must be true or false, got 'no'"),
    ({"force": True}, "install takes release, keep, smoke; got release, force"),
])
def test_install_options_are_checked(make_rig, kwargs, error):
    rig = make_rig()
    with rig.transport() as t:
        with pytest.raises(DeployError) as info:
            t.call("install", release="0123456789abcdef", **kwargs)
        assert error in str(info.value) and "\n" not in str(info.value)
        assert t.call("ping")["root"] == rig.root


def test_negative_size_then_data_frame_does_not_kill_the_agent(make_rig):
    rig = make_rig()
    with rig.transport() as t:
        with pytest.raises(DeployError, match="put: size must be an integer from 0 to"):
            request(t, {"op": "put", "path": "x", "sha256": "0" * 64, "size": -5})
        answer = t._exchange(DATA, lambda attempt: OFFSET.pack(0) + b"x", "DATA frame")
        assert answer.type == REPLY and "no transfer open" in json.loads(answer.payload)["error"]
        assert t.call("ping")["root"] == rig.root
    assert not os.path.exists(os.path.join(rig.root, "x"))


@pytest.mark.parametrize("message, error", [
    ([1, 2], "the request must be a JSON object with an 'op'"),
    ({"op": 7}, "the request must be a JSON object with an 'op'"),
    ({"op": "format"}, "the agent does not know the request 'format'"),
    ({"op": "hashes", "paths": "x"}, "hashes: paths must be a list of at most 64 strings"),
    ({"op": "hashes", "paths": [1]}, "hashes: paths must be a list of at most 64 strings"),
    ({"op": "hashes", "paths": ["x"] * 65}, "hashes: paths must be a list of at most 64 strings"),
    ({"op": "put", "path": ["x"], "sha256": "0" * 64, "size": 1}, "put: path must be a string"),
    ({"op": "put", "path": "x", "sha256": "0" * 63, "size": 1}, "put: sha256 must be 64 lowercase hex digits"),
    ({"op": "put", "path": "x", "sha256": "G" * 64, "size": 1}, "put: sha256 must be 64 lowercase hex digits"),
    ({"op": "put", "path": "x", "sha256": "0" * 64, "size": 1.5}, "put: size must be an integer from 0 to"),
    ({"op": "put", "path": "x", "sha256": "0" * 64, "size": 10 ** 30}, "put: size must be an integer from 0 to"),
    ({"op": "put", "path": "x", "sha256": "0" * 64, "size": True}, "put: size must be an integer from 0 to"),
    ({"op": "commit", "path": None, "sha256": "0" * 64}, "commit: path must be a string"),
    ({"op": "call", "action": ["ping"]}, "call: action must be a string"),
    ({"op": "call", "action": "ping", "kwargs": [1]}, "call: kwargs must be an object"),
    ({"op": "call", "action": "ping", "kwargs": {"x": 1}}, "ping takes no arguments; got x"),
    ({"op": "call", "action": "adopt", "kwargs": {}}, "adopt takes release; got no arguments"),
])
def test_every_bad_field_gets_an_error_reply(make_rig, message, error):
    rig = make_rig()
    with rig.transport() as t:
        with pytest.raises(DeployError) as info:
            request(t, message)
        assert error in str(info.value) and "\n" not in str(info.value)
        assert t.call("ping")["root"] == rig.root


# ------------------------------------------------ adopt's rule for what it may hard-link

def make_release(root, tree, files, write=True):
    """ROOT/tree/<id>/ with a manifest of `files` ({path: bytes}), the files too if `write`."""
    entries = [{"path": rel, "sha256": hashlib.sha256(data).hexdigest()} for rel, data in files.items()]
    release = release_id(entries)
    top = root / tree / release
    top.mkdir(parents=True)
    (top / "manifest.json").write_text(json.dumps({"files": entries, "release": release, "arch": "any"}))
    for rel, data in files.items() if write else ():
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_bytes(data)
    return release


def test_adopt_links_release_to_release_but_not_a_shared_inode(tmp_path):
    """A file adopted release to release has one link per release holding it (installed or
    staged); a link from anywhere else makes adopt send the file again instead."""
    root = tmp_path / "root"
    wheel = b"a wheel every release shares"
    a = make_release(root, "releases", {"w/x.whl": wheel, "m": b"model a", "same": b"model a"})
    a_wheel = root / "releases" / a / "w" / "x.whl"

    b = make_release(root, "incoming", {"w/x.whl": wheel, "m": b"model b"}, write=False)
    assert device.adopt(str(root), b) == {"release": b, "missing": ["m"], "linked": 1}
    os.rename(root / "incoming" / b, root / "releases" / b)      # as install does
    c = make_release(root, "incoming", {"w/x.whl": wheel, "m": b"model c", "m2": b"model a"}, write=False)
    assert device.adopt(str(root), c) == {"release": c, "missing": ["m"], "linked": 2}
    (root / "incoming" / c / "m").write_bytes(b"model c")      # staged, not installed: no source
    d = make_release(root, "incoming", {"w/x.whl": wheel, "m": b"model c"}, write=False)
    assert device.adopt(str(root), d) == {"release": d, "missing": ["m"], "linked": 1}
    assert os.stat(a_wheel).st_nlink == 4                      # releases a and b, incoming c and d

    os.link(a_wheel, tmp_path / "a-link-outside")               # another tree now shares the inode
    e = make_release(root, "incoming", {"w/x.whl": wheel}, write=False)
    assert device.adopt(str(root), e) == {"release": e, "missing": ["w/x.whl"], "linked": 0}

    os.unlink(tmp_path / "a-link-outside")
    os.unlink(root / "releases" / a / "m")
    os.symlink("same", root / "releases" / a / "m")            # a symlink, even inside the release
    f = make_release(root, "incoming", {"m": b"model a", "w/x.whl": wheel}, write=False)
    assert device.adopt(str(root), f)["linked"] == 2 and os.path.samefile(root / "incoming" / f / "m",
                                                                          root / "releases" / a / "same")


def test_a_release_dir_must_hold_its_own_manifest(tmp_path):
    root = tmp_path / "root"
    a = make_release(root, "incoming", {"m": b"model a"})
    b = make_release(root, "incoming", {"m": b"model b"})
    os.replace(root / "incoming" / a / "manifest.json", root / "incoming" / b / "manifest.json")
    for action in (device.adopt, device.install):
        with pytest.raises(DeployError, match=f"incoming/{b}: its manifest.json is the one of release {a}"):
            action(str(root), b)
