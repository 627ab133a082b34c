"""The bot refuses or shrinks a job that would not fit [engine] max_memory (engine/memory.py)."""

from __future__ import annotations

import pytest

from bot.intake import within_memory
from bot.options import OptionError
from engine.jobs import TransferSettings


def test_a_job_that_fits_in_tiles_is_kept_as_it_is():
    settings = TransferSettings(size=2048, max_memory=3072)
    notes: list[str] = []
    assert within_memory(settings, notes) is settings and notes == []


def test_a_job_too_big_even_in_tiles_is_shrunk_with_a_note():
    settings = TransferSettings(size=1024, max_memory=1100)
    notes: list[str] = []
    smaller = within_memory(settings, notes)
    assert 32 <= smaller.size < 192 and "max_memory" in notes[0] and "1.1 GiB" in notes[0]


def test_nothing_fits_a_tiny_budget_and_the_member_is_told():
    with pytest.raises(OptionError, match=r"max_memory.*tell the host"):
        within_memory(TransferSettings(size=512, max_memory=800), [])
