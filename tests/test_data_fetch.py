"""Fetching data sets over a real HTTP server on 127.0.0.1 (no other network is touched):
hashes, interrupted downloads, HTTP errors, gzip bombs and endless streams, and the `edgeff data` command."""

import hashlib
import http.server
import os
import subprocess
import sys
import threading
import zlib

import numpy as np
import pytest

import edgeff.data as data
from edgeff.cli import main
from edgeff.data import IDX_FILES, DataError, find_dataset, load_dataset
from edgeff.fetch import fetch_dataset

from data_files import isolated, make_idx_set  # noqa: F401 (isolated: autouse)


# ---------------------------------------------------------------- fetch over real HTTP on 127.0.0.1

class Server:
    """http.server on 127.0.0.1 serving a directory. mode: "ok", "cut" (closes the connection half-way
    through each file, Content-Length announced) or "cut-nolength" (same, no Content-Length)."""

    def __init__(self, root, mode="ok"):
        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(root), **kw)

            def log_message(self, *a):
                pass

            def send_header(self, key, value):
                if not (mode == "cut-nolength" and key == "Content-Length"):
                    super().send_header(key, value)

            def copyfile(self, source, outputfile):
                body = source.read()
                outputfile.write(body if mode == "ok" else body[: len(body) // 2])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path):
    """A small generated IDX set as .gz files, its hashes, and a function starting servers for it."""
    src = tmp_path / "src"
    arrays = make_idx_set(src)
    hashes = {s + ".gz": hashlib.sha256((src / (s + ".gz")).read_bytes()).hexdigest() for s in IDX_FILES}
    servers = []

    def serve(mode="ok"):
        servers.append(Server(src, mode))
        return servers[-1].url

    yield arrays, hashes, serve
    for s in servers:
        s.close()


def test_fetch_downloads_checks_and_records(tmp_path, served):
    arrays, hashes, serve = served
    calls, lines = [], []
    dest = fetch_dataset("mnist", str(tmp_path / "d"), mirror=serve(), progress=lambda d, t: calls.append((d, t)),
                         expected_sha256=hashes, report=lines.append)
    assert dest == str(tmp_path / "d" / "mnist")
    assert sorted(os.listdir(dest)) == sorted([s + ".gz" for s in IDX_FILES] + ["SHA256SUMS"])
    ds = load_dataset("mnist", str(tmp_path / "d"))
    np.testing.assert_array_equal(ds.x_train, arrays[0].reshape(30, 20))
    assert calls and calls[-1][0] == calls[-1][1] == os.path.getsize(os.path.join(dest, IDX_FILES[3] + ".gz"))
    assert all(d <= t for d, t in calls)
    assert len(lines) == 4 and all("sha256 verified" in line for line in lines)
    sums = (tmp_path / "d" / "mnist" / "SHA256SUMS").read_text().splitlines()
    assert sums == [f"{hashes[s + '.gz']}  {s}.gz" for s in IDX_FILES]
    # already present with the right hash: nothing is downloaded (this mirror does not even answer)
    lines.clear()
    fetch_dataset("mnist", str(tmp_path / "d"), mirror="http://127.0.0.1:9/", expected_sha256=hashes,
                  report=lines.append)
    assert all("already present" in line for line in lines) and len(lines) == 4


def test_fetch_into_cache_without_known_hashes(tmp_path, served):
    _, hashes, serve = served
    lines = []
    dest = fetch_dataset("kmnist", mirror=serve(), report=lines.append)    # kmnist: no built-in hashes
    assert dest == data.cache_dir("kmnist") and dest.startswith(str(tmp_path / "xdg"))
    assert find_dataset("kmnist") == dest
    assert f"sha256 {hashes[IDX_FILES[0] + '.gz']} (no known hash" in lines[0]
    assert hashes[IDX_FILES[2] + ".gz"] in (tmp_path / "xdg" / "edgeff" / "kmnist" / "SHA256SUMS").read_text()


def test_fetch_hash_mismatch_keeps_nothing(tmp_path, served):
    _, hashes, serve = served
    bad = dict(hashes, **{IDX_FILES[1] + ".gz": "0" * 64})
    with pytest.raises(DataError, match=f"{IDX_FILES[1]}.gz: sha256 {hashes[IDX_FILES[1] + '.gz']} does not match"):
        fetch_dataset("mnist", str(tmp_path / "d"), mirror=serve(), expected_sha256=bad)
    # the file before it was fine and stays; the bad one and any temp file are gone; no SHA256SUMS
    assert os.listdir(tmp_path / "d" / "mnist") == [IDX_FILES[0] + ".gz"]


@pytest.mark.parametrize("mode, message", [("cut", "stopped at \\d+ of \\d+ bytes"),
                                           ("cut-nolength", "incomplete gzip file")])
def test_interrupted_download_leaves_no_file(tmp_path, served, mode, message):
    _, hashes, serve = served
    with pytest.raises(DataError, match=message):
        fetch_dataset("mnist", str(tmp_path / "d"), mirror=serve(mode), expected_sha256={})
    assert os.listdir(tmp_path / "d" / "mnist") == []


def test_fetch_http_errors(tmp_path, served):
    _, _, serve = served
    url = serve()
    with pytest.raises(DataError, match="download of .*train-images-idx3-ubyte.gz failed \\(HTTP Error 404"):
        fetch_dataset("mnist", str(tmp_path / "d"), mirror=url + "nowhere/", expected_sha256={})
    with pytest.raises(DataError, match="failed .*check the network or pass --mirror"):
        fetch_dataset("mnist", str(tmp_path / "d"), mirror="http://127.0.0.1:9/", expected_sha256={})
    (tmp_path / "src" / "html").mkdir()
    for s in IDX_FILES:
        (tmp_path / "src" / "html" / (s + ".gz")).write_text("<html>moved</html>")
    with pytest.raises(DataError, match="not a valid gzip file"):
        fetch_dataset("kmnist", str(tmp_path / "d"), mirror=url + "html/")
    assert os.listdir(tmp_path / "d" / "kmnist") == []
    with pytest.raises(DataError, match="no download known for 'cifar10'"):
        fetch_dataset("cifar10", str(tmp_path / "d"))


# The CLI's main in a child python that writes its peak RSS (VmHWM, in kB) to argv[1] when it ends. VmHWM
# counts from the exec: ru_maxrss (wait4, RUSAGE_CHILDREN) would count the memory of the pytest process the
# child is forked from too.
PEAK_RSS = """import sys
from edgeff.cli import main
try:
    sys.exit(main(sys.argv[2:]))
finally:
    with open("/proc/self/status") as f, open(sys.argv[1], "w") as out:
        out.write(next(line for line in f if line.startswith("VmHWM:")).split()[1])
"""


def run_measured(tmp_path, *args):
    """`edgeff *args` as a child: (exit code, stderr, peak RSS in bytes)."""
    r = subprocess.run([sys.executable, "-c", PEAK_RSS, tmp_path / "peak", *map(str, args)], capture_output=True,
                       text=True, timeout=300)
    return r.returncode, r.stderr, int((tmp_path / "peak").read_text()) * 1024


def test_a_gzip_bomb_stops_at_the_files_size_in_bounded_memory(tmp_path):
    """400 MB of zeros in 400 KB of gzip as Fashion-MNIST's first file (47,040,016 bytes): one error line once
    it inflates past that, nothing kept, and the inflated bytes are never held (the old code inflated each
    1 MiB read whole: 850 MB peak, here about 40 MB)."""
    (tmp_path / "bomb").mkdir()
    gz, zeros = zlib.compressobj(9, wbits=31), bytes(1 << 20)
    (tmp_path / "bomb" / (IDX_FILES[0] + ".gz")).write_bytes(b"".join([gz.compress(zeros) for _ in range(400)]
                                                                     + [gz.flush()]))
    server = Server(tmp_path / "bomb")
    try:
        code, err, peak = run_measured(tmp_path, "data", "fetch", "fashion-mnist", "--mirror", server.url,
                                       "--data-dir", tmp_path / "d")
    finally:
        server.close()
    assert peak < 200 << 20, f"peak RSS {peak:,} bytes"
    assert code == 2 and err.count("\n") == 1 and err.startswith("edgeff: error:"), err
    assert f"{IDX_FILES[0]}.gz inflates to more than 47,040,016 bytes" in err
    assert os.listdir(tmp_path / "d" / "fashion-mnist") == []


# a gzip header, then empty stored blocks (5 bytes each): a stream that goes on for ever inflating to nothing
EMPTY_BLOCKS = b"\x1f\x8b\x08\0\0\0\0\0\0\xff" + b"\0\0\0\xff\xff" * 10000


@pytest.mark.parametrize("served_as, says", [
    ("the file then junk", "has data after the end of its gzip stream"),
    ("empty blocks", "is longer than a gzip of a file of at most 10,008 bytes")])
def test_a_download_going_on_past_its_file_is_refused(tmp_path, served, served_as, says):
    _, _, serve = served
    labels = tmp_path / "src" / (IDX_FILES[3] + ".gz")
    labels.write_bytes(labels.read_bytes() + b"junk" * 25 if served_as == "the file then junk" else EMPTY_BLOCKS)
    with pytest.raises(DataError, match=says):
        fetch_dataset("kmnist", str(tmp_path / "d"), mirror=serve())      # kmnist: no hash would catch it
    # the files before it stay, the refused one is not kept, nor a SHA256SUMS
    assert sorted(os.listdir(tmp_path / "d" / "kmnist")) == sorted(s + ".gz" for s in IDX_FILES[:3])


# ---------------------------------------------------------------- the `edgeff data` command

def test_cli_list_and_fetch(tmp_path, served, capsys):
    _, hashes, serve = served
    url = serve()
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert any(line.split(None, 1) == ["kmnist", "not found"] for line in out.splitlines())
    assert main(["data", "fetch", "kmnist", "--data-dir", str(tmp_path / "d"), "--mirror", url, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert hashes[IDX_FILES[3] + ".gz"] in out and f"saved in {tmp_path / 'd' / 'kmnist'}" in out
    assert main(["data", "list", "--data-dir", str(tmp_path / "d")]) == 0
    assert f"kmnist         {tmp_path / 'd' / 'kmnist'}" in capsys.readouterr().out
    # the built-in MNIST hashes do not match these generated files: one error line, exit 2, nothing kept
    assert main(["data", "fetch", "mnist", "--data-dir", str(tmp_path / "e"), "--mirror", url, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not match the known 440fcabf" in err
    assert os.listdir(tmp_path / "e" / "mnist") == []
    assert main(["data", "fetch", "cifar10"]) == 2
    assert "invalid choice" in capsys.readouterr().err
