"""results.json, results.md and loss_vs_time.png from one results dict.

Pure functions of the dict (no TensorFlow); matplotlib is optional and only
imported by `plot`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.quality import TARGET_FACTOR

# --- formatting --------------------------------------------------------------------------


def fmt(value: Any, spec: str = ".3g", none: str = "–") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return none
    if isinstance(value, (int, float)):
        return format(value, spec)
    return str(value)


def fmt_pct(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.0f} %"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> str:
    """A GitHub Markdown table; `align` is one of l/r per column (default: first l, rest r)."""
    align = align or "l" + "r" * (len(headers) - 1)
    marks = [":--" if a == "l" else "--:" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_line(results: Mapping[str, Any]) -> str:
    m = results.get("machine", {})
    cpu = m.get("cpu", {})
    sw = m.get("software", {})
    blas = m.get("numpy_blas") or {}
    isa = ", ".join(cpu.get("isa", [])) or "?"
    guest = " (VM)" if cpu.get("hypervisor") else ""
    blas_s = f"{blas.get('library') or '?'} {blas.get('version') or ''}".strip()
    return (f"{cpu.get('model', '?')}{guest}, {cpu.get('cores', '?')} cores, {isa}; "
            f"{backend_name(sw)}, Keras {sw.get('keras', '?')} "
            f"({sw.get('keras_backend', '?')} backend), NumPy {sw.get('numpy', '?')} with {blas_s}")


def backend_name(software: Mapping[str, Any]) -> str:
    """'TensorFlow 2.21.0', 'JAX 0.8.1', 'PyTorch 2.13.0': the library that ran the steps."""
    backend = software.get("keras_backend", "tensorflow")
    label = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}.get(backend, backend)
    return f"{label} {software.get(backend, '?')}"


# --- sections ----------------------------------------------------------------------------


def peak_table(peaks: Sequence[Mapping[str, Any]]) -> str:
    rows = [[p["library"], p["dtype"], f"{p['n']}²", fmt(p["median_s"] * 1e3, ".1f"),
             fmt(p["gflops_median"], ".0f"), fmt(p["gflops_best"], ".0f"), fmt(p.get("gflop_per_cpu_s"), ".0f"),
             fmt_pct(p.get("others_cpu_share"))]
            for p in peaks]
    return table(["library", "dtype", "matmul", "median ms", "GFLOP/s (median)", "GFLOP/s (best)",
                  "GFLOP per CPU-s", "others' CPU"], rows, "lllrrrrr")


def step_table(steps: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for s in steps:
        if s.get("error"):
            rows.append([f"{s['size']}²", s["precision"], "error: " + s["error"][:60]] + [""] * 10)
            continue
        rows.append([f"{s['height']}×{s['width']}", s["precision"], fmt(s["median_s"], ".3f"),
                     fmt(s.get("cpu_median_s"), ".2f"), fmt(s["step_gflop"], ".1f"), fmt(s.get("gflops"), ".0f"),
                     fmt(s.get("pct_of_peak"), ".0f"), fmt(s.get("pct_of_peak_best"), ".0f"),
                     fmt(s.get("pct_of_peak_cpu"), ".0f"), fmt(s.get("speedup_vs_float32"), ".2f"),
                     fmt(s.get("speedup_vs_float32_cpu"), ".2f"), fmt(s["peak_rss_mib"], ".0f"),
                     fmt_pct(s.get("others_cpu_share"))])
    return table(["image", "precision", "s/step (median)", "CPU-s/step", "GFLOP/step", "GFLOP/s",
                  "% of peak", "% of peak (best/best)", "% of peak (CPU time)", "× vs float32",
                  "× vs float32 (CPU time)", "peak RSS MiB", "others' CPU"], rows, "llrrrrrrrrrrr")


def start_table(phases: Mapping[str, float]) -> str:
    names = {"python_started": "interpreter up", "imports": "imports (Keras and its backend, engine)",
             "weights": "weights loaded", "network": "network built", "targets": "targets computed",
             "first_step": "first step done (tracing)"}
    rows, previous = [], 0.0
    for key, label in names.items():
        if key in phases:
            rows.append([label, fmt(phases[key] - previous, ".2f"), fmt(phases[key], ".2f")])
            previous = phases[key]
    return table(["phase", "s", "cumulative s"], rows)


def job_table(job: Mapping[str, Any]) -> str:
    outcome = "image written" if job.get("wrote_image") else f"failed: {job.get('error', '?')}"
    return table(["size (longest side)", "wall s", "CPU s", "peak RSS MiB", "result", "others' CPU"],
                 [[f"{job['size']} px", fmt(job.get("wall_s"), ".1f"), fmt(job.get("cpu_s"), ".1f"),
                   fmt(job.get("peak_rss_mib"), ".0f"), outcome, fmt_pct(job.get("others_cpu_share"))]])


def ttq_table(ttq: Mapping[str, Any]) -> str:
    ref = ttq.get("reference") or {}
    rows = []
    for m in ttq["methods"]:
        t = m.get("time_to_target")
        ended = "" if m.get("ended") == "done" else f" (stopped: {m['ended']})"
        rows.append([
            f"{m['key']}. {m['label']}", str(m["evaluations"]), fmt(m["wall_s"], ".1f") + ended,
            fmt(m.get("best_over_ref"), ".4f"),
            "never" if t is None and ref else fmt(t, ".1f"),
            fmt(m.get("ratio_to_ref"), ".3f"), fmt(m.get("speedup"), ".2f") + ("×" if m.get("speedup") else ""),
            fmt(m.get("ratio_to_ref_steps"), ".3f"), fmt(m.get("work_to_target"), ".0f"), fmt(m.get("cpu_ratio_to_ref"), ".3f"),
            fmt_pct(m.get("cpu", {}).get("others_cpu_share")), fmt(m.get("peak_rss_mib"), ".0f"),
        ])
    return table(["method", "evals", "ran (s)", "best loss / L_ref",
                  f"time to ≤ {TARGET_FACTOR}·L_ref (s)", "÷ T_ref", "speed-up (T_ref ÷ time)",
                  "÷ ref's step time", "full-res evals to target", "CPU-time ÷ ref's", "others' CPU",
                  "peak RSS MiB"], rows, "lrrrrrrrrrrr")


def style_ratio_table(ttq: Mapping[str, Any]) -> str | None:
    """style_ratio against time on a real network (bench.styleratio), or None without one."""
    scored = [m for m in ttq["methods"] if m.get("style_ratio_at")]
    if not scored:
        return None
    fractions = list(scored[0]["style_ratio_at"])
    rows = [[f"{m['key']}. {m['label']}"]
            + [fmt(m["style_ratio_at"][f], ".3f") for f in fractions]
            + [fmt(m.get("style_ratio"), ".3f"), fmt(m.get("content_dist"), ".3f"),
               "never" if m.get("time_to_ref_style") is None else fmt(m["time_to_ref_style"], ".1f")]
            for m in scored]
    ref_s = (ttq.get("reference") or {}).get("seconds")
    heads = [f"at {f:g}·T_ref ({fmt(f * ref_s, '.0f')} s)" if ref_s else f"at {f:g}·T_ref" for f in fractions]
    return table(["method", *heads, "final style_ratio", "final content_dist",
                  "time to reference's style_ratio + 0.02 (s)"], rows, "l" + "r" * (len(heads) + 3))


def render_markdown(results: Mapping[str, Any]) -> str:
    b = results.get("benchmark", {})
    out = [f"# stylebot benchmark ({b.get('mode', '?')} mode)", "",
           f"**Machine:** {machine_line(results)}.  ",
           f"**Network:** {results.get('weights', '?')}.  ",
           (f"**Images:** content {results.get('images', {}).get('content', '?')}; "
            f"style {results.get('images', {}).get('style', '?')}.  "),
           (f"**Run:** {b.get('started', '?')}, {fmt(b.get('runtime_s'), '.0f')} s in all; load average "
            f"at start {fmt_load(b.get('load_start'))}, at end {fmt_load(b.get('load_end'))}. "
            "\"others' CPU\" is the share of all cores other processes used during that measurement: "
            "timings with a high share are pessimistic."), ""]
    if results.get("peak"):
        out += ["## Reference peak (warm, square matmuls)", "", peak_table(results["peak"]), ""]
        blas = results.get("machine", {}).get("numpy_blas") or {}
        if blas:
            out += [(f"NumPy BLAS: {blas.get('library')} {blas.get('version') or ''}, "
                     f"{blas.get('threads') or '?'} threads, {blas.get('architecture') or '?'} "
                     f"(from {blas.get('source')})."), ""]
    if results.get("step_cost"):
        out += ["## Step cost (loss + image gradient, the engine's compiled `Objective.step`)", "",
                step_table(results["step_cost"]), "",
                ("GFLOP/step = 2 × forward 3×3 convolution FLOPs (2·H·W·C_in·C_out·9 per conv, conv1_1 "
                 "… the deepest layer in use; the image gradient needs each conv's input gradient, no "
                 "weight gradients); Gram matrices, pooling and losses are not counted. % of peak is "
                 "against the backend's matmul of the same dtype: median step vs median matmul; "
                 "fastest step vs fastest matmul (what a quiet moment allows); and GFLOP per CPU-second "
                 "of the step vs of the matmul (both on all cores: barely moved by other processes, "
                 "but counting spin-waits). Peak RSS is a fresh process's "
                 "high-water mark for that configuration (weights, network, targets, steps)."), ""]
    if results.get("process_start"):
        ps = results["process_start"]
        out += [f"## Engine process start ({ps.get('config', '')}, cold process)", "",
                start_table(ps.get("phases_s", {})), ""]
    if results.get("job"):
        out += ["## The default job in a fresh process (`python -m engine`, as a host runs it)", "",
                job_table(results["job"]), "",
                ("Wall and CPU time include the interpreter, imports, weights, network, targets, "
                 "every scale and writing the PNG; peak RSS is that process's own high-water mark "
                 "(bench.peakrss), i.e. what the bot's engine process needs at this size."), ""]
    ttq = results.get("time_to_quality")
    if ttq:
        ref = ttq.get("reference") or {}
        out += [f"## Time to quality at {ttq['shape'][1]}×{ttq['shape'][0]} px", ""]
        if ref:
            steps = ref.get("step_seconds")
            split = (f", of which {fmt(steps, '.1f')} s in network steps and the rest in the reference's "
                     "NumPy L-BFGS and setup" if steps else "")
            out += [(f"L_ref = {fmt(ref['loss'], '.6g')} (the loss of the image {ref['label']} returns), "
                     f"T_ref = {fmt(ref['seconds'], '.1f')} s{split}; target {TARGET_FACTOR}·L_ref = "
                     f"{fmt(ttq['target_loss'], '.6g')}."), ""]
        out += [ttq_table(ttq), ""]
        styled = style_ratio_table(ttq)
        if styled:
            out += ["### How painted, against time (real network)", "", styled, "",
                    ("style_ratio (bench/styleratio.py, as ../shared/realnet/score.py): the snapshot's "
                     "mean relative Gram distance to the painting over the photo's, on keras.applications' "
                     "network from the weights file; 1 = no closer than the photo, lower = more painted. "
                     "content_dist: how far conv4_2 moved from the photo's (relative)."), ""]
        out += [("Time is wall time from the start of the method's setup (resizing, targets) with the "
                 "benchmark's bookkeeping subtracted, to the first evaluated image whose full-resolution "
                 "loss (same network, same loss: stylebot's default loss settings) is within the target; "
                 "\"full-res evals\" counts work in full-resolution steps (a half-size step is ¼) and "
                 "\"CPU-time ÷ ref's\" is the benchmark process's CPU time to the target over the "
                 "reference's whole run: two cross-checks of \"÷ T_ref\" that other processes on the "
                 "machine barely move (the first ignores precision, the second counts spin-waiting)."), ""]
        for m in ttq["methods"]:
            settings = ", ".join(f"{k}={fmt(v, '.4g') if isinstance(v, float) else v}"
                                 for k, v in m.get("settings", {}).items())
            notes = "; ".join(m.get("notes", []))
            rss = ""
            if m.get("peak_rss_mib") is not None:
                rss = f" Process RSS {fmt(m.get('rss_start_mib'), '.0f')} MiB at its start, peak {fmt(m['peak_rss_mib'], '.0f')} MiB."
            out.append(f"- **{m['key']}. {m.get('description', m['label'])}** — {settings}."
                       + (f" {notes}." if notes else "") + rss)
        out.append("")
    for caveat in results.get("caveats", []):
        out.append(f"> {caveat}  ")
    return "\n".join(out).rstrip() + "\n"


def fmt_load(load: Sequence[float] | None) -> str:
    return "–" if not load else " / ".join(f"{x:.1f}" for x in load)


# --- files -------------------------------------------------------------------------------


def write_json(results: Mapping[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=1, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:
        pass
    return str(value)


COLOURS = {"a": "tab:orange", "b": "tab:green", "c": "tab:blue", "d": "tab:red"}


def plot(results: Mapping[str, Any], path: Path) -> str | None:
    """loss_vs_time.png; returns None, or why it was not drawn."""
    ttq = results.get("time_to_quality")
    if not ttq or not ttq.get("methods"):
        return "no time-to-quality results"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib, or the bench extra)"
    ref = ttq.get("reference") or {}
    panels = 2 if ref else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 5.2), dpi=110, squeeze=False)
    finite = [p[2] for m in ttq["methods"] for p in m.get("curve") or [] if math.isfinite(p[2])]
    for index, ax in enumerate(axes[0]):
        zoom = index == 1  # right panel: loss / L_ref near the target
        scale = ref["loss"] if zoom else 1.0
        for m in ttq["methods"]:
            curve = m.get("curve") or []
            if not curve:
                continue
            colour = COLOURS.get(m["key"])
            wide = m["key"] == "c"  # the reference under the others, visible where they overlap
            ax.plot([p[1] for p in curve], [p[2] / scale for p in curve], "-", color=colour,
                    lw=3.0 if wide else 1.4, alpha=0.55 if wide else 1.0, zorder=1 if wide else 2,
                    label=f"{m['key']}. {m['label']}", marker="." if len(curve) < 80 else None, ms=3)
            if m.get("time_to_target") is not None:
                ax.plot([m["time_to_target"]], [ttq["target_loss"] / scale], "o", color=colour, ms=7,
                        mfc="none", mew=1.8)
        if ref:
            ax.axhline(ttq["target_loss"] / scale, color="k", ls="--", lw=1, label=f"{TARGET_FACTOR}·L_ref")
            ax.axvline(ref["seconds"], color="grey", ls=":", lw=1, label="T_ref")
        ax.set_yscale("log")
        ax.set_xlabel("wall time (s)")
        ax.grid(True, which="both", alpha=0.3)
        if zoom:
            ax.set_ylim(0.97, 3.0)
            ticks = [1.0, 1.1, 1.25, 1.5, 2.0, 3.0]
            ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
            ax.set_ylabel("full-resolution loss / L_ref (log)")
            ax.set_title("near the target", fontsize=9)
        else:
            ax.set_ylabel("full-resolution loss (log)")
            if ref and finite:  # the start of a run is orders of magnitude above the interesting part
                ax.set_ylim(ttq["target_loss"] / 1.5, min(max(finite), ttq["target_loss"] * 1e3) * 1.2)
            ax.legend(fontsize=8)
    cpu = results.get("machine", {}).get("cpu", {})
    weights = "random weights" if "random" in results.get("weights", "") else "pretrained weights"
    fig.suptitle(f"Time to quality, {ttq['shape'][1]}×{ttq['shape'][0]} px, VGG-19 with {weights}; "
                 f"{cpu.get('model', '?')}, {cpu.get('cores', '?')} cores", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None
