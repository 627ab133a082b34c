"""Image bytes <-> float arrays: type detection, limits, modes, EXIF, alpha, encoding.

Used in two places: the bot calls `probe` on every attachment before anything is
queued (cheap: header only), and the engine calls `load_image` / `encode_image`.
So this module imports Pillow and NumPy but never TensorFlow.

Conventions: colour images are float32 arrays H x W x 3 on the 0..255 scale;
alpha is float32 H x W on 0..1. Every problem with a user's file is raised as an
`ImageError` whose message is written for that user: it names the image, says
what is wrong (with numbers) and what to do about it.
"""

from __future__ import annotations

import io
import logging
import math
import re
import stat
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageFile,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    WebPImagePlugin,
    features,
)

from engine.errors import InputError
from engine.jobs import ImageLimits

logger = logging.getLogger(__name__)

# VGG-19 pools five times; below ~16 px the deepest style layers see nothing, and
# an image that small is almost always a mistake (an icon, an emoji).
MIN_SIDE = 16

# A progressive JPEG is a series of scans, each a pass over the whole image; ordinary
# ones have about 10 (libjpeg's default script) and rarely more than a few dozen. A
# crafted file repeats scans: 164 KB with thousands of them took 40 s of CPU to decode.
# Counting is cheap (each scan starts with an SOS marker, FF DA, which cannot occur in
# the byte-stuffed entropy-coded data), so such files are refused before decoding.
MAX_JPEG_SCANS = 100

SUPPORTED_FORMATS: tuple[str, ...] = ("png", "jpeg", "webp", "gif", "bmp")
_SUPPORTED_PHRASE = "a PNG, JPEG, WebP, GIF or BMP"
_DISPLAY_NAMES = {"png": "PNG", "jpeg": "JPEG", "webp": "WebP", "gif": "GIF", "bmp": "BMP"}

# Transparent pixels are composited onto white before processing. The colour
# stored under alpha = 0 is arbitrary (often black or leftover junk) and VGG has
# no notion of transparency, so it must be hidden behind *some* background;
# white is how stickers, logos and clip-art are usually seen (Discord's light
# theme, paper, a primed canvas), so the network paints what the user sees.
# The alpha channel itself is kept and restored on output where the format allows.
BACKGROUND = 255.0

_MIB = 1024 * 1024  # Discord says "MB" and means MiB; so do we, so the numbers agree.


# --- errors --------------------------------------------------------------------------


class ImageError(InputError):
    """An image a user sent cannot be used. The message is shown to them as is."""


class NotAnImage(ImageError):
    """Empty, or the contents match no image format at all (text, PDF, video...)."""


class UnsupportedFormat(ImageError):
    """A real image format, but not one we read (TIFF, HEIC, SVG, ...)."""


class FileTooLarge(ImageError):
    """More bytes than `ImageLimits.max_bytes`."""


class TooManyPixels(ImageError):
    """More pixels than `ImageLimits.max_pixels` (checked before decoding)."""


class CorruptImage(ImageError):
    """Recognised, but cut off or damaged so it cannot be decoded."""


class TooManyScans(ImageError):
    """A JPEG with more than MAX_JPEG_SCANS scans (checked from the bytes, before decoding)."""


class ImageTooSmall(ImageError):
    """Under MIN_SIDE pixels on a side."""


class UnreadableFile(ImageError):
    """CLI only: the path is missing, a folder, or not readable."""


# --- data ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageInfo:
    """What the header says. width/height are as stored, before EXIF rotation."""

    format: str  # one of SUPPORTED_FORMATS
    width: int
    height: int
    mode: str  # Pillow's mode as opened ("RGB", "P", "I;16", ...)
    n_frames: int = 1

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous; compare fields yourself
class LoadedImage:
    rgb: np.ndarray  # float32 H x W x 3, 0..255, composited onto BACKGROUND
    alpha: np.ndarray | None  # float32 H x W, 0..1; None when fully opaque
    format: str
    info: ImageInfo

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


