"""`Engine.stylize()`: setup, targets, the optimisation loop and progress.

Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural Networks"
(CVPR 2016), with the colour preservation of Gatys et al. (2016) and the usual
extensions (several styles, style scale). The Engine holds the weights and the
compiled networks, so a worker process builds it once and keeps it warm.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import keras
import numpy as np
from keras import ops

from engine import backends, color, device, images, losses, memory, optimize, tiling
from engine.errors import Cancelled, WeightsError
from engine.jobs import (
    NETWORK_LABELS,
    JobRequest,
    JobResult,
    Progress,
    TransferSettings,
    style_blend_weights,
)
from engine.vgg import FeatureNetwork, deepest_layer
from engine.weights import VGGWeights

log = logging.getLogger(__name__)

ProgressCallback = Callable[[Progress], None]
StopCheck = Callable[[], bool]
ImageCallback = Callable[[int, np.ndarray], None]

PIXEL_MIN, PIXEL_MAX = 0.0, 255.0
NOISE_AMPLITUDE = 20.0  # uniform(-20, 20) around the mean pixel, as in the classic TF notebooks


@dataclass(frozen=True)
class StylizeResult:
    image: np.ndarray  # float32 (H, W, 3), RGB 0..255
    seed: int
    iterations: int
    losses: Mapping[str, float]
    elapsed: float


@dataclass
class Targets:
    """What the output must match, computed once per job (never per step): the
    standardised content features and Gram matrices, and the per-channel scales
    (losses.channel_scales) that standardise the output's features the same way."""

    content: list[np.ndarray]
    style_grams: list[np.ndarray]
    content_scales: list[np.ndarray]
    style_scales: list[np.ndarray]


# --- small pure helpers -------------------------------------------------------------------


def resolve_seed(seed: int | None) -> int:
    return secrets.randbelow(2**31) if seed is None else int(seed)


def initial_image(content: np.ndarray, mode: str, noise_ratio: float, seed: int,
                  mean_rgb: np.ndarray) -> np.ndarray:
    """content, white noise around the mean pixel (the paper), or a blend of both."""
    if mode == "content":
        return content.copy()
    rng = np.random.default_rng(seed)
    noise = mean_rgb + rng.uniform(-NOISE_AMPLITUDE, NOISE_AMPLITUDE, content.shape)
    if mode == "noise":
        return noise.astype(np.float32)
    return (noise_ratio * noise + (1.0 - noise_ratio) * content).astype(np.float32)


@dataclass(frozen=True)
class Level:
    shape: tuple[int, int]  # (height, width) of the image optimised at this scale
    iterations: int

    @property
    def longest(self) -> int:
        return max(self.shape)

    @property
    def cost(self) -> float:
        """Relative cost: a step costs about the number of pixels."""
        return self.iterations * self.shape[0] * self.shape[1]


# Coarser scales than this lose the deep layers' receptive field (conv5_1 sees
# 1/16 of the image): their style statistics stop meaning much.
MIN_PYRAMID_SIDE = 64


def pyramid_plan(shape: tuple[int, int], settings: TransferSettings) -> list[Level]:
    """Coarse-to-fine schedule: `scales` sizes, each twice the previous, ending at the
    output size, with the iteration budget split by `scale_iterations` weights.

    A coarse scale costs a quarter of the next per step and fixes the large-scale
    layout of the style, so the fine scale only has detail left to do (the idea of
    coarse-to-fine texture synthesis; crowsonkb/style-transfer-pytorch does the same).
    """
    height, width = shape
    levels = []
    for k in reversed(range(settings.scales)):
        factor = 2**k
        if max(height, width) / factor < MIN_PYRAMID_SIDE and k > 0:
            continue
        levels.append((max(1, round(height / factor)), max(1, round(width / factor))))
    weights = split_weights(settings.scale_iterations, len(levels))
    counts = split_budget(settings.iterations, weights)
    return [Level(level, n) for level, n in zip(levels, counts, strict=True) if n > 0]


