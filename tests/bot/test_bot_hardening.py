"""Issue 11's pure pieces: option caps and aliases, member text made inert, engine
errors never shown raw, the member's own photo first, cooldowns."""

from __future__ import annotations

import logging

import pytest

from bot.broker import Job
from bot.cooldowns import Cooldowns, cooldown_text
from bot.options import MAX_OPTION_LENGTH, MIN_SIZE, OptionError, parse_color, parse_strength
from bot.plain import plain
from bot.replies import failure_text, member_safe
from bot.validation import choose_inputs
from engine.jobs import MIN_IMAGE_SIDE, ErrorKind, JobFailed, JobRequest

from .test_bot_validation import att

TRACEBACK = (
    'Traceback (most recent call last):\n  File "/home/bot/stylebot/engine/transfer.py", line 305,'
    " in stylize\nValueError: Exception encountered when calling Conv2D.call(): negative dimension"
)


def job() -> Job:
    return Job(JobRequest("1a2b3c4d", b"", ()), user_id=1)


def test_overlong_options_are_refused_before_parsing_with_one_log_line(caplog):
    with caplog.at_level(logging.INFO, logger="bot.options"):
        with pytest.raises(OptionError) as err:
            parse_strength("1" * 1870)
    assert str(err.value).startswith("That strength is 1870 characters long")
    assert len(caplog.records) == 1 and caplog.records[0].exc_info is None
    with pytest.raises(OptionError, match="colour is 40 characters"):
        parse_color("l" * 40)
    with pytest.raises(OptionError, match="out of range"):  # at the cap: parsed as usual
        parse_strength("2" * MAX_OPTION_LENGTH)


def test_colour_aliases():
    assert parse_color("lum") == parse_color("Luminance") == "luminance"
    assert parse_color("hist") == "histogram"


def test_member_text_is_made_inert():
    text = plain("[free nitro](https://evil.example) **bold** @everyone <@123> `x`")
    assert "[free nitro](" not in text and "**" not in text and "`x`" not in text
    assert "@everyone" not in text and "<@123>" not in text
    assert plain("a\nb", 100) == "a b" and len(plain("x" * 500, 50)) == 50
    with pytest.raises(OptionError) as err:
        parse_strength("[nitro](https://e.x)")
    assert "[nitro](" not in str(err.value)


def test_engine_errors_that_are_not_for_members_become_an_apology_with_the_job_id():
    for kind in (ErrorKind.BAD_SETTINGS, ErrorKind.BAD_INPUT, ErrorKind.INTERNAL):
        text = failure_text(job(), JobFailed("1a2b3c4d", kind, TRACEBACK))
        assert "Traceback" not in text and "/home" not in text and "Conv2D" not in text
        assert "Sorry" in text and "1a2b3c4d" in text
    fine = "the photo (a.png) is only 8×8 pixels; please send a larger image"
    assert member_safe(fine)
    assert failure_text(job(), JobFailed("1a2b3c4d", ErrorKind.BAD_INPUT, fine)).startswith(
        "⚠️ The photo (a.png) is only 8×8"
    )
    assert not member_safe("cannot open /srv/stylebot/models/vgg19.h5")


def test_the_minimum_size_is_defined_once():
    assert MIN_SIZE == MIN_IMAGE_SIDE == 32


def test_the_members_own_photo_wins_over_the_replied_to_one():
    inputs = choose_inputs([att("mine.png"), att("style.png")], [att("cat.png")], max_styles=3)
    assert inputs.content.attachment.filename == "mine.png"
    assert [s.attachment.filename for s in inputs.styles] == ["style.png"]
    reply_form = choose_inputs([att("style.png")], [att("cat.png")], max_styles=3)
    assert reply_form.content.attachment.filename == "cat.png"


def test_labels_of_odd_file_names_are_inert():
    inputs = choose_inputs([att("[x](https:evil).png"), att("b.png")], max_styles=3)
    assert "[x](" not in inputs.content.label


def test_cooldowns_per_member_and_kind():
    now = [100.0]
    cooldowns = Cooldowns({"stylize": 10.0, "queue": 0.0}, clock=lambda: now[0])
    assert cooldowns.retry_after("stylize", 1) == 0
    now[0] += 4
    assert cooldowns.retry_after("stylize", 1) == pytest.approx(6.0)
    assert cooldowns.retry_after("stylize", 2) == 0  # another member
    assert cooldowns.retry_after("queue", 1) == cooldowns.retry_after("queue", 1) == 0  # off
    now[0] += 6
    assert cooldowns.retry_after("stylize", 1) == 0
    assert cooldown_text(5.2) == "⏳ Not so fast — please wait 6 s and try again."
