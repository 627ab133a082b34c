"""engine.images: every input is generated here, in memory, with Pillow or by hand."""

from __future__ import annotations

import contextlib
import io
import resource
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from engine.errors import InputError
from engine.images import (
    MIN_SIDE,
    CorruptImage,
    FileTooLarge,
    ImageError,
    ImageTooSmall,
    NotAnImage,
    TooManyPixels,
    UnreadableFile,
    UnsupportedFormat,
    encode_image,
    fit_longest,
    load_image,
    preview_png,
    probe,
    read_image_file,
    resize_alpha,
    resize_longest,
    resize_to,
    sniff_format,
    to_uint8,
)
from engine.jobs import ImageLimits

LIMITS = ImageLimits()


# --- helpers -------------------------------------------------------------------------


def gradient(h: int = 24, w: int = 32) -> np.ndarray:
    """A smooth uint8 RGB image (lossy codecs reproduce it closely)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 128)], axis=-1).astype(
        np.uint8
    )


def noise(h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    """Incompressible pixels, so a file cut in half really misses image data."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(image: Image.Image | np.ndarray, fmt: str, **options) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def png_chunk(tag: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + tag
        + payload
        + struct.pack(">I", zlib.crc32(tag + payload))
    )


def hand_png(width: int, height: int, bit_depth: int, color_type: int, idat: bytes) -> bytes:
    """A PNG built byte by byte, for what Pillow won't write (16-bit RGB, bombs)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def png_rows(rows: np.ndarray) -> bytes:
    """Filter type 0 before every row, then deflate."""
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    return zlib.compress(raw)


# --- formats and detection by content ------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "options", "tolerance"),
    [
        ("PNG", {}, 0),
        ("BMP", {}, 0),
        ("WEBP", {"lossless": True}, 0),
        ("JPEG", {"quality": 95}, 8),
        ("GIF", {}, 24),  # 256-colour palette quantisation
    ],
)
def test_decodes_each_supported_format(fmt, options, tolerance):
    pixels = gradient()
    loaded = load_image(save(pixels, fmt, **options), name="the photo", limits=LIMITS)
    assert loaded.format == fmt.lower()
    assert loaded.rgb.dtype == np.float32 and loaded.rgb.shape == (24, 32, 3)
    assert loaded.alpha is None
    assert np.abs(loaded.rgb - pixels).max() <= tolerance


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_image_uses_first_frame(fmt):
    frames = [Image.new("RGB", (32, 24), colour) for colour in ("red", "lime", "blue")]
    data = save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)
    info = probe(data, name="the style", limits=LIMITS)
    assert info.n_frames == 3
    loaded = load_image(data, name="the style", limits=LIMITS)
    np.testing.assert_allclose(loaded.rgb[12, 16], [255, 0, 0], atol=4)


def test_detects_type_by_content_not_name():
    data = save(gradient(), "PNG")
    assert sniff_format(data) == "png"
    assert load_image(data, name="cat.jpg", limits=LIMITS).format == "png"


def test_text_file_named_png_is_not_an_image():
    with pytest.raises(NotAnImage) as err:
        load_image(b"hello, this is my essay\n" * 20, name="essay.png", limits=LIMITS)
    message = str(err.value)
    assert "essay.png" in message and "text" in message
    assert "PNG, JPEG, WebP, GIF or BMP" in message
    assert err.value.subject == "essay.png"
    assert isinstance(err.value, InputError)


@pytest.mark.parametrize(
    ("data", "error", "mentions"),
    [
        (save(gradient(), "TIFF"), UnsupportedFormat, "TIFF"),
        (
            b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
            UnsupportedFormat,
            "SVG",
        ),
        (b"\x00\x00\x00\x1cftypheic" + b"\x00" * 40, UnsupportedFormat, "HEIC"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + b"1 0 obj\n" * 10, NotAnImage, "PDF"),
        (b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 40, NotAnImage, "video"),
        (bytes(range(256)) * 4, NotAnImage, "image"),
        (b"BM is a great band", NotAnImage, "text"),  # "BM" alone is not a bitmap
    ],
)
def test_other_files_are_refused_with_a_named_reason(data, error, mentions):
    with pytest.raises(error) as err:
        probe(data, name="upload.dat", limits=LIMITS)
    assert mentions in str(err.value) and "upload.dat" in str(err.value)


def test_empty_bytes():
    with pytest.raises(NotAnImage, match="empty"):
        probe(b"", name="the photo", limits=LIMITS)


# --- orientation, modes, alpha -------------------------------------------------------


def test_exif_orientation_is_applied():
    # Stored 40 wide x 20 tall with a red block in the stored top-left corner.
    # Orientation 6 = "rotate 90° clockwise to display": the result is 20 x 40
    # and the stored top-left corner lands at the top-right.
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[...] = (0, 0, 255)
    stored[:8, :8] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = save(stored, "JPEG", quality=95, exif=exif.tobytes())
    loaded = load_image(data, name="the photo", limits=LIMITS)
    assert loaded.info.width == 40 and loaded.info.height == 20  # as stored
    assert loaded.rgb.shape == (40, 20, 3)
    np.testing.assert_allclose(loaded.rgb[2, -3], [255, 0, 0], atol=30)
    np.testing.assert_allclose(loaded.rgb[2, 2], [0, 0, 255], atol=30)
    np.testing.assert_allclose(loaded.rgb[-3, -3], [0, 0, 255], atol=30)


def test_greyscale_is_replicated_to_rgb():
    grey = gradient()[..., 0]
    loaded = load_image(save(Image.fromarray(grey, "L"), "PNG"), name="g", limits=LIMITS)
    assert loaded.info.mode == "L"
    for c in range(3):
        np.testing.assert_array_equal(loaded.rgb[..., c], grey)


def test_greyscale_with_alpha():
    grey = np.full((20, 20), 100, np.uint8)
    alpha = np.zeros((20, 20), np.uint8)
    alpha[:, 10:] = 255
    data = save(Image.merge("LA", [Image.fromarray(grey), Image.fromarray(alpha)]), "PNG")
    loaded = load_image(data, name="g", limits=LIMITS)
    np.testing.assert_array_equal(loaded.alpha[:, 10:], 1.0)
    np.testing.assert_array_equal(loaded.alpha[:, :10], 0.0)
    np.testing.assert_array_equal(loaded.rgb[:, 10:], 100.0)
    np.testing.assert_array_equal(loaded.rgb[:, :10], 255.0)  # composited onto white


def palette_image() -> Image.Image:
    """Left half index 0 (red), right half index 1 (blue)."""
    image = Image.new("P", (20, 20), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (10, 0, 20, 20))
    return image


def test_palette_without_transparency():
    loaded = load_image(save(palette_image(), "PNG"), name="p", limits=LIMITS)
    assert loaded.info.mode == "P" and loaded.alpha is None
    np.testing.assert_array_equal(loaded.rgb[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(loaded.rgb[0, 15], [0, 0, 255])


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency(fmt):
    loaded = load_image(save(palette_image(), fmt, transparency=0), name="p", limits=LIMITS)
    assert loaded.alpha is not None
    assert loaded.alpha[0, 0] == 0.0 and loaded.alpha[0, 15] == 1.0
    np.testing.assert_array_equal(loaded.rgb[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(loaded.rgb[0, 15], [0, 0, 255])


def test_cmyk_jpeg():
    data = save(Image.new("CMYK", (32, 24), (0, 255, 255, 0)), "JPEG", quality=95)
    loaded = load_image(data, name="print.jpg", limits=LIMITS)
    assert loaded.info.mode == "CMYK"
    np.testing.assert_allclose(loaded.rgb[12, 16], [255, 0, 0], atol=4)


def test_16_bit_greyscale_png_is_scaled_not_clipped():
    # Pillow's own convert("RGB") would clip 32768 to 255.
    row = np.array([0, 32768, 65535, 257] * 8, dtype=np.uint16)
    data = save(Image.fromarray(np.tile(row, (20, 1))), "PNG")
    loaded = load_image(data, name="scan.png", limits=LIMITS)
    assert loaded.info.mode.startswith("I")
    np.testing.assert_allclose(loaded.rgb[0, :4, 0], [0, 32768 / 257, 255, 1], atol=1e-3)
    assert abs(loaded.rgb[0, 1, 0] - 128) < 0.5
    np.testing.assert_array_equal(loaded.rgb[..., 0], loaded.rgb[..., 2])


def test_16_bit_rgb_png():
    pixels = np.zeros((20, 20, 3), dtype=">u2")
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 65535, 32768, 0
    loaded = load_image(hand_png(20, 20, 16, 2, png_rows(pixels)), name="raw.png", limits=LIMITS)
    np.testing.assert_allclose(loaded.rgb[5, 5], [255, 128, 0], atol=1)


def test_16_bit_rgba_png_keeps_alpha():
    pixels = np.zeros((20, 20, 4), dtype=">u2")
    pixels[...] = (65535, 0, 0, 32768)
    loaded = load_image(hand_png(20, 20, 16, 6, png_rows(pixels)), name="raw.png", limits=LIMITS)
    assert loaded.alpha is not None
    assert abs(loaded.alpha[0, 0] - 0.5) < 0.01
    np.testing.assert_allclose(loaded.rgb[0, 0], [255, 127.5, 127.5], atol=1.5)  # red over white


def test_rgba_alpha_is_kept_and_restored_in_png():
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., :3] = gradient(20, 30)
    rgba[..., 3] = np.linspace(0, 255, 30).astype(np.uint8)[None, :]
    loaded = load_image(save(rgba, "PNG"), name="sticker.png", limits=LIMITS)
    np.testing.assert_allclose(loaded.alpha, rgba[..., 3] / 255.0, atol=1e-6)
    opaque = rgba[..., 3] == 255
    np.testing.assert_array_equal(loaded.rgb[opaque], rgba[..., :3][opaque])

    out = Image.open(io.BytesIO(encode_image(loaded.rgb, format="png", alpha=loaded.alpha)))
    assert out.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(out)[..., 3], rgba[..., 3])


def test_opaque_rgba_has_no_alpha():
    rgba = np.dstack([gradient(), np.full((24, 32), 255, np.uint8)])
    assert load_image(save(rgba, "PNG"), name="x", limits=LIMITS).alpha is None


# --- limits --------------------------------------------------------------------------


def test_too_many_bytes_is_checked_first():
    limits = ImageLimits(max_bytes=10 * 1024 * 1024)
    data = b"\x00" * int(14.2 * 1024 * 1024)  # not even an image: size wins
    with pytest.raises(FileTooLarge) as err:
        probe(data, name="the photo", limits=limits)
    assert str(err.value).startswith("The photo is 14.2 MB; the limit is 10 MB.")
    assert err.value.subject == "the photo"


def test_size_just_over_the_limit_never_reads_as_equal():
    with pytest.raises(FileTooLarge, match="is 10.1 MB; the limit is 10 MB"):
        probe(b"\x00" * (10 * 1024 * 1024 + 1), name="x", limits=LIMITS)


def test_too_many_pixels_from_the_header():
    # Only the header is valid: pixels must be refused without decoding.
    data = hand_png(12000, 9000, 8, 0, b"")
    with pytest.raises(TooManyPixels) as err:
        probe(data, name="style image 2", limits=LIMITS)
    message = str(err.value)
    assert message.startswith(
        "Style image 2 is 12000×9000 = 108 megapixels; the limit is 25 megapixels."
    )
    assert "resize it to at most 5773×4330" in message
    assert LIMITS.max_pixels >= 5773 * 4330


@pytest.fixture(scope="module")
def png_bomb() -> bytes:
    """20000 x 20000 1-bit zeros: 400 megapixels in ~50 KB (zlib's ~1000:1 limit)."""
    rows_per_piece = 1000
    row = b"\x00" + b"\x00" * (20000 // 8)
    deflate = zlib.compressobj(9)
    pieces = [deflate.compress(row * rows_per_piece) for _ in range(20000 // rows_per_piece)]
    return hand_png(20000, 20000, 1, 0, b"".join(pieces) + deflate.flush())


@pytest.mark.parametrize("entry", [probe, load_image])
def test_decompression_bomb_is_refused_before_decoding(png_bomb, entry):
    assert len(png_bomb) < 100_000
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(TooManyPixels, match="20000×20000 = 400 megapixels"):
        entry(png_bomb, name="the photo", limits=LIMITS)
    assert time.perf_counter() - started < 1.0
    # Decoding would need 400 MB (8-bit) to 4.8 GB (float RGB); the peak must not move much.
    grew_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert grew_kib < 50 * 1024


def gif_with_frame_larger_than_canvas() -> bytes:
    """A 16 x 16 GIF canvas whose first frame is 40 x 40: Pillow grows the canvas
    and runs its own decompression-bomb check there, not via Image.open."""
    lzw = bytes([2, 2, 0x4C, 0x01, 0x00])  # min code size 2; one tiny sub-block; end
    return (
        b"GIF89a"
        + struct.pack("<HHBBB", 16, 16, 0x80, 0, 0)
        + b"\x00\x00\x00\xff\xff\xff"
        + b"\x2c"
        + struct.pack("<HHHHB", 0, 0, 40, 40, 0)
        + lzw
        + b"\x3b"
    )


def test_pillow_bomb_error_is_mapped(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 1600 px > 2 x 500: error
    with pytest.raises(
        TooManyPixels,
        match="anim.gif is 1600 pixels, too large to open safely; the limit is 500 pixels",
    ):
        probe(gif_with_frame_larger_than_canvas(), name="anim.gif", limits=LIMITS)


def test_pillow_bomb_warning_as_error_is_mapped(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1600 px: only a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TooManyPixels, match="anim.gif"):
            probe(gif_with_frame_larger_than_canvas(), name="anim.gif", limits=LIMITS)


def test_tiny_image_is_too_small():
    with pytest.raises(ImageTooSmall) as err:
        probe(save(gradient(4, 4), "PNG"), name="the photo", limits=LIMITS)
    assert "4×4" in str(err.value) and f"{MIN_SIDE} pixels" in str(err.value)


# --- damaged files -------------------------------------------------------------------


def test_truncated_images_stay_refused_by_default():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP"])
def test_truncated_file_is_corrupt(fmt):
    data = save(noise(), fmt)
    with pytest.raises(CorruptImage) as err:
        load_image(data[: len(data) // 2], name="the photo", limits=LIMITS)
    display = {"WEBP": "WebP"}.get(fmt, fmt)
    assert str(err.value).startswith(f"The photo looks like a {display} file")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP"])
def test_mangled_files_raise_only_image_errors(fmt):
    """Whatever Pillow's parsers throw on garbage, callers see an ImageError or an image."""
    original = save(noise(32, 32), fmt)
    rng = np.random.default_rng(1)
    for _ in range(25):
        data = bytearray(original)
        for pos in rng.integers(0, len(data), 4):
            data[pos] = int(rng.integers(0, 256))
        with contextlib.suppress(ImageError):
            load_image(bytes(data), name="x", limits=ImageLimits(max_pixels=4_000_000))


# --- files on disk -------------------------------------------------------------------


def test_read_image_file(tmp_path):
    path = tmp_path / "photo.webp"
    path.write_bytes(save(gradient(), "PNG"))  # wrong extension on purpose
    loaded = read_image_file(path, limits=LIMITS)
    assert loaded.format == "png" and loaded.rgb.shape == (24, 32, 3)


def test_read_image_file_problems_name_the_path(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(UnreadableFile, match="nope.png"):
        read_image_file(missing, limits=LIMITS)
    with pytest.raises(UnreadableFile, match="folder"):
        read_image_file(tmp_path, limits=LIMITS)
    with pytest.raises(UnreadableFile, match=r"^Style image 2 \('.*nope\.png'\) was not found"):
        read_image_file(missing, name="style image 2", limits=LIMITS)
    big = tmp_path / "big.png"
    big.write_bytes(b"\x00" * 3000)
    with pytest.raises(FileTooLarge, match=r"big\.png.*2 KB"):
        read_image_file(big, limits=ImageLimits(max_bytes=2048))


# --- resizing and encoding -----------------------------------------------------------


def test_fit_longest_keeps_aspect_and_at_least_one_pixel():
    assert fit_longest(300, 400, 200) == (150, 200)
    assert fit_longest(400, 300, 200) == (200, 150)
    assert fit_longest(10, 1000, 50) == (1, 50)


def test_resize_longest_and_resize_to():
    rgb = gradient(60, 80).astype(np.float32)
    small = resize_longest(rgb, 40)
    assert small.shape == (30, 40, 3) and small.dtype == np.float32
    assert resize_to(rgb, (13, 7)).shape == (13, 7, 3)
    flat = np.full((50, 70, 3), 42.5, np.float32)
    np.testing.assert_allclose(resize_longest(flat, 20), 42.5, atol=1e-3)  # no quantisation
    assert resize_longest(rgb, 160).shape == (120, 160, 3)  # upscales too


def test_resize_alpha_stays_in_range():
    alpha = np.zeros((40, 40), np.float32)
    alpha[:, 20:] = 1.0  # a hard edge makes Lanczos ring
    resized = resize_alpha(alpha, (17, 17))
    assert resized.shape == (17, 17) and resized.min() >= 0.0 and resized.max() <= 1.0


def test_to_uint8_rounds_clips_and_survives_nan():
    x = np.array([[[np.nan, -5.0, 254.6], [300.0, np.inf, -np.inf]]], np.float32)
    np.testing.assert_array_equal(to_uint8(x), [[[0, 0, 255], [255, 255, 0]]])


@pytest.mark.parametrize(("fmt", "tolerance"), [("png", 0), ("jpeg", 10), ("webp", 12)])
def test_encode_round_trip(fmt, tolerance):
    rgb = gradient(48, 64).astype(np.float32)
    data = encode_image(rgb, format=fmt, quality=95)
    loaded = load_image(data, name="out", limits=LIMITS)
    assert loaded.format == fmt and loaded.rgb.shape == rgb.shape
    assert np.abs(loaded.rgb - rgb).mean() <= tolerance / 4
    assert np.abs(loaded.rgb - rgb).max() <= tolerance * 3 + (0 if fmt == "png" else 10)


def test_webp_keeps_alpha_and_jpeg_composites_onto_white():
    rgb = np.zeros((32, 32, 3), np.float32)  # black
    alpha = np.ones((16, 16), np.float32)  # smaller than the image: resized
    alpha[:, :8] = 0.0
    webp = Image.open(io.BytesIO(encode_image(rgb, format="webp", alpha=alpha)))
    assert webp.mode == "RGBA"
    assert np.asarray(webp)[16, 2, 3] < 10 and np.asarray(webp)[16, 29, 3] > 245
    jpeg = np.asarray(Image.open(io.BytesIO(encode_image(rgb, format="jpeg", alpha=alpha))))
    assert jpeg.shape == (32, 32, 3)
    assert jpeg[16, 2].min() > 240 and jpeg[16, 29].max() < 15


def test_encode_rejects_unknown_format():
    with pytest.raises(ValueError, match="png, jpeg or webp"):
        encode_image(np.zeros((4, 4, 3), np.float32), format="tiff")


def test_preview_png_is_small_and_not_upscaled():
    big = Image.open(io.BytesIO(preview_png(gradient(300, 400).astype(np.float32), 128)))
    assert big.format == "PNG" and big.size == (128, 96)
    small = Image.open(io.BytesIO(preview_png(gradient(30, 40).astype(np.float32), 128)))
    assert small.size == (40, 30)
