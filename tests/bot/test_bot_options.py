"""bot/options.py: strength, colour, caps, and the result buttons' custom ids."""

from __future__ import annotations

import pytest

from bot.options import (
    Caps,
    JobOptions,
    OptionError,
    RerunSpec,
    build_settings,
    parse_color,
    parse_rerun,
    parse_strength,
    strength_label,
)
from engine.jobs import TransferSettings

BASE = TransferSettings(size=512, iterations=500, style_strength=1e4)
CAPS = Caps(max_size=1024, max_iterations=1000)


@pytest.mark.parametrize(
    "text, value",
    [
        (None, 1.0),
        ("", 1.0),
        ("subtle", 0.4),
        ("Normal", 1.0),
        ("strong", 3.0),
        ("EXTREME", 8.0),
        ("2", 2.0),
        ("0.5", 0.5),
        ("3x", 3.0),
        ("100", 100.0),
    ],
)
def test_parse_strength(text, value):
    assert parse_strength(text) == value


@pytest.mark.parametrize(
    "text, message",
    [
        ("banana", "I don't know the strength 'banana'"),
        ("0", "out of range"),
        ("1000", "out of range"),
        ("nan", "out of range"),
    ],
)
def test_parse_strength_errors(text, message):
    with pytest.raises(OptionError, match=message):
        parse_strength(text)


def test_parse_color():
    assert parse_color(None) is None
    assert parse_color("Luminance") == "luminance" and parse_color("keep") == "luminance"
    assert parse_color("hist") == "histogram" and parse_color("none") == "none"
    with pytest.raises(OptionError, match="colour mode 'sepia'"):
        parse_color("sepia")


def test_build_settings_defaults_caps_and_notes():
    settings, notes = build_settings(BASE, JobOptions(), CAPS)
    assert (settings.size, settings.iterations, settings.style_strength, settings.seed) == (
        512,
        500,
        1e4,
        None,
    )
    assert notes == []
    settings, notes = build_settings(
        BASE, JobOptions(strength=5, size=4000, iterations=5000, color="luminance", seed=3), CAPS
    )
    assert (settings.size, settings.iterations, settings.style_strength) == (1024, 1000, 5e4)
    assert settings.color == "luminance" and settings.seed == 3
    assert notes == ["size capped at 1024 px", "iterations capped at 1000"]
    small_caps = Caps(max_size=256, max_iterations=100)
    settings, _ = build_settings(BASE, JobOptions(), small_caps)
    assert (settings.size, settings.iterations) == (
        256,
        100,
    )  # the host's default is capped silently


@pytest.mark.parametrize(
    "options, message",
    [
        (JobOptions(size=8), "too small"),
        (JobOptions(iterations=0), "at least 1"),
        (JobOptions(seed=-1), "Seed must be"),
        (JobOptions(seed=2**31), "Seed must be"),
    ],
)
def test_build_settings_errors(options, message):
    with pytest.raises(OptionError, match=message):
        build_settings(BASE, options, CAPS)


def test_strength_label():
    assert (
        strength_label(3.0) == "strong"
        and strength_label(5.0) == "×5"
        and strength_label(1 / 3) == "×0.333"
    )


def test_rerun_custom_id_round_trip_and_length():
    biggest = 2**64 - 1  # Discord snowflakes are 64-bit
    spec = RerunSpec("m", "m", biggest, biggest, 2**31 - 1, 0.012345678, 1024, 1000, "histogram")
    custom_id = spec.custom_id()
    assert len(custom_id) <= 100  # Discord's limit
    back = parse_rerun(custom_id)
    assert back == RerunSpec(
        "m", "m", biggest, biggest, 2**31 - 1, 0.01235, 1024, 1000, "histogram"
    )
    assert parse_rerun("sb:run:x:m:1:2:3:1:4:5:n") is None


def test_buttons_change_what_they_say():
    spec = RerunSpec("a", "r", 0, 0, 42, 1.0, 512, 300, "none")
    assert spec.next_options() == JobOptions(
        strength=1.0, size=512, iterations=300, color="none", seed=None
    )
    more = RerunSpec("m", "r", 0, 0, 42, 1.0, 512, 300, "none").next_options()
    less = RerunSpec("l", "r", 0, 0, 42, 1.0, 512, 300, "none").next_options()
    assert (more.strength, more.seed) == (3.0, 42) and (less.strength, less.seed) == (1 / 3, 42)
    assert RerunSpec("m", "r", 0, 0, 1, 90.0, 512, 300, "none").next_options().strength == 100.0
