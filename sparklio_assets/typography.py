"""Fonts for on-screen copy, with the brand's own fonts first and a glyph-by-glyph fallback.

The packaged Hangul font is NanumGothic (SIL Open Font License 1.1), which installs with the
`koreanize-matplotlib` wheel: no apt step, the same glyphs on every machine. NanumGothic has no
Ä, Ö, õ, Ā, Ł and most other accented Latin letters, so DejaVu Sans (Bitstream Vera licence, in the
matplotlib wheel that koreanize-matplotlib installs) stands behind it for Latin, Greek, Cyrillic
and symbols. A brand font (`BrandKit.fonts`) is used for every character its cmap covers; any
other character is set in the first font of the chain that has it, so nothing draws as a
missing-glyph box (what no font has, emoji, is refused or removed before it gets here:
models.drawable_text). Text is drawn with Pillow, never through FFmpeg's drawtext, so quotes,
colons, percent signs and backslashes need no escaping and reach the frame verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

from fontTools.ttLib import TTFont
from PIL import ImageDraw, ImageFont

WEIGHTS = {"regular": "NanumGothic.ttf", "bold": "NanumGothicBold.ttf", "extrabold": "NanumGothicExtraBold.ttf"}
LATIN_WEIGHTS = {"regular": "DejaVuSans.ttf", "bold": "DejaVuSans-Bold.ttf", "extrabold": "DejaVuSans-Bold.ttf"}
HANGUL_SYLLABLES = range(0xAC00, 0xD7A4)


def font_path(weight: str = "extrabold") -> Path:
    spec = find_spec("koreanize_matplotlib")  # locate the wheel without importing matplotlib
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the Hangul font package koreanize-matplotlib is not installed")
    path = Path(spec.submodule_search_locations[0]) / "fonts" / WEIGHTS[weight]
    if not path.is_file():
        raise FileNotFoundError(f"Hangul font {path} is missing: reinstall koreanize-matplotlib")
    return path


def latin_font_path(weight: str = "extrabold") -> Path:
    spec = find_spec("matplotlib")  # located, not imported
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the Latin fallback font's package matplotlib is not installed")
    path = Path(spec.submodule_search_locations[0]) / "mpl-data" / "fonts" / "ttf" / LATIN_WEIGHTS[weight]
    if not path.is_file():
        raise FileNotFoundError(f"Latin fallback font {path} is missing: reinstall matplotlib")
    return path


@lru_cache(maxsize=128)
def font(size: int, weight: str = "extrabold") -> ImageFont.FreeTypeFont:
    """The packaged font at a size."""
    return ImageFont.truetype(str(font_path(weight)), size)


@lru_cache(maxsize=16)
def cmap(path: str) -> frozenset[int]:
    """The code points a font file has glyphs for (raises on a file that is not a font)."""
    with TTFont(path, lazy=True, fontNumber=0) as tt:
        table = tt.getBestCmap() or {}
    return frozenset(table)


def hangul_glyphs(path: str) -> int:
    """How many of the 11,172 Hangul syllables the font covers."""
    covered = cmap(path)
    return sum(1 for cp in HANGUL_SYLLABLES if cp in covered)


@lru_cache(maxsize=1)
def _packaged_cover() -> frozenset[int]:
    """What the packaged fonts draw together (read once: every on-screen field checks it)."""
    return cmap(str(font_path())) | cmap(str(latin_font_path()))


def undrawable(text: str) -> list[str]:
    """The characters of `text` that no packaged font has a glyph for (emoji and their joiners and
    variation selectors, mostly), each once: they would draw as empty boxes. No colour emoji font
    installs from the package registries without a download at run time, so such copy is refused
    (user input) or loses those characters (model-written copy)."""
    covered = _packaged_cover()
    return list(dict.fromkeys(c for c in text if not (c.isspace() or ord(c) in covered)))


def without_undrawable(text: str) -> str:
    """`text` minus the characters undrawable names, spaces tidied."""
    bad = set(undrawable(text))
    if not bad:
        return text
    kept = "".join(c for c in text if c not in bad)
    return "\n".join(" ".join(line.split()) for line in kept.split("\n")).strip()


def describe_chars(chars: list[str]) -> str:
    """'✨' (U+2728), ... for an error message."""
    return ", ".join(f"{c!r} (U+{ord(c):04X})" for c in chars[:5]) + (" ..." if len(chars) > 5 else "")


@dataclass(frozen=True)
class Face:
    """A chain of fonts at one size: each character is set in the first that has it. Metrics (and
    so line heights and layout) come from the main fonts; the last-resort Latin font's glyphs fit
    inside their line (DejaVu's ascent is NanumGothic's + 1 px at 40-80 px)."""

    size: int
    fonts: tuple[ImageFont.FreeTypeFont, ...]  # main first (the brand font, or NanumGothic)
    covers: tuple[frozenset[int], ...]  # what each of `fonts` has glyphs for
    metric_fonts: int = 1  # how many of `fonts` decide the metrics

    @property
    def main(self) -> ImageFont.FreeTypeFont:
        return self.fonts[0]

    @property
    def fallback(self) -> ImageFont.FreeTypeFont | None:
        return self.fonts[1] if len(self.fonts) > 1 else None

    def _font_for(self, char: str) -> ImageFont.FreeTypeFont:
        if char.isspace():
            return self.fonts[0]
        return next((f for f, covered in zip(self.fonts, self.covers) if ord(char) in covered), self.fonts[0])

    def runs(self, text: str) -> list[tuple[str, ImageFont.FreeTypeFont]]:
        out: list[tuple[str, ImageFont.FreeTypeFont]] = []
        for char in text:
            face = self._font_for(char)
            if out and out[-1][1] is face:
                out[-1] = (out[-1][0] + char, face)
            else:
                out.append((char, face))
        return out

    def length(self, text: str) -> float:
        return sum(face.getlength(run) for run, face in self.runs(text))

    @property
    def ascent(self) -> int:
        return max(f.getmetrics()[0] for f in self.fonts[:self.metric_fonts])

    @property
    def descent(self) -> int:
        return max(f.getmetrics()[1] for f in self.fonts[:self.metric_fonts])

    @property
    def line_height(self) -> int:
        return round((self.ascent + self.descent) * 1.08)

    def draw(self, draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, fill) -> None:
        """Draw one line with its top-left at xy (baseline at y + ascent)."""
        x, y = xy
        baseline = y + self.ascent
        for run, face in self.runs(text):
            draw.text((x, baseline), run, font=face, fill=fill, anchor="ls")
            x += face.getlength(run)


@lru_cache(maxsize=256)
def face(size: int, weight: str = "extrabold", brand_font: str | None = None) -> Face:
    """The brand font (a TTF/OTF path) at a size with the packaged fonts behind it, or the
    packaged fonts alone."""
    packaged, packaged_cover = font(size, weight), cmap(str(font_path(weight)))
    latin = ImageFont.truetype(str(latin_font_path(weight)), size)
    latin_cover = cmap(str(latin_font_path(weight)))
    if not brand_font:
        return Face(size, (packaged, latin), (packaged_cover, latin_cover))
    return Face(size, (ImageFont.truetype(brand_font, size), packaged, latin),
                (cmap(brand_font), packaged_cover, latin_cover), metric_fonts=2)
