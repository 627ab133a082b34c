"""Issue 13 end to end: DMs, server settings, saved styles, history, languages; the real
bot against the fake Discord, the real engine (random weights, 48 px) for the jobs, and
the community store in a real SQLite file beside the job journal where a restart counts.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.broker import Broker
from bot.broker.journal import Journal
from bot.client import StyleBot
from bot.i18n import CATALOGUE, t

from .conftest import SIZE, Harness, connected, make_settings, png
from .fake_discord import FakeDiscord, FakeMessage

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

PHOTO = ("photo.png", png(48, 36, seed=1))
STYLE = ("starry.png", png(36, 48, seed=2))
MONET = ("monet.png", png(48, 48, seed=3))


def is_result(message: FakeMessage) -> bool:
    return any(name.startswith("stylized-") for name in message.filenames)


async def result_after(fake: FakeDiscord, after: int = 0, timeout: float = 60.0) -> FakeMessage:
    return await fake.wait_for_bot_message(lambda m: is_result(m) and m.id > after, timeout=timeout)


async def answer(fake: FakeDiscord, inter, timeout: float = 10.0) -> FakeMessage:
    """The (first) message the bot answered an interaction with, once it has content."""
    await fake.wait_for_response(inter, timeout)
    return await fake.wait_for_message(
        lambda m: m.interaction is inter and (m.content or m.embeds) and not m.loading,
        timeout,
    )


async def reply_to(fake: FakeDiscord, message: FakeMessage, timeout: float = 10.0) -> FakeMessage:
    """The bot's first message after `message` in its channel (a reply or not)."""
    return await fake.wait_for_bot_message(
        lambda m: m.channel_id == message.channel_id and m.id > message.id, timeout
    )


def fields(message: FakeMessage) -> dict[str, str]:
    return {f["name"]: f["value"] for e in message.embeds for f in e.get("fields", [])}


@contextlib.asynccontextmanager
async def on_file(
    engines, path: Path, settings=None, **fake_options: Any
) -> AsyncIterator[Harness]:
    """A bot whose journal (and so its community store) is the SQLite file `path`."""
    queue, pool = engines
    settings = settings or make_settings()
    queue.max_waiting, queue.per_user_limit = settings.bot.queue_size, settings.bot.per_user_limit
    async with FakeDiscord(**fake_options) as fake:
        broker = Broker(queue=queue, runner=pool, journal=Journal(path))
        bot = StyleBot(settings=settings, broker=broker, own_engines=False)
        async with fake.running(bot):
            harness = Harness(fake, bot)
            yield harness
            await harness.idle()


# --- DMs -------------------------------------------------------------------------------------


async def test_a_dm_job_completes_in_text_and_slash_form(engines):
    async with connected(engines) as h:
        fake = h.fake
        dm = fake.dm_channel(fake.alice)
        command = await fake.send_message("!stylize strong", channel=dm, attachments=[PHOTO, STYLE])
        result = await result_after(fake)
        assert result.channel_id == dm.id and result.reference_id == command.id
        assert "strength strong" in result.content
        inter = await fake.send_slash_command(
            "stylize", {"content": PHOTO, "style": STYLE}, channel=dm
        )
        second = await result_after(fake, result.id)
        assert second.channel_id == dm.id and second.interaction is inter
        await h.idle()
        # Offered in DMs (context 1 = the bot's DM) as well as in servers.
        assert 1 in fake.find_command("stylize")["contexts"]
        # A server's settings and saved styles are not offered there.
        assert 1 not in fake.find_command("style")["contexts"]
        assert 1 not in fake.find_command("stylebot")["contexts"]
        refused = await fake.send_message("!style list", channel=dm)
        assert (await reply_to(fake, refused)).content == (
            "⚠️ That works in a server only: saved styles and settings belong to a server."
        )
        assert fake.bot_errors == []


async def test_a_host_can_turn_dms_off(engines):
    settings = make_settings()
    settings = type(settings)(**{**settings.__dict__, "community": type(settings.community)(allow_dms=False)})
    async with connected(engines, settings) as h:
        fake = h.fake
        dm = fake.dm_channel(fake.alice)
        command = await fake.send_message("!stylize", channel=dm, attachments=[PHOTO, STYLE])
        refusal = await reply_to(fake, command)
        assert "direct messages" in refusal.content
        assert 1 not in fake.find_command("stylize")["contexts"]
        assert not h.bot.queue.waiting and not h.bot.queue.running


# --- server settings ------------------------------------------------------------------------


