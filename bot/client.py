"""The `commands.Bot` subclass: collaborators in, commands and engines wired in `setup_hook`."""

from __future__ import annotations

import asyncio
import logging

import discord
from discord.ext import commands

from bot.broker import Broker
from bot.broker.local import local_broker
from bot.buttons import ALL_BUTTONS
from bot.cogs.community import COMMUNITY_BUTTONS, CommunityCog
from bot.cogs.stylize import StylizeCog, setup_cog
from bot.community import Community, HistoryEntry, store_beside
from bot.delivery import Delivery
from bot.settings import Settings
from bot.translator import CatalogueTranslator

log = logging.getLogger(__name__)

SHUTDOWN_MESSAGE = "The bot is restarting; this job keeps its place."
RESTART_NOTE_BUDGET = 5.0  # seconds for the "restarting" edits (docker's stop grace is 10)


def intents() -> discord.Intents:
    value = discord.Intents.default()
    # Privileged: needed to see the attachments of `!stylize` messages. Enable it under
    # Bot -> Privileged Gateway Intents in the developer portal (see the README).
    value.message_content = True
    value.members = False
    value.presences = False
    return value


SERVER_ONLY_COMMANDS = ("stylebot", "style")  # a server's settings and saved styles


def offer_in_dms(tree: discord.app_commands.CommandTree, allow_dms: bool) -> None:
    """Which slash commands Discord offers in a DM with the bot: none with `[community]
    allow_dms = false`, else all but the server-only ones."""
    for command in tree.get_commands():
        command.allowed_contexts = discord.app_commands.AppCommandContext(
            guild=True,
            dm_channel=allow_dms and command.name not in SERVER_ONLY_COMMANDS,
            private_channel=False,
        )


