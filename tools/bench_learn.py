"""Continual learning with edgeff learn's streaming core on Split Fashion-MNIST, and its speed.

Split Fashion-MNIST: 5 tasks of 2 classes (0-1, 2-3, ..., 8-9). A dense FF run is trained offline
(edgeff train) on task 1 with all 10 labels declared, then tasks 2..5 are streamed in order, one pass
each, through the same StreamTrainer edgeff learn runs, without and with a replay buffer. After each
task the accuracy on every task's test images is measured:
    final average accuracy  mean over tasks of the accuracy after the last task
    average forgetting      mean over tasks 1..4 of (best accuracy before the last task - final accuracy)
Offline: the same net trained on all five tasks' data at once (edgeff train). Also updates/s at batch
sizes 1 and 32, and the peak RSS of an `edgeff learn` process against its --memory-budget.

    python tools/bench_learn.py [--model 784-200-200] [--replay 2000] [--batch-size 16]
Prints a table and one JSON line. Run it under `nice`: it trains for minutes."""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

from edgeff.data import FASHION_NAMES, load_dataset
from edgeff.learn_session import LearnSession
from edgeff.runs import load_run
from edgeff.stream import plan_session

TASKS = [(2 * t, 2 * t + 1) for t in range(5)]


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def edgeff(*args):
    r = subprocess.run([sys.executable, "-m", "edgeff.cli", *map(str, args)], capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def task_rows(x, y, task):
    keep = np.isin(y, task)
    return x[keep], y[keep]


def train_offline(work, ds, x, y, model, epochs, name):
    np.savez(os.path.join(work, f"{name}.npz"), x_train=x.reshape(-1, 28, 28), y_train=y,
             x_test=ds.x_test.reshape(-1, 28, 28), y_test=ds.y_test, label_names=np.array(FASHION_NAMES))
    out = os.path.join(work, name)
    report = edgeff("train", "--dataset", os.path.join(work, f"{name}.npz"), "--model", model, "--epochs", epochs,
                    "--batch-size", 64, "--out", out, "--quiet", "--json")
    return out, report["test_error"]


def accuracies(net, classifier, xt, yt):
    return [1 - net.error(*task_rows(xt, yt, task), 1.0, classifier) for task in TASKS]


def stream_tasks(run_dir, ds, batch_size, replay, policy, passes):
    """Accuracy matrix acc[i][j]: on task j after task i (task 0 learned offline), streaming tasks 1..4."""
    net, cfg = load_run(run_dir)
    xt = (ds.x_test / 255).astype(np.float32)
    scratch = tempfile.mkdtemp()
    lcfg, plan = plan_session(run_dir, net, cfg, batch_size, replay, None, 0, ds)
    session = LearnSession(scratch, cfg, lcfg, plan, net, dict(batch_size=batch_size, replay=replay, policy=policy),
                           0, 0, print)
    if session.replay is not None:            # the replay buffer starts with what task 0 was trained on
        x0, y0 = task_rows(ds.x_train, ds.y_train, TASKS[0])
        for row, label in zip((x0[:4 * replay] / 255).astype(np.float32), y0[:4 * replay]):
            session.replay.offer(row, label)
    acc = [accuracies(session.net, cfg.classifier, xt, ds.y_test)]
    rng = np.random.default_rng(0)
    for task in TASKS[1:]:
        x, y = task_rows(ds.x_train, ds.y_train, task)
        for _ in range(passes):
            order = rng.permutation(len(y))
            session.learn(str(task), (x[order] / 255).astype(np.float32), y[order].astype(np.int64))
        acc.append(accuracies(session.net, cfg.classifier, xt, ds.y_test))
    return acc, session.counts


def summary(acc):
    final = acc[-1]
    forgetting = [max(acc[i][j] for i in range(len(acc) - 1)) - final[j] for j in range(len(TASKS) - 1)]
    return float(np.mean(final)), float(np.mean(forgetting))


def updates_per_second(run_dir, ds, batch_size, seconds=5.0):
    net, cfg = load_run(run_dir)
    lcfg, plan = plan_session(run_dir, net, cfg, batch_size, 0, None, 0, ds)
    session = LearnSession(tempfile.mkdtemp(), cfg, lcfg, plan, net, dict(batch_size=batch_size, replay=0,
                                                                         policy="reservoir"), 0, 0, print)
    x, y = (ds.x_train[:20000] / 255).astype(np.float32), ds.y_train[:20000].astype(np.int64)
    session.learn("warm", x[:batch_size * 10], y[:batch_size * 10])
    t0, done, i = time.perf_counter(), 0, 0
    while time.perf_counter() - t0 < seconds:
        n = batch_size * 50
        session.learn("bench", x[i:i + n], y[i:i + n])
        i = (i + n) % (len(y) - n)
        done += 50
    return done / (time.perf_counter() - t0)


def rss_against_budget(work, run_dir, ds, budget, replay):
    src = os.path.join(work, "stream")
    os.makedirs(src, exist_ok=True)
    for i in range(20):
        np.savez(os.path.join(src, f"s{i:03d}.npz"), x=ds.x_train[i * 500:(i + 1) * 500], y=ds.y_train[i * 500:(i + 1) * 500])
    r = edgeff("learn", run_dir, "--from", src, "--once", "--batch-size", 16, "--replay", replay, "--memory-budget",
               budget, "--json", "--quiet")
    return r["peak_rss_mib"], r["arena_bytes"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="784-200-200")
    p.add_argument("--epochs", type=int, default=5, help="offline training epochs")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--replay", type=int, default=2000)
    p.add_argument("--passes", type=int, default=1, help="passes over each streamed task")
    p.add_argument("--budget", default="400MiB")
    args = p.parse_args()
    ds = load_dataset("fashion-mnist")
    work = tempfile.mkdtemp(prefix="bench-learn-")
    first, _ = train_offline(work, ds, *task_rows(ds.x_train, ds.y_train, TASKS[0]), args.model, args.epochs, "task1")
    _, offline_error = train_offline(work, ds, ds.x_train, ds.y_train, args.model, args.epochs, "all")
    rows = {}
    for name, replay, policy in (("no replay", 0, "reservoir"), ("reservoir", args.replay, "reservoir"),
                                 ("balanced", args.replay, "balanced")):
        acc, counts = stream_tasks(first, ds, args.batch_size, replay, policy, args.passes)
        rows[name] = dict(zip(("final_accuracy", "forgetting"), summary(acc)), matrix=acc, **counts)
    speed = {b: updates_per_second(first, ds, b) for b in (1, 32)}
    peak, arena = rss_against_budget(work, first, ds, args.budget, args.replay)
    cpu = cpu_name()
    print(f"Split Fashion-MNIST, {args.model}, batch {args.batch_size}, replay {args.replay}, "
          f"{args.passes} pass(es) a task; {cpu} (shared machine)")
    print(f"{'stream':12} {'final acc':>10} {'forgetting':>11}")
    for name, r in rows.items():
        print(f"{name:12} {r['final_accuracy']:>10.2%} {r['forgetting']:>11.2%}")
    print(f"{'offline':12} {1 - offline_error:>10.2%} {'-':>11}")
    print(f"updates/s: batch 1 {speed[1]:.0f}, batch 32 {speed[32]:.0f} ({speed[32] * 32:.0f} samples/s)")
    print(f"edgeff learn peak RSS {peak:.1f} MiB with --memory-budget {args.budget} (arena {arena / 2**20:.2f} MiB)")
    print(json.dumps(dict(cpu=cpu, model=args.model, batch_size=args.batch_size, replay=args.replay,
                          passes=args.passes, streams=rows, offline_accuracy=1 - offline_error,
                          updates_per_second=speed, peak_rss_mib=peak, budget=args.budget, arena_bytes=arena)))


if __name__ == "__main__":
    main()
