"""engine.images for the bot's decoders (issue 11): scans counted from the bytes, the
downscaled PNG the engine decodes instead of the original, and the memory estimate."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.images import (
    MAX_JPEG_SCANS,
    TooManyScans,
    decode_memory_estimate,
    downscaled_png,
    jpeg_scan_count,
    load_image,
    probe,
    resize_longest,
)
from engine.jobs import ImageLimits

LIMITS = ImageLimits()


def photo(h: int = 300, w: int = 400) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack(
        [x * 255 // (w - 1), y * 255 // (h - 1), 128 + 60 * np.sin(x / 9.0)], axis=-1
    ).astype(np.uint8)


def save(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def with_scans(scans: int) -> bytes:
    """A progressive JPEG with its last scan (SOS segment and data) repeated."""
    data = save(Image.fromarray(photo(64, 64)), "JPEG", progressive=True)
    last = data.rindex(b"\xff\xda")
    scan = data[last:-2]  # to the EOI marker
    return data[:-2] + scan * (scans - jpeg_scan_count(data)) + b"\xff\xd9"


def test_scans_are_counted_and_too_many_are_refused_before_decoding():
    assert jpeg_scan_count(save(Image.fromarray(photo()), "JPEG")) == 1
    assert 5 <= jpeg_scan_count(save(Image.fromarray(photo()), "JPEG", progressive=True)) <= 20
    load_image(with_scans(MAX_JPEG_SCANS), name="x", limits=LIMITS)
    with pytest.raises(TooManyScans, match=r"the photo \(a.jpg\) is a JPEG made of 5000 scans"):
        probe(with_scans(5000), name="the photo (a.jpg)", limits=LIMITS)


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "CMYK", "I;16"])
def test_downscaled_png_matches_the_engines_own_decode_and_resize(mode):
    rgb = photo()
    if mode == "I;16":
        image = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    else:
        image = Image.fromarray(rgb).convert(mode)
    data = save(image, "JPEG" if mode in ("RGB", "CMYK") else "PNG", quality=95)
    small = load_image(downscaled_png(data, name="x", limits=LIMITS, longest=100), name="x",
                       limits=LIMITS)  # fmt: skip
    expected = resize_longest(load_image(data, name="x", limits=LIMITS).rgb, 100)
    assert small.format == "png" and small.rgb.shape == expected.shape == (75, 100, 3)
    assert float(np.abs(small.rgb - expected).mean()) < 2.0


def test_downscaled_png_keeps_alpha_uncomposited_and_applies_exif():
    rgba = np.dstack([photo(), np.full((300, 400), 128, np.uint8)])
    small = load_image(downscaled_png(save(Image.fromarray(rgba), "PNG"), name="x",
                                      limits=LIMITS, longest=100), name="x", limits=LIMITS)  # fmt: skip
    original = load_image(save(Image.fromarray(rgba), "PNG"), name="x", limits=LIMITS)
    assert small.alpha is not None and abs(float(small.alpha.mean()) - 128 / 255) < 0.01
    # Composited once, by the engine: the same as compositing the full-size original.
    assert abs(float(small.rgb.mean()) - float(original.rgb.mean())) < 1.0
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90° clockwise to show
    data = save(Image.fromarray(photo()), "JPEG", exif=exif.tobytes())
    assert Image.open(io.BytesIO(downscaled_png(data, name="x", limits=LIMITS, longest=100))).size == (75, 100)


def test_small_images_are_not_upscaled():
    data = save(Image.fromarray(photo(30, 40)), "PNG")
    assert Image.open(io.BytesIO(downscaled_png(data, name="x", limits=LIMITS, longest=512))).size == (40, 30)


def test_memory_estimate_from_the_header():
    rgb = probe(save(Image.new("RGB", (1000, 500)), "PNG"), name="x", limits=LIMITS)
    grey16 = probe(save(Image.new("I;16", (1000, 500)), "PNG"), name="x", limits=LIMITS)
    assert decode_memory_estimate(rgb) == 1000 * 500 * 8  # decoded frame + one copy
    assert decode_memory_estimate(grey16) == 1000 * 500 * 6  # 16-bit frame + a 32-bit copy
