"""How much the training loop allocates. Run by test_memory.py in a fresh process
with NUMBA_NRT_STATS=1 (it must be set before Numba starts); prints JSON lines.

Numba's NRT counts one small wrapper per array argument of every call from Python
(the argument's MemInfo, freed on return). So: each kernel must count exactly its
array arguments (nothing allocated inside), and a whole batch must count the same
at two batch sizes with every allocation freed (nothing sized by the data). The conv loops
(plain and with FFCL feedback) call their kernels once per tile of samples, so their count grows
with the batch: for them every wrapper is freed and no array reaches the Python heap."""

import dataclasses
import json
import tempfile
import tracemalloc

import numpy as np
from numba.core.runtime import rtsys

from edgeff.config import TrainConfig
from edgeff.data import Dataset
from edgeff.ffcl_train import FFCLTrainer
from edgeff.sff_train import ConvTrainer, warm_up_conv
from edgeff.kernels import batch, dense, ff_loss, hybrid, norm, optim, overlay, pool, softmax, uff_loss
from edgeff.train import Trainer, warm_up
from edgeff.uff_train import UffTrainer, warm_up_uff
from edgeff.unsup_train import UnsupTrainer, warm_up_unsup


def nrt():
    s = rtsys.get_allocation_stats()
    return s.alloc, s.free


def kernel_calls():
    """(name, call, number of array arguments) for every kernel."""
    r = np.random.default_rng(0)
    f = lambda *s: r.random(s).astype(np.float32)
    x8, idx, y = r.integers(0, 255, (64, 50)).astype(np.uint8), np.arange(64, dtype=np.int64), np.arange(64) % 10
    z, h, g, b, loss = f(128, 30), f(128, 30), f(128), f(30), f(128)
    big = f(1 << 20)
    return [
        ("gather_scaled", lambda: batch.gather_scaled(x8, idx, 1.0, f(64, 50)), 3),
        ("gather_shifted", lambda: batch.gather_shifted(x8[:, :49], idx, r.random(128), 2, (7, 7), 1.0, f(64, 50)), 4),
        ("overlay_labels", lambda: batch.overlay_labels(z, np.zeros(128, np.int64), 0, 10, 1.0), 2),
        ("length_normalise", lambda: norm.length_normalise(z, h), 2),
        ("standardise", lambda: norm.standardise(z, b, b), 3),
        ("ff_activate", lambda: ff_loss.ff_activate(z, b, h, g), 4),
        ("ff_loss_grad", lambda: ff_loss.ff_loss_grad(z, g, 64, 1.0, loss), 3),
        ("label_goodness", lambda: ff_loss.label_goodness(z[:64], f(10, 30), g[:64], b, f(64, 10)), 5),
        ("hardest_wrong_label", lambda: ff_loss.hardest_wrong_label(f(64, 10), y, np.zeros(64, np.int64)), 3),
        ("random_wrong_label", lambda: ff_loss.random_wrong_label(y, np.zeros(64), 10, np.zeros(64, np.int64)), 3),
        ("overlay_pre", lambda: overlay.overlay_pre(z[:64], f(10, 30), g[:64], np.zeros(128, np.int64), f(128, 30)), 5),
        ("overlay_grad", lambda: overlay.overlay_grad(z, g[:64], np.zeros(128, np.int64), 8.0, f(10, 30), f(30)), 5),
        ("local_grad(bias)", lambda: dense.local_grad(f(128, 7), z, f(7, 30), b), 2),
        ("adam_step", lambda: optim.adam_step(b, b, f(30), f(30), 1, 0.1), 4),
        ("adam_step(parallel)", lambda: optim.adam_step(big, big, big.copy(), big.copy(), 1, 0.1), 4),
        ("sgd_momentum_step", lambda: optim.sgd_momentum_step(b, b, f(30), 0.1), 3),
        ("softmax_xent_grad", lambda: softmax.softmax_xent_grad(f(64, 10), y, f(64)), 3),
        ("hybrid_images", lambda: hybrid.hybrid_images(x8[:, :49], idx, f(64), f(64, 49), (7, 7), 1.0, f(64, 49), 2), 5),
        ("add_bias", lambda: dense.add_bias(z, b), 2),
        ("mask_noise", lambda: uff_loss.mask_noise(z, h, 0.25, z), 3),
        ("mse_grad", lambda: uff_loss.mse_grad(z, h, loss), 3),
        ("relu_backward", lambda: uff_loss.relu_backward(z, h), 2),
        ("nt_xent_grad", lambda: uff_loss.nt_xent_grad(f(128, 128), 0.1, loss), 2),
        ("unit_rows_backward", lambda: uff_loss.unit_rows_backward(z, h, 1e-4), 2),
        ("upsample_add", lambda: pool.upsample_add(f(4, 3, 2, 2), 2, 3, f(4, 3, 4, 6)), 2),
        ("window_sum", lambda: pool.window_sum(f(4, 3, 4, 6), 2, 3, f(4, 3, 2, 2)), 2),
    ]


