"""A profile report (edgeff/profile.py's dict) as report.json, report.md (with SVG files
beside it) and a self-contained report.html (plots inline, no external assets).

Markdown and HTML are rendered from one list of blocks, so they carry the same tables:
("h", level, text), ("p", text), ("table", headers, rows, collapsed), ("plot", name, caption)."""

import html
import json
import os

from .fileio import atomic_write_text
from .memory import fmt_bytes
from .report_plots import plots

PLOT_CAPTIONS = {
    "timeline": "Memory timeline: resident memory while training, the plan's arena over the baseline, the budget",
    "layers": "Memory per layer by kind (weights, optimiser state, activations, gradients)",
    "ff_vs_backprop": "Activation memory: FF against the same net trained with backprop",
}
NO_PLOTS = ("Plots need matplotlib, which is not installed (pip install 'edgeff[report]'); "
            "the tables hold the same numbers.")


def write_report(report, out_dir, formats):
    """Write the chosen formats into out_dir; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    written, umask = [], os.umask(0)
    os.umask(umask)

    def put(name, text):
        path = os.path.join(out_dir, name)
        atomic_write_text(path, text)
        os.chmod(path, 0o666 & ~umask)          # a report is for sharing; the temp file was private
        written.append(path)

    if "json" in formats:
        put("report.json", json.dumps(report, indent=1, allow_nan=False) + "\n")
    svgs = plots(report) if ("md" in formats or "html" in formats) else None
    blocks = document(report)
    if "md" in formats:
        for name, svg in (svgs or {}).items():
            put(f"{name}.svg", svg)
        put("report.md", markdown(blocks, svgs is not None))
    if "html" in formats:
        put("report.html", page(blocks, svgs))
    return written


# ---- content ----

def _mib(n):
    return "-" if n is None else fmt_bytes(n)


def _yes(v):
    return "-" if v is None else ("yes" if v else "NO")


def _ms(s):
    return "-" if s is None else f"{1000 * s:.2f} ms"


def document(report):
    settings = report["settings"]
    r0 = settings[0]
    blocks = [("h", 1, f"edgeff memory profile: {r0['model']} on {r0['dataset']}"),
              ("p", f"edgeff {report['edgeff_version']}, {report['created']}, {report['machine']} with "
                    f"{report['cpus']} CPUs. " + _options(r0) + (f"; run {report['run_dir']}" if report.get("run_dir") else "")
                    + (f"; sweep {report['sweep']}" if report.get("sweep") else "") + "."),
              ("p", "Goal: training adds at most " f"{r0['goal_ratio']} x the planned arena to resident memory "
                    "((peak RSS - baseline) / arena). Baseline: after the kernels were compiled and the data set "
                    "loaded, before the arena existed.")]
    blocks += [("h", 2, "Settings"), ("table", ["setting", "batch", "arena", "no sharing", "data", "budget",
                                                 "fits (plan)", "headroom", "baseline RSS", "peak RSS", "growth",
                                                 "growth / arena", f"<= {r0['goal_ratio']}", "Python heap peak",
                                                 "Numba allocs in loop", "step (median)", "steps"],
                                       [[r["setting"], r["batch_size"], _mib(r["arena_bytes"]), _mib(r["naive_bytes"]),
                                         _mib(r["data_bytes"]), _mib(r["budget_bytes"]), _yes(r["fits"]),
                                         _mib(r["headroom_bytes"]), _mib(r["rss_baseline_bytes"]),
                                         _mib(r["peak_rss_bytes"]), _mib(r["rss_growth_bytes"]),
                                         f"{r['growth_over_arena']:.2f}", _yes(r["meets_goal"]),
                                         _mib(r["python_heap_peak_bytes"]), r["nrt_allocations_in_loop"],
                                         _ms(r["step_seconds"]["median"]), r["steps"]] for r in settings], False)]
    blocks += [("h", 2, "Plots")] + [("plot", name, caption) for name, caption in PLOT_CAPTIONS.items()]
    for r in settings:
        blocks += _setting(r, len(settings) > 1)
    return blocks


def _options(r):
    if "hybrid" in r:      # a conv net
        return f"Hybrid {r['hybrid']}, width multiplier {r['width_mult']:g}, optimiser {r['optimizer']}"
    return f"Schedule {r['schedule']}, optimiser {r['optimizer']}, negatives {r['negatives']}"


def _units_table(r):
    """The per-layer table (dense) or per-block table (conv) and the paragraph after it."""
    kinds = lambda row, extra=(): [_mib(row[f"{k}_bytes"]) for k in ("weights", "optimizer", "activations",
                                                                       "gradients", *extra)]
    other = _mib(r["other_bytes"].get("activations", 0))
    if "hybrid" not in r:
        return ("table", ["layer", "shape", "params", "weights", "optimiser", "activations", "gradients",
                          "backprop activations", "step (median)"],
                [[row["layer"], f"{row['in_width']} -> {row['width']}", f"{row['params']:,}", *kinds(row),
                  _mib(row["backprop_activation_bytes"]), _ms(row["step_seconds"])] for row in r["layers"]]
                + [["other", "data staging, goodness and loss, linear head", "", "", "", other,
                    "", "", f"head {_ms(r['step_seconds']['head_median'])}"]], False)
    shape = lambda s: "x".join(map(str, s))
    return ("table", ["block", "layers", "shape", "params (with its head)", "weights", "optimiser", "activations",
                      "gradients", "workspace", "backprop activations", "step (median)"],
            [[row["block"], row["layers"], f"{shape(row['in_shape'])} -> {shape(row['out_shape'])}",
              f"{row['params']:,}", *kinds(row, ("workspace",)), _mib(row["backprop_activation_bytes"]),
              _ms(row["step_seconds"])] for row in r["layers"]]
            + [["other", "data staging", "", "", "", "", other, "", "", "", ""]], False)


def _setting(r, several):
    title = (lambda t: f"{t} ({r['setting']})") if several else (lambda t: t)
    nrt, conv = r["nrt"], "hybrid" in r
    unit = "block" if conv else "layer"
    out = [("h", 2, title("Planned vs measured")),
           ("table", ["", "planned", "measured", "how measured"], [
               ["training memory above the baseline", _mib(r["arena_bytes"]), _mib(r["rss_growth_bytes"]),
                "peak RSS (sampled from /proc/self/statm) - baseline"],
               ["whole process", _mib(r["rss_baseline_bytes"] + r["arena_bytes"]), _mib(r["peak_rss_bytes"]),
                "baseline + arena / peak RSS"],
               ["Python heap in the loop", "0 B", _mib(r["python_heap_peak_bytes"]), "tracemalloc peak"],
               ["Numba NRT allocations in the loop", "0", str(r["nrt_allocations_in_loop"]),
                f"{nrt['allocs']} allocations - {nrt['argument_wrappers']} argument wrappers; unfreed {nrt['unfreed']}"],
               ["fits the budget", _yes(r["fits"]), _yes(r["fits_measured"]),
                "runtime + arena + data / runtime + growth + data"],
           ], False),
           ("p", f"The baseline ({_mib(r['rss_baseline_bytes'])}) is the Python interpreter, NumPy, Numba with its "
                 f"compiled kernels, the BLAS library and the data set ({_mib(r['data_bytes'])}); the budget covers "
                 f"the whole process: the runtime measured before the data was loaded ({_mib(r['runtime_bytes'])}: "
                 "interpreter, libraries, kernels), the arena and the data, as edgeff plan and train count it. "
                 "Numba makes one small wrapper per array argument "
                 "of each kernel call from Python and frees it on return; those are not allocations of the loop. "
                 f"Training added {_mib(r['rss_growth_bytes'])}, {r['growth_over_arena']:.2f} x the arena "
                 f"({'within' if r['meets_goal'] else 'ABOVE'} the goal of {r['goal_ratio']} x). The difference:"),
           ("table", ["what", "bytes"],
            [[i["what"], _mib(i["bytes"])] for i in r["difference"]["items"]]
            + [[f"rest: {r['difference']['rest_note']}", _signed(r["difference"]["rest_bytes"])],
               ["measured - planned", _signed(r["difference"]["measured_minus_planned_bytes"])]], False),
           ("h", 3, title("Per block" if conv else "Per layer")),
           _units_table(r),
           ("p", f"Bytes per kind are the most live at one step of the plan (a {unit}'s optimiser state, "
                 f"activations and gradients). Buffers with no {unit}: data {_mib(r['other_bytes'].get('data', 0))}"
                 + ("." if conv else f", linear head {_mib(r['other_bytes'].get('head', 0))}.")),
           ("h", 3, title("FF vs backprop")),
           ("table", ["kind", "FF (most live at one step)", "backprop (estimate, all layers at once)"],
            [[k, _mib(r["ff_by_kind"][k]), _mib(r["backprop"][k])]
             for k in ("weights", "optimizer", "gradients", "activations", *(("workspace",) if conv else ()))], False),
           ("p", _ff_vs_backprop_note(r))]
    t = r["target"]
    if t:
        out += [("h", 3, title(f"Target {t['name']}")),
                ("table", ["RAM", "default budget", "peak RSS here", "fits", "headroom", "profile from"],
                 [[_mib(t["ram_bytes"]), _mib(t["default_budget_bytes"]), _mib(t["peak_rss_bytes"]), _yes(t["fits"]),
                   _signed(t["headroom_bytes"]), t["source"]]], False),
                ("p", "Peak RSS was measured on this machine; on the target the interpreter and libraries take "
                      "their own size, the arena and the data the same.")]
    out += [("h", 3, title("Memory plan")),
            ("table", ["buffer", "shape", "dtype", "kind", "layer", "bytes", "lifetime", "offset"],
             [[b["name"], "x".join(map(str, b["shape"])), b["dtype"], b["kind"], "" if b["layer"] is None else b["layer"] + 1,
               f"{b['bytes']:,}", f"{b['first']}-{b['last']}", f"{b['offset']:,}"]
              for b in sorted(r["buffers"], key=lambda b: (b["offset"], b["first"]))], True)]
    return out


def _ff_vs_backprop_note(r):
    if "hybrid" in r:
        return (f"FF trains one block at a time on a batch of {r['batch_size']} images and keeps that block's "
                "activations and its layer-normalised output only; backprop (the same net with --hybrid net, its "
                "memory plan) keeps every layer's output until the backward pass, so its activations grow with "
                "depth and FF's do not. Workspace is the conv kernels' column buffer (one tile of samples, about "
                "one L2 cache), the same for both and not counted as activations.")
    return (f"FF stages {2 * r['batch_size']} rows per batch of {r['batch_size']} (positive and negative "
            "data) and keeps one layer's input and output at a time; backprop keeps every layer's input and "
            f"pre-activation for {r['batch_size']} rows until the backward pass, so its activations grow with "
            "depth and FF's do not.")


def _signed(n):
    return ("-" if n < 0 else "+") + fmt_bytes(abs(n))


# ---- Markdown ----

def markdown(blocks, have_plots):
    lines, said = [], False
    for block in blocks:
        if block[0] == "h":
            lines += ["#" * block[1] + " " + block[2], ""]
        elif block[0] == "p":
            lines += [block[1], ""]
        elif block[0] == "plot":
            if have_plots:
                lines += [f"![{block[2]}]({block[1]}.svg)", ""]
            elif not said:
                lines += [NO_PLOTS, ""]
                said = True
        else:
            _, headers, rows, _ = block
            cell = lambda v: str(v).replace("|", "\\|")
            lines += ["| " + " | ".join(map(cell, headers)) + " |", "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
            lines.append("")
    return "\n".join(lines)


# ---- HTML ----

CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figcaption{color:#555;font-size:13px}svg{max-width:100%;height:auto}
.note{background:#fff6dd;padding:.5em 1em;border-left:4px solid #e0b000}"""


def page(blocks, svgs):
    e = html.escape
    parts, said = [], False
    for block in blocks:
        if block[0] == "h":
            parts.append(f"<h{block[1]}>{e(block[2])}</h{block[1]}>")
        elif block[0] == "p":
            parts.append(f"<p>{e(block[1])}</p>")
        elif block[0] == "plot":
            if svgs:
                parts.append(f'<figure id="plot-{block[1]}">{svgs[block[1]]}<figcaption>{e(block[2])}</figcaption></figure>')
            elif not said:
                parts.append(f'<p class="note" id="no-plots">{e(NO_PLOTS)}</p>')
                said = True
        else:
            _, headers, rows, collapsed = block
            table = ("<table><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in headers) + "</tr>"
                     + "".join("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>" for row in rows)
                     + "</table>")
            parts.append(f"<details><summary>{len(rows)} rows</summary>{table}</details>" if collapsed else table)
    title = e(blocks[0][2])
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
