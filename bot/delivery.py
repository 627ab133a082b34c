"""Job delivery: each job's status message, its progress edits and its one answer.

`Delivery.follow` watches a job until it has an outcome, then posts the picture (or
says why there is none) and tells the broker it was delivered, so the answer is
never posted twice. After a restart `Delivery.resume` re-attaches to every job the
broker gives back: it edits the stored status message ("resumed after a restart")
and follows the job as if nothing had happened; answers that were ready but not
posted go out at once. On SIGTERM `Delivery.restarting` tells every status message
that the bot is restarting and stops following (the jobs stay in the journal).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import discord

from bot.broker import Broker, Job
from bot.broker.journal import Entry
from bot.buttons import cancel_view, result_view
from bot.conversations import Conversation, MessageStatus, ResumedConversation, fresh_file
from bot.i18n import t
from bot.options import JobOptions, RerunSpec, strength_label
from bot.replies import (
    StatusMessage,
    compact_input,
    duration,
    failure_text,
    result_encodings,
    status_text,
)
from bot.settings import Settings
from bot.validation import is_animated
from engine.jobs import ErrorKind, JobFailed, JobResult

log = logging.getLogger(__name__)

EMBED_COLOUR = discord.Colour(0x7B61FF)
INPUT_PREFIX = "input-"  # result attachments that hold a slash job's inputs (for the buttons)
INPUT_ALT = {False: "Input photo", True: "Input style image"}  # their alt text, before ": name"


@dataclass
class JobMeta:
    """What the result message needs besides the JobResult (journalled as JSON)."""

    options: JobOptions
    source: str  # "m" (inputs in the member's message) or "r" (re-attached to the result)
    channel_id: int = 0
    message_id: int = 0
    names: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    reply_to: int = 0  # the command message the answer replies to (0: an interaction)
    language: str = "en"  # the member's, for every message about the job (bot/i18n.py)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> JobMeta:
        values = dict(values)
        values["options"] = JobOptions(**values["options"])
        values["names"] = tuple(values.get("names", ()))
        return cls(**values)


def animated_extension(data: bytes) -> str:
    return "gif" if data[:4] == b"GIF8" else "webp" if data[8:12] == b"WEBP" else "png"


def short(text: str, limit: int = 40) -> str:
    text = discord.utils.escape_markdown(discord.utils.escape_mentions(text))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def stopped_early_text(limit: float, done: int, asked: int, language: str | None = None) -> str:
    """Under a result the time limit cut short: what the member is looking at."""
    return t(
        language, "result.stopped_early", limit=duration(limit, language), done=done, asked=asked
    )


def ext_for(fmt: str) -> str:
    return {"jpeg": "jpg"}.get(fmt, fmt)


class Delivery:
    def __init__(self, *, broker: Broker, settings: Settings) -> None:
        self.broker = broker
        self.settings = settings
        self._following: dict[str, tuple[asyncio.Task[None], StatusMessage]] = {}
        # Told of each result once it is posted (the member's history, bot/cogs/community.py).
        self.on_result: (
            Callable[[Job, JobResult, JobMeta, discord.Message], Awaitable[None]] | None
        ) = None

    def note(self) -> str:
        return self.broker.runner.waiting_note

    # -- following a job --------------------------------------------------------------

    def start_status(self, job: Job, handle: Any, text: str) -> StatusMessage:
        status = StatusMessage(
            handle, job, self.settings.bot.edit_interval, note=self.note, language=job.language
        )
        status.start(text)
        return status

    def follow(self, job: Job, conv: Conversation, status: StatusMessage, meta: JobMeta) -> None:
        task = asyncio.get_running_loop().create_task(
            self._follow(job, conv, status, meta), name=f"follow-{job.id}"
        )
        self._following[job.id] = (task, status)
        task.add_done_callback(lambda _: self._following.pop(job.id, None))

    async def _follow(
        self, job: Job, conv: Conversation, status: StatusMessage, meta: JobMeta
    ) -> None:
        """Wait for the job; then deliver the picture, or say why there is none."""
        try:
            outcome = await job.outcome()
            await status.stop()
            if isinstance(outcome, JobResult):
                message = await self.deliver(job, outcome, conv, meta)
                if message is None:
                    await status.finish(t(job.language, "result.too_large", id=job.id))
                else:
                    await status.delete()
                    await self._posted(job, outcome, meta, message)
            else:
                if outcome.kind in (
                    ErrorKind.INTERNAL,
                    ErrorKind.WEIGHTS,
                    ErrorKind.ENGINE_DIED,
                    ErrorKind.BAD_SETTINGS,  # checked before queueing: from the engine, a bug
                ):
                    log.error(
                        "job %s for user %s failed (%s): %s",
                        job.id,
                        job.user_id,
                        outcome.kind.value,
                        outcome.message,
                    )
                await status.finish(failure_text(job, outcome, job.language))
        except discord.Forbidden as e:
            log.warning(
                "job %s: not allowed to post the result in channel %s (%s); the bot needs the "
                "Send Messages and Attach Files permissions there",
                job.id,
                job.channel_id,
                e.text,
            )
            await status.finish(t(job.language, "result.no_upload", id=job.id))
        except Exception:
            log.exception("job %s: could not deliver the outcome", job.id)
            try:
                await status.finish(
                    failure_text(job, JobFailed(job.id, ErrorKind.INTERNAL, ""), job.language)
                )
            except Exception:
                log.exception("job %s: could not apologise either", job.id)
        await self.broker.delivered(job)

    async def deliver(
        self, job: Job, result: JobResult, conv: Conversation, meta: JobMeta
    ) -> discord.Message | None:
        """The result as a reply, in the best encoding that fits the upload limit (None: none fits)."""
        extras = await self._kept_inputs(job, meta, conv.filesize_limit)
        view = (
            result_view(
                self._spec(job, result, meta),
                meta.language,
                upscale=self.can_upscale(job, result),
            )
            if (meta.source == "m" or extras)
            else None
        )
        budget = conv.filesize_limit
        encodings = result_encodings(result, quality=self.settings.engine.output.quality)
        while True:
            encoded = await asyncio.to_thread(next, encodings, None)
            if encoded is None:
                log.error("job %s: no encoding fits the upload limit of %d bytes", job.id, budget)
                return None
            if len(encoded.data) > budget:
                continue
            text = self.result_text(
                job, result, conv, meta, encoded.width, encoded.height, encoded.note_in(meta.language)
            )
            files = [fresh_file(f"stylized-{job.id}.{ext_for(encoded.format)}", encoded.data)]
            # Alt text names the original file; the buttons read it back (inputs_on_result).
            files += [
                fresh_file(name, data, description=f"{INPUT_ALT[i > 0]}: {original}"[:1000])
                for i, ((name, data), original) in enumerate(zip(extras, meta.names, strict=False))
            ]
            embed = self.result_embed(job, result, meta, encoded.width, encoded.height, files[1:])
            try:
                message = await conv.send_result(text, files, view, embed)
            except discord.HTTPException as e:
                if e.status == 413:
                    log.warning(
                        "job %s: Discord refused %d bytes as too large; trying smaller",
                        job.id,
                        len(encoded.data),
                    )
                    budget = len(encoded.data) - 1
                    continue
                raise
            log.info(
                "job %s delivered: %s %dx%d, %d bytes",
                job.id,
                encoded.format,
                encoded.width,
                encoded.height,
                len(encoded.data),
            )
            return message

    async def _kept_inputs(self, job: Job, meta: JobMeta, limit: int) -> list[tuple[str, bytes]]:
        """For source "r": the inputs, compacted, to re-attach to the result (for the buttons)."""
        if meta.source != "r":
            return []
        settings = job.request.settings
        style_side = max(settings.size, round(settings.size * settings.style_scale))
        extras = []
        for i, data in enumerate((job.request.content, *job.request.styles)):
            name = "photo" if i == 0 else f"style-{i}"
            if i == 0 and await asyncio.to_thread(is_animated, data):
                # An animation is kept as it came (a still would make Again paint one frame).
                extras.append((f"{INPUT_PREFIX}{name}.{animated_extension(data)}", data))
                continue
            compact, ext = await asyncio.to_thread(
                compact_input, data, settings.size if i == 0 else style_side
            )
            extras.append((f"{INPUT_PREFIX}{name}.{ext}", compact))
        if extras and max(len(d) for _, d in extras) > limit:
            return []  # cannot keep the inputs: no buttons for this one
        return extras

    def can_upscale(self, job: Job, result: JobResult) -> bool:
        """Upscale ×2 on a still picture smaller than the host's max size."""
        return result.frames <= 1 and job.request.settings.size < self.settings.bot.max_size

    @staticmethod
    def _spec(job: Job, result: JobResult, meta: JobMeta) -> RerunSpec:
        settings = job.request.settings
        # An Upscale job ran fewer iterations; its buttons rerun with the member's count.
        iterations = (
            meta.options.iterations
            if meta.options.upscale and meta.options.iterations
            else settings.iterations
        )
        return RerunSpec(
            action="a",
            source=meta.source,
            channel_id=meta.channel_id,
            message_id=meta.message_id,
            seed=max(result.seed, 0),  # -1: a stopped-early job whose seed was random
            strength=meta.options.strength,
            size=settings.size,
            iterations=iterations,
            color=settings.color,
        )

    def result_text(
        self,
        job: Job,
        result: JobResult,
        conv: Conversation,
        meta: JobMeta,
        width: int,
        height: int,
        note: str,
    ) -> str:
        settings = job.request.settings
        names = meta.names
        language = meta.language
        what = (
            t(
                language,
                "result.what",
                photo=short(names[0]),
                styles=" + ".join(f"**{short(n)}**" for n in names[1:]),
            )
            if names
            else t(language, "result.your_picture")
        )
        details = [
            f"{width}×{height}",
            t(language, "result.strength", value=strength_label(meta.options.strength, language)),
        ]
        if settings.color != "none":
            details.append(
                t(language, "result.colour", value=t(language, f"colour_mode.{settings.color}"))
            )
        if result.seed >= 0:
            details.append(t(language, "result.seed", value=result.seed))
        details.append(
            t(
                language,
                "result.took",
                iterations=result.iterations,
                time=duration(result.elapsed, language),
            )
        )
        text = t(language, "result.here", mention=conv.user.mention, what=what)
        text += f"\n{' · '.join(details)}"
        if note:
            text += f" · {note}"
        if result.stopped_early:
            text += "\n" + stopped_early_text(
                self.settings.bot.job_timeout, result.iterations, settings.iterations, language
            )
        if meta.notes:
            text += f"\n({'; '.join(meta.notes)})"
        if self.broker.runner.random_weights:
            text += "\n" + t(language, "result.test_mode")
        return text[:2000]

    def device_of(self, job: Job) -> str:
        """Where the job ran ("CPU (AMD EPYC, 2 cores) · tensorflow"), when the runner says
        (local engines; remote workers do not report it)."""
        for client in getattr(self.broker.runner, "clients", ()):
            ready = getattr(client, "ready", None)
            if getattr(client, "name", None) == job.engine and ready is not None:
                return f"{ready.device} · {ready.backend}"
        return ""

    def result_embed(
        self,
        job: Job,
        result: JobResult,
        meta: JobMeta,
        width: int,
        height: int,
        inputs: list[discord.File],
    ) -> discord.Embed:
        """The result's card: what, the settings used, the time taken, the device, and the
        style as a thumbnail when the inputs ride along. The message's text says the same
        for clients that hide embeds."""
        language, settings = meta.language, job.request.settings
        names = [short(n) for n in meta.names]
        embed = discord.Embed(
            title=" × ".join(names)[:256] or t(language, "result.your_picture"),
            colour=EMBED_COLOUR,
        )
        used = [
            f"{width}×{height}",
            t(language, "result.strength", value=strength_label(meta.options.strength, language)),
            t(language, "result.colour", value=t(language, f"colour_mode.{settings.color}")),
        ]
        if result.seed >= 0:
            used.append(t(language, "result.seed", value=result.seed))
        embed.add_field(name=t(language, "embed.settings"), value=" · ".join(used), inline=False)
        embed.add_field(
            name=t(language, "embed.time"),
            value=t(language, "result.took", iterations=result.iterations, time=duration(result.elapsed, language)),
        )
        device = self.device_of(job)
        if device:
            embed.add_field(name=t(language, "embed.device"), value=device)
        styles = [f.filename for f in inputs if f.filename and f.filename.startswith(f"{INPUT_PREFIX}style")]
        if styles:
            embed.set_thumbnail(url=f"attachment://{styles[0]}")
        return embed

    async def _posted(
        self, job: Job, result: JobResult, meta: JobMeta, message: discord.Message
    ) -> None:
        if self.on_result is None:
            return
        try:
            await self.on_result(job, result, meta, message)
        except Exception:  # the picture is posted; a lost history line must not undo that
            log.exception("job %s: could not record the result", job.id)

    # -- restarts ---------------------------------------------------------------------

    async def resume(self, client: discord.Client) -> int:
        """Re-attach to every job the broker gives back after a restart; returns how many."""
        resumed = await self.broker.resume()
        for job, entry in resumed:
            try:
                await self._reattach(client, job, entry)
            except Exception:
                log.exception("job %s: could not re-attach after the restart", job.id)
        return len(resumed)

    async def _reattach(self, client: discord.Client, job: Job, entry: Entry) -> None:
        meta = JobMeta.from_json(dict(entry.meta))
        conv = ResumedConversation(
            client, guild_id=entry.guild_id, channel_id=entry.channel_id,
            user_id=entry.user_id, reply_to=meta.reply_to,
        )  # fmt: skip
        job.language = meta.language
        text = status_text(job, note=self.note(), language=job.language)
        view = None if job.finished else cancel_view(job.id, job.language)
        handle: Any = None
        if entry.status_message_id:
            handle = MessageStatus(conv.partial_message(entry.status_message_id))
            try:
                if not job.finished:
                    await handle.edit(content=text, view=view)
            except discord.NotFound:
                handle = None  # deleted meanwhile: post a new one below
            except discord.HTTPException as e:
                log.warning("job %s: could not edit the status message (%s)", job.id, e.status)
        if handle is None:
            handle = await conv.open_status(text, view)
            self.broker.status_message(job, handle.channel_id, handle.message_id)
        if job.finished and await self.already_posted(conv, job, handle.message_id):
            log.info("job %s: its answer was posted just before the restart", job.id)
            await self.broker.delivered(job)
            await self.start_status(job, handle, text).delete()
            return
        log.info("job %s resumed (%s)", job.id, job.state.value)
        self.follow(job, conv, self.start_status(job, handle, text), meta)

    async def already_posted(self, conv: Conversation, job: Job, after: int) -> bool:
        """Whether the result is in the channel already: the bot may have been killed
        between posting it and marking it delivered. Looks at what came after the status
        message; if it cannot look, it assumes not (at worst a result is posted twice)."""
        name = f"stylized-{job.id}."
        try:
            async for message in conv.channel.history(limit=100, after=discord.Object(after)):
                if any(a.filename.startswith(name) for a in message.attachments):
                    return True
        except discord.HTTPException as e:
            log.warning("job %s: could not read the channel's history (%s)", job.id, e.status)
        return False

    async def restarting(self, timeout: float) -> None:
        """Say in every status message that the bot is restarting (for at most `timeout`
        seconds); stop following jobs."""
        following = list(self._following.values())
        for task, _ in following:
            task.cancel()
        edits = [
            status.finish(t(status.language, "status.restarting", id=status.job.id))
            for _, status in following
        ]
        if edits:
            await asyncio.wait([asyncio.ensure_future(e) for e in edits], timeout=timeout)

    async def wait(self, timeout: float = 30.0) -> None:
        """Let every job's final message go out (used on shutdown)."""
        tasks = [task for task, _ in self._following.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