# --- message helpers -----------------------------------------------------------------


def _subject(name: str) -> str:
    """`name` at the start of a sentence: "the photo" -> "The photo".

    File names ("cat.png") and quoted paths are left exactly as the user wrote them.
    """
    if not name:
        return "The image"
    if name[0].islower() and " " in name and "." not in name:
        return name[0].upper() + name[1:]
    return name


def _trim(x: float) -> str:
    return f"{x:.1f}".removesuffix(".0")


def _format_bytes(n: int, *, round_up: bool) -> str:
    """Sizes round up and limits round down, so we never say "is 10 MB; the limit is 10 MB"."""
    step = math.ceil if round_up else math.floor
    for unit, scale in (("MB", _MIB), ("KB", 1024)):
        if n >= scale:
            return f"{_trim(step(n / scale * 10) / 10)} {unit}"
    return f"{n} bytes"


def _format_pixels(pixels: int, *, round_up: bool) -> str:
    """ "108 megapixels"; plain pixels below 0.1 MP, where one decimal would read as 0."""
    if pixels < 100_000:
        return f"{pixels} pixels"
    step = math.ceil if round_up else math.floor
    return f"{_trim(step(pixels / 1e5) / 10)} megapixels"


def _fit_within_pixels(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The largest size with the same aspect ratio and at most max_pixels pixels."""
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def _too_large(name: str, size: int, limits: ImageLimits) -> FileTooLarge:
    return FileTooLarge(
        f"{_subject(name)} is {_format_bytes(size, round_up=True)}; the limit is "
        f"{_format_bytes(limits.max_bytes, round_up=False)}. Please send a smaller file "
        "(shrinking it or saving it as a JPEG usually does it) and try again.",
        subject=name,
    )


def _too_many_pixels(name: str, width: int, height: int, max_pixels: int) -> TooManyPixels:
    fit_w, fit_h = _fit_within_pixels(width, height, max_pixels)
    return TooManyPixels(
        f"{_subject(name)} is {width}×{height} = "
        f"{_format_pixels(width * height, round_up=True)}; the limit is "
        f"{_format_pixels(max_pixels, round_up=False)}. "
        f"Please resize it to at most {fit_w}×{fit_h} and try again.",
        subject=name,
    )


def _corrupt(name: str, fmt: str) -> CorruptImage:
    return CorruptImage(
        f"{_subject(name)} looks like a {_DISPLAY_NAMES.get(fmt, fmt)} file but could not be "
        "decoded: it is probably cut off (an interrupted upload or download) or damaged. "
        "Please save or export it again and resend it.",
        subject=name,
    )


# --- detection by content ------------------------------------------------------------

# Formats we do not read but can name, so the user learns what to convert.
# Checked only after the supported signatures have failed.
_UNSUPPORTED_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"8BPS", "Photoshop (PSD)"),
    (b"\x00\x00\x01\x00", "ICO (icon)"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"qoif", "QOI"),
    (b"DDS ", "DDS"),
    (b"\x76\x2f\x31\x01", "OpenEXR"),
    (b"#?RADIANCE", "Radiance HDR"),
)
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
# BMP's "BM" is only two bytes; also require a known DIB header size so that a
# text file starting with "BM" is not mistaken for a damaged bitmap.
_BMP_DIB_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}


def sniff_format(data: bytes) -> str | None:
    """The supported format these bytes are, by magic number; None if none.

    File names and Discord's content type are never trusted: a PNG called
    "cat.jpg" is a PNG, and "cat.png" may be anything.
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if (
        data[:2] == b"BM"
        and len(data) >= 18
        and int.from_bytes(data[14:18], "little") in _BMP_DIB_SIZES
    ):
        return "bmp"
    return None


def _describe_unsupported(head: bytes) -> str | None:
    """Name of a known image format we don't read, or None."""
    for signature, label in _UNSUPPORTED_SIGNATURES:
        if head.startswith(signature):
            return label
    if head[4:8] == b"ftyp":  # ISO base media: HEIC/AVIF, but also MP4/MOV videos
        brand = head[8:12]
        if brand in _AVIF_BRANDS:
            return "AVIF"
        if brand in _HEIF_BRANDS:
            return "HEIC"
        return None
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "SVG"
    return None


def _not_an_image_hint(head: bytes) -> str:
    lowered = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if lowered.startswith(b"%pdf"):
        return "it looks like a PDF document"
    if lowered.startswith((b"<!doctype html", b"<html")):
        return "it looks like a web page, not the picture itself"
    if head[4:8] == b"ftyp" or head[:4] == b"\x1a\x45\xdf\xa3":
        return "it looks like a video"
    if b"\x00" not in head and head.decode("utf-8", errors="replace").count("\ufffd") <= 1:
        return "it looks like text"
    return "its contents don't match any image format"


def _unrecognised(name: str, data: bytes) -> ImageError:
    head = data[:1024]
    label = _describe_unsupported(head)
    if label == "SVG":
        return UnsupportedFormat(
            f"{_subject(name)} is an SVG (vector) image, which I can't use. "
            "Please export it as a PNG and try again.",
            subject=name,
        )
    if label is not None:
        return UnsupportedFormat(
            f"{_subject(name)} is a {label} image, which I can't use. Please convert it "
            f"to PNG or JPEG (WebP, GIF and BMP work too) and try again.",
            subject=name,
        )
    return NotAnImage(
        f"{_subject(name)} is not an image I can read ({_not_an_image_hint(head)}). "
        f"Please send {_SUPPORTED_PHRASE}.",
        subject=name,
    )


# --- opening with Pillow ---------------------------------------------------------------

# We open each format with its own plugin class instead of Image.open(). The
# format is already known from the magic bytes, and Image.open() runs Pillow's
# process-wide decompression-bomb check (Image.MAX_IMAGE_PIXELS) first: above
# ~89 MP it only warns, above ~179 MP it raises before we ever learn the width
# and height. Opening the plugin directly lets *our* per-request limit decide,
# with the exact numbers in the message. Pillow's check still runs in a few
# places (e.g. GIF frames larger than the canvas); _pillow_errors maps it.
_OPENERS: dict[str, type[ImageFile.ImageFile]] = {
    "png": PngImagePlugin.PngImageFile,
    "jpeg": JpegImagePlugin.JpegImageFile,  # also reads the first picture of an MPO
    "gif": GifImagePlugin.GifImageFile,
    "webp": WebPImagePlugin.WebPImageFile,
    "bmp": BmpImagePlugin.BmpImageFile,
}

# What Pillow's decoders raise on malformed input. Besides OSError ("image file
# is truncated") and SyntaxError ("not a PNG file"), its header parsers let
# struct/index/key errors through on fuzzed files. MemoryError is not here: that
# is the host's problem, not the user's.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
)

