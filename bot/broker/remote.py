"""The redis backend's wiring: a Redis journal and a runner feeding remote workers.

Workers run `python -m engine.worker --broker URL` on any machine that reaches Redis.
The password comes from STYLEBOT_REDIS_PASSWORD (or the URL) and is never logged: log
lines name the host, port and database only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from bot.broker.base import Broker
from bot.broker.local import local_queue
from bot.broker.redis_journal import RedisJournal
from bot.broker.redis_runner import RedisRunner
from bot.settings import Settings
from engine.jobs import REDIS_RESULT_TTL, StreamKeys, redis_where

PASSWORD_ENV = "STYLEBOT_REDIS_PASSWORD"


def redis_broker(settings: Settings, environ: Mapping[str, str] | None = None) -> Broker:
    import redis
    import redis.asyncio

    environ = os.environ if environ is None else environ
    url = settings.queue.redis_url
    password: dict[str, Any] = (
        {"password": environ[PASSWORD_ENV]} if environ.get(PASSWORD_ENV) else {}
    )
    keys = StreamKeys(prefix=settings.queue.redis_prefix, bot=settings.queue.bot_name)
    queue = local_queue(settings)
    return Broker(
        queue=queue,
        runner=RedisRunner(
            queue=queue,
            client=redis.asyncio.Redis.from_url(url, health_check_interval=10, **password),
            keys=keys,
        ),
        journal=RedisJournal(
            redis.Redis.from_url(url, health_check_interval=10, **password),
            keys=keys,
            result_ttl=REDIS_RESULT_TTL,
            where=redis_where(url),
        ),
        job_timeout=settings.bot.job_timeout,
    )
