"""The Flower ServerApp: FedAvg (or FedAvgM, FedAdam) over the layers of a dense FF or FFCL net, phase
by phase.

Layerwise, phase k federates layer k for `rounds` rounds with the layers below frozen: a round ships
layer k to the clients and back, and the frozen layers go down once to each node (in the phase's
first round, or the first round a node joins or comes back in). A round starts once min-clients nodes
are connected, trains every connected one (or fraction-train of them, drawn by Flower) and ends when
all have answered or round-timeout passes; a node that dies is answered for by the SuperLink (an
error, once it misses its heartbeats) and left out. Simultaneous, one phase ships every layer every round. After every round the server evaluates the
global net on the held-out test set and saves it atomically as an ordinary run directory
(settings.out: model.npz, config.json, metrics.json; edgeff eval and export take it); metrics.json's
"federation" holds the settings, the rounds done, the bytes sent and a line per round (its test
error, bytes each way, updates counted and refused, seconds from sending to saved). A server
started again on that directory with the same settings continues after the last round saved.
"""

import os
import time
from logging import INFO, WARNING

import numpy as np
from flwr.app import ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM
from flwr.supercore import log

from ..errors import ModelError, UsageError
from ..ffcl_model import FFCLNet
from ..fields import count, field
from ..model import FFNet
from ..runs import METRICS, MODEL, load_metrics, load_run, save_run
from .client_app import FROZEN_SHA256, GLOBAL_ROUND, PHASE
from .local import set_layers, training_set
from .records import ARRAYS, FROZEN, digest, layers_record, record_layers, update_problem
from .settings import FederationConfig

FORMAT = 2    # of the federation record in metrics.json: before 2, FedAdam stepped by the clients' --lr
# settings added since federations were first saved, as those federations ran: every node each round, plain FF
ADDED = {"fraction-train": 1.0, "algo": "ff", "separate-labels": False, "late-labels": False, "feedback-steps": 0}


class GlobalModel:
    """The federation's global net in its run directory, with what the rounds so far did."""

    def __init__(self, settings):
        self.settings, self.cfg = settings, settings.train_config()
        ds = training_set(settings.dataset, settings.data_dir, settings.limit_train)
        self.test = (ds.x_test, ds.y_test, ds.scale)
        self.wanted = settings.identity()
        if os.path.exists(os.path.join(settings.out, MODEL)):
            self.net, self.federation = self._resumed()
        else:
            self.net = _new_net(self.cfg, ds)
            self.net.describe_input(ds)
            self.federation = dict(format=FORMAT, settings=self.wanted, round=0, total_rounds=settings.total_rounds,
                                   bytes_down=0, bytes_up=0, history=[])
            self._save(self._test_error())
        self.traffic = {"down": 0, "up": 0, "updates": 0, "rejected": 0}   # of the round under way
        self.round_started = time.perf_counter()

    def _resumed(self):
        out = self.settings.out
        metrics = load_metrics(out)
        federation = metrics.get("federation")
        if not isinstance(federation, dict) or _made_with(federation) != self.wanted:
            raise UsageError(f"{out} holds a model that is not this federation's (other settings, or not a "
                             "federation); give the same settings to resume it, or another --out")
        _check_saved(os.path.join(out, METRICS), metrics, self.settings)
        net, _ = load_run(out)
        kind = FFCLNet if self.cfg.algo == "ffcl" else FFNet
        if not isinstance(net, kind) or (net.in_features, *net.widths) != tuple(self.cfg.sizes):
            raise ModelError(f"{os.path.join(out, MODEL)}: a {type(net).__name__} of layers "
                             f"{'-'.join(map(str, (net.in_features, *net.widths)))}, not this federation's "
                             f"{self.cfg.model} ({kind.__name__}): restore it, or federate afresh with another --out")
        federation.update(format=FORMAT, settings=self.wanted, total_rounds=self.settings.total_rounds)
        return net, federation

    @property
    def round(self):
        return self.federation["round"]

    def layers(self, ks):
        return {k: self.net.layer_arrays(k) for k in ks}

    def shapes(self, ks):
        return {name: a.shape for name, a in layers_record(self.layers(ks)).items()}

    def after_round(self, server_round, arrays):
        """Flower's evaluate_fn: take the round's aggregate into the global net, measure it on the
        test set, save it; returns the round's metrics (None before the phase's first round)."""
        if server_round == 0:
            return None
        set_layers(self.net, record_layers(arrays), "the global net")
        error = self._test_error()
        f, t = self.federation, self.traffic
        f["round"] += 1
        f["bytes_down"] += t["down"]
        f["bytes_up"] += t["up"]
        f["history"].append(dict(round=f["round"], test_error=error, bytes_down=t["down"], bytes_up=t["up"],
                                 updates=t["updates"], rejected=t["rejected"],
                                 seconds=round(time.perf_counter() - self.round_started, 3)))
        self.traffic = dict.fromkeys(t, 0)
        self._save(error)
        log(INFO, "edgeff: round %d/%d: test error %.2f%%, saved %s", f["round"], f["total_rounds"], 100 * error,
            self.settings.out)
        return MetricRecord({"test-error": error})

    def _test_error(self):
        return self.net.errors(*self.test, [self.cfg.classifier])[self.cfg.classifier]

    def _save(self, error):
        f = self.federation
        metrics = dict(test_error=error, classifier=self.cfg.classifier, dataset=self.cfg.dataset,
                       model=self.cfg.model, out=self.settings.out, rounds=f["round"],
                       bytes_sent=f["bytes_down"] + f["bytes_up"], federation=f)
        save_run(self.settings.out, self.cfg, self.net, metrics)


