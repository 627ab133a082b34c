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

from bot.broker import Broker, Job, Refused, new_job_id
from bot.buttons import cancel_view
from bot.conversations import Conversation
from bot.decoder import DecoderPool
from bot.delivery import Delivery, JobMeta
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


def within_memory(settings: TransferSettings, notes: list[str]) -> TransferSettings:
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
            f"This painter has only {memory.gib(budget)} of memory for a job ([engine] max_memory), "
            f"and even a {MIN_SIZE}-pixel picture needs about "
            f"{memory.gib(memory.estimate_mib(MIN_SIZE * MIN_SIZE, precision=settings.precision))}. "
            "Please tell the host; nothing I can paint fits."
        )
    notes.append(
        f"size reduced to {side} px to fit this painter's {memory.gib(budget)} of memory "
        "([engine] max_memory)"
    )
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
        self, conv: Conversation, inputs: Inputs, meta: JobMeta, *, init_image: bytes = b""
    ) -> Job | None:
        """Validate, queue, acknowledge, and follow the job to its end. None if refused.
        `init_image`: what the job starts from (the Upscale button's previous result)."""
        refusal = self.not_taking_jobs()
        if refusal:
            await conv.say(refusal)
            return None
        try:
            self.queue.check(conv.user.id)  # before downloading anything
            settings, notes = build_settings(self.settings.engine.transfer, meta.options, self.caps)
            settings = within_memory(settings, notes)
            member = conv.user.id
            with self.validations.claim(
                member,
                jobs=len(self.queue.jobs_of(member)),
                limit=self.settings.bot.per_user_limit,
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
                notes.append(f"size {side} px: animations are at most {side} px")
                settings = replace(settings, size=side)
        except (Refused, OptionError, InputProblem) as e:
            await conv.say(f"⚠️ {e}")
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
        )
        try:
            await self.broker.submit(job, meta.to_json())  # durable before the member hears of it
        except Refused as e:
            await conv.say(f"⚠️ {e}")
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

    def not_taking_jobs(self) -> str | None:
        if self.closing:
            return "I'm restarting, so I'm not taking new jobs right now. Please try again in a minute."
        if self.broker.runner.unavailable is not None:
            return (
                "😞 Sorry — my painter isn't working right now (a setup problem on the host's side, "
                "and the host has been told in the log). It keeps trying to start by itself; "
                "please try again later."
            )
        return None

    async def acknowledge(self, job: Job, conv: Conversation, meta: JobMeta) -> None:
        """Post the status message, remember where it is, and follow the job."""
        text = status_text(job, note=self.delivery.note())
        if meta.notes:
            text += f"\n({'; '.join(meta.notes)})"
        try:
            handle = await conv.open_status(text, cancel_view(job.id))
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