async def test_server_settings_change_the_defaults_and_survive_a_restart(engines, tmp_path):
    path = tmp_path / "jobs.sqlite3"
    async with on_file(engines, path) as h:
        fake = h.fake
        inter = await fake.send_slash_command(
            "stylebot settings",
            {"strength": "strong", "color": "luminance", "size": str(SIZE), "limit": "1"},
            user=fake.owner,
        )
        shown = await answer(fake, inter)
        assert shown.ephemeral and "4 setting(s) changed" in shown.content
        values = fields(shown)
        assert values["Default strength"] == "strong" and values["Largest size"] == "48"
        assert values["Jobs per member"] == "1"
        guild = fake.guild_id
        assert f"<@{fake.owner.id}>: Largest size - → 48" in values["Recent changes"]
        # A member's job now gets the server's defaults and caps.
        command = await fake.send_message("!stylize size:500", attachments=[PHOTO, STYLE])
        result = await result_after(fake)
        assert result.reference_id == command.id
        assert "strength strong" in result.content and "colour luminance" in result.content
        assert "48×36" in result.content and "(size capped at 48 px)" in result.content
        await h.idle()
    async with on_file(engines, path, guild_id=guild) as h:  # a restart: a new bot, same file
        fake = h.fake
        inter = await fake.send_slash_command("stylebot settings", {})
        values = fields(await answer(fake, inter))
        assert values["Default strength"] == "strong" and values["Largest size"] == "48"
        assert values["Default colour mode"] == "luminance"


async def test_settings_need_manage_server_and_stay_under_the_hosts_caps(engines):
    async with connected(engines) as h:
        fake = h.fake
        refused = await answer(fake, await fake.send_slash_command("stylebot settings", {"size": "256"}))
        assert "Manage Server" in refused.content and not refused.embeds
        too_big = await answer(
            fake,
            await fake.send_slash_command("stylebot settings", {"size": "5000"}, user=fake.owner),
        )
        assert too_big.content == (
            "⚠️ Largest size 5000 is more than this host allows (1024). Pick 1024 or less."
        )
        fake.bob.locale = "ja"
        japanese = await answer(
            fake,
            await fake.send_slash_command("stylebot settings", {"iterations": "5000"}, user=fake.bob),
        )
        assert "サーバー管理" in japanese.content
        command = await fake.send_message("!stylebot settings 反復:5000", author=fake.owner)
        over = await reply_to(fake, command)
        assert "最大反復回数" not in over.content  # the owner's locale is English here
        assert "Most iterations 5000 is more than this host allows (1000)" in over.content
        assert (await h.bot.community.server(fake.guild_id)).max_iterations is None


async def test_server_channels_limit_where_members_can_paint(engines):
    async with connected(engines) as h:
        fake = h.fake
        command = await fake.send_message(
            f"!stylebot settings channels:{fake.art.mention}", author=fake.owner
        )
        assert "1 setting(s) changed" in (await reply_to(fake, command)).content
        asked = await fake.send_message("!stylize", attachments=[PHOTO, STYLE])
        refusal = await reply_to(fake, asked)
        assert refusal.content == f"This server uses me only in {fake.art.mention}."
        assert not h.bot.queue.waiting
        # The groups alone: `!stylebot` shows the settings, `!style` the gallery.
        shown = await fake.send_message("!stylebot", channel=fake.art)
        assert fields(await reply_to(fake, shown))["Channels"] == fake.art.mention
        gallery = await fake.send_message("!style", channel=fake.art)
        assert "no saved styles yet" in (await reply_to(fake, gallery)).content


# --- saved styles -------------------------------------------------------------------------------


