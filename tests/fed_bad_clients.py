"""A federation in which two clients are bad, run as a script (Flower's simulation ships this
module's ClientApp to its workers by value): client 0 sends its layer with a NaN in it, client 1 a
layer of the wrong shape, the others edgeff's own updates.

    python tests/fed_bad_clients.py OUT_DIR [edgeff federate options as FederationConfig fields: k=v]"""

import os
import sys

import numpy as np
from flwr.app import Array
from flwr.clientapp import ClientApp

from edgeff.federated import client_app
from edgeff.federated.records import ARRAYS
from edgeff.federated.server_app import GlobalModel
from edgeff.federated.settings import FederationConfig
from edgeff.federated.simulation import simulate

app = ClientApp()


@app.train()
def train(msg, context):
    reply = client_app.train(msg, context)
    arrays, partition_id = reply.content[ARRAYS], context.node_config["partition-id"]
    name = sorted(arrays)[-1]                  # a weight matrix
    good = arrays[name].numpy()
    if partition_id == 0:
        good[0, 0] = np.nan
        arrays[name] = Array(good)
    elif partition_id == 1:
        arrays[name] = Array(good[:, :-1].copy())
    return reply


if __name__ == "__main__":
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    options = dict(arg.split("=", 1) for arg in sys.argv[2:])
    typed = {k: type(getattr(FederationConfig, k))(v) for k, v in options.items()}
    simulate(GlobalModel(FederationConfig(out=sys.argv[1], **typed).validate()), quiet=True, client_app=app)
