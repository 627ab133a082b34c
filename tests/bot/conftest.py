"""Shared helpers and fixtures for the bot's tests.

End-to-end tests run the real bot (discord.py) against tests/bot/fake_discord.py and
the real engine process (random weights, tiny images). Starting an engine costs a few
seconds (TensorFlow), so each e2e module shares one `EnginePool` between its tests
(module-scoped, on a module-scoped event loop) and gives every test a fresh fake
Discord and a fresh bot (`own_engines=False`, so closing a bot leaves the engine up).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest_asyncio
from PIL import Image

from bot.broker import Broker, JobQueue
from bot.broker.journal import Journal
from bot.broker.local import engine_pool, local_queue
from bot.client import StyleBot
from bot.pool import EnginePool
from bot.settings import Secret, Settings, bot_settings, queue_settings
from engine.config import deep_merge, engine_config, load_raw

from .fake_discord import FakeDiscord

# One output size for every e2e test: the engine traces its step once per shape. 48 keeps
# the 48x36 photos at their size, above engine.jobs.MIN_IMAGE_SIDE on the short side.
SIZE = 48


def make_settings(
    bot: dict[str, Any] | None = None,
    engine: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
    queue: dict[str, Any] | None = None,
) -> Settings:
    raw = deep_merge(
        load_raw(None),
        {
            "engine": {
                "size": SIZE,
                "iterations": 4,
                "preview_every": 1,
                "preview_size": 32,
                **(engine or {}),
            },
            "weights": {"source": "random", "random_seed": 0},
            "limits": dict(limits or {}),
            "bot": {
                "edit_interval": 0.5,
                "sync_commands": True,
                "log_level": "WARNING",
                "engine_start_timeout": 120.0,
                "cancel_grace": 10.0,
                "shutdown_grace": 0.0,
                # Tests send commands faster than people; the cooldown tests set their own.
                "cooldown_stylize": 0.0,
                "cooldown_buttons": 0.0,
                "cooldown_queue": 0.0,
                **(bot or {}),
            },
        },
    )
    return Settings(
        bot=bot_settings(raw),
        engine=engine_config(raw),
        token=Secret("fake-token"),
        queue=queue_settings(deep_merge(raw, {"queue": dict(queue or {})})),
    )


def png(width: int = 48, height: int = 36, seed: int = 0, *, fmt: str = "PNG") -> bytes:
    """A small photo-like image: smooth gradients plus a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([255 * x / width, 255 * y / height, 128 + 60 * np.sin(x / 3 + seed)], -1)
    rgb = np.clip(rgb + rng.normal(0, 8, rgb.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt)
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def make_pool(settings: Settings, **overrides: Any) -> tuple[JobQueue, EnginePool]:
    queue = local_queue(settings)
    return queue, engine_pool(settings, queue, backoff=(0.1,), **overrides)


def memory_broker(queue: JobQueue, pool: EnginePool) -> Broker:
    """A broker over a shared queue and pool with a journal in memory (no restarts)."""
    return Broker(queue=queue, runner=pool, journal=Journal(":memory:"))


def shared_bot(settings: Settings, queue: JobQueue, pool: EnginePool, **options: Any) -> StyleBot:
    return StyleBot(
        settings=settings, broker=memory_broker(queue, pool), own_engines=False, **options
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engines() -> AsyncIterator[tuple[JobQueue, EnginePool]]:
    """One real engine process for the whole module, warm before the first test."""
    settings = make_settings()
    queue, pool = make_pool(settings)
    pool.start()
    await pool.wait_ready(120)
    yield queue, pool
    await pool.stop(grace=0)


class Harness:
    """A fake Discord with a bot connected to it, plus shortcuts used by the e2e tests."""

    def __init__(self, fake: FakeDiscord, bot: StyleBot) -> None:
        self.fake = fake
        self.bot = bot

    async def idle(self, timeout: float = 30.0) -> None:
        """Wait until no job is waiting or running and every reply has gone out."""
        try:
            async with asyncio.timeout(timeout):
                while self.bot.queue.waiting or self.bot.queue.running:
                    await asyncio.sleep(0.02)
                if self.bot.cog is not None:
                    await self.bot.delivery.wait(timeout)
        except TimeoutError:
            raise AssertionError(
                f"jobs still busy after {timeout} s: waiting {self.bot.queue.waiting}, "
                f"running {self.bot.queue.running}\n{self.fake.transcript(gateway=True)}"
            ) from None


@contextlib.asynccontextmanager
async def connected(
    engines: tuple[JobQueue, EnginePool], settings: Settings | None = None, **fake_options: Any
) -> AsyncIterator[Harness]:
    queue, pool = engines
    settings = settings or make_settings()
    # The queue's limits come from the settings of the test, the engine from the module.
    queue.max_waiting, queue.per_user_limit = settings.bot.queue_size, settings.bot.per_user_limit
    async with FakeDiscord(**fake_options) as fake:
        bot = shared_bot(settings, queue, pool)
        async with fake.running(bot, token=settings.token.reveal()):
            harness = Harness(fake, bot)
            try:
                yield harness
            except BaseException:
                for job in queue.waiting + queue.running:  # leave the shared engine clean
                    queue.cancel(job.id, by=0, reason="test cleanup")
                with contextlib.suppress(BaseException):
                    await harness.idle()
                raise
            await harness.idle()
