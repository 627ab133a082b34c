"""The redis backend against a real redis-server and real worker processes
(`python -m engine.worker --broker ...`, the fake engine of tests/bot/fake_engine.py so
that a job can be told to crash its worker). The bot side is the real Broker with the
Redis journal and runner; Discord is not involved (the restart tests cover that).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_asyncio
import redis
import redis.asyncio

from bot.broker import Broker, Job, JobState
from bot.broker.local import local_queue
from bot.broker.redis_journal import RedisJournal
from bot.broker.redis_runner import NO_WORKER, RedisRunner
from bot.replies import status_text
from bot.secrecy import engine_environment
from engine.config import PROJECT_ROOT
from engine.jobs import ErrorKind, JobFailed, JobRequest, JobResult, StreamKeys
from engine.remote_worker import PASSWORD_ENV

from .conftest import make_settings
from .redis_server import RedisServer, redis_server_or_skip

pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture
def server(tmp_path):
    srv = RedisServer(redis_server_or_skip(), tmp_path)
    srv.start()
    yield srv
    srv.stop()


class Workers:
    """Worker processes started and killed by a test (dead ones are not restarted)."""

    def __init__(self, url: str, prefix: str, logs: Path) -> None:
        self.url, self.prefix, self.logs = url, prefix, logs
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *, max_tries: int = 2) -> subprocess.Popen:
        args = [
            sys.executable, "-m", "engine.worker", "--broker", self.url, "--prefix", self.prefix,
            "--name", name, "--weights", "random", "--heartbeat", "0.2", "--dead-after", "1.5",
            "--max-tries", str(max_tries), "--engine-factory", "tests.bot.fake_engine:make_engine",
        ]  # fmt: skip
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        # As a host would: no secret but the broker's password (bot/secrecy.py).
        env = engine_environment(os.environ, keep=[PASSWORD_ENV])
        self.procs[name] = subprocess.Popen(
            args, cwd=PROJECT_ROOT, stderr=log, stdout=log, env=env
        )
        return self.procs[name]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.procs[name].send_signal(sig)
        self.procs[name].wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def plan_job(job_id: str, guild: int = 1, user: int = 1, **plan) -> Job:
    request = JobRequest(job_id, json.dumps(plan).encode(), (b"style",))
    return Job(request, user_id=user, guild_id=guild)


def make_broker(url: str, keys: StreamKeys) -> Broker:
    queue = local_queue(make_settings(bot={"per_user_limit": 20, "queue_size": 50}))
    runner = RedisRunner(queue=queue, client=redis.asyncio.Redis.from_url(url), keys=keys, poll=0.1)
    journal = RedisJournal(redis.Redis.from_url(url), keys=keys, result_ttl=600, where=url)
    return Broker(queue=queue, runner=runner, journal=journal)


@pytest_asyncio.fixture
async def setup(server, tmp_path, request):
    keys = StreamKeys(prefix=f"t{abs(hash(request.node.name)) % 10**6}")
    workers = Workers(server.url, keys.prefix, tmp_path)
    broker = make_broker(server.url, keys)
    broker.start()
    yield broker, workers, keys, server
    workers.stop_all()
    await broker.detach("test over")


async def until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def test_a_job_runs_on_a_worker_with_progress(setup):
    broker, workers, keys, _ = setup
    workers.start("w1")
    job = plan_job("0000000a", steps=5, delay=0.05)
    seen = []
    job.listeners.append(lambda j: j.progress and seen.append(j.progress.iteration))
    await broker.submit(job, {"source": "m"})
    outcome = await asyncio.wait_for(job.outcome(), 30)
    assert isinstance(outcome, JobResult) and outcome.iterations == 5
    assert seen and max(seen) >= 4
    await broker.delivered(job)
    client = redis.Redis.from_url(setup[3].url)
    assert client.xpending(keys.work, keys.group)["pending"] == 0, "acknowledged"
    assert not client.exists(keys.job(job.id)) and broker.journal.delivered(job.id)


async def test_with_no_worker_jobs_wait_and_members_are_told(setup):
    broker, workers, _, _ = setup
    job = plan_job("0000000b", steps=2)
    await broker.submit(job, {"source": "m"})
    await asyncio.sleep(1)
    assert job.state == JobState.QUEUED and broker.runner.waiting_note == NO_WORKER
    assert "Waiting for a worker" in status_text(job, note=broker.runner.waiting_note)
    workers.start("w1")
    assert isinstance(await asyncio.wait_for(job.outcome(), 30), JobResult)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
async def test_a_worker_killed_mid_job_hands_it_to_the_other_once(setup, sig):
    broker, workers, keys, server = setup
    workers.start("w1")
    workers.start("w2")
    await until(lambda: broker.runner.live == 2, 30, "two workers")
    job = plan_job("0000000c", steps=40, delay=0.05)
    await broker.submit(job, {"source": "m"})
    await until(lambda: job.progress and job.progress.iteration >= 3, 30, "progress")
    client = redis.Redis.from_url(server.url)
    [pending] = client.xpending_range(keys.work, keys.group, "-", "+", 1)
    running_on = pending["consumer"].decode()
    killed = time.monotonic()
    workers.kill(running_on, sig)  # SIGTERM: it leaves the job instead of answering it
    other = {"w1": "w2", "w2": "w1"}[running_on]
    await until(
        lambda: (p := client.xpending_range(keys.work, keys.group, "-", "+", 1))
        and p[0]["consumer"].decode() == other,
        30, "the other worker to take the job over",
    )  # fmt: skip
    redelivered = time.monotonic() - killed
    outcome = await asyncio.wait_for(job.outcome(), 30)
    assert isinstance(outcome, JobResult)
    await asyncio.sleep(1)
    assert client.xlen(keys.answers()) == 0 and client.xpending(keys.work, keys.group)["pending"] == 0
    assert redelivered < 10, redelivered
    print(f"\nworker {sig.name} -> redelivery: {redelivered:.2f} s (dead_after 1.5 s)")


async def test_a_poison_job_fails_after_n_tries_and_the_queue_goes_on(setup):
    broker, workers, _, _ = setup
    poison = plan_job("0000000d", steps=3, crash_at=1, delay=0.05)
    after = plan_job("0000000e", guild=2, steps=2)
    await broker.submit(poison, {"source": "m"})
    await broker.submit(after, {"source": "m"})
    deaths = 0
    deadline = time.monotonic() + 60
    while not (poison.finished and after.finished) and time.monotonic() < deadline:
        proc = workers.procs.get("w")
        if proc is None or proc.poll() is not None:  # a supervisor restarting its worker
            deaths += proc is not None
            workers.start("w", max_tries=2)
        await asyncio.sleep(0.1)
    failed = await asyncio.wait_for(poison.outcome(), 5)
    assert isinstance(failed, JobFailed) and failed.kind == ErrorKind.ENGINE_DIED
    assert "2 times" in failed.message and poison.id in failed.message and deaths == 2
    assert isinstance(await asyncio.wait_for(after.outcome(), 30), JobResult)


async def test_cancel_reaches_a_running_job_within_an_iteration(setup):
    broker, workers, _, _ = setup
    workers.start("w1")
    job = plan_job("0000000f", steps=1000, delay=0.05)
    await broker.submit(job, {"source": "m"})
    await until(lambda: job.progress and job.progress.iteration >= 2, 30, "progress")
    asked = time.monotonic()
    broker.queue.cancel(job.id, by=1, reason="Cancelled.")
    outcome = await asyncio.wait_for(job.outcome(), 10)
    took = time.monotonic() - asked
    assert isinstance(outcome, JobFailed) and outcome.kind == ErrorKind.CANCELLED
    assert job.progress.iteration < 1000 and took < 5, took


async def test_redis_restart_mid_run_loses_nothing(setup):
    broker, workers, _, server = setup
    workers.start("w1")
    jobs = [plan_job(f"0000001{i}", user=i, steps=10, delay=0.05) for i in range(3)]
    for job in jobs:
        await broker.submit(job, {"source": "m"})
    await until(lambda: jobs[0].progress, 30, "the first job to run")
    server.stop()
    await asyncio.sleep(1)
    server.start()  # same port, same folder: the AOF file brings everything back
    outcomes = await asyncio.wait_for(asyncio.gather(*(j.outcome() for j in jobs)), 60)
    assert all(isinstance(o, JobResult) for o in outcomes), outcomes


async def test_a_restarted_bot_gets_the_answer_of_a_job_on_a_worker(setup):
    broker, workers, keys, server = setup
    workers.start("w1")
    job = plan_job("00000020", steps=30, delay=0.05)
    await broker.submit(job, {"source": "m"})
    await until(lambda: job.progress, 30, "progress")
    await broker.detach("restarting")  # the bot goes away; the worker carries on
    again = make_broker(server.url, keys)
    [(resumed, entry)] = await again.resume()
    assert entry.state == "sent" and resumed.state == JobState.RUNNING
    again.start()
    try:
        assert isinstance(await asyncio.wait_for(resumed.outcome(), 30), JobResult)
        await again.delivered(resumed)
        assert await again._run(again.journal.pending) == []
    finally:
        await again.detach("test over")


async def test_a_flooding_server_does_not_hold_up_another(setup):
    broker, workers, _, _ = setup
    workers.start("w1")
    await until(lambda: broker.runner.live == 1, 30, "the worker")
    started: list[str] = []

    def record(job: Job) -> None:
        if job.state == JobState.RUNNING and job.id not in started:
            started.append(job.id)

    flood = [plan_job(f"000001a{i}", guild=1, user=i % 2, steps=10, delay=0.05) for i in range(5)]
    for job in flood:
        job.listeners.append(record)
        await broker.submit(job, {"source": "m"})
    await until(lambda: flood[0].progress, 30, "the flood to start")
    other = plan_job("000001b0", guild=2, user=9, steps=10, delay=0.05)
    other.listeners.append(record)
    await broker.submit(other, {"source": "m"})
    assert other.position == 1, "next in line, ahead of the flood"
    await asyncio.wait_for(asyncio.gather(*(j.outcome() for j in [*flood, other])), 60)
    assert started.index(other.id) == 1, started  # right after the job that was running


async def test_the_time_limit_stops_a_job_on_a_worker_with_its_best_image(setup):
    broker, workers, _, _ = setup
    broker.job_timeout = 1.0  # [bot] job_timeout (issue 11): the bot's clock, any runner
    workers.start("w1")
    job = plan_job("00000011", steps=10_000, delay=0.02)
    await broker.submit(job, {"source": "m"})
    outcome = await asyncio.wait_for(job.outcome(), 30)
    took = time.monotonic() - job.started
    assert isinstance(outcome, JobResult) and outcome.stopped_early, outcome
    assert outcome.image == b"preview" and 0 < outcome.iterations < 10_000
    assert took < 1.0 + 5, took
    print(f"\nredis: job_timeout 1 s -> answered after {took:.2f} s")
