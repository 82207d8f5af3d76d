"""The SSH transport: the system `ssh` client, one multiplexed connection for a whole deploy.

Files stream through `ssh HOST 'cat >> PART'` from where an earlier, interrupted transfer
stopped; the device checks the sha256 with `sha256sum` and renames the file into place.
The installer runs as `python3 - ACTION ...` reading the host's own device modules on stdin.
Every remote command is a POSIX shell line built with shlex.quote, and ssh's argv is always
options, `--`, destination, command. Only put and call create ROOT: probe and hashes (all
that --dry-run uses) change nothing on the device.
"""

import collections
import os
import selectors
import shlex
import shutil
import subprocess
import tempfile
import threading
import time

from ..errors import DeployError
from ..fileio import parse_json
from .answers import bad_answer, printable
from .upload import CHUNK, part_name

CONNECT_TIMEOUT = 10
MAX_OUTPUT = 1 << 24            # bytes a device may print for one command (the installer's answer is a few KiB)


class SshTransport:
    def __init__(self, parts, ssh_config=None):
        self.host = parts.hostname
        self.url = f"ssh://{parts.netloc}{parts.path}"
        # ssh://host/srv/edgeff is absolute; ssh://host/~/edgeff is relative to the remote home,
        # where every ssh command starts
        self.root = parts.path[3:] if parts.path.startswith("/~/") else parts.path
        self._control = tempfile.mkdtemp(prefix="edgeff-ssh-")
        self.options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",
                        "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                        "-o", "ControlMaster=auto", "-o", f"ControlPath={self._control}/%C", "-o", "ControlPersist=60"]
        if ssh_config:
            self.options += ["-F", ssh_config]
        if parts.port:
            self.options += ["-p", str(parts.port)]
        # parse_url refused a user or host beginning with '-', and '--' keeps ssh from reading it as an option
        self.destination = f"{parts.username}@{parts.hostname}" if parts.username else parts.hostname

    def _argv(self, *ssh_options):
        return ["ssh", *self.options, *ssh_options, "--", self.destination]

    def _ssh(self, line, stdin=b"", timeout=600):
        """Run one shell line on the device; (returncode, stdout, stderr). Output past MAX_OUTPUT bytes
        ends the command: a device that prints without end is cut off, not held in memory."""
        with tempfile.TemporaryFile() as f:
            f.write(stdin)
            f.seek(0)
            proc = subprocess.Popen(self._argv() + [line], stdin=f, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        fds = proc.stdout.fileno(), proc.stderr.fileno()
        said = {fd: bytearray() for fd in fds}
        deadline = time.monotonic() + timeout
        with proc, selectors.DefaultSelector() as pipes:
            for fd in said:
                pipes.register(fd, selectors.EVENT_READ)
            while pipes.get_map():
                ready = pipes.select(deadline - time.monotonic())
                if not ready:
                    proc.kill()
                    raise DeployError(f"{self.url}: no answer in {timeout} s; is the device up?")
                for key, _ in ready:
                    block = os.read(key.fd, 1 << 16)
                    said[key.fd] += block
                    if not block:
                        pipes.unregister(key.fd)
                    elif len(said[key.fd]) > MAX_OUTPUT:
                        proc.kill()
                        raise DeployError(f"{self.url}: the device printed more than {MAX_OUTPUT >> 20} MiB "
                                          f"for one command; check the device")
            rc = proc.wait()
        out, err = (said[fd] for fd in fds)
        if rc == 255:  # ssh's own failure: connection, authentication, host key
            raise DeployError(f"{self.url}: ssh failed: {_last_line(err, 'connection lost')}; check the "
                              "address, your key (ssh-add) and known_hosts")
        return rc, out.decode(errors="replace"), err.decode(errors="replace")

    def _in_root(self, create):
        """The start of a shell line that enters ROOT (made first if create; else a missing ROOT fails the line)."""
        root = shlex.quote(self.root)
        return f"mkdir -p {root} && cd {root} && " if create else f"cd {root} && "

    def _sh(self, script, *args, create_root=False):
        """Run `sh -c script args...` in ROOT on the device; (returncode, stdout, stderr)."""
        return self._ssh(self._in_root(create_root) + "sh -c " + shlex.quote(script) + " sh " +
                         " ".join(shlex.quote(a) for a in args))

    def probe(self):
        rc, out, err = self._ssh('uname -m; (tr -d "\\000" < /proc/device-tree/model) 2>/dev/null; echo; '
                                 'python3 -c "import sys; print(\'%d.%d\' % sys.version_info[:2])" 2>/dev/null || echo none')
        lines = out.splitlines() + ["", "", ""]
        return {"machine": lines[0].strip(), "model": lines[1].strip(), "python": lines[2].strip()}

    def hashes(self, paths):
        """{path: sha256 or None}; a ROOT that does not exist holds nothing (and is not made)."""
        if not paths:
            return {}
        rc, out, err = self._sh('for f in "$@"; do [ -f "$f" ] && sha256sum -- "$f"; done; true', *paths)
        found = {}
        for line in out.splitlines():
            digest, _, name = line.partition("  ")
            found[name] = digest
        return {p: found.get(p) for p in paths}

    def put(self, local, rel, sha256, progress=None):
        part = part_name(rel, sha256)
        rc, out, err = self._sh('mkdir -p "$(dirname "$1")" && { [ -f "$1" ] && wc -c < "$1" || echo 0; }', part,
                                create_root=True)
        size = os.path.getsize(local)
        said = out.strip() if rc == 0 else "0"
        if not (said.isdigit() and said.isascii()):
            raise bad_answer(self.url, f"the size of {rel}'s partial", f"a byte count (it said {printable(said)!r})")
        offset = int(said) if int(said) <= size else 0   # longer than the file: not its partial, start again
        if progress:
            progress(offset)          # a resumed partial counts as done
        cmd = self._argv() + [self._in_root(False) + ("cat >> " if offset else "cat > ") + shlex.quote(part)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        tail = collections.deque(maxlen=16)  # the last blocks ssh and the device wrote to stderr, drained as they come
        drain = threading.Thread(target=lambda: tail.extend(iter(lambda: proc.stderr.read1(1 << 16), b"")))
        drain.start()
        try:
            with open(local, "rb") as f:
                f.seek(offset)
                for block in iter(lambda: f.read(CHUNK), b""):
                    proc.stdin.write(block)
                    if progress:
                        progress(len(block))
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        rc = proc.wait()
        drain.join()
        proc.stderr.close()
        if rc != 0:
            raise DeployError(f"{self.url}: transfer of {rel} cut off ({_last_line(b''.join(tail), 'connection lost')}); "
                              "deploy again to resume where it stopped")
        rc, out, err = self._sh('h=$(sha256sum < "$1" | cut -c1-64); if [ "$h" = "$3" ]; then mv -f "$1" "$2"; '
                                'else rm -f "$1"; echo "sha256 $h"; exit 3; fi', part, rel, sha256)
        if rc:
            raise DeployError(f"{rel}: sha256 on the device differs after the transfer; deploy again")
        return size - offset

    def call(self, action, **kwargs):
        """Run the host's own installer on the device: its source goes to `python3 -` on stdin, so no
        install.py on the device (from a bundle, or left in ROOT by anyone) is ever run."""
        source = installer_program()
        args = [action] + [arg for key, value in kwargs.items() for arg in _option(key, value)]
        rc, out, err = self._ssh(self._in_root(True) + "python3 - " + " ".join(shlex.quote(a) for a in args) +
                                 ' --root "$PWD"', stdin=source, timeout=3600)
        lines = out.strip().splitlines()
        try:
            answer = parse_json(lines[-1]) if lines else None
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            said = printable((out.strip() or err.strip())[-200:]) or "nothing"
            raise DeployError(f"{self.url}: the installer printed no result ({said}); is python3 installed on "
                              "the device?")
        if "error" in answer:
            error = answer["error"]
            raise DeployError(f"{self.url}: " + (printable(error) if isinstance(error, str) and error.strip()
                                                 else "the installer reported an unknown error"))
        return answer

    def close(self):
        subprocess.run(self._argv("-O", "exit"), capture_output=True, timeout=10)
        shutil.rmtree(self._control, ignore_errors=True)  # the master removes its socket as it exits

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _last_line(stderr, default):
    """The last line ssh (or the device through it) wrote to stderr, fit for the terminal."""
    lines = stderr.decode(errors="replace").strip().splitlines()
    return printable(lines[-1]) if lines else default


DEVICE_MODULES = ("ed25519", "trust", "install")   # what the device runs, each importing the ones before


def installer_program():
    """A python3 program carrying the host's own device modules: it registers them as the
    package edgeff_device and runs install.main() (the device needs nothing of edgeff)."""
    here = os.path.dirname(os.path.abspath(__file__))
    sources = {}
    for name in DEVICE_MODULES:
        with open(os.path.join(here, name + ".py"), encoding="utf-8") as f:
            sources[name] = f.read()
    return ("import sys, types\n"
            f"sources = {sources!r}\n"
            "package = types.ModuleType('edgeff_device')\n"
            "package.__path__ = []\n"
            "sys.modules['edgeff_device'] = package\n"
            "for name, source in sources.items():\n"
            "    module = types.ModuleType('edgeff_device.' + name)\n"
            "    module.__package__ = 'edgeff_device'\n"
            "    sys.modules[module.__name__] = module\n"
            "    exec(compile(source, name + '.py', 'exec'), module.__dict__)\n"
            "sys.exit(sys.modules['edgeff_device.install'].main())\n").encode()


def _option(name, value):
    """install.py's option for a keyword argument: release="x" -> --release x, smoke=False -> --no-smoke."""
    if isinstance(value, bool):
        return [] if value else [f"--no-{name}"]
    return [f"--{name}", str(value)]
