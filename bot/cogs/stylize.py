"""The commands people use: stylize, queue, cancel, help; and the buttons.

Hybrid commands, so each works as `!name` and `/name`. The text form reads the
images from the message's attachments (first the photo, then one or more styles)
or, when the message replies to one with an image, takes that image as the photo.
The slash form has attachment options. Both go through `submit`, as do the result
buttons, which carry what they need in their custom ids (see bot/options.py) and so
keep working after a restart.

Two tiers of errors (DESIGN.md, example 7): a problem with the member's images or
options is answered in plain words and nothing is queued; anything unexpected is
logged with its traceback and a job (or error) id, and the member gets a short
apology with that id.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.cooldowns import Cooldowns, cooldown_text
from bot.decoder import DecoderPool, MiB
from bot.options import (
    CANCEL_TEMPLATE,
    RERUN_TEMPLATE,
    SEED_MAX,
    STRENGTH_STEPS,
    Caps,
    JobOptions,
    OptionError,
    RerunSpec,
    build_settings,
    cancel_custom_id,
    parse_color,
    parse_strength,
    rerun_from_match,
    strength_label,
)
from bot.plain import plain
from bot.queue import EnginePool, Job, JobQueue, JobState, Refused, new_job_id
from bot.replies import (
    Conversation,
    InteractionConversation,
    MessageConversation,
    StatusMessage,
    compact_input,
    done_fraction,
    duration,
    failure_text,
    fresh_file,
    result_encodings,
    status_text,
)
from bot.settings import Settings
from bot.validation import (
    Candidate,
    InputProblem,
    Inputs,
    JobSides,
    Validations,
    choose_inputs,
    format_bytes,
    label,
    read_and_check,
)
from engine.jobs import ErrorKind, JobFailed, JobRequest, JobResult

log = logging.getLogger(__name__)

INPUT_PREFIX = "input-"  # result attachments that hold a slash job's inputs (for the buttons)
INPUT_ALT = {False: "Input photo", True: "Input style image"}  # their alt text, before ": name"


class _Renamed:
    """A kept input under its original name (from its alt text), for messages and labels."""

    def __init__(self, attachment: discord.Attachment) -> None:
        self.attachment = attachment
        alt = attachment.description or ""
        self.filename = (
            alt.split(": ", 1)[1]
            if alt.startswith(tuple(INPUT_ALT.values())) and ": " in alt
            else attachment.filename
        )
        self.size = attachment.size

    async def read(self) -> bytes:
        return await self.attachment.read()


class StylizeFlags(commands.FlagConverter, prefix="", delimiter=":", case_insensitive=True):
    """The options after `!stylize` (`strong size:384 color:luminance seed:7`); slash options too."""

    strength: str | None = commands.flag(
        default=None,
        positional=True,
        description="How much style: subtle, normal, strong, extreme, or a number (2 = twice normal)",
    )
    size: int | None = commands.flag(
        default=None, description="Longest side of the result in pixels (bigger is slower)"
    )
    iterations: int | None = commands.flag(
        default=None, description="How long to work on it (more is slower and more refined)"
    )
    # A plain string: parse_color reads it, aliases (lum, hist, ...) included.
    color: str | None = commands.flag(
        default=None,
        aliases=["colour"],
        description="none: the painting's colours; luminance: keep the photo's; histogram: recolour the style",
    )
    seed: int | None = commands.flag(
        default=None, description="A number to repeat a result exactly (leave out for a surprise)"
    )


@dataclass
class JobMeta:
    """What the result message needs besides the JobResult."""

    options: JobOptions
    source: str  # "m" (inputs in the member's message) or "r" (re-attached to the result)
    channel_id: int = 0
    message_id: int = 0
    names: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    # For source "r": the raw inputs, compacted and re-attached when the result is sent.
    inputs: tuple[bytes, ...] = ()


class NotAllowedHere(commands.CheckFailure):
    """The channel or the member's roles are not allowed by the host's config."""


# --- buttons (persistent: they are found again by their custom id after a restart) ------


class CancelButton(discord.ui.DynamicItem[discord.ui.Button], template=CANCEL_TEMPLATE):
    def __init__(self, job_id: str) -> None:
        super().__init__(
            discord.ui.Button(
                label="Cancel",
                style=discord.ButtonStyle.secondary,
                emoji="✖️",
                custom_id=cancel_custom_id(job_id),
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> CancelButton:
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = interaction.client.get_cog(StylizeCog.__cog_name__)
        if isinstance(cog, StylizeCog):
            await cog.cancel_button(interaction, self.job_id)


RERUN_LABELS = {"a": ("Again", "🔁"), "m": ("More style", "➕"), "l": ("Less style", "➖")}


class RerunButton(discord.ui.DynamicItem[discord.ui.Button], template=RERUN_TEMPLATE):
    def __init__(self, spec: RerunSpec) -> None:
        text, emoji = RERUN_LABELS[spec.action]
        super().__init__(
            discord.ui.Button(
                label=text,
                emoji=emoji,
                style=discord.ButtonStyle.primary
                if spec.action == "a"
                else discord.ButtonStyle.secondary,
                custom_id=spec.custom_id(),
            )
        )
        self.spec = spec

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> RerunButton:
        return cls(rerun_from_match(match))

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = interaction.client.get_cog(StylizeCog.__cog_name__)
        if isinstance(cog, StylizeCog):
            await cog.rerun(interaction, self.spec)


def cancel_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


def result_view(
    meta: JobMeta, result: JobResult, settings_size: int, iterations: int, color: str
) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action in ("a", "m", "l"):
        view.add_item(
            RerunButton(
                RerunSpec(
                    action=action,
                    source=meta.source,
                    channel_id=meta.channel_id,
                    message_id=meta.message_id,
                    seed=result.seed,
                    strength=meta.options.strength,
                    size=settings_size,
                    iterations=iterations,
                    color=color,
                )
            )
        )
    return view


# --- the cog ----------------------------------------------------------------------------


class StylizeCog(commands.Cog, name="Stylize"):
    def __init__(
        self,
        bot: commands.Bot,
        *,
        settings: Settings,
        queue: JobQueue,
        pool: EnginePool,
        decoder: DecoderPool | None = None,
        cooldowns: Cooldowns | None = None,
    ) -> None:
        self.bot = bot
        self.settings = settings
        self.queue = queue
        self.pool = pool
        self.caps = Caps(max_size=settings.bot.max_size, max_iterations=settings.bot.max_iterations)
        self.closing = False
        # issue 11: decodes in decoder processes with budgets; validations in progress
        # count against the per-member limit; per-member cooldowns.
        self.decoder = decoder or DecoderPool(
            workers=settings.bot.decode_workers,
            timeout=settings.bot.decode_timeout,
            memory=settings.bot.decode_memory * MiB,
        )
        self.validations = Validations()
        self.cooldowns = cooldowns or Cooldowns(
            {
                "stylize": settings.bot.cooldown_stylize,
                "buttons": settings.bot.cooldown_buttons,
                "queue": settings.bot.cooldown_queue,
            }
        )
        self._followers: set[asyncio.Task[None]] = set()

    async def cog_load(self) -> None:
        self.decoder.warm_up()

    async def cog_unload(self) -> None:
        await self.decoder.close()

    @property
    def prefix(self) -> str:
        return self.settings.bot.command_prefix

    # -- access ----------------------------------------------------------------------

    def refusal(self, user: discord.abc.User, channel: Any) -> str | None:
        """Why this member may not use the bot here (None when they may)."""
        allowed_channels = self.settings.bot.allowed_channels
        if allowed_channels:
            ids = {getattr(channel, "id", 0), getattr(channel, "parent_id", 0)}
            if not ids & set(allowed_channels):
                where = ", ".join(f"<#{c}>" for c in allowed_channels)
                return f"I only paint in {where}."
        allowed_roles = self.settings.bot.allowed_roles
        if allowed_roles:
            roles = {r.id for r in getattr(user, "roles", [])}
            if not roles & set(allowed_roles):
                names = ", ".join(f"<@&{r}>" for r in allowed_roles)
                return f"Only members with one of these roles can use me: {names}."
        return None

    @staticmethod
    def can_cancel(
        job: Job, user: discord.abc.User, permissions: discord.Permissions | None
    ) -> bool:
        return job.user_id == user.id or bool(permissions and permissions.manage_messages)

    # -- commands --------------------------------------------------------------------

    @commands.hybrid_command(
        name="stylize",
        aliases=["stylise"],
        description="Repaint a photo in the style of a painting",
    )
    @app_commands.describe(
        content="The photo to repaint",
        style="The painting whose style you want",
        style2="Another style image to blend in (optional)",
        style3="A third style image (optional)",
    )
    async def stylize(
        self,
        ctx: commands.Context,
        content: discord.Attachment | None = None,
        style: discord.Attachment | None = None,
        style2: discord.Attachment | None = None,
        style3: discord.Attachment | None = None,
        *,
        options: StylizeFlags,
    ) -> None:
        if options.strength and options.strength.strip().lower() == "help":
            await ctx.send(self.help_text(), ephemeral=True)
            return
        if wait := self.cooldowns.retry_after("stylize", ctx.author.id):
            await ctx.send(cooldown_text(wait), ephemeral=True)
            return
        if ctx.interaction is not None:
            await ctx.interaction.response.defer(thinking=True)
            conv: Conversation = InteractionConversation(ctx.interaction)
        else:
            conv = MessageConversation(ctx.message)
        how = f"{self.prefix}stylize" if ctx.interaction is None else "/stylize"
        try:
            job_options = JobOptions(
                strength=parse_strength(options.strength),
                size=options.size,
                iterations=options.iterations,
                color=parse_color(options.color),
                seed=options.seed,
            )
            if ctx.interaction is not None:
                own = [a for a in (content, style, style2, style3) if a is not None]
                inputs = choose_inputs(own, max_styles=self.settings.bot.max_styles, how=how)
                meta = JobMeta(job_options, "r")
            else:
                referenced = await self.referenced_attachments(ctx.message)
                inputs = choose_inputs(
                    ctx.message.attachments,
                    referenced,
                    max_styles=self.settings.bot.max_styles,
                    how=how,
                )
                meta = JobMeta(job_options, "m", ctx.channel.id, ctx.message.id)
        except (OptionError, InputProblem) as e:
            await conv.say(f"⚠️ {e}")
            return
        await self.submit(conv, inputs, meta)

    @commands.hybrid_command(name="queue", description="Show the jobs that are waiting and running")
    async def queue_command(self, ctx: commands.Context) -> None:
        if wait := self.cooldowns.retry_after("queue", ctx.author.id):
            await ctx.send(cooldown_text(wait), ephemeral=True)
            return
        await ctx.send(self.queue_text(), allowed_mentions=discord.AllowedMentions.none())

    @commands.hybrid_command(
        name="cancel", description="Stop your job (moderators can stop any job)"
    )
    @app_commands.describe(
        job="The job id (from the status message); leave out for your latest job"
    )
    async def cancel_command(self, ctx: commands.Context, job: str | None = None) -> None:
        permissions = ctx.channel.permissions_for(ctx.author) if ctx.guild else None  # type: ignore[union-attr]
        await ctx.send(self.cancel_job(ctx.author, permissions, job), ephemeral=True)

    @commands.hybrid_command(name="help", description="How to use stylebot")
    async def help_command(self, ctx: commands.Context) -> None:
        await ctx.send(self.help_text(), ephemeral=True)

    async def cog_check(self, ctx: commands.Context) -> bool:  # type: ignore[override]
        refusal = self.refusal(ctx.author, ctx.channel)
        if refusal:
            raise NotAllowedHere(refusal)
        return True

    async def cog_command_error(self, ctx: commands.Context, error: Exception) -> None:
        """Mistakes in a command's options get a plain answer; bugs get an id and the log."""
        error = getattr(error, "original", error)
        if isinstance(error, NotAllowedHere):
            text = str(error)
        elif isinstance(
            error,
            (
                commands.BadArgument,
                commands.BadFlagArgument,
                commands.MissingFlagArgument,
                commands.TooManyFlags,
                commands.UserInputError,
            ),
        ):
            text = f"⚠️ {plain(error, 300)} — `{self.prefix}stylize help` explains the options."
        else:
            error_id = secrets.token_hex(4)
            log.error("command %s failed (error %s)", ctx.command, error_id, exc_info=error)
            text = f"😞 Sorry — something went wrong on my side (error `{error_id}`)."
        try:
            if ctx.interaction is not None and ctx.interaction.response.is_done():
                await ctx.interaction.edit_original_response(content=text)
            else:
                await ctx.send(text, ephemeral=True)
        except discord.HTTPException:
            log.warning("could not tell %s about a command error", ctx.author)

    # -- texts -----------------------------------------------------------------------

    def help_text(self) -> str:
        p = self.prefix
        base = self.settings.engine.transfer
        size = min(base.size, self.caps.max_size)
        iterations = min(base.iterations, self.caps.max_iterations)
        return (
            "**stylebot repaints a photo in the style of a painting.**\n"
            f"• `{p}stylize` with two images attached: first the photo, then the painting whose style "
            f"you want. Attach up to {self.settings.bot.max_styles} style images to blend them.\n"
            f"• Or reply to a message that has a photo with `{p}stylize` and the style image attached.\n"
            "• Or use `/stylize content:<photo> style:<painting>`.\n"
            "**Options** (text form: "
            f"`{p}stylize strong size:384 color:luminance seed:7`)\n"
            f"• strength — how much style: {', '.join(STRENGTH_STEPS)} (default normal), or a number "
            "(2 = twice normal).\n"
            f"• size — longest side of the result in pixels (default {size}, at most {self.caps.max_size}). "
            "Bigger is slower.\n"
            f"• iterations — how long to work on it (default {iterations}, at most "
            f"{self.caps.max_iterations}). More is slower and more refined.\n"
            "• color — none (the painting's colours), luminance (keep your photo's colours) or "
            "histogram (recolour the painting to your photo's colours first).\n"
            f"• seed — a number from 0 to {SEED_MAX} to repeat a result exactly.\n"
            "**Also**\n"
            f"• `{p}queue` — what is waiting and running.\n"
            f"• `{p}cancel [job id]` — stop your job (people with Manage Messages can stop any job), "
            "or press Cancel on the status message.\n"
            "• Buttons on a result: Again (new seed), More style, Less style. Anyone can press them; "
            "the new job is theirs.\n"
            f"Images: PNG, JPEG, WebP, GIF or BMP, up to "
            f"{format_bytes(self.settings.engine.limits.max_bytes, round_up=False)} and "
            f"{self.settings.engine.limits.max_pixels / 1e6:g} megapixels each."
        )

    def queue_text(self) -> str:
        lines: list[str] = []
        unavailable = self.pool.unavailable
        if unavailable is not None:
            lines.append("⚠️ The painter is out of service (a setup problem on the host's side).")
        elif self.pool.ready_count == 0:
            lines.append("⏳ The painter is warming up.")
        running, waiting = self.queue.running, self.queue.waiting
        if not running and not waiting:
            lines.append(
                f"Nothing is waiting or running. `{self.prefix}stylize help` shows how to start."
            )
            return "\n".join(lines)
        if running:
            lines.append("**Running**")
            for job in running:
                p = job.progress
                pct = f"{int(done_fraction(p) * 100)}%" if p else "starting"
                lines.append(f"▶ `{job.id}` <@{job.user_id}> — {pct} — {short(job.label)}")
        if waiting:
            lines.append(f"**Waiting** ({len(waiting)} of at most {self.queue.max_waiting})")
            for job in waiting[:20]:
                lines.append(f"{job.position}. `{job.id}` <@{job.user_id}> — {short(job.label)}")
            if len(waiting) > 20:
                lines.append(f"… and {len(waiting) - 20} more")
        return "\n".join(lines)[:1990]

    # -- cancel ----------------------------------------------------------------------

    def cancel_job(
        self, user: discord.abc.User, permissions: discord.Permissions | None, job_id: str | None
    ) -> str:
        if job_id:
            job_id = job_id.strip().strip("`").lower()
            job = self.queue.find(job_id)
            if job is None:
                return f"There is no job {plain(job_id, 16)} waiting or running."
        else:
            mine = self.queue.jobs_of(user.id)
            if not mine:
                return "You have no job waiting or running."
            job = max(mine, key=lambda j: j.submitted)
        if not self.can_cancel(job, user, permissions):
            return (
                f"Only the person who asked for job `{job.id}`, or someone with the Manage Messages "
                "permission, can cancel it."
            )
        if job.cancelled_by is not None:
            return f"Job `{job.id}` is already being cancelled."
        name = plain(getattr(user, "display_name", user.name), 40)
        who = "" if job.user_id == user.id else f" by {name}"
        reason = f"Cancelled{who}."
        was_running = job.state == JobState.RUNNING
        self.queue.cancel(job.id, by=user.id, reason=reason)
        log.info(
            "job %s cancelled by %s (%s)", job.id, user.id, "running" if was_running else "waiting"
        )
        return f"Stopping job `{job.id}`." if was_running else f"Cancelled job `{job.id}`."

    async def cancel_button(self, interaction: discord.Interaction, job_id: str) -> None:
        job = self.queue.find(job_id)
        if job is None:
            await interaction.response.send_message(
                f"Job `{job_id}` is not waiting or running any more.", ephemeral=True
            )
            return
        if not self.can_cancel(job, interaction.user, interaction.permissions):
            await interaction.response.send_message(
                f"Only the person who asked for job `{job_id}`, or someone with the Manage Messages "
                "permission, can cancel it.",
                ephemeral=True,
            )
            return
        self.cancel_job(interaction.user, interaction.permissions, job_id)
        await interaction.response.defer()  # the status message itself shows the cancel

    # -- inputs ----------------------------------------------------------------------

    async def referenced_attachments(self, message: discord.Message) -> list[Any]:
        """Attachments of the message `message` replies to ([] when none)."""
        ref = message.reference
        if ref is None or ref.message_id is None:
            return []
        resolved = ref.resolved
        if isinstance(resolved, discord.Message):
            return list(resolved.attachments)
        if isinstance(resolved, discord.DeletedReferencedMessage):
            return []
        try:
            channel = (
                message.channel
                if ref.channel_id in (None, message.channel.id)
                else self.bot.get_channel(ref.channel_id)
            )
            if channel is None:
                return []
            original = await channel.fetch_message(ref.message_id)  # type: ignore[union-attr]
        except discord.HTTPException:
            return []
        return list(original.attachments)

    async def rerun(self, interaction: discord.Interaction, spec: RerunSpec) -> None:
        if wait := self.cooldowns.retry_after("buttons", interaction.user.id):
            await interaction.response.send_message(cooldown_text(wait), ephemeral=True)
            return
        await interaction.response.defer(thinking=True)
        conv = InteractionConversation(interaction)
        refusal = self.refusal(interaction.user, interaction.channel)
        if refusal:
            await conv.say(refusal)
            return
        try:
            if spec.source == "m":
                channel = self.bot.get_channel(spec.channel_id) or await self.bot.fetch_channel(
                    spec.channel_id
                )
                # Never fetch across servers, whatever a custom id says.
                source_guild = getattr(getattr(channel, "guild", None), "id", None)
                if source_guild != getattr(interaction.guild, "id", None):
                    raise PermissionError("the source is in another server")
                source = await channel.fetch_message(spec.message_id)  # type: ignore[union-attr]
                referenced = await self.referenced_attachments(source)
                inputs = choose_inputs(
                    source.attachments, referenced, max_styles=self.settings.bot.max_styles
                )
            else:
                inputs = self.inputs_on_result(interaction.message)
        except discord.NotFound:
            await conv.say(
                "⚠️ I can't find the original message with the images any more (was it deleted?), "
                "so I can't paint it again. Send the images again with `/stylize`."
            )
            return
        except (discord.Forbidden, PermissionError):
            await conv.say(
                "⚠️ I'm not allowed to read the original message any more, so I can't paint it again."
            )
            return
        except InputProblem as e:
            await conv.say(f"⚠️ {e}")
            return
        await self.submit(
            conv,
            inputs,
            JobMeta(spec.next_options(), spec.source, spec.channel_id, spec.message_id),
        )

    @staticmethod
    def inputs_on_result(message: discord.Message | None) -> Inputs:
        attachments = [
            a
            for a in (message.attachments if message else [])
            if a.filename.startswith(INPUT_PREFIX)
        ]
        photos = [_Renamed(a) for a in attachments if a.filename.startswith(f"{INPUT_PREFIX}photo")]
        styles = [_Renamed(a) for a in attachments if a.filename.startswith(f"{INPUT_PREFIX}style")]
        if not photos or not styles:
            raise InputProblem(
                "This result does not carry its input images any more, so I can't paint it "
                "again. Send the images again with `/stylize`."
            )
        return Inputs(
            Candidate(photos[0], label("content", 0, 1, photos[0].filename)),
            tuple(
                Candidate(s, label("style", i, len(styles), s.filename))
                for i, s in enumerate(styles)
            ),
        )

    # -- queueing --------------------------------------------------------------------

    async def submit(self, conv: Conversation, inputs: Inputs, meta: JobMeta) -> Job | None:
        """Validate, queue, acknowledge, and follow the job to its end. None if refused."""
        if self.closing:
            await conv.say(
                "I'm shutting down for now, so I'm not taking new jobs. Please try again later."
            )
            return None
        unavailable = self.pool.unavailable
        if unavailable is not None:
            await conv.say(
                "😞 Sorry — my painter isn't working right now (a setup problem on the host's side, "
                "and the host has been told in the log). Please try again later."
            )
            return None
        try:
            self.queue.check(conv.user.id)  # before downloading anything
            settings, notes = build_settings(self.settings.engine.transfer, meta.options, self.caps)
            with self.validations.claim(
                conv.user.id,
                jobs=len(self.queue.jobs_of(conv.user.id)),
                limit=self.settings.bot.per_user_limit,
            ):
                checked = await read_and_check(
                    inputs,
                    self.settings.engine.limits,
                    sides=JobSides.of(settings),
                    decoder=self.decoder,
                    owner=conv.user.id,
                )
        except (Refused, OptionError, InputProblem) as e:
            await conv.say(f"⚠️ {e}")
            return None
        meta.notes = notes
        meta.names = checked.names
        if meta.source == "r":
            meta.inputs = (checked.content, *checked.styles)
        request = JobRequest(
            new_job_id(),
            checked.content,
            checked.styles,
            settings,
            output_format=self.settings.engine.output.format,
            limits=self.settings.engine.limits,
        )
        job = Job(
            request,
            user_id=conv.user.id,
            channel_id=getattr(conv.channel, "id", 0),
            guild_id=conv.guild.id if conv.guild else 0,
            label=f"{checked.names[0]} in the style of {', '.join(checked.names[1:])}",
        )
        try:
            self.queue.submit(job)
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
        text = status_text(job, warming_up=self.pool.ready_count == 0)
        if notes:
            text += f"\n({'; '.join(notes)})"
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
            return None
        status = StatusMessage(
            handle,
            job,
            self.settings.bot.edit_interval,
            warming_up=lambda: self.pool.ready_count == 0,
        )
        status.start(text)
        task = asyncio.get_running_loop().create_task(
            self.follow(job, conv, status, meta), name=f"follow-{job.id}"
        )
        self._followers.add(task)
        task.add_done_callback(self._followers.discard)
        return job

    async def follow(
        self, job: Job, conv: Conversation, status: StatusMessage, meta: JobMeta
    ) -> None:
        """Wait for the job; then deliver the picture, or say why there is none."""
        try:
            outcome = await job.outcome()
            await status.stop()
            if isinstance(outcome, JobResult):
                if await self.deliver(job, outcome, conv, meta) is None:
                    await status.finish(
                        "😞 Sorry — the picture is too large to upload here, even shrunk "
                        f"(job `{job.id}`)."
                    )
                else:
                    await status.delete()
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
                await status.finish(failure_text(job, outcome))
        except discord.Forbidden as e:
            log.warning(
                "job %s: not allowed to post the result in channel %s (%s); the bot needs the "
                "Send Messages and Attach Files permissions there",
                job.id,
                job.channel_id,
                e.text,
            )
            await status.finish(
                f"⚠️ I'm not allowed to upload the picture here (I need the Attach Files "
                f"permission in this channel). (job `{job.id}`)"
            )
        except Exception:
            log.exception("job %s: could not deliver the outcome", job.id)
            try:
                await status.finish(failure_text(job, JobFailed(job.id, ErrorKind.INTERNAL, "")))
            except Exception:
                log.exception("job %s: could not apologise either", job.id)

    async def deliver(
        self, job: Job, result: JobResult, conv: Conversation, meta: JobMeta
    ) -> discord.Message | None:
        """The result as a reply, in the best encoding that fits the upload limit (None: none fits)."""
        settings = job.request.settings
        extras: list[tuple[str, bytes]] = []
        if meta.source == "r":
            style_side = max(settings.size, round(settings.size * settings.style_scale))
            for i, data in enumerate(meta.inputs):
                name = "photo" if i == 0 else f"style-{i}"
                compact, ext = await asyncio.to_thread(
                    compact_input, data, settings.size if i == 0 else style_side
                )
                extras.append((f"{INPUT_PREFIX}{name}.{ext}", compact))
        limit = conv.filesize_limit
        if extras and max(len(d) for _, d in extras) > limit:
            extras = []  # cannot keep the inputs: no buttons for this one
        view = (
            result_view(meta, result, settings.size, settings.iterations, settings.color)
            if (meta.source == "m" or extras)
            else None
        )
        budget = limit
        encodings = result_encodings(result, quality=self.settings.engine.output.quality)
        while True:
            encoded = await asyncio.to_thread(next, encodings, None)
            if encoded is None:
                log.error("job %s: no encoding fits the upload limit of %d bytes", job.id, budget)
                return None
            if len(encoded.data) > budget:
                continue
            text = self.result_text(
                job, result, conv, meta, encoded.width, encoded.height, encoded.note
            )
            files = [fresh_file(f"stylized-{job.id}.{ext_for(encoded.format)}", encoded.data)]
            # Alt text names the original file; the buttons read it back (inputs_on_result).
            files += [
                fresh_file(name, data, description=f"{INPUT_ALT[i > 0]}: {original}"[:1000])
                for i, ((name, data), original) in enumerate(zip(extras, meta.names, strict=False))
            ]
            try:
                message = await conv.send_result(text, files, view)
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
        what = (
            f"**{short(names[0])}** in the style of "
            + " + ".join(f"**{short(n)}**" for n in names[1:])
            if names
            else "your picture"
        )
        details = [f"{width}×{height}", f"strength {strength_label(meta.options.strength)}"]
        if settings.color != "none":
            details.append(f"colour {settings.color}")
        details += [
            f"seed {result.seed}",
            f"{result.iterations} iterations in {duration(result.elapsed)}",
        ]
        text = f"{conv.user.mention} here is {what}\n{' · '.join(details)}"
        if note:
            text += f" · {note}"
        if meta.notes:
            text += f"\n({'; '.join(meta.notes)})"
        if any(c.ready and c.ready.random_weights for c in self.pool.clients):
            text += "\n(test mode: the painter runs on random weights, so this is not real art)"
        return text[:2000]

    # -- shutdown --------------------------------------------------------------------

    async def wait_for_replies(self, timeout: float = 30.0) -> None:
        """Let every job's final message go out (used on shutdown)."""
        tasks = list(self._followers)
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)


def short(text: str, limit: int = 40) -> str:
    text = discord.utils.escape_markdown(discord.utils.escape_mentions(text))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def ext_for(fmt: str) -> str:
    return {"jpeg": "jpg"}.get(fmt, fmt)


async def setup_cog(
    bot: commands.Bot, *, settings: Settings, queue: JobQueue, pool: EnginePool
) -> StylizeCog:
    cog = StylizeCog(bot, settings=settings, queue=queue, pool=pool)
    await bot.add_cog(cog)
    # The slash form needs the photo and one style; the text form checks that itself (its
    # images may come from the replied-to message), so only the slash schema requires them.
    for name in ("content", "style"):
        parameter = cog.stylize.app_command._params.get(name)  # type: ignore[union-attr]
        if parameter is not None:
            parameter.required = True
    return cog


__all__ = ["CancelButton", "RerunButton", "StylizeCog", "setup_cog"]
