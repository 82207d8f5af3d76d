"""What device this is: architecture, board (Raspberry Pi / Jetson / generic), CPU, memory.

Everything is read from files under `root` (proc/, etc/), so tests can lay out a fake
device tree in a temporary directory; the deploy pre-flight reuses detect_board().
"""

import os
import platform
import re

# "CPU part" of ARM Ltd. cores (CPU implementer 0x41) found on the boards edgeff targets.
ARM_CORES = {
    "0xb76": "ARM1176",      # Raspberry Pi 1 / Zero
    "0xc07": "Cortex-A7",    # Raspberry Pi 2
    "0xd03": "Cortex-A53",   # Raspberry Pi 3 / Zero 2 W
    "0xd07": "Cortex-A57",   # Jetson Nano / TX1 / TX2
    "0xd08": "Cortex-A72",   # Raspberry Pi 4 / 400
    "0xd0b": "Cortex-A76",   # Raspberry Pi 5
    "0xd42": "Cortex-A78AE", # Jetson Orin
}


def _read(root, rel):
    """A text file under root, NULs dropped (device-tree strings end in one); "" if absent."""
    try:
        with open(os.path.join(root, rel), "rb") as f:
            return f.read().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return ""


def _cpuinfo(text):
    """(cpu_model, sorted features) from /proc/cpuinfo; the first occurrence of a key wins."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    if "CPU part" in fields or "CPU implementer" in fields:  # ARM
        part = fields.get("CPU part", "")
        core = ARM_CORES.get(part, f"ARM CPU part {part}" if part else "")
        model = fields.get("Model") or fields.get("Hardware") or core or fields.get("model name")
    else:
        model = fields.get("model name")
    features = (fields.get("flags") or fields.get("Features") or "").split()
    return model or platform.processor() or "unknown", sorted(set(features))


def _meminfo(text):
    """(total, available) in bytes; kernels older than 3.14 lack MemAvailable: estimate it."""
    kib = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            kib[key.strip()] = int(parts[0])
    available = kib.get("MemAvailable")
    if available is None:
        available = kib.get("MemFree", 0) + kib.get("Buffers", 0) + kib.get("Cached", 0)
    return kib.get("MemTotal", 0) * 1024, available * 1024


def _l4t_release(text):
    """'# R32 (release), REVISION: 7.1, ...' -> 'L4T R32.7.1' ('L4T' if unparsable)."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"L4T R{m.group(1)}.{m.group(2)}" if m else "L4T"


def detect_board(root="/"):
    """Describe the machine laid out under root; see the module docstring."""
    model = _read(root, "proc/device-tree/model")
    tegra = _read(root, "etc/nv_tegra_release")
    if tegra or "jetson" in model.lower():
        family = "jetson"
        release = _l4t_release(tegra) if tegra else ""
        board = f"{model or 'Jetson'} ({release})" if release else model
    elif "raspberry pi" in model.lower():
        family, board = "raspberry-pi", model
    else:
        family, board = "generic", model or "generic"  # e.g. another ARM board's model
    cpu_model, features = _cpuinfo(_read(root, "proc/cpuinfo"))
    total, available = _meminfo(_read(root, "proc/meminfo"))
    return dict(arch=platform.machine(), board=board, family=family, cpu_model=cpu_model,
                cpu_features=features, cores=os.cpu_count(),
                mem_total_bytes=total, mem_available_bytes=available)
