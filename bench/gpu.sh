#!/usr/bin/env bash
# GPU benchmark of the engine on the JAX and PyTorch backends (issue 5).
#
# For a GPU machine that has PyTorch and JAX but not TensorFlow. Keras and the
# small wheels it needs that such a machine lacks (namex, optree) are carried in
# .whl/ and installed into /tmp/site; fetch them on a machine with pip:
#
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl keras==3.15.1 namex optree
#
# Then, from the repository root:  bash bench/gpu.sh   (results in $OUT, else bench/results/gpu)
#
# For each backend (jax, torch) and size (512, 1024 px longest side), one fresh
# process records, for float32 (TF32 convolutions) and bfloat16 convolutions:
#   - seconds per optimiser step (the on-device L-BFGS loop, 25 steps per call),
#     and, on torch, the same step through the host round trip (image in, gradient out);
#   - GFLOP/s of those steps against the card's matmul peak (bf16, TF32, FP32)
#     measured in the same process;
#   - the wall time of the default job (TransferSettings(size=..., seed=0), its
#     iterations and scales, previews every 10 as the bot gets them; the default
#     precision "auto" is bfloat16 on a GPU), warm, after a short job that compiles;
#   - peak GPU memory; and the bfloat16 job's final loss against the float32 one's,
#     both scored by the float32 loss (the issue allows 2 %).
# Then, time permitting: `python -m bench --parts peak,steps` on each backend (it needs
# no TensorFlow: the peak is the backend's own matmul), and torch.compile on
# the 512-px step. Weights are random (the real file is too large to carry): the
# timings are those of the real network, the losses are not art.
#
# Knobs (environment): GPU_BENCH_BUDGET (seconds, default 420: stops starting new
# steps after that), GPU_BENCH_SIZES (default "512 1024"), GPU_BENCH_BACKENDS
# (default "jax torch"), GPU_BENCH_ITERATIONS (default: the default job's), GPU_BENCH_DEVICE
# (default gpu; "auto" lets this run on a CPU as a smoke test, with small sizes).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${OUT:-$ROOT/bench/results/gpu}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/stylebot-gpu.XXXXXX)
LOG=$OUT/gpu.log
BUDGET=${GPU_BENCH_BUDGET:-420}
SIZES=${GPU_BENCH_SIZES:-512 1024}
BACKENDS=${GPU_BENCH_BACKENDS:-jax torch}
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
# A rerun on the same (warm) machine reuses JAX's compiled programs: its "first call"
# times then show less compiling.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/stylebot-jax-cache}
export GPU_BENCH_ITERATIONS=${GPU_BENCH_ITERATIONS:-} GPU_BENCH_DEVICE=${GPU_BENCH_DEVICE:-gpu}

say() { echo "[gpu.sh $(date +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$LOG" >&2; }

# Run "$@" with at most $1 seconds, never past the budget; skip when under 30 s remain.
step() {
    local cap=$1; shift
    local left=$((BUDGET - SECONDS))
    if ((left < 30)); then say "skipped (budget spent): $*"; return 1; fi
    ((cap > left)) && cap=$left
    say "run (max ${cap}s): $*"
    timeout --kill-after=10 "$cap" "$@" >>"$LOG" 2>&1
    local rc=$?
    ((rc != 0)) && say "exit $rc: $*"
    return $rc
}

# (find_spec, not "import keras": that fails without TensorFlow when no backend is named)
if [ -d .whl ] && ! "$PYTHON" -c "import importlib.util as u, sys; sys.exit(u.find_spec('keras') is None)"; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl >>"$LOG" 2>&1 || say "wheel install failed"
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}  # the probes run from $WORK
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null \
        || echo "no nvidia-smi"
    "$PYTHON" - <<'EOF'
import importlib, sys
print("python", sys.version.split()[0])
for name in ("keras", "jax", "jaxlib", "torch", "numpy", "scipy", "tensorflow"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as e:  # noqa: BLE001
        print(name, "-", type(e).__name__)
EOF
} >>"$LOG" 2>&1

cat >"$WORK/probe.py" <<'EOF'
"""One backend, one size: step cost, matmul peaks, the default job, peak memory."""
import json, os, statistics, sys, time

import numpy as np

