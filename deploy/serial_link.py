"""Deploy over a serial line: a small framed protocol between a host and `edgeff agent serial`.

Frame (all integers big-endian)::

    magic "\\xedF" | type u8 | seq u16 | length u32 | header check u16 | payload | crc32 u32

The header check is the low 16 bits of CRC32(magic..length), so a receiver can trust a
frame's length before the payload arrives; the trailing CRC32 covers header and payload.
A receiver scans for the magic, so it resynchronises after garbage: a bad header is
skipped byte by byte, a frame whose CRC fails is dropped (and answered with NAK), a frame
that stops arriving mid-way (dropped bytes) is dropped after a short quiet gap.

Exchanges are stop-and-wait: the host sends one frame and waits for the answer with the
same seq, resending it on NAK, on a damaged answer or after `timeout` s of silence, at
most `tries` times, then fails with DeployError. The agent remembers its last answer, so
a resent request is answered again, not run twice; while a request runs (hashing,
install) it sends BUSY every 0.25 s so the host keeps waiting.

    host -> agent   REQUEST  JSON {"op": "hashes" | "put" | "commit" | "call", ...}
                    DATA     u64 offset + bytes of the file being put
    agent -> host   REPLY    JSON {"ok": true, "result": ...} or {"ok": false, "error": "..."}
                    ACK      u64 offset: the partial file now holds bytes [0, offset)
                    NAK      "your frame arrived damaged, send it again" (seq 0xFFFF: some frame)
                    BUSY     "still working on request seq"

A file transfer: `put` {path, sha256, size} opens ROOT/path.part (and path.part.sha256,
which names the file it belongs to) and answers the offset to start from: the size of a
partial of the same (path, sha256), else 0. DATA at any offset <= the partial's size is
written there and ACKed with the new size; the host always continues from the ACKed
offset, so lost, repeated or reordered chunks are harmless and an interrupted transfer
resumes where it stopped. `commit` checks size and sha256, fsyncs and renames the partial
onto path atomically; on a mismatch the partial is deleted.

The agent (serial_agent.py) trusts nothing the host sends: every field of a request is
checked for type and range (a bad one gets an error REPLY and the agent serves on), every
path must stay inside the agent's root (trust.safe_path), a partial is resumed only if it
is a regular file with one link (else it is replaced by a fresh file, never truncated in
place), and it runs nothing but the actions in ACTIONS, with the arguments their functions
take; install.py checks their values (release ids, keep, smoke).
"""

import json
import os
import random
import re
import struct
import time
import zlib
from collections import namedtuple

import serial

from edgeff.errors import DeployError
from edgeff.fileio import parse_json

from .answers import printable

MAGIC = b"\xedF"
_HEAD = struct.Struct(">2sBHI")           # magic, type, seq, length
HEADER_LEN = _HEAD.size + 2                # + header check
MAX_PAYLOAD = 64 * 1024
REQUEST, DATA, REPLY, ACK, NAK, BUSY = 0x01, 0x02, 0x81, 0x82, 0x83, 0x84
FRAME_TYPES = {REQUEST, DATA, REPLY, ACK, NAK, BUSY}
ANY_SEQ = 0xFFFF                           # NAK for a frame whose seq could not be read
OFFSET = struct.Struct(">Q")
KEEPALIVE = 0.25                           # s between BUSY frames of a running request
ACTIONS = ("ping", "adopt", "install", "rollback", "status")

_HEX64 = re.compile(r"[0-9a-f]{64}")

Frame = namedtuple("Frame", "type seq payload")
Damaged = namedtuple("Damaged", "seq")     # seq None: garbage, no frame header seen


def encode_frame(ftype, seq, payload=b""):
    head = _HEAD.pack(MAGIC, ftype, seq, len(payload))
    head += struct.pack(">H", zlib.crc32(head) & 0xFFFF)
    return head + payload + struct.pack(">I", zlib.crc32(payload, zlib.crc32(head)))


