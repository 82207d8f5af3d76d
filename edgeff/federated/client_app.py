"""The Flower ClientApp: one device's part of a round. It trains the layer(s) the server shipped on
this node's data: its own data set (node config data-file, a device's real case) or its partition of
the federation's training set (partition-id, num-partitions: Flower's simulation sets them, a
SuperNode takes them from --node-config) and replies with those layers and its number of training
rows. The frozen layers below come once per phase (in the first round this node is sent in the
phase) and are kept in the node's context, checked by their sha256 every round.

Any exception becomes Flower's error reply: the server leaves this node out of the round's aggregate.
"""

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ..errors import ModelError, UsageError
from .local import client_data, round_seed, train_phase, training_set
from .records import ARRAYS, FROZEN, LOSS, METRICS, NUM_EXAMPLES, digest, layers_record, record_layers
from .settings import FederationConfig

app = ClientApp()
PHASE, FROZEN_SHA256, GLOBAL_ROUND = "phase", "frozen-sha256", "global-round"   # the server's round settings
DATA_FILE = "data-file"     # node config: the device's own data set, in place of a partition of a shared one


@app.train()
def train(msg: Message, context: Context) -> Message:
    config = msg.content["config"]
    settings = FederationConfig.from_record(config)
    ds, partition_id = _local_data(settings, context.node_config)
    phase = config[PHASE]
    layers = {**record_layers(_frozen_layers(msg, context, config[FROZEN_SHA256])),
              **record_layers(msg.content[ARRAYS])}
    global_round = config[GLOBAL_ROUND]
    seed = round_seed(settings.seed, global_round, partition_id)
    trained, loss = train_phase(settings, ds, phase, layers, seed, settings.round_lr(global_round))
    metrics = MetricRecord({NUM_EXAMPLES: len(ds.y_train), LOSS: loss})
    return Message(content=RecordDict({ARRAYS: layers_record(trained), METRICS: metrics}), reply_to=msg)


def _local_data(settings, node_config):
    """(this node's training data, its partition id for the round seeds): the node's own data set
    (node config data-file: a data set name or .npz, as edgeff train --dataset) or its partition."""
    own = node_config.get(DATA_FILE)
    if own is not None:
        return training_set(str(own), "", 0), settings.clients     # an id no partition has
    partition_id = node_config.get("partition-id")
    if node_config.get("num-partitions") != settings.clients or not isinstance(partition_id, int):
        raise UsageError(f"this node's num-partitions {node_config.get('num-partitions')!r} and partition-id "
                         f"{partition_id!r} do not fit a federation of {settings.clients} clients; or give it "
                         f"its own data with {DATA_FILE}")
    return client_data(settings, partition_id), partition_id


def _frozen_layers(msg, context, sha256):
    """The frozen layers of this phase: the message's (kept in the node's context) or those kept."""
    if FROZEN in msg.content:
        context.state[FROZEN] = msg.content[FROZEN]
    kept = context.state.get(FROZEN, ArrayRecord())
    if digest(kept) != sha256:
        raise ModelError("this node does not hold the frozen layers of the phase (it restarted since it was sent "
                         "them); the server sends them again in its next round")
    return kept

