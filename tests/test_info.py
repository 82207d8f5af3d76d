"""`edgeff info`: human lines and --json, checked against the packages themselves."""

import json
import os
import platform
import subprocess
import sys

import numba
import numpy as np

import edgeff
from edgeff.board import detect_board
from edgeff.cli import main

KEYS = {"os", "kernel", "python", "python_implementation", "arch", "board", "family", "cpu_model",
        "cpu_features", "cores", "mem_total_bytes", "mem_available_bytes", "numpy", "blas", "numba",
        "numba_threading_layer", "numba_threading_layer_requested", "numba_num_threads",
        "numba_cache_dir", "numba_cache_source", "onnxruntime", "edgeff"}


def onnxruntime_version():
    try:
        import onnxruntime
    except ImportError:
        return "not installed"
    return onnxruntime.__version__


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert KEYS <= info.keys()
    assert info["numba"] == numba.__version__ and info["numpy"] == np.__version__
    assert info["edgeff"] == edgeff.__version__ and info["python"] == platform.python_version()
    assert info["python_implementation"] == platform.python_implementation()
    assert info["numba_threading_layer"] == numba.threading_layer()  # the probe ran in this process
    assert info["numba_num_threads"] == numba.config.NUMBA_NUM_THREADS
    assert info["onnxruntime"] == onnxruntime_version()
    board = detect_board()
    assert {k: info[k] for k in ("arch", "board", "family", "cpu_model", "cpu_features", "cores")} == \
        {k: board[k] for k in ("arch", "board", "family", "cpu_model", "cpu_features", "cores")}
    assert info["mem_total_bytes"] == board["mem_total_bytes"]


def test_info_numba_cache_dir_default(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    if numba.config.CACHE_DIR:
        assert info["numba_cache_source"] == "NUMBA_CACHE_DIR"
    else:
        assert info["numba_cache_source"].startswith("default")
        assert os.path.isabs(info["numba_cache_dir"])


def test_info_numba_cache_dir_from_environment(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "edgeff.cli", "info", "--json"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["numba_cache_dir"] == str(tmp_path) and info["numba_cache_source"] == "NUMBA_CACHE_DIR"


def test_info_human(capsys):
    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    fields = dict(line.split(":", 1) for line in lines)
    assert KEYS <= fields.keys()
    assert fields["numba"].strip() == numba.__version__
    assert fields["cpu_model"].strip() == detect_board()["cpu_model"]
    columns = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in lines}
    assert len(columns) == 1  # every value starts in the same column
    assert fields["mem_total_bytes"].strip().endswith("MiB")
