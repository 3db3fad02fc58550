"""The per-scene overlay layer: on-screen copy and brand elements, drawn once as an RGBA image and
laid over every frame of the scene by the renderer.

Brand elements live here rather than in the key image so they look the same whatever engine made
the picture (built-in or ComfyUI), sit exactly where the storyboard says, and stay still while the
picture underneath moves. Everything is kept inside the 9:16 safe area: Reels/Shorts/TikTok cover
the top ~12%, the bottom ~22% (caption, buttons) and a strip on the right (like, share).
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter

from .models import BrandKit, Scene
from .typography import fit, font

WIDTH, HEIGHT = 1080, 1920


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    def contains(self, other: Box) -> bool:
        return (self.left <= other.left and self.top <= other.top
                and other.right <= self.right and other.bottom <= self.bottom)


SAFE_AREA = Box(left=80, top=240, right=960, bottom=1480)
SAFE_CENTER_X = (SAFE_AREA.left + SAFE_AREA.right) // 2
HEADLINE_TOP = 560  # copy sits in the upper-middle of the safe area, where the eye lands first
TEXT_PLATE_ALPHA = 178


def hex_rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def luminance(rgb: tuple[int, int, int]) -> float:
    """WCAG relative luminance."""
    def channel(c: int) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = rgb
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def brand_dark(brand: BrandKit) -> tuple[int, int, int]:
    return min((hex_rgb(c) for c in brand.colors), key=luminance)


def brand_accent(brand: BrandKit) -> tuple[int, int, int]:
    """The brand colour that stands out most against white text: used for buttons and badges."""
    return max((hex_rgb(c) for c in brand.colors), key=lambda rgb: contrast(rgb, (255, 255, 255)))


@dataclass
class OverlayLayout:
    """Where each element landed: the checks and tests read this instead of guessing."""

    text_boxes: list[Box]
    logo_box: Box | None = None
    cta_box: Box | None = None
    badge_box: Box | None = None

    def all_boxes(self) -> list[Box]:
        return [b for b in (*self.text_boxes, self.logo_box, self.cta_box, self.badge_box) if b]


def _plate(draw: ImageDraw.ImageDraw, box: Box, fill: tuple[int, int, int], alpha: int, radius: int) -> None:
    draw.rounded_rectangle((box.left, box.top, box.right, box.bottom), radius=radius, fill=(*fill, alpha))


def _text_block(layer: Image.Image, text: str, top: int, plate: tuple[int, int, int], size: int,
                min_size: int, max_lines: int) -> Box:
    """Centered lines of white type on a translucent dark plate: readable on any picture."""
    pad_x, pad_y = 36, 26
    face, lines = fit(text, SAFE_AREA.width - 2 * pad_x, max_lines, size, min_size)
    ascent, descent = face.getmetrics()
    line_h = int((ascent + descent) * 1.12)
    widths = [face.getlength(line) for line in lines]
    block_w = int(max(widths, default=0)) + 2 * pad_x
    box = Box(left=SAFE_CENTER_X - block_w // 2, top=top, right=SAFE_CENTER_X + (block_w + 1) // 2,
              bottom=top + line_h * len(lines) + 2 * pad_y)
    draw = ImageDraw.Draw(layer)
    _plate(draw, box, plate, TEXT_PLATE_ALPHA, radius=28)
    y = top + pad_y
    for line, w in zip(lines, widths):
        x = SAFE_CENTER_X - w / 2
        draw.text((x + 2, y + 3), line, font=face, fill=(0, 0, 0, 140))  # soft drop shadow
        draw.text((x, y), line, font=face, fill=(255, 255, 255, 255))
        y += line_h
    return box


def _pill(layer: Image.Image, label: str, size: int, fill: tuple[int, int, int], alpha: int,
          anchor: str, x: int, y: int) -> Box:
    """A rounded label; anchor 'rb' = (x, y) is its bottom-right corner, 'mt' = middle-top."""
    face = font(size, "extrabold")
    w, (ascent, descent) = face.getlength(label), face.getmetrics()
    pad_x, pad_y = int(size * 0.7), int(size * 0.45)
    bw, bh = int(w) + 2 * pad_x, ascent + descent + 2 * pad_y
    left, top = (x - bw, y - bh) if anchor == "rb" else (x - bw // 2, y)
    box = Box(left, top, left + bw, top + bh)
    draw = ImageDraw.Draw(layer)
    _plate(draw, box, fill, alpha, radius=bh // 2)
    draw.text((left + pad_x, top + pad_y), label, font=face, fill=(255, 255, 255, 255))
    return box


def _badge(layer: Image.Image, label: str, color: tuple[int, int, int]) -> Box:
    """A round seal with a check mark, top-right of the safe area."""
    d = 220
    box = Box(SAFE_AREA.right - d, SAFE_AREA.top, SAFE_AREA.right, SAFE_AREA.top + d)
    draw = ImageDraw.Draw(layer)
    draw.ellipse((box.left, box.top, box.right, box.bottom), fill=(*color, 235), outline=(255, 255, 255, 255), width=8)
    draw.ellipse((box.left + 22, box.top + 22, box.right - 22, box.bottom - 22), outline=(255, 255, 255, 180), width=3)
    cx, cy = (box.left + box.right) // 2, (box.top + box.bottom) // 2
    draw.line([(cx - 42, cy - 18), (cx - 10, cy + 16), (cx + 46, cy - 44)], fill=(255, 255, 255, 255), width=16, joint="curve")
    face = font(30, "extrabold")
    draw.text((cx - face.getlength(label) / 2, cy + 36), label, font=face, fill=(255, 255, 255, 255))
    return box


def render_overlay(scene: Scene, brand: BrandKit, product: str, language: str) -> tuple[Image.Image, OverlayLayout]:
    """The RGBA layer for one scene and where its parts are."""
    layer = Image.new("RGBA", (WIDTH, HEIGHT), (0, 0, 0, 0))
    dark, accent = brand_dark(brand), brand_accent(brand)
    plate = dark if luminance(dark) < 0.2 else (20, 20, 24)
    layout = OverlayLayout(text_boxes=[])

    if "cta_button" in scene.brand_elements:
        # The CTA scene: the product name as headline, the call to action as the button itself.
        layout.text_boxes.append(_text_block(layer, product, HEADLINE_TOP, plate, 76, 48, 2))
        label = scene.onscreen_text or brand.cta_default or ("지금 확인하기" if language == "ko" else "Learn more")
        face, lines = fit(label, SAFE_AREA.width - 140, 1, 70, 40)
        layout.cta_box = _pill(layer, " ".join(lines), face.size, accent, 250, "mt", SAFE_CENTER_X, 1310)
    elif scene.onscreen_text:
        layout.text_boxes.append(_text_block(layer, scene.onscreen_text, HEADLINE_TOP, plate, 88, 52, 3))

    if "logo_bottom_right" in scene.brand_elements or "logo" in scene.brand_elements:
        logo = brand.logo_text or brand.name
        if "logo_bottom_right" in scene.brand_elements:
            layout.logo_box = _pill(layer, logo, 34, plate, 200, "rb", SAFE_AREA.right, SAFE_AREA.bottom)
        else:
            layout.logo_box = _pill(layer, logo, 40, plate, 200, "mt", SAFE_CENTER_X, SAFE_AREA.top + 40)

    if "certification_badge" in scene.brand_elements:
        layout.badge_box = _badge(layer, "품질 약속" if language == "ko" else "QUALITY", accent)

    shadow = layer.getchannel("A").filter(ImageFilter.GaussianBlur(10)).point(lambda a: a * 0.35)
    shadow_layer = Image.new("RGBA", layer.size, (0, 0, 0, 0))
    shadow_layer.putalpha(shadow)
    return Image.alpha_composite(shadow_layer, layer), layout