_PILLOW_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


@contextmanager
def _pillow_errors(name: str, fmt: str, limits: ImageLimits) -> Iterator[None]:
    """Turn anything Pillow raises while reading the user's bytes into an ImageError."""
    try:
        yield
    except ImageError:
        raise  # already friendly (ImageError is a ValueError, so test it first)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning is an exception only when warnings are errors (e.g. under
        # `-W error`); either way the user gets our message, not Pillow's.
        match = _PILLOW_BOMB_PIXELS.search(str(exc))
        pixels = int(match.group(1)) if match else 0
        limit = min(limits.max_pixels, Image.MAX_IMAGE_PIXELS or limits.max_pixels)
        raise TooManyPixels(
            f"{_subject(name)} is "
            + (_format_pixels(pixels, round_up=True) if pixels else "very large")
            + ", too large to open safely; the limit is "
            f"{_format_pixels(limit, round_up=False)}. "
            "Please resize it and try again.",
            subject=name,
        ) from exc
    except _DECODE_ERRORS as exc:
        logger.debug("could not decode %s as %s: %r", name, fmt, exc)
        raise _corrupt(name, fmt) from exc


def _check_dimensions(name: str, width: int, height: int, limits: ImageLimits) -> None:
    # Pixels first: a 1 x 10^9 strip is a bomb, not a "too small" image.
    if width * height > limits.max_pixels:
        raise _too_many_pixels(name, width, height, limits.max_pixels)
    if min(width, height) < MIN_SIDE:
        raise ImageTooSmall(
            f"{_subject(name)} is only {width}×{height} pixels; images need at least "
            f"{MIN_SIDE} pixels on each side. Please send a larger image.",
            subject=name,
        )


