"""edgeff profile: a short training run measured against its memory plan, written as a report."""

import dataclasses
import json
import os
import platform
import sys
import time

from ..version import __version__
from ..budget import data_bytes, layout_for_conv, planner
from ..deploy.targets import PROFILES
from ..errors import UsageError
from ..memory import fmt_bytes, parse_bytes
from ..profile import block_macs, default_steps, dense_macs, measure, settle, setting_report, warm_blas
from ..progress import Progress, progress_enabled
from ..runs import load_run
from ..sff_train import ConvTrainer, warm_up_conv
from ..train import Trainer, warm_up
from . import train

HELP = "run a short profiled training and write a memory report: report.json, report.md, report.html"

FORMATS = ("json", "md", "html")
SKIP = {"out", "force", "checkpoint_every", "resume", "dry_run"}   # train's options about writing a run
SWEEP_KEYS = {"batch": "batch_size", "batch-size": "batch_size", "batch_size": "batch_size", "schedule": "schedule",
              "negatives": "negatives", "optimizer": "optimizer", "model": "model", "hybrid": "hybrid"}
DENSE_ONLY = ("schedule", "negatives")      # dense FF's options: a conv net has none
CONV_ONLY = ("hybrid",)


class _TrainOptions:
    """Passes train's options on to the parser, except those about writing a run."""

    def __init__(self, parser):
        self.parser = parser

    def add_argument(self, *flags, **kw):
        dest = kw.get("dest") or flags[0].lstrip("-").replace("-", "_")
        if dest in SKIP:
            return
        if dest == "batch_size":    # None: the run's own with RUN_DIR, else train's default
            kw.update(default=None, help="examples per batch, or 'auto': the largest that fits the budget "
                                         f"(default: the run's, else {train._D.batch_size})")
        if dest == "memory_budget":
            kw.update(help="memory the whole process may use (runtime measured at start-up + arena + data), like "
                           "300MiB (default: the target's default budget with --target, else none)")
        self.parser.add_argument(*flags, **kw)


def add_arguments(p):
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR",
                   help="profile this run's config (model, data set, training options) instead of the options")
    train.add_arguments(_TrainOptions(p))
    p.add_argument("-o", "--output", default="report", metavar="DIR", help="directory for the report (default: report)")
    p.add_argument("--format", default=",".join(FORMATS), help="any of json,md,html (default: all three)")
    p.add_argument("--steps", type=int, metavar="N",
                   help="batches to run, split over the schedule's phases (default: up to 300, fewer for big nets)")
    p.add_argument("--target", metavar="NAME", help="a deploy target (like rpi-zero2w): fit against its RAM")
    p.add_argument("--sweep", metavar="KEY=V1,V2,...",
                   help="compare settings in one report; KEY: batch, optimizer or model, and schedule or "
                        "negatives (dense nets) or hybrid (conv nets)")


def target_profile(name):
    """What the profile needs of a deploy target (deploy/targets.py): {name, ram_bytes, default_budget_bytes, source}."""
    if name not in PROFILES:
        raise UsageError(f"unknown --target {name!r}; known targets: {', '.join(sorted(PROFILES))}")
    t = PROFILES[name]
    return dict(name=name, ram_bytes=t.ram_bytes, default_budget_bytes=t.default_budget_bytes,
                source="edgeff.deploy.targets")


def parse_formats(text):
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise UsageError(f"--format {text!r}: use any of {','.join(FORMATS)}")
    return formats


def parse_sweep(text):
    """'batch=16,64' -> ('batch_size', [16, 64])."""
    key, sep, values = text.partition("=")
    field = SWEEP_KEYS.get(key.strip())
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or field is None or not items:
        raise UsageError(f"--sweep {text!r}: use KEY=V1,V2,... with KEY one of batch, schedule, negatives, "
                         "optimizer, model, hybrid, like batch=16,64,256")
    if field == "batch_size":
        try:
            items = [int(v) for v in items]
        except ValueError:
            raise UsageError(f"--sweep {text!r}: batch sizes must be whole numbers") from None
    return field, items


def apply_run_dir(args):
    """Fill the training options from RUN_DIR's config (its --batch-size only if none was given)."""
    _, cfg = load_run(args.run_dir)          # ModelError when the directory holds no model
    for k, v in dataclasses.asdict(cfg).items():
        if k != "batch_size":
            setattr(args, k, v)
    if args.batch_size is None:
        args.batch_size = str(cfg.batch_size)


