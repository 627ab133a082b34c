"""Where a job's images come from, besides the member's own message: the message it
replies to, or (for a result button) the inputs kept on the result message."""

from __future__ import annotations

from typing import Any

import discord

from bot.validation import Candidate, InputProblem, Inputs, label

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
