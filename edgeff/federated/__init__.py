"""Federated Forward-Forward on Flower: a fleet of devices trains one dense FF net without sharing data.

FF's objectives are local to a layer, so a round can ship one layer, not the whole net. The server
(server_app.py, a Flower ServerApp) federates layer 1 for its rounds, freezes it, then layer 2, ...
(schedule "layerwise"), or every layer each round ("simultaneous"); each client (client_app.py, a
Flower ClientApp) trains the shipped layer(s) on its own partition with edgeff's trainer inside its
memory budget. Flower does the networking, aggregation (FedAvg, FedAdam) and client management.

    settings.py    FederationConfig: what a federation is, as a command line, a Flower run config
                   and a message's ConfigRecord give it
    partition.py   IID and Dirichlet label-skew partitions of a data set, deterministic from a seed
    local.py       one client round: the shipped layer(s) trained by edgeff's Trainer (no Flower here)
    records.py     layers to and from Flower's ArrayRecords; a client's update checked before it counts
    client_app.py  the ClientApp;  server_app.py: the ServerApp and its strategies
    simulation.py  Flower's simulation of N clients on this machine (edgeff federate)

Flower is the optional extra `edgeff[fed]` (what a SuperNode or a server needs), with Ray for the
simulation `edgeff[fed-sim]`; it is imported only here, and require_flower() says which to install.
"""

from ..errors import UsageError

INSTALL = {False: 'pip install "edgeff[fed]"', True: 'pip install "edgeff[fed-sim]"'}


def require_flower(simulation=False):
    """Import Flower (with its simulation engine, Ray, when simulation), or one UsageError line
    naming the extra to install."""
    try:
        import flwr  # noqa: F401
        if simulation:
            import ray  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"federated training needs Flower{' and its simulation engine' if simulation else ''} "
                         f"({exc.name} is not installed): {INSTALL[simulation]}") from None
