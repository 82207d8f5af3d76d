"""edgeff learn: keep a trained run learning from a stream of labelled samples (edgeff/learn_session.py)."""

import json
import os
import signal
import sys
import time

import numpy as np

from ..budget import backprop_bytes, data_bytes
from ..data import Dataset
from ..errors import DataError, UsageError
from ..learn_session import CHECKPOINT, LearnSession
from ..learn_source import (JOURNAL, Rejected, SampleCheck, directory_files, read_exactly, read_labelled, read_sample,
                            records, serial_reader)
from ..memory import fmt_bytes, parse_bytes
from ..plan_report import plan_report, print_plan
from ..process_memory import peak_rss_mib, runtime_bytes
from ..runs import load_run
from ..stream import POLICIES, input_layout, plan_session
from ..train import warm_up

HELP = "keep a trained run learning from a stream of labelled samples, inside its memory budget"


def add_arguments(p):
    p.add_argument("run_dir", metavar="RUN_DIR", help="a supervised dense FF run (written by 'edgeff train --out')")
    p.add_argument("--from", dest="source", required=True, metavar="SOURCE",
                   help="a directory watched for labelled .npz files (x, y) and images (.pgm, .png) in per-label folders (LABEL/IMAGE), learned in name order, each once; "
                        "- : records on stdin (EFL1, a 4-byte little-endian length, an .npz); or a serial line "
                        "carrying records: serial://PATH[?baud=N] or a pyserial URL (socket://HOST:PORT)")
    p.add_argument("--once", action="store_true", help="learn what SOURCE holds now, then stop (default: watch it); "
                   "a serial line: stop once no byte came for --poll seconds")
    p.add_argument("--batch-size", type=int, default=8, help="new samples per update (default: %(default)s)")
    p.add_argument("--replay", type=int, default=0, metavar="N",
                   help="keep up to N earlier samples in the arena and mix as many replayed as new ones into each "
                        "update (default: 0, none)")
    p.add_argument("--replay-policy", choices=POLICIES, default="reservoir",
                   help="reservoir: a uniform sample of all seen; balanced: classes kept even (default: %(default)s)")
    p.add_argument("--lr", type=float, help="FF layers' learning rate (default: the run's)")
    p.add_argument("--memory-budget", metavar="SIZE",
                   help="memory the whole process may use (runtime + arena with the replay buffer + --test set)")
    p.add_argument("--checkpoint-every", type=int, default=100, metavar="N",
                   help=f"write RUN_DIR/{CHECKPOINT} every N updates, atomically (default: %(default)s)")
    p.add_argument("--export-every", type=int, default=500, metavar="M",
                   help="re-export RUN_DIR/model.npz and model.onnx every M updates, each swapped in whole "
                        "(0: at the end only; default: %(default)s)")
    p.add_argument("--test", metavar="FILE.npz", help="labelled samples (x, y) to measure test_error on at the end")
    p.add_argument("--poll", type=float, default=1.0, metavar="SECONDS",
                   help="watching a directory: look for new files this often; with --once on a serial line: "
                        "the quiet that ends it (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="print the memory plan and stop")
    p.add_argument("--quiet", action="store_true", help="no log lines")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def run(args):
    if not os.path.isdir(args.run_dir):
        raise UsageError(f"{args.run_dir}: no such run directory; train one with 'edgeff train --out {args.run_dir}'")
    if args.source != "-" and "://" not in args.source and not os.path.isdir(args.source):
        raise UsageError(f"--from {args.source}: not a directory; give a directory of labelled .npz files, - (stdin) "
                         "or a serial line (serial:///dev/ttyUSB0?baud=115200)")
    for flag, value in (("--checkpoint-every", args.checkpoint_every), ("--export-every", args.export_every)):
        if value < 0:
            raise UsageError(f"{flag} must be 0 or more, got {value}")
    if args.checkpoint_every == 0:
        raise UsageError("--checkpoint-every must be 1 or more: a learn session always keeps a checkpoint")
    if not args.poll > 0:
        raise UsageError(f"--poll must be above 0 seconds, got {args.poll}")
    net, cfg = load_run(args.run_dir)
    if args.lr is not None:
        if not args.lr > 0:
            raise UsageError(f"--lr must be above 0, got {args.lr}")
        cfg = cfg.__class__.from_dict(dict(cfg.__dict__, lr=args.lr))
    log = (lambda msg: None) if args.quiet else (lambda msg: print(f"learn: {msg}", file=sys.stderr, flush=True))
    options = dict(batch_size=args.batch_size, replay=args.replay, policy=args.replay_policy)
    warm_up()
    runtime = runtime_bytes()
    budget = parse_bytes(args.memory_budget) if args.memory_budget else None
    test = _test_set(args.test, net) if args.test else None
    held = test or _test_set(None, net)
    lcfg, plan = plan_session(args.run_dir, net, cfg, args.batch_size, args.replay, budget, runtime, held)
    if args.dry_run:
        report = plan_report(plan, args.batch_size, data_bytes(held), budget,
                             backprop_bytes(lcfg, held, net.in_width, lcfg.batch_size), runtime)
        print(json.dumps(report, allow_nan=False)) if args.json else print_plan(report)
        return 0
    session = LearnSession(args.run_dir, cfg, lcfg, plan, net, options, args.checkpoint_every, args.export_every, log)
    before = _error(session, test)
    if session.resume():
        log(f"resumed from {CHECKPOINT} at update {session.counts['updates']}")
    else:
        session.save_checkpoint()
    stopping, line = [], None
    if "://" in args.source:     # opened before the line below says it is ready: opening drops what came before
        line, read = serial_reader(args.source, args.once, args.poll, stopping)
    log(f"memory: arena {fmt_bytes(plan.arena_bytes)} (replay {args.replay} rows), {args.batch_size} new rows "
        f"an update{' + as many replayed' if args.replay else ''}")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))
    t0, at_start = time.perf_counter(), session.counts["updates"]
    broken = None
    try:
        if args.source == "-":
            broken = _learn_records(session, read_exactly(sys.stdin.buffer), log, stopping)
        elif line is not None:
            broken = _learn_records(session, read, log, stopping)
        else:
            _learn_directory(session, args.source, args.once, args.poll, log, stopping)
        session.finish()               # not after an error: a diverged net must not replace the last checkpoint
    finally:
        if line is not None:
            line.close()
    seconds = time.perf_counter() - t0
    summary = dict(session.counts, test_error=_error(session, test), test_error_before=before,
                   updates_per_second=round((session.counts["updates"] - at_start) / seconds, 2) if seconds else None,
                   seconds=round(seconds, 3), arena_bytes=plan.arena_bytes, budget_bytes=budget,
                   peak_rss_mib=round(peak_rss_mib(), 1), replay=args.replay, replay_policy=args.replay_policy,
                   batch_size=args.batch_size, journal=JOURNAL if os.path.isdir(args.source) else None)
    if args.json:
        print(json.dumps(summary, allow_nan=False))
    else:
        print(f"{summary['updates']} updates on {summary['samples']} samples ({summary['replayed']} replayed), "
              f"{summary['rejected']} rejected" +
              (f"; test error {before:.2%} -> {summary['test_error']:.2%}" if test else ""))
    if broken:
        raise DataError(f"{'stdin' if args.source == '-' else args.source}: {broken}; what came before it is "
                        "learned and saved")
    return 0


