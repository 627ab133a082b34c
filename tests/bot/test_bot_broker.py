"""The broker's parts without Discord: the wire format, the SQLite journal, the fair order,
and a restart of the broker itself (a journal re-opened from its file)."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

from bot.broker import Broker, Job, JobQueue, JobState
from bot.broker.journal import Journal
from bot.broker.queue import fair_order
from engine.jobs import (
    ErrorKind,
    JobFailed,
    JobRequest,
    JobResult,
    Progress,
    TransferSettings,
    from_wire,
    to_wire,
)

pytestmark = pytest.mark.timeout(60)


def request(job_id: str = "0000aaaa") -> JobRequest:
    settings = TransferSettings(size=48, iterations=3, seed=7, style_blend=(0.5, 0.5))
    return JobRequest(job_id, b"\x89PNG photo", (b"style one", b"style two"), settings)


def job(job_id: str, guild: int, user: int, seq: int) -> Job:
    return Job(request(job_id), user_id=user, guild_id=guild, seq=seq)


# --- the wire format ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        request(),
        JobResult("0000aaaa", b"\x89PNG result", "png", 48, 36, 1.5, 7, 3, 0.25),
        JobFailed("0000aaaa", ErrorKind.BAD_INPUT, "The photo is broken.", "trace"),
        Progress(2, 3, {"total": 1.5, "style": 0.5}, 0.3, b"preview", job_id="0000aaaa"),
        # Issue 14: an Upscale job's starting image, an animation's frames and progress.
        JobRequest("0000bbbb", b"GIF89a", (b"style",), init_image=b"\x89PNG result", sample=True),
        JobResult("0000bbbb", b"GIF89a out", "gif", 48, 36, 1.5, 7, 3, 0.25, frames=6),
        Progress(2, 18, {"total": 1.5}, 0.3, None, job_id="0000bbbb", frame=1, frames=6),
    ],
)
def test_every_message_survives_the_wire(message):
    data = to_wire(message)
    assert from_wire(data) == message
    assert b"pickle" not in data and data.startswith(b"SB1")
    header = data[7 : 7 + int.from_bytes(data[3:7], "big")]
    assert json.loads(header)["type"] == type(message).__name__  # plain JSON, then the bytes


def test_wire_refuses_what_it_did_not_write():
    with pytest.raises(ValueError):
        from_wire(b"\x80\x04pickled")


# --- the journal --------------------------------------------------------------------------


def test_journal_keeps_jobs_until_delivered(tmp_path):
    path = tmp_path / "data" / "jobs.sqlite3"
    journal = Journal(path)
    meta = {"source": "m", "names": ["a.png", "b.png"]}
    seq = journal.add(request(), guild_id=1, channel_id=2, user_id=3, label="a in b", meta=meta)
    journal.set_status_message("0000aaaa", 2, 99)
    journal.set_state("0000aaaa", "running")
    journal.close()

    again = Journal(path)  # as after a restart
    [entry] = again.pending()
    assert (entry.seq, entry.request, entry.meta, entry.status_message_id) == (seq, request(), meta, 99)
    assert entry.state == "running" and entry.outcome is None
    result = JobResult("0000aaaa", b"img", "png", 48, 36, 1.0, 7, 3, 0.1)
    again.answer("0000aaaa", "done", result)
    again.answer("0000aaaa", "failed", JobFailed("0000aaaa", ErrorKind.INTERNAL, "late"))
    assert again.pending()[0].outcome == result, "the first answer stays"
    again.mark_delivered("0000aaaa")
    assert again.pending() == [] and again.delivered("0000aaaa")
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    row = sqlite3.connect(path).execute("SELECT request, outcome FROM jobs").fetchone()
    assert row == (None, None), "a delivered job keeps no images"


# --- the fair order -----------------------------------------------------------------------


def test_fair_order_round_robins_servers_then_members():
    # Server 1 floods (members 10 and 11), server 2 has one job, submitted last.
    jobs = [
        job("a1", 1, 10, 1), job("a2", 1, 10, 2), job("a3", 1, 10, 3),
        job("b1", 1, 11, 4), job("c1", 2, 20, 5),
    ]  # fmt: skip
    order = [j.id for j in fair_order(jobs, {})]
    assert order == ["a1", "c1", "b1", "a2", "a3"]
    # Server 1 just had a turn: server 2 goes first now.
    order = [j.id for j in fair_order(jobs, {1: 5, (1, 10): 5})]
    assert order[:3] == ["c1", "b1", "a1"]


async def test_queue_positions_follow_the_fair_order():
    queue = JobQueue(max_waiting=10, per_user_limit=5)
    flood = [job(f"f{i}", 1, 10 + i % 2, 0) for i in range(4)]
    for j in flood:
        queue.submit(j)
    first = await queue.get()
    late = job("other", 2, 20, 0)
    queue.submit(late)
    assert first.guild_id == 1 and late.position == 1, "the other server's job is next"
    assert (await queue.get()) is late


# --- the broker ---------------------------------------------------------------------------


class IdleRunner:
    """A runner that runs nothing: the queue keeps what the broker gives it."""

    ready_count = 0
    unavailable = None
    random_weights = False
    waiting_note = ""

    def adopt(self, job, state) -> bool:
        return False

    def start(self) -> None:
        pass

    async def stop(self, *, grace: float, reason: str) -> None:
        pass

    async def abandon(self) -> None:
        pass


async def test_broker_resumes_unanswered_jobs_and_answers_once(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    queue = JobQueue(max_waiting=10, per_user_limit=5)
    broker = Broker(queue=queue, runner=IdleRunner(), journal=Journal(path))
    jobs = [Job(request(f"0000000{i}"), user_id=i, guild_id=1) for i in range(3)]
    for j in jobs:
        await broker.submit(j, {"source": "m"})
    running = await queue.get()
    queue.done(running, JobResult(running.id, b"img", "png", 48, 36, 1.0, 7, 3, 0.1))
    await broker.detach("restarting")

    queue2 = JobQueue(max_waiting=10, per_user_limit=5)
    broker2 = Broker(queue=queue2, runner=IdleRunner(), journal=Journal(path))
    resumed = {job.id: job for job, _ in await broker2.resume()}
    assert set(resumed) == {j.id for j in jobs}
    assert resumed[running.id].state == JobState.DONE, "answered while down: post it"
    assert [j.id for j in queue2.waiting] == [jobs[1].id, jobs[2].id]
    assert all(j.resumed for j in queue2.waiting) and queue2.waiting[0].position == 1
    await broker2.delivered(resumed[running.id])
    await asyncio.sleep(0)
    assert running.id not in {e.id for e in Journal(path).pending()}


@pytest.mark.parametrize("shards, sharded, count", [(1, False, None), (2, True, 2), ("auto", True, None)])
def test_shards_setting_picks_the_auto_sharded_bot(tmp_path, shards, sharded, count):
    from discord.ext import commands

    from bot.client import build_bot

    from .conftest import make_settings

    settings = make_settings(bot={"shards": shards}, queue={"data_dir": str(tmp_path)})
    bot = build_bot(settings)
    assert isinstance(bot, commands.AutoShardedBot) == sharded
    assert bot.shard_count == count
    assert (tmp_path / "jobs.sqlite3").exists()


def test_redis_settings_keep_the_password_out_of_logs_and_want_a_redis_url():
    from bot.settings import QueueSettings
    from engine.jobs import redis_where

    assert redis_where("rediss://:s3cret@cache.example:6380/2") == "rediss://cache.example:6380/2"
    assert "s3cret" not in redis_where("redis://user:s3cret@h/0")
    with pytest.raises(ValueError, match="redis://"):
        QueueSettings(backend="redis", redis_url="http://cache.example")
    with pytest.raises(ValueError, match="backend"):
        QueueSettings(backend="kafka")