def chunk_size_for(baud):
    """Bytes of file per DATA frame: about 0.25 s of line time, a power of two in 512..4096."""
    size = 512
    while size < 4096 and size * 2 <= baud / 10 * 0.25:
        size *= 2
    return size


def quiet_gap(baud):
    """Silence after which a frame that started arriving is taken as lost (s)."""
    return max(0.1, 100 * 10 / baud)


class FrameReader:
    """Frames from a pyserial port opened with a short read timeout; resynchronises on garbage."""

    def __init__(self, port, gap):
        self.port, self.gap = port, gap
        self.buf = bytearray()
        self.pending_seq = None      # seq of a frame whose header arrived but not its end
        self.garbage = 0             # bytes skipped since the last frame
        self.last_byte = time.monotonic()

    def read(self, deadline):
        """The next Frame or Damaged, or None when nothing arrived by `deadline`.

        A frame still arriving at the deadline is waited for until it stops arriving.
        """
        while True:
            event = self._parse()
            if event is not None:
                return event
            if time.monotonic() - self.last_byte > self.gap:  # the line went quiet
                if self.pending_seq is not None:              # ... in mid-frame: bytes were lost
                    seq, self.pending_seq = self.pending_seq, None
                    self._drop_frame(len(self.buf))
                    return Damaged(seq)
                self._skip(len(self.buf))                     # a stub of magic or header
                if self.garbage:
                    self.garbage = 0
                    return Damaged(None)
            if self.pending_seq is None and time.monotonic() >= deadline:
                return None
            data = self.port.read(self.port.in_waiting or 1)
            if data:
                self.buf += data
                self.last_byte = time.monotonic()

    def _skip(self, n):
        self.garbage += n
        del self.buf[:n]

    def _drop_frame(self, end):
        """Drop a damaged frame that may span buf[:end]; a magic inside it may start a real one."""
        resync = self.buf.find(MAGIC, 1, end)
        del self.buf[:resync if resync > 0 else end]
        self.garbage = 0

    def _parse(self):
        buf = self.buf
        self.pending_seq = None
        while True:
            start = buf.find(MAGIC)
            if start < 0:
                self._skip(len(buf) - (1 if buf.endswith(MAGIC[:1]) else 0))
                return None
            self._skip(start)
            if len(buf) < HEADER_LEN:
                return None
            _, ftype, seq, length = _HEAD.unpack_from(buf)
            (check,) = struct.unpack_from(">H", buf, _HEAD.size)
            if check != zlib.crc32(buf[:_HEAD.size]) & 0xFFFF or ftype not in FRAME_TYPES or length > MAX_PAYLOAD:
                self._skip(1)
                continue
            end = HEADER_LEN + length + 4
            if len(buf) < end:
                self.pending_seq = seq
                return None
            (crc,) = struct.unpack_from(">I", buf, end - 4)
            if crc != zlib.crc32(buf[:end - 4]):
                self._drop_frame(end)
                return Damaged(seq)
            frame = Frame(ftype, seq, bytes(buf[HEADER_LEN:end - 4]))
            del buf[:end]
            self.garbage = 0
            return frame


def open_port(port, baud, **kwargs):
    try:
        return serial.serial_for_url(port, baudrate=baud, timeout=0.05, **kwargs)
    except (serial.SerialException, ValueError) as exc:
        raise DeployError(f"cannot open serial port {port}: {exc}") from None


def port_label(port):
    return port if "://" in port else f"serial://{port}"


