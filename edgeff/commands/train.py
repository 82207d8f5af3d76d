"""edgeff train: train a dense FF net, print its test error, save the run."""

import dataclasses
import glob
import json
import os
import sys
import time

from ..config import ALGOS, CLASSIFIERS, GOODNESS, NEGATIVES, OPTIMIZERS, SCHEDULES, TrainConfig
from ..conv_models import HYBRID, NETS, is_conv_model
from ..convnet import ConvNet, image_chw
from ..data import load_dataset
from .. import checkpoint
from ..budget import backprop_bytes, data_bytes, fit_budget, planner
from ..errors import UsageError
from ..fileio import make_output_dir, remove_made_dirs
from ..memory import fmt_bytes, parse_bytes
from ..model import FFNet
from ..plan_report import plan_report, print_plan
from ..progress import Progress, progress_enabled
from ..runs import MODEL, load_run, peak_rss_mib, rss_mib, save_run
from ..sff_train import ConvTrainer, warm_up_conv
from ..train import Trainer, warm_up
from .. import unsup_train

HELP = "train a Forward-Forward net on a data set, print its test error and save it"

_D = TrainConfig()
SAMPLES_SEEN = 600_000     # the default length of training, in examples shown
MAX_EPOCHS = 1000
CONV_BATCH_SIZE = 64       # conv nets: more, smaller steps measured better at the same examples seen


