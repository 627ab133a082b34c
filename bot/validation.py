"""Checks on a member's images before anything is queued (DESIGN.md, example 10).

Pure functions on attachment-like objects (anything with `filename`, `size` and an
async `read()`; discord.Attachment is one), so they are tested without Discord.
Order: the count of images, each attachment's declared size before it is
downloaded, then the bytes: the type sniffed from the content (never the name or
Discord's content type), the pixel count from the header, and a full decode, so a
corrupt file is refused here rather than after waiting in the queue. Messages name
the image ("the style image (starry.png)") and say how to fix the problem.
Images only ever come from Discord attachments; no URL is ever fetched.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engine import images
from engine.jobs import ImageLimits


class AttachmentLike(Protocol):
    filename: str
    size: int

    async def read(self) -> bytes: ...


class InputProblem(ValueError):
    """Why the images cannot be used, written for the member."""


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


def label(role: str, index: int, count: int, filename: str) -> str:
    name = f" ({filename})" if filename else ""
    if role == "content":
        return f"the photo{name}"
    return f"the style image{name}" if count == 1 else f"style image {index + 1}{name}"


def choose_inputs(
    own: Sequence[Any], referenced: Sequence[Any] = (), *, max_styles: int, how: str = "!stylize"
) -> Inputs:
    """Which attachment is the photo and which are styles.

    Normally the first attachment is the photo and the rest are styles. When the
    command replies to a message that has an attachment, that message's first
    attachment is the photo and every attachment of the command is a style.
    """
    if referenced:
        content, styles = referenced[0], list(own)
        if not styles:
            raise InputProblem(
                "You replied to a message with a photo, but attached no style image. "
                f"Attach the painting whose style you want to your `{how}` reply."
            )
    else:
        if not own:
            raise InputProblem(
                "I need two images: first the photo, then the painting whose style you want. "
                f"Attach both to your `{how}` message, or reply to a message that has the photo "
                f"and attach the style image. `{how} help` explains the options."
            )
        if len(own) == 1:
            raise InputProblem(
                f"I got only one image ({own[0].filename}), but I need two: the photo first, then "
                "the painting whose style you want. Attach both, or reply to a message that has the "
                "photo and attach the style image."
            )
        content, styles = own[0], list(own[1:])
    if len(styles) > max_styles:
        raise InputProblem(
            f"You sent {len(styles)} style images; I can blend at most {max_styles}. "
            "Please send fewer."
        )
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
            f"{sentence(candidate.label)} is {format_bytes(size, round_up=True)}; the limit is "
            f"{format_bytes(limits.max_bytes, round_up=False)}. Please send a smaller file "
            "(shrinking it or saving it as a JPEG usually does it) and try again."
        )


def check_bytes(label_: str, data: bytes, limits: ImageLimits) -> images.ImageInfo:
    """Type by content, pixel limits from the header, then a full decode (CPU: run in a thread)."""
    try:
        info = images.probe(data, name=label_, limits=limits)
        images.load_image(data, name=label_, limits=limits)
    except images.ImageError as e:
        raise InputProblem(sentence(str(e))) from None
    return info


async def read_and_check(
    inputs: Inputs, limits: ImageLimits, *, decode_lock: asyncio.Semaphore | None = None
) -> CheckedInputs:
    """Declared sizes first (nothing is downloaded if one is too big), then each file."""
    for candidate in inputs.all:
        check_declared_size(candidate, limits)
    datas: list[bytes] = []
    for candidate in inputs.all:
        data = await candidate.attachment.read()
        if decode_lock is None:
            await asyncio.to_thread(check_bytes, candidate.label, data, limits)
        else:
            async with decode_lock:  # full decodes are big: one at a time bounds the memory
                await asyncio.to_thread(check_bytes, candidate.label, data, limits)
        datas.append(data)
    return CheckedInputs(
        content=datas[0],
        styles=tuple(datas[1:]),
        labels=tuple(c.label for c in inputs.all),
        names=tuple(c.attachment.filename for c in inputs.all),
    )