size, out = int(sys.argv[1]), sys.argv[2]
precisions = os.environ.get("PROBE_PRECISIONS", "bfloat16,float32").split(",")  # bf16 first: JAX's peak memory only grows
run_job = os.environ.get("PROBE_JOB", "1") == "1"
iterations = int(os.environ.get("GPU_BENCH_ITERATIONS") or 0) or None  # None: the default job's
backend = os.environ["KERAS_BACKEND"]
res = {"backend": backend, "size": size, "iterations": iterations, "torch_compile": os.environ.get("STYLEBOT_TORCH_COMPILE", "")}

def save():
    res["tensorflow_imported"] = "tensorflow" in sys.modules
    with open(out, "w") as f:
        json.dump(res, f, indent=1, default=str)

t0 = time.perf_counter()
import keras  # noqa: E402
from engine import device, images, optimize, transfer  # noqa: E402
dev = device.configure(os.environ["GPU_BENCH_DEVICE"])
res["device"], res["kind"] = dev.label(), dev.kind
from engine.jobs import TransferSettings  # noqa: E402
from engine.transfer import Engine, style_size  # noqa: E402
from engine.weights import random_weights  # noqa: E402
res["import_s"] = time.perf_counter() - t0

if backend == "torch":
    import torch
    on_gpu = dev.kind == "gpu" and torch.cuda.is_available()
    def sync(): torch.cuda.synchronize() if on_gpu else None
    def reset_mem(): torch.cuda.reset_peak_memory_stats() if on_gpu else None
    def peak_mem(): return torch.cuda.max_memory_allocated() / 2**20 if on_gpu else None
    def matmul_peak(dtype, n, strict=False):
        dt = {"bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
        dv = "cuda" if on_gpu else "cpu"
        a, b = torch.randn(n, n, device=dv, dtype=dt), torch.randn(n, n, device=dv, dtype=dt)
        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = not strict
        try:
            for _ in range(3): a @ b
            sync(); times = []
            for _ in range(10):
                t = time.perf_counter(); a @ b; sync(); times.append(time.perf_counter() - t)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old
        return 2 * n**3 / statistics.median(times) / 1e9
else:
    import jax, jax.numpy as jnp
    gpu = dev.kind == "gpu"
    def sync(): pass  # convert_to_numpy of the records waits for the device
    def reset_mem(): pass
    def peak_mem():
        stats = jax.devices()[0].memory_stats() if gpu else None
        return stats.get("peak_bytes_in_use", 0) / 2**20 if stats else None
    def matmul_peak(dtype, n, strict=False):
        prec = jax.lax.Precision.HIGHEST if strict else None
        f = jax.jit(lambda a, b: jnp.dot(a, b, precision=prec))
        k = jax.random.split(jax.random.PRNGKey(0))
        a = jax.random.normal(k[0], (n, n), jnp.float32).astype(dtype)
        b = jax.random.normal(k[1], (n, n), jnp.float32).astype(dtype)
        for _ in range(3): f(a, b).block_until_ready()
        times = []
        for _ in range(10):
            t = time.perf_counter(); f(a, b).block_until_ready(); times.append(time.perf_counter() - t)
        return 2 * n**3 / statistics.median(times) / 1e9

# 2 x the forward convolutions up to conv5_1 (the convention of bench/flops.py).
CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 256),
         (256, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
def step_gflop(h, w):
    total, i = 0, 0
    for block, count in enumerate((2, 2, 4, 4, 1)):
        for _ in range(count):
            c_in, c_out = CONVS[i]; i += 1
            total += 2 * (h >> block) * (w >> block) * c_in * c_out * 9
    return 2 * total / 1e9

n = 8192 if dev.kind == "gpu" else 1024
try:
    res["peak_gflops"] = {"bfloat16": matmul_peak("bfloat16", n), "tf32": matmul_peak("float32", n),
                          "float32": matmul_peak("float32", n, strict=True), "n": n}
except Exception as e:  # noqa: BLE001
    res["peak_gflops"] = {"error": repr(e)}
save()

def pictures():
    try:
        from bench import inputs
        return inputs.bench_images(None, None)
    except Exception:  # noqa: BLE001 - bench/ is optional here
        from engine.vgg import calibration_image
        y, x = np.mgrid[0:768, 0:1024].astype(np.float32)
        style = np.stack([128 + 100 * np.sin(x / 9 + y / 13), 128 + 100 * np.sin(y / 7),
                          128 + 100 * np.cos((x - y) / 11)], -1)
        return images.resize_to(calibration_image(256), (768, 1024)), np.clip(style, 0, 255).astype(np.float32)

content, style = pictures()
t = time.perf_counter()
engine = Engine(random_weights(0))
res["describe"] = engine.describe()
res["engine_s"] = time.perf_counter() - t
finals, f32 = {}, None
for precision in precisions:
    r = res.setdefault(precision, {})
    try:
        settings = TransferSettings(size=size, seed=0, precision=precision)
        if iterations:
            settings = settings.with_(iterations=iterations)
        r["settings"] = {"iterations": settings.iterations, "scales": settings.scales,
                         "scale_iterations": settings.scale_iterations}
        c = images.resize_longest(content, size)
        s = images.resize_longest(style, style_size(settings))
        objective = engine.objective(settings)
        args = transfer.step_args(objective, c, [s], settings)
        h, w = c.shape[:2]
        r["shape"], r["step_gflop"] = [h, w], step_gflop(h, w)
        reset_mem()
        loops = objective.loops
        runner = loops.runner("lbfgs", lower=0.0, upper=255.0)
        dargs = loops.backend.put(tuple(args))
        state = optimize.lbfgs_state(c, history=optimize.LBFGS_HISTORY, learning_rate=1.0, terms=3)
        t = time.perf_counter()
        state = runner(state, loops.backend.loop_count(1), dargs)
        keras.ops.convert_to_numpy(state["losses"]); sync()
        r["first_call_s"] = time.perf_counter() - t  # compiling included
        chunk = 25 if dev.kind == "gpu" else 2
        times = []
        for _ in range(3):
            t = time.perf_counter()
            state = runner(state, loops.backend.loop_count(chunk), dargs)
            keras.ops.convert_to_numpy(state["losses"]); sync()
            times.append((time.perf_counter() - t) / chunk)
        r["s_per_step"], r["s_per_step_all"] = min(times), times
        r["gflops"] = r["step_gflop"] / r["s_per_step"]
        peaks = res["peak_gflops"]
        if "bfloat16" in peaks:
            r["pct_of_bf16_peak"] = 100 * r["gflops"] / peaks["bfloat16"]
            r["pct_of_own_peak"] = 100 * r["gflops"] / peaks["bfloat16" if precision == "bfloat16" else "tf32"]
        save()
        # The host round trip (what SciPy's loop does each step): image in, gradient out.
        if backend == "torch":  # (JAX would compile it again: a budget the GPU run lacks)
            x = np.asarray(c, np.float32)
            objective.step(x, *args)
            times = []
            for _ in range(3):
                t = time.perf_counter(); objective.step(x, *args); times.append(time.perf_counter() - t)
            r["host_step_s"] = min(times)
        if run_job:
            # A short job first compiles every scale's shapes (as a worker that has
            # seen this size before); then the default job, timed warm.
            t = time.perf_counter()
            engine.stylize(content, [style], settings.with_(iterations=3 * settings.scales))
            r["job_cold_s"] = time.perf_counter() - t
            seen = []
            t = time.perf_counter()
            result = engine.stylize(content, [style], settings, on_progress=seen.append)
            r["job_wall_s"] = time.perf_counter() - t
            r["job_iterations"], r["job_final_loss"] = result.iterations, float(result.losses["total"])
            r["job_best_reported_loss"] = min(p.losses["total"] for p in seen)
            finals[precision] = result.image
        r["peak_gpu_mib"] = peak_mem()
        if precision == "float32":
            f32 = (objective, args)
    except Exception as e:  # noqa: BLE001 - record and go on
        import traceback
        r["error"] = traceback.format_exc()[-2000:]
    save()

if f32 is not None and len(finals) == 2:
    objective, args = f32
    def f32_loss(image):  # one evaluation of the float32 loss, through the compiled loop
        seen = []
        objective.loops.minimize("lbfgs", image, args, evaluations=1, lower=0.0, upper=255.0,
                                 report=lambda loss, terms, im: seen.append(loss))
        return seen[0]
    a, b = f32_loss(finals["bfloat16"]), f32_loss(finals["float32"])
    res["bf16_vs_f32_final_loss"] = {"bfloat16_job": a, "float32_job": b, "ratio": a / b}
res["total_s"] = time.perf_counter() - t0
save()
print(json.dumps({k: v for k, v in res.items() if k in ("backend", "size", "device")}))
EOF

cat >"$WORK/merge.py" <<'EOF'
"""All probes' JSON into gpu_results.json and a Markdown table, gpu_results.md."""
import glob, json, os, sys
work, out = sys.argv[1], sys.argv[2]
runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(work, "probe_*.json")))]
json.dump(runs, open(os.path.join(out, "gpu_results.json"), "w"), indent=1)
def f(v, fmt="{:.3g}"):
    return "–" if v is None else fmt.format(v)
