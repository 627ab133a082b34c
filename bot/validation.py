"""Checks on a member's images before anything is queued (DESIGN.md, example 10).

Pure functions on attachment-like objects (anything with `filename`, `size` and an
async `read()`; discord.Attachment is one), so they are tested without Discord.
Order: the count of images, each attachment's declared size before it is
downloaded, then the bytes: the type sniffed from the content (never the name or
Discord's content type), the pixel count from the header, and a full decode, so a
corrupt file is refused here rather than after waiting in the queue. Messages name
the image ("the style image (starry.png)") and say how to fix the problem.
Images only ever come from Discord attachments; no URL is ever fetched.

With a `DecoderPool` (bot/decoder.py) the full decode runs in a decoder process with a
time and a memory budget, and the checked inputs are the decoded images as PNGs no
larger than the job needs, which the engine decodes cheaply. `Validations` counts each
member's validations in progress against their per-member limit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from bot.i18n import Explained, Label
from bot.plain import plain
from engine import images
from engine.jobs import MIN_IMAGE_SIDE, ImageLimits, TransferSettings, style_side

if TYPE_CHECKING:
    from bot.decoder import DecoderPool


class AttachmentLike(Protocol):
    filename: str
    size: int

    async def read(self) -> bytes: ...


class InputProblem(Explained, ValueError):
    """Why the images cannot be used, written for the member (a catalogue key, so in
    their language; or the engine's English sentence)."""


@dataclass(frozen=True)
class Candidate:
    attachment: Any  # AttachmentLike
    label: str  # "the photo (cat.png)"


@dataclass(frozen=True)
class Inputs:
    content: Candidate
    styles: tuple[Candidate, ...]

    @property
    def all(self) -> tuple[Candidate, ...]:
        return (self.content, *self.styles)


@dataclass(frozen=True)
class CheckedInputs:
    content: bytes
    styles: tuple[bytes, ...]
    labels: tuple[str, ...]
    names: tuple[str, ...]


def sentence(text: str) -> str:
    """Capitalise the first letter (labels start lower case so they fit mid-sentence)."""
    return text[:1].upper() + text[1:]


def label(role: str, index: int, count: int, filename: str) -> Label:
    return Label(role, index, count, plain(filename, 60) if filename else "")


def choose_inputs(
    own: Sequence[Any], referenced: Sequence[Any] = (), *, max_styles: int, how: str = "!stylize"
) -> Inputs:
    """Which attachment is the photo and which are styles.

    Normally the first attachment is the photo and the rest are styles. When the
    command replies to a message that has an attachment and carries only one image
    itself, that message's first attachment is the photo and the command's image is
    the style. The member's own photo always wins: with two or more images of their
    own, the replied-to message is ignored.
    """
    if referenced and len(own) < 2:
        content, styles = referenced[0], list(own)
        if not styles:
            raise InputProblem("input.reply_without_style", how=how)
    else:
        if not own:
            raise InputProblem("input.none", how=how)
        if len(own) == 1:
            raise InputProblem("input.only_one", name=plain(own[0].filename, 60))
        content, styles = own[0], list(own[1:])
    if len(styles) > max_styles:
        raise InputProblem("input.too_many_styles", count=len(styles), most=max_styles)
    return Inputs(
        Candidate(content, label("content", 0, 1, content.filename)),
        tuple(
            Candidate(s, label("style", i, len(styles), s.filename)) for i, s in enumerate(styles)
        ),
    )


def format_bytes(n: int, *, round_up: bool) -> str:
    """Sizes round up and limits down (never "is 10 MB; the limit is 10 MB"); MB = MiB, as Discord."""
    step = math.ceil if round_up else math.floor
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if n >= scale:
            return f"{step(n / scale * 10) / 10:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"


def check_declared_size(candidate: Candidate, limits: ImageLimits) -> None:
    """Refuse a too-large attachment from Discord's metadata, before downloading it."""
    size = int(getattr(candidate.attachment, "size", 0) or 0)
    if size > limits.max_bytes:
        raise InputProblem(
            "input.too_big",
            what=candidate.label,
            size=format_bytes(size, round_up=True),
            most=format_bytes(limits.max_bytes, round_up=False),
        )


@dataclass(frozen=True)
class JobSides:
    """The longest side the engine scales the photo and each style image to."""

    content: int
    style: int

    @classmethod
    def of(cls, settings: TransferSettings) -> JobSides:
        return cls(content=settings.size, style=style_side(settings))


def check_sides(label_: str, width: int, height: int, longest: int | None = None) -> None:
    """The image, and the image scaled for the job (longer side `longest`), must each be
    at least MIN_IMAGE_SIDE px on the shorter side (engine/jobs.py says why)."""
    if min(width, height) < MIN_IMAGE_SIDE:
        raise InputProblem(
            "input.too_small", what=label_, width=width, height=height, least=MIN_IMAGE_SIDE
        )
    if longest is None:
        return
    h, w = images.fit_longest(height, width, longest)
    if min(w, h) < MIN_IMAGE_SIDE:
        raise InputProblem(
            "input.too_thin", what=label_, width=width, height=height, longest=longest,
            w=w, h=h, least=MIN_IMAGE_SIDE,
        )  # fmt: skip


def check_bytes(label_: str, data: bytes, limits: ImageLimits) -> images.ImageInfo:
    """Type by content, pixel limits from the header, then a full decode (CPU: run in a thread)."""
    try:
        info = images.probe(data, name=label_, limits=limits)
        images.load_image(data, name=label_, limits=limits)
    except images.ImageError as e:
        raise engine_problem(label_, e) from None
    return info


def probe(label_: str, data: bytes, limits: ImageLimits) -> images.ImageInfo:
    """Type by content, byte, pixel and JPEG-scan limits, from the header only."""
    try:
        return images.probe(data, name=label_, limits=limits)
    except images.ImageError as e:
        raise engine_problem(label_, e) from None


ENGINE_PROBLEMS = {
    images.NotAnImage: "input.not_an_image",
    images.UnsupportedFormat: "input.unsupported",
    images.FileTooLarge: "input.file_too_large",
    images.TooManyPixels: "input.too_many_pixels",
    images.CorruptImage: "input.corrupt",
    images.TooManyScans: "input.corrupt",
    images.ImageTooSmall: "input.too_small_image",
}


def engine_problem(label_: str, error: Exception) -> InputProblem:
    """The engine's English sentence, and a catalogue entry for other languages."""
    key = next((k for cls, k in ENGINE_PROBLEMS.items() if isinstance(error, cls)), "input.unusable")
    return InputProblem(key, what=label_, english=sentence(str(error)))


def check_memory(label_: str, info: images.ImageInfo, budget: int) -> None:
    """Refuse, before decoding, an image whose decode would need more than `budget` bytes."""
    if images.decode_memory_estimate(info) > budget:
        raise InputProblem(
            "input.too_much_memory", what=label_, width=info.width, height=info.height
        )


async def decode_in_pool(
    label_: str,
    data: bytes,
    limits: ImageLimits,
    *,
    decoder: DecoderPool,
    longest: int,
    owner: Any = None,
) -> bytes:
    """The image decoded by a decoder process, as a PNG of at most `longest` px; the
    original bytes when that PNG would be over the byte limit the engine checks."""
    from bot.decoder import DecodeProblem

    try:
        outcome = await decoder.decode(
            data,
            name=label_,
            max_bytes=limits.max_bytes,
            max_pixels=limits.max_pixels,
            longest=longest,
            owner=owner,
        )
    except DecodeProblem as e:
        raise engine_problem(label_, e) from None
    return outcome.png if len(outcome.png) <= limits.max_bytes else data


async def read_and_check(
    inputs: Inputs,
    limits: ImageLimits,
    *,
    sides: JobSides | None = None,
    decoder: DecoderPool | None = None,
    owner: Any = None,
) -> CheckedInputs:
    """Declared sizes first (nothing is downloaded if one is too big), then each file:
    its header, its sides (scaled to `sides` when given), then the full decode, in a
    `decoder` process when given (else in a thread: tests and tools)."""
    for candidate in inputs.all:
        check_declared_size(candidate, limits)
    datas: list[bytes] = []
    for index, candidate in enumerate(inputs.all):
        data = await candidate.attachment.read()
        info = await asyncio.to_thread(probe, candidate.label, data, limits)
        longest = None if sides is None else (sides.content if index == 0 else sides.style)
        check_sides(candidate.label, info.width, info.height, longest)
        original = data
        if decoder is not None:
            check_memory(candidate.label, info, decoder.image_memory)
            data = await decode_in_pool(
                candidate.label,
                data,
                limits,
                decoder=decoder,
                longest=max(info.width, info.height) if longest is None else longest,
                owner=owner,
            )
        else:
            await asyncio.to_thread(check_bytes, candidate.label, data, limits)
        if index == 0 and await asyncio.to_thread(is_animated, original):
            data = original  # the engine paints every frame (its first decoded fine above)
        datas.append(data)
    return CheckedInputs(
        content=datas[0],
        styles=tuple(datas[1:]),
        labels=tuple(c.label for c in inputs.all),
        names=tuple(c.attachment.filename for c in inputs.all),
    )


# --- validations in progress ------------------------------------------------------------


class TooManyInProgress(InputProblem):
    """The member's jobs plus their validations in progress reach the per-member limit."""


class Validations:
    """Each member's validations in progress, counted with their queued and running jobs
    against the per-member limit: a burst of messages cannot start more downloads and
    decodes than the member may have jobs."""

    def __init__(self) -> None:
        self._counts: collections.Counter[int] = collections.Counter()

    def in_progress(self, member_id: int) -> int:
        return self._counts[member_id]

    @contextlib.contextmanager
    def claim(self, member_id: int, *, jobs: int, limit: int) -> Iterator[None]:
        """Hold one of `member_id`'s `limit` places while validating; `jobs` is how many
        they have queued or running. Raise TooManyInProgress when none is left."""
        busy = jobs + self._counts[member_id]
        if busy >= limit:
            raise TooManyInProgress(
                "refused.checking_one" if busy == 1 else "refused.checking_other",
                busy=busy,
                limit=limit,
            )
        self._counts[member_id] += 1
        try:
            yield
        finally:
            self._counts[member_id] -= 1
            if not self._counts[member_id]:
                del self._counts[member_id]


def is_animated(data: bytes) -> bool:
    from engine.animation import is_animated as animated  # Pillow; imported on first need

    return animated(data)


def check_animation(data: bytes, limits: ImageLimits, *, sample: bool) -> int:
    """For an animated photo, its largest side ([limits] max_frame_side; 0 for a still).
    Refuses one over the frame cap before it is queued (the engine checks every cap
    again, and samples down instead when the member said `sample:yes`)."""
    if not is_animated(data):
        return 0
    from engine.animation import caps_text, frame_count

    count = frame_count(data)
    if count > limits.max_frames and not sample:
        raise InputProblem(
            "input.animation_frames",
            english=(
                f"Your animation has {count} frames; I paint animations of {caps_text(limits)}. "
                f"Send a shorter one, or add `sample:yes` and I'll keep {limits.max_frames} frames "
                "spread over it."
            ),
            count=count,
            frames=limits.max_frames,
            side=limits.max_frame_side,
        )
    return limits.max_frame_side
