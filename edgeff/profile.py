"""Memory profiling: a short training run measured against its memory plan.

For one setting (config, data, plan) in this process:
- baseline RSS: kernels compiled, data loaded, BLAS started, before the arena exists;
- RSS timeline: a background thread reads /proc/self/statm every few milliseconds into
  preallocated arrays (time, bytes, phase, step); the peak is their maximum;
- Python heap: tracemalloc's peak over the loop above what it traced at the start;
- Numba NRT: allocations in the loop beyond the one MemInfo wrapper Numba makes for
  each array argument of a call from Python (the wrappers are counted by wrapping the
  kernels' dispatchers while the loop runs); must be 0;
- step time per layer (dense) or block (conv): its forward + update (median over its steps),
  told by the trainer's own loop through its step_hook (edgeff/fit_loop.py).
Every phase of the schedule runs (steps split between them), so every buffer of the
plan is touched and the arena is resident as it is in a real run.
"""

import contextlib
import ctypes
import gc
import math
import os
import threading
import time
import tracemalloc

import numpy as np

from .budget import backprop_bytes, backprop_cfg, layout_for_conv
from .memory import backprop_activation_bytes, peak_live_bytes
from .plan_report import plan_report
from .process_memory import peak_rss_bytes, rss_bytes

GOAL_RATIO = 1.15       # (peak RSS - baseline) <= GOAL_RATIO * arena


# ---- resident memory ----

PAGE = os.sysconf("SC_PAGE_SIZE")


