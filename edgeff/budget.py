"""Does a training run fit a memory budget (or, without one, this machine)? Decided from the plan,
before anything is allocated."""

import dataclasses
import mmap

from .cgroup import cgroup_memory_limit, machine_memory
from .conv_models import conv_blocks
from .convnet import image_chw
from .errors import UsageError
from .layers.blocks import block_layout
from .layers.net import training_layout
from .memory import backprop_activation_bytes, fmt_bytes, peak_live_bytes, plan_greedy


# how a layerwise phase gets its frozen layers' output (choose_frozen_input) -> the cache's dtype
CACHE_DTYPES = {"cache": "float32", "cache-float16": "float16", "stream": None, None: None}


def layout_for(cfg, in_width, num_classes, batch_size=None, cache_rows=0, cache_dtype="float32"):
    """Every buffer of a training run with this config (layers/net.py), as objects; cache_rows:
    layerwise, keep the frozen first layer's product of that many rows as cache_dtype (choose_frozen_input)."""
    widths = list(cfg.sizes[1:])
    return training_layout(["dense"] * len(widths), widths, in_width, num_classes, batch_size or cfg.batch_size,
                           cfg.schedule, cfg.negatives == "hard", cfg.head_epochs > 0, cfg.optimizer, cfg.in_turn, cache_rows,
                           cache_dtype)


def layout_for_conv(cfg, ds, batch_size=None):
    """Every buffer of a conv FF run of cfg on data set ds (layers/blocks.py), as objects."""
    return block_layout(image_chw(ds.image_shape), conv_blocks(cfg.model, cfg.width_mult, cfg.hybrid),
                        ds.num_classes, batch_size or cfg.batch_size, cfg.optimizer, cfg.freeze, cfg.feedback_steps)


def backprop_cfg(cfg):
    """The same conv net trained end to end by backprop: one block (--hybrid net), nothing frozen, no feedback."""
    return dataclasses.replace(cfg, hybrid="net", freeze=0, algo="ff", feedback_steps=0)


def plan_for(cfg, in_width, num_classes, batch_size=None):
    """The greedy memory plan of a dense training run with this config."""
    return plan_greedy(layout_for(cfg, in_width, num_classes, batch_size).buffers)


def choose_frozen_input(cfg, ds, in_width, plan, budget, resumed=None, runtime=0):
    """(plan, how a layerwise phase gets its frozen layers' output, cache bytes). "cache": the plan
    that also keeps the frozen first layer's product of every training row (layers/dense.py) as
    float32, when it fits the budget (without one, this machine's memory); "cache-float16": the same
    at half the bytes, when only that fits; else `plan` and "stream": recomputed every batch, as
    always with --shift (it moves every image anew each batch) and --in-turn (a budget that tight
    has no room for it). The bytes are the chosen cache's, or, streaming, a float32 cache's. The
    how is None when no layer is ever frozen. resumed: the how of the run a checkpoint continues,
    kept (the ways give weights that differ in the last bits: BLAS rounds a row by the rows beside
    it, float16 rounds every product)."""
    if cfg.is_conv or cfg.schedule != "layerwise" or len(cfg.sizes) < 3:
        return plan, None, 0
    room = memory_limit(budget)[0]
    for how in ("cache", "cache-float16"):
        layout = layout_for(cfg, in_width, ds.num_classes, cfg.batch_size, len(ds.y_train), CACHE_DTYPES[how])
        cache_bytes = sum(b.nbytes for b in layout.cache.buffers())
        if how == "cache":
            float32_bytes = cache_bytes
        cached = plan_greedy(layout.buffers)
        fits = (not cfg.shift and not cfg.in_turn and room is not None
                and runtime + cached.arena_bytes + data_bytes(ds) <= room)
        if resumed == how or (resumed is None and fits):
            return cached, how, cache_bytes
    return plan, "stream", float32_bytes


def planner(cfg, ds, in_width=None):
    """plan_of(batch size) -> the memory plan of cfg's run on ds (dense: in_width, the first
    layer's input width with label inputs)."""
    if cfg.is_conv:
        return lambda b: plan_greedy(layout_for_conv(cfg, ds, b).buffers)
    return lambda b: plan_for(cfg, in_width, ds.num_classes, b)


