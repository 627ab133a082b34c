"""Issue 14 through the fake Discord with the real engine process (random weights):
the Upscale ×2 button, and animated GIFs in and out."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from .conftest import connected, decode, make_settings, png
from .test_bot_e2e import result_message

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(180)]

PHOTO = ("photo.png", png(48, 36, seed=1))
STYLE = ("starry.png", png(36, 48, seed=2))


async def test_upscale_button_queues_twice_the_size_from_the_result(engines):
    settings = make_settings(bot={"max_size": 96})
    queue, _ = engines
    async with connected(engines, settings) as h:
        fake = h.fake
        await fake.send_message("!stylize seed:3", attachments=[PHOTO, STYLE])
        first = await result_message(fake)
        assert [c.split(":")[2] for c in first.custom_ids] == ["a", "m", "l", "u"]
        assert "Upscale" in str(first.components)
        await h.idle()
        upscale_id = next(c for c in first.custom_ids if c.startswith("sb:run:u:"))
        await fake.click_button(first, upscale_id)
        seen = None
        async with asyncio.timeout(60):
            while seen is None:
                jobs = [j for j in queue.waiting + queue.running if j.request.settings.size == 96]
                seen = jobs[0] if jobs else None
                await asyncio.sleep(0.01)
        # Twice the size, starting from the previous result's picture, same seed.
        assert seen.request.init_image == first.attachments[0].data
        assert seen.request.settings.seed == 3
        bigger = await result_message(fake, after=first.id)
        assert decode(bigger.attachments[0].data).size == (96, 72)
        # At the host's max size: no Upscale button any more.
        assert [c.split(":")[2] for c in bigger.custom_ids] == ["a", "m", "l"]
        assert fake.bot_errors == []


def six_frame_gif(frames: int = 6) -> bytes:
    pictures = []
    for i in range(frames):
        image = Image.new("RGB", (48, 36), (200, 120, 40))
        image.paste((20, 200, 220), (4 + 4 * i, 10, 14 + 4 * i, 20))
        pictures.append(image)
    buf = io.BytesIO()
    pictures[0].save(buf, "GIF", save_all=True, append_images=pictures[1:],
                     duration=[70, 120] * (frames // 2), loop=0)
    return buf.getvalue()


def frames_of(data: bytes) -> tuple[str, list[int]]:
    with Image.open(io.BytesIO(data)) as image:
        durations = []
        for i in range(image.n_frames):
            image.seek(i)
            image.load()
            durations.append(image.info.get("duration"))
        return image.format, durations


async def test_six_frame_gif_in_six_frame_animation_out_with_its_timing(engines):
    async with connected(engines) as h:
        fake = h.fake
        await fake.send_message("!stylize", attachments=[("wave.gif", six_frame_gif()), STYLE])
        result = await result_message(fake)
        kind, durations = frames_of(result.attachments[0].data)
        assert kind in ("GIF", "WEBP") and durations == [70, 120] * 3
        assert result.filenames[0].endswith("." + kind.lower())
        # No Upscale on an animation; the other buttons as usual.
        assert [c.split(":")[2] for c in result.custom_ids] == ["a", "m", "l"]
        assert fake.bot_errors == []


async def test_gif_over_the_frame_cap_is_refused_before_it_is_queued(engines):
    settings = make_settings(limits={"max_frames": 4})
    async with connected(engines, settings) as h:
        fake = h.fake
        await fake.send_message("!stylize", attachments=[("long.gif", six_frame_gif()), STYLE])
        reply = await fake.wait_for_bot_message(lambda m: "⚠️" in m.content)
        assert "6 frames" in reply.content and "at most 4 frames" in reply.content
        assert "sample:yes" in reply.content
        assert not h.bot.queue.waiting and not h.bot.queue.running


async def test_slash_gif_result_keeps_the_animation_for_its_buttons(engines):
    async with connected(engines) as h:
        fake = h.fake
        await fake.send_slash_command("stylize", {"content": ("wave.gif", six_frame_gif(4)), "style": STYLE})
        result = await result_message(fake)
        assert frames_of(result.attachments[0].data)[1] == [70, 120, 70, 120]
        assert result.filenames[1] == "input-photo.gif"
        assert frames_of(result.attachments[1].data)[1] == [70, 120, 70, 120]
        assert fake.bot_errors == []