async def test_a_saved_style_is_used_by_name_and_invisible_from_another_server(engines, tmp_path):
    path = tmp_path / "jobs.sqlite3"
    async with on_file(engines, path) as h:
        fake = h.fake
        save = await fake.send_message("!style save Monet", attachments=[MONET])
        saved = await reply_to(fake, save)
        assert saved.content == "Saved `Monet` for this server (1 of 25 styles)."
        assert saved.embeds[0]["thumbnail"]["url"] == "attachment://thumb.jpg"
        command = await fake.send_message("!stylize style:monet", attachments=[PHOTO])
        result = await result_after(fake)
        assert result.reference_id == command.id and "in the style of **Monet**" in result.content
        # Its inputs ride on the result, so Again works though the style is in no message.
        assert result.filenames[1:] == ["input-photo.jpg", "input-style-1.jpg"]
        again = next(c for c in result.custom_ids if c.startswith("sb:run:a:"))
        await fake.click_button(result, again, user=fake.bob)
        rerun = await result_after(fake, result.id)
        assert fake.bob.mention in rerun.content and "in the style of **Monet**" in rerun.content
        result = rerun
        # The slash form, with the name offered by autocomplete.
        typing = await fake.send_autocomplete("stylize", {"saved": "mo"}, "saved")
        await fake.wait_for_response(typing)
        assert typing.autocomplete_choices == [{"name": "Monet", "value": "Monet"}]
        inter = await fake.send_slash_command("stylize", {"content": PHOTO, "saved": "Monet"})
        second = await result_after(fake, result.id)
        assert second.interaction is inter and "**Monet**" in second.content
        await h.idle()
        guild = fake.guild_id
    async with on_file(engines, path) as other:  # another server, the same store
        fake = other.fake
        assert fake.guild_id != guild
        command = await fake.send_message("!stylize style:Monet", attachments=[PHOTO])
        unknown = await reply_to(fake, command)
        assert unknown.content == "⚠️ This server has no saved style called `Monet`. Saved here: -."
        listing = await fake.send_message("!style list")
        assert "no saved styles yet" in (await reply_to(fake, listing)).content
        typing = await fake.send_autocomplete("stylize", {"saved": ""}, "saved")
        await fake.wait_for_response(typing)
        assert typing.autocomplete_choices == []
        assert not other.bot.queue.waiting


async def test_saving_styles_refuses_duplicates_over_cap_and_non_images(engines):
    settings = make_settings()
    community = type(settings.community)(max_saved_styles=2, max_saved_style_bytes=10**6)
    settings = type(settings)(**{**settings.__dict__, "community": community})
    async with connected(engines, settings) as h:
        fake = h.fake
        first = await fake.send_message("!style save monet", attachments=[MONET])
        assert "Saved `monet`" in (await reply_to(fake, first)).content
        again = await fake.send_message("!style save MONET", attachments=[STYLE])
        assert (await reply_to(fake, again)).content == (
            "⚠️ This server already has a style called `MONET`. Pick another name, or delete "
            "the old one first with `/style delete`."
        )
        text = await fake.send_message("!style save notes", attachments=[("notes.txt", b"hi")])
        assert (await reply_to(fake, text)).content == (
            "⚠️ I can't use notes.txt as a style: it isn't an image I can read. "
            "Send a PNG, JPEG, WebP, GIF or BMP."
        )
        name = await fake.send_message("!style save bad/name", attachments=[STYLE])
        assert "1 to 32 letters" in (await reply_to(fake, name)).content
        second = await fake.send_message("!style save starry", attachments=[STYLE])
        assert "(2 of 2 styles)" in (await reply_to(fake, second)).content
        fake.bob.locale = "ja"
        over = await fake.send_slash_command(
            "style save", {"name": "third", "image": PHOTO}, user=fake.bob
        )
        refused = await answer(fake, over)
        assert refused.content == (
            "⚠️ このサーバーの保存済みスタイルは、このホストの上限の 2 個に達しています。"
            "先に `/style delete` でどれかを削除してください。"
        )
        assert [s.name for s in await h.bot.community.styles(fake.guild_id)] == ["monet", "starry"]


async def test_gallery_pages_and_delete_rights(engines):
    async with connected(engines) as h:
        fake = h.fake
        for i in range(7):
            save = await fake.send_message(f"!style save s{i}", attachments=[("p.png", png(40, 40, seed=i))])
            await reply_to(fake, save)
        inter = await fake.send_slash_command("style list", {})
        gallery = await answer(fake, inter)
        assert gallery.content.startswith("**Saved styles** (7), page 1 of 2:")
        assert len(gallery.embeds) == 5 and len(gallery.attachments) == 5
        assert [e["title"] for e in gallery.embeds] == ["s0", "s1", "s2", "s3", "s4"]
        await fake.click_button(gallery, "sb:styles:1:n")
        await fake.wait_until(lambda: "page 2 of 2" in fake.messages[gallery.id].content)
        page2 = fake.messages[gallery.id]
        assert [e["title"] for e in page2.embeds] == ["s5", "s6"] and len(page2.attachments) == 2
        # Only the saver or a moderator may delete.
        refused = await answer(fake, await fake.send_slash_command("style delete", {"name": "s1"}, user=fake.bob))
        assert "Only the member who saved `s1`" in refused.content
        done = await answer(fake, await fake.send_slash_command("style delete", {"name": "s1"}, user=fake.mod))
        assert done.content == "Deleted the style `s1`."
        mine = await answer(fake, await fake.send_slash_command("style delete", {"name": "s2"}))
        assert mine.content == "Deleted the style `s2`."
        assert len(await h.bot.community.styles(fake.guild_id)) == 5


