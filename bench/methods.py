"""The four methods compared for time to quality, each scored on the same full-resolution loss.

a. "notebook": the classic TensorFlow notebooks (e.g. log0's) -- Adam, lr 2 on 0..255
   pixels, default betas (0.9, 0.999) and epsilon 1e-8, initialised with
   0.5 * uniform(-20, 20) noise around the mean pixel + 0.5 * content
   (`engine.transfer.initial_image(..., "blend", 0.5)`).
b. "tutorial": the TensorFlow tutorial -- Adam(learning_rate=0.02, beta_1=0.99,
   epsilon=0.1) on 0..1 pixels, from the content image, clipped to the pixel range.
   We optimise 0..255 pixels x = 255 u with the same loss, and Adam on u with
   (lr, eps) is exactly Adam on x with (255 lr, eps / 255): lr 5.1, eps 3.9e-4.
   The tutorial's own loss weights (and its TV weight of 30) are *not* used: every
   method minimises stylebot's loss. Keras' Adam adds eps to sqrt(v), not to the
   bias-corrected sqrt(v_hat) (at step 1 that makes eps ~30x larger relative to the
   gradient), so b runs `keras_adam`, a copy of Keras' update rule, not the engine's
   textbook Adam. Adam sees the loss's scale only through eps, and stylebot's
   standardised loss has gradients of ~1e-5 per pixel (first_grad_rms), far below the
   tutorial's, where eps = 3.9e-4 would freeze b; so b's gradient is rescaled to RMS 1
   at the start (see run_classic). (a's TF1 AdamOptimizer has the same form, but with
   eps = 1e-8 the two are the same, so a uses `engine.optimize.adam`.)
c. "lbfgs": single-scale L-BFGS from the content image for N evaluations
   (jcjohnson/neural-style's default: 500) with jcjohnson's optimiser (torch's
   optim.lbfgs, no line search), pixels clipped; history 20 (see REFERENCE_HISTORY).
   `reference_lbfgs` is the bench's own frozen copy, so the reference does not move
   when the engine's optimiser changes. The loss of the image it returns is L_ref,
   its wall time T_ref.
d. "default": stylebot's default job, `Engine.stylize` with `TransferSettings(size=,
   seed=)` and nothing else changed -- whatever the engine's defaults are.

a-c run the engine's optimisers over `Objective.step` at full resolution, so their
step losses *are* full-resolution losses (one per evaluation). d runs the real
engine; its images are captured through `on_image` and scored afterwards.
Every clock starts before the method's setup (resizing, targets) and excludes the
benchmark's own bookkeeping (measured and subtracted).
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench import machine
from bench import problem as problem_mod
from bench.quality import Point
from engine.optimize import two_loop

METHODS = {
    "a": "notebook Adam",
    "b": "TF-tutorial Adam",
    "c": "L-BFGS, single scale (reference)",
    "d": "stylebot default job",
}
DESCRIPTIONS = {
    "a": "the classic notebook: Adam lr 2 on 0-255 pixels, init 0.5 x noise + 0.5 x content",
    "b": "the TensorFlow tutorial: Keras Adam lr 0.02, beta1 0.99, eps 0.1 on 0-1 pixels "
         "(= lr 5.1, eps 0.1/255 on 0-255), from the content image",
    "c": "single-scale L-BFGS (jcjohnson/neural-style's: no line search) from the content image (500 evaluations in full mode, as jcjohnson's default)",
    "d": "Engine.stylize with TransferSettings(size=, seed=) defaults",
}
NOTEBOOK_LR = 2.0
NOTEBOOK_NOISE_RATIO = 0.5
TUTORIAL_LR = 0.02 * 255.0
TUTORIAL_BETA1 = 0.99
TUTORIAL_EPS = 0.1 / 255.0
# L-BFGS history of the reference. jcjohnson/neural-style keeps 100 pairs (optim.lbfgs's
# nCorrection), cheap on a GPU; SciPy's L-BFGS-B (setulb, single-threaded) costs grow with
# the pairs kept, and at 100 pairs on a 2-core CPU it costs more per evaluation than the
# network does at 256 px (1.0 s vs 0.7 s measured), a strawman reference. 20 pairs (the
# engine's value when this was written) converge about as fast per evaluation.
REFERENCE_HISTORY = 20


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class Clock:
    """Wall time since start, minus the time spent inside `paused()` blocks."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.cpu0 = time.process_time()
        self.overhead = 0.0

    def now(self) -> float:
        return time.perf_counter() - self.t0 - self.overhead

    def cpu(self) -> float:
        """This process's CPU time (all threads) since start, minus the bookkeeping's wall time."""
        return time.process_time() - self.cpu0 - self.overhead

    @contextmanager
    def paused(self) -> Iterator[float]:
        start = time.perf_counter()
        try:
            yield start - self.t0 - self.overhead
        finally:
            self.overhead += time.perf_counter() - start


