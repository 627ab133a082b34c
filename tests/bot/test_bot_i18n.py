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


def test_texts_made_before_the_reader_is_known_render_in_their_language():
    from bot.pool import WARMING_UP, starting_again_note
    from bot.validation import InputProblem, choose_inputs, label

    assert WARMING_UP.text("ja").startswith("描画エンジンを準備しています")
    assert str(WARMING_UP).startswith("The painter is still warming up")
    assert "約 2 分" in starting_again_note(100).text("ja")
    assert "about 45 s" in starting_again_note(45)
    assert label("style", 1, 2, "b.png").text("ja") == "スタイル画像 2（b.png）"
    assert label("content", 0, 1, "a.png") == "the photo (a.png)"

    class Att:
        filename, size = "a.png", 10

    try:
        choose_inputs([Att()], max_styles=3)
    except InputProblem as e:
        assert str(e).startswith("I got only one image (a.png)")
        assert e.text("ja").startswith("画像が 1 枚（a.png）しかありません。")
    else:
        raise AssertionError("one image must be refused")
