"""stylebot's benchmark: `python -m bench` (not a test).

One invocation on one machine measures the reference matmul peak, the cost of
one VGG-19 step, the engine's start-up, and the time each method takes to reach
the quality of 500 single-scale L-BFGS steps, and writes results.json,
results.md and loss_vs_time.png (see bench/__main__.py for the CLI).

Modules:
  flops    -- analytic VGG-19 convolution FLOPs (pure, stdlib)
  quality  -- time-to-target on a loss curve, ratios (pure, stdlib)
  report   -- Markdown tables, JSON, the plot (pure except the optional matplotlib)
  machine  -- CPU description, CPU-contention monitor, peak RSS, matmul peaks
  pictures -- the two default images, made deterministically
  inputs   -- the weights (real if in models/, else random) and the images to use
  problem  -- the full-resolution loss of a job, built from the engine
  methods  -- the four optimisation methods compared for time to quality
  stepcost -- child process: start-up and step cost of one (size, precision)
"""
