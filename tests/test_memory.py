"""The memory planner and arena: no live buffers share bytes, greedy never loses to
linear, layerwise needs less, the training loop allocates nothing, budgets are
checked before training."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from edgeff.config import TrainConfig
from edgeff.errors import UsageError
from edgeff.layers.net import training_layout
from edgeff.memory import ALIGN, Arena, Buffer, Plan, parse_bytes, plan_greedy, plan_linear
from edgeff.budget import plan_for
from edgeff.cgroup import machine_memory
from run_cli import edgeff, one_line_error

HERE = os.path.dirname(__file__)


def assert_no_live_overlap(plan):
    placed = [(b, plan.offsets[b.name]) for b in plan.buffers]
    for i, (a, oa) in enumerate(placed):
        assert oa % ALIGN == 0 and oa + a.nbytes <= plan.arena_bytes
        for b, ob in placed[i + 1:]:
            if a.overlaps(b):
                assert oa + a.nbytes <= ob or ob + b.nbytes <= oa, (a, b)


buffers = st.lists(st.tuples(st.integers(1, 5000), st.integers(0, 20), st.integers(0, 6)), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(buffers)
def test_greedy_plan_never_overlaps_live_buffers_and_never_loses_to_linear(specs):
    bufs = [Buffer(f"b{i}", (n,), "float32", first, first + span, "activations") for i, (n, first, span) in enumerate(specs)]
    greedy, linear = plan_greedy(bufs), plan_linear(bufs)
    assert_no_live_overlap(greedy)
    assert_no_live_overlap(linear)
    assert greedy.arena_bytes <= linear.arena_bytes == greedy.naive_bytes
    # never below the most bytes live at one step
    peak = max(sum(-(-b.nbytes // ALIGN) * ALIGN for b in bufs if b.first <= t <= b.last) for t in range(27))
    assert greedy.arena_bytes >= peak


@pytest.mark.parametrize("schedule", ["simultaneous", "layerwise"])
@pytest.mark.parametrize("negatives", ["hard", "random"])
def test_training_plans_are_sound(schedule, negatives):
    bufs = training_layout(["dense"] * 3, [300, 200, 100], 794, 10, 64, schedule, negatives == "hard", True, "adam").buffers
    plan = plan_greedy(bufs)
    assert_no_live_overlap(plan)
    assert plan.arena_bytes < plan.naive_bytes


def test_layerwise_needs_less_than_simultaneous():
    sim = plan_for(TrainConfig(model="784-2000-2000-2000-2000", schedule="simultaneous"), 784, 10)
    lw = plan_for(TrainConfig(model="784-2000-2000-2000-2000", schedule="layerwise"), 784, 10)
    # layerwise keeps one layer's optimiser state and gradient at a time
    assert lw.arena_bytes < 0.75 * sim.arena_bytes


def test_parse_bytes():
    assert parse_bytes("48MiB") == 48 * 2**20 and parse_bytes("1GB") == 10**9 and parse_bytes("512") == 512
    assert parse_bytes("1.5 KiB") == 1536 and parse_bytes("2kb") == 2000
    for bad in ("", "MiB", "-4MiB", "4XB", "0"):
        with pytest.raises(UsageError, match="bad memory size"):
            parse_bytes(bad)


def retained_limit(threaded):
    """Bytes of Python objects a loop may leave behind. Python 3.10 keeps a spare frame per function;
    when a conv's threads run the same function at once, which frame stays the spare changes, so a
    few frames (each loop, a bounded few KiB, not growing with batches) show as retained there."""
    return 16 * 1024 if threaded and sys.version_info < (3, 11) else 4 * 1024


def test_training_loop_allocates_nothing():
    """Kernels allocate nothing inside (NRT counts only their argument wrappers); a batch's
    NRT count does not grow with the batch size and is all freed; no array reaches the
    Python heap (tracemalloc). In a fresh process: NUMBA_NRT_STATS must be set first."""
    env = dict(os.environ, NUMBA_NRT_STATS="1")
    r = subprocess.run([sys.executable, os.path.join(HERE, "zero_alloc_probe.py")], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [json.loads(line) for line in r.stdout.strip().splitlines()]
    kernels = [d for d in lines if "kernel" in d]
    loops = [d for d in lines if "loop" in d]
    assert len(kernels) == 26 and len(loops) == 14
    for d in kernels:
        assert d["nrt_alloc"] == d["array_args"], d
    conv_loops = [d for d in lines if "conv_loop" in d]
    assert len(conv_loops) == 2
    for d in loops + conv_loops:
        small, large = d["runs"]
        assert "conv_loop" in d or small["nrt_alloc"] == large["nrt_alloc"], d    # nothing sized by the batch
        for run in d["runs"]:
            assert run["nrt_unfreed"] == 0, run
            assert run["traced_peak_growth"] < 32 * 1024, run     # Python objects only: no array allocated
            assert run["traced_growth"] < retained_limit("conv_loop" in d), run


def process_parts(*args):
    """(runtime, data, arena) bytes of `edgeff plan`'s report: the budget covers all three."""
    report = json.loads(edgeff("plan", *args, "--json").stdout)
    return report["runtime_bytes"], report["data_bytes"], report["arena_bytes"]


