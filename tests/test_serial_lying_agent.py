"""A broken or hostile agent against the host's real serial transport over real ptys: whatever it
answers, the host ends with one DeployError line in bounded time, never a traceback, a hang or
an escape sequence on the user's terminal. (test_serial_hostile.py is the other way round.)"""

import json
import threading
import time

import pytest

from edgeff.deploy.serial_link import (ACK, DATA, OFFSET, REPLY, REQUEST, Frame, FrameReader, SerialTransport,
                                       encode_frame, open_port)
from edgeff.errors import DeployError
from ptyrelay import PtyRelay


class LyingAgent:
    """Answers every REQUEST with reply(message) bytes as a REPLY, and every DATA with ack(offset) bytes
    as an ACK, in a thread at the far end of a PtyRelay."""

    def __init__(self, reply, ack=lambda offset: OFFSET.pack(offset)):
        self.reply, self.ack = reply, ack
        self.relay = PtyRelay()
        self.port = open_port(self.relay.agent_name, 115200)
        self.reader = FrameReader(self.port, 0.05)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            frame = self.reader.read(time.monotonic() + 0.05)
            if not isinstance(frame, Frame):
                continue
            if frame.type == REQUEST:
                self.port.write(encode_frame(REPLY, frame.seq, self.reply(json.loads(frame.payload))))
            elif frame.type == DATA:
                self.port.write(encode_frame(ACK, frame.seq, self.ack(OFFSET.unpack(frame.payload[:8])[0])))

    def transport(self):
        return SerialTransport(self.relay.host_name, timeout=0.5)

    def close(self):
        self.stop.set()
        self.thread.join()
        self.port.close()
        self.relay.close()


@pytest.fixture
def lying():
    agents = []

    def make(reply, **kwargs):
        agents.append(LyingAgent(reply, **kwargs))
        return agents[-1]

    yield make
    for agent in agents:
        agent.close()


def answer(result):
    return lambda message: json.dumps({"ok": True, "result": result}).encode()


def one_line(excinfo, *fragments):
    text = str(excinfo.value)
    assert "\n" not in text and "\x1b" not in text, text
    assert all(f in text for f in fragments), text


@pytest.mark.parametrize("payload, fragment", [
    (b"not json", "is not {\"ok\""),
    (b"[1, 2]", "is not {\"ok\""),
    (b"[" * 5000, "is not {\"ok\""),                                  # deeper than the parser goes
    (b'{"ok": "yes", "result": 1}', "is not {\"ok\""),
    (b'{"ok": true}', "is not {\"ok\""),
    (b'{"ok": NaN, "result": 1}', "is not {\"ok\""),
    (b'{"ok": false, "error": "\\u001b[2J\\u001b]0;owned\\u0007disk full\\n"}', "?[2J?]0;owned?disk full?"),
    (b'{"ok": false, "error": 5}', "the agent reported an unknown error"),
    (json.dumps({"ok": False, "error": "x" * 5000}).encode(), "x" * 300 + "..."),
], ids=["not JSON", "a list", "nested deep", "ok a string", "no result", "NaN", "escapes", "error a number",
        "long error"])
def test_a_reply_that_is_not_the_protocols_is_one_line(lying, payload, fragment):
    with lying(lambda message: payload).transport() as t, pytest.raises(DeployError) as excinfo:
        t.call("status")
    one_line(excinfo, fragment)


@pytest.mark.parametrize("result", ["x", [], ["ab" * 32, None], [1], {"a": None}],
                         ids=["a string", "too few", "too many", "a number", "an object"])
def test_hashes_must_be_one_sha256_or_null_per_path(lying, result):
    with lying(answer(result)).transport() as t, pytest.raises(DeployError) as excinfo:
        t.hashes(["a"])
    one_line(excinfo, "the agent's answer to hashes")


@pytest.mark.parametrize("result", [{"offset": -1}, {"offset": "0"}, {"offset": True}, {"offset": 10**6}, [0], None],
                         ids=["negative", "a string", "a bool", "past the end", "a list", "null"])
def test_put_must_be_answered_with_an_offset_inside_the_file(lying, tmp_path, result):
    (tmp_path / "f").write_bytes(b"12345")
    with lying(answer(result)).transport() as t, pytest.raises(DeployError) as excinfo:
        t.put(str(tmp_path / "f"), "f", "ab" * 32)
    one_line(excinfo, "the agent's answer to put", "an offset from 0 to 5")


@pytest.mark.parametrize("ack, fragment", [
    (lambda offset: b"\x00\x01", "an ACK of 8 bytes"),
    (lambda offset: OFFSET.pack(offset), "acknowledged no new byte of f 8 times"),       # never advances
    (lambda offset: OFFSET.pack(10**9), "holds more of f than was sent"),
], ids=["short ACK", "stalled", "past the end"])
def test_a_transfer_the_agent_does_not_acknowledge_properly_ends(lying, tmp_path, ack, fragment):
    (tmp_path / "f").write_bytes(b"12345")
    with lying(answer({"offset": 0}), ack=ack).transport() as t, pytest.raises(DeployError) as excinfo:
        t.put(str(tmp_path / "f"), "f", "ab" * 32)
    one_line(excinfo, fragment)


@pytest.mark.parametrize("result", [[], {"machine": "x86_64", "model": 3, "python": "3.11"}, {"root": 5}],
                         ids=["a list", "model a number", "root a number"])
def test_a_ping_without_its_strings_is_one_line(lying, result):
    with lying(answer(result)).transport() as t, pytest.raises(DeployError) as excinfo:
        t.probe()
    one_line(excinfo, "the agent's answer to ping")
    with SerialTransport(t.url.removeprefix("serial://"), timeout=0.5, root_hint="/srv") as checked, \
            pytest.raises(DeployError) as excinfo:
        checked.call("status")                       # the root check pings first
    one_line(excinfo, "the agent's answer to ping")