def _test_set(path, net):
    """The --test file's samples as a Dataset (x_test, y_test), every row valid, or one UsageError line;
    path None: a Dataset of no rows (what the budget counts without --test)."""
    if path is None:
        none = np.zeros((0, 1), np.float32)
        return Dataset("none", none, none[:, 0].astype(np.int32), none, none[:, 0].astype(np.int32), net.num_classes,
                       1.0, None, (), "")
    if not os.path.isfile(path):
        raise UsageError(f"--test {path}: no such file")
    try:
        x, y = read_labelled(path, limit=None)
        rows, labels, bad, why = SampleCheck(net.in_features, net.num_classes, input_layout(net)[2]).rows(x, y)
    except Rejected as exc:
        raise UsageError(f"--test {path}: {exc}; give an .npz with x and y") from None
    if bad:
        raise UsageError(f"--test {path}: {bad} bad rows ({why}); give clean test samples")
    return Dataset(path, rows[:0], labels[:0].astype("int32"), rows, labels.astype("int32"), net.num_classes, 1.0,
                   None, (), path)


def _error(session, test):
    if test is None:
        return None
    return session.net.error(test.x_test, test.y_test, 1.0, session.cfg.classifier)


def _take(session, name, data, log):
    """Check one file's or record's samples; (rows, labels, rejected, why rejected whole or None)."""
    try:
        rows, labels, bad, why = session.check.rows(*read_sample(name, data, session.label_names))
    except Rejected as exc:
        log(f"rejected {name}: {exc}")
        return None, None, 0, str(exc)
    if bad:
        log(f"rejected {bad} of {bad + len(rows)} rows of {name} (first: {why})")
    return rows, labels, bad, None


def _learn_directory(session, directory, once, poll, log, stopping):
    start = session.position
    while not stopping:
        names = directory_files(directory, session.journal)
        for name in names:
            rows, labels, bad, whole = _take(session, name, os.path.join(directory, name), log)
            if whole:
                session.done(name, 0, 1, whole)
                continue
            first = start["rows"] if name == start["source"] else 0
            session.learn(name, rows, labels, min(first, len(rows)))
            session.done(name, len(rows), bad)
            if stopping:
                return
        if once:
            return
        if not names:
            time.sleep(poll)


def _learn_records(session, read, log, stopping):
    """Learn the records read(n) gives until they end; returns why the last was cut short, or None."""
    for name, payload, why in records(read):
        if why:
            log(f"rejected {name}: {why}")
            session.reject(1)
            if why.startswith("cut short"):
                return f"{name} {why}"
            continue
        rows, labels, bad, whole = _take(session, name, payload, log)
        session.reject(bad + (1 if whole else 0))
        if rows is not None:
            session.learn(name, rows, labels)
        if stopping:
            return None
    return None
