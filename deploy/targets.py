"""Device profiles a bundle is built for: architecture, pip platform tags, Python, RAM, budget.

The wheelhouse of a bundle is fetched with `pip download --platform TAG ...` for every
tag the target's glibc accepts: with `manylinux2014_aarch64` alone pip silently settles
for years-old releases (numba 0.60, onnxruntime 1.16) whose newer builds are tagged
`manylinux_2_28`. The wheels are for the Python the board's OS ships (`python`), so
edgeff installs into the system's own Python there.
"""

import dataclasses
import platform
import re

from ..errors import DeployError, UsageError

MIB = 1 << 20
OLDEST_PYTHON = (3, 10)   # as setup.py's python_requires


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    description: str
    arch: str                  # what `uname -m` prints on the device
    glibc: tuple               # (2, 36): the oldest glibc the target's OS ships
    cores: int
    ram_bytes: int             # typical RAM of the board
    python: str = "3.11"       # X.Y, the Python the board's OS ships
    abi: str = ""              # pip's --abi for the wheels: cpXY of python unless given (cp313t: free-threaded)
    quantize: bool = False     # ship an int8 model beside the float one
    wheels: bool = True        # PyPI has wheels of every runtime dependency for it
    onnxruntime: str = "onnxruntime from PyPI, CPU execution provider"
    pitfalls: tuple = ()

    def __post_init__(self):
        if not self.abi:
            object.__setattr__(self, "abi", "cp" + self.python.replace(".", ""))

    def for_python(self, python=None, abi=None):
        """This profile with its wheels for another Python (X.Y) or ABI (cpXY, cpXYt): the Python the device
        runs, when it is not the one its OS ships. Either one gives the other."""
        if python is None and abi is None:
            return self
        if python is not None and not re.fullmatch(r"3\.\d{1,2}", python):
            raise UsageError(f"Python version {python!r} is not X.Y; give e.g. --python-version 3.12")
        if abi is not None and not re.fullmatch(r"cp3\d{1,2}t?", abi):
            raise UsageError(f"ABI {abi!r} is not cp3XY; give e.g. --abi cp312 (cp313t: free-threaded)")
        python = python or f"3.{abi[3:].rstrip('t')}"
        if abi and abi.rstrip("t") != "cp" + python.replace(".", ""):
            raise UsageError(f"ABI {abi} is not one of Python {python}; give --abi cp{python.replace('.', '')} "
                             "or leave --abi out")
        if tuple(map(int, python.split("."))) < OLDEST_PYTHON:
            raise UsageError(f"edgeff runs on Python {'.'.join(map(str, OLDEST_PYTHON))} and newer, not {python}; "
                             "bundle for a newer Python, or install one on the device")
        return dataclasses.replace(self, python=python, abi=abi or "")

    @property
    def default_budget_bytes(self):
        """What training may use by default: half the RAM, less 100 MiB for the OS and Python."""
        return max(64 * MIB, self.ram_bytes // 2 - 100 * MIB)

    @property
    def platforms(self):
        """Every pip platform tag the target accepts, newest first."""
        major, minor = self.glibc
        tags = [f"manylinux_{major}_{m}_{self.arch}" for m in range(minor, 16, -1)]
        if self.arch in ("aarch64", "x86_64"):
            tags.append(f"manylinux2014_{self.arch}")
        return tags + [f"linux_{self.arch}"]

    def as_dict(self):
        return dict(dataclasses.asdict(self), platforms=self.platforms,
                    default_budget_bytes=self.default_budget_bytes, pitfalls=list(self.pitfalls))


_ARMV7 = ("No onnxruntime, numba or llvmlite wheels for armv7l on PyPI: the bundle ships no wheelhouse "
          "(the device installs from piwheels.org, which builds numba for it) and infers with edgeff's "
          "NumPy/Numba path from the run directory; .onnx files need an onnxruntime you build yourself.",
          "A 32-bit OS caps a process at about 3 GiB whatever the RAM.")
_BOOKWORM = (2, 36)   # Raspberry Pi OS bookworm (Debian 12): Python 3.11
_TRIXIE = (2, 41)     # Raspberry Pi OS trixie (Debian 13): Python 3.13


PROFILES = {t.name: t for t in [
    Target("rpi5", "Raspberry Pi 5, 64-bit Raspberry Pi OS bookworm", "aarch64", _BOOKWORM, 4, 4096 * MIB),
    Target("rpi4b", "Raspberry Pi 4 Model B, 64-bit Raspberry Pi OS bookworm", "aarch64", _BOOKWORM, 4, 4096 * MIB),
    Target("rpi3b", "Raspberry Pi 3 Model B/B+, 64-bit Raspberry Pi OS bookworm", "aarch64", _BOOKWORM, 4,
           1024 * MIB, quantize=True, pitfalls=("1 GiB of RAM: keep the 784-2000x4 net layerwise or use a smaller "
                                                "net; check with 'edgeff plan --memory-budget'.",)),
    Target("rpi-zero2w", "Raspberry Pi Zero 2 W, 64-bit Raspberry Pi OS bookworm", "aarch64", _BOOKWORM, 4,
           512 * MIB, quantize=True, pitfalls=("512 MiB of RAM: train small nets (e.g. 784-500-500) with "
                                               "--memory-budget; the int8 model is shipped for inference.",)),
    Target("rpi5-trixie", "Raspberry Pi 5, 64-bit Raspberry Pi OS trixie", "aarch64", _TRIXIE, 4, 4096 * MIB,
           python="3.13"),
    Target("rpi4b-32", "Raspberry Pi 4 Model B, 32-bit Raspberry Pi OS bookworm", "armv7l", _BOOKWORM, 4,
           4096 * MIB, wheels=False, onnxruntime="none on PyPI for armv7l: NumPy/Numba inference", pitfalls=_ARMV7),
    Target("rpi3b-32", "Raspberry Pi 3 Model B/B+, 32-bit Raspberry Pi OS bookworm", "armv7l", _BOOKWORM, 4,
           1024 * MIB, wheels=False, onnxruntime="none on PyPI for armv7l: NumPy/Numba inference", pitfalls=_ARMV7),
    Target("rpi-zero2w-32", "Raspberry Pi Zero 2 W, 32-bit Raspberry Pi OS bookworm", "armv7l", _BOOKWORM, 4,
           512 * MIB, wheels=False, onnxruntime="none on PyPI for armv7l: NumPy/Numba inference", pitfalls=_ARMV7),
    Target("jetson-nano", "NVIDIA Jetson Nano 4GB, JetPack 4.6 (L4T R32, Ubuntu 18.04)", "aarch64", (2, 27), 4,
           4096 * MIB, onnxruntime="onnxruntime from PyPI, CPU execution provider (the GPU build is not on PyPI)",
           pitfalls=("JetPack 4 ships Python 3.6 and glibc 2.27: install Python 3.11 first (e.g. from source or "
                     "conda; or another 3.10+, and bundle with --python-version for it); numba 0.68 and "
                     "onnxruntime 1.32 need glibc 2.28, so pip picks older releases that still support 2.27 or "
                     "none - check the bundle's wheelhouse.",
                     "For the GPU, build a TensorRT engine from model.onnx on the device (trtexec "
                     "--onnx=model.onnx); engines are not portable between devices, so edgeff ships ONNX.")),
    Target("jetson-orin-nano", "NVIDIA Jetson Orin Nano 8GB, JetPack 6 (L4T R36, Ubuntu 22.04)", "aarch64", (2, 35),
           6, 8192 * MIB, python="3.10",
           onnxruntime="onnxruntime from PyPI, CPU execution provider (the GPU build is not on PyPI)",
           pitfalls=("Python 3.10 has no wheels of the host's numpy and onnxruntime if they are newer than 2.2 and "
                     "1.23: the bundle then ships the newest releases that have them (see requirements.lock).",
                     "For the GPU, build a TensorRT engine from model.onnx on the device (trtexec "
                     "--onnx=model.onnx); engines are not portable between devices, so edgeff ships ONNX.")),
    Target("generic-aarch64", "any 64-bit ARM Linux with glibc 2.28+ and Python 3.11", "aarch64", (2, 28), 4,
           2048 * MIB),
    Target("generic-armv7l", "any 32-bit ARM Linux with Python 3.11", "armv7l", (2, 28), 4, 1024 * MIB,
           wheels=False, onnxruntime="none on PyPI for armv7l: NumPy/Numba inference", pitfalls=_ARMV7),
    Target("generic-x86_64", "any x86_64 Linux with glibc 2.28+ and Python 3.11", "x86_64", (2, 28), 2,
           4096 * MIB),
]}


def get(name):
    if name not in PROFILES:
        raise DeployError(f"unknown target {name!r}; known: {', '.join(PROFILES)}")
    return PROFILES[name]


def generic_for(arch):
    """The generic profile of an architecture as `uname -m` names it (arm64 is aarch64)."""
    arch = {"arm64": "aarch64", "armv8l": "armv7l", "amd64": "x86_64"}.get(arch.lower(), arch)
    name = f"generic-{arch}"
    if name not in PROFILES:
        raise DeployError(f"no target profile for architecture {arch!r}; known: {', '.join(PROFILES)}")
    return PROFILES[name]


def host_target():
    return generic_for(platform.machine())


_BOARDS = [("raspberry pi 5", "rpi5"), ("raspberry pi 4", "rpi4b"), ("raspberry pi 400", "rpi4b"),
           ("raspberry pi 3", "rpi3b"), ("raspberry pi zero 2", "rpi-zero2w"),
           ("orin nano", "jetson-orin-nano"), ("jetson nano", "jetson-nano"), ("nvidia jetson nano", "jetson-nano")]


def detect(arch, model=""):
    """The profile of a device from `uname -m` and /proc/device-tree/model (generic if unknown)."""
    arch = {"arm64": "aarch64", "armv8l": "armv7l", "amd64": "x86_64"}.get(arch.lower(), arch)
    for fragment, name in _BOARDS:
        if fragment in model.lower():
            base = PROFILES[name]
            if base.arch == arch:
                return base
            if f"{name}-32" in PROFILES and PROFILES[f"{name}-32"].arch == arch:
                return PROFILES[f"{name}-32"]
    return generic_for(arch)
