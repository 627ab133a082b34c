"""Where a job came from and how to answer there: a text command (`!stylize`: the ack
and the result are replies to the member's message), an interaction (slash command or
button: the deferred response becomes the status message, the result is a follow-up),
or, after a restart, the ids kept in the journal. Interaction tokens expire after 15
minutes, so past `TOKEN_TTL` (and after a restart) the plain channel endpoints are
used, which work on the bot's own messages for as long as it can see the channel.
"""

from __future__ import annotations

import io
import time
from typing import Any

import discord

TOKEN_TTL = 14 * 60  # seconds; Discord's interaction tokens last 15 minutes
KEEP = object()  # "leave the preview as it is" in status edits


def fresh_file(name: str, data: bytes, description: str | None = None) -> discord.File:
    # A File is consumed by one send; every attempt gets a new one.
    return discord.File(io.BytesIO(data), filename=name, description=description)


class StatusHandle:
    """The status message, wherever it lives."""

    channel_id: int = 0
    message_id: int = 0

    async def edit(self, *, content: str, preview: Any = KEEP, view: Any = KEEP) -> None:
        raise NotImplementedError

    async def delete(self) -> None:
        raise NotImplementedError


def _edit_kwargs(content: str, preview: Any, view: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"content": content}
    if preview is not KEEP:
        kwargs["attachments"] = [] if preview is None else [fresh_file("preview.png", preview)]
    if view is not KEEP:
        kwargs["view"] = view
    return kwargs


class MessageStatus(StatusHandle):
    def __init__(self, message: discord.Message | discord.PartialMessage) -> None:
        self.message = message
        self.channel_id = message.channel.id
        self.message_id = message.id

    async def edit(self, *, content: str, preview: Any = KEEP, view: Any = KEEP) -> None:
        self.message = await self.message.edit(**_edit_kwargs(content, preview, view))

    async def delete(self) -> None:
        await self.message.delete()


class InteractionStatus(StatusHandle):
    def __init__(self, interaction: discord.Interaction, message: discord.Message) -> None:
        self.interaction = interaction
        self.message_id = message.id
        self.channel = interaction.channel
        self.channel_id = getattr(interaction.channel, "id", 0)

    def _fresh(self) -> bool:
        return time.time() - self.interaction.created_at.timestamp() < TOKEN_TTL

    async def edit(self, *, content: str, preview: Any = KEEP, view: Any = KEEP) -> None:
        kwargs = _edit_kwargs(content, preview, view)
        if self._fresh():
            await self.interaction.edit_original_response(**kwargs)
        else:
            await self.channel.get_partial_message(self.message_id).edit(**kwargs)

    async def delete(self) -> None:
        if self._fresh():
            await self.interaction.delete_original_response()
        else:
            await self.channel.get_partial_message(self.message_id).delete()


class Conversation:
    """Where a job came from and how to answer there."""

    user: discord.abc.User
    channel: Any
    guild: discord.Guild | None

    async def say(self, content: str) -> None:
        """A reply before anything is queued (an input problem, a refusal)."""
        raise NotImplementedError

    async def open_status(self, content: str, view: discord.ui.View) -> StatusHandle:
        raise NotImplementedError

    async def send_result(
        self,
        content: str,
        files: list[discord.File],
        view: discord.ui.View | None,
        embed: discord.Embed | None = None,
    ) -> discord.Message:
        raise NotImplementedError

    @property
    def filesize_limit(self) -> int:
        if self.guild is not None:
            return self.guild.filesize_limit
        return discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES

    def result_mentions(self) -> discord.AllowedMentions:
        # Ping the member whose painting is ready: never anyone else, roles or @everyone.
        return discord.AllowedMentions(
            everyone=False, roles=False, users=[self.user], replied_user=False
        )


