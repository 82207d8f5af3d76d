"""What edgeff learn reads: labelled samples from a directory (.npz files, and images in per-label folders)
or from stdin records, each checked before any of it reaches the weights, and the journal of the files
already learned.

A labelled .npz holds x (rows (N, D), images (N, H, W[, C]), or one row or image) and y (N integer labels,
or one). uint8 values are pixels, multiplied by the run's input scale; float values are features as they
are (as edgeff infer reads them).

Stdin (or a serial line) carries records, one after another:
    b"EFL1"                      4 bytes: the record marker
    length                       4 bytes: unsigned little-endian, the payload's size (at most MAX_RECORD_BYTES)
    payload                      that many bytes: a labelled .npz file
End of input at a record boundary ends the stream. A broken record is rejected and the reader skips to
the next marker.
"""

import json
import math
import os
import struct
import time
import urllib.parse

import numpy as np

from .errors import DataError, ModelError, UsageError
from .fields import field
from .fileio import atomic_write_text, open_regular, parse_json
from .inputs import read_input
from .npzfile import NpzError, open_npz

MARKER = b"EFL1"
MAX_RECORD_BYTES = 64 << 20
JOURNAL = "learn-journal.jsonl"
IMAGE_TYPES = (".pgm", ".pnm", ".png")     # images in per-label folders (edgeff/inputs.py reads them)


class Rejected(Exception):
    """A whole file or record that cannot be learned from; the message says why, in a few words."""


def read_labelled(data, limit=MAX_RECORD_BYTES):
    """(x, y) of a labelled .npz given as bytes or a path, as stored; Rejected for anything unreadable."""
    try:
        with open_npz(data, limit) as z:
            missing = [k for k in ("x", "y") if k not in z.files]
            if missing:
                raise Rejected(f"has no {' or '.join(missing)} (holds {', '.join(z.files) or 'nothing'})")
            return z["x"], z["y"]
    except Rejected:
        raise
    except NpzError as exc:
        raise Rejected(str(exc)) from None
    except Exception as exc:   # zipfile's, numpy's and the OS's many ways of saying "not this"
        raise Rejected(f"not a readable .npz ({type(exc).__name__})") from None


class SampleCheck:
    """What a row must be for the run's net: `features` values, finite, small enough that its squared norm
    stays finite in float32, and a label 0..num_classes-1."""

    def __init__(self, features, num_classes, scale):
        self.features, self.num_classes, self.scale = features, num_classes, np.float32(scale)
        self.largest = math.sqrt(np.finfo(np.float32).max / features) / 4     # as data.validate bounds them

    def rows(self, x, y):
        """(float32 rows (n, D) of the samples that pass, int64 labels, rows rejected, why the first was);
        Rejected when the whole of it is unusable (dtype, shape, label count)."""
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype != np.uint8 and x.dtype.kind != "f":
            raise Rejected(f"x holds {x.dtype} values; give uint8 pixels or float features")
        if x.size == self.features:
            x = x.reshape(1, self.features)
        elif x.ndim < 2 or math.prod(x.shape[1:]) != self.features:
            raise Rejected(f"x has shape {x.shape}, not rows or images of the {self.features} features the net takes")
        y = y.reshape(-1) if y.ndim <= 1 else y
        if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(x):
            raise Rejected(f"y is {y.dtype} {y.shape}; give {len(x)} integer labels")
        if len(x) == 0:
            raise Rejected("holds no rows")
        if x.size * 4 > MAX_RECORD_BYTES:     # its float32 rows, made next: uint8 pixels grow 4x
            raise Rejected(f"{len(x):,} rows are more than {MAX_RECORD_BYTES >> 20} MiB as float32; split it into "
                           "smaller files")
        with np.errstate(over="ignore", invalid="ignore"):
            rows = x.reshape(len(x), self.features).astype(np.float32)
            if x.dtype == np.uint8:
                rows *= self.scale
            bad_value = ~(np.abs(rows) <= self.largest).all(axis=1)     # NaN fails the test too
        bad_label = (y < 0) | (y >= self.num_classes)
        bad = bad_value | bad_label
        why = None
        if bad.any():
            i = int(np.argmax(bad))
            why = (f"row {i}: " + ("NaN, Inf or a value beyond " + f"{self.largest:.3g}" if bad_value[i] else
                                   f"label {int(y[i])} outside the run's classes 0..{self.num_classes - 1}: "
                                   "room for new classes is made when training (label_names in its .npz)"))
        if why is None:                       # every row kept: no second copy
            return rows, y.astype(np.int64), 0, None
        keep = ~bad
        return np.ascontiguousarray(rows[keep]), y[keep].astype(np.int64), int(bad.sum()), why


