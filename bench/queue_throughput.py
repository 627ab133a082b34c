"""Jobs per minute with 1, 2 and 4 engines or workers, and the event loop's lag.

    python -m bench.queue_throughput [--backend local|redis] [--engines 1,2,4] [--jobs 12]
                                     [--size 40] [--iterations 20]

Runs the bot's real broker without Discord, with random weights: what is measured is the
job system, not the painting. `local`: the fair queue, the SQLite journal (a temporary
folder) and N engine processes. `redis`: a redis-server started here (AOF on, from
PATH) and N `python -m engine.worker` processes; the bot side is the Redis journal and
runner. The loop lag is how late a 10 ms timer fires on the broker's event
loop while the jobs run (the bot's loop does the same work plus Discord's). Each
engine count gets fresh processes and a warm-up round (one job per engine: the first job
at a size traces the step); the time starts after it.
A benchmark, not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bot.broker import Broker, Job, new_job_id
from bot.broker.journal import Journal
from bot.broker.local import engine_pool, local_queue
from bot.broker.redis_journal import RedisJournal
from bot.broker.redis_runner import RedisRunner
from bot.secrecy import engine_environment
from bot.settings import Settings, bot_settings, queue_settings
from engine.config import deep_merge, engine_config, load_raw
from engine.jobs import JobRequest, StreamKeys
from engine.remote_worker import PASSWORD_ENV


def png(seed: int, side: int = 48) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def settings_for(engines: int, size: int, iterations: int, data: Path) -> Settings:
    raw = deep_merge(
        load_raw(None),
        {
            "engine": {"size": size, "iterations": iterations, "preview_every": 0},
            "weights": {"source": "random"},
            "bot": {"engines": engines, "queue_size": 1000, "per_user_limit": 1000},
            "queue": {"data_dir": str(data)},
        },
    )
    return Settings(bot=bot_settings(raw), engine=engine_config(raw), queue=queue_settings(raw))


async def lag_probe(samples: list[float], stop: asyncio.Event, every: float = 0.01) -> None:
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(every)
        samples.append(time.perf_counter() - before - every)


def redis_broker(settings: Settings, url: str, prefix: str) -> Broker:
    import redis
    import redis.asyncio

    keys = StreamKeys(prefix=prefix)
    queue = local_queue(settings)
    return Broker(
        queue=queue,
        runner=RedisRunner(queue=queue, client=redis.asyncio.Redis.from_url(url), keys=keys),
        journal=RedisJournal(redis.Redis.from_url(url), keys=keys, result_ttl=600, where=url),
    )


def start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--dir", str(folder), "--appendonly", "yes",
         "--save", ""],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    return server, f"redis://127.0.0.1:{port}/0"


def start_workers(url: str, prefix: str, count: int) -> list[subprocess.Popen]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "engine.worker", "--broker", url, "--prefix", prefix,
             "--weights", "random", "--log-level", "WARNING"],
            env=engine_environment(os.environ, keep=[PASSWORD_ENV]),  # no token; its password
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(count)
    ]


async def submit_all(broker: Broker, settings: Settings, count: int, seed: int = 0) -> list:
    """Submit `count` jobs from 4 members of 2 servers; their outcomes, once all are done."""
    submitted = []
    for i in range(count):
        content, style = png(seed + i), png(seed + 1000 + i)
        request = JobRequest(new_job_id(), content, (style,), settings.engine.transfer)
        job = Job(request, user_id=i % 4, guild_id=i % 2)
        await broker.submit(job, {"source": "m"})
        submitted.append(job)
    return await asyncio.gather(*(j.outcome() for j in submitted))


async def run(backend: str, engines: int, jobs: int, size: int, iterations: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(engines, size, iterations, Path(tmp))
        processes: list[subprocess.Popen] = []
        if backend == "redis":
            server, url = start_redis(Path(tmp))
            processes = [*start_workers(url, f"bench{engines}", engines), server]
            broker = redis_broker(settings, url, f"bench{engines}")
        else:
            queue = local_queue(settings)
            broker = Broker(
                queue=queue,
                runner=engine_pool(settings, queue),
                journal=Journal(Path(tmp) / "jobs.sqlite3"),
            )
        broker.start()
        while broker.runner.ready_count < engines:
            await asyncio.sleep(0.1)
        await submit_all(broker, settings, engines, seed=10_000)  # warm-up: each traces its step
        lags: list[float] = []
        stop = asyncio.Event()
        probe = asyncio.create_task(lag_probe(lags, stop))
        started = time.perf_counter()
        outcomes = await submit_all(broker, settings, jobs)
        elapsed = time.perf_counter() - started
        stop.set()
        await probe
        await broker.stop(grace=0, reason="benchmark over")
        for process in processes:
            process.terminate()
            process.wait(30)
        failed = sum(1 for o in outcomes if not hasattr(o, "image"))
        return {
            "engines": engines,
            "jobs": jobs,
            "failed": failed,
            "seconds": elapsed,
            "jobs_per_min": 60 * jobs / elapsed,
            "lag_median_ms": 1000 * statistics.median(lags),
            "lag_p99_ms": 1000 * sorted(lags)[int(0.99 * (len(lags) - 1))],
            "lag_max_ms": 1000 * max(lags),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("local", "redis"), default="local")
    parser.add_argument("--engines", default="1,2,4", help="engine processes or workers")
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--size", type=int, default=40)
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    print("| engines | jobs | failed | s | jobs/min | loop lag median / p99 / max (ms) |")
    print("|---|---|---|---|---|---|")
    for n in (int(v) for v in args.engines.split(",")):
        r = asyncio.run(run(args.backend, n, args.jobs, args.size, args.iterations))
        print(
            f"| {n} | {r['jobs']} | {r['failed']} | {r['seconds']:.1f} | {r['jobs_per_min']:.1f} "
            f"| {r['lag_median_ms']:.1f} / {r['lag_p99_ms']:.1f} / {r['lag_max_ms']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