class StyleBot(commands.Bot):
    def __init__(
        self,
        *,
        settings: Settings,
        broker: Broker,
        own_engines: bool = True,
        community: Community | None = None,
        **options,
    ) -> None:
        # The bot never joins voice: no warnings about missing voice libraries at start.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        super().__init__(
            command_prefix=commands.when_mentioned_or(settings.bot.command_prefix),
            intents=intents(),
            # Nothing the bot says pings anyone unless a send opts in (the result pings its
            # member); @everyone and roles never.
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
            **options,
        )
        self.settings = settings
        self.broker = broker
        self.delivery = Delivery(broker=broker, settings=settings)
        # Server settings, saved styles, history: beside the journal (its SQLite file or Redis).
        self.community = community or Community(store_beside(broker.journal), settings.community)
        self.delivery.on_result = self.remember_result
        self.own_engines = own_engines  # False when tests share one pool between bots
        self.cog: StylizeCog | None = None
        self._shut_down = False

    @property
    def queue(self):
        return self.broker.queue

    @property
    def pool(self):
        return self.broker.runner

    async def setup_hook(self) -> None:
        self.cog = await setup_cog(
            self,
            settings=self.settings,
            broker=self.broker,
            delivery=self.delivery,
            community=self.community,
        )
        await self.add_cog(CommunityCog(self, community=self.community, stylize=self.cog))
        self.add_dynamic_items(*ALL_BUTTONS, *COMMUNITY_BUTTONS)  # buttons survive restarts
        offer_in_dms(self.tree, self.community.settings.allow_dms)
        # Names and descriptions in each member's language (bot/locales/*.toml).
        await self.tree.set_translator(CatalogueTranslator())
        # Before the gateway connects, so no new command can arrive first: the REST calls
        # that re-attach the status messages work once logged in, which we are here.
        resumed = await self.delivery.resume(self)
        if resumed:
            log.info("resumed %d job(s) from before the restart", resumed)
        # Only now: the runner must know which jobs are already with a worker before it
        # hands out more. Engines load in the background; jobs wait in the queue meanwhile.
        self.broker.start()
        if self.settings.bot.sync_commands:
            await self.sync_commands()

    async def sync_commands(self) -> None:
        guild_id = self.settings.bot.sync_guild
        try:
            if guild_id:
                guild = discord.Object(guild_id)
                self.tree.copy_global_to(guild=guild)
                synced = await self.tree.sync(guild=guild)
                log.info("synced %d slash commands to guild %s", len(synced), guild_id)
            else:
                synced = await self.tree.sync()
                log.info(
                    "synced %d slash commands globally (they can take up to an hour to appear)",
                    len(synced),
                )
        except discord.HTTPException as e:
            log.warning(
                "could not sync slash commands (%s %s): invite the bot with the "
                "applications.commands scope (see the README); text commands still work",
                e.status,
                e.text,
            )

    async def remember_result(self, job, result, meta, message: discord.Message) -> None:
        """A posted result goes into its member's history (`/history`)."""
        settings = job.request.settings
        await self.community.add_history(
            HistoryEntry(
                guild_id=job.guild_id,
                user_id=job.user_id,
                job_id=job.id,
                channel_id=message.channel.id,
                message_id=message.id,
                names=tuple(meta.names),
                strength=meta.options.strength,
                size=settings.size,
                iterations=settings.iterations,
                color=settings.color,
                seed=result.seed,
                elapsed=result.elapsed,
            )
        )

    async def on_ready(self) -> None:
        log.info(
            "logged in as %s (id %s) in %d server(s); prefix %r",
            self.user,
            getattr(self.user, "id", "?"),
            len(self.guilds),
            self.settings.bot.command_prefix,
        )

    async def on_command_error(self, ctx: commands.Context, error: Exception) -> None:  # type: ignore[override]
        # The cog answers its own commands' errors; "!something-else" is not ours to answer.
        if isinstance(error, commands.CommandNotFound) or (
            ctx.cog is not None and ctx.cog.has_error_handler()
        ):
            return
        log.error("command %s failed", ctx.command, exc_info=error)

    async def shutdown(self, *, reason: str = SHUTDOWN_MESSAGE) -> None:
        """SIGTERM: stop taking jobs, tell each status message the bot is restarting, end
        the engines (in threads) and close, keeping every job in the journal for the next
        start. About 5 s at most, under docker's 10-s stop grace."""
        if self._shut_down:
            return
        self._shut_down = True
        log.info(
            "restarting: no new jobs; %d waiting and %d running stay in the journal",
            len(self.queue.waiting),
            len(self.queue.running),
        )
        if self.cog is not None:
            self.cog.intake.closing = True
        # The notes and the engines' end run side by side: under load, or with Discord's
        # edit rate limits, the notes can take seconds, and the 8-s budget is for both.
        ending = [self.delivery.restarting(timeout=RESTART_NOTE_BUDGET)]
        if self.own_engines:
            ending.append(self.broker.detach(reason))
        await asyncio.gather(*ending)
        await self.close()

    async def close(self) -> None:
        if not self._shut_down and self.own_engines and not self.is_closed():
            # Closed without shutdown() (a fatal gateway error): still end the engines.
            self._shut_down = True
            await self.broker.detach(reason=SHUTDOWN_MESSAGE)
        await super().close()
        self.community.close()


class ShardedStyleBot(StyleBot, commands.AutoShardedBot):
    """The same bot on several gateway connections (Discord requires it from 2,500 servers)."""


def build_bot(settings: Settings, **options) -> StyleBot:
    """Wire the broker and the bot from settings; `[bot] shards` picks the class."""
    shards = settings.bot.shards
    if shards == 1:
        return StyleBot(settings=settings, broker=build_broker(settings), **options)
    count = None if shards == "auto" else int(shards)
    return ShardedStyleBot(
        settings=settings, broker=build_broker(settings), shard_count=count, **options
    )


def build_broker(settings: Settings) -> Broker:
    """`[queue] backend`: the SQLite journal and local engines, or Redis and remote workers."""
    if settings.queue.backend == "redis":
        from bot.broker.remote import redis_broker

        return redis_broker(settings)
    return local_broker(settings)
