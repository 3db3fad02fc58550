"""The built-in key-image engine: the scene's background and the brand's own product, composed
with Pillow in well under a second, so a machine without a GPU still gets a complete ad.

The picture is motion-design in the brand colours: a surface colour per scene (colour_roles),
large soft shapes that differ by purpose, and, where the scene shows it, the real packshot from
the brand kit, scaled into the layout's product box with a grounded shadow (an app screenshot is
shown in a phone frame). No product is ever invented: without product images the scene is type
and shapes only. There is no text in the key image (the overlay sets all copy), so nothing moves
under the headline and no internal label can reach the frame.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from .brand_assets import Packshot, load_packshot
from .colour_roles import RGB, WHITE, mix
from .composition import SceneLayout, layout_scene
from .geometry import MASTER, SIZES, Box
from .models import BrandKit, Scene

ENGINE = "builtin"


def _gradient(size: tuple[int, int], top: RGB, bottom: RGB) -> Image.Image:
    width, height = size
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None] ** 1.2
    rows = np.array(top, np.float32) * (1 - t) + np.array(bottom, np.float32) * t
    return Image.fromarray(np.repeat(rows, width, axis=1).astype(np.uint8)).convert("RGBA")


def _soft(layer: Image.Image, radius: float) -> Image.Image:
    return layer.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else layer


def _shapes(img: Image.Image, lay: SceneLayout, rng: random.Random) -> Image.Image:
    """Large, soft brand-colour shapes (translucent: the overlay plates copy where they would cost
    contrast). The seed moves, sizes and mirrors them within the design, so another seed gives
    another picture while the copy, the logo and the product keep their places."""
    w, h = img.size
    sch = lay.scheme
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    u = min(w, h) / 1080
    accent = sch.accent if sch.accent != sch.background else sch.text
    jitter, grow, mirror = rng.uniform(-1, 1), rng.uniform(0.85, 1.15), rng.random() < 0.5
    if lay.act == "hook":
        r = int(620 * u * grow)
        cx, cy = (w + int(120 * u), int(h * (0.62 + 0.06 * jitter))) if h > w else (int(w * 0.78),
                                                                                    int(h * (0.55 + 0.1 * jitter)))
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(*accent, 70))
        d.ellipse((cx - r // 2, cy - r // 2, cx + r // 2, cy + r // 2), fill=(*mix(sch.background, WHITE, 0.2), 60))
    elif lay.act == "problem":
        step, lean = int(200 * u * grow), (w // 2) * (1 + 0.3 * jitter)
        for k in range(-int(w / step) - 3, int(w / step) + 4):
            x = k * step
            d.polygon([(x, h), (x + int(60 * u), h), (x + int(60 * u) + lean, 0), (x + lean, 0)],
                      fill=(*mix(sch.background, sch.text, 0.5), 14))
        d.rectangle((0, h - int(24 * u), w, h), fill=(*accent, 255))
    elif lay.act == "solution" and lay.product is None:  # type-led: two large arcs frame the headline
        dy = int(160 * u * jitter)
        d.ellipse((-int(420 * u * grow), -int(300 * u) + dy, int(520 * u * grow), int(640 * u) + dy),
                  fill=(*accent, 45))
        d.ellipse((w - int(460 * u * grow), h - int(700 * u) - dy, w + int(420 * u), h + int(180 * u) - dy),
                  fill=(*accent, 60))
    elif lay.act == "solution":
        box = lay.product
        if box is not None:
            cx, cy = box.center
            r = int(max(box.width, box.height) * 0.55 * (0.95 + 0.1 * (grow - 0.85) / 0.3))
            cy += int(r * 0.08 * jitter)
            d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(*accent, 40))
            d.ellipse((cx - int(r * 0.7), cy - int(r * 0.7), cx + int(r * 0.7), cy + int(r * 0.7)),
                      fill=(*mix(sch.background, WHITE, 0.6), 120))
    elif lay.act == "social" and lay.product is None:
        step = int(70 * u * grow)
        for y in list(range(step // 2, int(h * 0.16), step)) + list(range(int(h * 0.84), h, step)):
            for x in range(step // 2, w, step):
                d.ellipse((x - 5 * u, y - 5 * u, x + 5 * u, y + 5 * u), fill=(*accent, 60))
    elif lay.act == "social":
        step = int(70 * u * grow)
        for y in range(int(h * (0.55 + 0.05 * jitter)), h, step):
            for x in range(step // 2, w, step):
                d.ellipse((x - 5 * u, y - 5 * u, x + 5 * u, y + 5 * u), fill=(*accent, 60))
    else:
        # A quarter disc standing in the frame's corner: its straight edges lie on the frame's edges
        # (50 px inside them, they read as a cut-off shape, not a design).
        r, dy = int(500 * u * grow), int(120 * u * jitter)
        d.pieslice((-r, h - r, r, h + r), 270, 360,
                   fill=(*lay.roles.primary, 60 if sch.background != lay.roles.primary else 0))
        r = int(320 * u * (2 - grow))
        d.ellipse((w - 60 * u - r, 60 * u - r - dy, w - 60 * u + r, 60 * u + r - dy), fill=(*accent, 55))
    if mirror and (lay.act in ("problem", "cta") or (lay.act == "solution" and lay.product is None)):
        layer = ImageOps.mirror(layer)  # decoration only: the copy, logo and product keep their places
    layer = _soft(layer, 3 * u)
    return Image.alpha_composite(img, layer)


def _phone(screen: Image.Image, height: int) -> Image.Image:
    """A screenshot in a simple phone frame: dark bezel, rounded corners."""
    scale = height / (screen.height * 1.06)
    sw, sh = max(1, int(screen.width * scale)), max(1, int(screen.height * scale))
    bezel = max(6, int(sw * 0.035))
    out = Image.new("RGBA", (sw + 2 * bezel, sh + 2 * bezel), (0, 0, 0, 0))
    radius = int(sw * 0.12)
    ImageDraw.Draw(out).rounded_rectangle((0, 0, out.width - 1, out.height - 1), radius=radius + bezel,
                                          fill=(18, 18, 22, 255))
    inner = screen.convert("RGBA").resize((sw, sh), Image.LANCZOS)
    mask = Image.new("L", (sw, sh), 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, sw - 1, sh - 1), radius=radius, fill=255)
    out.paste(inner, (bezel, bezel), mask)
    return out


def product_sprite(shot: Packshot, box: Box) -> Image.Image:
    """The packshot scaled to sit in the box (contained)."""
    if shot.screen:
        return _phone(shot.image, box.height)
    img = shot.image
    scale = min(box.width / img.width, box.height / img.height)
    return img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))), Image.LANCZOS)


def sprite_origin(sprite: Image.Image, box: Box) -> tuple[int, int]:
    """Where the sprite's top-left corner goes: bottom-centred in the box (standing on its floor)."""
    return box.left + (box.width - sprite.width) // 2, box.bottom - sprite.height