def _new_net(cfg, ds):
    """The global net of cfg (a dense FF or an FFCL net) at the federation's first weights."""
    rng = np.random.default_rng(cfg.seed)
    if cfg.algo == "ffcl":
        return FFCLNet.create(cfg.sizes, ds.num_classes, rng, None, cfg.separate_labels, cfg.late_labels,
                              cfg.feedback_steps, cfg.goodness == "mean")
    return FFNet.create(cfg.sizes, ds.num_classes, cfg.label_value, cfg.goodness == "mean", rng,
                        image=ds.image_shape is not None)


def _check_saved(path, metrics, settings):
    """Every field of a saved federation's metrics.json (at path) that its resume continues from, or that
    edgeff federate prints when it is finished: typed, in range, consistent with the rounds done."""
    f, where = metrics["federation"], f"{path}: federation"
    try:
        done = field(where, f, "round", int, lambda r: 0 <= r <= settings.total_rounds,
                     f"a whole number 0 to {settings.total_rounds}, the rounds done")
        sent = count(where, f, "bytes_down") + count(where, f, "bytes_up")
        history = field(where, f, "history", list, lambda h: len(h) == done, f"a list of {done} lines, one a round")
        for i, line in enumerate(history, 1):
            at = f"{where}: history line {i}"
            field(at, line, "round", int, lambda r: r == i, str(i))
            field(at, line, "test_error", float, lambda e: 0 <= e <= 1, "an error rate 0 to 1")
            field(at, line, "seconds", float, lambda t: t >= 0, "0 or more seconds")
            for key in ("bytes_down", "bytes_up", "updates", "rejected"):
                count(at, line, key)
        field(path, metrics, "rounds", int, lambda r: r == done, f"{done}, the federation's round")
        field(path, metrics, "bytes_sent", int, lambda b: b == sent, f"{sent}, the federation's bytes down and up")
        field(path, metrics, "test_error", float, lambda e: 0 <= e <= 1, "an error rate 0 to 1")
        field(path, metrics, "classifier", str, lambda c: c == settings.classifier, repr(settings.classifier))
    except ModelError as exc:
        raise ModelError(f"{exc}: restore it, or federate afresh with another --out") from None


def _made_with(federation):
    """The identity() of the settings a saved federation record was made with, read as today's."""
    saved = federation.get("settings")
    if not isinstance(saved, dict):
        return saved
    if federation.get("format", 1) == 1 and saved.get("strategy") == "fedadam":
        saved = dict(saved, **{"server-lr": saved.get("lr")})
    return {**ADDED, **saved}


