"""bot/secrecy.py and the logging set-up: secrets stay out of logs and engine processes."""

from __future__ import annotations

import io
import logging

import pytest

from bot.__main__ import setup_logging
from bot.secrecy import HIDDEN, engine_environment, redact, secret_values

# Shaped like a real Discord bot token (made up): id . timestamp . hmac
TOKEN = "MTA4NzY1NDMyMTAxMjM0NTY3OA.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789AB"


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_token_inside_an_exception_and_its_traceback_is_redacted(restore_logging):
    stream = io.StringIO()
    setup_logging("INFO", [TOKEN, "hunter2-redis-pass"], stream=stream)
    log = logging.getLogger("bot.test")
    try:
        raise RuntimeError(f"Discord said 401 for Authorization: Bot {TOKEN}")
    except RuntimeError:
        log.exception("login failed with %s", TOKEN)
    try:
        raise ConnectionError("cannot reach redis://:hunter2-redis-pass@cache:6379/0")
    except ConnectionError:
        log.exception("broker down")
    text = stream.getvalue()
    assert "Traceback" in text and "RuntimeError" in text  # the traceback itself is kept
    assert TOKEN not in text and "hunter2" not in text
    assert text.count(HIDDEN) >= 4


def test_token_shaped_text_is_redacted_even_when_unknown():
    assert TOKEN not in redact(f"header: Bot {TOKEN}")
    assert redact("redis://user:pw@host/0") == f"redis://{HIDDEN}@host/0"
    assert redact("nothing secret here: job 1a2b3c4d") == "nothing secret here: job 1a2b3c4d"


def test_engine_environment_drops_secrets_and_keeps_the_rest():
    environ = {
        "DISCORD_TOKEN": TOKEN,
        "REDIS_URL": "redis://:pw@cache/0",
        "AWS_SECRET_ACCESS_KEY": "abc",
        "OPENAI_API_KEY": "sk-123",
        "GITHUB_TOKEN": "ghp_x",
        "PATH": "/usr/bin",
        "HOME": "/home/bot",
        "KERAS_BACKEND": "jax",
        "CUDA_VISIBLE_DEVICES": "0",
        "STYLEBOT_DEVICE": "gpu",
        "STYLEBOT_CONFIG": "/etc/stylebot.toml",
    }
    env = engine_environment(environ)
    assert set(env) == {
        "PATH",
        "HOME",
        "KERAS_BACKEND",
        "CUDA_VISIBLE_DEVICES",
        "STYLEBOT_DEVICE",
        "STYLEBOT_CONFIG",
    }
    assert TOKEN not in repr(env)
    assert environ["DISCORD_TOKEN"] == TOKEN  # the input is not changed
    assert set(engine_environment(environ, keep=["REDIS_URL"])) == set(env) | {"REDIS_URL"}


def test_secret_values_skip_short_ones():
    assert secret_values({"DISCORD_TOKEN": TOKEN, "SOME_TOKEN": "1", "PATH": "/bin"}) == (TOKEN,)
