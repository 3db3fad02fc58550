"""Copy that always fits its box: wrap, balance the lines, shrink down to a floor size, and only
then shorten at a word boundary.

Wrapping prefers spaces. English breaks only at spaces (a single word wider than the box even at
the floor size is the one exception, split between letters). Korean may break between any two
syllables, which is normal Korean typesetting, but that is tried only when breaking at spaces
cannot fit the box at the floor size. Lines are balanced (the narrowest width that still gives the same line count), so
a two-line caption is two lines of similar length, not a long one and an orphan.
"""

from __future__ import annotations

from dataclasses import dataclass

from .language import HANGUL
from .typography import Face, face

ELLIPSIS = "…"
NO_LINE_START = set(",.!?;:)]}%…·、。」』’”")  # never begins a line


@dataclass(frozen=True)
class Fitted:
    """Copy set to a box: the face, the lines, and the size it all takes."""

    face: Face
    lines: tuple[str, ...]
    width: int
    height: int
    shortened: bool = False

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _breakable(word: str) -> bool:
    return bool(HANGUL.search(word))


def _split_long(word: str, fc: Face, width: float) -> list[str]:
    """A word wider than the line, cut between characters."""
    parts, line = [], ""
    for char in word:
        if line and fc.length(line + char) > width and char not in NO_LINE_START:
            parts.append(line)
            line = ""
        line += char
    return parts + [line]


def wrap(text: str, fc: Face, width: float, syllables: bool = False) -> list[str]:
    """Greedy wrap at spaces; with `syllables`, Hangul words may also break between syllables.
    The writer's own line breaks are kept."""
    lines: list[str] = []
    for paragraph in text.replace("\r\n", "\n").split("\n"):
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if fc.length(candidate) <= width:
                line = candidate
                continue
            if syllables and _breakable(word):
                # Fill the current line syllable by syllable, then carry on.
                head = f"{line} " if line else ""
                for char in word:
                    if fc.length(head + char) <= width or char in NO_LINE_START or not head.strip():
                        head += char
                    else:
                        lines.append(head.rstrip())
                        head = char
                line = head
                continue
            if line:
                lines.append(line)
            if fc.length(word) <= width:
                line = word
            else:
                *full, line = _split_long(word, fc, width)
                lines.extend(full)
        lines.append(line)
    return [ln for ln in lines if ln] or [""]


def balance(text: str, fc: Face, width: float, syllables: bool = False) -> list[str]:
    """The same number of lines as a greedy wrap at `width`, at the narrowest width that keeps it."""
    lines = wrap(text, fc, width, syllables)
    if len(lines) < 2:
        return lines
    # Never narrower than the widest word that may not break: that would split it between letters.
    widest = max((fc.length(w) for w in text.split() if not (syllables and _breakable(w))), default=0.0)
    lo, hi = max(width * 0.5, widest), width
    if lo >= hi:
        return lines
    for _ in range(12):
        mid = (lo + hi) / 2
        if len(wrap(text, fc, mid, syllables)) == len(lines):
            hi = mid
        else:
            lo = mid
    best = wrap(text, fc, hi, syllables)
    return best if len(best) == len(lines) else lines


def _measure(fc: Face, lines: list[str]) -> tuple[int, int]:
    return int(max((fc.length(ln) for ln in lines), default=0)) + 1, fc.line_height * len(lines)


def _sizes(max_size: int, min_size: int) -> list[int]:
    sizes, size = [], max_size
    while size > min_size:
        sizes.append(size)
        size = max(min_size, int(size * 0.94))
    return sizes + [min_size]


def fit_copy(text: str, width: int, height: int, max_size: int, min_size: int, weight: str = "extrabold",
             brand_font: str | None = None, max_lines: int | None = None) -> Fitted:
    """The largest setting of `text` that fits width x height (and max_lines). Nothing returned
    is ever wider or taller than the box: past the floor size the copy is shortened at a word
    boundary with an ellipsis."""
    text = " ".join(text.split()) if "\n" not in text else "\n".join(" ".join(p.split()) for p in text.split("\n"))
    limit = max_lines or 99
    korean = bool(HANGUL.search(text))
    for syllables in ((False, True) if korean else (False,)):
        for size in _sizes(max_size, min_size):
            fc = face(size, weight, brand_font)
            # A word wider than the box is split between letters only at the floor size (and, in
            # Korean copy, only once syllable breaking has been tried): a smaller size comes first.
            too_wide = any(fc.length(word) > width for word in text.split() if not (syllables and _breakable(word)))
            if too_wide and (size > min_size or (korean and not syllables)):
                continue
            lines = wrap(text, fc, width, syllables)
            if len(lines) > limit or fc.line_height * len(lines) > height:
                continue
            if any(fc.length(ln) > width for ln in lines):
                continue
            lines = balance(text, fc, width, syllables)
            w, h = _measure(fc, lines)
            return Fitted(fc, tuple(lines), w, h)
    return _shorten(text, width, height, min_size, weight, brand_font, limit, korean)


def _shorten(text: str, width: int, height: int, size: int, weight: str, brand_font: str | None,
             limit: int, korean: bool) -> Fitted:
    """At the floor size, drop whole words from the end until the rest plus '…' fits."""
    fc = face(size, weight, brand_font)
    rows = max(1, min(limit, height // max(1, fc.line_height)))
    words = text.replace("\n", " ").split()
    while words:
        candidate = " ".join(words).rstrip(",.;:·-–—") + ELLIPSIS
        lines = wrap(candidate, fc, width, korean)
        if len(lines) <= rows and all(fc.length(ln) <= width for ln in lines):
            w, h = _measure(fc, lines)
            return Fitted(fc, tuple(lines), w, h, shortened=True)
        if len(words) == 1:  # one word longer than the whole box: cut it between characters
            words = [words[0][:-1]] if len(words[0]) > 1 else []
        else:
            words.pop()
    return Fitted(fc, ("",), 0, 0, shortened=True)