def directory_files(directory, done):
    """The files of `directory` not in `done`, by name: its .npz files, and LABEL/IMAGE for the images in its
    per-label folders (a name starting with '.' is a file or folder being written). Symbolic links among
    them are listed too, for read_sample to reject: learn reads only what is inside `directory`."""
    def listed(path):
        try:
            return [n for n in os.listdir(path) if not n.startswith(".")]
        except OSError as exc:
            raise DataError(f"--from {path}: cannot list it ({exc.strerror})") from None
    names = []
    for n in listed(directory):
        path = os.path.join(directory, n)
        if n.endswith(".npz") and os.path.isfile(path) or os.path.islink(path) and os.path.isdir(path):
            names.append(n)
        elif os.path.isdir(path):
            names += [f"{n}/{m}" for m in listed(path) if os.path.splitext(m)[1].lower() in IMAGE_TYPES
                      and os.path.isfile(os.path.join(path, m))]
    return sorted(n for n in names if n not in done)


def read_sample(name, data, label_names):
    """(x, y) of one record's payload (bytes) or of the file `name` of a directory at path `data` (an .npz,
    or LABEL/IMAGE); Rejected for a symbolic link (learn reads only what is inside its directory) or
    anything unreadable."""
    if isinstance(data, bytes):
        return read_labelled(data)
    folder = os.path.dirname(name)
    if os.path.islink(data) or folder and os.path.islink(os.path.dirname(data)):
        raise Rejected("a symbolic link; edgeff learn reads only what is inside --from: copy it in")
    return read_image(data, folder, label_names) if folder else read_labelled(data)


def read_image(path, folder, label_names):
    """(x, y) of one image in a per-label folder: the folder names the label, one of the run's label names
    or a class number; Rejected for an unreadable image or an unknown folder."""
    if folder in label_names:
        label = label_names.index(folder)
    elif folder.isascii() and folder.isdigit():     # '0'-'9' only: str.isdigit holds for '²' too, which int refuses
        label = int(folder)                  # the row's check bounds it by the run's classes
    else:
        raise Rejected(f"its folder {folder!r} is neither one of the run's classes ({', '.join(label_names) or 'none named'}) "
                       "nor a class number")
    try:
        return read_input(path), np.array([label])
    except DataError as exc:
        raise Rejected(str(exc).removeprefix(f"{path}: ")) from None


def records(read):
    """(name, payload, None) of each record read through read(n) (which returns b"" at the end), or
    (name, None, why) of a broken one. After a missing marker or an impossible length it skips to the
    next marker (a serial line drops and flips bytes); a record cut short by the end is the last."""
    count, held = 0, b""
    while True:
        head = held + read(8 - len(held))
        held = b""
        if not head:
            return
        count += 1
        name = f"record {count}"
        if len(head) < 8:
            yield name, None, f"cut short ({len(head)} of 8 header bytes)"
            return
        (length,) = struct.unpack("<I", head[4:])
        if head[:4] != MARKER or length > MAX_RECORD_BYTES:
            held = _next_marker(head[1:], read)
            why = f"no {MARKER.decode()} marker" if head[:4] != MARKER else f"{length} bytes, more than {MAX_RECORD_BYTES}"
            yield name, None, f"{why}; skipped to the next record"
            continue
        payload = read(length)
        if len(payload) < length:
            yield name, None, f"cut short ({len(payload)} of {length} bytes)"
            return
        yield name, payload, None