class CheckedUpdates:
    """A strategy's rounds as edgeff federates them: the frozen layers shipped to every node that does
    not hold them yet in this phase (all of them in the phase's first round; later, a node that joined
    or came back), the bytes of arrays counted each way, and every update that records.update_problem
    refuses left out of the aggregate, with a log line. Mixed in before a Flower strategy."""

    def __init__(self, model, frozen, shapes, **kwargs):
        super().__init__(**kwargs)
        self.model, self.frozen, self.shapes = model, frozen, shapes
        self.holders = set()          # the nodes that answered this phase's last round they were sent

    def configure_train(self, server_round, arrays, config, grid):
        config[GLOBAL_ROUND] = self.model.round + 1
        self.model.round_started = time.perf_counter()
        messages = list(super().configure_train(server_round, arrays, config, grid))
        for message in messages:
            self.model.traffic["down"] += message.content[ARRAYS].count_bytes()
            if message.metadata.dst_node_id not in self.holders:
                message.content[FROZEN] = self.frozen
                self.model.traffic["down"] += self.frozen.count_bytes()
        return messages

    def configure_evaluate(self, server_round, arrays, config, grid):
        return []                              # the server evaluates the global net itself (GlobalModel)

    def aggregate_train(self, server_round, replies):
        counted, traffic = [], self.model.traffic
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                self.holders.discard(node)     # it failed, was restarted or is gone: it gets them again
                counted.append(reply)          # Flower logs it and leaves it out
                continue
            self.holders.add(node)
            arrays = reply.content.get(ARRAYS)
            traffic["up"] += arrays.count_bytes() if hasattr(arrays, "count_bytes") else 0
            problem = update_problem(reply.content, self.shapes)
            if problem:
                traffic["rejected"] += 1
                log(WARNING, "edgeff: round %d: the update of node %d is left out of the aggregate: %s",
                    self.model.round + 1, node, problem)
            else:
                traffic["updates"] += 1
                counted.append(reply)
        arrays, metrics = super().aggregate_train(server_round, counted)
        if arrays is not None:    # the net is float32; FedAdam's step comes out float64 (its bias correction)
            arrays = layers_record({k: {letter: a.astype(np.float32) for letter, a in layer.items()}
                                    for k, layer in record_layers(arrays).items()})
        return arrays, metrics


class CheckedFedAvg(CheckedUpdates, FedAvg):
    """FedAvg (McMahan et al. 2017) with edgeff's checks."""


class CheckedFedAvgM(CheckedUpdates, FedAvgM):
    """FedAvgM (Hsu et al. 2019: the server steps along its momentum over the clients' mean change)
    with edgeff's checks."""


class CheckedFedAdam(CheckedUpdates, FedAdam):
    """FedAdam (Reddi et al. 2021: Adam on the server over the clients' mean change) with edgeff's checks."""


STRATEGIES = {"fedavg": CheckedFedAvg, "fedavgm": CheckedFedAvgM, "fedadam": CheckedFedAdam}


def _server_step(s):
    """The strategy's own settings: FedAvgM's step and momentum; FedAdam's step."""
    return {"fedavg": {}, "fedavgm": dict(server_learning_rate=s.server_step, server_momentum=s.server_momentum),
            "fedadam": dict(eta=s.server_step)}[s.strategy]


def federate(grid, model):
    """Run every round not yet done: each phase's remaining rounds with a strategy of its own."""
    s = model.settings
    for phase, trained in enumerate(s.phases):
        left = min(s.rounds, (phase + 1) * s.rounds - model.round)
        if left <= 0:
            continue
        frozen = layers_record(model.layers(range(trained[0])))
        strategy = STRATEGIES[s.strategy](model, frozen, model.shapes(trained), fraction_train=s.fraction_train,
                                          min_train_nodes=s.least_trained, min_available_nodes=s.needed_clients,
                                          **_server_step(s))
        config = ConfigRecord({**s.to_record(), PHASE: phase, FROZEN_SHA256: digest(frozen)})
        strategy.start(grid, layers_record(model.layers(trained)), num_rounds=left, timeout=s.round_timeout,
                       train_config=config, evaluate_fn=model.after_round)


def server_app(model=None):
    """The ServerApp of a GlobalModel, or (model None, as `flwr run` starts it) of the run config's settings."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        federate(grid, model or GlobalModel(FederationConfig.from_record(context.run_config)))

    return app


app = server_app()
