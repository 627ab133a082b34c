"""Member-facing text in the member's language: one TOML catalogue per language.

`bot/locales/<code>.toml` holds every text under a dotted key (`[settings] title = ...`
is `settings.title`), with `{name}` placeholders filled by `str.format`. TOML because
the standard library reads it (`tomllib`, no build step and no dependency), a
translator edits one plain file with multi-line strings, and the config already is
TOML; gettext would need a compile step for its `.mo` files and keys its entries by
the English text, and Fluent a third-party runtime for plural rules neither language
needs here. tests/bot/test_bot_i18n.py checks that every catalogue has every key with
the same placeholders.

The language of a reply is picked in this order: the member's own setting, the
Discord locale of the interaction, the server's setting, the server's preferred
locale, English (`pick_language`).
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

LOCALES_DIR = Path(__file__).parent / "locales"
DEFAULT_LANGUAGE = "en"
# Each language's code, and the name shown to members (in that language).
LANGUAGES = {"en": "English", "ja": "日本語"}


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = str(value)
    return flat


def load_catalogues(folder: Path = LOCALES_DIR) -> dict[str, dict[str, str]]:
    return {
        path.stem: _flatten(tomllib.loads(path.read_text(encoding="utf-8")))
        for path in sorted(folder.glob("*.toml"))
    }


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


class Catalogue:
    def __init__(self, texts: Mapping[str, Mapping[str, str]]) -> None:
        self.texts = texts

    def has(self, key: str) -> bool:
        return key in self.texts[DEFAULT_LANGUAGE]

    def text(self, language: str | None, key: str, /, **values: Any) -> str:
        """The text `key` in `language` (English where that language lacks it)."""
        table = self.texts.get(language or DEFAULT_LANGUAGE, {})
        template = table.get(key)
        if template is None:
            template = self.texts[DEFAULT_LANGUAGE][key]  # KeyError: a missing key is a bug
        return template.format(**values)

    def all(self, key: str) -> set[str]:
        """`key` in every language (for words members may type in either)."""
        return {table[key] for table in self.texts.values() if key in table}


CATALOGUE = Catalogue(load_catalogues())


def t(language: str | None, key: str, /, **values: Any) -> str:
    return CATALOGUE.text(language, key, **values)


def language_of_locale(locale: Any) -> str | None:
    """"ja" for Discord's `ja`, "en" for `en-US`/`en-GB`; None for a language we lack."""
    value = str(getattr(locale, "value", locale) or "").lower()
    code = value.split("-")[0]
    return code if code in LANGUAGES else None


def parse_language(text: str | None) -> str | None:
    """A language a member or admin typed: a code, a locale or the language's name."""
    if text is None:
        return None
    word = text.strip().lower()
    for code, name in LANGUAGES.items():
        if word in (code, name.lower()):
            return code
    names = {"english": "en", "japanese": "ja", "nihongo": "ja", "英語": "en"}
    return names.get(word) or language_of_locale(word)


def pick_language(choices: Iterable[Any]) -> str:
    """The first of `choices` (codes or Discord locales, None to skip) we have a catalogue for."""
    for choice in choices:
        code = choice if choice in LANGUAGES else language_of_locale(choice)
        if code:
            return code
    return DEFAULT_LANGUAGE


class Label(str):
    """How a message names an image ("the photo (cat.png)", "style image 2 (b.png)"): the
    English as the string itself, any language through `text`."""

    # (Not `index` and `count`: str has methods of those names.)
    role: str
    position: int
    total: int
    filename: str

    def __new__(cls, role: str, position: int, total: int, filename: str) -> Label:
        made = super().__new__(cls, _label(DEFAULT_LANGUAGE, role, position, total, filename))
        made.role, made.position, made.total, made.filename = role, position, total, filename
        return made

    def text(self, language: str | None) -> str:
        return _label(language, self.role, self.position, self.total, self.filename)


def _label(language: str | None, role: str, index: int, count: int, filename: str) -> str:
    name = t(language, "input.name", name=filename) if filename else ""
    if role == "content":
        return t(language, "input.photo", name=name)
    if count == 1:
        return t(language, "input.style", name=name)
    return t(language, "input.style_n", n=index + 1, name=name)


class Seconds(float):
    """A time a message states ("5 s", 「5 秒」), rendered in the reader's language."""

    def text(self, language: str | None) -> str:
        return duration_in(language, self)


class Text(str):
    """A catalogue text made before its reader is known (an engine pool's note under
    every queued job): the English as the string itself, any language through `text`."""

    key: str
    values: dict[str, Any]

    def __new__(cls, key: str, /, **values: Any) -> Text:
        made = super().__new__(cls, render(None, key, values))
        made.key, made.values = key, values
        return made

    def text(self, language: str | None) -> str:
        return render(language, self.key, self.values)


def localized(text: str, language: str | None) -> str:
    """`text` in `language` when it is a `Text`; as it is otherwise."""
    return text.text(language) if isinstance(text, Text) else text


def render(language: str | None, key: str, values: Mapping[str, Any]) -> str:
    """`key` with `values` (labels and times in `language` too), its first letter capitalised."""
    shown = {
        k: v.text(language) if isinstance(v, (Label, Seconds)) else v for k, v in values.items()
    }
    text = t(language, key, **shown)
    return text[:1].upper() + text[1:]


class Explained(Exception):
    """An error a member reads: a catalogue key and its values (`text(language)`), or,
    for messages that come from elsewhere (the engine's), a plain text. `str()` is the
    English, so logs and English-only callers read it as before."""

    def __init__(self, key_or_text: str, /, *, english: str | None = None, **values: Any) -> None:
        self.key = key_or_text if CATALOGUE.has(key_or_text) else None
        self.values = values
        # `english`: a more precise English sentence than the catalogue's (the engine's
        # own, which names the exact problem); other languages get the catalogue's.
        self.english = english
        super().__init__(english or (render(None, self.key, values) if self.key else key_or_text))

    def text(self, language: str | None) -> str:
        if self.key is None or (self.english and language in (None, DEFAULT_LANGUAGE)):
            return str(self)
        return render(language, self.key, self.values)


def explain(error: BaseException, language: str | None) -> str:
    """What `error` says, in `language` when it can."""
    return error.text(language) if isinstance(error, Explained) else str(error)


def ordinal_in(language: str | None, n: int) -> str:
    """"2nd" in English; the number in Japanese (the catalogue says "2 番目")."""
    from bot.broker.queue import ordinal

    return str(n) if language == "ja" else ordinal(n)


def duration_in(language: str | None, seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return t(language, "duration.seconds", s=seconds)
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        if secs and minutes < 10:
            return t(language, "duration.minutes_seconds", m=minutes, s=secs)
        return t(language, "duration.minutes", m=minutes)
    hours, minutes = divmod(minutes, 60)
    return t(language, "duration.hours", h=hours, m=minutes)
