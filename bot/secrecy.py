"""Keeping secrets out of logs and out of the engine processes (issue 11, item 8).

Two pure pieces, stdlib only:

- `engine_environment(environ)`: the environment an engine (or decoder) process starts
  with. The engine needs no Discord token, no Redis password, no cloud keys: a bug in
  TensorFlow or Pillow, or a crash dump, must have nothing to leak. Secrets are dropped
  by name; everything else (PATH, CUDA_*, KERAS_BACKEND, STYLEBOT_*, ...) is kept so the
  engine runs as the host configured it. `scrubbed_environ()` applies it to os.environ
  for the moment a child is started by a means that takes no `env=` (multiprocessing's
  spawn, bot/engine_process.py).
- `RedactingFormatter`: wraps the handler's formatter and redacts the *finished* text
  of every record, so the token is hidden in the message, in its arguments, inside an
  exception's text and in the traceback alike (a filter that only looks at
  `record.getMessage()` misses the last two).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, MutableMapping

HIDDEN = "[hidden]"

# Environment variables whose names say they hold a secret. Matched on the upper-cased
# name, anywhere in it: DISCORD_TOKEN, REDIS_PASSWORD, AWS_SECRET_ACCESS_KEY, API_KEY, ...
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_KEY")
# Named explicitly because their names do not say "secret" but their values can carry one.
SECRET_NAMES = frozenset({"REDIS_URL", "STYLEBOT_REDIS_URL", "DATABASE_URL"})
# Values shorter than this are not redacted from logs even when their variable's name
# says secret: replacing "1" or "yes" everywhere would make the log unreadable.
MIN_SECRET_LENGTH = 8

# A Discord bot token: base64 user id, a timestamp part and an HMAC, dot-separated.
DISCORD_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{23,28}\.[A-Za-z0-9_-]{6,7}\.[A-Za-z0-9_-]{27,}")
# user:password@ in a URL (redis://:pw@host, https://user:pw@host).
URL_PASSWORD_PATTERN = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/\s:@]*:[^/\s@]+@", re.I)


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return upper in SECRET_NAMES or bool(SECRET_NAME.search(upper))


def engine_environment(environ: Mapping[str, str], keep: Iterable[str] = ()) -> dict[str, str]:
    """`environ` without the secrets: pass it as `env=` when starting an engine process.
    `keep` names secrets the process does need (a Redis worker's REDIS_URL, say)."""
    kept = set(keep)
    return {k: v for k, v in environ.items() if k in kept or not is_secret_name(k)}


_ENVIRON_LOCK = threading.Lock()


@contextlib.contextmanager
def scrubbed_environ(
    keep: Iterable[str] = (), environ: MutableMapping[str, str] | None = None
) -> Iterator[None]:
    """Within the block, `environ` (os.environ) holds only engine_environment(environ, keep):
    a child started there (multiprocessing's spawn takes no `env=`) inherits no secret.
    Hold the block only around the start itself: the secrets are back when it ends."""
    environ = os.environ if environ is None else environ
    with _ENVIRON_LOCK:
        clean = engine_environment(environ, keep)
        removed = {k: v for k, v in environ.items() if k not in clean}
        for name in removed:
            del environ[name]
        try:
            yield
        finally:
            environ.update(removed)


def secret_values(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The values to hide in logs: those of secret-named variables, longest first."""
    values = {v for k, v in environ.items() if is_secret_name(k) and len(v) >= MIN_SECRET_LENGTH}
    return tuple(sorted(values, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with each known secret, anything shaped like a Discord token and URL
    passwords replaced by HIDDEN."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, HIDDEN)
    text = DISCORD_TOKEN_PATTERN.sub(HIDDEN, text)
    return URL_PASSWORD_PATTERN.sub(lambda m: f"{m['scheme']}{HIDDEN}@", text)


class RedactingFormatter(logging.Formatter):
    """Formats with `inner`, then redacts the whole text: message, exception, traceback."""

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.inner = inner
        self.secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record), self.secrets)
