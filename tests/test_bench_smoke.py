"""The benchmark's pure helpers (no TensorFlow work): FLOP counting, time to target,
report rendering, the snapshot policy. The benchmark itself is `python -m bench`."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import flops, quality, report


def test_conv_flops_follow_the_formula_and_vgg19s_known_total():
    rows = flops.conv_layer_flops(224, 224, "conv5_4")
    assert [r[0] for r in rows] == list(flops.CONV_NAMES)
    assert rows[0] == ("conv1_1", 224, 224, 2 * 224 * 224 * 3 * 64 * 9)
    assert rows[-1][1:3] == (14, 14)
    # VGG-19's sixteen convolutions are about 19.5 G multiply-adds at 224 px.
    assert flops.forward_flops(224, 224, "conv5_4") / 2 == pytest.approx(19.5e9, rel=0.02)


def test_step_is_twice_the_forward_pass_up_to_the_deepest_layer_used():
    layers = ["conv4_2", "conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
    forward = flops.forward_flops(512, 512, "conv5_1")
    assert flops.step_flops(512, 512, layers) == 2 * forward
    assert len(flops.conv_layer_flops(512, 512, "conv5_1")) == 13
    assert flops.step_flops(512, 512, layers) / 1e9 == pytest.approx(378.7, abs=0.5)


def test_pooling_floors_odd_sizes():
    rows = flops.conv_layer_flops(101, 75, "conv5_1")
    assert [(h, w) for name, h, w, _ in rows if name.endswith("_1")] == [
        (101, 75), (50, 37), (25, 18), (12, 9), (6, 4)]


def test_matmul_flops():
    assert flops.matmul_flops(2048) == 2 * 2048**3


CURVE = [(1, 1.0, 100.0, 1.0, 1.5), (2, 2.0, 50.0, 2.0, 3.0), (3, 3.0, 10.3, 3.0, 4.5),
         (4, 4.0, 10.1, 4.0, 6.0), (5, 5.0, 10.0, 5.0, 7.5)]


def test_time_to_target_is_the_first_point_within_the_target():
    target = quality.target_loss(10.0)
    assert target == pytest.approx(10.2)
    assert quality.first_reaching(CURVE, target) == 3
    assert quality.time_to_target(CURVE, target) == 4.0
    assert quality.work_to_target(CURVE, target) == 4.0
    assert quality.cpu_to_target(CURVE, target) == 6.0
    assert quality.time_to_target(CURVE, 9.0) is None
    assert quality.best_loss(CURVE + [(6, 6.0, math.nan, 6.0, 9.0)]) == 10.0


def test_ratios_and_median():
    assert quality.ratio(20.0, 100.0) == 0.2
    assert quality.ratio(None, 100.0) is None
    assert quality.median([3, 1, 2]) == 2
    assert quality.median([4, 1, 2, 3]) == 2.5


def synthetic_results() -> dict:
    methods = []
    for key, label, t in (("a", "notebook Adam", None), ("c", "L-BFGS, single scale (reference)", 80.0),
                          ("d", "stylebot default job", 15.0)):
        methods.append({"key": key, "label": label, "description": label, "settings": {"lr": 2.0},
                        "evaluations": 100, "wall_s": 100.0, "ended": "done", "curve": CURVE,
                        "best_over_ref": 1.0, "time_to_target": t,
                        "ratio_to_ref": None if t is None else t / 100.0,
                        "speedup": None if t is None else 100.0 / t, "work_to_target": 4.0,
                        "ratio_to_ref_steps": None if t is None else t / 60.0, "cpu_ratio_to_ref": 0.5,
                        "cpu": {"others_cpu_share": 0.1}, "peak_rss_mib": 900.0, "rss_start_mib": 800.0,
                        "notes": ["a note"]})
    return {
        "benchmark": {"mode": "quick", "started": "now", "runtime_s": 123.0, "load_start": [1.0, 1.0, 1.0]},
        "machine": {"cpu": {"model": "Test CPU", "cores": 2, "isa": ["avx512f"], "hypervisor": True},
                    "software": {"tensorflow": "2.x", "keras": "3.x", "keras_backend": "tensorflow",
                                 "numpy": "2.x"},
                    "numpy_blas": {"library": "openblas", "version": "0.3", "threads": 2, "source": "test"}},
        "weights": "random VGG-19 (seed 0)",
        "images": {"content": "photo (640x640)", "style": "texture (640x640)"},
        "peak": [{"library": "tensorflow", "dtype": "float32", "n": 2048, "median_s": 0.05,
                  "gflops_median": 340.0, "gflops_best": 360.0, "gflop_per_cpu_s": 170.0,
                  "others_cpu_share": 0.0}],
        "step_cost": [{"size": 256, "height": 256, "width": 256, "precision": "float32", "median_s": 0.3,
                       "step_gflop": 94.7, "gflops": 315.0, "pct_of_peak": 92.0, "speedup_vs_float32": 1.0,
                       "peak_rss_mib": 1100.0, "others_cpu_share": 0.05},
                      {"size": 512, "precision": "bfloat16", "error": "boom"}],
        "process_start": {"config": "256 px float32",
                          "phases_s": {"python_started": 0.1, "imports": 3.0, "first_step": 6.0}},
        "time_to_quality": {"shape": [256, 256], "reference": {"loss": 10.0, "seconds": 100.0,
                                                               "step_seconds": 60.0, "label": "L-BFGS"},
                            "target_loss": 10.2, "methods": methods},
        "job": {"size": 512, "wall_s": 61.5, "cpu_s": 118.0, "peak_rss_mib": 1730.4, "exit_code": 0,
                "wrote_image": True, "others_cpu_share": 0.02},
        "caveats": ["Random weights."],
    }


def test_markdown_has_every_section_and_says_never():
    md = report.render_markdown(synthetic_results())
    for needle in ("Test CPU (VM), 2 cores", "random VGG-19", "## Reference peak", "## Step cost",
                   "## Engine process start", "## Time to quality at 256×256", "never", "6.67×",
                   "| a. notebook Adam |", "error", "> Random weights.",
                   "## The default job in a fresh process", "| 512 px | 61.5 | 118.0 | 1730 | image written |"):
        assert needle in md, needle


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "plot.png"
    assert report.plot(synthetic_results(), path) is None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_json_handles_numpy_values(tmp_path):
    path = tmp_path / "r.json"
    report.write_json({"x": np.float32(1.5), "a": np.arange(2)}, path)
    assert '"x": 1.5' in path.read_text()


def test_snapshot_policy_keeps_every_nth_each_scales_last_and_the_final(tmp_path):
    from bench.methods import _Snapshots

    snaps = _Snapshots(every=5, folder=tmp_path)
    for count in range(1, 13):
        shape = (4, 4, 3) if count <= 7 else (8, 8, 3)
        snaps.offer(count, float(count), np.full(shape, count, np.float32))
    snaps.finish()
    assert [s[0] for s in snaps.saved] == [1, 6, 7, 12]
    assert np.load(snaps.saved[2][3]).shape == (4, 4, 3)
    # An engine reporting chunks of iterations: the spacing still holds.
    chunked = _Snapshots(every=5, folder=tmp_path / "chunked")
    (tmp_path / "chunked").mkdir()
    for count in (3, 6, 9, 12):
        chunked.offer(count, float(count), np.zeros((4, 4, 3), np.float32))
    chunked.finish()
    assert [s[0] for s in chunked.saved] == [3, 9, 12]


def test_keras_adam_adds_epsilon_to_sqrt_v_not_to_the_bias_corrected_one():
    from bench.methods import keras_adam

    g = np.array([0.03, -0.001, 0.0], np.float32)
    lr, eps, beta2 = 5.1, 0.1 / 255, 0.999
    x = keras_adam(lambda x: (0.0, g), np.full(3, 100.0), evaluations=1, lower=0.0, upper=255.0,
                   learning_rate=lr, beta1=0.99, beta2=beta2, epsilon=eps)
    # Step 1: lr * sqrt(1-b2) * g / (sqrt(1-b2) |g| + eps)  =  lr * g / (|g| + eps / sqrt(1-b2))
    expected = 100.0 - lr * g / (np.abs(g) + eps / np.sqrt(1 - beta2))
    assert np.allclose(x, expected, rtol=1e-5)


def test_pure_modules_do_not_import_tensorflow():
    code = ("import sys, bench.flops, bench.quality, bench.report, bench.methods, bench.pictures; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_peak_and_versions_need_only_the_engines_backend(backend, tmp_path):
    """A GPU machine has JAX or PyTorch and no TensorFlow (issue 5): the benchmark's
    matmul peak and version probe must run on the chosen backend with TensorFlow
    unimportable, and label the peak with that backend."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    blocker = tmp_path / "tensorflow"
    if backend != "tensorflow":
        blocker.mkdir()
        (blocker / "__init__.py").write_text("raise ImportError('no TensorFlow here')\n")
    code = ("import json, engine, bench.machine as m; "
            "row = m.backend_matmul_peak(128, 'float32', repeats=2, warmup=1); "
            "print(json.dumps([row['library'], row['gflops_median'], m.software()]))")
    env = {**os.environ, "KERAS_BACKEND": backend,
           "PYTHONPATH": f"{tmp_path}{os.pathsep}{Path(__file__).parents[1]}"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    library, gflops, software = json.loads(proc.stdout.strip().splitlines()[-1])
    assert library == backend and gflops > 0
    assert software["keras_backend"] == backend and software[backend]
    assert report.backend_name(software).split()[0] in ("TensorFlow", "JAX", "PyTorch")


def test_peak_rss_is_the_commands_own_not_its_parents():
    """The default job's memory figure: a child's ru_maxrss includes what its parent had
    resident at fork, so a small command run from a large benchmark process looked as
    large as the benchmark. bench.peakrss measures from a small parent."""
    ballast = np.ones(600 * 2**20, np.uint8)  # this process: > 600 MiB resident
    run = [sys.executable, "-m", "bench.peakrss", sys.executable, "-c"]
    small = subprocess.run([*run, "pass"], capture_output=True, text=True, check=True)
    big = subprocess.run([*run, "import numpy; a = numpy.ones(300 * 2**20, numpy.uint8)"],
                         capture_output=True, text=True, check=True)
    del ballast
    small_row, big_row = (json.loads(p.stdout.strip().splitlines()[-1]) for p in (small, big))
    assert small_row["exit_code"] == 0 and small_row["peak_rss_mib"] < 200
    assert 300 <= big_row["peak_rss_mib"] < 600
    failed = subprocess.run([*run, "raise SystemExit(3)"], capture_output=True, text=True, check=True)
    assert json.loads(failed.stdout.strip().splitlines()[-1])["exit_code"] == 3


def _projection_net(seed: int = 0):
    """A stand-in for keras.applications' VGG: fixed random 1x1 projections + ReLU of the
    image at 5+1 pooled resolutions (enough for Gram statistics to tell images apart)."""
    rng = np.random.default_rng(seed)
    mats = [rng.normal(size=(3, 8)).astype(np.float32) for _ in range(6)]

    def net(batch):
        x = batch[0]
        out = []
        for k, m in enumerate(mats):
            step = 2 ** min(k, 4)
            pooled = x[: x.shape[0] // step * step, : x.shape[1] // step * step]
            pooled = pooled.reshape(x.shape[0] // step, step, x.shape[1] // step, step, 3).mean((1, 3))
            out.append(np.maximum(pooled @ m, 0)[None])
        return out

    return net


def test_style_ratio_is_one_for_the_photo_and_lower_for_the_painting():
    from bench import styleratio

    rng = np.random.default_rng(3)
    photo = np.round(np.clip(np.cumsum(rng.normal(0, 4, (48, 64, 3)), axis=1) + 128, 0, 255)).astype(np.float32)
    painting = rng.uniform(0, 255, (40, 40, 3)).astype(np.float32)
    scorer = styleratio.StyleScorer(_projection_net(), photo, painting, (48, 64))
    ratio, dist = scorer.score(photo)
    assert ratio == pytest.approx(1.0, abs=1e-3) and dist == pytest.approx(0.0, abs=1e-3)
    painted, moved = scorer.score(styleratio.resized(painting, (48, 64)))
    assert painted < 0.5 and moved > 0.1


def test_style_ratio_curve_reads_the_last_snapshot_before_a_time():
    from bench import styleratio

    curve = [(1.0, 0.9, 0.1), (2.0, 0.6, 0.2), (4.0, 0.5, 0.3)]
    assert styleratio.value_at(curve, 0.5) is None
    assert styleratio.value_at(curve, 3.0) == 0.6
    assert styleratio.time_to_ratio(curve, 0.55) == 4.0
    assert styleratio.time_to_ratio(curve, 0.4) is None
    ttq = {"reference": {"seconds": 4.0}, "methods": [
        {"key": "c", "label": "ref", "style_ratio_at": {0.5: 0.6, 1.0: 0.5}, "style_ratio": 0.5,
         "content_dist": 0.3, "time_to_ref_style": 4.0}]}
    text = report.style_ratio_table(ttq)
    assert "at 0.5·T_ref (2 s)" in text and "0.600" in text
    assert report.style_ratio_table({"methods": [{"key": "d", "label": "x"}]}) is None