# --- history ---------------------------------------------------------------------------------------


async def test_history_lists_and_reruns_with_new_settings_and_can_be_deleted(engines):
    async with connected(engines) as h:
        fake = h.fake
        await fake.send_message("!stylize seed:5", attachments=[PHOTO, STYLE])
        first = await result_after(fake)
        await h.idle()
        inter = await fake.send_slash_command("history", {})
        listing = await answer(fake, inter)
        assert listing.ephemeral
        assert "**Your last 1 result(s) here**" in listing.content
        link = f"https://discord.com/channels/{fake.guild_id}/{fake.general.id}/{first.id}"
        assert f"[jump]({link})" in listing.content
        assert "photo.png × starry.png — strength normal, 48 px, 4 iterations, colour none, seed 5" in listing.content
        run_id = next(c for c in listing.custom_ids if c.startswith("sb:hist:run:"))
        press = await fake.click_button(listing, run_id)
        await fake.wait_for_response(press)
        assert press.callback_type == 9  # a form with the old settings to change
        await fake.submit_modal(press, {"strength": "strong", "size": str(SIZE), "iterations": "4", "color": "luminance", "seed": "9"})
        again = await result_after(fake, first.id)
        assert "strength strong" in again.content and "colour luminance" in again.content
        assert "seed 9" in again.content and "48×36" in again.content
        await h.idle()
        entries = await h.bot.community.history(fake.guild_id, fake.alice.id)
        assert [e.seed for e in entries] == [9, 5]
        # Another member sees none of it; the member can delete theirs.
        bob = await answer(fake, await fake.send_slash_command("history", {}, user=fake.bob))
        assert bob.content == "You have no results here yet (or they expired)."
        gone = await answer(fake, await fake.send_slash_command("history", {"action": "delete"}))
        assert gone.content == "Done: I forgot your history here (2 result(s))."
        assert await h.bot.community.history(fake.guild_id, fake.alice.id) == []


# --- languages -----------------------------------------------------------------------------------


async def test_the_language_follows_the_member_then_discord_then_the_server(engines):
    async with connected(engines) as h:
        fake = h.fake
        fake.bob.locale = "ja"
        english = await answer(fake, await fake.send_slash_command("stylebot settings", {}))
        japanese = await answer(fake, await fake.send_slash_command("stylebot settings", {}, user=fake.bob))
        assert english.content == "How stylebot works in this server:"
        assert japanese.content == "このサーバーでの stylebot の設定です："
        assert "最大サイズ" in fields(japanese)
        # The server's language counts where no interaction locale does (text commands).
        command = await fake.send_message("!stylebot settings language:ja", author=fake.owner)
        changed = await reply_to(fake, command)
        assert changed.content.startswith("保存しました（1 件変更）")
        listing = await fake.send_message("!style list")
        assert "まだ保存済みスタイルがありません" in (await reply_to(fake, listing)).content
        # The member's own setting comes first.
        mine = await fake.send_message("!language en")
        assert (await reply_to(fake, mine)).content == "Okay! I'll talk to you in English from now on."
        listing = await fake.send_message("!style list")
        assert "no saved styles yet" in (await reply_to(fake, listing)).content


NAME = re.compile(r"^[-_\w]{1,32}$")


async def test_slash_commands_are_offered_in_japanese(engines):
    async with connected(engines) as h:
        fake = h.fake
        commands = fake.commands[None]
        stylize = fake.find_command("stylize")
        assert stylize["name_localizations"] == {"ja": "画風変換"}
        options = {o["name"]: o for o in stylize["options"]}
        assert options["strength"]["name_localizations"] == {"ja": "強さ"}
        assert options["content"]["description_localizations"] == {"ja": "描き直す写真"}
        settings = next(o for o in fake.find_command("stylebot")["options"] if o["name"] == "settings")
        assert settings["name_localizations"] == {"ja": "設定"}

        def walk(items, path):
            """(catalogue key, command or option) for everything synced."""
            for item in items:
                if item.get("type", 1) in (1, 2) and "options" in item or not path:
                    key = "cmd." + ".".join([*path, item["name"]])
                    yield key, item
                    yield from walk(item.get("options", []), [*path, item["name"]])
                else:
                    yield "cmd." + ".".join(path) + f".opt.{item['name']}", item

        seen = 0
        for key, item in walk(commands, []):
            # Discord's limits hold in Japanese too, and the English catalogue says what the
            # code says (so a translator reads the real English).
            for name in (item["name"], *item.get("name_localizations", {}).values()):
                assert NAME.match(name) and name == name.lower(), (key, name)
            for text in (item["description"], *item.get("description_localizations", {}).values()):
                assert 1 <= len(text) <= 100, (key, text)
            assert t("en", f"{key}.name") == item["name"], key
            assert t("en", f"{key}.description") == item["description"], key
            assert "ja" in item.get("description_localizations", {}), key
            seen += 1
        assert seen == len([k for k in CATALOGUE.texts["en"] if k.startswith("cmd.") and k.endswith(".name")])


