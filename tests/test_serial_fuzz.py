"""Fuzz the serial agent over a real pty pair: thousands of frames from a seeded mutator (random
bytes, damaged and truncated frames, requests with wrong JSON types, hostile paths and release
ids, negative and huge sizes, DATA frames at wild offsets). After each burst the agent must
still answer a ping, and nothing outside its root may have changed: a sibling directory is
compared with a snapshot, and a victim file there (hard-linked into the root as a tempting
.part, and reachable through a symlink in the root) keeps its inode and its content."""

import hashlib
import json
import os
import pathlib
import random
import threading

from edgeff.deploy.serial_link import ACTIONS, DATA, MAGIC, MAX_PAYLOAD, OFFSET, REQUEST, encode_frame
from serial_rig import make_rig  # noqa: F401  (a fixture)

SEED = 20261126
BURSTS = 30
FRAMES_PER_BURST = 150

VICTIM = b"the victim: a file outside the agent's root"
VICTIM_SHA = hashlib.sha256(VICTIM).hexdigest()


class Mutator:
    """Hostile frames, every one of them from one seeded random.Random."""

    def __init__(self, seed, outside):
        self.rng = random.Random(seed)
        self.paths = ["x", "d/e/f.bin", "v", "v.part", "v.part.sha256", "link/x", "link/victim", "../x",
                      "../outside/victim", f"{outside}/victim", "/etc/passwd", "", ".", "a//b", "a/./b", "a\\b",
                      "x\0y", "é/ü", "a" * 300, "/".join(["d"] * 200), "current", "history.json",
                      "releases/0123456789abcdef/manifest.json", "incoming/0123456789abcdef/x.part"]
        self.releases = ["0123456789abcdef", "../../outside", str(outside), "ABCDEF0123456789", "0" * 17, ""]
        self.builders = [self.garbage, self.request, self.request, self.request, self.data, self.damaged,
                         self.mangled_json]

    def frames(self):
        """A few frames: mostly one from a random builder, sometimes a whole (hostile) transfer."""
        if self.rng.random() < 0.1:
            return self.transfer()
        return [self.rng.choice(self.builders)()]

    def transfer(self):
        """A valid put, then DATA frames at plausible and wild offsets, then maybe a commit."""
        rng = self.rng
        path, sha256, size = rng.choice(["x", "d/e/f.bin", "v"]), rng.choice(["0" * 64, VICTIM_SHA]), rng.choice(
            [0, 100, 5000, len(VICTIM)])
        frames = [encode_frame(REQUEST, self.seq(), json.dumps({"op": "put", "path": path, "sha256": sha256,
                                                               "size": size}).encode())]
        frames += [self.data() for _ in range(rng.randrange(1, 8))]
        if rng.random() < 0.5:
            frames.append(encode_frame(REQUEST, self.seq(), json.dumps({"op": "commit", "path": path,
                                                                       "sha256": sha256}).encode()))
        return frames

    def seq(self):
        return self.rng.randrange(0xE000)        # the pinging transport uses 0xF000 and up

    def value(self, depth=0):
        """Any JSON value, weighted towards the ones that break careless code."""
        rng = self.rng
        kind = rng.randrange(9 if depth < 3 else 6)
        if kind == 0:
            return rng.choice([None, True, False])
        if kind == 1:
            return rng.choice([0, 1, -1, -5, 2**31, 2**63, 2**64 + 1, -2**63, 10**30, rng.randrange(-10**6, 10**6)])
        if kind == 2:
            return rng.choice([0.5, -0.0, 1e308, float("nan"), float("inf"), -float("inf")])
        if kind == 3:
            return rng.choice(self.paths + self.releases)
        if kind == 4:
            return "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(40)))
        if kind == 5:
            return rng.choice(["0" * 64, VICTIM_SHA, "F" * 64, "0" * 65])
        if kind == 6:
            return [self.value(depth + 1) for _ in range(rng.randrange(4))]
        if kind == 7:
            return [rng.choice(self.paths) for _ in range(rng.randrange(100))]
        return {rng.choice(["path", "op", "size", "release", "keep", "smoke", "x"]): self.value(depth + 1)
                for _ in range(rng.randrange(4))}

    def message(self):
        """A request that is mostly well formed, with some fields wrong, missing or extra."""
        rng = self.rng
        op = rng.choice(["hashes", "put", "put", "commit", "call", "call", "nope"])
        size = rng.choice([0, 1, 100, 5000, -5, -1, 2**34, 2**34 + 1, 2**70])
        message = {"op": op, "paths": [rng.choice(self.paths) for _ in range(rng.randrange(5))],
                   "path": rng.choice(self.paths), "sha256": rng.choice(["0" * 64, VICTIM_SHA]), "size": size,
                   "action": rng.choice(ACTIONS + ("reboot", "__init__", "_run", "safe_path")),
                   "kwargs": {"release": rng.choice(self.releases), "keep": rng.choice([1, 3, 0, -1, "3", True]),
                              "smoke": rng.choice([True, False, "no", None])}}
        if op == "put" and rng.random() < 0.3:     # the victim's own (sha256, size): resume the planted .part?
            message.update(path="v", sha256=VICTIM_SHA, size=len(VICTIM))
        for key in rng.sample(sorted(message["kwargs"]), rng.randrange(4)):
            del message["kwargs"][key]
        for _ in range(rng.randrange(3)):
            message[rng.choice(sorted(message))] = self.value()
        if rng.random() < 0.1:
            message = self.value()
        return message

    def request(self):
        return encode_frame(REQUEST, self.seq(), json.dumps(self.message()).encode()[:MAX_PAYLOAD])

    def data(self):
        rng = self.rng
        offset = rng.choice([0, 0, 1, 99, 4999, 5000, 2**63, 2**64 - 1, rng.randrange(2**64)])
        payload = OFFSET.pack(offset) + rng.randbytes(rng.randrange(3000))
        return encode_frame(DATA, self.seq(), payload[:rng.choice([len(payload)] * 4 + [0, 3, 7])])

    def garbage(self):
        data = bytearray(self.rng.randbytes(self.rng.randrange(300)))
        for _ in range(self.rng.randrange(3)):
            data[self.rng.randrange(len(data) + 1):0] = MAGIC
        return bytes(data)

    def damaged(self):
        """A valid frame with bytes flipped, cut short, or a header claiming a huge length."""
        rng = self.rng
        frame = bytearray(rng.choice([self.request, self.data])())
        how = rng.randrange(3)
        if how == 0:
            for _ in range(rng.randrange(1, 4)):
                frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
        elif how == 1:
            frame = frame[:rng.randrange(len(frame))]
        else:
            frame = bytearray(encode_frame(REQUEST, self.seq(), b"{" * (MAX_PAYLOAD + 1)))
        return bytes(frame)

    def mangled_json(self):
        """A frame that arrives intact around a request whose JSON text is damaged."""
        text = bytearray(json.dumps(self.message()).encode())
        for _ in range(self.rng.randrange(1, 4)):
            if text:
                text[self.rng.randrange(len(text))] = self.rng.randrange(256)
        return encode_frame(REQUEST, self.seq(), bytes(text[:MAX_PAYLOAD]))


