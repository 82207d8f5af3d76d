"""Crash-safe file writing (temp name in the same directory, fsync, rename) and output
locations checked before any work is done."""

import errno
import hashlib
import json
import os
import stat
import tempfile

import numpy as np

from .errors import EdgeFFError, UsageError

CHUNK = 1 << 20            # bytes per read when streaming files and downloads
MAX_JSON = 16 << 20        # bytes: edgeff's own JSON files (metrics, tunings, records) are KiB


def parse_json(data):
    """The value of JSON text (str or bytes) read as untrusted: ValueError when it is not UTF-8,
    not strict JSON (NaN, Infinity) or nested deeper than the parser goes (a RecursionError
    otherwise, which no caller expects of a file)."""
    try:
        return json.loads(data, parse_constant=_not_a_number)
    except RecursionError:
        raise ValueError("nested deeper than the parser goes") from None


def _not_a_number(token):
    raise ValueError(f"{token} is not a JSON number")


def open_regular(path):
    """open(path, "rb") of a regular file; ValueError for anything else. A device (/dev/zero) never
    ends and a FIFO blocks until something writes to it, so a path from outside that names one
    (a symlink in a run directory, say) is refused. The opened file is checked, not the path, and
    opening does not wait for a FIFO's writer (O_NONBLOCK; a regular file reads as usual)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file (a device, a pipe or a directory)")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_json(path, limit=MAX_JSON):
    """parse_json of a regular file (open_regular); ValueError also when it is longer than limit bytes
    (read no further); OSError as open and read raise it."""
    with open_regular(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"longer than {limit:,} bytes")
    return parse_json(data)


def atomic_write(path, write):
    """Call write(fileobj) on a temp file beside `path`, fsync it, then rename over `path`.

    A crash or error at any point leaves either the old file or the new one under
    `path`, never a half-written one.
    """
    atomic_write_files({path: write})


def atomic_write_text(path, text):
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def npz_writer(arrays):
    """write(fileobj) for atomic_write: the arrays as one uncompressed .npz, written straight to the file
    (no copy of the arrays in memory: a 784-2000x4 model is 52 MiB)."""
    def write(f):
        np.savez(f, **arrays)
    return write


def atomic_write_files(writers):
    """atomic_write for several files as one: {path: write(fileobj)}. Every file is written to
    a temp name and fsynced before any is renamed, so a failure (a full disk) leaves none of
    the new files, only the old ones."""
    temps = {}
    try:
        for path, write in writers.items():
            path = os.fspath(path)
            fd, temps[path] = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                                               dir=os.path.dirname(os.path.abspath(path)))
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        for path, tmp in temps.items():
            os.replace(tmp, path)
    except BaseException:
        for tmp in temps.values():
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        raise
    for directory in {os.path.dirname(os.path.abspath(p)) for p in temps}:
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_error(path, exc, kept="nothing was written"):
    """The one-line EdgeFFError for an OSError met writing `path`."""
    why = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror or str(exc)
    return EdgeFFError(f"could not write {path}: {why}; {kept}")


def _probe(directory):
    """Make and remove a file in `directory`: OSError where permissions, a read-only or a pseudo
    file system refuse it."""
    fd, tmp = tempfile.mkstemp(prefix=".edgeff-probe-", dir=directory)
    os.close(fd)
    os.unlink(tmp)


def make_output_dir(path, flag):
    """Create directory `path` (and missing parents) and prove a file can be made in it, before
    any work; returns the directories made here, which remove_made_dirs undoes."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag} {path}: exists and is not a directory; choose another place")
    missing, parent = [], os.path.abspath(path)
    while not os.path.isdir(parent):
        missing.insert(0, parent)
        parent = os.path.dirname(parent)
    made = []
    try:
        for d in missing:
            os.mkdir(d)
            made.append(d)
        _probe(path)
    except OSError as exc:
        remove_made_dirs(made)
        raise UsageError(f"{flag} {path}: cannot write there ({exc.strerror}); choose another place") from None
    return made


def remove_made_dirs(made):
    """Remove the directories make_output_dir made, deepest first, as long as they are empty."""
    for d in reversed(made):
        try:
            os.rmdir(d)
        except OSError:
            return


def check_output_file(path, flag):
    """`path` can be written as a new regular file (or over one) before any work is done."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or (os.path.exists(path) and not os.path.isfile(path)):
        raise UsageError(f"{flag} {path}: exists and is not a regular file; choose another name")
    if not os.path.isdir(directory):
        raise UsageError(f"{flag} {path}: the directory {directory} does not exist; create it first")
    try:
        _probe(directory)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write there ({exc.strerror}); choose another place") from None


def sha256_file(path, chunk=CHUNK):
    """The sha256 hex digest of a regular file (open_regular), read a chunk at a time."""
    h = hashlib.sha256()
    with open_regular(path) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