def jpeg_scan_count(data: bytes) -> int:
    """SOS markers in a JPEG's bytes: its scans (plus those of an embedded EXIF thumbnail)."""
    return data.count(b"\xff\xda")


def _check_scans(name: str, data: bytes) -> None:
    scans = jpeg_scan_count(data)
    if scans > MAX_JPEG_SCANS:
        raise TooManyScans(
            f"{_subject(name)} is a JPEG made of {scans} scans (ordinary ones have about 10), "
            "which would take very long to open. Please save it again as an ordinary JPEG "
            "or a PNG and try again.",
            subject=name,
        )


def _count_frames(im: ImageFile.ImageFile, name: str) -> int:
    """Number of frames, or 1 if the later frames are unreadable.

    We only ever use the first frame, so a damaged tail must not cost the user
    their image; Pillow walks GIF frames to count them, so seek back afterwards.
    """
    try:
        n = int(getattr(im, "n_frames", 1))
    except _DECODE_ERRORS as exc:
        logger.debug("could not count frames of %s: %r", name, exc)
        n = 1
    if im.tell() != 0:
        im.seek(0)
    return n


def _open(data: bytes, *, name: str, limits: ImageLimits) -> tuple[ImageFile.ImageFile, ImageInfo]:
    """Checks and lazily opens `data`; the caller must close the returned image.

    Order matters: byte size before anything, format by content, then the header
    only, so an oversized or bomb image is refused before any pixels are decoded.
    """
    if len(data) > limits.max_bytes:
        raise _too_large(name, len(data), limits)
    if not data:
        raise NotAnImage(
            f"{_subject(name)} is empty (0 bytes). Please send the image again.", subject=name
        )
    fmt = sniff_format(data)
    if fmt is None:
        raise _unrecognised(name, data)
    if fmt == "webp" and not features.check("webp"):
        raise UnsupportedFormat(
            f"{_subject(name)} is a WebP image, but this server cannot read WebP. "
            "Please send a PNG or JPEG instead.",
            subject=name,
        )
    if fmt == "jpeg":
        _check_scans(name, data)
    with _pillow_errors(name, fmt, limits):
        im = _OPENERS[fmt](io.BytesIO(data))  # reads the header only
    try:
        width, height = im.size
        _check_dimensions(name, width, height, limits)
        with _pillow_errors(name, fmt, limits):
            n_frames = _count_frames(im, name)
    except BaseException:
        im.close()
        raise
    return im, ImageInfo(fmt, width, height, im.mode, n_frames)


def probe(data: bytes, *, name: str, limits: ImageLimits) -> ImageInfo:
    """Validate an upload from its header alone: size, type, dimensions.

    Cheap enough for the bot to run on every attachment before queueing.
    Raises an ImageError subclass with a message for the user.
    """
    im, info = _open(data, name=name, limits=limits)
    im.close()
    return info


# --- decoding to arrays --------------------------------------------------------------

_SIXTEEN_BIT_GREY = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None].astype(np.float32), 3, axis=2)


