"""Child process: the engine's start-up and the cost of one step at one (size, precision).

    python -m bench.stepcost --size 512 --precision float32 --repeats 5 --spawned-at T

Prints one JSON object on its last stdout line. A fresh process per
configuration, so its peak resident memory (VmHWM) is that configuration's alone,
and its start-up phases are a cold engine process's: interpreter + imports,
weights, network build, first step (tracing + oneDNN primitive creation).
The step is the engine's compiled `Objective.step` (loss + image gradient) on the
default job's loss at size x size pixels, content and style the benchmark's images.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stepcost")
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--weights", default="auto")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--content")
    parser.add_argument("--style")
    parser.add_argument("--spawned-at", type=float, default=None, help="parent's time.time() at spawn")
    args = parser.parse_args(argv)
    spawned = args.spawned_at if args.spawned_at is not None else time.time()
    phases: dict[str, float] = {}

    def mark(name: str) -> None:
        phases[name] = time.time() - spawned

    mark("python_started")
    import keras  # noqa: F401  (with its backend: the largest part of a cold start)
    import numpy as np

    from bench import inputs, machine, problem
    from bench.flops import step_flops
    from engine.jobs import TransferSettings
    from engine.transfer import Engine

    mark("imports")
    weights, weights_kind = inputs.load_bench_weights(args.weights, args.models_dir)
    mark("weights")
    content, style = inputs.bench_images(args.content, args.style)
    engine = Engine(weights)
    settings = replace(TransferSettings(size=args.size, seed=0), precision=args.precision)
    objective = engine.objective(settings)
    mark("network")
    # Square size x size: the step-cost table is per pixel count, whatever the photo's aspect.
    square = np.ascontiguousarray(content[: min(content.shape[:2]), : min(content.shape[:2])])
    prob = problem.build(engine, square, style, replace(settings, precision="float32"))
    args_ = prob.args
    image = prob.content
    mark("targets")
    objective.step(image, *args_)
    mark("first_step")
    objective.step(image, *args_)  # one more warm-up (allocator, caches)
    with machine.CpuMonitor() as monitor:
        times, cpu_times = machine.timed(lambda: objective.step(image, *args_), args.repeats)
    rss, peak = machine.rss_mib()
    h, w = image.shape[:2]
    layers = list(objective.layers)
    out = {
        "size": args.size, "height": h, "width": w, "precision": args.precision,
        "repeats": args.repeats, "times_s": times, "median_s": statistics.median(times),
        "min_s": min(times), "cpu_times_s": cpu_times, "cpu_median_s": statistics.median(cpu_times),
        "step_gflop": step_flops(h, w, layers) / 1e9, "layers": layers,
        "peak_rss_mib": peak, "rss_end_mib": rss, "phases_s": phases, "weights": weights_kind,
        "others_cpu_share": monitor.others_cpu_share,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
