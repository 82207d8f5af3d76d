"""The runtime a budget counts: LLVM's pages are paged out once the kernels are linked, what the
pages hold never changes, and the kernels and Numba's compiler work as before after it."""

import hashlib
import mmap
import os
import subprocess
import sys

import numpy as np
import pytest

from edgeff.process_memory import file_bytes, compiler_ranges, page_out

LIB = "/venv/lib/python3.11/site-packages/llvmlite/binding/libllvmlite.so"


def test_the_compiler_ranges_are_llvmlites_read_only_mappings_and_junk_is_passed_over(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text(
        f"7f0000000000-7f0000001000 r--p 00000000 08:01 7 {LIB}\n"
        f"7f0000001000-7f0000003000 r-xp 00001000 08:01 7 {LIB}\n"
        f"7f0000003000-7f0000004000 rw-p 00003000 08:01 7 {LIB}\n"              # its data: left alone
        f"7f0000004000-7f0000005000 r-xp 00000000 08:01 8 /x/libllvmlite-old/libc.so.6\n"
        f"7f0000005000-7f0000006000 r-xp 00000000 08:01 9 /usr/lib/libc.so.6\n"
        f"7f0000006000-7f0000007000 r-xp 00000000 00:00 0 \n"                   # anonymous
        f"zz-yy r-xp 00000000 08:01 7 {LIB}\n"                                  # junk
        f"7f0000009000-7f0000008000 r-xp 00000000 08:01 7 {LIB}\n"              # end before start
        f"7f000000a000 r-xp 00000000 08:01 7 {LIB}\n"
        "\n\x00\xff garbage\n"
        f"7f000000b000-7f000000c000 r--p 00000000 08:01 7 {LIB} (deleted)\n")
    assert compiler_ranges(maps) == [(0x7f0000000000, 0x7f0000001000), (0x7f0000001000, 0x7f0000003000),
                                     (0x7f000000b000, 0x7f000000c000)]
    assert compiler_ranges(tmp_path / "missing") == []


def test_file_bytes_sum_the_file_pages_of_the_mappings_asked_for_and_junk_is_passed_over(tmp_path):
    smaps = tmp_path / "smaps"
    smaps.write_text(
        f"7f0000000000-7f0000004000 r-xp 00000000 08:01 7 {LIB}\nSize: 16 kB\nRss: 12 kB\nPss: 6 kB\n"
        "Shared_Clean: 4 kB\nShared_Dirty: 4 kB\nPrivate_Clean: 4 kB\nPrivate_Dirty: 0 kB\nAnonymous: 0 kB\n"
        "7f0000004000-7f0000008000 r--p 00000000 08:01 9 /usr/lib/libc.so.6\nRss: 16 kB\nShared_Clean: 16 kB\n"
        f"7f0000008000-7f000000c000 r--p 00004000 08:01 7 {LIB}\nRss: 8 kB\nPrivate_Clean: 4 kB\n"
        "Private_Dirty: 4 kB\nAnonymous: 4 kB\n"                   # relocated: the process's own copy, counted
        "zz-yy r--p 0 0 0 junk\nRss: 999 kB\n\nRss: x kB\n")
    # 12 kB of the first (dirty in the page cache or not: the file's) and 8 - 4 of the third
    assert file_bytes([(0x7f0000000000, 0), (0x7f0000008000, 0)], smaps) == 16 * 1024
    assert file_bytes([], smaps) == 0 and file_bytes([(1, 2)], tmp_path / "missing") == 0


def test_the_runtime_leaves_out_llvms_pages_even_where_another_process_keeps_them_resident():
    """This process links the kernels too, so the LLVM pages a child touched are mapped twice and
    the child's release cannot drop them: its runtime still leaves them out (a test that planned
    a budget from a child's runtime saw it 66 MiB higher inside the test suite than from a shell)."""
    from edgeff.train import warm_up
    warm_up()
    assert file_bytes(compiler_ranges()) > 10 * 2**20
    code = ("from edgeff.train import warm_up; warm_up()\n"
            "from edgeff.process_memory import runtime_bytes, rss_bytes, file_bytes, compiler_ranges\n"
            "print(runtime_bytes(), rss_bytes(), file_bytes(compiler_ranges()))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    runtime, rss, llvm = map(int, r.stdout.split())
    assert llvm > 10 * 2**20                                 # kept resident: this process maps them too
    assert 20 * 2**20 < runtime <= rss - llvm + 2**20


def mapping_rss_kib(address):
    """Resident KiB of this process's mapping that starts at address (/proc/self/smaps)."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):
                inside = int(first.split("-")[0], 16) == address
            elif inside and first == "Rss:":
                return int(line.split()[1])
    raise AssertionError(f"no mapping at {address:#x}")


def fstype(path):
    """The type of the file system holding path (/proc/self/mounts: the longest mount point above it)."""
    best, kind = "", ""
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            point = fields[1].replace("\\040", " ")
            if (str(path) + "/").startswith(point.rstrip("/") + "/") and len(point) >= len(best):
                best, kind = point, fields[2]
    return kind


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise(MADV_PAGEOUT) is Linux's")
def test_paging_out_drops_a_read_only_file_mapping_from_memory_and_keeps_what_it_holds(tmp_path):
    if fstype(tmp_path) in ("tmpfs", "ramfs"):
        pytest.skip(f"{tmp_path} is in memory: its pages cannot go back to a disk")
    path = tmp_path / "pages.bin"
    data = np.random.default_rng(0).integers(0, 256, 8 << 20, np.uint8).tobytes()
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())                     # clean pages: the kernel may drop them without writing
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        view = np.frombuffer(m, np.uint8)
        start = view.ctypes.data
        assert int(view[::4096].sum()) >= 0      # touch every page
        before = mapping_rss_kib(start)
        assert before >= 8 << 10
        advised = page_out([(start, start + len(view))])
        if advised == 0:
            pytest.skip("this kernel does not know MADV_PAGEOUT (Linux 5.4+)")
        assert advised == 8 << 20
        assert mapping_rss_kib(start) < before // 4
        assert hashlib.sha256(view).digest() == hashlib.sha256(data).digest()
        del view


def test_after_the_release_the_kernels_give_their_numpy_twins_results_and_numba_still_compiles():
    code = """if True:
        import numpy as np, numba
        from edgeff.process_memory import compiler_ranges, release_compiler_pages, runtime_bytes
        from edgeff.train import warm_up
        from kernels import dense
        warm_up()
        assert compiler_ranges(), "llvmlite's mappings not found"
        runtime_bytes()                                   # releases LLVM's pages, as train does
        rng = np.random.default_rng(1)
        z, x = rng.standard_normal((5, 7), np.float32), rng.standard_normal((5, 3), np.float32)
        gw, gb = np.zeros((3, 7), np.float32), np.zeros(7, np.float32)
        dense.local_grad(x, z, gw, gb)
        assert np.allclose(gw, x.T @ z, rtol=1e-5, atol=1e-5) and np.allclose(gb, z.sum(0), rtol=1e-5, atol=1e-5)

        @numba.njit
        def cube_sum(a):                                  # a new compile: LLVM's pages come back
            s = 0.0
            for v in a:
                s += v * v * v
            return s
        a = rng.standard_normal(100)
        assert np.isclose(cube_sum(a), (a ** 3).sum())
        print(release_compiler_pages() > 0 or "no pageout")
    """
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() in ("True", "no pageout")


@pytest.mark.parametrize("options", [
    ["--model", "784-200-200", "--classifier", "goodness"],
    ["--model", "784-200-200", "--optimizer", "sgd", "--schedule", "layerwise", "--in-turn"],
    ["--model", "conv-small"],
    ["--model", "conv-small", "--algo", "ffcl", "--feedback-steps", "1"],
    ["--model", "784-200-200", "--algo", "ffcl", "--separate-labels", "--late-labels"],
    ["--model", "784-200-200", "--algo", "ff-unsup", "--head-epochs", "1"],
    ["--model", "784-100-100", "--algo", "uff", "--learner", "ae"],
], ids=["dense", "sgd-layerwise", "conv", "conv-feedback", "ffcl", "ff-unsup", "uff"])
def test_every_kernel_a_run_uses_is_ready_before_the_runtime_is_measured(tmp_path, options):
    """After 'kernels ready' (LLVM's pages released, the runtime measured) no kernel is compiled or
    loaded from Numba's cache: that would bring LLVM's pages back in the middle of training."""
    env = dict(os.environ, NUMBA_DEBUG_CACHE="1", PYTHONUNBUFFERED="1")   # Numba's lines on stdout, in order
    r = subprocess.run([sys.executable, "-m", "edgeff.cli", "train", "--limit-train", "300", "--epochs", "1",
                        *options, "--out", str(tmp_path / "run")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:]
    lines = r.stdout.splitlines()
    ready = next(i for i, line in enumerate(lines) if line.startswith("kernels ready"))
    late = [line for line in lines[ready:] if line.startswith("[cache] data")]
    assert late == [], f"kernels loaded or compiled during training: {late}"
