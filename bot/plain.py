"""Member-provided text made inert before the bot repeats it (issue 11, item 10).

File names, option values, nicknames and job ids come from members. Repeated as they
are, `[free nitro](https://…)` renders as a masked link in the bot's own voice, and
backticks or asterisks break the reply's formatting. `plain` escapes every Markdown
character Discord reads (so links, headings, code and emphasis show as typed),
breaks @mentions and custom-emoji/mention brackets, removes line breaks and caps the
length. Stdlib only, so the pure modules (options, validation) can use it.
"""

from __future__ import annotations

import re

# What Discord's Markdown reads mid-line: emphasis, code, spoilers, quotes,
# masked links and <...> mentions, channels and suppressed links.
_MARKDOWN = re.compile(r"([\\`*_~|>\[\]()<:])")
_ZERO_WIDTH_SPACE = "\u200b"


def plain(text: object, limit: int = 100) -> str:
    """`text` as literal characters in a Discord message, at most `limit` of them (plus
    escapes), cut with an ellipsis."""
    value = " ".join(str(text).split())  # no line breaks: one line, no block quotes
    if len(value) > limit:
        value = value[: max(0, limit - 1)] + "…"
    value = _MARKDOWN.sub(r"\\\1", value)
    return value.replace("@", "@" + _ZERO_WIDTH_SPACE)
