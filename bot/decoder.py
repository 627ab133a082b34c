"""Full image decodes in separate processes, each with a time and a memory budget.

A crafted JPEG can take 40 s of CPU to decode and a 200 KB PNG can need a gigabyte,
both within every byte and pixel limit. So the bot never decodes a member's image
itself: `DecoderPool` hands it to a small decoder process (`python -m bot.decoder`)
and waits on the event loop, so the loop, the other members' acknowledgements and
their own decodes carry on. A decoder that runs over `timeout` is killed; its address
space is capped at `memory` bytes (RLIMIT_AS), so a bomb that slips past the header
estimate fails with MemoryError inside the decoder instead of growing the bot. At
most `workers` decodes run at once; with each capped, that bounds the total too.
Decoders are reused while they behave, killed and replaced when not, and start
with the scrubbed environment of bot/secrecy.py (no token to leak).

The decode itself is engine.images.downscaled_png: the image comes back as a PNG no
larger than the job needs, which the job carries to the engine, so the engine does
not decode the original a second time.

Wire format on the decoder's stdin/stdout (bytes and JSON, never pickle): each message
is a 4-byte big-endian length and a JSON object, followed, when the object has
"bytes": n, by n raw bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

_LENGTH = struct.Struct(">I")
READY = b"ready\n"
MiB = 1024 * 1024
# Each decoder's address space before it decodes anything (Python, NumPy and Pillow
# loaded, one BLAS thread): measured 110 MiB; the rest of `memory` is for the image.
BASELINE_MEMORY = 192 * MiB
# Threads and malloc arenas reserve address space without using it; one of each keeps
# RLIMIT_AS a measure of what the decode really needs.
DECODER_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}


class DecodeProblem(Exception):
    """The image could not be decoded within the budgets; the message is for the member."""


@dataclass(frozen=True)
class DecodeOutcome:
    png: bytes
    width: int  # of the PNG
    height: int


# --- the decoder process --------------------------------------------------------------


def _write(out: BinaryIO, header: Mapping[str, Any], payload: bytes = b"") -> None:
    body = json.dumps({**header, "bytes": len(payload)}).encode()
    out.write(_LENGTH.pack(len(body)) + body + payload)
    out.flush()


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if data is None or len(data) != n:
        raise EOFError
    return data


def serve(stdin: BinaryIO, stdout: BinaryIO, memory: int) -> None:
    """The decoder's loop: one request at a time until stdin closes."""
    try:
        import resource
    except ImportError:  # Windows: no RLIMIT_AS; the time budget and the estimate still hold
        resource = None  # type: ignore[assignment]
    if memory > 0 and resource is not None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    from engine import images
    from engine.jobs import ImageLimits

    stdout.write(READY)
    stdout.flush()
    while True:
        try:
            (length,) = _LENGTH.unpack(_read_exactly(stdin, _LENGTH.size))
            request = json.loads(_read_exactly(stdin, length))
            data = _read_exactly(stdin, request["bytes"])
        except EOFError:
            return
        try:
            limits = ImageLimits(request["max_bytes"], request["max_pixels"])
            png = images.downscaled_png(
                data, name=request["name"], limits=limits, longest=request["longest"]
            )
            info = images.probe(png, name=request["name"], limits=ImageLimits(len(png), 2**62))
        except images.ImageError as e:
            _write(stdout, {"ok": False, "kind": "input", "message": str(e)})
        except MemoryError:
            _write(stdout, {"ok": False, "kind": "memory"})
        except Exception as e:  # noqa: BLE001 - reported as data; the bot logs it
            _write(stdout, {"ok": False, "kind": "internal", "message": f"{type(e).__name__}: {e}"})
        else:
            _write(stdout, {"ok": True, "width": info.width, "height": info.height}, png)


# --- the bot's side -------------------------------------------------------------------


