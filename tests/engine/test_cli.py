"""`python -m engine` end to end on tiny inputs, including its error exits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.__main__ import EXIT_BAD_INPUT, EXIT_WEIGHTS, main, parse_layers
from tests.engine.conftest import smooth_photo, stripes_texture

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--size", "40", "--iterations", "3", "--weights", "random", "--seed", "1", "--quiet"]


@pytest.fixture
def inputs(tmp_path):
    photo, style = tmp_path / "a.png", tmp_path / "b.jpg"
    Image.fromarray(smooth_photo().astype(np.uint8)).save(photo)
    Image.fromarray(stripes_texture().astype(np.uint8)).save(style, "JPEG")
    return photo, style


def test_done_when_command_writes_a_64px_png(inputs, tmp_path):
    """The issue's acceptance command, as a user types it (a real subprocess)."""
    photo, style = inputs
    out = tmp_path / "out.png"
    run = subprocess.run(
        [sys.executable, "-m", "engine", str(photo), str(style), "-o", str(out), "--size", "64",
         "--iterations", "5", "--weights", "random", "--seed", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "NOT art" in run.stderr  # random weights are announced loudly
    with Image.open(out) as im:
        assert im.format == "PNG" and max(im.size) == 64 and im.size == (64, 48)


def test_text_file_as_style_exits_nonzero_naming_it(inputs, tmp_path, capsys):
    photo, _ = inputs
    notes = tmp_path / "notes.txt"
    notes.write_text("not a painting")
    code = main([str(photo), str(notes), "-o", str(tmp_path / "o.png"), *FAST])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert "notes.txt" in err and err.count("\n") == 1  # one line
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("fmt,ext", [("JPEG", ".jpg"), ("WEBP", ".webp"), ("PNG", ".png")])
def test_output_format_follows_the_extension(inputs, tmp_path, fmt, ext):
    photo, style = inputs
    out = tmp_path / f"o{ext}"
    assert main([str(photo), str(style), "-o", str(out), *FAST]) == 0
    with Image.open(out) as im:
        assert im.format == fmt and max(im.size) == 40


def test_options_reach_the_engine(inputs, tmp_path):
    photo, style = inputs
    out = tmp_path / "o.png"
    code = main([str(photo), str(style), str(style), "-o", str(out), *FAST, "--style-blend", "0.3,0.7",
                 "--color", "luminance", "--init", "blend", "--noise-ratio", "0.3", "--optimizer", "adam",
                 "--learning-rate", "3", "--style-layers", "conv1_1:1,conv3_1:0.5",
                 "--content-layers", "conv3_2", "--pooling", "max", "--style-scale", "0.8",
                 "--tv-weight", "0.01", "--style-strength", "500", "--preset", "photo"])
    assert code == 0 and out.exists()


@pytest.mark.parametrize("argv_tail,needle", [
    (["--size", "4"], "size must be at least 16"),
    (["--style-layers", "conv9_9"], "unknown layer 'conv9_9'"),
    (["--style-blend", "1,2,3"], "3 style blend weights"),
])
def test_bad_options_exit_with_one_line(inputs, tmp_path, capsys, argv_tail, needle):
    photo, style = inputs
    code = main([str(photo), str(style), "-o", str(tmp_path / "o.png"), *FAST, *argv_tail])
    assert code != 0
    assert needle in capsys.readouterr().err


def test_missing_input_and_bad_output_folder(inputs, tmp_path, capsys):
    photo, style = inputs
    assert main([str(tmp_path / "nope.png"), str(style), "-o", str(tmp_path / "o.png"), *FAST]) == EXIT_BAD_INPUT
    assert "nope.png" in capsys.readouterr().err
    assert main([str(photo), str(style), "-o", str(tmp_path / "no" / "o.png"), *FAST]) == EXIT_BAD_INPUT
    assert "does not exist" in capsys.readouterr().err
    assert main([str(photo), str(style), "-o", str(tmp_path / "o.tif"), *FAST]) == EXIT_BAD_INPUT
    assert "extension" in capsys.readouterr().err


def test_weights_problem_exits_with_the_fix(inputs, tmp_path, capsys):
    photo, style = inputs
    bogus = tmp_path / "vgg.h5"
    bogus.write_bytes(b"garbage")
    code = main([str(photo), str(style), "-o", str(tmp_path / "o.png"), "--weights", str(bogus), "--quiet"])
    assert code == EXIT_WEIGHTS
    assert "vgg.h5" in capsys.readouterr().err


def test_parse_layers():
    assert parse_layers("conv1_1:1,conv2_1:0.5") == (("conv1_1", 1.0), ("conv2_1", 0.5))
    assert parse_layers("conv4_2") == (("conv4_2", 1.0),)


def test_network_option_runs_vgg16(inputs, tmp_path, capsys):
    photo, style = inputs
    out = tmp_path / "o16.png"
    assert main([str(photo), str(style), "-o", str(out), *FAST, "--network", "vgg16",
                 "--style-layers", "conv5_3,conv3_3"]) == 0
    assert "RANDOM VGG-16" in capsys.readouterr().err and out.exists()
    assert main([str(photo), str(style), "-o", str(out), *FAST, "--network", "vgg16",
                 "--style-layers", "conv3_4"]) == EXIT_BAD_INPUT
    assert "unknown layer 'conv3_4' for VGG-16" in capsys.readouterr().err


def test_animated_gif_in_animated_gif_out_with_its_timing(inputs, tmp_path):
    from tests.engine.test_animation import gif, moving_square, timing

    _, style = inputs
    clip, out = tmp_path / "in.gif", tmp_path / "out.gif"
    clip.write_bytes(gif(moving_square(4), [70, 120, 70, 120], loop=2))
    assert main([str(clip), str(style), "-o", str(out), *FAST, "--size", "48"]) == 0
    assert timing(out.read_bytes()) == ("GIF", [70, 120, 70, 120], 2)
    # An animation is not written to a still format.
    assert main([str(clip), str(style), "-o", str(tmp_path / "x.png"), *FAST]) == EXIT_BAD_INPUT
