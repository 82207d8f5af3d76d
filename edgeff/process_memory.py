"""The process's own memory: resident now, its peak, and the runtime a budget counts.

The runtime is what the process holds before the data and the arena: interpreter,
NumPy, Numba and the loaded kernels. Numba's compiler (LLVM, in llvmlite's shared
library) links the cached kernels and is not used again while they run, yet the code
it ran to link them stays resident: 66 MiB of the quick job's 148 MiB runtime on
x86_64 (llvmlite 0.50). `runtime_bytes` asks the kernel to reclaim those pages first.
"""

import ctypes
import os
import resource
import sys

MADV_PAGEOUT = 21     # Linux 5.4+, the same number on x86_64 and arm64


def peak_rss_bytes():
    """This process image's peak resident memory: /proc's VmHWM where there is one. Not
    getrusage's ru_maxrss, which Linux carries over exec from the image before it, so a
    process started by a large one (a test runner forking it) would report the parent's peak."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux reports KiB


def peak_rss_mib():
    return peak_rss_bytes() / 2**20


def rss_bytes():
    """Resident memory now (Linux /proc), or the peak so far where /proc is absent."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux reports KiB


def rss_mib():
    return rss_bytes() / 2**20


def compiler_ranges(maps="/proc/self/maps"):
    """(start, end) of every read-only mapping of llvmlite's shared library (LLVM's code and
    constants) in a /proc maps file; lines that are not mappings are passed over, and a file
    that cannot be read gives []."""
    ranges = []
    try:
        with open(maps, errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return ranges
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[1][:2] not in ("r-", "--"):
            continue
        if not os.path.basename(fields[5].strip()).startswith("libllvmlite"):
            continue
        try:
            start, end = (int(a, 16) for a in fields[0].split("-"))
        except ValueError:
            continue
        if start < end:
            ranges.append((start, end))
    return ranges


def page_out(ranges):
    """Ask the kernel to reclaim the resident pages in [(start, end)] (madvise MADV_PAGEOUT). The
    advice never changes what a page holds: a file page touched again is read back from its file.
    Returns the bytes advised; 0 off Linux or where the kernel does not know the advice (older
    than 5.4). Pages another process also maps stay: the kernel leaves them to it."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    done = 0
    for start, end in ranges:
        if madvise(start, end - start, MADV_PAGEOUT) != 0:
            break
        done += end - start
    return done


def release_compiler_pages():
    """Page out LLVM's read-only mappings (its code and constants): the kernels are linked and
    training does not call into it again. Returns the bytes advised."""
    return page_out(compiler_ranges())


def file_bytes(ranges, smaps="/proc/self/smaps"):
    """Resident bytes that are the file's own pages (Rss - Anonymous: its page cache, clean, or dirty
    while a freshly installed library is still being written back) of the mappings that start where
    the given (start, end) ranges start; the pages the loader relocated are anonymous copies, the
    process's own, and stay out. 0 when the smaps file cannot be read."""
    starts, total, counting = {start for start, _ in ranges}, 0, False
    try:
        with open(smaps, errors="replace") as f:
            for line in f:
                head = line.split(maxsplit=1)
                if not head:
                    continue
                if head[0].endswith(":"):
                    if counting and head[0] in ("Rss:", "Anonymous:"):
                        total += int(line.split()[1]) * 1024 * (1 if head[0] == "Rss:" else -1)
                    continue
                start = head[0].partition("-")[0]
                counting = all(c in "0123456789abcdef" for c in start) and start != "" and int(start, 16) in starts
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, total)


def runtime_bytes():
    """The runtime a memory budget counts: resident memory once the kernels are ready, less the pages
    of LLVM's read-only mappings that are its file's, released first (call it after the warm-up,
    before the data is loaded). Where they stay resident (another process that maps them too, a
    parent that linked kernels, keeps them; a library pip has just written is not yet written back,
    its pages dirty), they are still not this process's to need; the pages the loader relocated count."""
    release_compiler_pages()
    return max(0, rss_bytes() - file_bytes(compiler_ranges()))
