"""A fake Discord on 127.0.0.1 for end-to-end tests of a real discord.py 2.x bot.

The real ``discord.Client`` / ``commands.Bot`` logs in, opens the gateway websocket,
receives ``MESSAGE_CREATE`` / ``INTERACTION_CREATE`` and talks REST to this server:
sends, edits and deletes messages, uploads and downloads files, answers interactions
and sends follow-ups. Tests drive users through helpers (``send_message``,
``send_slash_command``, ``click_button`` ...) and assert on what the bot sent
(``requests``, ``messages``, ``transcript()``).

Usage::

    async with FakeDiscord() as fake, fake.running(bot, token="fake-token"):
        await fake.send_message("!stylize", attachments=[("cat.png", png_bytes)])
        reply = await fake.wait_for_message(lambda m: m.author_id == fake.bot_user.id)
        assert reply.attachments[0].data.startswith(b"\\x89PNG")
        print(fake.transcript())

What the server mimics, and why (all checked against discord.py 2.7's source):

- REST lives under ``/api/v10``; ``running()`` points ``discord.http.Route.BASE`` at it.
  JSON responses carry ``Content-Type: application/json`` exactly, because discord.py's
  ``json_or_text`` compares the header verbatim (aiohttp's default adds ``; charset=utf-8``
  and discord.py would then hand the bot a ``str`` instead of a dict).
- A plain ``Client`` never calls ``GET /gateway/bot``: it connects to
  ``DiscordWebSocket.DEFAULT_GATEWAY`` (``wss://gateway.discord.gg/``), so ``running()``
  patches that too. ``GET /gateway/bot`` still answers for ``AutoShardedClient``.
- The client asks for ``?v=10&encoding=json&compress=zlib-stream`` (``zstd-stream`` when
  ``zstandard`` is installed). The fake answers with one shared zlib stream per connection,
  each frame ``Z_SYNC_FLUSH``-ed (ends with ``00 00 ff ff``), like Discord; for anything else
  it sends text frames, which discord.py also accepts.
- ``on_ready`` fires only after ``guild_ready_timeout`` (2 s by default) passes without a new
  ``GUILD_CREATE``; ``running()`` lowers it so a test starts in about 0.1 s.
- Discord rules that catch real bot bugs are enforced: 2000-character content, 10 files,
  10 embeds, no empty messages, the per-file upload limit of the guild's boost tier (413,
  code 40005), one acknowledgement per interaction (40060), follow-ups only after the
  acknowledgement, message content stripped from gateway events when the bot did not ask
  for the ``message_content`` intent, the bot editing only its own messages and deleting
  others' only with Manage Messages (which ``bot_permissions`` leaves out by default).
- After a deferred response (type 5) the first follow-up fills in the "thinking" message,
  as on Discord.
- A 429 carries ``Via`` and ``X-RateLimit-*`` headers and a JSON body, because discord.py
  treats a 429 without ``Via`` as a Cloudflare ban and raises instead of retrying.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import io
import itertools
import json
import logging
import mimetypes
import re
import secrets
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Self

import discord
import discord.gateway
import discord.http
import pytest
import yarl
from aiohttp import web

__all__ = [
    "FakeAttachment",
    "FakeChannel",
    "FakeDiscord",
    "FakeInteraction",
    "FakeMessage",
    "FakeUser",
    "GatewayConnection",
    "Request",
    "fake_discord",
]

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1420070400000
MAX_CONTENT = 2000
MAX_FILES = 10
MAX_EMBEDS = 10

# Message flags and types used below (https://discord.com/developers/docs/resources/message).
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
TYPE_DEFAULT, TYPE_REPLY, TYPE_CHAT_INPUT, TYPE_CONTEXT_MENU = 0, 19, 20, 23

# Gateway intents the fake honours (discord.Intents values).
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | (1 << 15)  # members, presences, message content

CALLBACK_NAMES = {
    1: "PONG",
    4: "CHANNEL_MESSAGE",
    5: "DEFERRED_CHANNEL_MESSAGE",
    6: "DEFERRED_UPDATE_MESSAGE",
    7: "UPDATE_MESSAGE",
    8: "AUTOCOMPLETE_RESULT",
    9: "MODAL",
}

# Routes the client calls while logging in; transcript() leaves them out unless asked.
SETUP_ROUTES = frozenset(
    {
        "GET /users/@me",
        "GET /oauth2/applications/@me",
        "GET /applications/@me",
        "GET /gateway/bot",
        "GET /gateway",
    }
)

# Default JSON bodies for fail_next(), as Discord sends them.
DEFAULT_ERROR_BODIES: dict[int, dict[str, Any]] = {
    400: {"code": 50035, "message": "Invalid Form Body", "errors": {}},
    401: {"code": 0, "message": "401: Unauthorized"},
    403: {"code": 50013, "message": "Missing Permissions"},
    404: {"code": 10008, "message": "Unknown Message"},
    413: {"code": 40005, "message": "Request entity too large"},
    429: {"code": 0, "message": "You are being rate limited.", "global": False},
    500: {"code": 0, "message": "500: Internal Server Error"},
    503: {"code": 0, "message": "503: Service Unavailable"},
}

# ---------------------------------------------------------------------------
# Records and model objects
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class UploadedFile:
    """One ``files[n]`` part of a multipart request."""

    index: int
    field: str
    filename: str
    data: bytes
    content_type: str | None


@dataclasses.dataclass
class Request:
    """One REST call the fake received, recorded after it was answered."""

    seq: int
    method: str
    path: str  # below /api/v10, e.g. "/channels/123/messages"
    route: str | None  # "POST /channels/{channel_id}/messages"; None for unknown routes
    query: dict[str, str]
    json: Any  # the JSON body, or the multipart payload_json
    files: list[UploadedFile]
    raw_body: bytes
    authorization: str | None
    status: int = 0
    response: Any = None
    injected: bool = False
    message_id: int | None = None  # the message the call created or changed
    summary: str = ""

    @property
    def body(self) -> dict[str, Any]:
        """The message part of the body: ``data`` of an interaction callback, else the body."""
        body = self.json if isinstance(self.json, dict) else {}
        if self.route and self.route.endswith("/callback"):
            return body.get("data") or {}
        return body

    @property
    def content(self) -> str | None:
        return self.body.get("content")

    @property
    def filenames(self) -> list[str]:
        return [f.filename for f in self.files]

    def __str__(self) -> str:
        return self.summary or f"{self.method} {self.path} -> {self.status}"


@dataclasses.dataclass
class FakeUser:
    id: int
    username: str
    global_name: str | None = None
    bot: bool = False
    role_ids: list[int] = dataclasses.field(default_factory=list)
    discriminator: str = "0"
    locale: str = "en-US"  # the Discord client's language, sent with each interaction

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def payload(self) -> dict[str, Any]:
        data = {
            "id": str(self.id),
            "username": self.username,
            "global_name": self.global_name,
            "discriminator": self.discriminator,
            "avatar": None,
            "avatar_decoration_data": None,
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
        }
        if self.bot:
            data["bot"] = True
        return data


@dataclasses.dataclass
class FakeChannel:
    id: int
    name: str
    type: int = 0  # 0 guild text, 1 DM
    guild_id: int | None = None
    position: int = 0
    recipient: FakeUser | None = None
    last_message_id: int | None = None

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"

    def payload(self, *, with_guild_id: bool = True) -> dict[str, Any]:
        if self.type == 1:
            assert self.recipient is not None
            return {
                "id": str(self.id),
                "type": 1,
                "last_message_id": _str_or_none(self.last_message_id),
                "recipients": [self.recipient.payload()],
                "flags": 0,
            }
        data = {
            "id": str(self.id),
            "type": self.type,
            "name": self.name,
            "position": self.position,
            "permission_overwrites": [],
            "parent_id": None,
            "topic": None,
            "nsfw": False,
            "rate_limit_per_user": 0,
            "last_message_id": _str_or_none(self.last_message_id),
            "flags": 0,
        }
        if with_guild_id:
            data["guild_id"] = str(self.guild_id)
        return data


@dataclasses.dataclass
class FakeAttachment:
    id: int
    filename: str
    data: bytes
    content_type: str | None
    url: str
    proxy_url: str
    width: int | None = None
    height: int | None = None
    description: str | None = None
    ephemeral: bool = False
    label: str = ""

    @property
    def size(self) -> int:
        return len(self.data)

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.proxy_url,
            "content_type": self.content_type,
            "width": self.width,
            "height": self.height,
            "placeholder": None,
            "placeholder_version": None,
            "flags": 0,
        }
        if self.description is not None:
            data["description"] = self.description
        if self.ephemeral:
            data["ephemeral"] = True
        return data


@dataclasses.dataclass
class FakeMessage:
    """A message as the fake server holds it now; ``edits`` keeps the earlier versions."""

    id: int
    channel_id: int
    guild_id: int | None
    author: FakeUser
    content: str = ""
    embeds: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    attachments: list[FakeAttachment] = dataclasses.field(default_factory=list)
    components: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    flags: int = 0
    type: int = TYPE_DEFAULT
    reference_id: int | None = None
    webhook_id: int | None = None
    interaction: FakeInteraction | None = None
    mention_ids: list[int] = dataclasses.field(default_factory=list)
    mention_role_ids: list[int] = dataclasses.field(default_factory=list)
    reactions: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    edits: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    deleted: bool = False
    created_at: datetime.datetime = dataclasses.field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC)
    )
    edited_at: datetime.datetime | None = None
    label: str = ""

    @property
    def author_id(self) -> int:
        return self.author.id

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & FLAG_LOADING)

    @property
    def filenames(self) -> list[str]:
        return [a.filename for a in self.attachments]

    @property
    def files(self) -> dict[str, bytes]:
        return {a.filename: a.data for a in self.attachments}

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """Every button and select in ``components`` (nested rows/containers included)."""
        return [c for c in _walk_components(self.components) if c.get("type") in (2, 3, 5, 6, 7, 8)]

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in self.buttons if "custom_id" in c]

    def snapshot(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "embeds": [dict(e) for e in self.embeds],
            "attachments": self.filenames,
            "components": json.loads(json.dumps(self.components)),
            "flags": self.flags,
            "at": (self.edited_at or self.created_at).isoformat(),
        }


@dataclasses.dataclass
class FakeInteraction:
    id: int
    token: str
    type: int  # 2 application command, 3 component, 5 modal submit
    user: FakeUser
    channel_id: int
    guild_id: int | None
    data: dict[str, Any]
    message_id: int | None = None  # the message a component sits on
    callback_type: int | None = None
    callback_data: dict[str, Any] | None = None
    original_message_id: int | None = None
    followup_ids: list[int] = dataclasses.field(default_factory=list)
    modal: dict[str, Any] | None = None
    autocomplete_choices: list[dict[str, Any]] | None = None
    label: str = ""

    @property
    def acknowledged(self) -> bool:
        return self.callback_type is not None

    @property
    def name(self) -> str:
        return self.data.get("name") or self.data.get("custom_id") or ""


@dataclasses.dataclass
class GatewayConnection:
    ws: web.WebSocketResponse
    query: dict[str, str]
    compressed: bool
    compressor: Any = None
    identify: dict[str, Any] | None = None
    session_id: str | None = None
    seq: int = 0
    received: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    sent: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    closed: bool = False

    @property
    def intents(self) -> int:
        return int((self.identify or {}).get("intents", 0))

    @property
    def ready(self) -> bool:
        return self.identify is not None and not self.closed


@dataclasses.dataclass
class _Failure:
    method: str | None
    path: re.Pattern[str] | None
    status: int
    body: Any
    headers: dict[str, str]
    remaining: int
    when: Callable[[Request], bool] | None

    def matches(self, req: Request) -> bool:
        if self.remaining <= 0:
            return False
        if self.method and self.method != req.method:
            return False
        if self.path is not None and not self.path.fullmatch(req.path):
            return False
        return self.when is None or bool(self.when(req))


@dataclasses.dataclass
class _Dispatch:
    seq: int
    event: str
    summary: str


@dataclasses.dataclass
class _Download:
    seq: int
    attachment: FakeAttachment | None
    path: str
    status: int


class _ApiError(Exception):
    def __init__(self, status: int, body: Any):
        super().__init__(status, body)
        self.status = status
        self.body = body


class _ErrorLog(logging.Handler):
    """Collects ERROR records from discord.py's loggers (command, view and event errors)."""

    def __init__(self, sink: list[str]):
        super().__init__(logging.ERROR)
        self.sink = sink
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(self.format(record))


