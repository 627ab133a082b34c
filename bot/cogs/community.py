"""Commands for communities: server settings, saved styles, history, a member's language.

`/stylebot settings` (Manage Server) changes what jobs in the server get by default and
at most; `/style save|list|delete` keeps a server's favourite style images; `/history`
lists a member's last results with a button to paint one again with new settings;
`/language` sets the member's own language. Each works as `!name` too. Everything is
kept by `bot.community.Community`, beside the job journal, and survives a restart.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import re
import secrets
import time
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.community import (
    STYLE_NAME_MAX,
    Community,
    HistoryEntry,
    Problem,
    SavedStyle,
    ServerSettings,
    StyleInfo,
    check_style_name,
)
from bot.conversations import InteractionConversation
from bot.delivery import EMBED_COLOUR, JobMeta
from bot.i18n import LANGUAGES, parse_language, t
from bot.inputs import inputs_on_result, referenced_attachments, rerun_inputs
from bot.options import (
    JobOptions,
    OptionError,
    parse_color,
    parse_rerun,
    parse_strength,
    strength_label,
)
from bot.plain import plain
from bot.replies import compact_input
from bot.server_options import (
    changed_settings,
    server_caps,
    server_limit,
    shown_value,
)
from bot.validation import Candidate, InputProblem, Inputs, label, read_and_check

if TYPE_CHECKING:
    from bot.cogs.stylize import StylizeCog

log = logging.getLogger(__name__)

GALLERY_PAGE = 5  # styles per gallery page (one embed with a thumbnail each)
THUMB_SIDE = 160
HISTORY_SHOWN = 10
HISTORY_BUTTONS = 5


def jump_url(guild_id: int, channel_id: int, message_id: int) -> str:
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


class SettingsFlags(commands.FlagConverter, prefix="", delimiter=":", case_insensitive=True):
    """`!stylebot settings size:512 strength:strong channels:#art`; slash options too."""

    channels: str | None = commands.flag(
        default=None, aliases=["channel", "チャンネル"],
        description="Channels stylebot answers in (#art #memes), or all",
    )  # fmt: skip
    strength: str | None = commands.flag(
        default=None, aliases=["強さ"], description="Default strength: subtle, normal, strong, extreme or a number"
    )
    color: str | None = commands.flag(
        default=None, aliases=["colour", "色"], description="Default colour mode: none, luminance or histogram"
    )
    size: str | None = commands.flag(
        default=None, aliases=["サイズ"], description="Largest size members may ask for (px), or default"
    )
    iterations: str | None = commands.flag(
        default=None, aliases=["反復"], description="Most iterations members may ask for, or default"
    )
    limit: str | None = commands.flag(
        default=None, aliases=["上限"], description="Jobs one member may have at once, or default"
    )
    language: str | None = commands.flag(
        default=None, aliases=["言語"], description="The server's language: en or ja, or default"
    )

    def asked(self) -> dict[str, str | None]:
        return {
            "channels": self.channels,
            "strength": self.strength,
            "color": self.color,
            "max_size": self.size,
            "max_iterations": self.iterations,
            "per_user_limit": self.limit,
            "language": self.language,
        }


class _SavedSource:
    """A saved style as an attachment-like input (bot/validation.py)."""

    def __init__(self, style: SavedStyle) -> None:
        self.filename = style.info.name
        self.size = len(style.data)
        self._data = style.data

    async def read(self) -> bytes:
        return self._data


class _ReadOnce:
    """An attachment read once: validated, then stored, from the same bytes."""

    def __init__(self, attachment: Any) -> None:
        self.attachment = attachment
        self.filename = attachment.filename
        self.size = attachment.size
        self.data: bytes | None = None

    async def read(self) -> bytes:
        if self.data is None:
            self.data = await self.attachment.read()
        return self.data


def saved_inputs(
    style: SavedStyle, own: list[Any], referenced: list[Any], *, max_styles: int
) -> Inputs:
    """The photo (the member's first image, else the replied-to message's) and the saved
    style, then any further images of the member's as more styles."""
    if own:
        content, extra = own[0], own[1:]
    elif referenced:
        content, extra = referenced[0], []
    else:
        raise Problem("styles.need_photo", name=style.info.name)
    styles = [_SavedSource(style), *extra]
    if len(styles) > max_styles:
        raise Problem("styles.too_many_images", most=max_styles)
    return Inputs(
        Candidate(content, label("content", 0, 1, content.filename)),
        tuple(
            Candidate(s, label("style", i, len(styles), s.filename)) for i, s in enumerate(styles)
        ),
    )


