"""The per-scene overlay layer: on-screen copy and brand elements, drawn once as an RGBA image and
laid over every frame of the scene by the renderer.

Brand elements live here rather than in the key image so they look the same whatever engine made
the picture (built-in or ComfyUI), sit exactly where the storyboard says, and stay still while the
picture underneath moves. Every block (caption, CTA, badge, logo text, website, legal line) is
fitted to its layout box by copy_fit, so nothing leaves the safe area or the frame. Copy is set in
the scene's text colour (colour_roles); when the picture under a block is known (`backdrop`) and
that colour does not reach 4.5:1 against it, the block gets a plate in the scene's background
colour. Without a backdrop (a picture not yet known) every block is plated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .brand_assets import load_logo
from .colour_roles import RGB, WCAG_AA, contrast, hex_rgb, luminance
from .composition import SceneLayout, layout_scene
from .copy_fit import Fitted, fit_copy
from .geometry import HEIGHT, MASTER, SAFE_AREA, SAFE_CENTER_X, SIZES, WIDTH, Box  # noqa: F401
from .models import BrandKit, Scene

HEADLINE_TOP = 560  # kept for callers that place text themselves
PLATE_ALPHA = 238


@dataclass
class TextBlock:
    """One set block of copy: where its ink is, and the colours it was designed with."""

    kind: str  # copy | cta | website | legal | badge | logo_text
    text: str
    box: Box  # the block's drawn extent (plate or ink), inside the safe area
    ink: Box  # the bounding box of the glyphs
    color: RGB
    ground: RGB  # the plate's (or designed background's) colour
    mask: np.ndarray = field(repr=False, default=None)  # bool, glyph pixels, cropped to `ink`
    shortened: bool = False


@dataclass
class OverlayLayout:
    """Where each element landed: the checks and tests read this instead of guessing."""

    text_boxes: list[Box]
    logo_box: Box | None = None
    cta_box: Box | None = None
    badge_box: Box | None = None
    blocks: list[TextBlock] = field(default_factory=list)
    logo_is_image: bool = False
    product_box: Box | None = None
    act: str = ""

    def all_boxes(self) -> list[Box]:
        return [b for b in (*self.text_boxes, self.logo_box, self.cta_box, self.badge_box) if b]


def brand_dark(brand: BrandKit) -> RGB:
    return min((hex_rgb(c) for c in brand.colors), key=luminance)


def brand_accent(brand: BrandKit) -> RGB:
    """The brand's primary colour: buttons and badges wear it (colour_roles decides text on it)."""
    return hex_rgb(brand.colors[0])


def _backdrop_stats(backdrop: np.ndarray | None, box: Box) -> tuple[RGB, RGB] | None:
    """The darkest and lightest typical colours of the picture under a box (5th/95th percentile
    of luminance), or None when the picture is unknown."""
    if backdrop is None:
        return None
    region = backdrop[max(0, box.top):box.bottom, max(0, box.left):box.right].reshape(-1, 3)
    if len(region) == 0:
        return None
    lum = region.astype(np.float32) @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    order = np.argsort(lum)
    lo = region[order[int(len(order) * 0.03)]]
    hi = region[order[int(len(order) * 0.97) - 1]]
    return tuple(int(v) for v in lo), tuple(int(v) for v in hi)  # type: ignore[return-value]


def _needs_plate(color: RGB, backdrop: np.ndarray | None, box: Box, margin: float = 1.1) -> bool:
    stats = _backdrop_stats(backdrop, box)
    if stats is None:
        return True
    return min(contrast(color, stats[0]), contrast(color, stats[1])) < WCAG_AA * margin


