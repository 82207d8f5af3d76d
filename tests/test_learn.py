"""edgeff learn as a user runs it (real subprocesses): a directory learned once and never twice, stdin
records, hostile samples rejected one line each without reaching the weights, the replay buffer in the
plan and the budget, SIGKILL at random moments resumed with at most the updates since the last
checkpoint lost, and edgeff infer reading the run while it learns."""

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edgeff import checkpoint
from edgeff.learn_source import read_journal, record
from data_files import write_lying_npz
from run_cli import edgeff, ok, one_line_error

FEATURES, CLASSES = 20, 3


def samples(n, seed):
    """n uint8 4x5 images of 3 classes, each a bright band of its own."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    x = rng.integers(0, 60, (n, 4, 5))
    for c in range(CLASSES):
        x[y == c, :, c:c + 2] += 150
    return x.astype(np.uint8), y.astype(np.int64)


def save(path, x, y):
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small supervised dense FF run, trained once for the module."""
    d = tmp_path_factory.mktemp("learn")
    x, y = samples(400, 0)
    xt, yt = samples(200, 1)
    np.savez(d / "data.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    ok(edgeff("train", "--dataset", d / "data.npz", "--model", "20-32-32", "--epochs", "4", "--batch-size", "16",
              "--out", d / "run", "--quiet", "--json"))
    save(d / "test.npz", xt, yt)
    return d


@pytest.fixture
def run_dir(trained, tmp_path):
    shutil.copytree(trained / "run", tmp_path / "run")
    return tmp_path / "run"


def stream_dir(tmp_path, files, rows, seed=10):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    for i in range(files):
        save(src / f"s{i:04d}.npz", *samples(rows, seed + i))
    return src


def weights(run_dir):
    with np.load(run_dir / "model.npz") as z:
        return {k: z[k] for k in z.files if k != "meta"}


def test_a_directory_is_learned_once_and_the_run_still_infers(run_dir, trained, tmp_path):
    src = stream_dir(tmp_path, 3, 10)
    r = ok(edgeff("learn", run_dir, "--from", src, "--once", "--batch-size", "4", "--replay", "16",
                  "--checkpoint-every", "2", "--export-every", "3", "--test", trained / "test.npz", "--json"))
    assert (r["updates"], r["samples"], r["rejected"]) == (9, 30, 0)      # 3 files of 4 + 4 + 2 rows
    assert 0 < r["replayed"] <= 30 and 0 <= r["test_error"] <= 1 and r["peak_rss_mib"] > 0
    journal = read_journal(run_dir)
    assert sorted(journal) == ["s0000.npz", "s0001.npz", "s0002.npz"] and journal["s0002.npz"]["update"] == 9
    learned = weights(run_dir)
    again = ok(edgeff("learn", run_dir, "--from", src, "--once", "--batch-size", "4", "--replay", "16",
                      "--checkpoint-every", "2", "--json"))
    assert again["updates"] == 9 and again["samples"] == 30                 # nothing learned twice
    assert all(np.array_equal(learned[k], v) for k, v in weights(run_dir).items())
    save(tmp_path / "x.npz", *samples(5, 99))
    labels = ok(edgeff("infer", run_dir, tmp_path / "x.npz", "--json"))["labels"]
    onnx = ok(edgeff("infer", run_dir / "model.onnx", tmp_path / "x.npz", "--json"))
    assert onnx["engine"] == "onnxruntime" and onnx["labels"] == labels


