"""Where a job's images come from, besides the member's own message: the message it
replies to, or (for a result button) the inputs kept on the result message."""

from __future__ import annotations

from typing import Any

import discord

from bot.options import RerunSpec
from bot.validation import Candidate, InputProblem, Inputs, choose_inputs, label

INPUT_PREFIX = "input-"  # result attachments that hold a slash job's inputs (for the buttons)
INPUT_ALT = {False: "Input photo", True: "Input style image"}  # their alt text, before ": name"


class _Renamed:
    """A kept input under its original name (from its alt text), for messages and labels."""

    def __init__(self, attachment: discord.Attachment) -> None:
        self.attachment = attachment
        alt = attachment.description or ""
        self.filename = (
            alt.split(": ", 1)[1]
            if alt.startswith(tuple(INPUT_ALT.values())) and ": " in alt
            else attachment.filename
        )
        self.size = attachment.size

    async def read(self) -> bytes:
        return await self.attachment.read()


async def referenced_attachments(client: discord.Client, message: discord.Message) -> list[Any]:
    """Attachments of the message `message` replies to ([] when none)."""
    ref = message.reference
    if ref is None or ref.message_id is None:
        return []
    resolved = ref.resolved
    if isinstance(resolved, discord.Message):
        return list(resolved.attachments)
    if isinstance(resolved, discord.DeletedReferencedMessage):
        return []
    try:
        channel = (
            message.channel
            if ref.channel_id in (None, message.channel.id)
            else client.get_channel(ref.channel_id)
        )
        if channel is None:
            return []
        original = await channel.fetch_message(ref.message_id)  # type: ignore[union-attr]
    except discord.HTTPException:
        return []
    return list(original.attachments)


def inputs_on_result(message: discord.Message | None) -> Inputs:
    attachments = [
        a
        for a in (message.attachments if message else [])
        if a.filename.startswith(INPUT_PREFIX)
    ]
    photos = [_Renamed(a) for a in attachments if a.filename.startswith(f"{INPUT_PREFIX}photo")]
    styles = [_Renamed(a) for a in attachments if a.filename.startswith(f"{INPUT_PREFIX}style")]
    if not photos or not styles:
        raise InputProblem(
            "This result does not carry its input images any more, so I can't paint it "
            "again. Send the images again with `/stylize`."
        )
    return Inputs(
        Candidate(photos[0], label("content", 0, 1, photos[0].filename)),
        tuple(
            Candidate(s, label("style", i, len(styles), s.filename))
            for i, s in enumerate(styles)
        ),
    )


async def rerun_inputs(
    client: discord.Client, interaction: discord.Interaction, spec: RerunSpec, *, max_styles: int
) -> Inputs:
    """The images a result button paints again: re-read from the member's message (source
    "m", never across servers), or the inputs kept on the result (source "r"). Raises
    discord.NotFound / Forbidden, PermissionError or InputProblem."""
    if spec.source == "m":
        channel = client.get_channel(spec.channel_id) or await client.fetch_channel(
            spec.channel_id
        )
        # Never fetch across servers, whatever a custom id says.
        source_guild = getattr(getattr(channel, "guild", None), "id", None)
        if source_guild != getattr(interaction.guild, "id", None):
            raise PermissionError("the source is in another server")
        source = await channel.fetch_message(spec.message_id)  # type: ignore[union-attr]
        referenced = await referenced_attachments(client, source)
        return choose_inputs(
            source.attachments, referenced, max_styles=max_styles
        )
    return inputs_on_result(interaction.message)


RESULT_PREFIX = "stylized-"  # the result picture's attachment (bot/delivery.py names it)


async def result_image(message: discord.Message | None) -> bytes:
    """The picture of a result message (what Upscale ×2 starts from); b"" when gone."""
    for attachment in message.attachments if message else []:
        if attachment.filename.startswith(RESULT_PREFIX):
            try:
                return await attachment.read()
            except discord.HTTPException:
                return b""
    return b""