def settings_of(args, budget):
    """([(label, cfg, plan)], the data set, the first layer's input width, the runtime's resident bytes
    measured before the data was loaded, as edgeff plan and train measure it); all checks before training."""
    if args.batch_size is None:
        args.batch_size = str(train._D.batch_size)
    auto = args.batch_size == "auto"
    given = args.memory_budget
    args.memory_budget = str(budget) if auto and budget is not None else None  # a plan over budget is reported
    prepared = train.prepare(args)
    args.memory_budget = given
    cfg, ds = prepared.cfg, prepared.ds
    if cfg.algo != "ff":
        raise UsageError(f"edgeff profile measures supervised FF runs (--algo ff), not --algo {cfg.algo}")
    in_width = prepared.run.in_width
    if not args.sweep:
        return [(f"batch={cfg.batch_size}", cfg, prepared.run.plan)], ds, in_width, prepared.runtime
    field, values = parse_sweep(args.sweep)
    if field in (CONV_ONLY if not cfg.is_conv else DENSE_ONLY):
        raise UsageError(f"--sweep {field}: {cfg.model} is a {'conv' if cfg.is_conv else 'dense'} net and has no "
                         f"--{field}; sweep batch, optimizer or model, or {'hybrid' if cfg.is_conv else 'schedule'}")
    out = []
    for v in values:
        c = dataclasses.replace(cfg, **{field: v})
        if c.is_conv != cfg.is_conv or (not c.is_conv and c.validate().sizes[0] != cfg.sizes[0]):
            need = "a conv net" if cfg.is_conv else f"a dense net of {cfg.sizes[0]} inputs"
            raise UsageError(f"--sweep model {v}: the data and the first model need {need}")
        c.validate()
        label = f"{'batch' if field == 'batch_size' else field}={v}"
        try:
            out.append((label, c, planner(c, ds, in_width)(c.batch_size)))
        except ValueError as exc:          # a conv layer does not fit the image size
            raise UsageError(f"--sweep model {v} does not fit {ds.name}'s {ds.image_shape} images: {exc}") from None
    return out, ds, in_width, prepared.runtime


def check_budget(budget, plan, cfg, where):
    weights = sum(b.nbytes for b in plan.buffers if b.kind == "weights")
    if budget is not None and budget < weights:
        raise UsageError(f"{where} {fmt_bytes(budget)} is below the weights' size: {cfg.model} has "
                         f"{fmt_bytes(weights)} of weights and biases; raise the budget or use a smaller --model")


def run(args):
    formats = parse_formats(args.format)
    if args.sweep:
        parse_sweep(args.sweep)
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    target = target_profile(args.target) if args.target else None
    if args.run_dir:
        apply_run_dir(args)
    budget = parse_bytes(args.memory_budget) if args.memory_budget else None
    where = "--memory-budget"
    if budget is None and target is not None:
        budget, where = target["default_budget_bytes"], f"target {target['name']}'s default budget"
    settings, ds, in_width, runtime = settings_of(args, budget)
    for _, cfg, plan in settings:
        check_budget(budget, plan, cfg, where)
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise UsageError(f"-o {args.output} exists and is not a directory")

    show = progress_enabled(args.quiet, args.json)
    log = (lambda msg: None) if (args.quiet or args.json) else (lambda msg: print(msg, file=sys.stderr))
    log(f"data: {ds.name}, {len(ds.y_train)} train rows; compiling kernels")
    conv = settings[0][1].is_conv
    if conv:
        warm_up_conv()          # its convs start BLAS too
    else:
        warm_up()
        warm_blas(in_width, settings[0][1].sizes[1])
    held = data_bytes(ds)
    trainer_of = ConvTrainer if conv else Trainer
    reports = []
    for label, cfg, plan in settings:
        macs = block_macs(layout_for_conv(cfg, ds)) if conv else dense_macs(cfg, in_width)
        steps = args.steps or default_steps(cfg.batch_size, macs)
        log(f"{label}: arena {fmt_bytes(plan.arena_bytes)}, {steps} batches")
        bars = (lambda total, desc, label=label: Progress(total, f"{label} {desc}")) if show else None
        m = measure(lambda cfg=cfg, plan=plan, bars=bars: trainer_of(cfg, ds, progress=bars, plan=plan), steps)
        reports.append(setting_report(label, cfg, plan, in_width, held, budget, target, m, runtime))
        del m
        settle()
    report = dict(reports[0], settings=reports, sweep=args.sweep, run_dir=args.run_dir, edgeff_version=__version__,
                  created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), machine=platform.machine(), cpus=os.cpu_count(),
                  budget_source=where if budget is not None else None)
    from ..report import write_report
    written = write_report(report, args.output, formats)
    if args.json:
        print(json.dumps(report, allow_nan=False))
    else:
        for r in reports:
            print(summary_line(r))
        print("wrote " + ", ".join(written))
    return 0


def summary_line(r):
    fit = ""
    if r["fits"] is not None:
        verdict = "fits" if r["fits"] else "does NOT fit"
        fit = f"; {verdict} budget {fmt_bytes(r['budget_bytes'])} (headroom {r['headroom_bytes'] / 2**20:+.1f} MiB)"
    return (f"{r['setting']}: arena {fmt_bytes(r['arena_bytes'])} (no sharing {fmt_bytes(r['naive_bytes'])}); RSS "
            f"{fmt_bytes(r['rss_baseline_bytes'])} -> peak {fmt_bytes(r['peak_rss_bytes'])} "
            f"(+{fmt_bytes(r['rss_growth_bytes'])} = {r['growth_over_arena']:.2f} x arena, goal <= {r['goal_ratio']}); "
            f"Numba allocations in loop {r['nrt_allocations_in_loop']}; Python heap peak "
            f"{fmt_bytes(r['python_heap_peak_bytes'])}{fit}")
