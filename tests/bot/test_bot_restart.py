"""Restart means resume: the bot killed (SIGKILL) or stopped (SIGTERM) with 1 job running
and 5 waiting, then started again: every job is answered exactly once (five pictures and
one job cancelled with its Cancel button after the restart), and each status message is
picked up again. The bot runs in its own process against the fake Discord,
with the real engine (random weights, 48 px) and its journal in a temporary folder; with
the redis backend, against a real redis-server and one remote worker process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.secrecy import engine_environment
from engine.config import PROJECT_ROOT
from engine.remote_worker import PASSWORD_ENV

from .conftest import png
from .fake_discord import FakeDiscord, FakeMessage
from .redis_server import RedisServer, redis_server_or_skip

pytestmark = [pytest.mark.timeout(300)]

PHOTO = ("photo.png", png(48, 36, seed=1))
STYLE = ("starry.png", png(36, 48, seed=2))
CONFIG = """
[engine]
size = 48
iterations = 4
preview_every = 1
preview_size = 32
[weights]
source = "random"
[bot]
edit_interval = 0.5
sync_commands = false
per_user_limit = 6
log_level = "INFO"
cooldown_stylize = 0.0
cooldown_buttons = 0.0
cooldown_queue = 0.0
[queue]
data_dir = "{data}"
{queue}"""
REDIS_QUEUE = 'backend = "redis"\nredis_url = "{url}"\nredis_prefix = "restart"\n'



def start_bot(
    fake: FakeDiscord, tmp_path: Path, log_name: str, queue: str = ""
) -> subprocess.Popen:
    config = tmp_path / "stylebot.toml"
    config.write_text(CONFIG.format(data=tmp_path / "data", queue=queue))
    env = {
        **os.environ,
        "STYLEBOT_CONFIG": str(config),
        "DISCORD_TOKEN": "fake-token",
        "FAKE_DISCORD_URL": fake.base_url,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.bot.bot_process"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / log_name, "wb"),  # noqa: SIM115 - the child owns it
    )


def is_result(message: FakeMessage) -> bool:
    return any(name.startswith("stylized-") for name in message.filenames)


def status_of(fake: FakeDiscord, command: FakeMessage) -> FakeMessage | None:
    """The job's status message (deleted ones too: a status goes once the result is up)."""
    return next(
        (
            m
            for m in fake.messages.values()
            if m.author_id == fake.bot_user.id and m.reference_id == command.id and not is_result(m)
        ),
        None,
    )


def texts(message: FakeMessage) -> list[str]:
    return [e["content"] for e in message.edits] + [message.content]


async def until(check, timeout: float, what: str, fake: FakeDiscord, logs: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.1)
    log_text = "\n".join(p.read_text(errors="replace")[-3000:] for p in logs.glob("bot-*.log"))
    raise AssertionError(f"timed out waiting for {what}\n{fake.transcript()}\n{log_text}")


def start_worker(url: str, tmp_path: Path) -> subprocess.Popen:
    """A remote worker with the real engine on random weights."""
    return subprocess.Popen(
        [sys.executable, "-m", "engine.worker", "--broker", url, "--prefix", "restart",
         "--weights", "random", "--dead-after", "3"],
        cwd=PROJECT_ROOT,
        env=engine_environment(os.environ, keep=[PASSWORD_ENV]),  # no token; its password
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "bot-worker.log", "wb"),  # noqa: SIM115 - the child owns it
    )  # fmt: skip


@pytest.mark.parametrize(
    "backend, how",
    [("local", signal.SIGKILL), ("local", signal.SIGTERM), ("redis", signal.SIGKILL)],
    ids=["local-sigkill", "local-sigterm", "redis-sigkill"],
)
async def test_jobs_survive_a_restart_and_are_answered_exactly_once(tmp_path, backend, how):
    queue, worker, server = "", None, None
    if backend == "redis":
        server = RedisServer(redis_server_or_skip(), tmp_path)
        server.start()
        queue = REDIS_QUEUE.format(url=server.url)
        worker = start_worker(server.url, tmp_path)
    async with FakeDiscord() as fake:
        bot = start_bot(fake, tmp_path, "bot-1.log", queue)
        try:
            await fake.wait_connected(60)
            members = [fake.alice, fake.bob, fake.mod, fake.owner]
            first = await fake.send_message("!stylize iterations:150", attachments=[PHOTO, STYLE])
            await until(
                lambda: (s := status_of(fake, first)) and "Painting" in s.content,
                120, "the first job to run", fake, tmp_path,
            )  # fmt: skip
            commands = [first]
            for i in range(5):
                commands.append(
                    await fake.send_message(
                        "!stylize", attachments=[PHOTO, STYLE], author=members[i % len(members)]
                    )
                )
            await until(
                lambda: all(status_of(fake, c) for c in commands), 30, "5 acks", fake, tmp_path
            )
            assert not [m for m in fake.bot_messages() if is_result(m)]
            stopped = time.monotonic()
            bot.send_signal(how)
            code = await asyncio.to_thread(bot.wait, 30)
            took = time.monotonic() - stopped
            if how == signal.SIGTERM:
                assert code == 0 and took < 8, (code, took)
                await until(
                    lambda: all("restarting" in status_of(fake, c).content for c in commands),
                    5, "restarting notes", fake, tmp_path,
                )  # fmt: skip
            bot = start_bot(fake, tmp_path, "bot-2.log", queue)
            # The Cancel button of a job queued before the restart still works after it.
            last = status_of(fake, commands[-1])
            await until(
                lambda: "Resumed after a restart" in last.content, 120, "resume", fake, tmp_path
            )
            # The bot re-attaches before it connects to the gateway: wait for it to be there.
            await until(
                lambda: any(c.ready and not c.ws.closed for c in fake.gateway_connections),
                60, "the gateway connection", fake, tmp_path,
            )  # fmt: skip
            await fake.click_button(last, last.custom_ids[0], user=commands[-1].author)
            await until(lambda: "Cancelled" in last.content, 30, "the cancel", fake, tmp_path)
            await until(
                lambda: len([m for m in fake.bot_messages() if is_result(m)]) >= 5,
                180, "5 results", fake, tmp_path,
            )  # fmt: skip
            await asyncio.sleep(2)  # a doubled answer would come now
        finally:
            bot.send_signal(signal.SIGTERM)
            await asyncio.to_thread(bot.wait, 30)
            for process in (worker, server and server.process):
                if process is not None and process.poll() is None:
                    process.terminate()
                    await asyncio.to_thread(process.wait, 30)
        results = [m for m in fake.bot_messages() if is_result(m)]
        assert sorted(m.reference_id for m in results) == sorted(c.id for c in commands[:5])
        statuses = [status_of(fake, c) for c in commands]
        assert all(s is not None and s.deleted for s in statuses[:5]), "one status, then cleaned up"
        assert statuses[5].content.startswith("🛑 Cancelled") and not statuses[5].deleted
        # Every waiting job's status message was picked up again after the restart (the
        # first job, which was running, may have started again before the edit).
        resumed = [s for s in statuses if any("Resumed after a restart" in t for t in texts(s))]
        assert len(resumed) >= 4, [texts(s) for s in statuses]
        assert len(fake.bot_messages()) == 6, "no stray messages: five results, one cancel"
        if os.environ.get("STYLEBOT_RESTART_TRANSCRIPT"):
            Path(os.environ["STYLEBOT_RESTART_TRANSCRIPT"]).write_text(fake.transcript())