def _to_float_rgb_alpha(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Any decoded Pillow mode -> (rgb 0..255, alpha 0..1 or None), full range kept.

    Pillow's own convert("L"/"RGB") *clips* 16-bit greyscale at 255 (32768 -> 255),
    so those modes are scaled here by 255/65535 instead. 16-bit RGB(A) PNGs need
    nothing: Pillow already opens them as 8-bit RGB(A), keeping the high byte.
    """
    mode = im.mode
    if mode in _SIXTEEN_BIT_GREY:
        # "I" (32-bit) only comes from 16-bit PNGs in older Pillows: same scale.
        grey = np.clip(np.asarray(im, dtype=np.float64), 0, 65535) * (255.0 / 65535.0)
        return _grey_to_rgb(grey), None
    if mode == "F":
        # No supported decoder produces "F"; follow Pillow's 0..255 convention.
        grey = np.clip(np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0), 0, 255)
        return _grey_to_rgb(grey), None
    if im.has_transparency_data:
        # Covers RGBA/LA/PA, and palette or truecolour images with a
        # transparency entry (GIF, PNG tRNS), which convert("RGBA") applies.
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3] / np.float32(255.0)
        return np.ascontiguousarray(rgba[..., :3]), (None if alpha.min() >= 1.0 else alpha)
    # L, 1, P, CMYK, YCbCr, RGBX, ...: Pillow's conversions are exact for 8-bit data.
    return np.asarray(im.convert("RGB"), dtype=np.float32), None


def composite_on_background(
    rgb: np.ndarray, alpha: np.ndarray | None, background: float = BACKGROUND
) -> np.ndarray:
    """Straight-alpha "over" onto a flat background (white by default, see BACKGROUND)."""
    if alpha is None:
        return np.asarray(rgb, dtype=np.float32)
    a = np.asarray(alpha, dtype=np.float32)[..., None]
    return (np.asarray(rgb, dtype=np.float32) * a + np.float32(background) * (1 - a)).astype(
        np.float32
    )


def _exif_transposed(im: Image.Image, name: str) -> Image.Image:
    """Apply the EXIF orientation (phones store portraits sideways plus a tag).

    A damaged EXIF block must not cost the user an image whose pixels decoded
    fine, so on failure we log it and keep the stored orientation.
    """
    try:
        return ImageOps.exif_transpose(im)
    except Exception as exc:  # noqa: BLE001 - EXIF parsing can raise almost anything
        logger.warning("ignoring unreadable EXIF orientation of %s: %r", name, exc)
        return im


def load_image(data: bytes, *, name: str, limits: ImageLimits) -> LoadedImage:
    """Decode an upload to float arrays (first frame, EXIF-rotated, alpha split off).

    Runs every `probe` check first, so a bomb is refused before decoding.
    Truncated files raise CorruptImage: this relies on Pillow's
    ImageFile.LOAD_TRUNCATED_IMAGES staying False (its default; nothing here
    sets it), otherwise Pillow pads a cut-off JPEG with grey instead of failing.
    """
    im, info = _open(data, name=name, limits=limits)
    try:
        with _pillow_errors(name, info.format, limits):
            im.load()
            rgb, alpha = _to_float_rgb_alpha(_exif_transposed(im, name))
    finally:
        im.close()
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        logger.warning(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on: cut-off uploads will not be caught"
        )
    return LoadedImage(
        rgb=composite_on_background(rgb, alpha), alpha=alpha, format=info.format, info=info
    )


# Bytes per pixel of Pillow's decoded image, by mode (RGB is stored as 4 bytes).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 4, "PA": 4, "I;16": 2, "I;16L": 2, "I;16B": 2,
               "I;16N": 2, "I": 4, "F": 4}
_COPY_BYTES = 4  # the one full-size converted copy ("RGB", "RGBA" or "I"), 4 bytes a pixel


def decode_memory_estimate(info: ImageInfo) -> int:
    """Bytes `downscaled_png` may need for this image at most, from its header alone:
    the decoded frame plus one converted copy; everything after is at the job's size."""
    return info.pixels * (_MODE_BYTES.get(info.mode, 4) + _COPY_BYTES)


def downscaled_png(data: bytes, *, name: str, limits: ImageLimits, longest: int) -> bytes:
    """Decode an upload once, as `load_image` would accept it, and return it as an
    8-bit PNG whose longer side is at most `longest` (EXIF rotation applied, the
    photo's transparency kept as alpha, not composited), for the engine to decode
    cheaply instead of the original.

    Leaner than `load_image`: a JPEG is decoded at a reduced DCT scale when that
    still covers `longest` (Pillow's draft), and 8-bit images are shrunk before any
    float conversion, so memory stays near one decoded frame.
    """
    im, info = _open(data, name=name, limits=limits)
    try:
        with _pillow_errors(name, info.format, limits):
            if info.format == "jpeg" and im.mode in ("RGB", "L", "CMYK"):
                w, h = fit_longest(info.height, info.width, longest)[::-1]
                im.draft(im.mode, (w, h))  # at least (w, h): never below what the job needs
            im.load()
            image = _exif_transposed(im, name)
            if image.mode in _SIXTEEN_BIT_GREY or image.mode == "F":
                # Shrunk as one 32-bit plane in Pillow, then scaled like load_image does
                # (a 25 MP 16-bit PNG: 0.3 s, where three float planes took 3.5 s).
                image = image if image.mode == "F" else image.convert("I")
                if max(image.size) > longest:
                    h, w = fit_longest(image.height, image.width, longest)
                    image = image.resize((w, h), Image.Resampling.LANCZOS)
                rgb, _ = _to_float_rgb_alpha(image)
                return encode_image(rgb, format="png")
            mode = "RGBA" if image.has_transparency_data else "RGB"
            image = image if image.mode == mode else image.convert(mode)
            if max(image.size) > longest:
                h, w = fit_longest(image.height, image.width, longest)
                image = image.resize((w, h), Image.Resampling.LANCZOS)  # RGBA: premultiplied
            if image.mode == "RGBA" and image.getchannel("A").getextrema()[0] >= 255:
                image = image.convert("RGB")  # fully opaque: no alpha to carry
            buf = io.BytesIO()
            image.save(buf, "PNG", compress_level=1)  # transport only: speed over size
            return buf.getvalue()
    finally:
        im.close()


def read_image_file(
    path: str | Path, *, name: str | None = None, limits: ImageLimits
) -> LoadedImage:
    """`load_image` for a file on disk (the CLI). Problems with the path are ImageErrors too."""
    path = Path(path)
    label = name or f"'{path}'"
    # Problems with the path itself always show the path, even under a friendly name.
    where = f"'{path}'" if name is None else f"{_subject(name)} ('{path}')"
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise UnreadableFile(
            f"{where} was not found. Check the path and try again.", subject=label
        ) from exc
    except OSError as exc:
        raise UnreadableFile(
            f"{where} could not be read: {exc.strerror or exc}.", subject=label
        ) from exc
    if stat.S_ISDIR(st.st_mode):
        raise UnreadableFile(f"{where} is a folder; name an image file.", subject=label)
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableFile(f"{where} is not a regular file; name an image file.", subject=label)
    if st.st_size > limits.max_bytes:
        raise _too_large(label, st.st_size, limits)
    try:
        with path.open("rb") as f:
            # One byte over the limit is enough to know it's too big, even if
            # the file grew since stat().
            data = f.read(limits.max_bytes + 1)
    except OSError as exc:
        raise UnreadableFile(
            f"{where} could not be read: {exc.strerror or exc}.", subject=label
        ) from exc
    return load_image(data, name=label, limits=limits)


# --- resizing ------------------------------------------------------------------------


def fit_longest(height: int, width: int, longest: int) -> tuple[int, int]:
    """(h, w) scaled so the longer side is `longest`, aspect kept, each side >= 1."""
    if longest < 1:
        raise ValueError(f"longest must be at least 1 (got {longest})")
    scale = longest / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _resize_plane(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    # Pillow's "F" mode resamples float32 data directly: no 8-bit quantisation,
    # and Lanczos widens its kernel when shrinking, so downscales are antialiased.
    height, width = size
    img = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))
    return np.asarray(img.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32)


