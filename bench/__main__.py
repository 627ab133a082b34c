"""`python -m bench`: stylebot's benchmark, one machine, one invocation.

    python -m bench --quick            # < 5 min on 2 cores: 256 px, a 150-evaluation reference
    python -m bench                    # full: 512 px, the real 500-evaluation L-BFGS reference
    python -m bench --methods c,d --tq-size 384 --parts ttq

Writes results.json, results.md and loss_vs_time.png into --out (default
bench/results/, git-ignored) and prints the Markdown to stdout; progress goes to
stderr. Parts, in the order they run:
  steps -- step cost per (size, precision), each in a fresh child process (its
           peak RSS is its own); the first child's phases are the engine start-up
  peak  -- the Keras backend's float32/bfloat16 and NumPy float32 matmul GFLOP/s
  ttq   -- time to quality of methods a-d (see bench/methods.py) at --tq-size
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from bench import machine, quality, report, styleratio
from bench.methods import METHODS, REFERENCE_HISTORY, log

QUICK = {"sizes": "256,512", "tq_size": 256, "ref_iterations": 100, "repeats": 3, "peak_n": 4096,
         "peak_repeats": 7}
FULL = {"sizes": "256,384,512", "tq_size": 512, "ref_iterations": 500, "repeats": 7, "peak_n": 4096,
        "peak_repeats": 11}
PARTS = ("steps", "peak", "ttq", "job")
# On a real network: style_ratio read at these fractions of T_ref, and "as painted as the
# reference" = within this of the reference's final style_ratio.
STYLE_RATIO_TIMES = (0.05, 0.1, 0.25, 0.5, 1.0)
STYLE_RATIO_SLACK = 0.02


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="< 5 min on 2 idle cores: step cost at 256/512 px (3 repeats), time to "
                        "quality at 256 px against a 100-evaluation L-BFGS reference")
    p.add_argument("--out", default="bench/results", help="output folder (default: bench/results)")
    p.add_argument("--content", help="content image (default: a built-in photo-like scene)")
    p.add_argument("--style", help="style image (default: a built-in brush-stroke texture)")
    p.add_argument("--sizes", help="step-cost sizes, comma-separated (full: 256,384,512; quick: 256,512)")
    p.add_argument("--precision", default="float32,bfloat16",
                   help="step-cost precisions, comma-separated (default: float32,bfloat16)")
    p.add_argument("--methods", default="a,b,c,d", help="time-to-quality methods (default: a,b,c,d)")
    p.add_argument("--parts", default=",".join(PARTS), help="parts to run (default: steps,peak,ttq,job)")
    p.add_argument("--tq-size", type=int, help="time-to-quality size, longest side (full 512, quick 256)")
    p.add_argument("--ref-iterations", type=int,
                   help="L-BFGS reference evaluations (full 500 = jcjohnson's default; quick 100)")
    p.add_argument("--lbfgs-history", type=int, default=REFERENCE_HISTORY,
                   help=f"L-BFGS history of the reference (default {REFERENCE_HISTORY}; jcjohnson's is 100, "
                        "which makes the host-side two-loop recursion cost more than a small network pass)")
    p.add_argument("--budget", type=float, default=1.0,
                   help="a, b and d stop after budget x T_ref of wall time (a and b also after "
                        "budget x reference evaluations); default 1.0: slower than the reference "
                        "is a miss whatever the exact time")
    p.add_argument("--snapshot-every", type=int, default=5,
                   help="the default job's images are scored every N evaluations (and at each "
                        "scale's end); default 5")
    p.add_argument("--repeats", type=int, help="timed steps per configuration (full 7, quick 3)")
    p.add_argument("--peak-n", type=int, help="matmul size for the peak (default 4096)")
    p.add_argument("--seed", type=int, default=0, help="seed of the jobs' initial noise (default 0)")
    p.add_argument("--weights", default="auto",
                   help="auto (models/ if present, else random seed 0; never downloads), random, or a path")
    p.add_argument("--models-dir", default="models")
    args = p.parse_args(argv)
    mode = QUICK if args.quick else FULL
    args.sizes = [int(s) for s in (args.sizes or mode["sizes"]).split(",") if s]
    args.precision = [s.strip() for s in args.precision.split(",") if s.strip()]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    args.parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    for m in args.methods:
        if m not in METHODS:
            p.error(f"unknown method {m!r}; use some of {','.join(METHODS)}")
    for part in args.parts:
        if part not in PARTS:
            p.error(f"unknown part {part!r}; use some of {','.join(PARTS)}")
    args.tq_size = args.tq_size or mode["tq_size"]
    args.ref_iterations = args.ref_iterations or mode["ref_iterations"]
    args.repeats = args.repeats or mode["repeats"]
    args.peak_n = args.peak_n or mode["peak_n"]
    args.peak_repeats = mode["peak_repeats"]
    return args


# --- step cost: one child process per configuration ---------------------------------------


def run_step_cost(args: argparse.Namespace) -> list[dict]:
    rows = []
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    for size in args.sizes:
        for precision in args.precision:
            log(f"step cost: {size} px {precision} (fresh process, {args.repeats} timed steps)")
            cmd = [sys.executable, "-m", "bench.stepcost", "--size", str(size), "--precision", precision,
                   "--repeats", str(args.repeats), "--weights", args.weights,
                   "--models-dir", args.models_dir, "--spawned-at", repr(time.time())]
            if args.content:
                cmd += ["--content", args.content]
            if args.style:
                cmd += ["--style", args.style]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
            try:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
            except (IndexError, json.JSONDecodeError):
                tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
                log(f"  failed: {tail[0]}")
                rows.append({"size": size, "precision": precision, "error": tail[0]})
                continue
            log(f"  {row['median_s']:.3f} s/step, peak RSS {row['peak_rss_mib']:.0f} MiB, "
                f"others' CPU {report.fmt_pct(row['others_cpu_share'])}")
            rows.append(row)
    return rows


def annotate_steps(rows: list[dict], peaks: list[dict]) -> None:
    peak_of = {p["dtype"]: p["gflops_median"] for p in peaks if p["library"] != "numpy"}
    best_of = {p["dtype"]: p["gflops_best"] for p in peaks if p["library"] != "numpy"}
    per_cpu = {p["dtype"]: p["gflop_per_cpu_s"] for p in peaks if p["library"] != "numpy"}
    ok = [r for r in rows if not r.get("error") and r["precision"] == "float32"]
    f32 = {r["size"]: r["median_s"] for r in ok}
    f32_cpu = {r["size"]: r["cpu_median_s"] for r in ok}
    for r in rows:
        if r.get("error"):
            continue
        r["gflops"] = r["step_gflop"] / r["median_s"]
        peak = peak_of.get(r["precision"])
        r["pct_of_peak"] = 100 * r["gflops"] / peak if peak else None
        best = best_of.get(r["precision"])
        r["pct_of_peak_best"] = 100 * r["step_gflop"] / r["min_s"] / best if best else None
        r["speedup_vs_float32"] = f32[r["size"]] / r["median_s"] if r["size"] in f32 else None
        r["speedup_vs_float32_cpu"] = f32_cpu[r["size"]] / r["cpu_median_s"] if r["size"] in f32_cpu else None
        cpu_peak = per_cpu.get(r["precision"])
        r["pct_of_peak_cpu"] = 100 * r["step_gflop"] / r["cpu_median_s"] / cpu_peak if cpu_peak else None


# --- the default job as a host runs it: `python -m engine` in a fresh process -----------


def run_job_process(args: argparse.Namespace, weights: object, content, style) -> dict:
    """Wall time and peak resident memory of the default job at the time-to-quality size,
    run by the CLI in a fresh process: start-up, weights, network, targets, the whole
    pyramid, the PNG written. The memory target is about this process (the bot's engine
    process does the same work); bench.peakrss says why it is measured from there."""
    import tempfile

    import numpy as np
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="stylebot-bench-job-") as tmp:
        paths = []
        for name, image in (("content", content), ("style", style)):
            path = Path(tmp) / f"{name}.png"
            Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8)).save(path)
            paths.append(str(path))
        out = Path(tmp) / "out.png"
        source = "random" if getattr(weights, "is_random", False) else str(weights.source)
        cmd = [sys.executable, "-m", "engine", *paths, "-o", str(out), "--size", str(args.tq_size),
               "--seed", str(args.seed), "--weights", source, "--quiet"]
        log(f"default job in a fresh process: {' '.join(cmd[1:])}")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
        started = time.perf_counter()
        with machine.CpuMonitor() as monitor:
            proc = subprocess.run([sys.executable, "-m", "bench.peakrss", *cmd], capture_output=True,
                                  text=True, env=env, timeout=3600, check=False)
        wall = time.perf_counter() - started
        try:
            measured = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            measured = {"exit_code": proc.returncode, "peak_rss_mib": None, "cpu_s": None}
        row = {"size": args.tq_size, "command": "python -m engine " + " ".join(cmd[3:]),
               "wall_s": wall, **measured, "others_cpu_share": monitor.others_cpu_share,
               "wrote_image": out.exists()}
        if row["exit_code"] != 0:
            row["error"] = ((proc.stderr or "").strip().splitlines() or [f"exit {row['exit_code']}"])[-1]
    log(f"  {wall:.1f} s, peak RSS {report.fmt(row['peak_rss_mib'], '.0f')} MiB, exit {row['exit_code']}")
    return row


# --- peak --------------------------------------------------------------------------------


def run_peak(args: argparse.Namespace) -> list[dict]:
    import keras

    peaks = []
    for dtype in ["float32"] + (["bfloat16"] if "bfloat16" in args.precision else []):
        log(f"peak: {keras.backend.backend()} {dtype} matmul {args.peak_n}²")
        peaks.append(machine.backend_matmul_peak(args.peak_n, dtype, repeats=args.peak_repeats))
        log(f"  {peaks[-1]['gflops_median']:.0f} GFLOP/s")
    log(f"peak: NumPy float32 matmul {args.peak_n}²")
    peaks.append(machine.numpy_matmul_peak(args.peak_n, repeats=args.peak_repeats))
    log(f"  {peaks[-1]['gflops_median']:.0f} GFLOP/s")
    return peaks


# --- time to quality ---------------------------------------------------------------------


def run_ttq(args: argparse.Namespace, engine, content, style) -> dict:
    from bench import methods, problem
    from engine.jobs import TransferSettings

    settings = TransferSettings(size=args.tq_size, seed=args.seed)  # the default job, whatever it is
    prob = problem.build(engine, content, style, settings)
    log(f"time to quality at {prob.shape[1]}x{prob.shape[0]}: warming up (tracing at other sizes)")
    methods.warm_up(engine, content, style, settings)
    methods.warm_up_problem(engine, content, style, settings, prob)
    scorer = None
    network = styleratio.load_network(args.weights)
    if network is not None:
        log("style_ratio: snapshots are scored with keras.applications on " + str(args.weights))
        scorer = styleratio.StyleScorer(network, content, style, tuple(prob.shape[:2]))
    runs: dict[str, methods.Run] = {}
    ref = None
    order = [m for m in "cdab" if m in args.methods]
    for key in order:
        budget_s = args.budget * ref["seconds"] if ref else None
        log(f"method {key}: {METHODS[key]}" + (f" (budget {budget_s:.0f} s)" if budget_s else ""))
        if key == "d":
            run = methods.run_default(engine, content, style, settings, prob=prob, budget_s=budget_s,
                                      snapshot_every=args.snapshot_every, scorer=scorer)
        else:
            evaluations = args.ref_iterations if key == "c" else math.ceil(args.budget * args.ref_iterations)
            run = methods.run_classic(key, engine, content, style, settings, evaluations=evaluations,
                                      budget_s=None if key == "c" else budget_s, seed=args.seed,
                                      lbfgs_history=args.lbfgs_history, scorer=scorer)
        runs[key] = run
        log(f"  {run.evaluations} evaluations in {run.wall_s:.1f} s, final loss {run.final_loss:.6g}")
        if key == "c":
            ref = {"loss": run.final_loss, "seconds": run.wall_s, "evaluations": run.evaluations,
                   "history": args.lbfgs_history, "step_seconds": run.step_s, "cpu_seconds": run.cpu_s,
                   "label": f"single-scale L-BFGS ({run.evaluations} evaluations, history {args.lbfgs_history})"}
    target = quality.target_loss(ref["loss"]) if ref else None
    out_methods = []
    for key in [m for m in "abcd" if m in runs]:
        run = runs[key]
        d = {k: v for k, v in asdict(run).items() if k != "final_image"}
        d["description"] = methods.DESCRIPTIONS[key]
        d["best_loss"] = quality.best_loss(run.curve)
        if ref:
            d["best_over_ref"] = d["best_loss"] / ref["loss"]
            d["time_to_target"] = quality.time_to_target(run.curve, target)
            d["ratio_to_ref"] = quality.ratio(d["time_to_target"], ref["seconds"])
            d["speedup"] = quality.ratio(ref["seconds"], d["time_to_target"])
            d["ratio_to_ref_steps"] = quality.ratio(d["time_to_target"], ref["step_seconds"])
            d["work_to_target"] = quality.work_to_target(run.curve, target)
            d["cpu_to_target"] = quality.cpu_to_target(run.curve, target)
            d["cpu_ratio_to_ref"] = quality.ratio(d["cpu_to_target"], ref["cpu_seconds"])
        if run.style_curve:
            d["style_ratio"], d["content_dist"] = run.style_curve[-1][1:]
            if ref and runs["c"].style_curve:
                d["style_ratio_at"] = {f: styleratio.value_at(run.style_curve, f * ref["seconds"])
                                       for f in STYLE_RATIO_TIMES}
                d["time_to_ref_style"] = styleratio.time_to_ratio(
                    run.style_curve, runs["c"].style_curve[-1][1] + STYLE_RATIO_SLACK)
        out_methods.append(d)
    return {"size": args.tq_size, "shape": list(prob.shape[:2]), "seed": args.seed,
            "loss_settings": {k: v for k, v in asdict(prob.settings).items()
                              if k in ("style_strength", "content_layers", "style_layers", "tv_weight",
                                       "pooling", "color", "style_scale")},
            "default_settings": {k: v for k, v in asdict(settings).items()
                                 if k not in ("content_layers", "style_layers")},
            "reference": ref, "target_loss": target, "methods": out_methods}


# --- main --------------------------------------------------------------------------------


def caveats(args: argparse.Namespace, results: dict) -> list[str]:
    notes = []
    if "random" in results.get("weights", ""):
        notes.append("Random weights: the losses measure optimisation speed, not artistic quality.")
    if args.quick:
        notes.append(f"Quick mode: time to quality at {args.tq_size} px against a {args.ref_iterations}-"
                     f"evaluation L-BFGS reference (full mode: 512 px, 500), step cost at "
                     f"{' and '.join(str(s) for s in args.sizes)} px with {args.repeats} repeats. "
                     "Use full mode for the issue's targets.")
    shares = [s.get("others_cpu_share") for s in results.get("step_cost", [])]
    shares += [m.get("cpu", {}).get("others_cpu_share") for m in
               (results.get("time_to_quality") or {}).get("methods", [])]
    shares = [s for s in shares if s is not None]
    if shares and max(shares) > 0.15:
        notes.append(f"Other processes used up to {100 * max(shares):.0f} % of the CPU during some "
                     "measurements: wall-time figures (and ratios between runs made at different "
                     "moments) are noisy; read them with the CPU-time columns and 'full-res evals to "
                     "target', which other processes barely move.")
    ref = (results.get("time_to_quality") or {}).get("reference") or {}
    if ref and ref.get("step_seconds") and ref["step_seconds"] < 0.8 * ref["seconds"]:
        notes.append(f"Only {100 * ref['step_seconds'] / ref['seconds']:.0f} % of T_ref is spent in network "
                     "steps; the rest is mostly the reference's NumPy L-BFGS (its two-loop recursion "
                     "over the history, on the host). '÷ ref's step time' shows each method "
                     "against the reference's network time alone, i.e. without crediting a faster "
                     "L-BFGS implementation.")
    if not machine.reset_peak_rss():
        notes.append("This kernel cannot reset the peak RSS: per-method peaks are the process's peaks.")
    return notes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "benchmark": {"mode": "quick" if args.quick else "full", "command": sys.argv,
                      "started": datetime.now(UTC).isoformat(timespec="seconds"),
                      "load_start": machine.load_average(), "args": vars(args)},
        "machine": {"cpu": machine.cpu_description()},
    }
    log(f"machine: {results['machine']['cpu']['model']}, {results['machine']['cpu']['cores']} cores")
    if "steps" in args.parts:
        results["step_cost"] = run_step_cost(args)
        first = next((r for r in results["step_cost"] if not r.get("error")), None)
        if first:
            results["process_start"] = {"config": f"{first['size']} px {first['precision']}",
                                        "phases_s": first["phases_s"]}
            results["weights"] = first["weights"]

    log("loading the Keras backend in the benchmark process")
    from bench import inputs

    results["machine"]["software"] = machine.software()
    results["machine"]["numpy_blas"] = machine.numpy_blas()
    if "peak" in args.parts:
        results["peak"] = run_peak(args)
    if results.get("step_cost"):
        annotate_steps(results["step_cost"], results.get("peak", []))
    content, style = inputs.bench_images(args.content, args.style)
    results["images"] = inputs.describe_images(args.content, args.style, content, style)
    run_ttq_part = "ttq" in args.parts and bool(args.methods)
    if run_ttq_part or "job" in args.parts:  # loaded once for both
        weights, results["weights"] = inputs.load_bench_weights(args.weights, args.models_dir)
    if run_ttq_part:
        from engine.transfer import Engine

        results["time_to_quality"] = run_ttq(args, Engine(weights), content, style)
    if "job" in args.parts:
        results["job"] = run_job_process(args, weights, content, style)
    results.setdefault("weights", "see step cost")
    results["benchmark"]["load_end"] = machine.load_average()
    results["benchmark"]["runtime_s"] = time.perf_counter() - started
    results["caveats"] = caveats(args, results)

    markdown = report.render_markdown(results)
    report.write_json(results, out / "results.json")
    (out / "results.md").write_text(markdown)
    why_not = report.plot(results, out / "loss_vs_time.png")
    if why_not:
        log(f"no plot: {why_not}")
    log(f"wrote {out / 'results.json'}, {out / 'results.md'}"
        + ("" if why_not else f", {out / 'loss_vs_time.png'}")
        + f" in {results['benchmark']['runtime_s']:.0f} s")
    sys.stdout.write(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
