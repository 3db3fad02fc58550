"""A brand's own files: the logo, the product packshots and the fonts. Checked when the brand kit
is read (so a bad file is refused up front, naming the field and the reason) and prepared for
the frame here: the logo rasterised, packshots cut out of a plain background with a soft edge.

Content types are sniffed from the bytes, never trusted from the file name. Images are refused
past MAX_IMAGE_BYTES or MAX_IMAGE_PIXELS before any pixel is decoded (decompression bombs).
SVG logos are rasterised by resvg (resvg-py, a maintained Rust renderer that runs no scripts and
fetches nothing); before that the markup loses any DOCTYPE/entities, scripts, event handlers and
external references. Packshots without alpha are cut out with OpenCV only (no downloaded model):
the background colour is read off the border, the connected region of that colour is flood-filled
from the edges, GrabCut refines the boundary, and the edge is feathered.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import resvg_py
from PIL import Image

from .typography import cmap, font_path, hangul_glyphs

MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000  # e.g. 8000x5000
MAX_SVG_BYTES = 2 * 1024 * 1024
MAX_FONT_BYTES = 40 * 1024 * 1024  # a full Hangul OTF is 5-20 MB
RASTER_KINDS = ("png", "webp", "jpeg")
SVG_NS = "http://www.w3.org/2000/svg"


class AssetError(ValueError):
    """A brand file that cannot be used; the message says why."""


def sniff(head: bytes) -> str | None:
    """The file type from its first bytes: png, jpeg, webp, svg, font, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"\x00\x01\x00\x00", b"OTTO", b"true"):
        return "font"
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text.startswith((b"<?xml", b"<svg", b"<!--")) and b"<svg" in head:
        return "svg"
    return None


def _read_head(path: Path, limit: int) -> bytes:
    if not path.is_file():
        raise AssetError(f"file not found: {path} (paths are relative to the brand JSON)")
    size = path.stat().st_size
    if size > limit:
        raise AssetError(f"too large: {path.name} is {size:,} bytes (limit {limit:,})")
    if size == 0:
        raise AssetError(f"empty file: {path.name}")
    with path.open("rb") as handle:
        return handle.read(512)


def check_image(path: Path, allow_svg: bool = False) -> str:
    """Raise AssetError unless the file is a usable image; returns its sniffed kind."""
    kinds = RASTER_KINDS + (("svg",) if allow_svg else ())
    head = _read_head(path, MAX_SVG_BYTES if head_is_svg(path) else MAX_IMAGE_BYTES)
    kind = sniff(head)
    if kind not in kinds:
        raise AssetError(f"not an image: {path.name} is not {'/'.join(k.upper() for k in kinds)} "
                         f"(sniffed {kind or 'unknown bytes'})")
    if kind == "svg":
        sanitize_svg(path.read_bytes())
        return kind
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise AssetError(f"too large: {path.name} is {width}x{height} = {width * height:,} pixels "
                                 f"(limit {MAX_IMAGE_PIXELS:,}; decompression bombs are refused)")
            img.verify()
    except Image.DecompressionBombError as error:
        raise AssetError(f"too large: {path.name}: {error}") from None
    except AssetError:
        raise
    except Exception as error:
        raise AssetError(f"not an image: {path.name} cannot be decoded ({error})") from None
    return kind


