"""The job contract shared by the bot and the engine process.

Plain, picklable dataclasses and the stdlib only: the bot imports this module
without pulling in TensorFlow, NumPy or Pillow. Every engine default is defined
here, once; `config/default.toml` documents the same values and
`engine.config` maps a user's file onto these dataclasses.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

# Paper layer names in network order (Simonyan & Zisserman's VGG-19 naming, as
# used by Gatys et al. 2016). engine/vgg.py maps them to Keras layer names.
VGG19_CONV_LAYERS: tuple[str, ...] = (
    "conv1_1", "conv1_2",
    "conv2_1", "conv2_2",
    "conv3_1", "conv3_2", "conv3_3", "conv3_4",
    "conv4_1", "conv4_2", "conv4_3", "conv4_4",
    "conv5_1", "conv5_2", "conv5_3", "conv5_4",
)  # fmt: skip
# VGG-16 (Simonyan & Zisserman, Table 1, column D): the same blocks with one
# convolution fewer in blocks 3 to 5, so no conv3_4, conv4_4 or conv5_4. The
# paper's content (conv4_2) and style layers (conv1_1 ... conv5_1) exist in both.
VGG16_CONV_LAYERS: tuple[str, ...] = (
    "conv1_1", "conv1_2",
    "conv2_1", "conv2_2",
    "conv3_1", "conv3_2", "conv3_3",
    "conv4_1", "conv4_2", "conv4_3",
    "conv5_1", "conv5_2", "conv5_3",
)  # fmt: skip
NETWORKS = ("vgg19", "vgg16")
NETWORK_LAYERS: Mapping[str, tuple[str, ...]] = {"vgg19": VGG19_CONV_LAYERS, "vgg16": VGG16_CONV_LAYERS}
NETWORK_LABELS: Mapping[str, str] = {"vgg19": "VGG-19", "vgg16": "VGG-16"}

INIT_MODES = ("content", "noise", "blend")
OPTIMIZERS = ("lbfgs", "adam")
COLOR_MODES = ("none", "luminance", "histogram")
HISTOGRAM_METHODS = ("cholesky", "pca")
POOLING_MODES = ("avg", "max")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
PRECISIONS = ("auto", "float32", "bfloat16")
DEVICES = ("auto", "cpu", "gpu")
PRESETS = ("art", "photo")
# JPEG/WebP quality of results ([output] quality; engine.config.OutputSettings and
# JobRequest both default to it).
OUTPUT_QUALITY = 92

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
    # Animated GIF / WebP / APNG (engine/animation.py): most frames, longest side of the
    # output frames, and frames x pixels x iterations of the whole animation.
    max_frames: int = 24
    max_frame_side: int = 256
    max_animation_work: int = 200_000_000


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
    # px, README gallery): 30 gives the classic look, clearly painted with the photo
    # easy to recognise; STRENGTH_STEPS spans subtle (6) to extreme (240).
    style_strength: float = 30.0
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
    # VGG-19 as the paper (and its reference implementations) use. VGG-16 lacks
    # conv3_4 and conv4_4, about a fifth of the multiply-adds up to conv5_1, and
    # needs its own weights file (engine/weights.py).
    network: str = "vgg19"
    pooling: str = "avg"
    precision: str = "auto"
    device: str = "auto"  # auto, cpu or gpu: chosen once, when the engine process starts
    preview_every: int = 10
    preview_size: int = 128
    # Memory a job may take, in MiB (engine/memory.py estimates it); 0 = the machine's
    # memory less a headroom. A job whose estimate is larger runs its finest scale in tiles.
    max_memory: int = 0
    # Longest side (px) above which the finest scale runs in overlapping tiles even when
    # it would fit max_memory (0 = only when it would not); tiles are at most tile_size
    # px a side and overlap by tile_overlap px, cross-faded (engine/tiling.py).
    tile_above: int = 1024
    tile_size: int = 576
    tile_overlap: int = 96
    # A temporal term for animations (engine/animation.py): how much a frame's change
    # where the input frame did not change counts, relative to the total loss.
    temporal_weight: float = 100.0

    def __post_init__(self) -> None:
        problems = settings_problems(self)
        if problems:
            raise ValueError("; ".join(problems))

    def with_(self, **changes: Any) -> TransferSettings:
        return replace(self, **changes)


# The named strengths members and the CLI use: multipliers of `style_strength`. The
# look changes roughly with log(β/α); on ImageNet weights these are visibly apart and
# ordered in style_ratio on every pair tried (tests/engine/test_realnet.py checks it).
# subtle is 0.4x, not 0.2x: at 512 px 0.2x left chelsea x hubble at style_ratio 0.92 and a
# mean pixel change of 11/255, which members would read as "nothing happened".
STRENGTH_STEPS: Mapping[str, float] = {"subtle": 0.4, "normal": 1.0, "strong": 3.0, "extreme": 8.0}


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
    choice("network", s.network, NETWORKS)
    problems += layer_problems(s)
    choice("init", s.init, INIT_MODES)
    choice("optimizer", s.optimizer, OPTIMIZERS)
    choice("color", s.color, COLOR_MODES)
    choice("histogram_method", s.histogram_method, HISTOGRAM_METHODS)
    choice("pooling", s.pooling, POOLING_MODES)
    choice("precision", s.precision, PRECISIONS)
    choice("device", s.device, DEVICES)
    if s.preview_every < 0:
        problems.append("preview_every must be 0 (off) or more")
    if s.max_memory < 0:
        problems.append("max_memory must be 0 (auto) or a number of MiB")
    if s.tile_above < 0:
        problems.append("tile_above must be 0 (only when memory requires) or more")
    if s.tile_size < 32:
        problems.append(f"tile_size must be at least 32 px (got {s.tile_size})")
    if not 0 <= s.tile_overlap < s.tile_size // 2:
        problems.append("tile_overlap must be between 0 and half of tile_size")
    if s.temporal_weight < 0:
        problems.append("temporal_weight must not be negative")
    return problems


def layer_problems(s: TransferSettings) -> list[str]:
    """The content and style layers must exist in the chosen network, with weights >= 0."""
    problems: list[str] = []
    known = NETWORK_LAYERS.get(s.network, VGG19_CONV_LAYERS)
    for label, layers in (("content_layers", s.content_layers), ("style_layers", s.style_layers)):
        if not layers:
            problems.append(f"{label} must name at least one layer")
        for name, weight in layers:
            if name not in known:
                problems.append(
                    f"{label}: unknown layer {name!r} for {NETWORK_LABELS.get(s.network, s.network)}; "
                    f"use one of {', '.join(known)}"
                )
            if weight < 0:
                problems.append(f"{label}: weight of {name} must not be negative")
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
        "style_strength": 3.0,
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
    quality: int = OUTPUT_QUALITY  # for jpeg and webp output ([output] quality)
    # Optional starting image (encoded, e.g. PNG): the Upscale button's previous result,
    # resized to the output size by the engine; empty = start as settings.init says.
    init_image: bytes = b""
    # An animated input is sampled down to the caps ([limits]) instead of refused.
    sample: bool = False


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
    frame: int = 0  # an animation's frame being painted (1-based; 0 = a still picture)
    frames: int = 0


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
    # The bot's time limit ([bot] job_timeout) stopped the job: `image` is the last
    # preview the engine sent, `iterations` how far it got.
    stopped_early: bool = False
    frames: int = 1  # an animation's frame count (the image is then a GIF or WebP)


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


# --- the wire format: messages as bytes + JSON, never pickle ----------------------------
#
# A journal on disk (the bot's SQLite file) and a broker shared with other machines
# (Redis) both outlive the process that wrote a message, and may be read by another
# version of the code: pickle would run whatever the bytes say and break on a renamed
# class. So a message is a JSON header (its type and plain fields) followed by its
# byte fields (images) as they are: b"SB1" | header length (4 bytes, big-endian) |
# header | blob, blob, ... with each blob's length in the header.

WIRE_MAGIC = b"SB1"
_WIRE_TYPES: dict[str, type] = {
    cls.__name__: cls for cls in (JobRequest, Progress, JobResult, JobFailed, CancelJob, EngineReady)
}
_NESTED: dict[str, type] = {"settings": TransferSettings, "limits": ImageLimits}


def _plain(value: Any, blobs: list[bytes]) -> Any:
    if isinstance(value, (bytes, bytearray)):
        blobs.append(bytes(value))
        return {"$blob": len(blobs) - 1}
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name), blobs) for f in fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v, blobs) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v, blobs) for k, v in value.items()}
    return value


def _restore(value: Any, blobs: list[bytes]) -> Any:
    # Every sequence in the contract is a tuple (the dataclasses are frozen and hashable).
    if isinstance(value, list):
        return tuple(_restore(v, blobs) for v in value)
    if isinstance(value, dict):
        if set(value) == {"$blob"}:
            return blobs[value["$blob"]]
        return {k: _restore(v, blobs) for k, v in value.items()}
    return value


def to_wire(message: Any) -> bytes:
    """One contract message as bytes (see the format above)."""
    import json

    blobs: list[bytes] = []
    body = _plain(message, blobs)
    header = json.dumps(
        {"type": type(message).__name__, "fields": body, "blobs": [len(b) for b in blobs]},
        separators=(",", ":"),
    ).encode()
    return b"".join([WIRE_MAGIC, len(header).to_bytes(4, "big"), header, *blobs])


def from_wire(data: bytes) -> Any:
    """The message `to_wire` wrote; ValueError when the bytes are not one."""
    import json

    if data[:3] != WIRE_MAGIC:
        raise ValueError("not a stylebot wire message")
    size = int.from_bytes(data[3:7], "big")
    header = json.loads(data[7 : 7 + size])
    blobs, offset = [], 7 + size
    for length in header["blobs"]:
        blobs.append(bytes(data[offset : offset + length]))
        offset += length
    cls = _WIRE_TYPES.get(header["type"])
    if cls is None:
        raise ValueError(f"unknown message type {header['type']!r}")
    known = {f.name for f in fields(cls)}
    values = {k: _restore(v, blobs) for k, v in header["fields"].items() if k in known}
    for name, nested in _NESTED.items():
        if isinstance(values.get(name), dict):
            values[name] = nested(**values[name])
    if "kind" in values:
        values["kind"] = ErrorKind(values["kind"])
    if "losses" in values:
        values["losses"] = dict(values["losses"])
    return cls(**values)


# Exit status of an engine process that could not load its weights: a host problem that
# restarting the process does not fix (engine/worker.py exits with it; the bot reads it).
WORKER_EXIT_WEIGHTS = 3


# --- the redis backend's keys (shared by the bot and the workers) ----------------------

REDIS_RESULT_TTL = 7 * 24 * 3600  # seconds an answer waits in Redis for its bot to post it


def redis_where(url: str) -> str:
    """A redis:// URL without its password, for log lines (the password is never logged)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


