"""Exceptions the engine raises on purpose (stdlib only, importable by the bot).

`InputError` messages are written for the person who sent the image and are
shown as they are; `WeightsError` is the host's problem (a missing or broken
weights file); everything else is a bug. The worker turns each type into an
`engine.jobs.ErrorKind` by `isinstance`: this module imports nothing heavy, so
both the bot and the engine process can import it whatever failed to load.
"""

from __future__ import annotations


class InputError(ValueError):
    """A problem with a user's input. `subject` names it ("the style image")."""

    def __init__(self, message: str, *, subject: str = "") -> None:
        super().__init__(message)
        self.subject = subject


class Cancelled(Exception):
    """The job was asked to stop between iterations."""


class WeightsError(RuntimeError):
    """The weights cannot be found, fetched or read. A host problem, not the user's:
    the message names the file or URL, what went wrong, and the fix."""