class _OverBudget(Exception):
    pass


@dataclass
class Run:
    key: str
    label: str
    settings: dict[str, Any]
    curve: list[Point] = field(default_factory=list)
    evaluations: int = 0
    wall_s: float = 0.0
    ended: str = "done"  # done | budget
    final_loss: float = math.nan
    overhead_s: float = 0.0
    cpu_s: float = math.nan  # this process's CPU time over the run (all threads)
    step_s: float = math.nan  # time inside the network step (a-c only): the rest is the optimiser
    cpu: dict[str, Any] = field(default_factory=dict)
    rss_start_mib: float | None = None
    peak_rss_mib: float | None = None
    notes: list[str] = field(default_factory=list)
    final_image: np.ndarray | None = field(default=None, repr=False)
    # (seconds, style_ratio, content_dist) of snapshots, scored after the run on a real network
    # (bench.styleratio); empty with random weights.
    style_curve: list[tuple[float, float, float]] = field(default_factory=list)


class _Progress:
    def __init__(self, name: str, every_s: float = 10.0) -> None:
        self.name, self.every_s, self.last = name, every_s, time.perf_counter()

    def maybe(self, iteration: int, seconds: float, loss: float, total: int | None = None) -> None:
        if time.perf_counter() - self.last >= self.every_s:
            self.last = time.perf_counter()
            of = f"/{total}" if total else ""
            log(f"  {self.name}: evaluation {iteration}{of}, {seconds:.1f} s, loss {loss:.4g}")


# --- a, b, c: the engine's optimisers over the full-resolution step ------------------------


def keras_adam(evaluate: Callable[[np.ndarray], tuple[float, np.ndarray]], x0: np.ndarray, *,
               evaluations: int, lower: float, upper: float, learning_rate: float, beta1: float,
               beta2: float, epsilon: float) -> np.ndarray:
    """keras.optimizers.Adam's update (keras/src/optimizers/adam.py), the iterate clipped
    to the pixel range after each step as the tutorial's clip_0_1 does."""
    x = np.asarray(x0, dtype=np.float32).ravel().copy()
    m = np.zeros_like(x)
    v = np.zeros_like(x)
    for t in range(1, evaluations + 1):
        _, grad = evaluate(x)
        grad = np.asarray(grad, dtype=np.float32).ravel()
        alpha = learning_rate * math.sqrt(1 - beta2**t) / (1 - beta1**t)
        m += (grad - m) * (1 - beta1)
        v += (grad * grad - v) * (1 - beta2)
        x -= alpha * m / (np.sqrt(v) + epsilon)
        np.clip(x, lower, upper, out=x)
    return x


def reference_lbfgs(evaluate: Callable[[np.ndarray], tuple[float, np.ndarray]], x0: np.ndarray, *,
                    evaluations: int, lower: float, upper: float, history: int) -> np.ndarray:
    """jcjohnson/neural-style's optimiser: torch's optim.lbfgs without a line search
    (unit quasi-Newton steps, the first 1/|g|_1 long), one evaluation per iteration,
    here with pixels clipped to the bounds; returns the best image evaluated.

    A frozen copy of the outer loop (NumPy, float32) so the reference does not move
    when the engine's optimiser changes; the two-loop recursion (Nocedal & Wright,
    Alg. 7.4) is the engine's pure function. An earlier version used SciPy's L-BFGS-B, whose single-threaded
    bound-constrained iteration cost about as much as a network pass at 256 px: that
    made the reference slower than jcjohnson's and flattered every speed-up.
    """
    x = np.asarray(x0, dtype=np.float32).ravel().copy()
    best_x, best_loss = x.copy(), np.inf
    pairs: list[tuple[np.ndarray, np.ndarray, float]] = []
    gamma = 1.0
    x_prev = g_prev = None
    for _ in range(evaluations):
        loss, grad = evaluate(x)
        g = np.asarray(grad, dtype=np.float32).ravel()
        if loss < best_loss:
            best_x, best_loss = x.copy(), loss
        if x_prev is None:
            step = -g * min(1.0, 1.0 / max(float(np.abs(g).sum()), 1e-30))
        else:
            s, y = x - x_prev, g - g_prev
            sy = float(s @ y)
            if sy > 1e-10:
                if len(pairs) == history:
                    pairs.pop(0)
                pairs.append((s, y, 1.0 / sy))
                gamma = sy / float(y @ y)
            step = -two_loop(g, pairs, gamma)
        x_prev, g_prev = x, g
        x = np.clip(x + step, lower, upper)
    return best_x


