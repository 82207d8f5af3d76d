"""What device this is: architecture, board (Raspberry Pi / Jetson / generic), CPU, memory.
`root` lets tests point at a directory laid out like / (proc/, etc/)."""

import os
import platform


def _read(root, rel):
    try:
        with open(os.path.join(root, rel), "rb") as f:
            return f.read().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return ""


def _cpuinfo(text):
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name") or fields.get("Model") or fields.get("Hardware") or platform.processor()
    features = (fields.get("flags") or fields.get("Features") or "").split()
    return model, sorted(set(features))


def _meminfo(text):
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0]) * 1024
    return out.get("MemTotal", 0), out.get("MemAvailable", 0)


def detect_board(root="/"):
    model = _read(root, "proc/device-tree/model")
    tegra = _read(root, "etc/nv_tegra_release")
    if tegra or "jetson" in model.lower():
        family = "jetson"
        release = tegra.split(",")[0].lstrip("# ").strip() if tegra else ""
        board = model or f"Jetson ({release})"
    elif "raspberry pi" in model.lower():
        family, board = "raspberry-pi", model
    else:
        family, board = "generic", model or "generic"
    cpu_model, features = _cpuinfo(_read(root, "proc/cpuinfo"))
    total, available = _meminfo(_read(root, "proc/meminfo"))
    return dict(arch=platform.machine(), board=board, family=family, cpu_model=cpu_model, cpu_features=features,
                cores=os.cpu_count(), mem_total_bytes=total, mem_available_bytes=available)
