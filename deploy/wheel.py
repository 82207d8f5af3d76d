"""edgeff's own wheel, built from the installed package, byte for byte reproducible.

The device installs edgeff from this wheel (offline, beside the wheelhouse). It is
made from the modules Python imports, so it works from an editable checkout and from
an installed wheel alike, and needs no build backend.
"""

import base64
import hashlib
import importlib.metadata
import os
import zipfile

from .. import __version__

PACKAGES = ("edgeff", "edgeff.kernels", "edgeff.deploy")
EPOCH = (1980, 1, 1, 0, 0, 0)   # zip timestamps fixed: equal sources give equal bytes


def _sources():
    """{name in the wheel: path on disk} of every .py file of edgeff's packages."""
    import importlib
    files = {}
    for package in PACKAGES:
        top = importlib.import_module(package).__path__[0]
        prefix = package.replace(".", "/")
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in filenames:
                if name.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, name), top).replace(os.sep, "/")
                    files.setdefault(f"{prefix}/{rel}", os.path.join(dirpath, name))
    return files


def _metadata():
    dist = importlib.metadata.distribution("edgeff")
    requires = [r for r in dist.requires or [] if "extra ==" not in r]
    lines = ["Metadata-Version: 2.1", "Name: edgeff", f"Version: {__version__}",
             f"Summary: {dist.metadata['Summary']}", f"Requires-Python: {dist.metadata['Requires-Python']}"]
    return "\n".join(lines + [f"Requires-Dist: {r}" for r in requires]) + "\n"


def build_wheel(out_dir):
    """Write edgeff-VERSION-py3-none-any.whl into out_dir; returns its path."""
    info = f"edgeff-{__version__}.dist-info"
    entries = {name: open(path, "rb").read() for name, path in _sources().items()}
    entries[f"{info}/METADATA"] = _metadata().encode()
    entries[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: edgeff\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    entries[f"{info}/entry_points.txt"] = b"[console_scripts]\nedgeff = edgeff.cli:main\n"
    record = [f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
              f"{len(data)}" for name, data in sorted(entries.items())]
    entries[f"{info}/RECORD"] = ("\n".join(record + [f"{info}/RECORD,,"]) + "\n").encode()
    path = os.path.join(out_dir, f"edgeff-{__version__}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in sorted(entries.items()):
            zi = zipfile.ZipInfo(name, EPOCH)
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
    return path
