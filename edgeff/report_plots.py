"""The report's plots as SVG text, drawn with matplotlib (an optional extra: pip install edgeff[report]).

plots(report) -> {name: svg text}, or None when matplotlib is not installed. No pyplot:
each figure is a plain matplotlib Figure, so no GUI backend and no global state."""

import io

MiB = 2**20
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
KIND_COLOURS = {"weights": "#4c72b0", "optimizer": "#dd8452", "activations": "#55a868", "gradients": "#c44e52",
                "workspace": "#8172b3"}


def plots(report):
    try:
        from matplotlib.figure import Figure
        import matplotlib
    except ImportError:
        return None
    settings = report["settings"]
    with matplotlib.rc_context({"svg.fonttype": "none", "font.size": 9}):   # text stays text: small, searchable
        return {"timeline": _svg(_timeline(Figure, settings), "timeline"),
                "layers": _svg(_layers(Figure, settings), "layers"),
                "ff_vs_backprop": _svg(_ff_vs_backprop(Figure, settings), "ffbp")}


def _svg(fig, salt):
    import matplotlib
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt}):   # ids unique per figure, stable per run
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]            # drop the XML prolog and doctype: inlined in HTML


def _timeline(Figure, settings):
    fig = Figure(figsize=(8, 3.6))
    ax = fig.add_subplot()
    for i, r in enumerate(settings):
        c = COLOURS[i % len(COLOURS)]
        tl = r["timeline"]
        ax.plot(tl["t"], [v / MiB for v in tl["rss"]], color=c, lw=1.2, label=f"RSS, {r['setting']}")
        plan = (r["rss_baseline_bytes"] + r["arena_bytes"]) / MiB
        ax.axhline(plan, color=c, ls="--", lw=1, label=f"baseline + arena (plan), {r['setting']}")
        ax.axhline(r["rss_baseline_bytes"] / MiB, color=c, ls=":", lw=1)
        for p, name in enumerate(r["phases"]):     # where each phase of the schedule starts
            starts = [t for t, q in zip(tl["t"], tl["phase"]) if q == p]
            if starts:
                ax.axvline(starts[0], color=c, lw=0.6, alpha=0.5)
                ax.annotate(name, (starts[0], 1), xycoords=("data", "axes fraction"), xytext=(2, -10 - 9 * i),
                            textcoords="offset points", fontsize=7, color=c)
    r = settings[0]
    if r["budget_bytes"] is not None:        # the budget holds arena + data; the interpreter comes on top
        level = (r["rss_baseline_bytes"] - r["data_bytes"] + r["budget_bytes"]) / MiB
        ax.axhline(level, color="#d62728", lw=1.5, label="budget (+ interpreter and libraries)")
    top = max(max(s["timeline"]["rss"]) for s in settings) / MiB
    if r["target"] and r["target"]["ram_bytes"] / MiB < 1.5 * top:
        ax.axhline(r["target"]["ram_bytes"] / MiB, color="black", lw=1.5, label=f"{r['target']['name']} RAM")
    ax.set_xlabel("seconds since the trainer was built")
    ax.set_ylabel("resident memory (MiB)")
    ax.set_title("Memory timeline (dotted: baseline)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def _layers(Figure, settings):
    fig = Figure(figsize=(8, 3.6))
    ax = fig.add_subplot()
    labels, x = [], 0
    for r in settings:
        for row in r["layers"]:
            bottom = 0.0
            for kind, colour in KIND_COLOURS.items():
                v = row[f"{kind}_bytes"] / MiB
                ax.bar(x, v, bottom=bottom, color=colour, label=kind if x == 0 else None)
                bottom += v
            name = f"B{row['block']}" if "block" in row else f"L{row['layer']}"
            labels.append(name + (f"\n{r['setting']}" if len(settings) > 1 else ""))
            x += 1
    ax.set_xticks(range(x), labels, fontsize=7)
    ax.set_ylabel("MiB (most live at one step)")
    ax.set_title(f"Memory per {'block' if 'hybrid' in settings[0] else 'layer'}, FF plan")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return fig


def _ff_vs_backprop(Figure, settings):
    fig = Figure(figsize=(8, 3.2))
    ax = fig.add_subplot()
    n = len(settings)
    xs = range(n)
    ax.bar([i - 0.2 for i in xs], [r["ff_activation_bytes"] / MiB for r in settings], 0.4, label="FF (one layer deep)",
           color="#55a868")
    ax.bar([i + 0.2 for i in xs], [r["backprop_activation_bytes"] / MiB for r in settings], 0.4,
           label="backprop (every layer kept)", color="#c44e52")
    ax.set_xticks(list(xs), [r["setting"] for r in settings])
    ax.set_ylabel("activation MiB")
    ax.set_title("Activations: Forward-Forward vs backprop, same net and batch")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return fig
