"""--memory-budget against a real kernel memory limit: `edgeff train` runs inside a memory cgroup made
for the test (root only) with the budget equal to the limit and finishes; a budget above the limit is
refused before training. Reading the limit (cgroup v1 and v2) is checked on crafted /proc files too."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from edgeff.cgroup import cgroup_memory_limit, memory_cgroup
from run_cli import ok, one_line_error

MiB = 2**20


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_lowest_limit_on_the_way_to_the_mount_is_read(tmp_path, version):
    fs, name = tmp_path / "cg", {"v1": "memory.limit_in_bytes", "v2": "memory.max"}[version]
    line = "4:memory:/jobs/a/b" if version == "v1" else "0::/jobs/a/b"
    fstype = "cgroup cgroup rw,memory" if version == "v1" else "cgroup2 cgroup2 rw"
    write(tmp_path / "proc" / "cgroup", f"9:pids:/\n{line}\n")
    write(tmp_path / "proc" / "mountinfo", f"31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
                                           f"35 31 0:32 /jobs {fs} rw,relatime - {fstype}\n")   # mounted at /jobs
    no_limit = "9223372036854771712" if version == "v1" else "max"
    write(fs / "a" / "b" / name, no_limit + "\n")
    write(fs / "a" / name, "268435456\n")
    write(fs / name, "536870912\n")
    assert memory_cgroup(tmp_path / "proc") == (str(fs / "a" / "b"), str(fs), name)
    assert cgroup_memory_limit(tmp_path / "proc") == (268435456, str(fs / "a" / name))
    write(fs / "a" / name, no_limit + "\n")
    assert cgroup_memory_limit(tmp_path / "proc") == (536870912, str(fs / name))
    write(fs / name, no_limit + "\n")
    assert cgroup_memory_limit(tmp_path / "proc") is None
    write(tmp_path / "proc" / "cgroup", "9:pids:/\n")                          # no memory hierarchy
    assert memory_cgroup(tmp_path / "proc") is None


def test_malformed_and_misleading_proc_files_neither_crash_nor_climb_out_of_the_mount(tmp_path):
    fs = tmp_path / "cg"
    write(fs / "memory.limit_in_bytes", "536870912\n")
    write(tmp_path / "jobs-other" / "x" / "memory.limit_in_bytes", "1\n")   # beside the mount, not in it
    write(tmp_path / "proc" / "cgroup", "4:memory:/jobs-other/x\n")         # shares only a string prefix
    mount = f"35 31 0:32 /jobs {fs} rw,relatime - cgroup cgroup rw,memory\n"
    for junk in ("\n", "35 31 0:32\n", "35 31 0:32 / /x rw - \n", "- - - - - - -\n"):
        write(tmp_path / "proc" / "mountinfo", junk + mount)
        assert cgroup_memory_limit(tmp_path / "proc") == (536870912, str(fs / "memory.limit_in_bytes")), junk


@pytest.fixture
def memory_limit_cgroup():
    """(a new memory cgroup under this process's own, its limit file); removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("making a cgroup needs root")
    found = memory_cgroup()
    if found is None:
        pytest.skip("no memory cgroup on this machine")
    parent, _, limit_file = found
    cgroup = os.path.join(parent, f"edgeff-test-{os.getpid()}")
    try:
        os.mkdir(cgroup)
    except OSError as exc:
        pytest.skip(f"cannot make a memory cgroup under {parent}: {exc}")
    yield cgroup, limit_file
    for _ in range(50):                    # the processes inside have exited; the kernel lets go shortly
        try:
            os.rmdir(cgroup)
            return
        except OSError:
            time.sleep(0.1)


def edgeff_inside(cgroup, *args):
    """A real `edgeff` run whose process joins `cgroup` before it starts."""
    command = [sys.executable, "-m", "edgeff.cli", *map(str, args)]
    return subprocess.run(["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, *command],
                          capture_output=True, text=True, timeout=600)


def test_a_run_inside_a_memory_limit_fits_a_budget_equal_to_it(tmp_path, memory_limit_cgroup):
    cgroup, limit_file = memory_limit_cgroup
    limit = 320 * MiB
    with open(os.path.join(cgroup, limit_file), "w") as f:
        f.write(str(limit))
    rng = np.random.default_rng(0)
    data = tmp_path / "digits.npz"
    np.savez(data, x_train=rng.integers(0, 256, (3000, 784), np.uint8), y_train=rng.integers(0, 10, 3000),
             x_test=rng.integers(0, 256, (500, 784), np.uint8), y_test=rng.integers(0, 10, 500))
    run = ["train", "--dataset", data, "--model", "784-200-200", "--epochs", "1", "--quiet", "--json"]

    report = ok(edgeff_inside(cgroup, *run, "--memory-budget", f"{limit}B", "--out", tmp_path / "fits"))
    peak_file = os.path.join(cgroup, "memory.max_usage_in_bytes" if limit_file.startswith("memory.limit")
                             else "memory.peak")
    if os.path.exists(peak_file):
        with open(peak_file) as f:
            assert int(f.read()) <= limit
    assert report["peak_rss_mib"] * MiB <= limit and (tmp_path / "fits" / "model.npz").exists()

    over = edgeff_inside(cgroup, *run, "--memory-budget", f"{limit + MiB}B", "--out", tmp_path / "over")
    one_line_error(over, "--memory-budget 321.0 MiB is more than this process may use", "320.0 MiB",
                   f"--memory-budget {limit}B or less")
    assert not (tmp_path / "over").exists()                        # refused before training

    plan = json.loads(edgeff_inside(cgroup, "plan", "--dataset", data, "--model", "784-200-200", "--json").stdout)
    assert plan["runtime_bytes"] + plan["arena_bytes"] + plan["data_bytes"] < limit
    too_big = edgeff_inside(cgroup, "plan", "--dataset", data, "--model", "784-20000-20000")
    one_line_error(too_big, "this process's cgroup allows 320.0 MiB")  # no budget: the cgroup's limit is the limit


def test_a_limit_below_what_linking_the_kernels_touched_holds_the_run_once_llvms_pages_are_released(
        tmp_path, memory_limit_cgroup):
    """The runtime a budget counts is measured after LLVM's pages are paged out: a limit just above
    runtime + arena + data, below the process's unconstrained peak, holds the whole run."""
    cgroup, limit_file = memory_limit_cgroup
    limit_path = os.path.join(cgroup, limit_file)
    with open(limit_path, "w") as f:
        f.write(str(320 * MiB))
    rng = np.random.default_rng(0)
    data = tmp_path / "digits.npz"
    np.savez(data, x_train=rng.integers(0, 256, (3000, 784), np.uint8), y_train=rng.integers(0, 10, 3000),
             x_test=rng.integers(0, 256, (500, 784), np.uint8), y_test=rng.integers(0, 10, 500))
    run = ["train", "--dataset", data, "--model", "784-200-200", "--epochs", "1", "--quiet", "--json"]
    free = ok(edgeff_inside(cgroup, *run, "--out", tmp_path / "free"))
    plan = json.loads(edgeff_inside(cgroup, "plan", "--dataset", data, "--model", "784-200-200", "--json").stdout)
    limit = (plan["runtime_bytes"] + plan["arena_bytes"] + plan["data_bytes"]) // MiB * MiB + 8 * MiB   # whole pages
    assert limit < free["peak_rss_mib"] * MiB, (plan, free["peak_rss_mib"])   # below the peak when nothing held it back
    with open(limit_path, "w") as f:
        f.write(str(limit))
    tight = ok(edgeff_inside(cgroup, *run, "--memory-budget", f"{limit}B", "--out", tmp_path / "tight"))
    assert tight["test_error"] == free["test_error"] and (tmp_path / "tight" / "model.npz").exists()
