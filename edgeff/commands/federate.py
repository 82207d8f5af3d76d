"""edgeff federate: federated FF on one machine, N clients in Flower's simulation (edgeff/federated/)."""

import dataclasses
import json
import os
import sys

from ..fileio import atomic_write_text, make_output_dir, remove_made_dirs, write_error
from ..runs import load_metrics

HELP = "train a dense FF (or FFCL) net federated over N simulated clients with Flower, layer by layer"


def add_arguments(p):
    from ..federated.settings import ALGOS, CLASSIFIERS, SCHEDULES, STRATEGIES, FederationConfig as F
    p.add_argument("--clients", type=int, required=True, metavar="N",
                   help="clients, each training on its own partition of the training set")
    p.add_argument("--min-clients", type=int, default=0, metavar="N",
                   help="a round starts once N clients are connected and trains every connected one, so with N "
                        "below --clients the federation goes on when a client dies (default: all --clients)")
    p.add_argument("--fraction-train", type=float, default=F.fraction_train, metavar="F",
                   help="the share of connected clients each round trains, drawn at random by Flower (at least "
                        "one): 0.2 of 5 trains one a round, so give 5x the --rounds for the same examples; "
                        "fewer clients a round take more optimiser steps per example (default: %(default)g)")
    p.add_argument("--round-timeout", type=float, default=F.round_timeout, metavar="SECONDS",
                   help="how long a round waits for replies; those later are left out (default: %(default)g)")
    p.add_argument("--rounds", type=int, default=F.rounds, metavar="R",
                   help="rounds per layer (layerwise) or in all (simultaneous) (default: %(default)s)")
    p.add_argument("--partition", default=F.partition, metavar="iid|dirichlet:ALPHA",
                   help="how the training rows are shared: iid, or label skew with Dirichlet concentration ALPHA "
                        "(0.3: most clients hold a few classes) (default: %(default)s)")
    p.add_argument("--schedule", default=F.schedule, choices=SCHEDULES,
                   help="layerwise: layer 1 federated for its rounds, frozen, then layer 2, ...; a round ships one "
                        "layer; simultaneous: every layer every round (default: %(default)s)")
    p.add_argument("--strategy", default=F.strategy, choices=STRATEGIES,
                   help="Flower's aggregation: fedavg, fedavgm (the server steps along a momentum over the "
                        "clients' mean change) or fedadam (Adam on the server) (default: %(default)s)")
    p.add_argument("--server-lr", type=float, default=F.server_lr, metavar="ETA",
                   help="the server's step: fedavgm's, times the clients' mean change (default 1), or fedadam's "
                        "Adam step (default 0.1)")
    p.add_argument("--server-momentum", type=float, default=F.server_momentum, metavar="BETA",
                   help="fedavgm: the server's momentum (default: %(default)s)")
    p.add_argument("--dataset", default=F.dataset, help="name or .npz file, as edgeff train (default: %(default)s)")
    p.add_argument("--data-dir", default="", help="where to look for the data set first")
    p.add_argument("--limit-train", type=int, default=0, metavar="N",
                   help="share only the first N training examples among the clients")
    p.add_argument("--model", default=F.model, help="dense FF layer widths, input first (default: %(default)s)")
    p.add_argument("--algo", default=F.algo, choices=ALGOS,
                   help="ff: Hinton's FF; ffcl: FFCL (with --schedule simultaneous) (default: %(default)s)")
    p.add_argument("--separate-labels", action="store_true", help="ffcl: a label vector per class at every layer")
    p.add_argument("--late-labels", action="store_true", help="ffcl: labels meet the features only in the goodness "
                   "(needs --separate-labels)")
    p.add_argument("--feedback-steps", type=int, default=0, metavar="K",
                   help="ffcl: K settling steps with each layer's activity fed back to the one below (default: 0)")
    p.add_argument("--local-epochs", type=int, default=F.local_epochs, metavar="E",
                   help="epochs over its partition a client trains each round (default: %(default)s)")
    p.add_argument("--local-steps", type=int, default=0, metavar="N",
                   help="train only N batches of those epochs each round: more, shorter rounds (default: whole epochs)")
    p.add_argument("--batch-size", type=int, default=F.batch_size, help="(default: %(default)s)")
    p.add_argument("--lr", type=float, default=F.lr, help="the clients' learning rate (default: %(default)s)")
    p.add_argument("--lr-decay", action="store_true", help="lower the rate over each layer's rounds as edgeff train "
                   "does over epochs (full for the first half, then linearly down); default: constant")
    p.add_argument("--classifier", default=F.classifier, choices=CLASSIFIERS,
                   help="how the global net classifies and the test error is measured (default: %(default)s)")
    p.add_argument("--memory-budget", default="", metavar="SIZE",
                   help="memory each client process may use, like 300MiB; checked before every local round")
    p.add_argument("--seed", type=int, default=F.seed, help="the global net's initial weights, the partition, "
                   "every client's data order (default: %(default)s)")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory of the global model, saved every "
                   "round; when it holds this federation's model, training continues after its last round")
    p.add_argument("--flower-app", metavar="DIR", help="write a Flower App directory that runs these settings on a "
                   "real deployment (flwr run DIR SUPERLINK; --out made absolute) and stop")
    p.add_argument("--quiet", action="store_true", help="only warnings (refused updates) and errors from Flower")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def run(args):
    from ..federated import require_flower
    from ..federated.settings import FederationConfig
    settings = FederationConfig(**{name: getattr(args, name) for name in FederationConfig.__dataclass_fields__})
    settings.validate()
    if args.flower_app:
        return _write_flower_app(dataclasses.replace(settings, out=os.path.abspath(settings.out)), args.flower_app)
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")    # Flower reports usage to its makers unless told not to
    require_flower(simulation=True)
    from ..federated.server_app import GlobalModel
    from ..federated.simulation import simulate
    from ..federated.local import check_clients
    check_clients(settings)                # every check of the settings, the data and the run dir first
    made = make_output_dir(settings.out, "--out")
    try:
        model = GlobalModel(settings)
    except BaseException:
        remove_made_dirs(made)
        raise
    if model.round:
        print(f"edgeff: {settings.out} holds round {model.round} of {settings.total_rounds}; continuing",
              file=sys.stderr)
    if model.round < settings.total_rounds:
        simulate(model, args.quiet or args.json)
    metrics = load_metrics(settings.out)
    f = metrics["federation"]
    summary = dict(test_error=metrics["test_error"], rounds=metrics["rounds"], bytes_sent=metrics["bytes_sent"],
                   bytes_down=f["bytes_down"], bytes_up=f["bytes_up"], classifier=metrics["classifier"],
                   clients=settings.clients, partition=settings.partition, schedule=settings.schedule,
                   strategy=settings.strategy, history=f["history"], out=settings.out)
    if args.json:
        print(json.dumps(summary, allow_nan=False))
    else:
        print(f"test error {summary['test_error']:.2%} after {summary['rounds']} rounds; "
              f"{summary['bytes_sent']:,} bytes of arrays sent; saved {settings.out}")
    return 0


def _write_flower_app(settings, directory):
    from ..federated.settings import flower_app_toml
    make_output_dir(directory, "--flower-app")
    path = os.path.join(directory, "pyproject.toml")
    try:
        atomic_write_text(path, flower_app_toml(settings))
    except OSError as exc:
        raise write_error(path, exc) from None
    print(f"wrote {path}; run it with: flwr run {directory} SUPERLINK --stream")
    return 0