class CommunityCog(commands.Cog, name="Community"):
    def __init__(self, bot: commands.Bot, *, community: Community, stylize: StylizeCog) -> None:
        self.bot = bot
        self.community = community
        self.stylize = stylize
        self.settings = stylize.settings

    # -- who, where, which language ------------------------------------------------------

    async def language(
        self, user: discord.abc.User, guild: discord.Guild | None, locale: Any = None
    ) -> str:
        return await self.community.language(user, guild, locale)

    async def ctx_language(self, ctx: commands.Context) -> str:
        locale = ctx.interaction.locale if ctx.interaction is not None else None
        return await self.language(ctx.author, ctx.guild, locale)

    async def say(self, ctx: commands.Context, text: str, **kwargs: Any) -> None:
        if ctx.interaction is not None and ctx.interaction.response.is_done():
            await ctx.interaction.followup.send(text, ephemeral=True, **kwargs)
        else:
            await ctx.send(text, ephemeral=True, **kwargs)

    @staticmethod
    def guild_of(ctx: commands.Context) -> discord.Guild:
        if ctx.guild is None:
            raise Problem("dm.server_only")
        return ctx.guild

    async def cog_command_error(self, ctx: commands.Context, error: Exception) -> None:
        while getattr(error, "original", None) is not None:  # hybrid -> app command -> ours
            error = error.original  # type: ignore[attr-defined]
        language = await self.ctx_language(ctx)
        if isinstance(error, Problem):
            text = "⚠️ " + problem_text(language, error)
        elif isinstance(error, commands.CheckFailure) and str(error):
            text = str(error)
        elif isinstance(error, commands.UserInputError):
            text = "⚠️ " + t(language, "errors.bad_options", detail=plain(error, 200))
        else:
            error_id = secrets.token_hex(4)
            log.error("command %s failed (error %s)", ctx.command, error_id, exc_info=error)
            text = "😞 " + t(language, "errors.internal", id=error_id)
        try:
            await self.say(ctx, text)
        except discord.HTTPException:
            log.warning("could not tell %s about a command error", ctx.author)

    async def refuse_here(self, ctx: commands.Context) -> None:
        """The channel rules of the host and of the server, as for !stylize."""
        locale = ctx.interaction.locale if ctx.interaction is not None else None
        refusal = await self.stylize.access_problem(ctx.author, ctx.channel, ctx.guild, locale)
        if refusal:
            raise commands.CheckFailure(refusal)

    # -- /stylebot settings --------------------------------------------------------------

    # The text forms also answer to the Japanese names (the slash forms' are localised).
    @commands.hybrid_group(name="stylebot", description="stylebot for this server")
    async def stylebot_group(self, ctx: commands.Context) -> None:
        if ctx.invoked_subcommand is None:
            await self.show_settings(ctx, None)

    @stylebot_group.command(
        name="settings",
        aliases=["設定"],
        description="Show or change stylebot's settings for this server",
    )
    async def settings_command(self, ctx: commands.Context, *, changes: SettingsFlags) -> None:
        await self.show_settings(ctx, changes.asked())

    async def show_settings(self, ctx: commands.Context, asked: dict[str, str | None] | None) -> None:
        guild = self.guild_of(ctx)
        language = await self.ctx_language(ctx)
        if asked and any(v is not None for v in asked.values()):
            permissions = ctx.permissions
            if not permissions.manage_guild:
                raise Problem("settings.no_rights")
            current = await self.community.server(guild.id)
            new = changed_settings(current, asked, self.settings.bot)
            done = await self.community.update_server(
                guild.id, new, by=ctx.author.id, show=shown_value
            )
            language = await self.ctx_language(ctx)  # the server's language may have changed
            head = (
                t(language, "settings.changed", count=len(done))
                if done
                else t(language, "settings.unchanged")
            )
        else:
            head = t(language, "settings.current")
        server = await self.community.server(guild.id)
        embed = await self.settings_embed(guild, server, language)
        await ctx.send(head, embed=embed, ephemeral=True)

    async def settings_embed(
        self, guild: discord.Guild, server: ServerSettings, language: str
    ) -> discord.Embed:
        host = self.settings.bot
        base = self.settings.engine.transfer
        caps = server_caps(host, server)

        def value(key: str, own: Any, default: str) -> str:
            shown = shown_value(key, own, language)
            return default if shown == "-" else shown

        embed = discord.Embed(
            title=t(language, "settings.title", server=plain(guild.name, 60)),
            colour=EMBED_COLOUR,
            description=t(language, "settings.how"),
        )
        rows = [
            ("channels", server.channels, t(language, "settings.all_channels")),
            ("strength", server.strength, strength_label(1.0, language)),
            ("color", server.color, t(language, f"colour_mode.{base.color}")),
            ("max_size", server.max_size, f"{caps.max_size}"),
            ("max_iterations", server.max_iterations, f"{caps.max_iterations}"),
            ("per_user_limit", server.per_user_limit, f"{server_limit(host, server)}"),
            ("language", server.language, t(language, "settings.auto_language")),
        ]
        for key, own, default in rows:
            if key not in ("channels", "language"):
                default = t(language, "settings.default", value=default)
            embed.add_field(
                name=t(language, f"settings.key.{key}"),
                value=value(key, own, default),
                inline=True,
            )
        changes = await self.community.settings_log(guild.id, 3)
        if changes:
            embed.add_field(
                name=t(language, "settings.recent"),
                value="\n".join(
                    t(
                        language,
                        "settings.change",
                        who=f"<@{c.user_id}>",
                        what=t(language, f"settings.key.{c.key}"),
                        old=c.old,
                        new=c.new,
                        when=f"<t:{int(c.at)}:R>",
                    )
                    for c in changes
                ),
                inline=False,
            )
        embed.set_footer(
            text=t(language, "settings.host_caps", size=host.max_size, iterations=host.max_iterations, limit=host.per_user_limit)
        )
        return embed

    # -- /language -----------------------------------------------------------------------

    @commands.hybrid_command(name="language", aliases=["言語"], description="Choose the language stylebot uses with you")
    @app_commands.describe(language="en, ja, or auto (follow Discord and the server)")
    async def language_command(self, ctx: commands.Context, language: str | None = None) -> None:
        if language is not None:
            word = language.strip().lower()
            if word in ("auto", "default", "自動"):
                await self.community.set_member_language(ctx.author.id, None)
            else:
                code = parse_language(language)
                if code is None:
                    raise Problem(
                        "language.unknown", value=plain(language, 32), choices=", ".join(LANGUAGES)
                    )
                await self.community.set_member_language(ctx.author.id, code)
        now = await self.ctx_language(ctx)
        own = await self.community.member_language(ctx.author.id)
        key = "language.set" if own else "language.auto"
        await ctx.send(t(now, key, name=LANGUAGES[now]), ephemeral=True)

    # -- /style save | list | delete -----------------------------------------------------

    @commands.hybrid_group(name="style", aliases=["スタイル"], description="The server's saved styles")
    async def style_group(self, ctx: commands.Context) -> None:
        if ctx.invoked_subcommand is None:
            await self.show_gallery(ctx)

    @style_group.command(name="save", aliases=["保存"], description="Save a style image for this server")
    @app_commands.describe(
        name=f"A short name (letters, digits, - and _; up to {STYLE_NAME_MAX})",
        image="The painting to save",
    )
    async def style_save(
        self, ctx: commands.Context, name: str, image: discord.Attachment | None = None
    ) -> None:
        guild = self.guild_of(ctx)
        await self.refuse_here(ctx)
        language = await self.ctx_language(ctx)
        name = check_style_name(name)
        if ctx.interaction is not None:
            await ctx.interaction.response.defer(ephemeral=True, thinking=True)
            own = [image] if image is not None else []
        else:
            own = list(ctx.message.attachments)
            if not own:
                own = await referenced_attachments(self.bot, ctx.message)
        if not own:
            raise Problem("styles.no_image")
        if await self.community.style(guild.id, name) is not None:
            raise Problem("styles.exists", name=name)
        source = _ReadOnce(own[0])
        candidate = Candidate(source, label("style", 0, 1, source.filename))
        limits = self.settings.engine.limits
        if source.size > limits.max_bytes:
            raise Problem("styles.file_too_big", name=plain(source.filename, 60), most=f"{limits.max_bytes / 1048576:g}")
        try:
            checked = await read_and_check(
                Inputs(candidate, ()), limits, decoder=self.stylize.decoder, owner=ctx.author.id
            )
        except InputProblem as e:
            log.info("style %r from %s refused: %s", name, ctx.author.id, e)
            raise Problem("styles.not_an_image", name=plain(source.filename, 60)) from None
        data, _ = await asyncio.to_thread(compact_input, checked.content, self.settings.bot.max_size)
        thumb, _ = await asyncio.to_thread(compact_input, checked.content, THUMB_SIDE)
        style = SavedStyle(
            StyleInfo(guild.id, name, ctx.author.id, len(data), time.time()), data, thumb
        )
        await self.community.add_style(style)
        count = len(await self.community.styles(guild.id))
        file = discord.File(io.BytesIO(thumb), filename="thumb.jpg")
        embed = discord.Embed(
            title=name, colour=EMBED_COLOUR, description=t(language, "styles.use_it", name=name)
        ).set_thumbnail(url="attachment://thumb.jpg")
        await self.say(
            ctx,
            t(language, "styles.saved", name=name, count=count, most=self.community.settings.max_saved_styles),
            embed=embed,
            file=file,
        )

    @style_group.command(name="list", aliases=["一覧"], description="Show the server's saved styles")
    async def style_list(self, ctx: commands.Context) -> None:
        await self.show_gallery(ctx)

    async def show_gallery(self, ctx: commands.Context) -> None:
        guild = self.guild_of(ctx)
        await self.refuse_here(ctx)
        language = await self.ctx_language(ctx)
        content, embeds, files, view = await self.gallery_page(guild.id, 0, language)
        await ctx.send(content, embeds=embeds, files=files, view=view)

    @style_group.command(name="delete", aliases=["削除"], description="Delete a saved style (its saver or a moderator)")
    @app_commands.describe(name="The style's name")
    async def style_delete(self, ctx: commands.Context, name: str) -> None:
        guild = self.guild_of(ctx)
        language = await self.ctx_language(ctx)
        style = await self.community.style(guild.id, name.strip())
        if style is None:
            raise Problem("styles.unknown", name=plain(name, 40), names=await self.style_names(guild.id))
        permissions = ctx.permissions
        if style.info.user_id != ctx.author.id and not (
            permissions.manage_messages or permissions.manage_guild
        ):
            raise Problem("styles.not_yours", name=style.info.name, saver=f"<@{style.info.user_id}>")
        await self.community.delete_style(guild.id, style.info.name)
        log.info("server %s: style %r deleted by %s", guild.id, style.info.name, ctx.author.id)
        await ctx.send(t(language, "styles.deleted", name=style.info.name), ephemeral=True)

    @style_delete.autocomplete("name")
    async def _delete_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self.style_choices(interaction, current)

    async def style_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        """Saved styles of the interaction's server whose name contains `current` (25 at most)."""
        if interaction.guild is None:
            return []
        styles = await self.community.styles(interaction.guild.id)
        needle = current.casefold()
        return [
            app_commands.Choice(name=s.name, value=s.name)
            for s in styles
            if needle in s.name.casefold()
        ][:25]

    async def style_names(self, guild_id: int) -> str:
        names = [s.name for s in await self.community.styles(guild_id)]
        return ", ".join(f"`{n}`" for n in names[:15]) or "-"

    async def gallery_page(
        self, guild_id: int, page: int, language: str
    ) -> tuple[str, list[discord.Embed], list[discord.File], discord.ui.View | None]:
        styles = await self.community.styles(guild_id)
        if not styles:
            return t(language, "styles.none"), [], [], None
        pages = math.ceil(len(styles) / GALLERY_PAGE)
        page = max(0, min(page, pages - 1))
        shown = styles[page * GALLERY_PAGE : (page + 1) * GALLERY_PAGE]
        embeds, files = [], []
        for i, info in enumerate(shown):
            saved = await self.community.style(guild_id, info.name)
            if saved is None:
                continue
            name = f"style-{i}.jpg"
            files.append(discord.File(io.BytesIO(saved.thumb), filename=name))
            embeds.append(
                discord.Embed(
                    title=info.name,
                    colour=EMBED_COLOUR,
                    description=t(language, "styles.card", saver=f"<@{info.user_id}>", when=f"<t:{int(info.created)}:d>"),
                ).set_thumbnail(url=f"attachment://{name}")
            )
        content = t(
            language,
            "styles.gallery",
            count=len(styles),
            page=page + 1,
            pages=pages,
            names=", ".join(f"`{s.name}`" for s in shown),
        )
        view = gallery_view(page, pages, language) if pages > 1 else None
        return content, embeds, files, view

    async def gallery_button(self, interaction: discord.Interaction, page: int) -> None:
        if interaction.guild is None:
            return
        language = await self.language(interaction.user, interaction.guild, interaction.locale)
        content, embeds, files, view = await self.gallery_page(interaction.guild.id, page, language)
        await interaction.response.edit_message(
            content=content, embeds=embeds, attachments=files, view=view
        )

    # -- /history --------------------------------------------------------------------------

    @commands.hybrid_command(name="history", aliases=["履歴"], description="Your last results here, to see or paint again")
    @app_commands.describe(action="show (the default) or delete (forget your history here)")
    @app_commands.choices(
        action=[app_commands.Choice(name="show", value="show"), app_commands.Choice(name="delete", value="delete")]
    )
    async def history_command(self, ctx: commands.Context, action: str = "show") -> None:
        language = await self.ctx_language(ctx)
        guild_id = ctx.guild.id if ctx.guild else 0
        if action.strip().lower() in ("delete", "clear", "削除"):
            count = await self.community.delete_history(guild_id, ctx.author.id)
            await ctx.send(t(language, "history.deleted", count=count), ephemeral=True)
            return
        text, view = await self.history_page(guild_id, ctx.author.id, language)
        await ctx.send(text, view=view, ephemeral=True)

    async def history_page(
        self, guild_id: int, user_id: int, language: str
    ) -> tuple[str, discord.ui.View | None]:
        entries = (await self.community.history(guild_id, user_id))[:HISTORY_SHOWN]
        if not entries:
            return t(language, "history.empty"), None
        lines = [t(language, "history.title", count=len(entries), days=f"{self.community.settings.history_days:g}")]
        for i, e in enumerate(entries, 1):
            lines.append(
                t(
                    language,
                    "history.line",
                    n=i,
                    what=" × ".join(plain(n, 30) for n in e.names) or "?",
                    strength=strength_label(e.strength, language),
                    size=e.size,
                    iterations=e.iterations,
                    color=t(language, f"colour_mode.{e.color}"),
                    seed=e.seed,
                    when=f"<t:{int(e.created)}:R>",
                    link=jump_url(e.guild_id, e.channel_id, e.message_id),
                )
            )
        view = discord.ui.View(timeout=None)
        for i, e in enumerate(entries[:HISTORY_BUTTONS], 1):
            view.add_item(HistoryRerunButton(e.id, i, language))
        view.add_item(HistoryDeleteButton(language))
        return "\n".join(lines)[:2000], view

    async def history_entry(self, interaction: discord.Interaction, entry_id: int) -> HistoryEntry | None:
        guild_id = interaction.guild.id if interaction.guild else 0
        for entry in await self.community.history(guild_id, interaction.user.id):
            if entry.id == entry_id:
                return entry
        return None

    async def history_rerun_button(self, interaction: discord.Interaction, entry_id: int) -> None:
        language = await self.language(interaction.user, interaction.guild, interaction.locale)
        entry = await self.history_entry(interaction, entry_id)
        if entry is None:
            await interaction.response.send_message(t(language, "history.gone"), ephemeral=True)
            return
        await interaction.response.send_modal(RerunModal(self, entry, language))

    async def history_delete_button(self, interaction: discord.Interaction) -> None:
        language = await self.language(interaction.user, interaction.guild, interaction.locale)
        guild_id = interaction.guild.id if interaction.guild else 0
        count = await self.community.delete_history(guild_id, interaction.user.id)
        await interaction.response.edit_message(
            content=t(language, "history.deleted", count=count), view=None
        )

    async def rerun_entry(
        self, interaction: discord.Interaction, entry: HistoryEntry, options: JobOptions, language: str
    ) -> None:
        """Paint a history entry again with `options`, from the inputs its result keeps
        (or the member's message it came from)."""
        await interaction.response.defer(thinking=True)
        conv = InteractionConversation(interaction)
        refusal = await self.stylize.access_problem(
            interaction.user, interaction.channel, interaction.guild, interaction.locale
        )
        if refusal:
            await conv.say(refusal)
            return
        try:
            channel = self.bot.get_channel(entry.channel_id) or await self.bot.fetch_channel(entry.channel_id)
            result = await channel.fetch_message(entry.message_id)  # type: ignore[union-attr]
            spec = next(
                (s for s in map(parse_rerun, _custom_ids(result)) if s is not None), None
            )
            if spec is not None and spec.source == "m":
                inputs = await rerun_inputs(
                    self.bot, interaction, spec, max_styles=self.settings.bot.max_styles
                )
            else:
                inputs = inputs_on_result(result)
        except (discord.NotFound, discord.Forbidden, PermissionError, InputProblem):
            await conv.say("⚠️ " + t(language, "history.inputs_gone"))
            return
        source = spec.source if spec is not None else "r"
        meta = JobMeta(
            options,
            source,
            spec.channel_id if spec else 0,
            spec.message_id if spec else 0,
        )
        await self.stylize.submit(conv, inputs, meta)


