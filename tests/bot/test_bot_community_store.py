"""bot/community.py: the store of server settings, saved styles, history and languages,
on SQLite (the journal's file) and on a real Redis; and the server settings' rules."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from bot.broker.journal import Journal
from bot.community import (
    HistoryEntry,
    Problem,
    RedisCommunity,
    SavedStyle,
    ServerSettings,
    SettingsChange,
    SqliteCommunity,
    StyleInfo,
    check_style_name,
    store_beside,
)
from bot.server_options import changed_settings, server_caps, server_limit
from bot.settings import BotSettings

from .redis_server import RedisServer, redis_server_or_skip

GUILD, OTHER = 111, 222


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        journal = Journal(tmp_path / "jobs.sqlite3")
        found = store_beside(journal)
        assert isinstance(found, SqliteCommunity) and found.path == journal.path
        yield found
        found.close()
        journal.close()
        return
    import redis

    from bot.broker.redis_journal import RedisJournal
    from engine.jobs import StreamKeys

    server = RedisServer(redis_server_or_skip(), tmp_path)
    server.start()
    client = redis.Redis.from_url(server.url)
    journal = RedisJournal(
        client, keys=StreamKeys(prefix="test", bot="bot"), result_ttl=60, where="test"
    )
    found = store_beside(journal)  # the redis backend's journal: the same Redis
    assert isinstance(found, RedisCommunity) and found.prefix == "test:community"
    yield found
    client.close()
    server.stop()


def style(name: str, size: int = 100, guild: int = GUILD, user: int = 1) -> SavedStyle:
    return SavedStyle(StyleInfo(guild, name, user, size, time.time()), b"x" * size, b"t")


def entry(seed: int, *, guild: int = GUILD, user: int = 1, created: float | None = None) -> HistoryEntry:
    return HistoryEntry(
        guild_id=guild, user_id=user, job_id=f"job{seed}", channel_id=5, message_id=6,
        names=("a.png", "b.png"), strength=1.0, size=48, iterations=4, color="none",
        seed=seed, elapsed=1.0, created=created or time.time(),
    )  # fmt: skip


def test_server_settings_and_their_log(store):
    assert store.server_settings(GUILD) == ServerSettings()
    new = ServerSettings(channels=(5, 6), strength=3.0, max_size=512, language="ja")
    store.save_server_settings(GUILD, new, [SettingsChange(1.0, 42, "max_size", "-", "512")])
    assert store.server_settings(GUILD) == new
    assert store.server_settings(OTHER) == ServerSettings()
    assert store.settings_log(GUILD, 5) == [SettingsChange(1.0, 42, "max_size", "-", "512")]
    assert store.settings_log(OTHER, 5) == []


def test_saved_styles_are_per_server_with_caps_on_count_and_bytes(store):
    caps = {"max_count": 2, "max_bytes": 250}
    store.add_style(style("Monet"), **caps)
    with pytest.raises(Problem) as duplicate:
        store.add_style(style("MONET"), **caps)
    assert duplicate.value.key == "styles.exists"
    with pytest.raises(Problem) as too_big:
        store.add_style(style("big", size=200), **caps)
    assert too_big.value.key == "styles.too_big"
    store.add_style(style("ukiyo-e"), **caps)
    with pytest.raises(Problem) as too_many:
        store.add_style(style("third", size=1), **caps)
    assert too_many.value.key == "styles.too_many"
    # Another server has its own names, caps and nothing of this one's.
    store.add_style(style("monet", guild=OTHER, user=2), **caps)
    assert [s.name for s in store.styles(GUILD)] == ["Monet", "ukiyo-e"]
    assert [s.name for s in store.styles(OTHER)] == ["monet"]
    assert store.style(GUILD, "monet").info.user_id == 1
    assert store.style(OTHER, "ukiyo-e") is None
    assert store.delete_style(OTHER, "Monet") and not store.delete_style(OTHER, "monet")
    assert store.style(GUILD, "MONET").data == b"x" * 100


def test_history_keeps_the_newest_expires_the_old_and_can_be_deleted(store):
    now = time.time()
    store.add_history(entry(1, created=now - 100 * 86400), keep=3, since=now - 30 * 86400)
    for seed in (2, 3, 4, 5):
        store.add_history(entry(seed), keep=3, since=now - 30 * 86400)
    store.add_history(entry(9, user=2), keep=3, since=now - 30 * 86400)
    found = store.history(GUILD, 1, since=now - 30 * 86400)
    assert [e.seed for e in found] == [5, 4, 3] and all(e.id for e in found)
    assert store.history(OTHER, 1, since=0) == []
    assert store.delete_history(GUILD, 1) == 3
    assert store.history(GUILD, 1, since=0) == []
    assert [e.seed for e in store.history(GUILD, 2, since=0)] == [9]


def test_member_language(store):
    assert store.member_language(7) is None
    store.set_member_language(7, "ja")
    assert store.member_language(7) == "ja"
    store.set_member_language(7, None)
    assert store.member_language(7) is None


HOST = BotSettings(max_size=1024, max_iterations=500, per_user_limit=3)


def test_server_settings_are_parsed_and_never_above_the_host():
    current = ServerSettings()
    new = changed_settings(
        current,
        {"channels": "<#123456> 654321", "strength": "強め", "color": "lum", "max_size": "512",
         "max_iterations": "default", "per_user_limit": "2", "language": "日本語"},
        HOST,
    )  # fmt: skip
    assert new == ServerSettings(
        channels=(123456, 654321), strength=3.0, color="luminance", max_size=512,
        max_iterations=None, per_user_limit=2, language="ja",
    )  # fmt: skip
    assert server_caps(HOST, new).max_size == 512 and server_caps(HOST, new).max_iterations == 500
    assert server_limit(HOST, new) == 2 and server_limit(HOST, ServerSettings()) == 3
    assert changed_settings(new, {"channels": "all", "max_size": "default"}, HOST) == replace(
        new, channels=(), max_size=None
    )
    for asked, key in [
        ({"max_size": "2048"}, "settings.over_host"),
        ({"max_iterations": "501"}, "settings.over_host"),
        ({"per_user_limit": "4"}, "settings.over_host"),
        ({"max_size": "8"}, "settings.too_small"),
        ({"max_size": "big"}, "settings.not_a_number"),
        ({"channels": "#art"}, "settings.bad_channels"),
        ({"strength": "loud"}, "settings.bad_strength"),
        ({"color": "sepia"}, "settings.bad_color"),
        ({"language": "klingon"}, "settings.bad_language"),
    ]:
        with pytest.raises(Problem) as problem:
            changed_settings(current, asked, HOST)
        assert problem.value.key == key, asked


def test_style_names():
    assert check_style_name(" monet ") == "monet" and check_style_name("浮世絵") == "浮世絵"
    for bad in ("", "two words", "a/b", "x" * 33):
        with pytest.raises(Problem):
            check_style_name(bad)
