"""`python -m engine.worker --broker redis://host:6379/0`: a worker for the redis backend.

Loads the weights once, then pulls jobs from the work stream of Redis (one at a time:
XREADGROUP COUNT 1 as a member of the consumer group) and needs no Discord token; the
only secret is the broker's password, read from STYLEBOT_REDIS_PASSWORD (or the URL)
and never logged. Run one per GPU, on as many machines as you like.

How a job is never lost nor answered twice:
- the stream entry stays pending (unacknowledged) while the job runs; a heartbeat
  thread re-claims it every `heartbeat` seconds (XCLAIM ... JUSTID, which resets its
  idle time without counting a delivery), so only a dead worker's entry goes idle;
- a free worker first takes over entries idle for `dead_after` seconds (XAUTOCLAIM),
  then reads new ones; each take-over counts a delivery, and an entry delivered more
  than `max_tries` times (a job that kills every worker) is answered with a failure;
- the answer is stored and the entry acknowledged (XACK) in one MULTI transaction,
  then the bot is rung (its answers stream);
- cancel is a key the engine's `should_stop` checks between iterations; a worker
  stopped by SIGTERM leaves its job pending for another worker instead of answering.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine.jobs import (
    REDIS_RESULT_TTL,
    ErrorKind,
    JobFailed,
    JobResult,
    StreamKeys,
    from_wire,
    redis_where,
    to_wire,
)

log = logging.getLogger(__name__)

PASSWORD_ENV = "STYLEBOT_REDIS_PASSWORD"


@dataclass(frozen=True)
class WorkerTiming:
    heartbeat: float = 1.0  # seconds between heartbeats (and re-claims of the running job)
    dead_after: float = 10.0  # seconds without a heartbeat before a job is taken over
    max_tries: int = 3  # deliveries of one job before it is failed as poison
    progress_len: int = 20  # progress events kept per job (XADD MAXLEN ~)
    result_ttl: int = REDIS_RESULT_TTL


def connect(url: str, password: str | None = None) -> Any:
    """A redis-py client from a redis:// or rediss:// (TLS) URL."""
    import redis

    if urlsplit(url).scheme not in ("redis", "rediss"):
        raise ValueError(
            f"the broker URL must start with redis:// or rediss:// (got {redis_where(url)})"
        )
    kwargs = {"password": password} if password else {}
    return redis.Redis.from_url(url, health_check_interval=10, **kwargs)


class Heartbeat(threading.Thread):
    """Tells Redis this worker is alive, and keeps its running job's entry claimed."""

    def __init__(self, client: Any, keys: StreamKeys, name: str, timing: WorkerTiming) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.client, self.keys, self.worker, self.timing = client, keys, name, timing
        self.current: str | None = None  # stream entry id of the running job
        self.stop = threading.Event()

    def beat(self) -> None:
        expires = int((time.time() + self.timing.dead_after) * 1000)
        self.client.zadd(self.keys.workers, {self.worker: expires})
        entry = self.current
        if entry is not None:
            self.client.xclaim(
                self.keys.work, self.keys.group, self.worker, 0, [entry], justid=True
            )

    def run(self) -> None:
        while not self.stop.wait(self.timing.heartbeat):
            try:
                self.beat()
            except Exception as error:  # Redis restarting: the next beat will do
                log.warning("heartbeat failed: %s", type(error).__name__)