class _Decoder:
    """One decoder process and its pipes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, *, memory: int, env: Mapping[str, str], timeout: float) -> _Decoder:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.decoder",
            str(memory),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=dict(env),
        )
        decoder = cls(process)
        try:
            assert process.stdout is not None
            ready = await asyncio.wait_for(process.stdout.readexactly(len(READY)), timeout)
            if ready != READY:
                raise RuntimeError(f"decoder said {ready!r} instead of ready")
        except BaseException:
            await decoder.kill()
            raise
        return decoder

    async def decode(self, data: bytes, request: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
        assert self.process.stdin is not None and self.process.stdout is not None
        body = json.dumps({**request, "bytes": len(data)}).encode()
        self.process.stdin.write(_LENGTH.pack(len(body)) + body + data)
        await self.process.stdin.drain()
        (length,) = _LENGTH.unpack(await self.process.stdout.readexactly(_LENGTH.size))
        reply = json.loads(await self.process.stdout.readexactly(length))
        payload = await self.process.stdout.readexactly(reply["bytes"]) if reply["bytes"] else b""
        return reply, payload

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        await self.process.wait()

    async def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()  # the decoder's loop ends at end of input
        try:
            await asyncio.wait_for(self.process.wait(), 2)
        except TimeoutError:
            await self.kill()


@dataclass
class _OwnerLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class DecoderPool:
    """At most `workers` decodes at once, each in a decoder process with budgets."""

    def __init__(
        self,
        *,
        workers: int,
        timeout: float,
        memory: int,
        environ: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        warm: int = 2,
    ) -> None:
        from bot.secrecy import engine_environment

        self.timeout = timeout
        self.memory = memory
        self.start_timeout = start_timeout
        self.workers = workers
        self.warm = min(warm, workers)  # idle decoders kept ready (about 30 MB each)
        self.env = {**engine_environment(os.environ if environ is None else environ), **DECODER_ENV}
        self._slots = asyncio.Semaphore(workers)
        self._owners: dict[Any, _OwnerLock] = {}  # one decode at a time per member
        self._idle: list[_Decoder] = []
        self._warming: set[asyncio.Task[None]] = set()
        self._closed = False
        self.decodes = 0  # images handed to a decoder (for tests and measurements)
        self.kills = 0  # decoders killed for running over time

    @property
    def image_memory(self) -> int:
        """What one image may need (engine.images.decode_memory_estimate) to be tried."""
        return max(0, self.memory - BASELINE_MEMORY) if self.memory > 0 else 2**62

    def warm_up(self) -> None:
        """Start decoders in the background until `warm` are idle or starting, so that an
        image never waits for a decoder to start (0.3-1 s)."""
        missing = 0 if self._closed else self.warm - len(self._idle) - len(self._warming)
        for _ in range(missing):
            task = asyncio.get_running_loop().create_task(self._add_idle(), name="decoder-warm-up")
            self._warming.add(task)
            task.add_done_callback(self._warming.discard)

    async def _add_idle(self) -> None:
        try:
            decoder = await self._start()
        except Exception:
            log.warning("could not start an image decoder in advance", exc_info=True)
            return
        if self._closed:
            await decoder.close()
        else:
            self._idle.append(decoder)

    async def _start(self) -> _Decoder:
        return await _Decoder.start(memory=self.memory, env=self.env, timeout=self.start_timeout)

    async def decode(
        self,
        data: bytes,
        *,
        name: str,
        max_bytes: int,
        max_pixels: int,
        longest: int,
        owner: Any = None,
    ) -> DecodeOutcome:
        """Decode `data` to a PNG at most `longest` px. DecodeProblem (its message is for the
        member) when the image is bad or over a budget. One member's (`owner`'s) images
        decode one at a time, so they hold at most one of the `workers` slots."""
        entry = self._owners.setdefault(owner, _OwnerLock())
        entry.users += 1
        try:
            async with entry.lock:
                return await self._decode(data, name, max_bytes, max_pixels, longest)
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._owners[owner]

    async def _decode(
        self, data: bytes, name: str, max_bytes: int, max_pixels: int, longest: int
    ) -> DecodeOutcome:
        request = {"name": name, "max_bytes": max_bytes, "max_pixels": max_pixels, "longest": longest}
        async with self._slots:
            decoder = self._idle.pop() if self._idle else await self._start()
            self.warm_up()
            self.decodes += 1
            try:
                reply, payload = await asyncio.wait_for(decoder.decode(data, request), self.timeout)
            except TimeoutError:
                self.kills += 1
                await decoder.kill()
                self.warm_up()
                raise DecodeProblem(
                    f"{name[:1].upper()}{name[1:]} takes too long to open (more than "
                    f"{self.timeout:g} s), so I stopped. Please save it again as an ordinary "
                    "JPEG or a PNG (a smaller one opens faster) and try again."
                ) from None
            except (asyncio.IncompleteReadError, ConnectionError):
                await decoder.kill()
                self.warm_up()
                log.warning(
                    "image decoder died on %s (exit status %s)", name, decoder.process.returncode
                )
                raise DecodeProblem(_too_big(name)) from None
            except BaseException:
                await decoder.kill()  # cancelled mid-conversation: its pipes are out of step
                raise
            if self._closed or len(self._idle) >= self.workers:
                await decoder.close()
            else:
                self._idle.append(decoder)
        if reply["ok"]:
            return DecodeOutcome(payload, int(reply["width"]), int(reply["height"]))
        if reply["kind"] == "input":
            raise DecodeProblem(str(reply["message"]))
        if reply["kind"] == "memory":
            log.info("image decoder ran out of its %d MiB on %s", self.memory // MiB, name)
            raise DecodeProblem(_too_big(name))
        raise RuntimeError(f"image decoder failed on {name}: {reply.get('message', '?')}")

    async def close(self) -> None:
        """End every idle decoder and those still starting (on cog unload, SIGTERM too).
        Awaits, never blocks: a decoder gets 2 s to exit at end of input, then is killed."""
        self._closed = True
        warming = list(self._warming)
        for task in warming:
            task.cancel()
        # Let each cancelled start kill its half-started decoder now, while the loop runs.
        await asyncio.gather(*warming, return_exceptions=True)
        idle, self._idle = self._idle, []
        await asyncio.gather(*(d.close() for d in idle), return_exceptions=True)


def _too_big(name: str) -> str:
    return (
        f"{name[:1].upper()}{name[1:]} needs too much memory to open safely. "
        "Please send a smaller image (fewer pixels) and try again."
    )


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer, int(sys.argv[1]) if len(sys.argv) > 1 else 0)
