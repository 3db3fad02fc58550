"""Keep what the model wrote: lenient parsing, field-by-field checks and deterministic code fixes.

A small local model's storyboard is usually right in most places and wrong in a few: a caption over
40 characters, durations that add up to 30 s for a 15 s ad, a motion style that is not one of ours,
the answer wrapped in a ```json fence. Rejecting the whole storyboard for one string threw all of
it away. Here each field is checked on its own:

- what code can fix deterministically is fixed and listed (`fixed`): captions fitted at a word
  (or, in unspaced Korean, syllable) boundary, ids renumbered, durations rescaled to the brief,
  unknown motion styles / brand elements / extra keys replaced or dropped;
- what code cannot fix (an empty image prompt, a purpose that is not an act, copy that echoes an
  instruction from the brief or makes a claim the brief does not) is named in `problems`, and only
  those fields go back to the model in the repair round;
- a scene that is still unusable after that is replaced by the built-in planner's scene for the same
  act, so one bad scene never costs the other scenes.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from sparklio_assets.copy_safety import allowed_claims, copy_problems, safe_brief
from sparklio_assets.models import (
    FPS,
    MAX_SCENES,
    ONSCREEN_TEXT_MAX,
    PURPOSES,
    BrandKit,
    Brief,
    Scene,
    Storyboard,
    StoryboardMetadata,
    describe_validation_error,
)
from sparklio_assets.planner import ACTS, MOODS, plan_storyboard
from sparklio_assets.typography import describe_chars, undrawable, without_undrawable

from .schema import (
    BGM_MOODS,
    BRAND_ELEMENTS,
    IMAGE_PROMPT_MAX,
    MOTION_STYLES,
    NARRATION_MAX,
    BrandStrategy,
    DraftScene,
    whole_frames,
)

# ---------------------------------------------------------------- lenient JSON

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def _strip_trailing_commas(text: str) -> str:
    """Remove commas before `}` / `]` outside strings (small models and some gateways write them)."""
    out, in_string, escaped = [], False, False
    for i, char in enumerate(text):
        if in_string:
            out.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char == ",":
            rest = text[i + 1:].lstrip()
            if rest[:1] in ("}", "]"):
                continue
        out.append(char)
    return "".join(out)


def parse_lenient(text: str) -> tuple[Any | None, str | None, list[str]]:
    """(data, problem, what was repaired) for a model's answer that should be one JSON object.

    Accepts the answer wrapped in a code fence, after a line of prose, or with trailing commas;
    anything else that is not JSON is a problem for the model to fix. Hand-written rather than a
    JSON-repair library because only these three deterministic fixes are wanted: guessing missing
    brackets or quotes would put words in the model's mouth."""
    text = (text or "").strip()
    if not text:
        return None, "the answer is empty", []
    repairs: list[str] = []
    try:
        return json.loads(text), None, repairs
    except json.JSONDecodeError as error:
        first_error = error
    candidate = text
    fence = _FENCE.search(candidate)
    if fence:
        candidate = fence.group(1).strip()
        repairs.append("code fence removed")
    start, end = candidate.find("{"), candidate.rfind("}")
    if (start > 0 or (end != -1 and end < len(candidate) - 1)) and start != -1 and end > start:
        candidate = candidate[start:end + 1]
        repairs.append("text around the JSON object removed")
    for attempt in (candidate, _strip_trailing_commas(candidate)):
        try:
            data = json.loads(attempt)
        except json.JSONDecodeError:
            continue
        if attempt is not candidate:
            repairs.append("trailing commas removed")
        return data, None, repairs
    snippet = text[:80].replace("\n", " ")
    return None, f"the answer is not valid JSON ({first_error}); it began: {snippet!r}", []


# ---------------------------------------------------------------- fitting copy

_CLAUSE_END = ".!?。！？"
_CLAUSE_BREAK = ",·;:—–/|"


