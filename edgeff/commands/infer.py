"""edgeff infer: label inputs with a run directory (NumPy/Numba) or an .onnx file (onnxruntime)."""

import json
import time

from ..inputs import read_input, to_rows
from ..predictor import load_predictor

HELP = "label the rows or images in a file with a trained run or an exported .onnx model"


def add_arguments(p):
    p.add_argument("model", metavar="MODEL", help="run directory, its model.npz, or an .onnx file")
    p.add_argument("input", metavar="INPUT", help=".npy, .npz (x or x_test), .pgm or .png (with Pillow)")
    p.add_argument("--classifier", choices=("linear", "goodness", "first", "last"),
                   help="default: the run's classifier, or the ONNX model's head")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args):
    model = load_predictor(args.model, args.classifier)
    rows = to_rows(read_input(args.input), model.features, model.scale, args.input)
    t0 = time.perf_counter()
    labels = model.predict(rows).tolist()
    seconds = time.perf_counter() - t0
    names = model.label_names or []
    names = [names[c] if c < len(names) else str(c) for c in labels]   # an ONNX model may not say its classes
    if args.json:
        print(json.dumps({"labels": labels, "names": names, "engine": model.engine,
                          "classifier": model.classifier, "rows": len(labels), "seconds": round(seconds, 6)}, allow_nan=False))
    else:
        for i, c in enumerate(labels):
            print(f"{i}\t{c}\t{names[i]}")
    return 0