def add_arguments(p):
    p.add_argument("--dataset", default=_D.dataset, help="name (fashion-mnist, mnist, kmnist) or a .npz file "
                   "with x_train, y_train, x_test, y_test (default: %(default)s)")
    p.add_argument("--data-dir", help="where to look for the data set first")
    p.add_argument("--limit-train", type=int, metavar="N", help="train on the first N training examples only")
    p.add_argument("--model", help="dense FF: layer widths, input first; conv FF: a named net "
                   f"({', '.join(NETS)}) or a spec like cnn:32p/64p-128 (default: {_D.model}, or --init's)")
    p.add_argument("--width-mult", type=float, metavar="F",
                   help=f"conv nets: multiply every layer's channels by F (default: {_D.width_mult:g}, or --init's)")
    p.add_argument("--hybrid", choices=HYBRID,
                   help="conv nets: none = every conv layer its own block (pure FF); block = the net's blocks, "
                        f"backprop inside each; net = plain backprop end to end (default: {_D.hybrid}, or --init's)")
    p.add_argument("--init", metavar="RUN_DIR", help="conv nets: start from this run's blocks (their layers, not "
                   "their class heads) and adapt them to --dataset; --model, --width-mult and --hybrid default to its")
    p.add_argument("--freeze", type=int, default=_D.freeze, metavar="N",
                   help="with --init: keep the first N blocks' layers as they are (their class heads still learn)")
    p.add_argument("--schedule", default=_D.schedule, choices=SCHEDULES,
                   help="simultaneous: every layer on every batch; layerwise: layer k to the end, then k+1")
    p.add_argument("--epochs", type=int, help="epochs (per layer when layerwise); default: enough to see "
                   f"{SAMPLES_SEEN:,} examples ({_D.epochs} of a 60,000-row set), from {_D.epochs} to {MAX_EPOCHS}")
    p.add_argument("--batch-size", help="examples per batch, or 'auto': the largest that fits --memory-budget "
                   f"(default: {_D.batch_size}, conv nets {CONV_BATCH_SIZE})")
    p.add_argument("--memory-budget", metavar="SIZE",
                   help="memory training may use (arena + data), like 48MiB or 1GB; checked before training starts")
    p.add_argument("--dry-run", action="store_true", help="print the memory plan and stop")
    p.add_argument("--optimizer", default=_D.optimizer, choices=OPTIMIZERS)
    p.add_argument("--lr", type=float, default=_D.lr, help="FF layers' learning rate (default: %(default)s)")
    p.add_argument("--constant-lr", dest="lr_decay", action="store_false",
                   help="keep the learning rate constant (default: full for half the epochs, then falling linearly)")
    p.add_argument("--weight-decay", type=float, default=_D.weight_decay)
    p.add_argument("--threshold", type=float, default=_D.threshold, help="goodness threshold theta")
    p.add_argument("--goodness", default=_D.goodness, choices=GOODNESS, help="sum or mean of squared activities")
    p.add_argument("--negatives", default=_D.negatives, choices=NEGATIVES,
                   help="wrong label for negative data: hard (most positive to the first layer) or random")
    p.add_argument("--label-value", type=float, default=_D.label_value, help="brightness of the overlaid label")
    p.add_argument("--head-epochs", type=int, help=f"epochs of the linear head (0: none; default: {_D.head_epochs}, "
                   "conv nets 0)")
    p.add_argument("--head-lr", type=float, default=_D.head_lr)
    p.add_argument("--classifier", choices=CLASSIFIERS,
                   help="how test error is measured: dense nets: linear head (one pass) or goodness over all labels; "
                        "conv nets: goodness (every block's class goodness, averaged) or last (the last block's); "
                        f"(default: {_D.classifier}, conv nets last)")
    p.add_argument("--shift", type=int, default=_D.shift, metavar="N",
                   help="train the FF layers on images moved by a random whole-pixel shift of up to N rows "
                        "and columns, drawn per example and batch (2-D images only; default: %(default)s)")
    p.add_argument("--algo", default=_D.algo, choices=ALGOS,
                   help="ff: supervised FF (labels overlaid); ff-unsup: unsupervised FF on real vs hybrid images, "
                        "then a linear probe on the last three layers (default: %(default)s)")
    p.add_argument("--probe-labels", type=float, default=_D.probe_labels, metavar="FRACTION",
                   help="ff-unsup: share of the training labels the probe may use, in (0, 1] (default: %(default)s)")
    p.add_argument("--seed", type=int, default=_D.seed)
    p.add_argument("--out", help="run directory to write (default: runs/DATASET-TIME)")
    p.add_argument("--force", action="store_true", help="overwrite a run directory that already holds a model")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                   help="write OUT/checkpoint.npz every N steps (batches), atomically")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its checkpoint, with its config "
                   "(training options given here are ignored); the result is bit for bit the uninterrupted run's")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def default_epochs(n_train):
    """Epochs that show the net SAMPLES_SEEN examples, from the default to MAX_EPOCHS: a small
    data set gets as many updates as a large one, not a 60,000-row set's 10 epochs' worth."""
    return max(_D.epochs, min(MAX_EPOCHS, -(-SAMPLES_SEEN // max(1, n_train))))


def config_from_args(args, batch_size, init_cfg=None):
    """The TrainConfig of these options; net options left out come from init_cfg (--init's run), else
    the defaults. An --epochs left out is the default's, to be set by the data set's size."""
    values = {k: getattr(args, k) for k in TrainConfig.__dataclass_fields__ if hasattr(args, k)}
    values["batch_size"] = batch_size
    values["init"] = values.get("init") or ""
    for name in ("model", "width_mult", "hybrid"):
        given, inherited = values[name], getattr(init_cfg, name, None)
        if init_cfg is not None and given is not None and given != inherited:
            raise UsageError(f"--{name.replace('_', '-')} {given} differs from --init's {inherited}: the blocks must "
                             "be the same; leave it out")
        values[name] = given if given is not None else inherited if inherited is not None else getattr(_D, name)
    if values["epochs"] is None:
        values["epochs"] = _D.epochs
    conv = TrainConfig(model=values["model"]).is_conv
    for name, dense, conv_default in (("classifier", _D.classifier, "last"), ("head_epochs", _D.head_epochs, 0)):
        if values[name] is None:
            values[name] = conv_default if conv else dense
    return TrainConfig(**values).validate()


@dataclasses.dataclass
class Prepared:
    cfg: TrainConfig
    ds: object
    plan: object
    load_seconds: float
    plan_args: tuple
    in_width: int | None      # dense: the first layer's input width with label inputs
    init_net: object = None   # --init's ConvNet (not on resume: the checkpoint holds every weight)


def prepare(args, resume_meta=None):
    """Config, data and memory plan, every check done before any training."""
    if resume_meta is not None:  # the checkpoint's own config: same data, same model, same schedule
        for k, v in resume_meta["config"].items():
            setattr(args, k, v)
        args.batch_size = str(resume_meta["config"]["batch_size"])
        args.limit_train = resume_meta.get("limit_train")
    init_net = init_cfg = None
    if args.init and resume_meta is None:
        init_net, init_cfg = load_run(args.init)
        if not isinstance(init_net, ConvNet):
            raise UsageError(f"--init {args.init}: holds a dense net; --init starts conv nets from a conv run")
    if args.batch_size is None:
        conv = is_conv_model(args.model or getattr(init_cfg, "model", _D.model))
        args.batch_size = str(CONV_BATCH_SIZE if conv else _D.batch_size)
    auto = args.batch_size == "auto"
    try:
        batch_size = 1 if auto else int(args.batch_size)
    except ValueError:
        raise UsageError(f"--batch-size must be a whole number or 'auto', got {args.batch_size!r}") from None
    cfg = config_from_args(args, batch_size, init_cfg)
    budget = parse_bytes(args.memory_budget) if args.memory_budget else None
    if auto and budget is None:
        raise UsageError("--batch-size auto needs --memory-budget")
    t0 = time.perf_counter()
    ds = load_dataset(cfg.dataset, args.data_dir)
    load_seconds = time.perf_counter() - t0
    if args.limit_train is not None:
        if args.limit_train < 1:
            raise UsageError(f"--limit-train must be at least 1, got {args.limit_train}")
        ds = dataclasses.replace(ds, x_train=ds.x_train[:args.limit_train].copy(),
                                 y_train=ds.y_train[:args.limit_train].copy())  # copies: the rest is freed
    if args.epochs is None:
        cfg = dataclasses.replace(cfg, epochs=default_epochs(len(ds.y_train)))
    if init_net is not None and init_net.in_shape != image_chw(ds.image_shape):
        raise UsageError(f"--init {args.init}: its net takes {'x'.join(map(str, init_net.in_shape))} (CxHxW) images, "
                         f"{ds.name} holds {ds.image_shape}")
    in_width = None
    if cfg.is_conv:
        if image_chw(ds.image_shape) is None:
            raise UsageError(f"--model {cfg.model} takes images (H, W) or (H, W, C); {ds.name} holds "
                             f"{'flat rows' if ds.image_shape is None else ds.image_shape}; use a dense --model")
        try:
            planner(cfg, ds)(1)
        except ValueError as exc:          # a layer does not fit the image size
            raise UsageError(f"--model {cfg.model} does not fit {ds.name}'s {ds.image_shape} images: {exc}") from None
    else:
        if cfg.sizes[0] != ds.x_train.shape[1]:
            raise UsageError(f"--model {cfg.model} takes {cfg.sizes[0]} inputs but {ds.name} has "
                             f"{ds.x_train.shape[1]} features per example; start the spec with {ds.x_train.shape[1]}")
        _, in_width = FFNet.label_layout(cfg.sizes[0], ds.num_classes, ds.image_shape is not None)
    if cfg.shift and image_chw(ds.image_shape) is None:
        raise UsageError(f"--shift moves images; {ds.name} holds {'flat rows' if ds.image_shape is None else ds.image_shape}")
    if cfg.shift and not cfg.is_conv and len(ds.image_shape) != 2:
        raise UsageError(f"--shift moves 2-D images in a dense net; {ds.name} holds {ds.image_shape}")
    if cfg.algo == "ff-unsup":
        unsup_train.check_data(cfg, ds)
    plan_of = unsup_train.planner(cfg, ds) if cfg.algo == "ff-unsup" else planner(cfg, ds, in_width)
    plan, batch_size = fit_budget(plan_of, cfg.batch_size, ds, budget, auto)
    cfg = dataclasses.replace(cfg, batch_size=batch_size)
    return Prepared(cfg, ds, plan, load_seconds,
                    (plan, batch_size, data_bytes(ds), budget, backprop_bytes(cfg, ds, in_width, batch_size)), in_width,
                    init_net)


def run(args):
    resume = None
    if args.resume:
        resume = checkpoint.load(os.path.join(args.resume, checkpoint.NAME))
        if args.out and os.path.abspath(args.out) != os.path.abspath(args.resume):
            raise UsageError("--resume continues in its own directory; leave out --out or give the same one")
        args.out, args.force = args.resume, True
        for stale in glob.glob(os.path.join(args.resume, f".{checkpoint.NAME}.*.tmp")):
            os.unlink(stale)  # a checkpoint write the crash cut short; the last complete one is intact
    if args.checkpoint_every < 0:
        raise UsageError(f"--checkpoint-every must be 0 (off) or more, got {args.checkpoint_every}")
    out = args.out or os.path.join("runs", f"{os.path.basename(args.dataset).removesuffix('.npz')}-{time.strftime('%Y%m%d-%H%M%S')}")
    if os.path.exists(os.path.join(out, MODEL)) and not args.force and not args.dry_run:
        raise UsageError(f"{out} already holds a model; choose another --out or pass --force")
    prepared = prepare(args, resume[1] if resume else None)
    if args.dry_run:
        report = plan_report(*prepared.plan_args)
        print(json.dumps(report, allow_nan=False)) if args.json else print_plan(report)
        return 0
    made = make_output_dir(out, "--out")   # before training: a place it cannot write fails now, not at the end
    try:
        return _train(args, out, prepared, resume)
    except BaseException:
        remove_made_dirs(made)   # no empty run directory left behind (one holding a checkpoint stays)
        raise


def _train(args, out, prepared, resume):
    cfg, ds, load_seconds = prepared.cfg, prepared.ds, prepared.load_seconds
    show = progress_enabled(args.quiet, args.json)
    log = (lambda msg: None) if (args.quiet or args.json) else (lambda msg: print(msg, file=sys.stderr))
    compile_seconds = warm_up_conv() if cfg.is_conv else warm_up()
    unsup = cfg.algo == "ff-unsup"
    compile_seconds += unsup_train.warm_up_unsup() if unsup else 0.0
    rss_before = rss_mib()
    progress = lambda total, desc: Progress(total, desc, enabled=show) if show else None
    trainer = (ConvTrainer(cfg, ds, progress, prepared.plan, init=prepared.init_net) if cfg.is_conv else
               unsup_train.UnsupTrainer(cfg, ds, progress, prepared.plan) if unsup else
               Trainer(cfg, ds, progress, plan=prepared.plan))
    if resume:   # every check before the first line of output: a refused checkpoint is one line
        checkpoint.check_resume(os.path.join(out, checkpoint.NAME), *resume, trainer)
    log(f"data: {ds.name}, {len(ds.y_train)} train / {len(ds.y_test)} test, {ds.x_train.shape[1]} features, "
        f"{ds.num_classes} classes ({load_seconds:.1f} s)")
    log(f"kernels ready in {compile_seconds:.1f} s")
    log(f"memory: arena {fmt_bytes(trainer.plan.arena_bytes)} (buffers without sharing: "
        f"{fmt_bytes(trainer.plan.naive_bytes)}), batch size {cfg.batch_size}")
    t0 = time.perf_counter()
    every = args.checkpoint_every or (resume[1]["every"] if resume else 0)
    history = trainer.fit(os.path.join(out, checkpoint.NAME), every, resume,
                          run_meta=dict(every=every, limit_train=args.limit_train))
    train_seconds = time.perf_counter() - t0
    net = trainer.net
    net.describe_input(ds)
    errors = net.errors(ds.x_test, ds.y_test, ds.scale)
    metrics = {
        "test_error": errors[cfg.classifier],
        **{f"test_error_{c}": e for c, e in errors.items()},
        "classifier": cfg.classifier,
        "train_seconds": round(train_seconds, 3),
        "train_samples": int(len(ds.y_train)),
        "compile_seconds": round(compile_seconds, 3),
        "load_seconds": round(load_seconds, 3),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "rss_before_training_mib": round(rss_before, 1),
        "arena_bytes": trainer.plan.arena_bytes,
        "batch_size": cfg.batch_size,
        "epoch_losses": history,
        "dataset": ds.name,
        "model": cfg.model,
        "out": out,
    }
    if unsup:
        metrics.update(algo=cfg.algo, probe_labels=cfg.probe_labels, probe_label_rows=trainer.labelled)
    save_run(out, cfg, net, metrics)
    if args.json:
        print(json.dumps(metrics, allow_nan=False))
    else:
        others = ", ".join(f"{c} {e:.2%}" for c, e in errors.items())
        print(f"test error {errors[cfg.classifier]:.2%} ({others}); trained in {train_seconds:.1f} s; saved {out}")
    return 0
