"""What each server keeps: its settings, its saved styles, its members' history; and
each member's language.

Kept durably beside the job journal: in the same SQLite file (`SqliteCommunity`) with the
local backend, in the same Redis (`RedisCommunity`) with the redis one, so a restart
loses none of it and a host backs up one thing. The stores are blocking and stdlib-only
(redis-py for Redis); `Community` is the bot's asynchronous side of them: calls run on
one thread of its own, in order, and server settings are cached.

Saved styles and history are always looked up by server: no call takes a style's name
without its server's id, so one server's styles are never visible from another.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

STYLE_NAME_MAX = 32
_STYLE_NAME = re.compile(rf"[\w-]{{1,{STYLE_NAME_MAX}}}")  # \w: letters of any script, digits, _
SETTINGS_LOG_KEEP = 200  # changes kept per server (the embed shows the last few)


@dataclass(frozen=True)
class CommunitySettings:
    """The `[community]` table. Each field is one key there, with the same default."""

    allow_dms: bool = True
    max_saved_styles: int = 25
    max_saved_style_bytes: int = 20971520
    history_days: float = 30.0
    history_size: int = 25

    def __post_init__(self) -> None:
        problems = []
        if self.max_saved_styles < 0:
            problems.append("max_saved_styles must not be negative")
        if self.max_saved_style_bytes < 0:
            problems.append("max_saved_style_bytes must not be negative")
        if self.history_days < 0:
            problems.append("history_days must not be negative")
        if self.history_size < 0:
            problems.append("history_size must not be negative")
        if problems:
            raise ValueError("; ".join(problems))


class Problem(Exception):
    """Something a member asked for cannot be done: a catalogue key and its values, so
    the member reads why in their own language."""

    def __init__(self, key: str, **values: Any) -> None:
        super().__init__(key)
        self.key = key
        self.values = values


# --- what is kept -----------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSettings:
    """A server's own settings; None (or no channels) means the host's."""

    channels: tuple[int, ...] = ()
    strength: float | None = None
    color: str | None = None
    max_size: int | None = None
    max_iterations: int | None = None
    per_user_limit: int | None = None
    language: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes | None) -> ServerSettings:
        if not text:
            return cls()
        values = json.loads(text)
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        values["channels"] = tuple(int(c) for c in values.get("channels", ()))
        return cls(**values)


@dataclass(frozen=True)
class SettingsChange:
    at: float
    user_id: int
    key: str
    old: str
    new: str


@dataclass(frozen=True)
class StyleInfo:
    guild_id: int
    name: str
    user_id: int
    size: int  # bytes of the stored image
    created: float


@dataclass(frozen=True)
class SavedStyle:
    info: StyleInfo
    data: bytes
    thumb: bytes


@dataclass(frozen=True)
class HistoryEntry:
    """One result a member got: where it is and how it was made."""

    guild_id: int
    user_id: int
    job_id: str
    channel_id: int  # of the result message
    message_id: int
    names: tuple[str, ...]
    strength: float
    size: int
    iterations: int
    color: str
    seed: int
    elapsed: float
    created: float = field(default_factory=time.time)
    id: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> HistoryEntry:
        values = json.loads(text)
        values["names"] = tuple(values.get("names", ()))
        return cls(**values)


def style_key(name: str) -> str:
    """Names are unique per server whatever their case."""
    return name.casefold()


def check_style_name(name: str | None) -> str:
    name = (name or "").strip()
    if not _STYLE_NAME.fullmatch(name):
        raise Problem("styles.bad_name", most=STYLE_NAME_MAX)
    return name


# --- the stores ---------------------------------------------------------------------------


class CommunityStore(Protocol):
    """Blocking; `Community` calls it on one thread of its own."""

    def server_settings(self, guild_id: int) -> ServerSettings: ...

    def save_server_settings(
        self, guild_id: int, settings: ServerSettings, changes: list[SettingsChange]
    ) -> None: ...

    def settings_log(self, guild_id: int, limit: int) -> list[SettingsChange]: ...

    def member_language(self, user_id: int) -> str | None: ...

    def set_member_language(self, user_id: int, language: str | None) -> None: ...

    def add_style(self, style: SavedStyle, *, max_count: int, max_bytes: int) -> None: ...

    def style(self, guild_id: int, name: str) -> SavedStyle | None: ...

    def styles(self, guild_id: int) -> list[StyleInfo]: ...

    def delete_style(self, guild_id: int, name: str) -> bool: ...

    def add_history(self, entry: HistoryEntry, *, keep: int, since: float) -> int: ...

    def history(self, guild_id: int, user_id: int, *, since: float) -> list[HistoryEntry]: ...

    def delete_history(self, guild_id: int, user_id: int) -> int: ...

    def close(self) -> None: ...


def _usage(styles: list[StyleInfo]) -> tuple[int, int]:
    return len(styles), sum(s.size for s in styles)


def check_caps(
    existing: list[StyleInfo], style: SavedStyle, *, max_count: int, max_bytes: int
) -> None:
    """Raise Problem when `style` may not be added: its name is taken, or it would take
    the server past its count or its bytes."""
    if any(style_key(s.name) == style_key(style.info.name) for s in existing):
        raise Problem("styles.exists", name=style.info.name)
    count, used = _usage(existing)
    if count >= max_count:
        raise Problem("styles.too_many", most=max_count)
    if used + style.info.size > max_bytes:
        raise Problem(
            "styles.too_big",
            used=_mb(used),
            size=_mb(style.info.size),
            most=_mb(max_bytes),
        )


def _mb(n: int) -> str:
    return f"{n / 1048576:.1f}"


COMMUNITY_SCHEMA = """
CREATE TABLE IF NOT EXISTS server_settings (
    guild_id INTEGER PRIMARY KEY,
    settings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS server_settings_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    old TEXT NOT NULL,
    new TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS member_settings (
    user_id INTEGER PRIMARY KEY,
    language TEXT
);
CREATE TABLE IF NOT EXISTS saved_styles (
    guild_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    data BLOB NOT NULL,
    thumb BLOB NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (guild_id, key)
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    entry TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS history_member ON history (guild_id, user_id, created);
"""


class SqliteCommunity:
    """The tables above, in the job journal's SQLite file (its own connection)."""

    def __init__(self, path: str | Path) -> None:
        from bot.broker.journal import open_database

        self.path = str(path)
        self._db = open_database(path, COMMUNITY_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, sql: str, *args: Any) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def server_settings(self, guild_id: int) -> ServerSettings:
        rows = self._rows("SELECT settings FROM server_settings WHERE guild_id = ?", guild_id)
        return ServerSettings.from_json(rows[0][0] if rows else None)

    def save_server_settings(
        self, guild_id: int, settings: ServerSettings, changes: list[SettingsChange]
    ) -> None:
        with self._lock, self._db:  # one transaction: the settings and their log
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO server_settings (guild_id, settings) VALUES (?, ?)"
                " ON CONFLICT (guild_id) DO UPDATE SET settings = excluded.settings",
                (guild_id, settings.to_json()),
            )
            self._db.executemany(
                "INSERT INTO server_settings_log (guild_id, user_id, key, old, new, at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(guild_id, c.user_id, c.key, c.old, c.new, c.at) for c in changes],
            )
            self._db.execute(
                "DELETE FROM server_settings_log WHERE guild_id = ? AND seq NOT IN"
                " (SELECT seq FROM server_settings_log WHERE guild_id = ?"
                " ORDER BY seq DESC LIMIT ?)",
                (guild_id, guild_id, SETTINGS_LOG_KEEP),
            )

    def settings_log(self, guild_id: int, limit: int) -> list[SettingsChange]:
        rows = self._rows(
            "SELECT at, user_id, key, old, new FROM server_settings_log WHERE guild_id = ?"
            " ORDER BY seq DESC LIMIT ?",
            guild_id,
            limit,
        )
        return [SettingsChange(*row) for row in rows]

    def member_language(self, user_id: int) -> str | None:
        rows = self._rows("SELECT language FROM member_settings WHERE user_id = ?", user_id)
        return rows[0][0] if rows else None

    def set_member_language(self, user_id: int, language: str | None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO member_settings (user_id, language) VALUES (?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET language = excluded.language",
                (user_id, language),
            )

    def add_style(self, style: SavedStyle, *, max_count: int, max_bytes: int) -> None:
        info = style.info
        with self._lock, self._db:  # the caps are checked and the row added in one transaction
            self._db.execute("BEGIN IMMEDIATE")
            existing = [
                StyleInfo(info.guild_id, *row)
                for row in self._db.execute(
                    "SELECT name, user_id, size, created FROM saved_styles WHERE guild_id = ?",
                    (info.guild_id,),
                )
            ]
            check_caps(existing, style, max_count=max_count, max_bytes=max_bytes)
            self._db.execute(
                "INSERT INTO saved_styles (guild_id, key, name, user_id, data, thumb, size,"
                " created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    info.guild_id, style_key(info.name), info.name, info.user_id, style.data,
                    style.thumb, info.size, info.created,
                ),
            )  # fmt: skip

    def style(self, guild_id: int, name: str) -> SavedStyle | None:
        rows = self._rows(
            "SELECT name, user_id, size, created, data, thumb FROM saved_styles"
            " WHERE guild_id = ? AND key = ?",
            guild_id,
            style_key(name),
        )
        if not rows:
            return None
        name, user_id, size, created, data, thumb = rows[0]
        return SavedStyle(StyleInfo(guild_id, name, user_id, size, created), data, thumb)

    def styles(self, guild_id: int) -> list[StyleInfo]:
        rows = self._rows(
            "SELECT name, user_id, size, created FROM saved_styles WHERE guild_id = ?"
            " ORDER BY key",
            guild_id,
        )
        return [StyleInfo(guild_id, *row) for row in rows]

    def delete_style(self, guild_id: int, name: str) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM saved_styles WHERE guild_id = ? AND key = ?",
                (guild_id, style_key(name)),
            )
        return cursor.rowcount > 0

    def add_history(self, entry: HistoryEntry, *, keep: int, since: float) -> int:
        with self._lock, self._db:
            self._db.execute("BEGIN")
            cursor = self._db.execute(
                "INSERT INTO history (guild_id, user_id, entry, created) VALUES (?, ?, ?, ?)",
                (entry.guild_id, entry.user_id, entry.to_json(), entry.created),
            )
            self._db.execute("DELETE FROM history WHERE created < ?", (since,))
            self._db.execute(
                "DELETE FROM history WHERE guild_id = ? AND user_id = ? AND id NOT IN"
                " (SELECT id FROM history WHERE guild_id = ? AND user_id = ?"
                " ORDER BY id DESC LIMIT ?)",
                (entry.guild_id, entry.user_id, entry.guild_id, entry.user_id, keep),
            )
        return int(cursor.lastrowid or 0)

    def history(self, guild_id: int, user_id: int, *, since: float) -> list[HistoryEntry]:
        rows = self._rows(
            "SELECT id, entry FROM history WHERE guild_id = ? AND user_id = ? AND created >= ?"
            " ORDER BY id DESC",
            guild_id,
            user_id,
            since,
        )
        return [replace(HistoryEntry.from_json(entry), id=hid) for hid, entry in rows]

    def delete_history(self, guild_id: int, user_id: int) -> int:
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM history WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
            )
        return cursor.rowcount


