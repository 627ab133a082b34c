"""bot/secrecy.py and the logging set-up: secrets stay out of logs and engine processes."""

from __future__ import annotations

import io
import logging
import os

import pytest

from bot.__main__ import setup_logging
from bot.secrecy import HIDDEN, engine_environment, redact, scrubbed_environ, secret_values

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


def test_scrubbed_environ_hides_secrets_only_within_the_block():
    environ = {"DISCORD_TOKEN": TOKEN, "STYLEBOT_REDIS_PASSWORD": "hunter2-redis", "PATH": "/bin"}
    with scrubbed_environ(environ=environ):
        assert environ == {"PATH": "/bin"}
    assert environ["DISCORD_TOKEN"] == TOKEN and len(environ) == 3
    with scrubbed_environ(keep=["STYLEBOT_REDIS_PASSWORD"], environ=environ):
        assert set(environ) == {"PATH", "STYLEBOT_REDIS_PASSWORD"}
    with pytest.raises(RuntimeError), scrubbed_environ(environ=environ):
        raise RuntimeError
    assert environ["DISCORD_TOKEN"] == TOKEN  # back after an error too


async def test_a_running_engine_process_has_no_token_in_its_environment(monkeypatch):
    """multiprocessing's spawn takes no env=: bot/engine_process.py starts the engine with
    the secrets out of os.environ, and puts them back for the bot."""
    from bot.engine_process import EngineClient
    from engine.worker import WorkerOptions

    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    client = EngineClient(
        name="engine-env",
        options=WorkerOptions(engine_factory="tests.bot.fake_engine:make_engine"),
        start_timeout=60,
        cancel_grace=1,
    )
    try:
        await client.start()
        with open(f"/proc/{client.pid}/environ", "rb") as f:
            environ = f.read()
        assert b"PATH=" in environ and TOKEN.encode() not in environ
        assert os.environ["DISCORD_TOKEN"] == TOKEN  # the bot keeps it
    finally:
        await client.stop(timeout=5)
