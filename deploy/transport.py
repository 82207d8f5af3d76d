"""Where a bundle goes: `--to` URLs and the transports behind them.

    file:///path                     a mounted SD card, or a directory (tests)
    ssh://[user@]host[:port]/path    the system OpenSSH client (~/.ssh/config, agent, known_hosts
                                     apply); /~/path is relative to the remote home
    serial:///dev/ttyUSB0?baud=N     'edgeff agent serial' on the device (deploy/serial_link.py)

Every transport does the same four things, relative to the device's ROOT:
probe() -> {"machine", "model", "python"}; hashes(paths) -> {path: sha256 or None};
put(local, path, sha256, progress) -> bytes sent (resumes a cut transfer, verifies the
sha256 on the device, renames into place); call(action, **args) -> the result of the
installer's adopt / install / rollback / status on the device.

The installer that runs is always the host's own edgeff.deploy.install, never a copy taken
from a bundle or from the device's directory: file:// calls it in this process, ssh:// streams
its source into the device's python3, the serial agent imports its own installed module.
"""

import os
import platform
import sys
import urllib.parse

from ..errors import DeployError
from . import install as device
from . import trust
from .serial_link import SerialTransport
from .ssh import SshTransport
from .upload import CHUNK, part_name


def parse_url(url):
    """The parts of a --to URL; a malformed one (and an ssh one ssh could take for an option) is refused."""
    usage = "give file:///path, ssh://[user@]host[:port]/path or serial:///dev/ttyX?baud=115200"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port            # urllib checks the port only when asked
    except ValueError as exc:
        raise DeployError(f"--to {url}: not a valid URL ({exc}); {usage}") from None
    if parts.scheme not in ("file", "ssh", "serial") or not parts.path:
        raise DeployError(f"--to {url}: {usage}")
    if parts.scheme == "ssh":
        if not parts.hostname:
            raise DeployError(f"--to {url}: no host; {usage}")
        if port is not None and not 1 <= port <= 65535:
            raise DeployError(f"--to {url}: port {port} is outside 1..65535")
        if parts.hostname.startswith("-") or (parts.username or "").startswith("-"):
            raise DeployError(f"--to {url}: a user or host beginning with '-' would reach ssh as an option")
    return parts


def open_transport(url, root=None, ssh_config=None):
    parts = parse_url(url)
    if parts.scheme == "file":
        return FileTransport(parts.path)
    if parts.scheme == "ssh":
        return SshTransport(parts, ssh_config)
    query = urllib.parse.parse_qs(parts.query)
    try:
        baud = int(query.get("baud", ["115200"])[0])
    except ValueError:
        raise DeployError(f"--to {url}: baud must be a number") from None
    return SerialTransport(parts.path, baud=baud)


class FileTransport:
    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.url = f"file://{self.root}"

    def probe(self):
        return {"machine": platform.machine(), "model": "", "python": "%d.%d" % sys.version_info[:2]}

    def hashes(self, paths):
        out = {}
        for rel in paths:
            path = trust.safe_path(self.root, rel)
            out[rel] = trust.sha256_file(path) if os.path.isfile(path) else None
        return out

    def put(self, local, rel, sha256, progress=None):
        dest = trust.upload_path(self.root, rel)
        part = trust.safe_path(self.root, part_name(rel, sha256))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        offset = os.path.getsize(part) if os.path.isfile(part) else 0
        size = os.path.getsize(local)
        offset = offset if offset <= size else 0
        if progress:
            progress(offset)          # a resumed partial counts as done
        with open(local, "rb") as src, open(part, "r+b" if offset else "wb") as out:
            src.seek(offset)
            out.seek(offset)
            done = offset
            for block in iter(lambda: src.read(CHUNK), b""):
                out.write(block)
                done += len(block)
                if progress:
                    progress(len(block))
            out.truncate()
            out.flush()
            os.fsync(out.fileno())
        if trust.sha256_file(part) != sha256:
            os.unlink(part)
            raise DeployError(f"{rel}: sha256 on the device differs after writing; deploy again")
        os.replace(part, dest)
        return size - offset

    def call(self, action, **kwargs):
        try:
            return getattr(device, action)(self.root, **kwargs)
        except (DeployError, OSError) as exc:
            raise DeployError(f"{self.url}: {exc}") from None

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