class RemoteWorker:
    def __init__(
        self, *, client: Any, keys: StreamKeys, engine: Any, name: str, timing: WorkerTiming
    ) -> None:
        self.client, self.keys, self.engine, self.name, self.timing = (
            client, keys, engine, name, timing,
        )  # fmt: skip
        self.heart = Heartbeat(client, keys, name, timing)
        self.stopping = threading.Event()

    def ensure_group(self) -> None:
        import redis

        try:
            self.client.xgroup_create(self.keys.work, self.keys.group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def next_entry(self) -> tuple[str, str] | None:
        """A dead worker's job (XAUTOCLAIM), else a new one (XREADGROUP COUNT 1)."""
        idle_ms = int(self.timing.dead_after * 1000)
        _, claimed, *_ = self.client.xautoclaim(
            self.keys.work, self.keys.group, self.name, idle_ms, start_id="0-0", count=1
        )
        entries = [(entry_id, fields) for entry_id, fields in claimed]
        if entries:
            log.info("took over entry %s from a worker that stopped", entries[0][0].decode())
        else:
            read = self.client.xreadgroup(
                self.keys.group, self.name, {self.keys.work: ">"}, count=1, block=1000
            )
            entries = [entry for _, stream_entries in read for entry in stream_entries]
        if not entries:
            return None
        entry_id, fields = entries[0]
        job_id = (fields or {}).get(b"job", b"").decode()
        return entry_id.decode(), job_id

    def tries(self, entry_id: str) -> int:
        pending = self.client.xpending_range(
            self.keys.work, self.keys.group, min=entry_id, max=entry_id, count=1
        )
        return int(pending[0]["times_delivered"]) if pending else 1

    def handle(self, entry_id: str, job_id: str) -> None:
        values = self.client.hmget(self.keys.job(job_id), ["request", "bot", "outcome"])
        request, bot, done = values
        if not job_id or request is None or done is not None:
            self.client.xack(self.keys.work, self.keys.group, entry_id)  # gone or answered
            return
        bot = bot.decode()
        tries = self.tries(entry_id)
        if tries > self.timing.max_tries:
            log.error("job %s stopped %d workers; failing it", job_id, tries - 1)
            self.answer(entry_id, job_id, bot, poison_failure(job_id, tries - 1))
            return
        if self.client.exists(self.keys.cancel(job_id)):
            self.answer(entry_id, job_id, bot, JobFailed(job_id, ErrorKind.CANCELLED, "The job was cancelled."))
            return
        outcome = self.run_job(entry_id, from_wire(request))
        if self.stopping.is_set() and not self.cancel_asked(job_id):
            # Mark the entry idle for longer than `dead_after`: the next free worker takes
            # it over at once instead of waiting for this one to look dead.
            idle = int(self.timing.dead_after * 1000) + 1
            self.client.xclaim(
                self.keys.work, self.keys.group, self.name, 0, [entry_id], idle=idle, justid=True
            )
            log.info("job %s left for another worker (this one is stopping)", job_id)
            return
        self.answer(entry_id, job_id, bot, outcome)

    def run_job(self, entry_id: str, request: Any) -> JobResult | JobFailed:
        from engine.worker import run_one

        progress_key = self.keys.progress(request.job_id)

        def send(progress: Any) -> None:
            try:
                self.client.xadd(
                    progress_key, {"data": to_wire(progress)},
                    maxlen=self.timing.progress_len, approximate=True,
                )  # fmt: skip
            except Exception as error:  # progress is best effort; the answer is not
                log.warning("job %s: progress not sent (%s)", request.job_id, type(error).__name__)

        def should_stop() -> bool:
            return self.stopping.is_set() or self.cancel_asked(request.job_id)

        log.info("job %s: running (entry %s)", request.job_id, entry_id)
        self.heart.current = entry_id
        try:
            return run_one(self.engine, request, send, should_stop)
        finally:
            self.heart.current = None

    def cancel_asked(self, job_id: str) -> bool:
        try:
            return bool(self.client.exists(self.keys.cancel(job_id)))
        except Exception:
            return False  # Redis is away for a moment: keep painting

    def answer(self, entry_id: str, job_id: str, bot: str, outcome: JobResult | JobFailed) -> None:
        """Store the answer and acknowledge the entry in one transaction, then ring the bot.
        Retried until Redis takes it: a finished job is not thrown away."""
        key = self.keys.job(job_id)
        state = "done" if isinstance(outcome, JobResult) else "failed"
        delay = 0.2
        while True:
            try:
                with self.client.pipeline(transaction=True) as pipe:
                    pipe.hsetnx(key, "outcome", to_wire(outcome))
                    pipe.hset(key, "state", state)
                    pipe.expire(key, self.timing.result_ttl)
                    pipe.xack(self.keys.work, self.keys.group, entry_id)
                    pipe.xadd(self.keys.answers(bot), {"job": job_id})
                    pipe.execute()
                log.info("job %s answered (%s)", job_id, state)
                return
            except Exception as error:
                log.warning("job %s: could not store the answer (%s); retrying", job_id, error)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def serve(self) -> None:
        self.ensure_group()
        self.heart.beat()
        self.heart.start()
        while not self.stopping.is_set():
            try:
                entry = self.next_entry()
                if entry is not None:
                    self.handle(*entry)
            except Exception as error:
                if type(error).__module__.startswith("redis"):
                    log.warning("Redis: %s; retrying in 1 s", error)
                    time.sleep(1)
                else:
                    raise
        self.heart.stop.set()
        try:
            self.client.zrem(self.keys.workers, self.name)
        except Exception:
            pass


def poison_failure(job_id: str, deaths: int) -> JobFailed:
    return JobFailed(
        job_id,
        ErrorKind.ENGINE_DIED,
        f"The job stopped the painter {deaths} times in a row, so it was given up "
        f"(job `{job_id}`).",
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    timing = WorkerTiming()
    parser = argparse.ArgumentParser(prog="python -m engine.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True, help="redis://host:6379/0 or rediss:// (TLS)")
    parser.add_argument("--prefix", default=StreamKeys.prefix, help="key prefix, as the bot's [queue] redis_prefix")
    parser.add_argument("--name", default=f"{socket.gethostname()}-{os.getpid()}")
    parser.add_argument("--config", type=Path, help="TOML with [weights] and [engine] device")
    parser.add_argument("--weights", help="auto, random or a path (overrides the config)")
    parser.add_argument("--heartbeat", type=float, default=timing.heartbeat)
    parser.add_argument("--dead-after", type=float, default=timing.dead_after)
    parser.add_argument("--max-tries", type=int, default=timing.max_tries)
    parser.add_argument("--engine-factory", default="", help=argparse.SUPPRESS)  # tests
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def build_engine(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from engine.config import load_engine_config
    from engine.worker import WorkerOptions, resolve_factory

    config = load_engine_config(args.config)
    weights = replace(config.weights, source=args.weights) if args.weights else config.weights
    options = WorkerOptions(
        weights=weights, log_level=args.log_level, device=config.transfer.device,
        engine_factory=args.engine_factory,
    )  # fmt: skip
    return resolve_factory(options.engine_factory)(options), weights.source == "random"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s worker[{os.getpid()}] %(name)s: %(message)s",
    )  # fmt: skip
    client = connect(args.broker, os.environ.get(PASSWORD_ENV) or None)
    engine, random_weights = build_engine(args)  # the weights, once
    info = {**dict(engine.describe()), "random_weights": random_weights}
    keys = StreamKeys(prefix=args.prefix)
    timing = WorkerTiming(heartbeat=args.heartbeat, dead_after=args.dead_after, max_tries=args.max_tries)
    worker = RemoteWorker(client=client, keys=keys, engine=engine, name=args.name, timing=timing)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stopping.set())
    client.hset(keys.workers_info, args.name, json.dumps(info))
    log.info("worker %s pulling jobs from %s (%s)", args.name, redis_where(args.broker), info)
    worker.serve()
    return 0
