"""bot/i18n.py: every catalogue has every key with the same placeholders; the language order."""

from __future__ import annotations

import discord

from bot.i18n import CATALOGUE, DEFAULT_LANGUAGE, LANGUAGES, pick_language, placeholders


def test_every_key_is_in_every_catalogue_with_the_same_placeholders():
    texts = CATALOGUE.texts
    assert set(texts) == set(LANGUAGES)
    english = texts[DEFAULT_LANGUAGE]
    for language, table in texts.items():
        assert set(table) == set(english), (
            f"{language}: missing {sorted(set(english) - set(table))}, "
            f"extra {sorted(set(table) - set(english))}"
        )
        for key, template in table.items():
            assert placeholders(template) == placeholders(english[key]), (language, key)
            assert template.strip(), (language, key)


def test_the_language_order():
    # The member's own setting, the interaction's locale, the server's, English.
    assert pick_language(["ja", discord.Locale.american_english, "en", None]) == "ja"
    assert pick_language([None, discord.Locale.japanese, "en", "en-US"]) == "ja"
    assert pick_language([None, discord.Locale.french, "ja", "en-US"]) == "ja"
    assert pick_language([None, None, None, "ja"]) == "ja"
    assert pick_language([None, "fr", None, "de"]) == "en"
