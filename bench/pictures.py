"""The two default images, made deterministically (a fresh clone has no sample images).

`photo()`: a landscape-like scene -- sky gradient, a soft sun, hazy hills, a house
with hard edges, a tree, a textured field, 1/f grain -- with the smooth regions,
edges and colour statistics of a photograph.
`texture()`: a painting-like texture -- thick, oriented, strongly coloured brush
strokes following a swirling flow field, over a toned canvas.
Both are RGB float32 0..255, square, drawn at 2x and downsampled (antialiased).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DEFAULT_SIDE = 640  # larger than any benchmark size: the engine always downsamples, as with photos


def _pink_noise(side: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-std noise with a 1/f amplitude spectrum (like natural images)."""
    f = np.hypot(np.fft.fftfreq(side)[:, None], np.fft.fftfreq(side)[None, :])
    amplitude = 1.0 / np.maximum(f, 1.0 / side)
    noise = np.real(np.fft.ifft2(amplitude * np.exp(2j * np.pi * rng.random((side, side)))))
    return ((noise - noise.mean()) / noise.std()).astype(np.float32)


def _downsample(img: Image.Image, side: int) -> np.ndarray:
    return np.asarray(img.resize((side, side), Image.Resampling.LANCZOS), dtype=np.float32)


def photo(side: int = DEFAULT_SIDE, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    big = 2 * side
    y, x = np.mgrid[0:big, 0:big].astype(np.float32) / big
    # Sky: deep blue at the top to a pale, warm haze at the horizon.
    horizon = 0.55
    t = np.clip(y / horizon, 0, 1)[..., None]
    sky = (1 - t) * np.array([40, 90, 170], np.float32) + t * np.array([215, 200, 185], np.float32)
    # A soft sun.
    d = np.hypot(x - 0.72, y - 0.22)
    sun = np.exp(-((d / 0.05) ** 2))[..., None] * np.array([50, 45, 20], np.float32)
    glow = np.exp(-((d / 0.25) ** 2))[..., None] * np.array([30, 20, 0], np.float32)
    rgb = sky + sun + glow
    # Two ranges of hills, the far one hazier (aerial perspective).
    for base, amp, freq, phase, colour in ((0.50, 0.05, 7.0, 0.3, (110, 130, 150)),
                                           (0.60, 0.07, 4.0, 1.9, (70, 105, 60))):
        ridge = base - amp * (np.sin(freq * x + phase) + 0.5 * np.sin(2.7 * freq * x + 2 * phase))
        mask = (y > ridge)[..., None]
        shade = 1.0 - 0.35 * np.clip((y - ridge) / 0.4, 0, 1)[..., None]
        rgb = np.where(mask, np.array(colour, np.float32) * shade, rgb)
    # Field: green-brown, darker towards the viewer, with coarse texture.
    field_mask = (y > 0.68)[..., None]
    field = (np.array([120, 125, 60], np.float32) * (1.1 - 0.5 * ((y - 0.68) / 0.32))[..., None])
    rgb = np.where(field_mask, field, rgb)
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    # A house: walls, a roof, windows and a door (hard edges).
    s = big / 100.0
    draw.rectangle([20 * s, 60 * s, 42 * s, 78 * s], fill=(205, 190, 160))
    draw.rectangle([42 * s, 60 * s, 50 * s, 78 * s], fill=(150, 135, 110))  # the wall in shade
    draw.polygon([(18 * s, 61 * s), (31 * s, 50 * s), (44 * s, 61 * s)], fill=(140, 50, 40))
    draw.polygon([(44 * s, 61 * s), (31 * s, 50 * s), (40 * s, 50 * s), (52 * s, 61 * s)], fill=(105, 35, 30))
    for wx in (23, 35):
        draw.rectangle([wx * s, 64 * s, (wx + 4) * s, 68 * s], fill=(60, 80, 100))
        draw.line([(wx + 2) * s, 64 * s, (wx + 2) * s, 68 * s], fill=(230, 230, 220), width=max(1, int(s / 2)))
    draw.rectangle([29 * s, 70 * s, 33 * s, 78 * s], fill=(90, 60, 40))
    # A tree: a trunk and a crown of overlapping discs in several greens.
    draw.rectangle([66 * s, 62 * s, 69 * s, 80 * s], fill=(80, 55, 35))
    for _ in range(40):
        cx, cy = 67.5 + rng.normal(0, 5), 55 + rng.normal(0, 5)
        r = rng.uniform(3, 6)
        g = int(rng.uniform(70, 120))
        draw.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s],
                     fill=(int(g * 0.45), g, int(g * 0.35)))
    img = img.filter(ImageFilter.GaussianBlur(radius=s * 0.15))
    rgb = np.asarray(img, dtype=np.float32)
    # Photographic grain and texture: 1/f luminance noise, stronger in the field.
    grain = _pink_noise(big, rng)[..., None]
    rgb = rgb + (6.0 + 10.0 * field_mask) * grain + rng.normal(0, 2.0, rgb.shape)
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    return _downsample(img, side)


PALETTE = np.array([
    (30, 60, 160), (20, 40, 110), (240, 200, 40), (250, 230, 120), (220, 70, 30),
    (30, 140, 90), (240, 240, 225), (90, 150, 210), (160, 30, 60),
], np.float32)  # fmt: skip


def texture(side: int = DEFAULT_SIDE, seed: int = 2, strokes: int = 5000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    big = 2 * side
    img = Image.new("RGB", (big, big), (60, 70, 110))
    draw = ImageDraw.Draw(img)
    # A swirling flow field (sum of a few vortices) orients the strokes.
    centres = rng.uniform(0.1, 0.9, (4, 2))
    spins = rng.choice([-1.0, 1.0], 4)

    def angle(px: float, py: float) -> float:
        vx = vy = 0.0
        for (cx, cy), spin in zip(centres, spins, strict=True):
            dx, dy = px - cx, py - cy
            r2 = dx * dx + dy * dy + 0.01
            vx += -spin * dy / r2
            vy += spin * dx / r2
        return float(np.arctan2(vy, vx))

    for i in range(strokes):
        px, py = rng.uniform(0, 1, 2)
        theta = angle(px, py) + rng.normal(0, 0.15)
        length = rng.uniform(0.02, 0.06) * big
        width = int(rng.uniform(0.006, 0.014) * big)
        # Colour: mostly blues, with bands of yellow and vermilion (like a night painting).
        index = rng.choice(len(PALETTE), p=[0.2, 0.15, 0.15, 0.08, 0.08, 0.08, 0.06, 0.15, 0.05])
        colour = np.clip(PALETTE[index] + rng.normal(0, 12, 3), 0, 255).astype(int)
        x0, y0 = px * big, py * big
        x1, y1 = x0 + length * np.cos(theta), y0 + length * np.sin(theta)
        draw.line([x0, y0, x1, y1], fill=tuple(colour), width=width)
        # A darker edge on one side, like paint ridges.
        if i % 3 == 0:
            off = width * 0.5
            draw.line([x0 + off * np.sin(theta), y0 - off * np.cos(theta),
                       x1 + off * np.sin(theta), y1 - off * np.cos(theta)],
                      fill=tuple((colour * 0.6).astype(int)), width=max(1, width // 4))
    return _downsample(img, side)