# ---------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------


class FakeDiscord:
    """A Discord API + gateway on 127.0.0.1 with one guild, a few users and a bot user.

    Entities (all ``FakeUser`` / ``FakeChannel``): ``bot_user`` (its id is also the
    application id), ``owner`` (owns the guild and the application), ``alice``, ``bob``,
    ``mod`` (Manage Messages through ``mod_role_id``); channels ``general`` (the default)
    and ``art``; ``dm_channel(user)`` gives a user's DM channel.

    Records: ``requests`` (every REST call), ``messages`` (id -> FakeMessage, current
    state, in creation order), ``interactions``, ``downloads``, ``gateway_connections``,
    ``unhandled`` (calls to routes the fake does not know; answered 404),
    ``tokens_seen`` (every bot token the client presented), ``bot_errors`` (ERROR log
    records from discord.py while ``running()``).
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        premium_tier: int = 0,
        compress: bool = True,
        allow_privileged_intents: bool = True,
        heartbeat_interval_ms: int = 41250,
        guild_name: str = "Stylebot Test Guild",
        bot_name: str = "stylebot",
        preferred_locale: str = "en-US",
        guild_id: int | None = None,
    ) -> None:
        self.expected_token = token
        self.premium_tier = premium_tier
        self.compress = compress
        self.allow_privileged_intents = allow_privileged_intents
        self.heartbeat_interval_ms = heartbeat_interval_ms

        self._last_snowflake = 0
        self._seq = itertools.count(1)
        self._labels: dict[int, str] = {}
        self._token_labels: dict[str, str] = {}
        self._message_no = itertools.count(1)
        self._interaction_no = itertools.count(1)
        self._attachment_no = itertools.count(1)

        # The same guild id as an earlier fake's: the same server after a restart of the bot.
        self.guild_id = guild_id or self._snowflake("guild")
        self._labels[self.guild_id] = "guild"
        self.bot_user = FakeUser(self._snowflake("app"), bot_name, bot=True, discriminator="4242")
        self.application_id = self.bot_user.id
        self.everyone_role_id = self.guild_id
        self.mod_role_id = self._snowflake("@&Moderators")
        self.bot_role_id = self._snowflake(f"@&{bot_name}")
        self.bot_user.role_ids = [self.bot_role_id]
        self.owner = FakeUser(self._snowflake("@owner"), "owner", "Guild Owner")
        self.alice = FakeUser(self._snowflake("@alice"), "alice", "Alice")
        self.bob = FakeUser(self._snowflake("@bob"), "bob", "Bob")
        self.mod = FakeUser(
            self._snowflake("@mod"), "mod", "Moderator", role_ids=[self.mod_role_id]
        )
        self.users: dict[int, FakeUser] = {
            u.id: u for u in (self.bot_user, self.owner, self.alice, self.bob, self.mod)
        }
        self.general = FakeChannel(self._snowflake("#general"), "general", guild_id=self.guild_id)
        self.art = FakeChannel(self._snowflake("#art"), "art", guild_id=self.guild_id, position=1)
        self.channels: dict[int, FakeChannel] = {c.id: c for c in (self.general, self.art)}
        self.guild_name = guild_name
        self.preferred_locale = preferred_locale
        self.everyone_permissions = discord.Permissions(
            view_channel=True,
            send_messages=True,
            send_messages_in_threads=True,
            embed_links=True,
            attach_files=True,
            read_message_history=True,
            add_reactions=True,
            use_external_emojis=True,
            use_application_commands=True,
            change_nickname=True,
            create_instant_invite=True,
        )
        self.mod_permissions = discord.Permissions(manage_messages=True, moderate_members=True)
        self.bot_permissions = discord.Permissions(
            view_channel=True,
            send_messages=True,
            embed_links=True,
            attach_files=True,
            read_message_history=True,
            add_reactions=True,
        )

        self.requests: list[Request] = []
        self.messages: dict[int, FakeMessage] = {}
        self.interactions: dict[int, FakeInteraction] = {}
        self.attachments: dict[int, FakeAttachment] = {}
        self.downloads: list[_Download] = []
        self.dispatched: list[_Dispatch] = []
        self.gateway_connections: list[GatewayConnection] = []
        self.unhandled: list[Request] = []
        self.tokens_seen: set[str] = set()
        self.bot_errors: list[str] = []
        self.commands: dict[int | None, list[dict[str, Any]]] = {}  # scope (guild id or None)
        self._failures: list[_Failure] = []
        self._sessions: set[str] = set()
        self._changed = asyncio.Event()
        self._connected = asyncio.Event()

        self._runner: web.AppRunner | None = None
        self.port = 0
        self._routes = [(m, _compile_template(t), t, h) for m, t, h in self._route_table()]

    # -- lifecycle ----------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application(client_max_size=512 * 1024 * 1024)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._handle_api)
        app.router.add_get("/gateway", self._handle_gateway)
        app.router.add_get("/gateway/", self._handle_gateway)  # DEFAULT_GATEWAY ends with "/"
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._handle_cdn)
        app.router.add_get(
            "/media/attachments/{channel_id}/{attachment_id}/{filename}", self._handle_cdn
        )
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        for conn in list(self.gateway_connections):
            if not conn.ws.closed:
                with contextlib.suppress(Exception):
                    await conn.ws.close(code=1000)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @contextlib.contextmanager
    def patch_discord(self) -> Iterator[None]:
        """Point discord.py's REST base and default gateway at this server, then restore."""
        old_base = discord.http.Route.BASE
        old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url + "/")
        try:
            yield
        finally:
            discord.http.Route.BASE = old_base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway

    @contextlib.asynccontextmanager
    async def running(
        self,
        bot: discord.Client,
        *,
        token: str = "fake-token",
        ready_timeout: float = 10.0,
        guild_ready_timeout: float = 0.05,
    ) -> AsyncIterator[discord.Client]:
        """Start ``bot`` against this server, wait until it is ready, close it on exit.

        ``guild_ready_timeout`` replaces discord.py's 2 s wait for further GUILD_CREATEs
        before ``on_ready`` (``bot._connection.guild_ready_timeout``, the attribute behind the
        public ``Client(guild_ready_timeout=...)`` option).
        """
        handler = _ErrorLog(self.bot_errors)
        discord_logger = logging.getLogger("discord")
        discord_logger.addHandler(handler)
        bot._connection.guild_ready_timeout = min(
            bot._connection.guild_ready_timeout, guild_ready_timeout
        )
        with self.patch_discord():
            task = asyncio.create_task(bot.start(token), name="fake-discord-bot")
            try:
                await self._wait_ready(bot, task, ready_timeout)
                yield bot
            finally:
                if not bot.is_closed():
                    await bot.close()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, timeout=5)
                if not task.done():
                    task.cancel()
                discord_logger.removeHandler(handler)

    async def _wait_ready(
        self, bot: discord.Client, task: asyncio.Task[Any], timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while not bot.is_ready():
            if task.done():
                task.result()  # raises LoginFailure, PrivilegedIntentsRequired ...
                raise RuntimeError("bot.start() returned before the bot became ready")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"bot not ready after {timeout} s\n{self.transcript(setup=True, gateway=True)}"
                )
            await asyncio.sleep(0.01)

    # -- identities ---------------------------------------------------------

    def _snowflake(self, label: str | None = None) -> int:
        now = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        value = max(now, self._last_snowflake + 1)
        self._last_snowflake = value
        if label:
            self._labels[value] = label
        return value

    def add_user(
        self, username: str, *, role_ids: Sequence[int] = (), bot: bool = False
    ) -> FakeUser:
        """Add a guild member (before the bot connects, or it will not be in the cache)."""
        user = FakeUser(
            self._snowflake(f"@{username}"),
            username,
            username.title(),
            bot=bot,
            role_ids=list(role_ids),
        )
        self.users[user.id] = user
        return user

    def dm_channel(self, user: FakeUser) -> FakeChannel:
        for channel in self.channels.values():
            if channel.type == 1 and channel.recipient is user:
                return channel
        channel = FakeChannel(self._snowflake(f"#dm-{user.username}"), "", type=1, recipient=user)
        self.channels[channel.id] = channel
        return channel

    @property
    def filesize_limit(self) -> int:
        """Per-file upload limit, by boost tier, as discord.py's ``Guild.filesize_limit``."""
        return {0: 10485760, 1: 10485760, 2: 52428800, 3: 104857600}[self.premium_tier]

    def permissions_for(self, user: FakeUser) -> discord.Permissions:
        if user.id == self.owner.id:
            return discord.Permissions.all()
        value = self.everyone_permissions.value
        if self.mod_role_id in user.role_ids:
            value |= self.mod_permissions.value
        if user.id == self.bot_user.id:
            value |= self.bot_permissions.value
        return discord.Permissions(value)

    # -- payload builders ---------------------------------------------------

    def role_payloads(self) -> list[dict[str, Any]]:
        def role(rid: int, name: str, perms: int, position: int, **extra: Any) -> dict[str, Any]:
            return {
                "id": str(rid),
                "name": name,
                "permissions": str(perms),
                "position": position,
                "color": 0,
                "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
                "hoist": False,
                "managed": False,
                "mentionable": False,
                "icon": None,
                "unicode_emoji": None,
                "flags": 0,
                **extra,
            }

        return [
            role(self.everyone_role_id, "@everyone", self.everyone_permissions.value, 0),
            role(self.mod_role_id, "Moderators", self.mod_permissions.value, 1, hoist=True),
            role(
                self.bot_role_id,
                self.bot_user.username,
                self.bot_permissions.value,
                2,
                managed=True,
                tags={"bot_id": str(self.bot_user.id)},
            ),
        ]

    def member_payload(
        self, user: FakeUser, *, with_user: bool = True, permissions: bool = False
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "roles": [str(r) for r in user.role_ids],
            "joined_at": "2024-01-01T00:00:00.000000+00:00",
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "nick": None,
            "avatar": None,
            "banner": None,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = user.payload()
        if permissions:
            data["permissions"] = str(self.permissions_for(user).value)
        return data

    def guild_payload(self) -> dict[str, Any]:
        members = list(self.users.values())
        return {
            "id": str(self.guild_id),
            "name": self.guild_name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner.id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "nsfw": False,
            "roles": self.role_payloads(),
            "emojis": [],
            "stickers": [],
            "features": [],
            "application_id": None,
            "system_channel_id": str(self.general.id),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "premium_tier": self.premium_tier,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": self.preferred_locale,
            "max_members": 500000,
            "max_video_channel_users": 25,
            "incidents_data": None,
            # GUILD_CREATE-only fields. member_count == len(members) makes the guild
            # "chunked", so a bot with the members intent does not ask for chunks.
            "joined_at": "2024-01-01T00:00:00.000000+00:00",
            "large": False,
            "unavailable": False,
            "member_count": len(members),
            "members": [self.member_payload(u) for u in members],
            "channels": [c.payload(with_guild_id=False) for c in self.guild_channels()],
            "threads": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "lazy": True,
        }

    def guild_channels(self) -> list[FakeChannel]:
        return [c for c in self.channels.values() if c.type != 1]

    def application_payload(self) -> dict[str, Any]:
        return {
            "id": str(self.application_id),
            "name": self.bot_user.username,
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "bot_public": False,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "owner": self.owner.payload(),
            "team": None,
            "flags": (1 << 15) | (1 << 19),  # members and message content intents, "limited"
            "bot": self.bot_user.payload(),
            "interactions_endpoint_url": None,
            "redirect_uris": [],
            "tags": [],
        }

    def message_payload(
        self, msg: FakeMessage, *, gateway: bool = False, depth: int = 0
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(msg.id),
            "channel_id": str(msg.channel_id),
            "type": msg.type,
            "content": msg.content,
            "author": msg.author.payload(),
            "attachments": [a.payload() for a in msg.attachments],
            "embeds": [dict(e) for e in msg.embeds],
            "components": json.loads(json.dumps(msg.components)),
            "mentions": [],
            "mention_roles": [str(r) for r in msg.mention_role_ids],
            "mention_everyone": False,
            "pinned": False,
            "tts": False,
            "timestamp": msg.created_at.isoformat(),
            "edited_timestamp": msg.edited_at.isoformat() if msg.edited_at else None,
            "flags": msg.flags,
            "reactions": [
                {
                    "emoji": {"id": None, "name": emoji},
                    "count": len(users),
                    "count_details": {"burst": 0, "normal": len(users)},
                    "me": self.bot_user.id in users,
                    "me_burst": False,
                    "burst_colors": [],
                }
                for emoji, users in msg.reactions.items()
                if users
            ],
        }
        for uid in msg.mention_ids:
            user = self.users.get(uid)
            if user is None:
                continue
            mention = user.payload()
            if gateway and msg.guild_id:
                mention["member"] = self.member_payload(user, with_user=False)
            data["mentions"].append(mention)
        if msg.guild_id is not None:
            data["guild_id"] = str(msg.guild_id)
            if gateway:
                data["member"] = self.member_payload(msg.author, with_user=False)
        if msg.webhook_id is not None:
            data["webhook_id"] = str(msg.webhook_id)
            data["application_id"] = str(self.application_id)
        if msg.reference_id is not None:
            ref = self.messages.get(msg.reference_id)
            data["message_reference"] = {
                "type": 0,
                "message_id": str(msg.reference_id),
                "channel_id": str(ref.channel_id if ref else msg.channel_id),
            }
            if msg.guild_id is not None:
                data["message_reference"]["guild_id"] = str(msg.guild_id)
            if depth == 0:
                data["referenced_message"] = (
                    None if ref is None or ref.deleted else self.message_payload(ref, depth=1)
                )
        inter = msg.interaction
        if inter is not None:
            owners = {"0": str(inter.guild_id)} if inter.guild_id else {"1": str(inter.user.id)}
            data["interaction_metadata"] = {
                "id": str(inter.id),
                "type": inter.type,
                "user": inter.user.payload(),
                "authorizing_integration_owners": owners,
            }
            if inter.type == 3 and inter.message_id is not None:
                data["interaction_metadata"]["interacted_message_id"] = str(inter.message_id)
        if inter is not None and inter.type == 2:
            data["interaction_metadata"]["name"] = inter.name
            data["interaction_metadata"]["command_type"] = inter.data.get("type", 1)
            data["interaction"] = {
                "id": str(inter.id),
                "type": inter.type,
                "name": inter.name,
                "user": inter.user.payload(),
            }
        return data

    def _strip_for_intents(
        self, payload: dict[str, Any], msg: FakeMessage, conn: GatewayConnection
    ) -> dict[str, Any] | None:
        if msg.guild_id is not None and not conn.intents & INTENT_GUILD_MESSAGES:
            return None
        if msg.guild_id is None and not conn.intents & INTENT_DIRECT_MESSAGES:
            return None
        privileged = (
            conn.intents & INTENT_MESSAGE_CONTENT
            or msg.guild_id is None
            or msg.author.id == self.bot_user.id
            or self.bot_user.id in msg.mention_ids
        )
        if not privileged:
            payload = dict(payload, content="", embeds=[], attachments=[], components=[])
        return payload

    # -- gateway ------------------------------------------------------------

    async def _handle_gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        query = dict(request.query)
        compressed = self.compress and query.get("compress") == "zlib-stream"
        conn = GatewayConnection(
            ws=ws,
            query=query,
            compressed=compressed,
            compressor=zlib.compressobj() if compressed else None,
        )
        self.gateway_connections.append(conn)
        try:
            await self._send(
                conn,
                {
                    "op": 10,
                    "d": {
                        "heartbeat_interval": self.heartbeat_interval_ms,
                        "_trace": ["fake-discord"],
                    },
                },
            )
            async for msg in ws:
                if msg.type.name != "TEXT":
                    continue
                frame = json.loads(msg.data)
                conn.received.append(frame)
                await self._on_gateway_frame(conn, frame)
        finally:
            conn.closed = True
            self._touch()
        return ws

    async def _on_gateway_frame(self, conn: GatewayConnection, frame: dict[str, Any]) -> None:
        op, data = frame.get("op"), frame.get("d")
        if op == 1:  # HEARTBEAT
            await self._send(conn, {"op": 11})
        elif op == 2:  # IDENTIFY
            await self._identify(conn, data)
        elif op == 6:  # RESUME
            token = data.get("token")
            self.tokens_seen.add(token)
            if data.get("session_id") in self._sessions and not self._bad_token(token):
                conn.identify = {"resumed": True, **(self._last_identify() or {})}
                conn.session_id = data["session_id"]
                conn.seq = int(data.get("seq") or 0)
                await self._dispatch_to(conn, "RESUMED", {"_trace": ["fake-discord"]})
            else:
                await self._send(conn, {"op": 9, "d": False})
        elif op == 8:  # REQUEST_GUILD_MEMBERS
            await self._send_member_chunk(conn, data)
        # op 3 (presence) and op 4 (voice state) are recorded in conn.received only.

    def _last_identify(self) -> dict[str, Any] | None:
        for conn in reversed(self.gateway_connections):
            if conn.identify and "token" in conn.identify:
                return conn.identify
        return None

    def _bad_token(self, token: str | None) -> bool:
        return self.expected_token is not None and token != self.expected_token

    async def _identify(self, conn: GatewayConnection, data: dict[str, Any]) -> None:
        token = data.get("token")
        self.tokens_seen.add(token)
        if self._bad_token(token):
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        if intents & PRIVILEGED_INTENTS and not self.allow_privileged_intents:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        conn.identify = data
        conn.session_id = secrets.token_hex(16)
        self._sessions.add(conn.session_id)
        shard = data.get("shard") or [0, 1]
        await self._dispatch_to(
            conn,
            "READY",
            {
                "v": 10,
                "user": {
                    **self.bot_user.payload(),
                    "verified": True,
                    "mfa_enabled": False,
                    "email": None,
                    "locale": "en-US",
                },
                "guilds": [{"id": str(self.guild_id), "unavailable": True}],
                "session_id": conn.session_id,
                "session_type": "normal",
                "resume_gateway_url": self.gateway_url,
                "shard": shard,
                "application": {
                    "id": str(self.application_id),
                    "flags": self.application_payload()["flags"],
                },
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "guild_join_requests": [],
                "user_settings": {},
                "auth": {},
                "geo_ordered_rtc_regions": ["fake"],
                "_trace": ["fake-discord"],
            },
        )
        await self._dispatch_to(conn, "GUILD_CREATE", self.guild_payload())
        self._connected.set()
        self._touch()

    async def _send_member_chunk(self, conn: GatewayConnection, data: dict[str, Any]) -> None:
        users = list(self.users.values())
        if data.get("user_ids"):
            wanted = {int(u) for u in data["user_ids"]}
            users = [u for u in users if u.id in wanted]
        elif data.get("query"):
            users = [u for u in users if u.username.startswith(data["query"])]
        if data.get("limit"):
            users = users[: int(data["limit"])]
        await self._dispatch_to(
            conn,
            "GUILD_MEMBERS_CHUNK",
            {
                "guild_id": str(self.guild_id),
                "members": [self.member_payload(u) for u in users],
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": [],
                "presences": [],
                "nonce": data.get("nonce"),
            },
        )

    async def _send(self, conn: GatewayConnection, frame: dict[str, Any]) -> None:
        text = json.dumps(frame)
        async with conn.lock:  # one zlib stream per connection: compress and send in order
            if conn.ws.closed:
                return
            conn.sent.append(frame)
            if conn.compressed:
                data = conn.compressor.compress(text.encode()) + conn.compressor.flush(
                    zlib.Z_SYNC_FLUSH
                )
                await conn.ws.send_bytes(data)
            else:
                await conn.ws.send_str(text)

    async def _dispatch_to(self, conn: GatewayConnection, event: str, data: dict[str, Any]) -> None:
        conn.seq += 1
        await self._send(conn, {"op": 0, "t": event, "s": conn.seq, "d": data})

    def _ready_connections(self) -> list[GatewayConnection]:
        return [c for c in self.gateway_connections if c.ready]

    async def dispatch(
        self,
        event: str,
        data: dict[str, Any] | Callable[[GatewayConnection], Any],
        *,
        summary: str = "",
        required: bool = True,
        record: bool = True,
    ) -> None:
        """Send a DISPATCH (op 0) to every identified connection.

        ``data`` may be a function of the connection that returns the payload or None
        (to skip that connection, e.g. for intents).
        """
        conns = self._ready_connections()
        if not conns and required:
            raise RuntimeError(f"no bot is connected to the fake gateway (dispatching {event})")
        for conn in conns:
            payload = data(conn) if callable(data) else data
            if payload is not None:
                await self._dispatch_to(conn, event, payload)
        if record:
            self.dispatched.append(_Dispatch(next(self._seq), event, summary or event))
        self._touch()

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def disconnect(self, *, code: int = 4000) -> None:
        """Close the bot's gateway connections (discord.py reconnects and RESUMEs)."""
        for conn in self._ready_connections():
            await conn.ws.close(code=code)

    # -- user actions (gateway events) --------------------------------------

    def _channel(self, channel: FakeChannel | int | None) -> FakeChannel:
        if channel is None:
            return self.general
        if isinstance(channel, FakeChannel):
            return channel
        try:
            return self.channels[int(channel)]
        except KeyError:
            raise LookupError(f"unknown channel {channel}") from None

    def store_attachment(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str | None = None,
        *,
        description: str | None = None,
        ephemeral: bool = False,
    ) -> FakeAttachment:
        """Keep bytes on the fake CDN; the attachment's ``url`` serves them back."""
        att_id = self._snowflake()
        if content_type is None:
            content_type = mimetypes.guess_type(filename)[0]
        width = height = None
        if content_type and content_type.startswith("image/"):
            width, height = _image_size(data)
        url = f"{self.base_url}/attachments/{channel_id}/{att_id}/{filename}"
        proxy = f"{self.base_url}/media/attachments/{channel_id}/{att_id}/{filename}"
        att = FakeAttachment(
            att_id,
            filename,
            bytes(data),
            content_type,
            url,
            proxy,
            width,
            height,
            description,
            ephemeral,
            label=f"a{next(self._attachment_no)}",
        )
        self.attachments[att_id] = att
        self._labels[att_id] = att.label
        return att

    def _as_attachment(self, channel_id: int, spec: Any) -> FakeAttachment:
        if isinstance(spec, FakeAttachment):
            return spec
        if isinstance(spec, (tuple, list)) and 2 <= len(spec) <= 3:
            return self.store_attachment(channel_id, *spec)
        raise TypeError(f"attachment must be (filename, bytes[, content_type]), got {spec!r}")

    async def send_message(
        self,
        content: str = "",
        *,
        author: FakeUser | None = None,
        channel: FakeChannel | int | None = None,
        attachments: Iterable[Any] = (),
        reference: FakeMessage | int | None = None,
        embeds: Sequence[dict[str, Any]] = (),
    ) -> FakeMessage:
        """A user posts a message: stored, and dispatched as MESSAGE_CREATE.

        ``attachments``: ``(filename, bytes)`` or ``(filename, bytes, content_type)``.
        ``reference``: the message (or id) this one replies to.
        """
        author = author or self.alice
        chan = self._channel(channel)
        ref_id = reference.id if isinstance(reference, FakeMessage) else reference
        if ref_id is not None and ref_id not in self.messages:
            raise LookupError(f"cannot reply to unknown message {ref_id}")
        msg = self._new_message(
            chan,
            author,
            content=content,
            embeds=list(embeds),
            attachments=[self._as_attachment(chan.id, a) for a in attachments],
            reference_id=ref_id,
            type=TYPE_REPLY if ref_id else TYPE_DEFAULT,
        )
        await self._dispatch_message("MESSAGE_CREATE", msg)
        return msg

    async def edit_user_message(self, message: FakeMessage | int, content: str) -> FakeMessage:
        msg = self._message(message)
        self._record_edit(msg)
        msg.content = content
        msg.mention_ids, msg.mention_role_ids = self._parse_mentions(content)
        await self._dispatch_message("MESSAGE_UPDATE", msg)
        return msg

    async def delete_user_message(self, message: FakeMessage | int) -> None:
        msg = self._message(message)
        msg.deleted = True
        await self._dispatch_delete(msg)

    async def add_reaction(
        self, message: FakeMessage | int, emoji: str, *, user: FakeUser | None = None
    ) -> None:
        msg = self._message(message)
        user = user or self.alice
        msg.reactions.setdefault(emoji, [])
        if user.id not in msg.reactions[emoji]:
            msg.reactions[emoji].append(user.id)
        data = {
            "user_id": str(user.id),
            "channel_id": str(msg.channel_id),
            "message_id": str(msg.id),
            "message_author_id": str(msg.author.id),
            "emoji": {"id": None, "name": emoji},
            "burst": False,
            "type": 0,
        }
        if msg.guild_id:
            data["guild_id"] = str(msg.guild_id)
            data["member"] = self.member_payload(user)
        await self.dispatch(
            "MESSAGE_REACTION_ADD",
            data,
            summary=f"MESSAGE_REACTION_ADD {emoji} on {msg.label} by {user.username}",
        )

    def _message(self, message: FakeMessage | int) -> FakeMessage:
        mid = message.id if isinstance(message, FakeMessage) else int(message)
        try:
            return self.messages[mid]
        except KeyError:
            raise LookupError(f"unknown message {mid}") from None

    async def _dispatch_message(self, event: str, msg: FakeMessage) -> None:
        if msg.ephemeral:
            return
        payload = self.message_payload(msg, gateway=True)
        who = msg.author.username
        summary = f"{event} {msg.label} {who}: {_short(msg.content)}"
        if msg.attachments:
            summary += f" files={msg.filenames}"
        from_bot = msg.author.id == self.bot_user.id  # Discord echoes the bot's own messages
        await self.dispatch(
            event,
            lambda conn: self._strip_for_intents(payload, msg, conn),
            summary=summary,
            required=not from_bot,
            record=not from_bot,
        )

    async def _dispatch_delete(self, msg: FakeMessage) -> None:
        if msg.ephemeral:
            return
        data = {"id": str(msg.id), "channel_id": str(msg.channel_id)}
        if msg.guild_id:
            data["guild_id"] = str(msg.guild_id)
        await self.dispatch(
            "MESSAGE_DELETE",
            data,
            summary=f"MESSAGE_DELETE {msg.label}",
            required=False,
            record=msg.author.id != self.bot_user.id,
        )

    # -- user actions (interactions) ----------------------------------------

    def find_command(self, name: str, guild_id: int | None = None) -> dict[str, Any] | None:
        """The synced command ``name`` (top-level), guild commands first."""
        for scope in (guild_id, None) if guild_id else (None,):
            for cmd in self.commands.get(scope, []):
                if cmd["name"] == name:
                    return cmd
        return None

    def _interaction_base(
        self,
        type_: int,
        user: FakeUser,
        chan: FakeChannel,
        data: dict[str, Any],
        message_id: int | None = None,
    ) -> FakeInteraction:
        iid = self._snowflake()
        no = next(self._interaction_no)
        inter = FakeInteraction(
            iid,
            f"itok{no}_{secrets.token_hex(8)}",
            type_,
            user,
            chan.id,
            chan.guild_id,
            data,
            message_id=message_id,
            label=f"i{no}",
        )
        self._labels[iid] = inter.label
        self._token_labels[inter.token] = f"{inter.label}.token"
        self.interactions[iid] = inter
        return inter

    def interaction_payload(self, inter: FakeInteraction) -> dict[str, Any]:
        chan = self.channels[inter.channel_id]
        data: dict[str, Any] = {
            "id": str(inter.id),
            "application_id": str(self.application_id),
            "type": inter.type,
            "data": inter.data,
            "channel_id": str(chan.id),
            "channel": chan.payload(),
            "token": inter.token,
            "version": 1,
            "locale": inter.user.locale,
            "app_permissions": str(self.permissions_for(self.bot_user).value),
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": self.filesize_limit,
        }
        if chan.guild_id is not None:
            data["guild_id"] = str(chan.guild_id)
            data["guild"] = {
                "id": str(chan.guild_id),
                "locale": self.preferred_locale,
                "features": [],
            }
            data["guild_locale"] = self.preferred_locale
            data["member"] = self.member_payload(inter.user, permissions=True)
            data["authorizing_integration_owners"] = {"0": str(chan.guild_id)}
            data["context"] = 0
        else:
            data["user"] = inter.user.payload()
            data["authorizing_integration_owners"] = {"0": str(self.owner.id)}
            data["context"] = 1
        if inter.message_id is not None:
            data["message"] = self.message_payload(self.messages[inter.message_id])
        return data

    async def _dispatch_interaction(self, inter: FakeInteraction, summary: str) -> FakeInteraction:
        await self.dispatch(
            "INTERACTION_CREATE",
            self.interaction_payload(inter),
            summary=f"INTERACTION_CREATE {inter.label} {summary} by {inter.user.username}",
        )
        return inter

    async def send_slash_command(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        user: FakeUser | None = None,
        channel: FakeChannel | int | None = None,
        attachments: Mapping[str, Any] | None = None,
    ) -> FakeInteraction:
        """A user runs ``/name`` (``"group sub"`` for subcommands): INTERACTION_CREATE type 2.

        Option types come from the synced command when there is one (else from the Python
        type). Attachment options (type 11) are given as ``(filename, bytes[,
        content_type])`` in ``options`` or ``attachments``; they go to
        ``data.resolved.attachments`` and the option's value is the attachment id.
        ``FakeUser`` values become user options with resolved users and members.
        If commands were synced but ``name`` is not among them, LookupError: on Discord
        the user could not run it.
        """
        user = user or self.alice
        chan = self._channel(channel)
        path = name.split()
        cmd = self.find_command(path[0], chan.guild_id)
        if cmd is None and any(self.commands.values()):
            known = sorted({c["name"] for cmds in self.commands.values() for c in cmds})
            raise LookupError(f"/{path[0]} was never synced; synced commands: {known}")
        values = dict(options or {})
        values.update(attachments or {})

        defs, nest = _option_defs(cmd, path)
        missing = [n for n, o in defs.items() if o.get("required") and n not in values]
        if missing:
            raise ValueError(f"/{name}: required options missing: {missing}")

        resolved: dict[str, dict[str, Any]] = {}
        opts = []
        for opt_name, value in values.items():
            opt_type = defs.get(opt_name, {}).get("type") or _infer_option_type(value)
            if opt_type == 11:
                att = self._as_attachment(chan.id, value)
                att.ephemeral = True
                resolved.setdefault("attachments", {})[str(att.id)] = att.payload()
                value = str(att.id)
            elif opt_type == 6 and isinstance(value, FakeUser):
                resolved.setdefault("users", {})[str(value.id)] = value.payload()
                if chan.guild_id:
                    member = self.member_payload(value, with_user=False, permissions=True)
                    resolved.setdefault("members", {})[str(value.id)] = member
                value = str(value.id)
            elif opt_type in (7, 8, 9) and hasattr(value, "id"):
                value = str(value.id)
            opts.append({"name": opt_name, "type": opt_type, "value": value})
        for part, part_type in reversed(nest):
            opts = [{"name": part, "type": part_type, "options": opts}]

        data: dict[str, Any] = {
            "id": cmd["id"] if cmd else str(self._snowflake()),
            "name": path[0],
            "type": 1,
            "options": opts,
        }
        if resolved:
            data["resolved"] = resolved
        if cmd and cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        inter = self._interaction_base(2, user, chan, data)
        shown = {
            k: (v[0] if isinstance(v, tuple) else getattr(v, "username", v))
            for k, v in values.items()
        }
        return await self._dispatch_interaction(inter, f"/{name} {shown}")

    async def send_autocomplete(
        self,
        name: str,
        options: Mapping[str, Any],
        focused: str,
        *,
        user: FakeUser | None = None,
        channel: FakeChannel | int | None = None,
    ) -> FakeInteraction:
        """A user types in the option ``focused`` of ``/name``: INTERACTION_CREATE type 4 with
        the options typed so far (strings and numbers only); the bot answers with choices
        (``autocomplete_choices``)."""
        user = user or self.alice
        chan = self._channel(channel)
        path = name.split()
        cmd = self.find_command(path[0], chan.guild_id)
        if cmd is None:
            raise LookupError(f"/{path[0]} was never synced")
        defs, nest = _option_defs(cmd, path)
        opts: list[dict[str, Any]] = []
        for opt_name, value in options.items():
            opt: dict[str, Any] = {
                "name": opt_name,
                "type": defs.get(opt_name, {}).get("type") or _infer_option_type(value),
                "value": value,
            }
            if opt_name == focused:
                opt["focused"] = True
            opts.append(opt)
        for part, part_type in reversed(nest):
            opts = [{"name": part, "type": part_type, "options": opts}]
        data = {"id": cmd["id"], "name": path[0], "type": 1, "options": opts}
        inter = self._interaction_base(4, user, chan, data)
        return await self._dispatch_interaction(inter, f"autocomplete /{name} {focused}")

    async def send_message_command(
        self, name: str, message: FakeMessage | int, *, user: FakeUser | None = None
    ) -> FakeInteraction:
        """A user picks the message context-menu command ``name`` on ``message``."""
        user = user or self.alice
        msg = self._message(message)
        chan = self.channels[msg.channel_id]
        cmd = self.find_command(name, chan.guild_id)
        data: dict[str, Any] = {
            "id": cmd["id"] if cmd else str(self._snowflake()),
            "name": name,
            "type": 3,
            "target_id": str(msg.id),
            "resolved": {"messages": {str(msg.id): self.message_payload(msg)}},
        }
        if cmd and cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        inter = self._interaction_base(2, user, chan, data)
        return await self._dispatch_interaction(inter, f"[{name}] on {msg.label}")

    def _component(self, msg: FakeMessage, custom_id: str) -> dict[str, Any]:
        for comp in msg.buttons:
            if comp.get("custom_id") == custom_id:
                if comp.get("disabled"):
                    raise ValueError(f"component {custom_id!r} on {msg.label} is disabled")
                return comp
        raise LookupError(f"no component {custom_id!r} on {msg.label}; it has {msg.custom_ids}")

    async def click_button(
        self, message: FakeMessage | int, custom_id: str, *, user: FakeUser | None = None
    ) -> FakeInteraction:
        """A user clicks a button: INTERACTION_CREATE type 3 with the message included."""
        user = user or self.alice
        msg = self._message(message)
        comp = self._component(msg, custom_id)
        if comp.get("type") != 2:
            raise ValueError(f"{custom_id!r} is not a button")
        data = {"custom_id": custom_id, "component_type": 2}
        if "id" in comp:
            data["id"] = comp["id"]
        inter = self._interaction_base(
            3, user, self.channels[msg.channel_id], data, message_id=msg.id
        )
        return await self._dispatch_interaction(inter, f"button {custom_id!r} on {msg.label}")

    async def choose(
        self,
        message: FakeMessage | int,
        custom_id: str,
        values: Sequence[str],
        *,
        user: FakeUser | None = None,
    ) -> FakeInteraction:
        """A user picks ``values`` in a string select menu."""
        user = user or self.alice
        msg = self._message(message)
        comp = self._component(msg, custom_id)
        data = {
            "custom_id": custom_id,
            "component_type": comp.get("type", 3),
            "values": list(values),
        }
        inter = self._interaction_base(
            3, user, self.channels[msg.channel_id], data, message_id=msg.id
        )
        return await self._dispatch_interaction(
            inter, f"select {custom_id!r}={list(values)} on {msg.label}"
        )

    async def submit_modal(
        self, opened_by: FakeInteraction, values: Mapping[str, str], *, user: FakeUser | None = None
    ) -> FakeInteraction:
        """A user submits the modal the bot showed in answer to ``opened_by``."""
        modal = opened_by.modal
        if modal is None:
            raise LookupError(f"{opened_by.label} was not answered with a modal")

        def fill(comp: dict[str, Any]) -> dict[str, Any] | None:
            if comp.get("type") == 1:
                return {
                    "type": 1,
                    "components": [c for c in map(fill, comp.get("components", [])) if c],
                }
            if comp.get("type") == 18:
                inner = fill(comp["component"])
                return {"type": 18, "component": inner} if inner else None
            if comp.get("type") == 4:
                return {
                    "type": 4,
                    "custom_id": comp["custom_id"],
                    "value": values.get(comp["custom_id"], ""),
                }
            return None

        data = {
            "custom_id": modal["custom_id"],
            "components": [c for c in map(fill, modal.get("components", [])) if c],
        }
        chan = self.channels[opened_by.channel_id]
        inter = self._interaction_base(
            5, user or opened_by.user, chan, data, message_id=opened_by.message_id
        )
        return await self._dispatch_interaction(inter, f"modal {modal['custom_id']!r}")

    # -- waiting and reading records ----------------------------------------

    def _touch(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(
        self, check: Callable[[], Any], timeout: float = 5.0, what: str = "a condition"
    ) -> Any:
        """Wait until ``check()`` is truthy and return it. It is rechecked whenever the fake
        records something (a request, a message change, a dispatch, a download), so it
        also suits bot-side state that changes in reaction to those."""
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            left = deadline - time.monotonic()
            if left <= 0:
                errors = "\n".join(self.bot_errors[-5:]) or "(none)"
                raise TimeoutError(
                    f"timed out after {timeout} s waiting for {what}\n"
                    f"--- transcript ---\n{self.transcript(gateway=True)}\n"
                    f"--- discord.py errors ---\n{errors}"
                )
            changed = self._changed
            # Woken by the fake's own records at once; the short cap covers checks on
            # bot-side state, which changes without the fake noticing.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), min(left, 0.05))

    def mark(self) -> int:
        """Index into ``requests``; pass it as ``after=`` to wait only for later calls."""
        return len(self.requests)

    async def wait_for(
        self, predicate: Callable[[Request], Any], timeout: float = 5.0, *, after: int = 0
    ) -> Request:
        """The first recorded REST call (from ``requests[after:]``) matching ``predicate``."""

        def check() -> Request | None:
            return next((r for r in self.requests[after:] if predicate(r)), None)

        return await self.wait_until(check, timeout, "a matching request")

    async def wait_for_request(
        self, method: str, path: str, timeout: float = 5.0, *, after: int = 0
    ) -> Request:
        """Wait for ``method`` on ``path`` (a template like ``/channels/{id}/messages``)."""
        pattern = _compile_template(path)
        return await self.wait_for(
            lambda r: r.method == method and pattern.fullmatch(r.path), timeout, after=after
        )

    async def wait_for_message(
        self,
        predicate: Callable[[FakeMessage], Any],
        timeout: float = 5.0,
    ) -> FakeMessage:
        """The first stored message (current state, any author) matching ``predicate``.

        Rechecked whenever anything changes, so it also waits for edits.
        """

        def check() -> FakeMessage | None:
            return next((m for m in list(self.messages.values()) if predicate(m)), None)

        return await self.wait_until(check, timeout, "a matching message")

    async def wait_for_bot_message(
        self,
        predicate: Callable[[FakeMessage], Any] = lambda m: True,
        timeout: float = 5.0,
        *,
        channel: FakeChannel | int | None = None,
    ) -> FakeMessage:
        chan_id = None if channel is None else self._channel(channel).id
        return await self.wait_for_message(
            lambda m: (
                m.author.id == self.bot_user.id
                and not m.deleted
                and (chan_id is None or m.channel_id == chan_id)
                and predicate(m)
            ),
            timeout,
        )

    async def wait_for_response(
        self, inter: FakeInteraction, timeout: float = 5.0
    ) -> FakeInteraction:
        """Wait until the bot acknowledged ``inter`` (any callback type)."""
        return await self.wait_until(
            lambda: inter if inter.acknowledged else None, timeout, f"a response to {inter.label}"
        )

    def channel_messages(
        self, channel: FakeChannel | int | None = None, *, include_deleted: bool = False
    ) -> list[FakeMessage]:
        chan = self._channel(channel)
        return [
            m
            for m in self.messages.values()
            if m.channel_id == chan.id and (include_deleted or not m.deleted)
        ]

    def bot_messages(self, channel: FakeChannel | int | None = None) -> list[FakeMessage]:
        return [
            m
            for m in self.messages.values()
            if m.author.id == self.bot_user.id
            and not m.deleted
            and (channel is None or m.channel_id == self._channel(channel).id)
        ]

    def assert_no_bot_errors(self) -> None:
        """Fail if discord.py logged an error (an exception in a command, view or event)."""
        if self.bot_errors:
            raise AssertionError("discord.py logged errors:\n" + "\n\n".join(self.bot_errors))

    def leaks(self, secret: str) -> list[str]:
        """Where ``secret`` appears in what the bot sent: bodies, file names, file bytes,
        query strings, gateway frames (the token field of IDENTIFY/RESUME excepted)."""
        found = []
        needle = secret.encode()
        for req in self.requests:
            if needle in req.raw_body or secret in req.path or secret in json.dumps(req.query):
                found.append(f"request #{req.seq}: {req.method} {req.path}")
            for f in req.files:
                if secret in f.filename or needle in f.data:
                    found.append(f"request #{req.seq}: file {f.filename!r}")
        for conn in self.gateway_connections:
            for frame in conn.received:
                frame = json.loads(json.dumps(frame))
                if isinstance(frame.get("d"), dict):
                    frame["d"].pop("token", None)
                if secret in json.dumps(frame):
                    found.append(f"gateway frame op {frame.get('op')}")
        for msg in self.messages.values():
            texts = [msg.content, json.dumps(msg.embeds), json.dumps(msg.components)]
            if msg.author.id == self.bot_user.id and any(secret in t for t in texts):
                found.append(f"message {msg.label}")
        return found

    def label(self, value: int | str) -> str:
        """The readable name transcripts use for an id or interaction token."""
        if isinstance(value, str) and not value.isdigit():
            return self._token_labels.get(value, value)
        return self._labels.get(int(value), str(value))

    def _label_path(self, path: str) -> str:
        return "/".join(
            self.label(p) if p.isdigit() or p in self._token_labels else p for p in path.split("/")
        )

    def transcript(
        self, *, gateway: bool = False, setup: bool = False, downloads: bool = True
    ) -> str:
        """What the fake received, in order, one line each.

        REST calls always; ``setup`` adds the login calls; ``gateway`` adds the events the
        fake dispatched (``<-`` lines); ``downloads`` the attachment fetches.
        """
        entries: list[tuple[int, str]] = []
        for req in self.requests:
            if setup or req.route not in SETUP_ROUTES:
                entries.append((req.seq, req.summary))
        if gateway:
            entries += [(d.seq, f"<- {d.summary}") for d in self.dispatched]
        if downloads:
            for d in self.downloads:
                name = d.attachment.filename if d.attachment else d.path
                entries.append((d.seq, f"CDN GET {name} -> {d.status}"))
        return "\n".join(line for _, line in sorted(entries))

    # -- error injection ----------------------------------------------------

    def fail_next(
        self,
        method: str | None = None,
        path: str | re.Pattern[str] | None = None,
        status: int = 500,
        body: Any = None,
        *,
        times: int = 1,
        when: Callable[[Request], bool] | None = None,
        retry_after: float = 0.01,
        headers: Mapping[str, str] | None = None,
    ) -> _Failure:
        """Answer the next ``times`` matching REST calls with ``status`` and a JSON ``body``.

        ``path`` is a template (``/channels/{channel_id}/messages``, ``{x}`` matches one
        segment) or a compiled regex, matched against the path below /api/v10. ``when``
        filters further, e.g. ``lambda r: r.files`` for uploads only. The call is recorded
        with ``injected=True``. Without ``body``, Discord's body for that status.

        Beware of discord.py's retries: a 429 is retried after ``retry_after`` seconds
        (kept tiny here); 500, 502, 504 and 524 are retried up to 5 times with sleeps of
        1, 3, 5, 7 s; use 503 for a server error that surfaces at once.
        """
        if body is None:
            body = dict(DEFAULT_ERROR_BODIES.get(status, {"code": 0, "message": f"{status}"}))
        hdrs = dict(headers or {})
        if status == 429:
            body = {**body, "retry_after": retry_after}
            hdrs.setdefault("Via", "1.1 google")  # without Via discord.py raises, not retries
            hdrs.setdefault("Retry-After", str(max(1, round(retry_after))))
            hdrs.setdefault("X-RateLimit-Limit", "5")
            hdrs.setdefault("X-RateLimit-Remaining", "0")
            hdrs.setdefault("X-RateLimit-Reset-After", str(retry_after))
            hdrs.setdefault("X-RateLimit-Reset", f"{time.time() + retry_after:.3f}")
            hdrs.setdefault("X-RateLimit-Bucket", "fake-bucket")
            hdrs.setdefault("X-RateLimit-Scope", "user")
        pattern = path if path is None or isinstance(path, re.Pattern) else _compile_template(path)
        failure = _Failure(
            method.upper() if method else None, pattern, status, body, hdrs, times, when
        )
        self._failures.append(failure)
        return failure

    # -- REST ---------------------------------------------------------------

    def _route_table(self) -> list[tuple[str, str, Callable[..., Any]]]:
        return [
            ("GET", "/users/@me", self._get_me),
            ("POST", "/users/@me/channels", self._create_dm),
            ("GET", "/users/{user_id}", self._get_user),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/applications/@me", self._get_application),
            ("GET", "/gateway/bot", self._get_gateway_bot),
            ("GET", "/gateway", self._get_gateway),
            ("PUT", "/applications/{app_id}/commands", self._put_commands),
            ("GET", "/applications/{app_id}/commands", self._get_commands),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self._put_commands),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self._get_commands),
            ("GET", "/guilds/{guild_id}", self._get_guild),
            ("GET", "/guilds/{guild_id}/channels", self._get_guild_channels),
            ("GET", "/guilds/{guild_id}/roles", self._get_roles),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self._get_member),
            ("GET", "/channels/{channel_id}", self._get_channel),
            ("GET", "/channels/{channel_id}/messages", self._get_messages),
            ("POST", "/channels/{channel_id}/messages", self._post_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._patch_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self._delete_message),
            ("POST", "/channels/{channel_id}/typing", self._typing),
            (
                "PUT",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
                self._add_own_reaction,
            ),
            (
                "DELETE",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/{user}",
                self._remove_reaction,
            ),
            (
                "DELETE",
                "/channels/{channel_id}/messages/{message_id}/reactions",
                self._clear_reactions,
            ),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._interaction_callback),
            ("POST", "/webhooks/{app_id}/{token}", self._execute_webhook),
            ("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", self._get_webhook_message),
            (
                "PATCH",
                "/webhooks/{app_id}/{token}/messages/{message_id}",
                self._edit_webhook_message,
            ),
            (
                "DELETE",
                "/webhooks/{app_id}/{token}/messages/{message_id}",
                self._delete_webhook_message,
            ),
        ]

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        method = request.method
        body, files, raw = await _parse_body(request)
        auth = request.headers.get("Authorization")
        if auth and auth.startswith("Bot "):
            self.tokens_seen.add(auth[4:])
        req = Request(0, method, path, None, dict(request.query), body, files, raw, auth)

        handler = params = None
        for r_method, pattern, template, func in self._routes:
            m = pattern.fullmatch(path)
            if m and r_method == method:
                req.route = f"{method} {template}"
                handler, params = func, m.groupdict()
                break

        headers: dict[str, str] = {}
        try:
            failure = next((f for f in self._failures if f.matches(req)), None)
            if failure is not None:
                failure.remaining -= 1
                req.injected = True
                headers = failure.headers
                raise _ApiError(failure.status, failure.body)
            if handler is None:
                self.unhandled.append(req)
                raise _ApiError(404, {"code": 0, "message": "404: Not Found"})
            needs_auth = not path.startswith(("/interactions/", "/webhooks/"))
            if needs_auth and (auth is None or self._bad_token(auth.removeprefix("Bot "))):
                raise _ApiError(401, {"code": 0, "message": "401: Unauthorized"})
            status, payload = await handler(req, **params)
        except _ApiError as exc:
            status, payload = exc.status, exc.body

        req.status, req.response = status, payload
        req.seq = next(self._seq)
        req.summary = self._summarize(req)
        self.requests.append(req)
        self._touch()
        if status == 204 or payload is None:
            return web.Response(status=status, headers=headers)
        # Exactly "application/json": discord.py compares the header verbatim.
        return web.Response(
            status=status,
            body=json.dumps(payload).encode(),
            headers={**headers, "Content-Type": "application/json"},
        )

    async def _handle_cdn(self, request: web.Request) -> web.StreamResponse:
        att = (
            self.attachments.get(int(request.match_info["attachment_id"]))
            if request.match_info["attachment_id"].isdigit()
            else None
        )
        status = 200 if att is not None and att.filename == request.match_info["filename"] else 404
        self.downloads.append(_Download(next(self._seq), att, request.path, status))
        self._touch()
        if status != 200:
            return web.Response(status=404, text="Not Found")
        return web.Response(
            body=att.data, headers={"Content-Type": att.content_type or "application/octet-stream"}
        )

    # route handlers return (status, json-able body or None)

    async def _get_me(self, req: Request) -> tuple[int, Any]:
        return 200, {
            **self.bot_user.payload(),
            "verified": True,
            "mfa_enabled": False,
            "email": None,
            "locale": "en-US",
            "bio": "",
        }

    async def _get_user(self, req: Request, user_id: str) -> tuple[int, Any]:
        user = self.users.get(int(user_id)) if user_id.isdigit() else None
        if user is None:
            raise _ApiError(404, {"code": 10013, "message": "Unknown User"})
        return 200, user.payload()

    async def _create_dm(self, req: Request) -> tuple[int, Any]:
        user = self.users.get(int((req.json or {}).get("recipient_id", 0)))
        if user is None:
            raise _ApiError(400, _form_error("recipient_id", "Unknown user"))
        return 200, self.dm_channel(user).payload()

    async def _get_application(self, req: Request) -> tuple[int, Any]:
        return 200, self.application_payload()

    async def _get_gateway_bot(self, req: Request) -> tuple[int, Any]:
        return 200, {
            "url": self.gateway_url,
            "shards": 1,
            "session_start_limit": {
                "total": 1000,
                "remaining": 999,
                "reset_after": 0,
                "max_concurrency": 1,
            },
        }

    async def _get_gateway(self, req: Request) -> tuple[int, Any]:
        return 200, {"url": self.gateway_url}

    async def _put_commands(
        self,
        req: Request,
        app_id: str,
        guild_id: str | None = None,
    ) -> tuple[int, Any]:
        if int(app_id) != self.application_id:
            raise _ApiError(403, {"code": 50001, "message": "Missing Access"})
        if guild_id is not None and int(guild_id) != self.guild_id:
            raise _ApiError(403, {"code": 50001, "message": "Missing Access"})
        scope = int(guild_id) if guild_id else None
        old = {c["name"]: c for c in self.commands.get(scope, [])}
        echoed = []
        for cmd in req.json or []:
            prev = old.get(cmd["name"])
            cid = prev["id"] if prev else str(self._snowflake(f"cmd:{cmd['name']}"))
            out = {
                "type": 1,
                "description": "",
                "options": [],
                "default_member_permissions": None,
                "nsfw": False,
                **cmd,
                "id": cid,
                "application_id": str(self.application_id),
                "version": str(self._snowflake()),
            }
            if guild_id:
                out["guild_id"] = guild_id
            echoed.append(out)
        self.commands[scope] = echoed
        return 200, echoed

    async def _get_commands(
        self,
        req: Request,
        app_id: str,
        guild_id: str | None = None,
    ) -> tuple[int, Any]:
        return 200, self.commands.get(int(guild_id) if guild_id else None, [])

    async def _get_guild(self, req: Request, guild_id: str) -> tuple[int, Any]:
        self._check_guild(guild_id)
        data = self.guild_payload()
        for key in (
            "members",
            "channels",
            "threads",
            "presences",
            "voice_states",
            "joined_at",
            "large",
            "member_count",
            "stage_instances",
            "guild_scheduled_events",
            "soundboard_sounds",
            "lazy",
            "unavailable",
        ):
            data.pop(key, None)
        return 200, data

    def _check_guild(self, guild_id: str) -> None:
        if not guild_id.isdigit() or int(guild_id) != self.guild_id:
            raise _ApiError(404, {"code": 10004, "message": "Unknown Guild"})

    async def _get_guild_channels(self, req: Request, guild_id: str) -> tuple[int, Any]:
        self._check_guild(guild_id)
        return 200, [c.payload() for c in self.guild_channels()]

    async def _get_roles(self, req: Request, guild_id: str) -> tuple[int, Any]:
        self._check_guild(guild_id)
        return 200, self.role_payloads()

    async def _get_member(self, req: Request, guild_id: str, user_id: str) -> tuple[int, Any]:
        self._check_guild(guild_id)
        user = self.users.get(int(user_id)) if user_id.isdigit() else None
        if user is None:
            raise _ApiError(404, {"code": 10007, "message": "Unknown Member"})
        return 200, self.member_payload(user)

    def _rest_channel(self, channel_id: str) -> FakeChannel:
        chan = self.channels.get(int(channel_id)) if channel_id.isdigit() else None
        if chan is None:
            raise _ApiError(404, {"code": 10003, "message": "Unknown Channel"})
        return chan

    def _rest_message(self, chan: FakeChannel, message_id: str) -> FakeMessage:
        msg = self.messages.get(int(message_id)) if message_id.isdigit() else None
        if msg is None or msg.deleted or msg.channel_id != chan.id or msg.ephemeral:
            raise _ApiError(404, {"code": 10008, "message": "Unknown Message"})
        return msg

    async def _get_channel(self, req: Request, channel_id: str) -> tuple[int, Any]:
        return 200, self._rest_channel(channel_id).payload()

    async def _get_messages(self, req: Request, channel_id: str) -> tuple[int, Any]:
        chan = self._rest_channel(channel_id)
        limit = int(req.query.get("limit", 50))
        msgs = [m for m in self.channel_messages(chan) if not m.ephemeral]
        if "before" in req.query:
            msgs = [m for m in msgs if m.id < int(req.query["before"])]
        if "after" in req.query:
            msgs = [m for m in msgs if m.id > int(req.query["after"])][:limit]
        return 200, [self.message_payload(m) for m in reversed(msgs)][:limit]

    async def _get_message(self, req: Request, channel_id: str, message_id: str) -> tuple[int, Any]:
        msg = self._rest_message(self._rest_channel(channel_id), message_id)
        req.message_id = msg.id
        return 200, self.message_payload(msg)

    async def _post_message(self, req: Request, channel_id: str) -> tuple[int, Any]:
        chan = self._rest_channel(channel_id)
        body = req.json or {}
        self._validate_new(body, req.files)
        ref_id = None
        ref = body.get("message_reference")
        if ref and ref.get("message_id"):
            ref_id = int(ref["message_id"])
            if ref_id not in self.messages or self.messages[ref_id].deleted:
                if ref.get("fail_if_not_exists", True):
                    raise _ApiError(
                        400,
                        _form_error(
                            "message_reference",
                            "Unknown message",
                            "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                        ),
                    )
                ref_id = None
        msg = self._new_message(
            chan,
            self.bot_user,
            content=body.get("content") or "",
            embeds=body.get("embeds") or [],
            components=body.get("components") or [],
            flags=int(body.get("flags") or 0) & ~FLAG_EPHEMERAL,
            attachments=self._uploads(chan.id, body, req.files),
            reference_id=ref_id,
            type=TYPE_REPLY if ref_id else TYPE_DEFAULT,
        )
        req.message_id = msg.id
        await self._dispatch_message("MESSAGE_CREATE", msg)
        return 200, self.message_payload(msg)

    async def _patch_message(
        self, req: Request, channel_id: str, message_id: str
    ) -> tuple[int, Any]:
        chan = self._rest_channel(channel_id)
        msg = self._rest_message(chan, message_id)
        if msg.author.id != self.bot_user.id:
            raise _ApiError(
                403, {"code": 50005, "message": "Cannot edit a message authored by another user"}
            )
        self._apply_edit(msg, req.json or {}, req.files)
        req.message_id = msg.id
        await self._dispatch_message("MESSAGE_UPDATE", msg)
        return 200, self.message_payload(msg)

    async def _delete_message(
        self, req: Request, channel_id: str, message_id: str
    ) -> tuple[int, Any]:
        chan = self._rest_channel(channel_id)
        msg = self._rest_message(chan, message_id)
        if (
            msg.author.id != self.bot_user.id
            and not self.permissions_for(self.bot_user).manage_messages
        ):
            raise _ApiError(403, {"code": 50013, "message": "Missing Permissions"})
        msg.deleted = True
        req.message_id = msg.id
        await self._dispatch_delete(msg)
        return 204, None

    async def _typing(self, req: Request, channel_id: str) -> tuple[int, Any]:
        self._rest_channel(channel_id)
        return 204, None

    async def _add_own_reaction(
        self, req: Request, channel_id: str, message_id: str, emoji: str
    ) -> tuple[int, Any]:
        msg = self._rest_message(self._rest_channel(channel_id), message_id)
        users = msg.reactions.setdefault(emoji, [])
        if self.bot_user.id not in users:
            users.append(self.bot_user.id)
        req.message_id = msg.id
        return 204, None

    async def _remove_reaction(
        self, req: Request, channel_id: str, message_id: str, emoji: str, user: str
    ) -> tuple[int, Any]:
        msg = self._rest_message(self._rest_channel(channel_id), message_id)
        uid = self.bot_user.id if user == "@me" else int(user)
        if uid in msg.reactions.get(emoji, []):
            msg.reactions[emoji].remove(uid)
        req.message_id = msg.id
        return 204, None

    async def _clear_reactions(
        self, req: Request, channel_id: str, message_id: str
    ) -> tuple[int, Any]:
        msg = self._rest_message(self._rest_channel(channel_id), message_id)
        msg.reactions.clear()
        return 204, None

    # interactions and webhooks

    def _interaction(self, interaction_id: str, token: str) -> FakeInteraction:
        inter = self.interactions.get(int(interaction_id)) if interaction_id.isdigit() else None
        if inter is None or inter.token != token:
            raise _ApiError(404, {"code": 10062, "message": "Unknown interaction"})
        return inter

    def _interaction_by_token(self, app_id: str, token: str) -> FakeInteraction:
        inter = next((i for i in self.interactions.values() if i.token == token), None)
        if inter is None or app_id != str(self.application_id) or not inter.acknowledged:
            # Discord only knows the webhook once the interaction was acknowledged.
            raise _ApiError(404, {"code": 10015, "message": "Unknown Webhook"})
        return inter

    async def _interaction_callback(
        self,
        req: Request,
        interaction_id: str,
        token: str,
    ) -> tuple[int, Any]:
        inter = self._interaction(interaction_id, token)
        if inter.acknowledged:
            raise _ApiError(
                400, {"code": 40060, "message": "Interaction has already been acknowledged."}
            )
        body = req.json or {}
        cb_type = int(body.get("type", 0))
        data = body.get("data") or {}
        chan = self.channels[inter.channel_id]
        resource: dict[str, Any] = {"type": cb_type}
        message: FakeMessage | None = None
        if cb_type == 1 and inter.type == 1:
            pass
        elif cb_type == 4:
            self._validate_new(data, req.files)
            message = self._interaction_message(inter, chan, data, req.files)
            inter.original_message_id = message.id
        elif cb_type == 5:
            flags = FLAG_LOADING | (int(data.get("flags") or 0) & FLAG_EPHEMERAL)
            message = self._interaction_message(inter, chan, {"flags": flags}, [], loading=True)
            inter.original_message_id = message.id
        elif cb_type in (6, 7) and inter.type == 3:
            inter.original_message_id = inter.message_id
            if cb_type == 7:
                message = self.messages[inter.message_id]
                self._apply_edit(message, data, req.files)
        elif cb_type == 8 and inter.type == 4:
            inter.autocomplete_choices = data.get("choices", [])
        elif cb_type == 9 and inter.type != 5:
            inter.modal = data
        else:
            raise _ApiError(
                400,
                {
                    "code": 40043 if cb_type in (6, 7) else 50035,
                    "message": f"Interaction callback type {cb_type} is not valid "
                    f"for interaction type {inter.type}",
                },
            )
        inter.callback_type, inter.callback_data = cb_type, data
        if message is not None:
            req.message_id = message.id
            resource["message"] = self.message_payload(message)
            await self._dispatch_message(
                "MESSAGE_UPDATE" if cb_type == 7 else "MESSAGE_CREATE", message
            )
        if req.query.get("with_response") not in ("1", "true", "True"):
            return 204, None
        original = self.messages.get(inter.original_message_id or 0)
        return 200, {
            "interaction": {
                "id": str(inter.id),
                "type": inter.type,
                "activity_instance_id": None,
                "response_message_id": _str_or_none(inter.original_message_id),
                "response_message_loading": cb_type == 5,
                "response_message_ephemeral": bool(original and original.ephemeral),
            },
            "resource": resource,
        }

    def _interaction_message(
        self,
        inter: FakeInteraction,
        chan: FakeChannel,
        data: dict[str, Any],
        files: list[UploadedFile],
        *,
        loading: bool = False,
    ) -> FakeMessage:
        msg_type = TYPE_DEFAULT
        if inter.type == 2:
            msg_type = TYPE_CHAT_INPUT if inter.data.get("type", 1) == 1 else TYPE_CONTEXT_MENU
        flags = int(data.get("flags") or 0)
        msg = self._new_message(
            chan,
            self.bot_user,
            content=data.get("content") or "",
            embeds=data.get("embeds") or [],
            components=data.get("components") or [],
            flags=flags,
            attachments=[]
            if loading
            else self._uploads(chan.id, data, files, ephemeral=bool(flags & FLAG_EPHEMERAL)),
            type=msg_type,
            webhook_id=self.application_id,
            interaction=inter,
        )
        return msg

    def _webhook_message(self, inter: FakeInteraction, message_id: str) -> FakeMessage:
        mid = (
            inter.original_message_id
            if message_id == "@original"
            else (int(message_id) if message_id.isdigit() else None)
        )
        allowed = {inter.original_message_id, *inter.followup_ids}
        msg = self.messages.get(mid or 0)
        if msg is None or mid not in allowed or msg.deleted:
            raise _ApiError(404, {"code": 10008, "message": "Unknown Message"})
        return msg

    async def _execute_webhook(self, req: Request, app_id: str, token: str) -> tuple[int, Any]:
        inter = self._interaction_by_token(app_id, token)
        body = req.json or {}
        self._validate_new(body, req.files)
        chan = self.channels[inter.channel_id]
        original = self.messages.get(inter.original_message_id or 0)
        if original is not None and original.loading:
            # The first follow-up after a deferred response fills in the "thinking" message.
            body = {**body, "flags": original.flags & FLAG_EPHEMERAL}
            self._apply_edit(original, body, req.files, from_loading=True)
            msg = original
            await self._dispatch_message("MESSAGE_UPDATE", msg)
        else:
            msg = self._interaction_message(inter, chan, body, req.files)
            inter.followup_ids.append(msg.id)
            await self._dispatch_message("MESSAGE_CREATE", msg)
        req.message_id = msg.id
        if req.query.get("wait") not in ("1", "true", "True"):
            return 204, None
        return 200, self.message_payload(msg)

    async def _get_webhook_message(
        self, req: Request, app_id: str, token: str, message_id: str
    ) -> tuple[int, Any]:
        msg = self._webhook_message(self._interaction_by_token(app_id, token), message_id)
        req.message_id = msg.id
        return 200, self.message_payload(msg)

    async def _edit_webhook_message(
        self, req: Request, app_id: str, token: str, message_id: str
    ) -> tuple[int, Any]:
        inter = self._interaction_by_token(app_id, token)
        msg = self._webhook_message(inter, message_id)
        self._apply_edit(msg, req.json or {}, req.files, from_loading=msg.loading)
        req.message_id = msg.id
        await self._dispatch_message("MESSAGE_UPDATE", msg)
        return 200, self.message_payload(msg)

    async def _delete_webhook_message(
        self, req: Request, app_id: str, token: str, message_id: str
    ) -> tuple[int, Any]:
        inter = self._interaction_by_token(app_id, token)
        msg = self._webhook_message(inter, message_id)
        msg.deleted = True
        req.message_id = msg.id
        await self._dispatch_delete(msg)
        return 204, None

    # message bodies

    def _validate_new(self, body: dict[str, Any], files: list[UploadedFile]) -> None:
        content = body.get("content") or ""
        has_anything = (
            content.strip()
            or body.get("embeds")
            or files
            or body.get("components")
            or body.get("sticker_ids")
            or body.get("poll")
        )
        if not has_anything:
            raise _ApiError(400, {"code": 50006, "message": "Cannot send an empty message"})
        self._validate_parts(body, files)

    def _validate_parts(self, body: dict[str, Any], files: list[UploadedFile]) -> None:
        content = body.get("content") or ""
        if len(content) > MAX_CONTENT:
            raise _ApiError(
                400,
                _form_error(
                    "content", f"Must be {MAX_CONTENT} or fewer in length.", "BASE_TYPE_MAX_LENGTH"
                ),
            )
        if len(body.get("embeds") or []) > MAX_EMBEDS:
            raise _ApiError(
                400,
                _form_error(
                    "embeds", f"Must be {MAX_EMBEDS} or fewer in length.", "BASE_TYPE_MAX_LENGTH"
                ),
            )
        if len(files) > MAX_FILES:
            raise _ApiError(
                400,
                _form_error(
                    "files", f"Must be {MAX_FILES} or fewer in length.", "BASE_TYPE_MAX_LENGTH"
                ),
            )
        if any(len(f.data) > self.filesize_limit for f in files):
            raise _ApiError(413, {"code": 40005, "message": "Request entity too large"})

    def _uploads(
        self,
        channel_id: int,
        body: dict[str, Any],
        files: list[UploadedFile],
        *,
        ephemeral: bool = False,
    ) -> list[FakeAttachment]:
        meta = {str(a.get("id")): a for a in body.get("attachments") or []}
        out = []
        for f in files:
            entry = meta.get(str(f.index), {})
            out.append(
                self.store_attachment(
                    channel_id,
                    entry.get("filename") or f.filename,
                    f.data,
                    description=entry.get("description"),
                    ephemeral=ephemeral,
                )
            )
        return out

    def _parse_mentions(self, content: str) -> tuple[list[int], list[int]]:
        users = [int(u) for u in re.findall(r"<@!?(\d+)>", content) if int(u) in self.users]
        roles = [int(r) for r in re.findall(r"<@&(\d+)>", content)]
        return list(dict.fromkeys(users)), list(dict.fromkeys(roles))

    def _new_message(self, chan: FakeChannel, author: FakeUser, **fields: Any) -> FakeMessage:
        mid = self._snowflake()
        msg = FakeMessage(
            mid, chan.id, chan.guild_id, author, **fields, label=f"m{next(self._message_no)}"
        )
        msg.mention_ids, msg.mention_role_ids = self._parse_mentions(msg.content)
        self._labels[mid] = msg.label
        self.messages[mid] = msg
        if not msg.ephemeral:
            chan.last_message_id = mid
        self._touch()
        return msg

    def _record_edit(self, msg: FakeMessage) -> None:
        msg.edits.append(msg.snapshot())
        msg.edited_at = datetime.datetime.now(datetime.UTC)

    def _apply_edit(
        self,
        msg: FakeMessage,
        body: dict[str, Any],
        files: list[UploadedFile],
        *,
        from_loading: bool = False,
    ) -> None:
        """PATCH semantics: absent keys stay, ``null`` clears; ``attachments`` lists what stays."""
        self._validate_parts(body, files)
        self._record_edit(msg)
        if "content" in body:
            msg.content = body["content"] or ""
            msg.mention_ids, msg.mention_role_ids = self._parse_mentions(msg.content)
        if "embeds" in body:
            msg.embeds = body["embeds"] or []
        if "components" in body:
            msg.components = body["components"] or []
        if "flags" in body and body["flags"] is not None:
            keep = msg.flags & FLAG_EPHEMERAL
            msg.flags = (int(body["flags"]) & ~FLAG_EPHEMERAL & ~FLAG_LOADING) | keep
        if from_loading:
            msg.flags &= ~FLAG_LOADING
        if "attachments" in body or files:
            new = self._uploads(msg.channel_id, body, files, ephemeral=msg.ephemeral)
            if "attachments" in body:
                keep_ids = {str(a.get("id")) for a in body.get("attachments") or []}
                kept = [a for a in msg.attachments if str(a.id) in keep_ids]
            else:
                kept = list(msg.attachments)
            msg.attachments = kept + new
        self._touch()

    # transcript lines

    def _summarize(self, req: Request) -> str:
        parts = [req.method, self._label_path(req.path)]
        body = req.json
        if req.route and req.route.endswith("/commands") and isinstance(body, list):
            parts.append(f"commands={[c.get('name') for c in body]}")
        elif isinstance(body, dict) and req.method in ("POST", "PATCH"):
            if req.route and req.route.endswith("/callback"):
                cb = body.get("type")
                parts.append(f"type={cb} {CALLBACK_NAMES.get(cb, '?')}")
            inner = req.body
            if "content" in inner and inner["content"] is not None:
                parts.append(f"content={_short(inner['content'])}")
            if inner.get("embeds"):
                titles = [e.get("title") or e.get("description", "")[:30] for e in inner["embeds"]]
                parts.append(f"embeds={titles}")
            creates = req.route in (
                "POST /channels/{channel_id}/messages",
                "POST /webhooks/{app_id}/{token}",
            )
            if creates or req.files or "attachments" in inner:
                parts.append(f"files={req.filenames}")
            if inner.get("components"):
                ids = [
                    c.get("custom_id") or c.get("label") or c.get("url")
                    for c in _walk_components(inner["components"])
                    if c.get("type") != 1
                ]
                parts.append(f"components={ids}")
            if int(inner.get("flags") or 0) & FLAG_EPHEMERAL:
                parts.append("ephemeral")
            ref = inner.get("message_reference")
            if ref and ref.get("message_id"):
                parts.append(f"reply_to={self.label(str(ref['message_id']))}")
        line = " ".join(parts) + f" -> {req.status}"
        if req.injected:
            line += " (injected)"
        elif req.status >= 400 and isinstance(req.response, dict):
            line += f" {req.response.get('message', '')}"
        elif req.message_id is not None:
            line += f" {self.label(req.message_id)}"
        return line


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _option_defs(
    cmd: dict[str, Any] | None, path: list[str]
) -> tuple[dict[str, dict[str, Any]], list[tuple[str, int]]]:
    """The option definitions of the (sub)command `path` of `cmd`, by name, and the
    (name, type) of each subcommand level on the way down."""
    option_defs = (cmd or {}).get("options", [])
    nest: list[tuple[str, int]] = []
    for part in path[1:]:
        sub = next((o for o in option_defs if o.get("name") == part), None)
        nest.append((part, sub.get("type", 1) if sub else 1))
        option_defs = (sub or {}).get("options", [])
    return {o["name"]: o for o in option_defs}, nest


def _str_or_none(value: int | None) -> str | None:
    return None if value is None else str(value)


def _short(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _compile_template(template: str) -> re.Pattern[str]:
    out, pos = [], 0
    for m in re.finditer(r"\{(\w+)\}", template):
        out.append(re.escape(template[pos : m.start()]))
        out.append(f"(?P<{m.group(1)}>[^/]+)")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out))