def fill_dict_key_free_list():
    """Fill CPython's free list of small dict-key tables (it keeps up to 80), which
    tracemalloc counts as live. Each f(**kwargs) call copies the kwargs into a newly
    allocated table that is then parked there while the list has room; numpy's np.take
    and np.einsum wrappers make two such calls a batch. So a loop that keeps nothing
    still grew the traced heap by 120 B a call (4.4 KiB in 40 batches) when the list was
    part empty, which depends on what ran in this process before: compiling a kernel not
    yet in Numba's on-disk cache (gather_shifted on a fresh checkout) left 43 of 80."""
    tables = [{"key": i} for i in range(100)]
    del tables


def loop_counts(ds, schedule, negatives, batch_size, cache, batches=40):
    cfg = TrainConfig(model="784-300-200", batch_size=batch_size, schedule=schedule, negatives=negatives).validate()
    t = Trainer(cfg, ds, cache=cache)
    ff_phases = [p for p in t.phases() if p != ["head"]]
    layers = ff_phases[-1]
    t._bind_phase(len(ff_phases) - 1)
    return step_counts(t, layers, schedule, batch_size, batches)


def unsup_loop_counts(ds, phase, batch_size, batches=40, fields="full"):
    """The loop of unsupervised FF: its last FF phase (hybrids staged) or its probe's phase; with local
    fields, all layers at once (the first three have windows, kernels/local_fields.py)."""
    schedule = "layerwise" if fields == "full" else "simultaneous"
    cfg = TrainConfig(model="784-320-180-100-50", batch_size=batch_size, schedule=schedule, algo="ff-unsup",
                      probe_labels=0.5, fields=fields).validate()
    t = UnsupTrainer(cfg, ds)
    p = len(t.phases()) - (1 if phase == "probe" else 2)
    t._bind(p)
    return step_counts(t, t.phases()[p], f"ff-unsup {phase}", batch_size, batches)


def uff_loop_counts(ds, learner, batch_size, batches=40):
    """The loop of UFF: its last layer's phase (three frozen layers below), for a learner."""
    cfg = TrainConfig(model="784-300-200-100-50", batch_size=batch_size, schedule="layerwise", algo="uff",
                      learner=learner).validate()
    t = UffTrainer(cfg, ds)
    p = len(t.phases()) - 2
    t._bind(p)
    return step_counts(t, t.phases()[p], f"uff {learner}", batch_size, batches)


def ffcl_loop_counts(ds, late, negatives, batch_size, batches=40):
    """The loop of FFCL with a label vector at every layer and two feedback steps, late or early labels."""
    cfg = TrainConfig(model="784-300-200-100", batch_size=batch_size, algo="ffcl", classifier="goodness", head_epochs=0,
                      negatives=negatives, separate_labels=True, late_labels=late, feedback_steps=2).validate()
    t = FFCLTrainer(cfg, ds)
    t._bind(0)
    return step_counts(t, t.phases()[0], f"ffcl {'late' if late else 'early'}", batch_size, batches)


def conv_loop_counts(ds, feedback_steps, batch_size, batches=10):
    """The loop of conv FF (all blocks, shifted images), plain or FFCL with feedback settling over K steps."""
    extra = dict(algo="ffcl", feedback_steps=feedback_steps) if feedback_steps else {}
    cfg = TrainConfig(model="cnn:8p/8p-8", batch_size=batch_size, classifier="last", head_epochs=0, shift=1,
                      **extra).validate()
    t = ConvTrainer(cfg, ds)
    t._bind(0)
    return step_counts(t, t.phases()[0], f"conv K={feedback_steps}", batch_size, batches)


