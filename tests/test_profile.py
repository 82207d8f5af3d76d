"""edgeff profile end to end: a real subprocess on a small net and a small .npz, the JSON
checked against a schema, the HTML loaded in a real headless Chromium."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from run_cli import edgeff

MODEL = "20-64-64"
INT, NUM, BOOL = {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
NINT = {"type": ["integer", "null"]}
LAYER = {"type": "object", "required": ["layer", "in_width", "width", "params", "weights_bytes", "optimizer_bytes",
                                        "activations_bytes", "gradients_bytes", "backprop_activation_bytes"],
         "properties": {k: {"type": "integer", "minimum": 0} for k in
                        ("weights_bytes", "optimizer_bytes", "activations_bytes", "gradients_bytes")}}
SETTING = {
    "type": "object",
    "required": ["setting", "arena_bytes", "naive_bytes", "rss_baseline_bytes", "peak_rss_bytes",
                 "nrt_allocations_in_loop", "ff_activation_bytes", "backprop_activation_bytes", "budget_bytes", "fits",
                 "layers", "data_bytes", "runtime_bytes", "headroom_bytes", "growth_over_arena", "goal_ratio", "meets_goal",
                 "python_heap_peak_bytes", "nrt", "difference", "timeline", "buffers", "target", "step_seconds"],
    "properties": {
        "setting": {"type": "string"},
        "arena_bytes": {"type": "integer", "minimum": 1}, "naive_bytes": {"type": "integer", "minimum": 1},
        "rss_baseline_bytes": {"type": "integer", "minimum": 1}, "peak_rss_bytes": {"type": "integer", "minimum": 1},
        "runtime_bytes": {"type": "integer", "minimum": 1},
        "nrt_allocations_in_loop": INT, "ff_activation_bytes": INT, "backprop_activation_bytes": INT,
        "budget_bytes": NINT, "headroom_bytes": NINT, "fits": {"type": ["boolean", "null"]},
        "growth_over_arena": NUM, "goal_ratio": NUM, "meets_goal": BOOL, "python_heap_peak_bytes": INT,
        "layers": {"type": "array", "minItems": 1, "items": LAYER},
        "nrt": {"type": "object", "required": ["allocs", "frees", "argument_wrappers", "unfreed"]},
        "difference": {"type": "object", "required": ["measured_minus_planned_bytes", "items", "rest_bytes"]},
        "timeline": {"type": "object", "required": ["t", "rss", "phase", "step"],
                     "properties": {"rss": {"type": "array", "minItems": 2, "items": INT}}},
        "target": {"type": ["object", "null"], "required": ["name", "ram_bytes", "fits", "headroom_bytes"]},
        "buffers": {"type": "array", "items": {"type": "object", "required": ["name", "bytes", "first", "last",
                                                                                "offset", "kind"]}},
    },
}
SCHEMA = dict(SETTING, required=SETTING["required"] + ["settings", "edgeff_version"],
              properties=dict(SETTING["properties"], settings={"type": "array", "minItems": 1, "items": SETTING}))


def check_schema(instance, schema, path="$"):
    """The subset of JSON Schema used above: type, required, properties, items, minItems, minimum."""
    types = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None), "number": (int, float),
             "integer": int}
    if "type" in schema:
        allowed = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        ok = any(isinstance(instance, types[t]) and not (t in ("integer", "number") and isinstance(instance, bool))
                 for t in allowed)
        assert ok, f"{path}: {instance!r:.60} is not {allowed}"
    if isinstance(instance, dict):
        for key in schema.get("required", []):
            assert key in instance, f"{path}: missing {key}"
        for key, sub in schema.get("properties", {}).items():
            if key in instance and instance[key] is not None:
                check_schema(instance[key], sub, f"{path}.{key}")
    if isinstance(instance, list):
        assert len(instance) >= schema.get("minItems", 0), f"{path}: too few items"
        for i, item in enumerate(instance):
            check_schema(item, schema.get("items", {}), f"{path}[{i}]")
    if "minimum" in schema and isinstance(instance, (int, float)):
        assert instance >= schema["minimum"], f"{path}: {instance} < {schema['minimum']}"


def validate(report):
    try:
        import jsonschema
    except ImportError:
        check_schema(report, SCHEMA)
    else:
        jsonschema.validate(report, SCHEMA)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 1, (3, 20))
    path = tmp_path_factory.mktemp("data") / "blobs.npz"
    y_train, y_test = rng.integers(0, 3, 400), rng.integers(0, 3, 100)
    x = lambda y: np.clip(centres[y] + 0.1 * rng.standard_normal((len(y), 20)), 0, 1).astype(np.float32)
    np.savez(path, x_train=x(y_train), y_train=y_train, x_test=x(y_test), y_test=y_test)
    return path


@pytest.fixture(scope="module")
def profiled(blobs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    r = edgeff("profile", "--dataset", blobs, "--model", MODEL, "--batch-size", "32", "--steps", "12",
               "--memory-budget", "1GiB", "--target", "rpi-zero2w", "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout.strip().splitlines()[-1])


def test_report_files_and_schema(profiled):
    out, printed = profiled
    report = json.loads((out / "report.json").read_text())
    assert report == printed
    validate(report)
    for r in report["settings"]:
        validate(dict(r, settings=[r], edgeff_version="x"))
    names = sorted(os.listdir(out))
    assert names == ["ff_vs_backprop.svg", "layers.svg", "report.html", "report.json", "report.md", "timeline.svg"]
    md = (out / "report.md").read_text()
    for svg in ("timeline.svg", "layers.svg", "ff_vs_backprop.svg"):
        assert f"]({svg})" in md
    assert "| layer | shape |" in md and "Planned vs measured" in md


def test_measured_figures(profiled):
    _, r = profiled
    assert r["nrt_allocations_in_loop"] == 0
    assert r["nrt"]["unfreed"] == 0 and r["nrt"]["allocs"] == r["nrt"]["argument_wrappers"] > 0
    assert r["peak_rss_bytes"] >= r["rss_baseline_bytes"] > 0
    assert r["rss_growth_bytes"] == r["peak_rss_bytes"] - r["rss_baseline_bytes"]
    assert r["growth_over_arena"] == round(r["rss_growth_bytes"] / r["arena_bytes"], 4)
    assert r["meets_goal"] == (r["rss_growth_bytes"] <= 1.15 * r["arena_bytes"])
    assert r["python_heap_peak_bytes"] < 1 << 20          # Python objects only, no arrays
    assert r["arena_bytes"] <= r["naive_bytes"]
    assert [row["width"] for row in r["layers"]] == [64, 64]
    for row in r["layers"]:
        assert min(row[f"{k}_bytes"] for k in ("weights", "optimizer", "activations", "gradients")) > 0
        assert row["step_seconds"] > 0
    assert r["weights_bytes"] == sum(row["weights_bytes"] for row in r["layers"])
    assert r["steps"] >= 12 and max(r["timeline"]["rss"]) == r["peak_rss_bytes"]
    assert r["phases"] == ["all layers", "head"]


def test_fits_logic(profiled, blobs, tmp_path):
    _, r = profiled
    need = r["runtime_bytes"] + r["arena_bytes"] + r["data_bytes"]      # the whole process, as edgeff plan counts it
    assert r["runtime_bytes"] > 10 * 2**20                               # the interpreter, NumPy, Numba: measured
    assert r["budget_bytes"] == 2**30 and r["fits"] is True and r["headroom_bytes"] == 2**30 - need
    assert r["fits_measured"] == (r["runtime_bytes"] + r["rss_growth_bytes"] + r["data_bytes"] <= 2**30)
    t = r["target"]
    assert t["name"] == "rpi-zero2w" and t["ram_bytes"] == 512 * 2**20
    assert t["fits"] == (r["peak_rss_bytes"] <= t["ram_bytes"]) and t["headroom_bytes"] == t["ram_bytes"] - r["peak_rss_bytes"]
    # a budget above arena + data but below the whole process: reported as not fitting, not refused
    budget = r["arena_bytes"] + r["data_bytes"] + r["runtime_bytes"] // 2
    q = edgeff("profile", "--dataset", blobs, "--model", MODEL, "--batch-size", "32", "--steps", "2",
               "--memory-budget", budget, "--format", "json", "-o", tmp_path, "--quiet")
    assert q.returncode == 0, q.stderr
    low = json.loads((tmp_path / "report.json").read_text())
    assert low["fits"] is False and low["fits_measured"] is False and low["budget_bytes"] == budget
    assert low["headroom_bytes"] == budget - low["runtime_bytes"] - low["arena_bytes"] - low["data_bytes"] < 0
    assert "does NOT fit" in q.stdout


@pytest.mark.parametrize("args, message", [
    (["--memory-budget", "1KiB"], "below the weights' size"),
    (["--target", "abacus"], "known targets: "),
    (["--format", "pdf"], "--format"),
    (["--sweep", "colour=red"], "--sweep"),
])
def test_mistakes_get_one_line_and_exit_2(args, message, blobs, tmp_path):
    r = edgeff("profile", "--dataset", blobs, "--model", MODEL, "-o", tmp_path / "out", *args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and message in lines[0], r.stderr
    assert not (tmp_path / "out").exists()
    if "--target" in args:
        assert "rpi-zero2w" in lines[0]


def test_run_dir(blobs, tmp_path):
    r = edgeff("profile", tmp_path / "nothing", "-o", tmp_path / "out")
    assert r.returncode == 2 and "no model.npz" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    run = tmp_path / "run"
    t = edgeff("train", "--dataset", blobs, "--model", "20-16", "--epochs", "1", "--batch-size", "50",
               "--head-epochs", "1", "--out", run, "--quiet")
    assert t.returncode == 0, t.stderr
    p = edgeff("profile", run, "--steps", "4", "--format", "json", "-o", tmp_path / "out", "--json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout.strip().splitlines()[-1])
    assert report["model"] == "20-16" and report["batch_size"] == 50 and report["run_dir"] == str(run)


def test_sweep(blobs, tmp_path):
    r = edgeff("profile", "--dataset", blobs, "--model", MODEL, "--sweep", "batch=8,64", "--steps", "4",
               "-o", tmp_path, "--format", "json,md", "--quiet")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    validate(report)
    a, b = report["settings"]
    assert (a["setting"], b["setting"]) == ("batch=8", "batch=64") and (a["batch_size"], b["batch_size"]) == (8, 64)
    assert a["arena_bytes"] < b["arena_bytes"] and a["backprop_activation_bytes"] < b["backprop_activation_bytes"]
    assert report["arena_bytes"] == a["arena_bytes"] and report["sweep"] == "batch=8,64"
    assert a["nrt_allocations_in_loop"] == b["nrt_allocations_in_loop"] == 0
    md = (tmp_path / "report.md").read_text()
    assert "| batch=8 |" in md and "| batch=64 |" in md and "Per layer (batch=64)" in md
    assert len(r.stdout.strip().splitlines()) == 3        # a line per setting, then the files


def test_html_without_matplotlib(profiled, tmp_path, monkeypatch):
    from edgeff.report import write_report
    monkeypatch.setitem(sys.modules, "matplotlib", None)          # import matplotlib now fails
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    write_report(profiled[1], tmp_path, ["md", "html"])
    page = (tmp_path / "report.html").read_text()
    assert "<svg" not in page and "matplotlib, which is not installed" in page and "<table>" in page
    assert "not installed" in (tmp_path / "report.md").read_text()
    assert sorted(os.listdir(tmp_path)) == ["report.html", "report.md"]


def chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def run_chromium(url, tmp_path, *extra):
    exe = chromium()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    return subprocess.run([exe, *flags, *extra, url], capture_output=True, text=True, timeout=120)


def console_errors(stderr):
    return [line for line in stderr.splitlines() if "Uncaught" in line or "ERROR:CONSOLE" in line
            or (":CONSOLE(" in line and "ERROR" in line)]


def test_html_is_self_contained_and_loads_in_headless_chromium(profiled, tmp_path):
    out, _ = profiled
    page = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#)""", page), "the page must not load anything"
    assert "<script" not in page and "<link" not in page
    if not chromium():
        pytest.skip("chromium is not installed (CI installs it: apt-get install chromium)")
    # the check catches a page with a script error
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>undefinedFunction()</script></body></html>")
    assert console_errors(run_chromium(bad.as_uri(), tmp_path, "--dump-dom").stderr)
    r = run_chromium((out / "report.html").as_uri(), tmp_path, "--dump-dom")
    assert r.returncode == 0, r.stderr[-2000:]
    assert console_errors(r.stderr) == []
    dom = r.stdout
    for name in ("timeline", "layers", "ff_vs_backprop"):
        assert re.search(rf'<figure id="plot-{name}"><svg', dom), name
    assert dom.count("<svg") == 3 and "Planned vs measured" in dom and "<table>" in dom
    shot = tmp_path / "shot.png"
    s = run_chromium((out / "report.html").as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1200,2400")
    assert s.returncode == 0 and shot.stat().st_size > 10_000, s.stderr[-2000:]
    assert console_errors(s.stderr) == []