def shrinking_sizes(height: int, width: int, min_side: int, step: float = 0.85):
    """(h, w), 15 % smaller each time (the aspect kept), until a side would fall below
    `min_side`: the sizes tried, lazily, when a result must fit an upload limit."""
    scale = 1.0
    while True:
        scale *= step
        h, w = round(height * scale), round(width * scale)
        if min(h, w) < min_side:
            return
        yield h, w


def resize_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Lanczos-resize an H x W or H x W x C float array to size = (h, w).

    Not clipped: Lanczos rings slightly past the input's range at hard edges;
    `to_uint8` clips on the way out.
    """
    height, width = size
    if height < 1 or width < 1:
        raise ValueError(f"size must be at least 1x1 (got {size})")
    image = np.asarray(image, dtype=np.float32)
    if image.shape[:2] == (height, width):
        return image.copy()
    if image.ndim == 2:
        return _resize_plane(image, size)
    if image.ndim != 3:
        raise ValueError(f"expected an H x W or H x W x C array (got shape {image.shape})")
    return np.stack([_resize_plane(image[..., c], size) for c in range(image.shape[2])], axis=-1)


def resize_longest(rgb: np.ndarray, longest: int) -> np.ndarray:
    """Resize so the longer side is exactly `longest` (up or down), aspect kept."""
    return resize_to(rgb, fit_longest(rgb.shape[0], rgb.shape[1], longest))


def resize_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an H x W alpha mask; clipped to 0..1 because ringing there is not meaningful."""
    return np.clip(resize_to(alpha, size), 0.0, 1.0)


