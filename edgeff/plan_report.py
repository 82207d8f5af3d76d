"""A training run's memory plan as a report: JSON-ready data and its text table
(edgeff plan, edgeff train --dry-run, and the profile report's planned figures)."""

from .memory import fmt_bytes, peak_live_bytes


def plan_report(plan, batch_size, held, budget, backprop_bytes, runtime=0, frozen_input=None, cache_bytes=0):
    """backprop_bytes: the activations backprop would keep for the same net (budget.backprop_bytes);
    runtime: the process's own resident memory, measured before the data and the arena;
    frozen_input, cache_bytes: how layerwise phases get their frozen layers' output, "cache",
    "cache-float16" or "stream" (None: no layer is frozen), and what the cache takes or would take
    (budget.choose_frozen_input)."""
    ff_act = peak_live_bytes(plan.buffers, ("activations",))
    workspace = peak_live_bytes(plan.buffers, ("workspace",))
    return {
        "arena_bytes": plan.arena_bytes,
        "naive_bytes": plan.naive_bytes,
        "data_bytes": held,
        "runtime_bytes": runtime,
        "budget_bytes": budget,
        "fits": None if budget is None else runtime + plan.arena_bytes + held <= budget,
        "batch_size": batch_size,
        "ff_activation_bytes": ff_act,
        "backprop_activation_bytes": backprop_bytes,
        "workspace_bytes": workspace,
        "frozen_input": frozen_input,
        "cache_bytes": cache_bytes,
        "buffers": [dict(name=b.name, shape=list(b.shape), dtype=b.dtype, bytes=b.nbytes, first=b.first, last=b.last,
                         offset=plan.offsets[b.name], kind=b.kind, layer=b.layer) for b in plan.buffers],
    }


def print_plan(report):
    rows = sorted(report["buffers"], key=lambda b: (b["offset"], b["first"]))
    print(f"{'buffer':18} {'shape':>14} {'bytes':>12} {'lifetime':>10} {'offset':>12}")
    for b in rows:
        shape = "x".join(map(str, b["shape"]))
        print(f"{b['name']:18} {shape:>14} {b['bytes']:>12,} {str(b['first']) + '-' + str(b['last']):>10} {b['offset']:>12,}")
    print(f"arena {fmt_bytes(report['arena_bytes'])} (no sharing: {fmt_bytes(report['naive_bytes'])}), "
          f"data in RAM {fmt_bytes(report['data_bytes'])}, batch size {report['batch_size']}")
    print(f"process: runtime {fmt_bytes(report['runtime_bytes'])} (measured: interpreter, libraries, kernels) "
          f"+ arena {fmt_bytes(report['arena_bytes'])} + data {fmt_bytes(report['data_bytes'])} = "
          f"{fmt_bytes(report['runtime_bytes'] + report['arena_bytes'] + report['data_bytes'])}")
    print(f"activations per batch: FF {fmt_bytes(report['ff_activation_bytes'])}, "
          f"backprop would keep {fmt_bytes(report['backprop_activation_bytes'])}")
    if report["workspace_bytes"]:
        print(f"kernel workspace (conv columns, not activations): {fmt_bytes(report['workspace_bytes'])}")
    if report["frozen_input"] == "cache":
        print(f"frozen layers: cache (layer 1's product of every training row, {fmt_bytes(report['cache_bytes'])}, "
              "made once; later layers train from it)")
    elif report["frozen_input"] == "cache-float16":
        print(f"frozen layers: cache at float16 (layer 1's product of every training row, "
              f"{fmt_bytes(report['cache_bytes'])}, made once; later layers train from it; at float32 it had no room)")
    elif report["frozen_input"] == "stream":
        print(f"frozen layers: stream (recomputed every batch; a cache would take {fmt_bytes(report['cache_bytes'])}, "
              "about half at float16: no room, or --shift, or --in-turn)")
    if report["budget_bytes"] is not None:
        total = report["runtime_bytes"] + report["arena_bytes"] + report["data_bytes"]
        verdict = "fits" if report["fits"] else "does NOT fit"
        print(f"{verdict} in --memory-budget {fmt_bytes(report['budget_bytes'])} "
              f"(needs {fmt_bytes(total)}, headroom {fmt_bytes(report['budget_bytes'] - total)})")
