"""Fonts for on-screen copy, with the brand's own fonts first and a glyph-by-glyph fallback.

The packaged Hangul font is NanumGothic (SIL Open Font License 1.1), which installs with the
`koreanize-matplotlib` wheel: no apt step, the same glyphs on every machine. A brand font
(`BrandKit.fonts`) is used for every character its cmap covers; any other character (Hangul in a
Latin-only font, say) is set in NanumGothic, so nothing ever draws as a missing-glyph box. Text is
drawn with Pillow, never through FFmpeg's drawtext, so quotes, colons, percent signs and
backslashes need no escaping and reach the frame verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

from fontTools.ttLib import TTFont
from PIL import ImageDraw, ImageFont

WEIGHTS = {"regular": "NanumGothic.ttf", "bold": "NanumGothicBold.ttf", "extrabold": "NanumGothicExtraBold.ttf"}
HANGUL_SYLLABLES = range(0xAC00, 0xD7A4)


def font_path(weight: str = "extrabold") -> Path:
    spec = find_spec("koreanize_matplotlib")  # locate the wheel without importing matplotlib
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the Hangul font package koreanize-matplotlib is not installed")
    path = Path(spec.submodule_search_locations[0]) / "fonts" / WEIGHTS[weight]
    if not path.is_file():
        raise FileNotFoundError(f"Hangul font {path} is missing: reinstall koreanize-matplotlib")
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


@dataclass(frozen=True)
class Face:
    """A font at a size with its fallback: measures and draws text run by run."""

    size: int
    main: ImageFont.FreeTypeFont
    fallback: ImageFont.FreeTypeFont | None = None
    covered: frozenset[int] | None = None

    def runs(self, text: str) -> list[tuple[str, ImageFont.FreeTypeFont]]:
        if self.fallback is None or self.covered is None:
            return [(text, self.main)] if text else []
        out: list[tuple[str, ImageFont.FreeTypeFont]] = []
        for char in text:
            face = self.main if (ord(char) in self.covered or char.isspace()) else self.fallback
            if out and out[-1][1] is face:
                out[-1] = (out[-1][0] + char, face)
            else:
                out.append((char, face))
        return out

    def length(self, text: str) -> float:
        return sum(face.getlength(run) for run, face in self.runs(text))

    @property
    def ascent(self) -> int:
        return max(f.getmetrics()[0] for f in (self.main, self.fallback) if f is not None)

    @property
    def descent(self) -> int:
        return max(f.getmetrics()[1] for f in (self.main, self.fallback) if f is not None)

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
    """The brand font (a TTF/OTF path) at a size with the packaged font behind it, or the
    packaged font alone."""
    packaged = font(size, weight)
    if not brand_font:
        return Face(size, packaged)
    return Face(size, ImageFont.truetype(brand_font, size), packaged, cmap(brand_font))
