"""What a member may ask for, turned into engine settings; and the button custom ids.

Pure functions on plain values (no discord, no TensorFlow), shared by the text and
slash forms of `stylize` and by the result buttons.

Strength is a multiplier of the host's `[engine] style_strength` (β/α in Gatys et al.
2016): named steps for people (engine.jobs.STRENGTH_STEPS), or a number for those who
want one.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace

from bot.i18n import Explained, t
from bot.plain import plain
from engine.jobs import COLOR_MODES, MIN_IMAGE_SIDE, STRENGTH_STEPS, TransferSettings

log = logging.getLogger(__name__)

STRENGTH_MIN, STRENGTH_MAX = 0.01, 100.0
MORE_STYLE = 3.0  # the "More style" / "Less style" buttons multiply / divide by this
SEED_MAX = 2**31 - 1
MIN_SIZE = MIN_IMAGE_SIDE  # engine/jobs.py says why
# Longest option value read at all: the longest real one ("histogram", a 10-digit seed)
# is far shorter, and a 2,000-character value must not reach a parser or a reply.
MAX_OPTION_LENGTH = 32

COLOR_ALIASES = {
    "none": "none",
    "off": "none",
    "no": "none",
    "luminance": "luminance",
    "lum": "luminance",
    "keep": "luminance",
    "preserve": "luminance",
    "histogram": "histogram",
    "hist": "histogram",
    "match": "histogram",
    # Japanese (prefix commands take 色:写真の色 as well as color:luminance).
    "なし": "none",
    "絵の色": "none",
    "写真の色": "luminance",
    "輝度": "luminance",
    "ヒストグラム": "histogram",
    "色合わせ": "histogram",
}
COLOR_CODES = {"none": "n", "luminance": "l", "histogram": "h"}
# The named strength steps in Japanese (強さ:強め is strength:strong).
STRENGTH_WORDS = {
    "控えめ": "subtle",
    "弱め": "subtle",
    "普通": "normal",
    "ふつう": "normal",
    "強め": "strong",
    "最強": "extreme",
}


class OptionError(Explained, ValueError):
    """A member's option is wrong; the message says which and what is allowed (a catalogue
    key, so in the member's language)."""


def capped(name: str, text: str | None) -> str | None:
    """`text` if it is short enough to be an option value; else OptionError and one log line."""
    if text is not None and len(text) > MAX_OPTION_LENGTH:
        log.info("refused a %d-character %s option", len(text), name)
        raise OptionError("option.too_long", what=name, length=len(text), most=MAX_OPTION_LENGTH)
    return text


@dataclass(frozen=True)
class JobOptions:
    """The options a member chose (None = the host's default)."""

    strength: float = 1.0
    size: int | None = None
    iterations: int | None = None
    color: str | None = None
    seed: int | None = None
    # The Upscale button: `size` is twice the previous result's, and the job starts from
    # that result, so it runs upscale_iterations(iterations) instead of `iterations`.
    upscale: bool = False
    # An animation over the caps is sampled down to them instead of refused.
    sample: bool = False


# An Upscale job refines a result that already has the style, at twice the size: it
# needs a fraction of a fresh job's iterations (coarse-to-fine). Chosen by quality per
# second on real weights (README, "Upscale ×2"): from a 512-px default result, 30
# iterations at 1024 px reach style_ratio 0.46 (the 512-px result's own: 0.47), 45 reach
# 0.44 and 60 0.43, while a fresh 1024-px job is at 0.76 after 60; the knee is at 30,
# a fifth of the default 150.
UPSCALE_FRACTION = 0.2
UPSCALE_MIN_ITERATIONS = 20


def upscale_iterations(iterations: int) -> int:
    return max(UPSCALE_MIN_ITERATIONS, round(iterations * UPSCALE_FRACTION))


def upscale_size(size: int, max_size: int) -> int:
    """The size an Upscale press asks for: twice `size`, at most the host's max."""
    return min(2 * size, max_size)


@dataclass(frozen=True)
class Caps:
    max_size: int
    max_iterations: int


def parse_strength(text: str | None) -> float:
    text = capped("strength", text)
    if text is None or not str(text).strip():
        return 1.0
    # "2x" and "×2" (how a non-step strength is shown, and prefilled in /history's form).
    word = str(text).strip().lower().removesuffix("x").removeprefix("×")
    word = STRENGTH_WORDS.get(word, word)
    if word in STRENGTH_STEPS:
        return STRENGTH_STEPS[word]
    try:
        value = float(word)
    except ValueError:
        raise OptionError(
            "option.strength",
            value=plain(text, MAX_OPTION_LENGTH),
            steps=", ".join(STRENGTH_STEPS),
            least=f"{STRENGTH_MIN:g}",
            most=f"{STRENGTH_MAX:g}",
        ) from None
    if not STRENGTH_MIN <= value <= STRENGTH_MAX:
        raise OptionError(
            "option.strength_range",
            value=f"{value:g}",
            steps=", ".join(STRENGTH_STEPS),
            least=f"{STRENGTH_MIN:g}",
            most=f"{STRENGTH_MAX:g}",
        )
    return value


