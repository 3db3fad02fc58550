"""What the models are asked to return, and how their answers become a valid `Storyboard`.

Each role has a pydantic model (the validation that counts) and a hand-written JSON schema sent on
the wire (Ollama `format`, OpenAI `response_format` json_schema strict, Anthropic tool
`input_schema`). Each schema comes in two forms: `limits=False` stays inside the subset the vendors'
strict modes accept (every property required, `additionalProperties: false`, enums, no length or
number limits), `limits=True` adds maxLength / minLength, minimum / maximum and minItems / maxItems
for servers whose grammar enforces them (llama.cpp, Ollama `format`, vLLM), which keeps a small
model's caption inside 40 characters while it writes. The pydantic models and `salvage.py` check
the answer either way. `tests/test_llm.py` checks that wire schema and model agree.

The model never writes what we can compute: scene ids, the title, exact frame-accurate durations
and the brand colours are set after the model (`salvage.assemble`), so those invariants hold by
construction.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sparklio_assets.models import (
    FPS,
    MAX_SCENES,
    ONSCREEN_TEXT_MAX,
    PURPOSES,
    BrandElement,
    MotionStyle,
    Storyboard,
)
from sparklio_assets.planner import split_frames

Purpose = Literal[PURPOSES]  # type: ignore[valid-type]
# The moods the built-in planner uses too, so downstream (music, UI) only ever sees these.
BgmMood = Literal["calm_inspiring", "upbeat_energetic", "upbeat_playful", "elegant_minimal"]
MOTION_STYLES: tuple[str, ...] = get_args(MotionStyle)
BRAND_ELEMENTS: tuple[str, ...] = get_args(BrandElement)
BGM_MOODS: tuple[str, ...] = get_args(BgmMood)
NARRATION_MAX = 200
IMAGE_PROMPT_MAX = 500


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# ---- role "usp": hard branding / USP extraction (GPT-4o class) ----

class BrandStrategy(_Out):
    usp: str = Field(min_length=1, max_length=200)
    key_benefits: list[str] = Field(max_length=5)
    proof_points: list[str] = Field(max_length=5)
    brand_voice: str = Field(max_length=200)
    cta: str = Field(max_length=ONSCREEN_TEXT_MAX)

    @field_validator("key_benefits", "proof_points")
    @classmethod
    def _short_items(cls, value: list[str]) -> list[str]:
        for item in value:
            if len(item) > 120:
                raise ValueError(f"each item must be at most 120 characters, got {len(item)}: {item[:40]!r}...")
        return [item.strip() for item in value if item.strip()]


# ---- role "draft": the scene plan (Qwen local, or a cloud model as fallback) ----

class DraftScene(_Out):
    purpose: Purpose
    duration_seconds: float = Field(ge=1, le=30)
    narration: str = Field(max_length=NARRATION_MAX)
    onscreen_text: str = Field(max_length=ONSCREEN_TEXT_MAX)
    image_prompt: str = Field(min_length=1, max_length=IMAGE_PROMPT_MAX)
    motion_style: MotionStyle
    brand_elements: list[BrandElement] = Field(max_length=len(BRAND_ELEMENTS))


class DraftStoryboard(_Out):
    """The answer's shape. `salvage.check_draft` checks an answer field by field against it and fixes
    what code can (durations rescaled to the brief, CTA last, ids renumbered)."""

    bgm_mood: BgmMood
    scenes: list[DraftScene] = Field(min_length=2, max_length=MAX_SCENES)


# ---- role "refine": copy refinement (Claude Sonnet class) ----

class RefinedCopy(_Out):
    scene_id: str
    narration: str = Field(max_length=NARRATION_MAX)
    onscreen_text: str = Field(max_length=ONSCREEN_TEXT_MAX)


class CopyRefinement(_Out):
    """The answer's shape: one entry per scene, same ids, same order (`salvage.check_refinement`)."""

    scenes: list[RefinedCopy] = Field(min_length=1, max_length=MAX_SCENES)


# ---- wire schemas ----

def _string(description: str, enum: tuple[str, ...] | list[str] | None = None, *, limits: bool = False,
            max_length: int | None = None, min_length: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "string", "description": description}
    if enum is not None:
        out["enum"] = list(enum)
    if limits and max_length is not None:
        out["maxLength"] = max_length
    if limits and min_length:
        out["minLength"] = min_length
    return out


def _array(items: dict[str, Any], description: str, *, limits: bool = False, max_items: int | None = None,
           min_items: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "array", "items": items, "description": description}
    if limits and max_items is not None:
        out["maxItems"] = max_items
    if limits and min_items:
        out["minItems"] = min_items
    return out


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