def snapshot(directory):
    """{path: (inode, size, mtime, content)} of everything under directory, symlinks not followed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            content = pathlib.Path(path).read_bytes() if os.path.isfile(path) and not os.path.islink(path) else None
            out[path] = (st.st_ino, st.st_size, st.st_mtime_ns, content)
    return out


def send_burst(transport, frames):
    """Write the frames back to back while reading (and dropping) the agent's answers."""
    writer = threading.Thread(target=lambda: [transport.port.write(frame) for frame in frames])
    writer.start()
    while writer.is_alive():
        transport.port.read(1 << 16)
    writer.join()


def test_fuzzed_frames_never_kill_the_agent_or_touch_anything_outside_its_root(make_rig, tmp_path):
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "victim").write_bytes(VICTIM)
    (outside / "dir" / "other").write_bytes(b"another file outside")
    rig = make_rig()
    os.symlink(outside, os.path.join(rig.root, "link"))
    os.link(outside / "victim", os.path.join(rig.root, "v.part"))        # as the old adopt left it
    with open(os.path.join(rig.root, "v.part.sha256"), "w") as f:
        f.write(f"{VICTIM_SHA} {len(VICTIM)}\n")
    before = snapshot(outside), sorted(os.listdir(tmp_path)), os.stat(outside / "victim").st_ino
    mutator = Mutator(SEED, outside)
    sent = 0
    with rig.transport(timeout=1.0) as t:
        for burst in range(BURSTS):
            frames = [frame for _ in range(FRAMES_PER_BURST) for frame in mutator.frames()]
            send_burst(t, frames)
            sent += len(frames)
            t._seq = 0xF000 + burst
            assert t.call("ping")["root"] == rig.root, f"burst {burst}"
            after = snapshot(outside), sorted(os.listdir(tmp_path)), os.stat(outside / "victim").st_ino
            assert after == before, f"burst {burst}: something outside the root changed"
    assert sent >= BURSTS * FRAMES_PER_BURST and rig.thread.is_alive() and not rig.errors
