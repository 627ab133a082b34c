"""Starting and stopping: SIGTERM shuts down cleanly; an engine that cannot start is reported.

Real engine processes; each test owns its pool because shutting down closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing.process
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from bot.__main__ import EXIT_OK, run
from bot.broker import Broker
from bot.broker.journal import Journal
from bot.client import StyleBot, build_bot
from engine.config import WeightsSettings

from .conftest import connected, make_pool, make_settings, png
from .fake_discord import FakeDiscord

pytestmark = [pytest.mark.timeout(120)]

PHOTO = ("photo.png", png(48, 36, seed=1))
STYLE = ("starry.png", png(36, 48, seed=2))


@contextlib.contextmanager
def blocking_calls_on_this_thread(threshold: float = 0.02) -> Iterator[list[str]]:
    """Record process joins, thread joins, subprocess waits and sleeps that block this
    thread (the event loop's) for more than `threshold` seconds."""
    loop_thread = threading.get_ident()
    blocked: list[str] = []
    originals = {
        (multiprocessing.process.BaseProcess, "join"): multiprocessing.process.BaseProcess.join,
        (threading.Thread, "join"): threading.Thread.join,
        (subprocess.Popen, "wait"): subprocess.Popen.wait,
    }

    def watched(name: str, fn: Callable[..., object]) -> Callable[..., object]:
        def call(*args: object, **kwargs: object) -> object:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                took = time.perf_counter() - started
                if threading.get_ident() == loop_thread and took > threshold:
                    blocked.append(f"{name} {took * 1000:.0f} ms")

        return call

    real_sleep = time.sleep
    for (owner, attr), fn in originals.items():
        setattr(owner, attr, watched(f"{owner.__name__}.{attr}", fn))
    time.sleep = watched("time.sleep", real_sleep)  # type: ignore[assignment]
    try:
        yield blocked
    finally:
        for (owner, attr), fn in originals.items():
            setattr(owner, attr, fn)
        time.sleep = real_sleep


async def test_sigterm_stops_taking_jobs_tells_users_and_exits_0(tmp_path):
    settings = make_settings(bot={"shutdown_grace": 0.5}, queue={"data_dir": str(tmp_path)})
    bots: list[StyleBot] = []

    def factory(s):
        bots.append(build_bot(s, guild_ready_timeout=0.05))
        return bots[0]

    async with FakeDiscord() as fake:
        with fake.patch_discord():
            runner = asyncio.create_task(run(settings, bot_factory=factory))
            async with asyncio.timeout(60):
                while not bots or not bots[0].is_ready():
                    await asyncio.sleep(0.02)
            bot = bots[0]
            await bot.pool.wait_ready(60)
            await fake.send_message("!stylize iterations:1000", attachments=[PHOTO, STYLE])
            async with asyncio.timeout(60):
                while not (bot.queue.running and bot.queue.running[0].progress):
                    await asyncio.sleep(0.01)
            bob_cmd = await fake.send_message(
                "!stylize", attachments=[PHOTO, STYLE], author=fake.bob
            )
            await fake.wait_for_bot_message(lambda m: m.reference_id == bob_cmd.id, timeout=10)
            engine = bot.pool.clients[0].process

            # Issue 11, item 7: the stop takes under 8 s (docker kills at 10) and the event
            # loop never blocks meanwhile (it stalled 503 ms closing the engine). Wall-clock
            # lag is printed, but on a loaded machine it is the scheduler's as much as ours
            # (the loop is shared with the fake Discord, two cores with the engine busy): the
            # test checks that nothing waits on a process, thread or sleep on the loop's
            # thread, and only a gross stall of the wall clock.
            lags: list[float] = []

            async def sample() -> None:
                while True:
                    before = time.perf_counter()
                    await asyncio.sleep(0.005)
                    lags.append(time.perf_counter() - before - 0.005)

            sampler = asyncio.create_task(sample())
            asked = time.perf_counter()
            with blocking_calls_on_this_thread() as blocked:
                os.kill(os.getpid(), signal.SIGTERM)
                assert await asyncio.wait_for(runner, 60) == EXIT_OK
            took = time.perf_counter() - asked
            sampler.cancel()
            print(f"\nSIGTERM -> exit: {took:.2f} s; max loop lag {max(lags) * 1000:.0f} ms")
            assert took < 8.0, took
            assert not blocked, f"blocking calls on the event loop while stopping: {blocked}"
            assert max(lags) < 1.5, f"the event loop stalled {max(lags) * 1000:.0f} ms"

        finals = [m.content for m in fake.bot_messages()]
        assert sum("restarting" in text for text in finals) == 2, finals  # running and waiting
        assert bot.is_closed() and not engine.is_alive()
        # Neither job was dropped: both wait in the journal for the next start.
        pending = Journal(tmp_path / "jobs.sqlite3").pending()
        assert len(pending) == 2 and all(e.outcome is None for e in pending)


async def test_weights_problem_is_reported_clearly_and_not_restarted(caplog):
    settings = make_settings()
    queue, pool = make_pool(settings, weights=WeightsSettings(source="/nonexistent/vgg19.h5"))
    caplog.set_level(logging.ERROR)
    async with connected((queue, pool), settings) as h:
        fake = h.fake
        async with asyncio.timeout(60):
            while pool.unavailable is None:
                await asyncio.sleep(0.05)
        await fake.send_message("!stylize", attachments=[PHOTO, STYLE])
        reply = await fake.wait_for_bot_message()
        assert "my painter isn't working right now" in reply.content and not queue.waiting
        await fake.send_message("!queue")
        listing = await fake.wait_for_bot_message(lambda m: "out of service" in m.content)
        assert listing
    await pool.stop(grace=0, reason="test over")
    assert pool.restarts == 0
    assert "vgg19.h5" in caplog.text and "out of service" in caplog.text


async def run_against(
    fake: FakeDiscord, settings, token: str = "fake-token"
) -> tuple[int, list[StyleBot]]:
    bots: list[StyleBot] = []

    def factory(s):
        queue, pool = make_pool(s, engine_factory="tests.bot.fake_engine:make_engine")
        broker = Broker(queue=queue, runner=pool, journal=Journal(":memory:"))
        bots.append(StyleBot(settings=s, broker=broker, guild_ready_timeout=0.05))
        return bots[0]

    with fake.patch_discord():
        code = await asyncio.wait_for(run(settings, bot_factory=factory), 30)
    return code, bots


async def test_a_rejected_token_exits_1_with_advice(capsys):
    async with FakeDiscord(token="the-right-token") as fake:
        code, bots = await run_against(fake, make_settings())
    assert code == 1 and "Discord rejected the token" in capsys.readouterr().err
    assert bots[0].is_closed()


async def test_missing_message_content_intent_exits_1_with_advice(capsys):
    async with FakeDiscord(allow_privileged_intents=False) as fake:
        code, bots = await run_against(fake, make_settings())
    err = capsys.readouterr().err
    assert code == 1 and "MESSAGE CONTENT INTENT" in err
    assert all(c.process is None or not c.process.is_alive() for c in bots[0].pool.clients)