def learn_loop_counts(ds, replay, batch_size, batches=40):
    """The loop of a learn session (edgeff/learn_session.py): one update per call of learn, its window filled
    with batch_size new rows and, with a replay buffer, as many replayed, the rows then offered to the buffer."""
    from edgeff.learn_session import LearnSession
    from edgeff.stream import plan_session
    cfg = TrainConfig(model="784-300-200", batch_size=batch_size).validate()
    net = Trainer(dataclasses.replace(cfg, batch_size=1), ds).net
    net.describe_input(ds)
    lcfg, plan = plan_session("probe", net, cfg, batch_size, replay, None, 0, ds)
    session = LearnSession(tempfile.mkdtemp(), cfg, lcfg, plan, net,
                           dict(batch_size=batch_size, replay=replay, policy="balanced"), 0, 0, print)
    rows, labels = (ds.x_train[:batch_size * (batches + 3)] / 255).astype(np.float32), ds.y_train.astype(np.int64)

    def step(i):
        session.learn("probe", rows[i * batch_size:(i + 1) * batch_size], labels[i * batch_size:(i + 1) * batch_size])

    return _counts(step, f"learn replay {replay}", batch_size, batches)


def step_counts(t, layers, schedule, batch_size, batches):
    """Allocations of `batches` steps of trainer t on `layers`, its bound phase's."""
    losses = np.zeros(len(layers))

    def step(i):
        t.idx[:batch_size] = t.order[i * batch_size:(i + 1) * batch_size]
        t._step(batch_size, layers, losses)

    return _counts(step, schedule, batch_size, batches)


def _counts(step, schedule, batch_size, batches):
    """Allocations of step(3) .. step(2 + batches), after three steps to warm up."""
    for i in range(3):
        step(i)                                   # first calls may cache things (and fill the layerwise cache)
    fill_dict_key_free_list()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    a0, f0 = nrt()
    for i in range(3, 3 + batches):
        step(i)
    a1, f1 = nrt()
    cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return dict(schedule=schedule, batch_size=batch_size, batches=batches, nrt_alloc=a1 - a0, nrt_unfreed=(a1 - a0) - (f1 - f0),
                traced_growth=cur - base, traced_peak_growth=peak - base)


def main():
    warm_up()
    warm_up_unsup()
    warm_up_uff()
    for name, call, n_arrays in kernel_calls():
        call()                                     # compile
        a0, _ = nrt()
        call()
        a1, _ = nrt()
        print(json.dumps(dict(kernel=name, nrt_alloc=a1 - a0, array_args=n_arrays)))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (128 * 50, 784), dtype=np.uint8)
    y = rng.integers(0, 10, len(x)).astype(np.int32)
    ds = Dataset("probe", x, y, x[:10], y[:10], 10, 1 / 255, (28, 28), tuple("0123456789"), "probe")
    for schedule, negatives, cache in (("simultaneous", "hard", None), ("layerwise", "random", None),
                                       ("layerwise", "hard", "float32"), ("layerwise", "hard", "float16")):
        counts = [loop_counts(ds, schedule, negatives, bs, cache) for bs in (32, 128)]
        print(json.dumps(dict(loop=schedule, cache=cache, runs=counts)))
    for phase in ("ff", "probe"):
        print(json.dumps(dict(loop=f"ff-unsup {phase}", runs=[unsup_loop_counts(ds, phase, bs) for bs in (32, 128)])))
    runs = [unsup_loop_counts(ds, "ff", bs, fields="local") for bs in (32, 128)]
    print(json.dumps(dict(loop="ff-unsup ff local fields", runs=runs)))
    for learner in ("ae", "dae", "contrastive"):
        print(json.dumps(dict(loop=f"uff {learner}", runs=[uff_loop_counts(ds, learner, bs) for bs in (32, 128)])))
    for late, negatives in ((True, "hard"), (False, "random")):
        runs = [ffcl_loop_counts(ds, late, negatives, bs) for bs in (32, 128)]
        print(json.dumps(dict(loop=f"ffcl {'late' if late else 'early'} {negatives}", runs=runs)))
    warm_up_conv()
    for steps in (0, 2):     # the conv kernels go in tiles: their calls, not allocations, grow with the batch
        print(json.dumps(dict(conv_loop=f"conv K={steps}", runs=[conv_loop_counts(ds, steps, bs) for bs in (32, 128)])))
    for replay in (0, 500):
        print(json.dumps(dict(loop=f"learn replay {replay}", runs=[learn_loop_counts(ds, replay, bs) for bs in (1, 32)])))


if __name__ == "__main__":
    main()
