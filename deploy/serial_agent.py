"""The device end of a serial deploy: `edgeff agent serial` serving a root directory.

The protocol is described in serial_link.py. The agent writes only inside its root and
runs nothing but the installer's actions in ACTIONS. The host is not trusted: every field
of every request is checked for type and range (a bad one gets an error reply, and the
agent serves on), every path goes through trust.safe_path, and a partial file is written
into only if it is a regular file with no other link (else it is replaced by a fresh one,
never truncated in place), so a hard link cannot carry a write out of the root.
"""

import functools
import inspect
import json
import os
import platform
import re
import stat
import sys
import threading
import time
import zlib

import serial

from edgeff import __version__
from edgeff.deploy.trust import fsync_dir, safe_path, sha256_file, upload_path
from edgeff.errors import DeployError, EdgeFFError
from edgeff.fileio import atomic_write_text

from .serial_link import (ACK, ACTIONS, ANY_SEQ, BUSY, DATA, KEEPALIVE, MAX_PAYLOAD, NAK, OFFSET, REPLY, REQUEST,
                          Damaged, Frame, FrameReader, encode_frame, open_port, port_label, quiet_gap)


MAX_FILE_SIZE = 1 << 34      # bytes of one file put (16 GiB: far more than any bundle file)
MAX_PATHS = 64               # paths in one "hashes" request (the host sends 16)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PATHS = (lambda v: isinstance(v, list) and len(v) <= MAX_PATHS and all(isinstance(p, str) for p in v),
          f"a list of at most {MAX_PATHS} strings")
_STRING = (lambda v: isinstance(v, str), "a string")
_HASH = (lambda v: isinstance(v, str) and _SHA256.fullmatch(v) is not None, "64 lowercase hex digits")
_SIZE = (lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_FILE_SIZE,
         f"an integer from 0 to {MAX_FILE_SIZE}")
_KWARGS = (lambda v: v is None or isinstance(v, dict), "an object")
REQUEST_FIELDS = {   # op: {field: (check, what it must be)}
    "hashes": {"paths": _PATHS},
    "put": {"path": _STRING, "sha256": _HASH, "size": _SIZE},
    "commit": {"path": _STRING, "sha256": _HASH},
    "call": {"action": _STRING, "kwargs": _KWARGS},
}


def checked_request(payload):
    """The JSON request in payload, every field of its op checked; DeployError names the first bad one."""
    try:
        message = json.loads(payload)
    except (ValueError, RecursionError):
        message = None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise DeployError("the request must be a JSON object with an 'op'; is the host the same edgeff version?")
    op = message["op"]
    if op not in REQUEST_FIELDS:
        raise DeployError(f"the agent does not know the request {op[:40]!r}; is it the same edgeff version?")
    for name, (check, what) in REQUEST_FIELDS[op].items():
        if not check(message.get(name)):
            raise DeployError(f"{op}: {name} must be {what}, got {_short(message.get(name))}")
    return message


def _short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Partial:
    """An open ROOT/path.part and its .part.sha256 note: "sha256 size".

    A .part is resumed only when the note names this (sha256, size) and the .part is a regular
    file with one link, so writing into it changes nothing but that name inside the root.
    Otherwise the old name is unlinked (never truncated: it may be a hard link to a file that
    must not change) and a fresh file created with O_EXCL; the note is replaced by a rename.
    """

    def __init__(self, dest, part, note, sha256, size):
        self.dest, self.part, self.note, self.sha256, self.size = dest, part, note, sha256, size
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        note = f"{sha256} {size}\n"
        try:
            with open(self.note) as f:
                same = f.read() == note
        except (OSError, ValueError):
            same = False
        self.fd = self._resumable() if same else None
        if self.fd is None:
            atomic_write_text(self.note, note)     # first: a note without its .part only means "start afresh"
            self.fd = self._fresh()
        self.offset = min(os.fstat(self.fd).st_size, size)

    def _resumable(self):
        """An fd on the .part if it may be written into (a regular file with one link), else None."""
        try:
            fd = os.open(self.part, os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            return None
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            return fd
        os.close(fd)
        return None

    def _fresh(self):
        if os.path.lexists(self.part):
            os.unlink(self.part)
        return os.open(self.part, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)

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
                answer.update(ok=True, result=self._handle(checked_request(frame.payload)))
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
        op = message["op"]
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
            try:
                self.partial = _Partial(dest, part, note, message["sha256"], message["size"])
            except OSError as exc:
                raise DeployError(f"{message['path']}: the agent cannot create it ({exc.strerror})") from None
            return {"offset": self.partial.offset}
        if op == "commit":
            p, self.partial = self.partial, None
            if p is None or (p.dest, p.sha256) != (safe_path(self.root, message["path"]), message["sha256"]):
                raise DeployError(f"{message['path']}: no transfer of it is open on the agent; deploy again")
            p.commit(message["path"])
            return {}
        return self._call(message["action"], message.get("kwargs") or {})

    def _call(self, action, kwargs):
        """Run an action with the arguments its function takes (the installer checks their values)."""
        if action not in ACTIONS:
            raise DeployError(f"the agent does not run {action[:40]!r}; it runs only: {', '.join(ACTIONS)}")
        if action == "ping":
            run = self._ping
        else:
            from . import install      # the device-side installer, only when asked for
            run = functools.partial(getattr(install, action), self.root)
        params = inspect.signature(run).parameters
        needed = [name for name, p in params.items() if p.default is p.empty]
        if set(kwargs) - set(params) or set(needed) - set(kwargs):
            raise DeployError(f"{action} takes {', '.join(params) or 'no arguments'}; got "
                              f"{', '.join(kwargs)[:80] or 'no arguments'}; is the host the same edgeff version?")
        return run(**kwargs)

    def _ping(self):
        try:
            with open("/proc/device-tree/model", "rb") as f:
                model = f.read().rstrip(b"\0").decode(errors="replace").strip()
        except OSError:
            model = ""
        return {"edgeff_version": __version__, "machine": platform.machine(), "root": self.root_given,
                "model": model, "python": "%d.%d" % sys.version_info[:2]}
