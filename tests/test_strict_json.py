"""Every JSON edgeff writes (files, --json lines, the installer's results, ONNX metadata,
checkpoint and model metadata) is strict: json.dump(s) is always called with allow_nan=False,
so a NaN or Inf is an error where it is made, never an 'NaN' token a strict parser rejects.
The serial agent's protocol frames are the one exception: an answer it cannot encode must not
stop the agent (deploy/serial_agent.py), and the host reads them itself."""

import ast
import glob
import os

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMES = "deploy/serial_agent.py"


def json_writes(path):
    """(line, has allow_nan=False) of every json.dump / json.dumps call in path."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("dump", "dumps")
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "json"):
            strict = any(k.arg == "allow_nan" and isinstance(k.value, ast.Constant) and k.value.value is False
                         for k in node.keywords)
            yield node.lineno, strict


def test_every_json_write_is_strict():
    sources = sorted(glob.glob(os.path.join(ROOT, "edgeff", "**", "*.py"), recursive=True) +
                     glob.glob(os.path.join(ROOT, "deploy", "*.py")))
    assert len(sources) > 30
    loose = []
    for path in sources:
        rel = os.path.relpath(path, ROOT)
        for line, strict in json_writes(path):
            if not strict and rel != FRAMES:
                loose.append(f"{rel}:{line}")
    # the parity report inside an export error message is text for a person, not JSON output
    loose = [where for where in loose if where != "edgeff/export.py:" + str(_parity_message_line())]
    assert not loose, loose


def _parity_message_line():
    with open(os.path.join(ROOT, "edgeff", "export.py"), encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if "raise ExportError" in line and "json.dumps(report['parity'])" in line:
                return number
    pytest.fail("edgeff/export.py no longer formats its parity error with json.dumps: update this test")


def test_a_nan_is_refused_where_it_is_written_and_the_old_file_stays(tmp_path):
    from edgeff.deploy import install
    install._write_history(str(tmp_path), ["0123456789abcdef"])
    before = (tmp_path / "history.json").read_bytes()
    with pytest.raises(ValueError):
        install._write_history(str(tmp_path), [float("nan")])
    assert (tmp_path / "history.json").read_bytes() == before
