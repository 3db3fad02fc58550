"""Which language a brief is written in. Korean when any Hangul syllable appears in the words
the copy is drawn from; English otherwise. Pure, so the planner, the image and overlay engines, the
checks, the soundtrack and the LLM prompts all agree."""

from __future__ import annotations

import re
from typing import Literal, Protocol

HANGUL = re.compile(r"[\uac00-\ud7a3]")
Language = Literal["ko", "en"]


class _BriefLike(Protocol):
    product: str
    target_audience: str
    goal: str


def has_hangul(text: str) -> bool:
    return bool(HANGUL.search(text))


def language_of(brief: _BriefLike) -> Language:
    return "ko" if has_hangul(" ".join((brief.product, brief.target_audience, brief.goal))) else "en"
