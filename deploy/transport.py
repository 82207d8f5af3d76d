"""Where a bundle goes: `--to` URLs and the transports behind them.

    file:///path                     a mounted SD card, or a directory (tests)
    ssh://[user@]host[:port]/path    the system OpenSSH client (~/.ssh/config, agent, known_hosts
                                     apply); /~/path is relative to the remote home
    serial:///dev/ttyUSB0?baud=N     'edgeff agent serial' on the device (deploy/serial_link.py)

Every transport does the same four things, relative to the device's ROOT:
probe() -> {"machine", "model", "python"}; hashes(paths) -> {path: sha256 or None};
put(local, path, sha256, progress) -> bytes sent (resumes a cut transfer, verifies the
sha256 on the device, renames into place); call(action, **args) -> the JSON result of
install.py's adopt / install / rollback / status on the device.
"""

import json
import os
import platform
import subprocess
import sys
import urllib.parse

from ..errors import DeployError
from . import install as device

CHUNK = 1 << 20


def parse_url(url):
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("file", "ssh", "serial") or not parts.path:
        raise DeployError(f"--to {url}: give file:///path, ssh://[user@]host[:port]/path or "
                          "serial:///dev/ttyX?baud=115200")
    return parts


def open_transport(url, root=None, ssh_config=None):
    parts = parse_url(url)
    if parts.scheme == "file":
        return FileTransport(parts.path)
    if parts.scheme == "ssh":
        from .ssh import SshTransport
        return SshTransport(parts, ssh_config)
    from .serial_link import SerialTransport
    query = urllib.parse.parse_qs(parts.query)
    try:
        baud = int(query.get("baud", ["115200"])[0])
    except ValueError:
        raise DeployError(f"--to {url}: baud must be a number") from None
    return SerialTransport(parts.path, baud=baud)


def part_name(rel, sha256):
    """Where a file grows while it is sent: named by its hash, so only the same file resumes it."""
    return f"{rel}.{sha256[:16]}.part"


def action_args(action, release=None, keep=None, smoke=True):
    args = [action]
    if release:
        args += ["--release", release]
    if keep is not None:
        args += ["--keep", str(keep)]
    if not smoke:
        args.append("--no-smoke")
    return args


def parse_result(stdout, where):
    try:
        result = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise DeployError(f"{where}: the installer printed no result ({stdout.strip()[-200:] or 'nothing'})") from None
    if "error" in result:
        raise DeployError(f"{where}: {result['error']}")
    return result


def installers(release, action):
    """Where the install.py to run may be, first found wins: the release's own (incoming, or
    installed already) for adopt/install, the current release's for rollback/status."""
    if action in ("adopt", "install"):
        return [f"incoming/{release}/install.py", f"releases/{release}/install.py"]
    return ["current/install.py"]


class FileTransport:
    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.url = f"file://{self.root}"

    def probe(self):
        return {"machine": platform.machine(), "model": "", "python": "%d.%d" % sys.version_info[:2]}

    def hashes(self, paths):
        out = {}
        for rel in paths:
            path = device.safe_path(self.root, rel)
            out[rel] = device.sha256_file(path) if os.path.isfile(path) else None
        return out

    def put(self, local, rel, sha256, progress=None):
        dest = device.safe_path(self.root, rel)
        part = device.safe_path(self.root, part_name(rel, sha256))
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
        if device.sha256_file(part) != sha256:
            os.unlink(part)
            raise DeployError(f"{rel}: sha256 on the device differs after writing; deploy again")
        os.replace(part, dest)
        return size - offset

    def call(self, action, release=None, **kwargs):
        found = [p for p in installers(release, action) if os.path.isfile(os.path.join(self.root, p))]
        if not found:
            raise DeployError(f"{self.url}: nothing installed here yet (no {installers(release, action)[-1]})")
        script = os.path.join(self.root, found[0])
        r = subprocess.run([sys.executable, script, *action_args(action, release, **kwargs), "--root", self.root],
                           capture_output=True, text=True)
        return parse_result(r.stdout + ("" if r.stdout.strip() else r.stderr), self.url)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
