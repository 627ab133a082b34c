"""Slash commands in the member's language: discord.py's `app_commands.Translator` over the
catalogues of bot/i18n.py. Discord shows each member the names and descriptions of their
client's locale (it asks once, when the bot syncs its commands); the interaction still
carries the English names, so the code reads options the same whatever the language.

Keys: `cmd.<command>.name` and `.description` (a subcommand is `<group>.<name>`),
`cmd.<command>.opt.<option>.name` and `.description`, `choice.<value>`.
"""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from bot.i18n import CATALOGUE, DEFAULT_LANGUAGE, language_of_locale

Location = app_commands.TranslationContextLocation


def catalogue_key(context: app_commands.TranslationContextTypes) -> str | None:
    """The catalogue key of what discord.py asks to translate (None: not ours)."""
    data: Any = context.data
    location = context.location
    if location in (Location.command_name, Location.group_name):
        return f"cmd.{_path(data)}.name"
    if location in (Location.command_description, Location.group_description):
        return f"cmd.{_path(data)}.description"
    if location == Location.parameter_name:
        return f"cmd.{_path(data.command)}.opt.{data.name}.name"
    if location == Location.parameter_description:
        return f"cmd.{_path(data.command)}.opt.{data.name}.description"
    if location == Location.choice_name:
        return f"choice.{data.value}"
    return None


def _path(command: Any) -> str:
    return str(command.qualified_name).replace(" ", ".")


class CatalogueTranslator(app_commands.Translator):
    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        language = language_of_locale(locale)
        key = catalogue_key(context)
        # English is what the code says (a test keeps en.toml's [cmd] the same).
        if language in (None, DEFAULT_LANGUAGE) or key is None or not CATALOGUE.has(key):
            return None
        return CATALOGUE.text(language, key)
