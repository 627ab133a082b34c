"""`python -m bot`: read the settings, set up logging, run the bot until SIGINT/SIGTERM.

Only the standard library is imported at module level: the engine processes are
started with multiprocessing's "spawn", which re-imports this module in each of them,
and they must not pay for (or depend on) discord.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Iterable
from typing import TextIO

log = logging.getLogger("bot")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def setup_logging(level: str, secrets: Iterable[str] = (), *, stream: TextIO | None = None) -> None:
    """One stderr handler on the root logger; every record it writes is redacted as a
    whole (message, exception text and traceback), see bot/secrecy.py."""
    from bot.secrecy import RedactingFormatter

    handler = logging.StreamHandler(stream or sys.stderr)
    inner = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(RedactingFormatter(inner, secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("discord").setLevel(max(root.level, logging.INFO))
    logging.getLogger("discord.http").setLevel(max(root.level, logging.WARNING))


async def run(settings, *, bot_factory=None) -> int:
    """Run until the bot stops or a signal asks it to; returns the exit status."""
    import aiohttp
    import discord

    from bot.client import build_bot

    bot = (bot_factory or build_bot)(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        async with bot:
            runner = asyncio.create_task(bot.start(settings.token.reveal()), name="discord")
            stopper = asyncio.create_task(stop.wait(), name="signals")
            done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stopper in done:
                log.info("signal received: shutting down")
                await bot.shutdown()
                await asyncio.wait({runner}, timeout=10)
                return EXIT_OK
            stopper.cancel()
            try:
                runner.result()
            except discord.LoginFailure:
                print(
                    "Discord rejected the token (DISCORD_TOKEN). Copy it again from the developer portal: "
                    "your application -> Bot -> Reset Token.",
                    file=sys.stderr,
                )
                await bot.shutdown()
                return EXIT_FAILED
            except discord.PrivilegedIntentsRequired:
                print(
                    "Discord refused the Message Content intent. In the developer portal open your "
                    "application -> Bot -> Privileged Gateway Intents, switch on MESSAGE CONTENT INTENT, "
                    "save, and start the bot again.",
                    file=sys.stderr,
                )
                await bot.shutdown()
                return EXIT_FAILED
            except (OSError, aiohttp.ClientError) as e:
                print(
                    f"Could not reach Discord ({type(e).__name__}: {e}). Check the network and "
                    "try again.",
                    file=sys.stderr,
                )
                await bot.shutdown()
                return EXIT_FAILED
            await bot.shutdown()
            return EXIT_OK
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def main(argv: list[str] | None = None) -> int:
    from bot.secrecy import secret_values
    from bot.settings import ConfigError, MissingToken, load_settings

    try:
        settings = load_settings()
    except MissingToken as e:
        print(e, file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as e:
        print(f"Configuration error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(settings.bot.log_level, (settings.token.reveal(), *secret_values(os.environ)))
    log.info("settings: %s", settings.config_path or "built-in defaults (config/default.toml)")
    try:
        return asyncio.run(run(settings))
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
