"""A run directory: config.json, model.npz, metrics.json, written atomically."""

import json
import os

from .config import TrainConfig
from .errors import ModelError, UsageError
from .fileio import atomic_write_files, read_json, write_error
from .convnet import ConvNet
from .model import FFNet, read_model_file
from .ffcl_model import NET as FFCL_NET, FFCLNet
from .unsup_model import NET as UNSUP_NET, UnsupNet

CONFIG, MODEL, METRICS = "config.json", "model.npz", "metrics.json"


def save_run(out_dir, cfg, net, metrics):
    """model.npz, config.json and metrics.json written as one: a failure (a full disk) leaves
    none of the new files, and one line saying why."""
    def text(s):
        return lambda f: f.write(s.encode("utf-8"))
    metrics_text = json.dumps(metrics, indent=2, sort_keys=True, allow_nan=False) + "\n"   # strict JSON
    os.makedirs(out_dir, exist_ok=True)
    try:
        atomic_write_files({os.path.join(out_dir, MODEL): net.npz_writer(cfg.to_json()),
                            os.path.join(out_dir, CONFIG): text(cfg.to_json() + "\n"),
                            os.path.join(out_dir, METRICS): text(metrics_text)})
    except OSError as exc:
        raise write_error(out_dir, exc, "the run was not saved") from None


def load_metrics(run_dir):
    """metrics.json of a run directory (or of the one holding a model.npz) as a dict; {} if it has
    none. Read as untrusted (fileio.read_json): damage of any kind is a ModelError, one line."""
    path = os.path.join(run_dir if os.path.isdir(run_dir) else os.path.dirname(run_dir), METRICS)
    damaged = f"{path}: %s; it is damaged or not written by edgeff: restore it or train the run again"
    try:
        metrics = read_json(path)
    except FileNotFoundError:
        return {}
    except OSError as exc:                           # a directory, no permission
        raise ModelError(damaged % f"cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:                        # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ModelError(damaged % f"not strict JSON ({exc})") from None
    if not isinstance(metrics, dict):
        raise ModelError(damaged % f"a JSON {type(metrics).__name__}, not an object")
    return metrics


def load_run(run_dir):
    """(net, TrainConfig) from a run directory (or a model.npz path)."""
    path = os.path.join(run_dir, MODEL) if os.path.isdir(run_dir) else run_dir
    if not os.path.exists(path):
        raise ModelError(f"{run_dir}: no {MODEL} here; train one with 'edgeff train --out {run_dir}'")
    arrays, meta = read_model_file(path)
    kind = {"conv": ConvNet, UNSUP_NET: UnsupNet, FFCL_NET: FFCLNet}.get(meta.get("net"), FFNet)
    net, stored = kind.from_arrays(path, arrays, meta)
    try:
        cfg = TrainConfig.from_dict(stored)
    except UsageError as exc:
        raise ModelError(f"{path}: its stored config is not valid ({exc}); it is damaged or not written by edgeff") from None
    if cfg.is_conv != isinstance(net, ConvNet):
        raise ModelError(f"{path}: its config says --model {cfg.model} but it holds a "
                         f"{'conv' if isinstance(net, ConvNet) else 'dense'} net; it is damaged or not written by edgeff")
    net.check_config(cfg, path)
    return net, cfg


def check_classifier(run_dir, net, classifier):
    """UsageError unless net classifies with `classifier` ("all": with anything); an encoder alone
    (FFEncoder's run) classifies with nothing."""
    if not net.classifiers():
        raise UsageError(f"{run_dir}: holds an encoder without a probe (FFEncoder's): it classifies nothing; read "
                         "its features with FFEncoder.load(RUN_DIR).transform, or export them with edgeff export")
    if classifier != "all" and classifier not in net.classifiers():
        raise UsageError(f"{run_dir}: has no {classifier} classifier; use --classifier "
                         f"{' or '.join(net.classifiers())}")