def backprop_bytes(cfg, ds, in_width, batch_size):
    """Activations backprop would keep for the same net: the whole net's at once."""
    if cfg.is_conv:
        whole = layout_for_conv(backprop_cfg(cfg), ds, batch_size)
        return peak_live_bytes(whole.buffers, ("activations",))
    return backprop_activation_bytes(list(cfg.sizes[1:]), in_width, batch_size)


def data_bytes(ds):
    """The data set as held in RAM (uint8 pixels stay uint8). Memory-mapped arrays (--data-mmap) are
    not counted: their pages are the file's, read when used and dropped by the kernel when memory is short."""
    return sum(a.nbytes for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test) if not is_mapped(a))


def is_mapped(a):
    """Is array a (or an array it views) a memory-mapped file?"""
    while a is not None:
        if isinstance(a, mmap.mmap):
            return True
        a = getattr(a, "base", None)
    return False


def largest_batch(plan_of, available, limit):
    """The largest batch size in 1..limit whose arena fits `available` bytes, or 0."""
    fits = lambda b: plan_of(b).arena_bytes <= available
    if not fits(1):
        return 0
    lo, hi = 1, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def memory_limit(budget):
    """(bytes, how to say it, what to do) for what a run must fit in: the budget, else the memory the
    kernel holds this process to (its cgroup's limit), else this machine's. A budget above the
    cgroup's limit is refused: the kernel would stop the run long before the budget."""
    cgroup = cgroup_memory_limit()
    if budget is not None:
        if cgroup is not None and budget > cgroup[0]:
            raise UsageError(f"--memory-budget {fmt_bytes(budget)} is more than this process may use: its cgroup's "
                             f"limit is {fmt_bytes(cgroup[0])} ({cgroup[1]}); give --memory-budget {cgroup[0]}B or less")
        return budget, f"--memory-budget is {fmt_bytes(budget)}", "raise --memory-budget or use a smaller --model"
    if cgroup is not None:
        return cgroup[0], f"this process's cgroup allows {fmt_bytes(cgroup[0])}", "use a smaller --model"
    memory = machine_memory()
    return memory, f"this machine has {fmt_bytes(memory or 0)} of memory", "use a smaller --model"


def fit_budget(plan_of, batch_size, ds, budget, auto=False, runtime=0):
    """(plan, batch size) for batch_size, or with auto the largest batch that fits; plan_of: planner().
    runtime: the process's own resident memory before the data and the arena (measured after the imports and
    the kernel load: commands/train.prepare).

    Raises UsageError naming what needs what when runtime + arena + data does not fit the budget or,
    without one, the cgroup's limit or this machine's physical memory."""
    held = runtime + data_bytes(ds)
    limit, limit_text, remedy = memory_limit(budget)
    if auto:
        if budget is None:
            raise UsageError("--batch-size auto needs --memory-budget")
        best = largest_batch(plan_of, budget - held, min(len(ds.y_train), 8192))
        if best == 0:
            raise _no_batch_fits(plan_of, runtime, ds, limit_text, remedy)
        return plan_of(best), best
    plan = plan_of(batch_size)
    if limit is not None and plan.arena_bytes + held > limit:
        best = largest_batch(plan_of, limit - held, batch_size)
        if best == 0:
            raise _no_batch_fits(plan_of, runtime, ds, limit_text, remedy)
        big = ", ".join(f"{b.name} {fmt_bytes(b.nbytes)}" for b in plan.largest(3))
        raise UsageError(f"training needs {fmt_bytes(plan.arena_bytes + held)} (runtime {fmt_bytes(runtime)} + "
                         f"arena {fmt_bytes(plan.arena_bytes)} + data {fmt_bytes(data_bytes(ds))}) but {limit_text}; "
                         f"largest buffers: {big}; --batch-size {best} would fit")
    return plan, batch_size


def _no_batch_fits(plan_of, runtime, ds, limit_text, remedy):
    plan = plan_of(1)
    fixed = peak_live_bytes(plan.buffers, ("weights", "optimizer", "head", "replay"))
    replay = " and a learn session's replay buffer" if any(b.kind == "replay" for b in plan.buffers) else ""
    return UsageError(f"no batch size fits: {limit_text} but the weights, optimiser state{replay} alone need "
                      f"{fmt_bytes(fixed)}, the data {fmt_bytes(data_bytes(ds))} and the runtime (interpreter, "
                      f"libraries, kernels) {fmt_bytes(runtime)}; {remedy}")
