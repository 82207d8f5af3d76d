"""The per-machine tuning: measured, cached atomically beside Numba's cache, validated on
read (a damaged or foreign file is measured again, never used), shown by `edgeff info`."""

import json
import os
import subprocess
import sys

import pytest

from edgeff import tuning
from edgeff.cli import main


@pytest.fixture(scope="module")
def measured():
    """A measurement, as taken on quiet CPUs (whatever else this machine runs now)."""
    return dict(tuning.measure(), others_busy=0.0)


@pytest.fixture
def path(tmp_path, monkeypatch):
    p = tmp_path / "cache" / tuning.FILE
    monkeypatch.setattr(tuning, "tuning_path", lambda: str(p))
    monkeypatch.delenv(tuning.ENV, raising=False)
    return p


def test_measured_tuning_is_valid_and_changes_nothing_until_applied(measured):
    before = tuning.blas_threads()
    again = tuning.measure()
    assert tuning.blas_threads() == before
    for t in (measured, again):
        assert tuning.valid(t) is t
        assert t["parallel_from"] in tuning.SIZES + [tuning.NEVER]
        assert t["machine"] == tuning.machine()


def test_the_cache_file_round_trips(measured, path):
    assert tuning.save(str(path), measured)
    assert tuning.load(str(path)) == measured
    assert [f for f in os.listdir(path.parent)] == [tuning.FILE]          # no temp file left
    assert tuning.tuned() == (measured, str(path), "cached")


@pytest.mark.parametrize("damage", [
    lambda t: b"\x00\xff not json",
    lambda t: json.dumps(t)[:-20].encode(),                                   # truncated
    lambda t: json.dumps([t]).encode(),
    lambda t: json.dumps(dict(t, parallel_from=-1)).encode(),
    lambda t: json.dumps(dict(t, parallel_from="65536")).encode(),
    lambda t: json.dumps(dict(t, blas_threads=10**6)).encode(),
    lambda t: json.dumps(dict(t, blas_threads=True)).encode(),
    lambda t: json.dumps({k: v for k, v in t.items() if k != "parallel_from"}).encode(),
    lambda t: json.dumps(dict(t, machine=dict(t["machine"], cpu_model="another CPU"))).encode(),
    lambda t: json.dumps(dict(t, version=t["version"] + 1)).encode(),
    lambda t: json.dumps(dict(t, others_busy=1.5)).encode(),
    lambda t: json.dumps(dict(t, others_busy="0.1")).encode(),
    lambda t: json.dumps(dict(t, others_busy=True)).encode(),
    lambda t: b"[" * 200_000,                                                  # a RecursionError once
    lambda t: json.dumps(dict(t, others_busy="X")).replace('"X"', "NaN").encode(),
    lambda t: json.dumps(t).encode() + b" " * (16 << 20),
], ids=["binary", "truncated", "list", "negative", "string", "too-many-threads", "bool", "missing", "other-machine",
        "newer", "busy-above-1", "busy-string", "busy-bool", "nested-deep", "nan", "too-long"])
def test_a_damaged_or_foreign_cache_is_measured_again_and_rewritten(measured, path, damage):
    path.parent.mkdir()
    path.write_bytes(damage(measured))
    assert tuning.load(str(path)) is None
    got, where, source = tuning.tuned()
    assert source == "measured now" and where == str(path) and tuning.valid(got) is got
    assert tuning.load(str(path)) == got


def test_remeasure_and_off(measured, path, monkeypatch):
    tuning.save(str(path), dict(measured, parallel_from=tuning.NEVER))
    monkeypatch.setenv(tuning.ENV, "remeasure")
    got, _, source = tuning.tuned()
    assert source == "measured now" and tuning.load(str(path)) == got
    monkeypatch.setenv(tuning.ENV, "off")
    assert tuning.tuned() == (None, str(path), "off")


def test_info_shows_the_tuning_and_where_it_lives(measured, path, capsys):
    tuning.save(str(path), measured)
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["tuning_file"] == str(path) and info["tuning_source"] == "cached"
    assert info["tuning_parallel_from"] == measured["parallel_from"]
    assert info["tuning_blas_threads"] == measured["blas_threads"]
    assert info["tuning_others_busy"] == measured["others_busy"]


def test_info_measures_beside_numbas_cache_and_off_writes_nothing(tmp_path):
    for mode, source in (("off", "off"), ("", "measured now")):
        cache = tmp_path / (mode or "on")
        env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), EDGEFF_TUNING=mode)
        r = subprocess.run([sys.executable, "-m", "edgeff.cli", "info", "--json"], env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)
        assert info["tuning_file"] == str(cache / tuning.FILE) and info["tuning_source"] == source
        assert (cache / tuning.FILE).exists() == (mode != "off")


def test_cpu_times_are_read_from_proc_stat_and_junk_is_none(tmp_path):
    stat = tmp_path / "stat"
    hz = os.sysconf("SC_CLK_TCK")
    stat.write_text(f"cpu  {3 * hz} 0 {hz} {5 * hz} {hz} 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8\n")
    assert tuning.cpu_times(stat) == (4.0, 10.0)                   # busy: all but idle and iowait
    for junk in ("", "cpu\n", "cpu0 1 2 3 4 5\n", "cpu a b c d e\n", "cpu 1 2 3 -4 5\n", "\x00\xff"):
        stat.write_text(junk)
        assert tuning.cpu_times(stat) is None, junk
    assert tuning.cpu_times(tmp_path / "missing") is None
    assert tuning.others_busy((4.0, 10.0), (9.0, 20.0), 1.0) == 0.4   # 5 s busy, 1 of them ours, over 10
    assert tuning.others_busy((4.0, 10.0), (5.0, 20.0), 3.0) == 0.0   # ours counted over a tick boundary
    assert tuning.others_busy(None, (5.0, 20.0), 0.0) is None and tuning.others_busy((1, 5), (1, 5), 0) is None


def test_a_measurement_beside_busy_cpus_says_so():
    """Two processes spinning on the CPUs while tuning measures: its record says others were busy."""
    if tuning.cpu_times() is None:
        pytest.skip("no /proc/stat")
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(tuning.cores())]
    try:
        while tuning.busy_now(0.1) < tuning.BUSY:
            pass
        measured = tuning.measure()
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert measured["others_busy"] > tuning.BUSY and tuning.valid(measured) is measured


def test_a_tuning_measured_on_busy_cpus_is_measured_again_once_they_are_quiet(measured, path, monkeypatch):
    busy = dict(measured, others_busy=0.9, parallel_from=tuning.NEVER)
    tuning.save(str(path), busy)
    monkeypatch.setattr(tuning, "busy_now", lambda: 0.6)
    assert tuning.tuned() == (busy, str(path), "cached (measured while the CPUs were busy; still busy)")
    monkeypatch.setattr(tuning, "busy_now", lambda: None)          # cannot tell: keep it
    assert tuning.tuned()[0] == busy
    monkeypatch.setattr(tuning, "busy_now", lambda: 0.02)
    monkeypatch.setattr(tuning, "measure", lambda: dict(measured, others_busy=0.0))
    monkeypatch.setenv(tuning.ENV, "keep")                          # as it stands, whatever the CPUs do now
    assert tuning.tuned() == (busy, str(path), "cached")
    monkeypatch.delenv(tuning.ENV)
    got, _, source = tuning.tuned()
    assert source == "measured now" and got["others_busy"] == 0.0 and tuning.load(str(path)) == got
    assert tuning.tuned()[2] == "cached"