def problem_text(language: str, problem: Problem) -> str:
    values = dict(problem.values)
    if "what" in values:  # a setting's key: its name in the member's language
        values["what"] = t(language, f"settings.key.{values['what']}")
    return t(language, problem.key, **values)


def _custom_ids(message: discord.Message) -> list[str]:
    ids = []
    for row in message.components:
        for child in getattr(row, "children", []):
            custom_id = getattr(child, "custom_id", None)
            if custom_id:
                ids.append(custom_id)
    return ids


# --- buttons and the re-run form ---------------------------------------------------------------


def _community(interaction: discord.Interaction) -> CommunityCog | None:
    cog = interaction.client.get_cog("Community")  # type: ignore[attr-defined]
    return cog if isinstance(cog, CommunityCog) else None


class GalleryButton(discord.ui.DynamicItem[discord.ui.Button], template=r"sb:styles:(?P<page>\d+):(?P<dir>[pn])"):
    def __init__(self, page: int, direction: str, language: str = "en", disabled: bool = False) -> None:
        key = "styles.previous" if direction == "p" else "styles.next"
        super().__init__(
            discord.ui.Button(
                label=t(language, key),
                emoji="◀️" if direction == "p" else "▶️",
                style=discord.ButtonStyle.secondary,
                custom_id=f"sb:styles:{page}:{direction}",
                disabled=disabled,
            )
        )
        self.page = page

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> GalleryButton:
        return cls(int(match["page"]), match["dir"])

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = _community(interaction)
        if cog is not None:
            await cog.gallery_button(interaction, self.page)


