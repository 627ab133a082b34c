"""The bot never imports TensorFlow (it lives in the engine processes only)."""

import subprocess
import sys

import pytest

from engine.config import PROJECT_ROOT


@pytest.mark.timeout(60)
def test_importing_the_bot_does_not_import_tensorflow():
    code = (
        "import bot, bot.client, bot.cogs.stylize, bot.broker, bot.broker.local, bot.pool, "
        "bot.engine_process, bot.delivery, bot.buttons, bot.inputs, bot.texts, bot.replies, "
        "bot.validation, bot.options, bot.settings, bot.__main__; import sys; "
        "assert 'engine.worker' not in sys.modules, 'the bot imports only the contract'; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, "
        "sorted(m for m in sys.modules if m.startswith(('tensorflow', 'keras')))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROJECT_ROOT, timeout=60)


@pytest.mark.timeout(60)
def test_the_engine_worker_does_not_import_discord():
    code = "import engine.worker, bot.__main__; import sys; assert 'discord' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROJECT_ROOT, timeout=60)
