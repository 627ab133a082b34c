"""`python -m bot` in its own process, pointed at a fake Discord (tests only).

The restart tests kill the bot for real (SIGKILL, SIGTERM), so it cannot share the
test's process. `FAKE_DISCORD_URL` names the fake's base URL; everything else comes
from the environment as for the real bot (STYLEBOT_CONFIG, DISCORD_TOKEN).
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # the engine processes re-import this module under spawn
    import discord.gateway
    import discord.http
    import yarl

    from bot.__main__ import main

    base = os.environ["FAKE_DISCORD_URL"]
    discord.http.Route.BASE = base + "/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(
        base.replace("http://", "ws://") + "/gateway/"
    )
    sys.exit(main())
