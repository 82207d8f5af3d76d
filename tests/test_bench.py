"""tools/bench.py: the training-vs-GEMM figure is the median of interleaved rounds."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("edgeff_bench_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_fraction_reported_is_the_median_round_inside_the_range(bench):
    r = bench.bench_net("tiny", "784-64-32", 16, 3, 5)
    low, high = r["fraction_of_numpy_range"]
    assert r["rounds"] == 5 and 0 < low <= r["fraction_of_numpy"] <= high
    # the median round's own figures: samples/s and both GFLOP/s come from that one round
    flops = sum(2 * m * k * n for m, k, n in bench.gemm_shapes(bench.TrainConfig(model="784-64-32", batch_size=16)))
    seconds = 16 / r["samples_per_s"]
    assert r["gflops"] == pytest.approx(flops / seconds / 1e9)
    assert r["fraction_of_numpy"] == pytest.approx(r["gflops"] / r["numpy_gflops"])


@pytest.mark.parametrize("rounds", ["0", "4"])
def test_an_even_or_empty_round_count_is_refused(rounds):
    r = subprocess.run([sys.executable, str(TOOL), "--rounds", rounds], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--rounds must be odd" in r.stderr
