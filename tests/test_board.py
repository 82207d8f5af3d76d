"""Board detection on directories laid out like / (a Pi 5, a Jetson Nano, an Orin, a PC,
an old kernel, nothing at all) and on this machine."""

import os
import platform

from edgeff.board import detect_board

MEMINFO = "MemTotal:        8245000 kB\nMemFree:          100000 kB\nMemAvailable:    7000000 kB\n"

PI5_CORE = ("processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n"
            "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n")
PI5_CPUINFO = "".join(PI5_CORE.format(n=n) for n in range(4)) + (
    "Revision\t: d04170\nSerial\t\t: 1a2b3c4d5e6f7a8b\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n")

NANO_CPUINFO = ("processor\t: 0\nmodel name\t: ARMv8 Processor rev 1 (v8l)\nBogoMIPS\t: 38.40\n"
                "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\nCPU implementer\t: 0x41\n"
                "CPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: 0xd07\nCPU revision\t: 1\n")
NANO_TEGRA = ("# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, "
              "DATE: Sat Feb 19 17:05:08 UTC 2022\n")

PC_CPUINFO = "".join(f"processor\t: {n}\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD Ryzen 7 5800X 8-Core Processor\n"
                     "flags\t\t: sse avx2 fma sse\n\n" for n in range(2))


def lay_out(root, files):
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(root)


def test_raspberry_pi_5(tmp_path):
    root = lay_out(tmp_path, {"proc/device-tree/model": b"Raspberry Pi 5 Model B Rev 1.0\x00",
                              "proc/cpuinfo": PI5_CPUINFO, "proc/meminfo": MEMINFO})
    b = detect_board(root)
    assert b["family"] == "raspberry-pi"
    assert b["board"] == "Raspberry Pi 5 Model B Rev 1.0"  # the trailing NUL is gone
    assert b["cpu_model"] == "Raspberry Pi 5 Model B Rev 1.0"
    assert b["cpu_features"] == ["aes", "asimd", "atomics", "crc32", "evtstrm", "fp", "pmull", "sha1", "sha2"]
    assert b["mem_total_bytes"] == 8245000 * 1024 and b["mem_available_bytes"] == 7000000 * 1024


def test_jetson_nano(tmp_path):
    files = {"etc/nv_tegra_release": NANO_TEGRA, "proc/cpuinfo": NANO_CPUINFO, "proc/meminfo": MEMINFO}
    b = detect_board(lay_out(tmp_path / "bare", files))
    assert b["family"] == "jetson" and b["board"] == "Jetson (L4T R32.7.1)"
    assert b["cpu_model"] == "Cortex-A57"  # from "CPU part", not the uninformative "model name"
    assert "asimd" in b["cpu_features"] and b["mem_total_bytes"] == 8245000 * 1024

    files["proc/device-tree/model"] = b"NVIDIA Jetson Nano Developer Kit\x00"
    b = detect_board(lay_out(tmp_path / "dt", files))
    assert b["family"] == "jetson" and b["board"] == "NVIDIA Jetson Nano Developer Kit (L4T R32.7.1)"


def test_jetson_known_by_its_device_tree_alone(tmp_path):
    root = lay_out(tmp_path, {"proc/device-tree/model": b"NVIDIA Jetson Orin Nano Developer Kit\x00"})
    b = detect_board(root)
    assert b["family"] == "jetson" and b["board"] == "NVIDIA Jetson Orin Nano Developer Kit"


def test_generic_x86(tmp_path):
    b = detect_board(lay_out(tmp_path, {"proc/cpuinfo": PC_CPUINFO, "proc/meminfo": MEMINFO}))
    assert b["family"] == "generic" and b["board"] == "generic"
    assert b["cpu_model"] == "AMD Ryzen 7 5800X 8-Core Processor"
    assert b["cpu_features"] == ["avx2", "fma", "sse"]  # sorted, each once


def test_old_kernel_without_memavailable(tmp_path):
    meminfo = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 20 kB\nCached: 300 kB\n"
    b = detect_board(lay_out(tmp_path, {"proc/meminfo": meminfo}))
    assert b["mem_total_bytes"] == 1000 * 1024 and b["mem_available_bytes"] == 420 * 1024


def test_empty_tree(tmp_path):
    b = detect_board(str(tmp_path))
    assert (b["family"], b["board"], b["cpu_features"], b["mem_total_bytes"]) == ("generic", "generic", [], 0)
    assert b["cpu_model"] and b["arch"] == platform.machine()


def test_this_machine():
    b = detect_board()
    assert b["arch"] == platform.machine() and b["cores"] == os.cpu_count()
    assert 0 < b["mem_available_bytes"] <= b["mem_total_bytes"]
    # an independent count of the same memory: sysinfo(2) behind sysconf
    assert b["mem_total_bytes"] == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert b["cpu_model"] and b["family"] in ("raspberry-pi", "jetson", "generic")