class RedisCommunity:
    """The same, in the redis backend's Redis (synchronous redis-py, bytes replies)."""

    def __init__(self, client: Any, *, prefix: str) -> None:
        self.client = client
        self.prefix = f"{prefix}:community"

    def close(self) -> None:
        pass  # the journal owns the client

    def _k(self, *parts: Any) -> str:
        return ":".join([self.prefix, *map(str, parts)])

    def server_settings(self, guild_id: int) -> ServerSettings:
        return ServerSettings.from_json(self.client.get(self._k("server", guild_id)))

    def save_server_settings(
        self, guild_id: int, settings: ServerSettings, changes: list[SettingsChange]
    ) -> None:
        log_key = self._k("server", guild_id, "log")
        with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self._k("server", guild_id), settings.to_json())
            for change in changes:
                pipe.lpush(log_key, json.dumps(asdict(change)))
            pipe.ltrim(log_key, 0, SETTINGS_LOG_KEEP - 1)
            pipe.execute()

    def settings_log(self, guild_id: int, limit: int) -> list[SettingsChange]:
        raw = self.client.lrange(self._k("server", guild_id, "log"), 0, limit - 1)
        return [SettingsChange(**json.loads(item)) for item in raw]

    def member_language(self, user_id: int) -> str | None:
        value = self.client.get(self._k("member", user_id, "language"))
        return value.decode() if value else None

    def set_member_language(self, user_id: int, language: str | None) -> None:
        key = self._k("member", user_id, "language")
        if language:
            self.client.set(key, language)
        else:
            self.client.delete(key)

    def add_style(self, style: SavedStyle, *, max_count: int, max_bytes: int) -> None:
        import redis

        info = style.info
        index = self._k("styles", info.guild_id)
        with self.client.pipeline(transaction=True) as pipe:
            while True:  # optimistic: the caps hold even with several bot processes
                try:
                    pipe.watch(index)
                    existing = self._style_infos(info.guild_id, pipe.hgetall(index))
                    check_caps(existing, style, max_count=max_count, max_bytes=max_bytes)
                    pipe.multi()
                    key = style_key(info.name)
                    pipe.hset(index, key, json.dumps(asdict(info)))
                    pipe.hset(
                        self._k("style", info.guild_id, key),
                        mapping={"data": style.data, "thumb": style.thumb},
                    )
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    @staticmethod
    def _style_infos(guild_id: int, raw: Mapping[bytes, bytes]) -> list[StyleInfo]:
        infos = [StyleInfo(**json.loads(v)) for v in raw.values()]
        return sorted(
            (i for i in infos if i.guild_id == guild_id), key=lambda i: style_key(i.name)
        )

    def style(self, guild_id: int, name: str) -> SavedStyle | None:
        key = style_key(name)
        meta = self.client.hget(self._k("styles", guild_id), key)
        blobs = self.client.hgetall(self._k("style", guild_id, key))
        if not meta or b"data" not in blobs:
            return None
        return SavedStyle(StyleInfo(**json.loads(meta)), blobs[b"data"], blobs.get(b"thumb", b""))

    def styles(self, guild_id: int) -> list[StyleInfo]:
        return self._style_infos(guild_id, self.client.hgetall(self._k("styles", guild_id)))

    def delete_style(self, guild_id: int, name: str) -> bool:
        key = style_key(name)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(self._k("styles", guild_id), key)
            pipe.delete(self._k("style", guild_id, key))
            removed, _ = pipe.execute()
        return bool(removed)

    def add_history(self, entry: HistoryEntry, *, keep: int, since: float) -> int:
        hid = int(self.client.incr(self._k("history", "seq")))
        key = self._k("history", entry.guild_id, entry.user_id)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {replace(entry, id=hid).to_json(): hid})
            pipe.zremrangebyrank(key, 0, -keep - 1)
            pipe.execute()
        self._expire(key, since)
        return hid

    def _expire(self, key: str, since: float) -> None:
        for raw in self.client.zrange(key, 0, -1):
            if HistoryEntry.from_json(raw).created < since:
                self.client.zrem(key, raw)

    def history(self, guild_id: int, user_id: int, *, since: float) -> list[HistoryEntry]:
        key = self._k("history", guild_id, user_id)
        self._expire(key, since)
        return [HistoryEntry.from_json(raw) for raw in self.client.zrange(key, 0, -1, desc=True)]

    def delete_history(self, guild_id: int, user_id: int) -> int:
        key = self._k("history", guild_id, user_id)
        count = int(self.client.zcard(key))
        self.client.delete(key)
        return count