async def test_the_prefix_command_takes_japanese_option_words(engines):
    async with connected(engines) as h:
        fake = h.fake
        command = await fake.send_message(
            f"!stylize 強め サイズ:{SIZE} 色:写真の色 シード:3", attachments=[PHOTO, STYLE]
        )
        result = await result_after(fake)
        assert result.reference_id == command.id
        assert "strength strong" in result.content and "colour luminance" in result.content
        assert "seed 3" in result.content
        save = await fake.send_message("!スタイル 保存 浮世絵", attachments=[MONET])  # !style save
        assert "`浮世絵`" in (await reply_to(fake, save)).content
        command = await fake.send_message("!stylize 強さ:控えめ スタイル:浮世絵", attachments=[PHOTO])
        second = await result_after(fake, result.id)
        assert second.reference_id == command.id and "**浮世絵**" in second.content
        assert "strength subtle" in second.content


def texts_of(message: FakeMessage) -> list[str]:
    return [e["content"] for e in message.edits] + [message.content]


async def test_a_japanese_member_gets_japanese_replies_and_an_english_one_english(engines):
    async with connected(engines) as h:
        fake = h.fake
        fake.bob.locale = "ja"
        inter = await fake.send_slash_command(
            "stylize", {"content": PHOTO, "style": STYLE, "strength": "strong", "seed": 4},
            user=fake.bob,
        )  # fmt: skip
        result = await result_after(fake)
        status = fake.messages[inter.original_message_id]
        assert any(s.startswith("⏳ 順番待ちに入りました（次の番です）") for s in texts_of(status))
        assert any("🎨 描いています" in s for s in texts_of(status))
        assert result.content.startswith(
            f"{fake.bob.mention} できあがりました！**photo.png** を **starry.png** 風に描きました。"
        )
        assert "強さ 強め" in result.content and "シード 4" in result.content
        labels = [b["label"] for b in result.buttons]
        assert labels == ["もう一度", "スタイル強め", "スタイル控えめ", "2 倍に拡大"]
        # The card: what, the settings, the time, the device, the style as a thumbnail.
        card = result.embeds[0]
        assert card["title"] == "photo.png × starry.png"
        assert [f["name"] for f in card["fields"]] == ["設定", "所要時間", "デバイス"]
        assert card["fields"][0]["value"] == "48×36 · 強さ 強め · 色 絵の色 · シード 4"
        assert card["thumbnail"]["url"] == "attachment://input-style-1.jpg"
        help_reply = await answer(fake, await fake.send_slash_command("help", {}, user=fake.bob))
        assert help_reply.content.startswith("**stylebot は写真を絵画のスタイルで描き直します。**")
        # Bad input in Japanese: one image only.
        bad = await answer(fake, await fake.send_slash_command("stylize", {"content": PHOTO}, user=fake.bob))
        assert bad.content.startswith("⚠️ 画像が 1 枚（photo.png）しかありません。")
        await h.idle()
        # The same in English for alice.
        inter = await fake.send_slash_command("stylize", {"content": PHOTO, "style": STYLE}, user=fake.alice)
        english = await result_after(fake, result.id)
        assert english.content.startswith(f"{fake.alice.mention} here is **photo.png** in the style of **starry.png**")
        assert [b["label"] for b in english.buttons] == ["Again", "More style", "Less style", "Upscale ×2"]
        card = english.embeds[0]
        assert [f["name"] for f in card["fields"]] == ["Settings", "Time", "Device"]
        assert card["fields"][1]["value"].startswith("4 iterations in ")
        status = fake.messages[inter.original_message_id]
        assert any(s.startswith("⏳ Queued — you are next in line.") for s in texts_of(status))
        assert fake.bot_errors == []