def run_classic(key: str, engine: Any, content: np.ndarray, style: np.ndarray, settings: Any, *,
                evaluations: int, budget_s: float | None, seed: int,
                lbfgs_history: int = REFERENCE_HISTORY, scorer: Any = None) -> Run:
    from engine import optimize, transfer  # optimize: a's Adam

    if key == "a":
        config = {"optimizer": "adam", "learning_rate": NOTEBOOK_LR, "beta1": 0.9, "beta2": 0.999,
                  "epsilon": 1e-8, "init": "blend", "noise_ratio": NOTEBOOK_NOISE_RATIO}
    elif key == "b":
        config = {"optimizer": "adam (Keras' update)", "learning_rate": TUTORIAL_LR, "beta1": TUTORIAL_BETA1,
                  "beta2": 0.999, "epsilon": TUTORIAL_EPS, "init": "content"}
    elif key == "c":
        config = {"optimizer": "lbfgs", "history": lbfgs_history, "init": "content"}
    else:
        raise ValueError(key)
    config.update(evaluations=evaluations, seed=seed, size=settings.size, precision="float32",
                  budget_s=budget_s)
    run = Run(key, METHODS[key], config, step_s=0.0)
    progress = _Progress(f"{key} ({config['optimizer']})")
    # About 40 snapshots per run for the style_ratio curve (copied inside the paused clock).
    snapshot_every = max(1, evaluations // 40)
    snapshots: list[tuple[float, np.ndarray]] = []
    machine.reset_peak_rss()
    run.rss_start_mib = machine.rss_mib()[0]

    with machine.CpuMonitor() as monitor:
        clock = Clock()
        prob = problem_mod.build(engine, content, style, settings)
        shape = prob.shape
        if config["init"] == "blend":
            x0 = transfer.initial_image(prob.content, "blend", config["noise_ratio"], seed, prob.mean_rgb)
        else:
            x0 = prob.content.copy()

        # Adam depends on the loss's scale only through eps. The tutorial's eps (0.1 on 0..1
        # pixels) is tiny against its own loss's gradients (Caffe-scale Grams times 1e-2 / 1e4
        # weights), but stylebot's standardised, mean-reduced loss has gradients of ~1e-5 per
        # pixel, where that eps would freeze b (0.1-px steps). So b sees its gradient
        # rescaled to RMS 1 at the start, which keeps eps as negligible as in the tutorial.
        grad_scale = [1.0]

        def evaluate(x: np.ndarray) -> tuple[float, np.ndarray]:
            # The same work as the engine's own evaluate(): reshape, cast, compiled step.
            image = x.reshape(shape).astype(np.float32)
            t_step = time.perf_counter()
            loss, grad, _ = prob.step(image)
            run.step_s += time.perf_counter() - t_step
            if key == "b" and run.evaluations == 0:
                grad_scale[0] = 1.0 / max(float(np.sqrt(np.mean(np.square(grad)))), 1e-30)
            with clock.paused() as t:
                run.evaluations += 1
                run.curve.append((run.evaluations, t, float(loss), float(run.evaluations), clock.cpu()))
                if scorer is not None and (run.evaluations - 1) % snapshot_every == 0:
                    snapshots.append((t, image.copy()))
                if run.evaluations == 1:
                    run.settings["first_grad_rms"] = float(np.sqrt(np.mean(np.square(grad))))
                progress.maybe(run.evaluations, t, loss, evaluations)
                if budget_s is not None and t > budget_s:
                    raise _OverBudget
            return loss * grad_scale[0], grad * grad_scale[0]

        bounds = {"lower": problem_mod.PIXEL_MIN, "upper": problem_mod.PIXEL_MAX}
        try:
            if key == "c":
                x = reference_lbfgs(evaluate, x0, evaluations=evaluations, history=lbfgs_history, **bounds)
            else:
                adam = keras_adam if key == "b" else optimize.adam
                x = adam(evaluate, x0, evaluations=evaluations, learning_rate=config["learning_rate"],
                         beta1=config["beta1"], beta2=config["beta2"], epsilon=config["epsilon"], **bounds)
            run.final_image = np.clip(np.asarray(x).reshape(shape), 0, 255).astype(np.float32)
        except _OverBudget:
            run.ended = "budget"
        run.wall_s = clock.now()
        run.cpu_s = clock.cpu()
        run.overhead_s = clock.overhead
    run.cpu = monitor.as_dict()
    run.peak_rss_mib = machine.rss_mib()[1]
    run.notes.append(f"{100 * run.step_s / run.wall_s:.0f} % of its wall time in the network step "
                     f"({run.step_s / max(1, run.evaluations):.3f} s/step), the rest setup and optimiser")
    if run.final_image is not None:
        run.final_loss = prob.loss(run.final_image)
        best = min(p[2] for p in run.curve)
        run.notes.append(f"returned image scores {run.final_loss:.6g}, best evaluated image {best:.6g}")
    else:
        run.final_loss = min(p[2] for p in run.curve)
    if scorer is not None:
        if run.final_image is not None:
            snapshots.append((run.wall_s, run.final_image))
        run.style_curve = [(t, *scorer.score(image)) for t, image in snapshots]
    return run


# --- d: the engine's own default job ------------------------------------------------------


class _Snapshots:
    """Images seen through on_image: every `every`-th, each scale's last, and the final one.

    Written to a temporary folder (the page cache is not our resident memory, so
    the job's peak RSS stays the job's); copying and writing are subtracted.
    """

    def __init__(self, every: int, folder: Path) -> None:
        self.every, self.folder = every, folder
        self.saved: list[tuple[int, float, tuple[int, int], Path]] = []
        self.last: tuple[int, float, np.ndarray] | None = None
        self.last_saved = 0

    def _save(self, count: int, t: float, image: np.ndarray) -> None:
        path = self.folder / f"{count:06d}.npy"
        np.save(path, image)
        self.saved.append((count, t, image.shape[:2], path))
        self.last_saved = count

    def offer(self, count: int, t: float, image: np.ndarray) -> None:
        # Counts may jump (an engine that reports chunks of iterations): "every" is a spacing.
        image = np.array(image, dtype=np.float32, copy=True)
        if self.last is not None and self.last[2].shape != image.shape and self.last_saved != self.last[0]:
            self._save(*self.last)  # the previous scale's final image
        if not self.saved or count - self.last_saved >= self.every:
            self._save(count, t, image)
        self.last = (count, t, image)

    def finish(self) -> None:
        if self.last is not None and self.last_saved != self.last[0]:
            self._save(*self.last)


def warm_up(engine: Any, content: np.ndarray, style: np.ndarray, settings: Any) -> None:
    """Trace the default job's compiled code at two small sizes, so that (as in a worker
    that has served two image sizes) the benchmark times no tracing: after a second
    shape TensorFlow's reduce_retracing compiles shape-polymorphic code."""
    from engine.errors import Cancelled

    for size in (64, 96):

        def stop(seen: list[int] = [0]) -> bool:  # noqa: B006 - a fresh counter per size
            seen[0] += 1
            return seen[0] >= 3

        try:
            engine.stylize(content, [style], replace(settings, size=size), should_stop=stop)
        except Cancelled:
            pass


def warm_up_problem(engine: Any, content: np.ndarray, style: np.ndarray, settings: Any,
                    prob: problem_mod.Problem) -> None:
    """The same for the float32 step and the scoring pass used by a, b, c and the scores."""
    for size in (64, 96):
        small = problem_mod.build(engine, content, style, replace(settings, size=size))
        small.step(small.content)
        small.loss(small.content)
    prob.step(prob.content)
    prob.loss(prob.content)


def run_default(engine: Any, content: np.ndarray, style: np.ndarray, settings: Any, *,
                prob: problem_mod.Problem, budget_s: float | None, snapshot_every: int,
                scorer: Any = None) -> Run:
    from engine.errors import Cancelled

    config = {"settings": f"TransferSettings(size={settings.size}, seed={settings.seed}) defaults",
              "optimizer": settings.optimizer, "iterations": settings.iterations,
              "precision": settings.precision, "init": settings.init,
              "scales": getattr(settings, "scales", None), "budget_s": budget_s,
              "snapshot_every": snapshot_every}
    run = Run("d", METHODS["d"], config)
    progress = _Progress("d (default)")
    folder = Path(tempfile.mkdtemp(prefix="stylebot-bench-"))
    snaps = _Snapshots(snapshot_every, folder)
    # Per on_image call: [iteration, seconds, shape, engine's own loss or nan, cpu seconds].
    seen: list[list[Any]] = []
    machine.reset_peak_rss()
    run.rss_start_mib = machine.rss_mib()[0]
    try:
        with machine.CpuMonitor() as monitor:
            clock = Clock()

            def on_image(count: int, image: np.ndarray | None) -> None:
                with clock.paused() as t:
                    shape = image.shape[:2] if image is not None else (seen[-1][2] if seen else prob.shape[:2])
                    seen.append([count, t, tuple(shape), math.nan, clock.cpu()])
                    if image is not None:
                        snaps.offer(count, t, image)

            def on_progress(p: Any) -> None:
                with clock.paused():
                    if seen and seen[-1][0] >= p.iteration:
                        seen[-1][3] = float(p.losses.get("total", math.nan))
                    progress.maybe(p.iteration, seen[-1][1] if seen else 0.0,
                                   p.losses.get("total", math.nan), p.total)

            def should_stop() -> bool:
                with clock.paused() as t:
                    return budget_s is not None and t > budget_s

            try:
                result = engine.stylize(content, [style], settings, on_progress=on_progress,
                                        should_stop=should_stop, on_image=on_image)
                run.final_image = result.image
            except Cancelled:
                run.ended = "budget"
            run.wall_s = clock.now()
            run.cpu_s = clock.cpu()
            with clock.paused():
                snaps.finish()
            run.overhead_s = clock.overhead
        run.cpu = monitor.as_dict()
        run.peak_rss_mib = machine.rss_mib()[1]
        run.evaluations = max((c for c, *_ in seen), default=0)
        run.curve, check = _score_default(prob, seen, snaps)
        run.notes.extend(check)
        if scorer is not None:
            run.style_curve = [(t, *scorer.score(np.load(path))) for _, t, _, path in snaps.saved]
        if run.final_image is not None and settings.color == "none":
            run.final_loss = prob.loss(run.final_image)
        else:
            run.final_loss = min((p[2] for p in run.curve), default=math.nan)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return run


def _score_default(prob: problem_mod.Problem, seen: list[list[Any]],
                   snaps: _Snapshots) -> tuple[list[Point], list[str]]:
    """The full-resolution loss curve of the default job.

    Snapshots are scored at full resolution (coarse ones upsampled as the pyramid
    does). Where the engine itself evaluated at full resolution with the same loss --
    checked on every full-resolution snapshot -- its own per-step losses are used as
    well, which gives the curve one point per evaluation at the finest scale.
    """
    full = tuple(prob.shape[:2])
    work, cumulative, previous = {}, 0.0, 0
    cpu = {}
    for count, _, shape, _, cpu_s in seen:
        cumulative += (count - previous) * shape[0] * shape[1] / float(prob.pixels)
        work[count], cpu[count], previous = cumulative, cpu_s, count
    log(f"  d: scoring {len(snaps.saved)} snapshots at full resolution")
    scored: dict[int, tuple[float, float]] = {}
    for count, t, _shape, path in snaps.saved:
        scored[count] = (t, prob.loss(np.load(path)))
    diffs = [abs(scored[c][1] - loss) / scored[c][1]
             for c, _, shape, loss, _ in seen if c in scored and tuple(shape) == full and math.isfinite(loss)]
    notes = [f"{len(snaps.saved)} snapshots scored (every {snaps.every} evaluations + each scale's last)",
             f"on_image called {len(seen)} times"]
    use_engine = bool(diffs) and max(diffs) <= 1e-3
    if diffs:
        notes.append(f"engine's full-res step loss vs scored snapshot: max rel. diff {max(diffs):.1e} "
                     f"on {len(diffs)} -> {'dense engine losses used at full res' if use_engine else 'snapshots only'}")
    points = {c: (c, t, loss, work[c], cpu[c]) for c, (t, loss) in scored.items()}
    if use_engine:
        for count, t, shape, loss, _ in seen:
            if tuple(shape) == full and math.isfinite(loss) and count not in points:
                points[count] = (count, t, loss, work[count], cpu[count])
    return [points[c] for c in sorted(points)], notes
