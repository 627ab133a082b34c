"""Issue 11, item 2: server boundaries. A moderator's rights count only inside the job's
own server; in a DM a member sees and cancels only their own jobs; `queue` shows other
servers' jobs only as counts. The cancel command, the Cancel button and the queue
listing share these rules, and the queue (bot/broker/queue.py) is the same for the
local and the Redis backend, so they hold on both."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import discord
import pytest

from bot.broker import Broker, Job, JobQueue, JobState
from bot.broker.journal import Journal
from bot.cogs.stylize import StylizeCog
from bot.delivery import Delivery
from bot.texts import queue_text
from engine.jobs import JobRequest

from .conftest import make_settings

SERVER_A, SERVER_B = 111, 222
ALICE, BOB, MOD_B = 1, 2, 3  # alice and bob post in server A; MOD_B moderates server B
MODERATOR = discord.Permissions(manage_messages=True)
MEMBER = discord.Permissions.none()


class Runner:
    ready_count = 1
    unavailable = None
    random_weights = False
    waiting_note = ""
    retrying = False

    def adopt(self, job, state):
        return False

    def start(self):
        pass

    async def stop(self, *, grace, reason):
        pass

    async def abandon(self):
        pass


def user(uid: int, name: str = "someone"):
    return SimpleNamespace(id=uid, name=name, display_name=name)


def job(job_id: str, uid: int, guild: int, label: str) -> Job:
    return Job(JobRequest(job_id, b"", ()), user_id=uid, guild_id=guild, label=label)


@pytest.fixture
async def cog():
    queue = JobQueue(max_waiting=10, per_user_limit=5)
    broker = Broker(queue=queue, runner=Runner(), journal=Journal(":memory:"))
    settings = make_settings()
    cog = StylizeCog(
        None, settings=settings, broker=broker, delivery=Delivery(broker=broker, settings=settings)
    )
    queue.submit(job("aaaa0001", ALICE, SERVER_A, "alice-secret-photo.png"))
    queue.submit(job("bbbb0002", BOB, SERVER_A, "bob-holiday.png"))
    queue.submit(job("cccc0003", MOD_B, SERVER_B, "mod-cat.png"))
    running = await queue.get()  # alice's job runs
    assert running.id == "aaaa0001"
    yield cog
    await cog.decoder.close()


def cancelled(cog, job_id: str) -> bool:
    found = cog.queue.find(job_id)
    return found is None or found.cancelled_by is not None


async def test_a_moderator_of_another_server_cannot_cancel_here(cog):
    answer = cog.cancel_job(user(MOD_B), SERVER_B, MODERATOR, "bbbb0002")
    assert "There is no job" in answer and not cancelled(cog, "bbbb0002")
    answer = cog.cancel_job(user(MOD_B), SERVER_B, MODERATOR, "aaaa0001")
    assert "There is no job" in answer and not cancelled(cog, "aaaa0001")
    # Inside server A, a member without Manage Messages is told who can.
    answer = cog.cancel_job(user(BOB), SERVER_A, MEMBER, "aaaa0001")
    assert "Manage Messages" in answer and not cancelled(cog, "aaaa0001")


async def test_a_moderator_inside_the_jobs_own_server_can_cancel(cog):
    answer = cog.cancel_job(user(MOD_B, "mod"), SERVER_A, MODERATOR, "bbbb0002")
    assert answer == "Cancelled job `bbbb0002`." and cog.queue.find("bbbb0002") is None


async def test_in_a_dm_a_member_sees_and_cancels_only_their_own_jobs(cog):
    # Permissions in a DM are None (the command) or an empty set (a button): neither
    # gives rights over anyone else's job, and the answer does not tell that it exists.
    for permissions in (None, MODERATOR):
        answer = cog.cancel_job(user(MOD_B), 0, permissions, "bbbb0002")
        assert "There is no job" in answer and not cancelled(cog, "bbbb0002")
    answer = cog.cancel_job(user(BOB), 0, None, "bbbb0002")
    assert answer == "Cancelled job `bbbb0002`."
    answer = cog.cancel_job(user(MOD_B), 0, None, None)  # their latest: their own
    assert answer == "Cancelled job `cccc0003`."


async def test_the_cancel_button_follows_the_same_rules(cog):
    answers = []

    class Response:
        async def send_message(self, text, **kwargs):
            answers.append(text)

        async def defer(self):
            answers.append("deferred")

    def press(uid, guild, permissions):
        return SimpleNamespace(
            user=user(uid), guild_id=guild, permissions=permissions, response=Response()
        )

    await cog.cancel_button(press(MOD_B, SERVER_B, MODERATOR), "bbbb0002")
    await cog.cancel_button(press(MOD_B, None, MODERATOR), "aaaa0001")
    assert not cancelled(cog, "bbbb0002") and not cancelled(cog, "aaaa0001")
    assert all("not waiting or running" in a for a in answers)
    await cog.cancel_button(press(MOD_B, SERVER_A, MODERATOR), "bbbb0002")
    assert answers[-1] == "deferred" and cog.queue.find("bbbb0002") is None


async def test_queue_lists_other_servers_jobs_only_as_counts(cog):
    runner = Runner()
    in_b = queue_text(cog.queue, runner, "!", user_id=MOD_B, guild_id=SERVER_B)
    assert "mod-cat.png" in in_b and "cccc0003" in in_b  # their own server's job
    for secret in ("alice", "bob", "<@1>", "<@2>", "aaaa0001", "bbbb0002"):
        assert secret not in in_b
    assert "Elsewhere (other servers and DMs): 1 running and 1 waiting." in in_b
    in_a = queue_text(cog.queue, runner, "!", user_id=BOB, guild_id=SERVER_A)
    assert "alice-secret-photo.png" in in_a and "bob-holiday.png" in in_a
    assert "mod-cat" not in in_a and "<@3>" not in in_a and "1 waiting." in in_a
    in_dm = queue_text(cog.queue, runner, "!", user_id=BOB, guild_id=0)
    assert "bob-holiday.png" in in_dm and "alice" not in in_dm and "<@1>" not in in_dm
    assert "1 running and 1 waiting." in in_dm
    assert cog.queue.find("aaaa0001").state == JobState.RUNNING
    await asyncio.sleep(0)
