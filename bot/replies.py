"""How the bot talks about one job: its status text, the one status message it keeps
editing, and the result file sized to fit the server. Where the messages go is
bot/conversations.py."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import discord

from bot.broker.queue import KILLED_TWO_ENGINES, Job, JobState
from bot.conversations import KEEP, StatusHandle
from bot.i18n import duration_in, localized, ordinal_in, t
from engine.jobs import ErrorKind, JobFailed, JobResult, Progress

log = logging.getLogger(__name__)

BAR_SEGMENTS = 10


# --- text -----------------------------------------------------------------------------


def progress_bar(fraction: float, segments: int = BAR_SEGMENTS) -> str:
    filled = max(0, min(segments, int(fraction * segments + 1e-9)))
    return "▰" * filled + "▱" * (segments - filled)


def duration(seconds: float, language: str | None = None) -> str:
    return duration_in(language, seconds)


def done_fraction(progress: Progress | None) -> float:
    """How much of the job is done: the engine's cost-weighted fraction when it sends one
    (a coarse-to-fine schedule's small scales are cheap), else iterations done."""
    if progress is None:
        return 0.0
    if progress.fraction > 0:
        return min(1.0, progress.fraction)
    return min(1.0, progress.iteration / progress.total) if progress.total > 0 else 0.0


def eta(job: Job) -> float | None:
    p = job.progress
    fraction = done_fraction(p)
    if p is None or p.iteration < 2 or fraction <= 0:
        return None
    return p.elapsed / fraction * (1.0 - fraction)


def status_text(job: Job, *, note: str = "", language: str | None = None) -> str:
    """The status message of a job; `note` (waiting for the painter) goes under a queued one."""
    ref = t(language, "status.ref", id=job.id)
    if job.time_up and not job.finished:
        return t(language, "status.time_up", ref=ref)
    if job.cancelled_by is not None and not job.finished:
        return t(language, "status.stopping", ref=ref)
    if job.state == JobState.QUEUED:
        place = (
            t(language, "status.next")
            if job.position == 1
            else t(language, "status.place", ordinal=ordinal_in(language, job.position))
        )
        text = t(language, "status.resumed" if job.resumed else "status.queued", place=place, ref=ref)
        if note:
            text += f"\n{localized(note, language)}"
        return text
    if job.state == JobState.RUNNING:
        p = job.progress
        if p is None:
            return t(language, "status.starting", ref=ref)
        fraction = done_fraction(p)
        text = t(language, "status.painting", bar=progress_bar(fraction), percent=int(fraction * 100))
        if p.frames > 1:
            text += t(language, "status.frame", frame=p.frame, frames=p.frames)
        left = eta(job)
        if p.iteration >= p.total:
            text += t(language, "status.finishing_now")
        elif left is not None:
            text += t(language, "status.left", time=duration(max(left, 1), language))
        return f"{text} ({ref})" if language in (None, "en") else f"{text}（{ref}）"
    return t(language, "status.finishing", ref=ref)


# engine/remote_worker.py's poison_failure: a job that stopped the Redis workers' engine
# `max_tries` times in a row (the local pool's is KILLED_TWO_ENGINES).
REMOTE_POISON = "The job stopped the painter "


def failure_text(job: Job, failure: JobFailed, language: str | None = None) -> str:
    ref = t(language, "status.ref", id=job.id)
    if failure.kind == ErrorKind.CANCELLED:
        return f"🛑 {failure.message} ({ref})"
    if failure.kind == ErrorKind.BAD_INPUT and member_safe(failure.message):
        message = failure.message[:1].upper() + failure.message[1:]
        return f"⚠️ {message} ({ref})"
    # BAD_SETTINGS is not shown either: options are checked before queueing, so a
    # ValueError from the engine is a bug (it was a TensorFlow traceback, issue 11).
    if failure.kind == ErrorKind.ENGINE_DIED and failure.message.startswith(
        (KILLED_TWO_ENGINES, REMOTE_POISON)
    ):
        return t(language, "failure.crashed_twice", ref=ref)
    if failure.kind == ErrorKind.ENGINE_DIED:
        return t(language, "failure.crashed", ref=ref)
    if failure.kind == ErrorKind.WEIGHTS:
        return t(language, "failure.weights", ref=ref)
    return t(language, "failure.internal", ref=ref)


# An engine message is shown to a member only if it is one of ours: an InputError's
# sentence, short, with nothing that looks like a traceback or a file path in it.
MAX_MEMBER_MESSAGE = 500
_NOT_FOR_MEMBERS = re.compile(
    r"Traceback \(most recent call last\)|File \"|(?:^|[\s'\"(=])(?:/[\w.-]+){2,}|[A-Za-z]:\\"
)


def member_safe(message: str) -> bool:
    """Whether an engine error message may be shown to the member as it is."""
    return (
        0 < len(message) <= MAX_MEMBER_MESSAGE
        and "\n" not in message.strip()
        and not _NOT_FOR_MEMBERS.search(message)
    )


# --- the status message -----------------------------------------------------------------


@dataclass
class StatusMessage:
    """One message per job, edited at most every `interval` seconds, only on change."""

    handle: StatusHandle
    job: Job
    interval: float
    note: Any = None  # () -> str: why the queue is not moving, if it is not
    language: str = "en"  # the member's (bot/i18n.py)
    _want_text: str = ""
    _want_preview: bytes | None = None
    _sent_text: str = ""
    _sent_preview: bytes | None = None
    _last_edit: float = field(default_factory=time.monotonic)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _dead: bool = False

    def start(self, sent_text: str) -> None:
        self._sent_text = self._want_text = sent_text
        self.job.listeners.append(self.on_job)
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"status-{self.job.id}"
        )
        self.on_job(self.job)  # it may have moved while the acknowledgement was being sent

    def on_job(self, job: Job) -> None:
        if job.finished:
            return
        self._want_text = status_text(
            job, note=self.note() if self.note else "", language=self.language
        )
        if job.progress is not None and job.progress.preview_png:
            self._want_preview = job.progress.preview_png
        self._changed.set()

    async def _run(self) -> None:
        while not self._dead:
            await self._changed.wait()
            self._changed.clear()
            wait = self._last_edit + self.interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            text, preview = self._want_text, self._want_preview
            if text == self._sent_text and preview is self._sent_preview:
                continue
            try:
                await self.handle.edit(
                    content=text, preview=preview if preview is not self._sent_preview else KEEP
                )
            except (discord.NotFound, discord.Forbidden) as e:
                log.warning(
                    "job %s: status message gone or not editable (%s); no more updates",
                    self.job.id,
                    e.status,
                )
                self._dead = True
                return
            except discord.HTTPException as e:
                log.warning(
                    "job %s: status edit failed (%s %s); will retry", self.job.id, e.status, e.text
                )
            except Exception:  # e.g. the HTTP session closed under us during shutdown
                log.exception("job %s: status edit failed; no more updates", self.job.id)
                self._dead = True
                return
            else:
                self._sent_text, self._sent_preview = text, preview
            self._last_edit = time.monotonic()

    async def stop(self) -> None:
        """No more progress edits (any edit in flight finishes first)."""
        if self.on_job in self.job.listeners:
            self.job.listeners.remove(self.on_job)
        self._dead = True
        self._changed.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=10)
            if not self._task.done():
                self._task.cancel()

    async def finish(self, text: str) -> None:
        """The final word on a job that produced no picture: text only, no button, no preview."""
        await self.stop()
        try:
            await self.handle.edit(content=text, preview=None, view=None)
        except discord.HTTPException as e:
            log.warning("job %s: could not finalise the status message (%s)", self.job.id, e.status)

    async def delete(self) -> None:
        await self.stop()
        try:
            await self.handle.delete()
        except discord.HTTPException as e:
            log.info("job %s: could not delete the status message (%s)", self.job.id, e.status)