def place_product(img: Image.Image, sprite: Image.Image, box: Box, ground: RGB) -> tuple[Image.Image, Box]:
    """Composite the sprite bottom-centred in the box with a grounded shadow; returns where it went."""
    x, y = sprite_origin(sprite, box)
    shadow = Image.new("RGBA", img.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(shadow)
    sw, base = sprite.width, y + sprite.height
    dark = mix(ground, (0, 0, 0), 0.7)
    d.ellipse((x + sw * 0.08, base - sw * 0.05, x + sw * 0.92, base + sw * 0.07), fill=(*dark, 110))
    img = Image.alpha_composite(img, _soft(shadow, max(6, sw * 0.04)))
    contact = Image.new("RGBA", img.size, (0, 0, 0, 0))
    ImageDraw.Draw(contact).ellipse((x + sw * 0.2, base - sw * 0.015, x + sw * 0.8, base + sw * 0.02),
                                    fill=(*dark, 150))
    img = Image.alpha_composite(img, _soft(contact, max(2, sw * 0.012)))
    paste_clipped(img, sprite, x, y)
    return img, Box(x, y, x + sprite.width, y + sprite.height)


def paste_clipped(img: Image.Image, sprite: Image.Image, x: int, y: int) -> None:
    """Composite the sprite at (x, y), the part past the image's edges left out."""
    left, top = max(0, -x), max(0, -y)
    right, bottom = min(sprite.width, img.width - x), min(sprite.height, img.height - y)
    if right > left and bottom > top:
        img.alpha_composite(sprite.crop((left, top, right, bottom)), (max(0, x), max(0, y)))


def scene_packshot(scene: Scene, brand: BrandKit) -> Packshot:
    """The brand's packshot this scene shows: scene n the n-th product image, round the list."""
    index = (int(scene.id[-3:]) - 1) % len(brand.product_images) if scene.id[-3:].isdigit() else 0
    item = brand.product_images[index]
    return load_packshot(item.path, item.kind)


def product_placement(scene: Scene, brand: BrandKit, fmt: str = MASTER) -> tuple[Image.Image, Box] | None:
    """The packshot sprite this scene composes and the box it sits in (bottom-centred; the box may
    reach past the frame: a crop), or None when the scene shows no product. The product check reads
    the same placement to know what size and where to look."""
    lay = layout_scene(scene, brand, fmt)
    if lay.product is None or not brand.product_images:
        return None
    size = SIZES[fmt]
    shot = scene_packshot(scene, brand)
    box = lay.product
    if lay.act == "hook" and not shot.screen and size[1] >= size[0]:  # partly shown: cut by the frame's edge
        # (a landscape layout's hook box already reaches past the edge)
        if shot.image.width > 1.2 * shot.image.height and size[1] > size[0]:
            # A wide product (a shoe) strides in from the right, between the headline and the logo.
            u = size[0] / 1080
            top = (lay.copy.bottom if lay.copy else box.top) + int(40 * u)
            below = lay.logo.top if lay.logo is not None and lay.logo.top > top else lay.safe.bottom
            bottom = below - int(30 * u)
            box = Box(int(size[0] * 0.36), top, int(size[0] * 1.22), bottom)
        else:
            grow = 1.35
            box = Box(box.left - int(box.width * (grow - 1) / 2), box.top,
                      box.right + int(box.width * (grow - 1) / 2), box.bottom + int(box.height * (grow - 1)))
    return product_sprite(shot, box), box


def render_key_image(scene: Scene, brand: BrandKit, product: str, seed: str, fmt: str = MASTER) -> Image.Image:
    """The key image for one scene (RGB, the format's size: 1080x1920 for the master).
    Same inputs, same picture."""
    rng = random.Random(int(hashlib.sha256(seed.encode()).hexdigest()[:16], 16))
    lay = layout_scene(scene, brand, fmt)
    size = SIZES[fmt]
    sch = lay.scheme
    # a gentle gradient that stays within ±5% of the background colour
    img = _gradient(size, mix(sch.background, WHITE, 0.03), mix(sch.background, sch.shade, 0.4))
    img = _shapes(img, lay, rng)
    placed = product_placement(scene, brand, fmt)
    if placed is not None:
        sprite, box = placed
        img, _ = place_product(img, sprite, box, sch.background)
    return img.convert("RGB")