def parse_color(text: str | None) -> str | None:
    text = capped("colour", text)
    if text is None or not str(text).strip():
        return None
    mode = COLOR_ALIASES.get(str(text).strip().lower())
    if mode is None:
        raise OptionError("option.colour", value=plain(text, MAX_OPTION_LENGTH))
    return mode


def strength_label(multiplier: float, language: str | None = None) -> str:
    """The step's name ("strong", in `language`: "強め"), or "×2.5"."""
    for name, value in STRENGTH_STEPS.items():
        if abs(value - multiplier) < 1e-9:
            return t(language, f"step.{name}")
    return f"×{multiplier:.3g}"


def build_settings(
    base: TransferSettings, options: JobOptions, caps: Caps, language: str | None = None
) -> tuple[TransferSettings, list[str]]:
    """The job's settings, and notes for the member about anything that was capped."""
    notes: list[str] = []
    size = options.size if options.size is not None else min(base.size, caps.max_size)
    if size < MIN_SIZE:
        raise OptionError("option.size_small", size=size, least=MIN_SIZE)
    if size > caps.max_size:
        notes.append(t(language, "result.size_capped", most=caps.max_size))
        size = caps.max_size
    iterations = (
        options.iterations
        if options.iterations is not None
        else min(base.iterations, caps.max_iterations)
    )
    if iterations < 1:
        raise OptionError("option.iterations")
    if iterations > caps.max_iterations:
        notes.append(t(language, "result.iterations_capped", most=caps.max_iterations))
        iterations = caps.max_iterations
    if options.upscale:
        iterations = min(iterations, upscale_iterations(iterations))
    if options.seed is not None and not 0 <= options.seed <= SEED_MAX:
        raise OptionError("option.seed", most=SEED_MAX)
    if not STRENGTH_MIN <= options.strength <= STRENGTH_MAX:
        raise OptionError(f"Strength must be from {STRENGTH_MIN:g} to {STRENGTH_MAX:g}.")
    try:
        settings = replace(
            base,
            size=size,
            iterations=iterations,
            style_strength=base.style_strength * options.strength,
            color=options.color or base.color,
            seed=options.seed,
            style_blend=(),  # several style images blend equally
        )
    except ValueError as e:
        raise OptionError(f"Those options don't work together: {e}.") from None
    return settings, notes


# --- result buttons -------------------------------------------------------------------

ACTIONS = {"a": "again", "m": "more", "l": "less", "u": "upscale"}


@dataclass(frozen=True)
class RerunSpec:
    """Everything a result button needs to queue a new job, even after a restart.

    source "m": the inputs are the attachments of the member's message
    `channel_id`/`message_id` (and, for the reply form, of the message it replies to),
    re-fetched from Discord when the button is pressed.
    source "r": the inputs are attached to the result message itself (slash commands
    and buttons, whose inputs live in no message of the member's), so the ids are 0.
    """

    action: str
    source: str
    channel_id: int
    message_id: int
    seed: int
    strength: float
    size: int
    iterations: int
    color: str

    def custom_id(self) -> str:
        return (
            f"sb:run:{self.action}:{self.source}:{self.channel_id}:{self.message_id}:{self.seed}:"
            f"{self.strength:.4g}:{self.size}:{self.iterations}:{COLOR_CODES[self.color]}"
        )

    def next_options(self) -> JobOptions:
        """The options of the job this button queues."""
        strength = self.strength
        seed: int | None = self.seed
        if self.action == "a":
            seed = None  # a new random seed: a different painting from the same inputs
        elif self.action == "m":
            strength = min(STRENGTH_MAX, strength * MORE_STYLE)
        elif self.action == "l":
            strength = max(STRENGTH_MIN, strength / MORE_STYLE)
        return JobOptions(
            strength=strength,
            # Upscale: twice the size (build_settings caps it at the host's max).
            size=self.size * 2 if self.action == "u" else self.size,
            iterations=self.iterations,
            color=self.color,
            seed=seed,
            upscale=self.action == "u",
        )


RERUN_TEMPLATE = (
    r"sb:run:(?P<action>[amlu]):(?P<source>[mr]):(?P<channel>\d+):(?P<message>\d+):(?P<seed>\d+):"
    r"(?P<strength>[0-9.e+-]+):(?P<size>\d+):(?P<iterations>\d+):(?P<color>[nlh])"
)
_RERUN_RE = re.compile(RERUN_TEMPLATE)
_COLOR_FROM_CODE = {v: k for k, v in COLOR_CODES.items()}


def parse_rerun(custom_id: str) -> RerunSpec | None:
    match = _RERUN_RE.fullmatch(custom_id)
    return rerun_from_match(match) if match else None


def rerun_from_match(match: re.Match[str]) -> RerunSpec:
    return RerunSpec(
        action=match["action"],
        source=match["source"],
        channel_id=int(match["channel"]),
        message_id=int(match["message"]),
        seed=int(match["seed"]),
        strength=float(match["strength"]),
        size=int(match["size"]),
        iterations=int(match["iterations"]),
        color=_COLOR_FROM_CODE[match["color"]],
    )


CANCEL_TEMPLATE = r"sb:cancel:(?P<job>[0-9a-f]{8})"


def cancel_custom_id(job_id: str) -> str:
    return f"sb:cancel:{job_id}"


assert set(COLOR_CODES) == set(COLOR_MODES)