def strategy_schema(limits: bool = False) -> dict[str, Any]:
    items = _string("at most 120 characters", limits=limits, max_length=120)
    return _object({
        "usp": _string("the single most compelling, specific reason to choose this product; at most 200 characters",
                       limits=limits, max_length=200, min_length=1),
        "key_benefits": _array(items, "up to 5 concrete benefits", limits=limits, max_items=5),
        "proof_points": _array(items, "up to 5 facts stated in the brief or brand kit; empty if none are given",
                               limits=limits, max_items=5),
        "brand_voice": _string("how the copy should sound, in a sentence; at most 200 characters",
                               limits=limits, max_length=200),
        "cta": _string(f"call to action in the brief's language; at most {ONSCREEN_TEXT_MAX} characters",
                       limits=limits, max_length=ONSCREEN_TEXT_MAX),
    })


def draft_schema(limits: bool = False, duration: int | None = None) -> dict[str, Any]:
    """`duration` (the brief's seconds) bounds the scene count in the limited form."""
    most = min(MAX_SCENES, duration) if duration else MAX_SCENES
    seconds: dict[str, Any] = {"type": "number", "description": "at least 1; all scenes add up to the ad's duration"}
    if limits:
        seconds.update(minimum=1, maximum=min(30, duration or 30))
    scene = _object({
        "purpose": _string("the scene's act; the first scene is the hook, the last is CTA", PURPOSES),
        "duration_seconds": seconds,
        "narration": _string(f"voice-over line in the brief's language; at most {NARRATION_MAX} characters; "
                             "may be empty", limits=limits, max_length=NARRATION_MAX),
        "onscreen_text": _string(f"large on-screen copy in the brief's language; at most {ONSCREEN_TEXT_MAX} "
                                 "characters", limits=limits, max_length=ONSCREEN_TEXT_MAX),
        "image_prompt": _string("English text-to-image prompt for a vertical 9:16 key image; "
                                f"at most {IMAGE_PROMPT_MAX} characters", limits=limits,
                                max_length=IMAGE_PROMPT_MAX, min_length=1),
        "motion_style": _string("camera motion", MOTION_STYLES),
        "brand_elements": _array(_string("brand element shown", BRAND_ELEMENTS),
                                 "brand elements shown in this scene (may be empty)", limits=limits,
                                 max_items=len(BRAND_ELEMENTS)),
    })
    return _object({
        "bgm_mood": _string("background music mood", BGM_MOODS),
        "scenes": _array(scene, f"2 to {most} scenes in story order; the last one is the CTA", limits=limits,
                         max_items=most, min_items=2),
    })


def refine_schema(scene_ids: list[str], limits: bool = False) -> dict[str, Any]:
    item = _object({
        "scene_id": _string("the scene this copy belongs to", scene_ids),
        "narration": _string(f"refined voice-over line; at most {NARRATION_MAX} characters; may be empty",
                             limits=limits, max_length=NARRATION_MAX),
        "onscreen_text": _string(f"refined on-screen copy; at most {ONSCREEN_TEXT_MAX} characters",
                                 limits=limits, max_length=ONSCREEN_TEXT_MAX),
    })
    return _object({"scenes": _array(item, "one entry per scene, same order as given", limits=limits,
                                      max_items=len(scene_ids), min_items=len(scene_ids))})


# ---- after the model: invariants by construction ----

def whole_frames(seconds: list[float], total_seconds: int) -> list[int]:
    """Frame counts proportional to `seconds` that add up exactly to total_seconds x FPS, every
    scene at least one second; cuts land on half seconds where that keeps those rules."""
    total = total_seconds * FPS
    frames = split_frames(total, seconds)
    if min(frames) >= FPS:
        return frames
    # Exact proportional split with a floor of one second per scene (largest remainder).
    spare = total - FPS * len(seconds)
    extra = [max(s - 1.0, 0.0) for s in seconds]
    weight = sum(extra) or float(len(seconds))
    shares = [(e if sum(extra) else 1.0) / weight * spare for e in extra]
    base = [int(share) for share in shares]
    order = sorted(range(len(seconds)), key=lambda i: shares[i] - base[i], reverse=True)
    for i in order[: spare - sum(base)]:
        base[i] += 1
    return [FPS + b for b in base]


def storyboard_for_refinement(plan: Storyboard) -> dict[str, Any]:
    return {"scenes": [{"scene_id": s.id, "purpose": s.purpose, "duration_seconds": s.duration_seconds,
                        "narration": s.narration, "onscreen_text": s.onscreen_text,
                        "image_prompt": s.image_prompt} for s in plan.scenes]}
