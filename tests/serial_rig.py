"""A real Agent serving a root in a thread at the far end of a PtyRelay (see ptyrelay.py)."""

import threading

import pytest

from edgeff.deploy.serial_agent import Agent
from edgeff.deploy.serial_link import SerialTransport
from ptyrelay import PtyRelay


class Rig:
    """A relay with an Agent serving `root` in a thread on its far end."""

    def __init__(self, root, **relay_options):
        self.root = str(root)
        self.relay = PtyRelay(**relay_options)
        self.agent = Agent(self.relay.agent_name, self.root)
        self.errors = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            self.agent.serve_forever()
        except BaseException as exc:  # reported by close(): a test must not pass over a dead agent
            self.errors.append(exc)

    def transport(self, timeout=0.5, **options):
        return SerialTransport(self.relay.host_name, timeout=timeout, **options)

    def close(self):
        self.agent.stop()
        self.thread.join()
        self.agent.close()
        self.relay.close()
        assert not self.errors, self.errors


@pytest.fixture
def make_rig(tmp_path):
    rigs = []

    def make(**relay_options):
        rigs.append(Rig(tmp_path / "root", **relay_options))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.close()