def _draw_lines(layer: Image.Image, mask: Image.Image, fitted: Fitted, box: Box, color: RGB, align: str,
                valign: str = "middle") -> Box:
    """Set fitted lines inside box; returns the ink's bounding box."""
    draw, mdraw = ImageDraw.Draw(layer), ImageDraw.Draw(mask)
    fc = fitted.face
    total = fc.line_height * len(fitted.lines)
    y = box.top + {"top": 0, "middle": (box.height - total) // 2, "bottom": box.height - total}[valign]
    for line in fitted.lines:
        w = fc.length(line)
        x = box.left if align == "left" else box.left + (box.width - w) / 2
        fc.draw(draw, (x, y), line, (*color, 255))
        fc.draw(mdraw, (x, y), line, 255)
        y += fc.line_height
    return Box(*_offset(mask.crop((box.left, box.top, box.right, box.bottom)).getbbox(), box))


def _offset(bbox, box: Box) -> tuple[int, int, int, int]:
    if not bbox:
        return box.left, box.top, box.left, box.top
    return box.left + bbox[0], box.top + bbox[1], box.left + bbox[2], box.top + bbox[3]


class _Painter:
    def __init__(self, lay: SceneLayout, brand: BrandKit, backdrop: np.ndarray | None):
        self.lay, self.brand, self.backdrop = lay, brand, backdrop
        self.layer = Image.new("RGBA", SIZES[lay.fmt], (0, 0, 0, 0))
        self.blocks: list[TextBlock] = []
        self.u = min(lay.safe.width, lay.safe.height) / 880

    def text(self, kind: str, text: str, box: Box, max_size: int, min_size: int, weight: str = "extrabold",
             font_role: str = "headline", align: str = "center", max_lines: int | None = None,
             color: RGB | None = None, ground: RGB | None = None, plate: str = "auto", valign: str = "middle",
             radius: int = 28) -> TextBlock | None:
        """Fit and set a block. plate: auto (only where the picture is not readable), always, never."""
        if not text.strip():
            return None
        sch = self.lay.scheme
        color = color or sch.text
        ground = ground or sch.background
        brand_font = getattr(self.brand.fonts, font_role, None) or self.brand.fonts.headline
        pad = {"always": int(30 * self.u), "auto": int(14 * self.u)}.get(plate, 0)
        fitted = fit_copy(text, box.width - 2 * pad, box.height - 2 * pad, int(max_size * self.u),
                          max(16, int(min_size * self.u)), weight, brand_font, max_lines)
        bw, bh = fitted.width + 2 * pad, fitted.height + 2 * pad
        if align == "left":
            left = box.left
        else:
            left = box.left + (box.width - bw) // 2
        top = box.top + {"top": 0, "middle": (box.height - bh) // 2, "bottom": box.height - bh}[valign]
        drawn = Box(left, top, left + bw, top + bh)
        use_plate = plate == "always" or (plate == "auto" and _needs_plate(color, self.backdrop, drawn))
        if use_plate:
            ImageDraw.Draw(self.layer).rounded_rectangle((drawn.left, drawn.top, drawn.right, drawn.bottom),
                                                         radius=min(radius, bh // 2), fill=(*ground, PLATE_ALPHA))
        mask = Image.new("L", self.layer.size, 0)
        inner = drawn.inset(pad) if pad else drawn
        ink = _draw_lines(self.layer, mask, fitted, inner, color, "left" if align == "left" else "center")
        glyphs = np.asarray(mask.crop((ink.left, ink.top, ink.right, ink.bottom))) > 127
        block = TextBlock(kind, text, drawn if use_plate else ink, ink, color, ground, glyphs, fitted.shortened)
        self.blocks.append(block)
        return block


def _stars(layer: Image.Image, box: Box, color: RGB) -> None:
    d = ImageDraw.Draw(layer)
    r = box.height / 2 * 0.9
    gap = box.width / 5
    for k in range(5):
        cx, cy = box.left + gap * (k + 0.5), box.top + box.height / 2
        pts = [(cx + (r if j % 2 == 0 else r * 0.42) * np.cos(-np.pi / 2 + j * np.pi / 5),
                cy + (r if j % 2 == 0 else r * 0.42) * np.sin(-np.pi / 2 + j * np.pi / 5)) for j in range(10)]
        d.polygon(pts, fill=(*color, 255))


def _logo(p: _Painter, lay: SceneLayout, brand: BrandKit, box: Box) -> tuple[Box, bool]:
    """The real logo (or the logo text as a wordmark) fitted into box. A logo that would not stand
    out from the background (under 3:1) sits on a chip of the surface that contrasts most."""
    if brand.logo:
        logo = load_logo(brand.logo)
        scale = min(box.width / logo.width, box.height / logo.height)
        logo = logo.resize((max(1, int(logo.width * scale)), max(1, int(logo.height * scale))), Image.LANCZOS)
        arr = np.asarray(logo, np.float32)
        weight = arr[:, :, 3] / 255
        ink = tuple(int(v) for v in (arr[:, :, :3] * weight[..., None]).sum((0, 1)) / max(1.0, weight.sum()))
        ground = lay.scheme.background
        right_aligned = box.right >= lay.safe.right - 2 and box.bottom >= lay.safe.bottom - 2
        x = box.right - logo.width if right_aligned else box.left + (box.width - logo.width) // 2
        y = box.top + (box.height - logo.height) // 2
        if contrast(ink, ground) < 3.0:
            chip_colour = max((lay.roles.light, lay.roles.dark, (255, 255, 255)), key=lambda c: contrast(c, ink))
            pad = int(18 * p.u)
            inner = max(1, logo.width - 2 * pad)
            logo = logo.resize((inner, max(1, int(logo.height * inner / logo.width))), Image.LANCZOS)
            chip = Box(x, y, x + logo.width + 2 * pad, y + logo.height + 2 * pad)
            if chip.bottom > box.bottom:
                chip = Box(chip.left, box.bottom - chip.height, chip.right, box.bottom)
            ImageDraw.Draw(p.layer).rounded_rectangle((chip.left, chip.top, chip.right, chip.bottom),
                                                      radius=chip.height // 2, fill=(*chip_colour, 245))
            p.layer.alpha_composite(logo, (chip.left + pad, chip.top + pad))
            return chip, True
        p.layer.alpha_composite(logo, (x, y))
        return Box(x, y, x + logo.width, y + logo.height), True
    label = brand.logo_text or brand.name
    block = p.text("logo_text", label, box, 44, 22, align="center", max_lines=1, plate="always",
                   color=lay.scheme.text if lay.scheme.name != "primary" else lay.scheme.button_text,
                   ground=lay.scheme.background if lay.scheme.name != "primary" else lay.scheme.button,
                   radius=60)
    return (block.box if block else box), False


def render_overlay(scene: Scene, brand: BrandKit, product: str, language: str,
                   backdrop: np.ndarray | Image.Image | None = None,
                   fmt: str = MASTER) -> tuple[Image.Image, OverlayLayout]:
    """The RGBA layer for one scene and where its parts are. `backdrop` is the key image (RGB), when
    known: plates are then drawn only where the picture would make the copy unreadable."""
    if isinstance(backdrop, Image.Image):
        backdrop = np.asarray(backdrop.convert("RGB"))
    lay = layout_scene(scene, brand, fmt)
    p = _Painter(lay, brand, backdrop)
    sch = lay.scheme
    out = OverlayLayout(text_boxes=[], product_box=lay.product, act=lay.act)

    if lay.act == "cta":
        label = scene.onscreen_text or brand.cta_default or ("지금 확인하기" if language == "ko" else "Learn more")
        if lay.copy is not None:  # no packshot: the product's name is the end card's headline
            block = p.text("copy", product, lay.copy, 96, 48, max_lines=3)
            if block:
                out.text_boxes.append(block.box)
        cta = p.text("cta", label, lay.cta, 62, 34, max_lines=2, color=sch.button_text, ground=sch.button,
                     plate="always", radius=200, valign="bottom")
        if cta:
            out.cta_box = cta.box
        if lay.website and brand.website:
            p.text("website", brand.website, lay.website, 34, 22, weight="bold", font_role="body", max_lines=1)
        if lay.legal and brand.legal_text:
            p.text("legal", brand.legal_text, lay.legal, 24, 18, weight="regular", font_role="body", max_lines=4,
                   valign="bottom")
    elif lay.copy is not None and scene.onscreen_text:
        size = 104 if lay.act in ("hook", "problem") else 92
        block = p.text("copy", scene.onscreen_text, lay.copy, size, 52, align=lay.align, max_lines=4,
                       valign="top" if lay.act in ("hook", "solution", "social") and lay.product else "middle")
        if block:
            out.text_boxes.append(block.box)

    if lay.stars is not None:
        _stars(p.layer, lay.stars, sch.accent if contrast(sch.accent, sch.background) >= 3 else sch.text)

    if lay.badge is not None:
        d = ImageDraw.Draw(p.layer)
        b = lay.badge
        d.ellipse((b.left, b.top, b.right, b.bottom), fill=(*sch.button, 245))
        d.ellipse((b.left + 14, b.top + 14, b.right - 14, b.bottom - 14), outline=(*sch.button_text, 200), width=3)
        cx, cy = b.center
        s = b.width / 220
        d.line([(cx - 40 * s, cy - 30 * s), (cx - 10 * s, cy), (cx + 44 * s, cy - 56 * s)],
               fill=(*sch.button_text, 255), width=int(14 * s), joint="curve")
        label = "품질 약속" if language == "ko" else "QUALITY"
        p.text("badge", label, Box(b.left + int(30 * s), cy + int(8 * s), b.right - int(30 * s), cy + int(60 * s)),
               30, 16, max_lines=1, color=sch.button_text, ground=sch.button, plate="never")
        out.badge_box = b

    if lay.logo is not None:
        out.logo_box, out.logo_is_image = _logo(p, lay, brand, lay.logo)

    out.blocks = p.blocks
    layer = p.layer
    shadow = layer.getchannel("A").filter(ImageFilter.GaussianBlur(8)).point(lambda a: a * 0.18)
    shadow_layer = Image.new("RGBA", layer.size, (0, 0, 0, 0))
    shadow_layer.putalpha(shadow)
    return Image.alpha_composite(shadow_layer, layer), out