def test_hostile_samples_are_rejected_one_line_each_and_never_reach_the_weights(run_dir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    x, y = samples(6, 3)
    bad_x = x.astype(np.float32) / 255
    bad_x[1, 0, 0] = np.nan
    bad_x[4, 2, 2] = np.inf
    save(src / "a-nan.npz", bad_x, y)                                     # 2 rows rejected
    save(src / "b-labels.npz", x, np.array([0, 1, 7, -1, 2, 0]))           # 2 rows rejected
    save(src / "c-shape.npz", np.zeros((3, 7), np.float32), np.zeros(3, np.int64))
    (src / "d-corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.savez(src / "e-no-labels.npz", x=x)
    save(src / "f-strings.npz", x, np.array(["a"] * 6))
    write_lying_npz(src / "g-lying-header.npz")
    outside = tmp_path / "outside"
    (outside / "3").mkdir(parents=True)
    save(outside / "good.npz", x, y)
    write_pgm(outside / "3" / "a.pgm", x[0])
    (src / "h-link.npz").symlink_to(outside / "good.npz")
    (src / "i-linked-folder").symlink_to(outside / "3")
    (src / "2").mkdir()
    (src / "2" / "j-link.pgm").symlink_to(outside / "3" / "a.pgm")
    r = edgeff("learn", run_dir, "--from", src, "--once", "--batch-size", "2", "--json")
    summary = ok(r)
    assert summary["rejected"] == 2 + 2 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 and summary["samples"] == 4 + 4
    lines = [line for line in r.stderr.splitlines() if "rejected" in line]
    assert len(lines) == 10, r.stderr
    for name in ("a-nan", "b-labels", "c-shape", "d-corrupt", "e-no-labels", "f-strings", "g-lying-header",
                 "h-link", "i-linked-folder", "j-link"):
        assert sum(name in line for line in lines) == 1, (name, lines)
    assert sum("symbolic link" in line for line in lines) == 3
    learned = (run_dir / "model.npz").read_bytes()
    r = edgeff("learn", run_dir, "--from", src, "--once", "--batch-size", "2", "--json")    # journaled: none read again
    assert ok(r)["updates"] == summary["updates"] and "rejected" not in r.stderr
    assert (run_dir / "model.npz").read_bytes() == learned
    assert all(np.isfinite(a).all() for a in weights(run_dir).values())
    kept = (run_dir / "model.npz").read_bytes()
    save(src / "g-more.npz", *samples(6, 8))
    r = edgeff("learn", run_dir, "--from", src, "--once", "--batch-size", "2", "--lr", "1e30")
    assert r.returncode == 3 and r.stderr.strip().splitlines()[-1].startswith("edgeff: error: learning diverged")
    assert (run_dir / "model.npz").read_bytes() == kept


def test_stdin_records_are_learned_and_a_broken_stream_is_one_error(run_dir, tmp_path):
    x, y = samples(5, 4)
    good = [open(save(tmp_path / f"r{i}.npz", x[i:i + 1], y[i:i + 1]), "rb").read() for i in range(5)]
    nan = x[:2].astype(np.float32)
    nan[0, 0, 0] = np.nan
    stream = b"".join(record(p) for p in good[:3]) + record(b"garbage") + b"noise between records" + \
        record(open(save(tmp_path / "n.npz", nan, y[:2]), "rb").read()) + b"".join(record(p) for p in good[3:])
    r = subprocess.run([sys.executable, "-m", "edgeff.cli", "learn", str(run_dir), "--from", "-", "--batch-size", "1",
                        "--json"], input=stream, capture_output=True, timeout=120)
    summary = json.loads(r.stdout.decode().splitlines()[-1])
    assert r.returncode == 0, r.stderr
    assert (summary["updates"], summary["samples"], summary["rejected"]) == (6, 6, 3)    # garbage, noise, a NaN row
    cut = subprocess.run([sys.executable, "-m", "edgeff.cli", "learn", str(run_dir), "--from", "-", "--batch-size", "1",
                          "--json"],
                         input=record(good[0])[:-3], capture_output=True, timeout=120)
    assert cut.returncode == 2 and b"cut short" in cut.stderr.splitlines()[-1]


def test_the_replay_buffer_is_planned_and_counted_in_the_budget(run_dir):
    n = 100_000                                   # 8.8 MB: far above how much the runtime's RSS varies
    plan = ok(edgeff("learn", run_dir, "--from", "-", "--replay", n, "--batch-size", "4", "--dry-run", "--json"))
    replay = {b["name"]: b for b in plan["buffers"] if b["kind"] == "replay"}
    assert replay["replay/x"]["shape"] == [n, FEATURES] and replay["replay/y"]["shape"] == [n]
    small = ok(edgeff("learn", run_dir, "--from", "-", "--batch-size", "4", "--dry-run", "--json"))
    assert plan["arena_bytes"] - small["arena_bytes"] >= n * (FEATURES * 4 + 8)
    budget = plan["runtime_bytes"] + small["arena_bytes"] + n * (FEATURES * 4 + 8) // 2
    r = edgeff("learn", run_dir, "--from", "-", "--replay", n, "--batch-size", "4", "--memory-budget", f"{budget}B")
    one_line_error(r, "--memory-budget", "replay buffer")


def test_bad_input_is_one_line(run_dir, trained, tmp_path):
    before = (run_dir / "model.npz").read_bytes()
    src = stream_dir(tmp_path, 1, 3)
    one_line_error(edgeff("learn", tmp_path / "nowhere", "--from", src), "no such run directory")
    one_line_error(edgeff("learn", run_dir, "--from", tmp_path / "nosuch"), "--from", "not a directory")
    one_line_error(edgeff("learn", run_dir, "--from", src, "--batch-size", "0"), "--batch-size")
    one_line_error(edgeff("learn", run_dir, "--from", src, "--replay", "-3"), "--replay")
    (tmp_path / "t.npz").write_bytes(b"\x00" * 40)
    one_line_error(edgeff("learn", run_dir, "--from", src, "--test", tmp_path / "t.npz"), "--test")
    x, y = samples(4, 5)
    one_line_error(edgeff("learn", run_dir, "--from", src, "--test", save(tmp_path / "l.npz", x, y + 5)),
                   "--test", "label")
    unsup = tmp_path / "unsup"
    ok(edgeff("train", "--dataset", trained / "data.npz", "--model", "20-16-16-16", "--algo", "ff-unsup", "--epochs",
              "1", "--head-epochs", "1", "--schedule", "layerwise", "--out", unsup, "--quiet", "--json"))
    one_line_error(edgeff("learn", unsup, "--from", src), "ff-unsup", "supervised dense FF")
    assert (run_dir / "model.npz").read_bytes() == before and not (run_dir / "learn-checkpoint.npz").exists()


LEARN = ["--once", "--batch-size", "4", "--replay", "16"]


@pytest.fixture(scope="module")
def learned(trained, tmp_path_factory):
    """The trained run after a learn session with a full replay buffer: it holds a learn checkpoint."""
    d = tmp_path_factory.mktemp("learned")
    shutil.copytree(trained / "run", d / "run")
    ok(edgeff("learn", d / "run", "--from", stream_dir(d, 3, 10), *LEARN, "--json"))
    return d / "run"


CRAFTED = [
    # (what, change(arrays, meta), fragment of the one line)
    ("rng uinteger beyond 32 bits", lambda a, m: m["rng"].update(uinteger=2**70), "'rng' is not a PCG64"),
    ("replay_seen beyond int64", lambda a, m: m["learn"].update(replay_seen=[10**30, 0, 0]), "'replay_seen'"),
    ("replay_seen summing beyond int64", lambda a, m: m["learn"].update(replay_seen=[2**62, 2**62, 0]),
     "'replay_seen'"),
    ("opt_t beyond a float", lambda a, m: m["learn"].update(opt_t={k: 10**400 for k in m["learn"]["opt_t"]}),
     "'opt_t'"),
    ("replay rows NaN", lambda a, m: a.update(replay_x=np.full_like(a["replay_x"], np.nan)), "'replay_x' holds NaN"),
    ("replay rows float64 beyond float32", lambda a, m: a.update(replay_x=a["replay_x"].astype(np.float64) * 1e300),
     "'replay_x' is float64"),
    ("replay rows too large to normalise", lambda a, m: a.update(replay_x=a["replay_x"] + np.float32(1e30)),
     "replay buffer holds a value beyond"),
]


@pytest.mark.parametrize("what, change, fragment", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_a_crafted_learn_checkpoint_is_one_line_and_nothing_is_written(learned, tmp_path, what, change, fragment):
    """A learn checkpoint with a valid checksum over crafted contents is refused before any update: one line
    saying it is damaged (not an internal error, not 'learning diverged'), every file of the run kept."""
    run_dir = tmp_path / "run"
    shutil.copytree(learned, run_dir)
    path = run_dir / "learn-checkpoint.npz"
    arrays, meta = checkpoint.read(path)
    change(arrays, meta)
    checkpoint.save(path, arrays, meta)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    src = tmp_path / "src"
    src.mkdir()
    save(src / "new.npz", *samples(10, 50))
    one_line_error(edgeff("learn", run_dir, "--from", src, *LEARN), "learn-checkpoint.npz", fragment)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def checkpoint_updates(run_dir):
    """The updates the run's learn checkpoint holds (0 before there is one)."""
    try:
        with np.load(run_dir / "learn-checkpoint.npz") as z:
            return json.loads(z["meta"].tobytes())["learn"]["updates"]
    except (OSError, ValueError, KeyError):
        return 0


def _kill_when(proc, run_dir, entries, timeout=60):
    """SIGKILL proc once the run's journal holds `entries` files (or it has ended)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None and len(read_journal(run_dir)) < entries:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_at_random_moments_loses_at_most_a_checkpoint_interval(run_dir, trained, tmp_path):
    """One-row files at batch 1: a file is an update, so the journal counts the updates made. After every
    SIGKILL the checkpoint is at most --checkpoint-every updates behind them; the files after it are learned
    again, so the run ends bit for bit where an uninterrupted one does; edgeff infer reads the run meanwhile."""
    files, every = 240, 7
    src = stream_dir(tmp_path, files, 1)
    twin = tmp_path / "twin"
    shutil.copytree(run_dir, twin)
    args = ["--from", str(src), "--once", "--batch-size", "1", "--replay", "8", "--checkpoint-every", str(every),
            "--export-every", "5", "--quiet"]
    ok(edgeff("learn", twin, *args, "--json"))
    save(tmp_path / "x.npz", *samples(3, 98))
    rng = np.random.default_rng(7)
    for i, target in enumerate(sorted(rng.choice(np.arange(20, files - 20), 2, replace=False))):
        proc = subprocess.Popen([sys.executable, "-m", "edgeff.cli", "learn", str(run_dir), *args])
        reader = subprocess.Popen([sys.executable, "-m", "edgeff.cli", "infer", str(run_dir), str(tmp_path / "x.npz"),
                                   "--json"], stdout=subprocess.PIPE, text=True) if i == 0 else None
        _kill_when(proc, run_dir, int(target))
        done = max(e["update"] for e in read_journal(run_dir).values())
        at = checkpoint_updates(run_dir)
        assert done - every <= at <= done + 1, (done, at)     # +1: killed between an update and its journal line
        if reader:
            out, _ = reader.communicate(timeout=120)
            assert reader.returncode == 0 and len(json.loads(out)["labels"]) == 3
        r = edgeff("infer", run_dir / "model.onnx", tmp_path / "x.npz", "--json")
        assert r.returncode == 0, r.stderr
    final = ok(edgeff("learn", run_dir, *args, "--json"))
    assert final["updates"] == files and final["samples"] == files
    twin_w = weights(twin)
    assert all(np.array_equal(twin_w[k], v) for k, v in weights(run_dir).items())


@pytest.mark.parametrize("fault_rate", [0.0, 0.002])
def test_a_serial_line_is_learned_and_a_damaged_record_only_rejected(run_dir, tmp_path, fault_rate):
    """Records over a pty pair (a serial cable), the learner at the far end: clean, every sample learned;
    with bytes flipped and dropped, a damaged record is rejected and the reader finds the next marker."""
    import serial
    from ptyrelay import PtyRelay
    relay = PtyRelay(fault_rate=fault_rate, seed=3)
    try:
        x, y = samples(30, 6)
        ends = ["--once", "--poll", "3"] if fault_rate else []     # clean: stopped by SIGTERM once all is learned
        learner = subprocess.Popen([sys.executable, "-m", "edgeff.cli", "learn", str(run_dir), "--from",
                                    f"serial://{relay.agent_name}?baud=115200", *ends, "--checkpoint-every", "5",
                                    "--batch-size", "1", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        first = learner.stderr.readline()                 # ready: the line is open (opening drops what came before)
        assert "memory" in first, first
        sender = serial.serial_for_url(relay.host_name, baudrate=115200)
        for i in range(30):
            sender.write(record(open(save(tmp_path / f"r{i}.npz", x[i:i + 1], y[i:i + 1]), "rb").read()))
            sender.flush()
        if not fault_rate:
            deadline = time.monotonic() + 300        # a loaded machine's fsyncs can take seconds each
            while checkpoint_updates(run_dir) < 30 and time.monotonic() < deadline and learner.poll() is None:
                time.sleep(0.1)
            learner.send_signal(signal.SIGTERM)
        out, err = learner.communicate(timeout=120)
        sender.close()
    finally:
        relay.close()
    r = subprocess.CompletedProcess(learner.args, learner.returncode, out, first + err)
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    if fault_rate == 0:
        assert r.returncode == 0 and (summary["samples"], summary["rejected"]) == (30, 0), r.stderr
    else:
        assert relay.flips + relay.drops > 0 and r.returncode in (0, 2)     # 2: the last record was cut short
        assert 0 < summary["samples"] < 30 and summary["rejected"] > 0
        assert len([line for line in r.stderr.splitlines() if "rejected" in line]) == summary["rejected"]
    assert all(np.isfinite(a).all() for a in weights(run_dir).values())


def test_a_journal_line_cut_short_by_a_crash_is_ignored_and_a_damaged_one_refused(tmp_path):
    from edgeff.errors import ModelError
    from edgeff.learn_source import append_journal
    append_journal(tmp_path, "a.npz", dict(rows=3, rejected=0, update=1))
    append_journal(tmp_path, "b.npz", dict(rows=2, rejected=1, update=2))
    with open(tmp_path / "learn-journal.jsonl", "a") as f:
        f.write('{"file": "c.npz", "rows"')                    # the write a SIGKILL cut
    assert read_journal(tmp_path) == {"a.npz": dict(rows=3, rejected=0, update=1),
                                      "b.npz": dict(rows=2, rejected=1, update=2)}
    with open(tmp_path / "learn-journal.jsonl", "a") as f:
        f.write('\n{"file": "d.npz", "rows": 1, "rejected": 0, "update": -4}\n')
    with pytest.raises(ModelError, match="line 3 is not JSON"):
        read_journal(tmp_path)
    (tmp_path / "learn-journal.jsonl").write_text("[" * 200_000 + "\n{}\n")   # too deep: a RecursionError once
    with pytest.raises(ModelError, match="line 1 is not JSON"):
        read_journal(tmp_path)


def write_pgm(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"P5\n%d %d\n255\n" % (image.shape[1], image.shape[0]) + image.tobytes())


def test_images_in_per_label_folders_learn_as_the_same_rows_in_npz_files(run_dir, trained, tmp_path):
    """LABEL/IMAGE.pgm under --from is the sample (image, LABEL): the same weights, bit for bit, as the same
    rows in .npz files in the same order; an unknown folder (digits other than '0'-'9' among them), a broken
    image and a label beyond the run's classes are rejected one line each."""
    x, y = samples(6, 5)
    images = tmp_path / "images"
    for i, (image, label) in enumerate(zip(x, y)):
        write_pgm(images / str(label) / f"{i}.pgm", image)
    order = sorted(range(6), key=lambda i: f"{y[i]}/{i}.pgm")
    rows = tmp_path / "rows"
    rows.mkdir()
    for k, i in enumerate(order):                     # a file's last rows make a short batch: one row a file
        save(rows / f"{k}.npz", x[i], y[i:i + 1])
    twin = tmp_path / "twin"
    shutil.copytree(run_dir, twin)
    args = ["--once", "--batch-size", "2", "--replay", "4", "--json"]
    assert ok(edgeff("learn", run_dir, "--from", images, *args))["samples"] == 6
    assert ok(edgeff("learn", twin, "--from", rows, *args))["samples"] == 6
    assert all(np.array_equal(weights(twin)[k], v) for k, v in weights(run_dir).items())
    assert sorted(read_journal(run_dir)) == sorted(f"{y[i]}/{i}.pgm" for i in range(6))
    write_pgm(images / "cat" / "a.pgm", x[0])
    write_pgm(images / "7" / "a.pgm", x[0])
    write_pgm(images / "²" / "a.pgm", x[0])          # digits to str.isdigit, but only '0'-'9' name a class
    write_pgm(images / "١" / "a.pgm", x[0])          # an Arabic-Indic 1: int() reads it, learn does not
    (images / "1" / "broken.pgm").write_bytes(b"P5\n5 4\n255\n\x01")
    r = edgeff("learn", run_dir, "--from", images, *args)
    assert ok(r)["rejected"] == 5 and ok(r)["samples"] == 6
    lines = [line for line in r.stderr.splitlines() if "rejected" in line]
    assert len(lines) == 5 and all(any(f"'{d}'" in line for line in lines) for d in ("cat", "²", "١")), lines


def test_a_class_declared_when_training_but_never_seen_is_learned_later(tmp_path):
    """Class-incremental: a run trained on classes a and b with label_names a, b, c learns c from the stream
    (its image folder named c) and then predicts it; a label beyond c is one rejection line."""
    x, y = samples(300, 7)
    seen = y < 2
    np.savez(tmp_path / "ab.npz", x_train=x[seen], y_train=y[seen], x_test=x[seen][:20], y_test=y[seen][:20],
             label_names=np.array(["a", "b", "c"]))
    ok(edgeff("train", "--dataset", tmp_path / "ab.npz", "--model", "20-32-32", "--epochs", "4", "--batch-size", "16",
              "--out", tmp_path / "run", "--quiet", "--json"))
    new_x, new_y = samples(200, 8)
    save(tmp_path / "c.npz", new_x[new_y == 2], new_y[new_y == 2])
    before = ok(edgeff("infer", tmp_path / "run", tmp_path / "c.npz", "--json"))["labels"]
    src = tmp_path / "src"
    for i, image in enumerate(new_x[new_y == 2][:40]):
        write_pgm(src / "c" / f"{i:03d}.pgm", image)
    save(src / "mixed.npz", new_x[:60], new_y[:60])
    save(src / "z-beyond.npz", new_x[:2], np.array([0, 3]))
    r = edgeff("learn", tmp_path / "run", "--from", src, "--once", "--batch-size", "4", "--replay", "40", "--json")
    assert ok(r)["rejected"] == 1 and "label 3 outside the run's classes 0..2" in r.stderr
    after = ok(edgeff("infer", tmp_path / "run", tmp_path / "c.npz", "--json"))["labels"]
    assert np.mean(np.array(after) == 2) > 0.8 > np.mean(np.array(before) == 2), (before, after)    # 2: c
