"""Does a training run fit a memory budget? Decided from the plan, before training."""

from .errors import UsageError
from .memory import fmt_bytes, peak_live_bytes, plan_greedy, training_buffers


def plan_for(cfg, in_width, num_classes, batch_size=None):
    """The greedy memory plan of a training run with this config."""
    return plan_greedy(training_buffers(list(cfg.sizes[1:]), in_width, num_classes, batch_size or cfg.batch_size,
                                        cfg.schedule, cfg.negatives == "hard", cfg.head_epochs > 0, cfg.optimizer))


def data_bytes(ds):
    """The data set as held in RAM (uint8 pixels stay uint8)."""
    return sum(a.nbytes for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test))


def largest_batch(cfg, in_width, num_classes, available, limit):
    """The largest batch size in 1..limit whose arena fits `available` bytes, or 0."""
    fits = lambda b: plan_for(cfg, in_width, num_classes, b).arena_bytes <= available
    if not fits(1):
        return 0
    lo, hi = 1, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def fit_budget(cfg, in_width, num_classes, ds, budget, auto=False):
    """(plan, batch size) for cfg's batch size, or with auto the largest batch that fits.

    Raises UsageError naming what needs what when nothing fits."""
    held = data_bytes(ds)
    available = budget - held if budget is not None else None
    n = len(ds.y_train)
    if auto:
        if available is None:
            raise UsageError("--batch-size auto needs --memory-budget")
        best = largest_batch(cfg, in_width, num_classes, available, min(n, 8192))
        if best == 0:
            raise _no_batch_fits(cfg, in_width, num_classes, budget, held)
        return plan_for(cfg, in_width, num_classes, best), best
    plan = plan_for(cfg, in_width, num_classes)
    if budget is not None and plan.arena_bytes + held > budget:
        best = largest_batch(cfg, in_width, num_classes, available, cfg.batch_size)
        if best == 0:
            raise _no_batch_fits(cfg, in_width, num_classes, budget, held)
        big = ", ".join(f"{b.name} {fmt_bytes(b.nbytes)}" for b in plan.largest(3))
        raise UsageError(f"training needs {fmt_bytes(plan.arena_bytes + held)} (arena {fmt_bytes(plan.arena_bytes)} + "
                         f"data {fmt_bytes(held)}) but --memory-budget is {fmt_bytes(budget)}; largest buffers: {big}; "
                         f"--batch-size {best} would fit")
    return plan, cfg.batch_size


def _no_batch_fits(cfg, in_width, num_classes, budget, held):
    plan = plan_for(cfg, in_width, num_classes, 1)
    fixed = peak_live_bytes(plan.buffers, ("weights", "optimizer", "head"))
    return UsageError(f"no batch size fits {fmt_bytes(budget)}: the weights and optimiser state alone need "
                      f"{fmt_bytes(fixed)} and the data {fmt_bytes(held)}; raise --memory-budget or use a smaller --model")
