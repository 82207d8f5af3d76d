"""Positives, then negatives, through the layers (--in-turn, or by itself under a tight --memory-budget):
the same training up to float rounding, with FF activations of B rows instead of 2B."""

import dataclasses
import json

import numpy as np
import pytest

from edgeff.budget import layout_for
from edgeff.config import TrainConfig
from edgeff.memory import backprop_activation_bytes, peak_live_bytes
from edgeff.train import Trainer
from run_cli import edgeff, ok
from test_train import blobs


@pytest.mark.parametrize("schedule, negatives, goodness, optimizer", [
    ("layerwise", "hard", "sum", "adam"), ("simultaneous", "random", "mean", "sgd"),
    ("simultaneous", "hard", "sum", "adam")])
def test_in_turn_trains_the_same_weights(schedule, negatives, goodness, optimizer):
    ds = blobs(n_train=500, d=24, c=4)
    cfg = TrainConfig(model="24-32-32-16", schedule=schedule, negatives=negatives, goodness=goodness,
                      optimizer=optimizer, epochs=2, batch_size=64, head_epochs=1, lr_decay=False)
    both, in_turn = Trainer(cfg, ds), Trainer(dataclasses.replace(cfg, in_turn=True), ds)
    for a, b in zip(both.fit(), in_turn.fit()):          # each epoch's mean losses
        np.testing.assert_allclose(a, b, rtol=1e-5)
    for a, b in zip(both.net.weights + both.net.biases + [both.net.head_w],
                    in_turn.net.weights + in_turn.net.biases + [in_turn.net.head_w]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)     # the gradients' sums differ in order only
    assert not np.array_equal(both.net.weights[0], Trainer(cfg, ds).net.weights[0])   # training moved them


def ff_activation_peak(cfg, in_width, classes):
    """The most activation bytes live at once in the FF phases (the linear head's phase left out)."""
    buffers = [b for b in layout_for(cfg, in_width, classes).buffers if b.name.startswith("p")]
    return peak_live_bytes(buffers, ("activations",))


def test_in_turn_halves_ff_activations_below_backprops():
    cfg = TrainConfig(model="784-2000-2000-2000-2000", schedule="layerwise")
    backprop = backprop_activation_bytes([2000] * 4, 794, cfg.batch_size)
    both = ff_activation_peak(cfg, 794, 10)
    in_turn = ff_activation_peak(dataclasses.replace(cfg, in_turn=True), 794, 10)
    assert in_turn <= 0.5 * backprop < both


def test_a_tight_budget_trains_in_turn(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, x_train=rng.integers(0, 256, (2048, 64), np.uint8), y_train=rng.integers(0, 4, 2048),
             x_test=rng.integers(0, 256, (200, 64), np.uint8), y_test=rng.integers(0, 4, 200))
    run = ["--dataset", data, "--model", "64-1000", "--schedule", "layerwise", "--batch-size", "1024",
           "--head-epochs", "0", "--classifier", "goodness", "--epochs", "1"]
    both = json.loads(edgeff("plan", *run, "--json").stdout)
    in_turn = json.loads(edgeff("plan", *run, "--in-turn", "--json").stdout)
    assert in_turn["arena_bytes"] + 4 * 2**20 < both["arena_bytes"]
    budget = both["runtime_bytes"] + both["data_bytes"] + (both["arena_bytes"] + in_turn["arena_bytes"]) // 2
    ok(edgeff("train", *run, "--memory-budget", f"{budget}B", "--quiet", "--json", "--out", tmp_path / "r"))
    assert json.loads((tmp_path / "r" / "config.json").read_text())["in_turn"] is True