# --- encoding ------------------------------------------------------------------------


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Round and clip to 0..255 uint8. NaN -> 0, +inf -> 255, -inf -> 0.

    An optimiser that diverged must still produce a (black) image, not a crash.
    """
    a = np.nan_to_num(np.asarray(rgb, dtype=np.float32), nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _output_format(fmt: str) -> str:
    fmt = fmt.lower()
    fmt = "jpeg" if fmt == "jpg" else fmt
    if fmt not in ("png", "jpeg", "webp"):
        raise ValueError(f"output format must be png, jpeg or webp (got {fmt!r})")
    return fmt


def encode_image(
    rgb: np.ndarray,
    *,
    format: str = "png",  # noqa: A002 - matches OUTPUT_FORMATS / JobRequest.output_format
    quality: int = 92,
    alpha: np.ndarray | None = None,
) -> bytes:
    """Encode a float H x W x 3 image (0..255) as PNG, JPEG or WebP bytes.

    `alpha` (H x W, 0..1, any size: it is resized to the image) is restored in
    PNG and WebP. JPEG has no alpha, so the image is composited onto white
    there, the same background it was processed on.
    """
    fmt = _output_format(format)
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be between 1 and 100 (got {quality})")
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 array (got shape {rgb.shape})")
    size = (rgb.shape[0], rgb.shape[1])
    if alpha is not None:
        alpha = np.asarray(alpha, dtype=np.float32)
        if alpha.shape != size:
            alpha = resize_alpha(alpha, size)
        if fmt == "jpeg":
            rgb, alpha = composite_on_background(rgb, np.clip(alpha, 0, 1)), None
    pixels = to_uint8(rgb)
    if alpha is not None:
        pixels = np.dstack([pixels, to_uint8(alpha * 255.0)])
    buf = io.BytesIO()
    img = Image.fromarray(pixels)  # mode RGB or RGBA, inferred from the shape
    if fmt == "png":
        # optimize=True tries every filter and is several times slower for ~5 %.
        img.save(buf, "PNG", optimize=False, compress_level=6)
    elif fmt == "jpeg":
        img.save(buf, "JPEG", quality=quality, subsampling="4:2:0", optimize=False)
    else:
        img.save(buf, "WEBP", quality=quality, method=4)
    return buf.getvalue()


def preview_png(rgb: np.ndarray, longest: int) -> bytes:
    """A small PNG for progress messages; never upscaled."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if max(rgb.shape[0], rgb.shape[1]) > longest:
        rgb = resize_longest(rgb, longest)
    return encode_image(rgb, format="png")
