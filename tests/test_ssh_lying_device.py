"""A broken or hostile device behind a real OpenSSH server on 127.0.0.1: whatever its python3, wc
or uname answer, `edgeff deploy` ends with one error line, installs nothing, and shows no escape
sequence the device sent. (test_serial_lying_agent.py does the same over a serial line.)"""

import json
import os
import sys

import pytest

from deploy_rig import data, edgeff, train  # noqa: F401 (fixture)
from run_cli import ok, one_line_error
from sshd import Sshd

RELEASE = "0123456789abcdef"


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    """(sshd, rules file): the device answers as the rules say (lying_device.py), else truly."""
    work = tmp_path_factory.mktemp("lying-sshd")
    rules = work / "rules.json"
    rules.write_text("[]")
    here = os.path.dirname(os.path.abspath(__file__))
    server = Sshd(str(work / "sshd"), force_command=f"{sys.executable} {here}/lying_device.py {rules}").start()
    yield server, rules
    server.stop()


@pytest.fixture(scope="module")
def bundle(data, tmp_path_factory):
    run = train(data, tmp_path_factory.mktemp("run") / "run")
    out = tmp_path_factory.mktemp("bundle") / "b"
    ok(edgeff("bundle", run, "--target", "generic-x86_64", "--no-wheels", "-o", out, "--json"))
    return out


def deploy(device, root, rules, *args):
    server, rules_file = device
    rules_file.write_text(json.dumps(rules))
    return edgeff("deploy", *args, "--to", f"ssh://device{root}", "--ssh-config", server.client_config)


def refused(r, *fragments):
    one_line_error(r, *fragments)
    assert "\x1b" not in r.stderr + r.stdout and "\x07" not in r.stderr


def test_the_rig_deploys_when_the_device_tells_the_truth(device, bundle, tmp_path):
    """Every command goes through lying_device.py; with no rule the bundle goes over and installs."""
    report = ok(deploy(device, tmp_path / "d", [], bundle, "--json", "--no-smoke"))
    assert (tmp_path / "d" / "current").resolve().name == report["release"]


def answer(result):
    return json.dumps(result) + "\n"


LIES = {
    "adopt: a file outside the bundle": (["python3 - adopt", answer({"missing": ["../../etc/passwd"], "linked": 0}), 0],
                                         "answer to adopt"),
    "adopt: missing a string": (["python3 - adopt", answer({"missing": "model.onnx", "linked": 0}), 0], "answer to adopt"),
    "adopt: linked a string": (["python3 - adopt", answer({"missing": [], "linked": "all"}), 0], "answer to adopt"),
    "adopt: a file twice": (["python3 - adopt", answer({"missing": ["model.onnx"] * 2, "linked": 0}), 0],
                            "answer to adopt"),
    "adopt: a list": (["python3 - adopt", answer([1]), 0], "printed no result"),
    "adopt: a string": (["python3 - adopt", answer("error"), 0], "printed no result"),
    "adopt: nested deep": (["python3 - adopt", "[" * 100000 + "\n", 0], "printed no result"),
    "adopt: NaN": (["python3 - adopt", '{"missing": [], "linked": NaN}\n', 0], "printed no result"),
    "adopt: error with escapes": (["python3 - adopt", answer({"error": "\x1b[2J\x1b]0;owned\x07disk full"}), 1],
                                  "?[2J?]0;owned?disk full"),
    "adopt: error a number": (["python3 - adopt", answer({"error": 5}), 1], "reported an unknown error"),
    "adopt: escapes, no JSON": (["python3 - adopt", "\x1b[2Jowned\n", 1], "printed no result (?[2Jowned)"),
    "adopt: endless output": (["python3 - adopt", "y" * 4096, "endless"], "printed more than 16 MiB"),
    "install: another release": (["python3 - install", answer({"current": RELEASE, "smoke": None}), 0],
                                 "answer to install"),
    "install: a list": (["python3 - install", answer([]), 0], "printed no result"),
    "partial size: junk": (["wc -c", "junk\n", 0], "a byte count (it said 'junk')"),
    "partial size: negative": (["wc -c", "-5\n", 0], "a byte count (it said '-5')"),
    "partial size: escapes": (["wc -c", "\x1b[2J\n", 0], "a byte count (it said '?[2J')"),
    "uname: escapes": (["uname -m", "x86_64\x1b[2J\n\n3.11\n", 0], "answer to uname -m"),
    "uname: nothing": (["uname -m", "", 0], "answer to uname -m"),
    "python3: not a version": (["uname -m", "x86_64\n\n3.11; rm -rf /\n", 0], "answer to python3's version"),
}


@pytest.mark.parametrize("lie", LIES.values(), ids=LIES.keys())
def test_a_lying_device_gets_one_error_line_and_nothing_is_installed(device, bundle, tmp_path, lie):
    rule, fragment = lie
    refused(deploy(device, tmp_path / "d", [rule], bundle, "--no-smoke"), fragment)
    assert not os.path.lexists(tmp_path / "d" / "current")


def test_a_lying_device_model_is_shown_without_its_escapes(device, bundle, tmp_path):
    report = ok(deploy(device, tmp_path / "d", [["uname -m", "x86_64\n\x1b]0;owned\x07Pi\n3.11\n", 0]], bundle,
                       "--json", "--no-smoke", "--dry-run"))
    assert report["device"] == {"machine": "x86_64", "model": "?]0;owned?Pi", "python": "3.11"}


@pytest.mark.parametrize("result, fragment", [
    ({"previous": None, "current": "../../etc"}, "answer to rollback"),
    ({"previous": 5, "current": RELEASE}, "answer to rollback"),
    ({"previous": "\x1b[2Jold"}, "answer to rollback"),
], ids=["current not a release", "previous a number", "no current"])
def test_a_lying_rollback_is_one_error_line(device, tmp_path, result, fragment):
    refused(deploy(device, tmp_path / "d", [["python3 - rollback", answer(result), 0]], "--rollback"), fragment)


def test_a_rollback_answer_is_shown_without_its_escapes(device, tmp_path):
    r = deploy(device, tmp_path / "d", [["python3 - rollback", answer({"previous": "\x1b[2Jold", "current": RELEASE}),
                                         0]], "--rollback")
    assert r.returncode == 0 and "\x1b" not in r.stdout, r
    assert f"current release {RELEASE} (was ?[2Jold)" in r.stdout
