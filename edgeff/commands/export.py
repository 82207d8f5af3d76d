"""edgeff export: a trained run as an ONNX model, checked and compared with the NumPy forward."""

import json
import sys

from .. import export
from ..data import load_dataset
from ..errors import UsageError
from ..fileio import atomic_write, check_output_file, write_error
from ..memory import fmt_bytes
from ..progress import progress_enabled
from ..runs import load_metrics, load_run

HELP = "export a trained run to ONNX (checked, and compared with the NumPy forward under onnxruntime)"


def add_arguments(p):
    p.add_argument("run_dir", metavar="RUN_DIR", help="directory written by 'edgeff train --out'")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.onnx", help="file to write (atomically)")
    p.add_argument("--opset", type=int, default=export.DEFAULT_OPSET,
                   help=f"ONNX opset, {export.MIN_OPSET} up to the newest onnxruntime runs (default: %(default)s)")
    p.add_argument("--head", choices=export.HEADS,
                   help="goodness: label + per-label scores; linear: label + probabilities; both: all four "
                        "(default: the classifier the run was trained to report; conv nets: goodness only)")
    p.add_argument("--batch", default="dynamic", metavar="dynamic|N",
                   help="batch dimension: dynamic (default) or a fixed number of rows")
    p.add_argument("--quantize", choices=("int8",), help="int8 weights with onnxruntime's quantizer")
    p.add_argument("--calibration", choices=("dynamic", "static"), default="dynamic",
                   help="int8 activations: dynamic (per batch, default) or static (calibrated on 500 training rows)")
    p.add_argument("--parity-samples", type=int, default=1000, metavar="N",
                   help="test rows compared with the NumPy forward (default: %(default)s)")
    p.add_argument("--data-dir", help="where to look for the run's data set (needed for the parity check)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args):
    if args.batch != "dynamic" and not (args.batch.isdigit() and int(args.batch) > 0):
        raise UsageError(f"--batch must be 'dynamic' or a positive number, got {args.batch!r}")
    if args.parity_samples < 1:
        raise UsageError(f"--parity-samples must be at least 1, got {args.parity_samples}")
    if not args.output.lower().endswith(".onnx"):
        raise UsageError(f"-o {args.output}: name the file *.onnx")
    check_output_file(args.output, "-o")
    net, cfg = load_run(args.run_dir)
    metrics = load_metrics(args.run_dir)
    ds = load_dataset(cfg.dataset, args.data_dir)
    head = args.head or cfg.classifier
    show = progress_enabled(args.quiet, args.json)
    step = (lambda msg: print(f"export: {msg}", file=sys.stderr, flush=True)) if show else (lambda msg: None)
    data, int8, report = export.export(net, cfg, metrics, ds, head, args.opset, args.batch,
                                       args.calibration if args.quantize else None, args.parity_samples, step)
    try:
        atomic_write(args.output, lambda f: f.write(int8 or data))
    except OSError as exc:
        raise write_error(args.output, exc, "nothing was written") from None
    report["output"] = args.output
    if args.json:
        print(json.dumps(report, allow_nan=False))
        return 0
    par = report["parity"]
    diffs = ", ".join(f"max |d {k.split('_')[0]}| {v:.1e}" for k, v in par.items() if k.endswith("max_abs_diff"))
    agree = ", ".join(f"{k.removesuffix('_agreement')} agree {v:.2%}" for k, v in par.items() if k.endswith("agreement"))
    print(f"wrote {args.output}: {fmt_bytes(report['bytes'])}, opset {args.opset}, head {report['head']}, "
          f"{report['export_seconds']:.1f} s; parity on {par['samples']} test rows: "
          + "; ".join(part for part in (agree, diffs) if part))
    if args.quantize:
        print(f"int8 ({args.calibration}): {report['size_ratio']:.2f}x the float size; test error "
              f"{report['test_error_float']:.2%} -> {report['test_error_int8']:.2%} "
              f"({report['test_error_change_pp']:+.2f} pp)")
    return 0