def _form_error(field: str, message: str, code: str = "BASE_TYPE_INVALID") -> dict[str, Any]:
    return {
        "code": 50035,
        "message": "Invalid Form Body",
        "errors": {field: {"_errors": [{"code": code, "message": message}]}},
    }


def _walk_components(components: Iterable[Any]) -> Iterator[dict[str, Any]]:
    for comp in components or []:
        if not isinstance(comp, dict):
            continue
        yield comp
        yield from _walk_components(comp.get("components", []))
        for key in ("component", "accessory"):
            if isinstance(comp.get(key), dict):
                yield from _walk_components([comp[key]])


def _infer_option_type(value: Any) -> int:
    if isinstance(value, (tuple, list, FakeAttachment)):
        return 11
    if isinstance(value, FakeUser):
        return 6
    if isinstance(value, FakeChannel):
        return 7
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return 4
    if isinstance(value, float):
        return 10
    return 3


def _image_size(data: bytes) -> tuple[int | None, int | None]:
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except (ImportError, OSError, ValueError, SyntaxError):  # no Pillow, or not an image
        # Discord leaves width and height null for files it cannot read as images too.
        return None, None


async def _parse_body(request: web.Request) -> tuple[Any, list[UploadedFile], bytes]:
    """(JSON body or payload_json, uploaded files, the body's text parts as bytes)."""
    ctype = request.content_type
    if ctype == "multipart/form-data":
        payload: Any = None
        files: list[UploadedFile] = []
        raw = b""
        reader = await request.multipart()
        position = 0
        async for part in reader:
            if part.name == "payload_json":
                raw = bytes(await part.read())
                payload = json.loads(raw)
                continue
            data = bytes(await part.read())
            m = re.fullmatch(r"files?\[(\d+)\]", part.name or "")
            index = int(m.group(1)) if m else position
            files.append(
                UploadedFile(
                    index,
                    part.name or "",
                    part.filename or f"file{index}",
                    data,
                    part.headers.get("Content-Type"),
                )
            )
            position += 1
        return payload, files, raw
    raw = await request.read()
    if raw and ctype == "application/json":
        return json.loads(raw), [], raw
    return None, [], raw


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A started FakeDiscord; import this fixture into a test module or conftest to use it."""
    async with FakeDiscord() as fake:
        yield fake
