"""FederationConfig: one federation's settings, as `edgeff federate` takes them, as Flower's run config
holds them (`flwr run`: [tool.flwr.app.config] in pyproject.toml, dashes in the names) and as the
server sends them to the clients in every message's ConfigRecord."""

import dataclasses
import json
import math

from ..config import MAX_SEED, TrainConfig, _check_real, _check_whole
from ..errors import UsageError
from ..fit_loop import lr_scale
from ..memory import parse_bytes

SCHEDULES = ("layerwise", "simultaneous")
STRATEGIES = ("fedavg", "fedavgm", "fedadam")
CLASSIFIERS = ("goodness", "first")   # the classifiers that need no linear head (the head is not federated yet)
ALGOS = ("ff", "ffcl")                 # the dense FF nets a federation trains (edgeff train --algo's)
_D = TrainConfig()
# how the rounds run, not what they learn: a federation resumed with other values is still the same one
RUN_ONLY = ("out", "min_clients", "round_timeout")
# the server's step when --server-lr is 0: Flower's defaults (FedAvgM's 1 is FedAvg without momentum)
SERVER_STEPS = {"fedavg": 1.0, "fedavgm": 1.0, "fedadam": 0.1}


@dataclasses.dataclass(frozen=True)
class FederationConfig:
    clients: int = 2                 # partitions of the training set, one per client (SuperNode)
    min_clients: int = 0             # a round starts with this many connected and counts what they send (0: all)
    round_timeout: float = 3600.0    # seconds a round waits for replies; later ones are left out (Flower's default)
    fraction_train: float = 1.0      # the share of connected nodes a round trains, at least one (Flower's)
    rounds: int = 3                  # rounds of each phase: of each layer when layerwise, in all when simultaneous
    partition: str = "iid"           # iid, or dirichlet:ALPHA (label skew; partition.py)
    schedule: str = "layerwise"
    strategy: str = "fedavg"
    server_lr: float = 0.0           # the server's step: fedavgm's along the clients' mean change, fedadam's
                                     # Adam step (0: the strategy's default, SERVER_STEPS)
    server_momentum: float = 0.0     # fedavgm: the server's momentum over rounds
    dataset: str = _D.dataset
    data_dir: str = ""
    limit_train: int = 0             # the first N training rows only (0: all), before partitioning
    model: str = _D.model
    algo: str = "ff"                 # ff, or ffcl with its three switches below (edgeff train's)
    separate_labels: bool = False
    late_labels: bool = False
    feedback_steps: int = 0
    local_epochs: int = 1            # epochs over its partition a client trains each round
    local_steps: int = 0             # or only this many batches of them (0: the whole epochs)
    batch_size: int = _D.batch_size
    lr: float = _D.lr
    lr_decay: bool = False           # Hinton's schedule (edgeff train's) over each phase's rounds, not per round
    classifier: str = "goodness"
    seed: int = _D.seed
    memory_budget: str = ""          # what a client process may use, like 300MiB ("": no limit)
    out: str = ""                    # the run directory the server keeps the global model in

    def validate(self):
        for name in ("clients", "rounds", "local_epochs", "batch_size"):
            _check_whole(name, getattr(self, name), 1)
        _check_whole("limit_train", self.limit_train, 0)
        _check_whole("local_steps", self.local_steps, 0)
        _check_real("server_lr", self.server_lr, low=0)
        _check_real("server_momentum", self.server_momentum, low=0, high=0.999)
        _check_whole("min_clients", self.min_clients, 0, self.clients)
        _check_real("fraction_train", self.fraction_train, low=0, high=1, above_low=True)
        _check_real("round_timeout", self.round_timeout, low=0, above_low=True)
        _check_whole("seed", self.seed, 0, MAX_SEED)
        for name, allowed in (("schedule", SCHEDULES), ("strategy", STRATEGIES), ("classifier", CLASSIFIERS),
                              ("algo", ALGOS)):
            if getattr(self, name) not in allowed:
                raise UsageError(f"--{name} {getattr(self, name)!r} is not one of: {', '.join(allowed)}")
        parse_partition(self.partition)
        if self.memory_budget:
            parse_bytes(self.memory_budget)
        if not self.out:
            raise UsageError("a federation needs a run directory for its global model: give --out DIR")
        if self.algo == "ffcl" and self.schedule != "simultaneous":
            raise UsageError("--algo ffcl trains all layers at once (its label and feedback paths join them): "
                             "add --schedule simultaneous")
        self.train_config()
        return self

    def train_config(self):
        """The TrainConfig of the global model and of every client's round (seed: the federation's;
        a client's round gets its own, local.round_seed; its rate, round_lr)."""
        return TrainConfig(dataset=self.dataset, model=self.model, schedule=self.schedule, epochs=self.local_epochs,
                           batch_size=self.batch_size, lr=self.lr, lr_decay=False, head_epochs=0,
                           classifier=self.classifier, seed=self.seed, algo=self.algo,
                           separate_labels=self.separate_labels, late_labels=self.late_labels,
                           feedback_steps=self.feedback_steps).validate()

    def round_lr(self, global_round):
        """The clients' learning rate in global round 1, 2, ...: --lr, or with lr_decay Hinton's schedule
        over the rounds of the round's phase (as edgeff train's over epochs)."""
        return self.lr * lr_scale((global_round - 1) % self.rounds, self.rounds, self.lr_decay)

    @property
    def phases(self):
        """The layers trained in each phase: one layer each when layerwise, all of them at once when simultaneous."""
        n_layers = len(self.train_config().sizes) - 1
        return [[k] for k in range(n_layers)] if self.schedule == "layerwise" else [list(range(n_layers))]

    @property
    def needed_clients(self):
        """The clients a round waits for before it starts: --min-clients, or all of them."""
        return self.min_clients or self.clients

    @property
    def least_trained(self):
        """The nodes a round trains at the least: --fraction-train of those it waits for, at least one
        (Flower trains that share of the nodes connected, drawn at random, but never fewer)."""
        return max(1, int(self.needed_clients * self.fraction_train))

    @property
    def total_rounds(self):
        return self.rounds * len(self.phases)

    @property
    def server_step(self):
        """--server-lr, or (0) the strategy's default step."""
        return self.server_lr or SERVER_STEPS[self.strategy]

    def identity(self):
        """The settings that make a federation (to_record's with the server step taken, but RUN_ONLY's):
        a saved one resumes only with them."""
        record = dict(self.to_record(), **{"server-lr": self.server_step})
        return {k: v for k, v in record.items() if k.replace("-", "_") not in RUN_ONLY}

    def to_record(self):
        """{dashed-name: value}: a Flower run config or ConfigRecord (str, int, float values only)."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_record(cls, record):
        """The FederationConfig of a run config or ConfigRecord (names with dashes; missing ones take
        the defaults), checked; a value of the wrong kind is one UsageError line."""
        values = {}
        for f in dataclasses.fields(cls):
            key = f.name.replace("_", "-")
            if key in record:
                value = record[key]
                kind = type(f.default)
                if kind is float and isinstance(value, int) and not isinstance(value, bool):
                    value = float(value)
                if type(value) is not kind:
                    raise UsageError(f"federation setting {key} is {value!r}, not a {kind.__name__}")
                values[f.name] = value
        return cls(**values).validate()


def parse_partition(text):
    """'iid' -> ('iid', None); 'dirichlet:0.3' -> ('dirichlet', 0.3); else one UsageError line."""
    if text == "iid":
        return "iid", None
    kind, _, alpha = str(text).partition(":")
    if kind == "dirichlet":
        try:
            value = float(alpha)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value > 0:
            return "dirichlet", value
        raise UsageError(f"--partition {text}: the Dirichlet concentration must be a number above 0, like "
                         "dirichlet:0.3 (smaller: more label skew)")
    raise UsageError(f"--partition {text!r} is not iid or dirichlet:ALPHA (like dirichlet:0.3)")



def flower_app_toml(settings):
    """pyproject.toml of a Flower App that runs these settings on a real deployment (`flwr run DIR
    SUPERLINK`): edgeff's ServerApp and ClientApp, the settings as its run config (values in TOML)."""
    def value(v):
        return json.dumps(v, allow_nan=False) if isinstance(v, (str, bool)) else repr(v)
    config = "\n".join(f"{key} = {value(v)}" for key, v in settings.to_record().items())
    return f"""# Flower App of an edgeff federation: edgeff[fed] is installed on the server and on every device
[project]
name = "edgeff-federation"
version = "1.0.0"
dependencies = []

[tool.flwr.app]
publisher = "edgeff"

[tool.flwr.app.components]
serverapp = "edgeff.federated.server_app:app"
clientapp = "edgeff.federated.client_app:app"

[tool.flwr.app.config]
{config}
"""
