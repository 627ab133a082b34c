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

import logging
import secrets
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.broker import Broker, Job, JobState
from bot.conversations import Conversation, InteractionConversation, MessageConversation
from bot.cooldowns import Cooldowns, cooldown_text
from bot.decoder import DecoderPool, MiB
from bot.delivery import Delivery, JobMeta
from bot.inputs import referenced_attachments, rerun_inputs, result_image
from bot.intake import Intake
from bot.options import (
    Caps,
    JobOptions,
    OptionError,
    RerunSpec,
    parse_color,
    parse_strength,
)
from bot.plain import plain
from bot.settings import Settings
from bot.texts import help_text, no_such_job_text, not_yours_text, queue_text
from bot.validation import InputProblem, Inputs, Validations, choose_inputs

log = logging.getLogger(__name__)


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
    sample: bool | None = commands.flag(
        default=None,
        description="For a long or large GIF: yes = keep fewer frames / pixels instead of refusing",
    )


class NotAllowedHere(commands.CheckFailure):
    """The channel or the member's roles are not allowed by the host's config."""


# --- the cog ----------------------------------------------------------------------------


class StylizeCog(commands.Cog, name="Stylize"):
    def __init__(
        self,
        bot: commands.Bot,
        *,
        settings: Settings,
        broker: Broker,
        delivery: Delivery,
        decoder: DecoderPool | None = None,
        cooldowns: Cooldowns | None = None,
    ) -> None:
        self.bot = bot
        self.settings = settings
        self.broker = broker
        self.queue = broker.queue
        self.delivery = delivery
        self.caps = Caps(max_size=settings.bot.max_size, max_iterations=settings.bot.max_iterations)
        # issue 11: decodes in decoder processes with budgets; validations in progress
        # count against the per-member limit; per-member cooldowns.
        self.decoder = decoder or DecoderPool(
            workers=settings.bot.decode_workers,
            timeout=settings.bot.decode_timeout,
            memory=settings.bot.decode_memory * MiB,
        )
        self.cooldowns = cooldowns or Cooldowns(
            {
                "stylize": settings.bot.cooldown_stylize,
                "buttons": settings.bot.cooldown_buttons,
                "queue": settings.bot.cooldown_queue,
            }
        )
        self.intake = Intake(
            settings=settings,
            broker=broker,
            delivery=delivery,
            caps=self.caps,
            decoder=self.decoder,
            validations=Validations(),
        )

    async def cog_load(self) -> None:
        self.decoder.warm_up()

    async def cog_unload(self) -> None:
        # Also on SIGTERM: StyleBot.shutdown -> close -> commands.Bot.close removes the cogs.
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
        job: Job, user: discord.abc.User, guild_id: int, permissions: discord.Permissions | None
    ) -> bool:
        """The member's own job, or Manage Messages inside the job's own server."""
        moderator = bool(permissions and permissions.manage_messages)
        return job.cancellable_by(user.id, guild_id, moderator=moderator)

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
            await ctx.send(help_text(self.settings, self.caps), ephemeral=True)
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
                sample=bool(options.sample),
            )
            if ctx.interaction is not None:
                own = [a for a in (content, style, style2, style3) if a is not None]
                inputs = choose_inputs(own, max_styles=self.settings.bot.max_styles, how=how)
                meta = JobMeta(job_options, "r")
            else:
                referenced = await referenced_attachments(self.bot, ctx.message)
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
        await ctx.send(
            queue_text(
                self.queue,
                self.broker.runner,
                self.prefix,
                user_id=ctx.author.id,
                guild_id=ctx.guild.id if ctx.guild else 0,
            ),
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @commands.hybrid_command(
        name="cancel", description="Stop your job (moderators: any job of this server)"
    )
    @app_commands.describe(
        job="The job id (from the status message); leave out for your latest job"
    )
    async def cancel_command(self, ctx: commands.Context, job: str | None = None) -> None:
        permissions = ctx.channel.permissions_for(ctx.author) if ctx.guild else None  # type: ignore[union-attr]
        guild_id = ctx.guild.id if ctx.guild else 0
        await ctx.send(self.cancel_job(ctx.author, guild_id, permissions, job), ephemeral=True)

    @commands.hybrid_command(name="help", description="How to use stylebot")
    async def help_command(self, ctx: commands.Context) -> None:
        await ctx.send(help_text(self.settings, self.caps), ephemeral=True)

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

    # -- cancel ----------------------------------------------------------------------

    def cancel_job(
        self,
        user: discord.abc.User,
        guild_id: int,
        permissions: discord.Permissions | None,
        job_id: str | None,
    ) -> str:
        """Cancel `job_id` (or the member's latest job), asked in `guild_id` (0: a DM).
        Jobs of other servers, and in a DM every job but the member's own, are answered
        as if they did not exist: their ids say nothing to anyone there."""
        if job_id:
            job_id = job_id.strip().strip("`").lower()
            job = self.queue.find(job_id)
            if job is None or not job.visible_to(user.id, guild_id):
                return no_such_job_text(job_id)
        else:
            mine = self.queue.jobs_of(user.id)
            if not mine:
                return "You have no job waiting or running."
            job = max(mine, key=lambda j: j.submitted)
        if not self.can_cancel(job, user, guild_id, permissions):
            return not_yours_text(job.id)
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
        guild_id = interaction.guild_id or 0
        job = self.queue.find(job_id)
        if job is None or not job.visible_to(interaction.user.id, guild_id):
            await interaction.response.send_message(
                f"Job `{job_id}` is not waiting or running any more.", ephemeral=True
            )
            return
        if not self.can_cancel(job, interaction.user, guild_id, interaction.permissions):
            await interaction.response.send_message(not_yours_text(job_id), ephemeral=True)
            return
        self.cancel_job(interaction.user, guild_id, interaction.permissions, job_id)
        await interaction.response.defer()  # the status message itself shows the cancel

    # -- inputs ----------------------------------------------------------------------

    async def rerun(self, interaction: discord.Interaction, spec: RerunSpec) -> None:
        """A press of Again, More style or Less style (bot/buttons.py hands it here)."""
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
            inputs = await rerun_inputs(
                self.bot, interaction, spec, max_styles=self.settings.bot.max_styles
            )
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
        init_image = b""
        if spec.action == "u":  # Upscale ×2 starts from this result
            init_image = await result_image(interaction.message)
            if not init_image:
                await conv.say(
                    "⚠️ I can't read this result's picture any more, so I can't upscale it. "
                    "Press Again, or send the images again."
                )
                return
        await self.submit(
            conv,
            inputs,
            JobMeta(spec.next_options(), spec.source, spec.channel_id, spec.message_id),
            init_image=init_image,
        )

    async def submit(
        self, conv: Conversation, inputs: Inputs, meta: JobMeta, *, init_image: bytes = b""
    ) -> Job | None:
        return await self.intake.submit(conv, inputs, meta, init_image=init_image)


async def setup_cog(
    bot: commands.Bot, *, settings: Settings, broker: Broker, delivery: Delivery
) -> StylizeCog:
    cog = StylizeCog(bot, settings=settings, broker=broker, delivery=delivery)
    await bot.add_cog(cog)
    # The slash form needs the photo and one style; the text form checks that itself (its
    # images may come from the replied-to message), so only the slash schema requires them.
    for name in ("content", "style"):
        parameter = cog.stylize.app_command._params.get(name)  # type: ignore[union-attr]
        if parameter is not None:
            parameter.required = True
    return cog


__all__ = ["StylizeCog", "setup_cog"]
