"""The buttons: Cancel on a status message; Again, More style, Less style and Upscale ×2
on a result.

Persistent: each carries what it needs in its custom id (bot/options.py), and the
bot registers them as dynamic items, so a button pressed after a restart still
works. A press is handed to whichever cog registered itself as the handler under
`HANDLER_COG` (the stylize cog), through the two methods of `ButtonHandler`.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Protocol, runtime_checkable

import discord

from bot.i18n import t
from bot.options import (
    CANCEL_TEMPLATE,
    RERUN_TEMPLATE,
    RerunSpec,
    cancel_custom_id,
    rerun_from_match,
)

HANDLER_COG = "Stylize"
RERUN_LABELS = {
    "a": ("button.again", "🔁"),
    "m": ("button.more", "➕"),
    "l": ("button.less", "➖"),
    "u": ("button.upscale", "🔍"),
}


@runtime_checkable
class ButtonHandler(Protocol):
    async def cancel_button(self, interaction: discord.Interaction, job_id: str) -> None: ...

    async def rerun(self, interaction: discord.Interaction, spec: RerunSpec) -> None: ...


def handler(interaction: discord.Interaction) -> ButtonHandler | None:
    cog = interaction.client.get_cog(HANDLER_COG)  # type: ignore[attr-defined]
    return cog if isinstance(cog, ButtonHandler) else None


class CancelButton(discord.ui.DynamicItem[discord.ui.Button], template=CANCEL_TEMPLATE):
    def __init__(self, job_id: str, language: str = "en") -> None:
        super().__init__(
            discord.ui.Button(
                label=t(language, "button.cancel"),
                style=discord.ButtonStyle.secondary,
                emoji="✖️",
                custom_id=cancel_custom_id(job_id),
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> CancelButton:
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = handler(interaction)
        if cog is not None:
            await cog.cancel_button(interaction, self.job_id)


class RerunButton(discord.ui.DynamicItem[discord.ui.Button], template=RERUN_TEMPLATE):
    def __init__(self, spec: RerunSpec, language: str = "en") -> None:
        key, emoji = RERUN_LABELS[spec.action]
        super().__init__(
            discord.ui.Button(
                label=t(language, key),
                emoji=emoji,
                style=discord.ButtonStyle.primary
                if spec.action == "a"
                else discord.ButtonStyle.secondary,
                custom_id=spec.custom_id(),
            )
        )
        self.spec = spec

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> RerunButton:
        return cls(rerun_from_match(match))

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = handler(interaction)
        if cog is not None:
            await cog.rerun(interaction, self.spec)


def cancel_view(job_id: str, language: str = "en") -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id, language))
    return view


def result_view(spec: RerunSpec, language: str = "en", *, upscale: bool = False) -> discord.ui.View:
    """The rerun buttons, and Upscale ×2 where `upscale` (the result is smaller than the
    host's max size); `spec` is the finished job's (its action is replaced)."""
    view = discord.ui.View(timeout=None)
    for action in ("a", "m", "l", *(("u",) if upscale else ())):
        view.add_item(RerunButton(replace(spec, action=action), language))
    return view


ALL_BUTTONS = (CancelButton, RerunButton)
