"""The bot's settings: the `[bot]` table of the config, the engine's tables, the token.

Defaults live once, in `BotSettings` below; `config/default.toml` documents the same
values (a test keeps the two in step) and a host's own TOML file, named by the
`STYLEBOT_CONFIG` environment variable, overrides them. The Discord token never
comes from a TOML file: it is read from `DISCORD_TOKEN`, or from a `.env` file
beside the host's config file, and it is wrapped in `Secret` so that no repr, log
line or traceback shows it. Stdlib only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import (
    PROJECT_ROOT,
    ConfigError,
    EngineConfig,
    engine_config,
    load_raw,
    map_dataclass,
)

log = logging.getLogger(__name__)

CONFIG_ENV = "STYLEBOT_CONFIG"
TOKEN_ENV = "DISCORD_TOKEN"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class BotSettings:
    """The `[bot]` table. Each field is one key there, with the same default."""

    command_prefix: str = "!"
    sync_commands: bool = True
    sync_guild: int = 0
    allowed_channels: tuple[int, ...] = ()
    allowed_roles: tuple[int, ...] = ()
    queue_size: int = 20
    per_user_limit: int = 2
    engines: int = 1
    max_size: int = 1024
    max_iterations: int = 1000
    max_styles: int = 3
    edit_interval: float = 3.0
    engine_start_timeout: float = 600.0
    engine_restart_limit: int = 3
    engine_retry_max: float = 300.0
    cancel_grace: float = 30.0
    job_timeout: float = 1800.0
    shutdown_grace: float = 10.0  # unused since jobs survive restarts; old files still load
    allow_download: bool = True
    log_level: str = "INFO"
    shards: int | str = 1
    decode_workers: int = 4
    decode_timeout: float = 5.0
    decode_memory: int = 1024
    cooldown_stylize: float = 5.0
    cooldown_buttons: float = 2.0
    cooldown_queue: float = 5.0

    def __post_init__(self) -> None:
        # TOML gives lists; keep the dataclass hashable and immutable.
        object.__setattr__(self, "allowed_channels", tuple(int(v) for v in self.allowed_channels))
        object.__setattr__(self, "allowed_roles", tuple(int(v) for v in self.allowed_roles))
        problems = []
        if not self.command_prefix or self.command_prefix != self.command_prefix.strip():
            problems.append("command_prefix must be non-empty with no spaces around it")
        for name in ("queue_size", "per_user_limit", "engines", "max_styles", "decode_workers"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if self.max_size < 16:
            problems.append("max_size must be at least 16")
        if self.max_iterations < 1:
            problems.append("max_iterations must be at least 1")
        if self.edit_interval < 0.5:
            problems.append(
                "edit_interval must be at least 0.5 seconds (Discord rate-limits edits)"
            )
        if self.decode_timeout <= 0:
            problems.append("decode_timeout must be more than 0 seconds")
        if self.decode_memory < 256:
            problems.append("decode_memory must be at least 256 (MiB)")
        for name in (
            "engine_start_timeout",
            "cancel_grace",
            "shutdown_grace",
            "cooldown_stylize",
            "cooldown_buttons",
            "cooldown_queue",
        ):
            if getattr(self, name) < 0:
                problems.append(f"{name} must not be negative")
        if self.engine_retry_max < 1:
            problems.append("engine_retry_max must be at least 1 second")
        if self.job_timeout < 0:
            problems.append("job_timeout must not be negative (0 = no limit)")
        if self.engine_restart_limit < 0:
            problems.append("engine_restart_limit must not be negative")
        if self.log_level.upper() not in LOG_LEVELS:
            problems.append(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        if self.shards != "auto" and not (isinstance(self.shards, int) and self.shards >= 1):
            problems.append('shards must be "auto" or a number of shards, at least 1')
        if problems:
            raise ValueError("; ".join(problems))


QUEUE_BACKENDS = ("local", "redis")


@dataclass(frozen=True)
class QueueSettings:
    """The `[queue]` table: where accepted jobs are kept until they are answered."""

    backend: str = "local"
    data_dir: str = "data"
    redis_url: str = "redis://localhost:6379/0"
    redis_prefix: str = "stylebot"
    bot_name: str = "bot"

    def __post_init__(self) -> None:
        if self.backend not in QUEUE_BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(QUEUE_BACKENDS)}")
        if not self.redis_url.startswith(("redis://", "rediss://")):
            raise ValueError("redis_url must start with redis:// or rediss:// (TLS)")

    def data_path(self) -> Path:
        path = Path(self.data_dir).expanduser()
        return path if path.is_absolute() else PROJECT_ROOT / path


class Secret:
    """A string that never shows itself in a repr, str or f-string."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Settings:
    bot: BotSettings
    engine: EngineConfig
    token: Secret = field(default_factory=lambda: Secret(""))
    queue: QueueSettings = field(default_factory=QueueSettings)
    config_path: Path | None = None


class MissingToken(ConfigError):
    pass


def bot_settings(raw: Mapping[str, Any]) -> BotSettings:
    settings: BotSettings = map_dataclass(BotSettings, raw.get("bot", {}), "bot")
    return settings


def queue_settings(raw: Mapping[str, Any]) -> QueueSettings:
    settings: QueueSettings = map_dataclass(QueueSettings, raw.get("queue", {}), "queue")
    return settings


def parse_dotenv(text: str) -> dict[str, str]:
    """The small subset of .env syntax people write: KEY=value, optional `export`,
    optional single or double quotes, # comments and blank lines."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export ") :].strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def dotenv_candidates(config_path: Path | None) -> list[Path]:
    """A .env beside the host's config file; without one, the working directory's
    and the project root's."""
    if config_path is not None:
        return [config_path.resolve().parent / ".env"]
    return list(dict.fromkeys([Path.cwd() / ".env", PROJECT_ROOT / ".env"]))


def find_token(environ: Mapping[str, str], config_path: Path | None) -> Secret:
    token = environ.get(TOKEN_ENV, "").strip()
    if token:
        return Secret(token)
    for candidate in dotenv_candidates(config_path):
        try:
            text = candidate.read_text(encoding="utf-8")
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            continue
        token = parse_dotenv(text).get(TOKEN_ENV, "").strip()
        if token:
            log.info("read %s from %s", TOKEN_ENV, candidate)
            return Secret(token)
    return Secret("")


def load_settings(
    environ: Mapping[str, str] | None = None, *, require_token: bool = True
) -> Settings:
    """Defaults, then the file named by STYLEBOT_CONFIG, then the token."""
    environ = os.environ if environ is None else environ
    config_path = Path(environ[CONFIG_ENV]).expanduser() if environ.get(CONFIG_ENV) else None
    raw = load_raw(config_path)
    settings = Settings(
        bot=bot_settings(raw),
        engine=engine_config(raw),
        token=find_token(environ, config_path),
        queue=queue_settings(raw),
        config_path=config_path,
    )
    if require_token and not settings.token:
        raise MissingToken(token_help(config_path))
    return settings


def token_help(config_path: Path | None) -> str:
    where = dotenv_candidates(config_path)[0]
    return (
        "No Discord bot token found.\n"
        f"Set the {TOKEN_ENV} environment variable, for example\n"
        f"    {TOKEN_ENV}=your-token python -m bot\n"
        f"or put the line\n"
        f"    {TOKEN_ENV}=your-token\n"
        f"in {where} (keep that file private; .env is git-ignored).\n"
        "Get a token from https://discord.com/developers/applications -> your application -> Bot -> Reset Token."
    )
