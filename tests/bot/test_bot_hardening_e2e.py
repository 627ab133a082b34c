"""Issue 11 end to end, as members see it: the real bot against the fake Discord, the
real engine (random weights, 48 px) and real decoder processes. One engine per module.

Slow and memory-hungry images are stopped and named without holding up anyone else;
validations in progress count against the per-member limit; thin images and tiny
sizes are refused with a reason; overlong options get one line; masked links are never
echoed; colour aliases work; the member's own photo beats the replied-to one;
cooldowns answer with the seconds to wait.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re

import numpy as np
import pytest
from PIL import Image

from .conftest import connected, make_settings, png

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(180)]

PHOTO = ("photo.png", png(48, 36, seed=1))
STYLE = ("starry.png", png(36, 48, seed=2))


def grey16(width: int, height: int) -> bytes:
    """16-bit greyscale PNG: 314 KB at 25 MP, and 150 MB by the header's estimate."""
    y, x = np.mgrid[0:height, 0:width]
    buf = io.BytesIO()
    Image.fromarray(((x * 7 + y * 3) % 65536).astype(np.uint16)).save(buf, "PNG")
    return buf.getvalue()


def slow_rgba(width: int = 5000, height: int = 5000) -> bytes:
    """A patterned RGBA PNG: 123 KB at 25 MP, about 2.5 s of CPU to decode and shrink."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x % 256, y % 256, (x // 20 + y // 20) % 256], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("RGBA").save(buf, "PNG")
    return buf.getvalue()


def is_result(message) -> bool:
    return any(name.startswith("stylized-") for name in message.filenames)


async def test_a_slow_image_is_stopped_and_named_while_another_member_is_acknowledged(engines):
    settings = make_settings(bot={"decode_timeout": 0.5})
    async with connected(engines, settings) as h:
        fake = h.fake
        await asyncio.sleep(1.0)  # the decoders warm up, as they would long before anyone asks
        slow = await fake.send_message("!stylize", attachments=[PHOTO, ("slow.png", slow_rgba())])
        await asyncio.sleep(0.2)  # alice's slow image is being decoded now
        quick = await fake.send_message("!stylize", attachments=[PHOTO, STYLE], author=fake.bob)
        first = await fake.wait_for_bot_message(
            lambda m: m.reference_id in (slow.id, quick.id), timeout=60
        )
        # Bob is acknowledged first: he never waits behind alice's image.
        assert first.reference_id == quick.id and "Queued" in first.content
        refusal = await fake.wait_for_bot_message(lambda m: m.reference_id == slow.id, timeout=60)
        assert refusal.content.startswith("⚠️ The style image (slow.png) takes too long to open")
        assert "0.5 s" in refusal.content and not refusal.custom_ids
        assert h.bot.cog.decoder.kills == 1
        assert [j.user_id for j in h.bot.queue.waiting + h.bot.queue.running] in ([fake.bob.id], [])


async def test_a_decompression_bomb_within_the_limits_is_refused_before_decoding(engines):
    settings = make_settings(bot={"decode_memory": 256})
    async with connected(engines, settings) as h:
        bomb = grey16(5000, 5000)  # 314 KB and 25 MP: inside max_bytes and max_pixels
        command = await h.fake.send_message("!stylize", attachments=[("bomb.png", bomb), STYLE])
        reply = await h.fake.wait_for_bot_message(lambda m: m.reference_id == command.id, timeout=30)
        assert "The photo (bomb.png) (5000×5000) needs too much memory to open safely" in reply.content
        assert h.bot.cog.decoder.decodes == 0 and not h.bot.queue.waiting


async def test_validations_in_progress_count_against_the_member_limit(engines):
    settings = make_settings(bot={"per_user_limit": 2, "decode_timeout": 60})
    async with connected(engines, settings) as h:
        fake = h.fake
        heavy = ("slow.png", slow_rgba())  # seconds to decode
        commands = [
            await fake.send_message("!stylize", attachments=[(f"p{i}.png", PHOTO[1]), heavy])
            for i in range(3)
        ]
        third = await fake.wait_for_bot_message(lambda m: m.reference_id == commands[2].id, timeout=60)
        assert "being checked (the limit is 2)" in third.content
        assert not any(d.attachment.filename == "p2.png" for d in fake.downloads)  # never fetched
        for job in h.bot.queue.waiting + h.bot.queue.running:
            h.bot.queue.cancel(job.id, by=0, reason="test")


@pytest.mark.parametrize(
    ("attachments", "options", "expected"),
    [
        ([("strip.png", png(3000, 2)), STYLE], "", "The photo (strip.png) is only 3000×2 pixels"),
        (
            [("strip.png", png(2000, 40)), STYLE],
            "size:512",
            "The photo (strip.png) (2000×40) is too thin for this size: at 512 px it would be 512×10",
        ),
        ([PHOTO, STYLE], "size:16", "Size 16 is too small: use at least 32 pixels"),
    ],
)
async def test_thin_images_and_tiny_sizes_get_a_clear_reply(engines, attachments, options, expected):
    async with connected(engines) as h:
        command = await h.fake.send_message(f"!stylize {options}", attachments=attachments)
        reply = await h.fake.wait_for_bot_message(lambda m: m.reference_id == command.id, timeout=30)
        assert reply.content.startswith("⚠️") and expected in reply.content
        assert not h.bot.queue.waiting and not h.bot.queue.running


async def test_an_overlong_option_gets_one_line_and_logs_one_line(engines, caplog):
    async with connected(engines) as h:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            command = await h.fake.send_message("!stylize " + "9" * 1870, attachments=[PHOTO, STYLE])
            reply = await h.fake.wait_for_bot_message(lambda m: m.reference_id == command.id)
        assert reply.content.startswith("⚠️ That strength is 1870 characters long")
        assert "\n" not in reply.content and len(reply.content) < 300
        ours = [r for r in caplog.records if r.name.startswith("bot")]
        assert len(ours) == 1 and ours[0].exc_info is None and "1870-character" in ours[0].getMessage()
        assert h.fake.downloads == []


async def test_masked_links_and_markdown_are_never_echoed(engines):
    async with connected(engines) as h:
        command = await h.fake.send_message(
            "!stylize [nitro](https://evil.example)", attachments=[PHOTO, STYLE]
        )
        reply = await h.fake.wait_for_bot_message(lambda m: m.reference_id == command.id)
        assert "I don't know the strength" in reply.content
        assert "[nitro](" not in reply.content and "https://evil" not in reply.content
        await h.fake.send_message("!cancel `@everyone [x](https://evil.example)`")
        answer = await h.fake.wait_for_bot_message(lambda m: "no job" in m.content)
        assert "[x](" not in answer.content and "@everyone" not in answer.content


@pytest.mark.parametrize(("option", "shown"), [("colour:lum", "luminance"), ("color:hist", "histogram")])
async def test_colour_aliases(engines, option, shown):
    async with connected(engines) as h:
        await h.fake.send_message(f"!stylize {option}", attachments=[PHOTO, STYLE])
        result = await h.fake.wait_for_bot_message(is_result, timeout=60)
        assert f"colour {shown}" in result.content


async def test_the_members_own_photo_wins_over_the_replied_to_one(engines):
    async with connected(engines) as h:
        fake = h.fake
        cat = await fake.send_message(
            "my cat", attachments=[("cat.png", png(48, 36, seed=5))], author=fake.bob
        )
        await fake.send_message("!stylize", attachments=[PHOTO, STYLE], reference=cat)
        result = await fake.wait_for_bot_message(is_result, timeout=60)
        assert "**photo.png** in the style of **starry.png**" in result.content
        assert not any(d.attachment.filename == "cat.png" for d in fake.downloads)


async def test_cooldowns_for_stylize_queue_and_buttons(engines):
    settings = make_settings(
        bot={"cooldown_stylize": 60.0, "cooldown_queue": 60.0, "cooldown_buttons": 60.0}
    )
    async with connected(engines, settings) as h:
        fake = h.fake
        await fake.send_message("!stylize", attachments=[PHOTO, STYLE])
        result = await fake.wait_for_bot_message(is_result, timeout=60)
        await fake.send_message("!stylize", attachments=[PHOTO, STYLE])
        wait = await fake.wait_for_bot_message(lambda m: "Not so fast" in m.content)
        assert re.search(r"please wait (59|60) s", wait.content)
        assert wait.content.count("\n") == 0 and len(fake.downloads) == 2  # nothing fetched
        await fake.send_message("!stylize", attachments=[PHOTO, STYLE], author=fake.bob)  # bob may
        await fake.wait_for_bot_message(lambda m: "Queued" in m.content or is_result(m) and m.id > result.id, timeout=60)

        await fake.send_message("!queue")
        await fake.wait_for_bot_message(lambda m: "Running" in m.content or "Nothing is waiting" in m.content or "Waiting" in m.content)
        await fake.send_message("!queue")
        await fake.wait_for_bot_message(lambda m: m.content.count("Not so fast") and m.id > wait.id)

        again = next(c for c in result.custom_ids if c.startswith("sb:run:a:"))
        first = await fake.click_button(result, again, user=fake.mod)
        await fake.wait_for_response(first)
        second = await fake.click_button(result, again, user=fake.mod)
        await fake.wait_for_response(second)
        assert second.callback_type == 4 and second.callback_data["flags"] & 64  # ephemeral
        assert "Not so fast" in second.callback_data["content"]
        await h.idle(60)
