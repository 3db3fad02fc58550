"""The built-in key-image engine: a designed 1080x1920 placeholder in the brand's colours, made
with Pillow in well under a second, so a machine without a GPU still gets a complete ad.

Each picture has a brand-colour gradient with soft light, a composition that depends on the scene's
purpose (spotlight for the hook, a muted diagonal for the problem, a product pack for the solution
and the CTA, floating cards for social proof), the product name set large, and a small chip naming
the scene's purpose. Important content stays in the centre so Ken Burns motion never crops it.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .models import BrandKit, Scene
from .overlay import HEIGHT, SAFE_AREA, WIDTH, brand_accent, hex_rgb, luminance
from .typography import fit, font

ENGINE = "builtin"


def _mix(a: tuple[int, ...], b: tuple[int, ...], t: float) -> tuple[int, ...]:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def _palette(brand: BrandKit) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    colors = sorted((hex_rgb(c) for c in brand.colors), key=luminance, reverse=True)
    light, dark = colors[0], colors[-1]
    if luminance(light) - luminance(dark) < 0.25:  # a one-colour or low-contrast kit: derive a range
        light, dark = _mix(light, (255, 255, 255), 0.6), _mix(dark, (0, 0, 0), 0.55)
    return light, dark, brand_accent(brand)


def _gradient(top: tuple[int, ...], bottom: tuple[int, ...]) -> Image.Image:
    t = np.linspace(0.0, 1.0, HEIGHT, dtype=np.float32)[:, None, None] ** 1.3
    rows = np.array(top, np.float32) * (1 - t) + np.array(bottom, np.float32) * t
    return Image.fromarray(np.repeat(rows, WIDTH, axis=1).astype(np.uint8))


def _glow(size: tuple[int, int], center: tuple[int, int], radius: int, color: tuple[int, ...], alpha: int) -> Image.Image:
    layer = Image.new("RGBA", size, (*color, 0))
    ImageDraw.Draw(layer).ellipse((center[0] - radius, center[1] - radius, center[0] + radius, center[1] + radius),
                                  fill=(*color, alpha))
    return layer.filter(ImageFilter.GaussianBlur(radius // 2))


def _bokeh(img: Image.Image, rng: random.Random, color: tuple[int, ...], count: int) -> Image.Image:
    layer = Image.new("RGBA", img.size, (*color, 0))
    draw = ImageDraw.Draw(layer)
    for _ in range(count):
        r = rng.randint(30, 140)
        x, y = rng.randint(-50, WIDTH + 50), rng.randint(0, HEIGHT)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(*color, rng.randint(25, 70)))
    return Image.alpha_composite(img, layer.filter(ImageFilter.GaussianBlur(12)))


def _product_pack(img: Image.Image, product: str, dark: tuple[int, ...], light: tuple[int, ...],
                  accent: tuple[int, ...], center_y: int, scale: float = 1.0) -> Image.Image:
    """A bottle with cap, shading and label, drawn at 2x and scaled down for smooth edges;
    `scale` shrinks it where the overlay needs room (the CTA button)."""
    s = 2
    w, h = 300, 560
    pack = Image.new("RGBA", ((w + 80) * s, (h + 200) * s), (0, 0, 0, 0))
    d = ImageDraw.Draw(pack)
    ox, oy = 40 * s, 150 * s
    cap_w = w * 0.42
    d.rounded_rectangle((ox + (w - cap_w) / 2 * s, oy - 120 * s, ox + (w + cap_w) / 2 * s, oy + 10 * s),
                        radius=18 * s, fill=(*_mix(dark, (0, 0, 0), 0.35), 255))
    body = Image.new("RGBA", pack.size, (0, 0, 0, 0))
    shade = np.linspace(0, 1, w * s, dtype=np.float32)
    profile = 1 - 0.55 * np.abs(shade - 0.32) ** 0.8  # highlight left of centre: a lit cylinder
    col = np.array(dark, np.float32)[None, :] * 0.55 + np.array(light, np.float32)[None, :] * 0.45
    row = np.clip(col * profile[:, None] * 1.25, 0, 255).astype(np.uint8)
    body_rgb = Image.fromarray(np.repeat(row[None, :, :], h * s, axis=0)).convert("RGBA")
    mask = Image.new("L", (w * s, h * s), 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, w * s - 1, h * s - 1), radius=60 * s, fill=255)
    body.paste(body_rgb, (ox, oy), mask)
    pack = Image.alpha_composite(pack, body)
    d = ImageDraw.Draw(pack)
    label_top, label_h = oy + int(h * 0.36) * s, int(h * 0.34) * s
    d.rectangle((ox, label_top, ox + w * s, label_top + label_h), fill=(*light, 245))
    d.rectangle((ox, label_top + label_h - 14 * s, ox + w * s, label_top + label_h), fill=(*accent, 255))
    face, lines = fit(product, (w - 40) * s, 3, 44 * s, 22 * s, "extrabold")
    line_h = int(sum(face.getmetrics()) * 1.05)
    y = label_top + (label_h - 14 * s - line_h * len(lines)) / 2
    for line in lines:
        d.text((ox + (w * s - face.getlength(line)) / 2, y), line, font=face, fill=(*dark, 255))
        y += line_h
    pack = pack.resize((round(pack.width * scale / s), round(pack.height * scale / s)), Image.LANCZOS)
    shadow = Image.new("RGBA", img.size, (0, 0, 0, 0))
    floor = center_y + h / 2 * scale
    ImageDraw.Draw(shadow).ellipse((WIDTH / 2 - 210 * scale, floor - 10 * scale, WIDTH / 2 + 210 * scale,
                                    floor + 60 * scale), fill=(0, 0, 0, 110))
    img = Image.alpha_composite(img, shadow.filter(ImageFilter.GaussianBlur(22 * scale)))
    img.alpha_composite(pack, (WIDTH // 2 - pack.width // 2, round(center_y - (h / 2 + 150) * scale)))
    return img


def _cards(img: Image.Image, rng: random.Random, light: tuple[int, ...], accent: tuple[int, ...]) -> Image.Image:
    """Three tilted review cards with stars: social proof without inventing a quote."""
    for i, (cx, cy, angle) in enumerate(((330, 1020, -8), (740, 1180, 6), (470, 1380, -3))):
        card = Image.new("RGBA", (460, 250), (0, 0, 0, 0))
        d = ImageDraw.Draw(card)
        d.rounded_rectangle((0, 0, 459, 249), radius=30, fill=(*light, 235))
        for k in range(5):
            x = 40 + k * 70
            star = [(x + (28 if j % 2 == 0 else 12) * np.cos(-np.pi / 2 + j * np.pi / 5),
                     70 + (28 if j % 2 == 0 else 12) * np.sin(-np.pi / 2 + j * np.pi / 5)) for j in range(10)]
            d.polygon(star, fill=(*accent, 255))
        for k, width in enumerate((360, 300, 220)):
            d.rounded_rectangle((40, 130 + k * 36, 40 + width - rng.randint(0, 60), 148 + k * 36), radius=9,
                                fill=(*_mix(light, (0, 0, 0), 0.25), 255))
        card = card.rotate(angle, expand=True, resample=Image.BICUBIC)
        img.alpha_composite(card, (cx - card.width // 2, cy - card.height // 2))
    return img


def render_key_image(scene: Scene, brand: BrandKit, product: str, seed: str) -> Image.Image:
    """The key image for one scene (RGB, 1080x1920). Same inputs, same picture."""
    rng = random.Random(int(hashlib.sha256(seed.encode()).hexdigest()[:16], 16))
    light, dark, accent = _palette(brand)
    purpose = scene.purpose.lower()
    if purpose.startswith("problem"):
        muted = _mix(dark, (90, 90, 96), 0.5)
        img = _gradient(_mix(muted, light, 0.35), _mix(muted, (0, 0, 0), 0.4)).convert("RGBA")
        stripes = Image.new("RGBA", img.size, (0, 0, 0, 0))
        d = ImageDraw.Draw(stripes)
        for k in range(-4, 12):
            x = k * 180
            d.polygon([(x, 0), (x + 70, 0), (x + 70 + 900, HEIGHT), (x + 900, HEIGHT)], fill=(255, 255, 255, 16))
        img = Image.alpha_composite(img, stripes)
    else:
        img = _gradient(_mix(light, (255, 255, 255), 0.15), _mix(dark, light, 0.15)).convert("RGBA")
    img = _bokeh(img, rng, _mix(light, accent, 0.3), 16)
    img = Image.alpha_composite(img, _glow(img.size, (WIDTH // 2, 1150), 520, _mix(light, (255, 255, 255), 0.5), 150))

    if "cta_button" in scene.brand_elements:  # smaller, between the headline and the CTA button (overlay.py)
        img = _product_pack(img, product, dark, light, accent, center_y=1095, scale=0.66)
    elif "product_3d" in scene.brand_elements or purpose.startswith(("solution", "cta")):
        img = _product_pack(img, product, dark, light, accent, center_y=1290)
    elif purpose.startswith("social"):
        img = _cards(img, rng, light, accent)
    else:
        face, lines = fit(product.upper() if product.isascii() else product, SAFE_AREA.width - 60, 3, 120, 60)
        d = ImageDraw.Draw(img)
        line_h = int(sum(face.getmetrics()) * 1.0)
        y = 1180 - line_h * len(lines) / 2
        for line in lines:
            d.text(((WIDTH - face.getlength(line)) / 2, y), line, font=face, fill=(*dark, 200))
            y += line_h

    chip_face = font(30, "bold")
    label = scene.purpose.upper()
    d = ImageDraw.Draw(img)
    cw = chip_face.getlength(label) + 48
    d.rounded_rectangle((SAFE_AREA.left, 300, SAFE_AREA.left + cw, 352), radius=26, fill=(*accent, 220))
    d.text((SAFE_AREA.left + 24, 308), label, font=chip_face, fill=(255, 255, 255, 255))
    return img.convert("RGB")
