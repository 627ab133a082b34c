"""Job intake: a member's images and options become a journalled, queued, acknowledged job.

`Intake.submit` is shared by the text and slash forms of `stylize` and by the result
buttons: refuse early (restarting, painter out of service, the member's limit: before
anything is downloaded), validate the images in a bounded pool, journal the job through
the broker (durable from here on), post the status message with its Cancel button, and
hand the job to delivery to follow it to its one answer.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import discord

from bot.broker import Broker, Job, QueueFull, Refused, UserLimitReached, new_job_id
from bot.buttons import cancel_view
from bot.conversations import Conversation
from bot.decoder import DecoderPool
from bot.delivery import Delivery, JobMeta
from bot.i18n import DEFAULT_LANGUAGE, explain, t
from bot.options import MIN_SIZE, Caps, OptionError, build_settings, strength_label
from bot.replies import status_text
from bot.settings import Settings
from bot.validation import (
    InputProblem,
    Inputs,
    JobSides,
    Validations,
    check_animation,
    read_and_check,
)
from engine import memory
from engine.jobs import JobRequest, TransferSettings

log = logging.getLogger(__name__)


def within_memory(
    settings: TransferSettings, notes: list[str], language: str | None = None
) -> TransferSettings:
    """The job's settings if it fits [engine] max_memory (tiled if need be: the engine
    tiles large outputs itself), else smaller with a note; OptionError when even the
    smallest picture would not fit (engine/memory.py estimates it)."""
    budget = memory.budget_mib(settings.max_memory)
    side = settings.size
    if memory.fits((side, side), budget=budget, precision=settings.precision):
        return settings
    while side > MIN_SIZE and not memory.fits((side, side), budget=budget, precision=settings.precision):
        side = max(MIN_SIZE, int(side * 0.8))
    if not memory.fits((side, side), budget=budget, precision=settings.precision):
        raise OptionError(
            "option.no_memory",
            budget=memory.gib(budget),
            least=MIN_SIZE,
            needs=memory.gib(memory.estimate_mib(MIN_SIZE * MIN_SIZE, precision=settings.precision)),
        )
    notes.append(t(language, "option.memory_size", side=side, budget=memory.gib(budget)))
    return replace(settings, size=side)


class Intake:
    def __init__(
        self,
        *,
        settings: Settings,
        broker: Broker,
        delivery: Delivery,
        caps: Caps,
        decoder: DecoderPool | None = None,
        validations: Validations | None = None,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.queue = broker.queue
        self.delivery = delivery
        self.caps = caps
        self.closing = False  # set on SIGTERM: no new jobs
        # Full decodes in decoder processes with time and memory budgets (None: in a
        # thread, for tools); validations in progress count against the member's limit.
        self.decoder = decoder
        self.validations = validations or Validations()

    async def submit(
        self,
        conv: Conversation,
        inputs: Inputs,
        meta: JobMeta,
        *,
        caps: Caps | None = None,
        limit: int | None = None,
        init_image: bytes = b"",
    ) -> Job | None:
        """Validate, queue, acknowledge, and follow the job to its end. None if refused.
        `caps` and `limit`: the server's, when it set lower ones than the host's.
        `init_image`: what the job starts from (the Upscale button's previous result)."""
        language = meta.language
        refusal = self.not_taking_jobs(language)
        if refusal:
            await conv.say(refusal)
            return None
        try:
            self.queue.check(conv.user.id)  # before downloading anything
            settings, notes = build_settings(
                self.settings.engine.transfer, meta.options, caps or self.caps, language
            )
            settings = within_memory(settings, notes, language)
            member = conv.user.id
            with self.validations.claim(
                member,
                jobs=len(self.queue.jobs_of(member)),
                limit=limit or self.settings.bot.per_user_limit,
            ):
                checked = await read_and_check(
                    inputs,
                    self.settings.engine.limits,
                    sides=JobSides.of(settings),
                    decoder=self.decoder,
                    owner=member,
                )
            side = check_animation(
                checked.content, self.settings.engine.limits, sample=meta.options.sample
            )
            if side and settings.size > side:  # animations are smaller ([limits] max_frame_side)
                notes.append(t(language, "option.animation_size", side=side))
                settings = replace(settings, size=side)
        except Refused as e:
            await conv.say(f"⚠️ {self.refusal_text(e, language, conv.user.id)}")
            return None
        except (OptionError, InputProblem) as e:
            await conv.say(f"⚠️ {explain(e, language)}")
            return None
        meta.notes, meta.names, meta.reply_to = notes, checked.names, conv.reply_to
        job = Job(
            JobRequest(
                new_job_id(),
                checked.content,
                checked.styles,
                settings,
                output_format=self.settings.engine.output.format,
                limits=self.settings.engine.limits,
                quality=self.settings.engine.output.quality,
                init_image=init_image,
                sample=meta.options.sample,
            ),
            user_id=conv.user.id,
            channel_id=getattr(conv.channel, "id", 0),
            guild_id=conv.guild.id if conv.guild else 0,
            label=f"{checked.names[0]} in the style of {', '.join(checked.names[1:])}",
            language=language,
        )
        try:
            await self.broker.submit(job, meta.to_json())  # durable before the member hears of it
        except Refused as e:
            await conv.say(f"⚠️ {self.refusal_text(e, language, conv.user.id)}")
            return None
        log.info(
            "job %s queued for user %s at position %d: %dpx, %d iterations, strength %s",
            job.id,
            conv.user.id,
            job.position,
            settings.size,
            settings.iterations,
            strength_label(meta.options.strength),
        )
        await self.acknowledge(job, conv, meta)
        return job

    def not_taking_jobs(self, language: str | None = None) -> str | None:
        if self.closing:
            return t(language, "refused.restarting")
        if self.broker.runner.unavailable is not None:
            return t(language, "refused.painter_down")
        return None

    def refusal_text(self, refused: Refused, language: str | None, user_id: int) -> str:
        """Why the queue refused a job, in the member's language (the queue's own words,
        which can carry a host's reason, in English)."""
        if language in (None, DEFAULT_LANGUAGE):
            return str(refused)
        if isinstance(refused, UserLimitReached):
            mine = len(self.queue.jobs_of(user_id))
            key = "refused.limit_one" if mine == 1 else "refused.limit_other"
            return t(language, key, mine=mine, limit=self.queue.per_user_limit)
        if isinstance(refused, QueueFull):
            return t(language, "refused.queue_full", waiting=len(self.queue.waiting))
        return t(language, "refused.restarting")

    async def acknowledge(self, job: Job, conv: Conversation, meta: JobMeta) -> None:
        """Post the status message, remember where it is, and follow the job."""
        text = status_text(job, note=self.delivery.note(), language=job.language)
        if meta.notes:
            text += f"\n({'; '.join(meta.notes)})"
        try:
            handle = await conv.open_status(text, cancel_view(job.id, job.language))
        except discord.HTTPException as e:
            log.warning(
                "job %s: could not post the status message (%s %s); cancelling it",
                job.id,
                e.status,
                e.text,
            )
            self.queue.cancel(job.id, by=0, reason="Cancelled: I could not post in this channel.")
            return
        self.broker.status_message(job, handle.channel_id, handle.message_id)
        self.delivery.follow(job, conv, self.delivery.start_status(job, handle, text), meta)
