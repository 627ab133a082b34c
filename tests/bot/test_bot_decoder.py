"""bot/decoder.py and the checks around it: budgets, scans, sizes (issue 11, items 1, 4, 5).

Real decoder processes on real images: a patterned RGBA PNG of 25 megapixels (123 KB,
within every limit) takes seconds to decode, which is what the time and memory budgets
are for; a progressive JPEG with repeated scans is refused from its bytes.
"""

from __future__ import annotations

import asyncio
import io
import time

import numpy as np
import pytest
from PIL import Image

from bot.decoder import DecodeProblem, DecoderPool, MiB
from bot.validation import (
    Candidate,
    InputProblem,
    Inputs,
    JobSides,
    Validations,
    check_sides,
    read_and_check,
)
from engine import images
from engine.jobs import ImageLimits

from .conftest import png

pytestmark = pytest.mark.timeout(120)

LIMITS = ImageLimits()  # the defaults: 10 MB, 25 megapixels


def slow_png(width: int = 5000, height: int = 5000) -> bytes:
    """A patterned RGBA PNG of 25 MP: 123 KB, within every limit, and 2.5 s of CPU and
    about 200 MB to decode and shrink on the 2-core machine the tests were written on."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x % 256, y % 256, (x // 20 + y // 20) % 256], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("RGBA").save(buf, "PNG")
    return buf.getvalue()


def jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, bytes) of each segment after SOI; a scan's segment includes its data."""
    out, i = [], 2
    while i < len(data):
        marker = data[i + 1]
        if marker == 0xD9:
            break
        j = i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xDA:  # entropy-coded data runs to the next marker that is not FF00/RSTn
            while True:
                j = data.index(b"\xff", j)
                if data[j + 1] == 0 or 0xD0 <= data[j + 1] <= 0xD7:
                    j += 2
                    continue
                break
        out.append((marker, data[i:j]))
        i = j
    return out


def many_scans_jpeg(scans: int) -> bytes:
    """A real progressive JPEG whose last scan is repeated until there are `scans`."""
    buf = io.BytesIO()
    Image.open(io.BytesIO(png(64, 64))).convert("RGB").save(buf, "JPEG", progressive=True)
    segments = jpeg_segments(buf.getvalue())
    head = b"".join(s for m, s in segments if m != 0xDA)
    sos = [s for m, s in segments if m == 0xDA]
    return b"\xff\xd8" + head + b"".join(sos + [sos[-1]] * (scans - len(sos))) + b"\xff\xd9"


class Attachment:
    def __init__(self, filename: str, data: bytes) -> None:
        self.filename, self.data, self.size = filename, data, len(data)

    async def read(self) -> bytes:
        return self.data


def inputs(photo: bytes, style: bytes, names=("photo.png", "style.png")) -> Inputs:
    return Inputs(
        Candidate(Attachment(names[0], photo), f"the photo ({names[0]})"),
        (Candidate(Attachment(names[1], style), f"the style image ({names[1]})"),),
    )


@pytest.fixture
async def pool():
    decoders = DecoderPool(workers=2, timeout=0.2, memory=1024 * MiB)
    yield decoders
    await decoders.close()


async def test_a_slow_image_is_stopped_at_the_time_budget_and_named(pool):
    data = slow_png()
    started = time.monotonic()
    with pytest.raises(DecodeProblem, match=r"The style image \(slow\.png\) takes too long"):
        await pool.decode(
            data, name="the style image (slow.png)", max_bytes=LIMITS.max_bytes,
            max_pixels=LIMITS.max_pixels, longest=48,
        )  # fmt: skip
    assert pool.kills == 1
    assert time.monotonic() - started < 0.2 + 30  # generous: start-up under load
    outcome = await pool.decode(png(), name="x", max_bytes=10**6, max_pixels=10**6, longest=48)
    assert Image.open(io.BytesIO(outcome.png)).size == (48, 36)  # a fresh decoder took over


async def test_decodes_of_different_members_run_side_by_side(pool):
    """A member's slow image holds one decoder; another member's images go through the
    other one meanwhile, long before the slow one is done."""
    pool.timeout = 60.0
    order: list[str] = []

    async def slow():
        await pool.decode(slow_png(), name="slow", max_bytes=10**7, max_pixels=25 * 10**6,
                          longest=48, owner=1)  # fmt: skip
        order.append("slow done")

    async def quick():
        await asyncio.sleep(0.05)  # after the slow one has started
        for _ in range(2):
            await pool.decode(png(), name="q", max_bytes=10**6, max_pixels=10**6, longest=48, owner=2)
        order.append("quick done")

    await asyncio.gather(slow(), quick())
    assert order == ["quick done", "slow done"]


