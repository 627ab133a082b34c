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
from bot.community import Community, CommunitySettings, Problem, SqliteCommunity
from bot.conversations import Conversation, InteractionConversation, MessageConversation
from bot.cooldowns import Cooldowns, cooldown_text
from bot.decoder import DecoderPool, MiB
from bot.delivery import Delivery, JobMeta
from bot.i18n import explain, t
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
from bot.server_options import server_caps, server_limit
from bot.settings import Settings
from bot.texts import help_text, no_such_job_text, not_yours_text, queue_text
from bot.validation import InputProblem, Inputs, Validations, choose_inputs

log = logging.getLogger(__name__)


class StylizeFlags(commands.FlagConverter, prefix="", delimiter=":", case_insensitive=True):
    """The options after `!stylize` (`strong size:384 color:luminance seed:7`); slash options
    too. The text form also takes the Japanese words (`強さ:強め サイズ:384 色:写真の色`)."""

    strength: str | None = commands.flag(
        default=None,
        aliases=["強さ"],
        positional=True,
        description="How much style: subtle, normal, strong, extreme, or a number (2 = twice normal)",
    )
    size: int | None = commands.flag(
        default=None, aliases=["サイズ"], description="Longest side of the result in pixels (bigger is slower)"
    )
    iterations: int | None = commands.flag(
        default=None, aliases=["反復回数", "反復"], description="How long to work on it (more is slower and more refined)"
    )
    # A plain string: parse_color reads it, aliases (lum, hist, ...) included.
    color: str | None = commands.flag(
        default=None,
        aliases=["colour", "色"],
        description="none: the painting's colours; luminance: keep the photo's; histogram: recolour the style",
    )
    seed: int | None = commands.flag(
        default=None, aliases=["シード"], description="A number to repeat a result exactly (leave out for a surprise)"
    )
    # A style the server saved (/style save): `!stylize style:monet` in the text form.
    saved: str | None = commands.flag(
        default=None,
        aliases=["style", "スタイル"],
        description="A style this server saved (/style list shows them)",
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
        community: Community | None = None,
    ) -> None:
        self.bot = bot
        self.community = community or Community(SqliteCommunity(":memory:"), CommunitySettings())
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

    def refusal(
        self, user: discord.abc.User, channel: Any, language: str | None = None
    ) -> str | None:
        """Why this member may not use the bot here by the host's config (None: they may)."""
        allowed_channels = self.settings.bot.allowed_channels
        if allowed_channels:
            ids = {getattr(channel, "id", 0), getattr(channel, "parent_id", 0)}
            if not ids & set(allowed_channels):
                where = ", ".join(f"<#{c}>" for c in allowed_channels)
                return t(language, "refused.channels", where=where)
        allowed_roles = self.settings.bot.allowed_roles
        if allowed_roles:
            roles = {r.id for r in getattr(user, "roles", [])}
            if not roles & set(allowed_roles):
                names = ", ".join(f"<@&{r}>" for r in allowed_roles)
                return t(language, "refused.roles", names=names)
        return None

    async def access_problem(
        self, user: discord.abc.User, channel: Any, guild: discord.Guild | None, locale: Any = None
    ) -> str | None:
        """Why this member may not use the bot here (None when they may): DMs as the host
        allows them, then the host's channels and roles, then the server's channels."""
        language = await self.community.language(user, guild, locale)
        if guild is None:
            if not self.community.settings.allow_dms:
                return t(language, "dm.off")
            if self.settings.bot.allowed_roles:
                return t(language, "dm.roles")
            return None
        refusal = self.refusal(user, channel, language)
        if refusal:
            return refusal
        server = await self.community.server(guild.id)
        if server.channels:
            ids = {getattr(channel, "id", 0), getattr(channel, "parent_id", 0)}
            if not ids & set(server.channels):
                where = " ".join(f"<#{c}>" for c in server.channels)
                return t(language, "access.server_channels", where=where)
        return None

    async def language(self, ctx: commands.Context) -> str:
        """The language to answer `ctx` in (bot/i18n.py says in which order it is picked)."""
        return await self.community.language(ctx.author, ctx.guild, _locale(ctx))

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
        # The text form also answers to the Japanese names (the slash form's are localised).
        aliases=["stylise", "画風変換"],
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
        language = await self.language(ctx)
        if options.strength and options.strength.strip().lower() in ("help", "ヘルプ"):
            await ctx.send(help_text(self.settings, self.caps, language), ephemeral=True)
            return
        if wait := self.cooldowns.retry_after("stylize", ctx.author.id):
            await ctx.send(cooldown_text(wait, language), ephemeral=True)
            return
        if ctx.interaction is not None:
            await ctx.interaction.response.defer(thinking=True)
            conv: Conversation = InteractionConversation(ctx.interaction)
        else:
            conv = MessageConversation(ctx.message)
        how = f"{self.prefix}stylize" if ctx.interaction is None else "/stylize"
        server = await self.community.server(ctx.guild.id if ctx.guild else None)
        try:
            job_options = JobOptions(
                strength=(
                    parse_strength(options.strength)
                    if options.strength is not None or server.strength is None
                    else server.strength
                ),
                size=options.size,
                iterations=options.iterations,
                color=parse_color(options.color) or server.color,
                seed=options.seed,
                sample=bool(options.sample),
            )
            if ctx.interaction is not None:
                own = [a for a in (content, style, style2, style3) if a is not None]
                referenced: list[Any] = []
            else:
                own = list(ctx.message.attachments)
                referenced = await referenced_attachments(self.bot, ctx.message)
            if options.saved:
                inputs = await self.saved_style_inputs(ctx, options.saved, own, referenced)
            else:
                inputs = choose_inputs(
                    own, referenced, max_styles=self.settings.bot.max_styles, how=how
                )
            if ctx.interaction is not None or options.saved:
                # The inputs ride on the result (a saved style is in no message of the
                # member's), so its buttons and /history can paint it again.
                meta = JobMeta(job_options, "r")
            else:
                meta = JobMeta(job_options, "m", ctx.channel.id, ctx.message.id)
        except (OptionError, InputProblem) as e:
            await conv.say(f"⚠️ {explain(e, language)}")
            return
        except Problem as e:
            await conv.say("⚠️ " + t(language, e.key, **e.values))
            return
        await self.submit(conv, inputs, meta)

    async def saved_style_inputs(
        self, ctx: commands.Context, name: str, own: list[Any], referenced: list[Any]
    ) -> Inputs:
        """The photo and the server's saved style `name` (never another server's)."""
        from bot.cogs.community import saved_inputs

        if ctx.guild is None:
            raise Problem("dm.server_only")
        saved = await self.community.style(ctx.guild.id, name.strip())
        if saved is None:
            names = [s.name for s in await self.community.styles(ctx.guild.id)]
            raise Problem(
                "styles.unknown",
                name=plain(name, 40),
                names=", ".join(f"`{n}`" for n in names[:15]) or "-",
            )
        return saved_inputs(saved, own, referenced, max_styles=self.settings.bot.max_styles)

    @stylize.autocomplete("saved")
    async def _saved_names(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        cog = self.bot.get_cog("Community")
        if cog is None:
            return []
        choices: list[app_commands.Choice[str]] = await cog.style_choices(interaction, current)  # type: ignore[attr-defined]
        return choices

    @commands.hybrid_command(name="queue", aliases=["順番待ち"], description="Show the jobs that are waiting and running")
    async def queue_command(self, ctx: commands.Context) -> None:
        language = await self.language(ctx)
        if wait := self.cooldowns.retry_after("queue", ctx.author.id):
            await ctx.send(cooldown_text(wait, language), ephemeral=True)
            return
        await ctx.send(
            queue_text(
                self.queue,
                self.broker.runner,
                self.prefix,
                user_id=ctx.author.id,
                guild_id=ctx.guild.id if ctx.guild else 0,
                language=language,
            ),
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @commands.hybrid_command(
        name="cancel",
        aliases=["キャンセル"],
        description="Stop your job (moderators: any job of this server)",
    )
    @app_commands.describe(
        job="The job id (from the status message); leave out for your latest job"
    )
    async def cancel_command(self, ctx: commands.Context, job: str | None = None) -> None:
        permissions = ctx.channel.permissions_for(ctx.author) if ctx.guild else None  # type: ignore[union-attr]
        guild_id = ctx.guild.id if ctx.guild else 0
        language = await self.language(ctx)
        await ctx.send(
            self.cancel_job(ctx.author, guild_id, permissions, job, language), ephemeral=True
        )

    @commands.hybrid_command(name="help", aliases=["ヘルプ"], description="How to use stylebot")
    async def help_command(self, ctx: commands.Context) -> None:
        await ctx.send(help_text(self.settings, self.caps, await self.language(ctx)), ephemeral=True)

    async def cog_check(self, ctx: commands.Context) -> bool:  # type: ignore[override]
        refusal = await self.access_problem(ctx.author, ctx.channel, ctx.guild, _locale(ctx))
        if refusal:
            raise NotAllowedHere(refusal)
        return True

    async def cog_command_error(self, ctx: commands.Context, error: Exception) -> None:
        """Mistakes in a command's options get a plain answer; bugs get an id and the log."""
        error = getattr(error, "original", error)
        language = await self.language(ctx)
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
            text = t(language, "refused.bad_options", detail=plain(error, 300), prefix=self.prefix)
        else:
            error_id = secrets.token_hex(4)
            log.error("command %s failed (error %s)", ctx.command, error_id, exc_info=error)
            text = "😞 " + t(language, "errors.internal", id=error_id)
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
        language: str | None = None,
    ) -> str:
        """Cancel `job_id` (or the member's latest job), asked in `guild_id` (0: a DM).
        Jobs of other servers, and in a DM every job but the member's own, are answered
        as if they did not exist: their ids say nothing to anyone there."""
        if job_id:
            job_id = job_id.strip().strip("`").lower()
            job = self.queue.find(job_id)
            if job is None or not job.visible_to(user.id, guild_id):
                return no_such_job_text(job_id, language)
        else:
            mine = self.queue.jobs_of(user.id)
            if not mine:
                return t(language, "cancel.none")
            job = max(mine, key=lambda j: j.submitted)
        if not self.can_cancel(job, user, guild_id, permissions):
            return not_yours_text(job.id, language)
        if job.cancelled_by is not None:
            return t(language, "cancel.already", id=job.id)
        name = plain(getattr(user, "display_name", user.name), 40)
        # Shown on the job's own status message: in its member's language.
        reason = (
            t(job.language, "cancel.reason")
            if job.user_id == user.id
            else t(job.language, "cancel.reason_by", name=name)
        )
        was_running = job.state == JobState.RUNNING
        self.queue.cancel(job.id, by=user.id, reason=reason)
        log.info(
            "job %s cancelled by %s (%s)", job.id, user.id, "running" if was_running else "waiting"
        )
        return t(language, "cancel.stopping" if was_running else "cancel.cancelled", id=job.id)

    async def cancel_button(self, interaction: discord.Interaction, job_id: str) -> None:
        guild_id = interaction.guild_id or 0
        language = await self.community.language(
            interaction.user, getattr(interaction, "guild", None), getattr(interaction, "locale", None)
        )
        job = self.queue.find(job_id)
        if job is None or not job.visible_to(interaction.user.id, guild_id):
            await interaction.response.send_message(
                t(language, "cancel.gone", id=job_id), ephemeral=True
            )
            return
        if not self.can_cancel(job, interaction.user, guild_id, interaction.permissions):
            await interaction.response.send_message(
                not_yours_text(job_id, language), ephemeral=True
            )
            return
        self.cancel_job(interaction.user, guild_id, interaction.permissions, job_id)
        await interaction.response.defer()  # the status message itself shows the cancel

    # -- inputs ----------------------------------------------------------------------

    async def rerun(self, interaction: discord.Interaction, spec: RerunSpec) -> None:
        """A press of Again, More style or Less style (bot/buttons.py hands it here)."""
        language = await self.community.language(
            interaction.user, interaction.guild, interaction.locale
        )
        if wait := self.cooldowns.retry_after("buttons", interaction.user.id):
            await interaction.response.send_message(cooldown_text(wait, language), ephemeral=True)
            return
        await interaction.response.defer(thinking=True)
        conv = InteractionConversation(interaction)
        refusal = await self.access_problem(
            interaction.user, interaction.channel, interaction.guild, interaction.locale
        )
        if refusal:
            await conv.say(refusal)
            return
        try:
            inputs = await rerun_inputs(
                self.bot, interaction, spec, max_styles=self.settings.bot.max_styles
            )
        except discord.NotFound:
            await conv.say(t(language, "rerun.original_gone"))
            return
        except (discord.Forbidden, PermissionError):
            await conv.say(t(language, "rerun.original_forbidden"))
            return
        except InputProblem as e:
            await conv.say(f"⚠️ {explain(e, language)}")
            return
        init_image = b""
        if spec.action == "u":  # Upscale ×2 starts from this result
            init_image = await result_image(interaction.message)
            if not init_image:
                await conv.say(t(language, "rerun.no_result_image"))
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
        """Queue a job under the caps and the per-member limit of the server it comes from,
        to be followed in its member's language."""
        server = await self.community.server(conv.guild.id if conv.guild else None)
        interaction = getattr(conv, "interaction", None)
        meta.language = await self.community.language(
            conv.user, conv.guild, interaction.locale if interaction is not None else None
        )
        return await self.intake.submit(
            conv,
            inputs,
            meta,
            caps=server_caps(self.settings.bot, server),
            limit=server_limit(self.settings.bot, server),
            init_image=init_image,
        )


async def setup_cog(
    bot: commands.Bot,
    *,
    settings: Settings,
    broker: Broker,
    delivery: Delivery,
    community: Community | None = None,
) -> StylizeCog:
    cog = StylizeCog(bot, settings=settings, broker=broker, delivery=delivery, community=community)
    await bot.add_cog(cog)
    # The slash form needs the photo; the style is an image or a saved style (`saved`).
    # The text form checks that itself (its images may come from the replied-to message).
    parameter = cog.stylize.app_command._params.get("content")  # type: ignore[union-attr]
    if parameter is not None:
        parameter.required = True
    return cog


def _locale(ctx: commands.Context) -> Any:
    return ctx.interaction.locale if ctx.interaction is not None else None


__all__ = ["StylizeCog", "setup_cog"]