def head_is_svg(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return sniff(handle.read(512)) == "svg"
    except OSError:
        return False


def check_font(path: Path) -> int:
    """Raise AssetError unless the file is a TTF/OTF font; returns how many Hangul syllables it has."""
    head = _read_head(path, MAX_FONT_BYTES)
    if sniff(head) != "font":
        raise AssetError(f"not a font: {path.name} is not a TrueType/OpenType file")
    try:
        if not cmap(str(path)):
            raise AssetError(f"not a usable font: {path.name} has no character map")
    except AssetError:
        raise
    except Exception as error:
        raise AssetError(f"not a font: {path.name} cannot be read ({error})") from None
    return hangul_glyphs(str(path))


# ---------------------------------------------------------------- SVG

_DANGEROUS = {"script", "foreignObject", "iframe", "object", "embed", "handler", "listener"}


def sanitize_svg(data: bytes) -> str:
    """SVG markup with nothing active left: no DOCTYPE or entities (refused), no scripts,
    no event handlers, no references outside the document except embedded data: images."""
    if re.search(rb"<!DOCTYPE|<!ENTITY", data, re.IGNORECASE):
        raise AssetError("not a safe SVG: DOCTYPE/ENTITY declarations are refused")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as error:
        raise AssetError(f"not an image: the SVG does not parse ({error})") from None
    if root.tag.split("}")[-1] != "svg":
        raise AssetError("not an image: the XML's root element is not <svg>")
    for parent in list(root.iter()):
        for child in list(parent):
            if child.tag.split("}")[-1] in _DANGEROUS:
                parent.remove(child)
        for name in list(parent.attrib):
            local = name.split("}")[-1]
            value = parent.attrib[name].strip()
            script = local.lower().startswith("on")  # onload=, onclick=, ...
            outside = local == "href" and not (value.startswith("#") or value.startswith("data:image/"))
            fetch = "url(" in value and not re.fullmatch(r"[^()]*url\(\s*#[^)]*\)[^()]*", value)
            if script or outside or fetch:
                del parent.attrib[name]
    ET.register_namespace("", SVG_NS)
    ET.register_namespace("xlink", "http://www.w3.org/1999/xlink")
    return ET.tostring(root, encoding="unicode")


def rasterize_svg(path: Path, width: int) -> Image.Image:
    markup = sanitize_svg(path.read_bytes())
    png = resvg_py.svg_to_bytes(svg_string=markup, width=int(width), font_files=[str(font_path("extrabold"))])
    return Image.open(io.BytesIO(bytes(png))).convert("RGBA")


# ---------------------------------------------------------------- the logo


@lru_cache(maxsize=16)
def _logo_cached(path: str, mtime: float, width: int) -> Image.Image:
    file = Path(path)
    if head_is_svg(file):
        img = rasterize_svg(file, width)
    else:
        with Image.open(file) as src:
            img = src.convert("RGBA")
    return trim(img)


def load_logo(path: str, width: int = 1200) -> Image.Image:
    """The logo as RGBA, trimmed to its ink (SVG rasterised at `width`)."""
    return _logo_cached(path, Path(path).stat().st_mtime, width).copy()


def trim(img: Image.Image, threshold: int = 8) -> Image.Image:
    box = img.getchannel("A").point(lambda a: 255 if a > threshold else 0).getbbox()
    return img.crop(box) if box else img


# ---------------------------------------------------------------- packshots


@dataclass(frozen=True)
class Packshot:
    """A product picture ready to compose: RGBA, trimmed. `screen` marks an app screenshot or any
    full-bleed picture that is shown whole (in a device frame), not cut out."""

    image: Image.Image
    screen: bool


def has_alpha(img: Image.Image) -> bool:
    if img.mode not in ("RGBA", "LA", "PA") and "transparency" not in img.info:
        return False
    alpha = np.asarray(img.convert("RGBA").getchannel("A"))
    return bool((alpha < 250).mean() > 0.01)


def border_uniform(rgb: np.ndarray, tolerance: float = 18.0) -> tuple[bool, np.ndarray]:
    """Whether the picture sits on a plain background, and that background's colour."""
    border = np.concatenate([rgb[:4].reshape(-1, 3), rgb[-4:].reshape(-1, 3),
                             rgb[:, :4].reshape(-1, 3), rgb[:, -4:].reshape(-1, 3)]).astype(np.float32)
    colour = np.median(border, axis=0)
    spread = np.abs(border - colour).max(axis=1)
    return bool((spread < tolerance).mean() > 0.9), colour


def _floor_shadow(rgb: np.ndarray, background: np.ndarray, diff: np.ndarray) -> np.ndarray:
    """The photo's own cast shadow: an even darkening of the background colour (every channel by
    the same factor) below the product's lowest distinct pixel in its column. It is removed with
    the background (the engine draws its own grounded shadow); left in, it is a pale patch stuck
    under the product. A light part of the product itself (a white midsole) sits above distinct
    pixels of it (the outsole), so it stays."""
    ratio = rgb.astype(np.float32) / np.maximum(background, 1.0)
    neutral = (ratio.max(axis=2) - ratio.min(axis=2)) < 0.06
    shade = ratio.mean(axis=2)
    shadowish = neutral & (shade > 0.5) & (shade < 1.0)
    distinct = diff > 60
    rows = np.arange(rgb.shape[0])[:, None]
    lowest = np.where(distinct.any(axis=0), (distinct * rows).max(axis=0), -1)
    return shadowish & (rows > lowest[None, :])


def cutout(rgb: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Alpha (uint8) for a product on a plain background: the background-coloured region connected
    to the border is removed, GrabCut settles the boundary, and the edge is feathered."""
    h, w = rgb.shape[:2]
    scale = min(1.0, 640 / max(h, w))
    small = cv2.resize(rgb, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    diff = np.abs(small.astype(np.float32) - background).max(axis=2)
    # How far the background itself strays (noise, JPEG): a white midsole on a white sweep is
    # only ~10 levels off, so the threshold follows the border's own spread, not a fixed 24.
    border = np.concatenate([diff[:3].ravel(), diff[-3:].ravel(), diff[:, :3].ravel(), diff[:, -3:].ravel()])
    tolerance = float(np.clip(np.percentile(border, 98) * 1.5 + 2, 5, 24))
    near = (diff < tolerance).astype(np.uint8)
    count, labels = cv2.connectedComponents(near, connectivity=4)
    edge_labels = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))) - {0}
    edge_labels = {lab for lab in edge_labels if near[labels == lab].any()}
    bg = np.isin(labels, list(edge_labels)) & (near > 0)
    mask = np.where(bg, cv2.GC_BGD, cv2.GC_PR_FGD).astype(np.uint8)
    sure_fg = cv2.erode((~bg).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    mask[sure_fg & (diff > 60)] = cv2.GC_FGD
    mask[bg & (diff < tolerance * 0.5)] = cv2.GC_BGD
    if (mask != cv2.GC_BGD).any() and (mask == cv2.GC_BGD).any():
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        try:
            cv2.grabCut(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), mask, None, bgd, fgd, 3, cv2.GC_INIT_WITH_MASK)
        except cv2.error:
            pass  # GrabCut needs both classes with variety; the flood fill alone stands
    fg = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8) * 255
    # After GrabCut, not before: as background its light greys would teach GrabCut that a white
    # midsole is background too.
    fg[_floor_shadow(small, background, diff)] = 0
    count, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if count > 1:  # keep the product, drop specks
        keep = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= 0.01 * stats[1:, cv2.CC_STAT_AREA].max()]
        fg = np.isin(labels, keep).astype(np.uint8) * 255
    alpha = cv2.resize(fg, (w, h), interpolation=cv2.INTER_LINEAR)
    alpha = cv2.erode(alpha, np.ones((3, 3), np.uint8))  # lose the background fringe
    return cv2.GaussianBlur(alpha, (0, 0), max(1.0, 1.2 / max(scale, 1e-3) * 0.6))


@lru_cache(maxsize=16)
def _packshot_cached(path: str, mtime: float, kind: str) -> Packshot:
    with Image.open(path) as src:
        src.load()
        if has_alpha(src):
            return Packshot(trim(src.convert("RGBA")), screen=False)
        rgb = np.asarray(src.convert("RGB"))
    uniform, background = border_uniform(rgb)
    if kind == "screen" or (kind == "auto" and not uniform):
        return Packshot(Image.fromarray(rgb).convert("RGBA"), screen=True)
    alpha = cutout(rgb, background)
    img = Image.fromarray(np.dstack([rgb, alpha]))
    return Packshot(trim(img, threshold=24), screen=False)


def load_packshot(path: str, kind: str = "auto") -> Packshot:
    return _packshot_cached(path, Path(path).stat().st_mtime, kind)
