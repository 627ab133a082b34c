"""What a server's settings may be: admins' words turned into `ServerSettings` values, and
the values a job gets (the server's own, never above the host's).

Pure functions (no discord), shared by the settings command and the stylize cog.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from bot.community import Problem, ServerSettings
from bot.i18n import LANGUAGES, parse_language, t
from bot.options import MIN_SIZE, Caps, OptionError, parse_color, parse_strength, strength_label
from bot.settings import BotSettings

# Words that put a setting back to the host's default.
RESET_WORDS = {"default", "reset", "host", "既定", "デフォルト", "リセット"}
ALL_CHANNELS = {"all", "any", "everywhere", "すべて", "全部"}
SETTING_KEYS = ("channels", "strength", "color", "max_size", "max_iterations", "per_user_limit", "language")
_CHANNEL = re.compile(r"<#(\d+)>|(\d{5,})")


def _reset(text: str) -> bool:
    return text.strip().lower() in RESET_WORDS


def _whole_number(key: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise Problem("settings.not_a_number", what=key, value=text[:32]) from None


def _capped(key: str, value: int, least: int, most: int) -> int:
    if value < least:
        raise Problem("settings.too_small", what=key, value=value, least=least)
    if value > most:
        raise Problem("settings.over_host", what=key, value=value, most=most)
    return value


def parse_setting(key: str, text: str, host: BotSettings) -> Any:
    """The value of setting `key` that `text` asks for (None: the host's default)."""
    text = text.strip()
    if key != "channels" and _reset(text):
        return None
    if key == "channels":
        if _reset(text) or text.lower() in ALL_CHANNELS:
            return ()
        ids = tuple(dict.fromkeys(int(a or b) for a, b in _CHANNEL.findall(text)))
        if not ids:
            raise Problem("settings.bad_channels")
        return ids
    if key == "strength":
        try:
            return parse_strength(text)
        except OptionError:
            raise Problem("settings.bad_strength", value=text[:32]) from None
    if key == "color":
        try:
            return parse_color(text)
        except OptionError:
            raise Problem("settings.bad_color", value=text[:32]) from None
    if key == "max_size":
        return _capped(key, _whole_number(key, text), MIN_SIZE, host.max_size)
    if key == "max_iterations":
        return _capped(key, _whole_number(key, text), 1, host.max_iterations)
    if key == "per_user_limit":
        return _capped(key, _whole_number(key, text), 1, host.per_user_limit)
    if key == "language":
        code = parse_language(text)
        if code is None:
            raise Problem("settings.bad_language", value=text[:32], choices=", ".join(LANGUAGES))
        return code
    raise KeyError(key)


def changed_settings(
    current: ServerSettings, asked: dict[str, str | None], host: BotSettings
) -> ServerSettings:
    """`current` with each setting in `asked` (key -> text; None: leave it) changed."""
    values = {
        key: parse_setting(key, text, host) for key, text in asked.items() if text is not None
    }
    return replace(current, **values)


def server_caps(host: BotSettings, server: ServerSettings) -> Caps:
    return Caps(
        max_size=min(host.max_size, server.max_size or host.max_size),
        max_iterations=min(host.max_iterations, server.max_iterations or host.max_iterations),
    )


def server_limit(host: BotSettings, server: ServerSettings) -> int:
    return min(host.per_user_limit, server.per_user_limit or host.per_user_limit)


def shown_value(key: str, value: Any, language: str | None = None) -> str:
    """A setting's value as the log and the embed show it ("-": the host's default)."""
    if value is None or value == ():
        return "-"
    if key == "channels":
        return " ".join(f"<#{c}>" for c in value)
    if key == "strength":
        return strength_label(value, language)
    if key == "color":
        return t(language, f"colour_mode.{value}")
    if key == "language":
        return LANGUAGES.get(str(value), str(value))
    return str(value)
