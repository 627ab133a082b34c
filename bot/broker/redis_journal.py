"""The redis backend's journal: the same calls as bot/broker/journal.py, kept in Redis.

Each job is a hash (`StreamKeys.job`) holding its request in the wire format (bytes +
JSON, never pickle), what delivery needs, and its state; the bot's sorted set
(`StreamKeys.jobs`) lists the jobs it still has to answer, by sequence number. A
worker writes the outcome into the hash and gives the hash a TTL (`result_ttl`): a
result waits that long for the bot to post it. Delivered jobs are deleted, and a
small `delivered:ID` marker (same TTL) remembers them. With AOF on, Redis keeps all
of this across its own restarts.

Synchronous redis-py: the broker calls a journal on its own thread, in order.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any, cast

import redis

from bot.broker.journal import Entry
from engine.jobs import JobFailed, JobRequest, JobResult, StreamKeys, from_wire, to_wire

log = logging.getLogger(__name__)


class RedisJournal:
    def __init__(self, client: redis.Redis, *, keys: StreamKeys, result_ttl: int, where: str) -> None:
        self.client = client
        self.keys = keys
        self.result_ttl = result_ttl
        self.path = where  # for log lines: host, port and db, never the password

    def close(self) -> None:
        self.client.close()

    def add(
        self,
        request: JobRequest,
        *,
        guild_id: int,
        channel_id: int,
        user_id: int,
        label: str,
        meta: Mapping[str, Any],
    ) -> int:
        seq = int(self.client.incr(self.keys.seq))
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(
                self.keys.job(request.job_id),
                mapping={
                    "request": to_wire(request),
                    "bot": self.keys.bot,
                    "seq": seq,
                    "guild_id": guild_id,
                    "channel_id": channel_id,
                    "user_id": user_id,
                    "label": label,
                    "meta": json.dumps(dict(meta)),
                    "state": "queued",
                    "created": time.time(),
                },
            )
            pipe.zadd(self.keys.jobs, {request.job_id: seq})
            pipe.execute()
        return seq

    def set_status_message(self, job_id: str, channel_id: int, message_id: int) -> None:
        self.client.hset(
            self.keys.job(job_id),
            mapping={"status_channel_id": channel_id, "status_message_id": message_id},
        )

    def set_state(self, job_id: str, state: str) -> None:
        if state == "running":
            return  # the runner writes "sent" in the same transaction as the stream entry
        if self.client.exists(self.keys.job(job_id)):
            self.client.hset(self.keys.job(job_id), "state", state)

    def answer(self, job_id: str, state: str, outcome: JobResult | JobFailed) -> None:
        """An answer the bot made itself (a cancel before any worker took the job)."""
        key = self.keys.job(job_id)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hsetnx(key, "outcome", to_wire(outcome))
            pipe.hset(key, "state", state)
            pipe.expire(key, self.result_ttl)
            pipe.execute()

    def mark_delivered(self, job_id: str) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.delivered(job_id), 1, ex=self.result_ttl)
            pipe.delete(self.keys.job(job_id), self.keys.progress(job_id), self.keys.cancel(job_id))
            pipe.zrem(self.keys.jobs, job_id)
            pipe.execute()

    def delivered(self, job_id: str) -> bool:
        return bool(self.client.exists(self.keys.delivered(job_id)))

    def pending(self) -> list[Entry]:
        entries = []
        # The synchronous client with bytes replies (no decode_responses): cast for mypy.
        for raw_id in cast("list[bytes]", self.client.zrange(self.keys.jobs, 0, -1)):
            job_id = raw_id.decode()
            values = cast("dict[bytes, bytes]", self.client.hgetall(self.keys.job(job_id)))
            if b"request" not in values:  # its result expired unposted, or it was delivered
                log.warning("job %s: nothing left in Redis (expired?); dropping it", job_id)
                self.client.zrem(self.keys.jobs, job_id)
                continue
            entries.append(entry_of(values))
        return entries


def entry_of(values: Mapping[bytes, bytes]) -> Entry:
    def number(name: str) -> int:
        return int(values.get(name.encode(), b"0"))

    outcome = values.get(b"outcome")
    return Entry(
        seq=number("seq"),
        request=from_wire(values[b"request"]),
        guild_id=number("guild_id"),
        channel_id=number("channel_id"),
        user_id=number("user_id"),
        label=values.get(b"label", b"").decode(),
        meta=json.loads(values.get(b"meta", b"{}")),
        status_channel_id=number("status_channel_id"),
        status_message_id=number("status_message_id"),
        state=values.get(b"state", b"queued").decode(),
        outcome=from_wire(outcome) if outcome else None,
    )