async def test_memory_budget_kills_a_decode_that_outgrows_it():
    pool = DecoderPool(workers=1, timeout=60, memory=256 * MiB)
    try:
        with pytest.raises(DecodeProblem, match="needs too much memory to open safely"):
            await pool.decode(slow_png(), name="the photo (bomb.png)", max_bytes=10**7,
                              max_pixels=25 * 10**6, longest=48)  # fmt: skip
    finally:
        await pool.close()


async def test_a_bomb_is_refused_from_its_header_before_decoding():
    pool = DecoderPool(workers=1, timeout=60, memory=256 * MiB)
    try:
        with pytest.raises(InputProblem, match=r"The style image \(style.png\) \(5000×5000\) needs too much memory"):
            await read_and_check(inputs(png(), slow_png()), LIMITS, decoder=pool)
        assert pool.decodes == 1  # the photo; the bomb never reached a decoder
    finally:
        await pool.close()


async def test_checked_inputs_are_downscaled_pngs_the_engine_reads_cheaply(pool):
    big = png(800, 600, fmt="JPEG")
    checked = await read_and_check(inputs(big, png(600, 800, seed=2)), LIMITS,
                                   sides=JobSides(content=256, style=128), decoder=pool)  # fmt: skip
    photo = images.load_image(checked.content, name="p", limits=LIMITS)
    style = images.load_image(checked.styles[0], name="s", limits=LIMITS)
    assert (photo.format, photo.width, photo.height) == ("png", 256, 192)
    assert (style.width, style.height) == (96, 128)
    original = images.resize_longest(images.load_image(big, name="p", limits=LIMITS).rgb, 256)
    assert float(np.abs(photo.rgb - original).mean()) < 3.0  # same picture


async def test_a_jpeg_with_too_many_scans_is_refused_from_its_bytes(pool):
    ordinary = many_scans_jpeg(20)
    assert images.jpeg_scan_count(ordinary) == 20
    images.load_image(ordinary, name="x", limits=LIMITS)  # a few repeated scans still decode
    with pytest.raises(InputProblem, match=r"The photo \(scans.jpg\) is a JPEG made of 500 scans"):
        await read_and_check(inputs(many_scans_jpeg(500), png(), ("scans.jpg", "s.png")), LIMITS,
                             decoder=pool)  # fmt: skip
    assert pool.decodes == 0  # refused before any decoder saw it


def test_thin_images_are_refused_also_after_scaling():
    with pytest.raises(InputProblem, match=r"The photo \(strip.png\) is only 3000×2 pixels"):
        check_sides("the photo (strip.png)", 3000, 2)
    check_sides("the photo (strip.png)", 3000, 40)  # fine as it is...
    with pytest.raises(InputProblem, match=r"at 512 px it would be 512×7"):
        check_sides("the photo (strip.png)", 3000, 40, 512)  # ...but not at size 512
    check_sides("the photo (p.png)", 48, 36, 48)


def test_validations_in_progress_count_against_the_member_limit():
    validations = Validations()
    with validations.claim(7, jobs=0, limit=2):
        with validations.claim(7, jobs=0, limit=2):
            with pytest.raises(InputProblem, match="being checked"):
                with validations.claim(7, jobs=0, limit=2):
                    pass
            with validations.claim(8, jobs=1, limit=2):  # another member is not affected
                assert validations.in_progress(7) == 2
        with pytest.raises(InputProblem, match="2 jobs"):
            with validations.claim(7, jobs=1, limit=2):
                pass
    assert validations.in_progress(7) == 0


def test_decoders_start_without_secrets():
    pool = DecoderPool(
        workers=1, timeout=1, memory=0, environ={"DISCORD_TOKEN": "x" * 30, "PATH": "/bin"}
    )
    assert "DISCORD_TOKEN" not in pool.env and pool.env["PATH"] == "/bin"
    assert pool.env["OPENBLAS_NUM_THREADS"] == "1"


async def test_a_running_decoder_has_no_token_in_its_environment(monkeypatch):
    token = "MTA4NzY1NDMyMTAxMjM0NTY3OA.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789AB"
    monkeypatch.setenv("DISCORD_TOKEN", token)
    pool = DecoderPool(workers=1, timeout=30, memory=1024 * MiB)
    try:
        await pool.decode(png(), name="x", max_bytes=10**6, max_pixels=10**6, longest=48)
        (decoder,) = pool._idle
        with open(f"/proc/{decoder.process.pid}/environ", "rb") as f:
            environ = f.read()
        assert b"PATH=" in environ and token.encode() not in environ
    finally:
        await pool.close()