# --- the result file ------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    data: bytes
    format: str
    width: int
    height: int
    # Why this encoding, if it is not the result as it came: a catalogue key that the
    # format and size fill in (result.sent_as, result.shrunk).
    note_key: str = ""

    def note_in(self, language: str | None) -> str:
        if not self.note_key:
            return ""
        return t(
            language, self.note_key, format=self.format.upper(), width=self.width, height=self.height
        )

    @property
    def note(self) -> str:
        return self.note_in(None)


EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp", "gif": "gif"}


def result_encodings(result: JobResult, *, quality: int, min_side: int = 64) -> Iterator[Encoded]:
    """The result as it came, then smaller: JPEG and WebP at `quality`, then JPEG
    downscaled by 15 % a step. Lazy: each is encoded only if the one before was too big."""
    yield Encoded(result.image, result.format, result.width, result.height)
    if result.frames > 1:  # an animation stays one: WebP at falling quality, then smaller
        from engine import animation

        for data, fmt, w, h in animation.smaller_encodings(
            result.image, quality=quality, min_side=min_side
        ):
            same_size = (w, h) == (result.width, result.height)
            yield Encoded(data, fmt, w, h, "result.sent_as" if same_size else "result.shrunk")
        return
    from engine import images  # Pillow + NumPy; imported on first need
    from engine.jobs import ImageLimits

    loaded = images.load_image(
        result.image,
        name="the result",
        limits=ImageLimits(max_bytes=len(result.image) + 1, max_pixels=10**9),
    )
    rgb, alpha = loaded.rgb, loaded.alpha
    for fmt in ("jpeg", "webp"):
        if fmt != result.format:
            yield Encoded(
                images.encode_image(rgb, format=fmt, quality=quality, alpha=alpha),
                fmt,
                result.width,
                result.height,
                "result.sent_as",
            )
    height, width = rgb.shape[:2]
    for h, w in images.shrinking_sizes(height, width, min_side):
        small = images.resize_to(rgb, (h, w))
        yield Encoded(
            images.encode_image(small, format="jpeg", quality=quality, alpha=alpha),
            "jpeg",
            w,
            h,
            "result.shrunk",
        )


def compact_input(data: bytes, longest: int) -> tuple[bytes, str]:
    """An input image small enough to re-attach to a result (for the buttons), at no
    more than the size the job will use. PNG when it has transparency, else JPEG."""
    from engine import images
    from engine.jobs import ImageLimits

    loaded = images.load_image(
        data, name="the input", limits=ImageLimits(max_bytes=len(data) + 1, max_pixels=10**9)
    )
    rgb, alpha = loaded.rgb, loaded.alpha
    if max(rgb.shape[:2]) > longest:
        rgb = images.resize_longest(rgb, longest)
    if alpha is not None:
        return images.encode_image(rgb, format="png", alpha=alpha), "png"
    return images.encode_image(rgb, format="jpeg", quality=95), "jpg"


def total_size(files: Sequence[tuple[str, bytes]]) -> int:
    return sum(len(d) for _, d in files)
