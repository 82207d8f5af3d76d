"""Flower's simulation of a federation on this machine: N virtual SuperNodes running the ClientApp
(on Ray, Flower's simulation engine: `edgeff[fed-sim]`), the ServerApp in this process."""

import logging
import os


class _NoDeprecationNotice(logging.Filter):
    """Drops Flower's notice that run_simulation is deprecated for `flwr run`: Flower is pinned
    (setup.py), and the notice asks nothing of an edgeff user."""

    def filter(self, record):
        return "DEPRECATED FEATURE" not in record.getMessage()


def simulate(model, quiet=False, client_app=None):
    """Run every round of GlobalModel `model`'s federation not yet done, one virtual client per
    partition running client_app (default: edgeff's). quiet: only warnings (a refused update among
    them) and errors from Flower and Ray."""
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")   # no GPUs asked for: Ray's notice about them
    from flwr.simulation import run_simulation
    from .client_app import app
    from .server_app import server_app
    level = logging.WARNING if quiet else logging.INFO
    flower_log = logging.getLogger("flwr")
    flower_log.setLevel(level)
    for handler in flower_log.handlers:
        handler.addFilter(_NoDeprecationNotice())
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": os.cpu_count() or 1, "include_dashboard": False, "logging_level": level,
                             "log_to_driver": not quiet}}
    run_simulation(server_app(model), client_app or app, num_supernodes=model.settings.clients, backend_config=backend)