def settle():
    """Collect garbage and give freed heap back to the OS, so a baseline is not inflated."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class RssSampler(threading.Thread):
    """Samples RSS every `interval` s into preallocated arrays; `where` = (phase, step) now.

    When the arrays fill up, every other sample is dropped and the interval doubles,
    so memory stays bounded and the loop's Python heap is not disturbed."""

    def __init__(self, interval=0.005, capacity=8192):
        super().__init__(daemon=True, name="rss-sampler")
        self.interval, self.n, self.running = interval, 0, True
        self.t = np.zeros(capacity)
        self.rss = np.zeros(capacity, np.int64)
        self.phase = np.zeros(capacity, np.int32)
        self.step = np.zeros(capacity, np.int64)
        self.where = np.array([-1, 0], np.int64)
        self.t0 = time.perf_counter()
        try:
            self._fd = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self._fd = None

    def sample(self):
        if self.n == len(self.t):
            for a in (self.t, self.rss, self.phase, self.step):
                a[:self.n // 2] = a[:self.n:2]
            self.n //= 2
            self.interval *= 2
        i = self.n
        self.t[i] = time.perf_counter() - self.t0
        if self._fd is None:
            self.rss[i] = rss_bytes()
        else:
            self.rss[i] = int(os.pread(self._fd, 128, 0).split()[1]) * PAGE
        self.phase[i], self.step[i] = self.where[0], self.where[1]
        self.n = i + 1

    def run(self):
        while self.running:
            self.sample()
            time.sleep(self.interval)

    def finish(self):
        self.running = False
        self.join()
        self.sample()
        if self._fd is not None:
            os.close(self._fd)
        n = self.n
        return dict(t=self.t[:n].round(4).tolist(), rss=self.rss[:n].tolist(), phase=self.phase[:n].tolist(),
                    step=self.step[:n].tolist())


# ---- Numba's allocator ----

@contextlib.contextmanager
def nrt_counting():
    """Yields counts(): (allocs, frees, array arguments passed) since entry. NRT statistics are
    switched on for the duration; every dispatcher in edgeff.kernels counts its array arguments."""
    from numba.core.dispatcher import Dispatcher
    from numba.core.runtime import _nrt_python, rtsys
    import importlib
    import pkgutil
    from . import kernels
    modules = [importlib.import_module(f"{kernels.__name__}.{m.name}") for m in pkgutil.iter_modules(kernels.__path__)
               if m.name != "reference"]

    args = [0]

    def counting(dispatcher):
        def call(*a):
            for x in a:
                if isinstance(x, np.ndarray):
                    args[0] += 1
            return dispatcher(*a)
        return call

    patched = []
    for module in modules:
        for name, value in list(vars(module).items()):
            if isinstance(value, Dispatcher):
                patched.append((module, name, value))
                setattr(module, name, counting(value))
            elif isinstance(value, tuple) and value and all(isinstance(v, Dispatcher) for v in value):
                patched.append((module, name, value))
                setattr(module, name, tuple(counting(v) for v in value))
    was_on = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    s0 = rtsys.get_allocation_stats()

    def counts():
        s = rtsys.get_allocation_stats()
        return s.alloc - s0.alloc, s.free - s0.free, args[0]

    try:
        yield counts
    finally:
        for module, name, value in patched:
            setattr(module, name, value)
        if not was_on:
            _nrt_python.memsys_disable_stats()


# ---- the profiled run ----

def default_steps(batch_size, macs_per_row):
    """A few hundred batches for small nets, fewer for big ones (about 6e11 flops in all)."""
    flops = 6 * 2 * batch_size * macs_per_row
    return int(min(300, max(20, 6e11 // flops)))


def dense_macs(cfg, in_width):
    """Multiply-adds of one row through a dense net's layers."""
    sizes = [in_width] + list(cfg.sizes[1:])
    return sum(a * b for a, b in zip(sizes, sizes[1:]))


def block_macs(layout):
    """Multiply-adds of one image through a conv net's layers and heads (their weights times
    their output positions)."""
    return sum(math.prod(lay.params["w"].shape) * math.prod(lay.out_shape[1:])
               for blk in layout.blocks for lay in blk.layers if "w" in lay.params)


def warm_blas(in_width, width):
    """Start BLAS's threads and buffers with one product of the first layer's shape (freed after)."""
    x, w = np.ones((64, in_width), np.float32), np.ones((in_width, min(width, 256)), np.float32)
    x @ w


class StepTimes:
    """The trainer's step_hook while it is measured: each batch's seconds, each layer step's
    seconds and the phase of every batch, in arrays made before the run; it also tells the RSS
    sampler which (phase, step) is running."""

    def __init__(self, steps, n_layers, where):
        self.where, self.step, self.count = where, 0, 0
        self.layer = np.zeros((steps, n_layers))
        self.batch = np.zeros(steps)
        self.phase = np.zeros(steps, np.int64)

    def batch_begins(self, phase, step):
        self.where[0], self.where[1] = phase, step
        self.phase[step], self.step, self.count = phase, step, step + 1

    def layer_done(self, k, seconds):
        self.layer[self.step, k] += seconds

    def batch_done(self, seconds):
        self.batch[self.step] = seconds


def measure(trainer_factory, steps, interval=0.005):
    """Build the trainer (its arena) and train `steps` batches split over its phases, measured.

    trainer_factory() -> Trainer. Returns a dict."""
    sampler = RssSampler(interval)              # its arrays exist before the baseline
    settle()
    baseline = rss_bytes()
    sampler.start()
    trainer = trainer_factory()
    after_setup = rss_bytes()
    phases = trainer.phases()
    per_phase = max(2, -(-steps // len(phases)))
    units = len({k for p in phases for k in p if k != "head"})     # layers (dense) or blocks (conv)
    times = StepTimes(per_phase * len(phases), units, sampler.where)
    trainer.step_hook = times
    with nrt_counting() as nrt_counts:
        tracemalloc.start()
        traced0, _ = tracemalloc.get_traced_memory()
        t_start = time.perf_counter()
        trainer.fit(steps_per_phase=per_phase)
        loop_seconds = time.perf_counter() - t_start
        traced1, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        allocs, frees, wrappers = nrt_counts()
    timeline = sampler.finish()
    trainer.step_hook = None
    peak = max(timeline["rss"])
    n = times.count
    return dict(trainer=trainer, baseline=baseline, after_setup=after_setup, peak=peak, timeline=timeline, phases=phases,
                step_phase=times.phase[:n], layer_time=times.layer[:n], step_time=times.batch[:n],
                loop_seconds=loop_seconds, batch_rows=min(trainer.cfg.batch_size, len(trainer.ds.y_train)),
                python_heap_peak=traced_peak - traced0, python_heap_growth=traced1 - traced0,
                nrt=dict(allocs=allocs, frees=frees, argument_wrappers=wrappers))


def _phase_name(layers, n_layers, unit="layer"):
    if layers == ["head"]:
        return "head"
    if len(layers) == n_layers:
        return f"all {unit}s" if n_layers > 1 else f"{unit} 1"
    return f"{unit} {layers[0] + 1}/{n_layers}"


# ---- report data ----

KINDS = ("weights", "optimizer", "activations", "gradients", "workspace")


def layer_rows(plan, sizes, batch_size, measured):
    """Per hidden layer: the most bytes of each kind live at one step, backprop's activations, step time."""
    rows, lt = [], measured["layer_time"]
    for k, (d_in, width) in enumerate(zip(sizes, sizes[1:])):
        mine = [b for b in plan.buffers if b.layer == k]
        times = lt[:, k][lt[:, k] > 0]
        rows.append(dict(layer=k + 1, in_width=d_in, width=width, params=d_in * width + width,
                         **{f"{kind}_bytes": peak_live_bytes(mine, (kind,)) for kind in KINDS},
                         backprop_activation_bytes=4 * batch_size * (2 * width + (d_in if k == 0 else 0)),
                         step_seconds=float(np.median(times)) if len(times) else None))
    return rows


def block_rows(plan, layout, measured):
    """Per block of a conv net: its layers, the most bytes of each kind live at one step, the
    activations backprop would keep of it (every layer's output at once), step time."""
    rows, lt = [], measured["layer_time"]
    for k, blk in enumerate(layout.blocks):
        mine = [b for b in plan.buffers if b.layer == k]
        layers, times = blk.layers[:-1], lt[:, k][lt[:, k] > 0]
        outputs = {lay.y.name: lay.y.nbytes for lay in layers}          # in-place kinds share their input's
        rows.append(dict(block=k + 1, layers=", ".join(_describe(lay.spec) for lay in layers),
                         in_shape=list(layers[0].in_shape), out_shape=list(layers[-1].out_shape),
                         params=sum(math.prod(b.shape) for lay in blk.layers for b in lay.params.values()),
                         **{f"{kind}_bytes": peak_live_bytes(mine, (kind,)) for kind in KINDS},
                         backprop_activation_bytes=sum(outputs.values()),
                         step_seconds=float(np.median(times)) if len(times) else None))
    return rows


def _describe(spec):
    fields = ",".join(f"{k}={v}" for k, v in spec.items() if k != "kind")
    return f"{spec['kind']}({fields})" if fields else spec["kind"]


def conv_backprop_estimate(cfg, ds):
    """The same conv net trained end to end with backprop (its --hybrid net layout): the most
    bytes of each kind live at one step; its activations are budget.backprop_bytes."""
    whole = layout_for_conv(backprop_cfg(cfg), ds).buffers
    out = {kind: peak_live_bytes(whole, (kind,)) for kind in KINDS}
    return dict(out, total=sum(out.values()))


def backprop_estimate(sizes, batch_size, optimizer):
    """The same net trained with backprop: every layer's parameters, optimiser state and
    gradients at once, and every activation kept for the backward pass."""
    params = 4 * sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    out = dict(weights=params, optimizer=params * (2 if optimizer == "adam" else 1), gradients=params,
               activations=backprop_activation_bytes(list(sizes[1:]), sizes[0], batch_size), workspace=0)
    return dict(out, total=sum(out.values()))


def difference(m, arena, n_train, weights):
    """Measured growth over the plan, item by item. The initial weights are drawn outside the
    arena and copied in; what the allocator kept of them shows right after the trainer is built."""
    growth, outside = m["peak"] - m["baseline"], 16 * n_train
    kept = min(weights, max(0, m["after_setup"] - m["baseline"] - weights - outside))
    items = [
        dict(what="data order and int64 labels the Trainer keeps outside the arena", bytes=outside),
        dict(what="initial weights drawn outside the arena and copied in, freed but kept by the allocator "
                  "(RSS after the trainer was built - weights - the line above)", bytes=kept),
        dict(what="Python heap peak in the loop (tracemalloc)", bytes=m["python_heap_peak"]),
    ]
    rest = growth - arena - sum(i["bytes"] for i in items)
    return dict(measured_minus_planned_bytes=growth - arena, items=items, rest_bytes=rest,
                rest_note="BLAS and Numba thread workspaces, allocator slack, page rounding; negative when "
                          "arena pages were never touched")


def setting_report(label, cfg, plan, in_width, held, budget, target, m, runtime=0):
    """Everything the report says about one setting, as plain JSON-ready values. target: None, or
    the device to fit against as data: {name, ram_bytes, ...} (the caller looks it up). runtime: the
    process's resident memory before the data and the arena, which the budget covers too (as in edgeff
    plan and train): planned, the whole process is runtime + arena + data; measured, runtime + the
    growth of resident memory while training + data. Dense nets get a row per layer, conv nets a row
    per block."""
    trainer = m["trainer"]
    base = plan_report(plan, cfg.batch_size, held, budget, backprop_bytes(cfg, trainer.ds, in_width, cfg.batch_size),
                       runtime)
    if cfg.is_conv:
        rows, backprop, unit = block_rows(plan, trainer.layout, m), conv_backprop_estimate(cfg, trainer.ds), "block"
        schedule = negatives = None           # dense FF's options; conv nets have --hybrid and --width-mult
    else:
        sizes = [in_width] + list(cfg.sizes[1:])
        rows, unit = layer_rows(plan, sizes, cfg.batch_size, m), "layer"
        backprop = backprop_estimate(sizes, cfg.batch_size, cfg.optimizer)
        schedule, negatives = cfg.schedule, cfg.negatives
    weights = sum(b.nbytes for b in plan.buffers if b.kind == "weights")
    growth = m["peak"] - m["baseline"]
    lt, st = m["layer_time"], m["step_time"]
    head_mask = np.isin(m["step_phase"], [i for i, p in enumerate(m["phases"]) if p == ["head"]])
    nrt = m["nrt"]
    report = dict(
        setting=label, model=cfg.model, dataset=cfg.dataset, schedule=schedule, optimizer=cfg.optimizer,
        negatives=negatives, steps=int(len(st)), batch_rows=m["batch_rows"],
        **{k: base[k] for k in ("arena_bytes", "naive_bytes", "data_bytes", "runtime_bytes", "budget_bytes", "fits",
                                "batch_size",
                                "ff_activation_bytes", "backprop_activation_bytes", "workspace_bytes")},
        weights_bytes=weights,
        headroom_bytes=None if budget is None else budget - runtime - plan.arena_bytes - held,
        fits_measured=None if budget is None else runtime + growth + held <= budget,
        rss_baseline_bytes=m["baseline"], rss_after_setup_bytes=m["after_setup"], peak_rss_bytes=m["peak"],
        rss_growth_bytes=growth, growth_over_arena=round(growth / plan.arena_bytes, 4), goal_ratio=GOAL_RATIO,
        meets_goal=growth <= GOAL_RATIO * plan.arena_bytes,
        process_peak_rss_bytes=peak_rss_bytes(),
        python_heap_peak_bytes=m["python_heap_peak"], python_heap_growth_bytes=m["python_heap_growth"],
        nrt_allocations_in_loop=nrt["allocs"] - nrt["argument_wrappers"],
        nrt=dict(nrt, unfreed=nrt["allocs"] - nrt["frees"]),
        ff_by_kind={kind: _peak(plan, kind) for kind in KINDS},
        backprop=backprop,
        layers=rows,
        other_bytes={kind: peak_live_bytes([b for b in plan.buffers if b.layer is None], (kind,))
                     for kind in sorted({b.kind for b in plan.buffers if b.layer is None})},
        step_seconds=dict(median=float(np.median(st[~head_mask])) if (~head_mask).any() else None,
                          layers_median=float(np.median(lt[~head_mask].sum(axis=1))) if (~head_mask).any() else None,
                          head_median=float(np.median(st[head_mask])) if head_mask.any() else None),
        loop_seconds=round(m["loop_seconds"], 3),
        difference=difference(m, plan.arena_bytes, len(trainer.ds.y_train), weights),
        target=None if target is None else dict(target, peak_rss_bytes=m["peak"], fits=m["peak"] <= target["ram_bytes"],
                                                headroom_bytes=target["ram_bytes"] - m["peak"]),
        phases=[_phase_name(p, len(rows), unit) for p in m["phases"]],
        timeline=m["timeline"],
        buffers=base["buffers"],
    )
    if cfg.is_conv:
        report.update(hybrid=cfg.hybrid, width_mult=cfg.width_mult)
    return report


def _peak(plan, kind):
    return peak_live_bytes(plan.buffers, (kind,))
