"""Write tests/data/dense_plans.json: the memory plans of many dense configs, as the planner
makes them now. Run once on the code before a change to the planner's inputs; the test
(tests/test_dense_plans.py) then checks that every plan stays byte for byte the same."""

import itertools
import json
import os
import sys

from edgeff.budget import plan_for
from edgeff.config import TrainConfig

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "dense_plans.json")
MODELS = (("784-300-200", 784, 10), ("20-64-32-16", 30, 10), ("784-500-500-500-500", 784, 10), ("12-8-8-8", 15, 3))
BATCHES = (1, 37, 256)


def configs():
    """(config fields, in_width, num_classes, batch size) of every recorded plan."""
    combos = itertools.product(("simultaneous", "layerwise"), ("hard", "random"), ("adam", "sgd"), (0, 3))
    for i, (schedule, negatives, optimizer, head_epochs) in enumerate(combos):
        for j, (model, in_width, num_classes) in enumerate(MODELS):
            fields = dict(model=model, schedule=schedule, negatives=negatives, optimizer=optimizer,
                          head_epochs=head_epochs)
            yield fields, in_width, num_classes, BATCHES[(i + j) % len(BATCHES)]


def record(fields, in_width, num_classes, batch_size):
    plan = plan_for(TrainConfig(**fields), in_width, num_classes, batch_size)
    return dict(config=fields, in_width=in_width, num_classes=num_classes, batch_size=batch_size,
                arena_bytes=plan.arena_bytes,
                buffers=[[b.name, list(b.shape), b.dtype, b.first, b.last, b.kind, b.layer, plan.offsets[b.name]]
                         for b in plan.buffers])


if __name__ == "__main__":
    plans = [record(*c) for c in configs()]
    with open(sys.argv[1] if len(sys.argv) > 1 else OUT, "w") as f:
        json.dump(plans, f, separators=(",", ":"))
        f.write("\n")
    print(f"{len(plans)} plans written")
