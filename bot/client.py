"""The `commands.Bot` subclass: collaborators in, commands and engines wired in `setup_hook`."""

from __future__ import annotations

import logging

import discord
from discord.ext import commands

from bot.cogs.stylize import CancelButton, RerunButton, StylizeCog, setup_cog
from bot.queue import EnginePool, JobQueue
from bot.settings import Settings
from engine.worker import WorkerOptions

log = logging.getLogger(__name__)

SHUTDOWN_MESSAGE = (
    "The bot is shutting down for now, so this job was stopped. Please try again later."
)


def intents() -> discord.Intents:
    value = discord.Intents.default()
    # Privileged: needed to see the attachments of `!stylize` messages. Enable it under
    # Bot -> Privileged Gateway Intents in the developer portal (see the README).
    value.message_content = True
    value.members = False
    value.presences = False
    return value


class StyleBot(commands.Bot):
    def __init__(
        self,
        *,
        settings: Settings,
        queue: JobQueue,
        pool: EnginePool,
        own_engines: bool = True,
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
        self.queue = queue
        self.pool = pool
        self.own_engines = own_engines  # False when tests share one pool between bots
        self.cog: StylizeCog | None = None
        self._shut_down = False

    async def setup_hook(self) -> None:
        if not self.pool._tasks:
            self.pool.start()  # engines load in the background; jobs wait in the queue meanwhile
        self.cog = await setup_cog(self, settings=self.settings, queue=self.queue, pool=self.pool)
        self.add_dynamic_items(CancelButton, RerunButton)  # buttons survive restarts
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
        """Stop taking jobs, tell waiting members, finish or cancel running jobs, close engines."""
        if self._shut_down:
            return
        self._shut_down = True
        log.info(
            "shutting down: no new jobs; %d waiting, %d running",
            len(self.queue.waiting),
            len(self.queue.running),
        )
        if self.cog is not None:
            self.cog.closing = True
        if self.own_engines:
            await self.pool.stop(grace=self.settings.bot.shutdown_grace, reason=reason)
        if self.cog is not None:
            await self.cog.wait_for_replies(timeout=30)
        await self.close()

    async def close(self) -> None:
        if not self._shut_down and self.own_engines and not self.is_closed():
            # Closed without shutdown() (a fatal gateway error): still end the engines.
            self._shut_down = True
            await self.pool.stop(grace=0, reason=SHUTDOWN_MESSAGE)
        await super().close()


def build_bot(settings: Settings, **options) -> StyleBot:
    """Wire the queue, the engine pool and the bot from settings."""
    queue = JobQueue(
        max_waiting=settings.bot.queue_size, per_user_limit=settings.bot.per_user_limit
    )
    pool = EnginePool(
        queue=queue,
        options=worker_options(settings),
        count=settings.bot.engines,
        start_timeout=settings.bot.engine_start_timeout,
        restart_limit=settings.bot.engine_restart_limit,
        cancel_grace=settings.bot.cancel_grace,
    )
    return StyleBot(settings=settings, queue=queue, pool=pool, **options)


def worker_options(settings: Settings, **overrides) -> WorkerOptions:
    options = {
        "weights": settings.engine.weights,
        "allow_download": settings.bot.allow_download,
        "log_level": settings.bot.log_level,
        "device": settings.engine.transfer.device,
        "network": settings.engine.transfer.network,
    }
    return WorkerOptions(**{**options, **overrides})