class SerialTransport:
    """The host end: hashes, put and call over a serial line to `edgeff agent serial`.

    `timeout` is how long one try waits for an answer, `tries` how often a frame is sent
    before giving up. `root_hint` is the device root the user asked for (if any): the first
    exchange checks that the agent serves that root.
    """

    tries = 8
    hash_batch = 16                   # paths per "hashes" request: keeps answers short

    def __init__(self, port, baud=115200, timeout=2.0, root_hint=None):
        self.url, self.baud, self.timeout, self.root_hint = port_label(port), baud, timeout, root_hint
        self.chunk_size = chunk_size_for(baud)
        write_timeout = timeout + 8192 * 20 / baud
        self.port = open_port(port, baud, write_timeout=write_timeout)
        self.port.reset_input_buffer()
        self.reader = FrameReader(self.port, quiet_gap(baud))
        self._seq = random.randrange(ANY_SEQ)   # a fresh session never looks like a resend
        self._checked_root = root_hint is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.port.close()

    # -- public operations ------------------------------------------------------------------

    def hashes(self, rel_paths):
        """{rel_path: sha256 hex, or None where the device has no such file}."""
        rel_paths = list(rel_paths)
        out = {}
        for i in range(0, len(rel_paths), self.hash_batch):
            batch = rel_paths[i:i + self.hash_batch]
            found = self._request({"op": "hashes", "paths": batch})
            if not (isinstance(found, list) and len(found) == len(batch) and
                    all(h is None or (isinstance(h, str) and _HEX64.fullmatch(h)) for h in found)):
                raise self._bad_answer("hashes", f"{len(batch)} sha256s or nulls")
            out.update(zip(batch, found))
        return out

    def put(self, local_path, rel_path, sha256, progress=None):
        """Send local_path to ROOT/rel_path, resuming a partial of the same sha256.

        progress(n) is called with the bytes the device holds when the transfer starts (a
        resumed partial), then with each acknowledged chunk's. Returns the file bytes
        actually sent (resends included).
        """
        total = os.path.getsize(local_path)
        opened = self._request({"op": "put", "path": rel_path, "sha256": sha256, "size": total})
        offset = opened.get("offset") if isinstance(opened, dict) else None
        if not (isinstance(offset, int) and not isinstance(offset, bool) and 0 <= offset <= total):
            raise self._bad_answer("put", f"an offset from 0 to {total}")
        sent, chunk, good, stalled = 0, self.chunk_size, 0, 0

        def payload(attempt):                    # the DATA frame from `offset`, try number `attempt`
            nonlocal chunk, sent, good
            if attempt:                          # a noisy line: shorter frames get through more often
                chunk, good = max(256, chunk // 2), 0
            f.seek(offset)
            data = f.read(chunk)
            sent += len(data)
            return OFFSET.pack(offset) + data

        with open(local_path, "rb") as f:
            if progress:
                progress(offset)
            while offset < total:
                answer = self._exchange(DATA, payload, f"chunk at {offset} of {rel_path}")
                if answer.type == REPLY:
                    self._result(answer)          # an error: raises
                    raise self._bad_answer(f"a chunk of {rel_path}", "an ACK")
                if len(answer.payload) != OFFSET.size:
                    raise self._bad_answer(f"a chunk of {rel_path}", f"an ACK of {OFFSET.size} bytes")
                acked = OFFSET.unpack(answer.payload)[0]
                if acked > total:
                    raise DeployError(f"{self.url}: the agent holds more of {rel_path} than was sent; deploy again")
                stalled = stalled + 1 if acked <= offset else 0
                if stalled >= self.tries:
                    raise DeployError(f"{self.url}: the agent acknowledged no new byte of {rel_path} {self.tries} "
                                      "times in a row; is the device's disk full? Deploy again")
                good += 1
                if good >= 8 and chunk < self.chunk_size:
                    chunk, good = chunk * 2, 0
                if progress:
                    progress(acked - offset)
                offset = acked
        self._request({"op": "commit", "path": rel_path, "sha256": sha256, "size": total})
        return sent

    def probe(self):
        """{"machine", "model", "python"} of the device, as the other transports report it."""
        ping = self.call("ping")
        if not (isinstance(ping, dict) and all(isinstance(ping.get(k), str) for k in ("machine", "model", "python"))):
            raise self._bad_answer("ping", "machine, model and python as strings")
        return {key: ping[key] for key in ("machine", "model", "python")}

    def call(self, action, **kwargs):
        """Run one of ACTIONS on the device and return its JSON result."""
        if action not in ACTIONS:
            raise DeployError(f"unknown agent action {action!r}; one of: {', '.join(ACTIONS)}")
        return self._request({"op": "call", "action": action, "kwargs": kwargs}, check_root=action != "ping")

    # -- exchanges --------------------------------------------------------------------------

    def _check_root(self):
        self._checked_root = True
        ping = self._request({"op": "call", "action": "ping", "kwargs": {}}, check_root=False)
        root = ping.get("root") if isinstance(ping, dict) else None
        if not isinstance(root, str):
            raise self._bad_answer("ping", "its root as a string")
        if os.path.normpath(self.root_hint) != os.path.normpath(root):
            raise DeployError(f"{self.url}: the agent serves {root}, not {self.root_hint}; "
                              f"restart it with 'edgeff agent serial --root {self.root_hint}' or deploy to {root}")

    def _request(self, message, check_root=True):
        if check_root and not self._checked_root:
            self._check_root()
        body = json.dumps(message, allow_nan=False).encode()
        return self._result(self._exchange(REQUEST, lambda attempt: body, message["op"]))

    def _result(self, answer):
        if answer.type != REPLY:
            raise DeployError(f"{self.url}: unexpected answer type {answer.type:#x} from the agent; "
                              "is the agent the same edgeff version?")
        try:
            reply = parse_json(answer.payload)
        except ValueError:
            reply = None
        if not (isinstance(reply, dict) and isinstance(reply.get("ok"), bool) and ("result" in reply or not reply["ok"])):
            raise self._bad_answer("a request", '{"ok": true, "result": ...} or {"ok": false, "error": "..."}')
        if not reply["ok"]:
            error = reply.get("error")
            raise DeployError(printable(error) if isinstance(error, str) and error.strip()
                              else "the agent reported an unknown error")
        return reply["result"]

    def _bad_answer(self, what, expected):
        """The agent answered something the protocol does not allow: a broken or hostile device."""
        return DeployError(f"{self.url}: the agent's answer to {what} is not {expected}; "
                           "is 'edgeff agent serial' on the device the same edgeff version?")

    def _exchange(self, ftype, payload, what):
        """Send a frame until an answer with its seq arrives; payload(attempt) builds it."""
        self._seq = (self._seq + 1) % ANY_SEQ
        failure = "timeout"
        for attempt in range(self.tries):
            frame = encode_frame(ftype, self._seq, payload(attempt))
            try:
                self.port.write(frame)
            except serial.SerialException as exc:
                raise DeployError(f"{self.url}: cannot write to the serial port ({exc}); "
                                  "is the cable connected?") from None
            answer = self._await(self._seq)
            if isinstance(answer, Frame) and answer.type in (REPLY, ACK):
                return answer
            failure = "timeout" if answer is None else "damaged"
        if failure == "timeout":
            raise DeployError(f"{self.url}: no answer from the agent after {self.tries} tries ({what}); "
                              f"is 'edgeff agent serial' running on the device at {self.baud} baud?")
        raise DeployError(f"{self.url}: {what} arrived damaged {self.tries} times in a row; "
                          "check the cable and that both ends use the same baud rate")

    def _await(self, seq):
        """The answer to seq: REPLY/ACK Frame, NAK Frame or Damaged (resend), None on timeout."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                event = self.reader.read(deadline)
            except serial.SerialException as exc:
                raise DeployError(f"{self.url}: the serial port failed ({exc})") from None
            if event is None:
                return None
            if isinstance(event, Damaged):
                if event.seq == seq:
                    return event
            elif event.type == BUSY and event.seq == seq:
                deadline = time.monotonic() + self.timeout
            elif event.type == NAK and event.seq in (seq, ANY_SEQ):
                return event
            elif event.type in (REPLY, ACK) and event.seq == seq:
                return event
