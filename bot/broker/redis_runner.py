"""The redis backend's runner: hands the fair queue's jobs to workers through Redis Streams.

Fairness is decided in the bot, at the last moment: jobs wait in the bot's fair
`JobQueue` (round-robin across servers, then members) and one goes onto the single
work stream only when a worker is free (live workers > jobs on the stream). The other
way, a stream per server with the workers reading them round-robin, would put the
fairness rule into every worker and still not order members within a server; and a
work stream filled ahead of time would be first come, first served.

Live workers are those whose heartbeat (a score in `StreamKeys.workers`: the time it
expires) is in the future. While there are none, queued members are told so. Answers
ring the bot on its answers stream; progress comes from each running job's capped
progress stream; cancel sets the job's cancel key. All through redis.asyncio, so the
event loop never waits on Redis. Connection errors (Redis restarting) are retried.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from bot.broker.queue import Job, JobQueue, QueueClosed
from bot.i18n import Text
from engine.jobs import JobFailed, StreamKeys, from_wire

log = logging.getLogger(__name__)

SENT = "sent"  # the job's state once it is on the work stream (written with the XADD)
NO_WORKER = Text("note.no_worker")  # in each member's language (bot/locales)


class RedisRunner:
    def __init__(self, *, queue: JobQueue, client: Any, keys: StreamKeys, poll: float = 0.5) -> None:
        self.queue = queue
        self.client = client  # redis.asyncio.Redis
        self.keys = keys
        self.poll = poll
        self.inflight: dict[str, Job] = {}  # on the work stream, not answered yet
        self.live = 0
        self.info: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()
        self._stopping = False
        queue.cancel_running = self._cancel_running

    # -- what the broker and the bot read -------------------------------------------------

    @property
    def ready_count(self) -> int:
        return self.live

    @property
    def unavailable(self) -> JobFailed | None:
        return None  # no worker now is not a refusal: jobs wait for one

    @property
    def random_weights(self) -> bool:
        return any(i.get("random_weights") for i in self.info.values())

    @property
    def waiting_note(self) -> str:
        return NO_WORKER if self.live == 0 else ""

    def adopt(self, job: Job, state: str) -> bool:
        if state != SENT:
            return False  # never sent to a worker: it waits in the fair queue again
        self.inflight[job.id] = job  # on the stream already: its answer will ring
        return True

    # -- running ----------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for name, loop_fn in (
            ("workers", self._watch_workers),
            ("dispatch", self._dispatch),
            ("answers", self._answers),
            ("progress", self._progress),
        ):
            self._tasks.append(loop.create_task(self._forever(name, loop_fn), name=f"redis-{name}"))

    async def _forever(self, name: str, step: Any) -> None:
        """Run `step` again and again; Redis errors (a restart) are logged and retried.
        A cancel can reach redis-py mid-read and come out as a connection error, so the
        loop also ends on `_stopping`, not only on CancelledError."""
        while not self._stopping:
            try:
                await step()
            except (asyncio.CancelledError, QueueClosed):
                raise
            except Exception as error:
                if self._stopping:
                    return
                log.warning("redis %s: %s: %s; retrying", name, type(error).__name__, error)
                await asyncio.sleep(1)

    async def _watch_workers(self) -> None:
        now_ms = int(time.time() * 1000)
        live = await self.client.zrangebyscore(self.keys.workers, now_ms, "+inf")
        if len(live) != self.live:
            log.info("%d worker(s) connected", len(live))
            self.live = len(live)
            self._changed.set()
            for job in self.queue.waiting:
                job.notify()  # their status says whether a worker is there
        if live:
            raw = await self.client.hmget(self.keys.workers_info, live)
            self.info = {n.decode(): json.loads(v) for n, v in zip(live, raw, strict=True) if v}
        await asyncio.sleep(self.poll)

    async def _dispatch(self) -> None:
        while self.live <= len(self.inflight):
            self._changed.clear()
            await self._changed.wait()
        job = await self.queue.get()
        if self.live <= len(self.inflight):  # a worker went away, or a job was adopted
            self.queue.put_back(job)
            return
        try:
            # "sent" and the stream entry come together or not at all: a bot killed in
            # between finds the job either still queued or on the stream (see `adopt`).
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.xadd(self.keys.work, {"job": job.id})
                pipe.hset(self.keys.job(job.id), "state", SENT)
                await pipe.execute()
        except Exception:
            self.queue.put_back(job)
            raise
        job.engine = "redis"
        self.inflight[job.id] = job
        log.info("job %s sent to the workers (%d in flight)", job.id, len(self.inflight))

    async def _answers(self) -> None:
        stream = self.keys.answers()
        read = await self.client.xread({stream: "0-0"}, count=50, block=int(self.poll * 1000))
        for _, entries in read:
            for entry_id, fields in entries:
                await self._answered(fields.get(b"job", b"").decode())
                await self.client.xdel(stream, entry_id)

    async def _answered(self, job_id: str) -> None:
        job = self.inflight.get(job_id)
        if job is None:
            return  # answered before a restart and already posted, or not ours
        raw = await self.client.hget(self.keys.job(job_id), "outcome")
        if raw is None:
            return
        del self.inflight[job_id]
        self._changed.set()
        self.queue.done(job, from_wire(raw))

    async def _progress(self) -> None:
        streams = {self.keys.progress(i): j.progress_mark for i, j in self._running().items()}
        if not streams:
            await asyncio.sleep(self.poll)
            return
        read = await self.client.xread(streams, count=20, block=int(self.poll * 1000))
        for name, entries in read:
            job_id = name.decode().rsplit(":", 1)[1]
            job = self.inflight.get(job_id)
            if job is None or not entries:
                continue
            entry_id, fields = entries[-1]
            job.progress_mark = entry_id.decode()
            job.report(from_wire(fields[b"data"]))

    def _running(self) -> dict[str, Job]:
        return {i: j for i, j in self.inflight.items() if not j.finished}

    def _cancel_running(self, job: Job) -> None:
        asyncio.get_running_loop().create_task(self._set_cancel(job.id))

    async def _set_cancel(self, job_id: str) -> None:
        try:
            await self.client.set(self.keys.cancel(job_id), 1, ex=24 * 3600)
        except Exception:
            log.exception("job %s: could not ask the worker to stop", job_id)

    async def abandon(self) -> None:
        """Stop listening; jobs on the stream stay there (the workers go on)."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # A connection whose blocking XREAD was just cancelled can leave close() waiting
        # on it (seen with redis-py 8): closing is best effort, bounded.
        try:
            await asyncio.wait_for(self.client.aclose(), 2)
        except Exception as error:
            log.info("redis: closed without a clean goodbye (%s)", type(error).__name__)

    async def stop(self, *, grace: float, reason: str) -> None:
        self.queue.close(reason)
        await self.abandon()
