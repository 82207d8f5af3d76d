"""A real OpenSSH server on 127.0.0.1 for the deploy tests: generated host and client keys,
an ssh_config that pins the host key, start/stop/kill of the server and its sessions."""

import os
import signal
import socket
import subprocess
import time

SSHD = "/usr/sbin/sshd"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


class Sshd:
    """force_command: a command sshd runs instead of every one a client sends (ForceCommand; the
    client's is in $SSH_ORIGINAL_COMMAND)."""

    def __init__(self, workdir, force_command=None):
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(workdir, name)],
                           check=True)
        self.port = free_port()
        with open(os.path.join(workdir, "client_key.pub")) as f, open(os.path.join(workdir, "authorized_keys"), "w") as a:
            a.write(f.read())
        with open(os.path.join(workdir, "host_key.pub")) as f:
            host_pub = " ".join(f.read().split()[:2])
        with open(os.path.join(workdir, "known_hosts"), "w") as f:
            f.write(f"[127.0.0.1]:{self.port} {host_pub}\n")
        self.config = os.path.join(workdir, "sshd_config")
        with open(self.config, "w") as f:
            f.write(f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {workdir}/host_key\n"
                    f"AuthorizedKeysFile {workdir}/authorized_keys\nPidFile {workdir}/sshd.pid\n"
                    "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
                    "PermitRootLogin yes\nSubsystem sftp internal-sftp\nLogLevel ERROR\n" +
                    (f"ForceCommand {force_command}\n" if force_command else ""))
        self.client_config = os.path.join(workdir, "ssh_config")
        with open(self.client_config, "w") as f:
            f.write(f"Host device\n  HostName 127.0.0.1\n  Port {self.port}\n  User {os.environ.get('USER') or 'root'}\n"
                    f"  IdentityFile {workdir}/client_key\n  IdentitiesOnly yes\n"
                    f"  UserKnownHostsFile {workdir}/known_hosts\n  StrictHostKeyChecking yes\n")
        self.proc = None

    def start(self):
        os.makedirs("/run/sshd", exist_ok=True)   # privilege separation directory
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", self.config], stderr=subprocess.PIPE,
                                     start_new_session=True)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"sshd did not start: {self.proc.stderr.read().decode()}")
                time.sleep(0.05)
        raise RuntimeError("sshd did not listen within 10 s")

    def kill(self):
        """SIGKILL the server and every session it serves: connections drop mid-transfer."""
        for pid in _descendants(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.kill()
