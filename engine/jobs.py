"""The job contract shared by the bot and the engine process.

Plain, picklable dataclasses and the stdlib only: the bot imports this module
without pulling in TensorFlow, NumPy or Pillow. Every engine default is defined
here, once; `config/default.toml` documents the same values and
`engine.config` maps a user's file onto these dataclasses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

# Paper layer names in network order (Simonyan & Zisserman's VGG-19 naming, as
# used by Gatys et al. 2016). engine/vgg.py maps them to Keras layer names.
VGG19_CONV_LAYERS: tuple[str, ...] = (
    "conv1_1", "conv1_2",
    "conv2_1", "conv2_2",
    "conv3_1", "conv3_2", "conv3_3", "conv3_4",
    "conv4_1", "conv4_2", "conv4_3", "conv4_4",
    "conv5_1", "conv5_2", "conv5_3", "conv5_4",
)  # fmt: skip

INIT_MODES = ("content", "noise", "blend")
OPTIMIZERS = ("lbfgs", "adam")
COLOR_MODES = ("none", "luminance", "histogram")
HISTOGRAM_METHODS = ("cholesky", "pca")
POOLING_MODES = ("avg", "max")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
PRECISIONS = ("auto", "float32", "bfloat16")
DEVICES = ("auto", "cpu", "gpu")
PRESETS = ("art", "photo")

# Gatys et al. 2016, Sec. 2: content on conv4_2, style on conv1_1 ... conv5_1,
# each style layer weighted equally.
PAPER_CONTENT_LAYERS: tuple[tuple[str, float], ...] = (("conv4_2", 1.0),)
PAPER_STYLE_LAYERS: tuple[tuple[str, float], ...] = tuple(
    (name, 1.0) for name in ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
)


# The smallest side, in pixels, an image may have once it is scaled for a job (the
# photo at the output size, each style at its style size), and so the smallest output
# size a member may ask for. Why 32: the deepest style layer, conv5_1, sits after four
# 2x poolings (pool1..pool4), so it sees the image at 1/16 of its size. At 32 px that is
# a 2x2 map: four positions for its Gram matrix to average over, and 3x3 convolutions
# that see at least some real neighbours. At 16 px it is 1x1: the Gram matrix is one
# outer product and, with the engine's mirrored borders, every 3x3 window sees only
# copies of that one pixel, so the style statistics there mean nothing. (The engine's
# own floor for library and CLI use stays lower: engine.images.MIN_SIDE.)
MIN_IMAGE_SIDE = 32


def style_side(settings: TransferSettings) -> int:
    """Longest side the engine scales each style image to (engine.transfer.style_size)."""
    return max(16, round(settings.size * settings.style_scale))


@dataclass(frozen=True)
class ImageLimits:
    """Checked before an image is fully decoded (decompression bombs)."""

    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 25_000_000


@dataclass(frozen=True)
class TransferSettings:
    """Everything that shapes one stylisation. Defaults live here and only here."""

    size: int = 512
    # The paper's single scale, 150 L-BFGS steps (with its line search and bfloat16
    # convolutions, engine/optimize.py). Measured by `python -m bench` at 512 px: it
    # reaches 1.02 x the loss of 500 classic L-BFGS steps after 51 evaluations, and its
    # final loss is lower than that of a 200 + 100 step two-scale pyramid (1.008 vs 1.009
    # x) in 74 % of the time; the coarse steps did not pay for themselves (README,
    # Performance). `scales` > 1 is kept for large outputs.
    iterations: int = 150
    scales: int = 1
    # With scales > 1: how iterations split over the scales, coarsest first.
    scale_iterations: tuple[float, ...] = (2.0, 1.0)
    # β/α of Gatys et al. on standardised features (engine/losses.py): how much the
    # style loss counts against the content loss; the same on any weight file and at
    # any size. Chosen on ImageNet weights (three photo/painting pairs at 256 and 512
    # px, README gallery): 15 gives the classic look, clearly painted with the photo
    # easy to recognise; STRENGTH_STEPS spans subtle (3) to extreme (120).
    style_strength: float = 15.0
    content_layers: tuple[tuple[str, float], ...] = PAPER_CONTENT_LAYERS
    style_layers: tuple[tuple[str, float], ...] = PAPER_STYLE_LAYERS
    tv_weight: float = 0.0
    init: str = "content"
    noise_ratio: float = 0.6
    seed: int | None = None
    optimizer: str = "lbfgs"
    learning_rate: float = 2.0
    color: str = "none"
    histogram_method: str = "cholesky"
    style_blend: tuple[float, ...] = ()
    style_scale: float = 1.0
    pooling: str = "avg"
    precision: str = "auto"
    device: str = "auto"  # auto, cpu or gpu: chosen once, when the engine process starts
    preview_every: int = 10
    preview_size: int = 128

    def __post_init__(self) -> None:
        problems = settings_problems(self)
        if problems:
            raise ValueError("; ".join(problems))

    def with_(self, **changes: Any) -> "TransferSettings":
        return replace(self, **changes)


# The named strengths members and the CLI use: multipliers of `style_strength`. The
# look changes roughly with log(β/α); on ImageNet weights these are visibly apart and
# ordered in style_ratio on every pair tried (tests/engine/test_realnet.py checks it).
STRENGTH_STEPS: Mapping[str, float] = {"subtle": 0.2, "normal": 1.0, "strong": 3.0, "extreme": 8.0}


def settings_problems(s: TransferSettings) -> list[str]:
    """Human-readable reasons why settings are invalid (empty when fine)."""
    problems: list[str] = []

    def choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
        if value not in allowed:
            problems.append(f"{name} must be one of {', '.join(allowed)} (got {value!r})")

    if s.size < 16:
        problems.append(f"size must be at least 16 px (got {s.size})")
    if s.iterations < 1:
        problems.append(f"iterations must be at least 1 (got {s.iterations})")
    if not 1 <= s.scales <= 6:
        problems.append(f"scales must be between 1 and 6 (got {s.scales})")
    if any(w <= 0 for w in s.scale_iterations):
        problems.append("scale_iterations weights must be positive")
    if s.style_strength < 0:
        problems.append("style_strength must not be negative")
    if s.tv_weight < 0:
        problems.append("tv_weight must not be negative")
    if not 0.0 <= s.noise_ratio <= 1.0:
        problems.append(f"noise_ratio must be between 0 and 1 (got {s.noise_ratio})")
    if s.learning_rate <= 0:
        problems.append("learning_rate must be positive")
    if not 0.05 <= s.style_scale <= 4.0:
        problems.append(f"style_scale must be between 0.05 and 4 (got {s.style_scale})")
    if any(w < 0 for w in s.style_blend) or (s.style_blend and sum(s.style_blend) <= 0):
        problems.append("style_blend weights must be non-negative and not all zero")
    for label, layers in (("content_layers", s.content_layers), ("style_layers", s.style_layers)):
        if not layers:
            problems.append(f"{label} must name at least one layer")
        for name, weight in layers:
            if name not in VGG19_CONV_LAYERS:
                problems.append(
                    f"{label}: unknown layer {name!r}; use one of {', '.join(VGG19_CONV_LAYERS)}"
                )
            if weight < 0:
                problems.append(f"{label}: weight of {name} must not be negative")
    choice("init", s.init, INIT_MODES)
    choice("optimizer", s.optimizer, OPTIMIZERS)
    choice("color", s.color, COLOR_MODES)
    choice("histogram_method", s.histogram_method, HISTOGRAM_METHODS)
    choice("pooling", s.pooling, POOLING_MODES)
    choice("precision", s.precision, PRECISIONS)
    choice("device", s.device, DEVICES)
    if s.preview_every < 0:
        problems.append("preview_every must be 0 (off) or more")
    return problems


def style_blend_weights(settings: TransferSettings, count: int) -> tuple[float, ...]:
    """Normalised weights of `count` style images (equal when none are given)."""
    if not settings.style_blend:
        return tuple(1.0 / count for _ in range(count))
    if len(settings.style_blend) != count:
        raise ValueError(
            f"{len(settings.style_blend)} style blend weights were given for {count} style "
            f"image{'s' if count != 1 else ''}; give one weight per style image"
        )
    total = sum(settings.style_blend)
    return tuple(w / total for w in settings.style_blend)


# A preset is a named bundle of overrides (documented in the README).
# "photo": photo-to-photo transfer (e.g. a daytime city to a night city). Style
# statistics from the shallow layers only carry colour and fine texture without
# repainting structure; content is held at conv2_2 as well as conv4_2 so edges
# stay sharp; weaker style and a little total variation keep it photographic.
PRESET_OVERRIDES: Mapping[str, Mapping[str, Any]] = {
    "art": {},
    "photo": {
        "content_layers": (("conv2_2", 0.5), ("conv4_2", 1.0)),
        "style_layers": (("conv1_1", 1.0), ("conv2_1", 1.0), ("conv3_1", 1.0), ("conv4_1", 0.5)),
        "style_strength": 1.5,
        "tv_weight": 1.0,
        "init": "content",
        "color": "none",
    },
}


def apply_preset(settings: TransferSettings, preset: str) -> TransferSettings:
    if preset not in PRESET_OVERRIDES:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)} (got {preset!r})")
    return replace(settings, **PRESET_OVERRIDES[preset])


def settings_from_mapping(values: Mapping[str, Any], base: TransferSettings | None = None) -> TransferSettings:
    """Map a TOML-like table onto TransferSettings; unknown keys are an error.

    Layer tables are written `{conv4_2 = 1.0}` in TOML and become ordered tuples.
    """
    base = base or TransferSettings()
    known = {f.name for f in fields(TransferSettings)}
    unknown = sorted(set(values) - known - {"preset"})
    if unknown:
        raise ValueError(f"unknown engine setting(s): {', '.join(unknown)}")
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key == "preset":
            continue
        if key in ("content_layers", "style_layers"):
            value = tuple((str(k), float(v)) for k, v in dict(value).items())
        elif key in ("style_blend", "scale_iterations"):
            value = tuple(float(v) for v in value)
        elif key == "seed" and value is not None and value < 0:
            value = None  # TOML has no null: a negative seed means "pick one"
        changes[key] = value
    settings = base
    if "preset" in values:
        settings = apply_preset(settings, values["preset"])
    return replace(settings, **changes)


# --- messages between the bot and the engine process ---------------------------------


@dataclass(frozen=True)
class JobRequest:
    job_id: str
    content: bytes
    styles: tuple[bytes, ...]
    settings: TransferSettings = field(default_factory=TransferSettings)
    output_format: str = "png"
    limits: ImageLimits = field(default_factory=ImageLimits)


@dataclass(frozen=True)
class Progress:
    """One optimisation step. `iteration` counts across all scales of a job."""

    iteration: int
    total: int
    losses: Mapping[str, float]
    elapsed: float
    preview_png: bytes | None = None
    job_id: str = ""
    fraction: float = 0.0  # of the job's work done, weighted by cost: for bars and ETAs


@dataclass(frozen=True)
class JobResult:
    job_id: str
    image: bytes
    format: str
    width: int
    height: int
    elapsed: float
    seed: int
    iterations: int
    final_loss: float


class ErrorKind(str, enum.Enum):
    BAD_INPUT = "bad_input"  # the user's image: show the message as it is
    BAD_SETTINGS = "bad_settings"  # the user's options: show the message as it is
    WEIGHTS = "weights"  # the host's setup: tell the host, apologise to the user
    CANCELLED = "cancelled"
    ENGINE_DIED = "engine_died"  # the engine process vanished mid-job
    INTERNAL = "internal"  # a bug: logged with traceback, user gets the job id


@dataclass(frozen=True)
class JobFailed:
    """An error as data, so it crosses the process boundary intact."""

    job_id: str
    kind: ErrorKind
    message: str
    detail: str = ""  # traceback for the log, never shown to users


@dataclass(frozen=True)
class CancelJob:
    job_id: str


@dataclass(frozen=True)
class EngineReady:
    backend: str
    device: str
    weights: str
    random_weights: bool
