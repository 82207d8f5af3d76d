"""edgeff learn under SIGKILL: how many updates each kill loses, against --checkpoint-every.

A small run learns a directory of one-row files at batch size 1, so each file is one update and the
journal counts the updates made. The learner is killed (SIGKILL) at random moments, KILLS times,
restarted after each; lost = updates made when killed - updates in the checkpoint it resumes from.
At the end the resumed run is compared with an uninterrupted one (the files after a checkpoint are
learned again, so they should be equal bit for bit).

    python tools/learn_kills.py [--kills 10] [--every 10] [--files 1500]"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from edgeff.learn_source import read_journal


def edgeff(*args):
    return subprocess.run([sys.executable, "-m", "edgeff.cli", *map(str, args)], capture_output=True, text=True)


def journal_updates(run_dir):
    return max((e["update"] for e in read_journal(run_dir).values()), default=0)


def checkpoint_updates(path):
    with np.load(path) as z:
        return json.loads(z["meta"].tobytes())["learn"]["updates"]


def weights(run_dir):
    with np.load(os.path.join(run_dir, "model.npz")) as z:
        return {k: z[k] for k in z.files if k != "meta"}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--every", type=int, default=10, help="--checkpoint-every")
    p.add_argument("--files", type=int, default=1500)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="learn-kills-")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.files + 600, 4, 5), dtype=np.uint8)
    y = rng.integers(0, 3, len(x))
    np.savez(os.path.join(work, "data.npz"), x_train=x[:400], y_train=y[:400], x_test=x[400:600], y_test=y[400:600])
    run = os.path.join(work, "run")
    r = edgeff("train", "--dataset", os.path.join(work, "data.npz"), "--model", "20-64-64", "--epochs", 2, "--out", run,
               "--quiet", "--json")
    if r.returncode:
        sys.exit(r.stderr)
    src = os.path.join(work, "src")
    os.makedirs(src)
    for i in range(args.files):
        np.savez(os.path.join(src, f"s{i:05d}.npz"), x=x[600 + i:601 + i], y=y[600 + i:601 + i])
    twin = os.path.join(work, "twin")
    shutil.copytree(run, twin)
    learn = ["--from", src, "--once", "--batch-size", 1, "--replay", 64, "--checkpoint-every", args.every,
             "--export-every", 50, "--quiet"]
    edgeff("learn", twin, *learn)
    ckpt, lost = os.path.join(run, "learn-checkpoint.npz"), []
    for _ in range(args.kills):
        proc = subprocess.Popen([sys.executable, "-m", "edgeff.cli", "learn", run, *map(str, learn[:-1])],
                                stderr=subprocess.PIPE, text=True)
        while "memory:" not in proc.stderr.readline():     # its last line before learning
            pass
        time.sleep(rng.uniform(0.1, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kept = checkpoint_updates(ckpt)
        made = max(journal_updates(run), kept)   # killed between a checkpointed update and its file's journal line
        lost.append(made - kept)
        print(f"kill at update {made}: checkpoint at {kept}, {made - kept} lost (interval {args.every})", flush=True)
    final = edgeff("learn", run, *learn, "--json")
    summary = json.loads(final.stdout.strip().splitlines()[-1])
    same = all(np.array_equal(a, weights(twin)[k]) for k, a in weights(run).items())
    print(f"{args.kills} kills: lost {min(lost)}..{max(lost)} updates (mean {np.mean(lost):.1f}), interval "
          f"{args.every}; after resuming: {summary['updates']} updates of {args.files} files, "
          f"{'equal' if same else 'NOT equal'} to the uninterrupted run bit for bit")
    print(json.dumps(dict(kills=args.kills, every=args.every, lost=lost, updates=summary["updates"],
                          files=args.files, bitwise_equal=same)))


if __name__ == "__main__":
    main()
