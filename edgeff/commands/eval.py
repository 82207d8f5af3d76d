"""edgeff eval: reload a saved run and measure its test error again."""

import json

from ..data import load_dataset
from ..errors import UsageError
from ..runs import check_classifier, load_run

HELP = "reload a trained run directory and print its test error"


def add_arguments(p):
    p.add_argument("run_dir", metavar="RUN_DIR", help="directory written by 'edgeff train --out'")
    p.add_argument("--dataset", help="evaluate on this data set instead of the one trained on")
    p.add_argument("--data-dir", help="where to look for the data set first")
    p.add_argument("--classifier", choices=("linear", "goodness", "first", "last", "all"), default=None,
                   help="default: the one the run was trained to report")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args):
    net, cfg = load_run(args.run_dir)
    check_classifier(args.run_dir, net, args.classifier or cfg.classifier)
    ds = load_dataset(args.dataset or cfg.dataset, args.data_dir)
    if ds.x_test.shape[1] != net.in_features:
        raise UsageError(f"{ds.name} has {ds.x_test.shape[1]} features per example but the model takes {net.in_features}")
    if ds.num_classes > net.num_classes:
        raise UsageError(f"{ds.name} has {ds.num_classes} classes but the model knows {net.num_classes}")
    wanted = net.classifiers() if args.classifier == "all" else [args.classifier or cfg.classifier]
    errors = net.errors(ds.x_test, ds.y_test, ds.scale, wanted)
    if args.json:
        print(json.dumps({"test_error": errors[wanted[0]], **{f"test_error_{c}": e for c, e in errors.items()},
                          "dataset": ds.name, "test_samples": int(len(ds.y_test))}, allow_nan=False))
    else:
        print("; ".join(f"test error {e:.2%} ({c})" for c, e in errors.items()) + f" on {len(ds.y_test)} {ds.name} examples")
    return 0
