"""Board detection on laid-out trees (a Pi 5, a Jetson Nano, a PC), the real machine,
`edgeff info`, and the progress bar."""

import io
import json
import platform

import numba

from edgeff.board import detect_board
from edgeff.cli import main
from edgeff.progress import Progress, progress_enabled

MEMINFO = "MemTotal:        8245000 kB\nMemFree:  100 kB\nMemAvailable:    7000000 kB\n"


def lay_out(root, files):
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(root)


def test_raspberry_pi_5(tmp_path):
    root = lay_out(tmp_path, {
        "proc/device-tree/model": b"Raspberry Pi 5 Model B Rev 1.0\x00",
        "proc/cpuinfo": "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32\nCPU part\t: 0xd0b\n"
                        "Model\t\t: Raspberry Pi 5 Model B Rev 1.0\n",
        "proc/meminfo": MEMINFO,
    })
    b = detect_board(root)
    assert b["family"] == "raspberry-pi" and b["board"] == "Raspberry Pi 5 Model B Rev 1.0"
    assert b["cpu_model"] == "Raspberry Pi 5 Model B Rev 1.0" and "asimd" in b["cpu_features"]
    assert b["mem_total_bytes"] == 8245000 * 1024 and b["mem_available_bytes"] == 7000000 * 1024


def test_jetson_nano(tmp_path):
    root = lay_out(tmp_path, {
        "etc/nv_tegra_release": "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64\n",
        "proc/cpuinfo": "processor\t: 0\nmodel name\t: ARMv8 Processor rev 1 (v8l)\nFeatures\t: fp asimd\n",
        "proc/meminfo": MEMINFO,
    })
    b = detect_board(root)
    assert b["family"] == "jetson" and "R32 (release)" in b["board"]
    root2 = lay_out(tmp_path / "orin", {"proc/device-tree/model": b"NVIDIA Jetson Orin Nano Developer Kit\x00"})
    assert detect_board(root2)["family"] == "jetson"


def test_generic_pc(tmp_path):
    root = lay_out(tmp_path, {"proc/cpuinfo": "model name\t: AMD Ryzen 7\nflags\t\t: sse avx2 fma\n",
                              "proc/meminfo": MEMINFO})
    b = detect_board(root)
    assert b["family"] == "generic" and b["board"] == "generic"
    assert b["cpu_model"] == "AMD Ryzen 7" and b["cpu_features"] == ["avx2", "fma", "sse"]


def test_this_machine():
    b = detect_board()
    assert b["arch"] == platform.machine() and b["mem_total_bytes"] > 0 and b["cores"] >= 1


def test_info_command(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["numba"] == numba.__version__ and info["arch"] == platform.machine()
    assert info["numba_threading_layer"] in ("tbb", "omp", "workqueue")
    assert main(["info"]) == 0
    assert "numba_cache_dir" in capsys.readouterr().out


def test_progress_draws_and_stays_quiet():
    out = io.StringIO()
    with Progress(100, "epoch 1/2", enabled=True, stream=out) as bar:
        bar.update(60, loss=0.123456)
        bar.update(40, loss=0.1)
    text = out.getvalue()
    assert "epoch 1/2" in text and "100/100" in text and "samples/s" in text and "loss=0.1" in text
    quiet = io.StringIO()
    with Progress(100, "x", enabled=False, stream=quiet) as bar:
        bar.update(100, loss=1.0)
    assert quiet.getvalue() == ""
    assert not progress_enabled(False, False, io.StringIO())  # not a TTY
    assert not progress_enabled(True, False) and not progress_enabled(False, True)