def _next_marker(seen, read):
    """The bytes from the next marker on (b"" at the end), reading on past `seen` a byte at a time."""
    while True:
        at = seen.find(MARKER)
        if at >= 0:
            return seen[at:]
        more = read(1)
        if not more:
            return b""
        seen = seen[-(len(MARKER) - 1):] + more


def read_exactly(stream):
    """read(n) over a binary stream that may return fewer bytes (a pipe): all n, or fewer only at its end."""
    def read(n):
        parts, got = [], 0
        while got < n:
            part = stream.read(n - got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        return b"".join(parts)
    return read


def serial_reader(url, once, idle, stopping):
    """(port, read(n)) of a serial line: serial://PATH[?baud=N] (as edgeff deploy names one) or any pyserial
    URL (socket://HOST:PORT, rfc2217://...). read returns fewer than n bytes only once `stopping` is set or,
    with once, when no byte came for `idle` seconds; UsageError if the port cannot be opened."""
    import serial
    parts = urllib.parse.urlsplit(url)
    port, baud = url, 115200
    if parts.scheme == "serial":
        port = parts.path
        try:
            baud = int(urllib.parse.parse_qs(parts.query).get("baud", ["115200"])[0])
        except ValueError:
            raise UsageError(f"--from {url}: baud must be a whole number") from None
    try:
        line = serial.serial_for_url(port, baudrate=baud, timeout=min(idle, 0.2))
    except (serial.SerialException, ValueError) as exc:
        raise UsageError(f"--from {url}: cannot open the serial line ({exc})") from None

    def read(n):
        data, quiet_since = bytearray(), time.monotonic()
        while len(data) < n and not stopping:
            part = line.read(n - len(data))
            if part:
                data += part
                quiet_since = time.monotonic()
            elif once and time.monotonic() - quiet_since >= idle:
                break
        return bytes(data)
    return line, read


def record(payload):
    """payload as one stdin record (for producers written in Python, and the tests)."""
    return MARKER + struct.pack("<I", len(payload)) + payload


def read_journal(run_dir):
    """{file name: what learning it did} of the files a session learned (or rejected) in run_dir: one JSON
    line each, appended as a file ends. A crash can leave the last line cut short: it is ignored (that
    file's updates were not all checkpointed, so it is learned again)."""
    path = os.path.join(run_dir, JOURNAL)
    try:
        with open_regular(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ModelError(f"{path}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise ModelError(f"{path}: {exc}; remove it (and learn-checkpoint.npz) to learn every file again") from None
    files = {}
    for i, line in enumerate(lines):
        try:
            entry = parse_json(line)
        except ValueError:
            if i == len(lines) - 1:
                break
            raise ModelError(f"{path}: line {i + 1} is not JSON; remove the journal (and learn-checkpoint.npz) to "
                             "learn every file again") from None
        name = field(path, entry, "file", str)
        for key in ("rows", "rejected", "update"):
            field(path, entry, key, int, lambda v: v >= 0, "a whole number 0 or more")
        files[name] = {k: v for k, v in entry.items() if k != "file"}
    return files


def write_journal(run_dir, files):
    """The journal of `files` ({name: entry}), written whole and swapped in (atomic_write_text)."""
    atomic_write_text(os.path.join(run_dir, JOURNAL), "".join(_line(name, e) for name, e in sorted(files.items())))


def append_journal(run_dir, name, entry):
    """One file's entry added to the journal, flushed to disk before this returns."""
    with open(os.path.join(run_dir, JOURNAL), "ab") as f:
        f.write(_line(name, entry).encode())
        f.flush()
        os.fsync(f.fileno())


def _line(name, entry):
    return json.dumps(dict(entry, file=name), sort_keys=True, allow_nan=False) + "\n"
