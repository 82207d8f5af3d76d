"""Dense memory plans stay byte for byte what they were before layer kinds declared their
buffers: tests/data/dense_plans.json holds 64 plans (simultaneous/layerwise, hard/random
negatives, Adam/SGD, with and without the head, 2-4 layers, several batch sizes) recorded by
tools/record_dense_plans.py on the code as it was; every buffer (name, shape, dtype, lifetime,
kind, layer), its offset, the order of the buffers and the arena size must match."""

import importlib.util
import json
import os

import pytest

HERE = os.path.dirname(__file__)
spec = importlib.util.spec_from_file_location("record_dense_plans", os.path.join(HERE, "..", "tools", "record_dense_plans.py"))
record_dense_plans = importlib.util.module_from_spec(spec)
spec.loader.exec_module(record_dense_plans)

with open(os.path.join(HERE, "data", "dense_plans.json")) as f:
    RECORDED = json.load(f)


def test_the_oracle_covers_the_configs_it_was_made_for():
    assert [(r["config"], r["in_width"], r["num_classes"], r["batch_size"]) for r in RECORDED] == \
        list(record_dense_plans.configs())


@pytest.mark.parametrize("old", RECORDED, ids=lambda r: "{model}-{schedule}-{negatives}-{optimizer}-head{head_epochs}".format(**r["config"]) + f"-b{r['batch_size']}")
def test_dense_plan_is_byte_for_byte_the_recorded_one(old):
    new = record_dense_plans.record(old["config"], old["in_width"], old["num_classes"], old["batch_size"])
    assert new["buffers"] == old["buffers"]
    assert new["arena_bytes"] == old["arena_bytes"]
