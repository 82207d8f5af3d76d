"""The device end of a serial deploy: `edgeff agent serial` serving a root directory.

The protocol is described in serial_link.py. The agent writes only inside its root and
runs nothing but the installer's actions in ACTIONS.
"""

import json
import os
import platform
import sys
import threading
import time
import zlib

import serial

from edgeff import __version__
from edgeff.deploy.install import fsync_dir, safe_path, sha256_file, upload_path
from edgeff.errors import DeployError, EdgeFFError

from .serial_link import (ACK, ACTIONS, ANY_SEQ, BUSY, DATA, KEEPALIVE, MAX_PAYLOAD, NAK, OFFSET, REPLY, REQUEST,
                          Damaged, Frame, FrameReader, encode_frame, open_port, port_label, quiet_gap)


class _Partial:
    """An open ROOT/path.part and its .part.sha256 note: "sha256 size"."""

    def __init__(self, dest, part, note, sha256, size):
        self.dest, self.part, self.note, self.sha256, self.size = dest, part, note, sha256, size
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        note = f"{sha256} {size}\n"
        try:
            with open(self.note) as f:
                same = f.read() == note
        except OSError:
            same = False
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | (0 if same else os.O_TRUNC)
        self.fd = os.open(part, flags, 0o644)
        if not same:
            with open(self.note, "w") as f:
                f.write(note)
        self.offset = min(os.fstat(self.fd).st_size, size)

    def write(self, offset, data):
        if offset <= self.offset:
            data = data[:self.size - offset]
            os.pwrite(self.fd, data, offset)
            self.offset = max(self.offset, offset + len(data))
        return self.offset

    def commit(self, rel_path):
        os.fsync(self.fd)
        os.close(self.fd)
        got = sha256_file(self.part) if self.offset == self.size else None
        if got != self.sha256:
            self.discard()
            what = f"sha256 {got}" if got else f"{self.offset} of {self.size} bytes"
            raise DeployError(f"{rel_path}: the device received {what}, expected sha256 {self.sha256}; "
                              "the partial file was deleted, deploy again")
        os.replace(self.part, self.dest)
        os.unlink(self.note)
        fsync_dir(os.path.dirname(self.dest))

    def discard(self):
        for path in (self.part, self.note):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


class Agent:
    """The device end: answers one host at a time, writes only inside `root`."""

    def __init__(self, port, root, baud=115200):
        self.root_given = os.path.abspath(os.path.expanduser(root))
        os.makedirs(self.root_given, exist_ok=True)
        self.root = os.path.realpath(self.root_given)
        self.port_name, self.baud = port, baud
        self.port = open_port(port, baud)
        self.reader = FrameReader(self.port, quiet_gap(baud))
        self.partial = None
        self.last = (None, None)     # (seq and crc of the last request, its answer frame)
        self._stop = threading.Event()

    def stop(self):
        """Make serve() return within about a poll interval (callable from another thread)."""
        self._stop.set()

    def close(self):
        if self.partial is not None:
            os.close(self.partial.fd)
            self.partial = None
        self.port.close()

    def serve_forever(self):
        self.serve()

    def serve(self, max_requests=None):
        """Answer frames until stop() or until max_requests frames were answered."""
        answered = 0
        while not self._stop.is_set() and (max_requests is None or answered < max_requests):
            try:
                event = self.reader.read(time.monotonic() + 0.2)
            except serial.SerialException as exc:
                raise DeployError(f"{port_label(self.port_name)}: the serial port failed ({exc}); agent stopped") from None
            if isinstance(event, Damaged):
                self._send(encode_frame(NAK, ANY_SEQ if event.seq is None else event.seq))
            elif isinstance(event, Frame) and event.type in (REQUEST, DATA):
                self._answer(event)
                answered += 1

    def _send(self, frame):
        self.port.write(frame)

    def _answer(self, frame):
        key = (frame.seq, zlib.crc32(frame.payload, frame.type))
        if self.last[0] == key:          # a resend: the host missed our answer
            self._send(self.last[1])
            return
        if frame.type == DATA:
            answer = self._data(frame)
        else:
            answer = encode_frame(REPLY, frame.seq, json.dumps(self._run_keepalive(frame)).encode())
        self.last = (key, answer)
        self._send(answer)

    def _data(self, frame):
        """Write a DATA frame into the open partial: ACK with its new size, or an error REPLY."""
        if self.partial is None or len(frame.payload) < OFFSET.size:
            error = "the agent has no transfer open (was it restarted?); deploy again"
        else:
            offset = OFFSET.unpack_from(frame.payload)[0]
            try:
                return encode_frame(ACK, frame.seq, OFFSET.pack(self.partial.write(offset, frame.payload[8:])))
            except OSError as exc:      # e.g. the device's disk is full
                error = f"the agent cannot write {self.partial.part}: {exc}"
        return encode_frame(REPLY, frame.seq, json.dumps({"ok": False, "error": error}).encode())

    def _run_keepalive(self, frame):
        """Handle a REQUEST in a thread, sending BUSY while it runs; the JSON answer."""
        answer = {}

        def work():
            try:
                answer.update(ok=True, result=self._handle(json.loads(frame.payload)))
            except EdgeFFError as exc:
                answer.update(ok=False, error=str(exc))
            except Exception as exc:    # a bug or OS error must not kill the agent
                answer.update(ok=False, error=f"the agent failed: {type(exc).__name__}: {exc}")

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        while True:
            worker.join(KEEPALIVE)
            if not worker.is_alive():
                break
            self._send(encode_frame(BUSY, frame.seq))
        if len(json.dumps(answer)) > MAX_PAYLOAD:
            return {"ok": False, "error": "the agent's answer is too long for one frame"}
        return answer

    def _handle(self, message):
        op = message.get("op")
        if op == "hashes":
            out = []
            for rel in message["paths"]:
                path = safe_path(self.root, rel)
                out.append(sha256_file(path) if os.path.isfile(path) else None)
            return out
        if op == "put":
            dest = upload_path(self.root, message["path"])
            part = safe_path(self.root, message["path"] + ".part")
            note = safe_path(self.root, message["path"] + ".part.sha256")
            if self.partial is not None:
                os.close(self.partial.fd)
                self.partial = None
            self.partial = _Partial(dest, part, note, message["sha256"], int(message["size"]))
            return {"offset": self.partial.offset}
        if op == "commit":
            p, self.partial = self.partial, None
            if p is None or (p.dest, p.sha256) != (safe_path(self.root, message["path"]), message["sha256"]):
                raise DeployError(f"{message['path']}: no transfer of it is open on the agent; deploy again")
            p.commit(message["path"])
            return {}
        if op == "call":
            return self._call(message["action"], message.get("kwargs") or {})
        raise DeployError(f"the agent does not know the request {op!r}; is it the same edgeff version?")

    def _call(self, action, kwargs):
        if action == "ping":
            try:
                with open("/proc/device-tree/model", "rb") as f:
                    model = f.read().rstrip(b"\0").decode(errors="replace").strip()
            except OSError:
                model = ""
            return {"edgeff_version": __version__, "machine": platform.machine(), "root": self.root_given,
                    "model": model, "python": "%d.%d" % sys.version_info[:2]}
        if action not in ACTIONS:
            raise DeployError(f"the agent does not run {action!r}; it runs only: {', '.join(ACTIONS)}")
        from . import install          # the device-side installer, only when asked for
        return getattr(install, action)(self.root, **kwargs)
