"""End to end: the real bot (discord.py) against the fake Discord, with the real engine
process (random weights, 48 px images, a few iterations). One engine for the module.

Covers the "Tests" list of issue 3: text, slash and reply forms; every bad input;
the per-member limit; !queue; cancel by the author and refusal for others; the engine
killed mid-job; a 413 on upload; the Again / More style buttons, also after a restart.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import os
import re
from pathlib import Path

import pytest

from bot.broker import JobState
from bot.client import StyleBot

from .conftest import SIZE, connected, decode, make_settings, png, shared_bot
from .fake_discord import FakeDiscord

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

PHOTO = ("photo.png", png(48, 36, seed=1))
STYLE = ("starry.png", png(36, 48, seed=2))
SLOW = "iterations:1000"  # a job long enough to act on while it runs (it is always cancelled)


def is_result(message) -> bool:
    return any(name.startswith("stylized-") for name in message.filenames)


async def result_message(fake: FakeDiscord, after: int = 0, timeout: float = 60.0):
    return await fake.wait_for_bot_message(lambda m: is_result(m) and m.id > after, timeout=timeout)


async def running_with_progress(bot: StyleBot, timeout: float = 60.0):
    async with asyncio.timeout(timeout):
        while True:
            running = [j for j in bot.queue.running if j.progress is not None]
            if running:
                return running[0]
            await asyncio.sleep(0.01)


def bot_posts(fake: FakeDiscord) -> list:
    """REST calls that created a message (channel sends, follow-ups, interaction responses)."""
    return [
        r
        for r in fake.requests
        if r.method == "POST"
        and r.status < 300
        and (
            "/messages" in r.path or r.path.startswith("/webhooks/") or r.path.endswith("/callback")
        )
    ]


# --- the three ways to ask -------------------------------------------------------------------


async def test_text_command_acknowledges_updates_and_replies_with_the_picture(engines):
    async with connected(engines) as h:
        fake = h.fake
        command = await fake.send_message(f"!stylize size:{SIZE}", attachments=[PHOTO, STYLE])
        ack = await fake.wait_for_bot_message(
            lambda m: "Queued" in m.content or "Painting" in m.content
        )
        assert ack.reference_id == command.id and "sb:cancel:" in ack.custom_ids[0]
        result = await result_message(fake)
        await h.idle()

        image = decode(result.attachments[0].data)
        assert image.format == "PNG" and max(image.size) == SIZE and image.size == (48, 36)
        assert result.reference_id == command.id
        assert fake.alice.mention in result.content and "photo.png" in result.content
        assert [c.split(":")[2] for c in result.custom_ids] == ["a", "m", "l", "u"]
        # One status message, edited (progress bar and a preview), then cleaned up.
        assert ack.deleted
        texts = [e["content"] for e in ack.edits]
        assert texts[0].startswith("⏳ Queued — you are next in line")
        assert any("▰" in t and "%" in t for t in texts)
        assert any(e["attachments"] == ["preview.png"] for e in ack.edits[1:])
        # Edits are spaced by edit_interval (0.5 s here) and only happen on change.
        times = [datetime.datetime.fromisoformat(e["at"]) for e in ack.edits]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times[1:])]
        assert all(g >= 0.45 for g in gaps), gaps
        assert len(texts) == len({(e["content"], tuple(e["attachments"])) for e in ack.edits})
        # Nobody but the member is ever pinged, and the token never shows.
        for request in bot_posts(fake):
            mentions = request.body.get("allowed_mentions", {})
            assert mentions.get("parse") == [] and not mentions.get("roles")
        assert fake.leaks("fake-token") == []
        assert fake.bot_errors == []
        if os.environ.get(
            "STYLEBOT_E2E_TRANSCRIPT"
        ):  # for the record: what Discord would have seen
            Path(os.environ["STYLEBOT_E2E_TRANSCRIPT"]).write_text(
                fake.transcript(gateway=True) + "\n"
            )


async def test_slash_command(engines):
    async with connected(engines) as h:
        fake = h.fake
        inter = await fake.send_slash_command(
            "stylize",
            {
                "content": PHOTO,
                "style": STYLE,
                "strength": "strong",
                "color": "luminance",
                "seed": 7,
            },
        )
        await fake.wait_for_response(inter)
        assert inter.callback_type == 5  # deferred: downloading and checking can take a while
        result = await result_message(fake)
        await h.idle()
        assert result.interaction is inter and result.id != inter.original_message_id
        image = decode(result.attachments[0].data)
        assert image.size == (48, 36)
        # The inputs ride along so the buttons work after a restart (slash inputs live in no message).
        assert result.filenames[1:] == ["input-photo.jpg", "input-style-1.jpg"]
        assert "strength strong" in result.content and "colour luminance" in result.content
        assert "seed 7" in result.content
        assert all(":r:0:0:7:3:48:" in c for c in result.custom_ids)
        assert fake.messages[inter.original_message_id].deleted  # the status message
        assert fake.bot_errors == []


async def test_reply_to_a_message_with_the_photo(engines):
    async with connected(engines) as h:
        fake = h.fake
        photo_post = await fake.send_message(
            "look at my cat", attachments=[("cat.png", png(48, 36, seed=5))], author=fake.bob
        )
        command = await fake.send_message("!stylize", attachments=[STYLE], reference=photo_post)
        result = await result_message(fake)
        await h.idle()
        assert "**cat.png** in the style of **starry.png**" in result.content
        assert decode(result.attachments[0].data).size == (48, 36)  # the photo's shape
        assert result.reference_id == command.id


async def test_several_style_images_blend(engines):
    async with connected(engines) as h:
        fake = h.fake
        await fake.send_message(
            "!stylize extreme colour:luminance",
            attachments=[PHOTO, STYLE, ("waves.png", png(40, 40, seed=9))],
        )
        result = await result_message(fake)
        await h.idle()
        assert "**starry.png** + **waves.png**" in result.content
        assert "strength extreme" in result.content and "colour luminance" in result.content


# --- bad inputs: a clear reply and nothing queued ---------------------------------------------


def corrupt_png() -> bytes:
    data = png(48, 36, seed=3)
    return data[: len(data) // 2]


BAD_INPUTS = {
    "no image": ([], "I need two images"),
    "one image": ([PHOTO], "only one image (photo.png)"),
    "a text file": (
        [PHOTO, ("notes.txt", b"just some words, not a picture\n" * 20, "image/png")],
        "The style image (notes.txt) is not an image I can read (it looks like text)",
    ),
    "too many bytes": (
        [PHOTO, ("huge.png", png(400, 300, seed=4))],
        "The style image (huge.png) is ",
    ),
    "too many pixels": (
        [("wide.png", png(200, 100, seed=4)), STYLE],
        "The photo (wide.png) is 200×100",
    ),
    "a corrupt PNG": (
        [PHOTO, ("broken.png", corrupt_png())],
        "The style image (broken.png) looks like a PNG",
    ),
    "too many styles": ([PHOTO] + [(f"s{i}.png", png(seed=i)) for i in range(4)], "at most 3"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
async def test_bad_input_gets_a_clear_reply_and_nothing_is_queued(engines, case):
    attachments, expected = BAD_INPUTS[case]
    limits = {"max_bytes": 200_000, "max_pixels": 10_000}
    async with connected(engines, make_settings(limits=limits)) as h:
        fake = h.fake
        command = await fake.send_message("!stylize", attachments=attachments)
        reply = await fake.wait_for_bot_message(lambda m: m.reference_id == command.id)
        await asyncio.sleep(0.2)
        assert expected in reply.content and reply.content.startswith("⚠️")
        assert not reply.custom_ids and not h.bot.queue.waiting and not h.bot.queue.running
        assert len(fake.bot_messages()) == 1
        if case == "too many bytes":
            assert "the limit is 195.3 KB" in reply.content
            assert [
                d.attachment.filename for d in fake.downloads
            ] == []  # refused before downloading


async def test_bad_option_gets_a_clear_reply(engines):
    async with connected(engines) as h:
        command = await h.fake.send_message("!stylize strength:banana", attachments=[PHOTO, STYLE])
        reply = await h.fake.wait_for_bot_message(lambda m: m.reference_id == command.id)
        assert "I don't know the strength 'banana'" in reply.content
        assert not h.bot.queue.waiting and not h.bot.queue.running


async def test_help(engines):
    async with connected(engines) as h:
        await h.fake.send_message("!stylize help")
        reply = await h.fake.wait_for_bot_message()
        assert (
            "strength" in reply.content
            and "/stylize content:<photo> style:<painting>" in reply.content
        )
        inter = await h.fake.send_slash_command("help")
        await h.fake.wait_for_response(inter)
        assert "iterations" in inter.callback_data["content"] and inter.callback_data["flags"] & 64


# --- the queue ------------------------------------------------------------------------------


async def test_per_user_limit_queue_listing_and_positions(engines):
    async with connected(engines, make_settings(bot={"per_user_limit": 1})) as h:
        fake = h.fake
        await fake.send_message(f"!stylize {SLOW}", attachments=[PHOTO, STYLE])
        running = await running_with_progress(h.bot)
        bob_cmd = await fake.send_message("!stylize", attachments=[PHOTO, STYLE], author=fake.bob)
        bob_status = await fake.wait_for_bot_message(lambda m: m.reference_id == bob_cmd.id)
        assert "you are next in line" in bob_status.content
        refused_cmd = await fake.send_message("!stylize", attachments=[PHOTO, STYLE])
        refusal = await fake.wait_for_bot_message(lambda m: m.reference_id == refused_cmd.id)
        assert "You already have 1 job waiting or running (the limit is 1)" in refusal.content
        assert len(h.bot.queue.waiting) == 1

        await fake.send_message("!queue", author=fake.bob)
        listing = await fake.wait_for_bot_message(lambda m: "**Running**" in m.content)
        assert f"`{running.id}` <@{fake.alice.id}>" in listing.content
        assert f"1. `{h.bot.queue.waiting[0].id}` <@{fake.bob.id}>" in listing.content
        # Members are shown as mentions, but nobody is pinged:
        queue_request = next(r for r in fake.requests if r.content and "**Running**" in r.content)
        assert queue_request.body["allowed_mentions"]["parse"] == []

        h.bot.queue.cancel(running.id, by=0, reason="Cancelled.")
        await fake.wait_for_message(
            lambda m: (
                m.id == bob_status.id
                and (m.deleted or "Painting" in m.content or "Starting" in m.content)
            )
        )
        await result_message(fake)


async def test_cancel_by_the_author_and_refusal_for_someone_else(engines):
    async with connected(engines) as h:
        fake = h.fake
        await fake.send_message(f"!stylize {SLOW}", attachments=[PHOTO, STYLE])
        job = await running_with_progress(h.bot)
        status = await fake.wait_for_bot_message(lambda m: f"sb:cancel:{job.id}" in m.custom_ids)

        click = await fake.click_button(status, f"sb:cancel:{job.id}", user=fake.bob)
        await fake.wait_for_response(click)
        refusal = fake.messages[click.original_message_id]
        assert refusal.ephemeral and "Only the person who asked for job" in refusal.content
        await fake.send_message(f"!cancel {job.id}", author=fake.bob)
        text_refusal = await fake.wait_for_bot_message(
            lambda m: "Only the person" in m.content and not m.ephemeral
        )
        assert text_refusal and job.state == JobState.RUNNING

        click = await fake.click_button(status, f"sb:cancel:{job.id}", user=fake.alice)
        await fake.wait_for_response(click)
        assert click.callback_type == 6  # acknowledged quietly: the status message says the rest
        final = await fake.wait_for_message(
            lambda m: m.id == status.id and "Cancelled." in m.content
        )
        assert final.custom_ids == [] and final.filenames == []
        await h.idle()
        assert job.state == JobState.CANCELLED and not any(
            is_result(m) for m in fake.bot_messages()
        )


async def test_moderator_can_cancel_a_waiting_job(engines):
    async with connected(engines) as h:
        fake = h.fake
        await fake.send_message(f"!stylize {SLOW}", attachments=[PHOTO, STYLE])
        running = await running_with_progress(h.bot)
        bob_cmd = await fake.send_message("!stylize", attachments=[PHOTO, STYLE], author=fake.bob)
        bob_status = await fake.wait_for_bot_message(lambda m: m.reference_id == bob_cmd.id)
        waiting = h.bot.queue.waiting[0]
        await fake.send_message(f"!cancel {waiting.id}", author=fake.mod)
        await fake.wait_for_message(
            lambda m: m.id == bob_status.id and "Cancelled by Moderator." in m.content
        )
        await fake.send_message("!cancel")  # alice: her latest job
        await fake.wait_for_bot_message(lambda m: f"Stopping job `{running.id}`" in m.content)
        await h.idle()
        assert running.state == JobState.CANCELLED and waiting.state == JobState.CANCELLED


# --- failures ---------------------------------------------------------------------------------


async def test_engine_killed_mid_job_then_the_next_job_succeeds(engines):
    # Issue 11: a job whose engine dies after its first progress goes back to the front
    # once; when a second engine dies under it, the job is the likely cause and the
    # member is told so. The next member's job then runs on the restarted engine.
    async with connected(engines) as h:
        fake = h.fake
        pool = h.bot.pool
        await fake.send_message(f"!stylize {SLOW}", attachments=[PHOTO, STYLE])
        job = await running_with_progress(h.bot)
        status = await fake.wait_for_bot_message(lambda m: f"sb:cancel:{job.id}" in m.custom_ids)
        bob_cmd = await fake.send_message("!stylize", attachments=[PHOTO, STYLE], author=fake.bob)
        await fake.wait_for_bot_message(lambda m: m.reference_id == bob_cmd.id)
        restarts = pool.restarts
        pool.clients[0].process.kill()  # as the out-of-memory killer would

        async with asyncio.timeout(90):  # back at the front, and running again
            while not (job.engine_deaths == 1 and job.progress and job in h.bot.queue.running):
                await asyncio.sleep(0.01)
        assert not any(j.user_id == fake.bob.id for j in h.bot.queue.running)  # bob still waits
        pool.clients[0].process.kill()
        crashed = await fake.wait_for_message(
            lambda m: m.id == status.id and "more than once" in m.content, timeout=30
        )
        assert f"job `{job.id}`" in crashed.content and crashed.custom_ids == []
        assert "smaller size" in crashed.content
        result = await result_message(fake, timeout=90)  # bob's job, on the restarted engine
        assert fake.bob.mention in result.content
        assert pool.restarts == restarts + 2


async def test_a_job_past_the_time_limit_is_answered_with_its_best_image_marked(engines):
    settings = make_settings(bot={"job_timeout": 6.0})
    async with connected(engines, settings) as h:
        h.bot.broker.job_timeout = settings.bot.job_timeout  # the shared test broker's
        fake = h.fake
        await fake.send_message(f"!stylize {SLOW}", attachments=[PHOTO, STYLE])
        result = await result_message(fake, timeout=60)
        assert "**Stopped early**" in result.content and "time limit of 6 s" in result.content
        assert "of 1000 iterations" in result.content
        assert decode(result.attachments[0].data).size == (32, 24)  # the 32-px preview
        await h.idle()
        assert fake.bot_errors == []


async def test_upload_too_large_is_retried_smaller(engines):
    async with connected(engines) as h:
        fake = h.fake
        fake.fail_next("POST", "/channels/{channel_id}/messages", 413, when=lambda r: bool(r.files))
        await fake.send_message("!stylize", attachments=[PHOTO, STYLE])
        result = await result_message(fake)
        await h.idle()
        refused = [r for r in fake.requests if r.injected]
        assert len(refused) == 1 and refused[0].filenames[0].endswith(".png")
        assert result.filenames[0].endswith(".jpg") and "sent as JPEG" in result.content
        assert decode(result.attachments[0].data).format == "JPEG"
        assert fake.bot_errors == []


# --- buttons ----------------------------------------------------------------------------------


async def test_again_and_more_style_buttons_also_after_a_restart(engines):
    async with FakeDiscord() as fake:
        settings = make_settings()
        queue, pool = engines

        first_bot = shared_bot(settings, queue, pool)
        async with fake.running(first_bot):
            command = await fake.send_message("!stylize seed:11", attachments=[PHOTO, STYLE])
            first = await result_message(fake)
            await fake.send_slash_command("stylize", {"content": PHOTO, "style": STYLE, "seed": 5})
            slash_first = await result_message(fake, after=first.id)
            while queue.running or queue.waiting:
                await asyncio.sleep(0.02)
            await first_bot.delivery.wait()
        assert re.search(r"seed 11\b", first.content)

        # A new process would start from nothing: a new bot with no memory of the jobs.
        second_bot = shared_bot(settings, queue, pool)
        async with fake.running(second_bot):
            again_id = next(c for c in first.custom_ids if c.startswith("sb:run:a:"))
            click = await fake.click_button(first, again_id, user=fake.bob)
            again = await result_message(fake, after=slash_first.id)
            assert click.callback_type == 5 and fake.bob.mention in again.content
            assert not re.search(r"seed 11\b", again.content)  # Again = a new seed
            assert decode(again.attachments[0].data).size == (48, 36)
            # The source was re-fetched from Discord: the member's message, by its id.
            assert any(
                r.method == "GET" and r.path.endswith(f"/messages/{command.id}")
                for r in fake.requests
            )

            more_id = next(c for c in slash_first.custom_ids if c.startswith("sb:run:m:"))
            await fake.click_button(slash_first, more_id)
            more = await result_message(fake, after=again.id)
            assert (
                "strength strong" in more.content and "seed 5" in more.content
            )  # same seed, 3× the style
            assert more.filenames[1:] == ["input-photo.jpg", "input-style-1.jpg"]
            assert "**photo.png** in the style of **starry.png**" in more.content  # names kept
            assert more.attachments[2].description == "Input style image: starry.png"
            while queue.running or queue.waiting:
                await asyncio.sleep(0.02)
            await second_bot.delivery.wait()
            assert fake.bot_errors == []
        if os.environ.get("STYLEBOT_E2E_TRANSCRIPT"):
            path = Path(os.environ["STYLEBOT_E2E_TRANSCRIPT"]).with_suffix(".buttons.txt")
            path.write_text(fake.transcript(gateway=True) + "\n")


async def test_again_when_the_source_message_was_deleted(engines):
    async with connected(engines) as h:
        fake = h.fake
        command = await fake.send_message("!stylize", attachments=[PHOTO, STYLE])
        result = await result_message(fake)
        await h.idle()
        await fake.delete_user_message(command)
        click = await fake.click_button(result, result.custom_ids[0])
        answer = await fake.wait_for_message(
            lambda m: (
                m.id == click.original_message_id and "can't find the original message" in m.content
            )
        )
        assert not answer.loading and not h.bot.queue.waiting


# --- Discord errors and access rules ------------------------------------------------------------


async def test_forbidden_upload_and_rate_limited_edits_are_handled(engines):
    async with connected(engines) as h:
        fake = h.fake
        fake.fail_next("PATCH", "/channels/{channel_id}/messages/{message_id}", 429, times=2)
        fake.fail_next("POST", "/channels/{channel_id}/messages", 403, when=lambda r: bool(r.files))
        await fake.send_message("!stylize", attachments=[PHOTO, STYLE])
        final = await fake.wait_for_bot_message(
            lambda m: "not allowed to upload" in m.content, timeout=60
        )
        await h.idle()
        assert "Attach Files" in final.content and final.custom_ids == []
        assert (
            sum(1 for r in fake.requests if r.injected and r.status == 429) == 2
        )  # retried by discord.py
        assert fake.bot_errors == []


async def test_channel_and_role_rules(engines):
    async with FakeDiscord() as fake:
        settings = make_settings(
            bot={"allowed_channels": [fake.art.id], "allowed_roles": [fake.mod_role_id]}
        )
        queue, pool = engines
        bot = shared_bot(settings, queue, pool)
        async with fake.running(bot):
            await fake.send_message("!stylize", attachments=[PHOTO, STYLE], author=fake.mod)
            wrong_channel = await fake.wait_for_bot_message()
            assert f"I only paint in <#{fake.art.id}>" in wrong_channel.content
            await fake.send_message("!stylize", attachments=[PHOTO, STYLE], channel=fake.art)
            no_role = await fake.wait_for_bot_message(lambda m: m.channel_id == fake.art.id)
            assert "Only members with one of these roles" in no_role.content
            inter = await fake.send_slash_command("queue", channel=fake.art)
            await fake.wait_for_response(inter)
            assert (
                "Only members" in inter.callback_data["content"]
                and inter.callback_data["flags"] & 64
            )
            assert not queue.waiting and not queue.running and fake.downloads == []


async def test_an_answer_posted_just_before_a_crash_is_not_posted_again(engines, tmp_path):
    """The bot was killed after posting a result and before marking it delivered: on the
    next start it finds the result in the channel and does not post it twice."""
    from bot.broker import Broker
    from bot.broker.journal import Journal
    from engine.jobs import JobRequest, JobResult

    queue, pool = engines
    journal = Journal(tmp_path / "jobs.sqlite3")
    async with FakeDiscord() as fake:
        # What the channel held when the bot died (posted as the bot: no bot is connected
        # to receive a member's message now, and only the ids matter here).
        command = await fake.send_message("!stylize", author=fake.bot_user)
        status = await fake.send_message("🎨 Painting", author=fake.bot_user, reference=command)
        request = JobRequest("0badc0de", PHOTO[1], (STYLE[1],))
        journal.add(
            request, guild_id=fake.guild_id, channel_id=fake.general.id, user_id=fake.alice.id,
            label="photo.png in the style of starry.png",
            meta={"options": {}, "source": "m", "reply_to": command.id},
        )  # fmt: skip
        journal.set_status_message("0badc0de", fake.general.id, status.id)
        journal.answer("0badc0de", "done", JobResult("0badc0de", PHOTO[1], "png", 48, 36, 1.0, 1, 4, 0.1))
        await fake.send_message(
            "here it is", author=fake.bot_user, attachments=[("stylized-0badc0de.png", PHOTO[1])]
        )
        settings = make_settings()
        bot = StyleBot(
            settings=settings,
            broker=Broker(queue=queue, runner=pool, journal=journal),
            own_engines=False,
        )
        async with fake.running(bot, token=settings.token.reveal()):
            async with asyncio.timeout(10):
                while not journal.delivered("0badc0de"):
                    await asyncio.sleep(0.05)
        results = [m for m in fake.messages.values() if "stylized-0badc0de.png" in m.filenames]
        assert len(results) == 1 and fake.messages[status.id].deleted