class MessageConversation(Conversation):
    def __init__(self, message: discord.Message) -> None:
        self.user = message.author
        self.channel = message.channel
        self.guild = message.guild
        self.reply_to = message.id
        self.reference: discord.MessageReference | None = message.to_reference(
            fail_if_not_exists=False
        )

    async def _reply(self, content: str, **kwargs: Any) -> discord.Message:
        """A message in the channel answering the command (still sent if it was deleted)."""
        if self.reference is not None:
            kwargs["reference"] = self.reference
        return await self.channel.send(content, **kwargs)

    async def say(self, content: str) -> None:
        await self._reply(content, mention_author=False)

    async def open_status(self, content: str, view: discord.ui.View) -> StatusHandle:
        return MessageStatus(await self._reply(content, view=view, mention_author=False))

    async def send_result(
        self,
        content: str,
        files: list[discord.File],
        view: discord.ui.View | None,
        embed: discord.Embed | None = None,
    ) -> discord.Message:
        kwargs: dict[str, Any] = {"view": view} if view is not None else {}
        if embed is not None:
            kwargs["embed"] = embed
        return await self._reply(
            content, files=files, allowed_mentions=self.result_mentions(), **kwargs
        )


class _Member:
    """A member known only by id (after a restart): enough to mention and allow a ping."""

    def __init__(self, user_id: int) -> None:
        self.id = user_id
        self.mention = f"<@{user_id}>"


class ResumedConversation(MessageConversation):
    """A job's conversation rebuilt after a restart from the ids in the journal: the
    answer goes to the same channel, as a reply to the command message if there was
    one (an interaction's token is not kept: the channel endpoints work without it)."""

    def __init__(
        self, client: discord.Client, *, guild_id: int, channel_id: int, user_id: int, reply_to: int
    ) -> None:
        self.user = _Member(user_id)  # type: ignore[assignment]
        self.client, self.guild_id = client, guild_id
        self.channel = client.get_channel(channel_id) or client.get_partial_messageable(
            channel_id, guild_id=guild_id or None
        )
        self.reply_to = reply_to
        self.reference = (
            discord.MessageReference(
                message_id=reply_to,
                channel_id=channel_id,
                guild_id=guild_id or None,
                fail_if_not_exists=False,
            )
            if reply_to
            else None
        )

    @property  # type: ignore[override]
    def guild(self) -> discord.Guild | None:
        # Looked up when needed: a restarted bot re-attaches before its guild cache fills.
        return self.client.get_guild(self.guild_id) if self.guild_id else None

    def partial_message(self, message_id: int) -> discord.PartialMessage:
        return self.channel.get_partial_message(message_id)


class InteractionConversation(Conversation):
    """A slash command or button press; the caller has deferred it with thinking=True."""

    def __init__(self, interaction: discord.Interaction) -> None:
        self.interaction = interaction
        self.user = interaction.user
        self.channel = interaction.channel
        self.guild = interaction.guild
        self.reply_to = 0

    def _fresh(self) -> bool:
        return time.time() - self.interaction.created_at.timestamp() < TOKEN_TTL

    async def say(self, content: str) -> None:
        await self.interaction.edit_original_response(content=content)

    async def open_status(self, content: str, view: discord.ui.View) -> StatusHandle:
        message = await self.interaction.edit_original_response(content=content, view=view)
        return InteractionStatus(self.interaction, message)

    async def send_result(
        self,
        content: str,
        files: list[discord.File],
        view: discord.ui.View | None,
        embed: discord.Embed | None = None,
    ) -> discord.Message:
        kwargs: dict[str, Any] = {"view": view} if view is not None else {}
        if embed is not None:
            kwargs["embed"] = embed
        if self._fresh():
            return await self.interaction.followup.send(
                content, files=files, wait=True, allowed_mentions=self.result_mentions(), **kwargs
            )
        return await self.channel.send(
            content, files=files, allowed_mentions=self.result_mentions(), **kwargs
        )

    @property
    def filesize_limit(self) -> int:
        limit = getattr(self.interaction, "filesize_limit", None)
        if self.guild is not None:
            return min(self.guild.filesize_limit, limit or self.guild.filesize_limit)
        return limit or discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES
