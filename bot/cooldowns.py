"""Per-member cooldowns for the commands and buttons (issue 11, item 9).

A member may use each kind of action ("stylize", "buttons", "queue") once every
`seconds[kind]` seconds; 0 means no limit. Plain data and a clock, so tests need no
Discord and no waiting. Used rather than discord.py's `commands.cooldown` because the
same limit covers the text command, the slash command and the buttons, and because the
host sets the seconds in `[bot]` at run time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

# Forget members whose cooldown ran out once this many are remembered (bounds memory).
PRUNE_AT = 10_000


class Cooldowns:
    def __init__(
        self, seconds: Mapping[str, float], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.seconds = dict(seconds)
        self.clock = clock
        self._last: dict[tuple[str, int], float] = {}

    def retry_after(self, kind: str, member_id: int) -> float:
        """0 when `member_id` may do `kind` now (and the use is recorded); otherwise the
        seconds left to wait (and nothing is recorded)."""
        period = self.seconds.get(kind, 0.0)
        if period <= 0:
            return 0.0
        now = self.clock()
        last = self._last.get((kind, member_id))
        if last is not None and now - last < period:
            return period - (now - last)
        if len(self._last) >= PRUNE_AT:
            self._prune(now)
        self._last[(kind, member_id)] = now
        return 0.0

    def _prune(self, now: float) -> None:
        self._last = {
            key: at for key, at in self._last.items() if now - at < self.seconds.get(key[0], 0.0)
        }


def cooldown_text(seconds: float, language: str | None = None) -> str:
    """The one line a member sees when they are too quick."""
    from bot.i18n import t

    return t(language, "refused.cooldown", seconds=max(1, math.ceil(seconds)))