def store_beside(journal: Any) -> CommunityStore:
    """The community store next to a broker's journal: its SQLite file, or its Redis."""
    from bot.broker.journal import Journal

    if isinstance(journal, Journal):
        return SqliteCommunity(journal.path)
    client = getattr(journal, "client", None)
    keys = getattr(journal, "keys", None)
    if client is not None and keys is not None:
        return RedisCommunity(client, prefix=keys.prefix)
    return SqliteCommunity(":memory:")


# --- the bot's side ---------------------------------------------------------------------------


class Community:
    """The store, off the event loop (one thread, calls in order), with server settings cached."""

    def __init__(self, store: CommunityStore, settings: CommunitySettings) -> None:
        self.store = store
        self.settings = settings
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="community")
        self._servers: dict[int, ServerSettings] = {}
        self._languages: dict[int, str | None] = {}

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._io.shutdown(wait=True)
        self.store.close()

    # -- server settings ---------------------------------------------------------------

    async def server(self, guild_id: int | None) -> ServerSettings:
        if not guild_id:
            return ServerSettings()
        cached = self._servers.get(guild_id)
        if cached is None:
            cached = await self.run(self.store.server_settings, guild_id)
            self._servers[guild_id] = cached
        return cached

    async def update_server(
        self, guild_id: int, new: ServerSettings, *, by: int, show: Callable[[str, Any], str]
    ) -> list[SettingsChange]:
        """Store `new` and log each changed value (as `show` writes it) as `by`'s."""
        old = await self.server(guild_id)
        now = time.time()
        changes = [
            SettingsChange(
                now, by, f.name, show(f.name, getattr(old, f.name)), show(f.name, getattr(new, f.name))
            )
            for f in fields(ServerSettings)
            if getattr(old, f.name) != getattr(new, f.name)
        ]
        if changes:
            await self.run(self.store.save_server_settings, guild_id, new, changes)
            self._servers[guild_id] = new
            for change in changes:
                log.info(
                    "server %s: %s changed from %s to %s by %s",
                    guild_id, change.key, change.old, change.new, by,
                )  # fmt: skip
        return changes

    async def settings_log(self, guild_id: int, limit: int = 5) -> list[SettingsChange]:
        result: list[SettingsChange] = await self.run(self.store.settings_log, guild_id, limit)
        return result

    # -- members' languages --------------------------------------------------------------

    async def language(self, user: Any, guild: Any, locale: Any = None) -> str:
        """The member's own setting, the interaction's Discord locale, the server's
        setting, the server's preferred locale, English."""
        from bot.i18n import pick_language

        server = await self.server(guild.id if guild else None)
        return pick_language(
            [
                await self.member_language(user.id),
                locale,
                server.language,
                getattr(guild, "preferred_locale", None),
            ]
        )

    async def member_language(self, user_id: int) -> str | None:
        if user_id not in self._languages:
            self._languages[user_id] = await self.run(self.store.member_language, user_id)
        return self._languages[user_id]

    async def set_member_language(self, user_id: int, language: str | None) -> None:
        await self.run(self.store.set_member_language, user_id, language)
        self._languages[user_id] = language

    # -- saved styles ---------------------------------------------------------------------

    async def add_style(self, style: SavedStyle) -> None:
        await self.run(
            self.store.add_style,
            style,
            max_count=self.settings.max_saved_styles,
            max_bytes=self.settings.max_saved_style_bytes,
        )
        log.info(
            "server %s: style %r saved by %s (%d bytes)",
            style.info.guild_id, style.info.name, style.info.user_id, style.info.size,
        )  # fmt: skip

    async def style(self, guild_id: int, name: str) -> SavedStyle | None:
        found: SavedStyle | None = await self.run(self.store.style, guild_id, name)
        return found

    async def styles(self, guild_id: int) -> list[StyleInfo]:
        found: list[StyleInfo] = await self.run(self.store.styles, guild_id)
        return found

    async def delete_style(self, guild_id: int, name: str) -> bool:
        deleted: bool = await self.run(self.store.delete_style, guild_id, name)
        return deleted

    # -- history ----------------------------------------------------------------------------

    def _since(self) -> float:
        return time.time() - self.settings.history_days * 86400

    async def add_history(self, entry: HistoryEntry) -> None:
        if self.settings.history_size == 0 or self.settings.history_days == 0:
            return
        await self.run(
            self.store.add_history, entry, keep=self.settings.history_size, since=self._since()
        )

    async def history(self, guild_id: int, user_id: int) -> list[HistoryEntry]:
        found: list[HistoryEntry] = await self.run(
            self.store.history, guild_id, user_id, since=self._since()
        )
        return found

    async def delete_history(self, guild_id: int, user_id: int) -> int:
        count: int = await self.run(self.store.delete_history, guild_id, user_id)
        log.info("history of %s in server %s deleted (%d entries)", user_id, guild_id, count)
        return count