def _grapheme_cut(text: str, limit: int) -> int:
    """The largest cut <= limit that does not split a grapheme (combining marks, Hangul jamo,
    emoji joiners and variation selectors stay with their base character)."""
    cut = min(limit, len(text))
    while 0 < cut < len(text):
        nxt = text[cut]
        if (unicodedata.combining(nxt) or nxt in "\u200d\ufe0e\ufe0f" or "\u1160" <= nxt <= "\u11ff"
                or "\U0001f3fb" <= nxt <= "\U0001f3ff" or text[cut - 1] == "\u200d"):
            cut -= 1
            continue
        break
    return cut


def fit_text(text: str, limit: int) -> str:
    """`text` within `limit` characters, cut the way the renderer wraps: at the end of a clause or
    at a space first, inside a word only when no boundary is in reach (unspaced Korean is cut
    between syllables, with an ellipsis). Text that fits is returned unchanged."""
    text = text.strip()
    if len(text) <= limit:
        return text
    window = text[: limit + 1]
    floor = limit // 2
    end = max(window.rfind(c, 0, limit) for c in _CLAUSE_END)
    if end >= floor:
        return text[: end + 1].strip()
    space = max(window.rfind(" "), window.rfind("\n"))
    if space >= floor:
        return text[:space].rstrip(" " + _CLAUSE_BREAK)
    brk = max(window.rfind(c, 0, limit) for c in _CLAUSE_BREAK)
    if brk >= floor:
        return text[:brk].rstrip()
    return text[: _grapheme_cut(text, limit - 1)].rstrip() + "…"


def _drawable(text: str, where: str, fixed: list[str]) -> str:
    """On-screen copy without the characters the fonts cannot draw (emoji), noted in `fixed`."""
    missing = undrawable(text)
    if not missing:
        return text
    fixed.append(f"{where}: {describe_chars(missing)} removed (the ad's fonts cannot draw them)")
    return without_undrawable(text)


# ---------------------------------------------------------------- one draft, field by field

@dataclass
class DraftCheck:
    """A draft answer after the field-by-field check."""

    bgm_mood: str | None = None
    scenes: list[DraftScene | None] = field(default_factory=list)  # None: unusable as it stands
    fixed: list[str] = field(default_factory=list)  # what code changed, by field
    problems: list[str] = field(default_factory=list)  # what only the model can fix, by field
    structure_ok: bool = False  # a list of scenes was there at all

    @property
    def usable(self) -> int:
        return sum(s is not None for s in self.scenes)