def split_weights(weights: Sequence[float], levels: int) -> list[float]:
    """The last `levels` weights (the finest scales), or equal weights if none are set."""
    if not weights:
        return [1.0] * levels
    chosen = list(weights)[-levels:]
    return [1.0] * (levels - len(chosen)) + chosen


def split_budget(total: int, weights: Sequence[float]) -> list[int]:
    """Integer shares of `total` proportional to `weights`, summing exactly to `total`."""
    raw = [total * w / sum(weights) for w in weights]
    counts = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)[: total - sum(counts)]:
        counts[i] += 1
    return counts


def fit(rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return rgb if rgb.shape[:2] == tuple(shape) else images.resize_to(rgb, shape)


def fit_longest(rgb: np.ndarray, longest: int) -> np.ndarray:
    longest = max(16, longest)
    return rgb if max(rgb.shape[:2]) == longest else images.resize_longest(rgb, longest)


def style_size(settings: TransferSettings) -> int:
    return max(16, round(settings.size * settings.style_scale))


# --- the loss on one image, built once per network and layer set ----------------------------


class Objective:
    """α·L_content + β·L_style + tv·L_tv (Gatys et al. 2016, Eq. 7), on an RGB image."""

    def __init__(self, network: FeatureNetwork, content_layers: Sequence[str],
                 style_layers: Sequence[str]) -> None:
        self.content_layers = tuple(content_layers)
        self.style_layers = tuple(style_layers)
        self.layers = tuple(dict.fromkeys(self.content_layers + self.style_layers))
        self.network = network
        self.model = network.submodel(self.layers)
        self.mean_bgr = network.mean_bgr
        # The backend's compiled step (and on-device optimiser loops); the weights
        # are handed over so that JAX can pass them to its compiled code as arguments.
        backend = backends.current()
        self.step = backend.value_and_grad(self.__call__, self.model.variables)
        noise = optimize.NOISE_BFLOAT16 if network.key.precision == "bfloat16" else optimize.NOISE_FLOAT32
        self.loops = optimize.DeviceLoops(backend, self.__call__, self.model.variables,
                                          term_names=self.TERMS, noise=noise)

    TERMS: tuple[str, ...] = ("content", "style", "tv")

    def __call__(self, image, content_targets, style_targets, content_scales, style_scales,
                 content_weights, style_weights, tv_weight):
        # The weights arrive as (1 − λ)·w_l and λ·w_l (losses.strength_split), the
        # scales per layer from the job's own images (losses.channel_scales).
        # A tensor, not an ndarray: PyTorch tensors refuse NumPy operands.
        bgr = ops.flip(image, axis=-1) - ops.convert_to_tensor(self.mean_bgr)
        outputs = self.model(bgr[None], training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        by_name = dict(zip(self.layers, outputs, strict=True))
        content = losses.weighted_sum(
            [losses.content_loss(losses.standardise(by_name[n][0], s), t)
             for n, t, s in zip(self.content_layers, content_targets, content_scales, strict=True)],
            [content_weights[i] for i in range(len(self.content_layers))],
        )
        style = losses.weighted_sum(
            [losses.style_layer_loss(losses.gram_matrix(losses.standardise(by_name[n][0], s)), t)
             for n, t, s in zip(self.style_layers, style_targets, style_scales, strict=True)],
            [style_weights[i] for i in range(len(self.style_layers))],
        )
        tv = losses.total_variation_loss(image)
        total = content + style + tv_weight * tv
        return total, {"content": content, "style": style, "tv": tv}


class TemporalObjective(Objective):
    """The loss plus a temporal term for an animation's frame (engine/animation.py):
    w_t · mean(mask · ((x − previous) / 255)²), where `previous` is the previous frame's
    result and `mask` (H, W, 1) is 1 where the input frame did not change."""

    TERMS = ("content", "style", "tv", "temporal")

    def __call__(self, image, content_targets, style_targets, content_scales, style_scales,
                 content_weights, style_weights, tv_weight, previous, mask, temporal_weight):
        total, terms = super().__call__(image, content_targets, style_targets, content_scales,
                                        style_scales, content_weights, style_weights, tv_weight)
        temporal = ops.mean(mask * ops.square((image - previous) / 255.0))
        return total + temporal_weight * temporal, {**terms, "temporal": temporal}


# --- the engine ---------------------------------------------------------------------------


WeightsLoader = Callable[[str], VGGWeights]


@dataclass
class Engine:
    """Weights plus compiled networks, kept warm across jobs.

    `weights` are those of the network jobs normally ask for (settings.network);
    `weights_for(network)` loads another network's when a job asks for it (each
    once per engine). Without it, such a job fails with a WeightsError that says
    which network this engine holds."""

    weights: VGGWeights
    weights_for: WeightsLoader | None = field(default=None, kw_only=True)
    _loaded: dict = field(default_factory=dict, repr=False)
    _networks: dict = field(default_factory=dict, repr=False)
    _objectives: dict = field(default_factory=dict, repr=False)
    _auto_precision: str | None = field(default=None, repr=False)

    def describe(self) -> dict[str, str]:
        info = dict(backends.current().describe())
        info["device"] = device.current().label()  # chooses it, if nobody has yet
        info["weights"] = self.weights.source
        return info

    def precision(self, settings: TransferSettings) -> str:
        if settings.precision != "auto":
            return settings.precision
        if self._auto_precision is None:  # the device and the CPU do not change
            self._auto_precision = device.current().precision("auto")
        return self._auto_precision

    def weights_of(self, network: str) -> VGGWeights:
        """The weights of `network` ("vgg19" or "vgg16")."""
        if network == self.weights.network:
            return self.weights
        if network not in self._loaded:
            if self.weights_for is None:
                raise WeightsError(
                    f"this engine was started with {NETWORK_LABELS[self.weights.network]} weights "
                    f"({self.weights.source}) and a job asked for network = {network!r}. To fix: "
                    f'set [engine] network = "{self.weights.network}", or restart the engine '
                    f"with {NETWORK_LABELS.get(network, network)} weights")
            self._loaded[network] = self.weights_for(network)
        return self._loaded[network]

    def network(self, settings: TransferSettings) -> FeatureNetwork:
        """The compiled feature network of `settings`, one per (network, pooling, precision)."""
        settings = replace(settings, precision=self.precision(settings))
        key = (settings.network, settings.pooling, settings.precision)
        weights = self.weights_of(settings.network)
        if key not in self._networks:
            # Build up to conv5_1 once; each job's model is pruned to its own deepest layer.
            deepest = deepest_layer(["conv5_1", *self._layer_names(settings)])
            self._networks[key] = FeatureNetwork(weights, pooling=settings.pooling,
                                                 precision=settings.precision, deepest=deepest)
        network = self._networks[key]
        needed = deepest_layer(self._layer_names(settings))
        if needed not in network.layer_names:  # a deeper layer than built (conv5_2+)
            network = FeatureNetwork(weights, pooling=settings.pooling,
                                     precision=settings.precision, deepest=needed)
            self._networks[key] = network
        return network

    @staticmethod
    def _layer_names(settings: TransferSettings) -> list[str]:
        return [n for n, _ in settings.content_layers] + [n for n, _ in settings.style_layers]

    def objective(self, settings: TransferSettings, temporal: bool = False) -> Objective:
        network = self.network(settings)
        content = tuple(n for n, _ in settings.content_layers)
        style = tuple(n for n, _ in settings.style_layers)
        key = (id(network), content, style, temporal)
        if key not in self._objectives:
            self._objectives[key] = (TemporalObjective if temporal else Objective)(network, content, style)
        return self._objectives[key]

    # -- stylize: setup, targets, loop -----------------------------------------------------

    def stylize(self, content: np.ndarray, styles: Sequence[np.ndarray],
                settings: TransferSettings = TransferSettings(), *,
                on_progress: ProgressCallback | None = None,
                should_stop: StopCheck | None = None,
                on_image: ImageCallback | None = None,
                init: np.ndarray | None = None,
                temporal: tuple[np.ndarray, np.ndarray, float] | None = None) -> StylizeResult:
        """Repaint `content` (RGB 0..255, any size) in the style of `styles`.

        `init` (RGB 0..255, any size) replaces settings.init as the starting image:
        resized to the first level, e.g. a smaller earlier result (Upscale).
        Levels whose estimated memory exceeds settings.max_memory, or whose longest
        side is above settings.tile_above, run in overlapping tiles (tile_plan).
        `temporal` = (previous result, mask, weight): an animation frame's temporal term
        (TemporalObjective; such a job is never tiled: frames are small).

        Returns the image at `settings.size` on its longest side. Progress is reported
        after every network evaluation; `should_stop` is checked between evaluations.
        `on_image(iteration, image)` sees every evaluated image (benchmarks use it to
        measure the full-resolution loss against time).
        """
        started = time.perf_counter()
        seed = resolve_seed(settings.seed)
        if settings.color == "luminance":  # the optimiser works on luminance (grey) images
            grey = lambda rgb: color._grey_rgb(color.luminance(np.asarray(rgb, np.float32)))  # noqa: E731
            init = None if init is None else grey(init)
            temporal = None if temporal is None else (grey(temporal[0]), temporal[1], temporal[2])
        job = self.prepare(content, styles, settings, temporal=temporal is not None)
        tiles = {level.shape: self.tile_plan(level.shape, settings, job) if temporal is None
                 else memory.TilePlan(level.shape, None, 0, 0.0, 0.0, 0.0) for level in job.plan}
        # Progress counts every tile's iterations: a tiled level is `tiles` times as long.
        counted = [Level(level.shape, level.iterations * len(tiling.grid(level.shape, plan.tile, plan.overlap)))
                   if (plan := tiles[level.shape]).tiled else level for level in job.plan]
        reporter = _Reporter(settings, on_progress, should_stop, started, plan=counted,
                             on_image=on_image,
                             finish=(lambda im: color.recombine_luminance(im, images.resize_to(job.content, im.shape[:2])))
                             if settings.color == "luminance" else None)
        x = None
        for level in job.plan:
            if x is None and init is not None:  # the Upscale button: the previous result
                x = np.clip(images.resize_to(np.asarray(init, np.float32), level.shape),
                            PIXEL_MIN, PIXEL_MAX).astype(np.float32)
            elif x is not None:  # coarse-to-fine: the previous scale's result, upsampled, starts this one
                x = np.clip(images.resize_to(x, level.shape), PIXEL_MIN, PIXEL_MAX).astype(np.float32)
            if tiles[level.shape].tiled:
                if x is None:
                    x = initial_image(fit(job.content_seen, level.shape), settings.init,
                                      settings.noise_ratio, seed, job.objective.mean_bgr[::-1])
                x = self._optimize_tiled(job, level, tiles[level.shape], x, reporter)
                continue
            level_content, args = job.level(level.shape)
            if temporal is not None:
                previous, mask, weight = temporal
                args = (*args, fit(np.asarray(previous, np.float32), level.shape),
                        fit(np.asarray(mask, np.float32)[..., 0], level.shape)[..., None]
                        if mask.shape[:2] != level.shape else np.asarray(mask, np.float32),
                        np.float32(weight))
            if x is None:
                x = initial_image(level_content, settings.init, settings.noise_ratio, seed,
                                  job.objective.mean_bgr[::-1])
            x = self._optimize(job.objective, args, x, level.iterations, settings, reporter)
        result = np.clip(x, PIXEL_MIN, PIXEL_MAX).astype(np.float32)
        if settings.color == "luminance":
            result = color.recombine_luminance(result, job.content)
        return StylizeResult(result, seed, reporter.count, reporter.last_losses,
                             time.perf_counter() - started)

    def prepare(self, content: np.ndarray, styles: Sequence[np.ndarray],
                settings: TransferSettings = TransferSettings(), *, temporal: bool = False) -> PreparedJob:
        """Everything a job needs before its first step: the photo at `settings.size`
        and the styles at `style_size`, the colour mode applied, the loss, the blend
        weights and the pyramid plan. stylize() runs one; benchmarks score their
        methods on one's finest level, so both set a job up the same way."""
        if not styles:
            raise ValueError("at least one style image is needed")
        blend = style_blend_weights(settings, len(styles))
        content = images.resize_longest(np.asarray(content, np.float32), settings.size)
        styles = [images.resize_longest(np.asarray(s, np.float32), style_size(settings)) for s in styles]
        content_seen, styles_seen = network_inputs(content, styles, settings)
        return PreparedJob(settings, self.objective(settings, temporal), content, content_seen, styles_seen,
                           blend, pyramid_plan(content.shape[:2], settings))

    def tile_plan(self, shape: tuple[int, int], settings: TransferSettings,
                  job: PreparedJob | None = None) -> memory.TilePlan:
        """Whether (and in which tiles) a level of `shape` runs, by engine/memory.py."""
        style_pixels = max((s.shape[0] * s.shape[1] for s in job.styles_seen), default=0) if job else 0
        return memory.plan_tiles(shape, budget=memory.budget_mib(settings.max_memory),
                                 tile_above=settings.tile_above, tile_size=settings.tile_size,
                                 overlap=settings.tile_overlap, backend=backends.name(),
                                 precision=self.precision(settings), style_pixels=style_pixels)

    def _optimize_tiled(self, job: PreparedJob, level: Level, plan: memory.TilePlan,
                        x0: np.ndarray, reporter: _Reporter) -> np.ndarray:
        """The level optimised a tile at a time. Every tile matches the GLOBAL Gram
        targets of the styles (and is standardised by the whole job's statistics), so
        the style is the same in every tile; its content target is its own region's.
        Each tile starts from the picture as it stands (its finished neighbours where
        they overlap it), and enters it cross-faded over the overlap (engine/tiling.py)."""
        settings, objective = job.settings, job.objective
        content = fit(job.content_seen, level.shape)
        styles = [fit_longest(s, round(max(s.shape[:2]) * max(level.shape) / settings.size))
                  for s in job.styles_seen]
        chunk = memory.chunk_side(plan.tile, self.precision(settings))
        shared = tiled_targets(objective, content, styles, job.blend, chunk)
        canvas = tiling.Canvas(x0)
        for tile in tiling.grid(level.shape, plan.tile, plan.overlap):
            feats = objective.network.features(content[tile.region], objective.content_layers)
            targets = replace(shared, content=[feats[n] * s for n, s in
                                               zip(objective.content_layers, shared.content_scales, strict=True)])
            args = loss_weights(settings, targets)
            image = self._optimize(objective, args, canvas.crop(tile), level.iterations, settings,
                                   _TileReporter(reporter, canvas, tile))
            canvas.add(tile, image)
        return canvas.image()

    @staticmethod
    def _optimize(objective: Objective, args: tuple, x0: np.ndarray, iterations: int,
                  settings: TransferSettings, reporter: _Reporter) -> np.ndarray:
        shape = x0.shape
        if device.current().device_loop(settings.optimizer):
            # Compiled chunks of iterations on the device (engine/device.py says why
            # on CPUs too). Chunks end where a preview (or on_image) needs the image.
            start, every = reporter.count, settings.preview_every if reporter.on_progress else 0

            def needs_image(k: int) -> bool:
                done = start + k
                return reporter.on_image is not None or bool(every) and (
                    done % every == 0 or done == reporter.total)

            x = objective.loops.minimize(
                settings.optimizer, x0, args, evaluations=iterations, lower=PIXEL_MIN,
                upper=PIXEL_MAX,
                learning_rate=settings.learning_rate if settings.optimizer == "adam" else 1.0,
                report=lambda loss, terms, image: reporter.evaluated(image, loss, terms),
                needs_image=needs_image)
            return x.reshape(shape).astype(np.float32)

        def evaluate(x: np.ndarray) -> tuple[float, np.ndarray]:
            image = x.reshape(shape).astype(np.float32)
            loss, grad, terms = objective.step(image, *args)
            reporter.evaluated(image, loss, terms)
            return loss, grad

        if settings.optimizer == "lbfgs":
            x = optimize.lbfgs(evaluate, x0, evaluations=iterations, lower=PIXEL_MIN, upper=PIXEL_MAX)
        else:
            x = optimize.adam(evaluate, x0, evaluations=iterations, lower=PIXEL_MIN, upper=PIXEL_MAX,
                              learning_rate=settings.learning_rate)
        return x.reshape(shape).astype(np.float32)

    # -- the job contract ------------------------------------------------------------------

    def run_job(self, request: JobRequest, *, on_progress: ProgressCallback | None = None,
                should_stop: StopCheck | None = None) -> JobResult:
        """Decode, stylise and encode one request from the bot. Errors are raised typed:
        InputError (the user's image), ValueError (settings), Cancelled, anything else a bug."""
        started = time.perf_counter()
        from engine import animation

        if animation.is_animated(request.content):
            return self.run_animation(request, on_progress=on_progress, should_stop=should_stop)
        content = images.load_image(request.content, name="the photo", limits=request.limits)
        styles = [
            images.load_image(data, name=style_name(i, len(request.styles)), limits=request.limits)
            for i, data in enumerate(request.styles)
        ]

        def report(progress: Progress) -> None:
            if on_progress is not None:
                on_progress(replace(progress, job_id=request.job_id))

        init = (images.load_image(request.init_image, name="the previous result", limits=request.limits).rgb
                if request.init_image else None)
        result = self.stylize(content.rgb, [s.rgb for s in styles], request.settings,
                              on_progress=report, should_stop=should_stop, init=init)
        alpha = content.alpha
        data = images.encode_image(result.image, format=request.output_format,
                                   quality=request.quality, alpha=alpha)
        height, width = result.image.shape[:2]
        return JobResult(
            job_id=request.job_id, image=data, format=request.output_format, width=width,
            height=height, elapsed=time.perf_counter() - started, seed=result.seed,
            iterations=result.iterations, final_loss=float(result.losses.get("total", float("nan"))),
        )


    def run_animation(self, request: JobRequest, *, on_progress: ProgressCallback | None = None,
                      should_stop: StopCheck | None = None) -> JobResult:
        """An animated GIF / WebP / APNG photo: every frame stylised (engine/animation.py),
        the result an animated GIF or WebP (whichever is smaller) with the input's timing."""
        from engine import animation

        started = time.perf_counter()
        settings = request.settings
        clip = animation.read_animation(request.content, name="the animation", limits=request.limits,
                                        size=settings.size, iterations=settings.iterations,
                                        sample=request.sample)
        styles = [images.load_image(data, name=style_name(i, len(request.styles)), limits=request.limits).rgb
                  for i, data in enumerate(request.styles)]
        seed = resolve_seed(settings.seed)

        def report(progress: Progress) -> None:
            if on_progress is not None:
                on_progress(replace(progress, job_id=request.job_id))

        frames = animation.stylize_animation(self, clip, styles, replace(settings, seed=seed),
                                             on_progress=report, should_stop=should_stop)
        data, fmt = animation.encode_animation(frames, clip.durations, clip.loop, quality=request.quality)
        height, width = frames[0].shape[:2]
        return JobResult(
            job_id=request.job_id, image=data, format=fmt, width=width, height=height,
            elapsed=time.perf_counter() - started, seed=seed,
            iterations=settings.iterations, final_loss=float("nan"), frames=len(frames),
        )


# --- one job, set up: inputs, targets and loss weights --------------------------------------


@dataclass(frozen=True)
class PreparedJob:
    """A job set up by Engine.prepare(): plain data and the loss, before any step."""

    settings: TransferSettings
    objective: Objective
    content: np.ndarray  # RGB at settings.size: what luminance mode puts the colours back from
    content_seen: np.ndarray  # the content as the network sees it (colour mode applied)
    styles_seen: list[np.ndarray]  # the styles likewise, at style_size(settings)
    blend: tuple[float, ...]  # normalised style weights
    plan: list[Level]  # the coarse-to-fine schedule, finest (the output size) last

    def level(self, shape: tuple[int, int] | None = None) -> tuple[np.ndarray, tuple]:
        """The content the network sees at `shape` (default: the output size) and the
        arguments of `objective.step(image, *args)` there; the styles shrink with the
        level so their strokes keep their size relative to the image."""
        shape = tuple(shape or self.content.shape[:2])
        content = fit(self.content_seen, shape)
        styles = [fit_longest(s, round(max(s.shape[:2]) * max(shape) / self.settings.size))
                  for s in self.styles_seen]
        return content, step_args(self.objective, content, styles, self.settings, self.blend)


def network_inputs(content, styles, settings: TransferSettings):
    """(content, styles) as the network sees them under `settings.color` (Gatys et
    al. 2016, "Preserving Color ..."): luminance only, or styles colour-matched."""
    if settings.color == "luminance":
        pairs = [color.luminance_inputs(content, s) for s in styles]
        return pairs[0][0], [style for _, style in pairs]
    if settings.color == "histogram":
        return content, [color.match_color_histogram(s, content, method=settings.histogram_method)
                         for s in styles]
    return content, styles


def step_args(objective: Objective, content, styles, settings: TransferSettings, blend=None) -> tuple:
    """The arguments of `objective.step(image, *args)`: the loss stylize() minimises
    for this content and these styles (as `network_inputs` returns them) at the
    content's size."""
    if blend is None:
        blend = style_blend_weights(settings, len(styles))
    return loss_weights(settings, targets(objective, content, styles, blend))


def targets(objective: Objective, content, styles, blend) -> Targets:
    feats = objective.network.features(content, objective.layers)
    style_feats = [objective.network.features(style, objective.layers) for style in styles]
    # The photo counts half and the paintings (by their blend weights) the other
    # half in the statistics every layer is standardised by (losses.channel_scales).
    pool_weights = [1.0, *blend]
    scales = {name: losses.channel_scales(
        [losses.channel_rms(feats[name])] + [losses.channel_rms(f[name]) for f in style_feats],
        pool_weights, objective.network.reference_rms(name)) for name in objective.layers}
    content_targets = [feats[n] * scales[n] for n in objective.content_layers]
    grams = []
    for name in objective.style_layers:
        # Blending Gram targets is equivalent to blending the style losses:
        # sum_s b_s |G - A_s|^2 = |G - sum_s b_s A_s|^2 + const when sum b_s = 1
        # (the approach of jcjohnson/neural-style's -style_blend_weights).
        grams.append(sum(weight * keras.ops.convert_to_numpy(
            losses.gram_matrix(f[name] * scales[name])) for weight, f in zip(blend, style_feats, strict=True)))
    return Targets(content_targets, grams, [scales[n] for n in objective.content_layers],
                   [scales[n] for n in objective.style_layers])


def tiled_targets(objective: Objective, content, styles, blend, chunk: int) -> Targets:
    """The job's channel scales and Gram targets computed piece by piece (forward
    passes over pieces of at most `chunk` px), so that a picture too large for one
    pass still gets the targets of the whole: per-channel mean squares and Gram sums
    add up over pieces. `content` is left empty (each tile brings its own)."""

    def statistics(image):
        sums = {n: 0.0 for n in objective.layers}
        grams = {n: 0.0 for n in objective.style_layers}
        counts = {n: 0 for n in objective.layers}
        for piece in tiling.grid(image.shape[:2], (chunk, chunk), 0):
            feats = objective.network.features(image[piece.region], objective.layers)
            for name, f in feats.items():
                flat = np.asarray(f, np.float64).reshape(-1, f.shape[-1])
                sums[name] = sums[name] + np.square(flat).sum(axis=0)
                counts[name] += flat.shape[0]
                if name in grams:
                    grams[name] = grams[name] + flat.T @ flat
        rms = {n: np.sqrt(sums[n] / max(counts[n], 1)) for n in objective.layers}
        return rms, {n: grams[n] / max(counts[n], 1) for n in grams}

    content_rms, _ = statistics(content)
    style_stats = [statistics(style) for style in styles]
    pool_weights = [1.0, *blend]
    scales = {name: losses.channel_scales(
        [content_rms[name]] + [rms[name] for rms, _ in style_stats],
        pool_weights, objective.network.reference_rms(name)) for name in objective.layers}
    grams = []
    for name in objective.style_layers:
        s = scales[name].astype(np.float64)
        grams.append(sum(w * (s[:, None] * g[name] * s[None, :]) for w, (_, g) in
                         zip(blend, style_stats, strict=True)).astype(np.float32))
    return Targets([], grams, [scales[n] for n in objective.content_layers],
                   [scales[n] for n in objective.style_layers])


def loss_weights(settings: TransferSettings, targets: Targets) -> tuple:
    """The targets and the layers' weights, (1 − λ)·w_l and λ·w_l, as step arguments."""
    content_part, style_part = losses.strength_split(settings.style_strength)
    content_weights = losses.term_weights([w for _, w in settings.content_layers]) * content_part
    style_weights = losses.term_weights([w for _, w in settings.style_layers]) * style_part
    return (
        [np.asarray(t, np.float32) for t in targets.content],
        [np.asarray(g, np.float32) for g in targets.style_grams],
        [np.asarray(s, np.float32) for s in targets.content_scales],
        [np.asarray(s, np.float32) for s in targets.style_scales],
        content_weights.astype(np.float32),
        style_weights.astype(np.float32),
        np.float32(settings.tv_weight),
    )


def style_name(index: int, count: int) -> str:
    return "the style image" if count == 1 else f"style image {index + 1}"


class _TileReporter:
    """A _Reporter for one tile: previews show the whole picture with the tile in it."""

    def __init__(self, reporter: _Reporter, canvas: tiling.Canvas, tile: tiling.Tile) -> None:
        self.reporter, self.canvas, self.tile = reporter, canvas, tile

    def __getattr__(self, name):
        return getattr(self.reporter, name)

    def evaluated(self, image, loss, terms) -> None:
        r = self.reporter
        every = r.settings.preview_every
        shown = r.on_image is not None or (r.on_progress is not None and bool(every) and (
            (r.count + 1) % every == 0 or r.count + 1 == r.total))
        if image is not None and shown:
            image = self.canvas.preview(self.tile, np.asarray(image, np.float32).reshape(
                self.tile.height, self.tile.width, 3))
        self.reporter.evaluated(image, loss, terms)


class _Reporter:
    """Counts evaluations across all scales (one progress bar), raises Cancelled
    between them, and emits Progress with a cost-weighted `fraction` for ETAs."""

    def __init__(self, settings: TransferSettings, on_progress: ProgressCallback | None,
                 should_stop: StopCheck | None, started: float, *, plan: Sequence[Level],
                 on_image: ImageCallback | None = None,
                 finish: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.settings = settings
        self.on_progress = on_progress
        self.should_stop = should_stop
        self.started = started
        self.on_image = on_image
        self.finish = finish  # what the preview should show (luminance mode: recoloured)
        self.total = sum(level.iterations for level in plan)
        # Cost of each evaluation, in plan order, as a fraction of the whole job.
        total_cost = sum(level.cost for level in plan)
        self.step_costs = [level.cost / level.iterations / total_cost
                           for level in plan for _ in range(level.iterations)]
        self.count = 0
        self.done = 0.0
        self.last_losses: dict[str, float] = {}

    def evaluated(self, image: np.ndarray, loss: float, terms: Mapping[str, float]) -> None:
        self.count += 1
        self.done += self.step_costs[min(self.count, self.total) - 1]
        self.last_losses = {"total": loss, **terms}
        if not np.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss} at iteration {self.count}")
        if self.on_image is not None:
            self.on_image(self.count, image)
        if self.on_progress is not None:
            every = self.settings.preview_every
            preview = None
            if every and (self.count % every == 0 or self.count == self.total):
                shown = np.clip(image, PIXEL_MIN, PIXEL_MAX)
                if self.finish is not None:
                    shown = self.finish(shown)
                preview = images.preview_png(shown, self.settings.preview_size)
            self.on_progress(Progress(min(self.count, self.total), self.total, dict(self.last_losses),
                                      time.perf_counter() - self.started, preview,
                                      fraction=min(1.0, self.done)))
        if self.should_stop is not None and self.should_stop():
            raise Cancelled()
