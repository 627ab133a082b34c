"""bot/settings.py: the [bot] table agrees with BotSettings, overrides, the token, no leaks."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bot.community import CommunitySettings
from bot.secrecy import RedactingFormatter
from bot.settings import (
    BotSettings,
    MissingToken,
    QueueSettings,
    bot_settings,
    load_settings,
    parse_dotenv,
)
from engine.config import DEFAULT_CONFIG, PROJECT_ROOT, ConfigError


@pytest.mark.parametrize(
    "section, cls",
    [("bot", BotSettings), ("queue", QueueSettings), ("community", CommunitySettings)],
)
def test_default_toml_tables_match_the_dataclasses(section, cls):
    raw = tomllib.loads(DEFAULT_CONFIG.read_text())
    table = raw[section]
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    assert list(table) == list(defaults), "same keys, same order"
    parsed = cls(**table)
    assert parsed == cls()
    for name, value in table.items():
        assert type(value) is type(defaults[name]) or isinstance(defaults[name], tuple), name


def test_every_bot_queue_and_community_key_has_a_comment_line_above_it():
    lines = DEFAULT_CONFIG.read_text().splitlines()
    start = lines.index("[bot]")
    assert start > 0 and [line for line in lines[start + 1 :] if line.startswith("[")] == [
        "[queue]",
        "[community]",
    ], "[bot], [queue] and [community] are the last tables"
    for i, line in enumerate(lines[start + 1 :], start + 1):
        if line and not line.startswith(("#", "[")):
            assert lines[i - 1].startswith("# "), f"no comment above {line!r}"


def test_user_file_overrides_and_unknown_keys_fail(tmp_path):
    config = tmp_path / "my.toml"
    config.write_text("[bot]\nqueue_size = 5\nallowed_channels = [123]\n[engine]\nsize = 256\n")
    settings = load_settings({"STYLEBOT_CONFIG": str(config), "DISCORD_TOKEN": "abc"})
    assert settings.bot.queue_size == 5 and settings.bot.allowed_channels == (123,)
    assert settings.engine.transfer.size == 256 and settings.bot.per_user_limit == 2
    assert settings.config_path == config
    config.write_text("[bot]\nqueue_sise = 5\n")
    with pytest.raises(ConfigError, match=r"\[bot\] unknown setting\(s\): queue_sise"):
        load_settings({"STYLEBOT_CONFIG": str(config), "DISCORD_TOKEN": "abc"})


@pytest.mark.parametrize(
    "table, message",
    [
        ({"queue_size": 0}, "queue_size must be at least 1"),
        ({"edit_interval": 0.1}, "edit_interval must be at least 0.5"),
        ({"log_level": "LOUD"}, "log_level must be one of"),
        ({"command_prefix": " ! "}, "command_prefix"),
    ],
)
def test_bad_values_are_explained(table, message):
    with pytest.raises(ConfigError, match=message):
        bot_settings({"bot": table})


def test_token_from_environment_then_dotenv_beside_the_config(tmp_path):
    config = tmp_path / "host.toml"
    config.write_text("")
    (tmp_path / ".env").write_text('# secrets\nexport DISCORD_TOKEN="from-dotenv"\nOTHER=1\n')
    env = {"STYLEBOT_CONFIG": str(config)}
    assert load_settings(env).token.reveal() == "from-dotenv"
    assert load_settings({**env, "DISCORD_TOKEN": "from-env"}).token.reveal() == "from-env"
    (tmp_path / ".env").unlink()
    with pytest.raises(MissingToken, match="DISCORD_TOKEN"):
        load_settings(env)


def test_parse_dotenv():
    assert parse_dotenv("A=1\n# c\n\nexport B = 'two words'\nC=x # note\nbad line\n") == {
        "A": "1",
        "B": "two words",
        "C": "x",
    }


def test_the_token_never_shows():
    settings = load_settings({"DISCORD_TOKEN": "s3cret-token"})
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.token)
    assert "s3cret" not in f"{settings}"
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "token is %s", ("s3cret-token",), None
    )
    formatter = RedactingFormatter(logging.Formatter("%(message)s"), [settings.token.reveal()])
    assert formatter.format(record) == "token is [hidden]"


def run_bot(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN", "STYLEBOT_CONFIG")}
    clean["PYTHONPATH"] = str(PROJECT_ROOT)
    return subprocess.run(
        [sys.executable, "-m", "bot"],
        check=False,
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.timeout(90)
def test_run_without_a_token_exits_2_with_instructions(tmp_path):
    config = tmp_path / "host.toml"
    config.write_text("")
    done = run_bot({"STYLEBOT_CONFIG": str(config)}, tmp_path)
    assert done.returncode == 2
    assert "No Discord bot token found" in done.stderr and "DISCORD_TOKEN=" in done.stderr
    assert str(tmp_path / ".env") in done.stderr


@pytest.mark.timeout(90)
def test_run_with_a_broken_config_exits_2(tmp_path):
    config = tmp_path / "host.toml"
    config.write_text("[bot]\nengines = 0\n")
    done = run_bot({"STYLEBOT_CONFIG": str(config), "DISCORD_TOKEN": "x"}, tmp_path)
    assert done.returncode == 2 and "engines must be at least 1" in done.stderr
