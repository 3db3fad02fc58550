"""Fonts and line wrapping for on-screen copy.

The Hangul font is NanumGothic (SIL Open Font License 1.1), which installs with the
`koreanize-matplotlib` wheel: no apt step, the same glyphs on every machine. Text is drawn with
Pillow, never through FFmpeg's drawtext, so quotes, colons, percent signs and backslashes need no
escaping and reach the frame verbatim.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

from PIL import ImageFont

WEIGHTS = {"regular": "NanumGothic.ttf", "bold": "NanumGothicBold.ttf", "extrabold": "NanumGothicExtraBold.ttf"}


def font_path(weight: str = "extrabold") -> Path:
    spec = find_spec("koreanize_matplotlib")  # locate the wheel without importing matplotlib
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the Hangul font package koreanize-matplotlib is not installed")
    path = Path(spec.submodule_search_locations[0]) / "fonts" / WEIGHTS[weight]
    if not path.is_file():
        raise FileNotFoundError(f"Hangul font {path} is missing: reinstall koreanize-matplotlib")
    return path


@lru_cache(maxsize=64)
def font(size: int, weight: str = "extrabold") -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_path(weight)), size)


def wrap(text: str, face: ImageFont.FreeTypeFont, max_width: float) -> list[str]:
    """Greedy wrap that keeps the writer's own line breaks, breaks at spaces first and inside a
    word only when the word alone is wider than the line (Korean copy often has long unspaced runs)."""
    lines: list[str] = []
    for paragraph in text.replace("\r\n", "\n").split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if face.getlength(candidate) <= max_width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = ""
            for char in word:  # the word itself does not fit: break between characters
                if face.getlength(line + char) > max_width and line:
                    lines.append(line)
                    line = ""
                line += char
        lines.append(line)
    return lines


def fit(text: str, max_width: float, max_lines: int, start_size: int, min_size: int,
        weight: str = "extrabold") -> tuple[ImageFont.FreeTypeFont, list[str]]:
    """The largest size from start_size down to min_size at which the text wraps into max_lines.
    At min_size every line is kept, even past max_lines: copy is never cut off silently."""
    size = start_size
    while True:
        face = font(size, weight)
        lines = wrap(text, face, max_width)
        if len(lines) <= max_lines or size <= min_size:
            return face, lines
        size = max(min_size, int(size * 0.9))