def test_budget_too_small_is_refused_before_training(tmp_path):
    runtime, data, arena = process_parts("--model", "784-1000-1000")
    assert 50 * 2**20 < runtime < 1 << 30           # measured: interpreter, NumPy, Numba, the kernels
    budget = runtime + data + arena - 4 * 2**20      # the whole process: a smaller batch fits, not 256
    r = edgeff("train", "--model", "784-1000-1000", "--memory-budget", f"{budget}B", "--epochs", "1",
               "--out", tmp_path / "r")
    one_line_error(r, "largest buffers: ", "would fit", "runtime ", "arena ", "data ")
    assert not (tmp_path / "r").exists()
    r = edgeff("train", "--model", "784-1000-1000", "--memory-budget", f"{runtime + data}B", "--out", tmp_path / "r")
    one_line_error(r, "no batch size fits", "weights, optimiser state alone", "the runtime")


def test_auto_batch_size_and_dry_run(tmp_path):
    runtime, data, _ = process_parts("--model", "784-1000-1000")
    budget = runtime + data + 28 * 2**20
    r = edgeff("plan", "--model", "784-1000-1000", "--memory-budget", f"{budget}B", "--batch-size", "auto", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    held = report["runtime_bytes"] + report["data_bytes"]
    assert report["fits"] and report["arena_bytes"] + held <= budget
    bigger = plan_for(TrainConfig(model="784-1000-1000", batch_size=report["batch_size"] + 1), 784, 10)
    assert bigger.arena_bytes + held > budget   # it is the largest that fits
    r = edgeff("train", "--model", "784-1000-1000", "--dry-run", "--out", tmp_path / "r")
    assert r.returncode == 0 and "arena" in r.stdout and "w0" in r.stdout and "process: runtime" in r.stdout
    assert not (tmp_path / "r").exists()


ROWS = "20000"


def test_plan_shows_whether_layerwise_caches_the_frozen_layer_or_streams():
    """The cache when the budget has room, at float16 when only that fits, streaming when neither does
    or with --shift; none to choose when no layer is frozen. The cache is a planned buffer, counted in
    the budget. Enough rows that each cache is far larger than what the planner can lay over the
    first phase's buffers (it reuses their bytes once layer 1 is frozen)."""
    def plan(*args):
        r = edgeff("plan", "--model", "784-300-200", "--limit-train", ROWS, "--batch-size", "100", *args, "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    cached = plan("--schedule", "layerwise")
    assert cached["frozen_input"] == "cache" and cached["cache_bytes"] == int(ROWS) * (300 + 1) * 4
    sizes = {b["name"]: b for b in cached["buffers"]}
    assert sizes["cache/u0"]["shape"] == [int(ROWS), 300] and sizes["cache/inv"]["shape"] == [int(ROWS)]
    assert sizes["cache/u0"]["first"] > 0                    # from the second phase: layer 1 is frozen by then
    needs = cached["runtime_bytes"] + cached["arena_bytes"] + cached["data_bytes"]
    noise = 2**20                                            # the runtime is measured anew by each process
    half = plan("--schedule", "layerwise", "--memory-budget", str(needs - noise))
    assert half["frozen_input"] == "cache-float16" and half["fits"]
    assert half["cache_bytes"] == int(ROWS) * 300 * 2 + int(ROWS) * 4 + 100 * 300 * 2      # + a batch's rows as stored
    sizes = {b["name"]: b for b in half["buffers"]}
    assert sizes["cache/u0"]["dtype"] == "float16" and sizes["cache/rows"]["shape"] == [100, 300]
    half_needs = half["runtime_bytes"] + half["arena_bytes"] + half["data_bytes"]
    assert half_needs < needs - 2 * noise
    stream = plan("--schedule", "layerwise", "--memory-budget", str(half_needs - noise))
    assert stream["frozen_input"] == "stream" and stream["fits"]
    assert "cache/u0" not in {b["name"] for b in stream["buffers"]}
    assert stream["arena_bytes"] < cached["arena_bytes"] - 2 * noise
    assert plan("--schedule", "layerwise", "--memory-budget", str(needs + noise))["frozen_input"] == "cache"
    assert plan("--schedule", "layerwise", "--shift", "1")["frozen_input"] == "stream"
    assert plan()["frozen_input"] is None
    r = edgeff("plan", "--model", "784-300-200", "--limit-train", ROWS, "--schedule", "layerwise")
    assert "frozen layers: cache (" in r.stdout, r.stdout
    r = edgeff("plan", "--model", "784-300-200", "--limit-train", ROWS, "--batch-size", "100", "--schedule",
               "layerwise", "--memory-budget", str(needs - noise))
    assert "frozen layers: cache at float16" in r.stdout, r.stdout


def test_a_resumed_run_keeps_its_runs_choice():
    """Cache, float16 cache and stream differ in the last bits, so a checkpoint's choice wins over the
    budget's; the budget decides to the byte."""
    import numpy as np
    from edgeff.budget import choose_frozen_input, data_bytes
    from edgeff.data import Dataset
    x, y = np.zeros((500, 40), np.uint8), np.zeros(500, np.int32)
    ds = Dataset("z", x, y, x[:5], y[:5], 10, 1 / 255, None, tuple("0123456789"), "test")
    cfg = TrainConfig(model="40-30-20", schedule="layerwise", batch_size=50).validate()
    stream = plan_for(cfg, 40, 10)
    assert choose_frozen_input(cfg, ds, 40, stream, 2**30)[1] == "cache"
    assert choose_frozen_input(cfg, ds, 40, stream, 2**30, resumed="stream") == (stream, "stream", 500 * 31 * 4)
    tight = stream.arena_bytes + x.nbytes * 2 + y.nbytes * 2
    assert choose_frozen_input(cfg, ds, 40, stream, tight)[1] == "stream"
    assert choose_frozen_input(cfg, ds, 40, stream, tight, resumed="cache")[1] == "cache"
    assert choose_frozen_input(cfg, ds, 40, stream, tight, resumed="cache-float16")[1] == "cache-float16"
    assert choose_frozen_input(cfg, ds, 40, stream, 2**30, resumed="cache-float16")[2] == 500 * 30 * 2 + 500 * 4 + 50 * 30 * 2
    cached, _, _ = choose_frozen_input(cfg, ds, 40, stream, 2**30)
    half, _, _ = choose_frozen_input(cfg, ds, 40, stream, 2**30, resumed="cache-float16")
    runtime, held = 100 * 2**20, data_bytes(ds)                # the budget covers the runtime too, to the byte
    exact, half_exact = runtime + cached.arena_bytes + held, runtime + half.arena_bytes + held
    assert half_exact < exact
    assert choose_frozen_input(cfg, ds, 40, stream, exact, runtime=runtime)[1] == "cache"
    assert choose_frozen_input(cfg, ds, 40, stream, exact - 1, runtime=runtime)[1] == "cache-float16"
    assert choose_frozen_input(cfg, ds, 40, stream, half_exact, runtime=runtime)[1] == "cache-float16"
    assert choose_frozen_input(cfg, ds, 40, stream, half_exact - 1, runtime=runtime)[1] == "stream"
    in_turn = dataclasses.replace(cfg, in_turn=True)         # a budget that tight has no room for a cache
    assert choose_frozen_input(in_turn, ds, 40, plan_for(in_turn, 40, 10), 2**30)[1] == "stream"


def test_buffer_sizes_are_exact_at_any_size():
    # numpy's int64 product wrapped (2**82 -> 0): a plan could claim to fit when it did not
    assert Buffer("w", (2**40, 2**40), "float32", 0, 0, "weights").nbytes == 2**82


def test_an_arena_that_cannot_be_allocated_is_one_user_error():
    for size in (2**62, 10**25):                 # MemoryError; ValueError (more than an array can index)
        with pytest.raises(UsageError, match="cannot allocate the .* training arena on this machine"):
            Arena(Plan([], {}, size))


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "99999999999999"], "but this machine has"),
    (["--model", "784-99999999999"], "no batch size fits: this machine has"),
])
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_plan_larger_than_this_machine_is_refused_before_allocating(tmp_path, args, message, dry_run):
    """Without --memory-budget the limit is the machine's physical memory, for train and --dry-run alike."""
    assert machine_memory() > 2**20
    r = edgeff("train", *args, *(["--dry-run"] if dry_run else []), "--out", tmp_path / "r")
    one_line_error(r, message, "smaller --model" if "--model" in args else "would fit")
    assert not (tmp_path / "r").exists()


def test_peak_rss_is_this_process_not_the_one_that_started_it():
    """A process started by a large one (this test runner holds 300 MiB more) reports its own peak:
    getrusage's ru_maxrss carries the parent's over fork and exec, /proc's VmHWM does not."""
    ballast = bytearray(300 * 2**20)
    ballast[::4096] = b"\x01" * len(ballast[::4096])          # touched: resident
    r = subprocess.run([sys.executable, "-c", "from edgeff.process_memory import peak_rss_mib; print(peak_rss_mib())"],
                       capture_output=True, text=True, timeout=120, check=True)
    child_peak = float(r.stdout)
    with open("/proc/self/status") as f:
        parent_rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    assert child_peak < parent_rss - 250, (child_peak, parent_rss)
    del ballast
