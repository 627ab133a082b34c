"""bot/validation.py: which image is which, and every check before queueing."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.validation import (
    Candidate,
    InputProblem,
    check_bytes,
    check_declared_size,
    choose_inputs,
    read_and_check,
)
from engine.jobs import ImageLimits

from .conftest import png

LIMITS = ImageLimits(max_bytes=100_000, max_pixels=50_000)


class FakeAttachment:
    def __init__(self, filename: str, data: bytes, size: int | None = None) -> None:
        self.filename = filename
        self.data = data
        self.size = len(data) if size is None else size
        self.reads = 0

    async def read(self) -> bytes:
        self.reads += 1
        return self.data


def flat(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 100, 50)).save(buf, "PNG")
    return buf.getvalue()


def att(name: str, data: bytes | None = None, **kw) -> FakeAttachment:
    return FakeAttachment(name, png() if data is None else data, **kw)


def test_first_is_the_photo_the_rest_are_styles():
    inputs = choose_inputs([att("a.png"), att("b.png"), att("c.png")], max_styles=3)
    assert inputs.content.label == "the photo (a.png)"
    assert [s.label for s in inputs.styles] == ["style image 1 (b.png)", "style image 2 (c.png)"]
    single = choose_inputs([att("a.png"), att("b.png")], max_styles=3)
    assert single.styles[0].label == "the style image (b.png)"


def test_reply_form_takes_the_photo_from_the_replied_message():
    inputs = choose_inputs([att("style.png")], [att("cat.png"), att("other.png")], max_styles=3)
    assert inputs.content.attachment.filename == "cat.png"
    assert [s.attachment.filename for s in inputs.styles] == ["style.png"]
    with pytest.raises(InputProblem, match="attached no style image"):
        choose_inputs([], [att("cat.png")], max_styles=3)


@pytest.mark.parametrize(
    "count, message",
    [(0, "I need two images"), (1, "only one image (x0.png)"), (5, "I can blend at most 3")],
)
def test_counts(count, message):
    with pytest.raises(InputProblem, match=message.replace("(", r"\(").replace(")", r"\)")):
        choose_inputs([att(f"x{i}.png") for i in range(count)], max_styles=3)


def test_declared_size_is_checked_before_download():
    big = att("big.png", size=250_000)
    with pytest.raises(
        InputProblem, match=r"The photo \(big.png\) is 244.2 KB; the limit is 97.6 KB"
    ):
        check_declared_size(Candidate(big, "the photo (big.png)"), LIMITS)


async def test_read_and_check_refuses_before_downloading_anything():
    photo, style = att("p.png"), att("s.png", size=10**9)
    with pytest.raises(InputProblem, match=r"The style image \(s.png\)"):
        await read_and_check(choose_inputs([photo, style], max_styles=3), LIMITS)
    assert photo.reads == 0 and style.reads == 0


async def test_read_and_check_returns_the_bytes():
    photo, style = att("p.png", png(seed=1)), att("s.png", png(seed=2))
    checked = await read_and_check(choose_inputs([photo, style], max_styles=3), LIMITS)
    assert checked.content == photo.data and checked.styles == (style.data,)
    assert checked.names == ("p.png", "s.png")


@pytest.mark.parametrize(
    "data, message",
    [
        (
            b"hello, this is text and not an image at all\n",
            "is not an image I can read (it looks like text)",
        ),
        (b"%PDF-1.4 blah", "PDF"),
        (png()[:200], "looks like a PNG file but could not be decoded"),
        (flat(300, 200), "300×200"),
        (png(8, 8), "8×8"),
    ],
)
def test_bytes_are_checked_by_content(data, message):
    with pytest.raises(InputProblem, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        check_bytes("the style image (thing.png)", data, LIMITS)
    assert str(info.value).startswith("The style image (thing.png)")


def test_a_png_called_jpg_is_fine():
    assert check_bytes("the photo (cat.jpg)", png(), LIMITS).format == "png"