@dataclass(frozen=True)
class StreamKeys:
    """Where each thing lives in Redis, for one bot (`bot`) under one `prefix`.

    work      stream of job ids, read by the workers' consumer group `group`; an entry
              is acknowledged (XACK) only in the transaction that stores its answer
    job:ID    hash: request (wire bytes), bot, meta, ids, state; outcome once answered
    jobs:BOT  sorted set of that bot's unanswered or undelivered job ids, by seq
    progress:ID  capped stream of the job's Progress events (wire bytes)
    cancel:ID    key whose existence asks the worker to stop the job
    answers:BOT  stream of ids of that bot's answered jobs (the bot's doorbell)
    workers   sorted set: worker name -> last heartbeat (ms); workers:info: name -> JSON
    """

    prefix: str = "stylebot"
    bot: str = "bot"
    group: str = "workers"

    @property
    def work(self) -> str:
        return f"{self.prefix}:work"

    @property
    def seq(self) -> str:
        return f"{self.prefix}:seq"

    @property
    def jobs(self) -> str:
        return f"{self.prefix}:jobs:{self.bot}"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    @property
    def workers_info(self) -> str:
        return f"{self.prefix}:workers:info"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def progress(self, job_id: str) -> str:
        return f"{self.prefix}:progress:{job_id}"

    def cancel(self, job_id: str) -> str:
        return f"{self.prefix}:cancel:{job_id}"

    def answers(self, bot: str | None = None) -> str:
        return f"{self.prefix}:answers:{bot or self.bot}"

    def delivered(self, job_id: str) -> str:
        return f"{self.prefix}:delivered:{job_id}"