def _purpose(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text in PURPOSES:
        return text
    lowered = text.lower()
    for purpose in PURPOSES:  # "hook", "cta", "social proof"
        if lowered and (lowered == purpose.lower() or purpose.lower().startswith(lowered)
                        or lowered in purpose.lower().split(" / ")):
            return purpose
    return None


def _string(value: Any) -> str | None:
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value.strip() if isinstance(value, str) else None


def check_draft(data: Any, brief: Brief, brand: BrandKit) -> DraftCheck:
    """Check a draft answer field by field: fix what code can, name what it cannot."""
    out = DraftCheck()
    if not isinstance(data, dict):
        out.problems.append(f"the answer must be a JSON object, got {type(data).__name__}")
        return out
    for key in data:
        if key not in ("bgm_mood", "scenes"):
            out.fixed.append(f"{key}: dropped (not part of the storyboard)")
    mood = data.get("bgm_mood")
    if mood in BGM_MOODS:
        out.bgm_mood = mood
    else:
        out.bgm_mood = next((m for key, m in MOODS.items() if key in brief.tone), "calm_inspiring")
        out.fixed.append(f"bgm_mood: {mood!r} is not one of ours; {out.bgm_mood!r} used")
    scenes = data.get("scenes")
    if not isinstance(scenes, list) or not scenes:
        out.problems.append("scenes: a list of scenes is required")
        return out
    out.structure_ok = True
    allowed = allowed_claims(brief, brand)
    limit = min(MAX_SCENES, brief.duration)
    if len(scenes) > limit:  # keep the story's start and its last (CTA) scene
        out.fixed.append(f"scenes: {len(scenes)} scenes do not fit {brief.duration} s; kept {limit}")
        scenes = scenes[: limit - 1] + scenes[-1:]
    for index, raw in enumerate(scenes):
        out.scenes.append(_check_scene(raw, index, brief, brand, allowed, out))
    return out


def _check_scene(raw: Any, i: int, brief: Brief, brand: BrandKit, allowed: set[str],
                 out: DraftCheck) -> DraftScene | None:
    where = f"scenes.{i}"
    if not isinstance(raw, dict):
        out.problems.append(f"{where}: must be an object")
        return None
    bad: list[str] = []
    values: dict[str, Any] = {}
    for key in raw:
        if key not in DraftScene.model_fields:
            out.fixed.append(f"{where}.{key}: dropped" + (" (ids are renumbered)" if "id" in key else ""))
    purpose = _purpose(raw.get("purpose"))
    if purpose is None:
        bad.append(f"{where}.purpose: {raw.get('purpose')!r} is not one of {list(PURPOSES)}")
    elif purpose != raw.get("purpose"):
        out.fixed.append(f"{where}.purpose: {raw.get('purpose')!r} read as {purpose!r}")
    values["purpose"] = purpose
    act = next((a for a in ACTS if a.purpose == purpose), ACTS[min(i, 2)])
    seconds = raw.get("duration_seconds")
    try:
        seconds = float(seconds)
        if not seconds == seconds or seconds <= 0:  # NaN or not positive
            raise ValueError
    except (TypeError, ValueError):
        out.fixed.append(f"{where}.duration_seconds: {raw.get('duration_seconds')!r} replaced by {act.seconds:g}")
        seconds = act.seconds
    values["duration_seconds"] = min(max(seconds, 1.0), 30.0)
    for name, limit in (("narration", NARRATION_MAX), ("onscreen_text", ONSCREEN_TEXT_MAX),
                        ("image_prompt", IMAGE_PROMPT_MAX)):
        text = _string(raw.get(name))
        if text is None:
            bad.append(f"{where}.{name}: must be a string")
            continue
        if name == "onscreen_text":
            text = _drawable(text, f"{where}.{name}", out.fixed)
        if len(text) > limit:
            fitted = fit_text(text, limit)
            out.fixed.append(f"{where}.{name}: {len(text)} characters fitted to {len(fitted)} (limit {limit})")
            text = fitted
        values[name] = text
    if values.get("image_prompt") == "":
        bad.append(f"{where}.image_prompt: must not be empty (an English text-to-image prompt)")
    for name in ("narration", "onscreen_text"):
        for problem in copy_problems(values.get(name, ""), brief, brand, allowed) if values.get(name) else []:
            bad.append(f"{where}.{name}: {problem}")
    motion = raw.get("motion_style")
    if motion not in MOTION_STYLES:
        values["motion_style"] = act.motion
        out.fixed.append(f"{where}.motion_style: {motion!r} is not one of ours; {act.motion!r} used")
    else:
        values["motion_style"] = motion
    elements = raw.get("brand_elements")
    elements = elements if isinstance(elements, list) else []
    kept = list(dict.fromkeys(e for e in elements if e in BRAND_ELEMENTS))
    if kept != raw.get("brand_elements"):
        dropped = [e for e in elements if e not in BRAND_ELEMENTS]
        if dropped or not isinstance(raw.get("brand_elements"), list):
            out.fixed.append(f"{where}.brand_elements: {dropped or raw.get('brand_elements')!r} dropped")
    values["brand_elements"] = kept
    if bad:
        out.problems.extend(bad)
        return None
    try:
        return DraftScene.model_validate(values)
    except ValidationError as error:
        out.problems.append(f"{where}: {describe_validation_error(error)}")
        return None


def merge(first: DraftCheck, second: DraftCheck | None) -> DraftCheck:
    """Scene by scene, the first answer's usable scenes, else the repair answer's."""
    if second is None:
        return first
    if not first.structure_ok or (second.structure_ok and len(second.scenes) != len(first.scenes)
                                  and second.usable >= first.usable):
        return second
    if not second.structure_ok or len(second.scenes) != len(first.scenes):
        return first
    merged = DraftCheck(bgm_mood=first.bgm_mood, structure_ok=True, fixed=list(first.fixed))
    for i, (a, b) in enumerate(zip(first.scenes, second.scenes)):
        merged.scenes.append(a if a is not None else b)
        if a is None and b is not None:
            merged.fixed.extend(f for f in second.fixed if f.startswith(f"scenes.{i}."))
    merged.problems = [p for p in second.problems
                       if not any(p.startswith(f"scenes.{i}.") or p.startswith(f"scenes.{i}:")
                                  for i, s in enumerate(merged.scenes) if s is not None)]
    return merged


@dataclass
class Assembled:
    storyboard: Storyboard
    fixed: list[str]
    builtin_scenes: list[str]  # scene ids the built-in planner wrote


def assemble(check: DraftCheck, brief: Brief, brand: BrandKit) -> Assembled:
    """The storyboard from the model's usable scenes, the built-in planner's scene for the same act
    in place of each unusable one, a built-in CTA scene when the model wrote none, and durations
    rescaled to the brief in whole frames."""
    safe = safe_brief(brief, brand)
    builtin = plan_storyboard(safe, brand)
    fixed = list(check.fixed)
    scenes: list[tuple[Any, bool]] = []  # (scene, from the built-in planner)
    n = len(check.scenes)
    for i, scene in enumerate(check.scenes):
        if scene is not None:
            scenes.append((scene, False))
            continue
        position = 0 if i == 0 else len(builtin.scenes) - 1 if i == n - 1 else min(i, len(builtin.scenes) - 2)
        scenes.append((builtin.scenes[position], True))
    if not any(s.purpose == "CTA" for s, _ in scenes):
        scenes.append((builtin.scenes[-1], True))
        fixed.append("scenes: no CTA scene; the built-in planner's CTA scene added")
    if scenes[-1][0].purpose != "CTA":  # keep the story order, the CTA scene(s) last
        scenes = [s for s in scenes if s[0].purpose != "CTA"] + [s for s in scenes if s[0].purpose == "CTA"]
        fixed.append("scenes: the CTA scene moved to the end")
    if len(scenes) > min(MAX_SCENES, brief.duration):
        scenes = scenes[: min(MAX_SCENES, brief.duration) - 1] + scenes[-1:]
    seconds = [s.duration_seconds for s, _ in scenes]
    total = sum(seconds)
    if abs(total - brief.duration) > 0.5:
        fixed.append(f"scenes.duration_seconds: added up to {total:g} s; rescaled to {brief.duration} s")
    frames = whole_frames(seconds, brief.duration)
    out, builtin_ids = [], []
    for i, ((s, is_builtin), count) in enumerate(zip(scenes, frames), start=1):
        scene_id = f"scene_{i:03d}"
        if is_builtin:
            builtin_ids.append(scene_id)
        out.append(Scene(id=scene_id, purpose=s.purpose, duration_seconds=count / FPS, narration=s.narration,
                         onscreen_text=s.onscreen_text, image_prompt=s.image_prompt, motion_style=s.motion_style,
                         brand_elements=list(dict.fromkeys(s.brand_elements))))
    plan = Storyboard(title=f"{safe.product} - {brief.duration}s Ad", duration_seconds=brief.duration, scenes=out,
                      metadata=StoryboardMetadata(bgm_mood=check.bgm_mood or builtin.metadata.bgm_mood,
                                                  brand_colors=brand.colors))
    return Assembled(plan, fixed, builtin_ids)


# ---------------------------------------------------------------- the USP step

def check_strategy(data: Any, brief: Brief, brand: BrandKit) -> tuple[BrandStrategy | None, list[str], list[str]]:
    """(strategy, fixed, problems): long items fitted, extra items dropped, unsafe copy named."""
    if not isinstance(data, dict):
        return None, [], [f"the answer must be a JSON object, got {type(data).__name__}"]
    fixed: list[str] = []
    values = {k: v for k, v in data.items() if k in BrandStrategy.model_fields}
    fixed += [f"{k}: dropped" for k in data if k not in BrandStrategy.model_fields]
    for name, limit in (("usp", 200), ("brand_voice", 200), ("cta", ONSCREEN_TEXT_MAX)):
        text = values.get(name)
        if isinstance(text, str) and len(text.strip()) > limit:
            values[name] = fit_text(text, limit)
            fixed.append(f"{name}: fitted to {limit} characters")
    for name in ("key_benefits", "proof_points"):
        items = values.get(name)
        if isinstance(items, list):
            items = [fit_text(x, 120) if isinstance(x, str) else x for x in items][:5]
            if items != values[name]:
                fixed.append(f"{name}: fitted to 5 items of at most 120 characters")
            values[name] = items
    problems = [f"cta: {p}" for p in copy_problems(values.get("cta") or "", brief, brand)] if isinstance(
        values.get("cta"), str) else []
    try:
        strategy = BrandStrategy.model_validate(values)
    except ValidationError as error:
        return None, fixed, [describe_validation_error(error), *problems]
    if problems:
        return None, fixed, problems
    return strategy, fixed, []


# ---------------------------------------------------------------- the refine step

def check_refinement(data: Any, plan: Storyboard, brief: Brief, brand: BrandKit
                     ) -> tuple[Storyboard | None, list[str], list[str]]:
    """(storyboard with the refined copy, fixed, problems). Long copy is fitted; a scene whose
    refined copy echoes an instruction or makes a claim the brief does not keeps its draft copy."""
    if not isinstance(data, dict) or not isinstance(data.get("scenes"), list):
        return None, [], ["scenes: a list with one entry per scene is required"]
    ids = [s.id for s in plan.scenes]
    entries = [e for e in data["scenes"] if isinstance(e, dict)]
    by_id = {e.get("scene_id"): e for e in entries}
    if set(by_id) != set(ids) and len(entries) == len(ids):  # ids mangled, order kept: renumber
        by_id = dict(zip(ids, entries))
        fixed = ["scenes.scene_id: renumbered in order"]
    else:
        fixed = []
    missing = [i for i in ids if i not in by_id]
    if len(missing) == len(ids):
        return None, fixed, [f"scenes: must be exactly {ids} in this order"]
    allowed = allowed_claims(brief, brand)
    scenes = []
    for scene in plan.scenes:
        entry = by_id.get(scene.id)
        if entry is None:
            fixed.append(f"{scene.id}: no refined copy; the draft's kept")
            scenes.append(scene)
            continue
        update = {}
        for name, limit in (("narration", NARRATION_MAX), ("onscreen_text", ONSCREEN_TEXT_MAX)):
            text = _string(entry.get(name))
            if text is None:
                fixed.append(f"{scene.id}.{name}: not a string; the draft's kept")
                continue
            if name == "onscreen_text":
                text = _drawable(text, f"{scene.id}.{name}", fixed)
            if len(text) > limit:
                fitted = fit_text(text, limit)
                fixed.append(f"{scene.id}.{name}: {len(text)} characters fitted to {len(fitted)} (limit {limit})")
                text = fitted
            unsafe = copy_problems(text, brief, brand, allowed) if text else []
            if unsafe:
                fixed.append(f"{scene.id}.{name}: refined copy {unsafe[0]}; the draft's kept")
                continue
            update[name] = text
        scenes.append(scene.model_copy(update=update))
    refined = Storyboard.model_validate(plan.model_copy(update={"scenes": scenes}).model_dump())
    return refined, fixed, []
