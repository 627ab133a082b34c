"""Exceptions the engine raises on purpose (stdlib only, importable by the bot).

`InputError` messages are written for the person who sent the image and are
shown as they are; everything else is a bug or a host problem.
"""

from __future__ import annotations


class InputError(ValueError):
    """A problem with a user's input. `subject` names it ("the style image")."""

    def __init__(self, message: str, *, subject: str = "") -> None:
        super().__init__(message)
        self.subject = subject


class Cancelled(Exception):
    """The job was asked to stop between iterations."""
