"""edgeff train: train a dense FF net, print its test error, save the run."""

import dataclasses
import glob
import json
import os
import sys
import time

from ..callbacks import ProgressBar, progress_of
from ..config import (ALGOS, CLASSIFIERS, CONV_BATCH_SIZE, FIELDS, GOODNESS, LEARNERS, MAX_EPOCHS, MAX_FEEDBACK_STEPS,
                      NEGATIVES, OPTIMIZERS, SAMPLES_SEEN, SCHEDULES, UNSUPERVISED, TrainConfig,
                      config_from_options, default_batch_size, default_epochs)
from ..conv_models import HYBRID, NETS
from ..data import load_dataset
from ..data_mmap import load_mapped
from .. import checkpoint, tuning
from ..budget import backprop_bytes, data_bytes
from ..errors import UsageError
from ..fileio import make_output_dir, remove_made_dirs
from ..memory import fmt_bytes, parse_bytes
from ..plan_report import plan_report, print_plan
from ..progress import progress_enabled
from ..process_memory import peak_rss_mib, rss_mib, runtime_bytes
from ..runs import MODEL, save_run
from ..training import load_init, make_trainer, plan_run, warm_up_for

HELP = "train a Forward-Forward net on a data set, print its test error and save it"

_D = TrainConfig()


def add_arguments(p):
    p.add_argument("--dataset", default=_D.dataset, help="name (fashion-mnist, mnist, kmnist) or a .npz file "
                   "with x_train, y_train, x_test, y_test (default: %(default)s)")
    p.add_argument("--data-dir", help="where to look for the data set first")
    p.add_argument("--data-mmap", action="store_true",
                   help="memory-map a prepared copy of the data set (made once under the user cache, checked on "
                        "every use): only the pages in use are resident, and --memory-budget does not count them")
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
                   help="memory the whole process may use (runtime measured at start-up + arena + data), like 300MiB "
                        "or 1GB; checked before training starts, and against the cgroup's limit")
    p.add_argument("--in-turn", action="store_true",
                   help="dense nets: positives, then negatives, pass the layers (activations of B rows, not 2B; "
                        "the same gradients); chosen by itself when --memory-budget is too tight otherwise")
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
    p.add_argument("--head-epochs", type=int, help=f"epochs of the linear head or probe (0: none; default: "
                   f"{_D.head_epochs}, conv nets and ffcl 0, ff-unsup and uff 10)")
    p.add_argument("--head-lr", type=float, help=f"its Adam learning rate (default: {_D.head_lr}, ff-unsup and uff 0.003)")
    p.add_argument("--classifier", choices=CLASSIFIERS,
                   help="how test error is measured: dense nets: linear head (one pass), goodness over all labels, or "
                        "first (the first layer's goodness over all labels: about one pass); "
                        "conv nets: goodness (every block's class goodness, averaged) or last (the last block's); "
                        f"(default: {_D.classifier}, conv nets last)")
    p.add_argument("--shift", type=int, default=_D.shift, metavar="N",
                   help="train the FF layers on images moved by a random whole-pixel shift of up to N rows "
                        "and columns, drawn per example and batch (2-D images only; default: %(default)s)")
    p.add_argument("--algo", default=_D.algo, choices=ALGOS,
                   help="ff: supervised FF (labels overlaid); ff-unsup: unsupervised FF on real vs hybrid images, "
                        "then a linear probe on the last three layers; uff: each layer an unsupervised --learner, "
                        "trained then frozen, then that probe; ffcl: FF with a label path of its own "
                        "(--separate-labels, --late-labels, --feedback-steps) (default: %(default)s)")
    p.add_argument("--probe-labels", type=float, default=_D.probe_labels, metavar="FRACTION",
                   help="ff-unsup, uff: share of the training labels the probe may use, in (0, 1] "
                        "(default: %(default)s)")
    p.add_argument("--mask-blurs", type=int, default=_D.mask_blurs, metavar="N",
                   help="ff-unsup: how many times the hybrid masks' random bits are blurred, 1 to 6: more blurs, "
                        "larger regions from each image (default: %(default)s)")
    p.add_argument("--fields", default=_D.fields, choices=FIELDS,
                   help="ff-unsup: full (every unit sees the whole layer below) or local: layer 1's units on a 4x4 "
                        "grid of image windows, each next layer on a grid one smaller seeing 2x2 cells below, "
                        "no shared weights (Hinton's local receptive fields) (default: %(default)s)")
    p.add_argument("--learner", default=_D.learner,
                   help=f"uff: what each layer learns as: {', '.join(LEARNERS)} (auto-encoder, denoising "
                        "auto-encoder, contrastive on two views of each image)")
    p.add_argument("--noise-rate", type=float, default=_D.noise_rate, metavar="R",
                   help="uff dae: share of each layer's inputs masked (set to 0); contrastive: of each view's pixels, "
                        "in [0, 1) (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=_D.temperature,
                   help="uff contrastive: NT-Xent's temperature, above 0 (default: %(default)s)")
    p.add_argument("--separate-labels", action="store_true",
                   help="ffcl: a label vector per class at every layer, added where its goodness is computed "
                        "(without: at the first layer only)")
    p.add_argument("--late-labels", action="store_true",
                   help="ffcl (with --separate-labels): the activity passed on carries no label; labels meet the "
                        "features only in each layer's goodness, so classifying is one pass plus a per-label term")
    p.add_argument("--feedback-steps", type=int, default=_D.feedback_steps, metavar="K",
                   help="ffcl: K more settling steps with each layer's (conv: block's) activity fed back to the one "
                        f"below (0 to {MAX_FEEDBACK_STEPS}; default: %(default)s)")
    p.add_argument("--seed", type=int, default=_D.seed)
    p.add_argument("--out", help="run directory to write (default: runs/DATASET-TIME)")
    p.add_argument("--force", action="store_true", help="overwrite a run directory that already holds a model")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                   help="write OUT/checkpoint.npz every N steps (batches), atomically")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its checkpoint, with its config "
                   "(training options given here are ignored); the result is bit for bit the uninterrupted run's")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


@dataclasses.dataclass
class Prepared:
    ds: object
    run: object               # training.RunPlan: the settled config, memory plan and how frozen layers are fed
    load_seconds: float
    compile_seconds: float
    plan_args: tuple
    runtime: int              # the process's resident memory before the data and the arena (the budget covers it)
    init_net: object = None   # --init's ConvNet (not on resume: the checkpoint holds every weight)

    @property
    def cfg(self):
        return self.run.cfg


def prepare(args, resume_meta=None):
    """Config, data and memory plan, every check done before any training."""
    if resume_meta is not None:  # the checkpoint's own config: same data, same model, same schedule
        for k, v in resume_meta["config"].items():
            setattr(args, k, v)
        args.batch_size = str(resume_meta["config"]["batch_size"])
        args.limit_train = resume_meta.get("limit_train")
    init_net = init_cfg = None
    if args.init and resume_meta is None:
        init_net, init_cfg = load_init(args.init)
    if args.batch_size is None:
        args.batch_size = str(default_batch_size(args.model or getattr(init_cfg, "model", _D.model)))
    auto = args.batch_size == "auto"
    try:
        batch_size = 1 if auto else int(args.batch_size)
    except ValueError:
        raise UsageError(f"--batch-size must be a whole number or 'auto', got {args.batch_size!r}") from None
    cfg = config_from_options(args, batch_size, init_cfg)
    if cfg.algo == "ff-unsup" and not cfg.head_epochs:
        raise UsageError("--algo ff-unsup with --head-epochs 0 trains no probe to measure a test error with: use "
                         "--head-epochs 1 or more (the encoder alone is edgeff.FFEncoder's, in Python)")
    budget = parse_bytes(args.memory_budget) if args.memory_budget else None
    if auto and budget is None:
        raise UsageError("--batch-size auto needs --memory-budget")
    compile_seconds = warm_up_for(cfg)
    runtime = runtime_bytes()  # the process itself, measured: interpreter, libraries, kernels loaded
    t0 = time.perf_counter()
    ds = (load_mapped if args.data_mmap else load_dataset)(cfg.dataset, args.data_dir)
    load_seconds = time.perf_counter() - t0
    if args.limit_train is not None:
        if args.limit_train < 1:
            raise UsageError(f"--limit-train must be at least 1, got {args.limit_train}")
        ds = dataclasses.replace(ds, x_train=ds.x_train[:args.limit_train].copy(),
                                 y_train=ds.y_train[:args.limit_train].copy())  # copies: the rest is freed
    if args.epochs is None:
        cfg = dataclasses.replace(cfg, epochs=default_epochs(len(ds.y_train)))
    resumed = resume_meta.get("frozen_input", "stream") if resume_meta else None   # older checkpoints streamed
    run = plan_run(cfg, ds, budget, auto, init_net, resumed, runtime)
    cfg = run.cfg
    return Prepared(ds, run, load_seconds, compile_seconds,
                    (run.plan, cfg.batch_size, data_bytes(ds), budget,
                     backprop_bytes(cfg, ds, run.in_width, cfg.batch_size), runtime, run.frozen_input,
                     run.cache_bytes), runtime, init_net)


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
    compile_seconds = prepared.compile_seconds
    rss_before = rss_mib()
    trainer = make_trainer(prepared.run, ds, progress_of([ProgressBar()] if show else None), prepared.init_net,
                           resume[1].get("blas_threads") if resume else None)
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
                          run_meta=dict(every=every, limit_train=args.limit_train,
                                        frozen_input=prepared.run.frozen_input, blas_threads=tuning.blas_threads()))
    train_seconds = time.perf_counter() - t0
    head_seconds = sum(s for s, keys in zip(trainer.phase_seconds, trainer.phases()) if keys == ["head"])
    net = trainer.net
    net.describe_input(ds)
    errors = net.errors(ds.x_test, ds.y_test, ds.scale)
    metrics = {
        "test_error": errors[cfg.classifier],
        **{f"test_error_{c}": e for c, e in errors.items()},
        "classifier": cfg.classifier,
        "train_seconds": round(train_seconds, 3),
        "ff_seconds": round(train_seconds - head_seconds, 3),
        "head_seconds": round(head_seconds, 3),
        "train_samples": int(len(ds.y_train)),
        "compile_seconds": round(compile_seconds, 3),
        "load_seconds": round(load_seconds, 3),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "rss_before_training_mib": round(rss_before, 1),
        "arena_bytes": trainer.plan.arena_bytes,
        "frozen_input": prepared.run.frozen_input,
        "blas_threads": tuning.blas_threads(),
        "batch_size": cfg.batch_size,
        "epoch_losses": history,
        "dataset": ds.name,
        "model": cfg.model,
        "out": out,
    }
    if cfg.algo in UNSUPERVISED:
        metrics.update(algo=cfg.algo, probe_labels=cfg.probe_labels, probe_label_rows=trainer.labelled)
    if cfg.algo == "uff":
        metrics.update(learner=cfg.learner)
    if cfg.algo == "ffcl":        # a conv net's labels are separate and late by construction: no switches
        metrics.update(algo=cfg.algo, feedback_steps=cfg.feedback_steps)
        if not cfg.is_conv:
            metrics.update(separate_labels=cfg.separate_labels, late_labels=cfg.late_labels)
    save_run(out, cfg, net, metrics)
    if args.json:
        print(json.dumps(metrics, allow_nan=False))
    else:
        others = ", ".join(f"{c} {e:.2%}" for c, e in errors.items())
        print(f"test error {errors[cfg.classifier]:.2%} ({others}); trained in {train_seconds:.1f} s; saved {out}")
    return 0