def gallery_view(page: int, pages: int, language: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(GalleryButton(max(page - 1, 0), "p", language, disabled=page == 0))
    view.add_item(GalleryButton(min(page + 1, pages - 1), "n", language, disabled=page >= pages - 1))
    return view


class HistoryRerunButton(discord.ui.DynamicItem[discord.ui.Button], template=r"sb:hist:run:(?P<id>\d+):(?P<n>\d+)"):
    def __init__(self, entry_id: int, number: int, language: str = "en") -> None:
        super().__init__(
            discord.ui.Button(
                label=t(language, "history.again", n=number),
                emoji="🔁",
                style=discord.ButtonStyle.primary,
                custom_id=f"sb:hist:run:{entry_id}:{number}",
            )
        )
        self.entry_id = entry_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> HistoryRerunButton:
        return cls(int(match["id"]), int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = _community(interaction)
        if cog is not None:
            await cog.history_rerun_button(interaction, self.entry_id)


class HistoryDeleteButton(discord.ui.DynamicItem[discord.ui.Button], template=r"sb:hist:delete"):
    def __init__(self, language: str = "en") -> None:
        super().__init__(
            discord.ui.Button(
                label=t(language, "history.delete"),
                emoji="🗑️",
                style=discord.ButtonStyle.danger,
                custom_id="sb:hist:delete",
            )
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> HistoryDeleteButton:
        return cls()

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = _community(interaction)
        if cog is not None:
            await cog.history_delete_button(interaction)


class RerunModal(discord.ui.Modal):
    """The settings of a history entry, to change before painting it again."""

    def __init__(self, cog: CommunityCog, entry: HistoryEntry, language: str) -> None:
        super().__init__(title=t(language, "history.form_title")[:45], custom_id=f"sb:histform:{entry.id}")
        self.cog, self.entry, self.language = cog, entry, language

        def field(key: str, value: str) -> discord.ui.TextInput[RerunModal]:
            item: discord.ui.TextInput[RerunModal] = discord.ui.TextInput(
                label=t(language, f"history.field.{key}")[:45],
                default=value,
                required=False,
                max_length=32,
                custom_id=key,
            )
            self.add_item(item)
            return item

        # Prefilled in the member's words, which the parsers read back (強め, 写真の色).
        self.strength = field("strength", strength_label(entry.strength, language))
        self.size = field("size", str(entry.size))
        self.iterations = field("iterations", str(entry.iterations))
        self.color = field("color", t(language, f"colour_mode.{entry.color}"))
        self.seed = field("seed", "")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        try:
            options = JobOptions(
                strength=parse_strength(self.strength.value or None),
                size=_number(self.size.value),
                iterations=_number(self.iterations.value),
                color=parse_color(self.color.value or None),
                seed=_number(self.seed.value),
            )
        except (OptionError, ValueError):
            await interaction.response.send_message(
                "⚠️ " + t(self.language, "history.bad_form"), ephemeral=True
            )
            return
        await self.cog.rerun_entry(interaction, self.entry, options, self.language)


def _number(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text else None


COMMUNITY_BUTTONS = (GalleryButton, HistoryRerunButton, HistoryDeleteButton)


__all__ = ["COMMUNITY_BUTTONS", "CommunityCog", "server_caps", "server_limit"]