lines = ["# GPU benchmark (bench/gpu.sh)", ""]
for r in runs:
    p = r.get("peak_gflops", {})
    lines.append(f"- {r['backend']} {r['size']} px{' torch.compile=' + r['torch_compile'] if r.get('torch_compile') else ''}: "
                 f"{r.get('device', '?')}; matmul peak bf16 {f(p.get('bfloat16'), '{:.0f}')}, "
                 f"TF32 {f(p.get('tf32'), '{:.0f}')}, FP32 {f(p.get('float32'), '{:.0f}')} GFLOP/s; "
                 f"TensorFlow imported: {r.get('tensorflow_imported')}")
lines += ["", "| backend | px | precision | s/step (device loop) | s/step (host round trip) | GFLOP/s | % bf16 peak | % own peak | first call s | job wall s (iters) | peak GPU MiB | error |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
for r in runs:
    for prec in ("float32", "bfloat16"):
        d = r.get(prec)
        if not d:
            continue
        err = (d.get("error") or "").strip().splitlines()[-1:] or [""]
        label = r["backend"] + (" (compiled)" if r.get("torch_compile") else "")
        lines.append(f"| {label} | {r['size']} | {prec} | {f(d.get('s_per_step'), '{:.4f}')} | "
                     f"{f(d.get('host_step_s'), '{:.4f}')} | {f(d.get('gflops'), '{:.0f}')} | "
                     f"{f(d.get('pct_of_bf16_peak'), '{:.0f}')} | {f(d.get('pct_of_own_peak'), '{:.0f}')} | "
                     f"{f(d.get('first_call_s'), '{:.1f}')} | {f(d.get('job_wall_s'), '{:.2f}')} "
                     f"(cold {f(d.get('job_cold_s'), '{:.1f}')}) "
                     f"({d.get('job_iterations', '–')}) | {f(d.get('peak_gpu_mib'), '{:.0f}')} | {err[0][:80]} |")
lines += ["", "bfloat16 job's final image scored by the float32 loss, over the float32 job's:"]
for r in runs:
    b = r.get("bf16_vs_f32_final_loss")
    if b:
        lines.append(f"- {r['backend']} {r['size']} px: {b['ratio']:.4f} (within 2 %: {abs(b['ratio'] - 1) <= 0.02})")
lines += ["", "Targets (H100): 512-px default job < 3 s, 1024-px < 10 s, steps >= 50 % of the bf16 matmul peak."]
open(os.path.join(out, "gpu_results.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF

say "budget ${BUDGET}s; sizes: $SIZES; backends: $BACKENDS; results in $OUT"
for size in $SIZES; do
    for backend in $BACKENDS; do
        cap=$((size >= 1024 ? 180 : 150))
        KERAS_BACKEND=$backend step "$cap" "$PYTHON" "$WORK/probe.py" "$size" "$WORK/probe_${backend}_${size}.json"
    done
done
"$PYTHON" "$WORK/merge.py" "$WORK" "$OUT" >>"$LOG" 2>&1

# The shared benchmark (it needs no TensorFlow). An 8192² matmul fills a big GPU; on a
# CPU smoke run it would take minutes.
PEAK_N=8192
[ "$GPU_BENCH_DEVICE" = gpu ] || PEAK_N=1024
for backend in $BACKENDS; do
    KERAS_BACKEND=$backend step 120 "$PYTHON" -m bench --quick --parts peak,steps --peak-n $PEAK_N \
        --sizes "$(echo $SIZES | tr ' ' ,)" --weights random --out "$OUT/bench_$backend" \
        || say "python -m bench failed on $backend (see gpu.log)"
done

# torch.compile on the 512-px float32 step, against eager above.
case " $BACKENDS " in *" torch "*)
    STYLEBOT_TORCH_COMPILE=1 PROBE_PRECISIONS=float32 PROBE_JOB=0 KERAS_BACKEND=torch \
        step 150 "$PYTHON" "$WORK/probe.py" "${SIZES%% *}" "$WORK/probe_torchcompile_${SIZES%% *}.json" ;;
esac

"$PYTHON" "$WORK/merge.py" "$WORK" "$OUT" >/dev/null 2>>"$LOG"
(cd "$WORK" && ls -d bench_* >/dev/null 2>&1 && tar czf "$OUT/bench_outputs.tgz" bench_*) || true
say "done in ${SECONDS}s"
cat "$OUT/gpu_results.md"
