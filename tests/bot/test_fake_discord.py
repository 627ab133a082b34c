"""The fake Discord against a real discord.py client: a tiny bot defined here, not the project's."""

from __future__ import annotations

import io
import struct
import zlib

import aiohttp
import discord
import pytest
from discord.ext import commands

try:  # collected as tests/bot/test_fake_discord.py with or without __init__.py files
    from tests.bot.fake_discord import FakeDiscord
except ModuleNotFoundError:
    from fake_discord import FakeDiscord

pytestmark = pytest.mark.timeout(60)

TOKEN = "fake-token.very-secret"


def tiny_png(width: int = 3, height: int = 2) -> bytes:
    """A valid RGB PNG, built by hand so the test needs no imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


class AgainView(discord.ui.View):
    def __init__(self, clicks: list[int]):
        super().__init__(timeout=30)
        self.clicks = clicks

    @discord.ui.button(label="Again", custom_id="again", style=discord.ButtonStyle.primary)
    async def again(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.clicks.append(interaction.user.id)
        await interaction.response.edit_message(
            content=f"clicked by {interaction.user.name}", view=None
        )


def make_bot(fake: FakeDiscord, *, message_content: bool = True) -> commands.Bot:
    intents = discord.Intents.default()
    intents.message_content = message_content
    intents.members = True
    bot = commands.Bot(command_prefix="!", intents=intents)
    bot.clicks = []  # type: ignore[attr-defined]
    bot.seen = []  # type: ignore[attr-defined]

    @bot.listen()
    async def on_message(message: discord.Message) -> None:
        bot.seen.append(message)

    @bot.command()
    async def echo(ctx: commands.Context, *, text: str) -> None:
        file = discord.File(io.BytesIO(text.encode()), filename="echo.txt")
        msg = await ctx.reply(f"echo: {text}", file=file, view=AgainView(bot.clicks))
        await msg.edit(content=f"echo: {text} (edited)")

    @bot.command()
    async def peek(ctx: commands.Context) -> None:
        """Reply to a message holding an image: report its size."""
        ref = ctx.message.reference
        original = await ctx.channel.fetch_message(ref.message_id)
        data = await original.attachments[0].read()
        await ctx.send(
            f"{original.attachments[0].filename}: {len(data)} bytes "
            f"{original.attachments[0].width}x{original.attachments[0].height}"
        )

    @bot.hybrid_command(description="Reverse an image's bytes")
    async def flip(ctx: commands.Context, image: discord.Attachment) -> None:
        await ctx.defer()
        data = await image.read()
        await ctx.send(
            f"flipped {image.filename} ({len(data)} bytes)",
            file=discord.File(io.BytesIO(data[::-1]), filename="flipped.bin"),
        )

    async def setup_hook() -> None:
        guild = discord.Object(fake.guild_id)
        bot.tree.copy_global_to(guild=guild)
        await bot.tree.sync(guild=guild)

    bot.setup_hook = setup_hook  # type: ignore[method-assign]
    return bot


class Ask(discord.ui.Modal, title="Ask"):
    question = discord.ui.TextInput(label="Question", custom_id="question")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"you asked: {self.question.value}", ephemeral=True)


class StylePicker(discord.ui.View):
    @discord.ui.select(
        custom_id="style",
        options=[
            discord.SelectOption(label="Monet", value="monet"),
            discord.SelectOption(label="Hokusai", value="hokusai"),
        ],
    )
    async def style(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
        await interaction.response.defer()
        await interaction.edit_original_response(content=f"style: {select.values[0]}", view=None)

    @discord.ui.button(label="Ask", custom_id="ask")
    async def ask(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.send_modal(Ask())


def make_ui_bot() -> commands.Bot:
    """App commands only, synced globally; default intents (no message content)."""
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.default())

    @bot.tree.command(description="Pick a style")
    async def styles(interaction: discord.Interaction, count: int = 1) -> None:
        await interaction.response.send_message(
            f"pick one of {count}", view=StylePicker(timeout=30)
        )
        await interaction.followup.send("only you see this", ephemeral=True)

    @bot.tree.context_menu(name="Stylize")
    async def stylize(interaction: discord.Interaction, message: discord.Message) -> None:
        name = message.attachments[0].filename
        await interaction.response.send_message(f"would stylize {name}", ephemeral=True)

    async def setup_hook() -> None:
        await bot.tree.sync()

    bot.setup_hook = setup_hook  # type: ignore[method-assign]
    return bot


@pytest.fixture
async def fake():
    async with FakeDiscord(token=TOKEN) as server:
        yield server


@pytest.fixture
async def bot(fake: FakeDiscord):
    client = make_bot(fake)
    async with fake.running(client, token=TOKEN):
        yield client


async def test_login_ready_and_guild_visible(fake: FakeDiscord, bot: commands.Bot) -> None:
    assert bot.is_ready()
    assert bot.user.id == fake.bot_user.id and bot.application_id == fake.application_id
    guild = bot.get_guild(fake.guild_id)
    assert guild is not None and guild.name == fake.guild_name
    assert guild.chunked and {m.name for m in guild.members} >= {"alice", "bob", "mod", "stylebot"}
    assert guild.get_channel(fake.general.id).name == "general"
    assert guild.filesize_limit == fake.filesize_limit == 10 * 1024 * 1024
    assert guild.get_member(fake.mod.id).guild_permissions.manage_messages
    assert not guild.get_member(fake.alice.id).guild_permissions.manage_messages
    # discord.py asked for a zlib stream and the fake sent one.
    conn = fake.gateway_connections[0]
    assert conn.query["compress"] == "zlib-stream" and conn.compressed
    assert conn.intents & discord.Intents.message_content.flag
    assert fake.tokens_seen == {TOKEN}
    assert fake.unhandled == []


async def test_wrong_token_fails_login(fake: FakeDiscord) -> None:
    with pytest.raises(discord.LoginFailure):
        async with fake.running(make_bot(fake), token="not-the-token"):
            pass


async def test_prefix_command_replies_with_file_and_edits(
    fake: FakeDiscord, bot: commands.Bot
) -> None:
    sent = await fake.send_message("!echo hello", author=fake.bob)
    reply = await fake.wait_for_bot_message(lambda m: m.content.endswith("(edited)"))

    assert reply.content == "echo: hello (edited)"
    assert [e["content"] for e in reply.edits] == ["echo: hello"]
    assert reply.reference_id == sent.id and reply.filenames == ["echo.txt"]
    assert reply.custom_ids == ["again"]
    # The attachment is served by the fake, fetchable like Discord's CDN.
    async with aiohttp.ClientSession() as session, session.get(reply.attachments[0].url) as resp:
        assert resp.status == 200 and await resp.read() == b"hello"
    post = await fake.wait_for_request("POST", "/channels/{id}/messages")
    assert post.json["content"] == "echo: hello" and post.files[0].data == b"hello"
    assert int(post.json["message_reference"]["message_id"]) == sent.id
    assert any(m.content == "!echo hello" for m in bot.seen)


async def test_reply_to_image_fetches_referenced_message(
    fake: FakeDiscord, bot: commands.Bot
) -> None:
    png = tiny_png(3, 2)
    photo = await fake.send_message("look", attachments=[("photo.png", png)])
    await fake.send_message("!peek", reference=photo)
    answer = await fake.wait_for_bot_message(lambda m: "photo.png" in m.content)
    assert answer.content == f"photo.png: {len(png)} bytes 3x2"
    assert any(r.route == "GET /channels/{channel_id}/messages/{message_id}" for r in fake.requests)
    assert [d.attachment.filename for d in fake.downloads] == ["photo.png"]


async def test_slash_command_with_attachment_defers_and_follows_up(
    fake: FakeDiscord, bot: commands.Bot
) -> None:
    sync = next(
        r for r in fake.requests if r.route and r.route.endswith("/guilds/{guild_id}/commands")
    )
    assert sync.method == "PUT" and [c["name"] for c in sync.json] == ["flip"]
    assert sync.json[0]["options"][0]["type"] == 11  # attachment option

    png = tiny_png()
    inter = await fake.send_slash_command("flip", {"image": ("cat.png", png)}, user=fake.alice)
    done = await fake.wait_for_bot_message(
        lambda m: m.content.startswith("flipped") and not m.loading
    )

    assert inter.callback_type == 5  # deferred, then the follow-up filled the thinking message
    assert done.id == inter.original_message_id and done.interaction is inter
    assert done.content == f"flipped cat.png ({len(png)} bytes)"
    assert done.files == {"flipped.bin": png[::-1]}
    assert [d.status for d in fake.downloads] == [200]


async def test_unsynced_slash_command_is_refused(fake: FakeDiscord, bot: commands.Bot) -> None:
    with pytest.raises(LookupError, match="never synced"):
        await fake.send_slash_command("nope", {})


async def test_button_click_reaches_view_callback(fake: FakeDiscord, bot: commands.Bot) -> None:
    await fake.send_message("!echo hi")
    reply = await fake.wait_for_bot_message(lambda m: m.content.endswith("(edited)"))

    inter = await fake.click_button(reply, "again", user=fake.mod)
    await fake.wait_for_message(lambda m: m.id == reply.id and m.content.startswith("clicked"))

    assert bot.clicks == [fake.mod.id]
    assert inter.callback_type == 7 and reply.components == []
    assert reply.content == "clicked by mod"


async def test_upload_errors_surface_as_http_exceptions(
    fake: FakeDiscord, bot: commands.Bot
) -> None:
    channel = bot.get_channel(fake.general.id)
    fake.fail_next("POST", "/channels/{channel_id}/messages", 413, when=lambda r: r.files)
    with pytest.raises(discord.HTTPException) as err:
        await channel.send(file=discord.File(io.BytesIO(b"x"), filename="x.png"))
    assert err.value.status == 413 and err.value.code == 40005

    # Without injection the fake enforces the guild's real per-file limit.
    big = discord.File(io.BytesIO(b"\0" * (fake.filesize_limit + 1)), filename="big.png")
    with pytest.raises(discord.HTTPException) as err:
        await channel.send(file=big)
    assert err.value.status == 413

    fake.fail_next("POST", "/channels/{channel_id}/messages", 403)
    with pytest.raises(discord.Forbidden) as forbidden:
        await channel.send("hello")
    assert forbidden.value.code == 50013

    with pytest.raises(discord.HTTPException) as err:
        await channel.send("x" * 2001)
    assert err.value.status == 400 and err.value.code == 50035
    assert fake.bot_messages() == []


async def test_rate_limit_is_retried_by_discord_py(fake: FakeDiscord, bot: commands.Bot) -> None:
    channel = bot.get_channel(fake.general.id)
    fake.fail_next("POST", "/channels/{channel_id}/messages", 429, retry_after=0.01)
    await channel.send("after the limit")
    posts = [r for r in fake.requests if r.route == "POST /channels/{channel_id}/messages"]
    assert [(r.status, r.injected) for r in posts] == [(429, True), (200, False)]
    assert [m.content for m in fake.bot_messages()] == ["after the limit"]


async def test_unknown_routes_are_recorded(fake: FakeDiscord, bot: commands.Bot) -> None:
    with pytest.raises(discord.NotFound):
        await bot.get_guild(fake.guild_id).fetch_emojis()
    assert [r.path for r in fake.unhandled] == [f"/guilds/{fake.guild_id}/emojis"]


async def test_message_content_needs_the_intent(fake: FakeDiscord) -> None:
    client = make_bot(fake, message_content=False)
    async with fake.running(client, token=TOKEN):
        await fake.send_message("!echo hi")
        await fake.send_message(f"{fake.bot_user.mention} hi")
        await fake.wait_until(lambda: len(client.seen) >= 2, what="two messages seen")
    assert [m.content for m in client.seen] == ["", f"<@{fake.bot_user.id}> hi"]
    assert fake.bot_messages() == []


async def test_transcript_and_token_never_sent(fake: FakeDiscord, bot: commands.Bot) -> None:
    await fake.send_message("!echo hi")
    await fake.wait_for_bot_message(lambda m: m.content.endswith("(edited)"))
    inter = await fake.send_slash_command("flip", {"image": ("a.png", tiny_png())})
    await fake.wait_for_bot_message(lambda m: m.content.startswith("flipped") and not m.loading)

    lines = fake.transcript().splitlines()
    assert lines[0] == "PUT /applications/app/guilds/guild/commands commands=['flip'] -> 200"
    assert "POST /channels/#general/messages content='echo: hi' files=['echo.txt']" in lines[1]
    assert lines[1].endswith("reply_to=m1 -> 200 m2")
    assert lines[2].startswith("PATCH /channels/#general/messages/m2 content='echo: hi (edited)'")
    assert (
        lines[3] == f"POST /interactions/{inter.label}/{inter.label}.token/callback type=5 "
        "DEFERRED_CHANNEL_MESSAGE -> 200 m3"
    )
    assert lines[4] == "CDN GET a.png -> 200"
    assert lines[5].startswith(f"POST /webhooks/app/{inter.label}.token content='flipped a.png")
    full = fake.transcript(gateway=True, setup=True)
    assert "GET /users/@me -> 200" in full and "<- MESSAGE_CREATE m1 alice: '!echo hi'" in full
    print(full)
    assert fake.leaks(TOKEN) == []
    assert all(
        r.authorization == f"Bot {TOKEN}"
        for r in fake.requests
        if not r.path.startswith(("/interactions/", "/webhooks/"))
    )


async def test_select_modal_and_ephemeral_followup(fake: FakeDiscord) -> None:
    async with fake.running(make_ui_bot(), token=TOKEN):
        inter = await fake.send_slash_command("styles", {"count": 2}, user=fake.bob)
        secret = await fake.wait_for_message(lambda m: m.interaction is inter and m.ephemeral)
        picker = fake.messages[inter.original_message_id]
        assert inter.data["options"] == [{"name": "count", "type": 4, "value": 2}]
        assert picker.content == "pick one of 2" and picker.custom_ids == ["style", "ask"]
        assert secret.content == "only you see this" and not picker.ephemeral

        chosen = await fake.choose(picker, "style", ["hokusai"])
        await fake.wait_for_message(lambda m: m is picker and m.content == "style: hokusai")
        assert chosen.callback_type == 6 and picker.components == []

        again = await fake.send_slash_command("styles", {})
        await fake.wait_for_response(again)
        click = await fake.click_button(fake.messages[again.original_message_id], "ask")
        await fake.wait_for_response(click)
        assert click.callback_type == 9 and click.modal["title"] == "Ask"
        submitted = await fake.submit_modal(click, {"question": "why monet?"})
        await fake.wait_for_response(submitted)
        answer = fake.messages[submitted.original_message_id]
        assert answer.content == "you asked: why monet?" and answer.ephemeral
        fake.assert_no_bot_errors()


async def test_context_menu_on_a_photo(fake: FakeDiscord) -> None:
    async with fake.running(make_ui_bot(), token=TOKEN):
        photo = await fake.send_message("", attachments=[("photo.png", tiny_png())])
        inter = await fake.send_message_command("Stylize", photo)
        await fake.wait_for_response(inter)
        assert fake.messages[inter.original_message_id].content == "would stylize photo.png"


async def test_gateway_reconnect_resumes(fake: FakeDiscord, bot: commands.Bot) -> None:
    await fake.disconnect()
    await fake.wait_until(
        lambda: len(fake.gateway_connections) == 2 and fake.gateway_connections[1].ready
    )
    assert fake.gateway_connections[1].identify["resumed"]
    await fake.send_message("!echo back")
    await fake.wait_for_bot_message(lambda m: m.content == "echo: back (edited)")
