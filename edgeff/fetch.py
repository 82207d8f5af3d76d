"""Downloading a known data set's official IDX files, for machines with internet:
streamed to a temp name, checked (complete, valid gzip, inflating to no more than the
file's known size, sha256 when known), then fsynced and renamed, so a failed download
never leaves a file under the real name."""

import hashlib
import http.client
import os
import urllib.request
import zlib

from .data import IDX_FILES, KNOWN, cache_dir
from .errors import DataError
from .fileio import CHUNK, atomic_write, atomic_write_text, sha256_file



def _download(url, path, want, size, progress):
    """Stream url to a temp file beside path; check length, gzip integrity, that it inflates to at most
    size bytes (the file's known size) and sha256 (if want); only then fsync and rename it to path.
    Returns the sha256."""
    sha = hashlib.sha256()
    unzip = zlib.decompressobj(wbits=31)     # gzip: the trailer's CRC-32 and length are checked too

    def write(f):
        with urllib.request.urlopen(url, timeout=30) as r:
            total, done, inflated = int(r.headers.get("Content-Length") or 0), 0, 0
            while chunk := r.read(CHUNK):
                done += len(chunk)
                # A gzip is never much longer than what it holds (stored blocks add 5 bytes per 64 KiB, the
                # header a name); a longer one is padded with blocks that inflate to nothing, and need never end.
                if done > 2 * size + 1024:
                    raise DataError(f"{url} is longer than a gzip of a file of at most {size:,} bytes can be; "
                                    "not saved; check the URL or --mirror")
                # A few KiB of gzip can inflate to gigabytes: CHUNK bytes of output at a time (dropped:
                # only checking the stream is whole), and no further than the file can be.
                data = chunk
                while data and inflated <= size:
                    inflated += len(unzip.decompress(data, CHUNK))
                    data = unzip.unconsumed_tail
                if inflated > size:
                    raise DataError(f"{url} inflates to more than {size:,} bytes, more than the file can be; "
                                    "not saved; check the URL or --mirror")
                if unzip.unused_data:                       # held in memory by zlib, so refused as it comes
                    raise DataError(f"{url} has data after the end of its gzip stream; not saved; "
                                    "check the URL or --mirror")
                f.write(chunk)
                sha.update(chunk)
                if progress:
                    progress(done, total)
        if total and done != total:
            raise DataError(f"download of {url} stopped at {done} of {total} bytes; run the fetch again")
        if not unzip.eof:
            raise DataError(f"download of {url} is an incomplete gzip file ({done} bytes); run the fetch again")
        if want and sha.hexdigest() != want:
            raise DataError(f"{url}: sha256 {sha.hexdigest()} does not match the known {want}; not saved")

    try:
        atomic_write(path, write)
    except DataError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DataError(f"download of {url} failed ({exc}); check the network or pass --mirror") from None
    except zlib.error as exc:
        raise DataError(f"download of {url} is not a valid gzip file ({exc}); check the URL or --mirror") from None
    return sha.hexdigest()


def fetch_dataset(name, data_dir=None, mirror=None, progress=None, *, expected_sha256=None, report=None):
    """Download NAME's four official IDX .gz files into data_dir/NAME (default: the user cache).

    Each file streams to a temp name and is checked (complete, valid gzip, inflating to no more
    than its known size, sha256 when known) before fsync + rename, so a failed download never
    leaves a file under the real name.
    Files whose hash is not known are not checked: their hashes are recorded in SHA256SUMS
    and reported. A file already present with the known hash is not downloaded again.
    mirror: base URL instead of the official one. expected_sha256: {file: hex} instead of the
    built-in table (tests). progress(bytes_done, bytes_total) per file (total 0 if unknown);
    report(line) once per file. Returns the directory."""
    if name not in KNOWN:
        raise DataError(f"no download known for {name!r}; known: {', '.join(KNOWN)}")
    base = (mirror or KNOWN[name].url).rstrip("/") + "/"
    hashes = KNOWN[name].sha256 if expected_sha256 is None else expected_sha256
    dest = os.path.join(data_dir, name) if data_dir else cache_dir(name)
    try:
        os.makedirs(dest, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {dest} ({exc}); pass --data-dir") from None
    sums = []
    for stem in IDX_FILES:
        fname = stem + ".gz"
        path, want = os.path.join(dest, fname), hashes.get(fname)
        if want and os.path.isfile(path) and sha256_file(path) == want:
            digest, how = want, "already present, sha256 verified"
        else:
            digest = _download(base + fname, path, want, KNOWN[name].sizes[stem], progress)
            how = "sha256 verified" if want else f"sha256 {digest} (no known hash to check; recorded in SHA256SUMS)"
        sums.append(f"{digest}  {fname}\n")
        if report:
            report(f"{fname}: {os.path.getsize(path)} bytes, {how}")
    atomic_write_text(os.path.join(dest, "SHA256SUMS"), "".join(sums))
    return dest
